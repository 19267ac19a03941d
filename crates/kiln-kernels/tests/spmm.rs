//! Property tests of the block-sparse GEMM (`kiln_kernels::spmm`) on every
//! ISA level this CPU can run:
//!
//! * the scalar reference against a naive f64 definition (within the
//!   rounding bound of the summation, as in `tests/kernels.rs`);
//! * every level against the scalar reference (`|simd - scalar| <= 1e-5 *
//!   max(1, |scalar|)`: FMA vs separate rounding);
//! * every level against the *dense* GEMM of the same level on the same
//!   weights: equal values (the sparse kernels skip only terms `a * 0` with
//!   finite `a`, which leave a sum unchanged; `+0` and `-0` compare equal);
//! * rows and column groups split over several calls: bit-identical; a call
//!   on a sub-range writes nothing outside it.
//!
//! Shapes: M, K, N at random including non-multiples of 8 and 16, block
//! sparsity from 0% to 100% (each 1x8 block zero with that probability),
//! bias or not, residual (separate or in place), every activation.
//! `PROPTEST_CASES` overrides the case counts.
#![allow(clippy::needless_range_loop, clippy::too_many_arguments)]

use kiln_kernels::gemm::{gemm_f32_raw, GemmArgs, PackedB};
use kiln_kernels::spmm::{block_sparsity, group_width, spmm_f32, spmm_f32_raw, spmm_name, SparseB, BLOCK};
use kiln_kernels::{Activation, Isa};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use std::io::Write;
use std::ops::Range;

fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

const SENTINEL: f32 = -7777.25;
const GUARD: usize = 37;
const EPS: f64 = f32::EPSILON as f64;
const ACT_LIP: f64 = 1.5;

const ACTS: [Activation; 7] = [
    Activation::None,
    Activation::RELU,
    Activation::Clamp { min: 0.0, max: 6.0 },
    Activation::HardSwish,
    Activation::Sigmoid,
    Activation::Clamp { min: -0.5, max: 0.25 },
    Activation::LeakyRelu(0.1),
];

/// SplitMix64.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 * (2.0 / 16_777_216.0) - 1.0
    }
}

fn naive_act(act: Activation, x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    let sigmoid = |x: f64| 1.0 / (1.0 + (-x).exp());
    match act {
        Activation::None => x,
        Activation::Clamp { min, max } => x.max(min as f64).min(max as f64),
        Activation::LeakyRelu(a) => {
            if x < 0.0 {
                a as f64 * x
            } else {
                x
            }
        }
        Activation::HardSwish => x * (x / 6.0 + 0.5).clamp(0.0, 1.0),
        Activation::Sigmoid => sigmoid(x),
        other => unreachable!("{other:?} not exercised"),
    }
}

fn simd_close(got: f32, want: f32) -> bool {
    if got.is_nan() || want.is_nan() {
        return got.is_nan() && want.is_nan();
    }
    if got.is_infinite() || want.is_infinite() {
        return got == want;
    }
    (got as f64 - want as f64).abs() <= 1e-5 * (want.abs() as f64).max(1.0)
}

fn naive_close(got: f32, want: f64, bound: f64) -> bool {
    if got.is_nan() || want.is_nan() {
        return got.is_nan() && want.is_nan();
    }
    (got as f64 - want).abs() <= bound
}

fn expect_all(
    what: &str,
    isa: Isa,
    n: usize,
    ok: impl Fn(usize) -> bool,
    show: impl Fn(usize) -> String,
) -> Result<(), TestCaseError> {
    let bad: Vec<usize> = (0..n).filter(|&i| !ok(i)).collect();
    match bad.first() {
        None => Ok(()),
        Some(&i) => Err(TestCaseError::fail(format!(
            "{what} [{isa}]: {} of {n} elements wrong; first: {}",
            bad.len(),
            show(i)
        ))),
    }
}

