#!/usr/bin/env python3
"""ONNX Runtime's pass count on the ONNX backend test data, for comparison
with `kiln conformance`.

Run with the fixtures venv (onnx 1.22.0 carries the data, onnxruntime 1.32):

    .fixtures/venv/bin/python scripts/ort_conformance.py [--suite node] [--list]

Every case folder (model.onnx + test_data_set_*/input_*.pb, output_*.pb) is
loaded with onnxruntime.InferenceSession (CPU, default options) and every
data set run, fed as the ONNX backend runner feeds it (input_<i>.pb is graph
input #i). Outputs are compared as in onnx/backend/test/runner
(assert_similar_outputs): shape and dtype equal, numpy.testing.assert_allclose
with rtol 1e-3, atol 1e-7 (or the case's data.json), NaN equal to NaN;
sequences element by element.

Counts: pass; fail = ran but the outputs differ; error = ORT refused the model
or raised while running it (unsupported op/type/opset, ...).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

RTOL = 1e-3
ATOL = 1e-7
DATA = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data")


def load_pb(path: str, type_proto: onnx.TypeProto | None):
    """Reads a .pb as the ONNX backend runner's _load_proto does."""
    with open(path, "rb") as f:
        data = f.read()
    kind = type_proto.WhichOneof("value") if type_proto is not None else "tensor_type"
    if kind == "sequence_type":
        p = onnx.SequenceProto()
        p.ParseFromString(data)
        return numpy_helper.to_list(p)
    if kind == "optional_type":
        p = onnx.OptionalProto()
        p.ParseFromString(data)
        return numpy_helper.to_optional(p)
    p = onnx.TensorProto()
    p.ParseFromString(data)
    return numpy_helper.to_array(p)


def similar(ref, out, rtol: float, atol: float) -> None:
    """onnx.backend.test.runner.Runner.assert_similar_outputs for one pair."""
    if isinstance(out, (list, tuple)):
        if not isinstance(ref, (list, tuple)):
            raise AssertionError(f"got a sequence, expected {type(ref)}")
        np.testing.assert_equal(len(out), len(ref))
        for r, o in zip(ref, out):
            similar(r, o, rtol, atol)
        return
    out = np.asarray(out)
    ref = np.asarray(ref)
    np.testing.assert_array_equal(out.shape, ref.shape, err_msg="shape")
    if ref.dtype == object:
        np.testing.assert_array_equal(out, ref)
    else:
        np.testing.assert_equal(out.dtype, ref.dtype)
        np.testing.assert_allclose(out, ref, rtol=rtol, atol=atol)


def run_case(case_dir: str) -> tuple[str, str]:
    """Returns (status, detail): status is pass, fail or error."""
    rtol, atol = RTOL, ATOL
    dj = os.path.join(case_dir, "data.json")
    if os.path.exists(dj):
        with open(dj) as f:
            d = json.load(f)
        rtol, atol = d.get("rtol", rtol), d.get("atol", atol)
    model_path = os.path.join(case_dir, "model.onnx")
    try:
        model = onnx.load(model_path)
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.log_severity_level = 4
        sess = ort.InferenceSession(model_path, so, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - any refusal counts as an error
        return "error", f"load: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
    graph_inputs = list(model.graph.input)
    graph_outputs = list(model.graph.output)
    for ds in sorted(glob.glob(os.path.join(case_dir, "test_data_set*"))):
        n_in = len(glob.glob(os.path.join(ds, "input_*.pb")))
        n_out = len(glob.glob(os.path.join(ds, "output_*.pb")))
        try:
            feeds = {}
            for i in range(n_in):
                ti = graph_inputs[i].type if i < len(graph_inputs) else None
                feeds[graph_inputs[i].name] = load_pb(os.path.join(ds, f"input_{i}.pb"), ti)
            refs = [
                load_pb(
                    os.path.join(ds, f"output_{i}.pb"),
                    graph_outputs[i].type if i < len(graph_outputs) else None,
                )
                for i in range(n_out)
            ]
        except Exception as e:  # noqa: BLE001
            return "error", f"data: {e}"
        try:
            outs = sess.run(None, feeds)
        except Exception as e:  # noqa: BLE001
            return "error", f"run: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
        try:
            np.testing.assert_equal(len(outs), len(refs))
            for r, o in zip(refs, outs):
                similar(r, o, rtol, atol)
        except AssertionError as e:
            msg = " ".join(str(e).split())[:200]
            return "fail", f"{os.path.basename(ds)}: {msg}"
        except Exception as e:  # noqa: BLE001 - e.g. comparing incompatible types
            return "fail", f"{os.path.basename(ds)}: {type(e).__name__}: {e}"
    return "pass", ""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=DATA, help="backend test data folder (default: the onnx wheel's)")
    ap.add_argument(
        "--suite",
        action="append",
        help="suite folder to run (repeatable; default: node)",
    )
    ap.add_argument("--list", action="store_true", help="print every case that does not pass")
    ap.add_argument("--json", action="store_true", help="machine-readable counts")
    a = ap.parse_args()
    suites = a.suite or ["node"]
    summary = {}
    for suite in suites:
        root = os.path.join(a.data, suite)
        if not os.path.isdir(root):
            print(f"ort_conformance: {root} not found (run scripts/fixtures)", file=sys.stderr)
            return 2
        counts = {"pass": 0, "fail": 0, "error": 0}
        for name in sorted(os.listdir(root)):
            d = os.path.join(root, name)
            if not os.path.isfile(os.path.join(d, "model.onnx")):
                continue
            status, detail = run_case(d)
            counts[status] += 1
            if a.list and status != "pass":
                print(f"{status} {suite}/{name}: {detail}")
        summary[suite] = counts
        if not a.json:
            total = sum(counts.values())
            print(
                f"onnxruntime {ort.__version__} {suite}: {counts['pass']}/{total} pass, "
                f"{counts['fail']} fail, {counts['error']} error (rtol {RTOL:g}, atol {ATOL:g})"
            )
    if a.json:
        print(json.dumps({"onnxruntime": ort.__version__, "suites": summary}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
