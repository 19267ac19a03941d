//! Quantization math shared by the quantizer, the integer kernels and the
//! lowering of QDQ graphs: quantization parameters ([`QParams`], kiln's
//! quantized type), the choice of scale and zero point from a range, rounding,
//! and requantization by a fixed-point multiplier and shift.
//!
//! # Quantized values
//!
//! kiln represents a quantized tensor as an integer tensor (`uint8`/`int8`
//! data, `int32` for biases) plus its [`QParams`]: a real value is
//! `r = scale * (q - zero_point)` (ONNX `DequantizeLinear`), and
//! `q = saturate(round_half_to_even(r / scale) + zero_point)` (ONNX
//! `QuantizeLinear`, <https://onnx.ai/onnx/operators/onnx__QuantizeLinear.html>).
//! In graphs, the parameters travel as the scale and zero-point inputs of
//! `QuantizeLinear`/`DequantizeLinear` (QDQ format) or as attributes of
//! kiln's integer ops.
//!
//! # Requantization
//!
//! An integer op accumulates in `i32` and rescales to the output's scale by
//! the real factor `M = s_in * s_w / s_out`. Following gemmlowp and TFLite
//! (Jacob et al., "Quantization and Training of Neural Networks for Efficient
//! Integer-Arithmetic-Only Inference", CVPR 2018, section 2.2), `M` is stored
//! as a 31-bit fixed-point multiplier `m` in `[2^30, 2^31)` and an exponent
//! `e`, `M ≈ m * 2^(e - 31)`; see [`quantize_multiplier`]. Unlike gemmlowp,
//! whose final shift rounds half away from zero, [`requantize`] rounds the
//! exact 64-bit product half to even, as ONNX `QLinearConv` specifies for its
//! requantization, so that only the multiplier's 31-bit precision separates it
//! from the real-valued formula.

use crate::{ir_err, DType, Result, Tensor};

/// Integer range `[qmin, qmax]` of a quantized element type.
///
/// Errors (`UnsupportedOp`) for types that are not 8-bit or 32-bit integers.
pub fn qrange(dtype: DType) -> Result<(i32, i32)> {
    match dtype {
        DType::U8 => Ok((0, 255)),
        DType::I8 => Ok((-128, 127)),
        DType::I32 => Ok((i32::MIN, i32::MAX)),
        other => Err(ir_err!(
            UnsupportedOp,
            "{} is not a quantized element type (uint8, int8, int32)",
            other.onnx_name()
        )),
    }
}

/// Round half to even, the rounding of ONNX `QuantizeLinear` (IEEE 754
/// `roundTiesToEven`).
#[inline]
pub fn round_half_even(x: f32) -> f32 {
    x.round_ties_even()
}

/// Quantization parameters of a tensor: kiln's quantized type.
///
/// Per-tensor when `scale.len() == 1`; per-axis (per-channel) otherwise, with
/// one scale and zero point per index of dimension `axis`.
#[derive(Debug, Clone, PartialEq)]
pub struct QParams {
    /// Element type of the integer data: `U8` or `I8` (`I32` for biases).
    pub dtype: DType,
    /// Scales (real units per integer step), all finite and > 0.
    pub scale: Vec<f32>,
    /// Zero points, within the dtype's range.
    pub zero_point: Vec<i32>,
    /// Axis of per-axis parameters; `None` for per-tensor.
    pub axis: Option<usize>,
}

impl QParams {
    /// Per-tensor parameters.
    pub fn per_tensor(dtype: DType, scale: f32, zero_point: i32) -> QParams {
        QParams {
            dtype,
            scale: vec![scale],
            zero_point: vec![zero_point],
            axis: None,
        }
    }
    /// True when one scale and zero point cover the whole tensor.
    pub fn is_per_tensor(&self) -> bool {
        self.axis.is_none()
    }
}

