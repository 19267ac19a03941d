#!/usr/bin/env python3
"""Per-op comparison: kiln's per-step profile against ONNX Runtime's and OpenVINO's per-node profiles.

Run through `scripts/bench --per-op` (the venv .fixtures/bench-venv, --kiln passed by the wrapper).
See docs/bench.md ("Per-op comparison"). For each model and thread count T, one engine after another:

- kiln: `kiln bench MODEL --profile --json --threads T --warmup W --runs N --input X.npy --shape ...`:
  the median of each compiled step over min(N, 20) profiled runs (steps can be fused: "dw + pw");
- ONNX Runtime: a session with the bench's settings plus `enable_profiling`; W untimed and N profiled
  runs; the profile's `Node` events (`*_kernel_time`, `dur` in us) of each run, median per node;
- OpenVINO: the bench's settings plus `PERF_COUNT`; `InferRequest.get_profiling_info()` after the W
  warm-up and after the N profiled runs. Its `real_time` is each node's mean over every run since
  compiling (the CPU plugin's PerfCount::avg(), whole us), so the per-node figure here is the mean
  over the N profiled runs, (mean_all * (W + N) - mean_warmup * W) / N, not a median.

Every step / node goes into one op category (CATEGORIES), from its op type and, for convolutions,
its weight shape (the engine's own where it reports it, else the source ONNX graph by node name):
depthwise (C/group == 1, group > 1), pointwise (1x1, group 1) or general (the stem). The table has,
per category, each engine's summed median ms and node count, and kiln - engine and kiln / engine.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import bench  # noqa: E402  (MODELS, INPUT_SEED, model_info, helpers)

PEERS = ["ort", "openvino"]
ENGINES = ["kiln"] + PEERS
SMOKE_MODELS = "mnv2"
# key -> label, in table order
CATEGORIES = {
    "conv": "conv (stem / general)",
    "pw": "pointwise conv (1x1)",
    "dw": "depthwise conv",
    "dwpw": "dw + pw fused step",
    "add": "Add",
    "gap": "global average pool",
    "gemm": "Gemm / MatMul",
    "qdq": "Quantize / Dequantize",
    "other": "reorder / transpose / other",
}
CONV_KINDS = ("conv", "pw", "dw")


# ---------------------------------------------------------------- source ONNX graph

def _varint(b: bytes, i: int) -> tuple[int, int]:
    v = shift = 0
    while True:
        c = b[i]
        i += 1
        v |= (c & 0x7F) << shift
        if c < 0x80:
            return v, i
        shift += 7


def _fields(b: bytes):
    """Protobuf wire format: (field number, wire type, value) for each field of one message; value is
    an int (varint, fixed) or a bytes slice (length-delimited)."""
    i, n = 0, len(b)
    while i < n:
        key, i = _varint(b, i)
        f, wt = key >> 3, key & 7
        if wt == 0:
            v, i = _varint(b, i)
        elif wt == 1:
            v, i = int.from_bytes(b[i:i + 8], "little"), i + 8
        elif wt == 2:
            ln, i = _varint(b, i)
            v, i = b[i:i + ln], i + ln
        elif wt == 5:
            v, i = int.from_bytes(b[i:i + 4], "little"), i + 4
        else:
            raise ValueError(f"protobuf wire type {wt} not handled")
        yield f, wt, v


def _ints(wt: int, v) -> list[int]:
    """A repeated int64 field: packed (bytes) or one varint; two's complement for negatives."""
    if wt == 0:
        vals = [v]
    else:
        vals, i = [], 0
        while i < len(v):
            x, i = _varint(v, i)
            vals.append(x)
    return [x - (1 << 64) if x >= 1 << 63 else x for x in vals]


