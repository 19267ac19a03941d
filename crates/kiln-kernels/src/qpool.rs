//! Pooling of 8-bit tensors, NHWC.
//!
//! * [`maxpool_u8`]: ONNX `MaxPool` (opset 12+, `uint8`/`int8`) on stored
//!   bytes: `y[n, oy, ox, c] = max_{window} x[n, iy, ix, c]`, padding
//!   ignored. Values move unchanged, so input and output share scale and zero
//!   point, and the `int8` encoding (`+ 128`) preserves order: one kernel
//!   serves both types.
//! * [`global_avg_pool_u8`]: kiln's `QGlobalAveragePool`:
//!   `acc[n, c] = Σ_{p < hw} (x[n, p, c] - zx)` (`i32`, wrapping), then
//!   `y[n, c] = rq.apply(acc, c)` with the requantization the caller builds
//!   for the real multiplier `s_x / (s_y * hw)`.
//!
//! Kernels: [`maxpool_u8_scalar`] (reference) and its builds for AVX2 and
//! AVX-512 (one body, vectorized across channels by the compiler: byte
//! maxima are exact); [`global_avg_pool_u8_scalar`] (reference),
//! [`global_avg_pool_u8_avx2_8c`], [`global_avg_pool_u8_avx512_16c`].

use crate::pool::PoolGeom;
use crate::quant::Requant;
use crate::Isa;
use std::ops::Range;

/// Computes output rows `rows` (indices into `n * oh`) of a max pool of
/// stored bytes (`g.max` and `g.count_include_pad` are ignored). A window
/// with no pixel inside the input (impossible with ONNX-valid padding, which
/// is smaller than the window) gives 0.
///
/// # Safety
/// `x` holds `[n, h, w, c]`, `y` holds `[n, oh, ow, c]`, disjoint. Calls
/// on disjoint `rows` may run concurrently.
pub unsafe fn maxpool_u8(isa: Isa, g: &PoolGeom, x: *const u8, y: *mut u8, rows: Range<usize>) {
    match isa.int8_level() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx512Vnni if std::arch::is_x86_feature_detected!("avx512bw") => {
            maxpool_u8_avx512(g, x, y, rows)
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512 | Isa::Avx512Vnni => maxpool_u8_avx2(g, x, y, rows),
        _ => maxpool_u8_scalar(g, x, y, rows),
    }
}

#[inline(always)]
unsafe fn maxpool_body(g: &PoolGeom, x: *const u8, y: *mut u8, rows: Range<usize>) {
    for row in rows {
        let (b, oy) = (row / g.oh, row % g.oh);
        let y0 = (oy * g.sh) as isize - g.pt as isize;
        let ys = y0.max(0) as usize..((y0 + g.kh as isize).min(g.h as isize)).max(0) as usize;
        for ox in 0..g.ow {
            let x0 = (ox * g.sw) as isize - g.pl as isize;
            let xs = x0.max(0) as usize..((x0 + g.kw as isize).min(g.w as isize)).max(0) as usize;
            let out = std::slice::from_raw_parts_mut(y.add(((b * g.oh + oy) * g.ow + ox) * g.c), g.c);
            out.fill(0);
            for iy in ys.clone() {
                for ix in xs.clone() {
                    let px = std::slice::from_raw_parts(x.add(((b * g.h + iy) * g.w + ix) * g.c), g.c);
                    for (o, v) in out.iter_mut().zip(px) {
                        *o = (*o).max(*v);
                    }
                }
            }
        }
    }
}

/// Scalar reference of [`maxpool_u8`].
///
/// # Safety
/// As [`maxpool_u8`].
pub unsafe fn maxpool_u8_scalar(g: &PoolGeom, x: *const u8, y: *mut u8, rows: Range<usize>) {
    maxpool_body(g, x, y, rows)
}

/// [`maxpool_u8`] built for AVX2.
///
/// # Safety
/// As [`maxpool_u8`]; the CPU supports AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub unsafe fn maxpool_u8_avx2(g: &PoolGeom, x: *const u8, y: *mut u8, rows: Range<usize>) {
    maxpool_body(g, x, y, rows)
}

/// [`maxpool_u8`] built for AVX-512 (BW: byte maxima).
///
/// # Safety
/// As [`maxpool_u8`]; the CPU supports AVX-512 F and BW.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
pub unsafe fn maxpool_u8_avx512(g: &PoolGeom, x: *const u8, y: *mut u8, rows: Range<usize>) {
    maxpool_body(g, x, y, rows)
}

/// Computes `y[n, c]` for batch items `batch`: `rq.apply(Σ_p (x[n, p, c] - zx), c)`
/// over the `hw` pixels (kiln `QGlobalAveragePool`; `zx` in the stored
/// encoding, `rq` for `c` channels, usually one multiplier for all).
///
/// # Safety
/// `x` holds `[n, hw, c]`, `y` holds `[n, c]`, disjoint; `rq.n == c`
/// (checked). Calls on disjoint `batch` ranges may run concurrently.
pub unsafe fn global_avg_pool_u8(
    isa: Isa,
    x: *const u8,
    y: *mut u8,
    hw: usize,
    c: usize,
    zx: i32,
    rq: &Requant,
    batch: Range<usize>,
) {
    assert_eq!(rq.n, c, "requantization for {} channels, input has {c}", rq.n);
    match isa.int8_level() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx512Vnni
            if std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vl") =>
        {
            global_avg_pool_u8_avx512_16c(x, y, hw, c, zx, rq, batch)
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512 | Isa::Avx512Vnni => global_avg_pool_u8_avx2_8c(x, y, hw, c, zx, rq, batch),
        _ => global_avg_pool_u8_scalar(x, y, hw, c, zx, rq, batch),
    }
}

