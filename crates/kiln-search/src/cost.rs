//! A roofline cost model of kiln's compiled steps.
//!
//! Each step of a compiled plan ([`kiln_runtime::compiled::StepInfo`]) has a kernel,
//! a FLOP count (2 per multiply-add) and the bytes it touches (inputs,
//! outputs, packed weights). Its time is modelled per kernel class `c` (the
//! kernel name without its ISA and register tile, see [`kernel_class`]) and
//! thread count as a roofline (Williams, Waterman, Patterson, "Roofline: an
//! insightful visual performance model", CACM 2009) plus a fixed cost:
//!
//! `t = max(FLOPs / F_c, bytes / B_c) + o_c`
//!
//! `F_c` (achieved FLOP/s), `B_c` (achieved bytes/s) and `o_c` (seconds of
//! dispatch, threading and setup) are fitted to profiled runs of kiln's
//! runtime on this machine ([`Calibration::fit`], minimising the
//! time-weighted squared log error over a log grid; `F_c` is bounded by
//! 1.5x the host's peak for the class's precision and thread count). A class
//! seen fewer than [`MIN_CLASS_SAMPLES`] times in calibration (one sample
//! fits any roofline) or never falls back to the fit of all streaming steps
//! ([`STREAM`], at most one FLOP per byte: element-wise, pooling, layout,
//! quantize) when it is one, else of all steps of its precision (`*f32`,
//! `*int8`), and when calibration saw no step of that
//! precision, to the fit of all steps (`*`), counted in
//! [`Prediction::cross_precision_steps`] so that callers can warn:
//! calibrate on an int8 model too before predicting int8 candidates.
//!
//! A step whose bytes exceed the target's L2 cache gets at most the
//! target's memory bandwidth (a cache-aware roofline: Ilic, Pratas, Sousa,
//! "Cache-aware roofline model", IEEE CAL 2014; large activations are
//! DRAM-bound, which the per-class fits, made mostly of cache-resident
//! steps, would miss).
//!
//! For another device, `F_c` scales with the ratio of the target's per-core
//! peak for the step's precision to the host's peak for the fit's precision,
//! `B_c` with their memory bandwidths and `o_c` with their clocks
//! ([`Calibration::predict`]); for the machine kiln runs on, `kiln tune`
//! measures candidates instead of predicting them.

use crate::device::{DeviceProfile, Precision};
use crate::error::{Error, ErrorKind};
use kiln_ir::Tensor;
use kiln_runtime::compiled::StepInfo;
use kiln_runtime::CompiledModel;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// What the cost model needs of one step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepCost {
    /// Node name (or names, for fused steps).
    pub node: String,
    /// Kernel name, e.g. `conv_f32_avx512_pointwise`.
    pub kernel: String,
    /// FLOPs (2 per multiply-add; int8 ops counted the same way).
    pub flops: u64,
    /// Bytes touched: inputs, outputs, packed weights.
    pub bytes: u64,
}

impl From<&StepInfo> for StepCost {
    fn from(s: &StepInfo) -> StepCost {
        StepCost {
            node: s.node.clone(),
            kernel: s.kernel.clone(),
            flops: s.flops,
            bytes: s.bytes,
        }
    }
}

/// One step's measured time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepSample {
    /// The step.
    pub step: StepCost,
    /// Median wall time over the profiled runs, seconds.
    pub seconds: f64,
}

const ISA_TOKENS: [&str; 9] = [
    "scalar",
    "avx2",
    "avx512",
    "avx512vnni",
    "avx512amx",
    "amx",
    "vnni",
    "neon",
    "dotprod",
];

