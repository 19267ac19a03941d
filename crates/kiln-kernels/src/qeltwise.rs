//! Element-wise kernels of 8-bit tensors: requantizing add, lookup table,
//! and the conversions at a quantized model's boundaries.
//!
//! * [`add_u8`]: kiln's `QAdd` on same-length operands (TFLite's quantized
//!   ADD): `sa = requantize((a - za) << 20, ma, ea)`, `sb` likewise,
//!   `y = clamp(requantize(sa + sb, m, e) + zy, lo, hi)` (`+` wrapping,
//!   see `kiln_ir::ops::qint`).
//! * [`mul_u8`]: kiln's `QMul` on same-length operands,
//!   `y = clamp(requantize((a - za)(b - zb), m, e) + zy, lo, hi)`.
//! * [`lut_u8`]: kiln's `QLut`, `y = table[x]` (any function of one 8-bit
//!   input, tabulated once).
//! * [`quantize_f32_u8`]: ONNX `QuantizeLinear`,
//!   `y = clamp(round_half_even(x / scale) + zp, lo, hi)` (the division in
//!   f32, NaN giving the zero point, infinities saturating; see
//!   `kiln_ir::ops::quant`).
//! * [`dequantize_u8_f32`]: ONNX `DequantizeLinear`,
//!   `y = (q - zp) as f32 * scale` (one f32 rounding, the reference's).
//!
//! Bytes are in kiln's stored encoding (an `int8` value `+ 128`, zero
//! points and bounds shifted alike, see [`crate::quant`]). Every SIMD
//! kernel computes the same bytes / floats as its scalar reference.
//!
//! The SIMD add computes in `f64`: `(a - za) * (ma * 2^(ea - 11))` is exact
//! (a 9-bit integer times a 31-bit mantissa), and `fma(v, K, 1.5 * 2^52)`
//! rounds it once, half to even, to the integer `requantize` returns (the
//! sum lies where the unit in the last place is 1; its low bits are that
//! integer). This needs the sums not to saturate or wrap in `i32`:
//! `|sa| + |sb| < 2^31`, which holds for every `QAdd` kiln's quantizer makes
//! (input multipliers `<= 1/2`); other parameters take the scalar kernel.
//!
//! The SIMD multiply computes in `f64` too, for every parameter set: the
//! product `(a - za)(b - zb)` is at most 17 bits, times a 31-bit multiplier
//! is exact, its magnitude stays below `2^47 < 2^51`, and a clamp to
//! `[lo - zy, hi - zy]` before adding `zy` equals the reference's saturation
//! to `i32` followed by the clamp.

use crate::quant::{requantize, QOut};
use crate::Isa;
use std::ops::Range;

/// `1.5 * 2^52`: `x + MAGIC` (for `|x| < 2^51`) is `MAGIC + round_half_even(x)`.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const MAGIC: f64 = 6_755_399_441_055_744.0;

/// Parameters of a requantizing add (kiln `QAdd`), stored encoding.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QAddParams {
    /// Zero point of `a` (`0..=255`).
    pub za: i32,
    /// Zero point of `b`.
    pub zb: i32,
    /// Multiplier and exponent rescaling `(a - za) << 20` to the common
    /// scale (`a_multiplier`, `a_shift`).
    pub a: (i32, i32),
    /// The same for `b`.
    pub b: (i32, i32),
    /// Multiplier and exponent of the output (`multiplier`, `shift`).
    pub m: (i32, i32),
    /// Output zero point and clamp.
    pub out: QOut,
    /// Whether the SIMD (`f64`) kernels apply (see the module documentation).
    simd: bool,
}

