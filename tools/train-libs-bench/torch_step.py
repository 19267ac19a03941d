#!/usr/bin/env python3
"""PyTorch reference for train-libs-bench: median forward+backward+AdamW step of the
Fashion-MNIST net (scripts/train_fmnist.py's FmnistMnv2) and of one inverted-residual block,
batch 128, random data. Run with the torch venv described at the top of scripts/train_fmnist.py:

    python tools/train-libs-bench/torch_step.py [--threads 2] [--steps 10]
"""
import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts"))
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from train_fmnist import FmnistMnv2, InvertedResidual  # noqa: E402


def bench(model, x, loss_fn, steps):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    times = []
    for i in range(steps + 2):
        t = time.perf_counter()
        loss = loss_fn(model(x))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    bs = 128
    blk = bench(InvertedResidual(24, 24, 1, 4), torch.randn(bs, 24, 14, 14), lambda y: (y * y).mean(), a.steps)
    print(f"torch {torch.__version__}: block step {blk * 1e3:.1f} ms, {bs / blk:.0f} img/s")
    y = torch.full((bs,), 3, dtype=torch.long)
    net = bench(FmnistMnv2(), torch.rand(bs, 1, 28, 28), lambda o: F.cross_entropy(o, y), a.steps)
    print(f"torch {torch.__version__}: net median step {net * 1e3:.1f} ms, {bs / net:.0f} img/s, "
          f"epoch(55000) {55000 / (bs / net):.0f} s")


if __name__ == "__main__":
    main()
