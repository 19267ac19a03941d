//! Cleanup rules: each one fires where it should (outputs unchanged, node
//! count dropped as expected) and does not fire where it must not.

mod common;

use common::*;
use kiln_ir::{Attribute, Model, Tensor};
use kiln_opt::{optimize, Report};

fn i64s(v: &[i64]) -> Tensor {
    Tensor::from_vec(vec![v.len()], v.to_vec()).unwrap()
}

/// Optimizes with `rules`, checks the outputs are unchanged and the node
/// count too (for rules that only touch initializers).
fn check_inits(m: &Model, rules: &[&str]) -> (Model, Report) {
    let inputs = rand_inputs(m);
    let before = run(m, &inputs);
    let mut opt = m.clone();
    let rep = optimize(&mut opt, &only(rules)).unwrap_or_else(|e| panic!("{e}"));
    assert_close(&run(&opt, &inputs), &before, 1e-5);
    assert_eq!(opt.graph.nodes.len(), m.graph.nodes.len());
    (opt, rep)
}

// ---------------------------------------------------------------------------
// eliminate-identity

#[test]
fn identity_between_nodes_is_removed() {
    let m = G::new(13)
        .input("x", &[2, 3])
        .node("Relu", &["x"], &["a"], vec![])
        .node("Identity", &["a"], &["b"], vec![])
        .node("Neg", &["b"], &["y"], vec![])
        .output("y")
        .build();
    let (opt, rep) = check_rules(&m, &["eliminate-identity"], 1);
    assert_eq!(rep.applied()["eliminate-identity"], 1);
    assert_eq!(opt.graph.nodes[1].inputs, vec!["a".to_string()]);
}

#[test]
fn identity_to_graph_output_renames_the_producer() {
    let m = G::new(13)
        .input("x", &[2, 3])
        .node("Relu", &["x"], &["a"], vec![])
        .node("Identity", &["a"], &["y"], vec![])
        .output("y")
        .build();
    let (opt, _) = check_rules(&m, &["eliminate-identity"], 1);
    assert_eq!(opt.graph.nodes[0].outputs, vec!["y".to_string()]);
}

#[test]
fn identity_from_graph_input_to_graph_output_stays() {
    let m = G::new(13)
        .input("x", &[2, 3])
        .node("Identity", &["x"], &["y"], vec![])
        .output("y")
        .build();
    check_rules(&m, &["eliminate-identity"], 0);
}

#[test]
fn identity_whose_input_is_also_read_elsewhere_and_output_is_graph_output_stays() {
    let m = G::new(13)
        .input("x", &[2, 3])
        .node("Relu", &["x"], &["a"], vec![])
        .node("Identity", &["a"], &["y"], vec![])
        .node("Neg", &["a"], &["z"], vec![])
        .output("y")
        .output("z")
        .build();
    check_rules(&m, &["eliminate-identity"], 0);
}

// ---------------------------------------------------------------------------
// eliminate-dropout

#[test]
fn dropout_is_removed() {
    let m = G::new(13)
        .input("x", &[2, 3])
        .node("Dropout", &["x"], &["a"], vec![])
        .node("Relu", &["a"], &["y"], vec![])
        .output("y")
        .build();
    check_rules(&m, &["eliminate-dropout"], 1);
}

#[test]
fn dropout_with_unused_mask_and_false_training_mode_is_removed() {
    let m = G::new(13)
        .input("x", &[2, 3])
        .init("ratio", Tensor::scalar(0.5f32))
        .init("tm", Tensor::scalar(false))
        .node("Dropout", &["x", "ratio", "tm"], &["a", "mask"], vec![])
        .node("Relu", &["a"], &["y"], vec![])
        .output("y")
        .build();
    check_rules(&m, &["eliminate-dropout"], 1);
}

#[test]
fn dropout_at_old_opset_is_removed() {
    let m = G::new(9)
        .input("x", &[2, 3])
        .node("Dropout", &["x"], &["a"], vec![("ratio", float(0.3))])
        .node("Relu", &["a"], &["y"], vec![])
        .output("y")
        .build();
    check_rules(&m, &["eliminate-dropout"], 1);
}

