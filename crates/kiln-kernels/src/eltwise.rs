//! Element-wise kernels: binary ops with an activation epilogue, channel
//! broadcasts (NHWC `[n, hw, c] op [n, c]`, the squeeze-and-excitation
//! scale) and activations in place.
//!
//! One body per op, built for each ISA level by target-feature
//! multiversioning and dispatched at run time; element-wise results are
//! identical on every level (each output is one rounding of the same formula).

use crate::{Activation, Isa};
use std::ops::Range;

/// A binary element-wise operation (ONNX `Add`, `Sub`, `Mul`, `Div`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    /// `a + b`.
    Add,
    /// `a - b`.
    Sub,
    /// `a * b`.
    Mul,
    /// `a / b`.
    Div,
}

impl BinOp {
    #[inline(always)]
    fn f(self, a: f32, b: f32) -> f32 {
        match self {
            BinOp::Add => a + b,
            BinOp::Sub => a - b,
            BinOp::Mul => a * b,
            BinOp::Div => a / b,
        }
    }
}

macro_rules! multiversion {
    ($(#[$m:meta])* $name:ident, $scalar:ident, $body:ident, ($($arg:ident: $ty:ty),*)) => {
        $(#[$m])*
        ///
        /// # Safety
        /// Pointers valid for the given ranges; `y` may alias an input exactly.
        pub unsafe fn $name(isa: Isa, $($arg: $ty),*) {
            match isa.float_level() {
                #[cfg(target_arch = "x86_64")]
                Isa::Avx512 => {
                    #[target_feature(enable = "avx512f")]
                    unsafe fn v($($arg: $ty),*) { $body($($arg),*) }
                    v($($arg),*)
                }
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => {
                    #[target_feature(enable = "avx2,fma")]
                    unsafe fn v($($arg: $ty),*) { $body($($arg),*) }
                    v($($arg),*)
                }
                _ => $scalar($($arg),*),
            }
        }
        /// Scalar reference (the portable build of the same body).
        ///
        /// # Safety
        /// As the dispatching function.
        pub unsafe fn $scalar($($arg: $ty),*) {
            $body($($arg),*)
        }
    };
}

#[inline(always)]
unsafe fn binary_body(
    op: BinOp,
    a: *const f32,
    b: *const f32,
    y: *mut f32,
    act: Activation,
    range: Range<usize>,
) {
    let (lo, hi) = act.clamp_bounds().unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
    let clamp = act.clamp_bounds().is_some();
    for i in range {
        let v = op.f(*a.add(i), *b.add(i));
        *y.add(i) = if clamp { clamp_nan(v, lo, hi) } else { act.apply(v) };
    }
}

/// `min(max(v, lo), hi)`, NaN propagating; branch-free so it vectorizes.
#[inline(always)]
fn clamp_nan(v: f32, lo: f32, hi: f32) -> f32 {
    let x = if v < lo { lo } else { v };
    if x > hi {
        hi
    } else {
        x
    }
}

multiversion!(
    /// `y[i] = act(a[i] op b[i])` for `i` in `range` (same shapes).
    binary_f32, binary_f32_scalar, binary_body,
    (op: BinOp, a: *const f32, b: *const f32, y: *mut f32, act: Activation, range: Range<usize>)
);

#[inline(always)]
unsafe fn channel_body(
    op: BinOp,
    x: *const f32,
    s: *const f32,
    y: *mut f32,
    hw: usize,
    c: usize,
    act: Activation,
    batch: Range<usize>,
) {
    for b in batch {
        let sv = std::slice::from_raw_parts(s.add(b * c), c);
        for p in 0..hw {
            let o = (b * hw + p) * c;
            if act == Activation::None {
                // The common case (a BatchNormalization scale or shift): no
                // per-element activation dispatch, so the loop vectorizes.
                for (j, sj) in sv.iter().enumerate() {
                    *y.add(o + j) = op.f(*x.add(o + j), *sj);
                }
            } else {
                for (j, sj) in sv.iter().enumerate() {
                    *y.add(o + j) = act.apply(op.f(*x.add(o + j), *sj));
                }
            }
        }
    }
}

multiversion!(
    /// `y[n, p, c] = act(x[n, p, c] op s[n, c])` for batch items `batch`
    /// (NHWC with a per-channel operand, e.g. the squeeze-and-excitation scale).
    channel_f32, channel_f32_scalar, channel_body,
    (op: BinOp, x: *const f32, s: *const f32, y: *mut f32, hw: usize, c: usize, act: Activation, batch: Range<usize>)
);

#[inline(always)]
unsafe fn scalar_body(
    op: BinOp,
    x: *const f32,
    s: f32,
    scalar_first: bool,
    y: *mut f32,
    range: Range<usize>,
) {
    for i in range {
        let v = *x.add(i);
        *y.add(i) = if scalar_first { op.f(s, v) } else { op.f(v, s) };
    }
}

multiversion!(
    /// `y[i] = x[i] op s` (or `s op x[i]` with `scalar_first`) for `i` in
    /// `range`: a binary op with a one-element operand (ONNX broadcasting),
    /// in any layout.
    scalar_f32, scalar_f32_scalar, scalar_body,
    (op: BinOp, x: *const f32, s: f32, scalar_first: bool, y: *mut f32, range: Range<usize>)
);

#[inline(always)]
unsafe fn affine_body(x: *const f32, a: f32, b: f32, y: *mut f32, range: Range<usize>) {
    for i in range {
        // Two roundings, as the unfused `Mul` then `Add` (no contraction to FMA).
        let t = *x.add(i) * a;
        *y.add(i) = t + b;
    }
}

multiversion!(
    /// `y[i] = (x[i] * a) + b` for `i` in `range`, rounded after the multiply
    /// and after the add (exactly a scalar `Mul` followed by a scalar `Add`).
    affine_f32, affine_f32_scalar, affine_body,
    (x: *const f32, a: f32, b: f32, y: *mut f32, range: Range<usize>)
);

#[inline(always)]
unsafe fn act_body(act: Activation, x: *const f32, y: *mut f32, range: Range<usize>) {
    let clamp = act.clamp_bounds();
    for i in range {
        let v = *x.add(i);
        *y.add(i) = match clamp {
            Some((lo, hi)) => clamp_nan(v, lo, hi),
            None => act.apply(v),
        };
    }
}

multiversion!(
    /// `y[i] = act(x[i])` for `i` in `range`.
    activation_f32, activation_f32_scalar, act_body,
    (act: Activation, x: *const f32, y: *mut f32, range: Range<usize>)
);
