//! Conformance against the ONNX backend test data.
//!
//! The ONNX wheel ships its backend test suite as data: one folder per case
//! under `onnx/backend/test/data/<suite>/` (suites [`SUITES`]), each holding a
//! `model.onnx` and one or more `test_data_set_*/` folders of
//! `input_<i>.pb` / `output_<i>.pb` `TensorProto` files.
//!
//! [`run_case`] loads a case with [`crate::onnx::load`], runs every data set
//! with [`crate::Session`] and compares the outputs with the expected ones as
//! the ONNX backend runner does (`onnx/backend/test/runner`, tolerances of
//! `onnx/backend/test/loader`): dtype and shape equal, floats within
//! `|got - want| <= ATOL + RTOL * |want|` ([`ATOL`] = 1e-7, [`RTOL`] = 1e-3,
//! unless the case's `data.json` overrides them), NaN equal to NaN, ±inf
//! exactly, integers and bools exactly. It never panics: a panic inside kiln
//! is caught and reported as a [`Outcome::Fail`].
//!
//! The claim is data: a [`Manifest`] (`conformance/manifest.json`) lists per
//! op the opsets and dtypes kiln supports, every case expected to pass
//! (claimed) and every other case with the reason it is not claimed.
//! [`Manifest::check_listing`] finds cases on disk that the manifest does not
//! mention (and entries for cases that no longer exist); [`Manifest::propose`]
//! drafts a manifest from a run, for review.

use crate::ir::Tensor;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// Relative tolerance for float outputs (the ONNX backend runner's default).
pub const RTOL: f64 = 1e-3;
/// Absolute tolerance for float outputs (the ONNX backend runner's default).
pub const ATOL: f64 = 1e-7;

/// The backend-test suites run, as named by their folders.
pub const SUITES: [&str; 4] = ["node", "pytorch-converted", "pytorch-operator", "simple"];

/// Where `scripts/fixtures` puts the backend test data, relative to the repository root.
pub const DEFAULT_DATA_DIR: &str = ".fixtures/venv/lib/python3.11/site-packages/onnx/backend/test/data";

/// Where the committed manifest lives, relative to the repository root.
pub const DEFAULT_MANIFEST: &str = "conformance/manifest.json";

/// The result of one case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every data set matched its expected outputs.
    Pass,
    /// The model loaded but did not run or did not match: why.
    Fail(String),
    /// kiln rejected the model or its data at load as unsupported (op, dtype,
    /// opset, attribute type): why.
    Unsupported(String),
}

impl Outcome {
    /// `true` for [`Outcome::Pass`].
    pub fn is_pass(&self) -> bool {
        matches!(self, Outcome::Pass)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Pass => f.write_str("pass"),
            Outcome::Fail(r) => write!(f, "FAIL: {r}"),
            Outcome::Unsupported(r) => write!(f, "unsupported: {r}"),
        }
    }
}

/// What a case's `model.onnx` declares, read without kiln's importer (so it
/// is known even for models kiln cannot load).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaseInfo {
    /// Suite folder name (`"node"`...).
    pub suite: String,
    /// Case folder name (`"test_abs"`).
    pub name: String,
    /// The case folder.
    pub dir: PathBuf,
    /// Default-domain opset import, if the model declares one.
    pub opset: Option<i64>,
    /// Op types of the main graph's nodes, in order (`domain::Op` outside the default domain).
    pub ops: Vec<String>,
}

impl CaseInfo {
    /// Reads the case at `dir` of `suite`. An unreadable or undecodable model
    /// gives a [`CaseInfo`] without ops (running it then fails).
    pub fn read(suite: &str, dir: &Path) -> CaseInfo {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (opset, ops) = std::fs::read(dir.join("model.onnx"))
            .ok()
            .and_then(|b| scan_model(&b))
            .unwrap_or((None, Vec::new()));
        CaseInfo {
            suite: suite.to_string(),
            name,
            dir: dir.to_path_buf(),
            opset,
            ops,
        }
    }

