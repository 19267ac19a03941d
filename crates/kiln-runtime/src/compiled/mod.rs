//! The compiled runtime: a model lowered once to an execution plan of
//! [`kiln_kernels`] calls over one statically planned arena.
//!
//! # What compiling does
//! For each set of concrete input shapes (models with symbolic dims, such as
//! the OCR detectors, get one plan per shape, cached), [`CompiledModel`]:
//! 1. infers every value's shape and folds the constant sub-graphs;
//! 2. lowers each node to a kernel: `Conv`/`FusedConv` to depthwise,
//!    pointwise-GEMM or im2col-GEMM kernels with bias, residual and
//!    activation fused; `Gemm`/`MatMul` with constant weights to the packed
//!    GEMM; element-wise ops, channel broadcasts, activations, pooling and
//!    `Softmax` to their kernels; `Reshape`/`Flatten`/`Squeeze`/`Unsqueeze`/
//!    `Identity` to nothing at all (an alias of their input's buffer). Other
//!    nodes run their reference eval from [`kiln_ir::ops`] ("fallback");
//! 3. chooses a layout per value (below), inserting transposes only where a
//!    region changes layout;
//! 4. packs the weights once (per node, shared by every plan), decides which
//!    outputs may overwrite a dying input (in place), and gives every
//!    intermediate an offset in one arena ([`memory`]).
//!
//! # Layout
//! Convolution regions run NHWC: there a 1x1 convolution is a GEMM on the
//! activation as it lies, and depthwise kernels vectorize across channels.
//! Ops that do not care (element-wise, activations) take their input's
//! layout; the reference fallback, reshapes and graph inputs/outputs are
//! NCHW; a value of shape `[n, c, 1, 1]` or `[n, 1, h, w]` is both. A
//! transpose is inserted where a consumer needs the other layout, once per
//! value. NCHW kernels for convolutions were measured against (the reference
//! executor's im2col GEMM: 3-5x slower on EfficientNet-Lite0) and lose
//! everywhere, so the choice per region reduces to: NHWC for every region
//! with a convolution, NCHW elsewhere. Blocked layouts (NCHW16c) are not
//! implemented.
//!
//! # Running
//! A [`CompiledModel`] is immutable, `Send + Sync`: many threads can share it,
//! each with its own [`RunState`] (arena, per-thread scratch, thread pool).
//! [`CompiledModel::run_into`] reads the caller's input slices in place and
//! writes the outputs straight into the caller's slices; after the first run
//! with a given shape it allocates nothing unless the plan has fallback
//! nodes (which build tensors). Each output element is computed by one
//! thread in one fixed order, so results are bit-identical for any thread
//! count.

pub mod memory;
mod pool;
mod q8;

pub use pool::ThreadPool;

use crate::RuntimeError;
use kiln_ir::infer::infer_types;
use kiln_ir::ops::conv::conv2d_shape;
use kiln_ir::ops::fused::Activation as FusedAct;
use kiln_ir::ops::pool::pool2d_shape;
use kiln_ir::ops::{self, OpCtx};
use kiln_ir::{ir_err, DType, ErrorKind, Model, Node, Tensor, ValueType};
use kiln_kernels::conv::{conv_f32_raw, pack_conv_weights, ConvArgs, ConvGeom};
use kiln_kernels::dwconv::{dwconv_f32_raw, DwArgs, DwGeom, PackedDw};
use kiln_kernels::eltwise::{activation_f32, affine_f32, binary_f32, channel_f32, scalar_f32, BinOp};
use kiln_kernels::gemm::{gemm_f32_raw, tile_rows, GemmArgs, PackedB};
use kiln_kernels::pool::{global_avg_pool_f32, pool2d_f32, PoolGeom};
use kiln_kernels::spmm::{block_sparsity, spmm_f32_raw, spmm_name, spmm_tile_rows, SparseB};
use kiln_kernels::{split_range, Activation, Isa};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How to compile a model.
#[derive(Debug, Clone, Default)]
pub struct CompileOptions {
    /// Cap on the kernels' ISA level (`None`: [`kiln_kernels::active_isa`]).
    pub max_isa: Option<Isa>,
    /// Fix the input shapes (one per graph input; symbolic dims bound): the
    /// plan is built at compile time and each weight only kernels read is
    /// released as soon as it is packed, so compiling holds about one copy
    /// of the weights. Runs with other shapes are then refused. `None`:
    /// models whose inputs all have static shapes are fixed to them; others
    /// get a plan per input shape on first use and keep their weights.
    pub input_shapes: Option<Vec<Vec<usize>>>,
    /// Whether fp32 pointwise convolutions may run on the block-sparse
    /// kernels ([`kiln_kernels::spmm`]).
    pub sparse: SparseMode,
}

/// Choice between the dense and the block-sparse kernels for fp32 pointwise
/// (1x1) convolutions; see [`CompileOptions::sparse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SparseMode {
    /// A layer whose weights have at least [`SPARSE_MIN_BLOCK_SPARSITY`] of
    /// their 1x8 blocks (one input channel by 8 consecutive output channels)
    /// zero runs on the fastest of the dense kernel and the sparse ones,
    /// each timed once at compile time on the layer's shape (median of a few
    /// runs on one thread; at the AVX-512 level both the 16-column AVX-512
    /// and the 8-column AVX2 sparse kernels are candidates). Other layers
    /// are dense. The plan's kernel names show the choice
    /// (`spmm_f32_avx512_8x16`, `gemm_f32_avx512_12x32`, ...).
    #[default]
    Auto,
    /// Dense kernels only.
    Dense,
    /// Every fp32 pointwise convolution on the sparse kernel of the compile
    /// level, whatever its sparsity and speed (tests, benchmarks). Those
    /// directly after a depthwise convolution are then not fused with it.
    Sparse,
}

/// Fraction of zero 1x8 weight blocks from which [`SparseMode::Auto`]
/// considers the sparse kernels for a pointwise convolution.
pub const SPARSE_MIN_BLOCK_SPARSITY: f64 = 0.7;

/// Physical layout of a 4-D value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layout {
    /// Row-major in the logical (ONNX) order; for 4-D values `[n, c, h, w]`.
    Nchw,
    /// `[n, h, w, c]` for a logical `[n, c, h, w]`.
    Nhwc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Loc {
    /// Offset (elements) in the arena, set by memory planning.
    Arena(usize),
    /// Caller's input `i` (read only).
    Input(usize),
    /// Caller's output `i`.
    Output(usize),
    /// `Plan::consts[i]`.
    Const(usize),
    /// A tensor slot of the run state (non-f32 or unknown shape).
    Boxed(usize),
}

#[derive(Debug, Clone)]
struct Val {
    name: String,
    shape: Option<Vec<usize>>,
    dtype: DType,
    layout: Layout,
    loc: Loc,
    /// Shares the buffer of this value (a reshape, or in place).
    alias: Option<usize>,
}

impl Val {
    fn len(&self) -> usize {
        self.shape.as_ref().map_or(0, |s| s.iter().product())
    }

    /// Arena words (f32 units) the value takes: 8-bit values pack four per word.
    fn words(&self) -> usize {
        if is8(self.dtype) {
            self.len().div_ceil(4)
        } else {
            self.len()
        }
    }
}

/// Bytes `st` touches once: inputs and outputs at their stored element size,
/// plus packed weights (see [`StepInfo::bytes`]).
fn step_bytes(vals: &[Val], st: &Step) -> u64 {
    let mut seen = HashSet::new();
    let act: usize = st
        .reads
        .iter()
        .chain(&st.writes)
        .filter(|&&v| seen.insert(v))
        .map(|&v| {
            let val = &vals[v];
            let elem = if is8(val.dtype) {
                1
            } else {
                val.dtype.size_of().max(1)
            };
            val.len() * elem
        })
        .sum();
    (act + kernel_weight_bytes(&st.kernel)) as u64
}

/// Bytes of the packed weights one kernel reads (0 for weightless kernels).
fn kernel_weight_bytes(k: &Kernel) -> usize {
    match k {
        Kernel::Conv { w, .. } => w.iter().map(|b| b.bytes()).sum(),
        Kernel::SpConv { w, .. } => w.bytes(),
        Kernel::Dw { w, .. } => w.bytes(),
        Kernel::DwPw { dw, pw, .. } => dw.bytes() + pw[0].bytes(),
        Kernel::Gemm { w, .. } => w.bytes(),
        Kernel::Q8(k) => q8::packed_bytes(k).map_or(0, |(_, b)| b),
        _ => 0,
    }
}

/// 8-bit value types (stored as `u8` in the arena, see [`q8`]).
fn is8(dt: DType) -> bool {
    matches!(dt, DType::U8 | DType::I8)
}

/// What one step runs.
#[derive(Debug)]
enum Kernel {
    /// An int8 step (see [`q8`]).
    Q8(q8::QKernel),
    /// An 8-bit graph output copied into a boxed tensor of its dtype.
    Unbox8 {
        x: usize,
        slot: usize,
    },
    Conv {
        g: ConvGeom,
        w: Arc<Vec<PackedB>>,
        x: usize,
        r: Option<usize>,
        y: usize,
        act: Activation,
    },
    /// A pointwise convolution on the block-sparse GEMM.
    SpConv {
        g: ConvGeom,
        w: Arc<SparseB>,
        x: usize,
        r: Option<usize>,
        y: usize,
        act: Activation,
    },
    Dw {
        g: DwGeom,
        w: Arc<PackedDw>,
        x: usize,
        r: Option<usize>,
        y: usize,
        act: Activation,
    },
    Gemm {
        m: usize,
        w: Arc<PackedB>,
        a: usize,
        y: usize,
        act: Activation,
    },
    Binary {
        op: BinOp,
        a: usize,
        b: usize,
        y: usize,
        act: Activation,
        len: usize,
    },
    /// `y = (x * a) + b`: a scalar `Mul` and the scalar `Add` reading it, fused.
    Affine {
        x: usize,
        a: f32,
        b: f32,
        y: usize,
        len: usize,
    },
    Scalar {
        op: BinOp,
        x: usize,
        s: f32,
        scalar_first: bool,
        y: usize,
        len: usize,
    },
    Channel {
        op: BinOp,
        x: usize,
        s: usize,
        /// `s` holds one row of `c` per batch item (else one, broadcast).
        per_batch: bool,
        y: usize,
        n: usize,
        hw: usize,
        c: usize,
    },
    /// A depthwise convolution feeding a pointwise one, fused: bands of
    /// depthwise output rows go through per-thread scratch straight into the
    /// pointwise GEMM, so the intermediate never travels through memory.
    DwPw {
        dg: DwGeom,
        dw: Arc<PackedDw>,
        dact: Activation,
        pw: Arc<Vec<PackedB>>,
        pact: Activation,
        x: usize,
        r: Option<usize>,
        y: usize,
        co: usize,
    },
    /// NCHW per-channel operand: `y[n, c, p] = x[n, c, p] op s[n?, c]`.
    ChannelNchw {
        op: BinOp,
        x: usize,
        s: usize,
        /// `s` holds one value per (n, c) (true) or per c (false).
        per_batch: bool,
        y: usize,
        n: usize,
        c: usize,
        hw: usize,
    },
    /// ConvTranspose with kernel == stride, no padding: one GEMM per input
    /// row and tap, written with a stride into the output.
    ConvTransposeStrided {
        taps: Arc<Vec<PackedB>>,
        x: usize,
        y: usize,
        n: usize,
        h: usize,
        w: usize,
        ci: usize,
        co: usize,
        kh: usize,
        kw: usize,
    },
    /// Concatenation along channels of NHWC values.
    ConcatC {
        xs: Vec<(usize, usize)>,
        y: usize,
        pixels: usize,
        c: usize,
    },
    /// Nearest upsampling by integer factors, NHWC.
    Upsample {
        x: usize,
        y: usize,
        n: usize,
        h: usize,
        w: usize,
        c: usize,
        fy: usize,
        fx: usize,
    },
    Act {
        act: Activation,
        x: usize,
        y: usize,
        len: usize,
    },
    Gap {
        x: usize,
        y: usize,
        n: usize,
        hw: usize,
        c: usize,
    },
    Pool {
        g: PoolGeom,
        x: usize,
        y: usize,
    },
    Softmax {
        x: usize,
        y: usize,
        rows: usize,
        cols: usize,
    },
    ToNhwc {
        x: usize,
        y: usize,
        n: usize,
        c: usize,
        hw: usize,
    },
    ToNchw {
        x: usize,
        y: usize,
        n: usize,
        c: usize,
        hw: usize,
    },
    Copy {
        x: usize,
        y: usize,
        len: usize,
    },
    Fallback {
        node: usize,
        ins: Vec<Option<usize>>,
        outs: Vec<Option<usize>>,
    },
}

/// One step of a plan, as listed by [`CompiledModel::plan_info`].
#[derive(Debug, Clone)]
pub struct StepInfo {
    /// Node name (or the value a layout transpose / copy is for).
    pub node: String,
    /// ONNX op type (`"Transpose"` for layout changes, `"Copy"` for output copies).
    pub op_type: String,
    /// Kernel, e.g. `conv_f32_avx512_pointwise`, `dwconv_f32_avx512_3x3s2`, `reference`.
    pub kernel: String,
    /// Logical output shape.
    pub shape: Vec<usize>,
    /// Floating-point operations (2 per multiply-accumulate).
    pub flops: u64,
    /// Bytes the step touches once: its input and output values at their
    /// stored element size (4 for f32, 1 for 8-bit) plus its packed weights.
    /// The memory side of a roofline estimate; 0 until the plan is built.
    pub bytes: u64,
}

#[derive(Debug)]
struct Step {
    info: StepInfo,
    kernel: Kernel,
    reads: Vec<usize>,
    writes: Vec<usize>,
    /// Inputs the output may overwrite (the kernel allows `y == input`).
    inplace: Vec<usize>,
}

