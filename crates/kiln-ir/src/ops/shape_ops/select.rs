//! Ops that select or combine parts of tensors: Concat, Split, Slice, Gather.

use super::common::*;
use crate::ops::{InferInput, OpCtx};
use crate::{map_data, DType, Dim, Elem, ErrorKind, Result, Tensor, ValueType};

type Ins<'a, 'b> = &'a [Option<&'b InferInput>];
type Ts<'a, 'b> = &'a [Option<&'b Tensor>];

// ---------------------------------------------------------------------------
// Concat

fn concat_axis(ctx: &OpCtx, rank: usize) -> Result<usize> {
    let a = ctx.node.attr_int_req("axis")?;
    axis(ctx, "axis", a, rank, ctx.opset >= 11)
}

pub(super) fn concat_infer(ctx: &OpCtx, ins: Ins) -> Result<Vec<ValueType>> {
    if ins.is_empty() {
        return Err(ctx.err(ErrorKind::InvalidModel, "Concat needs at least one input"));
    }
    let tys = (0..ins.len())
        .map(|i| ctx.infer_input(ins, i).map(|x| &x.ty))
        .collect::<Result<Vec<_>>>()?;
    let dt = tys[0].dtype;
    if let Some(t) = tys.iter().find(|t| t.dtype != dt) {
        return Err(ctx.err(
            ErrorKind::TypeMismatch,
            format!("inputs have different types {dt} and {}", t.dtype),
        ));
    }
    let shapes: Vec<&[Dim]> = tys.iter().filter_map(|t| t.shape.as_deref()).collect();
    let Some(first) = shapes.first() else {
        return Ok(vec![ValueType::unknown_rank(dt)]);
    };
    let r = first.len();
    if let Some(s) = shapes.iter().find(|s| s.len() != r) {
        return Err(ctx.err(
            ErrorKind::ShapeMismatch,
            format!("inputs have different ranks {r} and {}", s.len()),
        ));
    }
    let ax = concat_axis(ctx, r)?;
    let all_known_rank = shapes.len() == tys.len();
    let mut out = Vec::with_capacity(r);
    for k in 0..r {
        if k == ax {
            let mut sum = Some(0usize);
            for s in &shapes {
                sum = match (sum, &s[k]) {
                    (Some(a), Dim::Known(b)) => a.checked_add(*b),
                    _ => None,
                };
            }
            out.push(match sum {
                Some(v) if all_known_rank => Dim::Known(v),
                _ => ctx.unknown_dim(0, k),
            });
        } else {
            let mut d: Option<&Dim> = None;
            for s in &shapes {
                match (d, &s[k]) {
                    (None, x) | (Some(Dim::Sym(_)), x @ Dim::Known(_)) => d = Some(x),
                    (Some(Dim::Known(a)), Dim::Known(b)) if a != b => {
                        return Err(ctx.err(
                            ErrorKind::ShapeMismatch,
                            format!("inputs differ on axis {k} ({a} vs {b}), which is not the concat axis"),
                        ))
                    }
                    _ => {}
                }
            }
            out.push(d.cloned().unwrap_or_else(|| ctx.unknown_dim(0, k)));
        }
    }
    Ok(vec![ValueType::new(dt, out)])
}

