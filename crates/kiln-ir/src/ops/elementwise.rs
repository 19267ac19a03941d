//! Element-wise ops with multidirectional (NumPy) broadcasting: arithmetic
//! (`Add`, `Sub`, `Mul`, `Div`, `Pow`), unary math (`Sqrt`, `Exp`, `Log`,
//! `Neg`, `Abs`, `Reciprocal`, `Floor`, `Ceil`, `Erf`), comparisons (`Equal`,
//! `Less`, `Greater`, `LessOrEqual`, `GreaterOrEqual`; bool output), `Where`,
//! and the variadic `Max`, `Min`, `Sum`, `Mean`.
//!
//! Semantics follow the ONNX operator spec, opsets 6..=25: float16 is computed
//! through f32; integer arithmetic wraps on overflow (as NumPy and ONNX Runtime
//! do), integer `Div` truncates toward zero and errors on a zero divisor.
//!
//! Broadcasting (`broadcast_map`) has fast paths for equal shapes, scalar
//! operands, and collapses the output into runs so that per-channel operands
//! (`[1,C,1,1]` against `[N,C,H,W]`) run an inner loop over contiguous memory.

use super::{broadcast_shapes, broadcast_types, InferInput, OpCtx, OpDef};
use crate::{f16, numel, DType, ErrorKind, Result, Tensor, TensorData, ValueType};

/// Ops of this family.
pub(crate) const OPS: &[OpDef] = &[
    def("Add", 1, infer_arith, eval_add),
    def("Sub", 1, infer_arith, eval_sub),
    def("Mul", 1, infer_arith, eval_mul),
    def("Div", 1, infer_arith, eval_div),
    def("Pow", 1, infer_pow, eval_pow),
    def("Sqrt", 1, infer_unary_float, eval_sqrt),
    def("Exp", 1, infer_unary_float, eval_exp),
    def("Log", 1, infer_unary_float, eval_log),
    def("Reciprocal", 1, infer_unary_float, eval_reciprocal),
    def("Floor", 1, infer_unary_float, eval_floor),
    def("Ceil", 1, infer_unary_float, eval_ceil),
    def("Erf", 9, infer_unary_float, eval_erf),
    def("Neg", 1, infer_neg, eval_neg),
    def("Abs", 1, infer_abs, eval_abs),
    def("Equal", 1, infer_compare, eval_equal),
    def("Less", 1, infer_compare, eval_less),
    def("Greater", 1, infer_compare, eval_greater),
    def("LessOrEqual", 12, infer_compare, eval_less_equal),
    def("GreaterOrEqual", 12, infer_compare, eval_greater_equal),
    def("Where", 9, infer_where, eval_where),
    def("Max", 1, infer_variadic, eval_max),
    def("Min", 1, infer_variadic, eval_min),
    def("Sum", 1, infer_variadic, eval_sum),
    def("Mean", 1, infer_variadic, eval_mean),
];

use super::op_def as def;

// ---------------------------------------------------------------------------
// Shared helpers (also used by the activation, reduce and resize families).

/// Wraps f32 results as a tensor of `dtype` (F32, or F16 by narrowing).
pub(crate) fn float_tensor(dtype: DType, shape: Vec<usize>, v: Vec<f32>) -> Result<Tensor> {
    match dtype {
        DType::F16 => Tensor::from_vec(shape, v.into_iter().map(f16::from_f32).collect::<Vec<_>>()),
        _ => Tensor::from_vec(shape, v),
    }
}

/// A `TypeMismatch` error for an input dtype an op does not accept.
pub(crate) fn bad_type(ctx: &OpCtx, what: &str, dt: DType) -> crate::IrError {
    ctx.err(
        ErrorKind::TypeMismatch,
        format!(
            "{what} of type {dt} is not supported by {} at opset {}",
            ctx.node.op_type, ctx.opset
        ),
    )
}

/// Applies `f` element-wise to a float (f32/f16) tensor; other dtypes give
/// `TypeMismatch`.
pub(crate) fn map_float(ctx: &OpCtx, x: &Tensor, f: impl Fn(f32) -> f32) -> Result<Tensor> {
    match x.data() {
        TensorData::F32(v) => {
            Tensor::from_vec(x.shape().to_vec(), v.iter().map(|&a| f(a)).collect::<Vec<_>>())
        }
        TensorData::F16(v) => Tensor::from_vec(
            x.shape().to_vec(),
            v.iter().map(|a| f16::from_f32(f(a.to_f32()))).collect::<Vec<_>>(),
        ),
        _ => Err(bad_type(ctx, "input", x.dtype())),
    }
}

