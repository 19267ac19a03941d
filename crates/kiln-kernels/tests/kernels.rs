//! Property tests of every kernel against its scalar reference, on every ISA
//! level this CPU can run, and of each scalar reference against a naive
//! definition written here straight from the ONNX operator specs (f64
//! accumulation, original unpacked weight layouts).
//!
//! * SIMD vs scalar: GEMM, depthwise and general convolution may differ by
//!   FMA vs separate multiply/add rounding: `|simd - scalar| <= 1e-5 *
//!   max(1, |scalar|)` per element. Pooling and element-wise kernels promise
//!   identical results on every level, so they are compared bit for bit,
//!   except that any NaN matches any NaN (payloads and signs of NaNs do
//!   differ between levels, see [`expect_exact`]).
//! * Splitting rows / panels / pixels / batch items over several calls must
//!   give bit-identical results to one call (the runtime splits over threads).
//! * Outputs outside the computed region (stride padding, trailing guard,
//!   rows/elements outside a range) must be left untouched; stride padding and
//!   im2col scratch are filled with NaN so an over-read shows up.
//! * Scalar vs naive: within the rounding-error bound of the summation
//!   (`(terms + 3) * eps * sum|terms|`, times the activation's Lipschitz
//!   constant) plus a few ulps for the activation itself.
//!
//! Every property runs each case on every level of `Isa::runnable()` (packing
//! for that level) and records the levels in [`ISAS_RAN`];
//! `every_cpu_isa_level_is_tested` runs its own check on each level, prints
//! the levels that ran and fails if the CPU supports a level whose path did
//! not run. `PROPTEST_CASES` overrides the per-property case counts.
// Naive references index the way the ONNX formulas read; runners take the
// list of ranges to call a kernel on, often just one (`&[0..n]`).
#![allow(
    clippy::needless_range_loop,
    clippy::too_many_arguments,
    clippy::single_range_in_vec_init
)]

mod common;

use kiln_kernels::conv::{conv_f32_raw, pack_conv_weights, ConvArgs, ConvGeom};
use kiln_kernels::dwconv::{dwconv_f32_raw, DwArgs, DwGeom, PackedDw};
use kiln_kernels::eltwise::{activation_f32, affine_f32, binary_f32, channel_f32, scalar_f32, BinOp};
use kiln_kernels::gemm::{gemm_f32, gemm_f32_raw, panel_width, GemmArgs, PackedB};
use kiln_kernels::pool::{global_avg_pool_f32, pool2d_f32, PoolGeom};
use kiln_kernels::{active_isa, set_max_isa, simd_features, Activation, Isa};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use std::collections::BTreeSet;
use std::io::Write;
use std::ops::Range;
use std::sync::{Mutex, PoisonError};

// ---------------------------------------------------------------------------
// ISA coverage record
// ---------------------------------------------------------------------------

/// ISA levels whose kernels ran in this test process.
static ISAS_RAN: Mutex<BTreeSet<Isa>> = Mutex::new(BTreeSet::new());

fn mark(isa: Isa) {
    ISAS_RAN
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(isa);
}

/// Levels this CPU supports, detected here independently of `Isa::detect`.
fn cpu_levels() -> Vec<Isa> {
    #[allow(unused_mut)]
    let mut v = vec![Isa::Scalar];
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            v.push(Isa::Avx2);
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            v.push(Isa::Avx512);
            if std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vnni")
            {
                v.push(Isa::Avx512Vnni);
                if common::cpu_has_amx() {
                    v.push(Isa::Avx512Amx);
                }
            }
        }
    }
    v
}

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

// ---------------------------------------------------------------------------
// Data, activations, comparisons
// ---------------------------------------------------------------------------

/// Value of untouched output positions.
const SENTINEL: f32 = -7777.25;
/// Trailing output values that no kernel may write.
const GUARD: usize = 37;
/// f32 machine epsilon (2 units of roundoff).
const EPS: f64 = f32::EPSILON as f64;
/// Largest Lipschitz constant of the activations below (HardSwish: 1.5).
const ACT_LIP: f64 = 1.5;

/// SplitMix64: test data from a proptest-chosen seed.
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
    fn vec(&mut self, len: usize) -> Vec<f32> {
        (0..len).map(|_| self.unit()).collect()
    }
    /// Values in [-8, 8) with, one in `1/every`, a special value (zeros,
    /// NaN, infinities, a subnormal, huge, the clamp bounds).
    fn vec_special(&mut self, len: usize, every: usize) -> Vec<f32> {
        const SPECIAL: [f32; 11] = [
            0.0,
            -0.0,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            6.0,
            -3.0,
            3.0,
            1e-40,
            -1e30,
            0.25,
        ];
        (0..len)
            .map(|_| {
                if self.below(every) == 0 {
                    SPECIAL[self.below(SPECIAL.len())]
                } else {
                    self.unit() * 8.0
                }
            })
            .collect()
    }
}

/// Epilogue activations exercised (Relu, Clip(0, 6), HardSwish and Sigmoid
/// first; the others take the same paths).
const ACTS: [Activation; 9] = [
    Activation::None,
    Activation::RELU,
    Activation::Clamp { min: 0.0, max: 6.0 },
    Activation::HardSwish,
    Activation::Sigmoid,
    Activation::Clamp { min: -0.5, max: 0.25 },
    Activation::LeakyRelu(0.1),
    Activation::HardSigmoid {
        alpha: 0.2,
        beta: 0.5,
    },
    Activation::SiLU,
];

fn is_clamp(act: Activation) -> bool {
    matches!(act, Activation::None | Activation::Clamp { .. })
}

/// The activations from the ONNX operator definitions, in f64; NaN in, NaN out.
fn naive_act(act: Activation, x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    let sigmoid = |x: f64| 1.0 / (1.0 + (-x).exp());
    match act {
        Activation::None => x,
        Activation::Clamp { min, max } => {
            let (min, max) = (min as f64, max as f64);
            if x < min {
                min
            } else if x > max {
                max
            } else {
                x
            }
        }
        Activation::LeakyRelu(a) => {
            if x < 0.0 {
                a as f64 * x
            } else {
                x
            }
        }
        Activation::HardSigmoid { alpha, beta } => (alpha as f64 * x + beta as f64).clamp(0.0, 1.0),
        Activation::HardSwish => x * (x / 6.0 + 0.5).clamp(0.0, 1.0),
        Activation::Sigmoid => sigmoid(x),
        Activation::SiLU => x * sigmoid(x),
    }
}

/// SIMD vs scalar: `|got - want| <= 1e-5 * max(1, |want|)`; NaN exactly where
/// the reference has NaN, infinities equal.
fn simd_close(got: f32, want: f32) -> bool {
    if got.is_nan() || want.is_nan() {
        return got.is_nan() && want.is_nan();
    }
    if got.is_infinite() || want.is_infinite() {
        return got == want;
    }
    (got as f64 - want as f64).abs() <= 1e-5 * (want.abs() as f64).max(1.0)
}

/// Scalar reference vs naive f64 value within `bound`.
fn naive_close(got: f32, want: f64, bound: f64) -> bool {
    if got.is_nan() || want.is_nan() {
        return got.is_nan() && want.is_nan();
    }
    if got.is_infinite() || want.is_infinite() {
        return got as f64 == want;
    }
    (got as f64 - want).abs() <= bound
}

/// Bound on the error of an f32 sum of `terms` terms whose absolute values
/// sum to `abs_sum` (recursive summation, `gamma_n <= n * u`, 2x margin),
/// through an activation, plus a few ulps for the activation's own rounding.
fn sum_bound(terms: usize, abs_sum: f64, value: f64) -> f64 {
    ACT_LIP * (terms as f64 + 3.0) * EPS * abs_sum + 1e-6 * value.abs().max(1.0)
}

/// Fails with the first of the elements `0..n` for which `ok` is false.
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

/// Whole buffers bit-identical (NaN payloads included).
fn expect_bits(what: &str, isa: Isa, got: &[f32], want: &[f32]) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.len(), want.len());
    expect_all(
        what,
        isa,
        got.len(),
        |i| got[i].to_bits() == want[i].to_bits(),
        |i| {
            format!(
                "index {i}: {:e} ({:#x}) vs {:e} ({:#x})",
                got[i],
                got[i].to_bits(),
                want[i],
                want[i].to_bits()
            )
        },
    )
}

/// Exactly equal values, any NaN matching any NaN: the exactness the pooling
/// and element-wise kernels promise across levels. (NaN payloads and signs
/// can differ between levels: `inf + -inf` gives the negative default NaN,
/// and which NaN operand of a commutative add survives depends on the
/// operand order the compiler picks for each build.)
fn expect_exact(what: &str, isa: Isa, got: &[f32], want: &[f32]) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.len(), want.len());
    expect_all(
        what,
        isa,
        got.len(),
        |i| got[i].to_bits() == want[i].to_bits() || (got[i].is_nan() && want[i].is_nan()),
        |i| {
            format!(
                "index {i}: {:e} ({:#x}) vs {:e} ({:#x})",
                got[i],
                got[i].to_bits(),
                want[i],
                want[i].to_bits()
            )
        },
    )
}

