//! General 2-D convolution, NHWC, by blocked im2col + packed GEMM.
//!
//! For the stem (3 input channels), full 3x3/5x5 convolutions, strided 1x1
//! convolutions and grouped convolutions that are not depthwise. Output
//! pixels are processed in chunks of [`CHUNK`] rows: the chunk's patches are
//! gathered into a small scratch buffer (`CHUNK x K`, `K = kh*kw*ci/group`,
//! ordered `(ky, kx, ci)`), then multiplied by the weights packed as
//! [`PackedB`] (one per group) with the fused epilogue of [`crate::gemm`].
//! Scratch stays in L2 however large the image, unlike a whole-image im2col.
//!
//! `y[n, oy, ox, co] = act(bias[co] + sum x[n, iy, ix, g*cig + ci] * w[co, ci, ky, kx] [+ r])`
//! (ONNX `Conv`, <https://onnx.ai/onnx/operators/onnx__Conv.html>), with
//! `iy = oy*sh - pt + ky*dh`, zero outside the input.

use crate::gemm::{gemm_f32_raw, GemmArgs, PackedB};
use crate::{Activation, Isa};
use std::ops::Range;

/// Output pixels per im2col chunk (a multiple of every ISA's tile rows).
pub const CHUNK: usize = 96;

/// Geometry of one convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeom {
    /// Batch.
    pub n: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Input channels (all groups).
    pub ci: usize,
    /// Output channels (all groups).
    pub co: usize,
    /// Groups (`ci` and `co` divisible by it).
    pub group: usize,
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

impl ConvGeom {
    /// Output pixels over the batch (`n * oh * ow`): GEMM rows.
    pub fn pixels(&self) -> usize {
        self.n * self.oh * self.ow
    }
    /// The reduction length of one group: `kh * kw * ci / group`.
    pub fn k(&self) -> usize {
        self.kh * self.kw * (self.ci / self.group)
    }
    /// Scratch values one concurrent call needs.
    pub fn scratch_len(&self) -> usize {
        CHUNK * self.k()
    }
    /// Multiply-accumulates.
    pub fn macs(&self) -> u64 {
        (self.pixels() * self.co * self.k()) as u64
    }
    /// The same convolution as a depthwise one (`group == ci == co`).
    pub fn depthwise(&self) -> crate::dwconv::DwGeom {
        crate::dwconv::DwGeom {
            n: self.n,
            h: self.h,
            w: self.w,
            c: self.ci,
            kh: self.kh,
            kw: self.kw,
            sh: self.sh,
            sw: self.sw,
            dh: self.dh,
            dw: self.dw,
            pt: self.pt,
            pl: self.pl,
            oh: self.oh,
            ow: self.ow,
        }
    }
    /// True when the input can be used as A directly (1x1, stride 1, no
    /// padding, one group): the convolution is a plain GEMM.
    pub fn is_pointwise(&self) -> bool {
        self.kh == 1
            && self.kw == 1
            && self.sh == 1
            && self.sw == 1
            && self.pt == 0
            && self.pl == 0
            && self.group == 1
            && self.oh == self.h
            && self.ow == self.w
    }
}

/// Packs ONNX `Conv` weights `[co, ci/group, kh, kw]` (flattened) and bias
/// into one [`PackedB`] per group, rows ordered `(ky, kx, ci)` to match the
/// NHWC patches.
pub fn pack_conv_weights(isa: Isa, g: &ConvGeom, w: &[f32], bias: Option<&[f32]>) -> Vec<PackedB> {
    let isa = isa.float_level();
    let cig = g.ci / g.group;
    let cog = g.co / g.group;
    let k = g.k();
    assert!(w.len() >= g.co * k, "conv weights too short");
    (0..g.group)
        .map(|gi| {
            let b = bias.map(|b| &b[gi * cog..(gi + 1) * cog]);
            PackedB::pack(
                isa,
                k,
                cog,
                |kk, n| {
                    let ci = kk % cig;
                    let kx = (kk / cig) % g.kw;
                    let ky = kk / (cig * g.kw);
                    w[(((gi * cog + n) * cig + ci) * g.kh + ky) * g.kw + kx]
                },
                b,
            )
        })
        .collect()
}