/// Multidirectional broadcasting of `a` (shape `ash`) and `b` (shape `bsh`)
/// through `f`; returns the output shape and data.
///
/// Fast paths: equal shapes, a one-element operand, and in general the output
/// collapsed into maximal runs where each operand is either contiguous or
/// constant, so the inner loop is a plain slice loop.
///
/// Errors: `ShapeMismatch` when the shapes do not broadcast.
pub(crate) fn broadcast_map<A: Copy, B: Copy, O>(
    ctx: &OpCtx,
    a: &[A],
    ash: &[usize],
    b: &[B],
    bsh: &[usize],
    f: impl Fn(A, B) -> O,
) -> Result<(Vec<usize>, Vec<O>)> {
    let out_shape = broadcast_shapes(ash, bsh).map_err(|e| ctx.err(ErrorKind::ShapeMismatch, e.message))?;
    let n = numel(&out_shape)?;
    if a.len() != numel(ash)? || b.len() != numel(bsh)? {
        return Err(ctx.err(ErrorKind::Internal, "operand data does not match its shape"));
    }
    if n == 0 {
        return Ok((out_shape, Vec::new()));
    }
    if ash == bsh {
        return Ok((out_shape, a.iter().zip(b).map(|(&x, &y)| f(x, y)).collect()));
    }
    if b.len() == 1 {
        let y = b[0];
        return Ok((out_shape, a.iter().map(|&x| f(x, y)).collect()));
    }
    if a.len() == 1 {
        let x = a[0];
        return Ok((out_shape, b.iter().map(|&y| f(x, y)).collect()));
    }
    let r = out_shape.len();
    let pad = |s: &[usize]| -> Vec<usize> {
        let mut v = vec![1; r - s.len()];
        v.extend_from_slice(s);
        v
    };
    let (pa, pb) = (pad(ash), pad(bsh));
    // Collapsed dims: (size, a varies along it, b varies along it).
    let mut dims: Vec<(usize, bool, bool)> = Vec::new();
    for i in 0..r {
        let d = out_shape[i];
        if d == 1 {
            continue;
        }
        let (fa, fb) = (pa[i] != 1, pb[i] != 1);
        match dims.last_mut() {
            Some(last) if last.1 == fa && last.2 == fb => last.0 *= d,
            _ => dims.push((d, fa, fb)),
        }
    }
    let Some(&(inner, ifa, ifb)) = dims.last() else {
        return Ok((out_shape, vec![f(a[0], b[0])]));
    };
    let k = dims.len();
    let (mut sa, mut sb) = (vec![0usize; k], vec![0usize; k]);
    let (mut acc_a, mut acc_b) = (1usize, 1usize);
    for i in (0..k).rev() {
        if dims[i].1 {
            sa[i] = acc_a;
            acc_a *= dims[i].0;
        }
        if dims[i].2 {
            sb[i] = acc_b;
            acc_b *= dims[i].0;
        }
    }
    let mut out = Vec::with_capacity(n);
    let mut idx = vec![0usize; k - 1];
    let (mut oa, mut ob) = (0usize, 0usize);
    loop {
        match (ifa, ifb) {
            (true, true) => out.extend(
                a[oa..oa + inner]
                    .iter()
                    .zip(&b[ob..ob + inner])
                    .map(|(&x, &y)| f(x, y)),
            ),
            (true, false) => {
                let y = b[ob];
                out.extend(a[oa..oa + inner].iter().map(|&x| f(x, y)));
            }
            (false, true) => {
                let x = a[oa];
                out.extend(b[ob..ob + inner].iter().map(|&y| f(x, y)));
            }
            (false, false) => out.extend((0..inner).map(|_| f(a[oa], b[ob]))),
        }
        let mut j = k - 1;
        loop {
            if j == 0 {
                return Ok((out_shape, out));
            }
            j -= 1;
            idx[j] += 1;
            oa += sa[j];
            ob += sb[j];
            if idx[j] < dims[j].0 {
                break;
            }
            oa -= sa[j] * dims[j].0;
            ob -= sb[j] * dims[j].0;
            idx[j] = 0;
        }
    }
}

/// Strides (in elements) of `shape` read as broadcast to `out` (right-aligned,
/// 0 along broadcast dims). `shape` must broadcast to `out`.
pub(crate) fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let r = out.len();
    let st = crate::strides(shape);
    let mut s = vec![0usize; r];
    for (i, (&d, &stride)) in shape.iter().zip(&st).enumerate() {
        if d != 1 {
            s[r - shape.len() + i] = stride;
        }
    }
    s
}

/// The error function, to about 1e-15 relative precision: a Taylor series for
/// |x| < 2.5 and a continued fraction for erfc beyond.
pub(crate) fn erf(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let ax = x.abs();
    let r = if ax < 2.5 {
        // erf(x) = 2/sqrt(pi) * sum_n (-1)^n x^(2n+1) / (n! (2n+1))
        let x2 = ax * ax;
        let mut term = ax;
        let mut sum = ax;
        let mut n = 0.0f64;
        loop {
            n += 1.0;
            term *= -x2 / n;
            let t = term / (2.0 * n + 1.0);
            sum += t;
            if t.abs() < 1e-17 * sum.abs() || n > 200.0 {
                break;
            }
        }
        sum * std::f64::consts::FRAC_2_SQRT_PI
    } else if ax > 6.0 {
        1.0
    } else {
        // erfc(x) = exp(-x^2)/sqrt(pi) / (x + (1/2)/(x + 1/(x + (3/2)/(x + ...))))
        let mut k = ax;
        for i in (1..=80).rev() {
            k = ax + (i as f64 * 0.5) / k;
        }
        let erfc = (-ax * ax).exp() / std::f64::consts::PI.sqrt() / k;
        1.0 - erfc
    };
    if x < 0.0 {
        -r
    } else {
        r
    }
}

/// Integer element types of the arithmetic ops.
pub(crate) trait IntElem: crate::Elem + PartialOrd {
    /// Wrapping addition.
    fn wadd(self, o: Self) -> Self;
    /// Wrapping subtraction.
    fn wsub(self, o: Self) -> Self;
    /// Wrapping multiplication.
    fn wmul(self, o: Self) -> Self;
    /// Truncating division (the divisor is non-zero); wraps on `MIN / -1`.
    fn wdiv(self, o: Self) -> Self;
    /// Zero.
    const ZERO: Self;
    /// From f64, truncating and saturating.
    fn from_f64(x: f64) -> Self;
}

macro_rules! int_elem {
    ($($t:ty),*) => {$(
        impl IntElem for $t {
            fn wadd(self, o: Self) -> Self { self.wrapping_add(o) }
            fn wsub(self, o: Self) -> Self { self.wrapping_sub(o) }
            fn wmul(self, o: Self) -> Self { self.wrapping_mul(o) }
            fn wdiv(self, o: Self) -> Self { self.wrapping_div(o) }
            const ZERO: Self = 0;
            fn from_f64(x: f64) -> Self { x as $t }
        }
    )*};
}
int_elem!(i8, u8, i32, i64);

// ---------------------------------------------------------------------------
// Type rules.

fn arith_allowed(opset: i64, dt: DType) -> bool {
    match dt {
        DType::F32 | DType::F16 | DType::I32 | DType::I64 => true,
        DType::I8 | DType::U8 => opset >= 14,
        _ => false,
    }
}

