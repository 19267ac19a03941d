//! Cleanup rules: pass-through and no-op removal, Transpose pairs, CSE, dead code.
//!
//! Pass-through removal goes through [`Ctx::bypass`], which keeps graph output
//! names: a node whose output is a graph output is removed only when its
//! input's producer can be renamed to write that output.

use crate::rules::constant::is_nondeterministic;
use crate::{Ctx, Level, Rule};
use kiln_ir::{Attribute, DType, IrError, Node, Tensor, TensorData};
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};

/// Early cleanups (run first).
pub fn early() -> Vec<Box<dyn Rule>> {
    vec![
        Box::new(EliminateIdentity),
        Box::new(EliminateDropout),
        Box::new(RemoveNoopReshape),
        Box::new(RemoveNoopTranspose),
        Box::new(RemoveNoopCast),
        Box::new(RemoveNoopPad),
        Box::new(CancelTransposePair),
    ]
}

/// Common-subexpression elimination.
pub fn cse() -> Vec<Box<dyn Rule>> {
    vec![
        Box::new(EliminateCommonSubexpression),
        Box::new(MergeDuplicateInitializers),
    ]
}

/// Late cleanups: dead nodes, unused initializers (run last).
pub fn late() -> Vec<Box<dyn Rule>> {
    vec![Box::new(RemoveDeadNodes), Box::new(RemoveUnusedInitializers)]
}

// ---------------------------------------------------------------------------
// Helpers

/// True for the default ONNX domain.
fn default_domain(domain: &str) -> bool {
    domain.is_empty() || domain == "ai.onnx"
}

/// Node `node` if it is a default-domain `op` (one of `ops`), with its first
/// input and output names (both non-empty).
fn pass_through<'a>(cx: &'a Ctx, node: usize, ops: &[&str]) -> Option<(&'a Node, String, String)> {
    let n = cx.node(node);
    if !default_domain(&n.domain) || !ops.contains(&n.op_type.as_str()) {
        return None;
    }
    let x = n.inputs.first().filter(|s| !s.is_empty())?;
    let y = n.outputs.first().filter(|s| !s.is_empty())?;
    Some((n, x.clone(), y.clone()))
}

/// True if `value` is read by a node or is a graph output.
fn is_used(cx: &Ctx, value: &str) -> bool {
    !value.is_empty() && (!cx.consumers(value).is_empty() || cx.is_graph_output(value))
}

/// The permutation of a Transpose node (default: reversed axes), checked
/// against the static rank of its input; `None` if unknown or invalid.
fn transpose_perm(cx: &Ctx, n: &Node) -> Option<Vec<usize>> {
    let rank = cx.value_type(n.inputs.first()?)?.rank()?;
    let p = match n.attr_ints_opt("perm").ok()? {
        None => return Some((0..rank).rev().collect()),
        Some(p) => p,
    };
    if p.len() != rank {
        return None;
    }
    let mut seen = vec![false; rank];
    let mut out = Vec::with_capacity(rank);
    for a in p {
        let i = usize::try_from(a).ok().filter(|&i| i < rank)?;
        if std::mem::replace(&mut seen[i], true) {
            return None;
        }
        out.push(i);
    }
    Some(out)
}

fn is_identity_perm(p: &[usize]) -> bool {
    p.iter().enumerate().all(|(i, &a)| i == a)
}

/// Bitwise equality of two tensors: same dtype, same shape, same bytes (so
/// `0.0` and `-0.0` differ, and a NaN equals the same NaN).
pub(crate) fn tensor_bits_eq(a: &Tensor, b: &Tensor) -> bool {
    if a.dtype() != b.dtype() || a.shape() != b.shape() {
        return false;
    }
    match (a.data(), b.data()) {
        (TensorData::F32(x), TensorData::F32(y)) => x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits()),
        (TensorData::F16(x), TensorData::F16(y)) => x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits()),
        (x, y) => x == y,
    }
}

/// Hash of a tensor's dtype, shape and bytes (consistent with [`tensor_bits_eq`]).
fn tensor_bits_hash(t: &Tensor) -> u64 {
    let mut h = DefaultHasher::new();
    t.dtype().hash(&mut h);
    t.shape().hash(&mut h);
    match t.data() {
        TensorData::F32(v) => v.iter().for_each(|x| h.write_u32(x.to_bits())),
        TensorData::F16(v) => v.iter().for_each(|x| h.write_u16(x.to_bits())),
        TensorData::I8(v) => v.hash(&mut h),
        TensorData::U8(v) => v.hash(&mut h),
        TensorData::I32(v) => v.hash(&mut h),
        TensorData::I64(v) => v.hash(&mut h),
        TensorData::Bool(v) => v.hash(&mut h),
    }
    h.finish()
}

