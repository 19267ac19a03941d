//! int8 GEMM with a fused requantization epilogue:
//! `C = requant(A·B + bias)`, `u8 x i8 -> i32 -> u8`.
//!
//! Shapes: `A` is `M x K` `u8` row-major with row stride `lda` (in NHWC, the
//! pixels by input channels of a 1x1 convolution, read in place, or an
//! im2col buffer), `B` is `K x N` `i8` (input by output channels, weight
//! zero point 0: symmetric weights), packed once into [`QPackedB`]; `C` is
//! `M x N` `u8` with row stride `ldc`.
//!
//! The input zero point `zx` is folded into the bias at packing:
//! `Σ_k (a - zx)·b = Σ_k a·b - zx·Σ_k b`, so the inner loop multiplies the raw
//! bytes; `acc = bias'[n] + Σ_k a[k]·b[k][n]` with `bias' = bias - zx·colsum`
//! (wrapping `i32` arithmetic, as the reference `QConv`/`QGemm`), then
//! [`Requant`] per column. All arithmetic is exact, so every kernel equals
//! [`qgemm_u8_scalar`] bit for bit, whatever the tiling or thread split.
//!
//! Micro-kernels (register tile `MR x NR`):
//! - [`qgemm_u8i8_avx512vnni_12x32`]: `vpdpbusd` (u8 x i8, four products
//!   summed into each `i32` lane, no intermediate saturation); `B` packed in
//!   groups of 4 rows (`[K/4][32][4]` per panel); 24 zmm accumulators.
//! - `qgemm_u8i8_avx2_6x16`: AVX2 (also used at the AVX-512 level without
//!   VNNI). `vpmaddubsw` would add two `u8 x i8` products into a saturating
//!   `i16` (255·127·2 > 32767), so instead both operands are widened to
//!   `i16` and multiplied by `vpmaddwd` (pairs summed into `i32`): exact for
//!   all inputs, at half the products per instruction; requantization of
//!   its tile is scalar.
//! - [`qgemm_u8_scalar`]: the reference.

use crate::quant::Requant;
use crate::Isa;
use std::ops::Range;

/// `B` packed for one ISA's int8 micro-kernel, with the folded bias and the
/// requantization of each column.
#[derive(Debug, Clone)]
pub struct QPackedB {
    /// Rows of `B` (the reduction length).
    pub k: usize,
    /// Columns of `B` (outputs).
    pub n: usize,
    /// Panel width.
    pub nr: usize,
    /// The ISA level of the kernel this packing is for ([`qgemm_level`]).
    pub isa: Isa,
    /// `K` rounded up to the kernel's row group (4, or 2 for AVX2).
    kp: usize,
    /// Scalar / VNNI layout: per panel `[kp/4][nr][4]` bytes.
    data: Vec<i8>,
    /// AVX2 layout: per panel `[kp/2][nr][2]` `i16`.
    data16: Vec<i16>,
    /// `bias - zx * colsum` per column, zero-padded to the panels.
    bias: Vec<i32>,
    /// Requantization per column (padded to the panels).
    pub rq: Requant,
}

/// The int8 kernel level for `isa`: VNNI where present, AVX2's kernel on
/// AVX-512 without VNNI.
pub fn qgemm_level(isa: Isa) -> Isa {
    match isa {
        Isa::Avx512 => Isa::Avx2,
        i => i,
    }
}

/// Panel width of `isa`'s int8 micro-kernel.
pub fn qpanel_width(isa: Isa) -> usize {
    match qgemm_level(isa) {
        Isa::Avx512Vnni => 32,
        Isa::Avx2 | Isa::Avx512 => 16,
        Isa::Scalar => 8,
    }
}

/// Rows of `isa`'s int8 micro-tile.
pub fn qtile_rows(isa: Isa) -> usize {
    match qgemm_level(isa) {
        Isa::Avx512Vnni => 12,
        Isa::Avx2 | Isa::Avx512 => 6,
        Isa::Scalar => 4,
    }
}

/// Kernel name of `isa`'s int8 GEMM.
pub fn qgemm_name(isa: Isa) -> &'static str {
    match qgemm_level(isa) {
        Isa::Avx512Vnni => "qgemm_u8i8_avx512vnni_12x32",
        Isa::Avx2 | Isa::Avx512 => "qgemm_u8i8_avx2_6x16",
        Isa::Scalar => "qgemm_u8i8_scalar",
    }
}

