//! Activations: `Relu`, `Clip`, `Sigmoid`, `HardSigmoid`, `HardSwish`, `Tanh`,
//! `LeakyRelu`, `PRelu`, `Elu`, `Selu`, `Softplus`, `Gelu`.
//!
//! All are element-wise and shape-preserving. Float16 is computed through f32.
//! NaN inputs stay NaN (no `f32::max` shortcuts that would swallow them).
//! Per-opset differences: `Clip` takes `min`/`max` attributes before opset 11
//! and optional scalar inputs from 11 (integer types from 12); `Relu` accepts
//! signed integers from opset 14; `PRelu` broadcasts `slope` unidirectionally
//! to `X` (integer types from opset 16).

use super::elementwise::{bad_type, broadcast_map, erf, map_float};
use super::{broadcast_dims, InferInput, OpCtx, OpDef};
use crate::{f16, DType, ErrorKind, Result, Tensor, TensorData, ValueType};

/// Ops of this family.
pub(crate) const OPS: &[OpDef] = &[
    def("Relu", 1, infer_relu, eval_relu),
    def("Clip", 1, infer_clip, eval_clip),
    def("Sigmoid", 1, infer_float, eval_sigmoid),
    def("HardSigmoid", 1, infer_float, eval_hard_sigmoid),
    def("HardSwish", 14, infer_float, eval_hard_swish),
    def("Tanh", 1, infer_float, eval_tanh),
    def("LeakyRelu", 1, infer_float, eval_leaky_relu),
    def("PRelu", 1, infer_prelu, eval_prelu),
    def("Elu", 1, infer_float, eval_elu),
    def("Selu", 1, infer_float, eval_selu),
    def("Softplus", 1, infer_float, eval_softplus),
    def("Gelu", 20, infer_float, eval_gelu),
];

use super::op_def as def;

fn infer_float(ctx: &OpCtx, inputs: &[Option<&InferInput>]) -> Result<Vec<ValueType>> {
    let x = &ctx.infer_input(inputs, 0)?.ty;
    if !x.dtype.is_float() {
        return Err(bad_type(ctx, "input", x.dtype));
    }
    Ok(vec![x.clone()])
}

fn unary(ctx: &OpCtx, inputs: &[Option<&Tensor>], f: impl Fn(f32) -> f32) -> Result<Vec<Tensor>> {
    Ok(vec![map_float(ctx, ctx.input(inputs, 0)?, f)?])
}

// ---------------------------------------------------------------------------
// Relu

fn relu_allowed(ctx: &OpCtx, dt: DType) -> bool {
    dt.is_float() || ctx.opset >= 14 && matches!(dt, DType::I8 | DType::I32 | DType::I64)
}

fn infer_relu(ctx: &OpCtx, inputs: &[Option<&InferInput>]) -> Result<Vec<ValueType>> {
    let x = &ctx.infer_input(inputs, 0)?.ty;
    if !relu_allowed(ctx, x.dtype) {
        return Err(bad_type(ctx, "input", x.dtype));
    }
    Ok(vec![x.clone()])
}

fn eval_relu(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = ctx.input(inputs, 0)?;
    if !relu_allowed(ctx, x.dtype()) {
        return Err(bad_type(ctx, "input", x.dtype()));
    }
    let shape = x.shape().to_vec();
    let out = match x.data() {
        TensorData::I8(v) => Tensor::from_vec(shape, v.iter().map(|&a| a.max(0)).collect::<Vec<_>>())?,
        TensorData::I32(v) => Tensor::from_vec(shape, v.iter().map(|&a| a.max(0)).collect::<Vec<_>>())?,
        TensorData::I64(v) => Tensor::from_vec(shape, v.iter().map(|&a| a.max(0)).collect::<Vec<_>>())?,
        _ => map_float(ctx, x, |a| if a < 0.0 { 0.0 } else { a })?,
    };
    Ok(vec![out])
}

// ---------------------------------------------------------------------------
// Clip

fn clip_allowed(ctx: &OpCtx, dt: DType) -> bool {
    dt.is_float() || ctx.opset >= 12 && dt.is_int()
}

