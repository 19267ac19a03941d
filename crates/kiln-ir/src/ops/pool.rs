//! Pooling: `MaxPool`, `AveragePool`, `GlobalAveragePool`, `GlobalMaxPool`
//! (<https://onnx.ai/onnx/operators/onnx__MaxPool.html>,
//! <https://onnx.ai/onnx/operators/onnx__AveragePool.html>).
//!
//! Windowed pools take 1 to 3 spatial axes and share the `auto_pad` /
//! `pads` / `strides` / `dilations` / `ceil_mode` rules of `conv.rs`;
//! a window that starts in the end padding (possible with `ceil_mode`) is
//! dropped. Padding never contributes to a max; it counts in an average
//! only with `count_include_pad = 1`.

use super::conv::{check_float_type, check_out_size, f32_data, from_f32, kernel_attr, parse_window, Window};
use super::{InferInput, OpCtx, OpDef};
use crate::{DType, Dim, ErrorKind, Result, Tensor, TensorData, ValueType};

/// Ops of this family.
pub(crate) const OPS: &[OpDef] = &[
    OpDef {
        op_type: "MaxPool",
        domain: "",
        since: 1,
        infer: infer_max_pool,
        eval: eval_max_pool,
    },
    OpDef {
        op_type: "AveragePool",
        domain: "",
        since: 1,
        infer: infer_avg_pool,
        eval: eval_avg_pool,
    },
    OpDef {
        op_type: "GlobalAveragePool",
        domain: "",
        since: 1,
        infer: infer_global,
        eval: eval_global_avg,
    },
    OpDef {
        op_type: "GlobalMaxPool",
        domain: "",
        since: 1,
        infer: infer_global,
        eval: eval_global_max,
    },
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Max,
    Avg,
}

/// Number of spatial axes of a pool input of rank `rank` (1..=3).
fn pool_spatial_rank(ctx: &OpCtx, rank: usize) -> Result<usize> {
    if !(3..=5).contains(&rank) {
        return Err(ctx.err(
            ErrorKind::ShapeMismatch,
            format!("input X must have rank 3, 4 or 5 (N, C and 1-3 spatial dims), got rank {rank}"),
        ));
    }
    Ok(rank - 2)
}

fn check_pool_dtype(ctx: &OpCtx, kind: Kind, d: DType) -> Result<()> {
    let ok = match kind {
        Kind::Max => d.is_float() || (ctx.opset >= 12 && matches!(d, DType::I8 | DType::U8)),
        Kind::Avg => d.is_float(),
    };
    if ok {
        Ok(())
    } else {
        Err(ctx.err(
            ErrorKind::TypeMismatch,
            format!("input X of type {d} is not supported at opset {}", ctx.opset),
        ))
    }
}

/// The window attributes of a MaxPool/AveragePool node.
fn pool_window(ctx: &OpCtx, kind: Kind, nsp: usize) -> Result<(Vec<usize>, Window)> {
    let kernel = kernel_attr(ctx, nsp)?
        .ok_or_else(|| ctx.attr_err("kernel_shape", "required attribute is missing"))?;
    let dil = match kind {
        Kind::Max => ctx.opset >= 10,
        Kind::Avg => ctx.opset >= 19,
    };
    let win = parse_window(ctx, nsp, dil, ctx.opset >= 10)?;
    for (i, &k) in kernel.iter().enumerate() {
        let (pb, pe) = (win.pads[i], win.pads[nsp + i]);
        let ek = (k - 1) * win.dilations[i] + 1;
        if pb >= ek || pe >= ek {
            return Err(ctx.attr_err(
                "pads",
                format!("pads ({pb}, {pe}) on axis {i} must be smaller than the kernel extent {ek}"),
            ));
        }
    }
    Ok((kernel, win))
}

