//! Shared dense linear-algebra routines of the reference ops: the f32 GEMM
//! used by Conv, ConvTranspose, MatMul and Gemm.
//!
//! The GEMM is a plain-Rust, single-threaded, cache-blocked kernel in the
//! classic Goto/BLIS layout: `B` is packed into `KC x NR` column panels, `A`
//! into `MR x KC` row panels (with `alpha` folded in), and an `MR x NR`
//! register-tiled micro-kernel accumulates one tile of `C` over `KC`. The
//! micro-kernel is written over fixed-size arrays so that LLVM keeps the
//! accumulators in vector registers and vectorizes it at the baseline target
//! (SSE2 on x86-64, NEON on aarch64), with no `unsafe` and no intrinsics.

use crate::{ir_err, Result};

/// Rows of the micro-kernel tile.
const MR: usize = 6;
/// Columns of the micro-kernel tile.
const NR: usize = 8;
/// Depth of a packed block (inner dimension).
const KC: usize = 256;
/// Rows of `A` packed per block (a multiple of `MR`).
const MC: usize = 72;
/// Columns of `B` packed per block (a multiple of `NR`).
const NC: usize = 512;

/// A read-only strided view of an f32 matrix: element `(i, j)` is
/// `data[i * rs + j * cs]`.
///
/// Constructed with [`MatRef::new`], which checks that every element lies
/// inside `data`; transposing ([`MatRef::t`]) only swaps the strides.
#[derive(Debug, Clone, Copy)]
pub struct MatRef<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a> MatRef<'a> {
    /// A `rows x cols` view with row stride `rs` and column stride `cs`.
    ///
    /// Errors (`Internal`) when the view would reach past the end of `data`.
    pub fn new(data: &'a [f32], rows: usize, cols: usize, rs: usize, cs: usize) -> Result<Self> {
        if rows > 0 && cols > 0 {
            let last = (rows - 1)
                .checked_mul(rs)
                .and_then(|a| (cols - 1).checked_mul(cs).and_then(|b| a.checked_add(b)));
            match last {
                Some(l) if l < data.len() => {}
                _ => {
                    return Err(ir_err!(
                        Internal,
                        "matrix view {rows}x{cols} (strides {rs}, {cs}) exceeds {} elements",
                        data.len()
                    ))
                }
            }
        }
        Ok(MatRef {
            data,
            rows,
            cols,
            rs,
            cs,
        })
    }
    /// A contiguous row-major `rows x cols` view.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Result<Self> {
        MatRef::new(data, rows, cols, cols, 1)
    }
    /// The transposed view (no copy).
    pub fn t(self) -> Self {
        MatRef {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }
    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// Rows `r0..r1` as a view (no copy). Errors (`Internal`) if out of range.
    pub fn row_range(self, r0: usize, r1: usize) -> Result<Self> {
        if r0 > r1 || r1 > self.rows {
            return Err(ir_err!(
                Internal,
                "row range {r0}..{r1} of a {}-row matrix",
                self.rows
            ));
        }
        if r0 == r1 {
            return MatRef::new(&[], 0, self.cols, self.rs, self.cs);
        }
        MatRef::new(&self.data[r0 * self.rs..], r1 - r0, self.cols, self.rs, self.cs)
    }
    #[inline(always)]
    fn at(&self, i: usize, j: usize) -> f32 {
        self.data[i * self.rs + j * self.cs]
    }
}

/// Checks that `c` holds an `m x n` matrix with row stride `ldc`.
fn check_c(c: &[f32], m: usize, n: usize, ldc: usize) -> Result<()> {
    if m == 0 || n == 0 {
        return Ok(());
    }
    let need = (m - 1).checked_mul(ldc).and_then(|x| x.checked_add(n));
    match need {
        Some(need) if need <= c.len() && n <= ldc => Ok(()),
        _ => Err(ir_err!(
            Internal,
            "output matrix {m}x{n} (ldc {ldc}) does not fit {} elements",
            c.len()
        )),
    }
}

