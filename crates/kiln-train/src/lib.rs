//! Training-based compression for kiln: fine-tuning of any fp32 kiln IR graph.
//!
//! The autodiff is burn's (`burn-autodiff` over the pure-Rust `burn-flex` CPU
//! backend; the choice and its measurements are in `docs/train.md`). kiln's
//! part is the translation of an IR graph into a trainable computation and
//! back ([`graph`]), the data pipeline ([`data`]), the optimizer and learning
//! rate schedule ([`optim`]) and the training loop with checkpoints, resume
//! and a JSON metrics log ([`mod@fit`]).
//!
//! Dependencies: this crate sits above the `kiln` facade (it reads datasets
//! with `kiln::data` and evaluates every exported epoch on kiln's compiled
//! runtime), and only the `kiln` binary depends on it, so neither the runtime
//! nor the facade ever compiles burn.

pub mod data;
pub mod fit;
pub mod graph;
pub mod optim;
pub mod qat;

pub use fit::{
    fit, fit_ext, fit_with, teacher_with_features, Distill, Extras, FeatureHint, FitConfig, FitEvent,
    FitReport, Pruning,
};
pub use graph::TrainGraph;

use std::fmt;
use std::path::{Path, PathBuf};

/// What went wrong, for callers that branch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// An op, attribute or value the trainer does not handle.
    Unsupported,
    /// The model is malformed (missing initializer, no output, ...).
    Model,
    /// Shapes that do not fit at run time.
    Shape,
    /// Reading or writing a file failed.
    Io,
    /// The dataset is unusable (no labels, too large, wrong shape).
    Data,
    /// A checkpoint is corrupt or belongs to a different model or config.
    Checkpoint,
    /// Invalid settings (batch size 0, unknown augmentation, ...).
    Config,
}

/// An error of `kiln-train`: a kind, the file involved if any, and a one-line
/// message that names model, node, op and attribute where there is one.
#[derive(Debug, Clone)]
pub struct Error {
    /// Category.
    pub kind: ErrorKind,
    /// The file at fault, if any.
    pub file: Option<PathBuf>,
    /// Detail.
    pub message: String,
}

impl Error {
    /// A new error without a file.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            file: None,
            message: message.into(),
        }
    }
    /// Attaches the file at fault (kept if already set).
    pub fn with_file(mut self, path: &Path) -> Error {
        if self.file.is_none() {
            self.file = Some(path.to_path_buf());
        }
        self
    }
    /// An I/O error on `path`.
    pub fn io(path: &Path, e: std::io::Error) -> Error {
        Error::new(ErrorKind::Io, e.to_string()).with_file(path)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            Some(p) => write!(f, "{}: {}", p.display(), self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for Error {}

impl From<kiln::Error> for Error {
    fn from(e: kiln::Error) -> Error {
        let kind = match e.kind {
            kiln::ErrorKind::Io => ErrorKind::Io,
            kiln::ErrorKind::Decode => ErrorKind::Data,
            kiln::ErrorKind::Model(_) => ErrorKind::Model,
        };
        Error {
            kind,
            file: e.file,
            message: e.message,
        }
    }
}
