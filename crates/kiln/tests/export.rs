//! Export: edit the IR of each fixture model (add an intermediate tensor as an
//! extra graph output), export it as ONNX, and check that ONNX Runtime loads
//! the file and returns that tensor and the original outputs equal to kiln's.

mod common;
use common::*;
use kiln::ir::{DType, ValueInfo};
use std::path::PathBuf;

fn check_export(model: &str, input: &str) {
    let f = fixtures();
    let mut m = kiln::load_model(&f.join("models").join(model)).unwrap();
    let n_orig = m.graph.outputs.len();
    // An intermediate float tensor from the middle of the graph.
    let mid = m.graph.nodes.len() / 2;
    let (name, ty) = m.graph.nodes[mid..]
        .iter()
        .filter(|n| n.op_type != "Constant")
        .filter_map(|n| n.outputs.first())
        .filter_map(|o| m.graph.value_types.get(o).map(|t| (o.clone(), t.clone())))
        .find(|(_, t)| t.dtype == DType::F32)
        .expect("an intermediate f32 value with a known type");
    m.graph.outputs.push(ValueInfo {
        name: name.clone(),
        ty,
    });
    let work = scratch(&format!("export_{model}"));
    let out = work.join("edited.onnx");
    kiln::onnx::save(&m, &out).unwrap();

    let input: PathBuf = f.join("reference").join(input);
    let x = npy(&input);
    let ours = kiln::Session::new(m).unwrap().run(vec![x]).unwrap();
    let theirs = ort_run(&out, &[input], &work);
    assert_eq!(
        theirs.len(),
        n_orig + 1,
        "ONNX Runtime returned {} outputs",
        theirs.len()
    );
    assert_eq!(theirs[n_orig].0, name);
    for ((oname, t), k) in theirs.iter().zip(&ours) {
        let (d, m) = (max_abs_diff(k, t), max_abs(t));
        println!(
            "{model}: output '{oname}' {:?}: max abs diff {d:e} (max |out| {m})",
            t.shape()
        );
        assert!(d <= 1e-4 * m.max(1.0), "{model}: output '{oname}' differs: {d}");
    }
}

#[test]
fn export_efficientnet_with_extra_output() {
    let f = fixtures();
    let mut first: Vec<_> = std::fs::read_dir(f.join("reference/effnet"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".input.npy"))
        .collect();
    first.sort();
    check_export("efficientnet-lite0.onnx", &format!("effnet/{}", first[0]));
}

#[test]
fn export_ppocr_det_with_extra_output() {
    check_export("ch_PP-OCRv4_det_infer.onnx", "ocr/det.input.npy");
}

#[test]
fn export_ppocr_cls_with_extra_output() {
    check_export("ch_ppocr_mobile_v2.0_cls_infer.onnx", "ocr/cls_0.input.npy");
}

#[test]
fn export_ppocr_rec_with_extra_output() {
    check_export("ch_PP-OCRv4_rec_infer.onnx", "ocr/rec_0.input.npy");
}
