//! `kiln case-study`: the compression case study end to end on
//! Fashion-MNIST. A teacher (the kiln-trained `models/fmnist_mnv2_bn.onnx`)
//! is distilled into a small zoo student, the student is channel-pruned and
//! fine-tuned, then trained quantization-aware and exported as int8 QDQ.
//! Every stage's model is then run through kiln's compiled runtime API
//! (`kiln::compile_model`, `CompiledModel::run_into`) on the test split:
//! top-1, parameters, MACs, file size and latency per stage in one table.
//!
//! Each training stage runs as a child `kiln` process (its own progress
//! and report); a stage whose output exists is reused, so an interrupted
//! study resumes where it stopped.

use crate::cost::prepare;
use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use kiln::data::{DataSpec, LabelMode, Split};
use kiln::runtime::TensorRef;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// Arguments of `kiln case-study`.
#[derive(Args)]
pub(crate) struct CaseStudyArgs {
    /// Fashion-MNIST (IDX folder with train and test splits).
    #[arg(long)]
    data: PathBuf,
    /// The teacher (fp32 ONNX, 1x28x28 input, 10 classes).
    #[arg(long, default_value = "models/fmnist_mnv2_bn.onnx")]
    teacher: PathBuf,
    /// Width multiplier of the fmnist-mnv2 zoo student.
    #[arg(long, default_value_t = 0.5)]
    width: f32,
    /// Distillation epochs.
    #[arg(long, default_value_t = 3)]
    distill_epochs: usize,
    /// Share of the prunable output channels removed (channel pruning, L1).
    #[arg(long, default_value_t = 0.3)]
    sparsity: f32,
    /// Fine-tuning epochs after pruning.
    #[arg(long, default_value_t = 1)]
    prune_epochs: usize,
    /// Quantization-aware training epochs.
    #[arg(long, default_value_t = 1)]
    qat_epochs: usize,
    /// Use only the first N training images in every stage (smoke runs; a
    /// tenth of them is held out for validation).
    #[arg(long)]
    limit: Option<usize>,
    /// Evaluate on the first N test images (default: all 10,000).
    #[arg(long)]
    test_limit: Option<usize>,
    /// Training threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Timed runs per stage (batch 1, one thread; median).
    #[arg(long, default_value_t = 200)]
    runs: usize,
    /// Output folder (stage models, their training folders, report.md).
    #[arg(short, long)]
    out: PathBuf,
}

/// Runs this executable with `args` (inheriting stdout/stderr) for `stage`.
fn child(stage: &str, args: &[&dyn AsRef<std::ffi::OsStr>]) -> Result<()> {
    let exe = std::env::current_exe().context("locating the kiln executable")?;
    let mut cmd = Command::new(&exe);
    cmd.args(args.iter().map(|a| a.as_ref()));
    let shown: Vec<String> = args
        .iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect();
    eprintln!("== {stage}: kiln {}", shown.join(" "));
    let st = cmd
        .status()
        .with_context(|| format!("{stage}: running {}", exe.display()))?;
    if !st.success() {
        bail!("{stage} failed ({st}): kiln {}", shown.join(" "));
    }
    Ok(())
}

struct Row {
    stage: &'static str,
    file: PathBuf,
    params: usize,
    macs: u64,
    bytes: u64,
    top1: (usize, usize),
    p50_ms: f64,
}

/// Top-1 on the test split, parameters, MACs and latency of `file` on the compiled runtime.
fn measure(
    stage: &'static str,
    file: &Path,
    data: &Path,
    test_limit: Option<usize>,
    runs: usize,
) -> Result<Row> {
    let model = kiln::load_model(file)?;
    let params = model.graph.initializers.values().map(|t| t.len()).sum();
    // Accuracy: one image at a time through the compiled runtime (fixed 1x1x28x28 plan).
    let (cm, inputs, dims) = prepare(file, &[])?;
    let info = cm.plan_info(&dims)?;
    let macs = info.steps.iter().map(|s| s.flops).sum::<u64>() / 2;
    let mut spec = DataSpec::new(data);
    spec.split = Some(Split::Test);
    spec.labels = LabelMode::Auto;
    spec.limit = test_limit;
    let ds = kiln::data::Dataset::open(spec).map_err(|e| anyhow!("{}: {e}", data.display()))?;
    let mut state = cm.new_state(1);
    let mut out = vec![0f32; 10];
    let (mut correct, mut n) = (0, 0);
    for s in ds.samples()? {
        let s = s?;
        let x = s
            .input
            .as_slice::<f32>()
            .map_err(|e| anyhow!("{}: {e}", s.name))?;
        let shape = s.input.shape().to_vec();
        cm.run_into(
            &mut state,
            &[TensorRef {
                shape: &shape,
                data: x,
            }],
            &mut [out.as_mut_slice()],
        )
        .map_err(|e| anyhow!("{} on {}: {e}", file.display(), s.name))?;
        let label = s.label.ok_or_else(|| anyhow!("{}: no label", s.name))?;
        if kiln::eval::argmax(&out) == Some(label) {
            correct += 1;
        }
        n += 1;
    }
    // Latency: batch 1, one thread, caller-owned buffers.
    let x = inputs[0].as_slice::<f32>().map_err(|e| anyhow!("{e}"))?;
    let shape = inputs[0].shape().to_vec();
    let mut once = || -> Result<f64> {
        let t = Instant::now();
        cm.run_into(
            &mut state,
            &[TensorRef {
                shape: &shape,
                data: x,
            }],
            &mut [out.as_mut_slice()],
        )?;
        Ok(t.elapsed().as_secs_f64() * 1e3)
    };
    for _ in 0..10 {
        once()?;
    }
    let mut ms: Vec<f64> = (0..runs.max(1)).map(|_| once()).collect::<Result<_>>()?;
    ms.sort_by(f64::total_cmp);
    Ok(Row {
        stage,
        file: file.to_path_buf(),
        params,
        macs,
        bytes: std::fs::metadata(file).map(|m| m.len()).unwrap_or(0),
        top1: (correct, n),
        p50_ms: ms[ms.len() / 2],
    })
}

