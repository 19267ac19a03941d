//! `Resize` (opset 10+) and `Upsample` (opsets 7-9).
//!
//! Semantics follow the ONNX spec and its reference implementation
//! (`onnx/reference/ops/op_resize.py`), with coordinates computed in f32 as
//! ONNX Runtime does:
//! - `Upsample` and `Resize-10`: inputs `X, scales` (`Upsample-7/8`: `scales`
//!   attribute), modes `nearest`/`linear`, `asymmetric` coordinates, and the
//!   nearest pixel is `floor(x / scale)` when upsampling, `ceil` when
//!   downsampling (ONNX Runtime's behaviour for these versions).
//! - `Resize-11+`: inputs `X, roi, scales, sizes` (empty names or empty
//!   tensors for the omitted ones), every `coordinate_transformation_mode`
//!   (`tf_half_pixel_for_nn` only at 11-12, `half_pixel_symmetric` from 19),
//!   every `nearest_mode`, `cubic` with `cubic_coeff_a` and `exclude_outside`,
//!   `extrapolation_value` for `tf_crop_and_resize`; from 18 `antialias`,
//!   `axes` and `keep_aspect_ratio_policy`.
//!
//! N-d interpolation is separable: one 1-D pass per resized axis, each output
//! row a weighted sum of contiguous input rows. Output sizes with `scales` are
//! `floor(in * scale)`; more than 2^31 output elements is `LimitExceeded`.
//! Integer inputs are interpolated in f64 and truncated toward zero.

use super::elementwise::{bad_type, float_tensor};
use super::{norm_axis, InferInput, OpCtx, OpDef};
use crate::{numel, DType, Dim, ErrorKind, Result, Tensor, TensorData, ValueType};

/// Ops of this family.
pub(crate) const OPS: &[OpDef] = &[
    OpDef {
        op_type: "Resize",
        domain: "",
        since: 10,
        infer: infer_resize,
        eval: eval_resize,
    },
    OpDef {
        op_type: "Upsample",
        domain: "",
        since: 7,
        infer: infer_resize,
        eval: eval_resize,
    },
];

