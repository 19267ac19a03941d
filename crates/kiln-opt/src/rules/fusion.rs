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
use kiln_ir::ops::fused::{Activation, ATTR_ACTIVATION, ATTR_ACTIVATION_PARAMS, DOMAIN};
use kiln_ir::{Dim, IrError, Node, OpsetImport};

/// The rules of this family, in run order.
pub fn rules() -> Vec<Box<dyn Rule>> {
    vec![
        Box::new(FuseResidualAddIntoConv),
        Box::new(FuseSiluIntoConv),
        Box::new(FuseDecomposedHardSwishIntoConv),
        Box::new(FuseActivationIntoConv),
        Box::new(FuseActivationIntoGemm),
        Box::new(FuseActivationIntoMatMul),
    ]
}

// ---------------------------------------------------------------------------
// Shared helpers.

/// A base op and the fused op it becomes: `(default-domain op, kiln op)`.
type Kind = (&'static str, &'static str);
const CONV: Kind = ("Conv", "FusedConv");
const GEMM: Kind = ("Gemm", "FusedGemm");
const MATMUL: Kind = ("MatMul", "FusedMatMul");

/// True if `n` is a default-domain node of type `op`.
fn is_onnx(n: &Node, op: &str) -> bool {
    n.op_type == op && (n.domain.is_empty() || n.domain == "ai.onnx")
}

/// True if `n` is the base op of `kind` (with no stray activation
/// attributes) or its fused op without activation.
fn is_base_without_activation(n: &Node, (base, fused): Kind) -> Result<bool, IrError> {
    if is_onnx(n, base) {
        return Ok(!n.attrs.contains_key(ATTR_ACTIVATION) && !n.attrs.contains_key(ATTR_ACTIVATION_PARAMS));
    }
    if n.op_type == fused && n.domain == DOMAIN {
        return Ok(Activation::parse(n)?.is_none());
    }
    Ok(false)
}

