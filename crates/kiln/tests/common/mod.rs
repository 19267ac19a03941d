//! Shared helpers of the model tests: fixture paths, comparisons, the ORT runner.
#![allow(dead_code)]

use kiln::ir::Tensor;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The fixtures folder (env KILN_FIXTURES, else `<workspace>/.fixtures`).
/// Panics with instructions if it is missing: tests never skip silently.
pub fn fixtures() -> PathBuf {
    let p = std::env::var_os("KILN_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.fixtures"));
    assert!(
        p.join("STAMP").exists(),
        "fixtures missing at {}: run scripts/fixtures first (scripts/test does)",
        p.display()
    );
    p
}

/// Reads a .npy fixture.
pub fn npy(p: &Path) -> Tensor {
    kiln::npy::read_npy(p).unwrap_or_else(|e| panic!("{e}"))
}

/// Largest absolute difference between two f32 tensors of the same shape.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.shape(), b.shape(), "shapes differ");
    let (a, b) = (a.to_f32_vec(), b.to_f32_vec());
    a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Largest absolute value.
pub fn max_abs(a: &Tensor) -> f32 {
    a.to_f32_vec().iter().map(|x| x.abs()).fold(0.0, f32::max)
}

/// Index of the largest element.
pub fn argmax(t: &Tensor) -> usize {
    let v = t.to_f32_vec();
    (0..v.len()).max_by(|&i, &j| v[i].total_cmp(&v[j])).unwrap()
}

/// Runs `model` in ONNX Runtime (the fixtures venv) on `inputs` (.npy files)
/// and returns its outputs with their names.
pub fn ort_run(model: &Path, inputs: &[PathBuf], work: &Path) -> Vec<(String, Tensor)> {
    let py = fixtures().join("venv/bin/python");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/ort_run.py");
    let out_dir = work.join("ort_out");
    let _ = std::fs::remove_dir_all(&out_dir);
    let st = Command::new(&py)
        .arg(&script)
        .arg(model)
        .arg(&out_dir)
        .args(inputs)
        .output()
        .expect("run python");
    assert!(
        st.status.success(),
        "ONNX Runtime failed on {}: {}",
        model.display(),
        String::from_utf8_lossy(&st.stderr)
    );
    let names = std::fs::read_to_string(out_dir.join("names.txt")).unwrap();
    names
        .lines()
        .enumerate()
        .map(|(i, n)| (n.to_string(), npy(&out_dir.join(format!("{i:02}.npy")))))
        .collect()
}

/// A fresh scratch folder under cargo's per-target tmp dir.
pub fn scratch(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs a single-input `model` in ONNX Runtime once per .npy in `inputs`;
/// returns, per input, the first output.
pub fn ort_run_each(model: &Path, inputs: &[PathBuf], work: &Path) -> Vec<Tensor> {
    let py = fixtures().join("venv/bin/python");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/ort_run.py");
    let out_dir = work.join("ort_each");
    let _ = std::fs::remove_dir_all(&out_dir);
    let st = Command::new(&py)
        .arg(&script)
        .arg("--each")
        .arg(model)
        .arg(&out_dir)
        .args(inputs)
        .output()
        .expect("run python");
    assert!(
        st.status.success(),
        "ONNX Runtime failed on {}: {}",
        model.display(),
        String::from_utf8_lossy(&st.stderr)
    );
    (0..inputs.len())
        .map(|i| npy(&out_dir.join(format!("{i:02}_00.npy"))))
        .collect()
}
