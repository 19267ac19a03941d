//! # kiln-ir
//!
//! kiln's intermediate representation: element types ([`DType`]), dense
//! tensors ([`Tensor`]), static types with symbolic dims ([`ValueType`],
//! [`Dim`]), graphs ([`Graph`], [`Node`], [`Model`]), whole-graph checks and
//! shape inference ([`infer`]), and in [`ops`] the reference evaluation of every
//! supported ONNX op: the oracle that every fast path is tested against.
#![warn(missing_docs)]

pub mod attr;
pub mod dtype;
pub mod error;
pub mod graph;
pub mod infer;
pub mod ops;
pub mod quant;
pub mod shape;
pub mod tensor;

pub use attr::Attribute;
pub use dtype::DType;
pub use error::{ErrorKind, IrError, Result};
pub use graph::{Graph, Model, Node, OpsetImport, ValueInfo};
pub use half::f16;
pub use quant::QParams;
pub use shape::{Dim, Shape, ValueType};
pub use tensor::{numel, strides, Elem, Tensor, TensorData};
