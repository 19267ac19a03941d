//! Channel selection (criteria, layer-wise and global ranking) and the
//! rewrite into a physically smaller dense model.

use crate::analysis::{analyze, Analysis, ChannelGroup, Role, Rule};
use crate::error::{model_name, Error, Result};
use crate::stats;
use kiln_ir::{infer, map_data, Attribute, DType, Model, Node, Tensor};
use std::collections::{BTreeMap, HashMap, HashSet};

/// How channels are ranked within a group (the lowest scores are removed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Criterion {
    /// L1 norm of each output filter, `sum_i |W[c, i]|`, summed over the
    /// group's producers ([`ChannelGroup::producers`]: Convs, depthwise ones
    /// included, Gemms, MatMuls). Li et al., "Pruning Filters for Efficient
    /// ConvNets", ICLR 2017.
    L1,
    /// L2 norm of each output filter, `sqrt(sum_i W[c, i]^2)`, summed over
    /// the group's producers (the norm of He et al., "Soft Filter Pruning for
    /// Accelerating Deep Convolutional Neural Networks", IJCAI 2018).
    L2,
    /// `|gamma_c|`, the BatchNormalization scale, summed over the group's
    /// BatchNormalizations (Network Slimming: Liu et al., "Learning Efficient
    /// Convolutional Networks through Network Slimming", ICCV 2017, where an
    /// L1 penalty on gamma during training makes it a channel's importance).
    /// Groups without a BatchNormalization (BN folded into the Convs,
    /// squeeze-excite reductions, hidden Gemms) are left unpruned
    /// ([`GroupStatus::NoScore`]).
    BnScale,
}

impl Criterion {
    /// `l1`, `l2` or `bn-scale`.
    pub fn name(self) -> &'static str {
        match self {
            Criterion::L1 => "l1",
            Criterion::L2 => "l2",
            Criterion::BnScale => "bn-scale",
        }
    }
}

/// What [`prune_channels`] removes.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelPruneConfig {
    /// Fraction of each prunable group's channels to remove, in `[0, 1)`:
    /// `floor(ratio x C)` of a group of `C` channels (then at least one
    /// channel is kept and the kept count is rounded up to `round_to`). With
    /// `global`, the fraction of all prunable channels together.
    pub ratio: f32,
    /// The ranking criterion.
    pub criterion: Criterion,
    /// Global ranking: every prunable channel of every group competes, each
    /// score divided by the mean score of its group (`s_c / mean_group(s)`,
    /// the "mean" normalizer of Torch-Pruning, Fang et al., "DepGraph:
    /// Towards Any Structural Pruning", CVPR 2023), and the
    /// `floor(ratio x total)` lowest go, keeping at least one channel per
    /// group; `round_to` then adds some back. False: layer-wise, every group
    /// loses the same fraction.
    pub global: bool,
    /// Node names or op types whose *output* channels are kept: a group is
    /// left whole if one of its [`ChannelGroup::nodes`] matches. (The input
    /// channels of an excluded Conv may still shrink when the group feeding
    /// it is pruned.) Each entry must name a node or an op type of the model.
    pub exclude: Vec<String>,
    /// Kept channel counts are rounded up to a multiple of this (capped at
    /// the group's size), at least 1. 8 suits SIMD kernels (AVX2: 8 f32 lanes).
    pub round_to: usize,
}

impl Default for ChannelPruneConfig {
    /// Layer-wise L1, ratio 0.5, nothing excluded, `round_to` 1.
    fn default() -> Self {
        ChannelPruneConfig {
            ratio: 0.5,
            criterion: Criterion::L1,
            global: false,
            exclude: Vec::new(),
            round_to: 1,
        }
    }
}

/// What happened to one group.
#[derive(Debug, Clone, PartialEq)]
pub enum GroupStatus {
    /// Channels were removed.
    Pruned,
    /// The ratio (and rounding) removed nothing from this group.
    Unchanged,
    /// The analysis cannot prune it ([`ChannelGroup::reason`]).
    NotPrunable(String),
    /// One of its nodes matched [`ChannelPruneConfig::exclude`] (the entry).
    Excluded(String),
    /// The criterion has nothing to score it with (no BatchNormalization for
    /// [`Criterion::BnScale`], no producer filters for L1/L2).
    NoScore,
}