fn cut(len: usize, permille: u32) -> usize {
    len * permille as usize / 1000
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Res {
    No,
    Separate,
    InPlace,
}

/// One case: operands, with `B` block-sparse.
struct Case {
    m: usize,
    k: usize,
    n: usize,
    lda: usize,
    ldr: usize,
    ldc: usize,
    a: Vec<f32>,
    b: Vec<f32>,
    bias: Option<Vec<f32>>,
    res: Res,
    r: Vec<f32>,
    act: Activation,
}

impl Case {
    #[allow(clippy::too_many_arguments)]
    fn new(
        rng: &mut Rng,
        (m, k, n): (usize, usize, usize),
        sparsity: f64,
        (pad_a, pad_c): (usize, usize),
        bias: bool,
        res: Res,
        act: Activation,
        nan_r: bool,
    ) -> Case {
        let (lda, ldc) = (k + pad_a, n + pad_c);
        let ldr = if res == Res::InPlace { ldc } else { n + 1 };
        let scale = (300.0 / k as f32).min(1.0);
        // NaN in A's stride padding: an over-read shows up.
        let mut a = vec![f32::NAN; m * lda];
        for i in 0..m {
            for kk in 0..k {
                a[i * lda + kk] = rng.unit() * scale;
            }
        }
        let mut b: Vec<f32> = (0..k * n).map(|_| rng.unit()).collect();
        // Each 1x8 block zero with probability `sparsity`; now and then a
        // single zero weight inside a kept block too.
        let threshold = (sparsity * (1u64 << 32) as f64) as u64;
        for kk in 0..k {
            for j in 0..n.div_ceil(BLOCK) {
                let cols = j * BLOCK..((j + 1) * BLOCK).min(n);
                if (rng.next() >> 32) < threshold {
                    for c in cols {
                        b[kk * n + c] = 0.0;
                    }
                } else if rng.below(8) == 0 {
                    b[kk * n + cols.start + rng.below(cols.len())] = 0.0;
                }
            }
        }
        let bias = bias.then(|| (0..n).map(|_| rng.unit()).collect());
        let mut r = Vec::new();
        if res != Res::No {
            r = vec![f32::NAN; m * ldr];
            for i in 0..m {
                for j in 0..n {
                    r[i * ldr + j] = rng.unit() * 2.0;
                }
            }
            if nan_r {
                let (i, j) = (rng.below(m), rng.below(n));
                r[i * ldr + j] = f32::NAN;
            }
        }
        Case {
            m,
            k,
            n,
            lda,
            ldr,
            ldc,
            a,
            b,
            bias,
            res,
            r,
            act,
        }
    }

    fn out_index(&self, idx: usize) -> Option<(usize, usize)> {
        let (i, j) = (idx / self.ldc, idx % self.ldc);
        (i < self.m && j < self.n).then_some((i, j))
    }

    fn c_init(&self) -> Vec<f32> {
        let mut c = vec![SENTINEL; (self.m - 1) * self.ldc + self.n + GUARD];
        if self.res == Res::InPlace {
            for i in 0..self.m {
                for j in 0..self.n {
                    c[i * self.ldc + j] = self.r[i * self.ldr + j];
                }
            }
        }
        c
    }

    fn args(&self, c: &mut [f32]) -> GemmArgs {
        let cp = c.as_mut_ptr();
        let r = match self.res {
            Res::No => std::ptr::null(),
            Res::Separate => self.r.as_ptr(),
            Res::InPlace => cp as *const f32,
        };
        GemmArgs {
            m: self.m,
            a: self.a.as_ptr(),
            lda: self.lda,
            r,
            ldr: self.ldr,
            c: cp,
            ldc: self.ldc,
            act: self.act,
        }
    }

    /// C by `spmm_f32_raw` calls on the given (rows, groups) rectangles.
    fn sparse(&self, sp: &SparseB, parts: &[(Range<usize>, Range<usize>)]) -> Vec<f32> {
        let mut c = self.c_init();
        let args = self.args(&mut c);
        for (rows, groups) in parts {
            // SAFETY: buffers sized for m rows of their strides; c aliases r
            // only exactly.
            unsafe { spmm_f32_raw(&args, sp, rows.clone(), groups.clone()) };
        }
        c
    }

    /// All of C through the safe API (a separate or no residual).
    fn sparse_safe(&self, sp: &SparseB) -> Vec<f32> {
        let mut c = self.c_init();
        let r = (self.res == Res::Separate).then_some((&self.r[..], self.ldr));
        spmm_f32(self.m, &self.a, self.lda, sp, r, &mut c, self.ldc, self.act);
        c
    }

    fn dense(&self, pb: &PackedB) -> Vec<f32> {
        let mut c = self.c_init();
        let args = self.args(&mut c);
        // SAFETY: as in `sparse`.
        unsafe { gemm_f32_raw(&args, pb, 0..self.m, 0..pb.panels()) };
        c
    }

    fn pack(&self, isa: Isa) -> SparseB {
        SparseB::from_row_major(isa, self.k, self.n, &self.b, self.bias.as_deref())
    }

    fn naive(&self, i: usize, j: usize) -> (f64, f64) {
        let mut s = self.bias.as_ref().map_or(0.0, |b| b[j] as f64);
        let mut abs = s.abs();
        for kk in 0..self.k {
            let t = self.a[i * self.lda + kk] as f64 * self.b[kk * self.n + j] as f64;
            s += t;
            abs += t.abs();
        }
        if self.res != Res::No {
            let r = self.r[i * self.ldr + j] as f64;
            s += r;
            abs += r.abs();
        }
        let v = naive_act(self.act, s);
        let bound = ACT_LIP * (self.k as f64 + 5.0) * EPS * abs + 1e-6 * v.abs().max(1.0);
        (v, bound)
    }
}

#[allow(clippy::too_many_arguments)]
fn spmm_property(
    shape: (usize, usize, usize),
    sparsity: f64,
    pads: (usize, usize),
    bias: bool,
    res: Res,
    act: Activation,
    (row_cut, group_cut): (u32, u32),
    nan_r: bool,
    seed: u64,
) -> Result<(), TestCaseError> {
    let mut rng = Rng::new(seed);
    let g = Case::new(&mut rng, shape, sparsity, pads, bias, res, act, nan_r);
    let init = g.c_init();
    let scalar = g.pack(Isa::Scalar);
    let reference = g.sparse(&scalar, &[(0..g.m, 0..scalar.groups())]);
    expect_all(
        "spmm scalar reference vs naive",
        Isa::Scalar,
        reference.len(),
        |idx| match g.out_index(idx) {
            Some((i, j)) => {
                let (v, bound) = g.naive(i, j);
                naive_close(reference[idx], v, bound)
            }
            None => reference[idx].to_bits() == init[idx].to_bits(),
        },
        |idx| match g.out_index(idx) {
            Some((i, j)) => format!("C[{i},{j}] = {:e}, naive {:e}", reference[idx], g.naive(i, j).0),
            None => format!("index {idx} outside the output was written"),
        },
    )?;
    for isa in Isa::runnable() {
        let sp = g.pack(isa);
        prop_assert_eq!(sp.isa, isa.float_level());
        prop_assert_eq!(sp.nr, group_width(isa));
        // The format: a group row is stored iff one of its weights is nonzero.
        let stored: usize = (0..sp.groups())
            .map(|gr| {
                (0..g.k)
                    .filter(|&kk| (gr * sp.nr..((gr + 1) * sp.nr).min(g.n)).any(|c| g.b[kk * g.n + c] != 0.0))
                    .count()
            })
            .sum();
        prop_assert_eq!(sp.entries(), stored);
        let whole = g.sparse(&sp, &[(0..g.m, 0..sp.groups())]);
        expect_all(
            "spmm vs scalar reference",
            isa,
            whole.len(),
            |idx| match g.out_index(idx) {
                Some(_) => simd_close(whole[idx], reference[idx]),
                None => whole[idx].to_bits() == init[idx].to_bits(),
            },
            |idx| match g.out_index(idx) {
                Some((i, j)) => format!("C[{i},{j}] = {:e}, scalar {:e}", whole[idx], reference[idx]),
                None => format!("index {idx} outside the output was written: {:e}", whole[idx]),
            },
        )?;
        // The dense GEMM of the same level: the same values.
        let dense = g.dense(&PackedB::from_row_major(isa, g.k, g.n, &g.b, g.bias.as_deref()));
        expect_all(
            "spmm vs dense gemm of the same level",
            isa,
            whole.len(),
            |idx| whole[idx] == dense[idx] || (whole[idx].is_nan() && dense[idx].is_nan()),
            |idx| {
                format!(
                    "index {idx} {:?}: sparse {:e}, dense {:e}",
                    g.out_index(idx),
                    whole[idx],
                    dense[idx]
                )
            },
        )?;
        if g.res != Res::InPlace {
            let safe = g.sparse_safe(&sp);
            prop_assert!(
                safe.iter().zip(&whole).all(|(x, y)| x.to_bits() == y.to_bits()),
                "spmm_f32 differs from spmm_f32_raw [{}]",
                isa
            );
        }
        // Rows and groups split over four calls: bit-identical.
        let (rc, gc, ng) = (cut(g.m, row_cut), cut(sp.groups(), group_cut), sp.groups());
        let parts = [
            (rc..g.m, gc..ng),
            (0..rc, gc..ng),
            (rc..g.m, 0..gc),
            (0..rc, 0..gc),
        ];
        let split = g.sparse(&sp, &parts);
        prop_assert!(
            split.iter().zip(&whole).all(|(x, y)| x.to_bits() == y.to_bits()),
            "spmm split at row {}, group {} differs [{}]",
            rc,
            gc,
            isa
        );
        // One rectangle alone: nothing written outside it.
        let (rows, groups) = (rc..g.m, 0..gc);
        let one = g.sparse(&sp, &[(rows.clone(), groups.clone())]);
        expect_all(
            &format!("spmm rows {rows:?} groups {groups:?} alone"),
            isa,
            one.len(),
            |idx| {
                let inside = g
                    .out_index(idx)
                    .is_some_and(|(i, j)| rows.contains(&i) && groups.contains(&(j / sp.nr)));
                one[idx].to_bits() == if inside { whole[idx] } else { init[idx] }.to_bits()
            },
            |idx| format!("index {idx}: {:e}", one[idx]),
        )?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(256))]

    /// Random shapes and block sparsities (0%, 100% and in between), bias,
    /// residual, activations, strides, row/group splits.
    #[test]
    fn spmm_matches_scalar_and_dense_on_every_isa(
        (m, k, n) in (1usize..=70, 1usize..=300, 1usize..=100),
        sp in 0u32..=12,
        pads in (0usize..=3, 0usize..=3),
        (bias, res, act) in (any::<bool>(), 0u8..3, 0..ACTS.len()),
        cuts in (0u32..=1000, 0u32..=1000),
        nan_r in 0u8..6,
        seed in any::<u64>(),
    ) {
        // 0%, 100%, and 0.1 steps in between, most cases around 70-95%.
        let sparsity = match sp {
            0 => 0.0,
            1 => 1.0,
            2..=5 => 0.1 * (sp - 1) as f64 + 0.05 * (seed % 2) as f64,
            s => 0.7 + 0.04 * (s - 6) as f64,
        };
        let res = [Res::No, Res::Separate, Res::InPlace][res as usize];
        spmm_property((m, k, n), sparsity, pads, bias, res, ACTS[act], cuts, nan_r == 0, seed)?;
    }
}