/// A plan for one set of input shapes.
#[derive(Debug)]
struct Plan {
    input_shapes: Vec<Vec<usize>>,
    vals: Vec<Val>,
    steps: Vec<Step>,
    consts: Vec<Arc<Tensor>>,
    arena_len: usize,
    scratch_len: usize,
    n_boxed: usize,
    /// Graph output -> its value.
    outputs: Vec<usize>,
    /// Graph inputs -> their values.
    inputs: Vec<usize>,
}

/// Sizes of a compiled plan, for reports (`kiln inspect`, `kiln bench`).
#[derive(Debug, Clone)]
pub struct PlanInfo {
    /// Input shapes the plan is for.
    pub input_shapes: Vec<Vec<usize>>,
    /// Bytes of the activation arena (peak intermediate memory).
    pub arena_bytes: usize,
    /// Bytes of im2col scratch per thread.
    pub scratch_bytes: usize,
    /// Bytes of packed weights held by the kernels.
    pub packed_weight_bytes: usize,
    /// Sum of the sizes of all intermediate values (what a plan without
    /// memory reuse would need).
    pub unshared_bytes: usize,
    /// Steps, in execution order.
    pub steps: Vec<StepInfo>,
    /// Nodes run by the reference fallback, by op type.
    pub fallback_ops: Vec<String>,
}

/// Wall time of one step of a profiled run.
#[derive(Debug, Clone)]
pub struct StepTiming {
    /// The step.
    pub step: StepInfo,
    /// Its wall time.
    pub time: Duration,
}

enum PackedW {
    Conv(Arc<Vec<PackedB>>),
    Sparse(Arc<SparseB>),
    Dw(Arc<PackedDw>),
    Gemm(Arc<PackedB>),
}

/// Fixed-shape bookkeeping: readers left per initializer, and the shapes.
type Release = (HashMap<String, usize>, Vec<Vec<usize>>);

/// A model compiled for fast execution. See the [module docs](self).
pub struct CompiledModel {
    model: Model,
    opset: i64,
    isa: Isa,
    sparse: SparseMode,
    /// Initializers still needed (all, until a static plan proved otherwise).
    /// Initializers by name; those only kernels read are released once
    /// packed when the input shapes are fixed.
    inits: Mutex<HashMap<String, Arc<Tensor>>>,
    /// Set when the shapes are fixed: readers left per initializer, and the
    /// shapes (no other plan can be built after weights were released).
    release: Mutex<Option<Release>>,
    packed: Mutex<HashMap<String, Arc<PackedW>>>,
    plans: Mutex<Vec<Arc<Plan>>>,
}

impl std::fmt::Debug for CompiledModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CompiledModel({} nodes, isa {})",
            self.model.graph.nodes.len(),
            self.isa
        )
    }
}

/// A borrowed f32 input: shape and row-major (NCHW) data.
#[derive(Debug, Clone, Copy)]
pub struct TensorRef<'a> {
    /// Shape.
    pub shape: &'a [usize],
    /// `shape.iter().product()` values.
    pub data: &'a [f32],
}

/// Per-run state: arena, scratch, thread pool, pointers. Create one per
/// thread that runs a model ([`CompiledModel::new_state`]); it is reused
/// across runs and grows only when a larger plan needs it.
pub struct RunState {
    pool: ThreadPool,
    plan: Option<Arc<Plan>>,
    arena: Vec<Align64>,
    scratch: Vec<Vec<f32>>,
    ptrs: Vec<*mut f32>,
    boxed: Vec<Option<Tensor>>,
}

impl std::fmt::Debug for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RunState({:?}, arena {} B)", self.pool, self.arena.len() * 64)
    }
}

// SAFETY: the raw pointers in `ptrs` are recomputed at the start of every
// run from buffers the state owns or the run borrows; they are never used
// across runs.
unsafe impl Send for RunState {}

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Align64([f32; 16]);

impl RunState {
    /// Threads a run uses.
    pub fn threads(&self) -> usize {
        self.pool.threads()
    }
}

fn to_kernel_act(a: FusedAct) -> Activation {
    match a {
        FusedAct::None => Activation::None,
        FusedAct::Relu => Activation::RELU,
        FusedAct::Clip { min, max } => Activation::Clamp { min, max },
        FusedAct::LeakyRelu { alpha } => Activation::LeakyRelu(alpha),
        FusedAct::HardSigmoid { alpha, beta } => Activation::HardSigmoid { alpha, beta },
        FusedAct::HardSwish => Activation::HardSwish,
        FusedAct::Sigmoid => Activation::Sigmoid,
        FusedAct::SiLU => Activation::SiLU,
    }
}

/// The epilogue activation of a kiln fused op (`activation` attributes), or
/// none for a plain ONNX op.
fn fused_activation(node: &Node, fused: bool) -> Result<Activation, RuntimeError> {
    Ok(if fused {
        to_kernel_act(FusedAct::parse(node)?)
    } else {
        Activation::None
    })
}

/// A 4-D shape whose NCHW and NHWC orders are the same memory.
fn layout_free(s: &[usize]) -> bool {
    s.len() != 4 || s[2] * s[3] == 1 || s[1] == 1
}

impl CompiledModel {
    /// Compiles `model` (an optimized graph is best: run the optimizer first
    /// so BatchNormalization and activations are fused into convolutions).
    /// Models whose inputs all have static shapes get their plan now; the
    /// weights only the kernels use are then dropped (kept packed).
    ///
    /// Errors: unsupported ops, invalid graphs, attribute or shape errors of
    /// a node (named).
    pub fn compile(mut model: Model, opts: &CompileOptions) -> Result<CompiledModel, RuntimeError> {
        kiln_ir::infer::check_supported(&model)?;
        model.graph.validate()?;
        // QDQ patterns become kiln's integer ops, which run on int8 kernels.
        crate::lower_qdq(&mut model)?;
        model.graph.validate()?;
        let opset = model.opset();
        let isa = match opts.max_isa {
            Some(m) => kiln_kernels::active_isa().min(m),
            None => kiln_kernels::active_isa(),
        };
        let inits: HashMap<String, Arc<Tensor>> = std::mem::take(&mut model.graph.initializers)
            .into_iter()
            .map(|(k, v)| (k, Arc::new(v)))
            .collect();
        let fixed: Option<Vec<Vec<usize>>> = match &opts.input_shapes {
            Some(s) => Some(s.clone()),
            None => model.graph.inputs.iter().map(|i| i.ty.known_dims()).collect(),
        };
        let release = fixed.as_ref().map(|shapes| {
            let mut readers: HashMap<String, usize> = HashMap::new();
            for n in &model.graph.nodes {
                for i in &n.inputs {
                    if inits.contains_key(i) {
                        *readers.entry(i.clone()).or_default() += 1;
                    }
                }
            }
            // Graph outputs that are initializers are read at the end.
            for o in &model.graph.outputs {
                if inits.contains_key(&o.name) {
                    *readers.entry(o.name.clone()).or_default() += 1;
                }
            }
            (readers, shapes.clone())
        });
        let cm = CompiledModel {
            model,
            opset,
            isa,
            sparse: opts.sparse,
            inits: Mutex::new(inits),
            release: Mutex::new(None),
            packed: Mutex::new(HashMap::new()),
            plans: Mutex::new(Vec::new()),
        };
        if let (Some(shapes), Some(rel)) = (fixed, release) {
            let refs: Vec<&[usize]> = shapes.iter().map(|s| s.as_slice()).collect();
            cm.check_input_decl(refs.len(), |i| (refs[i], cm.model.graph.inputs[i].ty.dtype))?;
            *cm.release.lock().unwrap_or_else(|e| e.into_inner()) = Some(rel);
            let plan = Arc::new(cm.build_plan(&shapes)?);
            cm.plans.lock().unwrap_or_else(|e| e.into_inner()).push(plan);
        }
        Ok(cm)
    }

