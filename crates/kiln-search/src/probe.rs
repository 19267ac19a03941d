//! `kiln probe`: measure this machine and describe it as a [`DeviceProfile`].
//!
//! - cores: [`std::thread::available_parallelism`] (what kiln may use here);
//! - ISA: the CPU's SIMD features ([`kiln_kernels::simd_features`], plus
//!   `avx512vnni`, and from `/proc/cpuinfo` `avx_vnni`, `amx_tile`,
//!   `amx_int8`, `amx_bf16`, `dotprod`, `i8mm`, `sve`);
//! - clock: the highest `cpu MHz` of `/proc/cpuinfo`, else `cpuinfo_max_freq`;
//! - caches: `/sys/devices/system/cpu/cpu0/cache` (an L3 above 128 MiB,
//!   which virtual machines report for their whole host, is capped and the
//!   source says so);
//! - memory: `MemAvailable` of `/proc/meminfo`;
//! - bandwidth: the best of several copies of a 64 MiB buffer on all cores
//!   (bytes read + written, as STREAM counts);
//! - peak: kiln's own fp32 GEMM ([`kiln_kernels::gemm::gemm_f32`]) and int8
//!   GEMM ([`kiln_kernels::qgemm::qgemm_u8`]) on one core, 512x512x384, best
//!   of the timed repeats;
//! - power: the package energy counter (Intel RAPL, `/sys/class/powercap`)
//!   over an all-core GEMM load, when readable; else the figure the caller
//!   gives; else a placeholder of 5 W per core, labelled as such.
//!
//! Each figure's source in the profile says which of these applied.

use crate::device::{Cache, DeviceProfile, Peak};
use crate::error::Error;
use kiln_kernels::gemm::{gemm_f32, PackedB};
use kiln_kernels::qgemm::{qgemm_u8, QPackedB};
use kiln_kernels::quant::{QOut, Requant};
use kiln_kernels::{active_isa, Activation};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

/// What to measure and how long.
#[derive(Debug, Clone, Default)]
pub struct ProbeOptions {
    /// Profile name (default: `host`).
    pub name: Option<String>,
    /// Power under load in W, when known (used when RAPL is not readable).
    pub power_w: Option<f64>,
    /// Shorter measurements (tests): fewer repeats, smaller buffers.
    pub quick: bool,
}

/// Measures this machine. See the [module docs](self) for each figure.
pub fn probe(opts: &ProbeOptions) -> Result<DeviceProfile, Error> {
    let mut sources = BTreeMap::new();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    sources.insert(
        "cores".into(),
        "measured by kiln probe: available parallelism of this process".into(),
    );
    #[allow(unused_mut)] // only x86-64 adds to it
    let mut isa: Vec<String> = kiln_kernels::simd_features()
        .iter()
        .map(|s| s.to_string())
        .collect();
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512vnni") {
        isa.push("avx512vnni".into());
    }
    // Features std cannot detect on stable Rust (AMX, AVX-VNNI) from the
    // kernel's flags: kiln has no kernels for them yet, but a profile of
    // the machine names them.
    if let Some(flags) = read("/proc/cpuinfo").and_then(|c| {
        c.lines()
            .find(|l| l.starts_with("flags") || l.starts_with("Features"))
            .map(|l| l.split(':').nth(1).unwrap_or("").to_string())
    }) {
        for f in [
            "avx_vnni", "amx_tile", "amx_int8", "amx_bf16", "asimddp", "i8mm", "sve",
        ] {
            let name = match f {
                "asimddp" => "dotprod",
                other => other,
            };
            if flags.split_whitespace().any(|x| x == f) && !isa.iter().any(|i| i == name) {
                isa.push(name.to_string());
            }
        }
    }
    sources.insert(
        "isa".into(),
        "measured by kiln probe: CPU feature detection".into(),
    );
    let (clock_ghz, clock_src) = clock_ghz();
    sources.insert("clock_ghz".into(), clock_src);
    let (cache, cache_src) = caches();
    sources.insert("cache".into(), cache_src);
    let (memory_mb, mem_src) = memory_mb();
    sources.insert("memory_mb".into(), mem_src);

    let repeats = if opts.quick { 3 } else { 10 };
    let bw_bytes = if opts.quick { 16 << 20 } else { 64 << 20 };
    let bandwidth = copy_bandwidth(bw_bytes, cores as usize, repeats);
    sources.insert(
        "memory_bandwidth_gbs".into(),
        format!(
            "measured by kiln probe: best of {repeats} copies of {} MiB on {cores} threads (read + write bytes)",
            bw_bytes >> 20
        ),
    );
    let (m, k, n) = if opts.quick {
        (96, 256, 256)
    } else {
        (384, 512, 512)
    };
    let f32_gflops = gemm_gflops(m, k, n, repeats);
    let i8_gops = qgemm_gops(m, k, n, repeats);
    sources.insert(
        "peak".into(),
        format!(
            "measured by kiln probe: kiln's GEMM kernels at ISA level {} on one core, {m}x{k}x{n}, best of {repeats}",
            active_isa().name()
        ),
    );
    let (power_w, power_src) = match rapl_power_w(cores as usize, if opts.quick { 0.2 } else { 1.0 }) {
        Some(w) => (w, "measured by kiln probe: RAPL package energy over an all-core GEMM load".to_string()),
        None => match opts.power_w {
            Some(w) => (w, "given to kiln probe (--power-w)".to_string()),
            None => (
                5.0 * cores as f64,
                "placeholder: no power counter readable (RAPL); 5 W per core assumed, replace with the device's figure"
                    .to_string(),
            ),
        },
    };
    sources.insert("power_w".into(), power_src);
    let profile = DeviceProfile {
        name: opts.name.clone().unwrap_or_else(|| "host".into()),
        description: format!("{} ({} cores), measured by kiln probe", cpu_model(), cores),
        arch: std::env::consts::ARCH.to_string(),
        cores,
        isa,
        clock_ghz,
        memory_mb,
        memory_bandwidth_gbs: bandwidth,
        power_w,
        cache,
        peak: Peak { f32_gflops, i8_gops },
        sources,
    };
    profile.validate("<kiln probe>")?;
    Ok(profile)
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

