//! Ops that build larger tensors: Pad, Tile, Expand, ConstantOfShape, Range.

use super::common::*;
use crate::ops::{broadcast_dims, broadcast_shapes, InferInput, OpCtx};
use crate::{map_data, DType, Dim, ErrorKind, Result, Tensor, TensorData, ValueType};

type Ins<'a, 'b> = &'a [Option<&'b InferInput>];
type Ts<'a, 'b> = &'a [Option<&'b Tensor>];

// ---------------------------------------------------------------------------
// Pad

#[derive(Debug, Clone, Copy, PartialEq)]
enum PadMode {
    Constant,
    Reflect,
    Edge,
    Wrap,
}

fn pad_mode(ctx: &OpCtx) -> Result<PadMode> {
    let m = ctx.node.attr_string("mode", "constant")?;
    Ok(match m.as_str() {
        "constant" => PadMode::Constant,
        "reflect" => PadMode::Reflect,
        "edge" => PadMode::Edge,
        "wrap" if ctx.opset >= 19 => PadMode::Wrap,
        "wrap" => {
            return Err(ctx.attr_err(
                "mode",
                format!("mode 'wrap' needs opset 19 or later (model opset {})", ctx.opset),
            ))
        }
        _ => return Err(ctx.attr_err("mode", format!("unknown pad mode '{m}'"))),
    })
}

/// Per-axis (begin, end) pads of a rank-`rank` input from the raw `pads`
/// values and the optional `axes` (opset 18).
fn pad_amounts(ctx: &OpCtx, rank: usize, pads: &[i64], axes_v: Option<&[i64]>) -> Result<Vec<(i64, i64)>> {
    let ax: Vec<usize> = match axes_v {
        Some(a) => axes(ctx, "axes", a, rank, true)?,
        None => (0..rank).collect(),
    };
    let n = ax.len();
    if pads.len() != 2 * n {
        let msg = format!(
            "pads has {} values, expected {} (2 per padded axis)",
            pads.len(),
            2 * n
        );
        return Err(if ctx.opset < 11 {
            ctx.attr_err("pads", msg)
        } else {
            ctx.err(ErrorKind::ShapeMismatch, msg)
        });
    }
    let mut out = vec![(0i64, 0i64); rank];
    for (i, &a) in ax.iter().enumerate() {
        out[a] = (pads[i], pads[n + i]);
    }
    Ok(out)
}

/// Padded size of an axis of size `dim`.
fn padded(ctx: &OpCtx, dim: usize, (b, e): (i64, i64), a: usize) -> Result<usize> {
    let v = dim as i128 + b as i128 + e as i128;
    if v < 0 {
        return Err(ctx.err(
            ErrorKind::ShapeMismatch,
            format!("pads ({b}, {e}) on axis {a} of size {dim} give a negative size"),
        ));
    }
    usize::try_from(v).map_err(|_| ctx.err(ErrorKind::LimitExceeded, "padded size overflows"))
}

pub(super) fn pad_infer(ctx: &OpCtx, ins: Ins) -> Result<Vec<ValueType>> {
    let x = ctx.infer_input(ins, 0)?;
    let dt = x.ty.dtype;
    pad_mode(ctx)?;
    let (pads, axes_v, axes_dynamic) = if ctx.opset < 11 {
        let p = ctx
            .node
            .attr_ints_opt("pads")?
            .ok_or_else(|| ctx.attr_err("pads", "required attribute is missing"))?;
        (Some(p), None, false)
    } else {
        if let Some(cv) = ctx.opt_infer_input(ins, 2) {
            if cv.ty.dtype != dt {
                return Err(ctx.err(
                    ErrorKind::TypeMismatch,
                    format!("constant_value is {}, data is {dt}", cv.ty.dtype),
                ));
            }
        }
        let p = const_ints(ctx, ctx.infer_input(ins, 1)?, "pads")?;
        let (a, dynamic) = match ctx.opt_infer_input(ins, 3) {
            Some(i) if ctx.opset >= 18 => {
                let v = const_ints(ctx, i, "axes")?;
                let d = v.is_none();
                (v, d)
            }
            _ => (None, false),
        };
        (p, a, dynamic)
    };
    let Some(dims) = x.ty.shape.as_deref() else {
        return Ok(vec![ValueType::unknown_rank(dt)]);
    };
    let out = match pads {
        Some(p) if !axes_dynamic => {
            let amounts = pad_amounts(ctx, dims.len(), &p, axes_v.as_deref())?;
            dims.iter()
                .zip(&amounts)
                .enumerate()
                .map(|(a, (d, &pe))| match d {
                    Dim::Known(k) => padded(ctx, *k, pe, a).map(Dim::Known),
                    Dim::Sym(_) if pe == (0, 0) => Ok(d.clone()),
                    Dim::Sym(_) => Ok(ctx.unknown_dim(0, a)),
                })
                .collect::<Result<Vec<_>>>()?
        }
        _ => unknown_dims(ctx, 0, dims.len()),
    };
    Ok(vec![ValueType::new(dt, out)])
}

