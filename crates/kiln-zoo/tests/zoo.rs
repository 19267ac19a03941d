//! The zoo's architectures: structure, reference eval, ONNX Runtime agreement,
//! MAC counts, EfficientNet-Lite0 with the fixture's weights, and config errors.

use kiln::ir::{infer, Dim, Model, Tensor};
use kiln::Session;
use kiln_zoo::{build, efficientnet_lite0_from_onnx, Arch, ZooConfig, ZooError};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The fixtures folder (env KILN_FIXTURES, else `<workspace>/.fixtures`);
/// panics with instructions when missing: tests never skip silently.
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

fn scratch(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.shape(), b.shape(), "shapes differ");
    let (a, b) = (a.to_f32_vec(), b.to_f32_vec());
    a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// A deterministic input batch in [0, 1).
fn input(n: usize, [c, h, w]: [usize; 3], seed: u64) -> Tensor {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let data = (0..n * c * h * w)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32
        })
        .collect();
    Tensor::from_vec(vec![n, c, h, w], data).unwrap()
}

/// Small configs of every architecture: width 0.5 (ShuffleNetV2 and
/// FmnistMnv2 also at 1.0) on `[3, 64, 64]` and `[1, 28, 28]`.
fn small_configs() -> Vec<ZooConfig> {
    let mut v = Vec::new();
    for arch in Arch::ALL {
        for (input, width) in [([3, 64, 64], 0.5), ([1, 28, 28], 0.5), ([1, 28, 28], 1.0)] {
            if width == 1.0 && !matches!(arch, Arch::FmnistMnv2 | Arch::ShuffleNetV2) {
                continue;
            }
            v.push(ZooConfig {
                arch,
                width,
                input,
                classes: 7,
                seed: 1,
            });
        }
    }
    v
}

const OPS: [&str; 19] = [
    "Conv",
    "BatchNormalization",
    "Relu",
    "Clip",
    "HardSigmoid",
    "HardSwish",
    "Sigmoid",
    "Mul",
    "Add",
    "GlobalAveragePool",
    "MaxPool",
    "AveragePool",
    "Flatten",
    "Gemm",
    "Concat",
    "Split",
    "Reshape",
    "Transpose",
    "Identity",
];

/// Structure every zoo graph must have: one input `input` [batch, C, H, W],
/// one output `logits` [batch, classes], ops from the training set only,
/// unique node names, every Conv either bias-free and followed by its own
/// BatchNormalization, or a squeeze-excite 1x1 with bias.
fn check_structure(cfg: &ZooConfig, m: &mut Model) {
    let what = format!("{} w{} {:?}", cfg.arch.name(), cfg.width, cfg.input);
    let g = &m.graph;
    assert_eq!(g.inputs.len(), 1, "{what}");
    assert_eq!(g.inputs[0].name, "input");
    let mut want: Vec<Dim> = vec![Dim::Sym("batch".into())];
    want.extend(cfg.input.iter().map(|&d| Dim::Known(d)));
    assert_eq!(g.inputs[0].ty.shape.as_ref().unwrap(), &want, "{what}");
    assert_eq!(g.outputs.len(), 1);
    assert_eq!(g.outputs[0].name, "logits");
    let mut names = HashSet::new();
    for n in &g.nodes {
        assert!(
            OPS.contains(&n.op_type.as_str()),
            "{what}: op {} outside the training set",
            n.op_type
        );
        assert!(
            names.insert(n.name.as_str()),
            "{what}: node name {} twice",
            n.name
        );
        if n.op_type == "Conv" {
            let users: Vec<_> = g
                .nodes
                .iter()
                .filter(|u| u.inputs.contains(&n.outputs[0]))
                .collect();
            if n.inputs.len() == 2 {
                assert!(
                    users.len() == 1 && users[0].op_type == "BatchNormalization",
                    "{what}: {} is not followed by its BatchNormalization",
                    n.name
                );
                assert_eq!(users[0].name, n.name.replace(".conv", ".bn"));
            } else {
                assert!(n.name.contains(".se.fc"), "{what}: {} has a bias", n.name);
            }
        }
        if n.op_type == "BatchNormalization" {
            let eps = n.attr_float("epsilon", 0.0).unwrap();
            let want = if matches!(cfg.arch, Arch::MobileNetV3Small | Arch::EfficientNetLite(_)) {
                1e-3
            } else {
                1e-5
            };
            assert_eq!(eps, want, "{what}: {} epsilon", n.name);
        }
        for i in &n.inputs[1..] {
            if g.initializers.contains_key(i) {
                assert!(
                    i.starts_with(&n.name) || i.starts_with("relu6."),
                    "{what}: initializer {i} of {}",
                    n.name
                );
            }
        }
    }
    assert_eq!(m.opset(), 14);
    infer::infer_types(m).unwrap_or_else(|e| panic!("{what}: {e}"));
    let ty = &m.graph.value_types["logits"];
    assert_eq!(
        ty.shape.as_ref().unwrap(),
        &vec![Dim::Sym("batch".into()), Dim::Known(cfg.classes)],
        "{what}"
    );
}

