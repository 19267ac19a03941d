//! The training loop: epochs of shuffled, augmented mini-batches, AdamW with
//! a one-cycle schedule, a checkpoint and an exported model after every
//! epoch, resume from the last checkpoint, and a JSON metrics log.
//!
//! Reproducibility: every random draw comes from [`Rng`] streams seeded by
//! `(seed, epoch)` (the shuffle) and `(seed, epoch, step)` (augmentation), and
//! the checkpoint holds every other piece of state (parameters, running
//! statistics, AdamW moments, the step counter), so with `threads = 1` a run
//! stopped after any epoch and resumed ends bit-identical to an uninterrupted
//! one ([`FitReport::weights_hash`]). With more threads burn's reductions
//! may split differently and results can differ in the last bits.
//!
//! Files written to [`FitConfig::out_dir`] (each atomically: temp file, then rename):
//! - `checkpoint.kiln` — state after the last completed epoch (format below);
//! - `model.onnx` — the model after the last completed epoch;
//! - `metrics.json` — configuration and per-epoch metrics.
//!
//! Checkpoint format: the bytes `KILNCKPT`, a little-endian `u64` header
//! length, a JSON header (format version, config, model signature, epochs
//! done, step, history), then raw little-endian `f32` arrays: for each
//! parameter its value, AdamW `m` and `v`; for each BatchNormalization its
//! running mean and variance.

use crate::data::{Augment, Rng, TrainSet};
use crate::graph::{ParamTensor, TrainGraph};
use crate::optim::{adamw_step, AdamWConfig, Moments, OneCycle, StepAt};
use crate::qat::QatSpec;
use crate::{Error, ErrorKind};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Tensor, TensorData};
use kiln_ir::Model;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Settings of a training run.
#[derive(Debug, Clone, PartialEq)]
pub struct FitConfig {
    /// Epochs (full passes over the training set).
    pub epochs: usize,
    /// Mini-batch size; the last, smaller batch of an epoch is kept.
    pub batch: usize,
    /// Peak learning rate of the one-cycle schedule.
    pub lr: f64,
    /// AdamW decoupled weight decay (applied to Conv/Gemm/MatMul weights only).
    pub weight_decay: f64,
    /// Seed of the shuffle and augmentation streams.
    pub seed: u64,
    /// Threads of burn's pool (1: bit-reproducible).
    pub threads: usize,
    /// Augmentation of training batches.
    pub augment: Augment,
    /// Where the checkpoint, model and metrics go.
    pub out_dir: PathBuf,
    /// Continue from `out_dir/checkpoint.kiln` if it exists.
    pub resume: bool,
    /// Stop (as an interrupt would) after this many epochs in total.
    pub stop_after: Option<usize>,
    /// Batch size of validation runs on kiln's runtime.
    pub eval_batch: usize,
}

impl Default for FitConfig {
    fn default() -> Self {
        FitConfig {
            epochs: 4,
            batch: 128,
            lr: 4e-3,
            weight_decay: 1e-4,
            seed: 0,
            threads: 2,
            augment: Augment { flip: true, shift: 2 },
            out_dir: PathBuf::from("kiln-train-out"),
            resume: false,
            stop_after: None,
            eval_batch: 256,
        }
    }
}

/// Distillation from a teacher: logits (Hinton, Vinyals & Dean, "Distilling
/// the Knowledge in a Neural Network", 2015) and, optionally, intermediate
/// features (Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR 2015):
///
/// `loss = (1 - alpha) * CE(s, y) + alpha * T^2 * KL(softmax(t / T) || softmax(s / T))
///        + beta * sum_k MSE(A_k(f_k), g_k)`
///
/// with `s` the student's and `t` the teacher's logits on the same
/// (augmented) batch; the `T^2` factor keeps the soft term's gradients on the
/// scale of the hard term's. For each [`FeatureHint`] `k`, `f_k` is the
/// student's value `[N, Cs, H, W]`, `g_k` the teacher's `[N, Ct, H, W]` (same
/// `H, W`), and `A_k` a learned 1x1 convolution `Cs -> Ct` with bias (the
/// FitNets regressor; trained with the student and discarded after
/// training), and `MSE` the mean over all `N * Ct * H * W` elements.
///
/// The teacher is any model kiln compiles, run on kiln's runtime; without
/// augmentation its outputs are computed once per sample and cached (up to
/// 1 GiB of cached values; past that they are recomputed every step).
pub struct Distill {
    /// The compiled teacher: one input `[N, C, H, W]`; output 0 the logits
    /// `[N, classes]`, then one output per [`Distill::features`] hint, in
    /// order (see [`teacher_with_features`]).
    pub teacher: kiln::runtime::CompiledModel,
    /// A name for the checkpoint's settings (e.g. the teacher's file name).
    pub teacher_name: String,
    /// Temperature `T` (> 0).
    pub temperature: f64,
    /// Weight `alpha` of the soft (teacher) term, in `[0, 1]` (0: plain training).
    pub alpha: f64,
    /// Feature hints (empty: logit distillation only).
    pub features: Vec<FeatureHint>,
    /// Weight `beta` of the feature term (>= 0).
    pub feature_weight: f64,
}

impl Distill {
    /// Logit distillation only (no feature hints).
    pub fn logits(
        teacher: kiln::runtime::CompiledModel,
        teacher_name: impl Into<String>,
        temperature: f64,
        alpha: f64,
    ) -> Distill {
        Distill {
            teacher,
            teacher_name: teacher_name.into(),
            temperature,
            alpha,
            features: vec![],
            feature_weight: 0.0,
        }
    }

    fn needs_teacher(&self) -> bool {
        self.alpha > 0.0 || (!self.features.is_empty() && self.feature_weight > 0.0)
    }
}

