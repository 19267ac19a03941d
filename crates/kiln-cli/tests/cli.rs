//! End-to-end tests of the `kiln` binary on the real fixtures: inspect
//! figures, and clean one-line errors on bad input.

mod common;
use common::{fixtures, kiln};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn effnet() -> PathBuf {
    fixtures().join("models/efficientnet-lite0.onnx")
}

fn scratch(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Asserts a failed run: non-zero exit, exactly one stderr line, naming
/// `file` and every string in `names`, and no panic or backtrace.
fn assert_one_line_error(out: &Output, file: &Path, names: &[&str]) -> String {
    assert!(!out.status.success(), "expected failure, got success");
    assert_ne!(out.status.code(), Some(101), "exit code 101 means a panic");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "expected one stderr line, got:\n{err}");
    assert!(
        err.contains(&file.display().to_string()),
        "error does not name the file: {err}"
    );
    for n in names {
        assert!(err.contains(n), "error does not name {n}: {err}");
    }
    assert!(
        !err.contains("panicked") && !err.to_lowercase().contains("backtrace"),
        "{err}"
    );
    err
}

#[test]
fn inspect_efficientnet_reports_params_and_macs() {
    let out = kiln(&[&"inspect", &effnet(), &"--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["learnable_params"], 4_652_008);
    assert_eq!(v["total_params"], 4_694_024);
    let macs = v["macs"].as_u64().unwrap();
    assert_eq!(format!("{:.2}M", macs as f64 / 1e6), "385.19M");
    // The human-readable form says the same.
    let out = kiln(&[&"inspect", &effnet()]);
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.contains("4,652,008 learnable") && s.contains("4,694,024") && s.contains("MACs: 385.19M"),
        "{s}"
    );
}

#[test]
fn truncated_model_fails_cleanly() {
    let d = scratch("truncated");
    let bytes = std::fs::read(effnet()).unwrap();
    let p = d.join("truncated.onnx");
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    let out = kiln(&[&"inspect", &p]);
    assert_one_line_error(&out, &p, &[]);
}

#[test]
fn random_bytes_fail_cleanly() {
    let d = scratch("random");
    let mut s = 0x2545F4914F6CDD1Du64;
    let bytes: Vec<u8> = (0..4096)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s as u8
        })
        .collect();
    let p = d.join("random.onnx");
    std::fs::write(&p, bytes).unwrap();
    for cmd in ["inspect", "run"] {
        let mut args: Vec<&dyn AsRef<OsStr>> = vec![&cmd, &p];
        if cmd == "run" {
            args.push(&"--input");
            args.push(&"x.npy");
        }
        assert_one_line_error(&kiln(&args), &p, &[]);
    }
}

#[test]
fn unknown_ops_are_all_listed_at_load() {
    let d = scratch("unknown_op");
    let mut m = kiln::load_model(&effnet()).unwrap();
    let n = m.graph.nodes.len();
    m.graph.nodes[3].op_type = "NoSuchOp".into();
    m.graph.nodes[n - 2].op_type = "AlsoMissing".into();
    let (n3, nl) = (m.graph.nodes[3].name.clone(), m.graph.nodes[n - 2].name.clone());
    let p = d.join("unknown.onnx");
    kiln::onnx::save(&m, &p).unwrap();
    let out = kiln(&[&"run", &p, &"--input", &"x.npy"]);
    assert_one_line_error(&out, &p, &["NoSuchOp", "AlsoMissing", &n3, &nl]);
}

#[test]
fn wrong_input_shape_fails_cleanly() {
    let d = scratch("wrong_shape");
    let x = kiln::ir::Tensor::from_vec(vec![1, 3, 100, 100], vec![0f32; 30000]).unwrap();
    let xp = d.join("x.npy");
    kiln::npy::write_npy(&xp, &x).unwrap();
    let out = kiln(&[&"run", &effnet(), &"--input", &xp]);
    let e = assert_one_line_error(&out, &effnet(), &["[1, 3, 100, 100]"]);
    assert!(e.contains("224"), "error should give the expected shape: {e}");
}

