//! `kiln zoo` and `kiln train fit` end to end on real Fashion-MNIST images
//! (smoke size): a zoo student is built, trained for two epochs with an
//! interruption after the first, resumed, and the result runs in `kiln eval`.
#![cfg(feature = "train")]

mod common;
use common::{fixtures, kiln};
use std::path::Path;
use std::process::{Command, Output};

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "kiln failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn zoo_student_trains_stops_resumes_and_evaluates() {
    let tmp = std::env::temp_dir().join(format!("kiln-cli-train-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let model = tmp.join("student.onnx");
    let out = ok(&kiln(&[
        &"zoo",
        &"fmnist-mnv2",
        &"--width",
        &"0.5",
        &"-o",
        &model,
    ]));
    assert!(out.contains("learnable params") && out.contains("MACs"), "{out}");
    let data = fixtures().join("fashion-mnist");
    let run = tmp.join("run");
    let fit = |extra: &[&str]| {
        let mut a: Vec<std::ffi::OsString> = ["train", "fit"].iter().map(Into::into).collect();
        a.push(model.clone().into());
        a.extend([
            "--data".into(),
            data.clone().into(),
            "-o".into(),
            run.clone().into(),
        ]);
        let fixed = [
            "--limit",
            "768",
            "--val-count",
            "256",
            "--epochs",
            "2",
            "--batch",
            "64",
            "--threads",
            "1",
        ];
        a.extend(fixed.iter().chain(extra).map(Into::into));
        Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(&a)
            .output()
            .expect("spawn kiln")
    };
    let first = ok(&fit(&["--stop-after", "1"]));
    assert!(
        first.contains("epoch 1/2") && first.contains("continue with --resume"),
        "{first}"
    );
    let second = ok(&fit(&["--resume"]));
    assert!(
        second.contains("resumed from the checkpoint") && second.contains("epoch 2/2"),
        "{second}"
    );
    assert!(!second.contains("epoch 1/2:"), "epoch 1 ran again: {second}");
    // Other settings are refused, naming the checkpoint.
    let bad = fit(&["--resume", "--lr", "1e-2"]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("checkpoint.kiln") && err.contains("other settings"),
        "{err}"
    );
    // The trained model runs in kiln eval on the test images.
    let trained = run.join("model.onnx");
    let ev = ok(&kiln(&[
        &"eval", &trained, &"--data", &data, &"--limit", &"200", &"--batch", &"50",
    ]));
    assert!(ev.contains("top-1"), "{ev}");
    let metrics = std::fs::read_to_string(run.join("metrics.json")).unwrap();
    assert!(metrics.contains("\"epochs_done\": 2"), "{metrics}");
    // The curves of both epochs (the resumed run redraws from metrics.json) as a PNG.
    let png = std::fs::read(run.join("curves.png")).unwrap();
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    // Feature distillation from the trained net: a hint between the last 7x7 maps.
    let teacher = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/fmnist_mnv2.onnx");
    let kd = tmp.join("kd");
    let distill = |hint: &str| {
        kiln(&[
            &"train",
            &"distill",
            &model,
            &"--teacher",
            &teacher,
            &"--feature",
            &hint,
            &"--data",
            &data,
            &"--limit",
            &"256",
            &"--val-count",
            &"64",
            &"--epochs",
            &"1",
            &"--batch",
            &"64",
            &"--threads",
            &"1",
            &"-o",
            &kd,
        ])
    };
    let out = ok(&distill(
        "features.8.relu6=/features/features.8/features.8.2/Clip_output_0",
    ));
    assert!(out.contains("feature hint: student 'features.8.relu6'"), "{out}");
    assert!(kd.join("model.onnx").exists() && kd.join("curves.png").exists());
    let bad = distill("features.8.relu6=/no/such");
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success() && err.contains("'/no/such'"), "{err}");
    // Bad settings: one line naming the option.
    let e = fit(&["--augment", "rotate"]);
    assert!(String::from_utf8_lossy(&e.stderr).contains("unknown augmentation 'rotate'"));
    let e = kiln(&[
        &"zoo",
        &"shufflenetv2",
        &"--width",
        &"0.75",
        &"-o",
        &tmp.join("x.onnx"),
    ]);
    assert!(!e.status.success() && String::from_utf8_lossy(&e.stderr).contains("width"));
    let _ = std::fs::remove_dir_all(&tmp);
}

/// Regression (fresh-user trial, B1): `kiln train fit` refused ImageFolder
/// data because `--split train` was always applied; without `--split` data
/// that has no splits is read whole.
#[test]
fn fit_trains_on_an_image_folder_without_split() {
    let tmp = std::env::temp_dir().join(format!("kiln-cli-train-folder-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    // 40 real Fashion-MNIST test images as 8-bit grayscale PNGs, one folder per label.
    let mut spec = kiln::data::DataSpec::new(fixtures().join("fashion-mnist"));
    spec.split = Some(kiln::data::Split::Test);
    spec.range = Some(0..40);
    let set = kiln_train::data::TrainSet::load(spec, 1 << 28).unwrap();
    let px = set.inputs(0..40).unwrap();
    for i in 0..40 {
        let dir = tmp.join("data").join(set.y[i].to_string());
        std::fs::create_dir_all(&dir).unwrap();
        let img: Vec<u8> = px[i * 784..(i + 1) * 784]
            .iter()
            .map(|v| (v * 255.0).round() as u8)
            .collect();
        image::GrayImage::from_raw(28, 28, img)
            .unwrap()
            .save(dir.join(format!("{i:03}.png")))
            .unwrap();
    }
    let model = tmp.join("s.onnx");
    // PNGs decode as 3 channels with the raw preset.
    ok(&kiln(&[
        &"zoo",
        &"fmnist-mnv2",
        &"--width",
        &"0.35",
        &"--input",
        &"3,28,28",
        &"-o",
        &model,
    ]));
    let out = ok(&kiln(&[
        &"train",
        &"fit",
        &model,
        &"--data",
        &tmp.join("data"),
        &"--preset",
        &"raw",
        &"--val-count",
        &"8",
        &"--epochs",
        &"1",
        &"--batch",
        &"16",
        &"--threads",
        &"1",
        &"-o",
        &tmp.join("run"),
    ]));
    assert!(out.contains("32 training samples"), "{out}");
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn qat_from_the_trained_net_prints_the_ptq_baseline_and_exports_qdq() {
    let tmp = std::env::temp_dir().join(format!("kiln-cli-qat-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/fmnist_mnv2.onnx");
    let data = fixtures().join("fashion-mnist");
    let run = tmp.join("run");
    let out = ok(&kiln(&[
        &"train",
        &"qat",
        &model,
        &"--data",
        &data,
        &"--limit",
        &"768",
        &"--val-count",
        &"256",
        &"--epochs",
        &"1",
        &"--batch",
        &"64",
        &"--lr",
        &"1e-4",
        &"--calib-count",
        &"128",
        &"--threads",
        &"1",
        &"-o",
        &run,
    ]));
    assert!(
        out.contains("kiln PTQ") && out.contains("activation quantization points"),
        "{out}"
    );
    assert!(out.contains("epoch 1/1") && out.contains("val top-1"), "{out}");
    let qdq = kiln::load_model(&run.join("model.onnx")).unwrap();
    assert!(qdq.graph.nodes.iter().any(|n| n.op_type == "QuantizeLinear"));
    let _ = std::fs::remove_dir_all(&tmp);
}