    /// One reader of initializer `name` was lowered onto a kernel that packed
    /// it: with fixed shapes, release it when it has no reader left.
    fn packed_reader(&self, name: &str) {
        let mut rel = self.release.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((readers, _)) = rel.as_mut() {
            if let Some(n) = readers.get_mut(name) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.inits.lock().unwrap_or_else(|e| e.into_inner()).remove(name);
                }
            }
        }
    }

    /// The ISA level of the kernels.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// The model (initializers moved out).
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// A fresh run state using `threads` threads (at least 1).
    pub fn new_state(&self, threads: usize) -> RunState {
        RunState {
            pool: ThreadPool::new(threads),
            plan: None,
            arena: Vec::new(),
            scratch: Vec::new(),
            ptrs: Vec::new(),
            boxed: Vec::new(),
        }
    }

    /// The plan for `shapes` (one per graph input), built and cached on first use.
    fn plan_for(&self, shapes: &[&[usize]]) -> Result<Arc<Plan>, RuntimeError> {
        {
            let plans = self.plans.lock().unwrap_or_else(|e| e.into_inner());
            for p in plans.iter() {
                if p.input_shapes.len() == shapes.len()
                    && p.input_shapes.iter().zip(shapes).all(|(a, b)| a == b)
                {
                    return Ok(p.clone());
                }
            }
        }
        if let Some((_, fixed)) = self.release.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            return Err(ir_err!(
                InvalidInput,
                "the model was compiled for input shapes {:?} (CompileOptions::input_shapes), got {:?}",
                fixed,
                shapes
            ));
        }
        let owned: Vec<Vec<usize>> = shapes.iter().map(|s| s.to_vec()).collect();
        let plan = Arc::new(self.build_plan(&owned)?);
        self.plans
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(plan.clone());
        Ok(plan)
    }

    /// Describes the plan for `shapes` (building it if needed).
    pub fn plan_info(&self, shapes: &[Vec<usize>]) -> Result<PlanInfo, RuntimeError> {
        let refs: Vec<&[usize]> = shapes.iter().map(|s| s.as_slice()).collect();
        let p = self.plan_for(&refs)?;
        let mut packed = 0usize;
        let mut seen = HashSet::new();
        let mut fallback = Vec::new();
        for st in &p.steps {
            let (key, bytes) = match &st.kernel {
                Kernel::Conv { w, .. } => (
                    Arc::as_ptr(w) as usize,
                    w.iter().map(|b| b.bytes()).sum::<usize>(),
                ),
                Kernel::SpConv { w, .. } => (Arc::as_ptr(w) as usize, w.bytes()),
                Kernel::Dw { w, .. } => (Arc::as_ptr(w) as usize, w.bytes()),
                Kernel::DwPw { dw, pw, .. } => {
                    for (k, b) in [
                        (Arc::as_ptr(dw) as usize, dw.bytes()),
                        (Arc::as_ptr(pw) as usize, pw[0].bytes()),
                    ] {
                        if seen.insert(k) {
                            packed += b;
                        }
                    }
                    continue;
                }
                Kernel::Gemm { w, .. } => (Arc::as_ptr(w) as usize, w.bytes()),
                Kernel::Q8(k) => match q8::packed_bytes(k) {
                    Some(kb) => kb,
                    None => continue,
                },
                Kernel::Fallback { .. } => {
                    fallback.push(st.info.op_type.clone());
                    continue;
                }
                _ => continue,
            };
            if seen.insert(key) {
                packed += bytes;
            }
        }
        let unshared = p
            .vals
            .iter()
            .filter(|v| v.alias.is_none() && matches!(v.loc, Loc::Arena(_)))
            .map(|v| v.words() * 4)
            .sum();
        Ok(PlanInfo {
            input_shapes: p.input_shapes.clone(),
            arena_bytes: p.arena_len * 4,
            scratch_bytes: p.scratch_len * 4,
            packed_weight_bytes: packed,
            unshared_bytes: unshared,
            steps: p.steps.iter().map(|s| s.info.clone()).collect(),
            fallback_ops: fallback,
        })
    }

    /// Output shapes for the given input shapes.
    pub fn output_shapes(&self, shapes: &[&[usize]]) -> Result<Vec<Option<Vec<usize>>>, RuntimeError> {
        let p = self.plan_for(shapes)?;
        Ok(p.outputs.iter().map(|&v| p.vals[v].shape.clone()).collect())
    }

    /// Runs on caller-owned buffers: `inputs` (one per graph input, f32,
    /// NCHW as declared) are read in place; results are written into
    /// `outputs` (one slice per graph output, exactly its element count; see
    /// [`CompiledModel::output_shapes`]).
    ///
    /// Errors: input count/shape/dtype mismatches (named), wrong output slice
    /// lengths, non-f32 or dynamically shaped outputs (use
    /// [`CompiledModel::run`]), and run-time errors of fallback nodes.
    pub fn run_into(
        &self,
        state: &mut RunState,
        inputs: &[TensorRef<'_>],
        outputs: &mut [&mut [f32]],
    ) -> Result<(), RuntimeError> {
        // Shapes equal to the state's plan were validated when it was built
        // (and checking symbols allocates): check the declaration only otherwise.
        let known = state.plan.as_ref().is_some_and(|p| {
            p.input_shapes.len() == inputs.len()
                && p.input_shapes.iter().zip(inputs).all(|(s, t)| s == t.shape)
                && self.model.graph.inputs.iter().all(|d| d.ty.dtype == DType::F32)
        });
        if !known {
            self.check_input_decl(inputs.len(), |i| (inputs[i].shape, DType::F32))?;
        }
        for (i, t) in inputs.iter().enumerate() {
            let n: usize = t.shape.iter().product();
            if t.data.len() != n {
                return Err(ir_err!(
                    InvalidInput,
                    "input '{}' has {} values, its shape {:?} needs {n}",
                    self.model.graph.inputs[i].name,
                    t.data.len(),
                    t.shape
                ));
            }
        }
        let plan = self.state_plan(state, |i| inputs[i].shape, inputs.len())?;
        if outputs.len() != plan.outputs.len() {
            return Err(ir_err!(
                InvalidInput,
                "the model has {} output(s), got {} output buffer(s)",
                plan.outputs.len(),
                outputs.len()
            ));
        }
        for (i, &v) in plan.outputs.iter().enumerate() {
            let val = &plan.vals[v];
            if !matches!(val.loc, Loc::Output(_)) {
                return Err(ir_err!(
                    InvalidInput,
                    "output '{}' is not an f32 tensor of static shape; use run()",
                    val.name
                ));
            }
            if outputs[i].len() != val.len() {
                return Err(ir_err!(
                    InvalidInput,
                    "output buffer {i} ('{}') has {} values, the output {:?} needs {}",
                    val.name,
                    outputs[i].len(),
                    val.shape.as_deref().unwrap_or(&[]),
                    val.len()
                ));
            }
        }
        let in_ptrs = |i: usize| inputs[i].data.as_ptr() as *mut f32;
        self.exec(
            &plan,
            state,
            &in_ptrs,
            &mut |i| outputs[i].as_mut_ptr(),
            &[],
            None,
        )
    }

    /// Runs on owned tensors (any dtypes) and returns the outputs, like
    /// [`crate::Session::run`]. Allocates the outputs; [`CompiledModel::run_into`]
    /// does not.
    pub fn run(&self, state: &mut RunState, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, RuntimeError> {
        self.run_inner(state, inputs, None)
    }

    /// Like [`CompiledModel::run`], also timing every step.
    pub fn run_profiled(
        &self,
        state: &mut RunState,
        inputs: Vec<Tensor>,
    ) -> Result<(Vec<Tensor>, Vec<StepTiming>), RuntimeError> {
        let mut t = Vec::new();
        let out = self.run_inner(state, inputs, Some(&mut t))?;
        Ok((out, t))
    }

    fn run_inner(
        &self,
        state: &mut RunState,
        inputs: Vec<Tensor>,
        timings: Option<&mut Vec<StepTiming>>,
    ) -> Result<Vec<Tensor>, RuntimeError> {
        self.check_input_decl(inputs.len(), |i| (inputs[i].shape(), inputs[i].dtype()))?;
        let plan = self.state_plan(state, |i| inputs[i].shape(), inputs.len())?;
        let mut outs: Vec<Option<Tensor>> = plan
            .outputs
            .iter()
            .map(|&v| {
                let val = &plan.vals[v];
                match val.loc {
                    Loc::Output(_) => Tensor::zeros(DType::F32, val.shape.clone().unwrap_or_default()).ok(),
                    _ => None,
                }
            })
            .collect();
        let out_ptrs: Vec<*mut f32> = outs
            .iter_mut()
            .map(|t| match t {
                Some(t) => t
                    .as_slice_mut::<f32>()
                    .map(|s| s.as_mut_ptr())
                    .unwrap_or(std::ptr::null_mut()),
                None => std::ptr::null_mut(),
            })
            .collect();
        // f32 inputs are read in place; others go to their boxed slots.
        let in_ptrs = |i: usize| match inputs[i].as_slice::<f32>() {
            Ok(s) => s.as_ptr() as *mut f32,
            Err(_) => std::ptr::null_mut(),
        };
        let boxed_inputs: Vec<(usize, &Tensor)> = plan
            .inputs
            .iter()
            .enumerate()
            .filter_map(|(i, &v)| match plan.vals[v].loc {
                Loc::Boxed(k) => Some((k, &inputs[i])),
                _ => None,
            })
            .collect();
        self.exec(
            &plan,
            state,
            &in_ptrs,
            &mut |i| out_ptrs[i],
            &boxed_inputs,
            timings,
        )?;
        let mut res = Vec::with_capacity(outs.len());
        for (i, &v) in plan.outputs.iter().enumerate() {
            match outs[i].take() {
                Some(t) => res.push(t),
                None => {
                    let val = &plan.vals[v];
                    let t = match val.loc {
                        Loc::Boxed(k) => state.boxed[k].take(),
                        Loc::Const(k) => Some((*plan.consts[k]).clone()),
                        _ => None,
                    };
                    res.push(
                        t.ok_or_else(|| ir_err!(Internal, "graph output '{}' was not computed", val.name))?,
                    );
                }
            }
        }
        Ok(res)
    }

    fn check_input_decl<'s>(
        &self,
        n: usize,
        get: impl Fn(usize) -> (&'s [usize], DType),
    ) -> Result<(), RuntimeError> {
        let decl = &self.model.graph.inputs;
        if n != decl.len() {
            let names: Vec<&str> = decl.iter().map(|i| i.name.as_str()).collect();
            return Err(ir_err!(
                InvalidInput,
                "the model takes {} input(s) ({}), got {}",
                decl.len(),
                names.join(", "),
                n
            ));
        }
        let mut bindings = HashMap::new();
        for (i, d) in decl.iter().enumerate() {
            let (shape, dt) = get(i);
            if d.ty.dtype != dt {
                return Err(ir_err!(
                    InvalidInput,
                    "input '{}' has dtype {}, the model expects {}",
                    d.name,
                    dt,
                    d.ty.dtype
                ));
            }
            kiln_ir::infer::bind_dims(&d.name, &d.ty, shape, &mut bindings)?;
        }
        Ok(())
    }

    /// The state's current plan if its shapes match, else the right one.
    fn state_plan<'s>(
        &self,
        state: &mut RunState,
        shape: impl Fn(usize) -> &'s [usize],
        n: usize,
    ) -> Result<Arc<Plan>, RuntimeError> {
        if let Some(p) = &state.plan {
            if p.input_shapes.len() == n && (0..n).all(|i| p.input_shapes[i] == shape(i)) {
                return Ok(p.clone());
            }
        }
        let shapes: Vec<&[usize]> = (0..n).map(&shape).collect();
        let p = self.plan_for(&shapes)?;
        state.plan = Some(p.clone());
        Ok(p)
    }

    fn packed(&self, key: &str, make: impl FnOnce() -> PackedW) -> Arc<PackedW> {
        let mut m = self.packed.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(key.to_string())
            .or_insert_with(|| Arc::new(make()))
            .clone()
    }

    // ------------------------------------------------------------------
    // Plan building

    fn build_plan(&self, shapes: &[Vec<usize>]) -> Result<Plan, RuntimeError> {
        let g = &self.model.graph;
        // Shapes of every value for these inputs, and the constants they fold to.
        let mut m = Model {
            graph: kiln_ir::Graph {
                name: g.name.clone(),
                nodes: g.nodes.clone(),
                inputs: g.inputs.clone(),
                outputs: g.outputs.clone(),
                initializers: Default::default(),
                value_types: Default::default(),
            },
            opsets: self.model.opsets.clone(),
            ..Default::default()
        };
        if shapes.len() != m.graph.inputs.len() {
            return Err(ir_err!(
                Internal,
                "plan for {} inputs, the model has {}",
                shapes.len(),
                m.graph.inputs.len()
            ));
        }
        for (i, s) in m.graph.inputs.iter_mut().zip(shapes) {
            i.ty = ValueType::known(i.ty.dtype, s);
        }
        // Initializer types without copying their data: infer needs only
        // small ones' values; give it the small ones and the types of the rest.
        for (k, t) in self.inits.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            if t.len() <= 64 {
                m.graph.initializers.insert(k.clone(), (**t).clone());
            } else {
                m.graph.inputs.push(kiln_ir::ValueInfo {
                    name: k.clone(),
                    ty: ValueType::known(t.dtype(), t.shape()),
                });
            }
        }
        let folded = infer_types(&mut m)?;
        let types = std::mem::take(&mut m.graph.value_types);
        let mut b = Builder {
            cm: self,
            types,
            consts: Vec::new(),
            const_idx: HashMap::new(),
            folded,
            vals: Vec::new(),
            by_name: HashMap::new(),
            converted: HashMap::new(),
            steps: Vec::new(),
            n_boxed: 0,
        };
        let mut inputs = Vec::new();
        for (i, d) in g.inputs.iter().enumerate() {
            let shape = shapes[i].clone();
            let loc = if d.ty.dtype == DType::F32 {
                Loc::Input(i)
            } else {
                b.n_boxed += 1;
                Loc::Boxed(b.n_boxed - 1)
            };
            let id = b.push_val(&d.name, Some(shape), d.ty.dtype, Layout::Nchw, loc);
            b.by_name.insert(d.name.clone(), id);
            inputs.push(id);
        }
        for (ni, node) in g.nodes.iter().enumerate() {
            // Nodes whose every output folded to a constant need no step.
            if !node.outputs.is_empty()
                && node
                    .outputs
                    .iter()
                    .all(|o| o.is_empty() || b.folded.contains_key(o))
            {
                continue;
            }
            if !b.lower_fast(node)? {
                b.lower_fallback(ni, node)?;
            }
        }
        // Graph outputs: NCHW, written straight into the caller's buffer when possible.
        let mut outputs = Vec::new();
        let mut claimed: HashSet<usize> = HashSet::new();
        for (i, o) in g.outputs.iter().enumerate() {
            let v = b.use_val(&o.name, Some(Layout::Nchw))?;
            let val = &b.vals[v];
            let direct = matches!(val.loc, Loc::Arena(_))
                && val.alias.is_none()
                && !b.vals.iter().any(|w| w.alias == Some(v))
                && !claimed.contains(&v)
                && val.dtype == DType::F32;
            if direct {
                b.vals[v].loc = Loc::Output(i);
                claimed.insert(v);
                outputs.push(v);
            } else if val.dtype == DType::F32 && val.shape.is_some() && !matches!(val.loc, Loc::Boxed(_)) {
                let shape = val.shape.clone();
                let len = val.len();
                let y = b.push_val(&o.name, shape.clone(), DType::F32, Layout::Nchw, Loc::Output(i));
                b.push_step(
                    StepInfo {
                        node: o.name.clone(),
                        op_type: "Copy".into(),
                        kernel: "copy_f32".into(),
                        shape: shape.unwrap_or_default(),
                        flops: 0,
                        bytes: 0,
                    },
                    Kernel::Copy { x: v, y, len },
                    vec![v],
                    vec![y],
                    vec![],
                );
                outputs.push(y);
            } else if is8(val.dtype) && matches!(val.loc, Loc::Arena(_)) {
                let v = b.use_val8(&o.name, Layout::Nchw)?;
                b.n_boxed += 1;
                let slot = b.n_boxed - 1;
                let val = &b.vals[v];
                let (shape, dt) = (val.shape.clone(), val.dtype);
                let y = b.push_val(&o.name, shape.clone(), dt, Layout::Nchw, Loc::Boxed(slot));
                b.push_step(
                    StepInfo {
                        node: o.name.clone(),
                        op_type: "Copy".into(),
                        kernel: "copy_u8".into(),
                        shape: shape.unwrap_or_default(),
                        flops: 0,
                        bytes: 0,
                    },
                    Kernel::Unbox8 { x: v, slot },
                    vec![v],
                    vec![y],
                    vec![],
                );
                outputs.push(y);
            } else {
                outputs.push(v);
            }
        }
        let Builder {
            mut vals,
            steps,
            consts,
            n_boxed,
            ..
        } = b;
        let steps = fuse_dw_pw(&vals, steps, &outputs);
        let steps = fuse_affine(&vals, steps, &outputs);
        let mut steps = q8::fuse_gemm_add(&vals, steps, &outputs);
        let arena_len = plan_memory(&mut vals, &mut steps, &outputs);
        for st in &mut steps {
            st.info.bytes = step_bytes(&vals, st);
        }
        let scratch_len = steps
            .iter()
            .map(|s| match &s.kernel {
                Kernel::Conv { g, .. } if !g.is_pointwise() => g.scratch_len(),
                Kernel::DwPw { dg, .. } => dwpw_band(dg) * dg.ow * dg.c,
                Kernel::Q8(k) => q8::scratch_words(k),
                _ => 0,
            })
            .max()
            .unwrap_or(0);
        Ok(Plan {
            input_shapes: shapes.to_vec(),
            vals,
            steps,
            consts,
            arena_len,
            scratch_len,
            n_boxed,
            outputs,
            inputs,
        })
    }

    // ------------------------------------------------------------------
    // Execution

    fn exec(
        &self,
        plan: &Plan,
        st: &mut RunState,
        in_ptr: &dyn Fn(usize) -> *mut f32,
        out_ptr: &mut dyn FnMut(usize) -> *mut f32,
        boxed_inputs: &[(usize, &Tensor)],
        mut timings: Option<&mut Vec<StepTiming>>,
    ) -> Result<(), RuntimeError> {
        // Size the state (allocates only when the plan grew).
        let want = plan.arena_len.div_ceil(16);
        if st.arena.len() < want {
            st.arena.resize(want, Align64([0.0; 16]));
        }
        let threads = st.pool.threads();
        if st.scratch.len() < threads || st.scratch.iter().any(|s| s.len() < plan.scratch_len) {
            st.scratch = (0..threads).map(|_| vec![0f32; plan.scratch_len]).collect();
        }
        if st.ptrs.len() < plan.vals.len() {
            st.ptrs.resize(plan.vals.len(), std::ptr::null_mut());
        }
        if st.boxed.len() < plan.n_boxed {
            st.boxed.resize(plan.n_boxed, None);
        }
        for (k, t) in boxed_inputs {
            st.boxed[*k] = Some((*t).clone());
        }
        let base = st.arena.as_mut_ptr() as *mut f32;
        for (i, v) in plan.vals.iter().enumerate() {
            st.ptrs[i] = match v.loc {
                Loc::Arena(off) => unsafe { base.add(off) },
                Loc::Input(k) => in_ptr(k),
                Loc::Output(k) => out_ptr(k),
                Loc::Const(k) => match plan.consts[k].as_slice::<f32>() {
                    Ok(s) => s.as_ptr() as *mut f32,
                    Err(_) => std::ptr::null_mut(),
                },
                Loc::Boxed(_) => std::ptr::null_mut(),
            };
        }
        for step in &plan.steps {
            let t0 = timings.as_ref().map(|_| Instant::now());
            self.exec_step(plan, st, step)?;
            if let (Some(t), Some(t0)) = (timings.as_deref_mut(), t0) {
                t.push(StepTiming {
                    step: step.info.clone(),
                    time: t0.elapsed(),
                });
            }
        }
        Ok(())
    }

    fn exec_step(&self, plan: &Plan, st: &mut RunState, step: &Step) -> Result<(), RuntimeError> {
        let p = |v: usize| st.ptrs[v];
        let pool = &st.pool;
        let threads = pool.threads();
        match &step.kernel {
            Kernel::Q8(k) => self.exec_q8(st, k, step.info.flops),
            Kernel::Unbox8 { x, slot } => {
                let t = q8_tensor(&plan.vals[*x], st.ptrs[*x] as *const u8)?;
                st.boxed[*slot] = Some(t);
            }
            Kernel::Conv { g, w, x, r, y, act } => {
                let a = ConvArgs {
                    x: p(*x),
                    r: r.map_or(std::ptr::null(), |r| p(r) as *const f32),
                    y: p(*y),
                    act: *act,
                };
                let pix = g.pixels();
                let scratch = ScratchPtrs {
                    base: st.scratch.as_mut_ptr() as usize,
                };
                let parts = if step.info.flops < 200_000 {
                    1
                } else {
                    threads.min(pix.div_ceil(16))
                };
                if g.is_pointwise() {
                    let mr = tile_rows(w[0].isa);
                    let panels = w[0].panels();
                    let args = GemmArgs {
                        m: pix,
                        a: a.x,
                        lda: g.ci,
                        r: a.r,
                        ldr: g.co,
                        c: a.y,
                        ldc: g.co,
                        act: a.act,
                    };
                    let by_rows = pix >= 2 * mr * parts || panels < parts;
                    pool.run(parts, &|i| unsafe {
                        if by_rows {
                            gemm_f32_raw(&args, &w[0], split_range(pix, parts, i), 0..panels);
                        } else {
                            gemm_f32_raw(&args, &w[0], 0..pix, split_range(panels, parts, i));
                        }
                    });
                } else {
                    let sl = g.scratch_len();
                    pool.run(parts, &|i| unsafe {
                        let s = scratch.get(i % threads, sl);
                        conv_f32_raw(g, w, &a, split_range(pix, parts, i), s);
                    });
                }
            }
            Kernel::SpConv { g, w, x, r, y, act } => {
                let pix = g.pixels();
                let parts = if step.info.flops < 200_000 {
                    1
                } else {
                    threads.min(pix.div_ceil(16))
                };
                let mr = spmm_tile_rows(w.isa);
                let groups = w.groups();
                let args = GemmArgs {
                    m: pix,
                    a: p(*x),
                    lda: g.ci,
                    r: r.map_or(std::ptr::null(), |r| p(r) as *const f32),
                    ldr: g.co,
                    c: p(*y),
                    ldc: g.co,
                    act: *act,
                };
                let by_rows = pix >= 2 * mr * parts || groups < parts;
                pool.run(parts, &|i| unsafe {
                    if by_rows {
                        spmm_f32_raw(&args, w, split_range(pix, parts, i), 0..groups);
                    } else {
                        spmm_f32_raw(&args, w, 0..pix, split_range(groups, parts, i));
                    }
                });
            }
            Kernel::DwPw {
                dg,
                dw,
                dact,
                pw,
                pact,
                x,
                r,
                y,
                co,
            } => {
                let (px, py) = (SendPtr(p(*x)), SendPtr(p(*y)));
                let pr = SendPtr(r.map_or(std::ptr::null_mut(), &p));
                let scratch = ScratchPtrs {
                    base: st.scratch.as_mut_ptr() as usize,
                };
                let rows = dg.rows();
                let band = dwpw_band(dg);
                let row_len = dg.ow * dg.c;
                let parts = if step.info.flops < 200_000 {
                    1
                } else {
                    threads.min(rows)
                };
                pool.run(parts, &|i| unsafe {
                    let sc = scratch.get(i % threads, band * row_len);
                    let rr = split_range(rows, parts, i);
                    let mut r0 = rr.start;
                    while r0 < rr.end {
                        let r1 = (r0 + band).min(rr.end);
                        // Depthwise rows r0..r1 into the scratch (row r0 at its start).
                        let da = DwArgs {
                            x: px.get(),
                            r: std::ptr::null(),
                            y: sc.as_mut_ptr().wrapping_sub(r0 * row_len),
                            act: *dact,
                        };
                        dwconv_f32_raw(dg, dw, &da, r0..r1);
                        let m = (r1 - r0) * dg.ow;
                        let o = r0 * dg.ow * co;
                        let args = GemmArgs {
                            m,
                            a: sc.as_ptr(),
                            lda: dg.c,
                            r: if pr.get().is_null() {
                                std::ptr::null()
                            } else {
                                pr.get().add(o)
                            },
                            ldr: *co,
                            c: py.get().add(o),
                            ldc: *co,
                            act: *pact,
                        };
                        gemm_f32_raw(&args, &pw[0], 0..m, 0..pw[0].panels());
                        r0 = r1;
                    }
                });
            }
            Kernel::Dw { g, w, x, r, y, act } => {
                let a = DwArgs {
                    x: p(*x),
                    r: r.map_or(std::ptr::null(), |r| p(r) as *const f32),
                    y: p(*y),
                    act: *act,
                };
                let rows = g.rows();
                let parts = if step.info.flops < 100_000 {
                    1
                } else {
                    threads.min(rows)
                };
                pool.run(parts, &|i| unsafe {
                    dwconv_f32_raw(g, w, &a, split_range(rows, parts, i))
                });
            }
            Kernel::Gemm { m, w, a, y, act } => {
                let args = GemmArgs {
                    m: *m,
                    a: p(*a),
                    lda: w.k,
                    r: std::ptr::null(),
                    ldr: 0,
                    c: p(*y),
                    ldc: w.n,
                    act: *act,
                };
                let mr = tile_rows(w.isa);
                let panels = w.panels();
                let parts = if step.info.flops < 200_000 { 1 } else { threads };
                let by_rows = *m >= 2 * mr * parts || panels < parts;
                pool.run(parts, &|i| unsafe {
                    if by_rows {
                        gemm_f32_raw(&args, w, split_range(*m, parts, i), 0..panels);
                    } else {
                        gemm_f32_raw(&args, w, 0..*m, split_range(panels, parts, i));
                    }
                });
            }
            Kernel::Binary {
                op,
                a,
                b,
                y,
                act,
                len,
            } => {
                let (pa, pb, py) = (SendPtr(p(*a)), SendPtr(p(*b)), SendPtr(p(*y)));
                let parts = if *len < 32_768 { 1 } else { threads };
                let isa = self.isa;
                pool.run(parts, &|i| unsafe {
                    binary_f32(
                        isa,
                        *op,
                        pa.get(),
                        pb.get(),
                        py.get(),
                        *act,
                        split_range(*len, parts, i),
                    );
                });
            }
            Kernel::Affine { x, a, b, y, len } => {
                let (px, py) = (SendPtr(p(*x)), SendPtr(p(*y)));
                let parts = if *len < 32_768 { 1 } else { threads };
                let isa = self.isa;
                pool.run(parts, &|i| unsafe {
                    affine_f32(isa, px.get(), *a, *b, py.get(), split_range(*len, parts, i));
                });
            }
            Kernel::Scalar {
                op,
                x,
                s,
                scalar_first,
                y,
                len,
            } => {
                let (px, py) = (SendPtr(p(*x)), SendPtr(p(*y)));
                let parts = if *len < 32_768 { 1 } else { threads };
                let isa = self.isa;
                pool.run(parts, &|i| unsafe {
                    scalar_f32(
                        isa,
                        *op,
                        px.get(),
                        *s,
                        *scalar_first,
                        py.get(),
                        split_range(*len, parts, i),
                    );
                });
            }
            Kernel::Channel {
                op,
                x,
                s,
                per_batch,
                y,
                n,
                hw,
                c,
            } => unsafe {
                if *per_batch {
                    channel_f32(
                        self.isa,
                        *op,
                        p(*x),
                        p(*s),
                        p(*y),
                        *hw,
                        *c,
                        Activation::None,
                        0..*n,
                    );
                } else {
                    for b in 0..*n {
                        let o = b * hw * c;
                        channel_f32(
                            self.isa,
                            *op,
                            p(*x).add(o),
                            p(*s),
                            p(*y).add(o),
                            *hw,
                            *c,
                            Activation::None,
                            0..1,
                        );
                    }
                }
            },
            Kernel::Act { act, x, y, len } => {
                let (px, py) = (SendPtr(p(*x)), SendPtr(p(*y)));
                let parts = if *len < 32_768 { 1 } else { threads };
                let isa = self.isa;
                pool.run(parts, &|i| unsafe {
                    activation_f32(isa, *act, px.get(), py.get(), split_range(*len, parts, i));
                });
            }
            Kernel::ChannelNchw {
                op,
                x,
                s,
                per_batch,
                y,
                n,
                c,
                hw,
            } => {
                let (px, ps, py) = (SendPtr(p(*x)), SendPtr(p(*s)), SendPtr(p(*y)));
                let planes = n * c;
                let parts = if planes * hw < 32_768 {
                    1
                } else {
                    threads.min(planes)
                };
                let isa = self.isa;
                pool.run(parts, &|i| unsafe {
                    for pl in split_range(planes, parts, i) {
                        let sv = *ps.get().add(if *per_batch { pl } else { pl % c });
                        let o = pl * hw;
                        scalar_f32(isa, *op, px.get().add(o), sv, false, py.get().add(o), 0..*hw);
                    }
                });
            }
            Kernel::ConvTransposeStrided {
                taps,
                x,
                y,
                n,
                h,
                w,
                ci,
                co,
                kh,
                kw,
            } => {
                let (px, py) = (SendPtr(p(*x)), SendPtr(p(*y)));
                let rows = n * h;
                let parts = threads.min(rows);
                let (oh, ow) = (h * kh, w * kw);
                pool.run(parts, &|i| unsafe {
                    for r in split_range(rows, parts, i) {
                        let (b, iy) = (r / h, r % h);
                        for ky in 0..*kh {
                            for kx in 0..*kw {
                                let t = &taps[ky * kw + kx];
                                let args = GemmArgs {
                                    m: *w,
                                    a: px.get().add(r * w * ci),
                                    lda: *ci,
                                    r: std::ptr::null(),
                                    ldr: 0,
                                    c: py.get().add(((b * oh + iy * kh + ky) * ow + kx) * co),
                                    ldc: kw * co,
                                    act: Activation::None,
                                };
                                gemm_f32_raw(&args, t, 0..*w, 0..t.panels());
                            }
                        }
                    }
                });
            }
            Kernel::ConcatC { xs, y, pixels, c } => {
                let mut off = 0;
                for &(x, ci) in xs {
                    unsafe { kiln_kernels::layout::copy_rows(p(x), ci, p(*y).add(off), *c, *pixels, ci) };
                    off += ci;
                }
            }
            Kernel::Upsample {
                x,
                y,
                n,
                h,
                w,
                c,
                fy,
                fx,
            } => {
                let (px, py) = (SendPtr(p(*x)), SendPtr(p(*y)));
                let rows = n * h * fy;
                let parts = threads.min(rows);
                pool.run(parts, &|i| unsafe {
                    kiln_kernels::layout::upsample_nearest_nhwc(
                        px.get(),
                        py.get(),
                        (*h, *w, *c),
                        (*fy, *fx),
                        split_range(rows, parts, i),
                    );
                });
            }
            Kernel::Gap { x, y, n, hw, c } => unsafe {
                global_avg_pool_f32(self.isa, p(*x), p(*y), *hw, *c, 0..*n);
            },
            Kernel::Pool { g, x, y } => {
                let (px, py) = (SendPtr(p(*x)), SendPtr(p(*y)));
                let rows = g.n * g.oh;
                let parts = threads.min(rows);
                let isa = self.isa;
                pool.run(parts, &|i| unsafe {
                    pool2d_f32(isa, g, px.get(), py.get(), split_range(rows, parts, i))
                });
            }
            Kernel::Softmax { x, y, rows, cols } => unsafe {
                softmax_rows(p(*x), p(*y), *rows, *cols);
            },
            Kernel::ToNhwc { x, y, n, c, hw } => unsafe {
                kiln_kernels::layout::nchw_to_nhwc(p(*x), p(*y), *n, *c, *hw);
            },
            Kernel::ToNchw { x, y, n, c, hw } => unsafe {
                kiln_kernels::layout::nhwc_to_nchw(p(*x), p(*y), *n, *c, *hw);
            },
            Kernel::Copy { x, y, len } => unsafe {
                if p(*x) != p(*y) {
                    std::ptr::copy_nonoverlapping(p(*x), p(*y), *len);
                }
            },
            Kernel::Fallback { node, ins, outs } => {
                self.exec_fallback(plan, st, *node, ins, outs)?;
            }
        }
        Ok(())
    }

    fn exec_fallback(
        &self,
        plan: &Plan,
        st: &mut RunState,
        node_i: usize,
        ins: &[Option<usize>],
        outs: &[Option<usize>],
    ) -> Result<(), RuntimeError> {
        let node = &self.model.graph.nodes[node_i];
        // Owned copies of the f32 values held in buffers.
        let mut owned: Vec<Option<Tensor>> = Vec::with_capacity(ins.len());
        for v in ins {
            owned.push(match v {
                Some(v) => {
                    let val = &plan.vals[*v];
                    match val.loc {
                        Loc::Boxed(_) | Loc::Const(_) => None,
                        _ if is8(val.dtype) => Some(q8_tensor(val, st.ptrs[*v] as *const u8)?),
                        _ => {
                            let len = val.len();
                            let data = unsafe { std::slice::from_raw_parts(st.ptrs[*v], len) }.to_vec();
                            Some(Tensor::from_vec(val.shape.clone().unwrap_or_default(), data)?)
                        }
                    }
                }
                None => None,
            });
        }
        let mut args: Vec<Option<&Tensor>> = Vec::with_capacity(ins.len());
        for (v, o) in ins.iter().zip(&owned) {
            args.push(match (v, o) {
                (_, Some(t)) => Some(t),
                (Some(v), None) => match plan.vals[*v].loc {
                    Loc::Boxed(k) => Some(st.boxed[k].as_ref().ok_or_else(|| {
                        node.err(
                            ErrorKind::Internal,
                            format!("input '{}' was not computed", plan.vals[*v].name),
                        )
                    })?),
                    Loc::Const(k) => Some(&*plan.consts[k]),
                    _ => None,
                },
                (None, None) => None,
            });
        }
        let def = ops::lookup_node(node, self.opset)?;
        let ctx = OpCtx {
            node,
            opset: self.opset,
        };
        let res = (def.eval)(&ctx, &args).map_err(|e| e.at_node(&node.name, &node.op_type))?;
        drop(args);
        for (t, o) in res.into_iter().zip(outs) {
            let Some(v) = o else { continue };
            let val = &plan.vals[*v];
            match val.loc {
                Loc::Boxed(k) => st.boxed[k] = Some(t),
                _ if is8(val.dtype) && t.dtype() == val.dtype && Some(t.shape()) == val.shape.as_deref() => {
                    let dst = st.ptrs[*v] as *mut u8;
                    match t.dtype() {
                        DType::I8 => {
                            for (i, &q) in t.as_slice::<i8>()?.iter().enumerate() {
                                unsafe { *dst.add(i) = (q as u8) ^ 0x80 };
                            }
                        }
                        _ => {
                            let src = t.as_slice::<u8>()?;
                            unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst, src.len()) };
                        }
                    }
                }
                _ => {
                    if Some(t.shape()) != val.shape.as_deref() || t.dtype() != DType::F32 {
                        return Err(node.err(
                            ErrorKind::Internal,
                            format!(
                                "output '{}' is {} {:?}, the plan expected f32 {:?}",
                                val.name,
                                t.dtype(),
                                t.shape(),
                                val.shape
                            ),
                        ));
                    }
                    let src = t.as_slice::<f32>()?;
                    unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), st.ptrs[*v], src.len()) };
                }
            }
        }
        Ok(())
    }
}

