//! Device profiles: what kiln knows about a target, as a TOML data file.
//!
//! ```toml
//! name = "rpi4-cortex-a72"
//! description = "Raspberry Pi 4 Model B: Broadcom BCM2711, 4x Cortex-A72"
//! arch = "aarch64"
//! cores = 4
//! isa = ["neon"]
//! clock_ghz = 1.5
//! memory_mb = 4096
//! memory_bandwidth_gbs = 5.5
//! power_w = 6.4
//!
//! [cache]
//! l1d_kib = 32
//! l2_kib = 1024
//! l3_kib = 0
//!
//! [peak]
//! f32_gflops = 12.0
//! i8_gops = 24.0
//!
//! [sources]
//! cores = "..."
//! ```
//!
//! Units: `clock_ghz` GHz (the sustained all-core clock); `memory_mb` MiB
//! of RAM usable by the model; `memory_bandwidth_gbs` 10^9 bytes/s that a
//! streaming copy reaches (read + write bytes counted, as STREAM counts
//! them); `power_w` W drawn by the CPU under a sustained all-core load (the
//! package's, or the board's where only that is published); cache sizes KiB
//! (`l1d` and `l2` per core or per cluster as the part has them, `l3` the
//! shared last level, 0 when absent); `peak.f32_gflops` 10^9 fp32 FLOPs/s
//! (2 per multiply-add) one core sustains in a GEMM, `peak.i8_gops` the
//! same for u8 x i8 multiply-adds (2 ops each).
//!
//! Every figure names its source in `[sources]` (a datasheet, a published
//! measurement, `kiln probe`, or a derivation from the other figures); a
//! profile without one is refused.

use crate::error::{Error, ErrorKind};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// Cache sizes in KiB (0: the level is absent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cache {
    /// L1 data cache per core.
    pub l1d_kib: u32,
    /// L2 per core or per cluster, as the part has it.
    pub l2_kib: u32,
    /// Shared last-level cache (0: none).
    pub l3_kib: u32,
}

/// Sustained GEMM throughput of one core.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peak {
    /// 10^9 fp32 FLOPs per second (2 per multiply-add).
    pub f32_gflops: f64,
    /// 10^9 int8 ops per second (u8 x i8 multiply-add = 2 ops).
    pub i8_gops: f64,
}

/// A device profile; see the [module docs](self) for the file format and units.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceProfile {
    /// Short name, used by `--device NAME` for shipped profiles.
    pub name: String,
    /// One line: board / SoC / cores.
    pub description: String,
    /// `x86_64` or `aarch64`.
    pub arch: String,
    /// Cores kiln may use.
    pub cores: u32,
    /// SIMD features: `avx2`, `fma`, `avx512f`, `avx512vnni`, `neon`, `dotprod`, `i8mm`.
    pub isa: Vec<String>,
    /// Sustained all-core clock, GHz.
    pub clock_ghz: f64,
    /// RAM usable by the model, MiB.
    pub memory_mb: u64,
    /// Streaming-copy bandwidth, 10^9 bytes/s (read + write counted).
    pub memory_bandwidth_gbs: f64,
    /// CPU power under a sustained all-core load, W.
    pub power_w: f64,
    /// Cache sizes.
    pub cache: Cache,
    /// Per-core GEMM throughput.
    pub peak: Peak,
    /// Source of each figure, by field name (`cores`, `isa`, `clock_ghz`,
    /// `memory_mb`, `memory_bandwidth_gbs`, `power_w`, `cache`, `peak`).
    #[serde(default)]
    pub sources: BTreeMap<String, String>,
}

/// Fields whose source a profile must name.
pub const SOURCED_FIELDS: [&str; 8] = [
    "cores",
    "isa",
    "clock_ghz",
    "memory_mb",
    "memory_bandwidth_gbs",
    "power_w",
    "cache",
    "peak",
];

/// ISA feature names a profile may list.
pub const ISA_FEATURES: [&str; 12] = [
    "avx2",
    "fma",
    "avx512f",
    "avx512vnni",
    "avx_vnni",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    "neon",
    "dotprod",
    "i8mm",
    "sve",
];

const SHIPPED: [(&str, &str); 3] = [
    (
        "rpi4-cortex-a72",
        include_str!("../profiles/rpi4-cortex-a72.toml"),
    ),
    (
        "phone-cortex-a55",
        include_str!("../profiles/phone-cortex-a55.toml"),
    ),
    ("minipc-n100", include_str!("../profiles/minipc-n100.toml")),
];

/// The profiles shipped with kiln (files under `crates/kiln-search/profiles/`).
pub fn shipped() -> Vec<DeviceProfile> {
    SHIPPED
        .iter()
        .map(|(name, text)| {
            DeviceProfile::parse(text, &format!("<shipped profile {name}>"))
                .expect("shipped profiles are checked by the tests")
        })
        .collect()
}

/// Names of the shipped profiles.
pub fn shipped_names() -> Vec<&'static str> {
    SHIPPED.iter().map(|(n, _)| *n).collect()
}

