//! `kiln probe` (this machine as a device profile) and `kiln cost`
//! (calibrate the roofline cost model on profiled runs; predict a model's
//! latency, energy and memory on a device profile).

use crate::{parse_shapes, random_tensor};
use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use kiln::ir::Tensor;
use kiln::runtime::{CompileOptions, CompiledModel};
use kiln_search::cost::{kernel_class, plan_steps, profile_steps, Calibration, StepCost};
use kiln_search::device::DeviceProfile;
use kiln_search::energy;
use kiln_search::probe::{probe as run_probe, ProbeOptions};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Arguments of `kiln probe`.
#[derive(Args)]
pub(crate) struct ProbeArgs {
    /// Write the profile here (TOML); without it, print it.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Profile name.
    #[arg(long, default_value = "host")]
    name: String,
    /// Power under load (W) when the energy counter (RAPL) is not readable.
    #[arg(long, allow_negative_numbers = true)]
    power_w: Option<f64>,
    /// Shorter measurements (less stable figures).
    #[arg(long)]
    quick: bool,
}

/// `kiln probe`.
pub(crate) fn probe(a: &ProbeArgs) -> Result<()> {
    if let Some(w) = a.power_w {
        if !(w.is_finite() && w > 0.0) {
            bail!("--power-w {w}: expected a positive number of watts");
        }
    }
    let p = run_probe(&ProbeOptions {
        name: Some(a.name.clone()),
        power_w: a.power_w,
        quick: a.quick,
    })?;
    let text = format!("# Written by `kiln probe`: {}.\n{}", p.description, p.to_toml());
    match &a.output {
        Some(path) => {
            kiln::write_atomic(path, text.as_bytes())?;
            eprintln!(
                "kiln probe: {} cores, fp32 {:.1} GFLOP/s and int8 {:.1} GOP/s per core, {:.1} GB/s, {:.1} W -> {}",
                p.cores,
                p.peak.f32_gflops,
                p.peak.i8_gops,
                p.memory_bandwidth_gbs,
                p.power_w,
                path.display()
            );
        }
        None => print!("{text}"),
    }
    Ok(())
}

/// `kiln cost` subcommands.
#[derive(Subcommand)]
pub(crate) enum CostCmd {
    /// Fit the roofline cost model to profiled runs of models on this machine.
    Calibrate(CalibrateArgs),
    /// Predict a model's latency (and energy, memory) on a device profile.
    Predict(PredictArgs),
}

/// Arguments of `kiln cost calibrate`.
#[derive(Args)]
pub(crate) struct CalibrateArgs {
    /// ONNX models (fp32 and QDQ int8) to profile.
    #[arg(required = true)]
    models: Vec<PathBuf>,
    /// This machine's profile (a `kiln probe` file); default: probe now.
    #[arg(long)]
    host: Option<String>,
    /// Thread counts to calibrate (comma-separated).
    #[arg(long, default_value = "1", value_delimiter = ',')]
    threads: Vec<usize>,
    /// Bind input dims, e.g. `x=1,3,224,224` (repeatable; batch defaults to 1).
    #[arg(long = "shape", value_name = "NAME=D,D,...")]
    shapes: Vec<String>,
    /// Profiled runs per model and thread count (each step's median is used).
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// Calibration file to write (JSON).
    #[arg(short, long)]
    output: PathBuf,
}

