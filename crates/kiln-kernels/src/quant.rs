//! Requantization: `i32` accumulators to 8-bit outputs, the epilogue of
//! every integer kernel.
//!
//! kiln's integer scheme (see `kiln_ir::quant`): a real value is
//! `scale * (q - zero_point)`. An accumulator `acc` (at scale
//! `s_x * s_w`) becomes the output
//!
//! `y = clamp(requantize(acc, m, e) + zy, lo, hi)`
//!
//! where `(m, e)` is the fixed-point form of the real multiplier
//! `M = s_x * s_w / s_y ≈ m * 2^(e - 31)` (gemmlowp's `QuantizeMultiplier`,
//! `m` in `[2^30, 2^31)`), and [`requantize`] is the exact 64-bit product
//! `acc * m` shifted right by `31 - e` with round half to even (the rounding
//! of ONNX `QuantizeLinear`). A fused `Relu`/`Clip` is the clamp `[lo, hi]`.
//! Every SIMD epilogue computes the same integers as [`requantize_u8`]: the
//! integer kernels equal their scalar references exactly.
//!
//! Storage: kernels read and write `u8`. A model's `int8` tensor is stored
//! as `q + 128` (its bit pattern with the sign bit flipped), with zero point
//! and clamp bounds shifted by 128, which changes no real value: one kernel
//! serves both types, and `u8 x i8` is what VNNI's `vpdpbusd` multiplies.

/// `round_half_even(acc * m * 2^(e - 31))`, computed exactly in 64 bits and
/// saturated to `i32`; `e` in `-31..=30`, `m >= 0`. Equal to
/// `kiln_ir::quant::requantize`.
#[inline(always)]
pub fn requantize(acc: i32, m: i32, e: i32) -> i32 {
    let prod = acc as i64 * m as i64;
    let r = 31 - e;
    let q = prod >> r;
    let rem = prod - (q << r);
    let half = 1i64 << (r - 1);
    let q = if rem > half || (rem == half && (q & 1) == 1) {
        q + 1
    } else {
        q
    };
    q.clamp(i32::MIN as i64, i32::MAX as i64) as i32
}

/// The output byte: `clamp(requantize(acc, m, e) + zy, lo, hi)` (the add
/// saturating, as the reference's).
#[inline(always)]
pub fn requantize_u8(acc: i32, m: i32, e: i32, q: &QOut) -> u8 {
    requantize(acc, m, e).saturating_add(q.zy).clamp(q.lo, q.hi) as u8
}

/// Output zero point and clamp bounds of a requantizing kernel, in the
/// stored (`u8`) encoding: `0 <= lo <= hi <= 255`, `zy` in `0..=255`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QOut {
    /// Output zero point.
    pub zy: i32,
    /// Lowest output value (a fused Relu: `zy`).
    pub lo: i32,
    /// Highest output value.
    pub hi: i32,
}

impl QOut {
    /// Checks the ranges; panics with a message naming the bad field.
    pub fn checked(zy: i32, lo: i32, hi: i32) -> QOut {
        assert!((0..=255).contains(&zy), "output zero point {zy} outside 0..=255");
        assert!(
            0 <= lo && lo <= hi && hi <= 255,
            "clamp [{lo}, {hi}] not within [0, 255]"
        );
        QOut { zy, lo, hi }
    }
}

/// Per-output-channel requantization parameters, padded to a multiple of
/// 16 channels, in the forms the SIMD epilogues load.
#[derive(Debug, Clone)]
pub struct Requant {
    /// Channels (before padding).
    pub n: usize,
    /// Fixed-point multipliers `m` (padding: 0).
    pub mult: Vec<i32>,
    /// Exponents `e` (padding: 0).
    pub exp: Vec<i32>,
    /// Output zero point and clamp.
    pub out: QOut,
    /// Per 16 channels: right shifts `31 - e` as `i64`, even channels
    /// (0, 2, .., 14) then odd ones (AVX-512 lane order of `vpmuldq`).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) shift64: Vec<i64>,
    /// Per 16 channels, same order: `2^(31 - e - 1) - 1` (the rounding
    /// addend before the round-half-even correction).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) round64: Vec<i64>,
    /// `m * 2^(e - 31)` per channel as `f64` (exact: `m` has 31 bits).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) scale64: Vec<f64>,
    /// Per 16 channels: every exponent `e <= 0` (real multiplier below 1,
    /// so `|acc * M| < 2^31`): the `f64` epilogue applies (see `x86::requant16`).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) fast: Vec<bool>,
}

