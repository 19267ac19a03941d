//! Glue between [`crate::data`] and [`crate::quant`] (kiln-quant): datasets
//! as calibration data, and top-1 accuracy as the `evaluate` callback of
//! [`crate::quant::mixed_precision`].
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use kiln::data::{DataSpec, Dataset, LabelMode, Split};
//! use kiln::quant::{calibrate, mixed_precision, CalibOptions, QuantOptions};
//! use kiln::quantize::{evaluator, AccuracyOptions, DatasetCalibration};
//!
//! let model = kiln::load_model("models/fmnist_mnv2.onnx".as_ref())?;
//! let mut calib = DataSpec::new(".fixtures/fashion-mnist");
//! (calib.split, calib.range, calib.labels) = (Some(Split::Train), Some(0..500), LabelMode::None);
//! let calib = Dataset::open(calib)?;
//! let mut val = DataSpec::new(".fixtures/fashion-mnist");
//! (val.split, val.range) = (Some(Split::Train), Some(55_000..60_000));
//! let val = Dataset::open(val)?;
//!
//! let opts = QuantOptions::default();
//! let mut data = DatasetCalibration::for_model(&calib, &model, 32);
//! let stats = calibrate(&model, &mut data, &CalibOptions::for_method(opts.method), &mut |_| {})?;
//! let mut evaluate = evaluator(&val, AccuracyOptions::default());
//! let (qdq, report, mixed) = mixed_precision(&model, &stats, &opts, 0.5, &mut evaluate)?;
//! println!("{report}\n{mixed}");
//! kiln::onnx::save(&qdq, "fmnist_int8.onnx".as_ref())?;
//! # Ok(()) }
//! ```

use crate::data::Dataset;
use crate::eval::{evaluate, EvalModel, EvalOptions};
use crate::{Error, ErrorKind, Session};
use kiln_ir::{Dim, Model, Tensor};
use kiln_quant::{CalibrationData, QuantError, QuantErrorKind};
use kiln_runtime::SessionOptions;
use std::path::Path;

/// A [`Dataset`] as [`CalibrationData`]: each input set is one batch of
/// samples stacked along dim 0 ([`Dataset::batches`]), and every
/// [`CalibrationData::pass`] starts a fresh pass over the data, so the
/// two-pass calibration methods read the files twice and hold one batch at a
/// time.
///
/// The model must have a single input (the dataset yields one tensor per
/// sample). Data errors (a file that can no longer be read, a corrupt image)
/// stop calibration as [`QuantErrorKind::Data`] errors whose message names
/// the file.
#[derive(Debug, Clone)]
pub struct DatasetCalibration<'a> {
    data: &'a Dataset,
    batch: usize,
}

impl<'a> DatasetCalibration<'a> {
    /// Calibration input sets of `batch` samples each (the last one smaller;
    /// 0 is taken as 1). Use batches of more than one sample only for a model
    /// whose input has a symbolic leading dim ([`DatasetCalibration::for_model`]
    /// checks).
    pub fn new(data: &'a Dataset, batch: usize) -> DatasetCalibration<'a> {
        DatasetCalibration {
            data,
            batch: batch.max(1),
        }
    }

    /// As [`DatasetCalibration::new`], with the batch size `model` can run:
    /// `batch` when its first input's leading dim is symbolic, else 1
    /// ([`model_batch_size`]).
    pub fn for_model(data: &'a Dataset, model: &Model, batch: usize) -> DatasetCalibration<'a> {
        DatasetCalibration::new(data, model_batch_size(model, batch))
    }

    /// Samples per input set.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// The dataset.
    pub fn dataset(&self) -> &'a Dataset {
        self.data
    }
}

impl CalibrationData for DatasetCalibration<'_> {
    /// Number of batches in one pass.
    fn len(&self) -> Option<usize> {
        Some(self.data.len().div_ceil(self.batch))
    }