pub(super) fn concat_eval(ctx: &OpCtx, ins: Ts) -> Result<Vec<Tensor>> {
    if ins.is_empty() {
        return Err(ctx.err(ErrorKind::InvalidModel, "Concat needs at least one input"));
    }
    let ts = (0..ins.len())
        .map(|i| ctx.input(ins, i))
        .collect::<Result<Vec<_>>>()?;
    let first = ts[0];
    let r = first.rank();
    let ax = concat_axis(ctx, r)?;
    let mut out_shape = first.shape().to_vec();
    out_shape[ax] = 0;
    for t in &ts {
        if t.dtype() != first.dtype() {
            return Err(ctx.err(
                ErrorKind::TypeMismatch,
                format!("inputs have different types {} and {}", first.dtype(), t.dtype()),
            ));
        }
        let same = t.rank() == r && (0..r).all(|k| k == ax || t.shape()[k] == first.shape()[k]);
        if !same {
            return Err(ctx.err(
                ErrorKind::ShapeMismatch,
                format!(
                    "cannot concatenate shapes {:?} and {:?} on axis {ax}",
                    first.shape(),
                    t.shape()
                ),
            ));
        }
        out_shape[ax] = out_shape[ax]
            .checked_add(t.shape()[ax])
            .ok_or_else(|| ctx.err(ErrorKind::LimitExceeded, "concat size overflows"))?;
    }
    let n = checked_numel(ctx, &out_shape)?;
    if n == 0 {
        return Ok(vec![Tensor::zeros(first.dtype(), out_shape)?]);
    }
    let outer = prod(ctx, &out_shape[..ax])?;
    let chunks = ts
        .iter()
        .map(|t| prod(ctx, &t.shape()[ax..]))
        .collect::<Result<Vec<_>>>()?;
    let data = map_data!(first.data(), v => concat_t(ctx, v.as_slice(), &ts, outer, &chunks, n)?);
    Ok(vec![Tensor::new(out_shape, data)?])
}

