//! kiln's integer ops (domain `"kiln"`): the scalar reference kernels of
//! quantized execution. The runtime lowers QDQ patterns
//! (`DequantizeLinear → op → QuantizeLinear`) onto them, so 8-bit tensors
//! stay 8-bit between ops and every product accumulates in `i32`.
//!
//! All ops follow kiln's quantization scheme ([`crate::quant`]): a real value
//! is `scale * (q - zero_point)`; outputs are requantized with a fixed-point
//! multiplier `m` and exponent `e` (attributes `multiplier`/`shift`, from
//! [`quantize_multiplier`]) by [`requantize`] (exact 64-bit product, round
//! half to even), then the output zero point is added and the result clamped
//! to `[y_min, y_max]` (defaults: the output type's range). A fused
//! activation (Relu, Clip) becomes that clamp.
//!
//! Common attributes: `output_dtype` (INT, ONNX `TensorProto` code: 2 =
//! uint8, 3 = int8), `y_zero_point` (INT), `y_min`/`y_max` (INT).
//!
//! # Ops
//!
//! - `QConv(X, W, B?)`: X `uint8`/`int8` `[N, C, H, W]`, W `int8`/`uint8`
//!   `[M, C/group, kh, kw]`, B `int32` `[M]` at scale `s_x * s_w[m]`.
//!   Attributes of ONNX `Conv` (2-D) plus `x_zero_point` (INT),
//!   `w_zero_point` (INTS, 1 or M), `multiplier`/`shift` (INTS, 1 or M) for
//!   `M_m = s_x * s_w[m] / s_y`. `acc = B[m] + Σ (x - zx)(w - zw[m])`.
//! - `QGemm(A, W, B?)`: A `[..., K]`, W `[N, K]` (output-major), B `int32`
//!   `[N]`; attributes `a_zero_point`, `w_zero_point` (INTS), `multiplier`,
//!   `shift` (INTS, 1 or N). Output `[..., N]`. Covers ONNX `Gemm`
//!   (alpha = beta = 1) and `MatMul` with a constant 2-D right operand.
//! - `QAdd(A, B)`: NumPy broadcasting. As TFLite's quantized ADD: both inputs
//!   are shifted left by 20 bits and rescaled to a common scale
//!   `2 * max(s_a, s_b)` (`a_multiplier`/`a_shift`, `b_multiplier`/`b_shift`),
//!   summed, then rescaled by `multiplier`/`shift` =
//!   `2 * max(s_a, s_b) / (2^20 * s_y)`. Attributes `a_zero_point`,
//!   `b_zero_point`.
//! - `QMul(A, B)`: broadcasting; `acc = (a - za)(b - zb)`,
//!   `multiplier`/`shift` = `s_a * s_b / s_y`.
//! - `QLut(X)`: `y = table[x]` with `table` (INTS, 256 entries, indexed by
//!   `x` for uint8 and `x + 128` for int8). Any element-wise function of one
//!   8-bit input (Sigmoid, HardSigmoid, HardSwish, a requantization...) is a
//!   table computed once: `table[q] = Q_y(f(DQ_x(q)))`, so it equals the
//!   dequantize-compute-quantize reference exactly.
//! - `QGlobalAveragePool(X)`: `acc = Σ_spatial (x - zx)`, rescaled by
//!   `s_x / (s_y * count)` (attributes `x_zero_point`, `x_scale`, `y_scale`
//!   (FLOAT); the multiplier is derived at run time since `count` depends on
//!   the input shape).
//!
//! Accumulators wrap on overflow (as `i32` hardware does); with 8-bit
//! operands that needs more than 33,000 terms of maximal magnitude.

use super::conv::parse_window;
use super::{broadcast_shapes, InferInput, OpCtx, OpDef};
use crate::quant::{qrange, quantize_multiplier, requantize};
use crate::{DType, Dim, ErrorKind, Result, Tensor, ValueType};

/// Domain of kiln's own ops.
const KILN: &str = "kiln";

