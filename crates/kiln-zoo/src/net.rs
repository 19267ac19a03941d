//! Graph-building helpers shared by the architectures: each call appends one
//! layer (its nodes and freshly initialised weights) and returns its output.

use crate::rng::Rng;
use kiln_ir::{Attribute, DType, Dim, Graph, Model, Node, OpsetImport, Tensor, ValueInfo, ValueType};
use std::collections::{BTreeMap, HashSet};

/// Opset of the default domain: 13 for every op but HardSwish (14).
pub(crate) const OPSET: i64 = 14;

/// A value of the graph being built: its name and its channels and spatial
/// size (the batch dim is symbolic; a flattened `[N, c]` value has h = w = 1).
#[derive(Debug, Clone)]
pub(crate) struct V {
    pub name: String,
    pub c: usize,
    pub h: usize,
    pub w: usize,
}

/// Activation after a convolution (or a Gemm).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Act {
    None,
    Relu,
    /// `Clip(x, 0, 6)`.
    Relu6,
    HardSwish,
    /// PyTorch's `relu6(x + 3) / 6`: `HardSigmoid` with alpha 1/6, beta 0.5.
    HardSigmoid,
}

/// Convolution padding rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Pad {
    /// PyTorch: `(k - 1) / 2` on every side.
    Torch,
    /// TensorFlow "SAME" (output `ceil(n / s)`, the odd pixel at the end),
    /// computed statically from the known input size.
    Same,
}

/// Pads before and after, and the output size, of a `k`-wide window with
/// stride `s` over `n` pixels.
fn pads(pad: Pad, n: usize, k: usize, s: usize) -> (usize, usize, usize) {
    match pad {
        Pad::Torch => {
            let p = (k - 1) / 2;
            (p, p, (n + 2 * p - k) / s + 1)
        }
        Pad::Same => {
            let out = n.div_ceil(s);
            let total = ((out - 1) * s + k).saturating_sub(n);
            (total / 2, total - total / 2, out)
        }
    }
}

fn ints(v: &[usize]) -> Attribute {
    Attribute::Ints(v.iter().map(|&x| x as i64).collect())
}

/// A graph under construction.
pub(crate) struct Net {
    g: Graph,
    names: HashSet<String>,
    seed: u64,
    /// BatchNormalization epsilon.
    pub eps: f32,
    /// BatchNormalization momentum (ONNX convention: the running statistics'
    /// weight, 0.9 = PyTorch's default 0.1).
    pub momentum: f32,
    /// Convolution padding rule.
    pub pad: Pad,
}

impl Net {
    /// An empty graph with the input `input` `[batch, c, h, w]`.
    pub fn new(name: &str, seed: u64, [c, h, w]: [usize; 3]) -> (Net, V) {
        let ty = ValueType::new(
            DType::F32,
            vec![Dim::Sym("batch".into()), c.into(), h.into(), w.into()],
        );
        let g = Graph {
            name: name.into(),
            inputs: vec![ValueInfo {
                name: "input".into(),
                ty,
            }],
            ..Default::default()
        };
        let net = Net {
            g,
            names: HashSet::new(),
            seed,
            eps: 1e-5,
            momentum: 0.9,
            pad: Pad::Torch,
        };
        let x = V {
            name: "input".into(),
            c,
            h,
            w,
        };
        (net, x)
    }

    fn init(&mut self, name: String, t: Tensor) -> String {
        assert!(
            self.g.initializers.insert(name.clone(), t).is_none(),
            "initializer {name} defined twice"
        );
        name
    }

    fn filled(&mut self, name: String, shape: Vec<usize>, v: f32) -> String {
        let n = shape.iter().product();
        self.init(
            name,
            Tensor::from_vec(shape, vec![v; n]).expect("shape matches data"),
        )
    }

    fn normal(&mut self, name: String, shape: Vec<usize>, std: f64) -> String {
        let data = Rng::for_tensor(self.seed, &name).normals(shape.iter().product(), std);
        self.init(name, Tensor::from_vec(shape, data).expect("shape matches data"))
    }

