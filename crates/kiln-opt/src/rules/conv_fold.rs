//! Folds into convolutions and GEMMs: a zero Pad into Conv/AveragePool pads,
//! a per-output-channel constant Mul or Add into the Conv before it, and a
//! 2-D MatMul followed by a constant bias Add into one Gemm.
//!
//! Numeric folds compute in f64 and store in the weight's element type, with
//! the helpers of [`super::batchnorm`].

use super::batchnorm::{conv_target, float_const, fold_affine_into_conv, input, is_op, ConvKind, ConvTarget};
use crate::{Ctx, Level, Rule};
use kiln_ir::{Attribute, Result};

/// The rules of this family, in run order.
pub fn rules() -> Vec<Box<dyn Rule>> {
    vec![
        Box::new(FoldPadIntoConv),
        Box::new(FoldMulIntoConv),
        Box::new(FoldAddIntoConv),
        Box::new(FuseMatMulAddIntoGemm),
    ]
}

/// Per-axis `(begin, end)` pads of node `pad` when it is a default-domain
/// Pad that pads with zeros: mode `constant`; pads a constant (the `pads`
/// attribute before opset 11, a constant input from 11); pad value 0 (the
/// `value` attribute before opset 11; from 11 the `constant_value` input
/// absent, or a constant of zeros); `axes` (opset 18) absent or constant;
/// no negative (cropping) pads. `rank` is the data's static rank.
fn zero_pad_amounts(cx: &Ctx, pad: usize, rank: usize) -> Result<Option<Vec<(i64, i64)>>> {
    let n = cx.node(pad);
    if !is_op(n, "Pad") || n.attr_string("mode", "constant")? != "constant" {
        return Ok(None);
    }
    let (pads, axes) = if cx.opset() < 11 {
        let Some(p) = n.attr_ints_opt("pads")? else {
            return Ok(None);
        };
        if n.attr_float("value", 0.0)? != 0.0 {
            return Ok(None);
        }
        (p, None)
    } else {
        let Some(p) = input(n, 1).and_then(|p| cx.constant(p)) else {
            return Ok(None);
        };
        let Ok(p) = p.to_i64_vec() else { return Ok(None) };
        if let Some(cv) = input(n, 2) {
            let Some(cv) = cx.constant(cv) else {
                return Ok(None);
            };
            if cv.to_f64_vec().iter().any(|&v| v != 0.0) {
                return Ok(None);
            }
        }
        let axes = match input(n, 3) {
            Some(a) if cx.opset() >= 18 => {
                let Some(a) = cx.constant(a) else { return Ok(None) };
                let Ok(a) = a.to_i64_vec() else { return Ok(None) };
                Some(a)
            }
            _ => None,
        };
        (p, axes)
    };
    let axes: Vec<usize> = match axes {
        None => (0..rank).collect(),
        Some(a) => {
            let mut v = Vec::with_capacity(a.len());
            for x in a {
                let x = if x < 0 { x + rank as i64 } else { x };
                if x < 0 || x >= rank as i64 || v.contains(&(x as usize)) {
                    return Ok(None);
                }
                v.push(x as usize);
            }
            v
        }
    };
    let k = axes.len();
    if pads.len() != 2 * k || pads.iter().any(|&p| p < 0) {
        return Ok(None);
    }
    let mut out = vec![(0i64, 0i64); rank];
    for (i, &a) in axes.iter().enumerate() {
        out[a] = (pads[i], pads[k + i]);
    }
    Ok(Some(out))
}

/// `fold-pad-into-conv`: Pad → Conv (or AveragePool) becomes one Conv
/// (AveragePool) with larger `pads`.
///
/// Guards: the node is a default-domain Conv or AveragePool whose X is the
/// output of a Pad read by this node only (and not a graph output); the Pad
/// pads with zeros (mode `constant`, value 0 or absent; attribute form before
/// opset 11, input form from 11, `axes` from 18) by constant, non-negative
/// amounts, only on the spatial axes (none on N and C), and the data has a
/// static rank >= 3; the node's `auto_pad` is `NOTSET` (or absent) and its
/// `pads` (if any) have 2 values per spatial axis. AveragePool also needs
/// `count_include_pad = 1` (else the padded zeros would not count), no
/// `ceil_mode` (which drops windows by the unpadded size), and the summed
/// pads smaller than the kernel extent (a pool constraint). MaxPool never
/// folds: it pads with -inf, not 0.
///
/// Patch: the node's pads become its own plus the Pad's, in the ONNX layout
/// `[x1_begin, x2_begin, ..., x1_end, x2_end, ...]`; it reads the Pad's input
/// and the Pad is removed.
///
/// Source: ONNX Pad, Conv and AveragePool specs (explicit padding with zeros
/// equals the op's implicit zero padding).
#[derive(Debug, Clone, Copy, Default)]
pub struct FoldPadIntoConv;

