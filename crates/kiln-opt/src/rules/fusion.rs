//! Fusion rules: activations and residual Adds folded into kiln's fused ops
//! (`kiln::FusedConv`, `kiln::FusedGemm`, `kiln::FusedMatMul`, defined in
//! `kiln_ir::ops::fused`).
//!
//! A fused op computes `Y = act(Op(...) + Z)`: the base op, an optional
//! residual `Z` of `Y`'s exact shape (FusedConv only), then the activation
//! named by the `activation` attribute with its `activation_params`. Every
//! rule of this family turns the base node into the fused op *in place*, so
//! the fused node keeps the base node's name (the exporter names the lowered
//! nodes after it, which makes export → import → optimize reproducible), and
//! makes it write the output of the last node it absorbs, which is removed.
//!
//! Run order: [`FuseResidualAddIntoConv`] first (so `Conv → Add → Relu`
//! becomes one `FusedConv` with `Z` and `Relu`), then the gated patterns of
//! [`FuseSiluIntoConv`], then the single-activation rules.

use crate::{Ctx, Level, Rule};
use kiln_ir::{Attribute, Dim, IrError, Node};

/// Domain of kiln's fused ops.
const KILN_DOMAIN: &str = "kiln";

/// The rules of this family, in run order.
pub fn rules() -> Vec<Box<dyn Rule>> {
    vec![
        Box::new(FuseResidualAddIntoConv),
        Box::new(FuseSiluIntoConv),
        Box::new(FuseActivationIntoConv),
        Box::new(FuseActivationIntoGemm),
        Box::new(FuseActivationIntoMatMul),
    ]
}

// ---------------------------------------------------------------------------
// Shared helpers.

/// A fusable activation: the `activation` attribute value and its
/// `activation_params`.
#[derive(Debug, Clone, PartialEq)]
struct Act {
    name: &'static str,
    params: Vec<f32>,
}

impl Act {
    fn new(name: &'static str, params: Vec<f32>) -> Act {
        Act { name, params }
    }
}

/// The base ops a fused op can be made from: `(base op of the default
/// domain, fused op of the kiln domain)`.
const CONV: (&str, &str) = ("Conv", "FusedConv");
const GEMM: (&str, &str) = ("Gemm", "FusedGemm");
const MATMUL: (&str, &str) = ("MatMul", "FusedMatMul");

/// True if `n` is `base` (default domain) or `fused` (kiln domain).
fn is_base_or_fused(n: &Node, (base, fused): (&str, &str)) -> bool {
    (n.op_type == base && n.domain.is_empty()) || (n.op_type == fused && n.domain == KILN_DOMAIN)
}

/// True if `n` is a default-domain node of type `op`.
fn is_onnx(n: &Node, op: &str) -> bool {
    n.op_type == op && (n.domain.is_empty() || n.domain == "ai.onnx")
}

/// True if `n` (a base or fused node) has no activation yet.
fn has_no_activation(n: &Node) -> Result<bool, IrError> {
    Ok(n.attr_string("activation", "")?.is_empty())
}

/// The base node at `node` if it is `kind` with no activation and a single
/// floating-point output (the fused ops are float only): returns that output.
fn fusable_base(cx: &Ctx, node: usize, kind: (&str, &str)) -> Result<Option<String>, IrError> {
    let n = cx.node(node);
    if !is_base_or_fused(n, kind) || !has_no_activation(n)? {
        return Ok(None);
    }
    let [y] = n.outputs.as_slice() else {
        return Ok(None);
    };
    if y.is_empty() || !cx.value_type(y).is_some_and(|t| t.dtype.is_float()) {
        return Ok(None);
    }
    Ok(Some(y.clone()))
}

/// A scalar float constant (initializer) `value`, if it is one.
fn scalar_constant(cx: &Ctx, value: &str) -> Option<f32> {
    let t = cx.constant(value)?;
    if t.len() != 1 || !t.dtype().is_float() {
        return None;
    }
    t.to_f32_vec().first().copied()
}

