//! BatchNormalization folding: into the Conv, ConvTranspose, Gemm or MatMul
//! that produces its input, or, for a BatchNormalization with no foldable
//! producer, into a per-channel Mul + Add.
//!
//! Inference-mode BatchNormalization computes, per channel `c` (axis 1),
//! `y = (x - mean[c]) / sqrt(var[c] + epsilon) * scale[c] + B[c]` (ONNX
//! operator spec, <https://onnx.ai/onnx/operators/onnx__BatchNormalization.html>),
//! i.e. the per-channel affine map `y = x * s[c] + t[c]` with
//! `s = scale / sqrt(var + epsilon)` and `t = B - mean * s`. Every rule here
//! computes `s` and `t` in f64 and stores the folded tensors in the element
//! type of the tensor they replace (f32 for f32 models).
//!
//! The helpers that fold a per-channel affine map into a Conv are shared with
//! [`super::conv_fold`] (per-channel Mul and Add folding).

use crate::{Ctx, Level, Rule};
use kiln_ir::{DType, Node, Result, Tensor};

/// The rules of this family, in run order.
pub fn rules() -> Vec<Box<dyn Rule>> {
    vec![
        Box::new(FoldBatchNormIntoConv),
        Box::new(FoldBatchNormIntoConvTranspose),
        Box::new(FoldBatchNormIntoGemm),
        Box::new(FoldBatchNormIntoMatMul),
        Box::new(BatchNormToScaleShift),
    ]
}

// ---------------------------------------------------------------------------
// Shared helpers (also used by `conv_fold`).

/// True if `n` is the default-domain op `op`.
pub(crate) fn is_op(n: &Node, op: &str) -> bool {
    n.op_type == op && (n.domain.is_empty() || n.domain == "ai.onnx")
}

/// Input `i` of node `n`, if present and not omitted.
pub(crate) fn input(n: &Node, i: usize) -> Option<&str> {
    n.inputs.get(i).map(|s| s.as_str()).filter(|s| !s.is_empty())
}

/// The constant (initializer) `name` if it is float or float16.
pub(crate) fn float_const<'c>(cx: &'c Ctx, name: &str) -> Option<&'c Tensor> {
    cx.constant(name).filter(|t| t.dtype().is_float())
}

/// True if the initializer `name` may be overwritten in place: it is read
/// by node `node` only, exactly once, and is neither a graph input nor a
/// graph output.
pub(crate) fn exclusive(cx: &Ctx, name: &str, node: usize) -> bool {
    cx.constant(name).is_some()
        && !cx.is_graph_output(name)
        && cx.consumers(name) == [node]
        && cx.node(node).inputs.iter().filter(|i| *i == name).count() == 1
}

/// A tensor of `dtype` and `dims` from f64 values (rounded through f32).
pub(crate) fn tensor_f64(dims: Vec<usize>, v: &[f64], dtype: DType) -> Result<Tensor> {
    let t = Tensor::from_vec(dims, v.iter().map(|&x| x as f32).collect::<Vec<f32>>())?;
    Ok(t.cast(dtype))
}

/// Makes input `slot` of node `node` the constant `t`: the current
/// initializer is overwritten in place (keeping its name) when
/// [`exclusive`] allows; otherwise `t` becomes a new initializer named
/// after `hint` and the node reads it.
pub(crate) fn store_input(cx: &mut Ctx, node: usize, slot: usize, t: Tensor, hint: &str) {
    if let Some(old) = input(cx.node(node), slot).map(str::to_string) {
        if exclusive(cx, &old, node) {
            cx.model.graph.initializers.insert(old, t);
            return;
        }
    }
    let name = cx.add_initializer(hint, t);
    let n = cx.node_mut(node);
    if n.inputs.len() <= slot {
        n.inputs.resize(slot + 1, String::new());
    }
    n.inputs[slot] = name;
}

/// Which convolution a per-channel affine map is folded into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConvKind {
    /// `Conv`: W is `[M, C/group, k...]`, output channel `m` is W's first axis.
    Conv,
    /// `ConvTranspose`: W is `[C, M/group, k...]`, output channel
    /// `m = (c / (C/group)) * (M/group) + j` for `W[c, j, ...]`.
    ConvTranspose,
}

