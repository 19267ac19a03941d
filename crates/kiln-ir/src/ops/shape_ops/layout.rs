//! Ops that keep the data and change the view or the type: Reshape, Flatten,
//! Squeeze, Unsqueeze, Transpose, Identity, Dropout, Shape, Cast, CastLike,
//! Constant.

use super::common::*;
use crate::ops::{InferInput, OpCtx};
use crate::{Attribute, DType, Dim, ErrorKind, IrError, Result, Tensor, TensorData, ValueType};

type Ins<'a, 'b> = &'a [Option<&'b InferInput>];
type Ts<'a, 'b> = &'a [Option<&'b Tensor>];

// ---------------------------------------------------------------------------
// Reshape

fn allowzero(ctx: &OpCtx) -> Result<bool> {
    Ok(ctx.opset >= 14 && ctx.node.attr_int("allowzero", 0)? != 0)
}

/// Output dims of Reshape from the input's static dims (`None` = unknown
/// rank) and the target `shape` values. 0 copies the input dim (unless
/// `allowzero`), one -1 is inferred; symbols that cancel out are kept.
pub(super) fn reshape_dims(
    ctx: &OpCtx,
    input: Option<&[Dim]>,
    target: &[i64],
    allowzero: bool,
) -> Result<Vec<Dim>> {
    check_rank(ctx, target.len())?;
    let mut out = Vec::with_capacity(target.len());
    let mut infer_at = None;
    for (i, &t) in target.iter().enumerate() {
        let d =
            match t {
                -1 => {
                    if infer_at.replace(i).is_some() {
                        return Err(ctx.err(
                            ErrorKind::ShapeMismatch,
                            format!("shape {target:?} has more than one -1"),
                        ));
                    }
                    Dim::Known(1)
                }
                0 if !allowzero => match input {
                    Some(dims) => dims.get(i).cloned().ok_or_else(|| {
                        ctx.err(
                            ErrorKind::ShapeMismatch,
                            format!(
                                "shape[{i}] = 0 copies input dim {i}, but the input has rank {}",
                                dims.len()
                            ),
                        )
                    })?,
                    None => ctx.unknown_dim(0, i),
                },
                t if t < 0 => {
                    return Err(ctx.err(
                        ErrorKind::ShapeMismatch,
                        format!("shape[{i}] = {t} is invalid (only -1 may be negative)"),
                    ))
                }
                t => Dim::Known(usize::try_from(t).map_err(|_| {
                    ctx.err(ErrorKind::LimitExceeded, format!("shape[{i}] = {t} is too large"))
                })?),
            };
        out.push(d);
    }
    if allowzero && infer_at.is_some() && target.contains(&0) {
        return Err(ctx.err(
            ErrorKind::ShapeMismatch,
            format!("shape {target:?} has both 0 and -1 with allowzero = 1"),
        ));
    }
    let Some(input) = input else {
        if let Some(i) = infer_at {
            out[i] = ctx.unknown_dim(0, i);
        }
        return Ok(out);
    };
    let overflow = || ctx.err(ErrorKind::LimitExceeded, "reshape size overflows");
    let mut p_in: u128 = 1;
    let mut syms_in: Vec<&String> = Vec::new();
    for d in input {
        match d {
            Dim::Known(k) => p_in = p_in.checked_mul(*k as u128).ok_or_else(overflow)?,
            Dim::Sym(s) => syms_in.push(s),
        }
    }
    let mut p_out: u128 = 1;
    let mut unmatched = false;
    for (i, d) in out.iter().enumerate() {
        if Some(i) == infer_at {
            continue;
        }
        match d {
            Dim::Known(k) => p_out = p_out.checked_mul(*k as u128).ok_or_else(overflow)?,
            Dim::Sym(s) => match syms_in.iter().position(|x| *x == s) {
                Some(pos) => {
                    syms_in.remove(pos);
                }
                None => unmatched = true,
            },
        }
    }
    let mismatch = || {
        ctx.err(
            ErrorKind::ShapeMismatch,
            format!(
                "cannot reshape input of shape {} to {target:?}",
                crate::shape::shape_to_string(&Some(input.to_vec()))
            ),
        )
    };
    match infer_at {
        Some(i) => {
            out[i] = if !unmatched && syms_in.is_empty() {
                if p_out == 0 || !p_in.is_multiple_of(p_out) {
                    return Err(mismatch());
                }
                Dim::Known(usize::try_from(p_in / p_out).map_err(|_| overflow())?)
            } else if !unmatched && syms_in.len() == 1 && p_in == p_out && p_out != 0 {
                Dim::Sym(syms_in[0].clone())
            } else {
                ctx.unknown_dim(0, i)
            };
        }
        None => {
            if !unmatched && syms_in.is_empty() && p_in != p_out {
                return Err(mismatch());
            }
        }
    }
    Ok(out)
}

