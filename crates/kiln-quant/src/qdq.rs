//! Quantization into a QDQ model: [`prepare`], [`QuantOptions`], [`quantize`].

use crate::calib::{calibrate_prepared, CalibOptions, CalibProgress, CalibrationData, CalibrationResult};
use crate::error::{qbail, QuantError, QuantErrorKind, Result};
use crate::observer::Method;
use crate::report::{ActRange, BiasReport, LayerReport, LayerStatus, QuantReport, WeightScheme};
use kiln_ir::ops::fused::DOMAIN as KILN_DOMAIN;
use kiln_ir::quant::{
    choose_qparams_asymmetric, choose_scale_symmetric, dequantize_tensor, quantize_tensor, QParams,
};
use kiln_ir::{Attribute, DType, Graph, Model, Node, Tensor};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// The optimizer rule [`prepare`] disables: residual `Add`s stay separate
/// nodes so that they quantize as `Add` (a residual fused into a convolution
/// would add the float skip tensor inside the integer kernel).
pub const KEPT_RULE_DISABLED: &str = "fuse-residual-add-into-conv";

/// The lowest opset of a QDQ model: per-axis `DequantizeLinear` (the `axis`
/// attribute) is opset 13.
pub const MIN_QDQ_OPSET: i64 = 13;

/// Prepares an fp32 model for quantization: the graph optimizer at level
/// `extended` (constant folding, cleanups, BatchNormalization folded into the
/// convolutions, activations fused into `kiln::FusedConv`/`FusedGemm`/
/// `FusedMatMul`) with [`KEPT_RULE_DISABLED`] off.
///
/// [`crate::calibrate`] and [`quantize`] both call it (it is deterministic
/// and idempotent), so calibration statistics are those of the tensors of the
/// quantized graph. Node names are kept by the optimizer: a fused node has
/// the name of the Conv/Gemm/MatMul it grew from.
///
/// Errors: the model is already quantized — it has quantization nodes
/// (`QuantizeLinear`, `DequantizeLinear`, `QLinear*`, `*Integer`, kiln's
/// integer ops) — ([`QuantErrorKind::InvalidOptions`], naming the first such
/// node); the optimizer fails ([`QuantErrorKind::Optimize`], naming the rule,
/// node and op).
pub fn prepare(model: &Model) -> Result<Model> {
    const QUANT_OPS: &[&str] = &[
        "QuantizeLinear",
        "DequantizeLinear",
        "DynamicQuantizeLinear",
        "QLinearConv",
        "QLinearMatMul",
        "ConvInteger",
        "MatMulInteger",
    ];
    if let Some(n) = model.graph.nodes.iter().find(|n| {
        QUANT_OPS.contains(&n.op_type.as_str()) || (n.domain == "kiln" && n.op_type.starts_with('Q'))
    }) {
        return Err(QuantError::at_node(
            QuantErrorKind::InvalidOptions,
            &n.name,
            &n.op_type,
            "the model is already quantized; quantize its fp32 original instead",
        ));
    }
    let mut m = model.clone();
    let mut opts = kiln_opt::Options {
        level: kiln_opt::Level::Extended,
        ..Default::default()
    };
    opts.disabled.insert(KEPT_RULE_DISABLED.to_string());
    kiln_opt::optimize(&mut m, &opts)?;
    Ok(m)
}

/// How to quantize.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantOptions {
    /// How activation ranges are chosen (default [`Method::MinMax`], ONNX
    /// Runtime's default, and the best of the four on EfficientNet-Lite0
    /// calibrated on 9 photos: see the crate documentation). Graph outputs
    /// always use their observed range: their extremes are the model's
    /// answer (a classifier's top logit), not outliers to clip.
    pub method: Method,
    /// Weights per output channel (default true); per tensor otherwise.
    pub per_channel: bool,
    /// Activation element type: `DType::U8` (default) or `DType::I8`.
    pub activation_dtype: DType,
    /// Empirical bias correction of Conv and Gemm layers (default true; see
    /// the crate documentation).
    pub bias_correction: bool,
    /// Names of nodes (of the [`prepare`]d graph) kept in fp32: their weights
    /// stay float and they read the dequantized values of their inputs.
    pub exclude: BTreeSet<String>,
}

impl Default for QuantOptions {
    fn default() -> QuantOptions {
        QuantOptions {
            method: Method::MinMax,
            per_channel: true,
            activation_dtype: DType::U8,
            bias_correction: true,
            exclude: BTreeSet::new(),
        }
    }
}

impl QuantOptions {
    fn validate(&self) -> Result<()> {
        self.method.validate()?;
        if !matches!(self.activation_dtype, DType::U8 | DType::I8) {
            qbail!(
                InvalidOptions,
                "activations quantize to uint8 or int8, not {}",
                self.activation_dtype
            );
        }
        Ok(())
    }
}

/// Calibrates `model` on `data` and quantizes it: [`crate::calibrate`] with
/// the histograms `opts.method` needs, then [`quantize`].
pub fn quantize_with_data(
    model: &Model,
    data: &mut dyn CalibrationData,
    opts: &QuantOptions,
    progress: &mut dyn FnMut(CalibProgress),
) -> Result<(Model, QuantReport)> {
    opts.validate()?;
    let prepared = prepare(model)?;
    let calib = calibrate_prepared(
        prepared.clone(),
        data,
        &CalibOptions::for_method(opts.method),
        progress,
    )?;
    quantize_prepared(&prepared, &calib, opts)
}