pub(super) fn pad_eval(ctx: &OpCtx, ins: Ts) -> Result<Vec<Tensor>> {
    let x = ctx.input(ins, 0)?;
    let mode = pad_mode(ctx)?;
    let (pads, axes_v, fill) = if ctx.opset < 11 {
        let p = ctx
            .node
            .attr_ints_opt("pads")?
            .ok_or_else(|| ctx.attr_err("pads", "required attribute is missing"))?;
        let v = ctx.node.attr_float("value", 0.0)?;
        (p, None, Tensor::scalar(v).cast(x.dtype()))
    } else {
        let p = ctx.input(ins, 1)?;
        check_1d(ctx, p, "pads")?;
        let p = ints(ctx, p, "pads")?;
        let fill = match ctx.opt_input(ins, 2) {
            Some(c) if c.dtype() != x.dtype() => {
                return Err(ctx.err(
                    ErrorKind::TypeMismatch,
                    format!("constant_value is {}, data is {}", c.dtype(), x.dtype()),
                ))
            }
            Some(c) if !c.is_empty() => c.clone(),
            _ => Tensor::zeros(x.dtype(), vec![])?,
        };
        let a = match ctx.opt_input(ins, 3) {
            Some(t) if ctx.opset >= 18 => {
                check_1d(ctx, t, "axes")?;
                Some(ints(ctx, t, "axes")?)
            }
            _ => None,
        };
        (p, a, fill)
    };
    let amounts = pad_amounts(ctx, x.rank(), &pads, axes_v.as_deref())?;
    let mut out_shape = Vec::with_capacity(x.rank());
    // Per axis: (begin pad, crop start, cropped length) for the index maps.
    let mut plan = Vec::with_capacity(x.rank());
    for (a, (&d, &(b, e))) in x.shape().iter().zip(&amounts).enumerate() {
        let o = padded(ctx, d, (b, e), a)?;
        out_shape.push(o);
        let (b, e) = (b as i128, e as i128);
        let lo = (-b).max(0);
        let len = d as i128 - lo - (-e).max(0);
        let (pb, pe) = (b.max(0), e.max(0));
        if mode != PadMode::Constant && o > 0 && (pb > 0 || pe > 0) {
            let need = if mode == PadMode::Reflect { 2 } else { 1 };
            if len < need {
                return Err(ctx.err(
                    ErrorKind::ShapeMismatch,
                    format!(
                        "{mode:?} padding of axis {a} needs at least {need} element(s) after cropping, has {}",
                        len.max(0)
                    ),
                ));
            }
            if mode == PadMode::Reflect && (pb > len - 1 || pe > len - 1) {
                return Err(ctx.err(
                    ErrorKind::ShapeMismatch,
                    format!("reflect pads ({pb}, {pe}) on axis {a} exceed its size {len} minus 1"),
                ));
            }
        }
        plan.push((b, lo, len.max(0)));
    }
    checked_numel(ctx, &out_shape)?;
    let s = st(x.shape());
    let t = gather_axes(ctx, x, out_shape, Some(&fill), |k, o| {
        let (b, lo, len) = plan[k];
        let o = o as i128;
        let src = match mode {
            PadMode::Constant => {
                let i = o - b;
                if i < 0 || i >= x.shape()[k] as i128 {
                    return None;
                }
                i
            }
            _ => {
                if len <= 0 {
                    return None;
                }
                let c = o - b.max(0);
                let c = match mode {
                    PadMode::Edge => c.max(0).min(len - 1),
                    PadMode::Wrap => c.rem_euclid(len),
                    _ => {
                        if c < 0 {
                            -c
                        } else if c >= len {
                            2 * (len - 1) - c
                        } else {
                            c
                        }
                    }
                };
                lo + c
            }
        };
        usize::try_from(src).ok().map(|i| i * s[k])
    })?;
    Ok(vec![t])
}

