//! `kiln tune` (choose the best mix of optimization level, precision and
//! threads for a device under latency, accuracy, memory and energy limits)
//! and `kiln tune-job` (run one candidate of a tune directory; the unit a
//! batch system fans out). The decision logic is `kiln_search::tune`; this
//! module builds, measures and reports. See docs/tune.md.

use crate::cost::prepare;
use crate::quantize::{calibrate_data, method as parse_method, open_data, DataArgs, Progress};
use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use kiln::data::Dataset;
use kiln::eval::{evaluate, EvalModel, EvalOptions};
use kiln::ir::DType;
use kiln::quant::{mixed_precision, quantize, QuantError, QuantErrorKind, QuantOptions};
use kiln::runtime::{CompiledModel, TensorRef};
use kiln::Session;
use kiln_search::cost::{plan_steps, Calibration};
use kiln_search::device::DeviceProfile;
use kiln_search::energy;
use kiln_search::probe::{probe as run_probe, ProbeOptions};
use kiln_search::tune::{
    choose, choose_among, dominates, enumerate, pareto_front, violations, AccuracyFigure, CandidateResult,
    Constraint, DataSelection, LatencySource, Limits, Metric, Outcome, Precision, TrainSettings, Training,
    TuneJob,
};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Arguments of `kiln tune`.
#[derive(Args)]
pub(crate) struct TuneArgs {
    /// The trained model (ONNX, fp32).
    model: PathBuf,
    /// Target: `host` (this machine: candidates are measured) or a device
    /// profile (a shipped name, e.g. rpi4-cortex-a72, or a TOML file; latency
    /// is then predicted by the cost model of --calibration).
    #[arg(long, default_value = "host")]
    device: String,
    /// Cost-model calibration (`kiln cost calibrate`), needed for a device other than host.
    #[arg(long)]
    calibration: Option<PathBuf>,
    /// Calibration data of the int8 candidates (folder of images, IDX, .npz, .npy).
    #[arg(long)]
    calib: PathBuf,
    #[arg(long)]
    calib_split: Option<String>,
    #[arg(long)]
    calib_range: Option<String>,
    #[arg(long)]
    calib_limit: Option<usize>,
    /// Data the accuracy is measured on (repeat for several sets; default: --calib).
    #[arg(long)]
    val: Vec<PathBuf>,
    /// Split of every --val set that has splits.
    #[arg(long)]
    val_split: Option<String>,
    /// Sample range of every --val set.
    #[arg(long)]
    val_range: Option<String>,
    /// At most this many samples of every --val set.
    #[arg(long)]
    val_limit: Option<usize>,
    /// Preprocessing preset for image data.
    #[arg(long, default_value = "efficientnet-lite", value_parser = crate::preset_names())]
    preset: String,
    /// Accuracy metric: agreement (top-1 agreement with the original fp32
    /// model, no labels needed) or top1 (labelled data).
    #[arg(long, default_value = "agreement", value_parser = ["agreement", "top1"])]
    metric: String,
    /// Limit: median latency of one inference (ms).
    #[arg(long, allow_negative_numbers = true)]
    max_latency_ms: Option<f64>,
    /// Limit: accuracy points lost against the original model.
    #[arg(long, allow_negative_numbers = true)]
    max_accuracy_drop: Option<f64>,
    /// Limit: planned memory (activations + scratch + packed weights), MiB.
    #[arg(long, allow_negative_numbers = true)]
    max_memory_mb: Option<f64>,
    /// Limit: estimated energy per inference (mJ).
    #[arg(long, allow_negative_numbers = true)]
    max_energy_mj: Option<f64>,
    /// Thread counts to try (default: 1, 2, 4, ... up to the device's cores).
    #[arg(long, value_delimiter = ',')]
    threads: Vec<usize>,
    /// Optimization levels to try.
    #[arg(long, value_delimiter = ',', default_value = "basic,all")]
    opt_levels: Vec<String>,
    /// Precisions to try: fp32, int8-METHOD, mixed-METHOD (METHOD: minmax,
    /// percentile, entropy, mse).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "fp32,int8-minmax,int8-percentile,int8-entropy,int8-mse,mixed-minmax"
    )]
    precisions: Vec<String>,
    /// Labelled training data: adds trained candidates (QAT, channel-pruned
    /// levels, distilled zoo students), each trained from the model.
    #[arg(long)]
    train: Option<PathBuf>,
    /// Epochs of each training step.
    #[arg(long, default_value_t = 1)]
    train_epochs: usize,
    /// Train on the first N samples only (a tenth held out for validation; smoke runs).
    #[arg(long)]
    train_limit: Option<usize>,
    /// Training threads.
    #[arg(long, default_value_t = 2)]
    train_threads: usize,
    /// With --train: shares of output channels to prune (each a candidate, fine-tuned).
    #[arg(long, value_delimiter = ',', default_value = "0.25,0.5")]
    prune_levels: Vec<f64>,
    /// With --train: zoo students to distill into, ARCH:WIDTH (e.g. fmnist-mnv2:0.5).
    #[arg(long, value_delimiter = ',')]
    students: Vec<String>,
    /// With --train: no QAT candidate.
    #[arg(long)]
    no_qat: bool,
    /// Timed runs per candidate (median).
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// Untimed warm-up runs.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Timed runs of the quick screen that drops dominated candidates
    /// before their full benchmark (0: no screen).
    #[arg(long, default_value_t = 5)]
    screen_runs: usize,
    /// Re-benchmark the fastest N feasible candidates, interleaved, before choosing.
    #[arg(long, default_value_t = 3)]
    rebench: usize,
    /// Samples per run in calibration and evaluation.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Input shape of the timed runs (symbolic dims other than batch must be bound; batch is 1).
    #[arg(long = "shape", value_name = "NAME=D,D,...")]
    shapes: Vec<String>,
    /// The tune directory: jobs/, results/, models/, the chosen model, report.md, report.json, pareto.png.
    #[arg(short, long)]
    out: PathBuf,
    /// Only write the jobs (jobs/*.json) and stop; run them with `kiln tune-job`, then run this command again.
    #[arg(long)]
    plan: bool,
    /// Redo everything: remove the directory's jobs/, results/ and models/ first
    /// (default: resume, reusing results and models of the same work).
    #[arg(long)]
    fresh: bool,
}

/// Arguments of `kiln tune-job`.
#[derive(Args)]
pub(crate) struct JobArgs {
    /// A job file (`jobs/<id>.json` of a tune directory).
    job: PathBuf,
}