pub(super) fn reshape_infer(ctx: &OpCtx, ins: Ins) -> Result<Vec<ValueType>> {
    let x = ctx.infer_input(ins, 0)?;
    let s = ctx.infer_input(ins, 1)?;
    let az = allowzero(ctx)?;
    if let Some(target) = const_ints(ctx, s, "shape")? {
        let dims = reshape_dims(ctx, x.ty.shape.as_deref(), &target, az)?;
        return Ok(vec![ValueType::new(x.ty.dtype, dims)]);
    }
    Ok(vec![match static_len(ctx, s, "shape")? {
        Some(n) => {
            check_rank(ctx, n)?;
            ValueType::new(x.ty.dtype, unknown_dims(ctx, 0, n))
        }
        None => ValueType::unknown_rank(x.ty.dtype),
    }])
}

pub(super) fn reshape_eval(ctx: &OpCtx, ins: Ts) -> Result<Vec<Tensor>> {
    let x = ctx.input(ins, 0)?;
    let s = ctx.input(ins, 1)?;
    check_1d(ctx, s, "shape")?;
    let target = ints(ctx, s, "shape")?;
    let dims = reshape_dims(ctx, Some(&known(x.shape())), &target, allowzero(ctx)?)?;
    let out = concrete(ctx, &dims)?;
    Ok(vec![x
        .clone()
        .reshape(out)
        .map_err(|e| ctx.err(e.kind, e.message))?])
}

/// Concrete sizes of dims computed from a concrete input.
fn concrete(ctx: &OpCtx, dims: &[Dim]) -> Result<Vec<usize>> {
    dims.iter()
        .map(|d| d.known())
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| ctx.err(ErrorKind::Internal, "symbolic dim from a concrete shape"))
}

// ---------------------------------------------------------------------------
// Flatten

fn flatten_axis(ctx: &OpCtx, rank: usize) -> Result<usize> {
    let a = ctx.node.attr_int("axis", 1)?;
    if a < 0 && ctx.opset < 11 {
        return Err(ctx.attr_err(
            "axis",
            format!(
                "negative axis {a} needs opset 11 or later (model opset {})",
                ctx.opset
            ),
        ));
    }
    let r = rank as i64;
    let n = if a < 0 { a + r } else { a };
    if !(0..=r).contains(&n) {
        return Err(ctx.attr_err("axis", format!("axis {a} is out of range [-{r}, {r}]")));
    }
    Ok(n as usize)
}

pub(super) fn flatten_infer(ctx: &OpCtx, ins: Ins) -> Result<Vec<ValueType>> {
    let x = ctx.infer_input(ins, 0)?;
    let Some(dims) = x.ty.shape.as_deref() else {
        return Ok(vec![ValueType::new(x.ty.dtype, unknown_dims(ctx, 0, 2))]);
    };
    let a = flatten_axis(ctx, dims.len())?;
    let d0 = dims_product(ctx, &dims[..a], 0, 0)?;
    let d1 = dims_product(ctx, &dims[a..], 0, 1)?;
    Ok(vec![ValueType::new(x.ty.dtype, vec![d0, d1])])
}

