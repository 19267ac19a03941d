//! A kiln IR graph as a trainable burn computation, and back.
//!
//! [`TrainGraph::from_model`] reads an fp32 model (BatchNormalization not yet
//! folded into the convolutions) into a plan of burn operations. The
//! learnable parameters (Conv `W`/`B`, BatchNormalization `scale`/`B`, Gemm
//! `B`/`C`, MatMul weights) are held on the host as `f32` vectors in plan
//! order, together with each BatchNormalization's running mean and variance;
//! [`TrainGraph::forward`] makes them autodiff leaves for one step and returns
//! the leaves so the caller can read their gradients. [`TrainGraph::to_model`]
//! writes the current values back into a copy of the source model: same
//! nodes, same names, new initializers, so an imported ONNX model is
//! fine-tuned and re-exported with its structure untouched.
//!
//! Op semantics follow the ONNX operator specification (opset 13; HardSwish
//! opset 14). BatchNormalization in training mode normalises with the batch
//! mean and biased variance over `N, H, W` and updates the running statistics
//! as ONNX and PyTorch do: `running = (1 - m) * running + m * batch`, with
//! momentum `m = 0.1` (PyTorch's default; ONNX's `momentum` attribute is the
//! weight of the old value, `0.9`) and the *unbiased* batch variance for the
//! running variance (PyTorch).

use crate::{Error, ErrorKind};
use burn::tensor::activation::{relu, sigmoid};
use burn::tensor::module::{avg_pool2d, batch_norm, batch_norm_train, conv2d, max_pool2d};
use burn::tensor::ops::{AvgPoolOptions, ConvOptions, MaxPoolOptions};
use burn::tensor::{Device, Tensor, TensorData};
use kiln_ir::{DType, Model, Node};
use std::collections::HashMap;

/// A value flowing through the plan: burn tensors are typed by rank.
#[derive(Clone)]
pub(crate) enum V {
    R1(Tensor<1>),
    R2(Tensor<2>),
    R3(Tensor<3>),
    R4(Tensor<4>),
    R5(Tensor<5>),
}

macro_rules! each_rank {
    ($v:expr, $t:ident => $body:expr) => {
        match $v {
            V::R1($t) => V::R1($body),
            V::R2($t) => V::R2($body),
            V::R3($t) => V::R3($body),
            V::R4($t) => V::R4($body),
            V::R5($t) => V::R5($body),
        }
    };
}

impl V {
    fn dims(&self) -> Vec<usize> {
        match self {
            V::R1(t) => t.dims().to_vec(),
            V::R2(t) => t.dims().to_vec(),
            V::R3(t) => t.dims().to_vec(),
            V::R4(t) => t.dims().to_vec(),
            V::R5(t) => t.dims().to_vec(),
        }
    }
    fn reshape(self, dims: &[usize]) -> Result<V, String> {
        let d = |i: usize| dims[i];
        Ok(match dims.len() {
            1 => V::R1(self.flat().reshape([d(0)])),
            2 => V::R2(self.flat().reshape([d(0), d(1)])),
            3 => V::R3(self.flat().reshape([d(0), d(1), d(2)])),
            4 => V::R4(self.flat().reshape([d(0), d(1), d(2), d(3)])),
            5 => V::R5(self.flat().reshape([d(0), d(1), d(2), d(3), d(4)])),
            r => {
                return Err(format!(
                    "rank {r} values are not supported in training (ranks 1 to 5)"
                ))
            }
        })
    }
    fn flat(self) -> Tensor<1> {
        match self {
            V::R1(t) => t,
            V::R2(t) => t.flatten(0, 1),
            V::R3(t) => t.flatten(0, 2),
            V::R4(t) => t.flatten(0, 3),
            V::R5(t) => t.flatten(0, 4),
        }
    }
    fn r4(self, what: &str) -> Result<Tensor<4>, String> {
        match self {
            V::R4(t) => Ok(t),
            o => Err(format!("{what} needs a 4-D input, got dims {:?}", o.dims())),
        }
    }
    fn r2(self, what: &str) -> Result<Tensor<2>, String> {
        match self {
            V::R2(t) => Ok(t),
            o => Err(format!("{what} needs a 2-D input, got dims {:?}", o.dims())),
        }
    }
    /// Broadcast to rank `r` by prepending 1-dims (numpy rule).
    fn into_rank(self, r: usize) -> Result<V, String> {
        let d = self.dims();
        if d.len() >= r {
            return Ok(self);
        }
        let mut nd = vec![1; r - d.len()];
        nd.extend(d);
        self.reshape(&nd)
    }
}

/// A binary elementwise op with numpy broadcasting.
fn binary(a: V, b: V, kind: &str) -> Result<V, String> {
    let r = a.dims().len().max(b.dims().len());
    let (a, b) = (a.into_rank(r)?, b.into_rank(r)?);
    macro_rules! go {
        ($x:ident, $y:ident) => {
            match kind {
                "Add" => $x + $y,
                "Sub" => $x - $y,
                "Mul" => $x * $y,
                _ => $x / $y,
            }
        };
    }
    Ok(match (a, b) {
        (V::R1(x), V::R1(y)) => V::R1(go!(x, y)),
        (V::R2(x), V::R2(y)) => V::R2(go!(x, y)),
        (V::R3(x), V::R3(y)) => V::R3(go!(x, y)),
        (V::R4(x), V::R4(y)) => V::R4(go!(x, y)),
        (V::R5(x), V::R5(y)) => V::R5(go!(x, y)),
        _ => unreachable!("operands brought to one rank"),
    })
}

/// Where an operand of a step comes from.
#[derive(Debug, Clone)]
enum Src {
    /// A value slot (graph input or a node's output).
    Slot(usize),
    /// A learnable parameter (index into [`TrainGraph::params`]).
    Param(usize),
    /// A constant initializer that is not trained (e.g. a scalar of an Add).
    Const(usize),
}

/// An element-wise activation (standalone op or the epilogue of kiln's
/// `FusedConv`/`FusedGemm`, whose `activation` attribute names it).
#[derive(Debug, Clone, PartialEq)]
enum Act {
    None,
    Relu,
    Clip(f32, f32),
    LeakyRelu(f32),
    HardSigmoid(f32, f32),
    HardSwish,
    Sigmoid,
    Silu,
}

fn apply_act(v: V, a: &Act) -> V {
    match a {
        Act::None => v,
        Act::Relu => each_rank!(v, t => relu(t)),
        Act::Clip(min, max) => each_rank!(v, t => {
            let t = if min.is_finite() { t.clamp_min(*min) } else { t };
            if max.is_finite() { t.clamp_max(*max) } else { t }
        }),
        Act::LeakyRelu(alpha) => each_rank!(v, t => burn::tensor::activation::leaky_relu(t, *alpha as f64)),
        Act::HardSigmoid(alpha, beta) => each_rank!(v, t => (t * *alpha + *beta).clamp(0.0, 1.0)),
        Act::HardSwish => each_rank!(v, t => t.clone() * (t / 6.0 + 0.5).clamp(0.0, 1.0)),
        Act::Sigmoid => each_rank!(v, t => sigmoid(t)),
        Act::Silu => each_rank!(v, t => t.clone() * sigmoid(t)),
    }
}

