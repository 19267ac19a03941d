//! EfficientNet-Lite0 int8 (issue 4): calibrated on the 9 scikit-image colour
//! photos (never on the evaluation photos), exported as QDQ ONNX, loaded
//! back and run with kiln's integer kernels on the 20 labelled ImageNet
//! photos: top-1 equals fp32 on at least 19 of 20, top-1 accuracy at least
//! 17/20, file at most 5.5 MB; the logit SQNR is printed.

mod common;

use common::fixtures;
use kiln::data::{DataSpec, Dataset, LabelMode};
use kiln::eval::{argmax, sqnr_db};
use kiln::ir::Tensor;
use kiln::preprocess::Preset;
use kiln::quant::{quantize_with_data, Method, QuantOptions};
use kiln::runtime::Session;

fn images(dir: &str, labels: LabelMode) -> Vec<(Tensor, Option<usize>)> {
    let spec = DataSpec {
        preset: Preset::EfficientNetLite,
        labels,
        ..DataSpec::new(fixtures().join(dir))
    };
    let ds = Dataset::open(spec).unwrap();
    ds.samples()
        .unwrap()
        .map(|s| s.map(|s| (s.input, s.label)).unwrap())
        .collect()
}

#[test]
fn effnet_int8_calibrated_on_photos_keeps_top1() {
    let fp32 = kiln::load_model(&fixtures().join("models/efficientnet-lite0.onnx")).unwrap();
    let mut calib: Vec<Vec<Tensor>> = images("images/photos", LabelMode::None)
        .into_iter()
        .map(|(t, _)| vec![t])
        .collect();
    assert_eq!(calib.len(), 9, "the 9 colour photos");
    let (q, report) = quantize_with_data(&fp32, &mut calib, &QuantOptions::default(), &mut |_| {}).unwrap();
    assert_eq!(QuantOptions::default().method, Method::MinMax);
    let work = std::env::temp_dir().join(format!("kiln-qeff-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    let file = work.join("effnet_int8.onnx");
    kiln::onnx::save(&q, &file).unwrap();
    let bytes = std::fs::metadata(&file).unwrap().len();
    let fp32_bytes = std::fs::metadata(fixtures().join("models/efficientnet-lite0.onnx"))
        .unwrap()
        .len();
    let int8 = Session::new(kiln::load_model(&file).unwrap()).unwrap();
    let lowered = int8.qdq_report().lowered.get("QConv").copied().unwrap_or(0);
    let reference = Session::new(fp32).unwrap();
    let eval = images("images/imagenet", LabelMode::FileName);
    assert_eq!(eval.len(), 20);
    let (mut same, mut ok8, mut ok32) = (0, 0, 0);
    let (mut all32, mut all8) = (Vec::new(), Vec::new());
    for (x, label) in &eval {
        let a = reference.run(vec![x.clone()]).unwrap()[0].to_f32_vec();
        let b = int8.run(vec![x.clone()]).unwrap()[0].to_f32_vec();
        let (ta, tb) = (argmax(&a), argmax(&b));
        same += (ta == tb) as usize;
        ok32 += (ta == *label) as usize;
        ok8 += (tb == *label) as usize;
        all32.extend(a);
        all8.extend(b);
    }
    let sq = sqnr_db(&all32, &all8);
    println!(
        "EfficientNet-Lite0 int8 (MinMax, per-channel, 9 photos): file {bytes} B (fp32 {fp32_bytes} B), \
         {lowered} QConv, top-1 same as fp32 {same}/20, int8 top-1 {ok8}/20 (fp32 {ok32}/20), logit SQNR {sq:.2} dB"
    );
    println!("{report}");
    // kiln's own QDQ file on the compiled int8 runtime: bit-identical to the
    // reference integer path, on every ISA level the CPU runs.
    for isa in kiln::runtime::Isa::runnable() {
        let opts = kiln::runtime::CompileOptions {
            max_isa: Some(isa),
            ..Default::default()
        };
        let cm = kiln::compile(&file, &opts).unwrap();
        let info = cm.plan_info(&[vec![1, 3, 224, 224]]).unwrap();
        assert!(
            info.fallback_ops.is_empty(),
            "fallback ops at {isa}: {:?}",
            info.fallback_ops
        );
        let mut st = cm.new_state(2);
        for (x, _) in eval.iter().take(3) {
            let want = int8.run(vec![x.clone()]).unwrap()[0].to_f32_vec();
            let got = cm.run(&mut st, vec![x.clone()]).unwrap()[0].to_f32_vec();
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(&got),
                bits(&want),
                "compiled int8 at {isa} differs from the reference integer path"
            );
        }
        println!("compiled int8 at {isa}: bit-identical on 3 photos, no fallback");
    }
    let _ = std::fs::remove_dir_all(&work);
    assert_eq!(lowered, 49, "every convolution runs on the integer kernel");
    assert!(same >= 19, "top-1 equal to fp32 on {same}/20");
    assert!(ok8 >= 17, "int8 top-1 {ok8}/20");
    assert!(bytes <= 5_500_000, "int8 file is {bytes} bytes");
}