/// One group in a [`PruneReport`].
#[derive(Debug, Clone, PartialEq)]
pub struct GroupReport {
    /// The group (members, producers, consumers) as analysed in the input model.
    pub group: ChannelGroup,
    /// Channels before pruning.
    pub channels_before: usize,
    /// Channels after pruning.
    pub channels_after: usize,
    /// Positions (`0..channels_before`, ascending) of the group channels kept;
    /// member `m` keeps indices `m.indices[k]` for `k` in `kept`.
    pub kept: Vec<usize>,
    /// Per group channel, its score under the criterion (empty unless scored).
    pub scores: Vec<f64>,
    /// What happened to it.
    pub status: GroupStatus,
}

/// What [`prune_channels`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct PruneReport {
    /// The configuration used.
    pub config: ChannelPruneConfig,
    /// Every group of the analysis, in [`crate::channel_groups`] order.
    pub groups: Vec<GroupReport>,
    /// Channels of the prunable, not excluded, scored groups before pruning.
    pub prunable_channels_before: usize,
    /// The same groups' channels after.
    pub prunable_channels_after: usize,
    /// Learnable parameters before: elements of float weights, biases and
    /// BatchNormalization scales and shifts (not running statistics, not
    /// configuration constants such as Clip bounds), as `kiln::stats` counts them.
    pub params_before: u64,
    /// Learnable parameters after.
    pub params_after: u64,
    /// Conv, Gemm and MatMul multiply-accumulates at batch 1 before
    /// (Conv: `|Y| x C_in / group x kH x kW`; Gemm, MatMul: `|Y| x K`), as
    /// `kiln::stats` counts them; `None` when a shape is symbolic beyond the batch.
    pub macs_before: Option<u64>,
    /// MACs after.
    pub macs_after: Option<u64>,
}

impl PruneReport {
    /// Groups with channels removed.
    pub fn pruned_groups(&self) -> usize {
        self.groups
            .iter()
            .filter(|g| g.status == GroupStatus::Pruned)
            .count()
    }
}

fn config_err(m: &Model, param: &'static str, message: String) -> Error {
    Error::Config {
        model: model_name(m),
        param,
        message,
    }
}

fn check_config(m: &Model, cfg: &ChannelPruneConfig) -> Result<()> {
    if !(cfg.ratio.is_finite() && (0.0..1.0).contains(&cfg.ratio)) {
        return Err(config_err(
            m,
            "ratio",
            format!("{} (must be in [0, 1))", cfg.ratio),
        ));
    }
    if cfg.round_to == 0 {
        return Err(config_err(m, "round_to", "0 (must be at least 1)".into()));
    }
    for e in &cfg.exclude {
        if !m.graph.nodes.iter().any(|n| &n.name == e || &n.op_type == e) {
            return Err(config_err(
                m,
                "exclude",
                format!("'{e}' names no node and no op type of the model"),
            ));
        }
    }
    Ok(())
}

/// The values of `t` at `index` along `axis`.
fn channel_values(t: &Tensor, axis: usize, index: usize) -> Vec<f64> {
    let sh = t.shape();
    let c = sh[axis];
    let inner: usize = sh[axis + 1..].iter().product();
    let outer: usize = sh[..axis].iter().product();
    let v = t.to_f64_vec();
    let mut out = Vec::with_capacity(outer * inner);
    for o in 0..outer {
        let s = (o * c + index) * inner;
        out.extend_from_slice(&v[s..s + inner]);
    }
    out
}

/// Per-channel scores of a group, or `None` when the criterion has no member
/// to score with.
fn scores(an: &Analysis, g: &ChannelGroup, crit: Criterion) -> Option<Vec<f64>> {
    let role = match crit {
        Criterion::L1 | Criterion::L2 => Role::Weight,
        Criterion::BnScale => Role::BnScale,
    };
    let members: Vec<_> = g.members.iter().filter(|m| m.role == role).collect();
    if members.is_empty() {
        return None;
    }
    let mut s = vec![0f64; g.channels];
    for m in members {
        let t = an.consts.get(&m.tensor)?;
        for (j, &idx) in m.indices.iter().enumerate() {
            let v = channel_values(t, m.axis, idx);
            s[j] += match crit {
                Criterion::L1 | Criterion::BnScale => v.iter().map(|x| x.abs()).sum::<f64>(),
                Criterion::L2 => v.iter().map(|x| x * x).sum::<f64>().sqrt(),
            };
        }
    }
    Some(s)
}

