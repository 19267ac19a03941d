//! Depthwise 2-D convolution of 8-bit tensors, NHWC, with requantization
//! (kiln's `QConv` with `group = C`, one filter per channel; see
//! `kiln_ir::ops::qint`).
//!
//! `acc[n, oy, ox, c] = bias[c] + Σ_{ky,kx valid} (x[n, iy, ix, c] - zx) * w[c, ky, kx]`
//! (`i32`, wrapping), with `iy = oy*sh - pt + ky`, `ix = ox*sw - pl + kx`; taps
//! outside the input are padding, whose value is the zero point (they add
//! 0). The output is `y = rq.apply(acc, c)` ([`Requant`]: exact fixed-point
//! requantization, round half to even, zero point, clamp). Activations `x` are
//! `u8` in kiln's stored encoding (an `int8` model's values `+ 128`, see
//! [`crate::quant`]), weights `i8`, bias `i32`. Dilation 1.
//!
//! Kernels: reference [`qdwconv_u8_scalar`]; [`qdwconv_u8_avx512vnni_64c`],
//! [`qdwconv_u8_avx512_64c`], [`qdwconv_u8_avx2_32c`]. All compute the same
//! integers.
//!
//! # How the SIMD kernels work
//!
//! * The zero point is folded into the bias at packing time
//!   (`bias'[c] = bias[c] - zx * Σ_t w[c, t]`, wrapping like the
//!   accumulator, so the result is identical), and padding taps read a row of
//!   `zx` bytes: every output pixel is then `bias' + Σ_all taps x * w`, pure
//!   `u8 x i8` products, with no per-tap validity tests.
//! * Channels are vectorized in blocks of 64 (AVX-512: the last one 32 wide
//!   when at most 32 channels remain) or 32 (AVX2). Kernel rows are taken in
//!   groups of `G` (4 with VNNI, 2 otherwise): for each input column, the
//!   `G` rows' bytes of each channel are interleaved in registers (byte, word
//!   unpacks) so that one instruction multiplies `G` taps of 16 channels and
//!   adds them to an `i32` accumulator: `vpdpbusd` (4 `u8 x i8` products) or
//!   `vpmaddwd` + `vpaddd` (2 products, operands widened to 16 bits; all
//!   products and pair sums are exact). One interleaved column serves every
//!   output pixel of a 4- (AVX2: 2-) pixel strip that reads it, so a 3x3
//!   kernel at stride 1 costs 1.5 interleavings per output pixel and block.
//!   The weights are packed in the matching (lane-permuted) order, so no
//!   permutation is undone until the output: the saturating packs
//!   `i32 -> i16 -> u8` of the epilogue restore channel order.
//! * Requantization in the epilogue: the accumulator is first clamped to the
//!   range `[a_lo, a_hi]` outside of which the output saturates to `lo` /
//!   `hi` anyway (found at packing time by bisection on
//!   [`crate::quant::requantize`]; requantization is monotonic), which keeps
//!   `|acc * M|` below `2^31`. Then `fma(acc, M, 1.5 * 2^52)` in `f64`, with
//!   `M = m * 2^(e - 31)` exact in `f64`, rounds the exact product once, to
//!   the nearest integer with ties to even (the sum lies in
//!   `[2^52, 2^53)`, where the unit in the last place is 1): its low 32 bits
//!   are `round_half_even(acc * m * 2^(e-31))`, exactly [`requantize`]. Zero
//!   point and clamp follow with saturating 16- and 8-bit arithmetic, equal
//!   to the scalar `clamp(q + zy, lo, hi)` because saturation is monotonic and
//!   the identity on `[lo, hi]`.

use crate::quant::{requantize, Requant};
use crate::Isa;
use std::ops::Range;

/// Geometry of one 8-bit depthwise convolution (dilation 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QDwGeom {
    /// Batch.
    pub n: usize,
    /// Input height.
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
    /// Padding at the top (the bottom padding is implied by `oh`).
    pub pt: usize,
    /// Padding at the left (the right padding is implied by `ow`).
    pub pl: usize,
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
}

impl QDwGeom {
    /// Output rows over the batch (`n * oh`): the unit of work splitting.
    pub fn rows(&self) -> usize {
        self.n * self.oh
    }
    /// Multiply-accumulates of the whole convolution (padding taps included).
    pub fn macs(&self) -> u64 {
        (self.n * self.oh * self.ow * self.c * self.kh * self.kw) as u64
    }
}

/// Most kernel rows the SIMD kernels take (larger kernels are packed for the
/// scalar one).
const MAXKH: usize = 16;

/// Depthwise weights, bias and requantization packed for one ISA level.
///
/// Scalar: the ONNX weights and bias as given. SIMD: per channel block, the
/// weights interleaved by groups of kernel rows in the kernels' lane order,
/// the bias with the zero point folded in, and the epilogue's tables (see
/// the module documentation).
#[derive(Debug, Clone)]
pub struct PackedQDw {
    /// ISA these are packed for.
    pub isa: Isa,
    /// Channels.
    pub c: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Input zero point (stored encoding, `0..=255`).
    pub zx: i32,
    /// Output requantization (per channel or per tensor).
    pub rq: Requant,
    /// Scalar: ONNX weights `[c][kh*kw]`.
    w: Vec<i8>,
    /// Scalar: bias `[c]` (zeros when none).
    bias: Vec<i32>,
    /// SIMD: channel blocks `(first channel, width)`.
    blocks: Vec<(usize, usize)>,
    /// SIMD: kernel rows per group (4: VNNI bytes, 2: 16-bit pairs).
    rows_per_group: usize,
    /// SIMD: row groups (`ceil(kh / rows_per_group)`).
    groups: usize,
    /// SIMD: per block, `[group][kx][4 vectors][width/4 lanes][4 bytes]`.
    wp: Vec<u8>,
    /// SIMD: per block, bias with the zero point folded in, `+ 2^31`
    /// (wrapping), in lane order.
    bp: Vec<i32>,
    /// SIMD: per block, accumulator clamp bounds (`+ 2^31`, unsigned).
    clo: Vec<u32>,
    /// Upper bounds, as `clo`.
    chi: Vec<u32>,
    /// SIMD: per block and vector, `M = m * 2^(e-31)` for the even lane
    /// pairs then the odd ones (the order of `vpunpck{l,h}dq`).
    mul: Vec<f64>,
    /// SIMD: per block, whether the epilogue must clamp the accumulators
    /// (some `|acc * M|` can reach `2^31`; never with `M < 1/2`).
    bclamp: Vec<bool>,
    /// SIMD, 16 or 32 channels on AVX-512: the table offset of an extra
    /// 64-lane block holding the channels' data repeated, for kernels that
    /// put `64 / c` adjacent pixels in one register.
    dup: Option<usize>,
    /// SIMD: `zx` repeated over the padded channels (the padding row).
    zrow: Vec<u8>,
}

