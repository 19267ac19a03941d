//! `kiln quantize`: int8 post-training quantization of a model into a QDQ
//! ONNX file, calibrated on any dataset `kiln::data` reads, optionally
//! within an accuracy budget (mixed precision) measured on validation data.

use anyhow::{anyhow, bail, Result};
use kiln::data::{DataSpec, Dataset, Format, LabelMode, Split};
use kiln::ir::{DType, Model};
use kiln::preprocess::Preset;
use kiln::quant::{
    calibrate, mixed_precision, quantize as quantize_model, ActRange, CalibOptions, CalibProgress,
    LayerStatus, Method, MixedPrecisionReport, QuantError, QuantErrorKind, QuantOptions, QuantReport,
};
use kiln::quantize::{top1_percent, AccuracyOptions, DatasetCalibration};
use serde_json::{json, Value};
use std::io::IsTerminal;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The options of `kiln quantize`.
pub struct Opts {
    pub model: PathBuf,
    pub calib: PathBuf,
    pub output: PathBuf,
    pub method: String,
    pub percentile: Option<f64>,
    pub per_tensor: bool,
    pub activations: String,
    pub no_bias_correction: bool,
    pub preset: String,
    pub calib_split: Option<String>,
    pub calib_range: Option<String>,
    pub calib_limit: Option<usize>,
    pub batch: usize,
    pub accuracy_budget: Option<f64>,
    pub val: Option<PathBuf>,
    pub val_split: Option<String>,
    pub val_range: Option<String>,
    pub val_limit: Option<usize>,
    pub exclude: Vec<String>,
    pub json: bool,
}

/// Where a dataset is and which part of it to read, as given on the command
/// line (`flag` is the option's name, for error messages: `--calib`, `--val`).
pub struct DataArgs<'a> {
    pub flag: &'a str,
    pub path: &'a Path,
    pub preset: Preset,
    pub split: Option<&'a str>,
    pub range: Option<&'a str>,
    pub limit: Option<usize>,
}

/// Parses `A..B`, `A..` or `..B` (half-open, in samples); `flag` names the option in errors.
pub fn parse_range(flag: &str, s: &str) -> Result<Range<usize>> {
    let bad = || anyhow!("{flag} '{s}': expected A..B (e.g. 55000..60000), A.. or ..B");
    let (a, b) = s.split_once("..").ok_or_else(bad)?;
    let a = if a.trim().is_empty() {
        0
    } else {
        a.trim().parse().map_err(|_| bad())?
    };
    let b = if b.trim().is_empty() {
        usize::MAX
    } else {
        b.trim().parse().map_err(|_| bad())?
    };
    if a >= b {
        bail!("{flag} '{s}' selects no samples");
    }
    Ok(a..b)
}

/// Opens a dataset (labels: auto), with a note on stderr about the files of
/// a folder that are not samples.
pub fn open_data(a: &DataArgs<'_>) -> Result<Dataset> {
    let mut spec = DataSpec::new(a.path);
    spec.preset = a.preset;
    spec.labels = LabelMode::Auto;
    spec.split = a
        .split
        .map(|s| Split::from_name(s).ok_or_else(|| anyhow!("unknown {}-split '{s}' (test or train)", a.flag)))
        .transpose()?;
    spec.range = a
        .range
        .map(|r| parse_range(&format!("{}-range", a.flag), r))
        .transpose()?;
    if a.limit == Some(0) {
        bail!("{}-limit must be at least 1", a.flag);
    }
    spec.limit = a.limit;
    let ds = Dataset::open(spec)?;
    if !ds.skipped().is_empty() {
        let what = if ds.format() == Format::Npy {
            "non-.npy"
        } else {
            "non-image"
        };
        let mut names = ds
            .skipped()
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        if ds.skipped().len() > 10 {
            names.push_str(&format!(", ... ({} more)", ds.skipped().len() - 10));
        }
        eprintln!(
            "note: skipped {} {what} file(s) in {}: {names}",
            ds.skipped().len(),
            a.path.display()
        );
    }
    Ok(ds)
}

/// One line about a dataset: path, format, preset, window.
pub fn data_line(ds: &Dataset) -> String {
    let mut s = format!("{} ({}", ds.spec().path.display(), ds.format().name());
    if ds.format() == Format::Images {
        s.push_str(&format!(", preset {}", ds.spec().preset.name()));
    }
    if ds.len() != ds.total() {
        s.push_str(&format!(
            ", samples {}..{} of {}",
            ds.start(),
            ds.start() + ds.len(),
            ds.total()
        ));
    } else {
        s.push_str(&format!(", {} samples", ds.len()));
    }
    s.push(')');
    s
}

