//! Calibration: streaming statistics of every float tensor of the prepared
//! graph over a calibration set.
//!
//! [`calibrate`] runs the model ([`prepare`]d first) over the data with
//! [`Session::run_observed`], which shows each value as it is produced and
//! frees it after its last use: no activation outlives the node that reads it
//! last, so memory stays that of one inference plus the statistics.
//!
//! * Pass 1, per float tensor: exact min and max, element count, count of
//!   non-finite values (skipped); per Conv/Gemm/MatMul layer: the mean of its
//!   input per input channel (for bias correction); the first
//!   [`CalibOptions::probe_samples`] input sets are kept as a probe for
//!   [`crate::mixed_precision`].
//! * Pass 2 (only when [`CalibOptions::histograms`]): a histogram of each
//!   float tensor over its pass-1 range (extended to contain 0), with a bin
//!   edge exactly at 0 (see [`Histogram`]). Methods other than MinMax need it.

use crate::error::{qbail, Result};
use crate::prepare;
use kiln_ir::{Model, Node, Tensor};
use kiln_runtime::{Session, SessionOptions};
use std::collections::{BTreeMap, HashMap};

/// A source of calibration input sets.
///
/// One item is one input set of the model: one tensor per graph input, in
/// the graph's input order, with the dtypes and shapes the model accepts (a
/// leading batch dimension may hold several samples). [`calibrate`] asks for
/// one or two passes over the same data, so [`CalibrationData::pass`] must
/// restart from the beginning each time it is called.
///
/// Implemented for an in-memory `Vec<Vec<Tensor>>`; the `kiln` facade
/// implements it for image folders and tensor files.
pub trait CalibrationData {
    /// Number of input sets in one pass, if known (for progress reporting).
    fn len(&self) -> Option<usize>;
    /// True when one pass is known to yield nothing.
    fn is_empty(&self) -> bool {
        self.len() == Some(0)
    }
    /// Starts a pass from the first input set. Items are produced lazily, so
    /// a source reading files holds one input set at a time; an item that
    /// fails to load is an `Err` and stops calibration.
    fn pass(&mut self) -> Result<Box<dyn Iterator<Item = Result<Vec<Tensor>>> + '_>>;
}

impl CalibrationData for Vec<Vec<Tensor>> {
    fn len(&self) -> Option<usize> {
        Some(Vec::len(self))
    }
    fn pass(&mut self) -> Result<Box<dyn Iterator<Item = Result<Vec<Tensor>>> + '_>> {
        Ok(Box::new(self.iter().map(|s| Ok(s.clone()))))
    }
}

/// Progress of [`calibrate`], reported after every input set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CalibProgress {
    /// Current pass, 1-based.
    pub pass: usize,
    /// Number of passes of this calibration (1 or 2).
    pub passes: usize,
    /// Input sets done in this pass.
    pub done: usize,
    /// Input sets per pass, if the source knows ([`CalibrationData::len`]).
    pub total: Option<usize>,
}

/// What [`calibrate`] collects.
#[derive(Debug, Clone, PartialEq)]
pub struct CalibOptions {
    /// Run pass 2 and collect histograms (needed by every method but MinMax;
    /// see [`crate::Method::needs_histogram`]). Default true.
    pub histograms: bool,
    /// Histogram bins over each tensor's range (default 2048, as TensorRT's
    /// calibrator). At least 16.
    pub bins: usize,
    /// Input sets kept for the sensitivity analysis of
    /// [`crate::mixed_precision`] (default 4; 0 keeps none).
    pub probe_samples: usize,
    /// Threads of the session that runs the model (default: all available).
    pub threads: usize,
}

impl Default for CalibOptions {
    fn default() -> CalibOptions {
        CalibOptions {
            histograms: true,
            bins: 2048,
            probe_samples: 4,
            threads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        }
    }
}

impl CalibOptions {
    /// Default options, with histograms only if `method` needs them (MinMax
    /// then calibrates in one pass).
    pub fn for_method(method: crate::Method) -> CalibOptions {
        CalibOptions {
            histograms: method.needs_histogram(),
            ..CalibOptions::default()
        }
    }
}