/// An 8-bit arena value (NCHW) as a tensor of its model dtype.
fn q8_tensor(val: &Val, p: *const u8) -> Result<Tensor, RuntimeError> {
    let len = val.len();
    let bytes = unsafe { std::slice::from_raw_parts(p, len) };
    let shape = val.shape.clone().unwrap_or_default();
    Ok(if val.dtype == DType::I8 {
        Tensor::from_vec(
            shape,
            bytes.iter().map(|&b| (b ^ 0x80) as i8).collect::<Vec<i8>>(),
        )?
    } else {
        Tensor::from_vec(shape, bytes.to_vec())?
    })
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: tasks of one step write disjoint ranges through these.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}
impl SendPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// Per-thread scratch buffers (`*const Vec<f32>` as an address).
#[derive(Clone, Copy)]
struct ScratchPtrs {
    base: usize,
}
impl ScratchPtrs {
    /// Thread `t`'s scratch, `len` values.
    ///
    /// # Safety
    /// Only thread `t` uses it during one step.
    unsafe fn get<'a>(self, t: usize, len: usize) -> &'a mut [f32] {
        let v = &mut *(self.base as *mut Vec<f32>).add(t);
        &mut v[..len]
    }
}

/// `y[r, :] = softmax(x[r, :])` (max-subtracted; `y` may equal `x`).
unsafe fn softmax_rows(x: *const f32, y: *mut f32, rows: usize, cols: usize) {
    for r in 0..rows {
        let xs = x.add(r * cols);
        let ys = y.add(r * cols);
        let mut mx = f32::NEG_INFINITY;
        for j in 0..cols {
            mx = mx.max(*xs.add(j));
        }
        let mut sum = 0f32;
        for j in 0..cols {
            let e = (*xs.add(j) - mx).exp();
            *ys.add(j) = e;
            sum += e;
        }
        let inv = 1.0 / sum;
        for j in 0..cols {
            *ys.add(j) *= inv;
        }
    }
}