/// One call on a sub-range alone: the values inside equal those of the whole
/// computation, nothing outside is written (threads own disjoint ranges).
fn expect_piece(
    what: &str,
    isa: Isa,
    got: &[f32],
    whole: &[f32],
    init: &[f32],
    inside: impl Fn(usize) -> bool,
) -> Result<(), TestCaseError> {
    expect_all(
        what,
        isa,
        got.len(),
        |i| got[i].to_bits() == if inside(i) { whole[i] } else { init[i] }.to_bits(),
        |i| {
            format!(
                "index {i} (inside: {}): {:e}, whole {:e}, initial {:e}",
                inside(i),
                got[i],
                whole[i],
                init[i]
            )
        },
    )
}

/// `len * permille / 1000`, a cut point in `0..=len`.
fn cut(len: usize, permille: u32) -> usize {
    len * permille as usize / 1000
}

/// Consecutive ranges between sorted cut points `0, a, b, len`, last first
/// (so a later piece never relies on an earlier one having run).
fn pieces(len: usize, a: u32, b: u32) -> Vec<Range<usize>> {
    let (a, b) = (cut(len, a.min(b)), cut(len, a.max(b)));
    vec![b..len, a..b, 0..a]
}

/// How the residual operand is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Res {
    No,
    /// A separate buffer.
    Separate,
    /// The output buffer itself (in-place residual add).
    InPlace,
}

fn res_mode(x: u8) -> Res {
    match x % 3 {
        0 => Res::No,
        1 => Res::Separate,
        _ => Res::InPlace,
    }
}

// ---------------------------------------------------------------------------
// GEMM
// ---------------------------------------------------------------------------

struct Gemm {
    m: usize,
    k: usize,
    n: usize,
    lda: usize,
    ldr: usize,
    ldc: usize,
    /// `m x lda`, NaN in the stride padding.
    a: Vec<f32>,
    /// `k x n` row-major.
    b: Vec<f32>,
    bias: Option<Vec<f32>>,
    res: Res,
    /// `m x ldr`, NaN in the stride padding (for `InPlace`, `ldr == ldc`).
    r: Vec<f32>,
    act: Activation,
}

impl Gemm {
    fn new(
        rng: &mut Rng,
        (m, k, n): (usize, usize, usize),
        (pad_a, pad_r, pad_c): (usize, usize, usize),
        bias: bool,
        res: Res,
        act: Activation,
    ) -> Gemm {
        let (lda, ldc) = (k + pad_a, n + pad_c);
        let ldr = if res == Res::InPlace { ldc } else { n + pad_r };
        // FMA vs separate rounding differences grow like sqrt(k) times the
        // partial sums (themselves ~sqrt(k) for values in [-1, 1]): past
        // k = 300, A is scaled by 300 / k to keep them at the k = 300 level,
        // where the worst difference seen is under half the 1e-5 tolerance
        // (unscaled, k = 1500 reaches the tolerance).
        let scale = (300.0 / k as f32).min(1.0);
        let mut a = vec![f32::NAN; m * lda];
        for i in 0..m {
            for kk in 0..k {
                a[i * lda + kk] = rng.unit() * scale;
            }
        }
        let b = rng.vec(k * n);
        let bias = bias.then(|| rng.vec(n));
        let mut r = Vec::new();
        if res != Res::No {
            r = vec![f32::NAN; m * ldr];
            for i in 0..m {
                for j in 0..n {
                    r[i * ldr + j] = rng.unit() * 2.0;
                }
            }
        }
        Gemm {
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

    fn pack(&self, isa: Isa) -> PackedB {
        PackedB::from_row_major(isa, self.k, self.n, &self.b, self.bias.as_deref())
    }

    fn out_index(&self, idx: usize) -> Option<(usize, usize)> {
        let (i, j) = (idx / self.ldc, idx % self.ldc);
        (i < self.m && j < self.n).then_some((i, j))
    }

    /// The initial C buffer: sentinels, or R's values for an in-place residual.
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

    /// All of C in one call: the safe API unless the residual aliases C.
    fn run(&self, pb: &PackedB) -> Vec<f32> {
        let mut c = self.c_init();
        match self.res {
            Res::No => gemm_f32(self.m, &self.a, self.lda, pb, None, &mut c, self.ldc, self.act),
            Res::Separate => gemm_f32(
                self.m,
                &self.a,
                self.lda,
                pb,
                Some((&self.r, self.ldr)),
                &mut c,
                self.ldc,
                self.act,
            ),
            Res::InPlace => return self.run_pieces(pb, &[(0..self.m, 0..pb.panels())]),
        }
        c
    }

    /// C by `gemm_f32_raw` calls on the given (rows, panels) rectangles.
    fn run_pieces(&self, pb: &PackedB, parts: &[(Range<usize>, Range<usize>)]) -> Vec<f32> {
        let mut c = self.c_init();
        let cp = c.as_mut_ptr();
        let r = match self.res {
            Res::No => std::ptr::null(),
            Res::Separate => self.r.as_ptr(),
            Res::InPlace => cp as *const f32,
        };
        let args = GemmArgs {
            m: self.m,
            a: self.a.as_ptr(),
            lda: self.lda,
            r,
            ldr: self.ldr,
            c: cp,
            ldc: self.ldc,
            act: self.act,
        };
        for (rows, panels) in parts {
            // SAFETY: buffers sized for m rows of their strides; c aliases r
            // only exactly (same pointer and stride).
            unsafe { gemm_f32_raw(&args, pb, rows.clone(), panels.clone()) };
        }
        c
    }

    /// `act(bias + sum_k A[i,k] B[k,j] + R[i,j])` in f64, with its error bound.
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
        (v, sum_bound(self.k + 2, abs, v))
    }
}

fn gemm_property(
    shape: (usize, usize, usize),
    pads: (usize, usize, usize),
    bias: bool,
    res: Res,
    act: Activation,
    (row_cut, panel_cut): (u32, u32),
    nan: u8,
    seed: u64,
) -> Result<(), TestCaseError> {
    let mut rng = Rng::new(seed);
    let mut g = Gemm::new(&mut rng, shape, pads, bias, res, act);
    // Now and then a NaN in A (poisons a whole row) or in R (one element).
    if nan == 0 {
        let (i, kk) = (rng.below(g.m), rng.below(g.k));
        g.a[i * g.lda + kk] = f32::NAN;
    } else if nan == 1 && res != Res::No {
        let (i, j) = (rng.below(g.m), rng.below(g.n));
        g.r[i * g.ldr + j] = f32::NAN;
    }
    let init = g.c_init();
    let reference = g.run(&g.pack(Isa::Scalar));

    // The scalar reference against the definition.
    expect_all(
        "gemm scalar reference vs naive",
        Isa::Scalar,
        reference.len(),
        |idx| match g.out_index(idx) {
            Some((i, j)) => {
                let (v, bound) = g.naive(i, j);
                naive_close(reference[idx], v, bound)
            }
            None => true,
        },
        |idx| {
            let (i, j) = g.out_index(idx).unwrap();
            format!("C[{i},{j}] = {:e}, naive {:e}", reference[idx], g.naive(i, j).0)
        },
    )?;

    for isa in Isa::runnable() {
        let pb = g.pack(isa);
        prop_assert_eq!(pb.isa, isa.float_level());
        prop_assert_eq!(pb.nr, panel_width(isa));
        let whole = g.run(&pb);
        expect_all(
            "gemm vs scalar reference",
            isa,
            whole.len(),
            |idx| match g.out_index(idx) {
                Some(_) => simd_close(whole[idx], reference[idx]),
                None => whole[idx].to_bits() == init[idx].to_bits(),
            },
            |idx| match g.out_index(idx) {
                Some((i, j)) => format!("C[{i},{j}] = {:e}, scalar {:e}", whole[idx], reference[idx]),
                None => format!("C index {idx} outside the output was written: {:e}", whole[idx]),
            },
        )?;
        // Rows and panels split over four calls: bit-identical.
        let (rc, pc, np) = (cut(g.m, row_cut), cut(pb.panels(), panel_cut), pb.panels());
        let parts = [
            (rc..g.m, pc..np),
            (0..rc, pc..np),
            (rc..g.m, 0..pc),
            (0..rc, 0..pc),
        ];
        let split = g.run_pieces(&pb, &parts);
        expect_bits(
            &format!("gemm split at row {rc}, panel {pc}"),
            isa,
            &split,
            &whole,
        )?;
        let (rows, panels) = (rc..g.m, 0..pc);
        let one = g.run_pieces(&pb, &[(rows.clone(), panels.clone())]);
        expect_piece(
            &format!("gemm rows {rows:?} panels {panels:?} alone"),
            isa,
            &one,
            &whole,
            &init,
            |idx| {
                g.out_index(idx)
                    .is_some_and(|(i, j)| rows.contains(&i) && panels.contains(&(j / pb.nr)))
            },
        )?;
        mark(isa);
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(256))]

    /// `gemm_f32` / `gemm_f32_raw`: bias, residual (separate or in place),
    /// activations, strided operands, row/panel splits.
    #[test]
    fn gemm_matches_scalar_on_every_isa(
        (m, k, n, big_k) in (1usize..=70, 1usize..=300, 1usize..=100, 0u8..8),
        pads in (0usize..=3, 0usize..=3, 0usize..=3),
        (bias, res, act) in (any::<bool>(), 0u8..3, 0..ACTS.len()),
        cuts in (0u32..=1000, 0u32..=1000),
        nan in 0u8..10,
        seed in any::<u64>(),
    ) {
        // One case in eight has k in 304..=1500, where the L2 row block
        // (`96 KiB / 4k` rows) is shorter than m and rows go in several blocks.
        let k = if big_k == 0 { 300 + 4 * k } else { k };
        gemm_property((m, k, n), pads, bias, res_mode(res), ACTS[act], cuts, nan, seed)?;
    }
}