/// The class of a kernel: its name without ISA tokens (`avx2`, `avx512`,
/// `avx512vnni`, ...) and register tiles (`12x32`), so that one class covers
/// every ISA level; convolution geometries with a stride (`3x3s2`) stay.
/// Fused steps (`a + b`) and sparse variants (`a#spmm_b`) keep their parts.
///
/// `gemm_f32_avx512_12x32` -> `gemm_f32`; `dwconv_f32_avx2_3x3s2` ->
/// `dwconv_f32_3x3s2`; `conv_f32_avx512_pointwise + dwconv_f32_avx512_3x3s1`
/// -> `conv_f32_pointwise+dwconv_f32_3x3s1`.
pub fn kernel_class(kernel: &str) -> String {
    kernel
        .split(" + ")
        .map(|part| {
            part.split('#')
                .map(|p| {
                    p.split('_')
                        .filter(|t| !ISA_TOKENS.contains(t) && !is_tile(t))
                        .collect::<Vec<_>>()
                        .join("_")
                })
                .collect::<Vec<_>>()
                .join("#")
        })
        .collect::<Vec<_>>()
        .join("+")
}

/// `12x32`, `6x16`: a register tile (no stride suffix).
fn is_tile(t: &str) -> bool {
    match t.split_once('x') {
        Some((a, b)) => {
            !a.is_empty()
                && !b.is_empty()
                && a.bytes().all(|c| c.is_ascii_digit())
                && b.bytes().all(|c| c.is_ascii_digit())
        }
        None => false,
    }
}

/// Precision of a kernel's arithmetic: int8 when its name has a `u8`/`i8`
/// operand (`qgemm_u8i8_...`, `add_u8`, `maxpool_u8`), else fp32.
pub fn precision_of(kernel: &str) -> Precision {
    let first = kernel.split(" + ").next().unwrap_or(kernel);
    if first.starts_with('q') || first.split('_').any(|t| t == "u8" || t == "i8" || t == "u8i8") {
        Precision::Int8
    } else {
        Precision::F32
    }
}

/// The fallback class of streaming steps ([`is_stream`]), both precisions.
pub const STREAM: &str = "*stream";

/// A streaming step: at most one FLOP per byte touched (element-wise ops,
/// pooling, layout changes, quantize / dequantize), bound by bandwidth
/// whatever its precision; unseen classes of them share one fallback fit.
pub fn is_stream(s: &StepCost) -> bool {
    s.flops <= s.bytes
}

/// `f32` or `int8`: the suffix of a precision's fallback class (`*f32`).
pub fn precision_name(p: Precision) -> &'static str {
    match p {
        Precision::F32 => "f32",
        Precision::Int8 => "int8",
    }
}

/// The steps of `model`'s plan for `shapes` (one shape per graph input).
pub fn plan_steps(model: &CompiledModel, shapes: &[Vec<usize>]) -> Result<Vec<StepCost>, Error> {
    Ok(model
        .plan_info(shapes)?
        .steps
        .iter()
        .map(StepCost::from)
        .collect())
}

/// Profiles `model` on `inputs` with `threads` threads: `warmup` untimed
/// runs, then `runs` profiled runs; each step's time is its median.
pub fn profile_steps(
    model: &CompiledModel,
    inputs: &[Tensor],
    threads: usize,
    warmup: usize,
    runs: usize,
) -> Result<Vec<StepSample>, Error> {
    if runs == 0 {
        return Err(Error::new(
            ErrorKind::InvalidRequest,
            "profile_steps: runs must be at least 1",
        ));
    }
    let mut state = model.new_state(threads);
    for _ in 0..warmup {
        model.run(&mut state, inputs.to_vec())?;
    }
    let mut steps: Vec<StepCost> = Vec::new();
    let mut times: Vec<Vec<f64>> = Vec::new();
    for _ in 0..runs {
        let (_, t) = model.run_profiled(&mut state, inputs.to_vec())?;
        if steps.is_empty() {
            steps = t.iter().map(|s| StepCost::from(&s.step)).collect();
            times = vec![Vec::with_capacity(runs); steps.len()];
        }
        for (i, s) in t.iter().enumerate().take(steps.len()) {
            times[i].push(s.time.as_secs_f64());
        }
    }
    Ok(steps
        .into_iter()
        .zip(times)
        .map(|(step, mut t)| StepSample {
            step,
            seconds: median(&mut t),
        })
        .collect())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// The fitted roofline of one kernel class at one thread count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassFit {
    /// [`kernel_class`]; `*stream` for the fallback over streaming steps,
    /// `*f32` / `*int8` over the other steps of that precision, `*` over
    /// all steps.
    pub class: String,
    /// Threads of the profiled runs.
    pub threads: usize,
    /// Precision of the class's arithmetic.
    pub precision: Precision,
    /// Achieved compute, 10^9 FLOP/s (`None`: the class does no FLOPs).
    pub gflops: Option<f64>,
    /// Achieved bandwidth, 10^9 bytes/s.
    pub gbs: f64,
    /// Fixed cost per step, microseconds.
    pub overhead_us: f64,
    /// Steps the fit saw.
    pub samples: usize,
    /// Their total measured time, milliseconds.
    pub measured_ms: f64,
}

