//! `kiln train fit`: fine-tune or train a model on labelled data (kiln-train).

use anyhow::{bail, Context, Result};
use kiln::data::{DataSpec, LabelMode, Split};
use kiln::preprocess::Preset;
use kiln_train::data::{Augment, TrainSet};
use kiln_train::{FitConfig, FitEvent};
use std::io::IsTerminal;
use std::path::PathBuf;

/// Arguments of `kiln train fit`.
#[derive(clap::Args)]
pub struct FitArgs {
    /// fp32 ONNX model to train (BatchNormalization may be folded or not; its
    /// initializers are the starting weights).
    pub model: PathBuf,
    /// Labelled training data: an IDX folder (Fashion-MNIST), an ImageFolder
    /// directory, a .npz archive or a folder of .npy files.
    #[arg(long)]
    pub data: PathBuf,
    /// Split of an IDX folder or Keras-style .npz (`train` or `test`; default `train`
    /// where the data has splits, none for ImageFolder, .npy folders and plain .npz).
    #[arg(long)]
    pub split: Option<String>,
    /// Preprocessing preset for image folders.
    #[arg(long, default_value = "efficientnet-lite", value_parser = crate::preset_names())]
    pub preset: String,
    /// Hold out the last N samples of the data for validation (0: no validation).
    #[arg(long, default_value_t = 5000)]
    pub val_count: usize,
    /// Use only the first N samples (before the hold-out), for smoke runs.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Epochs.
    #[arg(long, default_value_t = 4)]
    pub epochs: usize,
    /// Mini-batch size.
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    /// Peak learning rate (AdamW, one-cycle schedule) [default: 4e-3; qat: 1e-4].
    #[arg(long)]
    pub lr: Option<f64>,
    /// AdamW decoupled weight decay (Conv/Gemm weights).
    #[arg(long, default_value_t = 1e-4)]
    pub weight_decay: f64,
    /// Augmentations: comma-separated `flip`, `shift:K` (random crop with K-pixel zero padding), or `none`.
    #[arg(long, default_value = "flip,shift:2")]
    pub augment: String,
    /// Seed of the shuffle and augmentation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Training threads (1 gives bit-reproducible runs).
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Output folder: checkpoint.kiln, model.onnx, metrics.json, curves.png.
    #[arg(long, short = 'o', default_value = "kiln-train-out")]
    pub out: PathBuf,
    /// Continue from OUT/checkpoint.kiln (same model and settings).
    #[arg(long)]
    pub resume: bool,
    /// Stop after this many epochs in total, as an interrupt would (resume later with --resume).
    #[arg(long)]
    pub stop_after: Option<usize>,
    /// Cap on the memory the decoded training data may take (MiB).
    #[arg(long, default_value_t = 4096)]
    pub max_memory_mb: usize,
}

/// Arguments of `kiln train distill`.
#[derive(clap::Args)]
pub struct DistillArgs {
    #[command(flatten)]
    pub fit: FitArgs,
    /// Teacher: any model kiln compiles (fp32 or int8), same input and classes as the student.
    #[arg(long)]
    pub teacher: PathBuf,
    /// Distillation temperature T.
    #[arg(long, default_value_t = 4.0)]
    pub temperature: f64,
    /// Weight of the soft (teacher) term; 1 - alpha weighs the labels' cross-entropy.
    #[arg(long, default_value_t = 0.9)]
    pub alpha: f64,
    /// Feature distillation (FitNets): STUDENT_VALUE=TEACHER_VALUE, value names of
    /// the two graphs with equal height and width; a learned 1x1 convolution maps
    /// the student's channels onto the teacher's and their MSE is added to the loss.
    /// Repeatable.
    #[arg(long = "feature", value_name = "STUDENT=TEACHER")]
    pub features: Vec<kiln_train::FeatureHint>,
    /// Weight beta of the feature (MSE) term.
    #[arg(long, default_value_t = 1.0)]
    pub feature_weight: f64,
}

pub fn distill(d: &DistillArgs) -> Result<()> {
    let teacher = if d.features.is_empty() {
        kiln::compile(&d.teacher, &kiln::runtime::CompileOptions::default())?
    } else {
        let m = kiln::load_model(&d.teacher)?;
        kiln_train::teacher_with_features(m, &d.features)
            .with_context(|| format!("teacher {}", d.teacher.display()))?
    };
    // The teacher's identity for the checkpoint: its path and a hash of its bytes.
    let bytes = std::fs::read(&d.teacher).with_context(|| format!("reading {}", d.teacher.display()))?;
    let fnv = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    let name = format!("{} (fnv1a {fnv:016x})", d.teacher.display());
    let dist = kiln_train::Distill {
        teacher,
        teacher_name: name,
        temperature: d.temperature,
        alpha: d.alpha,
        features: d.features.clone(),
        feature_weight: d.feature_weight,
    };
    eprintln!(
        "distilling from {} (T = {}, alpha = {})",
        d.teacher.display(),
        d.temperature,
        d.alpha
    );
    for h in &d.features {
        eprintln!(
            "feature hint: student '{}' -> 1x1 adapter -> teacher '{}' (MSE, beta = {})",
            h.student, h.teacher, d.feature_weight
        );
    }
    run(&d.fit, Some(&dist), None)
}