#[test]
fn dropout_whose_mask_is_used_stays() {
    let m = G::new(13)
        .input("x", &[2, 3])
        .node("Dropout", &["x"], &["a", "mask"], vec![])
        .node("Relu", &["a"], &["y"], vec![])
        .node("Cast", &["mask"], &["m"], vec![("to", int(1))])
        .output("y")
        .output("m")
        .build();
    check_rules(&m, &["eliminate-dropout"], 0);
}

#[test]
fn dropout_whose_mask_is_a_graph_output_stays() {
    let m = G::new(13)
        .input("x", &[2, 3])
        .node("Dropout", &["x"], &["a", "mask"], vec![])
        .node("Relu", &["a"], &["y"], vec![])
        .output("y")
        .output("mask")
        .build();
    check_rules(&m, &["eliminate-dropout"], 0);
}

// ---------------------------------------------------------------------------
// remove-noop-reshape

#[test]
fn noop_reshape_flatten_squeeze_are_removed() {
    let m = G::new(13)
        .input("x", &[2, 3])
        .init("s", i64s(&[2, -1]))
        .node("Relu", &["x"], &["a"], vec![])
        .node("Reshape", &["a", "s"], &["b"], vec![])
        .node("Flatten", &["b"], &["c"], vec![("axis", int(1))])
        .node("Squeeze", &["c"], &["d"], vec![])
        .node("Neg", &["d"], &["y"], vec![])
        .output("y")
        .build();
    let (opt, rep) = check_rules(&m, &["remove-noop-reshape"], 3);
    assert_eq!(rep.applied()["remove-noop-reshape"], 3);
    assert_eq!(opt.graph.nodes[1].inputs, vec!["a".to_string()]);
}

#[test]
fn noop_unsqueeze_squeeze_pair_is_not_a_noop_reshape() {
    // Each changes the shape; only their composition is a no-op.
    let m = G::new(13)
        .input("x", &[2, 3])
        .init("ax", i64s(&[0]))
        .node("Unsqueeze", &["x", "ax"], &["a"], vec![])
        .node("Squeeze", &["a", "ax"], &["b"], vec![])
        .node("Relu", &["b"], &["y"], vec![])
        .output("y")
        .build();
    check_rules(&m, &["remove-noop-reshape"], 0);
}

#[test]
fn reshape_that_changes_the_shape_stays() {
    let m = G::new(13)
        .input("x", &[2, 3])
        .init("s", i64s(&[3, 2]))
        .node("Reshape", &["x", "s"], &["a"], vec![])
        .node("Relu", &["a"], &["y"], vec![])
        .output("y")
        .build();
    check_rules(&m, &["remove-noop-reshape"], 0);
}

// ---------------------------------------------------------------------------
// remove-noop-transpose, cancel-transpose-pair

#[test]
fn identity_transpose_is_removed() {
    let m = G::new(13)
        .input("x", &[2, 3])
        .input("v", &[5])
        .node("Transpose", &["x"], &["a"], vec![("perm", ints(&[0, 1]))])
        .node("Relu", &["a"], &["y"], vec![])
        .node("Transpose", &["v"], &["b"], vec![])
        .node("Relu", &["b"], &["z"], vec![])
        .output("y")
        .output("z")
        .build();
    check_rules(&m, &["remove-noop-transpose"], 2);
}

#[test]
fn real_transpose_stays() {
    let m = G::new(13)
        .input("x", &[2, 3])
        .node("Transpose", &["x"], &["a"], vec![("perm", ints(&[1, 0]))])
        .node("Transpose", &["x"], &["b"], vec![])
        .node("Add", &["a", "b"], &["y"], vec![])
        .output("y")
        .build();
    check_rules(&m, &["remove-noop-transpose"], 0);
}

#[test]
fn transpose_pair_cancels() {
    let m = G::new(13)
        .input("x", &[2, 3, 4])
        .node("Transpose", &["x"], &["a"], vec![("perm", ints(&[1, 2, 0]))])
        .node("Transpose", &["a"], &["b"], vec![("perm", ints(&[2, 0, 1]))])
        .node("Relu", &["b"], &["y"], vec![])
        .output("y")
        .build();
    let (opt, _) = check_rules(&m, &["cancel-transpose-pair"], 2);
    assert_eq!(opt.graph.nodes[0].inputs, vec!["x".to_string()]);
}

