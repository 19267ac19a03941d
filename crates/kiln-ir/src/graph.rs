//! Graphs: nodes, named values, initializers, and models.

use crate::{ir_err, Attribute, ErrorKind, IrError, Result, Tensor, ValueType};
use std::collections::{BTreeMap, HashMap, HashSet};

/// One operation in a graph.
///
/// Inputs and outputs are value names; an empty name is an omitted optional
/// input or output (ONNX convention).
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Unique node name (importers invent one when the file has none).
    pub name: String,
    /// Op type, e.g. `Conv`.
    pub op_type: String,
    /// Op domain; `""` is the default ONNX domain.
    pub domain: String,
    /// Input value names, in the op's input order.
    pub inputs: Vec<String>,
    /// Output value names, in the op's output order.
    pub outputs: Vec<String>,
    /// Attributes by name.
    pub attrs: BTreeMap<String, Attribute>,
}

impl Node {
    /// A node with no attributes in the default domain.
    pub fn new(name: &str, op_type: &str, inputs: &[&str], outputs: &[&str]) -> Node {
        Node {
            name: name.to_string(),
            op_type: op_type.to_string(),
            domain: String::new(),
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: outputs.iter().map(|s| s.to_string()).collect(),
            attrs: BTreeMap::new(),
        }
    }
    /// Builder: sets an attribute.
    pub fn with_attr(mut self, name: &str, a: Attribute) -> Node {
        self.attrs.insert(name.to_string(), a);
        self
    }
    /// An error located at this node.
    pub fn err(&self, kind: ErrorKind, msg: impl Into<String>) -> IrError {
        IrError::new(kind, msg).at_node(&self.name, &self.op_type)
    }
    /// An `InvalidAttribute` error located at this node and attribute.
    pub fn attr_err(&self, attr: &str, msg: impl Into<String>) -> IrError {
        self.err(ErrorKind::InvalidAttribute, msg).with_attr(attr)
    }
    fn wrong_type(&self, name: &str, want: &str, got: &Attribute) -> IrError {
        self.attr_err(name, format!("expected {want}, got {}", got.type_name()))
    }
    /// An `INT` attribute, if present.
    pub fn attr_int_opt(&self, name: &str) -> Result<Option<i64>> {
        match self.attrs.get(name) {
            None => Ok(None),
            Some(Attribute::Int(v)) => Ok(Some(*v)),
            Some(a) => Err(self.wrong_type(name, "INT", a)),
        }
    }
    /// An `INT` attribute with a default.
    pub fn attr_int(&self, name: &str, default: i64) -> Result<i64> {
        Ok(self.attr_int_opt(name)?.unwrap_or(default))
    }
    /// A required `INT` attribute.
    pub fn attr_int_req(&self, name: &str) -> Result<i64> {
        self.attr_int_opt(name)?
            .ok_or_else(|| self.attr_err(name, "required attribute is missing"))
    }
    /// A `FLOAT` attribute, if present (an `INT` is accepted and converted).
    pub fn attr_float_opt(&self, name: &str) -> Result<Option<f32>> {
        match self.attrs.get(name) {
            None => Ok(None),
            Some(Attribute::Float(v)) => Ok(Some(*v)),
            Some(Attribute::Int(v)) => Ok(Some(*v as f32)),
            Some(a) => Err(self.wrong_type(name, "FLOAT", a)),
        }
    }
    /// A `FLOAT` attribute with a default.
    pub fn attr_float(&self, name: &str, default: f32) -> Result<f32> {
        Ok(self.attr_float_opt(name)?.unwrap_or(default))
    }
    /// An `INTS` attribute, if present.
    pub fn attr_ints_opt(&self, name: &str) -> Result<Option<Vec<i64>>> {
        match self.attrs.get(name) {
            None => Ok(None),
            Some(Attribute::Ints(v)) => Ok(Some(v.clone())),
            Some(Attribute::Int(v)) => Ok(Some(vec![*v])),
            Some(a) => Err(self.wrong_type(name, "INTS", a)),
        }
    }
    /// A `FLOATS` attribute, if present.
    pub fn attr_floats_opt(&self, name: &str) -> Result<Option<Vec<f32>>> {
        match self.attrs.get(name) {
            None => Ok(None),
            Some(Attribute::Floats(v)) => Ok(Some(v.clone())),
            Some(Attribute::Float(v)) => Ok(Some(vec![*v])),
            Some(a) => Err(self.wrong_type(name, "FLOATS", a)),
        }
    }
    /// A `STRING` attribute (UTF-8), if present.
    pub fn attr_string_opt(&self, name: &str) -> Result<Option<String>> {
        match self.attrs.get(name) {
            None => Ok(None),
            Some(Attribute::String(v)) => String::from_utf8(v.clone())
                .map(Some)
                .map_err(|_| self.attr_err(name, "string is not valid UTF-8")),
            Some(a) => Err(self.wrong_type(name, "STRING", a)),
        }
    }
    /// A `STRING` attribute with a default.
    pub fn attr_string(&self, name: &str, default: &str) -> Result<String> {
        Ok(self.attr_string_opt(name)?.unwrap_or_else(|| default.to_string()))
    }
    /// A `TENSOR` attribute, if present.
    pub fn attr_tensor_opt(&self, name: &str) -> Result<Option<&Tensor>> {
        match self.attrs.get(name) {
            None => Ok(None),
            Some(Attribute::Tensor(t)) => Ok(Some(t)),
            Some(a) => Err(self.wrong_type(name, "TENSOR", a)),
        }
    }
}

