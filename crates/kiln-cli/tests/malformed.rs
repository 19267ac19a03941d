//! Malformed and hostile models through the `kiln` binary: every case must
//! exit non-zero (never 101, a panic) with exactly one stderr line that names
//! the file and says what is wrong (node, op and attribute where they apply).
//!
//! The models are built here, byte by byte, with a tiny protobuf writer
//! ([`Msg`]): that reaches faults the IR cannot represent (negative dims,
//! short data, wrong wire types). A second part checks that failing
//! `optimize`/`export`/`run --save-outputs` leave no output or temporary
//! file behind and never touch an existing output.

mod common;
use common::kiln;
use std::path::{Path, PathBuf};
use std::process::Output;

// ---------------------------------------------------------------------------
// A minimal protobuf writer and ONNX message builders (field numbers from
// crates/kiln-onnx/proto/onnx.proto).

/// One protobuf message being written.
#[derive(Default, Clone)]
struct Msg(Vec<u8>);

fn varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

impl Msg {
    fn new() -> Msg {
        Msg::default()
    }
    fn key(mut self, field: u32, wire: u8) -> Msg {
        varint(&mut self.0, (u64::from(field) << 3) | u64::from(wire));
        self
    }
    /// A varint field (int32, int64, enum).
    fn int(self, field: u32, v: i64) -> Msg {
        let mut m = self.key(field, 0);
        varint(&mut m.0, v as u64);
        m
    }
    /// A length-delimited field (bytes, string, message).
    fn bytes(self, field: u32, b: &[u8]) -> Msg {
        let mut m = self.key(field, 2);
        varint(&mut m.0, b.len() as u64);
        m.0.extend_from_slice(b);
        m
    }
    fn str(self, field: u32, s: &str) -> Msg {
        self.bytes(field, s.as_bytes())
    }
    fn msg(self, field: u32, m: &Msg) -> Msg {
        self.bytes(field, &m.0)
    }
    /// A 32-bit fixed field (float).
    fn f32(self, field: u32, v: f32) -> Msg {
        let mut m = self.key(field, 5);
        m.0.extend_from_slice(&v.to_le_bytes());
        m
    }
}

const FLOAT: i64 = 1;
const INT64: i64 = 7;

