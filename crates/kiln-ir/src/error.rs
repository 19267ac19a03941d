//! Typed errors of the IR: every error carries a [`ErrorKind`] and, where one
//! applies, the node, op and attribute at fault.

use std::fmt;

/// What went wrong, coarsely; callers branch on this, users read the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The model is structurally invalid (dangling input, cycle, duplicate output name...).
    InvalidModel,
    /// An op (or an op at this opset) that kiln does not implement.
    UnsupportedOp,
    /// An attribute is missing, of the wrong type, or out of range.
    InvalidAttribute,
    /// Shapes that do not agree (broadcasting, matmul inner dims, reshape sizes...).
    ShapeMismatch,
    /// Element types that do not agree or that an op does not accept.
    TypeMismatch,
    /// A user-supplied input (tensor, file) that does not fit the model.
    InvalidInput,
    /// A resource limit (tensor bytes, element count, depth) was exceeded.
    LimitExceeded,
    /// A bug in kiln: an invariant did not hold.
    Internal,
}

/// An IR error: a kind, a message, and where in the graph it happened.
///
/// `Display` renders one line, e.g.
/// `node 'conv_3' (Conv), attribute 'pads': expected 4 values, got 3`.
#[derive(Debug, Clone, PartialEq)]
pub struct IrError {
    /// Coarse category.
    pub kind: ErrorKind,
    /// Name of the node at fault, if any.
    pub node: Option<String>,
    /// Op type of the node at fault, if any.
    pub op: Option<String>,
    /// Attribute at fault, if any.
    pub attr: Option<String>,
    /// Human-readable detail.
    pub message: String,
}

impl IrError {
    /// A new error with no location.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        IrError {
            kind,
            node: None,
            op: None,
            attr: None,
            message: message.into(),
        }
    }
    /// Attach the node name and op type (kept if already set).
    pub fn at_node(mut self, node: &str, op: &str) -> Self {
        if self.node.is_none() {
            self.node = Some(node.to_string());
        }
        if self.op.is_none() {
            self.op = Some(op.to_string());
        }
        self
    }
    /// Attach the attribute name.
    pub fn with_attr(mut self, attr: &str) -> Self {
        self.attr = Some(attr.to_string());
        self
    }
}

impl fmt::Display for IrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut wrote = false;
        if let Some(n) = &self.node {
            write!(f, "node '{n}'")?;
            wrote = true;
        }
        if let Some(o) = &self.op {
            if wrote {
                write!(f, " ({o})")?;
            } else {
                write!(f, "op {o}")?;
            }
            wrote = true;
        }
        if let Some(a) = &self.attr {
            write!(f, "{}attribute '{a}'", if wrote { ", " } else { "" })?;
            wrote = true;
        }
        if wrote {
            write!(f, ": ")?;
        }
        write!(f, "{}", self.message)
    }
}

impl std::error::Error for IrError {}

/// Result alias of the IR.
pub type Result<T, E = IrError> = std::result::Result<T, E>;

/// Shorthand: `Err(IrError::new(kind, msg))`.
#[macro_export]
macro_rules! bail {
    ($kind:ident, $($arg:tt)*) => {
        return Err($crate::IrError::new($crate::ErrorKind::$kind, format!($($arg)*)))
    };
}

/// Shorthand for building an [`IrError`] with a formatted message.
#[macro_export]
macro_rules! ir_err {
    ($kind:ident, $($arg:tt)*) => {
        $crate::IrError::new($crate::ErrorKind::$kind, format!($($arg)*))
    };
}