class SourceGraph:
    """What the comparison needs of the ONNX file, read with a minimal protobuf reader (the bench
    venv has no `onnx`): node name, op type, inputs, outputs, `group` / `kernel_shape`, and the dims
    of the initializers. onnx.proto: ModelProto.graph = 7; GraphProto.node = 1, .initializer = 5;
    NodeProto input 1, output 2, name 3, op_type 4, attribute 5; AttributeProto name 1, i 3, ints 8;
    TensorProto dims 1, name 8."""

    def __init__(self, path: str):
        with open(path, "rb") as f:
            data = memoryview(f.read())
        graph = next((v for f, wt, v in _fields(data) if f == 7 and wt == 2), None)
        if graph is None:
            raise bench.Fail(f"{path}: no graph")
        self.nodes: dict[str, dict] = {}
        self.producer: dict[str, dict] = {}  # tensor name -> node
        self.dims: dict[str, list[int]] = {}
        for f, wt, v in _fields(graph):
            if f == 1 and wt == 2:
                n = {"inputs": [], "outputs": [], "name": "", "op": "", "attrs": {}}
                for nf, nwt, nv in _fields(v):
                    if nf == 1:
                        n["inputs"].append(bytes(nv).decode())
                    elif nf == 2:
                        n["outputs"].append(bytes(nv).decode())
                    elif nf == 3:
                        n["name"] = bytes(nv).decode()
                    elif nf == 4:
                        n["op"] = bytes(nv).decode()
                    elif nf == 5:
                        name, val = "", []
                        for af, awt, av in _fields(nv):
                            if af == 1:
                                name = bytes(av).decode()
                            elif af == 3:
                                val = _ints(0, av)[0]
                            elif af == 8:
                                val = (val if isinstance(val, list) else []) + _ints(awt, av)
                        n["attrs"][name] = val
                if n["name"]:
                    self.nodes[n["name"]] = n
                for o in n["outputs"]:
                    self.producer[o] = n
            elif f == 5 and wt == 2:
                name, dims = "", []
                for tf, twt, tv in _fields(v):
                    if tf == 1:
                        dims += _ints(twt, tv)
                    elif tf == 8:
                        name = bytes(tv).decode()
                self.dims[name] = dims

    def weight_dims(self, tensor: str) -> list[int] | None:
        """Dims of a weight: an initializer, or one behind DequantizeLinear (QDQ) or Identity."""
        for _ in range(4):
            if tensor in self.dims:
                return self.dims[tensor]
            n = self.producer.get(tensor)
            if n is None or n["op"] not in ("DequantizeLinear", "Identity") or not n["inputs"]:
                return None
            tensor = n["inputs"][0]
        return None

    def lookup(self, name: str) -> dict | None:
        """The source node of an engine's node name: a node name, else the tensor name it produces."""
        if not name:
            return None
        return self.nodes.get(name) or self.producer.get(name)

    def category(self, name: str) -> str | None:
        n = self.lookup(name)
        if n is None:
            return None
        if n["op"] in ("Conv", "ConvInteger", "QLinearConv"):
            w = self.weight_dims(n["inputs"][3 if n["op"] == "QLinearConv" else 1])
            g = n["attrs"].get("group", 1)
            k = n["attrs"].get("kernel_shape") or (w[2:] if w else None)
            if w is None or k is None:
                return "conv"
            return conv_kind(w[1] * g, g, k)
        return op_category(n["op"])


def conv_kind(cin: int, group: int, kernel) -> str:
    """dw: one input channel per group (group == C_in > 1); pw: 1x1 with group 1; conv otherwise."""
    if group > 1 and cin == group:
        return "dw"
    if group == 1 and all(k == 1 for k in kernel):
        return "pw"
    return "conv"


def op_category(op: str) -> str:
    """Category of an ONNX / ORT op type (convolutions: "conv" until refined)."""
    if op in ("Add", "Sum", "QLinearAdd"):
        return "add"
    if op in ("GlobalAveragePool", "QLinearGlobalAveragePool"):
        return "gap"
    if op in ("Gemm", "MatMul", "QGemm", "FusedGemm", "MatMulInteger", "QLinearMatMul", "FusedMatMul"):
        return "gemm"
    if op in ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"):
        return "qdq"
    if "Conv" in op:
        return "conv"
    return "other"


# ---------------------------------------------------------------- classification per engine

