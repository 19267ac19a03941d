//! Fused ops of kiln's own domain `"kiln"`: `FusedConv`, `FusedGemm` and
//! `FusedMatMul`, and their lowering back to standard ONNX ([`lower_fused`]).
//!
//! The graph optimizer folds BatchNormalization, activations and residual
//! `Add`s into convolutions and matrix products; the results are these ops.
//! They exist only inside kiln: every exported file is lowered back to
//! default-domain ONNX first, so no file kiln writes names the `"kiln"` domain.
//! This comment is the reference for their meaning.
//!
//! # Ops (domain `"kiln"`, version 1)
//!
//! ## `FusedConv`
//!
//! Inputs: `X`, `W`, `B` (optional), `Z` (optional). Attributes: every
//! attribute of ONNX `Conv` (`auto_pad`, `dilations`, `group`,
//! `kernel_shape`, `pads`, `strides`, with Conv's defaults and per-opset
//! meaning at the model's default-domain opset) plus `activation` and
//! `activation_params` (below). Output `Y`:
//!
//! ```text
//! Y = act(Conv(X, W, B) + Z)
//! ```
//!
//! `Z` must have exactly `Y`'s shape and element type (no broadcasting): it is
//! the residual `Add` of a skip connection, added before the activation. This
//! is the meaning of ONNX Runtime's contrib op `com.microsoft.FusedConv`
//! (its fourth input "Z" is added to the convolution before the activation;
//! <https://github.com/microsoft/onnxruntime/blob/main/docs/ContribOperators.md#com.microsoft.FusedConv>),
//! whose attribute names kiln reuses. kiln additionally accepts the
//! activations `HardSwish` and `SiLU`, which ORT's op does not.
//!
//! ## `FusedGemm`
//!
//! Inputs `A`, `B`, `C` (optional) and attributes `alpha`, `beta`, `transA`,
//! `transB` of ONNX `Gemm`, plus `activation` / `activation_params`:
//!
//! ```text
//! Y = act(alpha * A' * B' + beta * C)
//! ```
//!
//! ## `FusedMatMul`
//!
//! Inputs `A`, `B` of ONNX `MatMul` (NumPy `matmul` semantics, batched and
//! broadcast), plus `activation` / `activation_params`:
//!
//! ```text
//! Y = act(MatMul(A, B))
//! ```
//!
//! Not to be confused with ONNX Runtime's `com.microsoft.FusedMatMul`, which
//! is a MatMul with `alpha` scaling and transposition attributes (`transA`,
//! `transB`, `transBatchA`, `transBatchB`) and no activation; kiln's op is a
//! plain MatMul with an activation epilogue. With `activation` empty, integer
//! inputs behave as `MatMul`; any other activation needs float inputs.
//!
//! ## Activations
//!
//! `activation` (STRING, default `""`) and `activation_params` (FLOATS,
//! default empty) select the epilogue `act`, applied element-wise. The number
//! of params must be exactly as listed. Semantics are those of the ONNX ops
//! (<https://onnx.ai/onnx/operators/>), NaN propagating:
//!
//! | `activation`    | `activation_params` | `act(x)`                                       | ONNX op |
//! |-----------------|---------------------|------------------------------------------------|---------|
//! | `""`            | `[]`                | `x`                                            | none    |
//! | `"Relu"`        | `[]`                | `max(x, 0)`                                    | `Relu` |
//! | `"Clip"`        | `[min, max]`        | `min(max(x, min), max)`                        | `Clip` (use `±inf` for no bound) |
//! | `"LeakyRelu"`   | `[alpha]`           | `x < 0 ? alpha * x : x`                        | `LeakyRelu` |
//! | `"HardSigmoid"` | `[alpha, beta]`     | `max(0, min(1, alpha * x + beta))`             | `HardSigmoid` |
//! | `"HardSwish"`   | `[]`                | `x * max(0, min(1, x / 6 + 0.5))`              | `HardSwish` (opset 14) |
//! | `"Sigmoid"`     | `[]`                | `1 / (1 + exp(-x))`                            | `Sigmoid` |
//! | `"SiLU"`        | `[]`                | `x * sigmoid(x)`                               | `Sigmoid` then `Mul` (a.k.a. Swish) |
//!
//! Element types: float and float16. The reference evaluation delegates to
//! the standard op's evaluation, then adds `Z` and applies the activation in
//! f32 (float16 results are rounded once at the end, so they can be slightly
//! more accurate than the unfused chain, which rounds after every op).
//!
//! # Lowering
//!
//! [`lower_fused`] rewrites each fused node into the standard chain it stands
//! for, with deterministic names (see its documentation), so exporting,
//! re-importing, re-fusing and re-exporting gives byte-identical files.

use super::activation::sigmoid;
use super::conv::{f32_data, from_f32};
use super::{InferInput, OpCtx, OpDef};
use crate::{
    f16, infer, Attribute, DType, Dim, ErrorKind, IrError, Model, Node, Result, Tensor, TensorData, ValueType,
};
use std::collections::{HashMap, HashSet};

/// The domain of kiln's own ops.
pub const DOMAIN: &str = "kiln";

/// Name of the activation attribute (STRING).
pub const ATTR_ACTIVATION: &str = "activation";
/// Name of the activation parameters attribute (FLOATS).
pub const ATTR_ACTIVATION_PARAMS: &str = "activation_params";

/// Ops of this family.
pub(crate) const OPS: &[OpDef] = &[
    OpDef {
        op_type: "FusedConv",
        domain: DOMAIN,
        since: 1,
        infer: infer_fused_conv,
        eval: eval_fused_conv,
    },
    OpDef {
        op_type: "FusedGemm",
        domain: DOMAIN,
        since: 1,
        infer: infer_fused_gemm,
        eval: eval_fused_gemm,
    },
    OpDef {
        op_type: "FusedMatMul",
        domain: DOMAIN,
        since: 1,
        infer: infer_fused_matmul,
        eval: eval_fused_matmul,
    },
];

// ---------------------------------------------------------------------------
// Activations.

/// The activation epilogue of a fused op (attribute `activation` with its
/// `activation_params`); see the module documentation for the formulas.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    /// `""`: identity.
    None,
    /// `"Relu"`: `max(x, 0)`.
    Relu,
    /// `"Clip"`: `min(max(x, min), max)`; when `min > max` every value is `max`.
    Clip {
        /// Lower bound (`-inf` for none).
        min: f32,
        /// Upper bound (`inf` for none).
        max: f32,
    },
    /// `"LeakyRelu"`: `x < 0 ? alpha * x : x`.
    LeakyRelu {
        /// Slope for negative inputs.
        alpha: f32,
    },
    /// `"HardSigmoid"`: `max(0, min(1, alpha * x + beta))`.
    HardSigmoid {
        /// Slope.
        alpha: f32,
        /// Offset.
        beta: f32,
    },
    /// `"HardSwish"`: `x * max(0, min(1, x / 6 + 0.5))`.
    HardSwish,
    /// `"Sigmoid"`: `1 / (1 + exp(-x))`.
    Sigmoid,
    /// `"SiLU"`: `x * sigmoid(x)`.
    SiLU,
}

