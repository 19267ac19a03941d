//! EfficientNet-Lite0 on the 20 labelled foolbox ImageNet photos, against ONNX Runtime.

mod common;
use common::*;
use kiln::classify::label_from_file_name;
use kiln::preprocess::{load_image, Preset};

fn photos() -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(fixtures().join("images/imagenet"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .collect();
    v.sort();
    assert_eq!(v.len(), 20, "expected the 20 foolbox ImageNet photos");
    v
}

/// Same preprocessed tensor in, kiln's logits vs ONNX Runtime 1.32's: max abs
/// diff <= 1e-4 and the same top-1, on each of the 20 photos.
#[test]
fn logits_match_onnxruntime_on_20_photos() {
    let f = fixtures();
    let session = kiln::open_session(&f.join("models/efficientnet-lite0.onnx")).unwrap();
    let mut worst = 0f32;
    for p in photos() {
        let stem = p.file_stem().unwrap().to_str().unwrap();
        let x = npy(&f.join(format!("reference/effnet/{stem}.input.npy")));
        let want = npy(&f.join(format!("reference/effnet/{stem}.ort.npy")));
        let got = session.run(vec![x]).unwrap().remove(0);
        let d = max_abs_diff(&got, &want);
        worst = worst.max(d);
        assert!(d <= 1e-4, "{stem}: max abs diff {d} > 1e-4");
        assert_eq!(argmax(&got), argmax(&want), "{stem}: top-1 differs");
    }
    println!("worst max abs diff over 20 photos: {worst:e}");
}

/// kiln's own decoding + EfficientNet-Lite preset: at least 17 of 20 top-1
/// correct (ONNX Runtime gets 17 with PIL's bilinear resize).
#[test]
fn own_preprocessing_gets_17_of_20() {
    let f = fixtures();
    let session = kiln::open_session(&f.join("models/efficientnet-lite0.onnx")).unwrap();
    let mut correct = 0;
    for p in photos() {
        let label = label_from_file_name(&p).unwrap();
        let x = load_image(&p, Preset::EfficientNetLite).unwrap();
        let got = session.run(vec![x]).unwrap().remove(0);
        correct += (argmax(&got) == label) as usize;
    }
    println!("top-1 with kiln's preprocessing: {correct}/20");
    assert!(correct >= 17, "only {correct}/20 top-1 correct");
}
