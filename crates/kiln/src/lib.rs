//! # kiln
//!
//! The stable library API of kiln: load a model ([`load_model`]), run it
//! ([`Session`]), read and write tensors ([`npy`]), preprocess images
//! ([`preprocess`]), and post-process classifier outputs ([`classify`]).
//!
//! Optimize a graph with [`opt::optimize`] (folding, cleanup, fusion).
//!
//! The lower crates are re-exported for advanced use: [`ir`], [`onnx`], [`opt`], [`runtime`].
#![warn(missing_docs)]

pub mod classify;
pub mod npy;
pub mod preprocess;
pub mod shapes;
pub mod stats;

pub use kiln_ir as ir;
pub use kiln_onnx as onnx;
pub use kiln_opt as opt;
pub use kiln_runtime as runtime;
pub use kiln_runtime::Session;

use std::fmt;
use std::path::{Path, PathBuf};

/// Coarse category of a facade error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A file could not be read or written.
    Io,
    /// A file is not in the expected format (image, .npy, labels).
    Decode,
    /// The model (or an input to it) is at fault; the IR kind says how.
    Model(kiln_ir::ErrorKind),
}

/// An error of the kiln facade: a kind, the file involved (if any), and a
/// one-line message that names node, op and attribute where there is one.
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

impl From<kiln_opt::OptError> for Error {
    fn from(e: kiln_opt::OptError) -> Error {
        Error::new(ErrorKind::Model(e.error.kind), e.to_string())
    }
}

impl From<kiln_ir::IrError> for Error {
    fn from(e: kiln_ir::IrError) -> Error {
        Error::new(ErrorKind::Model(e.kind), e.to_string())
    }
}

/// Writes `bytes` to `path` atomically: a temp file in the same folder, then
/// a rename, so a failure never leaves a half-written file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// Loads an ONNX model file into the IR (validated, ops checked, types inferred).
///
/// Errors name the file and, where there is one, the node, op and attribute.
pub fn load_model(path: &Path) -> Result<ir::Model, Error> {
    kiln_onnx::load(path).map_err(|e| Error::from_onnx(path, e))
}

impl Error {
    fn from_onnx(path: &Path, e: kiln_onnx::OnnxError) -> Error {
        let msg = e.to_string();
        let p = path.display().to_string();
        // OnnxError already names the file; avoid saying it twice.
        let msg = msg
            .strip_prefix(&format!("{p}: "))
            .map(str::to_string)
            .unwrap_or(msg);
        Error::new(ErrorKind::Model(e.ir_kind()), msg).with_file(path)
    }
}

/// Loads and prepares a model for execution.
pub fn open_session(path: &Path) -> Result<Session, Error> {
    let m = load_model(path)?;
    Session::new(m).map_err(|e| Error::from(e).with_file(path))
}
pub mod conformance;
