//! Lowering of QDQ graphs onto integer kernels.
//!
//! A quantized ONNX model in QDQ format (made by kiln's quantizer or by ONNX
//! Runtime's `quantize_static`) computes in float between
//! `DequantizeLinear` (DQ) and `QuantizeLinear` (Q) nodes. [`lower_qdq`]
//! finds the patterns `DQ → op [→ Relu/Clip] → Q` whose quantization
//! parameters are constants and replaces each by one integer op of domain
//! `"kiln"` (see [`kiln_ir::ops::qint`]) that reads the 8-bit input directly
//! and writes the 8-bit output the `Q` wrote, so 8-bit tensors flow from op
//! to op and every product accumulates in `i32`:
//!
//! | pattern (inputs from DQ, output into Q)            | integer op |
//! |----------------------------------------------------|------------|
//! | `Conv`/`FusedConv` (2-D) with int8/uint8 weights, optional bias, `Relu`/`Clip` activation | `QConv` |
//! | `Gemm` (alpha = beta = 1, transA = 0) / `MatMul` with constant 2-D weights, `FusedGemm`/`FusedMatMul` | `QGemm` |
//! | `Add` / `Mul` of two 8-bit tensors (optional `Relu`/`Clip`) | `QAdd` / `QMul` |
//! | any element-wise op of one 8-bit input (`Sigmoid`, `HardSigmoid`, `HardSwish`, `Relu`, `Clip`, `LeakyRelu`, `Tanh`..., or a binary op with a constant scalar) | `QLut` (table = the float op on all 256 inputs) |
//! | `GlobalAveragePool`                                | `QGlobalAveragePool` |
//! | `Concat` (inputs requantized by `QLut` where their scale differs) | `Concat` on integers |
//! | data movement (`Reshape`, `Flatten`, `Squeeze`, `Unsqueeze`, `Transpose`, `MaxPool`, `Identity`, nearest `Resize`) with equal input and output parameters | the same op on integers |
//!
//! Anything else keeps its DQ → float op → Q form and runs in float (for
//! example `Softmax`, `AveragePool`, linear `Resize`): correct, just not
//! integer; the [`QdqReport`] lists such nodes. DQ nodes left without
//! readers are removed.

use kiln_ir::ops::qint::{ONNX_INT8, ONNX_UINT8};
use kiln_ir::ops::{self};
use kiln_ir::quant::{qrange, quantize_multiplier, quantize_value, QParams};
use kiln_ir::{Attribute, DType, Model, Node, Tensor};
use std::collections::{BTreeMap, HashMap, HashSet};

/// What [`lower_qdq`] did.
#[derive(Debug, Clone, Default)]
pub struct QdqReport {
    /// Integer ops created, by op type.
    pub lowered: BTreeMap<String, usize>,
    /// Nodes between DQ and Q left in float: `(node name, op type)`.
    pub float_nodes: Vec<(String, String)>,
}

impl QdqReport {
    /// Total number of integer ops created.
    pub fn lowered_total(&self) -> usize {
        self.lowered.values().sum()
    }
}

/// What differs between the conv and the matrix-product lowering.
struct Linear<'a> {
    /// Integer op type.
    op: &'static str,
    /// Name of the input zero-point attribute.
    zp_attr: &'static str,
    /// Attributes copied from the float node.
    copy_attrs: &'a [&'a str],
    /// The float node's bias input, if the op has one.
    bias: Option<String>,
}

/// A DQ node's facts.
#[derive(Debug, Clone)]
struct Dq {
    /// The integer input value.
    q: String,
    qp: QParams,
}

/// Element-wise ops of one input that a lookup table replaces.
const UNARY: &[&str] = &[
    "Sigmoid",
    "HardSigmoid",
    "HardSwish",
    "Relu",
    "Clip",
    "LeakyRelu",
    "Tanh",
    "Elu",
    "Selu",
    "Celu",
    "Softplus",
    "Softsign",
    "Exp",
    "Log",
    "Neg",
    "Abs",
    "Sqrt",
    "Reciprocal",
    "Erf",
    "Gelu",
    "Mish",
    "ThresholdedRelu",
    "Floor",
    "Ceil",
    "Round",
];

/// Ops that move 8-bit data without changing values.
const MOVE: &[&str] = &[
    "Reshape",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
    "Transpose",
    "MaxPool",
    "Identity",
    "Resize",
];