    fn pass(&mut self) -> kiln_quant::Result<Box<dyn Iterator<Item = kiln_quant::Result<Vec<Tensor>>> + '_>> {
        let batches = self.data.batches(self.batch).map_err(data_error)?;
        Ok(Box::new(
            batches.map(|b| b.map(|b| vec![b.input]).map_err(data_error)),
        ))
    }
}

/// A facade error as a calibration-data error (the message keeps the file).
fn data_error(e: Error) -> QuantError {
    QuantError::new(QuantErrorKind::Data, e.to_string())
}

/// The batch size `model` can run: `requested` (at least 1) when its first
/// graph input's leading dim is symbolic, else 1. The [`Model`] counterpart
/// of [`crate::eval::batch_size`].
pub fn model_batch_size(model: &Model, requested: usize) -> usize {
    let dynamic = model
        .graph
        .inputs
        .first()
        .and_then(|i| i.ty.shape.as_ref())
        .and_then(|s| s.first())
        .is_some_and(|d| matches!(d, Dim::Sym(_)));
    if dynamic {
        requested.max(1)
    } else {
        1
    }
}

/// How [`top1_percent`] runs a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccuracyOptions {
    /// Samples per run, for models with a symbolic batch dim (default 1;
    /// see [`crate::eval::batch_size`]).
    pub batch: usize,
    /// Threads per run (default: all available cores).
    pub threads: usize,
    /// Lower QDQ patterns onto integer kernels, as [`Session::new`] does
    /// (default true: the accuracy of the model as kiln runs it). False runs
    /// QDQ nodes as written, in float (faster with today's reference integer
    /// kernels, and what calibration sees).
    pub integer: bool,
}

impl Default for AccuracyOptions {
    fn default() -> AccuracyOptions {
        AccuracyOptions {
            batch: 1,
            threads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            integer: true,
        }
    }
}

/// Top-1 accuracy, in percent, of `model` over one pass of the labelled
/// dataset `data`: a [`Session`] is built from the model (with
/// `opts.integer` and `opts.threads`) and measured with
/// [`crate::eval::evaluate`]. `progress` is called with the number of
/// samples done after each batch.
///
/// Errors: a dataset without labels ([`ErrorKind::Decode`], naming the data);
/// a model that cannot be prepared or run; as [`crate::eval::evaluate`]
/// (a model with more than one input, an output that is not class scores, a
/// label past the class count, data errors naming the file). Errors about
/// the model name it `<model>` (it has no file).
pub fn top1_percent(
    model: &Model,
    data: &Dataset,
    opts: &AccuracyOptions,
    progress: &mut dyn FnMut(usize),
) -> Result<f64, Error> {
    if !data.has_labels() {
        return Err(Error::new(
            ErrorKind::Decode,
            "the data has no labels: accuracy needs labelled samples",
        )
        .with_file(&data.spec().path));
    }
    let file = Path::new("<model>");
    let session = Session::with_options(
        model.clone(),
        &SessionOptions {
            integer: opts.integer,
        },
    )
    .map_err(|e| Error::from(e).with_file(file))?
    .with_threads(opts.threads);
    let m = EvalModel {
        session: &session,
        file,
    };
    let r = evaluate(m, None, data, &EvalOptions { batch: opts.batch }, progress)?;
    r.accuracy
        .and_then(|a| a.top1_percent())
        .ok_or_else(|| Error::new(ErrorKind::Decode, "no labelled samples").with_file(&data.spec().path))
}

