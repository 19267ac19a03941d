//! Tests of the batchnorm rule family: each fold both ways (fires and keeps
//! outputs equal; does not fire when a guard fails).

mod common;

use common::*;
use kiln_ir::{Attribute, Model, Tensor};
use kiln_opt::optimize;

const CONV: &str = "fold-batchnorm-into-conv";
const CONVT: &str = "fold-batchnorm-into-convtranspose";
const GEMM: &str = "fold-batchnorm-into-gemm";
const MATMUL: &str = "fold-batchnorm-into-matmul";
const SCALE_SHIFT: &str = "batchnorm-to-scale-shift";
const ALL: [&str; 5] = [CONV, CONVT, GEMM, MATMUL, SCALE_SHIFT];

/// A positive variance in [0.05, 2.05).
fn var_tensor(c: usize, seed: u64) -> Tensor {
    let v: Vec<f32> = rand(&[c], seed)
        .to_f32_vec()
        .iter()
        .map(|v| v.abs() * 2.0 + 0.05)
        .collect();
    Tensor::from_vec(vec![c], v).unwrap()
}

/// A mean in [-3, 3): far from 0.
fn mean_tensor(c: usize, seed: u64) -> Tensor {
    let v: Vec<f32> = rand(&[c], seed).to_f32_vec().iter().map(|v| v * 3.0).collect();
    Tensor::from_vec(vec![c], v).unwrap()
}

/// Adds the four constant parameters `{p}_scale`, `{p}_b`, `{p}_mean`,
/// `{p}_var` (random, var positive) of `c` channels.
fn bn_params(g: &mut G, p: &str, c: usize, seed: u64) {
    g.rand_init(&format!("{p}_scale"), &[c]);
    g.rand_init(&format!("{p}_b"), &[c]);
    g.init(&format!("{p}_mean"), mean_tensor(c, seed));
    g.init(&format!("{p}_var"), var_tensor(c, seed + 1));
}

/// A BatchNormalization `x -> y` reading parameters `{p}_*`, epsilon 1e-3.
fn bn_node(g: &mut G, p: &str, x: &str, y: &str) {
    let (s, b, m, v) = (
        format!("{p}_scale"),
        format!("{p}_b"),
        format!("{p}_mean"),
        format!("{p}_var"),
    );
    g.node(
        "BatchNormalization",
        &[x, &s, &b, &m, &v],
        &[y],
        vec![("epsilon", float(1e-3))],
    );
}

/// A BatchNormalization `x -> y` with fresh constant parameters.
fn bn(g: &mut G, p: &str, x: &str, y: &str, c: usize, seed: u64) {
    bn_params(g, p, c, seed);
    bn_node(g, p, x, y);
}

/// Conv `x [n, c, 7, 7]` with W `[m, c/group, 3, 3]` (+ bias) -> `t`, then BN -> `y`.
fn conv_bn(c: usize, m: usize, group: usize, bias: bool) -> Model {
    let mut g = G::new(13);
    g.input("x", &[2, c, 7, 7]).rand_init("w", &[m, c / group, 3, 3]);
    let mut ins = vec!["x", "w"];
    if bias {
        g.rand_init("bias", &[m]);
        ins.push("bias");
    }
    g.node(
        "Conv",
        &ins,
        &["t"],
        vec![
            ("pads", ints(&[1, 1, 1, 1])),
            ("group", int(group as i64)),
            ("strides", ints(&[1, 2])),
        ],
    );
    bn(&mut g, "bn", "t", "y", m, 11);
    g.output("y").build()
}

/// Runs `rules` on `m`; checks outputs equal and the node count grew by `grown`.
fn check_grow(m: &Model, rules: &[&str], grown: usize) -> Model {
    let inputs = rand_inputs(m);
    let before = run(m, &inputs);
    let mut opt = m.clone();
    let rep = optimize(&mut opt, &only(rules)).unwrap_or_else(|e| panic!("{e}"));
    assert_close(&run(&opt, &inputs), &before, 1e-5);
    assert_eq!(
        opt.graph.nodes.len(),
        m.graph.nodes.len() + grown,
        "report {:?}",
        rep.applied()
    );
    opt
}