/// A Conv/ConvTranspose whose weights (and bias) are constants.
#[derive(Debug, Clone)]
pub(crate) struct ConvTarget {
    /// Layout of W.
    pub kind: ConvKind,
    /// Output channels.
    pub m: usize,
    /// `group` attribute.
    pub group: usize,
}

/// Guards for folding into node `conv`: it is a default-domain `kind` op
/// with a constant float W of rank >= 3, and a bias that is absent or a
/// constant 1-D `[M]` of W's type.
pub(crate) fn conv_target(cx: &Ctx, conv: usize, kind: ConvKind) -> Result<Option<ConvTarget>> {
    let n = cx.node(conv);
    let op = match kind {
        ConvKind::Conv => "Conv",
        ConvKind::ConvTranspose => "ConvTranspose",
    };
    if !is_op(n, op) || n.outputs.len() != 1 {
        return Ok(None);
    }
    let Some(w) = input(n, 1).and_then(|w| float_const(cx, w)) else {
        return Ok(None);
    };
    let ws = w.shape();
    if ws.len() < 3 {
        return Ok(None);
    }
    let group = n.attr_int("group", 1)?;
    let Ok(group) = usize::try_from(group) else {
        return Ok(None);
    };
    if group == 0 {
        return Ok(None);
    }
    let m = match kind {
        ConvKind::Conv => ws[0],
        ConvKind::ConvTranspose => {
            if ws[0] % group != 0 {
                return Ok(None);
            }
            let Some(m) = ws[1].checked_mul(group) else {
                return Ok(None);
            };
            m
        }
    };
    if let Some(b) = input(n, 2) {
        let Some(b) = float_const(cx, b) else {
            return Ok(None);
        };
        if b.shape() != [m] || b.dtype() != w.dtype() {
            return Ok(None);
        }
    }
    Ok(Some(ConvTarget { kind, m, group }))
}

/// Folds `y = conv(x) * s[m] + t[m]` into the conv `conv` (a [`conv_target`]):
/// `W'[.. m ..] = W * s[m]`, `b'[m] = b[m] * s[m] + t[m]` (a bias is created
/// when absent and `t` is given), and the conv writes `out`. New tensors
/// replace the old in place when only this conv reads them (see
/// [`store_input`]), else are added under names derived from `hint`.
/// `s` and `t` have `M` entries.
pub(crate) fn fold_affine_into_conv(
    cx: &mut Ctx,
    conv: usize,
    tg: &ConvTarget,
    s: &[f64],
    t: Option<&[f64]>,
    out: &str,
    hint: &str,
) -> Result<()> {
    let n = cx.node(conv);
    let w_name = n.inputs[1].clone();
    let w = cx
        .constant(&w_name)
        .ok_or_else(|| n.err(kiln_ir::ErrorKind::Internal, "conv weight is no longer constant"))?;
    let (dims, dtype) = (w.shape().to_vec(), w.dtype());
    let mut wv = w.to_f64_vec();
    let kvol: usize = dims[2..].iter().product();
    match tg.kind {
        ConvKind::Conv => {
            let per = (dims[1] * kvol).max(1);
            for (m, block) in wv.chunks_mut(per).enumerate() {
                block.iter_mut().for_each(|v| *v *= s[m]);
            }
        }
        ConvKind::ConvTranspose => {
            let (mg, cg) = (dims[1], dims[0] / tg.group);
            if mg * kvol > 0 && cg > 0 {
                for (i, v) in wv.iter_mut().enumerate() {
                    let c = i / (mg * kvol);
                    let j = (i / kvol) % mg;
                    *v *= s[(c / cg) * mg + j];
                }
            }
        }
    }
    let old_b: Option<Vec<f64>> = input(n, 2).and_then(|b| cx.constant(b)).map(|b| b.to_f64_vec());
    let new_b: Option<Vec<f64>> = match (old_b, t) {
        (Some(b), t) => Some((0..tg.m).map(|m| b[m] * s[m] + t.map_or(0.0, |t| t[m])).collect()),
        (None, Some(t)) => Some(t.to_vec()),
        (None, None) => None,
    };
    let w_new = tensor_f64(dims, &wv, dtype)?;
    store_input(cx, conv, 1, w_new, &format!("{hint}_W"));
    if let Some(b) = new_b {
        let b_new = tensor_f64(vec![tg.m], &b, dtype)?;
        store_input(cx, conv, 2, b_new, &format!("{hint}_B"));
    }
    cx.node_mut(conv).outputs[0] = out.to_string();
    Ok(())
}

