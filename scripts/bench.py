#!/usr/bin/env python3
"""kiln side by side with ONNX Runtime, OpenVINO and tract: interleaved latency rounds.

Run through scripts/bench, which picks the interpreter (.fixtures/bench-venv, built by
scripts/bench-venv) and passes --kiln. See docs/bench.md for what every column means.

For each model and thread count T, kiln (`kiln bench --server`, out of process) and each peer (in
this process) are loaded once and warmed up; then --rounds rounds each run every engine for
--round-warmup untimed plus --iters timed iterations on the same seeded random input, the engines
in a rotating order (round r starts with engine r mod n). The summary has per engine the median and
p90 of all timed iterations, the median [min-max] over rounds of kiln's round median / the engine's
round median, the achieved GFLOP/s (2 * MACs / median) and its fraction of the measured peak (numpy
f32 GEMM on one thread, times the threads the engine uses).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

# key -> (file in <fixtures>/models, input shape every engine gets)
MODELS = {
    "effnet": ("efficientnet-lite0.onnx", [1, 3, 224, 224]),
    "mnv2": ("mobilenetv2-1.0.onnx", [1, 3, 224, 224]),
    "ocrdet": ("ch_PP-OCRv4_det_infer.onnx", [1, 3, 640, 640]),
    # int8 QDQ twins of effnet and mnv2 (ONNX Runtime's quantize_static; scripts/make_int8.py)
    "effnet-int8": ("efficientnet-lite0-int8.onnx", [1, 3, 224, 224]),
    "mnv2-int8": ("mobilenetv2-1.0-int8.onnx", [1, 3, 224, 224]),
}
DEFAULT_MODELS = "effnet,mnv2,ocrdet,effnet-int8,mnv2-int8"
# int8 model -> its fp32 twin: when both run, the report adds each engine's int8 speed-up
FP32_TWIN = {"effnet-int8": "effnet", "mnv2-int8": "mnv2"}
# --smoke: one fp32 and one int8 QDQ model (kiln runs QDQ on its reference integer kernels: ~150 ms a run)
SMOKE_MODELS = "mnv2,mnv2-int8"
PEERS = ["ort", "openvino", "tract"]
ENGINE_NAMES = {"kiln": "kiln", "ort": "ONNX Runtime", "openvino": "OpenVINO", "tract": "tract"}
INPUT_SEED = 0
OTHER_CPU_WARN = 0.05  # warn when other processes took more than this share of the machine during a block

PEAK_CODE = r"""
import json, sys, time
import numpy as np
n, reps = int(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
a = rng.standard_normal((n, n), dtype=np.float32)
b = rng.standard_normal((n, n), dtype=np.float32)
c = np.empty((n, n), np.float32)
np.matmul(a, b, out=c)
best = float("inf")
for _ in range(reps):
    t = time.perf_counter()
    np.matmul(a, b, out=c)
    best = min(best, time.perf_counter() - t)
try:
    blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    blas = f"{blas.get('name')} {blas.get('version')}"
except Exception:
    blas = "?"
print(json.dumps({"n": n, "reps": reps, "best_s": best, "gflops": 2 * n**3 / best / 1e9,
                  "numpy": np.__version__, "blas": blas}))
"""


class Fail(Exception):
    pass


def log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def csv(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


# ---------------------------------------------------------------- machine

def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def cpu_busy_s() -> float | None:
    """Busy CPU seconds of the whole machine so far (/proc/stat), or None where unavailable."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal ...: all but idle and iowait
    return (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


def proc_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of a live process, from /proc/PID/stat; 0 where unavailable."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def self_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def measure_peak(n: int, reps: int) -> dict:
    """Single-thread f32 GEMM peak: numpy matmul n x n x n in a child with the BLAS pinned to one thread."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    unset = {}
    # Set on some machines for old OpenBLAS builds; they slow a current numpy, so leave them out of
    # the peak measurement (only there; nothing else here uses OpenBLAS).
    for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if k in env:
            unset[k] = env.pop(k)
    p = subprocess.run([sys.executable, "-c", PEAK_CODE, str(n), str(reps)], env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        raise Fail(f"peak measurement failed: {p.stderr.strip()[-2000:]}")
    out = json.loads(p.stdout)
    out["unset_env"] = unset
    return out


# ---------------------------------------------------------------- kiln

def kiln_json(kiln: str, args: list[str]) -> dict:
    p = subprocess.run([kiln, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        raise Fail(f"kiln {' '.join(args)}: {p.stderr.strip()}")
    return json.loads(p.stdout)


def model_info(kiln: str, path: str, shape: list[int]) -> dict:
    info = kiln_json(kiln, ["inspect", path, "--json"])
    if len(info["inputs"]) != 1:
        raise Fail(f"{path}: {len(info['inputs'])} inputs; scripts/bench handles single-input models")
    name = info["inputs"][0]["name"]
    bind = f"{name}={','.join(map(str, shape))}"
    info = kiln_json(kiln, ["inspect", path, "--json", "--shape", bind])
    if not info.get("macs"):
        raise Fail(f"{path}: kiln inspect gave no MAC count for {bind}")
    return {"input": name, "bind": bind, "macs": int(info["macs"]), "output": info["outputs"][0]["name"],
            "learnable_params": info.get("learnable_params"), "nodes": info.get("nodes")}


class KilnEngine:
    """`kiln bench MODEL --server`: one child process; each request runs N timed iterations."""

    name = "kiln"
    version = ""
    note = ""

    def __init__(self, kiln: str, model: str, threads: int, npy: str, bind: str, warmup: int):
        self.threads = threads
        self.err = tempfile.TemporaryFile(mode="w+")
        self.cmd = [kiln, "bench", model, "--threads", str(threads), "--input", npy, "--shape", bind,
                    "--warmup", str(warmup), "--server"]
        t0 = time.perf_counter()
        self.p = subprocess.Popen(self.cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err,
                                  text=True, bufsize=1)
        self.load_s = None
        self._first_t0 = t0

    def _died(self) -> None:
        self.p.wait()
        self.err.seek(0)
        raise Fail(f"{' '.join(self.cmd)} exited {self.p.returncode}: {self.err.read().strip()[-2000:]}")

    def time(self, n: int) -> list[float]:
        try:
            self.p.stdin.write(f"{n}\n")
            self.p.stdin.flush()
        except BrokenPipeError:
            self._died()
        line = self.p.stdout.readline()
        if not line:
            self._died()
        ms = json.loads(line)["ms"]
        if self.load_s is None:  # open, warm-up and this first request
            self.load_s = time.perf_counter() - self._first_t0 - sum(ms) / 1e3
        if len(ms) != n:
            raise Fail(f"kiln answered {len(ms)} timings for {n} iterations")
        return ms

    def close(self) -> None:
        if self.p.poll() is None:
            self.p.stdin.close()
            try:
                self.p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.err.close()


def kiln_output(kiln: str, model: str, npy: str, out_name: str):
    import numpy as np
    with tempfile.TemporaryDirectory(prefix="kiln-bench-") as d:
        p = subprocess.run([kiln, "run", model, "--input", npy, "--save-outputs", d],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if p.returncode != 0:
            raise Fail(f"kiln run {model}: {p.stderr.strip()}")
        files = sorted(f for f in os.listdir(d) if f.startswith("00_") and f.endswith(".npy"))
        if not files:
            raise Fail(f"kiln run {model} --save-outputs wrote no 00_*.npy")
        return np.load(os.path.join(d, files[0]))


# ---------------------------------------------------------------- peers

class PeerEngine:
    """A peer in this process: `run()` is one inference on the bound input."""

    name = ""
    version = ""
    threads = 1
    note = ""

    def __init__(self, model: str, x, input_name: str, threads: int):
        raise NotImplementedError

    def run(self) -> None:
        raise NotImplementedError

    def output(self):
        raise NotImplementedError

    def time(self, n: int) -> list[float]:
        out = []
        pc = time.perf_counter_ns
        for _ in range(n):
            t = pc()
            self.run()
            out.append((pc() - t) / 1e6)
        return out

    def close(self) -> None:
        pass


class OrtEngine(PeerEngine):
    name = "ort"

    def __init__(self, model, x, input_name, threads):
        import onnxruntime as ort
        self.version = ort.__version__
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
        self.feed = {input_name: x}
        self.outs = [self.sess.get_outputs()[0].name]
        self.threads = threads
        self.settings = {"providers": ["CPUExecutionProvider"], "graph_optimization_level": "ORT_ENABLE_ALL",
                         "intra_op_num_threads": threads, "inter_op_num_threads": 1,
                         "execution_mode": "ORT_SEQUENTIAL", "call": "InferenceSession.run([output0], {input: x})"}

    def run(self):
        self.last = self.sess.run(self.outs, self.feed)

    def output(self):
        self.run()
        return self.last[0]


class OpenVinoEngine(PeerEngine):
    name = "openvino"

    def __init__(self, model, x, input_name, threads):
        import openvino as ov
        self.version = ov.get_version()
        core = ov.Core()
        m = core.read_model(model)
        m.reshape({m.inputs[0].get_any_name(): list(x.shape)})
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32"}
        self.compiled = core.compile_model(m, "CPU", config)
        self.req = self.compiled.create_infer_request()
        self.x = x
        self.threads = threads
        got = {}
        for k in ("PERFORMANCE_HINT", "INFERENCE_NUM_THREADS", "INFERENCE_PRECISION_HINT", "NUM_STREAMS",
                  "ENABLE_CPU_PINNING", "ENABLE_HYPER_THREADING", "SCHEDULING_CORE_TYPE"):
            try:
                got[k] = str(self.compiled.get_property(k))
            except Exception:  # noqa: BLE001 - a property this build lacks
                pass
        self.settings = {"device": "CPU", "config": config, "reshape": list(x.shape), "compiled_properties": got,
                         "call": "InferRequest.infer({0: x}, share_inputs=True, share_outputs=True)"}

    def run(self):
        self.req.infer({0: self.x}, share_inputs=True, share_outputs=True)

    def output(self):
        self.run()
        return self.req.get_output_tensor(0).data.copy()


class TractEngine(PeerEngine):
    name = "tract"

    def __init__(self, model, x, input_name, threads):
        import tract
        self.version = tract.version()
        m = tract.onnx().load(model)
        m.set_input_fact(0, ",".join(map(str, x.shape)) + ",f32")
        self.runnable = m.into_model().into_runnable()
        self.state = self.runnable.spawn_state()
        self.x = x
        # The Python package (0.23.9) exposes no thread setting (tract_linalg's executor is
        # single-threaded by default and only settable from Rust), so tract always runs on 1 thread.
        self.threads = 1
        if threads != 1:
            self.note = "1 thread: tract's Python package has no thread setting"
        self.settings = {"load": "tract.onnx().load(p); set_input_fact(0, shape,f32); into_model().into_runnable()",
                         "threads": 1, "call": "State.run([x]) (one spawn_state())"}

    def run(self):
        self.last = self.state.run([self.x])

    def output(self):
        self.run()
        return self.last[0].to_numpy()


PEER_CLASSES = {"ort": OrtEngine, "openvino": OpenVinoEngine, "tract": TractEngine}


def peer_version(peer: str) -> str:
    try:
        if peer == "ort":
            import onnxruntime
            return onnxruntime.__version__
        if peer == "openvino":
            import openvino
            return openvino.get_version()
        import tract
        return tract.version()
    except Exception:  # noqa: BLE001 - only for the report
        return "?"


def reason(e: BaseException) -> str:
    """One line for a peer's failure: the exception type and the first non-empty line of its message."""
    lines = [l.strip() for l in str(e).splitlines() if l.strip()]
    msg = f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__
    return msg if len(msg) <= 300 else msg[:297] + "..."


# ---------------------------------------------------------------- stats and report

def pct(xs: list[float], q: float) -> float:
    import numpy as np
    return float(np.percentile(xs, q))


def summarize(res: dict, peak1: float) -> None:
    macs = res["macs"]
    kiln_rounds = res["engines"]["kiln"]["rounds_ms"]
    for name, e in res["engines"].items():
        if "not_supported" in e:
            continue
        flat = [v for r in e["rounds_ms"] for v in r]
        e["median_ms"] = statistics.median(flat)
        e["p90_ms"] = pct(flat, 90)
        e["min_ms"] = min(flat)
        e["gflops"] = 2 * macs / (e["median_ms"] / 1e3) / 1e9
        e["peak_gflops"] = peak1 * e["threads"]
        e["fraction_of_peak"] = e["gflops"] / e["peak_gflops"]
        if name != "kiln":
            ratios = [statistics.median(k) / statistics.median(p) for k, p in zip(kiln_rounds, e["rounds_ms"])]
            e["kiln_ratio_rounds"] = ratios
            e["kiln_ratio"] = {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}


def markdown(results: list[dict]) -> str:
    rows = ["| model | MMACs | T | engine | median ms | p90 ms | kiln/engine median [min-max] | GFLOP/s | % of peak "
            "| others' CPU |",
            "|---|---:|---:|---|---:|---:|---|---:|---:|---:|"]
    for res in results:
        first = True
        other = res.get("other_cpu_fraction")
        for name, e in res["engines"].items():
            m = f"{res['model']} | {res['macs'] / 1e6:.1f} | {res['threads']}" if first else "  |  | "
            o = (f"{100 * other:.0f}%" if other is not None else "?") if first else ""
            first = False
            label = name + ("*" if e.get("note") else "")
            if "not_supported" in e:
                why = e["not_supported"]
                why = why if len(why) <= 100 else why[:97] + "..."
                rows.append(f"| {m} | {label} | - | - | not supported: {why.replace('|', '/')} | - | - | {o} |")
                continue
            if name == "kiln":
                ratio = "(kiln)"
            else:
                r = e["kiln_ratio"]
                ratio = f"{r['median']:.2f} [{r['min']:.2f}-{r['max']:.2f}]"
            rows.append(f"| {m} | {label} | {e['median_ms']:.2f} | {e['p90_ms']:.2f} | {ratio} | "
                        f"{e['gflops']:.1f} | {100 * e['fraction_of_peak']:.1f}% | {o} |")
    return "\n".join(rows)


def int8_vs_fp32(results: list[dict]) -> list[dict]:
    """Per int8 result whose fp32 twin ran at the same thread count: each engine's fp32 / int8 median.
    The two models ran in separate blocks of rounds (not interleaved), so this is rougher than the
    kiln/engine ratios."""
    by = {(r["model"], r["threads"]): r for r in results}
    rows = []
    for r in results:
        twin = by.get((FP32_TWIN.get(r["model"]), r["threads"]))
        if twin is None:
            continue
        for name, e in r["engines"].items():
            f = twin["engines"].get(name)
            if f is None or "median_ms" not in f or "median_ms" not in e:
                continue
            rows.append({"model": r["model"], "fp32_model": twin["model"], "threads": r["threads"], "engine": name,
                         "fp32_median_ms": f["median_ms"], "int8_median_ms": e["median_ms"],
                         "speedup": f["median_ms"] / e["median_ms"]})
    return rows


def int8_markdown(rows: list[dict]) -> str:
    out = ["| int8 model | T | engine | fp32 median ms | int8 median ms | int8 speed-up (fp32/int8) |",
           "|---|---:|---|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r['model']} | {r['threads']} | {r['engine']} | {r['fp32_median_ms']:.2f} | "
                   f"{r['int8_median_ms']:.2f} | {r['speedup']:.2f}x |")
    return "\n".join(out)


# ---------------------------------------------------------------- main

def find_fixtures() -> str:
    return os.path.abspath(os.environ.get("KILN_FIXTURES", os.path.join(REPO, ".fixtures")))


def bench_one(a, kiln: str, key: str, path: str, shape: list[int], info: dict, threads: int, npy: str, x,
              peers: list[str], reference) -> dict:
    engines: dict[str, object] = {}
    res = {"model": key, "file": os.path.basename(path), "shape": shape, "input": info["input"],
           "macs": info["macs"], "threads": threads, "engines": {}}
    if key in FP32_TWIN:
        res["fp32_twin"] = FP32_TWIN[key]
    unsupported: dict[str, str] = {}  # peer -> why it cannot run this model (it is left out, not fatal)

    def drop(p: str, e: BaseException) -> None:
        unsupported[p] = reason(e)
        log(f"{key} T={threads}: {p}: not supported: {unsupported[p]}")
        eng = engines.pop(p, None)
        if eng is not None:
            eng.close()

    try:
        engines["kiln"] = KilnEngine(kiln, path, threads, npy, info["bind"], a.warmup)
        for p in peers:
            t0 = time.perf_counter()
            try:
                e = PEER_CLASSES[p](path, x, info["input"], threads)
                e.load_s = time.perf_counter() - t0
                for _ in range(max(1, a.warmup)):  # at least one run: a model the peer cannot run fails here
                    e.run()
            except Exception as ex:  # noqa: BLE001 - any peer failure: report it, bench the others
                drop(p, ex)
                continue
            engines[p] = e
        rounds = {n: [] for n in engines}
        order = list(engines)
        kiln_pid = engines["kiln"].p.pid
        busy0, own0, wall0 = cpu_busy_s(), self_cpu_s() + proc_cpu_s(kiln_pid), time.perf_counter()
        for r in range(a.rounds):
            k = r % len(order)
            for n in order[k:] + order[:k]:
                if n not in engines:
                    continue
                try:
                    ms = engines[n].time(a.round_warmup + a.iters)[a.round_warmup:]
                except Exception as ex:  # noqa: BLE001 - a peer failing mid-run; kiln's failures stay fatal
                    if n == "kiln":
                        raise
                    drop(n, ex)
                    del rounds[n]
                    continue
                rounds[n].append(ms)
                if a.pause > 0:
                    time.sleep(a.pause)
            order = [n for n in order if n in engines]
            log(f"{key} T={threads} round {r + 1}/{a.rounds}: " + ", ".join(
                f"{n} {statistics.median(rounds[n][-1]):.2f} ms" for n in order))
        busy1, own1, wall1 = cpu_busy_s(), self_cpu_s() + proc_cpu_s(kiln_pid), time.perf_counter()
        if busy0 is not None and busy1 is not None:
            cores = os.cpu_count() or 1
            res["other_cpu_fraction"] = max(0.0, (busy1 - busy0) - (own1 - own0)) / ((wall1 - wall0) * cores)
        for n, e in engines.items():
            d = {"version": getattr(e, "version", ""), "threads": e.threads, "load_s": e.load_s,
                 "rounds_ms": rounds[n]}
            if n == "kiln":
                d["settings"] = {"command": e.cmd}
            else:
                d["settings"] = e.settings
                if reference is not None:
                    try:
                        d["max_abs_diff_vs_reference"] = float(abs(e.output().astype("float64") - reference).max())
                    except Exception as ex:  # noqa: BLE001 - keep the timings
                        d["output_error"] = reason(ex)
            if e.note:
                d["note"] = e.note
            res["engines"][n] = d
        for p in peers:  # in --peers order, after the engines that ran
            if p in unsupported:
                res["engines"][p] = {"version": peer_version(p), "not_supported": unsupported[p]}
    finally:
        for e in engines.values():
            e.close()
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=DEFAULT_MODELS, help=f"comma-separated, of {','.join(MODELS)} "
                    f"(default {DEFAULT_MODELS})")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    ap.add_argument("--rounds", type=int, default=10, help="interleaved rounds (default 10)")
    ap.add_argument("--iters", type=int, default=20, help="timed iterations per engine per round (default 20)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed runs per engine after loading (default 3)")
    ap.add_argument("--round-warmup", type=int, default=1,
                    help="untimed runs per engine at the start of each round (default 1)")
    ap.add_argument("--pause", type=float, default=0.05,
                    help="seconds between engines, so a peer's spinning worker threads go idle (default 0.05)")
    ap.add_argument("--peers", default=None, help=f"comma-separated, of {','.join(PEERS)} (default: all)")
    ap.add_argument("--kiln", required=True,
                    help="the kiln binary (the scripts/bench wrapper passes target/debug/kiln, building it if missing)")
    ap.add_argument("--out", default=os.path.join(REPO, "target", "bench-results.json"),
                    help="JSON results file (default target/bench-results.json)")
    ap.add_argument("--smoke", action="store_true",
                    help=f"2 rounds of 2 iterations (no round warm-up), {SMOKE_MODELS}, 1 thread, small peak GEMM "
                    "(a quick end-to-end check)")
    ap.add_argument("--no-check", action="store_true", help="skip comparing every engine's output with kiln's")
    a = ap.parse_args()
    fallback = os.environ.get("KILN_BENCH_FALLBACK_VENV") == "1"
    if a.smoke:
        a.rounds, a.iters, a.round_warmup, a.warmup = 2, 2, 0, 1
        if a.models == ap.get_default("models"):
            a.models = SMOKE_MODELS
        if a.threads == ap.get_default("threads"):
            a.threads = "1"
        if a.peers is None and fallback:
            a.peers = "ort"
    try:
        models = csv(a.models)
        for m in models:
            if m not in MODELS:
                raise Fail(f"unknown model {m!r} (use {','.join(MODELS)})")
        threads = [int(t) for t in csv(a.threads)]
        if not threads or min(threads) < 1:
            raise Fail("--threads wants positive integers")
        peers = csv(a.peers) if a.peers is not None else list(PEERS)
        for p in peers:
            if p not in PEERS:
                raise Fail(f"unknown peer {p!r} (use {','.join(PEERS)})")
        if a.rounds < 1 or a.iters < 1 or a.warmup < 0 or a.round_warmup < 0:
            raise Fail("--rounds and --iters must be at least 1, --warmup and --round-warmup at least 0")
        for p in peers:
            mod = {"ort": "onnxruntime", "openvino": "openvino", "tract": "tract"}[p]
            try:
                __import__(mod)
            except ImportError:
                raise Fail(f"peer {p}: cannot import {mod} in {sys.executable} (run scripts/bench-venv)")
        import numpy as np

        fx = find_fixtures()
        cores = os.cpu_count() or 1
        if max(threads) > cores:
            log(f"note: {max(threads)} threads on a {cores}-core machine")
        started = datetime.datetime.now(datetime.timezone.utc)
        load0 = loadavg()
        machine = {"cpu": cpu_model(), "cores": cores, "platform": platform.platform(),
                   "python": platform.python_version(), "loadavg_start": load0}
        log(f"{machine['cpu']}, {cores} cores, load average {load0}")
        n, reps = (1024, 3) if a.smoke else (2048, 5)
        peak = measure_peak(n, reps)
        peak1 = peak["gflops"]
        print(f"machine peak: {peak1:.1f} GFLOP/s single-thread f32 GEMM (numpy {peak['numpy']} matmul "
              f"{n}x{n}x{n}, {peak['blas']}, 1 thread, best of {reps}); T threads: {peak1:.1f} * T", flush=True)
        kiln_version = subprocess.run([a.kiln, "--version"], stdout=subprocess.PIPE, text=True).stdout.strip()
        git = subprocess.run(["git", "-C", REPO, "describe", "--always", "--dirty"], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True).stdout.strip()
        results = []
        with tempfile.TemporaryDirectory(prefix="kiln-bench-") as tmp:
            for key in models:
                fname, shape = MODELS[key]
                path = os.path.join(fx, "models", fname)
                if not os.path.exists(path):
                    raise Fail(f"{path} missing (run scripts/fixtures)")
                info = model_info(a.kiln, path, shape)
                x = np.random.default_rng(INPUT_SEED).uniform(-1, 1, shape).astype(np.float32)
                npy = os.path.join(tmp, f"{key}.input.npy")
                np.save(npy, x)
                ref = None
                if not a.no_check:
                    ref = kiln_output(a.kiln, path, npy, info["output"]).astype("float64")
                log(f"{key}: {fname}, input {info['input']} {shape}, {info['macs'] / 1e6:.2f}M MACs")
                for t in threads:
                    res = bench_one(a, a.kiln, key, path, shape, info, t, npy, x, peers, ref)
                    res["engines"]["kiln"]["version"] = kiln_version.removeprefix("kiln ")
                    summarize(res, peak1)
                    results.append(res)
        load1 = loadavg()
        machine["loadavg_end"] = load1
        notes = sorted({f"{n}: {e['note']}" for r in results for n, e in r["engines"].items() if e.get("note")})
        notes += [f"{n} on {r['model']} T={r['threads']}: not supported: {e['not_supported']}"
                  for r in results for n, e in r["engines"].items() if "not_supported" in e]
        notes += [f"{n} on {r['model']} T={r['threads']}: output not compared: {e['output_error']}"
                  for r in results for n, e in r["engines"].items() if "output_error" in e]
        speedups = int8_vs_fp32(results)
        for r in results:
            other = r.get("other_cpu_fraction")
            if other is not None and other > OTHER_CPU_WARN:
                notes.append(f"{r['model']} T={r['threads']}: other processes used {100 * other:.0f}% of the "
                             "machine's CPU time during these rounds: the timings are disturbed")
        doc = {"format": "kiln-bench 1", "started": started.isoformat(timespec="seconds"), "git": git,
               "kiln": {"binary": os.path.abspath(a.kiln), "version": kiln_version}, "machine": machine,
               "peak": {**peak, "per_thread_gflops": peak1},
               "config": {"models": models, "threads": threads, "rounds": a.rounds, "iters": a.iters,
                          "warmup": a.warmup, "round_warmup": a.round_warmup, "pause_s": a.pause,
                          "peers": peers, "input": f"numpy default_rng({INPUT_SEED}).uniform(-1, 1) float32",
                          "smoke": a.smoke},
               "results": results, "int8_vs_fp32": speedups, "notes": notes}
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        with open(a.out + ".tmp", "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1)
        os.replace(a.out + ".tmp", a.out)
        versions = ", ".join(f"{ENGINE_NAMES[n]} {e['version']}" for n, e in results[0]["engines"].items() if n != "kiln")
        print()
        print(f"kiln {kiln_version.removeprefix('kiln ')} ({git}) vs {versions}; {machine['cpu']}, {cores} cores; "
              f"{a.rounds} rounds x {a.iters} iterations; load average {load0} -> {load1}")
        print()
        print(markdown(results))
        print()
        print("kiln/engine > 1: kiln is slower. % of peak: GFLOP/s over the single-thread GEMM peak times the "
              "threads the engine uses.")
        if speedups:
            print()
            print(int8_markdown(speedups))
            print()
            print("int8 speed-up: the engine's fp32-twin median / its int8 median (separate blocks of rounds).")
        for note in notes:
            print(f"* {note}")
        if not a.no_check:
            worst = max((e.get("max_abs_diff_vs_reference", 0.0), r["model"], n)
                        for r in results for n, e in r["engines"].items())
            print(f"outputs: largest |engine - kiln| {worst[0]:.2g} ({worst[2]} on {worst[1]})")
        print(f"results: {a.out}")
        return 0
    except Fail as e:
        print(f"bench: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