/// The activation computed by node `a` from its first input, if it is one the
/// fused ops support with static parameters:
/// - `Relu`, `Sigmoid`, `HardSwish`;
/// - `LeakyRelu` (`alpha`, default 0.01), `HardSigmoid` (`alpha` 0.2, `beta` 0.5);
/// - `Clip` with constant bounds: before opset 11 the `min`/`max` attributes,
///   from opset 11 the optional inputs, each an initializer scalar or
///   omitted; an omitted bound is -inf / +inf. A bound computed at run time
///   (a node output or a graph input) is not fused.
///
/// Attribute type errors are returned (located at the node).
fn activation_of(cx: &Ctx, a: usize) -> Result<Option<Act>, IrError> {
    let n = cx.node(a);
    if !(n.domain.is_empty() || n.domain == "ai.onnx") || n.outputs.len() != 1 || n.outputs[0].is_empty() {
        return Ok(None);
    }
    let act = match n.op_type.as_str() {
        "Relu" => Act::new("Relu", vec![]),
        "Sigmoid" => Act::new("Sigmoid", vec![]),
        "HardSwish" => Act::new("HardSwish", vec![]),
        "LeakyRelu" => Act::new("LeakyRelu", vec![n.attr_float("alpha", 0.01)?]),
        "HardSigmoid" => Act::new(
            "HardSigmoid",
            vec![n.attr_float("alpha", 0.2)?, n.attr_float("beta", 0.5)?],
        ),
        "Clip" if cx.opset() < 11 => Act::new(
            "Clip",
            vec![
                n.attr_float("min", f32::NEG_INFINITY)?,
                n.attr_float("max", f32::INFINITY)?,
            ],
        ),
        "Clip" => {
            let bound = |i: usize, default: f32| -> Option<f32> {
                match n.inputs.get(i).map(String::as_str) {
                    None | Some("") => Some(default),
                    Some(b) => scalar_constant(cx, b),
                }
            };
            let (Some(lo), Some(hi)) = (bound(1, f32::NEG_INFINITY), bound(2, f32::INFINITY)) else {
                return Ok(None);
            };
            if n.inputs.len() > 3 {
                return Ok(None);
            }
            Act::new("Clip", vec![lo, hi])
        }
        _ => return Ok(None),
    };
    Ok(Some(act))
}

/// Turns the base node at `node` into its fused op (in place: the node keeps
/// its name and attributes) with activation `act`, writing `out`.
fn make_fused(cx: &mut Ctx, node: usize, fused: &str, act: &Act, out: &str) {
    let n = cx.node_mut(node);
    n.op_type = fused.to_string();
    n.domain = KILN_DOMAIN.to_string();
    n.attrs.insert(
        "activation".into(),
        Attribute::String(act.name.as_bytes().to_vec()),
    );
    if act.params.is_empty() {
        n.attrs.remove("activation_params");
    } else {
        n.attrs
            .insert("activation_params".into(), Attribute::Floats(act.params.clone()));
    }
    n.outputs = vec![out.to_string()];
}

/// Shared body of the single-activation rules: base node of `kind` at
/// `node`, without activation, whose output's sole reader is an activation
/// node (reading it as its first input) → fused op with that activation,
/// writing the activation's output; the activation node is removed.
fn fuse_activation(cx: &mut Ctx, node: usize, kind: (&str, &str)) -> Result<bool, IrError> {
    let Some(y) = fusable_base(cx, node, kind)? else {
        return Ok(false);
    };
    let Some(a) = cx.sole_consumer(&y) else {
        return Ok(false);
    };
    if cx.node(a).inputs.first() != Some(&y) {
        return Ok(false); // e.g. the value is a Clip bound, not the clipped input
    }
    let Some(act) = activation_of(cx, a)? else {
        return Ok(false);
    };
    let out = cx.node(a).outputs[0].clone();
    make_fused(cx, node, kind.1, &act, &out);
    cx.remove_nodes(&[a]);
    Ok(true)
}

// ---------------------------------------------------------------------------
// Residual Add.

/// `fuse-residual-add-into-conv`: a residual Add as FusedConv's `Z` epilogue.
///
/// Guards: the node is a `Conv` or a `kiln::FusedConv` with no activation
/// (`activation` absent or `""`) and no `Z`, with a float output `y`; `y` is
/// not a graph output and its only reader is an `Add(y, other)` or
/// `Add(other, y)` reading it once; `other` has statically exactly `y`'s
/// type: same dtype, same rank, and every dim equal (both known and equal,
/// or the same symbol) — no broadcasting.
///
/// Patch: the node becomes `kiln::FusedConv` (same name and Conv attributes)
/// with `Z = other`, writing the Add's output; the Add is removed. It runs
/// before the activation rules, so `Conv → Add → Relu` ends as one
/// `FusedConv(Z, Relu)`.
pub struct FuseResidualAddIntoConv;