/// The per-channel affine map `y = x * s + t` of one BatchNormalization.
#[derive(Debug, Clone)]
pub(crate) struct Affine {
    /// `scale / sqrt(var + epsilon)`.
    pub s: Vec<f64>,
    /// `B - mean * s`.
    pub t: Vec<f64>,
}

/// Guards for a foldable BatchNormalization at node `bn`: default domain,
/// inference mode (no `training_mode`, no optional outputs), `spatial = 1`
/// before opset 9, and scale, B, mean and var all float constants
/// (initializers, not graph inputs) of the same 1-D shape `[C]`, giving
/// finite `s` and `t`. Returns the affine map.
pub(crate) fn bn_affine(cx: &Ctx, bn: usize) -> Result<Option<Affine>> {
    let n = cx.node(bn);
    if !is_op(n, "BatchNormalization") || n.inputs.len() != 5 {
        return Ok(None);
    }
    if n.outputs.first().is_none_or(|o| o.is_empty()) || n.outputs.iter().skip(1).any(|o| !o.is_empty()) {
        return Ok(None);
    }
    if cx.opset() >= 14 && n.attr_int("training_mode", 0)? != 0 {
        return Ok(None);
    }
    if cx.opset() < 9 && n.attr_int("spatial", 1)? != 1 {
        return Ok(None);
    }
    let eps = n.attr_float("epsilon", 1e-5)? as f64;
    let mut p: Vec<Vec<f64>> = Vec::with_capacity(4);
    let mut c = None;
    for i in 1..5 {
        let Some(t) = input(n, i).and_then(|v| float_const(cx, v)) else {
            return Ok(None);
        };
        if t.rank() != 1 || c.is_some_and(|c| c != t.len()) {
            return Ok(None);
        }
        c = Some(t.len());
        p.push(t.to_f64_vec());
    }
    let (scale, b, mean, var) = (&p[0], &p[1], &p[2], &p[3]);
    let mut s = Vec::with_capacity(scale.len());
    let mut t = Vec::with_capacity(scale.len());
    for k in 0..scale.len() {
        let d = var[k] + eps;
        if d.is_nan() || d <= 0.0 {
            return Ok(None);
        }
        let sk = scale[k] / d.sqrt();
        let tk = b[k] - mean[k] * sk;
        if !sk.is_finite() || !tk.is_finite() {
            return Ok(None);
        }
        s.push(sk);
        t.push(tk);
    }
    Ok(Some(Affine { s, t }))
}

/// A BatchNormalization at `bn` whose input X is the first output of a
/// default-domain `op` node read by this BN only (and not a graph output):
/// the producer's index and the affine map.
fn bn_after(cx: &Ctx, bn: usize, op: &str) -> Result<Option<(usize, Affine)>> {
    let n = cx.node(bn);
    if !is_op(n, "BatchNormalization") {
        return Ok(None);
    }
    let Some(x) = input(n, 0) else { return Ok(None) };
    let Some(p) = cx.producer(x) else { return Ok(None) };
    if !is_op(cx.node(p), op) || cx.node(p).outputs.first().map(|s| s.as_str()) != Some(x) {
        return Ok(None);
    }
    if cx.sole_consumer(x) != Some(bn) {
        return Ok(None);
    }
    Ok(bn_affine(cx, bn)?.map(|a| (p, a)))
}

/// Guards of the two conv folds: the producer's index, its target and the map.
fn conv_plan(cx: &Ctx, bn: usize, kind: ConvKind) -> Result<Option<(usize, ConvTarget, Affine)>> {
    let op = match kind {
        ConvKind::Conv => "Conv",
        ConvKind::ConvTranspose => "ConvTranspose",
    };
    let Some((p, aff)) = bn_after(cx, bn, op)? else {
        return Ok(None);
    };
    let Some(tg) = conv_target(cx, p, kind)? else {
        return Ok(None);
    };
    if tg.m != aff.s.len() {
        return Ok(None);
    }
    Ok(Some((p, tg, aff)))
}