impl ClassFit {
    /// Seconds of `s`: compute and bandwidth scaled to the target, the
    /// bandwidth at most `dram` (bytes/s) when the step's bytes exceed
    /// `cache` (see [`Calibration::predict`]).
    fn seconds(
        &self,
        s: &StepCost,
        f_scale: f64,
        b_scale: f64,
        o_scale: f64,
        (cache, dram): (u64, f64),
    ) -> f64 {
        let tc = match self.gflops {
            Some(g) => s.flops as f64 / (g * 1e9 * f_scale),
            None => 0.0,
        };
        let mut b = self.gbs * 1e9 * b_scale;
        if s.bytes > cache {
            b = b.min(dram);
        }
        let tb = s.bytes as f64 / b;
        tc.max(tb) + self.overhead_us * 1e-6 * o_scale
    }
}

/// Host figures a calibration was measured against (to scale to a target).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostFigures {
    /// Profile name of the host.
    pub name: String,
    /// Per-core fp32 peak, 10^9 FLOP/s.
    pub f32_gflops: f64,
    /// Per-core int8 peak, 10^9 ops/s.
    pub i8_gops: f64,
    /// Memory bandwidth, 10^9 bytes/s.
    pub memory_bandwidth_gbs: f64,
    /// Clock, GHz.
    pub clock_ghz: f64,
}

/// A calibrated cost model: one [`ClassFit`] per (class, threads).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// The machine it was measured on.
    pub host: HostFigures,
    /// Models whose profiles it was fitted to.
    pub models: Vec<String>,
    /// The fits, sorted by threads then class.
    pub fits: Vec<ClassFit>,
}

/// A latency prediction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// Sum over steps, milliseconds.
    pub total_ms: f64,
    /// Per step, milliseconds (plan order).
    pub step_ms: Vec<f64>,
    /// Steps whose class had no fit of its own (unseen, or seen fewer than
    /// [`MIN_CLASS_SAMPLES`] times): a precision fallback (`*f32`, `*int8`)
    /// or the all-steps fit (`*`) was used.
    pub fallback_steps: usize,
    /// Of those, steps of a precision calibration never saw (e.g. int8
    /// steps with a calibration made on fp32 models only): predicted from
    /// the all-steps fit scaled by the peak ratio, a rough figure.
    #[serde(default)]
    pub cross_precision_steps: usize,
    /// The calibrated thread count the prediction scaled from when
    /// `threads` itself was not calibrated (compute scaled linearly, an
    /// optimistic assumption); `None` when it was.
    #[serde(default)]
    pub threads_scaled_from: Option<usize>,
}

/// Why predictions for `target` may not describe kiln on it today, if so:
/// kiln's SIMD kernels are x86-64 only, so on an aarch64 device kiln runs
/// its portable scalar kernels, while the profile's peaks (and so the
/// prediction) assume kernels that reach its NEON throughput.
pub fn kernel_gap(target: &DeviceProfile) -> Option<String> {
    (target.arch != "x86_64").then(|| {
        format!(
            "device '{}' is {}: kiln has no SIMD kernels for it yet (docs/runtime.md) and runs scalar kernels there; \
             the prediction assumes kernels reaching the profile's SIMD peaks, so kiln today is slower than predicted",
            target.name, target.arch
        )
    })
}

/// Fewest steps of a class for a fit of its own; below it the class uses
/// its precision's fallback fit.
pub const MIN_CLASS_SAMPLES: usize = 3;

