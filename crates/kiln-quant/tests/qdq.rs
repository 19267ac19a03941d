//! QDQ quantization of small synthetic models: graph structure, options,
//! errors, bias correction, mixed precision.

mod common;
use common::*;
use kiln_ir::{Attribute, DType, Model, Node, Tensor};
use kiln_quant::{
    calibrate, mixed_precision, prepare, quantize, sqnr_db, CalibOptions, LayerStatus, Method,
    QuantErrorKind, QuantOptions, WeightScheme,
};
use std::collections::BTreeSet;

/// x[1,3,8,8] -> c1 Conv+Relu -> c2 Conv 1x1 -> add (residual r + s) -> gap
/// -> flat -> fc Gemm (transB) -> logits -> sm Softmax -> prob.
fn small_cnn(opset: i64) -> Model {
    let mut g = G::new(opset);
    g.input("x", &[1, 3, 8, 8])
        .init("w1", uniform(&[8, 3, 3, 3], 1, -0.5, 0.5))
        .init("b1", uniform(&[8], 2, -0.1, 0.1))
        .init("w2", uniform(&[8, 8, 1, 1], 3, -0.5, 0.5))
        .init("b2", uniform(&[8], 4, -0.1, 0.1))
        .init("wf", uniform(&[10, 8], 5, -1.0, 1.0))
        .init("bf", uniform(&[10], 6, -0.1, 0.1))
        .node(
            "c1",
            "Conv",
            &["x", "w1", "b1"],
            &["a"],
            &[("pads", ints(&[1, 1, 1, 1]))],
        )
        .node("relu", "Relu", &["a"], &["r"], &[])
        .node("c2", "Conv", &["r", "w2", "b2"], &["s"], &[])
        .node("add", "Add", &["r", "s"], &["t"], &[])
        .node("gap", "GlobalAveragePool", &["t"], &["p"], &[])
        .node("flat", "Flatten", &["p"], &["f"], &[])
        .node(
            "fc",
            "Gemm",
            &["f", "wf", "bf"],
            &["logits"],
            &[("transB", int(1))],
        )
        .node("sm", "Softmax", &["logits"], &["prob"], &[])
        .output("logits")
        .output("prob");
    g.build()
}

fn samples(n: usize, seed: u64, dims: &[usize]) -> Vec<Vec<Tensor>> {
    (0..n)
        .map(|i| vec![uniform(dims, seed + i as u64, -1.0, 1.0)])
        .collect()
}

fn producers_of<'a>(m: &'a Model, op: &str) -> Vec<&'a Node> {
    m.graph.nodes.iter().filter(|n| n.op_type == op).collect()
}

