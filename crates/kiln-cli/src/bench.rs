//! `kiln bench`: latency of the compiled runtime (or, with `--reference`, of
//! the reference executor), with an optional per-step profile.

use crate::{load_input, peak_rss_mib, preset, random_tensor};
use anyhow::{anyhow, bail, Result};
use kiln::ir::{DType, Tensor};
use kiln::runtime::Isa;
use kiln::runtime::{CompileOptions, TensorRef};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Arguments of `kiln bench`.
pub(crate) struct BenchArgs<'a> {
    pub model: &'a Path,
    pub inputs: &'a [PathBuf],
    pub shapes: &'a [String],
    pub preset_name: &'a str,
    pub warmup: usize,
    pub runs: usize,
    pub threads: usize,
    pub profile: bool,
    pub reference: bool,
    pub isa: Option<&'a str>,
    pub json: bool,
    /// Answer timing requests on stdin after warm-up (`scripts/bench`).
    pub server: bool,
}

/// One timed run, whatever the engine.
pub(crate) type RunOnce<'a> = Box<dyn FnMut() -> Result<()> + 'a>;

/// The inputs to time: loaded files, or seeded random tensors of the
/// declared shapes (symbolic dims bound by `--shape`).
fn bench_inputs(a: &BenchArgs, decl: &[kiln::ir::ValueInfo]) -> Result<Vec<Tensor>> {
    let pre = preset(a.preset_name)?;
    if !a.inputs.is_empty() {
        return a.inputs.iter().map(|p| load_input(p, pre)).collect();
    }
    let binds: std::collections::HashMap<String, Vec<usize>> =
        crate::parse_shapes(a.shapes)?.into_iter().collect();
    let dims = kiln::shapes::bind_input_shapes(decl, &binds).map_err(|e| e.with_file(a.model))?;
    decl.iter()
        .zip(dims)
        .enumerate()
        .map(|(i, (vi, d))| {
            random_tensor(vi.ty.dtype, d, i as u64 + 1).map_err(|e| anyhow!("{}: {e}", a.model.display()))
        })
        .collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[(((sorted.len() - 1) as f64) * p).round() as usize]
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs `kiln bench`.
pub(crate) fn bench(a: &BenchArgs) -> Result<()> {
    if a.threads == 0 {
        bail!("--threads must be at least 1");
    }
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    if a.threads > cores {
        eprintln!(
            "note: --threads {} is more than the {cores} core(s) this machine has",
            a.threads
        );
    }
    if a.runs == 0 {
        bail!("--runs must be at least 1");
    }
    if a.threads > 256 {
        bail!("--threads {} is too many (at most 256)", a.threads);
    }
    if let Ok(v) = std::env::var("KILN_ISA") {
        match Isa::from_name(&v) {
            None => eprintln!(
                "note: KILN_ISA={v} is not an ISA level (scalar, avx2, avx512, avx512vnni, avx512amx) and is ignored"
            ),
            Some(i) if a.isa.is_some() => {
                eprintln!(
                    "note: KILN_ISA={i} also caps the ISA level, whichever of it and --isa is lower wins"
                )
            }
            Some(_) => {}
        }
    }
    if a.reference && a.isa.is_some() {
        eprintln!("note: --isa has no effect with --reference (the reference executor has no SIMD kernels)");
    }
    let max_isa =
        match a.isa {
            None => None,
            Some(s) => Some(Isa::from_name(s).ok_or_else(|| {
                anyhow!("--isa {s}: expected scalar, avx2, avx512, avx512vnni or avx512amx")
            })?),
        };
    let m = kiln::load_model(a.model)?;
    // QDQ models compile too: their Q/DQ patterns run on the int8 kernels.
    if a.reference {
        drop(m);
        let session = kiln::open_session(a.model)?.with_threads(a.threads);
        let tensors = bench_inputs(a, session.inputs())?;
        let model = a.model;
        let mut run: RunOnce = Box::new(|| {
            session
                .run(tensors.clone())
                .map_err(|e| anyhow!("{}: {e}", model.display()))?;
            Ok(())
        });
        if a.server {
            return serve(&mut run, a.warmup);
        }
        let ms = time_runs(&mut run, a.warmup, a.runs)?;
        let prof = if a.profile {
            let (_, t) = session
                .run_profiled(tensors.clone())
                .map_err(|e| anyhow!("{}: {e}", model.display()))?;
            t.into_iter()
                .map(|nt| ProfRow {
                    node: nt.node,
                    op: nt.op_type,
                    kernel: "reference".into(),
                    shape: vec![],
                    flops: 0,
                    ms: nt.time.as_secs_f64() * 1e3,
                })
                .collect()
        } else {
            vec![]
        };
        return report(a, "reference", ms, prof, None);
    }
    let tensors = bench_inputs(a, &m.graph.inputs)?;
    let shapes: Vec<Vec<usize>> = tensors.iter().map(|t| t.shape().to_vec()).collect();
    // Fixed shapes: the plan is built now and weights are kept packed only.
    let opts = CompileOptions {
        max_isa,
        input_shapes: Some(shapes.clone()),
        ..Default::default()
    };
    let cm = kiln::compile_model(m, &opts).map_err(|e| e.with_file(a.model))?;
    let info = cm
        .plan_info(&shapes)
        .map_err(|e| anyhow!("{}: {e}", a.model.display()))?;
    let mut state = cm.new_state(a.threads);
    let model = a.model;
    let all_f32 = tensors.iter().all(|t| t.dtype() == DType::F32);
    let shape_refs: Vec<&[usize]> = shapes.iter().map(|s| s.as_slice()).collect();
    let out_shapes = cm
        .output_shapes(&shape_refs)
        .map_err(|e| anyhow!("{}: {e}", model.display()))?;
    let zero_copy = all_f32 && out_shapes.iter().all(|s| s.is_some());
    let mut outs: Vec<Vec<f32>> = out_shapes
        .iter()
        .map(|s| vec![0f32; s.as_ref().map_or(0, |s| s.iter().product())])
        .collect();
    let state_ref = &mut state;
    let cm_ref = &cm;
    let tensors_ref = &tensors;
    let mut run: RunOnce = if zero_copy {
        // The deployment path: caller-owned input and output buffers.
        Box::new(move || {
            let ins: Vec<TensorRef> = tensors_ref
                .iter()
                .map(|t| TensorRef {
                    shape: t.shape(),
                    data: t.as_slice::<f32>().unwrap_or(&[]),
                })
                .collect();
            let mut o: Vec<&mut [f32]> = outs.iter_mut().map(|v| v.as_mut_slice()).collect();
            cm_ref
                .run_into(state_ref, &ins, &mut o)
                .map_err(|e| anyhow!("{}: {e}", model.display()))
        })
    } else {
        Box::new(move || {
            cm_ref
                .run(state_ref, tensors_ref.clone())
                .map_err(|e| anyhow!("{}: {e}", model.display()))?;
            Ok(())
        })
    };
    if a.server {
        return serve(&mut run, a.warmup);
    }
    let ms = time_runs(&mut run, a.warmup, a.runs)?;
    drop(run);
    let mut prof = Vec::new();
    if a.profile {
        // Median per step over the profiled runs.
        let reps = a.runs.clamp(1, 20);
        let mut per_step: Vec<Vec<f64>> = Vec::new();
        let mut steps = Vec::new();
        for _ in 0..reps {
            let (_, t) = cm
                .run_profiled(&mut state, tensors.clone())
                .map_err(|e| anyhow!("{}: {e}", model.display()))?;
            if per_step.is_empty() {
                per_step = vec![Vec::new(); t.len()];
                steps = t.iter().map(|s| s.step.clone()).collect();
            }
            for (i, s) in t.iter().enumerate() {
                per_step[i].push(s.time.as_secs_f64() * 1e3);
            }
        }
        for (s, mut t) in steps.into_iter().zip(per_step) {
            prof.push(ProfRow {
                node: s.node,
                op: s.op_type,
                kernel: s.kernel,
                shape: s.shape,
                flops: s.flops,
                ms: median(&mut t),
            });
        }
    }
    let isa = cm.isa().name();
    report(a, isa, ms, prof, Some(&info))
}

/// Warm-up, then [`crate::bench_server::serve`] on stdin/stdout.
fn serve(run: &mut RunOnce, warmup: usize) -> Result<()> {
    for _ in 0..warmup {
        run()?;
    }
    crate::bench_server::serve(&mut **run, std::io::stdin().lock(), std::io::stdout().lock())
}

/// Warm-up, then `runs` timed runs; milliseconds, sorted.
pub(crate) fn time_runs(run: &mut RunOnce, warmup: usize, runs: usize) -> Result<Vec<f64>> {
    for _ in 0..warmup {
        run()?;
    }
    let mut ms = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t0 = Instant::now();
        run()?;
        ms.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    Ok(ms)
}

struct ProfRow {
    node: String,
    op: String,
    kernel: String,
    shape: Vec<usize>,
    flops: u64,
    ms: f64,
}

fn report(
    a: &BenchArgs,
    engine: &str,
    ms: Vec<f64>,
    prof: Vec<ProfRow>,
    info: Option<&kiln::runtime::compiled::PlanInfo>,
) -> Result<()> {
    let (p50, p90, p99) = (percentile(&ms, 0.5), percentile(&ms, 0.9), percentile(&ms, 0.99));
    let flops: u64 = info.map_or(0, |i| i.steps.iter().map(|s| s.flops).sum());
    let gflops = flops as f64 / (p50 * 1e6);
    let total: f64 = prof.iter().map(|r| r.ms).sum();
    let mut by_op: BTreeMap<String, (f64, u64, usize)> = BTreeMap::new();
    for r in &prof {
        let e = by_op.entry(r.op.clone()).or_default();
        e.0 += r.ms;
        e.1 += r.flops;
        e.2 += 1;
    }
    let mut by_op: Vec<(String, (f64, u64, usize))> = by_op.into_iter().collect();
    by_op.sort_by(|x, y| y.1 .0.total_cmp(&x.1 .0));
    if a.json {
        let mut j = serde_json::json!({
            "model": a.model.display().to_string(), "engine": engine, "threads": a.threads,
            "warmup": a.warmup, "runs": a.runs, "p50_ms": p50, "p90_ms": p90, "p99_ms": p99, "min_ms": ms[0],
            "peak_rss_mib": peak_rss_mib(),
            "gflop": (flops > 0).then_some(flops as f64 / 1e9), "gflops_per_s": (flops > 0).then_some(gflops),
            "profile": prof.iter().map(|r| serde_json::json!({"node": r.node, "op": r.op, "kernel": r.kernel,
                "shape": r.shape, "ms": r.ms, "gflops_per_s": (r.flops > 0).then(|| r.flops as f64 / (r.ms * 1e6))})).collect::<Vec<_>>(),
            "profile_by_op": by_op.iter().map(|(op, (t, f, n))| serde_json::json!({"op": op, "ms": t, "count": n,
                "gflops_per_s": (*f > 0).then(|| *f as f64 / (t * 1e6))})).collect::<Vec<_>>(),
        });
        if let Some(i) = info {
            j["isa"] = engine.into();
            j["unshared_bytes"] = i.unshared_bytes.into();
            j["scratch_bytes_per_thread"] = i.scratch_bytes.into();
            j["steps"] = i.steps.len().into();
            j["arena_bytes"] = i.arena_bytes.into();
            j["packed_weight_bytes"] = i.packed_weight_bytes.into();
            j["fallback_ops"] = i.fallback_ops.clone().into();
        }
        println!("{j}");
        return Ok(());
    }
    println!(
        "{}: {} runs after {} warm-up, {} thread(s), {engine}",
        a.model.display(),
        a.runs,
        a.warmup,
        a.threads
    );
    println!(
        "latency p50 {p50:.3} ms   p90 {p90:.3} ms   p99 {p99:.3} ms   min {:.3} ms",
        ms[0]
    );
    if flops > 0 {
        println!(
            "{:.3} GFLOP per run, {gflops:.1} GFLOP/s at p50",
            flops as f64 / 1e9
        );
    }
    if let Some(i) = info {
        println!(
            "arena {:.2} MiB (unshared {:.2} MiB), packed weights {:.2} MiB, scratch {:.1} KiB/thread, {} step(s), {} fallback",
            i.arena_bytes as f64 / 1048576.0,
            i.unshared_bytes as f64 / 1048576.0,
            i.packed_weight_bytes as f64 / 1048576.0,
            i.scratch_bytes as f64 / 1024.0,
            i.steps.len(),
            i.fallback_ops.len()
        );
    }
    if let Some(m) = peak_rss_mib() {
        println!("peak memory (RSS high-water mark) {m:.1} MiB");
    }
    if !prof.is_empty() {
        println!("\nby op type (median step times, sum {total:.3} ms):");
        println!(
            "  {:<20} {:>9} {:>7} {:>6} {:>9}",
            "op", "ms", "share", "steps", "GFLOP/s"
        );
        for (op, (t, f, n)) in &by_op {
            let gf = if *f > 0 {
                format!("{:.1}", *f as f64 / (t * 1e6))
            } else {
                "-".into()
            };
            println!(
                "  {op:<20} {t:>9.3} {:>6.1}% {n:>6} {gf:>9}",
                100.0 * t / total.max(1e-12)
            );
        }
        println!("\nsteps:");
        println!(
            "  {:<4} {:<28} {:<14} {:<32} {:<20} {:>8} {:>6} {:>8}",
            "#", "node", "op", "kernel", "shape", "ms", "share", "GFLOP/s"
        );
        for (i, r) in prof.iter().enumerate() {
            let gf = if r.flops > 0 {
                format!("{:.1}", r.flops as f64 / (r.ms * 1e6))
            } else {
                "-".into()
            };
            println!(
                "  {i:<4} {:<28} {:<14} {:<32} {:<20} {:>8.3} {:>5.1}% {gf:>8}",
                truncate(&r.node, 28),
                truncate(&r.op, 14),
                truncate(&r.kernel, 32),
                format!("{:?}", r.shape),
                r.ms,
                100.0 * r.ms / total.max(1e-12)
            );
        }
    }
    Ok(())
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let t: String = s.chars().take(n - 1).collect();
        format!("{t}…")
    }
}