    fn int64s(&mut self, name: String, v: Vec<i64>) -> String {
        self.init(
            name,
            Tensor::from_vec(vec![v.len()], v).expect("shape matches data"),
        )
    }

    /// Appends a node whose outputs are `outputs`.
    fn push(
        &mut self,
        name: &str,
        op: &str,
        inputs: &[&str],
        outputs: &[&str],
        attrs: Vec<(&str, Attribute)>,
    ) {
        assert!(self.names.insert(name.into()), "node name {name} used twice");
        let mut n = Node::new(name, op, inputs, outputs);
        for (k, a) in attrs {
            n = n.with_attr(k, a);
        }
        self.g.nodes.push(n);
    }

    /// Appends a one-output node (its output value is named like the node).
    fn op(&mut self, name: &str, op: &str, inputs: &[&str], attrs: Vec<(&str, Attribute)>, like: &V) -> V {
        self.push(name, op, inputs, &[name], attrs);
        V {
            name: name.into(),
            ..like.clone()
        }
    }

    /// `Conv` `name` (weights `<name>.weight` `[cout, c / groups, k, k]`,
    /// Kaiming-normal fan-out; bias `<name>.bias` zeros if `bias`).
    #[allow(clippy::too_many_arguments)]
    pub fn conv(
        &mut self,
        name: &str,
        x: &V,
        cout: usize,
        k: usize,
        s: usize,
        groups: usize,
        bias: bool,
    ) -> V {
        let (pt, pb, h) = pads(self.pad, x.h, k, s);
        let (pl, pr, w) = pads(self.pad, x.w, k, s);
        // torch.nn.init.kaiming_normal_(mode="fan_out", nonlinearity="relu").
        let std = (2.0 / (cout * k * k) as f64).sqrt();
        let wt = self.normal(format!("{name}.weight"), vec![cout, x.c / groups, k, k], std);
        let mut inputs = vec![x.name.clone(), wt];
        if bias {
            inputs.push(self.filled(format!("{name}.bias"), vec![cout], 0.0));
        }
        let inputs: Vec<&str> = inputs.iter().map(|s| s.as_str()).collect();
        let attrs = vec![
            ("dilations", ints(&[1, 1])),
            ("group", Attribute::Int(groups as i64)),
            ("kernel_shape", ints(&[k, k])),
            ("pads", ints(&[pt, pl, pb, pr])),
            ("strides", ints(&[s, s])),
        ];
        self.op(
            name,
            "Conv",
            &inputs,
            attrs,
            &V {
                name: String::new(),
                c: cout,
                h,
                w,
            },
        )
    }

    /// `BatchNormalization` `name`: `<name>.weight` (gamma) = 1, `.bias`
    /// (beta) = 0, `.running_mean` = 0, `.running_var` = 1.
    pub fn bn(&mut self, name: &str, x: &V) -> V {
        let c = x.c;
        let ins = [
            x.name.clone(),
            self.filled(format!("{name}.weight"), vec![c], 1.0),
            self.filled(format!("{name}.bias"), vec![c], 0.0),
            self.filled(format!("{name}.running_mean"), vec![c], 0.0),
            self.filled(format!("{name}.running_var"), vec![c], 1.0),
        ];
        let ins: Vec<&str> = ins.iter().map(|s| s.as_str()).collect();
        let attrs = vec![
            ("epsilon", Attribute::Float(self.eps)),
            ("momentum", Attribute::Float(self.momentum)),
        ];
        self.op(name, "BatchNormalization", &ins, attrs, x)
    }