/// Quantizes `model` into a QDQ model with the statistics of `calib`
/// (from [`crate::calibrate`] on the same model).
///
/// The model is [`prepare`]d, then every quantized activation tensor `v`
/// gets `QuantizeLinear(v) -> DequantizeLinear` read by all its consumers,
/// weights become int8 initializers read through `DequantizeLinear`, biases
/// int32 ones; see the crate documentation for the scheme and the ops. The
/// result is a float model (its inputs and outputs keep their names and
/// types) whose quantized tensors carry their quantization parameters in
/// the graph. Its default-domain opset is raised to 13 if lower.
///
/// Errors: invalid options or an excluded node that is not in the prepared
/// graph ([`QuantErrorKind::InvalidOptions`]); a tensor the quantized graph
/// needs without statistics, or a histogram method with statistics of a
/// MinMax-only calibration ([`QuantErrorKind::MissingStats`], naming the
/// tensor and node); an opset that cannot be raised to 13
/// ([`QuantErrorKind::Opset`], naming the node); the prepared or the
/// quantized model failing validation or type inference
/// ([`QuantErrorKind::Model`]).
pub fn quantize(
    model: &Model,
    calib: &CalibrationResult,
    opts: &QuantOptions,
) -> Result<(Model, QuantReport)> {
    opts.validate()?;
    let prepared = prepare(model)?;
    quantize_prepared(&prepared, calib, opts)
}

/// What a node does in the QDQ scheme.
#[derive(Debug, Clone)]
enum Role {
    /// Conv/Gemm/MatMul with a constant weight: activation inputs, the
    /// weight's input index and output-channel axis, the bias input index
    /// (when the op's bias is an int32 accumulator bias).
    Linear {
        acts: Vec<usize>,
        w: usize,
        axis: usize,
        bias: Option<usize>,
    },
    /// A compute op whose listed inputs (activations or constants) and
    /// output are quantized with their own parameters.
    Compute { inputs: Vec<usize> },
    /// Data movement: input 0 and the output share parameters.
    Move,
}

fn is_onnx(n: &Node) -> bool {
    n.domain.is_empty() || n.domain == "ai.onnx"
}

fn dtype_of(g: &Graph, v: &str) -> Option<DType> {
    if let Some(t) = g.initializers.get(v) {
        return Some(t.dtype());
    }
    if let Some(i) = g.inputs.iter().find(|i| i.name == v) {
        return Some(i.ty.dtype);
    }
    g.value_types.get(v).map(|t| t.dtype)
}

/// The node's role, or why it stays in fp32.
fn role(g: &Graph, n: &Node) -> std::result::Result<Role, String> {
    let op = n.op_type.as_str();
    let kiln = n.domain == KILN_DOMAIN;
    if !is_onnx(n) && !kiln {
        return Err("op not quantized".into());
    }
    let input = |i: usize| n.inputs.get(i).filter(|s| !s.is_empty());
    let weight = |i: usize, min_rank: usize| -> std::result::Result<&Tensor, String> {
        match input(i).and_then(|w| g.initializers.get(w)) {
            Some(t) if t.dtype() == DType::F32 && t.rank() >= min_rank => Ok(t),
            Some(_) => Err("weights are not a float tensor of the expected rank".into()),
            None => Err("weights are not constant".into()),
        }
    };
    let role = match (op, kiln) {
        ("Conv", false) | ("FusedConv", true) => {
            weight(1, 3)?;
            let mut acts = vec![0];
            if kiln && input(3).is_some() {
                acts.push(3);
            }
            Role::Linear {
                acts,
                w: 1,
                axis: 0,
                bias: Some(2),
            }
        }
        ("Gemm", false) | ("FusedGemm", true) => {
            let w = weight(1, 2)?;
            if w.rank() != 2 {
                return Err("weights are not a matrix".into());
            }
            let attr = |a: &str, d: f32| n.attr_float(a, d).map_err(|e| e.to_string());
            let unit = attr("alpha", 1.0)? == 1.0 && attr("beta", 1.0)? == 1.0;
            let trans_b = n.attr_int("transB", 0).map_err(|e| e.to_string())? != 0;
            Role::Linear {
                acts: vec![0],
                w: 1,
                axis: if trans_b { 0 } else { 1 },
                bias: unit.then_some(2),
            }
        }
        ("MatMul", false) | ("FusedMatMul", true) => {
            let w = weight(1, 2)?;
            Role::Linear {
                acts: vec![0],
                w: 1,
                axis: w.rank() - 1,
                bias: None,
            }
        }
        ("Add" | "Mul", false) => Role::Compute { inputs: vec![0, 1] },
        ("Concat", false) => Role::Compute {
            inputs: (0..n.inputs.len()).collect(),
        },
        (
            "AveragePool" | "GlobalAveragePool" | "HardSigmoid" | "HardSwish" | "Sigmoid" | "Relu" | "Clip",
            false,
        ) => Role::Compute { inputs: vec![0] },
        ("Resize", false) => {
            if n.attr_string("mode", "nearest").map_err(|e| e.to_string())? == "nearest" {
                Role::Move
            } else {
                Role::Compute { inputs: vec![0] }
            }
        }
        ("MaxPool", false) => {
            if n.outputs.iter().skip(1).any(|o| !o.is_empty()) {
                return Err("MaxPool with an Indices output".into());
            }
            Role::Move
        }
        ("Reshape" | "Flatten" | "Squeeze" | "Unsqueeze" | "Transpose", false) => Role::Move,
        _ => return Err("op not quantized".into()),
    };
    // Float data in and out.
    let data: Vec<usize> = match &role {
        Role::Linear { acts, .. } => acts.clone(),
        Role::Compute { inputs } => inputs.clone(),
        Role::Move => vec![0],
    };
    for i in data {
        let Some(v) = input(i) else {
            if i == 0 {
                return Err("no data input".into());
            }
            continue;
        };
        if dtype_of(g, v) != Some(DType::F32) {
            return Err("non-float data".into());
        }
        if matches!(role, Role::Move | Role::Linear { .. }) && g.initializers.contains_key(v) {
            return Err("constant data input".into());
        }
    }
    match n.outputs.first() {
        Some(y) if !y.is_empty() && dtype_of(g, y) == Some(DType::F32) => Ok(role),
        _ => Err("non-float output".into()),
    }
}

