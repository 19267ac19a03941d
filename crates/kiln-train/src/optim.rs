//! AdamW and the one-cycle learning-rate schedule, on host `f32` vectors.
//!
//! The optimizer state lives beside the parameters (plain vectors, saved in
//! checkpoints as they are), so a resumed run continues bit for bit.
//!
//! - AdamW: Loshchilov & Hutter, "Decoupled Weight Decay Regularization"
//!   (ICLR 2019), in PyTorch's `torch.optim.AdamW` form: `p -= lr * wd * p`,
//!   then Adam with bias-corrected moments (`step_size = lr / (1 - b1^t)`,
//!   `denom = sqrt(v) / sqrt(1 - b2^t) + eps`).
//! - One-cycle: Smith & Topin, "Super-Convergence" (2018), in PyTorch's
//!   `OneCycleLR` form with its defaults: warm-up over 30% of the steps from
//!   `max_lr / 25` to `max_lr` (cosine), then cosine annealing to
//!   `max_lr / 25 / 1e4`; `beta1` cycles inversely between 0.95 and 0.85.

use std::f64::consts::PI;

/// AdamW hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    /// Second-moment decay `beta2` (0.999).
    pub beta2: f64,
    /// Denominator epsilon (1e-8).
    pub eps: f64,
    /// Decoupled weight decay (PyTorch default 1e-2; kiln's fit uses 1e-4).
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 1e-4,
        }
    }
}

/// AdamW state of one parameter tensor: first and second moments.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Moments {
    /// First moment `m`.
    pub m: Vec<f32>,
    /// Second moment `v`.
    pub v: Vec<f32>,
}

/// The per-step settings of an AdamW update.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepAt {
    /// 1-based step number (bias correction).
    pub t: u64,
    /// Learning rate.
    pub lr: f64,
    /// First-moment decay `beta1` (cycled by [`OneCycle`]).
    pub beta1: f64,
}

/// Applies one AdamW update to `p` with gradient `g` at step `at`. `decay`
/// selects whether weight decay applies to this tensor.
pub fn adamw_step(cfg: &AdamWConfig, p: &mut [f32], g: &[f32], st: &mut Moments, at: StepAt, decay: bool) {
    let StepAt { t, lr, beta1 } = at;
    if st.m.len() != p.len() {
        st.m = vec![0.0; p.len()];
        st.v = vec![0.0; p.len()];
    }
    let bc1 = 1.0 - beta1.powi(t as i32);
    let bc2 = 1.0 - cfg.beta2.powi(t as i32);
    let step_size = (lr / bc1) as f32;
    let bc2_sqrt = bc2.sqrt() as f32;
    let shrink = if decay {
        (1.0 - lr * cfg.weight_decay) as f32
    } else {
        1.0
    };
    let (b1, b2, eps) = (beta1 as f32, cfg.beta2 as f32, cfg.eps as f32);
    for i in 0..p.len() {
        let gi = g[i];
        let m = b1 * st.m[i] + (1.0 - b1) * gi;
        let v = b2 * st.v[i] + (1.0 - b2) * gi * gi;
        st.m[i] = m;
        st.v[i] = v;
        let denom = v.sqrt() / bc2_sqrt + eps;
        p[i] = p[i] * shrink - step_size * m / denom;
    }
}

/// PyTorch's `OneCycleLR` (two phases, cosine annealing, momentum cycling).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OneCycle {
    /// Peak learning rate.
    pub max_lr: f64,
    /// Total number of optimizer steps.
    pub total_steps: u64,
    /// Fraction of the steps spent warming up (0.3).
    pub pct_start: f64,
    /// `initial_lr = max_lr / div_factor` (25).
    pub div_factor: f64,
    /// `min_lr = initial_lr / final_div_factor` (1e4).
    pub final_div_factor: f64,
    /// Lowest `beta1`, reached at the peak learning rate (0.85).
    pub base_momentum: f64,
    /// Highest `beta1`, at the start and the end (0.95).
    pub max_momentum: f64,
}

impl OneCycle {
    /// The schedule with PyTorch's defaults.
    pub fn new(max_lr: f64, total_steps: u64) -> OneCycle {
        OneCycle {
            max_lr,
            total_steps,
            pct_start: 0.3,
            div_factor: 25.0,
            final_div_factor: 1e4,
            base_momentum: 0.85,
            max_momentum: 0.95,
        }
    }

    /// `(learning rate, beta1)` for 0-based step `i`.
    pub fn at(&self, i: u64) -> (f64, f64) {
        let cos = |start: f64, end: f64, pct: f64| end + (start - end) / 2.0 * ((PI * pct).cos() + 1.0);
        let initial = self.max_lr / self.div_factor;
        let min = initial / self.final_div_factor;
        let warm_end = self.pct_start * self.total_steps as f64 - 1.0;
        let last = self.total_steps.saturating_sub(1) as f64;
        let i = i as f64;
        if i <= warm_end {
            let pct = if warm_end > 0.0 { i / warm_end } else { 1.0 };
            (
                cos(initial, self.max_lr, pct),
                cos(self.max_momentum, self.base_momentum, pct),
            )
        } else {
            let span = last - warm_end;
            let pct = if span > 0.0 {
                ((i - warm_end) / span).min(1.0)
            } else {
                1.0
            };
            (
                cos(self.max_lr, min, pct),
                cos(self.base_momentum, self.max_momentum, pct),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_cycle_matches_pytorch_endpoints() {
        let s = OneCycle::new(4e-3, 1000);
        let (lr0, b0) = s.at(0);
        assert!((lr0 - 4e-3 / 25.0).abs() < 1e-12 && (b0 - 0.95).abs() < 1e-12);
        let (lrp, bp) = s.at(299);
        assert!((lrp - 4e-3).abs() < 1e-12 && (bp - 0.85).abs() < 1e-12);
        let (lre, be) = s.at(999);
        assert!((lre - 4e-3 / 25.0 / 1e4).abs() < 1e-15 && (be - 0.95).abs() < 1e-12);
    }

    #[test]
    fn adamw_first_step_moves_by_lr() {
        // Step 1: m/(1-b1) = g, sqrt(v/(1-b2)) = |g|, so the update is lr * sign(g).
        let cfg = AdamWConfig {
            weight_decay: 0.0,
            ..Default::default()
        };
        let mut p = vec![1.0f32, -2.0];
        let mut st = Moments::default();
        adamw_step(
            &cfg,
            &mut p,
            &[0.5, -3.0],
            &mut st,
            StepAt {
                t: 1,
                lr: 0.1,
                beta1: 0.9,
            },
            true,
        );
        assert!((p[0] - 0.9).abs() < 1e-6 && (p[1] + 1.9).abs() < 1e-6, "{p:?}");
    }
}
