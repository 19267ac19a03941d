//! `kiln pipeline`: the whole job on one model. Optimize, quantize to int8,
//! evaluate both on labelled data, benchmark both, and print one table.

use crate::quantize::{calibrate_data, data_line, method, open_data, DataArgs, Progress};
use anyhow::{anyhow, bail, Context, Result};
use kiln::eval::{evaluate, format_db, Accuracy, EvalModel, EvalOptions};
use kiln::quant::{quantize, QuantOptions};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The options of `kiln pipeline`.
pub struct Opts {
    pub model: PathBuf,
    pub calib: PathBuf,
    pub val: PathBuf,
    pub out: PathBuf,
    pub preset: String,
    pub method: String,
    pub runs: usize,
    pub warmup: usize,
    pub batch: usize,
    pub calib_split: Option<String>,
    pub calib_range: Option<String>,
    pub calib_limit: Option<usize>,
    pub val_split: Option<String>,
    pub val_range: Option<String>,
    pub val_limit: Option<usize>,
}

/// What `kiln bench --json` measured in a child process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bench {
    pub p50_ms: f64,
    pub peak_rss_mib: Option<f64>,
}

/// One row of the summary table.
struct Row {
    name: &'static str,
    file: PathBuf,
    accuracy: Option<Accuracy>,
    /// Top-1 agreement with fp32 (same, total) and logit SQNR (dB); `None` for fp32 itself.
    agreement: Option<(usize, usize, f64)>,
    bytes: u64,
    bench: Bench,
}

/// Runs `kiln bench FILE --json` (batch 1, one thread) as a child process of
/// this executable, so that its peak memory is that model's alone.
fn bench_child(file: &Path, runs: usize, warmup: usize) -> Result<Bench> {
    let exe = std::env::current_exe().context("locating the kiln executable")?;
    let out = Command::new(&exe)
        .arg("bench")
        .arg(file)
        .args([
            "--runs",
            &runs.to_string(),
            "--warmup",
            &warmup.to_string(),
            "--json",
        ])
        .output()
        .with_context(|| format!("running {} bench", exe.display()))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err
            .lines()
            .last()
            .unwrap_or("")
            .trim_start_matches("kiln: error: ");
        bail!("kiln bench {} failed: {last}", file.display());
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| anyhow!("kiln bench {}: unreadable --json output: {e}", file.display()))?;
    let p50_ms = v["p50_ms"]
        .as_f64()
        .ok_or_else(|| anyhow!("kiln bench {}: no p50_ms in its --json output", file.display()))?;
    Ok(Bench {
        p50_ms,
        peak_rss_mib: v["peak_rss_mib"].as_f64(),
    })
}

fn file_stem(p: &Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into())
}

fn mib(bytes: u64) -> String {
    format!("{:.2} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn ms(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0} ms")
    } else {
        format!("{x:.2} ms")
    }
}

fn acc_cell(a: &Option<Accuracy>) -> String {
    match a {
        Some(a) => format!(
            "{:.2}% ({}/{})",
            a.top1_percent().unwrap_or(0.0),
            a.top1,
            a.samples
        ),
        None => "-".into(),
    }
}