impl Rule for FuseResidualAddIntoConv {
    fn name(&self) -> &'static str {
        "fuse-residual-add-into-conv"
    }
    fn level(&self) -> Level {
        Level::Extended
    }
    fn describe(&self) -> &'static str {
        "Conv (no activation, no Z) + Add of a same-shape tensor -> kiln::FusedConv with Z"
    }
    fn apply(&self, cx: &mut Ctx, node: usize) -> Result<bool, IrError> {
        let Some(y) = fusable_base(cx, node, CONV)? else {
            return Ok(false);
        };
        if cx.node(node).inputs.get(3).is_some_and(|z| !z.is_empty()) || cx.node(node).inputs.len() > 4 {
            return Ok(false);
        }
        let Some(a) = cx.sole_consumer(&y) else {
            return Ok(false);
        };
        let add = cx.node(a);
        if !is_onnx(add, "Add") || add.inputs.len() != 2 || add.outputs.len() != 1 {
            return Ok(false);
        }
        let other = if add.inputs[0] == y {
            &add.inputs[1]
        } else {
            &add.inputs[0]
        };
        let (Some(ty), Some(to)) = (cx.value_type(&y), cx.value_type(other)) else {
            return Ok(false);
        };
        let (Some(sy), Some(so)) = (&ty.shape, &to.shape) else {
            return Ok(false);
        };
        let same = ty.dtype == to.dtype
            && sy.len() == so.len()
            && sy.iter().zip(so).all(|(p, q)| match (p, q) {
                (Dim::Known(p), Dim::Known(q)) => p == q,
                (Dim::Sym(p), Dim::Sym(q)) => p == q,
                _ => false,
            });
        if !same {
            return Ok(false);
        }
        let (other, out) = (other.clone(), add.outputs[0].clone());
        let n = cx.node_mut(node);
        n.op_type = CONV.1.to_string();
        n.domain = KILN_DOMAIN.to_string();
        n.inputs.resize(3, String::new());
        n.inputs.push(other);
        n.outputs = vec![out];
        cx.remove_nodes(&[a]);
        Ok(true)
    }
}

// ---------------------------------------------------------------------------
// Gated activations: x * gate(x).

/// `fuse-silu-into-conv`: `x * Sigmoid(x)` (SiLU / Swish) and
/// `x * HardSigmoid(x, alpha = 1/6, beta = 0.5)` (HardSwish) after a Conv.
///
/// Guards: the node is a `Conv` or a `kiln::FusedConv` without activation,
/// with a float output `x` that is not a graph output and is read by exactly
/// two nodes: a gate `g = Sigmoid(x)` (or `HardSigmoid(x)` with
/// `alpha` = 1/6 and `beta` = 0.5 within 1e-6), and `Mul(x, g)` or
/// `Mul(g, x)`; `g` is not a graph output and is read only by that Mul.
///
/// Patch: the node becomes `kiln::FusedConv` (same name) with activation
/// `SiLU` (or `HardSwish`), writing the Mul's output; gate and Mul are
/// removed.
pub struct FuseSiluIntoConv;

impl Rule for FuseSiluIntoConv {
    fn name(&self) -> &'static str {
        "fuse-silu-into-conv"
    }
    fn level(&self) -> Level {
        Level::Extended
    }
    fn describe(&self) -> &'static str {
        "Conv + x*Sigmoid(x) (or x*HardSigmoid(x, 1/6, 0.5)) -> kiln::FusedConv with SiLU (HardSwish)"
    }
    fn apply(&self, cx: &mut Ctx, node: usize) -> Result<bool, IrError> {
        let Some(x) = fusable_base(cx, node, CONV)? else {
            return Ok(false);
        };
        if cx.is_graph_output(&x) {
            return Ok(false);
        }
        let [c0, c1] = *cx.consumers(&x) else {
            return Ok(false);
        };
        let (g, m) = if is_onnx(cx.node(c0), "Mul") {
            (c1, c0)
        } else {
            (c0, c1)
        };
        let (gn, mn) = (cx.node(g), cx.node(m));
        let act = if is_onnx(gn, "Sigmoid") {
            "SiLU"
        } else if is_onnx(gn, "HardSigmoid")
            && (gn.attr_float("alpha", 0.2)? - 1.0 / 6.0).abs() <= 1e-6
            && (gn.attr_float("beta", 0.5)? - 0.5).abs() <= 1e-6
        {
            "HardSwish"
        } else {
            return Ok(false);
        };
        if gn.inputs.len() != 1 || gn.inputs[0] != x || gn.outputs.len() != 1 || gn.outputs[0].is_empty() {
            return Ok(false);
        }
        let gate = &gn.outputs[0];
        if !is_onnx(mn, "Mul") || mn.inputs.len() != 2 || mn.outputs.len() != 1 {
            return Ok(false);
        }
        let operands_ok =
            (mn.inputs[0] == x && mn.inputs[1] == *gate) || (mn.inputs[0] == *gate && mn.inputs[1] == x);
        if !operands_ok || cx.sole_consumer(gate) != Some(m) {
            return Ok(false);
        }
        let out = mn.outputs[0].clone();
        make_fused(cx, node, CONV.1, &Act::new(act, vec![]), &out);
        cx.remove_nodes(&[g, m]);
        Ok(true)
    }
}