/// The `evaluate` callback of [`crate::quant::mixed_precision`]:
/// [`top1_percent`] over `data` with `opts`. Errors become
/// [`QuantErrorKind::Evaluate`] errors with the same message.
pub fn evaluator(
    data: &Dataset,
    opts: AccuracyOptions,
) -> impl FnMut(&Model) -> kiln_quant::Result<f64> + '_ {
    move |m: &Model| {
        top1_percent(m, data, &opts, &mut |_| {})
            .map_err(|e| QuantError::new(QuantErrorKind::Evaluate, e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{DataSpec, LabelMode};
    use kiln_ir::{DType, Graph, Node, OpsetImport, ValueInfo, ValueType};
    use kiln_quant::{calibrate, quantize, CalibOptions, LayerStatus, Method, QuantOptions};
    use std::path::PathBuf;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("kiln-quantize-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn idx_bytes(ty: u8, dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut v = vec![0, 0, ty, dims.len() as u8];
        for d in dims {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v.extend_from_slice(data);
        v
    }

    /// 10 images of 2x3 in t10k-* IDX files: image i lights pixel 2 * (i % 3)
    /// at 255 (the rest 0, except pixel 5 = i, so inputs differ), label i % 3
    /// except images 1, 5 and 9 (labelled wrong).
    fn idx_data(dir: &Path) {
        let mut px = vec![0u8; 10 * 6];
        let mut labels = Vec::new();
        for i in 0..10 {
            px[i * 6 + 2 * (i % 3)] = 255;
            px[i * 6 + 5] = i as u8;
            let l = if [1, 5, 9].contains(&i) { i + 1 } else { i };
            labels.push((l % 3) as u8);
        }
        std::fs::write(dir.join("t10k-images-idx3-ubyte"), idx_bytes(8, &[10, 2, 3], &px)).unwrap();
        std::fs::write(dir.join("t10k-labels-idx1-ubyte"), idx_bytes(8, &[10], &labels)).unwrap();
    }

    /// x [N, 1, 2, 3] -> Flatten -> Gemm (w [6, 3], b) -> y [N, 3]: class c
    /// scores pixel 2c (weight 1), plus small weights elsewhere.
    fn linear_model(batch: Dim) -> Model {
        let x_ty = ValueType::new(
            DType::F32,
            vec![batch.clone(), Dim::Known(1), Dim::Known(2), Dim::Known(3)],
        );
        let y_ty = ValueType::new(DType::F32, vec![batch, Dim::Known(3)]);
        let mut g = Graph {
            nodes: vec![
                Node::new("flatten", "Flatten", &["x"], &["f"]),
                Node::new("fc", "Gemm", &["f", "w", "b"], &["y"]),
            ],
            inputs: vec![ValueInfo {
                name: "x".into(),
                ty: x_ty,
            }],
            outputs: vec![ValueInfo {
                name: "y".into(),
                ty: y_ty,
            }],
            ..Default::default()
        };
        let mut w = vec![0.01f32; 18];
        for c in 0..3 {
            w[2 * c * 3 + c] = 1.0;
        }
        g.initializers
            .insert("w".into(), Tensor::from_vec(vec![6, 3], w).unwrap());
        g.initializers.insert(
            "b".into(),
            Tensor::from_vec(vec![3], vec![0.0, 0.01, -0.01]).unwrap(),
        );
        Model {
            graph: g,
            opsets: vec![OpsetImport {
                domain: String::new(),
                version: 13,
            }],
            ir_version: 8,
            ..Default::default()
        }
    }

    fn open(dir: &Path, labels: LabelMode) -> Dataset {
        let mut spec = DataSpec::new(dir);
        spec.labels = labels;
        Dataset::open(spec).unwrap()
    }

    #[test]
    fn dataset_calibration_batches_and_restarts() {
        let d = scratch("calib");
        idx_data(&d);
        let ds = open(&d, LabelMode::None);
        let mut c = DatasetCalibration::new(&ds, 4);
        assert_eq!(c.len(), Some(3));
        assert!(!c.is_empty());
        for _ in 0..2 {
            let shapes: Vec<Vec<usize>> = c
                .pass()
                .unwrap()
                .map(|s| {
                    let s = s.unwrap();
                    assert_eq!(s.len(), 1);
                    s[0].shape().to_vec()
                })
                .collect();
            assert_eq!(shapes, vec![vec![4, 1, 2, 3], vec![4, 1, 2, 3], vec![2, 1, 2, 3]]);
        }
        // The first pixel of the first input set is image 0's lit pixel 0: 255 / 255.
        let first = c.pass().unwrap().next().unwrap().unwrap();
        assert_eq!(first[0].to_f32_vec()[0], 1.0);

        // A fixed batch dim: one sample per input set.
        let fixed = DatasetCalibration::for_model(&ds, &linear_model(Dim::Known(1)), 4);
        assert_eq!((fixed.batch(), fixed.len()), (1, Some(10)));
        let dynamic = DatasetCalibration::for_model(&ds, &linear_model(Dim::Sym("N".into())), 4);
        assert_eq!(dynamic.batch(), 4);
        assert_eq!(DatasetCalibration::new(&ds, 0).batch(), 1);
    }

    #[test]
    fn data_errors_name_the_file() {
        let d = scratch("gone");
        idx_data(&d);
        let ds = open(&d, LabelMode::None);
        std::fs::remove_file(d.join("t10k-images-idx3-ubyte")).unwrap();
        let mut c = DatasetCalibration::new(&ds, 2);
        let e = c.pass().err().expect("the images file is gone");
        assert_eq!(e.kind, QuantErrorKind::Data);
        assert!(e.message.contains("t10k-images-idx3-ubyte"), "{e}");
    }

    #[test]
    fn accuracy_of_a_linear_model() {
        let d = scratch("acc");
        idx_data(&d);
        let ds = open(&d, LabelMode::Auto);
        let m = linear_model(Dim::Sym("N".into()));
        // Predicts i % 3; 3 of 10 labels are wrong.
        for batch in [1, 3] {
            let opts = AccuracyOptions {
                batch,
                ..AccuracyOptions::default()
            };
            let mut seen = 0;
            let a = top1_percent(&m, &ds, &opts, &mut |n| seen = n).unwrap();
            assert_eq!(a, 70.0);
            assert_eq!(seen, 10);
        }
        assert_eq!(evaluator(&ds, AccuracyOptions::default())(&m).unwrap(), 70.0);

        // Unlabelled data: an error naming the data.
        let unlabelled = open(&d, LabelMode::None);
        let e = top1_percent(&m, &unlabelled, &AccuracyOptions::default(), &mut |_| {}).unwrap_err();
        assert!(
            e.to_string().contains("t10k-images-idx3-ubyte") && e.to_string().contains("no labels"),
            "{e}"
        );
        let e = evaluator(&unlabelled, AccuracyOptions::default())(&m).unwrap_err();
        assert_eq!(e.kind, QuantErrorKind::Evaluate);
    }

    #[test]
    fn calibrate_and_quantize_over_a_dataset() {
        let d = scratch("quant");
        idx_data(&d);
        let ds = open(&d, LabelMode::Auto);
        let m = linear_model(Dim::Sym("N".into()));
        for method in [Method::MinMax, Method::Entropy] {
            let mut data = DatasetCalibration::for_model(&ds, &m, 4);
            let mut calls = Vec::new();
            let stats = calibrate(&m, &mut data, &CalibOptions::for_method(method), &mut |p| {
                calls.push(p)
            })
            .unwrap();
            // One input set per batch, each pass.
            assert_eq!(stats.samples, 3);
            let passes = if method == Method::MinMax { 1 } else { 2 };
            assert_eq!(calls.len(), 3 * passes);
            assert_eq!(calls.last().unwrap().total, Some(3));
            // The input's range is that of the data: [0, 1].
            assert_eq!((stats.tensors["x"].min, stats.tensors["x"].max), (0.0, 1.0));
            let opts = QuantOptions {
                method,
                ..QuantOptions::default()
            };
            let (q, rep) = quantize(&m, &stats, &opts).unwrap();
            assert_eq!(rep.layer("fc").unwrap().status, LayerStatus::Quantized);
            // The int8 model (integer kernels and float QDQ) classifies as the fp32 one.
            for integer in [true, false] {
                let o = AccuracyOptions {
                    integer,
                    batch: 4,
                    ..AccuracyOptions::default()
                };
                assert_eq!(top1_percent(&q, &ds, &o, &mut |_| {}).unwrap(), 70.0);
            }
        }
    }
}
