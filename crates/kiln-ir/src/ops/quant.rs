//! Quantization: `QuantizeLinear`, `DequantizeLinear`, `DynamicQuantizeLinear`
//! and the integer products `ConvInteger`, `MatMulInteger`, `QLinearConv`,
//! `QLinearMatMul`
//! (<https://onnx.ai/onnx/operators/onnx__QuantizeLinear.html> and siblings).
//!
//! Quantized types are int8 and uint8 (int32 for `DequantizeLinear`'s input
//! and the integer products' output); int16, uint16, 4- and 2-bit ints and
//! the float8 types are not kiln dtypes and are rejected (`UnsupportedOp`).
//!
//! Quantization: `y = saturate(round_half_to_even(x / scale) + zero_point)`,
//! the division in f32 (float16 values are widened exactly). From opset 23
//! the division runs in the precision the spec names (the `precision`
//! attribute, else the scale's type), so a float16 scale divides in float16.
//! Dequantization: `y = (x - zero_point) * scale`, in f32, rounded to the
//! output type (from opset 23 a float16 output multiplies in float16).
//!
//! Granularity: per tensor (a scalar or one-element scale), per axis (a 1-D
//! scale along `axis`, opset 13+). Blocked quantization (`block_size` > 0,
//! opset 21+) is rejected with `UnsupportedOp` naming the attribute. Scale and
//! zero point must have the same shape (two one-element shapes count as the
//! same).
//!
//! The integer products accumulate `(x - x_zero_point) * (w - w_zero_point)`
//! in i32 with wrapping (the spec allows 32-bit accumulation to overflow); no
//! float enters the integer part. `QLinearConv` and `QLinearMatMul` then
//! requantize as ONNX Runtime does: `y = saturate(round_half_to_even(acc *
//! m) + y_zero_point)` with the f32 multiplier `m = x_scale * w_scale /
//! y_scale` (per output channel for `QLinearConv`, per row of A and column of
//! B for `QLinearMatMul`). The convolutions reuse `Conv`'s geometry
//! (`conv::plan_conv`: `auto_pad`, `pads`, `strides`, `dilations`,
//! `group`, `kernel_shape`) and its im2col unfolding; padding is zero in the
//! shifted domain, i.e. it reads as the input's zero point.
//!
//! Errors name the node, the op and, for scale/zero-point problems, the
//! input (formal ONNX name, index and value name).

use super::conv::{conv_out_dims, im2col, plan_conv, ConvPlan, COL_LIMIT};
use super::elementwise::broadcast_map;
use super::matmul::{batch_offsets, int_matmul, matmul_out_dims, matmul_shape};
use super::shape_ops::dtype_from_code;
use super::{norm_axis, InferInput, OpCtx, OpDef};
use crate::{f16, DType, ErrorKind, IrError, Result, Tensor, TensorData, ValueType};

/// Ops of this family.
pub(crate) const OPS: &[OpDef] = &[
    def("QuantizeLinear", 10, infer_quantize, eval_quantize),
    def("DequantizeLinear", 10, infer_dequantize, eval_dequantize),
    def(
        "DynamicQuantizeLinear",
        11,
        infer_dynamic_quantize,
        eval_dynamic_quantize,
    ),
    def("QLinearConv", 10, infer_qlinear_conv, eval_qlinear_conv),
    def("QLinearMatMul", 10, infer_qlinear_matmul, eval_qlinear_matmul),
    def("ConvInteger", 10, infer_conv_integer, eval_conv_integer),
    def("MatMulInteger", 10, infer_matmul_integer, eval_matmul_integer),
];

use super::op_def as def;

// ---------------------------------------------------------------------------
// Scalar helpers.

/// Saturation range of a quantized type.
fn qrange(dt: DType) -> (i64, i64) {
    match dt {
        DType::I8 => (-128, 127),
        DType::U8 => (0, 255),
        _ => (i32::MIN as i64, i32::MAX as i64),
    }
}

/// `saturate(round_half_to_even(v) + zp)` into `lo..=hi`. NaN gives `zp`
/// (saturated); infinities saturate.
fn quantize_val(v: f32, zp: i32, lo: i64, hi: i64) -> i32 {
    // `as` saturates (NaN -> 0); the add cannot overflow after that.
    let r = v.round_ties_even() as i64;
    r.saturating_add(zp as i64).clamp(lo, hi) as i32
}

/// `v` rounded to float16 precision (and back to f32).
fn to_f16_precision(v: f32) -> f32 {
    f16::from_f32(v).to_f32()
}

/// Packs saturated values as an int8/uint8/int32 tensor.
fn pack(dt: DType, shape: Vec<usize>, v: Vec<i32>) -> Result<Tensor> {
    match dt {
        DType::I8 => Tensor::from_vec(shape, v.into_iter().map(|x| x as i8).collect::<Vec<_>>()),
        DType::U8 => Tensor::from_vec(shape, v.into_iter().map(|x| x as u8).collect::<Vec<_>>()),
        _ => Tensor::from_vec(shape, v),
    }
}

/// The elements of an int8/uint8/int32 tensor as i32.
fn int_values(t: &Tensor) -> Option<Vec<i32>> {
    Some(match t.data() {
        TensorData::I8(v) => v.iter().map(|&x| x as i32).collect(),
        TensorData::U8(v) => v.iter().map(|&x| x as i32).collect(),
        TensorData::I32(v) => v.clone(),
        _ => return None,
    })
}

/// How an input is named in errors: `w_scale (input #4 'conv.w_scale')`.
fn input_desc(ctx: &OpCtx, i: usize, formal: &str) -> String {
    match ctx.node.inputs.get(i) {
        Some(n) if !n.is_empty() && n != formal => format!("{formal} (input #{i} '{n}')"),
        _ => format!("{formal} (input #{i})"),
    }
}

fn type_err(ctx: &OpCtx, i: usize, formal: &str, dt: DType, want: &str) -> IrError {
    ctx.err(
        ErrorKind::TypeMismatch,
        format!(
            "{} is {dt}; {} at opset {} takes {want}",
            input_desc(ctx, i, formal),
            ctx.node.op_type,
            ctx.opset
        ),
    )
}

fn shape_err(ctx: &OpCtx, i: usize, formal: &str, shape: &[usize], want: &str) -> IrError {
    ctx.err(
        ErrorKind::ShapeMismatch,
        format!(
            "{} has shape {shape:?}; expected {want}",
            input_desc(ctx, i, formal)
        ),
    )
}

/// Checks an 8-bit quantized input (int8 or uint8).
fn check_q8(ctx: &OpCtx, i: usize, formal: &str, dt: DType) -> Result<()> {
    if matches!(dt, DType::I8 | DType::U8) {
        Ok(())
    } else {
        Err(type_err(ctx, i, formal, dt, "int8 or uint8"))
    }
}

/// Checks that zero point `zi` has the type of its tensor (`ti`).
fn check_zp_type(ctx: &OpCtx, zi: usize, zformal: &str, zdt: DType, tformal: &str, tdt: DType) -> Result<()> {
    if zdt == tdt {
        Ok(())
    } else {
        Err(ctx.err(
            ErrorKind::TypeMismatch,
            format!(
                "{} is {zdt}, {tformal} is {tdt}; they must have the same type",
                input_desc(ctx, zi, zformal)
            ),
        ))
    }
}

/// Checks a scale type: float, plus float16 where `f16_ok`.
fn check_scale_type(ctx: &OpCtx, i: usize, formal: &str, dt: DType, f16_ok: bool) -> Result<()> {
    match dt {
        DType::F32 => Ok(()),
        DType::F16 if f16_ok => Ok(()),
        _ => Err(type_err(
            ctx,
            i,
            formal,
            dt,
            if f16_ok { "float or float16" } else { "float" },
        )),
    }
}

/// Checks that a scale and its zero point have the same shape (two
/// one-element shapes count as the same).
fn check_pair_shapes(
    ctx: &OpCtx,
    (si, sformal, ss): (usize, &str, &[usize]),
    (zi, zformal, zs): (usize, &str, &[usize]),
) -> Result<()> {
    let n = |s: &[usize]| s.iter().product::<usize>();
    if ss == zs || (n(ss) == 1 && n(zs) == 1 && ss.len() <= 1 && zs.len() <= 1) {
        Ok(())
    } else {
        Err(ctx.err(
            ErrorKind::ShapeMismatch,
            format!(
                "{} has shape {zs:?}, {} has shape {ss:?}; a scale and its zero point must have the same shape",
                input_desc(ctx, zi, zformal),
                input_desc(ctx, si, sformal)
            ),
        ))
    }
}

/// True for a per-tensor parameter: one element, rank 0 or 1.
fn is_per_tensor(s: &[usize]) -> bool {
    s.len() <= 1 && s.iter().product::<usize>() == 1
}

/// Checks a per-tensor parameter shape.
fn check_per_tensor(ctx: &OpCtx, i: usize, formal: &str, s: &[usize]) -> Result<()> {
    if is_per_tensor(s) {
        Ok(())
    } else {
        Err(shape_err(ctx, i, formal, s, "a scalar (per-tensor)"))
    }
}

// ---------------------------------------------------------------------------
// QuantizeLinear / DequantizeLinear: shared attribute and layout handling.

/// Granularity of a scale / zero-point pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gran {
    /// One scale for the whole tensor.
    Tensor,
    /// One scale per index of an axis: element `i` uses `(i / inner) % len`.
    Axis { inner: usize, len: usize },
}

impl Gran {
    #[inline]
    fn index(self, i: usize) -> usize {
        match self {
            Gran::Tensor => 0,
            Gran::Axis { inner, len } => (i / inner) % len,
        }
    }
}

/// Rejects blocked quantization (`block_size` > 0, opset 21+).
fn check_block_size(ctx: &OpCtx) -> Result<()> {
    if ctx.opset < 21 {
        return Ok(());
    }
    match ctx.node.attr_int("block_size", 0)? {
        0 => Ok(()),
        b if b < 0 => Err(ctx.attr_err("block_size", format!("must be >= 0, got {b}"))),
        b => Err(ctx
            .err(
                ErrorKind::UnsupportedOp,
                format!(
                    "blocked quantization (block_size = {b}) is not supported; kiln supports per-tensor and per-axis scales (block_size = 0)"
                ),
            )
            .with_attr("block_size")),
    }
}

