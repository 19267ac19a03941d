//! QDQ lowering onto integer ops: for every supported pattern, over random
//! shapes and values, the integer execution (`SessionOptions { integer: true }`)
//! equals the dequantize-compute-quantize reference (`integer: false`) within
//! one quantization step on every output element, and the pattern really was
//! lowered (the report counts the integer op).

use kiln_ir::quant::{choose_qparams_asymmetric, choose_scale_symmetric, quantize_tensor, QParams};
use kiln_ir::{Attribute, DType, Graph, Model, Node, OpsetImport, Tensor, ValueInfo, ValueType};
use kiln_runtime::{Session, SessionOptions};
use proptest::prelude::*;

struct Rng(u64);
impl Rng {
    fn f(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize, amp: f32) -> Vec<f32> {
        (0..n).map(|_| self.f() * amp).collect()
    }
}

fn scalar_f(v: f32) -> Tensor {
    Tensor::scalar(v)
}

/// Builder of a small QDQ graph: float input → Q → DQ → ... → Q → DQ → output.
struct B {
    g: Graph,
    k: usize,
}

impl B {
    fn new() -> B {
        B {
            g: Graph::default(),
            k: 0,
        }
    }
    fn name(&mut self, p: &str) -> String {
        self.k += 1;
        format!("{p}{}", self.k)
    }
    fn input(&mut self, name: &str, shape: &[usize]) {
        self.g.inputs.push(ValueInfo {
            name: name.into(),
            ty: ValueType::known(DType::F32, shape),
        });
    }
    /// Q then DQ of activation `v` with per-tensor uint8 params for [lo, hi].
    fn qdq(&mut self, v: &str, lo: f32, hi: f32, dt: DType) -> String {
        let (s, z) = choose_qparams_asymmetric(lo, hi, dt).unwrap();
        let sn = self.name("s");
        let zn = self.name("z");
        self.g.initializers.insert(sn.clone(), scalar_f(s));
        let zt = if dt == DType::U8 {
            Tensor::scalar(z as u8)
        } else {
            Tensor::scalar(z as i8)
        };
        self.g.initializers.insert(zn.clone(), zt);
        let q = self.name("q");
        let d = self.name("dq");
        let (qname, dname) = (self.name("Q"), self.name("DQ"));
        self.g
            .nodes
            .push(Node::new(&qname, "QuantizeLinear", &[v, &sn, &zn], &[&q]));
        self.g
            .nodes
            .push(Node::new(&dname, "DequantizeLinear", &[&q, &sn, &zn], &[&d]));
        d
    }
    /// Per-channel int8 weights along `axis`, through DQ.
    fn weight(&mut self, w: &Tensor, axis: usize) -> String {
        let shape = w.shape().to_vec();
        let ch = shape[axis];
        let inner: usize = shape[axis + 1..].iter().product();
        let v = w.to_f32_vec();
        let mut absmax = vec![0f32; ch];
        for (i, x) in v.iter().enumerate() {
            let c = (i / inner) % ch;
            absmax[c] = absmax[c].max(x.abs());
        }
        let scale: Vec<f32> = absmax
            .iter()
            .map(|&a| choose_scale_symmetric(a).unwrap())
            .collect();
        let qp = QParams {
            dtype: DType::I8,
            scale: scale.clone(),
            zero_point: vec![0; ch],
            axis: Some(axis),
        };
        let q = quantize_tensor(w, &qp).unwrap();
        let (qn, sn, zn, d) = (self.name("wq"), self.name("ws"), self.name("wz"), self.name("w"));
        self.g.initializers.insert(qn.clone(), q);
        self.g
            .initializers
            .insert(sn.clone(), Tensor::from_vec(vec![ch], scale).unwrap());
        self.g
            .initializers
            .insert(zn.clone(), Tensor::from_vec(vec![ch], vec![0i8; ch]).unwrap());
        let dname = self.name("DQw");
        self.g.nodes.push(
            Node::new(&dname, "DequantizeLinear", &[&qn, &sn, &zn], &[&d])
                .with_attr("axis", Attribute::Int(axis as i64)),
        );
        d
    }
    fn float_const(&mut self, t: Tensor) -> String {
        let n = self.name("c");
        self.g.initializers.insert(n.clone(), t);
        n
    }
    fn node(&mut self, op: &str, inputs: &[&str], attrs: &[(&str, Attribute)]) -> String {
        let o = self.name("v");
        let nname = self.name(op);
        let mut n = Node::new(&nname, op, inputs, &[&o]);
        for (k, a) in attrs {
            n = n.with_attr(k, a.clone());
        }
        self.g.nodes.push(n);
        o
    }
    fn output(&mut self, v: &str, _shape: &[usize]) {
        self.g.outputs.push(ValueInfo {
            name: v.into(),
            ty: ValueType::unknown_rank(DType::F32),
        });
    }
    fn model(self) -> Model {
        Model {
            graph: self.g,
            opsets: vec![OpsetImport {
                domain: String::new(),
                version: 14,
            }],
            ir_version: 8,
            ..Default::default()
        }
    }
}

