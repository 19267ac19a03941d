//! (op family; see the module list in `ops/mod.rs`)

use super::OpDef;

/// Ops of this family.
pub(crate) const OPS: &[OpDef] = &[];
