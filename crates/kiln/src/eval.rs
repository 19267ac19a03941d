//! Measuring a classifier over a [`Dataset`]: top-1/top-5 accuracy and,
//! against a second model (e.g. its quantized version), the agreement of
//! their predictions and the error of the second model's scores.
//!
//! The metric functions are pure ([`rank_of`], [`sqnr_db`], [`abs_diff`],
//! [`Accuracy`], [`Agreement`]); [`evaluate`] runs sessions over a dataset
//! and accumulates them. "Logits" are the raw values of the model's first
//! output, whatever they are (logits, or probabilities for a model ending in
//! Softmax): rankings do not depend on which.

use crate::data::Dataset;
use crate::{Error, ErrorKind, Session};
use kiln_ir::{DType, Dim, Tensor};
use std::path::Path;
use std::time::Instant;

/// The rank of `class` in `scores` when sorted largest first: 0 for the top
/// class. Ties rank the lower index first (as [`crate::classify::top_k`]);
/// NaN compares as [`f32::total_cmp`] orders it. `class` must be in range.
pub fn rank_of(scores: &[f32], class: usize) -> usize {
    let v = scores[class];
    scores
        .iter()
        .enumerate()
        .filter(|&(i, s)| s.total_cmp(&v).is_gt() || (i < class && s.total_cmp(&v).is_eq()))
        .count()
}

/// The index of the largest score (the lowest such index on ties); `None`
/// for an empty slice.
pub fn argmax(scores: &[f32]) -> Option<usize> {
    (0..scores.len()).min_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)))
}

/// Signal-to-quantization-noise ratio in dB of `other` against `reference`:
/// `10 * log10(sum(reference^2) / sum((reference - other)^2))`, summed in
/// f64 over all values. `+inf` when the two are identical (no noise).
/// Slices of different lengths are compared over the shorter one.
pub fn sqnr_db(reference: &[f32], other: &[f32]) -> f64 {
    let (mut s, mut n) = (0f64, 0f64);
    for (&r, &o) in reference.iter().zip(other) {
        let (r, o) = (r as f64, o as f64);
        s += r * r;
        n += (r - o) * (r - o);
    }
    sqnr_from_sums(s, n)
}

/// SQNR in dB from the sum of squared reference values and the sum of
/// squared differences: `+inf` when `noise` is 0, else `10 * log10(signal / noise)`.
pub fn sqnr_from_sums(signal: f64, noise: f64) -> f64 {
    if noise == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (signal / noise).log10()
    }
}

/// Max and mean of `|reference - other|` over all values (0 and 0 for empty
/// slices; compared over the shorter slice).
pub fn abs_diff(reference: &[f32], other: &[f32]) -> (f64, f64) {
    let (mut max, mut sum, mut n) = (0f64, 0f64, 0usize);
    for (&r, &o) in reference.iter().zip(other) {
        let d = (r as f64 - o as f64).abs();
        max = max.max(d);
        sum += d;
        n += 1;
    }
    (max, if n == 0 { 0.0 } else { sum / n as f64 })
}

/// `100 * num / den`, or `None` when `den` is 0.
pub fn percent(num: usize, den: usize) -> Option<f64> {
    (den > 0).then(|| 100.0 * num as f64 / den as f64)
}

/// A dB figure for printing: `inf`, `-inf`, `nan`, or two decimals.
pub fn format_db(db: f64) -> String {
    if db.is_nan() {
        "nan".into()
    } else if db.is_infinite() {
        if db > 0.0 { "inf" } else { "-inf" }.into()
    } else {
        format!("{db:.2}")
    }
}

/// Top-1 and top-5 counts over labelled samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Accuracy {
    /// Labelled samples seen.
    pub samples: usize,
    /// Samples whose label is the top class.
    pub top1: usize,
    /// Samples whose label is among the 5 top classes.
    pub top5: usize,
}

impl Accuracy {
    /// Counts one sample: `scores` of every class and the true `label`
    /// (which must be `< scores.len()`).
    pub fn add(&mut self, scores: &[f32], label: usize) {
        let r = rank_of(scores, label);
        self.samples += 1;
        self.top1 += (r < 1) as usize;
        self.top5 += (r < 5) as usize;
    }
    /// Top-1 accuracy in percent (`None` before any sample).
    pub fn top1_percent(&self) -> Option<f64> {
        percent(self.top1, self.samples)
    }
    /// Top-5 accuracy in percent (`None` before any sample).
    pub fn top5_percent(&self) -> Option<f64> {
        percent(self.top5, self.samples)
    }
}