/// Arguments of `kiln train qat`.
#[derive(clap::Args)]
pub struct QatArgs {
    #[command(flatten)]
    pub fit: FitArgs,
    /// Calibration samples (the first N of the training data) for kiln's PTQ
    /// baseline and the initial activation ranges.
    #[arg(long, default_value_t = 500)]
    pub calib_count: usize,
    /// Activation type: uint8 (kiln's default) or int8.
    #[arg(long, default_value = "uint8")]
    pub activations: String,
    /// EMA weight of each batch's activation range (0 keeps the calibrated ranges).
    #[arg(long, default_value_t = 0.01)]
    pub range_momentum: f32,
}

pub fn qat(q: &QatArgs) -> Result<()> {
    run(&q.fit, None, Some(q))
}

pub fn fit(a: &FitArgs) -> Result<()> {
    run(a, None, None)
}

fn run(a: &FitArgs, distill: Option<&kiln_train::Distill>, qat: Option<&QatArgs>) -> Result<()> {
    let model = kiln::load_model(&a.model)?;
    run_model(a, model, distill, qat, None).map(|_| ())
}

/// Builds the [`kiln_train::Pruning`] of a run from its steps per epoch.
pub type PruningFor<'a> = &'a dyn Fn(usize) -> Result<kiln_train::Pruning>;