/// The granularity of scale input `si` (shape `ss`) and optional zero point
/// `zi` (shape `zs`) for an input of shape `xs` (`axis` attribute from opset 13).
fn granularity(
    ctx: &OpCtx,
    xs: &[usize],
    (si, sformal, ss): (usize, &str, &[usize]),
    zp: Option<(usize, &str, &[usize])>,
) -> Result<Gran> {
    if let Some(z) = zp {
        check_pair_shapes(ctx, (si, sformal, ss), z)?;
    }
    if is_per_tensor(ss) {
        return Ok(Gran::Tensor);
    }
    if ss.len() != 1 {
        return Err(shape_err(
            ctx,
            si,
            sformal,
            ss,
            "a scalar (per-tensor) or a 1-D tensor (per-axis); blocked quantization is not supported",
        ));
    }
    if ctx.opset < 13 {
        return Err(shape_err(
            ctx,
            si,
            sformal,
            ss,
            &format!(
                "a scalar: per-axis quantization needs opset 13 (model has {})",
                ctx.opset
            ),
        ));
    }
    let axis = norm_axis(ctx, "axis", ctx.node.attr_int("axis", 1)?, xs.len())?;
    let Some(&len) = xs.get(axis) else {
        return Err(shape_err(ctx, si, sformal, ss, "a scalar for a scalar input"));
    };
    if ss[0] != len {
        return Err(shape_err(
            ctx,
            si,
            sformal,
            ss,
            &format!("[{len}] (one per index of axis {axis} of the input, shape {xs:?})"),
        ));
    }
    let inner = xs[axis + 1..].iter().product::<usize>();
    Ok(Gran::Axis { inner, len })
}

/// Static version of [`granularity`]: checks what the known shapes allow.
fn granularity_static(
    ctx: &OpCtx,
    x: &ValueType,
    (si, sformal, s): (usize, &str, &ValueType),
    zp: Option<(usize, &str, &ValueType)>,
) -> Result<()> {
    let (Some(xs), Some(ss)) = (x.known_dims(), s.known_dims()) else {
        return Ok(());
    };
    let zs = match zp {
        Some((zi, zf, z)) => match z.known_dims() {
            Some(zs) => Some((zi, zf, zs)),
            None => return Ok(()),
        },
        None => None,
    };
    granularity(
        ctx,
        &xs,
        (si, sformal, &ss),
        zs.as_ref().map(|(zi, zf, zs)| (*zi, *zf, zs.as_slice())),
    )
    .map(|_| ())
}

/// An ONNX element-type attribute (`output_dtype`, `precision`): `None`
/// when absent or 0.
fn dtype_attr(ctx: &OpCtx, attr: &str) -> Result<Option<DType>> {
    match ctx.node.attr_int(attr, 0)? {
        0 => Ok(None),
        code => dtype_from_code(ctx, attr, code).map(Some),
    }
}

/// Output type of QuantizeLinear: the zero point's type, else `output_dtype`
/// (opset 21+), else uint8.
fn quantize_out_dtype(ctx: &OpCtx, zp: Option<DType>) -> Result<DType> {
    let attr = if ctx.opset >= 21 {
        dtype_attr(ctx, "output_dtype")?
    } else {
        None
    };
    if let Some(a) = attr {
        if !matches!(a, DType::I8 | DType::U8) {
            return Err(ctx.attr_err(
                "output_dtype",
                format!("{a} is not a quantized type (kiln quantizes to int8 and uint8)"),
            ));
        }
    }
    if let Some(z) = zp {
        check_q8(ctx, 2, "y_zero_point", z)?;
        if let Some(a) = attr {
            if a != z {
                return Err(ctx
                    .err(
                        ErrorKind::TypeMismatch,
                        format!(
                            "output_dtype is {a} but {} is {z}",
                            input_desc(ctx, 2, "y_zero_point")
                        ),
                    )
                    .with_attr("output_dtype"));
            }
        }
        return Ok(z);
    }
    Ok(attr.unwrap_or(DType::U8))
}

/// Checks QuantizeLinear's x and y_scale types.
fn check_quantize_types(ctx: &OpCtx, x: DType, s: DType) -> Result<()> {
    let f16_ok = ctx.opset >= 19;
    match x {
        DType::F32 | DType::I32 => {}
        DType::F16 if f16_ok => {}
        _ => {
            return Err(type_err(
                ctx,
                0,
                "x",
                x,
                if f16_ok {
                    "float, float16 or int32"
                } else {
                    "float or int32"
                },
            ))
        }
    }
    check_scale_type(ctx, 1, "y_scale", s, f16_ok)
}

/// True when QuantizeLinear divides in float16: from opset 23, the
/// `precision` attribute or else the scale's type.
fn quantize_in_f16(ctx: &OpCtx, scale: DType) -> Result<bool> {
    if ctx.opset < 23 {
        return Ok(false);
    }
    match dtype_attr(ctx, "precision")? {
        None => Ok(scale == DType::F16),
        Some(DType::F32) => Ok(false),
        Some(DType::F16) => Ok(true),
        Some(d) => Err(ctx.attr_err("precision", format!("{d} is not a float type"))),
    }
}

fn infer_quantize(ctx: &OpCtx, inputs: &[Option<&InferInput>]) -> Result<Vec<ValueType>> {
    let x = ctx.infer_input(inputs, 0)?;
    let s = ctx.infer_input(inputs, 1)?;
    let z = ctx.opt_infer_input(inputs, 2);
    check_quantize_types(ctx, x.ty.dtype, s.ty.dtype)?;
    let out = quantize_out_dtype(ctx, z.map(|z| z.ty.dtype))?;
    check_block_size(ctx)?;
    quantize_in_f16(ctx, s.ty.dtype)?;
    granularity_static(
        ctx,
        &x.ty,
        (1, "y_scale", &s.ty),
        z.map(|z| (2, "y_zero_point", &z.ty)),
    )?;
    Ok(vec![ValueType {
        dtype: out,
        shape: x.ty.shape.clone(),
    }])
}

fn eval_quantize(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = ctx.input(inputs, 0)?;
    let s = ctx.input(inputs, 1)?;
    let z = ctx.opt_input(inputs, 2);
    check_quantize_types(ctx, x.dtype(), s.dtype())?;
    let out = quantize_out_dtype(ctx, z.map(|z| z.dtype()))?;
    check_block_size(ctx)?;
    let in_f16 = quantize_in_f16(ctx, s.dtype())?;
    let gran = granularity(
        ctx,
        x.shape(),
        (1, "y_scale", s.shape()),
        z.map(|z| (2, "y_zero_point", z.shape())),
    )?;
    let (lo, hi) = qrange(out);
    let round = |v: f32| if in_f16 { to_f16_precision(v) } else { v };
    let scales: Vec<f32> = s.to_f32_vec().into_iter().map(round).collect();
    let zps = match z {
        Some(z) => {
            int_values(z).ok_or_else(|| type_err(ctx, 2, "y_zero_point", z.dtype(), "int8 or uint8"))?
        }
        None => vec![0],
    };
    let xv = x.to_f32_vec();
    let y: Vec<i32> = xv
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let p = gran.index(i);
            let (sc, zp) = (scales[p], zps[p.min(zps.len() - 1)]);
            quantize_val(round(round(v) / sc), zp, lo, hi)
        })
        .collect();
    Ok(vec![pack(out, x.shape().to_vec(), y)?])
}

/// Checks DequantizeLinear's types; returns the output type.
fn dequantize_types(ctx: &OpCtx, x: DType, s: DType, z: Option<DType>) -> Result<DType> {
    if !matches!(x, DType::I8 | DType::U8 | DType::I32) {
        return Err(type_err(ctx, 0, "x", x, "int8, uint8 or int32"));
    }
    if let Some(z) = z {
        check_zp_type(ctx, 2, "x_zero_point", z, "x", x)?;
    }
    check_scale_type(ctx, 1, "x_scale", s, ctx.opset >= 19)?;
    if ctx.opset >= 23 {
        match dtype_attr(ctx, "output_dtype")? {
            None => {}
            Some(d @ (DType::F32 | DType::F16)) => return Ok(d),
            Some(d) => return Err(ctx.attr_err("output_dtype", format!("{d} is not a float type"))),
        }
    }
    Ok(s)
}

fn infer_dequantize(ctx: &OpCtx, inputs: &[Option<&InferInput>]) -> Result<Vec<ValueType>> {
    let x = ctx.infer_input(inputs, 0)?;
    let s = ctx.infer_input(inputs, 1)?;
    let z = ctx.opt_infer_input(inputs, 2);
    let out = dequantize_types(ctx, x.ty.dtype, s.ty.dtype, z.map(|z| z.ty.dtype))?;
    check_block_size(ctx)?;
    granularity_static(
        ctx,
        &x.ty,
        (1, "x_scale", &s.ty),
        z.map(|z| (2, "x_zero_point", &z.ty)),
    )?;
    Ok(vec![ValueType {
        dtype: out,
        shape: x.ty.shape.clone(),
    }])
}

fn eval_dequantize(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = ctx.input(inputs, 0)?;
    let s = ctx.input(inputs, 1)?;
    let z = ctx.opt_input(inputs, 2);
    let out = dequantize_types(ctx, x.dtype(), s.dtype(), z.map(|z| z.dtype()))?;
    check_block_size(ctx)?;
    let gran = granularity(
        ctx,
        x.shape(),
        (1, "x_scale", s.shape()),
        z.map(|z| (2, "x_zero_point", z.shape())),
    )?;
    // From opset 23 the output type is the precision of the product.
    let in_f16 = ctx.opset >= 23 && out == DType::F16;
    let round = |v: f32| if in_f16 { to_f16_precision(v) } else { v };
    let scales: Vec<f32> = s.to_f32_vec().into_iter().map(round).collect();
    let zps = match z {
        Some(z) => int_values(z)
            .ok_or_else(|| type_err(ctx, 2, "x_zero_point", z.dtype(), "int8, uint8 or int32"))?,
        None => vec![0],
    };
    let xv = int_values(x).ok_or_else(|| type_err(ctx, 0, "x", x.dtype(), "int8, uint8 or int32"))?;
    let y: Vec<f32> = xv
        .iter()
        .enumerate()
        .map(|(i, &q)| {
            let p = gran.index(i);
            let (sc, zp) = (scales[p], zps[p.min(zps.len() - 1)]);
            round((q as i64 - zp as i64) as f32) * sc
        })
        .collect();
    Ok(vec![super::conv::from_f32(out, x.shape().to_vec(), y)?])
}

