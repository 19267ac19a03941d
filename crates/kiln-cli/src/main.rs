//! `kiln`: the command-line front end of the kiln library.
//!
//! Every failure exits non-zero with one readable line on stderr (no panics,
//! no backtraces); see `kiln --help`.

mod bench;
mod bench_server;
#[cfg(feature = "train")]
mod case_study;
mod conformance;
mod cost;
mod eval;
mod inspect;
mod optimize;
mod pipeline;
#[cfg(feature = "train")]
mod prune;
mod quantize;
mod table;
#[cfg(feature = "train")]
mod train;
#[cfg(feature = "train")]
mod train_plot;
mod tune;
#[cfg(feature = "train")]
mod tune_plot;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand};
use kiln::classify::{label_from_file_name, load_labels, probabilities, top_k};
use kiln::data::LabelMode;
use kiln::ir::{DType, Tensor};
use kiln::preprocess::{load_image, Preset};
use kiln::Session;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Parser)]
#[command(
    name = "kiln",
    version,
    about = "Compress, optimize and run neural networks on edge devices"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Show a model's inputs, outputs, op histogram, parameters, weight bytes and MACs.
    Inspect {
        /// ONNX model file.
        model: PathBuf,
        /// Bind input dims for MAC counting, e.g. `x=1,3,640,640` (repeatable).
        /// A symbolic leading (batch) dim is bound to 1 by default.
        #[arg(long = "shape", value_name = "NAME=D,D,...")]
        shapes: Vec<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Run a model on inputs (images with a preprocessing preset, or .npy tensors).
    Run {
        /// ONNX model file.
        model: PathBuf,
        /// One per graph input, in order: an image (PNG/JPEG) or a .npy tensor.
        #[arg(long = "input", required = true)]
        inputs: Vec<PathBuf>,
        #[command(flatten)]
        out: ClassOpts,
        /// Write each graph output as `NN_<name>.npy` in this folder.
        #[arg(long, value_name = "DIR")]
        save_outputs: Option<PathBuf>,
    },
    /// Classify images (files or folders) with a single-input classifier; reports
    /// top-1/top-5 accuracy when file names end in the label index (`..._463.jpg`).
    Classify {
        /// ONNX model file.
        model: PathBuf,
        /// Image files or folders of images.
        #[arg(required = true)]
        images: Vec<PathBuf>,
        #[command(flatten)]
        out: ClassOpts,
    },
    /// Measure latency on the compiled runtime (optimized graph, SIMD
    /// kernels, static memory plan, caller-owned I/O buffers): warm-up, then N
    /// timed runs; prints p50/p90/p99, GFLOP/s, the planned arena and peak
    /// memory. QDQ (int8) models run on the int8 kernels (VNNI/AMX where
    /// the CPU has them). --profile adds a per-step table (op, kernel, shape, time
    /// share, GFLOP/s).
    Bench {
        /// ONNX model file.
        model: PathBuf,
        /// Inputs (.npy or images); default: seeded random tensors of the declared shapes.
        #[arg(long = "input")]
        inputs: Vec<PathBuf>,
        /// Bind symbolic input dims for random inputs, e.g. `x=1,3,640,640`.
        #[arg(long = "shape", value_name = "NAME=D,D,...")]
        shapes: Vec<String>,
        /// Preprocessing preset for image inputs.
        #[arg(long, default_value = "efficientnet-lite", value_parser = preset_names())]
        preset: String,
        /// Untimed warm-up runs.
        #[arg(long, default_value_t = 3)]
        warmup: usize,
        /// Timed runs.
        #[arg(long, default_value_t = 20)]
        runs: usize,
        /// Threads per run (intra-op: output tiles split over a spinning pool; results are bit-identical for any N).
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Print a per-step profile (op, kernel, shape, time share, GFLOP/s),
        /// the median of the timed runs per step.
        #[arg(long)]
        profile: bool,
        /// Run the reference executor (one op at a time, no compilation)
        /// instead of the compiled runtime.
        #[arg(long)]
        reference: bool,
        /// Cap the kernels' ISA level (scalar, avx2, avx512, avx512vnni, avx512amx); default: the best the CPU has.
        #[arg(long)]
        isa: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// After warm-up, read iteration counts N from stdin, one a line, and
        /// answer each with N timed runs as `{"ms":[...]}` (used by scripts/bench).
        #[arg(long, conflicts_with_all = ["profile", "json"])]
        server: bool,
    },
    /// Measure a classifier over a dataset: top-1/top-5 accuracy and, with
    /// --compare, the top-1 agreement, logit difference and SQNR of a second model.
    ///
    /// --data takes a folder of images (ImageFolder layout: one sub-folder per
    /// class; or labels as the last number of the file names, `name_559.jpg`),
    /// a folder of .npy files (one input each), MNIST-style IDX files
    /// (`*-images-idx3-ubyte[.gz]` with the matching labels file, or a folder of
    /// them with --split; images are fed as [1, 1, H, W] f32 = pixel / 255), or
    /// an .npz archive with arrays x (inputs, first dim = samples) and y (labels).
    Eval {
        /// ONNX model file (single input; output 0 = class scores).
        model: PathBuf,
        /// Dataset: a folder, an .npz archive, or an IDX images file.
        #[arg(long, value_name = "PATH")]
        data: PathBuf,
        /// Preprocessing preset for images.
        #[arg(long, default_value = "efficientnet-lite", value_parser = preset_names())]
        preset: String,
        /// Where labels come from: class sub-folders, the last number of file
        /// names, or auto (either; IDX labels file; .npz y); none for --compare only.
        #[arg(long, default_value = "auto", value_parser = LabelMode::ALL.map(|(n, _)| n))]
        labels: String,
        /// Class names, one per line, in class-index order (ImageFolder layout;
        /// default: the sub-folder names sorted).
        #[arg(long, value_name = "FILE")]
        classes: Option<PathBuf>,
        /// IDX folder: t10k-* (test) or train-* files; .npz: x_test/x_train.
        #[arg(long, value_parser = ["test", "train"])]
        split: Option<String>,
        /// Only samples A..B (half-open, dataset order), e.g. 55000..60000; A.. and ..B work too.
        #[arg(long, value_name = "A..B")]
        range: Option<String>,
        /// At most N samples (after --range).
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        /// Samples per run for models with a symbolic batch dim (others run one at a time).
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// A second model to run on the same inputs (e.g. the quantized model):
        /// its accuracy, top-1 agreement, logit difference and SQNR against MODEL.
        #[arg(long, value_name = "MODEL2")]
        compare: Option<PathBuf>,
        /// Threads per run (the large GEMMs of Conv/MatMul/Gemm are split across them).
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Machine-readable output (SQNR "inf" when the scores are identical).
        #[arg(long)]
        json: bool,
    },
    /// Measure this machine (cores, ISA, clock, caches, memory, bandwidth, GEMM
    /// throughput, power) and write it as a device profile (TOML).
    Probe(cost::ProbeArgs),
    /// The roofline cost model: calibrate it on profiled runs of this machine, or
    /// predict a model's latency, memory and energy on a device profile.
    Cost {
        #[command(subcommand)]
        cmd: cost::CostCmd,
    },
    /// Choose the best mix of optimization level, precision (fp32, int8 per
    /// calibration method, mixed) and threads for a device under latency,
    /// accuracy, memory and energy limits: measures every candidate (or predicts
    /// it on another device's profile), drops dominated ones early, writes the
    /// chosen model, a report and a Pareto plot; resumable (docs/tune.md).
    Tune(Box<tune::TuneArgs>),
    /// The compression case study end to end on Fashion-MNIST: teacher ->
    /// distilled zoo student -> channel-pruned and fine-tuned -> QAT int8, every
    /// stage run through the compiled runtime API; one table of top-1, parameters,
    /// MACs, size and latency per stage (docs/tune.md).
    #[cfg(feature = "train")]
    CaseStudy(Box<case_study::CaseStudyArgs>),
    /// Run one candidate job of a `kiln tune` directory (jobs/<id>.json) and write
    /// its JSON result: the unit a batch system fans out (docs/tune.md).
    TuneJob(tune::JobArgs),
    /// Prune a model: magnitude (unstructured), block (1x8 along output channels,
    /// for kiln's sparse kernels) or channel (smaller dense model), optionally
    /// fine-tuned on a schedule; reports sparsity, parameters, MACs, bytes,
    /// accuracy and latency before and after.
    #[cfg(feature = "train")]
    Prune(Box<prune::PruneArgs>),
    /// Train on labelled data: fit (cross-entropy), distill (from a teacher: logits and
    /// features) or qat (quantization-aware, exports QDQ); checkpoints every epoch,
    /// resumable, metrics.json and curves.png.
    #[cfg(feature = "train")]
    Train {
        #[command(subcommand)]
        cmd: TrainCmd,
    },
    /// Build an untrained student architecture of the zoo (Conv, BatchNormalization
    /// and activation; seeded init) as ONNX, ready for `kiln train fit`; prints its
    /// parameters and MACs.
    Zoo {
        /// fmnist-mnv2, mobilenetv2, mobilenetv3-small, shufflenetv2, efficientnet-lite0..4.
        arch: String,
        /// Output ONNX file.
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
        /// Width multiplier (ShuffleNetV2: 0.5, 1.0, 1.5 or 2.0).
        #[arg(long, default_value_t = 1.0)]
        width: f32,
        /// Input C,H,W (default: the architecture's reference input).
        #[arg(long, value_name = "C,H,W")]
        input: Option<String>,
        /// Number of classes (default: 10 for fmnist-mnv2, else 1000).
        #[arg(long)]
        classes: Option<usize>,
        /// Seed of the weight initialisation.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Quantize a model to int8 (QDQ ONNX), calibrated on sample data; with
    /// --accuracy-budget, keep the most sensitive layers in fp32 until the top-1
    /// drop on --val data fits the budget (mixed precision).
    ///
    /// --calib and --val take any dataset `kiln eval --data` reads: a folder of
    /// images (through --preset), a folder of .npy inputs, MNIST-style IDX files
    /// (or their folder, with --calib-split/--val-split), or an .npz archive.
    Quantize {
        /// ONNX model file (fp32, single input).
        model: PathBuf,
        /// Calibration data: a folder, an .npz archive, or an IDX images file.
        #[arg(long, value_name = "PATH")]
        calib: PathBuf,
        /// Output file (QDQ ONNX; written only when everything succeeded).
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
        /// How each activation's range is chosen from the calibration statistics.
        #[arg(long, default_value = "minmax", value_parser = ["minmax", "percentile", "entropy", "mse"])]
        method: String,
        /// Percentile of --method percentile (default 99.99).
        #[arg(long, value_name = "P")]
        percentile: Option<f64>,
        /// One weight scale per tensor instead of per output channel.
        #[arg(long)]
        per_tensor: bool,
        /// Activation integer type.
        #[arg(long, default_value = "uint8", value_parser = ["uint8", "int8"])]
        activations: String,
        /// Switch off the empirical bias correction of Conv and Gemm layers.
        #[arg(long)]
        no_bias_correction: bool,
        /// Preprocessing preset for image data.
        #[arg(long, default_value = "efficientnet-lite", value_parser = preset_names())]
        preset: String,
        /// IDX folder: t10k-* (test) or train-* files; .npz: x_test/x_train.
        #[arg(long, value_parser = ["test", "train"])]
        calib_split: Option<String>,
        /// Only calibration samples A..B (half-open, dataset order), e.g. 0..500.
        #[arg(long, value_name = "A..B")]
        calib_range: Option<String>,
        /// At most N calibration samples (after --calib-range).
        #[arg(long, value_name = "N")]
        calib_limit: Option<usize>,
        /// Samples per run for models with a symbolic batch dim (others run one at a time).
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Largest allowed top-1 drop on --val, in percentage points (mixed precision).
        #[arg(long, value_name = "POINTS")]
        accuracy_budget: Option<f64>,
        /// Labelled validation data for --accuracy-budget.
        #[arg(long, value_name = "PATH")]
        val: Option<PathBuf>,
        /// --val IDX folder: test or train files; .npz: x_test/x_train.
        #[arg(long, value_parser = ["test", "train"])]
        val_split: Option<String>,
        /// Only validation samples A..B, e.g. 55000..60000.
        #[arg(long, value_name = "A..B")]
        val_range: Option<String>,
        /// At most N validation samples (after --val-range).
        #[arg(long, value_name = "N")]
        val_limit: Option<usize>,
        /// Keep this node in fp32 (a node of the prepared graph, as the report names it; repeatable).
        #[arg(long = "exclude", value_name = "NODE")]
        exclude: Vec<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// The whole job on one model: optimize it, quantize it to int8, evaluate
    /// both on labelled data, benchmark both, and print one summary table.
    ///
    /// Writes OUT/<name>.opt.onnx (fp32, optimized) and OUT/<name>.int8.onnx
    /// (QDQ). Latency and peak memory are measured by `kiln bench` in a child
    /// process per model (batch 1, one thread).
    Pipeline {
        /// ONNX model file (fp32 classifier, single input).
        model: PathBuf,
        /// Calibration data (any dataset `kiln eval --data` reads).
        #[arg(long, value_name = "DIR")]
        calib: PathBuf,
        /// Labelled evaluation data.
        #[arg(long, value_name = "DIR")]
        val: PathBuf,
        /// Output folder (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Preprocessing preset for image data.
        #[arg(long, default_value = "efficientnet-lite", value_parser = preset_names())]
        preset: String,
        /// Calibration method.
        #[arg(long, default_value = "minmax", value_parser = ["minmax", "percentile", "entropy", "mse"])]
        method: String,
        /// Timed benchmark runs per model.
        #[arg(long, default_value_t = 20)]
        runs: usize,
        /// Untimed warm-up runs per model.
        #[arg(long, default_value_t = 3)]
        warmup: usize,
        /// Samples per run of calibration and evaluation (models with a symbolic batch dim).
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// IDX/.npz split of the calibration data (`train`, `test`).
        #[arg(long, value_name = "SPLIT")]
        calib_split: Option<String>,
        /// Only calibration samples A..B (e.g. `0..500`).
        #[arg(long, value_name = "A..B")]
        calib_range: Option<String>,
        /// At most N calibration samples.
        #[arg(long, value_name = "N")]
        calib_limit: Option<usize>,
        /// IDX/.npz split of the evaluation data.
        #[arg(long, value_name = "SPLIT")]
        val_split: Option<String>,
        /// Only evaluation samples A..B.
        #[arg(long, value_name = "A..B")]
        val_range: Option<String>,
        /// At most N evaluation samples.
        #[arg(long, value_name = "N")]
        val_limit: Option<usize>,
    },
    /// Load a model into kiln's IR and write it back as ONNX.
    Export {
        /// ONNX model file.
        model: PathBuf,
        /// Output file.
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
    },
    /// Optimize a model (constant folding, cleanup, BatchNormalization folding,
    /// activation fusion...) and write it as plain ONNX.
    Optimize {
        /// ONNX model file.
        model: PathBuf,
        /// Output file.
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
        /// Optimization level, as ONNX Runtime's.
        #[arg(long, default_value = "all", value_parser = ["basic", "extended", "all"])]
        level: String,
        /// Switch one rule off by name (repeatable); `--report` lists the names.
        #[arg(long = "disable", value_name = "RULE")]
        disable: Vec<String>,
        /// Bind input dims for MAC counting, e.g. `x=1,3,640,640` (symbolic batch = 1 by default).
        #[arg(long = "shape", value_name = "NAME=D,D,...")]
        shapes: Vec<String>,
        /// Print each rule's application count and before/after figures.
        #[arg(long)]
        report: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Log every applied patch (rule and node) to stderr.
        #[arg(long, short = 'v')]
        verbose: bool,
    },
    /// Run the ONNX backend test data (node, pytorch-converted, pytorch-operator,
    /// simple) and print the per-op pass table against the conformance manifest.
    Conformance {
        /// Backend test data folder (default: the fixtures venv's onnx/backend/test/data).
        #[arg(long, value_name = "DIR")]
        data: Option<PathBuf>,
        /// Conformance manifest (default: conformance/manifest.json of the repository).
        #[arg(long, value_name = "FILE")]
        manifest: Option<PathBuf>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Propose a manifest from this run and write it to the manifest path (for review).
        #[arg(long)]
        write_manifest: bool,
        /// Also list every case that does not pass, with the reason.
        #[arg(long)]
        list: bool,
        /// Run only the cases whose name contains this text.
        #[arg(long, value_name = "TEXT")]
        filter: Option<String>,
    },
}

/// Options shared by `run` and `classify`: preprocessing and class printing.
#[derive(clap::Args)]
struct ClassOpts {
    /// Preprocessing preset for image inputs.
    #[arg(long, default_value = "efficientnet-lite", value_parser = preset_names())]
    preset: String,
    /// Class names, one per line, for top-k printing.
    #[arg(long)]
    labels: Option<PathBuf>,
    /// How many classes to print per classifier output.
    #[arg(long, default_value_t = 5)]
    top_k: usize,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

fn zoo(
    arch: &str,
    output: &Path,
    width: f32,
    input: Option<&str>,
    classes: Option<usize>,
    seed: u64,
) -> Result<()> {
    let a = kiln_zoo::Arch::from_name(arch)?;
    let mut cfg = kiln_zoo::ZooConfig::new(a);
    cfg.width = width;
    cfg.seed = seed;
    if let Some(c) = classes {
        cfg.classes = c;
    }
    if let Some(s) = input {
        let d: Vec<usize> = s
            .split(',')
            .map(|v| v.trim().parse::<usize>())
            .collect::<Result<_, _>>()
            .map_err(|_| anyhow::anyhow!("--input {s}: expected C,H,W"))?;
        let [c, h, w] = d[..] else {
            anyhow::bail!("--input {s}: expected three numbers C,H,W");
        };
        cfg.input = [c, h, w];
    }
    let m = kiln_zoo::build(&cfg)?;
    let bytes = kiln::onnx::to_bytes(&m)?;
    kiln::write_atomic(output, &bytes)?;
    let st = kiln::stats::model_stats(&m, &Default::default())?;
    println!(
        "wrote {} ({}, width {width}, input {:?}, {} classes, seed {seed}): {} learnable params, {:.2}M MACs",
        output.display(),
        a.name(),
        cfg.input,
        cfg.classes,
        st.learnable_params,
        st.macs.unwrap_or(0) as f64 / 1e6
    );
    Ok(())
}

/// `kiln train` subcommands.
#[cfg(feature = "train")]
#[derive(Subcommand)]
enum TrainCmd {
    /// Train with cross-entropy (AdamW, one-cycle LR), validate each epoch on kiln's
    /// runtime, checkpoint every epoch; writes model.onnx, checkpoint.kiln, metrics.json.
    Fit(train::FitArgs),
    /// Train with logit distillation from a teacher: (1 - alpha) * CE(labels) +
    /// alpha * T^2 * KL(teacher || student) at temperature T; otherwise as `fit`.
    Distill(train::DistillArgs),
    /// Quantization-aware training from a trained fp32 model in kiln's int8 scheme
    /// (per-channel symmetric weights, per-tensor asymmetric activations, ranges from
    /// PTQ calibration then EMA-tracked); each epoch's model.onnx is the QDQ export.
    Qat(train::QatArgs),
}

fn preset_names() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(Preset::ALL.iter().map(|(n, _)| *n))
}

fn main() {
    // Rust ignores SIGPIPE, which turns `kiln inspect M | head` into a failed
    // write; restore the default so a closed pipe ends the process quietly.
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to SIG_DFL before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // Last line of defence: a bug must still end in one line, not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown".into());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!("kiln: internal error (a bug in kiln, please report it): {msg}{at}");
    }));
    let cli = Cli::parse();
    let r = std::panic::catch_unwind(|| dispatch(cli));
    match r {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            // Join the context chain, skipping causes the outer messages already quote.
            let mut line = String::new();
            for c in e.chain() {
                let c = c.to_string();
                if !line.contains(&c) {
                    if !line.is_empty() {
                        line.push_str(": ");
                    }
                    line.push_str(&c);
                }
            }
            eprintln!("kiln: error: {line}");
            std::process::exit(1);
        }
        Err(_) => std::process::exit(101),
    }
}

