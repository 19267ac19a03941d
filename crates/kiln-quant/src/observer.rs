//! Observers: from a tensor's calibration statistics to the float range
//! `[min, max]` its activation quantization covers.
//!
//! Every method returns a range inside the observed one (extended to contain
//! 0); [`kiln_ir::quant::choose_qparams_asymmetric`] then turns it into a
//! scale and zero point (it extends the range to contain 0, so that 0 stays
//! exact). Values outside the range saturate when quantized: narrowing the
//! range trades clipping error on rare large values for a finer step on
//! everything else.
//!
//! The histogram methods work on the pass-2 [`Histogram`] (2048 bins over the
//! observed range by default, with an edge exactly at 0) and return ranges
//! whose bounds are bin edges (Percentile interpolates inside a bin). The
//! resolution is one bin: a lone huge outlier leaves few bins for the bulk of
//! the data, which bounds how finely the methods below can place a clip.
//!
//! ## Signed ranges
//!
//! TensorRT's calibrator histograms `|x|` and picks one threshold `T` for a
//! symmetric int8 range `[-T, T]` with 128 levels per side. kiln's activations
//! are asymmetric (uint8 by default), so the histogram keeps the sign. For
//! Entropy, a candidate range grows by one bin on *each* side of 0 per step,
//! `[-min(k, n_neg) bins, +min(k, n_pos) bins]` (a magnitude threshold `T`
//! clamped to the observed range, as ONNX Runtime clamps its entropy
//! thresholds to the observed min and max): a one-sided tensor (e.g. after
//! ReLU) gets TensorRT's one-sided search; a two-sided one gets a threshold on
//! `|x|` that stops clipping a side once that side is fully inside. The
//! quantized reference distribution has 256 levels across the whole
//! candidate range, because that is what an 8-bit asymmetric quantization of
//! that range has (TensorRT's 128 are the levels of one side of a symmetric
//! int8 range). MSE searches the lower and upper bounds independently.

use crate::calib::{Histogram, TensorStats};
use crate::error::{qbail, Result};
use std::fmt;
use std::str::FromStr;

/// How an activation's float range is chosen from its statistics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Method {
    /// The observed `[min, max]`, exact (pass 1 only).
    MinMax,
    /// Clip the range to the given percentile on each side: the lower bound
    /// leaves `(100 - p)`% of the values below it, the upper bound the same
    /// share above it (linear interpolation inside the histogram bin). The
    /// usual value is [`Method::DEFAULT_PERCENTILE`] (99.99); `p` is in
    /// `(50, 100]`, and 100 is MinMax.
    Percentile(f64),
    /// Minimum KL divergence between the clipped distribution and its 8-bit
    /// quantized version (Migacz, "8-bit Inference with TensorRT", GTC 2017);
    /// see [`entropy_range`].
    Entropy,
    /// Minimum expected squared error, rounding noise plus clipping error,
    /// over the histogram; see [`mse_range`].
    Mse,
}

impl Method {
    /// The default percentile of [`Method::Percentile`].
    pub const DEFAULT_PERCENTILE: f64 = 99.99;

    /// Lower-case name: `minmax`, `percentile`, `entropy`, `mse`.
    pub fn name(self) -> &'static str {
        match self {
            Method::MinMax => "minmax",
            Method::Percentile(_) => "percentile",
            Method::Entropy => "entropy",
            Method::Mse => "mse",
        }
    }

    /// True for the methods that need the pass-2 histograms.
    pub fn needs_histogram(self) -> bool {
        !matches!(self, Method::MinMax)
    }

    /// Checks the method's parameter.
    ///
    /// Errors ([`crate::QuantErrorKind::InvalidOptions`]): a percentile
    /// outside `(50, 100]` or not finite.
    pub fn validate(self) -> Result<()> {
        if let Method::Percentile(p) = self {
            if !(p.is_finite() && p > 50.0 && p <= 100.0) {
                qbail!(InvalidOptions, "percentile must be in (50, 100], got {p}");
            }
        }
        Ok(())
    }

    /// The float range for a tensor with statistics `stats`: inside
    /// `[min(stats.min, 0), max(stats.max, 0)]`, `[0, 0]` for a tensor with no
    /// finite value.
    ///
    /// Errors: [`crate::QuantErrorKind::MissingStats`] if the method needs a
    /// histogram and `stats` has none; as [`Method::validate`].
    pub fn range(self, stats: &TensorStats) -> Result<(f32, f32)> {
        self.validate()?;
        if stats.count == 0 {
            return Ok((0.0, 0.0));
        }
        let h = match (self, &stats.histogram) {
            (Method::MinMax, _) => return Ok((stats.min, stats.max)),
            (_, Some(h)) => h,
            (_, None) => qbail!(
                MissingStats,
                "method {self} needs histograms: calibrate with histograms on"
            ),
        };
        let (lo, hi) = match self {
            Method::Percentile(p) => percentile_range(h, p),
            Method::Entropy => entropy_range(h, 256),
            _ => mse_range(h, 256),
        };
        let lo_obs = (stats.min as f64).min(0.0);
        let hi_obs = (stats.max as f64).max(0.0);
        Ok((lo.clamp(lo_obs, hi_obs) as f32, hi.clamp(lo_obs, hi_obs) as f32))
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Method::Percentile(p) => write!(f, "percentile({p})"),
            m => f.write_str(m.name()),
        }
    }
}

