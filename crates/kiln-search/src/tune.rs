//! The decision side of `kiln tune`: candidates, their JSON results, the
//! limits they are held to, dominance, the Pareto front and the choice.
//!
//! A *candidate* is one way to deploy a model: an optimization level, a
//! precision (fp32, int8 post-training quantization with one calibration
//! method, or mixed precision) and a thread count. Running it (building the
//! model file, measuring accuracy, latency, memory and energy) is the
//! caller's job (`kiln tune` / `kiln tune-job`); each run ends in one
//! [`CandidateResult`], a self-contained JSON file. This module only reads
//! results: which limits each one breaks ([`violations`]), which ones are
//! dominated ([`dominates`]), the accuracy/latency Pareto front
//! ([`pareto_front`]) and the choice with its explanation ([`choose`]).
//!
//! The objective is latency: the chosen candidate is the fastest one that
//! meets every limit. The *binding* constraint is the one that rejected the
//! fastest candidate faster than the chosen one (with no such candidate,
//! nothing bound the choice).

use crate::error::{Error, ErrorKind};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::fmt;
use std::path::Path;

/// The precision of a candidate's model.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Precision {
    /// The model's own fp32 weights and activations.
    Fp32,
    /// All layers int8 (QDQ, per-channel weights, uint8 activations),
    /// activation ranges by calibration `method` (`minmax`, `percentile`,
    /// `entropy`, `mse`).
    Int8 {
        /// Calibration method name.
        method: String,
    },
    /// int8 with the most sensitive layers kept in fp32 until the accuracy
    /// drop fits the limit (kiln-quant's mixed precision).
    Mixed {
        /// Calibration method name.
        method: String,
    },
}

impl Precision {
    /// Short name: `fp32`, `int8-minmax`, `mixed-entropy`, ...
    pub fn name(&self) -> String {
        match self {
            Precision::Fp32 => "fp32".into(),
            Precision::Int8 { method } => format!("int8-{method}"),
            Precision::Mixed { method } => format!("mixed-{method}"),
        }
    }

    /// Parses [`Precision::name`].
    pub fn parse(s: &str) -> Option<Precision> {
        if s == "fp32" {
            return Some(Precision::Fp32);
        }
        let (kind, method) = s.split_once('-')?;
        if !["minmax", "percentile", "entropy", "mse"].contains(&method) {
            return None;
        }
        let method = method.to_string();
        match kind {
            "int8" => Some(Precision::Int8 { method }),
            "mixed" => Some(Precision::Mixed { method }),
            _ => None,
        }
    }
}

/// A training step that makes a variant from the original model (with
/// `kiln tune --train DATA`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Training {
    /// Quantization-aware training (`kiln train qat`), exported as int8 QDQ.
    Qat,
    /// Channel pruning of `percent` % of the prunable output channels (L1),
    /// fine-tuned (`kiln prune --method channel --finetune`); fp32.
    Prune {
        /// Share of channels removed, percent.
        percent: u32,
    },
    /// A zoo student (`kiln zoo ARCH --width`) distilled from the model
    /// (`kiln train distill`); fp32.
    Distill {
        /// Zoo architecture.
        arch: String,
        /// Width multiplier, percent.
        width_percent: u32,
    },
}

impl Training {
    /// Short name: `qat`, `prune50`, `distill-fmnist-mnv2-w35`.
    pub fn name(&self) -> String {
        match self {
            Training::Qat => "qat".into(),
            Training::Prune { percent } => format!("prune{percent}"),
            Training::Distill { arch, width_percent } => format!("distill-{arch}-w{width_percent}"),
        }
    }
}

/// The model a candidate runs: optimization level and precision, or a
/// training step. Candidates that differ only in threads share it (and its
/// accuracy).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Variant {
    /// kiln-opt level: `basic`, `extended` or `all` (`train` for trained variants).
    pub opt_level: String,
    /// Precision (of a trained variant: int8 for QAT, else fp32).
    pub precision: Precision,
    /// The training step that makes it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train: Option<Training>,
}

impl Variant {
    /// File-name-safe id, e.g. `all.int8-minmax`, `train.prune50`.
    pub fn id(&self) -> String {
        match &self.train {
            Some(t) => format!("{}.{}", self.opt_level, t.name()),
            None => format!("{}.{}", self.opt_level, self.precision.name()),
        }
    }