fn dispatch(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Inspect { model, shapes, json } => inspect::inspect(&model, &shapes, json),
        Cmd::Run {
            model,
            inputs,
            out,
            save_outputs,
        } => run(&model, &inputs, &out, save_outputs.as_deref()),
        Cmd::Classify { model, images, out } => classify(&model, &images, &out),
        Cmd::Bench {
            model,
            inputs,
            shapes,
            preset,
            warmup,
            runs,
            threads,
            profile,
            reference,
            isa,
            json,
            server,
        } => bench::bench(&bench::BenchArgs {
            model: &model,
            inputs: &inputs,
            shapes: &shapes,
            preset_name: &preset,
            warmup,
            runs,
            threads,
            profile,
            reference,
            isa: isa.as_deref(),
            json,
            server,
        }),
        Cmd::Optimize {
            model,
            output,
            level,
            disable,
            shapes,
            report,
            json,
            verbose,
        } => optimize::optimize(&model, &output, &level, &disable, &shapes, report, json, verbose),
        Cmd::Conformance {
            data,
            manifest,
            json,
            write_manifest,
            list,
            filter,
        } => conformance::conformance(&conformance::Opts {
            data,
            manifest,
            json,
            write_manifest,
            list,
            filter,
        }),
        Cmd::Eval {
            model,
            data,
            preset,
            labels,
            classes,
            split,
            range,
            limit,
            batch,
            compare,
            threads,
            json,
        } => eval::eval(&eval::Opts {
            model,
            data,
            preset,
            labels,
            classes,
            split,
            range,
            limit,
            batch,
            compare,
            threads,
            json,
        }),
        Cmd::Zoo {
            arch,
            output,
            width,
            input,
            classes,
            seed,
        } => zoo(&arch, &output, width, input.as_deref(), classes, seed),
        Cmd::Probe(a) => cost::probe(&a),
        Cmd::Tune(a) => tune::tune(&a),
        Cmd::TuneJob(a) => tune::tune_job(&a),
        #[cfg(feature = "train")]
        Cmd::CaseStudy(a) => case_study::case_study(&a),
        Cmd::Cost { cmd } => match cmd {
            cost::CostCmd::Calibrate(a) => cost::calibrate(&a),
            cost::CostCmd::Predict(a) => cost::predict(&a),
        },
        #[cfg(feature = "train")]
        Cmd::Prune(a) => prune::prune(&a),
        #[cfg(feature = "train")]
        Cmd::Train { cmd } => match cmd {
            TrainCmd::Fit(a) => train::fit(&a),
            TrainCmd::Distill(d) => train::distill(&d),
            TrainCmd::Qat(q) => train::qat(&q),
        },
        Cmd::Quantize {
            model,
            calib,
            output,
            method,
            percentile,
            per_tensor,
            activations,
            no_bias_correction,
            preset,
            calib_split,
            calib_range,
            calib_limit,
            batch,
            accuracy_budget,
            val,
            val_split,
            val_range,
            val_limit,
            exclude,
            json,
        } => quantize::quantize(&quantize::Opts {
            model,
            calib,
            output,
            method,
            percentile,
            per_tensor,
            activations,
            no_bias_correction,
            preset,
            calib_split,
            calib_range,
            calib_limit,
            batch,
            accuracy_budget,
            val,
            val_split,
            val_range,
            val_limit,
            exclude,
            json,
        }),
        Cmd::Pipeline {
            model,
            calib,
            val,
            out,
            preset,
            method,
            runs,
            warmup,
            batch,
            calib_split,
            calib_range,
            calib_limit,
            val_split,
            val_range,
            val_limit,
        } => pipeline::pipeline(&pipeline::Opts {
            model,
            calib,
            val,
            out,
            preset,
            method,
            runs,
            warmup,
            batch,
            calib_split,
            calib_range,
            calib_limit,
            val_split,
            val_range,
            val_limit,
        }),
        Cmd::Export { model, output } => {
            let m = kiln::load_model(&model)?;
            kiln::onnx::save(&m, &output)?;
            println!("wrote {}", output.display());
            Ok(())
        }
    }
}