fn cpu_model() -> String {
    read("/proc/cpuinfo")
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name") || l.starts_with("Model"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| format!("{} CPU", std::env::consts::ARCH))
}

fn clock_ghz() -> (f64, String) {
    if let Some(mhz) = read("/proc/cpuinfo").and_then(|s| {
        s.lines()
            .filter(|l| l.starts_with("cpu MHz"))
            .filter_map(|l| l.split_once(':').and_then(|(_, v)| v.trim().parse::<f64>().ok()))
            .reduce(f64::max)
    }) {
        return (
            mhz / 1000.0,
            "measured by kiln probe: highest 'cpu MHz' of /proc/cpuinfo".into(),
        );
    }
    if let Some(khz) = read("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
        .and_then(|s| s.trim().parse::<f64>().ok())
    {
        return (
            khz / 1e6,
            "measured by kiln probe: cpufreq cpuinfo_max_freq".into(),
        );
    }
    (1.0, "placeholder: clock not readable here; 1 GHz assumed".into())
}

/// Parses sysfs cache sizes like `32K`, `1024K`, `8M`.
fn parse_kib(s: &str) -> Option<u32> {
    let s = s.trim();
    if let Some(k) = s.strip_suffix('K') {
        k.parse().ok()
    } else if let Some(m) = s.strip_suffix('M') {
        m.parse::<u32>().ok().map(|m| m * 1024)
    } else {
        s.parse::<u32>().ok().map(|b| b / 1024)
    }
}

/// Largest L3 the probe takes as is, KiB (the largest L3 one core shares
/// on current CPUs, e.g. 96 MiB per CCD on AMD's 3D V-Cache parts, with
/// headroom).
const L3_CAP_KIB: u32 = 128 * 1024;

fn caches() -> (Cache, String) {
    let mut c = Cache {
        l1d_kib: 0,
        l2_kib: 0,
        l3_kib: 0,
    };
    for i in 0..8 {
        let dir = format!("/sys/devices/system/cpu/cpu0/cache/index{i}");
        let (Some(level), Some(ty), Some(size)) = (
            read(&format!("{dir}/level")),
            read(&format!("{dir}/type")),
            read(&format!("{dir}/size")),
        ) else {
            continue;
        };
        let Some(kib) = parse_kib(&size) else { continue };
        match (level.trim(), ty.trim()) {
            ("1", "Data") => c.l1d_kib = kib,
            ("2", _) => c.l2_kib = kib,
            ("3", _) => c.l3_kib = kib,
            _ => {}
        }
    }
    if c.l1d_kib == 0 {
        c.l1d_kib = 32;
        return (
            c,
            "placeholder: /sys/devices/system/cpu/cpu0/cache not readable; 32 KiB L1 assumed".into(),
        );
    }
    // A virtual machine may report its host's whole last-level cache (all
    // sockets, shared with other guests); no single core uses more than
    // this in practice.
    if c.l3_kib > L3_CAP_KIB {
        let seen = c.l3_kib;
        c.l3_kib = L3_CAP_KIB;
        return (
            c,
            format!(
                "measured by kiln probe: /sys/devices/system/cpu/cpu0/cache, with L3 {} MiB capped at {} MiB \
                 (a virtual machine often reports its whole host's cache)",
                seen / 1024,
                L3_CAP_KIB / 1024
            ),
        );
    }
    (
        c,
        "measured by kiln probe: /sys/devices/system/cpu/cpu0/cache".into(),
    )
}

fn memory_mb() -> (u64, String) {
    let kb = read("/proc/meminfo").and_then(|s| {
        s.lines()
            .find(|l| l.starts_with("MemAvailable:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    });
    match kb {
        Some(kb) => (
            (kb / 1024).max(1),
            "measured by kiln probe: MemAvailable of /proc/meminfo".into(),
        ),
        None => (
            1024,
            "placeholder: /proc/meminfo not readable; 1 GiB assumed".into(),
        ),
    }
}

/// Best copy bandwidth (10^9 bytes/s, read + write) of `bytes` split over `threads`.
fn copy_bandwidth(bytes: usize, threads: usize, repeats: usize) -> f64 {
    let n = bytes / 4;
    let src: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let mut dst = vec![0f32; n];
    let chunk = n.div_ceil(threads.max(1));
    let mut best = Duration::MAX;
    for _ in 0..repeats + 1 {
        let t0 = Instant::now();
        std::thread::scope(|s| {
            for (d, sr) in dst.chunks_mut(chunk).zip(src.chunks(chunk)) {
                s.spawn(move || d.copy_from_slice(sr));
            }
        });
        best = best.min(t0.elapsed());
        black_box(&dst);
    }
    2.0 * bytes as f64 / best.as_secs_f64() / 1e9
}

/// Best fp32 GEMM throughput on one core, 10^9 FLOP/s.
fn gemm_gflops(m: usize, k: usize, n: usize, repeats: usize) -> f64 {
    let isa = active_isa();
    let a: Vec<f32> = (0..m * k).map(|i| ((i % 13) as f32 - 6.0) * 0.1).collect();
    let b = PackedB::pack(isa, k, n, |i, j| (((i + j) % 7) as f32 - 3.0) * 0.1, None);
    let mut c = vec![0f32; m * n];
    let mut best = Duration::MAX;
    for _ in 0..repeats + 1 {
        let t0 = Instant::now();
        gemm_f32(m, &a, k, &b, None, &mut c, n, Activation::None);
        best = best.min(t0.elapsed());
        black_box(&c);
    }
    2.0 * (m * k * n) as f64 / best.as_secs_f64() / 1e9
}

/// Best u8 x i8 GEMM throughput on one core, 10^9 ops/s (2 per multiply-add).
fn qgemm_gops(m: usize, k: usize, n: usize, repeats: usize) -> f64 {
    let isa = active_isa();
    let a: Vec<u8> = (0..m * k).map(|i| (i % 251) as u8).collect();
    let rq = Requant::new(1, &[1 << 30], &[-12], QOut::checked(128, 0, 255));
    let b = QPackedB::pack(isa, k, n, |i, j| ((i * 31 + j * 17) % 255) as i8, None, 128, &rq);
    let mut c = vec![0u8; m * n];
    let mut best = Duration::MAX;
    for _ in 0..repeats + 1 {
        let t0 = Instant::now();
        qgemm_u8(m, &a, k, &b, &mut c, n);
        best = best.min(t0.elapsed());
        black_box(&c);
    }
    2.0 * (m * k * n) as f64 / best.as_secs_f64() / 1e9
}

/// Package power (W) over `seconds` of GEMMs on `threads` cores, from the
/// RAPL energy counter; `None` when the counter is not readable.
fn rapl_power_w(threads: usize, seconds: f64) -> Option<f64> {
    let path = "/sys/class/powercap/intel-rapl:0/energy_uj";
    let e0: u64 = read(path)?.trim().parse().ok()?;
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                while t0.elapsed().as_secs_f64() < seconds {
                    black_box(gemm_gflops(64, 256, 256, 1));
                }
            });
        }
    });
    let e1: u64 = read(path)?.trim().parse().ok()?;
    let dt = t0.elapsed().as_secs_f64();
    (e1 > e0).then(|| (e1 - e0) as f64 * 1e-6 / dt)
}
