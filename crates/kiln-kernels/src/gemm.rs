//! Packed f32 GEMM with a fused epilogue: `C = act(A·B + bias [+ R])`.
//!
//! Shapes: `A` is `M x K` row-major with row stride `lda` (in NHWC, the
//! `H*W` pixels by input channels of a 1x1 convolution, used in place), `B`
//! is `K x N` (input by output channels), packed once into [`PackedB`]:
//! panels of `NR` columns, each `K x NR` row-major and zero-padded, so a
//! micro-kernel streams one panel contiguously. `bias` has `N` entries, `R`
//! (residual, optional) and `C` are `M x N` with strides `ldr`, `ldc`.
//!
//! Every output element is `bias[n]` followed by fused multiply-adds over `k`
//! in increasing order, whatever the tiling, so splitting the rows or panels
//! of one product over threads gives bit-identical results.
//!
//! Micro-kernels (register tiles, `MR x NR`): [`gemm_f32_avx512_12x32`],
//! [`gemm_f32_avx2_6x16`], and the reference [`gemm_f32_scalar`].

use crate::{Activation, Isa};
use std::ops::Range;

/// `B` packed for one ISA's micro-kernel, with its bias.
#[derive(Debug, Clone)]
pub struct PackedB {
    /// Rows of `B` (the reduction length).
    pub k: usize,
    /// Columns of `B` (outputs).
    pub n: usize,
    /// Panel width.
    pub nr: usize,
    /// The ISA this packing is for.
    pub isa: Isa,
    /// `ceil(n / nr)` panels of `k * nr` values.
    data: Vec<f32>,
    /// `n` bias values, zero-padded to the panels.
    bias: Vec<f32>,
}

/// Panel width of `isa`'s micro-kernel.
pub fn panel_width(isa: Isa) -> usize {
    match isa {
        Isa::Avx512 => 32,
        Isa::Avx2 => 16,
        Isa::Scalar => 8,
        Isa::Avx512Vnni | Isa::Avx512Amx => panel_width(Isa::Avx512),
    }
}

/// Rows of `isa`'s micro-tile.
pub fn tile_rows(isa: Isa) -> usize {
    match isa {
        Isa::Avx512 => 12,
        Isa::Avx2 => 6,
        Isa::Scalar => 4,
        Isa::Avx512Vnni | Isa::Avx512Amx => tile_rows(Isa::Avx512),
    }
}

impl PackedB {
    /// Packs `B[k][n] = b(k, n)` and `bias` (`n` values; `None` = zeros) for `isa`.
    pub fn pack(
        isa: Isa,
        k: usize,
        n: usize,
        b: impl Fn(usize, usize) -> f32,
        bias: Option<&[f32]>,
    ) -> PackedB {
        let isa = isa.float_level();
        let nr = panel_width(isa);
        let panels = n.div_ceil(nr);
        let mut data = vec![0f32; panels * k * nr];
        for p in 0..panels {
            let base = p * k * nr;
            for kk in 0..k {
                for j in 0..nr {
                    let col = p * nr + j;
                    if col < n {
                        data[base + kk * nr + j] = b(kk, col);
                    }
                }
            }
        }
        let mut bv = vec![0f32; panels * nr];
        if let Some(bias) = bias {
            bv[..n].copy_from_slice(&bias[..n]);
        }
        PackedB {
            k,
            n,
            nr,
            isa,
            data,
            bias: bv,
        }
    }

    /// Packs a row-major `k x n` matrix.
    pub fn from_row_major(isa: Isa, k: usize, n: usize, b: &[f32], bias: Option<&[f32]>) -> PackedB {
        let isa = isa.float_level();
        assert!(b.len() >= k * n, "B has {} values, k*n = {}", b.len(), k * n);
        PackedB::pack(isa, k, n, |kk, j| b[kk * n + j], bias)
    }

    /// Number of column panels.
    pub fn panels(&self) -> usize {
        self.n.div_ceil(self.nr)
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        (self.data.len() + self.bias.len()) * 4
    }

    /// Start of panel `p` (`k x nr` values).
    #[cfg(target_arch = "x86_64")]
    pub(crate) fn panel_ptr(&self, p: usize) -> *const f32 {
        self.data[p * self.k * self.nr..].as_ptr()
    }