impl QAddParams {
    /// Checks the parameters (zero points in `0..=255`, multipliers `>= 0`,
    /// exponents in `-31..=30`; panics naming the bad one) and decides
    /// whether the SIMD kernels apply.
    pub fn new(za: i32, zb: i32, a: (i32, i32), b: (i32, i32), m: (i32, i32), out: QOut) -> QAddParams {
        assert!((0..=255).contains(&za), "zero point of a {za} outside 0..=255");
        assert!((0..=255).contains(&zb), "zero point of b {zb} outside 0..=255");
        for (what, (mm, e)) in [("a", a), ("b", b), ("output", m)] {
            assert!(mm >= 0, "negative {what} multiplier {mm}");
            assert!((-31..=30).contains(&e), "{what} exponent {e} outside -31..=30");
        }
        // Largest |requantize((x - z) << 20)| over the bytes (monotonic in x).
        let ext = |z: i32, (mm, e): (i32, i32)| {
            let lo = requantize((0 - z) << 20, mm, e) as i64;
            let hi = requantize((255 - z) << 20, mm, e) as i64;
            lo.abs().max(hi.abs())
        };
        let simd = ext(za, a) + ext(zb, b) < i32::MAX as i64;
        QAddParams {
            za,
            zb,
            a,
            b,
            m,
            out,
            simd,
        }
    }

    /// Whether the SIMD kernels apply (else [`add_u8`] runs the scalar one).
    pub fn simd(&self) -> bool {
        self.simd
    }

    /// One output byte (the definition).
    #[inline(always)]
    pub fn apply(&self, a: u8, b: u8) -> u8 {
        let sa = requantize((a as i32 - self.za) << 20, self.a.0, self.a.1);
        let sb = requantize((b as i32 - self.zb) << 20, self.b.0, self.b.1);
        let q = requantize(sa.wrapping_add(sb), self.m.0, self.m.1);
        q.saturating_add(self.out.zy).clamp(self.out.lo, self.out.hi) as u8
    }
}

/// Parameters of a requantizing multiply (kiln `QMul`), stored encoding.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QMulParams {
    /// Zero point of `a` (`0..=255`).
    pub za: i32,
    /// Zero point of `b`.
    pub zb: i32,
    /// Multiplier and exponent of the output (`multiplier`, `shift`:
    /// `s_a * s_b / s_y`).
    pub m: (i32, i32),
    /// Output zero point and clamp.
    pub out: QOut,
}

impl QMulParams {
    /// Checks the parameters (zero points in `0..=255`, multiplier `>= 0`,
    /// exponent in `-31..=30`; panics naming the bad one).
    pub fn new(za: i32, zb: i32, m: (i32, i32), out: QOut) -> QMulParams {
        assert!((0..=255).contains(&za), "zero point of a {za} outside 0..=255");
        assert!((0..=255).contains(&zb), "zero point of b {zb} outside 0..=255");
        assert!(m.0 >= 0, "negative multiplier {}", m.0);
        assert!((-31..=30).contains(&m.1), "exponent {} outside -31..=30", m.1);
        QMulParams { za, zb, m, out }
    }

    /// One output byte (the definition).
    #[inline(always)]
    pub fn apply(&self, a: u8, b: u8) -> u8 {
        let acc = (a as i32 - self.za) * (b as i32 - self.zb);
        crate::quant::requantize_u8(acc, self.m.0, self.m.1, &self.out)
    }
}

/// `y[i] = QMul(a[i], b[i])` for `i` in `range`.
///
/// # Safety
/// Pointers valid for the range; `y` may alias `a` or `b` exactly.
pub unsafe fn mul_u8(isa: Isa, p: &QMulParams, a: *const u8, b: *const u8, y: *mut u8, range: Range<usize>) {
    match isa.int8_level() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512 | Isa::Avx512Vnni => mul_u8_avx2(p, a, b, y, range),
        _ => mul_u8_scalar(p, a, b, y, range),
    }
}

/// Scalar reference of [`mul_u8`].
///
/// # Safety
/// As [`mul_u8`].
pub unsafe fn mul_u8_scalar(p: &QMulParams, a: *const u8, b: *const u8, y: *mut u8, range: Range<usize>) {
    for i in range {
        *y.add(i) = p.apply(*a.add(i), *b.add(i));
    }
}

/// `M = m * 2^(e - 31)` (exact in `f64`).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn real(m: i32, e: i32) -> f64 {
    m as f64 * 2f64.powi(e - 31)
}

