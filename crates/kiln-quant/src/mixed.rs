//! Sensitivity analysis and mixed precision: keep the layers whose
//! quantization hurts most in fp32 until the accuracy drop fits a budget.

use crate::calib::CalibrationResult;
use crate::error::{qbail, Result};
use crate::qdq::{prepare, quantize_prepared, QuantOptions};
use crate::report::QuantReport;
use kiln_ir::{Model, Tensor};
use kiln_runtime::{Session, SessionOptions};
use std::collections::BTreeMap;
use std::fmt;

/// Signal-to-quantization-noise ratio in dB of `test` against `reference`
/// over all their elements: `10 log10(sum ref^2 / sum (ref - test)^2)`.
/// `+inf` when they are equal; pairs of tensors of different sizes compare
/// over the shorter length.
pub fn sqnr_db(reference: &[Tensor], test: &[Tensor]) -> f64 {
    let (mut sig, mut noise) = (0f64, 0f64);
    for (r, t) in reference.iter().zip(test) {
        for (a, b) in r.to_f32_vec().iter().zip(t.to_f32_vec()) {
            let (a, b) = (*a as f64, b as f64);
            sig += a * a;
            noise += (a - b) * (a - b);
        }
    }
    if noise == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (sig / noise).log10()
    }
}

/// One layer's sensitivity.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerSensitivity {
    /// Node name.
    pub name: String,
    /// Op type.
    pub op: String,
    /// SQNR (dB) of the model outputs when only this layer is quantized,
    /// against fp32, over the probe input sets. Lower is more sensitive.
    pub sqnr_db: f64,
}

/// What [`mixed_precision`] measured and decided.
#[derive(Debug, Clone, PartialEq)]
pub struct MixedPrecisionReport {
    /// Accuracy (top-1, %) of the fp32 model.
    pub fp32_accuracy: f64,
    /// Accuracy of the all-int8 model.
    pub int8_accuracy: f64,
    /// `fp32_accuracy - int8_accuracy`.
    pub int8_drop: f64,
    /// The allowed drop (percentage points).
    pub budget: f64,
    /// Every quantizable layer, most sensitive first. Empty when the
    /// all-int8 model fits the budget (no analysis needed).
    pub sensitivity: Vec<LayerSensitivity>,
    /// Layers kept in fp32 (the most sensitive ones), most sensitive first.
    pub kept_fp32: Vec<String>,
    /// Accuracy of the returned model.
    pub final_accuracy: f64,
    /// `fp32_accuracy - final_accuracy`.
    pub final_drop: f64,
    /// Every evaluation of the search: (layers kept in fp32, accuracy).
    pub evaluations: Vec<(usize, f64)>,
    /// True if the final drop is within the budget.
    pub met_budget: bool,
}

impl fmt::Display for MixedPrecisionReport {
    /// Summary lines, then the sensitivity table (rank, layer, op, SQNR, kept).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "fp32 top-1 {:.2}%, all-int8 {:.2}% (drop {:.2} points), budget {:.2} points",
            self.fp32_accuracy, self.int8_accuracy, self.int8_drop, self.budget
        )?;
        writeln!(
            f,
            "kept in fp32: {} layer(s){}{}",
            self.kept_fp32.len(),
            if self.kept_fp32.is_empty() { "" } else { ": " },
            self.kept_fp32.join(", ")
        )?;
        writeln!(
            f,
            "final top-1 {:.2}% (drop {:.2} points, {})",
            self.final_accuracy,
            self.final_drop,
            if self.met_budget {
                "within budget"
            } else {
                "over budget"
            }
        )?;
        if !self.evaluations.is_empty() {
            let ev: Vec<String> = self
                .evaluations
                .iter()
                .map(|(k, a)| format!("{k} fp32 -> {a:.2}%"))
                .collect();
            writeln!(f, "evaluations: {}", ev.join(", "))?;
        }
        if !self.sensitivity.is_empty() {
            let w = self
                .sensitivity
                .iter()
                .map(|s| s.name.len())
                .max()
                .unwrap_or(5)
                .clamp(5, 48);
            writeln!(
                f,
                "{:>4}  {:<w$}  {:<17}  {:>10}  kept",
                "rank", "layer", "op", "SQNR dB"
            )?;
            for (i, s) in self.sensitivity.iter().enumerate() {
                let kept = if self.kept_fp32.contains(&s.name) {
                    "fp32"
                } else {
                    ""
                };
                writeln!(
                    f,
                    "{:>4}  {:<w$}  {:<17}  {:>10.2}  {kept}",
                    i + 1,
                    s.name,
                    s.op,
                    s.sqnr_db
                )?;
            }
        }
        Ok(())
    }
}

