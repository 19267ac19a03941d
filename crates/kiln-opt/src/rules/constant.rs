//! Constant rules: Constant nodes to initializers, constant folding of nodes
//! whose inputs are all constants, and Shape of a static shape.
//!
//! Together they fold the Shape -> Gather -> Concat -> Reshape chains that
//! exporters emit for static shapes: `fold-shape` turns the Shape into an
//! initializer, then `fold-constants` folds the Gather and the Concat, leaving
//! the Reshape with a constant shape input.

use crate::{Ctx, Level, Rule};
use kiln_ir::{ops, IrError, Tensor};

/// Largest output (in elements, per output) that [`FoldConstants`] produces:
/// folding must not blow up the model (an Expand or Tile of a small constant
/// can be huge).
pub const FOLD_MAX_ELEMS: usize = 1 << 22;

/// Ops whose output is not a function of their inputs: never folded, never
/// merged by common-subexpression elimination.
pub(crate) fn is_nondeterministic(op_type: &str) -> bool {
    matches!(
        op_type,
        "RandomNormal"
            | "RandomUniform"
            | "RandomNormalLike"
            | "RandomUniformLike"
            | "Bernoulli"
            | "Multinomial"
    )
}

/// True for the default ONNX domain.
fn default_domain(domain: &str) -> bool {
    domain.is_empty() || domain == "ai.onnx"
}

/// The rules of this family, in run order.
pub fn rules() -> Vec<Box<dyn Rule>> {
    vec![
        Box::new(ConstantToInitializer),
        Box::new(FoldConstants),
        Box::new(FoldShape),
    ]
}

/// `constant-to-initializer`: a `Constant` node becomes an initializer.
///
/// Guards: the node is a default-domain `Constant` with one named output that
/// is not a graph output, and its value evaluates.
/// Patch: an initializer named as the output (readers are unchanged) holds the
/// value; the node is removed.
pub struct ConstantToInitializer;

impl Rule for ConstantToInitializer {
    fn name(&self) -> &'static str {
        "constant-to-initializer"
    }
    fn level(&self) -> Level {
        Level::Basic
    }
    fn describe(&self) -> &'static str {
        "Constant node to an initializer of the same name"
    }
    fn apply(&self, cx: &mut Ctx, node: usize) -> Result<bool, IrError> {
        let n = cx.node(node);
        if n.op_type != "Constant" || !default_domain(&n.domain) || n.outputs.len() != 1 {
            return Ok(false);
        }
        let y = n.outputs[0].clone();
        if y.is_empty() || cx.is_graph_output(&y) {
            return Ok(false);
        }
        let Ok(mut res) = ops::eval_node(n, cx.opset(), &[]) else {
            return Ok(false);
        };
        if res.len() != 1 {
            return Ok(false);
        }
        let t = res.remove(0);
        cx.model.graph.initializers.insert(y, t);
        cx.remove_nodes(&[node]);
        Ok(true)
    }
}

/// `fold-constants`: a node whose inputs are all constants is evaluated at
/// optimization time.
///
/// Guards: the node is in the default domain, is deterministic (not
/// `RandomNormal` and the like), has at least one input, every non-omitted
/// input is an initializer (not a graph input with a default), none of its
/// outputs is a graph output, every named output has a statically known shape
/// of at most [`FOLD_MAX_ELEMS`] elements, and the reference evaluation
/// succeeds (an error is left for run time).
/// Patch: each named output becomes an initializer of the same name; the node
/// is removed.
pub struct FoldConstants;