/// Applies a conv fold planned by [`conv_plan`].
fn apply_conv(cx: &mut Ctx, bn: usize, kind: ConvKind) -> Result<bool> {
    let Some((p, tg, aff)) = conv_plan(cx, bn, kind)? else {
        return Ok(false);
    };
    let (y, hint) = (cx.node(bn).outputs[0].clone(), cx.node(bn).name.clone());
    fold_affine_into_conv(cx, p, &tg, &aff.s, Some(&aff.t), &y, &hint)?;
    cx.remove_nodes(&[bn]);
    Ok(true)
}

/// What folding a BN into a Gemm needs.
struct GemmPlan {
    gemm: usize,
    aff: Affine,
    trans_b: bool,
    /// `beta * C` broadcast to `[N]`.
    c: Vec<f64>,
}

/// Guards of `fold-batchnorm-into-gemm`.
fn gemm_plan(cx: &Ctx, bn: usize) -> Result<Option<GemmPlan>> {
    let Some((p, aff)) = bn_after(cx, bn, "Gemm")? else {
        return Ok(None);
    };
    let g = cx.node(p);
    let Some(b) = input(g, 1).and_then(|b| float_const(cx, b)) else {
        return Ok(None);
    };
    if b.rank() != 2 {
        return Ok(None);
    }
    let trans_b = g.attr_int("transB", 0)? != 0;
    let n = b.shape()[if trans_b { 0 } else { 1 }];
    if n != aff.s.len() || cx.value_type(&g.outputs[0]).and_then(|t| t.rank()) != Some(2) {
        return Ok(None);
    }
    let beta = g.attr_float("beta", 1.0)? as f64;
    let c = match input(g, 2) {
        None => vec![0.0; n],
        Some(c) => {
            let Some(c) = float_const(cx, c) else {
                return Ok(None);
            };
            let cs = c.shape();
            let ok = match cs.len() {
                0 => true,
                1 => cs[0] == 1 || cs[0] == n,
                2 => cs[0] == 1 && (cs[1] == 1 || cs[1] == n),
                _ => false,
            };
            if !ok || c.dtype() != b.dtype() {
                return Ok(None);
            }
            let v = c.to_f64_vec();
            (0..n)
                .map(|j| beta * if v.len() == 1 { v[0] } else { v[j] })
                .collect()
        }
    };
    Ok(Some(GemmPlan {
        gemm: p,
        aff,
        trans_b,
        c,
    }))
}

/// Guards of `fold-batchnorm-into-matmul`: the MatMul's index and the map.
fn matmul_plan(cx: &Ctx, bn: usize) -> Result<Option<(usize, Affine)>> {
    let Some((p, aff)) = bn_after(cx, bn, "MatMul")? else {
        return Ok(None);
    };
    let mm = cx.node(p);
    let (Some(a), Some(b)) = (input(mm, 0), input(mm, 1)) else {
        return Ok(None);
    };
    let Some(at) = cx.value_type(a) else {
        return Ok(None);
    };
    let Some(bt) = float_const(cx, b) else {
        return Ok(None);
    };
    if at.rank() != Some(2) || bt.rank() != 2 || bt.shape()[1] != aff.s.len() || at.dtype != bt.dtype() {
        return Ok(None);
    }
    Ok(Some((p, aff)))
}

/// Scales the N output columns of a constant Gemm/MatMul B (`[K, N]`, or
/// `[N, K]` when `trans_b`) by `s`.
fn scale_b(b: &Tensor, s: &[f64], trans_b: bool) -> Result<Tensor> {
    let (r, c) = (b.shape()[0], b.shape()[1]);
    let mut v = b.to_f64_vec();
    for (i, row) in v.chunks_mut(c.max(1)).enumerate() {
        for (j, x) in row.iter_mut().enumerate() {
            *x *= if trans_b { s[i] } else { s[j] };
        }
    }
    tensor_f64(vec![r, c], &v, b.dtype())
}

