//! The error type of quantization.

use kiln_ir::{ErrorKind, IrError};
use kiln_opt::OptError;
use std::fmt;

/// What went wrong, coarsely; callers branch on this, users read the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuantErrorKind {
    /// The model, or running it, failed; the IR's kind says how
    /// (`InvalidModel`, `UnsupportedOp`, `InvalidInput`...).
    Model(ErrorKind),
    /// The graph optimizer failed while preparing the model.
    Optimize,
    /// The calibration data: empty, a data source failing, or input sets that
    /// do not fit the model.
    Data,
    /// Invalid options: a percentile outside `(0, 100]`, an excluded node that
    /// does not exist, zero histogram bins, an activation type other than
    /// uint8/int8, a budget that is not a finite non-negative number.
    InvalidOptions,
    /// Calibration statistics missing for a tensor the quantized graph needs,
    /// or histograms missing for a method that needs them.
    MissingStats,
    /// The model's opset is below 13 and cannot be raised to it because an op
    /// changed meaning in between.
    Opset,
    /// The evaluation callback of [`crate::mixed_precision`] failed.
    Evaluate,
}

/// A quantization error: a kind, the node at fault (when there is one) and a
/// one-line message that names it.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantError {
    /// Coarse category.
    pub kind: QuantErrorKind,
    /// Name of the node at fault, if any.
    pub node: Option<String>,
    /// The message (already naming node and op where there is one).
    pub message: String,
}

impl QuantError {
    /// A new error without a node.
    pub fn new(kind: QuantErrorKind, message: impl Into<String>) -> QuantError {
        QuantError {
            kind,
            node: None,
            message: message.into(),
        }
    }

    /// An error located at a node: the message reads `node 'NAME' (OP): MESSAGE`.
    pub fn at_node(kind: QuantErrorKind, node: &str, op: &str, message: impl fmt::Display) -> QuantError {
        QuantError {
            kind,
            node: Some(node.to_string()),
            message: format!("node '{node}' ({op}): {message}"),
        }
    }
}

impl fmt::Display for QuantError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for QuantError {}

impl From<IrError> for QuantError {
    fn from(e: IrError) -> QuantError {
        QuantError {
            kind: QuantErrorKind::Model(e.kind),
            node: e.node.clone(),
            message: e.to_string(),
        }
    }
}

impl From<OptError> for QuantError {
    fn from(e: OptError) -> QuantError {
        QuantError {
            kind: QuantErrorKind::Optimize,
            node: e.error.node.clone(),
            message: e.to_string(),
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = QuantError> = std::result::Result<T, E>;

/// `Err(QuantError::new(kind, format!(...)))`.
macro_rules! qbail {
    ($kind:ident, $($arg:tt)*) => {
        return Err($crate::QuantError::new($crate::QuantErrorKind::$kind, format!($($arg)*)))
    };
}
pub(crate) use qbail;