/// Gathers the patches of output pixels `pix` of group `gi` into `dst`
/// (`pix.len() x K`, row-major; zeros for padding).
///
/// # Safety
/// `x` must hold the `[n, h, w, ci]` input.
pub unsafe fn im2col_nhwc(g: &ConvGeom, x: *const f32, gi: usize, pix: Range<usize>, dst: &mut [f32]) {
    let cig = g.ci / g.group;
    let k = g.k();
    for (r, p) in pix.enumerate() {
        let b = p / (g.oh * g.ow);
        let oy = (p / g.ow) % g.oh;
        let ox = p % g.ow;
        let row = &mut dst[r * k..(r + 1) * k];
        let mut o = 0;
        for ky in 0..g.kh {
            let iy = (oy * g.sh + ky * g.dh) as isize - g.pt as isize;
            for kx in 0..g.kw {
                let ix = (ox * g.sw + kx * g.dw) as isize - g.pl as isize;
                let seg = &mut row[o..o + cig];
                if iy < 0 || iy >= g.h as isize || ix < 0 || ix >= g.w as isize {
                    seg.fill(0.0);
                } else {
                    let src = x.add(((b * g.h + iy as usize) * g.w + ix as usize) * g.ci + gi * cig);
                    if cig < 16 {
                        // A call to memcpy per 3-channel segment (the stem) costs more than the copy.
                        for (j, d) in seg.iter_mut().enumerate() {
                            *d = *src.add(j);
                        }
                    } else {
                        seg.copy_from_slice(std::slice::from_raw_parts(src, cig));
                    }
                }
                o += cig;
            }
        }
    }
}

/// Pointers of one convolution call.
#[derive(Debug, Clone, Copy)]
pub struct ConvArgs {
    /// Input `[n, h, w, ci]`.
    pub x: *const f32,
    /// Residual `[n, oh, ow, co]` or null.
    pub r: *const f32,
    /// Output `[n, oh, ow, co]`.
    pub y: *mut f32,
    /// Epilogue activation.
    pub act: Activation,
}
// SAFETY: see `conv_f32_raw`.
unsafe impl Send for ConvArgs {}
unsafe impl Sync for ConvArgs {}