/// A progress bar on stderr, only when stderr is a terminal.
pub struct Progress(Option<indicatif::ProgressBar>);

impl Progress {
    pub fn new() -> Progress {
        Progress(std::io::stderr().is_terminal().then(|| {
            let b = indicatif::ProgressBar::hidden();
            if let Ok(st) =
                indicatif::ProgressStyle::with_template("{msg:<28} {bar:40} {pos}/{len}  {elapsed_precise}")
            {
                b.set_style(st);
            }
            b.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            b
        }))
    }
    /// Starts a new stage of `len` steps.
    pub fn stage(&self, msg: impl Into<String>, len: usize) {
        if let Some(b) = &self.0 {
            b.reset();
            b.set_length(len as u64);
            b.set_position(0);
            b.set_message(msg.into());
        }
    }
    pub fn set(&self, pos: usize) {
        if let Some(b) = &self.0 {
            b.set_position(pos as u64);
        }
    }
    pub fn clear(&self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.clear();
    }
}

/// The graph inputs of `model` that are not initializers.
fn check_single_input(model: &Model, file: &Path) -> Result<()> {
    let ins: Vec<&str> = model
        .graph
        .inputs
        .iter()
        .filter(|i| !model.graph.initializers.contains_key(&i.name))
        .map(|i| i.name.as_str())
        .collect();
    if ins.len() != 1 {
        bail!(
            "{}: quantization calibrates single-input models on a dataset; this one has {} inputs ({})",
            file.display(),
            ins.len(),
            ins.join(", ")
        );
    }
    Ok(())
}

/// A quantization error as one line: errors about the model name its file;
/// data errors already name theirs.
fn qerr(model: &Path, e: QuantError) -> anyhow::Error {
    match e.kind {
        QuantErrorKind::Data | QuantErrorKind::Evaluate => anyhow!("{}", e.message),
        _ => anyhow!("{}: {}", model.display(), e.message),
    }
}

/// The method from `--method` and `--percentile`.
pub fn method(name: &str, percentile: Option<f64>) -> Result<Method> {
    let m = match (name, percentile) {
        ("percentile", Some(p)) => Method::Percentile(p),
        (_, Some(_)) => bail!("--percentile applies to --method percentile"),
        (n, None) => n.parse::<Method>().map_err(|e| anyhow!(e))?,
    };
    m.validate().map_err(|e| anyhow!("--percentile: {}", e.message))?;
    Ok(m)
}

/// Calibrates `model` on `calib` with a progress bar: statistics, input sets
/// per pass, seconds.
pub fn calibrate_data(
    model: &Model,
    model_file: &Path,
    calib: &Dataset,
    method: Method,
    batch: usize,
    bar: &Progress,
) -> Result<(kiln::quant::CalibrationResult, usize, f64)> {
    let mut data = DatasetCalibration::for_model(calib, model, batch);
    let used = data.batch();
    let t0 = Instant::now();
    let opts = CalibOptions::for_method(method);
    let r = calibrate(model, &mut data, &opts, &mut |p: CalibProgress| {
        if p.done == 1 {
            bar.stage(
                format!("calibrating (pass {}/{})", p.pass, p.passes),
                p.total.unwrap_or(0),
            );
        }
        bar.set(p.done);
    });
    bar.clear();
    let r = r.map_err(|e| match e.kind {
        QuantErrorKind::Model(kiln::ir::ErrorKind::InvalidInput) => anyhow!(
            "{}: the calibration data {} does not fit the model: {}",
            model_file.display(),
            calib.spec().path.display(),
            e.message
        ),
        _ => qerr(model_file, e),
    })?;
    Ok((r, used, t0.elapsed().as_secs_f64()))
}