// ---------------------------------------------------------------------------
// DynamicQuantizeLinear.

fn infer_dynamic_quantize(ctx: &OpCtx, inputs: &[Option<&InferInput>]) -> Result<Vec<ValueType>> {
    let x = ctx.infer_input(inputs, 0)?;
    if x.ty.dtype != DType::F32 {
        return Err(type_err(ctx, 0, "x", x.ty.dtype, "float"));
    }
    Ok(vec![
        ValueType {
            dtype: DType::U8,
            shape: x.ty.shape.clone(),
        },
        ValueType::known(DType::F32, &[]),
        ValueType::known(DType::U8, &[]),
    ])
}

/// Scale and zero point of DynamicQuantizeLinear for data `v` (uint8):
/// the range `[min(0, min v), max(0, max v)]` over 255 steps, the zero point
/// `saturate(round_half_to_even(0 - min / scale))`. NaNs are ignored. When the
/// range is empty (all zeros) the spec's formula divides 0 by 0; kiln then
/// uses scale 1 and zero point 0, as ONNX Runtime does.
fn dynamic_params(v: &[f32]) -> (f32, i32) {
    let (lo, hi) = v.iter().fold((0f32, 0f32), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    let scale = if hi == lo { 1.0 } else { (hi - lo) / 255.0 };
    let zp = (0.0 - lo / scale).clamp(0.0, 255.0).round_ties_even();
    // NaN (infinite range) -> 0.
    (scale, zp as i32)
}

fn eval_dynamic_quantize(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = ctx.input(inputs, 0)?;
    let TensorData::F32(v) = x.data() else {
        return Err(type_err(ctx, 0, "x", x.dtype(), "float"));
    };
    let (scale, zp) = dynamic_params(v);
    let (lo, hi) = qrange(DType::U8);
    let y: Vec<i32> = v.iter().map(|&a| quantize_val(a / scale, zp, lo, hi)).collect();
    Ok(vec![
        pack(DType::U8, x.shape().to_vec(), y)?,
        Tensor::scalar(scale),
        Tensor::scalar(zp as u8),
    ])
}

// ---------------------------------------------------------------------------
// Integer convolutions: ConvInteger and QLinearConv.

/// `t - zp` as i32, with `zp` per tensor or (when `per_channel` is the number
/// of leading-axis slices) one per slice of the leading axis.
fn shifted(t: &Tensor, zp: &[i32], slices: usize) -> Option<Vec<i32>> {
    let v = int_values(t)?;
    if zp.len() <= 1 {
        let z = zp.first().copied().unwrap_or(0);
        return Some(v.into_iter().map(|a| a.wrapping_sub(z)).collect());
    }
    let per = v.len() / slices.max(1);
    Some(
        v.into_iter()
            .enumerate()
            .map(|(i, a)| a.wrapping_sub(zp[(i / per.max(1)).min(zp.len() - 1)]))
            .collect(),
    )
}

/// Integer convolution of shifted data with wrapping i32 accumulation:
/// im2col (row chunks bounded in memory, as `Conv`) and a direct product.
fn conv_i32(x: &[i32], w: &[i32], bias: Option<&[i32]>, p: &ConvPlan) -> Vec<i32> {
    let g = &p.geom;
    let (cg, mg) = (p.c / p.group, p.m / p.group);
    let (in_plane, out_plane, kvol) = (g.in_plane(), g.out_plane(), g.kvol());
    let kdim = cg * kvol;
    let mut y = vec![0i32; p.n * p.m * out_plane];
    if let Some(b) = bias {
        for (yc, &bv) in y.chunks_exact_mut(out_plane.max(1)).zip(b.iter().cycle()) {
            yc.fill(bv);
        }
    }
    if out_plane == 0 || p.n == 0 || p.m == 0 || kdim == 0 {
        return y;
    }
    let rows = g.out[0] * g.out[1];
    let ow = g.out[2];
    let chunk_rows = (COL_LIMIT / (kdim * ow).max(1)).clamp(1, rows.max(1));
    let mut col = vec![0i32; kdim * chunk_rows * ow];
    for ni in 0..p.n {
        let xn = &x[ni * p.c * in_plane..(ni + 1) * p.c * in_plane];
        let yn = &mut y[ni * p.m * out_plane..(ni + 1) * p.m * out_plane];
        for gi in 0..p.group {
            let xg = &xn[gi * cg * in_plane..(gi + 1) * cg * in_plane];
            let wg = &w[gi * mg * kdim..(gi + 1) * mg * kdim];
            let yg = &mut yn[gi * mg * out_plane..(gi + 1) * mg * out_plane];
            let mut r0 = 0;
            while r0 < rows {
                let r1 = (r0 + chunk_rows).min(rows);
                let ncols = (r1 - r0) * ow;
                let colv = &mut col[..kdim * ncols];
                im2col(xg, cg, g, r0, r1, colv);
                for (wrow, ym) in wg.chunks_exact(kdim).zip(yg.chunks_exact_mut(out_plane)) {
                    let yrow = &mut ym[r0 * ow..r1 * ow];
                    for (&wv, crow) in wrow.iter().zip(colv.chunks_exact(ncols)) {
                        if wv == 0 {
                            continue;
                        }
                        for (yv, &cv) in yrow.iter_mut().zip(crow) {
                            *yv = yv.wrapping_add(wv.wrapping_mul(cv));
                        }
                    }
                }
                r0 = r1;
            }
        }
    }
    y
}

/// Checks a per-output-channel parameter: per tensor or `[m]`.
fn check_per_channel(ctx: &OpCtx, i: usize, formal: &str, s: &[usize], m: Option<usize>) -> Result<()> {
    if is_per_tensor(s) {
        return Ok(());
    }
    match m {
        Some(m) if s == [m] => Ok(()),
        None if s.len() == 1 => Ok(()),
        _ => Err(shape_err(
            ctx,
            i,
            formal,
            s,
            &match m {
                Some(m) => format!("a scalar (per-tensor) or [{m}] (one per output channel)"),
                None => "a scalar (per-tensor) or 1-D (one per output channel)".to_string(),
            },
        )),
    }
}

/// Input layout of the conv-like quant ops.
struct ConvIns {
    x: usize,
    w: usize,
    x_zp: usize,
    w_zp: usize,
}

const CONV_INTEGER: ConvIns = ConvIns {
    x: 0,
    w: 1,
    x_zp: 2,
    w_zp: 3,
};
const QLINEAR_CONV: ConvIns = ConvIns {
    x: 0,
    w: 3,
    x_zp: 2,
    w_zp: 5,
};

/// The shifted X and W of an integer convolution (zero points checked).
fn conv_shifted(
    ctx: &OpCtx,
    inputs: &[Option<&Tensor>],
    l: &ConvIns,
    m: usize,
) -> Result<(Vec<i32>, Vec<i32>)> {
    let x = ctx.input(inputs, l.x)?;
    let w = ctx.input(inputs, l.w)?;
    let zp = |i: usize, formal: &str, of: &Tensor, of_formal: &str| -> Result<Vec<i32>> {
        match ctx.opt_input(inputs, i) {
            None => Ok(vec![0]),
            Some(z) => {
                check_zp_type(ctx, i, formal, z.dtype(), of_formal, of.dtype())?;
                int_values(z).ok_or_else(|| type_err(ctx, i, formal, z.dtype(), "int8 or uint8"))
            }
        }
    };
    if let Some(z) = ctx.opt_input(inputs, l.x_zp) {
        check_per_tensor(ctx, l.x_zp, "x_zero_point", z.shape())?;
    }
    if let Some(z) = ctx.opt_input(inputs, l.w_zp) {
        check_per_channel(ctx, l.w_zp, "w_zero_point", z.shape(), Some(m))?;
    }
    let xz = zp(l.x_zp, "x_zero_point", x, "x")?;
    let wz = zp(l.w_zp, "w_zero_point", w, "w")?;
    let xi = shifted(x, &xz, 1).ok_or_else(|| type_err(ctx, l.x, "x", x.dtype(), "int8 or uint8"))?;
    let wi = shifted(w, &wz, m).ok_or_else(|| type_err(ctx, l.w, "w", w.dtype(), "int8 or uint8"))?;
    Ok((xi, wi))
}

fn infer_conv_integer(ctx: &OpCtx, inputs: &[Option<&InferInput>]) -> Result<Vec<ValueType>> {
    let x = ctx.infer_input(inputs, 0)?;
    let w = ctx.infer_input(inputs, 1)?;
    check_q8(ctx, 0, "x", x.ty.dtype)?;
    check_q8(ctx, 1, "w", w.ty.dtype)?;
    for (i, formal, of) in [(2, "x_zero_point", x), (3, "w_zero_point", w)] {
        if let Some(z) = ctx.opt_infer_input(inputs, i) {
            check_zp_type(
                ctx,
                i,
                formal,
                z.ty.dtype,
                if i == 2 { "x" } else { "w" },
                of.ty.dtype,
            )?;
            if let Some(zs) = z.ty.known_dims() {
                if i == 2 {
                    check_per_tensor(ctx, i, formal, &zs)?;
                } else {
                    let m =
                        w.ty.shape
                            .as_ref()
                            .and_then(|d| d.first())
                            .and_then(|d| d.known());
                    check_per_channel(ctx, i, formal, &zs, m)?;
                }
            }
        }
    }
    Ok(vec![match conv_out_dims(ctx, &x.ty, &w.ty, None)? {
        Some(d) => ValueType::new(DType::I32, d),
        None => ValueType::unknown_rank(DType::I32),
    }])
}

fn eval_conv_integer(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = ctx.input(inputs, 0)?;
    let w = ctx.input(inputs, 1)?;
    check_q8(ctx, 0, "x", x.dtype())?;
    check_q8(ctx, 1, "w", w.dtype())?;
    let plan = plan_conv(ctx, x.shape(), w.shape(), None)?;
    let (xi, wi) = conv_shifted(ctx, inputs, &CONV_INTEGER, plan.m)?;
    let y = conv_i32(&xi, &wi, None, &plan);
    Ok(vec![Tensor::from_vec(plan.out_shape, y)?])
}

/// The static checks of QLinearConv; returns the output type.
fn qlinear_conv_types(ctx: &OpCtx, dt: &[Option<DType>; 9]) -> Result<DType> {
    let get = |i: usize| {
        dt[i].ok_or_else(|| ctx.err(ErrorKind::InvalidModel, format!("required input #{i} is missing")))
    };
    let (x, w, y) = (get(0)?, get(3)?, get(7)?);
    check_q8(ctx, 0, "x", x)?;
    check_q8(ctx, 3, "w", w)?;
    check_q8(ctx, 7, "y_zero_point", y)?;
    check_zp_type(ctx, 2, "x_zero_point", get(2)?, "x", x)?;
    check_zp_type(ctx, 5, "w_zero_point", get(5)?, "w", w)?;
    for (i, f) in [(1, "x_scale"), (4, "w_scale"), (6, "y_scale")] {
        check_scale_type(ctx, i, f, get(i)?, false)?;
    }
    if let Some(b) = dt[8] {
        if b != DType::I32 {
            return Err(type_err(ctx, 8, "B", b, "int32"));
        }
    }
    Ok(y)
}

/// QLinearConv's parameter shapes (those known): per-tensor x/y pairs,
/// per-tensor or per-output-channel w pair.
fn qlinear_conv_shapes(ctx: &OpCtx, s: &[Option<Vec<usize>>; 9], m: Option<usize>) -> Result<()> {
    for (si, sf, zi, zf) in [
        (1, "x_scale", 2, "x_zero_point"),
        (4, "w_scale", 5, "w_zero_point"),
        (6, "y_scale", 7, "y_zero_point"),
    ] {
        for (i, f) in [(si, sf), (zi, zf)] {
            if let Some(sh) = &s[i] {
                if si == 4 {
                    check_per_channel(ctx, i, f, sh, m)?;
                } else {
                    check_per_tensor(ctx, i, f, sh)?;
                }
            }
        }
        if let (Some(ss), Some(zs)) = (&s[si], &s[zi]) {
            check_pair_shapes(ctx, (si, sf, ss), (zi, zf, zs))?;
        }
    }
    Ok(())
}

fn infer_qlinear_conv(ctx: &OpCtx, inputs: &[Option<&InferInput>]) -> Result<Vec<ValueType>> {
    let dts: [Option<DType>; 9] = std::array::from_fn(|i| ctx.opt_infer_input(inputs, i).map(|t| t.ty.dtype));
    let out = qlinear_conv_types(ctx, &dts)?;
    let shapes: [Option<Vec<usize>>; 9] =
        std::array::from_fn(|i| ctx.opt_infer_input(inputs, i).and_then(|t| t.ty.known_dims()));
    let x = ctx.infer_input(inputs, 0)?;
    let w = ctx.infer_input(inputs, 3)?;
    let m =
        w.ty.shape
            .as_ref()
            .and_then(|d| d.first())
            .and_then(|d| d.known());
    qlinear_conv_shapes(ctx, &shapes, m)?;
    let b = ctx.opt_infer_input(inputs, 8).map(|b| &b.ty);
    Ok(vec![match conv_out_dims(ctx, &x.ty, &w.ty, b)? {
        Some(d) => ValueType::new(out, d),
        None => ValueType::unknown_rank(out),
    }])
}

fn eval_qlinear_conv(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let dts: [Option<DType>; 9] = std::array::from_fn(|i| ctx.opt_input(inputs, i).map(|t| t.dtype()));
    let out = qlinear_conv_types(ctx, &dts)?;
    let x = ctx.input(inputs, 0)?;
    let w = ctx.input(inputs, 3)?;
    let b = ctx.opt_input(inputs, 8);
    if let Some(b) = b {
        if b.rank() != 1 {
            return Err(shape_err(ctx, 8, "B", b.shape(), "a 1-D bias"));
        }
    }
    let plan = plan_conv(ctx, x.shape(), w.shape(), b.map(|b| b.len()))?;
    let shapes: [Option<Vec<usize>>; 9] =
        std::array::from_fn(|i| ctx.opt_input(inputs, i).map(|t| t.shape().to_vec()));
    qlinear_conv_shapes(ctx, &shapes, Some(plan.m))?;
    let (xi, wi) = conv_shifted(ctx, inputs, &QLINEAR_CONV, plan.m)?;
    let bias = match b {
        Some(b) => Some(
            b.as_slice::<i32>()
                .map_err(|_| type_err(ctx, 8, "B", b.dtype(), "int32"))?,
        ),
        None => None,
    };
    let acc = conv_i32(&xi, &wi, bias, &plan);
    let scalar = |i: usize| -> Result<f32> { Ok(ctx.input(inputs, i)?.to_f32_vec()[0]) };
    let (xs, ys) = (scalar(1)?, scalar(6)?);
    let ws = ctx.input(inputs, 4)?.to_f32_vec();
    let mult: Vec<f32> = (0..plan.m).map(|mi| xs * ws[mi.min(ws.len() - 1)] / ys).collect();
    let yz = int_values(ctx.input(inputs, 7)?)
        .unwrap_or_default()
        .first()
        .copied()
        .unwrap_or(0);
    let (lo, hi) = qrange(out);
    let out_plane = plan.geom.out_plane().max(1);
    let y: Vec<i32> = acc
        .iter()
        .enumerate()
        .map(|(i, &a)| quantize_val(a as f32 * mult[(i / out_plane) % plan.m], yz, lo, hi))
        .collect();
    Ok(vec![pack(out, plan.out_shape, y)?])
}

// ---------------------------------------------------------------------------
// Integer matrix products: MatMulInteger and QLinearMatMul.

/// Which operand of a matmul a parameter belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// A: per-row parameters (`[M]` or `[..., M, 1]`).
    A,
    /// B: per-column parameters (`[N]` or `[..., 1, N]`).
    B,
}