/// Every level this CPU runs gives the dense kernel's values on one fixed
/// case, and the kernel names say op, dtype, ISA and tile.
#[test]
fn every_isa_level_runs_its_kernel() {
    for isa in Isa::runnable() {
        let c = Case::new(
            &mut Rng::new(7),
            (29, 37, 45),
            0.8,
            (1, 2),
            true,
            Res::Separate,
            Activation::RELU,
            false,
        );
        let sp = c.pack(isa);
        let dense = c.dense(&PackedB::from_row_major(isa, c.k, c.n, &c.b, c.bias.as_deref()));
        let got = c.sparse_safe(&sp);
        assert!(got.iter().zip(&dense).all(|(x, y)| x == y), "{isa}");
    }
    let names: Vec<String> = Isa::runnable().into_iter().map(spmm_name).collect();
    let _ = writeln!(
        std::io::stderr(),
        "kiln-kernels: sparse kernels tested: {}",
        names.join(", ")
    );
    #[cfg(target_arch = "x86_64")]
    {
        assert_eq!(spmm_name(Isa::Avx512), "spmm_f32_avx512_8x16");
        assert_eq!(spmm_name(Isa::Avx512Vnni), "spmm_f32_avx512_8x16");
        assert_eq!(spmm_name(Isa::Avx2), "spmm_f32_avx2_12x8");
    }
    assert_eq!(spmm_name(Isa::Scalar), "spmm_f32_scalar_4x8");
}

