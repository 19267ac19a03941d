//! Hostile and broken inputs: external data escapes, truncated and random
//! bytes, huge dims, limits. Every case must be a clean error, never a panic.

mod common;

use common::*;
use kiln_ir::ErrorKind;
use kiln_onnx::proto::tensor_proto::DataLocation;
use kiln_onnx::proto::{ModelProto, StringStringEntryProto, TensorProto};
use kiln_onnx::{from_bytes, load, load_with, LoadOptions, OnnxErrorKind};
use std::path::Path;

/// A model `y = Foo(x, w)` whose float initializer `w` of `n` elements
/// lives in external data with the given keys.
fn external_model(n: i64, keys: &[(&str, &str)]) -> ModelProto {
    let mut m = one_node("Add");
    let g = m.graph.as_mut().unwrap();
    g.node[0].input.push("w".into());
    g.initializer.push(TensorProto {
        name: Some("w".into()),
        dims: vec![n],
        data_type: Some(FLOAT),
        data_location: Some(DataLocation::External as i32),
        external_data: keys
            .iter()
            .map(|(k, v)| StringStringEntryProto {
                key: Some(k.to_string()),
                value: Some(v.to_string()),
            })
            .collect(),
        ..Default::default()
    });
    m
}

fn floats_le(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Writes `m` as `dir/model.onnx` and loads it without op checks.
fn load_in(dir: &Path, m: &ModelProto) -> Result<kiln_ir::Model, kiln_onnx::OnnxError> {
    let path = dir.join("model.onnx");
    std::fs::write(&path, bytes(m)).unwrap();
    load_with(&path, &unchecked())
}

#[test]
fn external_data_is_read_with_offset_and_length() {
    let dir = TempDir::new("ext-good");
    std::fs::create_dir(dir.path().join("weights")).unwrap();
    let mut blob = vec![0xAAu8; 8];
    blob.extend(floats_le(&[1.0, -2.0, 3.5]));
    blob.extend([0xBB; 4]);
    std::fs::write(dir.path().join("weights/w.bin"), &blob).unwrap();
    let m = external_model(
        3,
        &[
            ("location", "./weights/w.bin"),
            ("offset", "8"),
            ("length", "12"),
            ("checksum", "x"),
        ],
    );
    let model = load_in(dir.path(), &m).unwrap();
    assert_eq!(
        model.graph.initializers["w"].as_slice::<f32>().unwrap(),
        &[1.0, -2.0, 3.5]
    );

    // Without offset/length the data starts at 0 and is as long as the dims need.
    std::fs::write(dir.path().join("w2.bin"), floats_le(&[4.0, 5.0])).unwrap();
    let model = load_in(dir.path(), &external_model(2, &[("location", "w2.bin")])).unwrap();
    assert_eq!(
        model.graph.initializers["w"].as_slice::<f32>().unwrap(),
        &[4.0, 5.0]
    );

    // A relative model path works too (folder = the path's parent).
    let cwd_rel = dir.path().join("model.onnx");
    assert!(load_with(&cwd_rel, &unchecked()).is_ok());
}

fn assert_rejected(keys: &[(&str, &str)], n: i64, kind: OnnxErrorKind, needle: &str) {
    let dir = TempDir::new("ext-bad");
    std::fs::write(dir.path().join("w.bin"), floats_le(&[1.0, 2.0])).unwrap();
    let e = load_in(dir.path(), &external_model(n, keys)).unwrap_err();
    assert_eq!(e.kind(), kind, "{e}");
    let msg = e.to_string();
    assert!(msg.contains(needle), "{msg}");
    assert!(msg.contains("model.onnx: initializer 'w'"), "{msg}");
    assert!(!msg.contains('\n'));
}

#[test]
fn external_data_path_traversal_is_rejected() {
    let bad = OnnxErrorKind::Ir(ErrorKind::InvalidModel);
    assert_rejected(&[("location", "../w.bin")], 2, bad, "contains '..'");
    assert_rejected(&[("location", "sub/../../w.bin")], 2, bad, "contains '..'");
    assert_rejected(&[("location", "sub/../w.bin")], 2, bad, "contains '..'");
}

#[test]
fn external_data_absolute_path_is_rejected() {
    let bad = OnnxErrorKind::Ir(ErrorKind::InvalidModel);
    assert_rejected(&[("location", "/etc/passwd")], 2, bad, "absolute path");
    let dir = TempDir::new("ext-abs");
    let abs = dir.path().join("w.bin");
    std::fs::write(&abs, floats_le(&[1.0, 2.0])).unwrap();
    let e = load_in(
        dir.path(),
        &external_model(2, &[("location", abs.to_str().unwrap())]),
    )
    .unwrap_err();
    assert!(e.to_string().contains("absolute path"), "{e}");
}

#[test]
fn external_data_out_of_range_is_rejected() {
    let bad = OnnxErrorKind::Ir(ErrorKind::InvalidModel);
    assert_rejected(&[("location", "w.bin"), ("offset", "4")], 2, bad, "past the end");
    assert_rejected(
        &[("location", "w.bin"), ("offset", "18446744073709551615")],
        2,
        bad,
        "past the end",
    );
    assert_rejected(&[("location", "w.bin")], 3, bad, "past the end");
    assert_rejected(
        &[("location", "w.bin"), ("length", "4")],
        2,
        bad,
        "does not match",
    );
    assert_rejected(
        &[("location", "w.bin"), ("offset", "-1")],
        2,
        bad,
        "not a non-negative integer",
    );
    assert_rejected(&[("offset", "0")], 2, bad, "no 'location'");
    assert_rejected(
        &[("location", "nope.bin")],
        2,
        OnnxErrorKind::Io,
        "cannot open external data 'nope.bin'",
    );
}

#[cfg(unix)]
#[test]
fn external_data_symlink_out_of_the_folder_is_rejected() {
    let outside = TempDir::new("ext-outside");
    std::fs::write(outside.path().join("secret.bin"), floats_le(&[1.0, 2.0])).unwrap();
    let dir = TempDir::new("ext-link");
    std::os::unix::fs::symlink(outside.path().join("secret.bin"), dir.path().join("w.bin")).unwrap();
    let e = load_in(dir.path(), &external_model(2, &[("location", "w.bin")])).unwrap_err();
    assert!(e.to_string().contains("outside the model's folder"), "{e}");
    // And a folder is not a data file.
    std::fs::create_dir(dir.path().join("d")).unwrap();
    let e = load_in(dir.path(), &external_model(2, &[("location", "d")])).unwrap_err();
    assert!(
        e.to_string().contains("not a regular file") || e.kind() == OnnxErrorKind::Io,
        "{e}"
    );
}

/// Regression: a FIFO as external data used to block `open()` forever.
#[cfg(unix)]
#[test]
fn external_data_fifo_is_rejected_without_blocking() {
    let dir = TempDir::new("ext-fifo");
    let fifo = dir.path().join("fifo");
    let ok = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        panic!("mkfifo is needed for this test");
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let d = dir.path().to_path_buf();
    std::thread::spawn(move || {
        let r = load_in(&d, &external_model(2, &[("location", "fifo")]))
            .map(|_| ())
            .map_err(|e| e.to_string());
        let _ = tx.send(r);
    });
    let r = rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("loading a FIFO as external data hung");
    let e = r.unwrap_err();
    assert!(e.contains("not a regular file"), "{e}");
}

#[test]
fn external_data_of_a_tensor_attribute() {
    use kiln_onnx::proto::attribute_proto::AttributeType;
    let dir = TempDir::new("ext-attr");
    std::fs::write(dir.path().join("c.bin"), 7i64.to_le_bytes()).unwrap();
    let mut m = one_node("Constant");
    let n = &mut m.graph.as_mut().unwrap().node[0];
    n.input.clear();
    n.attribute.push(kiln_onnx::proto::AttributeProto {
        name: Some("value".into()),
        r#type: Some(AttributeType::Tensor as i32),
        t: Some(TensorProto {
            dims: vec![1],
            data_type: Some(INT64),
            data_location: Some(DataLocation::External as i32),
            external_data: vec![StringStringEntryProto {
                key: Some("location".into()),
                value: Some("c.bin".into()),
            }],
            ..Default::default()
        }),
        ..Default::default()
    });
    let model = load_in(dir.path(), &m).unwrap();
    let t = model.graph.nodes[0].attr_tensor_opt("value").unwrap().unwrap();
    assert_eq!(t.as_slice::<i64>().unwrap(), &[7]);
    // Escaping from an attribute is located at the node and attribute.
    let n = &mut m.graph.as_mut().unwrap().node[0];
    n.attribute[0].t.as_mut().unwrap().external_data[0].value = Some("../c.bin".into());
    let e = load_in(dir.path(), &m).unwrap_err();
    assert!(
        e.to_string()
            .contains("node 'n0' (Constant), attribute 'value': "),
        "{e}"
    );
}

#[test]
fn external_data_needs_a_folder() {
    let e = from_bytes(
        &bytes(&external_model(2, &[("location", "w.bin")])),
        None,
        &unchecked(),
    )
    .unwrap_err();
    assert_eq!(e.ir_kind(), ErrorKind::InvalidInput);
}

#[test]
fn truncated_models_never_panic() {
    let mut m = one_node("Relu");
    m.graph.as_mut().unwrap().initializer.push(TensorProto {
        name: Some("w".into()),
        dims: vec![64],
        data_type: Some(FLOAT),
        raw_data: Some(vec![1; 256].into()),
        ..Default::default()
    });
    let full = bytes(&m);
    assert!(from_bytes(&full, None, &unchecked()).is_ok());
    let mut errors = 0;
    for cut in 0..full.len() {
        if from_bytes(&full[..cut], None, &unchecked()).is_err() {
            errors += 1;
        }
    }
    assert!(errors > full.len() / 2, "{errors} of {}", full.len());
    // Cut inside the raw data: a decode error.
    let e = from_bytes(&full[..full.len() - 100], None, &unchecked()).unwrap_err();
    assert_eq!(e.kind(), OnnxErrorKind::Decode, "{e}");
    assert!(e.to_string().starts_with("not a valid ONNX ModelProto"), "{e}");
}

/// xorshift64*: deterministic bytes without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[test]
fn random_and_mutated_bytes_never_panic() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for _ in 0..3000 {
        let len = (rng.next() % 300) as usize;
        let buf: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let _ = from_bytes(&buf, None, &unchecked());
        let _ = kiln_onnx::tensor_from_pb(&buf);
    }
    let mut m = one_node("Relu");
    let g = m.graph.as_mut().unwrap();
    g.input[0] = vi("x", FLOAT, &[D::P("n"), D::V(4)]);
    g.initializer.push(TensorProto {
        name: Some("w".into()),
        dims: vec![2, 2],
        data_type: Some(INT64),
        int64_data: vec![1, 2, 3, 4],
        ..Default::default()
    });
    let valid = bytes(&m);
    for _ in 0..3000 {
        let mut buf = valid.clone();
        for _ in 0..1 + rng.next() % 4 {
            let i = (rng.next() as usize) % buf.len();
            buf[i] = rng.next() as u8;
        }
        let _ = from_bytes(&buf, None, &unchecked());
        let _ = from_bytes(&buf, None, &LoadOptions::default());
    }
}

