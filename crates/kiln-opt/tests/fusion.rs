//! Tests of the fusion rules: activations and residual Adds into kiln's fused
//! ops. Every positive case checks the outputs before/after with the
//! reference executor (which runs the fused ops), the node count, and the
//! fused node (op, name, activation, output); every negative case checks the
//! rule does not fire.

mod common;
use common::*;
use kiln_ir::ops::fused::{lower_fused, Activation, DOMAIN};
use kiln_ir::{DType, Dim, Model, Node, Tensor};
use kiln_opt::{optimize, rules::all_rules, Level, Options};

const ACT_CONV: &str = "fuse-activation-into-conv";
const ACT_GEMM: &str = "fuse-activation-into-gemm";
const ACT_MATMUL: &str = "fuse-activation-into-matmul";
const SILU: &str = "fuse-silu-into-conv";
const RESIDUAL: &str = "fuse-residual-add-into-conv";

/// x[1,3,5,5] -> Conv(w[4,3,3,3], b[4], pads 1) -> y[1,4,5,5] (node `n_y`).
fn conv_base(opset: i64, bias: bool) -> G {
    let mut g = G::new(opset);
    g.input("x", &[1, 3, 5, 5]).rand_init("w", &[4, 3, 3, 3]);
    let mut ins = vec!["x", "w"];
    if bias {
        g.rand_init("b", &[4]);
        ins.push("b");
    }
    g.node(
        "Conv",
        &ins,
        &["y"],
        vec![("pads", ints(&[1, 1, 1, 1])), ("kernel_shape", ints(&[3, 3]))],
    );
    g
}

/// Turns Conv `n_y` of a built model into a `kiln::FusedConv` without
/// activation reading `Z = z` (a graph input the builder declared).
fn to_fused_with_z(mut m: Model) -> Model {
    let n = m
        .graph
        .nodes
        .iter_mut()
        .find(|n| n.name == "n_y")
        .expect("conv n_y");
    n.op_type = "FusedConv".into();
    n.domain = DOMAIN.into();
    n.inputs.resize(3, String::new());
    n.inputs.push("z".into());
    m.opsets.push(kiln_ir::OpsetImport {
        domain: DOMAIN.into(),
        version: 1,
    });
    m.graph.validate().unwrap();
    kiln_ir::infer::infer_types(&mut m).unwrap();
    m
}

/// The only kiln-domain node of `m`.
fn fused_node(m: &Model) -> &Node {
    let f: Vec<&Node> = m.graph.nodes.iter().filter(|n| n.domain == DOMAIN).collect();
    assert_eq!(f.len(), 1, "one fused node: {:?}", m.graph.nodes);
    f[0]
}

/// Asserts the fused node is `op` named `name` with `act`, writing `out`.
fn assert_fused(m: &Model, op: &str, name: &str, act: Activation, out: &str) {
    let f = fused_node(m);
    assert_eq!(f.op_type, op);
    assert_eq!(f.name, name, "the fused node keeps the base node's name");
    assert_eq!(Activation::parse(f).unwrap(), act);
    assert_eq!(f.outputs, vec![out.to_string()]);
    assert!(m.opsets.iter().any(|o| o.domain == DOMAIN), "kiln opset import");
}

