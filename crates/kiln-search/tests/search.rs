//! Device profiles, the probe, the cost model and the energy estimate on
//! real input: the shipped profiles, this machine, and the Fashion-MNIST
//! MobileNetV2-style net of `models/`.

use kiln::ir::Tensor;
use kiln::runtime::CompileOptions;
use kiln_search::cost::{kernel_class, plan_steps, profile_steps, Calibration, StepCost};
use kiln_search::device::{shipped, shipped_names, DeviceProfile};
use kiln_search::energy::{estimate, PJ_MAC_F32, PJ_MAC_INT8};
use kiln_search::probe::{probe, ProbeOptions};
use kiln_search::ErrorKind;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn shipped_profiles_parse_validate_and_round_trip() {
    let all = shipped();
    assert_eq!(all.len(), shipped_names().len());
    assert!(all.len() >= 3);
    for p in &all {
        let back = DeviceProfile::parse(&p.to_toml(), "round trip").unwrap();
        assert_eq!(&back, p);
        assert!(p.sources.len() >= 8, "{}: every figure has a source", p.name);
        assert_eq!(DeviceProfile::resolve(&p.name).unwrap(), *p);
    }
    // The files on disk are the ones compiled in.
    for name in shipped_names() {
        let path = repo().join(format!("crates/kiln-search/profiles/{name}.toml"));
        assert_eq!(DeviceProfile::load(&path).unwrap().name, name);
    }
}

#[test]
fn bad_profiles_are_refused_naming_file_and_field() {
    let good = shipped().remove(0).to_toml();
    let cases = [
        (good.replace("cores = 4", "cores = 0"), "cores"),
        (good.replace("cores = 4", "cores = 4\nturbo = true"), "turbo"),
        (good.replace("power_w = 6.4", "power_w = -1.0"), "power_w"),
        (good.replace("isa = [\"neon\"]", "isa = [\"sse9\"]"), "sse9"),
        (
            good.lines()
                .filter(|l| !l.starts_with("power_w = \""))
                .collect::<Vec<_>>()
                .join("\n"),
            "no source for 'power_w'",
        ),
        (
            good.replace("clock_ghz = 1.5", "clock_ghz = \"fast\""),
            "clock_ghz",
        ),
    ];
    for (text, needle) in cases {
        let e = DeviceProfile::parse(&text, "board.toml").unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidProfile, "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("board.toml") && msg.contains(needle),
            "{msg} (wanted {needle})"
        );
    }
    let e = DeviceProfile::resolve("no-such-board").unwrap_err();
    assert!(e.to_string().contains("rpi4-cortex-a72"), "{e}");
}

#[test]
fn probe_measures_this_machine() {
    let p = probe(&ProbeOptions {
        name: Some("ci".into()),
        power_w: Some(15.0),
        quick: true,
    })
    .unwrap();
    assert_eq!(p.name, "ci");
    assert!(p.cores >= 1);
    assert!(p.peak.f32_gflops > 0.1 && p.peak.i8_gops > 0.1, "{:?}", p.peak);
    assert!(p.memory_bandwidth_gbs > 0.1);
    assert!(p.sources["peak"].contains("measured by kiln probe"));
    assert_eq!(DeviceProfile::parse(&p.to_toml(), "probe").unwrap(), p);
}

fn fmnist() -> kiln::runtime::CompiledModel {
    kiln::compile(
        &repo().join("models/fmnist_mnv2.onnx"),
        &CompileOptions::default(),
    )
    .unwrap()
}

fn input(batch: usize) -> Tensor {
    let n = batch * 28 * 28;
    let data: Vec<f32> = (0..n).map(|i| ((i * 7919) % 255) as f32 / 255.0).collect();
    Tensor::from_vec(vec![batch, 1, 28, 28], data).unwrap()
}