/// A pair of intermediate values matched by feature distillation: the
/// student's value `student` (`[N, Cs, H, W]`) is mapped through a learned
/// 1x1 convolution onto the teacher's value `teacher` (`[N, Ct, H, W]`).
/// Names are value (tensor) names of the two ONNX graphs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureHint {
    /// Value name in the student graph.
    pub student: String,
    /// Value name in the teacher graph.
    pub teacher: String,
}

impl std::str::FromStr for FeatureHint {
    type Err = String;
    /// Parses `STUDENT=TEACHER`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once('=') {
            Some((a, b)) if !a.is_empty() && !b.is_empty() => Ok(FeatureHint {
                student: a.to_string(),
                teacher: b.to_string(),
            }),
            _ => Err(format!(
                "a feature hint is STUDENT_VALUE=TEACHER_VALUE, got '{s}'"
            )),
        }
    }
}

/// Compiles `teacher` for [`Distill`] with the values named by `hints` added
/// as graph outputs 1.. (after the logits), so kiln's runtime returns them
/// (graph outputs survive every fusion).
///
/// # Errors
/// [`ErrorKind::Config`] naming the teacher value that no node of the
/// teacher computes (with a few names that exist); compilation errors.
pub fn teacher_with_features(
    mut teacher: Model,
    hints: &[FeatureHint],
) -> Result<kiln::runtime::CompiledModel, Error> {
    let produced: Vec<&str> = teacher
        .graph
        .nodes
        .iter()
        .flat_map(|n| n.outputs.iter().map(String::as_str))
        .collect();
    let mut extra = vec![];
    for h in hints {
        if teacher.graph.outputs.first().is_some_and(|o| o.name == h.teacher) {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "{}: '{}' is the teacher's logits output; a feature hint takes an intermediate 4-D value (logits are distilled by alpha)",
                    teacher.graph.name, h.teacher
                ),
            ));
        }
        if !produced.contains(&h.teacher.as_str()) {
            let some: Vec<&str> = produced.iter().rev().take(6).rev().copied().collect();
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "{}: the teacher computes no value '{}' (feature hint {}={}); its last values are {:?}",
                    teacher.graph.name, h.teacher, h.student, h.teacher, some
                ),
            ));
        }
        let ty = teacher
            .graph
            .value_types
            .get(&h.teacher)
            .cloned()
            .unwrap_or(kiln_ir::ValueType {
                dtype: kiln_ir::DType::F32,
                shape: None,
            });
        extra.push(kiln_ir::ValueInfo {
            name: h.teacher.clone(),
            ty,
        });
    }
    teacher.graph.outputs.truncate(1);
    teacher.graph.outputs.extend(extra);
    Ok(kiln::compile_model(
        teacher,
        &kiln::runtime::CompileOptions::default(),
    )?)
}

/// Metrics of one epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochMetrics {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Mean cross-entropy over the epoch's training batches.
    pub train_loss: f64,
    /// Training top-1 (%) of the batches as they were trained (augmented).
    pub train_top1: f64,
    /// Validation top-1 (%) of the exported model on kiln's runtime.
    pub val_top1: Option<f64>,
    /// Learning rate at the epoch's last step.
    pub lr: f64,
    /// Training wall time (s), without validation.
    pub seconds: f64,
    /// Training throughput (images/s, forward + backward + update).
    pub images_per_s: f64,
}

impl EpochMetrics {
    fn to_json(&self) -> Value {
        json!({"epoch": self.epoch, "train_loss": self.train_loss, "train_top1": self.train_top1,
               "val_top1": self.val_top1, "lr": self.lr, "seconds": self.seconds,
               "images_per_s": self.images_per_s})
    }
    fn from_json(v: &Value) -> Option<EpochMetrics> {
        Some(EpochMetrics {
            epoch: v["epoch"].as_u64()? as usize,
            train_loss: v["train_loss"].as_f64()?,
            train_top1: v["train_top1"].as_f64()?,
            val_top1: v["val_top1"].as_f64(),
            lr: v["lr"].as_f64()?,
            seconds: v["seconds"].as_f64()?,
            images_per_s: v["images_per_s"].as_f64()?,
        })
    }
}

/// Progress reports of [`fit`] (the CLI draws its progress bars from them).
#[derive(Debug, Clone)]
pub enum FitEvent {
    /// Training (re)starts at `epoch` (1-based) of `epochs`, `steps` per epoch.
    Start {
        epoch: usize,
        epochs: usize,
        steps: usize,
        params: usize,
        resumed: bool,
    },
    /// A step finished: running mean loss of the epoch, images/s so far.
    Step {
        epoch: usize,
        step: usize,
        steps: usize,
        loss: f64,
        images_per_s: f64,
    },
    /// An epoch finished (after validation and the checkpoint).
    Epoch(EpochMetrics),
}

/// The outcome of [`fit`].
#[derive(Debug, Clone)]
pub struct FitReport {
    /// Every epoch so far (resumed runs include the earlier ones).
    pub history: Vec<EpochMetrics>,
    /// The trained model (same graph as the input, new weights).
    pub model: Model,
    /// [`TrainGraph::weights_hash`] of the final weights.
    pub weights_hash: u64,
    /// True if the run stopped at [`FitConfig::stop_after`] before the last epoch.
    pub stopped_early: bool,
}

const MAGIC: &[u8; 8] = b"KILNCKPT";

/// Cap on the teacher outputs cached per sample over the whole training set.
const TEACHER_CACHE_BYTES: usize = 1 << 30;

fn signature(g: &TrainGraph, adapters: &[ParamTensor]) -> Value {
    let p: Vec<Value> = g.params.iter().map(|p| json!([p.name, p.shape])).collect();
    let b: Vec<Value> = g.bn.iter().map(|b| json!([b.node, b.mean.len()])).collect();
    let q: Vec<Value> = g
        .qat
        .as_ref()
        .map(|q| q.acts.iter().map(|a| json!(a.name)).collect())
        .unwrap_or_default();
    let mut v = json!({"params": p, "bn": b, "qat": q});
    if !adapters.is_empty() {
        v["adapters"] = adapters.iter().map(|p| json!([p.name, p.shape])).collect();
    }
    v
}

