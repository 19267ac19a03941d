//! Normalizations: `BatchNormalization` (inference mode) and
//! `InstanceNormalization`
//! (<https://onnx.ai/onnx/operators/onnx__BatchNormalization.html>,
//! <https://onnx.ai/onnx/operators/onnx__InstanceNormalization.html>).
//!
//! BatchNormalization evaluates `Y = (X - mean) / sqrt(var + epsilon) * scale + B`
//! with the running statistics; `momentum` is ignored. Training mode
//! (`training_mode = 1` from opset 14) and the training-only extra outputs
//! (running/saved mean and variance) are rejected as `UnsupportedOp`.

use super::conv::{f32_data, from_f32};
use super::{InferInput, OpCtx, OpDef};
use crate::{DType, Dim, ErrorKind, Result, Tensor, ValueType};

/// Ops of this family.
pub(crate) const OPS: &[OpDef] = &[
    OpDef {
        op_type: "BatchNormalization",
        domain: "",
        since: 1,
        infer: infer_batch_norm,
        eval: eval_batch_norm,
    },
    OpDef {
        op_type: "InstanceNormalization",
        domain: "",
        since: 1,
        infer: infer_instance_norm,
        eval: eval_instance_norm,
    },
];

fn check_float(ctx: &OpCtx, d: DType, what: &str) -> Result<()> {
    if d.is_float() {
        Ok(())
    } else {
        Err(ctx.err(
            ErrorKind::TypeMismatch,
            format!("{what} must be float or float16, got {d}"),
        ))
    }
}

/// Rejects training mode and its extra outputs.
fn check_inference_mode(ctx: &OpCtx) -> Result<()> {
    // BatchNormalization-6 (opset < 7) is in training mode unless `is_test = 1`.
    if ctx.opset < 7 && ctx.node.attr_int("is_test", 0)? == 0 {
        return Err(ctx
            .err(
                ErrorKind::UnsupportedOp,
                "is_test = 0 (training mode) is not supported (kiln evaluates inference only)",
            )
            .with_attr("is_test"));
    }
    if ctx.opset >= 14 && ctx.node.attr_int("training_mode", 0)? != 0 {
        return Err(ctx
            .err(
                ErrorKind::UnsupportedOp,
                "training_mode = 1 is not supported (kiln evaluates inference only)",
            )
            .with_attr("training_mode"));
    }
    if ctx.node.outputs.iter().skip(1).any(|o| !o.is_empty()) {
        return Err(ctx.err(
            ErrorKind::UnsupportedOp,
            "the running/saved mean and variance outputs exist only in training mode, which is not supported",
        ));
    }
    Ok(())
}

/// True when the pre-opset-9 `spatial = 0` mode (per-activation statistics) is on.
fn per_activation(ctx: &OpCtx) -> Result<bool> {
    Ok(ctx.opset < 9 && ctx.node.attr_int("spatial", 1)? == 0)
}

const BN_PARAMS: [&str; 4] = ["scale", "B", "mean", "var"];

fn infer_batch_norm(ctx: &OpCtx, inputs: &[Option<&InferInput>]) -> Result<Vec<ValueType>> {
    check_inference_mode(ctx)?;
    let x = ctx.infer_input(inputs, 0)?;
    check_float(ctx, x.ty.dtype, "input X")?;
    let spatial0 = per_activation(ctx)?;
    for (i, name) in BN_PARAMS.iter().enumerate() {
        let p = ctx.infer_input(inputs, i + 1)?;
        check_float(ctx, p.ty.dtype, name)?;
        if ctx.opset < 15 && p.ty.dtype != x.ty.dtype {
            return Err(ctx.err(
                ErrorKind::TypeMismatch,
                format!("{name} is {}, X is {}", p.ty.dtype, x.ty.dtype),
            ));
        }
        if let (Some(pd), Some(xd)) = (&p.ty.shape, &x.ty.shape) {
            if xd.len() < 2 {
                return Err(ctx.err(
                    ErrorKind::ShapeMismatch,
                    format!("input X must have rank >= 2, got rank {}", xd.len()),
                ));
            }
            if !spatial0 {
                let ok =
                    pd.len() == 1 && (pd[0].known().is_none() || xd[1].known().is_none() || pd[0] == xd[1]);
                if !ok {
                    return Err(ctx.err(
                        ErrorKind::ShapeMismatch,
                        format!("{name} must have shape [C] = [{}]", xd[1]),
                    ));
                }
            }
        }
    }
    Ok(vec![x.ty.clone()])
}