    /// Activation node `<prefix>.<relu|relu6|hswish|hsigmoid>` (nothing for `Act::None`).
    pub fn act(&mut self, prefix: &str, x: &V, a: Act) -> V {
        match a {
            Act::None => x.clone(),
            Act::Relu => self.op(&format!("{prefix}.relu"), "Relu", &[&x.name], vec![], x),
            Act::HardSwish => self.op(&format!("{prefix}.hswish"), "HardSwish", &[&x.name], vec![], x),
            Act::HardSigmoid => {
                let attrs = vec![
                    ("alpha", Attribute::Float(1.0 / 6.0)),
                    ("beta", Attribute::Float(0.5)),
                ];
                self.op(&format!("{prefix}.hsigmoid"), "HardSigmoid", &[&x.name], attrs, x)
            }
            Act::Relu6 => {
                for (n, v) in [("relu6.min", 0.0f32), ("relu6.max", 6.0)] {
                    if !self.g.initializers.contains_key(n) {
                        self.init(n.into(), Tensor::scalar(v));
                    }
                }
                self.op(
                    &format!("{prefix}.relu6"),
                    "Clip",
                    &[&x.name, "relu6.min", "relu6.max"],
                    vec![],
                    x,
                )
            }
        }
    }

    /// `<prefix>.conv` (no bias) + `<prefix>.bn` + activation.
    #[allow(clippy::too_many_arguments)]
    pub fn conv_bn(
        &mut self,
        prefix: &str,
        x: &V,
        cout: usize,
        k: usize,
        s: usize,
        groups: usize,
        a: Act,
    ) -> V {
        let y = self.conv(&format!("{prefix}.conv"), x, cout, k, s, groups, false);
        let y = self.bn(&format!("{prefix}.bn"), &y);
        self.act(prefix, &y, a)
    }

    /// Elementwise `Add` of two values of the same shape.
    pub fn add(&mut self, name: &str, a: &V, b: &V) -> V {
        self.op(name, "Add", &[&a.name, &b.name], vec![], a)
    }

    /// Elementwise `Mul`, `b` broadcast to `a` (e.g. `[N, C, 1, 1]` gates).
    pub fn mul(&mut self, name: &str, a: &V, b: &V) -> V {
        self.op(name, "Mul", &[&a.name, &b.name], vec![], a)
    }

    /// `GlobalAveragePool`: `[N, C, 1, 1]`.
    pub fn gap(&mut self, name: &str, x: &V) -> V {
        self.op(
            name,
            "GlobalAveragePool",
            &[&x.name],
            vec![],
            &V {
                h: 1,
                w: 1,
                ..x.clone()
            },
        )
    }

    /// `MaxPool` with a `k` x `k` window, stride `s`, PyTorch padding `k / 2`.
    pub fn maxpool(&mut self, name: &str, x: &V, k: usize, s: usize) -> V {
        let (p, _, h) = pads(Pad::Torch, x.h, k, s);
        let (_, _, w) = pads(Pad::Torch, x.w, k, s);
        let attrs = vec![
            ("kernel_shape", ints(&[k, k])),
            ("pads", ints(&[p, p, p, p])),
            ("strides", ints(&[s, s])),
        ];
        self.op(name, "MaxPool", &[&x.name], attrs, &V { h, w, ..x.clone() })
    }

    /// `GlobalAveragePool` `pool` + `Flatten` `flatten`: `[N, C]`.
    pub fn pool_flatten(&mut self, x: &V) -> V {
        let y = self.gap("pool", x);
        self.op(
            "flatten",
            "Flatten",
            &[&y.name],
            vec![("axis", Attribute::Int(1))],
            &y,
        )
    }

    /// `Gemm` `name` on `[N, K]`: weight `<name>.weight` `[out, K]` ~ N(0, 0.01^2)
    /// (`transB` = 1), bias `<name>.bias` zeros.
    pub fn gemm(&mut self, name: &str, x: &V, out: usize) -> V {
        let w = self.normal(format!("{name}.weight"), vec![out, x.c], 0.01);
        let b = self.filled(format!("{name}.bias"), vec![out], 0.0);
        let attrs = vec![("transB", Attribute::Int(1))];
        self.op(
            name,
            "Gemm",
            &[&x.name, &w, &b],
            attrs,
            &V {
                name: String::new(),
                c: out,
                h: 1,
                w: 1,
            },
        )
    }

