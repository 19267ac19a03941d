//! Dependency analysis: which channels of which tensors must be removed
//! together.
//!
//! Every value with a known channel dim (axis 1 of a rank >= 2 value, NCHW)
//! gets one slot per channel; each op either unites the slots of its inputs
//! and outputs channel by channel (BatchNormalization, activations, depthwise
//! Conv, residual Add, pooling, Concat and Split with their offsets, the
//! channel shuffle's permutation...), or starts fresh channels (Conv, Gemm,
//! MatMul outputs), or is not understood and *locks* all its values. A
//! connected component of slots is one logical channel; components touching
//! the same set of values form one [`ChannelGroup`].

use crate::error::{model_name, Error, Result};
use kiln_ir::{infer, Attribute, Dim, Model, Tensor};
use std::collections::{BTreeMap, HashMap, HashSet};

/// What a member tensor of a [`ChannelGroup`] is to the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A value computed by the graph (activation) `[N, C, ...]`; the channel
    /// axis is 1.
    Activation,
    /// The output filters of a producer: Conv weight `[C_out, C_in / group,
    /// kH, kW]` axis 0 (depthwise Convs and squeeze-excite Convs included),
    /// Gemm `B` axis 0 when `transB` = 1 else axis 1, MatMul `B` `[K, N]`
    /// axis 1.
    Weight,
    /// The bias of such a producer (Conv `B` `[C_out]`, Gemm `C` `[N]` or `[1, N]`).
    Bias,
    /// A consumer's weights along its input-channel axis: Conv weight axis 1
    /// (group 1), Gemm `B` axis 1 when `transB` = 1 else axis 0 (`K`), MatMul
    /// `B` axis 0.
    InputWeight,
    /// BatchNormalization `scale` (gamma) `[C]`.
    BnScale,
    /// BatchNormalization `B` (beta) `[C]`.
    BnBias,
    /// BatchNormalization `input_mean` or `input_var` `[C]`.
    BnStats,
    /// A per-channel constant operand of an elementwise op (an Add/Mul
    /// operand `[C, 1, 1]` or `[1, C, 1, 1]`, a PRelu slope...).
    Constant,
}

/// One tensor of a [`ChannelGroup`]: channel `j` of the group is index
/// `indices[j]` of `tensor` along `axis`.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    /// Value or initializer name.
    pub tensor: String,
    /// The axis the group's channels run along.
    pub axis: usize,
    /// What the tensor is to the group.
    pub role: Role,
    /// For an [`Role::Activation`], the node producing it (`None` for a graph
    /// input); for the other roles, the node reading the initializer.
    pub node: Option<String>,
    /// Per group channel, its index in `tensor` along `axis` (length
    /// [`ChannelGroup::channels`]).
    pub indices: Vec<usize>,
}

/// A set of channels that must be removed together: channel `j` of the group
/// is one channel of every member tensor (see [`Member::indices`]); removing
/// it removes that index from every member (filters of the producers,
/// BatchNormalization parameters, the activations, the next layers' input
/// channels, the offsets of Concat and Split...).
///
/// Groups are *homogeneous*: all their channels touch the same members. A
/// tensor may be split over several groups (a Concat output is one slice per
/// input; ShuffleNetV2's channel shuffle sends the channels of one Conv to
/// different consumers), but removing any subset of a group's channels, with
/// at least one kept, leaves every member at least one channel.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelGroup {
    /// Position in [`crate::channel_groups`]'s result.
    pub id: usize,
    /// Number of channels.
    pub channels: usize,
    /// The member tensors: activations first (topological order), then the
    /// initializers indexed by them.
    pub members: Vec<Member>,
    /// Nodes that compute the group's channels with their own filters (Conv,
    /// depthwise Conv included, Gemm, MatMul): the [`Role::Weight`] members' nodes.
    pub producers: Vec<String>,
    /// Nodes that reduce over the group's channels (Conv with group 1, Gemm,
    /// MatMul): the [`Role::InputWeight`] members' nodes.
    pub consumers: Vec<String>,
    /// Nodes whose outputs are members (producers and every pass-through op:
    /// BatchNormalization, activations, Add, Concat...). Excluding any of
    /// them in [`crate::ChannelPruneConfig::exclude`] excludes the group.
    pub nodes: Vec<String>,
    /// False when the analysis cannot remove these channels (see `reason`).
    pub prunable: bool,
    /// Why the group is not prunable: a graph input or output, an op the
    /// analysis does not understand (named with its node), a grouped Conv...
    pub reason: Option<String>,
}

/// How the rewrite changes a node (decided by the analysis).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Rule {
    /// Nothing to change (pass-through ops, or all values locked).
    None,
    /// Conv: slice weight axis 1 by the input's kept channels (group 1) and
    /// weight axis 0 and bias by the output's; depthwise: also `group`.
    Conv { depthwise: bool },
    /// BatchNormalization: slice its four parameters by the output's channels.
    BatchNorm,
    /// Elementwise op with per-channel constants: (input, axis) to slice by
    /// the output's channels.
    Consts(Vec<(usize, usize)>),
    /// Split on the channels: new sizes.
    Split,
    /// Slice on the channels with step 1, from channel `start`; `pos` is the
    /// position of axis 1 in the `starts`/`ends` inputs.
    Slice { pos: usize, start: usize },
    /// Reshape keeping dims 0 and 1: the channel count in the shape input.
    Reshape,
    /// Gather on the channels with constant indices.
    Gather,
    /// Channel shuffle head (Reshape `[N, a, C / a, H, W]`), with the node
    /// indices of its Transpose and its closing Reshape.
    Shuffle { transpose: usize, tail: usize, a: usize },
    /// Gemm with its `transB`.
    Gemm { trans_b: bool },
    /// MatMul with a constant `[K, N]` right operand.
    MatMul,
}