/// Bitwise equality of two attributes (floats compared by bits).
fn attr_bits_eq(a: &Attribute, b: &Attribute) -> bool {
    match (a, b) {
        (Attribute::Float(x), Attribute::Float(y)) => x.to_bits() == y.to_bits(),
        (Attribute::Floats(x), Attribute::Floats(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits())
        }
        (Attribute::Tensor(x), Attribute::Tensor(y)) => tensor_bits_eq(x, y),
        (x, y) => x == y,
    }
}

fn attrs_bits_eq(a: &BTreeMap<String, Attribute>, b: &BTreeMap<String, Attribute>) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|((ka, va), (kb, vb))| ka == kb && attr_bits_eq(va, vb))
}

/// True if `a` and `b` compute the same values: same op, domain, attributes
/// (bitwise) and inputs, and the same outputs present.
fn same_computation(a: &Node, b: &Node) -> bool {
    a.op_type == b.op_type
        && a.domain == b.domain
        && a.inputs == b.inputs
        && a.outputs.len() == b.outputs.len()
        && a.outputs
            .iter()
            .zip(&b.outputs)
            .all(|(x, y)| x.is_empty() == y.is_empty())
        && attrs_bits_eq(&a.attrs, &b.attrs)
}

// ---------------------------------------------------------------------------
// Pass-through and no-op removal

/// `eliminate-identity`: removes an `Identity` node.
///
/// Guards: a default-domain `Identity` with a named input and output; when the
/// output is a graph output, the input must be produced by a node, read by no
/// one else and not be a graph output itself (see [`Ctx::bypass`]).
/// Patch: readers of the output read the input (or the input's producer
/// writes the graph output); the node is removed.
pub struct EliminateIdentity;

impl Rule for EliminateIdentity {
    fn name(&self) -> &'static str {
        "eliminate-identity"
    }
    fn level(&self) -> Level {
        Level::Basic
    }
    fn describe(&self) -> &'static str {
        "remove Identity nodes"
    }
    fn apply(&self, cx: &mut Ctx, node: usize) -> Result<bool, IrError> {
        let Some((_, x, y)) = pass_through(cx, node, &["Identity"]) else {
            return Ok(false);
        };
        Ok(cx.bypass(node, &x, &y))
    }
}

/// `eliminate-dropout`: removes a `Dropout` node (inference: output = input).
///
/// Guards: a default-domain `Dropout` whose mask output is absent or unused
/// (no reader, not a graph output), whose `training_mode` input (opset 12+)
/// is absent or a constant that is all false, and [`Ctx::bypass`]'s condition
/// when the output is a graph output.
/// Patch: readers of the output read the input; the node is removed.
pub struct EliminateDropout;

impl Rule for EliminateDropout {
    fn name(&self) -> &'static str {
        "eliminate-dropout"
    }
    fn level(&self) -> Level {
        Level::Basic
    }
    fn describe(&self) -> &'static str {
        "remove inference-mode Dropout nodes whose mask is unused"
    }
    fn apply(&self, cx: &mut Ctx, node: usize) -> Result<bool, IrError> {
        let Some((n, x, y)) = pass_through(cx, node, &["Dropout"]) else {
            return Ok(false);
        };
        if n.outputs.iter().skip(1).any(|m| is_used(cx, m)) {
            return Ok(false);
        }
        if cx.opset() >= 12 {
            if let Some(tm) = n.inputs.get(2).filter(|s| !s.is_empty()) {
                let Some(t) = cx.constant(tm) else {
                    return Ok(false);
                };
                match t.to_i64_vec() {
                    Ok(v) if v.iter().all(|&b| b == 0) => {}
                    _ => return Ok(false),
                }
            }
        }
        Ok(cx.bypass(node, &x, &y))
    }
}

/// `remove-noop-reshape`: removes a `Reshape`, `Flatten`, `Squeeze` or
/// `Unsqueeze` that does not change the shape.
///
/// Guards: the input's and the output's static shapes are fully known and
/// equal; [`Ctx::bypass`]'s condition when the output is a graph output.
/// Patch: readers of the output read the input; the node is removed (its
/// shape/axes initializer is left to `remove-unused-initializers`).
pub struct RemoveNoopReshape;