/// `y[i] = QAdd(a[i], b[i])` for `i` in `range`.
///
/// # Safety
/// Pointers valid for the range; `y` may alias `a` or `b` exactly.
pub unsafe fn add_u8(isa: Isa, p: &QAddParams, a: *const u8, b: *const u8, y: *mut u8, range: Range<usize>) {
    match isa.int8_level() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx512Vnni if p.simd && x86::avx512bw() => add_u8_avx512(p, a, b, y, range),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512 | Isa::Avx512Vnni if p.simd => add_u8_avx2(p, a, b, y, range),
        _ => add_u8_scalar(p, a, b, y, range),
    }
}

/// Scalar reference of [`add_u8`].
///
/// # Safety
/// As [`add_u8`].
pub unsafe fn add_u8_scalar(p: &QAddParams, a: *const u8, b: *const u8, y: *mut u8, range: Range<usize>) {
    for i in range {
        *y.add(i) = p.apply(*a.add(i), *b.add(i));
    }
}

/// `y[i] = table[x[i]]` for `i` in `range` (kiln `QLut`).
///
/// # Safety
/// Pointers valid for the range; `y` may alias `x` exactly.
pub unsafe fn lut_u8(isa: Isa, table: &[u8; 256], x: *const u8, y: *mut u8, range: Range<usize>) {
    match isa.int8_level() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx512Vnni if x86::avx512vbmi() => lut_u8_avx512vbmi(table, x, y, range),
        _ => lut_u8_scalar(table, x, y, range),
    }
}

/// Scalar reference of [`lut_u8`].
///
/// # Safety
/// As [`lut_u8`].
pub unsafe fn lut_u8_scalar(table: &[u8; 256], x: *const u8, y: *mut u8, range: Range<usize>) {
    for i in range {
        *y.add(i) = table[*x.add(i) as usize];
    }
}

/// `y[i] = clamp(round_half_even(x[i] / scale) + zp, lo, hi)` for `i` in
/// `range` (ONNX `QuantizeLinear` into the stored encoding: `zp` in
/// `0..=255`, `0 <= lo <= hi <= 255`, the type's range or a fused clamp).
/// NaN gives `clamp(zp, lo, hi)`.
///
/// # Safety
/// Pointers valid for the range.
pub unsafe fn quantize_f32_u8(
    isa: Isa,
    x: *const f32,
    y: *mut u8,
    range: Range<usize>,
    scale: f32,
    zp: i32,
    lo: i32,
    hi: i32,
) {
    assert!((0..=255).contains(&zp), "zero point {zp} outside 0..=255");
    assert!(
        0 <= lo && lo <= hi && hi <= 255,
        "clamp [{lo}, {hi}] not within [0, 255]"
    );
    match isa.int8_level() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx512Vnni if x86::avx512bw() => {
            quantize_f32_u8_avx512(x, y, range, scale, zp, lo, hi)
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512 | Isa::Avx512Vnni => quantize_f32_u8_avx2(x, y, range, scale, zp, lo, hi),
        _ => quantize_f32_u8_scalar(x, y, range, scale, zp, lo, hi),
    }
}

/// One value of [`quantize_f32_u8`] (`as` saturates, NaN to 0).
#[inline(always)]
fn quantize1(v: f32, scale: f32, zp: i32, lo: i32, hi: i32) -> u8 {
    let r = (v / scale).round_ties_even() as i64;
    r.saturating_add(zp as i64).clamp(lo as i64, hi as i64) as u8
}

/// Scalar reference of [`quantize_f32_u8`].
///
/// # Safety
/// As [`quantize_f32_u8`].
pub unsafe fn quantize_f32_u8_scalar(
    x: *const f32,
    y: *mut u8,
    range: Range<usize>,
    scale: f32,
    zp: i32,
    lo: i32,
    hi: i32,
) {
    for i in range {
        *y.add(i) = quantize1(*x.add(i), scale, zp, lo, hi);
    }
}

/// `y[i] = (x[i] - zp) as f32 * scale` for `i` in `range` (ONNX
/// `DequantizeLinear` from the stored encoding).
///
/// # Safety
/// Pointers valid for the range.
pub unsafe fn dequantize_u8_f32(
    isa: Isa,
    x: *const u8,
    y: *mut f32,
    range: Range<usize>,
    scale: f32,
    zp: i32,
) {
    match isa.int8_level() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx512Vnni if x86::avx512bw() => dequantize_u8_f32_avx512(x, y, range, scale, zp),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512 | Isa::Avx512Vnni => dequantize_u8_f32_avx2(x, y, range, scale, zp),
        _ => dequantize_u8_f32_scalar(x, y, range, scale, zp),
    }
}