    /// The variant that `training` makes.
    pub fn trained(training: Training) -> Variant {
        Variant {
            opt_level: "train".into(),
            precision: match training {
                Training::Qat => Precision::Int8 {
                    method: "minmax".into(),
                },
                _ => Precision::Fp32,
            },
            train: Some(training),
        }
    }
}

/// One candidate: a [`Variant`] run with `threads` threads.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Candidate {
    /// The model.
    pub variant: Variant,
    /// Intra-op threads of the compiled runtime.
    pub threads: usize,
}

impl Candidate {
    /// File-name-safe id, e.g. `all.int8-minmax.t2`.
    pub fn id(&self) -> String {
        format!("{}.t{}", self.variant.id(), self.threads)
    }
}

impl fmt::Display for Candidate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id())
    }
}

/// Every combination of `opt_levels` x `precisions` x `threads`, then every
/// training step x `threads`, in that nesting order (all thread counts of a
/// variant together).
pub fn enumerate(
    opt_levels: &[String],
    precisions: &[Precision],
    trainings: &[Training],
    threads: &[usize],
) -> Vec<Candidate> {
    let mut variants = Vec::new();
    for o in opt_levels {
        for p in precisions {
            variants.push(Variant {
                opt_level: o.clone(),
                precision: p.clone(),
                train: None,
            });
        }
    }
    variants.extend(trainings.iter().cloned().map(Variant::trained));
    let mut v = Vec::new();
    for variant in variants {
        for &t in threads {
            v.push(Candidate {
                variant: variant.clone(),
                threads: t,
            });
        }
    }
    v
}

/// The limits of `kiln tune` (`None`: no limit).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Limits {
    /// `--max-latency-ms`: median latency of one inference, milliseconds.
    pub max_latency_ms: Option<f64>,
    /// `--max-accuracy-drop`: points (percent) of accuracy lost against the
    /// original fp32 model.
    pub max_accuracy_drop: Option<f64>,
    /// `--max-memory-mb`: planned memory (activation arena, per-thread
    /// scratch, packed weights), MiB.
    pub max_memory_mb: Option<f64>,
    /// `--max-energy-mj`: estimated energy per inference, millijoules.
    pub max_energy_mj: Option<f64>,
}

/// One of the four limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Constraint {
    /// `--max-accuracy-drop`.
    Accuracy,
    /// `--max-latency-ms`.
    Latency,
    /// `--max-memory-mb`.
    Memory,
    /// `--max-energy-mj`.
    Energy,
}

impl Constraint {
    /// The command-line flag of the limit.
    pub fn flag(self) -> &'static str {
        match self {
            Constraint::Accuracy => "--max-accuracy-drop",
            Constraint::Latency => "--max-latency-ms",
            Constraint::Memory => "--max-memory-mb",
            Constraint::Energy => "--max-energy-mj",
        }
    }

    /// The unit of the limit.
    pub fn unit(self) -> &'static str {
        match self {
            Constraint::Accuracy => "points",
            Constraint::Latency => "ms",
            Constraint::Memory => "MiB",
            Constraint::Energy => "mJ",
        }
    }
}

/// How accuracy is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// Top-1 agreement with the original fp32 model, percent (the
    /// reference is 100); needs no labels.
    Agreement,
    /// Top-1 accuracy on labelled data, percent; the reference is the
    /// original model's own top-1.
    Top1,
}

impl Metric {
    /// `agreement` or `top1`.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Agreement => "agreement",
            Metric::Top1 => "top1",
        }
    }
}

/// A candidate's accuracy.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AccuracyFigure {
    /// What was measured.
    pub metric: Metric,
    /// The candidate's value, percent.
    pub percent: f64,
    /// The original fp32 model's value, percent (100 for agreement).
    pub reference: f64,
    /// Samples evaluated.
    pub samples: usize,
}

impl AccuracyFigure {
    /// Points lost: `reference - percent` (negative when the candidate does
    /// better).
    pub fn drop(&self) -> f64 {
        self.reference - self.percent
    }
}

/// Whether a latency was measured on this machine or predicted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LatencySource {
    /// Median of timed runs of kiln's compiled runtime here.
    Measured,
    /// The calibrated cost model's prediction for the target profile.
    Predicted,
}

