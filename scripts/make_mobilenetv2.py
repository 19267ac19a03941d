#!/usr/bin/env python3
"""Build MobileNetV2 1.0 (224x224) as ONNX with seeded random weights, for benchmarks.

Topology: MobileNetV2 (Sandler et al. 2018) exactly as torchvision's `mobilenet_v2()` exports it:
stem Conv 3x3/2 to 32, then 17 inverted-residual blocks with (t, c, n, s) = (1,16,1,1), (6,24,2,2),
(6,32,3,2), (6,64,4,2), (6,96,3,1), (6,160,3,2), (6,320,1,1) (expand 1x1 + BN + ReLU6 unless t = 1,
depthwise 3x3 + BN + ReLU6, project 1x1 + BN, `Add` when the stride is 1 and in == out channels),
Conv 1x1 to 1280 + BN + ReLU6, GlobalAveragePool, Flatten, Gemm 1280 -> 1000 (torchvision's Dropout
is the identity at inference). Convolutions have no bias and symmetric padding (k-1)/2; BN eps 1e-5
kept as separate `BatchNormalization` nodes; ReLU6 is `Clip(0, 6)`. Initializers use torchvision's
state-dict names (`features.N...`, `classifier.1.*`). Opset 13, IR version 8. Input `input`
[1,3,224,224] f32, output `output` [1,1000].

Weights (numpy `default_rng(0)`, drawn in graph order): convolutions and the FC weight He-normal
N(0, 2/fan_in) (fan_in = in_channels/group * kh * kw); FC bias 0; BN gamma U(0.5, 1.5), beta
N(0, 0.1^2), running mean N(0, 0.1^2), running var U(0.5, 1.5). The weights are random, so the
logits mean nothing: the model is for timing only. The file is byte-deterministic for a given numpy
and onnx (the fixtures pin its sha256).

Usage: make_mobilenetv2.py OUT.onnx [--no-ort]
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 13
IMAGE_SIZE = 224
BN_EPS = 1e-5
SEED = 0
# (t, c, n, s): expansion factor, output channels, repeats, stride of the first repeat
SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
# torchvision.models.mobilenet_v2(): 3,504,872 parameters (BN weight/bias included, running stats not)
EXPECT_LEARNABLE = 3_504_872
EXPECT_WITH_BN_STATS = 3_538_984
EXPECT_MACS = 300_774_272  # Conv + Gemm multiply-accumulates at batch 1


class Builder:
    def __init__(self) -> None:
        self.rng = np.random.default_rng(SEED)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = [
            numpy_helper.from_array(np.array(0.0, np.float32), "relu6_min"),
            numpy_helper.from_array(np.array(6.0, np.float32), "relu6_max"),
        ]
        self.hw = IMAGE_SIZE
        self.channels = 3
        self.macs = 0
        self.learnable = 0
        self.bn_stats = 0
        self.n = 0

    def init(self, name: str, a: np.ndarray, learnable: bool = True) -> str:
        a = np.ascontiguousarray(a.astype(np.float32))
        self.inits.append(numpy_helper.from_array(a, name))
        if learnable:
            self.learnable += a.size
        else:
            self.bn_stats += a.size
        return name

    def fresh(self, stem: str) -> str:
        self.n += 1
        return f"{stem}_{self.n}"

    def he_normal(self, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
        return self.rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)

    def conv(self, x: str, key: str, cout: int, k: int, stride: int, group: int = 1) -> str:
        cin_g = self.channels // group
        w = self.init(f"{key}.weight", self.he_normal((cout, cin_g, k, k), cin_g * k * k))
        pad = (k - 1) // 2
        out_hw = (self.hw + 2 * pad - k) // stride + 1
        self.macs += cout * out_hw * out_hw * cin_g * k * k
        self.hw, self.channels = out_hw, cout
        y = self.fresh(key.replace(".", "/") + "/Conv")
        self.nodes.append(helper.make_node(
            "Conv", [x, w], [y], name=key, kernel_shape=[k, k], strides=[stride, stride],
            dilations=[1, 1], pads=[pad, pad, pad, pad], group=group))
        return y

    def bn(self, x: str, key: str) -> str:
        c = self.channels
        gamma = self.init(f"{key}.weight", self.rng.uniform(0.5, 1.5, c))
        beta = self.init(f"{key}.bias", self.rng.standard_normal(c) * 0.1)
        mean = self.init(f"{key}.running_mean", self.rng.standard_normal(c) * 0.1, learnable=False)
        var = self.init(f"{key}.running_var", self.rng.uniform(0.5, 1.5, c), learnable=False)
        y = self.fresh(key.replace(".", "/") + "/BN")
        self.nodes.append(helper.make_node(
            "BatchNormalization", [x, gamma, beta, mean, var], [y], name=key, epsilon=BN_EPS, momentum=0.9))
        return y

    def relu6(self, x: str, key: str) -> str:
        y = self.fresh(key.replace(".", "/") + "/Relu6")
        self.nodes.append(helper.make_node("Clip", [x, "relu6_min", "relu6_max"], [y], name=key + ".relu6"))
        return y

    def conv_bn_relu6(self, x: str, key: str, cout: int, k: int, stride: int, group: int = 1) -> str:
        # torchvision Conv2dNormActivation: key.0 = Conv2d, key.1 = BatchNorm2d, key.2 = ReLU6
        return self.relu6(self.bn(self.conv(x, f"{key}.0", cout, k, stride, group), f"{key}.1"), key)


def build() -> tuple[onnx.ModelProto, dict]:
    b = Builder()
    x = b.conv_bn_relu6("input", "features.0", 32, 3, 2)
    idx = 1
    for t, c, n, s in SETTINGS:
        for r in range(n):
            stride = s if r == 0 else 1
            cin = b.channels
            hidden = cin * t
            p = f"features.{idx}.conv"
            inp = x
            layer = 0
            if t != 1:
                x = b.conv_bn_relu6(x, f"{p}.0", hidden, 1, 1)
                layer = 1
            x = b.conv_bn_relu6(x, f"{p}.{layer}", hidden, 3, stride, group=hidden)
            x = b.bn(b.conv(x, f"{p}.{layer + 1}", c, 1, 1), f"{p}.{layer + 2}")
            if stride == 1 and cin == c:
                y = b.fresh(f"features/{idx}/Add")
                b.nodes.append(helper.make_node("Add", [inp, x], [y], name=f"features.{idx}.add"))
                x = y
            idx += 1
    if idx != 18:
        raise ValueError(f"{idx - 1} inverted-residual blocks, expected 17")
    x = b.conv_bn_relu6(x, "features.18", 1280, 1, 1)
    b.nodes.append(helper.make_node("GlobalAveragePool", [x], ["pooled"], name="avgpool"))
    b.nodes.append(helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten", axis=1))
    fc_w = b.init("classifier.1.weight", b.he_normal((1000, 1280), 1280))
    fc_b = b.init("classifier.1.bias", np.zeros(1000))
    b.nodes.append(helper.make_node("Gemm", ["flat", fc_w, fc_b], ["output"], name="classifier.1",
                                    transB=1, alpha=1.0, beta=1.0))
    b.macs += 1280 * 1000

    graph = helper.make_graph(
        b.nodes, "mobilenet_v2",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, IMAGE_SIZE, IMAGE_SIZE])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1000])],
        initializer=b.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="kiln scripts/make_mobilenetv2.py", producer_version="1")
    model.ir_version = 8
    helper.set_model_props(model, {
        "source": "MobileNetV2 1.0 (Sandler et al. 2018), torchvision topology; random weights, numpy seed 0",
        "purpose": "benchmarking only: the weights are random, the outputs mean nothing",
    })
    stats = {"nodes": len(b.nodes), "learnable": b.learnable, "with_bn_stats": b.learnable + b.bn_stats,
             "macs": b.macs}
    return model, stats


def check_stats(stats: dict) -> None:
    for key, want in (("learnable", EXPECT_LEARNABLE), ("with_bn_stats", EXPECT_WITH_BN_STATS), ("macs", EXPECT_MACS)):
        if stats[key] != want:
            raise ValueError(f"mobilenetv2: {key} {stats[key]:,} != {want:,}")


def ort_check(path: str) -> float:
    """One ONNX Runtime run on a seeded input; returns max |logit| (must be finite)."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).uniform(-1, 1, (1, 3, IMAGE_SIZE, IMAGE_SIZE)).astype(np.float32)
    y = sess.run(["output"], {"input": x})[0]
    if y.shape != (1, 1000) or not np.isfinite(y).all():
        raise ValueError(f"mobilenetv2: ORT output {y.shape}, finite {bool(np.isfinite(y).all())}")
    return float(np.abs(y).max())


def make(out: str, run_ort: bool = True) -> dict:
    model, stats = build()
    check_stats(stats)
    onnx.checker.check_model(model, full_check=True)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tmp = out + ".tmp"
    onnx.save(model, tmp)
    if run_ort:
        stats["ort_max_abs"] = ort_check(tmp)
    os.replace(tmp, out)
    return stats


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", nargs="?", default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                                           ".fixtures", "models", "mobilenetv2-1.0.onnx"))
    ap.add_argument("--no-ort", action="store_true", help="skip the ONNX Runtime check run")
    a = ap.parse_args()
    stats = make(a.out, not a.no_ort)
    ort = f", ORT run ok (max |logit| {stats['ort_max_abs']:.3g})" if "ort_max_abs" in stats else ""
    print(f"{a.out}: {stats['nodes']} nodes, {stats['learnable']:,} params ({stats['with_bn_stats']:,} with BN stats), "
          f"{stats['macs'] / 1e6:.2f}M MACs{ort}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
