//! Matrix products: `MatMul` (NumPy `matmul` semantics) and `Gemm`
//! (<https://onnx.ai/onnx/operators/onnx__MatMul.html>,
//! <https://onnx.ai/onnx/operators/onnx__Gemm.html>).
//!
//! Float (f32, f16 through f32) products use the blocked GEMM of
//! [`super::linalg`]; MatMul on int32/int64 is a plain triple loop with
//! wrapping arithmetic.
//!
//! The shape rules (`matmul_out_dims`, `matmul_shape`) and the integer
//! product (`int_matmul`) are shared with `MatMulInteger` and
//! `QLinearMatMul` (`quant.rs`).

use super::conv::{check_out_size, f32_data, from_f32};
use super::linalg::{gemm_acc, MatRef};
use super::{broadcast_dims, broadcast_shapes, InferInput, OpCtx, OpDef};
use crate::{DType, Dim, ErrorKind, Result, Tensor, TensorData, ValueType};

/// Ops of this family.
pub(crate) const OPS: &[OpDef] = &[
    OpDef {
        op_type: "MatMul",
        domain: "",
        since: 1,
        infer: infer_matmul,
        eval: eval_matmul,
    },
    OpDef {
        op_type: "Gemm",
        domain: "",
        since: 1,
        infer: infer_gemm,
        eval: eval_gemm,
    },
];

// ---------------------------------------------------------------------------
// MatMul.

fn check_matmul_dtype(ctx: &OpCtx, a: DType, b: DType) -> Result<()> {
    if a != b {
        return Err(ctx.err(
            ErrorKind::TypeMismatch,
            format!("A is {a}, B is {b}; MatMul needs equal element types"),
        ));
    }
    if !matches!(a, DType::F32 | DType::F16 | DType::I32 | DType::I64) {
        return Err(ctx.err(
            ErrorKind::TypeMismatch,
            format!("MatMul supports float, float16, int32 and int64, got {a}"),
        ));
    }
    Ok(())
}

fn infer_matmul(ctx: &OpCtx, inputs: &[Option<&InferInput>]) -> Result<Vec<ValueType>> {
    let a = ctx.infer_input(inputs, 0)?;
    let b = ctx.infer_input(inputs, 1)?;
    check_matmul_dtype(ctx, a.ty.dtype, b.ty.dtype)?;
    let dtype = a.ty.dtype;
    Ok(vec![match matmul_out_dims(ctx, &a.ty, &b.ty)? {
        Some(dims) => ValueType::new(dtype, dims),
        None => ValueType::unknown_rank(dtype),
    }])
}

/// Static output dims of a NumPy `matmul` of A and B (dtypes not checked);
/// `None` when a rank is unknown.
pub(crate) fn matmul_out_dims(ctx: &OpCtx, a: &ValueType, b: &ValueType) -> Result<Option<Vec<Dim>>> {
    let (Some(ad), Some(bd)) = (&a.shape, &b.shape) else {
        return Ok(None);
    };
    if ad.is_empty() || bd.is_empty() {
        return Err(ctx.err(ErrorKind::ShapeMismatch, "MatMul inputs must have rank >= 1"));
    }
    let (ka, kb) = (
        &ad[ad.len() - 1],
        if bd.len() == 1 { &bd[0] } else { &bd[bd.len() - 2] },
    );
    if let (Some(x), Some(y)) = (ka.known(), kb.known()) {
        if x != y {
            return Err(ctx.err(
                ErrorKind::ShapeMismatch,
                format!("inner dimensions differ: A is [.., {x}], B is [{y}, ..]"),
            ));
        }
    }
    let ab: &[Dim] = if ad.len() >= 2 { &ad[..ad.len() - 2] } else { &[] };
    let bb: &[Dim] = if bd.len() >= 2 { &bd[..bd.len() - 2] } else { &[] };
    let mut out = broadcast_dims(ab, bb).map_err(|e| ctx.err(ErrorKind::ShapeMismatch, e.message))?;
    if ad.len() >= 2 {
        out.push(ad[ad.len() - 2].clone());
    }
    if bd.len() >= 2 {
        out.push(bd[bd.len() - 1].clone());
    }
    Ok(Some(out))
}