impl FromStr for Method {
    type Err = String;
    /// `minmax`, `entropy`, `mse`, `percentile` (99.99) or `percentile:P`.
    fn from_str(s: &str) -> Result<Method, String> {
        match s {
            "minmax" => Ok(Method::MinMax),
            "entropy" => Ok(Method::Entropy),
            "mse" => Ok(Method::Mse),
            "percentile" => Ok(Method::Percentile(Method::DEFAULT_PERCENTILE)),
            _ => {
                if let Some(p) = s.strip_prefix("percentile:") {
                    let v: f64 = p.parse().map_err(|_| format!("bad percentile '{p}'"))?;
                    let m = Method::Percentile(v);
                    m.validate().map_err(|e| e.message)?;
                    Ok(m)
                } else {
                    Err(format!(
                        "unknown calibration method '{s}' (minmax, percentile, percentile:P, entropy, mse)"
                    ))
                }
            }
        }
    }
}

/// The range between the `(100 - p)`th and the `p`th percentiles of the
/// histogram, interpolating linearly inside a bin (values in a bin are taken
/// as uniform). `p` in `(50, 100]`; an empty histogram gives `[0, 0]`.
pub fn percentile_range(h: &Histogram, p: f64) -> (f64, f64) {
    let total = h.total();
    if total == 0 {
        return (0.0, 0.0);
    }
    let tail = ((100.0 - p) / 100.0).max(0.0) * total as f64;
    let mut lo = h.edge(0);
    let mut cum = 0.0;
    for (b, &c) in h.counts.iter().enumerate() {
        let c = c as f64;
        if c > 0.0 && cum + c > tail {
            lo = h.edge(b) + (tail - cum) / c * h.width;
            break;
        }
        cum += c;
    }
    let mut hi = h.edge(h.len());
    cum = 0.0;
    for (b, &c) in h.counts.iter().enumerate().rev() {
        let c = c as f64;
        if c > 0.0 && cum + c > tail {
            hi = h.edge(b + 1) - (tail - cum) / c * h.width;
            break;
        }
        cum += c;
    }
    (lo.min(hi), hi.max(lo))
}

