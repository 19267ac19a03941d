//! Depthwise 2-D convolution, NHWC, with fused bias, residual and activation.
//!
//! `y[n, oy, ox, c] = act(bias[c] + sum_{ky,kx} x[n, iy, ix, c] * w[c, ky, kx] [+ r[n, oy, ox, c]])`
//! with `iy = oy*sh - pt + ky*dh`, `ix = ox*sw - pl + kx*dw`; taps outside
//! the input are zero padding (ONNX `Conv` with `group = C`, one filter per
//! channel). Any kernel size, stride, dilation and padding; the SIMD kernels
//! vectorize across channels (16 or 8 per register, masked tails), so the
//! common 3x3 and 5x5 at strides 1 and 2 all take the same fast path.
//!
//! Kernels: [`dwconv_f32_avx512_16c`], [`dwconv_f32_avx2_8c`], reference
//! [`dwconv_f32_scalar`].

use crate::{Activation, Isa};
use std::ops::Range;

/// Geometry of one depthwise convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DwGeom {
    /// Batch.
    pub n: usize,
    /// Input height, width, channels.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Channels (in = out).
    pub c: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Stride along H.
    pub sh: usize,
    /// Stride along W.
    pub sw: usize,
    /// Dilation along H.
    pub dh: usize,
    /// Dilation along W.
    pub dw: usize,
    /// Padding at the top.
    pub pt: usize,
    /// Padding at the left.
    pub pl: usize,
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
}

impl DwGeom {
    /// Output rows over the batch (`n * oh`): the unit of work splitting.
    pub fn rows(&self) -> usize {
        self.n * self.oh
    }
    /// Multiply-accumulates of the whole convolution.
    pub fn macs(&self) -> u64 {
        (self.n * self.oh * self.ow * self.c * self.kh * self.kw) as u64
    }
}

/// Depthwise weights packed tap-major (`[kh*kw][cpad]`) with a padded bias.
#[derive(Debug, Clone)]
pub struct PackedDw {
    /// ISA these are packed for.
    pub isa: Isa,
    /// Channels.
    pub c: usize,
    /// Channels padded to the vector width.
    pub cpad: usize,
    /// Taps (`kh * kw`).
    pub taps: usize,
    w: Vec<f32>,
    bias: Vec<f32>,
}

impl PackedDw {
    /// Packs ONNX depthwise weights `[C, 1, kh, kw]` (flattened, `taps = kh*kw`)
    /// and an optional bias of `C` values.
    pub fn pack(isa: Isa, c: usize, taps: usize, w: &[f32], bias: Option<&[f32]>) -> PackedDw {
        assert!(w.len() >= c * taps, "depthwise weights too short");
        let lanes = match isa {
            Isa::Avx512 => 16,
            Isa::Avx2 => 8,
            Isa::Scalar => 1,
        };
        let cpad = c.div_ceil(lanes) * lanes;
        let mut pw = vec![0f32; taps * cpad];
        for ch in 0..c {
            for t in 0..taps {
                pw[t * cpad + ch] = w[ch * taps + t];
            }
        }
        let mut pb = vec![0f32; cpad];
        if let Some(b) = bias {
            pb[..c].copy_from_slice(&b[..c]);
        }
        PackedDw {
            isa,
            c,
            cpad,
            taps,
            w: pw,
            bias: pb,
        }
    }
    /// Bytes held.
    pub fn bytes(&self) -> usize {
        (self.w.len() + self.bias.len()) * 4
    }
}

/// Pointers of one depthwise call.
#[derive(Debug, Clone, Copy)]
pub struct DwArgs {
    /// Input `[n, h, w, c]`.
    pub x: *const f32,
    /// Residual `[n, oh, ow, c]` or null.
    pub r: *const f32,
    /// Output `[n, oh, ow, c]`.
    pub y: *mut f32,
    /// Epilogue activation.
    pub act: Activation,
}
// SAFETY: see `dwconv_f32_raw`; tasks write disjoint output rows.
unsafe impl Send for DwArgs {}
unsafe impl Sync for DwArgs {}

