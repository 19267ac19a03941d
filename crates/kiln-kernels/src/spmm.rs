//! Block-sparse f32 GEMM with a fused epilogue, for pointwise (1x1)
//! convolutions whose weights were pruned in 1x8 blocks:
//! `C = act(A·B + bias [+ R])` with most of `B` zero.
//!
//! Shapes and epilogue are those of [`crate::gemm`] (the operands travel in
//! the same [`GemmArgs`]): `A` is `M x K` (NHWC pixels by input channels,
//! read in place), `B` is `K x N` (input by output channels), `bias` has `N`
//! values, `R` and `C` are `M x N`.
//!
//! # Format
//! A *block* is one input channel `k` by [`BLOCK`] = 8 consecutive output
//! channels `8j..8j+8` of `B` (the unit the block-magnitude pruning zeroes).
//! [`SparseB`] stores `B` once, at compile time, as column groups of `nr`
//! output channels (`nr` = 8, one block, for the scalar and AVX2 kernels;
//! 16, two blocks side by side, for AVX-512): for each group, the list of
//! input channels where the group has a nonzero weight, and those `nr`
//! weights per listed channel (64-byte aligned); all-zero rows of a group are
//! dropped. This is XNNPACK's SpMM idea (compressed nonzero blocks along the
//! output channels, registers accumulating only them), for NHWC: a
//! micro-tile is `MR` rows of A (pixels) by one group, each listed channel
//! costs one weight vector load and `MR` broadcast-FMAs.
//!
//! # Results
//! Every output element is `bias[n]` followed by one multiply-add per listed
//! input channel, in increasing channel order, like the dense kernels (which
//! add every channel): for finite A a skipped term is `a * 0 = ±0`, which
//! leaves the sum unchanged, so the sparse kernel of a level returns exactly
//! the dense kernel's values of that level (but for the sign of an exact-zero
//! result). A non-finite A value meets only the zero weights of listed
//! channels (`inf * 0 = NaN`), so with infinities or NaN in A the results
//! may differ from the dense kernel's and between levels (whose groups differ).
//! Splitting rows or groups over threads gives bit-identical results.
//!
//! Micro-kernels (`MR x nr`): [`spmm_f32_avx512_8x16`],
//! [`spmm_f32_avx2_12x8`], and the reference [`spmm_f32_scalar`] (named
//! `spmm_f32_scalar_4x8` in plans, like the dense scalar GEMM).
//!
//! # 16 or 8 columns on AVX-512
//! A 16-column group lists an input channel when either of its two blocks
//! is nonzero: at 80% block sparsity with independent blocks it keeps 36% of
//! its rows where the 8-column format keeps 20% (27-36% on the 1x1
//! convolutions of the Fashion-MNIST net pruned by block magnitude), so
//! the AVX-512 kernel does 16 lanes of work per FMA but up to 1.8x the FMAs
//! per lane. Measured on the Fashion-MNIST layer shapes (80% random block
//! sparsity, one thread), the 8-column AVX2 kernel was faster on 11 of the
//! 15 layers (by up to 20%), the AVX-512 one on 4 (by up to 4%). [`SparseB::pack`] for [`Isa::Avx2`] gives
//! the 8-column format and kernel on any CPU with AVX2 (AVX-512 ones
//! included), so a caller can time both; kiln-runtime's compiler does.

use crate::gemm::GemmArgs;
use crate::{Activation, Isa};
use std::ops::Range;

/// Output channels per block: the pruning unit (one input channel by 8
/// consecutive output channels).
pub const BLOCK: usize = 8;

/// Column group width of `isa`'s sparse micro-kernel (a multiple of [`BLOCK`]).
pub fn group_width(isa: Isa) -> usize {
    match isa.float_level() {
        Isa::Avx512 => 16,
        _ => 8,
    }
}

/// Rows of `isa`'s sparse micro-tile.
pub fn spmm_tile_rows(isa: Isa) -> usize {
    match isa.float_level() {
        Isa::Avx512 => 8,
        Isa::Avx2 => 12,
        _ => 4,
    }
}

/// Name of `isa`'s sparse kernel (op, dtype, ISA, `MR x nr` tile), e.g.
/// `spmm_f32_avx512_8x16`.
pub fn spmm_name(isa: Isa) -> String {
    let isa = isa.float_level();
    format!("spmm_f32_{}_{}x{}", isa, spmm_tile_rows(isa), group_width(isa))
}