/// Runs `model` on `inputs` both ways; checks ≤ 1 step (`step` = output
/// scale) everywhere and that `op` was lowered. Returns the max difference in steps.
fn check(model: Model, inputs: Vec<Tensor>, step: f32, op: &str) -> f32 {
    let int = Session::new(model.clone()).unwrap();
    assert!(
        int.qdq_report().lowered.get(op).copied().unwrap_or(0) >= 1,
        "{op} not lowered: {:?}",
        int.qdq_report()
    );
    let reference = Session::with_options(model, &SessionOptions { integer: false }).unwrap();
    let a = int.run(inputs.clone()).unwrap();
    let b = reference.run(inputs).unwrap();
    let mut worst = 0f32;
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.shape(), y.shape());
        for (p, q) in x.to_f32_vec().iter().zip(y.to_f32_vec()) {
            let d = (p - q).abs() / step;
            worst = worst.max(d);
            assert!(d <= 1.0 + 1e-3, "{op}: {p} vs {q} ({d} steps)");
        }
    }
    worst
}

/// The output scale the builder used for [lo, hi] (uint8).
fn step_of(lo: f32, hi: f32) -> f32 {
    choose_qparams_asymmetric(lo, hi, DType::U8).unwrap().0
}

fn float_run(model: &Model, inputs: Vec<Tensor>) -> Vec<f32> {
    Session::new(model.clone()).unwrap().run(inputs).unwrap()[0].to_f32_vec()
}

fn range(v: &[f32]) -> (f32, f32) {
    v.iter().fold((0f32, 0f32), |(a, b), &x| (a.min(x), b.max(x)))
}