fn config_json(c: &FitConfig, d: Option<&Distill>) -> Value {
    let mut v = json!({"epochs": c.epochs, "batch": c.batch, "lr": c.lr, "weight_decay": c.weight_decay,
           "seed": c.seed, "augment": {"flip": c.augment.flip, "shift": c.augment.shift}});
    if let Some(d) = d {
        v["distill"] = json!({"teacher": d.teacher_name, "temperature": d.temperature, "alpha": d.alpha});
        if !d.features.is_empty() {
            let f: Vec<Value> = d.features.iter().map(|h| json!([h.student, h.teacher])).collect();
            v["distill"]["features"] = json!(f);
            v["distill"]["feature_weight"] = json!(d.feature_weight);
        }
    }
    v
}

struct State {
    graph: TrainGraph,
    moments: Vec<Moments>,
    /// Feature-distillation adapters (weight `[Ct, Cs]`, bias `[Ct]` per hint).
    adapters: Vec<ParamTensor>,
    adapter_moments: Vec<Moments>,
    /// Pruning keep-masks per target (empty until the first pruning step).
    masks: Vec<Vec<bool>>,
    step: u64,
    epochs_done: usize,
    history: Vec<EpochMetrics>,
}

fn save_checkpoint(path: &Path, st: &State, cfg: &Value) -> Result<(), Error> {
    let header = json!({
        "format": 1, "config": cfg, "signature": signature(&st.graph, &st.adapters),
        "epochs_done": st.epochs_done, "step": st.step,
        "history": st.history.iter().map(EpochMetrics::to_json).collect::<Vec<_>>(),
    });
    let h = serde_json::to_vec(&header).expect("JSON of plain values");
    let mut out = Vec::with_capacity(16 + h.len() + 12 * st.graph.num_params());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(h.len() as u64).to_le_bytes());
    out.extend_from_slice(&h);
    let mut put = |v: &[f32]| v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
    for (p, m) in st
        .graph
        .params
        .iter()
        .zip(&st.moments)
        .chain(st.adapters.iter().zip(&st.adapter_moments))
    {
        put(&p.data);
        let zeros = vec![0.0; p.data.len()];
        put(if m.m.is_empty() { &zeros } else { &m.m });
        put(if m.v.is_empty() { &zeros } else { &m.v });
    }
    for b in &st.graph.bn {
        put(&b.mean);
        put(&b.var);
    }
    if let Some(q) = &st.graph.qat {
        for a in &q.acts {
            put(&[a.min, a.max]);
        }
    }
    for m in &st.masks {
        put(&[m.len() as f32]);
        put(&m.iter().map(|&k| if k { 1.0 } else { 0.0 }).collect::<Vec<f32>>());
    }
    kiln::write_atomic(path, &out).map_err(Error::from)
}

fn load_checkpoint(path: &Path, st: &mut State, cfg: &Value) -> Result<(), Error> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bad = |m: String| Error::new(ErrorKind::Checkpoint, m).with_file(path);
    if bytes.len() < 16 || &bytes[..8] != MAGIC {
        return Err(bad("not a kiln checkpoint (magic bytes missing)".into()));
    }
    let hlen = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes")) as usize;
    let hend = 16usize
        .checked_add(hlen)
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| bad("truncated header".into()))?;
    let header: Value = serde_json::from_slice(&bytes[16..hend]).map_err(|e| bad(format!("header: {e}")))?;
    if header["format"] != json!(1) {
        return Err(bad(format!("unknown checkpoint format {}", header["format"])));
    }
    let now = signature(&st.graph, &st.adapters);
    if header["signature"] != now {
        let what = if header["signature"].get("adapters") != now.get("adapters") {
            "feature-distillation adapters differ (--feature hints)"
        } else {
            "parameter names or shapes differ"
        };
        return Err(bad(format!(
            "the checkpoint belongs to a different model ({what})"
        )));
    }
    if header["config"] != *cfg {
        let old = &header["config"];
        let mut keys: Vec<String> = vec![];
        if let (Some(o), Some(n)) = (old.as_object(), cfg.as_object()) {
            for k in o.keys().chain(n.keys()) {
                if o.get(k) != n.get(k) && !keys.contains(k) {
                    keys.push(k.clone());
                }
            }
        }
        let diff: Vec<String> = keys
            .iter()
            .map(|k| {
                format!(
                    "{k}: {} then, {} now",
                    old.get(k).unwrap_or(&Value::Null),
                    cfg.get(k).unwrap_or(&Value::Null)
                )
            })
            .collect();
        return Err(bad(format!(
            "the checkpoint was made with other settings ({}); resume with the same settings or use a new --out",
            diff.join("; ")
        )));
    }
    let mut at = hend;
    let mut take = |n: usize| -> Result<Vec<f32>, Error> {
        let end = at
            .checked_add(n * 4)
            .filter(|&e| e <= bytes.len())
            .ok_or_else(|| bad("truncated data".into()))?;
        let v = bytes[at..end]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect();
        at = end;
        Ok(v)
    };
    let adapters = st.adapters.iter_mut().zip(st.adapter_moments.iter_mut());
    for (p, m) in st
        .graph
        .params
        .iter_mut()
        .zip(st.moments.iter_mut())
        .chain(adapters)
    {
        let n = p.data.len();
        p.data = take(n)?;
        m.m = take(n)?;
        m.v = take(n)?;
    }
    for b in st.graph.bn.iter_mut() {
        b.mean = take(b.mean.len())?;
        b.var = take(b.var.len())?;
    }
    if let Some(q) = st.graph.qat.as_mut() {
        for a in q.acts.iter_mut() {
            let r = take(2)?;
            (a.min, a.max) = (r[0], r[1]);
        }
    }
    for m in st.masks.iter_mut() {
        let n = take(1)?[0] as usize;
        *m = take(n)?.iter().map(|&x| x != 0.0).collect();
    }
    if at != bytes.len() {
        return Err(bad(format!("{} trailing bytes", bytes.len() - at)));
    }
    st.epochs_done = header["epochs_done"]
        .as_u64()
        .ok_or_else(|| bad("epochs_done missing".into()))? as usize;
    st.step = header["step"]
        .as_u64()
        .ok_or_else(|| bad("step missing".into()))?;
    st.history = header["history"]
        .as_array()
        .map(|a| a.iter().filter_map(EpochMetrics::from_json).collect())
        .unwrap_or_default();
    Ok(())
}