    /// `Split` of the channels into two halves (`<name>.split` int64 input).
    pub fn split2(&mut self, name: &str, x: &V) -> (V, V) {
        let half = x.c / 2;
        let split = self.int64s(format!("{name}.split"), vec![half as i64, (x.c - half) as i64]);
        let (a, b) = (format!("{name}.0"), format!("{name}.1"));
        self.push(
            name,
            "Split",
            &[&x.name, &split],
            &[&a, &b],
            vec![("axis", Attribute::Int(1))],
        );
        (
            V {
                name: a,
                c: half,
                ..x.clone()
            },
            V {
                name: b,
                c: x.c - half,
                ..x.clone()
            },
        )
    }

    /// `Concat` along the channels.
    pub fn concat(&mut self, name: &str, a: &V, b: &V) -> V {
        let c = a.c + b.c;
        self.op(
            name,
            "Concat",
            &[&a.name, &b.name],
            vec![("axis", Attribute::Int(1))],
            &V { c, ..a.clone() },
        )
    }

    /// ShuffleNet's channel shuffle: `Reshape` to `[N, g, C / g, H, W]`,
    /// `Transpose` of dims 1 and 2, `Reshape` back to `[N, C, H, W]` (0 keeps the batch).
    pub fn shuffle(&mut self, prefix: &str, x: &V, groups: usize) -> V {
        let (c, h, w) = (x.c as i64, x.h as i64, x.w as i64);
        let g = groups as i64;
        let s1 = self.int64s(format!("{prefix}.reshape1.shape"), vec![0, g, c / g, h, w]);
        let y = self.op(
            &format!("{prefix}.reshape1"),
            "Reshape",
            &[&x.name, &s1],
            vec![],
            x,
        );
        let perm = vec![("perm", Attribute::Ints(vec![0, 2, 1, 3, 4]))];
        let y = self.op(&format!("{prefix}.transpose"), "Transpose", &[&y.name], perm, &y);
        let s2 = self.int64s(format!("{prefix}.reshape2.shape"), vec![0, -1, h, w]);
        self.op(
            &format!("{prefix}.reshape2"),
            "Reshape",
            &[&y.name, &s2],
            vec![],
            &y,
        )
    }

    /// The finished model: `logits` (the value `x`, renamed) `[batch, x.c]` is
    /// the one output; default-domain opset [`OPSET`].
    pub fn finish(mut self, x: &V, metadata: BTreeMap<String, String>) -> kiln_ir::Result<Model> {
        for n in &mut self.g.nodes {
            for o in n.outputs.iter_mut().filter(|o| **o == x.name) {
                *o = "logits".into();
            }
        }
        let ty = ValueType::new(DType::F32, vec![Dim::Sym("batch".into()), x.c.into()]);
        self.g.outputs = vec![ValueInfo {
            name: "logits".into(),
            ty,
        }];
        self.g.validate()?;
        Ok(Model {
            graph: self.g,
            opsets: vec![OpsetImport {
                domain: String::new(),
                version: OPSET,
            }],
            ir_version: 8,
            producer_name: "kiln-zoo".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            metadata,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_padding_matches_tensorflow() {
        // EfficientNet-Lite0 at 224 (the fixture's pads).
        assert_eq!(pads(Pad::Same, 224, 3, 2), (0, 1, 112));
        assert_eq!(pads(Pad::Same, 112, 5, 2), (1, 2, 56));
        assert_eq!(pads(Pad::Same, 56, 5, 1), (2, 2, 56));
        assert_eq!(pads(Pad::Same, 7, 3, 2), (1, 1, 4));
        assert_eq!(pads(Pad::Torch, 7, 3, 2), (1, 1, 4));
        assert_eq!(pads(Pad::Torch, 28, 3, 2), (1, 1, 14));
    }
}
