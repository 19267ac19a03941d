//! Helpers shared by the shape ops: checked sizes, constant integer inputs,
//! axis normalization, and the generic per-axis gather engine.

use crate::ops::{norm_axis, InferInput, OpCtx};
use crate::{map_data, strides, Dim, Elem, ErrorKind, Result, Tensor, ValueType};

/// Largest output, in elements, that a shape op will allocate from sizes a
/// model controls (shape inputs, pads, repeats, split sizes...): 2^31.
pub const MAX_ELEMS: usize = 1 << 31;

/// Largest rank a shape op will produce from a model-controlled length
/// (e.g. the length of Reshape's or ConstantOfShape's shape input).
pub const MAX_RANK: usize = 1024;

/// Number of elements of `dims`, or `LimitExceeded` above [`MAX_ELEMS`].
pub(super) fn checked_numel(ctx: &OpCtx, dims: &[usize]) -> Result<usize> {
    if dims.contains(&0) {
        return Ok(0);
    }
    match dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) {
        Some(n) if n <= MAX_ELEMS => Ok(n),
        _ => Err(ctx.err(
            ErrorKind::LimitExceeded,
            format!("output shape {dims:?} has more than {MAX_ELEMS} elements"),
        )),
    }
}

/// Errors if a model-derived rank exceeds [`MAX_RANK`].
pub(super) fn check_rank(ctx: &OpCtx, rank: usize) -> Result<()> {
    if rank > MAX_RANK {
        return Err(ctx.err(
            ErrorKind::LimitExceeded,
            format!("output rank {rank} exceeds the limit of {MAX_RANK}"),
        ));
    }
    Ok(())
}

/// Integer contents of an input tensor (shape, axes, pads, indices...).
pub(super) fn ints(ctx: &OpCtx, t: &Tensor, what: &str) -> Result<Vec<i64>> {
    t.to_i64_vec()
        .map_err(|e| ctx.err(e.kind, format!("input '{what}': {}", e.message)))
}

/// Integer contents of an inference input, when it is a constant.
pub(super) fn const_ints(ctx: &OpCtx, inp: &InferInput, what: &str) -> Result<Option<Vec<i64>>> {
    match &inp.value {
        Some(t) => ints(ctx, t, what).map(Some),
        None => Ok(None),
    }
}

/// Length of a 1-D input from its static shape (`None` if unknown).
/// Errors if its rank is known and not 1.
pub(super) fn static_len(ctx: &OpCtx, inp: &InferInput, what: &str) -> Result<Option<usize>> {
    match inp.ty.shape.as_deref() {
        None => Ok(None),
        Some([d]) => Ok(d.known()),
        Some(s) => Err(ctx.err(
            ErrorKind::ShapeMismatch,
            format!("input '{what}' must be 1-D, got rank {}", s.len()),
        )),
    }
}

/// Requires a rank-1 (or, leniently, rank-0) tensor for 1-D integer inputs.
pub(super) fn check_1d(ctx: &OpCtx, t: &Tensor, what: &str) -> Result<()> {
    if t.rank() > 1 {
        return Err(ctx.err(
            ErrorKind::ShapeMismatch,
            format!("input '{what}' must be 1-D, got shape {:?}", t.shape()),
        ));
    }
    Ok(())
}

/// `n` fresh unknown dims for output `out`.
pub(super) fn unknown_dims(ctx: &OpCtx, out: usize, n: usize) -> Vec<Dim> {
    (0..n).map(|i| ctx.unknown_dim(out, i)).collect()
}

/// Known dims of a concrete shape.
pub(super) fn known(dims: &[usize]) -> Vec<Dim> {
    dims.iter().map(|&d| Dim::Known(d)).collect()
}

/// Normalizes one axis in `0..rank`; negative values are rejected when
/// `neg_ok` is false (ops that only accept them from opset 11).
pub(super) fn axis(ctx: &OpCtx, attr: &str, a: i64, rank: usize, neg_ok: bool) -> Result<usize> {
    if a < 0 && !neg_ok {
        return Err(ctx.attr_err(
            attr,
            format!(
                "negative axis {a} needs opset 11 or later (model opset {})",
                ctx.opset
            ),
        ));
    }
    if rank == 0 {
        return Err(ctx.attr_err(attr, format!("axis {a} is out of range for rank 0")));
    }
    norm_axis(ctx, attr, a, rank)
}

/// Normalizes a list of axes in `0..rank`, rejecting duplicates.
pub(super) fn axes(ctx: &OpCtx, attr: &str, list: &[i64], rank: usize, neg_ok: bool) -> Result<Vec<usize>> {
    let mut out = Vec::with_capacity(list.len());
    for &a in list {
        let n = axis(ctx, attr, a, rank, neg_ok)?;
        if out.contains(&n) {
            return Err(ctx.attr_err(attr, format!("axis {a} is repeated in {list:?}")));
        }
        out.push(n);
    }
    Ok(out)
}

