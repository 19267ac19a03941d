//! The error type of ONNX import and export.

use kiln_ir::{ErrorKind, IrError};
use std::fmt;
use std::path::{Path, PathBuf};

/// What went wrong, coarsely: an I/O failure, bytes that are not a valid
/// protobuf, or a model the IR rejects (with the IR's own [`ErrorKind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OnnxErrorKind {
    /// Reading or writing a file failed (the model, its external data, a save target).
    Io,
    /// The bytes are not a valid protobuf message of the expected type.
    Decode,
    /// The message decoded, but the model is invalid or unsupported; the kind
    /// says how (`InvalidModel`, `UnsupportedOp`, `LimitExceeded`...).
    Ir(ErrorKind),
}

#[derive(Debug, thiserror::Error)]
enum Repr {
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    #[error("not a valid ONNX {what}: {source}")]
    Decode {
        what: &'static str,
        source: prost::DecodeError,
    },
    #[error(transparent)]
    Ir(IrError),
}

/// An ONNX import/export error: a kind, the model file (when known), and the
/// detail — for model errors an [`IrError`] naming node, op and attribute.
///
/// `Display` is always one line, e.g.
/// `model.onnx: node 'conv_3' (Conv), attribute 'w': GRAPH attributes are not supported`.
/// Control characters from the file (names are file-controlled) are escaped.
#[derive(Debug)]
pub struct OnnxError(Box<Inner>);

/// Boxed so that `Result<_, OnnxError>` stays one pointer wide.
#[derive(Debug)]
struct Inner {
    file: Option<PathBuf>,
    repr: Repr,
}

impl OnnxError {
    fn new(repr: Repr) -> Self {
        OnnxError(Box::new(Inner { file: None, repr }))
    }

    /// An I/O error with a short context (`"cannot read external data 'w.bin'"`).
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        OnnxError::new(Repr::Io {
            context: context.into(),
            source,
        })
    }

    /// A protobuf decode error of message `what` (`"ModelProto"`).
    pub(crate) fn decode(what: &'static str, source: prost::DecodeError) -> Self {
        OnnxError::new(Repr::Decode { what, source })
    }

    /// Attaches the model file (kept if already set).
    pub(crate) fn in_file(mut self, file: Option<&Path>) -> Self {
        if self.0.file.is_none() {
            self.0.file = file.map(Path::to_path_buf);
        }
        self
    }

    /// Applies `f` to the inner IR error, if this is a model error.
    pub(crate) fn map_ir(mut self, f: impl FnOnce(IrError) -> IrError) -> Self {
        if let Repr::Ir(e) = self.0.repr {
            self.0.repr = Repr::Ir(f(e));
        }
        self
    }

    /// The coarse kind of the error.
    pub fn kind(&self) -> OnnxErrorKind {
        match &self.0.repr {
            Repr::Io { .. } => OnnxErrorKind::Io,
            Repr::Decode { .. } => OnnxErrorKind::Decode,
            Repr::Ir(e) => OnnxErrorKind::Ir(e.kind),
        }
    }

    /// The kind mapped onto the IR's kinds: I/O errors are `InvalidInput`,
    /// decode errors `InvalidModel`.
    pub fn ir_kind(&self) -> ErrorKind {
        match self.kind() {
            OnnxErrorKind::Io => ErrorKind::InvalidInput,
            OnnxErrorKind::Decode => ErrorKind::InvalidModel,
            OnnxErrorKind::Ir(k) => k,
        }
    }

    /// The model file the error is about, when there is one.
    pub fn file(&self) -> Option<&Path> {
        self.0.file.as_deref()
    }

    /// The IR error (node, op, attribute, message) for model errors.
    pub fn ir_error(&self) -> Option<&IrError> {
        match &self.0.repr {
            Repr::Ir(e) => Some(e),
            _ => None,
        }
    }
}

impl From<IrError> for OnnxError {
    fn from(e: IrError) -> Self {
        OnnxError::new(Repr::Ir(e))
    }
}

impl From<OnnxError> for IrError {
    /// Flattens into an [`IrError`] of kind [`OnnxError::ir_kind`]; for model
    /// errors the location is kept and the file is prefixed to the message.
    fn from(e: OnnxError) -> IrError {
        let prefix = e.file().map(|f| format!("{}: ", f.display())).unwrap_or_default();
        match e.0.repr {
            Repr::Ir(mut ir) => {
                ir.message = format!("{prefix}{}", ir.message);
                ir
            }
            _ => {
                let kind = e.ir_kind();
                let mut one_line = String::new();
                let _ = write_escaped(&mut one_line, &e.to_string());
                IrError::new(kind, one_line)
            }
        }
    }
}

/// Writes `s` with line breaks and other control characters escaped, so that
/// one error is one line whatever names the file contains.
fn write_escaped(f: &mut dyn fmt::Write, s: &str) -> fmt::Result {
    for c in s.chars() {
        if c.is_control() {
            for e in c.escape_default() {
                f.write_char(e)?;
            }
        } else {
            f.write_char(c)?;
        }
    }
    Ok(())
}

impl fmt::Display for OnnxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let body = self.0.repr.to_string();
        let line = match &self.0.file {
            Some(p) => format!("{}: {body}", p.display()),
            None => body,
        };
        write_escaped(f, &line)
    }
}

impl std::error::Error for OnnxError {
    /// The underlying I/O or protobuf error (model errors have none: their
    /// whole story is in the message).
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.0.repr {
            Repr::Io { source, .. } => Some(source),
            Repr::Decode { source, .. } => Some(source),
            Repr::Ir(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_one_line_with_file_node_op_and_attribute() {
        let ir = IrError::new(ErrorKind::UnsupportedOp, "GRAPH attributes are not supported")
            .at_node("loop\n1", "Loop")
            .with_attr("body");
        let e = OnnxError::from(ir).in_file(Some(Path::new("m.onnx")));
        assert_eq!(
            e.to_string(),
            "m.onnx: node 'loop\\n1' (Loop), attribute 'body': GRAPH attributes are not supported"
        );
        assert_eq!(e.kind(), OnnxErrorKind::Ir(ErrorKind::UnsupportedOp));
        assert_eq!(e.file(), Some(Path::new("m.onnx")));
        let back: IrError = e.into();
        assert_eq!(back.node.as_deref(), Some("loop\n1"));
        assert!(back.message.starts_with("m.onnx: "));
    }

    #[test]
    fn io_and_decode_kinds_map_to_ir_kinds() {
        let e = OnnxError::io("cannot read the model", std::io::Error::other("boom"));
        assert_eq!(e.kind(), OnnxErrorKind::Io);
        assert_eq!(e.ir_kind(), ErrorKind::InvalidInput);
        assert!(std::error::Error::source(&e).is_some());
        assert_eq!(e.to_string(), "cannot read the model: boom");
        let bad = <crate::proto::ModelProto as prost::Message>::decode(&[0xffu8, 0xff][..]).unwrap_err();
        let d = OnnxError::decode("ModelProto", bad);
        assert_eq!(d.ir_kind(), ErrorKind::InvalidModel);
        let ir: IrError = d.into();
        assert_eq!(ir.kind, ErrorKind::InvalidModel);
    }
}
