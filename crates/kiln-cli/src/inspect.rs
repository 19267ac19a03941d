//! `kiln inspect`.

use anyhow::Result;
use kiln::ir::shape::shape_to_string;
use std::collections::HashMap;
use std::path::Path;

/// Groups digits by thousands: 4652008 -> "4,652,008".
fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn inspect(model_path: &Path, shapes: &[String], json: bool) -> Result<()> {
    let model = kiln::load_model(model_path)?;
    let binds: HashMap<String, Vec<usize>> = crate::parse_shapes(shapes)?.into_iter().collect();
    kiln::shapes::check_binds(&model.graph.inputs, &binds).map_err(|e| e.with_file(model_path))?;
    let st = kiln::stats::model_stats(&model, &binds)
        .map_err(|e| anyhow::anyhow!("{}: {e}", model_path.display()))?;
    let g = &model.graph;
    // Peak activation memory: the compiled plan's arena for these shapes.
    let plan = match kiln::shapes::bind_input_shapes(&g.inputs, &binds) {
        Ok(dims) => {
            // As `kiln bench` compiles it (QDQ lowered before optimizing).
            let cm = kiln::compile_model(model.clone(), &Default::default())
                .map_err(|e| anyhow::anyhow!("{}: {e}", model_path.display()))?;
            Some(
                cm.plan_info(&dims)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", model_path.display()))?,
            )
        }
        Err(_) => None,
    };
    if json {
        let io = |v: &[kiln::ir::ValueInfo]| {
            v.iter()
                .map(|i| {
                    serde_json::json!({"name": i.name, "dtype": i.ty.dtype.to_string(),
                    "shape": i.ty.shape.as_ref().map(|s| s.iter().map(|d| match d.known() {
                    Some(k) => serde_json::json!(k),
                    None => serde_json::json!(d.to_string()),
                }).collect::<Vec<_>>())})
                })
                .collect::<Vec<_>>()
        };
        println!(
            "{}",
            serde_json::json!({
                "model": model_path.display().to_string(), "opset": model.opset(), "ir_version": model.ir_version,
                "producer": model.producer_name, "inputs": io(&g.inputs), "outputs": io(&g.outputs),
                "nodes": g.nodes.len(), "op_histogram": st.op_histogram,
                "learnable_params": st.learnable_params, "total_params": st.total_params,
                "weight_bytes": st.weight_bytes, "macs": st.macs,
                "peak_activation_bytes": plan.as_ref().map(|p| p.arena_bytes),
                "unshared_activation_bytes": plan.as_ref().map(|p| p.unshared_bytes),
                "scratch_bytes_per_thread": plan.as_ref().map(|p| p.scratch_bytes),
                "packed_weight_bytes": plan.as_ref().map(|p| p.packed_weight_bytes),
                "fallback_ops": plan.as_ref().map(|p| p.fallback_ops.clone()),
            })
        );
        return Ok(());
    }
    println!("model:    {}", model_path.display());
    let producer = format!("{} {}", model.producer_name, model.producer_version);
    let producer = if producer.trim().is_empty() {
        "(none)"
    } else {
        producer.trim()
    };
    println!(
        "producer: {producer}   ir_version {}   opset {}",
        model.ir_version,
        model.opset()
    );
    println!("inputs:");
    for i in &g.inputs {
        println!("  {:<24} {} {}", i.name, i.ty.dtype, shape_to_string(&i.ty.shape));
    }
    println!("outputs:");
    for o in &g.outputs {
        println!("  {:<24} {} {}", o.name, o.ty.dtype, shape_to_string(&o.ty.shape));
    }
    println!("nodes: {}", g.nodes.len());
    let mut hist: Vec<_> = st.op_histogram.iter().collect();
    hist.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    for (op, n) in hist {
        println!("  {op:<24} {n}");
    }
    if st.total_params == st.learnable_params {
        println!("parameters: {} learnable", thousands(st.learnable_params));
    } else {
        println!(
            "parameters: {} learnable ({} with BatchNormalization running statistics)",
            thousands(st.learnable_params),
            thousands(st.total_params)
        );
    }
    println!(
        "weight bytes: {} ({:.2} MiB)",
        thousands(st.weight_bytes),
        st.weight_bytes as f64 / (1 << 20) as f64
    );
    match st.macs {
        Some(m) => println!(
            "MACs: {:.2}M ({}) {}",
            m as f64 / 1e6,
            thousands(m),
            if binds.is_empty() {
                "at batch 1 (a symbolic batch dim is bound to 1; set shapes with --shape)"
            } else {
                "for the input shapes bound with --shape"
            }
        ),
        None => println!("MACs: unknown: some dims are symbolic; bind them with --shape NAME=D,D,..."),
    }
    match &plan {
        Some(p) => {
            println!(
                "peak activation memory: {} ({:.2} MiB) planned arena for inputs {:?}; {:.2} MiB without reuse; im2col scratch {:.1} KiB per thread",
                thousands(p.arena_bytes as u64),
                p.arena_bytes as f64 / (1 << 20) as f64,
                p.input_shapes,
                p.unshared_bytes as f64 / (1 << 20) as f64,
                p.scratch_bytes as f64 / 1024.0
            );
            if !p.fallback_ops.is_empty() {
                let mut ops = p.fallback_ops.clone();
                ops.sort();
                ops.dedup();
                println!(
                    "compiled runtime: {} of {} steps run the reference fallback ({})",
                    p.fallback_ops.len(),
                    p.steps.len(),
                    ops.join(", ")
                );
            }
        }
        None => println!(
            "peak activation memory: unknown: some dims are symbolic; bind them with --shape NAME=D,D,..."
        ),
    }
    Ok(())
}
