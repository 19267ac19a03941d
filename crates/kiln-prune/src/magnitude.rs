//! Unstructured and block magnitude pruning with TF-MOT's sparsity schedules.
//!
//! A *target* is one weight initializer of a Conv, Gemm or MatMul. Pruning
//! zeroes its lowest-magnitude elements ([`MagnitudeConfig::block`] = 1) or
//! its lowest-magnitude blocks of `1 x block` weights: one input channel by
//! `block` consecutive output channels (Conv weight `[Cout, Cin/g, kh, kw]`:
//! output channels `o..o+block` at one `(i, kh, kw)`; Gemm/MatMul: `block`
//! consecutive columns `n` of the `[K, N]` weight at one row `k`), scored by
//! their mean `|w|` (TF-MOT's block pruning with `block_pooling_type="AVG"`).
//! Blocks are what kiln's sparse pointwise kernels skip; a partial block at
//! the output-channel edge is scored by the mean of the weights it has.
//!
//! Layer-wise, every target loses `floor(s x units)` units (elements or
//! blocks); global, all targets' units are ranked together by raw magnitude
//! (PyTorch's `global_unstructured`) and `floor(s x total)` go.
//!
//! By default the stem (the Conv reading the graph input) and the classifier
//! (the node producing the graph's first output, or the last Gemm/MatMul/Conv
//! before it) are not pruned, as TF-MOT and the pruning literature advise:
//! they hold few weights and much accuracy. In block mode only the weights
//! whose output-channel blocks a sparse kernel can use are targets: 1x1
//! (pointwise, one group) Convs, Gemm and MatMul.

use crate::error::{model_name, Error, Result};
use kiln_ir::{DType, Model};
use std::collections::HashMap;

/// How a target's weight is laid out: where the output channels are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightLayout {
    /// Conv `[Cout, Cin/g, kh, kw]` (output channels outermost).
    ConvOihw,
    /// Gemm with `transB = 0` / MatMul: `[K, N]` (output channels innermost).
    Kn,
    /// Gemm with `transB = 1`: `[N, K]`.
    Nk,
}

/// One weight that magnitude pruning may sparsify.
#[derive(Debug, Clone, PartialEq)]
pub struct PruneTarget {
    /// The node using the weight.
    pub node: String,
    /// Its op type (`Conv`, `Gemm`, `MatMul`).
    pub op: String,
    /// The weight initializer's name.
    pub weight: String,
    /// The weight's shape.
    pub shape: Vec<usize>,
    /// Where its output channels are.
    pub layout: WeightLayout,
    /// True for a 1x1, one-group Conv, Gemm or MatMul (block mode's targets).
    pub pointwise: bool,
}

impl PruneTarget {
    /// `(output channels, inner units per output channel)`: the weight is
    /// viewed as `[outer][n_out][inner]` with `outer * n_out * inner` elements.
    fn dims(&self) -> (usize, usize, usize) {
        let n: usize = self.shape.iter().product();
        match self.layout {
            WeightLayout::ConvOihw => {
                let o = self.shape[0];
                (1, o, n / o.max(1))
            }
            WeightLayout::Kn => (self.shape[0], self.shape[1], 1),
            WeightLayout::Nk => (1, self.shape[0], self.shape[1]),
        }
    }

    /// The units (element index lists) of this weight for `block`: for
    /// `block == 1` every element alone; otherwise groups of up to `block`
    /// consecutive output channels at one inner position.
    fn units(&self, block: usize) -> Vec<Vec<usize>> {
        let (outer, nout, inner) = self.dims();
        let mut out = Vec::with_capacity(outer * nout.div_ceil(block) * inner);
        for a in 0..outer {
            for o0 in (0..nout).step_by(block) {
                for i in 0..inner {
                    let u: Vec<usize> = (o0..(o0 + block).min(nout))
                        .map(|o| (a * nout + o) * inner + i)
                        .collect();
                    out.push(u);
                }
            }
        }
        out
    }
}

/// Settings of magnitude pruning.
#[derive(Debug, Clone, PartialEq)]
pub struct MagnitudeConfig {
    /// Block size along the output channels: 1 = unstructured, 8 = the 1x8
    /// blocks of kiln's sparse pointwise kernels.
    pub block: usize,
    /// Rank all targets' units together (true) or each target alone.
    pub global: bool,
    /// Node names or op types not to prune.
    pub exclude: Vec<String>,
    /// Keep the stem and the classifier dense (default true).
    pub keep_stem_and_classifier: bool,
}