#[test]
fn every_arch_builds_validates_and_runs() {
    for cfg in small_configs() {
        let mut m = build(&cfg).unwrap();
        check_structure(&cfg, &mut m);
        let out = Session::new(m)
            .unwrap()
            .run(vec![input(2, cfg.input, 3)])
            .unwrap()
            .remove(0);
        assert_eq!(out.shape(), &[2, cfg.classes]);
        let v = out.to_f32_vec();
        assert!(
            v.iter().all(|x| x.is_finite()),
            "{}: non-finite logits",
            cfg.arch.name()
        );
        assert!(
            v.iter().any(|&x| x != 0.0),
            "{}: all-zero logits",
            cfg.arch.name()
        );
    }
}

#[test]
fn names_round_trip() {
    for a in Arch::ALL {
        assert_eq!(Arch::from_name(&a.name()).unwrap(), a);
    }
    assert_eq!(Arch::EfficientNetLite(4).name(), "efficientnet-lite4");
    assert!(matches!(
        Arch::from_name("resnet50"),
        Err(ZooError::UnknownArch(_))
    ));
}

#[test]
fn initialisation_is_deterministic_and_seeded() {
    for arch in Arch::ALL {
        let cfg = ZooConfig {
            input: [3, 32, 32],
            classes: 5,
            seed: 42,
            ..ZooConfig::new(arch)
        };
        let (a, b) = (build(&cfg).unwrap(), build(&cfg).unwrap());
        assert_eq!(
            kiln::onnx::to_bytes(&a).unwrap(),
            kiln::onnx::to_bytes(&b).unwrap(),
            "{}",
            arch.name()
        );
        let c = build(&ZooConfig {
            seed: 43,
            ..cfg.clone()
        })
        .unwrap();
        for (name, t) in &a.graph.initializers {
            let other = &c.graph.initializers[name];
            // Conv and Gemm weights are random; the rest (BN, biases, constants) are fixed.
            let random = name.ends_with(".weight") && !name.contains(".bn.");
            assert_eq!(t != other, random, "{}: {name}", arch.name());
        }
        // Kaiming normal, fan out: the stem weights have std sqrt(2 / (C_out * 9)).
        let (stem, w) = a
            .graph
            .initializers
            .iter()
            .find(|(n, _)| n.ends_with(".conv.weight"))
            .unwrap();
        let v = w.to_f32_vec();
        let std = (v.iter().map(|x| x * x).sum::<f32>() / v.len() as f32).sqrt();
        let want = (2.0 / (w.shape()[0] * 9) as f32).sqrt();
        assert!((std / want - 1.0).abs() < 0.35, "{stem}: std {std}, want {want}");
    }
}