/// A channel-carrying value: its name and its slots `base..base + c`.
#[derive(Debug, Clone)]
pub(crate) struct Slot {
    pub name: String,
    pub base: usize,
    pub c: usize,
    /// Index of the producing node (`None`: graph input).
    pub node: Option<usize>,
}

#[derive(Debug, Clone)]
struct Param {
    tensor: String,
    axis: usize,
    role: Role,
    node: usize,
    by: usize,
}

/// The analysis of a model, kept for the rewrite.
#[derive(Debug, Clone)]
pub(crate) struct Analysis {
    /// The model, validated (nodes in topological order), types as given.
    pub model: Model,
    /// Constants by name: initializers and `Constant` node outputs.
    pub consts: HashMap<String, Tensor>,
    pub slots: Vec<Slot>,
    pub slot_of: HashMap<String, usize>,
    /// Per slot channel (`base + c`): its component's root.
    pub root_of: Vec<usize>,
    pub rules: Vec<Rule>,
    pub groups: Vec<ChannelGroup>,
    /// Per group, per group channel: the component's root slot.
    pub roots: Vec<Vec<usize>>,
}

/// Ops applied to each channel independently, input 0 to output 0 (other
/// inputs are scalar parameters: Clip bounds).
const UNARY: &[&str] = &[
    "Relu",
    "LeakyRelu",
    "Elu",
    "Selu",
    "Sigmoid",
    "HardSigmoid",
    "HardSwish",
    "Tanh",
    "Softplus",
    "Softsign",
    "Gelu",
    "Erf",
    "Abs",
    "Neg",
    "Exp",
    "Log",
    "Sqrt",
    "Reciprocal",
    "Floor",
    "Ceil",
    "Identity",
    "Clip",
    "Dropout",
    "Cast",
];

/// Broadcasting elementwise ops (all inputs are data).
const ELEMENTWISE: &[&str] = &[
    "Add", "Sub", "Mul", "Div", "Max", "Min", "Sum", "Mean", "PRelu", "Pow",
];

/// Per-channel spatial ops.
const POOLS: &[&str] = &[
    "GlobalAveragePool",
    "GlobalMaxPool",
    "MaxPool",
    "AveragePool",
    "LpPool",
];

fn int_vec(t: &Tensor) -> Option<Vec<i64>> {
    t.to_i64_vec().ok()
}

/// Normalizes an axis attribute against `rank`.
fn norm_axis(a: i64, rank: usize) -> Option<usize> {
    let r = rank as i64;
    let a = if a < 0 { a + r } else { a };
    (0..r).contains(&a).then_some(a as usize)
}

struct Builder<'a> {
    m: &'a Model,
    consts: HashMap<String, Tensor>,
    dims: HashMap<String, Vec<Dim>>,
    users: HashMap<String, Vec<usize>>,
    outputs: HashSet<String>,
    producer: HashMap<String, usize>,
    slots: Vec<Slot>,
    slot_of: HashMap<String, usize>,
    parent: Vec<usize>,
    locks: HashMap<usize, String>,
    params: Vec<Param>,
    rules: Vec<Rule>,
    skip: HashSet<usize>,
}

impl<'a> Builder<'a> {
    fn known(&self, name: &str) -> Option<Vec<usize>> {
        if let Some(t) = self.consts.get(name) {
            return Some(t.shape().to_vec());
        }
        self.dims.get(name)?.iter().map(|d| d.known()).collect()
    }

    /// The shape of `name`, dims possibly symbolic.
    fn shape(&self, name: &str) -> Option<Vec<Dim>> {
        if let Some(t) = self.consts.get(name) {
            return Some(t.shape().iter().map(|&d| Dim::Known(d)).collect());
        }
        self.dims.get(name).cloned()
    }

    /// The slot of value `name`, allocated on first use; `None` for constants,
    /// omitted inputs and values without a known channel dim.
    fn slot(&mut self, name: &str) -> Option<usize> {
        if name.is_empty() || self.consts.contains_key(name) {
            return None;
        }
        if let Some(&s) = self.slot_of.get(name) {
            return Some(s);
        }
        let dims = self.dims.get(name)?;
        if dims.len() < 2 {
            return None;
        }
        let c = dims[1].known().filter(|&c| c >= 1)?;
        let base = self.parent.len();
        self.parent.extend(base..base + c);
        let s = self.slots.len();
        self.slots.push(Slot {
            name: name.into(),
            base,
            c,
            node: self.producer.get(name).copied(),
        });
        self.slot_of.insert(name.into(), s);
        Some(s)
    }

    fn find(&mut self, mut s: usize) -> usize {
        while self.parent[s] != s {
            self.parent[s] = self.parent[self.parent[s]];
            s = self.parent[s];
        }
        s
    }