/// A histogram of one tensor's values over a range that contains 0, with a
/// bin edge exactly at 0.
///
/// Bin `b` covers `[lo + b * width, lo + (b + 1) * width)`; values outside the
/// range (possible only if pass 2 sees other data than pass 1) are counted in
/// the first or last bin. Edge `zero_edge` is exactly 0: bins below it hold
/// negative values, bins from it on hold values `>= 0`. Built from a pass-1
/// range `[min, max]`: `[lo0, hi0] = [min(min, 0), max(max, 0)]`,
/// `width = (hi0 - lo0) / bins`, `zero_edge = ceil(-lo0 / width)`,
/// `len = zero_edge + ceil(hi0 / width)` (`bins` or `bins + 1`).
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// Left edge (`<= 0`).
    pub lo: f64,
    /// Bin width (`> 0`).
    pub width: f64,
    /// Index of the edge at 0.
    pub zero_edge: usize,
    /// Count per bin.
    pub counts: Vec<u64>,
    /// How many of the counted values were exactly 0 (they are in bin
    /// `zero_edge`, and quantize exactly since 0 is always representable).
    pub zeros: u64,
    /// The pass-1 minimum the histogram was built for.
    pub min: f32,
    /// The pass-1 maximum the histogram was built for.
    pub max: f32,
    /// Values exactly equal to `min`, counted only when `min < 0` (then
    /// `min` is the bottom of the full range: e.g. a saturating activation's
    /// spike); they are also in their bin.
    pub at_min: u64,
    /// Values exactly equal to `max`, counted only when `max > 0` (e.g. the
    /// values a ReLU6 saturated at 6); they are also in their bin.
    pub at_max: u64,
}

impl Histogram {
    /// An empty histogram for values in `[min, max]` with about `bins` bins
    /// (`bins >= 1`; finite bounds, `min <= max`).
    pub fn new(min: f32, max: f32, bins: usize) -> Histogram {
        let lo0 = (min as f64).min(0.0);
        let hi0 = (max as f64).max(0.0);
        let bins = bins.max(1);
        if hi0 <= lo0 {
            // All zeros: one bin [0, 1).
            return Histogram {
                lo: 0.0,
                width: 1.0,
                zero_edge: 0,
                counts: vec![0],
                zeros: 0,
                min,
                max,
                at_min: 0,
                at_max: 0,
            };
        }
        let width = (hi0 - lo0) / bins as f64;
        let nneg = (-lo0 / width).ceil() as usize;
        let npos = ((hi0 / width).ceil() as usize).max(1);
        Histogram {
            lo: -(nneg as f64) * width,
            width,
            zero_edge: nneg,
            counts: vec![0; nneg + npos],
            zeros: 0,
            min,
            max,
            at_min: 0,
            at_max: 0,
        }
    }

    /// Number of bins.
    pub fn len(&self) -> usize {
        self.counts.len()
    }
    /// True if there are no bins (never, for a histogram built by [`Histogram::new`]).
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }
    /// Edge `i` (`0..=len`): `lo + i * width`; edge `zero_edge` is exactly 0.
    pub fn edge(&self, i: usize) -> f64 {
        if i == self.zero_edge {
            0.0
        } else {
            (i as f64 - self.zero_edge as f64) * self.width
        }
    }
    /// Center of bin `b`.
    pub fn center(&self, b: usize) -> f64 {
        (b as f64 - self.zero_edge as f64 + 0.5) * self.width
    }
    /// Total count.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }
    /// The bin of a finite value `x`: exact at 0 (bin `zero_edge`); values
    /// outside the range go to the first or last bin.
    #[inline]
    pub fn bin_of(&self, x: f32) -> usize {
        // `as` truncates, which is floor for the values >= 0, and saturates
        // the negative ones to bin 0.
        ((x as f64 / self.width + self.zero_edge as f64) as usize).min(self.counts.len() - 1)
    }
    /// Counts the finite values of `xs` (non-finite ones are skipped).
    pub fn add(&mut self, xs: &[f32]) {
        let last = self.counts.len() - 1;
        let inv = 1.0 / self.width;
        let z = self.zero_edge as f64;
        let (mut zeros, mut at_min, mut at_max) = (0u64, 0u64, 0u64);
        // Bounds that can be atoms (NaN compares false with everything).
        let lo_atom = if self.min < 0.0 { self.min } else { f32::NAN };
        let hi_atom = if self.max > 0.0 { self.max } else { f32::NAN };
        for &x in xs {
            if !x.is_finite() {
                continue;
            }
            zeros += (x == 0.0) as u64;
            at_min += (x == lo_atom) as u64;
            at_max += (x == hi_atom) as u64;
            let b = ((x as f64 * inv + z) as usize).min(last);
            self.counts[b] += 1;
        }
        self.zeros += zeros;
        self.at_min += at_min;
        self.at_max += at_max;
    }
}