/// Scalar reference of [`global_avg_pool_u8`]: the definition.
///
/// # Safety
/// As [`global_avg_pool_u8`].
pub unsafe fn global_avg_pool_u8_scalar(
    x: *const u8,
    y: *mut u8,
    hw: usize,
    c: usize,
    zx: i32,
    rq: &Requant,
    batch: Range<usize>,
) {
    for b in batch {
        for ch in 0..c {
            let mut acc = 0i32;
            for p in 0..hw {
                acc = acc.wrapping_add(*x.add((b * hw + p) * c + ch) as i32 - zx);
            }
            *y.add(b * c + ch) = rq.apply(acc, ch);
        }
    }
}

/// `hw * zx` as the wrapping `i32` the sum of `hw` terms `x - zx` differs
/// from the sum of the `x` by.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
#[inline]
fn zero_sum(hw: usize, zx: i32) -> i32 {
    (hw as u64).wrapping_mul(zx as u64) as i32
}

#[cfg(target_arch = "x86_64")]
pub use x86::{global_avg_pool_u8_avx2_8c, global_avg_pool_u8_avx512_16c};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;
    use crate::quant::x86::{requant16, requant8};
    use std::arch::x86_64::*;

    /// AVX-512 [`global_avg_pool_u8`]: 64 channels at a time (4 registers
    /// of 16 `i32` sums, the last block masked), requantized by `requant16`.
    ///
    /// # Safety
    /// As [`global_avg_pool_u8`]; the CPU supports AVX-512 F, BW and VL.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub unsafe fn global_avg_pool_u8_avx512_16c(
        x: *const u8,
        y: *mut u8,
        hw: usize,
        c: usize,
        zx: i32,
        rq: &Requant,
        batch: Range<usize>,
    ) {
        assert_eq!(rq.n, c, "requantization for {} channels, input has {c}", rq.n);
        let zs = _mm512_set1_epi32(zero_sum(hw, zx));
        for b in batch {
            let img = x.add(b * hw * c);
            let mut c0 = 0;
            while c0 < c {
                let n = (c - c0).min(64);
                let masks: [u16; 4] = std::array::from_fn(|k| {
                    let v = n.saturating_sub(16 * k).min(16);
                    ((1u32 << v) - 1) as u16
                });
                let mut acc = [_mm512_setzero_si512(); 4];
                for p in 0..hw {
                    let px = img.add(p * c + c0);
                    for (k, a) in acc.iter_mut().enumerate() {
                        let v = _mm_maskz_loadu_epi8(masks[k], px.add(16 * k) as *const i8);
                        *a = _mm512_add_epi32(*a, _mm512_cvtepu8_epi32(v));
                    }
                }
                for (k, a) in acc.iter().enumerate() {
                    if masks[k] != 0 {
                        let q = requant16(rq, c0 + 16 * k, _mm512_sub_epi32(*a, zs));
                        _mm_mask_storeu_epi8(y.add(b * c + c0 + 16 * k) as *mut i8, masks[k], q);
                    }
                }
                c0 += n;
            }
        }
    }

    /// AVX2 [`global_avg_pool_u8`]: 32 channels at a time (4 registers of
    /// 8 `i32` sums), requantized by `requant8`; the last `c % 8` channels
    /// scalar.
    ///
    /// # Safety
    /// As [`global_avg_pool_u8`]; the CPU supports AVX2.
    #[target_feature(enable = "avx2")]
    pub unsafe fn global_avg_pool_u8_avx2_8c(
        x: *const u8,
        y: *mut u8,
        hw: usize,
        c: usize,
        zx: i32,
        rq: &Requant,
        batch: Range<usize>,
    ) {
        assert_eq!(rq.n, c, "requantization for {} channels, input has {c}", rq.n);
        let zs = _mm256_set1_epi32(zero_sum(hw, zx));
        let c8 = c / 8 * 8;
        for b in batch.clone() {
            let img = x.add(b * hw * c);
            let mut c0 = 0;
            while c0 < c8 {
                let nv = ((c8 - c0) / 8).min(4);
                let mut acc = [_mm256_setzero_si256(); 4];
                for p in 0..hw {
                    let px = img.add(p * c + c0);
                    for (k, a) in acc.iter_mut().enumerate().take(nv) {
                        let v = _mm_loadl_epi64(px.add(8 * k) as *const _);
                        *a = _mm256_add_epi32(*a, _mm256_cvtepu8_epi32(v));
                    }
                }
                for (k, a) in acc.iter().enumerate().take(nv) {
                    let q = requant8(rq, c0 + 8 * k, _mm256_sub_epi32(*a, zs));
                    _mm_storel_epi64(y.add(b * c + c0 + 8 * k) as *mut _, q);
                }
                c0 += 8 * nv;
            }
        }
        if c8 < c {
            for b in batch {
                for ch in c8..c {
                    let mut acc = 0i32;
                    for p in 0..hw {
                        acc = acc.wrapping_add(*x.add((b * hw + p) * c + ch) as i32 - zx);
                    }
                    *y.add(b * c + ch) = rq.apply(acc, ch);
                }
            }
        }
    }
}
