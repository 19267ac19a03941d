//! Energy per inference, estimated from operation counts and bytes moved.
//!
//! Source of every figure: M. Horowitz, "Computing's energy problem (and
//! what we can do about it)", ISSCC 2014, figures for a 45 nm process at
//! 0.9 V:
//!
//! | operation | energy |
//! |---|---|
//! | 8-bit integer multiply | 0.2 pJ |
//! | 32-bit integer add | 0.1 pJ |
//! | 32-bit float multiply | 3.7 pJ |
//! | 32-bit float add | 0.9 pJ |
//! | 64-bit read, 32 KB SRAM | 20 pJ |
//! | 64-bit read, 1 MB SRAM | 100 pJ |
//! | 64-bit read, DRAM | 1.3–2.6 nJ (1.95 nJ used) |
//!
//! A multiply-add therefore costs 4.6 pJ in fp32 and 0.3 pJ in int8 (8-bit
//! multiply, 32-bit accumulate). Bytes a step moves are charged at the level
//! its working set ([`kiln_runtime::compiled::StepInfo::bytes`]) fits: the L1 data
//! cache at the 32 KB SRAM rate, the last-level cache at the 1 MB rate,
//! beyond it DRAM. This is an **estimate**: a newer process spends less per
//! operation, and core overheads (instruction fetch, control, leakage) are
//! left out; compare candidates with it, do not quote it as a measurement.
//! The device's power figure times the latency ([`EnergyEstimate::power_mj`])
//! is the other, usually much larger, bound.

use crate::cost::{precision_of, StepCost};
use crate::device::{DeviceProfile, Precision};
use serde::{Deserialize, Serialize};

/// pJ per fp32 multiply-add (3.7 multiply + 0.9 add).
pub const PJ_MAC_F32: f64 = 3.7 + 0.9;
/// pJ per int8 multiply-add (0.2 8-bit multiply + 0.1 32-bit add).
pub const PJ_MAC_INT8: f64 = 0.2 + 0.1;
/// pJ per byte read from a 32 KB SRAM (20 pJ per 64 bits).
pub const PJ_BYTE_L1: f64 = 20.0 / 8.0;
/// pJ per byte read from a 1 MB SRAM (100 pJ per 64 bits).
pub const PJ_BYTE_LLC: f64 = 100.0 / 8.0;
/// pJ per byte read from DRAM (1.95 nJ per 64 bits, the middle of 1.3–2.6).
pub const PJ_BYTE_DRAM: f64 = 1950.0 / 8.0;

/// Where the estimate's figures come from (printed with every estimate).
pub const SOURCE: &str = "estimate from op counts and bytes moved, Horowitz ISSCC 2014 (45 nm)";

/// An energy estimate for one inference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnergyEstimate {
    /// Multiply-adds (mJ).
    pub compute_mj: f64,
    /// Bytes moved (mJ).
    pub memory_mj: f64,
    /// `compute_mj + memory_mj`.
    pub total_mj: f64,
    /// The device's power figure times the latency, when a latency is given
    /// (mJ): the wall-power view, which includes everything the op-count
    /// estimate leaves out.
    pub power_mj: Option<f64>,
    /// [`SOURCE`].
    pub source: String,
}

/// Energy of one inference made of `steps` on `device`; `latency_ms`
/// (measured or predicted) adds the power-times-time figure.
pub fn estimate(steps: &[StepCost], device: &DeviceProfile, latency_ms: Option<f64>) -> EnergyEstimate {
    let l1 = device.cache.l1d_kib as u64 * 1024;
    let llc = device.last_level_cache_bytes().max(l1);
    let mut compute_pj = 0.0;
    let mut memory_pj = 0.0;
    for s in steps {
        let macs = s.flops as f64 / 2.0;
        compute_pj += macs
            * match precision_of(&s.kernel) {
                Precision::F32 => PJ_MAC_F32,
                Precision::Int8 => PJ_MAC_INT8,
            };
        let rate = if s.bytes <= l1 {
            PJ_BYTE_L1
        } else if s.bytes <= llc {
            PJ_BYTE_LLC
        } else {
            PJ_BYTE_DRAM
        };
        memory_pj += s.bytes as f64 * rate;
    }
    let compute_mj = compute_pj * 1e-9;
    let memory_mj = memory_pj * 1e-9;
    EnergyEstimate {
        compute_mj,
        memory_mj,
        total_mj: compute_mj + memory_mj,
        power_mj: latency_ms.map(|ms| device.power_w * ms),
        source: SOURCE.to_string(),
    }
}
