//! What [`crate::quantize`] did, per layer, as data and as a table.

use crate::observer::Method;
use kiln_ir::DType;
use std::fmt;

/// How a layer's weights were quantized (always int8, symmetric, zero point 0,
/// restricted range `[-127, 127]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightScheme {
    /// One scale per index of `axis` of the weight tensor.
    PerChannel {
        /// Axis of the weight holding the output channels.
        axis: usize,
        /// Number of channels (scales).
        channels: usize,
    },
    /// One scale for the whole tensor.
    PerTensor,
}

impl fmt::Display for WeightScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WeightScheme::PerChannel { axis, channels } => write!(f, "int8/ch{axis}x{channels}"),
            WeightScheme::PerTensor => f.write_str("int8/tensor"),
        }
    }
}

/// The quantization of one activation tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct ActRange {
    /// Value name (in the prepared graph).
    pub tensor: String,
    /// Observed `[min, max]` over the calibration set.
    pub observed: (f32, f32),
    /// The range the method chose (before the extension to contain 0).
    pub range: (f32, f32),
    /// Scale.
    pub scale: f32,
    /// Zero point.
    pub zero_point: i32,
    /// For the output of a data-movement op: the tensor whose parameters it
    /// shares (the first one up the chain).
    pub shared_with: Option<String>,
}

/// What happened to a layer's bias.
#[derive(Debug, Clone, PartialEq)]
pub struct BiasReport {
    /// Bias correction applied.
    pub corrected: bool,
    /// Largest `|shift|` subtracted from a channel's bias.
    pub max_shift: f32,
    /// Channels whose int32 bias saturated (`|b| / (s_x s_w) >= 2^31`).
    pub saturated: usize,
    /// The layer had no bias; a corrected zero bias was added.
    pub added: bool,
}

/// A layer's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerStatus {
    /// Inputs and output quantized (and weights, for Conv/Gemm/MatMul).
    Quantized,
    /// Kept in fp32 because the options exclude it.
    Excluded,
    /// Kept in fp32: the op is not one kiln quantizes, or its data is not
    /// float, or its weights are not constant (the reason).
    NotQuantized(String),
}

/// One node of the prepared graph.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerReport {
    /// Node name (kept in the quantized graph).
    pub name: String,
    /// Op type.
    pub op: String,
    /// Quantized or why not.
    pub status: LayerStatus,
    /// Weight scheme, for quantized Conv/Gemm/MatMul.
    pub weight: Option<WeightScheme>,
    /// Bias handling, for quantized Conv/Gemm with a bias.
    pub bias: Option<BiasReport>,
    /// Quantized activation inputs.
    pub inputs: Vec<ActRange>,
    /// Quantized output.
    pub output: Option<ActRange>,
}

/// What [`crate::quantize`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantReport {
    /// Range method.
    pub method: Method,
    /// Activation element type.
    pub activation_dtype: DType,
    /// Weights per channel.
    pub per_channel: bool,
    /// Bias correction on.
    pub bias_correction: bool,
    /// One entry per node of the prepared graph, in order.
    pub layers: Vec<LayerReport>,
    /// Nodes quantized.
    pub quantized_layers: usize,
    /// Nodes left in fp32 (excluded or not quantizable).
    pub fp32_layers: usize,
    /// Activation tensors with a QuantizeLinear/DequantizeLinear pair.
    pub qdq_tensors: usize,
    /// Default-domain opset before and after.
    pub opset: (i64, i64),
}

impl QuantReport {
    /// The layer named `name`.
    pub fn layer(&self, name: &str) -> Option<&LayerReport> {
        self.layers.iter().find(|l| l.name == name)
    }
    /// Names of the quantized layers.
    pub fn quantized_names(&self) -> Vec<&str> {
        self.layers
            .iter()
            .filter(|l| l.status == LayerStatus::Quantized)
            .map(|l| l.name.as_str())
            .collect()
    }
}

fn range(r: &ActRange) -> String {
    let shared = r
        .shared_with
        .as_ref()
        .map(|s| format!(" (= {s})"))
        .unwrap_or_default();
    format!("[{:.4}, {:.4}]{shared}", r.range.0, r.range.1)
}

impl fmt::Display for QuantReport {
    /// A header line, then one row per node: name, op, status, weights,
    /// bias, the chosen input ranges and the output range.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "method {}, activations {} per tensor, weights int8 {}, bias correction {}, opset {} -> {}",
            self.method,
            self.activation_dtype,
            if self.per_channel {
                "per channel"
            } else {
                "per tensor"
            },
            if self.bias_correction { "on" } else { "off" },
            self.opset.0,
            self.opset.1
        )?;
        writeln!(
            f,
            "{} layers quantized, {} in fp32, {} activation tensors with Q/DQ",
            self.quantized_layers, self.fp32_layers, self.qdq_tensors
        )?;
        let w = self
            .layers
            .iter()
            .map(|l| l.name.len())
            .max()
            .unwrap_or(4)
            .clamp(4, 48);
        writeln!(
            f,
            "{:<w$}  {:<17}  {:<10}  {:<15}  {:<15}  {:<28}  output range",
            "layer", "op", "status", "weights", "bias", "input range(s)"
        )?;
        for l in &self.layers {
            let status = match &l.status {
                LayerStatus::Quantized => "int8".to_string(),
                LayerStatus::Excluded => "fp32 excl".to_string(),
                LayerStatus::NotQuantized(_) => "fp32".to_string(),
            };
            let weights = l.weight.map(|s| s.to_string()).unwrap_or_else(|| "-".into());
            let bias = match &l.bias {
                Some(b) if b.corrected => format!("int32 bc {:.1e}", b.max_shift),
                Some(_) => "int32".into(),
                None => "-".into(),
            };
            let ins = if l.inputs.is_empty() {
                match &l.status {
                    LayerStatus::NotQuantized(why) => why.clone(),
                    _ => "-".into(),
                }
            } else {
                l.inputs.iter().map(range).collect::<Vec<_>>().join(" ")
            };
            let out = l.output.as_ref().map(range).unwrap_or_else(|| "-".into());
            writeln!(
                f,
                "{:<w$}  {:<17}  {:<10}  {:<15}  {:<15}  {:<28}  {}",
                l.name, l.op, status, weights, bias, ins, out
            )?;
        }
        Ok(())
    }
}