pub(super) fn flatten_eval(ctx: &OpCtx, ins: Ts) -> Result<Vec<Tensor>> {
    let x = ctx.input(ins, 0)?;
    let a = flatten_axis(ctx, x.rank())?;
    let d0 = prod(ctx, &x.shape()[..a])?;
    let d1 = prod(ctx, &x.shape()[a..])?;
    Ok(vec![x.clone().reshape(vec![d0, d1])?])
}

// ---------------------------------------------------------------------------
// Squeeze / Unsqueeze

/// Squeeze/Unsqueeze axes as inference sees them.
enum AxesArg {
    /// Not given.
    Absent,
    /// Constant values.
    Const(Vec<i64>),
    /// Given as a non-constant input of this static length (if known).
    Dynamic(Option<usize>),
}

fn axes_arg_infer(ctx: &OpCtx, ins: Ins) -> Result<AxesArg> {
    if ctx.opset < 13 {
        return Ok(match ctx.node.attr_ints_opt("axes")? {
            Some(a) => AxesArg::Const(a),
            None => AxesArg::Absent,
        });
    }
    match ctx.opt_infer_input(ins, 1) {
        None => Ok(AxesArg::Absent),
        Some(i) => match const_ints(ctx, i, "axes")? {
            Some(a) => Ok(AxesArg::Const(a)),
            None => Ok(AxesArg::Dynamic(static_len(ctx, i, "axes")?)),
        },
    }
}

fn axes_arg_eval(ctx: &OpCtx, ins: Ts) -> Result<Option<Vec<i64>>> {
    if ctx.opset < 13 {
        return ctx.node.attr_ints_opt("axes");
    }
    match ctx.opt_input(ins, 1) {
        None => Ok(None),
        Some(t) => {
            check_1d(ctx, t, "axes")?;
            ints(ctx, t, "axes").map(Some)
        }
    }
}

/// Squeezed dims; `axes` empty or absent = every dim known to be 1
/// (`None` result when a symbol makes that ambiguous).
fn squeeze_dims(ctx: &OpCtx, dims: &[Dim], ax: Option<&[i64]>) -> Result<Option<Vec<Dim>>> {
    match ax {
        Some(list) if !list.is_empty() => {
            let ax = axes(ctx, "axes", list, dims.len(), ctx.opset >= 11)?;
            for &a in &ax {
                if let Dim::Known(k) = dims[a] {
                    if k != 1 {
                        return Err(ctx.err(
                            ErrorKind::ShapeMismatch,
                            format!("cannot squeeze axis {a} of size {k}"),
                        ));
                    }
                }
            }
            Ok(Some(
                dims.iter()
                    .enumerate()
                    .filter(|(i, _)| !ax.contains(i))
                    .map(|(_, d)| d.clone())
                    .collect(),
            ))
        }
        _ => {
            if dims.iter().any(|d| matches!(d, Dim::Sym(_))) {
                return Ok(None);
            }
            Ok(Some(
                dims.iter().filter(|d| **d != Dim::Known(1)).cloned().collect(),
            ))
        }
    }
}

pub(super) fn squeeze_infer(ctx: &OpCtx, ins: Ins) -> Result<Vec<ValueType>> {
    let x = ctx.infer_input(ins, 0)?;
    let dt = x.ty.dtype;
    let Some(dims) = x.ty.shape.as_deref() else {
        return Ok(vec![ValueType::unknown_rank(dt)]);
    };
    let ty = match axes_arg_infer(ctx, ins)? {
        AxesArg::Absent => squeeze_dims(ctx, dims, None)?,
        AxesArg::Const(a) => squeeze_dims(ctx, dims, Some(&a))?,
        AxesArg::Dynamic(Some(k)) if k > 0 && k <= dims.len() => Some(unknown_dims(ctx, 0, dims.len() - k)),
        AxesArg::Dynamic(_) => None,
    };
    Ok(vec![ValueType { dtype: dt, shape: ty }])
}