/// Channel within a block of lane `lane` (`0..width/4`) of vector `q`
/// (`0..4`): the order produced by the in-lane byte/word unpacks.
#[inline]
fn lane_channel(q: usize, lane: usize) -> usize {
    16 * (lane / 4) + 4 * q + lane % 4
}

/// `[a_lo, a_hi]`: clamping an accumulator to it changes no output of
/// `clamp(requantize(acc, m, e) + zy, lo, hi)`; `|acc * M| < 2^31` inside.
fn acc_bounds(m: i32, e: i32, zy: i32, lo: i32, hi: i32) -> (i32, i32) {
    let rq = |a: i64| requantize(a as i32, m, e) as i64;
    let (min, max) = (i32::MIN as i64, i32::MAX as i64);
    // Smallest acc with rq(acc) >= hi - zy.
    let t = (hi - zy) as i64;
    let a_hi = if rq(max) < t {
        max
    } else {
        let (mut l, mut r) = (min, max); // rq(r) >= t
        while l < r {
            let mid = l + (r - l) / 2;
            if rq(mid) >= t {
                r = mid;
            } else {
                l = mid + 1;
            }
        }
        r
    };
    // Largest acc with rq(acc) <= lo - zy.
    let t = (lo - zy) as i64;
    let a_lo = if rq(min) > t {
        min
    } else {
        let (mut l, mut r) = (min, max); // rq(l) <= t
        while l < r {
            let mid = l + (r - l + 1) / 2;
            if rq(mid) <= t {
                l = mid;
            } else {
                r = mid - 1;
            }
        }
        l
    };
    (a_lo as i32, a_hi as i32)
}

impl PackedQDw {
    /// Packs ONNX depthwise weights `w` (`[c][1][kh][kw]`, flattened), an
    /// optional `i32` bias of `c` values (at scale `s_x * s_w[c]`), the input
    /// zero point `zx` (stored encoding) and the output requantization `rq`
    /// (`rq.n == c`) for `isa` (capped at the level the kernels support:
    /// AVX-512 kernels need AVX-512 BW and VL, else AVX2 ones are used).
    pub fn pack(
        isa: Isa,
        c: usize,
        kh: usize,
        kw: usize,
        w: &[i8],
        bias: Option<&[i32]>,
        zx: i32,
        rq: Requant,
    ) -> PackedQDw {
        let taps = kh * kw;
        assert!(c > 0 && kh > 0 && kw > 0, "empty depthwise convolution");
        assert!(w.len() >= c * taps, "depthwise weights too short");
        assert!(bias.is_none_or(|b| b.len() >= c), "depthwise bias too short");
        assert!((0..=255).contains(&zx), "input zero point {zx} outside 0..=255");
        assert_eq!(
            rq.n, c,
            "requantization for {} channels, convolution has {c}",
            rq.n
        );
        let isa = supported(isa, kh);
        let mut p = PackedQDw {
            isa,
            c,
            kh,
            kw,
            zx,
            rq,
            w: Vec::new(),
            bias: Vec::new(),
            blocks: Vec::new(),
            bclamp: Vec::new(),
            dup: None,
            rows_per_group: 0,
            groups: 0,
            wp: Vec::new(),
            bp: Vec::new(),
            clo: Vec::new(),
            chi: Vec::new(),
            mul: Vec::new(),
            zrow: Vec::new(),
        };
        let b_at = |ch: usize| bias.map_or(0, |b| b[ch]);
        if isa == Isa::Scalar {
            p.w = w[..c * taps].to_vec();
            p.bias = (0..c).map(b_at).collect();
            return p;
        }
        // Blocks: 32 wide on AVX2; 64 on AVX-512, the last 32 when that suffices.
        let mut o = 0;
        while o < c {
            let width = if isa == Isa::Avx2 || c - o <= 32 { 32 } else { 64 };
            p.blocks.push((o, width));
            o += width;
        }
        let cpad = o;
        let g = if isa == Isa::Avx512Vnni { 4 } else { 2 };
        p.rows_per_group = g;
        p.groups = kh.div_ceil(g);
        let out = p.rq.out;
        // Table blocks: the channel blocks, then the repeated block (channel
        // of a lane: modulo c).
        let mut tables: Vec<(usize, usize)> = p.blocks.clone();
        if isa >= Isa::Avx512 && (c == 16 || c == 32) {
            p.dup = Some(cpad);
            tables.push((cpad, 64));
        }
        // Per channel: folded bias, accumulator bounds, multiplier, whether
        // the accumulator needs clamping.
        let chan: Vec<(i32, u32, u32, f64, bool)> = (0..c)
            .map(|ch| {
                let wc = &w[ch * taps..(ch + 1) * taps];
                let sw = wc.iter().fold(0i32, |s, &v| s.wrapping_add(v as i32));
                let b = b_at(ch).wrapping_sub(zx.wrapping_mul(sw));
                let (m, e) = (p.rq.mult[ch], p.rq.exp[ch]);
                let (lo, hi) = acc_bounds(m, e, out.zy, out.lo, out.hi);
                let mul = m as f64 * 2f64.powi(e - 31);
                // Largest |acc|: the bias plus the taps at their extremes, or
                // anything when that may wrap.
                let pos: i64 = wc.iter().map(|&v| 255 * (v as i64).max(0)).sum();
                let neg: i64 = wc.iter().map(|&v| 255 * (v as i64).min(0)).sum();
                let (amin, amax) = (b as i64 + neg, b as i64 + pos);
                let big = if amin < i32::MIN as i64 || amax > i32::MAX as i64 {
                    1i64 << 31
                } else {
                    amin.abs().max(amax.abs())
                };
                let clamp = big as f64 * mul >= 2f64.powi(30);
                (
                    b.wrapping_add(i32::MIN),
                    lo as u32 ^ 0x8000_0000,
                    hi as u32 ^ 0x8000_0000,
                    mul,
                    clamp,
                )
            })
            .collect();
        for (bi, &(o, width)) in tables.iter().enumerate() {
            let nl = width / 4;
            let dup = bi == p.blocks.len();
            // Channel of lane `lane` of vector `q`, None for padding lanes.
            let ch_of = |q: usize, lane: usize| {
                let ch = if dup {
                    lane_channel(q, lane) % c
                } else {
                    o + lane_channel(q, lane)
                };
                (ch < c).then_some(ch)
            };
            for gi in 0..p.groups {
                for kx in 0..kw {
                    for q in 0..4 {
                        for lane in 0..nl {
                            let ch = ch_of(q, lane);
                            for s in 0..g {
                                let ky = gi * g + s;
                                let v = match ch {
                                    Some(ch) if ky < kh => w[ch * taps + ky * kw + kx],
                                    _ => 0,
                                };
                                if g == 4 {
                                    p.wp.push(v as u8);
                                } else {
                                    p.wp.extend_from_slice(&(v as i16).to_le_bytes());
                                }
                            }
                        }
                    }
                }
            }
            let mut clamp = false;
            for q in 0..4 {
                for lane in 0..nl {
                    let (b, lo, hi, _, cl) =
                        ch_of(q, lane).map_or((i32::MIN, 0, u32::MAX, 0.0, false), |ch| chan[ch]);
                    p.bp.push(b);
                    p.clo.push(lo);
                    p.chi.push(hi);
                    clamp |= cl;
                }
                for half in 0..2 {
                    for l in 0..nl / 4 {
                        for k in 0..2 {
                            p.mul
                                .push(ch_of(q, 4 * l + 2 * half + k).map_or(0.0, |ch| chan[ch].3));
                        }
                    }
                }
            }
            p.bclamp.push(clamp);
        }
        // (At least 64 bytes: the repeated block reads a whole register.)
        p.zrow = vec![zx as u8; cpad.max(64)];
        p
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.w.len()
            + self.bias.len() * 4
            + self.wp.len()
            + (self.bp.len() + self.clo.len() + self.chi.len()) * 4
            + self.mul.len() * 8
            + self.zrow.len()
            + self.bclamp.len()
            + self.rq.bytes()
    }
}

