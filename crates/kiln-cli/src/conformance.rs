//! `kiln conformance`: runs the ONNX backend test data and prints the per-op pass table.

use anyhow::{bail, Context, Result};
use kiln::conformance::{self as conf, CaseResult, Manifest, Outcome};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Options of `kiln conformance`.
pub struct Opts {
    pub data: Option<PathBuf>,
    pub manifest: Option<PathBuf>,
    pub json: bool,
    pub write_manifest: bool,
    pub list: bool,
    pub filter: Option<String>,
}

/// `rel` under the current folder or one of its ancestors, else under the
/// source tree this binary was built from.
fn find_up(rel: &str) -> Option<PathBuf> {
    let cwd = std::env::current_dir().ok()?;
    cwd.ancestors()
        .map(|a| a.join(rel))
        .chain(std::iter::once(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(rel),
        ))
        .find(|p| p.exists())
}

#[derive(Default, Clone, Copy)]
struct Counts {
    cases: usize,
    passed: usize,
    failed: usize,
    unclaimed: usize,
    unlisted: usize,
    newly_passing: usize,
}

impl Counts {
    fn add(&mut self, claimed: Option<bool>, pass: bool) {
        self.cases += 1;
        match (claimed, pass) {
            (Some(true), true) => self.passed += 1,
            (Some(true), false) => self.failed += 1,
            (Some(false), p) => {
                self.unclaimed += 1;
                if p {
                    self.newly_passing += 1;
                }
            }
            (None, _) => self.unlisted += 1,
        }
    }
    fn json(&self) -> serde_json::Value {
        serde_json::json!({"cases": self.cases, "passed": self.passed, "failed": self.failed,
            "unclaimed": self.unclaimed, "unlisted": self.unlisted, "unclaimed_now_passing": self.newly_passing})
    }
}