impl Rule for FoldPadIntoConv {
    fn name(&self) -> &'static str {
        "fold-pad-into-conv"
    }
    fn level(&self) -> Level {
        Level::Extended
    }
    fn describe(&self) -> &'static str {
        "fold a zero constant Pad of the spatial axes into the pads of the Conv/AveragePool after it"
    }
    fn apply(&self, cx: &mut Ctx, node: usize) -> Result<bool> {
        let n = cx.node(node);
        let is_avg = is_op(n, "AveragePool");
        if !is_op(n, "Conv") && !is_avg {
            return Ok(false);
        }
        let Some(p_out) = input(n, 0) else {
            return Ok(false);
        };
        let Some(pad) = cx.producer(p_out) else {
            return Ok(false);
        };
        if cx.node(pad).outputs.first().map(|s| s.as_str()) != Some(p_out)
            || cx.sole_consumer(p_out) != Some(node)
        {
            return Ok(false);
        }
        let Some(x) = input(cx.node(pad), 0) else {
            return Ok(false);
        };
        let Some(rank) = cx.value_type(x).and_then(|t| t.rank()) else {
            return Ok(false);
        };
        if rank < 3 {
            return Ok(false);
        }
        let nsp = rank - 2;
        let Some(amounts) = zero_pad_amounts(cx, pad, rank)? else {
            return Ok(false);
        };
        if amounts[0] != (0, 0) || amounts[1] != (0, 0) {
            return Ok(false);
        }
        if n.attr_string("auto_pad", "NOTSET")? != "NOTSET" {
            return Ok(false);
        }
        let old = n.attr_ints_opt("pads")?.unwrap_or_else(|| vec![0; 2 * nsp]);
        if old.len() != 2 * nsp {
            return Ok(false);
        }
        let mut new = old.clone();
        for i in 0..nsp {
            let (b, e) = amounts[2 + i];
            let (Some(nb), Some(ne)) = (old[i].checked_add(b), old[nsp + i].checked_add(e)) else {
                return Ok(false);
            };
            new[i] = nb;
            new[nsp + i] = ne;
        }
        if is_avg {
            if n.attr_int("count_include_pad", 0)? != 1 || n.attr_int("ceil_mode", 0)? != 0 {
                return Ok(false);
            }
            let Some(k) = n.attr_ints_opt("kernel_shape")? else {
                return Ok(false);
            };
            let d = match n.attr_ints_opt("dilations")? {
                Some(d) if cx.opset() >= 19 => d,
                _ => vec![1; nsp],
            };
            if k.len() != nsp || d.len() != nsp {
                return Ok(false);
            }
            for i in 0..nsp {
                let Some(ek) = k[i]
                    .checked_sub(1)
                    .and_then(|k1| k1.checked_mul(d[i]))
                    .and_then(|v| v.checked_add(1))
                else {
                    return Ok(false);
                };
                if new[i] >= ek || new[nsp + i] >= ek {
                    return Ok(false);
                }
            }
        }
        let x = x.to_string();
        let c = cx.node_mut(node);
        c.attrs.insert("pads".to_string(), Attribute::Ints(new));
        c.inputs[0] = x;
        cx.remove_nodes(&[pad]);
        Ok(true)
    }
}

/// What [`per_channel_plan`] found: the Conv's index and target, the
/// constant expanded to `M` values, and the Mul/Add's output.
struct ChannelPlan {
    conv: usize,
    target: ConvTarget,
    c: Vec<f64>,
    out: String,
}

