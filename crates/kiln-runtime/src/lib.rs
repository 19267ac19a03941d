//! # kiln-runtime
//!
//! Executes kiln IR graphs. This first executor runs each node with its
//! reference eval from [`kiln_ir::ops`], in topological order, freeing every
//! intermediate tensor after its last use. The compiled plan (kernels, static
//! memory plan) replaces it behind the same [`Session`] API.
//!
//! The runtime never depends on importers (ONNX, TFLite) or on compression
//! crates: it takes a [`kiln_ir::Model`].
#![warn(missing_docs)]

use kiln_ir::infer::{bind_dims, check_supported};
use kiln_ir::ops::{self, OpDef};
use kiln_ir::{ir_err, ErrorKind, IrError, Model, Tensor, ValueInfo};
use std::collections::HashMap;
use std::time::{Duration, Instant};

pub mod compiled;
pub mod qdq;
pub use compiled::{CompileOptions, CompiledModel, RunState, SparseMode, TensorRef};
pub use kiln_kernels::Isa;
pub use qdq::{lower_qdq, QdqReport};

/// A callback shown every value a run produces: `(value name, tensor)`.
pub type Observer<'a> = dyn FnMut(&str, &Tensor) + 'a;

/// How a [`Session`] prepares a model.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// Lower QDQ patterns onto integer kernels ([`lower_qdq`]); default true.
    /// False runs a QDQ model as written: dequantize, compute in float,
    /// quantize (the reference that integer execution is checked against).
    pub integer: bool,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions { integer: true }
    }
}

/// Errors of the runtime: the IR's typed error (kind + node/op/attribute).
pub type RuntimeError = IrError;

/// Where a node reads one input from.
#[derive(Debug, Clone, Copy)]
enum Src {
    /// Omitted optional input.
    None,
    /// An initializer (index into `Session::consts`).
    Const(usize),
    /// A runtime value slot (graph input or node output).
    Slot(usize),
}

#[derive(Debug)]
struct Step {
    node: usize,
    def: &'static OpDef,
    inputs: Vec<Src>,
    /// Output slot per node output (`None` for omitted outputs).
    outputs: Vec<Option<usize>>,
    /// Slots whose last reader is this step: freed after it runs.
    free_after: Vec<usize>,
}

/// Per-node wall time of one profiled run.
#[derive(Debug, Clone)]
pub struct NodeTiming {
    /// Node name.
    pub node: String,
    /// Op type.
    pub op_type: String,
    /// Wall time of the node's eval.
    pub time: Duration,
}

/// A model prepared for execution: validated, sorted, every op resolved.
///
/// A `Session` is immutable after creation and `Sync`: several threads may
/// call [`Session::run`] at once.
#[derive(Debug)]
pub struct Session {
    model: Model,
    opset: i64,
    consts: Vec<Tensor>,
    steps: Vec<Step>,
    n_slots: usize,
    input_slots: Vec<usize>,
    /// Per graph output: where to read it.
    output_srcs: Vec<Src>,
    /// Threads for the large GEMMs (Conv, MatMul, Gemm) of one run.
    threads: usize,
    /// What QDQ lowering did.
    qdq: QdqReport,
}

impl Session {
    /// Prepares `model` for execution.
    ///
    /// Errors: unsupported ops (all listed in one error), opset out of range,
    /// structural problems (dangling inputs, cycles), graph outputs never produced.
    pub fn new(model: Model) -> Result<Session, RuntimeError> {
        Session::with_options(model, &SessionOptions::default())
    }