/// Arguments of `kiln cost predict`.
#[derive(Args)]
pub(crate) struct PredictArgs {
    /// ONNX model.
    model: PathBuf,
    /// Calibration from `kiln cost calibrate`.
    #[arg(long)]
    calibration: PathBuf,
    /// Target device: a shipped profile name or a profile file (default: the
    /// calibration's host, with `--host`).
    #[arg(long)]
    device: Option<String>,
    /// Host profile the calibration was made with (when --device is omitted
    /// or --measure is given).
    #[arg(long)]
    host: Option<String>,
    /// Threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Bind input dims (as `kiln cost calibrate`).
    #[arg(long = "shape", value_name = "NAME=D,D,...")]
    shapes: Vec<String>,
    /// Also measure the model on this machine (profiled runs) and compare.
    #[arg(long)]
    measure: bool,
    /// Runs of --measure.
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

/// A compiled model with its seeded random inputs and their shapes.
pub(crate) fn prepare(
    model: &Path,
    shapes: &[String],
) -> Result<(CompiledModel, Vec<Tensor>, Vec<Vec<usize>>)> {
    let m = kiln::load_model(model)?;
    let binds: std::collections::HashMap<String, Vec<usize>> = parse_shapes(shapes)?.into_iter().collect();
    let dims = kiln::shapes::bind_input_shapes(&m.graph.inputs, &binds).map_err(|e| e.with_file(model))?;
    let inputs: Vec<Tensor> = m
        .graph
        .inputs
        .iter()
        .zip(&dims)
        .enumerate()
        .map(|(i, (vi, d))| random_tensor(vi.ty.dtype, d.clone(), i as u64 + 1))
        .collect::<Result<_>>()
        .with_context(|| model.display().to_string())?;
    let opts = CompileOptions {
        input_shapes: Some(dims.clone()),
        ..Default::default()
    };
    let cm = kiln::compile_model(m, &opts).map_err(|e| e.with_file(model))?;
    Ok((cm, inputs, dims))
}

fn host_profile(host: Option<&str>) -> Result<DeviceProfile> {
    match host {
        Some(h) => Ok(DeviceProfile::resolve(h)?),
        None => {
            eprintln!("kiln cost: no --host profile; probing this machine");
            Ok(run_probe(&ProbeOptions::default())?)
        }
    }
}

/// `kiln cost calibrate`.
pub(crate) fn calibrate(a: &CalibrateArgs) -> Result<()> {
    if a.runs == 0 {
        bail!("--runs must be at least 1");
    }
    if a.threads.contains(&0) {
        bail!("--threads: 0 is not a thread count");
    }
    let host = host_profile(a.host.as_deref())?;
    let mut profiles: Vec<(usize, Vec<_>)> = Vec::new();
    let mut names = Vec::new();
    for path in &a.models {
        let (cm, inputs, _) = prepare(path, &a.shapes)?;
        names.push(path.display().to_string());
        for &t in &a.threads {
            let samples =
                profile_steps(&cm, &inputs, t, 3, a.runs).with_context(|| path.display().to_string())?;
            let ms: f64 = samples.iter().map(|s| s.seconds).sum::<f64>() * 1e3;
            eprintln!(
                "kiln cost: {} on {t} thread(s): {} steps, {ms:.3} ms (sum of step medians)",
                path.display(),
                samples.len()
            );
            profiles.push((t, samples));
        }
    }
    let cal = Calibration::fit(&host, names, &profiles)?;
    cal.save(&a.output)?;
    println!(
        "{:<44} {:>3} {:>5} {:>9} {:>8} {:>8} {:>9}",
        "class", "thr", "steps", "GFLOP/s", "GB/s", "o (us)", "meas ms"
    );
    for f in &cal.fits {
        println!(
            "{:<44} {:>3} {:>5} {:>9} {:>8.1} {:>8.2} {:>9.3}",
            truncate(&f.class, 44),
            f.threads,
            f.samples,
            f.gflops.map_or("-".to_string(), |g| format!("{g:.1}")),
            f.gbs,
            f.overhead_us,
            f.measured_ms
        );
    }
    eprintln!("kiln cost: calibration -> {}", a.output.display());
    Ok(())
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('~');
        t
    }
}

