//! The compiled runtime's hot path allocates nothing: after the first run
//! (which sizes the arena and scratch), `run_into` on caller-owned buffers
//! makes no heap allocation on any thread, at 1 and 2 threads.
//!
//! A counting global allocator counts every allocation of the process; this
//! file holds a single test so the test harness stays idle while it counts.

mod common;
use common::*;
use kiln::runtime::{CompileOptions, TensorRef};
use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);
static COUNTING: AtomicBool = AtomicBool::new(false);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        System.realloc(p, l, n)
    }
}

#[global_allocator]
static A: Counting = Counting;

fn allocations_of(model: &Path, shape: &[usize], threads: usize) -> usize {
    let cm = kiln::compile(model, &CompileOptions::default()).unwrap();
    let info = cm.plan_info(&[shape.to_vec()]).unwrap();
    assert!(
        info.fallback_ops.is_empty(),
        "{}: fallback {:?}",
        model.display(),
        info.fallback_ops
    );
    let n: usize = shape.iter().product();
    let x: Vec<f32> = (0..n).map(|i| ((i * 7919) % 1000) as f32 / 1000.0).collect();
    let out_shapes = cm.output_shapes(&[shape]).unwrap();
    let mut outs: Vec<Vec<f32>> = out_shapes
        .iter()
        .map(|s| vec![0f32; s.as_ref().unwrap().iter().product()])
        .collect();
    let mut state = cm.new_state(threads);
    let ins = [TensorRef { shape, data: &x }];
    let mut o: Vec<&mut [f32]> = outs.iter_mut().map(|v| v.as_mut_slice()).collect();
    cm.run_into(&mut state, &ins, &mut o).unwrap(); // first run: sizes the state
    ALLOCS.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    for _ in 0..5 {
        cm.run_into(&mut state, &ins, &mut o).unwrap();
    }
    COUNTING.store(false, Ordering::SeqCst);
    ALLOCS.load(Ordering::SeqCst)
}

#[test]
fn no_allocation_on_the_hot_path_after_the_first_run() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let effnet = fixtures().join("models/efficientnet-lite0.onnx");
    for threads in [1, 2] {
        let a = allocations_of(&root.join("models/fmnist_mnv2.onnx"), &[1, 1, 28, 28], threads);
        assert_eq!(
            a, 0,
            "fmnist_mnv2, {threads} thread(s): {a} allocations in 5 runs"
        );
        let a = allocations_of(&effnet, &[1, 3, 224, 224], threads);
        assert_eq!(
            a, 0,
            "EfficientNet-Lite0, {threads} thread(s): {a} allocations in 5 runs"
        );
        // An int8 QDQ model on the int8 kernels.
        let q = fixtures().join("models/fmnist_mnv2_ort_qdq.onnx");
        let a = allocations_of(&q, &[1, 1, 28, 28], threads);
        assert_eq!(
            a, 0,
            "fmnist_mnv2_ort_qdq (int8), {threads} thread(s): {a} allocations in 5 runs"
        );
    }
}
