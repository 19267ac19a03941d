//! (rule family batchnorm; see rules/mod.rs for the run order)

use crate::Rule;

/// The rules of this family, in run order.
pub fn rules() -> Vec<Box<dyn Rule>> {
    vec![]
}
