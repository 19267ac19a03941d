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
        let isa = isa.float_level();
        assert!(w.len() >= c * taps, "depthwise weights too short");
        let lanes = lanes(isa);
        let cpad = c.div_ceil(lanes) * lanes;
        // Tap-major: one tap's weights for all channels are contiguous.
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

    /// The packed weight of channel `ch`, tap `t`.
    #[inline]
    fn w_at(&self, ch: usize, t: usize) -> f32 {
        self.w[t * self.cpad + ch]
    }
    /// Bytes held.
    pub fn bytes(&self) -> usize {
        (self.w.len() + self.bias.len()) * 4
    }
}

/// Channels per register of `isa`'s kernel.
fn lanes(isa: Isa) -> usize {
    match isa {
        Isa::Avx512 => 16,
        Isa::Avx2 => 8,
        Isa::Scalar => 1,
        Isa::Avx512Vnni | Isa::Avx512Amx => lanes(Isa::Avx512),
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
#[cfg(target_arch = "x86_64")]
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
                        acc +=
                            *a.x.add(((b * g.h + iy) * g.w + ix) * g.c + ch) * wts.w_at(ch, ky * g.kw + kx);
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

/// Most taps (`kh * kw`) the SIMD kernels take; larger kernels use the scalar one.
#[cfg(target_arch = "x86_64")]
const MAXT: usize = 64;

/// The valid taps of output pixel `(b, oy, ox)`: input pixel pointers and the
/// matching weight rows, in `(ky, kx)` order. Padding taps are skipped (they
/// add zero). Returns the count.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn pixel_taps(
    g: &DwGeom,
    x: *const f32,
    w: *const f32,
    cpad: usize,
    (b, oy, ox): (usize, usize, usize),
    tp: &mut [*const f32; MAXT],
    tw: &mut [*const f32; MAXT],
) -> usize {
    let kys = tap_range(oy, g.sh, g.pt, g.dh, g.kh, g.h);
    let kxs = tap_range(ox, g.sw, g.pl, g.dw, g.kw, g.w);
    let mut nt = 0;
    for ky in kys {
        let iy = oy * g.sh + ky * g.dh - g.pt;
        for kx in kxs.clone() {
            let ix = ox * g.sw + kx * g.dw - g.pl;
            tp[nt] = x.add(((b * g.h + iy) * g.w + ix) * g.c);
            tw[nt] = w.add((ky * g.kw + kx) * cpad);
            nt += 1;
        }
    }
    nt
}

/// Kernel widths whose border masks are precomputed per pixel group.
#[cfg(target_arch = "x86_64")]
const MAXKW: usize = 8;

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;
    use crate::gemm::x86_mask8;
    use std::arch::x86_64::*;

    /// AVX-512 depthwise convolution, one output pixel at a time over its
    /// valid taps (padding taps skipped), channels in chunks of up to 128
    /// (8 registers: 8 independent accumulator chains), the last 16-channel
    /// block masked.
    ///
    /// # Safety
    /// As [`dwconv_f32_raw`]; the CPU must support AVX-512 F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn dwconv_f32_avx512_16c(g: &DwGeom, wts: &PackedDw, a: &DwArgs, rows: Range<usize>) {
        if g.kh * g.kw > MAXT {
            return dwconv_f32_scalar(g, wts, a, rows);
        }
        let slide = g.sw == 1 && g.dw == 1 && (g.kw == 3 || g.kw == 5);
        if g.c <= 64 && !slide {
            // Too few channels for independent chains across channels:
            // chains across the pixels of a row instead.
            return dwconv_f32_avx512_rows8(g, wts, a, rows);
        }
        let (lo, hi) = a.act.clamp_bounds().unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
        let (lo, hi) = (_mm512_set1_ps(lo), _mm512_set1_ps(hi));
        let mut tp = [std::ptr::null::<f32>(); MAXT];
        let mut tw = [std::ptr::null::<f32>(); MAXT];
        let blocks = g.c.div_ceil(16);
        let tail = g.c % 16;
        let last: u16 = if tail == 0 {
            0xffff
        } else {
            ((1u32 << tail) - 1) as u16
        };
        let pair_off = (g.sw * g.c) as isize;
        // Stride 1, dilation 1, kernel width 3 or 5: the interior of each
        // row takes the sliding-window kernel.
        let (in_lo, in_hi) = interior(g);
        for row in rows {
            let (b, oy) = (row / g.oh, row % g.oh);
            let mut ox = 0;
            while ox < g.ow {
                if slide && ox == in_lo && in_hi > in_lo {
                    match g.kw {
                        3 => slide512::<3>(g, wts, a, (b, oy), in_lo..in_hi, (lo, hi)),
                        _ => slide512::<5>(g, wts, a, (b, oy), in_lo..in_hi, (lo, hi)),
                    }
                    ox = in_hi;
                    continue;
                }
                let nt = pixel_taps(g, a.x, wts.w.as_ptr(), wts.cpad, (b, oy, ox), &mut tp, &mut tw);
                // Two neighbours with the same valid taps share every weight load.
                let pair = ox + 1 < g.ow
                    && tap_range(ox, g.sw, g.pl, g.dw, g.kw, g.w)
                        == tap_range(ox + 1, g.sw, g.pl, g.dw, g.kw, g.w);
                let o = ((b * g.oh + oy) * g.ow + ox) * g.c;
                let px = Px {
                    tp: &tp,
                    tw: &tw,
                    nt,
                    bias: wts.bias.as_ptr(),
                    y: a.y.add(o),
                    r: if a.r.is_null() { a.r } else { a.r.add(o) },
                    lo,
                    hi,
                };
                let mut cb = 0;
                while cb < blocks {
                    // Up to 8 blocks at once; the remainder in one chunk of
                    // exactly its size (as many independent chains as possible).
                    let nb = (blocks - cb).min(8);
                    let m = if cb + nb == blocks { last } else { 0xffff };
                    let c0 = cb * 16;
                    macro_rules! go {
                        ($($n:literal)*) => {
                            match nb {
                                $($n => if pair {
                                    pair512::<$n>(&px, c0, m, pair_off, g.c)
                                } else {
                                    chunk512::<$n>(&px, c0, m)
                                },)*
                                _ => unreachable!(),
                            }
                        };
                    }
                    go!(1 2 3 4 5 6 7 8);
                    cb += nb;
                }
                ox += if pair { 2 } else { 1 };
            }
        }
    }

    /// AVX-512 depthwise convolution for few channels (at most 64): 16
    /// channels per register, 8 output pixels of one row at a time (8 independent accumulator chains, each
    /// weight vector loaded once for the 8). Channel blocks are the outer
    /// loop so one block's kernel and input rows stay in L1. Windows that
    /// reach into the padding use per-pixel load masks (masked-off lanes
    /// read nothing), so borders take the same path.
    ///
    /// # Safety
    /// As [`dwconv_f32_raw`]; the CPU must support AVX-512 F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn dwconv_f32_avx512_rows8(g: &DwGeom, wts: &PackedDw, a: &DwArgs, rows: Range<usize>) {
        const PX: usize = 8;
        let (lo, hi) = a.act.clamp_bounds().unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
        let (lo, hi) = (_mm512_set1_ps(lo), _mm512_set1_ps(hi));
        let cpad = wts.cpad;
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
            for cb in 0..blocks {
                let c0 = cb * 16;
                let m: u16 = if cb + 1 < blocks || tail == 0 {
                    0xffff
                } else {
                    ((1u32 << tail) - 1) as u16
                };
                let wb = wp.add(c0);
                let bias = _mm512_loadu_ps(bp.add(c0));
                let mut ox = 0;
                while ox < g.ow {
                    // Segments: left border, interior, right border; chunks of PX.
                    let interior_px = ox >= in_lo && ox < in_hi;
                    let seg_end = if ox < in_lo {
                        in_lo
                    } else if interior_px {
                        in_hi
                    } else {
                        g.ow
                    };
                    let npx = PX.min(seg_end - ox);
                    let mut acc = [bias; PX];
                    if interior_px {
                        for ky in kys.clone() {
                            let iy = oy * g.sh + ky * g.dh - g.pt;
                            let xrow = a.x.add((b * g.h + iy) * g.w * g.c + c0);
                            let wk = wb.add(ky * g.kw * cpad);
                            for kx in 0..g.kw {
                                let wv = _mm512_loadu_ps(wk.add(kx * cpad));
                                let mut xp = xrow.add((ox * g.sw + kx * g.dw - g.pl) * g.c);
                                for (j, acc) in acc.iter_mut().enumerate() {
                                    if j < npx {
                                        *acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, xp), wv, *acc);
                                        xp = xp.add(xstep);
                                    }
                                }
                            }
                        }
                    } else {
                        // Per (kx, pixel): its load mask (0 outside the input:
                        // masked-off lanes are not read, whatever the address)
                        // and its offset, computed once for all ky.
                        let mut masks = [[0u16; PX]; MAXKW];
                        let mut offs = [[0isize; PX]; MAXKW];
                        let kw = g.kw.min(MAXKW);
                        for kx in 0..kw {
                            for j in 0..PX {
                                let ix = ((ox + j) * g.sw + kx * g.dw) as isize - g.pl as isize;
                                let ok = j < npx && ix >= 0 && ix < g.w as isize;
                                masks[kx][j] = if ok { m } else { 0 };
                                offs[kx][j] = if ok { ix * g.c as isize } else { 0 };
                            }
                        }
                        for ky in kys.clone() {
                            let iy = oy * g.sh + ky * g.dh - g.pt;
                            let xrow = a.x.add((b * g.h + iy) * g.w * g.c + c0);
                            let wk = wb.add(ky * g.kw * cpad);
                            for kx in 0..g.kw {
                                let wv = _mm512_loadu_ps(wk.add(kx * cpad));
                                if kx < MAXKW {
                                    for (j, acc) in acc.iter_mut().enumerate() {
                                        if j < npx {
                                            let xv =
                                                _mm512_maskz_loadu_ps(masks[kx][j], xrow.offset(offs[kx][j]));
                                            *acc = _mm512_fmadd_ps(xv, wv, *acc);
                                        }
                                    }
                                } else {
                                    for (j, acc) in acc.iter_mut().enumerate() {
                                        let ix = ((ox + j) * g.sw + kx * g.dw) as isize - g.pl as isize;
                                        if j < npx && ix >= 0 && ix < g.w as isize {
                                            let xv = _mm512_maskz_loadu_ps(m, xrow.offset(ix * g.c as isize));
                                            *acc = _mm512_fmadd_ps(xv, wv, *acc);
                                        }
                                    }
                                }
                            }
                        }
                    }
                    for (j, mut v) in acc.into_iter().take(npx).enumerate() {
                        let o = orow + (ox + j) * g.c + c0;
                        if !a.r.is_null() {
                            v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, a.r.add(o)));
                        }
                        v = _mm512_min_ps(hi, _mm512_max_ps(lo, v));
                        _mm512_mask_storeu_ps(a.y.add(o), m, v);
                    }
                    ox += npx;
                }
            }
        }
    }

    struct Px<'a, V> {
        tp: &'a [*const f32; MAXT],
        tw: &'a [*const f32; MAXT],
        nt: usize,
        bias: *const f32,
        y: *mut f32,
        r: *const f32,
        lo: V,
        hi: V,
    }

    /// `NB` 16-channel blocks from channel `c0`; the last one masked by `last`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn chunk512<const NB: usize>(px: &Px<__m512>, c0: usize, last: u16) {
        let mut acc = [_mm512_setzero_ps(); NB];
        for (q, acc) in acc.iter_mut().enumerate() {
            *acc = _mm512_loadu_ps(px.bias.add(c0 + 16 * q));
        }
        for t in 0..px.nt {
            let xp = px.tp[t].add(c0);
            let wp = px.tw[t].add(c0);
            for (q, acc) in acc.iter_mut().enumerate() {
                let m = if q + 1 == NB { last } else { 0xffff };
                let xv = _mm512_maskz_loadu_ps(m, xp.add(16 * q));
                *acc = _mm512_fmadd_ps(xv, _mm512_loadu_ps(wp.add(16 * q)), *acc);
            }
        }
        for (q, mut v) in acc.into_iter().enumerate() {
            let m = if q + 1 == NB { last } else { 0xffff };
            let off = c0 + 16 * q;
            if !px.r.is_null() {
                v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, px.r.add(off)));
            }
            v = _mm512_min_ps(px.hi, _mm512_max_ps(px.lo, v));
            _mm512_mask_storeu_ps(px.y.add(off), m, v);
        }
    }

    /// Stride-1 depthwise convolution over output pixels `oxs` of one row,
    /// whose windows lie inside the input along W: 8 output pixels at a
    /// time share, per kernel row, the `8 + KW - 1` input vectors they read
    /// (each loaded once) and each weight vector (loaded once for the 8), so
    /// a 5x5 kernel row costs 17 loads for 40 multiply-adds.
    #[target_feature(enable = "avx512f")]
    unsafe fn slide512<const KW: usize>(
        g: &DwGeom,
        wts: &PackedDw,
        a: &DwArgs,
        (b, oy): (usize, usize),
        oxs: Range<usize>,
        (lo, hi): (__m512, __m512),
    ) {
        const P: usize = 8;
        let kys = tap_range(oy, g.sh, g.pt, g.dh, g.kh, g.h);
        let blocks = g.c.div_ceil(16);
        let tail = g.c % 16;
        let cpad = wts.cpad;
        let wp = wts.w.as_ptr();
        for cb in 0..blocks {
            let c0 = cb * 16;
            let m: u16 = if cb + 1 < blocks || tail == 0 {
                0xffff
            } else {
                ((1u32 << tail) - 1) as u16
            };
            let bias = _mm512_loadu_ps(wts.bias.as_ptr().add(c0));
            let mut ox = oxs.start;
            while ox < oxs.end {
                let npx = P.min(oxs.end - ox);
                let mut acc = [bias; P];
                for ky in kys.clone() {
                    let iy = oy * g.sh + ky * g.dh - g.pt;
                    // Input columns ox - pl .. ox - pl + npx + KW - 1 of row iy.
                    let xrow = a.x.add(((b * g.h + iy) * g.w + ox - g.pl) * g.c + c0);
                    let mut xv = [_mm512_setzero_ps(); 12];
                    for (j, v) in xv.iter_mut().enumerate().take(P + KW - 1) {
                        if j < npx + KW - 1 {
                            *v = _mm512_maskz_loadu_ps(m, xrow.add(j * g.c));
                        }
                    }
                    let wk = wp.add(ky * g.kw * cpad + c0);
                    for kx in 0..KW {
                        let wv = _mm512_loadu_ps(wk.add(kx * cpad));
                        for (p, acc) in acc.iter_mut().enumerate() {
                            *acc = _mm512_fmadd_ps(xv[p + kx], wv, *acc);
                        }
                    }
                }
                let o = ((b * g.oh + oy) * g.ow + ox) * g.c + c0;
                for (p, mut v) in acc.into_iter().enumerate().take(npx) {
                    let op = o + p * g.c;
                    if !a.r.is_null() {
                        v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, a.r.add(op)));
                    }
                    v = _mm512_min_ps(hi, _mm512_max_ps(lo, v));
                    _mm512_mask_storeu_ps(a.y.add(op), m, v);
                }
                ox += npx;
            }
        }
    }

    /// [`chunk512`] for two horizontally adjacent pixels with the same taps
    /// (the second's input `xoff` further, its output `c` further).
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn pair512<const NB: usize>(px: &Px<__m512>, c0: usize, last: u16, xoff: isize, c: usize) {
        let mut acc0 = [_mm512_setzero_ps(); NB];
        for (q, acc) in acc0.iter_mut().enumerate() {
            *acc = _mm512_loadu_ps(px.bias.add(c0 + 16 * q));
        }
        let mut acc1 = acc0;
        for t in 0..px.nt {
            let xp = px.tp[t].add(c0);
            let xq = xp.offset(xoff);
            let wp = px.tw[t].add(c0);
            for q in 0..NB {
                let m = if q + 1 == NB { last } else { 0xffff };
                let wv = _mm512_loadu_ps(wp.add(16 * q));
                acc0[q] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, xp.add(16 * q)), wv, acc0[q]);
                acc1[q] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, xq.add(16 * q)), wv, acc1[q]);
            }
        }
        for (j, acc) in [acc0, acc1].into_iter().enumerate() {
            for (q, mut v) in acc.into_iter().enumerate() {
                let m = if q + 1 == NB { last } else { 0xffff };
                let off = j * c + c0 + 16 * q;
                if !px.r.is_null() {
                    v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, px.r.add(off)));
                }
                v = _mm512_min_ps(px.hi, _mm512_max_ps(px.lo, v));
                _mm512_mask_storeu_ps(px.y.add(off), m, v);
            }
        }
    }

    /// AVX2+FMA depthwise convolution, as [`dwconv_f32_avx512_16c`] with
    /// 8-channel registers, chunks of up to 64 channels.
    ///
    /// # Safety
    /// As [`dwconv_f32_raw`]; the CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dwconv_f32_avx2_8c(g: &DwGeom, wts: &PackedDw, a: &DwArgs, rows: Range<usize>) {
        if g.kh * g.kw > MAXT {
            return dwconv_f32_scalar(g, wts, a, rows);
        }
        let (lo, hi) = a.act.clamp_bounds().unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
        let (lo, hi) = (_mm256_set1_ps(lo), _mm256_set1_ps(hi));
        let mut tp = [std::ptr::null::<f32>(); MAXT];
        let mut tw = [std::ptr::null::<f32>(); MAXT];
        let blocks = g.c.div_ceil(8);
        let tail = g.c % 8;
        for row in rows {
            let (b, oy) = (row / g.oh, row % g.oh);
            for ox in 0..g.ow {
                let nt = pixel_taps(g, a.x, wts.w.as_ptr(), wts.cpad, (b, oy, ox), &mut tp, &mut tw);
                let o = ((b * g.oh + oy) * g.ow + ox) * g.c;
                let px = Px {
                    tp: &tp,
                    tw: &tw,
                    nt,
                    bias: wts.bias.as_ptr(),
                    y: a.y.add(o),
                    r: if a.r.is_null() { a.r } else { a.r.add(o) },
                    lo,
                    hi,
                };
                let mut cb = 0;
                while cb < blocks {
                    let left = blocks - cb;
                    let nb = if left >= 4 {
                        4
                    } else if left >= 2 {
                        2
                    } else {
                        1
                    };
                    let tail_here = if cb + nb == blocks { tail } else { 0 };
                    match nb {
                        4 => chunk256::<4>(&px, cb * 8, tail_here),
                        2 => chunk256::<2>(&px, cb * 8, tail_here),
                        _ => chunk256::<1>(&px, cb * 8, tail_here),
                    }
                    cb += nb;
                }
            }
        }
    }

    /// `NB` 8-channel blocks from `c0`; the last has `tail` valid lanes (0 = all).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn chunk256<const NB: usize>(px: &Px<__m256>, c0: usize, tail: usize) {
        let m = x86_mask8(if tail == 0 { 8 } else { tail });
        let ld = |p: *const f32, q: usize| {
            if q + 1 == NB && tail != 0 {
                _mm256_maskload_ps(p, m)
            } else {
                _mm256_loadu_ps(p)
            }
        };
        let mut acc = [_mm256_setzero_ps(); NB];
        for (q, acc) in acc.iter_mut().enumerate() {
            *acc = _mm256_loadu_ps(px.bias.add(c0 + 8 * q));
        }
        for t in 0..px.nt {
            let xp = px.tp[t].add(c0);
            let wp = px.tw[t].add(c0);
            for (q, acc) in acc.iter_mut().enumerate() {
                *acc = _mm256_fmadd_ps(ld(xp.add(8 * q), q), _mm256_loadu_ps(wp.add(8 * q)), *acc);
            }
        }
        for (q, mut v) in acc.into_iter().enumerate() {
            let off = c0 + 8 * q;
            if !px.r.is_null() {
                v = _mm256_add_ps(v, ld(px.r.add(off), q));
            }
            v = _mm256_min_ps(px.hi, _mm256_max_ps(px.lo, v));
            if q + 1 == NB && tail != 0 {
                _mm256_maskstore_ps(px.y.add(off), m, v);
            } else {
                _mm256_storeu_ps(px.y.add(off), v);
            }
        }
    }
}