struct Lowerer<'m> {
    model: &'m mut Model,
    opset: i64,
    dq: HashMap<String, Dq>,
    /// value → its readers: (node index, input slot).
    readers: HashMap<String, Vec<(usize, usize)>>,
    outputs: HashSet<String>,
    removed: HashSet<usize>,
    /// Replacement nodes by the index of the node they replace, plus nodes
    /// to insert before it.
    replaced: HashMap<usize, Vec<Node>>,
    new_inits: Vec<(String, Tensor)>,
    report: QdqReport,
}

/// Lowers the QDQ patterns of `model` onto kiln's integer ops, in place.
///
/// A model without `DequantizeLinear` nodes is left unchanged. Errors only for
/// inconsistent quantization parameters that the ops themselves would reject
/// (e.g. a multiplier out of range); unsupported patterns stay in float.
pub fn lower_qdq(model: &mut Model) -> kiln_ir::Result<QdqReport> {
    if !model.graph.nodes.iter().any(|n| is_std(n, "DequantizeLinear")) {
        return Ok(QdqReport::default());
    }
    let opset = model.opset();
    let mut l = Lowerer {
        model,
        opset,
        dq: HashMap::new(),
        readers: HashMap::new(),
        outputs: HashSet::new(),
        removed: HashSet::new(),
        replaced: HashMap::new(),
        new_inits: Vec::new(),
        report: QdqReport::default(),
    };
    l.scan()?;
    for i in 0..l.model.graph.nodes.len() {
        if l.removed.contains(&i) {
            continue;
        }
        l.try_lower(i)?;
    }
    l.finish()
}

fn is_std(n: &Node, op: &str) -> bool {
    n.op_type == op && (n.domain.is_empty() || n.domain == "ai.onnx")
}

fn is_kiln(n: &Node, op: &str) -> bool {
    n.op_type == op && n.domain == "kiln"
}

fn dtype_code(dt: DType) -> i64 {
    if dt == DType::I8 {
        ONNX_INT8
    } else {
        ONNX_UINT8
    }
}

impl<'m> Lowerer<'m> {
    fn init(&self, name: &str) -> Option<&Tensor> {
        self.model.graph.initializers.get(name)
    }