pub(super) fn squeeze_eval(ctx: &OpCtx, ins: Ts) -> Result<Vec<Tensor>> {
    let x = ctx.input(ins, 0)?;
    let ax = axes_arg_eval(ctx, ins)?;
    let dims = squeeze_dims(ctx, &known(x.shape()), ax.as_deref())?
        .ok_or_else(|| ctx.err(ErrorKind::Internal, "symbolic dim from a concrete shape"))?;
    Ok(vec![x.clone().reshape(concrete(ctx, &dims)?)?])
}

fn unsqueeze_dims(ctx: &OpCtx, dims: &[Dim], list: &[i64]) -> Result<Vec<Dim>> {
    let r = dims.len().saturating_add(list.len());
    check_rank(ctx, r)?;
    let ax = axes(ctx, "axes", list, r, ctx.opset >= 11)?;
    let mut it = dims.iter();
    let mut out = Vec::with_capacity(r);
    for i in 0..r {
        if ax.contains(&i) {
            out.push(Dim::Known(1));
        } else {
            out.push(
                it.next()
                    .cloned()
                    .ok_or_else(|| ctx.err(ErrorKind::Internal, "unsqueeze rank"))?,
            );
        }
    }
    Ok(out)
}

pub(super) fn unsqueeze_infer(ctx: &OpCtx, ins: Ins) -> Result<Vec<ValueType>> {
    let x = ctx.infer_input(ins, 0)?;
    let dt = x.ty.dtype;
    let Some(dims) = x.ty.shape.as_deref() else {
        return Ok(vec![ValueType::unknown_rank(dt)]);
    };
    Ok(vec![match axes_arg_infer(ctx, ins)? {
        AxesArg::Absent => return Err(missing_axes(ctx)),
        AxesArg::Const(a) => ValueType::new(dt, unsqueeze_dims(ctx, dims, &a)?),
        AxesArg::Dynamic(Some(k)) => {
            let r = dims.len().saturating_add(k);
            check_rank(ctx, r)?;
            ValueType::new(dt, unknown_dims(ctx, 0, r))
        }
        AxesArg::Dynamic(None) => ValueType::unknown_rank(dt),
    }])
}

fn missing_axes(ctx: &OpCtx) -> IrError {
    if ctx.opset < 13 {
        ctx.attr_err("axes", "required attribute is missing")
    } else {
        ctx.err(ErrorKind::InvalidModel, "required input 'axes' is missing")
    }
}

pub(super) fn unsqueeze_eval(ctx: &OpCtx, ins: Ts) -> Result<Vec<Tensor>> {
    let x = ctx.input(ins, 0)?;
    let ax = axes_arg_eval(ctx, ins)?.ok_or_else(|| missing_axes(ctx))?;
    let dims = unsqueeze_dims(ctx, &known(x.shape()), &ax)?;
    Ok(vec![x.clone().reshape(concrete(ctx, &dims)?)?])
}

// ---------------------------------------------------------------------------
// Transpose

/// Validated permutation: the `perm` attribute or the reversed axes.
fn perm(ctx: &OpCtx, rank: usize) -> Result<Vec<usize>> {
    let Some(p) = ctx.node.attr_ints_opt("perm")? else {
        return Ok((0..rank).rev().collect());
    };
    if p.len() != rank {
        return Err(ctx.attr_err(
            "perm",
            format!("perm {p:?} has {} entries, the input has rank {rank}", p.len()),
        ));
    }
    let mut seen = vec![false; rank];
    let mut out = Vec::with_capacity(rank);
    for &a in &p {
        let i = usize::try_from(a).ok().filter(|&i| i < rank);
        match i {
            Some(i) if !seen[i] => {
                seen[i] = true;
                out.push(i);
            }
            _ => return Err(ctx.attr_err("perm", format!("{p:?} is not a permutation of 0..{rank}"))),
        }
    }
    Ok(out)
}