/// Reads the `activation` / `activation_params` attributes of a fused op.
fn fused_act(n: &Node) -> std::result::Result<Act, String> {
    let name = n.attr_string("activation", "").map_err(|e| e.to_string())?;
    let p = n
        .attr_floats_opt("activation_params")
        .map_err(|e| e.to_string())?
        .unwrap_or_default();
    let want = |k: usize| -> std::result::Result<(), String> {
        if p.len() == k {
            Ok(())
        } else {
            Err(format!("activation {name} takes {k} params, got {}", p.len()))
        }
    };
    Ok(match name.as_str() {
        "" => Act::None,
        "Relu" => Act::Relu,
        "Clip" => {
            want(2)?;
            Act::Clip(p[0], p[1])
        }
        "LeakyRelu" => {
            want(1)?;
            Act::LeakyRelu(p[0])
        }
        "HardSigmoid" => {
            want(2)?;
            Act::HardSigmoid(p[0], p[1])
        }
        "HardSwish" => Act::HardSwish,
        "Sigmoid" => Act::Sigmoid,
        "SiLU" => Act::Silu,
        o => return Err(format!("activation '{o}' is not supported in training")),
    })
}

#[derive(Debug, Clone)]
enum Op {
    Conv {
        opts: ConvOptions<2>,
        act: Act,
        residual: bool,
    },
    BatchNorm {
        stats: usize,
        eps: f64,
    },
    Act(Act),
    Binary(&'static str),
    GlobalAveragePool,
    MaxPool(MaxPoolOptions<2>),
    AveragePool(AvgPoolOptions<2>),
    Flatten {
        axis: usize,
    },
    Gemm {
        trans_a: bool,
        trans_b: bool,
        alpha: f32,
        beta: f32,
        act: Act,
    },
    MatMul,
    Concat {
        axis: i64,
    },
    Split {
        axis: i64,
        sizes: Vec<usize>,
    },
    Reshape {
        shape: Vec<i64>,
    },
    Transpose {
        perm: Vec<usize>,
    },
    Identity,
}

#[derive(Debug, Clone)]
struct Step {
    node: String,
    op_type: String,
    op: Op,
    inputs: Vec<Src>,
    outputs: Vec<usize>,
    /// Slots whose last reader is this step (dropped after it runs).
    frees: Vec<usize>,
}

/// A learnable tensor: the initializer it came from and its current value.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamTensor {
    /// Initializer name in the source model.
    pub name: String,
    /// Shape (the initializer's).
    pub shape: Vec<usize>,
    /// Current value, row-major.
    pub data: Vec<f32>,
    /// Whether weight decay applies (weights of Conv/Gemm/MatMul; not biases or BN parameters).
    pub decay: bool,
}

/// Running statistics of one BatchNormalization node.
#[derive(Debug, Clone, PartialEq)]
pub struct BnStats {
    /// Node name.
    pub node: String,
    /// Initializer name of the running mean.
    pub mean_name: String,
    /// Initializer name of the running variance.
    pub var_name: String,
    /// Running mean, `[C]`.
    pub mean: Vec<f32>,
    /// Running variance, `[C]`.
    pub var: Vec<f32>,
}

/// One BatchNormalization's statistics over a training batch.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchStats {
    /// Batch mean per channel.
    pub mean: Vec<f32>,
    /// Biased (population) batch variance per channel.
    pub var: Vec<f32>,
    /// Values per channel the statistics were taken over (`N * H * W`).
    pub count: usize,
}

/// The result of one forward pass.
pub struct Forward {
    /// The graph's first output (for classifiers, the logits `[N, classes]`).
    pub output: Tensor<2>,
    /// The parameter leaves, in [`TrainGraph::params`] order (read their
    /// gradients after `backward`).
    pub leaves: Vec<Tensor<1>>,
    /// Batch statistics of each BatchNormalization, in [`TrainGraph::bn`]
    /// order (training mode only; empty otherwise).
    pub batch_stats: Vec<BatchStats>,
    /// Values requested by name (feature distillation), as they were computed.
    pub taps: HashMap<String, Tensor<4>>,
    /// Observed `(min, max)` of each fake-quantized activation on this batch,
    /// in [`Qat::acts`] order (training mode with QAT only).
    pub act_ranges: Vec<(f32, f32)>,
}

fn fake_quant_weight(v: V, axis: usize) -> V {
    fn rows(w: Tensor<2>) -> Tensor<2> {
        let absmax = w.clone().abs().max_dim(1).detach();
        let s = absmax.clamp_min(f32::MIN_POSITIVE) / 127.0;
        let q = (w.clone() / s.clone()).round().clamp(-127.0, 127.0) * s;
        w.clone() + (q - w).detach()
    }
    match v {
        V::R4(w) => {
            let [o, i, kh, kw] = w.dims();
            V::R4(rows(w.reshape([o, i * kh * kw])).reshape([o, i, kh, kw]))
        }
        V::R2(w) if axis == 0 => V::R2(rows(w)),
        V::R2(w) => V::R2(rows(w.transpose()).transpose()),
        o => o,
    }
}

/// Fake-quantizes `v` with the range `[min, max]`; returns the result and the
/// observed range of `v` (when `observe`).
fn fake_quant_act(
    v: V,
    min: f32,
    max: f32,
    dtype: DType,
    observe: bool,
) -> Result<(V, Option<(f32, f32)>), String> {
    let seen = if observe {
        let f = v.clone().flat().detach();
        let lo = f.clone().min().into_scalar::<f32>();
        let hi = f.max().into_scalar::<f32>();
        Some((lo, hi))
    } else {
        None
    };
    let (s, zp) = kiln_ir::quant::choose_qparams_asymmetric(min, max, dtype).map_err(|e| e.to_string())?;
    let (qmin, qmax) = if dtype == DType::U8 {
        (0.0f32, 255.0f32)
    } else {
        (-128.0, 127.0)
    };
    let zpf = zp as f32;
    let (lo, hi) = ((qmin - zpf) * s, (qmax - zpf) * s);
    let out = each_rank!(v, t => {
        let c = t.clamp(lo, hi);
        let q = ((c.clone() / s).round() + zpf).clamp(qmin, qmax);
        let d = (q - zpf) * s;
        c.clone() + (d - c).detach()
    });
    Ok((out, seen))
}

