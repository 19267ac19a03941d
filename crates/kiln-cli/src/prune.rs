//! `kiln prune`: magnitude (unstructured or 1x8 block) and structured
//! channel pruning (kiln-prune), optionally fine-tuned on labelled data
//! (kiln-train), with a report of sparsity, parameters, MACs, bytes,
//! accuracy and latency before and after.

use crate::train::{run_model, FitArgs};
use anyhow::{bail, Context, Result};
use kiln::data::{DataSpec, LabelMode, Split};
use kiln::ir::Model;
use kiln::preprocess::Preset;
use kiln_prune::{ChannelPruneConfig, Criterion, MagnitudeConfig, Schedule};
use kiln_train::data::TrainSet;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Arguments of `kiln prune`.
#[derive(clap::Args)]
pub struct PruneArgs {
    /// fp32 ONNX model to prune.
    pub model: PathBuf,
    /// magnitude: unstructured (smallest |w| zeroed); block: 1x8 blocks along the output
    /// channels of pointwise Conv/Gemm weights (what kiln's sparse kernels skip); channel:
    /// whole output channels removed with their dependencies (a smaller dense model).
    #[arg(long, value_parser = ["magnitude", "block", "channel"])]
    pub method: String,
    /// Target sparsity (magnitude, block: fraction of weights / blocks zeroed) or fraction
    /// of prunable channels removed (channel), in [0, 1).
    #[arg(long)]
    pub sparsity: f32,
    /// Sparsity schedule while fine-tuning (magnitude, block): `polynomial` (TF-MOT's
    /// PolynomialDecay) or `constant` (ConstantSparsity).
    #[arg(long, default_value = "polynomial", value_parser = ["polynomial", "constant"])]
    pub schedule: String,
    /// PolynomialDecay's initial sparsity.
    #[arg(long, default_value_t = 0.0)]
    pub initial_sparsity: f32,
    /// First optimizer step that prunes.
    #[arg(long, default_value_t = 0)]
    pub begin_step: u64,
    /// Step at which the final sparsity is reached (default: the end of the
    /// second-to-last epoch, so the last epoch trains at the final sparsity).
    #[arg(long)]
    pub end_step: Option<u64>,
    /// PolynomialDecay's exponent.
    #[arg(long, default_value_t = 3.0)]
    pub power: f32,
    /// Steps between mask updates (default: TF-MOT's 100, or a tenth of the pruning span if shorter).
    #[arg(long)]
    pub frequency: Option<u64>,
    /// Rank all layers together (global) instead of each layer alone.
    #[arg(long)]
    pub global: bool,
    /// Channel ranking criterion (channel): l1, l2 or bn-scale (|gamma| of BatchNormalization).
    #[arg(long, default_value = "l1", value_parser = ["l1", "l2", "bn-scale"])]
    pub criterion: String,
    /// Node names or op types to leave unpruned (comma-separated). The stem and the
    /// classifier are kept by default (magnitude, block).
    #[arg(long, value_delimiter = ',')]
    pub exclude: Vec<String>,
    /// Kept channel counts rounded up to a multiple of this (channel).
    #[arg(long, default_value_t = 1)]
    pub round_to: usize,
    /// Fine-tune on this labelled data (as `kiln train fit --data`) while / after pruning.
    #[arg(long, value_name = "DATA")]
    pub finetune: Option<PathBuf>,
    /// Fine-tuning epochs.
    #[arg(long, default_value_t = 2)]
    pub epochs: usize,
    /// Fine-tuning mini-batch.
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    /// Fine-tuning peak learning rate (one-cycle AdamW).
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Fine-tuning: use only the first N samples.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Fine-tuning: hold out the last N samples for validation.
    #[arg(long, default_value_t = 5000)]
    pub val_count: usize,
    /// Fine-tuning augmentation (as `kiln train fit --augment`).
    #[arg(long, default_value = "flip,shift:2")]
    pub augment: String,
    /// Split of an IDX folder / .npz used for fine-tuning.
    #[arg(long, default_value = "train")]
    pub split: String,
    /// Preprocessing preset for image folders (fine-tuning and --eval).
    #[arg(long, default_value = "efficientnet-lite", value_parser = crate::preset_names())]
    pub preset: String,
    /// Seed of the fine-tuning shuffle and augmentation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Threads (fine-tuning, evaluation and the latency measurement).
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Measure top-1 before and after on this labelled data (kiln's runtime).
    #[arg(long, value_name = "DATA")]
    pub eval: Option<PathBuf>,
    /// Split of --eval for IDX folders / .npz.
    #[arg(long, default_value = "test")]
    pub eval_split: String,
    /// Use only the first N samples of --eval.
    #[arg(long)]
    pub eval_limit: Option<usize>,
    /// Batch of the latency measurement.
    #[arg(long, default_value_t = 32)]
    pub bench_batch: usize,
    /// Timed runs of the latency measurement, before and after interleaved (median reported; 0: skip).
    #[arg(long, default_value_t = 20)]
    pub bench_runs: usize,
    /// Pruned ONNX model.
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
    /// JSON report (default: OUTPUT with `.report.json`).
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Fine-tuning folder: checkpoint, metrics, curves (default: OUTPUT with `.finetune`).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn split_of(s: &str) -> Result<Split> {
    Ok(match s {
        "train" => Split::Train,
        "test" => Split::Test,
        o => bail!("split {o}: expected train or test"),
    })
}

/// Figures of one model for the report.
struct Figures {
    params: u64,
    nonzero: u64,
    macs: Option<u64>,
    bytes: usize,
    top1: Option<f64>,
    latency_ms: Option<f64>,
}

fn figures(m: &Model, a: &PruneArgs, eval: Option<&TrainSet>) -> Result<Figures> {
    let stats = kiln::stats::model_stats(m, &HashMap::new())?;
    let nonzero: u64 = m
        .graph
        .initializers
        .values()
        .filter(|t| t.dtype() == kiln::ir::DType::F32)
        .map(|t| t.to_f32_vec().iter().filter(|&&x| x != 0.0).count() as u64)
        .sum();
    let bytes = kiln::onnx::to_bytes(m)?.len();
    let top1 = match eval {
        Some(set) => Some(kiln_train::fit::evaluate(m, set, 256, a.threads)?),
        None => None,
    };
    Ok(Figures {
        params: stats.learnable_params,
        nonzero,
        macs: stats.macs,
        bytes,
        top1,
        latency_ms: None,
    })
}

/// A compiled model with its state and a constant input at batch `batch`.
struct Timed {
    cm: kiln::runtime::CompiledModel,
    st: kiln::runtime::RunState,
    x: kiln::ir::Tensor,
}

impl Timed {
    fn new(m: &Model, batch: usize, threads: usize) -> Result<Timed> {
        let input = m.graph.inputs.first().context("the model has no input")?;
        let dims: Vec<usize> = match &input.ty.shape {
            Some(d) => d
                .iter()
                .enumerate()
                .map(|(i, d)| match (i, d) {
                    (0, _) => Ok(batch),
                    (_, kiln::ir::Dim::Known(n)) => Ok(*n),
                    _ => bail!("input '{}' has a symbolic dim {i}: cannot time it", input.name),
                })
                .collect::<Result<_>>()?,
            None => bail!("input '{}' has no static shape: cannot time it", input.name),
        };
        let cm = kiln::compile_model(m.clone(), &kiln::runtime::CompileOptions::default())?;
        let st = cm.new_state(threads.max(1));
        let n: usize = dims.iter().product();
        let x = kiln::ir::Tensor::from_vec(dims, vec![0.5f32; n])?;
        Ok(Timed { cm, st, x })
    }

    fn once(&mut self) -> Result<f64> {
        let t0 = Instant::now();
        self.cm.run(&mut self.st, vec![self.x.clone()])?;
        Ok(t0.elapsed().as_secs_f64() * 1e3)
    }
}

/// Median wall times (ms) of the two models on kiln's runtime at batch
/// `batch`, measured interleaved (A, B, A, B, ...) so that both see the same
/// machine load; 3 warm-up runs each.
fn latency_pair(a: &Model, b: &Model, batch: usize, runs: usize, threads: usize) -> Result<(f64, f64)> {
    let (mut ta, mut tb) = (Timed::new(a, batch, threads)?, Timed::new(b, batch, threads)?);
    for _ in 0..3 {
        ta.once()?;
        tb.once()?;
    }
    let (mut va, mut vb) = (Vec::with_capacity(runs), Vec::with_capacity(runs));
    for _ in 0..runs {
        va.push(ta.once()?);
        vb.push(tb.once()?);
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Ok((med(&mut va), med(&mut vb)))
}

fn fit_args(a: &PruneArgs, data: &Path) -> FitArgs {
    FitArgs {
        model: a.model.clone(),
        data: data.to_path_buf(),
        split: Some(a.split.clone()),
        preset: a.preset.clone(),
        val_count: a.val_count,
        limit: a.limit,
        epochs: a.epochs,
        batch: a.batch,
        lr: Some(a.lr),
        weight_decay: 1e-4,
        augment: a.augment.clone(),
        seed: a.seed,
        threads: a.threads,
        out: a
            .work_dir
            .clone()
            .unwrap_or_else(|| with_suffix(&a.output, ".finetune")),
        resume: false,
        stop_after: None,
        max_memory_mb: 4096,
    }
}

pub fn prune(a: &PruneArgs) -> Result<()> {
    if !(0.0..1.0).contains(&a.sparsity) {
        bail!("--sparsity {}: expected a fraction in [0, 1)", a.sparsity);
    }
    let model = kiln::load_model(&a.model)?;
    let eval = match &a.eval {
        Some(p) => {
            let mut spec = DataSpec::new(p);
            spec.preset = Preset::from_name(&a.preset).context("unknown preset")?;
            spec.labels = LabelMode::Auto;
            spec.split = Some(split_of(&a.eval_split)?);
            spec.limit = a.eval_limit;
            Some(TrainSet::load(spec, 4096 << 20).with_context(|| format!("--eval {}", p.display()))?)
        }
        None => None,
    };
    eprintln!("measuring {} ...", a.model.display());
    let before = figures(&model, a, eval.as_ref())?;
    let mag_cfg = MagnitudeConfig {
        block: if a.method == "block" { 8 } else { 1 },
        global: a.global,
        exclude: a.exclude.clone(),
        keep_stem_and_classifier: true,
    };
    let mut channel_report = None;
    let pruned = match (a.method.as_str(), &a.finetune) {
        ("channel", ft) => {
            let criterion = match a.criterion.as_str() {
                "l2" => Criterion::L2,
                "bn-scale" => Criterion::BnScale,
                _ => Criterion::L1,
            };
            let cfg = ChannelPruneConfig {
                ratio: a.sparsity,
                criterion,
                global: a.global,
                exclude: a.exclude.clone(),
                round_to: a.round_to,
            };
            let (m, r) = kiln_prune::prune_channels(&model, &cfg)?;
            eprintln!(
                "channel pruning: {} of {} groups pruned, {} -> {} prunable channels",
                r.pruned_groups(),
                r.groups.len(),
                r.prunable_channels_before,
                r.prunable_channels_after
            );
            channel_report = Some(r);
            if ft.is_some()
                && !model
                    .graph
                    .nodes
                    .iter()
                    .any(|n| n.op_type == "BatchNormalization")
            {
                eprintln!(
                    "warning: {} has no BatchNormalization (folded into the convs): after channel pruning, fine-tuning recovers far more slowly than from the unfolded model",
                    a.model.display()
                );
            }
            match ft {
                Some(data) => run_model(&fit_args(a, data), m, None, None, None)?.model,
                None => m,
            }
        }
        (_, None) => kiln_prune::prune_magnitude(&model, a.sparsity, &mag_cfg)?.0,
        (_, Some(data)) => {
            let targets = kiln_prune::prune_targets(&model, &mag_cfg)?;
            let make = |steps_per_epoch: usize| -> Result<kiln_train::Pruning> {
                let total = (steps_per_epoch * a.epochs) as u64;
                let default_end = if a.epochs >= 2 {
                    total - steps_per_epoch as u64
                } else {
                    total.saturating_sub(1)
                };
                let end = a.end_step.unwrap_or(default_end).max(a.begin_step + 1);
                let span = end - a.begin_step;
                let freq = a.frequency.unwrap_or_else(|| 100.min((span / 10).max(1)));
                // The last update lands on end_step (a multiple of the frequency from begin_step).
                let end = a.begin_step + (span / freq).max(1) * freq;
                if end >= total {
                    bail!(
                        "the pruning schedule ends at step {end}, after the last of the {total} fine-tuning steps; lower --end-step or raise --epochs"
                    );
                }
                let schedule = match a.schedule.as_str() {
                    "constant" => Schedule::Constant {
                        sparsity: a.sparsity,
                        begin_step: a.begin_step,
                        end_step: Some(end),
                        frequency: freq,
                    },
                    _ => Schedule::PolynomialDecay {
                        initial: a.initial_sparsity,
                        final_sparsity: a.sparsity,
                        begin_step: a.begin_step,
                        end_step: end,
                        power: a.power,
                        frequency: freq,
                    },
                };
                schedule
                    .validate()
                    .map_err(|m| anyhow::anyhow!("pruning schedule: {m}"))?;
                eprintln!("pruning schedule: {schedule:?} over {total} steps");
                Ok(kiln_train::Pruning {
                    targets: targets.clone(),
                    config: mag_cfg.clone(),
                    schedule,
                })
            };
            run_model(&fit_args(a, data), model.clone(), None, None, Some(&make))?.model
        }
    };
    let bytes = kiln::onnx::to_bytes(&pruned)?;
    kiln::write_atomic(&a.output, &bytes)?;
    eprintln!("measuring {} ...", a.output.display());
    let mut after = figures(&pruned, a, eval.as_ref())?;
    let mut before = before;
    if a.bench_runs > 0 {
        let (x, y) = latency_pair(&model, &pruned, a.bench_batch, a.bench_runs, a.threads)?;
        before.latency_ms = Some(x);
        after.latency_ms = Some(y);
    }
    let layers = kiln_prune::weight_sparsity(&pruned);
    // The report.
    println!(
        "{:<44} {:>16} {:>9} {:>9} {:>11}",
        "layer (op)", "shape", "params", "sparsity", "zero 1x8"
    );
    for l in &layers {
        println!(
            "{:<44} {:>16} {:>9} {:>8.1}% {:>10.1}%",
            format!("{} ({})", truncate(&l.node, 36), l.op),
            format!("{:?}", l.shape).replace(' ', ""),
            l.params,
            100.0 * l.sparsity(),
            100.0 * l.zero_blocks_1x8
        );
    }
    let row = |name: &str, b: String, a_: String, ratio: String| {
        println!("{name:<26} {b:>14} {a_:>14} {ratio:>10}");
    };
    println!();
    row("", "before".into(), "after".into(), "after/before".into());
    let r = |x: f64, y: f64| format!("{:.3}", y / x.max(1e-12));
    row(
        "parameters",
        before.params.to_string(),
        after.params.to_string(),
        r(before.params as f64, after.params as f64),
    );
    row(
        "nonzero parameters",
        before.nonzero.to_string(),
        after.nonzero.to_string(),
        r(before.nonzero as f64, after.nonzero as f64),
    );
    if let (Some(x), Some(y)) = (before.macs, after.macs) {
        row(
            "MACs (dense, batch 1)",
            format!("{:.2}M", x as f64 / 1e6),
            format!("{:.2}M", y as f64 / 1e6),
            r(x as f64, y as f64),
        );
    }
    row(
        "model bytes (ONNX)",
        before.bytes.to_string(),
        after.bytes.to_string(),
        r(before.bytes as f64, after.bytes as f64),
    );
    if let (Some(x), Some(y)) = (before.top1, after.top1) {
        row(
            "top-1 (%)",
            format!("{x:.2}"),
            format!("{y:.2}"),
            format!("{:+.2} pt", y - x),
        );
    }
    if let (Some(x), Some(y)) = (before.latency_ms, after.latency_ms) {
        row(
            &format!("latency (ms, batch {})", a.bench_batch),
            format!("{x:.3}"),
            format!("{y:.3}"),
            format!("{:.2}x speed-up", x / y.max(1e-9)),
        );
    }
    let fig = |f: &Figures| {
        json!({"params": f.params, "nonzero_params": f.nonzero, "macs": f.macs, "model_bytes": f.bytes,
               "top1": f.top1, "latency_ms": f.latency_ms})
    };
    let layers_json: Vec<Value> = layers
        .iter()
        .map(|l| {
            json!({"node": l.node, "op": l.op, "weight": l.weight, "shape": l.shape, "params": l.params,
                        "zeros": l.zeros, "sparsity": l.sparsity(), "zero_blocks_1x8": l.zero_blocks_1x8})
        })
        .collect();
    let groups_json: Option<Vec<Value>> = channel_report.as_ref().map(|r| {
        r.groups
            .iter()
            .map(|g| {
                json!({"id": g.group.id, "nodes": g.group.nodes, "before": g.group.channels,
                            "after": g.kept.len(), "status": format!("{:?}", g.status)})
            })
            .collect()
    });
    let report = json!({
        "model": a.model.display().to_string(), "output": a.output.display().to_string(),
        "method": a.method, "sparsity": a.sparsity, "global": a.global,
        "finetune": a.finetune.as_ref().map(|p| p.display().to_string()),
        "epochs": a.finetune.as_ref().map(|_| a.epochs),
        "eval": a.eval.as_ref().map(|p| p.display().to_string()),
        "bench": {"batch": a.bench_batch, "runs": a.bench_runs, "threads": a.threads},
        "before": fig(&before), "after": fig(&after), "layers": layers_json, "channel_groups": groups_json,
    });
    let rp = a
        .report
        .clone()
        .unwrap_or_else(|| with_suffix(&a.output, ".report.json"));
    let mut s = serde_json::to_string_pretty(&report)?;
    s.push('\n');
    kiln::write_atomic(&rp, s.as_bytes())?;
    println!("\nwrote {} and {}", a.output.display(), rp.display());
    Ok(())
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let tail: String = s
            .chars()
            .rev()
            .take(n - 1)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        format!("…{tail}")
    }
}