    /// Prepares `model` for execution with `opts`. Errors as [`Session::new`].
    pub fn with_options(mut model: Model, opts: &SessionOptions) -> Result<Session, RuntimeError> {
        check_supported(&model)?;
        let qdq = if opts.integer {
            model.graph.validate()?;
            lower_qdq(&mut model)?
        } else {
            QdqReport::default()
        };
        model.graph.validate()?;
        let opset = model.opset();
        let g = &mut model.graph;
        let consts_map = std::mem::take(&mut g.initializers);
        let mut const_idx: HashMap<String, usize> = HashMap::new();
        let mut consts = Vec::with_capacity(consts_map.len());
        for (name, t) in consts_map {
            const_idx.insert(name, consts.len());
            consts.push(t);
        }
        let mut slot_of: HashMap<String, usize> = HashMap::new();
        let mut n_slots = 0usize;
        let mut input_slots = Vec::new();
        for i in &g.inputs {
            if const_idx.contains_key(&i.name) {
                // ONNX allows an input with a default from an initializer; the
                // caller's value wins. Treat as a plain input.
                const_idx.remove(&i.name);
            }
            slot_of.insert(i.name.clone(), n_slots);
            input_slots.push(n_slots);
            n_slots += 1;
        }
        let resolve = |name: &str, slot_of: &HashMap<String, usize>| -> Src {
            if name.is_empty() {
                Src::None
            } else if let Some(&s) = slot_of.get(name) {
                Src::Slot(s)
            } else if let Some(&c) = const_idx.get(name) {
                Src::Const(c)
            } else {
                Src::None
            }
        };
        let mut steps = Vec::with_capacity(g.nodes.len());
        for (ni, node) in g.nodes.iter().enumerate() {
            let def = ops::lookup_node(node, opset)?;
            let inputs = node.inputs.iter().map(|n| resolve(n, &slot_of)).collect();
            let mut outputs = Vec::with_capacity(node.outputs.len());
            for o in &node.outputs {
                if o.is_empty() {
                    outputs.push(None);
                } else {
                    slot_of.insert(o.clone(), n_slots);
                    outputs.push(Some(n_slots));
                    n_slots += 1;
                }
            }
            steps.push(Step {
                node: ni,
                def,
                inputs,
                outputs,
                free_after: Vec::new(),
            });
        }
        let output_srcs: Vec<Src> = g.outputs.iter().map(|o| resolve(&o.name, &slot_of)).collect();
        for (o, s) in g.outputs.iter().zip(&output_srcs) {
            if matches!(s, Src::None) {
                return Err(ir_err!(
                    InvalidModel,
                    "graph output '{}' is never produced",
                    o.name
                ));
            }
        }
        // Liveness: last step reading each slot; graph outputs live to the end.
        let mut last_use: Vec<Option<usize>> = vec![None; n_slots];
        for (si, st) in steps.iter().enumerate() {
            for s in &st.inputs {
                if let Src::Slot(k) = s {
                    last_use[*k] = Some(si);
                }
            }
        }
        let mut keep = vec![false; n_slots];
        for s in &output_srcs {
            if let Src::Slot(k) = s {
                keep[*k] = true;
            }
        }
        for (k, lu) in last_use.iter().enumerate() {
            if let (Some(si), false) = (lu, keep[k]) {
                steps[*si].free_after.push(k);
            }
        }
        Ok(Session {
            model,
            opset,
            consts,
            steps,
            n_slots,
            input_slots,
            output_srcs,
            threads: 1,
            qdq,
        })
    }

    /// What the lowering of QDQ patterns onto integer ops did (empty for a
    /// float model or with `integer: false`).
    pub fn qdq_report(&self) -> &QdqReport {
        &self.qdq
    }

    /// Sets the number of threads one run may use (at least 1). The reference
    /// executor runs nodes one after another and splits the large GEMMs of
    /// Conv, MatMul and Gemm by row blocks over this many scoped threads.
    pub fn with_threads(mut self, threads: usize) -> Session {
        self.threads = threads.max(1);
        self
    }
    /// Threads one run may use.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// The model this session runs (initializers moved out).
    pub fn model(&self) -> &Model {
        &self.model
    }
    /// Graph inputs to feed, in order.
    pub fn inputs(&self) -> &[ValueInfo] {
        &self.model.graph.inputs
    }
    /// Graph outputs returned by [`Session::run`], in order.
    pub fn outputs(&self) -> &[ValueInfo] {
        &self.model.graph.outputs
    }

    /// Runs the graph on `inputs`, one tensor per graph input in order.
    /// Returns one tensor per graph output, in order.
    ///
    /// Errors: wrong input count, dtype or shape (named, with the expected
    /// shape), or an op failing at run time (named node and op).
    pub fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, RuntimeError> {
        self.run_inner(inputs, None)
    }

    /// Like [`Session::run`], also returning the wall time of every node.
    pub fn run_profiled(&self, inputs: Vec<Tensor>) -> Result<(Vec<Tensor>, Vec<NodeTiming>), RuntimeError> {
        let mut t = Vec::with_capacity(self.steps.len());
        let out = self.run_inner(inputs, Some(&mut t))?;
        Ok((out, t))
    }

    /// Like [`Session::run`], also showing every value a node produces to
    /// `observer` as `(value name, tensor)`, in execution order, before it is
    /// freed. The graph inputs are shown first. This is how calibration sees
    /// the activations of a model without keeping them all alive.
    pub fn run_observed(
        &self,
        inputs: Vec<Tensor>,
        observer: &mut Observer<'_>,
    ) -> Result<Vec<Tensor>, RuntimeError> {
        for (t, d) in inputs.iter().zip(self.inputs()) {
            observer(&d.name, t);
        }
        ops::linalg::with_threads(self.threads, || self.run_steps(inputs, None, Some(observer)))
    }