/// One activation fake-quantized during quantization-aware training: the
/// value's name and its current (EMA) range.
#[derive(Debug, Clone, PartialEq)]
pub struct ActQuant {
    /// Value name in the (prepared) graph.
    pub name: String,
    /// Range minimum.
    pub min: f32,
    /// Range maximum.
    pub max: f32,
}

/// Fake quantization for quantization-aware training, in kiln's PTQ scheme
/// (`kiln_quant`): weights of Conv/FusedConv/Gemm/FusedGemm/MatMul int8
/// symmetric per output channel (`s = max|W_c| / 127`, range `[-127, 127]`),
/// activations per tensor asymmetric (`kiln_ir::quant::choose_qparams_asymmetric`
/// of the range, extended to contain 0). Rounding is half to even, as ONNX
/// `QuantizeLinear`. Gradients pass straight through the rounding
/// (Bengio et al. 2013, "straight-through estimator") and are zero outside an
/// activation's range (the clamp), as in Jacob et al., CVPR 2018.
#[derive(Debug, Clone)]
pub struct Qat {
    /// Activation quantization points, with their ranges.
    pub acts: Vec<ActQuant>,
    /// `DType::U8` or `DType::I8` activations.
    pub act_dtype: DType,
    /// Weight of a batch's observed range in the EMA update (0 freezes the ranges).
    pub momentum: f32,
    /// Parameter index -> output-channel axis of each fake-quantized weight.
    weights: HashMap<usize, usize>,
    /// Slot -> index into `acts`.
    slot_act: HashMap<usize, usize>,
}

/// A trainable view of an fp32 kiln model.
#[derive(Debug, Clone)]
pub struct TrainGraph {
    pub(crate) model_name: String,
    steps: Vec<Step>,
    n_slots: usize,
    input_slot: usize,
    output_slot: usize,
    slot_of: HashMap<String, usize>,
    /// Learnable parameters, in plan order.
    pub params: Vec<ParamTensor>,
    /// BatchNormalization running statistics, in plan order.
    pub bn: Vec<BnStats>,
    consts: Vec<(Vec<usize>, Vec<f32>)>,
    /// BatchNormalization momentum (weight of the new batch statistic), 0.1.
    pub bn_momentum: f32,
    /// Fake quantization, when training quantization-aware ([`TrainGraph::enable_qat`]).
    pub qat: Option<Qat>,
}

fn f32_init(m: &Model, name: &str) -> Option<(Vec<usize>, Vec<f32>)> {
    let t = m.graph.initializers.get(name)?;
    (t.dtype() == DType::F32).then(|| (t.shape().to_vec(), t.to_f32_vec()))
}

fn ints_init(m: &Model, name: &str) -> Option<Vec<i64>> {
    m.graph.initializers.get(name).and_then(|t| t.to_i64_vec().ok())
}

fn scalar_init(m: &Model, name: &str) -> Option<f32> {
    let t = m.graph.initializers.get(name)?;
    (t.len() == 1).then(|| t.to_f32_vec()[0])
}

/// A copy of `model` whose Constant nodes are initializers (ONNX `Constant`:
/// `value`, `value_float(s)`, `value_int(s)`), so that shape operands and
/// clip bounds made by exporters as Constant nodes are read like initializers.
fn constants_as_initializers(model: &Model) -> Result<Model, Error> {
    let mut m = model.clone();
    let mut keep = Vec::with_capacity(m.graph.nodes.len());
    for n in std::mem::take(&mut m.graph.nodes) {
        if n.op_type != "Constant" || n.outputs.len() != 1 {
            keep.push(n);
            continue;
        }
        let bad = |e: String| Error::new(ErrorKind::Model, format!("node '{}' (op Constant): {e}", n.name));
        let t = if let Some(t) = n.attr_tensor_opt("value").map_err(|e| bad(e.to_string()))? {
            t.clone()
        } else if let Some(v) = n.attr_float_opt("value_float").map_err(|e| bad(e.to_string()))? {
            kiln_ir::Tensor::scalar(v)
        } else if let Some(v) = n
            .attr_floats_opt("value_floats")
            .map_err(|e| bad(e.to_string()))?
        {
            kiln_ir::Tensor::from_vec(vec![v.len()], v).map_err(|e| bad(e.to_string()))?
        } else if let Some(v) = n.attr_int_opt("value_int").map_err(|e| bad(e.to_string()))? {
            kiln_ir::Tensor::scalar(v)
        } else if let Some(v) = n.attr_ints_opt("value_ints").map_err(|e| bad(e.to_string()))? {
            kiln_ir::Tensor::from_vec(vec![v.len()], v).map_err(|e| bad(e.to_string()))?
        } else {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "node '{}' (op Constant): only value, value_float(s) and value_int(s) are supported",
                    n.name
                ),
            ));
        };
        m.graph.initializers.insert(n.outputs[0].clone(), t);
    }
    m.graph.nodes = keep;
    Ok(m)
}