fn infer_pool(ctx: &OpCtx, kind: Kind, inputs: &[Option<&InferInput>]) -> Result<Vec<ValueType>> {
    let x = ctx.infer_input(inputs, 0)?;
    check_pool_dtype(ctx, kind, x.ty.dtype)?;
    let dtype = x.ty.dtype;
    let n_out = if kind == Kind::Max { 2 } else { 1 };
    let Some(xd) = &x.ty.shape else {
        let mut v = vec![ValueType::unknown_rank(dtype)];
        if n_out == 2 {
            v.push(ValueType::unknown_rank(DType::I64));
        }
        return Ok(v);
    };
    let nsp = pool_spatial_rank(ctx, xd.len())?;
    let (kernel, win) = pool_window(ctx, kind, nsp)?;
    let mut out = vec![xd[0].clone(), xd[1].clone()];
    for i in 0..nsp {
        out.push(match xd[2 + i].known() {
            Some(n) => Dim::Known(win.axis_out(ctx, i, n, kernel[i])?.0),
            None => ctx.unknown_dim(0, 2 + i),
        });
    }
    let mut v = vec![ValueType::new(dtype, out.clone())];
    if n_out == 2 {
        v.push(ValueType::new(DType::I64, out));
    }
    Ok(v)
}

fn infer_max_pool(ctx: &OpCtx, inputs: &[Option<&InferInput>]) -> Result<Vec<ValueType>> {
    infer_pool(ctx, Kind::Max, inputs)
}

fn infer_avg_pool(ctx: &OpCtx, inputs: &[Option<&InferInput>]) -> Result<Vec<ValueType>> {
    infer_pool(ctx, Kind::Avg, inputs)
}

/// Per spatial axis (normalized to 3): input size, output size, kernel,
/// stride, dilation, begin pad, end pad.
#[derive(Clone, Copy, Default)]
struct Axis {
    n: usize,
    out: usize,
    k: usize,
    s: usize,
    d: usize,
    pb: usize,
    pe: usize,
}

impl Axis {
    /// Valid taps `t` (input position `o*s - pb + t*d` in `0..n`) of output
    /// `o` as `(t_lo, t_hi)`, and the number of taps inside the padded
    /// extent `-pb..n+pe`.
    fn taps(&self, o: usize) -> (usize, usize, usize) {
        let start = (o * self.s) as isize - self.pb as isize;
        let d = self.d as isize;
        let count_in = |lo: isize, hi: isize| -> (usize, usize) {
            // taps t in 0..k with lo <= start + t*d < hi
            let t_lo = if start >= lo {
                0
            } else {
                ((lo - start) + d - 1) / d
            };
            let t_hi = if start >= hi { 0 } else { (hi - start - 1) / d + 1 };
            let t_lo = (t_lo as usize).min(self.k);
            let t_hi = (t_hi as usize).min(self.k);
            (t_lo, t_hi.max(t_lo))
        };
        let (lo, hi) = count_in(0, self.n as isize);
        let (plo, phi) = count_in(-(self.pb as isize), (self.n + self.pe) as isize);
        (lo, hi, phi - plo)
    }
}