/// The calibration data selection (`--calib` and its split, range, limit).
fn sel(
    path: &Path,
    split: &Option<String>,
    range: &Option<String>,
    limit: Option<usize>,
) -> Result<DataSelection> {
    let abs = std::fs::canonicalize(path).with_context(|| format!("--calib {}", path.display()))?;
    Ok(DataSelection {
        path: abs.display().to_string(),
        split: split.clone(),
        range: range.clone(),
        limit,
    })
}

fn open_sel(flag: &str, s: &DataSelection, preset: &str) -> Result<Dataset> {
    open_data(&DataArgs {
        flag,
        path: Path::new(&s.path),
        preset: crate::preset(preset)?,
        split: s.split.as_deref(),
        range: s.range.as_deref(),
        limit: s.limit,
    })
}

/// The accuracy data of a job: its --val sets (the job format holds one;
/// further sets ride in `val.path` separated by the OS path-list separator).
fn val_sets(job: &TuneJob) -> Result<Vec<Dataset>> {
    std::env::split_paths(&job.val.path)
        .map(|p| {
            let s = DataSelection {
                path: p.display().to_string(),
                ..job.val.clone()
            };
            open_sel("--val", &s, &job.preset)
        })
        .collect()
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}

/// `kiln tune`.
pub(crate) fn tune(a: &TuneArgs) -> Result<()> {
    let t_all = Instant::now();
    for (flag, v) in [
        ("--max-latency-ms", a.max_latency_ms),
        ("--max-accuracy-drop", a.max_accuracy_drop),
        ("--max-memory-mb", a.max_memory_mb),
        ("--max-energy-mj", a.max_energy_mj),
    ] {
        if let Some(v) = v {
            if !(v.is_finite() && v >= 0.0) {
                bail!("{flag} {v}: expected a number >= 0");
            }
        }
    }
    if a.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let limits = Limits {
        max_latency_ms: a.max_latency_ms,
        max_accuracy_drop: a.max_accuracy_drop,
        max_memory_mb: a.max_memory_mb,
        max_energy_mj: a.max_energy_mj,
    };
    let metric = if a.metric == "top1" {
        Metric::Top1
    } else {
        Metric::Agreement
    };
    let precisions: Vec<Precision> = a
        .precisions
        .iter()
        .map(|p| {
            Precision::parse(p).ok_or_else(|| {
                anyhow!("--precisions {p}: expected fp32, int8-METHOD or mixed-METHOD (METHOD: minmax, percentile, entropy, mse)")
            })
        })
        .collect::<Result<_>>()?;
    for l in &a.opt_levels {
        l.parse::<kiln::opt::Level>()
            .map_err(|_| anyhow!("--opt-levels {l}: expected basic, extended or all"))?;
    }
    if precisions.is_empty() || a.opt_levels.is_empty() {
        bail!("--precisions and --opt-levels need at least one value each");
    }
    let model = std::fs::canonicalize(&a.model).with_context(|| format!("{}", a.model.display()))?;
    // The model must load before anything is written.
    kiln::load_model(&model)?;
    // A target profile and its cost model are checked before anything is
    // written (a bad --device leaves no directory behind).
    let target = if a.device == "host" {
        None
    } else {
        let p = DeviceProfile::resolve(&a.device)?;
        let Some(c) = &a.calibration else {
            bail!(
                "--device {}: latency on a device other than this machine is predicted by the cost model; \
                 give --calibration FILE (made by `kiln cost calibrate`)",
                a.device
            );
        };
        Calibration::load(c)?;
        let dev = if Path::new(&a.device).exists() {
            std::fs::canonicalize(&a.device)?.display().to_string()
        } else {
            a.device.clone()
        };
        Some((dev, p, Some(std::fs::canonicalize(c)?.display().to_string())))
    };
    // Thread counts and the calibration data are checked before anything is
    // written too.
    let max_cores = match &target {
        Some((_, p, _)) => p.cores as usize,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    if let Some(&t) = a.threads.iter().find(|&&t| t == 0 || t > max_cores) {
        bail!("--threads {t}: expected 1 to {max_cores} (the device's cores)");
    }
    let calib = sel(&a.calib, &a.calib_split, &a.calib_range, a.calib_limit)?;
    open_sel("--calib", &calib, &a.preset)?;
    if a.val
        .iter()
        .any(|v| std::fs::canonicalize(v).ok() == std::fs::canonicalize(&a.calib).ok())
    {
        eprintln!(
            "warning: --val {} is also the calibration data: int8 accuracy on it is flattered",
            a.calib.display()
        );
    }
    if a.fresh {
        // Models, accuracies, results and the report of an earlier run are all redone.
        for f in [
            "chosen.onnx",
            "report.md",
            "report.json",
            "pareto.png",
            "rebench.json",
        ] {
            let _ = std::fs::remove_file(a.out.join(f));
        }
        for sub in ["jobs", "results", "models"] {
            let d = a.out.join(sub);
            if d.is_dir() {
                std::fs::remove_dir_all(&d).with_context(|| format!("removing {} (--fresh)", d.display()))?;
            }
        }
    }
    std::fs::create_dir_all(a.out.join("jobs"))
        .and_then(|_| std::fs::create_dir_all(a.out.join("results")))
        .and_then(|_| std::fs::create_dir_all(a.out.join("models")))
        .with_context(|| format!("creating {}", a.out.display()))?;
    let dir = std::fs::canonicalize(&a.out)?;

    // The device: this machine (probed once per directory) or a profile with a cost model.
    let (device_arg, device, calibration) = if let Some(t) = target {
        t
    } else {
        let f = dir.join("device.toml");
        let p = if f.exists() && !a.fresh {
            DeviceProfile::load(&f)?
        } else {
            eprintln!("kiln tune: probing this machine (device host) -> {}", f.display());
            let p = run_probe(&ProbeOptions {
                quick: true,
                ..ProbeOptions::default()
            })?;
            kiln::write_atomic(&f, p.to_toml().as_bytes())?;
            p
        };
        ("host".to_string(), p, None)
    };
    let cores = device.cores as usize;
    let mut threads = a.threads.clone();
    if threads.is_empty() {
        let mut t = 1;
        while t <= cores.max(1) {
            threads.push(t);
            t *= 2;
        }
    }
    if let Some(&t) = threads.iter().find(|&&t| t == 0 || t > cores.max(1)) {
        bail!("--threads {t}: the device {} has {cores} core(s)", device.name);
    }

    let val = if a.val.is_empty() {
        eprintln!(
            "note: no --val: accuracy is measured on the calibration data ({}), which flatters int8",
            a.calib.display()
        );
        calib.clone()
    } else {
        let paths: Vec<PathBuf> = a
            .val
            .iter()
            .map(|p| std::fs::canonicalize(p).with_context(|| format!("--val {}", p.display())))
            .collect::<Result<_>>()?;
        DataSelection {
            path: std::env::join_paths(&paths)
                .map_err(|e| anyhow!("--val paths: {e}"))?
                .to_string_lossy()
                .into_owned(),
            split: a.val_split.clone(),
            range: a.val_range.clone(),
            limit: a.val_limit,
        }
    };
    let mut trainings = Vec::new();
    let train = match &a.train {
        None => None,
        Some(d) => {
            if !cfg!(feature = "train") {
                bail!("--train: this kiln was built without training (the `train` feature)");
            }
            if !a.no_qat {
                trainings.push(Training::Qat);
            }
            for &p in &a.prune_levels {
                if !(p > 0.0 && p < 1.0) {
                    bail!("--prune-levels {p}: expected a share of channels in (0, 1)");
                }
                trainings.push(Training::Prune {
                    percent: (p * 100.0).round() as u32,
                });
            }
            for st in &a.students {
                let (arch, w) = st
                    .split_once(':')
                    .ok_or_else(|| anyhow!("--students {st}: expected ARCH:WIDTH, e.g. fmnist-mnv2:0.5"))?;
                let w: f64 = w
                    .parse()
                    .map_err(|_| anyhow!("--students {st}: width '{w}' is not a number"))?;
                if !(w > 0.0 && w <= 4.0) {
                    bail!("--students {st}: width {w} out of (0, 4]");
                }
                trainings.push(Training::Distill {
                    arch: arch.to_string(),
                    width_percent: (w * 100.0).round() as u32,
                });
            }
            Some(TrainSettings {
                data: std::fs::canonicalize(d)
                    .with_context(|| format!("--train {}", d.display()))?
                    .display()
                    .to_string(),
                epochs: a.train_epochs.max(1),
                limit: a.train_limit,
                threads: a.train_threads.max(1),
            })
        }
    };
    let candidates = enumerate(&a.opt_levels, &precisions, &trainings, &threads);
    let jobs: Vec<TuneJob> = candidates
        .iter()
        .map(|c| TuneJob {
            kiln_tune_job: 1,
            model: model.display().to_string(),
            dir: dir.display().to_string(),
            calib: calib.clone(),
            val: val.clone(),
            preset: a.preset.clone(),
            metric,
            device: device_arg.clone(),
            calibration: calibration.clone(),
            limits,
            warmup: a.warmup,
            runs: a.runs,
            batch: a.batch,
            shapes: a.shapes.clone(),
            train: train.clone(),
            candidate: c.clone(),
        })
        .collect();
    // Check the data sets open (and have labels for top1) before any work.
    let first = &jobs[0];
    open_sel("--calib", &first.calib, &first.preset)?;
    for ds in val_sets(first)? {
        if metric == Metric::Top1 && !ds.has_labels() {
            bail!(
                "--metric top1: {} has no labels (use --metric agreement)",
                ds.spec().path.display()
            );
        }
    }
    for j in &jobs {
        let f = dir.join("jobs").join(format!("{}.json", j.candidate.id()));
        kiln::write_atomic(&f, serde_json::to_string_pretty(j)?.as_bytes())?;
    }
    println!(
        "kiln tune: {} candidates (({} opt level(s) x {} precision(s) + {} trained) x threads {:?}) on {} -> {}",
        jobs.len(),
        a.opt_levels.len(),
        precisions.len(),
        trainings.len(),
        threads,
        device.name,
        dir.display()
    );
    if a.plan {
        println!(
            "jobs written to {}/jobs; run each with `kiln tune-job FILE` (any order, any machine that sees \
             these paths; host jobs must run on the target), then run this command again to collect",
            dir.display()
        );
        return Ok(());
    }

    // Run (or resume) every candidate.
    let mut results: Vec<CandidateResult> = Vec::with_capacity(jobs.len());
    let mut resumed = 0;
    for (i, job) in jobs.iter().enumerate() {
        let id = job.candidate.id();
        let rfile = dir.join("results").join(format!("{id}.json"));
        if !a.fresh && rfile.exists() {
            if let Ok(r) = CandidateResult::load(&rfile) {
                if r.job.as_ref().is_some_and(|j| j.same_work(job)) {
                    resumed += 1;
                    results.push(r);
                    continue;
                }
            }
        }
        eprint!("[{}/{}] {id}: ", i + 1, jobs.len());
        let screen = (a.screen_runs > 0).then_some(a.screen_runs);
        let r = run_job(job, screen, &results);
        eprintln!("{}", one_line(&r));
        kiln::write_atomic(&rfile, serde_json::to_string_pretty(&r)?.as_bytes())?;
        results.push(r);
    }
    if resumed > 0 {
        eprintln!(
            "kiln tune: {resumed} result(s) reused from {}/results (--fresh to redo)",
            dir.display()
        );
    }
    collect(a, &dir, &device, &limits, metric, results, t_all)
}

/// `kiln tune-job`: one candidate, no screen; writes `results/<id>.json`.
pub(crate) fn tune_job(a: &JobArgs) -> Result<()> {
    let job = TuneJob::load(&a.job)?;
    let r = run_job(&job, None, &[]);
    let f = Path::new(&job.dir)
        .join("results")
        .join(format!("{}.json", job.candidate.id()));
    kiln::write_atomic(&f, serde_json::to_string_pretty(&r)?.as_bytes())?;
    println!("{}: {} -> {}", job.candidate.id(), one_line(&r), f.display());
    if let Outcome::Failed { error } = &r.outcome {
        bail!("{}: {error}", job.candidate.id());
    }
    Ok(())
}

fn one_line(r: &CandidateResult) -> String {
    let mut s = Vec::new();
    if let Some(acc) = &r.accuracy {
        s.push(format!(
            "{} {:.2}% (drop {:.2})",
            acc.metric.name(),
            acc.percent,
            acc.drop()
        ));
    }
    if let Some(l) = r.latency_ms {
        match r.latency_source {
            Some(LatencySource::Predicted) => s.push(format!("{l:.3} ms (predicted)")),
            _ => s.push(format!("{l:.3} ms")),
        }
    }
    if let Some(m) = r.memory_mb {
        s.push(format!("{m:.1} MiB"));
    }
    match &r.outcome {
        Outcome::Complete => {}
        Outcome::Dropped { reason } => s.push(format!("dropped: {reason}")),
        Outcome::Failed { error } => s.push(format!("FAILED: {error}")),
    }
    s.join(", ")
}

/// Runs one job; never fails (a failure is the result's outcome).
/// `screen`: runs of the quick dominance screen against `done` (results so
/// far, also used to skip byte-identical models).
fn run_job(job: &TuneJob, screen: Option<usize>, done: &[CandidateResult]) -> CandidateResult {
    let t0 = Instant::now();
    let mut r = CandidateResult::new(job.candidate.clone(), Outcome::Complete);
    if let Err(e) = measure(job, screen, done, &mut r) {
        r.outcome = Outcome::Failed {
            error: format!("{e:#}"),
        };
    }
    r.seconds = t0.elapsed().as_secs_f64();
    r.job = Some(job.clone());
    r
}

fn measure(
    job: &TuneJob,
    screen: Option<usize>,
    done: &[CandidateResult],
    r: &mut CandidateResult,
) -> Result<()> {
    let dir = Path::new(&job.dir);
    let vid = job.candidate.variant.id();
    let rel = format!("models/{vid}.onnx");
    let file = dir.join(&rel);
    if !file.exists() {
        build_variant(job, &file)?;
    }
    r.model_bytes = std::fs::metadata(&file).ok().map(|m| m.len());
    // A variant whose file is byte-identical to one already measured at the
    // same thread count (e.g. mixed precision that kept no layer in fp32)
    // runs the same kernels: its figures are that one's, not timed again.
    if let Some(d) = done.iter().find(|d| {
        !matches!(d.outcome, Outcome::Failed { .. })
            && d.same_as.is_none()
            && d.candidate.threads == job.candidate.threads
            && d.model_bytes == r.model_bytes
            && d.model_file
                .as_deref()
                .is_some_and(|f| f != rel && same_file(&dir.join(f), &file))
    }) {
        *r = CandidateResult {
            candidate: r.candidate.clone(),
            outcome: Outcome::Dropped {
                reason: match &d.outcome {
                    Outcome::Dropped { reason } => format!(
                        "same model file as {} (byte-identical), which was dropped: {reason}",
                        d.candidate
                    ),
                    _ => format!(
                        "same model file as {} (byte-identical): same figures, not timed again",
                        d.candidate
                    ),
                },
            },
            model_file: Some(rel),
            job: None,
            same_as: Some(d.candidate.id()),
            ..d.clone()
        };
        return Ok(());
    }
    r.model_file = Some(rel);
    let acc = variant_accuracy(job, &file)?;
    r.accuracy = Some(acc);
    if let Some(limit) = job.limits.max_accuracy_drop {
        if acc.drop() > limit {
            r.outcome = Outcome::Dropped {
                reason: format!(
                    "accuracy drop {:.2} points > --max-accuracy-drop {limit}: not benchmarked",
                    acc.drop()
                ),
            };
            return Ok(());
        }
    }
    let (cm, inputs, dims) = prepare(&file, &job.shapes)?;
    let steps = plan_steps(&cm, &dims)?;
    let info = cm.plan_info(&dims)?;
    let threads = job.candidate.threads;
    r.memory_mb = Some(mib(info.arena_bytes
        + info.scratch_bytes * threads
        + info.packed_weight_bytes));
    r.macs = Some(steps.iter().map(|s| s.flops).sum::<u64>() / 2);
    let device = if job.device == "host" {
        DeviceProfile::load(&dir.join("device.toml"))?
    } else {
        DeviceProfile::resolve(&job.device)?
    };
    if job.device == "host" {
        let mut timer = Timer::new(&cm, &inputs, &dims, threads)?;
        timer.run(job.warmup)?;
        if let Some(n) = screen {
            let mut ms = timer.time(n)?;
            r.latency_ms = Some(median(&mut ms));
            r.latency_runs = n;
            r.latency_source = Some(LatencySource::Measured);
            let e = energy::estimate(&steps, &device, r.latency_ms);
            r.energy_mj = Some(e.total_mj);
            r.power_mj = e.power_mj;
            // Dominated with a margin (timing noise) by a fully measured one: no full benchmark.
            if let Some(d) = done
                .iter()
                .find(|d| d.outcome == Outcome::Complete && dominates(d, r, 1.25))
            {
                r.outcome = Outcome::Dropped {
                    reason: format!(
                        "dominated by {} ({:.3} ms, drop {:.2}) in a quick screen of {n} runs ({:.3} ms, drop {:.2})",
                        d.candidate,
                        d.latency_ms.unwrap_or(0.0),
                        d.accuracy.map_or(0.0, |a| a.drop()),
                        r.latency_ms.unwrap_or(0.0),
                        acc.drop()
                    ),
                };
                return Ok(());
            }
        }
        let mut ms = timer.time(job.runs)?;
        r.latency_ms = Some(median(&mut ms));
        r.latency_runs = job.runs;
        r.latency_source = Some(LatencySource::Measured);
    } else {
        let cal_path = job
            .calibration
            .as_deref()
            .ok_or_else(|| anyhow!("device {} needs a cost-model calibration", job.device))?;
        let cal = Calibration::load(Path::new(cal_path))?;
        let p = cal.predict(&steps, threads, &device)?;
        r.latency_ms = Some(p.total_ms);
        r.latency_runs = 0;
        r.latency_source = Some(LatencySource::Predicted);
        if p.cross_precision_steps > 0 {
            r.warnings.push(format!(
                "{} int8 step(s) predicted by a cost model calibrated without int8 models (rough): \
                 calibrate on an int8 model too (docs/tune.md, cost model)",
                p.cross_precision_steps
            ));
        }
        if let Some(t) = p.threads_scaled_from {
            r.warnings.push(format!(
                "{threads}-thread latency scaled linearly from the {t}-thread calibration (optimistic): \
                 calibrate at {threads} threads (`kiln cost calibrate --threads`) on a host with that many cores"
            ));
        }
        r.warnings.extend(kiln_search::cost::kernel_gap(&device));
    }
    let e = energy::estimate(&steps, &device, r.latency_ms);
    r.energy_mj = Some(e.total_mj);
    r.power_mj = e.power_mj;
    Ok(())
}

/// Whether two files hold the same bytes.
fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::read(a), std::fs::read(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// Times runs of a compiled model on caller-owned buffers (the deployment
/// path of `kiln bench`).
struct Timer<'a> {
    cm: &'a CompiledModel,
    state: kiln::runtime::RunState,
    inputs: &'a [kiln::ir::Tensor],
    outs: Option<Vec<Vec<f32>>>,
}

impl<'a> Timer<'a> {
    fn new(
        cm: &'a CompiledModel,
        inputs: &'a [kiln::ir::Tensor],
        dims: &[Vec<usize>],
        threads: usize,
    ) -> Result<Timer<'a>> {
        let refs: Vec<&[usize]> = dims.iter().map(|d| d.as_slice()).collect();
        let shapes = cm.output_shapes(&refs)?;
        let outs = (inputs.iter().all(|t| t.dtype() == DType::F32) && shapes.iter().all(|s| s.is_some()))
            .then(|| {
                shapes
                    .iter()
                    .map(|s| vec![0f32; s.as_ref().map_or(0, |s| s.iter().product())])
                    .collect()
            });
        Ok(Timer {
            cm,
            state: cm.new_state(threads),
            inputs,
            outs,
        })
    }

    fn once(&mut self) -> Result<()> {
        match &mut self.outs {
            Some(outs) => {
                let ins: Vec<TensorRef> = self
                    .inputs
                    .iter()
                    .map(|t| TensorRef {
                        shape: t.shape(),
                        data: t.as_slice::<f32>().unwrap_or(&[]),
                    })
                    .collect();
                let mut o: Vec<&mut [f32]> = outs.iter_mut().map(|v| v.as_mut_slice()).collect();
                self.cm.run_into(&mut self.state, &ins, &mut o)?;
            }
            None => {
                self.cm.run(&mut self.state, self.inputs.to_vec())?;
            }
        }
        Ok(())
    }

    fn run(&mut self, n: usize) -> Result<()> {
        for _ in 0..n {
            self.once()?;
        }
        Ok(())
    }

    /// `n` timed runs, milliseconds.
    fn time(&mut self, n: usize) -> Result<Vec<f64>> {
        let mut ms = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            self.once()?;
            ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        Ok(ms)
    }
}

