//! Test helpers for rule tests: a small graph builder, seeded random tensors,
//! running a rule subset, and comparing outputs before/after.
#![allow(dead_code)]

use kiln_ir::{Attribute, DType, Graph, Model, Node, OpsetImport, Tensor, ValueInfo, ValueType};
use kiln_opt::{optimize, rules::all_rules, Level, Options, Report};
use kiln_runtime::Session;

/// Builds a small model node by node.
pub struct G {
    m: Model,
    k: usize,
}

impl G {
    /// An empty model at `opset`.
    pub fn new(opset: i64) -> G {
        let m = Model {
            graph: Graph {
                name: "test".into(),
                ..Default::default()
            },
            opsets: vec![OpsetImport {
                domain: String::new(),
                version: opset,
            }],
            ir_version: 8,
            ..Default::default()
        };
        G { m, k: 0 }
    }
    /// A float graph input.
    pub fn input(&mut self, name: &str, dims: &[usize]) -> &mut G {
        self.m.graph.inputs.push(ValueInfo {
            name: name.into(),
            ty: ValueType::known(DType::F32, dims),
        });
        self
    }
    /// An initializer.
    pub fn init(&mut self, name: &str, t: Tensor) -> &mut G {
        self.m.graph.initializers.insert(name.into(), t);
        self
    }
    /// A seeded random float initializer in [-1, 1).
    pub fn rand_init(&mut self, name: &str, dims: &[usize]) -> &mut G {
        self.k += 1;
        let t = rand(dims, 1000 + self.k as u64);
        self.init(name, t)
    }
    /// A node (named after its first output).
    pub fn node(
        &mut self,
        op: &str,
        inputs: &[&str],
        outputs: &[&str],
        attrs: Vec<(&str, Attribute)>,
    ) -> &mut G {
        let mut n = Node::new(&format!("n_{}", outputs[0]), op, inputs, outputs);
        for (k, v) in attrs {
            n.attrs.insert(k.into(), v);
        }
        self.m.graph.nodes.push(n);
        self
    }
    /// A graph output (type filled by inference).
    pub fn output(&mut self, name: &str) -> &mut G {
        self.m.graph.outputs.push(ValueInfo {
            name: name.into(),
            ty: ValueType::unknown_rank(DType::F32),
        });
        self
    }
    /// The model, validated and with inferred types.
    pub fn build(&mut self) -> Model {
        let mut m = self.m.clone();
        m.graph.validate().expect("valid test graph");
        kiln_ir::infer::infer_types(&mut m).expect("inference on test graph");
        m
    }
}

/// Seeded uniform tensor in [-1, 1) (xorshift).
pub fn rand(dims: &[usize], seed: u64) -> Tensor {
    let n: usize = dims.iter().product();
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let v: Vec<f32> = (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32
        })
        .collect();
    Tensor::from_vec(dims.to_vec(), v).unwrap()
}

/// Seeded random inputs matching the model's declared (known) input shapes.
pub fn rand_inputs(m: &Model) -> Vec<Tensor> {
    m.graph
        .inputs
        .iter()
        .enumerate()
        .map(|(i, vi)| {
            rand(
                &vi.ty.known_dims().expect("test inputs have known dims"),
                7 + i as u64,
            )
        })
        .collect()
}

/// Options running only the named rules (at level All).
pub fn only(names: &[&str]) -> Options {
    let all = all_rules();
    for n in names {
        assert!(all.iter().any(|r| r.name() == *n), "no rule named {n}");
    }
    Options {
        level: Level::All,
        disabled: all
            .iter()
            .map(|r| r.name().to_string())
            .filter(|r| !names.contains(&r.as_str()))
            .collect(),
        ..Options::default()
    }
}

/// Runs `m` on `inputs` with the reference executor.
pub fn run(m: &Model, inputs: &[Tensor]) -> Vec<Tensor> {
    Session::new(m.clone())
        .expect("session")
        .run(inputs.to_vec())
        .expect("run")
}

/// Asserts every output of `a` equals `b`'s within `rtol` relative to the
/// output's largest magnitude (and 1e-6 absolute).
pub fn assert_close(a: &[Tensor], b: &[Tensor], rtol: f32) {
    assert_eq!(a.len(), b.len(), "output count");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert_eq!(x.shape(), y.shape(), "output {i} shape");
        let (xv, yv) = (x.to_f32_vec(), y.to_f32_vec());
        let m = yv.iter().fold(0f32, |a, v| a.max(v.abs()));
        let d = xv.iter().zip(&yv).fold(0f32, |a, (p, q)| a.max((p - q).abs()));
        assert!(
            d <= rtol * m + 1e-6,
            "output {i}: max abs diff {d} > {rtol} x {m}"
        );
    }
}

/// Optimizes a copy of `m` with only `rules`; checks outputs equal on seeded
/// inputs within 1e-5 relative and that the node count dropped by `dropped`
/// (0 = the rules must not fire: the graph is unchanged). Returns the
/// optimized model and the report.
pub fn check_rules(m: &Model, rules: &[&str], dropped: usize) -> (Model, Report) {
    let inputs = rand_inputs(m);
    let before = run(m, &inputs);
    let mut opt = m.clone();
    let rep = optimize(&mut opt, &only(rules)).unwrap_or_else(|e| panic!("{e}"));
    let after = run(&opt, &inputs);
    assert_close(&after, &before, 1e-5);
    assert_eq!(
        m.graph.nodes.len() as isize - opt.graph.nodes.len() as isize,
        dropped as isize,
        "node count {} -> {} (report {:?})",
        m.graph.nodes.len(),
        opt.graph.nodes.len(),
        rep.applied()
    );
    if dropped == 0 {
        assert!(
            rep.applied().is_empty(),
            "rules must not fire, applied {:?}",
            rep.applied()
        );
    }
    (opt, rep)
}

/// Shorthand attributes.
pub fn ints(v: &[i64]) -> Attribute {
    Attribute::Ints(v.to_vec())
}
/// Shorthand attribute.
pub fn int(v: i64) -> Attribute {
    Attribute::Int(v)
}
/// Shorthand attribute.
pub fn float(v: f32) -> Attribute {
    Attribute::Float(v)
}
