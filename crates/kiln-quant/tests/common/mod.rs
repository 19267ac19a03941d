//! Test helpers: a small graph builder, seeded tensors, running models
//! (QDQ as written, no integer lowering), a minimal `.npy` reader.
#![allow(dead_code)]

use kiln_ir::{Attribute, DType, Graph, Model, Node, OpsetImport, Tensor, ValueInfo, ValueType};
use kiln_runtime::{Session, SessionOptions};
use std::path::{Path, PathBuf};

/// The fixtures folder (`.fixtures` at the workspace root).
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.fixtures")
}

/// Builds a small model node by node.
pub struct G {
    pub m: Model,
}

impl G {
    /// An empty model at `opset`.
    pub fn new(opset: i64) -> G {
        G {
            m: Model {
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
            },
        }
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
    /// A node named `name`.
    pub fn node(
        &mut self,
        name: &str,
        op: &str,
        inputs: &[&str],
        outputs: &[&str],
        attrs: &[(&str, Attribute)],
    ) -> &mut G {
        let mut n = Node::new(name, op, inputs, outputs);
        for (k, v) in attrs {
            n.attrs.insert(k.to_string(), v.clone());
        }
        self.m.graph.nodes.push(n);
        self
    }
    /// A graph output.
    pub fn output(&mut self, name: &str) -> &mut G {
        self.m.graph.outputs.push(ValueInfo {
            name: name.into(),
            ty: ValueType::unknown_rank(DType::F32),
        });
        self
    }
    /// The model, validated, with inferred types.
    pub fn build(&mut self) -> Model {
        let mut m = self.m.clone();
        m.graph.validate().expect("valid test graph");
        kiln_ir::infer::infer_types(&mut m).expect("inference on test graph");
        m
    }
}

/// Seeded uniform tensor in `[lo, hi)` (xorshift).
pub fn uniform(dims: &[usize], seed: u64, lo: f32, hi: f32) -> Tensor {
    let n: usize = dims.iter().product();
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let v: Vec<f32> = (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let u = (s >> 11) as f64 / (1u64 << 53) as f64;
            lo + (hi - lo) * u as f32
        })
        .collect();
    Tensor::from_vec(dims.to_vec(), v).unwrap()
}

/// Runs `m` with the reference executor, QDQ nodes evaluated as ONNX ops.
pub fn run(m: &Model, inputs: &[Tensor]) -> Vec<Tensor> {
    Session::with_options(m.clone(), &SessionOptions { integer: false })
        .unwrap_or_else(|e| panic!("session: {e}"))
        .run(inputs.to_vec())
        .unwrap_or_else(|e| panic!("run: {e}"))
}

/// Shorthand attributes.
pub fn ints(v: &[i64]) -> Attribute {
    Attribute::Ints(v.to_vec())
}
/// Shorthand attribute.
pub fn int(v: i64) -> Attribute {
    Attribute::Int(v)
}

/// Index of the largest value.
pub fn argmax(t: &Tensor) -> usize {
    let v = t.to_f32_vec();
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best
}

/// Reads a little-endian float32 C-order `.npy` file (format 1.0/2.0/3.0).
pub fn read_npy_f32(path: &Path) -> Tensor {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&b[..6], b"\x93NUMPY", "{}: not a .npy file", path.display());
    let (hlen, start) = if b[6] == 1 {
        (u16::from_le_bytes([b[8], b[9]]) as usize, 10)
    } else {
        (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12)
    };
    let header = std::str::from_utf8(&b[start..start + hlen]).unwrap();
    assert!(header.contains("'descr': '<f4'"), "{header}");
    assert!(header.contains("'fortran_order': False"), "{header}");
    let sh = &header[header.find("'shape': (").unwrap() + 10..];
    let sh = &sh[..sh.find(')').unwrap()];
    let shape: Vec<usize> = sh
        .split(',')
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    let data: Vec<f32> = b[start + hlen..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Tensor::from_vec(shape, data).unwrap()
}
