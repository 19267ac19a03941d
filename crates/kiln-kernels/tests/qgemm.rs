//! The int8 GEMM against its scalar reference on every ISA level this CPU
//! can run (exact equality: integer arithmetic), and the scalar reference
//! against the naive definition `requant(bias + Σ (a - zx)·b)` written here
//! from `QConv`/`QGemm`'s spec (no zero-point folding, no packing).
//! `int8_gemm_ran_on_every_cpu_level` prints the levels that ran and fails if
//! the CPU has VNNI (or AVX2) and that path did not run.

use kiln_kernels::qgemm::{qgemm_level, qgemm_name, qgemm_u8, qgemm_u8_raw, QGemmArgs, QPackedB};
use kiln_kernels::quant::{requantize_u8, QOut, Requant};
use kiln_kernels::Isa;
use proptest::prelude::*;
use std::collections::BTreeSet;
use std::sync::Mutex;

static RAN: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());

/// Levels whose int8 kernels differ: scalar, AVX2, AVX-512 VNNI (AVX-512
/// without VNNI runs the AVX2 kernel).
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
    (
        1usize..40,
        1usize..80,
        1usize..80,
        0usize..3,
        0usize..5,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_flat_map(|(m, k, n, pad_a, pad_c, per_channel, has_bias)| {
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
        })
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

/// Runs `isa`'s kernel, optionally split in two calls by rows or panels.
fn run(c: &Case, isa: Isa, split: u8) -> Vec<u8> {
    let b = pack(c, isa);
    let ldc = c.n + c.pad_c;
    let mut y = vec![0xA5u8; c.m * ldc];
    if split == 0 {
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
        unsafe {
            if split == 1 {
                qgemm_u8_raw(&args, &b, 0..c.m / 2, 0..p);
                qgemm_u8_raw(&args, &b, c.m / 2..c.m, 0..p);
            } else {
                qgemm_u8_raw(&args, &b, 0..c.m, 0..p / 2);
                qgemm_u8_raw(&args, &b, 0..c.m, p / 2..p);
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
    RAN.lock().unwrap().insert(qgemm_name(isa));
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn qgemm_equals_scalar_reference_on_every_level(c in case(), split in 0u8..3) {
        let want = naive(&c);
        for isa in levels() {
            let got = run(&c, isa, split);
            prop_assert_eq!(&got, &want, "isa {}", isa);
        }
    }
}

/// Large reductions (K up to 1280 as in the classifier of MobileNetV2) with
/// extreme bytes: accumulators far from the test's small values.
#[test]
fn qgemm_long_reductions_extreme_values() {
    for (m, k, n) in [(13, 1280, 37), (1, 1280, 1000), (25, 960, 160), (50, 27, 32)] {
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
        let want = naive(&c);
        for isa in levels() {
            assert_eq!(run(&c, isa, 0), want, "isa {isa} m {m} k {k} n {n}");
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