/// `kiln case-study`.
pub(crate) fn case_study(a: &CaseStudyArgs) -> Result<()> {
    let t0 = Instant::now();
    kiln::load_model(&a.teacher)?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let o = |p: &str| a.out.join(p);
    let (epochs_d, epochs_p, epochs_q) = (
        a.distill_epochs.to_string(),
        a.prune_epochs.to_string(),
        a.qat_epochs.to_string(),
    );
    let threads = a.threads.to_string();
    let limit: Vec<String> = a
        .limit
        .map(|l| {
            // Hold out a tenth of a limited set for validation (the default 5,000 suits the full set).
            vec![
                "--limit".to_string(),
                l.to_string(),
                "--val-count".to_string(),
                (l / 10).max(1).to_string(),
            ]
        })
        .unwrap_or_default();
    let lim: Vec<&dyn AsRef<std::ffi::OsStr>> = limit.iter().map(|s| s as _).collect();

    // 1. The student architecture, then distillation from the teacher.
    let init = o("student_init.onnx");
    if !init.exists() {
        child(
            "student",
            &[
                &"zoo",
                &"fmnist-mnv2",
                &"--width",
                &a.width.to_string(),
                &"-o",
                &init,
            ],
        )?;
    }
    let student = o("distill/model.onnx");
    if !student.exists() {
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
            &"train",
            &"distill",
            &init,
            &"--teacher",
            &a.teacher,
            &"--data",
            &a.data,
            &"--epochs",
            &epochs_d,
            &"--threads",
            &threads,
            &"-o",
        ];
        let d = o("distill");
        args.push(&d);
        args.extend(lim.iter().copied());
        child("distill", &args)?;
    }
    // 2. Channel pruning with fine-tuning.
    let pruned = o("pruned.onnx");
    if !pruned.exists() {
        let sp = a.sparsity.to_string();
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
            &"prune",
            &student,
            &"--method",
            &"channel",
            &"--sparsity",
            &sp,
            &"--finetune",
            &a.data,
            &"--epochs",
            &epochs_p,
            &"--threads",
            &threads,
            &"--bench-runs",
            &"5",
            &"-o",
            &pruned,
        ];
        args.extend(lim.iter().copied());
        child("prune", &args)?;
    }
    // 3. Quantization-aware training, exported as int8 QDQ.
    let qat = o("qat/model.onnx");
    if !qat.exists() {
        let d = o("qat");
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
            &"train",
            &"qat",
            &pruned,
            &"--data",
            &a.data,
            &"--epochs",
            &epochs_q,
            &"--threads",
            &threads,
            &"-o",
            &d,
        ];
        args.extend(lim.iter().copied());
        child("qat", &args)?;
    }

    // 4. Every stage through the compiled runtime.
    eprintln!("== measuring every stage on the compiled runtime (test split, batch 1, one thread)");
    let rows = vec![
        measure("teacher (fp32)", &a.teacher, &a.data, a.test_limit, a.runs)?,
        measure(
            "distilled student (fp32)",
            &student,
            &a.data,
            a.test_limit,
            a.runs,
        )?,
        measure("pruned student (fp32)", &pruned, &a.data, a.test_limit, a.runs)?,
        measure("QAT student (int8)", &qat, &a.data, a.test_limit, a.runs)?,
    ];
    let t = table(&rows);
    let text = format!(
        "kiln case study on Fashion-MNIST ({}): teacher -> distilled student (fmnist-mnv2 width {}) -> \
         channel-pruned {:.0}% -> QAT int8; {:.0} s\n\n{t}",
        a.data.display(),
        a.width,
        a.sparsity * 100.0,
        t0.elapsed().as_secs_f64()
    );
    println!("{text}");
    let md = format!("# kiln case study\n\n```text\n{text}```\n");
    kiln::write_atomic(&o("report.md"), md.as_bytes())?;
    println!("report: {}", o("report.md").display());
    Ok(())
}

fn table(rows: &[Row]) -> String {
    let head = [
        "stage",
        "file",
        "top-1",
        "parameters",
        "MACs",
        "file size",
        "p50 latency",
    ];
    let cells: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            [
                r.stage.to_string(),
                r.file.display().to_string(),
                format!(
                    "{:.2}% ({}/{})",
                    100.0 * r.top1.0 as f64 / r.top1.1.max(1) as f64,
                    r.top1.0,
                    r.top1.1
                ),
                r.params.to_string(),
                format!("{:.2}M", r.macs as f64 / 1e6),
                format!("{:.1} KiB", r.bytes as f64 / 1024.0),
                format!("{:.3} ms", r.p50_ms),
            ]
        })
        .collect();
    crate::table::render(&head, &cells, &[0, 1])
}