/// `min(max(a, lo), hi)` keeping NaN; when `lo > hi` every value becomes `hi`
/// (the same rule as the `Clip` reference eval).
fn clip_f(a: f32, lo: f32, hi: f32) -> f32 {
    let a = if a < lo { lo } else { a };
    if a > hi {
        hi
    } else {
        a
    }
}

impl Activation {
    /// The accepted values of the `activation` attribute.
    pub const NAMES: [&'static str; 8] = [
        "",
        "Relu",
        "Clip",
        "LeakyRelu",
        "HardSigmoid",
        "HardSwish",
        "Sigmoid",
        "SiLU",
    ];

    /// The activation named `kind` with `params`.
    ///
    /// Errors (`InvalidAttribute`, with the attribute set but no node): an
    /// unknown name (attribute `activation`) or the wrong number of params
    /// (attribute `activation_params`).
    pub fn from_parts(kind: &str, params: &[f32]) -> Result<Activation> {
        let want = match kind {
            "" | "Relu" | "HardSwish" | "Sigmoid" | "SiLU" => 0,
            "LeakyRelu" => 1,
            "Clip" | "HardSigmoid" => 2,
            other => {
                return Err(IrError::new(
                    ErrorKind::InvalidAttribute,
                    format!(
                        "unknown activation '{other}' (expected one of {})",
                        Self::NAMES.map(|n| format!("'{n}'")).join(", ")
                    ),
                )
                .with_attr(ATTR_ACTIVATION))
            }
        };
        if params.len() != want {
            let what = if kind.is_empty() { "no activation" } else { kind };
            return Err(IrError::new(
                ErrorKind::InvalidAttribute,
                format!("{what} takes {want} parameters, got {}", params.len()),
            )
            .with_attr(ATTR_ACTIVATION_PARAMS));
        }
        Ok(match kind {
            "Relu" => Activation::Relu,
            "Clip" => Activation::Clip {
                min: params[0],
                max: params[1],
            },
            "LeakyRelu" => Activation::LeakyRelu { alpha: params[0] },
            "HardSigmoid" => Activation::HardSigmoid {
                alpha: params[0],
                beta: params[1],
            },
            "HardSwish" => Activation::HardSwish,
            "Sigmoid" => Activation::Sigmoid,
            "SiLU" => Activation::SiLU,
            _ => Activation::None,
        })
    }

    /// The activation of a fused node, from its `activation` and
    /// `activation_params` attributes (absent = none / no params).
    ///
    /// Errors (`InvalidAttribute`) name the node, its op and the attribute.
    pub fn parse(node: &Node) -> Result<Activation> {
        let kind = node.attr_string(ATTR_ACTIVATION, "")?;
        let params = node.attr_floats_opt(ATTR_ACTIVATION_PARAMS)?.unwrap_or_default();
        Activation::from_parts(&kind, &params).map_err(|e| e.at_node(&node.name, &node.op_type))
    }

    /// The value of the `activation` attribute.
    pub fn name(self) -> &'static str {
        match self {
            Activation::None => "",
            Activation::Relu => "Relu",
            Activation::Clip { .. } => "Clip",
            Activation::LeakyRelu { .. } => "LeakyRelu",
            Activation::HardSigmoid { .. } => "HardSigmoid",
            Activation::HardSwish => "HardSwish",
            Activation::Sigmoid => "Sigmoid",
            Activation::SiLU => "SiLU",
        }
    }

    /// The value of the `activation_params` attribute.
    pub fn params(self) -> Vec<f32> {
        match self {
            Activation::Clip { min, max } => vec![min, max],
            Activation::LeakyRelu { alpha } => vec![alpha],
            Activation::HardSigmoid { alpha, beta } => vec![alpha, beta],
            _ => vec![],
        }
    }

    /// True for the identity.
    pub fn is_none(self) -> bool {
        self == Activation::None
    }

    /// Writes this activation into `node`'s attributes (canonical form:
    /// both attributes are removed for [`Activation::None`], and
    /// `activation_params` is left out when there are no params).
    pub fn write_attrs(self, node: &mut Node) {
        node.attrs.remove(ATTR_ACTIVATION);
        node.attrs.remove(ATTR_ACTIVATION_PARAMS);
        if self.is_none() {
            return;
        }
        node.attrs.insert(
            ATTR_ACTIVATION.to_string(),
            Attribute::String(self.name().as_bytes().to_vec()),
        );
        let p = self.params();
        if !p.is_empty() {
            node.attrs
                .insert(ATTR_ACTIVATION_PARAMS.to_string(), Attribute::Floats(p));
        }
    }

    /// The activation of one value.
    #[inline]
    pub fn eval(self, x: f32) -> f32 {
        match self {
            Activation::None => x,
            Activation::Relu => {
                if x < 0.0 {
                    0.0
                } else {
                    x
                }
            }
            Activation::Clip { min, max } => clip_f(x, min, max),
            Activation::LeakyRelu { alpha } => {
                if x < 0.0 {
                    alpha * x
                } else {
                    x
                }
            }
            Activation::HardSigmoid { alpha, beta } => clip_f(alpha * x + beta, 0.0, 1.0),
            Activation::HardSwish => x * clip_f(x / 6.0 + 0.5, 0.0, 1.0),
            Activation::Sigmoid => sigmoid(x),
            Activation::SiLU => x * sigmoid(x),
        }
    }

    /// Applies the activation in place.
    pub fn apply(self, data: &mut [f32]) {
        if self.is_none() {
            return;
        }
        for v in data {
            *v = self.eval(*v);
        }
    }
}

/// Applies the activation `kind` with `params` (the values of the
/// `activation` / `activation_params` attributes) to `data` in place.
///
/// Errors (`InvalidAttribute`, attribute set): as [`Activation::from_parts`].
pub fn apply_activation(kind: &str, params: &[f32], data: &mut [f32]) -> Result<()> {
    Activation::from_parts(kind, params)?.apply(data);
    Ok(())
}

// ---------------------------------------------------------------------------
// Inference and evaluation.

/// The standard op a fused op delegates to.
fn base_def(ctx: &OpCtx, op_type: &str) -> Result<&'static OpDef> {
    super::lookup(op_type, "")
        .ok_or_else(|| ctx.err(ErrorKind::Internal, format!("base op {op_type} is missing")))
}

/// Errors if the node has more than `max` inputs.
fn check_arity(ctx: &OpCtx, max: usize) -> Result<()> {
    let n = ctx.node.inputs.len();
    if n > max {
        return Err(ctx.err(
            ErrorKind::InvalidModel,
            format!("{} takes at most {max} inputs, got {n}", ctx.node.op_type),
        ));
    }
    Ok(())
}

/// The first `n` entries of `inputs` (fewer if there are fewer).
fn head<T>(inputs: &[T], n: usize) -> &[T] {
    &inputs[..inputs.len().min(n)]
}