/// `block_sparsity` counts all-zero 1x8 blocks, the last block of a row
/// narrower when N is not a multiple of 8; the format drops exactly the
/// all-zero rows of each group, and an all-zero B leaves `act(bias + R)`.
#[test]
fn block_sparsity_and_format() {
    // 3 x 20: blocks of 8, 8 and 4 columns per row, 9 in all.
    let (k, n) = (3usize, 20usize);
    let mut b = vec![0f32; k * n];
    b[0] = 1.0; // row 0, block 0
    b[n + 19] = -2.0; // row 1, block 2 (narrow)
    b[2 * n + 9] = f32::NAN; // row 2, block 1: NaN is nonzero
    assert!((block_sparsity(k, n, |kk, j| b[kk * n + j]) - 6.0 / 9.0).abs() < 1e-12);
    assert_eq!(block_sparsity(0, 5, |_, _| 1.0), 0.0);
    assert_eq!(block_sparsity(4, 8, |_, _| 0.0), 1.0);
    for isa in Isa::runnable() {
        let sp = SparseB::from_row_major(isa, k, n, &b, None);
        // 8 columns: one entry in each of groups 0, 1, 2; 16 columns: two
        // in group 0 (rows 0 and 2) and one in group 1.
        assert_eq!(sp.entries(), 3, "{isa}");
        assert_eq!(sp.groups(), n.div_ceil(sp.nr), "{isa}");
        // All zero: bias + R through the activation.
        let zero = SparseB::from_row_major(isa, 5, 11, &[0.0; 55], Some(&[0.5; 11]));
        assert_eq!(zero.entries(), 0);
        let (m, a, r) = (3usize, vec![1f32; 15], vec![-1f32; 33]);
        let mut c = vec![9f32; 33];
        spmm_f32(m, &a, 5, &zero, Some((&r, 11)), &mut c, 11, Activation::RELU);
        assert!(c.iter().all(|&v| v == 0.0), "{isa}: {c:?}");
        spmm_f32(m, &a, 5, &zero, None, &mut c, 11, Activation::None);
        assert!(c.iter().all(|&v| v == 0.5), "{isa}: {c:?}");
    }
}