#[test]
fn qdq_structure_of_a_small_cnn() {
    let m = small_cnn(13);
    let calib = calibrate(
        &m,
        &mut samples(8, 100, &[1, 3, 8, 8]),
        &CalibOptions::default(),
        &mut |_| {},
    )
    .unwrap();
    let opts = QuantOptions::default();
    let (q, rep) = quantize(&m, &calib, &opts).unwrap();
    println!("{rep}");

    // The residual Add stays; Relu is fused into c1.
    let p = prepare(&m).unwrap();
    let ops: Vec<(&str, &str)> = p
        .graph
        .nodes
        .iter()
        .map(|n| (n.name.as_str(), n.op_type.as_str()))
        .collect();
    assert_eq!(
        ops,
        [
            ("c1", "FusedConv"),
            ("c2", "Conv"),
            ("add", "Add"),
            ("gap", "GlobalAveragePool"),
            ("flat", "Flatten"),
            ("fc", "Gemm"),
            ("sm", "Softmax")
        ]
    );
    assert_eq!(rep.quantized_names(), ["c1", "c2", "add", "gap", "flat", "fc"]);
    assert_eq!((rep.quantized_layers, rep.fp32_layers), (6, 1));
    assert!(matches!(
        rep.layer("sm").unwrap().status,
        LayerStatus::NotQuantized(_)
    ));
    assert_eq!(rep.opset, (13, 13));

    // Node names kept; one Q per activation tensor: x, r, s, t, p, f, logits.
    for n in ["c1", "c2", "add", "gap", "flat", "fc", "sm"] {
        assert!(q.graph.nodes.iter().any(|x| x.name == n), "{n} missing");
    }
    let qs = producers_of(&q, "QuantizeLinear");
    let mut quantized: Vec<&str> = qs.iter().map(|n| n.inputs[0].as_str()).collect();
    quantized.sort_unstable();
    assert_eq!(quantized, ["f", "logits_float", "p", "r", "s", "t", "x"]);
    assert_eq!(rep.qdq_tensors, 7);
    // 7 activation DQs + 3 weights + 3 biases.
    assert_eq!(producers_of(&q, "DequantizeLinear").len(), 13);
    // (c1, fused with the Relu, writes the Relu's output 'r'.) Every input
    // of a quantized layer, and Softmax's, is a DequantizeLinear output.
    let dq_outputs: BTreeSet<&str> = producers_of(&q, "DequantizeLinear")
        .iter()
        .map(|n| n.outputs[0].as_str())
        .collect();
    for n in &q.graph.nodes {
        if ["c1", "c2", "add", "gap", "flat", "fc", "sm"].contains(&n.name.as_str()) {
            for i in n.inputs.iter().filter(|i| !i.is_empty()) {
                assert!(dq_outputs.contains(i.as_str()), "{} reads {i}", n.name);
            }
        }
    }
    // The graph output 'logits' is written by the last DQ and stays float;
    // Softmax reads it; 'prob' is Softmax's float output.
    let last = q.graph.nodes.iter().find(|n| n.outputs[0] == "logits").unwrap();
    assert_eq!(last.op_type, "DequantizeLinear");
    assert_eq!(
        q.graph.nodes.iter().find(|n| n.name == "sm").unwrap().inputs,
        ["logits"]
    );
    assert_eq!(
        q.graph
            .outputs
            .iter()
            .map(|o| o.name.as_str())
            .collect::<Vec<_>>(),
        ["logits", "prob"]
    );

    // Flatten's output shares Flatten's input parameters.
    let q_of = |v: &str| qs.iter().find(|n| n.inputs[0] == v).unwrap();
    assert_eq!(q_of("f").inputs[1..], q_of("p").inputs[1..]);
    let flat = rep.layer("flat").unwrap();
    assert_eq!(flat.output.as_ref().unwrap().shared_with.as_deref(), Some("p"));

    // Weights: int8, per output channel; Gemm with transB: axis 0.
    let init = &q.graph.initializers;
    assert!(!init.contains_key("w1") && !init.contains_key("wf") && !init.contains_key("b1"));
    let c1 = rep.layer("c1").unwrap();
    assert_eq!(c1.weight, Some(WeightScheme::PerChannel { axis: 0, channels: 8 }));
    assert_eq!(
        rep.layer("fc").unwrap().weight,
        Some(WeightScheme::PerChannel {
            axis: 0,
            channels: 10
        })
    );
    let c1n = q.graph.nodes.iter().find(|n| n.name == "c1").unwrap();
    let wdq = q
        .graph
        .nodes
        .iter()
        .find(|n| n.outputs[0] == c1n.inputs[1])
        .unwrap();
    assert_eq!(wdq.op_type, "DequantizeLinear");
    assert_eq!(wdq.attrs.get("axis"), Some(&Attribute::Int(0)));
    assert_eq!(init[&wdq.inputs[0]].dtype(), DType::I8);
    assert_eq!(init[&wdq.inputs[0]].shape(), [8, 3, 3, 3]);
    assert_eq!(init[&wdq.inputs[1]].shape(), [8]);
    assert_eq!(init[&wdq.inputs[2]].dtype(), DType::I8);
    // Bias: int32, scale s_x * s_w per channel, zero point 0.
    let bdq = q
        .graph
        .nodes
        .iter()
        .find(|n| n.outputs[0] == c1n.inputs[2])
        .unwrap();
    assert_eq!(init[&bdq.inputs[0]].dtype(), DType::I32);
    let s_x = c1.inputs[0].scale;
    let s_w = init[&wdq.inputs[1]].to_f32_vec();
    let s_b = init[&bdq.inputs[1]].to_f32_vec();
    for (b, w) in s_b.iter().zip(&s_w) {
        assert!((b - w * s_x).abs() <= 1e-6 * b.abs());
    }
    assert!(init[&bdq.inputs[2]].to_f32_vec().iter().all(|&z| z == 0.0));
    assert!(c1.bias.as_ref().unwrap().corrected);
    // Activations: uint8 scalars.
    let xq = q_of("x");
    assert_eq!(init[&xq.inputs[2]].dtype(), DType::U8);
    assert_eq!(init[&xq.inputs[1]].shape(), [] as [usize; 0]);

    // Close to fp32 on other inputs.
    let test = samples(4, 900, &[1, 3, 8, 8]);
    let (mut want, mut got) = (Vec::new(), Vec::new());
    for t in &test {
        want.push(run(&m, t).remove(0));
        got.push(run(&q, t).remove(0));
    }
    let s = sqnr_db(&want, &got);
    println!("small CNN logits SQNR {s:.1} dB");
    assert!(s > 25.0, "SQNR {s}");
    let text = rep.to_string();
    assert!(
        text.contains("FusedConv") && text.contains("int8/ch0x8"),
        "{text}"
    );
}

