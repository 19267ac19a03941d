//! The int8 GEMM against its scalar reference on every ISA level this CPU
//! can run (exact equality: integer arithmetic), and the scalar reference
//! against the naive definition `requant(bias + Σ (a - zx)·b)` written here
//! from `QConv`/`QGemm`'s spec (no zero-point folding, no packing).
//! On the AMX level, both the dispatch (which picks AMX or VNNI by shape)
//! and the AMX kernel itself, for every shape, are checked.
//! `int8_gemm_ran_on_every_cpu_level` prints the levels that ran and fails if
//! the CPU has AMX (and the OS grants it), VNNI or AVX2 and that path did not
//! run.

mod common;

use common::cpu_has_amx;
use kiln_kernels::qgemm::{qgemm_level, qgemm_name, qgemm_u8, qgemm_u8_raw, QGemmArgs, QPackedB};
use kiln_kernels::quant::{requantize_u8, QOut, Requant};
use kiln_kernels::Isa;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use std::collections::BTreeSet;
use std::sync::Mutex;

static RAN: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());

/// Levels whose int8 kernels differ: scalar, AVX2, AVX-512 VNNI, AMX
/// (AVX-512 without VNNI runs the AVX2 kernel).
fn levels() -> Vec<Isa> {
    let mut v: Vec<Isa> = Isa::runnable().into_iter().map(qgemm_level).collect();
    v.dedup();
    v
}

fn cpu_has_vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[derive(Debug, Clone)]
struct Case {
    m: usize,
    k: usize,
    n: usize,
    a: Vec<u8>,
    b: Vec<i8>,
    bias: Option<Vec<i32>>,
    zx: i32,
    mult: Vec<i32>,
    exp: Vec<i32>,
    out: QOut,
    pad_a: usize,
    pad_c: usize,
}

fn case() -> impl Strategy<Value = Case> {
    case_sized(1usize..40, 1usize..80, 1usize..80)
}

fn case_sized(
    m: std::ops::Range<usize>,
    k: std::ops::Range<usize>,
    n: std::ops::Range<usize>,
) -> impl Strategy<Value = Case> {
    (m, k, n, 0usize..3, 0usize..5, any::<bool>(), any::<bool>()).prop_flat_map(
        |(m, k, n, pad_a, pad_c, per_channel, has_bias)| {
            let nm = if per_channel { n } else { 1 };
            (
                prop::collection::vec(any::<u8>(), m * (k + pad_a)),
                prop::collection::vec(any::<i8>(), k * n),
                prop::collection::vec(-100_000i32..100_000, n),
                0i32..256,
                prop::collection::vec((1i32 << 30)..i32::MAX, nm),
                prop::collection::vec(-20i32..3, nm),
                (0i32..256, 0i32..256, 0i32..256),
            )
                .prop_map(move |(a, b, bias, zx, mult, exp, (zy, l, h))| Case {
                    m,
                    k,
                    n,
                    a,
                    b,
                    bias: has_bias.then_some(bias),
                    zx,
                    mult,
                    exp,
                    out: QOut::checked(zy, l.min(h), l.max(h)),
                    pad_a,
                    pad_c,
                })
        },
    )
}

/// The definition, straight from the spec.
fn naive(c: &Case) -> Vec<u8> {
    let mut y = vec![0u8; c.m * c.n];
    for i in 0..c.m {
        for j in 0..c.n {
            let mut acc = c.bias.as_ref().map_or(0, |b| b[j]);
            for kk in 0..c.k {
                let x = c.a[i * (c.k + c.pad_a) + kk] as i32 - c.zx;
                acc = acc.wrapping_add(x * c.b[kk * c.n + j] as i32);
            }
            let (m, e) = if c.mult.len() == 1 {
                (c.mult[0], c.exp[0])
            } else {
                (c.mult[j], c.exp[j])
            };
            y[i * c.n + j] = requantize_u8(acc, m, e, &c.out);
        }
    }
    y
}

fn pack(c: &Case, isa: Isa) -> QPackedB {
    let rq = Requant::new(c.mult.len(), &c.mult, &c.exp, c.out);
    QPackedB::pack(
        isa,
        c.k,
        c.n,
        |kk, j| c.b[kk * c.n + j],
        c.bias.as_deref(),
        c.zx,
        &rq,
    )
}