/// How a candidate's run ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Outcome {
    /// Every figure was measured.
    Complete,
    /// Dropped before its full latency benchmark: its accuracy already
    /// broke the limit, or a quick screen showed it dominated.
    Dropped {
        /// Why, in words.
        reason: String,
    },
    /// Building or measuring it failed.
    Failed {
        /// The error.
        error: String,
    },
}

/// The JSON result of one candidate (`results/<id>.json` of a tune
/// directory). Figures that were not measured are `None`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandidateResult {
    /// The candidate.
    pub candidate: Candidate,
    /// How its run ended.
    pub outcome: Outcome,
    /// The model file it runs (relative to the tune directory).
    pub model_file: Option<String>,
    /// That file's size, bytes.
    pub model_bytes: Option<u64>,
    /// Accuracy against the original model.
    pub accuracy: Option<AccuracyFigure>,
    /// Median latency of one inference, milliseconds.
    pub latency_ms: Option<f64>,
    /// Measured or predicted.
    pub latency_source: Option<LatencySource>,
    /// Timed runs behind `latency_ms` (0 for a prediction).
    pub latency_runs: usize,
    /// Planned memory (activations + scratch x threads + packed weights), MiB.
    pub memory_mb: Option<f64>,
    /// Estimated energy per inference, millijoules (Horowitz ISSCC 2014
    /// figures; see [`crate::energy`]).
    pub energy_mj: Option<f64>,
    /// The device's power figure times the latency, millijoules: the
    /// wall-power view of energy (see [`crate::energy::EnergyEstimate::power_mj`]).
    #[serde(default)]
    pub power_mj: Option<f64>,
    /// MACs (FLOPs / 2) of one inference.
    pub macs: Option<u64>,
    /// Caveats on the figures (e.g. a latency predicted for a precision the
    /// cost model was not calibrated on), shown in the report.
    #[serde(default)]
    pub warnings: Vec<String>,
    /// The candidate whose model file this one's is byte-identical to (at
    /// the same thread count): its figures are that one's, and it is left
    /// off the Pareto front.
    #[serde(default)]
    pub same_as: Option<String>,
    /// Wall time of the job, seconds.
    pub seconds: f64,
    /// The job that produced it (resume reuses the result only for the
    /// same work, see [`TuneJob::same_work`]).
    #[serde(default)]
    pub job: Option<TuneJob>,
}

impl CandidateResult {
    /// An empty result of `candidate` with `outcome`.
    pub fn new(candidate: Candidate, outcome: Outcome) -> CandidateResult {
        CandidateResult {
            candidate,
            outcome,
            model_file: None,
            model_bytes: None,
            accuracy: None,
            latency_ms: None,
            latency_source: None,
            latency_runs: 0,
            memory_mb: None,
            energy_mj: None,
            power_mj: None,
            macs: None,
            warnings: Vec::new(),
            same_as: None,
            seconds: 0.0,
            job: None,
        }
    }

    /// Reads a result file.
    ///
    /// Errors: [`ErrorKind::Io`]; [`ErrorKind::InvalidProfile`] for JSON
    /// that is not a result (naming the file).
    pub fn load(path: &Path) -> Result<CandidateResult, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::new(ErrorKind::Io, format!("{}: {e}", path.display())))?;
        serde_json::from_str(&text).map_err(|e| {
            Error::new(
                ErrorKind::InvalidProfile,
                format!("{}: not a kiln tune result: {e}", path.display()),
            )
        })
    }

    /// The figure a limit is checked against.
    pub fn value(&self, c: Constraint) -> Option<f64> {
        match c {
            Constraint::Accuracy => self.accuracy.map(|a| a.drop()),
            Constraint::Latency => self.latency_ms,
            Constraint::Memory => self.memory_mb,
            Constraint::Energy => self.energy_mj,
        }
    }
}

/// A broken limit: the candidate's value and the limit, in the
/// constraint's unit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Violation {
    /// Which limit.
    pub constraint: Constraint,
    /// The candidate's figure.
    pub value: f64,
    /// The limit.
    pub limit: f64,
}