impl Requant {
    /// Builds the tables for `n` channels; `mult`/`exp` have 1 value (per
    /// tensor) or `n`.
    ///
    /// Panics if the lengths do not match, a multiplier is negative or an
    /// exponent is outside `-31..=30` (callers validate the model first).
    pub fn new(n: usize, mult: &[i32], exp: &[i32], out: QOut) -> Requant {
        assert!(
            mult.len() == 1 || mult.len() == n,
            "multipliers: 1 or {n}, got {}",
            mult.len()
        );
        assert!(
            exp.len() == mult.len(),
            "exponents and multipliers differ in length"
        );
        let np = n.div_ceil(16) * 16;
        let get = |v: &[i32], i: usize| if v.len() == 1 { v[0] } else { v[i] };
        let mut m = vec![0i32; np];
        let mut e = vec![0i32; np];
        for i in 0..n {
            m[i] = get(mult, i);
            e[i] = get(exp, i);
            assert!(m[i] >= 0, "negative multiplier {}", m[i]);
            assert!((-31..=30).contains(&e[i]), "exponent {} outside -31..=30", e[i]);
        }
        let mut shift64 = Vec::with_capacity(np);
        let mut round64 = Vec::with_capacity(np);
        for g in 0..np / 16 {
            for parity in 0..2 {
                for j in (parity..16).step_by(2) {
                    let r = 31 - e[g * 16 + j] as i64;
                    shift64.push(r);
                    round64.push((1i64 << (r - 1)) - 1);
                }
            }
        }
        let scale64 = (0..np).map(|i| m[i] as f64 * 2f64.powi(e[i] - 31)).collect();
        let fast = (0..np / 16)
            .map(|g| e[g * 16..g * 16 + 16].iter().all(|&v| v <= 0))
            .collect();
        Requant {
            n,
            mult: m,
            exp: e,
            out,
            shift64,
            round64,
            scale64,
            fast,
        }
    }

    /// Channel `c`'s output byte for accumulator `acc` (the scalar definition).
    #[inline(always)]
    pub fn apply(&self, acc: i32, c: usize) -> u8 {
        requantize_u8(acc, self.mult[c], self.exp[c], &self.out)
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.mult.len() * 16 + self.shift64.len() * 16 + self.fast.len()
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use super::Requant;
    use std::arch::x86_64::*;

    /// `1.5 * 2^52`: adding it to a double `|x| < 2^51` rounds `x` to an
    /// integer (half to even) held in the low bits of the mantissa.
    const MAGIC: f64 = 6_755_399_441_055_744.0;

    /// `rhe(acc * M) + zy` for 16 channels as `i32`, where every exponent of
    /// the group is `<= 0`. `acc` and `M = m * 2^(e - 31)` are exact doubles
    /// and one fused multiply-add `acc * M + 1.5 * 2^52` rounds the exact
    /// product once, to an integer, half to even (the offset is even, so the
    /// tie parity is that of the result): exactly [`requantize`]`(acc, m, e)`,
    /// read from the low 32 bits of each double (`|acc * M| < |acc| < 2^31`);
    /// `zy` is added after (adding it inside the rounding would make ties
    /// follow the parity of the sum, wrong for odd `zy`).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn fma16(rq: &Requant, c0: usize, acc: __m512i) -> __m512i {
        let s = rq.scale64.as_ptr().add(c0);
        let magic = _mm512_set1_pd(MAGIC);
        let a0 = _mm512_cvtepi32_pd(_mm512_castsi512_si256(acc));
        let a1 = _mm512_cvtepi32_pd(_mm512_extracti64x4_epi64::<1>(acc));
        let f0 = _mm512_fmadd_pd(a0, _mm512_loadu_pd(s), magic);
        let f1 = _mm512_fmadd_pd(a1, _mm512_loadu_pd(s.add(8)), magic);
        let idx = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let q = _mm512_permutex2var_epi32(_mm512_castpd_si512(f0), idx, _mm512_castpd_si512(f1));
        _mm512_add_epi32(q, _mm512_set1_epi32(rq.out.zy))
    }

