//! Static shape/type inference agrees with the reference eval on every
//! intermediate value of the real fixture models: each value becomes a graph
//! output, and its inferred dtype, rank and known dims are checked against
//! the tensor the executor produced.

mod common;
use common::*;
use kiln::ir::ValueInfo;

/// With `bind`, the graph input's symbolic dims are first bound to the
/// actual input's shape and inference re-run: then every dim must be known.
fn check(model: &str, input: &str, bind: bool) {
    let f = fixtures();
    let mut m = kiln::load_model(&f.join("models").join(model)).unwrap();
    let x = npy(&f.join("reference").join(input));
    if bind {
        m.graph.inputs[0].ty = kiln::ir::ValueType::known(x.dtype(), x.shape());
        kiln::ir::infer::infer_types(&mut m).unwrap();
    }
    let mut names = Vec::new();
    for n in &m.graph.nodes {
        for o in n.outputs.iter().filter(|o| !o.is_empty()) {
            let ty = m
                .graph
                .value_types
                .get(o)
                .cloned()
                .unwrap_or_else(|| panic!("{model}: '{o}' has no inferred type"));
            names.push((o.clone(), ty));
        }
    }
    m.graph.outputs = names
        .iter()
        .map(|(n, t)| ValueInfo {
            name: n.clone(),
            ty: t.clone(),
        })
        .collect();
    let outs = kiln::Session::new(m).unwrap().run(vec![x]).unwrap();
    let mut known = 0;
    for ((name, ty), t) in names.iter().zip(&outs) {
        assert_eq!(ty.dtype, t.dtype(), "{model}: '{name}' dtype");
        let dims = ty
            .shape
            .as_ref()
            .unwrap_or_else(|| panic!("{model}: '{name}' has unknown rank"));
        assert_eq!(
            dims.len(),
            t.rank(),
            "{model}: '{name}' rank: inferred {ty}, got {:?}",
            t.shape()
        );
        for (d, &a) in dims.iter().zip(t.shape()) {
            if let Some(k) = d.known() {
                assert_eq!(k, a, "{model}: '{name}': inferred {ty}, got {:?}", t.shape());
                known += 1;
            } else {
                assert!(
                    !bind,
                    "{model}: '{name}': dim {d} unknown although the input shape is bound"
                );
            }
        }
    }
    println!(
        "{model} (bound: {bind}): {} values, {known} known dims checked",
        names.len()
    );
}

#[test]
fn inference_matches_eval_efficientnet() {
    check(
        "efficientnet-lite0.onnx",
        "effnet/imagenet_00_243.input.npy",
        false,
    );
    check(
        "efficientnet-lite0.onnx",
        "effnet/imagenet_00_243.input.npy",
        true,
    );
}

#[test]
fn inference_matches_eval_ppocr() {
    for bind in [false, true] {
        check("ch_PP-OCRv4_det_infer.onnx", "ocr/det.input.npy", bind);
        check("ch_ppocr_mobile_v2.0_cls_infer.onnx", "ocr/cls_0.input.npy", bind);
        check("ch_PP-OCRv4_rec_infer.onnx", "ocr/rec_0.input.npy", bind);
    }
}