/// A named graph input or output with its static type.
#[derive(Debug, Clone, PartialEq)]
pub struct ValueInfo {
    /// Value name.
    pub name: String,
    /// Static type (dims may be symbolic).
    pub ty: ValueType,
}

/// A computation graph in the ONNX sense.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Graph {
    /// Graph name.
    pub name: String,
    /// Nodes. After [`Graph::topo_sort`] they are in topological order.
    pub nodes: Vec<Node>,
    /// Graph inputs the caller feeds (initializers are not listed here).
    pub inputs: Vec<ValueInfo>,
    /// Graph outputs, in order.
    pub outputs: Vec<ValueInfo>,
    /// Constant tensors (weights) by name.
    pub initializers: BTreeMap<String, Tensor>,
    /// Known types of intermediate values (filled by shape inference).
    pub value_types: HashMap<String, ValueType>,
}

/// An opset import: a domain and its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpsetImport {
    /// `""` for the default ONNX domain.
    pub domain: String,
    /// Opset version.
    pub version: i64,
}

/// A model: a graph plus its opset imports and metadata.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Model {
    /// The main graph.
    pub graph: Graph,
    /// Opset imports.
    pub opsets: Vec<OpsetImport>,
    /// ONNX IR version the file declared.
    pub ir_version: i64,
    /// Producer name.
    pub producer_name: String,
    /// Producer version.
    pub producer_version: String,
    /// Free-form metadata (`metadata_props`).
    pub metadata: BTreeMap<String, String>,
}

impl Model {
    /// Version of the default ONNX domain (`""` or `ai.onnx`); 0 if absent.
    pub fn opset(&self) -> i64 {
        self.opsets
            .iter()
            .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
            .map(|o| o.version)
            .unwrap_or(0)
    }
}

impl Graph {
    /// True if `name` is a graph input, an initializer or a node output.
    pub fn is_defined(&self, name: &str) -> bool {
        self.initializers.contains_key(name)
            || self.inputs.iter().any(|i| i.name == name)
            || self.nodes.iter().any(|n| n.outputs.iter().any(|o| o == name))
    }

    /// Map from value name to the index of the node producing it.
    pub fn producers(&self) -> HashMap<&str, usize> {
        let mut m = HashMap::new();
        for (i, n) in self.nodes.iter().enumerate() {
            for o in &n.outputs {
                if !o.is_empty() {
                    m.insert(o.as_str(), i);
                }
            }
        }
        m
    }

    /// The depth of the graph: the number of nodes on its longest path (from
    /// graph inputs and initializers to any node), with the index of the last
    /// node of one such path; `None` for a graph without nodes.
    ///
    /// Nodes must be in topological order ([`Graph::topo_sort`]); an input
    /// produced by a later node (out of order) counts as depth 0. Linear in
    /// the number of node inputs, no recursion.
    pub fn depth(&self) -> Option<(usize, usize)> {
        let producers = self.producers();
        let mut depth = vec![0usize; self.nodes.len()];
        let mut deepest: Option<(usize, usize)> = None;
        for (i, n) in self.nodes.iter().enumerate() {
            let before = n
                .inputs
                .iter()
                .filter_map(|v| producers.get(v.as_str()))
                .filter(|&&p| p < i)
                .map(|&p| depth[p])
                .max()
                .unwrap_or(0);
            depth[i] = before.saturating_add(1);
            if deepest.is_none_or(|(d, _)| depth[i] > d) {
                deepest = Some((depth[i], i));
            }
        }
        deepest
    }