#[test]
fn run_saves_outputs_as_npy_in_graph_order() {
    let d = scratch("save_outputs");
    let f = fixtures();
    let img = f.join("images/imagenet");
    let first = std::fs::read_dir(&img)
        .unwrap()
        .map(|e| e.unwrap().path())
        .min()
        .unwrap();
    let out = kiln(&[
        &"run",
        &effnet(),
        &"--input",
        &first,
        &"--labels",
        &f.join("imagenet_classes.txt"),
        &"--save-outputs",
        &d,
        &"--json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["outputs"][0]["top_k"].as_array().unwrap().len(), 5);
    let files: Vec<_> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(files.len(), 1);
    let t = kiln::npy::read_npy(&d.join(&files[0])).unwrap();
    assert_eq!(t.shape(), &[1, 1000]);
}

/// `kiln optimize --report --json` on EfficientNet-Lite0: every BatchNormalization
/// and standalone Clip gone, at most 72 nodes, and the written file is plain ONNX.
#[test]
fn optimize_efficientnet_report_json() {
    let d = scratch("optimize");
    let out = d.join("effnet.opt.onnx");
    let o = kiln(&[&"optimize", &effnet(), &"-o", &out, &"--report", &"--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["before"]["nodes"], 143);
    let after = &v["after"];
    assert!(after["nodes"].as_u64().unwrap() <= 72, "{after}");
    assert!(
        after["op_histogram"].get("BatchNormalization").is_none(),
        "{after}"
    );
    assert!(after["op_histogram"].get("Clip").is_none(), "{after}");
    assert_eq!(after["macs"], v["before"]["macs"]);
    let applied = |rule: &str| {
        v["rules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["rule"] == rule)
            .unwrap()["applied"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(applied("fold-batchnorm-into-conv"), 49);
    assert_eq!(applied("fuse-activation-into-conv"), 33);
    // The written file: plain ONNX, no BatchNormalization, loads back.
    let back = kiln::load_model(&out).unwrap();
    assert!(back
        .graph
        .nodes
        .iter()
        .all(|n| n.op_type != "BatchNormalization" && n.domain.is_empty()));
    // Switching a rule off by name: the BatchNormalizations stay.
    let o = kiln(&[
        &"optimize",
        &effnet(),
        &"-o",
        &out,
        &"--disable",
        &"fold-batchnorm-into-conv",
        &"--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["after"]["op_histogram"]["BatchNormalization"], 49);
    // An unknown rule name is a clean error.
    let o = kiln(&[&"optimize", &effnet(), &"-o", &out, &"--disable", &"no-such-rule"]);
    assert_one_line_error(&o, &effnet(), &["no-such-rule"]);
}

/// Regression: `kiln bench --shape` with huge dims overflowed or tried to
/// allocate the random input before any limit was checked.
#[test]
fn bench_with_huge_shape_fails_cleanly() {
    let det = fixtures().join("models/ch_PP-OCRv4_det_infer.onnx");
    for dims in ["1,3,4294967296,4294967296", "1,3,100000,100000"] {
        let o = kiln(&[&"bench", &det, &"--shape", &format!("x={dims}"), &"--runs", &"1"]);
        assert_one_line_error(&o, &det, &["too large"]);
    }
}

/// `kiln bench --server` (scripts/bench): one `{"ms":[...]}` line per
/// requested count, then a clean exit at end of input.
#[test]
fn bench_server_answers_each_request() {
    use std::io::Write;
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/fmnist_mnv2.onnx");
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args([
            OsStr::new("bench"),
            model.as_os_str(),
            OsStr::new("--warmup"),
            OsStr::new("1"),
        ])
        .arg("--server")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn kiln");
    child.stdin.take().unwrap().write_all(b"3\n\n1\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let lens: Vec<usize> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let ms = v["ms"].as_array().unwrap();
            assert!(ms.iter().all(|t| t.as_f64().is_some_and(|t| t > 0.0)));
            ms.len()
        })
        .collect();
    assert_eq!(lens, [3, 1]);
}
