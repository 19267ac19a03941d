//! Magnitude pruning (unstructured, 1x8 blocks, layer-wise and global) on the
//! trained Fashion-MNIST net, and TF-MOT's schedules.

use kiln_prune::{
    magnitude_masks, prune_magnitude, prune_targets, weight_sparsity, MagnitudeConfig, Schedule,
};
use std::path::Path;

fn fmnist_model() -> kiln_ir::Model {
    kiln::load_model(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/fmnist_mnv2.onnx")).unwrap()
}

/// PolynomialDecay and ConstantSparsity give TF-MOT's values and pruning steps.
#[test]
fn schedules_follow_tfmot() {
    let p = Schedule::PolynomialDecay {
        initial: 0.0,
        final_sparsity: 0.8,
        begin_step: 0,
        end_step: 100,
        power: 3.0,
        frequency: 10,
    };
    assert_eq!(p.at(0), Some(0.0));
    // 0.8 + (0 - 0.8) * (1 - 0.5)^3 = 0.7
    assert!((p.at(50).unwrap() - 0.7).abs() < 1e-6);
    assert!((p.at(100).unwrap() - 0.8).abs() < 1e-6);
    assert_eq!(p.at(55), None);
    assert_eq!(p.at(110), None);
    let q = Schedule::PolynomialDecay {
        initial: 0.5,
        final_sparsity: 0.9,
        begin_step: 20,
        end_step: 40,
        power: 1.0,
        frequency: 5,
    };
    assert_eq!(q.at(15), None);
    assert!((q.at(30).unwrap() - 0.7).abs() < 1e-6);
    let c = Schedule::Constant {
        sparsity: 0.5,
        begin_step: 10,
        end_step: None,
        frequency: 100,
    };
    assert_eq!(c.at(10), Some(0.5));
    assert_eq!(c.at(110), Some(0.5));
    assert_eq!(c.at(111), None);
    assert_eq!(c.at(0), None);
    assert!(p.validate().is_ok());
    let bad = Schedule::PolynomialDecay {
        initial: 0.0,
        final_sparsity: 1.0,
        begin_step: 5,
        end_step: 5,
        power: 3.0,
        frequency: 1,
    };
    assert!(bad.validate().is_err());
}

/// Layer-wise unstructured pruning: every target at the sparsity, the stem
/// and the classifier dense, the smallest magnitudes gone, and the model
/// still runs.
#[test]
fn unstructured_layerwise_prunes_each_layer_and_keeps_stem_and_classifier() {
    let m = fmnist_model();
    let cfg = MagnitudeConfig::default();
    let targets = prune_targets(&m, &cfg).unwrap();
    let all = weight_sparsity(&m);
    assert_eq!(
        targets.len() + 2,
        all.len(),
        "stem and classifier are not targets"
    );
    let (p, report) = prune_magnitude(&m, 0.6, &cfg).unwrap();
    for l in &report {
        let target = targets.iter().any(|t| t.weight == l.weight);
        if target {
            let want = (0.6 * l.params as f64).floor() as usize;
            assert!(
                l.zeros >= want && l.zeros <= want + 2,
                "{} {} of {}",
                l.node,
                l.zeros,
                l.params
            );
            // Every kept weight is at least as large as every pruned one.
            let before = m.graph.initializers[&l.weight].to_f32_vec();
            let after = p.graph.initializers[&l.weight].to_f32_vec();
            let max_pruned = before
                .iter()
                .zip(&after)
                .filter(|(_, a)| **a == 0.0)
                .map(|(b, _)| b.abs())
                .fold(0.0, f32::max);
            let min_kept = before
                .iter()
                .zip(&after)
                .filter(|(_, a)| **a != 0.0)
                .map(|(b, _)| b.abs())
                .fold(f32::MAX, f32::min);
            assert!(max_pruned <= min_kept, "{}", l.node);
        } else {
            assert!(
                l.sparsity() < 0.05,
                "{} is not a target but {} sparse",
                l.node,
                l.sparsity()
            );
        }
    }
    let cm = kiln::compile_model(p, &Default::default()).unwrap();
    let mut st = cm.new_state(1);
    let x = kiln_ir::Tensor::from_vec(vec![2, 1, 28, 28], vec![0.5f32; 2 * 784]).unwrap();
    let out = cm.run(&mut st, vec![x]).unwrap();
    assert_eq!(out[0].shape(), &[2, 10]);
}

/// 1x8 block pruning: only pointwise weights, whole blocks of 8 output
/// channels at one input channel zeroed, 80% of the blocks.
#[test]
fn block_pruning_zeroes_whole_1x8_output_channel_blocks() {
    let m = fmnist_model();
    let cfg = MagnitudeConfig {
        block: 8,
        ..Default::default()
    };
    let targets = prune_targets(&m, &cfg).unwrap();
    assert!(!targets.is_empty() && targets.iter().all(|t| t.pointwise));
    let (p, report) = prune_magnitude(&m, 0.8, &cfg).unwrap();
    for t in &targets {
        let l = report.iter().find(|l| l.weight == t.weight).unwrap();
        assert!(l.zero_blocks_1x8 >= 0.79, "{}: {}", t.node, l.zero_blocks_1x8);
        // Zeros come in whole blocks: for a Conv [Cout, Cin, 1, 1], channels o..o+8 at input i.
        let w = p.graph.initializers[&t.weight].to_f32_vec();
        let (cout, cin) = (t.shape[0], t.shape[1]);
        for i in 0..cin {
            for o0 in (0..cout).step_by(8) {
                let zs: Vec<bool> = (o0..(o0 + 8).min(cout)).map(|o| w[o * cin + i] == 0.0).collect();
                assert!(
                    zs.iter().all(|&z| z) || zs.iter().all(|&z| !z),
                    "{} block {o0}/{i}",
                    t.node
                );
            }
        }
    }
}

/// Global ranking: the targets together reach the sparsity, unevenly.
#[test]
fn global_ranking_reaches_the_total_sparsity_unevenly() {
    let m = fmnist_model();
    let cfg = MagnitudeConfig {
        global: true,
        ..Default::default()
    };
    let targets = prune_targets(&m, &cfg).unwrap();
    let init = &m.graph.initializers;
    let masks = magnitude_masks(&targets, &|w| init.get(w).map(|t| t.to_f32_vec()), 0.7, &cfg);
    let total: usize = masks.iter().map(Vec::len).sum();
    let dropped: usize = masks.iter().map(|m| m.iter().filter(|k| !**k).count()).sum();
    assert_eq!(dropped, (0.7 * total as f64).floor() as usize);
    let per: Vec<f64> = masks
        .iter()
        .map(|m| m.iter().filter(|k| !**k).count() as f64 / m.len() as f64)
        .collect();
    let (lo, hi) = per
        .iter()
        .fold((1.0f64, 0.0f64), |(l, h), &x| (l.min(x), h.max(x)));
    assert!(hi - lo > 0.1, "global sparsity should differ per layer: {per:?}");
}

/// Bad settings name the field; an exclusion removes a target.
#[test]
fn bad_settings_name_the_field_and_exclusions_apply() {
    let m = fmnist_model();
    let e = prune_targets(
        &m,
        &MagnitudeConfig {
            exclude: vec!["no_such_node".into()],
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("exclude") && e.to_string().contains("no_such_node"),
        "{e}"
    );
    let e = prune_magnitude(&m, 1.0, &MagnitudeConfig::default()).unwrap_err();
    assert!(e.to_string().contains("sparsity"), "{e}");
    let all = prune_targets(&m, &MagnitudeConfig::default()).unwrap();
    let first = all[0].node.clone();
    let fewer = prune_targets(
        &m,
        &MagnitudeConfig {
            exclude: vec![first.clone()],
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(fewer.len() + 1, all.len());
    assert!(!fewer.iter().any(|t| t.node == first));
}
