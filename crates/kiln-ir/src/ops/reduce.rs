//! Normalizations along an axis (`Softmax`, `LogSoftmax`) and reductions
//! (`ReduceMean`, `ReduceSum`, `ReduceMax`, `ReduceMin`, `ReduceProd`,
//! `ReduceSumSquare`, `ReduceL1`, `ReduceL2`, `ReduceLogSum`,
//! `ReduceLogSumExp`).
//!
//! Per-opset differences (ONNX spec):
//! - `Softmax`/`LogSoftmax` before opset 13 coerce the input to 2-D at `axis`
//!   (default 1) and normalize over the flattened trailing dims; from 13 they
//!   normalize along `axis` only (default -1). Both subtract the maximum first.
//! - Reductions take `axes` as an attribute, except `ReduceSum` from opset 13
//!   and all others from 18, where `axes` is an optional int64 input and
//!   `noop_with_empty_axes` (default 0) makes empty axes the identity.
//!   `keepdims` defaults to 1.
//!
//! Float reductions accumulate in f64; integer ones in wrapping i64 (integer
//! `ReduceMean` truncates). Reducing an empty set gives the identity of the
//! reduction (0 for sums, 1 for products, -inf/+inf for max/min, NaN mean).

use super::elementwise::{bad_type, float_tensor};
use super::{norm_axis, InferInput, OpCtx, OpDef};
use crate::{numel, DType, Dim, ErrorKind, Result, Tensor, TensorData, ValueType};

/// Ops of this family.
pub(crate) const OPS: &[OpDef] = &[
    def("Softmax", 1, infer_softmax, eval_softmax),
    def("LogSoftmax", 1, infer_softmax, eval_log_softmax),
    def("ReduceMean", 1, infer_reduce, eval_reduce),
    def("ReduceSum", 1, infer_reduce, eval_reduce),
    def("ReduceMax", 1, infer_reduce, eval_reduce),
    def("ReduceMin", 1, infer_reduce, eval_reduce),
    def("ReduceProd", 1, infer_reduce, eval_reduce),
    def("ReduceSumSquare", 1, infer_reduce, eval_reduce),
    def("ReduceL1", 1, infer_reduce, eval_reduce),
    def("ReduceL2", 1, infer_reduce, eval_reduce),
    def("ReduceLogSum", 1, infer_reduce, eval_reduce),
    def("ReduceLogSumExp", 1, infer_reduce, eval_reduce),
];

use super::op_def as def;

// ---------------------------------------------------------------------------
// Softmax / LogSoftmax

/// (outer, len, inner) of the softmax groups for `shape` at this opset.
fn softmax_split(ctx: &OpCtx, shape: &[usize]) -> Result<(usize, usize, usize)> {
    let r = shape.len();
    if ctx.opset < 13 {
        let axis = ctx.node.attr_int("axis", 1)?;
        let a = if axis < 0 { axis + r as i64 } else { axis };
        if a < 0 || a > r as i64 {
            return Err(ctx.attr_err("axis", format!("axis {axis} is out of range for rank {r}")));
        }
        let a = a as usize;
        Ok((numel(&shape[..a])?, numel(&shape[a..])?, 1))
    } else {
        let axis = ctx.node.attr_int("axis", -1)?;
        if r == 0 {
            return Err(ctx.attr_err("axis", "softmax of a rank-0 tensor"));
        }
        let a = norm_axis(ctx, "axis", axis, r)?;
        Ok((numel(&shape[..a])?, shape[a], numel(&shape[a + 1..])?))
    }
}

fn infer_softmax(ctx: &OpCtx, inputs: &[Option<&InferInput>]) -> Result<Vec<ValueType>> {
    let x = &ctx.infer_input(inputs, 0)?.ty;
    if !x.dtype.is_float() {
        return Err(bad_type(ctx, "input", x.dtype));
    }
    if let Some(r) = x.rank() {
        // Validate the axis against the rank (dims themselves do not matter).
        softmax_split(ctx, &vec![1; r])?;
    }
    Ok(vec![x.clone()])
}