/// Valid kernel-tap range `k` such that `o*s - p + k*d` lies in `0..len`.
#[inline]
fn tap_range(o: usize, s: usize, p: usize, d: usize, k: usize, len: usize) -> Range<usize> {
    let base = (o * s) as isize - p as isize;
    let d = d as isize;
    let mut lo = 0isize;
    if base < 0 {
        lo = (-base + d - 1) / d;
    }
    // need base + k*d <= len-1  =>  k <= (len-1-base)/d
    let top = len as isize - 1 - base;
    let hi = if top < 0 { 0 } else { (top / d + 1).min(k as isize) };
    (lo.min(hi) as usize)..(hi.max(0) as usize)
}

/// Output columns `in_lo..in_hi` whose window lies entirely inside the input
/// along W (no padding taps).
fn interior(g: &DwGeom) -> (usize, usize) {
    let lo = g.pl.div_ceil(g.sw);
    let span = (g.kw - 1) * g.dw;
    let hi = if g.w + g.pl < span + 1 {
        0
    } else {
        ((g.w - 1 + g.pl - span) / g.sw + 1).min(g.ow)
    };
    (lo.min(hi), hi)
}

/// Computes output rows `rows` (indices into `n * oh`).
///
/// # Safety
/// `x`, `y` (and `r` if not null) must be valid for the geometry; `y` may
/// alias `r` exactly, not `x`. Calls on disjoint `rows` may run concurrently.
pub unsafe fn dwconv_f32_raw(g: &DwGeom, wts: &PackedDw, a: &DwArgs, rows: Range<usize>) {
    match wts.isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => dwconv_f32_avx512_16c(g, wts, a, rows.clone()),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => dwconv_f32_avx2_8c(g, wts, a, rows.clone()),
        _ => dwconv_f32_scalar(g, wts, a, rows.clone()),
    }
    if a.act.clamp_bounds().is_none() {
        let len = rows.len() * g.ow * g.c;
        let s = std::slice::from_raw_parts_mut(a.y.add(rows.start * g.ow * g.c), len);
        a.act.apply_slice(s);
    }
}

