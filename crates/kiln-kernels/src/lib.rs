//! # kiln-kernels
//!
//! kiln's compute kernels on plain slices: packed f32 GEMM (the 1x1
//! convolution and fully connected layers), a block-sparse GEMM for 1x1
//! convolutions pruned in 1x8 blocks ([`spmm`]), depthwise convolution, a
//! general convolution by blocked im2col + GEMM, pooling and element-wise ops
//! with fused epilogues (bias, residual add, activation).
//!
//! Every kernel has a scalar reference (`*_scalar`), which is the definition the
//! SIMD versions are tested against (proptests over random shapes on every ISA
//! level the CPU can run, see `tests/kernels.rs`). SIMD versions are chosen at
//! run time from the CPU's features ([`Isa::detect`]); the repository never
//! builds with `-C target-cpu=native`, so one binary runs on any x86-64 and
//! uses AVX2+FMA or AVX-512 where present. [`set_max_isa`] (or the
//! environment variable `KILN_ISA=scalar|avx2|avx512|avx512vnni|avx512amx`) caps the
//! level, which is how the tests force the lower paths. The top level,
//! [`Isa::Avx512Amx`], adds Intel AMX tile matrix multiplies to the int8
//! GEMM ([`qgemm::qgemm_u8i8_avx512amx_32x32`]); it is only detected where
//! the CPU has AMX and Linux grants this process the tile state
//! ([`amx_usable`]).
//!
//! Kernel names encode op, dtype, ISA and register tile, e.g.
//! [`gemm::gemm_f32_avx512_12x32`]: 12 rows of A by 32 columns of B per
//! micro-tile.
//!
//! Layout: activations are NHWC (channels innermost), the layout in which a
//! 1x1 convolution is a plain GEMM and a depthwise convolution vectorizes
//! across channels. Weights are packed once, at load ([`gemm::PackedB`],
//! [`dwconv::PackedDw`]).
//!
//! ## Other architectures, and NEON / dotprod later
//!
//! Everything x86-specific (the `x86` submodules of the kernel files, their
//! re-exports and the few helpers only they call) is behind
//! `#[cfg(target_arch = "x86_64")]`, and every dispatch `match` on an [`Isa`]
//! ends in a `_ =>` arm that calls the scalar kernel. On any other target,
//! e.g. `aarch64-unknown-linux-gnu` (built and tested under qemu by
//! `scripts/test-aarch64`), [`Isa::detect`] returns [`Isa::Scalar`] and the
//! portable scalar kernels run (which the compiler may still vectorize for the
//! baseline: NEON is part of every aarch64 target). [`simd_features`] reports
//! what the CPU has all the same (`neon, dotprod` on a recent ARM core).
//!
//! ISA levels are per architecture: ordered, but only those of the target
//! compiled for can run. NEON (f32, 4 lanes, FMA) and dotprod (`sdot`/`udot`,
//! int8 dot products of 4 into i32: ARM's counterpart of VNNI) kernels slot
//! into the same dispatch:
//!
//! 1. levels `Isa::Neon` and `Isa::NeonDot` (names `neon`, `neondot`), placed
//!    after the x86 levels; [`Isa::detect`] gets a
//!    `#[cfg(target_arch = "aarch64")]` block like the x86 one, with
//!    `std::arch::is_aarch64_feature_detected!("neon")` and `("dotprod")`;
//! 2. [`Isa::runnable`] keeps only the current architecture's levels (today
//!    it takes every level up to the detected one, which would then include
//!    the x86 levels on ARM), and a cap ([`set_max_isa`], `KILN_ISA`) resolves
//!    to the highest runnable level not above it, so an x86 name caps an ARM
//!    CPU at `scalar` and an ARM name leaves an x86 CPU uncapped;
//! 3. kernels in `aarch64` submodules next to the `x86` ones, behind
//!    `#[cfg(target_arch = "aarch64")]` with
//!    `#[target_feature(enable = "neon")]` (`"neon,dotprod"` for int8),
//!    named as above (e.g. `gemm_f32_neon_8x12`); each dispatch `match` gets
//!    `#[cfg(target_arch = "aarch64")] Isa::Neon => ...` arms, and packing
//!    its widths ([`gemm::panel_width`] and the depthwise channel block). The
//!    x86-only helpers above widen their cfg to the architectures using them;
//! 4. `tests/kernels.rs` runs every property on every level of
//!    [`Isa::runnable`], so the new levels are covered once its independent
//!    `cpu_levels()` list detects them.
#![warn(missing_docs)]
// Kernel entry points take their geometry and pointers flat, by design.
#![allow(clippy::too_many_arguments)]

