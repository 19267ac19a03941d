//! Loops one depthwise case (for perf): `dw_loop HW C S K ITERS`.
use kiln_kernels::dwconv::{dwconv_f32_raw, DwArgs, DwGeom, PackedDw};
use kiln_kernels::{active_isa, Activation};
use std::time::Instant;
fn main() {
    let a: Vec<usize> = std::env::args().skip(1).map(|s| s.parse().unwrap()).collect();
    let (hw, c, s, k, iters) = (a[0], a[1], a[2], a[3], a[4]);
    let isa = active_isa();
    let oh = (hw + 2 * (k / 2) - k) / s + 1;
    let g = DwGeom {
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
        pt: k / 2,
        pl: k / 2,
        oh,
        ow: oh,
    };
    let mut xb = vec![0f32; hw * hw * c + 16];
    let off = (16 - (xb.as_ptr() as usize / 4) % 16) % 16;
    for (i, v) in xb[off..off + hw * hw * c].iter_mut().enumerate() {
        *v = (i % 7) as f32 * 0.1;
    }
    let x = &xb[off..];
    let w: Vec<f32> = (0..c * k * k).map(|i| (i % 5) as f32 * 0.1).collect();
    let pw = PackedDw::pack(isa, c, k * k, &w, None);
    let mut yb = vec![0f32; oh * oh * c + 16];
    let yoff = (16 - (yb.as_ptr() as usize / 4) % 16) % 16;
    let y = &mut yb[yoff..];
    let t = Instant::now();
    for _ in 0..iters {
        let ar = DwArgs {
            x: x.as_ptr(),
            r: std::ptr::null(),
            y: y.as_mut_ptr(),
            act: Activation::RELU,
        };
        unsafe { dwconv_f32_raw(&g, &pw, &ar, 0..g.rows()) };
    }
    let dt = t.elapsed().as_secs_f64() / iters as f64;
    println!(
        "{isa} dw{k}x{k} {hw}x{hw}x{c} s{s}: {:.1} us, {:.1} GFLOP/s",
        dt * 1e6,
        2.0 * g.macs() as f64 / dt / 1e9
    );
}