const fn kdef(op_type: &'static str, infer: super::InferFn, eval: super::EvalFn) -> OpDef {
    OpDef {
        op_type,
        domain: KILN,
        since: 1,
        infer,
        eval,
    }
}

pub(crate) const OPS: &[OpDef] = &[
    kdef("QConv", infer_qconv, eval_qconv),
    kdef("QGemm", infer_qgemm, eval_qgemm),
    kdef("QAdd", infer_broadcast, eval_qadd),
    kdef("QMul", infer_broadcast, eval_qmul),
    kdef("QLut", infer_same_shape, eval_qlut),
    kdef("QGlobalAveragePool", infer_gap, eval_qgap),
];

/// ONNX `TensorProto` codes of the 8-bit types.
pub const ONNX_UINT8: i64 = 2;
/// ONNX `TensorProto` code of int8.
pub const ONNX_INT8: i64 = 3;

fn out_dtype(ctx: &OpCtx) -> Result<DType> {
    match ctx.node.attr_int("output_dtype", ONNX_UINT8)? {
        ONNX_UINT8 => Ok(DType::U8),
        ONNX_INT8 => Ok(DType::I8),
        other => Err(ctx.attr_err(
            "output_dtype",
            format!("must be 2 (uint8) or 3 (int8), got {other}"),
        )),
    }
}

/// Output zero point and clamp range `(zy, lo, hi)`.
fn out_params(ctx: &OpCtx, dt: DType) -> Result<(i32, i32, i32)> {
    let (qmin, qmax) = qrange(dt)?;
    let zy = ctx.node.attr_int("y_zero_point", 0)?;
    let lo = ctx.node.attr_int("y_min", qmin as i64)?;
    let hi = ctx.node.attr_int("y_max", qmax as i64)?;
    if !(qmin as i64..=qmax as i64).contains(&zy) {
        return Err(ctx.attr_err("y_zero_point", format!("{zy} is outside the output type's range")));
    }
    if lo > hi || lo < qmin as i64 || hi > qmax as i64 {
        return Err(ctx.attr_err(
            "y_min",
            format!("clamp [{lo}, {hi}] is not within [{qmin}, {qmax}]"),
        ));
    }
    Ok((zy as i32, lo as i32, hi as i32))
}

/// Per-channel INTS attribute with 1 or `n` values, expanded to `n`.
fn per_channel(ctx: &OpCtx, name: &str, n: usize) -> Result<Vec<i32>> {
    let v = ctx
        .node
        .attr_ints_opt(name)?
        .ok_or_else(|| ctx.attr_err(name, "required attribute is missing"))?;
    if v.len() == 1 {
        Ok(vec![v[0] as i32; n])
    } else if v.len() == n {
        Ok(v.iter().map(|&x| x as i32).collect())
    } else {
        Err(ctx.attr_err(name, format!("expected 1 or {n} values, got {}", v.len())))
    }
}

/// Multipliers and exponents, validated.
fn mults(ctx: &OpCtx, n: usize) -> Result<(Vec<i32>, Vec<i32>)> {
    let m = per_channel(ctx, "multiplier", n)?;
    let e = per_channel(ctx, "shift", n)?;
    check_mult(ctx, &m, &e)?;
    Ok((m, e))
}

fn check_mult(ctx: &OpCtx, m: &[i32], e: &[i32]) -> Result<()> {
    if m.iter().any(|&v| v < 0) {
        return Err(ctx.attr_err("multiplier", "multipliers must be >= 0"));
    }
    if e.iter().any(|&v| !(-31..=30).contains(&v)) {
        return Err(ctx.attr_err("shift", "exponents must be in -31..=30"));
    }
    Ok(())
}

/// Integer values of an 8-bit tensor, minus `zp`, as i32.
fn centered(ctx: &OpCtx, t: &Tensor, zp: i32, what: &str) -> Result<Vec<i32>> {
    match t.dtype() {
        DType::U8 => Ok(t.as_slice::<u8>()?.iter().map(|&v| v as i32 - zp).collect()),
        DType::I8 => Ok(t.as_slice::<i8>()?.iter().map(|&v| v as i32 - zp).collect()),
        other => Err(ctx.err(
            ErrorKind::TypeMismatch,
            format!("{what} must be uint8 or int8, got {}", other.onnx_name()),
        )),
    }
}