impl Rule for FoldConstants {
    fn name(&self) -> &'static str {
        "fold-constants"
    }
    fn level(&self) -> Level {
        Level::Basic
    }
    fn describe(&self) -> &'static str {
        "evaluate nodes whose inputs are all constants into initializers"
    }
    fn apply(&self, cx: &mut Ctx, node: usize) -> Result<bool, IrError> {
        let n = cx.node(node);
        if !default_domain(&n.domain)
            || is_nondeterministic(&n.op_type)
            || n.op_type == "Constant"
            || n.inputs.iter().all(|i| i.is_empty())
        {
            return Ok(false);
        }
        let mut ins: Vec<Option<&Tensor>> = Vec::with_capacity(n.inputs.len());
        for i in &n.inputs {
            if i.is_empty() {
                ins.push(None);
                continue;
            }
            match cx.constant(i) {
                Some(t) => ins.push(Some(t)),
                None => return Ok(false),
            }
        }
        for o in n.outputs.iter().filter(|o| !o.is_empty()) {
            if cx.is_graph_output(o) {
                return Ok(false);
            }
            let small = cx
                .known_dims(o)
                .and_then(|d| kiln_ir::numel(&d).ok())
                .is_some_and(|k| k <= FOLD_MAX_ELEMS);
            if !small {
                return Ok(false);
            }
        }
        let Ok(res) = ops::eval_node(n, cx.opset(), &ins) else {
            return Ok(false);
        };
        let named: Vec<(String, Tensor)> = n
            .outputs
            .iter()
            .zip(res)
            .filter(|(o, _)| !o.is_empty())
            .map(|(o, t)| (o.clone(), t))
            .collect();
        let wanted = n.outputs.iter().filter(|o| !o.is_empty()).count();
        if named.len() != wanted || named.iter().any(|(_, t)| t.len() > FOLD_MAX_ELEMS) {
            return Ok(false);
        }
        for (o, t) in named {
            cx.model.graph.initializers.insert(o, t);
        }
        cx.remove_nodes(&[node]);
        Ok(true)
    }
}

/// `fold-shape`: `Shape` of a value whose static dims are known becomes a
/// constant.
///
/// Guards: the node is a default-domain `Shape` whose input has a known rank
/// and known sizes for every dim it reads (all of them, or those in
/// `[start, end)` from opset 15: negative values count from the back, clamped
/// into the rank, as the spec says), and whose output is not a graph output.
/// Patch: an int64 initializer named as the output holds those dims; the
/// node is removed.
pub struct FoldShape;

impl Rule for FoldShape {
    fn name(&self) -> &'static str {
        "fold-shape"
    }
    fn level(&self) -> Level {
        Level::Basic
    }
    fn describe(&self) -> &'static str {
        "Shape of a statically known shape to an int64 initializer"
    }
    fn apply(&self, cx: &mut Ctx, node: usize) -> Result<bool, IrError> {
        let n = cx.node(node);
        if n.op_type != "Shape" || !default_domain(&n.domain) || n.outputs.len() != 1 {
            return Ok(false);
        }
        let (Some(x), Some(y)) = (n.inputs.first(), n.outputs.first()) else {
            return Ok(false);
        };
        if x.is_empty() || y.is_empty() || cx.is_graph_output(y) {
            return Ok(false);
        }
        let Some(dims) = cx.value_type(x).and_then(|t| t.shape.as_ref()) else {
            return Ok(false);
        };
        let r = dims.len() as i64;
        let (mut s, mut e) = (0i64, r);
        if cx.opset() >= 15 {
            s = n.attr_int("start", 0)?;
            e = n.attr_int("end", r)?;
        }
        let clamp = |v: i64| {
            if v < 0 {
                v.saturating_add(r).max(0)
            } else {
                v.min(r)
            }
        };
        let (s, e) = (clamp(s) as usize, clamp(e) as usize);
        let read = if s < e { &dims[s..e] } else { &[] };
        let Some(v) = read
            .iter()
            .map(|d| d.known().map(|k| k as i64))
            .collect::<Option<Vec<i64>>>()
        else {
            return Ok(false);
        };
        let t = Tensor::from_vec(vec![v.len()], v)?;
        let y = y.clone();
        cx.model.graph.initializers.insert(y, t);
        cx.remove_nodes(&[node]);
        Ok(true)
    }
}