def kiln_category(step: dict, src: SourceGraph) -> str:
    """kiln steps by kernel name (a fused step's kernels are joined by " + ")."""
    kinds = []
    for k in step["kernel"].split(" + "):
        k = k.strip()
        if "dwconv" in k:
            kinds.append("dw")
        elif "im2col" in k or k.startswith("conv_") or k.startswith("qconv"):
            kinds.append("conv")
        elif "gemm" in k or "gemv" in k:
            # a GEMM kernel: the classifier on Gemm/MatMul, a pointwise convolution on a Conv
            kinds.append("gemm" if op_category(step["op"].removeprefix("Q")) == "gemm" else "pw")
        elif k.startswith("add_"):
            kinds.append("add")
        elif "global_avg_pool" in k:
            kinds.append("gap")
        elif k.startswith("quantize") or k.startswith("dequantize"):
            kinds.append("qdq")
        else:
            c = src.category(step["name"].split(" + ")[0])
            kinds.append(c or op_category(step["op"]))
    if kinds in (["pw"], ["conv"]):
        # one convolution: if the source graph knows the node, its weight shape decides (a kxk conv
        # on a plain GEMM kernel would otherwise count as pointwise)
        c = src.category(step["name"])
        if c in CONV_KINDS:
            return c
    return fuse(kinds)


def fuse(kinds: list[str]) -> str:
    """One category for a (possibly fused) step: a dw + pw pair is its own category; otherwise the
    first convolution / GEMM wins (fused epilogues such as Add belong to it)."""
    s = set(kinds)
    if "dw" in s and "pw" in s:
        return "dwpw"
    for c in ("conv", "dw", "pw", "gemm"):
        if c in s:
            return c
    return kinds[0] if kinds else "other"


ORT_SUFFIX = re.compile(r"(_token_\d+|_nchwc)+$")


