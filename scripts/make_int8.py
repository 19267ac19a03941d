#!/usr/bin/env python3
"""Build int8 QDQ versions of the fp32 benchmark models with ONNX Runtime's static quantizer.

    models/mobilenetv2-1.0.onnx    -> models/mobilenetv2-1.0-int8.onnx     (bench key mnv2-int8)
    models/efficientnet-lite0.onnx -> models/efficientnet-lite0-int8.onnx  (bench key effnet-int8)

Runs in the fixtures venv (onnxruntime 1.32.0, onnx, numpy, pillow); scripts/fixtures calls make()
and pins the sha256 of both files. Per model:

1. `onnxruntime.quantization.quant_pre_process` (ORT's recommended preparation; skip_symbolic_shape,
   since the shapes are static and sympy is not in the venv): ORT's basic graph optimisations fold
   each BatchNormalization into its Conv (both fp32 models keep BN as separate nodes), then ONNX
   shape inference. Without it every BN would stay a float op between a DequantizeLinear and a
   QuantizeLinear, which is not what an int8 deployment looks like.
2. Calibration: the same 15 photos for both models, in this order: the 9 scikit-image colour photos
   (images/photos/, sorted) and the first 6 foolbox ImageNet photos (images/imagenet/imagenet_00..05);
   the other 14 foolbox photos stay out of calibration for the accuracy check. Each photo: RGB,
   short side resized to 256 (long side round(long * 256 / short)), PIL BILINEAR, centre crop 224
   at ((w-224)//2, (h-224)//2) (fixtures.py: effnet_preprocess), then the model's normalisation:
   EfficientNet-Lite0 (x - 127) / 128; MobileNetV2 torchvision's ImageNet (x/255 - mean) / std
   (kiln's `imagenet` preset), NCHW, fed one photo per batch.
3. `quantize_static` through scripts/ort_quantize.py's `quantize()`: QuantFormat.QDQ,
   per_channel=True, activation_type QUInt8, weight_type QInt8, CalibrationMethod.MinMax, ORT
   defaults otherwise. Two calls: the first computes the MinMax ranges and saves them (ORT's
   calibration_cache_path); each range is then rounded outward to 16 steps per power of two
   (lowest down, highest up: |change| < 1/16 of the value, so the range grows by at most ~6%); the
   second call quantizes with those ranges. The rounding makes the file independent of last-bit
   differences in the float activations (ORT's kernels differ by CPU), so one sha256 pin holds
   across x86-64 machines, not just across runs on one machine.
4. The graph's value_info (intermediate shapes from the shape inference of step 1) is dropped, as
   the fp32 models have none: for EfficientNet it carries the symbolic `batch` dimension into
   every tensor, and tract (0.23.9) then cannot unify it with the concrete input shape it is given
   ("Impossible to unify Sym(batch) with Val(1)"); every engine infers the shapes itself.
5. onnx.checker (full check) and one ORT run (CPU EP, 1 thread) on a seeded input: outputs finite.

Nothing is random; the output is byte-identical from run to run for the pinned onnxruntime, onnx,
numpy and pillow (scripts/requirements-ref.txt). MobileNetV2's weights are random (numpy seed 0),
so its int8 twin is for timing only, like the fp32 model.

    make_int8.py [--fixtures DIR] [--models mnv2,effnet] [--out-dir DIR]   build (default: DIR/models)
    make_int8.py --accuracy [--fixtures DIR]   ORT top-1/top-5 of fp32 vs int8 on the 20 foolbox photos
"""

from __future__ import annotations

import argparse
import collections
import glob
import hashlib
import os
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

# key -> (fp32 file, int8 file, normalisation); files in <fixtures>/models
MODELS = {
    "mnv2": ("mobilenetv2-1.0.onnx", "mobilenetv2-1.0-int8.onnx", "imagenet"),
    "effnet": ("efficientnet-lite0.onnx", "efficientnet-lite0-int8.onnx", "efficientnet-lite"),
}
CALIB_PHOTOS = [f"photos/{n}" for n in (
    "astronaut.png", "chelsea.png", "coffee.png", "hubble_deep_field.jpg", "ihc.png",
    "motorcycle_left.png", "motorcycle_right.png", "retina.jpg", "rocket.jpg")] + [f"imagenet/{n}" for n in (
    "imagenet_00_243.jpg", "imagenet_01_559.jpg", "imagenet_02_438.jpg", "imagenet_03_990.jpg",
    "imagenet_04_949.jpg", "imagenet_05_853.jpg")]