/// Computes output pixels `pix` (indices into `n * oh * ow`) of every group.
/// `scratch` holds at least [`ConvGeom::scratch_len`] values (unused for a
/// pointwise convolution).
///
/// # Safety
/// Pointers valid for the geometry; `y` may alias `r` exactly, not `x`.
/// Calls on disjoint `pix` may run concurrently with separate scratch.
pub unsafe fn conv_f32_raw(
    g: &ConvGeom,
    wts: &[PackedB],
    a: &ConvArgs,
    pix: Range<usize>,
    scratch: &mut [f32],
) {
    let cog = g.co / g.group;
    if g.is_pointwise() {
        let args = GemmArgs {
            m: g.pixels(),
            a: a.x,
            lda: g.ci,
            r: a.r,
            ldr: g.co,
            c: a.y,
            ldc: g.co,
            act: a.act,
        };
        gemm_f32_raw(&args, &wts[0], pix, 0..wts[0].panels());
        return;
    }
    let k = g.k();
    #[cfg(target_arch = "x86_64")]
    if wts[0].isa == Isa::Avx512 {
        x86::conv_avx512(g, wts, a, pix, scratch);
        return;
    }
    let mut p0 = pix.start;
    while p0 < pix.end {
        let p1 = (p0 + CHUNK).min(pix.end);
        for (gi, wg) in wts.iter().enumerate() {
            im2col_nhwc(g, a.x, gi, p0..p1, &mut scratch[..(p1 - p0) * k]);
            let off = p0 * g.co + gi * cog;
            let args = GemmArgs {
                m: p1 - p0,
                a: scratch.as_ptr(),
                lda: k,
                r: if a.r.is_null() { a.r } else { a.r.add(off) },
                ldr: g.co,
                c: a.y.add(off),
                ldc: g.co,
                act: a.act,
            };
            gemm_f32_raw(&args, wg, 0..p1 - p0, 0..wg.panels());
        }
        p0 = p1;
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;
    use crate::gemm::GemmArgs;
    use std::arch::x86_64::*;

    /// AVX-512 convolution by tiles of up to 12 output pixels: a tile whose
    /// windows all lie inside the input is computed straight from the NHWC
    /// input (implicit GEMM: each row of A is read in place, `(ky, kx)`
    /// blocks of `ci/group` contiguous values); a tile touching the padding
    /// is gathered by im2col first. Both paths do the same multiply-adds in
    /// the same order, so the result does not depend on the tiling.
    pub(super) unsafe fn conv_avx512(
        g: &ConvGeom,
        wts: &[PackedB],
        a: &ConvArgs,
        pix: Range<usize>,
        scratch: &mut [f32],
    ) {
        let k = g.k();
        let cog = g.co / g.group;
        let cig = g.ci / g.group;
        let len = pix.len();
        let tiles = len.div_ceil(12);
        // Valid output columns/rows of interior windows (no padding taps).
        let ox_lo = g.pl.div_ceil(g.sw);
        let ox_hi = if g.w + g.pl > (g.kw - 1) * g.dw {
            ((g.w + g.pl - (g.kw - 1) * g.dw - 1) / g.sw + 1).min(g.ow)
        } else {
            0
        };
        let oy_lo = g.pt.div_ceil(g.sh);
        let oy_hi = if g.h + g.pt > (g.kh - 1) * g.dh {
            ((g.h + g.pt - (g.kh - 1) * g.dh - 1) / g.sh + 1).min(g.oh)
        } else {
            0
        };
        let mut coords = [(0usize, 0usize, 0usize); 12];
        for t in 0..tiles {
            let r = crate::split_range(len, tiles, t);
            let (i0, mr) = (pix.start + r.start, r.len());
            // Pixel coordinates, stepped (no division per pixel).
            let (mut n, mut oy, mut ox) = (i0 / (g.oh * g.ow), (i0 / g.ow) % g.oh, i0 % g.ow);
            let mut direct = true;
            for c in coords.iter_mut().take(mr) {
                *c = (n, oy, ox);
                direct &= ox >= ox_lo && ox < ox_hi && oy >= oy_lo && oy < oy_hi;
                ox += 1;
                if ox == g.ow {
                    ox = 0;
                    oy += 1;
                    if oy == g.oh {
                        oy = 0;
                        n += 1;
                    }
                }
            }
            for (gi, wg) in wts.iter().enumerate() {
                let off = i0 * g.co + gi * cog;
                let c = a.y.add(off);
                let rr = if a.r.is_null() { a.r } else { a.r.add(off) };
                if direct {
                    let mut bases = [std::ptr::null::<f32>(); 12];
                    for (b, &(n, oy, ox)) in bases.iter_mut().zip(&coords).take(mr) {
                        let (iy, ix) = (oy * g.sh - g.pt, ox * g.sw - g.pl);
                        *b = a.x.add(((n * g.h + iy) * g.w + ix) * g.ci + gi * cig);
                    }
                    for p in 0..wg.panels() {
                        match mr {
                            1 => direct_tile::<1>(g, wg, &bases, p, c, rr, a.act),
                            2 => direct_tile::<2>(g, wg, &bases, p, c, rr, a.act),
                            3 => direct_tile::<3>(g, wg, &bases, p, c, rr, a.act),
                            4 => direct_tile::<4>(g, wg, &bases, p, c, rr, a.act),
                            5 => direct_tile::<5>(g, wg, &bases, p, c, rr, a.act),
                            6 => direct_tile::<6>(g, wg, &bases, p, c, rr, a.act),
                            7 => direct_tile::<7>(g, wg, &bases, p, c, rr, a.act),
                            8 => direct_tile::<8>(g, wg, &bases, p, c, rr, a.act),
                            9 => direct_tile::<9>(g, wg, &bases, p, c, rr, a.act),
                            10 => direct_tile::<10>(g, wg, &bases, p, c, rr, a.act),
                            11 => direct_tile::<11>(g, wg, &bases, p, c, rr, a.act),
                            _ => direct_tile::<12>(g, wg, &bases, p, c, rr, a.act),
                        }
                    }
                    if a.act.clamp_bounds().is_none() {
                        for i in 0..mr {
                            let row = std::slice::from_raw_parts_mut(c.add(i * g.co), cog);
                            a.act.apply_slice(row);
                        }
                    }
                } else {
                    im2col_nhwc(g, a.x, gi, i0..i0 + mr, &mut scratch[..mr * k]);
                    let args = GemmArgs {
                        m: mr,
                        a: scratch.as_ptr(),
                        lda: k,
                        r: rr,
                        ldr: g.co,
                        c,
                        ldc: g.co,
                        act: a.act,
                    };
                    gemm_f32_raw(&args, wg, 0..mr, 0..wg.panels());
                }
            }
        }
    }

    /// One MR x 32 tile of panel `p`, A read in place from the input.
    #[target_feature(enable = "avx512f")]
    unsafe fn direct_tile<const MR: usize>(
        g: &ConvGeom,
        wg: &PackedB,
        bases: &[*const f32; 12],
        p: usize,
        c: *mut f32,
        r: *const f32,
        act: Activation,
    ) {
        let k = wg.k;
        let cig = g.ci / g.group;
        let cog = g.co / g.group;
        let bp = wg.panel_ptr(p);
        let bias = wg.bias_ptr(p);
        let mut acc0 = [_mm512_loadu_ps(bias); MR];
        let mut acc1 = [_mm512_loadu_ps(bias.add(16)); MR];
        let mut kk = 0;
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let off = (ky * g.dh * g.w + kx * g.dw) * g.ci;
                for ci in 0..cig {
                    let w0 = _mm512_loadu_ps(bp.add(kk * 32));
                    let w1 = _mm512_loadu_ps(bp.add(kk * 32 + 16));
                    for i in 0..MR {
                        let av = _mm512_set1_ps(*bases[i].add(off + ci));
                        acc0[i] = _mm512_fmadd_ps(av, w0, acc0[i]);
                        acc1[i] = _mm512_fmadd_ps(av, w1, acc1[i]);
                    }
                    kk += 1;
                }
            }
        }
        debug_assert_eq!(kk, k);
        let cols = 32.min(cog - p * 32);
        let mask: u32 = if cols == 32 { u32::MAX } else { (1u32 << cols) - 1 };
        let (m0, m1) = (mask as u16, (mask >> 16) as u16);
        let (lo, hi) = act.clamp_bounds().unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
        let (lo, hi) = (_mm512_set1_ps(lo), _mm512_set1_ps(hi));
        for i in 0..MR {
            let o = i * g.co + p * 32;
            let (mut x0, mut x1) = (acc0[i], acc1[i]);
            if !r.is_null() {
                x0 = _mm512_add_ps(x0, _mm512_maskz_loadu_ps(m0, r.add(o)));
                x1 = _mm512_add_ps(x1, _mm512_maskz_loadu_ps(m1, r.add(o + 16)));
            }
            x0 = _mm512_min_ps(hi, _mm512_max_ps(lo, x0));
            x1 = _mm512_min_ps(hi, _mm512_max_ps(lo, x1));
            _mm512_mask_storeu_ps(c.add(o), m0, x0);
            _mm512_mask_storeu_ps(c.add(o + 16), m1, x1);
        }
    }
}
