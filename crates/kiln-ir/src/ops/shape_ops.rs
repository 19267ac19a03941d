//! Shape and data-movement ops: reference evaluation and static type/shape
//! inference of Reshape, Transpose, Concat, Split, Slice, Squeeze, Unsqueeze,
//! Flatten, Shape, Gather, Cast, CastLike, Constant, Identity, Dropout, Pad,
//! ConstantOfShape, Expand, Tile and Range, for every [`crate::DType`], following
//! the ONNX operator specification (<https://onnx.ai/onnx/operators/>) at the
//! model's default-domain opset (6..=25).
//!
//! Data-movement ops are generic over all element types: they compute, per
//! output axis, which input offset each output coordinate reads (or a fill
//! value, for Pad), and copy through [`crate::map_data!`].
//!
//! Sizes coming from a model (shape inputs, pads, repeats...) are checked:
//! outputs larger than [`MAX_ELEMS`] elements fail with
//! [`crate::ErrorKind::LimitExceeded`]; indices out of range are errors, never
//! panics.

use super::OpDef;

mod common;
mod layout;
mod pad;
mod select;
#[cfg(test)]
mod tests;

pub use common::{MAX_ELEMS, MAX_RANK};
pub(crate) use layout::dtype_from_code;

/// Ops of this family.
pub(crate) const OPS: &[OpDef] = &[
    op("Reshape", 1, layout::reshape_infer, layout::reshape_eval),
    op("Flatten", 1, layout::flatten_infer, layout::flatten_eval),
    op("Squeeze", 1, layout::squeeze_infer, layout::squeeze_eval),
    op("Unsqueeze", 1, layout::unsqueeze_infer, layout::unsqueeze_eval),
    op("Transpose", 1, layout::transpose_infer, layout::transpose_eval),
    op("Identity", 1, layout::identity_infer, layout::identity_eval),
    op("Dropout", 1, layout::dropout_infer, layout::dropout_eval),
    op("Shape", 1, layout::shape_infer, layout::shape_eval),
    op("Cast", 1, layout::cast_infer, layout::cast_eval),
    op("CastLike", 15, layout::cast_like_infer, layout::cast_like_eval),
    op("Constant", 1, layout::constant_infer, layout::constant_eval),
    op("Concat", 1, select::concat_infer, select::concat_eval),
    op("Split", 1, select::split_infer, select::split_eval),
    op("Slice", 1, select::slice_infer, select::slice_eval),
    op("Gather", 1, select::gather_infer, select::gather_eval),
    op("Pad", 1, pad::pad_infer, pad::pad_eval),
    op("Tile", 1, pad::tile_infer, pad::tile_eval),
    op("Expand", 8, pad::expand_infer, pad::expand_eval),
    op(
        "ConstantOfShape",
        9,
        pad::constant_of_shape_infer,
        pad::constant_of_shape_eval,
    ),
    op("Range", 11, pad::range_infer, pad::range_eval),
];

use super::op_def as op;