/// Fraction of the 1x8 blocks of the `k x n` matrix `b` that are all zero
/// (blocks `b[kk][8j..8j+8]`; the last block of a row may be narrower).
/// 0 for an empty matrix.
pub fn block_sparsity(k: usize, n: usize, b: impl Fn(usize, usize) -> f32) -> f64 {
    let per_row = n.div_ceil(BLOCK);
    if k == 0 || per_row == 0 {
        return 0.0;
    }
    let mut zero = 0usize;
    for kk in 0..k {
        for j in 0..per_row {
            if (j * BLOCK..((j + 1) * BLOCK).min(n)).all(|c| b(kk, c) == 0.0) {
                zero += 1;
            }
        }
    }
    zero as f64 / (k * per_row) as f64
}

/// 64 bytes of weights (alignment of the packed values).
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
struct Line([f32; 16]);

/// `B` in the block-sparse format of one ISA's micro-kernel, with its bias
/// (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct SparseB {
    /// Rows of `B` (the reduction length, input channels).
    pub k: usize,
    /// Columns of `B` (outputs).
    pub n: usize,
    /// Column group width ([`group_width`]).
    pub nr: usize,
    /// The ISA this format is for.
    pub isa: Isa,
    /// Entries of group `g`: `starts[g]..starts[g + 1]`.
    starts: Vec<usize>,
    /// Input channel of each entry.
    idx: Vec<u32>,
    /// `nr` weights per entry (zero-padded past `n`), 64-byte aligned.
    vals: Vec<Line>,
    /// `n` bias values, zero-padded to the groups.
    bias: Vec<f32>,
}

impl SparseB {
    /// Packs `B[k][n] = b(k, n)` and `bias` (`n` values; `None` = zeros) for
    /// `isa`, dropping the all-zero rows of each column group.
    pub fn pack(
        isa: Isa,
        k: usize,
        n: usize,
        b: impl Fn(usize, usize) -> f32,
        bias: Option<&[f32]>,
    ) -> SparseB {
        assert!(k <= u32::MAX as usize, "k = {k} too large");
        let isa = isa.float_level();
        let nr = group_width(isa);
        let groups = n.div_ceil(nr);
        let mut starts = Vec::with_capacity(groups + 1);
        starts.push(0);
        let mut idx = Vec::new();
        let mut flat: Vec<f32> = Vec::new();
        let mut row = vec![0f32; nr];
        for g in 0..groups {
            for kk in 0..k {
                for (j, w) in row.iter_mut().enumerate() {
                    let col = g * nr + j;
                    *w = if col < n { b(kk, col) } else { 0.0 };
                }
                if row.iter().any(|&w| w != 0.0) {
                    idx.push(kk as u32);
                    flat.extend_from_slice(&row);
                }
            }
            starts.push(idx.len());
        }
        let mut vals = vec![Line([0.0; 16]); flat.len().div_ceil(16)];
        for (i, &w) in flat.iter().enumerate() {
            vals[i / 16].0[i % 16] = w;
        }
        let mut bv = vec![0f32; groups * nr];
        if let Some(bias) = bias {
            bv[..n].copy_from_slice(&bias[..n]);
        }
        SparseB {
            k,
            n,
            nr,
            isa,
            starts,
            idx,
            vals,
            bias: bv,
        }
    }

    /// Packs a row-major `k x n` matrix.
    pub fn from_row_major(isa: Isa, k: usize, n: usize, b: &[f32], bias: Option<&[f32]>) -> SparseB {
        assert!(b.len() >= k * n, "B has {} values, k*n = {}", b.len(), k * n);
        SparseB::pack(isa, k, n, |kk, j| b[kk * n + j], bias)
    }

    /// Number of column groups.
    pub fn groups(&self) -> usize {
        self.n.div_ceil(self.nr)
    }

    /// Stored entries (listed input channels, summed over the groups).
    pub fn entries(&self) -> usize {
        self.idx.len()
    }