impl DeviceProfile {
    /// Parses and validates a profile from TOML text; `origin` (a file name)
    /// goes into errors.
    ///
    /// Errors ([`ErrorKind::InvalidProfile`]): TOML syntax, an unknown or
    /// missing field, a value out of range, a figure without a source.
    pub fn parse(text: &str, origin: &str) -> Result<DeviceProfile, Error> {
        let p: DeviceProfile = toml::from_str(text)
            .map_err(|e| Error::new(ErrorKind::InvalidProfile, format!("device profile {origin}: {e}")))?;
        p.validate(origin)?;
        Ok(p)
    }

    /// Reads a profile file. Errors as [`DeviceProfile::parse`], plus
    /// [`ErrorKind::Io`].
    pub fn load(path: &Path) -> Result<DeviceProfile, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::new(
                ErrorKind::Io,
                format!("device profile {}: cannot read: {e}", path.display()),
            )
        })?;
        DeviceProfile::parse(&text, &path.display().to_string())
    }

    /// A shipped profile by name, or else a profile file at `name_or_path`.
    pub fn resolve(name_or_path: &str) -> Result<DeviceProfile, Error> {
        if let Some((_, text)) = SHIPPED.iter().find(|(n, _)| *n == name_or_path) {
            return DeviceProfile::parse(text, name_or_path);
        }
        let path = Path::new(name_or_path);
        if !path.exists() {
            return Err(Error::new(
                ErrorKind::Io,
                format!(
                    "device profile '{name_or_path}': no such file, and not a shipped profile ({})",
                    shipped_names().join(", ")
                ),
            ));
        }
        DeviceProfile::load(path)
    }

    /// Checks ranges and sources; `origin` names the file in errors.
    pub fn validate(&self, origin: &str) -> Result<(), Error> {
        let bad = |field: &str, msg: String| {
            Err(Error::new(
                ErrorKind::InvalidProfile,
                format!("device profile {origin}: field '{field}': {msg}"),
            ))
        };
        if self.name.trim().is_empty() {
            return bad("name", "empty".into());
        }
        if !matches!(self.arch.as_str(), "x86_64" | "aarch64") {
            return bad("arch", format!("'{}' (expected x86_64 or aarch64)", self.arch));
        }
        if !(1..=1024).contains(&self.cores) {
            return bad("cores", format!("{} (expected 1..=1024)", self.cores));
        }
        for f in &self.isa {
            if !ISA_FEATURES.contains(&f.as_str()) {
                return bad(
                    "isa",
                    format!("unknown feature '{f}' (known: {})", ISA_FEATURES.join(", ")),
                );
            }
        }
        let ranges: [(&str, f64, f64, f64); 5] = [
            ("clock_ghz", self.clock_ghz, 0.05, 10.0),
            ("memory_bandwidth_gbs", self.memory_bandwidth_gbs, 0.01, 10_000.0),
            ("power_w", self.power_w, 0.001, 10_000.0),
            ("peak.f32_gflops", self.peak.f32_gflops, 0.001, 100_000.0),
            ("peak.i8_gops", self.peak.i8_gops, 0.001, 1_000_000.0),
        ];
        for (field, v, lo, hi) in ranges {
            if !(v.is_finite() && (lo..=hi).contains(&v)) {
                return bad(field, format!("{v} (expected {lo}..={hi})"));
            }
        }
        if self.memory_mb == 0 || self.memory_mb > 1 << 24 {
            return bad("memory_mb", format!("{} (expected 1..=16777216)", self.memory_mb));
        }
        if self.cache.l1d_kib == 0 {
            return bad(
                "cache.l1d_kib",
                "0 (every supported core has an L1 data cache)".into(),
            );
        }
        for f in SOURCED_FIELDS {
            match self.sources.get(f) {
                Some(s) if !s.trim().is_empty() => {}
                _ => {
                    return bad(
                        "sources",
                        format!("no source for '{f}' (every figure names where it comes from)"),
                    )
                }
            }
        }
        Ok(())
    }

    /// The profile as TOML text (what [`DeviceProfile::parse`] reads back).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a profile always serializes")
    }

    /// Last-level cache in bytes (L3, else L2).
    pub fn last_level_cache_bytes(&self) -> u64 {
        let kib = if self.cache.l3_kib > 0 {
            self.cache.l3_kib
        } else {
            self.cache.l2_kib
        };
        kib as u64 * 1024
    }

    /// Peak throughput of `threads` cores for `precision` (FLOPs or ops per second).
    pub fn peak_ops(&self, precision: Precision, threads: usize) -> f64 {
        let per_core = match precision {
            Precision::F32 => self.peak.f32_gflops,
            Precision::Int8 => self.peak.i8_gops,
        };
        per_core * 1e9 * threads.min(self.cores as usize).max(1) as f64
    }
}

/// Arithmetic precision of a step, for peak throughput and energy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Precision {
    /// fp32 multiply-adds.
    F32,
    /// u8 x i8 multiply-adds into i32.
    Int8,
}