fn finish(dt: DType, shape: Vec<usize>, v: Vec<i32>) -> Result<Tensor> {
    match dt {
        DType::U8 => Tensor::from_vec(shape, v.into_iter().map(|x| x as u8).collect::<Vec<_>>()),
        _ => Tensor::from_vec(shape, v.into_iter().map(|x| x as i8).collect::<Vec<_>>()),
    }
}

#[inline]
fn out_val(acc: i32, m: i32, e: i32, zy: i32, lo: i32, hi: i32) -> i32 {
    requantize(acc, m, e).saturating_add(zy).clamp(lo, hi)
}

fn check_8bit(ctx: &OpCtx, ty: &ValueType, what: &str) -> Result<()> {
    if matches!(ty.dtype, DType::U8 | DType::I8) {
        Ok(())
    } else {
        Err(ctx.err(
            ErrorKind::TypeMismatch,
            format!("{what} must be uint8 or int8, got {}", ty.dtype.onnx_name()),
        ))
    }
}

// ---------------------------------------------------------------------------
// QConv

struct QConvGeom {
    n: usize,
    c: usize,
    m: usize,
    group: usize,
    ih: usize,
    iw: usize,
    kh: usize,
    kw: usize,
    sh: usize,
    sw: usize,
    dh: usize,
    dw: usize,
    ph: usize,
    pw: usize,
    oh: usize,
    ow: usize,
}

fn qconv_geom(ctx: &OpCtx, xs: &[usize], ws: &[usize]) -> Result<QConvGeom> {
    if xs.len() != 4 || ws.len() != 4 {
        return Err(ctx.err(
            ErrorKind::ShapeMismatch,
            format!("QConv is 2-D: X and W must have rank 4, got {xs:?} and {ws:?}"),
        ));
    }
    let group = ctx.node.attr_int("group", 1)?;
    if group < 1 {
        return Err(ctx.attr_err("group", "must be >= 1"));
    }
    let group = group as usize;
    let (n, c, m) = (xs[0], xs[1], ws[0]);
    if c % group != 0 || ws[1] * group != c || m % group != 0 {
        return Err(ctx.err(
            ErrorKind::ShapeMismatch,
            format!("X has {c} channels, W is {ws:?}, group = {group}: they do not match"),
        ));
    }
    let win = parse_window(ctx, 2, true, false)?;
    let (oh, ph, _) = win.axis_out(ctx, 0, xs[2], ws[2])?;
    let (ow, pw, _) = win.axis_out(ctx, 1, xs[3], ws[3])?;
    Ok(QConvGeom {
        n,
        c,
        m,
        group,
        ih: xs[2],
        iw: xs[3],
        kh: ws[2],
        kw: ws[3],
        sh: win.strides[0],
        sw: win.strides[1],
        dh: win.dilations[0],
        dw: win.dilations[1],
        ph,
        pw,
        oh,
        ow,
    })
}

fn infer_qconv(ctx: &OpCtx, inputs: &[Option<&InferInput>]) -> Result<Vec<ValueType>> {
    let x = ctx.infer_input(inputs, 0)?;
    let w = ctx.infer_input(inputs, 1)?;
    check_8bit(ctx, &x.ty, "input X")?;
    check_8bit(ctx, &w.ty, "weight W")?;
    let dt = out_dtype(ctx)?;
    let shape = match (&x.ty.shape, &w.ty.shape) {
        (Some(xs), Some(ws)) if xs.len() == 4 && ws.len() == 4 => {
            let known = |d: &[Dim]| d.iter().map(|d| d.known()).collect::<Option<Vec<usize>>>();
            match (known(xs), known(ws)) {
                (Some(xk), Some(wk)) => {
                    let g = qconv_geom(ctx, &xk, &wk)?;
                    Some(vec![
                        Dim::Known(g.n),
                        Dim::Known(g.m),
                        Dim::Known(g.oh),
                        Dim::Known(g.ow),
                    ])
                }
                _ => Some(vec![
                    xs[0].clone(),
                    ws[0].clone(),
                    ctx.unknown_dim(0, 2),
                    ctx.unknown_dim(0, 3),
                ]),
            }
        }
        _ => None,
    };
    Ok(vec![ValueType { dtype: dt, shape }])
}