fn eval_batch_norm(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    check_inference_mode(ctx)?;
    let x = ctx.input(inputs, 0)?;
    let xs = x.shape();
    if xs.len() < 2 {
        return Err(ctx.err(
            ErrorKind::ShapeMismatch,
            format!("input X must have rank >= 2, got shape {xs:?}"),
        ));
    }
    let eps = ctx.node.attr_float("epsilon", 1e-5)?;
    let c = xs[1];
    let plane: usize = xs[2..].iter().product();
    let spatial0 = per_activation(ctx)?;
    // Statistics per channel, or per activation (C x spatial) with spatial = 0.
    let groups = if spatial0 { c * plane } else { c };
    let mut params = Vec::with_capacity(4);
    for (i, name) in BN_PARAMS.iter().enumerate() {
        let p = ctx.input(inputs, i + 1)?;
        if ctx.opset < 15 && p.dtype() != x.dtype() {
            return Err(ctx.err(
                ErrorKind::TypeMismatch,
                format!("{name} is {}, X is {}", p.dtype(), x.dtype()),
            ));
        }
        let shape_ok = if spatial0 {
            p.len() == groups
        } else {
            p.shape() == [c]
        };
        if !shape_ok {
            return Err(ctx.err(
                ErrorKind::ShapeMismatch,
                format!(
                    "{name} has shape {:?}, expected {groups} values (X is {xs:?})",
                    p.shape()
                ),
            ));
        }
        params.push(f32_data(ctx, p, name)?);
    }
    let (scale, bias, mean, var) = (&params[0], &params[1], &params[2], &params[3]);
    let a: Vec<f32> = (0..groups).map(|g| scale[g] / (var[g] + eps).sqrt()).collect();
    let b: Vec<f32> = (0..groups).map(|g| bias[g] - mean[g] * a[g]).collect();
    let xv = f32_data(ctx, x, "input X")?;
    let mut y = vec![0f32; xv.len()];
    if spatial0 {
        for (yn, xn) in y
            .chunks_exact_mut(groups.max(1))
            .zip(xv.chunks_exact(groups.max(1)))
        {
            for ((yv, xv), (a, b)) in yn.iter_mut().zip(xn).zip(a.iter().zip(&b)) {
                *yv = xv * a + b;
            }
        }
    } else if plane > 0 {
        for (i, (yp, xp)) in y.chunks_exact_mut(plane).zip(xv.chunks_exact(plane)).enumerate() {
            let ch = i % c;
            let (a, b) = (a[ch], b[ch]);
            for (yv, xv) in yp.iter_mut().zip(xp) {
                *yv = xv * a + b;
            }
        }
    }

    Ok(vec![from_f32(x.dtype(), xs.to_vec(), y)?])
}

fn infer_instance_norm(ctx: &OpCtx, inputs: &[Option<&InferInput>]) -> Result<Vec<ValueType>> {
    let x = ctx.infer_input(inputs, 0)?;
    check_float(ctx, x.ty.dtype, "input X")?;
    for (i, name) in ["scale", "B"].iter().enumerate() {
        let p = ctx.infer_input(inputs, i + 1)?;
        if p.ty.dtype != x.ty.dtype {
            return Err(ctx.err(
                ErrorKind::TypeMismatch,
                format!("{name} is {}, X is {}", p.ty.dtype, x.ty.dtype),
            ));
        }
        if let (Some(pd), Some(xd)) = (&p.ty.shape, &x.ty.shape) {
            if xd.len() < 3 {
                return Err(ctx.err(
                    ErrorKind::ShapeMismatch,
                    format!("input X must have rank >= 3, got rank {}", xd.len()),
                ));
            }
            let c: &Dim = &xd[1];
            if pd.len() != 1 || (pd[0].known().is_some() && c.known().is_some() && pd[0] != *c) {
                return Err(ctx.err(
                    ErrorKind::ShapeMismatch,
                    format!("{name} must have shape [C] = [{c}]"),
                ));
            }
        }
    }
    Ok(vec![x.ty.clone()])
}