/// The activations of the rules, each as (opset, node builder, expected).
type AddAct = fn(&mut G, &str, &str);
fn activations() -> Vec<(&'static str, i64, AddAct, Activation)> {
    vec![
        (
            "Relu",
            13,
            |g, x, y| {
                g.node("Relu", &[x], &[y], vec![]);
            },
            Activation::Relu,
        ),
        (
            "LeakyRelu",
            13,
            |g, x, y| {
                g.node("LeakyRelu", &[x], &[y], vec![("alpha", float(0.1))]);
            },
            Activation::LeakyRelu { alpha: 0.1 },
        ),
        (
            "LeakyRelu default",
            13,
            |g, x, y| {
                g.node("LeakyRelu", &[x], &[y], vec![]);
            },
            Activation::LeakyRelu { alpha: 0.01 },
        ),
        (
            "HardSigmoid",
            13,
            |g, x, y| {
                g.node(
                    "HardSigmoid",
                    &[x],
                    &[y],
                    vec![("alpha", float(0.3)), ("beta", float(0.4))],
                );
            },
            Activation::HardSigmoid {
                alpha: 0.3,
                beta: 0.4,
            },
        ),
        (
            "HardSigmoid default",
            13,
            |g, x, y| {
                g.node("HardSigmoid", &[x], &[y], vec![]);
            },
            Activation::HardSigmoid {
                alpha: 0.2,
                beta: 0.5,
            },
        ),
        (
            "HardSwish",
            14,
            |g, x, y| {
                g.node("HardSwish", &[x], &[y], vec![]);
            },
            Activation::HardSwish,
        ),
        (
            "Sigmoid",
            13,
            |g, x, y| {
                g.node("Sigmoid", &[x], &[y], vec![]);
            },
            Activation::Sigmoid,
        ),
        (
            "Clip attributes (opset 10)",
            10,
            |g, x, y| {
                g.node(
                    "Clip",
                    &[x],
                    &[y],
                    vec![("min", float(-0.5)), ("max", float(0.5))],
                );
            },
            Activation::Clip { min: -0.5, max: 0.5 },
        ),
        (
            "Clip attribute max only (opset 10)",
            10,
            |g, x, y| {
                g.node("Clip", &[x], &[y], vec![("max", float(0.25))]);
            },
            Activation::Clip {
                min: f32::NEG_INFINITY,
                max: 0.25,
            },
        ),
        (
            "Clip inputs (opset 13)",
            13,
            |g, x, y| {
                g.init("lo", Tensor::scalar(-0.5f32))
                    .init("hi", Tensor::scalar(0.5f32));
                g.node("Clip", &[x, "lo", "hi"], &[y], vec![]);
            },
            Activation::Clip { min: -0.5, max: 0.5 },
        ),
        (
            "Clip min omitted (opset 13)",
            13,
            |g, x, y| {
                g.init("hi", Tensor::scalar(0.25f32));
                g.node("Clip", &[x, "", "hi"], &[y], vec![]);
            },
            Activation::Clip {
                min: f32::NEG_INFINITY,
                max: 0.25,
            },
        ),
        (
            "Clip max omitted (opset 13)",
            13,
            |g, x, y| {
                g.init("lo", Tensor::from_vec(vec![1], vec![-0.25f32]).unwrap());
                g.node("Clip", &[x, "lo"], &[y], vec![]);
            },
            Activation::Clip {
                min: -0.25,
                max: f32::INFINITY,
            },
        ),
        (
            "Clip no bounds (opset 11)",
            11,
            |g, x, y| {
                g.node("Clip", &[x], &[y], vec![]);
            },
            Activation::Clip {
                min: f32::NEG_INFINITY,
                max: f32::INFINITY,
            },
        ),
    ]
}

#[test]
fn every_activation_fuses_into_conv() {
    for (what, opset, add, act) in activations() {
        for bias in [true, false] {
            let mut g = conv_base(opset, bias);
            add(&mut g, "y", "out");
            let m = g.output("out").build();
            let (opt, rep) = check_rules(&m, &[ACT_CONV], 1);
            assert_eq!(rep.applied().get(ACT_CONV), Some(&1), "{what}");
            assert_fused(&opt, "FusedConv", "n_y", act, "out");
            assert_eq!(opt.graph.nodes.len(), 1, "{what}");
            assert_eq!(
                opt.graph.nodes[0].inputs.len(),
                if bias { 3 } else { 2 },
                "{what}"
            );
            assert_eq!(
                opt.graph.nodes[0].attrs["pads"],
                ints(&[1, 1, 1, 1]),
                "Conv attributes kept"
            );
        }
    }
}

#[test]
fn every_activation_fuses_into_fused_conv_with_z() {
    for (what, opset, add, act) in activations() {
        let mut g = conv_base(opset, true);
        g.input("z", &[1, 4, 5, 5]);
        add(&mut g, "y", "out");
        let m = to_fused_with_z(g.output("out").build());
        let (opt, _) = check_rules(&m, &[ACT_CONV], 1);
        assert_fused(&opt, "FusedConv", "n_y", act, "out");
        assert_eq!(fused_node(&opt).inputs, vec!["x", "w", "b", "z"], "{what}");
    }
}