// ---------------------------------------------------------------------------
// Tile

fn check_repeats(ctx: &OpCtx, reps: &[i64], rank: usize) -> Result<()> {
    if reps.len() != rank {
        return Err(ctx.err(
            ErrorKind::ShapeMismatch,
            format!("repeats has {} values for an input of rank {rank}", reps.len()),
        ));
    }
    if let Some(r) = reps.iter().find(|&&r| r < 0) {
        return Err(ctx.err(ErrorKind::InvalidModel, format!("repeats value {r} is negative")));
    }
    Ok(())
}

fn tiled(ctx: &OpCtx, d: usize, r: i64) -> Result<usize> {
    usize::try_from(r)
        .ok()
        .and_then(|r| d.checked_mul(r))
        .ok_or_else(|| ctx.err(ErrorKind::LimitExceeded, "tiled size overflows"))
}

pub(super) fn tile_infer(ctx: &OpCtx, ins: Ins) -> Result<Vec<ValueType>> {
    let x = ctx.infer_input(ins, 0)?;
    let reps = const_ints(ctx, ctx.infer_input(ins, 1)?, "repeats")?;
    let dt = x.ty.dtype;
    let Some(dims) = x.ty.shape.as_deref() else {
        return Ok(vec![ValueType::unknown_rank(dt)]);
    };
    let out = match reps {
        Some(r) => {
            check_repeats(ctx, &r, dims.len())?;
            dims.iter()
                .zip(&r)
                .enumerate()
                .map(|(a, (d, &r))| match d {
                    Dim::Known(k) => tiled(ctx, *k, r).map(Dim::Known),
                    Dim::Sym(_) if r == 1 => Ok(d.clone()),
                    Dim::Sym(_) if r == 0 => Ok(Dim::Known(0)),
                    Dim::Sym(_) => Ok(ctx.unknown_dim(0, a)),
                })
                .collect::<Result<Vec<_>>>()?
        }
        None => unknown_dims(ctx, 0, dims.len()),
    };
    Ok(vec![ValueType::new(dt, out)])
}

pub(super) fn tile_eval(ctx: &OpCtx, ins: Ts) -> Result<Vec<Tensor>> {
    let x = ctx.input(ins, 0)?;
    let r = ctx.input(ins, 1)?;
    check_1d(ctx, r, "repeats")?;
    let reps = ints(ctx, r, "repeats")?;
    check_repeats(ctx, &reps, x.rank())?;
    let out = x
        .shape()
        .iter()
        .zip(&reps)
        .map(|(&d, &r)| tiled(ctx, d, r))
        .collect::<Result<Vec<_>>>()?;
    let s = st(x.shape());
    let dims = x.shape();
    Ok(vec![gather_axes(ctx, x, out, None, |k, o| {
        Some((o % dims[k]) * s[k])
    })?])
}

// ---------------------------------------------------------------------------
// Expand

fn shape_values(ctx: &OpCtx, v: &[i64]) -> Result<Vec<usize>> {
    check_rank(ctx, v.len())?;
    v.iter()
        .map(|&d| {
            usize::try_from(d)
                .map_err(|_| ctx.err(ErrorKind::ShapeMismatch, format!("shape value {d} is negative")))
        })
        .collect()
}