struct Builder<'a> {
    cm: &'a CompiledModel,
    types: HashMap<String, ValueType>,
    folded: HashMap<String, Tensor>,
    consts: Vec<Arc<Tensor>>,
    const_idx: HashMap<String, usize>,
    vals: Vec<Val>,
    by_name: HashMap<String, usize>,
    converted: HashMap<(usize, Layout), usize>,
    steps: Vec<Step>,
    n_boxed: usize,
}

impl Builder<'_> {
    fn push_val(
        &mut self,
        name: &str,
        shape: Option<Vec<usize>>,
        dtype: DType,
        layout: Layout,
        loc: Loc,
    ) -> usize {
        self.vals.push(Val {
            name: name.to_string(),
            shape,
            dtype,
            layout,
            loc,
            alias: None,
        });
        self.vals.len() - 1
    }

    fn push_step(
        &mut self,
        info: StepInfo,
        kernel: Kernel,
        reads: Vec<usize>,
        writes: Vec<usize>,
        inplace: Vec<usize>,
    ) {
        self.steps.push(Step {
            info,
            kernel,
            reads,
            writes,
            inplace,
        });
    }

    /// A constant tensor (initializer or folded value) by name.
    fn const_tensor(&self, name: &str) -> Option<Arc<Tensor>> {
        if let Some(t) = self.cm.inits.lock().unwrap_or_else(|e| e.into_inner()).get(name) {
            return Some(t.clone());
        }
        self.folded.get(name).map(|t| Arc::new(t.clone()))
    }

    fn is_const(&self, name: &str) -> bool {
        self.cm
            .inits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(name)
            || self.folded.contains_key(name)
    }

    /// Static f32 shape of a non-empty value name.
    fn f32_shape(&self, name: &str) -> Option<Vec<usize>> {
        if name.is_empty() {
            return None;
        }
        if let Some(&v) = self.by_name.get(name) {
            let val = &self.vals[v];
            return (val.dtype == DType::F32).then(|| val.shape.clone()).flatten();
        }
        let t = self.types.get(name)?;
        (t.dtype == DType::F32).then(|| t.known_dims()).flatten()
    }

    /// The value `name` in layout `want` (any layout for `None`), inserting
    /// a transpose (once per value and layout) when needed.
    fn use_val(&mut self, name: &str, want: Option<Layout>) -> Result<usize, RuntimeError> {
        let id = match self.by_name.get(name) {
            Some(&v) => v,
            None => {
                let t = self
                    .const_tensor(name)
                    .ok_or_else(|| ir_err!(Internal, "value '{}' is used before it is computed", name))?;
                let k = match self.const_idx.get(name) {
                    Some(&k) => k,
                    None => {
                        self.consts.push(t.clone());
                        self.const_idx.insert(name.to_string(), self.consts.len() - 1);
                        self.consts.len() - 1
                    }
                };
                let id = self.push_val(
                    name,
                    Some(t.shape().to_vec()),
                    t.dtype(),
                    Layout::Nchw,
                    Loc::Const(k),
                );
                self.by_name.insert(name.to_string(), id);
                id
            }
        };
        let Some(want) = want else { return Ok(id) };
        let v = &self.vals[id];
        if v.layout == want || v.shape.as_deref().is_none_or(layout_free) || v.dtype != DType::F32 {
            return Ok(id);
        }
        if let Some(&c) = self.converted.get(&(id, want)) {
            return Ok(c);
        }
        let s = v.shape.clone().unwrap_or_default();
        let (n, c, hw) = (s[0], s[1], s[2] * s[3]);
        let y = self.push_val(name, Some(s.clone()), DType::F32, want, Loc::Arena(0));
        let (kernel, kname) = match want {
            Layout::Nhwc => (Kernel::ToNhwc { x: id, y, n, c, hw }, "nchw_to_nhwc_f32"),
            Layout::Nchw => (Kernel::ToNchw { x: id, y, n, c, hw }, "nhwc_to_nchw_f32"),
        };
        self.push_step(
            StepInfo {
                node: name.to_string(),
                op_type: "Transpose".into(),
                kernel: kname.into(),
                shape: s,
                flops: 0,
                bytes: 0,
            },
            kernel,
            vec![id],
            vec![y],
            vec![],
        );
        self.converted.insert((id, want), y);
        Ok(y)
    }

    /// A new f32 arena value for output `name` of a fast step.
    fn out_val(&mut self, name: &str, shape: Vec<usize>, layout: Layout) -> usize {
        let id = self.push_val(name, Some(shape), DType::F32, layout, Loc::Arena(0));
        self.by_name.insert(name.to_string(), id);
        id
    }

    fn info(&self, node: &Node, kernel: String, shape: &[usize], flops: u64) -> StepInfo {
        StepInfo {
            node: node.name.clone(),
            op_type: node.op_type.clone(),
            kernel,
            shape: shape.to_vec(),
            flops,
            bytes: 0,
        }
    }

    /// The float kernels' ISA level.
    fn isa(&self) -> Isa {
        self.cm.isa.float_level()
    }

    /// Inputs `idx` of `node` (initializers) were packed by its kernel.
    fn released(&self, node: &Node, idx: &[usize]) {
        for &i in idx {
            if let Some(n) = node.inputs.get(i).filter(|n| !n.is_empty()) {
                self.cm.packed_reader(n);
            }
        }
    }

    /// Lowers `node` onto a kernel; false when it has none (fallback).
    fn lower_fast(&mut self, node: &Node) -> Result<bool, RuntimeError> {
        if self.lower_q8(node)? {
            return Ok(true);
        }
        let dom = node.domain.as_str();
        if !(dom.is_empty() || dom == "ai.onnx" || dom == ops::fused::DOMAIN) {
            return Ok(false);
        }
        let out0 = match node.outputs.first() {
            Some(o) if !o.is_empty() => o.clone(),
            _ => return Ok(false),
        };
        let Some(ys) = self.f32_shape(&out0) else {
            return Ok(false);
        };
        let fused = dom == ops::fused::DOMAIN;
        match (node.op_type.as_str(), fused) {
            ("Conv", false) | ("FusedConv", true) => self.lower_conv(node, fused, &out0),
            ("Gemm", false) | ("FusedGemm", true) => self.lower_gemm(node, fused, &out0, &ys),
            ("MatMul", false) | ("FusedMatMul", true) => self.lower_matmul(node, fused, &out0, &ys),
            ("Add" | "Sub" | "Mul" | "Div", false) => self.lower_binary(node, &out0, &ys),
            ("Relu" | "Clip" | "LeakyRelu" | "HardSigmoid" | "HardSwish" | "Sigmoid", false) => {
                self.lower_act(node, &out0, &ys)
            }
            ("GlobalAveragePool" | "ReduceMean", false) => self.lower_gap(node, &out0, &ys),
            ("MaxPool" | "AveragePool", false) => self.lower_pool(node, &out0, &ys),
            ("Softmax", false) => self.lower_softmax(node, &out0, &ys),
            ("ConvTranspose", false) => self.lower_conv_transpose(node, &out0, &ys),
            ("Concat", false) => self.lower_concat(node, &out0, &ys),
            ("Resize", false) => self.lower_resize(node, &out0, &ys),
            ("Reshape" | "Flatten" | "Squeeze" | "Unsqueeze" | "Identity" | "Dropout", false) => {
                self.lower_alias(node, &out0, &ys)
            }
            _ => Ok(false),
        }
    }

    fn lower_conv(&mut self, node: &Node, fused: bool, out: &str) -> Result<bool, RuntimeError> {
        let x = &node.inputs[0];
        let Some(xs) = self.f32_shape(x) else {
            return Ok(false);
        };
        let Some(w) = node.inputs.get(1).and_then(|w| self.const_tensor(w)) else {
            return Ok(false);
        };
        let bias = match node.inputs.get(2).filter(|b| !b.is_empty()) {
            Some(b) => match self.const_tensor(b) {
                Some(t) => Some(t),
                None => return Ok(false),
            },
            None => None,
        };
        if w.dtype() != DType::F32 || bias.as_ref().is_some_and(|b| b.dtype() != DType::F32) || xs.len() != 4
        {
            return Ok(false);
        }
        let z = if fused {
            node.inputs.get(3).filter(|z| !z.is_empty()).cloned()
        } else {
            None
        };
        let act = fused_activation(node, fused)?;
        let Some(cs) = conv2d_shape(
            node,
            self.cm.opset,
            &xs,
            w.shape(),
            bias.as_ref().map(|b| b.len()),
        )?
        else {
            return Ok(false);
        };
        let ys = vec![cs.n, cs.m, cs.output[0], cs.output[1]];
        if let Some(z) = &z {
            if self.f32_shape(z).as_deref() != Some(&ys[..]) {
                return Ok(false);
            }
        }
        let wd = w.as_slice::<f32>()?;
        let bd = match &bias {
            Some(b) => Some(b.as_slice::<f32>()?),
            None => None,
        };
        let isa = self.isa();
        let xi = self.use_val(x, Some(Layout::Nhwc))?;
        let zi = match &z {
            Some(z) => Some(self.use_val(z, Some(Layout::Nhwc))?),
            None => None,
        };
        let y = self.out_val(out, ys.clone(), Layout::Nhwc);
        let mut reads = vec![xi];
        reads.extend(zi);
        let macs;
        let kname;
        let cg = ConvGeom {
            n: cs.n,
            h: cs.input[0],
            w: cs.input[1],
            ci: cs.c,
            co: cs.m,
            group: cs.group,
            kh: cs.kernel[0],
            kw: cs.kernel[1],
            sh: cs.strides[0],
            sw: cs.strides[1],
            dh: cs.dilations[0],
            dw: cs.dilations[1],
            pt: cs.pads_begin[0],
            pl: cs.pads_begin[1],
            oh: cs.output[0],
            ow: cs.output[1],
        };
        let kernel = if cs.group == cs.c && cs.c == cs.m && cs.group > 1 {
            let g = cg.depthwise();
            macs = g.macs();
            let taps = g.kh * g.kw;
            let pw = self.cm.packed(&node.name, || {
                PackedW::Dw(Arc::new(PackedDw::pack(isa, cs.c, taps, wd, bd)))
            });
            let PackedW::Dw(pw) = &*pw else {
                return Err(node.err(ErrorKind::Internal, "packed weights of another kind"));
            };
            kname = format!("dwconv_f32_{}_{}x{}s{}", isa, g.kh, g.kw, g.sh);
            Kernel::Dw {
                g,
                w: pw.clone(),
                x: xi,
                r: zi,
                y,
                act,
            }
        } else if let Some(sp) = self.sparse_pointwise(node, &cg, wd, bd, act)? {
            let g = cg;
            macs = g.macs();
            kname = spmm_name(sp.isa);
            Kernel::SpConv {
                g,
                w: sp,
                x: xi,
                r: zi,
                y,
                act,
            }
        } else {
            let g = cg;
            macs = g.macs();
            let pw = self.cm.packed(&node.name, || {
                PackedW::Conv(Arc::new(pack_conv_weights(isa, &g, wd, bd)))
            });
            let PackedW::Conv(pw) = &*pw else {
                return Err(node.err(ErrorKind::Internal, "packed weights of another kind"));
            };
            kname = if g.is_pointwise() {
                format!("gemm_f32_{}_{}", isa, tile_name(isa))
            } else {
                format!("conv_f32_{}_im2col_{}x{}s{}", isa, g.kh, g.kw, g.sh)
            };
            Kernel::Conv {
                g,
                w: pw.clone(),
                x: xi,
                r: zi,
                y,
                act,
            }
        };
        let info = self.info(node, kname, &ys, 2 * macs);
        // The output may overwrite the residual, unless that is also the
        // convolution's input (`FusedConv(x, w, b, x)`): later tiles and
        // column panels still read it.
        let inplace = zi.filter(|&z| z != xi).into_iter().collect();
        self.push_step(info, kernel, reads, vec![y], inplace);
        self.released(node, &[1, 2]);
        Ok(true)
    }

    /// The block-sparse weights a pointwise convolution (`g`, weights `wd`
    /// `[co, ci, 1, 1]`, bias `bd`) runs on, or `None` for the dense kernel:
    /// see [`SparseMode`]. In [`SparseMode::Auto`] the candidates are timed
    /// here, on the layer's shape; with fixed input shapes (one plan) the
    /// packings that lost are dropped.
    fn sparse_pointwise(
        &self,
        node: &Node,
        g: &ConvGeom,
        wd: &[f32],
        bd: Option<&[f32]>,
        act: Activation,
    ) -> Result<Option<Arc<SparseB>>, RuntimeError> {
        if !g.is_pointwise() || self.cm.sparse == SparseMode::Dense {
            return Ok(None);
        }
        let isa = self.isa();
        let (k, n) = (g.ci, g.co);
        let sparse = |isa: Isa| -> Result<Arc<SparseB>, RuntimeError> {
            let key = format!("{}#spmm_{}", node.name, isa);
            let pw = self.cm.packed(&key, || {
                PackedW::Sparse(Arc::new(SparseB::pack(isa, k, n, |kk, j| wd[j * k + kk], bd)))
            });
            match &*pw {
                PackedW::Sparse(sp) => Ok(sp.clone()),
                _ => Err(node.err(ErrorKind::Internal, "packed weights of another kind")),
            }
        };
        if self.cm.sparse == SparseMode::Sparse {
            return sparse(isa).map(Some);
        }
        if block_sparsity(k, n, |kk, j| wd[j * k + kk]) < SPARSE_MIN_BLOCK_SPARSITY {
            return Ok(None);
        }
        let dense = self.cm.packed(&node.name, || {
            PackedW::Conv(Arc::new(pack_conv_weights(isa, g, wd, bd)))
        });
        let PackedW::Conv(dense) = &*dense else {
            return Err(node.err(ErrorKind::Internal, "packed weights of another kind"));
        };
        let mut cands: Vec<Arc<SparseB>> = vec![sparse(isa)?];
        if isa == Isa::Avx512 {
            // The 8-column AVX2 format keeps fewer rows when the two blocks
            // of a 16-column group are rarely nonzero together.
            cands.push(sparse(Isa::Avx2)?);
        }
        let times = time_pointwise(g.pixels(), k, n, act, &dense[0], &cands);
        let best = (0..times.len()).min_by_key(|&i| times[i]).unwrap_or(0);
        let fixed = self
            .cm
            .release
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some();
        if fixed {
            // One plan only: keep just the winner's packing.
            let mut packed = self.cm.packed.lock().unwrap_or_else(|e| e.into_inner());
            if best != 0 {
                packed.remove(&node.name);
            }
            for (i, c) in cands.iter().enumerate() {
                if i + 1 != best {
                    packed.remove(&format!("{}#spmm_{}", node.name, c.isa));
                }
            }
        }
        Ok(if best == 0 {
            None
        } else {
            Some(cands[best - 1].clone())
        })
    }

    fn lower_gemm(
        &mut self,
        node: &Node,
        fused: bool,
        out: &str,
        ys: &[usize],
    ) -> Result<bool, RuntimeError> {
        let a = &node.inputs[0];
        let Some((as_, bt)) = self.activation_and_weight(node) else {
            return Ok(false);
        };
        if as_.len() != 2 || bt.rank() != 2 || bt.dtype() != DType::F32 || node.attr_int("transA", 0)? != 0 {
            return Ok(false);
        }
        let trans_b = node.attr_int("transB", 0)? != 0;
        let alpha = node.attr_float("alpha", 1.0)?;
        let beta = node.attr_float("beta", 1.0)?;
        let (k, n) = if trans_b {
            (bt.shape()[1], bt.shape()[0])
        } else {
            (bt.shape()[0], bt.shape()[1])
        };
        if as_[1] != k || ys != [as_[0], n] {
            return Ok(false);
        }
        let c = match node.inputs.get(2).filter(|c| !c.is_empty()) {
            Some(c) => match self.const_tensor(c) {
                Some(t)
                    if t.dtype() == DType::F32
                        && (t.len() == n || t.len() == 1)
                        && t.shape().iter().rev().skip(1).all(|&d| d == 1) =>
                {
                    let v = t.as_slice::<f32>()?;
                    Some(
                        (0..n)
                            .map(|j| beta * v[if v.len() == 1 { 0 } else { j }])
                            .collect::<Vec<f32>>(),
                    )
                }
                _ => return Ok(false),
            },
            None => None,
        };
        let act = fused_activation(node, fused)?;
        let bd = bt.as_slice::<f32>()?;
        let isa = self.isa();
        let pw = self.cm.packed(&node.name, || {
            PackedW::Gemm(Arc::new(PackedB::pack(
                isa,
                k,
                n,
                |kk, j| alpha * if trans_b { bd[j * k + kk] } else { bd[kk * n + j] },
                c.as_deref(),
            )))
        });
        self.push_gemm(node, &pw, a, as_[0], out, ys, act)?;
        self.released(node, &[1, 2]);
        Ok(true)
    }

    /// Input 0 of `node` as an f32 value of static shape, and input 1 as a
    /// constant tensor (the weights of `Gemm`/`MatMul`).
    fn activation_and_weight(&self, node: &Node) -> Option<(Vec<usize>, Arc<Tensor>)> {
        let shape = self.f32_shape(node.inputs.first()?)?;
        let w = self.const_tensor(node.inputs.get(1)?)?;
        Some((shape, w))
    }

    /// The GEMM step of a `Gemm`/`MatMul` node: `m` rows of input `a` (NCHW,
    /// row-major) times the packed weights `pw`, writing `out`.
    #[allow(clippy::too_many_arguments)]
    fn push_gemm(
        &mut self,
        node: &Node,
        pw: &PackedW,
        a: &str,
        m: usize,
        out: &str,
        ys: &[usize],
        act: Activation,
    ) -> Result<(), RuntimeError> {
        let PackedW::Gemm(pw) = pw else {
            return Err(node.err(ErrorKind::Internal, "packed weights of another kind"));
        };
        let ai = self.use_val(a, Some(Layout::Nchw))?;
        let y = self.out_val(out, ys.to_vec(), Layout::Nchw);
        let flops = 2 * (m * pw.k * pw.n) as u64;
        let info = self.info(node, gemm_name(pw.isa, m), ys, flops);
        let kernel = Kernel::Gemm {
            m,
            w: pw.clone(),
            a: ai,
            y,
            act,
        };
        self.push_step(info, kernel, vec![ai], vec![y], vec![]);
        Ok(())
    }

    fn lower_matmul(
        &mut self,
        node: &Node,
        fused: bool,
        out: &str,
        ys: &[usize],
    ) -> Result<bool, RuntimeError> {
        let a = &node.inputs[0];
        let Some((as_, bt)) = self.activation_and_weight(node) else {
            return Ok(false);
        };
        if as_.len() < 2 || bt.rank() != 2 || bt.dtype() != DType::F32 || self.is_const(a) {
            return Ok(false);
        }
        let (k, n) = (bt.shape()[0], bt.shape()[1]);
        if as_[as_.len() - 1] != k || ys.last() != Some(&n) {
            return Ok(false);
        }
        let act = fused_activation(node, fused)?;
        let m: usize = as_[..as_.len() - 1].iter().product();
        let bd = bt.as_slice::<f32>()?;
        let isa = self.isa();
        let pw = self.cm.packed(&node.name, || {
            PackedW::Gemm(Arc::new(PackedB::from_row_major(isa, k, n, bd, None)))
        });
        self.push_gemm(node, &pw, a, m, out, ys, act)?;
        self.released(node, &[1]);
        Ok(true)
    }

    fn lower_binary(&mut self, node: &Node, out: &str, ys: &[usize]) -> Result<bool, RuntimeError> {
        if node.inputs.len() != 2 {
            return Ok(false);
        }
        let (an, bn) = (&node.inputs[0], &node.inputs[1]);
        let (Some(sa), Some(sb)) = (self.f32_shape(an), self.f32_shape(bn)) else {
            return Ok(false);
        };
        let op = match node.op_type.as_str() {
            "Add" => BinOp::Add,
            "Sub" => BinOp::Sub,
            "Mul" => BinOp::Mul,
            _ => BinOp::Div,
        };
        let len: usize = ys.iter().product();
        if sa == sb && sa == ys {
            let a = self.use_val(an, None)?;
            let lay = self.vals[a].layout;
            let b = self.use_val(bn, Some(lay))?;
            let y = self.out_val(out, ys.to_vec(), lay);
            let info = self.info(node, format!("binary_f32_{}", self.isa()), ys, len as u64);
            self.push_step(
                info,
                Kernel::Binary {
                    op,
                    a,
                    b,
                    y,
                    act: Activation::None,
                    len,
                },
                vec![a, b],
                vec![y],
                vec![a, b],
            );
            return Ok(true);
        }
        // A one-element constant operand: layout-free.
        for (x, sc, scalar_first) in [(an, bn, false), (bn, an, true)] {
            let (Some(xs), Some(t)) = (self.f32_shape(x), self.const_tensor(sc)) else {
                continue;
            };
            if t.len() != 1 || t.dtype() != DType::F32 || xs != ys || self.is_const(x) {
                continue;
            }
            let sv = t.as_slice::<f32>()?[0];
            let xi = self.use_val(x, None)?;
            let lay = self.vals[xi].layout;
            let y = self.out_val(out, ys.to_vec(), lay);
            let info = self.info(node, format!("scalar_f32_{}", self.isa()), ys, len as u64);
            self.push_step(
                info,
                Kernel::Scalar {
                    op,
                    x: xi,
                    s: sv,
                    scalar_first,
                    y,
                    len,
                },
                vec![xi],
                vec![y],
                vec![xi],
            );
            return Ok(true);
        }
        // Per-channel broadcast on an NHWC value: x[n,c,h,w] op s[.., c, 1, 1].
        let per_channel = |big: &[usize], small: &[usize]| -> bool {
            if big.len() != 4 || big != ys {
                return false;
            }
            let (n, c) = (big[0], big[1]);
            let s: Vec<usize> = small.to_vec();
            let ok_tail = s.len() >= 3 && s[s.len() - 1] == 1 && s[s.len() - 2] == 1 && s[s.len() - 3] == c;
            let lead: usize = s[..s.len().saturating_sub(3)].iter().product();
            ok_tail && (lead == n || lead == 1) && c > 1
        };
        let (x, s) = if per_channel(&sa, &sb) {
            (an, bn)
        } else if per_channel(&sb, &sa) && matches!(op, BinOp::Add | BinOp::Mul) {
            (bn, an)
        } else {
            return Ok(false);
        };
        if self
            .by_name
            .get(x)
            .is_none_or(|&v| self.vals[v].layout != Layout::Nhwc)
        {
            // An NCHW value (e.g. after a fallback op): per-plane scalars.
            let Some(&xv) = self.by_name.get(x) else {
                return Ok(false);
            };
            if matches!(self.vals[xv].loc, Loc::Boxed(_)) {
                return Ok(false);
            }
            let si = self.use_val(s, None)?;
            let per_batch = self.vals[si].len() == ys[0] * ys[1] && ys[0] > 1;
            let y = self.out_val(out, ys.to_vec(), Layout::Nchw);
            let info = self.info(node, format!("channel_nchw_f32_{}", self.isa()), ys, len as u64);
            self.push_step(
                info,
                Kernel::ChannelNchw {
                    op,
                    x: xv,
                    s: si,
                    per_batch,
                    y,
                    n: ys[0],
                    c: ys[1],
                    hw: ys[2] * ys[3],
                },
                vec![xv, si],
                vec![y],
                vec![xv],
            );
            return Ok(true);
        }
        let xi = self.use_val(x, Some(Layout::Nhwc))?;
        let si = self.use_val(s, None)?;
        let per_batch = self.vals[si].len() == ys[0] * ys[1];
        let y = self.out_val(out, ys.to_vec(), Layout::Nhwc);
        let info = self.info(node, format!("channel_f32_{}", self.isa()), ys, len as u64);
        self.push_step(
            info,
            Kernel::Channel {
                op,
                x: xi,
                s: si,
                per_batch,
                y,
                n: ys[0],
                hw: ys[2] * ys[3],
                c: ys[1],
            },
            vec![xi, si],
            vec![y],
            vec![xi],
        );
        Ok(true)
    }

    fn lower_act(&mut self, node: &Node, out: &str, ys: &[usize]) -> Result<bool, RuntimeError> {
        let x = &node.inputs[0];
        if self.f32_shape(x).as_deref() != Some(ys) {
            return Ok(false);
        }
        let act = match node.op_type.as_str() {
            "Relu" => Activation::RELU,
            "Clip" => {
                let (mut lo, mut hi) = (f32::NEG_INFINITY, f32::INFINITY);
                if self.cm.opset < 11 {
                    lo = node.attr_float("min", lo)?;
                    hi = node.attr_float("max", hi)?;
                } else {
                    for (i, bound) in [(1usize, &mut lo), (2, &mut hi)] {
                        if let Some(n) = node.inputs.get(i).filter(|n| !n.is_empty()) {
                            match self.const_tensor(n) {
                                Some(t) if t.len() == 1 && t.dtype() == DType::F32 => {
                                    *bound = t.as_slice::<f32>()?[0]
                                }
                                _ => return Ok(false),
                            }
                        }
                    }
                }
                Activation::Clamp { min: lo, max: hi }
            }
            "LeakyRelu" => Activation::LeakyRelu(node.attr_float("alpha", 0.01)?),
            "HardSigmoid" => Activation::HardSigmoid {
                alpha: node.attr_float("alpha", 0.2)?,
                beta: node.attr_float("beta", 0.5)?,
            },
            "HardSwish" => Activation::HardSwish,
            _ => Activation::Sigmoid,
        };
        let xi = self.use_val(x, None)?;
        let lay = self.vals[xi].layout;
        let y = self.out_val(out, ys.to_vec(), lay);
        let len = ys.iter().product();
        let info = self.info(node, format!("activation_f32_{}", self.isa()), ys, len as u64);
        self.push_step(
            info,
            Kernel::Act { act, x: xi, y, len },
            vec![xi],
            vec![y],
            vec![xi],
        );
        Ok(true)
    }

    fn lower_gap(&mut self, node: &Node, out: &str, ys: &[usize]) -> Result<bool, RuntimeError> {
        let x = &node.inputs[0];
        let Some(xs) = self.f32_shape(x) else {
            return Ok(false);
        };
        if xs.len() != 4 {
            return Ok(false);
        }
        if node.op_type == "ReduceMean" {
            let axes: Option<Vec<i64>> = if self.cm.opset >= 18 {
                match node.inputs.get(1).filter(|n| !n.is_empty()) {
                    Some(n) => match self.const_tensor(n) {
                        Some(t) => Some(t.to_i64_vec()?),
                        None => return Ok(false),
                    },
                    None => None,
                }
            } else {
                node.attr_ints_opt("axes")?
            };
            let Some(mut axes) = axes else { return Ok(false) };
            for a in &mut axes {
                if *a < 0 {
                    *a += 4;
                }
            }
            axes.sort_unstable();
            if axes != [2, 3] {
                return Ok(false);
            }
        }
        if ys.iter().product::<usize>() != xs[0] * xs[1] {
            return Ok(false);
        }
        let xi = self.use_val(x, Some(Layout::Nhwc))?;
        let y = self.out_val(out, ys.to_vec(), Layout::Nchw);
        let (n, c, hw) = (xs[0], xs[1], xs[2] * xs[3]);
        let info = self.info(
            node,
            format!("global_avg_pool_f32_{}", self.isa()),
            ys,
            (n * c * hw) as u64,
        );
        self.push_step(
            info,
            Kernel::Gap { x: xi, y, n, hw, c },
            vec![xi],
            vec![y],
            vec![],
        );
        Ok(true)
    }

    fn lower_pool(&mut self, node: &Node, out: &str, ys: &[usize]) -> Result<bool, RuntimeError> {
        let x = &node.inputs[0];
        let Some(xs) = self.f32_shape(x) else {
            return Ok(false);
        };
        let Some(ps) = pool2d_shape(node, self.cm.opset, &xs)? else {
            return Ok(false);
        };
        let g = pool_geom(&xs, &ps);
        let xi = self.use_val(x, Some(Layout::Nhwc))?;
        let y = self.out_val(out, ys.to_vec(), Layout::Nhwc);
        let flops = (g.n * g.oh * g.ow * g.c * g.kh * g.kw) as u64;
        let info = self.info(node, format!("pool2d_f32_{}", self.isa()), ys, flops);
        self.push_step(info, Kernel::Pool { g, x: xi, y }, vec![xi], vec![y], vec![]);
        Ok(true)
    }

    fn lower_softmax(&mut self, node: &Node, out: &str, ys: &[usize]) -> Result<bool, RuntimeError> {
        let x = &node.inputs[0];
        if self.f32_shape(x).as_deref() != Some(ys) || ys.is_empty() {
            return Ok(false);
        }
        let r = ys.len() as i64;
        let default = if self.cm.opset >= 13 { -1 } else { 1 };
        let mut axis = node.attr_int("axis", default)?;
        if axis < 0 {
            axis += r;
        }
        if axis != r - 1 {
            return Ok(false);
        }
        let cols = ys[ys.len() - 1];
        let rows = ys.iter().product::<usize>() / cols.max(1);
        let xi = self.use_val(x, Some(Layout::Nchw))?;
        let y = self.out_val(out, ys.to_vec(), Layout::Nchw);
        let info = self.info(node, "softmax_f32".into(), ys, 3 * (rows * cols) as u64);
        self.push_step(
            info,
            Kernel::Softmax { x: xi, y, rows, cols },
            vec![xi],
            vec![y],
            vec![xi],
        );
        Ok(true)
    }

    fn lower_conv_transpose(&mut self, node: &Node, out: &str, ys: &[usize]) -> Result<bool, RuntimeError> {
        let x = &node.inputs[0];
        let Some(xs) = self.f32_shape(x) else {
            return Ok(false);
        };
        let Some(w) = node.inputs.get(1).and_then(|w| self.const_tensor(w)) else {
            return Ok(false);
        };
        let bias = match node.inputs.get(2).filter(|b| !b.is_empty()) {
            Some(b) => match self.const_tensor(b) {
                Some(t) if t.dtype() == DType::F32 => Some(t),
                _ => return Ok(false),
            },
            None => None,
        };
        if xs.len() != 4 || w.rank() != 4 || w.dtype() != DType::F32 {
            return Ok(false);
        }
        let (ci, co, kh, kw) = (w.shape()[0], w.shape()[1], w.shape()[2], w.shape()[3]);
        let ints = |a: &str| node.attr_ints_opt(a);
        let all = |v: Option<Vec<i64>>, want: i64| v.is_none_or(|v| v.iter().all(|&d| d == want));
        let strides = ints("strides")?.unwrap_or(vec![1, 1]);
        let plain = node.attr_int("group", 1)? == 1
            && all(ints("pads")?, 0)
            && all(ints("dilations")?, 1)
            && all(ints("output_padding")?, 0)
            && ints("output_shape")?.is_none()
            && matches!(
                node.attr_string("auto_pad", "NOTSET")?.as_str(),
                "NOTSET" | "VALID"
            )
            && strides == [kh as i64, kw as i64]
            && xs[1] == ci
            && ys == [xs[0], co, xs[2] * kh, xs[3] * kw];
        if !plain {
            return Ok(false);
        }
        let wd = w.as_slice::<f32>()?;
        let bd = match &bias {
            Some(b) => Some(b.as_slice::<f32>()?),
            None => None,
        };
        let isa = self.isa();
        let pw = self.cm.packed(&node.name, || {
            PackedW::Conv(Arc::new(
                (0..kh * kw)
                    .map(|t| PackedB::pack(isa, ci, co, |k, j| wd[(k * co + j) * kh * kw + t], bd))
                    .collect(),
            ))
        });
        let PackedW::Conv(pw) = &*pw else {
            return Err(node.err(ErrorKind::Internal, "packed weights of another kind"));
        };
        let xi = self.use_val(x, Some(Layout::Nhwc))?;
        let y = self.out_val(out, ys.to_vec(), Layout::Nhwc);
        let flops = 2 * (xs[0] * xs[2] * xs[3] * ci * co * kh * kw) as u64;
        let info = self.info(
            node,
            format!("conv_transpose_f32_{}_gemm_{}x{}s{}", isa, kh, kw, kh),
            ys,
            flops,
        );
        self.push_step(
            info,
            Kernel::ConvTransposeStrided {
                taps: pw.clone(),
                x: xi,
                y,
                n: xs[0],
                h: xs[2],
                w: xs[3],
                ci,
                co,
                kh,
                kw,
            },
            vec![xi],
            vec![y],
            vec![],
        );
        self.released(node, &[1, 2]);
        Ok(true)
    }

    fn lower_concat(&mut self, node: &Node, out: &str, ys: &[usize]) -> Result<bool, RuntimeError> {
        if ys.len() != 4 || node.inputs.is_empty() {
            return Ok(false);
        }
        let mut axis = node.attr_int("axis", 1)?;
        if axis < 0 {
            axis += 4;
        }
        if axis != 1 {
            return Ok(false);
        }
        let mut parts = Vec::new();
        for i in &node.inputs {
            let Some(s) = self.f32_shape(i) else {
                return Ok(false);
            };
            if s.len() != 4 || s[0] != ys[0] || s[2] != ys[2] || s[3] != ys[3] || self.is_const(i) {
                return Ok(false);
            }
            parts.push((i.clone(), s[1]));
        }
        let mut xs = Vec::new();
        let mut reads = Vec::new();
        for (i, c) in parts {
            let v = self.use_val(&i, Some(Layout::Nhwc))?;
            xs.push((v, c));
            reads.push(v);
        }
        let y = self.out_val(out, ys.to_vec(), Layout::Nhwc);
        let info = self.info(node, "concat_channels_nhwc_f32".into(), ys, 0);
        self.push_step(
            info,
            Kernel::ConcatC {
                xs,
                y,
                pixels: ys[0] * ys[2] * ys[3],
                c: ys[1],
            },
            reads,
            vec![y],
            vec![],
        );
        Ok(true)
    }

    /// Integer factors `(fy, fx)` of a `Resize` from `xs` to `ys` (NCHW)
    /// that [`kiln_kernels::layout::upsample_nearest_nhwc`] computes:
    /// nearest, `asymmetric`, `floor`, scales (when given) exactly the
    /// factors; `None` otherwise.
    pub(super) fn nearest_factors(
        &self,
        node: &Node,
        xs: &[usize],
        ys: &[usize],
    ) -> Result<Option<(usize, usize)>, RuntimeError> {
        if xs.len() != 4 || ys.len() != 4 || xs[0] != ys[0] || xs[1] != ys[1] || self.cm.opset < 11 {
            return Ok(None);
        }
        if xs[2] == 0 || xs[3] == 0 {
            return Ok(None);
        }
        let nearest_floor = node.attr_string("mode", "nearest")? == "nearest"
            && node.attr_string("coordinate_transformation_mode", "half_pixel")? == "asymmetric"
            && node.attr_string("nearest_mode", "round_prefer_floor")? == "floor"
            && !node.attrs.contains_key("antialias")
            && !node.attrs.contains_key("axes")
            && node.attr_string("keep_aspect_ratio_policy", "stretch")? == "stretch";
        if !nearest_floor || !ys[2].is_multiple_of(xs[2]) || !ys[3].is_multiple_of(xs[3]) {
            return Ok(None);
        }
        let (fy, fx) = (ys[2] / xs[2], ys[3] / xs[3]);
        // Scales given (not sizes) must be exactly the integer factors.
        if let Some(sc) = node.inputs.get(2).filter(|n| !n.is_empty()) {
            match self.const_tensor(sc) {
                Some(t) if t.len() == 4 => {
                    if t.to_f64_vec() != [1.0, 1.0, fy as f64, fx as f64] {
                        return Ok(None);
                    }
                }
                Some(t) if t.is_empty() => {}
                _ => return Ok(None),
            }
        }
        Ok(Some((fy, fx)))
    }

    fn lower_resize(&mut self, node: &Node, out: &str, ys: &[usize]) -> Result<bool, RuntimeError> {
        let x = &node.inputs[0];
        let Some(xs) = self.f32_shape(x) else {
            return Ok(false);
        };
        let Some((fy, fx)) = self.nearest_factors(node, &xs, ys)? else {
            return Ok(false);
        };
        let xi = self.use_val(x, Some(Layout::Nhwc))?;
        let y = self.out_val(out, ys.to_vec(), Layout::Nhwc);
        let info = self.info(node, format!("upsample_nearest_nhwc_f32_{fy}x{fx}"), ys, 0);
        self.push_step(
            info,
            Kernel::Upsample {
                x: xi,
                y,
                n: xs[0],
                h: xs[2],
                w: xs[3],
                c: xs[1],
                fy,
                fx,
            },
            vec![xi],
            vec![y],
            vec![],
        );
        Ok(true)
    }

    fn lower_alias(&mut self, node: &Node, out: &str, ys: &[usize]) -> Result<bool, RuntimeError> {
        let x = &node.inputs[0];
        if node.outputs.iter().skip(1).any(|o| !o.is_empty()) || self.is_const(x) {
            return Ok(false);
        }
        let Some(xs) = self.f32_shape(x) else {
            return Ok(false);
        };
        if xs.iter().product::<usize>() != ys.iter().product::<usize>() {
            return Ok(false);
        }
        let xi = self.use_val(x, Some(Layout::Nchw))?;
        let root = self.vals[xi].alias.unwrap_or(xi);
        let loc = self.vals[root].loc;
        let y = self.push_val(out, Some(ys.to_vec()), DType::F32, Layout::Nchw, loc);
        self.vals[y].alias = Some(root);
        self.by_name.insert(out.to_string(), y);
        Ok(true)
    }

    fn lower_fallback(&mut self, ni: usize, node: &Node) -> Result<(), RuntimeError> {
        let mut ins = Vec::with_capacity(node.inputs.len());
        let mut reads = Vec::new();
        for n in &node.inputs {
            if n.is_empty() {
                ins.push(None);
                continue;
            }
            let v = if self.q8_shape(n).is_some() {
                self.use_val8(n, Layout::Nchw)?
            } else {
                self.use_val(n, Some(Layout::Nchw))?
            };
            ins.push(Some(v));
            reads.push(v);
        }
        let mut outs = Vec::with_capacity(node.outputs.len());
        let mut writes = Vec::new();
        for o in &node.outputs {
            if o.is_empty() {
                outs.push(None);
                continue;
            }
            let q8 = self
                .types
                .get(o)
                .filter(|t| is8(t.dtype))
                .and_then(|t| t.known_dims().map(|s| (s, t.dtype)));
            let id = match (self.f32_shape(o), q8) {
                (Some(s), _) => self.out_val(o, s, Layout::Nchw),
                (None, Some((s, dt))) => self.out_val8(o, s, dt, Layout::Nchw),
                (None, None) => {
                    let dt = self.types.get(o).map_or(DType::F32, |t| t.dtype);
                    let shape = self.types.get(o).and_then(|t| t.known_dims());
                    self.n_boxed += 1;
                    let id = self.push_val(o, shape, dt, Layout::Nchw, Loc::Boxed(self.n_boxed - 1));
                    self.by_name.insert(o.clone(), id);
                    id
                }
            };
            outs.push(Some(id));
            writes.push(id);
        }
        let shape = outs
            .first()
            .copied()
            .flatten()
            .and_then(|v| self.vals[v].shape.clone())
            .unwrap_or_default();
        let info = self.info(node, "reference".into(), &shape, 0);
        self.push_step(
            info,
            Kernel::Fallback { node: ni, ins, outs },
            reads,
            writes,
            vec![],
        );
        Ok(())
    }
}

