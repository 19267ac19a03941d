//! Constant rules: Constant to initializer, constant folding, Shape folding,
//! and the Shape -> Gather -> Concat -> Reshape chain.

mod common;

use common::*;
use kiln_ir::{Attribute, DType, Dim, Tensor, ValueType};
use kiln_opt::optimize;

fn i64s(v: &[i64]) -> Tensor {
    Tensor::from_vec(vec![v.len()], v.to_vec()).unwrap()
}

// ---------------------------------------------------------------------------
// constant-to-initializer

#[test]
fn constant_node_becomes_an_initializer() {
    let c = rand(&[3], 4);
    let m = G::new(13)
        .input("x", &[2, 3])
        .node(
            "Constant",
            &[],
            &["c"],
            vec![("value", Attribute::Tensor(c.clone()))],
        )
        .node("Add", &["x", "c"], &["y"], vec![])
        .output("y")
        .build();
    let (opt, _) = check_rules(&m, &["constant-to-initializer"], 1);
    assert_eq!(opt.graph.initializers["c"], c);
    assert_eq!(opt.graph.nodes[0].inputs, vec!["x".to_string(), "c".to_string()]);
}

#[test]
fn constant_scalar_attributes_become_initializers() {
    let m = G::new(13)
        .input("x", &[2, 3])
        .node("Constant", &[], &["c"], vec![("value_float", float(2.5))])
        .node("Constant", &[], &["s"], vec![("value_ints", ints(&[3, 2]))])
        .node("Mul", &["x", "c"], &["a"], vec![])
        .node("Reshape", &["a", "s"], &["y"], vec![])
        .output("y")
        .build();
    let (opt, _) = check_rules(&m, &["constant-to-initializer"], 2);
    assert_eq!(opt.graph.initializers["s"], i64s(&[3, 2]));
}

#[test]
fn constant_that_is_a_graph_output_stays() {
    let m = G::new(13)
        .input("x", &[2, 3])
        .node(
            "Constant",
            &[],
            &["c"],
            vec![("value", Attribute::Tensor(rand(&[3], 4)))],
        )
        .node("Relu", &["x"], &["y"], vec![])
        .output("y")
        .output("c")
        .build();
    check_rules(&m, &["constant-to-initializer"], 0);
}

// ---------------------------------------------------------------------------
// fold-constants

#[test]
fn all_constant_node_is_folded() {
    let m = G::new(13)
        .input("x", &[2, 3])
        .rand_init("a", &[3])
        .rand_init("b", &[3])
        .node("Add", &["a", "b"], &["c"], vec![])
        .node("Exp", &["c"], &["d"], vec![])
        .node("Mul", &["x", "d"], &["y"], vec![])
        .output("y")
        .build();
    let (opt, rep) = check_rules(&m, &["fold-constants"], 2);
    assert_eq!(rep.applied()["fold-constants"], 2);
    assert!(opt.graph.initializers.contains_key("d"));
    assert_eq!(opt.graph.nodes.len(), 1);
}

#[test]
fn multi_output_node_with_omitted_optional_input_is_folded() {
    let m = G::new(13)
        .input("x", &[2, 2])
        .rand_init("w", &[2, 4])
        .node("Split", &["w", ""], &["p", "q"], vec![("axis", int(1))])
        .node("Add", &["x", "p"], &["a"], vec![])
        .node("Sub", &["a", "q"], &["y"], vec![])
        .output("y")
        .build();
    let (opt, _) = check_rules(&m, &["fold-constants"], 1);
    assert_eq!(opt.graph.initializers["p"].shape(), &[2, 2]);
    assert_eq!(opt.graph.initializers["q"].shape(), &[2, 2]);
}

#[test]
fn node_with_a_non_constant_input_is_not_folded() {
    let m = G::new(13)
        .input("x", &[2, 3])
        .rand_init("a", &[3])
        .node("Add", &["x", "a"], &["c"], vec![])
        .node("Relu", &["c"], &["y"], vec![])
        .output("y")
        .build();
    check_rules(&m, &["fold-constants"], 0);
}

#[test]
fn input_with_an_initializer_default_is_not_a_constant() {
    let m = G::new(13)
        .input("x", &[2, 3])
        .input("a", &[3])
        .rand_init("a", &[3])
        .rand_init("b", &[3])
        .node("Add", &["a", "b"], &["c"], vec![])
        .node("Mul", &["x", "c"], &["y"], vec![])
        .output("y")
        .build();
    check_rules(&m, &["fold-constants"], 0);
}