    /// Unites channel `ca` of slot `a` with channel `cb` of slot `b`.
    fn union(&mut self, a: usize, ca: usize, b: usize, cb: usize) {
        let (x, y) = (self.slots[a].base + ca, self.slots[b].base + cb);
        let (rx, ry) = (self.find(x), self.find(y));
        if rx != ry {
            let (lo, hi) = if rx < ry { (rx, ry) } else { (ry, rx) };
            self.parent[hi] = lo;
        }
    }

    /// Unites slots `a` and `b` channel by channel (same channel count).
    fn union_all(&mut self, a: usize, b: usize) {
        for c in 0..self.slots[a].c {
            self.union(a, c, b, c);
        }
    }

    fn lock(&mut self, s: usize, reason: String) {
        self.locks.entry(s).or_insert(reason);
    }

    /// Locks every channel-carrying input and output of node `i`.
    fn lock_all(&mut self, i: usize, why: &str) {
        let n = &self.m.graph.nodes[i];
        let reason = format!("node '{}' ({}): {why}", n.name, n.op_type);
        let names: Vec<String> = n.inputs.iter().chain(&n.outputs).cloned().collect();
        for v in names {
            if let Some(s) = self.slot(&v) {
                self.lock(s, reason.clone());
            }
        }
    }

    /// Records that constant `tensor` of node `node` is indexed along `axis`
    /// by the channels of slot `by`; false (nothing recorded) unless it is a
    /// constant whose `axis` has exactly that many entries.
    fn param(&mut self, node: usize, tensor: &str, axis: usize, role: Role, by: usize) -> bool {
        let Some(t) = self.consts.get(tensor) else {
            return false;
        };
        if t.shape().get(axis) != Some(&self.slots[by].c) {
            return false;
        }
        self.params.push(Param {
            tensor: tensor.into(),
            axis,
            role,
            node,
            by,
        });
        true
    }

    /// Number of channels of slot `s`.
    fn c(&self, s: usize) -> usize {
        self.slots[s].c
    }

    fn single_user(&self, value: &str) -> Option<usize> {
        if self.outputs.contains(value) {
            return None;
        }
        match self.users.get(value).map(|u| u.as_slice()) {
            Some([u]) => Some(*u),
            _ => None,
        }
    }