#[test]
fn excluded_layers_stay_float_and_read_dequantized_inputs() {
    let m = small_cnn(13);
    let calib = calibrate(
        &m,
        &mut samples(4, 100, &[1, 3, 8, 8]),
        &CalibOptions::default(),
        &mut |_| {},
    )
    .unwrap();
    let opts = QuantOptions {
        exclude: ["c2".to_string()].into(),
        ..QuantOptions::default()
    };
    let (q, rep) = quantize(&m, &calib, &opts).unwrap();
    assert_eq!(rep.layer("c2").unwrap().status, LayerStatus::Excluded);
    assert_eq!(rep.quantized_layers, 5);
    let c2 = q.graph.nodes.iter().find(|n| n.name == "c2").unwrap();
    assert_eq!(c2.inputs[1..], ["w2".to_string(), "b2".to_string()]);
    assert_eq!(q.graph.initializers["w2"].dtype(), DType::F32);
    let src = q
        .graph
        .nodes
        .iter()
        .find(|n| n.outputs[0] == c2.inputs[0])
        .unwrap();
    assert_eq!(src.op_type, "DequantizeLinear");
    // Its output is still quantized: 'add' reads it.
    assert!(producers_of(&q, "QuantizeLinear")
        .iter()
        .any(|n| n.inputs[0] == "s"));
}

#[test]
fn option_and_statistics_errors() {
    let m = small_cnn(13);
    let mut data = samples(2, 100, &[1, 3, 8, 8]);
    let calib = calibrate(
        &m,
        &mut data,
        &CalibOptions::for_method(Method::MinMax),
        &mut |_| {},
    )
    .unwrap();
    assert!(!calib.has_histograms());
    let e = quantize(
        &m,
        &calib,
        &QuantOptions {
            method: Method::Entropy,
            ..QuantOptions::default()
        },
    )
    .unwrap_err();
    assert_eq!(e.kind, QuantErrorKind::MissingStats, "{e}");
    let e = quantize(
        &m,
        &calib,
        &QuantOptions {
            method: Method::MinMax,
            exclude: ["relu".to_string()].into(),
            ..QuantOptions::default()
        },
    )
    .unwrap_err();
    assert_eq!(e.kind, QuantErrorKind::InvalidOptions);
    assert!(e.to_string().contains("'relu'"), "{e}");
    let e = quantize(
        &m,
        &calib,
        &QuantOptions {
            method: Method::Percentile(20.0),
            ..QuantOptions::default()
        },
    )
    .unwrap_err();
    assert_eq!(e.kind, QuantErrorKind::InvalidOptions);
    let e = quantize(
        &m,
        &calib,
        &QuantOptions {
            method: Method::MinMax,
            activation_dtype: DType::F32,
            ..QuantOptions::default()
        },
    )
    .unwrap_err();
    assert_eq!(e.kind, QuantErrorKind::InvalidOptions);
    // Statistics of another model.
    let mut other = kiln_quant::CalibrationResult::default();
    other.tensors.insert("zzz".into(), calib.tensors["x"].clone());
    let e = quantize(
        &m,
        &other,
        &QuantOptions {
            method: Method::MinMax,
            ..QuantOptions::default()
        },
    )
    .unwrap_err();
    assert_eq!(e.kind, QuantErrorKind::MissingStats);
    assert!(e.to_string().contains("'x'"), "{e}");
    // Empty data; wrong input shape.
    let e = calibrate(&m, &mut Vec::new(), &CalibOptions::default(), &mut |_| {}).unwrap_err();
    assert_eq!(e.kind, QuantErrorKind::Data);
    let e = calibrate(
        &m,
        &mut samples(1, 1, &[1, 3, 4, 4]),
        &CalibOptions::default(),
        &mut |_| {},
    )
    .unwrap_err();
    assert_eq!(
        e.kind,
        QuantErrorKind::Model(kiln_ir::ErrorKind::InvalidInput),
        "{e}"
    );
}