impl Violation {
    /// How far over the limit, relative: `(value - limit) / limit` (for
    /// accuracy, over `max(limit, 1)` so that a zero budget stays finite).
    pub fn excess(&self) -> f64 {
        let den = match self.constraint {
            Constraint::Accuracy => self.limit.max(1.0),
            _ => self.limit.max(1e-9),
        };
        (self.value - self.limit) / den
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.constraint {
            Constraint::Accuracy => "accuracy drop",
            Constraint::Latency => "latency",
            Constraint::Memory => "memory",
            Constraint::Energy => "energy",
        };
        write!(
            f,
            "{what} {} {} > {} {}",
            fmt_num(self.value),
            self.constraint.unit(),
            self.constraint.flag(),
            self.limit
        )
    }
}

fn fmt_num(x: f64) -> String {
    if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

impl Limits {
    fn get(&self, c: Constraint) -> Option<f64> {
        match c {
            Constraint::Accuracy => self.max_accuracy_drop,
            Constraint::Latency => self.max_latency_ms,
            Constraint::Memory => self.max_memory_mb,
            Constraint::Energy => self.max_energy_mj,
        }
    }
}

const ALL: [Constraint; 4] = [
    Constraint::Accuracy,
    Constraint::Latency,
    Constraint::Memory,
    Constraint::Energy,
];

/// The limits `r` breaks, among the figures it has (an unmeasured figure
/// breaks nothing; see [`feasible`]).
pub fn violations(r: &CandidateResult, limits: &Limits) -> Vec<Violation> {
    ALL.iter()
        .filter_map(|&c| {
            let limit = limits.get(c)?;
            let value = r.value(c)?;
            (value > limit).then_some(Violation {
                constraint: c,
                value,
                limit,
            })
        })
        .collect()
}

/// Whether `r` is complete, has every figure a limit is set for, and meets
/// all of them.
pub fn feasible(r: &CandidateResult, limits: &Limits) -> bool {
    r.outcome == Outcome::Complete
        && r.latency_ms.is_some()
        && ALL
            .iter()
            .all(|&c| limits.get(c).is_none() || r.value(c).is_some())
        && violations(r, limits).is_empty()
}

/// Whether `a` dominates `b`: at least as accurate, and its latency times
/// `margin` (>= 1, a guard against timing noise) at most `b`'s, and no
/// more memory or energy (where both have them). Both need an accuracy and
/// a latency.
pub fn dominates(a: &CandidateResult, b: &CandidateResult, margin: f64) -> bool {
    let (Some(aa), Some(ba), Some(al), Some(bl)) = (a.accuracy, b.accuracy, a.latency_ms, b.latency_ms)
    else {
        return false;
    };
    let no_worse = |x: Option<f64>, y: Option<f64>| match (x, y) {
        (Some(x), Some(y)) => x <= y * 1.0001,
        _ => true,
    };
    aa.drop() <= ba.drop() + 1e-9
        && al * margin <= bl
        && no_worse(a.memory_mb, b.memory_mb)
        && no_worse(a.energy_mj, b.energy_mj)
}

/// Indices of the accuracy-vs-latency Pareto front among results with both
/// figures (copies of another model, [`CandidateResult::same_as`], left
/// out): no other result is at least as accurate and faster (or as fast and
/// more accurate). Sorted by latency.
pub fn pareto_front(results: &[CandidateResult]) -> Vec<usize> {
    let pts: Vec<(usize, f64, f64)> = results
        .iter()
        .enumerate()
        .filter(|(_, r)| r.same_as.is_none())
        .filter_map(|(i, r)| Some((i, r.latency_ms?, r.accuracy?.drop())))
        .collect();
    let mut front: Vec<(usize, f64)> = pts
        .iter()
        .filter(|&&(i, l, d)| {
            !pts.iter().any(|&(j, l2, d2)| {
                j != i && l2 <= l && d2 <= d && (l2 < l || d2 < d || (l2 == l && d2 == d && j < i))
            })
        })
        .map(|&(i, l, _)| (i, l))
        .collect();
    front.sort_by(|a, b| a.1.total_cmp(&b.1));
    front.into_iter().map(|(i, _)| i).collect()
}

/// The choice among a set of results, with its explanation.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    /// The fastest feasible result, if any (among those within
    /// [`LATENCY_TIE`] of it: the smallest accuracy drop, then memory).
    pub chosen: Option<usize>,
    /// The limit that rejected the fastest result faster than the chosen
    /// one (with no feasible result: the one the closest result breaks
    /// most); `None` when nothing faster was rejected.
    pub binding: Option<Constraint>,
    /// With no feasible result: the result nearest to the limits (smallest
    /// sum of relative excesses over the limits it breaks; within
    /// [`LATENCY_TIE`] of that, the smallest accuracy drop, then latency).
    pub closest: Option<usize>,
    /// Why each result other than the chosen one lost, in result order.
    pub reasons: Vec<String>,
}