impl Rule for RemoveNoopReshape {
    fn name(&self) -> &'static str {
        "remove-noop-reshape"
    }
    fn level(&self) -> Level {
        Level::Basic
    }
    fn describe(&self) -> &'static str {
        "remove Reshape/Flatten/Squeeze/Unsqueeze nodes whose output shape equals the input's"
    }
    fn apply(&self, cx: &mut Ctx, node: usize) -> Result<bool, IrError> {
        let Some((_, x, y)) = pass_through(cx, node, &["Reshape", "Flatten", "Squeeze", "Unsqueeze"]) else {
            return Ok(false);
        };
        match (cx.known_dims(&x), cx.known_dims(&y)) {
            (Some(a), Some(b)) if a == b => Ok(cx.bypass(node, &x, &y)),
            _ => Ok(false),
        }
    }
}

/// `remove-noop-transpose`: removes a `Transpose` with the identity
/// permutation.
///
/// Guards: the input's rank is known and `perm` (default: reversed axes) is
/// `0, 1, ..., rank-1`; [`Ctx::bypass`]'s condition when the output is a
/// graph output.
/// Patch: readers of the output read the input; the node is removed.
pub struct RemoveNoopTranspose;

impl Rule for RemoveNoopTranspose {
    fn name(&self) -> &'static str {
        "remove-noop-transpose"
    }
    fn level(&self) -> Level {
        Level::Basic
    }
    fn describe(&self) -> &'static str {
        "remove Transpose nodes with the identity permutation"
    }
    fn apply(&self, cx: &mut Ctx, node: usize) -> Result<bool, IrError> {
        let Some((n, x, y)) = pass_through(cx, node, &["Transpose"]) else {
            return Ok(false);
        };
        match transpose_perm(cx, n) {
            Some(p) if is_identity_perm(&p) => Ok(cx.bypass(node, &x, &y)),
            _ => Ok(false),
        }
    }
}

/// `remove-noop-cast`: removes a `Cast` (or `CastLike`) to the input's own
/// element type.
///
/// Guards: the input's and the output's static dtypes are known and equal;
/// [`Ctx::bypass`]'s condition when the output is a graph output.
/// Patch: readers of the output read the input; the node is removed.
pub struct RemoveNoopCast;

impl Rule for RemoveNoopCast {
    fn name(&self) -> &'static str {
        "remove-noop-cast"
    }
    fn level(&self) -> Level {
        Level::Basic
    }
    fn describe(&self) -> &'static str {
        "remove Cast nodes to the input's own type"
    }
    fn apply(&self, cx: &mut Ctx, node: usize) -> Result<bool, IrError> {
        let Some((_, x, y)) = pass_through(cx, node, &["Cast", "CastLike"]) else {
            return Ok(false);
        };
        let same = |a: Option<DType>, b: Option<DType>| a.is_some() && a == b;
        if !same(
            cx.value_type(&x).map(|t| t.dtype),
            cx.value_type(&y).map(|t| t.dtype),
        ) {
            return Ok(false);
        }
        Ok(cx.bypass(node, &x, &y))
    }
}

/// `remove-noop-pad`: removes a `Pad` whose pads are all zero.
///
/// Guards: the pads (the `pads` attribute before opset 11, a constant `pads`
/// input from opset 11) are all zero (any mode, any `axes`);
/// [`Ctx::bypass`]'s condition when the output is a graph output.
/// Patch: readers of the output read the input; the node is removed.
pub struct RemoveNoopPad;

impl Rule for RemoveNoopPad {
    fn name(&self) -> &'static str {
        "remove-noop-pad"
    }
    fn level(&self) -> Level {
        Level::Basic
    }
    fn describe(&self) -> &'static str {
        "remove Pad nodes whose pads are all zero"
    }
    fn apply(&self, cx: &mut Ctx, node: usize) -> Result<bool, IrError> {
        let Some((n, x, y)) = pass_through(cx, node, &["Pad"]) else {
            return Ok(false);
        };
        let pads = if cx.opset() < 11 {
            n.attr_ints_opt("pads").ok().flatten()
        } else {
            n.inputs
                .get(1)
                .filter(|s| !s.is_empty())
                .and_then(|p| cx.constant(p))
                .and_then(|t| t.to_i64_vec().ok())
        };
        match pads {
            Some(p) if p.iter().all(|&v| v == 0) => Ok(cx.bypass(node, &x, &y)),
            _ => Ok(false),
        }
    }
}

/// `cancel-transpose-pair`: `Transpose(Transpose(x, p1), p2)`.
///
/// Guards: the anchor is a default-domain `Transpose` whose input is the
/// output of another `Transpose` read only by the anchor (and not a graph
/// output); both permutations are known.
/// Patch: when `p1[p2[i]] == i` for all `i` and the anchor's output is not a
/// graph output, readers of the anchor's output read `x` and both nodes are
/// removed; otherwise the inner node is removed and the anchor becomes one
/// `Transpose(x, p1 ∘ p2)` (an identity left over is then handled by
/// `remove-noop-transpose`).
pub struct CancelTransposePair;