/// The NHWC pooling geometry of an NCHW input `xs` pooled as `ps`.
fn pool_geom(xs: &[usize], ps: &kiln_ir::ops::pool::Pool2dShape) -> PoolGeom {
    PoolGeom {
        n: xs[0],
        h: xs[2],
        w: xs[3],
        c: xs[1],
        kh: ps.kernel[0],
        kw: ps.kernel[1],
        sh: ps.strides[0],
        sw: ps.strides[1],
        pt: ps.pads_begin[0],
        pl: ps.pads_begin[1],
        pb: ps.pads_end[0],
        pr: ps.pads_end[1],
        oh: ps.output[0],
        ow: ps.output[1],
        max: ps.max,
        count_include_pad: ps.count_include_pad,
    }
}

/// Rows a pointwise layer is timed on at most (its cost grows linearly in
/// the rows beyond L2-sized tiles): the timing buffers stay within 16 MiB.
const TIMING_MAX_VALUES: usize = 4 << 20;

/// Single-thread wall time of a pointwise layer of `m` rows (`k` inputs,
/// `n` outputs, activation `act`) on the dense packing `dense` (index 0)
/// and each sparse packing of `sparse` (indices 1..): median of 5 timed runs
/// after a warm-up, the candidates interleaved run by run so that a change of
/// machine load hits them alike.
fn time_pointwise(
    m: usize,
    k: usize,
    n: usize,
    act: Activation,
    dense: &PackedB,
    sparse: &[Arc<SparseB>],
) -> Vec<Duration> {
    let rows = m.min((TIMING_MAX_VALUES / (k + n).max(1)).max(64)).max(1);
    let a: Vec<f32> = (0..rows * k).map(|i| (i % 13) as f32 * 0.125 - 0.75).collect();
    let mut c = vec![0f32; rows * n];
    let args = GemmArgs {
        m: rows,
        a: a.as_ptr(),
        lda: k,
        r: std::ptr::null(),
        ldr: 0,
        c: c.as_mut_ptr(),
        ldc: n,
        act,
    };
    let cands = 1 + sparse.len();
    let mut times = vec![Vec::with_capacity(5); cands];
    for rep in 0..6 {
        for (i, t) in times.iter_mut().enumerate() {
            let t0 = Instant::now();
            // SAFETY: `a` and `c` hold `rows` rows of `k` and `n` values.
            unsafe {
                if i == 0 {
                    gemm_f32_raw(&args, dense, 0..rows, 0..dense.panels());
                } else {
                    let sp = &sparse[i - 1];
                    spmm_f32_raw(&args, sp, 0..rows, 0..sp.groups());
                }
            }
            if rep > 0 {
                t.push(t0.elapsed());
            }
        }
    }
    drop(c);
    times
        .into_iter()
        .map(|mut t| {
            t.sort();
            t[t.len() / 2]
        })
        .collect()
}

