//! Per-layer time of the 8-bit depthwise convolution against the f32 one on
//! the depthwise layers of MobileNetV2 and EfficientNet-Lite0 (224x224), one
//! thread, medians of repeated runs:
//! `cargo run --release -p kiln-kernels --example qdw_speed [REPEATS]`.
//! `KILN_ISA` caps the level; an optional second argument selects layers by
//! name. Times are the thread's CPU time. A sanity tool; the project's benchmark is
//! `scripts/bench`.
use kiln_kernels::dwconv::{dwconv_f32_raw, DwArgs, DwGeom, PackedDw};
use kiln_kernels::qdwconv::{qdwconv_u8_raw, PackedQDw, QDwGeom};
use kiln_kernels::quant::{QOut, Requant};
use kiln_kernels::{active_isa, Activation};
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Calls per sample of `f` for about 2 ms.
fn iters_for(mut f: impl FnMut()) -> usize {
    f();
    let t = Instant::now();
    f();
    let once = t.elapsed().as_secs_f64().max(1e-7);
    ((2e-3 / once) as usize).clamp(1, 1000)
}

/// CPU time of the calling thread in seconds (Linux `CLOCK_THREAD_CPUTIME_ID`:
/// time the thread was descheduled, common on a shared machine, does not
/// count); wall time elsewhere.
fn thread_time() -> f64 {
    #[cfg(target_os = "linux")]
    {
        #[repr(C)]
        struct Timespec {
            sec: i64,
            nsec: i64,
        }
        extern "C" {
            fn clock_gettime(clk: i32, ts: *mut Timespec) -> i32;
        }
        let mut ts = Timespec { sec: 0, nsec: 0 };
        // SAFETY: a valid clock id and a pointer to a timespec.
        if unsafe { clock_gettime(3, &mut ts) } == 0 {
            return ts.sec as f64 + ts.nsec as f64 * 1e-9;
        }
    }
    use std::sync::OnceLock;
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs_f64()
}

/// Seconds per call of `f`, over `iters` calls.
fn sample(iters: usize, mut f: impl FnMut()) -> f64 {
    let t = thread_time();
    for _ in 0..iters {
        f();
    }
    (thread_time() - t) / iters as f64
}

fn main() {
    let repeats: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(15);
    // Optional: only layers whose name contains this.
    let only = std::env::args().nth(2).unwrap_or_default();
    let isa = active_isa();
    println!("isa {isa}, 1 thread, median of {repeats}");
    println!(
        "{:<28} {:>10} {:>10} {:>7} {:>10}",
        "layer (HxWxC kxk sS)", "f32 us", "int8 us", "f32/i8", "i8 GMAC/s"
    );
    let layers: &[(&str, usize, usize, usize, usize)] = &[
        ("mnv2", 112, 32, 3, 1),
        ("mnv2+effl0", 112, 96, 3, 2),
        ("mnv2+effl0", 56, 144, 3, 1),
        ("mnv2", 56, 144, 3, 2),
        ("mnv2", 28, 192, 3, 1),
        ("mnv2", 28, 192, 3, 2),
        ("mnv2", 14, 384, 3, 1),
        ("mnv2", 14, 576, 3, 1),
        ("mnv2", 14, 576, 3, 2),
        ("mnv2", 7, 960, 3, 1),
        ("effl0", 56, 144, 5, 2),
        ("effl0", 28, 240, 5, 1),
        ("effl0", 28, 240, 3, 2),
        ("effl0", 14, 480, 3, 1),
        ("effl0", 14, 480, 5, 1),
        ("effl0", 14, 672, 5, 1),
        ("effl0", 14, 672, 5, 2),
        ("effl0", 7, 1152, 5, 1),
        ("effl0", 7, 1152, 3, 1),
    ];
    let (mut tf, mut tq) = (0.0, 0.0);
    for &(net, hw, c, k, s) in layers {
        let name = format!("{net} {hw}x{hw}x{c} {k}x{k} s{s}");
        if !name.contains(&only) {
            continue;
        }
        let p = k / 2;
        let o = (hw + 2 * p - k) / s + 1;
        let fg = DwGeom {
            n: 1,
            h: hw,
            w: hw,
            c,
            kh: k,
            kw: k,
            sh: s,
            sw: s,
            dh: 1,
            dw: 1,
            pt: p,
            pl: p,
            oh: o,
            ow: o,
        };
        let qg = QDwGeom {
            n: 1,
            h: hw,
            w: hw,
            c,
            kh: k,
            kw: k,
            sh: s,
            sw: s,
            pt: p,
            pl: p,
            oh: o,
            ow: o,
        };
        let xf: Vec<f32> = (0..hw * hw * c).map(|i| (i % 7) as f32 * 0.1).collect();
        let wf: Vec<f32> = (0..c * k * k).map(|i| (i % 5) as f32 * 0.1).collect();
        let pf = PackedDw::pack(isa, c, k * k, &wf, None);
        let mut yf = vec![0f32; o * o * c];
        let mut run_f = || {
            let a = DwArgs {
                x: xf.as_ptr(),
                r: std::ptr::null(),
                y: yf.as_mut_ptr(),
                act: Activation::RELU,
            };
            // SAFETY: buffers sized for the geometry.
            unsafe { dwconv_f32_raw(&fg, &pf, &a, 0..fg.rows()) };
        };
        let xq: Vec<u8> = (0..hw * hw * c).map(|i| (i * 7 % 251) as u8).collect();
        let wq: Vec<i8> = (0..c * k * k).map(|i| (i * 13 % 255) as u8 as i8).collect();
        let bias: Vec<i32> = (0..c as i32).map(|i| i * 100 - 3000).collect();
        let mult: Vec<i32> = (0..c)
            .map(|i| (1 << 30) + (i as i32 * 7919) % (1 << 30))
            .collect();
        let exp: Vec<i32> = (0..c).map(|i| -8 - (i % 3) as i32).collect();
        let rq = Requant::new(c, &mult, &exp, QOut::checked(3, 3, 255));
        let pq = PackedQDw::pack(isa, c, k, k, &wq, Some(&bias), 117, rq);
        let mut yq = vec![0u8; o * o * c];
        let mut run_q = || {
            // SAFETY: buffers sized for the geometry.
            unsafe { qdwconv_u8_raw(&qg, &pq, xq.as_ptr(), yq.as_mut_ptr(), 0..qg.rows()) };
        };
        // Samples alternate between the two kernels, so that load from other
        // processes on the machine hits both alike.
        let (nf, nq) = (iters_for(&mut run_f), iters_for(&mut run_q));
        let (mut sf, mut sq) = (vec![], vec![]);
        for _ in 0..repeats {
            sf.push(sample(nf, &mut run_f));
            sq.push(sample(nq, &mut run_q));
        }
        let (t_f, t_q) = (median(sf), median(sq));
        tf += t_f;
        tq += t_q;
        println!(
            "{:<28} {:>10.1} {:>10.1} {:>7.2} {:>10.1}",
            name,
            t_f * 1e6,
            t_q * 1e6,
            t_f / t_q,
            qg.macs() as f64 / t_q / 1e9
        );
    }
    println!(
        "{:<28} {:>10.1} {:>10.1} {:>7.2}",
        "total",
        tf * 1e6,
        tq * 1e6,
        tf / tq
    );
}