/// Shapes of a MatMul: broadcast batch dims, `m`, `k`, `n`, output shape.
pub(crate) struct MatMulShape {
    /// Broadcast batch dims.
    pub batch: Vec<usize>,
    /// Rows of A (1 for a 1-D A).
    pub m: usize,
    /// Inner dimension.
    pub k: usize,
    /// Columns of B (1 for a 1-D B).
    pub n: usize,
    /// A's own batch dims.
    pub a_batch: Vec<usize>,
    /// B's own batch dims.
    pub b_batch: Vec<usize>,
    /// Output shape.
    pub out: Vec<usize>,
}

/// The shapes of a NumPy `matmul` of concrete shapes `a` and `b`.
///
/// Errors: `ShapeMismatch` (rank 0, inner dims, batch broadcast),
/// `LimitExceeded` for a huge output.
pub(crate) fn matmul_shape(ctx: &OpCtx, a: &[usize], b: &[usize]) -> Result<MatMulShape> {
    if a.is_empty() || b.is_empty() {
        return Err(ctx.err(ErrorKind::ShapeMismatch, "MatMul inputs must have rank >= 1"));
    }
    let (m, k) = if a.len() == 1 {
        (1, a[0])
    } else {
        (a[a.len() - 2], a[a.len() - 1])
    };
    let (kb, n) = if b.len() == 1 {
        (b[0], 1)
    } else {
        (b[b.len() - 2], b[b.len() - 1])
    };
    if k != kb {
        return Err(ctx.err(
            ErrorKind::ShapeMismatch,
            format!("inner dimensions differ: A is {a:?}, B is {b:?}"),
        ));
    }
    let a_batch = a[..a.len().saturating_sub(2)].to_vec();
    let b_batch = b[..b.len().saturating_sub(2)].to_vec();
    let batch =
        broadcast_shapes(&a_batch, &b_batch).map_err(|e| ctx.err(ErrorKind::ShapeMismatch, e.message))?;
    let mut out = batch.clone();
    if a.len() >= 2 {
        out.push(m);
    }
    if b.len() >= 2 {
        out.push(n);
    }
    check_out_size(ctx, &out)?;
    Ok(MatMulShape {
        batch,
        m,
        k,
        n,
        a_batch,
        b_batch,
        out,
    })
}

/// Element offsets (in matrices) of every broadcast batch index into an
/// operand with batch dims `src` (right-aligned against `batch`).
pub(crate) fn batch_offsets(batch: &[usize], src: &[usize]) -> Vec<usize> {
    let total: usize = batch.iter().product();
    let r = batch.len();
    // Stride (in matrices) of each broadcast batch axis in the operand.
    let mut strides = vec![0usize; r];
    let mut acc = 1usize;
    for i in (0..r).rev() {
        let j = i as isize - (r - src.len()) as isize;
        if j >= 0 {
            let d = src[j as usize];
            strides[i] = if d == 1 { 0 } else { acc };
            acc *= d;
        }
    }
    let mut offs = Vec::with_capacity(total);
    let mut idx = vec![0usize; r];
    for _ in 0..total {
        offs.push(idx.iter().zip(&strides).map(|(i, s)| i * s).sum());
        for ax in (0..r).rev() {
            idx[ax] += 1;
            if idx[ax] < batch[ax] {
                break;
            }
            idx[ax] = 0;
        }
    }
    offs
}