/// Kernel name of a GEMM with `m` rows (one row: the GEMV).
fn gemm_name(isa: Isa, m: usize) -> String {
    let isa = isa.float_level();
    if m == 1 && isa == Isa::Avx512 {
        "gemv_f32_avx512_4x32".into()
    } else {
        format!("gemm_f32_{}_{}", isa, tile_name(isa))
    }
}

fn tile_name(isa: Isa) -> &'static str {
    match isa {
        Isa::Avx512 => "12x32",
        Isa::Avx2 => "6x16",
        Isa::Scalar => "4x8",
        Isa::Avx512Vnni | Isa::Avx512Amx => tile_name(Isa::Avx512),
    }
}

/// Depthwise output rows per band of a fused [`Kernel::DwPw`]: about 96 KiB
/// of scratch (L2-resident between the two kernels).
fn dwpw_band(g: &DwGeom) -> usize {
    (24 * 1024 / (g.ow * g.c).max(1)).clamp(1, 32)
}

/// Intermediates smaller than this stay in L2 anyway: fusing them gains
/// nothing and splits the GEMM into small calls.
const DWPW_MIN_BYTES: usize = 1 << 20;

/// Per value: how many steps (and graph outputs) read it; and the values
/// other values alias (a fusion must not drop the buffer of either).
fn readers_and_aliased(vals: &[Val], steps: &[Step], outputs: &[usize]) -> (Vec<usize>, HashSet<usize>) {
    let mut readers = vec![0usize; vals.len()];
    for st in steps {
        for &v in &st.reads {
            readers[v] += 1;
        }
    }
    for &o in outputs {
        readers[o] += 1;
    }
    (readers, vals.iter().filter_map(|v| v.alias).collect())
}

