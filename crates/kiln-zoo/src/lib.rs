//! # kiln-zoo
//!
//! Lightweight student architectures built directly as kiln IR graphs
//! ([`kiln_ir::Model`]), freshly initialised and in *trainable* form: every
//! convolution is a bias-free `Conv` followed by its own `BatchNormalization`
//! node and then its activation, nothing is folded.
//!
//! ```
//! use kiln_zoo::{build, Arch, ZooConfig};
//! let cfg = ZooConfig { input: [3, 64, 64], classes: 10, ..ZooConfig::new(Arch::MobileNetV2) };
//! let model = build(&cfg).unwrap();
//! assert_eq!(model.graph.outputs[0].name, "logits");
//! ```
//!
//! ## Graphs
//! One f32 input `input` `[batch, C, H, W]` (`batch` is a symbolic dim) and one
//! output `logits` `[batch, classes]` (no softmax). Default-domain opset 14
//! (every op is used in its opset-13 form; `HardSwish` needs 14). The ops are
//! limited to Conv, BatchNormalization, Relu, Clip (ReLU6, bounds as scalar f32
//! initializer inputs `relu6.min`/`relu6.max`), HardSigmoid, HardSwish, Mul,
//! Add, GlobalAveragePool, MaxPool, Flatten, Gemm (`transB` = 1, with bias),
//! Concat, Split (int64 `split` input), Reshape (int64 shape input, 0 keeps the
//! batch) and Transpose. Node names follow the PyTorch reference modules, e.g.
//! `features.3.dw.conv`, `features.3.dw.bn`, `features.3.dw.relu6`,
//! `features.3.add`; initializers are `<node>.weight`, `<node>.bias`, and for
//! BatchNormalization `<node>.running_mean` and `<node>.running_var`.
//!
//! ## Initialisation
//! Deterministic: every initializer is drawn from its own SplitMix64 stream
//! seeded by ([`ZooConfig::seed`], its name), normals by Box-Muller, so the
//! same config gives the same bytes on every run and platform. As in
//! torchvision's MobileNetV2/V3: Conv weights Kaiming-normal, fan-out mode,
//! ReLU gain (std = sqrt(2 / (C_out k k))), Conv biases (squeeze-excite only)
//! 0; BatchNormalization gamma 1, beta 0, running mean 0, running var 1; Gemm
//! weights N(0, 0.01^2), biases 0. The same scheme is used for ShuffleNetV2 and
//! EfficientNet-Lite (whose references initialise differently). Evaluated
//! untrained (running statistics 0 and 1), a fresh net's activations shrink
//! layer by layer (fan-out init of the depthwise convs), so its logits are
//! near 0: the init is meant for training, where BN normalises by batch.
//!
//! ## Width and input size
//! The width multiplier rounds channels with torchvision's
//! `_make_divisible(c * width, 8)` (for EfficientNet-Lite on top of the
//! variant's own width coefficient; EfficientNet-Lite keeps its stem (32) and
//! head (1280) fixed). MobileNetV2 scales its last conv (1280) only for
//! widths above 1, as torchvision does; FmnistMnv2 scales all its channels.
//! ShuffleNetV2 has fixed stage tables for widths 0.5, 1.0, 1.5 and 2.0 and
//! rejects others. H and W must be at least 16; any channel count is accepted
//! (1 for Fashion-MNIST).
//!
//! **Small inputs.** [`Arch::FmnistMnv2`] is always exactly its reference net
//! (total stride 4). The other architectures downsample by 32; when `min(H, W)
//! < 64` they drop two stride-2 steps: the stem convolution runs at stride 1
//! (ShuffleNetV2: the stem and its max pool), and so does the first stride-2
//! stage, for a total stride of 8. The last feature map is thus at least 2x2
//! for every accepted input (`ceil(16 / 8)` = `ceil(64 / 32)` = 2); 28x28 ends
//! at 4x4.
#![warn(missing_docs)]

mod arch;
mod net;
mod rng;

use kiln_ir::{Attribute, Model, Tensor};
use std::collections::BTreeMap;

