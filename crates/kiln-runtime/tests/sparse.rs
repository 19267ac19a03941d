//! Block-sparse pointwise convolutions in the compiled runtime
//! ([`SparseMode`]): a small conv region whose 1x1 convolutions have 80% of
//! their 1x8 weight blocks zero (bias, fused Relu, a residual with Clip(0, 6),
//! output channels not a multiple of 16) gives, with the sparse kernels
//! forced, the dense plan's values and the reference executor's within
//! 1e-4, on every ISA level and thread count; the plan names the kernel it
//! chose; below 70% block sparsity `Auto` stays dense.

use kiln_ir::{Attribute, DType, Graph, Model, Node, OpsetImport, Tensor, ValueInfo, ValueType};
use kiln_kernels::spmm::spmm_name;
use kiln_runtime::compiled::SPARSE_MIN_BLOCK_SPARSITY;
use kiln_runtime::{CompileOptions, CompiledModel, Isa, Session, SparseMode};

/// SplitMix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 * (2.0 / 16_777_216.0) - 1.0
    }
    fn vec(&mut self, n: usize, amp: f32) -> Vec<f32> {
        (0..n).map(|_| self.unit() * amp).collect()
    }
}

/// 1x1 weights `[co, ci, 1, 1]` with `round(sparsity * blocks)` of their
/// 1x8 blocks (one input channel, 8 consecutive output channels) zero,
/// chosen at random.
fn block_sparse_weights(rng: &mut Rng, co: usize, ci: usize, sparsity: f64) -> Tensor {
    let mut w = rng.vec(co * ci, 0.5);
    let per = co.div_ceil(8);
    let mut blocks: Vec<usize> = (0..ci * per).collect();
    for i in (1..blocks.len()).rev() {
        blocks.swap(i, (rng.next() % (i as u64 + 1)) as usize);
    }
    let zero = (blocks.len() as f64 * sparsity).round() as usize;
    for &b in &blocks[..zero] {
        let (c, j) = (b / per, b % per);
        for o in j * 8..((j + 1) * 8).min(co) {
            w[o * ci + c] = 0.0;
        }
    }
    Tensor::from_vec(vec![co, ci, 1, 1], w).unwrap()
}

/// `x [2, 16, 9, 9]` -> Conv 3x3 (16 -> 24, pad 1) -> FusedConv 1x1 (24 ->
/// 40, bias, Relu) `pw1` -> FusedConv 1x1 (40 -> 40, bias, residual `pw1`,
/// Clip(0, 6)) `pw2` -> `y`, the 1x1 weights `sparsity` block-sparse.
fn model(sparsity: f64, seed: u64) -> Model {
    let mut rng = Rng(seed);
    let mut g = Graph::default();
    g.inputs.push(ValueInfo {
        name: "x".into(),
        ty: ValueType::known(DType::F32, &[2, 16, 9, 9]),
    });
    g.outputs.push(ValueInfo {
        name: "y".into(),
        ty: ValueType::unknown_rank(DType::F32),
    });
    let mut init = |name: &str, t: Tensor| {
        g.initializers.insert(name.into(), t);
    };
    init(
        "w0",
        Tensor::from_vec(vec![24, 16, 3, 3], rng.vec(24 * 16 * 9, 0.3)).unwrap(),
    );
    init("b0", Tensor::from_vec(vec![24], rng.vec(24, 0.1)).unwrap());
    init("w1", block_sparse_weights(&mut rng, 40, 24, sparsity));
    init("b1", Tensor::from_vec(vec![40], rng.vec(40, 0.1)).unwrap());
    init("w2", block_sparse_weights(&mut rng, 40, 40, sparsity));
    init("b2", Tensor::from_vec(vec![40], rng.vec(40, 0.1)).unwrap());
    g.nodes.push(
        Node::new("c0", "Conv", &["x", "w0", "b0"], &["t0"])
            .with_attr("pads", Attribute::Ints(vec![1, 1, 1, 1])),
    );
    let mut pw1 = Node::new("pw1", "FusedConv", &["t0", "w1", "b1"], &["t1"])
        .with_attr("activation", Attribute::String(b"Relu".to_vec()));
    pw1.domain = "kiln".into();
    g.nodes.push(pw1);
    let mut pw2 = Node::new("pw2", "FusedConv", &["t1", "w2", "b2", "t1"], &["y"])
        .with_attr("activation", Attribute::String(b"Clip".to_vec()))
        .with_attr("activation_params", Attribute::Floats(vec![0.0, 6.0]));
    pw2.domain = "kiln".into();
    g.nodes.push(pw2);
    Model {
        graph: g,
        opsets: vec![
            OpsetImport {
                domain: String::new(),
                version: 13,
            },
            OpsetImport {
                domain: "kiln".into(),
                version: 1,
            },
        ],
        ir_version: 8,
        ..Default::default()
    }
}

fn input(seed: u64) -> Tensor {
    Tensor::from_vec(vec![2, 16, 9, 9], Rng(seed).vec(2 * 16 * 81, 1.0)).unwrap()
}

fn compile(m: &Model, isa: Isa, sparse: SparseMode) -> CompiledModel {
    let opts = CompileOptions {
        max_isa: Some(isa),
        sparse,
        ..Default::default()
    };
    CompiledModel::compile(m.clone(), &opts).unwrap()
}

/// The kernel of each pointwise step (`pw1`, `pw2`).
fn pointwise_kernels(cm: &CompiledModel) -> Vec<String> {
    let info = cm.plan_info(&[vec![2, 16, 9, 9]]).unwrap();
    ["pw1", "pw2"]
        .iter()
        .map(|n| {
            let s = info.steps.iter().find(|s| s.node == *n).unwrap();
            s.kernel.clone()
        })
        .collect()
}