    /// Fraction of the `k x nr` group rows that are stored (the work relative
    /// to the dense kernel, per FMA lane).
    pub fn density(&self) -> f64 {
        let all = self.k * self.groups();
        if all == 0 {
            0.0
        } else {
            self.entries() as f64 / all as f64
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.starts.len() * std::mem::size_of::<usize>()
            + self.idx.len() * 4
            + self.vals.len() * 64
            + self.bias.len() * 4
    }

    /// Entry range of group `g`, with its channel list and weights.
    #[inline]
    fn group(&self, g: usize) -> (&[u32], *const f32) {
        let (e0, e1) = (self.starts[g], self.starts[g + 1]);
        let w = (self.vals.as_ptr() as *const f32).wrapping_add(e0 * self.nr);
        (&self.idx[e0..e1], w)
    }
}

/// Computes rows `rows` and column groups `groups` of `C = act(A·B + bias + R)`
/// with `b.isa`'s sparse micro-kernel.
///
/// # Safety
/// As [`crate::gemm::gemm_f32_raw`]: `a`, `r` (if not null) and `c` must be
/// valid for the rows and columns touched (`A` rows hold at least `b.k`
/// values); `c` may alias `r` exactly (same pointer and stride) but no other
/// operand. Different calls may run concurrently on disjoint `rows` or `groups`.
pub unsafe fn spmm_f32_raw(args: &GemmArgs, b: &SparseB, rows: Range<usize>, groups: Range<usize>) {
    if rows.is_empty() || groups.is_empty() {
        return;
    }
    match b.isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => spmm_f32_avx512_8x16(args, b, rows.clone(), groups.clone()),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => spmm_f32_avx2_12x8(args, b, rows.clone(), groups.clone()),
        _ => spmm_f32_scalar(args, b, rows.clone(), groups.clone()),
    }
    if args.act.clamp_bounds().is_none() {
        let c0 = (groups.start * b.nr).min(b.n);
        let c1 = (groups.end * b.nr).min(b.n);
        for i in rows {
            let row = std::slice::from_raw_parts_mut(args.c.add(i * args.ldc + c0), c1 - c0);
            args.act.apply_slice(row);
        }
    }
}

/// Safe sparse GEMM on slices: `C = act(A·B + bias + R)` for all rows and columns.
///
/// Panics if a slice is too short for `m`, `b.k`, `b.n` and the strides.
pub fn spmm_f32(
    m: usize,
    a: &[f32],
    lda: usize,
    b: &SparseB,
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
    unsafe { spmm_f32_raw(&args, b, 0..m, 0..b.groups()) }
}