/// Statistics of one float tensor over the calibration set.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorStats {
    /// Smallest finite value seen.
    pub min: f32,
    /// Largest finite value seen.
    pub max: f32,
    /// Finite values seen (elements over all input sets).
    pub count: u64,
    /// Non-finite values seen (NaN, ±inf), left out of every statistic.
    pub non_finite: u64,
    /// Pass-2 histogram, when collected.
    pub histogram: Option<Histogram>,
}

/// Mean of a layer's input per input channel (for bias correction).
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelMean {
    /// The layer's input value.
    pub input: String,
    /// Axis of the input that holds the channels: 1 for Conv (`[N, C, ...]`),
    /// 1 or 0 for Gemm (`A` or `A'` with `transA`), the last for MatMul.
    pub axis: usize,
    /// Mean per channel, over all other axes and all input sets.
    pub mean: Vec<f64>,
    /// Values averaged per channel.
    pub count: u64,
}

/// Everything calibration learned: per float tensor of the prepared graph
/// its [`TensorStats`], per Conv/Gemm/MatMul node its input's
/// [`ChannelMean`], and a few input sets for sensitivity analysis.
///
/// Keys are value and node names of the graph [`prepare`] returns for the
/// calibrated model; [`crate::quantize`] prepares the model the same way
/// (deterministically) and looks its tensors up here.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CalibrationResult {
    /// Statistics per float value (graph inputs and node outputs).
    pub tensors: BTreeMap<String, TensorStats>,
    /// Input channel means per Conv/FusedConv/Gemm/FusedGemm/MatMul/FusedMatMul node.
    pub channel_means: BTreeMap<String, ChannelMean>,
    /// Input sets seen per pass.
    pub samples: usize,
    /// The first input sets (see [`CalibOptions::probe_samples`]).
    pub probe: Vec<Vec<Tensor>>,
}

impl CalibrationResult {
    /// True when pass 2 ran (every tensor with a finite range has a histogram).
    pub fn has_histograms(&self) -> bool {
        self.tensors.values().any(|t| t.histogram.is_some())
    }
}

/// True for Conv, Gemm and MatMul nodes and their fused forms.
pub(crate) fn is_linear_layer(node: &Node) -> bool {
    let fused = node.domain == kiln_ir::ops::fused::DOMAIN;
    let onnx = node.domain.is_empty() || node.domain == "ai.onnx";
    matches!(
        (node.op_type.as_str(), onnx, fused),
        ("Conv" | "Gemm" | "MatMul", true, _) | ("FusedConv" | "FusedGemm" | "FusedMatMul", _, true)
    )
}

/// Channel axis of `node`'s first input if it is a layer that bias correction
/// applies to, for an input of rank `rank`.
pub(crate) fn layer_input_axis(node: &Node, rank: usize) -> Option<usize> {
    let fused = node.domain == kiln_ir::ops::fused::DOMAIN;
    let onnx = node.domain.is_empty() || node.domain == "ai.onnx";
    match (node.op_type.as_str(), onnx, fused) {
        ("Conv", true, _) | ("FusedConv", _, true) if rank >= 3 => Some(1),
        ("Gemm", true, _) | ("FusedGemm", _, true) if rank == 2 => {
            Some(if node.attr_int("transA", 0).ok()? != 0 {
                0
            } else {
                1
            })
        }
        ("MatMul", true, _) | ("FusedMatMul", _, true) if rank >= 1 => Some(rank - 1),
        _ => None,
    }
}

struct MinMaxAcc {
    min: f32,
    max: f32,
    count: u64,
    non_finite: u64,
}

struct MeanAcc {
    input: String,
    axis: Option<usize>,
    sum: Vec<f64>,
    count: u64,
}

