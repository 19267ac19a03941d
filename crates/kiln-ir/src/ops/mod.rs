//! The op registry: for every supported ONNX op, its static type/shape
//! inference and its reference evaluation (the oracle for every fast path).
//!
//! Each family lives in its own module and exports a `pub(crate) const OPS`
//! table; [`lookup`] searches them all. Semantics follow the ONNX operator
//! specification (<https://onnx.ai/onnx/operators/>) at the node's opset.

use crate::{ir_err, Dim, ErrorKind, IrError, Node, Result, Tensor, ValueType};

pub mod activation;
pub mod conv;
pub mod elementwise;
pub mod fused;
pub mod linalg;
pub mod matmul;
pub mod norm;
pub mod pool;
pub mod qint;
pub mod quant;
pub mod reduce;
pub mod resize;
pub mod shape_ops;

/// Lowest default-domain opset kiln accepts.
pub const MIN_OPSET: i64 = 6;
/// Highest default-domain opset kiln accepts. Opsets 24 and 25 changed no op
/// kiln implements beyond new element types (float8e8m0, 4- and 2-bit ints)
/// and the `round_mode` of casts to them, none of which kiln supports.
pub const MAX_OPSET: i64 = 25;

/// What an op sees of its node: the node (attributes, names) and the model's
/// default-domain opset version, which selects per-opset semantics.
#[derive(Debug, Clone, Copy)]
pub struct OpCtx<'a> {
    /// The node being inferred or evaluated.
    pub node: &'a Node,
    /// Default-domain opset of the model.
    pub opset: i64,
}

impl<'a> OpCtx<'a> {
    /// An error located at this node.
    pub fn err(&self, kind: ErrorKind, msg: impl Into<String>) -> IrError {
        self.node.err(kind, msg)
    }
    /// An attribute error located at this node.
    pub fn attr_err(&self, attr: &str, msg: impl Into<String>) -> IrError {
        self.node.attr_err(attr, msg)
    }
    /// A fresh symbolic dim for output `out`, axis `axis`, when a size cannot
    /// be known statically. Deterministic: named after the node.
    pub fn unknown_dim(&self, out: usize, axis: usize) -> Dim {
        Dim::Sym(format!("{}:{}:{}", self.node.name, out, axis))
    }
    /// Required input `i` (errors if missing or omitted).
    pub fn input<'t>(&self, inputs: &[Option<&'t Tensor>], i: usize) -> Result<&'t Tensor> {
        inputs
            .get(i)
            .copied()
            .flatten()
            .ok_or_else(|| self.err(ErrorKind::InvalidModel, format!("required input #{i} is missing")))
    }
    /// Optional input `i`.
    pub fn opt_input<'t>(&self, inputs: &[Option<&'t Tensor>], i: usize) -> Option<&'t Tensor> {
        inputs.get(i).copied().flatten()
    }
    /// Required input `i` for inference.
    pub fn infer_input<'t>(&self, inputs: &[Option<&'t InferInput>], i: usize) -> Result<&'t InferInput> {
        inputs
            .get(i)
            .copied()
            .flatten()
            .ok_or_else(|| self.err(ErrorKind::InvalidModel, format!("required input #{i} is missing")))
    }
    /// Optional input `i` for inference.
    pub fn opt_infer_input<'t>(&self, inputs: &[Option<&'t InferInput>], i: usize) -> Option<&'t InferInput> {
        inputs.get(i).copied().flatten()
    }
}

/// What inference knows of one input: its static type, and its value when it
/// is a constant (an initializer, or computed from constants).
#[derive(Debug, Clone)]
pub struct InferInput {
    /// Static type.
    pub ty: ValueType,
    /// Value, when constant.
    pub value: Option<Tensor>,
}

/// Static inference: from the inputs' types (and constant values), the
/// outputs' types, one per node output (omitted trailing outputs may be left off).
pub type InferFn = fn(&OpCtx, &[Option<&InferInput>]) -> Result<Vec<ValueType>>;
/// Reference evaluation: from input tensors, output tensors, one per node output.
pub type EvalFn = fn(&OpCtx, &[Option<&Tensor>]) -> Result<Vec<Tensor>>;

/// One supported op.
#[derive(Debug, Clone, Copy)]
pub struct OpDef {
    /// ONNX op type.
    pub op_type: &'static str,
    /// Domain (`""` = ai.onnx).
    pub domain: &'static str,
    /// First default-domain opset at which the op exists.
    pub since: i64,
    /// Type and shape inference.
    pub infer: InferFn,
    /// Reference evaluation.
    pub eval: EvalFn,
}

/// An [`OpDef`] of the default ONNX domain (shorthand for the op tables).
pub(crate) const fn op_def(op_type: &'static str, since: i64, infer: InferFn, eval: EvalFn) -> OpDef {
    OpDef {
        op_type,
        domain: "",
        since,
        infer,
        eval,
    }
}

/// All op tables.
fn tables() -> [&'static [OpDef]; 12] {
    [
        activation::OPS,
        conv::OPS,
        elementwise::OPS,
        fused::OPS,
        matmul::OPS,
        norm::OPS,
        pool::OPS,
        qint::OPS,
        quant::OPS,
        reduce::OPS,
        resize::OPS,
        shape_ops::OPS,
    ]
}

/// Every supported op, in no particular order.
pub fn all_ops() -> impl Iterator<Item = &'static OpDef> {
    tables().into_iter().flat_map(|t| t.iter())
}

/// Finds the op `op_type` of `domain` (`""` or `ai.onnx` = default domain).
pub fn lookup(op_type: &str, domain: &str) -> Option<&'static OpDef> {
    let domain = if domain == "ai.onnx" { "" } else { domain };
    all_ops().find(|d| d.op_type == op_type && d.domain == domain)
}