/// The FitNets adapters of `hints`: for each, a 1x1 convolution `Cs -> Ct`
/// as two parameters, weight `[Ct, Cs]` and bias `[Ct]`, initialised as
/// PyTorch's `Conv2d` (uniform in `±1/sqrt(Cs)`) from a seeded stream.
/// `Cs` and `Ct` come from one probe sample through the student (eval mode)
/// and the teacher; their spatial sizes must be equal.
fn init_adapters(
    graph: &TrainGraph,
    d: &Distill,
    hints: &[FeatureHint],
    train: &TrainSet,
    seed: u64,
    device: &Device,
) -> Result<Vec<ParamTensor>, Error> {
    for h in hints {
        if !graph.has_value(&h.student) {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "{}: the student computes no value '{}' (feature hint {}={}); its last values are {:?}",
                    graph.model_name,
                    h.student,
                    h.student,
                    h.teacher,
                    graph.last_values(6)
                ),
            ));
        }
    }
    let [c, hh, ww] = train.shape;
    let x0 = train.inputs(0..1)?;
    let tx = kiln_ir::Tensor::from_vec(vec![1, c, hh, ww], x0.clone())
        .map_err(|e| Error::new(ErrorKind::Shape, e.to_string()))?;
    let mut ts = d.teacher.new_state(1);
    let tout = d
        .teacher
        .run(&mut ts, vec![tx])
        .map_err(|e| Error::new(ErrorKind::Model, format!("teacher {}: {e}", d.teacher_name)))?;
    let names: Vec<String> = hints.iter().map(|h| h.student.clone()).collect();
    let x = Tensor::<4>::from_data(TensorData::new(x0, [1, c, hh, ww]), device);
    let f = graph.forward(x, device, false, &names)?;
    let mut out = vec![];
    for (k, h) in hints.iter().enumerate() {
        let sd = f.taps.get(&h.student).map(|t| t.dims()).ok_or_else(|| {
            Error::new(
                ErrorKind::Shape,
                format!("student value '{}' is not 4-D", h.student),
            )
        })?;
        let td = tout.get(1 + k).map(|t| t.shape().to_vec()).ok_or_else(|| {
            Error::new(
                ErrorKind::Shape,
                format!(
                    "teacher {} does not output '{}' (compile it with teacher_with_features)",
                    d.teacher_name, h.teacher
                ),
            )
        })?;
        if td.len() != 4 || td[2] != sd[2] || td[3] != sd[3] {
            return Err(Error::new(
                ErrorKind::Shape,
                format!(
                    "feature hint {}={}: the student's value is {:?} and the teacher's {:?} per sample; a 1x1 adapter needs 4-D values of equal height and width",
                    h.student, h.teacher, sd, td
                ),
            ));
        }
        let (cs, ct) = (sd[1], td[1]);
        let bound = 1.0 / (cs as f64).sqrt();
        let mut rng = Rng::new(&[seed, 0xADA9_7E55, k as u64]);
        let mut draw = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|_| ((2.0 * rng.unit() - 1.0) * bound) as f32)
                .collect()
        };
        out.push(ParamTensor {
            name: format!("adapter.{k}.weight"),
            shape: vec![ct, cs, 1, 1],
            data: draw(ct * cs),
            decay: true,
        });
        out.push(ParamTensor {
            name: format!("adapter.{k}.bias"),
            shape: vec![ct],
            data: draw(ct),
            decay: false,
        });
    }
    Ok(out)
}

/// Zeroes the masked-out weights of the pruning targets (`idx[k]` is target
/// `k`'s parameter; an empty mask keeps everything).
fn apply_masks(params: &mut [ParamTensor], idx: &[usize], masks: &[Vec<bool>]) {
    for (&i, m) in idx.iter().zip(masks) {
        if m.len() == params[i].data.len() {
            for (x, &keep) in params[i].data.iter_mut().zip(m) {
                if !keep {
                    *x = 0.0;
                }
            }
        }
    }
}

/// Top-1 accuracy (%) of `model` on `set`, run on kiln's compiled runtime.
///
/// # Errors
/// Compilation or run errors of the runtime, e.g. an input shape mismatch.
pub fn evaluate(model: &Model, set: &TrainSet, batch: usize, threads: usize) -> Result<f64, Error> {
    let cm = kiln::compile_model(model.clone(), &kiln::runtime::CompileOptions::default())?;
    let mut state = cm.new_state(threads.max(1));
    let [c, h, w] = set.shape;
    let mut correct = 0usize;
    for start in (0..set.len()).step_by(batch.max(1)) {
        let end = (start + batch).min(set.len());
        let x = kiln_ir::Tensor::from_vec(vec![end - start, c, h, w], set.inputs(start..end)?)
            .map_err(|e| Error::new(ErrorKind::Shape, e.to_string()))?;
        let out = cm
            .run(&mut state, vec![x])
            .map_err(|e| Error::new(ErrorKind::Model, e.to_string()))?;
        let logits = out[0].to_f32_vec();
        let classes = logits.len() / (end - start);
        for (i, row) in logits.chunks_exact(classes).enumerate() {
            if kiln::eval::argmax(row) == Some(set.y[start + i] as usize) {
                correct += 1;
            }
        }
    }
    Ok(100.0 * correct as f64 / set.len().max(1) as f64)
}