#[test]
fn transpose_pair_not_cancelling_is_composed() {
    let m = G::new(13)
        .input("x", &[2, 3, 4])
        .node("Transpose", &["x"], &["a"], vec![("perm", ints(&[1, 0, 2]))])
        .node("Transpose", &["a"], &["b"], vec![("perm", ints(&[0, 2, 1]))])
        .node("Relu", &["b"], &["y"], vec![])
        .output("y")
        .build();
    let (opt, _) = check_rules(&m, &["cancel-transpose-pair"], 1);
    let t = &opt.graph.nodes[0];
    assert_eq!(t.op_type, "Transpose");
    assert_eq!(t.attrs["perm"], Attribute::Ints(vec![1, 2, 0]));
}

#[test]
fn transpose_pair_with_default_perms_on_rank_2_cancels() {
    let m = G::new(13)
        .input("x", &[2, 3])
        .node("Relu", &["x"], &["r"], vec![])
        .node("Transpose", &["r"], &["a"], vec![])
        .node("Transpose", &["a"], &["y"], vec![])
        .output("y")
        .build();
    // The outer output is a graph output: composed into an identity
    // Transpose, which remove-noop-transpose then bypasses into the Relu.
    check_rules(&m, &["cancel-transpose-pair"], 1);
    let (opt, _) = check_rules(&m, &["cancel-transpose-pair", "remove-noop-transpose"], 2);
    assert_eq!(opt.graph.nodes[0].outputs, vec!["y".to_string()]);
}

#[test]
fn transpose_pair_whose_middle_is_read_elsewhere_stays() {
    let m = G::new(13)
        .input("x", &[2, 3, 4])
        .node("Transpose", &["x"], &["a"], vec![("perm", ints(&[1, 2, 0]))])
        .node("Transpose", &["a"], &["b"], vec![("perm", ints(&[2, 0, 1]))])
        .node("Relu", &["b"], &["y"], vec![])
        .node("Neg", &["a"], &["z"], vec![])
        .output("y")
        .output("z")
        .build();
    check_rules(&m, &["cancel-transpose-pair"], 0);
}

// ---------------------------------------------------------------------------
// remove-noop-cast

#[test]
fn cast_to_own_type_is_removed() {
    let m = G::new(13)
        .input("x", &[2, 3])
        .node("Cast", &["x"], &["a"], vec![("to", int(1))])
        .node("Relu", &["a"], &["y"], vec![])
        .output("y")
        .build();
    check_rules(&m, &["remove-noop-cast"], 1);
}

#[test]
fn cast_to_another_type_stays() {
    let m = G::new(13)
        .input("x", &[2, 3])
        .node("Cast", &["x"], &["a"], vec![("to", int(6))])
        .node("Cast", &["a"], &["y"], vec![("to", int(1))])
        .output("y")
        .build();
    check_rules(&m, &["remove-noop-cast"], 0);
}

// ---------------------------------------------------------------------------
// remove-noop-pad

#[test]
fn zero_pad_is_removed() {
    let m = G::new(13)
        .input("x", &[2, 3])
        .init("pads", i64s(&[0, 0, 0, 0]))
        .node("Pad", &["x", "pads"], &["a"], vec![])
        .node("Relu", &["a"], &["y"], vec![])
        .output("y")
        .build();
    check_rules(&m, &["remove-noop-pad"], 1);
}

#[test]
fn zero_pad_attribute_at_opset_10_is_removed() {
    let m = G::new(10)
        .input("x", &[2, 3])
        .node(
            "Pad",
            &["x"],
            &["a"],
            vec![
                ("pads", ints(&[0, 0, 0, 0])),
                ("mode", Attribute::String(b"reflect".to_vec())),
            ],
        )
        .node("Relu", &["a"], &["y"], vec![])
        .output("y")
        .build();
    check_rules(&m, &["remove-noop-pad"], 1);
}

#[test]
fn nonzero_or_dynamic_pad_stays() {
    let m = G::new(13)
        .input("x", &[2, 3])
        .init("pads", i64s(&[0, 1, 0, 0]))
        .node("Pad", &["x", "pads"], &["a"], vec![])
        .node("Relu", &["a"], &["y"], vec![])
        .output("y")
        .build();
    check_rules(&m, &["remove-noop-pad"], 0);
}

