//! kiln-train on the real Fashion-MNIST net and data (`.fixtures`, built by scripts/fixtures).

use kiln::data::{DataSpec, Split};
use kiln_train::data::{Augment, TrainSet};
use kiln_train::{fit, FitConfig, TrainGraph};
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    let p = std::env::var_os("KILN_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.fixtures"));
    assert!(
        p.join("STAMP").exists(),
        "fixtures missing at {}: run scripts/fixtures first (scripts/test does)",
        p.display()
    );
    p
}

fn fmnist(split: Split, range: std::ops::Range<usize>) -> TrainSet {
    let mut spec = DataSpec::new(fixtures().join("fashion-mnist"));
    spec.split = Some(split);
    spec.range = Some(range);
    TrainSet::load(spec, 1 << 30).unwrap()
}

fn fmnist_model() -> kiln_ir::Model {
    kiln::load_model(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/fmnist_mnv2.onnx")).unwrap()
}

/// The trainable view computes what kiln's reference executor computes
/// (eval mode), and exporting it unchanged gives back the same initializers.
#[test]
fn translation_matches_reference_and_round_trips() {
    let m = fmnist_model();
    let g = TrainGraph::from_model(&m).unwrap();
    assert!(g.num_params() > 100_000, "{} params", g.num_params());
    let test = fmnist(Split::Test, 0..64);
    let device = burn::tensor::Device::flex();
    let x = burn::tensor::Tensor::<4>::from_data(
        burn::tensor::TensorData::new(test.inputs(0..64).unwrap(), [64, 1, 28, 28]),
        &device,
    );
    let ours = g
        .forward(x, &device, false, &[])
        .unwrap()
        .output
        .into_data()
        .try_into_vec::<f32>()
        .unwrap();
    let sess = kiln::Session::new(m.clone()).unwrap();
    let input = kiln_ir::Tensor::from_vec(vec![64, 1, 28, 28], test.inputs(0..64).unwrap()).unwrap();
    let reference = sess.run(vec![input]).unwrap()[0].to_f32_vec();
    let diff = ours
        .iter()
        .zip(&reference)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(diff < 1e-4, "max abs diff {diff}");
    assert_eq!(g.to_model(&m).unwrap(), m);
}

/// [CI] Resume: with one thread, a run stopped after epoch 1 and resumed ends
/// with weights bit-identical to the uninterrupted run (hash of every weight).
#[test]
fn resumed_run_equals_uninterrupted_run() {
    let m = fmnist_model();
    let train = fmnist(Split::Train, 0..384);
    let val = fmnist(Split::Train, 55_000..55_256);
    let tmp = std::env::temp_dir().join(format!("kiln-train-resume-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let cfg = |dir: &str| FitConfig {
        epochs: 2,
        batch: 64,
        lr: 1e-3,
        threads: 1,
        augment: Augment { flip: true, shift: 2 },
        out_dir: tmp.join(dir),
        ..FitConfig::default()
    };
    let full = fit(&m, &train, Some(&val), &cfg("full"), &mut |_| {}).unwrap();
    assert_eq!(full.history.len(), 2);
    let mut c = cfg("resumed");
    c.stop_after = Some(1);
    let first = fit(&m, &train, Some(&val), &c, &mut |_| {}).unwrap();
    assert!(first.stopped_early && first.history.len() == 1);
    assert_ne!(first.weights_hash, full.weights_hash);
    c.stop_after = None;
    c.resume = true;
    let resumed = fit(&m, &train, Some(&val), &c, &mut |_| {}).unwrap();
    assert_eq!(resumed.history.len(), 2);
    assert_eq!(
        resumed.weights_hash, full.weights_hash,
        "resumed {:016x} vs uninterrupted {:016x}",
        resumed.weights_hash, full.weights_hash
    );
    assert_eq!(resumed.model, full.model);
    // The metrics log and the exported model are there; the model runs on kiln's runtime.
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.join("resumed/metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics["history"].as_array().unwrap().len(), 2);
    let exported = kiln::load_model(&tmp.join("resumed/model.onnx")).unwrap();
    let acc = kiln_train::fit::evaluate(&exported, &val, 128, 1).unwrap();
    assert!(acc > 50.0, "val top-1 {acc}");
    // Another model's checkpoint, or other settings, are refused by name.
    c.lr = 2e-3;
    let e = fit(&m, &train, Some(&val), &c, &mut |_| {}).unwrap_err();
    assert_eq!(e.kind, kiln_train::ErrorKind::Checkpoint, "{e}");
    assert!(e.message.contains("lr: 0.001 then, 0.002 now"), "{e}");
    // Regression (fresh-user trial, B2): resuming on other data was accepted and
    // broke the schedule and the validation split; the data is now part of the settings.
    c.lr = 1e-3;
    let more = fmnist(Split::Train, 0..448);
    let e = fit(&m, &more, Some(&val), &c, &mut |_| {}).unwrap_err();
    assert_eq!(e.kind, kiln_train::ErrorKind::Checkpoint, "{e}");
    assert!(e.message.contains("data:"), "{e}");
    // Regression (trial, B4): a learning rate <= 0 or not finite, or a negative weight decay, is refused up front.
    c.resume = false;
    for (lr, wd) in [(-1.0, 1e-4), (0.0, 1e-4), (f64::NAN, 1e-4), (1e-3, -5.0)] {
        c.lr = lr;
        c.weight_decay = wd;
        let e = fit(&m, &train, Some(&val), &c, &mut |_| {}).unwrap_err();
        assert_eq!(e.kind, kiln_train::ErrorKind::Config, "{e}");
    }
    let _ = std::fs::remove_dir_all(&tmp);
}

/// Unsupported ops are refused with model, node and op named.
#[test]
fn unsupported_op_is_named() {
    let mut m = fmnist_model();
    let n = m
        .graph
        .nodes
        .iter_mut()
        .find(|n| n.op_type == "GlobalAveragePool")
        .unwrap();
    n.op_type = "LpPool".into();
    let name = n.name.clone();
    let e = TrainGraph::from_model(&m).unwrap_err();
    assert_eq!(e.kind, kiln_train::ErrorKind::Unsupported);
    assert!(e.message.contains(&name) && e.message.contains("LpPool"), "{e}");
}

/// Logit distillation: a width-0.5 zoo student learns from the trained
/// Fashion-MNIST net on kiln's runtime; with alpha = 0 the run equals plain
/// training bit for bit (the soft term is the only difference).
#[test]
fn distillation_runs_and_alpha_zero_is_plain_training() {
    let teacher_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/fmnist_mnv2.onnx");
    let mut zc = kiln_zoo::ZooConfig::new(kiln_zoo::Arch::FmnistMnv2);
    zc.width = 0.5;
    let student = kiln_zoo::build(&zc).unwrap();
    let train = fmnist(Split::Train, 0..256);
    let tmp = std::env::temp_dir().join(format!("kiln-train-kd-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let cfg = |dir: &str, augment: Augment| FitConfig {
        epochs: 1,
        batch: 64,
        lr: 2e-3,
        threads: 1,
        augment,
        out_dir: tmp.join(dir),
        ..FitConfig::default()
    };
    let teacher = |alpha: f64| {
        let t = kiln::compile(&teacher_path, &Default::default()).unwrap();
        kiln_train::Distill::logits(t, "fmnist_mnv2.onnx", 4.0, alpha)
    };
    let aug = Augment { flip: true, shift: 2 };
    let plain = fit(&student, &train, None, &cfg("plain", aug), &mut |_| {}).unwrap();
    let zero = kiln_train::fit_with(
        &student,
        &train,
        None,
        &cfg("zero", aug),
        Some(&teacher(0.0)),
        None,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(zero.weights_hash, plain.weights_hash);
    let kd = kiln_train::fit_with(
        &student,
        &train,
        None,
        &cfg("kd", aug),
        Some(&teacher(0.9)),
        None,
        &mut |_| {},
    )
    .unwrap();
    assert_ne!(kd.weights_hash, plain.weights_hash);
    assert!(kd.history[0].train_loss.is_finite() && kd.history[0].train_loss > 0.0);
    // Without augmentation the teacher's logits are cached; the run is the same either way.
    let a = kiln_train::fit_with(
        &student,
        &train,
        None,
        &cfg("cached", Augment::default()),
        Some(&teacher(0.9)),
        None,
        &mut |_| {},
    );
    assert!(a.unwrap().history[0].train_loss.is_finite());
    let e = kiln_train::fit_with(
        &student,
        &train,
        None,
        &cfg("bad", aug),
        Some(&teacher(1.5)),
        None,
        &mut |_| {},
    )
    .unwrap_err();
    assert_eq!(e.kind, kiln_train::ErrorKind::Config);
    let _ = std::fs::remove_dir_all(&tmp);
}

/// Feature distillation (FitNets hint through a learned 1x1 adapter): the
/// width-0.5 student's last 7x7 feature map (128 channels) is
/// regressed onto the teacher's (256 channels). The hint changes training
/// against logit-only distillation, the adapters are checkpointed (a run
/// stopped after epoch 1 and resumed equals the uninterrupted run), and a
/// hint naming a value that does not exist is a Config error naming it.
#[test]
fn feature_distillation_trains_adapters_and_resumes() {
    use kiln_train::{FeatureHint, FitConfig};
    let teacher_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/fmnist_mnv2.onnx");
    let teacher_model = kiln::load_model(&teacher_path).unwrap();
    let mut zc = kiln_zoo::ZooConfig::new(kiln_zoo::Arch::FmnistMnv2);
    zc.width = 0.5;
    let student = kiln_zoo::build(&zc).unwrap();
    let train = fmnist(Split::Train, 0..128);
    let tmp = std::env::temp_dir().join(format!("kiln-train-fkd-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let hint: FeatureHint = "features.8.relu6=/features/features.8/features.8.2/Clip_output_0"
        .parse()
        .unwrap();
    let with = |hints: Vec<FeatureHint>| {
        let t = kiln_train::teacher_with_features(teacher_model.clone(), &hints).unwrap();
        kiln_train::Distill {
            features: hints,
            feature_weight: 1.0,
            ..kiln_train::Distill::logits(t, "fmnist_mnv2.onnx", 4.0, 0.5)
        }
    };
    let cfg = |dir: &str, resume: bool, stop_after: Option<usize>| FitConfig {
        epochs: 2,
        batch: 32,
        lr: 2e-3,
        threads: 1,
        augment: Augment { flip: true, shift: 2 },
        out_dir: tmp.join(dir),
        resume,
        stop_after,
        ..FitConfig::default()
    };
    let run = |d: &kiln_train::Distill, c: FitConfig| {
        kiln_train::fit_with(&student, &train, None, &c, Some(d), None, &mut |_| {})
    };
    let feat = with(vec![hint.clone()]);
    let full = run(&feat, cfg("full", false, None)).unwrap();
    assert!(full.history.iter().all(|m| m.train_loss.is_finite()));
    let logits_only = run(&with(vec![]), cfg("logits", false, None)).unwrap();
    assert_ne!(full.weights_hash, logits_only.weights_hash);
    let part = run(&feat, cfg("resume", false, Some(1))).unwrap();
    assert!(part.stopped_early);
    let resumed = run(&feat, cfg("resume", true, None)).unwrap();
    assert_eq!(resumed.weights_hash, full.weights_hash);
    // A checkpoint with adapters does not resume a run without them.
    let e = run(&with(vec![]), cfg("resume", true, None)).unwrap_err();
    assert_eq!(e.kind, kiln_train::ErrorKind::Checkpoint);

    let bad: FeatureHint = "no.such.value=/features/features.8/features.8.2/Clip_output_0"
        .parse()
        .unwrap();
    let e = run(&with(vec![bad]), cfg("bad", false, None)).unwrap_err();
    assert_eq!(e.kind, kiln_train::ErrorKind::Config);
    assert!(e.message.contains("no.such.value"), "{e}");
    let bad: FeatureHint = "features.8.relu6=nope".parse().unwrap();
    let e = kiln_train::teacher_with_features(teacher_model.clone(), &[bad]).unwrap_err();
    assert_eq!(e.kind, kiln_train::ErrorKind::Config);
    assert!(e.message.contains("'nope'"), "{e}");
    // Different spatial sizes cannot be matched by a 1x1 adapter.
    let bad: FeatureHint = "features.1.expand.relu6=/features/features.8/features.8.2/Clip_output_0"
        .parse()
        .unwrap();
    let e = run(&with(vec![bad]), cfg("bad2", false, None)).unwrap_err();
    assert_eq!(e.kind, kiln_train::ErrorKind::Shape);
    assert!("x".parse::<FeatureHint>().is_err());
    let _ = std::fs::remove_dir_all(&tmp);
}

/// Pruning while fine-tuning (the trained net, 1x8 blocks, PolynomialDecay
/// 0 -> 0.8 over 6 steps, a mask update every 2): the exported model's
/// pointwise weights end 80% block-sparse, the pruned weights stay zero
/// through the AdamW updates, and a run stopped after epoch 1 and resumed
/// (masks in the checkpoint) equals the uninterrupted run.
#[test]
fn block_pruning_during_finetuning_reaches_the_schedule_and_resumes() {
    let model = fmnist_model();
    let train = fmnist(Split::Train, 0..128);
    let tmp = std::env::temp_dir().join(format!("kiln-train-prune-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let config = kiln_prune::MagnitudeConfig {
        block: 8,
        ..Default::default()
    };
    let pruning = kiln_train::Pruning {
        targets: kiln_prune::prune_targets(&model, &config).unwrap(),
        config,
        schedule: kiln_prune::Schedule::PolynomialDecay {
            initial: 0.0,
            final_sparsity: 0.8,
            begin_step: 0,
            end_step: 6,
            power: 3.0,
            frequency: 2,
        },
    };
    let extras = kiln_train::Extras {
        pruning: Some(&pruning),
        ..Default::default()
    };
    let cfg = |dir: &str, resume: bool, stop_after: Option<usize>| FitConfig {
        epochs: 2,
        batch: 32,
        lr: 1e-3,
        threads: 1,
        out_dir: tmp.join(dir),
        resume,
        stop_after,
        ..FitConfig::default()
    };
    let full = kiln_train::fit_ext(
        &model,
        &train,
        None,
        &cfg("full", false, None),
        &extras,
        &mut |_| {},
    )
    .unwrap();
    let report = kiln_prune::weight_sparsity(&full.model);
    for t in &pruning.targets {
        let l = report.iter().find(|l| l.weight == t.weight).unwrap();
        assert!(l.zero_blocks_1x8 >= 0.79, "{}: {}", t.node, l.zero_blocks_1x8);
    }
    // Not targets (stem, classifier, depthwise) stay dense.
    let dense = report
        .iter()
        .filter(|l| !pruning.targets.iter().any(|t| t.weight == l.weight));
    assert!(dense.into_iter().all(|l| l.sparsity() < 0.05));
    let part = kiln_train::fit_ext(
        &model,
        &train,
        None,
        &cfg("resume", false, Some(1)),
        &extras,
        &mut |_| {},
    )
    .unwrap();
    assert!(part.stopped_early);
    let resumed = kiln_train::fit_ext(
        &model,
        &train,
        None,
        &cfg("resume", true, None),
        &extras,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(resumed.weights_hash, full.weights_hash);
    // A bad schedule is a Config error.
    let bad = kiln_train::Pruning {
        schedule: kiln_prune::Schedule::Constant {
            sparsity: 1.5,
            begin_step: 0,
            end_step: None,
            frequency: 1,
        },
        ..pruning.clone()
    };
    let e = kiln_train::fit_ext(
        &model,
        &train,
        None,
        &cfg("bad", false, None),
        &kiln_train::Extras {
            pruning: Some(&bad),
            ..Default::default()
        },
        &mut |_| {},
    )
    .unwrap_err();
    assert_eq!(e.kind, kiln_train::ErrorKind::Config);
    let _ = std::fs::remove_dir_all(&tmp);
}

/// An ImageFolder dataset past the memory cap is streamed (each batch decodes
/// its own images) and gives the same batches as the in-memory set; a zoo
/// student trains on it.
#[test]
fn image_folder_streams_past_the_memory_cap() {
    let tmp = std::env::temp_dir().join(format!("kiln-train-folder-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    // Real pixels: 24 Fashion-MNIST test images (crops 20x20 of the 28x28), two classes per folder name.
    let src = fmnist(Split::Test, 0..24);
    let px = src.inputs(0..24).unwrap();
    for i in 0..24 {
        let class = if src.y[i] < 5 { "a_low" } else { "b_high" };
        std::fs::create_dir_all(tmp.join(class)).unwrap();
        let img = image::RgbImage::from_fn(20, 20, |x, y| {
            let v = (px[i * 784 + (y as usize + 4) * 28 + x as usize + 4] * 255.0).round() as u8;
            image::Rgb([v, v, v])
        });
        img.save(tmp.join(class).join(format!("{i:02}.png"))).unwrap();
    }
    let spec = || {
        let mut s = DataSpec::new(&tmp);
        s.preset = kiln::preprocess::Preset::Raw;
        s
    };
    let mem = TrainSet::load(spec(), 1 << 30).unwrap();
    let streamed = TrainSet::load(spec(), 1000).unwrap();
    assert!(!mem.is_streamed() && streamed.is_streamed());
    assert_eq!(
        (mem.len(), mem.shape, &mem.y),
        (streamed.len(), streamed.shape, &streamed.y)
    );
    let aug = Augment { flip: true, shift: 2 };
    let idx = [3, 17, 0, 22, 9];
    let a = mem
        .gather(&idx, &aug, &mut kiln_train::data::Rng::new(&[5]))
        .unwrap();
    let b = streamed
        .gather(&idx, &aug, &mut kiln_train::data::Rng::new(&[5]))
        .unwrap();
    assert_eq!(a, b);
    let mut zc = kiln_zoo::ZooConfig::new(kiln_zoo::Arch::FmnistMnv2);
    zc.width = 0.25;
    zc.input = [3, 20, 20];
    zc.classes = 2;
    let student = kiln_zoo::build(&zc).unwrap();
    let cfg = FitConfig {
        epochs: 1,
        batch: 8,
        threads: 1,
        out_dir: tmp.join("run"),
        ..FitConfig::default()
    };
    let r = fit(
        &student,
        &streamed.slice(0..16),
        Some(&streamed.slice(16..24)),
        &cfg,
        &mut |_| {},
    )
    .unwrap();
    assert!(r.history[0].val_top1.is_some() && r.history[0].train_loss.is_finite());
    // IDX data past the cap is refused with its size, before allocating.
    let mut s = DataSpec::new(fixtures().join("fashion-mnist"));
    s.split = Some(Split::Train);
    let e = TrainSet::load(s, 1 << 20).unwrap_err();
    assert!(e.message.contains("MiB") && e.message.contains("cap"), "{e}");
    let _ = std::fs::remove_dir_all(&tmp);
}

/// [CI] QAT smoke: 200 quantization-aware steps on 3,200 training images give
/// a QDQ model that kiln's int8 runtime and ONNX Runtime run with equal top-1
/// on 1,000 test images (and nearly always the same answer per image).
#[test]
fn qat_smoke_exports_qdq_that_kiln_and_onnxruntime_agree_on() {
    let m = fmnist_model();
    let train = fmnist(Split::Train, 0..3200);
    let start = kiln_train::qat::prepare_qat(&m, &train.slice(0..500), kiln_ir::DType::U8).unwrap();
    assert!(
        start.spec.acts.len() >= 20,
        "{} quantization points",
        start.spec.acts.len()
    );
    let tmp = std::env::temp_dir().join(format!("kiln-train-qat-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let cfg = FitConfig {
        epochs: 1,
        batch: 16,
        lr: 1e-4,
        threads: 2,
        out_dir: tmp.join("run"),
        ..FitConfig::default()
    };
    let r = kiln_train::fit_with(
        &start.prepared,
        &train,
        None,
        &cfg,
        None,
        Some(&start.spec),
        &mut |_| {},
    )
    .unwrap();
    let qdq = r.model;
    let nq = qdq
        .graph
        .nodes
        .iter()
        .filter(|n| n.op_type == "QuantizeLinear")
        .count();
    assert!(nq >= 20, "{nq} QuantizeLinear nodes");
    // The exported file is the QDQ model too (kiln's fused ops lowered to standard ONNX).
    let saved = kiln::load_model(&tmp.join("run/model.onnx")).unwrap();
    let nq_saved = saved
        .graph
        .nodes
        .iter()
        .filter(|n| n.op_type == "QuantizeLinear")
        .count();
    assert_eq!(nq_saved, nq);
    assert!(saved.graph.nodes.iter().all(|n| n.domain.is_empty()));
    // kiln (compiled, int8 kernels) vs ONNX Runtime on 1,000 test images.
    let test = fmnist(Split::Test, 0..1000);
    let x = kiln_ir::Tensor::from_vec(vec![1000, 1, 28, 28], test.inputs(0..1000).unwrap()).unwrap();
    let cm = kiln::compile_model(qdq.clone(), &Default::default()).unwrap();
    let ours = cm.run(&mut cm.new_state(1), vec![x.clone()]).unwrap()[0].to_f32_vec();
    let model_path = tmp.join("qat.onnx");
    kiln_onnx::save(&qdq, &model_path).unwrap();
    let xin = tmp.join("x.npy");
    kiln::npy::write_npy(&xin, &x).unwrap();
    let out = tmp.join("ort");
    let st = std::process::Command::new(fixtures().join("venv/bin/python"))
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/ort_run.py"))
        .arg(&model_path)
        .arg(&out)
        .arg(&xin)
        .output()
        .unwrap();
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    let theirs = kiln::npy::read_npy(&out.join("00.npy")).unwrap().to_f32_vec();
    let top1 = |l: &[f32]| -> Vec<usize> {
        l.chunks_exact(10)
            .map(|r| kiln::eval::argmax(r).unwrap())
            .collect()
    };
    let (a, b) = (top1(&ours), top1(&theirs));
    let acc = |p: &[usize]| p.iter().zip(&test.y).filter(|(p, y)| **p == **y as usize).count();
    let agree = a.iter().zip(&b).filter(|(x, y)| x == y).count();
    eprintln!(
        "QAT smoke: kiln {} / ORT {} correct of 1000, agreement {agree}",
        acc(&a),
        acc(&b)
    );
    assert_eq!(acc(&a), acc(&b), "kiln and ONNX Runtime top-1 differ");
    assert!(agree >= 995, "agreement {agree}/1000");
    assert!(acc(&a) >= 850, "QAT model top-1 {}/1000", acc(&a));
    let _ = std::fs::remove_dir_all(&tmp);
}