    /// Quantization parameters of a Q or DQ node from its constant inputs.
    /// `data_dtype`: the integer type when known (DQ input); Q's output type
    /// comes from its zero point (uint8 when omitted, or `output_dtype`).
    fn qparams(&self, n: &Node, data_dtype: Option<DType>, data_rank: Option<usize>) -> Option<QParams> {
        let scale = self.init(n.inputs.get(1)?)?;
        if !scale.dtype().is_float() {
            return None;
        }
        let scales = scale.to_f32_vec();
        if scales.is_empty() || scales.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return None;
        }
        let zp_name = n.inputs.get(2).filter(|s| !s.is_empty());
        let (dtype, zps) = match zp_name {
            Some(z) => {
                let zt = self.init(z)?;
                (
                    zt.dtype(),
                    zt.to_i64_vec()
                        .ok()?
                        .into_iter()
                        .map(|v| v as i32)
                        .collect::<Vec<_>>(),
                )
            }
            None => {
                let dt = match data_dtype {
                    Some(d) => d,
                    None => match n.attr_int("output_dtype", 0).ok()? {
                        0 | 2 => DType::U8,
                        3 => DType::I8,
                        _ => return None,
                    },
                };
                (dt, vec![0; scales.len()])
            }
        };
        if !matches!(dtype, DType::U8 | DType::I8 | DType::I32) || zps.len() != scales.len() {
            return None;
        }
        if n.attr_int("block_size", 0).ok()? != 0 {
            return None;
        }
        let axis = if scales.len() == 1 && scale.rank() <= 1 {
            None
        } else {
            let a = n.attr_int("axis", 1).ok()?;
            let r = data_rank? as i64;
            let a = if a < 0 { a + r } else { a };
            if !(0..r).contains(&a) {
                return None;
            }
            Some(a as usize)
        };
        Some(QParams {
            dtype,
            scale: scales,
            zero_point: zps,
            axis,
        })
    }

    fn scan(&mut self) -> kiln_ir::Result<()> {
        let g = &self.model.graph;
        for o in &g.outputs {
            self.outputs.insert(o.name.clone());
        }
        // dtype/rank of integer values: initializers, then Q outputs.
        let mut int_types: HashMap<String, (DType, Option<usize>)> = HashMap::new();
        for (k, t) in &g.initializers {
            int_types.insert(k.clone(), (t.dtype(), Some(t.rank())));
        }
        for i in &g.inputs {
            int_types.insert(i.name.clone(), (i.ty.dtype, i.ty.rank()));
        }
        let mut dq = HashMap::new();
        for (ni, n) in g.nodes.iter().enumerate() {
            for (slot, inp) in n.inputs.iter().enumerate() {
                if !inp.is_empty() {
                    self.readers.entry(inp.clone()).or_default().push((ni, slot));
                }
            }
            if is_std(n, "QuantizeLinear") && n.outputs.len() == 1 {
                if let Some(qp) = self.qparams(n, None, None) {
                    int_types.insert(n.outputs[0].clone(), (qp.dtype, None));
                }
            } else if is_std(n, "DequantizeLinear") && n.outputs.len() == 1 {
                let x = &n.inputs[0];
                let (dt, rank) = match int_types.get(x) {
                    Some(&(d, r)) => (Some(d), r),
                    None => (None, None),
                };
                let rank = rank.or_else(|| g.value_types.get(x).and_then(|t| t.rank()));
                if let Some(qp) = self.qparams(n, dt, rank) {
                    dq.insert(n.outputs[0].clone(), Dq { q: x.clone(), qp });
                }
            }
        }
        self.dq = dq;
        Ok(())
    }

    /// The only reader of `v`, if exactly one and `v` is not a graph output.
    fn sole_reader(&self, v: &str) -> Option<usize> {
        if self.outputs.contains(v) {
            return None;
        }
        match self.readers.get(v).map(|r| r.as_slice()) {
            Some([(ni, _)]) if !self.removed.contains(ni) => Some(*ni),
            _ => None,
        }
    }

    /// A per-tensor 8-bit DQ feeding `v`.
    fn act_dq(&self, v: &str) -> Option<Dq> {
        let d = self.dq.get(v)?;
        (d.qp.is_per_tensor() && matches!(d.qp.dtype, DType::U8 | DType::I8)).then(|| d.clone())
    }

    /// Follows `v` through an optional Relu/Clip into a per-tensor Q.
    /// Returns (activation node, Q node, Q params, clamp lo/hi in the Q domain).
    fn output_q(&self, v: &str, allow_act: bool) -> Option<(Option<usize>, usize, QParams, i32, i32)> {
        let r = self.sole_reader(v)?;
        let n = &self.model.graph.nodes[r];
        let (act, qi) = if allow_act && (is_std(n, "Relu") || is_std(n, "Clip")) {
            (Some(r), self.sole_reader(&n.outputs[0])?)
        } else {
            (None, r)
        };
        let qn = &self.model.graph.nodes[qi];
        if !is_std(qn, "QuantizeLinear") || qn.outputs.len() != 1 {
            return None;
        }
        let qp = self.qparams(qn, None, None)?;
        if !qp.is_per_tensor() || !matches!(qp.dtype, DType::U8 | DType::I8) {
            return None;
        }
        let (qmin, qmax) = qrange(qp.dtype).ok()?;
        let (mut lo, mut hi) = (qmin, qmax);
        if let Some(a) = act {
            let (amin, amax) = self.act_bounds(&self.model.graph.nodes[a])?;
            let q = |x: f32| quantize_value(x, qp.scale[0], qp.zero_point[0], qmin, qmax);
            if amin > f32::NEG_INFINITY {
                lo = q(amin);
            }
            if amax < f32::INFINITY {
                hi = q(amax);
            }
        }
        Some((act, qi, qp, lo, hi))
    }

    /// Bounds of a Relu or Clip node (constants only).
    fn act_bounds(&self, n: &Node) -> Option<(f32, f32)> {
        if is_std(n, "Relu") {
            return Some((0.0, f32::INFINITY));
        }
        if self.opset < 11 {
            return Some((
                n.attr_float("min", f32::NEG_INFINITY).ok()?,
                n.attr_float("max", f32::INFINITY).ok()?,
            ));
        }
        let bound = |i: usize, d: f32| -> Option<f32> {
            match n.inputs.get(i).filter(|s| !s.is_empty()) {
                None => Some(d),
                Some(s) => self
                    .init(s)
                    .map(|t| t.to_f32_vec())
                    .and_then(|v| v.first().copied()),
            }
        };
        Some((bound(1, f32::NEG_INFINITY)?, bound(2, f32::INFINITY)?))
    }

    /// Bounds of a fused op's activation attribute (only "" / Relu / Clip).
    fn fused_bounds(n: &Node) -> Option<(f32, f32)> {
        let act = n.attr_string("activation", "").ok()?;
        let p = n.attr_floats_opt("activation_params").ok()?.unwrap_or_default();
        match act.as_str() {
            "" => Some((f32::NEG_INFINITY, f32::INFINITY)),
            "Relu" => Some((0.0, f32::INFINITY)),
            "Clip" if p.len() == 2 => Some((p[0], p[1])),
            _ => None,
        }
    }

    fn mark_float(&mut self, i: usize) {
        let n = &self.model.graph.nodes[i];
        self.report.float_nodes.push((n.name.clone(), n.op_type.clone()));
    }

    fn add_init(&mut self, base: &str, t: Tensor) -> String {
        let mut name = base.to_string();
        let mut k = 0;
        while self.model.graph.initializers.contains_key(&name)
            || self.new_inits.iter().any(|(n, _)| *n == name)
        {
            k += 1;
            name = format!("{base}_{k}");
        }
        self.new_inits.push((name.clone(), t));
        name
    }

    fn replace(&mut self, i: usize, extra_removed: &[usize], nodes: Vec<Node>) {
        for &r in extra_removed {
            self.removed.insert(r);
        }
        self.removed.insert(i);
        let op = nodes.last().map(|n| n.op_type.clone()).unwrap_or_default();
        *self.report.lowered.entry(op).or_default() += 1;
        self.replaced.insert(i, nodes);
    }

    fn try_lower(&mut self, i: usize) -> kiln_ir::Result<()> {
        let n = self.model.graph.nodes[i].clone();
        let std = n.domain.is_empty() || n.domain == "ai.onnx";
        let any_dq_input = n.inputs.iter().any(|v| self.dq.contains_key(v));
        if !any_dq_input || is_std(&n, "QuantizeLinear") || is_std(&n, "DequantizeLinear") {
            return Ok(());
        }
        let done = if (std && n.op_type == "Conv") || is_kiln(&n, "FusedConv") {
            self.lower_conv(i, &n)?
        } else if (std && (n.op_type == "Gemm" || n.op_type == "MatMul"))
            || is_kiln(&n, "FusedGemm")
            || is_kiln(&n, "FusedMatMul")
        {
            self.lower_gemm(i, &n)?
        } else if std && (n.op_type == "Add" || n.op_type == "Mul") && self.lower_binary(i, &n)? {
            true
        } else if std && (UNARY.contains(&n.op_type.as_str()) || is_binary_with_scalar(&n)) {
            self.lower_lut(i, &n)?
        } else if std && n.op_type == "GlobalAveragePool" {
            self.lower_gap(i, &n)?
        } else if std && n.op_type == "Concat" {
            self.lower_concat(i, &n)?
        } else if std && MOVE.contains(&n.op_type.as_str()) {
            self.lower_move(i, &n)?
        } else {
            false
        };
        if !done {
            self.mark_float(i);
        }
        Ok(())
    }

    /// Weight DQ: constant 8-bit data; returns (int tensor, params).
    fn weight(&self, v: &str) -> Option<(Tensor, QParams)> {
        let d = self.dq.get(v)?;
        let t = self.init(&d.q)?;
        matches!(t.dtype(), DType::I8 | DType::U8).then(|| (t.clone(), d.qp.clone()))
    }

    /// Integer bias at scale `sx * sw[m]`, from a DQ'd int32 or a float constant.
    fn bias(&self, v: Option<&String>, sx: f32, sw: &[f32], m: usize) -> Option<Option<Tensor>> {
        let Some(v) = v.filter(|s| !s.is_empty()) else {
            return Some(None);
        };
        let real: Vec<f32> = if let Some(d) = self.dq.get(v) {
            let t = self.init(&d.q)?;
            kiln_ir::quant::dequantize_tensor(t, &d.qp).ok()?.to_f32_vec()
        } else {
            self.init(v)?.to_f32_vec()
        };
        if real.len() != m {
            return None;
        }
        let b: Vec<i32> = real
            .iter()
            .enumerate()
            .map(|(o, &r)| {
                let s = sx as f64 * sw[if sw.len() == 1 { 0 } else { o }] as f64;
                (r as f64 / s)
                    .round_ties_even()
                    .clamp(i32::MIN as f64, i32::MAX as f64) as i32
            })
            .collect();
        Some(Some(Tensor::from_vec(vec![m], b).ok()?))
    }

    fn mult_attrs(node: Node, pre: &str, reals: &[f64]) -> kiln_ir::Result<Node> {
        let mut ms = Vec::with_capacity(reals.len());
        let mut es = Vec::with_capacity(reals.len());
        for &r in reals {
            let (m, e) = quantize_multiplier(r).map_err(|e| e.at_node(&node.name, &node.op_type))?;
            ms.push(m as i64);
            es.push(e as i64);
        }
        Ok(node
            .with_attr(&format!("{pre}multiplier"), Attribute::Ints(ms))
            .with_attr(&format!("{pre}shift"), Attribute::Ints(es)))
    }

    fn out_attrs(node: Node, qp: &QParams, lo: i32, hi: i32) -> Node {
        node.with_attr("output_dtype", Attribute::Int(dtype_code(qp.dtype)))
            .with_attr("y_zero_point", Attribute::Int(qp.zero_point[0] as i64))
            .with_attr("y_min", Attribute::Int(lo as i64))
            .with_attr("y_max", Attribute::Int(hi as i64))
    }

    fn lower_conv(&mut self, i: usize, n: &Node) -> kiln_ir::Result<bool> {
        if n.inputs.len() > 3 && !n.inputs[3].is_empty() {
            return Ok(false); // residual Z
        }
        let Some(x) = self.act_dq(&n.inputs[0]) else {
            return Ok(false);
        };
        let Some((w, wqp)) = n.inputs.get(1).and_then(|v| self.weight(v)) else {
            return Ok(false);
        };
        if w.rank() != 4 || (wqp.axis.is_some() && wqp.axis != Some(0)) {
            return Ok(false);
        }
        let conv_attrs = [
            "auto_pad",
            "dilations",
            "group",
            "kernel_shape",
            "pads",
            "strides",
        ];
        let linear = Linear {
            op: "QConv",
            zp_attr: "x_zero_point",
            copy_attrs: &conv_attrs,
            bias: n.inputs.get(2).cloned(),
        };
        self.lower_linear(i, n, x, w, wqp, linear)
    }

    fn lower_gemm(&mut self, i: usize, n: &Node) -> kiln_ir::Result<bool> {
        let is_gemm = n.op_type.ends_with("Gemm");
        if is_gemm
            && (n.attr_float("alpha", 1.0)? != 1.0
                || n.attr_float("beta", 1.0)? != 1.0
                || n.attr_int("transA", 0)? != 0)
        {
            return Ok(false);
        }
        let trans_b = is_gemm && n.attr_int("transB", 0)? != 0;
        let Some(x) = self.act_dq(&n.inputs[0]) else {
            return Ok(false);
        };
        let Some((w, wqp)) = n.inputs.get(1).and_then(|v| self.weight(v)) else {
            return Ok(false);
        };
        if w.rank() != 2 {
            return Ok(false);
        }
        // Output channels live on axis 1 of [K, N], axis 0 of [N, K] (transB).
        let out_axis = if trans_b { 0 } else { 1 };
        if wqp.axis.is_some() && wqp.axis != Some(out_axis) {
            return Ok(false);
        }
        // QGemm takes W as [N, K].
        let wt = if trans_b {
            w
        } else {
            let (k, nn) = (w.shape()[0], w.shape()[1]);
            let idx = |j: usize| (j % k) * nn + j / k;
            match w.dtype() {
                DType::I8 => {
                    let s = w.as_slice::<i8>()?;
                    Tensor::from_vec(vec![nn, k], (0..nn * k).map(|j| s[idx(j)]).collect::<Vec<_>>())?
                }
                _ => {
                    let s = w.as_slice::<u8>()?;
                    Tensor::from_vec(vec![nn, k], (0..nn * k).map(|j| s[idx(j)]).collect::<Vec<_>>())?
                }
            }
        };
        let linear = Linear {
            op: "QGemm",
            zp_attr: "a_zero_point",
            copy_attrs: &[],
            bias: if is_gemm { n.inputs.get(2).cloned() } else { None },
        };
        self.lower_linear(i, n, x, wt, wqp, linear)
    }

    /// The shared tail of [`Self::lower_conv`] and [`Self::lower_gemm`]: `w`
    /// has its output channels on axis 0; finds the output Q (through a
    /// Relu/Clip, or the fused activation's bounds), quantizes the bias at
    /// `s_x * s_w[m]`, and writes the integer node with its multipliers.
    fn lower_linear(
        &mut self,
        i: usize,
        n: &Node,
        x: Dq,
        w: Tensor,
        wqp: QParams,
        linear: Linear,
    ) -> kiln_ir::Result<bool> {
        let m = w.shape()[0];
        let fused = n.domain == "kiln";
        let (fmin, fmax) = if fused {
            match Self::fused_bounds(n) {
                Some(b) => b,
                None => return Ok(false),
            }
        } else {
            (f32::NEG_INFINITY, f32::INFINITY)
        };
        let Some((act, qi, yqp, mut lo, mut hi)) = self.output_q(&n.outputs[0], !fused) else {
            return Ok(false);
        };
        let (qmin, qmax) = qrange(yqp.dtype)?;
        let qf = |v: f32| quantize_value(v, yqp.scale[0], yqp.zero_point[0], qmin, qmax);
        if fmin > f32::NEG_INFINITY {
            lo = lo.max(qf(fmin));
        }
        if fmax < f32::INFINITY {
            hi = hi.min(qf(fmax));
        }
        let Some(bias) = self.bias(linear.bias.as_ref(), x.qp.scale[0], &wqp.scale, m) else {
            return Ok(false);
        };
        let sw = |o: usize| wqp.scale[if wqp.scale.len() == 1 { 0 } else { o }] as f64;
        let reals: Vec<f64> = (0..m)
            .map(|o| x.qp.scale[0] as f64 * sw(o) / yqp.scale[0] as f64)
            .collect();
        let wname = self.add_init(&format!("{}_wq", n.name), w);
        let mut inputs = vec![x.q.clone(), wname];
        if let Some(b) = bias {
            inputs.push(self.add_init(&format!("{}_bq", n.name), b));
        }
        let qout = self.model.graph.nodes[qi].outputs[0].clone();
        let mut node = Node {
            name: n.name.clone(),
            op_type: linear.op.into(),
            domain: "kiln".into(),
            inputs,
            outputs: vec![qout],
            attrs: BTreeMap::new(),
        };
        for &k in linear.copy_attrs {
            if let Some(a) = n.attrs.get(k) {
                node.attrs.insert(k.into(), a.clone());
            }
        }
        let node = node
            .with_attr(linear.zp_attr, Attribute::Int(x.qp.zero_point[0] as i64))
            .with_attr(
                "w_zero_point",
                Attribute::Ints(wqp.zero_point.iter().map(|&z| z as i64).collect()),
            );
        let node = Self::out_attrs(Self::mult_attrs(node, "", &reals)?, &yqp, lo, hi);
        let mut extra = vec![qi];
        extra.extend(act);
        self.replace(i, &extra, vec![node]);
        Ok(true)
    }

    fn lower_binary(&mut self, i: usize, n: &Node) -> kiln_ir::Result<bool> {
        if n.inputs.len() != 2 {
            return Ok(false);
        }
        let (Some(a), Some(b)) = (self.act_dq(&n.inputs[0]), self.act_dq(&n.inputs[1])) else {
            return Ok(false);
        };
        let Some((act, qi, yqp, lo, hi)) = self.output_q(&n.outputs[0], true) else {
            return Ok(false);
        };
        let (sa, sb, sy) = (a.qp.scale[0] as f64, b.qp.scale[0] as f64, yqp.scale[0] as f64);
        let qout = self.model.graph.nodes[qi].outputs[0].clone();
        let base = Node {
            name: n.name.clone(),
            op_type: if n.op_type == "Add" { "QAdd" } else { "QMul" }.into(),
            domain: "kiln".into(),
            inputs: vec![a.q.clone(), b.q.clone()],
            outputs: vec![qout],
            attrs: BTreeMap::new(),
        }
        .with_attr("a_zero_point", Attribute::Int(a.qp.zero_point[0] as i64))
        .with_attr("b_zero_point", Attribute::Int(b.qp.zero_point[0] as i64));
        let node = if n.op_type == "Add" {
            let twice = 2.0 * sa.max(sb);
            let node = Self::mult_attrs(base, "a_", &[sa / twice])?;
            let node = Self::mult_attrs(node, "b_", &[sb / twice])?;
            Self::mult_attrs(node, "", &[twice / ((1u64 << 20) as f64 * sy)])?
        } else {
            Self::mult_attrs(base, "", &[sa * sb / sy])?
        };
        let node = Self::out_attrs(node, &yqp, lo, hi);
        let mut extra = vec![qi];
        extra.extend(act);
        self.replace(i, &extra, vec![node]);
        Ok(true)
    }

    /// Table of `f` over all 256 codes of `x`, quantized with `y`.
    fn table(
        &self,
        n: &Node,
        x: &QParams,
        y: &QParams,
        input_slot: usize,
    ) -> kiln_ir::Result<Option<Vec<i64>>> {
        let codes: Vec<i32> = if x.dtype == DType::U8 {
            (0..256).collect()
        } else {
            (-128..128).collect()
        };
        let real: Vec<f32> = codes
            .iter()
            .map(|&q| (q - x.zero_point[0]) as f32 * x.scale[0])
            .collect();
        let xt = Tensor::from_vec(vec![256], real)?;
        let mut args: Vec<Option<&Tensor>> = Vec::with_capacity(n.inputs.len());
        for (s, v) in n.inputs.iter().enumerate() {
            if s == input_slot {
                args.push(Some(&xt));
            } else if v.is_empty() {
                args.push(None);
            } else {
                match self.init(v) {
                    Some(t) => args.push(Some(t)),
                    None => return Ok(None),
                }
            }
        }
        let out = match ops::eval_node(n, self.opset, &args) {
            Ok(o) => o,
            Err(_) => return Ok(None),
        };
        let Some(o) = out.into_iter().next() else {
            return Ok(None);
        };
        if o.len() != 256 || !o.dtype().is_float() {
            return Ok(None);
        }
        let (qmin, qmax) = qrange(y.dtype)?;
        Ok(Some(
            o.to_f32_vec()
                .iter()
                .map(|&v| quantize_value(v, y.scale[0], y.zero_point[0], qmin, qmax) as i64)
                .collect(),
        ))
    }

    fn lower_lut(&mut self, i: usize, n: &Node) -> kiln_ir::Result<bool> {
        // The one non-constant input.
        let dyn_slots: Vec<usize> = n
            .inputs
            .iter()
            .enumerate()
            .filter(|(_, v)| !v.is_empty() && self.init(v).is_none())
            .map(|(s, _)| s)
            .collect();
        let [slot] = dyn_slots[..] else { return Ok(false) };
        // Constant operands must be scalars (a per-channel constant is not one table).
        if is_binary_with_scalar(n)
            && n.inputs
                .iter()
                .enumerate()
                .any(|(s, v)| s != slot && self.init(v).is_none_or(|t| t.len() != 1))
        {
            return Ok(false);
        }
        let Some(x) = self.act_dq(&n.inputs[slot]) else {
            return Ok(false);
        };
        let Some((_, qi, yqp, _, _)) = self.output_q(&n.outputs[0], false) else {
            return Ok(false);
        };
        let Some(table) = self.table(n, &x.qp, &yqp, slot)? else {
            return Ok(false);
        };
        let qout = self.model.graph.nodes[qi].outputs[0].clone();
        let node = Node {
            name: n.name.clone(),
            op_type: "QLut".into(),
            domain: "kiln".into(),
            inputs: vec![x.q.clone()],
            outputs: vec![qout],
            attrs: BTreeMap::new(),
        }
        .with_attr("table", Attribute::Ints(table))
        .with_attr("output_dtype", Attribute::Int(dtype_code(yqp.dtype)));
        self.replace(i, &[qi], vec![node]);
        Ok(true)
    }

    fn lower_gap(&mut self, i: usize, n: &Node) -> kiln_ir::Result<bool> {
        let Some(x) = self.act_dq(&n.inputs[0]) else {
            return Ok(false);
        };
        let Some((_, qi, yqp, lo, hi)) = self.output_q(&n.outputs[0], false) else {
            return Ok(false);
        };
        let qout = self.model.graph.nodes[qi].outputs[0].clone();
        let node = Node {
            name: n.name.clone(),
            op_type: "QGlobalAveragePool".into(),
            domain: "kiln".into(),
            inputs: vec![x.q.clone()],
            outputs: vec![qout],
            attrs: BTreeMap::new(),
        }
        .with_attr("x_zero_point", Attribute::Int(x.qp.zero_point[0] as i64))
        .with_attr("x_scale", Attribute::Float(x.qp.scale[0]))
        .with_attr("y_scale", Attribute::Float(yqp.scale[0]));
        let node = Self::out_attrs(node, &yqp, lo, hi);
        self.replace(i, &[qi], vec![node]);
        Ok(true)
    }

    fn lower_concat(&mut self, i: usize, n: &Node) -> kiln_ir::Result<bool> {
        let mut ins = Vec::new();
        for v in &n.inputs {
            match self.act_dq(v) {
                Some(d) => ins.push(d),
                None => return Ok(false),
            }
        }
        let Some((_, qi, yqp, _, _)) = self.output_q(&n.outputs[0], false) else {
            return Ok(false);
        };
        if ins.iter().any(|d| d.qp.dtype != yqp.dtype) {
            return Ok(false);
        }
        let (qmin, qmax) = qrange(yqp.dtype)?;
        let mut nodes = Vec::new();
        let mut inputs = Vec::new();
        for (k, d) in ins.iter().enumerate() {
            if d.qp.scale == yqp.scale && d.qp.zero_point == yqp.zero_point {
                inputs.push(d.q.clone());
                continue;
            }
            let codes: Vec<i32> = if d.qp.dtype == DType::U8 {
                (0..256).collect()
            } else {
                (-128..128).collect()
            };
            let table: Vec<i64> = codes
                .iter()
                .map(|&q| {
                    let r = (q - d.qp.zero_point[0]) as f32 * d.qp.scale[0];
                    quantize_value(r, yqp.scale[0], yqp.zero_point[0], qmin, qmax) as i64
                })
                .collect();
            let out = format!("{}_requant{k}", n.name);
            nodes.push(
                Node {
                    name: out.clone(),
                    op_type: "QLut".into(),
                    domain: "kiln".into(),
                    inputs: vec![d.q.clone()],
                    outputs: vec![out.clone()],
                    attrs: BTreeMap::new(),
                }
                .with_attr("table", Attribute::Ints(table))
                .with_attr("output_dtype", Attribute::Int(dtype_code(yqp.dtype))),
            );
            inputs.push(out);
        }
        let mut c = n.clone();
        c.inputs = inputs;
        c.outputs = vec![self.model.graph.nodes[qi].outputs[0].clone()];
        nodes.push(c);
        self.replace(i, &[qi], nodes);
        Ok(true)
    }

    fn lower_move(&mut self, i: usize, n: &Node) -> kiln_ir::Result<bool> {
        if n.op_type == "Resize" && n.attr_string("mode", "nearest")? != "nearest" {
            return Ok(false);
        }
        if n.op_type == "MaxPool" && (self.opset < 12 || n.outputs.len() > 1 && !n.outputs[1].is_empty()) {
            return Ok(false);
        }
        let Some(x) = self.act_dq(&n.inputs[0]) else {
            return Ok(false);
        };
        // Other inputs (shapes, axes, scales) must not be DQ'd tensors.
        if n.inputs[1..].iter().any(|v| self.dq.contains_key(v)) {
            return Ok(false);
        }
        let Some((_, qi, yqp, _, _)) = self.output_q(&n.outputs[0], false) else {
            return Ok(false);
        };
        if yqp != x.qp {
            return Ok(false);
        }
        let mut c = n.clone();
        c.inputs[0] = x.q.clone();
        c.outputs[0] = self.model.graph.nodes[qi].outputs[0].clone();
        self.replace(i, &[qi], vec![c]);
        Ok(true)
    }

    fn finish(mut self) -> kiln_ir::Result<QdqReport> {
        let g = &mut self.model.graph;
        let old = std::mem::take(&mut g.nodes);
        for (i, n) in old.into_iter().enumerate() {
            if let Some(rep) = self.replaced.remove(&i) {
                g.nodes.extend(rep);
            } else if !self.removed.contains(&i) {
                g.nodes.push(n);
            }
        }
        for (k, t) in self.new_inits {
            g.initializers.insert(k, t);
        }
        // Remove nodes whose outputs nobody reads (orphaned DQs), to a fixed point.
        loop {
            let mut used: HashSet<&str> = g.outputs.iter().map(|o| o.name.as_str()).collect();
            for n in &g.nodes {
                for v in &n.inputs {
                    used.insert(v.as_str());
                }
            }
            let before = g.nodes.len();
            let keep: Vec<bool> = g
                .nodes
                .iter()
                .map(|n| {
                    n.outputs
                        .iter()
                        .any(|o| !o.is_empty() && used.contains(o.as_str()))
                })
                .collect();
            let mut it = keep.into_iter();
            g.nodes.retain(|_| it.next().unwrap_or(true));
            if g.nodes.len() == before {
                break;
            }
        }
        let mut used: HashSet<String> = HashSet::new();
        for n in &g.nodes {
            used.extend(n.inputs.iter().cloned());
        }
        used.extend(g.outputs.iter().map(|o| o.name.clone()));
        g.initializers.retain(|k, _| used.contains(k));
        g.value_types.clear();
        if !self.model.opsets.iter().any(|o| o.domain == "kiln") {
            self.model.opsets.push(kiln_ir::OpsetImport {
                domain: "kiln".into(),
                version: 1,
            });
        }
        self.model.graph.topo_sort()?;
        Ok(self.report)
    }
}

fn is_binary_with_scalar(n: &Node) -> bool {
    matches!(
        n.op_type.as_str(),
        "Add" | "Sub" | "Mul" | "Div" | "Pow" | "Max" | "Min"
    ) && n.inputs.len() == 2
}