#[allow(clippy::too_many_arguments)]
fn conv_case(seed: u64, c: usize, m: usize, hw: usize, k: usize, stride: usize, depthwise: bool, act: u8) {
    let mut r = Rng(seed);
    let (m, group) = if depthwise { (c, c) } else { (m, 1) };
    let x = Tensor::from_vec(vec![1, c, hw, hw], r.vec(c * hw * hw, 2.0)).unwrap();
    let w = Tensor::from_vec(vec![m, c / group, k, k], r.vec(m * (c / group) * k * k, 0.5)).unwrap();
    let bias = Tensor::from_vec(vec![m], r.vec(m, 0.3)).unwrap();
    let pad = (k / 2) as i64;
    let attrs = vec![
        ("group", Attribute::Int(group as i64)),
        ("strides", Attribute::Ints(vec![stride as i64; 2])),
        ("pads", Attribute::Ints(vec![pad; 4])),
    ];
    let build = |yrange: Option<(f32, f32)>| {
        let mut b = B::new();
        b.input("x", x.shape());
        let xd = b.qdq("x", -2.0, 2.0, DType::U8);
        let wd = b.weight(&w, 0);
        let bn = b.float_const(bias.clone());
        let mut y = b.node("Conv", &[&xd, &wd, &bn], &attrs);
        if act == 1 {
            y = b.node("Relu", &[&y], &[]);
        } else if act == 2 {
            let lo = b.float_const(scalar_f(0.0));
            let hi = b.float_const(scalar_f(1.5));
            y = b.node("Clip", &[&y, &lo, &hi], &[]);
        }
        let out = match yrange {
            Some((lo, hi)) => b.qdq(&y, lo, hi, DType::U8),
            None => y,
        };
        b.output(&out, &[]);
        b.model()
    };
    let (lo, hi) = range(&float_run(&build(None), vec![x.clone()]));
    check(build(Some((lo, hi))), vec![x], step_of(lo, hi), "QConv");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn conv_matches_reference(seed in any::<u64>(), c in 1usize..9, m in 1usize..9, hw in 3usize..12,
                              k in prop::sample::select(vec![1usize, 3, 5]), stride in 1usize..3,
                              depthwise in any::<bool>(), act in 0u8..3) {
        conv_case(seed, c, m, hw, k, stride, depthwise, act);
    }

    #[test]
    fn gemm_and_matmul_match_reference(seed in any::<u64>(), rows in 1usize..5, k in 1usize..40,
                                       n in 1usize..20, trans_b in any::<bool>(), matmul in any::<bool>()) {
        let mut r = Rng(seed);
        let a = Tensor::from_vec(vec![rows, k], r.vec(rows * k, 3.0)).unwrap();
        let trans_b = trans_b && !matmul;
        let wshape = if trans_b { vec![n, k] } else { vec![k, n] };
        let w = Tensor::from_vec(wshape, r.vec(k * n, 0.7)).unwrap();
        let bias = Tensor::from_vec(vec![n], r.vec(n, 0.5)).unwrap();
        let build = |yrange: Option<(f32, f32)>| {
            let mut b = B::new();
            b.input("a", a.shape());
            let ad = b.qdq("a", -3.0, 3.0, DType::U8);
            let wd = b.weight(&w, if trans_b { 0 } else { 1 });
            let y = if matmul {
                b.node("MatMul", &[&ad, &wd], &[])
            } else {
                let bn = b.float_const(bias.clone());
                b.node("Gemm", &[&ad, &wd, &bn], &[("transB", Attribute::Int(trans_b as i64))])
            };
            let out = match yrange {
                Some((lo, hi)) => b.qdq(&y, lo, hi, DType::U8),
                None => y,
            };
            b.output(&out, &[]);
            b.model()
        };
        let (lo, hi) = range(&float_run(&build(None), vec![a.clone()]));
        check(build(Some((lo, hi))), vec![a], step_of(lo, hi), "QGemm");
    }

    #[test]
    fn add_mul_match_reference(seed in any::<u64>(), c in 1usize..6, hw in 1usize..6, mul in any::<bool>(),
                               bcast in any::<bool>(), int8 in any::<bool>()) {
        let mut r = Rng(seed);
        let dt = if int8 { DType::I8 } else { DType::U8 };
        let a = Tensor::from_vec(vec![1, c, hw, hw], r.vec(c * hw * hw, 2.0)).unwrap();
        let bshape = if bcast { vec![1, c, 1, 1] } else { vec![1, c, hw, hw] };
        let bn: usize = bshape.iter().product();
        let bt = Tensor::from_vec(bshape.clone(), r.vec(bn, 0.8)).unwrap();
        let build = |yrange: Option<(f32, f32)>| {
            let mut b = B::new();
            b.input("a", a.shape());
            b.input("b", &bshape);
            let ad = b.qdq("a", -2.0, 2.0, dt);
            let bd = b.qdq("b", -0.8, 0.8, dt);
            let y = b.node(if mul { "Mul" } else { "Add" }, &[&ad, &bd], &[]);
            let out = match yrange {
                Some((lo, hi)) => b.qdq(&y, lo, hi, dt),
                None => y,
            };
            b.output(&out, &[]);
            b.model()
        };
        let (lo, hi) = range(&float_run(&build(None), vec![a.clone(), bt.clone()]));
        let step = choose_qparams_asymmetric(lo, hi, dt).unwrap().0;
        check(build(Some((lo, hi))), vec![a, bt], step, if mul { "QMul" } else { "QAdd" });
    }
}