impl Rule for CancelTransposePair {
    fn name(&self) -> &'static str {
        "cancel-transpose-pair"
    }
    fn level(&self) -> Level {
        Level::Basic
    }
    fn describe(&self) -> &'static str {
        "cancel or compose two consecutive Transpose nodes"
    }
    fn apply(&self, cx: &mut Ctx, node: usize) -> Result<bool, IrError> {
        let Some((outer, mid, y)) = pass_through(cx, node, &["Transpose"]) else {
            return Ok(false);
        };
        let Some(inner_i) = cx.producer(&mid) else {
            return Ok(false);
        };
        if cx.sole_consumer(&mid) != Some(node) {
            return Ok(false);
        }
        let Some((inner, x, _)) = pass_through(cx, inner_i, &["Transpose"]) else {
            return Ok(false);
        };
        let (Some(p1), Some(p2)) = (transpose_perm(cx, inner), transpose_perm(cx, outer)) else {
            return Ok(false);
        };
        if p1.len() != p2.len() {
            return Ok(false);
        }
        // out[j] = mid[p2[j]] = x[p1[p2[j]]].
        let q: Vec<usize> = p2.iter().map(|&j| p1[j]).collect();
        if is_identity_perm(&q) && !cx.is_graph_output(&y) {
            cx.replace_uses(&y, &x);
            cx.remove_nodes(&[inner_i, node]);
            return Ok(true);
        }
        let perm: Vec<i64> = q.iter().map(|&a| a as i64).collect();
        let n = cx.node_mut(node);
        n.inputs[0] = x;
        n.attrs.insert("perm".into(), Attribute::Ints(perm));
        cx.remove_nodes(&[inner_i]);
        Ok(true)
    }
}

// ---------------------------------------------------------------------------
// Common subexpressions

/// `eliminate-common-subexpression`: two nodes computing the same thing.
///
/// Guards: the anchor and an earlier node have the same op type, domain,
/// inputs (names, in order), attributes (floats compared bitwise) and present
/// outputs; the op is deterministic (not `RandomNormal` and the like); no
/// output of the anchor is a graph output whose counterpart in the earlier
/// node is also a graph output. Candidates are the readers of the anchor's
/// first input (all earlier nodes only for nodes without inputs), so a call
/// costs about the fan-out of that input.
/// Patch: readers of the anchor's outputs read the earlier node's outputs;
/// where an anchor output is a graph output, the earlier node writes that
/// name instead and its readers follow; the anchor is removed.
pub struct EliminateCommonSubexpression;

impl Rule for EliminateCommonSubexpression {
    fn name(&self) -> &'static str {
        "eliminate-common-subexpression"
    }
    fn level(&self) -> Level {
        Level::Basic
    }
    fn describe(&self) -> &'static str {
        "merge nodes with the same op, attributes and inputs"
    }
    fn apply(&self, cx: &mut Ctx, node: usize) -> Result<bool, IrError> {
        let n = cx.node(node);
        if is_nondeterministic(&n.op_type) || n.outputs.iter().all(|o| o.is_empty()) {
            return Ok(false);
        }
        let candidates: Vec<usize> = match n.inputs.iter().find(|i| !i.is_empty()) {
            Some(first) => cx
                .consumers(first)
                .iter()
                .copied()
                .filter(|&c| c < node)
                .collect(),
            None => (0..node).collect(),
        };
        let Some(keep) = candidates.into_iter().find(|&c| same_computation(cx.node(c), n)) else {
            return Ok(false);
        };
        let pairs: Vec<(String, String)> = cx
            .node(keep)
            .outputs
            .iter()
            .zip(&n.outputs)
            .filter(|(_, d)| !d.is_empty())
            .map(|(k, d)| (k.clone(), d.clone()))
            .collect();
        if pairs
            .iter()
            .any(|(k, d)| cx.is_graph_output(k) && cx.is_graph_output(d))
        {
            return Ok(false);
        }
        cx.remove_nodes(&[node]);
        for (k, d) in pairs {
            if cx.is_graph_output(&d) {
                // Keep the graph output's name: the kept node writes it.
                for o in &mut cx.node_mut(keep).outputs {
                    if *o == k {
                        *o = d.clone();
                    }
                }
                cx.replace_uses(&k, &d);
            } else {
                cx.replace_uses(&d, &k);
            }
        }
        Ok(true)
    }
}