// ---------------------------------------------------------------------------
// Depthwise convolution
// ---------------------------------------------------------------------------

/// ONNX output size (floor mode): `(len + pads - dilated_kernel) / stride + 1`.
fn onnx_out(len: usize, k: usize, s: usize, d: usize, p0: usize, p1: usize) -> usize {
    (len + p0 + p1 - ((k - 1) * d + 1)) / s + 1
}

/// Smallest input length at least `len` that fits one dilated window.
fn fit(len: usize, k: usize, d: usize, p0: usize, p1: usize) -> usize {
    len.max(((k - 1) * d + 1).saturating_sub(p0 + p1)).max(1)
}

struct Dw {
    g: DwGeom,
    /// Input `[n, h, w, c]`.
    x: Vec<f32>,
    /// ONNX weights `[c, 1, kh, kw]`.
    w: Vec<f32>,
    bias: Option<Vec<f32>>,
    res: Res,
    /// `[n, oh, ow, c]`.
    r: Vec<f32>,
    act: Activation,
}

impl Dw {
    fn out_len(&self) -> usize {
        self.g.rows() * self.g.ow * self.g.c
    }

    fn init(&self) -> Vec<f32> {
        let mut y = vec![SENTINEL; self.out_len() + GUARD];
        if self.res == Res::InPlace {
            y[..self.out_len()].copy_from_slice(&self.r);
        }
        y
    }

    fn run(&self, isa: Isa, parts: &[Range<usize>]) -> Vec<f32> {
        let pw = PackedDw::pack(
            isa,
            self.g.c,
            self.g.kh * self.g.kw,
            &self.w,
            self.bias.as_deref(),
        );
        assert_eq!(pw.isa, isa.float_level());
        let mut y = self.init();
        let yp = y.as_mut_ptr();
        let args = DwArgs {
            x: self.x.as_ptr(),
            r: match self.res {
                Res::No => std::ptr::null(),
                Res::Separate => self.r.as_ptr(),
                Res::InPlace => yp as *const f32,
            },
            y: yp,
            act: self.act,
        };
        for rows in parts {
            // SAFETY: buffers sized for the geometry; y aliases r only exactly.
            unsafe { dwconv_f32_raw(&self.g, &pw, &args, rows.clone()) };
        }
        y
    }

    /// ONNX Conv with `group = C` at output `(b, oy, ox, ch)`, f64, with bound.
    fn naive(&self, idx: usize) -> (f64, f64) {
        let g = &self.g;
        let ch = idx % g.c;
        let ox = (idx / g.c) % g.ow;
        let oy = (idx / (g.c * g.ow)) % g.oh;
        let b = idx / (g.c * g.ow * g.oh);
        let mut s = self.bias.as_ref().map_or(0.0, |v| v[ch] as f64);
        let mut abs = s.abs();
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let iy = (oy * g.sh + ky * g.dh) as isize - g.pt as isize;
                let ix = (ox * g.sw + kx * g.dw) as isize - g.pl as isize;
                if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                    continue;
                }
                let xv = self.x[((b * g.h + iy as usize) * g.w + ix as usize) * g.c + ch] as f64;
                let t = xv * self.w[(ch * g.kh + ky) * g.kw + kx] as f64;
                s += t;
                abs += t.abs();
            }
        }
        if self.res != Res::No {
            let r = self.r[idx] as f64;
            s += r;
            abs += r.abs();
        }
        let v = naive_act(self.act, s);
        (v, sum_bound(g.kh * g.kw + 2, abs, v))
    }
}

/// Checks one depthwise case on every level; `(c1, c2)` (per mille) cut the
/// rows into the pieces of the split check.
fn dw_check(d: &Dw, (c1, c2): (u32, u32)) -> Result<(), TestCaseError> {
    let rows = d.g.rows();
    let out = d.out_len();
    let init = d.init();
    let reference = d.run(Isa::Scalar, &[0..rows]);
    expect_all(
        &format!("dwconv scalar reference vs naive, {:?}", d.g),
        Isa::Scalar,
        out,
        |i| {
            let (v, bound) = d.naive(i);
            naive_close(reference[i], v, bound)
        },
        |i| format!("y[{i}] = {:e}, naive {:e}", reference[i], d.naive(i).0),
    )?;
    for isa in Isa::runnable() {
        let whole = d.run(isa, &[0..rows]);
        expect_all(
            &format!("dwconv vs scalar reference, {:?}", d.g),
            isa,
            whole.len(),
            |i| {
                if i < out {
                    simd_close(whole[i], reference[i])
                } else {
                    whole[i].to_bits() == init[i].to_bits()
                }
            },
            |i| format!("y[{i}] = {:e}, scalar {:e}", whole[i], reference[i]),
        )?;
        let parts = pieces(rows, c1, c2);
        let split = d.run(isa, &parts);
        expect_bits(&format!("dwconv rows split as {parts:?}"), isa, &split, &whole)?;
        let one = d.run(isa, &parts[1..2]);
        let row_len = d.g.ow * d.g.c;
        expect_piece(
            &format!("dwconv rows {:?} alone", parts[1]),
            isa,
            &one,
            &whole,
            &init,
            |i| i < out && parts[1].contains(&(i / row_len)),
        )?;
        mark(isa);
    }
    Ok(())
}

fn dw_property(
    (n, h, w, c): (usize, usize, usize, usize),
    (kmode, kh_any, kw_any): (u8, usize, usize),
    (sh, sw, dh, dw): (usize, usize, usize, usize),
    pads: (usize, usize, usize, usize),
    (bias, res, act): (bool, Res, Activation),
    cuts: (u32, u32),
    nan: u8,
    seed: u64,
) -> Result<(), TestCaseError> {
    // Mostly square 3x3 / 5x5; one case in five any kh, kw in 1..=7.
    let (kh, kw) = match kmode {
        0..=3 => (3, 3),
        4..=7 => (5, 5),
        _ => (kh_any, kw_any),
    };
    let (pt, pb) = (pads.0 % (kh / 2 + 1), pads.1 % (kh / 2 + 1));
    let (pl, pr) = (pads.2 % (kw / 2 + 1), pads.3 % (kw / 2 + 1));
    let h = fit(h, kh, dh, pt, pb);
    let w = fit(w, kw, dw, pl, pr);
    let g = DwGeom {
        n,
        h,
        w,
        c,
        kh,
        kw,
        sh,
        sw,
        dh,
        dw,
        pt,
        pl,
        oh: onnx_out(h, kh, sh, dh, pt, pb),
        ow: onnx_out(w, kw, sw, dw, pl, pr),
    };
    let mut rng = Rng::new(seed);
    let mut x = rng.vec(n * h * w * c);
    if nan == 0 {
        let i = rng.below(x.len());
        x[i] = f32::NAN;
    }
    let wts = rng.vec(c * kh * kw);
    let bias = bias.then(|| rng.vec(c));
    let r = if res == Res::No {
        Vec::new()
    } else {
        rng.vec(g.rows() * g.ow * c)
    };
    let d = Dw {
        g,
        x,
        w: wts,
        bias,
        res,
        r,
        act,
    };
    dw_check(&d, cuts)
}

proptest! {
    #![proptest_config(config(512))]

    /// `dwconv_f32_raw`: kernels 3/5 (sometimes any 1..=7 by 1..=7), strides
    /// and dilations 1..=2, pads 0..=k/2 per side, residual, activations,
    /// row splits.
    #[test]
    fn dwconv_matches_scalar_on_every_isa(
        dims in (1usize..=2, 1usize..=20, 1usize..=20, 1usize..=70),
        kernel in (0u8..10, 1usize..=7, 1usize..=7),
        steps in (1usize..=2, 1usize..=2, 1usize..=2, 1usize..=2),
        pads in (0usize..=3, 0usize..=3, 0usize..=3, 0usize..=3),
        (bias, res, act) in (any::<bool>(), 0u8..3, 0..ACTS.len()),
        cuts in (0u32..=1000, 0u32..=1000),
        nan in 0u8..10,
        seed in any::<u64>(),
    ) {
        dw_property(dims, kernel, steps, pads, (bias, res_mode(res), ACTS[act]), cuts, nan, seed)?;
    }
}

// ---------------------------------------------------------------------------
// General convolution
// ---------------------------------------------------------------------------

struct Conv {
    g: ConvGeom,
    /// Input `[n, h, w, ci]`.
    x: Vec<f32>,
    /// ONNX weights `[co, ci/group, kh, kw]`.
    w: Vec<f32>,
    bias: Option<Vec<f32>>,
    res: Res,
    /// `[n, oh, ow, co]`.
    r: Vec<f32>,
    act: Activation,
}

impl Conv {
    fn out_len(&self) -> usize {
        self.g.pixels() * self.g.co
    }

    fn init(&self) -> Vec<f32> {
        let mut y = vec![SENTINEL; self.out_len() + GUARD];
        if self.res == Res::InPlace {
            y[..self.out_len()].copy_from_slice(&self.r);
        }
        y
    }