pub fn quantize(o: &Opts) -> Result<()> {
    // Option checks first: nothing is read or written before they pass.
    if o.accuracy_budget.is_some() && o.val.is_none() {
        bail!("--accuracy-budget needs --val PATH: labelled validation data to measure the accuracy drop on");
    }
    if o.val.is_some() && o.accuracy_budget.is_none() {
        bail!(
            "--val is only used with --accuracy-budget (to measure a quantized model, use kiln eval MODEL --compare QUANTIZED)"
        );
    }
    for (flag, set) in [
        ("--val-split", o.val_split.is_some()),
        ("--val-range", o.val_range.is_some()),
        ("--val-limit", o.val_limit.is_some()),
    ] {
        if set && o.val.is_none() {
            bail!("{flag} applies to --val data, and no --val was given");
        }
    }
    if let Some(b) = o.accuracy_budget {
        if !(b.is_finite() && b >= 0.0) {
            bail!("--accuracy-budget must be a number of percentage points >= 0, got {b}");
        }
    }
    if o.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let method = method(&o.method, o.percentile)?;
    let activation_dtype = match o.activations.as_str() {
        "uint8" => DType::U8,
        "int8" => DType::I8,
        a => bail!("unknown --activations '{a}' (uint8 or int8)"),
    };
    let preset = crate::preset(&o.preset)?;
    let qopts = QuantOptions {
        method,
        per_channel: !o.per_tensor,
        activation_dtype,
        bias_correction: !o.no_bias_correction,
        exclude: o.exclude.iter().cloned().collect(),
    };

    let model = kiln::load_model(&o.model)?;
    check_single_input(&model, &o.model)?;
    if !o.exclude.is_empty() {
        // Checked before calibration, which may take a while.
        let prepared = kiln::quant::prepare(&model).map_err(|e| qerr(&o.model, e))?;
        for n in &o.exclude {
            if !prepared.graph.nodes.iter().any(|p| &p.name == n) {
                bail!(
                    "{}: --exclude '{n}' is not a node of the model as quantization prepares it (the report's layer names)",
                    o.model.display()
                );
            }
        }
    }
    let calib = open_data(&DataArgs {
        flag: "--calib",
        path: &o.calib,
        preset,
        split: o.calib_split.as_deref(),
        range: o.calib_range.as_deref(),
        limit: o.calib_limit,
    })?;
    let val = match &o.val {
        Some(v) => {
            let ds = open_data(&DataArgs {
                flag: "--val",
                path: v,
                preset,
                split: o.val_split.as_deref(),
                range: o.val_range.as_deref(),
                limit: o.val_limit,
            })?;
            if !ds.has_labels() {
                bail!(
                    "{}: the --val data has no labels; --accuracy-budget needs labelled validation data \
                     (class sub-folders, file names ending in the class number, an IDX labels file, or y in an .npz)",
                    ds.spec().path.display()
                );
            }
            Some(ds)
        }
        None => None,
    };

    let bar = Progress::new();
    let (stats, batch, calib_s) = calibrate_data(&model, &o.model, &calib, method, o.batch, &bar)?;
    let t0 = Instant::now();
    let (qdq, report, mixed) = match (&val, o.accuracy_budget) {
        (Some(val), Some(budget)) => {
            let aopts = AccuracyOptions {
                batch: o.batch,
                ..AccuracyOptions::default()
            };
            let mut calls = 0usize;
            let mut evaluate = |m: &Model| -> kiln::quant::Result<f64> {
                calls += 1;
                let what = match calls {
                    1 => "validating fp32".to_string(),
                    2 => "validating all-int8".to_string(),
                    n => format!("validating candidate {}", n - 2),
                };
                bar.stage(what, val.len());
                let r = top1_percent(m, val, &aopts, &mut |n| bar.set(n));
                bar.clear();
                r.map_err(|e| QuantError::new(QuantErrorKind::Evaluate, e.to_string()))
            };
            let (q, r, mp) = mixed_precision(&model, &stats, &qopts, budget, &mut evaluate)
                .map_err(|e| qerr(&o.model, e))?;
            (q, r, Some(mp))
        }
        _ => {
            let (q, r) = quantize_model(&model, &stats, &qopts).map_err(|e| qerr(&o.model, e))?;
            (q, r, None)
        }
    };
    let quant_s = t0.elapsed().as_secs_f64();
    drop(bar);

    kiln::onnx::save(&qdq, &o.output)?;
    // What was written must load and prepare (QDQ patterns lowered to integer kernels).
    let session = match kiln::open_session(&o.output) {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_file(&o.output);
            bail!("the quantized model does not load back (removed): {e}");
        }
    };
    let qdq_rep = session.qdq_report();
    let bytes = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let (in_bytes, out_bytes) = (bytes(&o.model), bytes(&o.output));

    if o.json {
        let v = json!({
            "model": o.model.display().to_string(),
            "output": o.output.display().to_string(),
            "model_bytes": in_bytes,
            "output_bytes": out_bytes,
            "calibration": {
                "data": calib.spec().path.display().to_string(),
                "format": calib.format().name(),
                "range": [calib.start(), calib.start() + calib.len()],
                "samples": calib.len(),
                "input_sets": stats.samples,
                "batch": batch,
                "seconds": calib_s,
            },
            "quantize_seconds": quant_s,
            "report": report_json(&report),
            "mixed_precision": mixed.as_ref().zip(val.as_ref()).map(|(m, v)| mixed_json(m, v)),
            "runtime": {
                "integer_ops": qdq_rep.lowered,
                "float_nodes": qdq_rep.float_nodes.iter().map(|(n, op)| json!({"node": n, "op": op})).collect::<Vec<_>>(),
            },
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("model:        {}", o.model.display());
    println!(
        "calibration:  {}: {} input set(s) of up to {batch}, {:.1} s",
        data_line(&calib),
        stats.samples,
        calib_s
    );
    println!();
    print!("{report}");
    if let (Some(m), Some(v)) = (&mixed, &val) {
        println!();
        println!("mixed precision on {} ({:.1} s):", data_line(v), quant_s);
        print!("{m}");
    }
    println!();
    println!(
        "wrote {} ({} bytes; {} has {} bytes)",
        o.output.display(),
        out_bytes,
        o.model.display(),
        in_bytes
    );
    println!(
        "runtime: {} integer op(s) when run by kiln{}",
        qdq_rep.lowered_total(),
        if qdq_rep.float_nodes.is_empty() {
            String::new()
        } else {
            format!(
                ", {} node(s) between Q/DQ left in float",
                qdq_rep.float_nodes.len()
            )
        }
    );
    Ok(())
}

fn range_json(r: &ActRange) -> Value {
    json!({
        "tensor": r.tensor,
        "observed": [r.observed.0, r.observed.1],
        "range": [r.range.0, r.range.1],
        "scale": r.scale,
        "zero_point": r.zero_point,
        "shared_with": r.shared_with,
    })
}

/// A [`QuantReport`] as JSON.
pub fn report_json(r: &QuantReport) -> Value {
    let layers: Vec<Value> = r
        .layers
        .iter()
        .map(|l| {
            let (status, reason) = match &l.status {
                LayerStatus::Quantized => ("int8", None),
                LayerStatus::Excluded => ("excluded", None),
                LayerStatus::NotQuantized(why) => ("fp32", Some(why.as_str())),
            };
            json!({
                "name": l.name,
                "op": l.op,
                "status": status,
                "reason": reason,
                "weights": l.weight.map(|w| w.to_string()),
                "bias": l.bias.as_ref().map(|b| json!({
                    "corrected": b.corrected, "max_shift": b.max_shift, "saturated": b.saturated, "added": b.added,
                })),
                "inputs": l.inputs.iter().map(range_json).collect::<Vec<_>>(),
                "output": l.output.as_ref().map(range_json),
            })
        })
        .collect();
    json!({
        "method": r.method.to_string(),
        "activations": r.activation_dtype.to_string(),
        "per_channel": r.per_channel,
        "bias_correction": r.bias_correction,
        "quantized_layers": r.quantized_layers,
        "fp32_layers": r.fp32_layers,
        "qdq_tensors": r.qdq_tensors,
        "opset": [r.opset.0, r.opset.1],
        "layers": layers,
    })
}

fn mixed_json(m: &MixedPrecisionReport, val: &Dataset) -> Value {
    json!({
        "validation": val.spec().path.display().to_string(),
        "validation_range": [val.start(), val.start() + val.len()],
        "budget": m.budget,
        "fp32_top1": m.fp32_accuracy,
        "int8_top1": m.int8_accuracy,
        "int8_drop": m.int8_drop,
        "kept_fp32": m.kept_fp32,
        "final_top1": m.final_accuracy,
        "final_drop": m.final_drop,
        "met_budget": m.met_budget,
        "evaluations": m.evaluations.iter().map(|(k, a)| json!({"kept_fp32": k, "top1": a})).collect::<Vec<_>>(),
        "sensitivity": m.sensitivity.iter().map(|s| json!({
            "layer": s.name, "op": s.op, "sqnr_db": if s.sqnr_db.is_finite() { json!(s.sqnr_db) } else { json!(kiln::eval::format_db(s.sqnr_db)) },
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_methods_parse() {
        assert_eq!(parse_range("--calib-range", "0..500").unwrap(), 0..500);
        assert_eq!(parse_range("--calib-range", "10..").unwrap(), 10..usize::MAX);
        let e = parse_range("--val-range", "5..5").unwrap_err().to_string();
        assert!(e.contains("--val-range '5..5'"), "{e}");
        assert!(parse_range("--val-range", "1-2").is_err());

        assert_eq!(method("minmax", None).unwrap(), Method::MinMax);
        assert_eq!(method("entropy", None).unwrap(), Method::Entropy);
        assert_eq!(method("mse", None).unwrap(), Method::Mse);
        assert_eq!(method("percentile", None).unwrap(), Method::Percentile(99.99));
        assert_eq!(
            method("percentile", Some(99.9)).unwrap(),
            Method::Percentile(99.9)
        );
        assert!(method("percentile", Some(20.0)).is_err());
        assert!(method("minmax", Some(99.9)).is_err());
    }
}
