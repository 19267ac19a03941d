//! Convolutions: `Conv` and `ConvTranspose` (1-D, 2-D and 3-D, any `group`).
//!
//! Also home of the sliding-window helpers shared with `pool.rs`: parsing of
//! `auto_pad` / `pads` / `strides` / `dilations`, and the per-axis output
//! size and padding rules of the ONNX spec
//! (<https://onnx.ai/onnx/operators/onnx__Conv.html>,
//! <https://onnx.ai/onnx/operators/onnx__ConvTranspose.html>).
//!
//! Evaluation strategy (f32; f16 goes through f32):
//! - 1x1 kernels with unit strides and no padding: one GEMM per image and
//!   group directly on the NCHW data (`W[M, C] x X[C, HW]`).
//! - depthwise (one input channel per group): a direct loop whose inner loop
//!   runs over the output width with the bounds hoisted out of it.
//! - everything else: im2col (in row chunks bounded in memory) + GEMM.
//! - `ConvTranspose`: GEMM `W^T x X` then col2im scatter-add.
//!
//! The integer convolutions of `quant.rs` (`ConvInteger`, `QLinearConv`)
//! reuse the validated geometry (`plan_conv`, `conv_out_dims`) and the
//! im2col unfolding, which is generic over the element type.

use super::linalg::{gemm_acc, MatRef};
use super::{InferInput, OpCtx, OpDef};
use crate::{f16, DType, Dim, ErrorKind, Result, Tensor, TensorData, ValueType};
use std::borrow::Cow;

/// Ops of this family.
pub(crate) const OPS: &[OpDef] = &[
    OpDef {
        op_type: "Conv",
        domain: "",
        since: 1,
        infer: infer_conv,
        eval: eval_conv,
    },
    OpDef {
        op_type: "ConvTranspose",
        domain: "",
        since: 1,
        infer: infer_conv_transpose,
        eval: eval_conv_transpose,
    },
];

/// Largest output (in elements) a window op may produce; guards against
/// absurd attribute values in malformed files.
pub(crate) const MAX_OUTPUT_ELEMS: usize = 1 << 30;
/// Largest value accepted in `kernel_shape`, `strides`, `dilations`, `pads`.
const MAX_ATTR: i64 = 1 << 24;

// ---------------------------------------------------------------------------
// Shared window helpers (also used by pool.rs).

/// The `auto_pad` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AutoPad {
    /// Explicit `pads`.
    NotSet,
    /// Pad so that `out = ceil(in / stride)`, extra padding at the end.
    SameUpper,
    /// Pad so that `out = ceil(in / stride)`, extra padding at the beginning.
    SameLower,
    /// No padding.
    Valid,
}

/// Window attributes of a conv or pool node, per spatial axis.
#[derive(Debug, Clone)]
pub(crate) struct Window {
    /// Strides, one per spatial axis.
    pub strides: Vec<usize>,
    /// Dilations, one per spatial axis.
    pub dilations: Vec<usize>,
    /// Explicit pads: `nsp` begins then `nsp` ends (ignored unless `NotSet`).
    pub pads: Vec<usize>,
    /// The `auto_pad` mode.
    pub auto_pad: AutoPad,
    /// Pooling `ceil_mode`.
    pub ceil_mode: bool,
}

/// An `INTS` attribute of exactly `len` values in `min..=MAX_ATTR`, or `default`.
pub(crate) fn ints_attr(ctx: &OpCtx, name: &str, len: usize, default: usize, min: i64) -> Result<Vec<usize>> {
    match ctx.node.attr_ints_opt(name)? {
        None => Ok(vec![default; len]),
        Some(v) => {
            if v.len() != len {
                return Err(ctx.attr_err(name, format!("expected {len} values, got {}", v.len())));
            }
            v.iter()
                .map(|&x| {
                    if (min..=MAX_ATTR).contains(&x) {
                        Ok(x as usize)
                    } else {
                        Err(ctx.attr_err(name, format!("value {x} is outside {min}..={MAX_ATTR}")))
                    }
                })
                .collect()
        }
    }
}

/// Parses `auto_pad`.
pub(crate) fn parse_auto_pad(ctx: &OpCtx) -> Result<AutoPad> {
    match ctx.node.attr_string("auto_pad", "NOTSET")?.as_str() {
        "NOTSET" | "" => Ok(AutoPad::NotSet),
        "SAME_UPPER" => Ok(AutoPad::SameUpper),
        "SAME_LOWER" => Ok(AutoPad::SameLower),
        "VALID" => Ok(AutoPad::Valid),
        other => Err(ctx.attr_err("auto_pad", format!("unknown value '{other}'"))),
    }
}

/// Parses the window attributes of a node with `nsp` spatial axes.
/// `dilations` are read only when `with_dilations`, `ceil_mode` only when
/// `with_ceil`.
pub(crate) fn parse_window(ctx: &OpCtx, nsp: usize, with_dilations: bool, with_ceil: bool) -> Result<Window> {
    let auto_pad = parse_auto_pad(ctx)?;
    let strides = ints_attr(ctx, "strides", nsp, 1, 1)?;
    let dilations = if with_dilations {
        ints_attr(ctx, "dilations", nsp, 1, 1)?
    } else {
        vec![1; nsp]
    };
    let pads = ints_attr(ctx, "pads", 2 * nsp, 0, 0)?;
    let ceil_mode = with_ceil && ctx.node.attr_int("ceil_mode", 0)? != 0;
    Ok(Window {
        strides,
        dilations,
        pads,
        auto_pad,
        ceil_mode,
    })
}

/// Reads `kernel_shape` (exactly `nsp` values >= 1), if present.
pub(crate) fn kernel_attr(ctx: &OpCtx, nsp: usize) -> Result<Option<Vec<usize>>> {
    if ctx.node.attrs.contains_key("kernel_shape") {
        Ok(Some(ints_attr(ctx, "kernel_shape", nsp, 1, 1)?))
    } else {
        Ok(None)
    }
}

impl Window {
    /// Output size and (begin, end) padding of spatial axis `i` for an input
    /// of `n` elements and a kernel of `k` taps.
    ///
    /// Errors (`ShapeMismatch`) when the output would be empty.
    pub(crate) fn axis_out(
        &self,
        ctx: &OpCtx,
        i: usize,
        n: usize,
        k: usize,
    ) -> Result<(usize, usize, usize)> {
        let nsp = self.strides.len();
        let (s, d) = (self.strides[i], self.dilations[i]);
        let ek = (k - 1) * d + 1; // k, d <= 2^24: no overflow on 64-bit
        let bad = || {
            ctx.err(
                ErrorKind::ShapeMismatch,
                format!(
                    "spatial axis {i}: input size {n} with kernel {k} (dilation {d}, stride {s}) gives an empty output"
                ),
            )
        };
        let (out, pb, pe) = match self.auto_pad {
            AutoPad::SameUpper | AutoPad::SameLower => {
                let out = n.div_ceil(s);
                if out == 0 {
                    return Err(bad());
                }
                let total = ((out - 1) * s + ek).saturating_sub(n);
                let small = total / 2;
                if self.auto_pad == AutoPad::SameUpper {
                    (out, small, total - small)
                } else {
                    (out, total - small, small)
                }
            }
            AutoPad::NotSet | AutoPad::Valid => {
                let (pb, pe) = if self.auto_pad == AutoPad::NotSet {
                    (self.pads[i], self.pads[nsp + i])
                } else {
                    (0, 0)
                };
                let total = n + pb + pe;
                if total < ek {
                    return Err(bad());
                }
                let mut out = if self.ceil_mode {
                    (total - ek).div_ceil(s) + 1
                } else {
                    (total - ek) / s + 1
                };
                // A window starting in the end padding is dropped.
                if self.ceil_mode && (out - 1) * s >= n + pb {
                    out -= 1;
                }
                (out, pb, pe)
            }
        };
        if out == 0 {
            return Err(bad());
        }
        Ok((out, pb, pe))
    }
}

/// Positions `o` in `0..n_out` such that `o * stride + off` lies in `0..n_in`,
/// as a half-open range `(lo, hi)` (empty when `lo == hi`).
#[inline]
pub(crate) fn tap_range(off: isize, stride: usize, n_in: usize, n_out: usize) -> (usize, usize) {
    let s = stride as isize;
    let lo = if off >= 0 { 0 } else { (-off + s - 1) / s };
    let hi = if off >= n_in as isize {
        0
    } else {
        (n_in as isize - off - 1) / s + 1
    };
    let lo = (lo as usize).min(n_out);
    let hi = (hi as usize).min(n_out);
    (lo, hi.max(lo))
}