pub fn pipeline(o: &Opts) -> Result<()> {
    if o.runs == 0 {
        bail!("--runs must be at least 1");
    }
    if o.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let method = method(&o.method, None)?;
    let preset = crate::preset(&o.preset)?;
    let model = kiln::load_model(&o.model)?;
    let calib = open_data(&DataArgs {
        flag: "--calib",
        path: &o.calib,
        preset,
        split: o.calib_split.as_deref(),
        range: o.calib_range.as_deref(),
        limit: o.calib_limit,
    })?;
    let val = open_data(&DataArgs {
        flag: "--val",
        path: &o.val,
        preset,
        split: o.val_split.as_deref(),
        range: o.val_range.as_deref(),
        limit: o.val_limit,
    })?;
    // Calibrating on the very samples that are evaluated would flatter int8.
    let same_path = match (std::fs::canonicalize(&o.calib), std::fs::canonicalize(&o.val)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same_path && o.calib_split == o.val_split && o.calib_range.is_none() && o.val_range.is_none() {
        bail!(
            "--calib and --val select the same samples of {}: calibrating on the evaluation data \
             flatters int8; pick different folders, or splits/ranges (e.g. --calib-split train \
             --calib-range 0..500)",
            o.val.display()
        );
    }
    // Check that the model takes both datasets' samples before any work or output.
    {
        let s = kiln::Session::new(model.clone())?;
        for (flag, path, ds) in [("--calib", &o.calib, &calib), ("--val", &o.val, &val)] {
            if let Some(first) = ds.samples()?.next() {
                let first = first?;
                s.check_inputs(std::slice::from_ref(&first.input)).map_err(|e| {
                    anyhow!(
                        "{flag} {}: sample {} does not fit {}: {e}",
                        path.display(),
                        first.name,
                        o.model.display()
                    )
                })?;
            }
        }
    }
    if !val.has_labels() {
        eprintln!(
            "note: {} has no labels: top-1 is not measured, only the agreement with fp32",
            o.val.display()
        );
    }
    std::fs::create_dir_all(&o.out).with_context(|| format!("creating {}", o.out.display()))?;
    let stem = file_stem(&o.model);
    let fp32_file = o.out.join(format!("{stem}.opt.onnx"));
    let int8_file = o.out.join(format!("{stem}.int8.onnx"));

    // 1. Optimize (default level) and save; fused ops are written as standard ONNX.
    let mut opt = model.clone();
    let rep = kiln::opt::optimize(&mut opt, &kiln::opt::Options::default())
        .map_err(|e| anyhow!("{}: {e}", o.model.display()))?;
    kiln::onnx::save(&opt, &fp32_file)?;
    println!(
        "optimize:  {} -> {} ({} -> {} nodes, level {})",
        o.model.display(),
        fp32_file.display(),
        rep.nodes_before,
        rep.nodes_after,
        kiln::opt::Options::default().level.name()
    );

    // 2. Quantize the optimized model as written (kiln-quant prepares it again:
    // activations fused into the convolutions, residual Adds kept as Adds).
    let opt = kiln::load_model(&fp32_file)?;
    let bar = Progress::new();
    let (stats, _, calib_s) = calibrate_data(&opt, &fp32_file, &calib, method, o.batch, &bar)?;
    drop(bar);
    let qopts = QuantOptions {
        method,
        ..QuantOptions::default()
    };
    let (q, qrep) =
        quantize(&opt, &stats, &qopts).map_err(|e| anyhow!("{}: {}", fp32_file.display(), e.message))?;
    kiln::onnx::save(&q, &int8_file)?;
    println!(
        "quantize:  {} -> {} (method {}, {} layers int8, {} fp32; calibrated on {} in {calib_s:.1} s)",
        fp32_file.display(),
        int8_file.display(),
        qrep.method,
        qrep.quantized_layers,
        qrep.fp32_layers,
        data_line(&calib)
    );

    // 3. Evaluate both files as written, on the same inputs.
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let s32 = kiln::open_session(&fp32_file)?.with_threads(threads);
    let s8 = kiln::open_session(&int8_file)?.with_threads(threads);
    let bar = Progress::new();
    bar.stage("evaluating fp32 and int8", val.len());
    let r = evaluate(
        EvalModel {
            session: &s32,
            file: &fp32_file,
        },
        Some(EvalModel {
            session: &s8,
            file: &int8_file,
        }),
        &val,
        &EvalOptions { batch: o.batch },
        &mut |n| bar.set(n),
    );
    drop(bar);
    let r = r?;
    let cmp = r.compare.as_ref().expect("compared");
    println!(
        "evaluate:  {} in {:.1} s ({} integer ops in the int8 model)",
        data_line(&val),
        r.seconds,
        s8.qdq_report().lowered_total()
    );
    drop((s32, s8));

    // 4. Benchmark both in child processes (latency and peak memory).
    let bar = Progress::new();
    bar.stage("benchmarking", 2);
    let b32 = bench_child(&fp32_file, o.runs, o.warmup)?;
    bar.set(1);
    let b8 = bench_child(&int8_file, o.runs, o.warmup)?;
    drop(bar);
    println!(
        "bench:     batch 1, 1 thread, p50 of {} run(s) after {} warm-up, each model in its own `kiln bench` process",
        o.runs, o.warmup
    );

    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let g = &cmp.agreement;
    let rows = [
        Row {
            name: "fp32",
            file: fp32_file.clone(),
            accuracy: r.accuracy,
            agreement: None,
            bytes: size(&fp32_file),
            bench: b32,
        },
        Row {
            name: "int8",
            file: int8_file.clone(),
            accuracy: cmp.accuracy,
            agreement: Some((g.top1_same, g.samples, g.sqnr_db())),
            bytes: size(&int8_file),
            bench: b8,
        },
    ];
    println!();
    print!("{}", table(&rows));
    println!();
    println!(
        "fp32 and int8 both run on the compiled runtime (int8 on the integer kernels). Files: {}",
        o.out.display()
    );
    Ok(())
}

/// The summary table: model, top-1, agreement with fp32 (and logit SQNR),
/// file size, p50 latency, peak memory.
fn table(rows: &[Row]) -> String {
    let head = [
        "model",
        "file",
        "top-1",
        "agreement with fp32",
        "file size",
        "p50 latency",
        "peak memory",
    ];
    let cells: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            [
                r.name.to_string(),
                r.file
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                acc_cell(&r.accuracy),
                match r.agreement {
                    Some((same, n, db)) => format!(
                        "{:.2}% ({same}/{n}), SQNR {} dB",
                        kiln::eval::percent(same, n).unwrap_or(0.0),
                        format_db(db)
                    ),
                    None => "-".into(),
                },
                mib(r.bytes),
                ms(r.bench.p50_ms),
                r.bench
                    .peak_rss_mib
                    .map(|m| format!("{m:.0} MiB"))
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    crate::table::render(&head, &cells, &[0, 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_lines_up() {
        let rows = [
            Row {
                name: "fp32",
                file: PathBuf::from("out/m.opt.onnx"),
                accuracy: Some(Accuracy {
                    samples: 20,
                    top1: 17,
                    top5: 19,
                }),
                agreement: None,
                bytes: 3 << 20,
                bench: Bench {
                    p50_ms: 41.234,
                    peak_rss_mib: Some(120.4),
                },
            },
            Row {
                name: "int8",
                file: PathBuf::from("out/m.int8.onnx"),
                accuracy: None,
                agreement: Some((19, 20, 20.456)),
                bytes: 1 << 20,
                bench: Bench {
                    p50_ms: 212.0,
                    peak_rss_mib: None,
                },
            },
        ];
        let t = table(&rows);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4, "{t}");
        assert!(lines[0].starts_with("model  file "), "{t}");
        assert!(
            lines[2].contains("85.00% (17/20)")
                && lines[2].contains("3.00 MiB")
                && lines[2].contains("41.23 ms"),
            "{t}"
        );
        assert!(lines[2].ends_with("120 MiB"), "{t}");
        assert!(
            lines[3].contains("95.00% (19/20), SQNR 20.46 dB") && lines[3].contains("212 ms"),
            "{t}"
        );
        assert!(lines[3].ends_with(" -"), "{t}");
        // Right-aligned figures end in the same column.
        let end = |l: &str, s: &str| l.find(s).unwrap() + s.len();
        assert_eq!(end(lines[2], "3.00 MiB"), end(lines[3], "1.00 MiB"));
    }
}