/// The architectures of the zoo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// The Fashion-MNIST classifier of kiln's `scripts/train_fmnist.py`, a
    /// small MobileNetV2: stem 3x3 conv 16 (stride 1) + BN + ReLU6; inverted
    /// residual blocks (expansion, out channels, stride) (4,24,2) (4,24,1)
    /// (4,40,2) (4,40,1) (4,64,1) (4,64,1) (4,96,1), each 1x1 expand + BN +
    /// ReLU6, 3x3 depthwise + BN + ReLU6, 1x1 project + BN, residual `Add` when
    /// stride 1 and channels match; head 1x1 conv 256 + BN + ReLU6; global
    /// average pool, Gemm. Default input `[1, 28, 28]`, 10 classes.
    FmnistMnv2,
    /// MobileNetV2 (Sandler et al., "MobileNetV2: Inverted Residuals and
    /// Linear Bottlenecks", CVPR 2018), as torchvision's `mobilenet_v2`: stem
    /// 32, 17 inverted residual blocks, head 1280 (scaled only for width > 1),
    /// ReLU6. About 300M MACs at 224x224, width 1.
    MobileNetV2,
    /// MobileNetV3-Small (Howard et al., "Searching for MobileNetV3", ICCV
    /// 2019), as torchvision's `mobilenet_v3_small`: 11 bneck blocks with
    /// squeeze-excite (ReLU, HardSigmoid) and ReLU/HardSwish, last conv 576,
    /// classifier Gemm 1024 + HardSwish + Gemm. BN epsilon 1e-3 (torchvision).
    /// About 56M MACs at 224x224.
    MobileNetV3Small,
    /// ShuffleNetV2 (Ma et al., "ShuffleNet V2: Practical Guidelines for
    /// Efficient CNN Architecture Design", ECCV 2018), as torchvision's
    /// `shufflenet_v2_x{0_5,1_0,1_5,2_0}`: channel split (`Split`), channel
    /// shuffle (`Reshape`-`Transpose`-`Reshape`), `Concat`. About 146M MACs at
    /// 224x224, width 1.
    ShuffleNetV2,
    /// EfficientNet-Lite0..=4 (Tan & Le, "EfficientNet", ICML 2019; the Lite
    /// variants of the TensorFlow TPU repository's `efficientnet_lite_builder`):
    /// MBConv blocks without squeeze-excite, ReLU6, stem 32 and head 1280
    /// fixed, TensorFlow "SAME" padding (asymmetric `pads` where needed), BN
    /// epsilon 1e-3. Scaling (width, depth, resolution): Lite0 (1.0, 1.0,
    /// 224), Lite1 (1.0, 1.1, 240), Lite2 (1.1, 1.2, 260), Lite3 (1.2, 1.4,
    /// 280), Lite4 (1.4, 1.8, 300); depth scales all stages but the first and
    /// last. Lite0: 385.19M MACs at 224x224. The variant must be 0..=4.
    EfficientNetLite(u8),
}

impl Arch {
    /// Every architecture of the zoo.
    pub const ALL: [Arch; 9] = [
        Arch::FmnistMnv2,
        Arch::MobileNetV2,
        Arch::MobileNetV3Small,
        Arch::ShuffleNetV2,
        Arch::EfficientNetLite(0),
        Arch::EfficientNetLite(1),
        Arch::EfficientNetLite(2),
        Arch::EfficientNetLite(3),
        Arch::EfficientNetLite(4),
    ];

    /// The architecture's name: `fmnist-mnv2`, `mobilenetv2`,
    /// `mobilenetv3-small`, `shufflenetv2`, `efficientnet-lite0` ..
    /// `efficientnet-lite4`.
    pub fn name(&self) -> String {
        match self {
            Arch::FmnistMnv2 => "fmnist-mnv2".into(),
            Arch::MobileNetV2 => "mobilenetv2".into(),
            Arch::MobileNetV3Small => "mobilenetv3-small".into(),
            Arch::ShuffleNetV2 => "shufflenetv2".into(),
            Arch::EfficientNetLite(v) => format!("efficientnet-lite{v}"),
        }
    }

    /// The architecture called `name` (as [`Arch::name`] spells it).
    ///
    /// Errors: an unknown name ([`ZooError::UnknownArch`], listing the names).
    pub fn from_name(name: &str) -> Result<Arch, ZooError> {
        Arch::ALL
            .into_iter()
            .find(|a| a.name() == name)
            .ok_or_else(|| ZooError::UnknownArch(name.into()))
    }

    /// The reference input `[C, H, W]`: `[1, 28, 28]` for FmnistMnv2, the
    /// variant's resolution for EfficientNet-Lite, else `[3, 224, 224]`.
    pub fn default_input(&self) -> [usize; 3] {
        match self {
            Arch::FmnistMnv2 => [1, 28, 28],
            Arch::EfficientNetLite(v) => {
                let r = arch::LITE_SCALING.get(*v as usize).map_or(224, |s| s.2);
                [3, r, r]
            }
            _ => [3, 224, 224],
        }
    }
}

/// What to build.
#[derive(Debug, Clone, PartialEq)]
pub struct ZooConfig {
    /// The architecture.
    pub arch: Arch,
    /// Width multiplier (1.0 = the reference); must be finite and > 0.
    pub width: f32,
    /// Input `[C, H, W]`; H and W at least 16.
    pub input: [usize; 3],
    /// Number of classes (`logits` width), at least 1.
    pub classes: usize,
    /// Seed of the weight initialisation.
    pub seed: u64,
}

