//! The graph optimizer on the real fixture models: EfficientNet-Lite0 loses
//! every BatchNormalization and standalone Clip; optimized outputs equal the
//! original's, in kiln and in ONNX Runtime from the exported plain ONNX; and
//! optimizing twice changes nothing.

mod common;
use common::*;
use kiln::ir::Model;
use kiln::opt::{optimize, Options, Report};
use std::path::PathBuf;

fn load(model: &str) -> Model {
    kiln::load_model(&fixtures().join("models").join(model)).unwrap()
}

fn optimized(model: &str) -> (Model, Model, Report) {
    let orig = load(model);
    let mut m = orig.clone();
    let rep = optimize(&mut m, &Options::default()).unwrap_or_else(|e| panic!("{model}: {e}"));
    (orig, m, rep)
}

fn count(m: &Model, op: &str) -> usize {
    m.graph.nodes.iter().filter(|n| n.op_type == op).count()
}

fn effnet_inputs() -> Vec<PathBuf> {
    let dir = fixtures().join("reference/effnet");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".input.npy"))
        .collect();
    v.sort();
    assert_eq!(v.len(), 20);
    v
}

#[test]
fn efficientnet_loses_every_batchnorm_and_clip() {
    let (orig, m, rep) = optimized("efficientnet-lite0.onnx");
    assert_eq!(
        (
            count(&orig, "BatchNormalization"),
            count(&orig, "Clip"),
            orig.graph.nodes.len()
        ),
        (49, 33, 143)
    );
    println!("report: {:?}", rep.applied());
    assert_eq!(count(&m, "BatchNormalization"), 0);
    assert_eq!(count(&m, "Clip"), 0, "standalone Clip left");
    assert!(
        m.graph.nodes.len() <= 72,
        "{} nodes after optimization",
        m.graph.nodes.len()
    );
    assert_eq!(rep.nodes_after, m.graph.nodes.len());
    // The exported file is plain ONNX without BatchNormalization.
    let work = scratch("opt_effnet_export");
    let out = work.join("effnet.opt.onnx");
    kiln::onnx::save(&m, &out).unwrap();
    let back = kiln::load_model(&out).unwrap();
    assert_eq!(count(&back, "BatchNormalization"), 0);
    assert!(
        back.graph.nodes.iter().all(|n| n.domain.is_empty()),
        "exported file has non-standard ops"
    );
    assert!(back
        .opsets
        .iter()
        .all(|o| o.domain.is_empty() || o.domain == "ai.onnx"));
}

/// Optimized logits vs the original's on the 20 photos: max abs diff <= 1e-4
/// and the same top-1, run in kiln and in ONNX Runtime from the exported file.
#[test]
fn efficientnet_optimized_logits_match_original() {
    let (orig, m, _) = optimized("efficientnet-lite0.onnx");
    let (s0, s1) = (
        kiln::Session::new(orig).unwrap(),
        kiln::Session::new(m.clone()).unwrap(),
    );
    let work = scratch("opt_effnet_logits");
    let out = work.join("effnet.opt.onnx");
    kiln::onnx::save(&m, &out).unwrap();
    let inputs = effnet_inputs();
    let ort = ort_run_each(&out, &inputs, &work);
    let mut worst = (0f32, 0f32);
    for (p, ort_opt) in inputs.iter().zip(&ort) {
        let x = npy(p);
        let a = s0.run(vec![x.clone()]).unwrap().remove(0);
        let b = s1.run(vec![x]).unwrap().remove(0);
        let ort_orig = npy(&PathBuf::from(
            p.to_string_lossy().replace(".input.npy", ".ort.npy"),
        ));
        let (d_kiln, d_ort) = (max_abs_diff(&b, &a), max_abs_diff(ort_opt, &ort_orig));
        worst = (worst.0.max(d_kiln), worst.1.max(d_ort));
        assert!(
            d_kiln <= 1e-4,
            "{}: kiln optimized vs original: {d_kiln}",
            p.display()
        );
        assert!(
            d_ort <= 1e-4,
            "{}: ORT on exported optimized vs original: {d_ort}",
            p.display()
        );
        assert_eq!(argmax(&a), argmax(&b));
        assert_eq!(argmax(ort_opt), argmax(&ort_orig));
    }
    println!("worst max abs diff: kiln {:e}, ORT {:e}", worst.0, worst.1);
}

