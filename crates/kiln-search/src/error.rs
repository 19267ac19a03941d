//! The error type of kiln-search.

/// What went wrong, coarsely; callers branch on this, users read the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// A file could not be read or written.
    Io,
    /// A device profile or calibration file is malformed or has a value out
    /// of range (the message names the file and the field).
    InvalidProfile,
    /// A request does not fit the data: no calibration for a thread count,
    /// more threads than the device has cores, an empty calibration set.
    InvalidRequest,
    /// The runtime refused or failed to run the model.
    Runtime(kiln_ir::ErrorKind),
}

/// An error of kiln-search; the message names the file, field, model or
/// step at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    /// Coarse kind.
    pub kind: ErrorKind,
    /// What is wrong, naming the file / field / model at fault.
    pub message: String,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
        }
    }
}

impl From<kiln_ir::IrError> for Error {
    fn from(e: kiln_ir::IrError) -> Error {
        Error::new(ErrorKind::Runtime(e.kind), e.to_string())
    }
}
