"""Reference runner: runs an ONNX model with ONNX Runtime on .npy inputs.

Usage: python scripts/ort_run.py MODEL OUT_DIR INPUT.npy [INPUT.npy ...]

Feeds the inputs in graph-input order, writes each graph output as
OUT_DIR/NN.npy (NN = output index) and OUT_DIR/names.txt (one name per line).
Single thread, all graph optimizations disabled, CPU execution provider.
Used by kiln's tests to check exported models; never by kiln itself.
"""
import os
import sys

import numpy as np
import onnxruntime as ort


def main() -> None:
    model, out_dir, *inputs = sys.argv[1:]
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    if len(names) != len(inputs):
        sys.exit(f"model takes {len(names)} inputs, got {len(inputs)}")
    feeds = {n: np.load(p) for n, p in zip(names, inputs)}
    outs = sess.run(None, feeds)
    os.makedirs(out_dir, exist_ok=True)
    onames = [o.name for o in sess.get_outputs()]
    for i, o in enumerate(outs):
        np.save(os.path.join(out_dir, f"{i:02}.npy"), np.ascontiguousarray(o))
    with open(os.path.join(out_dir, "names.txt"), "w") as f:
        f.write("\n".join(onames) + "\n")


if __name__ == "__main__":
    main()