fn same_dtype(ctx: &OpCtx, a: DType, b: DType) -> Result<DType> {
    if a != b {
        return Err(ctx.err(
            ErrorKind::TypeMismatch,
            format!("inputs have different element types {a} and {b}"),
        ));
    }
    Ok(a)
}

fn bin_inputs<'t>(ctx: &OpCtx, inputs: &[Option<&'t InferInput>]) -> Result<(&'t ValueType, &'t ValueType)> {
    Ok((&ctx.infer_input(inputs, 0)?.ty, &ctx.infer_input(inputs, 1)?.ty))
}

fn infer_arith(ctx: &OpCtx, inputs: &[Option<&InferInput>]) -> Result<Vec<ValueType>> {
    let (a, b) = bin_inputs(ctx, inputs)?;
    super::check_legacy_broadcast(
        ctx,
        a.shape.as_ref().map(Vec::len),
        b.shape.as_ref().map(Vec::len),
    )?;
    let dt = same_dtype(ctx, a.dtype, b.dtype)?;
    if !arith_allowed(ctx.opset, dt) {
        return Err(bad_type(ctx, "input", dt));
    }
    Ok(vec![ValueType {
        dtype: dt,
        shape: broadcast_types(ctx, &[a, b])?,
    }])
}

fn pow_types(ctx: &OpCtx, base: DType, exp: DType) -> Result<()> {
    let base_ok = match base {
        DType::F32 | DType::F16 => true,
        DType::I32 | DType::I64 => ctx.opset >= 12,
        _ => false,
    };
    if !base_ok {
        return Err(bad_type(ctx, "base", base));
    }
    if ctx.opset < 12 {
        same_dtype(ctx, base, exp)?;
    } else if exp == DType::Bool {
        return Err(bad_type(ctx, "exponent", exp));
    }
    Ok(())
}

fn infer_pow(ctx: &OpCtx, inputs: &[Option<&InferInput>]) -> Result<Vec<ValueType>> {
    let (a, b) = bin_inputs(ctx, inputs)?;
    super::check_legacy_broadcast(
        ctx,
        a.shape.as_ref().map(Vec::len),
        b.shape.as_ref().map(Vec::len),
    )?;
    pow_types(ctx, a.dtype, b.dtype)?;
    Ok(vec![ValueType {
        dtype: a.dtype,
        shape: broadcast_types(ctx, &[a, b])?,
    }])
}

fn infer_unary_float(ctx: &OpCtx, inputs: &[Option<&InferInput>]) -> Result<Vec<ValueType>> {
    let x = &ctx.infer_input(inputs, 0)?.ty;
    if !x.dtype.is_float() {
        return Err(bad_type(ctx, "input", x.dtype));
    }
    Ok(vec![x.clone()])
}

fn neg_allowed(dt: DType) -> bool {
    matches!(dt, DType::F32 | DType::F16 | DType::I8 | DType::I32 | DType::I64)
}

fn infer_neg(ctx: &OpCtx, inputs: &[Option<&InferInput>]) -> Result<Vec<ValueType>> {
    let x = &ctx.infer_input(inputs, 0)?.ty;
    if !neg_allowed(x.dtype) {
        return Err(bad_type(ctx, "input", x.dtype));
    }
    Ok(vec![x.clone()])
}

fn infer_abs(ctx: &OpCtx, inputs: &[Option<&InferInput>]) -> Result<Vec<ValueType>> {
    let x = &ctx.infer_input(inputs, 0)?.ty;
    if x.dtype == DType::Bool {
        return Err(bad_type(ctx, "input", x.dtype));
    }
    Ok(vec![x.clone()])
}

fn infer_compare(ctx: &OpCtx, inputs: &[Option<&InferInput>]) -> Result<Vec<ValueType>> {
    let (a, b) = bin_inputs(ctx, inputs)?;
    super::check_legacy_broadcast(
        ctx,
        a.shape.as_ref().map(Vec::len),
        b.shape.as_ref().map(Vec::len),
    )?;
    let dt = same_dtype(ctx, a.dtype, b.dtype)?;
    if dt == DType::Bool && ctx.node.op_type != "Equal" {
        return Err(bad_type(ctx, "input", dt));
    }
    Ok(vec![ValueType {
        dtype: DType::Bool,
        shape: broadcast_types(ctx, &[a, b])?,
    }])
}

fn infer_where(ctx: &OpCtx, inputs: &[Option<&InferInput>]) -> Result<Vec<ValueType>> {
    let c = &ctx.infer_input(inputs, 0)?.ty;
    let (x, y) = (&ctx.infer_input(inputs, 1)?.ty, &ctx.infer_input(inputs, 2)?.ty);
    if c.dtype != DType::Bool {
        return Err(bad_type(ctx, "condition", c.dtype));
    }
    let dt = same_dtype(ctx, x.dtype, y.dtype)?;
    Ok(vec![ValueType {
        dtype: dt,
        shape: broadcast_types(ctx, &[c, x, y])?,
    }])
}

fn variadic_allowed(ctx: &OpCtx, dt: DType) -> bool {
    match dt {
        DType::F32 | DType::F16 => true,
        DType::I8 | DType::U8 | DType::I32 | DType::I64 => {
            matches!(ctx.node.op_type.as_str(), "Max" | "Min") && ctx.opset >= 12
        }
        DType::Bool => false,
    }
}

fn infer_variadic(ctx: &OpCtx, inputs: &[Option<&InferInput>]) -> Result<Vec<ValueType>> {
    let tys: Vec<&ValueType> = inputs
        .iter()
        .map(|i| i.map(|i| &i.ty))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| ctx.err(ErrorKind::InvalidModel, "an input is omitted"))?;
    let Some(first) = tys.first() else {
        return Err(ctx.err(ErrorKind::InvalidModel, "needs at least one input"));
    };
    for t in &tys {
        same_dtype(ctx, first.dtype, t.dtype)?;
    }
    if !variadic_allowed(ctx, first.dtype) {
        return Err(bad_type(ctx, "input", first.dtype));
    }
    Ok(vec![ValueType {
        dtype: first.dtype,
        shape: broadcast_types(ctx, &tys)?,
    }])
}

