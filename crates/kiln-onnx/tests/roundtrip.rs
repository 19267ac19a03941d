//! Export then import: IR -> ONNX bytes -> IR gives the same model.

mod common;

use common::*;
use kiln_ir::{f16, Attribute, DType, Dim, Graph, Model, Node, OpsetImport, Tensor, ValueInfo, ValueType};
use kiln_onnx::{from_bytes, load, load_with, save, tensor_from_pb, tensor_to_pb, to_bytes, OnnxErrorKind};
use std::collections::{BTreeMap, HashMap};

fn every_dtype() -> Vec<Tensor> {
    vec![
        Tensor::from_vec(vec![2, 3], vec![0.5f32, -1.0, 2.0, f32::INFINITY, 1e-30, -0.0]).unwrap(),
        Tensor::from_vec(vec![2], vec![f16::from_f32(0.25), f16::MIN]).unwrap(),
        Tensor::from_vec(vec![3], vec![-128i8, 5, 127]).unwrap(),
        Tensor::from_vec(vec![1, 2], vec![7u8, 255]).unwrap(),
        Tensor::from_vec(vec![2], vec![-5i32, i32::MAX]).unwrap(),
        Tensor::from_vec(vec![3], vec![3i64, -1, i64::MIN]).unwrap(),
        Tensor::from_vec(vec![2, 1], vec![false, true]).unwrap(),
        Tensor::scalar(42i64),
        Tensor::from_vec(vec![0, 5], Vec::<f32>::new()).unwrap(),
    ]
}

/// A model using every feature the exporter writes.
fn rich_model() -> Model {
    let mut initializers = BTreeMap::new();
    for (i, t) in every_dtype().into_iter().enumerate() {
        initializers.insert(format!("w{i}"), t);
    }
    let batch = Dim::Sym("batch".into());
    let a = Node::new("a", "FooOp", &["x", "w0"], &["t"])
        .with_attr("alpha", Attribute::Float(0.5))
        .with_attr("axis", Attribute::Int(-1))
        .with_attr("mode", Attribute::String(b"nearest".to_vec()))
        .with_attr("scales", Attribute::Floats(vec![1.0, 2.5]))
        .with_attr("pads", Attribute::Ints(vec![0, 1, 0, 1]))
        .with_attr("names", Attribute::Strings(vec![b"p".to_vec(), Vec::new()]))
        .with_attr(
            "value",
            Attribute::Tensor(Tensor::from_vec(vec![2], vec![1.0f32, 2.0]).unwrap()),
        )
        .with_attr("empty_ints", Attribute::Ints(vec![]));
    let mut b = Node::new("b", "BarOp", &["t", "", "w5", "y"], &["z", ""]);
    b.domain = "com.example".into();
    let mut value_types = HashMap::new();
    value_types.insert(
        "t".to_string(),
        ValueType::new(
            DType::F32,
            vec![batch.clone(), Dim::Known(3), Dim::Sym("s".into())],
        ),
    );
    let mut metadata = BTreeMap::new();
    metadata.insert("author".to_string(), "kiln tests".to_string());
    Model {
        graph: Graph {
            name: "main".into(),
            nodes: vec![a, b],
            inputs: vec![
                ValueInfo {
                    name: "x".into(),
                    ty: ValueType::new(
                        DType::F32,
                        vec![batch.clone(), Dim::Known(3), Dim::Sym("x:2".into())],
                    ),
                },
                ValueInfo {
                    name: "y".into(),
                    ty: ValueType::unknown_rank(DType::I64),
                },
            ],
            outputs: vec![ValueInfo {
                name: "z".into(),
                ty: ValueType::new(DType::F16, vec![batch, Dim::Known(3)]),
            }],
            initializers,
            value_types,
        },
        opsets: vec![
            OpsetImport {
                domain: String::new(),
                version: 17,
            },
            OpsetImport {
                domain: "com.example".into(),
                version: 1,
            },
        ],
        ir_version: 9,
        producer_name: "kiln".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        metadata,
    }
}

#[test]
fn ir_to_bytes_to_ir_is_identity() {
    let m = rich_model();
    let bytes = to_bytes(&m).unwrap();
    let back = from_bytes(&bytes, None, &unchecked()).unwrap();
    assert_eq!(back, m);
    // And export is deterministic.
    assert_eq!(to_bytes(&back).unwrap(), bytes);
}