// ---------------------------------------------------------------------------
// eliminate-common-subexpression

#[test]
fn cse_merges_identical_nodes() {
    let m = G::new(13)
        .input("x", &[2, 3])
        .node("LeakyRelu", &["x"], &["a"], vec![("alpha", float(0.1))])
        .node("LeakyRelu", &["x"], &["b"], vec![("alpha", float(0.1))])
        .node("Add", &["a", "b"], &["y"], vec![])
        .output("y")
        .build();
    let (opt, rep) = check_rules(&m, &["eliminate-common-subexpression"], 1);
    assert_eq!(rep.applied()["eliminate-common-subexpression"], 1);
    assert_eq!(opt.graph.nodes[1].inputs, vec!["a".to_string(), "a".to_string()]);
}

#[test]
fn cse_cascades_through_chains() {
    let m = G::new(13)
        .input("x", &[2, 3])
        .node("Relu", &["x"], &["a1"], vec![])
        .node("Neg", &["a1"], &["b1"], vec![])
        .node("Relu", &["x"], &["a2"], vec![])
        .node("Neg", &["a2"], &["b2"], vec![])
        .node("Sub", &["b1", "b2"], &["y"], vec![])
        .output("y")
        .build();
    check_rules(&m, &["eliminate-common-subexpression"], 2);
}

#[test]
fn cse_with_different_attributes_or_inputs_stays() {
    let m = G::new(13)
        .input("x", &[2, 3])
        .input("z", &[2, 3])
        .node("LeakyRelu", &["x"], &["a"], vec![("alpha", float(0.1))])
        .node("LeakyRelu", &["x"], &["b"], vec![("alpha", float(0.2))])
        .node("Sub", &["x", "z"], &["c"], vec![])
        .node("Sub", &["z", "x"], &["d"], vec![])
        .node("Add", &["a", "b"], &["e"], vec![])
        .node("Add", &["c", "d"], &["f"], vec![])
        .node("Mul", &["e", "f"], &["y"], vec![])
        .output("y")
        .build();
    check_rules(&m, &["eliminate-common-subexpression"], 0);
}

#[test]
fn cse_keeps_a_graph_output_name() {
    let m = G::new(13)
        .input("x", &[2, 3])
        .node("Relu", &["x"], &["a"], vec![])
        .node("Neg", &["a"], &["y"], vec![])
        .node("Relu", &["x"], &["z"], vec![])
        .output("y")
        .output("z")
        .build();
    let (opt, _) = check_rules(&m, &["eliminate-common-subexpression"], 1);
    assert_eq!(opt.graph.nodes[0].outputs, vec!["z".to_string()]);
    assert_eq!(opt.graph.nodes[1].inputs, vec!["z".to_string()]);
}

#[test]
fn cse_of_two_graph_outputs_stays() {
    let m = G::new(13)
        .input("x", &[2, 3])
        .node("Relu", &["x"], &["y"], vec![])
        .node("Relu", &["x"], &["z"], vec![])
        .output("y")
        .output("z")
        .build();
    check_rules(&m, &["eliminate-common-subexpression"], 0);
}

// ---------------------------------------------------------------------------
// merge-duplicate-initializers

#[test]
fn identical_initializers_are_merged() {
    let m = G::new(13)
        .input("x", &[2, 3])
        .init("w1", rand(&[3], 5))
        .init("w2", rand(&[3], 5))
        .init("w3", rand(&[3], 6))
        .node("Add", &["x", "w1"], &["a"], vec![])
        .node("Mul", &["a", "w2"], &["b"], vec![])
        .node("Sub", &["b", "w3"], &["y"], vec![])
        .output("y")
        .build();
    let (opt, rep) = check_inits(&m, &["merge-duplicate-initializers"]);
    assert_eq!(rep.applied()["merge-duplicate-initializers"], 1);
    assert!(!opt.graph.initializers.contains_key("w2"));
    assert_eq!(opt.graph.initializers.len(), 2);
    assert_eq!(opt.graph.nodes[1].inputs, vec!["a".to_string(), "w1".to_string()]);
}