    fn run(&self, isa: Isa, parts: &[Range<usize>]) -> Vec<f32> {
        let wts = pack_conv_weights(isa, &self.g, &self.w, self.bias.as_deref());
        assert_eq!(wts.len(), self.g.group);
        assert!(wts.iter().all(|p| p.isa == isa.float_level()));
        // NaN scratch: reading a value im2col did not write shows up.
        let mut scratch = vec![f32::NAN; self.g.scratch_len()];
        let mut y = self.init();
        let yp = y.as_mut_ptr();
        let args = ConvArgs {
            x: self.x.as_ptr(),
            r: match self.res {
                Res::No => std::ptr::null(),
                Res::Separate => self.r.as_ptr(),
                Res::InPlace => yp as *const f32,
            },
            y: yp,
            act: self.act,
        };
        for pix in parts {
            // SAFETY: buffers sized for the geometry; y aliases r only exactly.
            unsafe { conv_f32_raw(&self.g, &wts, &args, pix.clone(), &mut scratch) };
        }
        y
    }

    /// ONNX Conv at output `(b, oy, ox, co)` from the unpacked weights, f64.
    fn naive(&self, idx: usize) -> (f64, f64) {
        let g = &self.g;
        let co = idx % g.co;
        let ox = (idx / g.co) % g.ow;
        let oy = (idx / (g.co * g.ow)) % g.oh;
        let b = idx / (g.co * g.ow * g.oh);
        let (cig, cog) = (g.ci / g.group, g.co / g.group);
        let gi = co / cog;
        let mut s = self.bias.as_ref().map_or(0.0, |v| v[co] as f64);
        let mut abs = s.abs();
        for ci in 0..cig {
            for ky in 0..g.kh {
                for kx in 0..g.kw {
                    let iy = (oy * g.sh + ky * g.dh) as isize - g.pt as isize;
                    let ix = (ox * g.sw + kx * g.dw) as isize - g.pl as isize;
                    if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                        continue;
                    }
                    let xv = self.x[((b * g.h + iy as usize) * g.w + ix as usize) * g.ci + gi * cig + ci];
                    let t = xv as f64 * self.w[((co * cig + ci) * g.kh + ky) * g.kw + kx] as f64;
                    s += t;
                    abs += t.abs();
                }
            }
        }
        if self.res != Res::No {
            let r = self.r[idx] as f64;
            s += r;
            abs += r.abs();
        }
        let v = naive_act(self.act, s);
        (v, sum_bound(g.k() + 2, abs, v))
    }
}

fn conv_check(cv: &Conv, (c1, c2): (u32, u32)) -> Result<(), TestCaseError> {
    let pixels = cv.g.pixels();
    let out = cv.out_len();
    let init = cv.init();
    let reference = cv.run(Isa::Scalar, &[0..pixels]);
    expect_all(
        &format!("conv scalar reference vs naive, {:?}", cv.g),
        Isa::Scalar,
        out,
        |i| {
            let (v, bound) = cv.naive(i);
            naive_close(reference[i], v, bound)
        },
        |i| format!("y[{i}] = {:e}, naive {:e}", reference[i], cv.naive(i).0),
    )?;
    for isa in Isa::runnable() {
        let whole = cv.run(isa, &[0..pixels]);
        expect_all(
            &format!("conv vs scalar reference, {:?}", cv.g),
            isa,
            whole.len(),
            |i| {
                if i < out {
                    simd_close(whole[i], reference[i])
                } else {
                    whole[i].to_bits() == init[i].to_bits()
                }
            },
            |i| format!("y[{i}] = {:e}, scalar {:e}", whole[i], reference[i]),
        )?;
        let parts = pieces(pixels, c1, c2);
        let split = cv.run(isa, &parts);
        expect_bits(&format!("conv pixels split as {parts:?}"), isa, &split, &whole)?;
        let one = cv.run(isa, &parts[1..2]);
        expect_piece(
            &format!("conv pixels {:?} alone", parts[1]),
            isa,
            &one,
            &whole,
            &init,
            |i| i < out && parts[1].contains(&(i / cv.g.co)),
        )?;
        mark(isa);
    }
    Ok(())
}

fn conv_property(
    mode: u8,
    (n, h, w): (usize, usize, usize),
    (cig, cog, groups, wide): (usize, usize, usize, usize),
    (kh, kw, sh, sw, dh, dw): (usize, usize, usize, usize, usize, usize),
    pads: (usize, usize, usize, usize),
    (bias, res, act): (bool, Res, Activation),
    cuts: (u32, u32),
    nan: u8,
    seed: u64,
) -> Result<(), TestCaseError> {
    let (mut group, mut ci, mut co) = (1, cig, cog);
    let (mut kh, mut kw, mut sh, mut sw, mut dh, mut dw) = (kh, kw, sh, sw, dh, dw);
    let (mut h, mut w) = (h, w);
    match mode {
        // Grouped, ci and co divisible by the group count.
        0 | 1 => (group, ci, co) = (groups, groups * cig, groups * cog.div_ceil(2)),
        // Stem-like: 3 input channels, 3x3 stride 2, larger image.
        2 => {
            ci = 3;
            (kh, kw, sh, sw, dh, dw) = (3, 3, 2, 2, 1, 1);
            (h, w) = (2 * h, 2 * w);
        }
        // Pointwise (1x1, stride 1, no padding): the direct GEMM path.
        3 => {
            ci = wide;
            (kh, kw, sh, sw, dh, dw) = (1, 1, 1, 1, 1, 1);
        }
        // One group, any kernel 1..=5 (strided 1x1 included).
        _ => {}
    }
    // Pads 0..=k/2 per side (so none for 1x1).
    let pad = |p: usize, k: usize| p % (k / 2 + 1);
    let (pt, pb, pl, pr) = (pad(pads.0, kh), pad(pads.1, kh), pad(pads.2, kw), pad(pads.3, kw));
    let h = fit(h, kh, dh, pt, pb);
    let w = fit(w, kw, dw, pl, pr);
    let g = ConvGeom {
        n,
        h,
        w,
        ci,
        co,
        group,
        kh,
        kw,
        sh,
        sw,
        dh,
        dw,
        pt,
        pl,
        oh: onnx_out(h, kh, sh, dh, pt, pb),
        ow: onnx_out(w, kw, sw, dw, pl, pr),
    };
    prop_assert_eq!(
        g.is_pointwise(),
        kh == 1 && kw == 1 && sh == 1 && sw == 1 && pt + pb + pl + pr == 0 && group == 1
    );
    let mut rng = Rng::new(seed);
    let mut x = rng.vec(n * h * w * ci);
    if nan == 0 {
        let i = rng.below(x.len());
        x[i] = f32::NAN;
    }
    let wts = rng.vec(co * (ci / group) * kh * kw);
    let bias = bias.then(|| rng.vec(co));
    let r = if res == Res::No {
        Vec::new()
    } else {
        rng.vec(g.pixels() * co)
    };
    let cv = Conv {
        g,
        x,
        w: wts,
        bias,
        res,
        r,
        act,
    };
    conv_check(&cv, cuts)
}

proptest! {
    #![proptest_config(config(256))]

    /// `conv_f32_raw` with `pack_conv_weights`: groups 1..=3, stem-like
    /// 3-channel inputs, pointwise (direct GEMM), strided/dilated/padded
    /// kernels up to 5x5, residual, activations, pixel splits.
    #[test]
    fn conv_matches_scalar_on_every_isa(
        mode in 0u8..6,
        dims in (1usize..=2, 1usize..=12, 1usize..=12),
        chans in (1usize..=8, 1usize..=40, 2usize..=3, 1usize..=64),
        kernel in (1usize..=5, 1usize..=5, 1usize..=2, 1usize..=2, 1usize..=2, 1usize..=2),
        pads in (0usize..=2, 0usize..=2, 0usize..=2, 0usize..=2),
        (bias, res, act) in (any::<bool>(), 0u8..3, 0..ACTS.len()),
        cuts in (0u32..=1000, 0u32..=1000),
        nan in 0u8..10,
        seed in any::<u64>(),
    ) {
        conv_property(mode, dims, chans, kernel, pads, (bias, res_mode(res), ACTS[act]), cuts, nan, seed)?;
    }
}

// ---------------------------------------------------------------------------
// Pooling
// ---------------------------------------------------------------------------

fn gap_run(isa: Isa, x: &[f32], (n, hw, c): (usize, usize, usize), parts: &[Range<usize>]) -> Vec<f32> {
    let mut y = vec![SENTINEL; n * c + GUARD];
    for batch in parts {
        // SAFETY: x holds [n, hw, c], y [n, c] (+ guard), disjoint.
        unsafe { global_avg_pool_f32(isa, x.as_ptr(), y.as_mut_ptr(), hw, c, batch.clone()) };
    }
    y
}

fn pool_run(isa: Isa, g: &PoolGeom, x: &[f32], parts: &[Range<usize>]) -> Vec<f32> {
    let mut y = vec![SENTINEL; g.n * g.oh * g.ow * g.c + GUARD];
    for rows in parts {
        // SAFETY: x holds [n, h, w, c], y [n, oh, ow, c] (+ guard), disjoint.
        unsafe { pool2d_f32(isa, g, x.as_ptr(), y.as_mut_ptr(), rows.clone()) };
    }
    y
}