#[test]
fn calibration_progress_and_statistics() {
    let m = small_cnn(13);
    let mut data = samples(3, 100, &[1, 3, 8, 8]);
    let mut seen = Vec::new();
    let calib = calibrate(&m, &mut data, &CalibOptions::default(), &mut |p| {
        seen.push((p.pass, p.done, p.total))
    })
    .unwrap();
    assert_eq!(
        seen,
        [
            (1, 1, Some(3)),
            (1, 2, Some(3)),
            (1, 3, Some(3)),
            (2, 1, Some(3)),
            (2, 2, Some(3)),
            (2, 3, Some(3))
        ]
    );
    assert_eq!((calib.samples, calib.probe.len()), (3, 3));
    // Exact min/max of the input.
    let all: Vec<f32> = data.iter().flat_map(|s| s[0].to_f32_vec()).collect();
    let x = &calib.tensors["x"];
    assert_eq!(x.min, all.iter().copied().fold(f32::INFINITY, f32::min));
    assert_eq!(x.max, all.iter().copied().fold(f32::NEG_INFINITY, f32::max));
    assert_eq!(x.count, all.len() as u64);
    assert_eq!(x.histogram.as_ref().unwrap().total(), all.len() as u64);
    // Post-ReLU output: non-negative. Channel means of c1's input (x).
    assert!(calib.tensors["r"].min >= 0.0);
    let cm = &calib.channel_means["c1"];
    assert_eq!((cm.input.as_str(), cm.axis, cm.mean.len()), ("x", 1, 3));
    let mean0: f64 = data
        .iter()
        .flat_map(|s| s[0].to_f32_vec()[..64].to_vec())
        .map(|v| v as f64)
        .sum::<f64>()
        / 192.0;
    assert!((cm.mean[0] - mean0).abs() < 1e-9);
    // fc (Gemm) input channels: the 8 features.
    assert_eq!(
        (
            calib.channel_means["fc"].axis,
            calib.channel_means["fc"].mean.len()
        ),
        (1, 8)
    );
}

#[test]
fn opset_is_raised_to_13_when_the_ops_allow_it() {
    // No Softmax: opset 11 -> 13.
    let mut m = small_cnn(11);
    m.graph.nodes.retain(|n| n.name != "sm");
    m.graph.outputs.retain(|o| o.name != "prob");
    let calib = calibrate(
        &m,
        &mut samples(2, 1, &[1, 3, 8, 8]),
        &CalibOptions::default(),
        &mut |_| {},
    )
    .unwrap();
    let (q, rep) = quantize(&m, &calib, &QuantOptions::default()).unwrap();
    assert_eq!((rep.opset, q.opset()), ((11, 13), 13));
    // Softmax changed meaning at 13: refused, naming the node.
    let m = small_cnn(11);
    let calib = calibrate(
        &m,
        &mut samples(2, 1, &[1, 3, 8, 8]),
        &CalibOptions::default(),
        &mut |_| {},
    )
    .unwrap();
    let e = quantize(&m, &calib, &QuantOptions::default()).unwrap_err();
    assert_eq!(
        (e.kind, e.node.as_deref()),
        (QuantErrorKind::Opset, Some("sm")),
        "{e}"
    );
}