impl TrainGraph {
    /// Builds the training plan of `model`.
    ///
    /// The model must have one 4-D float input (`[N, C, H, W]`) and its first
    /// output must be 2-D (`[N, classes]`). Supported ops: Conv (2-D),
    /// BatchNormalization, Relu, Clip, LeakyRelu, Sigmoid, HardSigmoid,
    /// HardSwish, Add, Sub, Mul, Div, GlobalAveragePool, MaxPool,
    /// AveragePool, Flatten, Gemm, MatMul (2-D), Concat, Split, Reshape,
    /// Transpose, Identity, Dropout (identity), Constant, and kiln's
    /// FusedConv / FusedGemm (domain `kiln`).
    ///
    /// # Errors
    /// [`ErrorKind::Unsupported`] naming the model, node, op and attribute at
    /// fault for any other op, attribute value (e.g. `auto_pad` other than
    /// `NOTSET`) or a shape operand that is not an initializer.
    pub fn from_model(model: &Model) -> Result<TrainGraph, Error> {
        let owned = constants_as_initializers(model)?;
        let model = &owned;
        let g = &model.graph;
        let model_name = if g.name.is_empty() {
            "model".to_string()
        } else {
            g.name.clone()
        };
        let err = |n: &Node, attr: Option<&str>, msg: String| {
            let at = attr.map(|a| format!(", attribute '{a}'")).unwrap_or_default();
            Error::new(
                ErrorKind::Unsupported,
                format!("{model_name}: node '{}' (op {}{at}): {msg}", n.name, n.op_type),
            )
        };
        if g.inputs.len() != 1 {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "{model_name}: training needs exactly one graph input, the model has {}",
                    g.inputs.len()
                ),
            ));
        }
        let mut slot_of: HashMap<String, usize> = HashMap::new();
        slot_of.insert(g.inputs[0].name.clone(), 0);
        let mut n_slots = 1;
        let mut params: Vec<ParamTensor> = vec![];
        let mut param_of: HashMap<String, usize> = HashMap::new();
        let mut consts: Vec<(Vec<usize>, Vec<f32>)> = vec![];
        let mut const_of: HashMap<String, usize> = HashMap::new();
        let mut bn: Vec<BnStats> = vec![];
        let mut steps: Vec<Step> = vec![];
        let mut sorted = g.clone();
        sorted
            .topo_sort()
            .map_err(|e| Error::new(ErrorKind::Model, format!("{model_name}: {e}")))?;

        for n in &sorted.nodes {
            let input = |i: usize| n.inputs.get(i).filter(|s| !s.is_empty()).cloned();
            let mut param = |name: &str, decay: bool, params: &mut Vec<ParamTensor>| -> Result<Src, Error> {
                if let Some(&i) = param_of.get(name) {
                    return Ok(Src::Param(i));
                }
                let (shape, data) = f32_init(model, name).ok_or_else(|| {
                    err(
                        n,
                        None,
                        format!("input '{name}' must be an f32 initializer to be trained"),
                    )
                })?;
                params.push(ParamTensor {
                    name: name.to_string(),
                    shape,
                    data,
                    decay,
                });
                param_of.insert(name.to_string(), params.len() - 1);
                Ok(Src::Param(params.len() - 1))
            };
            let mut value = |name: &str| -> Result<Src, Error> {
                if let Some(&s) = slot_of.get(name) {
                    return Ok(Src::Slot(s));
                }
                if let Some(&c) = const_of.get(name) {
                    return Ok(Src::Const(c));
                }
                let (shape, data) = f32_init(model, name).ok_or_else(|| {
                    err(
                        n,
                        None,
                        format!("input '{name}' is neither computed nor an f32 initializer"),
                    )
                })?;
                consts.push((shape, data));
                const_of.insert(name.to_string(), consts.len() - 1);
                Ok(Src::Const(consts.len() - 1))
            };
            let ints = |a: &str, dflt: Vec<i64>| -> Result<Vec<i64>, Error> {
                Ok(n.attr_ints_opt(a)
                    .map_err(|e| err(n, Some(a), e.to_string()))?
                    .unwrap_or(dflt))
            };
            let int = |a: &str, dflt: i64| n.attr_int(a, dflt).map_err(|e| err(n, Some(a), e.to_string()));
            let float =
                |a: &str, dflt: f32| n.attr_float(a, dflt).map_err(|e| err(n, Some(a), e.to_string()));
            let no_auto_pad = || -> Result<(), Error> {
                let p = n
                    .attr_string("auto_pad", "NOTSET")
                    .map_err(|e| err(n, Some("auto_pad"), e.to_string()))?;
                if p != "NOTSET" {
                    return Err(err(
                        n,
                        Some("auto_pad"),
                        format!("'{p}' is not supported in training; use explicit pads"),
                    ));
                }
                Ok(())
            };
            let pads2 = |p: &[i64]| -> Result<[(usize, usize); 2], Error> {
                if p.len() != 4 || p.iter().any(|&v| v < 0) {
                    return Err(err(
                        n,
                        Some("pads"),
                        format!("expected 4 non-negative values, got {p:?}"),
                    ));
                }
                Ok([(p[0] as usize, p[2] as usize), (p[1] as usize, p[3] as usize)])
            };
            let two = |v: &[i64], a: &str| -> Result<[usize; 2], Error> {
                if v.len() != 2 || v.iter().any(|&x| x < 1) {
                    return Err(err(n, Some(a), format!("expected 2 positive values, got {v:?}")));
                }
                Ok([v[0] as usize, v[1] as usize])
            };
            let mut ins: Vec<Src> = vec![];
            let fused = n.domain == "kiln";
            if !(n.domain.is_empty()
                || n.domain == "ai.onnx"
                || (fused && matches!(n.op_type.as_str(), "FusedConv" | "FusedGemm")))
            {
                return Err(err(
                    n,
                    None,
                    format!(
                        "op '{}' of domain '{}' is not supported in training",
                        n.op_type, n.domain
                    ),
                ));
            }
            let act = if fused {
                fused_act(n).map_err(|m| err(n, Some("activation"), m))?
            } else {
                Act::None
            };
            let op = match n.op_type.as_str() {
                "Conv" | "FusedConv" => {
                    no_auto_pad()?;
                    let w = input(1).ok_or_else(|| err(n, None, "missing weight".into()))?;
                    let wshape = f32_init(model, &w).map(|x| x.0).unwrap_or_default();
                    if wshape.len() != 4 {
                        return Err(err(
                            n,
                            None,
                            format!("only 2-D convolutions are supported (weight dims {wshape:?})"),
                        ));
                    }
                    ins.push(value(&input(0).unwrap_or_default())?);
                    ins.push(param(&w, true, &mut params)?);
                    if let Some(b) = input(2) {
                        ins.push(param(&b, false, &mut params)?);
                    }
                    let strides = two(&ints("strides", vec![1, 1])?, "strides")?;
                    let dil = two(&ints("dilations", vec![1, 1])?, "dilations")?;
                    let pads = pads2(&ints("pads", vec![0; 4])?)?;
                    let group = int("group", 1)?;
                    if group < 1 {
                        return Err(err(n, Some("group"), format!("must be >= 1, got {group}")));
                    }
                    let residual = match input(3) {
                        Some(z) if fused => {
                            if input(2).is_none() {
                                return Err(err(
                                    n,
                                    None,
                                    "a residual input Z without a bias B is not supported in training".into(),
                                ));
                            }
                            ins.push(value(&z)?);
                            true
                        }
                        _ => false,
                    };
                    Op::Conv {
                        opts: ConvOptions::new_with_padding(strides, pads, dil, group as usize),
                        act: act.clone(),
                        residual,
                    }
                }
                "BatchNormalization" => {
                    if int("training_mode", 0)? != 0 {
                        return Err(err(
                            n,
                            Some("training_mode"),
                            "must be 0 in the source model".into(),
                        ));
                    }
                    ins.push(value(&input(0).unwrap_or_default())?);
                    let names: Vec<String> = (1..5).map(|i| input(i).unwrap_or_default()).collect();
                    ins.push(param(&names[0], false, &mut params)?);
                    ins.push(param(&names[1], false, &mut params)?);
                    let mean = f32_init(model, &names[2])
                        .ok_or_else(|| err(n, None, "running mean must be an f32 initializer".into()))?;
                    let var = f32_init(model, &names[3])
                        .ok_or_else(|| err(n, None, "running variance must be an f32 initializer".into()))?;
                    bn.push(BnStats {
                        node: n.name.clone(),
                        mean_name: names[2].clone(),
                        var_name: names[3].clone(),
                        mean: mean.1,
                        var: var.1,
                    });
                    Op::BatchNorm {
                        stats: bn.len() - 1,
                        eps: float("epsilon", 1e-5)? as f64,
                    }
                }
                "Relu" => Op::Act(Act::Relu),
                "Sigmoid" => Op::Act(Act::Sigmoid),
                "HardSwish" => Op::Act(Act::HardSwish),
                "LeakyRelu" => Op::Act(Act::LeakyRelu(float("alpha", 0.01)?)),
                "HardSigmoid" => Op::Act(Act::HardSigmoid(float("alpha", 0.2)?, float("beta", 0.5)?)),
                "Clip" => {
                    let bound = |i: usize, a: &str, d: f32| -> Result<f32, Error> {
                        match input(i) {
                            Some(name) => scalar_init(model, &name).ok_or_else(|| {
                                err(n, None, format!("{a} '{name}' must be a scalar initializer"))
                            }),
                            None => Ok(n.attr_float(a, d).map_err(|e| err(n, Some(a), e.to_string()))?),
                        }
                    };
                    Op::Act(Act::Clip(
                        bound(1, "min", f32::NEG_INFINITY)?,
                        bound(2, "max", f32::INFINITY)?,
                    ))
                }
                "Add" => Op::Binary("Add"),
                "Sub" => Op::Binary("Sub"),
                "Mul" => Op::Binary("Mul"),
                "Div" => Op::Binary("Div"),
                "GlobalAveragePool" => Op::GlobalAveragePool,
                "MaxPool" | "AveragePool" => {
                    no_auto_pad()?;
                    let k = two(&ints("kernel_shape", vec![])?, "kernel_shape")?;
                    let s = two(&ints("strides", vec![1, 1])?, "strides")?;
                    let pads = pads2(&ints("pads", vec![0; 4])?)?;
                    let ceil = int("ceil_mode", 0)? != 0;
                    if n.op_type == "MaxPool" {
                        if n.outputs.len() > 1 && !n.outputs[1].is_empty() {
                            return Err(err(n, None, "the Indices output is not supported".into()));
                        }
                        let d = two(&ints("dilations", vec![1, 1])?, "dilations")?;
                        let mut o = MaxPoolOptions::new(k);
                        o.stride = s;
                        o.padding = pads;
                        o.dilation = d;
                        o.ceil_mode = ceil;
                        Op::MaxPool(o)
                    } else {
                        let mut o = AvgPoolOptions::new(k);
                        o.stride = s;
                        o.padding = pads;
                        o.count_include_pad = int("count_include_pad", 0)? != 0;
                        o.ceil_mode = ceil;
                        Op::AveragePool(o)
                    }
                }
                "Flatten" => {
                    let a = int("axis", 1)?;
                    if a < 0 {
                        return Err(err(
                            n,
                            Some("axis"),
                            "negative axes are not supported in training".into(),
                        ));
                    }
                    Op::Flatten { axis: a as usize }
                }
                "Gemm" | "FusedGemm" => {
                    ins.push(value(&input(0).unwrap_or_default())?);
                    let b = input(1).ok_or_else(|| err(n, None, "missing B".into()))?;
                    ins.push(param(&b, true, &mut params)?);
                    if let Some(c) = input(2) {
                        ins.push(param(&c, false, &mut params)?);
                    }
                    Op::Gemm {
                        trans_a: int("transA", 0)? != 0,
                        trans_b: int("transB", 0)? != 0,
                        alpha: float("alpha", 1.0)?,
                        beta: float("beta", 1.0)?,
                        act: act.clone(),
                    }
                }
                "MatMul" => {
                    ins.push(value(&input(0).unwrap_or_default())?);
                    let b = input(1).unwrap_or_default();
                    ins.push(if slot_of.contains_key(&b) {
                        value(&b)?
                    } else {
                        param(&b, true, &mut params)?
                    });
                    Op::MatMul
                }
                "Concat" => Op::Concat {
                    axis: int("axis", 0)?,
                },
                "Split" => {
                    let axis = int("axis", 0)?;
                    let sizes = match input(1) {
                        Some(s) => ints_init(model, &s).ok_or_else(|| {
                            err(n, None, format!("split '{s}' must be an int64 initializer"))
                        })?,
                        None => ints("split", vec![])?,
                    };
                    if sizes.is_empty() || sizes.len() != n.outputs.len() || sizes.iter().any(|&s| s < 0) {
                        return Err(err(
                            n,
                            Some("split"),
                            format!("explicit sizes, one per output, are needed; got {sizes:?}"),
                        ));
                    }
                    ins.push(value(&input(0).unwrap_or_default())?);
                    Op::Split {
                        axis,
                        sizes: sizes.iter().map(|&s| s as usize).collect(),
                    }
                }
                "Reshape" => {
                    let s = input(1).unwrap_or_default();
                    let shape = ints_init(model, &s)
                        .ok_or_else(|| err(n, None, format!("shape '{s}' must be an int64 initializer")))?;
                    if int("allowzero", 0)? != 0 {
                        return Err(err(
                            n,
                            Some("allowzero"),
                            "allowzero = 1 is not supported in training".into(),
                        ));
                    }
                    ins.push(value(&input(0).unwrap_or_default())?);
                    Op::Reshape { shape }
                }
                "Transpose" => Op::Transpose {
                    perm: ints("perm", vec![])?.iter().map(|&p| p as usize).collect(),
                },
                "Identity" | "Dropout" => {
                    if n.outputs.len() > 1 && !n.outputs[1].is_empty() {
                        return Err(err(n, None, "the mask output of Dropout is not supported".into()));
                    }
                    Op::Identity
                }
                other => {
                    return Err(err(n, None, format!("op '{other}' is not supported in training")));
                }
            };
            if ins.is_empty() {
                // Ops whose operands are all values.
                for name in n.inputs.iter().filter(|s| !s.is_empty()) {
                    ins.push(value(name)?);
                }
                if matches!(op, Op::Identity) {
                    ins.truncate(1);
                }
            }
            let mut outs = vec![];
            for o in &n.outputs {
                if o.is_empty() {
                    continue;
                }
                slot_of.insert(o.clone(), n_slots);
                outs.push(n_slots);
                n_slots += 1;
                if matches!(op, Op::Identity | Op::MaxPool(_)) {
                    break;
                }
            }
            steps.push(Step {
                node: n.name.clone(),
                op_type: n.op_type.clone(),
                op,
                inputs: ins,
                outputs: outs,
                frees: vec![],
            });
        }
        let out_name = &g
            .outputs
            .first()
            .ok_or_else(|| Error::new(ErrorKind::Model, format!("{model_name}: no graph output")))?
            .name;
        let output_slot = *slot_of.get(out_name).ok_or_else(|| {
            Error::new(
                ErrorKind::Model,
                format!("{model_name}: output '{out_name}' is not computed"),
            )
        })?;
        // Liveness: free each slot after its last reader (the output is kept).
        let mut last: HashMap<usize, usize> = HashMap::new();
        for (i, s) in steps.iter().enumerate() {
            for src in &s.inputs {
                if let Src::Slot(x) = src {
                    last.insert(*x, i);
                }
            }
        }
        for (slot, i) in last {
            if slot != output_slot {
                steps[i].frees.push(slot);
            }
        }
        Ok(TrainGraph {
            model_name,
            steps,
            n_slots,
            input_slot: 0,
            output_slot,
            slot_of,
            params,
            bn,
            consts,
            bn_momentum: 0.1,
            qat: None,
        })
    }

    /// Number of learnable scalars.
    pub fn num_params(&self) -> usize {
        self.params.iter().map(|p| p.data.len()).sum()
    }

    /// The last `n` values the graph computes, in order (for error messages).
    pub fn last_values(&self, n: usize) -> Vec<String> {
        let mut v: Vec<(&String, &usize)> = self.slot_of.iter().collect();
        v.sort_by_key(|(_, &s)| s);
        v.iter().rev().take(n).rev().map(|(k, _)| (*k).clone()).collect()
    }

    /// Whether the graph computes a value of this name (for feature taps).
    pub fn has_value(&self, name: &str) -> bool {
        self.slot_of.contains_key(name)
    }

    /// Runs the graph on `x` (`[N, C, H, W]` f32 on `device`).
    ///
    /// With `train`, BatchNormalization uses batch statistics (returned in
    /// [`Forward::batch_stats`]; the running statistics are not touched here,
    /// see [`TrainGraph::update_bn`]) and the parameter leaves require
    /// gradients (`device` must then be an autodiff device). Without it the
    /// running statistics are used. `taps` names 4-D values to return as well.
    ///
    /// # Errors
    /// [`ErrorKind::Shape`] naming node and op when an op meets shapes it
    /// cannot handle (e.g. a Reshape whose target does not fit).
    pub fn forward(
        &self,
        x: Tensor<4>,
        device: &Device,
        train: bool,
        taps: &[String],
    ) -> Result<Forward, Error> {
        let leaves: Vec<Tensor<1>> = self
            .params
            .iter()
            .map(|p| {
                let t = Tensor::<1>::from_data(TensorData::new(p.data.clone(), [p.data.len()]), device);
                if train {
                    t.require_grad()
                } else {
                    t
                }
            })
            .collect();
        let mut slots: Vec<Option<V>> = vec![None; self.n_slots];
        let qat = self.qat.as_ref();
        let mut act_ranges: Vec<(f32, f32)> = qat
            .map(|q| q.acts.iter().map(|a| (a.min, a.max)).collect())
            .unwrap_or_default();
        let mut quant_slot = |slot: usize, v: V| -> Result<V, Error> {
            let Some(q) = qat else { return Ok(v) };
            let Some(&i) = q.slot_act.get(&slot) else {
                return Ok(v);
            };
            let a = &q.acts[i];
            let (v, seen) = fake_quant_act(v, a.min, a.max, q.act_dtype, train).map_err(|m| {
                Error::new(
                    ErrorKind::Shape,
                    format!("{}: fake quantization of '{}': {m}", self.model_name, a.name),
                )
            })?;
            if let Some(r) = seen {
                act_ranges[i] = r;
            }
            Ok(v)
        };
        slots[self.input_slot] = Some(quant_slot(self.input_slot, V::R4(x))?);
        let mut batch_stats = vec![];
        let mut tapped = HashMap::new();
        let tap_slots: Vec<(usize, &String)> = taps
            .iter()
            .filter_map(|t| self.slot_of.get(t).map(|&s| (s, t)))
            .collect();
        for step in &self.steps {
            let fail = |m: String| {
                Error::new(
                    ErrorKind::Shape,
                    format!(
                        "{}: node '{}' (op {}): {m}",
                        self.model_name, step.node, step.op_type
                    ),
                )
            };
            let get = |i: usize, slots: &Vec<Option<V>>| -> Result<V, Error> {
                match step.inputs.get(i) {
                    Some(Src::Slot(s)) => slots[*s]
                        .clone()
                        .ok_or_else(|| fail(format!("input {i} was not computed"))),
                    Some(Src::Param(p)) => {
                        let v = V::R1(leaves[*p].clone())
                            .reshape(&self.params[*p].shape)
                            .map_err(fail)?;
                        Ok(match qat.and_then(|q| q.weights.get(p)) {
                            Some(&axis) => fake_quant_weight(v, axis),
                            None => v,
                        })
                    }
                    Some(Src::Const(c)) => {
                        let (shape, data) = &self.consts[*c];
                        let t = Tensor::<1>::from_data(TensorData::new(data.clone(), [data.len()]), device);
                        let shape = if shape.is_empty() { vec![1] } else { shape.clone() };
                        V::R1(t).reshape(&shape).map_err(fail)
                    }
                    None => Err(fail(format!("missing input {i}"))),
                }
            };
            let param1 = |i: usize| -> Option<Tensor<1>> {
                match step.inputs.get(i) {
                    Some(Src::Param(p)) => Some(leaves[*p].clone()),
                    _ => None,
                }
            };
            let x0 = get(0, &slots)?;
            let outs: Vec<V> = match &step.op {
                Op::Conv { opts, act, residual } => {
                    let x = x0.r4("Conv").map_err(fail)?;
                    let w = match get(1, &slots)? {
                        V::R4(w) => w,
                        _ => return Err(fail("weight must be 4-D".into())),
                    };
                    let [_, cin, _, _] = x.dims();
                    let [_, wc, _, _] = w.dims();
                    if cin != wc * opts.groups {
                        return Err(fail(format!(
                            "input has {cin} channels, weight expects {} x group {}",
                            wc, opts.groups
                        )));
                    }
                    let mut y = conv2d(x, w, param1(2), opts.clone());
                    if *residual {
                        match get(3, &slots)? {
                            V::R4(z) if z.dims() == y.dims() => y = y + z,
                            z => {
                                return Err(fail(format!(
                                    "residual Z has dims {:?}, the output {:?}",
                                    z.dims(),
                                    y.dims()
                                )))
                            }
                        }
                    }
                    vec![apply_act(V::R4(y), act)]
                }
                Op::BatchNorm { stats, eps } => {
                    let x = x0.r4("BatchNormalization").map_err(fail)?;
                    let (gamma, beta) = (param1(1).unwrap(), param1(2).unwrap());
                    if train {
                        let [n, _, h, w] = x.dims();
                        let r = batch_norm_train(x, gamma, beta, *eps);
                        let m = r
                            .mean
                            .into_data()
                            .try_into_vec::<f32>()
                            .map_err(|e| fail(format!("{e:?}")))?;
                        let v = r
                            .variance
                            .into_data()
                            .try_into_vec::<f32>()
                            .map_err(|e| fail(format!("{e:?}")))?;
                        batch_stats.push(BatchStats {
                            mean: m,
                            var: v,
                            count: n * h * w,
                        });
                        vec![V::R4(r.output)]
                    } else {
                        let s = &self.bn[*stats];
                        let t = |v: &Vec<f32>| {
                            Tensor::<1>::from_data(TensorData::new(v.clone(), [v.len()]), device)
                        };
                        vec![V::R4(batch_norm(x, gamma, beta, t(&s.mean), t(&s.var), *eps))]
                    }
                }
                Op::Act(a) => vec![apply_act(x0, a)],
                Op::Binary(kind) => vec![binary(x0, get(1, &slots)?, kind).map_err(fail)?],
                Op::GlobalAveragePool => {
                    let x = x0.r4("GlobalAveragePool").map_err(fail)?;
                    let [n, c, h, w] = x.dims();
                    vec![V::R4(x.reshape([n, c, h * w]).mean_dim(2).reshape([n, c, 1, 1]))]
                }
                Op::MaxPool(o) => vec![V::R4(max_pool2d(x0.r4("MaxPool").map_err(fail)?, o.clone()))],
                Op::AveragePool(o) => vec![V::R4(avg_pool2d(x0.r4("AveragePool").map_err(fail)?, o.clone()))],
                Op::Flatten { axis } => {
                    let d = x0.dims();
                    if *axis > d.len() {
                        return Err(fail(format!("axis {axis} out of range for dims {d:?}")));
                    }
                    let a: usize = d[..*axis].iter().product();
                    let b: usize = d[*axis..].iter().product();
                    vec![x0.reshape(&[a, b]).map_err(fail)?]
                }
                Op::Gemm {
                    trans_a,
                    trans_b,
                    alpha,
                    beta,
                    act,
                } => {
                    let a = x0.r2("Gemm").map_err(fail)?;
                    let a = if *trans_a { a.transpose() } else { a };
                    let b = get(1, &slots)?.r2("Gemm B").map_err(fail)?;
                    let b = if *trans_b { b.transpose() } else { b };
                    if a.dims()[1] != b.dims()[0] {
                        return Err(fail(format!("A is {:?}, B is {:?}", a.dims(), b.dims())));
                    }
                    let mut y = a.matmul(b);
                    if *alpha != 1.0 {
                        y = y * *alpha;
                    }
                    if step.inputs.len() > 2 {
                        let c = get(2, &slots)?;
                        let c = if *beta != 1.0 {
                            each_rank!(c, t => t * *beta)
                        } else {
                            c
                        };
                        y = binary(V::R2(y), c, "Add")
                            .map_err(fail)?
                            .r2("Gemm")
                            .map_err(fail)?;
                    }
                    vec![apply_act(V::R2(y), act)]
                }
                Op::MatMul => {
                    let a = x0.r2("MatMul (training supports 2-D)").map_err(fail)?;
                    let b = get(1, &slots)?.r2("MatMul B").map_err(fail)?;
                    vec![V::R2(a.matmul(b))]
                }
                Op::Concat { axis } => {
                    let r = x0.dims().len() as i64;
                    let ax = if *axis < 0 { axis + r } else { *axis } as usize;
                    let vals: Vec<V> = (0..step.inputs.len())
                        .map(|i| get(i, &slots))
                        .collect::<Result<_, _>>()?;
                    macro_rules! cat {
                        ($var:ident) => {{
                            let ts = vals
                                .into_iter()
                                .map(|v| match v {
                                    V::$var(t) => Ok(t),
                                    o => Err(fail(format!(
                                        "operands of different ranks ({:?})",
                                        o.dims()
                                    ))),
                                })
                                .collect::<Result<Vec<_>, _>>()?;
                            V::$var(Tensor::cat(ts, ax))
                        }};
                    }
                    vec![match x0 {
                        V::R1(_) => cat!(R1),
                        V::R2(_) => cat!(R2),
                        V::R3(_) => cat!(R3),
                        V::R4(_) => cat!(R4),
                        V::R5(_) => cat!(R5),
                    }]
                }
                Op::Split { axis, sizes } => {
                    let d = x0.dims();
                    let ax = if *axis < 0 { axis + d.len() as i64 } else { *axis } as usize;
                    if ax >= d.len() || sizes.iter().sum::<usize>() != d[ax] {
                        return Err(fail(format!(
                            "split {sizes:?} along axis {axis} does not fit dims {d:?}"
                        )));
                    }
                    let mut start = 0;
                    let mut v = vec![];
                    for &s in sizes {
                        v.push(each_rank!(x0.clone(), t => t.narrow(ax, start, s)));
                        start += s;
                    }
                    v
                }
                Op::Reshape { shape } => {
                    let d = x0.dims();
                    let total: usize = d.iter().product();
                    let mut out: Vec<usize> = vec![];
                    let mut infer = None;
                    for (i, &s) in shape.iter().enumerate() {
                        match s {
                            0 => out.push(
                                *d.get(i)
                                    .ok_or_else(|| fail(format!("0 at axis {i} past the input's rank")))?,
                            ),
                            -1 => {
                                infer = Some(i);
                                out.push(1);
                            }
                            s if s > 0 => out.push(s as usize),
                            s => return Err(fail(format!("invalid target dim {s}"))),
                        }
                    }
                    let known: usize = out.iter().product();
                    if let Some(i) = infer {
                        if known == 0 || !total.is_multiple_of(known) {
                            return Err(fail(format!("cannot reshape {d:?} to {shape:?}")));
                        }
                        out[i] = total / known;
                    }
                    if out.iter().product::<usize>() != total {
                        return Err(fail(format!("cannot reshape {d:?} to {shape:?}")));
                    }
                    vec![x0.reshape(&out).map_err(fail)?]
                }
                Op::Transpose { perm } => {
                    let r = x0.dims().len();
                    let p: Vec<usize> = if perm.is_empty() {
                        (0..r).rev().collect()
                    } else {
                        perm.clone()
                    };
                    if p.len() != r {
                        return Err(fail(format!("perm {p:?} for a rank-{r} value")));
                    }
                    let pi = |i: usize| p[i] as isize;
                    vec![match x0 {
                        V::R1(t) => V::R1(t),
                        V::R2(t) => V::R2(t.permute([pi(0), pi(1)])),
                        V::R3(t) => V::R3(t.permute([pi(0), pi(1), pi(2)])),
                        V::R4(t) => V::R4(t.permute([pi(0), pi(1), pi(2), pi(3)])),
                        V::R5(t) => V::R5(t.permute([pi(0), pi(1), pi(2), pi(3), pi(4)])),
                    }]
                }
                Op::Identity => vec![x0],
            };
            if outs.len() != step.outputs.len() {
                return Err(fail(format!(
                    "{} outputs computed, {} named",
                    outs.len(),
                    step.outputs.len()
                )));
            }
            for (slot, v) in step.outputs.iter().zip(outs) {
                slots[*slot] = Some(quant_slot(*slot, v)?);
            }
            for &(s, name) in &tap_slots {
                if step.outputs.contains(&s) {
                    if let Some(V::R4(t)) = &slots[s] {
                        tapped.insert(name.clone(), t.clone());
                    }
                }
            }
            for &f in &step.frees {
                slots[f] = None;
            }
        }
        let output = match slots[self.output_slot].take() {
            Some(V::R2(t)) => t,
            Some(o) => {
                return Err(Error::new(
                    ErrorKind::Shape,
                    format!(
                        "{}: the first output must be 2-D [N, classes], got dims {:?}",
                        self.model_name,
                        o.dims()
                    ),
                ))
            }
            None => {
                return Err(Error::new(
                    ErrorKind::Shape,
                    format!("{}: output not computed", self.model_name),
                ))
            }
        };
        let act_ranges = if train { act_ranges } else { vec![] };
        Ok(Forward {
            output,
            leaves,
            batch_stats,
            taps: tapped,
            act_ranges,
        })
    }

    /// Turns on fake quantization for quantization-aware training: the
    /// activations `acts` (values of this graph, with initial ranges, e.g.
    /// from PTQ calibration) and every Conv/FusedConv/Gemm/FusedGemm/MatMul
    /// weight. `momentum` is the weight of each batch's observed range in the
    /// EMA that tracks the ranges (0 keeps them fixed).
    ///
    /// # Errors
    /// [`ErrorKind::Model`] if an activation is not a value of the graph or
    /// its range is not finite; [`ErrorKind::Config`] for an activation type
    /// other than `U8`/`I8`.
    pub fn enable_qat(&mut self, acts: Vec<ActQuant>, act_dtype: DType, momentum: f32) -> Result<(), Error> {
        if !matches!(act_dtype, DType::U8 | DType::I8) {
            return Err(Error::new(
                ErrorKind::Config,
                format!("activations quantize to uint8 or int8, not {act_dtype:?}"),
            ));
        }
        let mut slot_act = HashMap::new();
        for (i, a) in acts.iter().enumerate() {
            let slot = *self.slot_of.get(&a.name).ok_or_else(|| {
                Error::new(
                    ErrorKind::Model,
                    format!("{}: '{}' is not a value of the graph", self.model_name, a.name),
                )
            })?;
            if !(a.min.is_finite() && a.max.is_finite() && a.min <= a.max) {
                return Err(Error::new(
                    ErrorKind::Model,
                    format!(
                        "{}: range [{}, {}] of '{}' cannot be quantized",
                        self.model_name, a.min, a.max, a.name
                    ),
                ));
            }
            slot_act.insert(slot, i);
        }
        let mut weights = HashMap::new();
        for st in &self.steps {
            let axis = match &st.op {
                Op::Conv { .. } => Some(0),
                Op::Gemm { trans_b, .. } => Some(if *trans_b { 0 } else { 1 }),
                Op::MatMul => Some(1),
                _ => None,
            };
            if let (Some(axis), Some(Src::Param(p))) = (axis, st.inputs.get(1)) {
                weights.insert(*p, axis);
            }
        }
        self.qat = Some(Qat {
            acts,
            act_dtype,
            momentum,
            weights,
            slot_act,
        });
        Ok(())
    }

    /// Folds a batch's observed activation ranges into the EMA ranges:
    /// `r = (1 - m) r + m r_batch` (PyTorch's `MovingAverageMinMaxObserver`).
    pub fn update_act_ranges(&mut self, observed: &[(f32, f32)]) {
        if let Some(q) = self.qat.as_mut() {
            let m = q.momentum;
            for (a, &(lo, hi)) in q.acts.iter_mut().zip(observed) {
                a.min = (1.0 - m) * a.min + m * lo;
                a.max = (1.0 - m) * a.max + m * hi;
            }
        }
    }

    /// Folds one step's batch statistics into the running statistics:
    /// `running = (1 - m) * running + m * batch`, the variance unbiased by
    /// `n / (n - 1)` with `n` the number of values per channel (PyTorch's
    /// BatchNorm2d).
    pub fn update_bn(&mut self, batch_stats: &[BatchStats]) {
        let m = self.bn_momentum;
        for (s, b) in self.bn.iter_mut().zip(batch_stats) {
            let n = b.count;
            let unbias = if n > 1 { n as f32 / (n as f32 - 1.0) } else { 1.0 };
            for (r, b) in s.mean.iter_mut().zip(&b.mean) {
                *r = (1.0 - m) * *r + m * b;
            }
            for (r, b) in s.var.iter_mut().zip(&b.var) {
                *r = (1.0 - m) * *r + m * b * unbias;
            }
        }
    }

    /// A copy of `base` (the model this graph was read from) with the current
    /// parameters and running statistics as its initializers.
    ///
    /// # Errors
    /// [`ErrorKind::Model`] if `base` lacks one of the initializers.
    pub fn to_model(&self, base: &Model) -> Result<Model, Error> {
        let mut m = base.clone();
        let mut put = |name: &str, shape: &[usize], data: &[f32]| -> Result<(), Error> {
            let t = kiln_ir::Tensor::from_vec(shape.to_vec(), data.to_vec())
                .map_err(|e| Error::new(ErrorKind::Model, format!("{}: '{name}': {e}", self.model_name)))?;
            match m.graph.initializers.get_mut(name) {
                Some(slot) => {
                    *slot = t;
                    Ok(())
                }
                None => Err(Error::new(
                    ErrorKind::Model,
                    format!("{}: initializer '{name}' is missing", self.model_name),
                )),
            }
        };
        for p in &self.params {
            put(&p.name, &p.shape, &p.data)?;
        }
        for s in &self.bn {
            put(&s.mean_name, &[s.mean.len()], &s.mean)?;
            put(&s.var_name, &[s.var.len()], &s.var)?;
        }
        Ok(m)
    }

    /// FNV-1a 64-bit hash of every parameter's and running statistic's bytes
    /// (little-endian f32), in plan order: equal hashes mean bit-identical weights.
    pub fn weights_hash(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |v: &[f32]| {
            for x in v {
                for b in x.to_le_bytes() {
                    h ^= b as u64;
                    h = h.wrapping_mul(0x0000_0100_0000_01b3);
                }
            }
        };
        for p in &self.params {
            eat(&p.data);
        }
        for s in &self.bn {
            eat(&s.mean);
            eat(&s.var);
        }
        h
    }
}