#[test]
fn every_activation_fuses_into_gemm_and_matmul() {
    for (what, opset, add, act) in activations() {
        // Gemm: a[2,6] x w[4,6]^T + c[4], alpha/beta kept.
        let mut g = G::new(opset);
        g.input("a", &[2, 6]).rand_init("w", &[4, 6]).rand_init("c", &[4]);
        g.node(
            "Gemm",
            &["a", "w", "c"],
            &["y"],
            vec![("transB", int(1)), ("alpha", float(0.5)), ("beta", float(2.0))],
        );
        add(&mut g, "y", "out");
        let m = g.output("out").build();
        let (opt, _) = check_rules(&m, &[ACT_GEMM], 1);
        assert_fused(&opt, "FusedGemm", "n_y", act, "out");
        assert_eq!(fused_node(&opt).attrs["transB"], int(1), "{what}");

        // MatMul: a[2,3,6] x w[6,5].
        let mut g = G::new(opset);
        g.input("a", &[2, 3, 6]).rand_init("w", &[6, 5]);
        g.node("MatMul", &["a", "w"], &["y"], vec![]);
        add(&mut g, "y", "out");
        let m = g.output("out").build();
        let (opt, _) = check_rules(&m, &[ACT_MATMUL], 1);
        assert_fused(&opt, "FusedMatMul", "n_y", act, "out");
    }
}

#[test]
fn gemm_relu_and_matmul_sigmoid() {
    let mut g = G::new(13);
    g.input("a", &[3, 8]).rand_init("w", &[8, 4]);
    g.node("Gemm", &["a", "w"], &["y"], vec![]);
    g.node("Relu", &["y"], &["out"], vec![]);
    let m = g.output("out").build();
    let (opt, _) = check_rules(&m, &[ACT_GEMM], 1);
    assert_fused(&opt, "FusedGemm", "n_y", Activation::Relu, "out");

    let mut g = G::new(13);
    g.input("a", &[4, 8]).rand_init("w", &[8, 3]);
    g.node("MatMul", &["a", "w"], &["y"], vec![]);
    g.node("Sigmoid", &["y"], &["out"], vec![]);
    let m = g.output("out").build();
    let (opt, _) = check_rules(&m, &[ACT_MATMUL], 1);
    assert_fused(&opt, "FusedMatMul", "n_y", Activation::Sigmoid, "out");
    // The Conv rule does not touch a MatMul, and vice versa.
    check_rules(&m, &[ACT_CONV, ACT_GEMM], 0);
}

#[test]
fn integer_matmul_is_not_fused() {
    let mut g = G::new(14);
    g.init("a", Tensor::from_vec(vec![2, 2], vec![1i32, -2, 3, 4]).unwrap())
        .init("w", Tensor::from_vec(vec![2, 2], vec![1i32, 0, -1, 1]).unwrap());
    g.input("x", &[2, 2]);
    g.node("MatMul", &["a", "w"], &["y"], vec![]);
    g.node("Relu", &["y"], &["r"], vec![]);
    g.node("Cast", &["r"], &["rf"], vec![("to", int(1))]);
    g.node("Add", &["rf", "x"], &["out"], vec![]);
    let m = g.output("out").build();
    check_rules(&m, &[ACT_MATMUL], 0);
}

#[test]
fn clip_with_runtime_bounds_is_not_fused() {
    // A bound computed by a node (even from a constant: constant folding runs first).
    let mut g = conv_base(13, true);
    g.init("six", Tensor::scalar(6f32));
    g.node("Abs", &["six"], &["hi"], vec![]);
    g.node("Clip", &["y", "", "hi"], &["out"], vec![]);
    let m = g.output("out").build();
    check_rules(&m, &[ACT_CONV], 0);

    // A bound computed from a graph input.
    let mut g = conv_base(13, true);
    g.input("s", &[]);
    g.node("Neg", &["s"], &["lo"], vec![]);
    g.node("Clip", &["y", "lo"], &["out"], vec![]);
    let m = g.output("out").build();
    check_rules(&m, &[ACT_CONV], 0);

    // A bound that is a graph input.
    let mut g = conv_base(13, true);
    g.input("lo", &[]).init("hi", Tensor::scalar(0.5f32));
    g.node("Clip", &["y", "lo", "hi"], &["out"], vec![]);
    let m = g.output("out").build();
    check_rules(&m, &[ACT_CONV], 0);

    // The conv output is a bound, not the clipped value.
    let mut g = conv_base(13, true);
    g.input("v", &[1, 4, 5, 5]);
    g.init("hi", Tensor::scalar(0.5f32));
    g.node("ReduceMax", &["v"], &["vm"], vec![("keepdims", int(0))]);
    g.node("Clip", &["vm", "y"], &["unused"], vec![]);
    g.node("Relu", &["v"], &["out"], vec![]);
    let mut m = g.output("out").output("unused").build();
    // (y is not a scalar, so this is not a runnable Clip: check the guard only.)
    let rep = optimize(&mut m, &only(&[ACT_CONV])).unwrap();
    assert!(rep.applied().is_empty(), "{:?}", rep.applied());
}