// ---------------------------------------------------------------------------
// Rules.

/// `fold-batchnorm-into-conv`: Conv → BatchNormalization becomes one Conv.
///
/// Guards: the BatchNormalization is in inference mode (default domain, no
/// `training_mode`, no optional outputs, `spatial = 1` before opset 9); its X
/// is the output of a default-domain Conv, read by this BN only and not a
/// graph output; scale, B, mean and var are constants (initializers, not graph
/// inputs nor computed values) of shape `[M]`, M = W's first axis (output
/// channels, whatever `group`, so depthwise convs fold too); W is a constant
/// and the Conv's bias is absent or a constant `[M]`.
///
/// Patch: with `s = scale / sqrt(var + epsilon)` (f64),
/// `W'[m, ...] = W[m, ...] * s[m]` and `b'[m] = (b[m] - mean[m]) * s[m] + B[m]`
/// (b = 0 when absent); the Conv writes the BN's output and the BN is removed.
/// W and b are overwritten in place (same name) when this Conv is their only
/// reader, else stored as new initializers named after the BN.
///
/// Source: the BatchNormalization formula of the ONNX operator spec, expanded
/// through the Conv's linearity in W and b (as ONNX Runtime's
/// `ConvBNFusion`).
#[derive(Debug, Clone, Copy, Default)]
pub struct FoldBatchNormIntoConv;

impl Rule for FoldBatchNormIntoConv {
    fn name(&self) -> &'static str {
        "fold-batchnorm-into-conv"
    }
    fn level(&self) -> Level {
        Level::Extended
    }
    fn describe(&self) -> &'static str {
        "fold an inference BatchNormalization with constant statistics into the Conv before it"
    }
    fn apply(&self, cx: &mut Ctx, node: usize) -> Result<bool> {
        apply_conv(cx, node, ConvKind::Conv)
    }
}

/// `fold-batchnorm-into-convtranspose`: ConvTranspose → BatchNormalization
/// becomes one ConvTranspose.
///
/// Guards: as `fold-batchnorm-into-conv`, with a default-domain ConvTranspose
/// producer whose constant W is `[C, M/group, k...]` and M = the BN's channel
/// count.
///
/// Patch: `W'[c, j, ...] = W[c, j, ...] * s[m]` with output channel
/// `m = (c / (C/group)) * (M/group) + j` (the channel axis is W's second,
/// per group), `b'[m] = (b[m] - mean[m]) * s[m] + B[m]`; the ConvTranspose
/// writes the BN's output and the BN is removed. The bias fills the whole
/// output (also an `output_shape`/`output_padding` margin), so the fold is
/// exact there too.
///
/// Source: ONNX BatchNormalization and ConvTranspose operator specs (W layout).
#[derive(Debug, Clone, Copy, Default)]
pub struct FoldBatchNormIntoConvTranspose;

impl Rule for FoldBatchNormIntoConvTranspose {
    fn name(&self) -> &'static str {
        "fold-batchnorm-into-convtranspose"
    }
    fn level(&self) -> Level {
        Level::Extended
    }
    fn describe(&self) -> &'static str {
        "fold an inference BatchNormalization with constant statistics into the ConvTranspose before it"
    }
    fn apply(&self, cx: &mut Ctx, node: usize) -> Result<bool> {
        apply_conv(cx, node, ConvKind::ConvTranspose)
    }
}

/// `fold-batchnorm-into-gemm`: Gemm → BatchNormalization becomes one Gemm.
///
/// Guards: the BN guards of `fold-batchnorm-into-conv`, with a default-domain
/// Gemm producer (output `[N_batch, N]`, so the BN normalizes the Gemm's N
/// columns; its channel count must be N); B is a constant 2-D float tensor
/// (`transB` 0 or 1); C is absent or a constant that broadcasts to `[N]`
/// alone (shape `[]`, `[1]`, `[N]`, `[1, 1]` or `[1, N]`: not varying along
/// the batch axis).
///
/// Patch: the N columns of B (rows when `transB = 1`) are scaled by `s`;
/// C becomes `C'[n] = beta * C[n] * s[n] + B_bn[n] - mean[n] * s[n]` of shape
/// `[N]`, `beta` is reset to 1 (`alpha` is kept); the Gemm writes the BN's
/// output and the BN is removed.
///
/// Source: ONNX Gemm (`Y = alpha * A' B' + beta * C`) and BatchNormalization specs.
#[derive(Debug, Clone, Copy, Default)]
pub struct FoldBatchNormIntoGemm;