/// The range minimising the KL divergence `KL(P || Q)` between the clipped
/// reference distribution `P` and its quantization `Q` to `levels` levels
/// (256 for 8 bits), after Migacz, "8-bit Inference with TensorRT" (GTC
/// 2017), slides 29-37.
///
/// For each candidate window of bins (growing around 0 as described in the
/// module documentation, at least `levels` bins wide):
///
/// * `P` = the window's counts, with the counts left of it added to its first
///   bin and those right of it to its last (the clipped values saturate there);
/// * `Q` = the window's own counts (without the outliers) merged into
///   `levels` consecutive groups (bin `i` of a window of `len` bins in group
///   `floor(i * levels / len)`, so groups have `floor` or `ceil(len / levels)`
///   bins), each group's total spread evenly over the group's bins where `P`
///   is not zero (the expansion of the reference implementation, as in
///   MXNet's and ONNX Runtime's ports). Those ports put the remainder of
///   `len / levels` into the last group, which makes windows of
///   `k * levels - 1` bins look artificially good (their other groups are
///   single bins that match `P` exactly); even groups avoid that bias;
/// * where `P > 0` but `Q = 0` (only possible in the edge bins), `Q` is
///   floored to 1e-4 counts, as those ports' 1e-4 smoothing;
/// * atoms (point masses): the exact zeros ([`Histogram::zeros`], e.g. the
///   many zeros after a ReLU), the values exactly at the bottom or top of the
///   observed range ([`Histogram::at_min`], [`Histogram::at_max`], e.g. the
///   6s of a saturated ReLU6), and the spikes of the remaining counts (bins
///   holding over 4 times the median of their 16 neighbours and at least
///   half a mean bin more than it; the excess is the atom, see `spikes`)
///   leave the bins. Zeros are in `P` and `Q` unchanged (0 is exactly
///   representable); a range end's atom or a spike too when the window
///   contains it (it lands on one level), else it is clipped into `P`'s edge
///   bin like any outlier. Merged into a group of bins, such a spike would be
///   spread over the group by `Q`'s expansion, a divergence that the
///   quantization does not cause: a point mass rounds to one level, whatever
///   the width of the group; only the smoothing of a density inside a group
///   is a loss of information. Since the spreading grows with the group
///   width, each spike penalises wide windows by about `mass * ln(bins per
///   level)`: a ReLU's zero spike would make every window wider than
///   `levels` bins look bad, and the per-channel constants of flat image
///   regions (after a convolution, every channel of a background patch is one
///   value) made the search clip ReLU6 outputs to ~1.5 of 6 on Fashion-MNIST
///   (13.4 dB logit SQNR, against 39 dB for MinMax; EfficientNet-Lite0's
///   last depthwise ReLU6s were clipped to ~3.5-4 the same way). The
///   reference expansion spreads every group alike; taking point masses out
///   of it, as exact values, is kiln's adaptation;
/// * both are normalised and `KL = sum P ln(P / Q)`.
///
/// Windows grow by `max(1, n / 1024)` bins per side and step (at most ~512
/// candidates; 2 bins with the default 2048), which bounds the cost at
/// O(512 n) per tensor. Returns the window's edges. A histogram of fewer
/// than `levels` bins, or an empty one, gives its whole range.
pub fn entropy_range(h: &Histogram, levels: usize) -> (f64, f64) {
    let n = h.len();
    let levels = levels.max(2);
    let total: u64 = h.total();
    if n <= levels || total == 0 {
        return (h.edge(0), h.edge(n));
    }
    let z = h.zero_edge;
    let (nneg, npos) = (z, n - z);
    // Atoms: exact zeros (0 is on every grid), the values at the bottom and
    // top of the full range (e.g. a ReLU6's saturated 6s), which a window
    // reaching that end puts on its first or last level, and the spikes of
    // the other bins. They leave the bins and enter P and Q unchanged when
    // inside the window; outside, they are clipped into P's edge bin like any
    // other outlier.
    let mut counts = h.counts.clone();
    let mut take = |b: usize, want: u64| -> f64 {
        let got = want.min(counts[b]);
        counts[b] -= got;
        got as f64
    };
    let zeros = if z < n { take(z, h.zeros) } else { 0.0 };
    let at_min = take(h.bin_of(h.min), h.at_min);
    let at_max = take(h.bin_of(h.max), h.at_max);
    // Spikes (see `spikes`), found once the other atoms are out. `sprefix`
    // sums their masses as `prefix` sums the remaining counts.
    let spike = spikes(&counts);
    let mut sprefix = vec![0u64; n + 1];
    for b in 0..n {
        counts[b] -= spike[b];
        sprefix[b + 1] = sprefix[b] + spike[b];
    }
    let total: u64 = counts.iter().sum();
    let spiked = sprefix[n];
    let mut prefix = vec![0u64; n + 1];
    for b in 0..n {
        prefix[b + 1] = prefix[b] + counts[b];
    }
    let mut best = (f64::INFINITY, 0usize, n);
    let mut p = vec![0f64; n];
    let mut q = vec![0f64; n];
    let mut prev = (usize::MAX, usize::MAX);
    // At most ~512 candidate windows: a step of kmax / 512 bins (1 to 4 bins
    // with 2048 bins; the last window, the whole range, is always tried).
    let kmax = nneg.max(npos);
    let step = (kmax / 512).max(1);
    let candidates = (1..=kmax).filter(|k| k % step == 0 || *k == kmax);
    for k in candidates {
        let (a, b) = (k.min(nneg), k.min(npos));
        if a + b < levels || (a, b) == prev {
            continue;
        }
        prev = (a, b);
        let (start, end) = (z - a, z + b);
        let len = end - start;
        let p = &mut p[..len];
        let q = &mut q[..len];
        for (pi, &c) in p.iter_mut().zip(&counts[start..end]) {
            *pi = c as f64;
        }
        // Outliers, spikes included, saturate into the edge bins.
        p[0] += (prefix[start] + sprefix[start]) as f64;
        p[len - 1] += (total - prefix[end] + spiked - sprefix[end]) as f64;
        let mut atoms = zeros + (sprefix[end] - sprefix[start]) as f64;
        if start == 0 {
            atoms += at_min;
        } else {
            p[0] += at_min;
        }
        if end == n {
            atoms += at_max;
        } else {
            p[len - 1] += at_max;
        }
        // Bin i of the window belongs to level floor(i * levels / len): groups
        // of floor or ceil(len / levels) bins, spread evenly.
        let mut g0 = 0;
        while g0 < len {
            let level = g0 * levels / len;
            let mut g1 = g0 + 1;
            while g1 < len && g1 * levels / len == level {
                g1 += 1;
            }
            let sum: u64 = prefix[start + g1] - prefix[start + g0];
            let nz = p[g0..g1].iter().filter(|&&v| v > 0.0).count();
            let share = if nz == 0 { 0.0 } else { sum as f64 / nz as f64 };
            for i in g0..g1 {
                q[i] = if p[i] > 0.0 { share } else { 0.0 };
            }
            g0 = g1;
        }
        let psum: f64 = p.iter().sum::<f64>() + atoms;
        let mut qsum = atoms;
        for i in 0..len {
            if p[i] > 0.0 && q[i] <= 0.0 {
                q[i] = 1e-4;
            }
            qsum += q[i];
        }
        // An atom `a` contributes (a / psum) ln((a / psum) / (a / qsum)):
        // all of them together, (atoms / psum) ln(qsum / psum).
        let mut kl = atoms / psum * (qsum / psum).ln();
        for i in 0..len {
            if p[i] > 0.0 {
                let pi = p[i] / psum;
                kl += pi * (pi / (q[i] / qsum)).ln();
            }
        }
        if kl < best.0 {
            best = (kl, start, end);
        }
    }
    if best.0.is_infinite() {
        return (h.edge(0), h.edge(n));
    }
    (h.edge(best.1), h.edge(best.2))
}

