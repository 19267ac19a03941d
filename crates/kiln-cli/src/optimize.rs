//! `kiln optimize`.

use anyhow::{anyhow, Result};
use kiln::opt::{Level, Options};
use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

#[allow(clippy::too_many_arguments)]
pub fn optimize(
    model_path: &Path,
    output: &Path,
    level: &str,
    disable: &[String],
    shapes: &[String],
    report: bool,
    json: bool,
    verbose: bool,
) -> Result<()> {
    let level: Level = level.parse().map_err(|e: String| anyhow!(e))?;
    let mut model = kiln::load_model(model_path)?;
    let binds: HashMap<String, Vec<usize>> = crate::parse_shapes(shapes)?.into_iter().collect();
    kiln::shapes::check_binds(&model.graph.inputs, &binds).map_err(|e| e.with_file(model_path))?;
    let stats = |m: &kiln::ir::Model| {
        kiln::stats::model_stats(m, &binds).map_err(|e| anyhow!("{}: {e}", model_path.display()))
    };
    let before = stats(&model)?;
    let opts = Options {
        level,
        disabled: disable.iter().cloned().collect(),
        ..Options::default()
    };
    let t0 = Instant::now();
    let rep = kiln::opt::optimize(&mut model, &opts).map_err(|e| anyhow!("{}: {e}", model_path.display()))?;
    let opt_ms = t0.elapsed().as_secs_f64() * 1e3;
    if verbose {
        for e in &rep.events {
            eprintln!(
                "optimize: rule '{}' applied at node '{}' ({})",
                e.rule, e.node, e.op_type
            );
        }
    }
    let after = stats(&model)?;
    // What the file holds: fused ops are written back as standard ONNX nodes.
    let exported =
        kiln::ir::ops::fused::lower_fused(&model).map_err(|e| anyhow!("{}: {e}", model_path.display()))?;
    let exported_stats = stats(&exported)?;
    kiln::onnx::save(&model, output)?;
    if json {
        let rules: Vec<_> = rep
            .rules
            .iter()
            .map(|r| serde_json::json!({"rule": r.name, "level": r.level.name(), "enabled": r.enabled, "applied": r.applied}))
            .collect();
        let fig = |s: &kiln::stats::ModelStats, nodes: usize| {
            serde_json::json!({"nodes": nodes, "weight_bytes": s.weight_bytes, "learnable_params": s.learnable_params,
                "macs": s.macs, "op_histogram": s.op_histogram})
        };
        println!(
            "{}",
            serde_json::json!({
                "model": model_path.display().to_string(), "output": output.display().to_string(),
                "level": level.name(), "rounds": rep.rounds, "optimize_ms": opt_ms, "rules": rules,
                "before": fig(&before, rep.nodes_before), "after": fig(&after, rep.nodes_after),
                "exported": fig(&exported_stats, exported.graph.nodes.len()),
            })
        );
        return Ok(());
    }
    if report {
        println!(
            "{}: level {} ({} round(s), {opt_ms:.1} ms)",
            model_path.display(),
            level.name(),
            rep.rounds
        );
        println!("  {:<40} {:>9} {:>8}", "rule", "level", "applied");
        for r in &rep.rules {
            let applied = if r.enabled {
                r.applied.to_string()
            } else {
                "off".to_string()
            };
            println!("  {:<40} {:>9} {:>8}", r.name, r.level.name(), applied);
        }
        let macs = |m: Option<u64>| {
            m.map(|m| format!("{:.2}M", m as f64 / 1e6))
                .unwrap_or_else(|| "unknown".into())
        };
        println!(
            "  {:<18} {:>14} {:>14} {:>14}",
            "", "before", "after (IR)", "written file"
        );
        let n = |a: usize, b: usize, c: usize| println!("  {:<18} {a:>14} {b:>14} {c:>14}", "nodes");
        n(rep.nodes_before, rep.nodes_after, exported.graph.nodes.len());
        println!(
            "  {:<18} {:>14} {:>14} {:>14}",
            "weight bytes", before.weight_bytes, after.weight_bytes, exported_stats.weight_bytes
        );
        println!(
            "  {:<18} {:>14} {:>14} {:>14}",
            "MACs",
            macs(before.macs),
            macs(after.macs),
            macs(exported_stats.macs)
        );
    }
    println!(
        "wrote {} ({} -> {} IR nodes; {} in the file, where fused ops are written back as standard ONNX nodes)",
        output.display(),
        rep.nodes_before,
        rep.nodes_after,
        exported.graph.nodes.len()
    );
    Ok(())
}