/// `C = alpha * A * B + beta * C`, where `C` is `m x n` row-major with row
/// stride `ldc` (`m = a.rows()`, `n = b.cols()`).
///
/// `beta == 0` overwrites `C` without reading it (NaNs in `C` do not leak).
/// Errors (`Internal`) when the inner dimensions differ or `C` is too small.
pub fn gemm(alpha: f32, a: MatRef, b: MatRef, beta: f32, c: &mut [f32], ldc: usize) -> Result<()> {
    let (m, n) = (a.rows, b.cols);
    check_c(c, m, n, ldc)?;
    if beta != 1.0 {
        for i in 0..m {
            let row = &mut c[i * ldc..i * ldc + n];
            if beta == 0.0 {
                row.fill(0.0);
            } else {
                row.iter_mut().for_each(|x| *x *= beta);
            }
        }
    }
    gemm_acc(alpha, a, b, c, ldc)
}

thread_local! {
    static THREADS: std::cell::Cell<usize> = const { std::cell::Cell::new(1) };
}

/// Smallest GEMM (in multiply-accumulates) worth splitting across threads.
const PAR_MIN_MACS: usize = 1 << 20;

/// Runs `f` with GEMMs on this thread split across `n` threads (row blocks
/// of `C`, scoped threads). The setting is per calling thread and restored
/// afterwards, so concurrent sessions with different counts do not interfere.
pub fn with_threads<R>(n: usize, f: impl FnOnce() -> R) -> R {
    let prev = THREADS.with(|t| t.replace(n.max(1)));
    let r = f();
    THREADS.with(|t| t.set(prev));
    r
}

/// The thread count GEMMs on this thread currently use (see [`with_threads`]).
pub fn threads() -> usize {
    THREADS.with(|t| t.get())
}

/// `C += alpha * A * B`, where `C` is `m x n` row-major with row stride `ldc`
/// (`m = a.rows()`, `n = b.cols()`, inner dimension `a.cols() == b.rows()`).
///
/// Large products are split by row blocks of `C` over [`threads`] threads.
/// Errors (`Internal`) when the inner dimensions differ or `C` is too small.
pub fn gemm_acc(alpha: f32, a: MatRef, b: MatRef, c: &mut [f32], ldc: usize) -> Result<()> {
    let t = threads();
    let (m, n, k) = (a.rows, b.cols, a.cols);
    let macs = m.saturating_mul(n).saturating_mul(k);
    if t <= 1 || m < 2 * MR || macs < PAR_MIN_MACS || b.rows != k {
        return gemm_acc_1(alpha, a, b, c, ldc, true);
    }
    check_c(c, m, n, ldc)?;
    let parts = t.min(m / MR);
    let rows_per = m.div_ceil(parts).div_ceil(MR) * MR;
    std::thread::scope(|s| -> Result<()> {
        let mut handles = Vec::with_capacity(parts);
        let mut rest: &mut [f32] = c;
        let mut r0 = 0;
        while r0 < m {
            let r1 = (r0 + rows_per).min(m);
            let take = if r1 == m { rest.len() } else { (r1 - r0) * ldc };
            let (mine, tail) = std::mem::take(&mut rest).split_at_mut(take);
            rest = tail;
            let ab = a.row_range(r0, r1)?;
            handles.push(s.spawn(move || gemm_acc_1(alpha, ab, b, mine, ldc, false)));
            r0 = r1;
        }
        for h in handles {
            h.join()
                .map_err(|_| ir_err!(Internal, "a GEMM worker thread panicked"))??;
        }
        Ok(())
    })
}