#[test]
fn int8_activations_and_per_tensor_weights() {
    let m = small_cnn(13);
    let calib = calibrate(
        &m,
        &mut samples(16, 100, &[1, 3, 8, 8]),
        &CalibOptions::default(),
        &mut |_| {},
    )
    .unwrap();
    let opts = QuantOptions {
        method: Method::Mse,
        activation_dtype: DType::I8,
        per_channel: false,
        ..QuantOptions::default()
    };
    let (q, rep) = quantize(&m, &calib, &opts).unwrap();
    assert_eq!(rep.layer("c1").unwrap().weight, Some(WeightScheme::PerTensor));
    for n in producers_of(&q, "QuantizeLinear") {
        assert_eq!(q.graph.initializers[&n.inputs[2]].dtype(), DType::I8);
    }
    for n in producers_of(&q, "DequantizeLinear") {
        assert!(!n.attrs.contains_key("axis"), "{}", n.name);
        assert!(q.graph.initializers[&n.inputs[1]].rank() == 0, "{}", n.name);
    }
    let t = samples(2, 900, &[1, 3, 8, 8]);
    let want: Vec<Tensor> = t.iter().map(|s| run(&m, s).remove(0)).collect();
    let got: Vec<Tensor> = t.iter().map(|s| run(&q, s).remove(0)).collect();
    let snr = sqnr_db(&want, &got);
    println!("int8 activations, per-tensor weights, MSE ranges: logits SQNR {snr:.1} dB");
    assert!(snr > 20.0, "{snr}");
}

/// x (channel means 0.5..3) -> Conv 3x3 pad 1 with per-tensor weights whose
/// scale one large weight dominates: the rounding of the small weights has a
/// non-zero mean per output channel that bias correction removes.
#[test]
fn bias_correction_reduces_the_mean_output_error() {
    let c = 16;
    let mut w = uniform(&[c, c, 3, 3], 11, -0.2, 0.2);
    w.as_slice_mut::<f32>().unwrap()[5] = 4.0;
    let mut g = G::new(13);
    g.input("x", &[1, c, 12, 12])
        .init("w", w)
        .node(
            "conv",
            "Conv",
            &["x", "w"],
            &["y"],
            &[("pads", ints(&[1, 1, 1, 1]))],
        )
        .output("y");
    let m = g.build();
    let data = |n: usize, seed: u64| -> Vec<Vec<Tensor>> {
        (0..n)
            .map(|i| {
                let mut x = uniform(&[1, c, 12, 12], seed + i as u64, -0.5, 0.5);
                for (k, v) in x.as_slice_mut::<f32>().unwrap().iter_mut().enumerate() {
                    *v += 0.5 + 2.5 * (k / 144) as f32 / c as f32;
                }
                vec![x]
            })
            .collect()
    };
    let calib = calibrate(
        &m,
        &mut data(8, 50),
        &CalibOptions::for_method(Method::MinMax),
        &mut |_| {},
    )
    .unwrap();
    let test = data(8, 500);
    let mean_err = |bias_correction: bool| -> (f64, Model) {
        let opts = QuantOptions {
            method: Method::MinMax,
            per_channel: false,
            bias_correction,
            ..QuantOptions::default()
        };
        let (q, rep) = quantize(&m, &calib, &opts).unwrap();
        let b = rep.layer("conv").unwrap().bias.clone();
        assert_eq!(b.is_some_and(|b| b.corrected && b.added), bias_correction);
        // Mean error per output channel over samples and positions, then
        // the mean of its magnitude over channels.
        let mut per_ch = vec![0f64; c];
        for t in &test {
            let (y, yq) = (
                run(&m, t).remove(0).to_f32_vec(),
                run(&q, t).remove(0).to_f32_vec(),
            );
            for (k, (a, b)) in y.iter().zip(&yq).enumerate() {
                per_ch[k / 144] += (b - a) as f64;
            }
        }
        let n = (test.len() * 144) as f64;
        (per_ch.iter().map(|s| (s / n).abs()).sum::<f64>() / c as f64, q)
    };
    let (without, _) = mean_err(false);
    let (with, _) = mean_err(true);
    println!("mean |E[y_q - y]| per channel: {without:.5} without, {with:.5} with bias correction");
    assert!(with < 0.5 * without, "{with} vs {without}");
}

