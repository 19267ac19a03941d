//! kiln [`Model`] -> ONNX `ModelProto`, written from the IR alone.
//!
//! kiln's own `"kiln"`-domain ops (fused Conv/Gemm/MatMul) are lowered to
//! standard ONNX first ([`kiln_ir::ops::fused::lower_fused`]), so every file
//! written is plain default-domain ONNX.

use crate::error::OnnxError;
use crate::proto::attribute_proto::AttributeType;
use crate::proto::tensor_shape_proto::{dimension, Dimension};
use crate::proto::type_proto;
use crate::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};
use crate::tensor::{dtype_to_onnx, tensor_to_proto};
use kiln_ir::ops::fused;
use kiln_ir::{ir_err, Attribute, Dim, Graph, IrError, Model, Node, ValueType};
use prost::Message;
use std::collections::HashSet;
use std::path::Path;

/// Oldest ONNX IR version kiln writes.
pub const MIN_IR_VERSION: i64 = 7;

/// Protobuf's hard limit on one message (2 GiB - 1).
const MAX_PROTO_BYTES: usize = i32::MAX as usize;

fn type_proto(ty: &ValueType, name: &str) -> Result<TypeProto, IrError> {
    let shape = match &ty.shape {
        None => None,
        Some(dims) => {
            let dim = dims
                .iter()
                .map(|d| {
                    let value = match d {
                        Dim::Known(n) => dimension::Value::DimValue(i64::try_from(*n).map_err(|_| {
                            ir_err!(
                                LimitExceeded,
                                "value '{name}' has dim {n}, which ONNX cannot store"
                            )
                        })?),
                        Dim::Sym(s) => dimension::Value::DimParam(s.clone()),
                    };
                    Ok(Dimension {
                        denotation: None,
                        value: Some(value),
                    })
                })
                .collect::<Result<Vec<_>, IrError>>()?;
            Some(TensorShapeProto { dim })
        }
    };
    Ok(TypeProto {
        denotation: None,
        value: Some(type_proto::Value::TensorType(type_proto::Tensor {
            elem_type: Some(dtype_to_onnx(ty.dtype)),
            shape,
        })),
    })
}

fn value_info(name: &str, ty: &ValueType) -> Result<ValueInfoProto, IrError> {
    Ok(ValueInfoProto {
        name: Some(name.to_string()),
        r#type: Some(type_proto(ty, name)?),
        ..Default::default()
    })
}

fn attr_proto(name: &str, a: &Attribute) -> AttributeProto {
    let mut p = AttributeProto {
        name: Some(name.to_string()),
        ..Default::default()
    };
    let ty = match a {
        Attribute::Float(v) => {
            p.f = Some(*v);
            AttributeType::Float
        }
        Attribute::Int(v) => {
            p.i = Some(*v);
            AttributeType::Int
        }
        Attribute::String(v) => {
            p.s = Some(v.clone());
            AttributeType::String
        }
        Attribute::Tensor(t) => {
            p.t = Some(tensor_to_proto("", t));
            AttributeType::Tensor
        }
        Attribute::Floats(v) => {
            p.floats = v.clone();
            AttributeType::Floats
        }
        Attribute::Ints(v) => {
            p.ints = v.clone();
            AttributeType::Ints
        }
        Attribute::Strings(v) => {
            p.strings = v.clone();
            AttributeType::Strings
        }
    };
    p.r#type = Some(ty as i32);
    p
}

fn node_proto(n: &Node) -> NodeProto {
    NodeProto {
        input: n.inputs.clone(),
        output: n.outputs.clone(),
        name: Some(n.name.clone()),
        op_type: Some(n.op_type.clone()),
        domain: Some(n.domain.clone()),
        attribute: n.attrs.iter().map(|(k, a)| attr_proto(k, a)).collect(),
        ..Default::default()
    }
}

fn graph_proto(g: &Graph) -> Result<GraphProto, IrError> {
    let input = g
        .inputs
        .iter()
        .map(|v| value_info(&v.name, &v.ty))
        .collect::<Result<_, _>>()?;
    let output = g
        .outputs
        .iter()
        .map(|v| value_info(&v.name, &v.ty))
        .collect::<Result<_, _>>()?;
    let listed: HashSet<&str> = g
        .inputs
        .iter()
        .chain(&g.outputs)
        .map(|v| v.name.as_str())
        .chain(g.initializers.keys().map(String::as_str))
        .collect();
    let mut inner: Vec<(&String, &ValueType)> = g
        .value_types
        .iter()
        .filter(|(k, _)| !listed.contains(k.as_str()))
        .collect();
    inner.sort_by(|a, b| a.0.cmp(b.0));
    let value_info = inner
        .into_iter()
        .map(|(k, t)| value_info(k, t))
        .collect::<Result<_, _>>()?;
    Ok(GraphProto {
        node: g.nodes.iter().map(node_proto).collect(),
        name: Some(g.name.clone()),
        initializer: g
            .initializers
            .iter()
            .map(|(k, t)| tensor_to_proto(k, t))
            .collect(),
        input,
        output,
        value_info,
        ..Default::default()
    })
}

/// The `ModelProto` of `model`, after lowering its `"kiln"`-domain ops.
pub(crate) fn model_proto(model: &Model) -> Result<ModelProto, IrError> {
    let lowered;
    let model = if fused::has_kiln_ops(model) {
        lowered = fused::lower_fused(model)?;
        &lowered
    } else {
        model
    };
    Ok(ModelProto {
        ir_version: Some(model.ir_version.max(MIN_IR_VERSION)),
        opset_import: model
            .opsets
            .iter()
            .map(|o| OperatorSetIdProto {
                domain: Some(o.domain.clone()),
                version: Some(o.version),
            })
            .collect(),
        producer_name: Some("kiln".to_string()),
        producer_version: Some(env!("CARGO_PKG_VERSION").to_string()),
        graph: Some(graph_proto(&model.graph)?),
        metadata_props: model
            .metadata
            .iter()
            .map(|(k, v)| StringStringEntryProto {
                key: Some(k.clone()),
                value: Some(v.clone()),
            })
            .collect(),
        ..Default::default()
    })
}

/// Serializes `model` (see [`crate::to_bytes`]).
pub(crate) fn to_bytes(model: &Model) -> Result<Vec<u8>, OnnxError> {
    let mp = model_proto(model)?;
    let len = mp.encoded_len();
    if len > MAX_PROTO_BYTES {
        return Err(ir_err!(
            LimitExceeded,
            "the serialized model would be {len} bytes, over protobuf's 2 GiB limit"
        )
        .into());
    }
    Ok(mp.encode_to_vec())
}

/// Writes `bytes` to `path` atomically: a temporary file in the same folder,
/// flushed to disk, then renamed over `path`. On failure the temporary file
/// is removed and `path` is left as it was.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), OnnxError> {
    use std::io::Write;
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| ir_err!(InvalidInput, "'{}' is not a file path", path.display()))?;
    let (tmp, mut f) = loop {
        let k = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = dir.join(format!(
            ".{}.{}.{k}.tmp",
            file_name.to_string_lossy(),
            std::process::id()
        ));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
        {
            Ok(f) => break (tmp, f),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(OnnxError::io(
                    "cannot create a temporary file to save the model",
                    e,
                ))
            }
        }
    };
    let written = f.write_all(bytes).and_then(|_| f.sync_all()).and_then(|_| {
        drop(f);
        std::fs::rename(&tmp, path)
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(OnnxError::io("cannot save the model", e));
    }
    Ok(())
}