/// Calibrates `model`: prepares it with [`prepare`], then runs it over `data`
/// (one or two passes, see the module documentation), calling `progress`
/// after every input set.
///
/// Errors: the model cannot be prepared or run ([`crate::QuantErrorKind::Model`],
/// naming node and op; an input set of the wrong count, dtype or shape is
/// `Model(InvalidInput)`), the data source fails or yields nothing
/// ([`crate::QuantErrorKind::Data`]), `opts.bins < 16`
/// ([`crate::QuantErrorKind::InvalidOptions`]).
pub fn calibrate(
    model: &Model,
    data: &mut dyn CalibrationData,
    opts: &CalibOptions,
    progress: &mut dyn FnMut(CalibProgress),
) -> Result<CalibrationResult> {
    if opts.bins < 16 {
        qbail!(
            InvalidOptions,
            "histogram bins must be at least 16, got {}",
            opts.bins
        );
    }
    let prepared = prepare(model)?;
    calibrate_prepared(prepared, data, opts, progress)
}

/// [`calibrate`] on a model that is already prepared.
pub(crate) fn calibrate_prepared(
    prepared: Model,
    data: &mut dyn CalibrationData,
    opts: &CalibOptions,
    progress: &mut dyn FnMut(CalibProgress),
) -> Result<CalibrationResult> {
    // Layers whose input channel means bias correction needs, by input value.
    let mut layers_of: HashMap<String, Vec<String>> = HashMap::new();
    let mut means: BTreeMap<String, MeanAcc> = BTreeMap::new();
    for n in &prepared.graph.nodes {
        let Some(x) = n.inputs.first().filter(|x| !x.is_empty()) else {
            continue;
        };
        if !is_linear_layer(n) {
            continue;
        }
        if prepared.graph.initializers.contains_key(x) {
            continue;
        }
        layers_of.entry(x.clone()).or_default().push(n.name.clone());
        means.insert(
            n.name.clone(),
            MeanAcc {
                input: x.clone(),
                axis: None,
                sum: Vec::new(),
                count: 0,
            },
        );
    }
    let nodes_by_name: HashMap<&str, &Node> = prepared
        .graph
        .nodes
        .iter()
        .map(|n| (n.name.as_str(), n))
        .collect();
    // As written: a model that already holds QDQ nodes is observed with them
    // evaluated as ONNX ops, not lowered onto integer kernels.
    let session = Session::with_options(prepared.clone(), &SessionOptions { integer: false })?
        .with_threads(opts.threads);
    let passes = if opts.histograms { 2 } else { 1 };
    let total = data.len();

    // Pass 1: min/max, channel means, probe.
    let mut mm: HashMap<String, MinMaxAcc> = HashMap::new();
    let mut probe = Vec::new();
    let mut samples = 0usize;
    {
        for item in data.pass()? {
            let inputs = item?;
            if probe.len() < opts.probe_samples {
                probe.push(inputs.clone());
            }
            let mut observe = |name: &str, t: &Tensor| {
                let Ok(xs) = t.as_slice::<f32>() else {
                    return;
                };
                let a = mm.entry(name.to_string()).or_insert(MinMaxAcc {
                    min: f32::INFINITY,
                    max: f32::NEG_INFINITY,
                    count: 0,
                    non_finite: 0,
                });
                let (lo, hi, finite) = min_max(xs);
                a.min = a.min.min(lo);
                a.max = a.max.max(hi);
                a.count += finite as u64;
                a.non_finite += (xs.len() - finite) as u64;
                if let Some(layers) = layers_of.get(name) {
                    for l in layers {
                        let (Some(acc), Some(node)) = (means.get_mut(l), nodes_by_name.get(l.as_str()))
                        else {
                            continue;
                        };
                        accumulate_mean(acc, node, t.shape(), xs);
                    }
                }
            };
            session.run_observed(inputs, &mut observe)?;
            samples += 1;
            progress(CalibProgress {
                pass: 1,
                passes,
                done: samples,
                total,
            });
        }
    }
    if samples == 0 {
        qbail!(Data, "the calibration data yielded no input sets");
    }
    let mut tensors: BTreeMap<String, TensorStats> = mm
        .into_iter()
        .map(|(k, a)| {
            let (min, max) = if a.count == 0 { (0.0, 0.0) } else { (a.min, a.max) };
            (
                k,
                TensorStats {
                    min,
                    max,
                    count: a.count,
                    non_finite: a.non_finite,
                    histogram: None,
                },
            )
        })
        .collect();

    // Pass 2: histograms over the pass-1 ranges.
    if opts.histograms {
        let mut hists: HashMap<String, Histogram> = tensors
            .iter()
            .map(|(k, s)| (k.clone(), Histogram::new(s.min, s.max, opts.bins)))
            .collect();
        for (i, item) in data.pass()?.enumerate() {
            let inputs = item?;
            let mut observe = |name: &str, t: &Tensor| {
                if let (Some(h), Ok(xs)) = (hists.get_mut(name), t.as_slice::<f32>()) {
                    h.add(xs);
                }
            };
            session.run_observed(inputs, &mut observe)?;
            progress(CalibProgress {
                pass: 2,
                passes,
                done: i + 1,
                total,
            });
        }
        for (k, h) in hists {
            if let Some(s) = tensors.get_mut(&k) {
                s.histogram = Some(h);
            }
        }
    }

    let channel_means = means
        .into_iter()
        .filter_map(|(node, a)| {
            let axis = a.axis?;
            let per = a.count as f64;
            if a.count == 0 {
                return None;
            }
            Some((
                node,
                ChannelMean {
                    input: a.input,
                    axis,
                    mean: a.sum.iter().map(|s| s / per).collect(),
                    count: a.count,
                },
            ))
        })
        .collect();
    Ok(CalibrationResult {
        tensors,
        channel_means,
        samples,
        probe,
    })
}

