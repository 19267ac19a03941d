//! Import of hand-built ModelProtos: dims, names, attributes, op checks.

mod common;

use common::*;
use kiln_ir::{Attribute, DType, Dim, ErrorKind, Tensor, ValueType};
use kiln_onnx::proto::attribute_proto::AttributeType;
use kiln_onnx::proto::tensor_proto::DataType;
use kiln_onnx::proto::{AttributeProto, GraphProto, TensorProto};
use kiln_onnx::{from_bytes, load, LoadOptions, OnnxErrorKind};

fn sym(s: &str) -> Dim {
    Dim::Sym(s.to_string())
}

#[test]
fn unknown_dims_get_fresh_symbols_per_input_and_axis() {
    // The PP-OCR cls model declares x as [-1, 3, '?', '?'].
    let mut m = one_node("Identity");
    let g = m.graph.as_mut().unwrap();
    g.input = vec![
        vi("x", FLOAT, &[D::V(-1), D::V(3), D::P("?"), D::P("?")]),
        vi("b", FLOAT, &[D::P("batch"), D::V(0), D::Missing, D::P("")]),
    ];
    g.node[0].input.push("b".into());
    let model = from_bytes(&bytes(&m), None, &unchecked()).unwrap();
    let ins = &model.graph.inputs;
    assert_eq!(
        ins[0].ty,
        ValueType::new(
            DType::F32,
            vec![sym("x:0"), Dim::Known(3), sym("x:2"), sym("x:3")]
        )
    );
    assert_eq!(
        ins[1].ty,
        ValueType::new(DType::F32, vec![sym("batch"), sym("b:1"), sym("b:2"), sym("b:3")])
    );
}

#[test]
fn fresh_symbols_avoid_declared_dim_params() {
    let mut m = one_node("Identity");
    let g = m.graph.as_mut().unwrap();
    g.input = vec![vi("x", FLOAT, &[D::P("x:1"), D::P("?")])];
    let model = from_bytes(&bytes(&m), None, &unchecked()).unwrap();
    assert_eq!(
        model.graph.inputs[0].ty.shape,
        Some(vec![sym("x:1"), sym("x:1_1")])
    );
}

#[test]
fn missing_shape_is_unknown_rank() {
    let mut m = one_node("Identity");
    let g = m.graph.as_mut().unwrap();
    let mut x = vi("x", INT64, &[]);
    if let Some(kiln_onnx::proto::type_proto::Value::TensorType(t)) =
        x.r#type.as_mut().and_then(|t| t.value.as_mut())
    {
        t.shape = None;
    }
    g.input = vec![x];
    let model = from_bytes(&bytes(&m), None, &unchecked()).unwrap();
    assert_eq!(model.graph.inputs[0].ty, ValueType::unknown_rank(DType::I64));
}

#[test]
fn initializers_listed_as_inputs_are_dropped() {
    let mut m = one_node("Add");
    let g = m.graph.as_mut().unwrap();
    g.node[0].input.push("w".into());
    g.input.push(vi("w", FLOAT, &[D::V(4)]));
    g.initializer.push(TensorProto {
        name: Some("w".into()),
        dims: vec![4],
        data_type: Some(FLOAT),
        float_data: vec![1.0, 2.0, 3.0, 4.0],
        ..Default::default()
    });
    let model = from_bytes(&bytes(&m), None, &unchecked()).unwrap();
    let names: Vec<_> = model.graph.inputs.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["x"]);
    assert_eq!(
        model.graph.initializers["w"].as_slice::<f32>().unwrap(),
        &[1.0, 2.0, 3.0, 4.0]
    );
}

#[test]
fn unnamed_nodes_get_unique_names() {
    let mut m = one_node("Relu");
    let g = m.graph.as_mut().unwrap();
    g.node = vec![
        node("", "Relu", &["x"], &["a"]),
        node("Relu_0", "Relu", &["a"], &["b"]),
        node("", "Relu", &["b"], &["c"]),
        node("", "Sigmoid", &["c"], &["y"]),
    ];
    let model = from_bytes(&bytes(&m), None, &unchecked()).unwrap();
    let names: Vec<_> = model.graph.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["Relu_0_1", "Relu_0", "Relu_2", "Sigmoid_3"]);
}

#[test]
fn nodes_are_sorted_topologically() {
    let mut m = one_node("Relu");
    let g = m.graph.as_mut().unwrap();
    g.node = vec![
        node("second", "Relu", &["a"], &["y"]),
        node("first", "Relu", &["x"], &["a"]),
    ];
    let model = from_bytes(&bytes(&m), None, &unchecked()).unwrap();
    assert_eq!(model.graph.nodes[0].name, "first");
}

fn attr(name: &str, ty: Option<AttributeType>) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: ty.map(|t| t as i32),
        ..Default::default()
    }
}

