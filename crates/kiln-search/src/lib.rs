//! # kiln-search
//!
//! The measuring side of choosing a compression / runtime mix for a device
//! (`kiln tune`):
//!
//! - [`device`]: device profiles as TOML data files (cores, ISA features,
//!   clock, caches, memory bandwidth and size, power, peak throughput), each
//!   figure with its source; profiles of common edge targets ship with kiln
//!   ([`device::shipped`]).
//! - [`probe`]: micro-benchmarks that measure this machine and write its
//!   profile (`kiln probe`).
//! - [`cost`]: a roofline cost model of kiln's compiled steps, `t = max(FLOPs /
//!   F, bytes / B) + o` per kernel class, calibrated on profiled runs of
//!   kiln's runtime on this machine and scaled to another profile by its peak
//!   throughput, bandwidth and clock.
//! - [`energy`]: an estimate of the energy of one inference from its
//!   operation counts and bytes moved, with Horowitz's 45 nm figures (ISSCC
//!   2014); always labelled an estimate.
//! - [`tune`]: candidates, their JSON results, limits, dominance, the
//!   Pareto front and the choice of `kiln tune`.
#![warn(missing_docs)]

pub mod cost;
pub mod device;
pub mod energy;
mod error;
pub mod probe;
pub mod tune;

pub use device::DeviceProfile;
pub use error::{Error, ErrorKind};
