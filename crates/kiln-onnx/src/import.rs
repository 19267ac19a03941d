//! ONNX `ModelProto` -> kiln [`Model`].

use crate::error::OnnxError;
use crate::proto::attribute_proto::AttributeType;
use crate::proto::tensor_shape_proto::dimension::Value as DimValue;
use crate::proto::type_proto::Value as TypeValue;
use crate::proto::{AttributeProto, GraphProto, ModelProto, ValueInfoProto};
use crate::tensor::{dtype_from_onnx, onnx_type_name, tensor_from_proto};
use kiln_ir::{
    ir_err, Attribute, Dim, ErrorKind, Graph, IrError, Model, Node, OpsetImport, ValueInfo, ValueType,
};
use prost::Message;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

/// Options and resource limits of [`crate::load_with`] and [`crate::from_bytes`].
///
/// The limits guard against hostile files: every size is checked (with
/// overflow-safe arithmetic) before memory is allocated for it, and exceeding
/// one is an error of kind `LimitExceeded` that names what is at fault (the
/// file, and the tensor, value, or node and op).
///
/// What is bounded where:
/// - bytes: the file ([`max_model_bytes`](Self::max_model_bytes)), each
///   decoded tensor and all of them, external data included
///   ([`max_tensor_bytes`](Self::max_tensor_bytes),
///   [`max_total_tensor_bytes`](Self::max_total_tensor_bytes));
/// - shapes: elements and rank of every initializer, tensor attribute and
///   declared graph input/output, and, with `check_ops`, of every shape
///   that type inference computes ([`max_tensor_elements`](Self::max_tensor_elements),
///   [`max_rank`](Self::max_rank); [`kiln_ir::infer::InferLimits`]). A declared
///   dim must be positive, `0`, or `-1` (unknown); other negative dims are
///   `InvalidModel` errors;
/// - graph: [`max_nodes`](Self::max_nodes), and
///   [`max_graph_depth`](Self::max_graph_depth), the longest path through
///   the nodes.
///
/// Nesting is bounded elsewhere: ONNX subgraphs (`GRAPH`/`GRAPHS`
/// attributes of `If`, `Loop`, `Scan`) and model-local functions are not
/// supported (an `UnsupportedOp` error at the node and attribute), so a kiln
/// graph is always flat; message nesting inside the protobuf (e.g. a
/// `TypeProto` sequence of sequences, or a subgraph in a subgraph) is
/// bounded while decoding by prost's recursion limit of 100 nested
/// messages, past which the file is a `Decode` error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOptions {
    /// Largest model file (the `.onnx` protobuf itself) in bytes. Default 4 GiB.
    pub max_model_bytes: u64,
    /// Largest decoded tensor (initializer or tensor attribute) in bytes. Default 2 GiB.
    pub max_tensor_bytes: u64,
    /// Most bytes of all decoded tensors together, external data included. Default 4 GiB.
    pub max_total_tensor_bytes: u64,
    /// Most elements of one tensor, of any fully known declared shape, and
    /// (with `check_ops`) of any fully known inferred shape. Default 2^31.
    pub max_tensor_elements: u64,
    /// Most dims of one tensor, declared shape or (with `check_ops`)
    /// inferred shape. Default 64 ([`kiln_ir::infer::DEFAULT_MAX_RANK`]).
    pub max_rank: usize,
    /// Most nodes in the graph. Default 1,000,000.
    pub max_nodes: usize,
    /// Most nodes on one path through the graph (its depth: the longest
    /// chain of nodes each consuming an output of the one before,
    /// [`kiln_ir::Graph::depth`]). Default 100,000: deep enough for any
    /// real model, shallow enough that a walk along a path stays cheap.
    pub max_graph_depth: usize,
    /// After import and the structural check, also check that every op is
    /// supported ([`kiln_ir::infer::check_supported`]) and run type inference
    /// ([`kiln_ir::infer::infer_types_with`], under `max_rank` and
    /// `max_tensor_elements`). Default true.
    pub check_ops: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            max_model_bytes: 4 << 30,
            max_tensor_bytes: 2 << 30,
            max_total_tensor_bytes: 4 << 30,
            max_tensor_elements: 1 << 31,
            max_rank: kiln_ir::infer::DEFAULT_MAX_RANK,
            max_nodes: 1_000_000,
            max_graph_depth: 100_000,
            check_ops: true,
        }
    }
}