pub(super) fn transpose_infer(ctx: &OpCtx, ins: Ins) -> Result<Vec<ValueType>> {
    let x = ctx.infer_input(ins, 0)?;
    let dt = x.ty.dtype;
    let Some(dims) = x.ty.shape.as_deref() else {
        return Ok(vec![match ctx.node.attr_ints_opt("perm")? {
            Some(p) => ValueType::new(dt, unknown_dims(ctx, 0, p.len())),
            None => ValueType::unknown_rank(dt),
        }]);
    };
    let p = perm(ctx, dims.len())?;
    Ok(vec![ValueType::new(
        dt,
        p.iter().map(|&i| dims[i].clone()).collect(),
    )])
}

pub(super) fn transpose_eval(ctx: &OpCtx, ins: Ts) -> Result<Vec<Tensor>> {
    let x = ctx.input(ins, 0)?;
    let p = perm(ctx, x.rank())?;
    let s = st(x.shape());
    let out: Vec<usize> = p.iter().map(|&i| x.shape()[i]).collect();
    Ok(vec![gather_axes(ctx, x, out, None, |k, o| Some(o * s[p[k]]))?])
}

// ---------------------------------------------------------------------------
// Identity, Dropout

pub(super) fn identity_infer(ctx: &OpCtx, ins: Ins) -> Result<Vec<ValueType>> {
    Ok(vec![ctx.infer_input(ins, 0)?.ty.clone()])
}

pub(super) fn identity_eval(ctx: &OpCtx, ins: Ts) -> Result<Vec<Tensor>> {
    Ok(vec![ctx.input(ins, 0)?.clone()])
}

/// Dtype of Dropout's mask: bool from opset 10, the input's type before.
/// In inference the mask is all true (every element kept), as in the ONNX
/// reference implementation; note that ONNX Runtime fills it with 0/false
/// at opsets 7..=11.
fn mask_dtype(ctx: &OpCtx, x: DType) -> DType {
    if ctx.opset >= 10 {
        DType::Bool
    } else {
        x
    }
}

fn training_mode_err(ctx: &OpCtx) -> IrError {
    ctx.err(
        ErrorKind::UnsupportedOp,
        "Dropout with training_mode = true is not supported (inference only)",
    )
}

pub(super) fn dropout_infer(ctx: &OpCtx, ins: Ins) -> Result<Vec<ValueType>> {
    let x = ctx.infer_input(ins, 0)?;
    // Dropout-6 (opset < 7) is in training mode unless `is_test = 1`.
    if ctx.opset < 7 && ctx.node.attr_int("is_test", 0)? == 0 {
        return Err(training_mode_err(ctx));
    }
    if ctx.opset >= 12 {
        if let Some(t) = ctx.opt_infer_input(ins, 2).and_then(|i| i.value.as_ref()) {
            if ints(ctx, t, "training_mode")?.iter().any(|&v| v != 0) {
                return Err(training_mode_err(ctx));
            }
        }
    }
    let mut out = vec![x.ty.clone()];
    if ctx.node.outputs.len() > 1 {
        out.push(retype(&x.ty, mask_dtype(ctx, x.ty.dtype)));
    }
    Ok(out)
}