fn eval_qconv(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = ctx.input(inputs, 0)?;
    let w = ctx.input(inputs, 1)?;
    let g = qconv_geom(ctx, x.shape(), w.shape())?;
    let dt = out_dtype(ctx)?;
    let (zy, lo, hi) = out_params(ctx, dt)?;
    let zx = ctx.node.attr_int("x_zero_point", 0)? as i32;
    let zw = per_channel(ctx, "w_zero_point", g.m)?;
    let (mm, ee) = mults(ctx, g.m)?;
    let bias: Vec<i32> = match ctx.opt_input(inputs, 2) {
        Some(b) => {
            let b = b
                .as_slice::<i32>()
                .map_err(|_| ctx.err(ErrorKind::TypeMismatch, "bias B must be int32"))?;
            if b.len() != g.m {
                return Err(ctx.err(
                    ErrorKind::ShapeMismatch,
                    format!("bias B has {} elements, expected {}", b.len(), g.m),
                ));
            }
            b.to_vec()
        }
        None => vec![0; g.m],
    };
    let xv = centered(ctx, x, zx, "input X")?;
    let wraw = centered(ctx, w, 0, "weight W")?;
    let (cg, mg) = (g.c / g.group, g.m / g.group);
    let kvol = cg * g.kh * g.kw;
    // Weights minus their per-channel zero point, i16 (|w - zw| <= 255).
    let mut wv: Vec<i16> = vec![0; wraw.len()];
    for (mo, (d, s)) in wv
        .chunks_exact_mut(kvol.max(1))
        .zip(wraw.chunks_exact(kvol.max(1)))
        .enumerate()
    {
        for (d, &s) in d.iter_mut().zip(s) {
            *d = (s - zw[mo]) as i16;
        }
    }
    let (in_plane, out_plane) = (g.ih * g.iw, g.oh * g.ow);
    let mut y = vec![0i32; g.n * g.m * out_plane];
    let depthwise = cg == 1 && mg == 1;
    let pointwise = g.kh == 1 && g.kw == 1 && g.sh == 1 && g.sw == 1 && g.ph == 0 && g.pw == 0;
    let mut col = if depthwise {
        Vec::new()
    } else {
        vec![0i16; kvol * out_plane]
    };
    let mut acc = vec![0i32; out_plane];
    for b in 0..g.n {
        for gi in 0..g.group {
            let xg = &xv[(b * g.c + gi * cg) * in_plane..(b * g.c + (gi + 1) * cg) * in_plane];
            if depthwise {
                // Direct: one input channel, one output channel.
                let wk = &wv[gi * kvol..(gi + 1) * kvol];
                acc.fill(bias[gi]);
                qdepthwise(xg, wk, &g, &mut acc);
                let dst = &mut y[(b * g.m + gi) * out_plane..(b * g.m + gi + 1) * out_plane];
                for (d, &av) in dst.iter_mut().zip(acc.iter()) {
                    *d = out_val(av, mm[gi], ee[gi], zy, lo, hi);
                }
                continue;
            }
            // im2col: rows k = (c, ky, kx), columns = output pixels; padding is
            // the zero point, i.e. 0 after centering.
            if pointwise {
                for (d, s) in col.iter_mut().zip(xg) {
                    *d = *s as i16;
                }
            } else {
                qim2col(xg, cg, &g, &mut col);
            }
            let wg = &wv[gi * mg * kvol..(gi + 1) * mg * kvol];
            let yg = &mut y[(b * g.m + gi * mg) * out_plane..(b * g.m + (gi + 1) * mg) * out_plane];
            let bg = &bias[gi * mg..(gi + 1) * mg];
            let (mg_m, mg_e) = (&mm[gi * mg..(gi + 1) * mg], &ee[gi * mg..(gi + 1) * mg]);
            qgemm_i16(wg, &col, kvol, out_plane, bg, |mi, p, av| {
                yg[mi * out_plane + p] = out_val(av, mg_m[mi], mg_e[mi], zy, lo, hi);
            });
        }
    }
    Ok(vec![finish(dt, vec![g.n, g.m, g.oh, g.ow], y)?])
}