fn check_ocr(model: &str, prefix: &str) {
    let (orig, m, rep) = optimized(model);
    println!(
        "{model}: {} -> {} nodes, {:?}",
        rep.nodes_before,
        rep.nodes_after,
        rep.applied()
    );
    assert!(rep.nodes_after < rep.nodes_before, "{model}: nothing optimized");
    assert_eq!(
        count(&m, "BatchNormalization"),
        0,
        "{model}: BatchNormalization left"
    );
    let work = scratch(&format!("opt_{prefix}"));
    let out = work.join("opt.onnx");
    kiln::onnx::save(&m, &out).unwrap();
    let dir = fixtures().join("reference/ocr");
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with(prefix) && n.ends_with(".input.npy")
        })
        .collect();
    inputs.sort();
    let ort = ort_run_each(&out, &inputs, &work);
    let (s0, s1) = (kiln::Session::new(orig).unwrap(), kiln::Session::new(m).unwrap());
    for (p, ort_opt) in inputs.iter().zip(&ort) {
        let x = npy(p);
        let a = s0.run(vec![x.clone()]).unwrap().remove(0);
        let b = s1.run(vec![x]).unwrap().remove(0);
        let ort_orig = npy(&PathBuf::from(
            p.to_string_lossy().replace(".input.npy", ".ort.npy"),
        ));
        let tol = 1e-4 * max_abs(&a);
        let (d_kiln, d_ort) = (max_abs_diff(&b, &a), max_abs_diff(ort_opt, &ort_orig));
        println!("{}: kiln {d_kiln:e}, ORT {d_ort:e} (tol {tol:e})", p.display());
        assert!(
            d_kiln <= tol,
            "{}: kiln optimized vs original: {d_kiln}",
            p.display()
        );
        assert!(
            d_ort <= tol,
            "{}: ORT on exported optimized vs original: {d_ort}",
            p.display()
        );
    }
}

#[test]
fn ppocr_det_optimized_matches_original() {
    check_ocr("ch_PP-OCRv4_det_infer.onnx", "det");
}

#[test]
fn ppocr_cls_optimized_matches_original() {
    check_ocr("ch_ppocr_mobile_v2.0_cls_infer.onnx", "cls_");
}

#[test]
fn ppocr_rec_optimized_matches_original() {
    check_ocr("ch_PP-OCRv4_rec_infer.onnx", "rec_");
}

/// Optimizing an optimized model changes nothing: the same IR node count, and
/// (through an export and re-import) the same exported bytes.
#[test]
fn optimize_is_idempotent_on_every_fixture_model() {
    for model in [
        "efficientnet-lite0.onnx",
        "ch_PP-OCRv4_det_infer.onnx",
        "ch_ppocr_mobile_v2.0_cls_infer.onnx",
        "ch_PP-OCRv4_rec_infer.onnx",
    ] {
        let (_, once, _) = optimized(model);
        let mut twice = once.clone();
        let rep = optimize(&mut twice, &Options::default()).unwrap();
        assert_eq!(
            twice.graph.nodes.len(),
            once.graph.nodes.len(),
            "{model}: IR node count changed"
        );
        assert!(
            rep.applied().is_empty(),
            "{model}: second pass applied {:?}",
            rep.applied()
        );
        let bytes1 = kiln::onnx::to_bytes(&once).unwrap();
        assert_eq!(
            kiln::onnx::to_bytes(&twice).unwrap(),
            bytes1,
            "{model}: exported bytes changed"
        );
        // Through the file: export, re-import (fused ops come back as plain
        // Conv + activation), re-optimize, re-export.
        let mut again = kiln::onnx::from_bytes(&bytes1, None, &Default::default()).unwrap();
        optimize(&mut again, &Options::default()).unwrap();
        assert_eq!(
            again.graph.nodes.len(),
            once.graph.nodes.len(),
            "{model}: node count after re-import"
        );
        assert!(
            kiln::onnx::to_bytes(&again).unwrap() == bytes1,
            "{model}: re-optimized export differs"
        );
    }
}