// ---------------------------------------------------------------------------
// Arithmetic.

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Arith {
    Add,
    Sub,
    Mul,
    Div,
}

fn float_arith(
    ctx: &OpCtx,
    x: &[f32],
    sa: &[usize],
    y: &[f32],
    sb: &[usize],
    op: Arith,
) -> Result<(Vec<usize>, Vec<f32>)> {
    match op {
        Arith::Add => broadcast_map(ctx, x, sa, y, sb, |p, q| p + q),
        Arith::Sub => broadcast_map(ctx, x, sa, y, sb, |p, q| p - q),
        Arith::Mul => broadcast_map(ctx, x, sa, y, sb, |p, q| p * q),
        Arith::Div => broadcast_map(ctx, x, sa, y, sb, |p, q| p / q),
    }
}

fn int_arith<T: IntElem>(
    ctx: &OpCtx,
    x: &[T],
    sa: &[usize],
    y: &[T],
    sb: &[usize],
    op: Arith,
) -> Result<(Vec<usize>, Vec<T>)> {
    match op {
        Arith::Add => broadcast_map(ctx, x, sa, y, sb, T::wadd),
        Arith::Sub => broadcast_map(ctx, x, sa, y, sb, T::wsub),
        Arith::Mul => broadcast_map(ctx, x, sa, y, sb, T::wmul),
        Arith::Div => {
            let out = broadcast_shapes(sa, sb).map_err(|e| ctx.err(ErrorKind::ShapeMismatch, e.message))?;
            if numel(&out)? > 0 && y.contains(&T::ZERO) {
                return Err(ctx.err(ErrorKind::InvalidInput, "integer division by zero"));
            }
            broadcast_map(
                ctx,
                x,
                sa,
                y,
                sb,
                |p: T, q: T| if q == T::ZERO { T::ZERO } else { p.wdiv(q) },
            )
        }
    }
}

fn eval_arith(ctx: &OpCtx, inputs: &[Option<&Tensor>], op: Arith) -> Result<Vec<Tensor>> {
    let a = ctx.input(inputs, 0)?;
    let b = ctx.input(inputs, 1)?;
    super::check_legacy_broadcast(ctx, Some(a.rank()), Some(b.rank()))?;
    let dt = same_dtype(ctx, a.dtype(), b.dtype())?;
    if !arith_allowed(ctx.opset, dt) {
        return Err(bad_type(ctx, "input", dt));
    }
    let (sa, sb) = (a.shape(), b.shape());
    let (shape, data) = match (a.data(), b.data()) {
        (TensorData::F32(x), TensorData::F32(y)) => {
            let (s, v) = float_arith(ctx, x, sa, y, sb, op)?;
            (s, TensorData::F32(v))
        }
        (TensorData::F16(_), TensorData::F16(_)) => {
            let (x, y) = (a.to_f32_vec(), b.to_f32_vec());
            let (s, v) = float_arith(ctx, &x, sa, &y, sb, op)?;
            (s, TensorData::F16(v.into_iter().map(f16::from_f32).collect()))
        }
        (TensorData::I8(x), TensorData::I8(y)) => {
            let (s, v) = int_arith(ctx, x, sa, y, sb, op)?;
            (s, TensorData::I8(v))
        }
        (TensorData::U8(x), TensorData::U8(y)) => {
            let (s, v) = int_arith(ctx, x, sa, y, sb, op)?;
            (s, TensorData::U8(v))
        }
        (TensorData::I32(x), TensorData::I32(y)) => {
            let (s, v) = int_arith(ctx, x, sa, y, sb, op)?;
            (s, TensorData::I32(v))
        }
        (TensorData::I64(x), TensorData::I64(y)) => {
            let (s, v) = int_arith(ctx, x, sa, y, sb, op)?;
            (s, TensorData::I64(v))
        }
        _ => return Err(bad_type(ctx, "input", dt)),
    };
    Ok(vec![Tensor::new(shape, data)?])
}

fn eval_add(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    eval_arith(ctx, inputs, Arith::Add)
}
fn eval_sub(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    eval_arith(ctx, inputs, Arith::Sub)
}
fn eval_mul(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    eval_arith(ctx, inputs, Arith::Mul)
}
fn eval_div(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    eval_arith(ctx, inputs, Arith::Div)
}

fn powf(b: f32, e: f32) -> f32 {
    if e == 2.0 {
        b * b
    } else if e == 1.0 {
        b
    } else {
        b.powf(e)
    }
}

fn eval_pow(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let a = ctx.input(inputs, 0)?;
    let b = ctx.input(inputs, 1)?;
    super::check_legacy_broadcast(ctx, Some(a.rank()), Some(b.rank()))?;
    pow_types(ctx, a.dtype(), b.dtype())?;
    let (sa, sb) = (a.shape(), b.shape());
    let out = match a.data() {
        TensorData::F32(x) => {
            let (s, v) = match b.data() {
                TensorData::F32(y) => broadcast_map(ctx, x, sa, y, sb, powf)?,
                _ => broadcast_map(ctx, x, sa, &b.to_f32_vec(), sb, powf)?,
            };
            Tensor::from_vec(s, v)?
        }
        TensorData::F16(_) => {
            let (s, v) = broadcast_map(ctx, &a.to_f32_vec(), sa, &b.to_f32_vec(), sb, powf)?;
            float_tensor(DType::F16, s, v)?
        }
        TensorData::I32(x) => {
            let (s, v) = broadcast_map(ctx, x, sa, &b.to_f64_vec(), sb, |p, q| {
                i32::from_f64((p as f64).powf(q))
            })?;
            Tensor::from_vec(s, v)?
        }
        TensorData::I64(x) => {
            let (s, v) = match b.data() {
                TensorData::I64(y) => broadcast_map(ctx, x, sa, y, sb, |p: i64, q: i64| {
                    if (0..=u32::MAX as i64).contains(&q) {
                        p.wrapping_pow(q as u32)
                    } else {
                        i64::from_f64((p as f64).powf(q as f64))
                    }
                })?,
                _ => broadcast_map(ctx, x, sa, &b.to_f64_vec(), sb, |p, q| {
                    i64::from_f64((p as f64).powf(q))
                })?,
            };
            Tensor::from_vec(s, v)?
        }
        _ => return Err(bad_type(ctx, "base", a.dtype())),
    };
    Ok(vec![out])
}