/// Which kernel [`run`] calls.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Entry {
    /// `qgemm_u8` / `qgemm_u8_raw` (the per-call choice of kernel).
    Dispatch,
    /// `qgemm_u8i8_avx512amx_32x32` directly, whatever the shape.
    #[cfg(target_arch = "x86_64")]
    Amx,
}

/// Runs `isa`'s kernel, optionally split in two calls by rows or panels.
fn run(c: &Case, isa: Isa, split: u8) -> Vec<u8> {
    run_on(c, isa, split, Entry::Dispatch)
}

/// The AMX kernel on every shape (its VNNI fallbacks included).
#[cfg(target_arch = "x86_64")]
fn run_amx(c: &Case, split: u8) -> Vec<u8> {
    run_on(c, Isa::Avx512Amx, split, Entry::Amx)
}

fn run_on(c: &Case, isa: Isa, split: u8, entry: Entry) -> Vec<u8> {
    let b = pack(c, isa);
    let call = |args: &QGemmArgs, rows: std::ops::Range<usize>, panels: std::ops::Range<usize>| unsafe {
        match entry {
            Entry::Dispatch => qgemm_u8_raw(args, &b, rows, panels),
            #[cfg(target_arch = "x86_64")]
            Entry::Amx => kiln_kernels::qgemm::qgemm_u8i8_avx512amx_32x32(args, &b, rows, panels),
        }
    };
    let ldc = c.n + c.pad_c;
    let mut y = vec![0xA5u8; c.m * ldc];
    if split == 0 && entry == Entry::Dispatch {
        qgemm_u8(c.m, &c.a, c.k + c.pad_a, &b, &mut y, ldc);
    } else {
        let args = QGemmArgs {
            m: c.m,
            a: c.a.as_ptr(),
            lda: c.k + c.pad_a,
            c: y.as_mut_ptr(),
            ldc,
        };
        let p = b.panels();
        match split {
            0 => call(&args, 0..c.m, 0..p),
            1 => {
                call(&args, 0..c.m / 2, 0..p);
                call(&args, c.m / 2..c.m, 0..p);
            }
            _ => {
                call(&args, 0..c.m, 0..p / 2);
                call(&args, 0..c.m, p / 2..p);
            }
        }
    }
    // Row padding untouched, then compact.
    let mut out = Vec::with_capacity(c.m * c.n);
    for i in 0..c.m {
        assert!(
            y[i * ldc + c.n..(i + 1) * ldc].iter().all(|&v| v == 0xA5),
            "wrote past n"
        );
        out.extend_from_slice(&y[i * ldc..i * ldc + c.n]);
    }
    let name = match entry {
        // At the AMX level the dispatch may pick either kernel.
        Entry::Dispatch if isa == Isa::Avx512Amx => "qgemm_u8_raw(avx512amx)",
        _ => qgemm_name(isa),
    };
    RAN.lock().unwrap().insert(name);
    out
}

