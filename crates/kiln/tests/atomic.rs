//! Atomic writes of the library: [`kiln::onnx::save`] and
//! [`kiln::npy::write_npy`] write a temporary file in the target's folder and
//! rename it over the target, so a failure leaves neither a partial output
//! nor a temporary file, and an existing output is untouched.

use kiln::ir::{DType, Graph, Model, Node, OpsetImport, Tensor, ValueInfo, ValueType};
use std::path::{Path, PathBuf};

fn scratch(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("atomic").join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The names of the files in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// x: float[2] -> `op` (domain `domain`) -> y.
fn model(op: &str, domain: &str) -> Model {
    let ty = ValueType::known(DType::F32, &[2]);
    let mut n = Node::new("n", op, &["x"], &["y"]);
    n.domain = domain.into();
    Model {
        graph: Graph {
            nodes: vec![n],
            inputs: vec![ValueInfo {
                name: "x".into(),
                ty: ty.clone(),
            }],
            outputs: vec![ValueInfo { name: "y".into(), ty }],
            ..Default::default()
        },
        opsets: vec![OpsetImport {
            domain: String::new(),
            version: 13,
        }],
        ir_version: 8,
        ..Default::default()
    }
}

#[test]
fn save_replaces_a_file_whole_and_leaves_no_temp_file() {
    let d = scratch("save_ok");
    let p = d.join("m.onnx");
    std::fs::write(&p, b"old contents").unwrap();
    kiln::onnx::save(&model("Relu", ""), &p).unwrap();
    assert_eq!(kiln::load_model(&p).unwrap().graph.nodes[0].op_type, "Relu");
    assert_eq!(listing(&d), ["m.onnx"]);
}

#[test]
fn a_model_that_cannot_be_written_leaves_the_old_file() {
    // A "kiln"-domain op with no lowering to standard ONNX: to_bytes fails.
    let d = scratch("save_unexportable");
    let p = d.join("m.onnx");
    std::fs::write(&p, b"old contents").unwrap();
    let e = kiln::onnx::save(&model("NoSuchFusedOp", "kiln"), &p).unwrap_err();
    assert!(e.to_string().contains("m.onnx"), "{e}");
    assert_eq!(std::fs::read(&p).unwrap(), b"old contents");
    assert_eq!(listing(&d), ["m.onnx"]);
}

#[test]
fn a_failed_rename_removes_the_temp_file() {
    // The target is a non-empty folder: the rename fails.
    let d = scratch("save_onto_folder");
    let target = d.join("out.onnx");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("inside"), b"x").unwrap();
    let e = kiln::onnx::save(&model("Relu", ""), &target).unwrap_err();
    assert!(e.to_string().contains("cannot save the model"), "{e}");
    assert_eq!(listing(&d), ["out.onnx"]);
    assert_eq!(listing(&target), ["inside"]);

    let npy = d.join("t.npy");
    std::fs::create_dir(&npy).unwrap();
    let t = Tensor::from_vec(vec![2], vec![1f32, 2.0]).unwrap();
    assert!(kiln::npy::write_npy(&npy, &t).is_err());
    assert_eq!(listing(&d), ["out.onnx", "t.npy"]);
    assert!(listing(&npy).is_empty());
}

#[test]
fn a_missing_folder_creates_nothing() {
    let d = scratch("save_missing_dir");
    let p = d.join("no/such/dir/m.onnx");
    assert!(kiln::onnx::save(&model("Relu", ""), &p).is_err());
    let t = Tensor::from_vec(vec![2], vec![1f32, 2.0]).unwrap();
    assert!(kiln::npy::write_npy(&d.join("no/t.npy"), &t).is_err());
    assert!(listing(&d).is_empty());
}

#[test]
fn concurrent_saves_of_one_path_each_write_a_whole_file() {
    // Four threads save different models to the same path: whichever rename
    // lands last wins, and the file is always one whole model.
    let d = scratch("save_concurrent");
    let p = d.join("m.onnx");
    let ops = ["Relu", "Sigmoid", "Tanh", "Abs"];
    std::thread::scope(|s| {
        for op in ops {
            let p = &p;
            s.spawn(move || {
                for _ in 0..20 {
                    kiln::onnx::save(&model(op, ""), p).unwrap();
                }
            });
        }
    });
    let back = kiln::load_model(&p).unwrap();
    assert!(ops.contains(&back.graph.nodes[0].op_type.as_str()));
    assert_eq!(listing(&d), ["m.onnx"]);
}