// ---------------------------------------------------------------------------
// Unary.

fn unary(ctx: &OpCtx, inputs: &[Option<&Tensor>], f: fn(f32) -> f32) -> Result<Vec<Tensor>> {
    Ok(vec![map_float(ctx, ctx.input(inputs, 0)?, f)?])
}

fn eval_sqrt(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    unary(ctx, inputs, f32::sqrt)
}
fn eval_exp(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    unary(ctx, inputs, f32::exp)
}
fn eval_log(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    unary(ctx, inputs, f32::ln)
}
fn eval_reciprocal(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    unary(ctx, inputs, |x| 1.0 / x)
}
fn eval_floor(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    unary(ctx, inputs, f32::floor)
}
fn eval_ceil(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    unary(ctx, inputs, f32::ceil)
}
fn eval_erf(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    unary(ctx, inputs, |x| erf(x as f64) as f32)
}

fn eval_neg(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = ctx.input(inputs, 0)?;
    let shape = x.shape().to_vec();
    let out = match x.data() {
        TensorData::I8(v) => Tensor::from_vec(shape, v.iter().map(|a| a.wrapping_neg()).collect::<Vec<_>>())?,
        TensorData::I32(v) => {
            Tensor::from_vec(shape, v.iter().map(|a| a.wrapping_neg()).collect::<Vec<_>>())?
        }
        TensorData::I64(v) => {
            Tensor::from_vec(shape, v.iter().map(|a| a.wrapping_neg()).collect::<Vec<_>>())?
        }
        _ => map_float(ctx, x, |a| -a)?,
    };
    Ok(vec![out])
}

fn eval_abs(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = ctx.input(inputs, 0)?;
    let shape = x.shape().to_vec();
    let out = match x.data() {
        TensorData::I8(v) => Tensor::from_vec(shape, v.iter().map(|a| a.wrapping_abs()).collect::<Vec<_>>())?,
        TensorData::U8(v) => Tensor::from_vec(shape, v.clone())?,
        TensorData::I32(v) => {
            Tensor::from_vec(shape, v.iter().map(|a| a.wrapping_abs()).collect::<Vec<_>>())?
        }
        TensorData::I64(v) => {
            Tensor::from_vec(shape, v.iter().map(|a| a.wrapping_abs()).collect::<Vec<_>>())?
        }
        _ => map_float(ctx, x, f32::abs)?,
    };
    Ok(vec![out])
}

// ---------------------------------------------------------------------------
// Comparisons.

#[derive(Clone, Copy)]
enum Cmp {
    Eq,
    Lt,
    Gt,
    Le,
    Ge,
}

fn cmp_slices<T: Copy + PartialOrd>(
    ctx: &OpCtx,
    x: &[T],
    sa: &[usize],
    y: &[T],
    sb: &[usize],
    c: Cmp,
) -> Result<(Vec<usize>, Vec<bool>)> {
    match c {
        Cmp::Eq => broadcast_map(ctx, x, sa, y, sb, |p, q| p == q),
        Cmp::Lt => broadcast_map(ctx, x, sa, y, sb, |p, q| p < q),
        Cmp::Gt => broadcast_map(ctx, x, sa, y, sb, |p, q| p > q),
        Cmp::Le => broadcast_map(ctx, x, sa, y, sb, |p, q| p <= q),
        Cmp::Ge => broadcast_map(ctx, x, sa, y, sb, |p, q| p >= q),
    }
}

fn eval_compare(ctx: &OpCtx, inputs: &[Option<&Tensor>], c: Cmp) -> Result<Vec<Tensor>> {
    let a = ctx.input(inputs, 0)?;
    let b = ctx.input(inputs, 1)?;
    super::check_legacy_broadcast(ctx, Some(a.rank()), Some(b.rank()))?;
    let dt = same_dtype(ctx, a.dtype(), b.dtype())?;
    let (sa, sb) = (a.shape(), b.shape());
    let (s, v) = match (a.data(), b.data()) {
        (TensorData::F32(x), TensorData::F32(y)) => cmp_slices(ctx, x, sa, y, sb, c)?,
        (TensorData::F16(x), TensorData::F16(y)) => cmp_slices(ctx, x, sa, y, sb, c)?,
        (TensorData::I8(x), TensorData::I8(y)) => cmp_slices(ctx, x, sa, y, sb, c)?,
        (TensorData::U8(x), TensorData::U8(y)) => cmp_slices(ctx, x, sa, y, sb, c)?,
        (TensorData::I32(x), TensorData::I32(y)) => cmp_slices(ctx, x, sa, y, sb, c)?,
        (TensorData::I64(x), TensorData::I64(y)) => cmp_slices(ctx, x, sa, y, sb, c)?,
        (TensorData::Bool(x), TensorData::Bool(y)) if matches!(c, Cmp::Eq) => {
            cmp_slices(ctx, x, sa, y, sb, c)?
        }
        _ => return Err(bad_type(ctx, "input", dt)),
    };
    Ok(vec![Tensor::from_vec(s, v)?])
}

fn eval_equal(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    eval_compare(ctx, inputs, Cmp::Eq)
}
fn eval_less(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    eval_compare(ctx, inputs, Cmp::Lt)
}
fn eval_greater(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    eval_compare(ctx, inputs, Cmp::Gt)
}
fn eval_less_equal(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    eval_compare(ctx, inputs, Cmp::Le)
}
fn eval_greater_equal(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    eval_compare(ctx, inputs, Cmp::Ge)
}

// ---------------------------------------------------------------------------
// Where.

