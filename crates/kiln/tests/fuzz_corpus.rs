//! Replays the committed fuzz corpus through the untrusted-input path
//! ([`kiln::check_untrusted_model`]) without libFuzzer, so CI catches a
//! regression on any input the `onnx_import` fuzz target has explored.
//!
//! Inputs: every file of `fuzz/corpus/onnx_import/` (the minimized corpus) and
//! `fuzz/regressions/` (inputs that once crashed). Each must return `Ok` or
//! `Err`; a panic fails the test, naming the file.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::Instant;

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

#[test]
fn replayed_fuzz_corpus_never_panics() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let corpus = files_in(&root.join("corpus/onnx_import"));
    let regressions = files_in(&root.join("regressions"));
    assert!(
        !corpus.is_empty(),
        "no fuzz corpus in {}",
        root.join("corpus/onnx_import").display()
    );
    let start = Instant::now();
    let (mut ok, mut err) = (0usize, 0usize);
    let mut panicked = Vec::new();
    for f in corpus.iter().chain(&regressions) {
        let bytes = std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        match catch_unwind(AssertUnwindSafe(|| kiln::check_untrusted_model(&bytes))) {
            Ok(Ok(())) => ok += 1,
            Ok(Err(_)) => err += 1,
            Err(_) => panicked.push(f.display().to_string()),
        }
    }
    println!(
        "replayed {} files ({} corpus + {} regressions) in {:.2?}: {ok} Ok, {err} Err",
        corpus.len() + regressions.len(),
        corpus.len(),
        regressions.len(),
        start.elapsed()
    );
    assert!(panicked.is_empty(), "panicked on: {panicked:?}");
}