impl LoadOptions {
    /// The shape limits of type inference under these options.
    pub fn infer_limits(&self) -> kiln_ir::infer::InferLimits {
        kiln_ir::infer::InferLimits {
            max_rank: self.max_rank,
            max_elements: self.max_tensor_elements,
        }
    }
}

/// State of one import: options, the folder for external data, and the
/// running total of decoded tensor bytes.
pub(crate) struct Loader<'a> {
    pub(crate) opts: &'a LoadOptions,
    pub(crate) base_dir: Option<&'a Path>,
    tensor_bytes: u64,
}

impl<'a> Loader<'a> {
    pub(crate) fn new(opts: &'a LoadOptions, base_dir: Option<&'a Path>) -> Self {
        Loader {
            opts,
            base_dir,
            tensor_bytes: 0,
        }
    }

    /// Adds `bytes` to the total, erroring past `max_total_tensor_bytes`.
    pub(crate) fn account(&mut self, bytes: u64, what: &str) -> Result<(), IrError> {
        let total = self.tensor_bytes.saturating_add(bytes);
        if total > self.opts.max_total_tensor_bytes {
            return Err(ir_err!(
                LimitExceeded,
                "{what} brings the model's tensor data to {total} bytes, over the limit of {}",
                self.opts.max_total_tensor_bytes
            ));
        }
        self.tensor_bytes = total;
        Ok(())
    }
}

