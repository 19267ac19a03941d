//! Fuzzes the ONNX importer: arbitrary bytes through the untrusted-input path
//! (import with tight limits, validation, type inference, `Session::new`).
//! Any panic, hang or runaway allocation is a bug; errors are expected.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = kiln::check_untrusted_model(data);
});