/// Scale and zero point for an asymmetric (affine) quantization of the real
/// range `[min, max]` to `dtype` (`U8` or `I8`).
///
/// The range is first extended to contain 0, so that 0 is exactly
/// representable (zero padding must stay exact; Jacob et al. 2018, §2.1).
/// `scale = (max - min) / (qmax - qmin)`,
/// `zero_point = saturate(round_half_even(qmin - min / scale))`, as ONNX
/// Runtime's `compute_scale_zp`. An empty range (`min == max == 0`) gives
/// scale 1 and the zero point of 0. Non-finite bounds are an error.
pub fn choose_qparams_asymmetric(min: f32, max: f32, dtype: DType) -> Result<(f32, i32)> {
    if !min.is_finite() || !max.is_finite() || min > max {
        return Err(ir_err!(InvalidModel, "cannot quantize the range [{min}, {max}]"));
    }
    let (qmin, qmax) = qrange(dtype)?;
    let lo = min.min(0.0);
    let hi = max.max(0.0);
    if hi == lo {
        return Ok((1.0, 0));
    }
    let scale = ((hi as f64 - lo as f64) / (qmax as f64 - qmin as f64)) as f32;
    let zp = round_half_even(qmin as f32 - lo / scale).clamp(qmin as f32, qmax as f32) as i32;
    Ok((scale, zp))
}

/// Scale for a symmetric quantization of `[-absmax, absmax]` to `int8` with
/// the restricted range `[-127, 127]` and zero point 0 (the weight scheme of
/// TFLite and ONNX Runtime; the restricted range keeps `-128` unused, so a
/// product of two int8 values never overflows `i16` pair sums in 8-bit dot
/// products). An all-zero tensor gets scale 1.
pub fn choose_scale_symmetric(absmax: f32) -> Result<f32> {
    if !absmax.is_finite() || absmax < 0.0 {
        return Err(ir_err!(
            InvalidModel,
            "cannot quantize the symmetric range ±{absmax}"
        ));
    }
    Ok(if absmax == 0.0 { 1.0 } else { absmax / 127.0 })
}

/// Quantizes one real value: `saturate(round_half_even(x / scale) + zp)` into
/// `[qmin, qmax]` (ONNX `QuantizeLinear`). NaN maps to the zero point.
#[inline]
pub fn quantize_value(x: f32, scale: f32, zero_point: i32, qmin: i32, qmax: i32) -> i32 {
    let v = round_half_even(x / scale) + zero_point as f32;
    if v.is_nan() {
        return zero_point;
    }
    v.clamp(qmin as f32, qmax as f32) as i32
}

/// Quantizes an f32 tensor with `qp` (per-tensor or per-axis) into a tensor
/// of `qp.dtype`. Errors if the tensor is not f32, the axis is out of range or
/// the number of scales does not match the axis dimension.
pub fn quantize_tensor(x: &Tensor, qp: &QParams) -> Result<Tensor> {
    let xs = x.as_slice::<f32>()?;
    let (qmin, qmax) = qrange(qp.dtype)?;
    let (outer, ch, inner) = axis_split(x.shape(), qp)?;
    let mut q = vec![0i32; xs.len()];
    for o in 0..outer {
        for c in 0..ch {
            let (s, z) = if qp.axis.is_some() {
                (qp.scale[c], qp.zero_point[c])
            } else {
                (qp.scale[0], qp.zero_point[0])
            };
            let base = (o * ch + c) * inner;
            for i in base..base + inner {
                q[i] = quantize_value(xs[i], s, z, qmin, qmax);
            }
        }
    }
    let shape = x.shape().to_vec();
    match qp.dtype {
        DType::U8 => Tensor::from_vec(shape, q.into_iter().map(|v| v as u8).collect::<Vec<_>>()),
        DType::I8 => Tensor::from_vec(shape, q.into_iter().map(|v| v as i8).collect::<Vec<_>>()),
        _ => Tensor::from_vec(shape, q),
    }
}

/// Dequantizes an integer tensor (`U8`, `I8` or `I32`) with `qp` to f32:
/// `(q - zero_point) * scale` (ONNX `DequantizeLinear`).
pub fn dequantize_tensor(q: &Tensor, qp: &QParams) -> Result<Tensor> {
    let (outer, ch, inner) = axis_split(q.shape(), qp)?;
    let vals: Vec<i32> = match q.dtype() {
        DType::U8 => q.as_slice::<u8>()?.iter().map(|&v| v as i32).collect(),
        DType::I8 => q.as_slice::<i8>()?.iter().map(|&v| v as i32).collect(),
        DType::I32 => q.as_slice::<i32>()?.to_vec(),
        other => {
            return Err(ir_err!(
                UnsupportedOp,
                "cannot dequantize {} data",
                other.onnx_name()
            ))
        }
    };
    let mut out = vec![0f32; vals.len()];
    for o in 0..outer {
        for c in 0..ch {
            let (s, z) = if qp.axis.is_some() {
                (qp.scale[c], qp.zero_point[c])
            } else {
                (qp.scale[0], qp.zero_point[0])
            };
            let base = (o * ch + c) * inner;
            for i in base..base + inner {
                out[i] = (vals[i] - z) as f32 * s;
            }
        }
    }
    Tensor::from_vec(q.shape().to_vec(), out)
}

