//! Model statistics: parameter counts, weight bytes, op histogram and MACs.

use kiln_ir::{infer, Dim, Model, Result, Tensor};
use std::collections::{BTreeMap, HashMap};

/// Summary numbers of a model, as `kiln inspect` prints them.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelStats {
    /// Float parameters excluding BatchNormalization running statistics
    /// (inputs `mean` and `var`): weights, biases, BN scale and shift; in a
    /// quantized (QDQ) model also the integer weights and biases that a
    /// `DequantizeLinear` reads (not its scales and zero points).
    /// Constants that only configure an op (Clip bounds, Resize scales, Pad
    /// values, Pow exponents...; see [`is_config_input`]) are not parameters.
    pub learnable_params: u64,
    /// All float parameters, BN running statistics included.
    pub total_params: u64,
    /// Bytes of all initializers and Constant-node tensors.
    pub weight_bytes: u64,
    /// Node count per op type.
    pub op_histogram: BTreeMap<String, usize>,
    /// Multiply-accumulates of Conv, ConvTranspose, Gemm and MatMul (and of
    /// kiln's fused FusedConv, FusedGemm and FusedMatMul, counted as their
    /// base op) for the bound input shapes; `None` if some shape stayed symbolic.
    pub macs: Option<u64>,
}

/// True for op inputs that configure the op rather than carry learned
/// weights: Clip `min`/`max`, Resize/Upsample `roi`/`scales`/`sizes`, Pad
/// `pads`/`constant_value`/`axes`, Pow `Y`, and the shape/index inputs of
/// data-movement ops.
pub fn is_config_input(op_type: &str, input: usize) -> bool {
    match op_type {
        "Clip" | "Pad" | "Resize" | "Upsample" | "Pow" | "Reshape" | "Slice" | "Expand" | "Tile"
        | "Gather" | "Split" | "Squeeze" | "Unsqueeze" | "ReduceMean" | "ReduceSum" | "ReduceMax"
        | "ReduceMin" | "ConstantOfShape" => input >= 1,
        "Dropout" => input >= 1,
        // Scales and zero points configure quantization; the data is the parameter.
        "QuantizeLinear" | "DequantizeLinear" => input >= 1,
        _ => false,
    }
}

fn constant_tensors(model: &Model) -> impl Iterator<Item = (&str, &Tensor)> {
    let g = &model.graph;
    g.initializers.iter().map(|(n, t)| (n.as_str(), t)).chain(
        g.nodes
            .iter()
            .filter(|n| n.op_type == "Constant")
            .filter_map(|n| match n.attrs.get("value") {
                Some(kiln_ir::Attribute::Tensor(t)) => {
                    Some((n.outputs.first().map(|s| s.as_str()).unwrap_or(""), t))
                }
                _ => None,
            }),
    )
}