/// Builds the variant's model file: optimize at its level, then fp32 as is,
/// int8 PTQ with its calibration method, or mixed precision within the
/// accuracy limit (default 1 point).
fn build_variant(job: &TuneJob, file: &Path) -> Result<()> {
    let v = &job.candidate.variant;
    let src = Path::new(&job.model);
    if let Some(t) = &v.train {
        return build_trained(job, t, file);
    }
    let mut m = kiln::load_model(src)?;
    let level: kiln::opt::Level = v
        .opt_level
        .parse()
        .map_err(|_| anyhow!("opt level {}: expected basic, extended or all", v.opt_level))?;
    kiln::opt::optimize(
        &mut m,
        &kiln::opt::Options {
            level,
            ..Default::default()
        },
    )
    .map_err(|e| anyhow!("{}: {e}", src.display()))?;
    // Quantization reads standard ONNX: kiln's fused ops (FusedConv, ...) are
    // written as standard ops and read back, as `kiln pipeline` does;
    // quantizing the in-memory fused graph would leave those layers in fp32.
    if !matches!(v.precision, Precision::Fp32) {
        let bytes = kiln::onnx::to_bytes(&m).map_err(|e| anyhow!("{}: {e}", src.display()))?;
        m = kiln::onnx::from_bytes(&bytes, None, &kiln::onnx::LoadOptions::default())
            .map_err(|e| anyhow!("{}: {e}", src.display()))?;
    }
    let qerr = |e: QuantError| anyhow!("{}: {}", src.display(), e.message);
    let out = match &v.precision {
        Precision::Fp32 => m,
        Precision::Int8 { method } | Precision::Mixed { method } => {
            let method = parse_method(method, None)?;
            let calib = open_sel("--calib", &job.calib, &job.preset)?;
            let bar = Progress::new();
            let (stats, _, _) = calibrate_data(&m, src, &calib, method, job.batch, &bar)?;
            drop(bar);
            let qopts = QuantOptions {
                method,
                ..QuantOptions::default()
            };
            if matches!(v.precision, Precision::Int8 { .. }) {
                quantize(&m, &stats, &qopts).map_err(qerr)?.0
            } else {
                let budget = job.limits.max_accuracy_drop.unwrap_or(1.0);
                let orig = kiln::open_session(src)?;
                let sets = val_sets(job)?;
                let mut eval = |cand: &kiln::ir::Model| -> kiln::quant::Result<f64> {
                    let s = Session::new(cand.clone())
                        .map_err(|e| QuantError::new(QuantErrorKind::Evaluate, e.to_string()))?;
                    accuracy_of(job, &orig, src, &s, file, &sets)
                        .map(|a| a.percent)
                        .map_err(|e| QuantError::new(QuantErrorKind::Evaluate, format!("{e:#}")))
                };
                mixed_precision(&m, &stats, &qopts, budget, &mut eval)
                    .map_err(qerr)?
                    .0
            }
        }
    };
    kiln::onnx::save(&out, file)?;
    Ok(())
}