use std::sync::atomic::{AtomicU8, Ordering};

pub mod conv;
pub mod dwconv;
pub mod eltwise;
pub mod gemm;
pub mod layout;
pub mod pool;
pub mod qdwconv;
pub mod qeltwise;
pub mod qgemm;
pub mod qpool;
pub mod quant;
pub mod spmm;

/// An instruction-set level kernels can be built for, in increasing order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// Portable Rust (what the compiler makes of it for the baseline target).
    Scalar,
    /// x86-64 AVX2 + FMA (8 f32 lanes).
    Avx2,
    /// x86-64 AVX-512 F (16 f32 lanes, mask registers).
    Avx512,
    /// AVX-512 F + BW + VNNI (`vpdpbusd`: u8 x i8 dot products of 4 into
    /// i32). Float kernels are those of [`Isa::Avx512`] (see
    /// [`Isa::float_level`]); integer kernels use VNNI.
    Avx512Vnni,
    /// [`Isa::Avx512Vnni`] + Intel AMX (AMX-TILE, AMX-INT8: `tdpbusd`, the
    /// same u8 x i8 dot products of 4 into i32 on 16x64-byte tiles), usable
    /// by this process ([`amx_usable`]). Only the int8 GEMM uses the tiles
    /// (for the shapes where they beat VNNI); float kernels are
    /// [`Isa::Avx512`]'s ([`Isa::float_level`]), the other int8 kernels
    /// [`Isa::Avx512Vnni`]'s ([`Isa::int8_level`]).
    Avx512Amx,
}

impl Isa {
    /// All levels, lowest first.
    pub const ALL: [Isa; 5] = [
        Isa::Scalar,
        Isa::Avx2,
        Isa::Avx512,
        Isa::Avx512Vnni,
        Isa::Avx512Amx,
    ];