/// `(outer, channels, inner)` split of `shape` around `qp.axis` (per-tensor:
/// `(1, 1, numel)`).
fn axis_split(shape: &[usize], qp: &QParams) -> Result<(usize, usize, usize)> {
    if qp.scale.len() != qp.zero_point.len() || qp.scale.is_empty() {
        return Err(ir_err!(
            InvalidModel,
            "{} scales but {} zero points",
            qp.scale.len(),
            qp.zero_point.len()
        ));
    }
    match qp.axis {
        None => Ok((1, 1, shape.iter().product())),
        Some(a) => {
            if a >= shape.len() || shape[a] != qp.scale.len() {
                return Err(ir_err!(
                    ShapeMismatch,
                    "per-axis parameters: {} scales for axis {a} of shape {shape:?}",
                    qp.scale.len()
                ));
            }
            Ok((
                shape[..a].iter().product(),
                shape[a],
                shape[a + 1..].iter().product(),
            ))
        }
    }
}

/// A real multiplier as a fixed-point multiplier and exponent: returns
/// `(m, e)` with `m` in `[2^30, 2^31)` and `real ≈ m * 2^(e - 31)`
/// (gemmlowp's `QuantizeMultiplier`). Exact to 31 significant bits for
/// `real >= 2^-32`; below that the exponent stays at its minimum (-31) and `m`
/// shrinks under `2^30`, keeping fewer bits (0 for `real < 2^-62`).
///
/// Errors for a multiplier that is not finite and positive, or `>= 2^30`.
pub fn quantize_multiplier(real: f64) -> Result<(i32, i32)> {
    if !(real.is_finite() && real > 0.0) {
        return Err(ir_err!(
            InvalidModel,
            "requantization multiplier {real} is not finite and positive"
        ));
    }
    // real = frac * 2^exp with frac in [0.5, 1)
    let mut exp = real.log2().floor() as i32 + 1;
    let mut frac = real / 2f64.powi(exp);
    if frac >= 1.0 {
        frac /= 2.0;
        exp += 1;
    } else if frac < 0.5 {
        frac *= 2.0;
        exp -= 1;
    }
    let mut m = (frac * (1u64 << 31) as f64).round() as i64;
    if m == 1i64 << 31 {
        m /= 2;
        exp += 1;
    }
    if exp < -31 {
        // real < 2^-31 (e.g. the per-channel weight scale of a channel that
        // is almost all zeros): keep exponent -31 and a smaller multiplier,
        // losing precision bits (all of them below 2^-62, which rounds every
        // i32 accumulator to 0 anyway).
        return Ok(((m >> (-31 - exp).min(62)) as i32, -31));
    }
    if exp > 30 {
        return Err(ir_err!(
            InvalidModel,
            "requantization multiplier {real:e} is out of the supported range (0, 2^30)"
        ));
    }
    Ok((m as i32, exp))
}