    /// Visits node `i`; returns its rule, or `Err(why)` to lock the node.
    fn visit(&mut self, i: usize) -> Result<Rule, String> {
        let m = self.m;
        let n = &m.graph.nodes[i];
        if !(n.domain.is_empty() || n.domain == "ai.onnx") {
            return Err(format!(
                "op of domain '{}' not understood by the channel analysis",
                n.domain
            ));
        }
        let op = n.op_type.as_str();
        let input = |k: usize| n.inputs.get(k).map(|s| s.as_str()).unwrap_or("");
        let y_name = n.outputs.first().map(|s| s.as_str()).unwrap_or("");
        let extra_outputs = n.outputs.iter().skip(1).any(|o| !o.is_empty());
        match op {
            "Conv" => {
                let x = self.slot(input(0)).ok_or("input without a known channel dim")?;
                let y = self.slot(y_name).ok_or("output without a known channel dim")?;
                let w = self.consts.get(input(1)).ok_or("weight is not a constant")?;
                let ws = w.shape().to_vec();
                if ws.len() < 3 {
                    return Err("weight rank below 3".into());
                }
                let g = n.attr_int("group", 1).map_err(|e| e.to_string())?;
                let (cin, cout) = (self.c(x), self.c(y));
                if ws[0] != cout || g < 1 || ws[1].checked_mul(g as usize) != Some(cin) {
                    return Err("weight shape does not fit the input and output channels".into());
                }
                let bias = input(2);
                let depthwise = g > 1;
                if depthwise && !(g as usize == cin && cout == cin) {
                    return Err(format!(
                        "grouped convolution (group {g}, {cin} -> {cout} channels) is not handled"
                    ));
                }
                let w = input(1).to_string();
                if !depthwise && !self.param(i, &w, 1, Role::InputWeight, x) {
                    return Err("weight does not fit the input channels".into());
                }
                if !self.param(i, &w, 0, Role::Weight, y) {
                    return Err("weight does not fit the output channels".into());
                }
                if !bias.is_empty() && !self.param(i, bias, 0, Role::Bias, y) {
                    return Err("bias is not a constant [C_out]".into());
                }
                if depthwise {
                    self.union_all(x, y);
                }
                Ok(Rule::Conv { depthwise })
            }
            "BatchNormalization" => {
                if extra_outputs || n.attr_int("training_mode", 0).map_err(|e| e.to_string())? != 0 {
                    return Err("training-mode BatchNormalization".into());
                }
                let x = self.slot(input(0)).ok_or("input without a known channel dim")?;
                let y = self.slot(y_name).ok_or("output without a known channel dim")?;
                if self.c(x) != self.c(y) {
                    return Err("input and output channels differ".into());
                }
                let roles = [Role::BnScale, Role::BnBias, Role::BnStats, Role::BnStats];
                for (k, role) in (1..5).zip(roles) {
                    let p = input(k).to_string();
                    let fits = self.consts.get(&p).is_some_and(|t| t.rank() == 1);
                    if !fits || !self.param(i, &p, 0, role, y) {
                        return Err(format!("parameter '{p}' is not a constant [C]"));
                    }
                }
                self.union_all(x, y);
                Ok(Rule::BatchNorm)
            }
            _ if UNARY.contains(&op) => {
                if extra_outputs {
                    return Err("second output in use".into());
                }
                let x = self.slot(input(0)).ok_or("input without a known channel dim")?;
                let y = self.slot(y_name).ok_or("output without a known channel dim")?;
                if self.c(x) != self.c(y) {
                    return Err("output channels differ from the input's".into());
                }
                self.union_all(x, y);
                Ok(Rule::None)
            }
            "Resize" | "Upsample" => {
                // Spatial resampling per channel, by scales (sizes would name the channel count).
                let sizes = if op == "Resize" { input(3) } else { "" };
                if !sizes.is_empty() || extra_outputs {
                    return Err("Resize by sizes is not handled".into());
                }
                let x = self.slot(input(0)).ok_or("input without a known channel dim")?;
                let y = self.slot(y_name).ok_or("output without a known channel dim")?;
                if self.c(x) != self.c(y) {
                    return Err("output channels differ from the input's".into());
                }
                self.union_all(x, y);
                Ok(Rule::None)
            }
            _ if op.starts_with("Reduce") => {
                // A reduction over spatial axes only keeps the channels at axis 1.
                let x = self.slot(input(0)).ok_or("input without a known channel dim")?;
                let y = self.slot(y_name).ok_or("output without a known channel dim")?;
                let rank = self
                    .shape(input(0))
                    .map(|d| d.len())
                    .ok_or("input shape unknown")?;
                let axes = match n.attr_ints_opt("axes").map_err(|e| e.to_string())? {
                    Some(a) => a,
                    None if !input(1).is_empty() => self
                        .consts
                        .get(input(1))
                        .and_then(int_vec)
                        .ok_or("axes are not constant")?,
                    None => Vec::new(),
                };
                if axes.is_empty() || axes.iter().any(|&a| norm_axis(a, rank).is_none_or(|a| a < 2)) {
                    return Err("reduction over the batch or channel axis".into());
                }
                if self.c(x) != self.c(y) {
                    return Err("output channels differ from the input's".into());
                }
                self.union_all(x, y);
                Ok(Rule::None)
            }
            _ if ELEMENTWISE.contains(&op) => self.elementwise(i),
            _ if POOLS.contains(&op) => {
                if extra_outputs {
                    return Err("second output (indices) in use".into());
                }
                let x = self.slot(input(0)).ok_or("input without a known channel dim")?;
                let y = self.slot(y_name).ok_or("output without a known channel dim")?;
                if self.c(x) != self.c(y) {
                    return Err("input and output channels differ".into());
                }
                self.union_all(x, y);
                Ok(Rule::None)
            }
            "Reshape" | "Flatten" | "Squeeze" | "Unsqueeze" => {
                if op == "Reshape" {
                    if let Some(rule) = self.shuffle(i) {
                        return Ok(rule);
                    }
                }
                let x = self.slot(input(0)).ok_or("input without a known channel dim")?;
                let y = self.slot(y_name).ok_or("output without a known channel dim")?;
                let (xd, yd) = (
                    self.known(input(0)).ok_or("input shape unknown")?,
                    self.known(y_name).ok_or("output shape unknown")?,
                );
                let keeps_channels = xd.len() >= 2
                    && yd.len() >= 2
                    && xd[0] == yd[0]
                    && xd[1] == yd[1]
                    && xd[2..].iter().product::<usize>() == yd[2..].iter().product::<usize>();
                if !keeps_channels {
                    return Err("reshape that moves the channels".into());
                }
                let rule = match op {
                    "Flatten" => {
                        let a = norm_axis(n.attr_int("axis", 1).map_err(|e| e.to_string())?, xd.len());
                        if a != Some(1) {
                            return Err("Flatten axis is not 1".into());
                        }
                        Rule::None
                    }
                    "Squeeze" | "Unsqueeze" => {
                        let axes = match n.attr_ints_opt("axes").map_err(|e| e.to_string())? {
                            Some(a) => a,
                            None => self
                                .consts
                                .get(input(1))
                                .and_then(int_vec)
                                .ok_or("axes are not constant")?,
                        };
                        let rank = if op == "Squeeze" { xd.len() } else { yd.len() };
                        if axes.is_empty() || axes.iter().any(|&a| norm_axis(a, rank).is_none_or(|a| a < 2)) {
                            return Err("axes touch the batch or channel dim".into());
                        }
                        Rule::None
                    }
                    _ => {
                        let shape = self.consts.get(input(1)).ok_or("shape is not a constant")?;
                        if int_vec(shape).is_none_or(|s| s.len() < 2) {
                            return Err("shape is not an int64 list of rank >= 2".into());
                        }
                        Rule::Reshape
                    }
                };
                self.union_all(x, y);
                Ok(rule)
            }
            "Concat" => {
                let y = self.slot(y_name).ok_or("output without a known channel dim")?;
                let rank = self
                    .known(y_name)
                    .map(|d| d.len())
                    .ok_or("output shape unknown")?;
                let a = norm_axis(n.attr_int("axis", 0).map_err(|e| e.to_string())?, rank);
                let ins: Vec<Option<usize>> = n.inputs.iter().map(|v| self.slot(v)).collect();
                if a != Some(1) {
                    // Concat along another axis: each input's channels are the output's.
                    for s in ins {
                        let s = s.ok_or("constant or channel-less input")?;
                        if self.c(s) != self.c(y) {
                            return Err("input and output channels differ".into());
                        }
                        self.union_all(s, y);
                    }
                    return Ok(Rule::None);
                }
                let mut off = 0;
                let mut pairs = Vec::new();
                for s in ins {
                    let s = s.ok_or("constant or channel-less input")?;
                    pairs.push((s, off));
                    off += self.c(s);
                }
                if off != self.c(y) {
                    return Err("input channels do not add up to the output's".into());
                }
                for (s, off) in pairs {
                    for c in 0..self.c(s) {
                        self.union(s, c, y, off + c);
                    }
                }
                Ok(Rule::None)
            }
            "Split" => {
                let x = self.slot(input(0)).ok_or("input without a known channel dim")?;
                let rank = self
                    .known(input(0))
                    .map(|d| d.len())
                    .ok_or("input shape unknown")?;
                let a = norm_axis(n.attr_int("axis", 0).map_err(|e| e.to_string())?, rank);
                let mut outs = Vec::new();
                for o in &n.outputs {
                    outs.push(self.slot(o).ok_or("omitted or channel-less output")?);
                }
                if a != Some(1) {
                    for s in outs {
                        if self.c(s) != self.c(x) {
                            return Err("input and output channels differ".into());
                        }
                        self.union_all(x, s);
                    }
                    return Ok(Rule::None);
                }
                if n.inputs.len() > 1 && !input(1).is_empty() && !self.consts.contains_key(input(1)) {
                    return Err("split sizes are not constant".into());
                }
                let mut off = 0;
                for &s in &outs {
                    for c in 0..self.c(s) {
                        self.union(x, off + c, s, c);
                    }
                    off += self.c(s);
                }
                if off != self.c(x) {
                    return Err("output channels do not add up to the input's".into());
                }
                Ok(Rule::Split)
            }
            "Slice" => {
                let x = self.slot(input(0)).ok_or("input without a known channel dim")?;
                let y = self.slot(y_name).ok_or("output without a known channel dim")?;
                let xd = self.known(input(0)).ok_or("input shape unknown")?;
                let get = |k: usize| -> Result<Option<Vec<i64>>, String> {
                    if input(k).is_empty() {
                        return Ok(None);
                    }
                    let t = self
                        .consts
                        .get(input(k))
                        .ok_or("starts/ends/axes/steps are not constant")?;
                    Ok(Some(int_vec(t).ok_or("non-integer starts/ends/axes/steps")?))
                };
                if n.inputs.len() < 3 {
                    return Err("Slice with attributes (opset < 10) is not handled".into());
                }
                let starts = get(1)?.ok_or("no starts")?;
                let axes = get(3)?.unwrap_or_else(|| (0..starts.len() as i64).collect());
                let steps = get(4)?.unwrap_or_else(|| vec![1; starts.len()]);
                let pos = axes.iter().position(|&a| norm_axis(a, xd.len()) == Some(1));
                let Some(pos) = pos else {
                    if self.c(x) != self.c(y) {
                        return Err("input and output channels differ".into());
                    }
                    self.union_all(x, y);
                    return Ok(Rule::None);
                };
                if steps.get(pos) != Some(&1) {
                    return Err("slice of the channels with a step other than 1".into());
                }
                let c = self.c(x) as i64;
                let s = starts.get(pos).copied().ok_or("starts too short")?;
                let start = if s < 0 { s + c } else { s }.clamp(0, c) as usize;
                if start + self.c(y) > self.c(x) {
                    return Err("slice does not fit the channels".into());
                }
                for k in 0..self.c(y) {
                    self.union(x, start + k, y, k);
                }
                Ok(Rule::Slice { pos, start })
            }
            "Gather" => {
                let x = self.slot(input(0)).ok_or("input without a known channel dim")?;
                let y = self.slot(y_name).ok_or("output without a known channel dim")?;
                let rank = self
                    .known(input(0))
                    .map(|d| d.len())
                    .ok_or("input shape unknown")?;
                if norm_axis(n.attr_int("axis", 0).map_err(|e| e.to_string())?, rank) != Some(1) {
                    return Err("Gather along another axis than the channels".into());
                }
                let idx = self.consts.get(input(1)).ok_or("indices are not constant")?;
                let idx = (idx.rank() == 1)
                    .then(|| int_vec(idx))
                    .flatten()
                    .ok_or("indices are not a 1-D integer list")?;
                let c = self.c(x) as i64;
                if idx.len() != self.c(y) {
                    return Err("indices do not fit the output channels".into());
                }
                for (k, &v) in idx.iter().enumerate() {
                    let v = if v < 0 { v + c } else { v };
                    if !(0..c).contains(&v) {
                        return Err("index out of range".into());
                    }
                    self.union(x, v as usize, y, k);
                }
                Ok(Rule::Gather)
            }
            "Gemm" => {
                let a = self.slot(input(0)).ok_or("input without a known channel dim")?;
                let y = self.slot(y_name).ok_or("output without a known channel dim")?;
                if self.known(input(0)).map(|d| d.len()) != Some(2) {
                    return Err("input is not [M, K]".into());
                }
                if n.attr_int("transA", 0).map_err(|e| e.to_string())? != 0 {
                    return Err("transA = 1 is not handled".into());
                }
                let trans_b = n.attr_int("transB", 0).map_err(|e| e.to_string())? != 0;
                let b = input(1).to_string();
                if self.consts.get(&b).map(|t| t.rank()) != Some(2) {
                    return Err("B is not a constant matrix".into());
                }
                let (k_axis, n_axis) = if trans_b { (1, 0) } else { (0, 1) };
                if !self.param(i, &b, k_axis, Role::InputWeight, a)
                    || !self.param(i, &b, n_axis, Role::Weight, y)
                {
                    return Err("B does not fit the input and output".into());
                }
                let c = input(2).to_string();
                if !c.is_empty() {
                    let cs = self.known(&c).ok_or("C shape unknown")?;
                    let per_n = match cs.as_slice() {
                        [] | [1] | [1, 1] if self.c(y) != 1 => false,
                        [_] => true,
                        [1, _] => {
                            if !self.param(i, &c, 1, Role::Bias, y) {
                                return Err("C does not fit the output".into());
                            }
                            false
                        }
                        _ => return Err("C is not a scalar, [N] or [1, N]".into()),
                    };
                    if per_n && !self.param(i, &c, 0, Role::Bias, y) {
                        return Err("C is not a constant [N]".into());
                    }
                }
                Ok(Rule::Gemm { trans_b })
            }
            "MatMul" => {
                let a = self.slot(input(0)).ok_or("input without a known channel dim")?;
                let y = self.slot(y_name).ok_or("output without a known channel dim")?;
                if self.known(input(0)).map(|d| d.len()) != Some(2) {
                    return Err("input is not [M, K]".into());
                }
                let b = input(1).to_string();
                if self.consts.get(&b).map(|t| t.rank()) != Some(2) {
                    return Err("B is not a constant matrix".into());
                }
                if !self.param(i, &b, 0, Role::InputWeight, a) || !self.param(i, &b, 1, Role::Weight, y) {
                    return Err("B does not fit the input and output".into());
                }
                Ok(Rule::MatMul)
            }
            "Constant" => Ok(Rule::None),
            _ => Err("op not understood by the channel analysis".into()),
        }
    }