    /// The op this case tests, for per-op tables.
    ///
    /// A model whose nodes (other than `Constant`) are all of one op type is
    /// attributed to it. Otherwise the op type whose name best matches the
    /// case name (`test_reduce_mean_...` -> `ReduceMean`: longest prefix,
    /// case and underscores ignored) among the model's ops, then among
    /// `vocabulary` (e.g. every op seen in the suite, which attributes a
    /// function-expanded `test_softmax_..._expanded` to `Softmax`); else the
    /// first non-`Constant` node's op; else `"(none)"`.
    pub fn primary_op(&self, vocabulary: &BTreeSet<String>) -> String {
        let main: BTreeSet<&str> = self
            .ops
            .iter()
            .map(String::as_str)
            .filter(|o| *o != "Constant")
            .collect();
        if main.len() == 1 {
            return main.iter().next().map(|s| s.to_string()).unwrap_or_default();
        }
        let key: String = self
            .name
            .strip_prefix("test_")
            .unwrap_or(&self.name)
            .chars()
            .filter(|c| *c != '_')
            .flat_map(char::to_lowercase)
            .collect();
        let best = |cands: &mut dyn Iterator<Item = &str>| -> Option<String> {
            cands
                .filter(|o| !o.contains("::"))
                .filter(|o| key.starts_with(&o.to_lowercase()))
                .max_by_key(|o| o.len())
                .map(str::to_string)
        };
        if let Some(o) = best(&mut self.ops.iter().map(String::as_str)) {
            return o;
        }
        if let Some(o) = best(&mut vocabulary.iter().map(String::as_str)) {
            return o;
        }
        if self.ops.len() == 1 {
            return self.ops[0].clone();
        }
        main.iter()
            .next()
            .map(|s| s.to_string())
            .or_else(|| self.ops.first().cloned())
            .unwrap_or_else(|| "(none)".into())
    }
}

/// One case's info, outcome, and the dtypes its data sets carry.
#[derive(Debug, Clone)]
pub struct CaseResult {
    /// The case.
    pub info: CaseInfo,
    /// What happened.
    pub outcome: Outcome,
    /// ONNX names of the dtypes of the case's inputs and expected outputs
    /// that kiln could decode (`"float"`, `"int64"`...).
    pub dtypes: BTreeSet<String>,
}

/// Lists the cases of `suite` under `data_dir` (sorted by name): every
/// sub-folder holding a `model.onnx`.
///
/// Errors: a message naming the folder if it cannot be read.
pub fn list_cases(data_dir: &Path, suite: &str) -> Result<Vec<CaseInfo>, String> {
    let dir = data_dir.join(suite);
    let rd = std::fs::read_dir(&dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let mut dirs: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.join("model.onnx").is_file())
        .collect();
    dirs.sort();
    Ok(dirs.iter().map(|d| CaseInfo::read(suite, d)).collect())
}

/// Runs the case at `dir` ([`run_case_detailed`] without the dtypes).
pub fn run_case(dir: &Path) -> Outcome {
    run_case_detailed(dir).0
}

/// Runs the case at `dir`: every `test_data_set_*` in name order. Returns
/// the outcome and the dtypes of the tensors it read.
///
/// Never panics: a panic inside kiln becomes an [`Outcome::Fail`] naming it
/// (the process's panic hook still runs; callers that want quiet output
/// install their own, as `kiln conformance` and the conformance test do).
pub fn run_case_detailed(dir: &Path) -> (Outcome, BTreeSet<String>) {
    let mut dtypes = BTreeSet::new();
    let r = panic::catch_unwind(AssertUnwindSafe(|| run_case_inner(dir, &mut dtypes)));
    let outcome = match r {
        Ok(o) => o,
        Err(p) => {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic payload".into());
            Outcome::Fail(format!("PANIC: {msg}"))
        }
    };
    (outcome, dtypes)
}

/// Tolerances of a case: its `data.json`'s `rtol`/`atol` if present, else the defaults.
fn tolerances(dir: &Path) -> (f64, f64) {
    let mut tol = (RTOL, ATOL);
    if let Ok(text) = std::fs::read_to_string(dir.join("data.json")) {
        if let Ok(v) = serde_json::from_str::<Value>(&text) {
            if let Some(r) = v.get("rtol").and_then(Value::as_f64) {
                tol.0 = r;
            }
            if let Some(a) = v.get("atol").and_then(Value::as_f64) {
                tol.1 = a;
            }
        }
    }
    tol
}

