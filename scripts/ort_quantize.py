#!/usr/bin/env python3
"""ONNX Runtime int8 post-training quantization of the Fashion-MNIST model: the bar kiln's quantizer
has to beat. Runs in the fixtures venv (onnxruntime 1.32.0, onnx, numpy):

    .fixtures/venv/bin/python scripts/ort_quantize.py [--model models/fmnist_mnv2.onnx]
        [--fixtures .fixtures] [--out-dir target/ort_quantize] [--json FILE]
        [--methods MinMax,Entropy,Percentile] [--threads N]

For each calibration method, `onnxruntime.quantization.quantize_static` with
  quant_format=QDQ, per_channel=True, activation_type=QUInt8, weight_type=QInt8,
  calibration data = training images 0..500 as pixel/255 (fed in 10 batches of 50; the result does
  not depend on the batching: MinMax merges per-batch min/max, Entropy and Percentile build their
  histograms over all collected outputs at once),
and ORT's defaults for everything else: reduce_range=False, all supported op types, no
quant_pre_process (ORT warns about that), ActivationSymmetric=False, WeightSymmetric=True, bias
quantized to int32, Clip/Relu after Conv folded into the activation's quantization range;
MinMax: plain min/max over all calibration data (no moving average); Entropy: 128 histogram bins,
128 quantized bins (KL divergence); Percentile: 99.999th percentile of |x| over a 2048-bin histogram
(symmetric range).

Then fp32 and each int8 model run in ORT (CPU EP, default graph optimisations, batches of 1000) on
the 10,000 test images and the 5,000 validation images (training images 55000..60000). Printed as
a markdown table: top-1, drop vs fp32 in points, logit SQNR vs fp32 in dB
(10*log10(sum(ref^2) / sum((ref - q)^2)) over all 10,000 x 10 test logits), model file size.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import io
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

N_CALIB, VAL_START, CALIB_BATCH = 500, 55000, 50
METHODS = ("MinMax", "Entropy", "Percentile")


def read_idx_gz(path: str) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    if data[:3] != b"\0\0\x08":
        raise ValueError(f"{path}: not a uint8 IDX file")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def to_input(images: np.ndarray) -> np.ndarray:
    """uint8 [N,28,28] -> the model's input, float32 [N,1,28,28] = pixel / 255."""
    return np.ascontiguousarray((images.astype(np.float32) / np.float32(255))[:, None])


def load_fmnist(fmnist_dir: str) -> dict[str, np.ndarray]:
    """calib / val / test inputs (pixel/255, NCHW) and val / test labels from the four .gz IDX files."""
    tr = read_idx_gz(os.path.join(fmnist_dir, "train-images-idx3-ubyte.gz"))
    trl = read_idx_gz(os.path.join(fmnist_dir, "train-labels-idx1-ubyte.gz"))
    te = read_idx_gz(os.path.join(fmnist_dir, "t10k-images-idx3-ubyte.gz"))
    tel = read_idx_gz(os.path.join(fmnist_dir, "t10k-labels-idx1-ubyte.gz"))
    return {
        "calib": to_input(tr[:N_CALIB]),
        "val_x": to_input(tr[VAL_START:]), "val_y": trl[VAL_START:].astype(np.int64),
        "test_x": to_input(te), "test_y": tel.astype(np.int64),
    }


def session(path: str, threads: int = 0):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def run_model(path: str, x: np.ndarray, threads: int = 0, batch: int = 1000) -> np.ndarray:
    """The model's first output for all of x, in batches; float32 [N, ...]."""
    sess = session(path, threads)
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i:i + batch]})[0] for i in range(0, len(x), batch)])


def top1(logits: np.ndarray, labels: np.ndarray) -> float:
    return 100.0 * float((logits.argmax(1) == labels).mean())


def sqnr_db(ref: np.ndarray, q: np.ndarray) -> float:
    ref, q = ref.astype(np.float64), q.astype(np.float64)
    noise = float(((ref - q) ** 2).sum())
    return float("inf") if noise == 0 else 10.0 * np.log10(float((ref ** 2).sum()) / noise)


