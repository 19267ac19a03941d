//! int8 GEMM vs f32 GEMM on MobileNetV2 pointwise shapes, one thread:
//! `cargo run --release -p kiln-kernels --example qgemm_speed` (medians of
//! 50 runs, GMAC/s).
use kiln_kernels::gemm::{gemm_f32, PackedB};
use kiln_kernels::qgemm::{qgemm_name, qgemm_u8, QPackedB};
use kiln_kernels::quant::{QOut, Requant};
use kiln_kernels::{active_isa, Activation};
use std::time::Instant;

fn median(mut f: impl FnMut()) -> f64 {
    let mut t: Vec<f64> = (0..50)
        .map(|_| {
            let t0 = Instant::now();
            f();
            t0.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[25]
}

fn main() {
    let isa = active_isa();
    println!("isa {isa}, int8 kernel {}", qgemm_name(isa));
    let shapes = [
        (12544, 32, 16),
        (12544, 16, 96),
        (3136, 24, 144),
        (3136, 144, 24),
        (784, 32, 192),
        (784, 192, 32),
        (196, 64, 384),
        (196, 384, 64),
        (196, 576, 96),
        (49, 160, 960),
        (49, 960, 160),
        (49, 320, 1280),
        (1, 1280, 1000),
    ];
    let (mut tf, mut tq) = (0.0, 0.0);
    for (m, k, n) in shapes {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1 - 0.2).collect();
        let pb = PackedB::from_row_major(isa, k, n, &b, None);
        let mut c = vec![0f32; m * n];
        let f = median(|| gemm_f32(m, &a, k, &pb, None, &mut c, n, Activation::None));
        let aq: Vec<u8> = (0..m * k).map(|i| (i % 251) as u8).collect();
        let bq: Vec<i8> = (0..k * n).map(|i| (i % 255) as u8 as i8).collect();
        let rq = Requant::new(n, &vec![1 << 30; n], &vec![-10; n], QOut::checked(0, 0, 255));
        let qb = QPackedB::pack(isa, k, n, |kk, j| bq[kk * n + j], None, 3, &rq);
        let mut cq = vec![0u8; m * n];
        let q = median(|| qgemm_u8(m, &aq, k, &qb, &mut cq, n));
        tf += f;
        tq += q;
        let gm = (m * k * n) as f64 / 1e9;
        println!(
            "m {m:5} k {k:4} n {n:4}: f32 {:8.1} us ({:5.1} GMAC/s)  int8 {:8.1} us ({:5.1} GMAC/s)  speed-up {:.2}x",
            f * 1e6,
            gm / f,
            q * 1e6,
            gm / q,
            f / q
        );
    }
    println!(
        "total: f32 {:.1} us, int8 {:.1} us, {:.2}x",
        tf * 1e6,
        tq * 1e6,
        tf / tq
    );
}