/// The roofline fitted to a profiled run reproduces that run's total time
/// (a fit-quality check on the data it was fitted to, not a speed check),
/// scales to slower shipped devices, and survives a save / load.
#[test]
fn cost_model_calibrates_on_a_real_model_and_scales_to_devices() {
    let cm = fmnist();
    let host = probe(&ProbeOptions {
        quick: true,
        power_w: Some(15.0),
        ..Default::default()
    })
    .unwrap();
    let x = input(8);
    let samples = profile_steps(&cm, std::slice::from_ref(&x), 1, 2, 7).unwrap();
    assert!(samples.len() > 10);
    assert!(
        samples.iter().all(|s| s.step.bytes > 0),
        "every step touches memory"
    );
    let measured: f64 = samples.iter().map(|s| s.seconds).sum::<f64>() * 1e3;
    let cal = Calibration::fit(&host, vec!["fmnist_mnv2".into()], &[(1, samples.clone())]).unwrap();
    assert!(cal.fits.iter().any(|f| f.class == "*"));
    let steps: Vec<StepCost> = plan_steps(&cm, &[vec![8, 1, 28, 28]]).unwrap();
    assert_eq!(steps.len(), samples.len());
    let pred = cal.predict(&steps, 1, &host).unwrap();
    assert_eq!(pred.cross_precision_steps, 0, "fp32 model, fp32 calibration");
    let ratio = pred.total_ms / measured;
    assert!(
        (0.6..1.6).contains(&ratio),
        "predicted {} ms vs measured {measured} ms",
        pred.total_ms
    );
    // A Cortex-A55 cluster is slower than any x86 host kiln's tests run on.
    let a55 = DeviceProfile::resolve("phone-cortex-a55").unwrap();
    let slow = cal.predict(&steps, 1, &a55).unwrap();
    assert!(
        slow.total_ms > pred.total_ms,
        "{} vs {}",
        slow.total_ms,
        pred.total_ms
    );
    let e = cal.predict(&steps, 64, &a55).unwrap_err();
    assert!(e.to_string().contains("4 cores"), "{e}");
    // Save / load.
    let dir = std::env::temp_dir().join(format!("kiln-search-cal-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("cal.json");
    cal.save(&f).unwrap();
    assert_eq!(Calibration::load(&f).unwrap(), cal);
    std::fs::remove_dir_all(&dir).ok();
    // Classes are ISA-free, so the calibration covers every ISA level.
    assert!(
        cal.fits.iter().all(|f| !f.class.contains("avx")),
        "{:?}",
        kernel_class("x")
    );
}

#[test]
fn energy_estimate_follows_horowitz_and_the_device() {
    let dev = DeviceProfile::resolve("rpi4-cortex-a72").unwrap();
    let f32_step = StepCost {
        node: "conv".into(),
        kernel: "conv_f32_avx2_pointwise".into(),
        flops: 2_000_000,
        bytes: 1_000,
    };
    let i8_step = StepCost {
        kernel: "qgemm_u8i8_avx2_6x16".into(),
        ..f32_step.clone()
    };
    let ef = estimate(std::slice::from_ref(&f32_step), &dev, Some(2.0));
    let ei = estimate(std::slice::from_ref(&i8_step), &dev, None);
    // 1e6 MACs x 4.6 pJ = 4.6 uJ = 4.6e-3 mJ.
    assert!((ef.compute_mj - 1e6 * PJ_MAC_F32 * 1e-9).abs() < 1e-12);
    assert!((ei.compute_mj - 1e6 * PJ_MAC_INT8 * 1e-9).abs() < 1e-12);
    assert!(ef.compute_mj > 10.0 * ei.compute_mj);
    assert_eq!(ef.power_mj, Some(6.4 * 2.0));
    assert!(ef.source.contains("Horowitz"));
    // Bytes beyond the last-level cache cost DRAM energy.
    let big = StepCost {
        bytes: 64 << 20,
        flops: 0,
        ..f32_step
    };
    let small = StepCost {
        bytes: 16 << 10,
        ..big.clone()
    };
    let eb = estimate(&[big], &dev, None).memory_mj / (64u64 << 20) as f64;
    let es = estimate(&[small], &dev, None).memory_mj / (16u64 << 10) as f64;
    assert!(eb > 50.0 * es, "{eb} vs {es} mJ/byte");
}