impl QPackedB {
    /// Packs `B[k][n] = b(k, n)` with `bias` (`n` values at scale
    /// `s_a * s_b[n]`; `None` = zeros), the input zero point `zx` (stored
    /// encoding, `0..=255`) and the output requantization `rq` (1 or `n`
    /// channels) for `isa`'s kernel.
    pub fn pack(
        isa: Isa,
        k: usize,
        n: usize,
        b: impl Fn(usize, usize) -> i8,
        bias: Option<&[i32]>,
        zx: i32,
        rq: &Requant,
    ) -> QPackedB {
        let isa = qgemm_level(isa);
        let nr = qpanel_width(isa);
        let panels = n.div_ceil(nr);
        let np = panels * nr;
        let group = if isa == Isa::Avx2 { 2 } else { 4 };
        let kp = k.div_ceil(group) * group;
        let mut data = Vec::new();
        let mut data16 = Vec::new();
        if isa == Isa::Avx2 {
            data16 = vec![0i16; panels * kp * nr];
            for p in 0..panels {
                for kk in 0..k {
                    for j in 0..nr.min(n - p * nr) {
                        data16[p * kp * nr + (kk / 2) * nr * 2 + j * 2 + kk % 2] = b(kk, p * nr + j) as i16;
                    }
                }
            }
        } else {
            data = vec![0i8; panels * kp * nr];
            for p in 0..panels {
                for kk in 0..k {
                    for j in 0..nr.min(n - p * nr) {
                        data[p * kp * nr + (kk / 4) * nr * 4 + j * 4 + kk % 4] = b(kk, p * nr + j);
                    }
                }
            }
        }
        let mut bv = vec![0i32; np];
        for (j, v) in bv.iter_mut().enumerate().take(n) {
            let colsum = (0..k).fold(0i32, |s, kk| s.wrapping_add(b(kk, j) as i32));
            let b0 = bias.map_or(0, |bs| bs[j]);
            *v = b0.wrapping_sub(zx.wrapping_mul(colsum));
        }
        // Requantization padded to the panels (padding: multiplier 0).
        let per = |v: &[i32], j: usize| if v.len() == 1 { v[0] } else { v[j] };
        let mut m = vec![0i32; np];
        let mut e = vec![0i32; np];
        for j in 0..n {
            m[j] = per(&rq.mult[..rq.n.max(1)], j);
            e[j] = per(&rq.exp[..rq.n.max(1)], j);
        }
        let mut rqp = Requant::new(np, &m, &e, rq.out);
        rqp.n = n;
        QPackedB {
            k,
            n,
            nr,
            isa,
            kp,
            data,
            data16,
            bias: bv,
            rq: rqp,
        }
    }

    /// Number of column panels.
    pub fn panels(&self) -> usize {
        self.n.div_ceil(self.nr)
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.data.len() + self.data16.len() * 2 + self.bias.len() * 4 + self.rq.bytes()
    }
}

/// Operands of one int8 GEMM call.
#[derive(Debug, Clone, Copy)]
pub struct QGemmArgs {
    /// Rows of `A` and `C`.
    pub m: usize,
    /// `A`, `m x k` bytes, row stride `lda`.
    pub a: *const u8,
    /// Row stride of `A`.
    pub lda: usize,
    /// `C`, `m x n` bytes, row stride `ldc`.
    pub c: *mut u8,
    /// Row stride of `C`.
    pub ldc: usize,
}

// SAFETY: the pointers are only dereferenced inside kernels whose callers
// guarantee disjoint writes.
unsafe impl Send for QGemmArgs {}
unsafe impl Sync for QGemmArgs {}

/// `C[rows, panels] = requant(A·B + bias)` on the kernel `b` was packed for.
///
/// # Safety
/// `a` and `c` must be valid for the rows and columns touched and must not
/// overlap. Calls on disjoint `rows` or `panels` may run concurrently.
pub unsafe fn qgemm_u8_raw(args: &QGemmArgs, b: &QPackedB, rows: Range<usize>, panels: Range<usize>) {
    if rows.is_empty() || panels.is_empty() {
        return;
    }
    match b.isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => qgemm_u8i8_avx512vnni_12x32(args, b, rows, panels),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => x86::qgemm_u8i8_avx2_6x16(args, b, rows, panels),
        _ => qgemm_u8_scalar(args, b, rows, panels),
    }
}