fn eval_pool(ctx: &OpCtx, kind: Kind, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = ctx.input(inputs, 0)?;
    check_pool_dtype(ctx, kind, x.dtype())?;
    let xs = x.shape();
    let nsp = pool_spatial_rank(ctx, xs.len())?;
    let (kernel, win) = pool_window(ctx, kind, nsp)?;
    let mut axes = [Axis {
        n: 1,
        out: 1,
        k: 1,
        s: 1,
        d: 1,
        pb: 0,
        pe: 0,
    }; 3];
    let mut out_shape = vec![xs[0], xs[1]];
    for i in 0..nsp {
        let (out, pb, pe) = win.axis_out(ctx, i, xs[2 + i], kernel[i])?;
        axes[3 - nsp + i] = Axis {
            n: xs[2 + i],
            out,
            k: kernel[i],
            s: win.strides[i],
            d: win.dilations[i],
            pb,
            pe,
        };
        out_shape.push(out);
    }
    check_out_size(ctx, &out_shape)?;
    let count_include_pad = ctx.node.attr_int("count_include_pad", 0)? != 0;
    let storage_order = ctx.node.attr_int("storage_order", 0)?;
    if !(0..=1).contains(&storage_order) {
        return Err(ctx.attr_err("storage_order", format!("must be 0 or 1, got {storage_order}")));
    }
    let want_indices = kind == Kind::Max && ctx.node.outputs.get(1).is_some_and(|o| !o.is_empty());
    let xv: Vec<f32> = match x.data() {
        TensorData::F32(_) | TensorData::F16(_) => f32_data(ctx, x, "input X")?.into_owned(),
        _ => x.to_f32_vec(),
    };
    let planes = xs[0] * xs[1];
    let in_plane: usize = xs[2..].iter().product();
    let out_plane: usize = out_shape[2..].iter().product();
    let mut y = vec![0f32; planes * out_plane];
    let mut idx = if want_indices {
        vec![0i64; planes * out_plane]
    } else {
        Vec::new()
    };
    // Per-axis tap ranges, hoisted out of the plane loop.
    let taps: Vec<Vec<(usize, usize, usize)>> = axes
        .iter()
        .map(|a| (0..a.out).map(|o| a.taps(o)).collect())
        .collect();
    let [az, ay, ax] = axes;
    // Input strides for the index output (row- or column-major spatial).
    let (st_z, st_y, st_x) = if storage_order == 1 {
        (1, az.n, az.n * ay.n)
    } else {
        (ay.n * ax.n, ax.n, 1)
    };
    for p in 0..planes {
        let xp = &xv[p * in_plane..(p + 1) * in_plane];
        let mut o = p * out_plane;
        for (oz, &(z0, z1, zc)) in taps[0].iter().enumerate() {
            for (oy, &(y0, y1, yc)) in taps[1].iter().enumerate() {
                for (ox, &(x0, x1, xc)) in taps[2].iter().enumerate() {
                    let bz = (oz * az.s) as isize - az.pb as isize;
                    let by = (oy * ay.s) as isize - ay.pb as isize;
                    let bx = (ox * ax.s) as isize - ax.pb as isize;
                    match kind {
                        Kind::Max => {
                            let mut best = f32::NEG_INFINITY;
                            let mut arg = 0usize;
                            let mut found = false;
                            for tz in z0..z1 {
                                let iz = (bz + (tz * az.d) as isize) as usize;
                                for ty in y0..y1 {
                                    let iy = (by + (ty * ay.d) as isize) as usize;
                                    let row = (iz * ay.n + iy) * ax.n;
                                    for tx in x0..x1 {
                                        let ix = (bx + (tx * ax.d) as isize) as usize;
                                        let v = xp[row + ix];
                                        if !found || v > best {
                                            best = v;
                                            arg = iz * st_z + iy * st_y + ix * st_x;
                                            found = true;
                                        }
                                    }
                                }
                            }
                            y[o] = best;
                            if want_indices {
                                idx[o] = (p * in_plane + arg) as i64;
                            }
                        }
                        Kind::Avg => {
                            let mut sum = 0f32;
                            for tz in z0..z1 {
                                let iz = (bz + (tz * az.d) as isize) as usize;
                                for ty in y0..y1 {
                                    let iy = (by + (ty * ay.d) as isize) as usize;
                                    let row = (iz * ay.n + iy) * ax.n;
                                    for tx in x0..x1 {
                                        sum += xp[row + (bx + (tx * ax.d) as isize) as usize];
                                    }
                                }
                            }
                            let count = if count_include_pad {
                                zc * yc * xc
                            } else {
                                (z1 - z0) * (y1 - y0) * (x1 - x0)
                            };
                            y[o] = if count > 0 { sum / count as f32 } else { 0.0 };
                        }
                    }
                    o += 1;
                }
            }
        }
    }
    let yt = match x.dtype() {
        DType::I8 => Tensor::from_vec(out_shape.clone(), y.iter().map(|&v| v as i8).collect::<Vec<_>>())?,
        DType::U8 => Tensor::from_vec(out_shape.clone(), y.iter().map(|&v| v as u8).collect::<Vec<_>>())?,
        d => from_f32(d, out_shape.clone(), y)?,
    };
    let mut outs = vec![yt];
    if want_indices {
        outs.push(Tensor::from_vec(out_shape, idx)?);
    }
    Ok(outs)
}

fn eval_max_pool(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    eval_pool(ctx, Kind::Max, inputs)
}

fn eval_avg_pool(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    eval_pool(ctx, Kind::Avg, inputs)
}

// ---------------------------------------------------------------------------
// Global pools.

fn infer_global(ctx: &OpCtx, inputs: &[Option<&InferInput>]) -> Result<Vec<ValueType>> {
    let x = ctx.infer_input(inputs, 0)?;
    check_float_type(ctx, &x.ty, "input X")?;
    let Some(xd) = &x.ty.shape else {
        return Ok(vec![ValueType::unknown_rank(x.ty.dtype)]);
    };
    if xd.len() < 3 {
        return Err(ctx.err(
            ErrorKind::ShapeMismatch,
            format!(
                "input X must have rank >= 3 (N, C, spatial...), got rank {}",
                xd.len()
            ),
        ));
    }
    let mut out = vec![xd[0].clone(), xd[1].clone()];
    out.resize(xd.len(), Dim::Known(1));
    Ok(vec![ValueType::new(x.ty.dtype, out)])
}