/// Borrows a float tensor as f32 (converting f16).
pub(crate) fn f32_data<'a>(ctx: &OpCtx, t: &'a Tensor, what: &str) -> Result<Cow<'a, [f32]>> {
    match t.data() {
        TensorData::F32(v) => Ok(Cow::Borrowed(v)),
        TensorData::F16(v) => Ok(Cow::Owned(v.iter().map(|x| x.to_f32()).collect())),
        _ => Err(ctx.err(
            ErrorKind::TypeMismatch,
            format!("{what} must be float or float16, got {}", t.dtype()),
        )),
    }
}

/// Builds a tensor of `dtype` (f32 or f16) from f32 values.
pub(crate) fn from_f32(dtype: DType, shape: Vec<usize>, v: Vec<f32>) -> Result<Tensor> {
    if dtype == DType::F16 {
        Tensor::from_vec(shape, v.into_iter().map(f16::from_f32).collect::<Vec<_>>())
    } else {
        Tensor::from_vec(shape, v)
    }
}

/// Checks that an output shape stays under [`MAX_OUTPUT_ELEMS`].
pub(crate) fn check_out_size(ctx: &OpCtx, shape: &[usize]) -> Result<usize> {
    match crate::numel(shape) {
        Ok(n) if n <= MAX_OUTPUT_ELEMS => Ok(n),
        _ => Err(ctx.err(
            ErrorKind::LimitExceeded,
            format!("output shape {shape:?} exceeds {MAX_OUTPUT_ELEMS} elements"),
        )),
    }
}

/// Checks that a static type is float/float16.
pub(crate) fn check_float_type(ctx: &OpCtx, ty: &ValueType, what: &str) -> Result<()> {
    if ty.dtype.is_float() {
        Ok(())
    } else {
        Err(ctx.err(
            ErrorKind::TypeMismatch,
            format!("{what} must be float or float16, got {}", ty.dtype),
        ))
    }
}

/// Pads a per-axis vector to 3 axes by prepending `fill`.
fn to3<T: Copy>(v: &[T], fill: T) -> [T; 3] {
    let mut out = [fill; 3];
    out[3 - v.len()..].copy_from_slice(v);
    out
}

// ---------------------------------------------------------------------------
// Conv.

/// Spatial geometry of a convolution, normalized to 3 spatial axes
/// (leading axes of size 1 for 1-D and 2-D).
#[derive(Debug, Clone)]
pub(crate) struct Geom {
    /// Input spatial sizes.
    pub inp: [usize; 3],
    /// Kernel sizes.
    pub k: [usize; 3],
    /// Strides.
    pub s: [usize; 3],
    /// Dilations.
    pub d: [usize; 3],
    /// Begin pads (negative for a ConvTranspose `output_shape` larger than
    /// the full transposed output).
    pub p: [isize; 3],
    /// Output spatial sizes.
    pub out: [usize; 3],
}

impl Geom {
    /// Elements of one input channel plane.
    pub(crate) fn in_plane(&self) -> usize {
        self.inp.iter().product()
    }
    /// Elements of one output channel plane.
    pub(crate) fn out_plane(&self) -> usize {
        self.out.iter().product()
    }
    /// Taps of one kernel (product of the kernel sizes).
    pub(crate) fn kvol(&self) -> usize {
        self.k.iter().product()
    }
}

/// Spatial rank of a conv input of rank `rank`; errors unless 1..=3.
fn spatial_rank(ctx: &OpCtx, rank: usize, what: &str) -> Result<usize> {
    if !(3..=5).contains(&rank) {
        return Err(ctx.err(
            ErrorKind::ShapeMismatch,
            format!("{what} must have rank 3, 4 or 5 (N, C and 1-3 spatial dims), got rank {rank}"),
        ));
    }
    Ok(rank - 2)
}

/// Validated attributes and shapes of a Conv node with concrete shapes.
pub(crate) struct ConvPlan {
    /// Batch size N.
    pub n: usize,
    /// Input channels C.
    pub c: usize,
    /// Output channels M.
    pub m: usize,
    /// Number of groups.
    pub group: usize,
    /// Spatial geometry.
    pub geom: Geom,
    /// Output shape `[N, M, spatial...]`.
    pub out_shape: Vec<usize>,
}

fn group_attr(ctx: &OpCtx) -> Result<usize> {
    let g = ctx.node.attr_int("group", 1)?;
    if !(1..=MAX_ATTR).contains(&g) {
        return Err(ctx.attr_err("group", format!("group must be >= 1, got {g}")));
    }
    Ok(g as usize)
}

/// Validates the attributes (`group`, `kernel_shape`, `auto_pad`, `pads`,
/// `strides`, `dilations`) and shapes of a Conv-like node (`Conv`,
/// `ConvInteger`, `QLinearConv`) for input X of shape `xs`, weight W of shape
/// `ws` and a bias of `bias_len` elements, if any.
///
/// Errors: `ShapeMismatch` (ranks, channels, bias length, empty output),
/// `InvalidAttribute` naming the attribute, `LimitExceeded` for huge outputs.
pub(crate) fn plan_conv(
    ctx: &OpCtx,
    xs: &[usize],
    ws: &[usize],
    bias_len: Option<usize>,
) -> Result<ConvPlan> {
    let nsp = spatial_rank(ctx, xs.len(), "input X")?;
    if ws.len() != xs.len() {
        return Err(ctx.err(
            ErrorKind::ShapeMismatch,
            format!("weight W has rank {}, input X has rank {}", ws.len(), xs.len()),
        ));
    }
    let group = group_attr(ctx)?;
    let (n, c, m) = (xs[0], xs[1], ws[0]);
    if c % group != 0 || ws[1] * group != c {
        return Err(ctx.err(
            ErrorKind::ShapeMismatch,
            format!(
                "input has {c} channels, W expects {} per group with group = {group}",
                ws[1]
            ),
        ));
    }
    if m % group != 0 {
        return Err(ctx.err(
            ErrorKind::ShapeMismatch,
            format!("W has {m} output channels, not divisible by group = {group}"),
        ));
    }
    if let Some(b) = bias_len {
        if b != m {
            return Err(ctx.err(
                ErrorKind::ShapeMismatch,
                format!("bias B has {b} elements, expected {m}"),
            ));
        }
    }
    let kernel = ws[2..].to_vec();
    if let Some(k) = kernel_attr(ctx, nsp)? {
        if k != kernel {
            return Err(ctx.attr_err(
                "kernel_shape",
                format!("{k:?} does not match the weight's spatial dims {kernel:?}"),
            ));
        }
    }
    if kernel.contains(&0) {
        return Err(ctx.err(ErrorKind::ShapeMismatch, "W has an empty kernel dimension"));
    }
    let win = parse_window(ctx, nsp, true, false)?;
    let mut out = Vec::with_capacity(nsp);
    let mut pads = Vec::with_capacity(nsp);
    for i in 0..nsp {
        let (o, pb, _) = win.axis_out(ctx, i, xs[2 + i], kernel[i])?;
        out.push(o);
        pads.push(pb as isize);
    }
    let mut out_shape = vec![n, m];
    out_shape.extend(&out);
    check_out_size(ctx, &out_shape)?;
    Ok(ConvPlan {
        n,
        c,
        m,
        group,
        geom: Geom {
            inp: to3(&xs[2..], 1),
            k: to3(&kernel, 1),
            s: to3(&win.strides, 1),
            d: to3(&win.dilations, 1),
            p: to3(&pads, 0isize),
            out: to3(&out, 1),
        },
        out_shape,
    })
}

/// The checks Conv and ConvTranspose inference share: X is float, W has X's
/// dtype and rank. Returns X's dims and spatial rank, or `None` when X's rank
/// is unknown.
fn infer_xw_common<'a>(
    ctx: &OpCtx,
    x: &'a InferInput,
    w: &InferInput,
) -> Result<Option<(&'a Vec<Dim>, usize)>> {
    check_float_type(ctx, &x.ty, "input X")?;
    if w.ty.dtype != x.ty.dtype {
        return Err(ctx.err(
            ErrorKind::TypeMismatch,
            format!("W is {}, X is {}", w.ty.dtype, x.ty.dtype),
        ));
    }
    infer_xw_ranks(ctx, &x.ty, &w.ty)
}

/// The rank checks of conv inference (dtypes not checked): X has rank 3..=5
/// and W the same rank. Returns X's dims and spatial rank, or `None` when X's
/// rank is unknown.
fn infer_xw_ranks<'a>(ctx: &OpCtx, x: &'a ValueType, w: &ValueType) -> Result<Option<(&'a Vec<Dim>, usize)>> {
    let Some(xd) = &x.shape else { return Ok(None) };
    let nsp = spatial_rank(ctx, xd.len(), "input X")?;
    if let Some(wr) = w.rank() {
        if wr != xd.len() {
            return Err(ctx.err(
                ErrorKind::ShapeMismatch,
                format!("weight W has rank {wr}, input X has rank {}", xd.len()),
            ));
        }
    }
    Ok(Some((xd, nsp)))
}