/// The `keep` best channels (highest score; ties keep the lower index), ascending.
fn top(scores: &[f64], keep: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    let mut kept = order[..keep.min(order.len())].to_vec();
    kept.sort_unstable();
    kept
}

fn round_up(keep: usize, to: usize, max: usize) -> usize {
    keep.max(1).div_ceil(to).saturating_mul(to).min(max)
}

/// Prunes output channels of `model`: analyses the channel groups
/// ([`crate::channel_groups`]), ranks each prunable group's channels by
/// `cfg.criterion`, removes the lowest `cfg.ratio` of them (layer-wise, or
/// globally with `cfg.global`), and rewrites the model so that every member
/// tensor physically loses those channels: Conv weights and biases are
/// sliced along their output (axis 0) and input (axis 1) channels,
/// depthwise Convs lose filters and `group`, BatchNormalization its four
/// parameters, Gemm/MatMul weights their rows or columns, per-channel
/// constants their entries; Split sizes, Slice bounds, Reshape shapes and
/// Gather indices follow. A channel shuffle whose kept channels no longer
/// form a shuffle becomes a `Gather` on axis 1 with the exact permutation.
///
/// The result is a dense fp32 model of the same ops (plus those Gathers),
/// same inputs and outputs, validated and with types inferred; it exports as
/// plain ONNX. A ratio of 0 returns the same function.
///
/// Errors: an invalid `cfg` ([`crate::ErrorKind::InvalidConfig`]), a model
/// failing validation or shape inference ([`crate::ErrorKind::Model`]), a
/// rewrite that does not validate ([`crate::ErrorKind::Internal`], a bug).
pub fn prune_channels(model: &Model, cfg: &ChannelPruneConfig) -> Result<(Model, PruneReport)> {
    check_config(model, cfg)?;
    let an = analyze(model)?;
    let mut reports: Vec<GroupReport> = Vec::new();
    // Candidates: (group, scores).
    let mut cand: Vec<(usize, Vec<f64>)> = Vec::new();
    let op_of: HashMap<&str, &str> = an
        .model
        .graph
        .nodes
        .iter()
        .map(|n| (n.name.as_str(), n.op_type.as_str()))
        .collect();
    for g in &an.groups {
        let excluded = cfg
            .exclude
            .iter()
            .find(|e| {
                g.nodes
                    .iter()
                    .any(|n| n == *e || op_of.get(n.as_str()) == Some(&e.as_str()))
            })
            .cloned();
        let (status, sc) = if !g.prunable {
            (
                GroupStatus::NotPrunable(g.reason.clone().unwrap_or_default()),
                Vec::new(),
            )
        } else if let Some(e) = excluded {
            (GroupStatus::Excluded(e), Vec::new())
        } else if let Some(s) = scores(&an, g, cfg.criterion) {
            cand.push((g.id, s.clone()));
            (GroupStatus::Unchanged, s)
        } else {
            (GroupStatus::NoScore, Vec::new())
        };
        reports.push(GroupReport {
            group: g.clone(),
            channels_before: g.channels,
            channels_after: g.channels,
            kept: (0..g.channels).collect(),
            scores: sc,
            status,
        });
    }
    // Kept counts per candidate group.
    let mut keep: HashMap<usize, usize> = HashMap::new();
    if cfg.global {
        let total: usize = cand.iter().map(|(_, s)| s.len()).sum();
        let target = (f64::from(cfg.ratio) * total as f64 + 1e-9).floor() as usize;
        let mut all: Vec<(f64, usize, usize)> = Vec::new();
        for (gi, s) in &cand {
            let mean = s.iter().sum::<f64>() / s.len() as f64;
            for (j, &v) in s.iter().enumerate() {
                all.push((if mean > 0.0 { v / mean } else { 0.0 }, *gi, j));
            }
            keep.insert(*gi, s.len());
        }
        all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(b.2.cmp(&a.2)));
        let mut removed = 0;
        for (_, gi, _) in all {
            if removed == target {
                break;
            }
            let k = keep.get_mut(&gi).expect("candidate group");
            if *k > 1 {
                *k -= 1;
                removed += 1;
            }
        }
    } else {
        for (gi, s) in &cand {
            let n = s.len();
            let remove = (f64::from(cfg.ratio) * n as f64 + 1e-9).floor() as usize;
            keep.insert(*gi, n.saturating_sub(remove));
        }
    }
    let mut removed_roots: HashSet<usize> = HashSet::new();
    for (gi, s) in &cand {
        let n = s.len();
        let k = round_up(keep[gi], cfg.round_to, n);
        let kept = top(s, k);
        let r = &mut reports[*gi];
        if kept.len() < n {
            r.status = GroupStatus::Pruned;
            let keep_set: HashSet<usize> = kept.iter().copied().collect();
            for (j, &root) in an.roots[*gi].iter().enumerate() {
                if !keep_set.contains(&j) {
                    removed_roots.insert(root);
                }
            }
        }
        r.channels_after = kept.len();
        r.kept = kept;
    }
    let pruned = rewrite(&an, &removed_roots).map_err(|source| Error::Internal {
        model: model_name(model),
        source: Box::new(source),
    })?;
    let counted = |r: &&GroupReport| matches!(r.status, GroupStatus::Pruned | GroupStatus::Unchanged);
    let report = PruneReport {
        config: cfg.clone(),
        prunable_channels_before: reports.iter().filter(counted).map(|r| r.channels_before).sum(),
        prunable_channels_after: reports.iter().filter(counted).map(|r| r.channels_after).sum(),
        groups: reports,
        params_before: stats::learnable_params(&an.model),
        params_after: stats::learnable_params(&pruned),
        macs_before: stats::macs(&an.model),
        macs_after: stats::macs(&pruned),
    };
    Ok((pruned, report))
}