/// The broadcastable shape of a matmul quantization parameter of shape `s`
/// (per tensor, per row of A or per column of B): `[]` for one element, a
/// 1-D per-row `[M]` becomes `[M, 1]`. Per-row/column parameters need both
/// operands of rank >= 2.
fn matmul_param_shape(
    ctx: &OpCtx,
    (i, formal): (usize, &str),
    s: &[usize],
    side: Side,
    ranks_ok: bool,
) -> Result<Vec<usize>> {
    if is_per_tensor(s) {
        return Ok(vec![]);
    }
    let want = match side {
        Side::A => "a scalar (per-tensor), [M] or [..., M, 1] (per row of A)",
        Side::B => "a scalar (per-tensor), [N] or [..., 1, N] (per column of B)",
    };
    let ok = ranks_ok
        && match (side, s.len()) {
            (_, 0) => false,
            (_, 1) => true,
            (Side::A, r) => s[r - 1] == 1,
            (Side::B, r) => s[r - 2] == 1,
        };
    if !ok {
        return Err(shape_err(ctx, i, formal, s, want));
    }
    Ok(if side == Side::A && s.len() == 1 {
        vec![s[0], 1]
    } else {
        s.to_vec()
    })
}

/// `operand - zp` as i32, the zero point broadcast per tensor / row / column.
fn matmul_shifted(
    ctx: &OpCtx,
    (ti, tformal): (usize, &str),
    t: &Tensor,
    zp: Option<(usize, &str, &Tensor)>,
    side: Side,
    ranks_ok: bool,
) -> Result<Vec<i32>> {
    let v = int_values(t).ok_or_else(|| type_err(ctx, ti, tformal, t.dtype(), "int8 or uint8"))?;
    let Some((zi, zformal, z)) = zp else {
        return Ok(v);
    };
    check_zp_type(ctx, zi, zformal, z.dtype(), tformal, t.dtype())?;
    let zv = int_values(z).ok_or_else(|| type_err(ctx, zi, zformal, z.dtype(), "int8 or uint8"))?;
    let zs = matmul_param_shape(ctx, (zi, zformal), z.shape(), side, ranks_ok)?;
    let (sh, out) = broadcast_map(ctx, &v, t.shape(), &zv, &zs, |a, b| a.wrapping_sub(b)).map_err(|_| {
        shape_err(
            ctx,
            zi,
            zformal,
            z.shape(),
            &format!("a shape that broadcasts to {tformal}'s {:?}", t.shape()),
        )
    })?;
    if sh != t.shape() {
        return Err(shape_err(
            ctx,
            zi,
            zformal,
            z.shape(),
            &format!("a shape that broadcasts to {tformal}'s {:?}", t.shape()),
        ));
    }
    Ok(out)
}

/// The wrapping i32 product of the shifted operands; returns the output shape too.
fn int_product(
    ctx: &OpCtx,
    a: &Tensor,
    b: &Tensor,
    ai: &[i32],
    bi: &[i32],
) -> Result<(Vec<usize>, Vec<i32>)> {
    let sh = matmul_shape(ctx, a.shape(), b.shape())?;
    let a_off = batch_offsets(&sh.batch, &sh.a_batch);
    let b_off = batch_offsets(&sh.batch, &sh.b_batch);
    let out_len: usize = sh.out.iter().product();
    let y = int_matmul(ai, bi, &a_off, &b_off, sh.m, sh.k, sh.n, out_len);
    Ok((sh.out, y))
}

fn infer_matmul_integer(ctx: &OpCtx, inputs: &[Option<&InferInput>]) -> Result<Vec<ValueType>> {
    let a = ctx.infer_input(inputs, 0)?;
    let b = ctx.infer_input(inputs, 1)?;
    check_q8(ctx, 0, "A", a.ty.dtype)?;
    check_q8(ctx, 1, "B", b.ty.dtype)?;
    for (i, formal, of, side) in [(2, "a_zero_point", a, Side::A), (3, "b_zero_point", b, Side::B)] {
        if let Some(z) = ctx.opt_infer_input(inputs, i) {
            check_zp_type(
                ctx,
                i,
                formal,
                z.ty.dtype,
                if i == 2 { "A" } else { "B" },
                of.ty.dtype,
            )?;
            if let (Some(zs), Some(ra), Some(rb)) = (z.ty.known_dims(), a.ty.rank(), b.ty.rank()) {
                matmul_param_shape(ctx, (i, formal), &zs, side, ra >= 2 && rb >= 2)?;
            }
        }
    }
    Ok(vec![match matmul_out_dims(ctx, &a.ty, &b.ty)? {
        Some(d) => ValueType::new(DType::I32, d),
        None => ValueType::unknown_rank(DType::I32),
    }])
}