impl Rule for FoldBatchNormIntoGemm {
    fn name(&self) -> &'static str {
        "fold-batchnorm-into-gemm"
    }
    fn level(&self) -> Level {
        Level::Extended
    }
    fn describe(&self) -> &'static str {
        "fold an inference BatchNormalization over a Gemm's output columns into the Gemm"
    }
    fn apply(&self, cx: &mut Ctx, node: usize) -> Result<bool> {
        let Some(p) = gemm_plan(cx, node)? else {
            return Ok(false);
        };
        let g = p.gemm;
        let b = cx.constant(&cx.node(g).inputs[1]).cloned();
        let Some(b) = b else { return Ok(false) };
        let b_new = scale_b(&b, &p.aff.s, p.trans_b)?;
        let c: Vec<f64> = (0..p.c.len()).map(|j| p.c[j] * p.aff.s[j] + p.aff.t[j]).collect();
        let c_new = tensor_f64(vec![c.len()], &c, b.dtype())?;
        let (y, hint) = (cx.node(node).outputs[0].clone(), cx.node(node).name.clone());
        store_input(cx, g, 1, b_new, &format!("{hint}_B"));
        store_input(cx, g, 2, c_new, &format!("{hint}_C"));
        let gn = cx.node_mut(g);
        gn.attrs.remove("beta");
        gn.outputs[0] = y;
        cx.remove_nodes(&[node]);
        Ok(true)
    }
}

/// `fold-batchnorm-into-matmul`: MatMul → BatchNormalization becomes a Gemm.
///
/// Guards: the BN guards of `fold-batchnorm-into-conv`, with a default-domain
/// MatMul producer whose A has static rank 2 and whose B is a constant 2-D
/// `[K, N]` of A's type, N = the BN's channel count. The BN normalizes axis 1,
/// which is the MatMul's channel (N) axis only for a 2-D output: batched
/// MatMuls do not fold.
///
/// Patch: the MatMul becomes `Gemm(A, B', C')` (alpha = beta = 1, no
/// transposes) with `B'[k, n] = B[k, n] * s[n]` and `C'[n] = B_bn[n] -
/// mean[n] * s[n]`, writing the BN's output; the BN is removed.
///
/// Source: ONNX MatMul, Gemm and BatchNormalization specs.
#[derive(Debug, Clone, Copy, Default)]
pub struct FoldBatchNormIntoMatMul;

impl Rule for FoldBatchNormIntoMatMul {
    fn name(&self) -> &'static str {
        "fold-batchnorm-into-matmul"
    }
    fn level(&self) -> Level {
        Level::Extended
    }
    fn describe(&self) -> &'static str {
        "fold an inference BatchNormalization after a 2-D MatMul with constant B into a Gemm"
    }
    fn apply(&self, cx: &mut Ctx, node: usize) -> Result<bool> {
        let Some((mm, aff)) = matmul_plan(cx, node)? else {
            return Ok(false);
        };
        let b = cx.constant(&cx.node(mm).inputs[1]).cloned();
        let Some(b) = b else { return Ok(false) };
        let b_new = scale_b(&b, &aff.s, false)?;
        let c_new = tensor_f64(vec![aff.t.len()], &aff.t, b.dtype())?;
        let (y, hint) = (cx.node(node).outputs[0].clone(), cx.node(node).name.clone());
        store_input(cx, mm, 1, b_new, &format!("{hint}_B"));
        let c_name = cx.add_initializer(&format!("{hint}_C"), c_new);
        let n = cx.node_mut(mm);
        n.op_type = "Gemm".to_string();
        n.domain = String::new();
        n.attrs.clear();
        n.inputs.truncate(2);
        n.inputs.push(c_name);
        n.outputs = vec![y];
        cx.remove_nodes(&[node]);
        Ok(true)
    }
}