/// Runs this executable with `args` for `what`, its output captured into
/// `log`; on failure the error quotes the output's last lines.
pub(crate) fn run_kiln(what: &str, args: &[&dyn AsRef<std::ffi::OsStr>], log: &Path) -> Result<()> {
    let exe = std::env::current_exe().context("locating the kiln executable")?;
    let shown: Vec<String> = args
        .iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect();
    let out = std::process::Command::new(&exe)
        .args(args.iter().map(|a| a.as_ref()))
        .output()
        .with_context(|| format!("{what}: running {}", exe.display()))?;
    let mut text = format!("$ kiln {}\n", shown.join(" "));
    text.push_str(&String::from_utf8_lossy(&out.stdout));
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    kiln::write_atomic(log, text.as_bytes())?;
    if !out.status.success() {
        let tail: Vec<&str> = text.lines().rev().take(3).collect();
        bail!(
            "{what} failed ({}): {} (log: {})",
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" | "),
            log.display()
        );
    }
    Ok(())
}

/// Builds a trained variant with `kiln train qat`, `kiln prune` or
/// `kiln zoo` + `kiln train distill` in a child process (log next to the model).
fn build_trained(job: &TuneJob, t: &Training, file: &Path) -> Result<()> {
    let ts = job.train.as_ref().ok_or_else(|| {
        anyhow!(
            "{}: a trained variant needs the job's train settings",
            job.candidate
        )
    })?;
    let src = PathBuf::from(&job.model);
    let work = file.with_extension("train");
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let log = file.with_extension("train.log");
    let (epochs, threads) = (ts.epochs.to_string(), ts.threads.to_string());
    let mut common: Vec<String> = vec![
        "--epochs".into(),
        epochs,
        "--threads".into(),
        threads,
        "--preset".into(),
        job.preset.clone(),
    ];
    if let Some(l) = ts.limit {
        common.extend([
            "--limit".into(),
            l.to_string(),
            "--val-count".into(),
            (l / 10).max(1).to_string(),
        ]);
    }
    let common: Vec<&dyn AsRef<std::ffi::OsStr>> = common.iter().map(|s| s as _).collect();
    let data = PathBuf::from(&ts.data);
    let trained = match t {
        Training::Qat => {
            let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> =
                vec![&"train", &"qat", &src, &"--data", &data, &"-o", &work];
            args.extend(common.iter().copied());
            run_kiln("kiln train qat", &args, &log)?;
            work.join("model.onnx")
        }
        Training::Prune { percent } => {
            let out = work.join("model.onnx");
            let sp = format!("{}", *percent as f64 / 100.0);
            let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
                &"prune",
                &src,
                &"--method",
                &"channel",
                &"--sparsity",
                &sp,
                &"--finetune",
                &data,
                &"--bench-runs",
                &"1",
                &"-o",
                &out,
            ];
            args.extend(common.iter().copied());
            run_kiln("kiln prune", &args, &log)?;
            out
        }
        Training::Distill { arch, width_percent } => {
            // The student takes the teacher's input and gives its classes.
            let (cm, _, dims) = prepare(&src, &job.shapes)?;
            let refs: Vec<&[usize]> = dims.iter().map(|d| d.as_slice()).collect();
            let out_shape = cm.output_shapes(&refs)?.first().cloned().flatten();
            let (Some(ind), Some(classes)) = (
                dims.first().filter(|d| d.len() == 4),
                out_shape.and_then(|s| s.last().copied()),
            ) else {
                bail!(
                    "{}: distillation needs a [N, C, H, W] input and [N, classes] output",
                    src.display()
                );
            };
            let input = format!("{},{},{}", ind[1], ind[2], ind[3]);
            let init = work.join("student_init.onnx");
            let w = format!("{}", *width_percent as f64 / 100.0);
            let cls = classes.to_string();
            run_kiln(
                "kiln zoo",
                &[
                    &"zoo",
                    arch,
                    &"--width",
                    &w,
                    &"--input",
                    &input,
                    &"--classes",
                    &cls,
                    &"-o",
                    &init,
                ],
                &work.join("zoo.log"),
            )?;
            let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
                &"train",
                &"distill",
                &init,
                &"--teacher",
                &src,
                &"--data",
                &data,
                &"-o",
                &work,
            ];
            args.extend(common.iter().copied());
            run_kiln("kiln train distill", &args, &log)?;
            work.join("model.onnx")
        }
    };
    let bytes = std::fs::read(&trained).with_context(|| format!("reading {}", trained.display()))?;
    kiln::write_atomic(file, &bytes)?;
    Ok(())
}