fn where_slices<T: Copy>(
    c: &[bool],
    sc: &[usize],
    x: &[T],
    sx: &[usize],
    y: &[T],
    sy: &[usize],
    out: &[usize],
) -> Vec<T> {
    let n: usize = out.iter().product();
    let (tc, tx, ty) = (
        broadcast_strides(sc, out),
        broadcast_strides(sx, out),
        broadcast_strides(sy, out),
    );
    let r = out.len();
    let mut res = Vec::with_capacity(n);
    let mut idx = vec![0usize; r];
    let (mut oc, mut ox, mut oy) = (0usize, 0usize, 0usize);
    for _ in 0..n {
        res.push(if c[oc] { x[ox] } else { y[oy] });
        for j in (0..r).rev() {
            idx[j] += 1;
            oc += tc[j];
            ox += tx[j];
            oy += ty[j];
            if idx[j] < out[j] {
                break;
            }
            oc -= tc[j] * out[j];
            ox -= tx[j] * out[j];
            oy -= ty[j] * out[j];
            idx[j] = 0;
        }
    }
    res
}

fn eval_where(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let c = ctx.input(inputs, 0)?;
    let x = ctx.input(inputs, 1)?;
    let y = ctx.input(inputs, 2)?;
    let cv = c
        .as_slice::<bool>()
        .map_err(|_| bad_type(ctx, "condition", c.dtype()))?;
    same_dtype(ctx, x.dtype(), y.dtype())?;
    let out = broadcast_shapes(c.shape(), x.shape())
        .and_then(|s| broadcast_shapes(&s, y.shape()))
        .map_err(|e| ctx.err(ErrorKind::ShapeMismatch, e.message))?;
    numel(&out)?;
    let (sc, sx, sy) = (c.shape(), x.shape(), y.shape());
    let data = match (x.data(), y.data()) {
        (TensorData::F32(a), TensorData::F32(b)) => TensorData::F32(where_slices(cv, sc, a, sx, b, sy, &out)),
        (TensorData::F16(a), TensorData::F16(b)) => TensorData::F16(where_slices(cv, sc, a, sx, b, sy, &out)),
        (TensorData::I8(a), TensorData::I8(b)) => TensorData::I8(where_slices(cv, sc, a, sx, b, sy, &out)),
        (TensorData::U8(a), TensorData::U8(b)) => TensorData::U8(where_slices(cv, sc, a, sx, b, sy, &out)),
        (TensorData::I32(a), TensorData::I32(b)) => TensorData::I32(where_slices(cv, sc, a, sx, b, sy, &out)),
        (TensorData::I64(a), TensorData::I64(b)) => TensorData::I64(where_slices(cv, sc, a, sx, b, sy, &out)),
        (TensorData::Bool(a), TensorData::Bool(b)) => {
            TensorData::Bool(where_slices(cv, sc, a, sx, b, sy, &out))
        }
        _ => return Err(bad_type(ctx, "input", x.dtype())),
    };
    Ok(vec![Tensor::new(out, data)?])
}

// ---------------------------------------------------------------------------
// Variadic.

#[derive(Clone, Copy, PartialEq, Eq)]
enum Fold {
    Max,
    Min,
    Sum,
}

fn fmax(p: f32, q: f32) -> f32 {
    if p.is_nan() || q.is_nan() {
        f32::NAN
    } else if q > p {
        q
    } else {
        p
    }
}
fn fmin(p: f32, q: f32) -> f32 {
    if p.is_nan() || q.is_nan() {
        f32::NAN
    } else if q < p {
        q
    } else {
        p
    }
}

fn fold_float(ctx: &OpCtx, ts: &[&Tensor], op: Fold) -> Result<(Vec<usize>, Vec<f32>)> {
    let mut shape = ts[0].shape().to_vec();
    let mut acc: Vec<f32> = ts[0].to_f32_vec();
    for t in &ts[1..] {
        let v = t.to_f32_vec();
        let (s, r) = match op {
            Fold::Max => broadcast_map(ctx, &acc, &shape, &v, t.shape(), fmax)?,
            Fold::Min => broadcast_map(ctx, &acc, &shape, &v, t.shape(), fmin)?,
            Fold::Sum => broadcast_map(ctx, &acc, &shape, &v, t.shape(), |p, q| p + q)?,
        };
        shape = s;
        acc = r;
    }
    Ok((shape, acc))
}

fn fold_int<T: IntElem>(ctx: &OpCtx, ts: &[&Tensor], op: Fold) -> Result<(Vec<usize>, Vec<T>)> {
    let mut shape = ts[0].shape().to_vec();
    let mut acc: Vec<T> = ts[0].as_slice::<T>()?.to_vec();
    for t in &ts[1..] {
        let v = t.as_slice::<T>()?;
        let (s, r) = match op {
            Fold::Max => broadcast_map(ctx, &acc, &shape, v, t.shape(), |p, q| if q > p { q } else { p })?,
            Fold::Min => broadcast_map(ctx, &acc, &shape, v, t.shape(), |p, q| if q < p { q } else { p })?,
            Fold::Sum => broadcast_map(ctx, &acc, &shape, v, t.shape(), T::wadd)?,
        };
        shape = s;
        acc = r;
    }
    Ok((shape, acc))
}