/// Pixel tile of [`qgemm_i16`]: the accumulators of one output channel over
/// this many pixels stay in L1 (or registers) while K is walked.
const PTILE: usize = 64;

/// `out(m, p, Σ_k w[m, k] * col[k, p] + bias[m])` for `w` `[M, K]`, `col`
/// `[K, P]`, in i32 (wrapping). Tiled over pixels so that the accumulator
/// block stays hot while K is walked.
fn qgemm_i16(
    w: &[i16],
    col: &[i16],
    k: usize,
    p: usize,
    bias: &[i32],
    mut out: impl FnMut(usize, usize, i32),
) {
    let m = bias.len();
    let mut p0 = 0;
    while p0 < p {
        let pt = PTILE.min(p - p0);
        for mi in 0..m {
            let mut acc = [0i32; PTILE];
            acc[..pt].fill(bias[mi]);
            let wrow = &w[mi * k..(mi + 1) * k];
            for (kk, &wk) in wrow.iter().enumerate() {
                if wk == 0 {
                    continue;
                }
                let wk = wk as i32;
                let crow = &col[kk * p + p0..kk * p + p0 + pt];
                for (a, &c) in acc[..pt].iter_mut().zip(crow) {
                    *a = a.wrapping_add(wk * c as i32);
                }
            }
            for (j, &a) in acc[..pt].iter().enumerate() {
                out(mi, p0 + j, a);
            }
        }
        p0 += pt;
    }
}

/// im2col of `cg` centered channels into `col` `[cg * kh * kw, OH * OW]` (i16).
fn qim2col(xg: &[i32], cg: usize, g: &QConvGeom, col: &mut [i16]) {
    let (in_plane, out_plane) = (g.ih * g.iw, g.oh * g.ow);
    let mut row = 0;
    for c in 0..cg {
        let xc = &xg[c * in_plane..(c + 1) * in_plane];
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let dst = &mut col[row * out_plane..(row + 1) * out_plane];
                for oy in 0..g.oh {
                    let iy = (oy * g.sh + ky * g.dh) as isize - g.ph as isize;
                    let drow = &mut dst[oy * g.ow..(oy + 1) * g.ow];
                    if iy < 0 || iy >= g.ih as isize {
                        drow.fill(0);
                        continue;
                    }
                    let src = &xc[iy as usize * g.iw..(iy as usize + 1) * g.iw];
                    for (ox, d) in drow.iter_mut().enumerate() {
                        let ix = (ox * g.sw + kx * g.dw) as isize - g.pw as isize;
                        *d = if ix < 0 || ix >= g.iw as isize {
                            0
                        } else {
                            src[ix as usize] as i16
                        };
                    }
                }
                row += 1;
            }
        }
    }
}

