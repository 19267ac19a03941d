//! Export of kiln's fused ops: every exported file is plain default-domain
//! ONNX that computes what the fused model computes, and exporting is
//! deterministic.

mod common;

use common::TempDir;
use kiln_ir::ops::eval_node;
use kiln_ir::ops::fused::{Activation, DOMAIN};
use kiln_ir::{infer, Attribute, DType, Graph, Model, Node, OpsetImport, Tensor, ValueInfo, ValueType};
use kiln_onnx::proto::ModelProto;
use kiln_onnx::{from_bytes, save, to_bytes, LoadOptions};
use prost::Message;
use std::collections::{BTreeMap, HashMap};

fn rnd(seed: u64, shape: &[usize]) -> Tensor {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(1);
    let n = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
        })
        .collect();
    Tensor::from_vec(shape.to_vec(), v).unwrap()
}

fn vi(name: &str, dims: &[usize]) -> ValueInfo {
    ValueInfo {
        name: name.into(),
        ty: ValueType::known(DType::F32, dims),
    }
}

fn fused(name: &str, op: &str, ins: &[&str], out: &str, act: Activation) -> Node {
    let mut n = Node::new(name, op, ins, &[out]);
    n.domain = DOMAIN.into();
    act.write_attrs(&mut n);
    n
}

/// x -> FusedConv(+skip, Clip[0, 6]) -> c (output)
/// g -> FusedGemm(transB, HardSwish) -> h -> FusedMatMul(SiLU) -> y (output)
fn fused_model(opset: i64) -> Model {
    let mut init = BTreeMap::new();
    init.insert("w".to_string(), rnd(1, &[4, 3, 3, 3]));
    init.insert("b".to_string(), rnd(2, &[4]));
    init.insert("wg".to_string(), rnd(3, &[6, 5]));
    init.insert("cg".to_string(), rnd(4, &[6]));
    init.insert("wm".to_string(), rnd(5, &[6, 3]));
    let conv = fused(
        "conv",
        "FusedConv",
        &["x", "w", "b", "skip"],
        "c",
        Activation::Clip { min: 0.0, max: 6.0 },
    )
    .with_attr("pads", Attribute::Ints(vec![1, 1, 1, 1]))
    .with_attr("kernel_shape", Attribute::Ints(vec![3, 3]));
    let gemm = fused("fc", "FusedGemm", &["g", "wg", "cg"], "h", Activation::HardSwish)
        .with_attr("transB", Attribute::Int(1))
        .with_attr("beta", Attribute::Float(0.5));
    let mm = fused("proj", "FusedMatMul", &["h", "wm"], "y", Activation::SiLU);
    Model {
        graph: Graph {
            name: "fused".into(),
            nodes: vec![conv, gemm, mm],
            inputs: vec![
                vi("x", &[1, 3, 6, 6]),
                vi("skip", &[1, 4, 6, 6]),
                vi("g", &[2, 5]),
            ],
            outputs: vec![vi("c", &[1, 4, 6, 6]), vi("y", &[2, 3])],
            initializers: init,
            value_types: HashMap::new(),
        },
        opsets: vec![
            OpsetImport {
                domain: String::new(),
                version: opset,
            },
            OpsetImport {
                domain: DOMAIN.into(),
                version: 1,
            },
        ],
        ..Default::default()
    }
}

fn feeds() -> Vec<(&'static str, Tensor)> {
    vec![
        ("x", rnd(10, &[1, 3, 6, 6])),
        ("skip", rnd(11, &[1, 4, 6, 6])),
        ("g", rnd(12, &[2, 5])),
    ]
}