fn eval_global(ctx: &OpCtx, kind: Kind, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let x = ctx.input(inputs, 0)?;
    let xs = x.shape();
    if xs.len() < 3 {
        return Err(ctx.err(
            ErrorKind::ShapeMismatch,
            format!("input X must have rank >= 3 (N, C, spatial...), got shape {xs:?}"),
        ));
    }
    let xv = f32_data(ctx, x, "input X")?;
    let plane: usize = xs[2..].iter().product();
    let planes = xs[0] * xs[1];
    let y: Vec<f32> = if plane == 0 {
        vec![
            if kind == Kind::Max {
                f32::NEG_INFINITY
            } else {
                f32::NAN
            };
            planes
        ]
    } else {
        xv.chunks_exact(plane)
            .map(|p| match kind {
                Kind::Max => p.iter().copied().fold(f32::NEG_INFINITY, f32::max),
                Kind::Avg => sum_f32(p) / plane as f32,
            })
            .collect()
    };
    let mut shape = vec![xs[0], xs[1]];
    shape.resize(xs.len(), 1);
    Ok(vec![from_f32(x.dtype(), shape, y)?])
}

/// Sum with 8 partial sums (vectorizes; also more accurate than one chain).
fn sum_f32(v: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let ch = v.chunks_exact(8);
    let rest: f32 = ch.remainder().iter().sum();
    for c in ch {
        for l in 0..8 {
            acc[l] += c[l];
        }
    }
    acc.iter().sum::<f32>() + rest
}

fn eval_global_avg(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    eval_global(ctx, Kind::Avg, inputs)
}