impl ZooConfig {
    /// The reference configuration of `arch`: width 1,
    /// [`Arch::default_input`], 10 classes for FmnistMnv2 and 1000 for the
    /// ImageNet architectures, seed 0.
    pub fn new(arch: Arch) -> ZooConfig {
        ZooConfig {
            arch,
            width: 1.0,
            input: arch.default_input(),
            classes: if arch == Arch::FmnistMnv2 { 10 } else { 1000 },
            seed: 0,
        }
    }
}

/// Errors of the zoo.
#[derive(Debug, thiserror::Error)]
pub enum ZooError {
    /// A configuration the architecture cannot be built with; names the
    /// architecture and the parameter.
    #[error("{arch}: invalid {param}: {message}")]
    InvalidConfig {
        /// Architecture name.
        arch: String,
        /// The parameter at fault (`width`, `input`, `classes`, `variant`).
        param: &'static str,
        /// What is wrong and what is accepted.
        message: String,
    },
    /// [`Arch::from_name`] got a name that is not in the zoo.
    #[error("unknown architecture '{0}' (known: fmnist-mnv2, mobilenetv2, mobilenetv3-small, shufflenetv2, efficientnet-lite0..efficientnet-lite4)")]
    UnknownArch(String),
    /// Weights that do not fit the built graph (see [`efficientnet_lite0_from_onnx`]).
    #[error("weights do not fit: {0}")]
    Weights(String),
    /// The IR rejected the graph (a bug in the zoo).
    #[error(transparent)]
    Ir(#[from] kiln_ir::IrError),
}

/// Builds `cfg`'s architecture: an f32 model with input `input` `[batch, C,
/// H, W]` and output `logits` `[batch, classes]`, freshly initialised (see the
/// crate docs for the structure, the initialisation and the small-input rule).
///
/// Errors ([`ZooError::InvalidConfig`]): a width that is not finite and > 0 (or,
/// for ShuffleNetV2, not one of 0.5, 1.0, 1.5, 2.0), H or W below 16, zero
/// channels or classes, an EfficientNet-Lite variant above 4.
pub fn build(cfg: &ZooConfig) -> Result<Model, ZooError> {
    let name = cfg.arch.name();
    let bad = |param, message: String| ZooError::InvalidConfig {
        arch: name.clone(),
        param,
        message,
    };
    let [c, h, w] = cfg.input;
    if !(cfg.width.is_finite() && cfg.width > 0.0) {
        return Err(bad("width", format!("{} (must be finite and > 0)", cfg.width)));
    }
    if h < 16 || w < 16 || c == 0 {
        return Err(bad(
            "input",
            format!("[{c}, {h}, {w}] (need C >= 1 and H, W >= 16)"),
        ));
    }
    if cfg.classes == 0 {
        return Err(bad("classes", "0 (need at least 1)".into()));
    }
    let small = h.min(w) < 64;
    let width = f64::from(cfg.width);
    let (mut n, x) = net::Net::new(&name, cfg.seed, cfg.input);
    let logits = match cfg.arch {
        Arch::FmnistMnv2 => arch::fmnist_mnv2(&mut n, &x, width, cfg.classes),
        Arch::MobileNetV2 => arch::mobilenet_v2(&mut n, &x, width, cfg.classes, small),
        Arch::MobileNetV3Small => {
            n.eps = 1e-3;
            n.momentum = 0.99;
            arch::mobilenet_v3_small(&mut n, &x, width, cfg.classes, small)
        }
        Arch::ShuffleNetV2 => {
            let &(_, table) = arch::SHUFFLENET_TABLES
                .iter()
                .find(|t| t.0 == cfg.width)
                .ok_or_else(|| {
                    let msg = "(ShuffleNetV2 has stage tables for 0.5, 1.0, 1.5, 2.0 only)";
                    bad("width", format!("{} {msg}", cfg.width))
                })?;
            arch::shufflenet_v2(&mut n, &x, table, cfg.classes, small)
        }
        Arch::EfficientNetLite(v) => {
            let &(wc, dc, _) = arch::LITE_SCALING
                .get(v as usize)
                .ok_or_else(|| bad("variant", format!("{v} (EfficientNet-Lite has variants 0..=4)")))?;
            n.eps = 1e-3;
            n.momentum = 0.99;
            arch::efficientnet_lite(&mut n, &x, wc * width, dc, cfg.classes, small)
        }
    };
    let meta = BTreeMap::from([
        ("kiln.zoo.arch".to_string(), name.clone()),
        ("kiln.zoo.width".to_string(), cfg.width.to_string()),
        ("kiln.zoo.seed".to_string(), cfg.seed.to_string()),
    ]);
    Ok(n.finish(&logits, meta)?)
}

/// EfficientNet-Lite0 as [`build`] makes it, carrying the weights of
/// `fixture`: kiln's `.fixtures/models/efficientnet-lite0.onnx` (made by
/// `scripts/effnet_to_onnx.py` from the `efficientnet-lite0-57934424.pth`
/// checkpoint: bias-free Conv + BatchNormalization (epsilon 1e-3) + Clip,
/// TensorFlow "SAME" pads, Gemm classifier), or any model of that structure.
///
/// The input size and class count are taken from `fixture` (its input must
/// have known H and W). Weights are matched by position: the i-th Conv,
/// BatchNormalization and Gemm of `fixture` (in topological order) give the
/// weights of the built graph's i-th one; the op types, weight shapes, Conv
/// `pads`/`strides`/`group` and BN `epsilon` must agree, so the result computes
/// the fixture's function with the zoo's node names.
///
/// Errors: [`ZooError::Weights`] naming the first node that does not match
/// (or a missing input size or classifier); [`ZooError::Ir`] if `fixture` is
/// not a valid graph.
pub fn efficientnet_lite0_from_onnx(fixture: &Model) -> Result<Model, ZooError> {
    let mut src = fixture.clone();
    src.graph.validate()?;
    let dims = src
        .graph
        .inputs
        .first()
        .and_then(|i| i.ty.shape.clone())
        .ok_or_else(|| ZooError::Weights("the fixture has no input of known rank".into()))?;
    let known: Vec<Option<usize>> = dims.iter().map(|d| d.known()).collect();
    let &[_, Some(c), Some(h), Some(w)] = known.as_slice() else {
        return Err(ZooError::Weights(format!(
            "fixture input {dims:?} is not [N, C, H, W] with known C, H, W"
        )));
    };
    let classes = src
        .graph
        .nodes
        .iter()
        .rfind(|n| n.op_type == "Gemm")
        .and_then(|n| n.inputs.get(1))
        .and_then(|wn| src.graph.initializers.get(wn))
        .and_then(|t| t.shape().first().copied())
        .ok_or_else(|| {
            ZooError::Weights("the fixture has no Gemm classifier with an initializer weight".into())
        })?;
    let cfg = ZooConfig {
        input: [c, h, w],
        classes,
        ..ZooConfig::new(Arch::EfficientNetLite(0))
    };
    let mut dst = build(&cfg)?;
    let layers = |m: &Model| -> Vec<usize> {
        let ops = ["Conv", "BatchNormalization", "Gemm"];
        (0..m.graph.nodes.len())
            .filter(|&i| ops.contains(&m.graph.nodes[i].op_type.as_str()))
            .collect()
    };
    let (sl, dl) = (layers(&src), layers(&dst));
    if sl.len() != dl.len() {
        return Err(ZooError::Weights(format!(
            "the fixture has {} Conv/BatchNormalization/Gemm nodes, EfficientNet-Lite0 has {}",
            sl.len(),
            dl.len()
        )));
    }
    let mut weights: Vec<(String, Tensor)> = Vec::new();
    for (&si, &di) in sl.iter().zip(&dl) {
        let (s, d) = (&src.graph.nodes[si], &dst.graph.nodes[di]);
        let mismatch = |what: String| {
            ZooError::Weights(format!(
                "fixture node '{}' vs zoo node '{}': {what}",
                s.name, d.name
            ))
        };
        if s.op_type != d.op_type || s.inputs.len() != d.inputs.len() {
            return Err(mismatch(format!(
                "{} with {} inputs vs {} with {}",
                s.op_type,
                s.inputs.len(),
                d.op_type,
                d.inputs.len()
            )));
        }
        for attr in ["pads", "strides", "group", "epsilon"] {
            let (a, b) = (s.attrs.get(attr), d.attrs.get(attr));
            let same = match (a, b) {
                (Some(Attribute::Float(x)), Some(Attribute::Float(y))) => (x - y).abs() <= 1e-7,
                _ => a == b,
            };
            if !same && d.attrs.contains_key(attr) {
                return Err(mismatch(format!("attribute {attr} {a:?} vs {b:?}")));
            }
        }
        for (sn, dn) in s.inputs.iter().zip(&d.inputs).skip(1) {
            let t = src
                .graph
                .initializers
                .get(sn)
                .ok_or_else(|| mismatch(format!("input '{sn}' is not an initializer")))?;
            let want = dst.graph.initializers[dn].shape();
            if t.shape() != want {
                return Err(mismatch(format!(
                    "'{sn}' has shape {:?}, '{dn}' needs {want:?}",
                    t.shape()
                )));
            }
            weights.push((dn.clone(), t.clone()));
        }
    }
    dst.graph.initializers.extend(weights);
    dst.metadata.insert(
        "kiln.zoo.weights".into(),
        "efficientnet-lite0-57934424.pth (via the ONNX fixture)".into(),
    );
    Ok(dst)
}