def ort_category(node: dict, src: SourceGraph) -> str:
    op = node["op"]
    cat = op_category(op)
    name = ORT_SUFFIX.sub("", node["name"])
    if cat != "conv":
        if cat == "other":  # e.g. a fused op type this table does not list: ask the source graph
            c = src.category(name)
            if c in ("add", "gap", "gemm", "qdq"):
                return c
        return cat
    shapes = node["input_shapes"]
    # Conv / FusedConv / NCHWc Conv list X and W (OIHW); QLinearConv leaves out the prepacked W. The
    # profile has no `group`: C_in from X (NCHW; NCHWc reports the logical NCHW shape)
    if op != "QLinearConv" and len(shapes) > 1 and len(shapes[1]) == 4 and len(shapes[0]) == 4:
        w = shapes[1]
        g = max(shapes[0][1] // w[1], 1) if w[1] else 1
        return conv_kind(w[1] * g, g, w[2:])
    c = src.category(name)
    return c if c in CONV_KINDS else "conv"


OV_SUFFIX = re.compile(r"/WithoutBiases(/.*)?$")  # OpenVINO's name for a Conv / Gemm without its bias Add


def ov_category(node: dict, src: SourceGraph) -> str:
    t, ex = node["op"], node["exec"]
    shapes = node["input_shapes"]
    if t in ("Convolution", "GroupConvolution"):
        if len(shapes) > 1 and shapes[0] and len(shapes[0]) == 4:
            w = shapes[1]
            if len(w) == 5:  # grouped: [G, O/G, I/G, kh, kw]
                return conv_kind(w[0] * w[2], w[0], w[3:])
            if len(w) == 4:  # ungrouped: [O, I, kh, kw]
                return conv_kind(w[1], 1, w[2:])
        c = src.category(OV_SUFFIX.sub("", node["name"]))
        if c in CONV_KINDS:
            return c
        return "dw" if "_dw" in ex else "pw" if "1x1" in ex else "conv"
    # other layers: the source node of that name (int8 models keep ONNX names: "avgpool",
    # "input_QuantizeLinear"), else the layer type
    c = src.category(node["name"]) or src.category(OV_SUFFIX.sub("", node["name"]))
    if c is not None and c not in CONV_KINDS:
        return c
    if t.startswith("FullyConnected") or t in ("MatMul", "Gemm"):
        return "gemm"
    if t == "ReduceMean":
        return "gap"
    if t == "FakeQuantize":
        return "qdq"
    return "other"


# ---------------------------------------------------------------- engines

def run_kiln(kiln: str, path: str, threads: int, npy: str, bind: str, warmup: int, runs: int) -> dict:
    cmd = [kiln, "bench", path, "--profile", "--json", "--threads", str(threads), "--warmup", str(warmup),
           "--runs", str(runs), "--input", npy, "--shape", bind]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        raise bench.Fail(f"{' '.join(cmd)}: {p.stderr.strip()[-2000:]}")
    j = json.loads(p.stdout)
    nodes = [{"name": s["node"], "op": s["op"], "kernel": s["kernel"], "shape": s["shape"], "ms": s["ms"]}
             for s in j["profile"]]
    return {"command": cmd, "version": "", "wall_ms": j["p50_ms"], "isa": j.get("isa"),
            "profiled_runs": min(max(runs, 1), 20), "nodes": nodes}


def _shape(d: dict) -> list[int]:
    return next(iter(d.values())) if d else []


def run_ort(path: str, x, input_name: str, threads: int, warmup: int, runs: int) -> dict:
    import onnxruntime as ort
    with tempfile.TemporaryDirectory(prefix="kiln-perop-ort-") as tmp:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3  # errors only (saving a profile of an NCHWc graph warns)
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(tmp, "ort")
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        feed = {input_name: x}
        outs = [sess.get_outputs()[0].name]
        for _ in range(warmup):
            sess.run(outs, feed)
        for _ in range(runs):
            sess.run(outs, feed)
        prof = sess.end_profiling()
        with open(prof, encoding="utf-8") as f:
            events = json.load(f)
    windows = sorted((e["ts"], e["ts"] + e["dur"]) for e in events
                     if e.get("cat") == "Session" and e.get("name") == "model_run")
    if len(windows) != warmup + runs:
        raise bench.Fail(f"ORT profile: {len(windows)} model_run events for {warmup + runs} runs")
    timed = windows[warmup:]
    per: dict[str, dict] = {}
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        if not any(a <= e["ts"] <= b for a, b in timed):
            continue
        name = e["name"][: -len("_kernel_time")]
        args = e.get("args", {})
        n = per.setdefault(name, {"name": name, "op": args.get("op_name", "?"), "us": [],
                                  "input_shapes": [_shape(s) for s in args.get("input_type_shape", [])],
                                  "shape": _shape((args.get("output_type_shape") or [{}])[0])})
        n["us"].append(e["dur"])
    nodes = []
    for n in per.values():
        us = n.pop("us")
        n["ms"] = statistics.median(us) / 1e3
        n["runs"] = len(us)
        nodes.append(n)
    return {"version": ort.__version__, "wall_ms": statistics.median(b - a for a, b in timed) / 1e3,
            "profiled_runs": runs, "nodes": nodes,
            "settings": "bench settings + SessionOptions.enable_profiling; ms: profile Node events "
                        "(*_kernel_time dur), median per node over the profiled runs"}


def run_openvino(path: str, x, threads: int, warmup: int, runs: int) -> dict:
    import openvino as ov
    core = ov.Core()
    m = core.read_model(path)
    m.reshape({m.inputs[0].get_any_name(): list(x.shape)})
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32",
              "PERF_COUNT": True}
    compiled = core.compile_model(m, "CPU", config)
    req = compiled.create_infer_request()
    shapes = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        ins = []
        for i in op.inputs():
            ps = i.get_partial_shape()
            ins.append([d.get_length() if d.is_static else -1 for d in ps] if ps.rank.is_static else [])
        shapes[op.get_friendly_name()] = ins
    executed = ov.ProfilingInfo.Status.EXECUTED

    def counters() -> dict:
        # OpenVINO's CPU plugin reports, per node, the mean over every run since compile_model
        # (PerfCount::avg(): total / count, whole microseconds), not the last run's time
        return {p.node_name: (p.real_time.total_seconds() * 1e6, p.node_type, p.exec_type)
                for p in req.get_profiling_info() if p.status == executed}

    for _ in range(warmup):
        req.infer({0: x}, share_inputs=True, share_outputs=True)
    before = counters() if warmup else {}
    wall = []
    for _ in range(runs):
        t = time.perf_counter_ns()
        req.infer({0: x}, share_inputs=True, share_outputs=True)
        wall.append((time.perf_counter_ns() - t) / 1e6)
    nodes = []
    for name, (mean_us, node_type, exec_type) in counters().items():
        us = mean_us * (warmup + runs) - (before[name][0] * warmup if name in before else 0.0)
        nodes.append({"name": name, "op": node_type, "exec": exec_type, "input_shapes": shapes.get(name, []),
                      "ms": max(us, 0.0) / runs / 1e3})
    return {"version": ov.get_version(), "wall_ms": statistics.median(wall), "profiled_runs": runs, "nodes": nodes,
            "settings": {"config": {k: str(v) for k, v in config.items()},
                         "ms": "InferRequest.get_profiling_info() real_time (the mean over all runs since compiling, "
                               "in whole us) of EXECUTED nodes after the warm-up and after the profiled runs: the "
                               "mean per node over the profiled runs, (mean_all * (W + N) - mean_warmup * W) / N"}}