/// Trains `model` with the data and settings of `a` (`a.model` only names
/// it), with distillation, QAT or pruning (built from the steps per epoch).
pub fn run_model(
    a: &FitArgs,
    model: kiln::ir::Model,
    distill: Option<&kiln_train::Distill>,
    qat: Option<&QatArgs>,
    pruning: Option<PruningFor>,
) -> Result<kiln_train::FitReport> {
    let mut spec = DataSpec::new(&a.data);
    spec.preset = Preset::from_name(&a.preset).context("unknown preset")?;
    spec.labels = LabelMode::Auto;
    spec.split = match a.split.as_deref() {
        None | Some("train") => Some(Split::Train),
        Some("test") => Some(Split::Test),
        Some(s) => bail!("--split {s}: expected train or test"),
    };
    if let Some(n) = a.limit {
        spec.limit = Some(n);
    }
    let t0 = std::time::Instant::now();
    let cap = a.max_memory_mb << 20;
    let all = match TrainSet::load(spec.clone(), cap) {
        Ok(all) => all,
        // Without --split, data that has no train/test splits (ImageFolder, .npy
        // folders, a plain .npz) is read whole.
        Err(first) if a.split.is_none() => {
            spec.split = None;
            TrainSet::load(spec, cap).map_err(|_| first)?
        }
        Err(e) => return Err(e.into()),
    };
    if a.val_count * 2 > all.len() {
        bail!(
            "--val-count {} holds out more than half of the {} samples",
            a.val_count,
            all.len()
        );
    }
    let cut = all.len() - a.val_count;
    let (train, val) = if a.val_count > 0 {
        (all.slice(0..cut), Some(all.slice(cut..all.len())))
    } else {
        (all, None)
    };
    // The samples must fit the model's input (checked before any training).
    if let Some(Some(dims)) = model.graph.inputs.first().map(|i| i.ty.shape.as_ref()) {
        let want: Vec<Option<usize>> = dims
            .iter()
            .skip(1)
            .map(|d| match d {
                kiln::ir::Dim::Known(n) => Some(*n),
                _ => None,
            })
            .collect();
        let fits = want.len() == 3
            && want
                .iter()
                .zip(train.shape)
                .all(|(w, s)| w.is_none_or(|w| w == s));
        if !fits {
            bail!(
                "{}: the model's input is [{}] but {} gives samples of {:?} (C, H, W); use a model built for this data (e.g. kiln zoo --input) or another --preset",
                a.model.display(),
                dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", "),
                a.data.display(),
                train.shape
            );
        }
    }
    eprintln!(
        "data: {} training samples of {:?}{} ({:.1} s)",
        train.len(),
        train.shape,
        val.as_ref()
            .map(|v| format!(", {} validation samples (the last of the data)", v.len()))
            .unwrap_or_default(),
        t0.elapsed().as_secs_f64()
    );
    let mut model = model;
    let qat_spec = match qat {
        Some(q) => {
            let dtype = match q.activations.as_str() {
                "uint8" => kiln::ir::DType::U8,
                "int8" => kiln::ir::DType::I8,
                o => bail!("--activations {o}: expected uint8 or int8"),
            };
            let n = q.calib_count.min(train.len()).max(1);
            let start = kiln_train::qat::prepare_qat(&model, &train.slice(0..n), dtype)?;
            eprintln!(
                "QAT: {} activation quantization points, ranges from {n} calibration samples; BatchNormalization folded (frozen)",
                start.spec.acts.len()
            );
            if let Some(v) = &val {
                let fp = kiln_train::fit::evaluate(&start.prepared, v, 256, a.threads)?;
                let ptq = kiln_train::fit::evaluate(&start.ptq, v, 256, a.threads)?;
                eprintln!(
                    "before QAT: fp32 val top-1 {fp:.2}%, kiln PTQ (MinMax, per-channel) val top-1 {ptq:.2}%"
                );
            }
            model = start.prepared;
            let mut spec = start.spec;
            spec.momentum = q.range_momentum;
            Some(spec)
        }
        None => None,
    };
    let cfg = FitConfig {
        epochs: a.epochs,
        batch: a.batch,
        lr: a.lr.unwrap_or(if qat.is_some() { 1e-4 } else { 4e-3 }),
        weight_decay: a.weight_decay,
        seed: a.seed,
        threads: a.threads,
        augment: Augment::parse(&a.augment)?,
        out_dir: a.out.clone(),
        resume: a.resume,
        stop_after: a.stop_after,
        eval_batch: 256,
    };
    if a.resume && !a.out.join("checkpoint.kiln").exists() {
        eprintln!(
            "warning: --resume: no checkpoint at {}, starting from scratch",
            a.out.join("checkpoint.kiln").display()
        );
    }
    let pruning = match pruning {
        Some(f) => Some(f(train.len().div_ceil(a.batch.max(1)))?),
        None => None,
    };
    let extras = kiln_train::Extras {
        distill,
        qat: qat_spec.as_ref(),
        pruning: pruning.as_ref(),
    };
    let kind = match (&extras.distill, &extras.qat, &extras.pruning) {
        (_, Some(_), _) => "train qat",
        (Some(_), _, _) => "train distill",
        (_, _, Some(_)) => "prune (fine-tuning)",
        _ => "train fit",
    };
    let tty = std::io::stderr().is_terminal();
    let mut bar: Option<indicatif::ProgressBar> = None;
    let report = kiln_train::fit_ext(&model, &train, val.as_ref(), &cfg, &extras, &mut |ev| match ev {
        FitEvent::Start {
            epoch,
            epochs,
            steps,
            params,
            resumed,
        } => {
            eprintln!(
                "training {} ({params} learnable params): epochs {epoch}..={epochs}, {steps} steps of {} each{}",
                a.model.display(),
                a.batch,
                if resumed { ", resumed from the checkpoint" } else { "" }
            );
        }
        FitEvent::Step {
            epoch,
            step,
            steps,
            loss,
            images_per_s,
        } => {
            if !tty {
                // Logs: a line at every tenth of the epoch.
                let tenth = steps.div_ceil(10).max(1);
                if step % tenth == 0 && step < steps {
                    eprintln!(
                        "epoch {epoch}/{}: step {step}/{steps}, loss {loss:.4}, {images_per_s:.0} img/s",
                        a.epochs
                    );
                }
                return;
            }
            let b = bar.get_or_insert_with(|| {
                let b = indicatif::ProgressBar::new(steps as u64);
                if let Ok(st) = indicatif::ProgressStyle::with_template(
                    "epoch {prefix} {bar:30} step {pos}/{len}  {msg}  {elapsed_precise} (eta {eta})",
                ) {
                    b.set_style(st);
                }
                b
            });
            b.set_prefix(format!("{epoch}/{}", a.epochs));
            b.set_position(step as u64);
            b.set_message(format!("loss {loss:.4}, {images_per_s:.0} img/s"));
        }
        FitEvent::Epoch(m) => {
            if let Some(b) = bar.take() {
                b.finish_and_clear();
            }
            eprintln!(
                "epoch {}/{}: loss {:.4}, train top-1 {:.2}%{}, {:.1} s ({:.0} img/s), lr {:.2e}",
                m.epoch,
                a.epochs,
                m.train_loss,
                m.train_top1,
                m.val_top1
                    .map(|v| format!(", val top-1 {v:.2}%"))
                    .unwrap_or_default(),
                m.seconds,
                m.images_per_s,
                m.lr
            );
            let title = format!(
                "kiln {kind}: {}",
                a.model
                    .file_name()
                    .map(|n| n.to_string_lossy())
                    .unwrap_or_default()
            );
            if let Err(e) = crate::train_plot::write_curves(
                &a.out.join("metrics.json"),
                &a.out.join("curves.png"),
                &title,
            ) {
                eprintln!("warning: no curves.png: {e:#}");
            }
        }
    })
    .with_context(|| format!("training {}", a.model.display()))?;
    if report.stopped_early {
        eprintln!(
            "stopped after epoch {} of {}; continue with --resume",
            report.history.len(),
            a.epochs
        );
    }
    println!(
        "wrote {} (epoch {}, weights hash {:016x}), {}, {}, {}",
        a.out.join("model.onnx").display(),
        report.history.len(),
        report.weights_hash,
        a.out.join("checkpoint.kiln").display(),
        a.out.join("metrics.json").display(),
        a.out.join("curves.png").display()
    );
    Ok(report)
}