    /// Name as used in kernel names and `KILN_ISA`.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Avx512Vnni => "avx512vnni",
            Isa::Avx512Amx => "avx512amx",
        }
    }

    /// Parses a name of [`Isa::name`].
    pub fn from_name(s: &str) -> Option<Isa> {
        Isa::ALL
            .into_iter()
            .find(|i| i.name() == s.trim().to_ascii_lowercase())
    }

    /// The highest level this CPU supports (CPUID; for [`Isa::Avx512Amx`]
    /// also the operating system's permission, see [`amx_usable`]).
    pub fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                if std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vnni")
                {
                    return if amx_usable() {
                        Isa::Avx512Amx
                    } else {
                        Isa::Avx512Vnni
                    };
                }
                return Isa::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                return Isa::Avx2;
            }
        }
        Isa::Scalar
    }

    /// The level the f32 kernels use: [`Isa::Avx512Vnni`] and
    /// [`Isa::Avx512Amx`] add integer instructions only, so their float
    /// kernels are [`Isa::Avx512`]'s.
    pub fn float_level(self) -> Isa {
        match self {
            Isa::Avx512Vnni | Isa::Avx512Amx => Isa::Avx512,
            i => i,
        }
    }

    /// The level of the int8 kernels other than the GEMM (which has its own
    /// AMX kernel, see [`qgemm::qgemm_level`]): [`Isa::Avx512Amx`] runs
    /// them as [`Isa::Avx512Vnni`].
    pub fn int8_level(self) -> Isa {
        match self {
            Isa::Avx512Amx => Isa::Avx512Vnni,
            i => i,
        }
    }

    /// Levels this CPU can run, lowest first.
    pub fn runnable() -> Vec<Isa> {
        let top = Isa::detect();
        Isa::ALL.into_iter().filter(|&i| i <= top).collect()
    }

    fn code(self) -> u8 {
        self as u8 + 1
    }
    fn from_code(c: u8) -> Option<Isa> {
        Isa::ALL.get((c as usize).checked_sub(1)?).copied()
    }
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether this process may run Intel AMX int8 tile instructions: the CPU
/// reports AMX-TILE and AMX-INT8 (CPUID leaf 7, subleaf 0, EDX bits 24 and
/// 25), Linux granted the tile data state to the process
/// (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`, which Linux
/// requires before a process's first tile instruction; the permission holds
/// for all its threads) and XCR0 then enables XTILECFG and XTILEDATA (bits
/// 17 and 18). The request is made once per process, on the first call
/// (also made by [`Isa::detect`]). Always `false` off x86-64 Linux.
pub fn amx_usable() -> bool {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        static AMX: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AMX.get_or_init(amx::request)
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    {
        false
    }
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod amx {
    use std::arch::asm;
    use std::arch::x86_64::{__cpuid, __cpuid_count};

    /// `arch_prctl` request for permission to use an extended state component.
    const ARCH_REQ_XCOMP_PERM: u64 = 0x1023;
    /// XSAVE state component 18: the AMX tile data.
    const XFEATURE_XTILEDATA: u64 = 18;
    /// `arch_prctl`'s system call number on x86-64.
    const SYS_ARCH_PRCTL: u64 = 158;

    /// CPUID, then the permission request, then XCR0 (see [`super::amx_usable`]).
    pub(super) fn request() -> bool {
        // SAFETY: CPUID is always available on x86-64 (safe functions in
        // newer Rust, hence the allow).
        #[allow(unused_unsafe)]
        let (max_leaf, edx, ecx1) = unsafe { (__cpuid(0).eax, __cpuid_count(7, 0).edx, __cpuid(1).ecx) };
        if max_leaf < 7 {
            return false;
        }
        let osxsave = ecx1 >> 27 & 1 == 1;
        if edx >> 24 & 1 == 0 || edx >> 25 & 1 == 0 || !osxsave {
            return false;
        }
        let ret: i64;
        // SAFETY: arch_prctl with an integer request touches no memory of
        // this process; `syscall` clobbers rcx and r11.
        unsafe {
            asm!(
                "syscall",
                inlateout("rax") SYS_ARCH_PRCTL as i64 => ret,
                in("rdi") ARCH_REQ_XCOMP_PERM,
                in("rsi") XFEATURE_XTILEDATA,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack)
            );
        }
        if ret != 0 {
            return false;
        }
        let (lo, _hi): (u32, u32);
        // SAFETY: OSXSAVE is set, so XGETBV with ECX = 0 (XCR0) is valid.
        unsafe {
            asm!(
                "xgetbv",
                in("ecx") 0u32,
                out("eax") lo,
                out("edx") _hi,
                options(nomem, nostack, preserves_flags)
            );
        }
        lo >> 17 & 3 == 3
    }
}

/// SIMD features of this CPU that kernel levels are (or will be) built on,
/// as the `std::arch` detection macros name them: `avx2`, `fma`, `avx512f` on
/// x86-64; `neon`, `dotprod` on aarch64, which has no kernel level of its own
/// yet (there [`Isa::detect`] is [`Isa::Scalar`]); none elsewhere. For reports
/// and test output: kernels are chosen by [`Isa::detect`] and [`active_isa`].
pub fn simd_features() -> Vec<&'static str> {
    #[cfg(target_arch = "x86_64")]
    let found = [
        ("avx2", std::arch::is_x86_feature_detected!("avx2")),
        ("fma", std::arch::is_x86_feature_detected!("fma")),
        ("avx512f", std::arch::is_x86_feature_detected!("avx512f")),
    ];
    #[cfg(target_arch = "aarch64")]
    let found = [
        ("neon", std::arch::is_aarch64_feature_detected!("neon")),
        ("dotprod", std::arch::is_aarch64_feature_detected!("dotprod")),
    ];
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let found: [(&str, bool); 0] = [];
    found
        .into_iter()
        .filter(|&(_, on)| on)
        .map(|(name, _)| name)
        .collect()
}