impl Default for MagnitudeConfig {
    /// Unstructured, layer-wise, stem and classifier kept.
    fn default() -> Self {
        MagnitudeConfig {
            block: 1,
            global: false,
            exclude: vec![],
            keep_stem_and_classifier: true,
        }
    }
}

fn cfg_err(model: &Model, param: &'static str, message: String) -> Error {
    Error::Config {
        model: model_name(model),
        param,
        message,
    }
}

/// The weights of `model` that magnitude pruning with `cfg` sparsifies, in
/// graph order: f32 initializer weights of Conv (input 1), Gemm (input 1)
/// and MatMul (input 1, rank 2), minus exclusions (see the module docs).
///
/// # Errors
/// [`crate::ErrorKind::InvalidConfig`] for a `block` of 0 or an `exclude`
/// entry that names no node and no op type of the model.
pub fn prune_targets(model: &Model, cfg: &MagnitudeConfig) -> Result<Vec<PruneTarget>> {
    if cfg.block == 0 {
        return Err(cfg_err(model, "block", "must be at least 1".into()));
    }
    let g = &model.graph;
    for e in &cfg.exclude {
        if !g.nodes.iter().any(|n| &n.name == e || &n.op_type == e) {
            return Err(cfg_err(
                model,
                "exclude",
                format!("'{e}' names no node and no op type of the model"),
            ));
        }
    }
    let input_names: Vec<&str> = g
        .inputs
        .iter()
        .map(|v| v.name.as_str())
        .filter(|n| !g.initializers.contains_key(*n))
        .collect();
    let mut all = vec![];
    for n in &g.nodes {
        let Some(w) = n.inputs.get(1) else { continue };
        let Some(t) = g.initializers.get(w) else {
            continue;
        };
        if t.dtype() != DType::F32 {
            continue;
        }
        let shape = t.shape().to_vec();
        let (layout, pointwise) = match (n.op_type.as_str(), shape.len()) {
            ("Conv", 4) => {
                let group = n.attr_int("group", 1).unwrap_or(1);
                (
                    WeightLayout::ConvOihw,
                    shape[2] == 1 && shape[3] == 1 && group == 1,
                )
            }
            ("Gemm", 2) => {
                if n.attr_int("transB", 0).unwrap_or(0) != 0 {
                    (WeightLayout::Nk, true)
                } else {
                    (WeightLayout::Kn, true)
                }
            }
            ("MatMul", 2) => (WeightLayout::Kn, true),
            _ => continue,
        };
        all.push((
            n,
            PruneTarget {
                node: n.name.clone(),
                op: n.op_type.clone(),
                weight: w.clone(),
                shape,
                layout,
                pointwise,
            },
        ));
    }
    let stem = all
        .iter()
        .find(|(n, _)| {
            n.inputs
                .first()
                .is_some_and(|x| input_names.contains(&x.as_str()))
        })
        .map(|(_, t)| t.node.clone());
    let classifier = all.last().map(|(_, t)| t.node.clone());
    Ok(all
        .into_iter()
        .map(|(_, t)| t)
        .filter(|t| {
            let skip_default = cfg.keep_stem_and_classifier
                && (Some(&t.node) == stem.as_ref() || Some(&t.node) == classifier.as_ref());
            let excluded = cfg.exclude.iter().any(|e| e == &t.node || e == &t.op);
            !skip_default && !excluded && (cfg.block == 1 || t.pointwise)
        })
        .collect())
}