/// Runs every case under the data folder and prints the per-op table (or JSON).
/// Fails (exit 1) when a claimed case fails or the manifest does not list
/// exactly the cases on disk.
pub fn conformance(o: &Opts) -> Result<()> {
    let data = match &o.data {
        Some(d) => d.clone(),
        None => find_up(conf::DEFAULT_DATA_DIR).with_context(|| {
            format!(
                "ONNX backend test data not found at {} (run scripts/fixtures, or pass --data DIR)",
                conf::DEFAULT_DATA_DIR
            )
        })?,
    };
    if !data.is_dir() {
        bail!(
            "{}: not a folder (expected the ONNX backend test data: {})",
            data.display(),
            conf::SUITES.join(", ")
        );
    }
    let manifest_path = match &o.manifest {
        Some(m) => Some(m.clone()),
        None => find_up(conf::DEFAULT_MANIFEST),
    };
    let previous = match &manifest_path {
        Some(p) if p.exists() => Some(Manifest::load(p).map_err(anyhow::Error::msg)?),
        Some(p) if o.manifest.is_some() && !o.write_manifest => bail!("{}: no such file", p.display()),
        _ => None,
    };
    let cases = conf::list_all_cases(&data).map_err(anyhow::Error::msg)?;
    if cases.is_empty() {
        bail!("{}: no cases found", data.display());
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Panics are caught and reported per case; keep them off stderr.
    let prev_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let results = conf::run_cases(
        &cases,
        |c| o.filter.as_deref().is_none_or(|f| c.name.contains(f)),
        threads,
    );
    std::panic::set_hook(prev_hook);

    if o.write_manifest {
        let Some(path) = manifest_path.or_else(|| find_up("conformance").map(|d| d.join("manifest.json")))
        else {
            bail!("no manifest path: pass --manifest FILE");
        };
        if o.filter.is_some() {
            bail!("--write-manifest needs a run of every case (drop the filter)");
        }
        let m = Manifest::propose(&results, previous.as_ref());
        kiln::write_atomic(&path, m.to_json().as_bytes())?;
        eprintln!("wrote {}", path.display());
        return report(&results, Some(&m), o);
    }
    let listing = match (&previous, &o.filter) {
        (Some(m), None) => m.check_listing(&cases),
        _ => Vec::new(),
    };
    report(&results, previous.as_ref(), o)?;
    for l in &listing {
        eprintln!("manifest: {l}");
    }
    let failed: usize = results
        .iter()
        .filter(|r| {
            previous
                .as_ref()
                .is_some_and(|m| m.is_claimed(&r.info.suite, &r.info.name))
        })
        .filter(|r| !r.outcome.is_pass())
        .count();
    if failed > 0 || !listing.is_empty() {
        bail!(
            "{failed} claimed case(s) failed, {} manifest problem(s)",
            listing.len()
        );
    }
    Ok(())
}

fn report(results: &[CaseResult], manifest: Option<&Manifest>, o: &Opts) -> Result<()> {
    let vocab = conf::vocabulary(results.iter().map(|r| &r.info));
    let claimed_of = |r: &CaseResult| -> Option<bool> {
        let m = manifest?;
        if m.is_claimed(&r.info.suite, &r.info.name) {
            Some(true)
        } else if m
            .unclaimed
            .get(&r.info.suite)
            .is_some_and(|u| u.contains_key(&r.info.name))
        {
            Some(false)
        } else {
            None
        }
    };
    // Without a manifest, "claimed" means "passes": failed = 0.
    let claim = |r: &CaseResult| -> Option<bool> {
        if manifest.is_some() {
            claimed_of(r)
        } else {
            Some(r.outcome.is_pass())
        }
    };
    let mut per_suite: BTreeMap<&str, Counts> = BTreeMap::new();
    let mut per_op: BTreeMap<String, Counts> = BTreeMap::new();
    let mut raw_pass: BTreeMap<&str, usize> = BTreeMap::new();
    for r in results {
        let c = claim(r);
        let pass = r.outcome.is_pass();
        per_suite.entry(r.info.suite.as_str()).or_default().add(c, pass);
        per_op.entry(r.info.primary_op(&vocab)).or_default().add(c, pass);
        *raw_pass.entry(r.info.suite.as_str()).or_default() += usize::from(pass);
    }
    let opsets = |op: &str| -> String {
        manifest
            .and_then(|m| m.ops.get(op))
            .map(|c| format!("{}-{}", c.opsets.0, c.opsets.1))
            .unwrap_or_else(|| "-".into())
    };
    let failures: Vec<&CaseResult> = results
        .iter()
        .filter(|r| claim(r) == Some(true) && !r.outcome.is_pass())
        .collect();
    if o.json {
        let v = serde_json::json!({
            "suites": per_suite.iter().map(|(s, c)| {
                let mut j = c.json();
                j["pass_total"] = serde_json::json!(raw_pass.get(s).copied().unwrap_or(0));
                (s.to_string(), j)
            }).collect::<serde_json::Map<_, _>>(),
            "ops": per_op.iter().map(|(op, c)| {
                let mut j = c.json();
                j["op"] = serde_json::json!(op);
                j["claimed_opsets"] = serde_json::json!(opsets(op));
                j
            }).collect::<Vec<_>>(),
            "failures": failures.iter().map(|r| serde_json::json!({
                "suite": r.info.suite, "case": r.info.name, "reason": r.outcome.to_string()})).collect::<Vec<_>>(),
            "cases": if o.list { results.iter().map(|r| serde_json::json!({
                "suite": r.info.suite, "case": r.info.name, "op": r.info.primary_op(&vocab),
                "outcome": r.outcome.to_string()})).collect::<Vec<_>>() } else { Vec::new() },
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let w = per_op.keys().map(String::len).max().unwrap_or(2).max(2);
    println!(
        "{:<w$}  {:>14}  {:>5}  {:>6}  {:>6}  {:>9}",
        "op", "claimed opsets", "cases", "passed", "failed", "unclaimed"
    );
    let mut tot = Counts::default();
    for (op, c) in &per_op {
        println!(
            "{op:<w$}  {:>14}  {:>5}  {:>6}  {:>6}  {:>9}",
            opsets(op),
            c.cases,
            c.passed,
            c.failed,
            c.unclaimed
        );
        tot.cases += c.cases;
        tot.passed += c.passed;
        tot.failed += c.failed;
        tot.unclaimed += c.unclaimed;
    }
    println!(
        "{:<w$}  {:>14}  {:>5}  {:>6}  {:>6}  {:>9}",
        "total", "", tot.cases, tot.passed, tot.failed, tot.unclaimed
    );
    println!();
    for (s, c) in &per_suite {
        println!(
            "{s}: {} cases, {} pass ({} claimed pass, {} claimed fail, {} unclaimed{}{})",
            c.cases,
            raw_pass.get(s).copied().unwrap_or(0),
            c.passed,
            c.failed,
            c.unclaimed,
            if c.newly_passing > 0 {
                format!(", {} of them now pass", c.newly_passing)
            } else {
                String::new()
            },
            if c.unlisted > 0 {
                format!(", {} not in the manifest", c.unlisted)
            } else {
                String::new()
            }
        );
    }
    for r in &failures {
        println!("FAILED {}/{}: {}", r.info.suite, r.info.name, r.outcome);
    }
    if o.list {
        for r in results.iter().filter(|r| !r.outcome.is_pass()) {
            let tag = match &r.outcome {
                Outcome::Fail(_) => "fail",
                _ => "unsupported",
            };
            println!(
                "{tag} {}/{} [{}]: {}",
                r.info.suite,
                r.info.name,
                r.info.primary_op(&vocab),
                r.outcome
            );
        }
    }
    Ok(())
}