/// Scalar reference of [`dequantize_u8_f32`].
///
/// # Safety
/// As [`dequantize_u8_f32`].
pub unsafe fn dequantize_u8_f32_scalar(x: *const u8, y: *mut f32, range: Range<usize>, scale: f32, zp: i32) {
    for i in range {
        *y.add(i) = (*x.add(i) as i32 - zp) as f32 * scale;
    }
}

#[cfg(target_arch = "x86_64")]
pub use x86::{
    add_u8_avx2, add_u8_avx512, dequantize_u8_f32_avx2, dequantize_u8_f32_avx512, lut_u8_avx512vbmi,
    mul_u8_avx2, quantize_f32_u8_avx2, quantize_f32_u8_avx512,
};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;
    use std::arch::x86_64::*;

    /// AVX-512 BW and VL (byte masks) present.
    pub(super) fn avx512bw() -> bool {
        std::arch::is_x86_feature_detected!("avx512bw") && std::arch::is_x86_feature_detected!("avx512vl")
    }

    /// AVX-512 VBMI (byte permutes) present, with BW.
    pub(super) fn avx512vbmi() -> bool {
        avx512bw() && std::arch::is_x86_feature_detected!("avx512vbmi")
    }

    /// Low `n` bits set (`n <= 16`).
    #[inline(always)]
    fn mask16(n: usize) -> u16 {
        ((1u32 << n.min(16)) - 1) as u16
    }

    /// The add's constants, broadcast.
    struct AddK<D> {
        /// `2^52 + za` and `2^52 + zb`.
        offa: D,
        offb: D,
        /// `2^20 * M_a`, `2^20 * M_b`, `M`.
        ka: D,
        kb: D,
        mo: D,
        magic: D,
        /// `MAGIC + lo - zy`, `MAGIC + hi - zy`, `zy`.
        tlo: D,
        thi: D,
        zy: D,
    }

    impl AddK<f64> {
        fn new(p: &QAddParams) -> AddK<f64> {
            let two52 = 4_503_599_627_370_496.0;
            AddK {
                offa: two52 + p.za as f64,
                offb: two52 + p.zb as f64,
                ka: real(p.a.0, p.a.1) * 1_048_576.0,
                kb: real(p.b.0, p.b.1) * 1_048_576.0,
                mo: real(p.m.0, p.m.1),
                magic: MAGIC,
                tlo: MAGIC + (p.out.lo - p.out.zy) as f64,
                thi: MAGIC + (p.out.hi - p.out.zy) as f64,
                zy: p.out.zy as f64,
            }
        }
    }

    /// The add on 8 lanes: `a8`, `b8` the inputs zero-extended to `u64`;
    /// returns `MAGIC + y` per lane (`y` in its low byte).
    #[inline(always)]
    unsafe fn add8(a8: __m512i, b8: __m512i, k: &AddK<__m512d>) -> __m512d {
        let bits = _mm512_set1_epi64(0x4330_0000_0000_0000);
        let xa = _mm512_sub_pd(_mm512_castsi512_pd(_mm512_or_si512(a8, bits)), k.offa);
        let xb = _mm512_sub_pd(_mm512_castsi512_pd(_mm512_or_si512(b8, bits)), k.offb);
        let ta = _mm512_fmadd_pd(xa, k.ka, k.magic); // MAGIC + sa
        let tb = _mm512_fmadd_pd(xb, k.kb, k.magic); // MAGIC + sb
        let s = _mm512_sub_pd(_mm512_add_pd(_mm512_sub_pd(ta, k.magic), tb), k.magic); // sa + sb
        let t = _mm512_fmadd_pd(s, k.mo, k.magic);
        let t = _mm512_min_pd(_mm512_max_pd(t, k.tlo), k.thi);
        _mm512_add_pd(t, k.zy)
    }

    /// AVX-512 [`add_u8`]: 16 bytes at a time, in `f64` (8 lanes).
    ///
    /// # Safety
    /// As [`add_u8`]; `p.simd()`; the CPU supports AVX-512 F, BW and VL.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub unsafe fn add_u8_avx512(p: &QAddParams, a: *const u8, b: *const u8, y: *mut u8, range: Range<usize>) {
        assert!(p.simd, "QAdd parameters outside the SIMD kernels' domain");
        let k0 = AddK::new(p);
        let s = _mm512_set1_pd;
        let k = AddK {
            offa: s(k0.offa),
            offb: s(k0.offb),
            ka: s(k0.ka),
            kb: s(k0.kb),
            mo: s(k0.mo),
            magic: s(k0.magic),
            tlo: s(k0.tlo),
            thi: s(k0.thi),
            zy: s(k0.zy),
        };
        let mut i = range.start;
        while i < range.end {
            let m = mask16(range.end - i);
            let av = _mm_maskz_loadu_epi8(m, a.add(i) as *const i8);
            let bv = _mm_maskz_loadu_epi8(m, b.add(i) as *const i8);
            let lo = add8(_mm512_cvtepu8_epi64(av), _mm512_cvtepu8_epi64(bv), &k);
            let hi = add8(
                _mm512_cvtepu8_epi64(_mm_srli_si128::<8>(av)),
                _mm512_cvtepu8_epi64(_mm_srli_si128::<8>(bv)),
                &k,
            );
            let v = _mm_unpacklo_epi64(
                _mm512_cvtepi64_epi8(_mm512_castpd_si512(lo)),
                _mm512_cvtepi64_epi8(_mm512_castpd_si512(hi)),
            );
            _mm_mask_storeu_epi8(y.add(i) as *mut i8, m, v);
            i += 16;
        }
    }

    /// Stores the low bytes of 4 lanes `MAGIC + y` (`y` in `0..=255`) to
    /// `y[0..4]`.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn store4(t: __m256d, y: *mut u8) {
        // Byte 0 of each u64 to bytes 0, 1 of each 128-bit lane.
        let pick = _mm256_setr_epi8(
            0, 8, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 8, -1, -1, -1, -1, -1, -1, -1,
            -1, -1, -1, -1, -1, -1, -1,
        );
        let v = _mm256_shuffle_epi8(_mm256_castpd_si256(t), pick);
        let v = _mm_unpacklo_epi16(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
        (y as *mut i32).write_unaligned(_mm_cvtsi128_si32(v));
    }

    /// AVX2 [`add_u8`]: 4 bytes at a time, in `f64`; the last `len % 4`
    /// scalar.
    ///
    /// # Safety
    /// As [`add_u8`]; `p.simd()`; the CPU supports AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn add_u8_avx2(p: &QAddParams, a: *const u8, b: *const u8, y: *mut u8, range: Range<usize>) {
        assert!(p.simd, "QAdd parameters outside the SIMD kernels' domain");
        let k0 = AddK::new(p);
        let s = _mm256_set1_pd;
        let (offa, offb, ka, kb, mo, magic) =
            (s(k0.offa), s(k0.offb), s(k0.ka), s(k0.kb), s(k0.mo), s(k0.magic));
        let (tlo, thi, zy) = (s(k0.tlo), s(k0.thi), s(k0.zy));
        let bits = _mm256_set1_epi64x(0x4330_0000_0000_0000);
        let n4 = range.len() / 4 * 4;
        let mut i = range.start;
        while i < range.start + n4 {
            let ld = |p: *const u8| {
                let v = _mm_cvtsi32_si128((p.add(i) as *const i32).read_unaligned());
                _mm256_castsi256_pd(_mm256_or_si256(_mm256_cvtepu8_epi64(v), bits))
            };
            let ta = _mm256_fmadd_pd(_mm256_sub_pd(ld(a), offa), ka, magic);
            let tb = _mm256_fmadd_pd(_mm256_sub_pd(ld(b), offb), kb, magic);
            let st = _mm256_sub_pd(_mm256_add_pd(_mm256_sub_pd(ta, magic), tb), magic);
            let t = _mm256_fmadd_pd(st, mo, magic);
            let t = _mm256_add_pd(_mm256_min_pd(_mm256_max_pd(t, tlo), thi), zy);
            store4(t, y.add(i));
            i += 4;
        }
        add_u8_scalar(p, a, b, y, i..range.end);
    }

    /// AVX2 [`mul_u8`]: 4 bytes at a time, in `f64` (see the module
    /// documentation); the last `len % 4` scalar.
    ///
    /// # Safety
    /// As [`mul_u8`]; the CPU supports AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn mul_u8_avx2(p: &QMulParams, a: *const u8, b: *const u8, y: *mut u8, range: Range<usize>) {
        let two52 = 4_503_599_627_370_496.0;
        let s = _mm256_set1_pd;
        let (offa, offb, k, magic) = (
            s(two52 + p.za as f64),
            s(two52 + p.zb as f64),
            s(real(p.m.0, p.m.1)),
            s(MAGIC),
        );
        let tlo = s(MAGIC + (p.out.lo - p.out.zy) as f64);
        let thi = s(MAGIC + (p.out.hi - p.out.zy) as f64);
        let zy = s(p.out.zy as f64);
        let bits = _mm256_set1_epi64x(0x4330_0000_0000_0000);
        let n4 = range.len() / 4 * 4;
        let mut i = range.start;
        while i < range.start + n4 {
            let ld = |p: *const u8| {
                let v = _mm_cvtsi32_si128((p.add(i) as *const i32).read_unaligned());
                _mm256_castsi256_pd(_mm256_or_si256(_mm256_cvtepu8_epi64(v), bits))
            };
            // (a - za)(b - zb): exact integers below 2^17.
            let prod = _mm256_mul_pd(_mm256_sub_pd(ld(a), offa), _mm256_sub_pd(ld(b), offb));
            let t = _mm256_fmadd_pd(prod, k, magic); // MAGIC + requantize(prod)
            let t = _mm256_add_pd(_mm256_min_pd(_mm256_max_pd(t, tlo), thi), zy);
            store4(t, y.add(i));
            i += 4;
        }
        mul_u8_scalar(p, a, b, y, i..range.end);
    }

    /// AVX-512 VBMI [`lut_u8`]: 64 bytes at a time, two `vpermi2b` (each
    /// a 128-entry table in two registers) and a blend on the index's top bit.
    ///
    /// # Safety
    /// As [`lut_u8`]; the CPU supports AVX-512 F, BW and VBMI.
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
    pub unsafe fn lut_u8_avx512vbmi(table: &[u8; 256], x: *const u8, y: *mut u8, range: Range<usize>) {
        let t = |k: usize| _mm512_loadu_si512(table.as_ptr().add(64 * k) as *const _);
        let (t0, t1, t2, t3) = (t(0), t(1), t(2), t(3));
        let mut i = range.start;
        while i < range.end {
            let n = (range.end - i).min(64);
            let m = if n == 64 { u64::MAX } else { (1u64 << n) - 1 };
            let v = _mm512_maskz_loadu_epi8(m, x.add(i) as *const i8);
            let lo = _mm512_permutex2var_epi8(t0, v, t1);
            let hi = _mm512_permutex2var_epi8(t2, v, t3);
            let r = _mm512_mask_blend_epi8(_mm512_movepi8_mask(v), lo, hi);
            _mm512_mask_storeu_epi8(y.add(i) as *mut i8, m, r);
            i += 64;
        }
    }

    /// AVX-512 [`quantize_f32_u8`]: 16 values at a time (`vdivps`,
    /// `vrndscaleps` to nearest even, NaN to 0, clamp, convert).
    ///
    /// # Safety
    /// As [`quantize_f32_u8`]; the CPU supports AVX-512 F, BW and VL.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub unsafe fn quantize_f32_u8_avx512(
        x: *const f32,
        y: *mut u8,
        range: Range<usize>,
        scale: f32,
        zp: i32,
        lo: i32,
        hi: i32,
    ) {
        let s = _mm512_set1_ps(scale);
        let (flo, fhi) = (_mm512_set1_ps((lo - zp) as f32), _mm512_set1_ps((hi - zp) as f32));
        let z = _mm512_set1_epi32(zp);
        let mut i = range.start;
        while i < range.end {
            let m = mask16(range.end - i);
            let v = _mm512_div_ps(_mm512_maskz_loadu_ps(m, x.add(i)), s);
            let r = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v);
            let r = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_ORD_Q>(r, r), r);
            let r = _mm512_min_ps(_mm512_max_ps(r, flo), fhi);
            let q = _mm512_add_epi32(_mm512_cvtps_epi32(r), z);
            _mm_mask_storeu_epi8(y.add(i) as *mut i8, m, _mm512_cvtepi32_epi8(q));
            i += 16;
        }
    }

    /// AVX2 [`quantize_f32_u8`]: 8 values at a time; the last `len % 8`
    /// scalar.
    ///
    /// # Safety
    /// As [`quantize_f32_u8`]; the CPU supports AVX2.
    #[target_feature(enable = "avx2")]
    pub unsafe fn quantize_f32_u8_avx2(
        x: *const f32,
        y: *mut u8,
        range: Range<usize>,
        scale: f32,
        zp: i32,
        lo: i32,
        hi: i32,
    ) {
        let s = _mm256_set1_ps(scale);
        let (flo, fhi) = (_mm256_set1_ps((lo - zp) as f32), _mm256_set1_ps((hi - zp) as f32));
        let z = _mm256_set1_epi32(zp);
        // Byte 0 of each i32 to the low 4 bytes of each 128-bit lane.
        let pick = _mm256_setr_epi8(
            0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 4, 8, 12, -1, -1, -1, -1, -1, -1,
            -1, -1, -1, -1, -1, -1,
        );
        let n8 = range.len() / 8 * 8;
        let mut i = range.start;
        while i < range.start + n8 {
            let v = _mm256_div_ps(_mm256_loadu_ps(x.add(i)), s);
            let r = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v);
            let r = _mm256_and_ps(r, _mm256_cmp_ps::<_CMP_ORD_Q>(r, r));
            let r = _mm256_min_ps(_mm256_max_ps(r, flo), fhi);
            let q = _mm256_shuffle_epi8(_mm256_add_epi32(_mm256_cvtps_epi32(r), z), pick);
            let q = _mm_unpacklo_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256::<1>(q));
            _mm_storel_epi64(y.add(i) as *mut _, q);
            i += 8;
        }
        quantize_f32_u8_scalar(x, y, i..range.end, scale, zp, lo, hi);
    }

    /// AVX-512 [`dequantize_u8_f32`]: 16 values at a time.
    ///
    /// # Safety
    /// As [`dequantize_u8_f32`]; the CPU supports AVX-512 F, BW and VL.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub unsafe fn dequantize_u8_f32_avx512(
        x: *const u8,
        y: *mut f32,
        range: Range<usize>,
        scale: f32,
        zp: i32,
    ) {
        let s = _mm512_set1_ps(scale);
        let z = _mm512_set1_epi32(zp);
        let mut i = range.start;
        while i < range.end {
            let m = mask16(range.end - i);
            let q = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, x.add(i) as *const i8));
            let v = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(q, z)), s);
            _mm512_mask_storeu_ps(y.add(i), m, v);
            i += 16;
        }
    }

    /// AVX2 [`dequantize_u8_f32`]: 8 values at a time; the last `len % 8`
    /// scalar.
    ///
    /// # Safety
    /// As [`dequantize_u8_f32`]; the CPU supports AVX2.
    #[target_feature(enable = "avx2")]
    pub unsafe fn dequantize_u8_f32_avx2(
        x: *const u8,
        y: *mut f32,
        range: Range<usize>,
        scale: f32,
        zp: i32,
    ) {
        let s = _mm256_set1_ps(scale);
        let z = _mm256_set1_epi32(zp);
        let n8 = range.len() / 8 * 8;
        let mut i = range.start;
        while i < range.start + n8 {
            let q = _mm256_cvtepu8_epi32(_mm_loadl_epi64(x.add(i) as *const _));
            let v = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(q, z)), s);
            _mm256_storeu_ps(y.add(i), v);
            i += 8;
        }
        dequantize_u8_f32_scalar(x, y, i..range.end, scale, zp);
    }
}
