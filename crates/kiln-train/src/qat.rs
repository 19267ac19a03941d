//! Quantization-aware training in kiln's PTQ scheme, exported as QDQ.
//!
//! [`prepare_qat`] takes a trained fp32 model and calibration samples and
//! returns everything a QAT run needs:
//! 1. the model as kiln's quantizer sees it (`kiln_quant::prepare`: BatchNormalization
//!    folded into the convolutions with its running statistics, which stay frozen
//!    during QAT; activations fused into kiln's FusedConv/FusedGemm);
//! 2. kiln's PTQ of it (MinMax calibration, no bias correction), the baseline QAT
//!    must beat, and the points it quantizes (the inputs of its QuantizeLinear nodes);
//! 3. those points' calibrated ranges as the initial ranges of the fake quantizers.
//!
//! Training ([`crate::fit_with`] with the [`QatSpec`]) fake-quantizes exactly
//! those activations and every Conv/Gemm weight ([`crate::graph::Qat`]); the
//! activation ranges are EMA-tracked. [`export_qdq`] then writes the QDQ model
//! with `kiln_quant::quantize` from the trained weights and the tracked
//! ranges, so the exported model computes what the fake-quantized graph
//! computed (biases are int32 at `s_x * s_w`, the only difference).

use crate::data::TrainSet;
use crate::graph::{ActQuant, TrainGraph};
use crate::{Error, ErrorKind};
use kiln::quant::{CalibOptions, CalibrationResult, Method, QuantOptions};
use kiln_ir::{DType, Model, Tensor};

/// What a QAT run needs besides the data: the initial ranges and how to export.
#[derive(Debug, Clone)]
pub struct QatSpec {
    /// Activation quantization points with their calibrated ranges.
    pub acts: Vec<ActQuant>,
    /// Activation type (`U8`, kiln's default, or `I8`).
    pub act_dtype: DType,
    /// EMA weight of a batch's range (0.01, PyTorch's default).
    pub momentum: f32,
    /// The PTQ calibration (its statistics of other tensors are reused at export).
    pub calib: CalibrationResult,
    /// Quantizer options of the export (MinMax, per-channel, no bias correction).
    pub options: QuantOptions,
}

/// The result of [`prepare_qat`].
#[derive(Debug, Clone)]
pub struct QatStart {
    /// The prepared fp32 model QAT trains (BN folded, activations fused).
    pub prepared: Model,
    /// kiln's PTQ of it on the same calibration samples (the baseline).
    pub ptq: Model,
    /// The fake-quantization spec, initialised from the calibration.
    pub spec: QatSpec,
}

fn qerr(e: kiln::quant::QuantError) -> Error {
    Error::new(ErrorKind::Model, e.to_string())
}

/// Prepares QAT of `model` (fp32) with `calib_set`'s samples for calibration
/// (batches of 50).
///
/// # Errors
/// Quantizer errors (unsupported graph, missing statistics) as
/// [`ErrorKind::Model`]; [`ErrorKind::Unsupported`] if the prepared graph
/// has ops training does not support.
pub fn prepare_qat(model: &Model, calib_set: &TrainSet, act_dtype: DType) -> Result<QatStart, Error> {
    let prepared = kiln::quant::prepare(model).map_err(qerr)?;
    let [c, h, w] = calib_set.shape;
    let mut samples: Vec<Vec<Tensor>> = vec![];
    for start in (0..calib_set.len()).step_by(50) {
        let end = (start + 50).min(calib_set.len());
        let x = Tensor::from_vec(vec![end - start, c, h, w], calib_set.inputs(start..end)?)
            .map_err(|e| Error::new(ErrorKind::Shape, e.to_string()))?;
        samples.push(vec![x]);
    }
    let calib = kiln::quant::calibrate(
        &prepared,
        &mut samples,
        &CalibOptions::for_method(Method::MinMax),
        &mut |_| {},
    )
    .map_err(qerr)?;
    let options = QuantOptions {
        bias_correction: false,
        activation_dtype: act_dtype,
        ..QuantOptions::default()
    };
    let (ptq, _) = kiln::quant::quantize(&prepared, &calib, &options).map_err(qerr)?;
    let graph = TrainGraph::from_model(&prepared)?;
    let mut acts = vec![];
    for n in ptq.graph.nodes.iter().filter(|n| n.op_type == "QuantizeLinear") {
        let v = &n.inputs[0];
        if !graph.has_value(v) || acts.iter().any(|a: &ActQuant| &a.name == v) {
            continue;
        }
        if let Some(t) = calib.tensors.get(v) {
            acts.push(ActQuant {
                name: v.clone(),
                min: t.min,
                max: t.max,
            });
        }
    }
    let mut calib = calib;
    calib.probe.clear();
    Ok(QatStart {
        prepared,
        ptq,
        spec: QatSpec {
            acts,
            act_dtype,
            momentum: 0.01,
            calib,
            options,
        },
    })
}

/// The QDQ model of a QAT graph: its weights in `prepared`, quantized by
/// `kiln_quant::quantize` with the graph's tracked activation ranges.
///
/// # Errors
/// [`ErrorKind::Config`] if the graph is not in QAT mode; quantizer errors.
pub fn export_qdq(graph: &TrainGraph, prepared: &Model, spec: &QatSpec) -> Result<Model, Error> {
    let q = graph
        .qat
        .as_ref()
        .ok_or_else(|| Error::new(ErrorKind::Config, "the graph is not in QAT mode"))?;
    let trained = graph.to_model(prepared)?;
    let mut calib = spec.calib.clone();
    for a in &q.acts {
        if let Some(t) = calib.tensors.get_mut(&a.name) {
            t.min = a.min;
            t.max = a.max;
        }
    }
    let (m, _) = kiln::quant::quantize(&trained, &calib, &spec.options).map_err(qerr)?;
    Ok(m)
}
