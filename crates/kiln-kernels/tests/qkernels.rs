//! Property tests of the integer (8-bit) kernels: every kernel against its
//! scalar reference on every ISA level this CPU can run, with EXACT equality
//! (integer kernels promise the same bytes on every level), and each scalar
//! reference against kiln's reference ops (`kiln_ir::ops::eval_node` on
//! kiln's `QConv`, `QAdd`, `QLut`, `QGlobalAveragePool` and ONNX
//! `MaxPool`, `QuantizeLinear`, `DequantizeLinear`), in both the `uint8`
//! and the `int8` encoding (kernels see `int8` values `+ 128`).
//!
//! Splitting rows / batch items / elements over several calls must give the
//! same bytes as one call, and outputs outside the computed range (and a
//! trailing guard) must be left untouched. Requantization parameters range
//! over the whole domain (`m` in `[2^30, 2^31)` or 0, `e` in `-31..=30`,
//! any zero point and clamp), mostly realistic ones. `PROPTEST_CASES`
//! overrides the per-property case counts.
// Runners take the list of ranges to call a kernel on, often just one.
#![allow(
    clippy::needless_range_loop,
    clippy::too_many_arguments,
    clippy::single_range_in_vec_init
)]

use kiln_ir::{Attribute, DType, Node, Tensor};
use kiln_kernels::pool::PoolGeom;
use kiln_kernels::qdwconv::{qdwconv_u8_raw, PackedQDw, QDwGeom};
use kiln_kernels::qeltwise::{
    add_u8, dequantize_u8_f32, lut_u8, mul_u8, quantize_f32_u8, QAddParams, QMulParams,
};
use kiln_kernels::qpool::{global_avg_pool_u8, maxpool_u8};
use kiln_kernels::quant::{QOut, Requant};
use kiln_kernels::Isa;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use std::collections::BTreeSet;
use std::io::Write;
use std::ops::Range;
use std::sync::{Mutex, PoisonError};

// ---------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------

/// ISA levels whose kernels ran in this test process.
static ISAS_RAN: Mutex<BTreeSet<Isa>> = Mutex::new(BTreeSet::new());

fn mark(isa: Isa) {
    ISAS_RAN
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(isa);
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

/// Value of untouched output bytes.
const SENTINEL: u8 = 0xA5;
/// Trailing output bytes that no kernel may write.
const GUARD: usize = 37;

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
    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % (hi - lo + 1) as u64) as i64
    }
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
    /// Bytes, one in four runs of a repeated extreme (0, 255) or middle value.
    fn bytes_skewed(&mut self, len: usize) -> Vec<u8> {
        let mode = self.below(4);
        (0..len)
            .map(|_| match mode {
                0 => [0u8, 255, 128][self.below(3)],
                _ => self.next() as u8,
            })
            .collect()
    }
}

/// A fixed-point multiplier and exponent: mostly a realistic real multiplier
/// (`2^-20 .. 2^2`), sometimes the extremes of the domain or 0; one in four
/// a power of two or with few significant bits, so that exact ties
/// (`x.5`, rounded to even) occur.
fn rand_mult(rng: &mut Rng) -> (i32, i32) {
    let m = match rng.below(8) {
        0 => 1i64 << 30,
        1 => (1i64 << 30) + (rng.range(1, 63) << rng.range(10, 23)),
        _ => (1i64 << 30) + rng.range(0, (1 << 30) - 1),
    };
    let e = match rng.below(10) {
        0 => rng.range(-31, 30),
        1 => [-31, 30, 0, 1][rng.below(4)],
        _ => rng.range(-20, 2),
    };
    let m = if rng.below(40) == 0 { 0 } else { m };
    (m as i32, e as i32)
}

/// Output zero point and clamp (sometimes a fused Relu: `lo = zy`).
fn rand_out(rng: &mut Rng) -> QOut {
    let zy = rng.range(0, 255) as i32;
    let (lo, hi) = match rng.below(4) {
        0 => (0, 255),
        1 => (zy, 255),
        _ => {
            let a = rng.range(0, 255) as i32;
            let b = rng.range(0, 255) as i32;
            (a.min(b), a.max(b))
        }
    };
    QOut::checked(zy, lo, hi)
}

