//! Builders of small ONNX models with the generated prost types, and a
//! self-cleaning temporary folder.
#![allow(dead_code)]

use kiln_onnx::proto::tensor_proto::DataType;
use kiln_onnx::proto::tensor_shape_proto::{dimension, Dimension};
use kiln_onnx::proto::{
    type_proto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorShapeProto, TypeProto,
    ValueInfoProto,
};
use kiln_onnx::LoadOptions;
use prost::Message;
use std::path::{Path, PathBuf};

/// One declared dim.
#[derive(Clone, Copy)]
pub enum D {
    /// `dim_value`
    V(i64),
    /// `dim_param`
    P(&'static str),
    /// A dimension with neither field.
    Missing,
}

pub const FLOAT: i32 = DataType::Float as i32;
pub const INT64: i32 = DataType::Int64 as i32;

pub fn vi(name: &str, elem: i32, dims: &[D]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            denotation: None,
            value: match d {
                D::V(v) => Some(dimension::Value::DimValue(*v)),
                D::P(p) => Some(dimension::Value::DimParam(p.to_string())),
                D::Missing => None,
            },
        })
        .collect();
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            denotation: None,
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(elem),
                shape: Some(TensorShapeProto { dim }),
            })),
        }),
        ..Default::default()
    }
}

pub fn node(name: &str, op: &str, ins: &[&str], outs: &[&str]) -> NodeProto {
    NodeProto {
        name: Some(name.into()),
        op_type: Some(op.into()),
        input: ins.iter().map(|s| s.to_string()).collect(),
        output: outs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

pub fn model(graph: GraphProto) -> ModelProto {
    ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(13),
        }],
        producer_name: Some("test".into()),
        graph: Some(graph),
        ..Default::default()
    }
}

/// x:[1,4] -> Op -> y, one node of type `op`.
pub fn one_node(op: &str) -> ModelProto {
    model(GraphProto {
        name: Some("g".into()),
        node: vec![node("n0", op, &["x"], &["y"])],
        input: vec![vi("x", FLOAT, &[D::V(1), D::V(4)])],
        output: vec![vi("y", FLOAT, &[D::V(1), D::V(4)])],
        ..Default::default()
    })
}

pub fn bytes(m: &ModelProto) -> Vec<u8> {
    m.encode_to_vec()
}

/// Options that stop after the structural check (no op support check, no inference).
pub fn unchecked() -> LoadOptions {
    LoadOptions {
        check_ops: false,
        ..Default::default()
    }
}

/// A temporary folder, removed with its contents on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "kiln-onnx-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