/// Direct depthwise convolution of one centered channel `x` with kernel `w`
/// `[kh * kw]`, accumulating into `acc` `[OH * OW]` (pre-filled with the bias).
fn qdepthwise(x: &[i32], w: &[i16], g: &QConvGeom, acc: &mut [i32]) {
    for oy in 0..g.oh {
        let arow = &mut acc[oy * g.ow..(oy + 1) * g.ow];
        for ky in 0..g.kh {
            let iy = (oy * g.sh + ky * g.dh) as isize - g.ph as isize;
            if iy < 0 || iy >= g.ih as isize {
                continue;
            }
            let src = &x[iy as usize * g.iw..(iy as usize + 1) * g.iw];
            for kx in 0..g.kw {
                let wk = w[ky * g.kw + kx] as i32;
                if wk == 0 {
                    continue;
                }
                let off = (kx * g.dw) as isize - g.pw as isize;
                // valid ox: 0 <= ox * sw + off < iw
                let lo = if off >= 0 {
                    0
                } else {
                    ((-off) as usize).div_ceil(g.sw)
                };
                let hi = if (g.iw as isize) <= off {
                    0
                } else {
                    ((g.iw as isize - off) as usize).div_ceil(g.sw).min(g.ow)
                };
                if g.sw == 1 {
                    let s0 = (lo as isize + off) as usize;
                    for (a, &xv) in arow[lo..hi.max(lo)].iter_mut().zip(&src[s0..]) {
                        *a = a.wrapping_add(wk * xv);
                    }
                } else {
                    for ox in lo..hi {
                        let ix = (ox * g.sw) as isize + off;
                        arow[ox] = arow[ox].wrapping_add(wk * src[ix as usize]);
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// QGemm

fn infer_qgemm(ctx: &OpCtx, inputs: &[Option<&InferInput>]) -> Result<Vec<ValueType>> {
    let a = ctx.infer_input(inputs, 0)?;
    let w = ctx.infer_input(inputs, 1)?;
    check_8bit(ctx, &a.ty, "input A")?;
    check_8bit(ctx, &w.ty, "weight W")?;
    let shape = match (&a.ty.shape, &w.ty.shape) {
        (Some(s), Some(ws)) if !s.is_empty() && ws.len() == 2 => {
            let mut o = s.clone();
            *o.last_mut().expect("non-empty") = ws[0].clone();
            Some(o)
        }
        _ => None,
    };
    Ok(vec![ValueType {
        dtype: out_dtype(ctx)?,
        shape,
    }])
}

fn eval_qgemm(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let a = ctx.input(inputs, 0)?;
    let w = ctx.input(inputs, 1)?;
    if a.rank() == 0 || w.rank() != 2 || a.shape()[a.rank() - 1] != w.shape()[1] {
        return Err(ctx.err(
            ErrorKind::ShapeMismatch,
            format!(
                "QGemm needs A [..., K] and W [N, K], got {:?} and {:?}",
                a.shape(),
                w.shape()
            ),
        ));
    }
    let (n, k) = (w.shape()[0], w.shape()[1]);
    let rows = a.len() / k.max(1);
    let dt = out_dtype(ctx)?;
    let (zy, lo, hi) = out_params(ctx, dt)?;
    let za = ctx.node.attr_int("a_zero_point", 0)? as i32;
    let zw = per_channel(ctx, "w_zero_point", n)?;
    let (mm, ee) = mults(ctx, n)?;
    let bias: Vec<i32> = match ctx.opt_input(inputs, 2) {
        Some(b) => {
            let b = b
                .as_slice::<i32>()
                .map_err(|_| ctx.err(ErrorKind::TypeMismatch, "bias B must be int32"))?;
            if b.len() != n {
                return Err(ctx.err(
                    ErrorKind::ShapeMismatch,
                    format!("bias B has {} elements, expected {n}", b.len()),
                ));
            }
            b.to_vec()
        }
        None => vec![0; n],
    };
    let av = centered(ctx, a, za, "input A")?;
    let wraw = centered(ctx, w, 0, "weight W")?;
    let wv: Vec<i32> = wraw
        .iter()
        .enumerate()
        .map(|(i, &v)| v - zw[i / k.max(1)])
        .collect();
    let mut y = vec![0i32; rows * n];
    for r in 0..rows {
        let arow = &av[r * k..(r + 1) * k];
        for o in 0..n {
            let wrow = &wv[o * k..(o + 1) * k];
            let mut acc = bias[o];
            for (x, wv) in arow.iter().zip(wrow) {
                acc = acc.wrapping_add(x * wv);
            }
            y[r * n + o] = out_val(acc, mm[o], ee[o], zy, lo, hi);
        }
    }
    let mut shape = a.shape().to_vec();
    *shape.last_mut().expect("rank >= 1") = n;
    Ok(vec![finish(dt, shape, y)?])
}

// ---------------------------------------------------------------------------
// QAdd / QMul

fn infer_broadcast(ctx: &OpCtx, inputs: &[Option<&InferInput>]) -> Result<Vec<ValueType>> {
    let a = ctx.infer_input(inputs, 0)?;
    let b = ctx.infer_input(inputs, 1)?;
    check_8bit(ctx, &a.ty, "input A")?;
    check_8bit(ctx, &b.ty, "input B")?;
    let shape = super::broadcast_types(ctx, &[&a.ty, &b.ty])?;
    Ok(vec![ValueType {
        dtype: out_dtype(ctx)?,
        shape,
    }])
}

/// Calls `f(ia, ib)` for every output element of the broadcast of `sa` and
/// `sb` (flat indices into each input), in row-major order.
fn broadcast_pairs(sa: &[usize], sb: &[usize], mut f: impl FnMut(usize, usize)) -> Result<Vec<usize>> {
    let out = broadcast_shapes(sa, sb)?;
    let r = out.len();
    let stride_of = |s: &[usize]| -> Vec<usize> {
        let mut st = vec![0; r];
        let mut acc = 1;
        for i in (0..s.len()).rev() {
            let oi = i + r - s.len();
            st[oi] = if s[i] == 1 { 0 } else { acc };
            acc *= s[i];
        }
        st
    };
    let (ta, tb) = (stride_of(sa), stride_of(sb));
    let total: usize = out.iter().product();
    let mut idx = vec![0usize; r];
    let (mut ia, mut ib) = (0usize, 0usize);
    for _ in 0..total {
        f(ia, ib);
        for d in (0..r).rev() {
            idx[d] += 1;
            ia += ta[d];
            ib += tb[d];
            if idx[d] < out[d] {
                break;
            }
            ia -= ta[d] * out[d];
            ib -= tb[d] * out[d];
            idx[d] = 0;
        }
    }
    Ok(out)
}

fn eval_qadd(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let a = ctx.input(inputs, 0)?;
    let b = ctx.input(inputs, 1)?;
    let dt = out_dtype(ctx)?;
    let (zy, lo, hi) = out_params(ctx, dt)?;
    let av = centered(ctx, a, ctx.node.attr_int("a_zero_point", 0)? as i32, "input A")?;
    let bv = centered(ctx, b, ctx.node.attr_int("b_zero_point", 0)? as i32, "input B")?;
    let (ma, ea) = (
        per_channel(ctx, "a_multiplier", 1)?[0],
        per_channel(ctx, "a_shift", 1)?[0],
    );
    let (mb, eb) = (
        per_channel(ctx, "b_multiplier", 1)?[0],
        per_channel(ctx, "b_shift", 1)?[0],
    );
    let (m, e) = mults(ctx, 1)?;
    check_mult(ctx, &[ma, mb], &[ea, eb])?;
    let mut y = Vec::with_capacity(av.len().max(bv.len()));
    let shape = broadcast_pairs(a.shape(), b.shape(), |i, j| {
        let sa = requantize(av[i] << 20, ma, ea);
        let sb = requantize(bv[j] << 20, mb, eb);
        y.push(out_val(sa.wrapping_add(sb), m[0], e[0], zy, lo, hi));
    })
    .map_err(|e| e.at_node(&ctx.node.name, &ctx.node.op_type))?;
    Ok(vec![finish(dt, shape, y)?])
}

fn eval_qmul(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let a = ctx.input(inputs, 0)?;
    let b = ctx.input(inputs, 1)?;
    let dt = out_dtype(ctx)?;
    let (zy, lo, hi) = out_params(ctx, dt)?;
    let av = centered(ctx, a, ctx.node.attr_int("a_zero_point", 0)? as i32, "input A")?;
    let bv = centered(ctx, b, ctx.node.attr_int("b_zero_point", 0)? as i32, "input B")?;
    let (m, e) = mults(ctx, 1)?;
    let mut y = Vec::with_capacity(av.len().max(bv.len()));
    let shape = broadcast_pairs(a.shape(), b.shape(), |i, j| {
        y.push(out_val(av[i] * bv[j], m[0], e[0], zy, lo, hi));
    })
    .map_err(|e| e.at_node(&ctx.node.name, &ctx.node.op_type))?;
    Ok(vec![finish(dt, shape, y)?])
}

// ---------------------------------------------------------------------------
// QLut

fn infer_same_shape(ctx: &OpCtx, inputs: &[Option<&InferInput>]) -> Result<Vec<ValueType>> {
    let x = ctx.infer_input(inputs, 0)?;
    check_8bit(ctx, &x.ty, "input X")?;
    Ok(vec![ValueType {
        dtype: out_dtype(ctx)?,
        shape: x.ty.shape.clone(),
    }])
}

fn eval_qlut(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = ctx.input(inputs, 0)?;
    let dt = out_dtype(ctx)?;
    let (qmin, qmax) = qrange(dt)?;
    let table = ctx
        .node
        .attr_ints_opt("table")?
        .ok_or_else(|| ctx.attr_err("table", "required attribute is missing"))?;
    if table.len() != 256 || table.iter().any(|&v| v < qmin as i64 || v > qmax as i64) {
        return Err(ctx.attr_err("table", "must hold 256 values within the output type's range"));
    }
    let idx: Vec<usize> = match x.dtype() {
        DType::U8 => x.as_slice::<u8>()?.iter().map(|&v| v as usize).collect(),
        DType::I8 => x
            .as_slice::<i8>()?
            .iter()
            .map(|&v| (v as i32 + 128) as usize)
            .collect(),
        other => {
            return Err(ctx.err(
                ErrorKind::TypeMismatch,
                format!("input X must be uint8 or int8, got {}", other.onnx_name()),
            ))
        }
    };
    let y: Vec<i32> = idx.into_iter().map(|i| table[i] as i32).collect();
    Ok(vec![finish(dt, x.shape().to_vec(), y)?])
}

// ---------------------------------------------------------------------------
// QGlobalAveragePool

fn infer_gap(ctx: &OpCtx, inputs: &[Option<&InferInput>]) -> Result<Vec<ValueType>> {
    let x = ctx.infer_input(inputs, 0)?;
    check_8bit(ctx, &x.ty, "input X")?;
    let shape = x.ty.shape.as_ref().map(|s| {
        s.iter()
            .enumerate()
            .map(|(i, d)| if i < 2 { d.clone() } else { Dim::Known(1) })
            .collect()
    });
    Ok(vec![ValueType {
        dtype: out_dtype(ctx)?,
        shape,
    }])
}

fn eval_qgap(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = ctx.input(inputs, 0)?;
    if x.rank() < 3 {
        return Err(ctx.err(ErrorKind::ShapeMismatch, "input X must have rank >= 3"));
    }
    let dt = out_dtype(ctx)?;
    let (zy, lo, hi) = out_params(ctx, dt)?;
    let xv = centered(ctx, x, ctx.node.attr_int("x_zero_point", 0)? as i32, "input X")?;
    let sx = ctx.node.attr_float("x_scale", 0.0)? as f64;
    let sy = ctx.node.attr_float("y_scale", 0.0)? as f64;
    let plane: usize = x.shape()[2..].iter().product();
    let (m, e) = quantize_multiplier(sx / (sy * plane.max(1) as f64))
        .map_err(|e| e.at_node(&ctx.node.name, &ctx.node.op_type))?;
    let y: Vec<i32> = xv
        .chunks(plane.max(1))
        .map(|c| out_val(c.iter().fold(0i32, |s, &v| s.wrapping_add(v)), m, e, zy, lo, hi))
        .collect();
    let mut shape = x.shape().to_vec();
    for d in shape.iter_mut().skip(2) {
        *d = 1;
    }
    Ok(vec![finish(dt, shape, y)?])
}
