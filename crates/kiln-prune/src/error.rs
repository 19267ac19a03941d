//! The error type of channel pruning.

use kiln_ir::IrError;

/// What went wrong, coarsely; callers branch on this, users read the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The [`crate::ChannelPruneConfig`] is invalid: a ratio outside `[0, 1)`,
    /// a `round_to` of 0, an `exclude` entry naming no node and no op type.
    InvalidConfig,
    /// The model is invalid (structure or shape inference failed); the IR's
    /// kind says how.
    Model(kiln_ir::ErrorKind),
    /// The pruned model failed validation or shape inference: a bug in
    /// kiln-prune (the analysis must mark what it cannot rewrite as not
    /// prunable).
    Internal,
}

/// A pruning error. Every variant names the model (its graph name, or
/// `<unnamed>`); model and internal errors also name the node and op at fault
/// when there is one.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// An invalid configuration ([`ErrorKind::InvalidConfig`]).
    #[error("model '{model}': invalid pruning config: {param}: {message}")]
    Config {
        /// The model's graph name.
        model: String,
        /// The field at fault: `ratio`, `round_to`, `exclude`, `block` or `sparsity`.
        param: &'static str,
        /// What is wrong and what is accepted.
        message: String,
    },
    /// The input model is invalid ([`ErrorKind::Model`]); the IR error names
    /// the node, op and attribute.
    #[error("model '{model}': {source}")]
    Model {
        /// The model's graph name.
        model: String,
        /// The IR's error (boxed: keeps `Result`s small).
        #[source]
        source: Box<IrError>,
    },
    /// The rewrite produced an invalid model ([`ErrorKind::Internal`]).
    #[error("model '{model}': internal error: pruned model is invalid: {source}")]
    Internal {
        /// The model's graph name.
        model: String,
        /// The IR's error on the pruned model (naming node and op).
        #[source]
        source: Box<IrError>,
    },
}

impl Error {
    /// The error's [`ErrorKind`].
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Config { .. } => ErrorKind::InvalidConfig,
            Error::Model { source, .. } => ErrorKind::Model(source.kind),
            Error::Internal { .. } => ErrorKind::Internal,
        }
    }

    /// The node at fault, if the error names one.
    pub fn node(&self) -> Option<&str> {
        match self {
            Error::Config { .. } => None,
            Error::Model { source, .. } | Error::Internal { source, .. } => source.node.as_deref(),
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The graph name used in errors.
pub(crate) fn model_name(m: &kiln_ir::Model) -> String {
    if m.graph.name.is_empty() {
        "<unnamed>".into()
    } else {
        m.graph.name.clone()
    }
}
