//! Static shapes with symbolic dimensions.

use crate::DType;
use std::collections::HashMap;
use std::fmt;

/// One dimension of a static shape: a known size, or a named symbol
/// (`batch`, `height`, `unk__3`...) bound to a size at run time.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Dim {
    /// A size known when the graph is built.
    Known(usize),
    /// A size known only at run time. Two dims with the same symbol are equal.
    Sym(String),
}

impl Dim {
    /// The size, if known.
    pub fn known(&self) -> Option<usize> {
        match self {
            Dim::Known(n) => Some(*n),
            Dim::Sym(_) => None,
        }
    }
    /// The size under `bindings` (symbol -> size), if determinable.
    pub fn resolve(&self, bindings: &HashMap<String, usize>) -> Option<usize> {
        match self {
            Dim::Known(n) => Some(*n),
            Dim::Sym(s) => bindings.get(s).copied(),
        }
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Known(n) => write!(f, "{n}"),
            Dim::Sym(s) => f.write_str(s),
        }
    }
}

impl From<usize> for Dim {
    fn from(n: usize) -> Dim {
        Dim::Known(n)
    }
}

/// A static shape: `None` is unknown rank.
pub type Shape = Option<Vec<Dim>>;

/// Renders a shape as `[1, 3, height, width]` (or `[?]` for unknown rank).
pub fn shape_to_string(s: &Shape) -> String {
    match s {
        None => "[?]".to_string(),
        Some(d) => format!(
            "[{}]",
            d.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// Static type of a value: element type and (possibly symbolic) shape.
#[derive(Debug, Clone, PartialEq)]
pub struct ValueType {
    /// Element type.
    pub dtype: DType,
    /// Static shape; `None` when the rank is unknown.
    pub shape: Shape,
}

impl ValueType {
    /// A fully known type.
    pub fn known(dtype: DType, dims: &[usize]) -> ValueType {
        ValueType {
            dtype,
            shape: Some(dims.iter().map(|&d| Dim::Known(d)).collect()),
        }
    }
    /// A type of unknown rank.
    pub fn unknown_rank(dtype: DType) -> ValueType {
        ValueType { dtype, shape: None }
    }
    /// A type with the given dims.
    pub fn new(dtype: DType, dims: Vec<Dim>) -> ValueType {
        ValueType {
            dtype,
            shape: Some(dims),
        }
    }
    /// Rank, if known.
    pub fn rank(&self) -> Option<usize> {
        self.shape.as_ref().map(|s| s.len())
    }
    /// All dims as sizes, if every one is known.
    pub fn known_dims(&self) -> Option<Vec<usize>> {
        self.shape.as_ref()?.iter().map(|d| d.known()).collect()
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.dtype, shape_to_string(&self.shape))
    }
}