fn eval_matmul_integer(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let a = ctx.input(inputs, 0)?;
    let b = ctx.input(inputs, 1)?;
    check_q8(ctx, 0, "A", a.dtype())?;
    check_q8(ctx, 1, "B", b.dtype())?;
    let ranks_ok = a.rank() >= 2 && b.rank() >= 2;
    let za = ctx.opt_input(inputs, 2).map(|z| (2, "a_zero_point", z));
    let zb = ctx.opt_input(inputs, 3).map(|z| (3, "b_zero_point", z));
    let ai = matmul_shifted(ctx, (0, "A"), a, za, Side::A, ranks_ok)?;
    let bi = matmul_shifted(ctx, (1, "B"), b, zb, Side::B, ranks_ok)?;
    let (shape, y) = int_product(ctx, a, b, &ai, &bi)?;
    Ok(vec![Tensor::from_vec(shape, y)?])
}

/// The static type checks of QLinearMatMul; returns the output type.
fn qlinear_matmul_types(ctx: &OpCtx, dt: &[Option<DType>; 8]) -> Result<DType> {
    let get = |i: usize| {
        dt[i].ok_or_else(|| ctx.err(ErrorKind::InvalidModel, format!("required input #{i} is missing")))
    };
    let (a, b, y) = (get(0)?, get(3)?, get(7)?);
    check_q8(ctx, 0, "a", a)?;
    check_q8(ctx, 3, "b", b)?;
    check_q8(ctx, 7, "y_zero_point", y)?;
    check_zp_type(ctx, 2, "a_zero_point", get(2)?, "a", a)?;
    check_zp_type(ctx, 5, "b_zero_point", get(5)?, "b", b)?;
    let f16_ok = ctx.opset >= 21;
    for (i, f) in [(1, "a_scale"), (4, "b_scale"), (6, "y_scale")] {
        check_scale_type(ctx, i, f, get(i)?, f16_ok)?;
    }
    Ok(y)
}

/// QLinearMatMul's parameter shapes (those known).
fn qlinear_matmul_shapes(ctx: &OpCtx, s: &[Option<Vec<usize>>; 8], ranks_ok: Option<bool>) -> Result<()> {
    for (si, sf, zi, zf, side) in [
        (1, "a_scale", 2, "a_zero_point", Some(Side::A)),
        (4, "b_scale", 5, "b_zero_point", Some(Side::B)),
        (6, "y_scale", 7, "y_zero_point", None),
    ] {
        for (i, f) in [(si, sf), (zi, zf)] {
            match (&s[i], side, ranks_ok) {
                (Some(sh), None, _) => check_per_tensor(ctx, i, f, sh)?,
                (Some(sh), Some(side), Some(r)) => {
                    matmul_param_shape(ctx, (i, f), sh, side, r)?;
                }
                _ => {}
            }
        }
        if let (Some(ss), Some(zs)) = (&s[si], &s[zi]) {
            check_pair_shapes(ctx, (si, sf, ss), (zi, zf, zs))?;
        }
    }
    Ok(())
}

fn infer_qlinear_matmul(ctx: &OpCtx, inputs: &[Option<&InferInput>]) -> Result<Vec<ValueType>> {
    let dts: [Option<DType>; 8] = std::array::from_fn(|i| ctx.opt_infer_input(inputs, i).map(|t| t.ty.dtype));
    let out = qlinear_matmul_types(ctx, &dts)?;
    let a = ctx.infer_input(inputs, 0)?;
    let b = ctx.infer_input(inputs, 3)?;
    let shapes: [Option<Vec<usize>>; 8] =
        std::array::from_fn(|i| ctx.opt_infer_input(inputs, i).and_then(|t| t.ty.known_dims()));
    let ranks_ok = match (a.ty.rank(), b.ty.rank()) {
        (Some(ra), Some(rb)) => Some(ra >= 2 && rb >= 2),
        _ => None,
    };
    qlinear_matmul_shapes(ctx, &shapes, ranks_ok)?;
    Ok(vec![match matmul_out_dims(ctx, &a.ty, &b.ty)? {
        Some(d) => ValueType::new(out, d),
        None => ValueType::unknown_rank(out),
    }])
}