fn ops(m: &Model) -> Vec<&str> {
    m.graph.nodes.iter().map(|n| n.op_type.as_str()).collect()
}

// ---------------------------------------------------------------------------
// fold-batchnorm-into-conv

#[test]
fn conv_bn_folds_in_place() {
    let m = conv_bn(3, 4, 1, true);
    let (opt, rep) = check_rules(&m, &[CONV], 1);
    assert_eq!(rep.applied().get(CONV), Some(&1));
    let c = &opt.graph.nodes[0];
    assert_eq!(c.op_type, "Conv");
    // Only this Conv read W and bias: overwritten in place, names kept.
    assert_eq!(c.inputs, vec!["x", "w", "bias"]);
    assert_eq!(c.outputs, vec!["y"]);
    assert_ne!(opt.graph.initializers["w"], m.graph.initializers["w"]);
    assert_eq!(opt.graph.initializers["w"].shape(), &[4, 3, 3, 3]);
}

#[test]
fn conv_bn_without_bias_gets_a_bias() {
    let m = conv_bn(3, 5, 1, false);
    let (opt, _) = check_rules(&m, &[CONV], 1);
    let c = &opt.graph.nodes[0];
    assert_eq!(c.inputs.len(), 3);
    assert_eq!(opt.graph.initializers[&c.inputs[2]].shape(), &[5]);
}

#[test]
fn depthwise_conv_bn_folds() {
    // group = C: W is [C, 1, 3, 3], still scaled along its first axis.
    check_rules(&conv_bn(4, 4, 4, true), &[CONV], 1);
    check_rules(&conv_bn(4, 4, 4, false), &[CONV], 1);
}

#[test]
fn grouped_conv_with_channel_multiplier_folds() {
    // group = 2, 2 input channels, 6 outputs (3 per group).
    check_rules(&conv_bn(2, 6, 2, true), &[CONV], 1);
    check_rules(&conv_bn(4, 6, 2, false), &[CONV], 1);
}

#[test]
fn shared_weights_get_new_initializers() {
    let mut g = G::new(13);
    g.input("x", &[1, 3, 6, 6])
        .rand_init("w", &[4, 3, 3, 3])
        .rand_init("bias", &[4]);
    g.node("Conv", &["x", "w", "bias"], &["t1"], vec![]);
    g.node("Conv", &["x", "w", "bias"], &["t2"], vec![]);
    bn(&mut g, "bn1", "t1", "y1", 4, 21);
    bn(&mut g, "bn2", "t2", "y2", 4, 31);
    let m = g.output("y1").output("y2").build();
    let (opt, rep) = check_rules(&m, &[CONV], 2);
    assert_eq!(rep.applied().get(CONV), Some(&2));
    // The first fold cannot overwrite the shared tensors: it writes new ones.
    // The second Conv is then their only reader and folds in place.
    let ins: Vec<&Vec<String>> = opt.graph.nodes.iter().map(|n| &n.inputs).collect();
    let shared = ins.iter().filter(|i| i[1] == "w" && i[2] == "bias").count();
    let fresh = ins.iter().filter(|i| i[1] != "w" && i[2] != "bias").count();
    assert_eq!((shared, fresh), (1, 1), "{ins:?}");
    assert_ne!(ins[0][1], ins[1][1]);
    assert_ne!(opt.graph.initializers["w"], m.graph.initializers["w"]);
}

#[test]
fn bn_mean_graph_input_does_not_fold() {
    let mut g = G::new(13);
    g.input("x", &[1, 3, 6, 6])
        .input("bn_mean", &[4])
        .rand_init("w", &[4, 3, 3, 3]);
    g.rand_init("bn_scale", &[4])
        .rand_init("bn_b", &[4])
        .init("bn_var", var_tensor(4, 3));
    g.node("Conv", &["x", "w"], &["t"], vec![]);
    bn_node(&mut g, "bn", "t", "y");
    let m = g.output("y").build();
    check_rules(&m, &ALL, 0);
}