/// Neighbours on each side of a bin that [`spikes`] compares it with.
const SPIKE_RADIUS: usize = 8;
/// How many times the median of its neighbours a spike's bin holds, at least.
const SPIKE_RATIO: f64 = 4.0;

/// The point masses of a histogram's counts, per bin: a bin is a spike when
/// it holds more than [`SPIKE_RATIO`] times the median `m` of its (up to) 16
/// neighbours ([`SPIKE_RADIUS`] each side) and its excess `count - m` is at
/// least half a mean bin (`total / (2 n)`); its point mass is that excess,
/// and `m` stays in the bin as the continuous density there. The median
/// ignores the other spikes among the neighbours (up to 7 of 16). The mass
/// floor keeps sparse regions out, where single counts are many times a
/// median of 0 by chance: calling such noise exact would make wide windows
/// look better than they are, and a spike that small barely moves the KL.
fn spikes(counts: &[u64]) -> Vec<u64> {
    let n = counts.len();
    let total: u64 = counts.iter().sum();
    let floor = total as f64 / (2 * n) as f64;
    let mut nb = Vec::with_capacity(2 * SPIKE_RADIUS);
    (0..n)
        .map(|b| {
            let c = counts[b] as f64;
            if c < floor {
                return 0;
            }
            nb.clear();
            nb.extend(counts[b.saturating_sub(SPIKE_RADIUS)..b].iter().copied());
            nb.extend(
                counts[(b + 1).min(n)..(b + 1 + SPIKE_RADIUS).min(n)]
                    .iter()
                    .copied(),
            );
            if nb.is_empty() {
                return 0;
            }
            nb.sort_unstable();
            let m = (nb[(nb.len() - 1) / 2] + nb[nb.len() / 2]) as f64 / 2.0;
            if c > SPIKE_RATIO * m && c - m >= floor {
                (c - m).round() as u64
            } else {
                0
            }
        })
        .collect()
}