fn write_metrics(
    path: &Path,
    model_name: &str,
    cfg: &FitConfig,
    cfg_json: &Value,
    st: &State,
    train: &TrainSet,
    val: Option<&TrainSet>,
) -> Result<(), Error> {
    let v = json!({
        "model": model_name,
        "train_data": train.source,
        "val_data": val.map(|v| v.source.clone()),
        "config": cfg_json,
        "threads": cfg.threads,
        "params": st.graph.num_params(),
        "epochs_done": st.epochs_done,
        "weights_hash": format!("{:016x}", st.graph.weights_hash()),
        "history": st.history.iter().map(EpochMetrics::to_json).collect::<Vec<_>>(),
    });
    let mut s = serde_json::to_string_pretty(&v).expect("JSON of plain values");
    s.push('\n');
    kiln::write_atomic(path, s.as_bytes()).map_err(Error::from)
}

/// Trains `model` (fp32, BatchNormalization unfolded) on `train` for
/// classification with cross-entropy, validating each epoch on `val`.
///
/// Each step: a batch of shuffled, augmented samples, a forward pass in
/// training mode, softmax cross-entropy against the labels, backward, AdamW
/// at the one-cycle learning rate, BatchNormalization running statistics
/// updated (momentum 0.1). After each epoch the model is exported, validated
/// on kiln's runtime, and the checkpoint, `model.onnx` and `metrics.json` are
/// written. `on` receives progress events.
///
/// # Errors
/// [`ErrorKind::Config`] for a zero batch, epoch or thread count;
/// [`ErrorKind::Data`] if the samples do not match the model's input or a
/// label is out of range; [`ErrorKind::Checkpoint`] if resuming from a
/// checkpoint of another model or settings; translation and I/O errors.
pub fn fit(
    model: &Model,
    train: &TrainSet,
    val: Option<&TrainSet>,
    cfg: &FitConfig,
    on: &mut dyn FnMut(FitEvent),
) -> Result<FitReport, Error> {
    fit_with(model, train, val, cfg, None, None, on)
}

/// [`fit`], with logit distillation from a teacher when `distill` is given,
/// and quantization-aware when `qat` is given (then `model` is the
/// [`crate::qat::QatStart::prepared`] model, and each epoch's `model.onnx`
/// is the QDQ export, validated on kiln's int8 runtime).
///
/// # Errors
/// As [`fit`]; also [`ErrorKind::Config`] for a temperature <= 0 or an alpha
/// outside `[0, 1]`, and [`ErrorKind::Shape`] if the teacher's logits do not
/// have the student's shape.
pub fn fit_with(
    model: &Model,
    train: &TrainSet,
    val: Option<&TrainSet>,
    cfg: &FitConfig,
    distill: Option<&Distill>,
    qat: Option<&QatSpec>,
    on: &mut dyn FnMut(FitEvent),
) -> Result<FitReport, Error> {
    let extras = Extras {
        distill,
        qat,
        pruning: None,
    };
    fit_ext(model, train, val, cfg, &extras, on)
}

/// What a training run adds to plain training (see [`fit_ext`]).
#[derive(Default, Clone, Copy)]
pub struct Extras<'a> {
    /// Distillation from a teacher.
    pub distill: Option<&'a Distill>,
    /// Quantization-aware training (`model` is then the prepared model).
    pub qat: Option<&'a QatSpec>,
    /// Magnitude pruning on a schedule.
    pub pruning: Option<&'a Pruning>,
}

/// Magnitude pruning during training (Zhu & Gupta 2017, as TF-MOT's
/// `prune_low_magnitude` does it): at every step where
/// [`kiln_prune::Schedule::at`] gives a sparsity, the masks of `targets` are
/// recomputed from the current weights by [`kiln_prune::magnitude_masks`];
/// every step, masked weights are set to zero before the forward pass and
/// again after the AdamW update, so pruned weights stay zero and the exported
/// model is sparse. Steps count from 0 over the whole run (resumes included);
/// the masks are checkpointed.
#[derive(Debug, Clone, PartialEq)]
pub struct Pruning {
    /// The weights to prune ([`kiln_prune::prune_targets`] of the model).
    pub targets: Vec<kiln_prune::PruneTarget>,
    /// Unstructured or block, layer-wise or global.
    pub config: kiln_prune::MagnitudeConfig,
    /// When and how much.
    pub schedule: kiln_prune::Schedule,
}