/// Runs the model with the reference evals in topological order; returns
/// the graph outputs by name.
fn run(m: &Model) -> HashMap<String, Tensor> {
    let mut g = m.graph.clone();
    g.topo_sort().unwrap();
    let mut env: HashMap<String, Tensor> = g.initializers.clone().into_iter().collect();
    env.extend(feeds().into_iter().map(|(k, v)| (k.to_string(), v)));
    for n in &g.nodes {
        let ins: Vec<Option<&Tensor>> = n
            .inputs
            .iter()
            .map(|i| if i.is_empty() { None } else { env.get(i) })
            .collect();
        let outs = eval_node(n, m.opset(), &ins).unwrap();
        for (o, t) in n.outputs.iter().zip(outs) {
            env.insert(o.clone(), t);
        }
    }
    g.outputs
        .iter()
        .map(|o| (o.name.clone(), env[&o.name].clone()))
        .collect()
}

fn assert_close(got: &Tensor, want: &Tensor, what: &str) {
    assert_eq!(got.shape(), want.shape(), "{what}");
    for (a, b) in got.to_f32_vec().iter().zip(want.to_f32_vec()) {
        assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "{what}: {a} vs {b}");
    }
}

#[test]
fn exported_fused_model_is_standard_onnx_and_computes_the_same() {
    for opset in [13, 14] {
        let m = fused_model(opset);
        infer::check_supported(&m).unwrap();
        let bytes = to_bytes(&m).unwrap();

        // Plain default-domain ONNX.
        let mp = ModelProto::decode(&bytes[..]).unwrap();
        let imports: Vec<(String, i64)> = mp
            .opset_import
            .iter()
            .map(|o| (o.domain.clone().unwrap_or_default(), o.version.unwrap_or(0)))
            .collect();
        assert_eq!(imports, vec![(String::new(), opset)]);
        let graph = mp.graph.as_ref().unwrap();
        assert!(graph
            .node
            .iter()
            .all(|n| n.domain.as_deref().unwrap_or("").is_empty()));
        let ops: Vec<&str> = graph.node.iter().map(|n| n.op_type.as_deref().unwrap()).collect();
        let hardswish = if opset >= 14 {
            vec!["HardSwish"]
        } else {
            vec!["HardSigmoid", "Mul"]
        };
        let want_ops: Vec<&str> = ["Conv", "Add", "Clip", "Gemm"]
            .into_iter()
            .chain(hardswish)
            .chain(["MatMul", "Sigmoid", "Mul"])
            .collect();
        assert_eq!(ops, want_ops, "opset {opset}");
        assert!(!String::from_utf8_lossy(&bytes).contains("Fused"));

        // Re-import with the default checks (op support, inference) and compare.
        let back = from_bytes(&bytes, None, &LoadOptions::default()).unwrap();
        assert!(back.graph.nodes.iter().all(|n| n.domain.is_empty()));
        let want = run(&m);
        let got = run(&back);
        for name in ["c", "y"] {
            assert_close(&got[name], &want[name], &format!("opset {opset}, output {name}"));
        }

        // Deterministic: twice the same bytes, and save writes them.
        assert_eq!(to_bytes(&m).unwrap(), bytes);
        let dir = TempDir::new("fused_export");
        let path = dir.path().join("m.onnx");
        save(&m, &path).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
        // The caller's model is not changed.
        assert_eq!(m, fused_model(opset));
    }
}

#[test]
fn export_reimport_reexport_is_byte_identical() {
    // With types inferred (as an imported, optimized model has them), the
    // lowered intermediates get their types too, and a re-export of the
    // re-imported file gives the same bytes.
    let mut m = fused_model(14);
    infer::infer_types(&mut m).unwrap();
    let bytes = to_bytes(&m).unwrap();
    let back = from_bytes(&bytes, None, &LoadOptions::default()).unwrap();
    assert!(back.graph.value_types.contains_key("c__conv"));
    assert_eq!(to_bytes(&back).unwrap(), bytes);
}

#[test]
fn kiln_op_without_lowering_is_an_export_error() {
    let mut m = fused_model(13);
    m.graph.nodes[2].op_type = "FusedAttention".into();
    let e = to_bytes(&m).unwrap_err();
    let ir: kiln_ir::IrError = e.into();
    assert_eq!(ir.kind, kiln_ir::ErrorKind::UnsupportedOp);
    assert_eq!(ir.node.as_deref(), Some("proj"));
}