pub(super) fn expand_infer(ctx: &OpCtx, ins: Ins) -> Result<Vec<ValueType>> {
    let x = ctx.infer_input(ins, 0)?;
    let s = ctx.infer_input(ins, 1)?;
    let dt = x.ty.dtype;
    let Some(dims) = x.ty.shape.as_deref() else {
        return Ok(vec![ValueType::unknown_rank(dt)]);
    };
    if let Some(v) = const_ints(ctx, s, "shape")? {
        let target = known(&shape_values(ctx, &v)?);
        let out = broadcast_dims(dims, &target).map_err(|e| ctx.err(e.kind, e.message))?;
        return Ok(vec![ValueType::new(dt, out)]);
    }
    let Some(n) = static_len(ctx, s, "shape")? else {
        return Ok(vec![ValueType::unknown_rank(dt)]);
    };
    check_rank(ctx, n)?;
    let r = n.max(dims.len());
    let out = (0..r)
        .map(|k| match (k + dims.len()).checked_sub(r).map(|i| &dims[i]) {
            Some(d @ Dim::Known(v)) if *v != 1 => d.clone(),
            _ => ctx.unknown_dim(0, k),
        })
        .collect();
    Ok(vec![ValueType::new(dt, out)])
}

pub(super) fn expand_eval(ctx: &OpCtx, ins: Ts) -> Result<Vec<Tensor>> {
    let x = ctx.input(ins, 0)?;
    let s = ctx.input(ins, 1)?;
    check_1d(ctx, s, "shape")?;
    let target = shape_values(ctx, &ints(ctx, s, "shape")?)?;
    let out = broadcast_shapes(x.shape(), &target).map_err(|e| ctx.err(e.kind, e.message))?;
    let r = out.len();
    let off = r - x.rank();
    let xs = st(x.shape());
    let dims = x.shape();
    Ok(vec![gather_axes(ctx, x, out, None, |k, o| {
        Some(match k.checked_sub(off) {
            Some(i) if dims[i] != 1 => o * xs[i],
            _ => 0,
        })
    })?])
}

// ---------------------------------------------------------------------------
// ConstantOfShape

fn cos_value(ctx: &OpCtx) -> Result<Tensor> {
    match ctx.node.attr_tensor_opt("value")? {
        None => Ok(Tensor::scalar(0f32)),
        Some(t) if t.len() == 1 => Ok(t.clone()),
        Some(t) => Err(ctx.attr_err("value", format!("must hold exactly one element, has {}", t.len()))),
    }
}

pub(super) fn constant_of_shape_infer(ctx: &OpCtx, ins: Ins) -> Result<Vec<ValueType>> {
    let s = ctx.infer_input(ins, 0)?;
    let dt = cos_value(ctx)?.dtype();
    if let Some(v) = const_ints(ctx, s, "input")? {
        return Ok(vec![ValueType::new(dt, known(&shape_values(ctx, &v)?))]);
    }
    Ok(vec![match static_len(ctx, s, "input")? {
        Some(n) => {
            check_rank(ctx, n)?;
            ValueType::new(dt, unknown_dims(ctx, 0, n))
        }
        None => ValueType::unknown_rank(dt),
    }])
}

pub(super) fn constant_of_shape_eval(ctx: &OpCtx, ins: Ts) -> Result<Vec<Tensor>> {
    let s = ctx.input(ins, 0)?;
    check_1d(ctx, s, "input")?;
    let shape = shape_values(ctx, &ints(ctx, s, "input")?)?;
    let n = checked_numel(ctx, &shape)?;
    let v = cos_value(ctx)?;
    let data = map_data!(v.data(), v => v.first().map_or_else(Vec::new, |&x| vec![x; n]));
    Ok(vec![Tensor::new(shape, data)?])
}

// ---------------------------------------------------------------------------
// Range

fn scalar_of(ctx: &OpCtx, t: &Tensor, what: &str) -> Result<()> {
    if t.len() != 1 {
        return Err(ctx.err(
            ErrorKind::ShapeMismatch,
            format!("'{what}' must be a scalar, has shape {:?}", t.shape()),
        ));
    }
    Ok(())
}

fn range_count(ctx: &OpCtx, n: f64) -> Result<usize> {
    if !n.is_finite() {
        return Err(ctx.err(ErrorKind::InvalidInput, "Range has a non-finite element count"));
    }
    let n = n.max(0.0);
    if n > MAX_ELEMS as f64 {
        return Err(ctx.err(
            ErrorKind::LimitExceeded,
            format!("Range would have {n} elements, more than {MAX_ELEMS}"),
        ));
    }
    Ok(n as usize)
}