#[test]
fn conv_output_read_twice_or_graph_output_is_not_fused() {
    // Read by two nodes.
    let mut g = conv_base(13, true);
    g.node("Relu", &["y"], &["r"], vec![]);
    g.node("Sigmoid", &["y"], &["s"], vec![]);
    let m = g.output("r").output("s").build();
    check_rules(&m, &[ACT_CONV, SILU, RESIDUAL], 0);

    // Read twice by one node.
    let mut g = conv_base(13, true);
    g.node("Add", &["y", "y"], &["out"], vec![]);
    let m = g.output("out").build();
    check_rules(&m, &[RESIDUAL], 0);

    // A graph output itself.
    let mut g = conv_base(13, true);
    g.node("Relu", &["y"], &["r"], vec![]);
    let m = g.output("y").output("r").build();
    check_rules(&m, &[ACT_CONV], 0);
    let mut g = conv_base(13, true);
    g.input("z", &[1, 4, 5, 5]);
    g.node("Add", &["y", "z"], &["out"], vec![]);
    let m = g.output("out").output("y").build();
    check_rules(&m, &[RESIDUAL], 0);

    // Already activated: no second activation.
    let mut g = conv_base(13, true);
    g.node("Relu", &["y"], &["r"], vec![]);
    g.node("Sigmoid", &["r"], &["out"], vec![]);
    let m = g.output("out").build();
    let (opt, _) = check_rules(&m, &[ACT_CONV], 1);
    assert_fused(&opt, "FusedConv", "n_y", Activation::Relu, "r");
}

#[test]
fn unsupported_activation_is_not_fused() {
    let mut g = conv_base(13, true);
    g.node("Tanh", &["y"], &["out"], vec![]);
    let m = g.output("out").build();
    check_rules(&m, &[ACT_CONV, SILU, RESIDUAL], 0);
}

#[test]
fn residual_add_fuses_both_operand_orders() {
    for (bias, conv_first) in [(true, true), (true, false), (false, true)] {
        let mut g = conv_base(13, bias);
        g.input("z", &[1, 4, 5, 5]);
        let ins = if conv_first { ["y", "z"] } else { ["z", "y"] };
        g.node("Add", &ins, &["out"], vec![]);
        let m = g.output("out").build();
        let (opt, _) = check_rules(&m, &[RESIDUAL], 1);
        assert_fused(&opt, "FusedConv", "n_y", Activation::None, "out");
        let b = if bias { "b" } else { "" };
        assert_eq!(fused_node(&opt).inputs, vec!["x", "w", b, "z"]);
    }
}

#[test]
fn residual_add_with_broadcasting_is_not_fused() {
    for dims in [&[1usize, 4, 1, 1][..], &[4, 1, 1], &[5], &[1, 1, 5, 5]] {
        let mut g = conv_base(13, true);
        g.input("z", dims);
        g.node("Add", &["y", "z"], &["out"], vec![]);
        let m = g.output("out").build();
        check_rules(&m, &[RESIDUAL], 0);
    }
    // z broadcasts the other way (the Add's output is bigger than the conv's).
    let mut g = conv_base(13, true);
    g.input("z", &[2, 4, 5, 5]);
    g.node("Add", &["z", "y"], &["out"], vec![]);
    let m = g.output("out").build();
    check_rules(&m, &[RESIDUAL], 0);
}