/// scripts/train_fmnist.py's net at width 1: the committed export
/// (models/fmnist_mnv2.onnx, BN folded into the convs) has the same convs,
/// in the same order, with the same weight shapes, strides, pads and groups,
/// and the script's parameter count.
#[test]
fn fmnist_mnv2_is_the_training_script_net() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/fmnist_mnv2.onnx");
    let trained = kiln::onnx::load(&path).unwrap();
    let zoo = build(&ZooConfig::new(Arch::FmnistMnv2)).unwrap();
    let convs = |m: &Model| -> Vec<String> {
        m.graph
            .nodes
            .iter()
            .filter(|n| matches!(n.op_type.as_str(), "Conv" | "Gemm"))
            .map(|n| {
                let ints = |a: &str| n.attr_ints_opt(a).unwrap().unwrap_or_default();
                let w = m.graph.initializers[&n.inputs[1]].shape().to_vec();
                format!(
                    "{} weight {w:?} strides {:?} pads {:?} group {}",
                    n.op_type,
                    ints("strides"),
                    ints("pads"),
                    n.attr_int("group", 1).unwrap()
                )
            })
            .collect()
    };
    assert_eq!(convs(&zoo), convs(&trained));
    let adds = |m: &Model| m.graph.nodes.iter().filter(|n| n.op_type == "Add").count();
    assert_eq!(adds(&zoo), adds(&trained));
    // models/fmnist_mnv2.md: 159,162 learnable parameters in torch.
    assert_eq!(stats(&ZooConfig::new(Arch::FmnistMnv2)).1, 159_162);
}

/// Each architecture, exported with kiln_onnx::save, gives the same logits in
/// ONNX Runtime (scripts/ort_run.py in the fixtures venv) as kiln's reference
/// executor: max abs diff <= 1e-4, batch 2.
#[test]
fn exported_onnx_matches_onnxruntime() {
    let py = fixtures().join("venv/bin/python");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/ort_run.py");
    let dir = scratch("zoo_ort");
    let mut worst = 0f32;
    for (i, cfg) in small_configs().into_iter().enumerate() {
        let mut m = build(&cfg).unwrap();
        perturb(&mut m, i as u64);
        let (mp, xp, out) = (
            dir.join(format!("{i}.onnx")),
            dir.join(format!("{i}.npy")),
            dir.join(format!("out{i}")),
        );
        kiln::onnx::save(&m, &mp).unwrap();
        let x = input(2, cfg.input, i as u64);
        kiln::npy::write_npy(&xp, &x).unwrap();
        let got = Session::new(m).unwrap().run(vec![x]).unwrap().remove(0);
        let st = Command::new(&py)
            .arg(&script)
            .arg(&mp)
            .arg(&out)
            .arg(&xp)
            .output()
            .expect("run python");
        assert!(
            st.status.success(),
            "ONNX Runtime failed on {}: {}",
            cfg.arch.name(),
            String::from_utf8_lossy(&st.stderr)
        );
        let want = kiln::npy::read_npy(&out.join("00.npy")).unwrap();
        let d = max_abs_diff(&got, &want);
        let scale = got.to_f32_vec().iter().fold(0f32, |a, x| a.max(x.abs()));
        println!(
            "{} w{} {:?}: max |logit| {scale:.3}, max abs diff {d:e}",
            cfg.arch.name(),
            cfg.width,
            cfg.input
        );
        assert!(
            scale > 0.1,
            "{}: logits too small ({scale}) to compare",
            cfg.arch.name()
        );
        assert!(
            d <= 1e-4,
            "{} w{} {:?}: max abs diff {d} > 1e-4",
            cfg.arch.name(),
            cfg.width,
            cfg.input
        );
        worst = worst.max(d);
    }
    println!("worst max abs diff: {worst:e}");
}