/// A failure to read a `.pb`: unsupported element types are [`Outcome::Unsupported`].
fn read_pbs(
    dir: &Path,
    prefix: &str,
    dtypes: &mut BTreeSet<String>,
) -> Result<Vec<(String, Tensor)>, Outcome> {
    let mut v = Vec::new();
    loop {
        let p = dir.join(format!("{prefix}_{}.pb", v.len()));
        if !p.exists() {
            return Ok(v);
        }
        let bytes =
            std::fs::read(&p).map_err(|e| Outcome::Fail(format!("cannot read {}: {e}", p.display())))?;
        let (name, t) = crate::onnx::tensor_from_pb(&bytes).map_err(|e| {
            let msg = format!("{prefix}_{}.pb: {e}", v.len());
            if e.ir_kind() == crate::ir::ErrorKind::UnsupportedOp {
                Outcome::Unsupported(msg)
            } else {
                Outcome::Fail(msg)
            }
        })?;
        dtypes.insert(t.dtype().to_string());
        v.push((name, t));
    }
}

fn run_case_inner(dir: &Path, dtypes: &mut BTreeSet<String>) -> Outcome {
    match run_case_result(dir, dtypes) {
        Ok(()) => Outcome::Pass,
        Err(o) => o,
    }
}

fn run_case_result(dir: &Path, dtypes: &mut BTreeSet<String>) -> Result<(), Outcome> {
    let model = crate::onnx::load(&dir.join("model.onnx")).map_err(|e| {
        use crate::ir::ErrorKind as K;
        let msg = e.to_string();
        let msg = msg
            .split_once("model.onnx: ")
            .map(|(_, m)| m.to_string())
            .unwrap_or(msg);
        match e.ir_kind() {
            K::UnsupportedOp | K::TypeMismatch => Outcome::Unsupported(msg),
            _ => Outcome::Fail(format!("load: {msg}")),
        }
    })?;
    for v in model.graph.inputs.iter().chain(&model.graph.outputs) {
        dtypes.insert(v.ty.dtype.to_string());
    }
    let session = crate::Session::new(model).map_err(|e| Outcome::Fail(format!("session: {e}")))?;
    let (rtol, atol) = tolerances(dir);

    let mut sets: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Outcome::Fail(format!("cannot read {}: {e}", dir.display())))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("test_data_set_"))
        })
        .collect();
    sets.sort();
    if sets.is_empty() {
        return Err(Outcome::Fail("no test_data_set_* folder".into()));
    }
    let decl: Vec<String> = session.inputs().iter().map(|i| i.name.clone()).collect();
    for set in &sets {
        let set_name = set
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let inputs = read_pbs(set, "input", dtypes)?;
        let expected = read_pbs(set, "output", dtypes)?;
        if inputs.len() != decl.len() {
            return Err(Outcome::Fail(format!(
                "{set_name}: the model takes {} input(s), the data set has {}",
                decl.len(),
                inputs.len()
            )));
        }
        // input_<i>.pb is graph input #i (as the ONNX runner feeds them);
        // when the file is named, its name must agree.
        let mut feed = Vec::with_capacity(decl.len());
        for (i, (name, t)) in inputs.into_iter().enumerate() {
            if !name.is_empty() && name != decl[i] {
                return Err(Outcome::Fail(format!(
                    "{set_name}: input_{i}.pb is '{name}', graph input #{i} is '{}'",
                    decl[i]
                )));
            }
            feed.push(t);
        }
        let got = session
            .run(feed)
            .map_err(|e| Outcome::Fail(format!("{set_name}: run: {e}")))?;
        if got.len() != expected.len() {
            return Err(Outcome::Fail(format!(
                "{set_name}: {} output(s) produced, {} expected",
                got.len(),
                expected.len()
            )));
        }
        for (i, (g, (_, w))) in got.iter().zip(&expected).enumerate() {
            compare(g, w, rtol, atol).map_err(|e| Outcome::Fail(format!("{set_name}: output #{i}: {e}")))?;
        }
    }
    Ok(())
}

/// Row-major multi-index of flat index `i` in `shape`.
fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for (k, &d) in shape.iter().enumerate().rev() {
        if d > 0 {
            idx[k] = i % d;
            i /= d;
        }
    }
    idx
}

/// `numpy.testing.assert_allclose` for one element (`equal_nan=True`).
fn float_close(g: f64, w: f64, rtol: f64, atol: f64) -> bool {
    if w.is_nan() || g.is_nan() {
        w.is_nan() && g.is_nan()
    } else if w.is_infinite() || g.is_infinite() {
        g == w
    } else {
        (g - w).abs() <= atol + rtol * w.abs()
    }
}