#[test]
fn residual_add_with_symbolic_dims_needs_the_same_symbols() {
    // Batch `n` on x and z: the conv output has batch `n` too, so the Add is
    // exact; z with batch `m` may broadcast (m = 1) and is not fused.
    for (zbatch, fires) in [("n", true), ("m", false)] {
        let mut g = conv_base(13, true);
        g.input("z", &[1, 4, 5, 5]);
        g.node("Add", &["y", "z"], &["out"], vec![]);
        let mut m = g.output("out").build();
        for (vi, sym) in m.graph.inputs.iter_mut().zip(["n", zbatch]) {
            if let Some(d) = vi.ty.shape.as_mut() {
                d[0] = Dim::Sym(sym.into());
            }
        }
        kiln_ir::infer::infer_types(&mut m).unwrap();
        let rep = optimize(&mut m, &only(&[RESIDUAL])).unwrap();
        assert_eq!(rep.applied().contains_key(RESIDUAL), fires, "z batch {zbatch}");
        assert_eq!(m.graph.nodes.len(), if fires { 1 } else { 2 });
        if fires {
            // Runs with any batch.
            let x = rand(&[2, 3, 5, 5], 1);
            let z = rand(&[2, 4, 5, 5], 2);
            assert_eq!(run(&m, &[x, z])[0].shape(), &[2, 4, 5, 5]);
        }
    }
}

#[test]
fn residual_add_into_fused_conv_with_activation_or_z_is_not_fused() {
    // Conv -> Relu -> Add: the activation comes first, the Add cannot be Z.
    let mut g = conv_base(13, true);
    g.input("z", &[1, 4, 5, 5]);
    g.node("Relu", &["y"], &["r"], vec![]);
    g.node("Add", &["r", "z"], &["out"], vec![]);
    let m = g.output("out").build();
    let (opt, _) = check_rules(&m, &[RESIDUAL, ACT_CONV], 1);
    assert_fused(&opt, "FusedConv", "n_y", Activation::Relu, "r");
    check_rules(&opt, &[RESIDUAL], 0);

    // A FusedConv that already has Z takes no second Add.
    let mut g = conv_base(13, true);
    g.input("z", &[1, 4, 5, 5]).input("z2", &[1, 4, 5, 5]);
    g.node("Add", &["y", "z2"], &["out"], vec![]);
    let m = to_fused_with_z(g.output("out").build());
    check_rules(&m, &[RESIDUAL], 0);
}

#[test]
fn conv_add_relu_becomes_one_fused_conv() {
    // ResNet basic block tail: relu(conv(x) + x), the conv keeping the shape.
    let mut g = G::new(13);
    g.input("x", &[1, 4, 5, 5])
        .rand_init("w", &[4, 4, 3, 3])
        .rand_init("b", &[4]);
    g.node(
        "Conv",
        &["x", "w", "b"],
        &["y"],
        vec![("pads", ints(&[1, 1, 1, 1])), ("kernel_shape", ints(&[3, 3]))],
    );
    g.node("Add", &["x", "y"], &["s"], vec![]);
    g.node("Relu", &["s"], &["out"], vec![]);
    let m = g.output("out").build();
    let (opt, rep) = check_rules(&m, &[RESIDUAL, ACT_CONV], 2);
    assert_eq!(rep.applied().get(RESIDUAL), Some(&1));
    assert_eq!(rep.applied().get(ACT_CONV), Some(&1));
    assert_fused(&opt, "FusedConv", "n_y", Activation::Relu, "out");
    assert_eq!(fused_node(&opt).inputs, vec!["x", "w", "b", "x"]);

    // The same at the full Extended level.
    let mut full = m.clone();
    let rep = optimize(
        &mut full,
        &Options {
            level: Level::Extended,
            ..Options::default()
        },
    )
    .unwrap();
    assert_eq!(full.graph.nodes.len(), 1, "{:?}", rep.applied());
    assert_fused(&full, "FusedConv", "n_y", Activation::Relu, "out");
    // ... and not at Basic.
    let mut basic = m.clone();
    optimize(
        &mut basic,
        &Options {
            level: Level::Basic,
            ..Options::default()
        },
    )
    .unwrap();
    assert!(basic.graph.nodes.iter().all(|n| n.domain.is_empty()));
}

#[test]
fn conv_add_silu_and_clip_chains() {
    let mut g = conv_base(13, true);
    g.input("z", &[1, 4, 5, 5]);
    g.node("Add", &["y", "z"], &["s"], vec![]);
    g.node("Sigmoid", &["s"], &["g"], vec![]);
    g.node("Mul", &["g", "s"], &["out"], vec![]);
    let m = g.output("out").build();
    let (opt, _) = check_rules(&m, &[RESIDUAL, SILU, ACT_CONV], 3);
    assert_fused(&opt, "FusedConv", "n_y", Activation::SiLU, "out");

    let mut g = conv_base(13, true);
    g.input("z", &[1, 4, 5, 5]);
    g.init("lo", Tensor::scalar(0f32))
        .init("hi", Tensor::scalar(0.5f32));
    g.node("Add", &["z", "y"], &["s"], vec![]);
    g.node("Clip", &["s", "lo", "hi"], &["out"], vec![]);
    let m = g.output("out").build();
    let (opt, _) = check_rules(&m, &[RESIDUAL, ACT_CONV], 2);
    assert_fused(
        &opt,
        "FusedConv",
        "n_y",
        Activation::Clip { min: 0.0, max: 0.5 },
        "out",
    );
}