/// The accuracy of `cand` against the original model over the job's --val sets.
fn accuracy_of(
    job: &TuneJob,
    orig: &Session,
    orig_file: &Path,
    cand: &Session,
    cand_file: &Path,
    sets: &[Dataset],
) -> Result<AccuracyFigure> {
    let (mut same, mut n, mut ref_top1, mut top1, mut labelled) = (0, 0, 0, 0, 0);
    for ds in sets {
        let rep = evaluate(
            EvalModel {
                session: orig,
                file: orig_file,
            },
            Some(EvalModel {
                session: cand,
                file: cand_file,
            }),
            ds,
            &EvalOptions { batch: job.batch },
            &mut |_| {},
        )?;
        let cmp = rep.compare.as_ref().ok_or_else(|| anyhow!("no comparison"))?;
        same += cmp.agreement.top1_same;
        n += cmp.agreement.samples;
        if let (Some(a), Some(b)) = (rep.accuracy, cmp.accuracy) {
            ref_top1 += a.top1;
            top1 += b.top1;
            labelled += a.samples;
        }
    }
    let pct = |k: usize, d: usize| if d == 0 { 0.0 } else { 100.0 * k as f64 / d as f64 };
    Ok(match job.metric {
        Metric::Agreement => AccuracyFigure {
            metric: Metric::Agreement,
            percent: pct(same, n),
            reference: 100.0,
            samples: n,
        },
        Metric::Top1 => {
            if labelled == 0 {
                bail!("--metric top1 needs labelled --val data");
            }
            AccuracyFigure {
                metric: Metric::Top1,
                percent: pct(top1, labelled),
                reference: pct(ref_top1, labelled),
                samples: labelled,
            }
        }
    })
}

