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
//! - [`qgemm_u8i8_avx512amx_32x32`]: Intel AMX `tdpbusd` on tiles (see its
//!   documentation): the same `u8 x i8` dot products of 4 as `vpdpbusd`,
//!   16x16 `i32` accumulator tiles over 64-byte (16 row-group) steps of `K`,
//!   on the VNNI packing of `B`; chosen per call by shape
//!   ([`qgemm_u8_raw`]), with the VNNI kernel for the shapes where it is
//!   faster and for leftover rows.
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
    /// `K` rounded up to the kernel's row group (4, or 2 for AVX2; for AMX,
    /// a multiple of 64 when `K > 64`: whole tile steps, zero weights).
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

/// The int8 kernel level for `isa`: AMX or VNNI where present, AVX2's
/// kernel on AVX-512 without VNNI.
pub fn qgemm_level(isa: Isa) -> Isa {
    match isa {
        Isa::Avx512 => Isa::Avx2,
        i => i,
    }
}

/// Panel width of `isa`'s int8 micro-kernel.
pub fn qpanel_width(isa: Isa) -> usize {
    match qgemm_level(isa) {
        Isa::Avx512Vnni | Isa::Avx512Amx => 32,
        Isa::Avx2 | Isa::Avx512 => 16,
        Isa::Scalar => 8,
    }
}

/// Rows of `isa`'s int8 micro-tile (AMX: two 16-row tiles).
pub fn qtile_rows(isa: Isa) -> usize {
    match qgemm_level(isa) {
        Isa::Avx512Amx => 32,
        Isa::Avx512Vnni => 12,
        Isa::Avx2 | Isa::Avx512 => 6,
        Isa::Scalar => 4,
    }
}

/// Kernel name of `isa`'s int8 GEMM (AMX: the kernel of the shapes where
/// it beats VNNI, see [`qgemm_u8_raw`]).
pub fn qgemm_name(isa: Isa) -> &'static str {
    match qgemm_level(isa) {
        Isa::Avx512Amx => "qgemm_u8i8_avx512amx_32x32",
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
        let group = match isa {
            Isa::Avx2 => 2,
            Isa::Avx512Amx if k > AMX_KSTEP => AMX_KSTEP,
            _ => 4,
        };
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
        Isa::Avx512Amx if amx_wins(rows.len(), b.k, panels.len() * 32) => {
            qgemm_u8i8_avx512amx_32x32(args, b, rows, panels)
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni | Isa::Avx512Amx => qgemm_u8i8_avx512vnni_12x32(args, b, rows, panels),
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

/// Bytes of a row of `A` per AMX step: an A tile row (64 bytes, 16 groups
/// of 4 `K` values; a B tile then has 16 rows of 64 bytes).
const AMX_KSTEP: usize = 64;

/// Whether [`qgemm_u8_raw`] runs the AMX kernel (else the VNNI kernel) for
/// a call on `rows` rows, reduction length `k` and `cols` columns (its
/// panels): at least one 16-row tile, `K >= 16` and 64K multiply-adds.
///
/// Measured with `examples/qgemm_speed.rs` (one thread, both kernels
/// warm): AMX lost for `K <= 8` at every size (0.7-0.9x VNNI: a 64-byte
/// step holds only 1-2 groups of `K`) and for calls below ~32-64K
/// multiply-adds (0.7-1.0x: `ldtilecfg` and `tilerelease` cost ~0.1 us per
/// call), and won from there (1.1-1.5x at 64-150K, 1.2-3.5x on MobileNetV2's
/// pointwise shapes).
pub fn amx_wins(rows: usize, k: usize, cols: usize) -> bool {
    rows >= 16 && k >= AMX_MIN_K && rows * k * cols >= AMX_MIN_MACS
}

/// Smallest `K` for AMX.
const AMX_MIN_K: usize = 16;
/// Fewest multiply-adds per call for AMX.
const AMX_MIN_MACS: usize = 64 * 1024;

/// Rows of A kept hot in L2 while all panels pass over them.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn row_block(mr: usize, k: usize) -> usize {
    ((128 * 1024) / k.max(1)).clamp(mr, 40 * mr) / mr * mr
}

/// Splits `rows` into balanced tiles of at most `mr` rows.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn for_tiles(rows: Range<usize>, mr: usize, mut f: impl FnMut(usize, usize)) {
    let len = rows.len();
    let tiles = len.div_ceil(mr);
    for t in 0..tiles {
        let r = crate::split_range(len, tiles, t);
        f(rows.start + r.start, r.len());
    }
}