/// How far a second model's scores are from a reference model's, summed
/// over samples.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Agreement {
    /// Samples compared.
    pub samples: usize,
    /// Samples where both models' top-1 classes are the same.
    pub top1_same: usize,
    /// Score values compared (samples x classes).
    pub values: usize,
    /// Largest `|reference - other|`.
    pub max_abs_diff: f64,
    /// Sum of `|reference - other|`.
    pub sum_abs_diff: f64,
    /// Sum of `reference^2`.
    pub sum_ref_sq: f64,
    /// Sum of `(reference - other)^2`.
    pub sum_err_sq: f64,
}

impl Agreement {
    /// Counts one sample: the reference's and the other model's scores
    /// (same length; compared over the shorter one otherwise).
    pub fn add(&mut self, reference: &[f32], other: &[f32]) {
        self.samples += 1;
        self.top1_same += (argmax(reference) == argmax(other)) as usize;
        for (&r, &o) in reference.iter().zip(other) {
            let (r, o) = (r as f64, o as f64);
            let d = (r - o).abs();
            self.values += 1;
            self.max_abs_diff = self.max_abs_diff.max(d);
            self.sum_abs_diff += d;
            self.sum_ref_sq += r * r;
            self.sum_err_sq += d * d;
        }
    }
    /// Top-1 agreement in percent (`None` before any sample).
    pub fn top1_percent(&self) -> Option<f64> {
        percent(self.top1_same, self.samples)
    }
    /// Mean `|reference - other|` (0 before any value).
    pub fn mean_abs_diff(&self) -> f64 {
        if self.values == 0 {
            0.0
        } else {
            self.sum_abs_diff / self.values as f64
        }
    }
    /// SQNR in dB of the other model's scores against the reference's, over
    /// all values ([`sqnr_from_sums`]; `+inf` when identical).
    pub fn sqnr_db(&self) -> f64 {
        sqnr_from_sums(self.sum_ref_sq, self.sum_err_sq)
    }
}

/// A model to evaluate: its session and its file (named in errors).
#[derive(Debug, Clone, Copy)]
pub struct EvalModel<'a> {
    /// The prepared model.
    pub session: &'a Session,
    /// Its file.
    pub file: &'a Path,
}

/// Options of [`evaluate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvalOptions {
    /// Samples per run, for models whose input has a symbolic leading
    /// (batch) dim; models with a fixed batch dim run one sample at a time
    /// (see [`batch_size`]).
    pub batch: usize,
}

impl Default for EvalOptions {
    fn default() -> EvalOptions {
        EvalOptions { batch: 1 }
    }
}

/// The second model's figures in an [`EvalReport`].
#[derive(Debug, Clone, PartialEq)]
pub struct CompareReport {
    /// The second model's own accuracy (`None` without labels).
    pub accuracy: Option<Accuracy>,
    /// Its scores against the first model's.
    pub agreement: Agreement,
}

/// What [`evaluate`] measured.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalReport {
    /// Samples run.
    pub samples: usize,
    /// Classes (scores per sample) of the model's first output.
    pub classes: usize,
    /// Samples per run used.
    pub batch: usize,
    /// Accuracy of the model (`None` when the dataset has no labels).
    pub accuracy: Option<Accuracy>,
    /// Figures of the second model, if one was given.
    pub compare: Option<CompareReport>,
    /// Wall time of the whole evaluation (data loading included), seconds.
    pub seconds: f64,
}