#[test]
fn hostile_dims_are_rejected_cleanly() {
    // An initializer claiming 2^80 elements with no data.
    let mut m = one_node("Relu");
    m.graph.as_mut().unwrap().initializer.push(TensorProto {
        name: Some("huge".into()),
        dims: vec![1 << 40, 1 << 40],
        data_type: Some(FLOAT),
        ..Default::default()
    });
    let e = from_bytes(&bytes(&m), None, &unchecked()).unwrap_err();
    assert_eq!(e.ir_kind(), ErrorKind::LimitExceeded);
    assert!(e.to_string().contains("initializer 'huge'"), "{e}");

    // A graph input declaring [2^40, 2^40].
    let mut m = one_node("Relu");
    m.graph.as_mut().unwrap().input = vec![vi("x", FLOAT, &[D::V(1 << 40), D::V(1 << 40)])];
    let e = from_bytes(&bytes(&m), None, &unchecked()).unwrap_err();
    assert_eq!(e.ir_kind(), ErrorKind::LimitExceeded);
    assert!(e.to_string().contains("input 'x'"), "{e}");

    // Data whose length does not match the dims.
    let mut m = one_node("Relu");
    m.graph.as_mut().unwrap().initializer.push(TensorProto {
        name: Some("w".into()),
        dims: vec![3, 3],
        data_type: Some(FLOAT),
        raw_data: Some(vec![0; 35].into()),
        ..Default::default()
    });
    let e = from_bytes(&bytes(&m), None, &unchecked()).unwrap_err();
    assert_eq!(e.ir_kind(), ErrorKind::InvalidModel);
    assert!(e.to_string().contains("initializer 'w' has 35 bytes"), "{e}");
}

