//! The rewrite rules, by family, and their run order.
//!
//! Run order (each round of the pass manager runs every enabled rule in this
//! order; rounds repeat until nothing applies):
//! 1. [`cleanup`] early rules: Identity/Dropout elimination, no-op
//!    Reshape/Transpose/Cast/Pad removal, Transpose-pair cancellation;
//! 2. [`constant`]: Constant nodes to initializers, constant folding (incl.
//!    Shape of a static shape, and Shape/Gather/Concat/Reshape chains);
//! 3. [`cleanup`] common-subexpression elimination;
//! 4. [`batchnorm`]: BatchNormalization folded into Conv/ConvTranspose/Gemm/MatMul,
//!    a lone BatchNormalization to a per-channel Mul + Add;
//! 5. [`conv_fold`]: Pad folded into Conv/pool pads, per-output-channel Mul/Add
//!    folded into Conv, MatMul + Add to Gemm;
//! 6. [`fusion`]: activation fusion into Conv/Gemm/MatMul (kiln fused ops),
//!    residual Add as a FusedConv epilogue;
//! 7. [`cleanup`] late rules: dead nodes and unused initializers.

pub mod batchnorm;
pub mod cleanup;
pub mod constant;
pub mod conv_fold;
pub mod fusion;

use crate::Rule;

/// Every rule, in run order.
pub fn all_rules() -> Vec<Box<dyn Rule>> {
    let mut v: Vec<Box<dyn Rule>> = Vec::new();
    v.extend(cleanup::early());
    v.extend(constant::rules());
    v.extend(cleanup::cse());
    v.extend(batchnorm::rules());
    v.extend(conv_fold::rules());
    v.extend(fusion::rules());
    v.extend(cleanup::late());
    v
}

#[cfg(test)]
mod tests {
    #[test]
    fn rule_names_are_unique_kebab_case() {
        let rules = super::all_rules();
        let mut seen = std::collections::HashSet::new();
        for r in &rules {
            assert!(seen.insert(r.name()), "duplicate rule name {}", r.name());
            assert!(
                r.name()
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{}",
                r.name()
            );
        }
    }
}