/// [`run`] on every level, and the AMX kernel itself where it runs.
fn check_all_levels(c: &Case, split: u8) -> Result<(), TestCaseError> {
    let want = naive(c);
    for isa in levels() {
        let got = run(c, isa, split);
        prop_assert_eq!(&got, &want, "isa {} m {} k {} n {}", isa, c.m, c.k, c.n);
        #[cfg(target_arch = "x86_64")]
        if isa == Isa::Avx512Amx {
            let got = run_amx(c, split);
            prop_assert_eq!(&got, &want, "AMX kernel, m {} k {} n {}", c.m, c.k, c.n);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn qgemm_equals_scalar_reference_on_every_level(c in case(), split in 0u8..3) {
        check_all_levels(&c, split)?;
    }

    /// Shapes with whole 32- and 16-row AMX blocks, several 64-byte steps of
    /// `K` and every kind of remainder (rows, `K % 64`, `K % 4`, columns).
    #[test]
    fn qgemm_amx_shapes_equal_scalar_reference(c in case_sized(16usize..100, 1usize..300, 1usize..100), split in 0u8..3) {
        check_all_levels(&c, split)?;
    }
}

/// Large reductions (K up to 1280 as in the classifier of MobileNetV2) with
/// extreme bytes: accumulators far from the test's small values.
#[test]
fn qgemm_long_reductions_extreme_values() {
    for (m, k, n) in [
        (13, 1280, 37),
        (1, 1280, 1000),
        (25, 960, 160),
        (50, 27, 32),
        (70, 1280, 37),
        (96, 4608, 40),
        (33, 64, 48),
        (48, 130, 17),
    ] {
        let a: Vec<u8> = (0..m * k)
            .map(|i| if i % 3 == 0 { 255 } else { (i * 7 % 256) as u8 })
            .collect();
        let b: Vec<i8> = (0..k * n)
            .map(|i| {
                if i % 5 == 0 {
                    -128
                } else {
                    (i * 13 % 256) as u8 as i8
                }
            })
            .collect();
        let c = Case {
            m,
            k,
            n,
            a,
            b,
            bias: Some((0..n as i32).map(|j| j * 1000 - 7000).collect()),
            zx: 131,
            mult: (0..n as i32).map(|j| (1 << 30) + j * 12345).collect(),
            exp: (0..n as i32).map(|j| -12 - j % 7).collect(),
            out: QOut::checked(3, 0, 255),
            pad_a: 0,
            pad_c: 0,
        };
        check_all_levels(&c, 0).unwrap();
    }
}

/// The AMX kernel's ways of reading `A`: in place with tile rows aligned
/// (64-byte steps, or `K <= 64` a power of two), in place across cache
/// lines (one or two panels), copied (three or more panels, or `K` not
/// whole steps), by placing `A` at chosen offsets from a 64-byte boundary.
#[cfg(target_arch = "x86_64")]
#[test]
fn qgemm_amx_reads_a_aligned_unaligned_and_copied() {
    if !cpu_has_amx() {
        return;
    }
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for (m, k, lda, n) in [
        (64, 128, 128, 96),
        (64, 128, 128, 40),
        (48, 64, 64, 64),
        (48, 32, 32, 100),
        (33, 16, 48, 20),
        (64, 192, 200, 70),
        (32, 60, 64, 33),
        (50, 130, 192, 64),
        (40, 7, 64, 96),
    ] {
        for offset in [0usize, 4, 16, 32] {
            let mut buf = vec![0u8; m * lda + 128];
            let base = buf.as_ptr().align_offset(64) + offset;
            for v in &mut buf[base..] {
                *v = rnd() as u8;
            }
            let a = buf[base..base + (m - 1) * lda + k].to_vec();
            let mut a_full = a.clone();
            a_full.resize(m * lda, 0);
            let c = Case {
                m,
                k,
                n,
                a: a_full,
                b: (0..k * n).map(|_| rnd() as i8).collect(),
                bias: Some((0..n).map(|_| (rnd() % 200_001) as i32 - 100_000).collect()),
                zx: (rnd() % 256) as i32,
                mult: vec![(1 << 30) + (rnd() % (1 << 30)) as i32],
                exp: vec![-9],
                out: QOut::checked(7, 0, 255),
                pad_a: lda - k,
                pad_c: 0,
            };
            let want = naive(&c);
            let b = pack(&c, Isa::Avx512Amx);
            let mut y = vec![0u8; m * n];
            let args = QGemmArgs {
                m,
                a: buf[base..].as_ptr(),
                lda,
                c: y.as_mut_ptr(),
                ldc: n,
            };
            // SAFETY: A has m rows of stride lda (k bytes each) at `base`, C is m x n.
            unsafe { kiln_kernels::qgemm::qgemm_u8i8_avx512amx_32x32(&args, &b, 0..m, 0..b.panels()) };
            assert_eq!(y, want, "m {m} k {k} lda {lda} n {n} offset {offset}");
        }
    }
}

#[test]
fn int8_gemm_ran_on_every_cpu_level() {
    qgemm_long_reductions_extreme_values();
    let ran = RAN.lock().unwrap().clone();
    println!(
        "int8 GEMM kernels tested: {}",
        ran.iter().cloned().collect::<Vec<_>>().join(", ")
    );
    if cpu_has_amx() {
        assert!(
            ran.contains("qgemm_u8i8_avx512amx_32x32"),
            "the CPU and OS support AMX but the AMX kernel did not run"
        );
    }
    if cpu_has_vnni() {
        assert!(
            ran.contains("qgemm_u8i8_avx512vnni_12x32"),
            "the CPU has AVX-512 VNNI but the VNNI kernel did not run"
        );
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        assert!(
            ran.contains("qgemm_u8i8_avx2_6x16"),
            "the CPU has AVX2 but the AVX2 kernel did not run"
        );
    }
    assert!(ran.contains("qgemm_u8i8_scalar"));
}
