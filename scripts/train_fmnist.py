#!/usr/bin/env python3
# One-off tool (never run by CI: its output, models/fmnist_mnv2.onnx, is committed). Its own throwaway
# venv, outside the repo, CPython 3.11:
#   torch==2.9.1  (PyPI cp311 manylinux_2_28_x86_64 wheel, installed --no-deps; it loads its CUDA libs
#                  at import even on CPU, so also the nvidia-*-cu12 wheels its METADATA pins, --no-deps)
#   filelock==4.3.1 typing_extensions==4.16.0 sympy==1.14.0 mpmath==1.3.0 networkx==3.6.1 jinja2==3.1.6
#   MarkupSafe==3.0.4 fsspec==2026.9.0 numpy==2.4.6 onnx==1.22.0 protobuf==7.36.2 ml_dtypes==0.6.0
# No torchvision, no onnxscript (the TorchScript exporter, dynamo=False, needs neither).
"""Train a small MobileNetV2-style classifier on Fashion-MNIST and export it to ONNX.

    python scripts/train_fmnist.py [--fixtures .fixtures] [--out models/fmnist_mnv2.onnx]
                                   [--epochs 6] [--seed 0] [--threads 2]

Data: the gzipped IDX files in <fixtures>/fashion-mnist/ (scripts/fixtures puts them there).
Input: float32 [N,1,28,28] = pixel / 255, nothing else (no mean/std normalisation).
Splits: train on training images 0..55000; images 55000..60000 are the VALIDATION split (never
trained on); the first 500 training images are the calibration set for post-training quantization;
the 10,000 t10k images are the test set.

Net: stem conv 3x3 + BN + ReLU6, inverted-residual blocks (1x1 expand + BN + ReLU6, depthwise 3x3
+ BN + ReLU6, 1x1 project + BN, residual Add where input and output shapes match), 1x1 conv + BN +
ReLU6, GlobalAveragePool, Flatten, Linear -> 10 logits. Exported in eval mode with the TorchScript
exporter (dynamo=False, opset 13), which folds each BN into its conv: Conv, Clip(0, 6), Add,
GlobalAveragePool, Flatten, Gemm. Input `input` [batch,1,28,28], output `logits` [batch,10].

Deterministic: torch/numpy/random seeded, torch.use_deterministic_algorithms(True), fixed thread count.
"""

from __future__ import annotations

import argparse
import gzip
import os
import random
import sys
import time

# Scheduling only (results do not depend on it): idle OpenMP threads sleep instead of spinning, which
# matters a lot on a loaded machine. Must be set before torch loads OpenMP.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
N_TRAIN, N_CALIB = 55000, 500
PREPROCESSING = ("float32 [N,1,28,28] = pixel / 255 (uint8 IDX pixels, 0 = background); "
                 "no mean/std normalisation")

# (expansion t, output channels c, stride s) per inverted-residual block
BLOCKS = [(4, 24, 2), (4, 24, 1), (4, 40, 2), (4, 40, 1), (4, 64, 1), (4, 64, 1), (4, 96, 1)]
STEM, HEAD = 16, 256


def read_idx_gz(path: str) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    assert data[:3] == b"\0\0\x08", f"{path}: not a uint8 IDX file"
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load(fixtures: str):
    d = os.path.join(fixtures, "fashion-mnist")
    xtr = read_idx_gz(os.path.join(d, "train-images-idx3-ubyte.gz"))
    ytr = read_idx_gz(os.path.join(d, "train-labels-idx1-ubyte.gz"))
    xte = read_idx_gz(os.path.join(d, "t10k-images-idx3-ubyte.gz"))
    yte = read_idx_gz(os.path.join(d, "t10k-labels-idx1-ubyte.gz"))

    def f(x):  # the model's input convention: pixel / 255, NCHW
        return torch.from_numpy((x.astype(np.float32) / np.float32(255))[:, None])

    def l(y):
        return torch.from_numpy(y.astype(np.int64))

    return ((f(xtr[:N_TRAIN]), l(ytr[:N_TRAIN])), (f(xtr[N_TRAIN:]), l(ytr[N_TRAIN:])), (f(xte), l(yte)))


def conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, t: int):
        super().__init__()
        hidden = cin * t
        self.use_res = stride == 1 and cin == cout
        self.body = nn.Sequential(
            conv_bn(cin, hidden, 1),                                # expand
            conv_bn(hidden, hidden, 3, stride, groups=hidden),      # depthwise
            conv_bn(hidden, cout, 1, act=False),                    # project (linear bottleneck)
        )

    def forward(self, x):
        y = self.body(x)
        return x + y if self.use_res else y