/// Reads and imports the model file `path` (see [`crate::from_bytes`]);
/// external data is read relative to the file's folder.
pub(crate) fn load_path(path: &Path, opts: &LoadOptions) -> Result<Model, OnnxError> {
    let in_file = |e: OnnxError| e.in_file(Some(path));
    let meta = std::fs::metadata(path).map_err(|e| in_file(OnnxError::io("cannot read the model", e)))?;
    if meta.len() > opts.max_model_bytes {
        return Err(in_file(
            ir_err!(
                LimitExceeded,
                "model file is {} bytes, over the limit of {}",
                meta.len(),
                opts.max_model_bytes
            )
            .into(),
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| in_file(OnnxError::io("cannot read the model", e)))?;
    let base = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    check_size(&bytes, opts).map_err(in_file)?;
    // Decoding from `Bytes` makes every tensor's `raw_data` a slice of the
    // file buffer (no copy): peak memory is the file plus the converted
    // tensors, and the buffer is freed when the last tensor is converted.
    let mp = ModelProto::decode(prost::bytes::Bytes::from(bytes))
        .map_err(|e| in_file(OnnxError::decode("ModelProto", e)))?;
    import_proto(mp, Some(base), opts).map_err(in_file)
}

fn check_size(bytes: &[u8], opts: &LoadOptions) -> Result<(), OnnxError> {
    if bytes.len() as u64 > opts.max_model_bytes {
        return Err(ir_err!(
            LimitExceeded,
            "model is {} bytes, over the limit of {}",
            bytes.len(),
            opts.max_model_bytes
        )
        .into());
    }
    Ok(())
}

/// Decodes and imports a serialized `ModelProto`, then validates it.
pub(crate) fn import_bytes(
    bytes: &[u8],
    base_dir: Option<&Path>,
    opts: &LoadOptions,
) -> Result<Model, OnnxError> {
    check_size(bytes, opts)?;
    let mp = ModelProto::decode(bytes).map_err(|e| OnnxError::decode("ModelProto", e))?;
    import_proto(mp, base_dir, opts)
}

/// Converts and validates a decoded `ModelProto` (consumed: each tensor's
/// data is freed once converted).
fn import_proto(mp: ModelProto, base_dir: Option<&Path>, opts: &LoadOptions) -> Result<Model, OnnxError> {
    let mut ld = Loader::new(opts, base_dir);
    let mut model = model_from_proto(mp, &mut ld)?;
    model.graph.validate()?;
    check_depth(&model.graph, opts)?;
    if opts.check_ops {
        kiln_ir::infer::check_supported(&model)?;
        kiln_ir::infer::infer_types_with(&mut model, &opts.infer_limits())?;
    }
    Ok(model)
}

/// Errors past `opts.max_graph_depth`, at the last node of a deepest path.
fn check_depth(g: &Graph, opts: &LoadOptions) -> Result<(), IrError> {
    match g.depth() {
        Some((depth, at)) if depth > opts.max_graph_depth => {
            let n = &g.nodes[at];
            Err(n.err(
                ErrorKind::LimitExceeded,
                format!(
                    "the graph is {depth} nodes deep at this node, over the limit of {} (max_graph_depth)",
                    opts.max_graph_depth
                ),
            ))
        }
        _ => Ok(()),
    }
}

/// Converts a decoded `ModelProto` without the structural and op checks,
/// consuming it so that tensor data is freed as it is converted.
pub(crate) fn model_from_proto(mut mp: ModelProto, ld: &mut Loader) -> Result<Model, OnnxError> {
    let gp = mp
        .graph
        .take()
        .ok_or_else(|| ir_err!(InvalidModel, "the model has no graph"))?;
    let graph = graph_from_proto(gp, ld)?;
    let opsets = mp
        .opset_import
        .iter()
        .map(|o| OpsetImport {
            domain: o.domain.clone().unwrap_or_default(),
            version: o.version.unwrap_or(0),
        })
        .collect();
    let metadata = mp
        .metadata_props
        .iter()
        .map(|p| {
            (
                p.key.clone().unwrap_or_default(),
                p.value.clone().unwrap_or_default(),
            )
        })
        .collect();
    Ok(Model {
        graph,
        opsets,
        ir_version: mp.ir_version.unwrap_or(0),
        producer_name: mp.producer_name.clone().unwrap_or_default(),
        producer_version: mp.producer_version.clone().unwrap_or_default(),
        metadata,
    })
}

/// Hands out fresh dim symbols that collide with no declared `dim_param`.
struct Symbols {
    used: HashSet<String>,
}

impl Symbols {
    fn new(gp: &GraphProto) -> Self {
        let mut used = HashSet::new();
        for vi in gp.input.iter().chain(&gp.output).chain(&gp.value_info) {
            if let Some(TypeValue::TensorType(t)) = vi.r#type.as_ref().and_then(|t| t.value.as_ref()) {
                for d in t.shape.iter().flat_map(|s| &s.dim) {
                    if let Some(DimValue::DimParam(p)) = &d.value {
                        used.insert(p.clone());
                    }
                }
            }
        }
        Symbols { used }
    }

    /// `{value}:{axis}`, suffixed until unused.
    fn fresh(&mut self, value: &str, axis: usize) -> String {
        let base = format!("{value}:{axis}");
        let mut s = base.clone();
        let mut k = 1;
        while self.used.contains(&s) {
            s = format!("{base}_{k}");
            k += 1;
        }
        self.used.insert(s.clone());
        s
    }
}

/// The static type of a graph input/output or value_info entry. `role` is
/// `input`, `output` or `value`, for messages.
fn value_type_from_proto(
    vi: &ValueInfoProto,
    role: &str,
    syms: &mut Symbols,
    opts: &LoadOptions,
) -> Result<Option<ValueType>, IrError> {
    let name = vi.name.as_deref().unwrap_or("");
    let tv = match vi.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        None => return Ok(None),
        Some(TypeValue::TensorType(t)) => t,
        Some(other) => {
            let kind = match other {
                TypeValue::SequenceType(_) => "a sequence",
                TypeValue::MapType(_) => "a map",
                TypeValue::OptionalType(_) => "an optional",
                TypeValue::SparseTensorType(_) => "a sparse tensor",
                TypeValue::TensorType(_) => "a tensor",
            };
            return Err(ir_err!(
                UnsupportedOp,
                "{role} '{name}' is {kind}; kiln supports dense tensors only"
            ));
        }
    };
    let code = tv.elem_type.unwrap_or(0);
    let dtype = dtype_from_onnx(code).ok_or_else(|| {
        ir_err!(
            UnsupportedOp,
            "{role} '{name}' has element type {}, which kiln does not support",
            onnx_type_name(code)
        )
    })?;
    let Some(shape) = &tv.shape else {
        return Ok(Some(ValueType::unknown_rank(dtype)));
    };
    if shape.dim.len() > opts.max_rank {
        return Err(ir_err!(
            LimitExceeded,
            "{role} '{name}' declares {} dims, over the limit of {} (max_rank)",
            shape.dim.len(),
            opts.max_rank
        ));
    }
    let mut dims = Vec::with_capacity(shape.dim.len());
    let mut known: u64 = 1;
    for (axis, d) in shape.dim.iter().enumerate() {
        let dim = match &d.value {
            Some(DimValue::DimValue(v)) if *v < -1 => {
                return Err(ir_err!(
                    InvalidModel,
                    "{role} '{name}' declares dim {v} at axis {axis}; a dim must be at least 0, or -1 for unknown"
                ))
            }
            Some(DimValue::DimValue(v)) if *v > 0 => {
                let big = || {
                    ir_err!(
                        LimitExceeded,
                        "{role} '{name}' declares dim {v} at axis {axis}; with its other dims that is more than {} elements",
                        opts.max_tensor_elements
                    )
                };
                known = known
                    .checked_mul(*v as u64)
                    .filter(|&k| k <= opts.max_tensor_elements)
                    .ok_or_else(big)?;
                Dim::Known(usize::try_from(*v).map_err(|_| big())?)
            }
            Some(DimValue::DimParam(p)) if !p.is_empty() && p != "?" => Dim::Sym(p.clone()),
            _ => Dim::Sym(syms.fresh(name, axis)),
        };
        dims.push(dim);
    }
    Ok(Some(ValueType::new(dtype, dims)))
}