/// [`fit_with`] with every extra, magnitude pruning included.
///
/// # Errors
/// As [`fit_with`]; [`ErrorKind::Config`] for an invalid schedule or a
/// pruning target that is not a parameter of the model.
pub fn fit_ext(
    model: &Model,
    train: &TrainSet,
    val: Option<&TrainSet>,
    cfg: &FitConfig,
    extras: &Extras,
    on: &mut dyn FnMut(FitEvent),
) -> Result<FitReport, Error> {
    let (distill, qat, pruning) = (extras.distill, extras.qat, extras.pruning);
    if let Some(d) = distill {
        let t_ok = d.temperature > 0.0 && d.temperature.is_finite();
        let b_ok = d.feature_weight >= 0.0 && d.feature_weight.is_finite();
        if !t_ok || !b_ok || !(0.0..=1.0).contains(&d.alpha) {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "distillation needs temperature > 0, alpha in [0, 1] and feature weight >= 0, got T = {}, alpha = {} and beta = {}",
                    d.temperature, d.alpha, d.feature_weight
                ),
            ));
        }
    }
    let hints: Vec<FeatureHint> = distill
        .filter(|d| d.feature_weight > 0.0)
        .map(|d| d.features.clone())
        .unwrap_or_default();
    let tap_names: Vec<String> = hints.iter().map(|h| h.student.clone()).collect();
    let mut cfg_json = config_json(cfg, distill);
    if let Some(q) = qat {
        cfg_json["qat"] = json!({"act_dtype": format!("{:?}", q.act_dtype), "momentum": q.momentum, "points": q.acts.len()});
    }
    if let Some(p) = pruning {
        p.schedule
            .validate()
            .map_err(|m| Error::new(ErrorKind::Config, format!("pruning schedule: {m}")))?;
        cfg_json["pruning"] = json!({"schedule": format!("{:?}", p.schedule), "block": p.config.block,
            "global": p.config.global, "targets": p.targets.iter().map(|t| t.weight.clone()).collect::<Vec<_>>()});
    }
    let mut teacher_state = distill.map(|d| d.teacher.new_state(cfg.threads));
    let mut teacher_widths: Vec<usize> = vec![];
    let mut teacher_cache: Vec<Option<Vec<f32>>> = if distill.is_some() && cfg.augment.is_identity() {
        vec![None; train.len()]
    } else {
        vec![]
    };
    for (name, v) in [
        ("batch", cfg.batch),
        ("epochs", cfg.epochs),
        ("threads", cfg.threads),
    ] {
        if v == 0 {
            return Err(Error::new(
                ErrorKind::Config,
                format!("{name} must be at least 1, got 0"),
            ));
        }
    }
    if !(cfg.lr.is_finite() && cfg.lr > 0.0) {
        return Err(Error::new(
            ErrorKind::Config,
            format!("the learning rate (lr) must be a positive number, got {}", cfg.lr),
        ));
    }
    if !(cfg.weight_decay.is_finite() && cfg.weight_decay >= 0.0) {
        return Err(Error::new(
            ErrorKind::Config,
            format!("weight_decay must be >= 0, got {}", cfg.weight_decay),
        ));
    }
    // The data is part of the settings a checkpoint is resumed with: other
    // samples would silently change the schedule and leak validation samples.
    cfg_json["data"] = json!({"train": train.source, "train_len": train.len(),
        "val": val.map(|v| v.source.clone()), "val_len": val.map(|v| v.len())});
    if train.is_empty() {
        return Err(Error::new(ErrorKind::Data, "the training set is empty"));
    }
    let mut graph = TrainGraph::from_model(model)?;
    if let Some(q) = qat {
        graph.enable_qat(q.acts.clone(), q.act_dtype, q.momentum)?;
    }
    let prune_idx: Vec<usize> = match pruning {
        Some(p) => p
            .targets
            .iter()
            .map(|t| {
                graph
                    .params
                    .iter()
                    .position(|q| q.name == t.weight)
                    .ok_or_else(|| {
                        Error::new(
                            ErrorKind::Config,
                            format!(
                                "pruning target '{}' (node '{}') is not a trainable parameter of the model",
                                t.weight, t.node
                            ),
                        )
                    })
            })
            .collect::<Result<_, _>>()?,
        None => vec![],
    };
    let export = |g: &TrainGraph| -> Result<Model, Error> {
        match qat {
            Some(q) => crate::qat::export_qdq(g, model, q),
            None => g.to_model(model),
        }
    };
    let model_name = if model.graph.name.is_empty() {
        "model".to_string()
    } else {
        model.graph.name.clone()
    };
    std::fs::create_dir_all(&cfg.out_dir).map_err(|e| Error::io(&cfg.out_dir, e))?;
    let ckpt = cfg.out_dir.join("checkpoint.kiln");
    let device = Device::flex().autodiff();
    let adapters = match distill {
        Some(d) if !hints.is_empty() => init_adapters(&graph, d, &hints, train, cfg.seed, &device)?,
        _ => vec![],
    };
    let n_params = graph.params.len();
    let mut st = State {
        graph,
        moments: vec![Moments::default(); n_params],
        adapter_moments: vec![Moments::default(); adapters.len()],
        adapters,
        masks: vec![vec![]; prune_idx.len()],
        step: 0,
        epochs_done: 0,
        history: vec![],
    };
    let resumed = cfg.resume && ckpt.exists();
    if resumed {
        load_checkpoint(&ckpt, &mut st, &cfg_json)?;
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(cfg.threads)
        .build()
        .map_err(|e| Error::new(ErrorKind::Config, format!("thread pool: {e}")))?;
    let steps = train.len().div_ceil(cfg.batch);
    let sched = OneCycle::new(cfg.lr, (steps * cfg.epochs) as u64);
    let adam = AdamWConfig {
        weight_decay: cfg.weight_decay,
        ..Default::default()
    };
    let [c, h, w] = train.shape;
    on(FitEvent::Start {
        epoch: st.epochs_done + 1,
        epochs: cfg.epochs,
        steps,
        params: st.graph.num_params(),
        resumed,
    });
    let mut stopped_early = false;
    while st.epochs_done < cfg.epochs {
        if cfg.stop_after.is_some_and(|s| st.epochs_done >= s) {
            stopped_early = true;
            break;
        }
        let epoch = st.epochs_done + 1;
        let perm = Rng::new(&[cfg.seed, epoch as u64]).permutation(train.len());
        let t0 = Instant::now();
        let (mut loss_sum, mut correct, mut seen) = (0.0f64, 0usize, 0usize);
        let mut lr_now = 0.0;
        for s in 0..steps {
            if let Some(p) = pruning {
                if let Some(sp) = p.schedule.at(st.step) {
                    let params = &st.graph.params;
                    st.masks = kiln_prune::magnitude_masks(
                        &p.targets,
                        &|w| params.iter().find(|q| q.name == w).map(|q| q.data.clone()),
                        sp,
                        &p.config,
                    );
                }
                apply_masks(&mut st.graph.params, &prune_idx, &st.masks);
            }
            let idx = &perm[s * cfg.batch..((s + 1) * cfg.batch).min(train.len())];
            let mut rng = Rng::new(&[cfg.seed, epoch as u64, s as u64]);
            let (xb, yb) = train.gather(idx, &cfg.augment, &mut rng)?;
            let b = idx.len();
            // Teacher outputs (logits, then the hinted features) on the same
            // (augmented) batch, from kiln's runtime.
            let teacher_out: Option<Vec<Vec<f32>>> = match (distill, teacher_state.as_mut()) {
                (Some(d), Some(ts)) if d.needs_teacher() => {
                    let cached = !teacher_cache.is_empty() && idx.iter().all(|&i| teacher_cache[i].is_some());
                    if cached {
                        let mut outs = vec![Vec::new(); teacher_widths.len()];
                        for &i in idx {
                            let row = teacher_cache[i].as_deref().unwrap_or_default();
                            let mut off = 0;
                            for (o, &k) in outs.iter_mut().zip(&teacher_widths) {
                                o.extend_from_slice(&row[off..off + k]);
                                off += k;
                            }
                        }
                        Some(outs)
                    } else {
                        let x = kiln_ir::Tensor::from_vec(vec![b, c, h, w], xb.clone())
                            .map_err(|e| Error::new(ErrorKind::Shape, e.to_string()))?;
                        let out = d.teacher.run(ts, vec![x]).map_err(|e| {
                            Error::new(ErrorKind::Model, format!("teacher {}: {e}", d.teacher_name))
                        })?;
                        if out.len() < 1 + hints.len() {
                            return Err(Error::new(
                                ErrorKind::Shape,
                                format!(
                                    "teacher {} has {} outputs, feature distillation needs the logits and {} features (compile it with teacher_with_features)",
                                    d.teacher_name,
                                    out.len(),
                                    hints.len()
                                ),
                            ));
                        }
                        let outs: Vec<Vec<f32>> =
                            out.iter().take(1 + hints.len()).map(|t| t.to_f32_vec()).collect();
                        teacher_widths = outs.iter().map(|o| o.len() / b).collect();
                        if !teacher_cache.is_empty() {
                            let per: usize = teacher_widths.iter().sum();
                            if per.saturating_mul(train.len()).saturating_mul(4) > TEACHER_CACHE_BYTES {
                                teacher_cache = vec![];
                            } else {
                                for (j, &i) in idx.iter().enumerate() {
                                    let mut row = Vec::with_capacity(per);
                                    for (o, &k) in outs.iter().zip(&teacher_widths) {
                                        row.extend_from_slice(&o[j * k..(j + 1) * k]);
                                    }
                                    teacher_cache[i] = Some(row);
                                }
                            }
                        }
                        Some(outs)
                    }
                }
                _ => None,
            };
            let soft = teacher_out.as_ref().map(|o| &o[0]);
            let (loss, hits, grads, stats, ranges) = pool.install(|| -> Result<_, Error> {
                let x = Tensor::<4>::from_data(TensorData::new(xb, [b, c, h, w]), &device);
                let f = st.graph.forward(x, &device, true, &tap_names)?;
                let classes = f.output.dims()[1];
                let mut onehot = vec![0f32; b * classes];
                for (i, &y) in yb.iter().enumerate() {
                    let y = y as usize;
                    if y >= classes {
                        return Err(Error::new(
                            ErrorKind::Data,
                            format!("label {y} is out of range for {classes} classes"),
                        ));
                    }
                    onehot[i * classes + y] = 1.0;
                }
                let logits = f
                    .output
                    .clone()
                    .into_data()
                    .try_into_vec::<f32>()
                    .unwrap_or_default();
                let hits = logits
                    .chunks_exact(classes)
                    .zip(&yb)
                    .filter(|(row, &y)| kiln::eval::argmax(row) == Some(y as usize))
                    .count();
                let t = Tensor::<2>::from_data(TensorData::new(onehot, [b, classes]), &device);
                let hard = (log_softmax(f.output.clone(), 1) * t).sum() * (-1.0 / b as f32);
                let (mut loss, constant) = match (distill, soft) {
                    (Some(d), Some(tl)) if d.alpha > 0.0 => {
                        if tl.len() != b * classes {
                            return Err(Error::new(
                                ErrorKind::Shape,
                                format!(
                                    "teacher {} gives {} logits per batch, the student {}",
                                    d.teacher_name,
                                    tl.len(),
                                    b * classes
                                ),
                            ));
                        }
                        // Teacher probabilities at temperature T (f64 softmax on the host), and the
                        // constant sum p log p that turns the soft cross-entropy into the KL divergence.
                        let tt = d.temperature;
                        let mut p = vec![0f32; tl.len()];
                        let mut plogp = 0.0f64;
                        for (row, out) in tl.chunks_exact(classes).zip(p.chunks_exact_mut(classes)) {
                            let m = row.iter().fold(f64::NEG_INFINITY, |a, &v| a.max(v as f64 / tt));
                            let z: f64 = row.iter().map(|&v| (v as f64 / tt - m).exp()).sum();
                            for (o, &v) in out.iter_mut().zip(row) {
                                let q = (v as f64 / tt - m).exp() / z;
                                *o = q as f32;
                                if q > 0.0 {
                                    plogp += q * q.ln();
                                }
                            }
                        }
                        let pt = Tensor::<2>::from_data(TensorData::new(p, [b, classes]), &device);
                        let soft_ce = (log_softmax(f.output / tt as f32, 1) * pt).sum() * (-1.0 / b as f32);
                        let w = (d.alpha * tt * tt) as f32;
                        (
                            hard * (1.0 - d.alpha as f32) + soft_ce * w,
                            w as f64 * plogp / b as f64,
                        )
                    }
                    _ => (hard, 0.0),
                };
                // Feature hints: MSE between the adapted student value and the teacher's.
                let mut adapter_leaves = vec![];
                if let (Some(d), Some(outs)) = (distill, teacher_out.as_ref()) {
                    for (k, hint) in hints.iter().enumerate() {
                        let fs = f.taps.get(&hint.student).cloned().ok_or_else(|| {
                            Error::new(ErrorKind::Shape, format!("student value '{}' was not computed", hint.student))
                        })?;
                        let [_, cs, hh, ww] = fs.dims();
                        let (wp, bp) = (&st.adapters[2 * k], &st.adapters[2 * k + 1]);
                        let ct = bp.data.len();
                        let g = &outs[1 + k];
                        if g.len() != b * ct * hh * ww || wp.data.len() != ct * cs {
                            return Err(Error::new(
                                ErrorKind::Shape,
                                format!(
                                    "feature hint {}={}: the student's value is [{b}, {cs}, {hh}, {ww}], the adapter maps {} to {ct} channels and the teacher gives {} values ({ct}x{hh}x{ww} per sample expected)",
                                    hint.student, hint.teacher, wp.data.len() / ct.max(1), g.len()
                                ),
                            ));
                        }
                        let wl = Tensor::<1>::from_data(TensorData::new(wp.data.clone(), [ct * cs]), &device)
                            .require_grad();
                        let bl = Tensor::<1>::from_data(TensorData::new(bp.data.clone(), [ct]), &device)
                            .require_grad();
                        let pred = wl.clone().reshape([1, ct, cs]).repeat_dim(0, b).matmul(fs.reshape([b, cs, hh * ww]))
                            + bl.clone().reshape([1, ct, 1]);
                        let gt = Tensor::<3>::from_data(TensorData::new(g.clone(), [b, ct, hh * ww]), &device);
                        let diff = pred - gt;
                        let mse = (diff.clone() * diff).mean();
                        loss = loss + mse * d.feature_weight as f32;
                        adapter_leaves.push(wl);
                        adapter_leaves.push(bl);
                    }
                }
                let lv =
                    loss.clone().into_data().try_into_vec::<f32>().unwrap_or_default()[0] as f64 + constant;
                let g = loss.backward();
                let grads: Vec<Vec<f32>> = f
                    .leaves
                    .iter()
                    .zip(&st.graph.params)
                    .map(|(leaf, p)| {
                        leaf.grad(&g)
                            .and_then(|t| t.into_data().try_into_vec::<f32>().ok())
                            .unwrap_or_else(|| vec![0.0; p.data.len()])
                    })
                    .collect();
                let adapter_grads: Vec<Vec<f32>> = adapter_leaves
                    .iter()
                    .zip(&st.adapters)
                    .map(|(leaf, p)| {
                        leaf.grad(&g)
                            .and_then(|t| t.into_data().try_into_vec::<f32>().ok())
                            .unwrap_or_else(|| vec![0.0; p.data.len()])
                    })
                    .collect();
                Ok((lv, hits, (grads, adapter_grads), f.batch_stats, f.act_ranges))
            })?;
            if !loss.is_finite() {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!(
                        "the loss became {loss} at epoch {epoch}, step {}; lower the learning rate",
                        s + 1
                    ),
                ));
            }
            st.step += 1;
            let (lr, beta1) = sched.at(st.step - 1);
            lr_now = lr;
            let (grads, adapter_grads) = grads;
            let adapters = st
                .adapters
                .iter_mut()
                .zip(&adapter_grads)
                .zip(st.adapter_moments.iter_mut());
            for ((p, g), m) in st
                .graph
                .params
                .iter_mut()
                .zip(&grads)
                .zip(st.moments.iter_mut())
                .chain(adapters)
            {
                adamw_step(
                    &adam,
                    &mut p.data,
                    g,
                    m,
                    StepAt {
                        t: st.step,
                        lr,
                        beta1,
                    },
                    p.decay,
                );
            }
            apply_masks(&mut st.graph.params, &prune_idx, &st.masks);
            st.graph.update_bn(&stats);
            st.graph.update_act_ranges(&ranges);
            loss_sum += loss * b as f64;
            correct += hits;
            seen += b;
            on(FitEvent::Step {
                epoch,
                step: s + 1,
                steps,
                loss: loss_sum / seen as f64,
                images_per_s: seen as f64 / t0.elapsed().as_secs_f64(),
            });
        }
        let secs = t0.elapsed().as_secs_f64();
        let exported = export(&st.graph)?;
        let val_top1 = match val {
            Some(v) => Some(evaluate(&exported, v, cfg.eval_batch, cfg.threads)?),
            None => None,
        };
        let m = EpochMetrics {
            epoch,
            train_loss: loss_sum / seen as f64,
            train_top1: 100.0 * correct as f64 / seen as f64,
            val_top1,
            lr: lr_now,
            seconds: secs,
            images_per_s: seen as f64 / secs,
        };
        st.history.push(m.clone());
        st.epochs_done = epoch;
        let bytes =
            kiln_onnx::to_bytes(&exported).map_err(|e| Error::new(ErrorKind::Model, e.to_string()))?;
        kiln::write_atomic(&cfg.out_dir.join("model.onnx"), &bytes)?;
        save_checkpoint(&ckpt, &st, &cfg_json)?;
        write_metrics(
            &cfg.out_dir.join("metrics.json"),
            &model_name,
            cfg,
            &cfg_json,
            &st,
            train,
            val,
        )?;
        on(FitEvent::Epoch(m));
    }
    let model = export(&st.graph)?;
    Ok(FitReport {
        history: st.history,
        model,
        weights_hash: st.graph.weights_hash(),
        stopped_early,
    })
}