#[test]
fn lookup_tables_equal_reference_exactly() {
    let mut r = Rng(7);
    let x = Tensor::from_vec(vec![1, 3, 4, 4], r.vec(48, 4.0)).unwrap();
    for (op, attrs) in [
        ("Sigmoid", vec![]),
        (
            "HardSigmoid",
            vec![("alpha", Attribute::Float(0.2)), ("beta", Attribute::Float(0.5))],
        ),
        ("HardSwish", vec![]),
        ("LeakyRelu", vec![("alpha", Attribute::Float(0.1))]),
        ("Tanh", vec![]),
    ] {
        let mut b = B::new();
        b.input("x", x.shape());
        let xd = b.qdq("x", -4.0, 4.0, DType::U8);
        let y = b.node(op, &[&xd], &attrs);
        let out = b.qdq(&y, -1.0, 4.0, DType::U8);
        b.output(&out, &[]);
        let worst = check(b.model(), vec![x.clone()], step_of(-1.0, 4.0), "QLut");
        assert_eq!(worst, 0.0, "{op}: a table is exact");
    }
}

#[test]
fn pooling_concat_and_data_movement() {
    let mut r = Rng(11);
    let x = Tensor::from_vec(vec![1, 4, 6, 6], r.vec(144, 3.0)).unwrap();
    // GlobalAveragePool
    let mut b = B::new();
    b.input("x", x.shape());
    let xd = b.qdq("x", -3.0, 3.0, DType::U8);
    let y = b.node("GlobalAveragePool", &[&xd], &[]);
    let out = b.qdq(&y, -1.0, 1.0, DType::U8);
    b.output(&out, &[]);
    check(
        b.model(),
        vec![x.clone()],
        step_of(-1.0, 1.0),
        "QGlobalAveragePool",
    );
    // Concat of two differently scaled tensors
    let mut b = B::new();
    b.input("x", x.shape());
    let a = b.qdq("x", -3.0, 3.0, DType::U8);
    let two = b.float_const(scalar_f(0.5));
    let h = b.node("Mul", &[&a, &two], &[]);
    let hd = b.qdq(&h, -1.5, 1.5, DType::U8);
    let y = b.node("Concat", &[&a, &hd], &[("axis", Attribute::Int(1))]);
    let out = b.qdq(&y, -3.0, 3.0, DType::U8);
    b.output(&out, &[]);
    check(b.model(), vec![x.clone()], step_of(-3.0, 3.0), "Concat");
    // MaxPool and Flatten keep their input's parameters
    let mut b = B::new();
    b.input("x", x.shape());
    let a = b.qdq("x", -3.0, 3.0, DType::U8);
    let p = b.node(
        "MaxPool",
        &[&a],
        &[
            ("kernel_shape", Attribute::Ints(vec![2, 2])),
            ("strides", Attribute::Ints(vec![2, 2])),
        ],
    );
    let pd = b.qdq(&p, -3.0, 3.0, DType::U8);
    let f = b.node("Flatten", &[&pd], &[]);
    let out = b.qdq(&f, -3.0, 3.0, DType::U8);
    b.output(&out, &[]);
    let worst = check(b.model(), vec![x], step_of(-3.0, 3.0), "Flatten");
    assert_eq!(worst, 0.0);
}

/// A per-tensor uint8 constant (stored quantized) through DQ, as quantizers
/// export constant operands of Add and Mul.
fn quant_const(b: &mut B, t: &Tensor) -> String {
    let (lo, hi) = range(&t.to_f32_vec());
    let (s, z) = choose_qparams_asymmetric(lo, hi, DType::U8).unwrap();
    let qp = QParams {
        dtype: DType::U8,
        scale: vec![s],
        zero_point: vec![z],
        axis: None,
    };
    let q = quantize_tensor(t, &qp).unwrap();
    let (qn, sn, zn, d) = (b.name("cq"), b.name("cs"), b.name("cz"), b.name("c"));
    b.g.initializers.insert(qn.clone(), q);
    b.g.initializers.insert(sn.clone(), scalar_f(s));
    b.g.initializers.insert(zn.clone(), Tensor::scalar(z as u8));
    let dname = b.name("DQc");
    b.g.nodes
        .push(Node::new(&dname, "DequantizeLinear", &[&qn, &sn, &zn], &[&d]));
    d
}