/// `merge-duplicate-initializers`: initializers with the same content.
///
/// Guards (anchored at node 0, once per pass): two or more initializers with
/// the same dtype, the same shape and the same bytes (floats compared
/// bitwise: `0.0` and `-0.0` differ), each read by some node, none a graph
/// input (an overridable default) or a graph output. Initializers that differ
/// in dtype or shape are never merged, even with equal bytes.
/// Patch: readers of each duplicate read the first of its group (by name);
/// the duplicates are removed. All groups are merged in one application.
pub struct MergeDuplicateInitializers;

impl Rule for MergeDuplicateInitializers {
    fn name(&self) -> &'static str {
        "merge-duplicate-initializers"
    }
    fn level(&self) -> Level {
        Level::Basic
    }
    fn describe(&self) -> &'static str {
        "merge initializers with the same dtype, shape and bytes"
    }
    fn apply(&self, cx: &mut Ctx, node: usize) -> Result<bool, IrError> {
        if node != 0 {
            return Ok(false);
        }
        // Group by (dtype, shape) first: only those groups need hashing.
        let mut by_type: HashMap<(DType, Vec<usize>), Vec<&str>> = HashMap::new();
        for (name, t) in &cx.model.graph.initializers {
            if cx.consumers(name).is_empty() || cx.is_graph_input(name) || cx.is_graph_output(name) {
                continue;
            }
            by_type
                .entry((t.dtype(), t.shape().to_vec()))
                .or_default()
                .push(name);
        }
        let inits = &cx.model.graph.initializers;
        let mut rename: HashMap<String, String> = HashMap::new();
        for names in by_type.values().filter(|v| v.len() > 1) {
            let mut by_hash: HashMap<u64, Vec<&str>> = HashMap::new();
            for &name in names {
                let t = &inits[name];
                let bucket = by_hash.entry(tensor_bits_hash(t)).or_default();
                match bucket.iter().find(|c| tensor_bits_eq(&inits[**c], t)) {
                    Some(&canon) => {
                        rename.insert(name.to_string(), canon.to_string());
                    }
                    None => bucket.push(name),
                }
            }
        }
        if rename.is_empty() {
            return Ok(false);
        }
        for n in &mut cx.model.graph.nodes {
            for i in &mut n.inputs {
                if let Some(c) = rename.get(i.as_str()) {
                    *i = c.clone();
                }
            }
        }
        for dup in rename.keys() {
            cx.model.graph.initializers.remove(dup);
        }
        Ok(true)
    }
}

// ---------------------------------------------------------------------------
// Dead code

/// `remove-dead-nodes`: removes a node whose results are never used.
///
/// Guards: no output of the node is read by a node or is a graph output.
/// Patch: the node is removed (one application per dead node; nodes that
/// only fed it become dead in turn).
pub struct RemoveDeadNodes;

impl Rule for RemoveDeadNodes {
    fn name(&self) -> &'static str {
        "remove-dead-nodes"
    }
    fn level(&self) -> Level {
        Level::Basic
    }
    fn describe(&self) -> &'static str {
        "remove nodes none of whose outputs is used"
    }
    fn apply(&self, cx: &mut Ctx, node: usize) -> Result<bool, IrError> {
        if cx.node(node).outputs.iter().any(|o| is_used(cx, o)) {
            return Ok(false);
        }
        cx.remove_nodes(&[node]);
        Ok(true)
    }
}

/// `remove-unused-initializers`: removes initializers nothing reads.
///
/// Guards (anchored at node 0, once per pass): some initializer is read by no
/// node, is not a graph output and is not a graph input (an input with a
/// default stays declared).
/// Patch: all such initializers are removed in one application. A graph
/// without nodes is never visited by the pass manager, so it keeps its
/// initializers.
pub struct RemoveUnusedInitializers;

impl Rule for RemoveUnusedInitializers {
    fn name(&self) -> &'static str {
        "remove-unused-initializers"
    }
    fn level(&self) -> Level {
        Level::Basic
    }
    fn describe(&self) -> &'static str {
        "remove initializers that no node reads"
    }
    fn apply(&self, cx: &mut Ctx, node: usize) -> Result<bool, IrError> {
        if node != 0 {
            return Ok(false);
        }
        let unused: Vec<String> = cx
            .model
            .graph
            .initializers
            .keys()
            .filter(|k| !is_used(cx, k) && !cx.is_graph_input(k))
            .cloned()
            .collect();
        for k in &unused {
            cx.model.graph.initializers.remove(k);
        }
        Ok(!unused.is_empty())
    }
}