/// Headroom of the achieved-compute bound over the host's measured peak
/// (the probe's GEMM peak is a sustained figure, small steps can beat it
/// from cache).
const PEAK_HEADROOM: f64 = 1.5;

// Grids of the fit: achieved FLOP/s and bytes/s are searched on log grids
// (coarse, then refined around the best point), the fixed cost on a list.
const F_RANGE: (f64, f64) = (1e6, 1e14);
const B_RANGE: (f64, f64) = (1e7, 1e14);
const OVERHEADS_US: [f64; 13] = [
    0.0, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0,
];

fn log_grid(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    let (a, b) = (lo.ln(), hi.ln());
    (0..n)
        .map(|i| (a + (b - a) * i as f64 / (n - 1) as f64).exp())
        .collect()
}

/// Time-weighted squared log error of (F, B, o) on `samples`.
fn loss(samples: &[&StepSample], f: Option<f64>, b: f64, o: f64) -> f64 {
    samples
        .iter()
        .map(|s| {
            let tc = f.map_or(0.0, |f| s.step.flops as f64 / f);
            let pred = tc.max(s.step.bytes as f64 / b) + o;
            let t = s.seconds.max(1e-9);
            let e = (pred.max(1e-9) / t).ln();
            t * e * e
        })
        .sum()
}

/// Fits (F, B, o) to `samples` (all of one class and thread count), with
/// F at most `f_max` FLOP/s.
fn fit_one(samples: &[&StepSample], f_max: f64) -> (Option<f64>, f64, f64) {
    let f_hi = f_max.clamp(F_RANGE.0 * 10.0, F_RANGE.1);
    let any_flops = samples.iter().any(|s| s.step.flops > 0);
    let search = |best: &mut (f64, Option<f64>, f64, f64), fs: &[Option<f64>], bs: &[f64]| {
        for &f in fs {
            for &b in bs {
                for &o in &OVERHEADS_US {
                    let l = loss(samples, f, b, o * 1e-6);
                    if l < best.0 {
                        *best = (l, f, b, o * 1e-6);
                    }
                }
            }
        }
    };
    let mut best = (f64::INFINITY, None, 1e9, 0.0);
    let fs: Vec<Option<f64>> = if any_flops {
        log_grid(F_RANGE.0, f_hi, 41).into_iter().map(Some).collect()
    } else {
        vec![None]
    };
    search(&mut best, &fs, &log_grid(B_RANGE.0, B_RANGE.1, 36));
    // Refine: one grid step (a factor of ~1.6) either side, 5x finer.
    let (f0, b0) = (best.1, best.2);
    let fs: Vec<Option<f64>> = match f0 {
        Some(f) => log_grid(f / 1.6, (f * 1.6).min(f_hi), 11)
            .into_iter()
            .map(Some)
            .collect(),
        None => vec![None],
    };
    search(&mut best, &fs, &log_grid(b0 / 1.6, b0 * 1.6, 11));
    (best.1, best.2, best.3)
}