#[cfg(target_arch = "x86_64")]
pub use x86::{qgemm_u8i8_avx512amx_32x32, qgemm_u8i8_avx512vnni_12x32};

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
        for (i, &acc) in acc.iter().enumerate() {
            let cp = args.c.add((i0 + i) * args.ldc + col);
            let y0 = requant16(&b.rq, col, acc);
            _mm_mask_storeu_epi8(cp as *mut i8, m0, y0);
        }
    }

    /// AMX int8 GEMM: 32x32 blocks of `C` as 2x2 tiles of 16x16 `i32`.
    ///
    /// Intel AMX (Advanced Matrix Extensions, Sapphire Rapids and later) has
    /// eight tile registers of up to 16 rows of 64 bytes; `tdpbusd C, A, B`
    /// adds to each `i32` `C[i][j]` the dot products
    /// `Σ_g Σ_t A[i][4g + t]·B[g][4j + t]` of `u8` `A` bytes with `i8` `B`
    /// bytes. That is `vpdpbusd`'s arithmetic per lane (products exact in
    /// `i32`, sums wrapping, no saturation), and `B`'s tile layout (row `g`:
    /// 4 consecutive `K` values of each of 16 columns) is the VNNI packing
    /// of [`QPackedB`]: a B tile is 16 groups of one 32-column panel (64
    /// bytes at offset 0 or 64, row stride 128). Integer sums do not depend
    /// on order, so the result equals [`qgemm_u8_scalar`] bit for bit.
    ///
    /// Tiles: `tmm4`, `tmm5` hold 16 rows of `A` each (one step of `K`: 64
    /// bytes), `tmm6`, `tmm7` the two halves of the panel (16 groups of 4
    /// rows of `B`), `tmm0..tmm3` the four accumulators; per step, four
    /// tile loads and four `tdpbusd`. `K` is padded to whole steps in the
    /// packing (zero weights; for `K <= 64` one step, the `A` tiles `K`
    /// rounded up to 4 bytes wide). `A` is read in place (row stride `lda`)
    /// where `K` is whole steps and its rows do not straddle cache lines
    /// (or only one or two panels reuse them); otherwise each 32-row block
    /// is first copied to an aligned buffer, zero-padded past `K` (nothing
    /// is read past a row). Accumulators start from the bias (a tile load
    /// with row stride 0) and are stored to the stack and requantized with
    /// the VNNI kernel's epilogue; partial panels use one B tile and masked
    /// stores. Rows are done in blocks of 32, then 16; the last `rows % 16`
    /// go to [`qgemm_u8i8_avx512vnni_12x32`] (as do all calls on fewer than
    /// 16 rows).
    ///
    /// The tile configuration is loaded (`ldtilecfg`) on entry and released
    /// (`tilerelease`) before returning, so no tile state outlives a call.
    ///
    /// # Safety
    /// As [`qgemm_u8_raw`]; `b` must be packed for [`Isa::Avx512Amx`] and
    /// [`crate::amx_usable`] must be true (AVX-512 F, BW, VNNI, AMX-TILE and
    /// AMX-INT8, with the tile state granted to this process).
    pub unsafe fn qgemm_u8i8_avx512amx_32x32(
        args: &QGemmArgs,
        b: &QPackedB,
        rows: Range<usize>,
        panels: Range<usize>,
    ) {
        debug_assert_eq!((b.isa, b.nr), (Isa::Avx512Amx, 32));
        let amx_rows = rows.len() / 16 * 16;
        if amx_rows == 0 || b.k == 0 {
            return qgemm_u8i8_avx512vnni_12x32(args, b, rows, panels);
        }
        let split = rows.start + amx_rows;
        if !panels.is_empty() {
            amx_rows_x16(args, b, rows.start..split, panels.clone());
        }
        if split < rows.end {
            qgemm_u8i8_avx512vnni_12x32(args, b, split..rows.end, panels);
        }
    }

    /// Palette-1 tile configuration (the 64-byte operand of `ldtilecfg`).
    #[repr(C, align(64))]
    struct TileCfg {
        palette: u8,
        start_row: u8,
        reserved: [u8; 14],
        /// Bytes per row of `tmm0..tmm15`.
        colsb: [u16; 16],
        /// Rows of `tmm0..tmm15`.
        rows: [u8; 16],
    }

    /// `tileloadd tmmT, [p + stride]` (row `r` at `p + r * stride`).
    macro_rules! tileload {
        ($t:literal, $p:expr, $stride:expr) => {
            std::arch::asm!(
                concat!("tileloadd tmm", $t, ", [{p} + {s} * 1]"),
                p = in(reg) $p,
                s = in(reg) $stride,
                options(nostack, readonly, preserves_flags)
            )
        };
    }

    /// `tilestored [p + stride], tmmT`.
    macro_rules! tilestore {
        ($t:literal, $p:expr, $stride:expr) => {
            std::arch::asm!(
                concat!("tilestored [{p} + {s} * 1], tmm", $t),
                p = in(reg) $p,
                s = in(reg) $stride,
                options(nostack, preserves_flags)
            )
        };
    }

    /// `tdpbusd tmmC, tmmA, tmmB`: `C += A (u8) · B (i8)`.
    macro_rules! tdpbusd {
        ($c:literal, $a:literal, $b:literal) => {
            std::arch::asm!(
                concat!("tdpbusd tmm", $c, ", tmm", $a, ", tmm", $b),
                options(nomem, nostack, preserves_flags)
            )
        };
    }

    /// Panels of a call from which an `A` whose tile rows straddle cache
    /// lines is copied (fewer: read in place, where `K` allows): measured,
    /// the copy costs about as much as one or two passes over such rows.
    const AMX_COPY_MIN_PANELS: usize = 3;

    /// Rows `rows` (a multiple of 16 long) by `panels` on AMX tiles.
    ///
    /// Blocks of 32 (or 16) rows by one panel, row blocks outer (the block
    /// of `A` stays in L1 while the panels pass). `A` is read in place when
    /// `K` is whole steps and no tile row straddles cache lines (a step of
    /// 64 bytes, or a smaller power of two, with rows aligned to it) or few
    /// panels reuse them; otherwise each block is first copied to an aligned
    /// buffer, zero-padded to whole steps (a tile row that straddles two
    /// cache lines loads both: reading unaligned rows in place was up to
    /// 1.8x slower). Measured and dropped: running the epilogue of one
    /// block while the tiles compute the next (slower, much so for long
    /// `K`), copying the next block while the tiles compute, and loading
    /// `B` with the non-temporal hint (`tileloaddt1`).
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn amx_rows_x16(args: &QGemmArgs, b: &QPackedB, rows: Range<usize>, panels: Range<usize>) {
        let kstep = b.kp.min(AMX_KSTEP);
        let mut cfg = TileCfg {
            palette: 1,
            start_row: 0,
            reserved: [0; 14],
            colsb: [0; 16],
            rows: [0; 16],
        };
        for t in 0..4 {
            cfg.colsb[t] = 64;
            cfg.rows[t] = 16;
        }
        for t in 4..6 {
            cfg.colsb[t] = kstep as u16;
            cfg.rows[t] = 16;
        }
        for t in 6..8 {
            cfg.colsb[t] = 64;
            cfg.rows[t] = (kstep / 4) as u8;
        }
        // Rows of a step never straddle cache lines: steps of a power of
        // two bytes, rows aligned to it.
        let line_exact = kstep.is_power_of_two() && (args.a as usize | args.lda).is_multiple_of(kstep);
        let in_place = b.k == b.kp && (line_exact || panels.len() < AMX_COPY_MIN_PANELS);
        // Row stride of the copy: K padded to 64 bytes (a multiple of kstep).
        let ps = b.kp.next_multiple_of(64);
        // The copy buffer is per thread and kept (no allocation after a
        // thread's first, largest call); bytes past k are don't-care: the
        // packed weights there are zero.
        let copy: *mut Line = if in_place {
            std::ptr::null_mut()
        } else {
            ACOPY.with(|c| {
                let mut v = c.borrow_mut();
                if v.len() < 32 * ps / 64 {
                    v.resize(32 * ps / 64, Line([0; 64]));
                }
                v.as_mut_ptr()
            })
        };
        let mut blk = Block {
            a: args.a,
            sa: if in_place { args.lda } else { ps },
            steps: b.kp / kstep,
            kstep,
        };
        let mut cbuf = std::mem::MaybeUninit::<CBuf>::uninit();
        let c = cbuf.as_mut_ptr() as *mut u8;
        std::arch::asm!("ldtilecfg [{}]", in(reg) &cfg, options(nostack, readonly, preserves_flags));
        let mut r0 = rows.start;
        while r0 < rows.end {
            let mr = (rows.end - r0).min(32);
            let a = args.a.add(r0 * args.lda);
            if in_place {
                blk.a = a;
            } else {
                let d = copy as *mut u8;
                copy_rows(a, args.lda, d, ps, mr, b.k);
                blk.a = d;
            }
            for p in panels.clone() {
                let cols = 32.min(b.n - p * 32);
                let (mt, nt) = (mr / 16, if cols > 16 { 2 } else { 1 });
                let col = p * 32;
                match (mt, nt) {
                    (2, 2) => amx_compute::<2, 2>(b, &blk, col),
                    (2, _) => amx_compute::<2, 1>(b, &blk, col),
                    (_, 2) => amx_compute::<1, 2>(b, &blk, col),
                    _ => amx_compute::<1, 1>(b, &blk, col),
                }
                amx_store(c, mt, nt);
                amx_epilogue(args, b, c as *const i32, r0, mr, col, cols);
            }
            r0 += mr;
        }
        std::arch::asm!("tilerelease", options(nostack, nomem, preserves_flags));
    }

    /// `rows` rows of `k` bytes at `a` (stride `lda`) to `d` (stride `ps`, a
    /// multiple of 64 at least `k`), each row zero-padded to `ps` bytes.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn copy_rows(a: *const u8, lda: usize, d: *mut u8, ps: usize, rows: usize, k: usize) {
        for i in 0..rows {
            let (src, dst) = (a.add(i * lda), d.add(i * ps));
            let mut c = 0;
            while c + 64 <= k {
                _mm512_store_si512(dst.add(c) as *mut _, _mm512_loadu_si512(src.add(c) as *const _));
                c += 64;
            }
            if c < ps {
                // The last bytes of the row (masked: nothing read past K), then zeros.
                let mask = if k > c { u64::MAX >> (64 - (k - c)) } else { 0 };
                _mm512_store_si512(
                    dst.add(c) as *mut _,
                    _mm512_maskz_loadu_epi8(mask, src.add(c) as *const i8),
                );
            }
        }
    }

    std::thread_local! {
        /// Per-thread aligned copy of A blocks whose rows straddle lines.
        static ACOPY: std::cell::RefCell<Vec<Line>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    /// A 64-byte aligned line of the copy of `A`.
    #[derive(Clone, Copy)]
    #[repr(C, align(64))]
    struct Line([u8; 64]);

    /// `C` tiles stored for the epilogue: 32 rows of 32 `i32` (bias included).
    #[repr(C, align(64))]
    struct CBuf([[i32; 32]; 32]);

    /// Where one 32-row block of `A` is read.
    struct Block {
        /// First row of the block.
        a: *const u8,
        /// Its row stride.
        sa: usize,
        /// Steps of `K` (`kp / kstep`).
        steps: usize,
        /// Bytes of `K` per step.
        kstep: usize,
    }

    /// Accumulates one `16·MT x 16·NT` block (`A` rows of `blk`, panel
    /// columns from `col`) into `tmm0` (rows 0-15, columns 0-15), `tmm1`
    /// (columns 16-31), `tmm2`, `tmm3` (rows 16-31), starting from the bias
    /// (each row of the tiles loaded from the same 64 bytes: stride 0).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn amx_compute<const MT: usize, const NT: usize>(b: &QPackedB, blk: &Block, col: usize) {
        let bp = b.data.as_ptr().add(col * b.kp) as *const u8;
        let bias = b.bias.as_ptr().add(col);
        tileload!("0", bias, 0usize);
        if NT == 2 {
            tileload!("1", bias.add(16), 0usize);
        }
        if MT == 2 {
            tileload!("2", bias, 0usize);
            if NT == 2 {
                tileload!("3", bias.add(16), 0usize);
            }
        }
        let (sa, a16) = (blk.sa, blk.a.add(16 * blk.sa));
        let wstep = blk.kstep / 4 * 128;
        for s in 0..blk.steps {
            let (a0, w) = (blk.a.add(s * blk.kstep), bp.add(s * wstep));
            tileload!("4", a0, sa);
            tileload!("6", w, 128usize);
            tdpbusd!("0", "4", "6");
            if NT == 2 {
                tileload!("7", w.add(64), 128usize);
                tdpbusd!("1", "4", "7");
            }
            if MT == 2 {
                tileload!("5", a16.add(s * blk.kstep), sa);
                tdpbusd!("2", "5", "6");
                if NT == 2 {
                    tdpbusd!("3", "5", "7");
                }
            }
        }
    }

    /// Stores the accumulator tiles of an `mt x nt` block to a [`CBuf`].
    #[inline]
    unsafe fn amx_store(c: *mut u8, mt: usize, nt: usize) {
        tilestore!("0", c, 128usize);
        if nt == 2 {
            tilestore!("1", c.add(64), 128usize);
        }
        if mt == 2 {
            tilestore!("2", c.add(16 * 128), 128usize);
            if nt == 2 {
                tilestore!("3", c.add(16 * 128 + 64), 128usize);
            }
        }
    }

    /// Requantizes a stored block ([`CBuf`] `c`, `rows` rows) to `C` at row
    /// `r0`, columns `col..col + cols` (masked stores for a partial panel).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn amx_epilogue(
        args: &QGemmArgs,
        b: &QPackedB,
        c: *const i32,
        r0: usize,
        rows: usize,
        col: usize,
        cols: usize,
    ) {
        let m0: u16 = if cols >= 16 { u16::MAX } else { (1u16 << cols) - 1 };
        if cols > 16 {
            let m1: u16 = if cols >= 32 {
                u16::MAX
            } else {
                ((1u32 << (cols - 16)) - 1) as u16
            };
            for i in 0..rows {
                let acc0 = _mm512_load_si512(c.add(i * 32) as *const _);
                let acc1 = _mm512_load_si512(c.add(i * 32 + 16) as *const _);
                let y = requant32(&b.rq, col, acc0, acc1);
                let cp = args.c.add((r0 + i) * args.ldc + col);
                if cols == 32 {
                    _mm256_storeu_si256(cp as *mut __m256i, y);
                } else {
                    _mm_mask_storeu_epi8(cp as *mut i8, m0, _mm256_castsi256_si128(y));
                    _mm_mask_storeu_epi8(cp.add(16) as *mut i8, m1, _mm256_extracti128_si256::<1>(y));
                }
            }
        } else {
            for i in 0..rows {
                let acc = _mm512_load_si512(c.add(i * 32) as *const _);
                let y = requant16(&b.rq, col, acc);
                let cp = args.c.add((r0 + i) * args.ldc + col);
                _mm_mask_storeu_epi8(cp as *mut i8, m0, y);
            }
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
