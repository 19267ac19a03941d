//! Property test: random chains of Conv / BatchNormalization / activation /
//! residual Add give the same outputs before and after full optimization.

mod common;
use common::*;
use kiln_ir::Tensor;
use kiln_opt::{optimize, Options};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Block {
    depthwise: bool,
    k3: bool,
    bias: bool,
    bn: bool,
    act: u8,
    residual: bool,
}

fn block() -> impl Strategy<Value = Block> {
    (
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        0u8..8,
        any::<bool>(),
    )
        .prop_map(|(depthwise, k3, bias, bn, act, residual)| Block {
            depthwise,
            k3,
            bias,
            bn,
            act,
            residual,
        })
}

/// Builds the chain on a [1, C, 6, 6] input; every conv keeps C channels and
/// the spatial size (3x3 with pads 1), so residual Adds are always legal.
fn build(blocks: &[Block], c: usize, opset: i64) -> kiln_ir::Model {
    let mut g = G::new(opset);
    g.input("x", &[1, c, 6, 6]);
    let mut cur = "x".to_string();
    for (i, b) in blocks.iter().enumerate() {
        let k = if b.k3 { 3 } else { 1 };
        let group = if b.depthwise { c } else { 1 };
        let (w, bias) = (format!("w{i}"), format!("b{i}"));
        g.rand_init(&w, &[c, c / group, k, k]);
        let mut ins = vec![cur.clone(), w.clone()];
        if b.bias {
            g.rand_init(&bias, &[c]);
            ins.push(bias);
        }
        let conv = format!("conv{i}");
        let p = (k / 2) as i64;
        let ins_ref: Vec<&str> = ins.iter().map(|s| s.as_str()).collect();
        g.node(
            "Conv",
            &ins_ref,
            &[&conv],
            vec![
                ("group", int(group as i64)),
                ("pads", ints(&[p, p, p, p])),
                ("kernel_shape", ints(&[k as i64, k as i64])),
            ],
        );
        let mut y = conv;
        if b.bn {
            let names: Vec<String> = ["s", "t", "m", "v"].iter().map(|n| format!("bn{n}{i}")).collect();
            for n in &names[..3] {
                g.rand_init(n, &[c]);
            }
            let var = rand(&[c], 99 + i as u64);
            let var: Vec<f32> = var
                .as_slice::<f32>()
                .unwrap()
                .iter()
                .map(|v| v.abs() + 0.1)
                .collect();
            g.init(&names[3], Tensor::from_vec(vec![c], var).unwrap());
            let out = format!("bn{i}");
            g.node(
                "BatchNormalization",
                &[&y, &names[0], &names[1], &names[2], &names[3]],
                &[&out],
                vec![("epsilon", float(1e-3))],
            );
            y = out;
        }
        if b.residual {
            let out = format!("add{i}");
            g.node("Add", &[&y, &cur], &[&out], vec![]);
            y = out;
        }
        let out = format!("act{i}");
        match b.act {
            0 => {} // no activation
            1 => {
                g.node("Relu", &[&y], &[&out], vec![]);
            }
            2 => {
                g.init(&format!("lo{i}"), Tensor::scalar(0f32))
                    .init(&format!("hi{i}"), Tensor::scalar(6f32));
                g.node(
                    "Clip",
                    &[&y, &format!("lo{i}"), &format!("hi{i}")],
                    &[&out],
                    vec![],
                );
            }
            3 => {
                g.node("LeakyRelu", &[&y], &[&out], vec![("alpha", float(0.1))]);
            }
            4 => {
                g.node(
                    "HardSigmoid",
                    &[&y],
                    &[&out],
                    vec![("alpha", float(0.2)), ("beta", float(0.5))],
                );
            }
            5 => {
                g.node("HardSwish", &[&y], &[&out], vec![]);
            }
            6 => {
                g.node("Sigmoid", &[&y], &[&out], vec![]);
            }
            _ => {
                let s = format!("sig{i}");
                g.node("Sigmoid", &[&y], &[&s], vec![]);
                g.node("Mul", &[&y, &s], &[&out], vec![]);
            }
        }
        if b.act != 0 {
            y = out;
        }
        cur = y;
    }
    g.output(&cur);
    g.build()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn random_conv_chains_keep_their_outputs(blocks in prop::collection::vec(block(), 1..5), c in 1usize..5) {
        let m = build(&blocks, c, 14);
        let inputs = rand_inputs(&m);
        let before = run(&m, &inputs);
        let mut opt = m.clone();
        let rep = optimize(&mut opt, &Options::default()).unwrap_or_else(|e| panic!("{e}"));
        let after = run(&opt, &inputs);
        assert_close(&after, &before, 1e-5);
        // Every BatchNormalization folds (each follows a Conv whose output it alone reads).
        prop_assert!(opt.graph.nodes.iter().all(|n| n.op_type != "BatchNormalization"), "{:?}", rep.applied());
        prop_assert!(opt.graph.nodes.len() <= m.graph.nodes.len());
    }
}