pub(crate) fn preset(name: &str) -> Result<Preset> {
    Preset::from_name(name).ok_or_else(|| anyhow!("unknown preset '{name}'"))
}

fn is_image(p: &Path) -> bool {
    matches!(
        p.extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase())
            .as_deref(),
        Some("png" | "jpg" | "jpeg")
    )
}

pub(crate) fn load_input(p: &Path, preset: Preset) -> Result<Tensor> {
    let ext = p
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase());
    Ok(match ext.as_deref() {
        Some("npy") => kiln::npy::read_npy(p)?,
        _ if is_image(p) => load_image(p, preset)?,
        _ => bail!(
            "{}: unsupported input file type (expected .npy, .png, .jpg or .jpeg)",
            p.display()
        ),
    })
}

fn run_checked(session: &Session, model: &Path, inputs: Vec<Tensor>) -> Result<Vec<Tensor>> {
    session
        .run(inputs)
        .map_err(|e| anyhow!("{}: {e}", model.display()))
}

fn run(model: &Path, inputs: &[PathBuf], o: &ClassOpts, save: Option<&Path>) -> Result<()> {
    let (labels, k, json) = (o.labels.as_deref(), o.top_k, o.json);
    let pre = preset(&o.preset)?;
    let session = kiln::open_session(model)?;
    let labels = labels.map(load_labels).transpose()?;
    let tensors = inputs
        .iter()
        .map(|p| load_input(p, pre))
        .collect::<Result<Vec<_>>>()?;
    let t0 = Instant::now();
    let outs = run_checked(&session, model, tensors)?;
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    if let Some(dir) = save {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for (i, (o, info)) in outs.iter().zip(session.outputs()).enumerate() {
            let safe: String = info
                .name
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            kiln::npy::write_npy(&dir.join(format!("{i:02}_{safe}.npy")), o)?;
        }
    }
    let mut jouts = Vec::new();
    let mut warned = false;
    for (o, info) in outs.iter().zip(session.outputs()) {
        let cls = classes_of(o);
        if let Some(c) = &cls {
            check_labels(&labels, c.len(), &mut warned);
        }
        let top = cls.as_ref().map(|v| top_k(&probabilities(v), k));
        if json {
            jouts.push(serde_json::json!({
                "name": info.name, "dtype": o.dtype().to_string(), "shape": o.shape(),
                "top_k": top.as_ref().map(|t| t.iter().map(|&(i, p)| serde_json::json!({
                    "class": i, "name": label(&labels, i), "probability": p})).collect::<Vec<_>>()),
            }));
        } else {
            println!("output '{}': {} {:?}", info.name, o.dtype(), o.shape());
            if let Some(t) = top {
                for (r, (i, p)) in t.iter().enumerate() {
                    println!("{}", top_line(r, *i, *p, &labels));
                }
            }
        }
    }
    if json {
        println!(
            "{}",
            serde_json::json!({"model": model.display().to_string(), "latency_ms": ms, "outputs": jouts})
        );
    } else {
        println!("latency: {ms:.2} ms");
    }
    Ok(())
}