/// The variant's accuracy, cached next to its model (`models/<id>.accuracy.json`,
/// keyed by the data and metric).
fn variant_accuracy(job: &TuneJob, file: &Path) -> Result<AccuracyFigure> {
    let cache = file.with_extension("accuracy.json");
    let key = json!({"val": job.val, "metric": job.metric, "preset": job.preset});
    if let Ok(text) = std::fs::read_to_string(&cache) {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
            if v["key"] == key {
                if let Ok(a) = serde_json::from_value::<AccuracyFigure>(v["accuracy"].clone()) {
                    return Ok(a);
                }
            }
        }
    }
    let src = Path::new(&job.model);
    let orig = kiln::open_session(src)?;
    let cand = kiln::open_session(file)?;
    let sets = val_sets(job)?;
    let a = accuracy_of(job, &orig, src, &cand, file, &sets)?;
    let v = json!({"key": key, "accuracy": a});
    kiln::write_atomic(&cache, serde_json::to_string_pretty(&v)?.as_bytes())?;
    Ok(a)
}

/// Re-benchmarks `ids` (indices into results) interleaved: `rounds` rounds
/// of `runs / rounds` runs each, so that load changes hit all alike.
fn rebench(
    dir: &Path,
    results: &[CandidateResult],
    ids: &[usize],
    runs: usize,
    warmup: usize,
    shapes: &[String],
) -> Result<Vec<f64>> {
    let mut compiled = Vec::new();
    for &i in ids {
        let f = dir.join(results[i].model_file.as_deref().unwrap_or_default());
        compiled.push(prepare(&f, shapes)?);
    }
    let mut timers = Vec::new();
    for (k, (cm, inputs, dims)) in compiled.iter().enumerate() {
        let mut t = Timer::new(cm, inputs, dims, results[ids[k]].candidate.threads)?;
        t.run(warmup)?;
        timers.push(t);
    }
    let rounds = 5.min(runs).max(1);
    let per = rebench_runs(runs) / rounds;
    let mut ms: Vec<Vec<f64>> = vec![Vec::new(); ids.len()];
    for _ in 0..rounds {
        for (k, t) in timers.iter_mut().enumerate() {
            ms[k].extend(t.time(per)?);
        }
    }
    Ok(ms.iter_mut().map(|v| median(v)).collect())
}