fn graph_from_proto(mut gp: GraphProto, ld: &mut Loader) -> Result<Graph, OnnxError> {
    let opts = ld.opts;
    if gp.node.len() > opts.max_nodes {
        return Err(ir_err!(
            LimitExceeded,
            "the graph has {} nodes, over the limit of {}",
            gp.node.len(),
            opts.max_nodes
        )
        .into());
    }
    if let Some(s) = gp.sparse_initializer.first() {
        let name = s.values.as_ref().and_then(|v| v.name.as_deref()).unwrap_or("");
        return Err(ir_err!(
            UnsupportedOp,
            "sparse initializer '{name}' is not supported (kiln supports dense initializers only)"
        )
        .into());
    }

    let mut initializers = BTreeMap::new();
    for mut tp in std::mem::take(&mut gp.initializer) {
        let name = tp.name.clone().unwrap_or_default();
        if name.is_empty() {
            return Err(ir_err!(InvalidModel, "an initializer has no name").into());
        }
        let what = format!("initializer '{name}'");
        let t = tensor_from_proto(&mut tp, &what, ld)?;
        if initializers.insert(name, t).is_some() {
            return Err(ir_err!(InvalidModel, "{what} is defined twice").into());
        }
    }

    let mut syms = Symbols::new(&gp);
    let mut inputs = Vec::new();
    let mut seen = HashSet::new();
    for vi in &gp.input {
        let name = vi.name.clone().unwrap_or_default();
        // Before IR version 4 every initializer was also listed as an input.
        if initializers.contains_key(&name) {
            continue;
        }
        if name.is_empty() {
            return Err(ir_err!(InvalidModel, "a graph input has no name").into());
        }
        if !seen.insert(name.clone()) {
            return Err(ir_err!(InvalidModel, "graph input '{name}' is listed twice").into());
        }
        let ty = value_type_from_proto(vi, "input", &mut syms, opts)?
            .ok_or_else(|| ir_err!(InvalidModel, "graph input '{name}' has no tensor type"))?;
        inputs.push(ValueInfo { name, ty });
    }

    let mut outputs = Vec::new();
    for vi in &gp.output {
        let name = vi.name.clone().unwrap_or_default();
        if name.is_empty() {
            return Err(ir_err!(InvalidModel, "a graph output has no name").into());
        }
        let ty = match value_type_from_proto(vi, "output", &mut syms, opts)? {
            Some(ty) => ty,
            // Inference fills an unknown-rank type in; without it there is no dtype to give.
            None if opts.check_ops => ValueType::unknown_rank(kiln_ir::DType::F32),
            None => return Err(ir_err!(InvalidModel, "graph output '{name}' has no tensor type").into()),
        };
        outputs.push(ValueInfo { name, ty });
    }

    // value_info is advisory: entries kiln cannot represent are skipped.
    let mut value_types = HashMap::new();
    for vi in &gp.value_info {
        let name = vi.name.clone().unwrap_or_default();
        if name.is_empty() {
            continue;
        }
        if let Ok(Some(ty)) = value_type_from_proto(vi, "value", &mut syms, opts) {
            value_types.insert(name, ty);
        }
    }

    let mut taken: HashSet<String> = gp
        .node
        .iter()
        .filter_map(|n| n.name.clone())
        .filter(|n| !n.is_empty())
        .collect();
    let mut nodes = Vec::with_capacity(gp.node.len());
    for (index, np) in std::mem::take(&mut gp.node).into_iter().enumerate() {
        let op_type = np.op_type.clone().unwrap_or_default();
        let name = match np.name.as_deref() {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => {
                let base = format!("{op_type}_{index}");
                let mut s = base.clone();
                let mut k = 1;
                while taken.contains(&s) {
                    s = format!("{base}_{k}");
                    k += 1;
                }
                taken.insert(s.clone());
                s
            }
        };
        let mut node = Node {
            name,
            op_type,
            domain: np.domain.clone().unwrap_or_default(),
            inputs: np.input,
            outputs: np.output,
            attrs: BTreeMap::new(),
        };
        if node.op_type.is_empty() {
            return Err(node.err(ErrorKind::InvalidModel, "node has no op_type").into());
        }
        for mut ap in np.attribute {
            let aname = ap.name.clone().unwrap_or_default();
            if aname.is_empty() {
                return Err(node
                    .err(ErrorKind::InvalidAttribute, "an attribute has no name")
                    .into());
            }
            let a = attr_from_proto(&mut ap, &node, &aname, ld)?;
            if node.attrs.insert(aname.clone(), a).is_some() {
                return Err(node.attr_err(&aname, "attribute is given twice").into());
            }
        }
        nodes.push(node);
    }

    Ok(Graph {
        name: gp.name.clone().unwrap_or_default(),
        nodes,
        inputs,
        outputs,
        initializers,
        value_types,
    })
}