/// Relative latency difference treated as a tie by [`choose`] (timing
/// noise on a shared machine): within it, accuracy and then memory decide.
pub const LATENCY_TIE: f64 = 0.03;

/// Accuracy drop, with no figure counted as worst.
fn drop_of(r: &CandidateResult) -> f64 {
    r.accuracy.map_or(f64::INFINITY, |a| a.drop())
}

fn cmp_latency(results: &[CandidateResult], a: usize, b: usize) -> Ordering {
    let la = results[a].latency_ms.unwrap_or(f64::INFINITY);
    let lb = results[b].latency_ms.unwrap_or(f64::INFINITY);
    la.total_cmp(&lb).then(a.cmp(&b))
}

/// Chooses the fastest feasible result and says why every other one lost.
pub fn choose(results: &[CandidateResult], limits: &Limits) -> Choice {
    choose_among(results, limits, &[])
}

/// As [`choose`], but when some of `pool` are feasible the choice is the
/// fastest of those (e.g. the candidates re-benchmarked together, whose
/// latencies compare fairly with each other and not with the rest).
pub fn choose_among(results: &[CandidateResult], limits: &Limits, pool: &[usize]) -> Choice {
    let mut feasible_idx: Vec<usize> = (0..results.len())
        .filter(|&i| feasible(&results[i], limits))
        .collect();
    if feasible_idx.iter().any(|i| pool.contains(i)) {
        feasible_idx.retain(|i| pool.contains(i));
    }
    // The fastest; among those within LATENCY_TIE of it (timing noise), the
    // most accurate, then the least memory, then the fastest.
    let fastest = feasible_idx
        .iter()
        .copied()
        .min_by(|&a, &b| cmp_latency(results, a, b));
    let chosen = fastest.and_then(|f| {
        let lf = results[f].latency_ms.unwrap_or(f64::INFINITY);
        feasible_idx
            .iter()
            .copied()
            .filter(|&i| results[i].latency_ms.unwrap_or(f64::INFINITY) <= lf * (1.0 + LATENCY_TIE))
            .min_by(|&a, &b| {
                let key = |i: usize| {
                    (
                        results[i].accuracy.map_or(f64::INFINITY, |x| x.drop()),
                        results[i].memory_mb.unwrap_or(f64::INFINITY),
                    )
                };
                let (da, ma) = key(a);
                let (db, mb) = key(b);
                da.total_cmp(&db)
                    .then(ma.total_cmp(&mb))
                    .then(cmp_latency(results, a, b))
            })
    });
    let mut closest = None;
    let binding = match chosen {
        Some(c) => {
            let lc = results[c].latency_ms.unwrap_or(f64::INFINITY);
            // The fastest rejected result that beat the chosen one's latency.
            (0..results.len())
                .filter(|&i| {
                    results[i].latency_ms.is_some_and(|l| l < lc)
                        && !violations(&results[i], limits).is_empty()
                })
                .min_by(|&a, &b| cmp_latency(results, a, b))
                .and_then(|i| {
                    violations(&results[i], limits)
                        .into_iter()
                        .max_by(|a, b| a.excess().total_cmp(&b.excess()))
                        .map(|v| v.constraint)
                })
        }
        None => {
            let score = |r: &CandidateResult| -> f64 {
                let mut s: f64 = violations(r, limits).iter().map(|v| v.excess()).sum();
                // A figure a limit needs but the run did not measure counts as far off.
                for c in ALL {
                    if limits.get(c).is_some() && r.value(c).is_none() {
                        s += 1e6;
                    }
                }
                s
            };
            let pool: Vec<usize> = (0..results.len())
                .filter(|&i| !matches!(results[i].outcome, Outcome::Failed { .. }))
                .collect();
            // The smallest excess; among those within LATENCY_TIE of it
            // (relative), the smallest accuracy drop, then the fastest.
            let best = pool
                .iter()
                .map(|&i| score(&results[i]))
                .fold(f64::INFINITY, f64::min);
            closest = pool
                .into_iter()
                .filter(|&i| score(&results[i]) <= best + best.abs() * LATENCY_TIE)
                .min_by(|&a, &b| {
                    drop_of(&results[a])
                        .total_cmp(&drop_of(&results[b]))
                        .then(cmp_latency(results, a, b))
                });
            closest.and_then(|i| {
                violations(&results[i], limits)
                    .into_iter()
                    .max_by(|a, b| a.excess().total_cmp(&b.excess()))
                    .map(|v| v.constraint)
            })
        }
    };
    // Whether result i competed in the choice (the pool, when it was used).
    let pool_ok = |i: usize| feasible_idx.contains(&i);
    let reasons = results
        .iter()
        .enumerate()
        .map(|(i, r)| {
            if Some(i) == chosen {
                return if Some(i) == fastest {
                    "chosen: the fastest candidate that meets every limit".to_string()
                } else {
                    format!(
                        "chosen: within {:.0}% of the fastest feasible ({}) and more accurate or smaller",
                        LATENCY_TIE * 100.0,
                        fastest.map(|f| results[f].candidate.id()).unwrap_or_default()
                    )
                };
            }
            match &r.outcome {
                Outcome::Failed { error } => return format!("failed: {error}"),
                Outcome::Dropped { reason } => return format!("dropped early: {reason}"),
                Outcome::Complete => {}
            }
            let v = violations(r, limits);
            if !v.is_empty() {
                return format!(
                    "breaks {}",
                    v.iter().map(|v| v.to_string()).collect::<Vec<_>>().join("; ")
                );
            }
            if let Some(c) = chosen {
                if !pool.is_empty() && !pool.contains(&i) && pool.contains(&c) {
                    return format!(
                        "meets the limits but was not among the fastest {} re-benchmarked together",
                        pool.len()
                    );
                }
                if let (Some(l), Some(lc)) = (r.latency_ms, results[c].latency_ms) {
                    if let Some(lf) = fastest.and_then(|f| results[f].latency_ms) {
                        if l <= lf * (1.0 + LATENCY_TIE) && pool_ok(i) {
                            return format!(
                                "meets the limits; within {:.0}% of the fastest, a tie the chosen {} won on accuracy, then memory ({} vs {} ms)",
                                LATENCY_TIE * 100.0,
                                results[c].candidate,
                                fmt_num(l),
                                fmt_num(lc)
                            );
                        }
                    }
                    return format!(
                        "meets the limits but is slower than the chosen {} ({} vs {} ms)",
                        results[c].candidate,
                        fmt_num(l),
                        fmt_num(lc)
                    );
                }
            }
            "not measured".into()
        })
        .collect();
    Choice {
        chosen,
        binding,
        closest,
        reasons,
    }
}