/// The range `[lo, hi]` (bin edges, `lo <= 0 <= hi`) minimising the expected
/// squared quantization error of the histogram's values with `levels` levels
/// (256 for 8 bits), searched over all pairs of edges:
///
/// ```text
/// E(lo, hi) = sum_{x < lo} n(x) (x - lo)^2 + sum_{x > hi} n(x) (x - hi)^2   (clipping)
///           + N_inside * step^2 / 12,   step = (hi - lo) / (levels - 1)     (rounding)
/// ```
///
/// with `x` the bin centres and `n(x)` their counts. The rounding term is the
/// uniform-noise model of rounding to a grid of step `step` (as in Banner,
/// Nahshan and Soudry, "Post training 4-bit quantization of convolutional
/// networks for rapid-deployment", NeurIPS 2019, eq. 3-5); exact zeros are
/// left out of `N_inside` since 0 is always representable. Prefix sums make
/// each candidate O(1). An empty histogram gives `[0, 0]`.
pub fn mse_range(h: &Histogram, levels: usize) -> (f64, f64) {
    let n = h.len();
    let total = h.total();
    if total == 0 {
        return (0.0, 0.0);
    }
    let steps = (levels.max(2) - 1) as f64;
    let z = h.zero_edge;
    let mut c = vec![0f64; n + 1];
    let mut s1 = vec![0f64; n + 1];
    let mut s2 = vec![0f64; n + 1];
    for b in 0..n {
        let cnt = h.counts[b] as f64;
        let x = h.center(b);
        c[b + 1] = c[b] + cnt;
        s1[b + 1] = s1[b] + cnt * x;
        s2[b + 1] = s2[b] + cnt * x * x;
    }
    let zeros = h.zeros as f64;
    let mut best = (f64::INFINITY, 0usize, n);
    for i in 0..=z {
        let lo = h.edge(i);
        let left = s2[i] - 2.0 * lo * s1[i] + lo * lo * c[i];
        for j in z..=n {
            if i == j {
                continue;
            }
            let hi = h.edge(j);
            let right = (s2[n] - s2[j]) - 2.0 * hi * (s1[n] - s1[j]) + hi * hi * (c[n] - c[j]);
            let step = (hi - lo) / steps;
            let inside = (c[j] - c[i] - if j > z { zeros } else { 0.0 }).max(0.0);
            let e = left.max(0.0) + right.max(0.0) + inside * step * step / 12.0;
            if e < best.0 {
                best = (e, i, j);
            }
        }
    }
    (h.edge(best.1), h.edge(best.2))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic uniform [0, 1) numbers (64-bit LCG, top 24 bits).
    pub(crate) struct Lcg(u64);
    impl Lcg {
        pub(crate) fn next(&mut self) -> f64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((self.0 >> 40) as f64 + 0.5) / (1u64 << 24) as f64
        }
        /// Standard normal (Box-Muller).
        fn normal(&mut self) -> f64 {
            let (u, v) = (self.next(), self.next());
            (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
        }
        /// Laplace(0, b).
        fn laplace(&mut self, b: f64) -> f64 {
            let u = self.next() - 0.5;
            -b * u.signum() * (1.0 - 2.0 * u.abs()).ln()
        }
    }

    fn stats_of(xs: &[f32], bins: usize) -> TensorStats {
        let min = xs.iter().copied().fold(f32::INFINITY, f32::min);
        let max = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut h = Histogram::new(min, max, bins);
        h.add(xs);
        TensorStats {
            min,
            max,
            count: xs.len() as u64,
            non_finite: 0,
            histogram: Some(h),
        }
    }

    #[test]
    fn histogram_has_an_edge_at_zero() {
        let h = Histogram::new(-1.0, 3.0, 2048);
        assert_eq!(h.edge(h.zero_edge), 0.0);
        assert!(h.len() == 2048 || h.len() == 2049, "{}", h.len());
        assert!(h.edge(0) <= -1.0 && h.edge(h.len()) >= 3.0);
        let mut h = Histogram::new(0.0, 6.0, 100);
        assert_eq!((h.zero_edge, h.len()), (0, 100));
        h.add(&[0.0, 0.0, 5.99, 6.0, f32::NAN, -0.0]);
        assert_eq!(h.counts[0], 3);
        assert_eq!(h.counts[99], 2);
        assert_eq!((h.total(), h.zeros), (5, 3));
        let h = Histogram::new(-2.0, -1.0, 64);
        // All negative: one extra bin [0, width) for exact zeros.
        assert_eq!((h.zero_edge, h.len()), (64, 65));
        let h = Histogram::new(0.0, 0.0, 64);
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn minmax_is_exact() {
        let xs = [-0.75f32, 3.5, 0.25, 1.0];
        let s = stats_of(&xs, 2048);
        assert_eq!(Method::MinMax.range(&s).unwrap(), (-0.75, 3.5));
        let mut s = s;
        s.histogram = None;
        assert_eq!(Method::MinMax.range(&s).unwrap(), (-0.75, 3.5));
        let e = Method::Mse.range(&s).unwrap_err();
        assert_eq!(e.kind, crate::QuantErrorKind::MissingStats);
    }

    #[test]
    fn percentile_clips_a_lone_outlier() {
        let mut r = Lcg(1);
        let mut xs: Vec<f32> = (0..200_000).map(|_| r.normal() as f32).collect();
        xs.push(1000.0);
        let s = stats_of(&xs, 2048);
        let (lo, hi) = Method::Percentile(99.99).range(&s).unwrap();
        // The 99.99th percentile of N(0, 1) is 3.72; one bin is ~0.49 wide.
        assert!((3.0..5.0).contains(&hi), "hi {hi}");
        assert!((-5.0..-3.0).contains(&lo), "lo {lo}");
        // 100 is MinMax.
        assert_eq!(Method::Percentile(100.0).range(&s).unwrap(), (s.min, 1000.0));
        // Finer histogram, tighter estimate.
        let (_, hi) = Method::Percentile(99.99).range(&stats_of(&xs, 1 << 16)).unwrap();
        assert!((hi - 3.72).abs() < 0.1, "hi {hi}");
        assert!(Method::Percentile(40.0).validate().is_err());
        assert!(Method::Percentile(f64::NAN).validate().is_err());
    }

    /// Sum of squared errors of quantizing `xs` to 256 levels over `[lo, hi]`
    /// (as QuantizeLinear then DequantizeLinear with a zero point on the grid).
    fn quant_sse(xs: &[f32], lo: f64, hi: f64) -> f64 {
        let step = (hi - lo) / 255.0;
        xs.iter()
            .map(|&x| {
                let x = x as f64;
                let q = ((x.clamp(lo, hi) - lo) / step).round() * step + lo;
                (x - q).powi(2)
            })
            .sum()
    }

    #[test]
    fn entropy_and_mse_narrower_than_minmax_on_laplacian_with_outliers() {
        let mut r = Lcg(7);
        let mut xs: Vec<f32> = (0..200_000).map(|_| r.laplace(1.0) as f32).collect();
        xs.extend([60.0f32, -55.0, 58.0]);
        let s = stats_of(&xs, 2048);
        let (mn, mx) = Method::MinMax.range(&s).unwrap();
        assert_eq!((mn, mx), (-55.0, 60.0));
        let minmax_sse = quant_sse(&xs, mn as f64, mx as f64);
        for m in [Method::Entropy, Method::Mse] {
            let (lo, hi) = m.range(&s).unwrap();
            let sse = quant_sse(&xs, lo as f64, hi as f64);
            println!("{m}: [{lo}, {hi}] (SSE {sse:.0}) vs minmax [{mn}, {mx}] (SSE {minmax_sse:.0})");
            assert!(hi < 0.9 * mx && lo > 0.9 * mn, "{m}: [{lo}, {hi}]");
            // The bulk of a Laplace(0, 1) is within +-5 and its 99.99th
            // percentile is 8.5: a sensible clip keeps at least +-4.
            assert!(hi > 4.0 && lo < -4.0, "{m}: [{lo}, {hi}]");
        }
        // Entropy clips near the natural tail (largest of 200k Laplace
        // samples ~ ln(1e5) = 11.5); MSE keeps part of the outliers' range,
        // since clipping three values by ~50 costs more than the coarser step,
        // and its true squared error beats MinMax's.
        let (lo, hi) = Method::Entropy.range(&s).unwrap();
        assert!(hi < 15.0 && lo > -15.0, "entropy [{lo}, {hi}]");
        let (lo, hi) = Method::Mse.range(&s).unwrap();
        assert!(quant_sse(&xs, lo as f64, hi as f64) < minmax_sse);
    }

    #[test]
    fn entropy_and_mse_keep_the_range_of_a_uniform() {
        let mut r = Lcg(3);
        let xs: Vec<f32> = (0..100_000).map(|_| (r.next() * 2.0 - 1.0) as f32).collect();
        let s = stats_of(&xs, 2048);
        for m in [Method::Entropy, Method::Mse] {
            let (lo, hi) = m.range(&s).unwrap();
            assert!(lo < -0.95 && hi > 0.95, "{m}: [{lo}, {hi}]");
        }
        // One-sided (post-ReLU) data: the range starts at 0.
        let xs: Vec<f32> = (0..100_000).map(|_| (r.next() as f32 - 0.3).max(0.0)).collect();
        let s = stats_of(&xs, 2048);
        for m in [Method::Entropy, Method::Mse, Method::Percentile(99.99)] {
            let (lo, hi) = m.range(&s).unwrap();
            assert!(lo.abs() < 1e-3 && hi > 0.65, "{m}: [{lo}, {hi}]");
        }
    }

    /// A ReLU6 output over images with flat regions: zeros, a continuous
    /// part, saturated 6s, and 12 per-channel constants (point masses of 2 %
    /// each, as flat regions give after a convolution). Spreading the
    /// constants over wide groups made the KL minimum clip at 2.0 (of 6).
    #[test]
    fn entropy_does_not_clip_spiky_relu6_histograms() {
        let mut r = Lcg(5);
        let consts: Vec<f32> = (0..12)
            .map(|i| 0.2 + 0.15 * i as f32 + 0.003 * (i * i) as f32)
            .collect();
        let xs: Vec<f32> = (0..400_000)
            .map(|i| match i % 100 {
                0..=35 => 0.0,
                36..=59 => consts[i % 12],
                _ => (r.laplace(1.2).abs() as f32).min(6.0),
            })
            .collect();
        let s = stats_of(&xs, 2048);
        let h = s.histogram.as_ref().unwrap();
        // The spikes: the 12 constants, and the zeros and 6s (counted as
        // atoms of their own by `entropy_range`, which takes them out first).
        let found: Vec<usize> = (0..h.len()).filter(|&b| spikes(&h.counts)[b] > 0).collect();
        let mut want: Vec<usize> = consts.iter().map(|&c| h.bin_of(c)).collect();
        want.insert(0, 0);
        want.push(h.len() - 1);
        assert_eq!(found, want);
        let (lo, hi) = Method::Entropy.range(&s).unwrap();
        assert!(lo == 0.0 && hi > 5.0, "[{lo}, {hi}]");
        // A smooth histogram has no spikes.
        let xs: Vec<f32> = (0..400_000).map(|_| r.laplace(1.0) as f32).collect();
        let s = stats_of(&xs, 2048);
        assert!(spikes(&s.histogram.unwrap().counts).iter().all(|&c| c == 0));
    }

    #[test]
    fn mse_prefers_clipping_a_heavy_tail() {
        // Expected error: the chosen range beats minmax and percentile 100 by
        // the model it minimises.
        let mut r = Lcg(11);
        let xs: Vec<f32> = (0..100_000).map(|_| r.laplace(0.5) as f32).collect();
        let s = stats_of(&xs, 2048);
        let h = s.histogram.as_ref().unwrap();
        let (lo, hi) = mse_range(h, 256);
        let err = |lo: f64, hi: f64| quant_sse(&xs, lo, hi);
        let (mn, mx) = (s.min as f64, s.max as f64);
        assert!(err(lo, hi) < err(mn, mx), "[{lo}, {hi}] vs [{mn}, {mx}]");
    }

    #[test]
    fn method_names_parse() {
        for m in [Method::MinMax, Method::Entropy, Method::Mse] {
            assert_eq!(m.name().parse::<Method>().unwrap(), m);
        }
        assert_eq!("percentile".parse::<Method>().unwrap(), Method::Percentile(99.99));
        assert_eq!(
            "percentile:99.9".parse::<Method>().unwrap(),
            Method::Percentile(99.9)
        );
        assert!("percentile:101".parse::<Method>().is_err());
        assert!("kl".parse::<Method>().is_err());
    }
}