fn eval_qlinear_matmul(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let dts: [Option<DType>; 8] = std::array::from_fn(|i| ctx.opt_input(inputs, i).map(|t| t.dtype()));
    let out = qlinear_matmul_types(ctx, &dts)?;
    let a = ctx.input(inputs, 0)?;
    let b = ctx.input(inputs, 3)?;
    let ranks_ok = a.rank() >= 2 && b.rank() >= 2;
    let shapes: [Option<Vec<usize>>; 8] =
        std::array::from_fn(|i| ctx.opt_input(inputs, i).map(|t| t.shape().to_vec()));
    qlinear_matmul_shapes(ctx, &shapes, Some(ranks_ok))?;
    let ai = matmul_shifted(
        ctx,
        (0, "a"),
        a,
        Some((2, "a_zero_point", ctx.input(inputs, 2)?)),
        Side::A,
        ranks_ok,
    )?;
    let bi = matmul_shifted(
        ctx,
        (3, "b"),
        b,
        Some((5, "b_zero_point", ctx.input(inputs, 5)?)),
        Side::B,
        ranks_ok,
    )?;
    let (shape, acc) = int_product(ctx, a, b, &ai, &bi)?;
    // Multiplier a_scale * b_scale / y_scale, broadcast per row / column.
    let sa = ctx.input(inputs, 1)?;
    let sb = ctx.input(inputs, 4)?;
    let ys = ctx.input(inputs, 6)?.to_f32_vec()[0];
    let sa_shape = matmul_param_shape(ctx, (1, "a_scale"), sa.shape(), Side::A, ranks_ok)?;
    let sb_shape = matmul_param_shape(ctx, (4, "b_scale"), sb.shape(), Side::B, ranks_ok)?;
    let (msh, mult) = broadcast_map(
        ctx,
        &sa.to_f32_vec(),
        &sa_shape,
        &sb.to_f32_vec(),
        &sb_shape,
        |x, y| x * y / ys,
    )?;
    let yz = int_values(ctx.input(inputs, 7)?)
        .unwrap_or_default()
        .first()
        .copied()
        .unwrap_or(0);
    let (lo, hi) = qrange(out);
    let (ysh, y) = broadcast_map(ctx, &acc, &shape, &mult, &msh, |a, m| {
        quantize_val(a as f32 * m, yz, lo, hi)
    })
    .map_err(|_| {
        shape_err(
            ctx,
            1,
            "a_scale",
            sa.shape(),
            "scales that broadcast to the output",
        )
    })?;
    if ysh != shape {
        return Err(ctx.err(
            ErrorKind::ShapeMismatch,
            format!(
                "a_scale {:?} and b_scale {:?} do not broadcast to the output shape {shape:?}",
                sa.shape(),
                sb.shape()
            ),
        ));
    }
    Ok(vec![pack(out, shape, y)?])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Attribute, Node};

    fn node(op: &str, n_in: usize, attrs: &[(&str, Attribute)]) -> Node {
        let names: Vec<String> = (0..n_in).map(|i| format!("i{i}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let outs: &[&str] = if op == "DynamicQuantizeLinear" {
            &["y", "s", "z"]
        } else {
            &["y"]
        };
        let mut n = Node::new("n", op, &refs, outs);
        for (k, v) in attrs {
            n = n.with_attr(k, v.clone());
        }
        n
    }
    fn run_at(
        op: &str,
        opset: i64,
        attrs: &[(&str, Attribute)],
        inputs: &[Option<&Tensor>],
    ) -> Result<Vec<Tensor>> {
        let n = node(op, inputs.len(), attrs);
        super::super::eval_node(&n, opset, inputs)
    }
    fn run(op: &str, attrs: &[(&str, Attribute)], inputs: &[&Tensor]) -> Result<Tensor> {
        let ins: Vec<Option<&Tensor>> = inputs.iter().map(|t| Some(*t)).collect();
        Ok(run_at(op, 21, attrs, &ins)?.remove(0))
    }
    fn infer_at(
        op: &str,
        opset: i64,
        attrs: &[(&str, Attribute)],
        tys: &[ValueType],
    ) -> Result<Vec<ValueType>> {
        let n = node(op, tys.len(), attrs);
        let ctx = OpCtx { node: &n, opset };
        let ins: Vec<InferInput> = tys
            .iter()
            .map(|t| InferInput {
                ty: t.clone(),
                value: None,
            })
            .collect();
        let refs: Vec<Option<&InferInput>> = ins.iter().map(Some).collect();
        let def = super::super::lookup(op, "").unwrap();
        (def.infer)(&ctx, &refs)
    }
    fn f(shape: &[usize], v: &[f32]) -> Tensor {
        Tensor::from_vec(shape.to_vec(), v.to_vec()).unwrap()
    }
    fn u8t(shape: &[usize], v: &[u8]) -> Tensor {
        Tensor::from_vec(shape.to_vec(), v.to_vec()).unwrap()
    }
    fn i8t(shape: &[usize], v: &[i8]) -> Tensor {
        Tensor::from_vec(shape.to_vec(), v.to_vec()).unwrap()
    }
    fn i32t(shape: &[usize], v: &[i32]) -> Tensor {
        Tensor::from_vec(shape.to_vec(), v.to_vec()).unwrap()
    }
    fn int(v: i64) -> Attribute {
        Attribute::Int(v)
    }
    fn ints(v: &[i64]) -> Attribute {
        Attribute::Ints(v.to_vec())
    }

    #[test]
    fn round_half_to_even() {
        let (lo, hi) = (i32::MIN as i64, i32::MAX as i64);
        for (v, want) in [
            (2.5, 2),
            (3.5, 4),
            (-2.5, -2),
            (-3.5, -4),
            (0.5, 0),
            (1.5, 2),
            (-0.5, 0),
            (2.4999, 2),
            (2.5001, 3),
        ] {
            assert_eq!(quantize_val(v, 0, lo, hi), want, "{v}");
        }
        // Through QuantizeLinear (scale 1, int8 zero point 0).
        let x = f(&[6], &[2.5, 3.5, -2.5, -3.5, 0.5, -0.5]);
        let y = run(
            "QuantizeLinear",
            &[],
            &[&x, &Tensor::scalar(1f32), &Tensor::scalar(0i8)],
        )
        .unwrap();
        assert_eq!(y.as_slice::<i8>().unwrap(), &[2, 4, -2, -4, 0, 0]);
        // Ties are decided on x / scale: 5 / 2 = 2.5 -> 2, 7 / 2 = 3.5 -> 4.
        let x = f(&[2], &[5.0, 7.0]);
        let y = run(
            "QuantizeLinear",
            &[],
            &[&x, &Tensor::scalar(2f32), &Tensor::scalar(0u8)],
        )
        .unwrap();
        assert_eq!(y.as_slice::<u8>().unwrap(), &[2, 4]);
    }

    #[test]
    fn quantize_saturates() {
        // uint8: [0, 255]; int8: [-128, 127]; the zero point is added before saturation.
        let x = f(&[6], &[-1000.0, -1.0, 0.0, 254.0, 300.0, f32::INFINITY]);
        let y = run(
            "QuantizeLinear",
            &[],
            &[&x, &Tensor::scalar(1f32), &Tensor::scalar(1u8)],
        )
        .unwrap();
        assert_eq!(y.as_slice::<u8>().unwrap(), &[0, 0, 1, 255, 255, 255]);
        let y = run(
            "QuantizeLinear",
            &[],
            &[&x, &Tensor::scalar(1f32), &Tensor::scalar(-1i8)],
        )
        .unwrap();
        assert_eq!(y.as_slice::<i8>().unwrap(), &[-128, -2, -1, 127, 127, 127]);
        let x = f(&[2], &[f32::NEG_INFINITY, f32::NAN]);
        let y = run(
            "QuantizeLinear",
            &[],
            &[&x, &Tensor::scalar(1f32), &Tensor::scalar(-1i8)],
        )
        .unwrap();
        assert_eq!(y.as_slice::<i8>().unwrap(), &[-128, -1]);
        // Scale 0: +-inf saturate.
        let x = f(&[2], &[1.0, -1.0]);
        let y = run(
            "QuantizeLinear",
            &[],
            &[&x, &Tensor::scalar(0f32), &Tensor::scalar(0i8)],
        )
        .unwrap();
        assert_eq!(y.as_slice::<i8>().unwrap(), &[127, -128]);
    }

    #[test]
    fn quantize_backend_example_and_default_uint8() {
        // onnx/backend/test/case/node/quantizelinear.py
        let x = f(&[6], &[0.0, 2.0, 3.0, 1000.0, -254.0, -1000.0]);
        let y = run(
            "QuantizeLinear",
            &[],
            &[&x, &Tensor::scalar(2f32), &Tensor::scalar(128u8)],
        )
        .unwrap();
        assert_eq!(y.as_slice::<u8>().unwrap(), &[128, 129, 130, 255, 1, 0]);
        // No zero point: uint8 with zero point 0.
        let y = run("QuantizeLinear", &[], &[&x, &Tensor::scalar(2f32)]).unwrap();
        assert_eq!(y.as_slice::<u8>().unwrap(), &[0, 1, 2, 255, 0, 0]);
        // output_dtype (opset 21) without a zero point.
        let y = run(
            "QuantizeLinear",
            &[("output_dtype", int(3))],
            &[&x, &Tensor::scalar(2f32)],
        )
        .unwrap();
        assert_eq!(y.as_slice::<i8>().unwrap(), &[0, 1, 2, 127, -127, -128]);
        // int32 input.
        let xi = i32t(&[3], &[5, -5, 1000]);
        let y = run(
            "QuantizeLinear",
            &[],
            &[&xi, &Tensor::scalar(2f32), &Tensor::scalar(0i8)],
        )
        .unwrap();
        assert_eq!(y.as_slice::<i8>().unwrap(), &[2, -2, 127]);
    }

    #[test]
    fn quantize_per_axis() {
        // onnx backend test_quantizelinear_axis.
        let x = f(
            &[1, 3, 3, 2],
            &[
                -162.0, 10.0, -100.0, 232.0, -20.0, -50.0, -76.0, 0.0, 0.0, 252.0, 32.0, -44.0, 245.0,
                -485.0, -960.0, -270.0, -375.0, -470.0,
            ],
        );
        let s = f(&[3], &[2.0, 4.0, 5.0]);
        let z = u8t(&[3], &[84, 24, 196]);
        let y = run("QuantizeLinear", &[], &[&x, &s, &z]).unwrap();
        assert_eq!(
            y.as_slice::<u8>().unwrap(),
            &[3, 89, 34, 200, 74, 59, 5, 24, 24, 87, 32, 13, 245, 99, 4, 142, 121, 102]
        );
        // Negative axis, int8, last axis.
        let x = f(&[2, 2], &[1.0, 1.0, -4.0, -4.0]);
        let s = f(&[2], &[1.0, 2.0]);
        let z = i8t(&[2], &[0, -1]);
        let y = run("QuantizeLinear", &[("axis", int(-1))], &[&x, &s, &z]).unwrap();
        assert_eq!(y.as_slice::<i8>().unwrap(), &[1, -1, -4, -3]);
    }

    #[test]
    fn dequantize() {
        let x = u8t(&[4], &[0, 3, 128, 255]);
        let y = run(
            "DequantizeLinear",
            &[],
            &[&x, &Tensor::scalar(2f32), &Tensor::scalar(128u8)],
        )
        .unwrap();
        assert_eq!(y.as_slice::<f32>().unwrap(), &[-256.0, -250.0, 0.0, 254.0]);
        // int8, per axis.
        let x = i8t(&[2, 2], &[-128, 127, -128, 127]);
        let s = f(&[2], &[1.0, 0.5]);
        let z = i8t(&[2], &[0, -1]);
        let y = run("DequantizeLinear", &[("axis", int(0))], &[&x, &s, &z]).unwrap();
        assert_eq!(y.as_slice::<f32>().unwrap(), &[-128.0, 127.0, -63.5, 64.0]);
        // int32 (no zero point).
        let x = i32t(&[2], &[-7, 1 << 20]);
        let y = run("DequantizeLinear", &[], &[&x, &Tensor::scalar(0.5f32)]).unwrap();
        assert_eq!(y.as_slice::<f32>().unwrap(), &[-3.5, 524288.0]);
        // float16 scale -> float16 output.
        let s = Tensor::scalar(f16::from_f32(0.5));
        let y = run("DequantizeLinear", &[], &[&u8t(&[1], &[3]), &s]).unwrap();
        assert_eq!(y.dtype(), DType::F16);
        assert_eq!(y.to_f32_vec(), vec![1.5]);
    }

    #[test]
    fn quant_errors_name_input() {
        let x = f(&[1, 3, 2], &[0.0; 6]);
        // Per-axis scale of the wrong length.
        let e = run(
            "QuantizeLinear",
            &[],
            &[&x, &f(&[2], &[1.0, 1.0]), &u8t(&[2], &[0, 0])],
        )
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::ShapeMismatch);
        assert_eq!(
            (e.node.as_deref(), e.op.as_deref()),
            (Some("n"), Some("QuantizeLinear"))
        );
        assert!(e.message.contains("y_scale (input #1 'i1')"), "{e}");
        // Scale and zero point of different shapes.
        let e = run(
            "QuantizeLinear",
            &[],
            &[&x, &f(&[3], &[1.0; 3]), &Tensor::scalar(0u8)],
        )
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::ShapeMismatch);
        assert!(e.message.contains("y_zero_point"), "{e}");
        // Blocked quantization.
        let e = run(
            "QuantizeLinear",
            &[("block_size", int(2))],
            &[&x, &f(&[1, 2, 2], &[1.0; 4])],
        )
        .unwrap_err();
        assert_eq!(
            (e.kind, e.attr.as_deref()),
            (ErrorKind::UnsupportedOp, Some("block_size"))
        );
        assert!(e.message.contains("blocked"), "{e}");
        let e = run(
            "DequantizeLinear",
            &[("block_size", int(2))],
            &[&u8t(&[4], &[0; 4]), &f(&[2], &[1.0; 2])],
        )
        .unwrap_err();
        assert_eq!(
            (e.kind, e.attr.as_deref()),
            (ErrorKind::UnsupportedOp, Some("block_size"))
        );
        // Rank-2 scale without block_size.
        let e = run("QuantizeLinear", &[], &[&x, &f(&[3, 1], &[1.0; 3])]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::ShapeMismatch);
        // float8 / int16 output types.
        let e = run(
            "QuantizeLinear",
            &[("output_dtype", int(17))],
            &[&x, &Tensor::scalar(1f32)],
        )
        .unwrap_err();
        assert_eq!(
            (e.kind, e.attr.as_deref()),
            (ErrorKind::UnsupportedOp, Some("output_dtype"))
        );
        let e = run(
            "QuantizeLinear",
            &[("output_dtype", int(5))],
            &[&x, &Tensor::scalar(1f32)],
        )
        .unwrap_err();
        assert_eq!(
            (e.kind, e.attr.as_deref()),
            (ErrorKind::UnsupportedOp, Some("output_dtype"))
        );
        let e = run(
            "QuantizeLinear",
            &[("output_dtype", int(1))],
            &[&x, &Tensor::scalar(1f32)],
        )
        .unwrap_err();
        assert_eq!(
            (e.kind, e.attr.as_deref()),
            (ErrorKind::InvalidAttribute, Some("output_dtype"))
        );
        // output_dtype disagreeing with the zero point.
        let e = run(
            "QuantizeLinear",
            &[("output_dtype", int(3))],
            &[&x, &Tensor::scalar(1f32), &Tensor::scalar(0u8)],
        )
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::TypeMismatch);
        // Zero point type.
        let e = run(
            "DequantizeLinear",
            &[],
            &[&u8t(&[1], &[0]), &Tensor::scalar(1f32), &Tensor::scalar(0i8)],
        )
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::TypeMismatch);
        assert!(e.message.contains("x_zero_point"), "{e}");
        // Per-axis before opset 13.
        let s = f(&[3], &[1.0; 3]);
        let e = run_at("QuantizeLinear", 10, &[], &[Some(&x), Some(&s)]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::ShapeMismatch);
        // float16 x before opset 19.
        let xh = Tensor::from_vec(vec![1], vec![f16::from_f32(1.0)]).unwrap();
        let e = run_at(
            "QuantizeLinear",
            13,
            &[],
            &[Some(&xh), Some(&Tensor::scalar(1f32))],
        )
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::TypeMismatch);
        // Axis out of range.
        let e = run("QuantizeLinear", &[("axis", int(3))], &[&x, &s]).unwrap_err();
        assert_eq!(
            (e.kind, e.attr.as_deref()),
            (ErrorKind::InvalidAttribute, Some("axis"))
        );
    }

    #[test]
    fn quantize_precision_float16() {
        // 1.3808594 / 0.010742188 = 128.545... in f32, 128.5 in f16.
        let x = Tensor::from_vec(vec![1], vec![f16::from_f32(1.381)]).unwrap();
        let s = Tensor::scalar(f16::from_f32(0.0107421875));
        let z = Tensor::scalar(0u8);
        let at = |opset, attrs: &[(&str, Attribute)]| {
            run_at("QuantizeLinear", opset, attrs, &[Some(&x), Some(&s), Some(&z)]).unwrap()[0]
                .as_slice::<u8>()
                .unwrap()[0]
        };
        assert_eq!(at(21, &[]), 129); // f32 division (before opset 23)
        assert_eq!(at(23, &[]), 128); // the scale's precision: float16
        assert_eq!(at(23, &[("precision", int(1))]), 129);
    }

    #[test]
    fn dynamic_quantize() {
        // onnx/backend/test/case/node/dynamicquantizelinear.py
        let x = f(&[6], &[0.0, 2.0, -3.0, -2.5, 1.34, 0.5]);
        let y = run_at("DynamicQuantizeLinear", 11, &[], &[Some(&x)]).unwrap();
        assert_eq!(y[0].as_slice::<u8>().unwrap(), &[153, 255, 0, 26, 221, 179]);
        assert!((y[1].as_slice::<f32>().unwrap()[0] - 0.019_607_844).abs() < 1e-9);
        assert_eq!(y[2].as_slice::<u8>().unwrap(), &[153]);
        assert_eq!(y[2].shape(), &[] as &[usize]);
        let x = f(&[6], &[-1.0, -2.1, -1.3, -2.5, -3.34, -4.0]);
        let y = run_at("DynamicQuantizeLinear", 11, &[], &[Some(&x)]).unwrap();
        assert_eq!(y[0].as_slice::<u8>().unwrap(), &[191, 121, 172, 96, 42, 0]);
        assert_eq!(y[2].as_slice::<u8>().unwrap(), &[255]);
        // All zeros: scale 1, zero point 0.
        let y = run_at("DynamicQuantizeLinear", 11, &[], &[Some(&f(&[2], &[0.0, 0.0]))]).unwrap();
        assert_eq!(y[1].as_slice::<f32>().unwrap(), &[1.0]);
        assert_eq!(y[0].as_slice::<u8>().unwrap(), &[0, 0]);
        let t = infer_at(
            "DynamicQuantizeLinear",
            11,
            &[],
            &[ValueType::known(DType::F32, &[3, 4])],
        )
        .unwrap();
        assert_eq!(
            t,
            vec![
                ValueType::known(DType::U8, &[3, 4]),
                ValueType::known(DType::F32, &[]),
                ValueType::known(DType::U8, &[])
            ]
        );
    }

    #[test]
    fn matmul_integer() {
        // onnx backend test_matmulinteger.
        let a = u8t(&[4, 3], &[11, 7, 3, 10, 6, 2, 9, 5, 1, 8, 4, 0]);
        let b = u8t(&[3, 2], &[1, 4, 2, 5, 3, 6]);
        let y = run(
            "MatMulInteger",
            &[],
            &[&a, &b, &u8t(&[1], &[12]), &u8t(&[1], &[0])],
        )
        .unwrap();
        assert_eq!(
            y.as_slice::<i32>().unwrap(),
            &[-38, -83, -44, -98, -50, -113, -56, -128]
        );
        // Per-row zero point of A, per-column of B; int8 x uint8.
        let a = i8t(&[2, 2], &[1, 2, 3, 4]);
        let b = u8t(&[2, 2], &[1, 2, 3, 4]);
        let y = run(
            "MatMulInteger",
            &[],
            &[&a, &b, &i8t(&[2], &[1, 3]), &u8t(&[2], &[1, 2])],
        )
        .unwrap();
        // A - zp = [[0, 1], [0, 1]]; B - zp = [[0, 0], [2, 2]].
        assert_eq!(y.as_slice::<i32>().unwrap(), &[2, 2, 2, 2]);
        // Batched with broadcasting, no zero points: extreme values do not overflow a product.
        let a = i8t(&[2, 1, 2], &[-128, -128, 127, 127]);
        let b = u8t(&[2, 1], &[255, 255]);
        let y = run("MatMulInteger", &[], &[&a, &b]).unwrap();
        assert_eq!(y.shape(), &[2, 1, 1]);
        assert_eq!(y.as_slice::<i32>().unwrap(), &[-65280, 64770]);
        // A per-row zero point of the wrong length names the input.
        let e = run("MatMulInteger", &[], &[&a, &b, &i8t(&[3], &[0; 3])]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::ShapeMismatch);
        assert!(e.message.contains("a_zero_point"), "{e}");
        let t = infer_at(
            "MatMulInteger",
            10,
            &[],
            &[
                ValueType::known(DType::U8, &[5, 4, 3]),
                ValueType::known(DType::I8, &[3, 2]),
            ],
        )
        .unwrap();
        assert_eq!(t, vec![ValueType::known(DType::I32, &[5, 4, 2])]);
    }

    #[test]
    fn qlinear_matmul() {
        // onnx backend test_qlinearmatmul_2D_uint8_float32.
        let a = u8t(&[2, 4], &[208, 236, 0, 238, 3, 214, 255, 29]);
        let b = u8t(&[4, 3], &[152, 51, 244, 60, 26, 255, 0, 127, 246, 127, 254, 247]);
        let y = run(
            "QLinearMatMul",
            &[],
            &[
                &a,
                &f(&[1], &[0.0066]),
                &u8t(&[1], &[113]),
                &b,
                &f(&[1], &[0.00705]),
                &u8t(&[1], &[114]),
                &f(&[1], &[0.0107]),
                &u8t(&[1], &[118]),
            ],
        )
        .unwrap();
        assert_eq!(y.as_slice::<u8>().unwrap(), &[168, 115, 255, 1, 66, 151]);
        // Per-column scale of b: each column requantized with its own multiplier.
        let a = i8t(&[1, 2], &[10, 20]);
        let b = i8t(&[2, 2], &[1, 1, 1, 1]);
        let ins = [
            &a,
            &Tensor::scalar(1f32),
            &Tensor::scalar(0i8),
            &b,
            &f(&[2], &[0.5, 0.25]),
            &i8t(&[2], &[0, 0]),
            &Tensor::scalar(1f32),
            &Tensor::scalar(-3i8),
        ];
        let y = run("QLinearMatMul", &[], &ins).unwrap();
        // acc = 30: 30 * 0.5 = 15, 30 * 0.25 = 7.5 -> 8 (ties to even); + zp -3.
        assert_eq!(y.as_slice::<i8>().unwrap(), &[12, 5]);
        // float16 scales need opset 21.
        let h = Tensor::scalar(f16::from_f32(1.0));
        let ins16 = [
            Some(&a),
            Some(&h),
            Some(ins[2]),
            Some(&b),
            Some(&h),
            Some(ins[2]),
            Some(&h),
            Some(ins[2]),
        ];
        assert_eq!(
            run_at("QLinearMatMul", 21, &[], &ins16).unwrap()[0]
                .as_slice::<i8>()
                .unwrap(),
            &[30, 30]
        );
        let e = run_at("QLinearMatMul", 10, &[], &ins16).unwrap_err();
        assert_eq!(e.kind, ErrorKind::TypeMismatch);
        assert!(e.message.contains("a_scale"), "{e}");
        // y_scale must be per tensor.
        let mut bad = ins;
        let ys2 = f(&[2], &[1.0, 1.0]);
        bad[6] = &ys2;
        let e = run("QLinearMatMul", &[], &bad).unwrap_err();
        assert_eq!(e.kind, ErrorKind::ShapeMismatch);
        assert!(e.message.contains("y_scale (input #6"), "{e}");
    }

    /// Direct-definition integer convolution (2-D, NCHW) for checking `conv_i32`.
    #[allow(clippy::too_many_arguments)]
    fn naive_conv(
        x: &[i32],
        [n, c, h, wd]: [usize; 4],
        w: &[i32],
        [m, cg, kh, kw]: [usize; 4],
        group: usize,
        st: [usize; 2],
        dl: [usize; 2],
        p: [usize; 4],
    ) -> Vec<i32> {
        let oh = (h + p[0] + p[2] - ((kh - 1) * dl[0] + 1)) / st[0] + 1;
        let ow = (wd + p[1] + p[3] - ((kw - 1) * dl[1] + 1)) / st[1] + 1;
        let mg = m / group;
        let mut y = vec![0i32; n * m * oh * ow];
        for ni in 0..n {
            for mi in 0..m {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut acc = 0i32;
                        for ci in 0..cg {
                            let cin = (mi / mg) * cg + ci;
                            for ky in 0..kh {
                                for kx in 0..kw {
                                    let iy = (oy * st[0] + ky * dl[0]) as isize - p[0] as isize;
                                    let ix = (ox * st[1] + kx * dl[1]) as isize - p[1] as isize;
                                    if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                        continue;
                                    }
                                    acc += x[((ni * c + cin) * h + iy as usize) * wd + ix as usize]
                                        * w[((mi * cg + ci) * kh + ky) * kw + kx];
                                }
                            }
                        }
                        y[((ni * m + mi) * oh + oy) * ow + ox] = acc;
                    }
                }
            }
        }
        y
    }

    #[test]
    fn conv_integer_backend_examples() {
        // onnx backend test_convinteger_with_padding / _without_padding.
        let x = u8t(&[1, 1, 3, 3], &[2, 3, 4, 5, 6, 7, 8, 9, 10]);
        let w = u8t(&[1, 1, 2, 2], &[1, 1, 1, 1]);
        let y = run("ConvInteger", &[], &[&x, &w, &Tensor::scalar(1u8)]).unwrap();
        assert_eq!(
            (y.shape(), y.as_slice::<i32>().unwrap()),
            (&[1, 1, 2, 2][..], &[12, 16, 24, 28][..])
        );
        let y = run(
            "ConvInteger",
            &[("pads", ints(&[1, 1, 1, 1]))],
            &[&x, &w, &Tensor::scalar(1u8)],
        )
        .unwrap();
        assert_eq!(
            y.as_slice::<i32>().unwrap(),
            &[1, 3, 5, 3, 5, 12, 16, 9, 11, 24, 28, 15, 7, 15, 17, 9]
        );
    }

    #[test]
    fn conv_integer_per_channel_group_strides() {
        // Depthwise (group = C = 3), stride 2, pads, dilation, per-channel
        // w zero points; checked against the direct definition.
        let (n, c, h, wd) = (2, 3, 7, 6);
        let xv: Vec<u8> = (0..n * c * h * wd).map(|i| ((i * 37 + 11) % 256) as u8).collect();
        let wv: Vec<i8> = (0..c * 3 * 3).map(|i| ((i * 53 + 7) % 256) as u8 as i8).collect();
        let (xz, wz) = (100u8, [3i8, -7, 0]);
        let x = u8t(&[n, c, h, wd], &xv);
        let w = i8t(&[c, 1, 3, 3], &wv);
        let attrs = [
            ("group", int(3)),
            ("strides", ints(&[2, 1])),
            ("pads", ints(&[1, 0, 2, 1])),
            ("dilations", ints(&[1, 2])),
        ];
        let y = run(
            "ConvInteger",
            &attrs,
            &[&x, &w, &Tensor::scalar(xz), &i8t(&[3], &wz)],
        )
        .unwrap();
        // The naive version pads with zeros of the shifted data.
        let xs: Vec<i32> = xv.iter().map(|&v| v as i32 - xz as i32).collect();
        let ws: Vec<i32> = wv
            .iter()
            .enumerate()
            .map(|(i, &v)| v as i32 - wz[i / 9] as i32)
            .collect();
        let want = naive_conv(
            &xs,
            [n, c, h, wd],
            &ws,
            [c, 1, 3, 3],
            3,
            [2, 1],
            [1, 2],
            [1, 0, 2, 1],
        );
        assert_eq!(y.shape(), &[2, 3, 4, 3]);
        assert_eq!(y.as_slice::<i32>().unwrap(), want.as_slice());
        // group 2 with 2 input channels per group, no zero points.
        let x = u8t(
            &[1, 4, 4, 4],
            &(0..64).map(|i| (i * 5 % 256) as u8).collect::<Vec<_>>(),
        );
        let wv: Vec<u8> = (0..4 * 2 * 2 * 2).map(|i| (i * 29 % 256) as u8).collect();
        let w = u8t(&[4, 2, 2, 2], &wv);
        let y = run("ConvInteger", &[("group", int(2))], &[&x, &w]).unwrap();
        let xs: Vec<i32> = x.as_slice::<u8>().unwrap().iter().map(|&v| v as i32).collect();
        let ws: Vec<i32> = wv.iter().map(|&v| v as i32).collect();
        let want = naive_conv(&xs, [1, 4, 4, 4], &ws, [4, 2, 2, 2], 2, [1, 1], [1, 1], [0; 4]);
        assert_eq!(y.as_slice::<i32>().unwrap(), want.as_slice());
    }

    #[test]
    fn qlinear_conv() {
        // onnx backend test_qlinearconv (1x1 kernel, uint8).
        let xv: [u8; 49] = [
            255, 174, 162, 25, 203, 168, 58, 15, 59, 237, 95, 129, 0, 64, 56, 242, 153, 221, 168, 12, 166,
            232, 178, 186, 195, 237, 162, 237, 188, 39, 124, 77, 80, 102, 43, 127, 230, 21, 83, 41, 40, 134,
            255, 154, 92, 141, 42, 148, 247,
        ];
        let want: [u8; 49] = [
            0, 81, 93, 230, 52, 87, 197, 240, 196, 18, 160, 126, 255, 191, 199, 13, 102, 34, 87, 243, 89, 23,
            77, 69, 60, 18, 93, 18, 67, 216, 131, 178, 175, 153, 212, 128, 25, 234, 172, 214, 215, 121, 0,
            101, 163, 114, 213, 107, 8,
        ];
        let x = u8t(&[1, 1, 7, 7], &xv);
        let y = run(
            "QLinearConv",
            &[],
            &[
                &x,
                &Tensor::scalar(0.003_692_047_f32),
                &Tensor::scalar(132u8),
                &u8t(&[1, 1, 1, 1], &[0]),
                &f(&[1], &[0.001_727_945_8]),
                &u8t(&[1], &[255]),
                &Tensor::scalar(0.001_626_812_6_f32),
                &Tensor::scalar(123u8),
            ],
        )
        .unwrap();
        assert_eq!(y.as_slice::<u8>().unwrap(), &want);
    }

    #[test]
    fn qlinear_conv_per_channel_bias() {
        // 1-D, two output channels with their own scale and zero point, bias.
        let x = i8t(&[1, 1, 3], &[10, 20, 30]);
        let w = i8t(&[2, 1, 2], &[1, 2, 3, 4]);
        let ins = [
            &x,
            &Tensor::scalar(1f32),
            &Tensor::scalar(10i8),
            &w,
            &f(&[2], &[1.0, 0.5]),
            &i8t(&[2], &[0, 1]),
            &Tensor::scalar(2f32),
            &Tensor::scalar(-1i8),
            &i32t(&[2], &[5, -1]),
        ];
        let y = run("QLinearConv", &[("pads", ints(&[1, 0]))], &ins).unwrap();
        // x - 10 = [0, 10, 20]; padded [0, 0, 10, 20]. ch0 w [1, 2]: [0, 20, 50] + 5;
        // ch1 w - 1 = [2, 3]: [0, 30, 80] - 1.
        // ch0: [5, 25, 55] * 0.5 = [2.5, 12.5, 27.5] -> [2, 12, 28] - 1;
        // ch1: [-1, 29, 79] * 0.25 = [-0.25, 7.25, 19.75] -> [0, 7, 20] - 1.
        assert_eq!(y.shape(), &[1, 2, 3]);
        assert_eq!(y.as_slice::<i8>().unwrap(), &[1, 11, 27, -1, 6, 19]);
        // Errors name the input: w_scale of the wrong length, B of the wrong type.
        let mut bad = ins;
        let ws3 = f(&[3], &[1.0; 3]);
        bad[4] = &ws3;
        let e = run("QLinearConv", &[], &bad).unwrap_err();
        assert_eq!(e.kind, ErrorKind::ShapeMismatch);
        assert!(e.message.contains("w_scale (input #4"), "{e}");
        let mut bad = ins;
        let bf = f(&[2], &[0.0; 2]);
        bad[8] = &bf;
        let e = run("QLinearConv", &[], &bad).unwrap_err();
        assert_eq!(e.kind, ErrorKind::TypeMismatch);
        let mut bad = ins;
        let xz = Tensor::scalar(0u8);
        bad[2] = &xz;
        let e = run("QLinearConv", &[], &bad).unwrap_err();
        assert_eq!(e.kind, ErrorKind::TypeMismatch);
        assert!(e.message.contains("x_zero_point"), "{e}");
        // Inference: output type is y_zero_point's, shape from the conv geometry.
        let tys: Vec<ValueType> = ins
            .iter()
            .map(|t| ValueType::known(t.dtype(), t.shape()))
            .collect();
        let t = infer_at("QLinearConv", 10, &[("pads", ints(&[1, 0]))], &tys).unwrap();
        assert_eq!(t, vec![ValueType::known(DType::I8, &[1, 2, 3])]);
    }

    #[test]
    fn infer_quantize_types() {
        let x = ValueType::known(DType::F32, &[2, 3]);
        let s = ValueType::known(DType::F32, &[]);
        let t = infer_at("QuantizeLinear", 13, &[], &[x.clone(), s.clone()]).unwrap();
        assert_eq!(t, vec![ValueType::known(DType::U8, &[2, 3])]);
        let z = ValueType::known(DType::I8, &[]);
        let t = infer_at("QuantizeLinear", 13, &[], &[x.clone(), s.clone(), z]).unwrap();
        assert_eq!(t, vec![ValueType::known(DType::I8, &[2, 3])]);
        let q = ValueType::known(DType::I8, &[2, 3]);
        let t = infer_at("DequantizeLinear", 13, &[], &[q.clone(), s]).unwrap();
        assert_eq!(t, vec![ValueType::known(DType::F32, &[2, 3])]);
        let sh = ValueType::known(DType::F16, &[3]);
        let t = infer_at("DequantizeLinear", 19, &[], &[q.clone(), sh.clone()]).unwrap();
        assert_eq!(t, vec![ValueType::known(DType::F16, &[2, 3])]);
        let t = infer_at(
            "DequantizeLinear",
            23,
            &[("output_dtype", int(1))],
            &[q.clone(), sh.clone()],
        )
        .unwrap();
        assert_eq!(t, vec![ValueType::known(DType::F32, &[2, 3])]);
        // Static per-axis length check.
        let e = infer_at("DequantizeLinear", 19, &[("axis", int(0))], &[q, sh]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::ShapeMismatch);
        let t = infer_at(
            "ConvInteger",
            10,
            &[],
            &[
                ValueType::known(DType::U8, &[1, 2, 5, 5]),
                ValueType::known(DType::I8, &[4, 2, 3, 3]),
            ],
        )
        .unwrap();
        assert_eq!(t, vec![ValueType::known(DType::I32, &[1, 4, 3, 3])]);
    }
}