impl Calibration {
    /// Fits one roofline per (kernel class, threads) to profiled steps.
    ///
    /// `profiles` holds, per profiled run, the thread count and its steps
    /// ([`profile_steps`]); `models` names the profiled models (kept in the
    /// file); `host` is this machine's profile.
    ///
    /// Errors ([`ErrorKind::InvalidRequest`]): no samples.
    pub fn fit(
        host: &DeviceProfile,
        models: Vec<String>,
        profiles: &[(usize, Vec<StepSample>)],
    ) -> Result<Calibration, Error> {
        let mut groups: BTreeMap<(usize, String), Vec<&StepSample>> = BTreeMap::new();
        for (threads, samples) in profiles {
            for s in samples {
                groups
                    .entry((*threads, kernel_class(&s.step.kernel)))
                    .or_default()
                    .push(s);
                let fallback = if is_stream(&s.step) {
                    STREAM.to_string()
                } else {
                    format!("*{}", precision_name(precision_of(&s.step.kernel)))
                };
                groups.entry((*threads, fallback)).or_default().push(s);
                groups.entry((*threads, "*".to_string())).or_default().push(s);
            }
        }
        // One sample (or two) fits any roofline: such classes use their
        // precision's fallback.
        groups.retain(|(_, class), samples| class.starts_with('*') || samples.len() >= MIN_CLASS_SAMPLES);
        if groups.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidRequest,
                "cost model calibration: no profiled steps",
            ));
        }
        let fits = groups
            .into_iter()
            .map(|((threads, class), samples)| {
                let precision = if class == "*" || class == STREAM {
                    Precision::F32
                } else {
                    precision_of(&samples[0].step.kernel)
                };
                let peak = match (class.as_str(), precision) {
                    ("*", _) | (STREAM, _) => host.peak.f32_gflops.max(host.peak.i8_gops),
                    (_, Precision::F32) => host.peak.f32_gflops,
                    (_, Precision::Int8) => host.peak.i8_gops,
                };
                let (f, b, o) = fit_one(&samples, peak * 1e9 * threads as f64 * PEAK_HEADROOM);
                ClassFit {
                    precision,
                    gflops: f.map(|f| f / 1e9),
                    gbs: b / 1e9,
                    overhead_us: o * 1e6,
                    samples: samples.len(),
                    measured_ms: samples.iter().map(|s| s.seconds).sum::<f64>() * 1e3,
                    class,
                    threads,
                }
            })
            .collect();
        Ok(Calibration {
            host: HostFigures {
                name: host.name.clone(),
                f32_gflops: host.peak.f32_gflops,
                i8_gops: host.peak.i8_gops,
                memory_bandwidth_gbs: host.memory_bandwidth_gbs,
                clock_ghz: host.clock_ghz,
            },
            models,
            fits,
        })
    }

    /// Thread counts the calibration has fits for.
    pub fn thread_counts(&self) -> Vec<usize> {
        let mut t: Vec<usize> = self.fits.iter().map(|f| f.threads).collect();
        t.dedup();
        t
    }

    /// Predicts the latency of `steps` run with `threads` threads on
    /// `target` (this machine: pass the host profile).
    ///
    /// Thread counts not calibrated use the nearest calibrated count below
    /// (else the smallest), with compute scaled by the ratio of threads
    /// (linear scaling: an optimistic assumption, stated in reports).
    ///
    /// Errors ([`ErrorKind::InvalidRequest`]): `threads` is 0 or more than
    /// the target's cores; the calibration is empty.
    pub fn predict(
        &self,
        steps: &[StepCost],
        threads: usize,
        target: &DeviceProfile,
    ) -> Result<Prediction, Error> {
        if threads == 0 || threads > target.cores as usize {
            return Err(Error::new(
                ErrorKind::InvalidRequest,
                format!(
                    "cost model: {threads} threads requested, device '{}' has {} cores",
                    target.name, target.cores
                ),
            ));
        }
        let counts = self.thread_counts();
        let cal_threads = counts
            .iter()
            .copied()
            .filter(|&t| t <= threads)
            .max()
            .or_else(|| counts.first().copied())
            .ok_or_else(|| Error::new(ErrorKind::InvalidRequest, "cost model: empty calibration"))?;
        let thread_scale = threads as f64 / cal_threads as f64;
        let b_scale = target.memory_bandwidth_gbs / self.host.memory_bandwidth_gbs;
        let o_scale = self.host.clock_ghz / target.clock_ghz;
        let find = |class: &str| {
            self.fits
                .iter()
                .find(|f| f.threads == cal_threads && f.class == class)
        };
        let fallback = find("*");
        let target_peak = |p: Precision| match p {
            Precision::F32 => target.peak.f32_gflops,
            Precision::Int8 => target.peak.i8_gops,
        };
        let host_peak = |p: Precision| match p {
            Precision::F32 => self.host.f32_gflops,
            Precision::Int8 => self.host.i8_gops,
        };
        // Beyond the L2 a step's bytes stream from the shared cache or DRAM:
        // its bandwidth is at most the target's memory bandwidth (the L3
        // share one inference gets on a shared or virtual machine is
        // unknown, so L3 is not credited).
        let dram = (
            target.cache.l2_kib.max(target.cache.l1d_kib) as u64 * 1024,
            target.memory_bandwidth_gbs * 1e9,
        );
        let mut step_ms = Vec::with_capacity(steps.len());
        let mut fallback_steps = 0;
        let mut cross_precision_steps = 0;
        for s in steps {
            let prec = precision_of(&s.kernel);
            let fit =
                match find(&kernel_class(&s.kernel)) {
                    Some(f) => f,
                    None => {
                        fallback_steps += 1;
                        let own = if is_stream(s) {
                            STREAM.to_string()
                        } else {
                            format!("*{}", precision_name(prec))
                        };
                        match find(&own) {
                            Some(f) => f,
                            None => {
                                // Calibrations written before per-precision
                                // fallbacks have only `*`; it is cross-precision
                                // only when no fit of this precision exists.
                                if !self.fits.iter().any(|f| {
                                    f.threads == cal_threads && f.class != "*" && f.precision == prec
                                }) {
                                    cross_precision_steps += 1;
                                }
                                fallback.ok_or_else(|| {
                                    Error::new(ErrorKind::InvalidRequest, "cost model: no fallback fit")
                                })?
                            }
                        }
                    }
                };
            // The fit's throughput was achieved at the host's peak of the
            // fit's precision; the target runs the step at its peak of the
            // step's precision.
            let f_scale = thread_scale * target_peak(prec) / host_peak(fit.precision);
            step_ms.push(fit.seconds(s, f_scale, b_scale, o_scale, dram) * 1e3);
        }
        Ok(Prediction {
            total_ms: step_ms.iter().sum(),
            step_ms,
            fallback_steps,
            cross_precision_steps,
            threads_scaled_from: (cal_threads != threads).then_some(cal_threads),
        })
    }

    /// Writes the calibration as JSON (temp file, then rename).
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        let text = serde_json::to_string_pretty(self).expect("a calibration always serializes");
        write_atomic(path, text.as_bytes())
    }

    /// Reads a calibration written by [`Calibration::save`].
    pub fn load(path: &Path) -> Result<Calibration, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::new(
                ErrorKind::Io,
                format!("cost calibration {}: cannot read: {e}", path.display()),
            )
        })?;
        serde_json::from_str(&text).map_err(|e| {
            Error::new(
                ErrorKind::InvalidProfile,
                format!("cost calibration {}: {e}", path.display()),
            )
        })
    }
}

