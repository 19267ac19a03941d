//! ONNX import and export for the kiln IR.