/// Applies a fixed-point multiplier: `round_half_even(acc * m * 2^(e - 31))`
/// computed exactly in 64 bits, saturated to `i32`. `(m, e)` come from
/// [`quantize_multiplier`].
#[inline]
pub fn requantize(acc: i32, m: i32, e: i32) -> i32 {
    let prod = acc as i64 * m as i64;
    let r = 31 - e; // right shift, 1..=62 for e in -31..=30
    let q = prod >> r;
    let rem = prod - (q << r);
    let half = 1i64 << (r - 1);
    let q = if rem > half || (rem == half && (q & 1) == 1) {
        q + 1
    } else {
        q
    };
    q.clamp(i32::MIN as i64, i32::MAX as i64) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_half_even_ties() {
        assert_eq!(round_half_even(2.5), 2.0);
        assert_eq!(round_half_even(3.5), 4.0);
        assert_eq!(round_half_even(-2.5), -2.0);
        assert_eq!(round_half_even(-0.5), -0.0);
        assert_eq!(round_half_even(1.4999), 1.0);
    }

    #[test]
    fn asymmetric_params_contain_zero_and_range() {
        let (s, z) = choose_qparams_asymmetric(-1.0, 3.0, DType::U8).unwrap();
        assert!((s - 4.0 / 255.0).abs() < 1e-9);
        assert_eq!(z, 64); // round(0 + 1/s) = round(63.75)
        let (s, z) = choose_qparams_asymmetric(0.5, 6.0, DType::U8).unwrap();
        assert!((s - 6.0 / 255.0).abs() < 1e-9);
        assert_eq!(z, 0);
        let (_, z) = choose_qparams_asymmetric(-6.0, -0.5, DType::I8).unwrap();
        assert_eq!(z, 127);
        assert!(choose_qparams_asymmetric(f32::NAN, 1.0, DType::U8).is_err());
    }

    #[test]
    fn quantize_dequantize_per_axis() {
        let x = Tensor::from_vec(vec![2, 3], vec![0.5f32, -1.0, 2.0, 10.0, -10.0, 0.25]).unwrap();
        let qp = QParams {
            dtype: DType::I8,
            scale: vec![2.0 / 127.0, 10.0 / 127.0],
            zero_point: vec![0, 0],
            axis: Some(0),
        };
        let q = quantize_tensor(&x, &qp).unwrap();
        assert_eq!(q.as_slice::<i8>().unwrap(), &[32, -64, 127, 127, -127, 3]);
        let d = dequantize_tensor(&q, &qp).unwrap();
        for (a, b) in d.to_f32_vec().iter().zip(x.to_f32_vec()) {
            assert!((a - b).abs() <= 0.5 * 10.0 / 127.0 + 1e-6);
        }
        // saturation
        let big = Tensor::from_vec(vec![1], vec![1e9f32]).unwrap();
        let q = quantize_tensor(&big, &QParams::per_tensor(DType::U8, 0.1, 3)).unwrap();
        assert_eq!(q.as_slice::<u8>().unwrap(), &[255]);
    }

    #[test]
    fn multiplier_roundtrip_and_rounding() {
        for &real in &[0.000123f64, 0.0071, 0.25, 0.5, 0.999999, 1.0, 1.7, 37.5] {
            let (m, e) = quantize_multiplier(real).unwrap();
            assert!((1 << 30..=i32::MAX).contains(&m), "{real}: m={m}");
            let back = m as f64 * 2f64.powi(e - 31);
            assert!(((back - real) / real).abs() < 1e-9, "{real}: {back}");
        }
        // exact halves round to even
        let (m, e) = quantize_multiplier(0.5).unwrap();
        assert_eq!(requantize(5, m, e), 2); // 2.5 -> 2
        assert_eq!(requantize(7, m, e), 4); // 3.5 -> 4
        assert_eq!(requantize(-5, m, e), -2); // -2.5 -> -2
        assert_eq!(requantize(-7, m, e), -4);
        assert_eq!(requantize(6, m, e), 3);
        // matches the real product on random values within rounding
        let mut s = 12345u64;
        for _ in 0..10_000 {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let acc = (s >> 33) as i32 - (1 << 30);
            let real = ((s >> 11) % 100_000) as f64 / 1e6 + 1e-6;
            let (m, e) = quantize_multiplier(real).unwrap();
            let want = (acc as f64 * real).round_ties_even();
            let got = requantize(acc, m, e) as f64;
            assert!(
                (got - want).abs() <= 1.0,
                "acc {acc} real {real}: {got} vs {want}"
            );
        }
        assert_eq!(quantize_multiplier(1e-11).unwrap(), (46116860, -31));
        assert_eq!(quantize_multiplier(1e-30).unwrap(), (0, -31));
        assert_eq!(requantize(i32::MAX, 0, -31), 0);
        let (m, e) = quantize_multiplier(3e-10).unwrap();
        assert_eq!(e, -31);
        assert!(((m as f64 * 2f64.powi(-62)) / 3e-10 - 1.0).abs() < 1e-8);
        assert!(quantize_multiplier(0.0).is_err());
        assert!(quantize_multiplier(f64::NAN).is_err());
    }
}