#[test]
fn export_sets_producer_and_minimum_ir_version() {
    let mut m = rich_model();
    m.ir_version = 3;
    m.producer_name = "someone else".into();
    let back = from_bytes(&to_bytes(&m).unwrap(), None, &unchecked()).unwrap();
    assert_eq!(back.ir_version, kiln_onnx::MIN_IR_VERSION);
    assert_eq!(back.producer_name, "kiln");
}

#[test]
fn save_and_load_a_file() {
    let dir = TempDir::new("save");
    let path = dir.path().join("model.onnx");
    std::fs::write(&path, b"old contents").unwrap();
    let m = rich_model();
    save(&m, &path).unwrap();
    assert_eq!(load_with(&path, &unchecked()).unwrap(), m);
    // Only the model is left: no temporary file.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("model.onnx")]);
}

#[test]
fn save_into_a_missing_folder_fails_cleanly() {
    let dir = TempDir::new("save-missing");
    let path = dir.path().join("no/such/dir/model.onnx");
    let e = save(&rich_model(), &path).unwrap_err();
    assert_eq!(e.kind(), OnnxErrorKind::Io);
    assert!(e.to_string().contains("model.onnx"), "{e}");
    assert!(!path.exists());
}

#[test]
fn load_with_default_checks_runs_inference() {
    // x + w with Add, which kiln implements.
    let w = Tensor::from_vec(vec![4], vec![1.0f32, 2.0, 3.0, 4.0]).unwrap();
    let m = Model {
        graph: Graph {
            name: "g".into(),
            nodes: vec![Node::new("add", "Add", &["x", "w"], &["y"])],
            inputs: vec![ValueInfo {
                name: "x".into(),
                ty: ValueType::new(DType::F32, vec![Dim::Sym("n".into()), Dim::Known(4)]),
            }],
            outputs: vec![ValueInfo {
                name: "y".into(),
                ty: ValueType::unknown_rank(DType::F32),
            }],
            initializers: [("w".to_string(), w)].into_iter().collect(),
            value_types: HashMap::new(),
        },
        opsets: vec![OpsetImport {
            domain: String::new(),
            version: 13,
        }],
        ir_version: 8,
        ..Default::default()
    };
    let dir = TempDir::new("infer");
    let path = dir.path().join("add.onnx");
    save(&m, &path).unwrap();
    let back = load(&path).unwrap();
    let y = ValueType::new(DType::F32, vec![Dim::Sym("n".into()), Dim::Known(4)]);
    assert_eq!(back.graph.value_types.get("y"), Some(&y));
    assert_eq!(back.graph.outputs[0].ty, y);
}

#[test]
fn test_data_tensors_round_trip_every_dtype() {
    for t in every_dtype() {
        let pb = tensor_to_pb("input_0", &t);
        let (name, back) = tensor_from_pb(&pb).unwrap();
        assert_eq!(name, "input_0");
        assert_eq!(back, t);
    }
    let (name, _) = tensor_from_pb(&tensor_to_pb("", &Tensor::scalar(1u8))).unwrap();
    assert_eq!(name, "");
}

#[test]
fn test_data_decode_errors() {
    let e = tensor_from_pb(&[0xff, 0xff, 0xff]).unwrap_err();
    assert_eq!(e.kind(), OnnxErrorKind::Decode);
    // A TensorProto with external data cannot be read without a folder.
    let mut tp = kiln_onnx::proto::TensorProto {
        dims: vec![1],
        data_type: Some(FLOAT),
        data_location: Some(kiln_onnx::proto::tensor_proto::DataLocation::External as i32),
        ..Default::default()
    };
    tp.external_data.push(kiln_onnx::proto::StringStringEntryProto {
        key: Some("location".into()),
        value: Some("w.bin".into()),
    });
    let e = tensor_from_pb(&prost::Message::encode_to_vec(&tp)).unwrap_err();
    assert_eq!(
        e.kind(),
        OnnxErrorKind::Ir(kiln_ir::ErrorKind::InvalidInput),
        "{e}"
    );
}