RANGE_STEP_BITS = 5  # ranges rounded to multiples of 2^(e-5) for a value m * 2^e, 0.5 <= |m| < 1: 16 steps an octave
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def crop224(path: str) -> np.ndarray:
    """uint8 [224,224,3]: RGB, short side 256 (PIL BILINEAR), centre crop 224 (as fixtures.py: effnet_preprocess)."""
    from PIL import Image
    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        if w <= h:
            nw, nh = 256, round(h * 256 / w)
        else:
            nw, nh = round(w * 256 / h), 256
        im = im.resize((nw, nh), Image.BILINEAR)
        left, top = (nw - 224) // 2, (nh - 224) // 2
        return np.asarray(im.crop((left, top, left + 224, top + 224)), dtype=np.uint8)


def preprocess(path: str, norm: str) -> np.ndarray:
    """float32 [1,3,224,224] for the model's normalisation ('efficientnet-lite' or 'imagenet')."""
    a = crop224(path).astype(np.float32)
    if norm == "efficientnet-lite":
        a = (a - np.float32(127)) / np.float32(128)
    elif norm == "imagenet":
        a = (a / np.float32(255) - IMAGENET_MEAN) / IMAGENET_STD
    else:
        raise ValueError(f"unknown normalisation {norm!r}")
    return np.ascontiguousarray(a.transpose(2, 0, 1)[None], dtype=np.float32)


def calibration_data(fixtures: str, norm: str) -> np.ndarray:
    paths = [os.path.join(fixtures, "images", p) for p in CALIB_PHOTOS]
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        raise FileNotFoundError(f"calibration photo {missing[0]} missing (run scripts/fixtures)")
    return np.concatenate([preprocess(p, norm) for p in paths])


def round_outward(v, up: bool) -> np.ndarray:
    """Round float32 values to multiples of 2^(e - RANGE_STEP_BITS), v = m * 2^e (0.5 <= |m| < 1),
    up (ceil) or down (floor); exact in float32, 0 stays 0."""
    v = np.asarray(v, dtype=np.float32)
    _, e = np.frexp(v.astype(np.float64))
    step = np.ldexp(1.0, e - RANGE_STEP_BITS)
    q = v.astype(np.float64) / step
    return ((np.ceil(q) if up else np.floor(q)) * step).astype(np.float32)


def round_ranges(cache: str) -> int:
    """Rewrite ORT's calibration cache with every (lowest, highest) rounded outward; returns the count."""
    from onnxruntime.quantization.calibrate import TensorData, TensorsData, load_tensors_data, save_tensors_data
    td = load_tensors_data(cache)
    data = {}
    for name in sorted(td.keys()):
        lo, hi = td[name].range_value
        data[name] = TensorData(lowest=round_outward(lo, up=False), highest=round_outward(hi, up=True))
    save_tensors_data(TensorsData(td.calibration_method, data), cache)
    return len(data)


def ort_session(path: str):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def quantize_model(src: str, dst: str, calib: np.ndarray) -> int:
    """quant_pre_process + two quantize_static calls (see the module doc); returns the number of ranges."""
    import logging
    import ort_quantize
    from onnxruntime.quantization.shape_inference import quant_pre_process
    with tempfile.TemporaryDirectory(prefix="kiln-int8-") as tmp:
        pre = os.path.join(tmp, "pre.onnx")
        level = logging.getLogger().level
        logging.getLogger().setLevel(logging.ERROR)
        try:
            quant_pre_process(src, pre, skip_symbolic_shape=True)
        finally:
            logging.getLogger().setLevel(level)
        cache = os.path.join(tmp, "ranges.json")
        ort_quantize.quantize(pre, os.path.join(tmp, "unrounded.onnx"), "MinMax", calib, batch=1,
                              calibration_cache=cache)
        n = round_ranges(cache)
        ort_quantize.quantize(pre, dst, "MinMax", calib, batch=1, calibration_cache=cache)
    return n