fn softmax(ctx: &OpCtx, inputs: &[Option<&Tensor>], log: bool) -> Result<Vec<Tensor>> {
    let x = ctx.input(inputs, 0)?;
    if !x.dtype().is_float() {
        return Err(bad_type(ctx, "input", x.dtype()));
    }
    let (outer, len, inner) = softmax_split(ctx, x.shape())?;
    let mut v = x.to_f32_vec();
    if len > 0 && inner > 0 {
        for o in 0..outer {
            for i in 0..inner {
                let base = o * len * inner + i;
                let idx = (0..len).map(|k| base + k * inner);
                let m = idx
                    .clone()
                    .fold(f32::NEG_INFINITY, |m, j| if v[j] > m { v[j] } else { m });
                // All -inf (or NaN): fall back to 0 so that the result is NaN/uniform as numpy gives.
                let m = if m.is_finite() { m } else { 0.0 };
                let mut sum = 0.0f64;
                for j in idx.clone() {
                    let e = (v[j] - m).exp();
                    sum += e as f64;
                    if !log {
                        v[j] = e;
                    }
                }
                if log {
                    let ls = sum.ln() as f32;
                    for j in idx {
                        v[j] = v[j] - m - ls;
                    }
                } else {
                    let inv = (1.0 / sum) as f32;
                    for j in idx {
                        v[j] *= inv;
                    }
                }
            }
        }
    }
    Ok(vec![float_tensor(x.dtype(), x.shape().to_vec(), v)?])
}

fn eval_softmax(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    softmax(ctx, inputs, false)
}

fn eval_log_softmax(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    softmax(ctx, inputs, true)
}

// ---------------------------------------------------------------------------
// Reductions

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Red {
    Mean,
    Sum,
    Max,
    Min,
    Prod,
    SumSquare,
    L1,
    L2,
    LogSum,
    LogSumExp,
}

fn red_kind(ctx: &OpCtx) -> Result<Red> {
    Ok(match ctx.node.op_type.as_str() {
        "ReduceMean" => Red::Mean,
        "ReduceSum" => Red::Sum,
        "ReduceMax" => Red::Max,
        "ReduceMin" => Red::Min,
        "ReduceProd" => Red::Prod,
        "ReduceSumSquare" => Red::SumSquare,
        "ReduceL1" => Red::L1,
        "ReduceL2" => Red::L2,
        "ReduceLogSum" => Red::LogSum,
        "ReduceLogSumExp" => Red::LogSumExp,
        other => return Err(ctx.err(ErrorKind::Internal, format!("not a reduction: {other}"))),
    })
}

/// Whether `axes` is an input (true) or an attribute at this opset.
fn axes_from_input(ctx: &OpCtx, kind: Red) -> bool {
    ctx.opset >= 18 || kind == Red::Sum && ctx.opset >= 13
}

fn red_allowed(ctx: &OpCtx, kind: Red, dt: DType) -> bool {
    match dt {
        DType::F32 | DType::F16 => true,
        DType::I32 | DType::I64 => !matches!(kind, Red::L2 | Red::LogSum | Red::LogSumExp),
        DType::I8 | DType::U8 => matches!(kind, Red::Max | Red::Min) && ctx.opset >= 12,
        // ReduceMax-20 and ReduceMin-20 accept bool (max = any, min = all).
        DType::Bool => matches!(kind, Red::Max | Red::Min) && ctx.opset >= 20,
    }
}