/// ONNX MaxPool / AveragePool (floor mode) at output index `idx`, f64, with
/// the error bound (0 for max: it selects an input value).
fn pool_naive(g: &PoolGeom, x: &[f32], idx: usize) -> (f64, f64) {
    let ch = idx % g.c;
    let ox = (idx / g.c) % g.ow;
    let oy = (idx / (g.c * g.ow)) % g.oh;
    let b = idx / (g.c * g.ow * g.oh);
    let (mut max, mut sum, mut abs, mut count) = (f64::NEG_INFINITY, 0.0, 0.0, 0usize);
    for ky in 0..g.kh {
        for kx in 0..g.kw {
            let iy = (oy * g.sh + ky) as isize - g.pt as isize;
            let ix = (ox * g.sw + kx) as isize - g.pl as isize;
            if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                continue;
            }
            let v = x[((b * g.h + iy as usize) * g.w + ix as usize) * g.c + ch] as f64;
            max = if v.is_nan() || max.is_nan() {
                f64::NAN
            } else {
                max.max(v)
            };
            sum += v;
            abs += v.abs();
            count += 1;
        }
    }
    if g.max {
        (max, 0.0)
    } else {
        // In floor mode every window lies inside the padded input, so
        // count_include_pad divides by the whole window.
        let div = if g.count_include_pad { g.kh * g.kw } else { count };
        let v = sum / div as f64;
        (v, (count as f64 + 3.0) * EPS * abs / div as f64 + 1e-30)
    }
}

fn pool_property(
    (n, h, w, c): (usize, usize, usize, usize),
    (kh, kw, sh, sw): (usize, usize, usize, usize),
    pads: (usize, usize, usize, usize),
    (max, count_include_pad, symmetric): (bool, bool, bool),
    cuts: (u32, u32),
    nan: u8,
    seed: u64,
) -> Result<(), TestCaseError> {
    // ONNX: pads smaller than the window; symmetric (the usual case) half the time.
    let (pt, pl) = (pads.0 % kh, pads.2 % kw);
    let (pb, pr) = if symmetric {
        (pt, pl)
    } else {
        (pads.1 % kh, pads.3 % kw)
    };
    let h = fit(h, kh, 1, pt, pb);
    let w = fit(w, kw, 1, pl, pr);
    let g = PoolGeom {
        n,
        h,
        w,
        c,
        kh,
        kw,
        sh,
        sw,
        pt,
        pl,
        pb,
        pr,
        oh: onnx_out(h, kh, sh, 1, pt, pb),
        ow: onnx_out(w, kw, sw, 1, pl, pr),
        max,
        count_include_pad,
    };
    let mut rng = Rng::new(seed);
    let x = rng.vec_special(n * h * w * c, if nan == 0 { 40 } else { usize::MAX });
    let out = n * g.oh * g.ow * c;
    let rows = n * g.oh;
    let reference = pool_run(Isa::Scalar, &g, &x, &[0..rows]);
    {
        expect_all(
            &format!("pool scalar reference vs naive, {g:?}, pb {pb} pr {pr}"),
            Isa::Scalar,
            out,
            |i| {
                let (v, bound) = pool_naive(&g, &x, i);
                naive_close(reference[i], v, bound)
            },
            |i| format!("y[{i}] = {:e}, naive {:e}", reference[i], pool_naive(&g, &x, i).0),
        )?;
    }
    prop_assert!(reference[out..].iter().all(|v| v.to_bits() == SENTINEL.to_bits()));
    for isa in Isa::runnable() {
        let whole = pool_run(isa, &g, &x, &[0..rows]);
        expect_exact(
            &format!("pool2d vs scalar reference (exact), {g:?}"),
            isa,
            &whole,
            &reference,
        )?;
        let parts = pieces(rows, cuts.0, cuts.1);
        let split = pool_run(isa, &g, &x, &parts);
        expect_bits(&format!("pool2d rows split as {parts:?}"), isa, &split, &whole)?;
        let one = pool_run(isa, &g, &x, &parts[1..2]);
        let init = vec![SENTINEL; one.len()];
        expect_piece(
            &format!("pool2d rows {:?} alone", parts[1]),
            isa,
            &one,
            &whole,
            &init,
            |i| i < out && parts[1].contains(&(i / (g.ow * c))),
        )?;
        mark(isa);
    }
    Ok(())
}

fn gap_property(dims: (usize, usize, usize), cut_at: u32, nan: u8, seed: u64) -> Result<(), TestCaseError> {
    let (n, hw, c) = dims;
    let mut rng = Rng::new(seed);
    let x = rng.vec_special(n * hw * c, if nan == 0 { 40 } else { usize::MAX });
    let reference = gap_run(Isa::Scalar, &x, dims, &[0..n]);
    let naive = |i: usize| {
        let (b, ch) = (i / c, i % c);
        let (mut s, mut abs) = (0.0, 0.0);
        for p in 0..hw {
            let v = x[(b * hw + p) * c + ch] as f64;
            s += v;
            abs += v.abs();
        }
        (s / hw as f64, (hw as f64 + 3.0) * EPS * abs / hw as f64 + 1e-30)
    };
    expect_all(
        "global_avg_pool scalar reference vs naive",
        Isa::Scalar,
        n * c,
        |i| {
            let (v, bound) = naive(i);
            naive_close(reference[i], v, bound)
        },
        |i| format!("y[{i}] = {:e}, naive {:e}", reference[i], naive(i).0),
    )?;
    prop_assert!(reference[n * c..]
        .iter()
        .all(|v| v.to_bits() == SENTINEL.to_bits()));
    for isa in Isa::runnable() {
        let whole = gap_run(isa, &x, dims, &[0..n]);
        expect_exact(
            "global_avg_pool vs scalar reference (exact)",
            isa,
            &whole,
            &reference,
        )?;
        let k = cut(n, cut_at);
        let split = gap_run(isa, &x, dims, &[k..n, 0..k]);
        expect_bits(
            &format!("global_avg_pool batch split at {k}"),
            isa,
            &split,
            &whole,
        )?;
        let one = gap_run(isa, &x, dims, &[k..n]);
        let init = vec![SENTINEL; one.len()];
        expect_piece(
            &format!("global_avg_pool batch {k}..{n} alone"),
            isa,
            &one,
            &whole,
            &init,
            |i| i < n * c && i / c >= k,
        )?;
        mark(isa);
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(512))]

    /// `pool2d_f32`: max, average with count_include_pad both ways.
    #[test]
    fn pool2d_matches_scalar_on_every_isa(
        dims in (1usize..=2, 1usize..=16, 1usize..=16, 1usize..=70),
        window in (1usize..=5, 1usize..=5, 1usize..=3, 1usize..=3),
        pads in (0usize..=4, 0usize..=4, 0usize..=4, 0usize..=4),
        kind in (any::<bool>(), any::<bool>(), any::<bool>()),
        cuts in (0u32..=1000, 0u32..=1000),
        nan in 0u8..4,
        seed in any::<u64>(),
    ) {
        pool_property(dims, window, pads, kind, cuts, nan, seed)?;
    }

    /// `global_avg_pool_f32` over batch items and batch splits.
    #[test]
    fn global_avg_pool_matches_scalar_on_every_isa(
        dims in (1usize..=3, 1usize..=200, 1usize..=70),
        cut_at in 0u32..=1000,
        nan in 0u8..4,
        seed in any::<u64>(),
    ) {
        gap_property(dims, cut_at, nan, seed)?;
    }
}

// ---------------------------------------------------------------------------
// Element-wise
// ---------------------------------------------------------------------------

const OPS: [BinOp; 4] = [BinOp::Add, BinOp::Sub, BinOp::Mul, BinOp::Div];

fn op_f32(op: BinOp, a: f32, b: f32) -> f32 {
    match op {
        BinOp::Add => a + b,
        BinOp::Sub => a - b,
        BinOp::Mul => a * b,
        BinOp::Div => a / b,
    }
}

/// Scalar reference vs `act(v)`: exact (as numbers, NaN for NaN) for the
/// clamps, a few ulps for the others.
fn eltwise_naive_ok(act: Activation, got: f32, v: f32) -> bool {
    let want = naive_act(act, v as f64);
    let tol = if is_clamp(act) {
        0.0
    } else {
        1e-6 * want.abs().max(1.0)
    };
    naive_close(got, want, tol)
}

/// Where the output goes: a fresh buffer or in place over an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Out {
    Fresh,
    OverFirst,
    OverSecond,
}

fn out_mode(x: u8) -> Out {
    match x % 3 {
        0 => Out::Fresh,
        1 => Out::OverFirst,
        _ => Out::OverSecond,
    }
}

fn binary_run(
    isa: Isa,
    op: BinOp,
    a: &[f32],
    b: &[f32],
    act: Activation,
    parts: &[Range<usize>],
    out: Out,
) -> Vec<f32> {
    let mut y = vec![SENTINEL; a.len() + GUARD];
    match out {
        Out::Fresh => {}
        Out::OverFirst => y[..a.len()].copy_from_slice(a),
        Out::OverSecond => y[..b.len()].copy_from_slice(b),
    }
    let yp = y.as_mut_ptr();
    let (ap, bp) = match out {
        Out::Fresh => (a.as_ptr(), b.as_ptr()),
        Out::OverFirst => (yp as *const f32, b.as_ptr()),
        Out::OverSecond => (a.as_ptr(), yp as *const f32),
    };
    for r in parts {
        // SAFETY: all buffers hold a.len() values; y aliases an input only exactly.
        unsafe { binary_f32(isa, op, ap, bp, yp, act, r.clone()) };
    }
    y
}