/// The batch size `session` can run: `requested` (at least 1) when its
/// single input's leading dim is symbolic, else 1.
pub fn batch_size(session: &Session, requested: usize) -> usize {
    let dynamic = session
        .inputs()
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

fn model_err(m: &EvalModel<'_>, kind: kiln_ir::ErrorKind, msg: String) -> Error {
    Error::new(ErrorKind::Model(kind), msg).with_file(m.file)
}

fn check_single_input(m: &EvalModel<'_>) -> Result<(), Error> {
    let ins = m.session.inputs();
    if ins.len() != 1 {
        let names: Vec<&str> = ins.iter().map(|i| i.name.as_str()).collect();
        return Err(model_err(
            m,
            kiln_ir::ErrorKind::InvalidInput,
            format!(
                "eval needs a single-input model; this one has {} ({})",
                ins.len(),
                names.join(", ")
            ),
        ));
    }
    Ok(())
}

/// Runs `m` on one batch and returns its first output's scores, one row
/// per sample. Errors name the model file and the batch's first sample.
fn scores(m: &EvalModel<'_>, input: &Tensor, names: &[String]) -> Result<(Vec<f32>, usize), Error> {
    let first = names.first().map(String::as_str).unwrap_or("?");
    let n = names.len();
    let what = if n == 1 {
        format!("sample {first}")
    } else {
        format!("batch of {n} from sample {first}")
    };
    m.session
        .check_inputs(std::slice::from_ref(input))
        .map_err(|e| model_err(m, kiln_ir::ErrorKind::InvalidInput, format!("{what}: {e}")))?;
    let out = m
        .session
        .run(vec![input.clone()])
        .map_err(|e| Error::from(e).with_file(m.file))
        .map_err(|e| Error {
            message: format!("{what}: {}", e.message),
            ..e
        })?;
    let o = out.into_iter().next().ok_or_else(|| {
        model_err(
            m,
            kiln_ir::ErrorKind::InvalidModel,
            "the model has no output".into(),
        )
    })?;
    let fits = matches!(o.dtype(), DType::F32 | DType::F16)
        && match o.shape() {
            [c] => n == 1 && *c > 0,
            [b, rest @ ..] => *b == n && rest.iter().product::<usize>() > 0,
            [] => false,
        };
    if !fits {
        return Err(model_err(
            m,
            kiln_ir::ErrorKind::InvalidModel,
            format!(
                "output 0 ('{}') is {} {:?} for {what}; eval needs float class scores [{n}, classes]",
                m.session
                    .outputs()
                    .first()
                    .map(|o| o.name.as_str())
                    .unwrap_or("?"),
                o.dtype(),
                o.shape()
            ),
        ));
    }
    let v = o.to_f32_vec();
    let classes = v.len() / n;
    Ok((v, classes))
}

/// Runs `model` (and `compare`, if given, on the same inputs) over one
/// pass of `data`, in batches of [`batch_size`], and accumulates accuracy
/// (when the data has labels) and agreement. `progress` is called with the
/// number of samples done after each batch.
///
/// Errors: a model with more than one input; an input the model does not
/// take (dtype or shape; names the model file, the sample and the expected
/// shape); a first output that is not float scores `[batch, classes]`; a
/// label not below the class count; the two models giving different class
/// counts; any data error of the pass (naming the data file).
pub fn evaluate(
    model: EvalModel<'_>,
    compare: Option<EvalModel<'_>>,
    data: &Dataset,
    opts: &EvalOptions,
    progress: &mut dyn FnMut(usize),
) -> Result<EvalReport, Error> {
    let t0 = Instant::now();
    check_single_input(&model)?;
    let mut batch = batch_size(model.session, opts.batch);
    if let Some(c) = &compare {
        check_single_input(c)?;
        batch = batch.min(batch_size(c.session, opts.batch));
    }
    let labelled = data.has_labels();
    let mut acc = Accuracy::default();
    let mut acc2 = Accuracy::default();
    let mut agree = Agreement::default();
    let (mut done, mut classes) = (0usize, 0usize);
    for b in data.batches(batch)? {
        let b = b?;
        let (s, c) = scores(&model, &b.input, &b.names)?;
        let other = match &compare {
            Some(cm) => {
                let (s2, c2) = scores(cm, &b.input, &b.names)?;
                if c2 != c {
                    return Err(model_err(
                        cm,
                        kiln_ir::ErrorKind::ShapeMismatch,
                        format!("gives {c2} scores per sample, {} gives {c}", model.file.display()),
                    ));
                }
                Some(s2)
            }
            None => None,
        };
        classes = c;
        for (i, (name, label)) in b.names.iter().zip(&b.labels).enumerate() {
            let row = &s[i * c..(i + 1) * c];
            let row2 = other.as_ref().map(|o| &o[i * c..(i + 1) * c]);
            if let Some(l) = label {
                if *l >= c {
                    return Err(Error::new(
                        ErrorKind::Decode,
                        format!("sample {name} has label {l}, but the model has {c} classes"),
                    )
                    .with_file(&data.spec().path));
                }
                acc.add(row, *l);
                if let Some(r2) = row2 {
                    acc2.add(r2, *l);
                }
            }
            if let Some(r2) = row2 {
                agree.add(row, r2);
            }
        }
        done += b.names.len();
        progress(done);
    }
    Ok(EvalReport {
        samples: done,
        classes,
        batch,
        accuracy: labelled.then_some(acc),
        compare: compare.map(|_| CompareReport {
            accuracy: labelled.then_some(acc2),
            agreement: agree,
        }),
        seconds: t0.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_and_top_k_hits() {
        let s = [0.1, 3.0, -1.0, 2.0, 2.0, 0.5, 0.0];
        assert_eq!(rank_of(&s, 1), 0);
        assert_eq!(rank_of(&s, 3), 1);
        // Tie with class 3: the lower index ranks first.
        assert_eq!(rank_of(&s, 4), 2);
        assert_eq!(rank_of(&s, 2), 6);
        assert_eq!(argmax(&s), Some(1));
        assert_eq!(argmax(&[]), None);
        assert_eq!(argmax(&[1.0, 1.0]), Some(0));

        let mut a = Accuracy::default();
        a.add(&s, 1); // top-1
        a.add(&s, 4); // rank 2: top-5 only
        a.add(&s, 6); // rank 5: neither
        a.add(&s, 2); // rank 6: neither
        assert_eq!(
            a,
            Accuracy {
                samples: 4,
                top1: 1,
                top5: 2
            }
        );
        assert_eq!(a.top1_percent(), Some(25.0));
        assert_eq!(a.top5_percent(), Some(50.0));
        assert_eq!(Accuracy::default().top1_percent(), None);
    }

    #[test]
    fn sqnr_and_diffs_by_hand() {
        // ref = [3, 4]: sum ref^2 = 25; other = [3, 3]: noise = 1 -> 10*log10(25) = 13.979...
        let db = sqnr_db(&[3.0, 4.0], &[3.0, 3.0]);
        assert!((db - 13.979_400_086_720_377).abs() < 1e-12, "{db}");
        // Noise equal to signal: 0 dB; noise 100x the signal: -20 dB.
        assert_eq!(sqnr_db(&[1.0], &[0.0]), 0.0);
        assert!((sqnr_db(&[1.0], &[11.0]) + 20.0).abs() < 1e-12);
        assert_eq!(sqnr_db(&[1.0, -2.0], &[1.0, -2.0]), f64::INFINITY);
        assert_eq!(sqnr_db(&[0.0], &[0.0]), f64::INFINITY);
        assert_eq!(format_db(f64::INFINITY), "inf");
        assert_eq!(format_db(f64::NEG_INFINITY), "-inf");
        assert_eq!(format_db(13.979), "13.98");

        // |diff| = [0, 1, 3] -> max 3, mean 4/3.
        let (max, mean) = abs_diff(&[1.0, 2.0, 3.0], &[1.0, 3.0, 0.0]);
        assert_eq!(max, 3.0);
        assert!((mean - 4.0 / 3.0).abs() < 1e-12);
        assert_eq!(abs_diff(&[], &[]), (0.0, 0.0));
        assert_eq!(percent(17, 20), Some(85.0));
        assert_eq!(percent(1, 0), None);
    }

    #[test]
    fn agreement_accumulates_over_samples() {
        let mut g = Agreement::default();
        // Sample 1: same top-1 (class 1); diffs [0, 1]; ref^2 = 0 + 4 = 4; err^2 = 1.
        g.add(&[0.0, 2.0], &[0.0, 1.0]);
        // Sample 2: top-1 differs (0 vs 1); diffs [2, 1]; ref^2 = 4 + 1 = 5; err^2 = 5.
        g.add(&[2.0, 1.0], &[0.0, 2.0]);
        assert_eq!(g.samples, 2);
        assert_eq!(g.top1_same, 1);
        assert_eq!(g.top1_percent(), Some(50.0));
        assert_eq!(g.values, 4);
        assert_eq!(g.max_abs_diff, 2.0);
        assert_eq!(g.mean_abs_diff(), 1.0);
        // 10*log10(9 / 6) = 1.7609...
        assert!((g.sqnr_db() - 10.0 * 1.5f64.log10()).abs() < 1e-12);
        let mut same = Agreement::default();
        same.add(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0]);
        assert_eq!(same.top1_percent(), Some(100.0));
        assert_eq!((same.max_abs_diff, same.mean_abs_diff()), (0.0, 0.0));
        assert_eq!(same.sqnr_db(), f64::INFINITY);
    }
}