/// The type of an attribute: its `type` field, or for old files (IR version
/// 1) the field that holds a value.
fn attr_type(ap: &AttributeProto) -> Option<AttributeType> {
    if let Some(t) = ap.r#type.and_then(|t| AttributeType::try_from(t).ok()) {
        if t != AttributeType::Undefined {
            return Some(t);
        }
    }
    held_type(ap)
}

/// Whether the value field of type `ty` is set (lists: non-empty).
fn holds(ap: &AttributeProto, ty: AttributeType) -> bool {
    match ty {
        AttributeType::Float => ap.f.is_some(),
        AttributeType::Int => ap.i.is_some(),
        AttributeType::String => ap.s.is_some(),
        AttributeType::Tensor => ap.t.is_some(),
        AttributeType::Floats => !ap.floats.is_empty(),
        AttributeType::Ints => !ap.ints.is_empty(),
        AttributeType::Strings => !ap.strings.is_empty(),
        _ => true,
    }
}

/// The type of the first value field that is set, if any.
fn held_type(ap: &AttributeProto) -> Option<AttributeType> {
    let t = if ap.f.is_some() {
        AttributeType::Float
    } else if ap.i.is_some() {
        AttributeType::Int
    } else if ap.s.is_some() {
        AttributeType::String
    } else if ap.t.is_some() {
        AttributeType::Tensor
    } else if ap.g.is_some() {
        AttributeType::Graph
    } else if ap.sparse_tensor.is_some() {
        AttributeType::SparseTensor
    } else if ap.tp.is_some() {
        AttributeType::TypeProto
    } else if !ap.floats.is_empty() {
        AttributeType::Floats
    } else if !ap.ints.is_empty() {
        AttributeType::Ints
    } else if !ap.strings.is_empty() {
        AttributeType::Strings
    } else if !ap.tensors.is_empty() {
        AttributeType::Tensors
    } else if !ap.graphs.is_empty() {
        AttributeType::Graphs
    } else if !ap.sparse_tensors.is_empty() {
        AttributeType::SparseTensors
    } else if !ap.type_protos.is_empty() {
        AttributeType::TypeProtos
    } else {
        return None;
    };
    Some(t)
}