fn run(cm: &CompiledModel, threads: usize, x: &Tensor) -> Vec<f32> {
    let mut st = cm.new_state(threads);
    cm.run(&mut st, vec![x.clone()]).unwrap()[0].to_f32_vec()
}

#[test]
fn forced_sparse_matches_dense_and_reference() {
    let m = model(0.8, 1);
    let x = input(2);
    let want = Session::new(m.clone()).unwrap().run(vec![x.clone()]).unwrap()[0].to_f32_vec();
    let scale = want.iter().fold(0f32, |a, v| a.max(v.abs())).max(1e-3);
    for isa in Isa::runnable() {
        let sparse = compile(&m, isa, SparseMode::Sparse);
        let dense = compile(&m, isa, SparseMode::Dense);
        let level = isa.float_level();
        assert_eq!(pointwise_kernels(&sparse), vec![spmm_name(level); 2], "{isa}");
        for k in pointwise_kernels(&dense) {
            assert!(k.starts_with("gemm_f32_"), "{isa}: dense plan runs {k}");
        }
        let got = run(&sparse, 1, &x);
        let dense_out = run(&dense, 1, &x);
        assert_eq!(got.len(), want.len());
        // The sparse kernels skip only `a * 0` terms: the dense plan's values.
        assert!(
            got.iter().zip(&dense_out).all(|(a, b)| a == b),
            "{isa}: sparse != dense"
        );
        let d = got.iter().zip(&want).fold(0f32, |a, (g, w)| a.max((g - w).abs()));
        assert!(
            d <= 1e-4 * scale,
            "{isa}: max abs diff {d} vs reference (max |ref| {scale})"
        );
        // Threads split rows or column groups: bit-identical.
        let got2 = run(&sparse, 2, &x);
        assert!(
            got.iter().zip(&got2).all(|(a, b)| a.to_bits() == b.to_bits()),
            "{isa}: 1 and 2 threads differ"
        );
        println!("{isa}: sparse vs reference max abs diff {d:e} (max |ref| {scale})");
    }
}

/// `Auto`: at 80% the layer runs on whichever kernel timed fastest (named in
/// the plan) with the same values; at 60% (below the 70% threshold) dense.
#[test]
fn auto_chooses_by_sparsity_and_time() {
    const { assert!(SPARSE_MIN_BLOCK_SPARSITY == 0.7) };
    let x = input(3);
    for isa in Isa::runnable() {
        let level = isa.float_level();
        let m = model(0.8, 4);
        let auto = compile(&m, isa, SparseMode::Auto);
        let dense = compile(&m, isa, SparseMode::Dense);
        let mut allowed = vec![spmm_name(level)];
        if level == Isa::Avx512 {
            allowed.push(spmm_name(Isa::Avx2));
        }
        let dense_k = pointwise_kernels(&dense);
        for (k, dk) in pointwise_kernels(&auto).iter().zip(&dense_k) {
            assert!(k == dk || allowed.contains(k), "{isa}: auto chose {k}");
        }
        println!("{isa}: auto at 80%: {:?}", pointwise_kernels(&auto));
        let (a, d) = (run(&auto, 1, &x), run(&dense, 1, &x));
        assert!(a.iter().zip(&d).all(|(p, q)| p == q), "{isa}");
        let below = compile(&model(0.6, 5), isa, SparseMode::Auto);
        assert_eq!(
            pointwise_kernels(&below),
            dense_k,
            "{isa}: below 70% must stay dense"
        );
    }
}

/// A fully zero weight (100% block sparsity) leaves `act(bias [+ Z])`; with
/// symbolic shapes (plan per shape, weights kept) the sparse plan is rebuilt
/// for a second batch size.
#[test]
fn all_zero_weights_and_second_plan() {
    let mut m = model(1.0, 6);
    m.graph.inputs[0].ty = ValueType::known(DType::F32, &[2, 16, 9, 9]);
    let x = input(7);
    let want = Session::new(m.clone()).unwrap().run(vec![x.clone()]).unwrap()[0].to_f32_vec();
    let cm = compile(&m, Isa::detect(), SparseMode::Sparse);
    let got = run(&cm, 2, &x);
    let d = got.iter().zip(&want).fold(0f32, |a, (g, w)| a.max((g - w).abs()));
    assert!(d <= 1e-5, "max abs diff {d}");
    // Symbolic batch: two plans share the sparse packing.
    let mut m = model(0.8, 8);
    m.graph.inputs[0].ty = ValueType {
        dtype: DType::F32,
        shape: Some(vec![
            kiln_ir::Dim::Sym("n".into()),
            kiln_ir::Dim::Known(16),
            kiln_ir::Dim::Known(9),
            kiln_ir::Dim::Known(9),
        ]),
    };
    let reference = Session::new(m.clone()).unwrap();
    let cm = compile(&m, Isa::detect(), SparseMode::Sparse);
    for n in [1usize, 3] {
        let x = Tensor::from_vec(vec![n, 16, 9, 9], Rng(n as u64).vec(n * 16 * 81, 1.0)).unwrap();
        let want = reference.run(vec![x.clone()]).unwrap()[0].to_f32_vec();
        let got = run(&cm, 1, &x);
        let d = got.iter().zip(&want).fold(0f32, |a, (g, w)| a.max((g - w).abs()));
        assert!(d <= 1e-4, "batch {n}: max abs diff {d}");
    }
}