fn eval_matmul(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let a = ctx.input(inputs, 0)?;
    let b = ctx.input(inputs, 1)?;
    check_matmul_dtype(ctx, a.dtype(), b.dtype())?;
    let sh = matmul_shape(ctx, a.shape(), b.shape())?;
    let (m, k, n) = (sh.m, sh.k, sh.n);
    let a_off = batch_offsets(&sh.batch, &sh.a_batch);
    let b_off = batch_offsets(&sh.batch, &sh.b_batch);
    let out_len: usize = sh.out.iter().product();
    let data = match (a.data(), b.data()) {
        (TensorData::I64(av), TensorData::I64(bv)) => {
            TensorData::I64(int_matmul(av, bv, &a_off, &b_off, m, k, n, out_len))
        }
        (TensorData::I32(av), TensorData::I32(bv)) => {
            TensorData::I32(int_matmul(av, bv, &a_off, &b_off, m, k, n, out_len))
        }
        _ => {
            let av = f32_data(ctx, a, "A")?;
            let bv = f32_data(ctx, b, "B")?;
            let mut y = vec![0f32; out_len];
            let b_shared = sh.b_batch.iter().product::<usize>() == 1;
            let a_full = sh.a_batch.iter().product::<usize>() == a_off.len();
            if b_shared && a_full && !a_off.is_empty() {
                // One GEMM over all batches stacked along M.
                let rows = a_off.len() * m;
                gemm_acc(
                    1.0,
                    MatRef::row_major(&av, rows, k)?,
                    MatRef::row_major(&bv, k, n)?,
                    &mut y,
                    n,
                )?;
            } else {
                for (bi, (&ao, &bo)) in a_off.iter().zip(&b_off).enumerate() {
                    let am = MatRef::row_major(&av[ao * m * k..(ao + 1) * m * k], m, k)?;
                    let bm = MatRef::row_major(&bv[bo * k * n..(bo + 1) * k * n], k, n)?;
                    gemm_acc(1.0, am, bm, &mut y[bi * m * n..(bi + 1) * m * n], n)?;
                }
            }
            return Ok(vec![from_f32(a.dtype(), sh.out, y)?]);
        }
    };
    Ok(vec![Tensor::new(sh.out, data)?])
}

/// Integer trait for the naive wrapping MatMul.
pub(crate) trait WrapInt: Copy + Default {
    fn wmul_add(self, a: Self, b: Self) -> Self;
}
impl WrapInt for i32 {
    fn wmul_add(self, a: i32, b: i32) -> i32 {
        self.wrapping_add(a.wrapping_mul(b))
    }
}
impl WrapInt for i64 {
    fn wmul_add(self, a: i64, b: i64) -> i64 {
        self.wrapping_add(a.wrapping_mul(b))
    }
}

/// Wrapping integer MatMul: for every batch `i`, the `m x n` product of
/// A's matrix `a_off[i]` and B's matrix `b_off[i]` (see [`batch_offsets`]),
/// `out_len` elements in all.
#[allow(clippy::too_many_arguments)]
pub(crate) fn int_matmul<T: WrapInt>(
    a: &[T],
    b: &[T],
    a_off: &[usize],
    b_off: &[usize],
    m: usize,
    k: usize,
    n: usize,
    out_len: usize,
) -> Vec<T> {
    let mut y = vec![T::default(); out_len];
    if m * n == 0 {
        return y;
    }
    for (yb, (&ao, &bo)) in y.chunks_exact_mut(m * n).zip(a_off.iter().zip(b_off)) {
        let am = &a[ao * m * k..(ao + 1) * m * k];
        let bm = &b[bo * k * n..(bo + 1) * k * n];
        for (yrow, arow) in yb.chunks_exact_mut(n).zip(am.chunks_exact(k.max(1))) {
            for (&av, brow) in arow.iter().zip(bm.chunks_exact(n)) {
                for (yv, &bv) in yrow.iter_mut().zip(brow) {
                    *yv = yv.wmul_add(av, bv);
                }
            }
        }
    }
    y
}

// ---------------------------------------------------------------------------
// Gemm.

struct GemmAttrs {
    alpha: f32,
    beta: f32,
    trans_a: bool,
    trans_b: bool,
}

fn gemm_attrs(ctx: &OpCtx) -> Result<GemmAttrs> {
    Ok(GemmAttrs {
        alpha: ctx.node.attr_float("alpha", 1.0)?,
        beta: ctx.node.attr_float("beta", 1.0)?,
        trans_a: ctx.node.attr_int("transA", 0)? != 0,
        trans_b: ctx.node.attr_int("transB", 0)? != 0,
    })
}

fn check_gemm_dtype(ctx: &OpCtx, tys: &[DType]) -> Result<DType> {
    let d = tys[0];
    if !d.is_float() {
        return Err(ctx.err(
            ErrorKind::TypeMismatch,
            format!("Gemm supports float and float16, got {d}"),
        ));
    }
    if tys.iter().any(|&t| t != d) {
        return Err(ctx.err(
            ErrorKind::TypeMismatch,
            "A, B and C must have the same element type",
        ));
    }
    Ok(d)
}