/// `kiln cost predict`.
pub(crate) fn predict(a: &PredictArgs) -> Result<()> {
    let cal = Calibration::load(&a.calibration)?;
    let host = match (&a.host, a.device.is_none() || a.measure) {
        (Some(h), _) => Some(DeviceProfile::resolve(h)?),
        (None, true) => bail!(
            "--host PROFILE is needed (the profile '{}' the calibration was made with) when --device is omitted or --measure is given",
            cal.host.name
        ),
        (None, false) => None,
    };
    let device = match &a.device {
        Some(d) => DeviceProfile::resolve(d)?,
        None => host.clone().ok_or_else(|| anyhow!("no device"))?,
    };
    let (cm, inputs, dims) = prepare(&a.model, &a.shapes)?;
    let steps: Vec<StepCost> = plan_steps(&cm, &dims)?;
    let pred = cal.predict(&steps, a.threads, &device)?;
    let measured = if a.measure {
        Some(profile_steps(&cm, &inputs, a.threads, 3, a.runs.max(1))?)
    } else {
        None
    };
    let info = cm.plan_info(&dims)?;
    let memory_mb = (info.arena_bytes + info.scratch_bytes * a.threads + info.packed_weight_bytes) as f64
        / (1u64 << 20) as f64;
    let e = energy::estimate(&steps, &device, Some(pred.total_ms));
    // Per class: steps, predicted, measured.
    let mut by_class: BTreeMap<String, (usize, f64, f64)> = BTreeMap::new();
    for (i, s) in steps.iter().enumerate() {
        let c = by_class.entry(kernel_class(&s.kernel)).or_default();
        c.0 += 1;
        c.1 += pred.step_ms[i];
        if let Some(m) = &measured {
            c.2 += m.get(i).map_or(0.0, |x| x.seconds * 1e3);
        }
    }
    let measured_ms = measured
        .as_ref()
        .map(|m| m.iter().map(|s| s.seconds).sum::<f64>() * 1e3);
    if a.json {
        let classes: Vec<serde_json::Value> = by_class
            .iter()
            .map(|(c, (n, p, m))| {
                serde_json::json!({"class": c, "steps": n, "predicted_ms": p, "measured_ms": measured.as_ref().map(|_| *m)})
            })
            .collect();
        let out = serde_json::json!({
            "model": a.model.display().to_string(),
            "device": device.name,
            "threads": a.threads,
            "predicted_ms": pred.total_ms,
            "measured_ms": measured_ms,
            "fallback_steps": pred.fallback_steps,
            "cross_precision_steps": pred.cross_precision_steps,
            "threads_scaled_from": pred.threads_scaled_from,
            "kernel_gap": kiln_search::cost::kernel_gap(&device),
            "memory_mb": memory_mb,
            "device_memory_mb": device.memory_mb,
            "energy": e,
            "classes": classes,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "{} on {} ({} thread(s)), calibrated on {}",
        a.model.display(),
        device.name,
        a.threads,
        cal.host.name
    );
    println!(
        "{:<48} {:>5} {:>10} {:>10}",
        "class", "steps", "pred ms", "meas ms"
    );
    for (c, (n, p, m)) in &by_class {
        let ms = if measured.is_some() {
            format!("{m:.3}")
        } else {
            "-".into()
        };
        println!("{:<48} {:>5} {:>10.3} {:>10}", truncate(c, 48), n, p, ms);
    }
    match measured_ms {
        Some(m) => println!(
            "latency: predicted {:.3} ms, measured {:.3} ms (sum of step medians), ratio {:.2}",
            pred.total_ms,
            m,
            pred.total_ms / m
        ),
        None => println!("latency: predicted {:.3} ms", pred.total_ms),
    }
    if pred.fallback_steps > 0 {
        println!(
            "  {} step(s) of classes seen fewer than {} times in calibration used their precision's fallback fit",
            pred.fallback_steps,
            kiln_search::cost::MIN_CLASS_SAMPLES
        );
    }
    if let Some(t) = pred.threads_scaled_from {
        eprintln!(
            "warning: {} thread(s) were not calibrated; compute scaled linearly from the {t}-thread fit (optimistic)",
            a.threads
        );
    }
    if let Some(gap) = kiln_search::cost::kernel_gap(&device) {
        eprintln!("warning: {gap}");
    }
    if pred.cross_precision_steps > 0 {
        eprintln!(
            "warning: {} step(s) are of a precision the calibration never saw (e.g. int8 with a calibration on \
             fp32 models only); they are predicted from the fp32 fit scaled by peak ratios, a rough figure: \
             calibrate on an int8 model too (`kiln cost calibrate fp32.onnx int8.onnx`)",
            pred.cross_precision_steps
        );
    }
    println!(
        "memory: {memory_mb:.1} MiB (activations {:.1} + scratch + packed weights {:.1}) of {} MiB",
        info.arena_bytes as f64 / (1u64 << 20) as f64,
        info.packed_weight_bytes as f64 / (1u64 << 20) as f64,
        device.memory_mb
    );
    println!(
        "energy: {:.4} mJ per inference (compute {:.4} + memory {:.4}; {}); device power x latency: {:.3} mJ",
        e.total_mj,
        e.compute_mj,
        e.memory_mj,
        e.source,
        e.power_mj.unwrap_or(0.0)
    );
    Ok(())
}