    /// Bias of panel `p` (`nr` values, zero-padded).
    #[cfg(target_arch = "x86_64")]
    pub(crate) fn bias_ptr(&self, p: usize) -> *const f32 {
        self.bias[p * self.nr..].as_ptr()
    }
}

/// Raw operands of one GEMM call; see the module docs for shapes.
#[derive(Debug, Clone, Copy)]
pub struct GemmArgs {
    /// Rows of A and C.
    pub m: usize,
    /// A, `m` rows of stride `lda` (at least `k` valid values each).
    pub a: *const f32,
    /// Row stride of A.
    pub lda: usize,
    /// Residual added before the activation (`m` rows of stride `ldr`), or null.
    pub r: *const f32,
    /// Row stride of R.
    pub ldr: usize,
    /// Output, `m` rows of stride `ldc`.
    pub c: *mut f32,
    /// Row stride of C.
    pub ldc: usize,
    /// Epilogue activation.
    pub act: Activation,
}

// SAFETY: the pointers are only dereferenced inside `gemm_f32_raw`, whose
// caller guarantees validity; tasks on other threads write disjoint rows/panels.
unsafe impl Send for GemmArgs {}
unsafe impl Sync for GemmArgs {}

/// Computes rows `rows` and column panels `panels` of `C = act(A·B + bias + R)`
/// with `b.isa`'s micro-kernel.
///
/// # Safety
/// `a`, `r` (if not null) and `c` must be valid for the rows and columns
/// touched; `c` may alias `r` exactly (same pointer and stride: in-place
/// residual) but no other operand. Different calls may run concurrently on
/// disjoint `rows` or `panels`.
pub unsafe fn gemm_f32_raw(args: &GemmArgs, b: &PackedB, rows: Range<usize>, panels: Range<usize>) {
    if rows.is_empty() || panels.is_empty() {
        return;
    }
    match b.isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => gemm_f32_avx512_12x32(args, b, rows.clone(), panels.clone()),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => gemm_f32_avx2_6x16(args, b, rows.clone(), panels.clone()),
        _ => gemm_f32_scalar(args, b, rows.clone(), panels.clone()),
    }
    if args.act.clamp_bounds().is_none() {
        let c0 = (panels.start * b.nr).min(b.n);
        let c1 = (panels.end * b.nr).min(b.n);
        for i in rows {
            let row = std::slice::from_raw_parts_mut(args.c.add(i * args.ldc + c0), c1 - c0);
            args.act.apply_slice(row);
        }
    }
}

/// Safe GEMM on slices: `C = act(A·B + bias + R)` for all rows and columns.
///
/// Panics if a slice is too short for `m`, `b.k`, `b.n` and the strides.
#[allow(clippy::too_many_arguments)]
pub fn gemm_f32(
    m: usize,
    a: &[f32],
    lda: usize,
    b: &PackedB,
    r: Option<(&[f32], usize)>,
    c: &mut [f32],
    ldc: usize,
    act: Activation,
) {
    if m == 0 || b.n == 0 {
        return;
    }
    assert!(lda >= b.k && a.len() >= (m - 1) * lda + b.k, "A too short");
    assert!(ldc >= b.n && c.len() >= (m - 1) * ldc + b.n, "C too short");
    let (rp, ldr) = match r {
        Some((r, ldr)) => {
            assert!(ldr >= b.n && r.len() >= (m - 1) * ldr + b.n, "R too short");
            (r.as_ptr(), ldr)
        }
        None => (std::ptr::null(), 0),
    };
    let args = GemmArgs {
        m,
        a: a.as_ptr(),
        lda,
        r: rp,
        ldr,
        c: c.as_mut_ptr(),
        ldc,
        act,
    };
    // SAFETY: bounds asserted above; c is exclusively borrowed.
    unsafe { gemm_f32_raw(&args, b, 0..m, 0..b.panels()) }
}

// Blocking helpers of the SIMD micro-kernels (x86 only so far; a NEON kernel
// widens their cfg to its architecture).