fn infer_clip(ctx: &OpCtx, inputs: &[Option<&InferInput>]) -> Result<Vec<ValueType>> {
    let x = &ctx.infer_input(inputs, 0)?.ty;
    if !clip_allowed(ctx, x.dtype) {
        return Err(bad_type(ctx, "input", x.dtype));
    }
    if ctx.opset >= 11 {
        for i in 1..3 {
            if let Some(b) = ctx.opt_infer_input(inputs, i) {
                if b.ty.dtype != x.dtype {
                    return Err(ctx.err(
                        ErrorKind::TypeMismatch,
                        format!("bound #{i} has type {}, input has {}", b.ty.dtype, x.dtype),
                    ));
                }
            }
        }
    }
    Ok(vec![x.clone()])
}

/// The scalar value of an optional Clip bound input (opset >= 11).
fn clip_bound(ctx: &OpCtx, inputs: &[Option<&Tensor>], i: usize, x: &Tensor) -> Result<Option<Tensor>> {
    let Some(b) = ctx.opt_input(inputs, i) else {
        return Ok(None);
    };
    if b.dtype() != x.dtype() {
        return Err(ctx.err(
            ErrorKind::TypeMismatch,
            format!("bound #{i} has type {}, input has {}", b.dtype(), x.dtype()),
        ));
    }
    if b.len() != 1 {
        return Err(ctx.err(
            ErrorKind::ShapeMismatch,
            format!("bound #{i} must be a scalar, got shape {:?}", b.shape()),
        ));
    }
    Ok(Some(b.clone()))
}

fn clip_int<T: Copy + PartialOrd + crate::Elem>(v: &[T], lo: Option<T>, hi: Option<T>) -> Vec<T> {
    v.iter()
        .map(|&a| {
            let a = match lo {
                Some(l) if a < l => l,
                _ => a,
            };
            match hi {
                Some(h) if a > h => h,
                _ => a,
            }
        })
        .collect()
}

fn eval_clip(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = ctx.input(inputs, 0)?;
    if !clip_allowed(ctx, x.dtype()) {
        return Err(bad_type(ctx, "input", x.dtype()));
    }
    if ctx.opset < 11 {
        let lo = ctx.node.attr_float("min", f32::NEG_INFINITY)?;
        let hi = ctx.node.attr_float("max", f32::INFINITY)?;
        return unary(ctx, inputs, |a| clip_f(a, lo, hi));
    }
    let lo = clip_bound(ctx, inputs, 1, x)?;
    let hi = clip_bound(ctx, inputs, 2, x)?;
    let shape = x.shape().to_vec();
    macro_rules! int_case {
        ($v:expr, $t:ty) => {{
            let l = lo
                .as_ref()
                .map(|t| t.as_slice::<$t>().map(|s| s[0]))
                .transpose()?;
            let h = hi
                .as_ref()
                .map(|t| t.as_slice::<$t>().map(|s| s[0]))
                .transpose()?;
            Tensor::from_vec(shape, clip_int($v, l, h))?
        }};
    }
    let out = match x.data() {
        TensorData::I8(v) => int_case!(v, i8),
        TensorData::U8(v) => int_case!(v, u8),
        TensorData::I32(v) => int_case!(v, i32),
        TensorData::I64(v) => int_case!(v, i64),
        _ => {
            let l = lo.map(|t| t.to_f32_vec()[0]).unwrap_or(f32::NEG_INFINITY);
            let h = hi.map(|t| t.to_f32_vec()[0]).unwrap_or(f32::INFINITY);
            map_float(ctx, x, |a| clip_f(a, l, h))?
        }
    };
    Ok(vec![out])
}

/// `min(max(a, lo), hi)` keeping NaN; when `lo > hi` every value becomes `hi`.
fn clip_f(a: f32, lo: f32, hi: f32) -> f32 {
    let a = if a < lo { lo } else { a };
    if a > hi {
        hi
    } else {
        a
    }
}

// ---------------------------------------------------------------------------
// Sigmoid family.

/// Logistic sigmoid, stable for large |x| (never evaluates `exp` of a large
/// positive number).
pub(crate) fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

fn eval_sigmoid(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    unary(ctx, inputs, sigmoid)
}

fn eval_hard_sigmoid(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let alpha = ctx.node.attr_float("alpha", 0.2)?;
    let beta = ctx.node.attr_float("beta", 0.5)?;
    unary(ctx, inputs, |x| clip_f(alpha * x + beta, 0.0, 1.0))
}