/// Quantization parameters of one activation tensor.
#[derive(Debug, Clone)]
struct ActQ {
    scale: f32,
    zp: i32,
    observed: (f32, f32),
    range: (f32, f32),
    shared_from: Option<String>,
    scale_name: String,
    zp_name: String,
}

/// Fresh names that collide with nothing in the graph.
struct Names {
    used: HashSet<String>,
}

impl Names {
    fn new(g: &Graph) -> Names {
        let mut used: HashSet<String> = g.initializers.keys().cloned().collect();
        used.extend(g.inputs.iter().map(|i| i.name.clone()));
        used.extend(g.outputs.iter().map(|i| i.name.clone()));
        for n in &g.nodes {
            used.insert(n.name.clone());
            used.extend(n.outputs.iter().cloned());
            used.extend(n.inputs.iter().cloned());
        }
        Names { used }
    }
    fn fresh(&mut self, hint: &str) -> String {
        let mut name = hint.to_string();
        let mut k = 1;
        while self.used.contains(&name) {
            name = format!("{hint}_{k}");
            k += 1;
        }
        self.used.insert(name.clone());
        name
    }
}

/// A zero-point tensor of `dtype` with `len` values (scalar when `None`).
fn zero_point_tensor(dtype: DType, zps: &[i32], per_axis: bool) -> Result<Tensor> {
    let shape = if per_axis { vec![zps.len()] } else { vec![] };
    Ok(match dtype {
        DType::U8 => Tensor::from_vec(shape, zps.iter().map(|&z| z as u8).collect::<Vec<_>>())?,
        DType::I8 => Tensor::from_vec(shape, zps.iter().map(|&z| z as i8).collect::<Vec<_>>())?,
        _ => Tensor::from_vec(shape, zps.to_vec())?,
    })
}

fn scale_tensor(scales: &[f32], per_axis: bool) -> Result<Tensor> {
    let shape = if per_axis { vec![scales.len()] } else { vec![] };
    Ok(Tensor::from_vec(shape, scales.to_vec())?)
}

/// The smallest requantization multiplier `s_x s_w / s_y` a weight scale may
/// give: `2^-24`, well inside the `[2^-31, 2^30)` that
/// [`kiln_ir::quant::quantize_multiplier`] accepts.
pub(crate) const WEIGHT_MULTIPLIER_FLOOR: f32 = 1.0 / (1u32 << 24) as f32;

/// Symmetric int8 quantization of a weight, per slice of `axis` or per
/// tensor: `s = max(max |w| / 127, floor)` ([`choose_scale_symmetric`]).
///
/// The floor (`2^-24 s_y / s_x` for a layer with input scale `s_x` and
/// output scale `s_y`) matters only for (nearly) dead channels, whose
/// weights are so small that the integer kernel's multiplier `s_x s_w / s_y`
/// would leave the fixed-point range (EfficientNet-Lite0's stem has one):
/// such weights quantize to 0, which changes the output by less than `2^-25`
/// output steps per input step and tap.
pub(crate) fn quantize_weight(w: &Tensor, axis: Option<usize>, floor: f32) -> Result<(Tensor, QParams)> {
    let xs = w.as_slice::<f32>()?;
    let absmax = |s: &[f32]| {
        s.iter()
            .fold(0f32, |m, &v| if v.is_finite() { m.max(v.abs()) } else { m })
    };
    let qp = match axis {
        None => QParams::per_tensor(DType::I8, choose_scale_symmetric(absmax(xs))?.max(floor), 0),
        Some(a) => {
            let shape = w.shape();
            let ch = shape[a];
            let inner: usize = shape[a + 1..].iter().product();
            let outer: usize = shape[..a].iter().product();
            let mut m = vec![0f32; ch];
            for o in 0..outer {
                for (c, mc) in m.iter_mut().enumerate() {
                    let base = (o * ch + c) * inner;
                    *mc = mc.max(absmax(&xs[base..base + inner]));
                }
            }
            QParams {
                dtype: DType::I8,
                scale: m
                    .iter()
                    .map(|&v| Ok(choose_scale_symmetric(v)?.max(floor)))
                    .collect::<kiln_ir::Result<_>>()?,
                zero_point: vec![0; ch],
                axis: Some(a),
            }
        }
    };
    Ok((quantize_tensor(w, &qp)?, qp))
}