# ---------------------------------------------------------------- report

def categorize(res: dict, src: SourceGraph) -> None:
    fn = {"kiln": kiln_category, "ort": ort_category, "openvino": ov_category}
    table = {c: {} for c in CATEGORIES}
    for name, e in res["engines"].items():
        if "nodes" not in e:
            continue
        for c in CATEGORIES:
            table[c][name] = {"ms": 0.0, "n": 0}
        for n in e["nodes"]:
            n["category"] = fn[name](n, src)
            t = table[n["category"]][name]
            t["ms"] += n["ms"]
            t["n"] += 1
        e["sum_ms"] = sum(n["ms"] for n in e["nodes"])
    res["categories"] = [{"category": c, "label": CATEGORIES[c], **{n: v for n, v in table[c].items()}}
                         for c in CATEGORIES]


def _cell(v: dict | None) -> str:
    return "-" if v is None else (f"{v['ms']:.3f} ({v['n']})" if v["n"] else "-")


def _gap(k: dict | None, e: dict | None) -> tuple[str, str]:
    if k is None or e is None or (not k["n"] and not e["n"]):
        return "", ""
    d = f"{k['ms'] - e['ms']:+.3f}"
    r = f"{k['ms'] / e['ms']:.2f}" if k["n"] and e["n"] and e["ms"] > 0 else ""
    return d, r


def markdown(res: dict) -> str:
    engines = [n for n in ENGINES if n in res["engines"] and "nodes" in res["engines"][n]]
    peers = [n for n in engines if n != "kiln"]
    head = ["op category"] + [f"{n} ms (nodes)" for n in engines]
    for p in peers:
        head += [f"kiln-{p} ms", f"kiln/{p}"]
    rows = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]

    def row(label: str, cells: dict) -> None:
        r = [label] + [_cell(cells.get(n)) for n in engines]
        for p in peers:
            r += list(_gap(cells.get("kiln"), cells.get(p)))
        rows.append("| " + " | ".join(r) + " |")

    cats = {c["category"]: c for c in res["categories"]}
    for c in CATEGORIES:
        if any(cats[c].get(n, {}).get("n") for n in engines):
            row(CATEGORIES[c], cats[c])
    conv = {n: {"ms": sum(cats[c][n]["ms"] for c in ("pw", "dw", "dwpw")),
                "n": sum(cats[c][n]["n"] for c in ("pw", "dw", "dwpw"))} for n in engines}
    row("*dw + pw + fused, together*", conv)
    tot = {n: {"ms": res["engines"][n]["sum_ms"], "n": len(res["engines"][n]["nodes"])} for n in engines}
    row("**sum of ops**", tot)
    wall = {n: {"ms": res["engines"][n]["wall_ms"], "n": 0} for n in engines}
    r = ["whole run (median)"] + [f"{wall[n]['ms']:.3f}" for n in engines]
    for p in peers:
        r += [f"{wall['kiln']['ms'] - wall[p]['ms']:+.3f}", f"{wall['kiln']['ms'] / wall[p]['ms']:.2f}"]
    rows.append("| " + " | ".join(r) + " |")
    return "\n".join(rows)