    /// Requantizes 16 accumulators of channels `c0..c0 + 16` (`c0` a
    /// multiple of 16) to 16 bytes, exactly as [`Requant::apply`]: by
    /// `fma16` when the group's multipliers are below 1 (the usual case),
    /// else [`requant16_i64`].
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(crate) unsafe fn requant16(rq: &Requant, c0: usize, acc: __m512i) -> __m128i {
        if !*rq.fast.get_unchecked(c0 / 16) {
            return requant16_i64(rq, c0, acc);
        }
        let q = fma16(rq, c0, acc);
        let q = _mm512_min_epi32(
            _mm512_max_epi32(q, _mm512_set1_epi32(rq.out.lo)),
            _mm512_set1_epi32(rq.out.hi),
        );
        _mm512_cvtepi32_epi8(q)
    }

    /// [`requant16`] of channels `c0..c0 + 32` to 32 bytes (saturating packs,
    /// then the clamp on bytes).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(crate) unsafe fn requant32(rq: &Requant, c0: usize, acc0: __m512i, acc1: __m512i) -> __m256i {
        if !(*rq.fast.get_unchecked(c0 / 16) && *rq.fast.get_unchecked(c0 / 16 + 1)) {
            let y0 = requant16(rq, c0, acc0);
            let y1 = requant16(rq, c0 + 16, acc1);
            return _mm256_inserti128_si256::<1>(_mm256_castsi128_si256(y0), y1);
        }
        let q0 = fma16(rq, c0, acc0);
        let q1 = fma16(rq, c0 + 16, acc1);
        // Per 128-bit lane L: q0[4L..4L+4], q1[4L..4L+4] as i16, then u8 (both saturating).
        let w = _mm512_packs_epi32(q0, q1);
        let b = _mm512_packus_epi16(w, w);
        let idx = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 0, 0, 0, 0, 0, 0, 0, 0);
        let y = _mm512_castsi512_si256(_mm512_permutexvar_epi32(idx, b));
        _mm256_min_epu8(
            _mm256_max_epu8(y, _mm256_set1_epi8(rq.out.lo as u8 as i8)),
            _mm256_set1_epi8(rq.out.hi as u8 as i8),
        )
    }

    /// [`requant16`] in 64-bit integers, for any exponent: `acc * m` is
    /// formed in 64-bit lanes (`vpmuldq`, even and odd channels
    /// separately), rounded half to even by adding
    /// `2^(r-1) - 1 + ((prod >> r) & 1)` before the arithmetic shift by `r`,
    /// clamped to `[lo - zy, hi - zy]` in 64 bits, recombined and offset by `zy`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(crate) unsafe fn requant16_i64(rq: &Requant, c0: usize, acc: __m512i) -> __m128i {
        let m = _mm512_loadu_si512(rq.mult.as_ptr().add(c0) as *const _);
        let sh = rq.shift64.as_ptr().add(c0);
        let rd = rq.round64.as_ptr().add(c0);
        let one = _mm512_set1_epi64(1);
        let lo = _mm512_set1_epi64((rq.out.lo - rq.out.zy) as i64);
        let hi = _mm512_set1_epi64((rq.out.hi - rq.out.zy) as i64);
        let half = |prod: __m512i, r: __m512i, rnd: __m512i| {
            let bit = _mm512_and_si512(_mm512_srav_epi64(prod, r), one);
            let q = _mm512_srav_epi64(_mm512_add_epi64(_mm512_add_epi64(prod, rnd), bit), r);
            _mm512_min_epi64(_mm512_max_epi64(q, lo), hi)
        };
        let pe = _mm512_mul_epi32(acc, m);
        let po = _mm512_mul_epi32(_mm512_srli_epi64(acc, 32), _mm512_srli_epi64(m, 32));
        let qe = half(
            pe,
            _mm512_loadu_si512(sh as *const _),
            _mm512_loadu_si512(rd as *const _),
        );
        let qo = half(
            po,
            _mm512_loadu_si512(sh.add(8) as *const _),
            _mm512_loadu_si512(rd.add(8) as *const _),
        );
        let q = _mm512_mask_blend_epi32(0xAAAA, qe, _mm512_slli_epi64(qo, 32));
        let y = _mm512_add_epi32(q, _mm512_set1_epi32(rq.out.zy));
        _mm512_cvtepi32_epi8(y)
    }

    /// Requantizes 8 accumulators of channels `c0..c0 + 8` (`c0` a
    /// multiple of 8) to 8 bytes (the low half of the result), exactly as
    /// [`Requant::apply`]; AVX2 only.
    ///
    /// As [`requant16`], with what AVX2 lacks done otherwise: the product
    /// `prod` (`|prod| < 2^62`) is offset by `2^63` (its sign bit flipped), so
    /// that the logical shifts `vpsrlvq` act as arithmetic ones, shifted by
    /// the even offset `2^(63 - r)` (`r <= 62`), which leaves the
    /// round-half-to-even parity bit intact and is subtracted afterwards;
    /// the clamp is compare (`vpcmpgtq`) and blend.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) unsafe fn requant8(rq: &Requant, c0: usize, acc: __m256i) -> __m128i {
        let m = _mm256_loadu_si256(rq.mult.as_ptr().add(c0) as *const _);
        // Within the group of 16: even channels c0, c0+2, .. at entry
        // (c0 % 16) / 2, odd ones 8 entries later.
        let base = c0 / 16 * 16 + c0 % 16 / 2;
        let sh = rq.shift64.as_ptr().add(base);
        let rd = rq.round64.as_ptr().add(base);
        let sign = _mm256_set1_epi64x(i64::MIN);
        let one = _mm256_set1_epi64x(1);
        let s63 = _mm256_set1_epi64x(63);
        let lo = _mm256_set1_epi64x((rq.out.lo - rq.out.zy) as i64);
        let hi = _mm256_set1_epi64x((rq.out.hi - rq.out.zy) as i64);
        let half = |prod: __m256i, r: __m256i, rnd: __m256i| {
            let p = _mm256_xor_si256(prod, sign);
            let bit = _mm256_and_si256(_mm256_srlv_epi64(p, r), one);
            let q = _mm256_srlv_epi64(_mm256_add_epi64(_mm256_add_epi64(p, rnd), bit), r);
            let q = _mm256_sub_epi64(q, _mm256_sllv_epi64(one, _mm256_sub_epi64(s63, r)));
            let q = _mm256_blendv_epi8(q, lo, _mm256_cmpgt_epi64(lo, q));
            _mm256_blendv_epi8(q, hi, _mm256_cmpgt_epi64(q, hi))
        };
        let pe = _mm256_mul_epi32(acc, m);
        let po = _mm256_mul_epi32(_mm256_srli_epi64(acc, 32), _mm256_srli_epi64(m, 32));
        let qe = half(
            pe,
            _mm256_loadu_si256(sh as *const _),
            _mm256_loadu_si256(rd as *const _),
        );
        let qo = half(
            po,
            _mm256_loadu_si256(sh.add(8) as *const _),
            _mm256_loadu_si256(rd.add(8) as *const _),
        );
        let q = _mm256_blend_epi32::<0xAA>(qe, _mm256_slli_epi64(qo, 32));
        let y = _mm256_add_epi32(q, _mm256_set1_epi32(rq.out.zy));
        // Byte 0 of each i32 (all in 0..=255) to the low 4 bytes of each lane.
        let pick = _mm256_setr_epi8(
            0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 4, 8, 12, -1, -1, -1, -1, -1, -1,
            -1, -1, -1, -1, -1, -1,
        );
        let b = _mm256_shuffle_epi8(y, pick);
        _mm_unpacklo_epi32(_mm256_castsi256_si128(b), _mm256_extracti128_si256::<1>(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requantize_rounds_half_to_even() {
        // m = 2^30, e = 0: multiply by 0.5.
        let m = 1 << 30;
        assert_eq!(requantize(5, m, 0), 2); // 2.5 -> 2
        assert_eq!(requantize(7, m, 0), 4); // 3.5 -> 4
        assert_eq!(requantize(-5, m, 0), -2);
        assert_eq!(requantize(-7, m, 0), -4);
        assert_eq!(requantize(6, m, 0), 3);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn requant16_equals_scalar() {
        if !(std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw"))
        {
            return;
        }
        let mut s = 0x1234_5678_9abc_def0u64;
        let mut rnd = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        for trial in 0..20_000 {
            let n = 32;
            let mult: Vec<i32> = (0..n).map(|_| (1 << 30) + (rnd() % (1 << 30)) as i32).collect();
            // A third of the trials with multipliers below 1 (the f64 path).
            let mult: Vec<i32> = if trial % 5 == 0 {
                // m = 2^30 (M = 2^(e-32)): products land on ties often.
                vec![1 << 30; n]
            } else {
                mult
            };
            let exp: Vec<i32> = (0..n)
                .map(|_| match trial % 3 {
                    0 => (rnd() % 32) as i32 - 31,
                    1 => (rnd() % 43) as i32 - 12,
                    _ => (rnd() % 62) as i32 - 31,
                })
                .collect();
            let zy = (rnd() % 256) as i32;
            let lo = (rnd() % 128) as i32;
            let out = QOut::checked(zy, lo, lo + (rnd() % 128) as i32);
            let rq = Requant::new(n, &mult, &exp, out);
            let acc: Vec<i32> = (0..n)
                .map(|_| match trial % 3 {
                    0 => rnd() as i32,
                    1 => (rnd() % 100_000) as i32 - 50_000,
                    // ties: multiples of a power of two
                    _ => ((rnd() % 64) as i32 - 32) << (rnd() % 20),
                })
                .collect();
            for c0 in [0, 16] {
                let mut got = [0u8; 16];
                unsafe {
                    let v = std::arch::x86_64::_mm512_loadu_si512(acc.as_ptr().add(c0) as *const _);
                    let y = x86::requant16(&rq, c0, v);
                    std::arch::x86_64::_mm_storeu_si128(got.as_mut_ptr() as *mut _, y);
                }
                if c0 == 0 {
                    let mut got32 = [0u8; 32];
                    unsafe {
                        let v0 = std::arch::x86_64::_mm512_loadu_si512(acc.as_ptr() as *const _);
                        let v1 = std::arch::x86_64::_mm512_loadu_si512(acc.as_ptr().add(16) as *const _);
                        let y = x86::requant32(&rq, 0, v0, v1);
                        std::arch::x86_64::_mm256_storeu_si256(got32.as_mut_ptr() as *mut _, y);
                    }
                    for j in 0..32 {
                        assert_eq!(
                            got32[j],
                            rq.apply(acc[j], j),
                            "requant32: acc {} m {} e {}",
                            acc[j],
                            mult[j],
                            exp[j]
                        );
                    }
                }
                let mut got64 = [0u8; 16];
                unsafe {
                    let v = std::arch::x86_64::_mm512_loadu_si512(acc.as_ptr().add(c0) as *const _);
                    let y = x86::requant16_i64(&rq, c0, v);
                    std::arch::x86_64::_mm_storeu_si128(got64.as_mut_ptr() as *mut _, y);
                }
                for j in 0..16 {
                    let want = rq.apply(acc[c0 + j], c0 + j);
                    let ctx = format!("acc {} m {} e {}", acc[c0 + j], mult[c0 + j], exp[c0 + j]);
                    assert_eq!(got[j], want, "{ctx}");
                    assert_eq!(got64[j], want, "i64 path: {ctx}");
                }
            }
        }
    }

    /// `requant8` (AVX2) and `requant16` (AVX-512) equal the scalar, with
    /// multipliers that make visible ties (`m = 2^30`, or few significant
    /// bits), every exponent, the extremes of the accumulator.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn requant8_and_requant16_equal_scalar() {
        use std::arch::x86_64::*;
        let avx2 = std::arch::is_x86_feature_detected!("avx2");
        let avx512 =
            std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512bw");
        let mut s = 0x0fed_cba9_8765_4321u64;
        let mut rnd = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        for trial in 0..3000 {
            let n = 32;
            let mult: Vec<i32> = (0..n)
                .map(|_| match rnd() % 8 {
                    0 => 0,
                    1 => i32::MAX,
                    2 | 3 => 1 << 30,
                    4 => (1 << 30) + (((rnd() % 64) as i32) << (10 + rnd() % 14)),
                    _ => (1 << 30) + (rnd() % (1 << 30)) as i32,
                })
                .collect();
            let exp: Vec<i32> = (0..n)
                .map(|_| match rnd() % 8 {
                    0 => -31,
                    1 => 30,
                    2 | 3 => -((rnd() % 12) as i32),
                    _ => (rnd() % 62) as i32 - 31,
                })
                .collect();
            let zy = (rnd() % 256) as i32;
            let lo = (rnd() % 128) as i32;
            let out = QOut::checked(zy, lo, lo + (rnd() % 128) as i32);
            let rq = Requant::new(n, &mult, &exp, out);
            let acc: Vec<i32> = (0..n)
                .map(|_| match trial % 4 {
                    0 => rnd() as i32,
                    1 => (rnd() % 2000) as i32 - 1000,
                    2 => [i32::MIN, i32::MAX, 0, -1, 1][(rnd() % 5) as usize],
                    // ties: odd multiples of a power of two
                    _ => (2 * ((rnd() % 64) as i32 - 32) + 1) << (rnd() % 12),
                })
                .collect();
            let want: Vec<u8> = (0..n).map(|i| rq.apply(acc[i], i)).collect();
            let show = |i: usize| format!("acc {} m {} e {} {out:?}", acc[i], mult[i], exp[i]);
            if avx2 {
                for c0 in [0, 8, 16, 24] {
                    let mut got = [0u8; 16];
                    unsafe {
                        let v = _mm256_loadu_si256(acc.as_ptr().add(c0) as *const _);
                        _mm_storeu_si128(got.as_mut_ptr() as *mut _, x86::requant8(&rq, c0, v));
                    }
                    for j in 0..8 {
                        assert_eq!(got[j], want[c0 + j], "requant8: {}", show(c0 + j));
                    }
                    assert_eq!(got[8..], [0; 8]);
                }
            }
            if avx512 {
                for c0 in [0, 16] {
                    let mut got = [0u8; 16];
                    unsafe {
                        let v = _mm512_loadu_si512(acc.as_ptr().add(c0) as *const _);
                        _mm_storeu_si128(got.as_mut_ptr() as *mut _, x86::requant16(&rq, c0, v));
                    }
                    for j in 0..16 {
                        assert_eq!(got[j], want[c0 + j], "requant16: {}", show(c0 + j));
                    }
                }
            }
        }
    }
}
/// Regression: the f64 epilogue once added the output zero point inside
/// the rounding (`acc * M + (1.5 * 2^52 + zy)`), so ties followed the parity
/// of `result + zy`: wrong by one for odd `zy` (caught by the global
/// average pool property test).
#[cfg(all(test, target_arch = "x86_64"))]
mod regression_fma_requant_ties_with_odd_zero_point {
    use super::*;

    #[test]
    fn ties_round_to_even_results_whatever_the_zero_point() {
        if !(std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw"))
        {
            return;
        }
        for zy in [0, 1, 2, 3, 177] {
            // M = 0.5: every odd accumulator is a tie.
            let rq = Requant::new(16, &[1 << 30], &[0], QOut::checked(zy, 0, 255));
            for base in (-600..600).step_by(16) {
                let acc: Vec<i32> = (0..16).map(|j| base + j).collect();
                let mut got = [0u8; 16];
                unsafe {
                    let v = std::arch::x86_64::_mm512_loadu_si512(acc.as_ptr() as *const _);
                    std::arch::x86_64::_mm_storeu_si128(
                        got.as_mut_ptr() as *mut _,
                        x86::requant16(&rq, 0, v),
                    );
                }
                for j in 0..16 {
                    assert_eq!(got[j], rq.apply(acc[j], j), "acc {} zy {zy}", acc[j]);
                }
            }
        }
    }
}