/// The expected output shift per output channel of a Conv whose weight `w`
/// (`[M, C/group, k...]`) is replaced by `wq`, for an input with per-channel
/// mean `mean` (`C` values): `sum_{c, k} (wq - w)[m, c, k] * mean[g(m) * C/group + c]`.
pub(crate) fn conv_bias_shift(
    w: &[f32],
    wq: &[f32],
    shape: &[usize],
    group: usize,
    mean: &[f64],
) -> Option<Vec<f64>> {
    let m = *shape.first()?;
    let cg = *shape.get(1)?;
    let k: usize = shape[2..].iter().product();
    if group == 0 || m % group != 0 || mean.len() != cg * group || w.len() != m * cg * k {
        return None;
    }
    let per_group = m / group;
    let mut out = vec![0f64; m];
    for (o, d) in out.iter_mut().enumerate() {
        let g = o / per_group;
        let mut s = 0f64;
        for c in 0..cg {
            let mu = mean[g * cg + c];
            let base = (o * cg + c) * k;
            let e: f64 = (base..base + k).map(|i| (wq[i] - w[i]) as f64).sum();
            s += e * mu;
        }
        *d = s;
    }
    Some(out)
}

/// The expected output shift per output column of a Gemm (`alpha = 1`) whose
/// `B` is replaced by `bq`: `sum_k (bq - b)'[k, n] * mean[k]`, `B'` being `B`
/// or its transpose.
pub(crate) fn gemm_bias_shift(
    b: &[f32],
    bq: &[f32],
    shape: &[usize],
    trans_b: bool,
    mean: &[f64],
) -> Option<Vec<f64>> {
    let [r, c] = *shape else { return None };
    let (k, n) = if trans_b { (c, r) } else { (r, c) };
    if mean.len() != k || b.len() != k * n {
        return None;
    }
    let mut out = vec![0f64; n];
    for (j, d) in out.iter_mut().enumerate() {
        let mut s = 0f64;
        for (kk, &mu) in mean.iter().enumerate() {
            let i = if trans_b { j * k + kk } else { kk * n + j };
            s += (bq[i] - b[i]) as f64 * mu;
        }
        *d = s;
    }
    Some(out)
}

/// Why an opset below 13 cannot be raised to 13 for this node, if it cannot:
/// the ops whose inputs, attributes or meaning changed between `from` and 13
/// (ONNX operator changelog, <https://github.com/onnx/onnx/blob/main/docs/Changelog.md>).
fn opset_blocker(n: &Node, from: i64) -> Option<&'static str> {
    if !is_onnx(n) {
        return None;
    }
    let has = |a: &str| n.attrs.contains_key(a);
    match n.op_type.as_str() {
        "Softmax" | "LogSoftmax" | "Hardmax" if from < 13 => Some("its axis semantics changed at opset 13"),
        "Squeeze" | "Unsqueeze" | "ReduceSum" if from < 13 => Some("'axes' became an input at opset 13"),
        "Split" if from < 13 => Some("'split' became an input at opset 13"),
        "Dropout" if from < 12 => Some("'ratio' became an input at opset 12"),
        "Clip" if from < 11 => Some("'min' and 'max' became inputs at opset 11"),
        "Pad" if from < 11 => Some("'pads' became an input at opset 11"),
        "Resize" if from < 11 => Some("its inputs and coordinate modes changed at opset 11"),
        "Scatter" if from < 13 => Some("it was removed at opset 11 (ScatterElements)"),
        "Upsample" => Some("it was removed at opset 10 (Resize)"),
        "Slice" if from < 10 => Some("'starts' and 'ends' became inputs at opset 10"),
        "TopK" if from < 10 => Some("'k' became an input at opset 10"),
        "Add" | "Sub" | "Mul" | "Div" | "Gemm" | "PRelu" if from < 7 && (has("broadcast") || has("axis")) => {
            Some("legacy broadcasting ('broadcast', 'axis') was removed at opset 7")
        }
        "BatchNormalization" if from < 9 && has("spatial") => Some("'spatial' was removed at opset 9"),
        _ => None,
    }
}

/// A quantized weight: (initializer, per-channel axis, scale floor bits).
type WeightKey = (String, Option<usize>, u32);