#[test]
fn bn_computed_var_does_not_fold() {
    let mut g = G::new(13);
    g.input("x", &[1, 3, 6, 6]).rand_init("w", &[4, 3, 3, 3]);
    g.rand_init("bn_scale", &[4])
        .rand_init("bn_b", &[4])
        .init("bn_mean", mean_tensor(4, 5));
    g.init("v0", var_tensor(4, 6)).init("v1", var_tensor(4, 7));
    g.node("Add", &["v0", "v1"], &["bn_var"], vec![]);
    g.node("Conv", &["x", "w"], &["t"], vec![]);
    bn_node(&mut g, "bn", "t", "y");
    let m = g.output("y").build();
    check_rules(&m, &ALL, 0);
}

#[test]
fn conv_output_read_elsewhere_does_not_fold() {
    let mut g = G::new(13);
    g.input("x", &[1, 3, 6, 6]).rand_init("w", &[4, 3, 3, 3]);
    g.node("Conv", &["x", "w"], &["t"], vec![]);
    bn(&mut g, "bn", "t", "y", 4, 41);
    g.node("Relu", &["t"], &["r"], vec![]);
    let m = g.output("y").output("r").build();
    check_rules(&m, &[CONV, CONVT, GEMM, MATMUL], 0);
}

#[test]
fn conv_output_graph_output_does_not_fold() {
    let mut g = G::new(13);
    g.input("x", &[1, 3, 6, 6]).rand_init("w", &[4, 3, 3, 3]);
    g.node("Conv", &["x", "w"], &["t"], vec![]);
    bn(&mut g, "bn", "t", "y", 4, 43);
    let m = g.output("y").output("t").build();
    check_rules(&m, &[CONV], 0);
}

#[test]
fn conv_bn_folds_at_opset_8() {
    let mut g = G::new(8);
    g.input("x", &[1, 2, 5, 5])
        .rand_init("w", &[3, 2, 3, 3])
        .rand_init("bias", &[3]);
    g.node("Conv", &["x", "w", "bias"], &["t"], vec![]);
    bn(&mut g, "bn", "t", "y", 3, 45);
    check_rules(&g.output("y").build(), &[CONV], 1);
}

#[test]
fn conv1d_and_conv3d_bn_fold() {
    let mut g = G::new(13);
    g.input("x", &[2, 3, 9]).rand_init("w", &[4, 3, 3]);
    g.node("Conv", &["x", "w"], &["t"], vec![]);
    bn(&mut g, "bn", "t", "y", 4, 47);
    check_rules(&g.output("y").build(), &[CONV], 1);
    let mut g = G::new(13);
    g.input("x", &[1, 2, 4, 4, 4])
        .rand_init("w", &[3, 2, 2, 2, 2])
        .rand_init("bias", &[3]);
    g.node("Conv", &["x", "w", "bias"], &["t"], vec![]);
    bn(&mut g, "bn", "t", "y", 3, 49);
    check_rules(&g.output("y").build(), &[CONV], 1);
}

// ---------------------------------------------------------------------------
// fold-batchnorm-into-convtranspose

fn convt_bn(c: usize, mg: usize, group: usize, bias: bool, attrs: Vec<(&str, Attribute)>) -> Model {
    let mut g = G::new(13);
    let m = mg * group;
    g.input("x", &[2, c, 4, 5]).rand_init("w", &[c, mg, 3, 3]);
    let mut ins = vec!["x", "w"];
    if bias {
        g.rand_init("bias", &[m]);
        ins.push("bias");
    }
    let mut attrs = attrs;
    attrs.push(("group", int(group as i64)));
    g.node("ConvTranspose", &ins, &["t"], attrs);
    bn(&mut g, "bn", "t", "y", m, 51);
    g.output("y").build()
}