/// The level `isa` is packed for: the SIMD kernels need kernels of at most
/// `MAXKH` rows, and AVX-512 BW + VL (for the 32-channel blocks).
fn supported(isa: Isa, kh: usize) -> Isa {
    let isa = isa.int8_level();
    if kh > MAXKH {
        return Isa::Scalar;
    }
    #[cfg(target_arch = "x86_64")]
    {
        if isa >= Isa::Avx512
            && !(std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vl"))
        {
            return Isa::Avx2;
        }
        isa
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = isa;
        Isa::Scalar
    }
}

/// Computes output rows `rows` (indices into `n * oh`) with the kernel `w`
/// was packed for.
///
/// # Safety
/// `x` holds `[n, h, w, c]`, `y` holds `[n, oh, ow, c]` (disjoint), `g`
/// matches `w` (checked) and is a valid convolution (`oh`, `ow` at most the
/// ONNX output size for the padding). Calls on disjoint `rows` may run
/// concurrently.
pub unsafe fn qdwconv_u8_raw(g: &QDwGeom, w: &PackedQDw, x: *const u8, y: *mut u8, rows: Range<usize>) {
    assert!(
        g.c == w.c && g.kh == w.kh && g.kw == w.kw,
        "geometry {g:?} does not match the packed weights"
    );
    match w.isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => qdwconv_u8_avx512vnni_64c(g, w, x, y, rows),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => qdwconv_u8_avx512_64c(g, w, x, y, rows),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => qdwconv_u8_avx2_32c(g, w, x, y, rows),
        _ => qdwconv_u8_scalar(g, w, x, y, rows),
    }
}

/// Valid kernel-tap range `k` such that `o*s - p + k` lies in `0..len`.
#[inline]
fn tap_range(o: usize, s: usize, p: usize, k: usize, len: usize) -> Range<usize> {
    let base = (o * s) as isize - p as isize;
    let lo = (-base).max(0);
    let hi = (len as isize - base).clamp(0, k as isize);
    (lo.min(hi) as usize)..(hi as usize)
}