/// [`quantize`] on a prepared model.
pub(crate) fn quantize_prepared(
    prepared: &Model,
    calib: &CalibrationResult,
    opts: &QuantOptions,
) -> Result<(Model, QuantReport)> {
    opts.validate()?;
    let g = &prepared.graph;
    let names_in_graph: HashSet<&str> = g.nodes.iter().map(|n| n.name.as_str()).collect();
    if let Some(bad) = opts.exclude.iter().find(|e| !names_in_graph.contains(e.as_str())) {
        let mut some: Vec<&str> = names_in_graph.iter().copied().collect();
        some.sort_unstable();
        some.truncate(8);
        qbail!(
            InvalidOptions,
            "excluded node '{bad}' is not in the prepared graph (nodes include: {})",
            some.join(", ")
        );
    }
    if opts.method.needs_histogram() && !calib.has_histograms() && !calib.tensors.is_empty() {
        qbail!(
            MissingStats,
            "method {} needs histograms, but the calibration ran without them",
            opts.method
        );
    }
    let opset_before = prepared.opset();
    if opset_before < MIN_QDQ_OPSET {
        for n in &g.nodes {
            if let Some(why) = opset_blocker(n, opset_before) {
                return Err(QuantError::at_node(
                    QuantErrorKind::Opset,
                    &n.name,
                    &n.op_type,
                    format!(
                        "cannot raise the opset from {opset_before} to {MIN_QDQ_OPSET} for QDQ: {why}; export the model at opset {MIN_QDQ_OPSET} or later"
                    ),
                ));
            }
        }
    }

    // Roles and the quantized node set.
    let roles: Vec<std::result::Result<Role, String>> = g.nodes.iter().map(|n| role(g, n)).collect();
    let quantized: Vec<bool> = g
        .nodes
        .iter()
        .zip(&roles)
        .map(|(n, r)| r.is_ok() && !opts.exclude.contains(&n.name))
        .collect();
    // Activation tensors to QDQ, and constants of compute ops.
    let mut qdq: HashSet<String> = HashSet::new();
    let mut const_q: BTreeSet<String> = BTreeSet::new();
    for ((n, r), &q) in g.nodes.iter().zip(&roles).zip(&quantized) {
        let (true, Ok(r)) = (q, r) else { continue };
        let data: Vec<usize> = match r {
            Role::Linear { acts, .. } => acts.clone(),
            Role::Compute { inputs } => inputs.clone(),
            Role::Move => vec![0],
        };
        for i in data {
            let Some(v) = n.inputs.get(i).filter(|v| !v.is_empty()) else {
                continue;
            };
            if g.initializers.contains_key(v) {
                const_q.insert(v.clone());
            } else {
                qdq.insert(v.clone());
            }
        }
        qdq.insert(n.outputs[0].clone());
    }

    let mut names = Names::new(g);
    let mut inits: BTreeMap<String, Tensor> = g.initializers.clone();
    let act_dtype = opts.activation_dtype;

    let graph_outputs: HashSet<&str> = g.outputs.iter().map(|o| o.name.as_str()).collect();
    // Activation parameters, in production order.
    let producer: HashMap<&str, usize> = g.producers();
    let mut order: Vec<String> = g
        .inputs
        .iter()
        .map(|i| i.name.clone())
        .filter(|v| qdq.contains(v))
        .collect();
    for n in &g.nodes {
        order.extend(n.outputs.iter().filter(|o| qdq.contains(*o)).cloned());
    }
    let mut act: HashMap<String, ActQ> = HashMap::new();
    for v in &order {
        let node = producer.get(v.as_str()).map(|&i| (i, &g.nodes[i]));
        let shared = match node {
            Some((i, n)) if quantized[i] && matches!(roles[i], Ok(Role::Move)) => n
                .inputs
                .first()
                .and_then(|u| act.get(u))
                .cloned()
                .map(|a| (n.inputs[0].clone(), a)),
            _ => None,
        };
        let stats = calib.tensors.get(v);
        let observed = stats.map(|s| (s.min, s.max));
        let a = if let Some((u, a)) = shared {
            ActQ {
                observed: observed.unwrap_or(a.observed),
                shared_from: Some(a.shared_from.clone().unwrap_or(u)),
                ..a
            }
        } else {
            let Some(stats) = stats else {
                let at = node
                    .map(|(_, n)| format!(" (output of node '{}')", n.name))
                    .unwrap_or_default();
                qbail!(
                    MissingStats,
                    "no calibration statistics for tensor '{v}'{at}: calibrate the same model"
                );
            };
            // Graph outputs keep their observed range: their extremes are the
            // model's answer (a classifier's top logit), not outliers.
            let method = if graph_outputs.contains(v.as_str()) {
                Method::MinMax
            } else {
                opts.method
            };
            let range = method.range(stats).map_err(|e| QuantError {
                message: format!("tensor '{v}': {}", e.message),
                ..e
            })?;
            let (scale, zp) = choose_qparams_asymmetric(range.0, range.1, act_dtype)?;
            let scale_name = names.fresh(&format!("{v}_scale"));
            let zp_name = names.fresh(&format!("{v}_zero_point"));
            inits.insert(scale_name.clone(), scale_tensor(&[scale], false)?);
            inits.insert(zp_name.clone(), zero_point_tensor(act_dtype, &[zp], false)?);
            ActQ {
                scale,
                zp,
                observed: (stats.min, stats.max),
                range,
                shared_from: None,
                scale_name,
                zp_name,
            }
        };
        act.insert(v.clone(), a);
    }

    // Where consumers read each QDQ'd value, and where producers write it.
    let graph_inputs: HashSet<&str> = g.inputs.iter().map(|o| o.name.as_str()).collect();
    let mut read_as: HashMap<String, String> = HashMap::new();
    let mut write_as: HashMap<String, String> = HashMap::new();
    let mut q_name: HashMap<String, String> = HashMap::new();
    for v in &order {
        q_name.insert(v.clone(), names.fresh(&format!("{v}_quantized")));
        if graph_outputs.contains(v.as_str()) && !graph_inputs.contains(v.as_str()) {
            // The last DequantizeLinear writes the graph output's name.
            write_as.insert(v.clone(), names.fresh(&format!("{v}_float")));
        } else {
            read_as.insert(v.clone(), names.fresh(&format!("{v}_dequantized")));
        }
    }
    let qdq_nodes = |v: &str, names: &mut Names| -> [Node; 2] {
        let a = &act[v];
        let src = write_as.get(v).cloned().unwrap_or_else(|| v.to_string());
        let dst = read_as.get(v).cloned().unwrap_or_else(|| v.to_string());
        let q = Node::new(
            &names.fresh(&format!("{v}_QuantizeLinear")),
            "QuantizeLinear",
            &[&src, &a.scale_name, &a.zp_name],
            &[&q_name[v]],
        );
        let dq = Node::new(
            &names.fresh(&format!("{v}_DequantizeLinear")),
            "DequantizeLinear",
            &[&q_name[v], &a.scale_name, &a.zp_name],
            &[&dst],
        );
        [q, dq]
    };

    let mut nodes: Vec<Node> = Vec::with_capacity(g.nodes.len() * 3);
    for i in &g.inputs {
        if qdq.contains(&i.name) {
            nodes.extend(qdq_nodes(&i.name, &mut names));
        }
    }
    // Quantized weights by (initializer, axis): DequantizeLinear output.
    let mut weight_dq: HashMap<WeightKey, (String, QParams, Tensor)> = HashMap::new();
    let mut const_dq: HashMap<String, String> = HashMap::new();
    let mut replaced: BTreeSet<String> = BTreeSet::new();
    let mut layers: Vec<LayerReport> = Vec::with_capacity(g.nodes.len());
    let range_of = |v: &str| {
        act.get(v).map(|a| ActRange {
            tensor: v.to_string(),
            observed: a.observed,
            range: a.range,
            scale: a.scale,
            zero_point: a.zp,
            shared_with: a.shared_from.clone(),
        })
    };

    for (ni, node) in g.nodes.iter().enumerate() {
        let mut n = node.clone();
        let mut report = LayerReport {
            name: node.name.clone(),
            op: node.op_type.clone(),
            status: LayerStatus::Quantized,
            weight: None,
            bias: None,
            inputs: Vec::new(),
            output: None,
        };
        match (&roles[ni], quantized[ni]) {
            (Err(why), _) => report.status = LayerStatus::NotQuantized(why.clone()),
            (Ok(_), false) => report.status = LayerStatus::Excluded,
            (Ok(r), true) => {
                let data: Vec<usize> = match r {
                    Role::Linear { acts, .. } => acts.clone(),
                    Role::Compute { inputs } => inputs.clone(),
                    Role::Move => vec![0],
                };
                for &i in &data {
                    if let Some(v) = node.inputs.get(i) {
                        if let Some(rg) = range_of(v) {
                            report.inputs.push(rg);
                        }
                    }
                }
                report.output = range_of(&node.outputs[0]);
                // Constant operands of compute ops: per-tensor, activation type.
                if let Role::Compute { inputs } = r {
                    for &i in inputs {
                        let Some(c) = node.inputs.get(i).filter(|c| const_q.contains(*c)) else {
                            continue;
                        };
                        if !const_dq.contains_key(c) {
                            let t = &g.initializers[c];
                            let xs = t.as_slice::<f32>()?;
                            let lo = xs.iter().copied().filter(|v| v.is_finite()).fold(0f32, f32::min);
                            let hi = xs.iter().copied().filter(|v| v.is_finite()).fold(0f32, f32::max);
                            let (s, z) = choose_qparams_asymmetric(lo, hi, act_dtype)?;
                            let qp = QParams::per_tensor(act_dtype, s, z);
                            let (qn, sn, zn) = (
                                names.fresh(&format!("{c}_quantized")),
                                names.fresh(&format!("{c}_scale")),
                                names.fresh(&format!("{c}_zero_point")),
                            );
                            inits.insert(qn.clone(), quantize_tensor(t, &qp)?);
                            inits.insert(sn.clone(), scale_tensor(&[s], false)?);
                            inits.insert(zn.clone(), zero_point_tensor(act_dtype, &[z], false)?);
                            let out = names.fresh(&format!("{c}_dequantized"));
                            nodes.push(Node::new(
                                &names.fresh(&format!("{c}_DequantizeLinear")),
                                "DequantizeLinear",
                                &[&qn, &sn, &zn],
                                &[&out],
                            ));
                            const_dq.insert(c.clone(), out);
                            replaced.insert(c.clone());
                        }
                        n.inputs[i] = const_dq[c].clone();
                    }
                }
                if let Role::Linear { acts, w, axis, bias } = r {
                    let wname = node.inputs[*w].clone();
                    let wt = &g.initializers[&wname];
                    // Scale floor: keeps an integer kernel's requantization
                    // multiplier s_x s_w / s_y >= 2^-24 (see quantize_weight).
                    let (s_x, s_y) = (act[&node.inputs[acts[0]]].scale, act[&node.outputs[0]].scale);
                    let floor = WEIGHT_MULTIPLIER_FLOOR * s_y / s_x;
                    let key = (wname.clone(), opts.per_channel.then_some(*axis), floor.to_bits());
                    if !weight_dq.contains_key(&key) {
                        let (wq, qp) = quantize_weight(wt, key.1, floor)?;
                        let (qn, sn, zn) = (
                            names.fresh(&format!("{wname}_quantized")),
                            names.fresh(&format!("{wname}_scale")),
                            names.fresh(&format!("{wname}_zero_point")),
                        );
                        let per_axis = qp.axis.is_some();
                        inits.insert(qn.clone(), wq.clone());
                        inits.insert(sn.clone(), scale_tensor(&qp.scale, per_axis)?);
                        inits.insert(
                            zn.clone(),
                            zero_point_tensor(DType::I8, &qp.zero_point, per_axis)?,
                        );
                        let out = names.fresh(&format!("{wname}_dequantized"));
                        let mut dq = Node::new(
                            &names.fresh(&format!("{wname}_DequantizeLinear")),
                            "DequantizeLinear",
                            &[&qn, &sn, &zn],
                            &[&out],
                        );
                        if let Some(a) = qp.axis {
                            dq.attrs.insert("axis".into(), Attribute::Int(a as i64));
                        }
                        nodes.push(dq);
                        weight_dq.insert(key.clone(), (out, qp, wq));
                        replaced.insert(wname.clone());
                    }
                    let (wout, wqp, wq) = weight_dq[&key].clone();
                    n.inputs[*w] = wout;
                    report.weight = Some(match wqp.axis {
                        Some(a) => WeightScheme::PerChannel {
                            axis: a,
                            channels: wqp.scale.len(),
                        },
                        None => WeightScheme::PerTensor,
                    });
                    if let Some(bi) = bias {
                        let x = &node.inputs[acts[0]];
                        let s_x = act[x].scale;
                        let out_ch = wt.shape()[*axis];
                        let bias_name = node.inputs.get(*bi).filter(|b| !b.is_empty()).cloned();
                        let bias_t = match &bias_name {
                            Some(b) => g.initializers.get(b).cloned(),
                            None => Some(Tensor::from_vec(vec![out_ch], vec![0f32; out_ch])?),
                        };
                        // A bias that is a float vector of the output channels.
                        let bias_t = bias_t.filter(|t| t.dtype() == DType::F32 && t.shape() == [out_ch]);
                        if let Some(mut bt) = bias_t {
                            let mut br = BiasReport {
                                corrected: false,
                                max_shift: 0.0,
                                saturated: 0,
                                added: bias_name.is_none(),
                            };
                            if opts.bias_correction {
                                if let Some(shift) = bias_shift(node, wt, &wq, &wqp, calib)? {
                                    let bs = bt.as_slice_mut::<f32>()?;
                                    for (b, d) in bs.iter_mut().zip(&shift) {
                                        *b -= *d as f32;
                                        br.max_shift = br.max_shift.max(d.abs() as f32);
                                    }
                                    br.corrected = true;
                                }
                            }
                            if bias_name.is_some() || br.corrected {
                                let scales: Vec<f32> = if wqp.axis.is_some() {
                                    wqp.scale.iter().map(|s| s * s_x).collect()
                                } else {
                                    vec![wqp.scale[0] * s_x]
                                };
                                let per_axis = scales.len() > 1 || wqp.axis.is_some();
                                let qp = QParams {
                                    dtype: DType::I32,
                                    scale: scales.clone(),
                                    zero_point: vec![0; scales.len()],
                                    axis: per_axis.then_some(0),
                                };
                                let bq = quantize_tensor(&bt, &qp)?;
                                br.saturated = bq
                                    .as_slice::<i32>()?
                                    .iter()
                                    .filter(|&&v| v == i32::MAX || v == i32::MIN)
                                    .count();
                                let hint = bias_name.clone().unwrap_or_else(|| format!("{}_bias", node.name));
                                let (qn, sn, zn) = (
                                    names.fresh(&format!("{hint}_quantized")),
                                    names.fresh(&format!("{hint}_scale")),
                                    names.fresh(&format!("{hint}_zero_point")),
                                );
                                inits.insert(qn.clone(), bq);
                                inits.insert(sn.clone(), scale_tensor(&scales, per_axis)?);
                                inits.insert(
                                    zn.clone(),
                                    zero_point_tensor(DType::I32, &qp.zero_point, per_axis)?,
                                );
                                let out = names.fresh(&format!("{hint}_dequantized"));
                                let mut dq = Node::new(
                                    &names.fresh(&format!("{hint}_DequantizeLinear")),
                                    "DequantizeLinear",
                                    &[&qn, &sn, &zn],
                                    &[&out],
                                );
                                if per_axis {
                                    dq.attrs.insert("axis".into(), Attribute::Int(0));
                                }
                                nodes.push(dq);
                                while n.inputs.len() <= *bi {
                                    n.inputs.push(String::new());
                                }
                                n.inputs[*bi] = out;
                                if let Some(b) = &bias_name {
                                    replaced.insert(b.clone());
                                }
                                report.bias = Some(br);
                            }
                        }
                    }
                }
            }
        }
        // Consumers read the dequantized values.
        for inp in n.inputs.iter_mut() {
            if let Some(r) = read_as.get(inp.as_str()) {
                *inp = r.clone();
            }
        }
        for o in n.outputs.iter_mut() {
            if let Some(w) = write_as.get(o.as_str()) {
                *o = w.clone();
            }
        }
        nodes.push(n);
        for o in &node.outputs {
            if qdq.contains(o) {
                nodes.extend(qdq_nodes(o, &mut names));
            }
        }
        layers.push(report);
    }

    // Drop the float initializers nothing reads any more.
    let still_read: HashSet<&str> = nodes
        .iter()
        .flat_map(|n| n.inputs.iter().map(|s| s.as_str()))
        .collect();
    for r in &replaced {
        if !still_read.contains(r.as_str()) && !graph_outputs.contains(r.as_str()) {
            inits.remove(r);
        }
    }

    let mut out = prepared.clone();
    out.graph.nodes = nodes;
    out.graph.initializers = inits;
    out.graph.value_types.clear();
    if opset_before < MIN_QDQ_OPSET {
        for o in out.opsets.iter_mut() {
            if o.domain.is_empty() || o.domain == "ai.onnx" {
                o.version = MIN_QDQ_OPSET;
            }
        }
    }
    out.graph.validate()?;
    kiln_ir::infer::infer_types(&mut out)?;
    kiln_ir::infer::check_supported(&out)?;

    let quantized_layers = layers
        .iter()
        .filter(|l| l.status == LayerStatus::Quantized)
        .count();
    let report = QuantReport {
        method: opts.method,
        activation_dtype: act_dtype,
        per_channel: opts.per_channel,
        bias_correction: opts.bias_correction,
        fp32_layers: layers.len() - quantized_layers,
        quantized_layers,
        qdq_tensors: order.len(),
        opset: (opset_before, out.opset()),
        layers,
    };
    Ok((out, report))
}