/// Checks that a C of shape `c` broadcasts unidirectionally to `[m, n]`.
fn check_c_dims(ctx: &OpCtx, c: &[Dim], m: &Dim, n: &Dim) -> Result<()> {
    if c.len() > 2 {
        return Err(ctx.err(
            ErrorKind::ShapeMismatch,
            format!("C must have rank <= 2, got rank {}", c.len()),
        ));
    }
    let target = [m, n];
    for (cd, td) in c.iter().rev().zip(target.iter().rev()) {
        if let (Some(x), Some(y)) = (cd.known(), td.known()) {
            if x != 1 && x != y {
                return Err(ctx.err(
                    ErrorKind::ShapeMismatch,
                    format!("C dimension {x} does not broadcast to {y}"),
                ));
            }
        }
    }
    Ok(())
}

fn infer_gemm(ctx: &OpCtx, inputs: &[Option<&InferInput>]) -> Result<Vec<ValueType>> {
    let a = ctx.infer_input(inputs, 0)?;
    let b = ctx.infer_input(inputs, 1)?;
    let c = ctx.opt_infer_input(inputs, 2);
    let mut tys = vec![a.ty.dtype, b.ty.dtype];
    tys.extend(c.map(|c| c.ty.dtype));
    let dtype = check_gemm_dtype(ctx, &tys)?;
    let at = gemm_attrs(ctx)?;
    let rank2 = |t: &ValueType, what: &str| -> Result<Option<Vec<Dim>>> {
        match &t.shape {
            None => Ok(None),
            Some(d) if d.len() == 2 => Ok(Some(d.clone())),
            Some(d) => Err(ctx.err(
                ErrorKind::ShapeMismatch,
                format!("{what} must be 2-D, got rank {}", d.len()),
            )),
        }
    };
    let ad = rank2(&a.ty, "A")?;
    let bd = rank2(&b.ty, "B")?;
    let m = match &ad {
        Some(d) => d[if at.trans_a { 1 } else { 0 }].clone(),
        None => ctx.unknown_dim(0, 0),
    };
    let n = match &bd {
        Some(d) => d[if at.trans_b { 0 } else { 1 }].clone(),
        None => ctx.unknown_dim(0, 1),
    };
    if let (Some(ad), Some(bd)) = (&ad, &bd) {
        let ka = &ad[if at.trans_a { 0 } else { 1 }];
        let kb = &bd[if at.trans_b { 1 } else { 0 }];
        if let (Some(x), Some(y)) = (ka.known(), kb.known()) {
            if x != y {
                return Err(ctx.err(
                    ErrorKind::ShapeMismatch,
                    format!("inner dimensions differ: {x} vs {y}"),
                ));
            }
        }
    }
    if let Some(cd) = c.and_then(|c| c.ty.shape.as_ref()) {
        check_c_dims(ctx, cd, &m, &n)?;
    }
    Ok(vec![ValueType::new(dtype, vec![m, n])])
}