/// Scalar reference: the definition, tap by tap.
///
/// # Safety
/// As [`qdwconv_u8_raw`]; `w` packed for [`Isa::Scalar`].
pub unsafe fn qdwconv_u8_scalar(g: &QDwGeom, w: &PackedQDw, x: *const u8, y: *mut u8, rows: Range<usize>) {
    assert_eq!(w.isa, Isa::Scalar, "weights not packed for the scalar kernel");
    let taps = g.kh * g.kw;
    for row in rows {
        let (b, oy) = (row / g.oh, row % g.oh);
        let kys = tap_range(oy, g.sh, g.pt, g.kh, g.h);
        for ox in 0..g.ow {
            let kxs = tap_range(ox, g.sw, g.pl, g.kw, g.w);
            let o = ((b * g.oh + oy) * g.ow + ox) * g.c;
            for ch in 0..g.c {
                let mut acc = w.bias[ch];
                for ky in kys.clone() {
                    let iy = oy * g.sh + ky - g.pt;
                    for kx in kxs.clone() {
                        let ix = ox * g.sw + kx - g.pl;
                        let xv = *x.add(((b * g.h + iy) * g.w + ix) * g.c + ch) as i32 - w.zx;
                        acc = acc.wrapping_add(xv * w.w[ch * taps + ky * g.kw + kx] as i32);
                    }
                }
                *y.add(o + ch) = w.rq.apply(acc, ch);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub use x86::{qdwconv_u8_avx2_32c, qdwconv_u8_avx512_64c, qdwconv_u8_avx512vnni_64c};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;
    use std::arch::x86_64::*;

    /// Pointers of one channel block's packed data.
    struct Blk {
        /// First channel.
        c0: usize,
        /// Valid channels (`<= width`).
        n: usize,
        wts: *const u8,
        bias: *const i32,
        clo: *const u32,
        chi: *const u32,
        mul: *const f64,
        /// Whether the epilogue clamps the accumulators.
        clamp: bool,
    }

    /// One output row's input rows: per slot (kernel row `ky`, up to the
    /// groups' end), the input row's start and column step (the padding row
    /// with step 0 for rows outside the input and slots past `kh`).
    struct RowCtx<'a> {
        slots: &'a [(*const u8, usize)],
        groups: usize,
        /// Input width.
        w: usize,
        zrow: *const u8,
        /// Output zero point and clamp.
        zy: i32,
        lo: i32,
        hi: i32,
    }

    /// `p`, opaque to the optimizer: loads through it cannot be hoisted out
    /// of the loop that launders it. (Without this, LLVM hoists the loads of
    /// the block's tables out of the pixel loop and then spills them.)
    #[inline(always)]
    // The asm reads no memory: it only passes the pointer value through.
    #[allow(clippy::pointers_in_nomem_asm_block)]
    fn launder<T>(mut p: *const T) -> *const T {
        // SAFETY: an empty asm block; the pointer passes through unchanged.
        unsafe { std::arch::asm!("/* {0} */", inout(reg) p, options(nomem, nostack, preserves_flags)) };
        p
    }

    impl Blk {
        /// This block with opaque table pointers (see [`launder`]).
        #[inline(always)]
        fn laundered(&self) -> Blk {
            Blk {
                c0: self.c0,
                n: self.n,
                wts: launder(self.wts),
                bias: launder(self.bias),
                clo: launder(self.clo),
                chi: launder(self.chi),
                mul: launder(self.mul),
                clamp: self.clamp,
            }
        }
    }

    /// One ISA's register-level operations on a channel block.
    trait Kern {
        /// Register.
        type V: Copy;
        /// Load/store mask of the valid channels.
        type M: Copy;
        /// Channels per block.
        const W: usize;
        /// Kernel rows per group.
        const G: usize;
        unsafe fn mask(n: usize) -> Self::M;
        unsafe fn zero() -> Self::V;
        /// The block's bytes at `p` (invalid channels: anything readable).
        unsafe fn load(p: *const u8, m: Self::M, n: usize) -> Self::V;
        /// Interleaves `G` rows into 4 vectors of tap groups.
        unsafe fn build(r: &[Self::V; 4]) -> [Self::V; 4];
        /// `acc + Σ_G v * w` per lane (`w`: one packed weight vector).
        unsafe fn dot(acc: Self::V, v: Self::V, w: *const u8) -> Self::V;
        unsafe fn bias(p: *const i32) -> [Self::V; 4];
        /// Requantizes and stores the block's `n` valid bytes at `y`.
        unsafe fn store(acc: &[Self::V; 4], b: &Blk, r: &RowCtx, y: *mut u8, m: Self::M);
    }

    /// One input column of a strip for one row group: loads the group's
    /// rows at `ptrs` (advancing them by `steps`), interleaves them and adds
    /// them to every output of the strip that reads column `j`.
    #[inline(always)]
    unsafe fn column<S: Kern, const P: usize>(
        b: &Blk,
        wg: *const u8,
        (kw, sw): (usize, usize),
        ptrs: &mut [*const u8; 4],
        steps: &[usize; 4],
        j: usize,
        m: S::M,
        acc: &mut [[S::V; 4]; P],
    ) {
        // A memory barrier: this column's loads stay after the previous
        // column's (else the scheduler hoists all the strip's loads to the top
        // and spills them).
        std::arch::asm!("", options(nostack, preserves_flags));
        let mut rows = [S::zero(); 4];
        for s in 0..S::G {
            rows[s] = S::load(ptrs[s], m, b.n);
            ptrs[s] = ptrs[s].add(steps[s]);
        }
        let v = S::build(&rows);
        for (pi, acc) in acc.iter_mut().enumerate() {
            if j >= pi * sw && j - pi * sw < kw {
                let wp = wg.add((j - pi * sw) * 4 * S::W);
                for q in 0..4 {
                    acc[q] = S::dot(acc[q], v[q], wp.add(q * S::W));
                }
            }
        }
    }

    /// `P` outputs of one channel block, output `pi` at `y + pi * ystep`
    /// reading input columns from `x0 + pi * sw` on. `KW`/`SW` 0: taken
    /// from `kw`/`sw` at run time (then `P` must be 1). `BORDER`: columns
    /// outside the input read the padding row (then `P` must be 1). With
    /// `KW` and `SW` known, the column loop is unrolled, so that which
    /// outputs read a column is known at compile time and the accumulators
    /// stay in registers.
    #[inline(always)]
    unsafe fn chunk<S: Kern, const KW: usize, const SW: usize, const P: usize, const BORDER: bool>(
        r: &RowCtx,
        b: &Blk,
        (kw, sw): (usize, usize),
        x0: isize,
        y: *mut u8,
        ystep: usize,
        m: S::M,
    ) {
        let kw = if KW > 0 { KW } else { kw };
        let sw = if SW > 0 { SW } else { sw };
        let ncol = (P - 1) * sw + kw;
        let b = &b.laundered();
        let bias = S::bias(b.bias);
        let mut acc = [bias; P];
        for gi in 0..r.groups {
            let wg = b.wts.add(gi * kw * 4 * S::W);
            let mut ptrs = [r.zrow; 4];
            let mut steps = [0usize; 4];
            for s in 0..S::G {
                let (p, step) = *r.slots.get_unchecked(gi * S::G + s);
                if BORDER {
                    ptrs[s] = p.add(b.c0);
                } else {
                    ptrs[s] = p.add(x0 as usize * step + b.c0);
                }
                steps[s] = step;
            }
            if BORDER {
                // Column by column: outside the input, the padding row.
                let base = ptrs;
                for j in 0..ncol {
                    let ix = x0 + j as isize;
                    let mut at = [r.zrow.add(b.c0); 4];
                    if ix >= 0 && ix < r.w as isize {
                        for s in 0..S::G {
                            at[s] = base[s].add(ix as usize * steps[s]);
                        }
                    }
                    column::<S, P>(b, wg, (kw, sw), &mut at, &[0; 4], j, m, &mut acc);
                }
                continue;
            }
            macro_rules! unroll {
                ($($j:literal)*) => {
                    $(if $j < ncol {
                        column::<S, P>(b, wg, (kw, sw), &mut ptrs, &steps, $j, m, &mut acc);
                    })*
                };
            }
            if KW > 0 {
                debug_assert!(ncol <= 20);
                unroll!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19);
            } else {
                for j in 0..ncol {
                    column::<S, P>(b, wg, (kw, sw), &mut ptrs, &steps, j, m, &mut acc);
                }
            }
        }
        for (pi, acc) in acc.iter().enumerate() {
            S::store(acc, b, r, y.add(pi * ystep), m);
        }
    }

    /// One output row of one channel block: borders pixel by pixel, the
    /// interior in strips of `P`.
    #[inline(always)]
    unsafe fn row_block<S: Kern, const KW: usize, const SW: usize, const P: usize>(
        r: &RowCtx,
        b: &Blk,
        g: &QDwGeom,
        (in_lo, in_hi): (usize, usize),
        yrow: *mut u8,
    ) {
        let m = S::mask(b.n);
        let ks = (g.kw, g.sw);
        let x0 = |ox: usize| (ox * g.sw) as isize - g.pl as isize;
        let mut ox = 0;
        while ox < in_lo.min(g.ow) {
            chunk::<S, KW, SW, 1, true>(r, b, ks, x0(ox), yrow.add(ox * g.c), g.c, m);
            ox += 1;
        }
        if KW > 0 {
            while ox + P <= in_hi {
                chunk::<S, KW, SW, P, false>(r, b, ks, x0(ox), yrow.add(ox * g.c), g.c, m);
                ox += P;
            }
        }
        while ox < in_hi {
            chunk::<S, KW, SW, 1, false>(r, b, ks, x0(ox), yrow.add(ox * g.c), g.c, m);
            ox += 1;
        }
        while ox < g.ow {
            chunk::<S, KW, SW, 1, true>(r, b, ks, x0(ox), yrow.add(ox * g.c), g.c, m);
            ox += 1;
        }
    }

    /// One output row with 16 or 32 channels at stride 1 (AVX-512): the
    /// interior in strips of `P` registers of `K = 64 / c` adjacent pixels
    /// each (`dup`: the repeated block), the rest pixel by pixel in the
    /// narrow block (`b`).
    #[inline(always)]
    unsafe fn row_dup<W: Kern, N: Kern, const KW: usize, const K: usize, const P: usize>(
        r: &RowCtx,
        b: &Blk,
        dup: &Blk,
        g: &QDwGeom,
        (in_lo, in_hi): (usize, usize),
        yrow: *mut u8,
    ) {
        let m = N::mask(b.n);
        let ks = (g.kw, 1);
        let x0 = |ox: usize| ox as isize - g.pl as isize;
        let mut ox = 0;
        while ox < in_lo.min(g.ow) {
            chunk::<N, KW, 1, 1, true>(r, b, ks, x0(ox), yrow.add(ox * g.c), g.c, m);
            ox += 1;
        }
        let wm = W::mask(64);
        while ox + K * P <= in_hi {
            chunk::<W, KW, K, P, false>(r, dup, (KW, K), x0(ox), yrow.add(ox * g.c), 64, wm);
            ox += K * P;
        }
        while ox < in_hi {
            chunk::<N, KW, 1, 1, false>(r, b, ks, x0(ox), yrow.add(ox * g.c), g.c, m);
            ox += 1;
        }
        while ox < g.ow {
            chunk::<N, KW, 1, 1, true>(r, b, ks, x0(ox), yrow.add(ox * g.c), g.c, m);
            ox += 1;
        }
    }

    /// Output columns whose window lies inside the input along W.
    fn interior(g: &QDwGeom) -> (usize, usize) {
        let lo = g.pl.div_ceil(g.sw);
        let hi = if g.w + g.pl < g.kw {
            0
        } else {
            ((g.w + g.pl - g.kw) / g.sw + 1).min(g.ow)
        };
        (lo.min(hi), hi)
    }

    /// The kernel driver: rows, then channel blocks (`Wide` for 64-channel
    /// blocks, `Narrow` for 32), then pixel strips.
    #[inline(always)]
    unsafe fn run<Wide: Kern, Narrow: Kern, const P: usize>(
        g: &QDwGeom,
        pw: &PackedQDw,
        x: *const u8,
        y: *mut u8,
        rows: Range<usize>,
    ) {
        let gsz = pw.rows_per_group;
        let nslots = pw.groups * gsz;
        let mut slots = [(std::ptr::null::<u8>(), 0usize); MAXKH + 4];
        let zrow = pw.zrow.as_ptr();
        let inter = interior(g);
        let out = pw.rq.out;
        for row in rows {
            let (b, oy) = (row / g.oh, row % g.oh);
            for (ky, slot) in slots.iter_mut().enumerate().take(nslots) {
                let iy = (oy * g.sh + ky) as isize - g.pt as isize;
                *slot = if ky < g.kh && iy >= 0 && (iy as usize) < g.h {
                    (x.add((b * g.h + iy as usize) * g.w * g.c), g.c)
                } else {
                    (zrow, 0)
                };
            }
            let r = RowCtx {
                slots: &slots[..nslots],
                groups: pw.groups,
                w: g.w,
                zrow,
                zy: out.zy,
                lo: out.lo,
                hi: out.hi,
            };
            let yrow = y.add((b * g.oh + oy) * g.ow * g.c);
            // The tables of table block `bi` at table offset `o`.
            let tables = |bi: usize, o: usize, c0: usize, n: usize| Blk {
                c0,
                n,
                wts: pw.wp.as_ptr().add(o * pw.groups * g.kw * 4),
                bias: pw.bp.as_ptr().add(o),
                clo: pw.clo.as_ptr().add(o),
                chi: pw.chi.as_ptr().add(o),
                mul: pw.mul.as_ptr().add(o),
                clamp: pw.bclamp[bi],
            };
            if let (Some(o), 1, 3 | 5, 64) = (pw.dup, g.sw, g.kw, Wide::W) {
                let blk = tables(0, 0, 0, g.c);
                let dup = tables(1, o, 0, 64);
                match (g.kw, g.c) {
                    (3, 32) => row_dup::<Wide, Narrow, 3, 2, P>(&r, &blk, &dup, g, inter, yrow),
                    (3, _) => row_dup::<Wide, Narrow, 3, 4, P>(&r, &blk, &dup, g, inter, yrow),
                    (_, 32) => row_dup::<Wide, Narrow, 5, 2, P>(&r, &blk, &dup, g, inter, yrow),
                    _ => row_dup::<Wide, Narrow, 5, 4, P>(&r, &blk, &dup, g, inter, yrow),
                }
                continue;
            }
            for (bi, &(c0, width)) in pw.blocks.iter().enumerate() {
                let blk = tables(bi, c0, c0, width.min(g.c - c0));
                let yb = yrow.add(c0);
                macro_rules! go {
                    ($s:ty) => {
                        match (g.kw, g.sw) {
                            (3, 1) => row_block::<$s, 3, 1, P>(&r, &blk, g, inter, yb),
                            (3, 2) => row_block::<$s, 3, 2, P>(&r, &blk, g, inter, yb),
                            (5, 1) => row_block::<$s, 5, 1, P>(&r, &blk, g, inter, yb),
                            (5, 2) => row_block::<$s, 5, 2, P>(&r, &blk, g, inter, yb),
                            _ => row_block::<$s, 0, 0, 1>(&r, &blk, g, inter, yb),
                        }
                    };
                }
                if width == Wide::W {
                    go!(Wide)
                } else {
                    go!(Narrow)
                }
            }
        }
    }

    // -----------------------------------------------------------------
    // AVX-512 (64-channel blocks in zmm, 32-channel tails in ymm).

    /// The epilogue on 4 zmm accumulators (64 channels).
    #[inline(always)]
    unsafe fn store512(acc: &[__m512i; 4], b: &Blk, r: &RowCtx, y: *mut u8, m: u64) {
        let mh = _mm512_set1_epi32(0x4330_0000);
        let off = _mm512_set1_pd(4_503_601_774_854_144.0); // 2^52 + 2^31
        let rnd = _mm512_set1_pd(6_755_399_441_055_744.0); // 1.5 * 2^52
        let mut v = [_mm512_setzero_si512(); 4];
        for q in 0..4 {
            let mut a = acc[q];
            if b.clamp {
                a = _mm512_max_epu32(a, _mm512_loadu_si512(b.clo.add(16 * q) as *const _));
                a = _mm512_min_epu32(a, _mm512_loadu_si512(b.chi.add(16 * q) as *const _));
            }
            let dl = _mm512_sub_pd(_mm512_castsi512_pd(_mm512_unpacklo_epi32(a, mh)), off);
            let dh = _mm512_sub_pd(_mm512_castsi512_pd(_mm512_unpackhi_epi32(a, mh)), off);
            let tl = _mm512_fmadd_pd(dl, _mm512_loadu_pd(b.mul.add(16 * q)), rnd);
            let th = _mm512_fmadd_pd(dh, _mm512_loadu_pd(b.mul.add(16 * q + 8)), rnd);
            v[q] = _mm512_castps_si512(_mm512_shuffle_ps::<0x88>(
                _mm512_castpd_ps(tl),
                _mm512_castpd_ps(th),
            ));
        }
        let zy = _mm512_set1_epi16(r.zy as i16);
        let p01 = _mm512_adds_epi16(_mm512_packs_epi32(v[0], v[1]), zy);
        let p23 = _mm512_adds_epi16(_mm512_packs_epi32(v[2], v[3]), zy);
        let o = _mm512_packus_epi16(p01, p23);
        let o = _mm512_min_epu8(
            _mm512_max_epu8(o, _mm512_set1_epi8(r.lo as u8 as i8)),
            _mm512_set1_epi8(r.hi as u8 as i8),
        );
        _mm512_mask_storeu_epi8(y as *mut i8, m, o);
    }

    /// The epilogue on 4 ymm accumulators (32 channels), AVX2 + FMA only.
    #[inline(always)]
    unsafe fn requant256(acc: &[__m256i; 4], b: &Blk, r: &RowCtx) -> __m256i {
        let mh = _mm256_set1_epi32(0x4330_0000);
        let off = _mm256_set1_pd(4_503_601_774_854_144.0);
        let rnd = _mm256_set1_pd(6_755_399_441_055_744.0);
        let mut v = [_mm256_setzero_si256(); 4];
        for q in 0..4 {
            let mut a = acc[q];
            if b.clamp {
                a = _mm256_max_epu32(a, _mm256_loadu_si256(b.clo.add(8 * q) as *const _));
                a = _mm256_min_epu32(a, _mm256_loadu_si256(b.chi.add(8 * q) as *const _));
            }
            let dl = _mm256_sub_pd(_mm256_castsi256_pd(_mm256_unpacklo_epi32(a, mh)), off);
            let dh = _mm256_sub_pd(_mm256_castsi256_pd(_mm256_unpackhi_epi32(a, mh)), off);
            let tl = _mm256_fmadd_pd(dl, _mm256_loadu_pd(b.mul.add(8 * q)), rnd);
            let th = _mm256_fmadd_pd(dh, _mm256_loadu_pd(b.mul.add(8 * q + 4)), rnd);
            v[q] = _mm256_castps_si256(_mm256_shuffle_ps::<0x88>(
                _mm256_castpd_ps(tl),
                _mm256_castpd_ps(th),
            ));
        }
        let zy = _mm256_set1_epi16(r.zy as i16);
        let p01 = _mm256_adds_epi16(_mm256_packs_epi32(v[0], v[1]), zy);
        let p23 = _mm256_adds_epi16(_mm256_packs_epi32(v[2], v[3]), zy);
        let o = _mm256_packus_epi16(p01, p23);
        _mm256_min_epu8(
            _mm256_max_epu8(o, _mm256_set1_epi8(r.lo as u8 as i8)),
            _mm256_set1_epi8(r.hi as u8 as i8),
        )
    }

    /// Byte-interleaves 4 rows (zmm): vector `q`, lane `4L + i` holds the
    /// 4 rows' bytes of channel `16L + 4q + i`.
    #[inline(always)]
    unsafe fn quad512(r: &[__m512i; 4]) -> [__m512i; 4] {
        let l01 = _mm512_unpacklo_epi8(r[0], r[1]);
        let h01 = _mm512_unpackhi_epi8(r[0], r[1]);
        let l23 = _mm512_unpacklo_epi8(r[2], r[3]);
        let h23 = _mm512_unpackhi_epi8(r[2], r[3]);
        [
            _mm512_unpacklo_epi16(l01, l23),
            _mm512_unpackhi_epi16(l01, l23),
            _mm512_unpacklo_epi16(h01, h23),
            _mm512_unpackhi_epi16(h01, h23),
        ]
    }

    /// Interleaves 2 rows as 16-bit pairs (zmm), lanes as [`quad512`].
    #[inline(always)]
    unsafe fn pair512(r: &[__m512i; 4]) -> [__m512i; 4] {
        let z = _mm512_setzero_si512();
        let l = _mm512_unpacklo_epi8(r[0], r[1]);
        let h = _mm512_unpackhi_epi8(r[0], r[1]);
        [
            _mm512_unpacklo_epi8(l, z),
            _mm512_unpackhi_epi8(l, z),
            _mm512_unpacklo_epi8(h, z),
            _mm512_unpackhi_epi8(h, z),
        ]
    }

    #[inline(always)]
    unsafe fn quad256(r: &[__m256i; 4]) -> [__m256i; 4] {
        let l01 = _mm256_unpacklo_epi8(r[0], r[1]);
        let h01 = _mm256_unpackhi_epi8(r[0], r[1]);
        let l23 = _mm256_unpacklo_epi8(r[2], r[3]);
        let h23 = _mm256_unpackhi_epi8(r[2], r[3]);
        [
            _mm256_unpacklo_epi16(l01, l23),
            _mm256_unpackhi_epi16(l01, l23),
            _mm256_unpacklo_epi16(h01, h23),
            _mm256_unpackhi_epi16(h01, h23),
        ]
    }

    #[inline(always)]
    unsafe fn pair256(r: &[__m256i; 4]) -> [__m256i; 4] {
        let z = _mm256_setzero_si256();
        let l = _mm256_unpacklo_epi8(r[0], r[1]);
        let h = _mm256_unpackhi_epi8(r[0], r[1]);
        [
            _mm256_unpacklo_epi8(l, z),
            _mm256_unpackhi_epi8(l, z),
            _mm256_unpacklo_epi8(h, z),
            _mm256_unpackhi_epi8(h, z),
        ]
    }

    #[inline(always)]
    unsafe fn bias512(p: *const i32) -> [__m512i; 4] {
        [0, 1, 2, 3].map(|q| _mm512_loadu_si512(p.add(16 * q) as *const _))
    }

    #[inline(always)]
    unsafe fn bias256(p: *const i32) -> [__m256i; 4] {
        [0, 1, 2, 3].map(|q| _mm256_loadu_si256(p.add(8 * q) as *const _))
    }

    /// 256-bit mask of the low `n` bytes.
    #[inline(always)]
    fn mask32(n: usize) -> u32 {
        if n >= 32 {
            u32::MAX
        } else {
            (1u32 << n) - 1
        }
    }

    /// AVX-512 VNNI, 64 channels: 4 rows per `vpdpbusd`.
    struct Vnni512;
    impl Kern for Vnni512 {
        type V = __m512i;
        type M = u64;
        const W: usize = 64;
        const G: usize = 4;
        #[inline(always)]
        unsafe fn mask(n: usize) -> u64 {
            if n >= 64 {
                u64::MAX
            } else {
                (1u64 << n) - 1
            }
        }
        #[inline(always)]
        unsafe fn zero() -> __m512i {
            _mm512_setzero_si512()
        }
        #[inline(always)]
        unsafe fn load(p: *const u8, m: u64, _: usize) -> __m512i {
            _mm512_maskz_loadu_epi8(m, p as *const i8)
        }
        #[inline(always)]
        unsafe fn build(r: &[__m512i; 4]) -> [__m512i; 4] {
            quad512(r)
        }
        #[inline(always)]
        unsafe fn dot(acc: __m512i, v: __m512i, w: *const u8) -> __m512i {
            _mm512_dpbusd_epi32(acc, v, _mm512_loadu_si512(w as *const _))
        }
        #[inline(always)]
        unsafe fn bias(p: *const i32) -> [__m512i; 4] {
            bias512(p)
        }
        #[inline(always)]
        unsafe fn store(acc: &[__m512i; 4], b: &Blk, r: &RowCtx, y: *mut u8, m: u64) {
            store512(acc, b, r, y, m)
        }
    }

    /// AVX-512 VNNI + VL, 32 channels (tail blocks).
    struct Vnni256;
    impl Kern for Vnni256 {
        type V = __m256i;
        type M = u32;
        const W: usize = 32;
        const G: usize = 4;
        #[inline(always)]
        unsafe fn mask(n: usize) -> u32 {
            mask32(n)
        }
        #[inline(always)]
        unsafe fn zero() -> __m256i {
            _mm256_setzero_si256()
        }
        #[inline(always)]
        unsafe fn load(p: *const u8, m: u32, _: usize) -> __m256i {
            _mm256_maskz_loadu_epi8(m, p as *const i8)
        }
        #[inline(always)]
        unsafe fn build(r: &[__m256i; 4]) -> [__m256i; 4] {
            quad256(r)
        }
        #[inline(always)]
        unsafe fn dot(acc: __m256i, v: __m256i, w: *const u8) -> __m256i {
            _mm256_dpbusd_epi32(acc, v, _mm256_loadu_si256(w as *const _))
        }
        #[inline(always)]
        unsafe fn bias(p: *const i32) -> [__m256i; 4] {
            bias256(p)
        }
        #[inline(always)]
        unsafe fn store(acc: &[__m256i; 4], b: &Blk, r: &RowCtx, y: *mut u8, m: u32) {
            _mm256_mask_storeu_epi8(y as *mut i8, m, requant256(acc, b, r));
        }
    }

    /// AVX-512 BW, 64 channels: 2 rows per `vpmaddwd`.
    struct Bw512;
    impl Kern for Bw512 {
        type V = __m512i;
        type M = u64;
        const W: usize = 64;
        const G: usize = 2;
        #[inline(always)]
        unsafe fn mask(n: usize) -> u64 {
            Vnni512::mask(n)
        }
        #[inline(always)]
        unsafe fn zero() -> __m512i {
            _mm512_setzero_si512()
        }
        #[inline(always)]
        unsafe fn load(p: *const u8, m: u64, _: usize) -> __m512i {
            _mm512_maskz_loadu_epi8(m, p as *const i8)
        }
        #[inline(always)]
        unsafe fn build(r: &[__m512i; 4]) -> [__m512i; 4] {
            pair512(r)
        }
        #[inline(always)]
        unsafe fn dot(acc: __m512i, v: __m512i, w: *const u8) -> __m512i {
            _mm512_add_epi32(acc, _mm512_madd_epi16(v, _mm512_loadu_si512(w as *const _)))
        }
        #[inline(always)]
        unsafe fn bias(p: *const i32) -> [__m512i; 4] {
            bias512(p)
        }
        #[inline(always)]
        unsafe fn store(acc: &[__m512i; 4], b: &Blk, r: &RowCtx, y: *mut u8, m: u64) {
            store512(acc, b, r, y, m)
        }
    }

    /// AVX-512 BW + VL, 32 channels (tail blocks).
    struct Bw256;
    impl Kern for Bw256 {
        type V = __m256i;
        type M = u32;
        const W: usize = 32;
        const G: usize = 2;
        #[inline(always)]
        unsafe fn mask(n: usize) -> u32 {
            mask32(n)
        }
        #[inline(always)]
        unsafe fn zero() -> __m256i {
            _mm256_setzero_si256()
        }
        #[inline(always)]
        unsafe fn load(p: *const u8, m: u32, _: usize) -> __m256i {
            _mm256_maskz_loadu_epi8(m, p as *const i8)
        }
        #[inline(always)]
        unsafe fn build(r: &[__m256i; 4]) -> [__m256i; 4] {
            pair256(r)
        }
        #[inline(always)]
        unsafe fn dot(acc: __m256i, v: __m256i, w: *const u8) -> __m256i {
            _mm256_add_epi32(acc, _mm256_madd_epi16(v, _mm256_loadu_si256(w as *const _)))
        }
        #[inline(always)]
        unsafe fn bias(p: *const i32) -> [__m256i; 4] {
            bias256(p)
        }
        #[inline(always)]
        unsafe fn store(acc: &[__m256i; 4], b: &Blk, r: &RowCtx, y: *mut u8, m: u32) {
            _mm256_mask_storeu_epi8(y as *mut i8, m, requant256(acc, b, r));
        }
    }

    /// AVX2, 32 channels: 2 rows per `vpmaddwd`; partial blocks go through
    /// a stack copy (no byte masks).
    struct Avx2;
    impl Kern for Avx2 {
        type V = __m256i;
        type M = ();
        const W: usize = 32;
        const G: usize = 2;
        #[inline(always)]
        unsafe fn mask(_: usize) {}
        #[inline(always)]
        unsafe fn zero() -> __m256i {
            _mm256_setzero_si256()
        }
        #[inline(always)]
        unsafe fn load(p: *const u8, _: (), n: usize) -> __m256i {
            if n >= 32 {
                _mm256_loadu_si256(p as *const _)
            } else {
                let mut buf = [0u8; 32];
                std::ptr::copy_nonoverlapping(p, buf.as_mut_ptr(), n);
                _mm256_loadu_si256(buf.as_ptr() as *const _)
            }
        }
        #[inline(always)]
        unsafe fn build(r: &[__m256i; 4]) -> [__m256i; 4] {
            pair256(r)
        }
        #[inline(always)]
        unsafe fn dot(acc: __m256i, v: __m256i, w: *const u8) -> __m256i {
            _mm256_add_epi32(acc, _mm256_madd_epi16(v, _mm256_loadu_si256(w as *const _)))
        }
        #[inline(always)]
        unsafe fn bias(p: *const i32) -> [__m256i; 4] {
            bias256(p)
        }
        #[inline(always)]
        unsafe fn store(acc: &[__m256i; 4], b: &Blk, r: &RowCtx, y: *mut u8, _: ()) {
            let o = requant256(acc, b, r);
            if b.n >= 32 {
                _mm256_storeu_si256(y as *mut _, o);
            } else {
                let mut buf = [0u8; 32];
                _mm256_storeu_si256(buf.as_mut_ptr() as *mut _, o);
                std::ptr::copy_nonoverlapping(buf.as_ptr(), y, b.n);
            }
        }
    }

    /// AVX-512 VNNI depthwise convolution: 64-channel blocks (a 32-channel
    /// tail block in ymm), 4 kernel rows per `vpdpbusd`, strips of 4 output
    /// pixels.
    ///
    /// # Safety
    /// As [`qdwconv_u8_raw`]; `w` packed for [`Isa::Avx512Vnni`] (the CPU
    /// supports AVX-512 F, BW, VL and VNNI).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,fma")]
    pub unsafe fn qdwconv_u8_avx512vnni_64c(
        g: &QDwGeom,
        w: &PackedQDw,
        x: *const u8,
        y: *mut u8,
        rows: Range<usize>,
    ) {
        assert_eq!(w.isa, Isa::Avx512Vnni, "weights not packed for AVX-512 VNNI");
        run::<Vnni512, Vnni256, 4>(g, w, x, y, rows)
    }

    /// AVX-512 BW depthwise convolution: as [`qdwconv_u8_avx512vnni_64c`]
    /// with 2 kernel rows per `vpmaddwd` (16-bit operands).
    ///
    /// # Safety
    /// As [`qdwconv_u8_raw`]; `w` packed for [`Isa::Avx512`] (the CPU
    /// supports AVX-512 F, BW and VL).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,fma")]
    pub unsafe fn qdwconv_u8_avx512_64c(
        g: &QDwGeom,
        w: &PackedQDw,
        x: *const u8,
        y: *mut u8,
        rows: Range<usize>,
    ) {
        assert_eq!(w.isa, Isa::Avx512, "weights not packed for AVX-512");
        run::<Bw512, Bw256, 4>(g, w, x, y, rows)
    }

    /// AVX2 depthwise convolution: 32-channel blocks, 2 kernel rows per
    /// `vpmaddwd`, strips of 2 output pixels.
    ///
    /// # Safety
    /// As [`qdwconv_u8_raw`]; `w` packed for [`Isa::Avx2`] (the CPU supports
    /// AVX2 and FMA).
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn qdwconv_u8_avx2_32c(
        g: &QDwGeom,
        w: &PackedQDw,
        x: *const u8,
        y: *mut u8,
        rows: Range<usize>,
    ) {
        assert_eq!(w.isa, Isa::Avx2, "weights not packed for AVX2");
        run::<Avx2, Avx2, 2>(g, w, x, y, rows)
    }
}
