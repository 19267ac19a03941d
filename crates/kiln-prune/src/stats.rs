//! Parameter and MAC counts of a model, for the pruning report.

use crate::analysis::constants;
use kiln_ir::{infer, Dim, Model};
use std::collections::HashSet;

/// True for inputs that configure an op rather than carry weights (float
/// ones: Clip bounds, Pad values, Resize scales, Pow exponents, Dropout ratios).
fn is_config(op: &str, input: usize) -> bool {
    matches!(op, "Clip" | "Pad" | "Resize" | "Upsample" | "Pow" | "Dropout") && input >= 1
}

/// Learnable parameters: elements of the float constants (initializers and
/// `Constant` nodes) read as weights, i.e. not BatchNormalization's running
/// mean and variance and not op configuration (Clip bounds...). The same
/// rule as `kiln::stats::ModelStats::learnable_params` for float models.
pub(crate) fn learnable_params(m: &Model) -> u64 {
    let consts = constants(m);
    let mut counted: HashSet<&str> = HashSet::new();
    let mut excluded: HashSet<&str> = HashSet::new();
    for n in &m.graph.nodes {
        for (k, v) in n.inputs.iter().enumerate() {
            let stats = n.op_type == "BatchNormalization" && (k == 3 || k == 4);
            if stats || is_config(&n.op_type, k) {
                excluded.insert(v);
            } else {
                counted.insert(v);
            }
        }
    }
    consts
        .iter()
        .filter(|(name, t)| {
            t.dtype().is_float() && (counted.contains(name.as_str()) || !excluded.contains(name.as_str()))
        })
        .map(|(_, t)| t.len() as u64)
        .sum()
}

/// Multiply-accumulates of Conv (`|Y| x C_in / group x kH x kW`), Gemm and
/// MatMul (`|Y| x K`) at batch 1 (symbolic leading input dims bound to 1);
/// `None` if a shape stays unknown. The convention of `kiln::stats`.
pub(crate) fn macs(model: &Model) -> Option<u64> {
    let mut m = model.clone();
    for i in &mut m.graph.inputs {
        if let Some(s) = &mut i.ty.shape {
            if let Some(first @ Dim::Sym(_)) = s.first_mut() {
                *first = Dim::Known(1);
            }
        }
    }
    m.graph.value_types.clear();
    infer::infer_types(&mut m).ok()?;
    let consts = constants(&m);
    let dims = |name: &str| -> Option<Vec<usize>> {
        if let Some(t) = consts.get(name) {
            return Some(t.shape().to_vec());
        }
        m.graph.value_types.get(name)?.known_dims()
    };
    let mut total = 0u64;
    for n in &m.graph.nodes {
        let numel = |v: &[usize]| v.iter().product::<usize>() as u64;
        let this = match n.op_type.as_str() {
            "Conv" => {
                let y = dims(n.outputs.first()?)?;
                let w = dims(n.inputs.get(1)?)?;
                numel(&y) * numel(w.get(1..)?)
            }
            "Gemm" => {
                let y = dims(n.outputs.first()?)?;
                let a = dims(n.inputs.first()?)?;
                let k = if n.attr_int("transA", 0).ok()? != 0 {
                    *a.first()?
                } else {
                    *a.get(1)?
                };
                numel(&y) * k as u64
            }
            "MatMul" => {
                let y = dims(n.outputs.first()?)?;
                let a = dims(n.inputs.first()?)?;
                numel(&y) * *a.last()? as u64
            }
            _ => 0,
        };
        total += this;
    }
    Some(total)
}