#[test]
fn constant_node_feeding_a_graph_output_is_not_folded() {
    let m = G::new(13)
        .input("x", &[2, 3])
        .rand_init("a", &[3])
        .node("Neg", &["a"], &["z"], vec![])
        .node("Relu", &["x"], &["y"], vec![])
        .output("y")
        .output("z")
        .build();
    check_rules(&m, &["fold-constants"], 0);
}

#[test]
fn huge_fold_is_refused() {
    // Expand of one element to 2048 x 2049 > 2^22 elements.
    let m = G::new(13)
        .input("x", &[1])
        .init("one", Tensor::from_vec(vec![1], vec![1.0f32]).unwrap())
        .init("shape", i64s(&[2048, 2049]))
        .init("axes", i64s(&[0, 1]))
        .node("Expand", &["one", "shape"], &["e"], vec![])
        .node("ReduceSum", &["e", "axes"], &["s"], vec![("keepdims", int(0))])
        .node("Add", &["x", "s"], &["y"], vec![])
        .output("y")
        .build();
    check_rules(&m, &["fold-constants"], 0);
}

// ---------------------------------------------------------------------------
// fold-shape

#[test]
fn shape_of_static_dims_is_folded() {
    let m = G::new(13)
        .input("x", &[2, 3, 4])
        .input("z", &[24])
        .node("Shape", &["x"], &["s"], vec![])
        .node("Reshape", &["z", "s"], &["y"], vec![])
        .output("y")
        .build();
    let (opt, _) = check_rules(&m, &["fold-shape"], 1);
    assert_eq!(opt.graph.initializers["s"], i64s(&[2, 3, 4]));
}

#[test]
fn shape_start_end_are_respected_at_opset_15() {
    let m = G::new(15)
        .input("x", &[2, 3, 4])
        .input("z", &[24])
        .init("m1", i64s(&[-1]))
        .init("four", i64s(&[4]))
        .node("Shape", &["x"], &["s"], vec![("start", int(1))])
        .node(
            "Shape",
            &["x"],
            &["t"],
            vec![("start", int(-3)), ("end", int(-1))],
        )
        .node("Concat", &["m1", "s"], &["st"], vec![("axis", int(0))])
        .node("Reshape", &["z", "st"], &["y"], vec![])
        .node("Concat", &["t", "four"], &["u"], vec![("axis", int(0))])
        .node("Reshape", &["z", "u"], &["v"], vec![])
        .output("y")
        .output("v")
        .build();
    let (opt, _) = check_rules(&m, &["fold-shape"], 2);
    assert_eq!(opt.graph.initializers["s"], i64s(&[3, 4]));
    assert_eq!(opt.graph.initializers["t"], i64s(&[2, 3]));
}

#[test]
fn shape_of_a_symbolic_dim_is_not_folded() {
    let mut m = G::new(13)
        .input("x", &[5, 3])
        .init("one", i64s(&[1]))
        .node("Shape", &["x"], &["s"], vec![])
        .node("Concat", &["s", "one"], &["t"], vec![("axis", int(0))])
        .node("Reshape", &["x", "t"], &["y"], vec![])
        .output("y")
        .build();
    m.graph.inputs[0].ty = ValueType::new(DType::F32, vec![Dim::Sym("N".into()), Dim::Known(3)]);
    for o in &mut m.graph.outputs {
        o.ty = ValueType::unknown_rank(DType::F32);
    }
    kiln_ir::infer::infer_types(&mut m).unwrap();
    let mut opt = m.clone();
    let rep = optimize(&mut opt, &only(&["fold-shape", "fold-constants"])).unwrap();
    assert!(rep.applied().is_empty(), "{:?}", rep.applied());
    assert_eq!(opt.graph.nodes.len(), 3);
    for n in [2usize, 7] {
        let x = rand(&[n, 3], n as u64);
        let before = run(&m, std::slice::from_ref(&x));
        let after = run(&opt, std::slice::from_ref(&x));
        assert_eq!(before[0].shape(), &[n, 3, 1]);
        assert_close(&after, &before, 0.0);
    }
}