/// `batchnorm-to-scale-shift`: a lone BatchNormalization becomes
/// `Add(Mul(X, s), t)`.
///
/// Guards: the BN guards of `fold-batchnorm-into-conv` (inference mode,
/// constant statistics); X has a static rank >= 2 and a float type (and, when
/// known, C channels on axis 1); X's producer is not foldable by one of the
/// rules above (those run first and remove the node outright).
///
/// Patch: the BN is replaced by `Mul(X, s)` then `Add(., t)` writing the BN's
/// output, with `s = scale / sqrt(var + epsilon)` and `t = B - mean * s`
/// stored as `[C, 1, ..., 1]` (rank - 1 dims, so they broadcast along axis 1)
/// in X's type. The node count grows by one, but the two ops are cheap,
/// elementwise, and foldable by later rules.
///
/// Source: the ONNX BatchNormalization formula.
#[derive(Debug, Clone, Copy, Default)]
pub struct BatchNormToScaleShift;

impl Rule for BatchNormToScaleShift {
    fn name(&self) -> &'static str {
        "batchnorm-to-scale-shift"
    }
    fn level(&self) -> Level {
        Level::Extended
    }
    fn describe(&self) -> &'static str {
        "rewrite a BatchNormalization with constant statistics and no foldable producer as Mul + Add"
    }
    fn apply(&self, cx: &mut Ctx, node: usize) -> Result<bool> {
        let Some(aff) = bn_affine(cx, node)? else {
            return Ok(false);
        };
        let n = cx.node(node);
        let x = n.inputs[0].clone();
        let Some(xt) = cx.value_type(&x) else {
            return Ok(false);
        };
        let Some(dims) = &xt.shape else { return Ok(false) };
        let c = aff.s.len();
        if dims.len() < 2 || !xt.dtype.is_float() || dims[1].known().is_some_and(|d| d != c) {
            return Ok(false);
        }
        let (rank, dtype) = (dims.len(), xt.dtype);
        if conv_plan(cx, node, ConvKind::Conv)?.is_some()
            || conv_plan(cx, node, ConvKind::ConvTranspose)?.is_some()
            || gemm_plan(cx, node)?.is_some()
            || matmul_plan(cx, node)?.is_some()
        {
            return Ok(false);
        }
        let mut pdims = vec![c];
        pdims.resize(rank - 1, 1);
        let (y, name) = (n.outputs[0].clone(), n.name.clone());
        let s_name = cx.add_initializer(
            &format!("{name}_scale"),
            tensor_f64(pdims.clone(), &aff.s, dtype)?,
        );
        let t_name = cx.add_initializer(&format!("{name}_shift"), tensor_f64(pdims, &aff.t, dtype)?);
        let mid = cx.fresh_name(&format!("{y}_scaled"));
        let add_name = cx.fresh_name(&format!("{name}_add"));
        let mul = Node::new(&name, "Mul", &[&x, &s_name], &[&mid]);
        let add = Node::new(&add_name, "Add", &[&mid, &t_name], &[&y]);
        *cx.node_mut(node) = mul;
        cx.model.graph.nodes.push(add);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_b_columns_and_rows() {
        let b = Tensor::from_vec(vec![2, 3], vec![1f32, 2., 3., 4., 5., 6.]).unwrap();
        let s = [1.0, 10.0, 100.0];
        let t = scale_b(&b, &s, false).unwrap();
        assert_eq!(t.into_vec::<f32>().unwrap(), vec![1., 20., 300., 4., 50., 600.]);
        let t = scale_b(&b, &s[..2], true).unwrap();
        assert_eq!(t.into_vec::<f32>().unwrap(), vec![1., 2., 3., 40., 50., 60.]);
    }

    #[test]
    fn op_and_input_helpers() {
        let mut n = Node::new("g", "Gemm", &["a", "b", ""], &["y"]);
        assert!(is_op(&n, "Gemm") && !is_op(&n, "MatMul"));
        assert_eq!(input(&n, 1), Some("b"));
        assert_eq!(input(&n, 2), None);
        n.domain = "kiln".into();
        assert!(!is_op(&n, "Gemm"));
    }
}