pub(super) fn dropout_eval(ctx: &OpCtx, ins: Ts) -> Result<Vec<Tensor>> {
    let x = ctx.input(ins, 0)?;
    // Dropout-6 (opset < 7) is in training mode unless `is_test = 1`.
    if ctx.opset < 7 && ctx.node.attr_int("is_test", 0)? == 0 {
        return Err(training_mode_err(ctx));
    }
    if ctx.opset >= 12 {
        if let Some(t) = ctx.opt_input(ins, 2) {
            if ints(ctx, t, "training_mode")?.iter().any(|&v| v != 0) {
                return Err(training_mode_err(ctx));
            }
        }
    }
    let mut out = vec![x.clone()];
    if ctx.node.outputs.len() > 1 {
        let ones = Tensor::new(x.shape().to_vec(), crate::TensorData::Bool(vec![true; x.len()]))?;
        out.push(ones.cast(mask_dtype(ctx, x.dtype())));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Shape

/// `[start, end)` of Shape (opset 15 attributes), clamped into `0..=rank`.
fn shape_range(ctx: &OpCtx, rank: usize) -> Result<(usize, usize)> {
    let r = rank as i64;
    let (mut s, mut e) = (0, r);
    if ctx.opset >= 15 {
        s = ctx.node.attr_int("start", 0)?;
        e = ctx.node.attr_int("end", r)?;
    }
    let clamp = |x: i64| {
        if x < 0 {
            x.saturating_add(r).max(0)
        } else {
            x.min(r)
        }
    };
    let (s, e) = (clamp(s) as usize, clamp(e) as usize);
    Ok((s, e.max(s)))
}

pub(super) fn shape_infer(ctx: &OpCtx, ins: Ins) -> Result<Vec<ValueType>> {
    let x = ctx.infer_input(ins, 0)?;
    let d = match x.ty.rank() {
        Some(r) => {
            let (s, e) = shape_range(ctx, r)?;
            Dim::Known(e - s)
        }
        None => ctx.unknown_dim(0, 0),
    };
    Ok(vec![ValueType::new(DType::I64, vec![d])])
}

pub(super) fn shape_eval(ctx: &OpCtx, ins: Ts) -> Result<Vec<Tensor>> {
    let x = ctx.input(ins, 0)?;
    let (s, e) = shape_range(ctx, x.rank())?;
    let v: Vec<i64> = x.shape()[s..e].iter().map(|&d| d as i64).collect();
    Ok(vec![Tensor::from_vec(vec![v.len()], v)?])
}

// ---------------------------------------------------------------------------
// Cast, CastLike

/// The kiln dtype of an ONNX `TensorProto.DataType` code; `attr` names the
/// attribute in errors (`UnsupportedOp` for valid ONNX types kiln does not
/// implement, `InvalidAttribute` for unknown codes).
pub(crate) fn dtype_from_code(ctx: &OpCtx, attr: &str, code: i64) -> Result<DType> {
    Ok(match code {
        1 => DType::F32,
        2 => DType::U8,
        3 => DType::I8,
        6 => DType::I32,
        7 => DType::I64,
        9 => DType::Bool,
        10 => DType::F16,
        _ => {
            let name = match code {
                4 => "UINT16",
                5 => "INT16",
                8 => "STRING",
                11 => "DOUBLE",
                12 => "UINT32",
                13 => "UINT64",
                14 => "COMPLEX64",
                15 => "COMPLEX128",
                16 => "BFLOAT16",
                17 => "FLOAT8E4M3FN",
                18 => "FLOAT8E4M3FNUZ",
                19 => "FLOAT8E5M2",
                20 => "FLOAT8E5M2FNUZ",
                21 => "UINT4",
                22 => "INT4",
                23 => "FLOAT4E2M1",
                _ => return Err(ctx.attr_err(attr, format!("{code} is not an ONNX data type"))),
            };
            return Err(ctx
                .err(
                    ErrorKind::UnsupportedOp,
                    format!("element type {name} ({code}) is not supported"),
                )
                .with_attr(attr));
        }
    })
}

fn cast_to(ctx: &OpCtx) -> Result<DType> {
    let code = ctx.node.attr_int_req("to")?;
    dtype_from_code(ctx, "to", code)
}

/// ONNX Cast of a tensor: integer (and bool) to integer narrowing wraps
/// (two's complement truncation, as ONNX Runtime and NumPy do); every other
/// pair uses [`Tensor::cast`] (float to int truncates toward zero).
pub(super) fn cast_tensor(x: &Tensor, to: DType) -> Tensor {
    let from = x.dtype();
    if from != to && (from.is_int() || from == DType::Bool) && to.is_int() {
        if let Ok(v) = x.to_i64_vec() {
            let data = match to {
                DType::I8 => TensorData::I8(v.iter().map(|&e| e as i8).collect()),
                DType::U8 => TensorData::U8(v.iter().map(|&e| e as u8).collect()),
                DType::I32 => TensorData::I32(v.iter().map(|&e| e as i32).collect()),
                _ => TensorData::I64(v),
            };
            if let Ok(t) = Tensor::new(x.shape().to_vec(), data) {
                return t;
            }
        }
    }
    x.cast(to)
}

pub(super) fn cast_infer(ctx: &OpCtx, ins: Ins) -> Result<Vec<ValueType>> {
    let x = ctx.infer_input(ins, 0)?;
    Ok(vec![retype(&x.ty, cast_to(ctx)?)])
}

pub(super) fn cast_eval(ctx: &OpCtx, ins: Ts) -> Result<Vec<Tensor>> {
    let x = ctx.input(ins, 0)?;
    Ok(vec![cast_tensor(x, cast_to(ctx)?)])
}

pub(super) fn cast_like_infer(ctx: &OpCtx, ins: Ins) -> Result<Vec<ValueType>> {
    let x = ctx.infer_input(ins, 0)?;
    let like = ctx.infer_input(ins, 1)?;
    Ok(vec![retype(&x.ty, like.ty.dtype)])
}

pub(super) fn cast_like_eval(ctx: &OpCtx, ins: Ts) -> Result<Vec<Tensor>> {
    let x = ctx.input(ins, 0)?;
    let like = ctx.input(ins, 1)?;
    Ok(vec![cast_tensor(x, like.dtype())])
}

// ---------------------------------------------------------------------------
// Constant

const CONSTANT_ATTRS: [&str; 8] = [
    "value",
    "value_float",
    "value_floats",
    "value_int",
    "value_ints",
    "value_string",
    "value_strings",
    "sparse_value",
];

/// The value of a Constant node, from its single value attribute.
fn constant_value(ctx: &OpCtx) -> Result<Tensor> {
    let set: Vec<&str> = CONSTANT_ATTRS
        .iter()
        .copied()
        .filter(|a| ctx.node.attrs.contains_key(*a))
        .collect();
    let name = match set.as_slice() {
        [one] => *one,
        [] => return Err(ctx.err(
            ErrorKind::InvalidAttribute,
            "Constant needs one of the attributes value, value_float, value_floats, value_int, value_ints",
        )),
        many => {
            return Err(ctx.err(
                ErrorKind::InvalidAttribute,
                format!("Constant has several value attributes: {}", many.join(", ")),
            ))
        }
    };
    let a = ctx
        .node
        .attrs
        .get(name)
        .ok_or_else(|| ctx.err(ErrorKind::Internal, "attribute vanished"))?;
    let wrong = |want: &str| ctx.attr_err(name, format!("expected {want}, got {}", a.type_name()));
    Ok(match (name, a) {
        ("value", Attribute::Tensor(t)) => t.clone(),
        ("value", _) => return Err(wrong("TENSOR")),
        ("value_float", Attribute::Float(v)) => Tensor::scalar(*v),
        ("value_float", _) => return Err(wrong("FLOAT")),
        ("value_floats", Attribute::Floats(v)) => Tensor::from_vec(vec![v.len()], v.clone())?,
        ("value_floats", _) => return Err(wrong("FLOATS")),
        ("value_int", Attribute::Int(v)) => Tensor::scalar(*v),
        ("value_int", _) => return Err(wrong("INT")),
        ("value_ints", Attribute::Ints(v)) => Tensor::from_vec(vec![v.len()], v.clone())?,
        ("value_ints", _) => return Err(wrong("INTS")),
        _ => {
            return Err(ctx
                .err(
                    ErrorKind::UnsupportedOp,
                    format!("Constant with '{name}' is not supported (no string or sparse tensors)"),
                )
                .with_attr(name))
        }
    })
}

pub(super) fn constant_infer(ctx: &OpCtx, _ins: Ins) -> Result<Vec<ValueType>> {
    let t = constant_value(ctx)?;
    Ok(vec![ValueType::known(t.dtype(), t.shape())])
}

pub(super) fn constant_eval(ctx: &OpCtx, _ins: Ts) -> Result<Vec<Tensor>> {
    Ok(vec![constant_value(ctx)?])
}
