//! `kiln prune` end to end on the kiln-trained Fashion-MNIST net
//! (`models/fmnist_mnv2_bn.onnx`, BatchNormalization unfolded) and real images
//! (smoke size): channel pruning and 1x8 block pruning on a PolynomialDecay
//! schedule, each fine-tuned briefly, reported, then quantized to int8 with
//! `kiln quantize`; kiln's int8 runtime and ONNX Runtime agree on the top-1
//! of 1,000 test images (issue 9's [CI] check "pruning + int8 compose").
#![cfg(feature = "train")]

mod common;
use common::{fixtures, kiln};
use kiln::data::{DataSpec, Split};
use kiln_train::data::TrainSet;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn ok(out: &Output) -> String {
    let s = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "kiln failed: {s}");
    s
}

/// Top-1 of kiln's compiled runtime and of ONNX Runtime on the first 1,000
/// test images: (kiln correct, ORT correct, agreement).
fn kiln_vs_ort(model: &Path, tmp: &Path) -> (usize, usize, usize) {
    let mut spec = DataSpec::new(fixtures().join("fashion-mnist"));
    spec.split = Some(Split::Test);
    spec.range = Some(0..1000);
    let test = TrainSet::load(spec, 1 << 30).unwrap();
    let x = kiln::ir::Tensor::from_vec(vec![1000, 1, 28, 28], test.inputs(0..1000).unwrap()).unwrap();
    let cm = kiln::compile(model, &Default::default()).unwrap();
    let ours = cm.run(&mut cm.new_state(2), vec![x.clone()]).unwrap()[0].to_f32_vec();
    let xin = tmp.join("x.npy");
    kiln::npy::write_npy(&xin, &x).unwrap();
    let out = tmp.join("ort");
    let st = Command::new(fixtures().join("venv/bin/python"))
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/ort_run.py"))
        .arg(model)
        .arg(&out)
        .arg(&xin)
        .output()
        .unwrap();
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    let theirs = kiln::npy::read_npy(&out.join("00.npy")).unwrap().to_f32_vec();
    let top1 = |l: &[f32]| -> Vec<usize> {
        l.chunks_exact(10)
            .map(|r| kiln::eval::argmax(r).unwrap())
            .collect()
    };
    let (a, b) = (top1(&ours), top1(&theirs));
    let acc = |p: &[usize]| p.iter().zip(&test.y).filter(|(p, y)| **p == **y as usize).count();
    (acc(&a), acc(&b), a.iter().zip(&b).filter(|(x, y)| x == y).count())
}

#[test]
fn pruned_finetuned_quantized_models_agree_with_onnxruntime() {
    let tmp = std::env::temp_dir().join(format!("kiln-cli-prune-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/fmnist_mnv2_bn.onnx");
    let data = fixtures().join("fashion-mnist");
    let prune = |method: &str, sparsity: &str, extra: &[&str]| -> (PathBuf, Value, String) {
        let out = tmp.join(format!("{method}.onnx"));
        let mut args: Vec<std::ffi::OsString> = vec!["prune".into(), model.clone().into()];
        for a in [
            "--method",
            method,
            "--sparsity",
            sparsity,
            "--limit",
            "2500",
            "--val-count",
            "500",
            "--batch",
            "64",
            "--eval-limit",
            "1000",
            "--bench-runs",
            "3",
        ] {
            args.push(a.into());
        }
        args.extend([
            "--finetune".into(),
            data.clone().into(),
            "--eval".into(),
            data.clone().into(),
        ]);
        args.extend(extra.iter().map(Into::into));
        args.extend(["-o".into(), out.clone().into()]);
        let o = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(&args)
            .output()
            .unwrap();
        let text = ok(&o);
        let report: Value = serde_json::from_str(
            &std::fs::read_to_string(tmp.join(format!("{method}.onnx.report.json"))).unwrap(),
        )
        .unwrap();
        (out, report, text)
    };

    // Channel pruning: a physically smaller dense model.
    let (ch, r, text) = prune("channel", "0.5", &["--epochs", "2"]);
    assert!(
        text.contains("latency (ms, batch 32)") && text.contains("top-1 (%)"),
        "{text}"
    );
    let (pb, pa) = (
        r["before"]["params"].as_f64().unwrap(),
        r["after"]["params"].as_f64().unwrap(),
    );
    assert!(pa < 0.4 * pb, "params {pb} -> {pa}");
    let (mb, ma) = (
        r["before"]["macs"].as_f64().unwrap(),
        r["after"]["macs"].as_f64().unwrap(),
    );
    assert!(ma < 0.4 * mb, "MACs {mb} -> {ma}");
    assert!(r["after"]["top1"].as_f64().unwrap() > 50.0, "{}", r["after"]);
    assert!(r["channel_groups"].as_array().unwrap().len() > 5);

    // 1x8 block pruning on PolynomialDecay while fine-tuning (2 epochs: the schedule ends after the first).
    let (bl, r, _) = prune("block", "0.8", &["--epochs", "2", "--frequency", "4"]);
    let layers = r["layers"].as_array().unwrap();
    let pointwise: Vec<&Value> = layers
        .iter()
        .filter(|l| {
            let s = l["shape"].as_array().unwrap();
            l["op"] == "Conv" && s[2] == 1 && s[1].as_u64() > Some(1)
        })
        .collect();
    assert!(pointwise.len() >= 10);
    for l in &pointwise {
        assert!(l["zero_blocks_1x8"].as_f64().unwrap() >= 0.79, "{l}");
    }
    assert!(r["after"]["top1"].as_f64().unwrap() > 60.0, "{}", r["after"]);

    // Pruning + int8: kiln quantize each, then kiln and ONNX Runtime agree.
    for (name, m) in [("channel", &ch), ("block", &bl)] {
        let q = tmp.join(format!("{name}-int8.onnx"));
        ok(&kiln(&[
            &"quantize",
            m,
            &"--calib",
            &data,
            &"--calib-split",
            &"train",
            &"--calib-range",
            &"0..300",
            &"-o",
            &q,
        ]));
        let (a, b, agree) = kiln_vs_ort(&q, &tmp);
        eprintln!("{name} pruned + int8: kiln {a} / ORT {b} correct of 1000, agreement {agree}");
        assert!(agree >= 995, "{name}: agreement {agree}/1000");
        assert!(a > 500, "{name}: int8 top-1 {a}/1000");
    }

    // Bad input: the option at fault is named.
    let e = kiln(&[
        &"prune",
        &model,
        &"--method",
        &"block",
        &"--sparsity",
        &"1.2",
        &"-o",
        &tmp.join("x.onnx"),
    ]);
    assert!(!e.status.success() && String::from_utf8_lossy(&e.stderr).contains("--sparsity"));
    let e = kiln(&[
        &"prune",
        &model,
        &"--method",
        &"magnitude",
        &"--sparsity",
        &"0.5",
        &"--exclude",
        &"nope",
        &"--bench-runs",
        &"0",
        &"-o",
        &tmp.join("x.onnx"),
    ]);
    let err = String::from_utf8_lossy(&e.stderr);
    assert!(
        !e.status.success() && err.contains("exclude") && err.contains("nope"),
        "{err}"
    );
    assert!(!tmp.join("x.onnx").exists(), "no output after an error");
    let _ = std::fs::remove_dir_all(&tmp);
}