/// `t` restricted to indices `idx` along `axis`.
pub(crate) fn take(t: &Tensor, axis: usize, idx: &[usize]) -> Tensor {
    let sh = t.shape();
    let c = sh[axis];
    let inner: usize = sh[axis + 1..].iter().product();
    let outer: usize = sh[..axis].iter().product();
    let data = map_data!(t.data(), v => {
        let mut out = Vec::with_capacity(outer * idx.len() * inner);
        for o in 0..outer {
            for &i in idx {
                let s = (o * c + i) * inner;
                out.extend_from_slice(&v[s..s + inner]);
            }
        }
        out
    });
    let mut shape = sh.to_vec();
    shape[axis] = idx.len();
    Tensor::new(shape, data).expect("sliced data fits its shape")
}

/// An integer tensor of `like`'s dtype (int32 or int64) and shape `[v.len()]`.
fn ints_like(like: &Tensor, v: Vec<i64>) -> Tensor {
    let shape = vec![v.len()];
    match like.dtype() {
        DType::I32 => Tensor::from_vec(shape, v.into_iter().map(|x| x as i32).collect()),
        _ => Tensor::from_vec(shape, v),
    }
    .expect("shape fits")
}

/// Writes constants of the rewritten graph: in place when the node is the
/// initializer's only user, else as a fresh initializer.
struct Consts<'a> {
    an: &'a Analysis,
    inits: BTreeMap<String, Tensor>,
    uses: HashMap<String, usize>,
    names: HashSet<String>,
}

