//! # kiln-quant
//!
//! int8 post-training quantization: calibrate an fp32 model on sample
//! inputs, then rewrite it as a QDQ model (ONNX `QuantizeLinear` /
//! `DequantizeLinear` around every quantized tensor) that the runtime can
//! evaluate in float as is, or lower into integer kernels.
//!
//! ```no_run
//! # fn main() -> kiln_quant::Result<()> {
//! # let model = kiln_ir::Model::default();
//! # let mut samples: Vec<Vec<kiln_ir::Tensor>> = Vec::new();
//! use kiln_quant::{calibrate, quantize, CalibOptions, Method, QuantOptions};
//! let opts = QuantOptions { method: Method::Entropy, ..QuantOptions::default() };
//! let calib = calibrate(&model, &mut samples, &CalibOptions::for_method(opts.method), &mut |_| {})?;
//! let (qdq_model, report) = quantize(&model, &calib, &opts)?;
//! println!("{report}");
//! # Ok(()) }
//! ```
//!
//! ## Steps
//!
//! 1. [`prepare`]: the graph optimizer at level `extended` (BatchNormalization
//!    folded, activations fused into `kiln::FusedConv`/`FusedGemm`), without
//!    fusing residual `Add`s into convolutions, so residual Adds quantize as
//!    `Add`. Calibration and quantization both work on this graph.
//! 2. [`calibrate`] (module [`calib`]): streaming statistics of every float
//!    tensor over a [`CalibrationData`] source, one or two passes.
//! 3. [`Method`] (module [`observer`]): each activation's float range from its
//!    statistics: MinMax, Percentile, Entropy (KL, TensorRT) or MSE; then
//!    `kiln_ir::quant::choose_qparams_asymmetric`.
//! 4. [`quantize`]: the QDQ graph, with bias correction, and a [`QuantReport`].
//! 5. [`mixed_precision`]: sensitivity analysis, and the most sensitive
//!    layers kept in fp32 until an accuracy budget is met.
//!
//! ## Scheme
//!
//! With `r` a real value and `q` its integer, `r = s (q - z)` (module
//! `kiln_ir::quant`, ONNX `QuantizeLinear`/`DequantizeLinear`).
//!
//! * **Activations**: uint8 (default) or int8, asymmetric, per tensor, scale
//!   and zero point from the method's range (extended to contain 0).
//! * **Weights** of Conv/FusedConv (`[M, C/group, kh, kw]`, axis 0),
//!   Gemm/FusedGemm (`B` is `[K, N]`: axis 1; with `transB`, `[N, K]`: axis 0)
//!   and MatMul/FusedMatMul with a constant `B` (`[..., K, N]`: the last axis):
//!   int8 symmetric, zero point 0, range `[-127, 127]`,
//!   `s_w[m] = max |W[m, ...]| / 127` per output channel (default) or per
//!   tensor (`kiln_ir::quant::choose_scale_symmetric`).
//! * **Biases** of Conv and Gemm (Gemm only with `alpha = beta = 1`): int32,
//!   zero point 0, `s_b[m] = s_x s_w[m]` (the scale of the int32 accumulator
//!   of `x * W`, so an integer kernel adds it as is).
//!
//! Representation, in the graph [`prepare`] returns:
//!
//! * every quantized activation tensor `v` (the data inputs and the output of
//!   every quantized node, graph inputs included) gets one
//!   `QuantizeLinear(v) -> DequantizeLinear` pair read by *all* consumers of
//!   `v`. A graph output keeps its name and stays float: the producer writes
//!   `v_float` and the last `DequantizeLinear` writes `v`. Activation scales
//!   are scalars (`v_scale`, `v_zero_point`);
//! * a weight becomes an int8 initializer read through `DequantizeLinear`
//!   with the `axis` attribute when per channel (scale and zero point 1-D,
//!   one per channel); a bias an int32 initializer, likewise (`axis` 0);
//! * constant operands of Add/Mul/Concat become initializers of the
//!   activation type (per tensor, their own min/max) read through
//!   `DequantizeLinear`;
//! * node names of quantized layers are unchanged; the added nodes are named
//!   `<value>_QuantizeLinear` and `<value>_DequantizeLinear`;
//! * the default-domain opset is raised to 13 when lower (per-axis
//!   `DequantizeLinear`), unless an op of the model changed meaning in
//!   between (then [`QuantErrorKind::Opset`]).
//!
//! Quantized ops (inputs and output QDQ'd): Conv, FusedConv (its activation
//! stays inside it: the output's range is that of the activated output, and
//! its `QuantizeLinear` clamps), Gemm, FusedGemm, MatMul/FusedMatMul (constant
//! weights), Add, Mul, AveragePool, GlobalAveragePool, Concat, Resize
//! (non-nearest), HardSigmoid, HardSwish, Sigmoid, Relu, Clip. Data-movement
//! ops — Reshape, Flatten, Squeeze, Unsqueeze, Transpose, MaxPool, Resize
//! with mode `nearest` — get the *same* parameters on their output as on
//! their input (shared scale and zero point initializers), so they can run
//! on the integers directly. Everything else (Softmax, ...) stays float and
//! reads the dequantized values of quantized tensors; so do the nodes of
//! [`QuantOptions::exclude`].
//!
//! ## Bias correction
//!
//! Quantizing weights shifts a layer's expected output: with `W_q` the
//! dequantized int8 weights and `eps = W_q - W`,
//! `E[y_q] - E[y] = eps E[x]`. The empirical variant of Nagel, van Baalen,
//! Blankevoort and Welling, "Data-Free Quantization Through Weight
//! Equalization and Bias Correction" (ICCV 2019, section 4.2) measures `E[x]`
//! on calibration data and subtracts the shift from the bias:
//!
//! ```text
//! Conv:  b'[m] = b[m] - sum_{c < C/g} sum_{k} eps[m, c, k] * E[x_{g(m) C/g + c}]
//! Gemm:  c'[n] = c[n] - sum_k eps'[k, n] * E[x_k]        (eps' = eps or its transpose)
//! ```
//!
//! `E[x_c]` is the mean of input channel `c` (axis 1 of a Conv input, the
//! `K` axis of Gemm's `A`) over the calibration set (pass 1), `g(m)` the
//! group of output channel `m` (depthwise: each channel its own). A layer
//! without a bias gets one (zeros minus the shift). The expected output
//! error is then zero wherever every kernel tap reads the input: at the
//! borders of a padded convolution some taps read padding zeros instead of
//! `E[x]`, so the correction there is slightly off (it assumes `E[x]` at
//! every tap). The means are those of the float model's activations (the
//! empirical variant), and the correction is computed before the bias is
//! quantized to int32. MatMul has no bias input and is not corrected.
//!
//! ## Measured
//!
//! EfficientNet-Lite0 (`.fixtures/models/efficientnet-lite0.onnx`),
//! calibrated on 9 photos (224x224 center crops, no resize), evaluated on 20
//! other ImageNet photos (test `tests/efficientnet.rs`); uint8 activations,
//! per-channel int8 weights, bias correction on; logits SQNR against fp32:
//!
//! | method | SQNR dB | top-1 = fp32 | top-1 correct (fp32: 17/20) |
//! |---|---|---|---|
//! | MinMax | 20.4 | 20/20 | 17/20 |
//! | Percentile 99.99 | 20.2 | 20/20 | 17/20 |
//! | Entropy | 20.4 | 20/20 | 17/20 |
//! | MSE | 20.6 | 20/20 | 17/20 |
//!
//! The same MinMax model on the integer kernels (`kiln_runtime` lowering):
//! 20.3 dB, 20/20. Without bias correction MinMax loses ~3 dB; with
//! per-tensor weights it is ~11 dB (the depthwise convolutions suffer most).
//! Entropy was at 14.6 dB before it took histogram spikes as point masses
//! (see below): it clipped the depthwise ReLU6 outputs of the last blocks to
//! ~3.5-4 of 6.
//!
//! `models/fmnist_mnv2.onnx` (Fashion-MNIST, calibrated on training images
//! 0..500, evaluated on the 10,000 test images; fp32 91.72 %; same scheme;
//! run on the integer kernels: `tests/fmnist_entropy.rs`, the ignored
//! `all_methods_on_10k_test_images`), against ONNX Runtime 1.32's
//! `quantize_static` (`models/fmnist_mnv2.md`: MinMax 39.23 dB, 91.82 %):
//!
//! | method | SQNR dB | top-1 % |
//! |---|---|---|
//! | MinMax | 39.29 | 91.81 |
//! | Percentile 99.99 | 38.47 | 91.67 |
//! | Entropy | 39.43 | 91.81 |
//! | MSE | 39.42 | 91.76 (float QDQ: 39.43 dB, 91.74; 39.73 dB, 91.80 without bias correction) |
//!
//! Entropy used to fail there (13.41 dB, 89.76 %): the activations of flat
//! (background) image regions are per-channel constants, i.e. spikes in the
//! histogram, and `Q`'s even spreading of each level's mass over its bins
//! (the reference algorithm's model of quantization) penalised wide windows
//! for smearing them, so the KL minimum clipped ReLU6 outputs to ~1.5. The
//! KL search now takes such spikes out of the spreading as exact values, as
//! it does zeros ([`observer::entropy_range`]).
//!
//! ## Errors
//!
//! [`QuantError`] has a [`QuantErrorKind`]; model errors keep the IR's kind
//! and name the node, op and attribute.
#![warn(missing_docs)]

pub mod calib;
mod error;
mod mixed;
pub mod observer;
mod qdq;
mod report;

pub use calib::{
    calibrate, CalibOptions, CalibProgress, CalibrationData, CalibrationResult, ChannelMean, Histogram,
    TensorStats,
};
pub use error::{QuantError, QuantErrorKind, Result};
pub use mixed::{mixed_precision, sqnr_db, LayerSensitivity, MixedPrecisionReport};
pub use observer::Method;
pub use qdq::{prepare, quantize, quantize_with_data, QuantOptions, KEPT_RULE_DISABLED, MIN_QDQ_OPSET};
pub use report::{ActRange, BiasReport, LayerReport, LayerStatus, QuantReport, WeightScheme};