/// Makes every weight matter at O(1) activations (a fresh net in eval mode
/// shrinks its activations towards 0: fan-out init of depthwise convs, identity
/// BN statistics): conv weights rescaled to std 1/sqrt(fan-in), Gemm weights to
/// std 1/sqrt(K), BN gamma, beta, mean and var drawn around their defaults.
fn perturb(m: &mut Model, seed: u64) {
    let bn: HashSet<String> = m
        .graph
        .nodes
        .iter()
        .filter(|n| n.op_type == "BatchNormalization")
        .flat_map(|n| n.inputs[1..].to_vec())
        .collect();
    for (i, (name, t)) in m.graph.initializers.iter_mut().enumerate() {
        let sh = t.shape().to_vec();
        let v = t.to_f32_vec();
        let scale = match sh.len() {
            4 => (sh[0] as f32 / (2.0 * sh[1] as f32)).sqrt(),
            2 => 100.0 / (sh[1] as f32).sqrt(),
            _ => 1.0,
        };
        let noise = input(1, [1, 1, v.len()], seed + i as u64).to_f32_vec();
        let v: Vec<f32> = if bn.contains(name) {
            let (lo, width) = if name.ends_with("weight") || name.ends_with("var") {
                (0.5, 1.0)
            } else {
                (-0.2, 0.4)
            };
            noise.iter().map(|u| lo + width * u).collect()
        } else if t.dtype() == kiln::ir::DType::F32 && !sh.is_empty() {
            v.iter()
                .zip(&noise)
                .map(|(x, u)| x * scale + if sh.len() == 1 { u - 0.5 } else { 0.0 })
                .collect()
        } else {
            continue;
        };
        *t = Tensor::from_vec(sh, v).unwrap();
    }
}

/// (MACs, learnable parameters) at `cfg`.
fn stats(cfg: &ZooConfig) -> (u64, u64) {
    let m = build(cfg).unwrap();
    let s = kiln::stats::model_stats(&m, &HashMap::new()).unwrap();
    (s.macs.unwrap(), s.learnable_params)
}

/// Conv + Gemm MACs at the reference resolution, width 1, against the papers
/// (±10%) and, for EfficientNet-Lite0, the fixture's exact 385.19M; learnable
/// parameters (weights, biases, BN gamma and beta) exactly torchvision's
/// (`sum(p.numel() for p in model.parameters())`) and the Lite0 checkpoint's.
#[test]
fn mac_counts_match_the_papers() {
    for (arch, want, params) in [
        (Arch::MobileNetV2, 300e6, 3_504_872),
        (Arch::MobileNetV3Small, 56e6, 2_542_856),
        (Arch::ShuffleNetV2, 146e6, 2_278_604),
        (Arch::EfficientNetLite(0), 385.19e6, 4_652_008),
    ] {
        let (macs, p) = stats(&ZooConfig::new(arch));
        let got = macs as f64;
        println!(
            "{}: {:.2}M MACs (reference {:.2}M), {p} params",
            arch.name(),
            got / 1e6,
            want / 1e6
        );
        assert!(
            (got / want - 1.0).abs() <= 0.10,
            "{}: {got} MACs, want {want} ± 10%",
            arch.name()
        );
        assert_eq!(p, params, "{}: learnable parameters", arch.name());
    }
    let lite0 = stats(&ZooConfig::new(Arch::EfficientNetLite(0))).0;
    assert!(
        lite0.abs_diff(385_190_000) < 10_000,
        "EfficientNet-Lite0: {lite0} MACs"
    );
    for v in 1..=4 {
        let cfg = ZooConfig::new(Arch::EfficientNetLite(v));
        let (m, p) = stats(&cfg);
        println!(
            "{} at {:?}: {:.2}M MACs, {p} params",
            cfg.arch.name(),
            cfg.input,
            m as f64 / 1e6
        );
    }
    let (m, p) = stats(&ZooConfig::new(Arch::FmnistMnv2));
    println!(
        "fmnist-mnv2 at [1, 28, 28]: {:.2}M MACs, {p} params",
        m as f64 / 1e6
    );
}