def quantize(model: str, out: str, method: str, calib: np.ndarray, batch: int = CALIB_BATCH, input_name: str = "input",
             calibration_cache: str | None = None) -> None:
    """ORT quantize_static: QDQ, per-channel, QUInt8 activations, QInt8 weights, ORT defaults otherwise.

    calib is fed in batches of `batch` to input `input_name`. calibration_cache: ORT's
    calibration_cache_path (a JSON file of the activation ranges: written when absent, used as is
    when present; scripts/make_int8.py edits it between two calls)."""
    import logging
    import onnxruntime.quantization as oq

    class Reader(oq.CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{input_name: calib[i:i + batch]} for i in range(0, len(calib), batch)])

        def get_next(self):
            return next(self.batches, None)

    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    level = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # the "consider pre-processing" warning
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # histogram calibrators print progress
            oq.quantize_static(model, out, Reader(), quant_format=oq.QuantFormat.QDQ, per_channel=True,
                               activation_type=oq.QuantType.QUInt8, weight_type=oq.QuantType.QInt8,
                               calibrate_method=getattr(oq.CalibrationMethod, method),
                               calibration_cache_path=calibration_cache)
    finally:
        logging.getLogger().setLevel(level)


def compare(model: str, fixtures: str, out_dir: str, methods=METHODS, threads: int = 0) -> dict:
    data = load_fmnist(os.path.join(fixtures, "fashion-mnist"))
    ref = run_model(model, data["test_x"], threads)
    ref_val = run_model(model, data["val_x"], threads)
    fp32 = {"method": "fp32", "file": model, "test_top1": top1(ref, data["test_y"]),
            "val_top1": top1(ref_val, data["val_y"]), "bytes": os.path.getsize(model)}
    rows = [fp32]
    for m in methods:
        out = os.path.join(out_dir, f"{os.path.splitext(os.path.basename(model))[0]}.ort_{m.lower()}.qdq.onnx")
        t0 = time.time()
        quantize(model, out, m, data["calib"])
        tq = time.time() - t0
        q = run_model(out, data["test_x"], threads)
        qv = run_model(out, data["val_x"], threads)
        rows.append({"method": m, "file": out, "test_top1": top1(q, data["test_y"]), "val_top1": top1(qv, data["val_y"]),
                     "bytes": os.path.getsize(out), "sqnr_db": sqnr_db(ref, q), "quantize_s": round(tq, 1)})
    for r in rows:  # top-1 is a count of 10,000 (5,000): two decimals are exact
        r["drop_points"] = round(fp32["test_top1"] - r["test_top1"], 2)
        r["test_top1"], r["val_top1"] = round(r["test_top1"], 2), round(r["val_top1"], 2)
        if "sqnr_db" in r:
            r["sqnr_db"] = round(r["sqnr_db"], 3)
    import onnxruntime
    return {"onnxruntime": onnxruntime.__version__, "model": model, "calibration": f"training images 0..{N_CALIB}",
            "settings": "quantize_static QDQ, per_channel=True, activations QUInt8, weights QInt8, ORT defaults otherwise",
            "test_images": int(len(data["test_y"])), "val_images": int(len(data["val_y"])), "rows": rows}


def table(res: dict) -> str:
    lines = ["| method | test top-1 % | drop (points) | logit SQNR (dB) | val top-1 % | model size |",
             "|---|---|---|---|---|---|"]
    for r in res["rows"]:
        sq = f"{r['sqnr_db']:.2f}" if "sqnr_db" in r else "-"
        drop = f"{r['drop_points']:.2f}" if r["method"] != "fp32" else "-"
        name = "fp32 (reference)" if r["method"] == "fp32" else f"int8 QDQ, {r['method']}"
        lines.append(f"| {name} | {r['test_top1']:.2f} | {drop} | {sq} | {r['val_top1']:.2f} | "
                     f"{r['bytes']:,} B |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=os.path.join(REPO, "models", "fmnist_mnv2.onnx"))
    ap.add_argument("--fixtures", default=os.environ.get("KILN_FIXTURES", os.path.join(REPO, ".fixtures")))
    ap.add_argument("--out-dir", default=os.path.join(REPO, "target", "ort_quantize"),
                    help="where the quantized models go (default target/ort_quantize)")
    ap.add_argument("--json", help="also write the results as JSON to this file")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ",".join(METHODS))
    ap.add_argument("--threads", type=int, default=0, help="ORT intra-op threads for evaluation (0 = ORT's default)")
    a = ap.parse_args()
    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad:
        ap.error(f"unknown method {bad[0]} (use {', '.join(METHODS)})")
    res = compare(a.model, a.fixtures, a.out_dir, methods, a.threads)
    print(f"\nONNX Runtime {res['onnxruntime']}: {res['settings']}; calibration {res['calibration']} (pixel/255); "
          f"top-1 on the {res['test_images']:,} test images, SQNR over their logits; val = training images "
          f"{VAL_START}..60000\n")
    print(table(res))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