/// A requantization for `n` channels: per channel or per tensor.
fn rand_requant(rng: &mut Rng, n: usize, out: QOut) -> Requant {
    let k = if rng.below(3) == 0 { 1 } else { n };
    let (mult, exp): (Vec<i32>, Vec<i32>) = (0..k).map(|_| rand_mult(rng)).unzip();
    Requant::new(n, &mult, &exp, out)
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

/// Equal byte buffers.
fn expect_eq(what: &str, isa: Isa, got: &[u8], want: &[u8]) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.len(), want.len(), "{}", what);
    expect_all(
        what,
        isa,
        got.len(),
        |i| got[i] == want[i],
        |i| format!("index {i}: {} vs {}", got[i], want[i]),
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

/// Checks a kernel on every level: whole run vs scalar, split runs vs whole,
/// one piece alone writes its part only. `run(isa, parts)` returns the output
/// buffer (`len` values then the guard, every value `sentinel` before the
/// call); `unit` is the output length of one index of the split dimension
/// (of `total` indices). Returns the scalar reference's output.
fn check_levels<T: Copy + PartialEq + std::fmt::Debug>(
    what: &str,
    (len, unit, total): (usize, usize, usize),
    sentinel: T,
    cuts: (u32, u32),
    same: impl Fn(T, T) -> bool,
    run: impl Fn(Isa, &[Range<usize>]) -> Vec<T>,
) -> Result<Vec<T>, TestCaseError> {
    let reference = run(Isa::Scalar, &[0..total]);
    prop_assert_eq!(reference.len(), len + GUARD, "{}", what);
    prop_assert!(
        reference[len..].iter().all(|&v| same(v, sentinel)),
        "{}: guard written",
        what
    );
    for isa in Isa::runnable() {
        let whole = run(isa, &[0..total]);
        expect_all(
            &format!("{what} vs scalar reference"),
            isa,
            whole.len(),
            |i| same(whole[i], reference[i]),
            |i| format!("index {i}: {:?} vs {:?}", whole[i], reference[i]),
        )?;
        let parts = pieces(total, cuts.0, cuts.1);
        let split = run(isa, &parts);
        expect_all(
            &format!("{what} split as {parts:?}"),
            isa,
            split.len(),
            |i| same(split[i], whole[i]),
            |i| format!("index {i}: {:?} vs {:?}", split[i], whole[i]),
        )?;
        let one = run(isa, &parts[1..2]);
        let inside = |i: usize| i < len && parts[1].contains(&(i / unit));
        expect_all(
            &format!("{what} range {:?} alone", parts[1]),
            isa,
            one.len(),
            |i| same(one[i], if inside(i) { whole[i] } else { sentinel }),
            |i| {
                format!(
                    "index {i} (inside: {}): {:?}, whole {:?}",
                    inside(i),
                    one[i],
                    whole[i]
                )
            },
        )?;
        mark(isa);
    }
    Ok(reference)
}

/// [`check_levels`] for byte outputs.
fn check_bytes(
    what: &str,
    (len, unit, total): (usize, usize, usize),
    cuts: (u32, u32),
    run: impl Fn(Isa, &[Range<usize>]) -> Vec<u8>,
) -> Result<Vec<u8>, TestCaseError> {
    check_levels(what, (len, unit, total), SENTINEL, cuts, |a, b| a == b, run)
}

// ---------------------------------------------------------------------------
// kiln_ir reference ops
// ---------------------------------------------------------------------------

fn node(op: &str, domain: &str, n_in: usize, attrs: Vec<(&str, Attribute)>) -> Node {
    let ins: Vec<String> = (0..n_in).map(|i| format!("i{i}")).collect();
    let ins: Vec<&str> = ins.iter().map(|s| s.as_str()).collect();
    let mut nd = Node::new("n", op, &ins, &["y"]);
    nd.domain = domain.to_string();
    for (k, v) in attrs {
        nd.attrs.insert(k.to_string(), v);
    }
    nd
}

fn eval(nd: &Node, opset: i64, inputs: &[Option<&Tensor>]) -> Tensor {
    kiln_ir::ops::eval_node(nd, opset, inputs)
        .unwrap_or_else(|e| panic!("reference {}: {e}", nd.op_type))
        .remove(0)
}

fn int(v: i64) -> Attribute {
    Attribute::Int(v)
}

fn ints(v: &[i64]) -> Attribute {
    Attribute::Ints(v.to_vec())
}

/// An 8-bit tensor from stored bytes: `uint8` as is, `int8` minus 128.
fn q8(shape: Vec<usize>, v: &[u8], signed: bool) -> Tensor {
    if signed {
        Tensor::from_vec(
            shape,
            v.iter().map(|&b| (b as i32 - 128) as i8).collect::<Vec<_>>(),
        )
        .unwrap()
    } else {
        Tensor::from_vec(shape, v.to_vec()).unwrap()
    }
}

/// Stored bytes of an 8-bit tensor.
fn stored(t: &Tensor) -> Vec<u8> {
    match t.dtype() {
        DType::U8 => t.as_slice::<u8>().unwrap().to_vec(),
        DType::I8 => t
            .as_slice::<i8>()
            .unwrap()
            .iter()
            .map(|&v| (v as i32 + 128) as u8)
            .collect(),
        d => panic!("not 8-bit: {d:?}"),
    }
}

/// A stored-encoding parameter (zero point, clamp bound) in the model's type.
fn model_val(v: i32, signed: bool) -> i64 {
    v as i64 - if signed { 128 } else { 0 }
}

/// kiln's output attributes (`output_dtype`, `y_zero_point`, `y_min`,
/// `y_max`) for `out` in the model's type.
fn out_attrs(out: &QOut, signed: bool) -> Vec<(&'static str, Attribute)> {
    vec![
        ("output_dtype", int(if signed { 3 } else { 2 })),
        ("y_zero_point", int(model_val(out.zy, signed))),
        ("y_min", int(model_val(out.lo, signed))),
        ("y_max", int(model_val(out.hi, signed))),
    ]
}

fn mult_attrs(rq: &Requant) -> (Attribute, Attribute) {
    let m: Vec<i64> = rq.mult[..rq.n].iter().map(|&v| v as i64).collect();
    let e: Vec<i64> = rq.exp[..rq.n].iter().map(|&v| v as i64).collect();
    (ints(&m), ints(&e))
}

// ---------------------------------------------------------------------------
// Depthwise convolution
// ---------------------------------------------------------------------------

struct QDw {
    g: QDwGeom,
    /// Bottom and right padding.
    pb: usize,
    pr: usize,
    /// `[n, h, w, c]`.
    x: Vec<u8>,
    /// `[c, 1, kh, kw]`.
    w: Vec<i8>,
    bias: Option<Vec<i32>>,
    zx: i32,
    rq: Requant,
}

impl QDw {
    fn out_len(&self) -> usize {
        self.g.rows() * self.g.ow * self.g.c
    }

    fn run(&self, isa: Isa, parts: &[Range<usize>]) -> Vec<u8> {
        let g = &self.g;
        let pw = PackedQDw::pack(
            isa,
            g.c,
            g.kh,
            g.kw,
            &self.w,
            self.bias.as_deref(),
            self.zx,
            self.rq.clone(),
        );
        assert_eq!(pw.isa, isa.int8_level());
        let mut y = vec![SENTINEL; self.out_len() + GUARD];
        for rows in parts {
            // SAFETY: buffers sized for the geometry.
            unsafe { qdwconv_u8_raw(g, &pw, self.x.as_ptr(), y.as_mut_ptr(), rows.clone()) };
        }
        y
    }

    /// kiln_ir `QConv` (group = C, NCHW) on the same data, NHWC stored bytes.
    fn reference(&self, signed: bool) -> Vec<u8> {
        let g = &self.g;
        let mut xn = vec![0u8; self.x.len()];
        for b in 0..g.n {
            for i in 0..g.h * g.w {
                for ch in 0..g.c {
                    xn[(b * g.c + ch) * g.h * g.w + i] = self.x[(b * g.h * g.w + i) * g.c + ch];
                }
            }
        }
        let x = q8(vec![g.n, g.c, g.h, g.w], &xn, signed);
        let w = Tensor::from_vec(vec![g.c, 1, g.kh, g.kw], self.w.clone()).unwrap();
        let bias = self
            .bias
            .as_ref()
            .map(|b| Tensor::from_vec(vec![g.c], b.clone()).unwrap());
        let (m, e) = mult_attrs(&self.rq);
        let mut attrs = vec![
            ("group", int(g.c as i64)),
            ("kernel_shape", ints(&[g.kh as i64, g.kw as i64])),
            ("strides", ints(&[g.sh as i64, g.sw as i64])),
            (
                "pads",
                ints(&[g.pt as i64, g.pl as i64, self.pb as i64, self.pr as i64]),
            ),
            ("x_zero_point", int(model_val(self.zx, signed))),
            ("w_zero_point", ints(&[0])),
            ("multiplier", m),
            ("shift", e),
        ];
        attrs.extend(out_attrs(&self.rq.out, signed));
        let nd = node("QConv", "kiln", 3, attrs);
        let y = eval(&nd, 13, &[Some(&x), Some(&w), bias.as_ref()]);
        assert_eq!(y.shape(), &[g.n, g.c, g.oh, g.ow]);
        let yn = stored(&y);
        let mut out = vec![0u8; self.out_len()];
        for b in 0..g.n {
            for i in 0..g.oh * g.ow {
                for ch in 0..g.c {
                    out[(b * g.oh * g.ow + i) * g.c + ch] = yn[(b * g.c + ch) * g.oh * g.ow + i];
                }
            }
        }
        out
    }
}

fn qdw_case(
    (n, h, w, c): (usize, usize, usize, usize),
    (kmode, kh_any, kw_any): (u8, usize, usize),
    (sh, sw): (usize, usize),
    pads: (usize, usize, usize, usize),
    bias: bool,
    seed: u64,
) -> QDw {
    // Mostly square 3x3 / 5x5; one case in five any kh, kw in 1..=7.
    let (kh, kw) = match kmode {
        0..=3 => (3, 3),
        4..=7 => (5, 5),
        _ => (kh_any, kw_any),
    };
    let (pt, pb) = (pads.0 % (kh / 2 + 1), pads.1 % (kh / 2 + 1));
    let (pl, pr) = (pads.2 % (kw / 2 + 1), pads.3 % (kw / 2 + 1));
    let h = h.max(kh.saturating_sub(pt + pb)).max(1);
    let w = w.max(kw.saturating_sub(pl + pr)).max(1);
    let g = QDwGeom {
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
        oh: (h + pt + pb - kh) / sh + 1,
        ow: (w + pl + pr - kw) / sw + 1,
    };
    let mut rng = Rng::new(seed);
    let x = rng.bytes_skewed(n * h * w * c);
    let wts: Vec<i8> = rng
        .bytes_skewed(c * kh * kw)
        .into_iter()
        .map(|v| v as i8)
        .collect();
    let bias = bias.then(|| (0..c).map(|_| rng.range(-100_000, 100_000) as i32).collect());
    let zx = rng.range(0, 255) as i32;
    let out = rand_out(&mut rng);
    let rq = rand_requant(&mut rng, c, out);
    QDw {
        g,
        pb,
        pr,
        x,
        w: wts,
        bias,
        zx,
        rq,
    }
}

proptest! {
    #![proptest_config(config(160))]

    /// `qdwconv_u8_raw` on every level equals the scalar reference exactly:
    /// kernels 3x3 / 5x5 (sometimes any 1..=7 by 1..=7), strides 1..=2,
    /// pads 0..=k/2 per side, channels across the 64- and 32-channel blocks
    /// and their tails, row splits.
    #[test]
    fn qdwconv_matches_scalar_on_every_isa(
        dims in (1usize..=2, 1usize..=11, 1usize..=13, prop_oneof![1usize..=40, 40usize..=200]),
        kernel in (0u8..10, 1usize..=7, 1usize..=7),
        steps in (1usize..=2, 1usize..=2),
        pads in (0usize..=3, 0usize..=3, 0usize..=3, 0usize..=3),
        bias in any::<bool>(),
        cuts in (0u32..=1000, 0u32..=1000),
        seed in any::<u64>(),
    ) {
        let d = qdw_case(dims, kernel, steps, pads, bias, seed);
        let unit = d.g.ow * d.g.c;
        check_bytes(&format!("qdwconv {:?}", d.g), (d.out_len(), unit, d.g.rows()), cuts, |isa, parts| {
            d.run(isa, parts)
        })?;
    }

    /// 16 and 32 channels at stride 1 along W (the AVX-512 kernels put 4 or
    /// 2 adjacent pixels in a register): rows up to 40 pixels wide.
    #[test]
    fn qdwconv_few_channels_match_scalar_on_every_isa(
        dims in (1usize..=2, 1usize..=6, 1usize..=40, prop_oneof![Just(16usize), Just(32)]),
        kernel in (0u8..10, 1usize..=7, 1usize..=7),
        sh in 1usize..=2,
        pads in (0usize..=3, 0usize..=3, 0usize..=3, 0usize..=3),
        bias in any::<bool>(),
        cuts in (0u32..=1000, 0u32..=1000),
        seed in any::<u64>(),
    ) {
        let d = qdw_case(dims, kernel, (sh, 1), pads, bias, seed);
        let unit = d.g.ow * d.g.c;
        check_bytes(&format!("qdwconv {:?}", d.g), (d.out_len(), unit, d.g.rows()), cuts, |isa, parts| {
            d.run(isa, parts)
        })?;
    }

    /// The scalar reference equals kiln_ir's `QConv` (group = C) in the
    /// uint8 and the int8 encoding.
    #[test]
    fn qdwconv_scalar_matches_kiln_ir_qconv(
        dims in (1usize..=2, 1usize..=9, 1usize..=9, 1usize..=20),
        kernel in (0u8..10, 1usize..=7, 1usize..=7),
        steps in (1usize..=3, 1usize..=3),
        pads in (0usize..=3, 0usize..=3, 0usize..=3, 0usize..=3),
        bias in any::<bool>(),
        signed in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let d = qdw_case(dims, kernel, steps, pads, bias, seed);
        // kiln_ir's depthwise QConv (stride 1 along W) panics when a kernel
        // column misses every output (left padding beyond the output width,
        // or the kernel reaching past the input end after the padding):
        // slicing out of range in `qdepthwise_body`. Skip those degenerate
        // shapes.
        let g = &d.g;
        prop_assume!(!(g.sw == 1 && (g.pl > g.ow || g.kw - 1 > g.pl + g.w)));
        let got = d.run(Isa::Scalar, &[0..d.g.rows()]);
        let want = d.reference(signed);
        expect_eq(&format!("qdwconv scalar vs QConv {:?}", d.g), Isa::Scalar, &got[..d.out_len()], &want)?;
    }
}

/// Large accumulators: every input and weight at an extreme, a 7x7 kernel,
/// huge and tiny multipliers (the accumulator clamp of the SIMD epilogue).
#[test]
fn qdwconv_extremes_on_every_isa() {
    for (xv, wv, zx) in [(255u8, -128i8, 0), (0, -128, 255), (255, 127, 0), (0, 127, 255)] {
        for (m, e) in [
            (i32::MAX, 30),
            (1 << 30, -31),
            (1 << 30, 0),
            (0x7654_3210, -12),
            (0, 0),
        ] {
            let g = QDwGeom {
                n: 1,
                h: 9,
                w: 9,
                c: 70,
                kh: 7,
                kw: 7,
                sh: 1,
                sw: 1,
                pt: 3,
                pl: 3,
                oh: 9,
                ow: 9,
            };
            let out = QOut::checked(128, 0, 255);
            let d = QDw {
                g,
                pb: 3,
                pr: 3,
                x: vec![xv; 81 * 70],
                w: vec![wv; 70 * 49],
                bias: Some(vec![i32::MAX - 5; 70]),
                zx,
                rq: Requant::new(70, &[m], &[e], out),
            };
            let want = d.run(Isa::Scalar, &[0..9]);
            assert_eq!(
                &want[..d.out_len()],
                &d.reference(false)[..],
                "scalar vs QConv, m {m} e {e}"
            );
            for isa in Isa::runnable() {
                assert_eq!(d.run(isa, &[0..9]), want, "{isa} x {xv} w {wv} m {m} e {e}");
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Pooling
// ---------------------------------------------------------------------------

struct MaxPool {
    g: PoolGeom,
    x: Vec<u8>,
}

impl MaxPool {
    fn out_len(&self) -> usize {
        self.g.n * self.g.oh * self.g.ow * self.g.c
    }

    fn run(&self, isa: Isa, parts: &[Range<usize>]) -> Vec<u8> {
        let mut y = vec![SENTINEL; self.out_len() + GUARD];
        for rows in parts {
            // SAFETY: buffers sized for the geometry.
            unsafe { maxpool_u8(isa, &self.g, self.x.as_ptr(), y.as_mut_ptr(), rows.clone()) };
        }
        y
    }

    /// ONNX `MaxPool` (opset 12, NCHW) in kiln_ir, NHWC stored bytes.
    fn reference(&self, signed: bool) -> Vec<u8> {
        let g = &self.g;
        let x = q8(
            vec![g.n, g.c, g.h, g.w],
            &nhwc_to_nchw(&self.x, g.n, g.h * g.w, g.c),
            signed,
        );
        let attrs = vec![
            ("kernel_shape", ints(&[g.kh as i64, g.kw as i64])),
            ("strides", ints(&[g.sh as i64, g.sw as i64])),
            (
                "pads",
                ints(&[g.pt as i64, g.pl as i64, g.pb as i64, g.pr as i64]),
            ),
        ];
        let y = eval(&node("MaxPool", "", 1, attrs), 12, &[Some(&x)]);
        assert_eq!(y.shape(), &[g.n, g.c, g.oh, g.ow]);
        nchw_to_nhwc(&stored(&y), g.n, g.oh * g.ow, g.c)
    }
}

/// `[n, c, hw]` from `[n, hw, c]`.
fn nhwc_to_nchw(v: &[u8], n: usize, hw: usize, c: usize) -> Vec<u8> {
    let mut o = vec![0u8; v.len()];
    for b in 0..n {
        for p in 0..hw {
            for ch in 0..c {
                o[(b * c + ch) * hw + p] = v[(b * hw + p) * c + ch];
            }
        }
    }
    o
}

/// `[n, hw, c]` from `[n, c, hw]`.
fn nchw_to_nhwc(v: &[u8], n: usize, hw: usize, c: usize) -> Vec<u8> {
    let mut o = vec![0u8; v.len()];
    for b in 0..n {
        for p in 0..hw {
            for ch in 0..c {
                o[(b * hw + p) * c + ch] = v[(b * c + ch) * hw + p];
            }
        }
    }
    o
}

fn maxpool_case(
    (n, h, w, c): (usize, usize, usize, usize),
    (kh, kw, sh, sw): (usize, usize, usize, usize),
    pads: (usize, usize, usize, usize),
    seed: u64,
) -> MaxPool {
    // ONNX: padding smaller than the window.
    let (pt, pb, pl, pr) = (pads.0 % kh, pads.1 % kh, pads.2 % kw, pads.3 % kw);
    let h = h.max(kh.saturating_sub(pt + pb)).max(1);
    let w = w.max(kw.saturating_sub(pl + pr)).max(1);
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
        oh: (h + pt + pb - kh) / sh + 1,
        ow: (w + pl + pr - kw) / sw + 1,
        max: true,
        count_include_pad: false,
    };
    let x = Rng::new(seed).bytes_skewed(n * h * w * c);
    MaxPool { g, x }
}

struct Gap {
    n: usize,
    hw: usize,
    c: usize,
    x: Vec<u8>,
    zx: i32,
    /// `x_scale`, `y_scale` of the reference op.
    scales: (f32, f32),
    rq: Requant,
}

impl Gap {
    fn run(&self, isa: Isa, parts: &[Range<usize>]) -> Vec<u8> {
        let mut y = vec![SENTINEL; self.n * self.c + GUARD];
        for batch in parts {
            // SAFETY: buffers sized for the shapes.
            unsafe {
                global_avg_pool_u8(
                    isa,
                    self.x.as_ptr(),
                    y.as_mut_ptr(),
                    self.hw,
                    self.c,
                    self.zx,
                    &self.rq,
                    batch.clone(),
                )
            };
        }
        y
    }

    /// kiln_ir `QGlobalAveragePool` on `[n, c, hw, 1]`.
    fn reference(&self, signed: bool) -> Vec<u8> {
        let x = q8(
            vec![self.n, self.c, self.hw, 1],
            &nhwc_to_nchw(&self.x, self.n, self.hw, self.c),
            signed,
        );
        let mut attrs = vec![
            ("x_zero_point", int(model_val(self.zx, signed))),
            ("x_scale", Attribute::Float(self.scales.0)),
            ("y_scale", Attribute::Float(self.scales.1)),
        ];
        attrs.extend(out_attrs(&self.rq.out, signed));
        let y = eval(&node("QGlobalAveragePool", "kiln", 1, attrs), 13, &[Some(&x)]);
        assert_eq!(y.shape(), &[self.n, self.c, 1, 1]);
        stored(&y)
    }
}

fn gap_case((n, hw, c): (usize, usize, usize), per_channel: bool, seed: u64) -> Gap {
    let mut rng = Rng::new(seed);
    let x = rng.bytes_skewed(n * hw * c);
    let zx = rng.range(0, 255) as i32;
    let sx = (rng.range(1, 1000) as f32) * 1e-3;
    let sy = (rng.range(1, 1000) as f32) * 1e-3;
    let out = rand_out(&mut rng);
    // As the reference derives it (f32 attributes, widened).
    let (m, e) = kiln_ir::quant::quantize_multiplier(sx as f64 / (sy as f64 * hw as f64)).unwrap();
    let rq = if per_channel {
        rand_requant(&mut rng, c, out)
    } else {
        Requant::new(c, &[m], &[e], out)
    };
    Gap {
        n,
        hw,
        c,
        x,
        zx,
        scales: (sx, sy),
        rq,
    }
}

proptest! {
    #![proptest_config(config(200))]

    /// `maxpool_u8` on every level equals the scalar reference: windows
    /// 1..=4, strides 1..=3, pads below the window, row splits.
    #[test]
    fn maxpool_u8_matches_scalar_on_every_isa(
        dims in (1usize..=2, 1usize..=10, 1usize..=10, 1usize..=150),
        win in (1usize..=4, 1usize..=4, 1usize..=3, 1usize..=3),
        pads in (0usize..=3, 0usize..=3, 0usize..=3, 0usize..=3),
        cuts in (0u32..=1000, 0u32..=1000),
        seed in any::<u64>(),
    ) {
        let p = maxpool_case(dims, win, pads, seed);
        let rows = p.g.n * p.g.oh;
        check_bytes(&format!("maxpool {:?}", p.g), (p.out_len(), p.g.ow * p.g.c, rows), cuts, |isa, parts| {
            p.run(isa, parts)
        })?;
    }

    /// The scalar `maxpool_u8` equals ONNX `MaxPool` (kiln_ir), uint8 and int8.
    #[test]
    fn maxpool_u8_scalar_matches_onnx_maxpool(
        dims in (1usize..=2, 1usize..=8, 1usize..=8, 1usize..=12),
        win in (1usize..=4, 1usize..=4, 1usize..=3, 1usize..=3),
        pads in (0usize..=3, 0usize..=3, 0usize..=3, 0usize..=3),
        signed in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let p = maxpool_case(dims, win, pads, seed);
        let got = p.run(Isa::Scalar, &[0..p.g.n * p.g.oh]);
        expect_eq(&format!("maxpool vs MaxPool {:?}", p.g), Isa::Scalar, &got[..p.out_len()], &p.reference(signed))?;
    }

    /// `global_avg_pool_u8` on every level equals the scalar reference
    /// (per-tensor and per-channel requantization), batch splits.
    #[test]
    fn global_avg_pool_u8_matches_scalar_on_every_isa(
        dims in (1usize..=3, 1usize..=60, 1usize..=150),
        per_channel in any::<bool>(),
        cuts in (0u32..=1000, 0u32..=1000),
        seed in any::<u64>(),
    ) {
        let p = gap_case(dims, per_channel, seed);
        check_bytes(&format!("global_avg_pool n {} hw {} c {}", p.n, p.hw, p.c), (p.n * p.c, p.c, p.n), cuts, |isa, parts| {
            p.run(isa, parts)
        })?;
    }

    /// The scalar `global_avg_pool_u8` equals kiln_ir's `QGlobalAveragePool`.
    #[test]
    fn global_avg_pool_u8_scalar_matches_kiln_ir(
        dims in (1usize..=3, 1usize..=60, 1usize..=40),
        signed in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let p = gap_case(dims, false, seed);
        let got = p.run(Isa::Scalar, &[0..p.n]);
        expect_eq("global_avg_pool vs QGlobalAveragePool", Isa::Scalar, &got[..p.n * p.c], &p.reference(signed))?;
    }
}

// ---------------------------------------------------------------------------
// Element-wise
// ---------------------------------------------------------------------------

/// `QAdd` parameters: mostly as kiln's quantizer derives them from scales
/// (`M_a = s_a / (2 max(s_a, s_b))`, `M = 2 max(s_a, s_b) / (2^20 s_y)`),
/// sometimes arbitrary multipliers (possibly outside the SIMD domain).
fn rand_qadd(rng: &mut Rng) -> QAddParams {
    let za = rng.range(0, 255) as i32;
    let zb = rng.range(0, 255) as i32;
    let out = rand_out(rng);
    if rng.below(4) == 0 {
        return QAddParams::new(za, zb, rand_mult(rng), rand_mult(rng), rand_mult(rng), out);
    }
    let s = |rng: &mut Rng| 2f64.powf(rng.range(-1200, 0) as f64 / 100.0);
    let (sa, sb, sy) = (s(rng), s(rng), s(rng));
    let mx = 2.0 * sa.max(sb);
    let qm = |v: f64| kiln_ir::quant::quantize_multiplier(v).unwrap();
    QAddParams::new(za, zb, qm(sa / mx), qm(sb / mx), qm(mx / (1_048_576.0 * sy)), out)
}

struct Add {
    p: QAddParams,
    a: Vec<u8>,
    b: Vec<u8>,
}

/// Where an element-wise kernel writes: a fresh buffer or over an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Out {
    Fresh,
    OverA,
}

impl Add {
    fn run(&self, isa: Isa, parts: &[Range<usize>], out: Out) -> Vec<u8> {
        let n = self.a.len();
        let mut y = vec![SENTINEL; n + GUARD];
        let mut a = self.a.clone();
        if out == Out::OverA {
            y[..n].copy_from_slice(&a);
        }
        for r in parts {
            let ap = if out == Out::OverA {
                y.as_ptr()
            } else {
                a.as_mut_ptr() as *const u8
            };
            // SAFETY: buffers of n elements; y aliases a exactly.
            unsafe { add_u8(isa, &self.p, ap, self.b.as_ptr(), y.as_mut_ptr(), r.clone()) };
        }
        y
    }

    fn reference(&self, signed: bool) -> Vec<u8> {
        let n = self.a.len();
        let p = &self.p;
        let mut attrs = vec![
            ("a_zero_point", int(model_val(p.za, signed))),
            ("b_zero_point", int(model_val(p.zb, signed))),
            ("a_multiplier", ints(&[p.a.0 as i64])),
            ("a_shift", ints(&[p.a.1 as i64])),
            ("b_multiplier", ints(&[p.b.0 as i64])),
            ("b_shift", ints(&[p.b.1 as i64])),
            ("multiplier", ints(&[p.m.0 as i64])),
            ("shift", ints(&[p.m.1 as i64])),
        ];
        attrs.extend(out_attrs(&p.out, signed));
        let a = q8(vec![n], &self.a, signed);
        let b = q8(vec![n], &self.b, signed);
        stored(&eval(&node("QAdd", "kiln", 2, attrs), 13, &[Some(&a), Some(&b)]))
    }
}

fn add_case(len: usize, seed: u64) -> Add {
    let mut rng = Rng::new(seed);
    let p = rand_qadd(&mut rng);
    let a = rng.bytes_skewed(len);
    let b = rng.bytes_skewed(len);
    Add { p, a, b }
}

/// f32 inputs of `QuantizeLinear`: mostly `scale * (k + f)` around the
/// grid (ties `f = 0.5` often), with specials (zeros, NaN, infinities,
/// huge, subnormal).
fn quant_inputs(rng: &mut Rng, len: usize, scale: f32) -> Vec<f32> {
    const SPECIAL: [f32; 9] = [
        0.0,
        -0.0,
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        1e30,
        -1e30,
        1e-40,
        -3e38,
    ];
    (0..len)
        .map(|_| match rng.below(10) {
            0 => SPECIAL[rng.below(SPECIAL.len())],
            1..=4 => (rng.range(-300, 300) as f32 + 0.5) * scale,
            _ => (rng.range(-300_000, 300_000) as f32 / 1000.0) * scale,
        })
        .collect()
}

proptest! {
    #![proptest_config(config(200))]

    /// `add_u8` on every level equals the scalar reference (QAdd parameters
    /// in and outside the SIMD domain), element splits, in place over `a`.
    #[test]
    fn add_u8_matches_scalar_on_every_isa(
        len in 0usize..=300,
        in_place in any::<bool>(),
        cuts in (0u32..=1000, 0u32..=1000),
        seed in any::<u64>(),
    ) {
        let d = add_case(len, seed);
        let out = if in_place { Out::OverA } else { Out::Fresh };
        let guard_ok = |y: &[u8]| y[len..].iter().all(|&v| v == SENTINEL);
        let reference = d.run(Isa::Scalar, &[0..len], out);
        prop_assert!(guard_ok(&reference));
        for isa in Isa::runnable() {
            let whole = d.run(isa, &[0..len], out);
            expect_eq(&format!("add_u8 {:?} simd {}", d.p, d.p.simd()), isa, &whole, &reference)?;
            let parts = pieces(len, cuts.0, cuts.1);
            expect_eq(&format!("add_u8 split as {parts:?}"), isa, &d.run(isa, &parts, out), &whole)?;
            if out == Out::Fresh {
                let one = d.run(isa, &parts[1..2], out);
                expect_all(&format!("add_u8 range {:?} alone", parts[1]), isa, one.len(), |i| {
                    one[i] == if parts[1].contains(&i) { whole[i] } else { SENTINEL }
                }, |i| format!("index {i}: {}", one[i]))?;
            }
            mark(isa);
        }
    }

    /// The scalar `add_u8` equals kiln_ir's `QAdd`, uint8 and int8.
    #[test]
    fn add_u8_scalar_matches_kiln_ir(len in 0usize..=100, signed in any::<bool>(), seed in any::<u64>()) {
        let d = add_case(len, seed);
        let got = d.run(Isa::Scalar, &[0..len], Out::Fresh);
        expect_eq(&format!("add_u8 vs QAdd {:?}", d.p), Isa::Scalar, &got[..len], &d.reference(signed))?;
    }

    /// `mul_u8` on every level equals the scalar reference, which equals
    /// kiln_ir's `QMul` (uint8 and int8); quantizer-style and arbitrary
    /// multipliers, element splits, in place over `a`.
    #[test]
    fn mul_u8_matches_scalar_on_every_isa_and_kiln_ir(
        len in 0usize..=300,
        in_place in any::<bool>(),
        signed in any::<bool>(),
        cuts in (0u32..=1000, 0u32..=1000),
        seed in any::<u64>(),
    ) {
        let mut rng = Rng::new(seed);
        let (za, zb) = (rng.range(0, 255) as i32, rng.range(0, 255) as i32);
        let out = rand_out(&mut rng);
        let m = if rng.below(4) == 0 {
            rand_mult(&mut rng)
        } else {
            let s = |rng: &mut Rng| 2f64.powf(rng.range(-1200, 200) as f64 / 100.0);
            kiln_ir::quant::quantize_multiplier(s(&mut rng) * s(&mut rng) / s(&mut rng)).unwrap()
        };
        let p = QMulParams::new(za, zb, m, out);
        let (a, b) = (rng.bytes_skewed(len), rng.bytes_skewed(len));
        let run = |isa: Isa, parts: &[Range<usize>]| {
            let mut y = vec![SENTINEL; len + GUARD];
            let mut a2 = a.clone();
            if in_place {
                y[..len].copy_from_slice(&a);
            }
            for r in parts {
                let ap = if in_place { y.as_ptr() } else { a2.as_mut_ptr() as *const u8 };
                // SAFETY: buffers of len elements; y aliases a exactly.
                unsafe { mul_u8(isa, &p, ap, b.as_ptr(), y.as_mut_ptr(), r.clone()) };
            }
            y
        };
        let reference = run(Isa::Scalar, &[0..len]);
        prop_assert!(reference[len..].iter().all(|&v| v == SENTINEL));
        let mut attrs = vec![
            ("a_zero_point", int(model_val(za, signed))),
            ("b_zero_point", int(model_val(zb, signed))),
            ("multiplier", ints(&[m.0 as i64])),
            ("shift", ints(&[m.1 as i64])),
        ];
        attrs.extend(out_attrs(&out, signed));
        let want = stored(&eval(
            &node("QMul", "kiln", 2, attrs),
            13,
            &[Some(&q8(vec![len], &a, signed)), Some(&q8(vec![len], &b, signed))],
        ));
        expect_eq(&format!("mul_u8 vs QMul {p:?}"), Isa::Scalar, &reference[..len], &want)?;
        for isa in Isa::runnable() {
            let whole = run(isa, &[0..len]);
            expect_eq(&format!("mul_u8 {p:?}"), isa, &whole, &reference)?;
            let parts = pieces(len, cuts.0, cuts.1);
            expect_eq(&format!("mul_u8 split as {parts:?}"), isa, &run(isa, &parts), &whole)?;
            mark(isa);
        }
    }

    /// `lut_u8` on every level equals the scalar reference, which equals
    /// kiln_ir's `QLut` (uint8 and int8).
    #[test]
    fn lut_u8_matches_scalar_and_kiln_ir(
        len in 0usize..=300,
        signed in any::<bool>(),
        cuts in (0u32..=1000, 0u32..=1000),
        seed in any::<u64>(),
    ) {
        let mut rng = Rng::new(seed);
        let table: [u8; 256] = std::array::from_fn(|_| rng.next() as u8);
        let x = rng.bytes(len);
        let reference = check_bytes("lut_u8", (len, 1, len), cuts, |isa, parts| {
            let mut y = vec![SENTINEL; len + GUARD];
            for r in parts {
                // SAFETY: buffers of len elements.
                unsafe { lut_u8(isa, &table, x.as_ptr(), y.as_mut_ptr(), r.clone()) };
            }
            y
        })?;
        let tv: Vec<i64> = table.iter().map(|&v| model_val(v as i32, signed)).collect();
        let attrs = vec![("output_dtype", int(if signed { 3 } else { 2 })), ("table", ints(&tv))];
        let want = stored(&eval(&node("QLut", "kiln", 1, attrs), 13, &[Some(&q8(vec![len], &x, signed))]));
        expect_eq("lut_u8 vs QLut", Isa::Scalar, &reference[..len], &want)?;
    }

    /// `quantize_f32_u8` on every level equals the scalar reference, which
    /// equals ONNX `QuantizeLinear` (kiln_ir; full range, uint8 and int8):
    /// ties, NaN, infinities, huge and subnormal inputs, any scale.
    #[test]
    fn quantize_f32_u8_matches_scalar_and_onnx(
        len in 0usize..=200,
        signed in any::<bool>(),
        clamp in any::<bool>(),
        cuts in (0u32..=1000, 0u32..=1000),
        seed in any::<u64>(),
    ) {
        let mut rng = Rng::new(seed);
        let scale = match rng.below(6) {
            0 => 1.0,
            1 => 1e-30,
            2 => 3e30,
            _ => 2f32.powf(rng.range(-1500, 500) as f32 / 100.0),
        };
        let x = quant_inputs(&mut rng, len, scale);
        let zp = rng.range(0, 255) as i32;
        let (lo, hi) = if clamp {
            let o = rand_out(&mut rng);
            (o.lo, o.hi)
        } else {
            (0, 255)
        };
        let reference = check_bytes(&format!("quantize scale {scale:e} zp {zp} [{lo}, {hi}]"), (len, 1, len), cuts, |isa, parts| {
            let mut y = vec![SENTINEL; len + GUARD];
            for r in parts {
                // SAFETY: buffers of len elements.
                unsafe { quantize_f32_u8(isa, x.as_ptr(), y.as_mut_ptr(), r.clone(), scale, zp, lo, hi) };
            }
            y
        })?;
        if !clamp {
            let zt = q8(vec![], &[zp as u8], signed);
            let xt = Tensor::from_vec(vec![len], x.clone()).unwrap();
            let st = Tensor::scalar(scale);
            let want = stored(&eval(&node("QuantizeLinear", "", 3, vec![]), 13, &[Some(&xt), Some(&st), Some(&zt)]));
            expect_all("quantize vs QuantizeLinear", Isa::Scalar, len, |i| reference[i] == want[i], |i| {
                format!("x[{i}] = {:e}: {} vs {}", x[i], reference[i], want[i])
            })?;
        }
    }

    /// `dequantize_u8_f32` on every level equals the scalar reference bit
    /// for bit, which equals ONNX `DequantizeLinear` (kiln_ir, uint8 and int8).
    #[test]
    fn dequantize_u8_f32_matches_scalar_and_onnx(
        len in 0usize..=200,
        signed in any::<bool>(),
        cuts in (0u32..=1000, 0u32..=1000),
        seed in any::<u64>(),
    ) {
        let mut rng = Rng::new(seed);
        let scale = match rng.below(4) {
            0 => 3e38,
            1 => 1e-40,
            _ => 2f32.powf(rng.range(-1500, 500) as f32 / 100.0),
        };
        let x = rng.bytes(len);
        let zp = rng.range(0, 255) as i32;
        let reference = check_levels("dequantize", (len, 1, len), f32::NAN, cuts, |a, b| a.to_bits() == b.to_bits(), |isa, parts| {
            let mut y = vec![f32::NAN; len + GUARD];
            for r in parts {
                // SAFETY: buffers of len elements.
                unsafe { dequantize_u8_f32(isa, x.as_ptr(), y.as_mut_ptr(), r.clone(), scale, zp) };
            }
            y
        })?;
        let zt = q8(vec![], &[zp as u8], signed);
        let want = eval(&node("DequantizeLinear", "", 3, vec![]), 13, &[Some(&q8(vec![len], &x, signed)), Some(&Tensor::scalar(scale)), Some(&zt)]);
        let want = want.as_slice::<f32>().unwrap();
        expect_all("dequantize vs DequantizeLinear", Isa::Scalar, len, |i| reference[i].to_bits() == want[i].to_bits(), |i| {
            format!("x[{i}] = {}: {:e} vs {:e}", x[i], reference[i], want[i])
        })?;
    }
}

// ---------------------------------------------------------------------------
// Coverage
// ---------------------------------------------------------------------------

/// Prints the levels tested and fails if the CPU supports one whose kernels
/// did not run (runs one small depthwise case on each level itself).
#[test]
fn every_cpu_isa_level_is_tested() {
    let d = qdw_case((1, 5, 5, 70), (0, 3, 3), (1, 1), (1, 1, 1, 1), true, 7);
    let want = d.run(Isa::Scalar, &[0..d.g.rows()]);
    for isa in Isa::runnable() {
        assert_eq!(d.run(isa, &[0..d.g.rows()]), want, "qdwconv {isa}");
        mark(isa);
    }
    let ran = ISAS_RAN.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let names: Vec<&str> = ran.iter().map(|i| i.name()).collect();
    let _ = writeln!(
        std::io::stderr(),
        "kiln-kernels (integer): ISA levels tested: {}",
        names.join(", ")
    );
    for isa in Isa::runnable() {
        assert!(
            ran.contains(&isa),
            "{isa} kernels did not run (tested: {names:?})"
        );
    }
}