#[test]
fn attributes_of_every_supported_type() {
    let mut m = one_node("Foo");
    let n = &mut m.graph.as_mut().unwrap().node[0];
    let mut f = attr("f", Some(AttributeType::Float));
    f.f = Some(0.25);
    let mut i = attr("i", Some(AttributeType::Int));
    i.i = Some(-3);
    let mut s = attr("s", Some(AttributeType::String));
    s.s = Some(b"abc".to_vec());
    let mut fs = attr("fs", Some(AttributeType::Floats));
    fs.floats = vec![1.0, 2.0];
    let mut is = attr("is", Some(AttributeType::Ints));
    is.ints = vec![4, 5];
    let mut ss = attr("ss", Some(AttributeType::Strings));
    ss.strings = vec![b"x".to_vec()];
    let mut t = attr("t", Some(AttributeType::Tensor));
    t.t = Some(TensorProto {
        dims: vec![2],
        data_type: Some(INT64),
        int64_data: vec![7, 8],
        ..Default::default()
    });
    // IR version 1 files have no type field: the value decides.
    let mut old = attr("old", None);
    old.i = Some(9);
    // An explicit INT with the value left at its default.
    let zero = attr("zero", Some(AttributeType::Int));
    n.attribute = vec![f, i, s, fs, is, ss, t, old, zero];
    let model = from_bytes(&bytes(&m), None, &unchecked()).unwrap();
    let a = &model.graph.nodes[0].attrs;
    assert_eq!(a["f"], Attribute::Float(0.25));
    assert_eq!(a["i"], Attribute::Int(-3));
    assert_eq!(a["s"], Attribute::String(b"abc".to_vec()));
    assert_eq!(a["fs"], Attribute::Floats(vec![1.0, 2.0]));
    assert_eq!(a["is"], Attribute::Ints(vec![4, 5]));
    assert_eq!(a["ss"], Attribute::Strings(vec![b"x".to_vec()]));
    assert_eq!(
        a["t"],
        Attribute::Tensor(Tensor::from_vec(vec![2], vec![7i64, 8]).unwrap())
    );
    assert_eq!(a["old"], Attribute::Int(9));
    assert_eq!(a["zero"], Attribute::Int(0));
}

#[test]
fn graph_and_sparse_attributes_are_unsupported_and_located() {
    for (ty, label) in [
        (AttributeType::Graph, "GRAPH"),
        (AttributeType::Graphs, "GRAPHS"),
        (AttributeType::SparseTensor, "SPARSE_TENSOR"),
        (AttributeType::TypeProto, "TYPE_PROTO"),
    ] {
        let mut m = one_node("Loop");
        let n = &mut m.graph.as_mut().unwrap().node[0];
        n.name = Some("loop_1".into());
        let mut a = attr("body", Some(ty));
        if ty == AttributeType::Graph {
            a.g = Some(GraphProto::default());
        }
        n.attribute = vec![a];
        let e = from_bytes(&bytes(&m), None, &unchecked()).unwrap_err();
        assert_eq!(e.kind(), OnnxErrorKind::Ir(ErrorKind::UnsupportedOp));
        assert_eq!(
            e.to_string(),
            format!("node 'loop_1' (Loop), attribute 'body': {label} attributes are not supported by kiln")
        );
        let ir = e.ir_error().unwrap();
        assert_eq!(ir.attr.as_deref(), Some("body"));
    }
}

#[test]
fn bad_tensor_attribute_is_located_at_node_and_attribute() {
    let mut m = one_node("Constant");
    let n = &mut m.graph.as_mut().unwrap().node[0];
    n.input.clear();
    let mut t = attr("value", Some(AttributeType::Tensor));
    t.t = Some(TensorProto {
        dims: vec![3],
        data_type: Some(FLOAT),
        float_data: vec![1.0],
        ..Default::default()
    });
    n.attribute = vec![t];
    let e = from_bytes(&bytes(&m), None, &unchecked()).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.starts_with("node 'n0' (Constant), attribute 'value': "),
        "{msg}"
    );
    assert_eq!(e.ir_kind(), ErrorKind::InvalidModel);
}

#[test]
fn duplicate_attributes_are_rejected() {
    let mut m = one_node("Foo");
    let n = &mut m.graph.as_mut().unwrap().node[0];
    let mut a = attr("k", Some(AttributeType::Int));
    a.i = Some(1);
    n.attribute = vec![a.clone(), a];
    let e = from_bytes(&bytes(&m), None, &unchecked()).unwrap_err();
    assert_eq!(e.ir_kind(), ErrorKind::InvalidAttribute);
}