#[test]
fn silu_fuses_both_mul_orders() {
    for gate_first in [false, true] {
        let mut g = conv_base(13, true);
        g.node("Sigmoid", &["y"], &["g"], vec![]);
        let ins = if gate_first { ["g", "y"] } else { ["y", "g"] };
        g.node("Mul", &ins, &["out"], vec![]);
        let m = g.output("out").build();
        let (opt, rep) = check_rules(&m, &[SILU], 2);
        assert_eq!(rep.applied().get(SILU), Some(&1));
        assert_fused(&opt, "FusedConv", "n_y", Activation::SiLU, "out");
        assert_eq!(opt.graph.nodes.len(), 1);
    }
}

#[test]
fn hard_swish_as_mul_of_hard_sigmoid_fuses() {
    for gate_first in [false, true] {
        let mut g = conv_base(13, true);
        g.node(
            "HardSigmoid",
            &["y"],
            &["g"],
            vec![("alpha", float(1.0 / 6.0)), ("beta", float(0.5))],
        );
        let ins = if gate_first { ["g", "y"] } else { ["y", "g"] };
        g.node("Mul", &ins, &["out"], vec![]);
        let m = g.output("out").build();
        let (opt, _) = check_rules(&m, &[SILU], 2);
        assert_fused(&opt, "FusedConv", "n_y", Activation::HardSwish, "out");
    }
    // Other HardSigmoid parameters: not HardSwish (the gate alone is not fused either).
    let mut g = conv_base(13, true);
    g.node("HardSigmoid", &["y"], &["g"], vec![]);
    g.node("Mul", &["y", "g"], &["out"], vec![]);
    let m = g.output("out").build();
    check_rules(&m, &[SILU, ACT_CONV], 0);
}

#[test]
fn silu_with_extra_readers_is_not_fused() {
    // The gate is also read elsewhere.
    let mut g = conv_base(13, true);
    g.node("Sigmoid", &["y"], &["g"], vec![]);
    g.node("Mul", &["y", "g"], &["out"], vec![]);
    let m = g.output("out").output("g").build();
    check_rules(&m, &[SILU], 0);

    // The conv output has a third reader.
    let mut g = conv_base(13, true);
    g.node("Sigmoid", &["y"], &["g"], vec![]);
    g.node("Mul", &["y", "g"], &["out"], vec![]);
    g.node("Relu", &["y"], &["r"], vec![]);
    let m = g.output("out").output("r").build();
    check_rules(&m, &[SILU], 0);

    // The Mul multiplies the gate by something else.
    let mut g = conv_base(13, true);
    g.input("v", &[1, 4, 5, 5]);
    g.node("Sigmoid", &["y"], &["g"], vec![]);
    g.node("Mul", &["v", "g"], &["m"], vec![]);
    g.node("Add", &["m", "y"], &["out"], vec![]);
    let m = g.output("out").build();
    check_rules(&m, &[SILU], 0);

    // The conv output is a graph output.
    let mut g = conv_base(13, true);
    g.node("Sigmoid", &["y"], &["g"], vec![]);
    g.node("Mul", &["y", "g"], &["out"], vec![]);
    let m = g.output("out").output("y").build();
    check_rules(&m, &[SILU], 0);
}

#[test]
fn fusion_rules_are_registered_extended_residual_first() {
    let names: Vec<&str> = all_rules().iter().map(|r| r.name()).collect();
    let pos = |n: &str| {
        names
            .iter()
            .position(|x| *x == n)
            .unwrap_or_else(|| panic!("{n} missing"))
    };
    for n in [SILU, ACT_CONV, ACT_GEMM, ACT_MATMUL] {
        assert!(pos(RESIDUAL) < pos(n), "{RESIDUAL} runs before {n}");
    }
    for r in all_rules().iter().filter(|r| r.name().starts_with("fuse-")) {
        if [RESIDUAL, SILU, ACT_CONV, ACT_GEMM, ACT_MATMUL].contains(&r.name()) {
            assert_eq!(r.level(), Level::Extended, "{}", r.name());
            assert!(!r.describe().is_empty());
        }
    }
}