#[test]
fn shape_of_the_static_dims_of_a_partly_symbolic_shape_is_folded() {
    // Opset 15 `end` reads only the static prefix of [5, W].
    let mut m = G::new(15)
        .input("x", &[5, 3])
        .node("Shape", &["x"], &["s"], vec![("end", int(1))])
        .node("Shape", &["x"], &["t"], vec![("start", int(1))])
        .node("Concat", &["s", "t"], &["st"], vec![("axis", int(0))])
        .node("Reshape", &["x", "st"], &["y"], vec![])
        .output("y")
        .build();
    m.graph.inputs[0].ty = ValueType::new(DType::F32, vec![Dim::Known(5), Dim::Sym("W".into())]);
    for o in &mut m.graph.outputs {
        o.ty = ValueType::unknown_rank(DType::F32);
    }
    kiln_ir::infer::infer_types(&mut m).unwrap();
    let mut opt = m.clone();
    let rep = optimize(&mut opt, &only(&["fold-shape"])).unwrap();
    assert_eq!(rep.applied()["fold-shape"], 1);
    assert_eq!(opt.graph.initializers["s"], i64s(&[5]));
    assert_eq!(opt.graph.nodes.len(), 3);
    let x = rand(&[5, 6], 3);
    assert_close(
        &run(&opt, std::slice::from_ref(&x)),
        &run(&m, std::slice::from_ref(&x)),
        0.0,
    );
}

// ---------------------------------------------------------------------------
// The whole chain

#[test]
fn shape_gather_concat_reshape_chain_folds_to_one_reshape() {
    let m = G::new(13)
        .input("x", &[2, 3, 4])
        .init("idx", i64s(&[0]))
        .init("rest", i64s(&[-1]))
        .node("Shape", &["x"], &["s"], vec![])
        .node("Gather", &["s", "idx"], &["g"], vec![("axis", int(0))])
        .node("Concat", &["g", "rest"], &["t"], vec![("axis", int(0))])
        .node("Reshape", &["x", "t"], &["y"], vec![])
        .output("y")
        .build();
    let rules = [
        "fold-shape",
        "fold-constants",
        "remove-dead-nodes",
        "remove-unused-initializers",
    ];
    let (opt, rep) = check_rules(&m, &rules, 3);
    assert_eq!(rep.applied()["fold-shape"], 1);
    assert_eq!(rep.applied()["fold-constants"], 2);
    let r = &opt.graph.nodes[0];
    assert_eq!(r.op_type, "Reshape");
    assert_eq!(r.inputs[0], "x");
    assert_eq!(
        opt.graph.initializers.len(),
        1,
        "{:?}",
        opt.graph.initializers.keys()
    );
    assert_eq!(opt.graph.initializers[&r.inputs[1]], i64s(&[2, -1]));
}

#[test]
fn basic_level_cleans_up_a_mixed_graph_to_a_fixed_point() {
    let m = G::new(13)
        .input("x", &[2, 3, 4])
        .init("idx", i64s(&[0]))
        .node("Constant", &[], &["rest"], vec![("value_ints", ints(&[-1]))])
        .node("Shape", &["x"], &["s"], vec![])
        .node("Gather", &["s", "idx"], &["g"], vec![("axis", int(0))])
        .node("Concat", &["g", "rest"], &["t"], vec![("axis", int(0))])
        .node("Identity", &["x"], &["xi"], vec![])
        .node("Reshape", &["xi", "t"], &["r"], vec![])
        .node("Relu", &["r"], &["a"], vec![])
        .node("Relu", &["r"], &["b"], vec![])
        .node("Add", &["a", "b"], &["sum"], vec![])
        .node("Transpose", &["sum"], &["t1"], vec![("perm", ints(&[1, 0]))])
        .node("Transpose", &["t1"], &["t2"], vec![("perm", ints(&[1, 0]))])
        .node("Dropout", &["t2"], &["y"], vec![])
        .node("Neg", &["x"], &["dead"], vec![])
        .output("y")
        .build();
    let inputs = rand_inputs(&m);
    let before = run(&m, &inputs);
    let mut opt = m.clone();
    let o = kiln_opt::Options {
        level: kiln_opt::Level::Basic,
        ..Default::default()
    };
    let rep = optimize(&mut opt, &o).unwrap();
    assert_close(&run(&opt, &inputs), &before, 1e-5);
    let ops: Vec<&str> = opt.graph.nodes.iter().map(|n| n.op_type.as_str()).collect();
    assert_eq!(ops, vec!["Reshape", "Relu", "Add"], "{:?}", rep.applied());
    assert_eq!(opt.graph.nodes[2].outputs, vec!["y".to_string()]);
    assert_eq!(opt.graph.initializers.len(), 1);
}