fn eval_hard_swish(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    unary(ctx, inputs, |x| x * clip_f(x / 6.0 + 0.5, 0.0, 1.0))
}

fn eval_tanh(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    unary(ctx, inputs, f32::tanh)
}

fn eval_leaky_relu(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let alpha = ctx.node.attr_float("alpha", 0.01)?;
    unary(ctx, inputs, |x| if x < 0.0 { alpha * x } else { x })
}

fn eval_elu(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let alpha = ctx.node.attr_float("alpha", 1.0)?;
    unary(ctx, inputs, |x| if x < 0.0 { alpha * x.exp_m1() } else { x })
}

fn eval_selu(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let alpha = ctx.node.attr_float("alpha", 1.673_263_2)?;
    let gamma = ctx.node.attr_float("gamma", 1.050_701)?;
    unary(ctx, inputs, |x| {
        if x > 0.0 {
            gamma * x
        } else {
            gamma * (alpha * x.exp() - alpha)
        }
    })
}

/// `ln(1 + e^x)`, stable for large |x|.
fn softplus(x: f32) -> f32 {
    if x > 0.0 {
        x + (-x).exp().ln_1p()
    } else {
        x.exp().ln_1p()
    }
}

fn eval_softplus(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    unary(ctx, inputs, softplus)
}

fn eval_gelu(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let approx = ctx.node.attr_string("approximate", "none")?;
    match approx.as_str() {
        "none" => unary(ctx, inputs, |x| {
            let x = x as f64;
            (0.5 * x * (1.0 + erf(x * std::f64::consts::FRAC_1_SQRT_2))) as f32
        }),
        "tanh" => unary(ctx, inputs, |x| {
            let x = x as f64;
            let k = (2.0 / std::f64::consts::PI).sqrt();
            (0.5 * x * (1.0 + (k * (x + 0.044715 * x * x * x)).tanh())) as f32
        }),
        other => Err(ctx.attr_err("approximate", format!("expected 'none' or 'tanh', got '{other}'"))),
    }
}

// ---------------------------------------------------------------------------
// PRelu

fn prelu_allowed(ctx: &OpCtx, dt: DType) -> bool {
    dt.is_float() || ctx.opset >= 16 && matches!(dt, DType::I32 | DType::I64)
}

fn infer_prelu(ctx: &OpCtx, inputs: &[Option<&InferInput>]) -> Result<Vec<ValueType>> {
    let x = &ctx.infer_input(inputs, 0)?.ty;
    let s = &ctx.infer_input(inputs, 1)?.ty;
    if s.dtype != x.dtype {
        return Err(ctx.err(
            ErrorKind::TypeMismatch,
            format!("slope has type {}, X has {}", s.dtype, x.dtype),
        ));
    }
    if !prelu_allowed(ctx, x.dtype) {
        return Err(bad_type(ctx, "input", x.dtype));
    }
    if let (Some(xs), Some(ss)) = (&x.shape, &s.shape) {
        let ss = &prelu6_slope_shape(ctx, xs, ss);
        let b = broadcast_dims(xs, ss).map_err(|e| ctx.err(ErrorKind::ShapeMismatch, e.message))?;
        if b.len() != xs.len() {
            return Err(ctx.err(
                ErrorKind::ShapeMismatch,
                "slope has a higher rank than X (broadcasting is unidirectional)",
            ));
        }
    }
    Ok(vec![x.clone()])
}

/// `PRelu-6` (opset < 7): a 1-D slope of `C > 1` values, `C` = X's dim 1,
/// is per channel (dim 1), not broadcast from the trailing dim; the slope's
/// shape as kiln broadcasts it: `[C, 1, ..., 1]`. Otherwise the shape as is.
fn prelu6_slope_shape<D: Clone + PartialEq + From<usize>>(ctx: &OpCtx, xs: &[D], ss: &[D]) -> Vec<D> {
    if ctx.opset < 7 && ss.len() == 1 && xs.len() >= 2 && ss[0] == xs[1] && ss[0] != D::from(1) {
        let mut v = vec![ss[0].clone()];
        v.resize(xs.len() - 1, D::from(1));
        v
    } else {
        ss.to_vec()
    }
}