/// Rows of A kept hot in L2 while all panels pass over them.
#[cfg(target_arch = "x86_64")]
fn row_block(isa: Isa, k: usize) -> usize {
    let mr = tile_rows(isa);
    ((96 * 1024) / (4 * k.max(1))).clamp(mr, 40 * mr) / mr * mr
}

/// Splits `rows` into tiles of at most `mr` rows, balanced (e.g. 49 rows with
/// `mr = 12` gives 10,10,10,10,9 rather than 12,12,12,12,1).
#[cfg(target_arch = "x86_64")]
pub(crate) fn for_tiles(rows: Range<usize>, mr: usize, mut f: impl FnMut(usize, usize)) {
    let len = rows.len();
    let tiles = len.div_ceil(mr);
    for t in 0..tiles {
        let r = crate::split_range(len, tiles, t);
        f(rows.start + r.start, r.len());
    }
}

/// Scalar reference: the definition every SIMD kernel is tested against.
///
/// # Safety
/// As [`gemm_f32_raw`].
pub unsafe fn gemm_f32_scalar(args: &GemmArgs, b: &PackedB, rows: Range<usize>, panels: Range<usize>) {
    let (k, nr) = (b.k, b.nr);
    let (lo, hi) = args
        .act
        .clamp_bounds()
        .unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
    for p in panels {
        let bp = &b.data[p * k * nr..(p + 1) * k * nr];
        let cols = nr.min(b.n - p * nr);
        for i in rows.clone() {
            let ar = args.a.add(i * args.lda);
            for j in 0..cols {
                let col = p * nr + j;
                let mut acc = b.bias[col];
                for kk in 0..k {
                    acc += *ar.add(kk) * bp[kk * nr + j];
                }
                if !args.r.is_null() {
                    acc += *args.r.add(i * args.ldr + col);
                }
                if !acc.is_nan() {
                    acc = acc.max(lo).min(hi);
                }
                *args.c.add(i * args.ldc + col) = acc;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) use x86::mask8 as x86_mask8;
#[cfg(target_arch = "x86_64")]
pub use x86::{gemm_f32_avx2_6x16, gemm_f32_avx512_12x32};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;
    use std::arch::x86_64::*;

    /// AVX-512 GEMM, 12x32 register tile (24 zmm accumulators).
    ///
    /// # Safety
    /// As [`gemm_f32_raw`]; the CPU must support AVX-512 F.
    pub unsafe fn gemm_f32_avx512_12x32(
        args: &GemmArgs,
        b: &PackedB,
        rows: Range<usize>,
        panels: Range<usize>,
    ) {
        debug_assert_eq!(b.nr, 32);
        let mb = row_block(Isa::Avx512, b.k);
        let mut r0 = rows.start;
        while r0 < rows.end {
            let r1 = (r0 + mb).min(rows.end);
            if r1 - r0 == 1 {
                // One row (a fully connected layer at batch 1): a GEMV over
                // four panels at once, four weight streams in flight.
                gemv512(args, b, r0, panels.clone());
                r0 = r1;
                continue;
            }
            for p in panels.clone() {
                let cols = 32.min(b.n - p * 32);
                let mask = if cols == 32 { u32::MAX } else { (1u32 << cols) - 1 };
                if cols <= 16 {
                    // A narrow last panel: half the FMAs of a full tile.
                    for_tiles(r0..r1, 12, |i0, mr| {
                        let t = Tile { i0, p, mask };
                        match mr {
                            1 => tile512n::<1>(args, b, t),
                            2 => tile512n::<2>(args, b, t),
                            3 => tile512n::<3>(args, b, t),
                            4 => tile512n::<4>(args, b, t),
                            5 => tile512n::<5>(args, b, t),
                            6 => tile512n::<6>(args, b, t),
                            7 => tile512n::<7>(args, b, t),
                            8 => tile512n::<8>(args, b, t),
                            9 => tile512n::<9>(args, b, t),
                            10 => tile512n::<10>(args, b, t),
                            11 => tile512n::<11>(args, b, t),
                            _ => tile512n::<12>(args, b, t),
                        }
                    });
                    continue;
                }
                for_tiles(r0..r1, 12, |i0, mr| {
                    let t = Tile { i0, p, mask };
                    match mr {
                        1 => tile512::<1>(args, b, t),
                        2 => tile512::<2>(args, b, t),
                        3 => tile512::<3>(args, b, t),
                        4 => tile512::<4>(args, b, t),
                        5 => tile512::<5>(args, b, t),
                        6 => tile512::<6>(args, b, t),
                        7 => tile512::<7>(args, b, t),
                        8 => tile512::<8>(args, b, t),
                        9 => tile512::<9>(args, b, t),
                        10 => tile512::<10>(args, b, t),
                        11 => tile512::<11>(args, b, t),
                        _ => tile512::<12>(args, b, t),
                    }
                });
            }
            r0 = r1;
        }
    }

    #[derive(Clone, Copy)]
    struct Tile {
        i0: usize,
        p: usize,
        mask: u32,
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn tile512<const MR: usize>(args: &GemmArgs, b: &PackedB, t: Tile) {
        let k = b.k;
        let bp = b.data.as_ptr().add(t.p * k * 32);
        let bias = b.bias.as_ptr().add(t.p * 32);
        let m0 = t.mask as u16;
        let m1 = (t.mask >> 16) as u16;
        let bias0 = _mm512_loadu_ps(bias);
        let bias1 = _mm512_loadu_ps(bias.add(16));
        let mut acc0 = [bias0; MR];
        let mut acc1 = [bias1; MR];
        let mut ap = [std::ptr::null::<f32>(); MR];
        for (i, a) in ap.iter_mut().enumerate() {
            *a = args.a.add((t.i0 + i) * args.lda);
        }
        // The next panel's row kk (two cache lines), fetched while this one
        // is computed: weights stream from L3 once per inference.
        let next = bp.add(k * 32);
        for kk in 0..k {
            _mm_prefetch::<_MM_HINT_T0>(next.add(kk * 32) as *const i8);
            _mm_prefetch::<_MM_HINT_T0>(next.add(kk * 32 + 16) as *const i8);
            let w0 = _mm512_loadu_ps(bp.add(kk * 32));
            let w1 = _mm512_loadu_ps(bp.add(kk * 32 + 16));
            for i in 0..MR {
                let av = _mm512_set1_ps(*ap[i].add(kk));
                acc0[i] = _mm512_fmadd_ps(av, w0, acc0[i]);
                acc1[i] = _mm512_fmadd_ps(av, w1, acc1[i]);
            }
        }
        let (lo, hi) = args
            .act
            .clamp_bounds()
            .unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
        let lo = _mm512_set1_ps(lo);
        let hi = _mm512_set1_ps(hi);
        let col = t.p * 32;
        for i in 0..MR {
            let row = t.i0 + i;
            let mut x0 = acc0[i];
            let mut x1 = acc1[i];
            if !args.r.is_null() {
                let rp = args.r.add(row * args.ldr + col);
                x0 = _mm512_add_ps(x0, _mm512_maskz_loadu_ps(m0, rp));
                x1 = _mm512_add_ps(x1, _mm512_maskz_loadu_ps(m1, rp.add(16)));
            }
            // max(lo, x) / min(hi, x) return x when x is NaN: NaN propagates.
            x0 = _mm512_min_ps(hi, _mm512_max_ps(lo, x0));
            x1 = _mm512_min_ps(hi, _mm512_max_ps(lo, x1));
            let cp = args.c.add(row * args.ldc + col);
            _mm512_mask_storeu_ps(cp, m0, x0);
            _mm512_mask_storeu_ps(cp.add(16), m1, x1);
        }
    }

    /// The 16-column variant of [`tile512`] for a last panel of at most 16
    /// valid columns (the packed panel is 32 wide; its zero half is skipped).
    #[target_feature(enable = "avx512f")]
    unsafe fn tile512n<const MR: usize>(args: &GemmArgs, b: &PackedB, t: Tile) {
        let k = b.k;
        let bp = b.data.as_ptr().add(t.p * k * 32);
        let m0 = t.mask as u16;
        let mut acc = [_mm512_loadu_ps(b.bias.as_ptr().add(t.p * 32)); MR];
        let mut ap = [std::ptr::null::<f32>(); MR];
        for (i, a) in ap.iter_mut().enumerate() {
            *a = args.a.add((t.i0 + i) * args.lda);
        }
        for kk in 0..k {
            let w0 = _mm512_loadu_ps(bp.add(kk * 32));
            for i in 0..MR {
                acc[i] = _mm512_fmadd_ps(_mm512_set1_ps(*ap[i].add(kk)), w0, acc[i]);
            }
        }
        let (lo, hi) = args
            .act
            .clamp_bounds()
            .unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
        let (lo, hi) = (_mm512_set1_ps(lo), _mm512_set1_ps(hi));
        let col = t.p * 32;
        for (i, mut x) in acc.into_iter().enumerate() {
            let row = t.i0 + i;
            if !args.r.is_null() {
                x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(m0, args.r.add(row * args.ldr + col)));
            }
            x = _mm512_min_ps(hi, _mm512_max_ps(lo, x));
            _mm512_mask_storeu_ps(args.c.add(row * args.ldc + col), m0, x);
        }
    }

    /// Row `row` of C for `panels`, four panels at a time (M = 1).
    #[target_feature(enable = "avx512f")]
    unsafe fn gemv512(args: &GemmArgs, b: &PackedB, row: usize, panels: Range<usize>) {
        const Q: usize = 4;
        let k = b.k;
        let ar = args.a.add(row * args.lda);
        let (lo, hi) = args
            .act
            .clamp_bounds()
            .unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
        let (lo, hi) = (_mm512_set1_ps(lo), _mm512_set1_ps(hi));
        let mut p0 = panels.start;
        while p0 < panels.end {
            let np = Q.min(panels.end - p0);
            let mut acc0 = [_mm512_setzero_ps(); Q];
            let mut acc1 = [_mm512_setzero_ps(); Q];
            let mut bp = [std::ptr::null::<f32>(); Q];
            for q in 0..Q {
                let p = p0 + q.min(np - 1);
                bp[q] = b.data.as_ptr().add(p * k * 32);
                acc0[q] = _mm512_loadu_ps(b.bias.as_ptr().add(p * 32));
                acc1[q] = _mm512_loadu_ps(b.bias.as_ptr().add(p * 32 + 16));
            }
            for kk in 0..k {
                let av = _mm512_set1_ps(*ar.add(kk));
                for q in 0..Q {
                    if q < np {
                        // Each weight stream is read once: fetch 16 rows ahead.
                        _mm_prefetch::<_MM_HINT_T0>(bp[q].wrapping_add((kk + 16) * 32) as *const i8);
                        _mm_prefetch::<_MM_HINT_T0>(bp[q].wrapping_add((kk + 16) * 32 + 16) as *const i8);
                        acc0[q] = _mm512_fmadd_ps(av, _mm512_loadu_ps(bp[q].add(kk * 32)), acc0[q]);
                        acc1[q] = _mm512_fmadd_ps(av, _mm512_loadu_ps(bp[q].add(kk * 32 + 16)), acc1[q]);
                    }
                }
            }
            for q in 0..np {
                let p = p0 + q;
                let cols = 32.min(b.n - p * 32);
                let mask = if cols == 32 { u32::MAX } else { (1u32 << cols) - 1 };
                let (m0, m1) = (mask as u16, (mask >> 16) as u16);
                let col = p * 32;
                let (mut x0, mut x1) = (acc0[q], acc1[q]);
                if !args.r.is_null() {
                    let rp = args.r.add(row * args.ldr + col);
                    x0 = _mm512_add_ps(x0, _mm512_maskz_loadu_ps(m0, rp));
                    x1 = _mm512_add_ps(x1, _mm512_maskz_loadu_ps(m1, rp.add(16)));
                }
                x0 = _mm512_min_ps(hi, _mm512_max_ps(lo, x0));
                x1 = _mm512_min_ps(hi, _mm512_max_ps(lo, x1));
                let cp = args.c.add(row * args.ldc + col);
                _mm512_mask_storeu_ps(cp, m0, x0);
                _mm512_mask_storeu_ps(cp.add(16), m1, x1);
            }
            p0 += np;
        }
    }

    /// AVX2+FMA GEMM, 6x16 register tile (12 ymm accumulators).
    ///
    /// # Safety
    /// As [`gemm_f32_raw`]; the CPU must support AVX2 and FMA.
    pub unsafe fn gemm_f32_avx2_6x16(args: &GemmArgs, b: &PackedB, rows: Range<usize>, panels: Range<usize>) {
        debug_assert_eq!(b.nr, 16);
        let mb = row_block(Isa::Avx2, b.k);
        let mut r0 = rows.start;
        while r0 < rows.end {
            let r1 = (r0 + mb).min(rows.end);
            for p in panels.clone() {
                let cols = 16.min(b.n - p * 16);
                for_tiles(r0..r1, 6, |i0, mr| match mr {
                    1 => tile256::<1>(args, b, i0, p, cols),
                    2 => tile256::<2>(args, b, i0, p, cols),
                    3 => tile256::<3>(args, b, i0, p, cols),
                    4 => tile256::<4>(args, b, i0, p, cols),
                    5 => tile256::<5>(args, b, i0, p, cols),
                    _ => tile256::<6>(args, b, i0, p, cols),
                });
            }
            r0 = r1;
        }
    }

    /// Lane mask for the first `n` of 8 lanes (`n` may exceed 8).
    #[target_feature(enable = "avx2")]
    pub(crate) unsafe fn mask8(n: usize) -> __m256i {
        let idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        _mm256_cmpgt_epi32(_mm256_set1_epi32(n.min(8) as i32), idx)
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile256<const MR: usize>(args: &GemmArgs, b: &PackedB, i0: usize, p: usize, cols: usize) {
        let k = b.k;
        let bp = b.data.as_ptr().add(p * k * 16);
        let bias = b.bias.as_ptr().add(p * 16);
        let mut acc0 = [_mm256_loadu_ps(bias); MR];
        let mut acc1 = [_mm256_loadu_ps(bias.add(8)); MR];
        let mut ap = [std::ptr::null::<f32>(); MR];
        for (i, a) in ap.iter_mut().enumerate() {
            *a = args.a.add((i0 + i) * args.lda);
        }
        for kk in 0..k {
            let w0 = _mm256_loadu_ps(bp.add(kk * 16));
            let w1 = _mm256_loadu_ps(bp.add(kk * 16 + 8));
            for i in 0..MR {
                let av = _mm256_broadcast_ss(&*ap[i].add(kk));
                acc0[i] = _mm256_fmadd_ps(av, w0, acc0[i]);
                acc1[i] = _mm256_fmadd_ps(av, w1, acc1[i]);
            }
        }
        let (lo, hi) = args
            .act
            .clamp_bounds()
            .unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
        let lo = _mm256_set1_ps(lo);
        let hi = _mm256_set1_ps(hi);
        let col = p * 16;
        let full = cols == 16;
        let (m0, m1) = (mask8(cols), mask8(cols.saturating_sub(8)));
        for i in 0..MR {
            let row = i0 + i;
            let mut x0 = acc0[i];
            let mut x1 = acc1[i];
            if !args.r.is_null() {
                let rp = args.r.add(row * args.ldr + col);
                if full {
                    x0 = _mm256_add_ps(x0, _mm256_loadu_ps(rp));
                    x1 = _mm256_add_ps(x1, _mm256_loadu_ps(rp.add(8)));
                } else {
                    x0 = _mm256_add_ps(x0, _mm256_maskload_ps(rp, m0));
                    x1 = _mm256_add_ps(x1, _mm256_maskload_ps(rp.add(8), m1));
                }
            }
            x0 = _mm256_min_ps(hi, _mm256_max_ps(lo, x0));
            x1 = _mm256_min_ps(hi, _mm256_max_ps(lo, x1));
            let cp = args.c.add(row * args.ldc + col);
            if full {
                _mm256_storeu_ps(cp, x0);
                _mm256_storeu_ps(cp.add(8), x1);
            } else {
                _mm256_maskstore_ps(cp, m0, x0);
                _mm256_maskstore_ps(cp.add(8), m1, x1);
            }
        }
    }
}