/// Adds the per-channel sums of one input tensor to a layer's accumulator.
/// Non-finite values count as 0.
fn accumulate_mean(acc: &mut MeanAcc, node: &Node, shape: &[usize], xs: &[f32]) {
    let Some(axis) = layer_input_axis(node, shape.len()) else {
        return;
    };
    let ch = shape[axis];
    if acc.axis.is_none() {
        acc.axis = Some(axis);
        acc.sum = vec![0.0; ch];
    }
    if acc.axis != Some(axis) || acc.sum.len() != ch || ch == 0 {
        return;
    }
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    for o in 0..outer {
        for (c, s) in acc.sum.iter_mut().enumerate() {
            let base = (o * ch + c) * inner;
            *s += sum_finite(&xs[base..base + inner]);
        }
    }
    acc.count += (outer * inner) as u64;
}

/// `(min, max, number of finite values)` of `xs`, non-finite values left
/// out; `(inf, -inf, 0)` when there is none. Eight lanes, so that the common
/// all-finite case vectorizes.
pub(crate) fn min_max(xs: &[f32]) -> (f32, f32, usize) {
    let finite = xs.iter().filter(|x| x.is_finite()).count();
    if finite < xs.len() {
        let (lo, hi) = xs
            .iter()
            .filter(|x| x.is_finite())
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &x| {
                (l.min(x), h.max(x))
            });
        return (lo, hi, finite);
    }
    let mut lo = [f32::INFINITY; 8];
    let mut hi = [f32::NEG_INFINITY; 8];
    let chunks = xs.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            lo[i] = if c[i] < lo[i] { c[i] } else { lo[i] };
            hi[i] = if c[i] > hi[i] { c[i] } else { hi[i] };
        }
    }
    let mut l = rest.iter().fold(f32::INFINITY, |a, &x| a.min(x));
    let mut h = rest.iter().fold(f32::NEG_INFINITY, |a, &x| a.max(x));
    for i in 0..8 {
        l = l.min(lo[i]);
        h = h.max(hi[i]);
    }
    (l, h, finite)
}

/// Sum of the finite values of `xs` in f64, eight lanes.
fn sum_finite(xs: &[f32]) -> f64 {
    let mut acc = [0f64; 8];
    let chunks = xs.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            let v = c[i] as f64;
            acc[i] += if v.is_finite() { v } else { 0.0 };
        }
    }
    let tail: f64 = rest
        .iter()
        .map(|&v| if v.is_finite() { v as f64 } else { 0.0 })
        .sum();
    acc.iter().sum::<f64>() + tail
}