/// Computes [`ModelStats`]. `bindings` gives concrete dims for graph inputs
/// (by input name); a symbolic leading dim of an input not listed is bound to 1
/// (batch 1). MACs follow the usual convention: Conv = |Y| x (C_in / group) x
/// kernel area; ConvTranspose = |X| x (C_out / group) x kernel area;
/// Gemm/MatMul = |Y| x K. The fused ops FusedConv, FusedGemm and FusedMatMul
/// count as Conv, Gemm and MatMul (matched by op type, whatever the domain;
/// their epilogues are not MACs).
///
/// Errors: shape inference failing with the bound shapes.
pub fn model_stats(model: &Model, bindings: &HashMap<String, Vec<usize>>) -> Result<ModelStats> {
    let mut bn_stats: Vec<&str> = Vec::new();
    let mut op_histogram = BTreeMap::new();
    // Per value: (used as a weight somewhere, used at all).
    let mut uses: HashMap<&str, (bool, bool)> = HashMap::new();
    for n in &model.graph.nodes {
        *op_histogram.entry(n.op_type.clone()).or_insert(0) += 1;
        if n.op_type == "BatchNormalization" {
            bn_stats.extend(n.inputs.iter().skip(3).take(2).map(|s| s.as_str()));
        }
        for (i, inp) in n.inputs.iter().enumerate() {
            let u = uses.entry(inp.as_str()).or_default();
            u.0 |= !is_config_input(&n.op_type, i);
            u.1 = true;
        }
    }
    for o in &model.graph.outputs {
        uses.entry(o.name.as_str()).or_default().0 = true;
    }
    let dq_data: Vec<&str> = model
        .graph
        .nodes
        .iter()
        .filter(|n| n.op_type == "DequantizeLinear")
        .filter_map(|n| n.inputs.first().map(|s| s.as_str()))
        .collect();
    let (mut learnable, mut total, mut bytes) = (0u64, 0u64, 0u64);
    for (name, t) in constant_tensors(model) {
        bytes += t.byte_len() as u64;
        let is_param = uses.get(name).is_none_or(|u| u.0 || !u.1);
        if (t.dtype().is_float() || dq_data.contains(&name)) && is_param {
            total += t.len() as u64;
            if !bn_stats.contains(&name) {
                learnable += t.len() as u64;
            }
        }
    }
    // Bind shapes and re-infer.
    let mut m = model.clone();
    for i in &mut m.graph.inputs {
        if let Some(d) = bindings.get(&i.name) {
            i.ty.shape = Some(d.iter().map(|&x| Dim::Known(x)).collect());
        } else if let Some(s) = &mut i.ty.shape {
            if let Some(first @ Dim::Sym(_)) = s.first_mut() {
                *first = Dim::Known(1);
            }
        }
    }
    infer::infer_types(&mut m)?;
    let types = &m.graph.value_types;
    let dims = |name: &str| -> Option<Vec<usize>> { types.get(name)?.known_dims() };
    let mut macs: Option<u64> = Some(0);
    for n in &m.graph.nodes {
        let this = match n.op_type.as_str() {
            "Conv" | "FusedConv" => (|| {
                let y = dims(n.outputs.first()?)?;
                let w = dims(n.inputs.get(1)?)?;
                Some(y.iter().product::<usize>() as u64 * w.iter().skip(1).product::<usize>() as u64)
            })(),
            "ConvTranspose" => (|| {
                let x = dims(n.inputs.first()?)?;
                let w = dims(n.inputs.get(1)?)?;
                Some(x.iter().product::<usize>() as u64 * w.iter().skip(1).product::<usize>() as u64)
            })(),
            "Gemm" | "FusedGemm" => (|| {
                let y = dims(n.outputs.first()?)?;
                let a = dims(n.inputs.first()?)?;
                let k = if n.attr_int("transA", 0).ok()? != 0 {
                    *a.first()?
                } else {
                    *a.get(1)?
                };
                Some(y.iter().product::<usize>() as u64 * k as u64)
            })(),
            "MatMul" | "FusedMatMul" => (|| {
                let y = dims(n.outputs.first()?)?;
                let a = dims(n.inputs.first()?)?;
                Some(y.iter().product::<usize>() as u64 * *a.last()? as u64)
            })(),
            _ => Some(0),
        };
        macs = match (macs, this) {
            (Some(a), Some(b)) => Some(a.saturating_add(b)),
            _ => None,
        };
    }
    Ok(ModelStats {
        learnable_params: learnable,
        total_params: total,
        weight_bytes: bytes,
        op_histogram,
        macs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_ir::{Attribute, DType, Graph, Node, OpsetImport, ValueInfo, ValueType};

    /// x[1,3,8,8] -> Conv(4x3x3x3, pads 1) -> MatMul on the last
    /// axis (8x5) -> Gemm on a second input [2,6] x [6,7]; `fused` uses the
    /// kiln-domain fused ops with activations.
    fn model(fused: bool) -> Model {
        let z = |shape: &[usize]| Tensor::zeros(DType::F32, shape.to_vec()).unwrap();
        let mut init = BTreeMap::new();
        init.insert("w".to_string(), z(&[4, 3, 3, 3]));
        init.insert("m".to_string(), z(&[8, 5]));
        init.insert("gw".to_string(), z(&[6, 7]));
        let mut nodes = vec![
            Node::new("c", "Conv", &["x", "w"], &["h"]).with_attr("pads", Attribute::Ints(vec![1; 4])),
            Node::new("mm", "MatMul", &["h", "m"], &["y"]),
            Node::new("g", "Gemm", &["a", "gw"], &["gy"]),
        ];
        if fused {
            for n in &mut nodes {
                n.op_type = format!("Fused{}", n.op_type);
                n.domain = "kiln".into();
                n.attrs
                    .insert("activation".into(), Attribute::String(b"Relu".to_vec()));
            }
        }
        let vi = |name: &str, dims: &[usize]| ValueInfo {
            name: name.into(),
            ty: ValueType::known(DType::F32, dims),
        };
        Model {
            graph: Graph {
                nodes,
                inputs: vec![vi("x", &[1, 3, 8, 8]), vi("a", &[2, 6])],
                outputs: vec![vi("y", &[1, 4, 8, 5]), vi("gy", &[2, 7])],
                initializers: init,
                ..Default::default()
            },
            opsets: vec![OpsetImport {
                domain: String::new(),
                version: 13,
            }],
            ..Default::default()
        }
    }

    #[test]
    fn fused_ops_count_like_their_base_ops() {
        let plain = model_stats(&model(false), &HashMap::new()).unwrap();
        let fused = model_stats(&model(true), &HashMap::new()).unwrap();
        let want = 4 * 8 * 8 * 27 + 4 * 8 * 5 * 8 + 2 * 7 * 6;
        assert_eq!(plain.macs, Some(want));
        assert_eq!(fused.macs, Some(want));
        assert_eq!(fused.op_histogram["FusedConv"], 1);
    }
}