/// A data selection of a job: a dataset path and the part of it used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataSelection {
    /// Folder or file of the dataset.
    pub path: String,
    /// Split (`train`/`test`) of datasets that have them.
    pub split: Option<String>,
    /// Sample range `A..B`.
    pub range: Option<String>,
    /// At most this many samples.
    pub limit: Option<usize>,
}

/// One candidate's job, self-contained (`jobs/<id>.json` of a tune
/// directory): `kiln tune-job FILE` runs it anywhere that sees the same
/// paths and writes `results/<id>.json` next to it. Paths are absolute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TuneJob {
    /// Format version (1).
    pub kiln_tune_job: u32,
    /// The original model.
    pub model: String,
    /// The tune directory (models/, results/).
    pub dir: String,
    /// Calibration data of int8 candidates.
    pub calib: DataSelection,
    /// Data the accuracy is measured on.
    pub val: DataSelection,
    /// Image preprocessing preset.
    pub preset: String,
    /// Accuracy metric.
    pub metric: Metric,
    /// Device profile: `host` (measure here) or a profile name or file.
    pub device: String,
    /// Cost-model calibration (JSON) for a device other than `host`.
    pub calibration: Option<String>,
    /// The limits (accuracy drops beyond the limit end the job early).
    pub limits: Limits,
    /// Untimed runs before timing.
    pub warmup: usize,
    /// Timed runs.
    pub runs: usize,
    /// Samples per run in calibration and evaluation.
    pub batch: usize,
    /// Input shapes of the timed runs, `NAME=D,D,...` (symbolic dims other
    /// than the leading batch dim must be bound; batch defaults to 1).
    #[serde(default)]
    pub shapes: Vec<String>,
    /// Training data and settings of trained variants (`--train`).
    #[serde(default)]
    pub train: Option<TrainSettings>,
    /// The candidate.
    pub candidate: Candidate,
}