#[test]
fn limits_on_nodes_and_model_size() {
    let mut m = one_node("Relu");
    let g = m.graph.as_mut().unwrap();
    g.node = (0..10)
        .map(|i| {
            let input = if i == 0 { "x".to_string() } else { format!("v{i}") };
            let output = if i == 9 {
                "y".to_string()
            } else {
                format!("v{}", i + 1)
            };
            node("", "Relu", &[&input], &[&output])
        })
        .collect();
    let few = LoadOptions {
        max_nodes: 5,
        ..unchecked()
    };
    let e = from_bytes(&bytes(&m), None, &few).unwrap_err();
    assert_eq!(e.ir_kind(), ErrorKind::LimitExceeded);
    assert!(from_bytes(&bytes(&m), None, &unchecked()).is_ok());

    let tiny = LoadOptions {
        max_model_bytes: 8,
        ..unchecked()
    };
    let e = from_bytes(&bytes(&m), None, &tiny).unwrap_err();
    assert_eq!(e.ir_kind(), ErrorKind::LimitExceeded);
    let dir = TempDir::new("limits");
    let path = dir.path().join("m.onnx");
    std::fs::write(&path, bytes(&m)).unwrap();
    let e = load_with(&path, &tiny).unwrap_err();
    assert_eq!(e.ir_kind(), ErrorKind::LimitExceeded);
    assert!(e.to_string().contains("m.onnx: model file is"), "{e}");
    // Not a model at all.
    std::fs::write(&path, b"this is not protobuf \xff\xff").unwrap();
    assert_eq!(load(&path).unwrap_err().kind(), OnnxErrorKind::Decode);
}
