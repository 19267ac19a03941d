//! Tests of the conv_fold rule family: each fold both ways (fires and keeps
//! outputs equal; does not fire when a guard fails).

mod common;

use common::*;
use kiln_ir::{Attribute, Model, Tensor};

const PAD: &str = "fold-pad-into-conv";
const MUL: &str = "fold-mul-into-conv";
const ADD: &str = "fold-add-into-conv";
const GEMM: &str = "fuse-matmul-add-into-gemm";
const ALL: [&str; 4] = [PAD, MUL, ADD, GEMM];

fn i64s(v: &[i64]) -> Tensor {
    Tensor::from_vec(vec![v.len()], v.to_vec()).unwrap()
}

fn ops(m: &Model) -> Vec<&str> {
    m.graph.nodes.iter().map(|n| n.op_type.as_str()).collect()
}

fn attr_ints(m: &Model, op: &str, name: &str) -> Option<Vec<i64>> {
    let n = m.graph.nodes.iter().find(|n| n.op_type == op)?;
    match n.attrs.get(name)? {
        Attribute::Ints(v) => Some(v.clone()),
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// fold-pad-into-conv

/// x `[1, c, 6, 7]` -> Pad (input form, opset `opset`) -> Conv W `[4, c + pad
/// of axis 1, 3, 3]` with `conv_attrs` -> y. `value`: the constant_value input.
fn pad_conv(
    opset: i64,
    c: usize,
    pads: &[i64],
    value: Option<f32>,
    conv_attrs: Vec<(&str, Attribute)>,
) -> Model {
    let mut g = G::new(opset);
    g.input("x", &[1, c, 6, 7]).init("pads", i64s(pads));
    let mut ins = vec!["x", "pads"];
    if let Some(v) = value {
        g.init("cv", Tensor::scalar(v));
        ins.push("cv");
    }
    g.node("Pad", &ins, &["p"], vec![]);
    let cp = c + (pads[1] + pads[5]) as usize;
    g.rand_init("w", &[4, cp, 3, 3]).rand_init("b", &[4]);
    g.node("Conv", &["p", "w", "b"], &["y"], conv_attrs);
    g.output("y").build()
}

#[test]
fn pad_input_form_folds_into_conv_pads() {
    let m = pad_conv(
        13,
        3,
        &[0, 0, 1, 2, 0, 0, 3, 1],
        None,
        vec![("pads", ints(&[1, 1, 1, 1]))],
    );
    let (opt, _) = check_rules(&m, &[PAD], 1);
    assert_eq!(ops(&opt), vec!["Conv"]);
    assert_eq!(attr_ints(&opt, "Conv", "pads"), Some(vec![2, 3, 4, 2]));
    assert_eq!(opt.graph.nodes[0].inputs[0], "x");
}

#[test]
fn pad_without_conv_pads_and_with_zero_value_folds() {
    let m = pad_conv(
        13,
        2,
        &[0, 0, 2, 0, 0, 0, 0, 1],
        Some(0.0),
        vec![("strides", ints(&[2, 1]))],
    );
    let (opt, _) = check_rules(&m, &[PAD], 1);
    assert_eq!(attr_ints(&opt, "Conv", "pads"), Some(vec![2, 0, 0, 1]));
}

#[test]
fn pad_attribute_form_folds() {
    for value in [None, Some(0.0)] {
        let mut g = G::new(10);
        g.input("x", &[2, 3, 5, 5]).rand_init("w", &[4, 3, 3, 3]);
        let mut attrs = vec![
            ("pads", ints(&[0, 0, 1, 1, 0, 0, 1, 2])),
            ("mode", Attribute::String(b"constant".to_vec())),
        ];
        if let Some(v) = value {
            attrs.push(("value", float(v)));
        }
        g.node("Pad", &["x"], &["p"], attrs);
        g.node("Conv", &["p", "w"], &["y"], vec![("dilations", ints(&[2, 1]))]);
        let (opt, _) = check_rules(&g.output("y").build(), &[PAD], 1);
        assert_eq!(attr_ints(&opt, "Conv", "pads"), Some(vec![1, 1, 1, 2]));
    }
}

#[test]
fn pad_attribute_form_nonzero_value_does_not_fold() {
    let mut g = G::new(10);
    g.input("x", &[1, 3, 5, 5]).rand_init("w", &[4, 3, 3, 3]);
    g.node(
        "Pad",
        &["x"],
        &["p"],
        vec![("pads", ints(&[0, 0, 1, 1, 0, 0, 1, 1])), ("value", float(1.5))],
    );
    g.node("Conv", &["p", "w"], &["y"], vec![]);
    check_rules(&g.output("y").build(), &ALL, 0);
}

#[test]
fn pad_with_axes_folds() {
    let mut g = G::new(18);
    g.input("x", &[1, 2, 5, 6])
        .init("pads", i64s(&[1, 2, 0, 1]))
        .init("axes", i64s(&[-1, 2]));
    g.node("Pad", &["x", "pads", "", "axes"], &["p"], vec![]);
    g.rand_init("w", &[3, 2, 3, 3]);
    g.node("Conv", &["p", "w"], &["y"], vec![]);
    let (opt, _) = check_rules(&g.output("y").build(), &[PAD], 1);
    // axes [-1, 2]: W axis begins 1, H begins 2, W ends 0, H ends 1.
    assert_eq!(attr_ints(&opt, "Conv", "pads"), Some(vec![2, 1, 1, 0]));
}

#[test]
fn pad_nonzero_constant_value_does_not_fold() {
    let m = pad_conv(13, 3, &[0, 0, 1, 1, 0, 0, 1, 1], Some(0.5), vec![]);
    check_rules(&m, &ALL, 0);
}

#[test]
fn pad_of_channel_or_batch_axis_does_not_fold() {
    let m = pad_conv(13, 2, &[0, 1, 1, 1, 0, 0, 1, 1], None, vec![]);
    check_rules(&m, &ALL, 0);
    let m = pad_conv(13, 2, &[1, 0, 1, 1, 0, 0, 1, 1], None, vec![]);
    check_rules(&m, &ALL, 0);
}

#[test]
fn pad_reflect_or_negative_does_not_fold() {
    let mut g = G::new(13);
    g.input("x", &[1, 2, 5, 5])
        .init("pads", i64s(&[0, 0, 1, 1, 0, 0, 1, 1]))
        .rand_init("w", &[3, 2, 3, 3]);
    g.node(
        "Pad",
        &["x", "pads"],
        &["p"],
        vec![("mode", Attribute::String(b"reflect".to_vec()))],
    );
    g.node("Conv", &["p", "w"], &["y"], vec![]);
    check_rules(&g.output("y").build(), &ALL, 0);
    let m = pad_conv(13, 2, &[0, 0, 1, -1, 0, 0, 1, 1], None, vec![]);
    check_rules(&m, &ALL, 0);
}

#[test]
fn pad_read_elsewhere_does_not_fold() {
    let mut g = G::new(13);
    g.input("x", &[1, 2, 5, 5])
        .init("pads", i64s(&[0, 0, 1, 1, 0, 0, 1, 1]))
        .rand_init("w", &[3, 2, 3, 3]);
    g.node("Pad", &["x", "pads"], &["p"], vec![]);
    g.node("Conv", &["p", "w"], &["y"], vec![]);
    g.node("Relu", &["p"], &["r"], vec![]);
    check_rules(&g.output("y").output("r").build(), &ALL, 0);
}

#[test]
fn pad_into_auto_pad_conv_does_not_fold() {
    let s = Attribute::String(b"SAME_UPPER".to_vec());
    let m = pad_conv(13, 2, &[0, 0, 1, 1, 0, 0, 1, 1], None, vec![("auto_pad", s)]);
    check_rules(&m, &ALL, 0);
}

/// x -> Pad (spatial, 1 each side) -> `pool` with `attrs` -> y.
fn pad_pool(pool: &str, attrs: Vec<(&str, Attribute)>) -> Model {
    let mut g = G::new(13);
    g.input("x", &[1, 2, 6, 6])
        .init("pads", i64s(&[0, 0, 1, 1, 0, 0, 1, 1]));
    g.node("Pad", &["x", "pads"], &["p"], vec![]);
    let mut attrs = attrs;
    attrs.push(("kernel_shape", ints(&[3, 3])));
    g.node(pool, &["p"], &["y"], attrs);
    g.output("y").build()
}

#[test]
fn pad_folds_into_average_pool_counting_pads() {
    let m = pad_pool(
        "AveragePool",
        vec![("count_include_pad", int(1)), ("strides", ints(&[2, 2]))],
    );
    let (opt, _) = check_rules(&m, &[PAD], 1);
    assert_eq!(attr_ints(&opt, "AveragePool", "pads"), Some(vec![1, 1, 1, 1]));
    let m = pad_pool(
        "AveragePool",
        vec![("count_include_pad", int(1)), ("pads", ints(&[1, 0, 0, 1]))],
    );
    let (opt, _) = check_rules(&m, &[PAD], 1);
    assert_eq!(attr_ints(&opt, "AveragePool", "pads"), Some(vec![2, 1, 1, 2]));
}

#[test]
fn pad_does_not_fold_into_other_pools() {
    check_rules(&pad_pool("AveragePool", vec![]), &ALL, 0);
    check_rules(
        &pad_pool("AveragePool", vec![("count_include_pad", int(0))]),
        &ALL,
        0,
    );
    // Pool pads must stay below the kernel extent.
    let m = pad_pool(
        "AveragePool",
        vec![("count_include_pad", int(1)), ("pads", ints(&[2, 0, 0, 0]))],
    );
    check_rules(&m, &ALL, 0);
    // ceil_mode drops windows by the unpadded size.
    let m = pad_pool(
        "AveragePool",
        vec![
            ("count_include_pad", int(1)),
            ("ceil_mode", int(1)),
            ("strides", ints(&[2, 2])),
        ],
    );
    check_rules(&m, &ALL, 0);
    // MaxPool pads with -inf, not 0.
    check_rules(&pad_pool("MaxPool", vec![]), &ALL, 0);
}

// ---------------------------------------------------------------------------
// fold-mul-into-conv / fold-add-into-conv

/// x `[2, 3, 5, 6]` -> Conv (4 outputs, pads 1: output `[2, 4, 5, 6]`) ->
/// `op` with a constant of `c_dims` (on the `first` side if asked) -> y.
fn conv_op(op: &str, c_dims: &[usize], first: bool, bias: bool, group: usize) -> Model {
    let mut g = G::new(13);
    let cin = if group == 1 { 3 } else { 4 };
    g.input("x", &[2, cin, 5, 6])
        .rand_init("w", &[4, cin / group, 3, 3]);
    let mut ins = vec!["x", "w"];
    if bias {
        g.rand_init("b", &[4]);
        ins.push("b");
    }
    g.node(
        "Conv",
        &ins,
        &["t"],
        vec![("pads", ints(&[1, 1, 1, 1])), ("group", int(group as i64))],
    );
    g.rand_init("k", c_dims);
    let ins: &[&str] = if first { &["k", "t"] } else { &["t", "k"] };
    g.node(op, ins, &["y"], vec![]);
    g.output("y").build()
}

#[test]
fn per_channel_mul_folds() {
    for (dims, first) in [
        (&[1, 4, 1, 1][..], false),
        (&[4, 1, 1][..], true),
        (&[1, 4, 1, 1][..], true),
        (&[][..], false),
        (&[1][..], true),
        (&[1, 1, 1, 1][..], false),
    ] {
        for bias in [false, true] {
            let m = conv_op("Mul", dims, first, bias, 1);
            let (opt, _) = check_rules(&m, &[MUL], 1);
            assert_eq!(ops(&opt), vec!["Conv"]);
            assert_eq!(
                opt.graph.nodes[0].inputs.len(),
                if bias { 3 } else { 2 },
                "{dims:?}"
            );
            assert_eq!(
                opt.graph.nodes[0].inputs[1], "w",
                "W read only by the Conv: kept in place"
            );
        }
    }
    check_rules(&conv_op("Mul", &[4, 1, 1], false, true, 4), &[MUL], 1);
}

#[test]
fn per_channel_add_folds() {
    for (dims, first) in [
        (&[1, 4, 1, 1][..], false),
        (&[4, 1, 1][..], true),
        (&[][..], true),
    ] {
        for bias in [false, true] {
            let m = conv_op("Add", dims, first, bias, 1);
            let (opt, _) = check_rules(&m, &[ADD], 1);
            let c = &opt.graph.nodes[0];
            assert_eq!(c.inputs.len(), 3, "bias created when absent");
            assert_eq!(opt.graph.initializers[&c.inputs[2]].shape(), &[4]);
        }
    }
    check_rules(&conv_op("Add", &[1, 4, 1, 1], true, false, 2), &[ADD], 1);
}

#[test]
fn non_per_channel_constants_do_not_fold() {
    for op in ["Mul", "Add"] {
        // Varies along H.
        check_rules(&conv_op(op, &[1, 4, 5, 1], false, true, 1), &ALL, 0);
        check_rules(&conv_op(op, &[5, 1], true, true, 1), &ALL, 0);
        // Varies along N.
        check_rules(&conv_op(op, &[2, 1, 1, 1], false, true, 1), &ALL, 0);
        check_rules(&conv_op(op, &[2, 4, 1, 1], true, true, 1), &ALL, 0);
        // A rank-1 [C]-sized constant right-aligns with W (6), not channels.
        check_rules(&conv_op(op, &[6], true, true, 1), &ALL, 0);
        // Broadcast that grows the output.
        check_rules(&conv_op(op, &[3, 2, 4, 1, 1], false, true, 1), &ALL, 0);
    }
}

#[test]
fn mul_add_rules_check_their_op() {
    check_rules(
        &conv_op("Mul", &[1, 4, 1, 1], false, true, 1),
        &[ADD, PAD, GEMM],
        0,
    );
    check_rules(
        &conv_op("Add", &[1, 4, 1, 1], false, true, 1),
        &[MUL, PAD, GEMM],
        0,
    );
    check_rules(&conv_op("Sub", &[1, 4, 1, 1], false, true, 1), &ALL, 0);
}

#[test]
fn conv_output_read_elsewhere_or_non_constant_does_not_fold() {
    let mut g = G::new(13);
    g.input("x", &[1, 3, 5, 5])
        .rand_init("w", &[4, 3, 3, 3])
        .rand_init("k", &[4, 1, 1]);
    g.node("Conv", &["x", "w"], &["t"], vec![]);
    g.node("Mul", &["t", "k"], &["y"], vec![]);
    check_rules(&g.output("y").output("t").build(), &ALL, 0);

    let mut g = G::new(13);
    g.input("x", &[1, 3, 5, 5])
        .input("k", &[4, 1, 1])
        .rand_init("w", &[4, 3, 3, 3]);
    g.node("Conv", &["x", "w"], &["t"], vec![]);
    g.node("Mul", &["t", "k"], &["m"], vec![]);
    g.node("Add", &["k", "m"], &["y"], vec![]);
    check_rules(&g.output("y").build(), &ALL, 0);
}

#[test]
fn shared_weight_mul_writes_new_weight() {
    let mut g = G::new(13);
    g.input("x", &[1, 3, 5, 5])
        .rand_init("w", &[4, 3, 3, 3])
        .rand_init("k", &[4, 1, 1]);
    g.node("Conv", &["x", "w"], &["t"], vec![]);
    g.node("Mul", &["t", "k"], &["y"], vec![]);
    g.node("Conv", &["x", "w"], &["z"], vec![]);
    let m = g.output("y").output("z").build();
    let (opt, _) = check_rules(&m, &[MUL], 1);
    assert_eq!(opt.graph.initializers["w"], m.graph.initializers["w"]);
}

// ---------------------------------------------------------------------------
// fuse-matmul-add-into-gemm

/// a `[3, 5]` x B `[5, 4]` (constant or input) + constant of `c_dims` -> y.
fn matmul_add(a_dims: &[usize], b_dims: &[usize], c_dims: &[usize], first: bool, b_const: bool) -> Model {
    let mut g = G::new(13);
    g.input("a", a_dims);
    if b_const {
        g.rand_init("b", b_dims);
    } else {
        g.input("b", b_dims);
    }
    g.node("MatMul", &["a", "b"], &["t"], vec![]);
    g.rand_init("c", c_dims);
    let ins: &[&str] = if first { &["c", "t"] } else { &["t", "c"] };
    g.node("Add", ins, &["y"], vec![]);
    g.output("y").build()
}

#[test]
fn matmul_add_becomes_gemm() {
    for (c, first) in [
        (&[4][..], false),
        (&[1, 4][..], true),
        (&[3, 4][..], false),
        (&[3, 1][..], true),
        (&[][..], false),
    ] {
        for b_const in [true, false] {
            let m = matmul_add(&[3, 5], &[5, 4], c, first, b_const);
            let (opt, _) = check_rules(&m, &[GEMM], 1);
            assert_eq!(ops(&opt), vec!["Gemm"]);
            assert_eq!(opt.graph.nodes[0].inputs, vec!["a", "b", "c"]);
            assert_eq!(opt.graph.nodes[0].outputs, vec!["y"]);
        }
    }
}

#[test]
fn batched_matmul_add_does_not_fuse() {
    check_rules(&matmul_add(&[2, 3, 5], &[5, 4], &[4], false, true), &ALL, 0);
    check_rules(&matmul_add(&[3, 5], &[2, 5, 4], &[4], false, true), &ALL, 0);
    check_rules(&matmul_add(&[5], &[5, 4], &[4], false, true), &ALL, 0);
}

#[test]
fn matmul_add_that_broadcasts_wider_does_not_fuse() {
    // [1, 4] + [3, 4] is [3, 4]: Gemm's C cannot grow the output.
    check_rules(&matmul_add(&[1, 5], &[5, 4], &[3, 4], false, true), &ALL, 0);
    check_rules(&matmul_add(&[3, 5], &[5, 4], &[2, 3, 4], false, true), &ALL, 0);
}

#[test]
fn matmul_read_elsewhere_or_non_constant_bias_does_not_fuse() {
    let mut g = G::new(13);
    g.input("a", &[3, 5]).rand_init("b", &[5, 4]).rand_init("c", &[4]);
    g.node("MatMul", &["a", "b"], &["t"], vec![]);
    g.node("Add", &["t", "c"], &["y"], vec![]);
    g.node("Relu", &["t"], &["r"], vec![]);
    check_rules(&g.output("y").output("r").build(), &ALL, 0);

    let mut g = G::new(13);
    g.input("a", &[3, 5]).input("c", &[4]).rand_init("b", &[5, 4]);
    g.node("MatMul", &["a", "b"], &["t"], vec![]);
    g.node("Add", &["t", "c"], &["y"], vec![]);
    check_rules(&g.output("y").build(), &ALL, 0);
}

// ---------------------------------------------------------------------------
// Together with the batchnorm family.

#[test]
fn pad_conv_bn_mul_add_chain_folds_to_one_conv() {
    let mut g = G::new(13);
    g.input("x", &[2, 3, 6, 6])
        .init("pads", i64s(&[0, 0, 1, 1, 0, 0, 1, 1]));
    g.node("Pad", &["x", "pads"], &["p"], vec![]);
    g.rand_init("w", &[4, 3, 3, 3]);
    g.node("Conv", &["p", "w"], &["t"], vec![]);
    g.rand_init("s", &[4])
        .rand_init("sh", &[4])
        .rand_init("mean", &[4]);
    let var: Vec<f32> = rand(&[4], 99)
        .to_f32_vec()
        .iter()
        .map(|v| v.abs() + 0.1)
        .collect();
    g.init("var", Tensor::from_vec(vec![4], var).unwrap());
    g.node(
        "BatchNormalization",
        &["t", "s", "sh", "mean", "var"],
        &["n"],
        vec![("epsilon", float(1e-3))],
    );
    g.rand_init("k", &[1, 4, 1, 1]).rand_init("k2", &[4, 1, 1]);
    g.node("Mul", &["n", "k"], &["m"], vec![]);
    g.node("Add", &["k2", "m"], &["y"], vec![]);
    let m = g.output("y").build();
    let rules = [
        PAD,
        MUL,
        ADD,
        GEMM,
        "fold-batchnorm-into-conv",
        "fold-batchnorm-into-convtranspose",
        "fold-batchnorm-into-gemm",
        "fold-batchnorm-into-matmul",
        "batchnorm-to-scale-shift",
    ];
    let (opt, _) = check_rules(&m, &rules, 4);
    assert_eq!(ops(&opt), vec!["Conv"]);
    assert_eq!(attr_ints(&opt, "Conv", "pads"), Some(vec![1, 1, 1, 1]));
}