/// What the reduction does: `None` = identity (no-op), else the sorted,
/// deduplicated axes to reduce.
fn resolve_axes(ctx: &OpCtx, kind: Red, axes: Option<Vec<i64>>, rank: usize) -> Result<Option<Vec<usize>>> {
    let noop = if axes_from_input(ctx, kind) {
        ctx.node.attr_int("noop_with_empty_axes", 0)? != 0
    } else {
        false
    };
    let axes = axes.unwrap_or_default();
    if axes.is_empty() {
        return Ok(if noop { None } else { Some((0..rank).collect()) });
    }
    let mut out = Vec::with_capacity(axes.len());
    for &a in &axes {
        let n = norm_axis(ctx, "axes", a, rank)?;
        if out.contains(&n) {
            return Err(ctx.attr_err("axes", format!("axis {a} is repeated in {axes:?}")));
        }
        out.push(n);
    }
    out.sort_unstable();
    Ok(Some(out))
}

fn infer_reduce(ctx: &OpCtx, inputs: &[Option<&InferInput>]) -> Result<Vec<ValueType>> {
    let kind = red_kind(ctx)?;
    let x = &ctx.infer_input(inputs, 0)?.ty;
    if !red_allowed(ctx, kind, x.dtype) {
        return Err(bad_type(ctx, "input", x.dtype));
    }
    let keep = ctx.node.attr_int("keepdims", 1)? != 0;
    let axes = if axes_from_input(ctx, kind) {
        match ctx.opt_infer_input(inputs, 1) {
            None => None,
            Some(a) => match &a.value {
                Some(v) => Some(
                    v.to_i64_vec()
                        .map_err(|e| ctx.err(ErrorKind::TypeMismatch, e.message))?,
                ),
                None => {
                    // Axes known only at run time.
                    let shape = match (&x.shape, keep) {
                        (Some(d), true) => Some((0..d.len()).map(|i| ctx.unknown_dim(0, i)).collect()),
                        (Some(d), false) => match a.ty.known_dims().as_deref() {
                            Some([k]) if *k > 0 && *k <= d.len() => {
                                Some((0..d.len() - k).map(|i| ctx.unknown_dim(0, i)).collect())
                            }
                            _ => None,
                        },
                        (None, _) => None,
                    };
                    return Ok(vec![ValueType {
                        dtype: x.dtype,
                        shape,
                    }]);
                }
            },
        }
    } else {
        ctx.node.attr_ints_opt("axes")?
    };
    let Some(dims) = &x.shape else {
        return Ok(vec![ValueType::unknown_rank(x.dtype)]);
    };
    let Some(axes) = resolve_axes(ctx, kind, axes, dims.len())? else {
        return Ok(vec![x.clone()]);
    };
    let mut out = Vec::with_capacity(dims.len());
    for (i, d) in dims.iter().enumerate() {
        if axes.contains(&i) {
            if keep {
                out.push(Dim::Known(1));
            }
        } else {
            out.push(d.clone());
        }
    }
    Ok(vec![ValueType::new(x.dtype, out)])
}

/// Input offsets of the groups: `kept[g] + red[j]` is element `j` of group `g`.
struct Groups {
    kept: Vec<usize>,
    red: Vec<usize>,
}

fn offsets(shape: &[usize], strides: &[usize], dims: &[usize]) -> Result<Vec<usize>> {
    let sub: Vec<usize> = dims.iter().map(|&d| shape[d]).collect();
    let n = numel(&sub)?;
    let mut out = Vec::with_capacity(n);
    if n == 0 {
        return Ok(out);
    }
    let mut idx = vec![0usize; sub.len()];
    let mut off = 0usize;
    for _ in 0..n {
        out.push(off);
        for j in (0..sub.len()).rev() {
            idx[j] += 1;
            off += strides[dims[j]];
            if idx[j] < sub[j] {
                break;
            }
            off -= strides[dims[j]] * sub[j];
            idx[j] = 0;
        }
    }
    Ok(out)
}

fn groups(shape: &[usize], axes: &[usize]) -> Result<Groups> {
    let st = crate::strides(shape);
    let kept: Vec<usize> = (0..shape.len()).filter(|i| !axes.contains(i)).collect();
    Ok(Groups {
        kept: offsets(shape, &st, &kept)?,
        red: offsets(shape, &st, axes)?,
    })
}