/// Safe int8 GEMM on slices, all rows and columns.
///
/// Panics if a slice is too short for `m`, `b.k`, `b.n` and the strides.
pub fn qgemm_u8(m: usize, a: &[u8], lda: usize, b: &QPackedB, c: &mut [u8], ldc: usize) {
    if m == 0 || b.n == 0 {
        return;
    }
    assert!(lda >= b.k && a.len() >= (m - 1) * lda + b.k, "A too short");
    assert!(ldc >= b.n && c.len() >= (m - 1) * ldc + b.n, "C too short");
    let args = QGemmArgs {
        m,
        a: a.as_ptr(),
        lda,
        c: c.as_mut_ptr(),
        ldc,
    };
    // SAFETY: bounds asserted above; c is exclusively borrowed.
    unsafe { qgemm_u8_raw(&args, b, 0..m, 0..b.panels()) }
}

/// Scalar reference: the definition every SIMD kernel is tested against.
///
/// # Safety
/// As [`qgemm_u8_raw`].
pub unsafe fn qgemm_u8_scalar(args: &QGemmArgs, b: &QPackedB, rows: Range<usize>, panels: Range<usize>) {
    let (k, nr, kp) = (b.k, b.nr, b.kp);
    for p in panels {
        let cols = nr.min(b.n - p * nr);
        for i in rows.clone() {
            let ar = args.a.add(i * args.lda);
            for j in 0..cols {
                let col = p * nr + j;
                let mut acc = b.bias[col];
                for kk in 0..k {
                    let w = if b.isa == Isa::Avx2 {
                        b.data16[p * kp * nr + (kk / 2) * nr * 2 + j * 2 + kk % 2] as i32
                    } else {
                        b.data[p * kp * nr + (kk / 4) * nr * 4 + j * 4 + kk % 4] as i32
                    };
                    acc = acc.wrapping_add(*ar.add(kk) as i32 * w);
                }
                *args.c.add(i * args.ldc + col) = b.rq.apply(acc, col);
            }
        }
    }
}

/// Rows of A kept hot in L2 while all panels pass over them.
fn row_block(mr: usize, k: usize) -> usize {
    ((128 * 1024) / k.max(1)).clamp(mr, 40 * mr) / mr * mr
}

/// Splits `rows` into balanced tiles of at most `mr` rows.
fn for_tiles(rows: Range<usize>, mr: usize, mut f: impl FnMut(usize, usize)) {
    let len = rows.len();
    let tiles = len.div_ceil(mr);
    for t in 0..tiles {
        let r = crate::split_range(len, tiles, t);
        f(rows.start + r.start, r.len());
    }
}