// ---------------------------------------------------------------------------
// Single activations.

/// `fuse-activation-into-conv`: an activation after a Conv.
///
/// Guards: the node is a `Conv` or a `kiln::FusedConv` without activation
/// (with or without `Z`), with a float output `y`; `y` is not a graph output
/// and its only reader reads it once, as its first input, and is one of
/// `Relu`, `LeakyRelu`, `HardSigmoid`, `HardSwish`, `Sigmoid`, or `Clip` with
/// constant bounds (opset < 11: attributes; opset >= 11: initializer scalars
/// or omitted inputs, omitted = ∓inf; bounds computed at run time or fed as
/// graph inputs are not fused).
///
/// Patch: the node becomes `kiln::FusedConv` (same name, inputs and Conv
/// attributes) with `activation` / `activation_params` set (Clip `[min,
/// max]`, LeakyRelu `[alpha]`, HardSigmoid `[alpha, beta]`), writing the
/// activation's output; the activation node is removed.
pub struct FuseActivationIntoConv;

impl Rule for FuseActivationIntoConv {
    fn name(&self) -> &'static str {
        "fuse-activation-into-conv"
    }
    fn level(&self) -> Level {
        Level::Extended
    }
    fn describe(&self) -> &'static str {
        "Conv + Relu/Clip/LeakyRelu/HardSigmoid/HardSwish/Sigmoid -> kiln::FusedConv"
    }
    fn apply(&self, cx: &mut Ctx, node: usize) -> Result<bool, IrError> {
        fuse_activation(cx, node, CONV)
    }
}

/// `fuse-activation-into-gemm`: an activation after a Gemm.
///
/// Guards: as `fuse-activation-into-conv`, for a `Gemm` or a
/// `kiln::FusedGemm` without activation.
///
/// Patch: the node becomes `kiln::FusedGemm` (same name, inputs and Gemm
/// attributes) with the activation, writing the activation's output; the
/// activation node is removed.
pub struct FuseActivationIntoGemm;

impl Rule for FuseActivationIntoGemm {
    fn name(&self) -> &'static str {
        "fuse-activation-into-gemm"
    }
    fn level(&self) -> Level {
        Level::Extended
    }
    fn describe(&self) -> &'static str {
        "Gemm + Relu/Clip/LeakyRelu/HardSigmoid/HardSwish/Sigmoid -> kiln::FusedGemm"
    }
    fn apply(&self, cx: &mut Ctx, node: usize) -> Result<bool, IrError> {
        fuse_activation(cx, node, GEMM)
    }
}

/// `fuse-activation-into-matmul`: an activation after a MatMul.
///
/// Guards: as `fuse-activation-into-conv`, for a `MatMul` or a
/// `kiln::FusedMatMul` without activation, with a float output.
///
/// Patch: the node becomes `kiln::FusedMatMul` (same name and inputs) with
/// the activation, writing the activation's output; the activation node is
/// removed.
pub struct FuseActivationIntoMatMul;

impl Rule for FuseActivationIntoMatMul {
    fn name(&self) -> &'static str {
        "fuse-activation-into-matmul"
    }
    fn level(&self) -> Level {
        Level::Extended
    }
    fn describe(&self) -> &'static str {
        "MatMul + Relu/Clip/LeakyRelu/HardSigmoid/HardSwish/Sigmoid -> kiln::FusedMatMul"
    }
    fn apply(&self, cx: &mut Ctx, node: usize) -> Result<bool, IrError> {
        fuse_activation(cx, node, MATMUL)
    }
}