fn channel_run(
    isa: Isa,
    op: BinOp,
    x: &[f32],
    s: &[f32],
    (hw, c): (usize, usize),
    act: Activation,
    parts: &[Range<usize>],
    in_place: bool,
) -> Vec<f32> {
    let mut y = vec![SENTINEL; x.len() + GUARD];
    if in_place {
        y[..x.len()].copy_from_slice(x);
    }
    let yp = y.as_mut_ptr();
    let xp = if in_place { yp as *const f32 } else { x.as_ptr() };
    for batch in parts {
        // SAFETY: x/y hold [n, hw, c], s [n, c]; y aliases x only exactly.
        unsafe { channel_f32(isa, op, xp, s.as_ptr(), yp, hw, c, act, batch.clone()) };
    }
    y
}

fn scalar_run(
    isa: Isa,
    op: BinOp,
    x: &[f32],
    sv: f32,
    first: bool,
    parts: &[Range<usize>],
    in_place: bool,
) -> Vec<f32> {
    let mut y = vec![SENTINEL; x.len() + GUARD];
    if in_place {
        y[..x.len()].copy_from_slice(x);
    }
    let yp = y.as_mut_ptr();
    let xp = if in_place { yp as *const f32 } else { x.as_ptr() };
    for r in parts {
        // SAFETY: x and y hold x.len() values; y aliases x only exactly.
        unsafe { scalar_f32(isa, op, xp, sv, first, yp, r.clone()) };
    }
    y
}

fn act_run(isa: Isa, act: Activation, x: &[f32], parts: &[Range<usize>], in_place: bool) -> Vec<f32> {
    let mut y = vec![SENTINEL; x.len() + GUARD];
    if in_place {
        y[..x.len()].copy_from_slice(x);
    }
    let yp = y.as_mut_ptr();
    let xp = if in_place { yp as *const f32 } else { x.as_ptr() };
    for r in parts {
        // SAFETY: x and y hold x.len() values; y aliases x only exactly.
        unsafe { activation_f32(isa, act, xp, yp, r.clone()) };
    }
    y
}

/// Expected untouched value of output position `i` (outside the range).
fn untouched(init: Option<&[f32]>, i: usize) -> f32 {
    init.and_then(|v| v.get(i).copied()).unwrap_or(SENTINEL)
}

proptest! {
    #![proptest_config(config(512))]

    /// `binary_f32` Add/Sub/Mul/Div with activations on a sub-range, with
    /// NaN/inf/zero/subnormal inputs, in place over either input or not.
    #[test]
    fn binary_matches_scalar_on_every_isa(
        len in 1usize..=300,
        (op, act, out) in (0..OPS.len(), 0..ACTS.len(), 0u8..3),
        cuts in (0u32..=1000, 0u32..=1000, 0u32..=1000),
        seed in any::<u64>(),
    ) {
        let (op, act, out) = (OPS[op], ACTS[act], out_mode(out));
        let mut rng = Rng::new(seed);
        let a = rng.vec_special(len, 8);
        let b = rng.vec_special(len, 8);
        let mut cs = [cut(len, cuts.0), cut(len, cuts.1), cut(len, cuts.2)];
        cs.sort_unstable();
        let (lo, mid, hi) = (cs[0], cs[1], cs[2]);
        let reference = binary_run(Isa::Scalar, op, &a, &b, act, &[lo..hi], out);
        let init = match out {
            Out::Fresh => None,
            Out::OverFirst => Some(&a[..]),
            Out::OverSecond => Some(&b[..]),
        };
        expect_all(
            &format!("binary {op:?} {act:?} scalar reference vs naive"),
            Isa::Scalar,
            reference.len(),
            |i| {
                if (lo..hi).contains(&i) {
                    eltwise_naive_ok(act, reference[i], op_f32(op, a[i], b[i]))
                } else {
                    reference[i].to_bits() == untouched(init, i).to_bits()
                }
            },
            |i| format!("y[{i}] = {:e} for {:e}, {:e}", reference[i], a[i], b[i]),
        )?;
        for isa in Isa::runnable() {
            let whole = binary_run(isa, op, &a, &b, act, &[lo..hi], out);
            expect_exact(&format!("binary {op:?} {act:?} vs scalar reference (exact)"), isa, &whole, &reference)?;
            let split = binary_run(isa, op, &a, &b, act, &[mid..hi, lo..mid], out);
            expect_bits("binary split", isa, &split, &whole)?;
            mark(isa);
        }
    }

    /// `scalar_f32` (`x op s` / `s op x`) on a sub-range, in place or not,
    /// with special values in x and as the scalar.
    #[test]
    fn scalar_matches_scalar_reference_on_every_isa(
        len in 1usize..=300,
        (op, first, in_place) in (0..OPS.len(), any::<bool>(), any::<bool>()),
        cuts in (0u32..=1000, 0u32..=1000, 0u32..=1000),
        seed in any::<u64>(),
    ) {
        let op = OPS[op];
        let mut rng = Rng::new(seed);
        let x = rng.vec_special(len, 8);
        let sv = rng.vec_special(1, 4)[0];
        let mut cs = [cut(len, cuts.0), cut(len, cuts.1), cut(len, cuts.2)];
        cs.sort_unstable();
        let (lo, mid, hi) = (cs[0], cs[1], cs[2]);
        let reference = scalar_run(Isa::Scalar, op, &x, sv, first, &[lo..hi], in_place);
        let init = if in_place { Some(&x[..]) } else { None };
        expect_all(
            &format!("scalar {op:?} first={first} reference vs naive"),
            Isa::Scalar,
            reference.len(),
            |i| {
                if (lo..hi).contains(&i) {
                    let want = if first { op_f32(op, sv, x[i]) } else { op_f32(op, x[i], sv) };
                    naive_close(reference[i], want as f64, 0.0)
                } else {
                    reference[i].to_bits() == untouched(init, i).to_bits()
                }
            },
            |i| format!("y[{i}] = {:e} for {:e}, s {:e}", reference[i], x[i], sv),
        )?;
        for isa in Isa::runnable() {
            let whole = scalar_run(isa, op, &x, sv, first, &[lo..hi], in_place);
            expect_exact(&format!("scalar {op:?} vs scalar reference (exact)"), isa, &whole, &reference)?;
            let split = scalar_run(isa, op, &x, sv, first, &[mid..hi, lo..mid], in_place);
            expect_bits("scalar split", isa, &split, &whole)?;
            mark(isa);
        }
    }

    /// `affine_f32` (`(x * a) + b`, two roundings) on a sub-range, in place
    /// or not: exactly a scalar Mul then a scalar Add, on every level.
    #[test]
    fn affine_matches_mul_then_add_on_every_isa(
        len in 1usize..=300,
        in_place in any::<bool>(),
        cuts in (0u32..=1000, 0u32..=1000),
        seed in any::<u64>(),
    ) {
        let mut rng = Rng::new(seed);
        let x = rng.vec_special(len, 8);
        let ab = rng.vec_special(2, 4);
        let (a, b) = (ab[0], ab[1]);
        let mut cs = [cut(len, cuts.0), cut(len, cuts.1)];
        cs.sort_unstable();
        let (lo, hi) = (cs[0], cs[1]);
        for isa in Isa::runnable() {
            let mut y = vec![SENTINEL; len + GUARD];
            if in_place {
                y[..len].copy_from_slice(&x);
            }
            let yp = y.as_mut_ptr();
            let xp = if in_place { yp as *const f32 } else { x.as_ptr() };
            // SAFETY: x and y hold len values; y aliases x only exactly.
            unsafe { affine_f32(isa, xp, a, b, yp, lo..hi) };
            for i in 0..len + GUARD {
                let want = if (lo..hi).contains(&i) {
                    let t = x[i] * a;
                    t + b
                } else if in_place && i < len {
                    x[i]
                } else {
                    SENTINEL
                };
                prop_assert!(
                    want.to_bits() == y[i].to_bits() || (want.is_nan() && y[i].is_nan()),
                    "{isa}: y[{i}] = {:e}, want {:e} (x {:e}, a {:e}, b {:e})", y[i], want, x.get(i).copied().unwrap_or(0.0), a, b
                );
            }
            mark(isa);
        }
    }

    /// `channel_f32` (`[n, hw, c] op [n, c]`) with activations and batch ranges.
    #[test]
    fn channel_matches_scalar_on_every_isa(
        dims in (1usize..=3, 1usize..=40, 1usize..=70),
        (op, act, in_place) in (0..OPS.len(), 0..ACTS.len(), any::<bool>()),
        cuts in (0u32..=1000, 0u32..=1000),
        seed in any::<u64>(),
    ) {
        let (n, hw, c) = dims;
        let (op, act) = (OPS[op], ACTS[act]);
        let mut rng = Rng::new(seed);
        let x = rng.vec_special(n * hw * c, 16);
        let s = rng.vec_special(n * c, 16);
        let (lo, hi) = (cut(n, cuts.0.min(cuts.1)), cut(n, cuts.0.max(cuts.1)));
        let reference = channel_run(Isa::Scalar, op, &x, &s, (hw, c), act, &[lo..hi], in_place);
        let init = in_place.then_some(&x[..]);
        expect_all(
            &format!("channel {op:?} {act:?} scalar reference vs naive"),
            Isa::Scalar,
            reference.len(),
            |i| {
                if (lo * hw * c..hi * hw * c).contains(&i) {
                    let (b, ch) = (i / (hw * c), i % c);
                    eltwise_naive_ok(act, reference[i], op_f32(op, x[i], s[b * c + ch]))
                } else {
                    reference[i].to_bits() == untouched(init, i).to_bits()
                }
            },
            |i| format!("y[{i}] = {:e}", reference[i]),
        )?;
        for isa in Isa::runnable() {
            let whole = channel_run(isa, op, &x, &s, (hw, c), act, &[lo..hi], in_place);
            expect_exact(&format!("channel {op:?} {act:?} vs scalar reference (exact)"), isa, &whole, &reference)?;
            let mid = (lo + hi) / 2;
            let split = channel_run(isa, op, &x, &s, (hw, c), act, &[mid..hi, lo..mid], in_place);
            expect_bits("channel split", isa, &split, &whole)?;
            mark(isa);
        }
    }

    /// `activation_f32` on a sub-range, in place or not, special inputs.
    #[test]
    fn activation_matches_scalar_on_every_isa(
        len in 1usize..=300,
        (act, in_place) in (0..ACTS.len(), any::<bool>()),
        cuts in (0u32..=1000, 0u32..=1000, 0u32..=1000),
        seed in any::<u64>(),
    ) {
        let act = ACTS[act];
        let mut rng = Rng::new(seed);
        let x = rng.vec_special(len, 6);
        let mut cs = [cut(len, cuts.0), cut(len, cuts.1), cut(len, cuts.2)];
        cs.sort_unstable();
        let (lo, mid, hi) = (cs[0], cs[1], cs[2]);
        let reference = act_run(Isa::Scalar, act, &x, &[lo..hi], in_place);
        let init = in_place.then_some(&x[..]);
        expect_all(
            &format!("activation {act:?} scalar reference vs naive"),
            Isa::Scalar,
            reference.len(),
            |i| {
                if (lo..hi).contains(&i) {
                    eltwise_naive_ok(act, reference[i], x[i])
                } else {
                    reference[i].to_bits() == untouched(init, i).to_bits()
                }
            },
            |i| format!("y[{i}] = {:e} for {:e}", reference[i], x[i]),
        )?;
        for isa in Isa::runnable() {
            let whole = act_run(isa, act, &x, &[lo..hi], in_place);
            expect_exact(&format!("activation {act:?} vs scalar reference (exact)"), isa, &whole, &reference)?;
            let split = act_run(isa, act, &x, &[mid..hi, lo..mid], in_place);
            expect_bits("activation split", isa, &split, &whole)?;
            mark(isa);
        }
    }
}