impl Consts<'_> {
    fn get(&self, name: &str) -> Result<&Tensor, kiln_ir::IrError> {
        self.an
            .consts
            .get(name)
            .ok_or_else(|| kiln_ir::ir_err!(Internal, "constant '{name}' vanished"))
    }

    fn fresh(&mut self, hint: &str) -> String {
        let mut name = format!("{hint}.pruned");
        let mut k = 1;
        while self.names.contains(&name) {
            name = format!("{hint}.pruned{k}");
            k += 1;
        }
        self.names.insert(name.clone());
        name
    }

    /// Sets input `k` of `node` to `t`.
    fn set(&mut self, node: &mut Node, k: usize, t: Tensor) {
        let name = node.inputs[k].clone();
        if self.inits.contains_key(&name) && self.uses.get(&name) == Some(&1) {
            self.inits.insert(name, t);
            return;
        }
        if let Some(u) = self.uses.get_mut(&name) {
            *u = u.saturating_sub(1);
        }
        let new = self.fresh(&name);
        self.inits.insert(new.clone(), t);
        self.uses.insert(new.clone(), 1);
        node.inputs[k] = new;
    }

    /// Adds `t` as input `k` of `node` (inputs padded with omitted ones).
    fn add(&mut self, node: &mut Node, k: usize, hint: &str, t: Tensor) {
        let new = self.fresh(hint);
        self.inits.insert(new.clone(), t);
        self.uses.insert(new.clone(), 1);
        while node.inputs.len() <= k {
            node.inputs.push(String::new());
        }
        node.inputs[k] = new;
    }

    fn release(&mut self, name: &str) {
        if let Some(u) = self.uses.get_mut(name) {
            *u = u.saturating_sub(1);
        }
    }
}