#[test]
fn initializers_with_equal_bytes_but_different_dtype_or_shape_are_not_merged() {
    let f = Tensor::from_vec(vec![2, 2], vec![1.0f32, 2.0, -3.0, 0.5]).unwrap();
    let bits: Vec<i32> = f
        .as_slice::<f32>()
        .unwrap()
        .iter()
        .map(|v| v.to_bits() as i32)
        .collect();
    let i = Tensor::from_vec(vec![2, 2], bits).unwrap();
    let flat = f.clone().reshape(vec![4]).unwrap();
    let m = G::new(13)
        .input("x", &[2, 2])
        .input("v", &[4])
        .init("wf", f)
        .init("wi", i)
        .init("wflat", flat)
        .init("pz", Tensor::from_vec(vec![1], vec![0.0f32]).unwrap())
        .init("nz", Tensor::from_vec(vec![1], vec![-0.0f32]).unwrap())
        .node("Add", &["x", "wf"], &["a"], vec![])
        .node("Cast", &["wi"], &["wic"], vec![("to", int(1))])
        .node("Div", &["a", "wic"], &["b"], vec![])
        .node("Add", &["v", "wflat"], &["c"], vec![])
        .node("Add", &["b", "pz"], &["y"], vec![])
        .node("Add", &["c", "nz"], &["z"], vec![])
        .output("y")
        .output("z")
        .build();
    let mut opt = m.clone();
    let rep = optimize(&mut opt, &only(&["merge-duplicate-initializers"])).unwrap();
    assert!(rep.applied().is_empty(), "{:?}", rep.applied());
    assert_eq!(opt.graph.initializers.len(), 5);
}

#[test]
fn initializer_with_a_graph_input_default_is_not_merged() {
    let w = rand(&[3], 9);
    let m = G::new(13)
        .input("x", &[2, 3])
        .input("w1", &[3])
        .init("w1", w.clone())
        .init("w2", w)
        .node("Add", &["x", "w1"], &["a"], vec![])
        .node("Mul", &["a", "w2"], &["y"], vec![])
        .output("y")
        .build();
    check_rules(&m, &["merge-duplicate-initializers"], 0);
}

// ---------------------------------------------------------------------------
// remove-dead-nodes, remove-unused-initializers

#[test]
fn dead_nodes_are_removed_one_by_one() {
    let m = G::new(13)
        .input("x", &[2, 3])
        .rand_init("w", &[3])
        .node("Relu", &["x"], &["y"], vec![])
        .node("Add", &["x", "w"], &["d1"], vec![])
        .node("Neg", &["d1"], &["d2"], vec![])
        .output("y")
        .build();
    let (opt, rep) = check_rules(&m, &["remove-dead-nodes"], 2);
    assert_eq!(rep.applied()["remove-dead-nodes"], 2);
    assert!(
        opt.graph.initializers.contains_key("w"),
        "initializers are another rule's job"
    );
    let (opt, rep) = check_rules(&m, &["remove-dead-nodes", "remove-unused-initializers"], 2);
    assert_eq!(rep.applied()["remove-unused-initializers"], 1);
    assert!(opt.graph.initializers.is_empty());
}

#[test]
fn live_nodes_stay() {
    let m = G::new(13)
        .input("x", &[2, 3])
        .rand_init("w", &[3])
        .node("Dropout", &["x"], &["a", "mask"], vec![])
        .node("Add", &["a", "w"], &["y"], vec![])
        .output("y")
        .build();
    check_rules(&m, &["remove-dead-nodes", "remove-unused-initializers"], 0);
}

#[test]
fn unused_initializers_are_removed_but_not_input_defaults() {
    let m = G::new(13)
        .input("x", &[2, 3])
        .input("dflt", &[3])
        .rand_init("w", &[3])
        .rand_init("u1", &[4])
        .rand_init("u2", &[5])
        .rand_init("dflt", &[3])
        .node("Add", &["x", "w"], &["y"], vec![])
        .output("y")
        .build();
    let (opt, rep) = check_inits(&m, &["remove-unused-initializers"]);
    assert_eq!(rep.applied()["remove-unused-initializers"], 1);
    let names: Vec<&str> = opt.graph.initializers.keys().map(|s| s.as_str()).collect();
    assert_eq!(names, vec!["dflt", "w"]);
}
