//! The three PP-OCR models (RapidOCR 1.4.4) on page.png, against ONNX Runtime.
//! Inputs are the preprocessed tensors written by scripts/fixtures (the
//! preprocessing is stated in .fixtures/reference/ocr/README.txt).

mod common;
use common::*;

fn check(model: &str, prefix: &str) -> usize {
    let f = fixtures();
    let session = kiln::open_session(&f.join("models").join(model)).unwrap();
    let dir = f.join("reference/ocr");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix) && n.ends_with(".input.npy"))
        .collect();
    names.sort();
    assert!(!names.is_empty(), "no {prefix}*.input.npy in {}", dir.display());
    for n in &names {
        let stem = n.trim_end_matches(".input.npy");
        let x = npy(&dir.join(n));
        let want = npy(&dir.join(format!("{stem}.ort.npy")));
        let got = session.run(vec![x]).unwrap().remove(0);
        let (d, m) = (max_abs_diff(&got, &want), max_abs(&want));
        println!(
            "{stem}: shape {:?} max abs diff {d:e} (max |out| {m})",
            got.shape()
        );
        assert!(d <= 1e-4 * m, "{stem}: max abs diff {d} > 1e-4 x max|out| ({m})");
    }
    names.len()
}

#[test]
fn det_matches_onnxruntime_on_page() {
    check("ch_PP-OCRv4_det_infer.onnx", "det");
}

#[test]
fn cls_matches_onnxruntime_on_crops() {
    check("ch_ppocr_mobile_v2.0_cls_infer.onnx", "cls_");
}

#[test]
fn rec_matches_onnxruntime_on_crops() {
    check("ch_PP-OCRv4_rec_infer.onnx", "rec_");
}
