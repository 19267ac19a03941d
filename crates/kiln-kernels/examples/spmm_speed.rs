//! Dense vs block-sparse pointwise GEMM on the Fashion-MNIST net's 1x1
//! convolutions at batch 32, 80% zero 1x8 blocks (`cargo run --release -p
//! kiln-kernels --example spmm_speed [SPARSITY]`). A sanity tool; the
//! benchmark is `benches/spmm.rs`.
use kiln_kernels::gemm::{gemm_f32, PackedB};
use kiln_kernels::spmm::{spmm_f32, spmm_name, SparseB};
use kiln_kernels::{active_isa, Activation};
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let sp: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.8);
    let isa = active_isa();
    println!("isa {isa}, {}", spmm_name(isa));
    let mut seed = 1u64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let (mut td, mut ts) = (0.0, 0.0);
    for &(hw, k, n) in &[
        (784usize, 16usize, 64usize),
        (196, 64, 24),
        (196, 24, 96),
        (196, 96, 24),
        (196, 24, 96),
        (49, 96, 40),
        (49, 40, 160),
        (49, 160, 40),
        (49, 40, 160),
        (49, 160, 64),
        (49, 64, 256),
        (49, 256, 64),
        (49, 64, 256),
        (49, 256, 96),
        (49, 96, 256),
    ] {
        let m = 32 * hw;
        let a: Vec<f32> = (0..m * k).map(|_| (rnd() % 1000) as f32 * 1e-3).collect();
        let mut b: Vec<f32> = (0..k * n).map(|_| (rnd() % 1000) as f32 * 1e-3 - 0.5).collect();
        let nb = n.div_ceil(8);
        let mut blocks: Vec<usize> = (0..k * nb).collect();
        for i in (1..blocks.len()).rev() {
            blocks.swap(i, (rnd() % (i as u64 + 1)) as usize);
        }
        let zero = (blocks.len() as f64 * sp).round() as usize;
        for &bl in &blocks[..zero] {
            let (kk, j) = (bl / nb, bl % nb);
            for c in j * 8..((j + 1) * 8).min(n) {
                b[kk * n + c] = 0.0;
            }
        }
        let bias: Vec<f32> = (0..n).map(|i| i as f32 * 0.01).collect();
        let pd = PackedB::from_row_major(isa, k, n, &b, Some(&bias));
        let psp = SparseB::from_row_major(isa, k, n, &b, Some(&bias));
        let mut c = vec![0f32; m * n];
        let mut c2 = vec![0f32; m * n];
        let time = |f: &mut dyn FnMut()| {
            f();
            median(
                (0..25)
                    .map(|_| {
                        let t = Instant::now();
                        f();
                        t.elapsed().as_secs_f64()
                    })
                    .collect(),
            )
        };
        let d = time(&mut || gemm_f32(m, &a, k, &pd, None, &mut c, n, Activation::RELU));
        let s = time(&mut || spmm_f32(m, &a, k, &psp, None, &mut c2, n, Activation::RELU));
        assert!(c.iter().zip(&c2).all(|(x, y)| x == y), "sparse != dense");
        td += d;
        ts += s;
        println!(
            "m={m:6} k={k:4} n={n:4} density {:.2}: dense {:8.1} us  sparse {:8.1} us  x{:.2}",
            psp.density(),
            d * 1e6,
            s * 1e6,
            d / s
        );
    }
    println!(
        "total: dense {:.1} us sparse {:.1} us x{:.2}",
        td * 1e6,
        ts * 1e6,
        td / ts
    );
}