/// Scalar reference: the definition every SIMD kernel is tested against.
///
/// # Safety
/// As [`spmm_f32_raw`].
pub unsafe fn spmm_f32_scalar(args: &GemmArgs, b: &SparseB, rows: Range<usize>, groups: Range<usize>) {
    let nr = b.nr;
    let (lo, hi) = args
        .act
        .clamp_bounds()
        .unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
    for g in groups {
        let (idx, w) = b.group(g);
        let cols = nr.min(b.n - g * nr);
        for i in rows.clone() {
            let ar = args.a.add(i * args.lda);
            for j in 0..cols {
                let col = g * nr + j;
                let mut acc = b.bias[col];
                for (e, &kk) in idx.iter().enumerate() {
                    acc += *ar.add(kk as usize) * *w.add(e * nr + j);
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
pub use x86::{spmm_f32_avx2_12x8, spmm_f32_avx512_8x16};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;
    use crate::gemm::{for_tiles, x86_mask8};
    use std::arch::x86_64::*;

    /// Rows per AVX-512 micro-tile.
    const MR512: usize = 8;
    /// Rows per AVX2 micro-tile.
    const MR256: usize = 12;

    /// `f::<mr>(args)` for a run-time `mr` in `1..=max` (the listed values,
    /// then `max` for anything else).
    macro_rules! by_rows {
        ($mr:expr, $f:ident $args:tt, [$($n:literal),*], $max:literal) => {
            match $mr {
                $($n => $f::<$n> $args,)*
                _ => $f::<$max> $args,
            }
        };
    }

    /// AVX-512 sparse GEMM, 8x16 register tile (one zmm accumulator per row
    /// of a 16-column group: two 1x8 blocks side by side).
    ///
    /// For each tile of rows, every group in turn: the tile's rows of A stay
    /// in L1 while the groups' packed weights stream past in order. (16-row
    /// tiles were measured: faster by a few percent where K >= 64, up to
    /// 1.7x slower where K <= 24.)
    ///
    /// # Safety
    /// As [`spmm_f32_raw`]; the CPU must support AVX-512 F.
    pub unsafe fn spmm_f32_avx512_8x16(
        args: &GemmArgs,
        b: &SparseB,
        rows: Range<usize>,
        groups: Range<usize>,
    ) {
        debug_assert_eq!(b.nr, 16);
        for_tiles(rows, MR512, |i0, mr| {
            for g in groups.clone() {
                by_rows!(mr, tile512(args, b, i0, g), [1, 2, 3, 4, 5, 6, 7], 8)
            }
        });
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn tile512<const MR: usize>(args: &GemmArgs, b: &SparseB, i0: usize, g: usize) {
        let (idx, w) = b.group(g);
        let col = g * 16;
        let cols = 16.min(b.n - col);
        let mask: u16 = if cols == 16 { u16::MAX } else { (1u16 << cols) - 1 };
        let mut acc = [_mm512_loadu_ps(b.bias.as_ptr().add(col)); MR];
        let lda = args.lda;
        let a0 = args.a.add(i0 * lda);
        for (e, &kk) in idx.iter().enumerate() {
            let wv = _mm512_load_ps(w.add(e * 16));
            let ap = a0.add(kk as usize);
            for (i, acc) in acc.iter_mut().enumerate() {
                // An embedded-broadcast FMA (`{1to16}`) per row.
                *acc = _mm512_fmadd_ps(_mm512_set1_ps(*ap.add(i * lda)), wv, *acc);
            }
        }
        let (lo, hi) = args
            .act
            .clamp_bounds()
            .unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
        let (lo, hi) = (_mm512_set1_ps(lo), _mm512_set1_ps(hi));
        for (i, mut x) in acc.into_iter().enumerate() {
            let row = i0 + i;
            if !args.r.is_null() {
                x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(mask, args.r.add(row * args.ldr + col)));
            }
            // max(lo, x) / min(hi, x) return x when x is NaN: NaN propagates.
            x = _mm512_min_ps(hi, _mm512_max_ps(lo, x));
            _mm512_mask_storeu_ps(args.c.add(row * args.ldc + col), mask, x);
        }
    }

    /// AVX2+FMA sparse GEMM, 12x8 register tile (one ymm accumulator per row
    /// of an 8-column group: one 1x8 block). Same loop order as
    /// [`spmm_f32_avx512_8x16`].
    ///
    /// # Safety
    /// As [`spmm_f32_raw`]; the CPU must support AVX2 and FMA.
    pub unsafe fn spmm_f32_avx2_12x8(args: &GemmArgs, b: &SparseB, rows: Range<usize>, groups: Range<usize>) {
        debug_assert_eq!(b.nr, 8);
        for_tiles(rows, MR256, |i0, mr| {
            for g in groups.clone() {
                by_rows!(
                    mr,
                    tile256(args, b, i0, g),
                    [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
                    12
                )
            }
        });
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile256<const MR: usize>(args: &GemmArgs, b: &SparseB, i0: usize, g: usize) {
        let (idx, w) = b.group(g);
        let col = g * 8;
        let cols = 8.min(b.n - col);
        let mut acc = [_mm256_loadu_ps(b.bias.as_ptr().add(col)); MR];
        let lda = args.lda;
        let a0 = args.a.add(i0 * lda);
        for (e, &kk) in idx.iter().enumerate() {
            let wv = _mm256_load_ps(w.add(e * 8));
            // Rows i and i + 8 at the same offset from two bases: the eight
            // row offsets stay in registers (twelve would spill).
            let ap = a0.add(kk as usize);
            let ap8 = ap.wrapping_add(8 * lda);
            for (i, acc) in acc.iter_mut().enumerate() {
                let a = if i < 8 {
                    ap.add(i * lda)
                } else {
                    ap8.add((i - 8) * lda)
                };
                *acc = _mm256_fmadd_ps(_mm256_broadcast_ss(&*a), wv, *acc);
            }
        }
        let (lo, hi) = args
            .act
            .clamp_bounds()
            .unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
        let (lo, hi) = (_mm256_set1_ps(lo), _mm256_set1_ps(hi));
        let full = cols == 8;
        let m = x86_mask8(cols);
        for (i, mut x) in acc.into_iter().enumerate() {
            let row = i0 + i;
            if !args.r.is_null() {
                let rp = args.r.add(row * args.ldr + col);
                let rv = if full {
                    _mm256_loadu_ps(rp)
                } else {
                    _mm256_maskload_ps(rp, m)
                };
                x = _mm256_add_ps(x, rv);
            }
            x = _mm256_min_ps(hi, _mm256_max_ps(lo, x));
            let cp = args.c.add(row * args.ldc + col);
            if full {
                _mm256_storeu_ps(cp, x);
            } else {
                _mm256_maskstore_ps(cp, m, x);
            }
        }
    }
}