/// Keep-masks (`true` = kept) of `targets` at `sparsity` in `[0, 1]`,
/// ranking the current values `values(weight name)` by magnitude (see the
/// module docs for units, layer-wise and global ranking). Ties keep the
/// earlier unit.
///
/// # Panics
/// Never on consistent input; a target whose values are missing or of the
/// wrong length gets an all-kept mask.
pub fn magnitude_masks(
    targets: &[PruneTarget],
    values: &dyn Fn(&str) -> Option<Vec<f32>>,
    sparsity: f32,
    cfg: &MagnitudeConfig,
) -> Vec<Vec<bool>> {
    let s = sparsity.clamp(0.0, 1.0) as f64;
    let block = cfg.block.max(1);
    let mut masks: Vec<Vec<bool>> = vec![];
    // (score, target, unit index) of every unit.
    let mut scored: Vec<Vec<(f32, Vec<usize>)>> = vec![];
    for t in targets {
        let n: usize = t.shape.iter().product();
        masks.push(vec![true; n]);
        let v = values(&t.weight).filter(|v| v.len() == n);
        let Some(v) = v else {
            scored.push(vec![]);
            continue;
        };
        scored.push(
            t.units(block)
                .into_iter()
                .map(|u| {
                    let m = u.iter().map(|&i| v[i].abs()).sum::<f32>() / u.len() as f32;
                    (m, u)
                })
                .collect(),
        );
    }
    fn drop_units(ti: usize, ui: usize, scored: &[Vec<(f32, Vec<usize>)>], masks: &mut [Vec<bool>]) {
        for &i in &scored[ti][ui].1 {
            masks[ti][i] = false;
        }
    }
    if cfg.global {
        let mut order: Vec<(f32, usize, usize)> = scored
            .iter()
            .enumerate()
            .flat_map(|(ti, us)| us.iter().enumerate().map(move |(ui, u)| (u.0, ti, ui)))
            .collect();
        let k = (s * order.len() as f64).floor() as usize;
        order.sort_by(|a, b| a.0.total_cmp(&b.0).then((a.1, a.2).cmp(&(b.1, b.2))));
        for &(_, ti, ui) in order.iter().take(k) {
            drop_units(ti, ui, &scored, &mut masks);
        }
    } else {
        for ti in 0..scored.len() {
            let mut order: Vec<usize> = (0..scored[ti].len()).collect();
            order.sort_by(|&a, &b| scored[ti][a].0.total_cmp(&scored[ti][b].0).then(a.cmp(&b)));
            let k = (s * order.len() as f64).floor() as usize;
            for &ui in order.iter().take(k) {
                drop_units(ti, ui, &scored, &mut masks);
            }
        }
    }
    masks
}

/// A sparsity schedule of TF-MOT (`tfmot.sparsity.keras`), in optimizer steps.
///
/// A mask update happens at step `t` when `begin_step <= t` and (no end or
/// `t <= end_step`) and `(t - begin_step) % frequency == 0`
/// (`pruning_schedule._should_prune_in_step`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Schedule {
    /// `ConstantSparsity(target_sparsity, begin_step, end_step=-1, frequency=100)`.
    Constant {
        /// The sparsity of every update.
        sparsity: f32,
        /// First step that prunes.
        begin_step: u64,
        /// Last step that may prune (None: no end).
        end_step: Option<u64>,
        /// Steps between mask updates.
        frequency: u64,
    },
    /// `PolynomialDecay(initial_sparsity, final_sparsity, begin_step, end_step, power=3, frequency=100)`:
    /// `s(t) = final + (initial - final) * (1 - p)^power`,
    /// `p = clamp((t - begin) / (end - begin), 0, 1)` (Zhu & Gupta, "To prune,
    /// or not to prune", 2017).
    PolynomialDecay {
        /// Sparsity at `begin_step`.
        initial: f32,
        /// Sparsity from `end_step` on.
        final_sparsity: f32,
        /// First step that prunes.
        begin_step: u64,
        /// Step at which `final_sparsity` is reached (> `begin_step`).
        end_step: u64,
        /// Exponent (TF-MOT's default 3).
        power: f32,
        /// Steps between mask updates.
        frequency: u64,
    },
}

impl Schedule {
    /// The sparsity to prune to at `step`, or `None` when `step` is not a
    /// pruning step.
    pub fn at(&self, step: u64) -> Option<f32> {
        let turn = |begin: u64, end: Option<u64>, freq: u64| {
            step >= begin && end.is_none_or(|e| step <= e) && (step - begin).is_multiple_of(freq.max(1))
        };
        match *self {
            Schedule::Constant {
                sparsity,
                begin_step,
                end_step,
                frequency,
            } => turn(begin_step, end_step, frequency).then_some(sparsity),
            Schedule::PolynomialDecay {
                initial,
                final_sparsity,
                begin_step,
                end_step,
                power,
                frequency,
            } => {
                if !turn(begin_step, Some(end_step), frequency) {
                    return None;
                }
                let span = end_step.saturating_sub(begin_step).max(1) as f64;
                let p = ((step - begin_step) as f64 / span).clamp(0.0, 1.0);
                let s =
                    final_sparsity as f64 + (initial - final_sparsity) as f64 * (1.0 - p).powf(power as f64);
                Some(s as f32)
            }
        }
    }

    /// The sparsity the schedule ends at.
    pub fn final_sparsity(&self) -> f32 {
        match *self {
            Schedule::Constant { sparsity, .. } => sparsity,
            Schedule::PolynomialDecay { final_sparsity, .. } => final_sparsity,
        }
    }