/// A model with one badly quantizable layer (per-tensor weights with one
/// huge weight): the sensitivity analysis ranks it first and mixed
/// precision keeps it in fp32. "Accuracy" here is a deterministic stand-in
/// (100 minus the relative logit error in percent).
#[test]
fn mixed_precision_keeps_the_sensitive_layer_in_fp32() {
    let mut w2 = uniform(&[8, 8, 3, 3], 21, -0.3, 0.3);
    w2.as_slice_mut::<f32>().unwrap()[0] = 60.0;
    let mut g = G::new(13);
    g.input("x", &[1, 4, 8, 8])
        .init("w1", uniform(&[8, 4, 3, 3], 20, -0.3, 0.3))
        .init("w2", w2)
        .init("w3", uniform(&[8, 8, 3, 3], 22, -0.3, 0.3))
        .init("wf", uniform(&[10, 8], 23, -1.0, 1.0))
        .node(
            "c1",
            "Conv",
            &["x", "w1"],
            &["a"],
            &[("pads", ints(&[1, 1, 1, 1]))],
        )
        .node(
            "c2",
            "Conv",
            &["a", "w2"],
            &["b"],
            &[("pads", ints(&[1, 1, 1, 1]))],
        )
        .node(
            "c3",
            "Conv",
            &["b", "w3"],
            &["c"],
            &[("pads", ints(&[1, 1, 1, 1]))],
        )
        .node("gap", "GlobalAveragePool", &["c"], &["p"], &[])
        .node("flat", "Flatten", &["p"], &["f"], &[])
        .node("fc", "Gemm", &["f", "wf"], &["logits"], &[("transB", int(1))])
        .output("logits");
    let m = g.build();
    let calib = calibrate(
        &m,
        &mut samples(32, 300, &[1, 4, 8, 8]),
        &CalibOptions::default(),
        &mut |_| {},
    )
    .unwrap();
    let val = samples(6, 700, &[1, 4, 8, 8]);
    let reference: Vec<Tensor> = val.iter().map(|s| run(&m, s).remove(0)).collect();
    // "Accuracy": 100 minus the relative L2 error of the logits, in percent.
    let mut evaluate = |q: &Model| -> kiln_quant::Result<f64> {
        let got: Vec<Tensor> = val.iter().map(|s| run(q, s).remove(0)).collect();
        let snr = sqnr_db(&reference, &got);
        Ok(100.0 - 100.0 * 10f64.powf(-snr / 20.0))
    };
    let opts = QuantOptions {
        method: Method::MinMax,
        per_channel: false,
        ..QuantOptions::default()
    };
    let (q, rep, mp) = mixed_precision(&m, &calib, &opts, 2.0, &mut evaluate).unwrap();
    println!("{mp}");
    assert!(mp.int8_drop > 2.0, "{mp}");
    assert_eq!(mp.sensitivity.len(), 6);
    assert_eq!(mp.sensitivity[0].name, "c2");
    // c2 first; c3 reads c2's output, whose per-tensor range the one huge
    // channel dominates, so it comes second. Keeping both meets the budget.
    assert_eq!(mp.kept_fp32, ["c2", "c3"]);
    assert!(mp.met_budget && mp.final_drop <= 2.0, "{mp}");
    assert_eq!(rep.layer("c2").unwrap().status, LayerStatus::Excluded);
    assert!(q.graph.initializers.contains_key("w2"));
    // A0 and all-int8 (reported as 0 kept), then k = 1, 2.
    assert_eq!(mp.evaluations.iter().map(|e| e.0).collect::<Vec<_>>(), [0, 1, 2]);
    assert!(
        mp.to_string().contains("kept in fp32: 2 layer(s): c2, c3"),
        "{mp}"
    );
    // A budget the all-int8 model meets: no analysis.
    let (_, _, mp) = mixed_precision(&m, &calib, &opts, 100.0, &mut evaluate).unwrap();
    assert!(mp.met_budget && mp.kept_fp32.is_empty() && mp.sensitivity.is_empty());
    let e = mixed_precision(&m, &calib, &opts, f64::NAN, &mut evaluate).unwrap_err();
    assert_eq!(e.kind, QuantErrorKind::InvalidOptions);
}