fn reduce_f64(kind: Red, vals: impl Iterator<Item = f64>, n: usize) -> f64 {
    match kind {
        Red::Sum => vals.sum(),
        Red::Mean => vals.sum::<f64>() / n as f64,
        Red::Max => vals.fold(f64::NEG_INFINITY, |m, x| if x > m || x.is_nan() { x } else { m }),
        Red::Min => vals.fold(f64::INFINITY, |m, x| if x < m || x.is_nan() { x } else { m }),
        Red::Prod => vals.product(),
        Red::SumSquare => vals.map(|x| x * x).sum(),
        Red::L1 => vals.map(f64::abs).sum(),
        Red::L2 => vals.map(|x| x * x).sum::<f64>().sqrt(),
        Red::LogSum => vals.sum::<f64>().ln(),
        Red::LogSumExp => {
            let v: Vec<f64> = vals.collect();
            let m = v
                .iter()
                .fold(f64::NEG_INFINITY, |m, &x| if x > m { x } else { m });
            if !m.is_finite() {
                return v.iter().map(|x| x.exp()).sum::<f64>().ln();
            }
            v.iter().map(|x| (x - m).exp()).sum::<f64>().ln() + m
        }
    }
}

fn reduce_i64(kind: Red, vals: impl Iterator<Item = i64>, n: usize) -> i64 {
    match kind {
        Red::Sum => vals.fold(0, i64::wrapping_add),
        Red::Mean => {
            let s = vals.fold(0, i64::wrapping_add);
            if n == 0 {
                0
            } else {
                s / n as i64
            }
        }
        Red::Max => vals.max().unwrap_or(i64::MIN),
        Red::Min => vals.min().unwrap_or(i64::MAX),
        Red::Prod => vals.fold(1, i64::wrapping_mul),
        Red::SumSquare => vals.fold(0, |a, x| a.wrapping_add(x.wrapping_mul(x))),
        Red::L1 => vals.fold(0, |a, x| a.wrapping_add(x.wrapping_abs())),
        // Rejected by `red_allowed` for integers.
        Red::L2 | Red::LogSum | Red::LogSumExp => 0,
    }
}