def make(fixtures: str, key: str, out: str | None = None) -> dict:
    """Build the int8 twin of MODELS[key]; returns stats (file, sha256, op counts, ranges, ORT max |y|)."""
    import onnx
    src_name, dst_name, norm = MODELS[key]
    src = os.path.join(fixtures, "models", src_name)
    out = out or os.path.join(fixtures, "models", dst_name)
    if not os.path.exists(src):
        raise FileNotFoundError(f"{src} missing (run scripts/fixtures)")
    calib = calibration_data(fixtures, norm)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tmp = out + ".tmp"
    n_ranges = quantize_model(src, tmp, calib)
    m = onnx.load(tmp)
    del m.graph.value_info[:]
    onnx.save(m, tmp)
    onnx.checker.check_model(m, full_check=True)
    ops = collections.Counter(n.op_type for n in m.graph.node)
    if ops.get("BatchNormalization") or not ops.get("QuantizeLinear") or not ops.get("DequantizeLinear"):
        raise ValueError(f"{dst_name}: unexpected ops {dict(ops)}")
    sess = ort_session(tmp)
    x = np.random.default_rng(1).uniform(-1, 1, (1, 3, 224, 224)).astype(np.float32)
    y = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    if y.shape != (1, 1000) or not np.isfinite(y).all():
        raise ValueError(f"{dst_name}: ORT output {y.shape}, finite {bool(np.isfinite(y).all())}")
    os.replace(tmp, out)
    with open(out, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    return {"file": out, "sha256": digest, "bytes": os.path.getsize(out), "nodes": len(m.graph.node),
            "ops": dict(sorted(ops.items())), "ranges": n_ranges, "calibration_photos": len(calib),
            "opset": max(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")),
            "ort_max_abs": float(np.abs(y).max())}


def accuracy(fixtures: str) -> list[str]:
    """ORT (1 thread) top-1 / top-5 of each fp32 model and its int8 twin on the 20 foolbox photos."""
    photos = sorted(glob.glob(os.path.join(fixtures, "images", "imagenet", "imagenet_*.jpg")))
    calib = {os.path.basename(p) for p in CALIB_PHOTOS}
    lines = []
    for key, (src, dst, norm) in MODELS.items():
        f32, i8 = (ort_session(os.path.join(fixtures, "models", f)) for f in (src, dst))
        stats = {"fp32": [0, 0, 0, 0], "int8": [0, 0, 0, 0]}  # top-1, top-5 on all; top-1, top-5 held out
        agree = agree_held = 0
        noise = signal = 0.0
        for p in photos:
            label = int(os.path.splitext(os.path.basename(p))[0].split("_")[-1])
            held = os.path.basename(p) not in calib
            x = preprocess(p, norm)
            ys = {}
            for name, s in (("fp32", f32), ("int8", i8)):
                y = s.run(None, {s.get_inputs()[0].name: x})[0][0]
                ys[name] = y
                top5 = [int(i) for i in np.argsort(-y, kind="stable")[:5]]
                st = stats[name]
                st[0] += top5[0] == label
                st[1] += label in top5
                st[2] += held and top5[0] == label
                st[3] += held and label in top5
            same = int(np.argmax(ys["fp32"])) == int(np.argmax(ys["int8"]))
            agree += same
            agree_held += held and same
            signal += float((ys["fp32"].astype(np.float64) ** 2).sum())
            noise += float(((ys["fp32"].astype(np.float64) - ys["int8"]) ** 2).sum())
        nh = sum(os.path.basename(p) not in calib for p in photos)
        sqnr = 10 * np.log10(signal / noise) if noise else float("inf")
        for name in ("fp32", "int8"):
            t1, t5, h1, h5 = stats[name]
            lines.append(f"{key} {name}: top-1 {t1}/{len(photos)}, top-5 {t5}/{len(photos)}; "
                         f"held out of calibration: top-1 {h1}/{nh}, top-5 {h5}/{nh}")
        lines.append(f"{key}: int8 top-1 = fp32 top-1 on {agree}/{len(photos)} photos ({agree_held}/{nh} held out); "
                     f"logit SQNR int8 vs fp32 {sqnr:.1f} dB"
                     + (" (random weights: labels mean nothing)" if key == "mnv2" else ""))
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fixtures", default=os.environ.get("KILN_FIXTURES", os.path.join(REPO, ".fixtures")))
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {','.join(MODELS)}")
    ap.add_argument("--out-dir", help="write the int8 models here (default: <fixtures>/models)")
    ap.add_argument("--accuracy", action="store_true",
                    help="only compare ORT top-1/top-5 of fp32 and int8 on the 20 foolbox photos")
    a = ap.parse_args()
    fixtures = os.path.abspath(a.fixtures)
    if a.accuracy:
        import onnxruntime
        print(f"ONNX Runtime {onnxruntime.__version__}, CPU EP, 1 thread; {fixtures}")
        for line in accuracy(fixtures):
            print(line)
        return 0
    for key in [k.strip() for k in a.models.split(",") if k.strip()]:
        if key not in MODELS:
            ap.error(f"unknown model {key!r} (use {','.join(MODELS)})")
        out = os.path.join(a.out_dir, MODELS[key][1]) if a.out_dir else None
        s = make(fixtures, key, out)
        print(f"{s['file']}: sha256 {s['sha256']}, {s['bytes']:,} bytes, opset {s['opset']}, {s['nodes']} nodes "
              f"{s['ops']}, {s['ranges']} ranges from {s['calibration_photos']} photos, "
              f"ORT run ok (max |y| {s['ort_max_abs']:.3g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
