//! # kiln-prune
//!
//! Magnitude pruning (unstructured or in 1x8 output-channel blocks, with
//! TF-MOT's ConstantSparsity and PolynomialDecay schedules: [`magnitude`])
//! and structured pruning of output channels, which removes whole filters from the
//! convolutions (and Gemm/MatMul outputs) of an fp32 NCHW model, together
//! with everything that depends on those channels, and returns a physically
//! smaller dense model that kiln's runtime runs and that exports as plain
//! ONNX.
//!
//! ```
//! use kiln_prune::{channel_groups, prune_channels, ChannelPruneConfig, Criterion};
//! use kiln_zoo::{build, Arch, ZooConfig};
//! let model = build(&ZooConfig { input: [1, 28, 28], ..ZooConfig::new(Arch::FmnistMnv2) }).unwrap();
//! let groups = channel_groups(&model).unwrap();
//! assert!(groups.iter().any(|g| g.prunable));
//! let cfg = ChannelPruneConfig { ratio: 0.5, criterion: Criterion::L1, ..Default::default() };
//! let (pruned, report) = prune_channels(&model, &cfg).unwrap();
//! assert!(report.params_after < report.params_before);
//! assert_eq!(pruned.graph.outputs, model.graph.outputs);
//! ```
//!
//! ## Dependencies
//! [`channel_groups`] finds the *channel groups*: sets of channels of
//! (tensor, axis) pairs that must go together. A channel removed from a
//! Conv's output is removed from its BatchNormalization (scale, B, mean,
//! var), from the elementwise activations after it, from the next Conv's
//! input channels (weight axis 1), from a depthwise Conv (`group` = C_in =
//! C_out: its filters and `group` shrink, and the channel goes on through
//! it), from Gemm/MatMul rows after GlobalAveragePool + Flatten/Reshape, from
//! every input of a residual Add (one mask for all), from squeeze-excite
//! blocks (GlobalAveragePool -> Conv -> act -> Conv -> HardSigmoid -> Mul:
//! the second Conv's filters and the gate are in the scaled tensor's group),
//! at the right offset of a Concat or Split, and through ShuffleNet's channel
//! shuffle (an exact permutation). The analysis is channel-exact: each value
//! with a known channel dim (axis 1) has one slot per channel, every op unites
//! input and output slots as it maps channels (or creates fresh ones, or is not
//! understood and locks its values), and channels touching the same tensors
//! form one group. The graph's inputs and outputs are never pruned, and
//! anything not understood makes the groups it touches not prunable, with
//! the node named in [`ChannelGroup::reason`]: an invalid model is never produced.
//!
//! ## Criteria
//! [`Criterion::L1`] and [`Criterion::L2`] norms of the output filters
//! (summed over the group's producers) and [`Criterion::BnScale`], the
//! BatchNormalization scale `|gamma|` of Network Slimming (data-free here:
//! the scale trained with or without the sparsity penalty). Layer-wise (each
//! group loses `ratio` of its channels) or global (mean-normalized scores
//! ranked across groups); kept counts round up to [`ChannelPruneConfig::round_to`].
//!
//! ## Exactness
//! Pruning a channel is exact (the pruned model computes what the original
//! computes) when the channel's activation is a constant zero in the
//! original: filters, bias and BatchNormalization scale and shift zero, and
//! an activation with `act(0) = 0` (ReLU, ReLU6, HardSwish, LeakyReLU...).
//! Through an op that maps 0 to a non-zero constant (Sigmoid, HardSigmoid:
//! 0.5; adding a broadcast scalar, as PP-LCNetV3's learnable affine blocks
//! do) a removed channel was a constant the next layer saw, and dropping it
//! shifts that layer's output by a constant. (A squeeze-excite gate is not
//! such a case: HardSigmoid(0) multiplies a zero channel.) Accuracy needs
//! fine-tuning after pruning anyway.
//!
//! ## Errors
//! [`Error`] has an [`ErrorKind`]; every message names the model, model
//! errors the node, op and attribute.
#![warn(missing_docs)]

mod analysis;
mod error;
pub mod magnitude;
mod prune;
mod stats;

pub use analysis::{channel_groups, ChannelGroup, Member, Role};
pub use error::{Error, ErrorKind, Result};
pub use magnitude::{
    magnitude_masks, prune_magnitude, prune_targets, weight_sparsity, LayerSparsity, MagnitudeConfig,
    PruneTarget, Schedule,
};
pub use prune::{prune_channels, ChannelPruneConfig, Criterion, GroupReport, GroupStatus, PruneReport};