fn eval_variadic(ctx: &OpCtx, inputs: &[Option<&Tensor>], op: Fold, mean: bool) -> Result<Vec<Tensor>> {
    let ts: Vec<&Tensor> = inputs
        .iter()
        .copied()
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| ctx.err(ErrorKind::InvalidModel, "an input is omitted"))?;
    let Some(first) = ts.first() else {
        return Err(ctx.err(ErrorKind::InvalidModel, "needs at least one input"));
    };
    let dt = first.dtype();
    for t in &ts {
        same_dtype(ctx, dt, t.dtype())?;
    }
    if !variadic_allowed(ctx, dt) {
        return Err(bad_type(ctx, "input", dt));
    }
    let out = match dt {
        DType::F32 | DType::F16 => {
            let (s, mut v) = fold_float(ctx, &ts, op)?;
            if mean {
                let k = ts.len() as f32;
                v.iter_mut().for_each(|x| *x /= k);
            }
            float_tensor(dt, s, v)?
        }
        DType::I8 => {
            let (s, v) = fold_int::<i8>(ctx, &ts, op)?;
            Tensor::from_vec(s, v)?
        }
        DType::U8 => {
            let (s, v) = fold_int::<u8>(ctx, &ts, op)?;
            Tensor::from_vec(s, v)?
        }
        DType::I32 => {
            let (s, v) = fold_int::<i32>(ctx, &ts, op)?;
            Tensor::from_vec(s, v)?
        }
        DType::I64 => {
            let (s, v) = fold_int::<i64>(ctx, &ts, op)?;
            Tensor::from_vec(s, v)?
        }
        DType::Bool => return Err(bad_type(ctx, "input", dt)),
    };
    Ok(vec![out])
}