#[cfg(target_arch = "x86_64")]
pub use x86::qgemm_u8i8_avx512vnni_12x32;

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;
    use crate::quant::x86::{requant16, requant32};
    use std::arch::x86_64::*;

    /// `k % 4` trailing bytes of a row as the low bytes of an `i32` (the
    /// rest zero; the packed weights there are zero anyway).
    #[inline(always)]
    unsafe fn tail4(p: *const u8, rem: usize) -> i32 {
        let mut v = 0u32;
        for t in 0..rem {
            v |= (*p.add(t) as u32) << (8 * t);
        }
        v as i32
    }

    /// AVX-512 VNNI int8 GEMM, 12x32 register tile.
    ///
    /// # Safety
    /// As [`qgemm_u8_raw`]; the CPU must support AVX-512 F, BW and VNNI.
    pub unsafe fn qgemm_u8i8_avx512vnni_12x32(
        args: &QGemmArgs,
        b: &QPackedB,
        rows: Range<usize>,
        panels: Range<usize>,
    ) {
        debug_assert_eq!(b.nr, 32);
        let mb = row_block(12, b.k);
        let mut r0 = rows.start;
        while r0 < rows.end {
            let r1 = (r0 + mb).min(rows.end);
            for p in panels.clone() {
                let cols = 32.min(b.n - p * 32);
                macro_rules! dispatch {
                    ($f:ident) => {
                        for_tiles(r0..r1, 12, |i0, mr| match mr {
                            1 => $f::<1>(args, b, i0, p, cols),
                            2 => $f::<2>(args, b, i0, p, cols),
                            3 => $f::<3>(args, b, i0, p, cols),
                            4 => $f::<4>(args, b, i0, p, cols),
                            5 => $f::<5>(args, b, i0, p, cols),
                            6 => $f::<6>(args, b, i0, p, cols),
                            7 => $f::<7>(args, b, i0, p, cols),
                            8 => $f::<8>(args, b, i0, p, cols),
                            9 => $f::<9>(args, b, i0, p, cols),
                            10 => $f::<10>(args, b, i0, p, cols),
                            11 => $f::<11>(args, b, i0, p, cols),
                            _ => $f::<12>(args, b, i0, p, cols),
                        })
                    };
                }
                if cols <= 16 {
                    dispatch!(tile_vnni_n);
                } else {
                    dispatch!(tile_vnni);
                }
            }
            r0 = r1;
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn tile_vnni<const MR: usize>(args: &QGemmArgs, b: &QPackedB, i0: usize, p: usize, cols: usize) {
        let kp = b.kp;
        let bp = b.data.as_ptr().add(p * kp * 32);
        let col = p * 32;
        let bias0 = _mm512_loadu_si512(b.bias.as_ptr().add(col) as *const _);
        let bias1 = _mm512_loadu_si512(b.bias.as_ptr().add(col + 16) as *const _);
        let mut acc0 = [bias0; MR];
        let mut acc1 = [bias1; MR];
        let mut ap = [std::ptr::null::<u8>(); MR];
        for (i, a) in ap.iter_mut().enumerate() {
            *a = args.a.add((i0 + i) * args.lda);
        }
        let full = b.k / 4;
        let next = bp.add(kp * 32);
        for g in 0..full {
            _mm_prefetch::<_MM_HINT_T0>(next.add(g * 128));
            _mm_prefetch::<_MM_HINT_T0>(next.add(g * 128 + 64));
            let w0 = _mm512_loadu_si512(bp.add(g * 128) as *const _);
            let w1 = _mm512_loadu_si512(bp.add(g * 128 + 64) as *const _);
            for i in 0..MR {
                let av = _mm512_set1_epi32((ap[i].add(g * 4) as *const i32).read_unaligned());
                acc0[i] = _mm512_dpbusd_epi32(acc0[i], av, w0);
                acc1[i] = _mm512_dpbusd_epi32(acc1[i], av, w1);
            }
        }
        let rem = b.k % 4;
        if rem != 0 {
            let w0 = _mm512_loadu_si512(bp.add(full * 128) as *const _);
            let w1 = _mm512_loadu_si512(bp.add(full * 128 + 64) as *const _);
            for i in 0..MR {
                let av = _mm512_set1_epi32(tail4(ap[i].add(full * 4), rem));
                acc0[i] = _mm512_dpbusd_epi32(acc0[i], av, w0);
                acc1[i] = _mm512_dpbusd_epi32(acc1[i], av, w1);
            }
        }
        let m0: u16 = if cols >= 16 { u16::MAX } else { (1u16 << cols) - 1 };
        let m1: u16 = if cols >= 32 {
            u16::MAX
        } else {
            ((1u32 << (cols - 16)) - 1) as u16
        };
        for i in 0..MR {
            let cp = args.c.add((i0 + i) * args.ldc + col);
            let y = requant32(&b.rq, col, acc0[i], acc1[i]);
            if cols == 32 {
                _mm256_storeu_si256(cp as *mut __m256i, y);
            } else {
                _mm_mask_storeu_epi8(cp as *mut i8, m0, _mm256_castsi256_si128(y));
                _mm_mask_storeu_epi8(cp.add(16) as *mut i8, m1, _mm256_extracti128_si256::<1>(y));
            }
        }
    }

    /// [`tile_vnni`] for a last panel of at most 16 valid columns.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn tile_vnni_n<const MR: usize>(args: &QGemmArgs, b: &QPackedB, i0: usize, p: usize, cols: usize) {
        let kp = b.kp;
        let bp = b.data.as_ptr().add(p * kp * 32);
        let col = p * 32;
        let mut acc = [_mm512_loadu_si512(b.bias.as_ptr().add(col) as *const _); MR];
        let mut ap = [std::ptr::null::<u8>(); MR];
        for (i, a) in ap.iter_mut().enumerate() {
            *a = args.a.add((i0 + i) * args.lda);
        }
        let full = b.k / 4;
        for g in 0..full {
            let w0 = _mm512_loadu_si512(bp.add(g * 128) as *const _);
            for i in 0..MR {
                let av = _mm512_set1_epi32((ap[i].add(g * 4) as *const i32).read_unaligned());
                acc[i] = _mm512_dpbusd_epi32(acc[i], av, w0);
            }
        }
        let rem = b.k % 4;
        if rem != 0 {
            let w0 = _mm512_loadu_si512(bp.add(full * 128) as *const _);
            for i in 0..MR {
                let av = _mm512_set1_epi32(tail4(ap[i].add(full * 4), rem));
                acc[i] = _mm512_dpbusd_epi32(acc[i], av, w0);
            }
        }
        let m0: u16 = if cols >= 16 { u16::MAX } else { (1u16 << cols) - 1 };
        for i in 0..MR {
            let cp = args.c.add((i0 + i) * args.ldc + col);
            let y0 = requant16(&b.rq, col, acc[i]);
            _mm_mask_storeu_epi8(cp as *mut i8, m0, y0);
        }
    }

    /// AVX2 int8 GEMM, 6x16 register tile, `i16` operands and `vpmaddwd`.
    ///
    /// # Safety
    /// As [`qgemm_u8_raw`]; the CPU must support AVX2.
    pub unsafe fn qgemm_u8i8_avx2_6x16(
        args: &QGemmArgs,
        b: &QPackedB,
        rows: Range<usize>,
        panels: Range<usize>,
    ) {
        debug_assert_eq!(b.nr, 16);
        let mb = row_block(6, b.k);
        let mut r0 = rows.start;
        while r0 < rows.end {
            let r1 = (r0 + mb).min(rows.end);
            for p in panels.clone() {
                let cols = 16.min(b.n - p * 16);
                for_tiles(r0..r1, 6, |i0, mr| match mr {
                    1 => tile_avx2::<1>(args, b, i0, p, cols),
                    2 => tile_avx2::<2>(args, b, i0, p, cols),
                    3 => tile_avx2::<3>(args, b, i0, p, cols),
                    4 => tile_avx2::<4>(args, b, i0, p, cols),
                    5 => tile_avx2::<5>(args, b, i0, p, cols),
                    _ => tile_avx2::<6>(args, b, i0, p, cols),
                });
            }
            r0 = r1;
        }
    }

    #[target_feature(enable = "avx2")]
    unsafe fn tile_avx2<const MR: usize>(args: &QGemmArgs, b: &QPackedB, i0: usize, p: usize, cols: usize) {
        let kp = b.kp;
        let bp = b.data16.as_ptr().add(p * kp * 16);
        let col = p * 16;
        let bias0 = _mm256_loadu_si256(b.bias.as_ptr().add(col) as *const _);
        let bias1 = _mm256_loadu_si256(b.bias.as_ptr().add(col + 8) as *const _);
        let mut acc0 = [bias0; MR];
        let mut acc1 = [bias1; MR];
        let mut ap = [std::ptr::null::<u8>(); MR];
        for (i, a) in ap.iter_mut().enumerate() {
            *a = args.a.add((i0 + i) * args.lda);
        }
        let pairs = b.k / 2;
        for g in 0..pairs {
            let w0 = _mm256_loadu_si256(bp.add(g * 32) as *const _);
            let w1 = _mm256_loadu_si256(bp.add(g * 32 + 16) as *const _);
            for i in 0..MR {
                let x = ap[i].add(g * 2);
                let v = *x as i32 | ((*x.add(1) as i32) << 16);
                let av = _mm256_set1_epi32(v);
                acc0[i] = _mm256_add_epi32(acc0[i], _mm256_madd_epi16(av, w0));
                acc1[i] = _mm256_add_epi32(acc1[i], _mm256_madd_epi16(av, w1));
            }
        }
        if b.k % 2 == 1 {
            let w0 = _mm256_loadu_si256(bp.add(pairs * 32) as *const _);
            let w1 = _mm256_loadu_si256(bp.add(pairs * 32 + 16) as *const _);
            for i in 0..MR {
                let av = _mm256_set1_epi32(*ap[i].add(pairs * 2) as i32);
                acc0[i] = _mm256_add_epi32(acc0[i], _mm256_madd_epi16(av, w0));
                acc1[i] = _mm256_add_epi32(acc1[i], _mm256_madd_epi16(av, w1));
            }
        }
        let mut t = [0i32; 16];
        for i in 0..MR {
            _mm256_storeu_si256(t.as_mut_ptr() as *mut _, acc0[i]);
            _mm256_storeu_si256(t.as_mut_ptr().add(8) as *mut _, acc1[i]);
            let cp = args.c.add((i0 + i) * args.ldc + col);
            for (j, &v) in t.iter().enumerate().take(cols) {
                *cp.add(j) = b.rq.apply(v, col + j);
            }
        }
    }
}