class FmnistMnv2(nn.Module):
    def __init__(self):
        super().__init__()
        layers = [conv_bn(1, STEM, 3)]
        c = STEM
        for t, cout, s in BLOCKS:
            layers.append(InvertedResidual(c, cout, s, t))
            c = cout
        layers.append(conv_bn(c, HEAD, 1))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(HEAD, 10)

    def forward(self, x):
        x = self.pool(self.features(x))
        return self.fc(torch.flatten(x, 1))


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random horizontal flip (p = 0.5) and a random shift of up to 2 pixels (zero padding)."""
    b = x.shape[0]
    flip = torch.rand(b, generator=g) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    p = F.pad(x, (2, 2, 2, 2))
    dy = torch.randint(0, 5, (b,), generator=g)
    dx = torch.randint(0, 5, (b,), generator=g)
    ar = torch.arange(28)
    rows = (dy[:, None] + ar)[:, :, None]
    cols = (dx[:, None] + ar)[:, None, :]
    return p[torch.arange(b)[:, None, None], 0, rows, cols][:, None]


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, bs: int = 1000) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(x), bs):
        correct += int((model(x[i:i + bs]).argmax(1) == y[i:i + bs]).sum())
    return 100.0 * correct / len(x)


def export(model: nn.Module, out: str, meta: dict[str, str]) -> None:
    import onnx
    model.eval()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tmp = out + ".tmp"
    torch.onnx.export(model, (torch.zeros(1, 1, 28, 28),), tmp, dynamo=False, opset_version=13,
                      input_names=["input"], output_names=["logits"], do_constant_folding=True,
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    m = onnx.load(tmp)
    m.doc_string = (f"Fashion-MNIST MobileNetV2-style classifier (kiln, scripts/train_fmnist.py). "
                    f"Input `input`: {PREPROCESSING}. Output `logits` [N,10] (no softmax), classes "
                    + ", ".join(f"{i}={c}" for i, c in enumerate(CLASSES)) + ".")
    del m.metadata_props[:]
    for k, v in meta.items():
        p = m.metadata_props.add()
        p.key, p.value = k, v
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, tmp)
    os.replace(tmp, out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fixtures", default=os.path.join(REPO, ".fixtures"))
    ap.add_argument("--out", default=os.path.join(REPO, "models", "fmnist_mnv2.onnx"))
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=4e-3, help="peak learning rate (AdamW, one-cycle)")
    a = ap.parse_args()

    torch.manual_seed(a.seed)
    np.random.seed(a.seed)
    random.seed(a.seed)
    torch.use_deterministic_algorithms(True)
    torch.utils.deterministic.fill_uninitialized_memory = False  # speed only: every buffer is written before use
    torch.set_num_threads(a.threads)
    torch.set_num_interop_threads(1)

    (xtr, ytr), (xva, yva), (xte, yte) = load(a.fixtures)
    model = FmnistMnv2()
    params = sum(p.numel() for p in model.parameters())
    buffers = sum(b.numel() for n, b in model.named_buffers() if not n.endswith("num_batches_tracked"))
    print(f"torch {torch.__version__}, {a.threads} threads, seed {a.seed}; {params:,} learnable params "
          f"(+{buffers:,} BN running stats); train {len(xtr)}, val {len(xva)}, test {len(xte)}", flush=True)

    steps = (len(xtr) + a.batch - 1) // a.batch
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=a.lr, epochs=a.epochs, steps_per_epoch=steps)
    g = torch.Generator().manual_seed(a.seed)
    for ep in range(a.epochs):
        t0 = time.time()
        model.train()
        perm = torch.randperm(len(xtr), generator=g)
        tot_loss, correct = 0.0, 0
        for i in range(steps):
            idx = perm[i * a.batch:(i + 1) * a.batch]
            xb, yb = augment(xtr[idx], g), ytr[idx]
            out = model(xb)
            loss = F.cross_entropy(out, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot_loss += float(loss.detach()) * len(idx)
            correct += int((out.argmax(1) == yb).sum())
        va = accuracy(model, xva, yva)
        print(f"epoch {ep + 1}/{a.epochs}: loss {tot_loss / len(xtr):.4f}, train {100 * correct / len(xtr):.2f}%, "
              f"val {va:.2f}% ({time.time() - t0:.1f}s)", flush=True)

    va, te = accuracy(model, xva, yva), accuracy(model, xte, yte)
    print(f"final (torch fp32): val top-1 {va:.2f}% (images 55000..60000), test top-1 {te:.2f}% (t10k)", flush=True)
    meta = {
        "preprocessing": PREPROCESSING,
        "classes": ",".join(CLASSES),
        "splits": "train = training images 0..55000; validation = training images 55000..60000 (never trained "
                  "on); calibration = training images 0..500; test = the 10,000 t10k images",
        "training": f"scripts/train_fmnist.py --epochs {a.epochs} --seed {a.seed} --threads {a.threads}; "
                    f"torch {torch.__version__}; {params} learnable params",
        "torch_test_top1": f"{te:.2f}",
        "torch_val_top1": f"{va:.2f}",
    }
    export(model, a.out, meta)
    print(f"wrote {a.out} ({os.path.getsize(a.out):,} bytes)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