    /// Checks ranges: sparsities in `[0, 1)`, `frequency >= 1`, `end_step >
    /// begin_step` for PolynomialDecay.
    ///
    /// # Errors
    /// A message naming the field at fault.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let ok = |s: f32| (0.0..1.0).contains(&s);
        match *self {
            Schedule::Constant {
                sparsity, frequency, ..
            } => {
                if !ok(sparsity) {
                    return Err(format!("sparsity {sparsity} is outside [0, 1)"));
                }
                if frequency == 0 {
                    return Err("frequency must be at least 1".into());
                }
            }
            Schedule::PolynomialDecay {
                initial,
                final_sparsity,
                begin_step,
                end_step,
                power,
                frequency,
            } => {
                if !ok(initial) || !ok(final_sparsity) {
                    return Err(format!(
                        "initial sparsity {initial} and final sparsity {final_sparsity} must be in [0, 1)"
                    ));
                }
                if end_step <= begin_step {
                    return Err(format!(
                        "end_step {end_step} must be after begin_step {begin_step}"
                    ));
                }
                if frequency == 0 || power.is_nan() || power <= 0.0 {
                    return Err(format!(
                        "frequency {frequency} must be >= 1 and power {power} > 0"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Per-weight outcome of magnitude pruning.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerSparsity {
    /// The node.
    pub node: String,
    /// Its op type.
    pub op: String,
    /// The weight initializer.
    pub weight: String,
    /// The weight's shape.
    pub shape: Vec<usize>,
    /// Elements.
    pub params: usize,
    /// Elements that are exactly zero.
    pub zeros: usize,
    /// Fraction of the 1x8 output-channel blocks that are all zero (what
    /// kiln's sparse pointwise kernels skip).
    pub zero_blocks_1x8: f32,
}

impl LayerSparsity {
    /// `zeros / params`.
    pub fn sparsity(&self) -> f32 {
        self.zeros as f32 / self.params.max(1) as f32
    }
}

/// Sparsity of every Conv/Gemm/MatMul f32 weight of `model` (all of them,
/// pruned or not), in graph order.
pub fn weight_sparsity(model: &Model) -> Vec<LayerSparsity> {
    let all = MagnitudeConfig {
        keep_stem_and_classifier: false,
        ..Default::default()
    };
    let targets = prune_targets(model, &all).unwrap_or_default();
    targets
        .iter()
        .filter_map(|t| {
            let v = model.graph.initializers.get(&t.weight)?.to_f32_vec();
            let units = t.units(8);
            let zb = units.iter().filter(|u| u.iter().all(|&i| v[i] == 0.0)).count();
            Some(LayerSparsity {
                node: t.node.clone(),
                op: t.op.clone(),
                weight: t.weight.clone(),
                shape: t.shape.clone(),
                params: v.len(),
                zeros: v.iter().filter(|&&x| x == 0.0).count(),
                zero_blocks_1x8: zb as f32 / units.len().max(1) as f32,
            })
        })
        .collect()
}

/// One-shot magnitude pruning: zeroes the weights of `prune_targets(model,
/// cfg)` to `sparsity` by [`magnitude_masks`] and returns the model (same
/// graph, sparse weights) with its [`weight_sparsity`].
///
/// # Errors
/// As [`prune_targets`]; [`crate::ErrorKind::InvalidConfig`] for a sparsity
/// outside `[0, 1)`.
pub fn prune_magnitude(
    model: &Model,
    sparsity: f32,
    cfg: &MagnitudeConfig,
) -> Result<(Model, Vec<LayerSparsity>)> {
    if !(0.0..1.0).contains(&sparsity) {
        return Err(cfg_err(
            model,
            "sparsity",
            format!("{sparsity} is outside [0, 1)"),
        ));
    }
    let targets = prune_targets(model, cfg)?;
    let init = &model.graph.initializers;
    let masks = magnitude_masks(&targets, &|w| init.get(w).map(|t| t.to_f32_vec()), sparsity, cfg);
    let mut out = model.clone();
    apply_masks(&mut out, &targets, &masks);
    let report = weight_sparsity(&out);
    Ok((out, report))
}

/// Zeroes the masked-out weights of `targets` in `model`'s initializers.
pub fn apply_masks(model: &mut Model, targets: &[PruneTarget], masks: &[Vec<bool>]) {
    let mut by_name: HashMap<&str, &Vec<bool>> = HashMap::new();
    for (t, m) in targets.iter().zip(masks) {
        by_name.insert(t.weight.as_str(), m);
    }
    for (name, t) in model.graph.initializers.iter_mut() {
        let Some(m) = by_name.get(name.as_str()) else {
            continue;
        };
        if let Ok(v) = t.as_slice_mut::<f32>() {
            if v.len() == m.len() {
                for (x, &keep) in v.iter_mut().zip(m.iter()) {
                    if !keep {
                        *x = 0.0;
                    }
                }
            }
        }
    }
}
