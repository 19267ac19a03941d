//! The block-sparse pointwise kernels on the real trained Fashion-MNIST net
//! (`models/fmnist_mnv2.onnx`): every 1x1 convolution's weights block-pruned
//! to 80% by magnitude (the 1x8 blocks, one input channel by 8 consecutive
//! output channels, with the smallest L1 norm zeroed), then run at batch 32
//! on real test images with the sparse kernels forced: the same outputs as
//! the dense plan (within 1e-4; in fact equal) and as the reference
//! executor, on every ISA level; and `SparseMode::Auto` names what it chose.

mod common;
use common::*;
use kiln::data::{DataSpec, Dataset};
use kiln::ir::{Model, Tensor};
use kiln::runtime::{CompileOptions, CompiledModel, Isa, SparseMode};
use std::path::Path;

const BATCH: usize = 32;

/// Zeroes, in every pointwise `Conv` weight `[co, ci, 1, 1]`, the
/// `round(sparsity * blocks)` 1x8 blocks (8 consecutive output channels at
/// one input channel; the last block of a channel narrower when `co % 8 !=
/// 0`) with the smallest L1 norm. Returns the number of layers pruned.
fn block_prune_pointwise(m: &mut Model, sparsity: f64) -> usize {
    let weights: Vec<String> = m
        .graph
        .nodes
        .iter()
        .filter(|n| n.op_type == "Conv" && n.attr_int("group", 1).unwrap_or(1) == 1)
        .map(|n| n.inputs[1].clone())
        .collect();
    let mut pruned = 0;
    for name in weights {
        let Some(t) = m.graph.initializers.get_mut(&name) else {
            continue;
        };
        let s = t.shape().to_vec();
        if s.len() != 4 || s[2] != 1 || s[3] != 1 {
            continue;
        }
        let (co, ci) = (s[0], s[1]);
        let w = t.as_slice_mut::<f32>().unwrap();
        let per = co.div_ceil(8);
        let norm = |b: usize| -> f32 {
            let (c, j) = (b / per, b % per);
            (j * 8..((j + 1) * 8).min(co)).map(|o| w[o * ci + c].abs()).sum()
        };
        let mut blocks: Vec<(f32, usize)> = (0..ci * per).map(|b| (norm(b), b)).collect();
        blocks.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let zero = (blocks.len() as f64 * sparsity).round() as usize;
        for &(_, b) in &blocks[..zero] {
            let (c, j) = (b / per, b % per);
            for o in j * 8..((j + 1) * 8).min(co) {
                w[o * ci + c] = 0.0;
            }
        }
        pruned += 1;
    }
    pruned
}

/// The pruned, optimized model and the first `n` test images in batches of 32.
fn setup(n: usize) -> (Model, Vec<(Tensor, Vec<usize>)>) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut m = kiln::load_model(&root.join("models/fmnist_mnv2.onnx")).unwrap();
    assert_eq!(
        block_prune_pointwise(&mut m, 0.8),
        15,
        "the net has 15 1x1 convolutions"
    );
    kiln::opt::optimize(&mut m, &kiln::opt::Options::default()).unwrap();
    let mut spec = DataSpec::new(fixtures().join("fashion-mnist"));
    spec.range = Some(0..n);
    let ds = Dataset::open(spec).unwrap();
    let batches = ds
        .batches(BATCH)
        .unwrap()
        .map(|b| {
            let b = b.unwrap();
            (b.input, b.labels.into_iter().map(|l| l.unwrap()).collect())
        })
        .collect();
    (m, batches)
}

fn compile(m: &Model, isa: Isa, sparse: SparseMode) -> CompiledModel {
    let opts = CompileOptions {
        max_isa: Some(isa),
        input_shapes: Some(vec![vec![BATCH, 1, 28, 28]]),
        sparse,
    };
    CompiledModel::compile(m.clone(), &opts).unwrap()
}