/// 0 = not set (use `KILN_ISA` or no cap); else `Isa::code`.
static MAX_ISA: AtomicU8 = AtomicU8::new(0);

/// Caps the ISA level that [`active_isa`] returns (`None` removes the cap).
/// Kernel choices are made when a model is compiled, so set this before.
pub fn set_max_isa(max: Option<Isa>) {
    MAX_ISA.store(max.map_or(0, Isa::code), Ordering::Relaxed);
}

/// The level kernels use: [`Isa::detect`], capped by [`set_max_isa`] or else by
/// the environment variable `KILN_ISA` (`scalar`, `avx2`, `avx512`, `avx512vnni`,
/// `avx512amx`; an unknown value is ignored).
pub fn active_isa() -> Isa {
    let top = Isa::detect();
    let cap = Isa::from_code(MAX_ISA.load(Ordering::Relaxed))
        .or_else(|| std::env::var("KILN_ISA").ok().and_then(|s| Isa::from_name(&s)));
    match cap {
        Some(c) => c.min(top),
        None => top,
    }
}

/// An element-wise activation applied in a kernel's epilogue.
///
/// Semantics are those of the ONNX ops of the same name
/// (<https://onnx.ai/onnx/operators/>). `Clamp` covers `Relu`
/// (`[0, +inf]`), `Relu6`/`Clip(0, 6)` and any `Clip`; it is applied in
/// registers by every SIMD kernel. The others are applied by a scalar pass
/// over each freshly written tile (still in L1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    /// Identity.
    None,
    /// `min(max(x, min), max)` (NaN propagates).
    Clamp {
        /// Lower bound (`-inf` for none).
        min: f32,
        /// Upper bound (`+inf` for none).
        max: f32,
    },
    /// `x < 0 ? alpha * x : x`.
    LeakyRelu(f32),
    /// `max(0, min(1, alpha * x + beta))`.
    HardSigmoid {
        /// Slope.
        alpha: f32,
        /// Offset.
        beta: f32,
    },
    /// `x * max(0, min(1, x / 6 + 0.5))` (ONNX HardSwish, opset 14).
    HardSwish,
    /// `1 / (1 + exp(-x))`.
    Sigmoid,
    /// `x * sigmoid(x)` (SiLU, Swish).
    SiLU,
}

impl Activation {
    /// `max(x, 0)`.
    pub const RELU: Activation = Activation::Clamp {
        min: 0.0,
        max: f32::INFINITY,
    };

    /// The clamp bounds, when this activation is a clamp or the identity.
    pub fn clamp_bounds(self) -> Option<(f32, f32)> {
        match self {
            Activation::None => Some((f32::NEG_INFINITY, f32::INFINITY)),
            Activation::Clamp { min, max } => Some((min, max)),
            _ => None,
        }
    }

    /// Applies the activation to one value (the scalar definition).
    #[inline]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Activation::None => x,
            Activation::Clamp { min, max } => {
                if x.is_nan() {
                    x
                } else {
                    x.max(min).min(max)
                }
            }
            Activation::LeakyRelu(a) => {
                if x < 0.0 {
                    a * x
                } else {
                    x
                }
            }
            Activation::HardSigmoid { alpha, beta } => (alpha * x + beta).clamp(0.0, 1.0),
            Activation::HardSwish => x * (x / 6.0 + 0.5).clamp(0.0, 1.0),
            Activation::Sigmoid => sigmoid(x),
            Activation::SiLU => x * sigmoid(x),
        }
    }

    /// Applies the activation to every element of `xs` in place.
    pub fn apply_slice(self, xs: &mut [f32]) {
        if self == Activation::None {
            return;
        }
        for x in xs {
            *x = self.apply(*x);
        }
    }
}

/// Numerically stable logistic function.
#[inline]
fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// Splits `0..n` into `parts` nearly equal contiguous ranges (the first
/// `n % parts` one longer); part `i` of them.
pub fn split_range(n: usize, parts: usize, i: usize) -> std::ops::Range<usize> {
    let parts = parts.max(1);
    let base = n / parts;
    let rem = n % parts;
    let start = i * base + i.min(rem);
    let len = base + usize::from(i < rem);
    start.min(n)..(start + len).min(n)
}