/// Looks up the node's op and checks the opset; errors name the node and op.
pub fn lookup_node(node: &Node, opset: i64) -> Result<&'static OpDef> {
    let def = lookup(&node.op_type, &node.domain).ok_or_else(|| {
        node.err(
            ErrorKind::UnsupportedOp,
            format!("op '{}' is not supported", display_op(node)),
        )
    })?;
    if opset < def.since {
        return Err(node.err(
            ErrorKind::UnsupportedOp,
            format!(
                "op '{}' does not exist at opset {opset} (since {})",
                node.op_type, def.since
            ),
        ));
    }
    Ok(def)
}

fn display_op(node: &Node) -> String {
    if node.domain.is_empty() {
        node.op_type.clone()
    } else {
        format!("{}::{}", node.domain, node.op_type)
    }
}

/// Evaluates one node with the reference implementation.
///
/// Errors are located at the node (name and op).
pub fn eval_node(node: &Node, opset: i64, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let def = lookup_node(node, opset)?;
    let ctx = OpCtx { node, opset };
    (def.eval)(&ctx, inputs).map_err(|e| e.at_node(&node.name, &node.op_type))
}

// ---------------------------------------------------------------------------
// Helpers shared by the op families.

/// Normalizes a possibly negative `axis` into `0..rank` (ONNX convention:
/// negative counts from the back).
pub fn norm_axis(ctx: &OpCtx, attr: &str, axis: i64, rank: usize) -> Result<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    let scalar_zero = r == 0 && a == 0;
    if a < 0 || (a >= r && !scalar_zero) {
        return Err(ctx.attr_err(attr, format!("axis {axis} is out of range for rank {rank}")));
    }
    Ok(a as usize)
}

/// Multidirectional (NumPy) broadcasting of two concrete shapes.
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let r = a.len().max(b.len());
    let mut out = vec![0; r];
    for i in 0..r {
        let da = if i + a.len() >= r { a[i + a.len() - r] } else { 1 };
        let db = if i + b.len() >= r { b[i + b.len() - r] } else { 1 };
        out[i] = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return Err(ir_err!(ShapeMismatch, "shapes {a:?} and {b:?} do not broadcast"));
        };
    }
    Ok(out)
}

/// Multidirectional broadcasting of static (possibly symbolic) shapes.
/// A symbol against 1 keeps the symbol; two different symbols give the
/// first (ONNX shape inference does the same, trusting the model).
pub fn broadcast_dims(a: &[Dim], b: &[Dim]) -> Result<Vec<Dim>> {
    let r = a.len().max(b.len());
    let one = Dim::Known(1);
    let mut out = Vec::with_capacity(r);
    for i in 0..r {
        let da = if i + a.len() >= r {
            &a[i + a.len() - r]
        } else {
            &one
        };
        let db = if i + b.len() >= r {
            &b[i + b.len() - r]
        } else {
            &one
        };
        out.push(match (da, db) {
            (Dim::Known(x), Dim::Known(y)) if x == y => da.clone(),
            (Dim::Known(1), _) => db.clone(),
            (_, Dim::Known(1)) => da.clone(),
            (Dim::Known(x), Dim::Known(y)) => {
                return Err(ir_err!(ShapeMismatch, "dims {x} and {y} do not broadcast"))
            }
            (Dim::Sym(_), _) => da.clone(),
            (Dim::Known(_), Dim::Sym(_)) => da.clone(),
        });
    }
    Ok(out)
}

/// Broadcast of any number of static types' shapes (unknown rank if any is unknown).
pub fn broadcast_types(ctx: &OpCtx, tys: &[&ValueType]) -> Result<Option<Vec<Dim>>> {
    let mut acc: Vec<Dim> = Vec::new();
    for t in tys {
        match &t.shape {
            None => return Ok(None),
            Some(s) => {
                acc = broadcast_dims(&acc, s).map_err(|e| e.at_node(&ctx.node.name, &ctx.node.op_type))?
            }
        }
    }
    Ok(Some(acc))
}

/// Before opset 7, binary ops (`Add`, `Sub`, `Mul`, `Div`, `Pow`, `Equal`,
/// `Greater`, `Less`) broadcast only with `broadcast = 1`, aligning `B` with
/// `A` from dim `axis` (default: trailing). kiln computes NumPy (trailing)
/// broadcasting, which is the same when `axis` is absent or equals
/// `rank(A) - rank(B)`; any other `axis`, or one whose ranks are unknown, is
/// rejected (`UnsupportedOp`). From opset 7 the attributes do not exist and
/// this checks nothing.
pub fn check_legacy_broadcast(ctx: &OpCtx, rank_a: Option<usize>, rank_b: Option<usize>) -> Result<()> {
    if ctx.opset >= 7 || ctx.node.attr_int("broadcast", 0)? == 0 {
        return Ok(());
    }
    let Some(axis) = ctx.node.attr_int_opt("axis")? else {
        return Ok(());
    };
    let aligned = match (rank_a, rank_b) {
        (Some(ra), Some(rb)) => {
            let a = if axis < 0 { axis + ra as i64 } else { axis };
            rb <= ra && a == (ra - rb) as i64
        }
        _ => false,
    };
    if aligned {
        Ok(())
    } else {
        Err(ctx
            .err(
                ErrorKind::UnsupportedOp,
                format!("legacy broadcast with axis = {axis} that does not align B with the trailing dims of A is not supported"),
            )
            .with_attr("axis"))
    }
}
