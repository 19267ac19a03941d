//! Node attributes (ONNX `AttributeProto`, minus subgraphs).

use crate::Tensor;

/// The value of a node attribute.
#[derive(Debug, Clone, PartialEq)]
pub enum Attribute {
    /// `FLOAT`
    Float(f32),
    /// `INT`
    Int(i64),
    /// `STRING` (bytes; ONNX strings are usually UTF-8).
    String(Vec<u8>),
    /// `TENSOR`
    Tensor(Tensor),
    /// `FLOATS`
    Floats(Vec<f32>),
    /// `INTS`
    Ints(Vec<i64>),
    /// `STRINGS`
    Strings(Vec<Vec<u8>>),
}

impl Attribute {
    /// ONNX name of the attribute's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Attribute::Float(_) => "FLOAT",
            Attribute::Int(_) => "INT",
            Attribute::String(_) => "STRING",
            Attribute::Tensor(_) => "TENSOR",
            Attribute::Floats(_) => "FLOATS",
            Attribute::Ints(_) => "INTS",
            Attribute::Strings(_) => "STRINGS",
        }
    }
}