fn eval_instance_norm(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = ctx.input(inputs, 0)?;
    let xs = x.shape();
    if xs.len() < 3 {
        return Err(ctx.err(
            ErrorKind::ShapeMismatch,
            format!("input X must have rank >= 3, got shape {xs:?}"),
        ));
    }
    let c = xs[1];
    let eps = ctx.node.attr_float("epsilon", 1e-5)? as f64;
    let mut params = Vec::with_capacity(2);
    for (i, name) in ["scale", "B"].iter().enumerate() {
        let p = ctx.input(inputs, i + 1)?;
        if p.dtype() != x.dtype() || p.shape() != [c] {
            return Err(ctx.err(
                ErrorKind::ShapeMismatch,
                format!(
                    "{name} must be a [{c}] {} tensor, got {} {:?}",
                    x.dtype(),
                    p.dtype(),
                    p.shape()
                ),
            ));
        }
        params.push(f32_data(ctx, p, name)?);
    }
    let plane: usize = xs[2..].iter().product();
    let xv = f32_data(ctx, x, "input X")?;
    let mut y = vec![0f32; xv.len()];
    if plane > 0 {
        for (i, (yp, xp)) in y.chunks_exact_mut(plane).zip(xv.chunks_exact(plane)).enumerate() {
            let ch = i % c;
            let mean = xp.iter().map(|&v| v as f64).sum::<f64>() / plane as f64;
            let var = xp.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / plane as f64;
            let a = params[0][ch] as f64 / (var + eps).sqrt();
            let (a, b, mean) = (a as f32, params[1][ch], mean as f32);
            for (yv, xv) in yp.iter_mut().zip(xp) {
                *yv = (xv - mean) * a + b;
            }
        }
    }
    Ok(vec![from_f32(x.dtype(), xs.to_vec(), y)?])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{f16, Attribute, Node};

    fn t(shape: &[usize], v: Vec<f32>) -> Tensor {
        Tensor::from_vec(shape.to_vec(), v).unwrap()
    }
    fn node(op: &str, outs: &[&str], attrs: &[(&str, Attribute)]) -> Node {
        let mut n = Node::new("n", op, &["x", "s", "b", "m", "v"], outs);
        for (k, v) in attrs {
            n = n.with_attr(k, v.clone());
        }
        n
    }
    fn bn(opset: i64, outs: &[&str], attrs: &[(&str, Attribute)], ins: &[&Tensor]) -> Result<Tensor> {
        let n = node("BatchNormalization", outs, attrs);
        let ctx = OpCtx { node: &n, opset };
        let ins: Vec<Option<&Tensor>> = ins.iter().map(|t| Some(*t)).collect();
        Ok(eval_batch_norm(&ctx, &ins)?.remove(0))
    }

    #[test]
    fn batch_norm_per_channel() {
        // ONNX backend test batchnorm_example.
        let x = t(&[1, 2, 1, 3], vec![-1., 0., 1., 2., 3., 4.]);
        let s = t(&[2], vec![1.0, 1.5]);
        let b = t(&[2], vec![0.0, 1.0]);
        let m = t(&[2], vec![0.0, 3.0]);
        let v = t(&[2], vec![1.0, 1.5]);
        let y = bn(15, &["y"], &[], &[&x, &s, &b, &m, &v])
            .unwrap()
            .into_vec::<f32>()
            .unwrap();
        let want = [-0.999995, 0., 0.999995, -0.22474074, 1., 2.2247407];
        assert!(y.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-5), "{y:?}");
        // epsilon, rank 2 input (N, C).
        let x = t(&[2, 2], vec![1., 2., 3., 4.]);
        let ones = t(&[2], vec![1., 1.]);
        let zeros = t(&[2], vec![0., 0.]);
        let eps = [("epsilon", Attribute::Float(3.0))];
        let y = bn(9, &["y"], &eps, &[&x, &ones, &zeros, &zeros, &ones])
            .unwrap()
            .into_vec::<f32>()
            .unwrap();
        assert_eq!(y, vec![0.5, 1., 1.5, 2.]);
    }

    #[test]
    fn batch_norm_spatial0_f16_and_errors() {
        // Opset 7 spatial = 0: statistics per activation [C, W].
        let x = t(&[2, 1, 2], vec![1., 2., 3., 4.]);
        let s = t(&[1, 2], vec![1., 2.]);
        let z = t(&[1, 2], vec![0., 0.]);
        let m = t(&[1, 2], vec![1., 0.]);
        let v = t(&[1, 2], vec![1., 1.]);
        let attrs = [("spatial", Attribute::Int(0)), ("epsilon", Attribute::Float(0.0))];
        let y = bn(7, &["y"], &attrs, &[&x, &s, &z, &m, &v])
            .unwrap()
            .into_vec::<f32>()
            .unwrap();
        assert_eq!(y, vec![0., 4., 2., 8.]);
        // f16 throughout.
        let h = |v: &[f32]| {
            Tensor::from_vec(
                vec![v.len()],
                v.iter().map(|&x| f16::from_f32(x)).collect::<Vec<_>>(),
            )
            .unwrap()
        };
        let xh = h(&[1., 2.]).reshape(vec![1, 2]).unwrap();
        let (o, zz) = (h(&[1., 1.]), h(&[0., 0.]));
        let y = bn(
            14,
            &["y"],
            &[("epsilon", Attribute::Float(0.0))],
            &[&xh, &o, &zz, &zz, &o],
        )
        .unwrap();
        assert_eq!((y.dtype(), y.to_f32_vec()), (DType::F16, vec![1., 2.]));
        // Errors: training mode, extra outputs, wrong param shapes, rank.
        let x = t(&[1, 2, 2], vec![0.; 4]);
        let p = t(&[2], vec![1., 1.]);
        let e = bn(
            14,
            &["y"],
            &[("training_mode", Attribute::Int(1))],
            &[&x, &p, &p, &p, &p],
        )
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::UnsupportedOp);
        let e = bn(9, &["y", "rm", "rv"], &[], &[&x, &p, &p, &p, &p]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::UnsupportedOp);
        assert!(bn(9, &["y", "", ""], &[], &[&x, &p, &p, &p, &p]).is_ok());
        let p3 = t(&[3], vec![1., 1., 1.]);
        assert_eq!(
            bn(9, &["y"], &[], &[&x, &p3, &p, &p, &p]).unwrap_err().kind,
            ErrorKind::ShapeMismatch
        );
        let v1 = t(&[2], vec![1., 1.]);
        assert_eq!(
            bn(9, &["y"], &[], &[&v1, &p, &p, &p, &p]).unwrap_err().kind,
            ErrorKind::ShapeMismatch
        );
        let n = node("BatchNormalization", &["y"], &[]);
        let ctx = OpCtx { node: &n, opset: 15 };
        let xi = InferInput {
            ty: ValueType::new(
                DType::F32,
                vec![Dim::Sym("N".into()), Dim::Known(2), Dim::Known(5)],
            ),
            value: None,
        };
        let pi = InferInput {
            ty: ValueType::known(DType::F32, &[2]),
            value: None,
        };
        let bad = InferInput {
            ty: ValueType::known(DType::F32, &[3]),
            value: None,
        };
        let ok = infer_batch_norm(&ctx, &[Some(&xi), Some(&pi), Some(&pi), Some(&pi), Some(&pi)]).unwrap();
        assert_eq!(ok[0], xi.ty);
        assert!(infer_batch_norm(&ctx, &[Some(&xi), Some(&pi), Some(&bad), Some(&pi), Some(&pi)]).is_err());
    }

    #[test]
    fn instance_norm() {
        // Per (n, c): [1, 3] -> mean 2, var 1 -> [-1, 1] (epsilon 0).
        let x = t(&[1, 2, 2], vec![1., 3., 10., 10.]);
        let s = t(&[2], vec![2., 1.]);
        let b = t(&[2], vec![1., 5.]);
        let n = node(
            "InstanceNormalization",
            &["y"],
            &[("epsilon", Attribute::Float(0.0))],
        );
        let ctx = OpCtx { node: &n, opset: 13 };
        let y = eval_instance_norm(&ctx, &[Some(&x), Some(&s), Some(&b)])
            .unwrap()
            .remove(0);
        // Channel 1 is constant: var 0, eps 0 -> 0/0; check channel 0 only.
        let y = y.into_vec::<f32>().unwrap();
        assert_eq!(&y[..2], &[-1., 3.]);
        let n = node("InstanceNormalization", &["y"], &[]);
        let ctx = OpCtx { node: &n, opset: 13 };
        let y = eval_instance_norm(&ctx, &[Some(&x), Some(&s), Some(&b)])
            .unwrap()
            .remove(0);
        assert_eq!(&y.into_vec::<f32>().unwrap()[2..], &[5., 5.]);
        let bad = t(&[3], vec![1., 1., 1.]);
        assert!(eval_instance_norm(&ctx, &[Some(&x), Some(&bad), Some(&b)]).is_err());
        let xi = InferInput {
            ty: ValueType::known(DType::F32, &[1, 2, 7]),
            value: None,
        };
        let pi = InferInput {
            ty: ValueType::known(DType::F32, &[2]),
            value: None,
        };
        assert_eq!(
            infer_instance_norm(&ctx, &[Some(&xi), Some(&pi), Some(&pi)]).unwrap()[0],
            xi.ty
        );
    }
}