/// Writes `bytes` to `path` through a temporary file in the same folder.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let io = |e: std::io::Error| Error::new(ErrorKind::Io, format!("{}: cannot write: {e}", path.display()));
    let tmp = path.with_extension(format!(
        "{}.tmp{}",
        path.extension().and_then(|e| e.to_str()).unwrap_or(""),
        std::process::id()
    ));
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_classes_drop_isa_and_tiles_but_keep_geometry() {
        assert_eq!(kernel_class("gemm_f32_avx512_12x32"), "gemm_f32");
        assert_eq!(kernel_class("gemm_f32_avx2_6x16"), "gemm_f32");
        assert_eq!(kernel_class("dwconv_f32_avx2_3x3s2"), "dwconv_f32_3x3s2");
        assert_eq!(kernel_class("qgemm_u8i8_avx512vnni_16x4"), "qgemm_u8i8");
        assert_eq!(
            kernel_class("conv_f32_avx512_pointwise + dwconv_f32_avx512_3x3s1"),
            "conv_f32_pointwise+dwconv_f32_3x3s1"
        );
        assert_eq!(precision_of("qgemm_u8i8_avx2_6x16"), Precision::Int8);
        assert_eq!(precision_of("maxpool_u8"), Precision::Int8);
        assert_eq!(precision_of("conv_f32_avx2_pointwise"), Precision::F32);
    }

    fn sample(kernel: &str, flops: u64, bytes: u64, seconds: f64) -> StepSample {
        StepSample {
            step: StepCost {
                node: "n".into(),
                kernel: kernel.into(),
                flops,
                bytes,
            },
            seconds,
        }
    }

    /// A roofline with known F, B, o is recovered from noiseless samples
    /// on both sides of its ridge point.
    #[test]
    fn fit_recovers_a_known_roofline() {
        let (f, b, o) = (50e9, 20e9, 2e-6);
        let samples: Vec<StepSample> = (0..40)
            .map(|i| {
                let flops = 1_000u64 << (i % 20);
                let bytes = 4_000u64 << ((i * 7) % 20);
                let t = (flops as f64 / f).max(bytes as f64 / b) + o;
                sample("gemm_f32_avx2_6x16", flops, bytes, t)
            })
            .collect();
        let refs: Vec<&StepSample> = samples.iter().collect();
        let (ff, bb, oo) = fit_one(&refs, 1e14);
        let ff = ff.unwrap();
        assert!((ff / f - 1.0).abs() < 0.1, "F {ff:e} vs {f:e}");
        assert!((bb / b - 1.0).abs() < 0.1, "B {bb:e} vs {b:e}");
        assert!((oo - o).abs() < 1.5e-6, "o {oo:e} vs {o:e}");
    }

    fn host(f32_gflops: f64, i8_gops: f64) -> DeviceProfile {
        let mut p = DeviceProfile::resolve("minipc-n100").unwrap();
        p.peak.f32_gflops = f32_gflops;
        p.peak.i8_gops = i8_gops;
        p
    }

    /// Regression (helper trial of `kiln tune --device`): a class profiled
    /// once got a roofline of its own (any roofline fits one point, e.g. a
    /// 128 us fixed cost), and with an fp32-only calibration int8 steps were
    /// predicted from the fp32 fit scaled by the int8/int8 peak ratio.
    #[test]
    fn rare_classes_and_unseen_precisions_use_fallbacks() {
        let h = host(100.0, 400.0);
        let mut samples: Vec<StepSample> = (0..8)
            .map(|i| {
                sample(
                    "gemm_f32_avx2_6x16",
                    1_000_000 << i,
                    10_000,
                    (1_000_000u64 << i) as f64 / 50e9,
                )
            })
            .collect();
        samples.push(sample("gemv_f32_avx2", 2_000_000, 8_000_000, 1e-3));
        let cal = Calibration::fit(&h, vec!["m".into()], &[(1, samples)]).unwrap();
        assert!(
            cal.fits.iter().all(|f| f.class != "gemv_f32"),
            "one sample, no fit of its own"
        );
        assert!(cal.fits.iter().any(|f| f.class == "*f32"));
        assert!(cal.fits.iter().all(|f| f.class != "*int8"));
        for f in &cal.fits {
            if let Some(g) = f.gflops {
                assert!(
                    g <= 100.0 * PEAK_HEADROOM * 1.001,
                    "{}: {g} GFLOP/s above the bound",
                    f.class
                );
            }
        }
        let gemv = StepCost {
            node: "n".into(),
            kernel: "gemv_f32_avx2".into(),
            flops: 2_000_000,
            bytes: 8_000,
        };
        let p = cal.predict(std::slice::from_ref(&gemv), 1, &h).unwrap();
        assert_eq!((p.fallback_steps, p.cross_precision_steps), (1, 0));
        // int8 steps never seen: the fp32 fit, scaled by the target's int8
        // peak over the host's fp32 peak (here 2x), and counted.
        let q = |k: &str| StepCost {
            node: "n".into(),
            kernel: k.into(),
            flops: 256_000_000,
            bytes: 10_000,
        };
        let f32_ms = cal.predict(&[q("gemm_f32_avx2_6x16")], 1, &h).unwrap().total_ms;
        let target = host(100.0, 200.0);
        let p = cal.predict(&[q("qgemm_u8i8_avx2_6x16")], 1, &target).unwrap();
        assert_eq!((p.fallback_steps, p.cross_precision_steps), (1, 1));
        assert!(p.total_ms < f32_ms, "int8 {} ms vs fp32 {f32_ms} ms", p.total_ms);
    }
}