fn infer_conv(ctx: &OpCtx, inputs: &[Option<&InferInput>]) -> Result<Vec<ValueType>> {
    let (x, w) = (ctx.infer_input(inputs, 0)?, ctx.infer_input(inputs, 1)?);
    let dtype = x.ty.dtype;
    if infer_xw_common(ctx, x, w)?.is_none() {
        return Ok(vec![ValueType::unknown_rank(dtype)]);
    }
    let b = ctx.opt_infer_input(inputs, 2).map(|b| &b.ty);
    Ok(vec![match conv_out_dims(ctx, &x.ty, &w.ty, b)? {
        Some(dims) => ValueType::new(dtype, dims),
        None => ValueType::unknown_rank(dtype),
    }])
}

/// Static output dims of a Conv-like node (`Conv`, `ConvInteger`,
/// `QLinearConv`) from the types of X, W and the optional 1-D bias B; dtypes
/// are not checked. `None` when X's rank is unknown. With every dim known
/// this runs the full [`plan_conv`] checks; otherwise the dims that cannot be
/// known are fresh symbols.
pub(crate) fn conv_out_dims(
    ctx: &OpCtx,
    x: &ValueType,
    w: &ValueType,
    b: Option<&ValueType>,
) -> Result<Option<Vec<Dim>>> {
    let Some((xd, nsp)) = infer_xw_ranks(ctx, x, w)? else {
        return Ok(None);
    };
    // All dims known: the concrete plan checks everything.
    if let (Some(xs), Some(ws)) = (x.known_dims(), w.known_dims()) {
        let bias_len = match b.and_then(|b| b.known_dims()) {
            Some(bd) if bd.len() == 1 => Some(bd[0]),
            Some(bd) => {
                return Err(ctx.err(
                    ErrorKind::ShapeMismatch,
                    format!("bias B must be 1-D, got shape {bd:?}"),
                ))
            }
            None => None,
        };
        let plan = plan_conv(ctx, &xs, &ws, bias_len)?;
        return Ok(Some(plan.out_shape.iter().map(|&d| Dim::Known(d)).collect()));
    }
    let group = group_attr(ctx)?;
    let win = parse_window(ctx, nsp, true, false)?;
    let wd = w.shape.as_ref();
    if let (Some(c), Some(wc)) = (xd[1].known(), wd.and_then(|wd| wd[1].known())) {
        if c % group != 0 || wc * group != c {
            return Err(ctx.err(
                ErrorKind::ShapeMismatch,
                format!("input has {c} channels, W expects {wc} per group with group = {group}"),
            ));
        }
    }
    let kernel: Option<Vec<usize>> = match kernel_attr(ctx, nsp)? {
        Some(k) => Some(k),
        None => wd.and_then(|wd| wd[2..].iter().map(|d| d.known()).collect()),
    };
    let mut out = vec![
        xd[0].clone(),
        wd.map(|wd| wd[0].clone())
            .unwrap_or_else(|| ctx.unknown_dim(0, 1)),
    ];
    for i in 0..nsp {
        let dim = match (xd[2 + i].known(), &kernel) {
            (Some(n), Some(k)) if k[i] > 0 => Dim::Known(win.axis_out(ctx, i, n, k[i])?.0),
            _ => ctx.unknown_dim(0, 2 + i),
        };
        out.push(dim);
    }
    Ok(Some(out))
}

/// X, W and the optional 1-D bias B of Conv/ConvTranspose, with matching dtypes.
fn conv_inputs<'t>(
    ctx: &OpCtx,
    inputs: &[Option<&'t Tensor>],
) -> Result<(&'t Tensor, &'t Tensor, Option<&'t Tensor>)> {
    let x = ctx.input(inputs, 0)?;
    let w = ctx.input(inputs, 1)?;
    let b = ctx.opt_input(inputs, 2);
    if w.dtype() != x.dtype() || b.is_some_and(|b| b.dtype() != x.dtype()) {
        return Err(ctx.err(
            ErrorKind::TypeMismatch,
            "X, W and B must have the same element type",
        ));
    }
    if let Some(b) = b {
        if b.rank() != 1 {
            return Err(ctx.err(
                ErrorKind::ShapeMismatch,
                format!("bias B must be 1-D, got shape {:?}", b.shape()),
            ));
        }
    }
    Ok((x, w, b))
}

/// The f32 data of X, W and B (f16 converted).
type F32Inputs<'a> = (Cow<'a, [f32]>, Cow<'a, [f32]>, Option<Cow<'a, [f32]>>);

fn conv_f32_inputs<'a>(
    ctx: &OpCtx,
    x: &'a Tensor,
    w: &'a Tensor,
    b: Option<&'a Tensor>,
) -> Result<F32Inputs<'a>> {
    let xv = f32_data(ctx, x, "input X")?;
    let wv = f32_data(ctx, w, "weight W")?;
    let bv = match b {
        Some(b) => Some(f32_data(ctx, b, "bias B")?),
        None => None,
    };
    Ok((xv, wv, bv))
}

fn eval_conv(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let (x, w, b) = conv_inputs(ctx, inputs)?;
    let plan = plan_conv(ctx, x.shape(), w.shape(), b.map(|b| b.len()))?;
    let (xv, wv, bv) = conv_f32_inputs(ctx, x, w, b)?;
    let y = conv_f32(&xv, &wv, bv.as_deref(), &plan)?;
    Ok(vec![from_f32(x.dtype(), plan.out_shape, y)?])
}

/// Largest im2col buffer (in elements) before the output rows are chunked.
pub(crate) const COL_LIMIT: usize = 1 << 22;

fn conv_f32(x: &[f32], w: &[f32], bias: Option<&[f32]>, p: &ConvPlan) -> Result<Vec<f32>> {
    let g = &p.geom;
    let (cg, mg) = (p.c / p.group, p.m / p.group);
    let (in_plane, out_plane, kvol) = (g.in_plane(), g.out_plane(), g.kvol());
    let kdim = cg * kvol;
    let mut y = vec![0f32; p.n * p.m * out_plane];
    if let Some(b) = bias {
        for (yc, &bv) in y.chunks_exact_mut(out_plane).zip(b.iter().cycle()) {
            yc.fill(bv);
        }
    }
    if out_plane == 0 || p.n == 0 || p.m == 0 {
        return Ok(y);
    }
    let pointwise = g.k == [1, 1, 1] && g.s == [1, 1, 1] && g.p == [0, 0, 0] && g.inp == g.out;
    let depthwise = cg == 1 && !pointwise;
    let rows = g.out[0] * g.out[1];
    let ow = g.out[2];
    let chunk_rows = (COL_LIMIT / (kdim * ow).max(1)).clamp(1, rows);
    let mut col = if pointwise || depthwise {
        Vec::new()
    } else {
        vec![0f32; kdim * chunk_rows * ow]
    };
    for ni in 0..p.n {
        let xn = &x[ni * p.c * in_plane..(ni + 1) * p.c * in_plane];
        let yn = &mut y[ni * p.m * out_plane..(ni + 1) * p.m * out_plane];
        if depthwise {
            depthwise_conv(xn, w, g, mg, yn);
            continue;
        }
        for gi in 0..p.group {
            let xg = &xn[gi * cg * in_plane..(gi + 1) * cg * in_plane];
            let wg = MatRef::row_major(&w[gi * mg * kdim..(gi + 1) * mg * kdim], mg, kdim)?;
            let yg = &mut yn[gi * mg * out_plane..(gi + 1) * mg * out_plane];
            if pointwise {
                gemm_acc(1.0, wg, MatRef::row_major(xg, cg, in_plane)?, yg, out_plane)?;
                continue;
            }
            let mut r0 = 0;
            while r0 < rows {
                let r1 = (r0 + chunk_rows).min(rows);
                let ncols = (r1 - r0) * ow;
                let colv = &mut col[..kdim * ncols];
                im2col(xg, cg, g, r0, r1, colv);
                let cm = MatRef::row_major(colv, kdim, ncols)?;
                gemm_acc(1.0, wg, cm, &mut yg[r0 * ow..], out_plane)?;
                r0 = r1;
            }
        }
    }
    Ok(y)
}