fn eval_max(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    eval_variadic(ctx, inputs, Fold::Max, false)
}
fn eval_min(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    eval_variadic(ctx, inputs, Fold::Min, false)
}
fn eval_sum(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    eval_variadic(ctx, inputs, Fold::Sum, false)
}
fn eval_mean(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    eval_variadic(ctx, inputs, Fold::Sum, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::eval_node;
    use crate::Node;

    fn t<T: crate::Elem>(shape: &[usize], v: Vec<T>) -> Tensor {
        Tensor::from_vec(shape.to_vec(), v).unwrap()
    }
    fn run(op: &str, opset: i64, ins: &[&Tensor]) -> Result<Tensor> {
        let names: Vec<String> = (0..ins.len()).map(|i| format!("i{i}")).collect();
        let refs: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
        let node = Node::new("n", op, &refs, &["y"]);
        let inputs: Vec<Option<&Tensor>> = ins.iter().map(|t| Some(*t)).collect();
        Ok(eval_node(&node, opset, &inputs)?.remove(0))
    }

    #[test]
    fn add_broadcast_per_channel() {
        let a = t(&[1, 2, 2, 2], (0..8).map(|x| x as f32).collect());
        let b = t(&[1, 2, 1, 1], vec![10f32, 20.0]);
        let y = run("Add", 13, &[&a, &b]).unwrap();
        assert_eq!(y.shape(), &[1, 2, 2, 2]);
        assert_eq!(
            y.as_slice::<f32>().unwrap(),
            &[10., 11., 12., 13., 24., 25., 26., 27.]
        );
        // Reversed operand order, and both sides broadcasting.
        let y = run("Sub", 13, &[&b, &a]).unwrap();
        assert_eq!(y.as_slice::<f32>().unwrap()[4], 16.0);
        let c = t(&[3, 1], vec![1f32, 2., 3.]);
        let d = t(&[2], vec![10f32, 20.]);
        let y = run("Mul", 13, &[&c, &d]).unwrap();
        assert_eq!(y.shape(), &[3, 2]);
        assert_eq!(y.as_slice::<f32>().unwrap(), &[10., 20., 20., 40., 30., 60.]);
    }

    #[test]
    fn scalar_and_f16() {
        let a = t(
            &[3],
            vec![f16::from_f32(1.0), f16::from_f32(2.0), f16::from_f32(3.0)],
        );
        let b = Tensor::scalar(f16::from_f32(0.5));
        let y = run("Mul", 13, &[&a, &b]).unwrap();
        assert_eq!(y.to_f32_vec(), vec![0.5, 1.0, 1.5]);
    }

    #[test]
    fn int_div_truncates_and_zero_errors() {
        let a = t(&[4], vec![7i32, -7, 7, -7]);
        let b = t(&[4], vec![2i32, 2, -2, -2]);
        let y = run("Div", 13, &[&a, &b]).unwrap();
        assert_eq!(y.as_slice::<i32>().unwrap(), &[3, -3, -3, 3]);
        let z = t(&[1], vec![0i32]);
        let e = run("Div", 13, &[&a, &z]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidInput);
        // int8 only from opset 14.
        let c = t(&[1], vec![1i8]);
        assert_eq!(
            run("Add", 13, &[&c, &c]).unwrap_err().kind,
            ErrorKind::TypeMismatch
        );
        assert_eq!(run("Add", 14, &[&c, &c]).unwrap().as_slice::<i8>().unwrap(), &[2]);
        // Mixed dtypes.
        let f = t(&[1], vec![1f32]);
        assert_eq!(
            run("Add", 13, &[&f, &a]).unwrap_err().kind,
            ErrorKind::TypeMismatch
        );
    }

    #[test]
    fn shape_mismatch() {
        let a = t(&[2, 3], vec![0f32; 6]);
        let b = t(&[2], vec![0f32; 2]);
        assert_eq!(
            run("Add", 13, &[&a, &b]).unwrap_err().kind,
            ErrorKind::ShapeMismatch
        );
    }

    #[test]
    fn pow_types() {
        let a = t(&[3], vec![2f32, 3., 4.]);
        let e = t(&[1], vec![2i64]);
        assert_eq!(
            run("Pow", 13, &[&a, &e]).unwrap().as_slice::<f32>().unwrap(),
            &[4., 9., 16.]
        );
        // Before 12, exponent must have the base's type.
        assert_eq!(
            run("Pow", 11, &[&a, &e]).unwrap_err().kind,
            ErrorKind::TypeMismatch
        );
        let h = t(&[1], vec![0.5f32]);
        let y = run("Pow", 7, &[&a, &h]).unwrap();
        assert!((y.as_slice::<f32>().unwrap()[2] - 2.0).abs() < 1e-6);
    }

    #[test]
    fn unary_ops() {
        let a = t(&[4], vec![-1.5f32, -0.5, 0.5, 4.0]);
        let v = |op: &str| run(op, 13, &[&a]).unwrap().to_f32_vec();
        assert_eq!(v("Abs"), vec![1.5, 0.5, 0.5, 4.0]);
        assert_eq!(v("Neg"), vec![1.5, 0.5, -0.5, -4.0]);
        assert_eq!(v("Floor"), vec![-2.0, -1.0, 0.0, 4.0]);
        assert_eq!(v("Ceil"), vec![-1.0, -0.0, 1.0, 4.0]);
        assert_eq!(v("Reciprocal")[3], 0.25);
        assert_eq!(v("Sqrt")[3], 2.0);
        assert!((v("Exp")[3] - 54.59815).abs() < 1e-3);
        assert!((v("Log")[3] - 4f32.ln()).abs() < 1e-6);
        let erf = v("Erf");
        assert!((erf[0] + 0.966_105_16).abs() < 1e-6);
        assert!((erf[2] - 0.520_499_9).abs() < 1e-6);
        assert!((erf[3] - 0.999_999_98).abs() < 1e-6);
        let i = t(&[2], vec![-3i64, 4]);
        assert_eq!(run("Abs", 13, &[&i]).unwrap().as_slice::<i64>().unwrap(), &[3, 4]);
        assert_eq!(run("Sqrt", 13, &[&i]).unwrap_err().kind, ErrorKind::TypeMismatch);
    }

    #[test]
    fn erf_accuracy() {
        for (x, e) in [
            (0.1, 0.112_462_916_018_284_9),
            (1.0, 0.842_700_792_949_714_9),
            (3.0, 0.999_977_909_503_001_4),
        ] {
            assert!((erf(x) - e).abs() < 1e-13, "{x}");
            assert!((erf(-x) + e).abs() < 1e-13);
        }
    }

    #[test]
    fn comparisons_and_where() {
        let a = t(&[3], vec![1i64, 2, 3]);
        let b = Tensor::scalar(2i64);
        let r = |op| run(op, 13, &[&a, &b]).unwrap().into_vec::<bool>().unwrap();
        assert_eq!(r("Equal"), vec![false, true, false]);
        assert_eq!(r("Less"), vec![true, false, false]);
        assert_eq!(r("Greater"), vec![false, false, true]);
        assert_eq!(r("LessOrEqual"), vec![true, true, false]);
        assert_eq!(r("GreaterOrEqual"), vec![false, true, true]);
        let c = t(&[2, 1], vec![true, false]);
        let x = t(&[2], vec![1f32, 2.]);
        let y = Tensor::scalar(9f32);
        let w = run("Where", 13, &[&c, &x, &y]).unwrap();
        assert_eq!(w.shape(), &[2, 2]);
        assert_eq!(w.as_slice::<f32>().unwrap(), &[1., 2., 9., 9.]);
    }

    #[test]
    fn variadic() {
        let a = t(&[2], vec![1f32, 5.]);
        let b = t(&[2, 1], vec![3f32, 0.]);
        let c = Tensor::scalar(1f32);
        let mx = run("Max", 13, &[&a, &b, &c]).unwrap();
        assert_eq!(mx.shape(), &[2, 2]);
        assert_eq!(mx.as_slice::<f32>().unwrap(), &[3., 5., 1., 5.]);
        let mn = run("Min", 13, &[&a, &b]).unwrap();
        assert_eq!(mn.as_slice::<f32>().unwrap(), &[1., 3., 0., 0.]);
        let s = run("Sum", 13, &[&a, &b, &c]).unwrap();
        assert_eq!(s.as_slice::<f32>().unwrap(), &[5., 9., 2., 6.]);
        let m = run("Mean", 13, &[&a, &a]).unwrap();
        assert_eq!(m.as_slice::<f32>().unwrap(), &[1., 5.]);
        let i = t(&[2], vec![1i32, 7]);
        assert_eq!(run("Max", 11, &[&i]).unwrap_err().kind, ErrorKind::TypeMismatch);
        assert_eq!(
            run("Max", 12, &[&i, &i]).unwrap().as_slice::<i32>().unwrap(),
            &[1, 7]
        );
    }

    #[test]
    fn broadcast_general_matches_naive() {
        // [2,1,3,1] x [1,4,1,5]: every collapsing case.
        let sa = [2usize, 1, 3, 1];
        let sb = [4usize, 1, 5];
        let a: Vec<f32> = (0..6).map(|x| x as f32).collect();
        let b: Vec<f32> = (0..20).map(|x| (x * 100) as f32).collect();
        let ta = t(&sa, a.clone());
        let tb = t(&sb, b.clone());
        let y = run("Add", 13, &[&ta, &tb]).unwrap();
        assert_eq!(y.shape(), &[2, 4, 3, 5]);
        let v = y.as_slice::<f32>().unwrap();
        for i in 0..2 {
            for j in 0..4 {
                for k in 0..3 {
                    for l in 0..5 {
                        let want = a[i * 3 + k] + b[j * 5 + l];
                        assert_eq!(v[((i * 4 + j) * 3 + k) * 5 + l], want);
                    }
                }
            }
        }
    }

    #[test]
    fn inference() {
        use crate::ops::{lookup, InferInput, OpCtx};
        let node = Node::new("n", "Add", &["a", "b"], &["y"]);
        let ctx = OpCtx {
            node: &node,
            opset: 13,
        };
        let a = InferInput {
            ty: ValueType::new(
                DType::F32,
                vec![Dim::Sym("N".into()), Dim::Known(3), Dim::Known(1)],
            ),
            value: None,
        };
        let b = InferInput {
            ty: ValueType::known(DType::F32, &[3, 4]),
            value: None,
        };
        let out = (lookup("Add", "").unwrap().infer)(&ctx, &[Some(&a), Some(&b)]).unwrap();
        assert_eq!(
            out[0].shape,
            Some(vec![Dim::Sym("N".into()), Dim::Known(3), Dim::Known(4)])
        );
        let node = Node::new("n", "Less", &["a", "b"], &["y"]);
        let ctx = OpCtx {
            node: &node,
            opset: 13,
        };
        let out = (lookup("Less", "").unwrap().infer)(&ctx, &[Some(&a), Some(&b)]).unwrap();
        assert_eq!(out[0].dtype, DType::Bool);
    }
    use crate::Dim;
}