/// Rewrites the analysed model without the channels of the components whose
/// roots are in `removed`.
fn rewrite(an: &Analysis, removed: &HashSet<usize>) -> Result<Model, kiln_ir::IrError> {
    let mut m = an.model.clone();
    // Kept channels of a value, `None` when it keeps them all (or has no slot).
    let kept = |name: &str| -> Option<Vec<usize>> {
        let slot = &an.slots[*an.slot_of.get(name)?];
        let k: Vec<usize> = (0..slot.c)
            .filter(|c| !removed.contains(&an.root_of[slot.base + c]))
            .collect();
        (k.len() < slot.c).then_some(k)
    };
    let channels = |name: &str| an.slot_of.get(name).map(|&s| an.slots[s].c);
    let all = |name: &str| -> Vec<usize> {
        kept(name).unwrap_or_else(|| (0..channels(name).unwrap_or(0)).collect())
    };
    let mut nodes = std::mem::take(&mut m.graph.nodes);
    let mut uses: HashMap<String, usize> = HashMap::new();
    let mut names: HashSet<String> = m.graph.initializers.keys().cloned().collect();
    for n in &nodes {
        for v in n.inputs.iter().filter(|v| !v.is_empty()) {
            *uses.entry(v.clone()).or_default() += 1;
        }
        names.extend(n.outputs.iter().cloned());
    }
    for o in &m.graph.outputs {
        *uses.entry(o.name.clone()).or_default() += 1;
    }
    names.extend(m.graph.inputs.iter().map(|i| i.name.clone()));
    let opset = m.opset();
    let mut cw = Consts {
        an,
        inits: std::mem::take(&mut m.graph.initializers),
        uses: uses.clone(),
        names,
    };
    let mut drop_nodes: HashSet<usize> = HashSet::new();
    for (i, rule) in an.rules.iter().enumerate() {
        let (ins, outs) = (nodes[i].inputs.clone(), nodes[i].outputs.clone());
        let input = |k: usize| ins.get(k).cloned().unwrap_or_default();
        let output = |k: usize| outs.get(k).cloned().unwrap_or_default();
        match rule {
            Rule::None => {}
            Rule::Conv { depthwise } => {
                let (kx, ky) = (kept(&input(0)), kept(&output(0)));
                if kx.is_none() && ky.is_none() {
                    continue;
                }
                let mut w = cw.get(&input(1))?.clone();
                if let (Some(kx), false) = (&kx, depthwise) {
                    w = take(&w, 1, kx);
                }
                if let Some(ky) = &ky {
                    w = take(&w, 0, ky);
                    let b = input(2);
                    if !b.is_empty() {
                        let bt = take(cw.get(&b)?, 0, ky);
                        cw.set(&mut nodes[i], 2, bt);
                    }
                    if *depthwise {
                        nodes[i]
                            .attrs
                            .insert("group".into(), Attribute::Int(ky.len() as i64));
                    }
                }
                cw.set(&mut nodes[i], 1, w);
            }
            Rule::BatchNorm => {
                if let Some(ky) = kept(&output(0)) {
                    for k in 1..5 {
                        let t = take(cw.get(&input(k))?, 0, &ky);
                        cw.set(&mut nodes[i], k, t);
                    }
                }
            }
            Rule::Consts(list) => {
                if let Some(ky) = kept(&output(0)) {
                    for &(k, axis) in list {
                        let t = take(cw.get(&input(k))?, axis, &ky);
                        cw.set(&mut nodes[i], k, t);
                    }
                }
            }
            Rule::Split => {
                if outs.iter().all(|o| kept(o).is_none()) {
                    continue;
                }
                let sizes: Vec<i64> = outs.iter().map(|o| all(o).len() as i64).collect();
                if opset >= 13 {
                    let s = input(1);
                    if s.is_empty() {
                        let t = Tensor::from_vec(vec![sizes.len()], sizes).expect("shape fits");
                        let hint = format!("{}.split", nodes[i].name);
                        cw.add(&mut nodes[i], 1, &hint, t);
                        nodes[i].attrs.remove("num_outputs");
                    } else {
                        let t = ints_like(cw.get(&s)?, sizes);
                        cw.set(&mut nodes[i], 1, t);
                    }
                } else {
                    nodes[i].attrs.insert("split".into(), Attribute::Ints(sizes));
                }
            }
            Rule::Slice { pos, start } => {
                let (x, y) = (input(0), output(0));
                if kept(&x).is_none() && kept(&y).is_none() {
                    continue;
                }
                let new_start = all(&x).iter().filter(|&&c| c < *start).count() as i64;
                let new_end = new_start + all(&y).len() as i64;
                for (k, v) in [(1, new_start), (2, new_end)] {
                    let old = cw.get(&input(k))?;
                    let mut vals = old.to_i64_vec()?;
                    vals[*pos] = v;
                    let t = ints_like(old, vals);
                    cw.set(&mut nodes[i], k, t);
                }
            }
            Rule::Reshape => {
                if let Some(ky) = kept(&output(0)) {
                    let old = cw.get(&input(1))?;
                    let mut s = old.to_i64_vec()?;
                    if s[1] > 0 {
                        s[1] = ky.len() as i64;
                        let t = ints_like(old, s);
                        cw.set(&mut nodes[i], 1, t);
                    }
                }
            }
            Rule::Gather => {
                let (x, y) = (input(0), output(0));
                if kept(&x).is_none() && kept(&y).is_none() {
                    continue;
                }
                let kx = all(&x);
                let old = cw.get(&input(1))?;
                let idx = old.to_i64_vec()?;
                let cx = channels(&x).unwrap_or(0) as i64;
                let pos: HashMap<usize, usize> = kx.iter().enumerate().map(|(p, &c)| (c, p)).collect();
                let mut new = Vec::new();
                for j in all(&y) {
                    let v = idx[j];
                    let v = if v < 0 { v + cx } else { v } as usize;
                    let p = pos
                        .get(&v)
                        .ok_or_else(|| kiln_ir::ir_err!(Internal, "gathered channel {v} was removed"))?;
                    new.push(*p as i64);
                }
                let t = ints_like(old, new);
                cw.set(&mut nodes[i], 1, t);
            }
            Rule::Shuffle { transpose, tail, a } => {
                let x = input(0);
                let y = nodes[*tail].outputs[0].clone();
                if kept(&x).is_none() && kept(&y).is_none() {
                    continue;
                }
                let (kx, ky) = (all(&x), all(&y));
                let c = channels(&x).unwrap_or(0);
                let b = c / a;
                let pos: HashMap<usize, usize> = kx.iter().enumerate().map(|(p, &c)| (c, p)).collect();
                let mut perm = Vec::with_capacity(ky.len());
                for &j in &ky {
                    let src = (j % a) * b + j / a;
                    let p = pos
                        .get(&src)
                        .ok_or_else(|| kiln_ir::ir_err!(Internal, "shuffled channel {src} was removed"))?;
                    perm.push(*p);
                }
                let c2 = ky.len();
                let is_shuffle = c2 % a == 0
                    && perm
                        .iter()
                        .enumerate()
                        .all(|(j, &p)| p == (j % a) * (c2 / a) + j / a);
                if is_shuffle {
                    // Still a channel shuffle of the same group count: new shapes.
                    let old = cw.get(&input(1))?;
                    let mut s1 = old.to_i64_vec()?;
                    if s1.len() == 5 && s1[2] > 0 {
                        s1[2] = (c2 / a) as i64;
                        let t = ints_like(old, s1);
                        cw.set(&mut nodes[i], 1, t);
                    }
                    let s2n = nodes[*tail].inputs[1].clone();
                    let old = cw.get(&s2n)?;
                    let mut s2 = old.to_i64_vec()?;
                    if s2.len() == 4 && s2[1] > 0 {
                        s2[1] = c2 as i64;
                        let t = ints_like(old, s2);
                        cw.set(&mut nodes[*tail], 1, t);
                    }
                } else {
                    // The exact permutation as a Gather on the channels.
                    cw.release(&input(1));
                    let tail_shape = nodes[*tail].inputs[1].clone();
                    cw.release(&tail_shape);
                    let idx = Tensor::from_vec(vec![perm.len()], perm.iter().map(|&p| p as i64).collect())
                        .expect("shape fits");
                    let name = format!("{}.gather", nodes[i].name);
                    let mut g = Node::new(&name, "Gather", &[&x], &[&y]).with_attr("axis", Attribute::Int(1));
                    cw.add(&mut g, 1, &format!("{name}.indices"), idx);
                    nodes[i] = g;
                    drop_nodes.insert(*transpose);
                    drop_nodes.insert(*tail);
                }
            }
            Rule::Gemm { trans_b } => {
                let (ka, ky) = (kept(&input(0)), kept(&output(0)));
                if ka.is_none() && ky.is_none() {
                    continue;
                }
                let (k_axis, n_axis) = if *trans_b { (1, 0) } else { (0, 1) };
                let mut b = cw.get(&input(1))?.clone();
                if let Some(ka) = &ka {
                    b = take(&b, k_axis, ka);
                }
                if let Some(ky) = &ky {
                    b = take(&b, n_axis, ky);
                    let c = input(2);
                    let n = channels(&output(0)).unwrap_or(0);
                    if !c.is_empty() {
                        let ct = cw.get(&c)?;
                        let axis = match ct.shape() {
                            [len] if *len == n => Some(0),
                            [1, len] if *len == n => Some(1),
                            _ => None,
                        };
                        if let Some(axis) = axis {
                            let t = take(ct, axis, ky);
                            cw.set(&mut nodes[i], 2, t);
                        }
                    }
                }
                cw.set(&mut nodes[i], 1, b);
            }
            Rule::MatMul => {
                let (ka, ky) = (kept(&input(0)), kept(&output(0)));
                if ka.is_none() && ky.is_none() {
                    continue;
                }
                let mut b = cw.get(&input(1))?.clone();
                if let Some(ka) = &ka {
                    b = take(&b, 0, ka);
                }
                if let Some(ky) = &ky {
                    b = take(&b, 1, ky);
                }
                cw.set(&mut nodes[i], 1, b);
            }
        }
    }
    // Drop the shuffles' Transposes and tails, then constants nothing reads any more.
    let nodes: Vec<Node> = nodes
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !drop_nodes.contains(i))
        .map(|(_, n)| n)
        .collect();
    let mut read: HashSet<&str> = HashSet::new();
    for n in &nodes {
        read.extend(n.inputs.iter().map(|s| s.as_str()));
    }
    read.extend(m.graph.outputs.iter().map(|o| o.name.as_str()));
    let orphan = |name: &str| uses.get(name).is_some_and(|&u| u > 0) && !read.contains(name);
    let mut inits = cw.inits;
    inits.retain(|k, _| !orphan(k));
    let nodes: Vec<Node> = nodes
        .iter()
        .filter(|n| !(n.op_type == "Constant" && n.outputs.iter().all(|o| orphan(o))))
        .cloned()
        .collect();
    m.graph.nodes = nodes;
    m.graph.initializers = inits;
    m.graph.value_types.clear();
    m.graph.validate()?;
    infer::infer_types(&mut m)?;
    Ok(m)
}
