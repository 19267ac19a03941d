//! int8 GEMM vs f32 GEMM on MobileNetV2 pointwise shapes (and a few im2col
//! ones), one thread:
//! `cargo run --release -p kiln-kernels --example qgemm_speed` (medians of
//! 50 runs, GMAC/s). At the AMX level it also times the VNNI and the AMX
//! kernel on each shape (`vnni`, `amx`: alternating blocks of 20 runs,
//! medians of 100),
//! the data behind [`kiln_kernels::qgemm::amx_wins`]. `QGEMM_INT8_ONLY=1`
//! skips the f32 GEMM; `QGEMM_SHAPES="m,k,n;m,k,n"` replaces the shapes;
//! `QGEMM_A_OFFSET=b` puts `A` `b` bytes past a 64-byte boundary (default 0).
use kiln_kernels::gemm::{gemm_f32, PackedB};
use kiln_kernels::qgemm::{qgemm_name, qgemm_u8, QPackedB};
use kiln_kernels::quant::{QOut, Requant};
use kiln_kernels::{active_isa, Activation};
use std::time::Instant;

fn time(f: &mut impl FnMut()) -> f64 {
    let t0 = Instant::now();
    f();
    t0.elapsed().as_secs_f64()
}

fn median(mut t: Vec<f64>) -> f64 {
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

fn median_of(runs: usize, mut f: impl FnMut()) -> f64 {
    median((0..runs).map(|_| time(&mut f)).collect())
}

fn main() {
    let isa = active_isa();
    let int8_only = std::env::var_os("QGEMM_INT8_ONLY").is_some();
    println!("isa {isa}, int8 kernel {}", qgemm_name(isa));
    let default_shapes = [
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
        // im2col: the 3x3 stride-2 stem (3 -> 4 channels), 3x3 convolutions
        (12544, 36, 32),
        (3136, 576, 64),
        (784, 1152, 128),
        (196, 2304, 256),
    ];
    let shapes: Vec<(usize, usize, usize)> = match std::env::var("QGEMM_SHAPES") {
        Ok(s) => s
            .split(';')
            .filter(|t| !t.trim().is_empty())
            .map(|t| {
                let v: Vec<usize> = t
                    .split(',')
                    .map(|x| x.trim().parse().expect("QGEMM_SHAPES: m,k,n;.."))
                    .collect();
                assert_eq!(v.len(), 3, "QGEMM_SHAPES: m,k,n;..");
                (v[0], v[1], v[2])
            })
            .collect(),
        Err(_) => default_shapes.to_vec(),
    };
    let a_offset: usize = std::env::var("QGEMM_A_OFFSET")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
        % 64;
    let (mut tf, mut tq) = (0.0, 0.0);
    for (m, k, n) in shapes {
        let f = if int8_only {
            0.0
        } else {
            let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
            let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1 - 0.2).collect();
            let pb = PackedB::from_row_major(isa, k, n, &b, None);
            let mut c = vec![0f32; m * n];
            median_of(50, || gemm_f32(m, &a, k, &pb, None, &mut c, n, Activation::None))
        };
        // A at a fixed alignment (64 bytes plus `QGEMM_A_OFFSET`): rows of a
        // tile load that straddle cache lines cost twice the lines.
        let mut abuf = vec![0u8; m * k + 128];
        let off = abuf.as_ptr().align_offset(64) + a_offset;
        let aq = &mut abuf[off..off + m * k];
        for (i, v) in aq.iter_mut().enumerate() {
            *v = (i % 251) as u8;
        }
        let aq = &*aq;
        let bq: Vec<i8> = (0..k * n).map(|i| (i % 255) as u8 as i8).collect();
        let rq = Requant::new(n, &vec![1 << 30; n], &vec![-10; n], QOut::checked(0, 0, 255));
        let qb = QPackedB::pack(isa, k, n, |kk, j| bq[kk * n + j], None, 3, &rq);
        let mut cq = vec![0u8; m * n];
        let q = median_of(50, || qgemm_u8(m, aq, k, &qb, &mut cq, n));
        tf += f;
        tq += q;
        let gm = (m * k * n) as f64 / 1e9;
        print!("m {m:5} k {k:4} n {n:4}: ");
        if !int8_only {
            print!("f32 {:8.1} us ({:5.1} GMAC/s)  ", f * 1e6, gm / f);
        }
        print!("int8 {:8.1} us ({:5.1} GMAC/s)", q * 1e6, gm / q);
        if !int8_only {
            print!("  speed-up {:.2}x", f / q);
        }
        #[cfg(target_arch = "x86_64")]
        if isa == kiln_kernels::Isa::Avx512Amx {
            use kiln_kernels::qgemm::{qgemm_u8i8_avx512amx_32x32, qgemm_u8i8_avx512vnni_12x32, QGemmArgs};
            let args = QGemmArgs {
                m,
                a: aq.as_ptr(),
                lda: k,
                c: cq.as_mut_ptr(),
                ldc: n,
            };
            let p = qb.panels();
            let (mut tv, mut ta) = (Vec::new(), Vec::new());
            // Alternating blocks of 20 runs: each kernel warm, both under
            // the same load.
            for _ in 0..5 {
                for _ in 0..20 {
                    // SAFETY: A is m x k, C is m x n, the packing is AMX's.
                    tv.push(time(&mut || unsafe {
                        qgemm_u8i8_avx512vnni_12x32(&args, &qb, 0..m, 0..p)
                    }));
                }
                for _ in 0..20 {
                    // SAFETY: as above.
                    ta.push(time(&mut || unsafe {
                        qgemm_u8i8_avx512amx_32x32(&args, &qb, 0..m, 0..p)
                    }));
                }
            }
            let (v, a) = (median(tv), median(ta));
            print!(
                "  | vnni {:8.1} us  amx {:8.1} us  amx/vnni {:.2}x",
                v * 1e6,
                a * 1e6,
                v / a
            );
        }
        println!();
    }
    if int8_only {
        println!("total: int8 {:.1} us", tq * 1e6);
    } else {
        println!(
            "total: f32 {:.1} us, int8 {:.1} us, {:.2}x",
            tf * 1e6,
            tq * 1e6,
            tf / tq
        );
    }
}