/// Checks the epilogue against the base op's output type and refines it
/// with `Z`'s known dims.
fn infer_epilogue(
    ctx: &OpCtx,
    mut outs: Vec<ValueType>,
    z: Option<&InferInput>,
    act: Activation,
) -> Result<Vec<ValueType>> {
    let Some(y) = outs.first_mut() else {
        return Err(ctx.err(ErrorKind::Internal, "base op inferred no output"));
    };
    if let Some(z) = z {
        if z.ty.dtype != y.dtype {
            return Err(ctx.err(
                ErrorKind::TypeMismatch,
                format!("Z is {}, the output is {}", z.ty.dtype, y.dtype),
            ));
        }
        if let (Some(yd), Some(zd)) = (&y.shape, &z.ty.shape) {
            let differ = yd.len() != zd.len()
                || yd
                    .iter()
                    .zip(zd)
                    .any(|(a, b)| matches!((a.known(), b.known()), (Some(x), Some(w)) if x != w));
            if differ {
                return Err(ctx.err(
                    ErrorKind::ShapeMismatch,
                    format!(
                        "Z has shape {}, the output has shape {} (Z must match exactly)",
                        crate::shape::shape_to_string(&z.ty.shape),
                        crate::shape::shape_to_string(&y.shape),
                    ),
                ));
            }
        }
        match (&mut y.shape, &z.ty.shape) {
            (Some(yd), Some(zd)) => {
                for (a, b) in yd.iter_mut().zip(zd) {
                    if let (None, Some(w)) = (a.known(), b.known()) {
                        *a = Dim::Known(w);
                    }
                }
            }
            (y_shape @ None, Some(zd)) => *y_shape = Some(zd.clone()),
            _ => {}
        }
    }
    if !act.is_none() && !y.dtype.is_float() {
        return Err(ctx.err(
            ErrorKind::TypeMismatch,
            format!(
                "activation {} needs float or float16, got {}",
                act.name(),
                y.dtype
            ),
        ));
    }
    Ok(outs)
}

/// `act(y + z)` on float data (f16 through f32).
fn eval_epilogue(ctx: &OpCtx, y: Tensor, z: Option<&Tensor>, act: Activation) -> Result<Tensor> {
    if z.is_none() && act.is_none() {
        return Ok(y);
    }
    let dtype = y.dtype();
    let (shape, data) = y.into_parts();
    let mut v: Vec<f32> = match data {
        TensorData::F32(v) => v,
        TensorData::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
        _ => {
            return Err(ctx.err(
                ErrorKind::TypeMismatch,
                format!(
                    "activation '{}' and input Z need float or float16, got {dtype}",
                    act.name()
                ),
            ))
        }
    };
    if let Some(z) = z {
        if z.dtype() != dtype {
            return Err(ctx.err(
                ErrorKind::TypeMismatch,
                format!("Z is {}, the output is {dtype}", z.dtype()),
            ));
        }
        if z.shape() != shape.as_slice() {
            return Err(ctx.err(
                ErrorKind::ShapeMismatch,
                format!(
                    "Z has shape {:?}, the output has shape {shape:?} (Z must match exactly)",
                    z.shape()
                ),
            ));
        }
        let zv = f32_data(ctx, z, "input Z")?;
        for (a, b) in v.iter_mut().zip(zv.iter()) {
            *a += *b;
        }
    }
    act.apply(&mut v);
    from_f32(dtype, shape, v)
}

fn first_output(ctx: &OpCtx, outs: Vec<Tensor>) -> Result<Tensor> {
    outs.into_iter()
        .next()
        .ok_or_else(|| ctx.err(ErrorKind::Internal, "base op produced no output"))
}

fn infer_fused_conv(ctx: &OpCtx, inputs: &[Option<&InferInput>]) -> Result<Vec<ValueType>> {
    check_arity(ctx, 4)?;
    let act = Activation::parse(ctx.node)?;
    let outs = (base_def(ctx, "Conv")?.infer)(ctx, head(inputs, 3))?;
    infer_epilogue(ctx, outs, ctx.opt_infer_input(inputs, 3), act)
}

fn eval_fused_conv(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    check_arity(ctx, 4)?;
    let act = Activation::parse(ctx.node)?;
    let y = first_output(ctx, (base_def(ctx, "Conv")?.eval)(ctx, head(inputs, 3))?)?;
    Ok(vec![eval_epilogue(ctx, y, ctx.opt_input(inputs, 3), act)?])
}

fn infer_fused_gemm(ctx: &OpCtx, inputs: &[Option<&InferInput>]) -> Result<Vec<ValueType>> {
    check_arity(ctx, 3)?;
    let act = Activation::parse(ctx.node)?;
    let outs = (base_def(ctx, "Gemm")?.infer)(ctx, inputs)?;
    infer_epilogue(ctx, outs, None, act)
}

fn eval_fused_gemm(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    check_arity(ctx, 3)?;
    let act = Activation::parse(ctx.node)?;
    let y = first_output(ctx, (base_def(ctx, "Gemm")?.eval)(ctx, inputs)?)?;
    Ok(vec![eval_epilogue(ctx, y, None, act)?])
}

fn infer_fused_matmul(ctx: &OpCtx, inputs: &[Option<&InferInput>]) -> Result<Vec<ValueType>> {
    check_arity(ctx, 2)?;
    let act = Activation::parse(ctx.node)?;
    let outs = (base_def(ctx, "MatMul")?.infer)(ctx, inputs)?;
    infer_epilogue(ctx, outs, None, act)
}

fn eval_fused_matmul(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    check_arity(ctx, 2)?;
    let act = Activation::parse(ctx.node)?;
    let y = first_output(ctx, (base_def(ctx, "MatMul")?.eval)(ctx, inputs)?)?;
    Ok(vec![eval_epilogue(ctx, y, None, act)?])
}

// ---------------------------------------------------------------------------
// Lowering to standard ONNX.

/// True if `model` has a node of the `"kiln"` domain or imports that domain,
/// i.e. if [`lower_fused`] would change it.
pub fn has_kiln_ops(model: &Model) -> bool {
    model.graph.nodes.iter().any(|n| n.domain == DOMAIN) || model.opsets.iter().any(|o| o.domain == DOMAIN)
}

/// Hands out names that collide with no existing one: `base`, else
/// `base_1`, `base_2`...
#[derive(Debug, Default)]
struct Namer {
    taken: HashSet<String>,
}

impl Namer {
    fn fresh(&mut self, base: String) -> String {
        if self.taken.insert(base.clone()) {
            return base;
        }
        let mut k = 1u64;
        loop {
            let cand = format!("{base}_{k}");
            if self.taken.insert(cand.clone()) {
                return cand;
            }
            k += 1;
        }
    }
}

/// The element type of value `name`, from what the graph records.
fn recorded_dtype(g: &crate::Graph, name: &str) -> Option<DType> {
    if name.is_empty() {
        return None;
    }
    g.value_types
        .get(name)
        .map(|t| t.dtype)
        .or_else(|| g.initializers.get(name).map(|t| t.dtype()))
        .or_else(|| {
            g.inputs
                .iter()
                .chain(&g.outputs)
                .find(|v| v.name == name)
                .map(|v| v.ty.dtype)
        })
}