    /// Broadcasting elementwise ops: inputs with the output's channel count
    /// at the aligned axis are united (values) or sliced (constants); inputs
    /// broadcast over the channels are left alone.
    fn elementwise(&mut self, i: usize) -> Result<Rule, String> {
        let n = &self.m.graph.nodes[i];
        let yn = n.outputs.first().cloned().unwrap_or_default();
        let y = self.slot(&yn).ok_or("output without a known channel dim")?;
        let yd = self.shape(&yn).ok_or("output shape unknown")?;
        let cy = self.c(y);
        let mut consts = Vec::new();
        for (k, v) in n.inputs.iter().enumerate() {
            if v.is_empty() {
                continue;
            }
            let d = self.shape(v).ok_or("input shape unknown")?;
            // The input's axis aligned with the output's axis 1 (numpy broadcasting).
            let Some(a) = (d.len() + 1).checked_sub(yd.len()) else {
                continue; // too low a rank to reach the channels: broadcast
            };
            let Some(da) = d[a].known() else {
                return Err(format!("input '{v}' has a symbolic dim at the channel axis"));
            };
            match da {
                1 if cy != 1 => {}
                c if c == cy => {
                    if self.consts.contains_key(v) {
                        if !self.param(i, v, a, Role::Constant, y) {
                            return Err(format!("constant '{v}' does not fit the channels"));
                        }
                        consts.push((k, a));
                    } else {
                        let s = self.slot(v).ok_or("input without a known channel dim")?;
                        if a != 1 {
                            return Err(format!("input '{v}' of lower rank carries the channels"));
                        }
                        self.union_all(s, y);
                    }
                }
                _ => return Err(format!("input '{v}' does not broadcast over the channels")),
            }
        }
        Ok(if consts.is_empty() {
            Rule::None
        } else {
            Rule::Consts(consts)
        })
    }