fn eval_prelu(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = ctx.input(inputs, 0)?;
    let s = ctx.input(inputs, 1)?;
    if s.dtype() != x.dtype() {
        return Err(ctx.err(
            ErrorKind::TypeMismatch,
            format!("slope has type {}, X has {}", s.dtype(), x.dtype()),
        ));
    }
    if !prelu_allowed(ctx, x.dtype()) {
        return Err(bad_type(ctx, "input", x.dtype()));
    }
    let xs = x.shape();
    let ss6: Vec<usize> = prelu6_slope_shape(ctx, xs, s.shape());
    let ss = ss6.as_slice();
    let (shape, data) = match (x.data(), s.data()) {
        (TensorData::F32(a), TensorData::F32(b)) => {
            let (sh, v) = broadcast_map(ctx, a, xs, b, ss, |p, q| if p < 0.0 { p * q } else { p })?;
            (sh, TensorData::F32(v))
        }
        (TensorData::F16(_), TensorData::F16(_)) => {
            let (a, b) = (x.to_f32_vec(), s.to_f32_vec());
            let (sh, v) = broadcast_map(ctx, &a, xs, &b, ss, |p, q| if p < 0.0 { p * q } else { p })?;
            (sh, TensorData::F16(v.into_iter().map(f16::from_f32).collect()))
        }
        (TensorData::I32(a), TensorData::I32(b)) => {
            let (sh, v) = broadcast_map(
                ctx,
                a,
                xs,
                b,
                ss,
                |p, q| if p < 0 { p.wrapping_mul(q) } else { p },
            )?;
            (sh, TensorData::I32(v))
        }
        (TensorData::I64(a), TensorData::I64(b)) => {
            let (sh, v) = broadcast_map(
                ctx,
                a,
                xs,
                b,
                ss,
                |p, q| if p < 0 { p.wrapping_mul(q) } else { p },
            )?;
            (sh, TensorData::I64(v))
        }
        _ => return Err(bad_type(ctx, "input", x.dtype())),
    };
    if shape != xs {
        return Err(ctx.err(
            ErrorKind::ShapeMismatch,
            format!("slope {ss:?} does not broadcast unidirectionally to X {xs:?}"),
        ));
    }
    Ok(vec![Tensor::new(shape, data)?])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::eval_node;
    use crate::{Attribute, Node};

    fn t(shape: &[usize], v: Vec<f32>) -> Tensor {
        Tensor::from_vec(shape.to_vec(), v).unwrap()
    }
    fn run(node: Node, opset: i64, ins: &[Option<&Tensor>]) -> Result<Vec<f32>> {
        Ok(eval_node(&node, opset, ins)?.remove(0).to_f32_vec())
    }
    fn close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-5, "{a:?} vs {b:?}");
        }
    }
    fn n(op: &str) -> Node {
        Node::new("n", op, &["x"], &["y"])
    }

    #[test]
    fn relu_and_int_relu() {
        let x = t(&[3], vec![-1.0, 0.0, 2.0]);
        close(&run(n("Relu"), 13, &[Some(&x)]).unwrap(), &[0.0, 0.0, 2.0]);
        let i = Tensor::from_vec(vec![2], vec![-3i32, 3]).unwrap();
        assert!(run(n("Relu"), 13, &[Some(&i)]).is_err());
        close(&run(n("Relu"), 14, &[Some(&i)]).unwrap(), &[0.0, 3.0]);
    }

    #[test]
    fn clip_attribute_form() {
        let x = t(&[4], vec![-2.0, -0.5, 0.5, 2.0]);
        let node = n("Clip")
            .with_attr("min", Attribute::Float(-1.0))
            .with_attr("max", Attribute::Float(1.0));
        close(&run(node, 7, &[Some(&x)]).unwrap(), &[-1.0, -0.5, 0.5, 1.0]);
        let node = n("Clip").with_attr("max", Attribute::Float(0.0));
        close(&run(node, 10, &[Some(&x)]).unwrap(), &[-2.0, -0.5, 0.0, 0.0]);
    }

    #[test]
    fn clip_input_form() {
        let x = t(&[4], vec![-2.0, -0.5, 0.5, 2.0]);
        let lo = Tensor::scalar(-1.0f32);
        let hi = Tensor::scalar(1.0f32);
        let node = Node::new("n", "Clip", &["x", "lo", "hi"], &["y"]);
        close(
            &run(node.clone(), 13, &[Some(&x), Some(&lo), Some(&hi)]).unwrap(),
            &[-1.0, -0.5, 0.5, 1.0],
        );
        // Omitted min (empty name), max only.
        let node2 = Node::new("n", "Clip", &["x", "", "hi"], &["y"]);
        close(
            &run(node2, 11, &[Some(&x), None, Some(&hi)]).unwrap(),
            &[-2.0, -0.5, 0.5, 1.0],
        );
        // No bounds: identity; attributes are ignored from 11.
        let node3 = n("Clip").with_attr("max", Attribute::Float(0.0));
        close(&run(node3, 11, &[Some(&x)]).unwrap(), &[-2.0, -0.5, 0.5, 2.0]);
        // Integer clip from 12.
        let xi = Tensor::from_vec(vec![3], vec![-5i64, 0, 5]).unwrap();
        let li = Tensor::scalar(-1i64);
        let y = eval_node(&node, 12, &[Some(&xi), Some(&li), None]).unwrap();
        assert_eq!(y[0].as_slice::<i64>().unwrap(), &[-1, 0, 5]);
        // Mismatched bound type.
        assert!(run(node, 13, &[Some(&x), Some(&li), None]).is_err());
    }

    #[test]
    fn sigmoid_family() {
        let x = t(&[5], vec![-100.0, -1.0, 0.0, 1.0, 100.0]);
        let s = run(n("Sigmoid"), 13, &[Some(&x)]).unwrap();
        close(&s, &[0.0, 0.268_941_43, 0.5, 0.731_058_6, 1.0]);
        assert!(s.iter().all(|v| v.is_finite()));
        close(
            &run(n("HardSigmoid"), 13, &[Some(&x)]).unwrap(),
            &[0.0, 0.3, 0.5, 0.7, 1.0],
        );
        close(
            &run(n("HardSwish"), 14, &[Some(&x)]).unwrap(),
            &[0.0, -1.0 / 3.0, 0.0, 2.0 / 3.0, 100.0],
        );
        assert!(run(n("HardSwish"), 13, &[Some(&x)]).is_err());
        close(
            &run(n("Tanh"), 13, &[Some(&x)]).unwrap(),
            &[-1.0, -0.761_594_2, 0.0, 0.761_594_2, 1.0],
        );
        let sp = run(n("Softplus"), 13, &[Some(&x)]).unwrap();
        close(
            &sp,
            &[0.0, 0.313_261_7, std::f32::consts::LN_2, 1.313_261_7, 100.0],
        );
    }

    #[test]
    fn relu_variants() {
        let x = t(&[3], vec![-2.0, 0.0, 3.0]);
        close(&run(n("LeakyRelu"), 13, &[Some(&x)]).unwrap(), &[-0.02, 0.0, 3.0]);
        let lr = n("LeakyRelu").with_attr("alpha", Attribute::Float(0.5));
        close(&run(lr, 13, &[Some(&x)]).unwrap(), &[-1.0, 0.0, 3.0]);
        close(
            &run(n("Elu"), 13, &[Some(&x)]).unwrap(),
            &[(-2f32).exp() - 1.0, 0.0, 3.0],
        );
        close(
            &run(n("Selu"), 13, &[Some(&x)]).unwrap(),
            &[1.050_701 * 1.673_263_2 * ((-2f32).exp() - 1.0), 0.0, 3.152_103],
        );
        let g = run(n("Gelu"), 20, &[Some(&x)]).unwrap();
        close(&g, &[-0.045_500_26, 0.0, 2.995_950_5]);
        let gt = n("Gelu").with_attr("approximate", Attribute::String(b"tanh".to_vec()));
        close(
            &run(gt, 20, &[Some(&x)]).unwrap(),
            &[-0.045_402_3, 0.0, 2.996_362_7],
        );
    }

    #[test]
    fn prelu_unidirectional() {
        let x = t(&[1, 2, 2], vec![-1.0, 1.0, -2.0, 2.0]);
        let s = t(&[2, 1], vec![0.1, 0.5]);
        let node = Node::new("n", "PRelu", &["x", "s"], &["y"]);
        close(
            &run(node.clone(), 13, &[Some(&x), Some(&s)]).unwrap(),
            &[-0.1, 1.0, -1.0, 2.0],
        );
        // A slope that would grow X is rejected.
        let big = t(&[2, 2, 2], vec![0.0; 8]);
        let e = run(node, 13, &[Some(&x), Some(&big)]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::ShapeMismatch);
    }
}