/// A per-output-channel constant applied to a Conv's output by node `node`
/// (a default-domain `op` with two inputs): the Conv's index and target, the
/// constant expanded to `M` values, and the node's output.
///
/// Guards: one operand (either side: Mul and Add are commutative) is the
/// output of a default-domain Conv read by this node only and not a graph
/// output; the other is a float constant of W's type, of rank <= the conv
/// output's static rank, which, right-aligned to that rank, is 1 on every
/// axis except axis 1 (channels), where it is 1 or M (a scalar counts); all
/// its values are finite; the Conv passes [`conv_target`].
fn per_channel_plan(cx: &Ctx, node: usize, op: &str) -> Result<Option<ChannelPlan>> {
    let n = cx.node(node);
    if !is_op(n, op) || n.inputs.len() != 2 || n.outputs.len() != 1 {
        return Ok(None);
    }
    for side in 0..2 {
        let (Some(y), Some(k)) = (input(n, side), input(n, 1 - side)) else {
            return Ok(None);
        };
        let Some(conv) = cx.producer(y) else { continue };
        if !is_op(cx.node(conv), "Conv") || cx.node(conv).outputs.first().map(|s| s.as_str()) != Some(y) {
            continue;
        }
        if cx.sole_consumer(y) != Some(node) {
            continue;
        }
        let Some(c) = float_const(cx, k) else { continue };
        let Some(tg) = conv_target(cx, conv, ConvKind::Conv)? else {
            continue;
        };
        let Some(w) = input(cx.node(conv), 1).and_then(|w| cx.constant(w)) else {
            continue;
        };
        let Some(r) = cx.value_type(y).and_then(|t| t.rank()) else {
            continue;
        };
        if c.dtype() != w.dtype() || c.rank() > r || r < 3 {
            continue;
        }
        let lead = r - c.rank();
        let per_channel = (0..r).all(|a| {
            let d = if a < lead { 1 } else { c.shape()[a - lead] };
            d == 1 || (a == 1 && d == tg.m)
        });
        if !per_channel {
            continue;
        }
        let v = c.to_f64_vec();
        if v.iter().any(|x| !x.is_finite()) || v.is_empty() {
            continue;
        }
        let v: Vec<f64> = if v.len() == 1 { vec![v[0]; tg.m] } else { v };
        return Ok(Some(ChannelPlan {
            conv,
            target: tg,
            c: v,
            out: n.outputs[0].clone(),
        }));
    }
    Ok(None)
}

/// `fold-mul-into-conv`: Conv → Mul by a per-output-channel constant becomes
/// one Conv.
///
/// Guards: those of the per-channel plan: the Mul's other operand (either
/// side) is a finite float constant that broadcasts per output channel (after
/// right-aligning to the conv output's rank it is 1 on every axis but axis 1,
/// where it is 1 or M; a scalar counts): constants varying along N or a
/// spatial axis do not fold; the Conv output is read by this Mul only and is
/// not a graph output; W is constant, the bias absent or constant `[M]`.
///
/// Patch: `W'[m, ...] = W[m, ...] * c[m]`, `b'[m] = b[m] * c[m]` (no bias
/// stays no bias); the Conv writes the Mul's output and the Mul is removed.
/// W and b are overwritten in place when this Conv is their only reader.
///
/// Source: linearity of Conv (ONNX Conv spec) in W and b.
#[derive(Debug, Clone, Copy, Default)]
pub struct FoldMulIntoConv;

impl Rule for FoldMulIntoConv {
    fn name(&self) -> &'static str {
        "fold-mul-into-conv"
    }
    fn level(&self) -> Level {
        Level::Extended
    }
    fn describe(&self) -> &'static str {
        "fold a Mul by a per-output-channel constant into the Conv before it"
    }
    fn apply(&self, cx: &mut Ctx, node: usize) -> Result<bool> {
        let Some(ChannelPlan {
            conv,
            target: tg,
            c,
            out,
        }) = per_channel_plan(cx, node, "Mul")?
        else {
            return Ok(false);
        };
        let hint = cx.node(node).name.clone();
        fold_affine_into_conv(cx, conv, &tg, &c, None, &out, &hint)?;
        cx.remove_nodes(&[node]);
        Ok(true)
    }
}

/// `fold-add-into-conv`: Conv → Add of a per-output-channel constant becomes
/// one Conv.
///
/// Guards: as `fold-mul-into-conv`, for an Add.
///
/// Patch: `b'[m] = b[m] + c[m]` (a bias `c` is created when the Conv has
/// none); the Conv writes the Add's output and the Add is removed.
///
/// Source: the ONNX Conv spec (the bias is added per output channel).
#[derive(Debug, Clone, Copy, Default)]
pub struct FoldAddIntoConv;

