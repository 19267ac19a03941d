//! # kiln
//!
//! The stable library API of kiln: load a model ([`load_model`]), run it
//! ([`Session`]), read and write tensors ([`npy`]), preprocess images
//! ([`preprocess`]), and post-process classifier outputs ([`classify`]).
//! Datasets (image folders, IDX, `.npy`, `.npz`) are read by [`data`] and
//! classifiers measured over them by [`eval`].
//!
//! Optimize a graph with [`opt::optimize`] (folding, cleanup, fusion).
//! Quantize it to int8 with [`quant`] (kiln-quant), calibrated on a
//! [`data::Dataset`] through [`quantize::DatasetCalibration`]; mixed
//! precision measures accuracy with [`quantize::top1_percent`].
//!
//! The lower crates are re-exported for advanced use: [`ir`], [`onnx`], [`opt`], [`quant`], [`runtime`].
#![warn(missing_docs)]

pub mod classify;
pub mod data;
pub mod eval;
pub mod npy;
pub mod preprocess;
pub mod quantize;
pub mod shapes;
pub mod stats;

pub use kiln_ir as ir;
pub use kiln_onnx as onnx;
pub use kiln_opt as opt;
pub use kiln_quant as quant;
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
    // Unique per process and per call, so concurrent writers never share a temp file.
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let k = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.tmp{}.{k}", std::process::id()));
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

/// Loads, optimizes ([`kiln_opt::optimize`] at the default level: constant
/// folding, BatchNormalization folding, Conv/Gemm + activation + residual
/// fusion) and compiles a model for the fast runtime
/// ([`runtime::CompiledModel`]). Quantized (QDQ) models have their QDQ
/// patterns lowered to kiln's integer ops first ([`runtime::lower_qdq`]),
/// which run on the int8 kernels.
///
/// Errors: the file's load errors, then optimizer and compile errors, all
/// naming the file.
///
/// ```no_run
/// use kiln::runtime::{CompileOptions, TensorRef};
/// use std::path::Path;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let path = Path::new(".fixtures/models/efficientnet-lite0.onnx");
/// let opts = CompileOptions { input_shapes: Some(vec![vec![1, 3, 224, 224]]), ..Default::default() };
/// let cm = kiln::compile(path, &opts)?;
/// let image = vec![0f32; 3 * 224 * 224]; // NCHW input, e.g. kiln::preprocess::load_image
/// let mut state = cm.new_state(2); // per thread; reused across runs
/// let mut logits = vec![0f32; 1000];
/// cm.run_into(&mut state, &[TensorRef { shape: &[1, 3, 224, 224], data: &image }], &mut [&mut logits])?;
/// # Ok(())
/// # }
/// ```
pub fn compile(path: &Path, opts: &runtime::CompileOptions) -> Result<runtime::CompiledModel, Error> {
    let m = load_model(path)?;
    compile_model(m, opts).map_err(|e| e.with_file(path))
}

/// Optimizes and compiles a loaded model, as [`compile`] does after loading.
pub fn compile_model(
    mut m: ir::Model,
    opts: &runtime::CompileOptions,
) -> Result<runtime::CompiledModel, Error> {
    // QDQ patterns first become kiln's integer ops (the optimizer would fold
    // the weights' DequantizeLinear into float weights and fuse across the
    // Q/DQ boundaries, leaving float convolutions).
    m.graph.validate()?;
    runtime::lower_qdq(&mut m)?;
    kiln_opt::optimize(&mut m, &kiln_opt::Options::default())?;
    Ok(runtime::CompiledModel::compile(m, opts)?)
}

/// Loads and prepares a model for execution.
pub fn open_session(path: &Path) -> Result<Session, Error> {
    let m = load_model(path)?;
    Session::new(m).map_err(|e| Error::from(e).with_file(path))
}

/// The [`kiln_onnx::LoadOptions`] of [`check_untrusted_model`]: the default
/// checks (ops supported, types inferred) with resource limits sized for
/// untrusted input and fuzzing. At most 16 MiB of model bytes, 64 MiB of
/// decoded tensor data (per tensor and in all), 16 Mi elements per tensor or
/// known shape, and 10,000 nodes; the other limits are the defaults.
pub fn untrusted_load_options() -> onnx::LoadOptions {
    onnx::LoadOptions {
        max_model_bytes: 16 << 20,
        max_tensor_bytes: 64 << 20,
        max_total_tensor_bytes: 64 << 20,
        max_tensor_elements: 1 << 24,
        max_nodes: 10_000,
        check_ops: true,
        ..onnx::LoadOptions::default()
    }
}

/// The untrusted-input path: imports a serialized ONNX model and prepares its
/// execution plan, without running it.
///
/// `bytes` go through [`onnx::from_bytes`] (no external data: a model that
/// refers to external files is an error) with the tight limits of
/// [`untrusted_load_options`], which decodes, validates the graph (names,
/// dangling inputs, cycles; sorted topologically), checks every op is
/// supported and infers types, folding small constants. The model is then
/// prepared by [`Session::new`] (ops resolved, liveness planned). Nothing is
/// executed beyond that constant folding.
///
/// This is the body of the `onnx_import` fuzz target (`fuzz/` at the
/// repository root), and the corpus replay test runs it on every committed
/// input. It never panics, never hangs and allocates within the limits
/// above for any `bytes`: any fault of the input is an `Err` of kind
/// [`ErrorKind::Model`] whose message names node, op and attribute where
/// there is one. `Ok(())` means the model would load and could be run.
pub fn check_untrusted_model(bytes: &[u8]) -> Result<(), Error> {
    let model = onnx::from_bytes(bytes, None, &untrusted_load_options())
        .map_err(|e| Error::new(ErrorKind::Model(e.ir_kind()), e.to_string()))?;
    Session::new(model)?;
    Ok(())
}
pub mod conformance;