    /// ShuffleNet's channel shuffle at Reshape `i`: Reshape `[N, C, H, W]` to
    /// `[N, a, C / a, H, W]`, Transpose `[0, 2, 1, 3, 4]`, Reshape back to
    /// `[N, C, H, W]`, each intermediate used once. Output channel `j` is
    /// input channel `(j % a) * (C / a) + j / a`.
    fn shuffle(&mut self, i: usize) -> Option<Rule> {
        let g = &self.m.graph;
        let r1 = &g.nodes[i];
        let mid = r1.outputs.first()?;
        let t = self.single_user(mid)?;
        let tn = &g.nodes[t];
        if tn.op_type != "Transpose" || tn.attr_ints_opt("perm").ok()?? != [0, 2, 1, 3, 4] {
            return None;
        }
        let r2 = self.single_user(tn.outputs.first()?)?;
        let r2n = &g.nodes[r2];
        if r2n.op_type != "Reshape" || !self.consts.contains_key(r2n.inputs.get(1)?) {
            return None;
        }
        let (x, y) = (r1.inputs.first()?.clone(), r2n.outputs.first()?.clone());
        let xd = self.known(&x)?;
        let md = self.known(mid)?;
        let yd = self.known(&y)?;
        let [n, c, h, w] = xd[..] else { return None };
        let [n2, a, b, h2, w2] = md[..] else { return None };
        if (n2, h2, w2) != (n, h, w) || a.checked_mul(b) != Some(c) || yd != xd || a == 0 {
            return None;
        }
        for shape in [r1.inputs.get(1)?, r2n.inputs.get(1)?] {
            int_vec(self.consts.get(shape)?)?;
        }
        let (xs, ys) = (self.slot(&x)?, self.slot(&y)?);
        for j in 0..c {
            self.union(xs, (j % a) * b + j / a, ys, j);
        }
        self.skip.insert(t);
        self.skip.insert(r2);
        Some(Rule::Shuffle {
            transpose: t,
            tail: r2,
            a,
        })
    }
}

