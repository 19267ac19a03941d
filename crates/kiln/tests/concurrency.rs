//! One [`kiln::Session`] shared by 8 threads: every output must be
//! bit-identical to a single-thread run of the same input. Models: the
//! PP-OCR direction classifier (8 threads x 25 runs) and EfficientNet-Lite0
//! (8 threads x 2 runs), on seeded random inputs; and the classifier again
//! with each run splitting its GEMMs over 2 threads (8 threads x 10 runs).

mod common;
use common::*;

use kiln::ir::Tensor;
use kiln::Session;
use std::time::Instant;

/// Compile-time check: a session can be shared across threads.
const _: fn() = || {
    fn shareable<T: Send + Sync>() {}
    shareable::<Session>();
};

const THREADS: usize = 8;

/// Seeded input in [-1, 1) (xorshift), one per `seed`.
fn input(shape: &[usize], seed: u64) -> Tensor {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let v: Vec<f32> = (0..shape.iter().product::<usize>())
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32
        })
        .collect();
    Tensor::from_vec(shape.to_vec(), v).unwrap()
}

/// The bit patterns of every output, with shapes, for exact comparison.
fn bits(outs: &[Tensor]) -> Vec<(Vec<usize>, Vec<u32>)> {
    outs.iter()
        .map(|t| {
            (
                t.shape().to_vec(),
                t.to_f32_vec().iter().map(|x| x.to_bits()).collect(),
            )
        })
        .collect()
}

/// Runs `distinct` seeded inputs once on one thread, then `runs` per thread on
/// 8 threads sharing `session` (thread `t`'s run `k` takes input
/// `(t * 5 + k) % distinct`, so threads run different inputs at the same
/// time), and asserts every output equals the single-thread one bit for bit.
fn shared_session_matches_single_thread(
    model: &str,
    shape: &[usize],
    distinct: usize,
    runs: usize,
    gemm_threads: usize,
) {
    let session = kiln::open_session(&fixtures().join("models").join(model))
        .unwrap()
        .with_threads(gemm_threads);
    let inputs: Vec<Tensor> = (0..distinct as u64).map(|s| input(shape, s + 1)).collect();
    let t0 = Instant::now();
    let want: Vec<_> = inputs
        .iter()
        .map(|x| bits(&session.run(vec![x.clone()]).unwrap()))
        .collect();
    let single = t0.elapsed();
    // Different inputs give different outputs (the check below is not vacuous).
    assert_ne!(want[0], want[1], "{model}: two inputs, same output");
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (session, inputs, want) = (&session, &inputs, &want);
            s.spawn(move || {
                for k in 0..runs {
                    let i = (t * 5 + k) % distinct;
                    let got = bits(&session.run(vec![inputs[i].clone()]).unwrap());
                    assert!(
                        got == want[i],
                        "{model}: thread {t} run {k} (input {i}) differs from the single-thread run"
                    );
                }
            });
        }
    });
    let shared = t0.elapsed();
    println!(
        "{model} (GEMM threads per run: {gemm_threads}): {distinct} single-thread runs in {:.0} ms; \
         {THREADS} threads x {runs} runs in {:.0} ms, all bit-identical",
        single.as_secs_f64() * 1e3,
        shared.as_secs_f64() * 1e3
    );
}

#[test]
fn ppocr_cls_shared_by_8_threads_is_bit_identical() {
    shared_session_matches_single_thread("ch_ppocr_mobile_v2.0_cls_infer.onnx", &[1, 3, 48, 192], 16, 25, 1);
}

/// Each run also splitting its GEMMs over 2 scoped threads
/// ([`Session::with_threads`]): still bit-identical to sequential runs.
#[test]
fn ppocr_cls_with_gemm_threads_shared_by_8_threads_is_bit_identical() {
    shared_session_matches_single_thread("ch_ppocr_mobile_v2.0_cls_infer.onnx", &[1, 3, 48, 192], 8, 10, 2);
}

#[test]
fn efficientnet_shared_by_8_threads_is_bit_identical() {
    shared_session_matches_single_thread("efficientnet-lite0.onnx", &[1, 3, 224, 224], 4, 2, 1);
}