fn attr_from_proto(
    ap: &mut AttributeProto,
    node: &Node,
    name: &str,
    ld: &mut Loader,
) -> Result<Attribute, OnnxError> {
    let unsupported = |what: &str| -> OnnxError {
        node.err(
            ErrorKind::UnsupportedOp,
            format!("{what} attributes are not supported by kiln"),
        )
        .with_attr(name)
        .into()
    };
    if ap.ref_attr_name.as_deref().is_some_and(|r| !r.is_empty()) {
        return Err(unsupported("reference (ref_attr_name)"));
    }
    let ty = attr_type(ap).ok_or_else(|| node.attr_err(name, "attribute has no type and no value"))?;
    // A declared type whose field is empty while another field holds the value.
    if let Some(held) = held_type(ap).filter(|&h| h != ty && !holds(ap, ty)) {
        return Err(node
            .attr_err(
                name,
                format!(
                    "attribute is declared {} but holds a {} value",
                    ty.as_str_name(),
                    held.as_str_name()
                ),
            )
            .into());
    }
    Ok(match ty {
        AttributeType::Float => Attribute::Float(ap.f.unwrap_or(0.0)),
        AttributeType::Int => Attribute::Int(ap.i.unwrap_or(0)),
        AttributeType::String => Attribute::String(ap.s.take().unwrap_or_default()),
        AttributeType::Floats => Attribute::Floats(std::mem::take(&mut ap.floats)),
        AttributeType::Ints => Attribute::Ints(std::mem::take(&mut ap.ints)),
        AttributeType::Strings => Attribute::Strings(std::mem::take(&mut ap.strings)),
        AttributeType::Tensor => {
            let tp =
                ap.t.as_mut()
                    .ok_or_else(|| node.attr_err(name, "TENSOR attribute has no tensor"))?;
            let t = tensor_from_proto(tp, "tensor attribute", ld)
                .map_err(|e| e.map_ir(|ir| ir.at_node(&node.name, &node.op_type).with_attr(name)))?;
            Attribute::Tensor(t)
        }
        AttributeType::Graph
        | AttributeType::Graphs
        | AttributeType::SparseTensor
        | AttributeType::SparseTensors
        | AttributeType::Tensors
        | AttributeType::TypeProto
        | AttributeType::TypeProtos => return Err(unsupported(ty.as_str_name())),
        AttributeType::Undefined => {
            return Err(node.attr_err(name, "attribute has no type and no value").into())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::tensor_shape_proto::Dimension;
    use crate::proto::{type_proto, NodeProto, OperatorSetIdProto, TensorProto, TensorShapeProto, TypeProto};

    fn tensor_type(elem: i32, dims: &[i64]) -> TypeProto {
        TypeProto {
            denotation: None,
            value: Some(TypeValue::TensorType(type_proto::Tensor {
                elem_type: Some(elem),
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&v| Dimension {
                            denotation: None,
                            value: Some(DimValue::DimValue(v)),
                        })
                        .collect(),
                }),
            })),
        }
    }

    fn vi(name: &str, dims: &[i64]) -> ValueInfoProto {
        ValueInfoProto {
            name: Some(name.into()),
            r#type: Some(tensor_type(1, dims)),
            ..Default::default()
        }
    }

    fn node(name: &str, op: &str, ins: &[&str], outs: &[&str]) -> NodeProto {
        NodeProto {
            name: Some(name.into()),
            op_type: Some(op.into()),
            input: ins.iter().map(|s| s.to_string()).collect(),
            output: outs.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    /// A chain x -> Relu r0 -> ... -> Relu r{n-1} -> y over [1, 4].
    fn chain(n: usize) -> ModelProto {
        let name = |i: usize| if i == n { "y".to_string() } else { format!("v{i}") };
        let nodes = (0..n)
            .map(|i| {
                let input = if i == 0 { "x".to_string() } else { name(i) };
                node(&format!("r{i}"), "Relu", &[&input], &[&name(i + 1)])
            })
            .collect();
        ModelProto {
            ir_version: Some(8),
            opset_import: vec![OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(13),
            }],
            graph: Some(GraphProto {
                node: nodes,
                input: vec![vi("x", &[1, 4])],
                output: vec![vi("y", &[1, 4])],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn load(m: &ModelProto, opts: &LoadOptions) -> Result<Model, OnnxError> {
        import_bytes(&m.encode_to_vec(), None, opts)
    }

    #[test]
    fn graph_depth_is_limited() {
        let m = chain(10);
        assert!(load(&m, &LoadOptions::default()).is_ok());
        let shallow = LoadOptions {
            max_graph_depth: 9,
            ..Default::default()
        };
        let e = load(&m, &shallow).unwrap_err();
        assert_eq!(e.ir_kind(), ErrorKind::LimitExceeded);
        assert_eq!(
            e.to_string(),
            "node 'r9' (Relu): the graph is 10 nodes deep at this node, over the limit of 9 (max_graph_depth)"
        );
        let exact = LoadOptions {
            max_graph_depth: 10,
            ..Default::default()
        };
        assert!(load(&m, &exact).is_ok());
    }

    #[test]
    fn declared_rank_and_negative_dims_are_checked() {
        let mut m = chain(1);
        m.graph.as_mut().unwrap().input[0] = vi("x", &[1; 65]);
        let e = load(&m, &LoadOptions::default()).unwrap_err();
        assert_eq!(e.ir_kind(), ErrorKind::LimitExceeded);
        assert!(
            e.to_string()
                .contains("input 'x' declares 65 dims, over the limit of 64 (max_rank)"),
            "{e}"
        );

        m.graph.as_mut().unwrap().input[0] = vi("x", &[1, -3]);
        let e = load(&m, &LoadOptions::default()).unwrap_err();
        assert_eq!(e.ir_kind(), ErrorKind::InvalidModel);
        assert!(
            e.to_string().contains("input 'x' declares dim -3 at axis 1"),
            "{e}"
        );

        // -1 is "unknown": a fresh symbol.
        m.graph.as_mut().unwrap().input[0] = vi("x", &[-1, 4]);
        let back = load(&m, &LoadOptions::default()).unwrap();
        assert_eq!(
            back.graph.inputs[0].ty.shape.as_ref().unwrap()[0],
            Dim::Sym("x:0".into())
        );

        // An initializer of rank 65.
        let mut m = chain(1);
        m.graph.as_mut().unwrap().initializer.push(TensorProto {
            name: Some("w".into()),
            dims: vec![1; 65],
            data_type: Some(1),
            raw_data: Some(vec![0; 4].into()),
            ..Default::default()
        });
        let e = load(&m, &LoadOptions::default()).unwrap_err();
        assert!(
            e.to_string()
                .contains("initializer 'w' has 65 dims, over the limit of 64"),
            "{e}"
        );
    }

    #[test]
    fn inferred_shapes_are_limited_without_overflow() {
        // ConstantOfShape of [2^40, 2^40, 2^40]: 2^120 elements.
        let big = 1i64 << 40;
        let mut m = chain(1);
        let g = m.graph.as_mut().unwrap();
        g.node = vec![node("fill", "ConstantOfShape", &["s"], &["y"])];
        g.input.clear();
        g.output = vec![ValueInfoProto {
            name: Some("y".into()),
            ..Default::default()
        }];
        g.initializer.push(TensorProto {
            name: Some("s".into()),
            dims: vec![3],
            data_type: Some(7),
            int64_data: vec![big, big, big],
            ..Default::default()
        });
        let e = load(&m, &LoadOptions::default()).unwrap_err();
        assert_eq!(e.ir_kind(), ErrorKind::LimitExceeded, "{e}");
        assert!(
            e.to_string().starts_with(
                "node 'fill' (ConstantOfShape): output 'y' has shape [1099511627776, 1099511627776, 1099511627776] = more than 2^64 elements"
            ),
            "{e}"
        );
        // [2^16, 2^16] fits u64 but not a limit of 2^20 elements.
        let g = m.graph.as_mut().unwrap();
        g.initializer[0].dims = vec![2];
        g.initializer[0].int64_data = vec![1 << 16, 1 << 16];
        let small = LoadOptions {
            max_tensor_elements: 1 << 20,
            ..Default::default()
        };
        let e = load(&m, &small).unwrap_err();
        assert!(
            e.to_string()
                .contains("= 4294967296 elements, over the limit of 1048576"),
            "{e}"
        );
        assert!(load(&m, &LoadOptions::default()).is_err());
    }

    #[test]
    fn an_attribute_declared_with_another_type_than_it_holds() {
        let mut m = chain(1);
        m.graph.as_mut().unwrap().node[0].attribute.push(AttributeProto {
            name: Some("alpha".into()),
            r#type: Some(AttributeType::Ints as i32),
            f: Some(0.5),
            ..Default::default()
        });
        let e = load(&m, &LoadOptions::default()).unwrap_err();
        assert_eq!(e.ir_kind(), ErrorKind::InvalidAttribute);
        assert_eq!(
            e.to_string(),
            "node 'r0' (Relu), attribute 'alpha': attribute is declared INTS but holds a FLOAT value"
        );
        // An empty list of the declared type is fine.
        let a = &mut m.graph.as_mut().unwrap().node[0].attribute[0];
        a.f = None;
        assert!(load(
            &m,
            &LoadOptions {
                check_ops: false,
                ..Default::default()
            }
        )
        .is_ok());
    }

    #[test]
    fn message_nesting_is_bounded_by_prost() {
        // A graph input typed as a sequence of sequences ... 200 deep.
        let mut ty = tensor_type(1, &[1]);
        for _ in 0..200 {
            ty = TypeProto {
                denotation: None,
                value: Some(TypeValue::SequenceType(Box::new(type_proto::Sequence {
                    elem_type: Some(Box::new(ty)),
                }))),
            };
        }
        let mut m = chain(1);
        m.graph.as_mut().unwrap().input[0].r#type = Some(ty);
        let e = load(&m, &LoadOptions::default()).unwrap_err();
        assert_eq!(e.kind(), crate::OnnxErrorKind::Decode, "{e}");
        assert!(e.to_string().contains("recursion limit"), "{e}");
    }
}