/// One-thread `C += alpha * A * B`. `gemv` allows the single-row fast path
/// (off for the row blocks of a threaded split, so every row of `C` is summed
/// in the same order whatever the thread count).
fn gemm_acc_1(alpha: f32, a: MatRef, b: MatRef, c: &mut [f32], ldc: usize, gemv: bool) -> Result<()> {
    let (m, n, k) = (a.rows, b.cols, a.cols);
    if b.rows != k {
        return Err(ir_err!(
            Internal,
            "gemm inner dimensions differ: A is {}x{}, B is {}x{}",
            a.rows,
            a.cols,
            b.rows,
            b.cols
        ));
    }
    check_c(c, m, n, ldc)?;
    if m == 0 || n == 0 || k == 0 {
        return Ok(());
    }
    if m == 1 && gemv {
        gemv_row(alpha, a, b, &mut c[..n]);
        return Ok(());
    }
    let mut bpack = vec![0f32; KC.min(k) * NC.min(n).div_ceil(NR) * NR];
    let mut apack = vec![0f32; KC.min(k) * MC.min(m).div_ceil(MR) * MR];
    for j0 in (0..n).step_by(NC) {
        let nc = NC.min(n - j0);
        for p0 in (0..k).step_by(KC) {
            let kc = KC.min(k - p0);
            pack_b(&b, p0, kc, j0, nc, &mut bpack);
            for i0 in (0..m).step_by(MC) {
                let mc = MC.min(m - i0);
                pack_a(&a, alpha, i0, mc, p0, kc, &mut apack);
                for (jp, bp) in bpack.chunks_exact(kc * NR).take(nc.div_ceil(NR)).enumerate() {
                    let jj = j0 + jp * NR;
                    let nr = NR.min(j0 + nc - jj);
                    for (ip, ap) in apack.chunks_exact(kc * MR).take(mc.div_ceil(MR)).enumerate() {
                        let ii = i0 + ip * MR;
                        let mr = MR.min(i0 + mc - ii);
                        let mut acc = [[0f32; NR]; MR];
                        micro_kernel(ap, bp, &mut acc);
                        for (r, acc_row) in acc.iter().enumerate().take(mr) {
                            let off = (ii + r) * ldc + jj;
                            let c_row = &mut c[off..off + nr];
                            for (cv, av) in c_row.iter_mut().zip(acc_row) {
                                *cv += *av;
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// The register-tiled `MR x NR` kernel: `acc += Apanel * Bpanel` over the
/// packed depth (`ap` is k-major groups of `MR`, `bp` k-major groups of `NR`).
#[inline(always)]
fn micro_kernel(ap: &[f32], bp: &[f32], acc: &mut [[f32; NR]; MR]) {
    for (a, b) in ap.chunks_exact(MR).zip(bp.chunks_exact(NR)) {
        let a: &[f32; MR] = a.try_into().expect("chunks_exact yields MR elements");
        let b: &[f32; NR] = b.try_into().expect("chunks_exact yields NR elements");
        for i in 0..MR {
            let av = a[i];
            for j in 0..NR {
                acc[i][j] += av * b[j];
            }
        }
    }
}

/// Packs `B[p0..p0+kc, j0..j0+nc]` into `NR`-wide k-major panels (zero padded).
fn pack_b(b: &MatRef, p0: usize, kc: usize, j0: usize, nc: usize, out: &mut [f32]) {
    for (jp, panel) in out.chunks_exact_mut(kc * NR).take(nc.div_ceil(NR)).enumerate() {
        let jj = j0 + jp * NR;
        let nr = NR.min(j0 + nc - jj);
        for (p, dst) in panel.chunks_exact_mut(NR).enumerate() {
            let row = p0 + p;
            if b.cs == 1 && nr == NR {
                let off = row * b.rs + jj;
                dst.copy_from_slice(&b.data[off..off + NR]);
            } else {
                for (j, d) in dst.iter_mut().enumerate() {
                    *d = if j < nr { b.at(row, jj + j) } else { 0.0 };
                }
            }
        }
    }
}

/// Packs `alpha * A[i0..i0+mc, p0..p0+kc]` into `MR`-tall k-major panels
/// (zero padded).
fn pack_a(a: &MatRef, alpha: f32, i0: usize, mc: usize, p0: usize, kc: usize, out: &mut [f32]) {
    for (ip, panel) in out.chunks_exact_mut(kc * MR).take(mc.div_ceil(MR)).enumerate() {
        let ii = i0 + ip * MR;
        let mr = MR.min(i0 + mc - ii);
        if mr < MR {
            panel.fill(0.0);
        }
        for r in 0..mr {
            let row = ii + r;
            if a.cs == 1 {
                let src = &a.data[row * a.rs + p0..row * a.rs + p0 + kc];
                for (p, &v) in src.iter().enumerate() {
                    panel[p * MR + r] = alpha * v;
                }
            } else {
                for p in 0..kc {
                    panel[p * MR + r] = alpha * a.at(row, p0 + p);
                }
            }
        }
    }
}

/// `c += alpha * a_row * B` for a single row of `A` (GEMV).
fn gemv_row(alpha: f32, a: MatRef, b: MatRef, c: &mut [f32]) {
    let k = a.cols;
    if b.rs == 1 {
        // Columns of B are contiguous: one dot product per output.
        let av: Vec<f32> = (0..k).map(|p| a.at(0, p)).collect();
        for (j, cv) in c.iter_mut().enumerate() {
            let col = &b.data[j * b.cs..j * b.cs + k];
            *cv += alpha * dot(&av, col);
        }
    } else if b.cs == 1 {
        // Rows of B are contiguous: accumulate scaled rows.
        let n = c.len();
        for p in 0..k {
            let s = alpha * a.at(0, p);
            let row = &b.data[p * b.rs..p * b.rs + n];
            for (cv, &bv) in c.iter_mut().zip(row) {
                *cv += s * bv;
            }
        }
    } else {
        for (j, cv) in c.iter_mut().enumerate() {
            let mut s = 0f32;
            for p in 0..k {
                s += a.at(0, p) * b.at(p, j);
            }
            *cv += alpha * s;
        }
    }
}

/// Dot product of two equally long slices, with 8 independent partial sums
/// so that it vectorizes.
pub fn dot(x: &[f32], y: &[f32]) -> f32 {
    let n = x.len().min(y.len());
    let (x, y) = (&x[..n], &y[..n]);
    let mut acc = [0f32; 8];
    let xc = x.chunks_exact(8);
    let yc = y.chunks_exact(8);
    let (xr, yr) = (xc.remainder(), yc.remainder());
    for (a, b) in xc.zip(yc) {
        for l in 0..8 {
            acc[l] += a[l] * b[l];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (a, b) in xr.iter().zip(yr) {
        s += a * b;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Splitting over threads gives the same result as one thread, bit for
    /// bit (each row of C is computed by one thread in the same order).
    #[test]
    fn threaded_gemm_equals_single_thread() {
        for &(m, n, k, t) in &[
            (64, 300, 129, 2),
            (97, 257, 64, 3),
            (13, 2000, 40, 4),
            (200, 50, 300, 8),
        ] {
            let a: Vec<f32> = (0..m * k)
                .map(|i| ((i * 7919) % 113) as f32 / 50.0 - 1.0)
                .collect();
            let b: Vec<f32> = (0..k * n)
                .map(|i| ((i * 104729) % 97) as f32 / 40.0 - 1.2)
                .collect();
            let am = MatRef::row_major(&a, m, k).unwrap();
            let bm = MatRef::row_major(&b, k, n).unwrap();
            let mut c1 = vec![0.5f32; m * n];
            let mut ct = c1.clone();
            gemm(1.5, am, bm, 0.25, &mut c1, n).unwrap();
            with_threads(t, || gemm(1.5, am, bm, 0.25, &mut ct, n)).unwrap();
            let bad = c1.iter().zip(&ct).position(|(x, y)| x.to_bits() != y.to_bits());
            assert!(
                bad.is_none(),
                "m={m} n={n} k={k} threads={t}: first difference at {bad:?}"
            );
            assert_eq!(threads(), 1, "with_threads restores the count");
        }
    }

    /// Naive `alpha * A * B + beta * C` in f64.
    fn naive(alpha: f32, a: &MatRef, b: &MatRef, beta: f32, c: &[f32], ldc: usize) -> Vec<f32> {
        let (m, n, k) = (a.rows(), b.cols(), a.cols());
        let mut out = c.to_vec();
        for i in 0..m {
            for j in 0..n {
                let mut s = 0f64;
                for p in 0..k {
                    s += a.at(i, p) as f64 * b.at(p, j) as f64;
                }
                let old = if beta == 0.0 {
                    0.0
                } else {
                    beta as f64 * c[i * ldc + j] as f64
                };
                out[i * ldc + j] = (alpha as f64 * s + old) as f32;
            }
        }
        out
    }

    fn close(got: &[f32], want: &[f32], k: usize) -> bool {
        got.iter()
            .zip(want)
            .all(|(g, w)| (g - w).abs() <= 1e-4 * (k as f32 + 1.0) * (1.0 + w.abs()))
    }

    #[test]
    fn small_exact() {
        // [[1,2],[3,4]] x [[5,6],[7,8]] = [[19,22],[43,50]]
        let a = [1f32, 2., 3., 4.];
        let b = [5f32, 6., 7., 8.];
        let mut c = [0f32; 4];
        gemm(
            1.0,
            MatRef::row_major(&a, 2, 2).unwrap(),
            MatRef::row_major(&b, 2, 2).unwrap(),
            0.0,
            &mut c,
            2,
        )
        .unwrap();
        assert_eq!(c, [19., 22., 43., 50.]);
        // Transposed A: A^T x B = [[1,3],[2,4]] x B = [[26,30],[38,44]]
        let mut c = [1f32; 4];
        gemm(
            1.0,
            MatRef::row_major(&a, 2, 2).unwrap().t(),
            MatRef::row_major(&b, 2, 2).unwrap(),
            1.0,
            &mut c,
            2,
        )
        .unwrap();
        assert_eq!(c, [27., 31., 39., 45.]);
    }

    #[test]
    fn beta_zero_ignores_nan() {
        let a = [1f32; 6];
        let b = [1f32; 6];
        let mut c = [f32::NAN; 4];
        gemm(
            2.0,
            MatRef::row_major(&a, 2, 3).unwrap(),
            MatRef::row_major(&b, 3, 2).unwrap(),
            0.0,
            &mut c,
            2,
        )
        .unwrap();
        assert_eq!(c, [6.0; 4]);
    }

    #[test]
    fn bad_views_are_errors() {
        let a = [0f32; 5];
        assert!(MatRef::row_major(&a, 2, 3).is_err());
        let a = [0f32; 6];
        let av = MatRef::row_major(&a, 2, 3).unwrap();
        let mut c = [0f32; 4];
        assert!(gemm_acc(1.0, av, av, &mut c, 2).is_err());
        assert!(gemm_acc(1.0, av, av.t(), &mut c[..3], 2).is_err());
    }

    #[test]
    fn dot_matches() {
        let x: Vec<f32> = (0..19).map(|i| i as f32).collect();
        let y: Vec<f32> = (0..19).map(|i| (i % 3) as f32).collect();
        let want: f32 = x.iter().zip(&y).map(|(a, b)| a * b).sum();
        assert_eq!(dot(&x, &y), want);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn gemm_matches_naive(
            m in 1usize..80, n in 1usize..70, k in 1usize..300,
            ta in any::<bool>(), tb in any::<bool>(),
            extra in 0usize..3, beta_kind in 0usize..3, seed in any::<u64>(),
        ) {
            let mut s = seed;
            let mut rnd = move || {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            };
            let av: Vec<f32> = (0..m * k).map(|_| rnd()).collect();
            let bv: Vec<f32> = (0..k * n).map(|_| rnd()).collect();
            let a = if ta { MatRef::row_major(&av, k, m).unwrap().t() } else { MatRef::row_major(&av, m, k).unwrap() };
            let b = if tb { MatRef::row_major(&bv, n, k).unwrap().t() } else { MatRef::row_major(&bv, k, n).unwrap() };
            let ldc = n + extra;
            let c0: Vec<f32> = (0..m * ldc).map(|_| rnd()).collect();
            let beta = [0.0f32, 1.0, 0.5][beta_kind];
            let want = naive(0.75, &a, &b, beta, &c0, ldc);
            let mut c = c0.clone();
            gemm(0.75, a, b, beta, &mut c, ldc).unwrap();
            prop_assert!(close(&c, &want, k));
        }
    }
}