    /// Reorders `nodes` topologically (stable: keeps file order where it can).
    ///
    /// Errors: a value produced twice, an input that nothing defines, or a cycle.
    pub fn topo_sort(&mut self) -> Result<()> {
        let mut defined: HashSet<String> = self.inputs.iter().map(|i| i.name.clone()).collect();
        defined.extend(self.initializers.keys().cloned());
        let mut produced: HashMap<&str, usize> = HashMap::new();
        for (i, n) in self.nodes.iter().enumerate() {
            for o in n.outputs.iter().filter(|o| !o.is_empty()) {
                if defined.contains(o) || produced.insert(o, i).is_some() {
                    return Err(n.err(
                        ErrorKind::InvalidModel,
                        format!("output '{o}' is already defined elsewhere in the graph"),
                    ));
                }
            }
        }
        for n in &self.nodes {
            for i in n.inputs.iter().filter(|i| !i.is_empty()) {
                if !defined.contains(i) && !produced.contains_key(i.as_str()) {
                    return Err(n.err(
                        ErrorKind::InvalidModel,
                        format!("input '{i}' is not a graph input, initializer or node output"),
                    ));
                }
            }
        }
        // Kahn's algorithm with a min-heap on original index (stability).
        let n = self.nodes.len();
        let mut indeg = vec![0usize; n];
        let mut users: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (j, node) in self.nodes.iter().enumerate() {
            let mut seen = HashSet::new();
            for i in node.inputs.iter().filter(|i| !i.is_empty()) {
                if let Some(&p) = produced.get(i.as_str()) {
                    if seen.insert(p) {
                        indeg[j] += 1;
                        users[p].push(j);
                    }
                }
            }
        }
        let mut heap: std::collections::BinaryHeap<std::cmp::Reverse<usize>> =
            (0..n).filter(|&j| indeg[j] == 0).map(std::cmp::Reverse).collect();
        let mut order = Vec::with_capacity(n);
        while let Some(std::cmp::Reverse(j)) = heap.pop() {
            order.push(j);
            for &u in &users[j] {
                indeg[u] -= 1;
                if indeg[u] == 0 {
                    heap.push(std::cmp::Reverse(u));
                }
            }
        }
        if order.len() != n {
            let stuck = (0..n).find(|&j| indeg[j] > 0).unwrap_or(0);
            return Err(self.nodes[stuck].err(ErrorKind::InvalidModel, "graph has a cycle through this node"));
        }
        let mut old: Vec<Option<Node>> = std::mem::take(&mut self.nodes).into_iter().map(Some).collect();
        self.nodes = order
            .into_iter()
            .map(|j| old[j].take().expect("each index once"))
            .collect();
        Ok(())
    }

    /// Checks structure: unique node names are not required, but every input
    /// must be defined, outputs defined once, graph outputs produced and
    /// listed once, no cycles. Also sorts the nodes topologically.
    ///
    /// Errors (`InvalidModel`) name the node at fault, or the graph output.
    pub fn validate(&mut self) -> Result<()> {
        self.topo_sort()?;
        let mut listed = HashSet::new();
        for o in &self.outputs {
            if !listed.insert(o.name.as_str()) {
                return Err(ir_err!(InvalidModel, "graph output '{}' is listed twice", o.name));
            }
            if !self.is_defined(&o.name) {
                return Err(ir_err!(
                    InvalidModel,
                    "graph output '{}' is never produced",
                    o.name
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DType, ValueInfo};

    fn chain() -> Graph {
        let ty = ValueType::known(DType::F32, &[2]);
        Graph {
            nodes: vec![
                Node::new("c", "Add", &["a", "b"], &["y"]),
                Node::new("a", "Relu", &["x"], &["a"]),
                Node::new("b", "Relu", &["a"], &["b"]),
            ],
            inputs: vec![ValueInfo {
                name: "x".into(),
                ty: ty.clone(),
            }],
            outputs: vec![ValueInfo { name: "y".into(), ty }],
            ..Default::default()
        }
    }

    #[test]
    fn depth_is_the_longest_path() {
        let mut g = chain();
        g.validate().unwrap();
        // x -> a -> b -> c: three nodes deep, ending at c.
        let (d, at) = g.depth().unwrap();
        assert_eq!((d, g.nodes[at].name.as_str()), (3, "c"));
        assert_eq!(Graph::default().depth(), None);
    }

    #[test]
    fn a_graph_output_listed_twice_is_rejected() {
        let mut g = chain();
        g.outputs.push(g.outputs[0].clone());
        let e = g.validate().unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidModel);
        assert_eq!(e.to_string(), "graph output 'y' is listed twice");
    }
}