/// Largest output (in elements) Resize produces.
pub const MAX_OUTPUT_ELEMS: usize = 1 << 31;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Nearest,
    Linear,
    Cubic,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Coord {
    HalfPixel,
    HalfPixelSymmetric,
    PytorchHalfPixel,
    AlignCorners,
    Asymmetric,
    TfHalfPixelForNn,
    TfCropAndResize,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Nearest {
    RoundPreferFloor,
    RoundPreferCeil,
    Floor,
    Ceil,
    /// Upsample / Resize-10: floor when upsampling, ceil when downsampling.
    Simple,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Policy {
    Stretch,
    NotLarger,
    NotSmaller,
}

#[derive(Clone, Debug)]
struct Params {
    mode: Mode,
    coord: Coord,
    nearest: Nearest,
    cubic_a: f32,
    exclude_outside: bool,
    extrapolation: f32,
    antialias: bool,
    axes: Option<Vec<i64>>,
    policy: Policy,
}

fn is_upsample(ctx: &OpCtx) -> bool {
    ctx.node.op_type == "Upsample"
}

fn params(ctx: &OpCtx) -> Result<Params> {
    let node = ctx.node;
    let legacy = is_upsample(ctx) || ctx.opset < 11;
    if is_upsample(ctx) && ctx.opset >= 10 {
        return Err(ctx.err(
            ErrorKind::UnsupportedOp,
            format!("Upsample is deprecated at opset {} (use Resize)", ctx.opset),
        ));
    }
    let mode = match node.attr_string("mode", "nearest")?.as_str() {
        "nearest" => Mode::Nearest,
        "linear" => Mode::Linear,
        "bilinear" if is_upsample(ctx) => Mode::Linear,
        "cubic" if !legacy => Mode::Cubic,
        other => return Err(ctx.attr_err("mode", format!("unsupported mode '{other}'"))),
    };
    let mut p = Params {
        mode,
        coord: Coord::Asymmetric,
        nearest: Nearest::Simple,
        cubic_a: -0.75,
        exclude_outside: false,
        extrapolation: 0.0,
        antialias: false,
        axes: None,
        policy: Policy::Stretch,
    };
    if legacy {
        return Ok(p);
    }
    let ctm = node.attr_string("coordinate_transformation_mode", "half_pixel")?;
    p.coord = match ctm.as_str() {
        "half_pixel" => Coord::HalfPixel,
        "half_pixel_symmetric" if ctx.opset >= 19 => Coord::HalfPixelSymmetric,
        "pytorch_half_pixel" => Coord::PytorchHalfPixel,
        "align_corners" => Coord::AlignCorners,
        "asymmetric" => Coord::Asymmetric,
        "tf_half_pixel_for_nn" if ctx.opset < 13 => Coord::TfHalfPixelForNn,
        "tf_crop_and_resize" => Coord::TfCropAndResize,
        other => {
            return Err(ctx.attr_err(
                "coordinate_transformation_mode",
                format!("unsupported mode '{other}' at opset {}", ctx.opset),
            ))
        }
    };
    p.nearest = match node.attr_string("nearest_mode", "round_prefer_floor")?.as_str() {
        "round_prefer_floor" => Nearest::RoundPreferFloor,
        "round_prefer_ceil" => Nearest::RoundPreferCeil,
        "floor" => Nearest::Floor,
        "ceil" => Nearest::Ceil,
        other => return Err(ctx.attr_err("nearest_mode", format!("unsupported mode '{other}'"))),
    };
    p.cubic_a = node.attr_float("cubic_coeff_a", -0.75)?;
    p.exclude_outside = node.attr_int("exclude_outside", 0)? != 0;
    p.extrapolation = node.attr_float("extrapolation_value", 0.0)?;
    if ctx.opset >= 18 {
        p.antialias = node.attr_int("antialias", 0)? != 0;
        p.axes = node.attr_ints_opt("axes")?;
        p.policy = match node.attr_string("keep_aspect_ratio_policy", "stretch")?.as_str() {
            "stretch" => Policy::Stretch,
            "not_larger" => Policy::NotLarger,
            "not_smaller" => Policy::NotSmaller,
            other => {
                return Err(ctx.attr_err(
                    "keep_aspect_ratio_policy",
                    format!("unsupported policy '{other}'"),
                ))
            }
        };
    }
    Ok(p)
}

/// The resized axes, normalized.
fn resolve_axes(ctx: &OpCtx, p: &Params, rank: usize) -> Result<Vec<usize>> {
    let Some(axes) = &p.axes else {
        return Ok((0..rank).collect());
    };
    let mut out = Vec::with_capacity(axes.len());
    for &a in axes {
        let n = norm_axis(ctx, "axes", a, rank)?;
        if out.contains(&n) {
            return Err(ctx.attr_err("axes", format!("axis {a} is repeated")));
        }
        out.push(n);
    }
    Ok(out)
}

/// `floor(n * s)` computed in f32 (as ONNX Runtime does), checked.
fn scaled_len(ctx: &OpCtx, n: usize, s: f32) -> Result<usize> {
    if !(s.is_finite() && s > 0.0) {
        return Err(ctx.err(
            ErrorKind::InvalidInput,
            format!("scale {s} is not a positive finite number"),
        ));
    }
    let v = (n as f32 * s).floor();
    if v >= MAX_OUTPUT_ELEMS as f32 {
        return Err(ctx.err(
            ErrorKind::LimitExceeded,
            format!("output dim {n} * {s} exceeds {MAX_OUTPUT_ELEMS}"),
        ));
    }
    Ok(v as usize)
}

/// Output shape, per-dim scales and full roi (`starts..., ends...`).
struct Target {
    out: Vec<usize>,
    scales: Vec<f32>,
    roi: Vec<f32>,
}

fn target(
    ctx: &OpCtx,
    p: &Params,
    shape: &[usize],
    roi: Option<&[f32]>,
    scales: Option<&[f32]>,
    sizes: Option<&[i64]>,
) -> Result<Target> {
    let r = shape.len();
    let axes = resolve_axes(ctx, p, r)?;
    let na = axes.len();
    let mut full_roi: Vec<f32> = vec![0.0; r];
    full_roi.extend(std::iter::repeat_n(1.0, r));
    if p.coord == Coord::TfCropAndResize {
        let roi = roi
            .filter(|v| !v.is_empty())
            .ok_or_else(|| ctx.err(ErrorKind::InvalidModel, "tf_crop_and_resize needs a roi input"))?;
        if roi.len() != 2 * na {
            return Err(ctx.err(
                ErrorKind::ShapeMismatch,
                format!("roi has {} values, expected {}", roi.len(), 2 * na),
            ));
        }
        for (i, &a) in axes.iter().enumerate() {
            full_roi[a] = roi[i];
            full_roi[r + a] = roi[na + i];
        }
    }
    let scales = scales.filter(|s| !s.is_empty());
    let sizes = sizes.filter(|s| !s.is_empty());
    let mut out = shape.to_vec();
    let mut full_scales = vec![1.0f32; r];
    match (scales, sizes) {
        (Some(_), Some(_)) => {
            return Err(ctx.err(
                ErrorKind::InvalidModel,
                "only one of scales and sizes may be given",
            ))
        }
        (Some(s), None) => {
            if s.len() != na {
                return Err(ctx.err(
                    ErrorKind::ShapeMismatch,
                    format!("scales has {} values, expected {na}", s.len()),
                ));
            }
            for (i, &a) in axes.iter().enumerate() {
                full_scales[a] = s[i];
                out[a] = scaled_len(ctx, shape[a], s[i])?;
            }
        }
        (None, Some(s)) => {
            if s.len() != na {
                return Err(ctx.err(
                    ErrorKind::ShapeMismatch,
                    format!("sizes has {} values, expected {na}", s.len()),
                ));
            }
            for (i, &a) in axes.iter().enumerate() {
                if s[i] < 0 || s[i] as u64 >= MAX_OUTPUT_ELEMS as u64 {
                    return Err(ctx.err(ErrorKind::InvalidInput, format!("invalid size {}", s[i])));
                }
                if shape[a] == 0 && s[i] > 0 {
                    return Err(ctx.err(ErrorKind::InvalidInput, format!("cannot resize empty axis {a}")));
                }
                out[a] = s[i] as usize;
                full_scales[a] = if shape[a] == 0 {
                    1.0
                } else {
                    s[i] as f32 / shape[a] as f32
                };
            }
            if p.policy != Policy::Stretch && na > 0 {
                let it = axes.iter().map(|&a| full_scales[a]);
                let s = if p.policy == Policy::NotLarger {
                    it.fold(f32::INFINITY, f32::min)
                } else {
                    it.fold(0.0, f32::max)
                };
                for &a in &axes {
                    full_scales[a] = s;
                    out[a] = (s * shape[a] as f32 + 0.5).floor() as usize;
                }
            }
        }
        (None, None) => return Err(ctx.err(ErrorKind::InvalidModel, "neither scales nor sizes is given")),
    }
    let n = numel(&out)?;
    if n > MAX_OUTPUT_ELEMS {
        return Err(ctx.err(
            ErrorKind::LimitExceeded,
            format!("output shape {out:?} has more than {MAX_OUTPUT_ELEMS} elements"),
        ));
    }
    Ok(Target {
        out,
        scales: full_scales,
        roi: full_roi,
    })
}

/// Interpolation taps of one axis: output `y` is `sum w * in[i]` over
/// `taps[start[y]..start[y + 1]]`, or the extrapolation value when `extrap[y]`.
struct AxisPlan {
    start: Vec<usize>,
    taps: Vec<(usize, f32)>,
    extrap: Vec<bool>,
}

impl AxisPlan {
    fn out_len(&self) -> usize {
        self.extrap.len()
    }
    fn is_identity(&self, in_len: usize) -> bool {
        self.out_len() == in_len
            && !self.extrap.iter().any(|&e| e)
            && (0..in_len).all(|y| self.taps[self.start[y]..self.start[y + 1]] == [(y, 1.0)])
    }
}

fn cubic_kernel(x: f32, a: f32) -> f32 {
    let x = x.abs();
    if x <= 1.0 {
        ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
    } else {
        0.0
    }
}

/// Source coordinate of output index `x` along an axis.
fn source_coord(p: &Params, x: usize, in_len: usize, out_len: usize, scale: f32, roi: (f32, f32)) -> f32 {
    let xf = x as f32;
    let (inl, outl) = (in_len as f32, out_len as f32);
    match p.coord {
        Coord::HalfPixel => (xf + 0.5) / scale - 0.5,
        Coord::HalfPixelSymmetric => {
            let adjustment = outl / (scale * inl);
            let center = inl / 2.0;
            let offset = center * (1.0 - adjustment);
            offset + (xf + 0.5) / scale - 0.5
        }
        Coord::PytorchHalfPixel => {
            if out_len > 1 {
                (xf + 0.5) / scale - 0.5
            } else {
                0.0
            }
        }
        Coord::AlignCorners => {
            if out_len > 1 {
                xf * (inl - 1.0) / (outl - 1.0)
            } else {
                0.0
            }
        }
        Coord::Asymmetric => xf / scale,
        Coord::TfHalfPixelForNn => (xf + 0.5) / scale,
        Coord::TfCropAndResize => {
            let (s, e) = roi;
            if out_len > 1 {
                s * (inl - 1.0) + xf * (e - s) * (inl - 1.0) / (outl - 1.0)
            } else {
                0.5 * (s + e) * (inl - 1.0)
            }
        }
    }
}

fn plan_axis(
    ctx: &OpCtx,
    p: &Params,
    in_len: usize,
    out_len: usize,
    scale: f32,
    roi: (f32, f32),
) -> Result<AxisPlan> {
    let mut plan = AxisPlan {
        start: Vec::with_capacity(out_len + 1),
        taps: Vec::new(),
        extrap: Vec::with_capacity(out_len),
    };
    plan.start.push(0);
    if out_len == 0 {
        return Ok(plan);
    }
    if in_len == 0 {
        return Err(ctx.err(
            ErrorKind::InvalidInput,
            "cannot resize an empty axis to a non-empty one",
        ));
    }
    let last = (in_len - 1) as i64;
    let clamp = |i: i64| i.clamp(0, last) as usize;
    let mut coeffs: Vec<(i64, f32)> = Vec::new();
    for x in 0..out_len {
        let xo = source_coord(p, x, in_len, out_len, scale, roi);
        if p.coord == Coord::TfCropAndResize && (xo < 0.0 || xo > (in_len - 1) as f32) {
            plan.extrap.push(true);
            plan.start.push(plan.taps.len());
            continue;
        }
        if !xo.is_finite() {
            return Err(ctx.err(ErrorKind::InvalidInput, "non-finite source coordinate"));
        }
        plan.extrap.push(false);
        let fl = xo.floor();
        coeffs.clear();
        if p.mode == Mode::Nearest {
            let r = xo - fl;
            let i = match p.nearest {
                Nearest::RoundPreferFloor => {
                    if r <= 0.5 {
                        fl
                    } else {
                        fl + 1.0
                    }
                }
                Nearest::RoundPreferCeil => {
                    if r < 0.5 {
                        fl
                    } else {
                        fl + 1.0
                    }
                }
                Nearest::Floor => fl,
                Nearest::Ceil => xo.ceil(),
                Nearest::Simple => {
                    if scale < 1.0 {
                        xo.ceil()
                    } else {
                        fl
                    }
                }
            };
            coeffs.push((i as i64, 1.0));
        } else {
            // Prefer the left neighbour: ratio in (0, 1].
            let (base, ratio) = if xo == fl {
                (fl as i64 - 1, 1.0f32)
            } else {
                (fl as i64, xo - fl)
            };
            let aa = p.antialias && scale < 1.0;
            match (p.mode, aa) {
                (Mode::Linear, false) => {
                    coeffs.push((base, 1.0 - ratio));
                    coeffs.push((base + 1, ratio));
                }
                (Mode::Cubic, false) => {
                    for o in -1i64..=2 {
                        coeffs.push((base + o, cubic_kernel(o as f32 - ratio, p.cubic_a)));
                    }
                }
                (mode, true) => {
                    let support = if mode == Mode::Linear { 1.0f32 } else { 2.0 };
                    let start = (-support / scale).floor() as i64 + 1;
                    let end = 2 - start; // exclusive: footprint 2 - 2 * start
                    if (end - start) as u64 * out_len as u64 > (1u64 << 28) {
                        return Err(ctx.err(ErrorKind::LimitExceeded, "antialias filter is too wide"));
                    }
                    for o in start..end {
                        let t = (o as f32 - ratio) * scale;
                        let w = if mode == Mode::Linear {
                            (1.0 - t.abs()).clamp(0.0, 1.0)
                        } else {
                            cubic_kernel(t, p.cubic_a)
                        };
                        coeffs.push((base + o, w));
                    }
                    let s: f32 = coeffs.iter().map(|c| c.1).sum();
                    if s != 0.0 {
                        coeffs.iter_mut().for_each(|c| c.1 /= s);
                    }
                }
                (Mode::Nearest, false) => unreachable!("handled above"),
            }
            if p.exclude_outside {
                for c in coeffs.iter_mut() {
                    if c.0 < 0 || c.0 > last {
                        c.1 = 0.0;
                    }
                }
                let s: f32 = coeffs.iter().map(|c| c.1).sum();
                if s != 0.0 {
                    coeffs.iter_mut().for_each(|c| c.1 /= s);
                }
            }
        }
        for &(i, w) in &coeffs {
            if w != 0.0 {
                plan.taps.push((clamp(i), w));
            }
        }
        plan.start.push(plan.taps.len());
    }
    Ok(plan)
}

/// Numbers the separable passes run on (f32 for float tensors, f64 for integers).
trait Sample: Copy + Default + std::ops::AddAssign + std::ops::Mul<Output = Self> + From<f32> {}
impl Sample for f32 {}
impl Sample for f64 {}

/// One 1-D interpolation pass along `axis` of `data` (shape `shape`).
fn pass<T: Sample>(data: &[T], shape: &mut [usize], axis: usize, plan: &AxisPlan, ext: T) -> Vec<T> {
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    let (in_len, out_len) = (shape[axis], plan.out_len());
    let mut out = vec![T::default(); outer * out_len * inner];
    for o in 0..outer {
        let src = &data[o * in_len * inner..(o + 1) * in_len * inner];
        let dst = &mut out[o * out_len * inner..(o + 1) * out_len * inner];
        for y in 0..out_len {
            let taps = &plan.taps[plan.start[y]..plan.start[y + 1]];
            if inner == 1 {
                dst[y] = if plan.extrap[y] {
                    ext
                } else {
                    let mut acc = T::default();
                    for &(i, w) in taps {
                        acc += T::from(w) * src[i];
                    }
                    acc
                };
                continue;
            }
            let d = &mut dst[y * inner..(y + 1) * inner];
            if plan.extrap[y] {
                d.fill(ext);
            } else if let [(i, w)] = taps {
                if *w == 1.0 {
                    d.copy_from_slice(&src[i * inner..(i + 1) * inner]);
                    continue;
                }
                let w = T::from(*w);
                for (dv, &sv) in d.iter_mut().zip(&src[i * inner..(i + 1) * inner]) {
                    *dv = w * sv;
                }
            } else {
                for &(i, w) in taps {
                    let w = T::from(w);
                    for (dv, &sv) in d.iter_mut().zip(&src[i * inner..(i + 1) * inner]) {
                        *dv += w * sv;
                    }
                }
            }
        }
    }
    shape[axis] = out_len;
    out
}

fn run<T: Sample>(mut data: Vec<T>, in_shape: &[usize], plans: &[(usize, AxisPlan)], ext: T) -> Vec<T> {
    let mut shape = in_shape.to_vec();
    for (axis, plan) in plans {
        data = pass(&data, &mut shape, *axis, plan, ext);
    }
    data
}

/// The `(roi, scales, sizes)` inputs at this op/opset, as concrete values.
type Inputs = (Option<Vec<f32>>, Option<Vec<f32>>, Option<Vec<i64>>);

fn eval_inputs(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> Result<Inputs> {
    if is_upsample(ctx) && ctx.opset < 9 {
        let s = ctx
            .node
            .attr_floats_opt("scales")?
            .ok_or_else(|| ctx.attr_err("scales", "required attribute is missing"))?;
        return Ok((None, Some(s), None));
    }
    let f = |t: &Tensor| -> Result<Vec<f32>> {
        if !t.dtype().is_float() {
            return Err(bad_type(ctx, "roi/scales input", t.dtype()));
        }
        Ok(t.to_f32_vec())
    };
    if is_upsample(ctx) || ctx.opset < 11 {
        return Ok((None, Some(f(ctx.input(inputs, 1)?)?), None));
    }
    let roi = ctx.opt_input(inputs, 1).map(f).transpose()?;
    let scales = ctx.opt_input(inputs, 2).map(f).transpose()?;
    let sizes = ctx
        .opt_input(inputs, 3)
        .map(|t| {
            t.to_i64_vec()
                .map_err(|e| ctx.err(ErrorKind::TypeMismatch, e.message))
        })
        .transpose()?;
    Ok((roi, scales, sizes))
}

fn eval_resize(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = ctx.input(inputs, 0)?;
    if x.dtype() == DType::Bool {
        return Err(bad_type(ctx, "input", x.dtype()));
    }
    let p = params(ctx)?;
    let (roi, scales, sizes) = eval_inputs(ctx, inputs)?;
    let shape = x.shape();
    let t = target(
        ctx,
        &p,
        shape,
        roi.as_deref(),
        scales.as_deref(),
        sizes.as_deref(),
    )?;
    let r = shape.len();
    let mut plans = Vec::new();
    for (a, &len) in shape.iter().enumerate() {
        let plan = plan_axis(ctx, &p, len, t.out[a], t.scales[a], (t.roi[a], t.roi[r + a]))?;
        if !plan.is_identity(len) {
            plans.push((a, plan));
        }
    }
    // Shrinking axes first keeps the intermediates no larger than max(in, out).
    plans.sort_by(|(a, pa), (b, pb)| {
        let ra = pa.out_len() as f64 / shape[*a].max(1) as f64;
        let rb = pb.out_len() as f64 / shape[*b].max(1) as f64;
        ra.total_cmp(&rb)
    });
    let out = t.out;
    let res = match x.data() {
        TensorData::F32(_) | TensorData::F16(_) => {
            let v = run(x.to_f32_vec(), shape, &plans, p.extrapolation);
            float_tensor(x.dtype(), out, v)?
        }
        TensorData::I64(v) if p.mode == Mode::Nearest && p.coord != Coord::TfCropAndResize => {
            // Exact path for large int64 values.
            let idx: Vec<f64> = (0..v.len()).map(|i| i as f64).collect();
            let pos = run(idx, shape, &plans, 0.0);
            Tensor::from_vec(out, pos.iter().map(|&i| v[i as usize]).collect::<Vec<_>>())?
        }
        _ => {
            let v = run(x.to_f64_vec(), shape, &plans, p.extrapolation as f64);
            let data = match x.dtype() {
                DType::I8 => TensorData::I8(v.iter().map(|&a| a as i8).collect()),
                DType::U8 => TensorData::U8(v.iter().map(|&a| a as u8).collect()),
                DType::I32 => TensorData::I32(v.iter().map(|&a| a as i32).collect()),
                _ => TensorData::I64(v.iter().map(|&a| a as i64).collect()),
            };
            Tensor::new(out, data)?
        }
    };
    Ok(vec![res])
}

// ---------------------------------------------------------------------------
// Inference

/// An optional input's constant value; `Err(())` when it is present but not
/// constant, `Ok(None)` when absent or known to be empty.
fn const_input(ii: Option<&InferInput>) -> std::result::Result<Option<&Tensor>, ()> {
    let Some(ii) = ii else {
        return Ok(None);
    };
    match &ii.value {
        Some(v) if v.is_empty() => Ok(None),
        Some(v) => Ok(Some(v)),
        None if ii.ty.known_dims().is_some_and(|d| d.contains(&0)) => Ok(None),
        None => Err(()),
    }
}

fn infer_resize(ctx: &OpCtx, inputs: &[Option<&InferInput>]) -> Result<Vec<ValueType>> {
    let x = &ctx.infer_input(inputs, 0)?.ty;
    if x.dtype == DType::Bool {
        return Err(bad_type(ctx, "input", x.dtype));
    }
    let p = params(ctx)?;
    let Some(dims) = &x.shape else {
        return Ok(vec![ValueType::unknown_rank(x.dtype)]);
    };
    let r = dims.len();
    let axes = resolve_axes(ctx, &p, r)?;
    let unknown = |dims: &[Dim]| -> Vec<Dim> {
        dims.iter()
            .enumerate()
            .map(|(i, d)| {
                if axes.contains(&i) {
                    ctx.unknown_dim(0, i)
                } else {
                    d.clone()
                }
            })
            .collect()
    };
    // (scales, sizes) as constants, when known.
    let (scales, sizes): (Option<Vec<f32>>, Option<Vec<i64>>) = if is_upsample(ctx) && ctx.opset < 9 {
        (ctx.node.attr_floats_opt("scales")?, None)
    } else {
        let legacy = is_upsample(ctx) || ctx.opset < 11;
        let sc = const_input(ctx.opt_infer_input(inputs, if legacy { 1 } else { 2 }));
        let sz = if legacy {
            Ok(None)
        } else {
            const_input(ctx.opt_infer_input(inputs, 3))
        };
        match (sc, sz) {
            (Ok(sc), Ok(sz)) => (
                sc.map(|t| t.to_f32_vec()),
                sz.map(|t| t.to_i64_vec())
                    .transpose()
                    .map_err(|e| ctx.err(ErrorKind::TypeMismatch, e.message))?,
            ),
            _ => return Ok(vec![ValueType::new(x.dtype, unknown(dims))]),
        }
    };
    let out: Vec<Dim> = match (scales, sizes) {
        (Some(s), None) => {
            if s.len() != axes.len() {
                return Err(ctx.err(
                    ErrorKind::ShapeMismatch,
                    format!("scales has {} values, expected {}", s.len(), axes.len()),
                ));
            }
            let mut out = dims.clone();
            for (i, &a) in axes.iter().enumerate() {
                out[a] = match &dims[a] {
                    _ if s[i] == 1.0 => dims[a].clone(),
                    Dim::Known(n) => Dim::Known(scaled_len(ctx, *n, s[i])?),
                    Dim::Sym(_) => ctx.unknown_dim(0, a),
                };
            }
            out
        }
        (None, Some(s)) if p.policy == Policy::Stretch => {
            if s.len() != axes.len() {
                return Err(ctx.err(
                    ErrorKind::ShapeMismatch,
                    format!("sizes has {} values, expected {}", s.len(), axes.len()),
                ));
            }
            let mut out = dims.clone();
            for (i, &a) in axes.iter().enumerate() {
                if s[i] < 0 {
                    return Err(ctx.err(ErrorKind::InvalidInput, format!("invalid size {}", s[i])));
                }
                out[a] = Dim::Known(s[i] as usize);
            }
            out
        }
        (None, Some(s)) => match x.known_dims() {
            Some(known) => {
                let t = target(ctx, &p, &known, None, None, Some(&s))?;
                t.out.into_iter().map(Dim::Known).collect()
            }
            None => unknown(dims),
        },
        _ => unknown(dims),
    };
    Ok(vec![ValueType::new(x.dtype, out)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::eval_node;
    use crate::{Attribute, Node};

    fn t(shape: &[usize], v: Vec<f32>) -> Tensor {
        Tensor::from_vec(shape.to_vec(), v).unwrap()
    }
    fn close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-4, "{a:?} vs {b:?}");
        }
    }
    fn s(v: &str) -> Attribute {
        Attribute::String(v.as_bytes().to_vec())
    }
    /// Resize-11+ with scales.
    fn rs(x: &Tensor, scales: &[f32], attrs: &[(&str, Attribute)], opset: i64) -> Result<Tensor> {
        let mut n = Node::new("n", "Resize", &["x", "", "s"], &["y"]);
        for (k, v) in attrs {
            n = n.with_attr(k, v.clone());
        }
        let sc = t(&[scales.len()], scales.to_vec());
        Ok(eval_node(&n, opset, &[Some(x), None, Some(&sc)])?.remove(0))
    }
    /// Resize-11+ with sizes (and an optional roi).
    fn rz(
        x: &Tensor,
        roi: Option<&[f32]>,
        sizes: &[i64],
        attrs: &[(&str, Attribute)],
        opset: i64,
    ) -> Result<Tensor> {
        let mut n = Node::new("n", "Resize", &["x", "roi", "", "sz"], &["y"]);
        for (k, v) in attrs {
            n = n.with_attr(k, v.clone());
        }
        let sz = Tensor::from_vec(vec![sizes.len()], sizes.to_vec()).unwrap();
        let r = roi.map(|r| t(&[r.len()], r.to_vec()));
        Ok(eval_node(&n, opset, &[Some(x), r.as_ref(), None, Some(&sz)])?.remove(0))
    }
    fn sq2() -> Tensor {
        t(&[1, 1, 2, 2], vec![1.0, 2.0, 3.0, 4.0])
    }
    fn r2x4() -> Tensor {
        t(&[1, 1, 2, 4], (1..=8).map(|v| v as f32).collect())
    }
    fn sq4() -> Tensor {
        t(&[1, 1, 4, 4], (1..=16).map(|v| v as f32).collect())
    }

    #[test]
    fn nearest_upsample_half_pixel() {
        // ONNX test resize_upsample_scales_nearest.
        let y = rs(&sq2(), &[1.0, 1.0, 2.0, 3.0], &[], 13).unwrap();
        assert_eq!(y.shape(), &[1, 1, 4, 6]);
        let row1 = [1.0, 1.0, 1.0, 2.0, 2.0, 2.0];
        let row2 = [3.0, 3.0, 3.0, 4.0, 4.0, 4.0];
        let want: Vec<f32> = [row1, row1, row2, row2].concat();
        close(&y.to_f32_vec(), &want);
    }

    #[test]
    fn nearest_downsample() {
        // ONNX test resize_downsample_scales_nearest, also at opset 10.
        let y = rs(&r2x4(), &[1.0, 1.0, 0.6, 0.6], &[], 13).unwrap();
        assert_eq!(y.shape(), &[1, 1, 1, 2]);
        close(&y.to_f32_vec(), &[1.0, 3.0]);
        let n = Node::new("n", "Resize", &["x", "s"], &["y"]);
        let sc = t(&[4], vec![1.0, 1.0, 0.6, 0.6]);
        let y = eval_node(&n, 10, &[Some(&r2x4()), Some(&sc)]).unwrap().remove(0);
        close(&y.to_f32_vec(), &[1.0, 3.0]);
    }

    #[test]
    fn nearest_modes() {
        let x = t(&[4], vec![10.0, 20.0, 30.0, 40.0]);
        let asym = ("coordinate_transformation_mode", s("asymmetric"));
        let m = |mode: &str| {
            rs(&x, &[2.0], &[asym.clone(), ("nearest_mode", s(mode))], 13)
                .unwrap()
                .to_f32_vec()
        };
        // Source coords 0, .5, 1, 1.5, 2, 2.5, 3, 3.5.
        close(
            &m("round_prefer_floor"),
            &[10., 10., 20., 20., 30., 30., 40., 40.],
        );
        close(&m("round_prefer_ceil"), &[10., 20., 20., 30., 30., 40., 40., 40.]);
        close(&m("floor"), &[10., 10., 20., 20., 30., 30., 40., 40.]);
        close(&m("ceil"), &[10., 20., 20., 30., 30., 40., 40., 40.]);
        let tf = rs(
            &x,
            &[2.0],
            &[("coordinate_transformation_mode", s("tf_half_pixel_for_nn"))],
            11,
        )
        .unwrap();
        // (x + .5) / 2 = .25, .75, 1.25, ... rounded.
        close(&tf.to_f32_vec(), &[10., 20., 20., 30., 30., 40., 40., 40.]);
        assert!(rs(&x, &[2.0], &[("nearest_mode", s("bogus"))], 13).is_err());
        assert!(rs(
            &x,
            &[2.0],
            &[("coordinate_transformation_mode", s("tf_half_pixel_for_nn"))],
            13
        )
        .is_err());
    }

    #[test]
    fn linear_modes() {
        let lin = ("mode", s("linear"));
        // resize_upsample_scales_linear (half_pixel).
        let y = rs(&sq2(), &[1.0, 1.0, 2.0, 2.0], std::slice::from_ref(&lin), 13).unwrap();
        close(
            &y.to_f32_vec(),
            &[
                1.0, 1.25, 1.75, 2.0, 1.5, 1.75, 2.25, 2.5, 2.5, 2.75, 3.25, 3.5, 3.0, 3.25, 3.75, 4.0,
            ],
        );
        // resize_upsample_scales_linear_align_corners.
        let ac = ("coordinate_transformation_mode", s("align_corners"));
        let y = rs(&sq2(), &[1.0, 1.0, 2.0, 2.0], &[lin.clone(), ac], 13).unwrap();
        let (a, b) = (1.0 / 3.0, 2.0 / 3.0);
        close(
            &y.to_f32_vec(),
            &[
                1.0,
                1.0 + a,
                1.0 + b,
                2.0,
                1.0 + b,
                2.0,
                2.0 + a,
                2.0 + b,
                2.0 + a,
                2.0 + b,
                3.0,
                3.0 + a,
                3.0,
                3.0 + a,
                3.0 + b,
                4.0,
            ],
        );
        // resize_downsample_scales_linear.
        let y = rs(&r2x4(), &[1.0, 1.0, 0.6, 0.6], std::slice::from_ref(&lin), 13).unwrap();
        close(&y.to_f32_vec(), &[2.666_666_5, 4.333_333]);
        // asymmetric: x / 2 = 0, .5, 1, 1.5 (clamped at the edge).
        let x = t(&[2], vec![0.0, 10.0]);
        let asym = ("coordinate_transformation_mode", s("asymmetric"));
        let y = rs(&x, &[2.0], &[lin.clone(), asym], 13).unwrap();
        close(&y.to_f32_vec(), &[0.0, 5.0, 10.0, 10.0]);
        // pytorch_half_pixel to a single pixel samples coordinate 0; half_pixel samples 1.5.
        let x = t(&[4], vec![10.0, 20.0, 30.0, 40.0]);
        let pt = ("coordinate_transformation_mode", s("pytorch_half_pixel"));
        close(
            &rz(&x, None, &[1], &[lin.clone(), pt], 13).unwrap().to_f32_vec(),
            &[10.0],
        );
        close(&rz(&x, None, &[1], &[lin], 13).unwrap().to_f32_vec(), &[25.0]);
    }

    #[test]
    fn half_pixel_symmetric() {
        // resize_upsample_scales_linear_half_pixel_symmetric: scales 2.3 and 2.94.
        let attrs = [
            ("mode", s("linear")),
            ("coordinate_transformation_mode", s("half_pixel_symmetric")),
        ];
        let y = rs(&sq2(), &[1.0, 1.0, 2.3, 2.94], &attrs, 19).unwrap();
        assert_eq!(y.shape(), &[1, 1, 4, 5]);
        let v = y.to_f32_vec();
        close(&v[..5], &[1.0, 1.159_864, 1.5, 1.840_136, 2.0]);
        let col0: Vec<f32> = (0..4).map(|r| v[r * 5]).collect();
        close(&col0, &[1.0, 1.565_217, 2.434_783, 3.0]);
        assert!(rs(&sq2(), &[1.0, 1.0, 2.3, 2.94], &attrs, 18).is_err());
    }

    #[test]
    fn tf_crop_and_resize() {
        let attrs = [
            ("mode", s("linear")),
            ("coordinate_transformation_mode", s("tf_crop_and_resize")),
        ];
        let roi = [0.0, 0.0, 0.4, 0.6, 1.0, 1.0, 0.6, 0.8];
        let y = rz(&sq4(), Some(&roi), &[1, 1, 3, 3], &attrs, 13).unwrap();
        close(&y.to_f32_vec(), &[7.6, 7.9, 8.2, 8.8, 9.1, 9.4, 10.0, 10.3, 10.6]);
        let mut attrs2 = attrs.to_vec();
        attrs2.push(("extrapolation_value", Attribute::Float(10.0)));
        let roi = [0.0, 0.0, 0.4, 0.6, 1.0, 1.0, 1.2, 1.7];
        let y = rz(&sq4(), Some(&roi), &[1, 1, 3, 3], &attrs2, 13).unwrap();
        close(
            &y.to_f32_vec(),
            &[7.6, 10.0, 10.0, 12.4, 10.0, 10.0, 10.0, 10.0, 10.0],
        );
        // With axes (opset 18): roi refers to the listed axes.
        let mut attrs3 = attrs.to_vec();
        attrs3.push(("axes", Attribute::Ints(vec![3, 2])));
        let y = rz(&sq4(), Some(&[0.6, 0.4, 0.8, 0.6]), &[3, 3], &attrs3, 18).unwrap();
        close(&y.to_f32_vec(), &[7.6, 7.9, 8.2, 8.8, 9.1, 9.4, 10.0, 10.3, 10.6]);
    }

    #[test]
    fn cubic_and_exclude_outside() {
        let x = t(&[5], vec![0.0, 1.0, 4.0, 9.0, 16.0]);
        let base = [
            ("mode", s("cubic")),
            ("coordinate_transformation_mode", s("asymmetric")),
        ];
        // Source 1.5: weights (-0.09375, 0.59375, 0.59375, -0.09375) on 0, 1, 4, 9.
        let y = rs(&x, &[2.0], &base, 13).unwrap().to_f32_vec();
        assert!((y[3] - 2.125).abs() < 1e-6, "{y:?}");
        // Source 0.5: the tap at -1 is clamped to index 0, or excluded.
        assert!((y[1] - 0.218_75).abs() < 1e-6);
        let mut ex = base.to_vec();
        ex.push(("exclude_outside", Attribute::Int(1)));
        let y = rs(&x, &[2.0], &ex, 13).unwrap().to_f32_vec();
        assert!((y[1] - 0.2).abs() < 1e-6, "{y:?}");
        // cubic_coeff_a = -0.5: weights (-0.0625, 0.5625, 0.5625, -0.0625).
        let mut a5 = base.to_vec();
        a5.push(("cubic_coeff_a", Attribute::Float(-0.5)));
        let y = rs(&x, &[2.0], &a5, 13).unwrap().to_f32_vec();
        assert!((y[3] - (0.5625 * 5.0 - 0.0625 * 9.0)).abs() < 1e-6);
    }

    #[test]
    fn antialias_linear_downsample() {
        // 1-D [0..8] to 4 with half_pixel: the filter spans 4 inputs per output.
        let x = t(&[8], (0..8).map(|v| v as f32).collect());
        let attrs = [("mode", s("linear")), ("antialias", Attribute::Int(1))];
        let y = rs(&x, &[0.5], &attrs, 18).unwrap().to_f32_vec();
        // Output 1: source 2.5, taps 1..4 with weights 1/8, 3/8, 3/8, 1/8 -> 2.5.
        assert!((y[1] - 2.5).abs() < 1e-5, "{y:?}");
        // Output 0: source 0.5, taps -1..2 clamped: (1/8)*0 + (3/8)*0 + (3/8)*1 + (1/8)*2.
        assert!((y[0] - 0.625).abs() < 1e-5, "{y:?}");
    }

    #[test]
    fn legacy_upsample_and_resize10() {
        let n = Node::new("n", "Upsample", &["x"], &["y"])
            .with_attr("scales", Attribute::Floats(vec![1.0, 1.0, 2.0, 3.0]));
        let y = eval_node(&n, 7, &[Some(&sq2())]).unwrap().remove(0);
        let row1 = [1.0, 1.0, 1.0, 2.0, 2.0, 2.0];
        let row2 = [3.0, 3.0, 3.0, 4.0, 4.0, 4.0];
        close(&y.to_f32_vec(), &[row1, row1, row2, row2].concat());
        let n9 = Node::new("n", "Upsample", &["x", "s"], &["y"]).with_attr("mode", s("linear"));
        let sc = t(&[4], vec![1.0, 1.0, 1.0, 2.0]);
        let y = eval_node(&n9, 9, &[Some(&sq2()), Some(&sc)]).unwrap().remove(0);
        close(&y.to_f32_vec(), &[1.0, 1.5, 2.0, 2.0, 3.0, 3.5, 4.0, 4.0]);
        assert!(eval_node(&n9, 10, &[Some(&sq2()), Some(&sc)]).is_err());
    }

    #[test]
    fn keep_aspect_ratio_and_limits() {
        let attrs = [
            ("keep_aspect_ratio_policy", s("not_larger")),
            ("axes", Attribute::Ints(vec![2, 3])),
        ];
        let y = rz(&sq2(), None, &[7, 8], &attrs, 18).unwrap();
        assert_eq!(y.shape(), &[1, 1, 7, 7]);
        let attrs = [
            ("keep_aspect_ratio_policy", s("not_smaller")),
            ("axes", Attribute::Ints(vec![2, 3])),
        ];
        let y = rz(&sq2(), None, &[7, 8], &attrs, 18).unwrap();
        assert_eq!(y.shape(), &[1, 1, 8, 8]);
        let e = rz(&sq2(), None, &[1, 1, 1 << 20, 1 << 20], &[], 13).unwrap_err();
        assert_eq!(e.kind, ErrorKind::LimitExceeded);
        let e = rs(&sq2(), &[1.0, 1.0, 1e30, 1.0], &[], 13).unwrap_err();
        assert_eq!(e.kind, ErrorKind::LimitExceeded);
        assert!(rs(&sq2(), &[1.0, 1.0, -1.0, 1.0], &[], 13).is_err());
        assert!(rs(&sq2(), &[2.0], &[], 13).is_err());
    }

    #[test]
    fn integer_nearest_is_exact() {
        let big = 1i64 << 60;
        let x = Tensor::from_vec(vec![2], vec![big, big + 1]).unwrap();
        let n = Node::new("n", "Resize", &["x", "", "s"], &["y"]);
        let sc = t(&[1], vec![2.0]);
        let y = eval_node(&n, 13, &[Some(&x), None, Some(&sc)]).unwrap().remove(0);
        assert_eq!(y.as_slice::<i64>().unwrap(), &[big, big, big + 1, big + 1]);
    }

    #[test]
    fn inference() {
        use crate::ops::{lookup, InferInput};
        let node = Node::new("n", "Resize", &["x", "", "s"], &["y"]);
        let ctx = OpCtx {
            node: &node,
            opset: 13,
        };
        let x = InferInput {
            ty: ValueType::new(
                DType::F32,
                vec![
                    Dim::Sym("N".into()),
                    Dim::Known(3),
                    Dim::Sym("H".into()),
                    Dim::Known(4),
                ],
            ),
            value: None,
        };
        let sc = t(&[4], vec![1.0, 1.0, 2.0, 2.0]);
        let s = InferInput {
            ty: ValueType::known(DType::F32, &[4]),
            value: Some(sc),
        };
        let def = lookup("Resize", "").unwrap();
        let out = (def.infer)(&ctx, &[Some(&x), None, Some(&s)]).unwrap();
        assert_eq!(
            out[0].shape,
            Some(vec![
                Dim::Sym("N".into()),
                Dim::Known(3),
                ctx.unknown_dim(0, 2),
                Dim::Known(8)
            ])
        );
        let s_dyn = InferInput {
            ty: ValueType::known(DType::F32, &[4]),
            value: None,
        };
        let out = (def.infer)(&ctx, &[Some(&x), None, Some(&s_dyn)]).unwrap();
        assert_eq!(out[0].rank(), Some(4));
        assert_eq!(out[0].shape.as_ref().unwrap()[1], ctx.unknown_dim(0, 1));
    }
}