/// A classifier-like output: f32 of shape [1, C] or [C] with C > 1.
fn classes_of(t: &Tensor) -> Option<Vec<f32>> {
    let ok = t.dtype() == DType::F32
        && match t.shape() {
            [c] => *c > 1,
            [1, c] => *c > 1,
            _ => false,
        };
    ok.then(|| t.to_f32_vec())
}

/// Warns once on stderr when a label file's length differs from the class count.
fn check_labels(labels: &Option<Vec<String>>, classes: usize, warned: &mut bool) {
    if let Some(l) = labels {
        if l.len() != classes && !*warned {
            eprintln!(
                "note: the label file has {} names, the model output has {classes} classes",
                l.len()
            );
            *warned = true;
        }
    }
}

/// One top-k line: rank, class index, probability in percent, class name.
fn top_line(rank: usize, class: usize, p: f32, labels: &Option<Vec<String>>) -> String {
    let name = label(labels, class).unwrap_or_default();
    format!("  #{} class {class:>4} {:>7.3}%  {name}", rank + 1, p * 100.0)
        .trim_end()
        .to_string()
}

fn label(labels: &Option<Vec<String>>, i: usize) -> Option<String> {
    labels.as_ref().and_then(|l| l.get(i).cloned())
}

fn collect_images(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut v: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("reading {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            v.sort();
            for f in v {
                if is_image(&f) {
                    out.push(f);
                } else if f.is_file() {
                    eprintln!("note: skipping {} (not a PNG or JPEG)", f.display());
                }
            }
        } else {
            out.push(p.clone());
        }
    }
    if out.is_empty() {
        bail!(
            "no images found in {}",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(out)
}

fn classify(model: &Path, images: &[PathBuf], o: &ClassOpts) -> Result<()> {
    let (labels, k, json) = (o.labels.as_deref(), o.top_k, o.json);
    let pre = preset(&o.preset)?;
    let session = kiln::open_session(model)?;
    if session.inputs().len() != 1 {
        bail!(
            "{}: classify needs a single-input model, this one has {}",
            model.display(),
            session.inputs().len()
        );
    }
    let labels = labels.map(load_labels).transpose()?;
    let files = collect_images(images)?;
    let (mut n_lab, mut top1, mut top5) = (0usize, 0usize, 0usize);
    let mut rows = Vec::new();
    let mut total_ms = 0.0;
    let mut warned = false;
    for f in &files {
        let x = match load_image(f, pre) {
            Ok(x) => x,
            Err(e) if images.len() > 1 || images.iter().any(|p| p.is_dir()) => {
                eprintln!("note: skipping {e}");
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let t0 = Instant::now();
        let outs = run_checked(&session, model, vec![x])?;
        total_ms += t0.elapsed().as_secs_f64() * 1e3;
        let logits = classes_of(&outs[0]).ok_or_else(|| {
            anyhow!(
                "{}: output 0 is {} {:?}, not a [1, classes] float classifier output",
                model.display(),
                outs[0].dtype(),
                outs[0].shape()
            )
        })?;
        check_labels(&labels, logits.len(), &mut warned);
        let probs = probabilities(&logits);
        let top = top_k(&probs, k.max(5));
        let truth = label_from_file_name(f).filter(|&l| l < probs.len());
        if let Some(t) = truth {
            n_lab += 1;
            top1 += (top[0].0 == t) as usize;
            top5 += top.iter().take(5).any(|&(i, _)| i == t) as usize;
        }
        if json {
            rows.push(serde_json::json!({
                "image": f.display().to_string(), "label": truth,
                "top_k": top.iter().take(k).map(|&(i, p)| serde_json::json!({
                    "class": i, "name": label(&labels, i), "probability": p})).collect::<Vec<_>>(),
            }));
        } else {
            let mark = match truth {
                Some(t) if t == top[0].0 => " [correct]".to_string(),
                Some(t) => format!(" [label {t}: {}]", label(&labels, t).unwrap_or_default()),
                None => String::new(),
            };
            println!("{}{mark}", f.display());
            for (r, (i, p)) in top.iter().take(k).enumerate() {
                println!("{}", top_line(r, *i, *p, &labels));
            }
            println!("  top-1 score: {:.3}%", top[0].1 * 100.0);
        }
    }
    let mean_ms = total_ms / files.len() as f64;
    if json {
        println!(
            "{}",
            serde_json::json!({"model": model.display().to_string(), "images": rows, "labelled": n_lab,
                "top1_correct": top1, "top5_correct": top5, "mean_latency_ms": mean_ms})
        );
    } else {
        println!("{} image(s), mean latency {:.1} ms", files.len(), mean_ms);
        if n_lab > 0 {
            println!("top-1 accuracy: {top1}/{n_lab}   top-5 accuracy: {top5}/{n_lab}");
        }
    }
    Ok(())
}

/// Parses `name=d,d,d` shape bindings.
pub(crate) fn parse_shapes(specs: &[String]) -> Result<Vec<(String, Vec<usize>)>> {
    specs
        .iter()
        .map(|s| {
            let (n, d) = s
                .split_once('=')
                .ok_or_else(|| anyhow!("--shape '{s}': expected NAME=D,D,..."))?;
            let dims = d
                .split(',')
                .map(|x| {
                    x.trim()
                        .parse::<usize>()
                        .map_err(|_| anyhow!("--shape '{s}': bad dimension '{x}'"))
                })
                .collect::<Result<Vec<_>>>()?;
            if dims.contains(&0) {
                bail!("--shape '{s}': dimensions must be at least 1");
            }
            Ok((n.to_string(), dims))
        })
        .collect::<Result<Vec<_>>>()
        .and_then(|v| {
            for (i, (n, _)) in v.iter().enumerate() {
                if v[..i].iter().any(|(m, _)| m == n) {
                    bail!("--shape given twice for input '{n}'");
                }
            }
            Ok(v)
        })
}

/// Seeded uniform random tensor in [-1, 1) (xorshift; reproducible).
/// Largest random input `kiln bench` generates (elements, 1 GiB of f32).
const MAX_BENCH_INPUT_ELEMS: usize = 1 << 28;

/// Writes the Pareto plot of `kiln tune`; `Ok(false)` when this build has
/// no plotting (the `train` feature).
pub(crate) fn tune_plot_write(
    png: &Path,
    results: &[kiln_search::tune::CandidateResult],
    front: &[usize],
    chosen: Option<usize>,
    limits: &kiln_search::tune::Limits,
    device: &str,
) -> Result<bool> {
    #[cfg(feature = "train")]
    {
        tune_plot::write_pareto(png, results, front, chosen, limits, device)?;
        Ok(true)
    }
    #[cfg(not(feature = "train"))]
    {
        let _ = (png, results, front, chosen, limits, device);
        Ok(false)
    }
}

pub(crate) fn random_tensor(dtype: DType, shape: Vec<usize>, seed: u64) -> Result<Tensor> {
    let n = kiln::ir::numel(&shape)
        .ok()
        .filter(|&n| n <= MAX_BENCH_INPUT_ELEMS)
        .ok_or_else(|| {
            anyhow!("input shape {shape:?} is too large for kiln bench (at most 2^28 elements)")
        })?;
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    };
    let f: Vec<f32> = (0..n).map(|_| next() as f32).collect();
    Ok(Tensor::from_vec(shape, f)?.cast(dtype))
}

#[allow(clippy::too_many_arguments)]
/// This process's peak resident set size in MiB (`VmHWM` of
/// `/proc/self/status`); `None` where that is not available (not Linux).
pub(crate) fn peak_rss_mib() -> Option<f64> {
    #[cfg(target_os = "linux")]
    {
        let s = std::fs::read_to_string("/proc/self/status").ok()?;
        parse_vm_hwm(&s)
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// The `VmHWM:   1234 kB` line of a `/proc/<pid>/status` text, in MiB.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn parse_vm_hwm(status: &str) -> Option<f64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let mut it = line["VmHWM:".len()..].split_whitespace();
    let kb: f64 = it.next()?.parse().ok()?;
    (it.next() == Some("kB")).then_some(kb / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_hwm_parses() {
        let s = "Name:\tkiln\nVmPeak:\t  300000 kB\nVmHWM:\t  204800 kB\nVmRSS:\t 1000 kB\n";
        assert_eq!(parse_vm_hwm(s), Some(200.0));
        assert_eq!(parse_vm_hwm("VmRSS: 1 kB\n"), None);
        assert_eq!(parse_vm_hwm("VmHWM: x kB\n"), None);
        #[cfg(target_os = "linux")]
        assert!(peak_rss_mib().is_some_and(|m| m > 0.0));
    }
}
