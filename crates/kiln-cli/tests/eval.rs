//! `kiln eval` end to end: EfficientNet-Lite0 on the 20 labelled ImageNet
//! photos (the known 17/20 top-1, 19/20 top-5), `--compare` of a model with
//! itself, IDX and .npz data through small generated models, and one-line
//! errors that name the file.

mod common;
use common::{fixtures, kiln};
use kiln::ir::{DType, Dim, Graph, Model, Node, OpsetImport, Tensor, ValueInfo, ValueType};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Output;

fn effnet() -> PathBuf {
    fixtures().join("models/efficientnet-lite0.onnx")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "kiln failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json(out: &Output) -> serde_json::Value {
    let s = ok(out);
    serde_json::from_str(&s).unwrap_or_else(|e| panic!("--json output does not parse ({e}): {s}"))
}

fn scratch(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("eval").join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Asserts a failed run: non-zero exit, one stderr line (after any notes)
/// naming `file` and every string in `names`, and no panic.
fn assert_error(out: &Output, file: &Path, names: &[&str]) -> String {
    assert!(!out.status.success(), "expected failure, got success");
    assert_ne!(out.status.code(), Some(101), "exit code 101 means a panic");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    let lines: Vec<&str> = err.lines().filter(|l| !l.starts_with("note:")).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got:\n{err}");
    assert!(lines[0].starts_with("kiln: error: "), "{err}");
    assert!(
        err.contains(&file.display().to_string()),
        "error does not name {}: {err}",
        file.display()
    );
    for n in names {
        assert!(err.contains(n), "error does not name {n}: {err}");
    }
    assert!(!err.contains("panicked"), "{err}");
    err
}

/// The known figures of EfficientNet-Lite0 with kiln's preprocessing on the
/// 20 foolbox ImageNet photos: 17/20 top-1, 19/20 top-5. The model's batch
/// dim is symbolic, so `--batch 8` stacks the photos and must agree.
#[test]
fn efficientnet_imagenet_top1_17_top5_19() {
    let data = fixtures().join("images/imagenet");
    let out = kiln(&[
        &"eval",
        &effnet(),
        &"--data",
        &data,
        &"--preset",
        &"efficientnet-lite",
    ]);
    let s = ok(&out);
    assert!(s.contains("top-1:    17/20 = 85.00%"), "{s}");
    assert!(s.contains("top-5:    19/20 = 95.00%"), "{s}");
    assert!(s.contains("last number of the file names"), "{s}");
    let v = json(&kiln(&[
        &"eval",
        &effnet(),
        &"--data",
        &data,
        &"--batch",
        &"8",
        &"--json",
    ]));
    assert_eq!(v["samples"], 20);
    assert_eq!(v["batch"], 8);
    assert_eq!(v["classes"], 1000);
    assert_eq!(v["format"], "images");
    assert_eq!(v["top1"]["correct"], 17);
    assert_eq!(v["top1"]["total"], 20);
    assert_eq!(v["top1"]["percent"], 85.0);
    assert_eq!(v["top5"]["correct"], 19);
    assert!(v["compare"].is_null());
}

/// A model against itself: 100% agreement, no difference, SQNR inf.
#[test]
fn compare_with_itself_is_identical() {
    let data = fixtures().join("images/imagenet");
    let m = effnet();
    let v = json(&kiln(&[
        &"eval",
        &m,
        &"--data",
        &data,
        &"--compare",
        &m,
        &"--range",
        &"3..7",
        &"--json",
    ]));
    assert_eq!(v["samples"], 4);
    assert_eq!(v["range"], serde_json::json!([3, 7]));
    let c = &v["compare"];
    assert_eq!(c["top1_agreement"]["percent"], 100.0);
    assert_eq!(c["max_abs_diff"], 0.0);
    assert_eq!(c["mean_abs_diff"], 0.0);
    assert_eq!(c["sqnr_db"], "inf");
    assert_eq!(c["top1"], v["top1"]);
    let s = ok(&kiln(&[
        &"eval",
        &m,
        &"--data",
        &data,
        &"--compare",
        &m,
        &"--limit",
        &"2",
    ]));
    assert!(s.contains("top-1 agreement: 2/2 = 100.00%"), "{s}");
    assert!(s.contains("max 0, mean 0"), "{s}");
    assert!(s.contains("SQNR:            inf dB"), "{s}");
}

/// x: float[N, 1, H, W] -> Flatten -> MatMul(w: [H*W, classes]) -> y: float[N, classes].
fn linear_model(path: &Path, h: usize, w: usize, weights: Vec<f32>) {
    let classes = weights.len() / (h * w);
    let x_ty = ValueType::new(
        DType::F32,
        vec![Dim::Sym("N".into()), Dim::Known(1), Dim::Known(h), Dim::Known(w)],
    );
    let y_ty = ValueType::new(DType::F32, vec![Dim::Sym("N".into()), Dim::Known(classes)]);
    let mut g = Graph {
        nodes: vec![
            Node::new("flatten", "Flatten", &["x"], &["f"]),
            Node::new("matmul", "MatMul", &["f", "w"], &["y"]),
        ],
        inputs: vec![ValueInfo {
            name: "x".into(),
            ty: x_ty,
        }],
        outputs: vec![ValueInfo {
            name: "y".into(),
            ty: y_ty,
        }],
        ..Default::default()
    };
    g.initializers.insert(
        "w".into(),
        Tensor::from_vec(vec![h * w, classes], weights).unwrap(),
    );
    let m = Model {
        graph: g,
        opsets: vec![OpsetImport {
            domain: String::new(),
            version: 13,
        }],
        ir_version: 8,
        ..Default::default()
    };
    kiln::onnx::save(&m, path).unwrap();
}

fn idx(ty: u8, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, ty, dims.len() as u8];
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(data);
    v
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// 10 images of 2x3 in gzipped t10k-* IDX files: image i lights pixel
/// 2 * (i % 3) at 200 (the rest 0), so a model scoring class c by pixel 2c
/// predicts i % 3. The labels file says i % 3, except images 1, 5 and 9 (3 wrong).
fn idx_data(dir: &Path) {
    let mut px = vec![0u8; 10 * 6];
    let mut labels = Vec::new();
    for i in 0..10 {
        px[i * 6 + 2 * (i % 3)] = 200;
        labels.push(if [1, 5, 9].contains(&i) {
            ((i + 1) % 3) as u8
        } else {
            (i % 3) as u8
        });
    }
    std::fs::write(
        dir.join("t10k-images-idx3-ubyte.gz"),
        gz(&idx(8, &[10, 2, 3], &px)),
    )
    .unwrap();
    std::fs::write(dir.join("t10k-labels-idx1-ubyte.gz"), gz(&idx(8, &[10], &labels))).unwrap();
}

/// Weights scoring class c by pixel 2c, times `scale`.
fn pick_pixel_weights(scale: f32) -> Vec<f32> {
    let mut w = vec![0f32; 6 * 3];
    for c in 0..3 {
        w[(2 * c) * 3 + c] = scale;
    }
    w
}

#[test]
fn idx_folder_with_generated_model() {
    let d = scratch("idx");
    let data = d.join("fashion");
    std::fs::create_dir_all(&data).unwrap();
    idx_data(&data);
    let m = d.join("m.onnx");
    linear_model(&m, 2, 3, pick_pixel_weights(1.0));
    let s = ok(&kiln(&[&"eval", &m, &"--data", &data]));
    assert!(s.contains("top-1:    7/10 = 70.00%"), "{s}");
    assert!(s.contains("top-5:    10/10 = 100.00%"), "{s}");
    assert!(s.contains("t10k-labels-idx1-ubyte.gz"), "{s}");
    // Batched, and a window of the data: images 2..7 hold one wrong label (5).
    let v = json(&kiln(&[
        &"eval", &m, &"--data", &data, &"--split", &"test", &"--range", &"2..7", &"--batch", &"4", &"--json",
    ]));
    assert_eq!((v["samples"].as_u64(), v["batch"].as_u64()), (Some(5), Some(4)));
    assert_eq!(v["top1"]["correct"], 4);
    assert_eq!(v["format"], "idx");
    // Against the same weights halved: same predictions; scores 200/255 vs
    // 100/255 -> max diff 100/255, SQNR = 10 log10(4) = 6.02 dB.
    let half = d.join("half.onnx");
    linear_model(&half, 2, 3, pick_pixel_weights(0.5));
    let v = json(&kiln(&[
        &"eval",
        &m,
        &"--data",
        &data,
        &"--compare",
        &half,
        &"--json",
    ]));
    let c = &v["compare"];
    assert_eq!(c["top1_agreement"]["percent"], 100.0);
    assert!(
        (c["max_abs_diff"].as_f64().unwrap() - 100.0 / 255.0).abs() < 1e-6,
        "{c}"
    );
    assert!(
        (c["sqnr_db"].as_f64().unwrap() - 10.0 * 4f64.log10()).abs() < 1e-6,
        "{c}"
    );
    // No train files here.
    let out = kiln(&[&"eval", &m, &"--data", &data, &"--split", &"train"]);
    assert_error(&out, &data, &["train"]);
    // A truncated images file: the error names it.
    let bad = d.join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    let img = bad.join("t10k-images-idx3-ubyte");
    std::fs::write(&img, &idx(8, &[10, 2, 3], &[0; 6 * 10])[..40]).unwrap();
    assert_error(&kiln(&[&"eval", &m, &"--data", &bad]), &img, &["truncated"]);
    // Wrong input shape for the model: names the model, the sample and the shapes.
    let out = kiln(&[&"eval", &effnet(), &"--data", &data, &"--limit", &"1"]);
    assert_error(
        &out,
        &effnet(),
        &["t10k-images-idx3-ubyte.gz[0]", "[1, 1, 2, 3]", "224"],
    );
}

/// The .npz numpy wrote for kiln's unit tests: x float[3, 1, 2, 2] =
/// 0, 0.25, ..., 2.75 and y = [2, 0, 1]. Scores = the first 3 pixels, so the
/// prediction is always class 2: top-1 1/3.
#[test]
fn npz_from_numpy() {
    let d = scratch("npz");
    let npz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../kiln/src/testdata/savez_compressed.npz");
    let m = d.join("m.onnx");
    let mut w = vec![0f32; 4 * 3];
    for c in 0..3 {
        w[c * 3 + c] = 1.0;
    }
    linear_model(&m, 2, 2, w);
    let v = json(&kiln(&[&"eval", &m, &"--data", &npz, &"--json"]));
    assert_eq!(v["format"], "npz");
    assert_eq!(v["labels"], "array 'y'");
    assert_eq!(v["top1"]["correct"], 1);
    assert_eq!(v["top1"]["total"], 3);
}

#[test]
fn folder_notes_and_errors() {
    let d = scratch("folders");
    let f = fixtures();
    // Two photos and a README: the README is skipped with a note.
    let two = d.join("two");
    std::fs::create_dir_all(&two).unwrap();
    for n in ["imagenet_01_559.jpg", "imagenet_07_609.jpg"] {
        std::fs::copy(f.join("images/imagenet").join(n), two.join(n)).unwrap();
    }
    std::fs::write(two.join("README.txt"), "photos").unwrap();
    let out = kiln(&[&"eval", &effnet(), &"--data", &two]);
    ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("skipped 1 non-image file(s)") && err.contains("README.txt"),
        "{err}"
    );

    // Unlabelled photos: a clear error naming the folder, unless --compare.
    let photos = f.join("images/photos");
    assert_error(
        &kiln(&[&"eval", &effnet(), &"--data", &photos]),
        &photos,
        &["no labels", "--compare"],
    );
    let out = kiln(&[&"eval", &effnet(), &"--data", &photos, &"--labels", &"filename"]);
    assert_error(&out, &photos.join("astronaut.png"), &["no number"]);
    let out = kiln(&[
        &"eval",
        &effnet(),
        &"--data",
        &photos,
        &"--preset",
        &"raw",
        &"--labels",
        &"none",
        &"--compare",
        &effnet(),
    ]);
    assert_error(&out, &effnet(), &["astronaut.png", "224"]);

    // Nothing usable in a folder.
    let empty = d.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::write(empty.join("notes.txt"), "x").unwrap();
    assert_error(
        &kiln(&[&"eval", &effnet(), &"--data", &empty]),
        &empty,
        &["no images"],
    );
    // A range past the end.
    let out = kiln(&[&"eval", &effnet(), &"--data", &two, &"--range", &"1..5"]);
    assert_error(&out, &two, &["past the end", "2 samples"]);
    // Labels that do not fit the model's classes.
    let m = d.join("m.onnx");
    linear_model(&m, 2, 3, pick_pixel_weights(1.0));
    let idxd = d.join("idx");
    std::fs::create_dir_all(&idxd).unwrap();
    idx_data(&idxd);
    let labels = idxd.join("t10k-labels-idx1-ubyte.gz");
    std::fs::write(&labels, gz(&idx(8, &[10], &[7; 10]))).unwrap();
    assert_error(
        &kiln(&[&"eval", &m, &"--data", &idxd]),
        &idxd,
        &["label 7", "3 classes"],
    );
}