fn eval_global_max(ctx: &OpCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    eval_global(ctx, Kind::Max, inputs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{f16, Attribute, Node};

    fn ints(v: &[i64]) -> Attribute {
        Attribute::Ints(v.to_vec())
    }
    fn s(v: &str) -> Attribute {
        Attribute::String(v.as_bytes().to_vec())
    }
    fn t(shape: &[usize], v: Vec<f32>) -> Tensor {
        Tensor::from_vec(shape.to_vec(), v).unwrap()
    }
    /// 1, 2, ... n (the ONNX backend tests' inputs).
    fn seq1(shape: &[usize]) -> Tensor {
        t(
            shape,
            (1..=shape.iter().product::<usize>()).map(|i| i as f32).collect(),
        )
    }
    fn run_full(
        op: &str,
        opset: i64,
        outs: &[&str],
        attrs: &[(&str, Attribute)],
        x: &Tensor,
    ) -> Result<Vec<Tensor>> {
        let mut n = Node::new("n", op, &["x"], outs);
        for (k, v) in attrs {
            n = n.with_attr(k, v.clone());
        }
        let ctx = OpCtx { node: &n, opset };
        let f = match op {
            "MaxPool" => eval_max_pool,
            "AveragePool" => eval_avg_pool,
            "GlobalAveragePool" => eval_global_avg,
            _ => eval_global_max,
        };
        f(&ctx, &[Some(x)])
    }
    fn run(op: &str, attrs: &[(&str, Attribute)], x: &Tensor) -> (Vec<usize>, Vec<f32>) {
        let y = run_full(op, 19, &["y"], attrs, x).unwrap().remove(0);
        (y.shape().to_vec(), y.to_f32_vec())
    }

    #[test]
    fn max_pool_basic_and_indices() {
        let x = t(&[1, 1, 4, 4], (0..16).map(|i| i as f32).collect());
        let attrs = [("kernel_shape", ints(&[2, 2])), ("strides", ints(&[2, 2]))];
        let out = run_full("MaxPool", 12, &["y", "i"], &attrs, &x).unwrap();
        assert_eq!(out[0].to_f32_vec(), vec![5., 7., 13., 15.]);
        assert_eq!(out[1].clone().into_vec::<i64>().unwrap(), vec![5, 7, 13, 15]);
        let attrs = [
            ("kernel_shape", ints(&[2, 2])),
            ("strides", ints(&[2, 2])),
            ("storage_order", Attribute::Int(1)),
        ];
        let out = run_full("MaxPool", 12, &["y", "i"], &attrs, &x).unwrap();
        assert_eq!(out[1].clone().into_vec::<i64>().unwrap(), vec![5, 13, 7, 15]);
        // Indices include the (n, c) plane offset.
        let x = t(&[1, 2, 1, 2], vec![1., 0., 0., 1.]);
        let out = run_full("MaxPool", 12, &["y", "i"], &[("kernel_shape", ints(&[1, 2]))], &x).unwrap();
        assert_eq!(out[1].clone().into_vec::<i64>().unwrap(), vec![0, 3]);
    }

    #[test]
    fn max_pool_pads_same_ceil_dilations() {
        let x = seq1(&[1, 1, 5, 5]);
        let (sh, y) = run(
            "MaxPool",
            &[("kernel_shape", ints(&[5, 5])), ("pads", ints(&[2, 2, 2, 2]))],
            &x,
        );
        assert_eq!(sh, vec![1, 1, 5, 5]);
        assert_eq!(
            y,
            vec![
                13., 14., 15., 15., 15., 18., 19., 20., 20., 20., 23., 24., 25., 25., 25., 23., 24., 25.,
                25., 25., 23., 24., 25., 25., 25.
            ]
        );
        let attrs = [
            ("kernel_shape", ints(&[3, 3])),
            ("strides", ints(&[2, 2])),
            ("auto_pad", s("SAME_UPPER")),
        ];
        let (sh, y) = run("MaxPool", &attrs, &x);
        assert_eq!(
            (sh, y),
            (vec![1, 1, 3, 3], vec![7., 9., 10., 17., 19., 20., 22., 24., 25.])
        );
        let x4 = seq1(&[1, 1, 4, 4]);
        let attrs = [
            ("kernel_shape", ints(&[3, 3])),
            ("strides", ints(&[2, 2])),
            ("auto_pad", s("SAME_UPPER")),
        ];
        assert_eq!(run("MaxPool", &attrs, &x4).1, vec![11., 12., 15., 16.]);
        let attrs = [
            ("kernel_shape", ints(&[3, 3])),
            ("strides", ints(&[2, 2])),
            ("auto_pad", s("SAME_LOWER")),
        ];
        assert_eq!(run("MaxPool", &attrs, &x4).1, vec![6., 8., 14., 16.]);
        let x = seq1(&[1, 1, 4, 4]);
        let attrs = [
            ("kernel_shape", ints(&[3, 3])),
            ("strides", ints(&[2, 2])),
            ("ceil_mode", Attribute::Int(1)),
        ];
        assert_eq!(
            run("MaxPool", &attrs, &x),
            (vec![1, 1, 2, 2], vec![11., 12., 15., 16.])
        );
        let attrs = [("kernel_shape", ints(&[3, 3])), ("strides", ints(&[2, 2]))];
        assert_eq!(run("MaxPool", &attrs, &x), (vec![1, 1, 1, 1], vec![11.]));
        let attrs = [("kernel_shape", ints(&[2, 2])), ("dilations", ints(&[2, 2]))];
        assert_eq!(
            run("MaxPool", &attrs, &x),
            (vec![1, 1, 2, 2], vec![11., 12., 15., 16.])
        );
        // ceil_mode: a window starting in the end padding is dropped.
        let x = seq1(&[1, 1, 4]);
        let attrs = [
            ("kernel_shape", ints(&[2])),
            ("strides", ints(&[2])),
            ("pads", ints(&[0, 1])),
            ("ceil_mode", Attribute::Int(1)),
        ];
        assert_eq!(run("MaxPool", &attrs, &x), (vec![1, 1, 2], vec![2., 4.]));
        // 3-D.
        let x = seq1(&[1, 1, 2, 2, 2]);
        assert_eq!(
            run("MaxPool", &[("kernel_shape", ints(&[2, 2, 2]))], &x),
            (vec![1, 1, 1, 1, 1], vec![8.])
        );
    }

    #[test]
    fn avg_pool_pads_and_count_include_pad() {
        let x = seq1(&[1, 1, 5, 5]);
        let attrs = [("kernel_shape", ints(&[5, 5])), ("pads", ints(&[2, 2, 2, 2]))];
        let (_, y) = run("AveragePool", &attrs, &x);
        let want = [
            7., 7.5, 8., 8.5, 9., 9.5, 10., 10.5, 11., 11.5, 12., 12.5, 13., 13.5, 14., 14.5, 15., 15.5, 16.,
            16.5, 17., 17.5, 18., 18.5, 19.,
        ];
        assert!(y.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-5));
        let attrs = [
            ("kernel_shape", ints(&[5, 5])),
            ("pads", ints(&[2, 2, 2, 2])),
            ("count_include_pad", Attribute::Int(1)),
        ];
        let (_, y) = run("AveragePool", &attrs, &x);
        let want = [
            2.52, 3.6, 4.8, 4.08, 3.24, 4.56, 6.4, 8.4, 7.04, 5.52, 7.2, 10., 13., 10.8, 8.4, 6.96, 9.6,
            12.4, 10.24, 7.92, 6.12, 8.4, 10.8, 8.88, 6.84,
        ];
        assert!(y.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-4), "{y:?}");
        let attrs = [
            ("kernel_shape", ints(&[3, 3])),
            ("strides", ints(&[2, 2])),
            ("auto_pad", s("SAME_UPPER")),
        ];
        assert_eq!(
            run("AveragePool", &attrs, &x).1,
            vec![4., 5.5, 7., 11.5, 13., 14.5, 19., 20.5, 22.]
        );
        let x = seq1(&[1, 1, 4, 4]);
        let attrs = [
            ("kernel_shape", ints(&[3, 3])),
            ("strides", ints(&[2, 2])),
            ("ceil_mode", Attribute::Int(1)),
        ];
        assert_eq!(
            run("AveragePool", &attrs, &x),
            (vec![1, 1, 2, 2], vec![6., 7.5, 12., 13.5])
        );
        // Dilations (opset 19).
        let x = seq1(&[1, 1, 5]);
        let attrs = [("kernel_shape", ints(&[2])), ("dilations", ints(&[2]))];
        assert_eq!(run("AveragePool", &attrs, &x), (vec![1, 1, 3], vec![2., 3., 4.]));
        // count_include_pad with 1-D explicit pads: [0, 1, 2, 3, 0] / 2, stride 2.
        let x = t(&[1, 1, 3], vec![1., 2., 3.]);
        let attrs = [
            ("kernel_shape", ints(&[2])),
            ("strides", ints(&[2])),
            ("pads", ints(&[1, 1])),
            ("count_include_pad", Attribute::Int(1)),
        ];
        assert_eq!(run("AveragePool", &attrs, &x).1, vec![0.5, 2.5]);
        let attrs = [
            ("kernel_shape", ints(&[2])),
            ("strides", ints(&[2])),
            ("pads", ints(&[1, 1])),
        ];
        assert_eq!(run("AveragePool", &attrs, &x).1, vec![1., 2.5]);
    }

    #[test]
    fn global_pools_and_dtypes() {
        let x = t(&[1, 2, 2, 2], vec![1., 2., 3., 4., -1., -2., -3., -4.]);
        assert_eq!(
            run("GlobalAveragePool", &[], &x),
            (vec![1, 2, 1, 1], vec![2.5, -2.5])
        );
        assert_eq!(run("GlobalMaxPool", &[], &x), (vec![1, 2, 1, 1], vec![4., -1.]));
        let x = Tensor::from_vec(vec![1, 1, 3], vec![3u8, 200, 7]).unwrap();
        let y = run_full("MaxPool", 12, &["y"], &[("kernel_shape", ints(&[2]))], &x)
            .unwrap()
            .remove(0);
        assert_eq!(y.into_vec::<u8>().unwrap(), vec![200, 200]);
        assert!(run_full("MaxPool", 11, &["y"], &[("kernel_shape", ints(&[2]))], &x).is_err());
        let h = Tensor::from_vec(vec![1, 1, 2], vec![f16::from_f32(1.0), f16::from_f32(2.0)]).unwrap();
        let y = run_full("AveragePool", 11, &["y"], &[("kernel_shape", ints(&[2]))], &h)
            .unwrap()
            .remove(0);
        assert_eq!((y.dtype(), y.to_f32_vec()), (DType::F16, vec![1.5]));
    }

    #[test]
    fn pool_errors_and_infer() {
        let x = seq1(&[1, 1, 4, 4]);
        let e = |attrs: &[(&str, Attribute)]| run_full("MaxPool", 13, &["y"], attrs, &x).unwrap_err();
        assert_eq!(e(&[]).attr.as_deref(), Some("kernel_shape"));
        assert_eq!(
            e(&[("kernel_shape", ints(&[2]))]).kind,
            ErrorKind::InvalidAttribute
        );
        assert_eq!(
            e(&[("kernel_shape", ints(&[5, 5]))]).kind,
            ErrorKind::ShapeMismatch
        );
        assert_eq!(
            e(&[("kernel_shape", ints(&[2, 2])), ("pads", ints(&[2, 0, 0, 0]))]).kind,
            ErrorKind::InvalidAttribute
        );
        assert_eq!(
            e(&[
                ("kernel_shape", ints(&[2, 2])),
                ("storage_order", Attribute::Int(2))
            ])
            .kind,
            ErrorKind::InvalidAttribute
        );
        let v = seq1(&[4]);
        assert!(run_full("MaxPool", 13, &["y"], &[("kernel_shape", ints(&[2]))], &v).is_err());
        assert!(run_full("GlobalAveragePool", 13, &["y"], &[], &v).is_err());

        let n = Node::new("n", "MaxPool", &["x"], &["y", "i"])
            .with_attr("kernel_shape", ints(&[3, 3]))
            .with_attr("strides", ints(&[2, 2]))
            .with_attr("pads", ints(&[1, 1, 1, 1]));
        let ctx = OpCtx { node: &n, opset: 13 };
        let xi = InferInput {
            ty: ValueType::new(
                DType::F32,
                vec![
                    Dim::Sym("N".into()),
                    Dim::Known(64),
                    Dim::Known(112),
                    Dim::Sym("W".into()),
                ],
            ),
            value: None,
        };
        let out = infer_max_pool(&ctx, &[Some(&xi)]).unwrap();
        assert_eq!(
            out[0].shape.clone().unwrap(),
            vec![
                Dim::Sym("N".into()),
                Dim::Known(64),
                Dim::Known(56),
                Dim::Sym("n:0:3".into())
            ]
        );
        assert_eq!(out[1].dtype, DType::I64);
        let g = infer_global(&ctx, &[Some(&xi)]).unwrap().remove(0);
        assert_eq!(
            g.shape.unwrap(),
            vec![Dim::Sym("N".into()), Dim::Known(64), Dim::Known(1), Dim::Known(1)]
        );
    }
}