#[test]
fn convtranspose_group2_bn_folds() {
    // W [4, 3, 3, 3] with group 2: 6 output channels, 3 per group.
    let m = convt_bn(
        4,
        3,
        2,
        true,
        vec![("strides", ints(&[2, 2])), ("output_padding", ints(&[1, 0]))],
    );
    let (opt, _) = check_rules(&m, &[CONVT], 1);
    assert_eq!(ops(&opt), vec!["ConvTranspose"]);
    // group 2 without bias, with pads.
    let m = convt_bn(2, 2, 2, false, vec![("pads", ints(&[1, 0, 1, 1]))]);
    check_rules(&m, &[CONVT], 1);
}

#[test]
fn convtranspose_group1_and_output_shape_fold() {
    check_rules(&convt_bn(3, 5, 1, true, vec![]), &[CONVT], 1);
    // output_shape larger than the full output: the bias margin folds too.
    let m = convt_bn(
        3,
        2,
        1,
        false,
        vec![("strides", ints(&[2, 2])), ("output_shape", ints(&[11, 12]))],
    );
    check_rules(&m, &[CONVT], 1);
}

#[test]
fn convtranspose_rule_ignores_conv_and_vice_versa() {
    check_rules(&convt_bn(3, 5, 1, true, vec![]), &[CONV], 0);
    check_rules(&conv_bn(3, 4, 1, true), &[CONVT], 0);
}

// ---------------------------------------------------------------------------
// fold-batchnorm-into-gemm

/// Gemm of A `[3, 5]` and B (`[5, 4]`, or `[4, 5]` with transB) plus C of
/// `c_dims` (none if `None`), then BN over the 4 columns.
fn gemm_bn(trans_b: bool, c_dims: Option<&[usize]>, attrs: Vec<(&str, Attribute)>) -> Model {
    let mut g = G::new(13);
    g.input("a", &[3, 5]);
    g.rand_init("b", if trans_b { &[4, 5] } else { &[5, 4] });
    let mut ins = vec!["a", "b"];
    if let Some(d) = c_dims {
        g.rand_init("c", d);
        ins.push("c");
    }
    let mut attrs = attrs;
    attrs.push(("transB", int(trans_b as i64)));
    g.node("Gemm", &ins, &["t"], attrs);
    bn(&mut g, "bn", "t", "y", 4, 61);
    g.output("y").build()
}

#[test]
fn gemm_bn_folds() {
    for trans_b in [false, true] {
        for c in [
            None,
            Some(&[4][..]),
            Some(&[1, 4][..]),
            Some(&[][..]),
            Some(&[1][..]),
        ] {
            let m = gemm_bn(trans_b, c, vec![("alpha", float(0.7)), ("beta", float(-1.5))]);
            let (opt, _) = check_rules(&m, &[GEMM], 1);
            let g = &opt.graph.nodes[0];
            assert_eq!(g.op_type, "Gemm");
            assert_eq!(opt.graph.initializers[&g.inputs[2]].shape(), &[4], "C {c:?}");
        }
    }
}

#[test]
fn gemm_bn_with_per_row_bias_does_not_fold() {
    check_rules(&gemm_bn(false, Some(&[3, 4]), vec![]), &ALL[..4], 0);
    check_rules(&gemm_bn(true, Some(&[3, 1]), vec![]), &ALL[..4], 0);
}

#[test]
fn gemm_bn_with_transposed_a_folds() {
    let mut g = G::new(11);
    g.input("a", &[5, 2]).rand_init("b", &[5, 3]);
    g.node("Gemm", &["a", "b"], &["t"], vec![("transA", int(1))]);
    bn(&mut g, "bn", "t", "y", 3, 63);
    check_rules(&g.output("y").build(), &[GEMM], 1);
}

// ---------------------------------------------------------------------------
// fold-batchnorm-into-matmul