/// Fuses a scalar `Mul` whose output is read only by the next step, a scalar
/// `Add` (or `Sub` of a constant), into one [`Kernel::Affine`] pass: PP-LCNet's
/// learnable affine blocks (`x * s + b` after each activation) then cost one
/// memory pass instead of two. The result is bit-identical (two roundings).
fn fuse_affine(vals: &[Val], steps: Vec<Step>, outputs: &[usize]) -> Vec<Step> {
    let (readers, aliased) = readers_and_aliased(vals, &steps, outputs);
    let mut out: Vec<Step> = Vec::with_capacity(steps.len());
    let mut it = steps.into_iter().peekable();
    while let Some(st) = it.next() {
        let pair = match (&st.kernel, it.peek().map(|n| &n.kernel)) {
            (
                Kernel::Scalar {
                    op: BinOp::Mul,
                    x,
                    s: a,
                    y: t,
                    len,
                    ..
                },
                Some(Kernel::Scalar {
                    op: op2 @ (BinOp::Add | BinOp::Sub),
                    x: x2,
                    s: c,
                    scalar_first: false,
                    y,
                    len: len2,
                }),
            ) if x2 == t && len == len2 && readers[*t] == 1 && !aliased.contains(t) => {
                Some((*x, *a, if *op2 == BinOp::Add { *c } else { -*c }, *y, *len))
            }
            _ => None,
        };
        let Some((x, a, b, y, len)) = pair else {
            out.push(st);
            continue;
        };
        let next = it.next().expect("peeked");
        out.push(Step {
            info: StepInfo {
                node: format!("{} + {}", st.info.node, next.info.node),
                op_type: "Mul+Add".into(),
                kernel: "affine_f32".into(),
                shape: next.info.shape.clone(),
                flops: st.info.flops + next.info.flops,
                bytes: 0,
            },
            kernel: Kernel::Affine { x, a, b, y, len },
            reads: vec![x],
            writes: vec![y],
            inplace: vec![x],
        });
    }
    out
}

/// Fuses each depthwise step whose output is read only by the next step, a
/// pointwise convolution (1x1, stride 1, one group), into one
/// [`Kernel::DwPw`] step. The intermediate value is then never stored.
fn fuse_dw_pw(vals: &[Val], steps: Vec<Step>, outputs: &[usize]) -> Vec<Step> {
    let (readers, aliased) = readers_and_aliased(vals, &steps, outputs);
    let mut out: Vec<Step> = Vec::with_capacity(steps.len());
    let mut it = steps.into_iter().peekable();
    while let Some(st) = it.next() {
        let fusable = match (&st.kernel, it.peek().map(|n| &n.kernel)) {
            (
                Kernel::Dw {
                    r: None,
                    y: dy,
                    g: dg,
                    ..
                },
                Some(Kernel::Conv { g, x, .. }),
            ) => {
                g.is_pointwise()
                    && x == dy
                    && readers[*dy] == 1
                    && !aliased.contains(dy)
                    && dg.rows() * dg.ow * dg.c * 4 >= DWPW_MIN_BYTES
            }
            _ => false,
        };
        if !fusable {
            out.push(st);
            continue;
        }
        let next = it.next().expect("peeked");
        let (
            Kernel::Dw {
                g: dg,
                w: dw,
                x,
                act: dact,
                ..
            },
            Kernel::Conv {
                g: pg,
                w: pw,
                r,
                y,
                act: pact,
                ..
            },
        ) = (st.kernel, next.kernel)
        else {
            unreachable!("checked above");
        };
        let mut reads = vec![x];
        reads.extend(r);
        let info = StepInfo {
            node: format!("{} + {}", st.info.node, next.info.node),
            op_type: "FusedConv".into(),
            kernel: format!("{} + {}", st.info.kernel, next.info.kernel),
            shape: next.info.shape.clone(),
            flops: st.info.flops + next.info.flops,
            bytes: 0,
        };
        out.push(Step {
            info,
            kernel: Kernel::DwPw {
                dg,
                dw,
                dact,
                pw,
                pact,
                x,
                r,
                y,
                co: pg.co,
            },
            reads,
            writes: vec![y],
            // Not over the depthwise input (a residual of the block's input
            // when there is no expansion): later bands still read it.
            inplace: next.inplace.into_iter().filter(|&v| v != x).collect(),
        });
    }
    out
}

/// Decides in-place outputs and assigns arena offsets. Returns the arena length.
fn plan_memory(vals: &mut [Val], steps: &mut [Step], outputs: &[usize]) -> usize {
    let n = vals.len();
    let end = steps.len();
    let root = |vals: &[Val], v: usize| vals[v].alias.unwrap_or(v);
    // Last read of each value, then per root (its aliases' reads count).
    let mut last = vec![None::<usize>; n];
    for (si, s) in steps.iter().enumerate() {
        for &v in &s.reads {
            last[v] = Some(si);
        }
    }
    for &o in outputs {
        last[o] = Some(end);
    }
    let mut first = vec![None::<usize>; n];
    for (si, s) in steps.iter().enumerate() {
        for &v in &s.writes {
            first[v].get_or_insert(si);
        }
    }
    let mut root_last = vec![None::<usize>; n];
    for v in 0..n {
        let r = root(vals, v);
        root_last[r] = root_last[r].max(last[v]).max(first[v]);
    }
    // In place: an output takes over an input buffer whose last read is this step.
    for (si, s) in steps.iter().enumerate() {
        let [y] = s.writes[..] else { continue };
        if !matches!(vals[y].loc, Loc::Arena(_)) || vals[y].alias.is_some() {
            continue;
        }
        for &c in &s.inplace {
            let r = root(vals, c);
            if matches!(vals[r].loc, Loc::Arena(_))
                && root_last[r] == Some(si)
                && vals[r].len() == vals[y].len()
                && vals[r].words() == vals[y].words()
                && is8(vals[r].dtype) == is8(vals[y].dtype)
                && vals[r].layout == vals[y].layout
                && r != y
            {
                vals[y].alias = Some(r);
                // Aliases of y (reshapes made later) were recorded with root y:
                // move them to r.
                for v in vals.iter_mut() {
                    if v.alias == Some(y) {
                        v.alias = Some(r);
                    }
                }
                root_last[r] = root_last[r].max(root_last[y]).max(last[y]);
                break;
            }
        }
    }
    // Recompute per-root lifetimes after aliasing.
    let mut lo = vec![usize::MAX; n];
    let mut hi = vec![0usize; n];
    for v in 0..n {
        let r = root(vals, v);
        if let Some(f) = first[v] {
            lo[r] = lo[r].min(f);
            hi[r] = hi[r].max(f);
        }
        if let Some(l) = last[v] {
            hi[r] = hi[r].max(l);
        }
    }
    let roots: Vec<usize> = (0..n)
        .filter(|&v| vals[v].alias.is_none() && matches!(vals[v].loc, Loc::Arena(_)))
        .filter(|&v| lo[v] != usize::MAX || hi[v] != 0 || last[v].is_some())
        .collect();
    let bufs: Vec<memory::Buffer> = roots
        .iter()
        .map(|&r| memory::Buffer {
            len: vals[r].words().max(1),
            first: if lo[r] == usize::MAX { 0 } else { lo[r] },
            last: hi[r].max(if lo[r] == usize::MAX { 0 } else { lo[r] }),
        })
        .collect();
    let (offs, total) = memory::plan_offsets(&bufs);
    for (&r, &o) in roots.iter().zip(&offs) {
        vals[r].loc = Loc::Arena(o);
    }
    for v in 0..n {
        if let Some(r) = vals[v].alias {
            vals[v].loc = vals[r].loc;
        }
    }
    total
}
