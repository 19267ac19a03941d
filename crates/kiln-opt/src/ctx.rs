//! The view of a model that rules work on: the model plus producer/consumer
//! indices and static types, refreshed by the pass manager after every patch.

use kiln_ir::{infer, Model, Node, Result, Tensor, ValueType};
use std::collections::{HashMap, HashSet};

/// A model under optimization, with lookup tables.
///
/// Node indices are positions in `model.graph.nodes`; they stay valid until
/// the rule's patch returns (the pass manager then re-sorts and re-indexes).
pub struct Ctx<'a> {
    /// The model being rewritten. Rules edit it directly, through the helpers
    /// below where they exist.
    pub model: &'a mut Model,
    producer: HashMap<String, usize>,
    consumers: HashMap<String, Vec<usize>>,
    graph_outputs: HashSet<String>,
    graph_inputs: HashSet<String>,
}

impl<'a> Ctx<'a> {
    /// Indexes `model` (sorting it topologically and inferring types).
    pub fn new(model: &'a mut Model) -> Result<Ctx<'a>> {
        let mut cx = Ctx {
            model,
            producer: HashMap::new(),
            consumers: HashMap::new(),
            graph_outputs: HashSet::new(),
            graph_inputs: HashSet::new(),
        };
        cx.refresh()?;
        Ok(cx)
    }

    /// Re-sorts, re-infers types and rebuilds the indices after a patch.
    pub fn refresh(&mut self) -> Result<()> {
        self.model.graph.validate()?;
        infer::infer_types(self.model)?;
        self.producer.clear();
        self.consumers.clear();
        for (i, n) in self.model.graph.nodes.iter().enumerate() {
            for o in n.outputs.iter().filter(|o| !o.is_empty()) {
                self.producer.insert(o.clone(), i);
            }
            for inp in n.inputs.iter().filter(|s| !s.is_empty()) {
                let c = self.consumers.entry(inp.clone()).or_default();
                if c.last() != Some(&i) {
                    c.push(i);
                }
            }
        }
        self.graph_outputs = self.model.graph.outputs.iter().map(|o| o.name.clone()).collect();
        self.graph_inputs = self.model.graph.inputs.iter().map(|o| o.name.clone()).collect();
        Ok(())
    }

    /// The default-domain opset.
    pub fn opset(&self) -> i64 {
        self.model.opset()
    }
    /// Node `i`.
    pub fn node(&self, i: usize) -> &Node {
        &self.model.graph.nodes[i]
    }
    /// Node `i`, mutably.
    pub fn node_mut(&mut self, i: usize) -> &mut Node {
        &mut self.model.graph.nodes[i]
    }
    /// Index of the node producing `value`.
    pub fn producer(&self, value: &str) -> Option<usize> {
        self.producer.get(value).copied()
    }
    /// Indices of the nodes reading `value` (each once).
    pub fn consumers(&self, value: &str) -> &[usize] {
        self.consumers.get(value).map(|v| v.as_slice()).unwrap_or(&[])
    }
    /// True if `value` is a graph output.
    pub fn is_graph_output(&self, value: &str) -> bool {
        self.graph_outputs.contains(value)
    }
    /// True if `value` is a graph input.
    pub fn is_graph_input(&self, value: &str) -> bool {
        self.graph_inputs.contains(value)
    }
    /// The node that is the only reader of `value`, if `value` is read by
    /// exactly one node, exactly once, and is not a graph output (so the
    /// producer may be fused into that reader).
    pub fn sole_consumer(&self, value: &str) -> Option<usize> {
        if self.is_graph_output(value) {
            return None;
        }
        match self.consumers(value) {
            [c] if self.node(*c).inputs.iter().filter(|i| *i == value).count() == 1 => Some(*c),
            _ => None,
        }
    }
    /// The constant value of `value`: an initializer (constant folding turns
    /// Constant nodes into initializers first).
    pub fn constant(&self, value: &str) -> Option<&Tensor> {
        if self.is_graph_input(value) {
            return None; // an input with a default: the caller may override it
        }
        self.model.graph.initializers.get(value)
    }
    /// Static type of `value`, as last inferred.
    pub fn value_type(&self, value: &str) -> Option<&ValueType> {
        self.model.graph.value_types.get(value)
    }
    /// Static dims of `value`, if all known.
    pub fn known_dims(&self, value: &str) -> Option<Vec<usize>> {
        self.value_type(value)?.known_dims()
    }

    /// A value name not used anywhere in the graph, derived from `hint`.
    pub fn fresh_name(&self, hint: &str) -> String {
        let g = &self.model.graph;
        let used = |n: &str| {
            g.initializers.contains_key(n)
                || self.producer.contains_key(n)
                || self.graph_inputs.contains(n)
                || self.consumers.contains_key(n)
                || g.nodes.iter().any(|x| x.name == n)
        };
        if !used(hint) {
            return hint.to_string();
        }
        (1..)
            .map(|k| format!("{hint}_{k}"))
            .find(|n| !used(n))
            .expect("some suffix is free")
    }

    /// Adds an initializer under a fresh name derived from `hint`; returns the name.
    pub fn add_initializer(&mut self, hint: &str, t: Tensor) -> String {
        let name = self.fresh_name(hint);
        self.model.graph.initializers.insert(name.clone(), t);
        name
    }

    /// Makes every reader of `old` read `new` instead (graph outputs are not
    /// renamed: callers handle them, see [`Ctx::bypass`]).
    pub fn replace_uses(&mut self, old: &str, new: &str) {
        for n in &mut self.model.graph.nodes {
            for i in &mut n.inputs {
                if i == old {
                    *i = new.to_string();
                }
            }
        }
    }

    /// Removes the nodes at `idx` (any order, duplicates ignored).
    pub fn remove_nodes(&mut self, idx: &[usize]) {
        let set: HashSet<usize> = idx.iter().copied().collect();
        let mut k = 0;
        self.model.graph.nodes.retain(|_| {
            let keep = !set.contains(&k);
            k += 1;
            keep
        });
    }

    /// Removes a pass-through node whose output `y` equals its input `x`
    /// (Identity, a no-op Reshape...): readers of `y` read `x`. If `y` is a
    /// graph output, `x`'s producer writes `y` instead, when that is possible
    /// (`x` is produced by a node, is not itself a graph output, and has no
    /// other reader); otherwise nothing changes and `false` is returned.
    pub fn bypass(&mut self, node: usize, x: &str, y: &str) -> bool {
        if self.is_graph_output(y) {
            let Some(p) = self.producer(x) else { return false };
            if self.is_graph_output(x) || self.consumers(x).len() != 1 {
                return false;
            }
            for o in &mut self.model.graph.nodes[p].outputs {
                if o == x {
                    *o = y.to_string();
                }
            }
            if let Some(t) = self.model.graph.value_types.remove(x) {
                self.model.graph.value_types.insert(y.to_string(), t);
            }
            self.remove_nodes(&[node]);
            return true;
        }
        self.replace_uses(y, x);
        self.remove_nodes(&[node]);
        true
    }
}
