//! Helpers shared by the `kiln` binary's integration tests.
#![allow(dead_code)] // each test crate uses its own subset

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The fixtures folder (`KILN_FIXTURES`, default `<repo>/.fixtures`);
/// panics with the command to run when it has not been built.
pub fn fixtures() -> PathBuf {
    let p = std::env::var_os("KILN_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.fixtures"));
    assert!(
        p.join("STAMP").exists(),
        "fixtures missing at {}: run scripts/fixtures first (scripts/test does)",
        p.display()
    );
    p
}

/// Runs the `kiln` binary with `args`, capturing its output.
pub fn kiln(args: &[&dyn AsRef<OsStr>]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args.iter().map(|a| a.as_ref()))
        .output()
        .expect("spawn kiln")
}