/// Validates a clone of `model` (topological order) and returns it with a
/// second clone whose symbolic leading input dims are bound to 1 and whose
/// types are inferred.
fn prepare(model: &Model) -> Result<(Model, Model)> {
    let name = model_name(model);
    let err = |source| Error::Model {
        model: name.clone(),
        source: Box::new(source),
    };
    let mut m = model.clone();
    m.graph.validate().map_err(err)?;
    let mut bound = m.clone();
    for i in &mut bound.graph.inputs {
        if let Some(s) = &mut i.ty.shape {
            if let Some(first @ Dim::Sym(_)) = s.first_mut() {
                *first = Dim::Known(1);
            }
        }
    }
    bound.graph.value_types.clear();
    infer::infer_types(&mut bound).map_err(err)?;
    Ok((m, bound))
}

/// Constants of a graph: initializers and the outputs of `Constant` nodes
/// with a `value` tensor.
pub(crate) fn constants(m: &Model) -> HashMap<String, Tensor> {
    let mut c: HashMap<String, Tensor> = m
        .graph
        .initializers
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for n in &m.graph.nodes {
        if n.op_type == "Constant" {
            if let (Some(Attribute::Tensor(t)), Some(o)) = (n.attrs.get("value"), n.outputs.first()) {
                c.insert(o.clone(), t.clone());
            }
        }
    }
    c
}

/// Runs the analysis.
pub(crate) fn analyze(model: &Model) -> Result<Analysis> {
    let (m, bound) = prepare(model)?;
    let g = &bound.graph;
    let mut users: HashMap<String, Vec<usize>> = HashMap::new();
    let mut producer = HashMap::new();
    for (i, n) in g.nodes.iter().enumerate() {
        for v in n.inputs.iter().filter(|v| !v.is_empty()) {
            let u = users.entry(v.clone()).or_default();
            if u.last() != Some(&i) {
                u.push(i);
            }
        }
        for o in n.outputs.iter().filter(|o| !o.is_empty()) {
            producer.insert(o.clone(), i);
        }
    }
    let mut dims: HashMap<String, Vec<Dim>> = HashMap::new();
    for (k, t) in &g.value_types {
        if let Some(s) = &t.shape {
            dims.insert(k.clone(), s.clone());
        }
    }
    for i in &g.inputs {
        if let Some(s) = &i.ty.shape {
            dims.entry(i.name.clone()).or_insert_with(|| s.clone());
        }
    }
    let mut b = Builder {
        m: &bound,
        consts: constants(&bound),
        dims,
        users,
        outputs: g.outputs.iter().map(|o| o.name.clone()).collect(),
        producer,
        slots: Vec::new(),
        slot_of: HashMap::new(),
        parent: Vec::new(),
        locks: HashMap::new(),
        params: Vec::new(),
        rules: Vec::new(),
        skip: HashSet::new(),
    };
    for inp in &g.inputs {
        if let Some(s) = b.slot(&inp.name) {
            b.lock(s, format!("graph input '{}'", inp.name));
        }
    }
    for i in 0..g.nodes.len() {
        if b.skip.contains(&i) {
            b.rules.push(Rule::None);
            continue;
        }
        let params_before = b.params.len();
        match b.visit(i) {
            Ok(r) => b.rules.push(r),
            Err(why) => {
                // Nothing of a locked node is rewritten.
                b.params.truncate(params_before);
                b.lock_all(i, &why);
                b.rules.push(Rule::None);
            }
        }
    }
    for o in &g.outputs {
        if let Some(s) = b.slot(&o.name) {
            b.lock(s, format!("graph output '{}'", o.name));
        }
    }
    // Values that some node reads in a way the analysis does not model are
    // locked by lock_all; a node locked after it united slots keeps its
    // unions, which only makes groups larger (never wrong).
    let roots: Vec<usize> = (0..b.parent.len()).map(|s| b.find(s)).collect();
    let Builder {
        slots,
        slot_of,
        locks,
        params,
        rules,
        consts,
        ..
    } = b;
    let (groups, group_roots) = form_groups(&bound, &slots, &roots, &locks, &params);
    Ok(Analysis {
        model: m,
        consts,
        slots,
        slot_of,
        root_of: roots,
        rules,
        groups,
        roots: group_roots,
    })
}