/// The bias correction shift of a Conv/Gemm node, if its input channel means
/// are known: `(W_q - W) E[x]` per output channel.
fn bias_shift(
    node: &Node,
    w: &Tensor,
    wq_int: &Tensor,
    qp: &QParams,
    calib: &CalibrationResult,
) -> Result<Option<Vec<f64>>> {
    let Some(cm) = calib.channel_means.get(&node.name) else {
        return Ok(None);
    };
    let wdq = dequantize_tensor(wq_int, qp)?;
    let (wf, wd) = (w.as_slice::<f32>()?, wdq.as_slice::<f32>()?);
    Ok(match node.op_type.as_str() {
        "Conv" | "FusedConv" => {
            let group = node.attr_int("group", 1)?;
            if group < 1 {
                return Ok(None);
            }
            conv_bias_shift(wf, wd, w.shape(), group as usize, &cm.mean)
        }
        "Gemm" | "FusedGemm" => {
            gemm_bias_shift(wf, wd, w.shape(), node.attr_int("transB", 0)? != 0, &cm.mean)
        }
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [-1, 1).
    fn vals(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed | 1;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Direct convolution (no padding, stride 1) of a constant input
    /// `x[c] = mean[c]` at one output position: `sum_{c, k} w[m, c, k] x[g(m) C/g + c]`.
    fn conv_at_constant(w: &[f32], shape: &[usize], group: usize, mean: &[f64]) -> Vec<f64> {
        let (m, cg) = (shape[0], shape[1]);
        let k: usize = shape[2..].iter().product();
        (0..m)
            .map(|o| {
                let g = o / (m / group);
                (0..cg)
                    .flat_map(|c| (0..k).map(move |t| (c, t)))
                    .map(|(c, t)| w[(o * cg + c) * k + t] as f64 * mean[g * cg + c])
                    .sum()
            })
            .collect()
    }

    #[test]
    fn conv_bias_shift_is_the_output_shift_on_a_constant_input() {
        for (shape, group) in [
            (vec![6usize, 4, 3, 3], 1usize),
            (vec![6, 2, 3, 3], 2),
            (vec![8, 1, 3, 3], 8), // depthwise
            (vec![4, 3, 1, 1], 1),
        ] {
            let n: usize = shape.iter().product();
            let w = Tensor::from_vec(shape.clone(), vals(n, 3)).unwrap();
            let (wq, qp) = quantize_weight(&w, Some(0), 0.0).unwrap();
            let wd = dequantize_tensor(&wq, &qp).unwrap();
            let c = shape[1] * group;
            let mean: Vec<f64> = (0..c).map(|i| 0.5 + i as f64 * 0.3).collect();
            let (wf, wdf) = (w.to_f32_vec(), wd.to_f32_vec());
            let shift = conv_bias_shift(&wf, &wdf, &shape, group, &mean).unwrap();
            let y = conv_at_constant(&wf, &shape, group, &mean);
            let yq = conv_at_constant(&wdf, &shape, group, &mean);
            for (o, s) in shift.iter().enumerate() {
                assert!((yq[o] - y[o] - s).abs() < 1e-9, "{shape:?} g{group} ch {o}");
            }
            assert!(shift.iter().any(|s| s.abs() > 1e-6));
        }
        // Mismatched means or groups: no correction.
        assert!(conv_bias_shift(&[0.0; 8], &[0.0; 8], &[2, 4, 1, 1], 1, &[0.0; 3]).is_none());
        assert!(conv_bias_shift(&[0.0; 8], &[0.0; 8], &[2, 4, 1, 1], 3, &[0.0; 12]).is_none());
    }

    #[test]
    fn gemm_bias_shift_both_layouts() {
        let (k, n) = (5usize, 3usize);
        let b = vals(k * n, 7);
        let bq: Vec<f32> = b.iter().map(|v| (v * 10.0).round() / 10.0).collect();
        let mean: Vec<f64> = (0..k).map(|i| i as f64 - 1.5).collect();
        // B is [K, N].
        let s = gemm_bias_shift(&b, &bq, &[k, n], false, &mean).unwrap();
        for (j, sj) in s.iter().enumerate() {
            let want: f64 = (0..k)
                .map(|i| (bq[i * n + j] - b[i * n + j]) as f64 * mean[i])
                .sum();
            assert!((sj - want).abs() < 1e-12);
        }
        // transB: B is [N, K].
        let s = gemm_bias_shift(&b, &bq, &[n, k], true, &mean).unwrap();
        for (j, sj) in s.iter().enumerate() {
            let want: f64 = (0..k)
                .map(|i| (bq[j * k + i] - b[j * k + i]) as f64 * mean[i])
                .sum();
            assert!((sj - want).abs() < 1e-12);
        }
        assert!(gemm_bias_shift(&b, &bq, &[k, n], true, &mean).is_none());
    }

    #[test]
    fn weight_scales_symmetric_per_channel_with_floor() {
        let mut v = vals(2 * 3 * 2, 5);
        for x in &mut v[6..] {
            *x *= 1e-12; // a dead channel
        }
        let w = Tensor::from_vec(vec![2, 3, 2], v.clone()).unwrap();
        let (q, qp) = quantize_weight(&w, Some(0), 1e-6).unwrap();
        let absmax0 = v[..6].iter().fold(0f32, |m, x| m.max(x.abs()));
        assert_eq!(qp.scale[0], absmax0 / 127.0);
        assert_eq!(qp.scale[1], 1e-6);
        assert_eq!(qp.zero_point, [0, 0]);
        let q = q.as_slice::<i8>().unwrap();
        assert!(q[..6].iter().any(|&x| x.abs() == 127) && q[..6].iter().all(|&x| x != -128));
        assert!(q[6..].iter().all(|&x| x == 0));
        // Per tensor.
        let (_, qp) = quantize_weight(&w, None, 0.0).unwrap();
        assert_eq!((qp.scale.len(), qp.axis), (1, None));
    }
}