// ---------------------------------------------------------------------------
// Deterministic checks
// ---------------------------------------------------------------------------

/// NaN through Relu and Clip(0, 6) stays NaN in every kernel on every level.
#[test]
fn nan_propagates_through_clamp_on_every_isa() {
    let clamps = [Activation::RELU, Activation::Clamp { min: 0.0, max: 6.0 }];
    for isa in Isa::runnable() {
        for act in clamps {
            // GEMM: a NaN in A poisons its row; a NaN in the residual its element.
            let (m, k, n) = (13, 5, 37);
            let mut a = vec![1.0f32; m * k];
            a[4 * k + 2] = f32::NAN;
            let mut r = vec![-100.0f32; m * n];
            r[9 * n + 30] = f32::NAN;
            let pb = PackedB::from_row_major(isa, k, n, &vec![0.5; k * n], None);
            let mut c = vec![0f32; m * n];
            gemm_f32(m, &a, k, &pb, Some((&r, n)), &mut c, n, act);
            for i in 0..m {
                for j in 0..n {
                    let v = c[i * n + j];
                    assert_eq!(
                        v.is_nan(),
                        i == 4 || (i, j) == (9, 30),
                        "gemm {isa} {act:?} C[{i},{j}] = {v}"
                    );
                }
            }
            // Depthwise 3x3: a NaN input reaches the 3x3 outputs around it.
            let g = DwGeom {
                n: 1,
                h: 9,
                w: 20,
                c: 19,
                kh: 3,
                kw: 3,
                sh: 1,
                sw: 1,
                dh: 1,
                dw: 1,
                pt: 1,
                pl: 1,
                oh: 9,
                ow: 20,
            };
            let mut x = vec![-1.0f32; 9 * 20 * 19];
            x[(4 * 20 + 10) * 19 + 17] = f32::NAN;
            let pw = PackedDw::pack(isa, 19, 9, &[1.0; 19 * 9], None);
            let mut y = vec![0f32; 9 * 20 * 19];
            let args = DwArgs {
                x: x.as_ptr(),
                r: std::ptr::null(),
                y: y.as_mut_ptr(),
                act,
            };
            // SAFETY: buffers sized for the geometry.
            unsafe { dwconv_f32_raw(&g, &pw, &args, 0..9) };
            for (i, v) in y.iter().enumerate() {
                let (ch, ox, oy) = (i % 19, (i / 19) % 20, i / (19 * 20));
                let hit = ch == 17 && oy.abs_diff(4) <= 1 && ox.abs_diff(10) <= 1;
                assert_eq!(v.is_nan(), hit, "dwconv {isa} {act:?} y[{oy},{ox},{ch}] = {v}");
                if !hit {
                    assert_eq!(*v, 0.0, "clamped");
                }
            }
            // Element-wise.
            let xs = [f32::NAN, -1.0, 7.0, f32::NAN, 2.0, f32::NAN, 0.5, -0.0, 9.0];
            let mut out = [0f32; 9];
            // SAFETY: 9 values each.
            unsafe { activation_f32(isa, act, xs.as_ptr(), out.as_mut_ptr(), 0..9) };
            for (x, y) in xs.iter().zip(out) {
                assert_eq!(x.is_nan(), y.is_nan(), "activation {isa} {act:?}: {x} -> {y}");
            }
            let ones = [1.0f32; 9];
            // SAFETY: 9 values each.
            unsafe {
                binary_f32(
                    isa,
                    BinOp::Mul,
                    xs.as_ptr(),
                    ones.as_ptr(),
                    out.as_mut_ptr(),
                    act,
                    0..9,
                )
            };
            for (x, y) in xs.iter().zip(out) {
                assert_eq!(x.is_nan(), y.is_nan(), "binary {isa} {act:?}: {x} -> {y}");
            }
            // SAFETY: [1, 3, 3] op [1, 3].
            unsafe {
                channel_f32(
                    isa,
                    BinOp::Add,
                    xs.as_ptr(),
                    ones.as_ptr(),
                    out.as_mut_ptr(),
                    3,
                    3,
                    act,
                    0..1,
                )
            };
            for (x, y) in xs.iter().zip(out) {
                assert_eq!(x.is_nan(), y.is_nan(), "channel {isa} {act:?}: {x} -> {y}");
            }
        }
        mark(isa);
    }
}

/// `1 + 2^-12`: its square is `1 + 2^-11 + 2^-24`, which rounds to
/// `1 + 2^-11` in f32, so `x*x - 1` is `2^-11` with a separate multiply and
/// add but `2^-11 + 2^-24` with a fused multiply-add: which of the two a
/// kernel returns tells whether its SIMD (FMA) path ran.
const FP_X: f32 = 1.0 + 1.0 / 4096.0;

fn fingerprint(isa: Isa) -> f32 {
    let separate = 1.0 / 2048.0;
    if isa == Isa::Scalar {
        separate
    } else {
        separate + 1.0 / 16_777_216.0
    }
}

/// Bit patterns, every NaN as the default NaN (see [`expect_exact`]).
fn bits(v: &[f32]) -> Vec<u32> {
    v.iter()
        .map(|x| {
            if x.is_nan() {
                f32::NAN.to_bits()
            } else {
                x.to_bits()
            }
        })
        .collect()
}

