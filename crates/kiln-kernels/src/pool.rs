//! Pooling, NHWC.
//!
//! [`global_avg_pool_f32`]: `y[n, c] = mean_{h,w} x[n, h, w, c]` (ONNX
//! `GlobalAveragePool`; the same values as its `[n, c, 1, 1]` output, which
//! has one layout in NCHW and NHWC). [`pool2d_f32`]: `MaxPool` /
//! `AveragePool` windows (ONNX semantics: padding excluded from max; for the
//! average, `count_include_pad` selects the divisor).
//!
//! The loops run across channels innermost, so the compiler vectorizes them;
//! each is built once per ISA level ([`Isa`]) by target-feature
//! multiversioning of one body, and dispatched at run time. Sums are in the
//! same order on every level (no reassociation), so results are identical.

use crate::Isa;
use std::ops::Range;

/// Computes `y[n, c]` for batch items `batch`: the mean over `hw` pixels.
///
/// # Safety
/// `x` holds `[n, hw, c]`, `y` holds `[n, c]`, disjoint.
pub unsafe fn global_avg_pool_f32(
    isa: Isa,
    x: *const f32,
    y: *mut f32,
    hw: usize,
    c: usize,
    batch: Range<usize>,
) {
    match isa.float_level() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => gap_avx512(x, y, hw, c, batch),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => gap_avx2(x, y, hw, c, batch),
        _ => gap_scalar(x, y, hw, c, batch),
    }
}

#[inline(always)]
unsafe fn gap_body(x: *const f32, y: *mut f32, hw: usize, c: usize, batch: Range<usize>) {
    let inv = 1.0 / hw as f32;
    for b in batch {
        let out = std::slice::from_raw_parts_mut(y.add(b * c), c);
        out.fill(0.0);
        let img = std::slice::from_raw_parts(x.add(b * hw * c), hw * c);
        for px in img.chunks_exact(c) {
            for (o, v) in out.iter_mut().zip(px) {
                *o += *v;
            }
        }
        for o in out.iter_mut() {
            *o *= inv;
        }
    }
}

/// Scalar reference of [`global_avg_pool_f32`].
///
/// # Safety
/// As [`global_avg_pool_f32`].
pub unsafe fn gap_scalar(x: *const f32, y: *mut f32, hw: usize, c: usize, batch: Range<usize>) {
    gap_body(x, y, hw, c, batch)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gap_avx2(x: *const f32, y: *mut f32, hw: usize, c: usize, batch: Range<usize>) {
    gap_body(x, y, hw, c, batch)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn gap_avx512(x: *const f32, y: *mut f32, hw: usize, c: usize, batch: Range<usize>) {
    gap_body(x, y, hw, c, batch)
}

/// Geometry of a windowed pooling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolGeom {
    /// Batch.
    pub n: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Channels.
    pub c: usize,
    /// Window height.
    pub kh: usize,
    /// Window width.
    pub kw: usize,
    /// Stride along H.
    pub sh: usize,
    /// Stride along W.
    pub sw: usize,
    /// Padding at the top.
    pub pt: usize,
    /// Padding at the left.
    pub pl: usize,
    /// Padding at the bottom (used by `count_include_pad`).
    pub pb: usize,
    /// Padding at the right (used by `count_include_pad`).
    pub pr: usize,
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
    /// Max (true) or average (false).
    pub max: bool,
    /// Average only: divide by the full window including padding.
    pub count_include_pad: bool,
}

/// Computes output rows `rows` (indices into `n * oh`) of a max or average pool.
///
/// # Safety
/// `x` holds `[n, h, w, c]`, `y` holds `[n, oh, ow, c]`, disjoint.
pub unsafe fn pool2d_f32(isa: Isa, g: &PoolGeom, x: *const f32, y: *mut f32, rows: Range<usize>) {
    match isa.float_level() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => pool_avx512(g, x, y, rows),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => pool_avx2(g, x, y, rows),
        _ => pool_scalar(g, x, y, rows),
    }
}

#[inline(always)]
unsafe fn pool_body(g: &PoolGeom, x: *const f32, y: *mut f32, rows: Range<usize>) {
    for row in rows {
        let (b, oy) = (row / g.oh, row % g.oh);
        let y0 = (oy * g.sh) as isize - g.pt as isize;
        let ys = y0.max(0) as usize..((y0 + g.kh as isize).min(g.h as isize)).max(0) as usize;
        for ox in 0..g.ow {
            let x0 = (ox * g.sw) as isize - g.pl as isize;
            let xs = x0.max(0) as usize..((x0 + g.kw as isize).min(g.w as isize)).max(0) as usize;
            let out = std::slice::from_raw_parts_mut(y.add(((b * g.oh + oy) * g.ow + ox) * g.c), g.c);
            out.fill(if g.max { f32::NEG_INFINITY } else { 0.0 });
            for iy in ys.clone() {
                for ix in xs.clone() {
                    let px = std::slice::from_raw_parts(x.add(((b * g.h + iy) * g.w + ix) * g.c), g.c);
                    if g.max {
                        for (o, v) in out.iter_mut().zip(px) {
                            // NaN propagates like ONNX Runtime's MaxPool.
                            *o = if *v > *o || v.is_nan() { *v } else { *o };
                        }
                    } else {
                        for (o, v) in out.iter_mut().zip(px) {
                            *o += *v;
                        }
                    }
                }
            }
            if !g.max {
                let cnt = if g.count_include_pad {
                    // the window clipped to the padded input
                    let ye = ((oy * g.sh + g.kh) as isize).min((g.h + g.pt + g.pb) as isize)
                        - (oy * g.sh) as isize;
                    let xe = ((ox * g.sw + g.kw) as isize).min((g.w + g.pl + g.pr) as isize)
                        - (ox * g.sw) as isize;
                    (ye.max(1) * xe.max(1)) as f32
                } else {
                    (ys.len() * xs.len()).max(1) as f32
                };
                let inv = 1.0 / cnt;
                for o in out.iter_mut() {
                    *o *= inv;
                }
            }
        }
    }
}

/// Scalar reference of [`pool2d_f32`].
///
/// # Safety
/// As [`pool2d_f32`].
pub unsafe fn pool_scalar(g: &PoolGeom, x: *const f32, y: *mut f32, rows: Range<usize>) {
    pool_body(g, x, y, rows)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn pool_avx2(g: &PoolGeom, x: *const f32, y: *mut f32, rows: Range<usize>) {
    pool_body(g, x, y, rows)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn pool_avx512(g: &PoolGeom, x: *const f32, y: *mut f32, rows: Range<usize>) {
    pool_body(g, x, y, rows)
}