/// Components with the same member values become one group.
fn form_groups(
    m: &Model,
    slots: &[Slot],
    roots: &[usize],
    locks: &HashMap<usize, String>,
    params: &[Param],
) -> (Vec<ChannelGroup>, Vec<Vec<usize>>) {
    // Per component: its (slot, channel) pairs in slot order.
    let mut comps: BTreeMap<usize, Vec<(usize, usize)>> = BTreeMap::new();
    for (s, slot) in slots.iter().enumerate() {
        for c in 0..slot.c {
            comps.entry(roots[slot.base + c]).or_default().push((s, c));
        }
    }
    // Signature (member slots) -> components, in order of first appearance.
    let mut by_sig: BTreeMap<Vec<usize>, Vec<usize>> = BTreeMap::new();
    let mut order: Vec<Vec<usize>> = Vec::new();
    for (&root, pairs) in &comps {
        let sig: Vec<usize> = pairs.iter().map(|p| p.0).collect();
        let e = by_sig.entry(sig.clone()).or_default();
        if e.is_empty() {
            order.push(sig);
        }
        e.push(root);
    }
    // Deterministic order: by first member slot, then first channel.
    order.sort_by_key(|sig| {
        let first = by_sig[sig][0];
        (sig[0], comps[&first][0].1)
    });
    let mut params_by: HashMap<usize, Vec<&Param>> = HashMap::new();
    for p in params {
        params_by.entry(p.by).or_default().push(p);
    }
    let node_name = |i: usize| m.graph.nodes[i].name.clone();
    let mut groups = Vec::new();
    let mut all_roots = Vec::new();
    for sig in order {
        let mut croots = by_sig[&sig].clone();
        croots.sort_by_key(|r| comps[r][0].1);
        let dup = sig.windows(2).any(|w| w[0] == w[1]);
        let mut members = Vec::new();
        let mut reason = None;
        let mut nodes = Vec::new();
        let mut distinct: Vec<usize> = sig.clone();
        distinct.dedup();
        for &s in &distinct {
            let indices: Vec<usize> = croots
                .iter()
                .map(|r| comps[r].iter().find(|p| p.0 == s).map_or(0, |p| p.1))
                .collect();
            if reason.is_none() {
                reason = locks.get(&s).cloned();
            }
            let slot = &slots[s];
            if let Some(ni) = slot.node {
                let nn = node_name(ni);
                if !nodes.contains(&nn) {
                    nodes.push(nn);
                }
            }
            members.push(Member {
                tensor: slot.name.clone(),
                axis: 1,
                role: Role::Activation,
                node: slot.node.map(node_name),
                indices: indices.clone(),
            });
            for p in params_by.get(&s).into_iter().flatten() {
                members.push(Member {
                    tensor: p.tensor.clone(),
                    axis: p.axis,
                    role: p.role,
                    node: Some(node_name(p.node)),
                    indices: indices.clone(),
                });
            }
        }
        if dup && reason.is_none() {
            reason = Some(format!(
                "a channel of '{}' meets another channel of the same tensor",
                slots[sig[0]].name
            ));
        }
        let of_role = |role: Role| {
            let mut v: Vec<String> = Vec::new();
            for mb in members.iter().filter(|mb| mb.role == role) {
                if let Some(nn) = &mb.node {
                    if !v.contains(nn) {
                        v.push(nn.clone());
                    }
                }
            }
            v
        };
        groups.push(ChannelGroup {
            id: groups.len(),
            channels: croots.len(),
            producers: of_role(Role::Weight),
            consumers: of_role(Role::InputWeight),
            members,
            nodes,
            prunable: reason.is_none(),
            reason,
        });
        all_roots.push(croots);
    }
    (groups, all_roots)
}

/// The channel groups of `model` (an fp32 NCHW model; BatchNormalization may
/// be folded or not): every set of channels that must be removed together,
/// with its members, producers and consumers, and whether the analysis can
/// prune it.
///
/// Ops handled (ONNX default domain): Conv (group 1: produces and consumes;
/// depthwise, `group` = C_in = C_out: passes channels through),
/// BatchNormalization (inference mode), elementwise activations (Relu, Clip,
/// HardSwish, HardSigmoid, Sigmoid, ... Cast), broadcasting Add/Sub/Mul/Div/
/// Max/Min/Sum/Mean/PRelu/Pow (all inputs carrying the channels share one
/// group, so residual Adds and squeeze-excite scales are pruned together;
/// per-channel constants are sliced), pooling, Flatten/Reshape/Squeeze/
/// Unsqueeze that keep dims 0 and 1, Concat and Split (channel offsets),
/// Slice on the channels (step 1), Gather on the channels (constant indices),
/// ShuffleNet's channel shuffle (Reshape-Transpose-Reshape, as an exact
/// permutation), Gemm and MatMul on `[M, K]` inputs with constant weights.
/// Anything else (other ops, grouped Convs, non-constant weights, unknown
/// shapes) locks the channels of its inputs and outputs: their groups are
/// not prunable, and name the node. The graph inputs' and outputs' channels
/// are never prunable.
///
/// Errors: the model fails validation or shape inference
/// ([`crate::ErrorKind::Model`]).
pub fn channel_groups(model: &Model) -> Result<Vec<ChannelGroup>> {
    Ok(analyze(model)?.groups)
}
