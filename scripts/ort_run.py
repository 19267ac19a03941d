"""Reference runner: runs an ONNX model with ONNX Runtime on .npy inputs.

Usage: python scripts/ort_run.py MODEL OUT_DIR INPUT.npy [INPUT.npy ...]
       python scripts/ort_run.py --each MODEL OUT_DIR INPUT.npy [INPUT.npy ...]

Feeds the inputs in graph-input order, writes each graph output as
OUT_DIR/NN.npy (NN = output index) and OUT_DIR/names.txt (one name per line).
With --each, the model has one input and runs once per file: outputs are
OUT_DIR/II_NN.npy (II = input file index).
Single thread, all graph optimizations disabled, CPU execution provider.
Used by kiln's tests to check exported models; never by kiln itself.
"""
import os
import sys

import numpy as np
import onnxruntime as ort


def main() -> None:
    args = sys.argv[1:]
    each = bool(args) and args[0] == "--each"
    if each:
        args = args[1:]
    model, out_dir, *inputs = args
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    onames = [o.name for o in sess.get_outputs()]
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "names.txt"), "w") as f:
        f.write("\n".join(onames) + "\n")
    if each:
        if len(names) != 1:
            sys.exit(f"--each needs a single-input model, this one has {len(names)}")
        for i, p in enumerate(inputs):
            for j, o in enumerate(sess.run(None, {names[0]: np.load(p)})):
                np.save(os.path.join(out_dir, f"{i:02}_{j:02}.npy"), np.ascontiguousarray(o))
        return
    if len(names) != len(inputs):
        sys.exit(f"model takes {len(names)} inputs, got {len(inputs)}")
    feeds = {n: np.load(p) for n, p in zip(names, inputs)}
    outs = sess.run(None, feeds)
    for i, o in enumerate(outs):
        np.save(os.path.join(out_dir, f"{i:02}.npy"), np.ascontiguousarray(o))


if __name__ == "__main__":
    main()