fn concat_t<T: Elem>(
    ctx: &OpCtx,
    _first: &[T],
    ts: &[&Tensor],
    outer: usize,
    chunks: &[usize],
    n: usize,
) -> Result<Vec<T>> {
    let internal = || ctx.err(ErrorKind::Internal, "concat chunk out of range");
    let slices = ts
        .iter()
        .map(|t| T::slice(t.data()).ok_or_else(internal))
        .collect::<Result<Vec<_>>>()?;
    let mut out = Vec::with_capacity(n);
    for o in 0..outer {
        for (s, &c) in slices.iter().zip(chunks) {
            let part = s.get(o * c..(o + 1) * c).ok_or_else(internal)?;
            out.extend_from_slice(part);
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Split

/// How the split sizes are given.
enum SplitArg {
    /// Explicit sizes (attribute before opset 13, input from 13).
    Sizes(Vec<i64>),
    /// Sizes from a non-constant input (inference only).
    Dynamic,
    /// `num_outputs` (opset 18), or `None`: equal split over the outputs.
    Equal(Option<i64>),
}

fn split_axis(ctx: &OpCtx, rank: usize) -> Result<usize> {
    let a = ctx.node.attr_int("axis", 0)?;
    axis(ctx, "axis", a, rank, ctx.opset >= 11)
}

fn num_outputs(ctx: &OpCtx) -> Result<Option<i64>> {
    if ctx.opset >= 18 {
        ctx.node.attr_int_opt("num_outputs")
    } else {
        Ok(None)
    }
}

fn split_arg(ctx: &OpCtx, sizes: Option<Vec<i64>>, dynamic: bool) -> Result<SplitArg> {
    let num = num_outputs(ctx)?;
    if num.is_some() && (sizes.is_some() || dynamic) {
        return Err(ctx.attr_err(
            "num_outputs",
            "both the 'split' input and 'num_outputs' are given",
        ));
    }
    Ok(match sizes {
        Some(s) => SplitArg::Sizes(s),
        None if dynamic => SplitArg::Dynamic,
        None => SplitArg::Equal(num),
    })
}

/// Sizes of the outputs along the split axis of size `dim`.
fn split_sizes(ctx: &OpCtx, dim: usize, n_out: usize, arg: &SplitArg) -> Result<Vec<usize>> {
    let bad = |msg: String| {
        if ctx.opset < 13 {
            ctx.attr_err("split", msg)
        } else {
            ctx.err(ErrorKind::ShapeMismatch, msg)
        }
    };
    match arg {
        SplitArg::Sizes(s) => {
            if s.len() != n_out {
                return Err(bad(format!(
                    "split {s:?} has {} entries for {n_out} outputs",
                    s.len()
                )));
            }
            let mut sum: i128 = 0;
            let mut out = Vec::with_capacity(n_out);
            for &v in s {
                if v < 0 {
                    return Err(bad(format!("split {s:?} has a negative size")));
                }
                sum += v as i128;
                out.push(v as usize);
            }
            if sum != dim as i128 {
                return Err(bad(format!("split {s:?} sums to {sum}, the axis has size {dim}")));
            }
            Ok(out)
        }
        SplitArg::Equal(Some(n)) => {
            if *n < 1 || *n as u64 != n_out as u64 {
                return Err(ctx.attr_err(
                    "num_outputs",
                    format!("num_outputs = {n} but the node has {n_out} outputs"),
                ));
            }
            let chunk = dim.div_ceil(n_out);
            let last = dim as i128 - chunk as i128 * (n_out as i128 - 1);
            if last < 0 {
                return Err(ctx.err(
                    ErrorKind::ShapeMismatch,
                    format!("cannot split an axis of size {dim} into {n} chunks of {chunk}"),
                ));
            }
            let mut out = vec![chunk; n_out - 1];
            out.push(last as usize);
            Ok(out)
        }
        SplitArg::Equal(None) => {
            if n_out == 0 || !dim.is_multiple_of(n_out) {
                return Err(ctx.err(
                    ErrorKind::ShapeMismatch,
                    format!("an axis of size {dim} cannot be split evenly into {n_out} outputs"),
                ));
            }
            Ok(vec![dim / n_out; n_out])
        }
        SplitArg::Dynamic => Err(ctx.err(ErrorKind::Internal, "dynamic split sizes at eval")),
    }
}

pub(super) fn split_infer(ctx: &OpCtx, ins: Ins) -> Result<Vec<ValueType>> {
    let x = ctx.infer_input(ins, 0)?;
    let dt = x.ty.dtype;
    let n_out = ctx.node.outputs.len();
    if n_out == 0 {
        return Err(ctx.err(ErrorKind::InvalidModel, "Split needs at least one output"));
    }
    let (sizes, dynamic) = if ctx.opset < 13 {
        (ctx.node.attr_ints_opt("split")?, false)
    } else {
        match ctx.opt_infer_input(ins, 1) {
            None => (None, false),
            Some(i) => match const_ints(ctx, i, "split")? {
                Some(v) => (Some(v), false),
                None => (None, true),
            },
        }
    };
    let arg = split_arg(ctx, sizes, dynamic)?;
    let Some(dims) = x.ty.shape.as_deref() else {
        return Ok(vec![ValueType::unknown_rank(dt); n_out]);
    };
    let ax = split_axis(ctx, dims.len())?;
    let axis_dims: Vec<Dim> = match (&dims[ax], &arg) {
        (Dim::Known(d), SplitArg::Sizes(_) | SplitArg::Equal(_)) => split_sizes(ctx, *d, n_out, &arg)?
            .into_iter()
            .map(Dim::Known)
            .collect(),
        (Dim::Sym(_), SplitArg::Sizes(s)) if s.len() == n_out && s.iter().all(|&v| v >= 0) => {
            s.iter().map(|&v| Dim::Known(v as usize)).collect()
        }
        (Dim::Sym(_), SplitArg::Sizes(s)) => {
            return Err(ctx.err(
                ErrorKind::ShapeMismatch,
                format!("split {s:?} is invalid for {n_out} outputs"),
            ))
        }
        (d @ Dim::Sym(_), SplitArg::Equal(_)) if n_out == 1 => vec![d.clone()],
        _ => (0..n_out).map(|o| ctx.unknown_dim(o, ax)).collect(),
    };
    Ok(axis_dims
        .into_iter()
        .map(|d| {
            let mut s = dims.to_vec();
            s[ax] = d;
            ValueType::new(dt, s)
        })
        .collect())
}

pub(super) fn split_eval(ctx: &OpCtx, ins: Ts) -> Result<Vec<Tensor>> {
    let x = ctx.input(ins, 0)?;
    let n_out = ctx.node.outputs.len();
    if n_out == 0 {
        return Err(ctx.err(ErrorKind::InvalidModel, "Split needs at least one output"));
    }
    let sizes = if ctx.opset < 13 {
        ctx.node.attr_ints_opt("split")?
    } else {
        match ctx.opt_input(ins, 1) {
            None => None,
            Some(t) => {
                check_1d(ctx, t, "split")?;
                Some(ints(ctx, t, "split")?)
            }
        }
    };
    let arg = split_arg(ctx, sizes, false)?;
    let ax = split_axis(ctx, x.rank())?;
    let parts = split_sizes(ctx, x.shape()[ax], n_out, &arg)?;
    let s = st(x.shape());
    let mut off = 0usize;
    let mut out = Vec::with_capacity(n_out);
    for p in parts {
        let mut shape = x.shape().to_vec();
        shape[ax] = p;
        let start = off;
        out.push(gather_axes(ctx, x, shape, None, |k, o| {
            Some(if k == ax { (start + o) * s[k] } else { o * s[k] })
        })?);
        off += p;
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Slice

/// One sliced axis: axis, raw start, raw end, step (non-zero).
type SliceAxis = (usize, i64, i64, i64);

/// Validates Slice parameters against `rank`.
fn slice_plan(
    ctx: &OpCtx,
    rank: usize,
    starts: &[i64],
    ends: &[i64],
    axes_v: Option<&[i64]>,
    steps: Option<&[i64]>,
) -> Result<Vec<SliceAxis>> {
    let n = starts.len();
    let bad = |what: &str, len: usize| {
        ctx.err(
            ErrorKind::ShapeMismatch,
            format!("'{what}' has {len} entries, 'starts' has {n}"),
        )
    };
    if ends.len() != n {
        return Err(bad("ends", ends.len()));
    }
    let ax = match axes_v {
        Some(a) if a.len() != n => return Err(bad("axes", a.len())),
        Some(a) => axes(ctx, "axes", a, rank, true)?,
        None => {
            if n > rank {
                return Err(ctx.err(
                    ErrorKind::ShapeMismatch,
                    format!("'starts' has {n} entries for an input of rank {rank}"),
                ));
            }
            (0..n).collect()
        }
    };
    if let Some(s) = steps {
        if s.len() != n {
            return Err(bad("steps", s.len()));
        }
        if s.contains(&0) {
            return Err(ctx.err(ErrorKind::InvalidModel, "Slice 'steps' must not contain 0"));
        }
    }
    Ok((0..n)
        .map(|i| (ax[i], starts[i], ends[i], steps.map_or(1, |s| s[i])))
        .collect())
}

/// First index and element count of slicing an axis of size `dim`, with
/// the ONNX clamping rules: starts/ends below 0 get `dim` added, then are
/// clamped to `[0, dim]` (step > 0) or `[0, dim-1]` / `[-1, dim-1]` (step < 0).
///
/// An `end` of `INT64_MAX` or `INT32_MAX` is the "slice to the end"
/// sentinel the spec recommends: with a negative step it means "down to
/// index 0" (NumPy's `None`), as ONNX Runtime implements it, rather than
/// being clamped to `dim-1` (which would always give an empty slice).
pub(super) fn slice_axis(dim: usize, start: i64, end: i64, step: i64) -> (i64, usize) {
    if dim == 0 {
        return (0, 0);
    }
    let d = dim as i128;
    let (mut s, mut e, step) = (start as i128, end as i128, step as i128);
    if end == i64::MAX || end == i32::MAX as i64 {
        e = if step < 0 { -1 } else { d };
    } else if e < 0 {
        e += d;
    }
    if s < 0 {
        s += d;
    }
    let count = if step > 0 {
        s = s.clamp(0, d);
        e = e.clamp(0, d);
        if e > s {
            (e - s + step - 1) / step
        } else {
            0
        }
    } else {
        s = s.clamp(0, d - 1);
        e = e.clamp(-1, d - 1);
        if s > e {
            (s - e + (-step) - 1) / (-step)
        } else {
            0
        }
    };
    (s as i64, count as usize)
}

/// An optional integer input in inference: absent, constant, or dynamic.
fn opt_const(ctx: &OpCtx, ins: Ins, i: usize, what: &str) -> Result<(bool, Option<Vec<i64>>)> {
    match ctx.opt_infer_input(ins, i) {
        None => Ok((false, None)),
        Some(x) => Ok((true, const_ints(ctx, x, what)?)),
    }
}

pub(super) fn slice_infer(ctx: &OpCtx, ins: Ins) -> Result<Vec<ValueType>> {
    let x = ctx.infer_input(ins, 0)?;
    let dt = x.ty.dtype;
    let (starts, ends, axes_v, steps, axes_given, steps_given);
    if ctx.opset < 10 {
        starts = Some(
            ctx.node
                .attr_ints_opt("starts")?
                .ok_or_else(|| ctx.attr_err("starts", "required attribute is missing"))?,
        );
        ends = Some(
            ctx.node
                .attr_ints_opt("ends")?
                .ok_or_else(|| ctx.attr_err("ends", "required attribute is missing"))?,
        );
        axes_v = ctx.node.attr_ints_opt("axes")?;
        axes_given = axes_v.is_some();
        steps = None;
        steps_given = false;
    } else {
        starts = const_ints(ctx, ctx.infer_input(ins, 1)?, "starts")?;
        ends = const_ints(ctx, ctx.infer_input(ins, 2)?, "ends")?;
        (axes_given, axes_v) = opt_const(ctx, ins, 3, "axes")?;
        (steps_given, steps) = opt_const(ctx, ins, 4, "steps")?;
    }
    let Some(dims) = x.ty.shape.as_deref() else {
        return Ok(vec![ValueType::unknown_rank(dt)]);
    };
    let r = dims.len();
    let consts_ok = starts.is_some()
        && ends.is_some()
        && (!axes_given || axes_v.is_some())
        && (!steps_given || steps.is_some());
    if let (true, Some(s), Some(e)) = (consts_ok, &starts, &ends) {
        let plan = slice_plan(ctx, r, s, e, axes_v.as_deref(), steps.as_deref())?;
        let mut out = dims.to_vec();
        for (a, s, e, step) in plan {
            out[a] = match &dims[a] {
                Dim::Known(d) => Dim::Known(slice_axis(*d, s, e, step).1),
                Dim::Sym(_) if s == 0 && step == 1 && e >= i32::MAX as i64 => dims[a].clone(),
                Dim::Sym(_) => ctx.unknown_dim(0, a),
            };
        }
        return Ok(vec![ValueType::new(dt, out)]);
    }
    // Which axes are sliced, if that much is known.
    let sliced: Option<Vec<usize>> = match (&axes_v, axes_given) {
        (Some(a), _) => Some(axes(ctx, "axes", a, r, true)?),
        (None, false) => {
            let n = starts
                .as_ref()
                .map(|s| s.len())
                .or(match ctx.opt_infer_input(ins, 1) {
                    Some(i) if ctx.opset >= 10 => static_len(ctx, i, "starts")?,
                    _ => None,
                });
            n.map(|n| (0..n.min(r)).collect())
        }
        (None, true) => None,
    };
    let out = (0..r)
        .map(|k| match &sliced {
            Some(s) if !s.contains(&k) => dims[k].clone(),
            _ => ctx.unknown_dim(0, k),
        })
        .collect();
    Ok(vec![ValueType::new(dt, out)])
}

pub(super) fn slice_eval(ctx: &OpCtx, ins: Ts) -> Result<Vec<Tensor>> {
    let x = ctx.input(ins, 0)?;
    let (starts, ends, axes_v, steps);
    if ctx.opset < 10 {
        starts = ctx
            .node
            .attr_ints_opt("starts")?
            .ok_or_else(|| ctx.attr_err("starts", "required attribute is missing"))?;
        ends = ctx
            .node
            .attr_ints_opt("ends")?
            .ok_or_else(|| ctx.attr_err("ends", "required attribute is missing"))?;
        axes_v = ctx.node.attr_ints_opt("axes")?;
        steps = None;
    } else {
        let get = |i: usize, what: &str| -> Result<Option<Vec<i64>>> {
            match ctx.opt_input(ins, i) {
                None => Ok(None),
                Some(t) => {
                    check_1d(ctx, t, what)?;
                    ints(ctx, t, what).map(Some)
                }
            }
        };
        ctx.input(ins, 1)?;
        ctx.input(ins, 2)?;
        starts = get(1, "starts")?.unwrap_or_default();
        ends = get(2, "ends")?.unwrap_or_default();
        axes_v = get(3, "axes")?;
        steps = get(4, "steps")?;
    }
    let plan = slice_plan(ctx, x.rank(), &starts, &ends, axes_v.as_deref(), steps.as_deref())?;
    let mut first = vec![0i64; x.rank()];
    let mut step = vec![1i64; x.rank()];
    let mut shape = x.shape().to_vec();
    for (a, s, e, st_) in plan {
        let (f, c) = slice_axis(x.shape()[a], s, e, st_);
        first[a] = f;
        step[a] = st_;
        shape[a] = c;
    }
    let s = st(x.shape());
    Ok(vec![gather_axes(ctx, x, shape, None, |k, o| {
        let i = first[k] as i128 + o as i128 * step[k] as i128;
        usize::try_from(i).ok().map(|i| i * s[k])
    })?])
}

// ---------------------------------------------------------------------------
// Gather

fn check_indices_type(ctx: &OpCtx, dt: DType) -> Result<()> {
    if !matches!(dt, DType::I32 | DType::I64) {
        return Err(ctx.err(
            ErrorKind::TypeMismatch,
            format!("indices must be int32 or int64, got {dt}"),
        ));
    }
    Ok(())
}

/// Normalizes gather indices against an axis of size `dim`; out of range is
/// an `InvalidInput` error.
fn norm_indices(ctx: &OpCtx, idx: &[i64], dim: usize, ax: usize) -> Result<Vec<usize>> {
    let d = dim as i64;
    idx.iter()
        .map(|&i| {
            let j = if i < 0 { i + d } else { i };
            if j < 0 || j >= d {
                Err(ctx.err(
                    ErrorKind::InvalidInput,
                    format!("index {i} is out of range for axis {ax} of size {dim}"),
                ))
            } else {
                Ok(j as usize)
            }
        })
        .collect()
}

pub(super) fn gather_infer(ctx: &OpCtx, ins: Ins) -> Result<Vec<ValueType>> {
    let x = ctx.infer_input(ins, 0)?;
    let idx = ctx.infer_input(ins, 1)?;
    check_indices_type(ctx, idx.ty.dtype)?;
    let dt = x.ty.dtype;
    let (Some(dims), Some(idims)) = (x.ty.shape.as_deref(), idx.ty.shape.as_deref()) else {
        return Ok(vec![ValueType::unknown_rank(dt)]);
    };
    let ax = axis(ctx, "axis", ctx.node.attr_int("axis", 0)?, dims.len(), true)?;
    if let (Some(v), Dim::Known(d)) = (&idx.value, &dims[ax]) {
        norm_indices(ctx, &ints(ctx, v, "indices")?, *d, ax)?;
    }
    let mut out = dims[..ax].to_vec();
    out.extend(idims.iter().cloned());
    out.extend(dims[ax + 1..].iter().cloned());
    Ok(vec![ValueType::new(dt, out)])
}

pub(super) fn gather_eval(ctx: &OpCtx, ins: Ts) -> Result<Vec<Tensor>> {
    let x = ctx.input(ins, 0)?;
    let idx_t = ctx.input(ins, 1)?;
    check_indices_type(ctx, idx_t.dtype())?;
    let ax = axis(ctx, "axis", ctx.node.attr_int("axis", 0)?, x.rank(), true)?;
    let idx = norm_indices(ctx, &ints(ctx, idx_t, "indices")?, x.shape()[ax], ax)?;
    let mut out_shape = x.shape()[..ax].to_vec();
    out_shape.extend_from_slice(idx_t.shape());
    out_shape.extend_from_slice(&x.shape()[ax + 1..]);
    let mut flat = x.shape().to_vec();
    flat[ax] = idx.len();
    let s = st(x.shape());
    let t = gather_axes(ctx, x, flat, None, |k, o| {
        Some(if k == ax { idx[o] * s[k] } else { o * s[k] })
    })?;
    Ok(vec![t.reshape(out_shape)?])
}