/// A declared dim: `dim_value` or `dim_param`.
#[derive(Clone, Copy)]
enum D {
    V(i64),
    P(&'static str),
}

/// `ValueInfoProto` of a tensor.
fn value_info(name: &str, elem: i64, dims: &[D]) -> Msg {
    let mut shape = Msg::new();
    for d in dims {
        let dim = match d {
            D::V(v) => Msg::new().int(1, *v),
            D::P(p) => Msg::new().str(2, p),
        };
        shape = shape.msg(1, &dim);
    }
    let tensor = Msg::new().int(1, elem).msg(2, &shape);
    let ty = Msg::new().msg(1, &tensor);
    Msg::new().str(1, name).msg(2, &ty)
}

/// `NodeProto` in the default domain.
fn node(name: &str, op: &str, ins: &[&str], outs: &[&str]) -> Msg {
    let mut m = Msg::new();
    for i in ins {
        m = m.str(1, i);
    }
    for o in outs {
        m = m.str(2, o);
    }
    m.str(3, name).str(4, op)
}

/// Attribute builders (`AttributeProto`, `type` field 20).
fn attr_ints(name: &str, v: &[i64]) -> Msg {
    let mut m = Msg::new().str(1, name).int(20, 7);
    for x in v {
        m = m.int(8, *x);
    }
    m
}
fn attr_float(name: &str, v: f32) -> Msg {
    Msg::new().str(1, name).int(20, 1).f32(2, v)
}

/// `TensorProto` with `raw_data`.
fn tensor_raw(name: &str, elem: i64, dims: &[i64], raw: &[u8]) -> Msg {
    let mut m = Msg::new();
    for d in dims {
        m = m.int(1, *d);
    }
    m.int(2, elem).str(8, name).bytes(9, raw)
}
fn f32s(n: usize) -> Vec<u8> {
    (0..n).flat_map(|i| (i as f32 * 0.01).to_le_bytes()).collect()
}
fn i64s(v: &[i64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// `GraphProto` named `g`.
fn graph(nodes: &[Msg], inits: &[Msg], inputs: &[Msg], outputs: &[Msg]) -> Msg {
    let mut g = Msg::new().str(2, "g");
    for n in nodes {
        g = g.msg(1, n);
    }
    for t in inits {
        g = g.msg(5, t);
    }
    for i in inputs {
        g = g.msg(11, i);
    }
    for o in outputs {
        g = g.msg(12, o);
    }
    g
}

/// `ModelProto` (IR version 8) importing the default domain at opset 13 and
/// the `extra` (domain, version) pairs.
fn model_with(g: &Msg, extra: &[(&str, i64)]) -> Vec<u8> {
    let mut m = Msg::new().int(1, 8).str(2, "malformed-test");
    for (d, v) in [("", 13)].iter().chain(extra) {
        m = m.msg(8, &Msg::new().str(1, d).int(2, *v));
    }
    m.msg(7, g).0
}
fn model(g: &Msg) -> Vec<u8> {
    model_with(g, &[])
}

/// x: float[1, 4] -> Relu (node `relu`) -> y: float[1, 4].
fn relu_graph() -> Msg {
    graph(
        &[node("relu", "Relu", &["x"], &["y"])],
        &[],
        &[value_info("x", FLOAT, &[D::V(1), D::V(4)])],
        &[value_info("y", FLOAT, &[D::V(1), D::V(4)])],
    )
}

// ---------------------------------------------------------------------------
// Running the binary.

fn scratch(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("malformed")
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Writes `bytes` as `<case>/model.onnx` in a fresh folder.
fn write_model(case: &str, bytes: &[u8]) -> PathBuf {
    let p = scratch(case).join("model.onnx");
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Asserts a clean failure: non-zero exit that is not a panic (101), exactly
/// one stderr line, naming `file` and containing every string of `expect`.
/// Returns the line.
fn assert_error(out: &Output, file: &Path, expect: &[&str]) -> String {
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success(),
        "expected failure, got success; stderr: {err}"
    );
    assert_ne!(out.status.code(), Some(101), "exit code 101 means a panic: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "expected one stderr line, got:\n{err}");
    assert!(
        err.contains(&file.display().to_string()),
        "error does not name the file {}: {err}",
        file.display()
    );
    for e in expect {
        assert!(err.contains(e), "error does not contain {e:?}: {err}");
    }
    assert!(
        !err.contains("panicked") && !err.contains("internal error"),
        "{err}"
    );
    println!("{}", err.trim_end());
    err.trim_end().to_string()
}

/// `kiln inspect` on `bytes` must fail with one line containing `expect`.
fn inspect_fails(case: &str, bytes: &[u8], expect: &[&str]) -> String {
    let p = write_model(case, bytes);
    assert_error(&kiln(&[&"inspect", &p]), &p, expect)
}

fn npy(dir: &Path, name: &str, t: &kiln::ir::Tensor) -> PathBuf {
    let p = dir.join(name);
    kiln::npy::write_npy(&p, t).unwrap();
    p
}

fn f32_tensor(shape: &[usize]) -> kiln::ir::Tensor {
    let n = shape.iter().product();
    kiln::ir::Tensor::from_vec(shape.to_vec(), vec![0.5f32; n]).unwrap()
}

// ---------------------------------------------------------------------------
// Load-time faults.

#[test]
fn valid_base_model_runs() {
    // The builders make a model kiln accepts: the cases below differ by one fault.
    let p = write_model("valid", &model(&relu_graph()));
    let out = kiln(&[&"inspect", &p]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let x = npy(p.parent().unwrap(), "x.npy", &f32_tensor(&[1, 4]));
    let out = kiln(&[&"run", &p, &"--input", &x]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn truncated_protobuf() {
    let full = model(&relu_graph());
    inspect_fails(
        "truncated",
        &full[..full.len() - 7],
        &["not a valid ONNX ModelProto"],
    );
}

#[test]
fn wrong_wire_type() {
    // ModelProto.graph (field 7, a message) written as a varint.
    let bytes = Msg::new().int(1, 8).int(7, 42).0;
    inspect_fails("wire_type", &bytes, &["not a valid ONNX ModelProto", "wire type"]);
    // NodeProto.op_type (field 4, a string) written as a fixed32.
    let bad_node = Msg::new().str(1, "x").str(2, "y").str(3, "relu").f32(4, 1.0);
    let g = graph(
        &[bad_node],
        &[],
        &[value_info("x", FLOAT, &[D::V(1), D::V(4)])],
        &[value_info("y", FLOAT, &[D::V(1), D::V(4)])],
    );
    inspect_fails(
        "wire_type_node",
        &model(&g),
        &["not a valid ONNX ModelProto", "wire type"],
    );
}

#[test]
fn negative_dims() {
    // A declared input dim of -3 (-1 alone means "unknown").
    let g = graph(
        &[node("relu", "Relu", &["x"], &["y"])],
        &[],
        &[value_info("x", FLOAT, &[D::V(1), D::V(-3)])],
        &[value_info("y", FLOAT, &[D::V(1), D::V(4)])],
    );
    inspect_fails("negative_dim_input", &model(&g), &["input 'x'", "-3", "axis 1"]);
    // An initializer with a negative dim.
    let g = graph(
        &[node("add", "Add", &["x", "w"], &["y"])],
        &[tensor_raw("w", FLOAT, &[2, -2], &f32s(4))],
        &[value_info("x", FLOAT, &[D::V(1), D::V(4)])],
        &[value_info("y", FLOAT, &[D::V(1), D::V(4)])],
    );
    inspect_fails(
        "negative_dim_init",
        &model(&g),
        &["initializer 'w'", "negative dim"],
    );
}

#[test]
fn dims_whose_product_overflows() {
    let big = 1i64 << 40;
    // Declared input dims.
    let g = graph(
        &[node("relu", "Relu", &["x"], &["y"])],
        &[],
        &[value_info("x", FLOAT, &[D::V(big), D::V(big), D::V(big)])],
        &[value_info("y", FLOAT, &[D::P("n")])],
    );
    inspect_fails("overflow_input", &model(&g), &["input 'x'", "elements"]);
    // Initializer dims (2^120 elements).
    let g = graph(
        &[node("add", "Add", &["x", "w"], &["y"])],
        &[tensor_raw("w", FLOAT, &[big, big, big], &[])],
        &[value_info("x", FLOAT, &[D::V(1), D::V(4)])],
        &[value_info("y", FLOAT, &[D::V(1), D::V(4)])],
    );
    inspect_fails("overflow_init", &model(&g), &["initializer 'w'", "overflows"]);
    // A shape computed by inference: ConstantOfShape of [2^40, 2^40, 2^40].
    let g = graph(
        &[node("fill", "ConstantOfShape", &["s"], &["y"])],
        &[tensor_raw("s", INT64, &[3], &i64s(&[big, big, big]))],
        &[],
        &[value_info("y", FLOAT, &[D::P("a"), D::P("b"), D::P("c")])],
    );
    inspect_fails(
        "overflow_inferred",
        &model(&g),
        &["node 'fill' (ConstantOfShape)"],
    );
}

#[test]
fn initializer_data_shorter_than_its_shape() {
    let g = graph(
        &[node("add", "Add", &["x", "w"], &["y"])],
        &[tensor_raw("w", FLOAT, &[1, 4], &f32s(3))],
        &[value_info("x", FLOAT, &[D::V(1), D::V(4)])],
        &[value_info("y", FLOAT, &[D::V(1), D::V(4)])],
    );
    inspect_fails(
        "short_data",
        &model(&g),
        &["initializer 'w' has 12 bytes of data", "need 16"],
    );
}

#[test]
fn unknown_op() {
    let g = graph(
        &[node("mystery", "NoSuchOp", &["x"], &["y"])],
        &[],
        &[value_info("x", FLOAT, &[D::V(1), D::V(4)])],
        &[value_info("y", FLOAT, &[D::V(1), D::V(4)])],
    );
    inspect_fails("unknown_op", &model(&g), &["NoSuchOp", "node 'mystery'"]);
}

#[test]
fn unknown_opset_domain() {
    let mut n = node("custom", "Relu", &["x"], &["y"]);
    n = n.str(7, "com.example.custom");
    let g = graph(
        &[n],
        &[],
        &[value_info("x", FLOAT, &[D::V(1), D::V(4)])],
        &[value_info("y", FLOAT, &[D::V(1), D::V(4)])],
    );
    inspect_fails(
        "unknown_domain",
        &model_with(&g, &[("com.example.custom", 1)]),
        &["com.example.custom::Relu", "node 'custom'"],
    );
}

#[test]
fn a_cycle() {
    let g = graph(
        &[
            node("a", "Add", &["x", "c"], &["b"]),
            node("r", "Relu", &["b"], &["c"]),
        ],
        &[],
        &[value_info("x", FLOAT, &[D::V(1), D::V(4)])],
        &[value_info("b", FLOAT, &[D::V(1), D::V(4)])],
    );
    inspect_fails("cycle", &model(&g), &["node 'a' (Add)", "cycle"]);
}

#[test]
fn a_dangling_input_name() {
    let g = graph(
        &[node("add", "Add", &["x", "nowhere"], &["y"])],
        &[],
        &[value_info("x", FLOAT, &[D::V(1), D::V(4)])],
        &[value_info("y", FLOAT, &[D::V(1), D::V(4)])],
    );
    inspect_fails(
        "dangling",
        &model(&g),
        &["node 'add' (Add)", "input 'nowhere' is not a graph input"],
    );
}

#[test]
fn duplicate_output_names() {
    // Two nodes writing `y`.
    let g = graph(
        &[
            node("r1", "Relu", &["x"], &["y"]),
            node("r2", "Sigmoid", &["x"], &["y"]),
        ],
        &[],
        &[value_info("x", FLOAT, &[D::V(1), D::V(4)])],
        &[value_info("y", FLOAT, &[D::V(1), D::V(4)])],
    );
    inspect_fails(
        "duplicate_node_output",
        &model(&g),
        &["node 'r2' (Sigmoid)", "output 'y' is already defined"],
    );
    // The graph listing output `y` twice.
    let out = value_info("y", FLOAT, &[D::V(1), D::V(4)]);
    let g = graph(
        &[node("relu", "Relu", &["x"], &["y"])],
        &[],
        &[value_info("x", FLOAT, &[D::V(1), D::V(4)])],
        &[out.clone(), out],
    );
    inspect_fails(
        "duplicate_graph_output",
        &model(&g),
        &["graph output 'y'", "twice"],
    );
}

/// x: float[1, 3, 8, 8] -> Conv(W) -> y, with `attrs` on the Conv node.
fn conv_graph(w_dims: &[i64], attrs: &[Msg]) -> Msg {
    let mut n = node("conv1", "Conv", &["x", "W"], &["y"]);
    for a in attrs {
        n = n.msg(5, a);
    }
    let w_len = w_dims.iter().product::<i64>() as usize;
    graph(
        &[n],
        &[tensor_raw("W", FLOAT, w_dims, &f32s(w_len))],
        &[value_info("x", FLOAT, &[D::V(1), D::V(3), D::V(8), D::V(8)])],
        &[value_info(
            "y",
            FLOAT,
            &[D::P("n"), D::P("c"), D::P("h"), D::P("w")],
        )],
    )
}

#[test]
fn an_attribute_of_the_wrong_type() {
    // Conv.strides must be INTS; here it is a FLOAT.
    let g = conv_graph(&[4, 3, 3, 3], &[attr_float("strides", 2.0)]);
    inspect_fails(
        "attr_type",
        &model(&g),
        &[
            "node 'conv1' (Conv), attribute 'strides'",
            "expected INTS, got FLOAT",
        ],
    );
    // Declared INTS (type 7) but the value sits in the FLOAT field.
    let mislabelled = Msg::new().str(1, "strides").int(20, 7).f32(2, 2.0);
    let g = conv_graph(&[4, 3, 3, 3], &[mislabelled]);
    inspect_fails(
        "attr_type_field",
        &model(&g),
        &[
            "node 'conv1' (Conv), attribute 'strides'",
            "declared INTS but holds a FLOAT value",
        ],
    );
}

#[test]
fn conv_with_a_mismatched_channel_count() {
    // x has 3 channels, W [4, 2, 3, 3] expects 2 (group 1).
    let g = conv_graph(&[4, 2, 3, 3], &[attr_ints("kernel_shape", &[3, 3])]);
    inspect_fails("conv_channels", &model(&g), &["node 'conv1' (Conv)", "channel"]);
}

#[test]
fn reshape_to_an_incompatible_shape() {
    // Static: [1, 4] cannot become [3]: caught at load by inference.
    let reshape = |x: Msg| {
        graph(
            &[node("reshape", "Reshape", &["x", "shape"], &["y"])],
            &[tensor_raw("shape", INT64, &[1], &i64s(&[3]))],
            &[x],
            &[value_info("y", FLOAT, &[D::P("m")])],
        )
    };
    inspect_fails(
        "reshape_static",
        &model(&reshape(value_info("x", FLOAT, &[D::V(1), D::V(4)]))),
        &["node 'reshape' (Reshape)"],
    );
    // A symbolic dim: [1, n] fits [3] when n = 3, so only the run can tell.
    let p = write_model(
        "reshape_dynamic",
        &model(&reshape(value_info("x", FLOAT, &[D::V(1), D::P("n")]))),
    );
    let out = kiln(&[&"inspect", &p]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let x = npy(p.parent().unwrap(), "x.npy", &f32_tensor(&[1, 4]));
    assert_error(
        &kiln(&[&"run", &p, &"--input", &x]),
        &p,
        &[
            "node 'reshape' (Reshape)",
            "cannot reshape input of shape [1, 4] to [3]",
        ],
    );
}

#[test]
fn external_data_path_escaping_the_folder() {
    let case = scratch("external_escape");
    std::fs::write(case.join("secret.bin"), f32s(4)).unwrap();
    let sub = case.join("model");
    std::fs::create_dir_all(&sub).unwrap();
    let entry = |k: &str, v: &str| Msg::new().str(1, k).str(2, v);
    let w = Msg::new()
        .int(1, 1)
        .int(1, 4)
        .int(2, FLOAT)
        .str(8, "w")
        .msg(13, &entry("location", "../secret.bin"))
        .int(14, 1);
    let g = graph(
        &[node("add", "Add", &["x", "w"], &["y"])],
        &[w],
        &[value_info("x", FLOAT, &[D::V(1), D::V(4)])],
        &[value_info("y", FLOAT, &[D::V(1), D::V(4)])],
    );
    let p = sub.join("model.onnx");
    std::fs::write(&p, model(&g)).unwrap();
    assert_error(
        &kiln(&[&"inspect", &p]),
        &p,
        &[
            "initializer 'w'",
            "'../secret.bin'",
            "must stay in the model's folder",
        ],
    );
}

// ---------------------------------------------------------------------------
// Run-time faults: the inputs do not fit the model.

#[test]
fn wrong_input_count() {
    let p = write_model("input_count", &model(&relu_graph()));
    let x = npy(p.parent().unwrap(), "x.npy", &f32_tensor(&[1, 4]));
    assert_error(
        &kiln(&[&"run", &p, &"--input", &x, &"--input", &x]),
        &p,
        &["the model takes 1 input(s) (x), got 2"],
    );
}

#[test]
fn wrong_input_name() {
    // `run` takes inputs by position; names are given to `--shape`.
    let p = write_model("input_name", &model(&relu_graph()));
    assert_error(
        &kiln(&[&"inspect", &p, &"--shape", &"nope=1,4"]),
        &p,
        &["the model has no input 'nope' (inputs: x)"],
    );
}

#[test]
fn wrong_input_dtype() {
    let p = write_model("input_dtype", &model(&relu_graph()));
    let t = kiln::ir::Tensor::from_vec(vec![1, 4], vec![1i64, 2, 3, 4]).unwrap();
    let x = npy(p.parent().unwrap(), "x.npy", &t);
    assert_error(
        &kiln(&[&"run", &p, &"--input", &x]),
        &p,
        &["input 'x' has dtype int64", "the model expects float"],
    );
}

#[test]
fn wrong_input_shape() {
    let p = write_model("input_shape", &model(&relu_graph()));
    let x = npy(p.parent().unwrap(), "x.npy", &f32_tensor(&[1, 5]));
    assert_error(
        &kiln(&[&"run", &p, &"--input", &x]),
        &p,
        &["input 'x' has shape [1, 5], the model expects [1, 4]"],
    );
}

// ---------------------------------------------------------------------------
// Atomic outputs: a failing `optimize`, `export` or `run --save-outputs`
// leaves no output and no temporary file, and never touches an existing output.

/// The names of the files in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn failing_optimize_leaves_no_output_and_no_temp_file() {
    let d = scratch("atomic_optimize");
    let good = d.join("good.onnx");
    std::fs::write(&good, model(&relu_graph())).unwrap();
    let bad = d.join("bad.onnx");
    let g = graph(
        &[node("mystery", "NoSuchOp", &["x"], &["y"])],
        &[],
        &[value_info("x", FLOAT, &[D::V(1), D::V(4)])],
        &[value_info("y", FLOAT, &[D::V(1), D::V(4)])],
    );
    std::fs::write(&bad, model(&g)).unwrap();
    let out = d.join("out.onnx");

    // An unknown --disable rule, then an invalid model: nothing written.
    let o = kiln(&[&"optimize", &good, &"-o", &out, &"--disable", &"no-such-rule"]);
    assert_error(&o, &good, &["no-such-rule"]);
    let o = kiln(&[&"optimize", &bad, &"-o", &out]);
    assert_error(&o, &bad, &["NoSuchOp"]);
    let o = kiln(&[&"export", &bad, &"-o", &out]);
    assert_error(&o, &bad, &["NoSuchOp"]);
    assert_eq!(listing(&d), ["bad.onnx", "good.onnx"]);

    // An existing output is left as it was.
    std::fs::write(&out, b"keep me").unwrap();
    let o = kiln(&[&"optimize", &good, &"-o", &out, &"--disable", &"no-such-rule"]);
    assert_error(&o, &good, &["no-such-rule"]);
    let o = kiln(&[&"optimize", &bad, &"-o", &out]);
    assert_error(&o, &bad, &[]);
    let o = kiln(&[&"export", &bad, &"-o", &out]);
    assert_error(&o, &bad, &[]);
    assert_eq!(std::fs::read(&out).unwrap(), b"keep me");
    assert_eq!(listing(&d), ["bad.onnx", "good.onnx", "out.onnx"]);

    // A successful optimize replaces it whole.
    let o = kiln(&[&"optimize", &good, &"-o", &out]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(kiln::load_model(&out).is_ok());
    assert_eq!(listing(&d), ["bad.onnx", "good.onnx", "out.onnx"]);
}

#[test]
fn a_failed_write_removes_its_temp_file() {
    // The target is a folder: the temp file is written, the rename fails.
    let d = scratch("atomic_rename");
    let good = d.join("good.onnx");
    std::fs::write(&good, model(&relu_graph())).unwrap();
    let target = d.join("out.onnx");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("inside"), b"x").unwrap();
    for cmd in ["optimize", "export"] {
        let o = kiln(&[&cmd, &good, &"-o", &target]);
        assert_error(&o, &target, &["cannot save the model"]);
        assert_eq!(listing(&d), ["good.onnx", "out.onnx"], "{cmd}");
        assert_eq!(listing(&target), ["inside"], "{cmd}");
    }
    // A folder that does not exist: nothing is created.
    let o = kiln(&[&"export", &good, &"-o", &d.join("missing/out.onnx")]);
    assert_error(&o, &d.join("missing/out.onnx"), &[]);
    assert_eq!(listing(&d), ["good.onnx", "out.onnx"]);
}

#[test]
fn a_failing_run_saves_no_outputs() {
    let d = scratch("atomic_save_outputs");
    let p = d.join("model.onnx");
    std::fs::write(&p, model(&relu_graph())).unwrap();
    let x = npy(&d, "x.npy", &f32_tensor(&[1, 5]));
    let save = d.join("outs");
    let o = kiln(&[&"run", &p, &"--input", &x, &"--save-outputs", &save]);
    assert_error(&o, &p, &["input 'x' has shape [1, 5]"]);
    assert!(!save.exists());
    // A run that succeeds writes exactly the outputs, no temp files.
    let x = npy(&d, "x.npy", &f32_tensor(&[1, 4]));
    let o = kiln(&[&"run", &p, &"--input", &x, &"--save-outputs", &save]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(listing(&save), ["00_y.npy"]);
}