fn eval_reduce(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let kind = red_kind(ctx)?;
    let x = ctx.input(inputs, 0)?;
    if !red_allowed(ctx, kind, x.dtype()) {
        return Err(bad_type(ctx, "input", x.dtype()));
    }
    let keep = ctx.node.attr_int("keepdims", 1)? != 0;
    let axes = if axes_from_input(ctx, kind) {
        ctx.opt_input(inputs, 1)
            .map(|t| {
                t.to_i64_vec()
                    .map_err(|e| ctx.err(ErrorKind::TypeMismatch, e.message))
            })
            .transpose()?
    } else {
        ctx.node.attr_ints_opt("axes")?
    };
    let shape = x.shape();
    let Some(axes) = resolve_axes(ctx, kind, axes, shape.len())? else {
        return Ok(vec![x.clone()]);
    };
    let mut out_shape = Vec::with_capacity(shape.len());
    for (i, &d) in shape.iter().enumerate() {
        if axes.contains(&i) {
            if keep {
                out_shape.push(1);
            }
        } else {
            out_shape.push(d);
        }
    }
    let g = groups(shape, &axes)?;
    let n = g.red.len();
    let out = match x.data() {
        TensorData::F32(_) | TensorData::F16(_) => {
            let v = x.to_f32_vec();
            let r: Vec<f32> = g
                .kept
                .iter()
                .map(|&k| reduce_f64(kind, g.red.iter().map(|&j| v[k + j] as f64), n) as f32)
                .collect();
            float_tensor(x.dtype(), out_shape, r)?
        }
        _ => {
            let v = x.to_i64_vec()?;
            let r: Vec<i64> = g
                .kept
                .iter()
                .map(|&k| reduce_i64(kind, g.red.iter().map(|&j| v[k + j]), n))
                .collect();
            let t = Tensor::from_vec(out_shape, r)?;
            if x.dtype() == DType::I64 {
                t
            } else {
                t.cast(x.dtype())
            }
        }
    };
    Ok(vec![out])
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
            assert!((x - y).abs() < 1e-5, "{a:?} vs {b:?}");
        }
    }
    fn run(node: &Node, opset: i64, ins: &[Option<&Tensor>]) -> Result<Tensor> {
        Ok(eval_node(node, opset, ins)?.remove(0))
    }

    #[test]
    fn softmax_opset13_last_axis() {
        let x = t(&[2, 3], vec![1.0, 2.0, 3.0, 1000.0, 1000.0, 1000.0]);
        let node = Node::new("n", "Softmax", &["x"], &["y"]);
        let y = run(&node, 13, &[Some(&x)]).unwrap();
        let third = 1.0 / 3.0;
        close(
            &y.to_f32_vec(),
            &[0.090_030_57, 0.244_728_48, 0.665_240_9, third, third, third],
        );
        let ls = Node::new("n", "LogSoftmax", &["x"], &["y"]);
        let y = run(&ls, 13, &[Some(&x)]).unwrap();
        close(&y.to_f32_vec()[..3], &[-2.407_606, -1.407_606, -0.407_606]);
    }

    #[test]
    fn softmax_before_and_after_13() {
        // Shape [1, 2, 2], axis 1: before 13 the trailing 4 values form one group.
        let x = t(&[1, 2, 2], vec![0.0, 0.0, 0.0, 0.0]);
        let node = Node::new("n", "Softmax", &["x"], &["y"]).with_attr("axis", Attribute::Int(1));
        close(&run(&node, 11, &[Some(&x)]).unwrap().to_f32_vec(), &[0.25; 4]);
        close(&run(&node, 13, &[Some(&x)]).unwrap().to_f32_vec(), &[0.5; 4]);
        // Default axis before 13 is 1 (coerced to 2-D): [2, 2] normalizes rows.
        let x = t(&[2, 2], vec![0.0, 0.0, 5.0, 5.0]);
        let d = Node::new("n", "Softmax", &["x"], &["y"]);
        close(&run(&d, 7, &[Some(&x)]).unwrap().to_f32_vec(), &[0.5; 4]);
        let bad = Node::new("n", "Softmax", &["x"], &["y"]).with_attr("axis", Attribute::Int(3));
        assert_eq!(
            run(&bad, 13, &[Some(&x)]).unwrap_err().kind,
            ErrorKind::InvalidAttribute
        );
    }

    #[test]
    fn reduce_mean_attr_vs_input_axes() {
        let x = t(&[2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let attr = Node::new("n", "ReduceMean", &["x"], &["y"]).with_attr("axes", Attribute::Ints(vec![1]));
        let y = run(&attr, 13, &[Some(&x)]).unwrap();
        assert_eq!(y.shape(), &[2, 1]);
        close(&y.to_f32_vec(), &[2.0, 5.0]);
        let axes = Tensor::from_vec(vec![1], vec![-1i64]).unwrap();
        let inp =
            Node::new("n", "ReduceMean", &["x", "axes"], &["y"]).with_attr("keepdims", Attribute::Int(0));
        let y = run(&inp, 18, &[Some(&x), Some(&axes)]).unwrap();
        assert_eq!(y.shape(), &[2]);
        close(&y.to_f32_vec(), &[2.0, 5.0]);
        // No axes: reduce all, or no-op with noop_with_empty_axes.
        let all = Node::new("n", "ReduceMean", &["x"], &["y"]);
        let y = run(&all, 18, &[Some(&x)]).unwrap();
        assert_eq!(y.shape(), &[1, 1]);
        close(&y.to_f32_vec(), &[3.5]);
        let noop = all.clone().with_attr("noop_with_empty_axes", Attribute::Int(1));
        assert_eq!(run(&noop, 18, &[Some(&x)]).unwrap(), x);
        let dup =
            Node::new("n", "ReduceMean", &["x"], &["y"]).with_attr("axes", Attribute::Ints(vec![1, -1]));
        assert_eq!(
            run(&dup, 13, &[Some(&x)]).unwrap_err().kind,
            ErrorKind::InvalidAttribute
        );
    }

    #[test]
    fn reduce_sum_axes_input_from_13() {
        let x = t(&[2, 2, 2], (1..=8).map(|v| v as f32).collect());
        let axes = Tensor::from_vec(vec![2], vec![0i64, 2]).unwrap();
        let node =
            Node::new("n", "ReduceSum", &["x", "axes"], &["y"]).with_attr("keepdims", Attribute::Int(0));
        let y = run(&node, 13, &[Some(&x), Some(&axes)]).unwrap();
        assert_eq!(y.shape(), &[2]);
        close(&y.to_f32_vec(), &[1.0 + 2.0 + 5.0 + 6.0, 3.0 + 4.0 + 7.0 + 8.0]);
        let old = Node::new("n", "ReduceSum", &["x"], &["y"]).with_attr("axes", Attribute::Ints(vec![1]));
        let y = run(&old, 11, &[Some(&x)]).unwrap();
        assert_eq!(y.shape(), &[2, 1, 2]);
        close(&y.to_f32_vec(), &[4.0, 6.0, 12.0, 14.0]);
        let i = Tensor::from_vec(vec![3], vec![1i64, 2, 3]).unwrap();
        let y = run(&Node::new("n", "ReduceSum", &["x"], &["y"]), 13, &[Some(&i)]).unwrap();
        assert_eq!(y.as_slice::<i64>().unwrap(), &[6]);
    }

    #[test]
    fn reduce_max_min_and_others() {
        let x = t(&[2, 2], vec![1.0, -4.0, 3.0, 2.0]);
        let r = |op: &str| {
            let n = Node::new("n", op, &["x"], &["y"]).with_attr("axes", Attribute::Ints(vec![0]));
            run(&n, 13, &[Some(&x)]).unwrap().to_f32_vec()
        };
        close(&r("ReduceMax"), &[3.0, 2.0]);
        close(&r("ReduceMin"), &[1.0, -4.0]);
        close(&r("ReduceProd"), &[3.0, -8.0]);
        close(&r("ReduceSumSquare"), &[10.0, 20.0]);
        close(&r("ReduceL1"), &[4.0, 6.0]);
        close(&r("ReduceL2"), &[10f32.sqrt(), 20f32.sqrt()]);
        close(
            &r("ReduceLogSumExp"),
            &[(1f32.exp() + 3f32.exp()).ln(), ((-4f32).exp() + 2f32.exp()).ln()],
        );
    }

    #[test]
    fn reduce_inference() {
        use crate::ops::{lookup, InferInput, OpCtx};
        let node =
            Node::new("n", "ReduceMean", &["x"], &["y"]).with_attr("axes", Attribute::Ints(vec![2, 3]));
        let ctx = OpCtx {
            node: &node,
            opset: 13,
        };
        let x = InferInput {
            ty: ValueType::new(
                DType::F32,
                vec![
                    Dim::Sym("N".into()),
                    Dim::Known(8),
                    Dim::Known(4),
                    Dim::Sym("W".into()),
                ],
            ),
            value: None,
        };
        let out = (lookup("ReduceMean", "").unwrap().infer)(&ctx, &[Some(&x)]).unwrap();
        assert_eq!(
            out[0].shape,
            Some(vec![
                Dim::Sym("N".into()),
                Dim::Known(8),
                Dim::Known(1),
                Dim::Known(1)
            ])
        );
    }
}