impl Rule for FoldAddIntoConv {
    fn name(&self) -> &'static str {
        "fold-add-into-conv"
    }
    fn level(&self) -> Level {
        Level::Extended
    }
    fn describe(&self) -> &'static str {
        "fold an Add of a per-output-channel constant into the Conv's bias"
    }
    fn apply(&self, cx: &mut Ctx, node: usize) -> Result<bool> {
        let Some(ChannelPlan {
            conv,
            target: tg,
            c,
            out,
        }) = per_channel_plan(cx, node, "Add")?
        else {
            return Ok(false);
        };
        let hint = cx.node(node).name.clone();
        let ones = vec![1.0; tg.m];
        fold_affine_into_conv(cx, conv, &tg, &ones, Some(&c), &out, &hint)?;
        cx.remove_nodes(&[node]);
        Ok(true)
    }
}

/// `fuse-matmul-add-into-gemm`: MatMul(A, B) → Add of a constant bias
/// becomes `Gemm(A, B, C)`.
///
/// Guards: one Add operand (either side) is the output of a default-domain
/// MatMul read by this Add only and not a graph output; A and B have static
/// rank 2 (batched or vector MatMuls do not fuse); the other operand is a
/// float constant of the MatMul's type, of rank <= 2, each of whose
/// right-aligned dims is 1 or the known matching dim of the `[M, N]` output
/// (so it broadcasts to `[N]` or `[M, N]` without growing the output).
///
/// Patch: the MatMul becomes a Gemm (alpha = beta = 1, no transposes) reading
/// the bias as C and writing the Add's output; the Add is removed.
///
/// Source: ONNX Gemm spec (`Y = alpha * A B + beta * C`, C unidirectionally
/// broadcast to `[M, N]`).
#[derive(Debug, Clone, Copy, Default)]
pub struct FuseMatMulAddIntoGemm;

impl Rule for FuseMatMulAddIntoGemm {
    fn name(&self) -> &'static str {
        "fuse-matmul-add-into-gemm"
    }
    fn level(&self) -> Level {
        Level::Extended
    }
    fn describe(&self) -> &'static str {
        "fuse a 2-D MatMul and the constant bias Add after it into a Gemm"
    }
    fn apply(&self, cx: &mut Ctx, node: usize) -> Result<bool> {
        let n = cx.node(node);
        if !is_op(n, "Add") || n.inputs.len() != 2 || n.outputs.len() != 1 {
            return Ok(false);
        }
        for side in 0..2 {
            let (Some(y), Some(k)) = (input(n, side), input(n, 1 - side)) else {
                return Ok(false);
            };
            let Some(mm) = cx.producer(y) else { continue };
            let m = cx.node(mm);
            if !is_op(m, "MatMul") || m.outputs.first().map(|s| s.as_str()) != Some(y) {
                continue;
            }
            if cx.sole_consumer(y) != Some(node) {
                continue;
            }
            let (Some(a), Some(b)) = (input(m, 0), input(m, 1)) else {
                continue;
            };
            let rank = |v: &str| cx.value_type(v).and_then(|t| t.rank());
            if rank(a) != Some(2) || rank(b) != Some(2) {
                continue;
            }
            let Some(yt) = cx.value_type(y) else { continue };
            let Some(yd) = yt.shape.as_ref().filter(|d| d.len() == 2) else {
                continue;
            };
            let Some(c) = float_const(cx, k) else { continue };
            if c.dtype() != yt.dtype || c.rank() > 2 {
                continue;
            }
            let lead = 2 - c.rank();
            let fits = c
                .shape()
                .iter()
                .enumerate()
                .all(|(i, &d)| d == 1 || yd[lead + i].known() == Some(d));
            if !fits {
                continue;
            }
            let (a, b, k, out) = (a.to_string(), b.to_string(), k.to_string(), n.outputs[0].clone());
            let g = cx.node_mut(mm);
            g.op_type = "Gemm".to_string();
            g.domain = String::new();
            g.attrs.clear();
            g.inputs = vec![a, b, k];
            g.outputs = vec![out];
            cx.remove_nodes(&[node]);
            return Ok(true);
        }
        Ok(false)
    }
}