/// A scalar of `dtype` (float or float16; anything else gets float).
fn scalar_of(dtype: DType, v: f32) -> Tensor {
    match dtype {
        DType::F16 => Tensor::scalar(f16::from_f32(v)),
        _ => Tensor::scalar(v),
    }
}

/// Rewrites every `"kiln"`-domain node of `model` into standard ONNX nodes
/// and removes the `"kiln"` opset import; other nodes are left untouched.
///
/// Each fused node `n` with output `y` becomes, in its place:
///
/// - the base op (`Conv`, `Gemm` or `MatMul`) named `n`, with the fused
///   node's inputs (less `Z`) and attributes (less `activation` and
///   `activation_params`); it writes `y` itself when there is no epilogue,
///   else `y__conv` / `y__gemm` / `y__matmul`;
/// - for `FusedConv` with `Z`: `Add` named `n__add` computing
///   `<base output> + Z` into `y`, or into `y__add` when an activation follows;
/// - the activation, writing `y`: one node `n__act` (`Relu`, `Clip`,
///   `LeakyRelu`, `HardSigmoid`, `HardSwish`, `Sigmoid`), or two nodes
///   `n__sig` (value `y__sig`) then `n__mul` for `SiLU` (`Sigmoid`, then
///   `Mul(x, y__sig)`) and for `HardSwish` below opset 14
///   (`HardSigmoid(alpha = 1/6, beta = 0.5)`, then `Mul`). `Clip` takes its
///   bounds as new scalar initializers `n__min` / `n__max` of the output's
///   element type from opset 11, as `min` / `max` attributes before.
///
/// A generated name equal to an existing value name (or node name, for node
/// names) gets a counter appended: `y__conv_1`, `y__conv_2`... The names thus
/// depend only on the graph, so lowering is deterministic. The types of the
/// new intermediate values in `graph.value_types` are copied from `y`'s when
/// known. The element type of Clip bounds comes from the recorded types of
/// `y` or the first input, else from shape inference, else float.
///
/// Errors: a `"kiln"`-domain op without lowering (`UnsupportedOp`), a fused
/// node without output or with too many inputs (`InvalidModel`), bad
/// activation attributes (`InvalidAttribute`); all name the node.
pub fn lower_fused(model: &Model) -> Result<Model> {
    let mut m = model.clone();
    lower_fused_in_place(&mut m)?;
    Ok(m)
}

/// [`lower_fused`] without copying the model.
pub fn lower_fused_in_place(model: &mut Model) -> Result<()> {
    model.opsets.retain(|o| o.domain != DOMAIN);
    if !model.graph.nodes.iter().any(|n| n.domain == DOMAIN) {
        return Ok(());
    }
    let opset = model.opset();
    // Element types for Clip bounds the graph does not record: infer once.
    let needs_types = opset >= 11
        && model.graph.nodes.iter().any(|n| {
            n.domain == DOMAIN
                && matches!(Activation::parse(n), Ok(Activation::Clip { .. }))
                && n.outputs
                    .first()
                    .and_then(|o| recorded_dtype(&model.graph, o))
                    .is_none()
                && n.inputs
                    .first()
                    .and_then(|i| recorded_dtype(&model.graph, i))
                    .is_none()
        });
    let inferred: HashMap<String, ValueType> = if needs_types {
        let mut m = model.clone();
        match m.graph.topo_sort().and_then(|_| infer::infer_types(&mut m)) {
            Ok(_) => m.graph.value_types,
            Err(_) => HashMap::new(),
        }
    } else {
        HashMap::new()
    };

    let g = &mut model.graph;
    let mut values = Namer::default();
    values
        .taken
        .extend(g.inputs.iter().chain(&g.outputs).map(|v| v.name.clone()));
    values.taken.extend(g.initializers.keys().cloned());
    for n in &g.nodes {
        values.taken.extend(
            n.inputs
                .iter()
                .chain(&n.outputs)
                .filter(|s| !s.is_empty())
                .cloned(),
        );
    }
    let mut node_names = Namer::default();
    node_names.taken.extend(g.nodes.iter().map(|n| n.name.clone()));

    let old = std::mem::take(&mut g.nodes);
    let mut nodes = Vec::with_capacity(old.len());
    for node in old {
        if node.domain != DOMAIN {
            nodes.push(node);
            continue;
        }
        let dtype = node
            .outputs
            .first()
            .and_then(|o| recorded_dtype(g, o))
            .or_else(|| node.inputs.first().and_then(|i| recorded_dtype(g, i)))
            .or_else(|| {
                node.outputs
                    .first()
                    .and_then(|o| inferred.get(o))
                    .map(|t| t.dtype)
            })
            .unwrap_or(DType::F32);
        let mut cx = LowerCtx {
            opset,
            dtype,
            values: &mut values,
            node_names: &mut node_names,
            graph: g,
            out: &mut nodes,
        };
        cx.lower(node)?;
    }
    g.nodes = nodes;
    Ok(())
}

/// State of lowering one fused node.
struct LowerCtx<'a> {
    opset: i64,
    /// Element type of the fused node's output.
    dtype: DType,
    values: &'a mut Namer,
    node_names: &'a mut Namer,
    graph: &'a mut crate::Graph,
    out: &'a mut Vec<Node>,
}

