//! Inputs the `onnx_import` fuzz target (`fuzz/`) once crashed on, each
//! pinned by a test named after the fault. The inputs are committed under
//! `fuzz/regressions/` (the corpus replay test runs them too); each must now
//! be an error, not a panic.

use kiln::ErrorKind;
use std::path::Path;

fn regression(name: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/regressions")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A ConvTranspose whose weight W (rank 3, one dim unknown) has a
/// lower rank than its input X (rank 4): inference took the kernel size from
/// W's spatial dims and indexed past them. Now a `ShapeMismatch` naming the
/// node, as Conv already did.
#[test]
fn convtranspose_weight_rank_below_input_rank_is_an_error() {
    let e = kiln::check_untrusted_model(&regression("convtranspose_weight_rank_below_input_rank.onnx"))
        .unwrap_err();
    assert_eq!(
        e.kind,
        ErrorKind::Model(kiln::ir::ErrorKind::ShapeMismatch),
        "{e}"
    );
    assert!(
        e.message.contains("weight W has rank 3, input X has rank 4"),
        "{e}"
    );
}