/// The output of the node at `node` if it is `kind` without activation and
/// with a single float or float16 output (the fused ops' activations need
/// float data).
fn fusable_base(cx: &Ctx, node: usize, kind: Kind) -> Result<Option<String>, IrError> {
    let n = cx.node(node);
    if !is_base_without_activation(n, kind)? {
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

/// The value of `value` if it is a constant (initializer, not a graph input)
/// float scalar.
fn scalar_constant(cx: &Ctx, value: &str) -> Option<f32> {
    let t = cx.constant(value)?;
    if t.len() != 1 || !t.dtype().is_float() {
        return None;
    }
    t.to_f32_vec().first().copied()
}

/// The activation node `a` computes from its first input, if the fused ops
/// support it with static parameters:
/// - `Relu`, `Sigmoid`, `HardSwish`;
/// - `LeakyRelu` (`alpha`, default 0.01), `HardSigmoid` (`alpha` 0.2, `beta` 0.5);
/// - `Clip` with constant bounds: before opset 11 the `min`/`max` attributes,
///   from opset 11 the optional inputs, each an initializer scalar or
///   omitted; an omitted bound is -inf / +inf. A bound computed at run time
///   (a node output or a graph input) is not fused.
///
/// Attribute type errors are returned (located at the node).
fn activation_of(cx: &Ctx, a: usize) -> Result<Option<Activation>, IrError> {
    let n = cx.node(a);
    if !(n.domain.is_empty() || n.domain == "ai.onnx") || n.outputs.len() != 1 || n.outputs[0].is_empty() {
        return Ok(None);
    }
    let unary = n.inputs.len() == 1;
    let act = match n.op_type.as_str() {
        "Relu" if unary => Activation::Relu,
        "Sigmoid" if unary => Activation::Sigmoid,
        "HardSwish" if unary => Activation::HardSwish,
        "LeakyRelu" if unary => Activation::LeakyRelu {
            alpha: n.attr_float("alpha", 0.01)?,
        },
        "HardSigmoid" if unary => Activation::HardSigmoid {
            alpha: n.attr_float("alpha", 0.2)?,
            beta: n.attr_float("beta", 0.5)?,
        },
        "Clip" if cx.opset() < 11 && unary => Activation::Clip {
            min: n.attr_float("min", f32::NEG_INFINITY)?,
            max: n.attr_float("max", f32::INFINITY)?,
        },
        "Clip" if cx.opset() >= 11 && n.inputs.len() <= 3 => {
            let bound = |i: usize, default: f32| -> Option<f32> {
                match n.inputs.get(i).map(String::as_str) {
                    None | Some("") => Some(default),
                    Some(b) => scalar_constant(cx, b),
                }
            };
            let (Some(min), Some(max)) = (bound(1, f32::NEG_INFINITY), bound(2, f32::INFINITY)) else {
                return Ok(None);
            };
            Activation::Clip { min, max }
        }
        _ => return Ok(None),
    };
    Ok(Some(act))
}

/// Turns the node at `node` into the fused op of `kind`, in place (it keeps
/// its name, inputs and attributes), with activation `act`, writing `out`;
/// adds the `"kiln"` opset import if the model lacks it.
fn make_fused(cx: &mut Ctx, node: usize, kind: Kind, act: Activation, out: &str) {
    let n = cx.node_mut(node);
    n.op_type = kind.1.to_string();
    n.domain = DOMAIN.to_string();
    act.write_attrs(n);
    n.outputs = vec![out.to_string()];
    if !cx.model.opsets.iter().any(|o| o.domain == DOMAIN) {
        cx.model.opsets.push(OpsetImport {
            domain: DOMAIN.to_string(),
            version: 1,
        });
    }
}

/// Shared body of the single-activation rules: base node of `kind` at
/// `node`, without activation, whose output's sole reader is an activation
/// node (reading it as its first input) → fused op with that activation,
/// writing the activation's output; the activation node is removed.
fn fuse_activation(cx: &mut Ctx, node: usize, kind: Kind) -> Result<bool, IrError> {
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
    make_fused(cx, node, kind, act, &out);
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
        make_fused(cx, node, CONV, Activation::None, &out);
        let n = cx.node_mut(node);
        n.inputs.resize(3, String::new());
        n.inputs.push(other);
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
            Activation::SiLU
        } else if is_onnx(gn, "HardSigmoid")
            && (gn.attr_float("alpha", 0.2)? - 1.0 / 6.0).abs() <= 1e-6
            && (gn.attr_float("beta", 0.5)? - 0.5).abs() <= 1e-6
        {
            Activation::HardSwish
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
        make_fused(cx, node, CONV, act, &out);
        cx.remove_nodes(&[g, m]);
        Ok(true)
    }
}

/// `fuse-decomposed-hardswish-into-conv`: `x * Clip(x + 3, 0, 6) / 6` after
/// a Conv: HardSwish as exporters without the op write it (PaddlePaddle's
/// paddle2onnx at opset < 14: `Add`, `Clip`, `Mul`, `Div`).
///
/// Guards: the node is a `Conv` or a `kiln::FusedConv` without activation,
/// with a float output `x` that is not a graph output and is read by exactly
/// two nodes: `t = Add(x, 3)` (either order, a scalar constant equal to 3)
/// and `u = Mul(x, g)` (either order); `t` is read only by `g = Clip(t, 0, 6)`
/// (constant bounds), `g` only by that Mul, and `u` only by `y = Div(u, 6)`
/// (a scalar constant equal to 6); none of `t`, `g`, `u` is a graph output.
///
/// Patch: the node becomes `kiln::FusedConv` (same name) with activation
/// `HardSwish`, writing `y`; the four nodes are removed. (ONNX HardSwish is
/// `x * max(0, min(1, x/6 + 0.5))`, equal up to rounding.)
pub struct FuseDecomposedHardSwishIntoConv;

impl Rule for FuseDecomposedHardSwishIntoConv {
    fn name(&self) -> &'static str {
        "fuse-decomposed-hardswish-into-conv"
    }
    fn level(&self) -> Level {
        Level::Extended
    }
    fn describe(&self) -> &'static str {
        "Conv + x*Clip(x+3, 0, 6)/6 -> kiln::FusedConv with HardSwish"
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
        let (a, m) = if is_onnx(cx.node(c0), "Add") {
            (c0, c1)
        } else {
            (c1, c0)
        };
        let (an, mn) = (cx.node(a), cx.node(m));
        if !is_onnx(an, "Add") || !is_onnx(mn, "Mul") || an.inputs.len() != 2 || mn.inputs.len() != 2 {
            return Ok(false);
        }
        if an.outputs.len() != 1 || mn.outputs.len() != 1 {
            return Ok(false);
        }
        let other = |n: &Node| -> Option<String> {
            match (n.inputs[0] == x, n.inputs[1] == x) {
                (true, false) => Some(n.inputs[1].clone()),
                (false, true) => Some(n.inputs[0].clone()),
                _ => None,
            }
        };
        let Some(three) = other(an) else { return Ok(false) };
        if scalar_constant(cx, &three) != Some(3.0) {
            return Ok(false);
        }
        let t = an.outputs[0].clone();
        let Some(c) = cx.sole_consumer(&t) else {
            return Ok(false);
        };
        let cn = cx.node(c);
        if !is_onnx(cn, "Clip") || cn.inputs.first() != Some(&t) {
            return Ok(false);
        }
        if activation_of(cx, c)? != Some(Activation::Clip { min: 0.0, max: 6.0 }) {
            return Ok(false);
        }
        let g = cx.node(c).outputs[0].clone();
        let mn = cx.node(m);
        if other(mn) != Some(g.clone()) || cx.sole_consumer(&g) != Some(m) {
            return Ok(false);
        }
        let u = mn.outputs[0].clone();
        let Some(d) = cx.sole_consumer(&u) else {
            return Ok(false);
        };
        let dn = cx.node(d);
        if !is_onnx(dn, "Div") || dn.inputs.len() != 2 || dn.inputs[0] != u || dn.outputs.len() != 1 {
            return Ok(false);
        }
        if scalar_constant(cx, &dn.inputs[1]) != Some(6.0) {
            return Ok(false);
        }
        if [&t, &g, &u].iter().any(|v| cx.is_graph_output(v)) {
            return Ok(false);
        }
        let out = dn.outputs[0].clone();
        make_fused(cx, node, CONV, Activation::HardSwish, &out);
        cx.remove_nodes(&[a, c, m, d]);
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