fn eval_gemm(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let a = ctx.input(inputs, 0)?;
    let b = ctx.input(inputs, 1)?;
    let c = ctx.opt_input(inputs, 2);
    let mut tys = vec![a.dtype(), b.dtype()];
    tys.extend(c.map(|c| c.dtype()));
    let dtype = check_gemm_dtype(ctx, &tys)?;
    let at = gemm_attrs(ctx)?;
    if a.rank() != 2 || b.rank() != 2 {
        return Err(ctx.err(
            ErrorKind::ShapeMismatch,
            format!("A and B must be 2-D, got {:?} and {:?}", a.shape(), b.shape()),
        ));
    }
    let (ar, ac) = (a.shape()[0], a.shape()[1]);
    let (br, bc) = (b.shape()[0], b.shape()[1]);
    let (m, k) = if at.trans_a { (ac, ar) } else { (ar, ac) };
    let (kb, n) = if at.trans_b { (bc, br) } else { (br, bc) };
    if k != kb {
        return Err(ctx.err(
            ErrorKind::ShapeMismatch,
            format!(
                "inner dimensions differ: A is {:?} (transA={}), B is {:?} (transB={})",
                a.shape(),
                at.trans_a as u8,
                b.shape(),
                at.trans_b as u8
            ),
        ));
    }
    check_out_size(ctx, &[m, n])?;
    let mut y = vec![0f32; m * n];
    if let Some(c) = c {
        let cd: Vec<Dim> = c.shape().iter().map(|&d| Dim::Known(d)).collect();
        check_c_dims(ctx, &cd, &Dim::Known(m), &Dim::Known(n))?;
        if at.beta != 0.0 {
            let cv = f32_data(ctx, c, "C")?;
            let s = c.shape();
            let (cr, cc) = match s.len() {
                0 => (1, 1),
                1 => (1, s[0]),
                _ => (s[0], s[1]),
            };
            for (i, yrow) in y.chunks_exact_mut(n.max(1)).enumerate() {
                let crow = &cv[(if cr == 1 { 0 } else { i }) * cc..][..cc];
                for (j, yv) in yrow.iter_mut().enumerate() {
                    *yv = at.beta * crow[if cc == 1 { 0 } else { j }];
                }
            }
        }
    }
    let av = f32_data(ctx, a, "A")?;
    let bv = f32_data(ctx, b, "B")?;
    let mut am = MatRef::row_major(&av, ar, ac)?;
    if at.trans_a {
        am = am.t();
    }
    let mut bm = MatRef::row_major(&bv, br, bc)?;
    if at.trans_b {
        bm = bm.t();
    }
    gemm_acc(at.alpha, am, bm, &mut y, n)?;
    Ok(vec![from_f32(dtype, vec![m, n], y)?])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{f16, Attribute, Node};

    fn run(op: &str, attrs: &[(&str, Attribute)], inputs: &[&Tensor]) -> Result<Tensor> {
        let mut n = Node::new("n", op, &["a", "b", "c"], &["y"]);
        for (k, v) in attrs {
            n = n.with_attr(k, v.clone());
        }
        let ctx = OpCtx { node: &n, opset: 13 };
        let ins: Vec<Option<&Tensor>> = inputs.iter().map(|t| Some(*t)).collect();
        let f = if op == "MatMul" { eval_matmul } else { eval_gemm };
        Ok(f(&ctx, &ins)?.remove(0))
    }
    fn t(shape: &[usize], v: Vec<f32>) -> Tensor {
        Tensor::from_vec(shape.to_vec(), v).unwrap()
    }
    fn iota(shape: &[usize]) -> Tensor {
        t(
            shape,
            (0..shape.iter().product::<usize>()).map(|i| i as f32).collect(),
        )
    }
    fn infer(op: &str, attrs: &[(&str, Attribute)], tys: &[ValueType]) -> Result<ValueType> {
        let mut n = Node::new("n", op, &["a", "b", "c"], &["y"]);
        for (k, v) in attrs {
            n = n.with_attr(k, v.clone());
        }
        let ctx = OpCtx { node: &n, opset: 13 };
        let ins: Vec<InferInput> = tys
            .iter()
            .map(|t| InferInput {
                ty: t.clone(),
                value: None,
            })
            .collect();
        let refs: Vec<Option<&InferInput>> = ins.iter().map(Some).collect();
        let f = if op == "MatMul" { infer_matmul } else { infer_gemm };
        Ok(f(&ctx, &refs)?.remove(0))
    }

    #[test]
    fn matmul_2d_and_vectors() {
        let a = iota(&[2, 3]);
        let b = iota(&[3, 2]);
        let y = run("MatMul", &[], &[&a, &b]).unwrap();
        assert_eq!(y.shape(), &[2, 2]);
        assert_eq!(y.into_vec::<f32>().unwrap(), vec![10., 13., 28., 40.]);
        // 1-D x 2-D: [3] x [3, 2] -> [2]
        let v = t(&[3], vec![1., 1., 1.]);
        let y = run("MatMul", &[], &[&v, &b]).unwrap();
        assert_eq!(
            (y.shape().to_vec(), y.into_vec::<f32>().unwrap()),
            (vec![2], vec![6., 9.])
        );
        // 2-D x 1-D: [2, 3] x [3] -> [2]
        let y = run("MatMul", &[], &[&a, &v]).unwrap();
        assert_eq!(
            (y.shape().to_vec(), y.into_vec::<f32>().unwrap()),
            (vec![2], vec![3., 12.])
        );
        // 1-D x 1-D: scalar.
        let y = run("MatMul", &[], &[&v, &v]).unwrap();
        assert_eq!(
            (y.shape().to_vec(), y.into_vec::<f32>().unwrap()),
            (vec![], vec![3.])
        );
    }

    #[test]
    fn matmul_batched_broadcast() {
        // [2, 1, 2, 2] x [3, 2, 2] -> [2, 3, 2, 2]
        let a = iota(&[2, 1, 2, 2]);
        let b = t(&[3, 2, 2], vec![1., 0., 0., 1., 2., 0., 0., 2., 0., 1., 1., 0.]);
        let y = run("MatMul", &[], &[&a, &b]).unwrap();
        assert_eq!(y.shape(), &[2, 3, 2, 2]);
        let y = y.into_vec::<f32>().unwrap();
        assert_eq!(&y[0..4], &[0., 1., 2., 3.]); // a0 x I
        assert_eq!(&y[4..8], &[0., 2., 4., 6.]); // a0 x 2I
        assert_eq!(&y[8..12], &[1., 0., 3., 2.]); // a0 x swap
        assert_eq!(&y[12..16], &[4., 5., 6., 7.]); // a1 x I
                                                   // Shared B ([2, 2, 3] x [3, 1]) and batched A broadcast against B.
        let a = iota(&[2, 2, 3]);
        let b = t(&[3, 1], vec![1., 1., 1.]);
        let y = run("MatMul", &[], &[&a, &b]).unwrap();
        assert_eq!(y.shape(), &[2, 2, 1]);
        assert_eq!(y.into_vec::<f32>().unwrap(), vec![3., 12., 21., 30.]);
        let a = t(&[2, 2], vec![1., 0., 0., 1.]);
        let b = iota(&[2, 2, 2]);
        let y = run("MatMul", &[], &[&a, &b]).unwrap();
        assert_eq!(
            y.into_vec::<f32>().unwrap(),
            (0..8).map(|i| i as f32).collect::<Vec<_>>()
        );
    }

    #[test]
    fn matmul_ints_and_f16() {
        let a = Tensor::from_vec(vec![2, 2], vec![1i64, 2, 3, 4]).unwrap();
        let b = Tensor::from_vec(vec![2, 1], vec![i64::MAX, 1]).unwrap();
        let y = run("MatMul", &[], &[&a, &b]).unwrap();
        assert_eq!(
            y.into_vec::<i64>().unwrap(),
            vec![i64::MAX.wrapping_add(2), i64::MAX.wrapping_mul(3).wrapping_add(4)]
        );
        let a = Tensor::from_vec(vec![1, 2], vec![2i32, 3]).unwrap();
        let b = Tensor::from_vec(vec![2, 2], vec![1i32, 2, 3, 4]).unwrap();
        assert_eq!(
            run("MatMul", &[], &[&a, &b]).unwrap().into_vec::<i32>().unwrap(),
            vec![11, 16]
        );
        let h = |v: &[f32]| v.iter().map(|&x| f16::from_f32(x)).collect::<Vec<_>>();
        let a = Tensor::from_vec(vec![1, 2], h(&[1., 2.])).unwrap();
        let b = Tensor::from_vec(vec![2, 1], h(&[3., 4.])).unwrap();
        let y = run("MatMul", &[], &[&a, &b]).unwrap();
        assert_eq!((y.dtype(), y.to_f32_vec()), (DType::F16, vec![11.]));
    }

    #[test]
    fn matmul_errors_and_infer() {
        let a = iota(&[2, 3]);
        assert_eq!(
            run("MatMul", &[], &[&a, &a]).unwrap_err().kind,
            ErrorKind::ShapeMismatch
        );
        let b = iota(&[3, 3, 2]);
        let c = iota(&[2, 2, 3]);
        assert_eq!(
            run("MatMul", &[], &[&c, &b]).unwrap_err().kind,
            ErrorKind::ShapeMismatch
        );
        let i = Tensor::from_vec(vec![3, 2], vec![0i32; 6]).unwrap();
        assert_eq!(
            run("MatMul", &[], &[&a, &i]).unwrap_err().kind,
            ErrorKind::TypeMismatch
        );
        let s = Tensor::scalar(1f32);
        assert_eq!(
            run("MatMul", &[], &[&s, &a]).unwrap_err().kind,
            ErrorKind::ShapeMismatch
        );
        let x = ValueType::new(
            DType::F32,
            vec![Dim::Sym("B".into()), Dim::Sym("S".into()), Dim::Known(64)],
        );
        let w = ValueType::known(DType::F32, &[64, 128]);
        let y = infer("MatMul", &[], &[x.clone(), w]).unwrap();
        assert_eq!(
            y.shape.unwrap(),
            vec![Dim::Sym("B".into()), Dim::Sym("S".into()), Dim::Known(128)]
        );
        let v = ValueType::known(DType::F32, &[64]);
        let y = infer("MatMul", &[], &[x.clone(), v]).unwrap();
        assert_eq!(y.shape.unwrap(), vec![Dim::Sym("B".into()), Dim::Sym("S".into())]);
        let bad = ValueType::known(DType::F32, &[32, 8]);
        assert!(infer("MatMul", &[], &[x, bad]).is_err());
    }

    #[test]
    fn gemm_attrs_and_c_broadcast() {
        let a = iota(&[2, 3]); // [[0,1,2],[3,4,5]]
        let b = iota(&[3, 2]); // [[0,1],[2,3],[4,5]]
        let c = t(&[2], vec![1., 2.]);
        let y = run("Gemm", &[], &[&a, &b, &c]).unwrap();
        assert_eq!(y.into_vec::<f32>().unwrap(), vec![11., 15., 29., 42.]);
        // alpha, beta, C as a column [2, 1].
        let c = t(&[2, 1], vec![1., 2.]);
        let attrs = [("alpha", Attribute::Float(2.0)), ("beta", Attribute::Float(0.5))];
        let y = run("Gemm", &attrs, &[&a, &b, &c]).unwrap();
        assert_eq!(y.into_vec::<f32>().unwrap(), vec![20.5, 26.5, 57., 81.]);
        // Scalar C.
        let y = run("Gemm", &[], &[&a, &b, &Tensor::scalar(1f32)]).unwrap();
        assert_eq!(y.into_vec::<f32>().unwrap(), vec![11., 14., 29., 41.]);
        // transA, transB, no C: A^T [3,2] x B^T [2,3] -> [3, 3]
        let attrs = [("transA", Attribute::Int(1)), ("transB", Attribute::Int(1))];
        let y = run("Gemm", &attrs, &[&a, &b]).unwrap();
        assert_eq!(y.shape(), &[3, 3]);
        // A^T = [[0,3],[1,4],[2,5]], B^T = [[0,2,4],[1,3,5]]
        assert_eq!(
            y.into_vec::<f32>().unwrap(),
            vec![3., 9., 15., 4., 14., 24., 5., 19., 33.]
        );
        // transB with a vector row (the classifier head shape).
        let x = t(&[1, 3], vec![1., 2., 3.]);
        let w = iota(&[2, 3]);
        let bias = t(&[2], vec![0.5, 0.5]);
        let y = run("Gemm", &[("transB", Attribute::Int(1))], &[&x, &w, &bias]).unwrap();
        assert_eq!(y.into_vec::<f32>().unwrap(), vec![8.5, 26.5]);
    }

    #[test]
    fn gemm_errors_and_infer() {
        let a = iota(&[2, 3]);
        assert_eq!(
            run("Gemm", &[], &[&a, &a]).unwrap_err().kind,
            ErrorKind::ShapeMismatch
        );
        let b = iota(&[3, 2]);
        let c = iota(&[3]);
        assert_eq!(
            run("Gemm", &[], &[&a, &b, &c]).unwrap_err().kind,
            ErrorKind::ShapeMismatch
        );
        let v = iota(&[3]);
        assert_eq!(
            run("Gemm", &[], &[&v, &b]).unwrap_err().kind,
            ErrorKind::ShapeMismatch
        );
        let i = Tensor::from_vec(vec![2, 2], vec![0i64; 4]).unwrap();
        assert_eq!(
            run("Gemm", &[], &[&i, &i]).unwrap_err().kind,
            ErrorKind::TypeMismatch
        );
        let x = ValueType::new(DType::F32, vec![Dim::Sym("N".into()), Dim::Known(1280)]);
        let w = ValueType::known(DType::F32, &[1000, 1280]);
        let bias = ValueType::known(DType::F32, &[1000]);
        let y = infer(
            "Gemm",
            &[("transB", Attribute::Int(1))],
            &[x.clone(), w.clone(), bias],
        )
        .unwrap();
        assert_eq!(y.shape.unwrap(), vec![Dim::Sym("N".into()), Dim::Known(1000)]);
        assert!(infer("Gemm", &[], &[x, w]).is_err());
    }
}