/// Regression (PP-OCRv4 det int8 ran 7x slower than fp32): `QMul`/`QAdd` with a
/// one-element or per-channel constant fell back to the reference op on
/// the compiled runtime. They now run as tables (`lut_u8`,
/// `lut_channel_u8`) built from the reference op, so the compiled runtime
/// equals the reference integer executor exactly, in NCHW and NHWC.
#[test]
fn qmul_qadd_with_constant_run_as_tables_exactly() {
    use kiln_runtime::{CompileOptions, CompiledModel};
    let mut r = Rng(23);
    let c = 5;
    let x = Tensor::from_vec(vec![1, c, 6, 6], r.vec(c * 36, 3.0)).unwrap();
    let cases: [(&str, Vec<usize>, bool, bool); 6] = [
        ("Mul", vec![1], false, false),
        ("Add", vec![1], true, false),
        ("Mul", vec![1, c, 1, 1], false, true),
        ("Add", vec![c, 1, 1], true, true),
        ("Mul", vec![c, 1, 1], true, true),
        ("Add", vec![1, c, 1, 1], false, false),
    ];
    for (k, (op, cshape, const_first, after_conv)) in cases.into_iter().enumerate() {
        let mut b = B::new();
        b.input("x", x.shape());
        let mut xd = b.qdq("x", -3.0, 3.0, DType::U8);
        if after_conv {
            // A 1x1 convolution first: its output lives in NHWC on the compiled runtime.
            let w = Tensor::from_vec(vec![c, c, 1, 1], r.vec(c * c, 0.5)).unwrap();
            let wd = b.weight(&w, 0);
            let y = b.node("Conv", &[&xd, &wd], &[]);
            xd = b.qdq(&y, -4.0, 4.0, DType::U8);
        }
        let n: usize = cshape.iter().product();
        let cv = Tensor::from_vec(cshape.clone(), r.vec(n, 2.0)).unwrap();
        let cd = quant_const(&mut b, &cv);
        let ins: [&str; 2] = if const_first { [&cd, &xd] } else { [&xd, &cd] };
        let y = b.node(op, &ins, &[]);
        let out = b.qdq(&y, -6.0, 6.0, DType::U8);
        b.output(&out, &[]);
        let model = b.model();
        let want = Session::new(model.clone()).unwrap().run(vec![x.clone()]).unwrap();
        let cm = CompiledModel::compile(model, &CompileOptions::default()).unwrap();
        let info = cm.plan_info(&[x.shape().to_vec()]).unwrap();
        let kernel = if n == 1 { "lut_u8" } else { "lut_channel_u8" };
        assert!(
            info.steps.iter().any(|s| s.kernel == kernel),
            "case {k} ({op} {cshape:?}): no {kernel} step in {:?}",
            info.steps.iter().map(|s| &s.kernel).collect::<Vec<_>>()
        );
        assert!(
            info.fallback_ops.is_empty(),
            "case {k}: fallback {:?}",
            info.fallback_ops
        );
        let mut st = cm.new_state(1);
        let got = cm.run(&mut st, vec![x.clone()]).unwrap();
        assert_eq!(
            got[0].to_f32_vec(),
            want[0].to_f32_vec(),
            "case {k} ({op} {cshape:?})"
        );
    }
}