# ---------------------------------------------------------------- main

def resolve(key: str, dirs: list[str]) -> tuple[str, str, list[int] | None]:
    """(key, path, shape): a bench model key, found in the first of dirs that has it, or an .onnx path."""
    if key in bench.MODELS:
        fname, shape = bench.MODELS[key]
        for d in dirs:
            p = os.path.join(d, fname)
            if os.path.exists(p):
                return key, p, shape
        raise bench.Fail(f"{fname} not found in {', '.join(dirs)} (run scripts/fixtures, or --model-dir DIR)")
    if key.endswith(".onnx") and os.path.exists(key):
        return os.path.basename(key), key, None
    raise bench.Fail(f"unknown model {key!r} (use {','.join(bench.MODELS)} or an .onnx path)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-op", action="store_true", help=argparse.SUPPRESS)  # the wrapper's switch
    ap.add_argument("--models", default="mnv2-int8,effnet-int8,mnv2,effnet",
                    help="comma-separated bench keys or .onnx paths (a path's symbolic input dims are bound to 1; "
                    "default mnv2-int8,effnet-int8,mnv2,effnet)")
    ap.add_argument("--model-dir", action="append", default=[],
                    help="look for the models' files here first (repeatable); then <fixtures>/models")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    ap.add_argument("--runs", type=int, default=20, help="profiled runs per engine (kiln: at most 20; default 20)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed runs per engine first (default 3)")
    ap.add_argument("--peers", default=None, help=f"comma-separated, of {','.join(PEERS)} (default: all)")
    ap.add_argument("--kiln", required=True, help="the kiln binary (scripts/bench passes target/debug/kiln)")
    ap.add_argument("--out", default=os.path.join(REPO, "target", "perop-results.json"),
                    help="JSON results file (default target/perop-results.json)")
    ap.add_argument("--smoke", action="store_true", help=f"{SMOKE_MODELS}, 1 thread, 2 runs, 1 warm-up")
    a = ap.parse_args()
    fallback = os.environ.get("KILN_BENCH_FALLBACK_VENV") == "1"
    if a.smoke:
        a.runs, a.warmup = 2, 1
        if a.models == ap.get_default("models"):
            a.models = SMOKE_MODELS
        if a.threads == ap.get_default("threads"):
            a.threads = "1"
        if a.peers is None and fallback:
            a.peers = "ort"
    try:
        threads = [int(t) for t in bench.csv(a.threads)]
        if not threads or min(threads) < 1:
            raise bench.Fail("--threads wants positive integers")
        if a.runs < 1 or a.warmup < 0:
            raise bench.Fail("--runs must be at least 1, --warmup at least 0")
        peers = bench.csv(a.peers) if a.peers is not None else list(PEERS)
        for p in peers:
            if p not in PEERS:
                raise bench.Fail(f"unknown peer {p!r} for --per-op (use {','.join(PEERS)})")
        dirs = [os.path.abspath(d) for d in a.model_dir] + [os.path.join(bench.find_fixtures(), "models")]
        models = [resolve(k, dirs) for k in bench.csv(a.models)]
        import numpy as np

        kiln_version = subprocess.run([a.kiln, "--version"], stdout=subprocess.PIPE, text=True).stdout.strip()
        git = subprocess.run(["git", "-C", REPO, "describe", "--always", "--dirty"], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True).stdout.strip()
        started = datetime.datetime.now(datetime.timezone.utc)
        load0 = bench.loadavg()
        results = []
        with tempfile.TemporaryDirectory(prefix="kiln-perop-") as tmp:
            for key, path, shape in models:
                if shape is None:
                    info = bench.kiln_json(a.kiln, ["inspect", path, "--json"])
                    if len(info["inputs"]) != 1:
                        raise bench.Fail(f"{path}: {len(info['inputs'])} inputs; --per-op handles single-input models")
                    decl = info["inputs"][0]["shape"]
                    shape = [d if isinstance(d, int) and d > 0 else 1 for d in decl]
                    if shape != decl:
                        bench.log(f"{key}: input shape {decl}: symbolic dims bound to 1")
                info = bench.model_info(a.kiln, path, shape)
                src = SourceGraph(path)
                x = np.random.default_rng(bench.INPUT_SEED).uniform(-1, 1, shape).astype(np.float32)
                npy = os.path.join(tmp, f"{len(results)}.input.npy")
                np.save(npy, x)
                for t in threads:
                    res = {"model": key, "file": path, "shape": shape, "macs": info["macs"], "threads": t,
                           "engines": {}}
                    bench.log(f"{key} T={t}: kiln")
                    res["engines"]["kiln"] = run_kiln(a.kiln, path, t, npy, info["bind"], a.warmup, a.runs)
                    res["engines"]["kiln"]["version"] = kiln_version.removeprefix("kiln ")
                    for p in peers:
                        bench.log(f"{key} T={t}: {p}")
                        try:
                            if p == "ort":
                                res["engines"][p] = run_ort(path, x, info["input"], t, a.warmup, a.runs)
                            else:
                                res["engines"][p] = run_openvino(path, x, t, a.warmup, a.runs)
                        except bench.Fail:
                            raise
                        except Exception as ex:  # noqa: BLE001 - a peer that cannot run or profile this model
                            res["engines"][p] = {"not_supported": bench.reason(ex)}
                            bench.log(f"{key} T={t}: {p}: not supported: {res['engines'][p]['not_supported']}")
                    categorize(res, src)
                    results.append(res)
        doc = {"format": "kiln-perop 1", "started": started.isoformat(timespec="seconds"), "git": git,
               "kiln": {"binary": os.path.abspath(a.kiln), "version": kiln_version},
               "machine": {"cpu": bench.cpu_model(), "cores": os.cpu_count(), "loadavg_start": load0,
                           "loadavg_end": bench.loadavg()},
               "config": {"models": [k for k, _, _ in models], "threads": threads, "runs": a.runs,
                          "warmup": a.warmup, "peers": peers, "smoke": a.smoke,
                          "input": f"numpy default_rng({bench.INPUT_SEED}).uniform(-1, 1) float32"},
               "categories": CATEGORIES, "results": results}
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        with open(a.out + ".tmp", "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1)
        os.replace(a.out + ".tmp", a.out)
        versions = ", ".join(f"{bench.ENGINE_NAMES[p]} {results[0]['engines'][p].get('version', '?')}"
                             for p in peers)
        print(f"kiln {kiln_version.removeprefix('kiln ')} ({git}) vs {versions}; {doc['machine']['cpu']}, "
              f"{os.cpu_count()} cores; {a.runs} profiled runs after {a.warmup} warm-up; load average "
              f"{load0} -> {doc['machine']['loadavg_end']}")
        for res in results:
            print()
            print(f"### {res['model']}, T={res['threads']} ({res['macs'] / 1e6:.1f} MMACs)")
            print()
            print(markdown(res))
            for p in peers:
                if "not_supported" in res["engines"][p]:
                    print(f"* {p}: not supported: {res['engines'][p]['not_supported']}")
        print()
        print("ms: sum of the category's per-node medians (OpenVINO: means; nodes: how many); kiln-engine > 0 and "
              "kiln/engine > 1: kiln is slower. Profiled times include each engine's profiling overhead; "
              "fused steps count once, in the category of their main op (kiln's fused depthwise + "
              "pointwise steps: their own row, and the dw + pw row adds them up for all engines). "
              "whole run: kiln's unprofiled p50, ORT's model_run span, OpenVINO's infer() call.")
        print(f"results: {a.out}")
        return 0
    except bench.Fail as e:
        print(f"bench --per-op: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