/// Scalar reference.
///
/// # Safety
/// As [`dwconv_f32_raw`].
pub unsafe fn dwconv_f32_scalar(g: &DwGeom, wts: &PackedDw, a: &DwArgs, rows: Range<usize>) {
    let (lo, hi) = a.act.clamp_bounds().unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
    let cp = wts.cpad;
    for row in rows {
        let (b, oy) = (row / g.oh, row % g.oh);
        let kys = tap_range(oy, g.sh, g.pt, g.dh, g.kh, g.h);
        for ox in 0..g.ow {
            let kxs = tap_range(ox, g.sw, g.pl, g.dw, g.kw, g.w);
            let o = ((b * g.oh + oy) * g.ow + ox) * g.c;
            for ch in 0..g.c {
                let mut acc = wts.bias[ch];
                for ky in kys.clone() {
                    let iy = oy * g.sh + ky * g.dh - g.pt;
                    for kx in kxs.clone() {
                        let ix = ox * g.sw + kx * g.dw - g.pl;
                        acc += *a.x.add(((b * g.h + iy) * g.w + ix) * g.c + ch)
                            * wts.w[(ky * g.kw + kx) * cp + ch];
                    }
                }
                if !a.r.is_null() {
                    acc += *a.r.add(o + ch);
                }
                if !acc.is_nan() {
                    acc = acc.max(lo).min(hi);
                }
                *a.y.add(o + ch) = acc;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub use x86::{dwconv_f32_avx2_8c, dwconv_f32_avx512_16c};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;
    use crate::gemm::x86_mask8;
    use std::arch::x86_64::*;

    /// AVX-512 depthwise convolution, 16 channels per register, 8 output
    /// pixels at a time in the interior (8 independent accumulator chains).
    ///
    /// # Safety
    /// As [`dwconv_f32_raw`]; the CPU must support AVX-512 F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn dwconv_f32_avx512_16c(g: &DwGeom, wts: &PackedDw, a: &DwArgs, rows: Range<usize>) {
        const PX: usize = 8;
        let (lo, hi) = a.act.clamp_bounds().unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
        let (lo, hi) = (_mm512_set1_ps(lo), _mm512_set1_ps(hi));
        let cp = wts.cpad;
        let wp = wts.w.as_ptr();
        let bp = wts.bias.as_ptr();
        let blocks = g.c.div_ceil(16);
        let tail = g.c % 16;
        let (in_lo, in_hi) = interior(g);
        let xstep = g.sw * g.c;
        for row in rows {
            let (b, oy) = (row / g.oh, row % g.oh);
            let kys = tap_range(oy, g.sh, g.pt, g.dh, g.kh, g.h);
            let orow = ((b * g.oh + oy) * g.ow) * g.c;
            let mut ox = 0;
            while ox < g.ow {
                let group = ox >= in_lo && ox + PX <= in_hi;
                for cb in 0..blocks {
                    let c0 = cb * 16;
                    let m: u16 = if cb + 1 < blocks || tail == 0 {
                        0xffff
                    } else {
                        ((1u32 << tail) - 1) as u16
                    };
                    let bias = _mm512_loadu_ps(bp.add(c0));
                    if group {
                        let mut acc = [bias; PX];
                        for ky in kys.clone() {
                            let iy = oy * g.sh + ky * g.dh - g.pt;
                            let xrow = a.x.add((b * g.h + iy) * g.w * g.c + c0);
                            let wrow = wp.add(ky * g.kw * cp + c0);
                            for kx in 0..g.kw {
                                let wv = _mm512_loadu_ps(wrow.add(kx * cp));
                                let xb = xrow.add((ox * g.sw + kx * g.dw - g.pl) * g.c);
                                let mut xp = xb;
                                for acc in acc.iter_mut() {
                                    *acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, xp), wv, *acc);
                                    xp = xp.add(xstep);
                                }
                            }
                        }
                        for (j, mut v) in acc.into_iter().enumerate() {
                            let o = orow + (ox + j) * g.c + c0;
                            if !a.r.is_null() {
                                v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, a.r.add(o)));
                            }
                            v = _mm512_min_ps(hi, _mm512_max_ps(lo, v));
                            _mm512_mask_storeu_ps(a.y.add(o), m, v);
                        }
                        continue;
                    }
                    if cb % 4 != 0 && !group {
                        continue; // done with its group of four below
                    }
                    // Border pixel: up to four channel blocks at once
                    // (independent accumulator chains).
                    let nb = (blocks - cb).min(4);
                    let kxs = tap_range(ox, g.sw, g.pl, g.dw, g.kw, g.w);
                    let mut acc = [_mm512_setzero_ps(); 4];
                    let mut ms = [0u16; 4];
                    for j in 0..nb {
                        let cbj = cb + j;
                        ms[j] = if cbj + 1 < blocks || tail == 0 {
                            0xffff
                        } else {
                            ((1u32 << tail) - 1) as u16
                        };
                        acc[j] = _mm512_loadu_ps(bp.add(cbj * 16));
                    }
                    for ky in kys.clone() {
                        let iy = oy * g.sh + ky * g.dh - g.pt;
                        let xrow = a.x.add((b * g.h + iy) * g.w * g.c + c0);
                        let wrow = wp.add(ky * g.kw * cp + c0);
                        for kx in kxs.clone() {
                            let ix = ox * g.sw + kx * g.dw - g.pl;
                            let xp = xrow.add(ix * g.c);
                            let wq = wrow.add(kx * cp);
                            for j in 0..4 {
                                if j < nb {
                                    let xv = _mm512_maskz_loadu_ps(ms[j], xp.add(j * 16));
                                    acc[j] = _mm512_fmadd_ps(xv, _mm512_loadu_ps(wq.add(j * 16)), acc[j]);
                                }
                            }
                        }
                    }
                    for j in 0..nb {
                        let o = orow + ox * g.c + c0 + j * 16;
                        let mut v = acc[j];
                        if !a.r.is_null() {
                            v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(ms[j], a.r.add(o)));
                        }
                        v = _mm512_min_ps(hi, _mm512_max_ps(lo, v));
                        _mm512_mask_storeu_ps(a.y.add(o), ms[j], v);
                    }
                }
                ox += if group { PX } else { 1 };
            }
        }
    }

    /// AVX2+FMA depthwise convolution, 8 channels per register, 4 output
    /// pixels at a time in the interior.
    ///
    /// # Safety
    /// As [`dwconv_f32_raw`]; the CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dwconv_f32_avx2_8c(g: &DwGeom, wts: &PackedDw, a: &DwArgs, rows: Range<usize>) {
        const PX: usize = 4;
        let (lo, hi) = a.act.clamp_bounds().unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
        let (lo, hi) = (_mm256_set1_ps(lo), _mm256_set1_ps(hi));
        let cp = wts.cpad;
        let wp = wts.w.as_ptr();
        let bp = wts.bias.as_ptr();
        let blocks = g.c.div_ceil(8);
        let tail = g.c % 8;
        let (in_lo, in_hi) = interior(g);
        let xstep = g.sw * g.c;
        for row in rows {
            let (b, oy) = (row / g.oh, row % g.oh);
            let kys = tap_range(oy, g.sh, g.pt, g.dh, g.kh, g.h);
            let orow = ((b * g.oh + oy) * g.ow) * g.c;
            let mut ox = 0;
            while ox < g.ow {
                let n = if ox >= in_lo && ox + PX <= in_hi { PX } else { 1 };
                for cb in 0..blocks {
                    let c0 = cb * 8;
                    let full = cb + 1 < blocks || tail == 0;
                    let m = x86_mask8(if full { 8 } else { tail });
                    let ld = |p: *const f32| {
                        if full {
                            _mm256_loadu_ps(p)
                        } else {
                            _mm256_maskload_ps(p, m)
                        }
                    };
                    let bias = _mm256_loadu_ps(bp.add(c0));
                    let mut acc = [bias; PX];
                    if n == PX {
                        for ky in kys.clone() {
                            let iy = oy * g.sh + ky * g.dh - g.pt;
                            let xrow = a.x.add((b * g.h + iy) * g.w * g.c + c0);
                            let wrow = wp.add(ky * g.kw * cp + c0);
                            for kx in 0..g.kw {
                                let wv = _mm256_loadu_ps(wrow.add(kx * cp));
                                let xb = xrow.add((ox * g.sw + kx * g.dw - g.pl) * g.c);
                                let mut xp = xb;
                                for acc in acc.iter_mut() {
                                    *acc = _mm256_fmadd_ps(ld(xp), wv, *acc);
                                    xp = xp.add(xstep);
                                }
                            }
                        }
                    } else {
                        let kxs = tap_range(ox, g.sw, g.pl, g.dw, g.kw, g.w);
                        for ky in kys.clone() {
                            let iy = oy * g.sh + ky * g.dh - g.pt;
                            let xrow = a.x.add((b * g.h + iy) * g.w * g.c + c0);
                            let wrow = wp.add(ky * g.kw * cp + c0);
                            for kx in kxs.clone() {
                                let ix = ox * g.sw + kx * g.dw - g.pl;
                                acc[0] = _mm256_fmadd_ps(
                                    ld(xrow.add(ix * g.c)),
                                    _mm256_loadu_ps(wrow.add(kx * cp)),
                                    acc[0],
                                );
                            }
                        }
                    }
                    for (j, mut v) in acc.into_iter().take(n).enumerate() {
                        let o = orow + (ox + j) * g.c + c0;
                        if !a.r.is_null() {
                            v = _mm256_add_ps(v, ld(a.r.add(o)));
                        }
                        v = _mm256_min_ps(hi, _mm256_max_ps(lo, v));
                        if full {
                            _mm256_storeu_ps(a.y.add(o), v);
                        } else {
                            _mm256_maskstore_ps(a.y.add(o), m, v);
                        }
                    }
                }
                ox += n;
            }
        }
    }
}