#[test]
fn lowered_model_fuses_back_to_the_same_nodes() {
    // Export lowering names the standard chain after the fused node, so
    // lower -> re-optimize gives back the same fused nodes.
    for (what, opset, add, _) in activations() {
        let mut g = conv_base(opset, true);
        g.input("z", &[1, 4, 5, 5]);
        g.node("Add", &["y", "z"], &["s"], vec![]);
        add(&mut g, "s", "out");
        let m = g.output("out").build();
        let rules = [RESIDUAL, SILU, ACT_CONV];
        let (opt, _) = check_rules(&m, &rules, 2);
        let low = lower_fused(&opt).unwrap();
        assert!(low.graph.nodes.iter().all(|n| n.domain.is_empty()), "{what}");
        let mut again = low.clone();
        optimize(&mut again, &only(&rules)).unwrap();
        assert_eq!(again.graph.nodes, opt.graph.nodes, "{what}");
    }
    // SiLU too.
    let mut g = conv_base(13, true);
    g.node("Sigmoid", &["y"], &["g"], vec![]);
    g.node("Mul", &["y", "g"], &["out"], vec![]);
    let m = g.output("out").build();
    let (opt, _) = check_rules(&m, &[SILU], 2);
    let mut again = lower_fused(&opt).unwrap();
    optimize(&mut again, &only(&[SILU])).unwrap();
    assert_eq!(again.graph.nodes, opt.graph.nodes);
}

#[test]
fn float16_conv_relu_fuses() {
    let mut g = G::new(13);
    g.input("x", &[1, 3, 5, 5]);
    let w = rand(&[4, 3, 3, 3], 5).cast(DType::F16);
    g.init("w", w);
    g.node("Cast", &["x"], &["xh"], vec![("to", int(10))]);
    g.node("Conv", &["xh", "w"], &["y"], vec![]);
    g.node("Relu", &["y"], &["r"], vec![]);
    g.node("Cast", &["r"], &["out"], vec![("to", int(1))]);
    let m = g.output("out").build();
    let inputs = rand_inputs(&m);
    let before = run(&m, &inputs);
    let mut opt = m.clone();
    optimize(&mut opt, &only(&[ACT_CONV])).unwrap();
    assert_fused(&opt, "FusedConv", "n_y", Activation::Relu, "r");
    assert_close(&run(&opt, &inputs), &before, 1e-3);
}

const HSWISH: &str = "fuse-decomposed-hardswish-into-conv";

/// `y * Clip(y + 3, 0, 6) / 6` after the conv, as paddle2onnx writes it.
fn decomposed_hardswish(three: f32, six: f32, add_first: bool, mul_first: bool) -> Model {
    let mut g = conv_base(12, true);
    g.init("three", Tensor::scalar(three))
        .init("zero", Tensor::scalar(0f32))
        .init("six", Tensor::scalar(6f32))
        .init("six_div", Tensor::scalar(six));
    let add = if add_first { ["y", "three"] } else { ["three", "y"] };
    g.node("Add", &add, &["t"], vec![]);
    g.node("Clip", &["t", "zero", "six"], &["gate"], vec![]);
    let mul = if mul_first { ["y", "gate"] } else { ["gate", "y"] };
    g.node("Mul", &mul, &["u"], vec![]);
    g.node("Div", &["u", "six_div"], &["out"], vec![]);
    g.output("out").build()
}

#[test]
fn decomposed_hardswish_fuses_in_every_operand_order() {
    for (add_first, mul_first) in [(true, true), (false, true), (true, false), (false, false)] {
        let m = decomposed_hardswish(3.0, 6.0, add_first, mul_first);
        let (opt, rep) = check_rules(&m, &[HSWISH], 4);
        assert_eq!(rep.applied().get(HSWISH), Some(&1));
        assert_fused(&opt, "FusedConv", "n_y", Activation::HardSwish, "out");
    }
}

#[test]
fn decomposed_hardswish_with_other_constants_does_not_fuse() {
    check_rules(&decomposed_hardswish(2.0, 6.0, true, true), &[HSWISH], 0);
    check_rules(&decomposed_hardswish(3.0, 5.0, true, true), &[HSWISH], 0);
}
