//! Layout conversion between NCHW and NHWC (`[n, c, hw]` <-> `[n, hw, c]`),
//! the transposes a compiled plan inserts at the boundaries of NHWC regions.
//! Blocked 8x8 so both sides are read and written a cache line at a time.

/// `y[n, p, c] = x[n, c, p]` for `p` in `0..hw`.
///
/// # Safety
/// `x` and `y` hold `n * c * hw` values and do not overlap.
pub unsafe fn nchw_to_nhwc(x: *const f32, y: *mut f32, n: usize, c: usize, hw: usize) {
    transpose_batched(x, y, n, c, hw)
}

/// `y[n, c, p] = x[n, p, c]` for `p` in `0..hw`.
///
/// # Safety
/// `x` and `y` hold `n * c * hw` values and do not overlap.
pub unsafe fn nhwc_to_nchw(x: *const f32, y: *mut f32, n: usize, c: usize, hw: usize) {
    transpose_batched(x, y, n, hw, c)
}

/// Transposes `n` row-major `rows x cols` matrices.
unsafe fn transpose_batched(x: *const f32, y: *mut f32, n: usize, rows: usize, cols: usize) {
    const B: usize = 8;
    for b in 0..n {
        let xs = x.add(b * rows * cols);
        let ys = y.add(b * rows * cols);
        for r0 in (0..rows).step_by(B) {
            for c0 in (0..cols).step_by(B) {
                for r in r0..(r0 + B).min(rows) {
                    for c in c0..(c0 + B).min(cols) {
                        *ys.add(c * rows + r) = *xs.add(r * cols + c);
                    }
                }
            }
        }
    }
}

/// Copies `rows` rows of `cols` values: row `i` from `x + i*xs` to `y + i*ys`
/// (a channel slice of an NHWC tensor: concatenation along channels).
///
/// # Safety
/// Both regions valid and disjoint.
pub unsafe fn copy_rows(x: *const f32, xs: usize, y: *mut f32, ys: usize, rows: usize, cols: usize) {
    for i in 0..rows {
        std::ptr::copy_nonoverlapping(x.add(i * xs), y.add(i * ys), cols);
    }
}

/// Nearest-neighbour upsampling by integer factors, NHWC:
/// `y[n, oy, ox, :] = x[n, oy / fy, ox / fx, :]` (ONNX `Resize`, mode
/// `nearest`, `asymmetric` coordinates, `floor` rounding, integer scales)
/// for output rows `rows` (indices into `n * h * fy`).
///
/// # Safety
/// `x` holds `[n, h, w, c]`, `y` holds `[n, h*fy, w*fx, c]`, disjoint.
pub unsafe fn upsample_nearest_nhwc<T: Copy>(
    x: *const T,
    y: *mut T,
    (h, w, c): (usize, usize, usize),
    (fy, fx): (usize, usize),
    rows: std::ops::Range<usize>,
) {
    let (oh, ow) = (h * fy, w * fx);
    for r in rows {
        let (b, oy) = (r / oh, r % oh);
        let src = x.add((b * h + oy / fy) * w * c);
        let dst = y.add((b * oh + oy) * ow * c);
        for ix in 0..w {
            for j in 0..fx {
                std::ptr::copy_nonoverlapping(src.add(ix * c), dst.add((ix * fx + j) * c), c);
            }
        }
    }
}
