//! ONNX backend-test conformance: the claim of `conformance/manifest.json`.
//!
//! The data is the ONNX wheel's backend test suite in the fixtures venv
//! ([`kiln::conformance::DEFAULT_DATA_DIR`], built by `scripts/fixtures`;
//! `KILN_ONNX_BACKEND_DATA=<dir>` overrides it). A missing folder is a
//! failure, never a skip.
//!
//! `conformance` fails if a case on disk is not in the manifest (claimed, or
//! unclaimed with a reason), if the manifest names a case that is not on
//! disk, or if a claimed case does not pass. It runs the claimed cases only
//! and prints per-suite pass counts.
//!
//! `regenerate_manifest` (ignored; run by hand with
//! `cargo test -p kiln --test conformance -- --ignored regenerate_manifest`)
//! runs every case and rewrites the manifest from the run, keeping the
//! reviewed reasons and notes of the current one; review the diff before
//! committing. `kiln conformance --write-manifest` does the same.

use kiln::conformance::{self as conf, CaseResult, Manifest};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn data_dir() -> PathBuf {
    std::env::var_os("KILN_ONNX_BACKEND_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(conf::DEFAULT_DATA_DIR))
}

fn manifest_path() -> PathBuf {
    repo().join(conf::DEFAULT_MANIFEST)
}

fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn cases() -> Vec<conf::CaseInfo> {
    let data = data_dir();
    let cases = conf::list_all_cases(&data).unwrap_or_else(|e| {
        panic!("ONNX backend test data missing ({e}); run scripts/fixtures or set KILN_ONNX_BACKEND_DATA")
    });
    assert!(!cases.is_empty(), "no cases under {}", data.display());
    cases
}

/// Runs `select`ed cases with panics kept off stderr (each is reported as a failure).
fn run(cases: &[conf::CaseInfo], select: impl Fn(&conf::CaseInfo) -> bool + Sync) -> Vec<CaseResult> {
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = conf::run_cases(cases, select, threads());
    std::panic::set_hook(prev);
    r
}

#[test]
fn conformance() {
    let manifest = Manifest::load(&manifest_path()).unwrap_or_else(|e| panic!("{e}"));
    let cases = cases();
    let mut report = String::new();
    let listing = manifest.check_listing(&cases);
    let results = run(&cases, |c| manifest.is_claimed(&c.suite, &c.name));

    let mut per_suite: BTreeMap<&str, (usize, usize, usize)> = BTreeMap::new();
    for c in &cases {
        per_suite.entry(&c.suite).or_default().0 += 1;
    }
    for r in &results {
        let e = per_suite.entry(&r.info.suite).or_default();
        e.1 += 1;
        e.2 += usize::from(r.outcome.is_pass());
    }
    for (s, (n, claimed, passed)) in &per_suite {
        let _ = writeln!(
            report,
            "{s}: {passed}/{claimed} claimed cases pass ({n} cases on disk)"
        );
    }
    let failures: Vec<&CaseResult> = results.iter().filter(|r| !r.outcome.is_pass()).collect();
    for r in &failures {
        let _ = writeln!(report, "FAILED {}/{}: {}", r.info.suite, r.info.name, r.outcome);
    }
    for l in &listing {
        let _ = writeln!(report, "manifest: {l}");
    }
    println!("{report}");
    assert!(
        failures.is_empty() && listing.is_empty(),
        "{} claimed case(s) fail, {} manifest problem(s) (regenerate with `kiln conformance --write-manifest` and review)\n{report}",
        failures.len(),
        listing.len()
    );
}

#[test]
#[ignore = "regenerates conformance/manifest.json; run by hand"]
fn regenerate_manifest() {
    let path = manifest_path();
    let previous = Manifest::load(&path).ok();
    let cases = cases();
    let results = run(&cases, |_| true);
    let m = Manifest::propose(&results, previous.as_ref());
    kiln::write_atomic(&path, m.to_json().as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    let claimed: usize = m.claimed.values().map(|s| s.len()).sum();
    println!(
        "wrote {} ({claimed} claimed of {} cases)",
        path.display(),
        results.len()
    );
}