/// Unfolds output rows `r0..r1` (a row = one `(od, oh)` pair) of `cg`
/// channels into `col[cg * kvol, (r1 - r0) * OW]`; padding reads as
/// `T::default()` (zero).
pub(crate) fn im2col<T: Copy + Default>(x: &[T], cg: usize, g: &Geom, r0: usize, r1: usize, col: &mut [T]) {
    let [id, ih, iw] = g.inp;
    let [kd, kh, kw] = g.k;
    let [sd, sh, sw] = g.s;
    let [dd, dh, dw] = g.d;
    let [pd, ph, pw] = g.p;
    let (oh, ow) = (g.out[1], g.out[2]);
    let ncols = (r1 - r0) * ow;
    let plane = g.in_plane();
    let mut rows = col.chunks_exact_mut(ncols);
    for c in 0..cg {
        let xc = &x[c * plane..(c + 1) * plane];
        for kz in 0..kd {
            for ky in 0..kh {
                for kx in 0..kw {
                    let Some(dst_row) = rows.next() else { return };
                    let offx = (kx * dw) as isize - pw;
                    let (lo, hi) = tap_range(offx, sw, iw, ow);
                    for (r, dst) in (r0..r1).zip(dst_row.chunks_exact_mut(ow)) {
                        let (oz, oy) = (r / oh, r % oh);
                        let iz = (oz * sd + kz * dd) as isize - pd;
                        let iy = (oy * sh + ky * dh) as isize - ph;
                        if iz < 0 || iz >= id as isize || iy < 0 || iy >= ih as isize {
                            dst.fill(T::default());
                            continue;
                        }
                        let start = (iz as usize * ih + iy as usize) * iw;
                        let src = &xc[start..start + iw];
                        dst[..lo].fill(T::default());
                        dst[hi..].fill(T::default());
                        if hi > lo {
                            let s0 = (lo * sw) as isize + offx;
                            let s0 = s0 as usize;
                            if sw == 1 {
                                dst[lo..hi].copy_from_slice(&src[s0..s0 + hi - lo]);
                            } else {
                                for (d, s) in dst[lo..hi].iter_mut().zip(src[s0..].iter().step_by(sw)) {
                                    *d = *s;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Direct convolution for one input channel per group (`mg` outputs per
/// channel), over one image. `y` is pre-filled with the bias.
fn depthwise_conv(x: &[f32], w: &[f32], g: &Geom, mg: usize, y: &mut [f32]) {
    let [id, ih, iw] = g.inp;
    let [kd, kh, kw] = g.k;
    let [sd, sh, sw] = g.s;
    let [dd, dh, dw] = g.d;
    let [pd, ph, pw] = g.p;
    let [od, oh, ow] = g.out;
    let (in_plane, out_plane, kvol) = (g.in_plane(), g.out_plane(), g.kvol());
    // Per kx: the offset and valid output range, hoisted out of every loop.
    let taps: Vec<(isize, usize, usize)> = (0..kw)
        .map(|kx| {
            let off = (kx * dw) as isize - pw;
            let (lo, hi) = tap_range(off, sw, iw, ow);
            (off, lo, hi)
        })
        .collect();
    for (m, (ym, wm)) in y
        .chunks_exact_mut(out_plane)
        .zip(w.chunks_exact(kvol))
        .enumerate()
    {
        let c = m / mg;
        let xc = &x[c * in_plane..(c + 1) * in_plane];
        for oz in 0..od {
            for oy in 0..oh {
                let yrow = &mut ym[(oz * oh + oy) * ow..(oz * oh + oy + 1) * ow];
                for kz in 0..kd {
                    let iz = (oz * sd + kz * dd) as isize - pd;
                    if iz < 0 || iz >= id as isize {
                        continue;
                    }
                    for ky in 0..kh {
                        let iy = (oy * sh + ky * dh) as isize - ph;
                        if iy < 0 || iy >= ih as isize {
                            continue;
                        }
                        let start = (iz as usize * ih + iy as usize) * iw;
                        let src = &xc[start..start + iw];
                        let wrow = &wm[(kz * kh + ky) * kw..(kz * kh + ky + 1) * kw];
                        for (&wv, &(off, lo, hi)) in wrow.iter().zip(&taps) {
                            if hi <= lo {
                                continue;
                            }
                            let s0 = ((lo * sw) as isize + off) as usize;
                            let dst = &mut yrow[lo..hi];
                            if sw == 1 {
                                for (d, s) in dst.iter_mut().zip(&src[s0..s0 + (hi - lo)]) {
                                    *d += wv * *s;
                                }
                            } else {
                                for (d, s) in dst.iter_mut().zip(src[s0..].iter().step_by(sw)) {
                                    *d += wv * *s;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// ConvTranspose.

struct ConvTPlan {
    n: usize,
    c: usize,
    m: usize,
    group: usize,
    geom: Geom,
    out_shape: Vec<usize>,
}

/// Output size and begin pad of ConvTranspose axis `i` (input size `n`).
///
/// With `output_shape` or SAME auto padding, the total padding
/// `full - out` is split with floor division (as the ONNX reference does),
/// so an output larger than the full transposed size gets a negative pad.
#[allow(clippy::too_many_arguments)]
fn convt_axis(
    ctx: &OpCtx,
    win: &Window,
    i: usize,
    n: usize,
    k: usize,
    out_pad: usize,
    explicit_out: Option<usize>,
) -> Result<(usize, isize)> {
    let nsp = win.strides.len();
    let (s, d) = (win.strides[i], win.dilations[i]);
    let ek = (k - 1) * d + 1;
    if n == 0 {
        return Err(ctx.err(
            ErrorKind::ShapeMismatch,
            format!("spatial axis {i} of X is empty"),
        ));
    }
    // Size of the full (uncropped) output; all terms are below 2^24 * 2^30.
    let full = ((n - 1) * s + out_pad + ek) as isize;
    let split = |total: isize| -> isize {
        // SAME_UPPER: extra padding at the end; otherwise at the beginning.
        let half = total.div_euclid(2);
        if win.auto_pad == AutoPad::SameUpper {
            half
        } else {
            total - half
        }
    };
    let (out, pb) = if let Some(o) = explicit_out {
        (o, split(full - o as isize))
    } else {
        match win.auto_pad {
            AutoPad::SameUpper | AutoPad::SameLower => {
                let o = n * s;
                (o, split(full - o as isize))
            }
            AutoPad::Valid => (full as usize, 0),
            AutoPad::NotSet => {
                let (pb, pe) = (win.pads[i], win.pads[nsp + i]);
                let o = (full as usize)
                    .checked_sub(pb + pe)
                    .filter(|&o| o > 0)
                    .ok_or_else(|| {
                        ctx.err(
                            ErrorKind::ShapeMismatch,
                            format!("spatial axis {i}: pads {pb}+{pe} leave an empty output"),
                        )
                    })?;
                (o, pb as isize)
            }
        }
    };
    if out == 0 {
        return Err(ctx.err(
            ErrorKind::ShapeMismatch,
            format!("spatial axis {i}: empty output"),
        ));
    }
    Ok((out, pb))
}

/// `output_shape` and `output_padding` attributes (spatial values).
fn convt_attrs(ctx: &OpCtx, nsp: usize, win: &Window) -> Result<(Vec<usize>, Option<Vec<usize>>)> {
    let out_pad = ints_attr(ctx, "output_padding", nsp, 0, 0)?;
    for (i, &op) in out_pad.iter().enumerate() {
        if op >= win.strides[i].max(win.dilations[i]) {
            return Err(ctx.attr_err(
                "output_padding",
                format!("value {op} on axis {i} must be smaller than the stride or the dilation"),
            ));
        }
    }
    let out_shape = match ctx.node.attr_ints_opt("output_shape")? {
        None => None,
        Some(v) => {
            // Spatial sizes; tolerate the full [N, C, ...] form.
            let sp = if v.len() == nsp + 2 { &v[2..] } else { &v[..] };
            if sp.len() != nsp {
                return Err(ctx.attr_err("output_shape", format!("expected {nsp} values, got {}", v.len())));
            }
            Some(
                sp.iter()
                    .map(|&x| {
                        if (1..=MAX_ATTR).contains(&x) {
                            Ok(x as usize)
                        } else {
                            Err(ctx.attr_err("output_shape", format!("value {x} is outside 1..={MAX_ATTR}")))
                        }
                    })
                    .collect::<Result<Vec<_>>>()?,
            )
        }
    };
    Ok((out_pad, out_shape))
}

fn plan_conv_transpose(
    ctx: &OpCtx,
    xs: &[usize],
    ws: &[usize],
    bias_len: Option<usize>,
) -> Result<ConvTPlan> {
    let nsp = spatial_rank(ctx, xs.len(), "input X")?;
    if ws.len() != xs.len() {
        return Err(ctx.err(
            ErrorKind::ShapeMismatch,
            format!("weight W has rank {}, input X has rank {}", ws.len(), xs.len()),
        ));
    }
    let group = group_attr(ctx)?;
    let (n, c) = (xs[0], xs[1]);
    if ws[0] != c || c % group != 0 {
        return Err(ctx.err(
            ErrorKind::ShapeMismatch,
            format!(
                "input has {c} channels, W has {} input channels (group = {group})",
                ws[0]
            ),
        ));
    }
    let m = ws[1]
        .checked_mul(group)
        .ok_or_else(|| ctx.attr_err("group", "too large"))?;
    if let Some(b) = bias_len {
        if b != m {
            return Err(ctx.err(
                ErrorKind::ShapeMismatch,
                format!("bias B has {b} elements, expected {m}"),
            ));
        }
    }
    let kernel = ws[2..].to_vec();
    if let Some(k) = kernel_attr(ctx, nsp)? {
        if k != kernel {
            return Err(ctx.attr_err(
                "kernel_shape",
                format!("{k:?} does not match the weight's spatial dims {kernel:?}"),
            ));
        }
    }
    if kernel.contains(&0) {
        return Err(ctx.err(ErrorKind::ShapeMismatch, "W has an empty kernel dimension"));
    }
    let win = parse_window(ctx, nsp, true, false)?;
    let (out_pad, explicit) = convt_attrs(ctx, nsp, &win)?;
    let mut out = Vec::with_capacity(nsp);
    let mut pads = Vec::with_capacity(nsp);
    for i in 0..nsp {
        let (o, pb) = convt_axis(
            ctx,
            &win,
            i,
            xs[2 + i],
            kernel[i],
            out_pad[i],
            explicit.as_ref().map(|e| e[i]),
        )?;
        out.push(o);
        pads.push(pb);
    }
    let mut out_shape = vec![n, m];
    out_shape.extend(&out);
    check_out_size(ctx, &out_shape)?;
    check_out_size(ctx, &[m, kernel.iter().product(), xs[2..].iter().product()])?;
    Ok(ConvTPlan {
        n,
        c,
        m,
        group,
        geom: Geom {
            inp: to3(&xs[2..], 1),
            k: to3(&kernel, 1),
            s: to3(&win.strides, 1),
            d: to3(&win.dilations, 1),
            p: to3(&pads, 0isize),
            out: to3(&out, 1),
        },
        out_shape,
    })
}

fn infer_conv_transpose(ctx: &OpCtx, inputs: &[Option<&InferInput>]) -> Result<Vec<ValueType>> {
    let (x, w) = (ctx.infer_input(inputs, 0)?, ctx.infer_input(inputs, 1)?);
    let dtype = x.ty.dtype;
    let Some((xd, nsp)) = infer_xw_common(ctx, x, w)? else {
        return Ok(vec![ValueType::unknown_rank(dtype)]);
    };
    if let (Some(xs), Some(ws)) = (x.ty.known_dims(), w.ty.known_dims()) {
        let bias_len = ctx
            .opt_infer_input(inputs, 2)
            .and_then(|b| b.ty.known_dims())
            .map(|d| d.iter().product());
        let plan = plan_conv_transpose(ctx, &xs, &ws, bias_len)?;
        return Ok(vec![ValueType::known(dtype, &plan.out_shape)]);
    }
    let group = group_attr(ctx)?;
    let win = parse_window(ctx, nsp, true, false)?;
    let (out_pad, explicit) = convt_attrs(ctx, nsp, &win)?;
    let wd = w.ty.shape.as_ref();
    let kernel: Option<Vec<usize>> = match kernel_attr(ctx, nsp)? {
        Some(k) => Some(k),
        None => wd.and_then(|wd| wd.get(2..).and_then(|s| s.iter().map(|d| d.known()).collect())),
    };
    let m = match wd.and_then(|wd| wd.get(1)).and_then(|d| d.known()) {
        Some(mg) => Dim::Known(mg * group),
        None => ctx.unknown_dim(0, 1),
    };
    let mut out = vec![xd[0].clone(), m];
    for i in 0..nsp {
        let dim = if let Some(e) = &explicit {
            Dim::Known(e[i])
        } else {
            match (xd[2 + i].known(), &kernel) {
                (Some(n), Some(k)) if k[i] > 0 => {
                    Dim::Known(convt_axis(ctx, &win, i, n, k[i], out_pad[i], None)?.0)
                }
                _ => ctx.unknown_dim(0, 2 + i),
            }
        };
        out.push(dim);
    }
    Ok(vec![ValueType::new(dtype, out)])
}

fn eval_conv_transpose(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let (x, w, b) = conv_inputs(ctx, inputs)?;
    let plan = plan_conv_transpose(ctx, x.shape(), w.shape(), b.map(|b| b.len()))?;
    let (xv, wv, bv) = conv_f32_inputs(ctx, x, w, b)?;
    let y = conv_transpose_f32(&xv, &wv, bv.as_deref(), &plan)?;
    Ok(vec![from_f32(x.dtype(), plan.out_shape, y)?])
}

fn conv_transpose_f32(x: &[f32], w: &[f32], bias: Option<&[f32]>, p: &ConvTPlan) -> Result<Vec<f32>> {
    let g = &p.geom;
    let (cg, mg) = (p.c / p.group, p.m / p.group);
    let (in_plane, out_plane, kvol) = (g.in_plane(), g.out_plane(), g.kvol());
    let rows = mg * kvol;
    let mut y = vec![0f32; p.n * p.m * out_plane];
    if let Some(b) = bias {
        for (yc, &bv) in y.chunks_exact_mut(out_plane).zip(b.iter().cycle()) {
            yc.fill(bv);
        }
    }
    if out_plane == 0 || in_plane == 0 || p.n == 0 || p.m == 0 {
        return Ok(y);
    }
    let mut col = vec![0f32; rows * in_plane];
    for ni in 0..p.n {
        let xn = &x[ni * p.c * in_plane..(ni + 1) * p.c * in_plane];
        let yn = &mut y[ni * p.m * out_plane..(ni + 1) * p.m * out_plane];
        for gi in 0..p.group {
            let xg = MatRef::row_major(&xn[gi * cg * in_plane..(gi + 1) * cg * in_plane], cg, in_plane)?;
            let wg = MatRef::row_major(&w[gi * cg * rows..(gi + 1) * cg * rows], cg, rows)?.t();
            col.fill(0.0);
            gemm_acc(1.0, wg, xg, &mut col, in_plane)?;
            col2im(&col, g, &mut yn[gi * mg * out_plane..(gi + 1) * mg * out_plane]);
        }
    }
    Ok(y)
}

/// Scatter-adds `col[mg * kvol, in_plane]` into `y[mg, out_plane]`.
fn col2im(col: &[f32], g: &Geom, y: &mut [f32]) {
    let [id, ih, iw] = g.inp;
    let [kd, kh, kw] = g.k;
    let [sd, sh, sw] = g.s;
    let [dd, dh, dw] = g.d;
    let [pd, ph, pw] = g.p;
    let [od, oh, ow] = g.out;
    let (in_plane, out_plane, kvol) = (g.in_plane(), g.out_plane(), g.kvol());
    for (ym, cm) in y
        .chunks_exact_mut(out_plane)
        .zip(col.chunks_exact(kvol * in_plane))
    {
        let mut crows = cm.chunks_exact(in_plane);
        for kz in 0..kd {
            for ky in 0..kh {
                for kx in 0..kw {
                    let Some(crow) = crows.next() else { return };
                    let off = (kx * dw) as isize - pw;
                    let (lo, hi) = tap_range(off, sw, ow, iw);
                    if hi <= lo {
                        continue;
                    }
                    for iz in 0..id {
                        let oz = (iz * sd + kz * dd) as isize - pd;
                        if oz < 0 || oz >= od as isize {
                            continue;
                        }
                        for iy in 0..ih {
                            let oy = (iy * sh + ky * dh) as isize - ph;
                            if oy < 0 || oy >= oh as isize {
                                continue;
                            }
                            let ostart = (oz as usize * oh + oy as usize) * ow;
                            let yrow = &mut ym[ostart..ostart + ow];
                            let src = &crow[(iz * ih + iy) * iw + lo..(iz * ih + iy) * iw + hi];
                            let o0 = ((lo * sw) as isize + off) as usize;
                            for (s, d) in src.iter().zip(yrow[o0..].iter_mut().step_by(sw)) {
                                *d += *s;
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Attribute, Node};
    use proptest::prelude::*;

    fn node(op: &str, attrs: &[(&str, Attribute)]) -> Node {
        let mut n = Node::new("n", op, &["x", "w", "b"], &["y"]);
        for (k, v) in attrs {
            n = n.with_attr(k, v.clone());
        }
        n
    }
    fn ints(v: &[i64]) -> Attribute {
        Attribute::Ints(v.to_vec())
    }
    fn s(v: &str) -> Attribute {
        Attribute::String(v.as_bytes().to_vec())
    }
    fn t(shape: &[usize], v: Vec<f32>) -> Tensor {
        Tensor::from_vec(shape.to_vec(), v).unwrap()
    }
    fn iota(shape: &[usize]) -> Tensor {
        let n = shape.iter().product::<usize>();
        t(shape, (0..n).map(|i| i as f32).collect())
    }
    fn ones(shape: &[usize]) -> Tensor {
        t(shape, vec![1.0; shape.iter().product()])
    }
    fn run(op: &str, attrs: &[(&str, Attribute)], inputs: &[Option<&Tensor>]) -> Result<Tensor> {
        let n = node(op, attrs);
        let ctx = OpCtx { node: &n, opset: 17 };
        let f = if op == "Conv" {
            eval_conv
        } else {
            eval_conv_transpose
        };
        Ok(f(&ctx, inputs)?.remove(0))
    }
    fn conv(
        attrs: &[(&str, Attribute)],
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
    ) -> (Vec<usize>, Vec<f32>) {
        let y = run("Conv", attrs, &[Some(x), Some(w), b]).unwrap();
        (y.shape().to_vec(), y.into_vec::<f32>().unwrap())
    }
    fn convt(
        attrs: &[(&str, Attribute)],
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
    ) -> (Vec<usize>, Vec<f32>) {
        let y = run("ConvTranspose", attrs, &[Some(x), Some(w), b]).unwrap();
        (y.shape().to_vec(), y.into_vec::<f32>().unwrap())
    }
    fn infer(op: &str, attrs: &[(&str, Attribute)], x: ValueType, w: ValueType) -> Result<ValueType> {
        let n = node(op, attrs);
        let ctx = OpCtx { node: &n, opset: 17 };
        let xi = InferInput { ty: x, value: None };
        let wi = InferInput { ty: w, value: None };
        let f = if op == "Conv" {
            infer_conv
        } else {
            infer_conv_transpose
        };
        Ok(f(&ctx, &[Some(&xi), Some(&wi)])?.remove(0))
    }

    // ONNX backend-test cases (onnx/backend/test/case/node/conv.py).
    #[test]
    fn conv_pads_and_strides() {
        let x = iota(&[1, 1, 5, 5]);
        let w = ones(&[1, 1, 3, 3]);
        let (sh, y) = conv(&[("pads", ints(&[1, 1, 1, 1]))], &x, &w, None);
        assert_eq!(sh, vec![1, 1, 5, 5]);
        assert_eq!(
            y,
            vec![
                12., 21., 27., 33., 24., 33., 54., 63., 72., 51., 63., 99., 108., 117., 81., 93., 144., 153.,
                162., 111., 72., 111., 117., 123., 84.
            ]
        );
        let (sh, y) = conv(&[], &x, &w, None);
        assert_eq!(sh, vec![1, 1, 3, 3]);
        assert_eq!(y, vec![54., 63., 72., 99., 108., 117., 144., 153., 162.]);
        let x = iota(&[1, 1, 7, 5]);
        let (sh, y) = conv(
            &[("strides", ints(&[2, 2])), ("pads", ints(&[1, 1, 1, 1]))],
            &x,
            &w,
            None,
        );
        assert_eq!(sh, vec![1, 1, 4, 3]);
        assert_eq!(
            y,
            vec![12., 27., 24., 63., 108., 81., 123., 198., 141., 112., 177., 124.]
        );
        let (sh, y) = conv(&[("strides", ints(&[2, 2]))], &x, &w, None);
        assert_eq!(sh, vec![1, 1, 3, 2]);
        assert_eq!(y, vec![54., 72., 144., 162., 234., 252.]);
        // Asymmetric pads: top 1, bottom 1, none left/right.
        let (sh, y) = conv(
            &[("strides", ints(&[2, 2])), ("pads", ints(&[1, 0, 1, 0]))],
            &x,
            &w,
            None,
        );
        assert_eq!(sh, vec![1, 1, 4, 2]);
        assert_eq!(y, vec![21., 33., 99., 117., 189., 207., 171., 183.]);
    }

    #[test]
    fn conv_auto_pad() {
        let x = iota(&[1, 1, 5, 5]);
        let w = ones(&[1, 1, 3, 3]);
        let (sh, y) = conv(
            &[("auto_pad", s("SAME_LOWER")), ("strides", ints(&[2, 2]))],
            &x,
            &w,
            None,
        );
        assert_eq!(sh, vec![1, 1, 3, 3]);
        assert_eq!(y, vec![12., 27., 24., 63., 108., 81., 72., 117., 84.]);
        // Odd total padding: SAME_UPPER pads the end, SAME_LOWER the beginning.
        let x = t(&[1, 1, 4], vec![1., 2., 3., 4.]);
        let w = ones(&[1, 1, 2]);
        assert_eq!(
            conv(&[("auto_pad", s("SAME_UPPER"))], &x, &w, None).1,
            vec![3., 5., 7., 4.]
        );
        assert_eq!(
            conv(&[("auto_pad", s("SAME_LOWER"))], &x, &w, None).1,
            vec![1., 3., 5., 7.]
        );
        // VALID ignores pads.
        let (sh, y) = conv(&[("auto_pad", s("VALID")), ("pads", ints(&[3, 3]))], &x, &w, None);
        assert_eq!((sh, y), (vec![1, 1, 3], vec![3., 5., 7.]));
        // kernel_shape given explicitly and matching W.
        let (_, y) = conv(&[("kernel_shape", ints(&[2]))], &x, &w, None);
        assert_eq!(y, vec![3., 5., 7.]);
    }

    #[test]
    fn conv_dilation_group_bias() {
        let x = t(&[1, 1, 5], vec![1., 2., 3., 4., 5.]);
        let w = ones(&[1, 1, 2]);
        assert_eq!(
            conv(&[("dilations", ints(&[2]))], &x, &w, None).1,
            vec![4., 6., 8.]
        );
        // group = 2, one channel each, plus bias.
        let x = t(&[1, 2, 1, 2], vec![1., 2., 3., 4.]);
        let w = t(&[2, 1, 1, 1], vec![2., 10.]);
        let b = t(&[2], vec![0.5, -1.0]);
        let (sh, y) = conv(&[("group", Attribute::Int(2))], &x, &w, Some(&b));
        assert_eq!((sh, y), (vec![1, 2, 1, 2], vec![2.5, 4.5, 29., 39.]));
        // Depthwise with multiplier 2: 1 channel, 2 outputs per channel.
        let x = t(&[1, 1, 3], vec![1., 2., 3.]);
        let w = t(&[2, 1, 2], vec![1., 1., 1., -1.]);
        let (sh, y) = conv(&[], &x, &w, None);
        assert_eq!((sh, y), (vec![1, 2, 2], vec![3., 5., -1., -1.]));
        // Grouped 1x1 with 2 channels per group (pointwise GEMM path).
        let x = t(&[1, 4, 1, 1], vec![1., 2., 3., 4.]);
        let w = t(&[2, 2, 1, 1], vec![1., 1., 1., -1.]);
        let (_, y) = conv(&[("group", Attribute::Int(2))], &x, &w, None);
        assert_eq!(y, vec![3., -1.]);
        // 3-D, batch 2.
        let x = ones(&[2, 1, 2, 2, 2]);
        let w = ones(&[1, 1, 2, 2, 2]);
        let (sh, y) = conv(&[], &x, &w, None);
        assert_eq!((sh, y), (vec![2, 1, 1, 1, 1], vec![8., 8.]));
    }

    #[test]
    fn conv_f16() {
        let x = Tensor::from_vec(
            vec![1, 1, 3],
            vec![f16::from_f32(1.), f16::from_f32(2.), f16::from_f32(3.)],
        )
        .unwrap();
        let w = Tensor::from_vec(vec![1, 1, 2], vec![f16::from_f32(1.), f16::from_f32(0.5)]).unwrap();
        let y = run("Conv", &[], &[Some(&x), Some(&w)]).unwrap();
        assert_eq!(y.dtype(), DType::F16);
        assert_eq!(y.to_f32_vec(), vec![2., 3.5]);
    }

    #[test]
    fn conv_errors() {
        let x = iota(&[1, 2, 4, 4]);
        let err =
            |attrs: &[(&str, Attribute)], w: &Tensor| run("Conv", attrs, &[Some(&x), Some(w)]).unwrap_err();
        assert_eq!(err(&[], &ones(&[1, 3, 3, 3])).kind, ErrorKind::ShapeMismatch);
        assert_eq!(
            err(&[("group", Attribute::Int(3))], &ones(&[3, 1, 3, 3])).kind,
            ErrorKind::ShapeMismatch
        );
        assert_eq!(
            err(&[("group", Attribute::Int(2))], &ones(&[3, 1, 3, 3])).kind,
            ErrorKind::ShapeMismatch
        );
        assert_eq!(err(&[], &ones(&[1, 2, 5, 5])).kind, ErrorKind::ShapeMismatch);
        let e = err(&[("pads", ints(&[1, 1, 1]))], &ones(&[1, 2, 3, 3]));
        assert_eq!(
            (e.kind, e.attr.as_deref()),
            (ErrorKind::InvalidAttribute, Some("pads"))
        );
        assert_eq!(
            err(&[("strides", ints(&[0, 1]))], &ones(&[1, 2, 3, 3])).kind,
            ErrorKind::InvalidAttribute
        );
        assert_eq!(
            err(&[("kernel_shape", ints(&[2, 2]))], &ones(&[1, 2, 3, 3])).kind,
            ErrorKind::InvalidAttribute
        );
        assert_eq!(
            err(&[("auto_pad", s("SAME"))], &ones(&[1, 2, 3, 3])).kind,
            ErrorKind::InvalidAttribute
        );
        assert_eq!(
            err(
                &[("pads", ints(&[1 << 24, 1 << 24, 1 << 24, 1 << 24]))],
                &ones(&[64, 2, 1, 1])
            )
            .kind,
            ErrorKind::LimitExceeded
        );
        assert_eq!(err(&[], &ones(&[1, 2])).kind, ErrorKind::ShapeMismatch);
        let b = ones(&[2]);
        let e = run("Conv", &[], &[Some(&x), Some(&ones(&[1, 2, 3, 3])), Some(&b)]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::ShapeMismatch);
        let xi = Tensor::from_vec(vec![1, 1, 2], vec![1i64, 2]).unwrap();
        let wi = Tensor::from_vec(vec![1, 1, 1], vec![1i64]).unwrap();
        assert_eq!(
            run("Conv", &[], &[Some(&xi), Some(&wi)]).unwrap_err().kind,
            ErrorKind::TypeMismatch
        );
    }

    #[test]
    fn conv_infer() {
        let x = ValueType::new(
            DType::F32,
            vec![
                Dim::Sym("N".into()),
                Dim::Known(3),
                Dim::Known(224),
                Dim::Sym("W".into()),
            ],
        );
        let w = ValueType::known(DType::F32, &[32, 3, 3, 3]);
        let y = infer(
            "Conv",
            &[("strides", ints(&[2, 2])), ("pads", ints(&[0, 0, 1, 1]))],
            x,
            w,
        )
        .unwrap();
        assert_eq!(
            y.shape.unwrap(),
            vec![
                Dim::Sym("N".into()),
                Dim::Known(32),
                Dim::Known(112),
                Dim::Sym("n:0:3".into())
            ]
        );
        let x = ValueType::known(DType::F32, &[1, 3, 224, 224]);
        let w = ValueType::known(DType::F32, &[32, 3, 3, 3]);
        let y = infer(
            "Conv",
            &[("auto_pad", s("SAME_UPPER")), ("strides", ints(&[2, 2]))],
            x.clone(),
            w.clone(),
        );
        assert_eq!(y.unwrap(), ValueType::known(DType::F32, &[1, 32, 112, 112]));
        assert!(infer("Conv", &[("group", Attribute::Int(2))], x, w).is_err());
        let x = ValueType::unknown_rank(DType::F32);
        let w = ValueType::known(DType::F32, &[32, 3, 3, 3]);
        assert_eq!(infer("Conv", &[], x, w).unwrap().shape, None);
    }

    // ONNX backend-test cases (onnx/backend/test/case/node/convtranspose.py).
    #[test]
    fn conv_transpose_basic() {
        let x = iota(&[1, 1, 3, 3]);
        let w = ones(&[1, 2, 3, 3]);
        let (sh, y) = convt(&[], &x, &w, None);
        assert_eq!(sh, vec![1, 2, 5, 5]);
        let ch = vec![
            0., 1., 3., 3., 2., 3., 8., 15., 12., 7., 9., 21., 36., 27., 15., 9., 20., 33., 24., 13., 6.,
            13., 21., 15., 8.,
        ];
        assert_eq!(y, [ch.clone(), ch].concat());
        let x = t(&[1, 1, 3], vec![0., 1., 2.]);
        let (sh, y) = convt(&[], &x, &ones(&[1, 2, 3]), Some(&t(&[2], vec![1., 0.])));
        assert_eq!(
            (sh, y),
            (vec![1, 2, 5], vec![1., 2., 4., 4., 3., 0., 1., 3., 3., 2.])
        );
    }

    #[test]
    fn conv_transpose_pads_output_shape() {
        let x = iota(&[1, 1, 3, 3]);
        let w = ones(&[1, 2, 3, 3]);
        let (sh, y) = convt(
            &[("strides", ints(&[3, 2])), ("pads", ints(&[1, 2, 1, 2]))],
            &x,
            &w,
            None,
        );
        assert_eq!(sh, vec![1, 2, 7, 3]);
        let ch = vec![
            1., 1., 3., 1., 1., 3., 7., 4., 9., 7., 4., 9., 7., 4., 9., 13., 7., 15., 13., 7., 15.,
        ];
        assert_eq!(y, [ch.clone(), ch].concat());
        // output_shape larger than the full output: zeros at the end.
        let (sh, y) = convt(
            &[("strides", ints(&[3, 2])), ("output_shape", ints(&[10, 8]))],
            &x,
            &w,
            None,
        );
        assert_eq!(sh, vec![1, 2, 10, 8]);
        assert_eq!(&y[0..8], &[0., 0., 1., 1., 3., 2., 2., 0.]);
        assert_eq!(&y[24..32], &[3., 3., 7., 4., 9., 5., 5., 0.]);
        assert_eq!(&y[72..80], &[0.; 8]);
        // output_padding adds to the end.
        let (sh, y) = convt(
            &[("strides", ints(&[3, 2])), ("output_padding", ints(&[1, 1]))],
            &x,
            &w,
            None,
        );
        assert_eq!(sh, vec![1, 2, 10, 8]);
        assert_eq!(&y[0..8], &[0., 0., 1., 1., 3., 2., 2., 0.]);
        // SAME_UPPER: out = in * stride, odd total padding at the end.
        let (sh, y) = convt(
            &[("strides", ints(&[2, 2])), ("auto_pad", s("SAME_UPPER"))],
            &x,
            &w,
            None,
        );
        assert_eq!(sh, vec![1, 2, 6, 6]);
        assert_eq!(&y[0..12], &[0., 0., 1., 1., 3., 2., 0., 0., 1., 1., 3., 2.]);
        assert_eq!(&y[12..18], &[3., 3., 8., 5., 12., 7.]);
        let (_, y) = convt(
            &[("strides", ints(&[2, 2])), ("auto_pad", s("SAME_LOWER"))],
            &x,
            &w,
            None,
        );
        assert_eq!(&y[0..6], &[0., 1., 1., 3., 2., 2.]);
    }

    #[test]
    fn conv_transpose_dilation_group() {
        // Dilation 2, kernel 2 (1-D): taps at 0 and 2.
        let x = t(&[1, 1, 3], vec![1., 2., 3.]);
        let w = t(&[1, 1, 2], vec![1., 10.]);
        let (sh, y) = convt(&[("dilations", ints(&[2]))], &x, &w, None);
        assert_eq!((sh, y), (vec![1, 1, 5], vec![1., 2., 13., 20., 30.]));
        // Two groups, stride 2.
        let x = t(&[1, 2, 2], vec![1., 2., 3., 4.]);
        let w = t(&[2, 1, 1], vec![1., -1.]);
        let (sh, y) = convt(
            &[("group", Attribute::Int(2)), ("strides", ints(&[2]))],
            &x,
            &w,
            None,
        );
        assert_eq!((sh, y), (vec![1, 2, 3], vec![1., 0., 2., -3., 0., -4.]));
    }

    #[test]
    fn conv_transpose_errors_and_infer() {
        let x = iota(&[1, 2, 3, 3]);
        let e = run("ConvTranspose", &[], &[Some(&x), Some(&ones(&[1, 2, 3, 3]))]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::ShapeMismatch);
        let e = run(
            "ConvTranspose",
            &[("pads", ints(&[3, 3, 3, 3]))],
            &[Some(&x), Some(&ones(&[2, 1, 3, 3]))],
        )
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::ShapeMismatch);
        let e = run(
            "ConvTranspose",
            &[("output_padding", ints(&[1, 1]))],
            &[Some(&x), Some(&ones(&[2, 1, 3, 3]))],
        )
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidAttribute);
        let xt = ValueType::new(
            DType::F32,
            vec![
                Dim::Sym("N".into()),
                Dim::Known(8),
                Dim::Known(10),
                Dim::Known(10),
            ],
        );
        let wt = ValueType::known(DType::F32, &[8, 4, 4, 4]);
        let y = infer(
            "ConvTranspose",
            &[
                ("strides", ints(&[2, 2])),
                ("pads", ints(&[1, 1, 1, 1])),
                ("group", Attribute::Int(2)),
            ],
            xt,
            wt,
        )
        .unwrap();
        assert_eq!(
            y.shape.unwrap(),
            vec![
                Dim::Sym("N".into()),
                Dim::Known(8),
                Dim::Known(20),
                Dim::Known(20)
            ]
        );
    }

    /// Direct-definition reference convolution (f64 accumulation).
    #[allow(clippy::too_many_arguments)]
    fn naive_conv(
        x: &[f32],
        xs: [usize; 4],
        w: &[f32],
        ws: [usize; 4],
        group: usize,
        st: [usize; 2],
        dl: [usize; 2],
        pads: [usize; 4],
        bias: Option<&[f32]>,
    ) -> (Vec<usize>, Vec<f32>) {
        let [n, c, h, wd] = xs;
        let [m, cg, kh, kw] = ws;
        let oh = (h + pads[0] + pads[2] - ((kh - 1) * dl[0] + 1)) / st[0] + 1;
        let ow = (wd + pads[1] + pads[3] - ((kw - 1) * dl[1] + 1)) / st[1] + 1;
        let mg = m / group;
        let mut y = vec![0f32; n * m * oh * ow];
        for ni in 0..n {
            for mi in 0..m {
                let gi = mi / mg;
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut acc = bias.map_or(0.0, |b| b[mi] as f64);
                        for ci in 0..cg {
                            let cin = gi * cg + ci;
                            for ky in 0..kh {
                                for kx in 0..kw {
                                    let iy = (oy * st[0] + ky * dl[0]) as isize - pads[0] as isize;
                                    let ix = (ox * st[1] + kx * dl[1]) as isize - pads[1] as isize;
                                    if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                        continue;
                                    }
                                    let xv = x[((ni * c + cin) * h + iy as usize) * wd + ix as usize];
                                    let wv = w[((mi * cg + ci) * kh + ky) * kw + kx];
                                    acc += xv as f64 * wv as f64;
                                }
                            }
                        }
                        y[((ni * m + mi) * oh + oy) * ow + ox] = acc as f32;
                    }
                }
            }
        }
        (vec![n, m, oh, ow], y)
    }

    fn rnd_vec(seed: u64, n: usize) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[allow(clippy::too_many_arguments)]
    fn check_against_naive(
        xs: [usize; 4],
        ws: [usize; 4],
        group: usize,
        st: [usize; 2],
        dl: [usize; 2],
        pads: [usize; 4],
        with_bias: bool,
        seed: u64,
    ) -> std::result::Result<(), TestCaseError> {
        let x = rnd_vec(seed, xs.iter().product());
        let w = rnd_vec(seed ^ 0x9e37, ws.iter().product());
        let b = rnd_vec(seed ^ 0x1234, ws[0]);
        let (want_shape, want) = naive_conv(
            &x,
            xs,
            &w,
            ws,
            group,
            st,
            dl,
            pads,
            if with_bias { Some(&b) } else { None },
        );
        let xt = t(&xs, x);
        let wt = t(&ws, w);
        let bt = t(&[ws[0]], b);
        let attrs = [
            ("group", Attribute::Int(group as i64)),
            ("strides", ints(&st.map(|v| v as i64))),
            ("dilations", ints(&dl.map(|v| v as i64))),
            ("pads", ints(&pads.map(|v| v as i64))),
        ];
        let (sh, y) = conv(&attrs, &xt, &wt, if with_bias { Some(&bt) } else { None });
        prop_assert_eq!(sh, want_shape);
        let k = (ws[1] * ws[2] * ws[3]) as f32;
        for (a, b) in y.iter().zip(&want) {
            prop_assert!(
                (a - b).abs() <= 1e-5 * (k + 1.0) * (1.0 + b.abs()),
                "{} vs {}",
                a,
                b
            );
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn conv_1x1_matches_naive(n in 1usize..3, cg in 1usize..20, mg in 1usize..20, group in 1usize..3,
                                  h in 1usize..9, w in 1usize..9, stride in 1usize..3, bias in any::<bool>(), seed in any::<u64>()) {
            check_against_naive([n, cg * group, h, w], [mg * group, cg, 1, 1], group, [stride, stride], [1, 1],
                                [0, 0, 0, 0], bias, seed)?;
        }

        #[test]
        fn conv_depthwise_matches_naive(c in 1usize..6, mult in 1usize..3, h in 1usize..12, w in 1usize..12,
                                        k in 1usize..6, sh in 1usize..3, sw in 1usize..4, d in 1usize..3,
                                        p in proptest::array::uniform4(0usize..3), bias in any::<bool>(), seed in any::<u64>()) {
            let ek = (k - 1) * d + 1;
            prop_assume!(h + p[0] + p[2] >= ek && w + p[1] + p[3] >= ek);
            check_against_naive([1, c, h, w], [c * mult, 1, k, k], c, [sh, sw], [d, d], p, bias, seed)?;
        }

        #[test]
        fn conv_general_matches_naive(n in 1usize..3, cg in 1usize..5, mg in 1usize..7, group in 1usize..3,
                                      h in 1usize..10, w in 1usize..10, kh in 1usize..4, kw in 1usize..4,
                                      sh in 1usize..3, sw in 1usize..3, dh in 1usize..3, dw in 1usize..3,
                                      p in proptest::array::uniform4(0usize..3), bias in any::<bool>(), seed in any::<u64>()) {
            prop_assume!(h + p[0] + p[2] > (kh - 1) * dh && w + p[1] + p[3] > (kw - 1) * dw);
            check_against_naive([n, cg * group, h, w], [mg * group, cg, kh, kw], group, [sh, sw], [dh, dw], p, bias, seed)?;
        }
    }
}

/// Validated geometry of a 2-D `Conv` (or kiln `FusedConv`) node with
/// concrete shapes, for compiled runtimes (every attribute rule of the
/// op's own checks and `auto_pad` applied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conv2dShape {
    /// Batch N.
    pub n: usize,
    /// Input channels C.
    pub c: usize,
    /// Output channels M.
    pub m: usize,
    /// Groups.
    pub group: usize,
    /// Input height and width.
    pub input: [usize; 2],
    /// Kernel height and width.
    pub kernel: [usize; 2],
    /// Strides (H, W).
    pub strides: [usize; 2],
    /// Dilations (H, W).
    pub dilations: [usize; 2],
    /// Begin pads (top, left); end pads follow from the output size.
    pub pads_begin: [usize; 2],
    /// Output height and width.
    pub output: [usize; 2],
}

/// The [`Conv2dShape`] of `node` (a `Conv`-like node at `opset`) for input X of
/// shape `xs` (rank 4, NCHW), weights of shape `ws` (`[M, C/group, kh, kw]`)
/// and an optional bias length. `None` for ranks other than 4 (1-D and 3-D
/// convolutions) or negative begin pads.
///
/// Errors as the op's own checks (attributes, channel counts, empty output).
pub fn conv2d_shape(
    node: &crate::Node,
    opset: i64,
    xs: &[usize],
    ws: &[usize],
    bias_len: Option<usize>,
) -> Result<Option<Conv2dShape>> {
    if xs.len() != 4 {
        return Ok(None);
    }
    let ctx = OpCtx { node, opset };
    let p = plan_conv(&ctx, xs, ws, bias_len)?;
    let g = &p.geom;
    if g.p[1] < 0 || g.p[2] < 0 {
        return Ok(None);
    }
    Ok(Some(Conv2dShape {
        n: p.n,
        c: p.c,
        m: p.m,
        group: p.group,
        input: [g.inp[1], g.inp[2]],
        kernel: [g.k[1], g.k[2]],
        strides: [g.s[1], g.s[2]],
        dilations: [g.d[1], g.d[2]],
        pads_begin: [g.p[1] as usize, g.p[2] as usize],
        output: [g.out[1], g.out[2]],
    }))
}