#[test]
fn unknown_ops_are_all_listed_in_one_error() {
    let mut m = one_node("Relu");
    let g = m.graph.as_mut().unwrap();
    g.node = vec![
        node("n0", "FooOp", &["x"], &["a"]),
        node("n1", "BarOp", &["a"], &["b"]),
        node("n2", "FooOp", &["b"], &["c"]),
        node("n3", "Add", &["c", "x"], &["y"]),
    ];
    let e = from_bytes(&bytes(&m), None, &LoadOptions::default()).unwrap_err();
    assert_eq!(e.kind(), OnnxErrorKind::Ir(ErrorKind::UnsupportedOp));
    let msg = e.to_string();
    assert!(msg.contains("BarOp (node 'n1')"), "{msg}");
    assert!(msg.contains("FooOp (node 'n0' and 1 more)"), "{msg}");
    assert!(!msg.contains("Add"), "{msg}");
    // The import layer alone accepts it.
    assert!(from_bytes(&bytes(&m), None, &unchecked()).is_ok());
}

#[test]
fn errors_name_the_model_file() {
    let dir = TempDir::new("errfile");
    let path = dir.path().join("bad.onnx");
    let mut m = one_node("Relu");
    m.graph.as_mut().unwrap().initializer.push(TensorProto {
        name: Some("weights".into()),
        dims: vec![1],
        data_type: Some(DataType::Double as i32),
        double_data: vec![1.0],
        ..Default::default()
    });
    std::fs::write(&path, bytes(&m)).unwrap();
    let e = load(&path).unwrap_err();
    assert_eq!(e.file(), Some(path.as_path()));
    assert_eq!(
        e.to_string(),
        format!(
            "{}: initializer 'weights' has element type DOUBLE, which kiln does not support",
            path.display()
        )
    );
    let e = load(&dir.path().join("missing.onnx")).unwrap_err();
    assert_eq!(e.kind(), OnnxErrorKind::Io);
    assert!(
        e.to_string().contains("missing.onnx: cannot read the model"),
        "{e}"
    );
}

#[test]
fn structural_errors() {
    // No graph.
    let mut m = one_node("Relu");
    m.graph = None;
    assert_eq!(
        from_bytes(&bytes(&m), None, &unchecked()).unwrap_err().ir_kind(),
        ErrorKind::InvalidModel
    );
    // Dangling node input.
    let mut m = one_node("Relu");
    m.graph.as_mut().unwrap().node[0].input = vec!["nowhere".into()];
    let e = from_bytes(&bytes(&m), None, &unchecked()).unwrap_err();
    assert_eq!(e.ir_kind(), ErrorKind::InvalidModel);
    assert!(e.to_string().contains("nowhere"), "{e}");
    // Unsupported input element type / kind.
    let mut m = one_node("Relu");
    m.graph.as_mut().unwrap().input = vec![vi("x", DataType::String as i32, &[D::V(1)])];
    let e = from_bytes(&bytes(&m), None, &unchecked()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "input 'x' has element type STRING, which kiln does not support"
    );
    let mut m = one_node("Relu");
    m.graph.as_mut().unwrap().input[0].r#type = Some(kiln_onnx::proto::TypeProto {
        denotation: None,
        value: Some(kiln_onnx::proto::type_proto::Value::SequenceType(Box::new(
            kiln_onnx::proto::type_proto::Sequence { elem_type: None },
        ))),
    });
    assert_eq!(
        from_bytes(&bytes(&m), None, &unchecked()).unwrap_err().ir_kind(),
        ErrorKind::UnsupportedOp
    );
    // Duplicate initializer.
    let mut m = one_node("Relu");
    let t = TensorProto {
        name: Some("w".into()),
        data_type: Some(INT64),
        int64_data: vec![1],
        ..Default::default()
    };
    m.graph.as_mut().unwrap().initializer = vec![t.clone(), t];
    assert!(from_bytes(&bytes(&m), None, &unchecked())
        .unwrap_err()
        .to_string()
        .contains("defined twice"));
}

#[test]
fn value_info_fills_known_intermediate_types() {
    let mut m = one_node("Relu");
    let g = m.graph.as_mut().unwrap();
    g.node = vec![
        node("a", "Relu", &["x"], &["h"]),
        node("b", "Relu", &["h"], &["y"]),
    ];
    g.value_info = vec![
        vi("h", FLOAT, &[D::V(1), D::P("?")]),
        // Kiln has no double: skipped, not an error.
        vi("other", DataType::Double as i32, &[D::V(1)]),
    ];
    let model = from_bytes(&bytes(&m), None, &unchecked()).unwrap();
    assert_eq!(
        model.graph.value_types.get("h"),
        Some(&ValueType::new(DType::F32, vec![Dim::Known(1), sym("h:1")]))
    );
    assert_eq!(model.graph.value_types.len(), 1);
}