/// Runs per candidate of [`rebench`]: `runs` rounded up to whole rounds.
fn rebench_runs(runs: usize) -> usize {
    let rounds = 5.min(runs).max(1);
    runs.div_ceil(rounds) * rounds
}

fn cell_f(x: Option<f64>, prec: usize) -> String {
    x.map(|v| format!("{v:.prec$}")).unwrap_or_else(|| "-".into())
}

/// Choose, re-benchmark, write the report and the chosen model.
fn collect(
    a: &TuneArgs,
    dir: &Path,
    device: &DeviceProfile,
    limits: &Limits,
    metric: Metric,
    mut results: Vec<CandidateResult>,
    t_all: Instant,
) -> Result<()> {
    let measured_here = a.device == "host";
    let mut choice = choose(&results, limits);
    // Independent re-benchmark of the fastest feasible candidates, interleaved.
    let mut rebenched: Vec<(usize, f64, f64)> = Vec::new(); // (index, first latency, re-bench latency)
    if measured_here && a.rebench > 1 {
        let mut feas: Vec<usize> = (0..results.len())
            .filter(|&i| kiln_search::tune::feasible(&results[i], limits))
            .collect();
        feas.sort_by(|&x, &y| {
            results[x]
                .latency_ms
                .unwrap_or(f64::INFINITY)
                .total_cmp(&results[y].latency_ms.unwrap_or(f64::INFINITY))
        });
        feas.truncate(a.rebench);
        if feas.len() > 1 {
            // The re-benchmark is kept in rebench.json, keyed by the
            // candidates and their first latencies: a resumed run with the
            // same results reuses it and makes the same choice.
            let runs = rebench_runs(a.runs.max(10));
            let key = json!({
                "candidates": feas.iter().map(|&i| results[i].candidate.id()).collect::<Vec<_>>(),
                "first_ms": feas.iter().map(|&i| results[i].latency_ms).collect::<Vec<_>>(),
                "runs": runs,
            });
            let file = dir.join("rebench.json");
            let stored: Option<Vec<f64>> = std::fs::read_to_string(&file)
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .filter(|v| v["key"] == key)
                .and_then(|v| serde_json::from_value(v["rebench_ms"].clone()).ok())
                .filter(|v: &Vec<f64>| v.len() == feas.len());
            let ms = match stored {
                Some(ms) => {
                    eprintln!(
                        "kiln tune: re-benchmark of the {} fastest feasible candidates reused from {} (--fresh to redo)",
                        feas.len(),
                        file.display()
                    );
                    ms
                }
                None => {
                    eprintln!(
                        "kiln tune: re-benchmarking the {} fastest feasible candidates, interleaved",
                        feas.len()
                    );
                    let ms = rebench(dir, &results, &feas, a.runs.max(10), a.warmup, &a.shapes)?;
                    kiln::write_atomic(
                        &file,
                        serde_json::to_string_pretty(&json!({"key": key, "rebench_ms": ms}))?.as_bytes(),
                    )?;
                    ms
                }
            };
            for (k, &i) in feas.iter().enumerate() {
                rebenched.push((i, results[i].latency_ms.unwrap_or(f64::NAN), ms[k]));
            }
            // The re-benchmark's medians (more runs, interleaved) replace the first ones.
            for &(i, _, m) in &rebenched {
                results[i].latency_ms = Some(m);
                results[i].latency_runs = rebench_runs(a.runs.max(10));
                results[i].power_mj = Some(device.power_w * m);
                // Copies of a re-benchmarked model get its new figure.
                let id = results[i].candidate.id();
                for r in results
                    .iter_mut()
                    .filter(|r| r.same_as.as_deref() == Some(id.as_str()))
                {
                    r.latency_ms = Some(m);
                    r.latency_runs = rebench_runs(a.runs.max(10));
                    r.power_mj = Some(device.power_w * m);
                }
            }
            choice = choose_among(&results, limits, &feas);
        }
    }
    let front = pareto_front(&results);

    // The table.
    let head = [
        "candidate",
        "accuracy %",
        "drop",
        "latency ms",
        "memory MiB",
        "energy mJ (est.)",
        "P x t mJ",
        "size MiB",
        "verdict",
    ];
    let rows: Vec<[String; 9]> = results
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut verdict = choice.reasons[i].clone();
            if front.contains(&i) {
                verdict = format!("[pareto] {verdict}");
            }
            [
                r.candidate.id(),
                cell_f(r.accuracy.map(|a| a.percent), 2),
                cell_f(r.accuracy.map(|a| a.drop()), 2),
                match (r.latency_ms, r.latency_source) {
                    (Some(l), Some(LatencySource::Predicted)) => format!("{l:.3} (pred)"),
                    (Some(l), _) if rebenched.iter().any(|x| x.0 == i) => format!("{l:.3} (rb)"),
                    (Some(l), _) => format!("{l:.3}"),
                    _ => "-".into(),
                },
                cell_f(r.memory_mb, 1),
                cell_f(r.energy_mj, 3),
                cell_f(r.power_mj, 2),
                cell_f(r.model_bytes.map(|b| b as f64 / (1u64 << 20) as f64), 2),
                verdict,
            ]
        })
        .collect();
    let table = crate::table::render(&head, &rows, &[0, head.len() - 1]);

    let lim_text = {
        let mut v = Vec::new();
        for (c, x) in [
            (Constraint::Latency, limits.max_latency_ms),
            (Constraint::Accuracy, limits.max_accuracy_drop),
            (Constraint::Memory, limits.max_memory_mb),
            (Constraint::Energy, limits.max_energy_mj),
        ] {
            if let Some(x) = x {
                v.push(format!("{} {x} {}", c.flag(), c.unit()));
            }
        }
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(", ")
        }
    };
    let mut summary = Vec::new();
    summary.push(format!(
        "device {} ({}), latency {}; accuracy: {} against the original fp32 model; limits: {lim_text}",
        device.name,
        device.description,
        if measured_here {
            "measured here (median of timed runs, compiled runtime)"
        } else {
            "predicted by the cost model"
        },
        match metric {
            Metric::Agreement => "top-1 agreement",
            Metric::Top1 => "top-1 accuracy",
        }
    ));
    summary.push(format!(
        "energy mJ (est.): {}, not a measurement; P x t: the device's power figure ({} W) x latency",
        energy::SOURCE,
        device.power_w
    ));
    let complete = results.iter().filter(|r| r.latency_ms.is_some()).count();
    summary.push(format!(
        "{} candidates, {} with a latency ({} {}), {} dropped early, {} failed; {:.0} s",
        results.len(),
        complete,
        results.iter().filter(|r| r.outcome == Outcome::Complete).count(),
        if measured_here {
            "fully benchmarked"
        } else {
            "predicted and kept"
        },
        results
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Dropped { .. }))
            .count(),
        results
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Failed { .. }))
            .count(),
        t_all.elapsed().as_secs_f64()
    ));
    if !rebenched.is_empty() {
        let parts: Vec<String> = rebenched
            .iter()
            .map(|(i, first, re)| format!("{} {first:.3} -> {re:.3} ms", results[*i].candidate))
            .collect();
        summary.push(format!(
            "re-benchmark of the fastest feasible ({} interleaved runs each, marked (rb); the choice is the fastest of these, \
             other latencies are from each candidate's own run): {}",
            rebench_runs(a.runs.max(10)),
            parts.join(", ")
        ));
    }
    let mut warnings: Vec<&String> = results.iter().flat_map(|r| &r.warnings).collect();
    warnings.sort();
    warnings.dedup();
    for w in warnings {
        eprintln!("warning: {w}");
        summary.push(format!("warning: {w}"));
    }
    let acc_dropped = results
        .iter()
        .filter(|r| r.latency_ms.is_none() && matches!(r.outcome, Outcome::Dropped { .. }))
        .count();
    let binding_text = |b: Option<Constraint>| match b {
        Some(c) => format!("{} ({})", c.flag(), c.unit()),
        None if acc_dropped > 0 => format!(
            "none among the timed candidates; {acc_dropped} candidate(s) were dropped by --max-accuracy-drop \
             before timing (their speed is unknown)"
        ),
        None => "none: no faster candidate was rejected by a limit".into(),
    };

    // The plot.
    let png = dir.join("pareto.png");
    let plot_note = match crate::tune_plot_write(&png, &results, &front, choice.chosen, limits, &device.name)
    {
        Ok(true) => format!("Pareto front (accuracy vs latency): {}", png.display()),
        Ok(false) => "no Pareto PNG: this kiln was built without the plotting feature (train)".into(),
        Err(e) => format!("the Pareto PNG could not be drawn: {e:#}"),
    };
    summary.push(plot_note);

    let chosen_file = dir.join("chosen.onnx");
    let verdict = match choice.chosen {
        Some(c) => {
            let r = &results[c];
            let src = dir.join(r.model_file.as_deref().unwrap_or_default());
            let bytes = std::fs::read(&src).with_context(|| format!("reading {}", src.display()))?;
            kiln::write_atomic(&chosen_file, &bytes)?;
            format!(
                "chosen: {} ({} thread(s)): {:.3} ms, {} {:.2}% (drop {:.2} points), {:.1} MiB, {:.3} mJ -> {}\nbinding constraint: {}",
                r.candidate,
                r.candidate.threads,
                r.latency_ms.unwrap_or(0.0),
                metric.name(),
                r.accuracy.map_or(0.0, |x| x.percent),
                r.accuracy.map_or(0.0, |x| x.drop()),
                r.memory_mb.unwrap_or(0.0),
                r.energy_mj.unwrap_or(0.0),
                chosen_file.display(),
                binding_text(choice.binding)
            )
        }
        None => {
            let _ = std::fs::remove_file(&chosen_file);
            match choice.closest {
                Some(c) => {
                    let v: Vec<String> = violations(&results[c], limits)
                        .iter()
                        .map(|v| v.to_string())
                        .collect();
                    format!(
                        "no candidate meets the limits; the closest is {} ({}); the limit that failed: {}",
                        results[c].candidate,
                        if v.is_empty() {
                            "its figures are incomplete".to_string()
                        } else {
                            v.join("; ")
                        },
                        binding_text(choice.binding)
                    )
                }
                None => "no candidate meets the limits, and none was measured".into(),
            }
        }
    };
    let text = format!("{}\n\n{}\n{verdict}\n", summary.join("\n"), table);
    let md = format!(
        "# kiln tune report: {}\n\n```text\n{text}```\n\nEach row's job and full figures: `results/<candidate>.json`.\n",
        a.model.display()
    );
    kiln::write_atomic(&dir.join("report.md"), md.as_bytes())?;
    let report = json!({
        "model": a.model.display().to_string(),
        "device": device.name,
        "measured": measured_here,
        "limits": limits,
        "metric": metric.name(),
        "chosen": choice.chosen.map(|c| results[c].candidate.id()),
        "binding": choice.binding,
        "closest": choice.closest.map(|c| results[c].candidate.id()),
        "pareto_front": front.iter().map(|&i| results[i].candidate.id()).collect::<Vec<_>>(),
        "rebench": rebenched.iter().map(|(i, f, r)| json!({"candidate": results[*i].candidate.id(), "first_ms": f, "rebench_ms": r})).collect::<Vec<_>>(),
        "candidates": results.iter().zip(&choice.reasons).map(|(r, why)| json!({"result": r, "verdict": why})).collect::<Vec<_>>(),
    });
    kiln::write_atomic(
        &dir.join("report.json"),
        serde_json::to_string_pretty(&report)?.as_bytes(),
    )?;
    println!("{text}");
    println!("report: {}", dir.join("report.md").display());
    if choice.chosen.is_none() {
        bail!(
            "{}",
            verdict.lines().next().unwrap_or("no candidate meets the limits")
        );
    }
    Ok(())
}
