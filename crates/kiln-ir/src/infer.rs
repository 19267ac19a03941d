//! Whole-graph checks and static type/shape inference.

use crate::ops::{self, InferInput, OpCtx};
use crate::{ir_err, Dim, ErrorKind, IrError, Model, Result, Tensor, ValueType};
use std::collections::{BTreeMap, HashMap};

/// Largest constant (in elements) that inference computes by running the
/// reference eval (Shape -> Gather -> Concat -> Reshape chains and the like).
pub const FOLD_LIMIT_ELEMS: usize = 1 << 16;

/// Checks that every op of the model is supported at its opset, and that the
/// opset is in kiln's range. All unsupported ops are reported in one error.
pub fn check_supported(model: &Model) -> Result<()> {
    let opset = model.opset();
    let uses_default = model
        .graph
        .nodes
        .iter()
        .any(|n| n.domain.is_empty() || n.domain == "ai.onnx");
    // A model with only other-domain nodes (e.g. ai.onnx.ml) need not import
    // the default domain: its unsupported ops are listed below instead.
    if uses_default && !(ops::MIN_OPSET..=ops::MAX_OPSET).contains(&opset) {
        return Err(ir_err!(
            UnsupportedOp,
            "default-domain opset {opset} is outside kiln's supported range {}..={}",
            ops::MIN_OPSET,
            ops::MAX_OPSET
        ));
    }
    let mut missing: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for n in &model.graph.nodes {
        if let Err(e) = ops::lookup_node(n, opset) {
            if e.kind == ErrorKind::UnsupportedOp {
                let imported = model.opsets.iter().any(|o| o.domain == n.domain);
                let key = if n.domain.is_empty() || n.domain == "ai.onnx" {
                    n.op_type.clone()
                } else if imported {
                    format!("{}::{}", n.domain, n.op_type)
                } else {
                    format!(
                        "{}::{} (domain '{}' not imported by the model)",
                        n.domain, n.op_type, n.domain
                    )
                };
                missing.entry(key).or_default().push(n.name.clone());
            }
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = missing
        .iter()
        .map(|(op, nodes)| {
            let more = if nodes.len() > 1 {
                format!(" and {} more", nodes.len() - 1)
            } else {
                String::new()
            };
            format!("{op} (node '{}'{more})", nodes[0])
        })
        .collect();
    Err(ir_err!(
        UnsupportedOp,
        "unsupported ops at opset {opset}: {}",
        list.join(", ")
    ))
}

/// Default of [`InferLimits::max_rank`]: the most dims of any value.
pub const DEFAULT_MAX_RANK: usize = 64;

/// Default of [`InferLimits::max_elements`]: the most elements of any value
/// whose dims are all known (2^31).
pub const DEFAULT_MAX_ELEMENTS: u64 = 1 << 31;

/// Bounds on the shapes that inference accepts, checked on every graph input
/// and every inferred node output; a value past one is a `LimitExceeded`
/// error naming the node and op that produce it.
///
/// Symbolic dims are not bounded here (their sizes are only known at run
/// time, where every tensor is allocated with checked sizes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InferLimits {
    /// Most dims of one value. Default [`DEFAULT_MAX_RANK`] (64).
    pub max_rank: usize,
    /// Most elements of one value whose dims are all known (the product is
    /// computed with overflow checks). Default [`DEFAULT_MAX_ELEMENTS`] (2^31).
    pub max_elements: u64,
}

impl Default for InferLimits {
    fn default() -> Self {
        InferLimits {
            max_rank: DEFAULT_MAX_RANK,
            max_elements: DEFAULT_MAX_ELEMENTS,
        }
    }
}

/// The element count of `dims` (known dims only; symbols are skipped), or
/// `None` if the product overflows a `u64`.
pub fn checked_elements(dims: &[Dim]) -> Option<u64> {
    dims.iter()
        .filter_map(Dim::known)
        .try_fold(1u64, |acc, d| acc.checked_mul(u64::try_from(d).ok()?))
}

impl InferLimits {
    /// Checks `ty` against the limits; `what` names the value in the message
    /// (`output 'y'`). The error has no location: callers attach the node.
    pub fn check(&self, what: &str, ty: &ValueType) -> Result<()> {
        let Some(dims) = &ty.shape else {
            return Ok(());
        };
        if dims.len() > self.max_rank {
            return Err(ir_err!(
                LimitExceeded,
                "{what} has rank {}, over the limit of {}",
                dims.len(),
                self.max_rank
            ));
        }
        match checked_elements(dims) {
            Some(n) if n <= self.max_elements => Ok(()),
            n => Err(ir_err!(
                LimitExceeded,
                "{what} has shape {} = {} elements, over the limit of {}",
                crate::shape::shape_to_string(&ty.shape),
                n.map(|n| n.to_string())
                    .unwrap_or_else(|| "more than 2^64".into()),
                self.max_elements
            )),
        }
    }
}

/// Infers the static type of every value, filling `graph.value_types`, and
/// returns the constant values it could compute along the way.
///
/// Same as [`infer_types_with`] under the default [`InferLimits`].
pub fn infer_types(model: &mut Model) -> Result<HashMap<String, Tensor>> {
    infer_types_with(model, &InferLimits::default())
}

/// Infers the static type of every value, filling `graph.value_types`, and
/// returns the constant values it could compute along the way.
///
/// Nodes must be in topological order ([`crate::Graph::topo_sort`]).
/// Dims that cannot be known statically become symbols named after the node.
/// Every graph input and inferred output is checked against `limits`
/// (overflow-safe element counts), so no later size arithmetic on a static
/// shape can overflow. Errors name the node and op at fault (for graph
/// inputs, the input).
pub fn infer_types_with(model: &mut Model, limits: &InferLimits) -> Result<HashMap<String, Tensor>> {
    let opset = model.opset();
    let g = &mut model.graph;
    let mut types: HashMap<String, ValueType> = HashMap::new();
    let mut values: HashMap<String, Tensor> = HashMap::new();
    for i in &g.inputs {
        limits.check(&format!("graph input '{}'", i.name), &i.ty)?;
        types.insert(i.name.clone(), i.ty.clone());
    }
    for (name, t) in &g.initializers {
        types.insert(name.clone(), ValueType::known(t.dtype(), t.shape()));
        if t.len() <= FOLD_LIMIT_ELEMS {
            values.insert(name.clone(), t.clone());
        }
    }
    for node in &g.nodes {
        let def = ops::lookup_node(node, opset)?;
        let ctx = OpCtx { node, opset };
        let mut ins: Vec<Option<InferInput>> = Vec::with_capacity(node.inputs.len());
        for name in &node.inputs {
            if name.is_empty() {
                ins.push(None);
                continue;
            }
            let ty = types.get(name).cloned().ok_or_else(|| {
                node.err(
                    ErrorKind::InvalidModel,
                    format!("input '{name}' has no known type"),
                )
            })?;
            ins.push(Some(InferInput {
                ty,
                value: values.get(name).cloned(),
            }));
        }
        let refs: Vec<Option<&InferInput>> = ins.iter().map(|o| o.as_ref()).collect();
        let outs = (def.infer)(&ctx, &refs).map_err(|e| e.at_node(&node.name, &node.op_type))?;
        for (name, ty) in node.outputs.iter().zip(outs.iter()) {
            limits
                .check(&format!("output '{name}'"), ty)
                .map_err(|e| e.at_node(&node.name, &node.op_type))?;
        }
        for (name, ty) in node.outputs.iter().zip(outs.iter()) {
            if !name.is_empty() {
                types.insert(name.clone(), ty.clone());
            }
        }
        // Constant propagation through small all-constant nodes.
        let all_const = ins.iter().all(|i| i.as_ref().is_none_or(|i| i.value.is_some()));
        let small = outs.iter().all(|t| {
            t.shape.as_ref().is_some_and(|d| {
                d.iter().all(|d| d.known().is_some())
                    && checked_elements(d).is_some_and(|n| n <= FOLD_LIMIT_ELEMS as u64)
            })
        });
        if node.op_type == "Shape" && node.domain.is_empty() {
            if let Some(v) = shape_value(node, opset, &refs) {
                values.insert(node.outputs[0].clone(), v);
                continue;
            }
        }
        if all_const && small && !node.inputs.is_empty() || node.op_type == "Constant" {
            let tv: Vec<Option<&Tensor>> = ins
                .iter()
                .map(|i| i.as_ref().and_then(|i| i.value.as_ref()))
                .collect();
            if let Ok(res) = (def.eval)(&ctx, &tv) {
                for (name, t) in node.outputs.iter().zip(res) {
                    if !name.is_empty() {
                        types.insert(name.clone(), ValueType::known(t.dtype(), t.shape()));
                        values.insert(name.clone(), t);
                    }
                }
            }
        }
    }
    for o in &mut g.outputs {
        if let Some(t) = types.get(&o.name) {
            if o.ty.shape.is_none() || o.ty.rank() == t.rank() && t.known_dims().is_some() {
                o.ty = t.clone();
            }
        }
    }
    g.value_types = types;
    Ok(values)
}

/// The value of a `Shape` node when its input's dims are all known.
fn shape_value(node: &crate::Node, opset: i64, ins: &[Option<&InferInput>]) -> Option<Tensor> {
    let dims = ins.first().copied().flatten()?.ty.known_dims()?;
    let r = dims.len() as i64;
    let (mut s, mut e) = (0i64, r);
    if opset >= 15 {
        s = node.attr_int("start", 0).ok()?;
        e = node.attr_int("end", r).ok()?;
    }
    let clamp = |x: i64| if x < 0 { (x + r).max(0) } else { x.min(r) };
    let (s, e) = (clamp(s), clamp(e));
    let v: Vec<i64> = if s < e {
        dims[s as usize..e as usize].iter().map(|&d| d as i64).collect()
    } else {
        vec![]
    };
    let n = v.len();
    Tensor::from_vec(vec![n], v).ok()
}

/// Binds the symbols of `declared` to the sizes of `actual`, checking the
/// known dims and the consistency of each symbol across calls.
///
/// Errors (`InvalidInput`) name the input, the declared and the actual shape.
pub fn bind_dims(
    input: &str,
    declared: &ValueType,
    actual: &[usize],
    bindings: &mut HashMap<String, usize>,
) -> Result<()> {
    let Some(dims) = &declared.shape else {
        return Ok(());
    };
    let bad = || -> IrError {
        ir_err!(
            InvalidInput,
            "input '{input}' has shape {actual:?}, the model expects {}",
            crate::shape::shape_to_string(&declared.shape)
        )
    };
    if dims.len() != actual.len() {
        return Err(bad());
    }
    for (d, &a) in dims.iter().zip(actual) {
        match d {
            Dim::Known(k) if *k != a => return Err(bad()),
            Dim::Known(_) => {}
            Dim::Sym(s) => {
                if let Some(&prev) = bindings.get(s) {
                    if prev != a {
                        return Err(ir_err!(
                            InvalidInput,
                            "input '{input}' has {s} = {a}, but another input bound {s} = {prev}"
                        ));
                    }
                } else {
                    bindings.insert(s.clone(), a);
                }
            }
        }
    }
    Ok(())
}