/// The builder's EfficientNet-Lite0 carrying the fixture's weights gives the
/// fixture's logits (ONNX Runtime's, on the 20 preprocessed ImageNet photos)
/// within 1e-4 in kiln's reference executor.
#[test]
fn lite0_with_fixture_weights_reproduces_the_fixture() {
    let f = fixtures();
    let fixture = kiln::onnx::load(&f.join("models/efficientnet-lite0.onnx")).unwrap();
    let zoo = efficientnet_lite0_from_onnx(&fixture).unwrap();
    assert!(zoo.graph.nodes.iter().any(|n| n.name == "blocks.15.dw.conv"));
    let histogram = |m: &Model| {
        let mut h: Vec<String> = m.graph.nodes.iter().map(|n| n.op_type.clone()).collect();
        h.sort();
        h
    };
    assert_eq!(histogram(&zoo), histogram(&fixture));
    let session = Session::new(zoo).unwrap();
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(f.join("reference/effnet"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".input.npy"))
        .collect();
    inputs.sort();
    assert_eq!(inputs.len(), 20, "expected the 20 preprocessed photos");
    let mut worst = 0f32;
    for p in inputs {
        let x = kiln::npy::read_npy(&p).unwrap();
        let want = kiln::npy::read_npy(&PathBuf::from(
            p.to_string_lossy().replace(".input.npy", ".ort.npy"),
        ))
        .unwrap();
        let got = session.run(vec![x]).unwrap().remove(0);
        let d = max_abs_diff(&got, &want);
        assert!(d <= 1e-4, "{}: max abs diff {d} > 1e-4", p.display());
        worst = worst.max(d);
    }
    println!("worst max abs diff over 20 photos: {worst:e}");
}

#[test]
fn lite0_weights_must_fit() {
    let f = fixtures();
    let mut fixture = kiln::onnx::load(&f.join("models/efficientnet-lite0.onnx")).unwrap();
    let conv = fixture
        .graph
        .nodes
        .iter_mut()
        .find(|n| n.op_type == "Conv")
        .unwrap();
    conv.attrs
        .insert("pads".into(), kiln::ir::Attribute::Ints(vec![1, 1, 1, 1]));
    let e = efficientnet_lite0_from_onnx(&fixture).unwrap_err().to_string();
    assert!(e.contains("stem.conv") && e.contains("pads"), "{e}");
}

#[test]
fn bad_configs_name_arch_and_parameter() {
    let err = |cfg: ZooConfig| build(&cfg).unwrap_err().to_string();
    let e = err(ZooConfig {
        width: 0.75,
        ..ZooConfig::new(Arch::ShuffleNetV2)
    });
    assert_eq!(
        e,
        "shufflenetv2: invalid width: 0.75 (ShuffleNetV2 has stage tables for 0.5, 1.0, 1.5, 2.0 only)"
    );
    let e = err(ZooConfig {
        input: [3, 15, 64],
        ..ZooConfig::new(Arch::MobileNetV2)
    });
    assert_eq!(
        e,
        "mobilenetv2: invalid input: [3, 15, 64] (need C >= 1 and H, W >= 16)"
    );
    let e = err(ZooConfig {
        input: [1, 28, 8],
        ..ZooConfig::new(Arch::FmnistMnv2)
    });
    assert!(e.starts_with("fmnist-mnv2: invalid input"), "{e}");
    let e = err(ZooConfig::new(Arch::EfficientNetLite(5)));
    assert!(e.starts_with("efficientnet-lite5: invalid variant: 5"), "{e}");
    let e = err(ZooConfig {
        width: f32::NAN,
        ..ZooConfig::new(Arch::MobileNetV3Small)
    });
    assert!(e.starts_with("mobilenetv3-small: invalid width"), "{e}");
    let e = err(ZooConfig {
        classes: 0,
        ..ZooConfig::new(Arch::MobileNetV2)
    });
    assert!(e.starts_with("mobilenetv2: invalid classes"), "{e}");
    // 16x16 is the smallest accepted input: the last feature map is still 2x2.
    for arch in Arch::ALL {
        let m = build(&ZooConfig {
            input: [3, 16, 16],
            ..ZooConfig::new(arch)
        })
        .unwrap();
        let pool = m.graph.nodes.iter().find(|n| n.name == "pool").unwrap();
        let mut m2 = m.clone();
        infer::infer_types(&mut m2).unwrap();
        let dims = m2.graph.value_types[&pool.inputs[0]].shape.clone().unwrap();
        let (h, w) = (dims[2].known().unwrap(), dims[3].known().unwrap());
        assert!(h >= 2 && w >= 2, "{}: last map {h}x{w}", arch.name());
    }
}