/// Compares `got` with `want` as the ONNX backend runner does: dtype and
/// shape equal, floats within `atol + rtol * |want|` (NaN equal to NaN),
/// integers and bools exactly. `Err` says where and by how much they differ.
pub fn compare(got: &Tensor, want: &Tensor, rtol: f64, atol: f64) -> Result<(), String> {
    if got.dtype() != want.dtype() {
        return Err(format!("dtype {} (expected {})", got.dtype(), want.dtype()));
    }
    if got.shape() != want.shape() {
        return Err(format!("shape {:?} (expected {:?})", got.shape(), want.shape()));
    }
    let shape = want.shape();
    if want.dtype().is_float() {
        let (g, w) = (got.to_f64_vec(), want.to_f64_vec());
        let bad: Vec<usize> = (0..w.len())
            .filter(|&i| !float_close(g[i], w[i], rtol, atol))
            .collect();
        if let Some(&first) = bad.first() {
            let worst = bad
                .iter()
                .copied()
                .filter(|&i| g[i].is_finite() && w[i].is_finite())
                .max_by(|&a, &b| (g[a] - w[a]).abs().total_cmp(&(g[b] - w[b]).abs()))
                .unwrap_or(first);
            return Err(format!(
                "{}/{} elements differ (rtol {rtol:e}, atol {atol:e}); worst at {:?}: got {} expected {}",
                bad.len(),
                w.len(),
                unravel(worst, shape),
                g[worst],
                w[worst]
            ));
        }
    } else {
        let g = got.to_i64_vec().map_err(|e| e.to_string())?;
        let w = want.to_i64_vec().map_err(|e| e.to_string())?;
        let bad: Vec<usize> = (0..w.len()).filter(|&i| g[i] != w[i]).collect();
        if let Some(&first) = bad.first() {
            return Err(format!(
                "{}/{} elements differ; first at {:?}: got {} expected {}",
                bad.len(),
                w.len(),
                unravel(first, shape),
                g[first],
                w[first]
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// A minimal protobuf reader: just enough of ModelProto for CaseInfo.

fn varint(b: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*pos)?;
        *pos += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// Calls `f(field, wire_type, payload)` for each field of message `b`
/// (payload: the bytes of a LEN field, empty otherwise; varints are passed as
/// their value in `u64`). `None` on malformed data.
fn fields<'a>(b: &'a [u8], mut f: impl FnMut(u64, &'a [u8], u64)) -> Option<()> {
    let mut pos = 0;
    while pos < b.len() {
        let key = varint(b, &mut pos)?;
        let (field, wt) = (key >> 3, key & 7);
        match wt {
            0 => {
                let v = varint(b, &mut pos)?;
                f(field, &[], v);
            }
            1 => pos = pos.checked_add(8)?,
            2 => {
                let len = usize::try_from(varint(b, &mut pos)?).ok()?;
                let end = pos.checked_add(len)?;
                f(field, b.get(pos..end)?, 0);
                pos = end;
            }
            5 => pos = pos.checked_add(4)?,
            _ => return None,
        }
    }
    (pos == b.len()).then_some(())
}

/// Default-domain opset and node op types of a serialized `ModelProto`.
fn scan_model(b: &[u8]) -> Option<(Option<i64>, Vec<String>)> {
    let mut opset = None;
    let mut graph: Option<&[u8]> = None;
    fields(b, |field, payload, _| match field {
        7 => graph = Some(payload),
        8 => {
            let (mut domain, mut version) = (String::new(), None);
            let _ = fields(payload, |f, p, v| match f {
                1 => domain = String::from_utf8_lossy(p).into_owned(),
                2 => version = Some(v as i64),
                _ => {}
            });
            if domain.is_empty() || domain == "ai.onnx" {
                opset = version;
            }
        }
        _ => {}
    })?;
    let mut ops = Vec::new();
    if let Some(g) = graph {
        fields(g, |field, payload, _| {
            if field == 1 {
                let (mut op, mut domain) = (String::new(), String::new());
                let _ = fields(payload, |f, p, _| match f {
                    4 => op = String::from_utf8_lossy(p).into_owned(),
                    7 => domain = String::from_utf8_lossy(p).into_owned(),
                    _ => {}
                });
                if domain.is_empty() || domain == "ai.onnx" {
                    ops.push(op);
                } else {
                    ops.push(format!("{domain}::{op}"));
                }
            }
        })?;
    }
    Some((opset, ops))
}

// ---------------------------------------------------------------------------
// The manifest.

/// What kiln claims for one op.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpClaim {
    /// Lowest and highest default-domain opset supported (inclusive).
    pub opsets: (i64, i64),
    /// ONNX names of the dtypes supported (`"float"`, `"int64"`...).
    pub dtypes: Vec<String>,
    /// Free-form remark (limitations), empty if none.
    pub note: String,
}

/// The conformance claim: per-op support, claimed cases, unclaimed cases with reasons.
///
/// JSON form (`conformance/manifest.json`):
/// `{"tolerance": {"rtol", "atol"}, "ops": {OP: {"opsets": [lo, hi], "dtypes": [...], "note"?}},
///   "claimed": {SUITE: [case...]}, "unclaimed": {SUITE: {case: reason}}}`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Manifest {
    /// Per op (ONNX op type), what kiln supports.
    pub ops: BTreeMap<String, OpClaim>,
    /// Per suite, the cases expected to pass.
    pub claimed: BTreeMap<String, BTreeSet<String>>,
    /// Per suite, every other case, with the reason it is not claimed.
    pub unclaimed: BTreeMap<String, BTreeMap<String, String>>,
}

impl Manifest {
    /// Reads a manifest file. Errors name the file.
    pub fn load(path: &Path) -> Result<Manifest, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Manifest::from_json(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses the JSON form (see [`Manifest`]).
    pub fn from_json(text: &str) -> Result<Manifest, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
        let obj = |v: &Value, what: &str| -> Result<Map<String, Value>, String> {
            v.as_object()
                .cloned()
                .ok_or_else(|| format!("'{what}' must be an object"))
        };
        let mut m = Manifest::default();
        for (op, c) in obj(v.get("ops").unwrap_or(&json!({})), "ops")? {
            let lohi = c
                .get("opsets")
                .and_then(Value::as_array)
                .filter(|a| a.len() == 2)
                .and_then(|a| Some((a[0].as_i64()?, a[1].as_i64()?)))
                .ok_or_else(|| format!("ops.{op}.opsets must be [lo, hi]"))?;
            let dtypes = c
                .get("dtypes")
                .and_then(Value::as_array)
                .ok_or_else(|| format!("ops.{op}.dtypes must be a list"))?
                .iter()
                .map(|d| d.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| format!("ops.{op}.dtypes must be strings"))?;
            let note = c.get("note").and_then(Value::as_str).unwrap_or("").to_string();
            m.ops.insert(
                op,
                OpClaim {
                    opsets: lohi,
                    dtypes,
                    note,
                },
            );
        }
        for (suite, list) in obj(v.get("claimed").unwrap_or(&json!({})), "claimed")? {
            let set = list
                .as_array()
                .ok_or_else(|| format!("claimed.{suite} must be a list"))?
                .iter()
                .map(|c| c.as_str().map(str::to_string))
                .collect::<Option<BTreeSet<_>>>()
                .ok_or_else(|| format!("claimed.{suite} must list case names"))?;
            m.claimed.insert(suite, set);
        }
        for (suite, map) in obj(v.get("unclaimed").unwrap_or(&json!({})), "unclaimed")? {
            let mut cases = BTreeMap::new();
            for (case, reason) in obj(&map, &format!("unclaimed.{suite}"))? {
                let r = reason.as_str().filter(|r| !r.trim().is_empty()).ok_or_else(|| {
                    format!("unclaimed.{suite}.{case}: the reason must be a non-empty string")
                })?;
                cases.insert(case, r.to_string());
            }
            m.unclaimed.insert(suite, cases);
        }
        Ok(m)
    }

    /// The JSON form, pretty-printed with sorted keys and a final newline.
    pub fn to_json(&self) -> String {
        let ops: Map<String, Value> = self
            .ops
            .iter()
            .map(|(op, c)| {
                let mut o = Map::new();
                o.insert("opsets".into(), json!([c.opsets.0, c.opsets.1]));
                o.insert("dtypes".into(), json!(c.dtypes));
                if !c.note.is_empty() {
                    o.insert("note".into(), json!(c.note));
                }
                (op.clone(), Value::Object(o))
            })
            .collect();
        let v = json!({
            "tolerance": {"rtol": RTOL, "atol": ATOL},
            "ops": ops,
            "claimed": self.claimed,
            "unclaimed": self.unclaimed,
        });
        let mut s = serde_json::to_string_pretty(&v).unwrap_or_default();
        s.push('\n');
        s
    }

    /// `true` if `case` of `suite` is claimed.
    pub fn is_claimed(&self, suite: &str, case: &str) -> bool {
        self.claimed.get(suite).is_some_and(|s| s.contains(case))
    }

    /// Checks that the manifest lists exactly the cases on disk: each case
    /// of `cases` claimed or unclaimed (not both), and no entry of a listed
    /// suite naming a case that does not exist. Returns one line per problem.
    pub fn check_listing(&self, cases: &[CaseInfo]) -> Vec<String> {
        let mut errs = Vec::new();
        let mut on_disk: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for c in cases {
            on_disk.entry(&c.suite).or_default().insert(&c.name);
            let claimed = self.is_claimed(&c.suite, &c.name);
            let unclaimed = self
                .unclaimed
                .get(&c.suite)
                .is_some_and(|m| m.contains_key(&c.name));
            match (claimed, unclaimed) {
                (false, false) => errs.push(format!(
                    "{}/{}: on disk but not in the manifest (claim it or list it as unclaimed with a reason)",
                    c.suite, c.name
                )),
                (true, true) => errs.push(format!("{}/{}: both claimed and unclaimed", c.suite, c.name)),
                _ => {}
            }
        }
        for (suite, disk) in &on_disk {
            let listed = self
                .claimed
                .get(*suite)
                .into_iter()
                .flatten()
                .chain(self.unclaimed.get(*suite).into_iter().flat_map(|m| m.keys()));
            for name in listed {
                if !disk.contains(name.as_str()) {
                    errs.push(format!("{suite}/{name}: in the manifest but not on disk"));
                }
            }
        }
        errs
    }

    /// Drafts a manifest from a run of every case: passing cases are
    /// claimed; the others are unclaimed with a reason derived from the
    /// outcome ([`unclaimed_reason`]) unless `previous` already gives one
    /// (reviewed reasons are kept). Per-op claims: the opsets kiln's
    /// registry supports for every op it implements, and the dtypes seen in
    /// the passing cases attributed to the op; notes are kept from `previous`.
    pub fn propose(results: &[CaseResult], previous: Option<&Manifest>) -> Manifest {
        let mut m = Manifest::default();
        let vocab = vocabulary(results.iter().map(|r| &r.info));
        let mut dtypes: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for r in results {
            let (suite, name) = (r.info.suite.clone(), r.info.name.clone());
            if r.outcome.is_pass() {
                m.claimed.entry(suite).or_default().insert(name);
                dtypes
                    .entry(r.info.primary_op(&vocab))
                    .or_default()
                    .extend(r.dtypes.iter().cloned());
            } else {
                let reason = previous
                    .and_then(|p| p.unclaimed.get(&suite))
                    .and_then(|u| u.get(&name))
                    .cloned()
                    .unwrap_or_else(|| unclaimed_reason(r));
                m.unclaimed.entry(suite).or_default().insert(name, reason);
            }
        }
        for def in crate::ir::ops::all_ops().filter(|d| d.domain.is_empty()) {
            let lo = def.since.max(crate::ir::ops::MIN_OPSET);
            let note = previous
                .and_then(|p| p.ops.get(def.op_type))
                .map(|c| c.note.clone())
                .unwrap_or_default();
            m.ops.insert(
                def.op_type.to_string(),
                OpClaim {
                    opsets: (lo, crate::ir::ops::MAX_OPSET),
                    dtypes: dtypes
                        .get(def.op_type)
                        .map(|s| s.iter().cloned().collect())
                        .unwrap_or_default(),
                    note,
                },
            );
        }
        m
    }
}

/// Every default-domain op type in `cases`' models.
pub fn vocabulary<'a>(cases: impl Iterator<Item = &'a CaseInfo>) -> BTreeSet<String> {
    cases
        .flat_map(|c| c.ops.iter())
        .filter(|o| !o.contains("::"))
        .cloned()
        .collect()
}

/// A short reason for not claiming a case that did not pass: unsupported
/// opset, op, dtype or feature at load, else `"fails: ..."` with the first
/// part of the failure.
pub fn unclaimed_reason(r: &CaseResult) -> String {
    let short = |s: &str| -> String {
        let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
        if s.chars().count() > 160 {
            s.chars().take(160).collect::<String>() + "..."
        } else {
            s
        }
    };
    let missing: BTreeSet<&str> = r
        .info
        .ops
        .iter()
        .map(String::as_str)
        .filter(|o| {
            let (d, t) = o.split_once("::").unwrap_or(("", o));
            crate::ir::ops::lookup(t, d).is_none()
        })
        .collect();
    match &r.outcome {
        Outcome::Pass => "passes".into(),
        Outcome::Unsupported(msg) | Outcome::Fail(msg) => {
            if let Some(v) = r.info.opset {
                if v > crate::ir::ops::MAX_OPSET {
                    return format!("opset {v} (kiln supports up to {})", crate::ir::ops::MAX_OPSET);
                }
                if v < crate::ir::ops::MIN_OPSET {
                    return format!("opset {v} (kiln supports from {})", crate::ir::ops::MIN_OPSET);
                }
            }
            if !missing.is_empty() {
                let list: Vec<&str> = missing.into_iter().collect();
                return format!("op {} not implemented", list.join(", "));
            }
            for (needle, what) in [
                ("DOUBLE", "dtype double"),
                ("double", "dtype double"),
                ("FLOAT8", "float8"),
                ("float8", "float8"),
                ("BFLOAT16", "dtype bfloat16"),
                ("bfloat16", "dtype bfloat16"),
                ("STRING", "dtype string"),
                ("string", "dtype string"),
                ("UINT4", "dtype 4-bit"),
                ("INT4", "dtype 4-bit"),
                ("FLOAT4", "dtype 4-bit"),
                ("UINT16", "dtype uint16"),
                ("INT16", "dtype int16"),
                ("UINT32", "dtype uint32"),
                ("UINT64", "dtype uint64"),
                ("COMPLEX", "dtype complex"),
                ("UINT2", "dtype 2-bit"),
                ("INT2", "dtype 2-bit"),
                ("FLOAT8E8M0", "float8"),
                ("GRAPH attributes", "control flow (graph attributes)"),
                ("training_mode", "training mode"),
                ("sequence", "sequence/optional types"),
                ("optional", "sequence/optional types"),
            ] {
                if msg.contains(needle) {
                    return what.into();
                }
            }
            match &r.outcome {
                Outcome::Unsupported(_) => format!("unsupported: {}", short(msg)),
                _ => format!("fails: {}", short(msg)),
            }
        }
    }
}

/// Runs the cases of `cases` for which `select` is true on `threads`
/// threads (at least 1), returning their results in the order of `cases`.
/// Cases not selected are left out.
pub fn run_cases(
    cases: &[CaseInfo],
    select: impl Fn(&CaseInfo) -> bool + Sync,
    threads: usize,
) -> Vec<CaseResult> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    let picked: Vec<&CaseInfo> = cases.iter().filter(|c| select(c)).collect();
    let next = AtomicUsize::new(0);
    let slots: Mutex<Vec<Option<CaseResult>>> = Mutex::new(vec![None; picked.len()]);
    std::thread::scope(|s| {
        for _ in 0..threads.clamp(1, picked.len().max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(info) = picked.get(i) else { break };
                let (outcome, dtypes) = run_case_detailed(&info.dir);
                let r = CaseResult {
                    info: (*info).clone(),
                    outcome,
                    dtypes,
                };
                if let Ok(mut v) = slots.lock() {
                    v[i] = Some(r);
                }
            });
        }
    });
    slots
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .zip(picked)
        .map(|(r, info)| {
            r.unwrap_or_else(|| CaseResult {
                info: info.clone(),
                outcome: Outcome::Fail("the runner thread did not record a result".into()),
                dtypes: BTreeSet::new(),
            })
        })
        .collect()
}

/// Lists the cases of every suite of [`SUITES`] under `data_dir`.
///
/// Errors: a message naming the first suite folder that cannot be read.
pub fn list_all_cases(data_dir: &Path) -> Result<Vec<CaseInfo>, String> {
    let mut all = Vec::new();
    for s in SUITES {
        all.extend(list_cases(data_dir, s)?);
    }
    Ok(all)
}
