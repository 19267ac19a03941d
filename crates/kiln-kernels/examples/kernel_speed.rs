//! Quick GFLOP/s of the GEMM and depthwise kernels on MobileNetV2 shapes
//! (`cargo run --release -p kiln-kernels --example kernel_speed`). A sanity
//! tool; the project's benchmark is `scripts/bench`.
use kiln_kernels::dwconv::{dwconv_f32_raw, DwArgs, DwGeom, PackedDw};
use kiln_kernels::gemm::{gemm_f32, PackedB};
use kiln_kernels::{active_isa, Activation};
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let isa = active_isa();
    println!("isa {isa}");
    for &(m, k, n) in &[
        (12544usize, 32usize, 16usize),
        (12544, 16, 96),
        (3136, 24, 144),
        (3136, 144, 24),
        (784, 32, 192),
        (196, 64, 384),
        (196, 384, 64),
        (49, 960, 160),
        (49, 320, 1280),
        (1, 1280, 1000),
    ] {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
        let bm: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
        let pb = PackedB::from_row_major(isa, k, n, &bm, None);
        let mut c = vec![0f32; m * n];
        let mut ts = vec![];
        for _ in 0..30 {
            let t = Instant::now();
            gemm_f32(m, &a, k, &pb, None, &mut c, n, Activation::RELU);
            ts.push(t.elapsed().as_secs_f64());
        }
        let t = median(ts);
        println!(
            "gemm m={m:5} k={k:4} n={n:4}: {:8.1} us {:6.1} GFLOP/s",
            t * 1e6,
            2.0 * (m * k * n) as f64 / t / 1e9
        );
    }
    for &(hw, c, s) in &[
        (112usize, 32usize, 1usize),
        (112, 96, 2),
        (56, 144, 1),
        (28, 192, 1),
        (14, 384, 1),
        (14, 576, 1),
        (7, 960, 1),
    ] {
        let oh = hw / s;
        let g = DwGeom {
            n: 1,
            h: hw,
            w: hw,
            c,
            kh: 3,
            kw: 3,
            sh: s,
            sw: s,
            dh: 1,
            dw: 1,
            pt: 1,
            pl: 1,
            oh,
            ow: oh,
        };
        let x: Vec<f32> = (0..hw * hw * c).map(|i| (i % 7) as f32 * 0.1).collect();
        let w: Vec<f32> = (0..c * 9).map(|i| (i % 5) as f32 * 0.1).collect();
        let pw = PackedDw::pack(isa, c, 9, &w, None);
        let mut y = vec![0f32; oh * oh * c];
        let mut ts = vec![];
        for _ in 0..30 {
            let t = Instant::now();
            let a = DwArgs {
                x: x.as_ptr(),
                r: std::ptr::null(),
                y: y.as_mut_ptr(),
                act: Activation::RELU,
            };
            unsafe { dwconv_f32_raw(&g, &pw, &a, 0..g.rows()) };
            ts.push(t.elapsed().as_secs_f64());
        }
        let t = median(ts);
        println!(
            "dw3x3 {hw}x{hw}x{c} s{s}: {:8.1} us {:6.1} GFLOP/s",
            t * 1e6,
            2.0 * g.macs() as f64 / t / 1e9
        );
    }
}