#[test]
fn matmul_2d_bn_becomes_gemm() {
    let mut g = G::new(13);
    g.input("a", &[3, 5]).rand_init("b", &[5, 4]);
    g.node("MatMul", &["a", "b"], &["t"], vec![]);
    bn(&mut g, "bn", "t", "y", 4, 71);
    let m = g.output("y").build();
    let (opt, _) = check_rules(&m, &[MATMUL], 1);
    assert_eq!(ops(&opt), vec!["Gemm"]);
    assert_eq!(opt.graph.nodes[0].outputs, vec!["y"]);
}

#[test]
fn matmul_3d_bn_does_not_fold() {
    // Output [2, 4, 4]: BN normalizes axis 1 (rows), not MatMul's N axis.
    let mut g = G::new(13);
    g.input("a", &[2, 4, 5]).rand_init("b", &[5, 4]);
    g.node("MatMul", &["a", "b"], &["t"], vec![]);
    bn(&mut g, "bn", "t", "y", 4, 73);
    check_rules(&g.output("y").build(), &ALL[..4], 0);
}

#[test]
fn matmul_with_non_constant_b_does_not_fold() {
    let mut g = G::new(13);
    g.input("a", &[3, 5]).input("b", &[5, 4]);
    g.node("MatMul", &["a", "b"], &["t"], vec![]);
    bn(&mut g, "bn", "t", "y", 4, 75);
    check_rules(&g.output("y").build(), &ALL[..4], 0);
}

// ---------------------------------------------------------------------------
// batchnorm-to-scale-shift

#[test]
fn lone_bn_becomes_mul_add() {
    for dims in [
        &[2, 3][..],
        &[2, 3, 5][..],
        &[2, 3, 4, 4][..],
        &[1, 3, 2, 2, 2][..],
    ] {
        let mut g = G::new(13);
        g.input("x", dims);
        g.node("Relu", &["x"], &["r"], vec![]);
        bn(&mut g, "bn", "r", "y", 3, 81);
        let m = g.output("y").build();
        let opt = check_grow(&m, &ALL, 1);
        assert_eq!(ops(&opt), vec!["Relu", "Mul", "Add"]);
        let s = &opt.graph.initializers[&opt.graph.nodes[1].inputs[1]];
        let mut want = vec![3];
        want.resize(dims.len() - 1, 1);
        assert_eq!(s.shape(), &want[..]);
    }
}

#[test]
fn bn_on_graph_input_becomes_mul_add() {
    let mut g = G::new(9);
    g.input("x", &[2, 4, 3, 3]);
    bn(&mut g, "bn", "x", "y", 4, 83);
    check_grow(&g.output("y").build(), &[SCALE_SHIFT], 1);
}

#[test]
fn scale_shift_leaves_foldable_bn_to_the_folds() {
    check_rules(&conv_bn(3, 4, 1, true), &[SCALE_SHIFT], 0);
    let (opt, rep) = check_rules(&conv_bn(3, 4, 1, true), &ALL, 1);
    assert_eq!(rep.applied().len(), 1, "{:?}", rep.applied());
    assert_eq!(ops(&opt), vec!["Conv"]);
}

#[test]
fn scale_shift_after_unfoldable_conv() {
    // The Conv output is also a graph output: no fold, but scale-shift applies.
    let mut g = G::new(13);
    g.input("x", &[1, 3, 6, 6]).rand_init("w", &[4, 3, 3, 3]);
    g.node("Conv", &["x", "w"], &["t"], vec![]);
    bn(&mut g, "bn", "t", "y", 4, 85);
    let m = g.output("y").output("t").build();
    let opt = check_grow(&m, &ALL, 1);
    assert_eq!(ops(&opt), vec!["Conv", "Mul", "Add"]);
}

#[test]
fn scale_shift_needs_constant_statistics() {
    let mut g = G::new(13);
    g.input("x", &[1, 3, 6, 6]).input("bn_scale", &[3]);
    g.rand_init("bn_b", &[3])
        .init("bn_mean", mean_tensor(3, 7))
        .init("bn_var", var_tensor(3, 8));
    bn_node(&mut g, "bn", "x", "y");
    check_rules(&g.output("y").build(), &[SCALE_SHIFT], 0);
}