/// How trained variants are trained (`kiln tune --train DATA`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrainSettings {
    /// Labelled training data.
    pub data: String,
    /// Epochs of each training step.
    pub epochs: usize,
    /// Use only the first N training samples (a tenth held out for validation).
    pub limit: Option<usize>,
    /// Training threads.
    pub threads: usize,
}

impl TuneJob {
    /// Reads a job file.
    ///
    /// Errors: [`ErrorKind::Io`]; [`ErrorKind::InvalidProfile`] for JSON
    /// that is not a job of a known version (naming the file).
    pub fn load(path: &Path) -> Result<TuneJob, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::new(ErrorKind::Io, format!("{}: {e}", path.display())))?;
        let j: TuneJob = serde_json::from_str(&text).map_err(|e| {
            Error::new(
                ErrorKind::InvalidProfile,
                format!("{}: not a kiln tune job: {e}", path.display()),
            )
        })?;
        if j.kiln_tune_job != 1 {
            return Err(Error::new(
                ErrorKind::InvalidProfile,
                format!(
                    "{}: kiln_tune_job version {} (this kiln reads version 1)",
                    path.display(),
                    j.kiln_tune_job
                ),
            ));
        }
        Ok(j)
    }

    /// Whether `other` measures the same thing (everything but the run
    /// counts equal): a result of one may stand for the other on resume.
    pub fn same_work(&self, other: &TuneJob) -> bool {
        let strip = |j: &TuneJob| TuneJob {
            warmup: 0,
            runs: 0,
            ..j.clone()
        };
        strip(self) == strip(other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(p: Precision, threads: usize, drop: f64, lat: f64, mem: f64) -> CandidateResult {
        let mut r = CandidateResult::new(
            Candidate {
                variant: Variant {
                    opt_level: "all".into(),
                    precision: p,
                    train: None,
                },
                threads,
            },
            Outcome::Complete,
        );
        r.accuracy = Some(AccuracyFigure {
            metric: Metric::Agreement,
            percent: 100.0 - drop,
            reference: 100.0,
            samples: 20,
        });
        r.latency_ms = Some(lat);
        r.latency_source = Some(LatencySource::Measured);
        r.memory_mb = Some(mem);
        r
    }

    fn int8(m: &str) -> Precision {
        Precision::Int8 { method: m.into() }
    }

    #[test]
    fn precision_names_round_trip() {
        for p in [
            Precision::Fp32,
            int8("minmax"),
            Precision::Mixed {
                method: "entropy".into(),
            },
        ] {
            assert_eq!(Precision::parse(&p.name()), Some(p.clone()));
        }
        assert_eq!(Precision::parse("int8-foo"), None);
        assert_eq!(Precision::parse("int4-minmax"), None);
        let c = enumerate(
            &["basic".into(), "all".into()],
            &[Precision::Fp32, int8("mse")],
            &[Training::Qat, Training::Prune { percent: 50 }],
            &[1, 2],
        );
        assert_eq!(c.len(), 12);
        assert_eq!(c[1].id(), "basic.fp32.t2");
        assert_eq!(c[9].id(), "train.qat.t2");
        assert_eq!(c[10].id(), "train.prune50.t1");
        assert_eq!(c[9].variant.precision, int8("minmax"));
    }

    #[test]
    fn chooses_fastest_feasible_and_names_the_binding_limit() {
        let rs = vec![
            res(Precision::Fp32, 1, 0.0, 8.0, 40.0),
            res(int8("minmax"), 1, 10.0, 3.0, 20.0), // fastest, breaks accuracy
            res(int8("entropy"), 1, 2.0, 3.5, 20.0), // chosen
            res(int8("mse"), 1, 1.0, 4.0, 20.0),     // slower
        ];
        let lim = Limits {
            max_accuracy_drop: Some(5.0),
            ..Limits::default()
        };
        let c = choose(&rs, &lim);
        assert_eq!(c.chosen, Some(2));
        assert_eq!(c.binding, Some(Constraint::Accuracy));
        assert!(
            c.reasons[1].contains("accuracy drop 10.00 points > --max-accuracy-drop 5"),
            "{:?}",
            c.reasons
        );
        assert!(
            c.reasons[3].contains("slower than the chosen all.int8-entropy.t1"),
            "{:?}",
            c.reasons
        );
        assert_eq!(pareto_front(&rs), vec![1, 2, 3, 0]);
        let a = res(int8("mse"), 2, 1.0, 3.0, 20.0);
        assert!(dominates(&a, &rs[3], 1.1));
        assert!(!dominates(&rs[3], &a, 1.0));
        assert!(!dominates(&a, &rs[3], 1.4)); // within the noise margin
        assert!(!dominates(&rs[2], &rs[3], 1.0)); // faster but less accurate
    }

    #[test]
    fn latency_ties_go_to_the_more_accurate() {
        let rs = vec![
            res(int8("mse"), 1, 2.0, 1.00, 20.0),
            res(int8("minmax"), 1, 0.0, 1.02, 20.0), // within 3%: more accurate wins
            res(Precision::Fp32, 1, 0.0, 1.10, 40.0),
        ];
        let c = choose(&rs, &Limits::default());
        assert_eq!(c.chosen, Some(1));
        assert!(
            c.reasons[1].contains("within 3% of the fastest feasible (all.int8-mse.t1)"),
            "{:?}",
            c.reasons
        );
        // Regression (helper trial): the faster candidate that lost the tie
        // was reported as "slower than the chosen".
        assert!(
            c.reasons[0].contains("a tie the chosen all.int8-minmax.t1 won on accuracy"),
            "{:?}",
            c.reasons
        );
        assert!(c.reasons[2].contains("slower than the chosen"), "{:?}", c.reasons);
    }

    #[test]
    fn infeasible_latency_names_the_closest() {
        let rs = vec![
            res(Precision::Fp32, 1, 0.0, 8.0, 40.0),
            res(int8("minmax"), 2, 1.0, 1.2, 20.0),
            res(int8("mse"), 1, 9.0, 1.0, 20.0),
        ];
        let lim = Limits {
            max_latency_ms: Some(0.5),
            max_accuracy_drop: Some(5.0),
            ..Limits::default()
        };
        let c = choose(&rs, &lim);
        assert_eq!(c.chosen, None);
        // int8-minmax: 1.4x over on latency only; int8-mse: 1x over on latency plus 0.8 on accuracy.
        assert_eq!(c.closest, Some(1));
        assert_eq!(c.binding, Some(Constraint::Latency));
        // With no limits everything is feasible and nothing binds.
        let c = choose(&rs, &Limits::default());
        assert_eq!((c.chosen, c.binding), (Some(2), None));
    }

    /// Regression (helper trial): among infeasible candidates equally far
    /// from the limits (within timing noise), the closest was the faster
    /// one even when it was less accurate.
    #[test]
    fn closest_ties_go_to_the_more_accurate() {
        let rs = vec![
            res(int8("minmax"), 1, 3.0, 1.000, 20.0),
            res(int8("entropy"), 1, 0.5, 1.010, 20.0),
            res(Precision::Fp32, 1, 0.0, 3.0, 40.0),
        ];
        let lim = Limits {
            max_latency_ms: Some(0.5),
            ..Limits::default()
        };
        let c = choose(&rs, &lim);
        assert_eq!((c.chosen, c.closest), (None, Some(1)));
    }

    #[test]
    fn result_json_round_trips() {
        let r = res(int8("percentile"), 4, 0.5, 1.25, 3.0);
        let s = serde_json::to_string(&r).unwrap();
        let back: CandidateResult = serde_json::from_str(&s).unwrap();
        assert_eq!(back, r);
        let d = CandidateResult::new(r.candidate.clone(), Outcome::Dropped { reason: "x".into() });
        let s = serde_json::to_string(&d).unwrap();
        assert!(s.contains("\"status\":\"dropped\""), "{s}");
        assert!(!feasible(&d, &Limits::default()));
    }
}