    /// Checks `inputs` against the graph's declared inputs.
    pub fn check_inputs(&self, inputs: &[Tensor]) -> Result<(), RuntimeError> {
        let decl = self.inputs();
        if inputs.len() != decl.len() {
            let names: Vec<&str> = decl.iter().map(|i| i.name.as_str()).collect();
            return Err(ir_err!(
                InvalidInput,
                "the model takes {} input(s) ({}), got {}",
                decl.len(),
                names.join(", "),
                inputs.len()
            ));
        }
        let mut bindings = HashMap::new();
        for (d, t) in decl.iter().zip(inputs) {
            if d.ty.dtype != t.dtype() {
                return Err(ir_err!(
                    InvalidInput,
                    "input '{}' has dtype {}, the model expects {}",
                    d.name,
                    t.dtype(),
                    d.ty.dtype
                ));
            }
            bind_dims(&d.name, &d.ty, t.shape(), &mut bindings)?;
        }
        Ok(())
    }

    fn run_inner(
        &self,
        inputs: Vec<Tensor>,
        timings: Option<&mut Vec<NodeTiming>>,
    ) -> Result<Vec<Tensor>, RuntimeError> {
        ops::linalg::with_threads(self.threads, || self.run_steps(inputs, timings, None))
    }

    fn run_steps(
        &self,
        inputs: Vec<Tensor>,
        mut timings: Option<&mut Vec<NodeTiming>>,
        mut observer: Option<&mut Observer<'_>>,
    ) -> Result<Vec<Tensor>, RuntimeError> {
        self.check_inputs(&inputs)?;
        let mut slots: Vec<Option<Tensor>> = vec![None; self.n_slots];
        for (s, t) in self.input_slots.iter().zip(inputs) {
            slots[*s] = Some(t);
        }
        let nodes = &self.model.graph.nodes;
        for st in &self.steps {
            let node = &nodes[st.node];
            let outs = {
                let mut args: Vec<Option<&Tensor>> = Vec::with_capacity(st.inputs.len());
                for s in &st.inputs {
                    args.push(match s {
                        Src::None => None,
                        Src::Const(c) => Some(&self.consts[*c]),
                        Src::Slot(k) => Some(slots[*k].as_ref().ok_or_else(|| {
                            node.err(ErrorKind::Internal, "input value was freed before its last use")
                        })?),
                    });
                }
                let ctx = ops::OpCtx {
                    node,
                    opset: self.opset,
                };
                let t0 = timings.as_ref().map(|_| Instant::now());
                let outs = (st.def.eval)(&ctx, &args).map_err(|e| e.at_node(&node.name, &node.op_type))?;
                if let (Some(t), Some(t0)) = (timings.as_deref_mut(), t0) {
                    t.push(NodeTiming {
                        node: node.name.clone(),
                        op_type: node.op_type.clone(),
                        time: t0.elapsed(),
                    });
                }
                outs
            };
            let produced = outs.len();
            let mut it = outs.into_iter();
            for (i, o) in st.outputs.iter().enumerate() {
                let t = it.next();
                if let Some(k) = o {
                    let t = t.ok_or_else(|| {
                        node.err(
                            ErrorKind::Internal,
                            format!("output #{i} was requested but the op produced {produced}"),
                        )
                    })?;
                    if let Some(obs) = observer.as_deref_mut() {
                        obs(&node.outputs[i], &t);
                    }
                    slots[*k] = Some(t);
                }
            }
            for k in &st.free_after {
                slots[*k] = None;
            }
        }
        let mut outs = Vec::with_capacity(self.output_srcs.len());
        for (s, o) in self.output_srcs.iter().zip(&self.model.graph.outputs) {
            outs.push(match s {
                Src::Slot(k) => slots[*k]
                    .take()
                    .ok_or_else(|| ir_err!(Internal, "graph output '{}' was not computed", o.name))?,
                Src::Const(c) => self.consts[*c].clone(),
                Src::None => return Err(ir_err!(Internal, "graph output '{}' has no source", o.name)),
            });
        }
        Ok(outs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_ir::{DType, Graph, Node, OpsetImport, ValueType};

    fn identity_model() -> Model {
        let mut g = Graph::default();
        g.inputs.push(ValueInfo {
            name: "x".into(),
            ty: ValueType::known(DType::F32, &[2]),
        });
        g.outputs.push(ValueInfo {
            name: "y".into(),
            ty: ValueType::known(DType::F32, &[2]),
        });
        g.nodes.push(Node::new("id", "Identity", &["x"], &["y"]));
        Model {
            graph: g,
            opsets: vec![OpsetImport {
                domain: String::new(),
                version: 13,
            }],
            ..Default::default()
        }
    }

    #[test]
    fn wrong_input_shape_is_named() {
        let s = Session::new(identity_model()).unwrap();
        let e = s
            .run(vec![Tensor::from_vec(vec![3], vec![0f32; 3]).unwrap()])
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidInput);
        assert!(e.to_string().contains("input 'x' has shape [3]"), "{e}");
    }

    #[test]
    fn unknown_op_fails_at_load() {
        let mut m = identity_model();
        m.graph.nodes[0].op_type = "NoSuchOp".into();
        let e = Session::new(m).unwrap_err();
        assert_eq!(e.kind, ErrorKind::UnsupportedOp);
        assert!(e.to_string().contains("NoSuchOp"), "{e}");
    }
}