/// Kernels of the plan's steps that run a pointwise convolution.
fn kernels(cm: &CompiledModel) -> Vec<String> {
    cm.plan_info(&[vec![BATCH, 1, 28, 28]])
        .unwrap()
        .steps
        .into_iter()
        .filter(|s| s.op_type.contains("Conv"))
        .map(|s| s.kernel)
        .filter(|k| k.starts_with("spmm_") || k.contains("gemm_"))
        .collect()
}

#[test]
fn fmnist_block_pruned_80_sparse_matches_dense() {
    let (m, batches) = setup(8 * BATCH);
    let reference = kiln::Session::new(m.clone()).unwrap();
    let wants: Vec<Tensor> = batches
        .iter()
        .map(|(x, _)| reference.run(vec![x.clone()]).unwrap().remove(0))
        .collect();
    let top = Isa::detect();
    for isa in Isa::runnable() {
        let sparse = compile(&m, isa, SparseMode::Sparse);
        let dense = compile(&m, isa, SparseMode::Dense);
        let ks = kernels(&sparse);
        let n_sparse = ks.iter().filter(|k| k.starts_with("spmm_f32_")).count();
        assert_eq!(n_sparse, 15, "{isa}: sparse plan kernels {ks:?}");
        let (mut s1, mut s2) = (sparse.new_state(1), dense.new_state(2));
        // All batches on the top level, the first one on the others.
        let take = if isa == top { batches.len() } else { 1 };
        let (mut worst_dense, mut worst_ref, mut correct, mut seen) = (0f32, 0f32, 0, 0);
        for ((x, labels), want) in batches.iter().zip(&wants).take(take) {
            let got = sparse.run(&mut s1, vec![x.clone()]).unwrap().remove(0);
            let d = dense.run(&mut s2, vec![x.clone()]).unwrap().remove(0);
            let scale = max_abs(want).max(1e-3);
            worst_dense = worst_dense.max(max_abs_diff(&got, &d) / scale);
            worst_ref = worst_ref.max(max_abs_diff(&got, want) / scale);
            let logits = got.to_f32_vec();
            for (i, &l) in labels.iter().enumerate() {
                let row = &logits[i * 10..(i + 1) * 10];
                let best = (0..10).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap();
                correct += usize::from(best == l);
                seen += 1;
            }
        }
        println!(
            "{isa}: {} batches of {BATCH}: sparse vs dense max rel diff {worst_dense:e}, vs reference \
             {worst_ref:e}; top-1 of the pruned (not fine-tuned) net {correct}/{seen}",
            take
        );
        assert!(worst_dense <= 1e-4, "{isa}: sparse vs dense {worst_dense}");
        assert!(worst_ref <= 1e-4, "{isa}: sparse vs reference {worst_ref}");
    }
}

/// `Auto` at the layers' 80% block sparsity: each 1x1 convolution runs on the
/// kernel that timed fastest (printed), with the dense plan's values.
#[test]
fn fmnist_block_pruned_80_auto() {
    let (m, batches) = setup(BATCH);
    let isa = Isa::detect();
    let t0 = std::time::Instant::now();
    let auto = compile(&m, isa, SparseMode::Auto);
    let t_auto = t0.elapsed();
    let t0 = std::time::Instant::now();
    let dense = compile(&m, isa, SparseMode::Dense);
    let t_dense = t0.elapsed();
    let ks = kernels(&auto);
    println!("{isa}: auto chose {ks:?}");
    println!("compile time: auto (timing 15 layers) {t_auto:?}, dense {t_dense:?}");
    let n_sparse = ks.iter().filter(|k| k.starts_with("spmm_f32_")).count();
    println!("{n_sparse} of 15 pointwise convolutions sparse");
    let (x, _) = &batches[0];
    let a = auto
        .run(&mut auto.new_state(1), vec![x.clone()])
        .unwrap()
        .remove(0);
    let d = dense
        .run(&mut dense.new_state(1), vec![x.clone()])
        .unwrap()
        .remove(0);
    assert!(max_abs_diff(&a, &d) <= 1e-4 * max_abs(&d).max(1e-3));
}