/// Runs each kernel family on `isa` and checks, where results tell paths
/// apart, that `isa`'s own path produced them.
fn check_paths_run(isa: Isa) {
    let want = fingerprint(isa).to_bits();
    // GEMM, packed for `isa`.
    let pb = PackedB::pack(isa, 1, 1, |_, _| FP_X, Some(&[-1.0]));
    assert_eq!((pb.isa, pb.nr), (isa.float_level(), panel_width(isa)));
    let mut c = [0f32];
    gemm_f32(1, &[FP_X], 1, &pb, None, &mut c, 1, Activation::None);
    assert_eq!(
        c[0].to_bits(),
        want,
        "gemm path for {isa} did not run: {:e}",
        c[0]
    );
    // Depthwise 1x1.
    let g = DwGeom {
        n: 1,
        h: 1,
        w: 1,
        c: 1,
        kh: 1,
        kw: 1,
        sh: 1,
        sw: 1,
        dh: 1,
        dw: 1,
        pt: 0,
        pl: 0,
        oh: 1,
        ow: 1,
    };
    let pw = PackedDw::pack(isa, 1, 1, &[FP_X], Some(&[-1.0]));
    let mut y = [0f32];
    let args = DwArgs {
        x: [FP_X].as_ptr(),
        r: std::ptr::null(),
        y: y.as_mut_ptr(),
        act: Activation::None,
    };
    // SAFETY: one input, one output.
    unsafe { dwconv_f32_raw(&g, &pw, &args, 0..1) };
    assert_eq!(
        y[0].to_bits(),
        want,
        "dwconv path for {isa} did not run: {:e}",
        y[0]
    );
    // Convolution: pointwise (direct GEMM) and strided 1x1 (im2col).
    for sh in [1, 2] {
        let g = ConvGeom {
            n: 1,
            h: 1,
            w: 1,
            ci: 1,
            co: 1,
            group: 1,
            kh: 1,
            kw: 1,
            sh,
            sw: sh,
            dh: 1,
            dw: 1,
            pt: 0,
            pl: 0,
            oh: 1,
            ow: 1,
        };
        assert_eq!(g.is_pointwise(), sh == 1);
        let wts = pack_conv_weights(isa, &g, &[FP_X], Some(&[-1.0]));
        let mut y = [0f32];
        let mut scratch = vec![0f32; g.scratch_len()];
        let args = ConvArgs {
            x: [FP_X].as_ptr(),
            r: std::ptr::null(),
            y: y.as_mut_ptr(),
            act: Activation::None,
        };
        // SAFETY: one input, one output.
        unsafe { conv_f32_raw(&g, &wts, &args, 0..1, &mut scratch) };
        assert_eq!(
            y[0].to_bits(),
            want,
            "conv (stride {sh}) path for {isa} did not run: {:e}",
            y[0]
        );
    }
    // Pooling and element-wise: one body per level, identical results by
    // design, so only agreement with the scalar build can be checked.
    let x: Vec<f32> = (0..2 * 5 * 5 * 21)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
        .collect();
    let gap = gap_run(isa, &x, (2, 25, 21), &[0..2]);
    assert_eq!(
        bits(&gap),
        bits(&gap_run(Isa::Scalar, &x, (2, 25, 21), &[0..2])),
        "global_avg_pool {isa}"
    );
    for max in [true, false] {
        let g = PoolGeom {
            n: 2,
            h: 5,
            w: 5,
            c: 21,
            kh: 3,
            kw: 3,
            sh: 2,
            sw: 2,
            pt: 1,
            pl: 1,
            pb: 1,
            pr: 1,
            oh: 3,
            ow: 3,
            max,
            count_include_pad: false,
        };
        assert_eq!(
            bits(&pool_run(isa, &g, &x, &[0..6])),
            bits(&pool_run(Isa::Scalar, &g, &x, &[0..6])),
            "pool2d {isa}"
        );
    }
    let act = Activation::HardSwish;
    let n = x.len();
    let xr: Vec<f32> = x.iter().rev().copied().collect();
    assert_eq!(
        bits(&binary_run(isa, BinOp::Div, &x, &xr, act, &[0..n], Out::Fresh)),
        bits(&binary_run(
            Isa::Scalar,
            BinOp::Div,
            &x,
            &xr,
            act,
            &[0..n],
            Out::Fresh
        )),
        "binary_f32 {isa}"
    );
    assert_eq!(
        bits(&channel_run(
            isa,
            BinOp::Mul,
            &x,
            &x[..42],
            (25, 21),
            act,
            &[0..2],
            false
        )),
        bits(&channel_run(
            Isa::Scalar,
            BinOp::Mul,
            &x,
            &x[..42],
            (25, 21),
            act,
            &[0..2],
            false
        )),
        "channel_f32 {isa}"
    );
    assert_eq!(
        bits(&act_run(isa, Activation::SiLU, &x, &[0..n], false)),
        bits(&act_run(Isa::Scalar, Activation::SiLU, &x, &[0..n], false)),
        "activation_f32 {isa}"
    );
}

/// Runs every kernel family's path on every runnable level, prints the levels
/// tested and fails if the CPU supports a level whose path did not run.
#[test]
fn every_cpu_isa_level_is_tested() {
    let runnable = Isa::runnable();
    for isa in runnable.iter().copied() {
        check_paths_run(isa);
        mark(isa);
    }
    let ran = ISAS_RAN.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let names: Vec<&str> = ran.iter().map(|i| i.name()).collect();
    // Straight to stderr, past the test harness's output capture.
    let features = simd_features();
    let _ = writeln!(
        std::io::stderr(),
        "kiln-kernels: ISA levels tested: {} (CPU SIMD features: {})",
        names.join(", "),
        if features.is_empty() {
            "none".to_string()
        } else {
            features.join(", ")
        }
    );
    if !cfg!(target_arch = "x86_64") {
        // Expected, not a failure: the SIMD kernels are x86-64 only so far.
        let _ = writeln!(
            std::io::stderr(),
            "kiln-kernels: {} has no SIMD kernel levels yet: only the scalar kernels ran",
            std::env::consts::ARCH
        );
    }
    for isa in cpu_levels().into_iter().chain(runnable) {
        assert!(
            ran.contains(&isa),
            "this CPU supports {isa} but its kernels did not run (tested: {names:?})"
        );
    }
}

/// `set_max_isa` caps `active_isa` (and removing the cap restores
/// `KILN_ISA` or the detected level).
#[test]
fn set_max_isa_caps_active_isa() {
    let top = Isa::detect();
    assert_eq!(top, *Isa::runnable().last().unwrap());
    assert_eq!(
        top,
        *cpu_levels().last().unwrap(),
        "Isa::detect disagrees with CPUID"
    );
    for isa in Isa::ALL {
        assert_eq!(Isa::from_name(isa.name()), Some(isa));
        set_max_isa(Some(isa));
        assert_eq!(active_isa(), isa.min(top), "set_max_isa({isa})");
    }
    set_max_isa(None);
    let env_cap = std::env::var("KILN_ISA").ok().and_then(|s| Isa::from_name(&s));
    assert_eq!(active_isa(), env_cap.map_or(top, |c| c.min(top)));
}

const CHILD_ENV: &str = "KILN_KERNELS_TEST_ISA_PROBE";

/// Child half of `kiln_isa_env_caps_active_isa` (does nothing unless run by
/// it): prints `active_isa` under the inherited `KILN_ISA`, then under
/// `set_max_isa` caps, which take precedence.
#[test]
fn isa_probe_child() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let env = active_isa();
    set_max_isa(Some(Isa::Scalar));
    let scalar = active_isa();
    set_max_isa(Some(Isa::Avx512));
    let avx512 = active_isa();
    set_max_isa(None);
    println!(
        "kiln-isa-probe: env={env} set_scalar={scalar} set_avx512={avx512} cleared={}",
        active_isa()
    );
}

/// `KILN_ISA` caps `active_isa` (case and whitespace insensitive, unknown
/// values ignored, `set_max_isa` overriding it), checked in child processes so
/// no environment variable of this process changes under other tests.
#[test]
fn kiln_isa_env_caps_active_isa() {
    let exe = std::env::current_exe().expect("test binary path");
    let top = Isa::detect();
    let cases = [
        ("scalar", Some(Isa::Scalar)),
        ("avx2", Some(Isa::Avx2)),
        ("avx512", Some(Isa::Avx512)),
        ("avx512vnni", Some(Isa::Avx512Vnni)),
        ("avx512amx", Some(Isa::Avx512Amx)),
        ("AVX512AMX", Some(Isa::Avx512Amx)),
        ("AVX2", Some(Isa::Avx2)),
        (" Scalar\n", Some(Isa::Scalar)),
        ("sse9", None),
        ("", None),
    ];
    for (value, cap) in cases {
        let out = std::process::Command::new(&exe)
            .args(["isa_probe_child", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, "1")
            .env("KILN_ISA", value)
            .output()
            .expect("run the test binary");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "child failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = stdout
            .lines()
            .find_map(|l| l.split_once("kiln-isa-probe: ").map(|(_, probe)| probe))
            .unwrap_or_else(|| panic!("no probe output for KILN_ISA={value:?}: {stdout}"));
        let env = cap.map_or(top, |c| c.min(top));
        assert_eq!(
            line,
            format!(
                "env={env} set_scalar=scalar set_avx512={} cleared={env}",
                Isa::Avx512.min(top)
            ),
            "KILN_ISA={value:?}"
        );
    }
}

/// Regression: AveragePool with `count_include_pad = 1` and a bottom pad
/// larger than the top one (e.g. SAME_UPPER) divided the last window by too
/// small a count while `PoolGeom` had no bottom/right pads.
#[test]
fn pool_avg_count_include_pad_asymmetric_pads() {
    // 1x4x1 input, kernel 3x1, pads top 0 / bottom 1: outputs rows 0..3; the
    // last window covers rows 2, 3 and one pad row: (3 + 4 + 0) / 3.
    let g = PoolGeom {
        n: 1,
        h: 4,
        w: 1,
        c: 1,
        kh: 3,
        kw: 1,
        sh: 1,
        sw: 1,
        pt: 0,
        pl: 0,
        pb: 1,
        pr: 0,
        oh: 3,
        ow: 1,
        max: false,
        count_include_pad: true,
    };
    let x = [1.0f32, 2.0, 3.0, 4.0];
    let y = pool_run(Isa::Scalar, &g, &x, &[0..3]);
    // the kernel multiplies by the reciprocal of the count
    assert_eq!(&y[..3], &[2.0, 3.0, 7.0 * (1.0f32 / 3.0)]);
}
