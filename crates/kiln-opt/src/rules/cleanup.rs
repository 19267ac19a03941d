//! Cleanup rules: pass-through and no-op removal, Transpose pairs, CSE, dead code.

use crate::Rule;

/// Early cleanups (run first).
pub fn early() -> Vec<Box<dyn Rule>> {
    vec![]
}

/// Common-subexpression elimination.
pub fn cse() -> Vec<Box<dyn Rule>> {
    vec![]
}

/// Late cleanups: dead nodes, unused initializers (run last).
pub fn late() -> Vec<Box<dyn Rule>> {
    vec![]
}