/// Element count of an integer Range (exact, in i128).
fn range_int_len(ctx: &OpCtx, start: i64, limit: i64, delta: i64) -> Result<usize> {
    if delta == 0 {
        return Err(ctx.err(ErrorKind::InvalidInput, "Range delta must not be 0"));
    }
    let (s, l, d) = (start as i128, limit as i128, delta as i128);
    let diff = l - s;
    let mut q = diff / d;
    if diff % d != 0 && ((diff > 0) == (d > 0)) {
        q += 1;
    }
    range_count(ctx, q.max(0) as f64)
}

/// Element count of a float Range: `ceil((limit - start) / delta)`, the
/// difference taken in f32 and the division in f64 (as ONNX Runtime does).
fn range_f32_len(ctx: &OpCtx, s: f32, l: f32, d: f32) -> Result<usize> {
    if d == 0.0 {
        return Err(ctx.err(ErrorKind::InvalidInput, "Range delta must not be 0"));
    }
    range_count(ctx, ((l - s) as f64 / d as f64).ceil())
}

/// Number of elements of Range over scalar tensors of one supported type.
fn range_len(ctx: &OpCtx, s: &Tensor, l: &Tensor, d: &Tensor) -> Result<usize> {
    scalar_of(ctx, s, "start")?;
    scalar_of(ctx, l, "limit")?;
    scalar_of(ctx, d, "delta")?;
    if l.dtype() != s.dtype() || d.dtype() != s.dtype() {
        return Err(ctx.err(
            ErrorKind::TypeMismatch,
            format!(
                "start, limit, delta have types {}, {}, {}",
                s.dtype(),
                l.dtype(),
                d.dtype()
            ),
        ));
    }
    match (s.data(), l.data(), d.data()) {
        (TensorData::F32(s), TensorData::F32(l), TensorData::F32(d)) => range_f32_len(ctx, s[0], l[0], d[0]),
        (TensorData::I64(s), TensorData::I64(l), TensorData::I64(d)) => range_int_len(ctx, s[0], l[0], d[0]),
        (TensorData::I32(s), TensorData::I32(l), TensorData::I32(d)) => {
            range_int_len(ctx, s[0] as i64, l[0] as i64, d[0] as i64)
        }
        _ => Err(ctx.err(
            ErrorKind::TypeMismatch,
            format!("Range does not support {}", s.dtype()),
        )),
    }
}

pub(super) fn range_eval(ctx: &OpCtx, ins: Ts) -> Result<Vec<Tensor>> {
    let (s, l, d) = (ctx.input(ins, 0)?, ctx.input(ins, 1)?, ctx.input(ins, 2)?);
    let n = range_len(ctx, s, l, d)?;
    let data = match (s.data(), d.data()) {
        (TensorData::F32(s), TensorData::F32(d)) => {
            TensorData::F32((0..n).map(|i| s[0] + i as f32 * d[0]).collect())
        }
        (TensorData::I64(s), TensorData::I64(d)) => TensorData::I64(
            (0..n as i64)
                .map(|i| s[0].wrapping_add(i.wrapping_mul(d[0])))
                .collect(),
        ),
        (TensorData::I32(s), TensorData::I32(d)) => TensorData::I32(
            (0..n as i32)
                .map(|i| s[0].wrapping_add(i.wrapping_mul(d[0])))
                .collect(),
        ),
        _ => return Err(ctx.err(ErrorKind::Internal, "Range type")),
    };
    Ok(vec![Tensor::new(vec![n], data)?])
}

pub(super) fn range_infer(ctx: &OpCtx, ins: Ins) -> Result<Vec<ValueType>> {
    let s = ctx.infer_input(ins, 0)?;
    let dt = s.ty.dtype;
    if !matches!(dt, DType::F32 | DType::I32 | DType::I64) {
        return Err(ctx.err(ErrorKind::TypeMismatch, format!("Range does not support {dt}")));
    }
    let vals: Vec<Option<&Tensor>> = (0..3)
        .map(|i| ctx.infer_input(ins, i).map(|x| x.value.as_ref()))
        .collect::<Result<_>>()?;
    if let [Some(a), Some(b), Some(c)] = vals.as_slice() {
        let n = range_len(ctx, a, b, c)?;
        return Ok(vec![ValueType::known(dt, &[n])]);
    }
    Ok(vec![ValueType::new(dt, vec![ctx.unknown_dim(0, 0)])])
}