/// Product of static dims: known when no symbol is involved, the symbol
/// itself when it is alone with known factors of 1, else a fresh unknown dim.
pub(super) fn dims_product(ctx: &OpCtx, dims: &[Dim], out: usize, at: usize) -> Result<Dim> {
    let mut p: usize = 1;
    let mut syms = Vec::new();
    for d in dims {
        match d {
            Dim::Known(k) => {
                p = p
                    .checked_mul(*k)
                    .ok_or_else(|| ctx.err(ErrorKind::LimitExceeded, "product of dims overflows usize"))?
            }
            Dim::Sym(_) => syms.push(d),
        }
    }
    Ok(match syms.as_slice() {
        [] => Dim::Known(p),
        [s] if p == 1 => (*s).clone(),
        _ if p == 0 => Dim::Known(0),
        _ => ctx.unknown_dim(out, at),
    })
}

/// The input's static type with the same shape and another dtype.
pub(super) fn retype(ty: &ValueType, dtype: crate::DType) -> ValueType {
    ValueType {
        dtype,
        shape: ty.shape.clone(),
    }
}

/// First element of `fill` as a `T`, or `T::default()` when absent or of
/// another type.
fn fill_elem<T: Elem>(fill: Option<&Tensor>) -> T {
    fill.and_then(|t| T::slice(t.data()))
        .and_then(|s| s.first().copied())
        .unwrap_or_default()
}

/// The generic gather engine behind every data-movement op.
///
/// Output element at coordinate `(o_0, ..., o_{r-1})` of `out_shape` reads
/// input offset `sum_k f(k, o_k)`, or the first element of `fill` (default
/// zero/false) when any `f(k, o_k)` is `None`. `f` returns offsets in
/// elements (coordinate times the input stride). The size limit is checked
/// before anything is built, and every offset is range-checked, so a wrong
/// map is an `Internal` error, not a panic.
pub(super) fn gather_axes(
    ctx: &OpCtx,
    x: &Tensor,
    out_shape: Vec<usize>,
    fill: Option<&Tensor>,
    f: impl Fn(usize, usize) -> Option<usize>,
) -> Result<Tensor> {
    let n = checked_numel(ctx, &out_shape)?;
    if n == 0 {
        return Tensor::zeros(x.dtype(), out_shape);
    }
    let maps: Vec<Vec<Option<usize>>> = out_shape
        .iter()
        .enumerate()
        .map(|(k, &d)| (0..d).map(|o| f(k, o)).collect())
        .collect();
    // Largest offset the maps can produce must be in range.
    let mut max = 0usize;
    let mut any = true;
    for m in &maps {
        match m.iter().flatten().max() {
            Some(&v) => max = max.saturating_add(v),
            None => any = false,
        }
    }
    if any && max >= x.len() {
        return Err(ctx.err(
            ErrorKind::Internal,
            format!("gather offset {max} out of range for {} elements", x.len()),
        ));
    }
    let data = map_data!(x.data(), v => gather_t(v.as_slice(), &out_shape, &maps, fill_elem(fill), n));
    Tensor::new(out_shape, data)
}

fn gather_t<T: Copy>(v: &[T], shape: &[usize], maps: &[Vec<Option<usize>>], fill: T, n: usize) -> Vec<T> {
    let r = shape.len();
    let mut out = Vec::with_capacity(n);
    let mut coord = vec![0usize; r];
    loop {
        let mut base = Some(0usize);
        for k in 0..r.saturating_sub(1) {
            base = match (base, maps[k][coord[k]]) {
                (Some(b), Some(o)) => Some(b + o),
                _ => None,
            };
        }
        if r == 0 {
            out.push(base.map_or(fill, |b| v[b]));
            return out;
        }
        let last = &maps[r - 1];
        match base {
            None => out.extend(std::iter::repeat_n(fill, last.len())),
            Some(b) => out.extend(last.iter().map(|o| o.map_or(fill, |o| v[b + o]))),
        }
        let mut k = r - 1;
        loop {
            if k == 0 {
                return out;
            }
            k -= 1;
            coord[k] += 1;
            if coord[k] < shape[k] {
                break;
            }
            coord[k] = 0;
        }
    }
}

/// Row-major strides of a concrete shape.
pub(super) fn st(shape: &[usize]) -> Vec<usize> {
    strides(shape)
}

/// Checked product of concrete dims (`LimitExceeded` on overflow).
pub(super) fn prod(ctx: &OpCtx, dims: &[usize]) -> Result<usize> {
    dims.iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| ctx.err(ErrorKind::LimitExceeded, format!("product of {dims:?} overflows")))
}