/// Runs `model` on every probe input set, QDQ nodes evaluated as ONNX ops
/// (the float simulation of the quantized model, not the integer kernels).
fn run_probe(model: Model, probe: &[Vec<Tensor>]) -> Result<Vec<Vec<Tensor>>> {
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let s = Session::with_options(model, &SessionOptions { integer: false })?.with_threads(threads);
    probe.iter().map(|p| Ok(s.run(p.clone())?)).collect()
}

/// Per quantized layer of `all_int8`, the SQNR of the outputs with only that
/// layer quantized, most sensitive (lowest) first.
pub(crate) fn sensitivity(
    prepared: &Model,
    calib: &CalibrationResult,
    opts: &QuantOptions,
    all_int8: &QuantReport,
) -> Result<Vec<LayerSensitivity>> {
    if calib.probe.is_empty() {
        qbail!(
            MissingStats,
            "sensitivity analysis needs probe input sets: calibrate with probe_samples > 0"
        );
    }
    let reference: Vec<Vec<Tensor>> = run_probe(prepared.clone(), &calib.probe)?;
    let layers: Vec<(&str, &str)> = all_int8
        .layers
        .iter()
        .filter(|l| l.status == crate::LayerStatus::Quantized)
        .map(|l| (l.name.as_str(), l.op.as_str()))
        .collect();
    let mut out = Vec::with_capacity(layers.len());
    for &(name, op) in &layers {
        let mut o = opts.clone();
        o.exclude.extend(
            layers
                .iter()
                .filter(|(n, _)| *n != name)
                .map(|(n, _)| n.to_string()),
        );
        let (m, _) = quantize_prepared(prepared, calib, &o)?;
        let got = run_probe(m, &calib.probe)?;
        let (ref_all, got_all): (Vec<Tensor>, Vec<Tensor>) = reference
            .iter()
            .zip(&got)
            .flat_map(|(r, g)| r.iter().cloned().zip(g.iter().cloned()))
            .unzip();
        out.push(LayerSensitivity {
            name: name.to_string(),
            op: op.to_string(),
            sqnr_db: sqnr_db(&ref_all, &got_all),
        });
    }
    out.sort_by(|a, b| a.sqnr_db.total_cmp(&b.sqnr_db));
    Ok(out)
}