impl LowerCtx<'_> {
    /// A fresh intermediate value `base`, typed like `ty` (or untyped).
    fn value(&mut self, base: String, ty: &Option<ValueType>) -> String {
        let name = self.values.fresh(base);
        match ty {
            Some(t) => {
                self.graph.value_types.insert(name.clone(), t.clone());
            }
            None => {
                self.graph.value_types.remove(&name);
            }
        }
        name
    }

    fn push(&mut self, base_name: String, op: &str, inputs: Vec<String>, output: String) -> &mut Node {
        let name = self.node_names.fresh(base_name);
        self.out.push(Node {
            name,
            op_type: op.to_string(),
            domain: String::new(),
            inputs,
            outputs: vec![output],
            attrs: Default::default(),
        });
        self.out.last_mut().expect("just pushed")
    }

    fn lower(&mut self, node: Node) -> Result<()> {
        let (base_op, suffix, max_inputs) = match node.op_type.as_str() {
            "FusedConv" => ("Conv", "conv", 4),
            "FusedGemm" => ("Gemm", "gemm", 3),
            "FusedMatMul" => ("MatMul", "matmul", 2),
            other => {
                return Err(node.err(
                    ErrorKind::UnsupportedOp,
                    format!("op '{DOMAIN}::{other}' has no lowering to standard ONNX"),
                ))
            }
        };
        if node.inputs.len() > max_inputs {
            return Err(node.err(
                ErrorKind::InvalidModel,
                format!(
                    "{} takes at most {max_inputs} inputs, got {}",
                    node.op_type,
                    node.inputs.len()
                ),
            ));
        }
        let act = Activation::parse(&node)?;
        let y = match node.outputs.as_slice() {
            [y] if !y.is_empty() => y.clone(),
            _ => {
                return Err(node.err(
                    ErrorKind::InvalidModel,
                    "a fused node must have exactly one, named, output",
                ))
            }
        };
        let z = if base_op == "Conv" {
            node.inputs.get(3).filter(|s| !s.is_empty()).cloned()
        } else {
            None
        };
        let y_ty = self.graph.value_types.get(&y).cloned();
        let name = node.name.clone();

        // The base op: the fused node's name, inputs and attributes.
        let mut inputs: Vec<String> = node.inputs.iter().take(3).cloned().collect();
        while inputs.last().is_some_and(|s| s.is_empty()) {
            inputs.pop();
        }
        let mut attrs = node.attrs;
        attrs.remove(ATTR_ACTIVATION);
        attrs.remove(ATTR_ACTIVATION_PARAMS);
        let has_epilogue = z.is_some() || !act.is_none();
        let base_out = if has_epilogue {
            self.value(format!("{y}__{suffix}"), &y_ty)
        } else {
            y.clone()
        };
        // The fused node's own name is already taken by itself: keep it.
        self.out.push(Node {
            name: name.clone(),
            op_type: base_op.to_string(),
            domain: String::new(),
            inputs,
            outputs: vec![base_out.clone()],
            attrs,
        });
        let mut cur = base_out;

        if let Some(z) = z {
            let add_out = if act.is_none() {
                y.clone()
            } else {
                self.value(format!("{y}__add"), &y_ty)
            };
            self.push(format!("{name}__add"), "Add", vec![cur, z], add_out.clone());
            cur = add_out;
        }

        match act {
            Activation::None => {}
            Activation::Relu => {
                self.push(format!("{name}__act"), "Relu", vec![cur], y);
            }
            Activation::Sigmoid => {
                self.push(format!("{name}__act"), "Sigmoid", vec![cur], y);
            }
            Activation::HardSwish if self.opset >= 14 => {
                self.push(format!("{name}__act"), "HardSwish", vec![cur], y);
            }
            Activation::LeakyRelu { alpha } => {
                self.push(format!("{name}__act"), "LeakyRelu", vec![cur], y)
                    .attrs
                    .insert("alpha".into(), Attribute::Float(alpha));
            }
            Activation::HardSigmoid { alpha, beta } => {
                let n = self.push(format!("{name}__act"), "HardSigmoid", vec![cur], y);
                n.attrs.insert("alpha".into(), Attribute::Float(alpha));
                n.attrs.insert("beta".into(), Attribute::Float(beta));
            }
            Activation::Clip { min, max } => {
                if self.opset >= 11 {
                    let lo = self.values.fresh(format!("{name}__min"));
                    let hi = self.values.fresh(format!("{name}__max"));
                    self.graph
                        .initializers
                        .insert(lo.clone(), scalar_of(self.dtype, min));
                    self.graph
                        .initializers
                        .insert(hi.clone(), scalar_of(self.dtype, max));
                    self.push(format!("{name}__act"), "Clip", vec![cur, lo, hi], y);
                } else {
                    let n = self.push(format!("{name}__act"), "Clip", vec![cur], y);
                    n.attrs.insert("min".into(), Attribute::Float(min));
                    n.attrs.insert("max".into(), Attribute::Float(max));
                }
            }
            Activation::HardSwish | Activation::SiLU => {
                let sig = self.value(format!("{y}__sig"), &y_ty);
                if act == Activation::SiLU {
                    self.push(format!("{name}__sig"), "Sigmoid", vec![cur.clone()], sig.clone());
                } else {
                    // HardSwish(x) = x * HardSigmoid(x; 1/6, 0.5) before opset 14.
                    let n = self.push(
                        format!("{name}__sig"),
                        "HardSigmoid",
                        vec![cur.clone()],
                        sig.clone(),
                    );
                    n.attrs.insert("alpha".into(), Attribute::Float(1.0 / 6.0));
                    n.attrs.insert("beta".into(), Attribute::Float(0.5));
                }
                self.push(format!("{name}__mul"), "Mul", vec![cur, sig], y);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::eval_node;
    use crate::{Graph, OpsetImport, ValueInfo};
    use std::collections::BTreeMap;

    fn t(shape: &[usize], v: Vec<f32>) -> Tensor {
        Tensor::from_vec(shape.to_vec(), v).unwrap()
    }
    /// Deterministic pseudo-random values in [-2, 2).
    fn rnd(seed: u64, n: usize) -> Vec<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
            })
            .collect()
    }
    fn rt(seed: u64, shape: &[usize]) -> Tensor {
        t(shape, rnd(seed, shape.iter().product()))
    }
    fn close(a: &[f32], b: &[f32], tol: f32) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!(
                (x - y).abs() <= tol * (1.0 + y.abs()),
                "{x} vs {y}\n{a:?}\nvs\n{b:?}"
            );
        }
    }
    fn fused(op: &str, inputs: &[&str], act: Activation) -> Node {
        let mut n = Node::new("f", op, inputs, &["y"]);
        n.domain = DOMAIN.into();
        act.write_attrs(&mut n);
        n
    }
    fn eval1(node: &Node, opset: i64, ins: &[Option<&Tensor>]) -> Result<Tensor> {
        Ok(eval_node(node, opset, ins)?.remove(0))
    }
    /// The standard activation chain, with the reference evals.
    fn standard_act(act: Activation, x: &Tensor, opset: i64) -> Tensor {
        let n = |op: &str| Node::new("a", op, &["x"], &["y"]);
        match act {
            Activation::None => x.clone(),
            Activation::Relu => eval1(&n("Relu"), opset, &[Some(x)]).unwrap(),
            Activation::Sigmoid => eval1(&n("Sigmoid"), opset, &[Some(x)]).unwrap(),
            Activation::HardSwish => eval1(&n("HardSwish"), opset, &[Some(x)]).unwrap(),
            Activation::Clip { min, max } => {
                let (lo, hi) = (Tensor::scalar(min), Tensor::scalar(max));
                eval1(&n("Clip"), opset, &[Some(x), Some(&lo), Some(&hi)]).unwrap()
            }
            Activation::LeakyRelu { alpha } => eval1(
                &n("LeakyRelu").with_attr("alpha", Attribute::Float(alpha)),
                opset,
                &[Some(x)],
            )
            .unwrap(),
            Activation::HardSigmoid { alpha, beta } => eval1(
                &n("HardSigmoid")
                    .with_attr("alpha", Attribute::Float(alpha))
                    .with_attr("beta", Attribute::Float(beta)),
                opset,
                &[Some(x)],
            )
            .unwrap(),
            Activation::SiLU => {
                let s = eval1(&n("Sigmoid"), opset, &[Some(x)]).unwrap();
                eval1(
                    &Node::new("m", "Mul", &["x", "s"], &["y"]),
                    opset,
                    &[Some(x), Some(&s)],
                )
                .unwrap()
            }
        }
    }
    fn all_acts() -> Vec<Activation> {
        vec![
            Activation::None,
            Activation::Relu,
            Activation::Clip { min: -0.5, max: 1.0 },
            Activation::LeakyRelu { alpha: 0.1 },
            Activation::HardSigmoid {
                alpha: 0.3,
                beta: 0.4,
            },
            Activation::HardSwish,
            Activation::Sigmoid,
            Activation::SiLU,
        ]
    }
    fn conv_attrs(n: Node) -> Node {
        n.with_attr("pads", Attribute::Ints(vec![1, 1, 1, 1]))
            .with_attr("strides", Attribute::Ints(vec![2, 1]))
    }

    #[test]
    fn activation_parse_roundtrip_and_names() {
        for act in all_acts() {
            let n = fused("FusedConv", &["x", "w"], act);
            assert_eq!(Activation::parse(&n).unwrap(), act);
            assert_eq!(Activation::from_parts(act.name(), &act.params()).unwrap(), act);
            assert!(Activation::NAMES.contains(&act.name()));
        }
        // None writes no attributes at all.
        let n = fused("FusedConv", &["x", "w"], Activation::None);
        assert!(n.attrs.is_empty());
        // The one-shot helper.
        let mut v = vec![-1.0, 0.5, 3.0, f32::NAN];
        apply_activation("Clip", &[0.0, 1.0], &mut v).unwrap();
        assert_eq!(&v[..3], &[0.0, 0.5, 1.0]);
        assert!(v[3].is_nan());
    }

    #[test]
    fn fused_conv_each_activation_matches_standard_chain() {
        let x = rt(1, &[2, 3, 5, 4]);
        let w = rt(2, &[4, 3, 3, 3]);
        let b = rt(3, &[4]);
        let conv = conv_attrs(Node::new("c", "Conv", &["x", "w", "b"], &["y"]));
        let base = eval1(&conv, 17, &[Some(&x), Some(&w), Some(&b)]).unwrap();
        for act in all_acts() {
            let f = conv_attrs(fused("FusedConv", &["x", "w", "b"], act));
            let got = eval1(&f, 17, &[Some(&x), Some(&w), Some(&b)]).unwrap();
            let want = standard_act(act, &base, 17);
            assert_eq!(got.shape(), want.shape(), "{act:?}");
            close(&got.to_f32_vec(), &want.to_f32_vec(), 1e-6);
        }
    }

    #[test]
    fn fused_conv_with_z_is_add_before_activation() {
        let x = rt(4, &[1, 2, 4, 4]);
        let w = rt(5, &[3, 2, 3, 3]);
        let z = rt(6, &[1, 3, 4, 4]);
        let conv = conv_attrs(Node::new("c", "Conv", &["x", "w"], &["y"]))
            .with_attr("strides", Attribute::Ints(vec![1, 1]));
        let base = eval1(&conv, 13, &[Some(&x), Some(&w)]).unwrap();
        let added = eval1(
            &Node::new("a", "Add", &["a", "b"], &["y"]),
            13,
            &[Some(&base), Some(&z)],
        )
        .unwrap();
        for act in [Activation::None, Activation::Relu, Activation::SiLU] {
            // B omitted, Z given.
            let f = conv_attrs(fused("FusedConv", &["x", "w", "", "z"], act))
                .with_attr("strides", Attribute::Ints(vec![1, 1]));
            let got = eval1(&f, 13, &[Some(&x), Some(&w), None, Some(&z)]).unwrap();
            let want = standard_act(act, &added, 13);
            close(&got.to_f32_vec(), &want.to_f32_vec(), 1e-6);
        }
        // Z must match the output exactly (no broadcasting).
        let f = conv_attrs(fused("FusedConv", &["x", "w", "", "z"], Activation::Relu))
            .with_attr("strides", Attribute::Ints(vec![1, 1]));
        let zb = rt(7, &[1, 3, 1, 1]);
        let e = eval1(&f, 13, &[Some(&x), Some(&w), None, Some(&zb)]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::ShapeMismatch);
        assert_eq!(e.node.as_deref(), Some("f"));
    }

    #[test]
    fn fused_conv_f16() {
        let x = rt(8, &[1, 2, 3, 3]).cast(DType::F16);
        let w = rt(9, &[2, 2, 1, 1]).cast(DType::F16);
        let z = rt(10, &[1, 2, 3, 3]).cast(DType::F16);
        let f = fused("FusedConv", &["x", "w", "", "z"], Activation::HardSwish);
        let got = eval1(&f, 17, &[Some(&x), Some(&w), None, Some(&z)]).unwrap();
        assert_eq!(got.dtype(), DType::F16);
        let conv = Node::new("c", "Conv", &["x", "w"], &["y"]);
        let base = eval1(&conv, 17, &[Some(&x.cast(DType::F32)), Some(&w.cast(DType::F32))]).unwrap();
        let mut want = base.to_f32_vec();
        for (a, b) in want.iter_mut().zip(z.to_f32_vec()) {
            *a = Activation::HardSwish.eval(*a + b);
        }
        close(&got.to_f32_vec(), &want, 2e-3);
    }

    #[test]
    fn fused_gemm_and_matmul_match_standard_chain() {
        let a = rt(11, &[3, 4]);
        let b = rt(12, &[5, 4]);
        let c = rt(13, &[5]);
        let gemm = Node::new("g", "Gemm", &["a", "b", "c"], &["y"])
            .with_attr("transB", Attribute::Int(1))
            .with_attr("alpha", Attribute::Float(0.5));
        let base = eval1(&gemm, 13, &[Some(&a), Some(&b), Some(&c)]).unwrap();
        for act in all_acts() {
            let f = fused("FusedGemm", &["a", "b", "c"], act)
                .with_attr("transB", Attribute::Int(1))
                .with_attr("alpha", Attribute::Float(0.5));
            let got = eval1(&f, 13, &[Some(&a), Some(&b), Some(&c)]).unwrap();
            close(
                &got.to_f32_vec(),
                &standard_act(act, &base, 14).to_f32_vec(),
                1e-6,
            );
        }
        let a = rt(14, &[2, 3, 4]);
        let b = rt(15, &[4, 6]);
        let base = eval1(
            &Node::new("m", "MatMul", &["a", "b"], &["y"]),
            13,
            &[Some(&a), Some(&b)],
        )
        .unwrap();
        for act in all_acts() {
            let f = fused("FusedMatMul", &["a", "b"], act);
            let got = eval1(&f, 13, &[Some(&a), Some(&b)]).unwrap();
            assert_eq!(got.shape(), &[2, 3, 6]);
            close(
                &got.to_f32_vec(),
                &standard_act(act, &base, 14).to_f32_vec(),
                1e-6,
            );
        }
        // Integer MatMul passes through without an activation, errors with one.
        let ai = Tensor::from_vec(vec![1, 2], vec![1i64, 2]).unwrap();
        let bi = Tensor::from_vec(vec![2, 1], vec![3i64, -4]).unwrap();
        let f = fused("FusedMatMul", &["a", "b"], Activation::None);
        assert_eq!(
            eval1(&f, 13, &[Some(&ai), Some(&bi)])
                .unwrap()
                .to_i64_vec()
                .unwrap(),
            vec![-5]
        );
        let f = fused("FusedMatMul", &["a", "b"], Activation::Relu);
        assert_eq!(
            eval1(&f, 13, &[Some(&ai), Some(&bi)]).unwrap_err().kind,
            ErrorKind::TypeMismatch
        );
    }

    #[test]
    fn activation_errors_name_node_and_attribute() {
        let x = rt(1, &[1, 1, 2, 2]);
        let w = rt(2, &[1, 1, 1, 1]);
        let f = fused("FusedConv", &["x", "w"], Activation::None)
            .with_attr(ATTR_ACTIVATION, Attribute::String(b"Gelu".to_vec()));
        let e = eval1(&f, 13, &[Some(&x), Some(&w)]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidAttribute);
        assert_eq!(e.attr.as_deref(), Some(ATTR_ACTIVATION));
        assert_eq!(e.node.as_deref(), Some("f"));
        let msg = e.to_string();
        assert!(
            msg.contains("node 'f' (FusedConv)") && msg.contains("'Gelu'"),
            "{msg}"
        );

        let f = fused("FusedConv", &["x", "w"], Activation::None)
            .with_attr(ATTR_ACTIVATION, Attribute::String(b"Clip".to_vec()))
            .with_attr(ATTR_ACTIVATION_PARAMS, Attribute::Floats(vec![0.0]));
        let e = eval1(&f, 13, &[Some(&x), Some(&w)]).unwrap_err();
        assert_eq!(e.attr.as_deref(), Some(ATTR_ACTIVATION_PARAMS));
        assert!(e.to_string().contains("Clip takes 2 parameters, got 1"), "{e}");
        // Params without an activation are an error too.
        let f = fused("FusedGemm", &["x", "w"], Activation::None)
            .with_attr(ATTR_ACTIVATION_PARAMS, Attribute::Floats(vec![1.0]));
        assert_eq!(
            eval1(&f, 13, &[Some(&x), Some(&w)]).unwrap_err().attr.as_deref(),
            Some(ATTR_ACTIVATION_PARAMS)
        );
        // Wrong attribute type.
        let f =
            fused("FusedMatMul", &["x", "w"], Activation::None).with_attr(ATTR_ACTIVATION, Attribute::Int(1));
        assert_eq!(
            eval1(&f, 13, &[Some(&x), Some(&w)]).unwrap_err().attr.as_deref(),
            Some(ATTR_ACTIVATION)
        );
        // Too many inputs.
        let f = fused("FusedMatMul", &["x", "w", "z"], Activation::None);
        assert_eq!(
            eval1(&f, 13, &[Some(&x), Some(&w), Some(&x)]).unwrap_err().kind,
            ErrorKind::InvalidModel
        );
        // The helper without a node.
        let e = apply_activation("Swish", &[], &mut [0.0]).unwrap_err();
        assert_eq!(e.attr.as_deref(), Some(ATTR_ACTIVATION));
        let e = apply_activation("LeakyRelu", &[], &mut [0.0]).unwrap_err();
        assert_eq!(e.attr.as_deref(), Some(ATTR_ACTIVATION_PARAMS));
    }

    fn vi(name: &str, dtype: DType, dims: &[usize]) -> ValueInfo {
        ValueInfo {
            name: name.into(),
            ty: ValueType::known(dtype, dims),
        }
    }

    /// x[1,2,4,4] -> FusedConv(+z, act) -> h -> FusedMatMul over the last axis -> y.
    fn conv_model(act: Activation, opset: i64) -> Model {
        let mut init = BTreeMap::new();
        init.insert("w".to_string(), rt(20, &[2, 2, 3, 3]));
        init.insert("b".to_string(), rt(21, &[2]));
        init.insert("m".to_string(), rt(22, &[4, 3]));
        let conv = conv_attrs(fused("FusedConv", &["x", "w", "b", "z"], act))
            .with_attr("strides", Attribute::Ints(vec![1, 1]));
        let mut conv = conv;
        conv.name = "conv".into();
        conv.outputs = vec!["h".into()];
        let mut mm = fused("FusedMatMul", &["h", "m"], act);
        mm.name = "mm".into();
        let mut opsets = vec![OpsetImport {
            domain: String::new(),
            version: opset,
        }];
        opsets.push(OpsetImport {
            domain: DOMAIN.into(),
            version: 1,
        });
        Model {
            graph: Graph {
                name: "g".into(),
                nodes: vec![conv, mm],
                inputs: vec![
                    vi("x", DType::F32, &[1, 2, 4, 4]),
                    vi("z", DType::F32, &[1, 2, 4, 4]),
                ],
                outputs: vec![vi("y", DType::F32, &[1, 2, 4, 3])],
                initializers: init,
                value_types: HashMap::new(),
            },
            opsets,
            ..Default::default()
        }
    }

    /// Runs the graph with the reference evals; returns every value.
    fn run_model(m: &Model, feeds: &[(&str, &Tensor)]) -> HashMap<String, Tensor> {
        let mut env: HashMap<String, Tensor> = m.graph.initializers.clone().into_iter().collect();
        for (k, v) in feeds {
            env.insert(k.to_string(), (*v).clone());
        }
        let mut g = m.graph.clone();
        g.topo_sort().unwrap();
        for n in &g.nodes {
            let ins: Vec<Option<&Tensor>> = n
                .inputs
                .iter()
                .map(|i| if i.is_empty() { None } else { env.get(i) })
                .collect();
            let outs = eval_node(n, m.opset(), &ins).unwrap();
            for (o, t) in n.outputs.iter().zip(outs) {
                env.insert(o.clone(), t);
            }
        }
        env
    }

    #[test]
    fn lowering_matches_fused_eval_at_every_opset() {
        let x = rt(30, &[1, 2, 4, 4]);
        let z = rt(31, &[1, 2, 4, 4]);
        for opset in [10, 13, 14, 17] {
            for act in all_acts() {
                let m = conv_model(act, opset);
                crate::infer::check_supported(&m).unwrap();
                let low = lower_fused(&m).unwrap();
                assert!(!has_kiln_ops(&low), "{act:?}");
                assert!(low.graph.nodes.iter().all(|n| n.domain.is_empty()));
                crate::infer::check_supported(&low).unwrap();
                let mut lv = low.clone();
                lv.graph.validate().unwrap();
                let want = run_model(&m, &[("x", &x), ("z", &z)]);
                let got = run_model(&low, &[("x", &x), ("z", &z)]);
                close(&got["y"].to_f32_vec(), &want["y"].to_f32_vec(), 1e-5);
                close(&got["h"].to_f32_vec(), &want["h"].to_f32_vec(), 1e-5);
                // Deterministic.
                assert_eq!(lower_fused(&m).unwrap(), low);
                // HardSwish only at 14 and later.
                let ops: Vec<&str> = low.graph.nodes.iter().map(|n| n.op_type.as_str()).collect();
                if act == Activation::HardSwish {
                    assert_eq!(ops.contains(&"HardSwish"), opset >= 14, "{ops:?}");
                }
            }
        }
    }

    #[test]
    fn lowering_names() {
        let m = conv_model(Activation::SiLU, 17);
        let low = lower_fused(&m).unwrap();
        let got: Vec<(&str, &str, Vec<&str>, Vec<&str>)> = low
            .graph
            .nodes
            .iter()
            .map(|n| {
                (
                    n.name.as_str(),
                    n.op_type.as_str(),
                    n.inputs.iter().map(|s| s.as_str()).collect(),
                    n.outputs.iter().map(|s| s.as_str()).collect(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("conv", "Conv", vec!["x", "w", "b"], vec!["h__conv"]),
                ("conv__add", "Add", vec!["h__conv", "z"], vec!["h__add"]),
                ("conv__sig", "Sigmoid", vec!["h__add"], vec!["h__sig"]),
                ("conv__mul", "Mul", vec!["h__add", "h__sig"], vec!["h"]),
                ("mm", "MatMul", vec!["h", "m"], vec!["y__matmul"]),
                ("mm__sig", "Sigmoid", vec!["y__matmul"], vec!["y__sig"]),
                ("mm__mul", "Mul", vec!["y__matmul", "y__sig"], vec!["y"]),
            ]
        );
        assert!(!low.graph.nodes[0].attrs.contains_key(ATTR_ACTIVATION));
        assert_eq!(
            low.graph.nodes[0].attrs["pads"],
            Attribute::Ints(vec![1, 1, 1, 1])
        );
        assert_eq!(low.opsets.len(), 1);

        // Clip: initializers from opset 11, attributes before.
        let low = lower_fused(&conv_model(Activation::Clip { min: 0.0, max: 6.0 }, 11)).unwrap();
        assert_eq!(low.graph.nodes[2].name, "conv__act");
        assert_eq!(
            low.graph.nodes[2].inputs,
            vec!["h__add", "conv__min", "conv__max"]
        );
        assert_eq!(low.graph.initializers["conv__max"], Tensor::scalar(6.0f32));
        assert_eq!(low.graph.initializers["mm__min"], Tensor::scalar(0.0f32));
        let low = lower_fused(&conv_model(Activation::Clip { min: 0.0, max: 6.0 }, 10)).unwrap();
        assert_eq!(low.graph.nodes[2].inputs, vec!["h__add"]);
        assert_eq!(low.graph.nodes[2].attrs["max"], Attribute::Float(6.0));

        // No epilogue: the base op writes the output directly.
        let mut m = conv_model(Activation::None, 17);
        m.graph.nodes[0].inputs.truncate(3);
        let low = lower_fused(&m).unwrap();
        assert_eq!(low.graph.nodes.len(), 2);
        assert_eq!(low.graph.nodes[0].outputs, vec!["h"]);
        assert_eq!(low.graph.nodes[1].outputs, vec!["y"]);
    }

    #[test]
    fn lowering_avoids_collisions_and_types_intermediates() {
        let mut m = conv_model(Activation::Relu, 17);
        // Existing values and nodes with the names lowering would pick.
        m.graph
            .initializers
            .insert("h__conv".into(), Tensor::scalar(1.0f32));
        m.graph
            .initializers
            .insert("h__conv_1".into(), Tensor::scalar(1.0f32));
        let mut extra = Node::new("conv__add", "Identity", &["h__conv"], &["extra"]);
        extra.domain = "com.example".into();
        m.graph.nodes.push(extra);
        let mut typed = m.clone();
        typed.graph.nodes.pop();
        crate::infer::infer_types(&mut typed).unwrap();
        m.graph.value_types = typed.graph.value_types;
        let low = lower_fused(&m).unwrap();
        let n = &low.graph.nodes;
        assert_eq!(n[0].outputs, vec!["h__conv_2"]);
        assert_eq!(n[1].name, "conv__add_1");
        assert_eq!(n[1].outputs, vec!["h__add"]);
        assert_eq!(n[2].name, "conv__act");
        assert_eq!(
            low.graph.value_types["h__add"],
            ValueType::known(DType::F32, &[1, 2, 4, 4])
        );
        assert_eq!(low.graph.value_types["h__conv_2"], low.graph.value_types["h"]);
        // The foreign-domain node is untouched and stays last.
        assert_eq!(n.last().unwrap().domain, "com.example");
        assert_eq!(n.len(), 3 + 2 + 1);
    }

    #[test]
    fn lowering_f16_clip_bounds_and_unknown_kiln_op() {
        let mut m = conv_model(Activation::Clip { min: -1.0, max: 1.0 }, 13);
        for t in m.graph.initializers.values_mut() {
            *t = t.cast(DType::F16);
        }
        for v in m.graph.inputs.iter_mut().chain(m.graph.outputs.iter_mut()) {
            v.ty.dtype = DType::F16;
        }
        let low = lower_fused(&m).unwrap();
        assert_eq!(low.graph.initializers["conv__min"].dtype(), DType::F16);
        let mut lt = low.clone();
        crate::infer::infer_types(&mut lt).unwrap();

        let mut bad = conv_model(Activation::Relu, 13);
        bad.graph.nodes[1].op_type = "FusedAttention".into();
        assert_eq!(
            crate::infer::check_supported(&bad).unwrap_err().kind,
            ErrorKind::UnsupportedOp
        );
        let e = lower_fused(&bad).unwrap_err();
        assert_eq!(e.kind, ErrorKind::UnsupportedOp);
        assert_eq!(e.node.as_deref(), Some("mm"));
    }

    #[test]
    fn inference_with_z_and_check_supported() {
        let mut m = conv_model(
            Activation::HardSigmoid {
                alpha: 0.2,
                beta: 0.5,
            },
            13,
        );
        crate::infer::check_supported(&m).unwrap();
        m.graph.inputs[0].ty.shape = Some(vec![Dim::Sym("n".into()), 2.into(), 4.into(), 4.into()]);
        crate::infer::infer_types(&mut m).unwrap();
        assert_eq!(
            m.graph.value_types["h"],
            ValueType::known(DType::F32, &[1, 2, 4, 4]),
            "Z's known batch refines the symbol"
        );
        assert_eq!(
            m.graph.value_types["y"],
            ValueType::known(DType::F32, &[1, 2, 4, 3])
        );
        // Z of the wrong shape.
        let mut bad = conv_model(Activation::Relu, 13);
        bad.graph.inputs[1].ty = ValueType::known(DType::F32, &[1, 2, 4, 5]);
        let e = crate::infer::infer_types(&mut bad).unwrap_err();
        assert_eq!(
            (e.kind, e.node.as_deref()),
            (ErrorKind::ShapeMismatch, Some("conv"))
        );
        // Z of the wrong type.
        let mut bad = conv_model(Activation::Relu, 13);
        bad.graph.inputs[1].ty.dtype = DType::F16;
        assert_eq!(
            crate::infer::infer_types(&mut bad).unwrap_err().kind,
            ErrorKind::TypeMismatch
        );
    }
}