/// Validated geometry of a 2-D `MaxPool` / `AveragePool` node with a concrete
/// NCHW input shape, for compiled runtimes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool2dShape {
    /// Max (true) or average pool.
    pub max: bool,
    /// Window height and width.
    pub kernel: [usize; 2],
    /// Strides (H, W).
    pub strides: [usize; 2],
    /// Begin pads (top, left).
    pub pads_begin: [usize; 2],
    /// End pads (bottom, right).
    pub pads_end: [usize; 2],
    /// Output height and width.
    pub output: [usize; 2],
    /// AveragePool's `count_include_pad`.
    pub count_include_pad: bool,
}

/// The [`Pool2dShape`] of a `MaxPool` / `AveragePool` node at `opset` for an
/// input of shape `xs`. `None` for ranks other than 4, dilations other than
/// 1, a requested MaxPool `Indices` output, or other op types.
///
/// Errors as the op's own checks.
pub fn pool2d_shape(node: &crate::Node, opset: i64, xs: &[usize]) -> Result<Option<Pool2dShape>> {
    let kind = match node.op_type.as_str() {
        "MaxPool" => Kind::Max,
        "AveragePool" => Kind::Avg,
        _ => return Ok(None),
    };
    if xs.len() != 4 || (kind == Kind::Max && node.outputs.get(1).is_some_and(|o| !o.is_empty())) {
        return Ok(None);
    }
    let ctx = OpCtx { node, opset };
    let (kernel, win) = pool_window(&ctx, kind, 2)?;
    if win.dilations.iter().any(|&d| d != 1) {
        return Ok(None);
    }
    let (oh, pt, pb) = win.axis_out(&ctx, 0, xs[2], kernel[0])?;
    let (ow, pl, pr) = win.axis_out(&ctx, 1, xs[3], kernel[1])?;
    Ok(Some(Pool2dShape {
        max: kind == Kind::Max,
        kernel: [kernel[0], kernel[1]],
        strides: [win.strides[0], win.strides[1]],
        pads_begin: [pt, pl],
        pads_end: [pb, pr],
        output: [oh, ow],
        count_include_pad: kind == Kind::Avg && node.attr_int("count_include_pad", 0)? != 0,
    }))
}