/// Regression (PP-OCRv4 det int8, the held-out cost-model check): `QMul` of
/// two 8-bit tensors (same shape, or a squeeze-and-excitation gate
/// `[1, C, 1, 1]`) and nearest `Resize` kept on integers fell back to the
/// reference ops on the compiled runtime (about 60 % of that model's int8
/// time at 640x640). They now run as `mul_u8`, `gate_lut_u8` and
/// `upsample_nearest_nhwc_u8_*`, and the compiled runtime equals the
/// reference integer executor exactly, in NCHW and NHWC and mixed.
#[test]
fn qmul_of_two_tensors_and_integer_resize_run_compiled_exactly() {
    let mut r = Rng(29);
    let c = 6;
    let x = Tensor::from_vec(vec![1, c, 5, 7], r.vec(c * 35, 3.0)).unwrap();
    // (a after a conv (NHWC), b after a conv, activation dtype, then a Resize by 2x3)
    let cases = [
        (true, true, DType::U8, false),
        (false, false, DType::U8, true),
        (true, false, DType::I8, true),
        (false, true, DType::I8, false),
    ];
    for (k, (a_conv, b_conv, dt, resize)) in cases.into_iter().enumerate() {
        let mut b = B::new();
        b.input("x", x.shape());
        let xd = b.qdq("x", -3.0, 3.0, dt);
        let mut branch = |b: &mut B, conv: bool, lo: f32| {
            if conv {
                let w = Tensor::from_vec(vec![c, c, 1, 1], r.vec(c * c, 0.5)).unwrap();
                let wd = b.weight(&w, 0);
                let y = b.node("Conv", &[&xd, &wd], &[]);
                b.qdq(&y, lo, 4.0, dt)
            } else {
                let y = b.node("Relu", &[&xd], &[]);
                b.qdq(&y, 0.0, 3.0, dt)
            }
        };
        let av = branch(&mut b, a_conv, -4.0);
        let bv = branch(&mut b, b_conv, -2.0);
        let y = b.node("Mul", &[&av, &bv], &[]);
        let mut out = b.qdq(&y, -8.0, 8.0, dt);
        if resize {
            let sc = b.name("scales");
            b.g.initializers.insert(
                sc.clone(),
                Tensor::from_vec(vec![4], vec![1f32, 1.0, 2.0, 3.0]).unwrap(),
            );
            let y = b.node(
                "Resize",
                &[&out, "", &sc],
                &[
                    ("mode", Attribute::String("nearest".into())),
                    (
                        "coordinate_transformation_mode",
                        Attribute::String("asymmetric".into()),
                    ),
                    ("nearest_mode", Attribute::String("floor".into())),
                ],
            );
            out = b.qdq(&y, -8.0, 8.0, dt);
        }
        b.output(&out, &[]);
        let mut want = vec!["mul_u8"];
        if resize {
            want.push("upsample_nearest_nhwc_u8_2x3");
        }
        compiled_equals_reference(b.model(), &x, &want, 2, &format!("case {k}"));
    }
    // A squeeze-and-excitation gate: x (NCHW, or NHWC after a conv) times
    // a [1, C, 1, 1] tensor computed from it, either operand order.
    for (k, (conv, gate_first, dt)) in [
        (false, false, DType::U8),
        (true, true, DType::U8),
        (true, false, DType::I8),
    ]
    .into_iter()
    .enumerate()
    {
        let mut b = B::new();
        b.input("x", x.shape());
        let mut xd = b.qdq("x", -3.0, 3.0, dt);
        if conv {
            let w = Tensor::from_vec(vec![c, c, 1, 1], r.vec(c * c, 0.5)).unwrap();
            let wd = b.weight(&w, 0);
            let y = b.node("Conv", &[&xd, &wd], &[]);
            xd = b.qdq(&y, -4.0, 4.0, dt);
        }
        let gp = b.node("GlobalAveragePool", &[&xd], &[]);
        let gd = b.qdq(&gp, -1.0, 1.5, dt);
        let ins: [&str; 2] = if gate_first { [&gd, &xd] } else { [&xd, &gd] };
        let y = b.node("Mul", &ins, &[]);
        let out = b.qdq(&y, -5.0, 5.0, dt);
        b.output(&out, &[]);
        compiled_equals_reference(b.model(), &x, &["gate_lut_u8"], 1, &format!("gate case {k}"));
    }
}

/// Compiles `model`, checks its plan has every kernel of `kernels` and no
/// reference fallback, runs it on `x` with `threads` threads and checks the
/// output equals the reference integer executor's exactly.
fn compiled_equals_reference(model: Model, x: &Tensor, kernels: &[&str], threads: usize, what: &str) {
    use kiln_runtime::{CompileOptions, CompiledModel};
    let want = Session::new(model.clone()).unwrap().run(vec![x.clone()]).unwrap();
    let cm = CompiledModel::compile(model, &CompileOptions::default()).unwrap();
    let info = cm.plan_info(&[x.shape().to_vec()]).unwrap();
    let have: Vec<&String> = info.steps.iter().map(|s| &s.kernel).collect();
    for k in kernels {
        assert!(have.iter().any(|s| s == k), "{what}: no {k} in {have:?}");
    }
    assert!(
        info.fallback_ops.is_empty(),
        "{what}: fallback {:?}",
        info.fallback_ops
    );
    let mut st = cm.new_state(threads);
    let got = cm.run(&mut st, vec![x.clone()]).unwrap();
    assert_eq!(got[0].shape(), want[0].shape(), "{what}");
    assert_eq!(got[0].to_f32_vec(), want[0].to_f32_vec(), "{what}");
}