/// Quantizes `model` to int8 within an accuracy budget, keeping the most
/// sensitive layers in fp32.
///
/// `evaluate` returns the top-1 accuracy in percent of a model on the
/// caller's validation split (the caller owns the data; the function only
/// sees accuracies). Steps:
///
/// 1. `A0 = evaluate(model)` (fp32) and the all-int8 drop
///    `D = A0 - evaluate(quantize(model))`. If `D <= budget_points`: done,
///    the all-int8 model is returned.
/// 2. Sensitivity: for each quantized layer, the model with *only that
///    layer* quantized (its weights, inputs and output) is run on the probe
///    input sets kept by calibration ([`crate::CalibOptions::probe_samples`])
///    and the SQNR of its outputs against fp32 is measured. This isolates
///    each layer's own quantization noise; its cost is one quantization and
///    `probe` model runs per layer and no call of `evaluate`, so it stays
///    affordable when the validation split is large.
/// 3. The `k` most sensitive layers are kept in fp32 (added to
///    `opts.exclude`), for the smallest `k` whose drop fits the budget,
///    found by doubling `k` (1, 2, 4, ...) and then bisecting, assuming the
///    drop shrinks as `k` grows: about `2 log2(layers)` evaluations.
///
/// Returns the chosen model, its [`QuantReport`] and the
/// [`MixedPrecisionReport`]. If even all quantized layers in fp32 miss the
/// budget (evaluation noise), that model is returned with `met_budget` false.
///
/// Errors: a budget that is not finite and `>= 0`
/// ([`crate::QuantErrorKind::InvalidOptions`]); no probe input sets
/// ([`crate::QuantErrorKind::MissingStats`]); as [`crate::quantize`];
/// whatever `evaluate` returns.
pub fn mixed_precision(
    model: &Model,
    calib: &CalibrationResult,
    opts: &QuantOptions,
    budget_points: f64,
    evaluate: &mut dyn FnMut(&Model) -> Result<f64>,
) -> Result<(Model, QuantReport, MixedPrecisionReport)> {
    if !(budget_points.is_finite() && budget_points >= 0.0) {
        qbail!(
            InvalidOptions,
            "the accuracy budget must be a finite number of points >= 0, got {budget_points}"
        );
    }
    let prepared = prepare(model)?;
    let a0 = evaluate(model)?;
    let (m8, r8) = quantize_prepared(&prepared, calib, opts)?;
    let a8 = evaluate(&m8)?;
    let mut rep = MixedPrecisionReport {
        fp32_accuracy: a0,
        int8_accuracy: a8,
        int8_drop: a0 - a8,
        budget: budget_points,
        sensitivity: Vec::new(),
        kept_fp32: Vec::new(),
        final_accuracy: a8,
        final_drop: a0 - a8,
        evaluations: vec![(0, a8)],
        met_budget: a0 - a8 <= budget_points,
    };
    if rep.met_budget {
        return Ok((m8, r8, rep));
    }
    let sens = sensitivity(&prepared, calib, opts, &r8)?;
    let n = sens.len();
    let mut tried: BTreeMap<usize, (f64, Model, QuantReport)> = BTreeMap::new();
    let mut eval_k = |k: usize, rep: &mut MixedPrecisionReport| -> Result<f64> {
        let mut o = opts.clone();
        o.exclude.extend(sens[..k].iter().map(|s| s.name.clone()));
        let (m, r) = quantize_prepared(&prepared, calib, &o)?;
        let a = evaluate(&m)?;
        rep.evaluations.push((k, a));
        tried.insert(k, (a, m, r));
        Ok(a)
    };
    // Doubling, then bisection between the last failing and the first passing k.
    let (mut bad, mut good) = (0usize, None);
    let mut k = 1usize.min(n);
    while k > 0 {
        let a = eval_k(k, &mut rep)?;
        if a0 - a <= budget_points {
            good = Some(k);
            break;
        }
        bad = k;
        if k == n {
            break;
        }
        k = (k * 2).min(n);
    }
    if let Some(mut g) = good {
        while g - bad > 1 {
            let mid = bad + (g - bad) / 2;
            let a = eval_k(mid, &mut rep)?;
            if a0 - a <= budget_points {
                g = mid;
            } else {
                bad = mid;
            }
        }
        good = Some(g);
    }
    let k = good.unwrap_or(n);
    let (a, m, r) = match tried.remove(&k) {
        Some(t) => t,
        None => (a8, m8, r8),
    };
    rep.kept_fp32 = sens[..k].iter().map(|s| s.name.clone()).collect();
    rep.final_accuracy = a;
    rep.final_drop = a0 - a;
    rep.met_budget = good.is_some();
    rep.sensitivity = sens;
    Ok((m, r, rep))
}
