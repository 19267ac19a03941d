//! Dense, row-major tensors.

use crate::{bail, DType, Result};
use half::f16;

/// Storage of a tensor: one `Vec` per element type, row-major (C order).
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    /// `float`
    F32(Vec<f32>),
    /// `float16`
    F16(Vec<f16>),
    /// `int8`
    I8(Vec<i8>),
    /// `uint8`
    U8(Vec<u8>),
    /// `int32`
    I32(Vec<i32>),
    /// `int64`
    I64(Vec<i64>),
    /// `bool`
    Bool(Vec<bool>),
}

/// Applies `$body` to the inner `Vec` of a [`TensorData`] whatever its type,
/// binding it as `$v`. The body must produce the same type for every arm.
///
/// ```
/// # use kiln_ir::{Tensor, with_data};
/// let t = Tensor::from_vec(vec![2], vec![1i64, 2]).unwrap();
/// let n = with_data!(t.data(), v => v.len());
/// assert_eq!(n, 2);
/// ```
#[macro_export]
macro_rules! with_data {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            $crate::TensorData::F32($v) => $body,
            $crate::TensorData::F16($v) => $body,
            $crate::TensorData::I8($v) => $body,
            $crate::TensorData::U8($v) => $body,
            $crate::TensorData::I32($v) => $body,
            $crate::TensorData::I64($v) => $body,
            $crate::TensorData::Bool($v) => $body,
        }
    };
}

/// Like [`with_data!`] but the body yields a `Vec<T>` of the same element type,
/// re-wrapped into the same [`TensorData`] variant (for data-movement ops:
/// Transpose, Gather, Slice, Concat...).
#[macro_export]
macro_rules! map_data {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            $crate::TensorData::F32($v) => $crate::TensorData::F32($body),
            $crate::TensorData::F16($v) => $crate::TensorData::F16($body),
            $crate::TensorData::I8($v) => $crate::TensorData::I8($body),
            $crate::TensorData::U8($v) => $crate::TensorData::U8($body),
            $crate::TensorData::I32($v) => $crate::TensorData::I32($body),
            $crate::TensorData::I64($v) => $crate::TensorData::I64($body),
            $crate::TensorData::Bool($v) => $crate::TensorData::Bool($body),
        }
    };
}

impl TensorData {
    /// Element type of this storage.
    pub fn dtype(&self) -> DType {
        match self {
            TensorData::F32(_) => DType::F32,
            TensorData::F16(_) => DType::F16,
            TensorData::I8(_) => DType::I8,
            TensorData::U8(_) => DType::U8,
            TensorData::I32(_) => DType::I32,
            TensorData::I64(_) => DType::I64,
            TensorData::Bool(_) => DType::Bool,
        }
    }
    /// Number of elements.
    pub fn len(&self) -> usize {
        with_data!(self, v => v.len())
    }
    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// `n` zeros (false for Bool) of `dtype`.
    pub fn zeros(dtype: DType, n: usize) -> TensorData {
        match dtype {
            DType::F32 => TensorData::F32(vec![0.0; n]),
            DType::F16 => TensorData::F16(vec![f16::ZERO; n]),
            DType::I8 => TensorData::I8(vec![0; n]),
            DType::U8 => TensorData::U8(vec![0; n]),
            DType::I32 => TensorData::I32(vec![0; n]),
            DType::I64 => TensorData::I64(vec![0; n]),
            DType::Bool => TensorData::Bool(vec![false; n]),
        }
    }
}

/// A Rust element type that maps to one [`DType`].
pub trait Elem: Copy + Default + PartialEq + std::fmt::Debug + Send + Sync + 'static {
    /// The matching dtype.
    const DTYPE: DType;
    /// Wraps a vector into storage.
    fn wrap(v: Vec<Self>) -> TensorData;
    /// Borrows the storage as a slice of this type, if the dtype matches.
    fn slice(d: &TensorData) -> Option<&[Self]>;
    /// Mutably borrows the storage, if the dtype matches.
    fn slice_mut(d: &mut TensorData) -> Option<&mut [Self]>;
    /// Takes the storage's vector, if the dtype matches.
    fn unwrap(d: TensorData) -> Option<Vec<Self>>;
}

macro_rules! elem {
    ($t:ty, $var:ident) => {
        impl Elem for $t {
            const DTYPE: DType = DType::$var;
            fn wrap(v: Vec<Self>) -> TensorData {
                TensorData::$var(v)
            }
            fn slice(d: &TensorData) -> Option<&[Self]> {
                match d {
                    TensorData::$var(v) => Some(v),
                    _ => None,
                }
            }
            fn slice_mut(d: &mut TensorData) -> Option<&mut [Self]> {
                match d {
                    TensorData::$var(v) => Some(v),
                    _ => None,
                }
            }
            fn unwrap(d: TensorData) -> Option<Vec<Self>> {
                match d {
                    TensorData::$var(v) => Some(v),
                    _ => None,
                }
            }
        }
    };
}
elem!(f32, F32);
elem!(f16, F16);
elem!(i8, I8);
elem!(u8, U8);
elem!(i32, I32);
elem!(i64, I64);
elem!(bool, Bool);

/// A dense tensor: a shape (dims in elements, row-major) and its data.
/// A scalar has shape `[]` and one element.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: TensorData,
}

/// Number of elements of `shape`, or an error on overflow.
pub fn numel(shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| {
            crate::ir_err!(
                LimitExceeded,
                "shape {shape:?} has more elements than fit in usize"
            )
        })
}

impl Tensor {
    /// Builds a tensor; errors if `data.len()` is not the product of `shape`.
    pub fn new(shape: Vec<usize>, data: TensorData) -> Result<Tensor> {
        let n = numel(&shape)?;
        if n != data.len() {
            bail!(
                ShapeMismatch,
                "shape {:?} needs {} elements, data has {}",
                shape,
                n,
                data.len()
            );
        }
        Ok(Tensor { shape, data })
    }
    /// Builds a tensor from a typed vector.
    pub fn from_vec<T: Elem>(shape: Vec<usize>, v: Vec<T>) -> Result<Tensor> {
        Tensor::new(shape, T::wrap(v))
    }
    /// A rank-0 tensor holding `v`.
    pub fn scalar<T: Elem>(v: T) -> Tensor {
        Tensor {
            shape: vec![],
            data: T::wrap(vec![v]),
        }
    }
    /// Zeros of `dtype` and `shape`.
    pub fn zeros(dtype: DType, shape: Vec<usize>) -> Result<Tensor> {
        let n = numel(&shape)?;
        Ok(Tensor {
            shape,
            data: TensorData::zeros(dtype, n),
        })
    }
    /// Dimensions, outermost first.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    /// Rank (number of dimensions).
    pub fn rank(&self) -> usize {
        self.shape.len()
    }
    /// Element type.
    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }
    /// True when the tensor has no elements (some dim is 0).
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
    /// Size of the data in bytes.
    pub fn byte_len(&self) -> usize {
        self.len() * self.dtype().size_of()
    }
    /// The storage.
    pub fn data(&self) -> &TensorData {
        &self.data
    }
    /// The storage, mutably.
    pub fn data_mut(&mut self) -> &mut TensorData {
        &mut self.data
    }
    /// Splits into shape and storage.
    pub fn into_parts(self) -> (Vec<usize>, TensorData) {
        (self.shape, self.data)
    }
    /// Typed view of the elements; errors if the dtype is not `T`'s.
    pub fn as_slice<T: Elem>(&self) -> Result<&[T]> {
        T::slice(&self.data).ok_or_else(|| {
            crate::ir_err!(
                TypeMismatch,
                "expected a {} tensor, got {}",
                T::DTYPE,
                self.dtype()
            )
        })
    }
    /// Typed mutable view of the elements.
    pub fn as_slice_mut<T: Elem>(&mut self) -> Result<&mut [T]> {
        let dt = self.dtype();
        T::slice_mut(&mut self.data)
            .ok_or_else(|| crate::ir_err!(TypeMismatch, "expected a {} tensor, got {}", T::DTYPE, dt))
    }
    /// Takes the elements as a typed vector.
    pub fn into_vec<T: Elem>(self) -> Result<Vec<T>> {
        let dt = self.dtype();
        T::unwrap(self.data)
            .ok_or_else(|| crate::ir_err!(TypeMismatch, "expected a {} tensor, got {}", T::DTYPE, dt))
    }
    /// Same data, new shape (same element count).
    pub fn reshape(self, shape: Vec<usize>) -> Result<Tensor> {
        Tensor::new(shape, self.data)
    }
    /// Integer contents as i64 (for shape, axes, indices inputs); accepts
    /// int8/uint8/int32/int64/bool.
    pub fn to_i64_vec(&self) -> Result<Vec<i64>> {
        Ok(match &self.data {
            TensorData::I64(v) => v.clone(),
            TensorData::I32(v) => v.iter().map(|&x| x as i64).collect(),
            TensorData::I8(v) => v.iter().map(|&x| x as i64).collect(),
            TensorData::U8(v) => v.iter().map(|&x| x as i64).collect(),
            TensorData::Bool(v) => v.iter().map(|&x| x as i64).collect(),
            _ => bail!(TypeMismatch, "expected an integer tensor, got {}", self.dtype()),
        })
    }
    /// Contents converted to f32 (any dtype).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        match &self.data {
            TensorData::F32(v) => v.clone(),
            TensorData::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
            TensorData::I8(v) => v.iter().map(|&x| x as f32).collect(),
            TensorData::U8(v) => v.iter().map(|&x| x as f32).collect(),
            TensorData::I32(v) => v.iter().map(|&x| x as f32).collect(),
            TensorData::I64(v) => v.iter().map(|&x| x as f32).collect(),
            TensorData::Bool(v) => v.iter().map(|&x| x as u8 as f32).collect(),
        }
    }
    /// Contents converted to f64 (any dtype).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        match &self.data {
            TensorData::I64(v) => v.iter().map(|&x| x as f64).collect(),
            _ => self.to_f32_vec().into_iter().map(|x| x as f64).collect(),
        }
    }
    /// Element-wise conversion to `to`, with ONNX `Cast` semantics: float to
    /// int truncates toward zero (saturating in Rust's `as`), to bool is `x != 0`.
    pub fn cast(&self, to: DType) -> Tensor {
        if to == self.dtype() {
            return self.clone();
        }
        let data = match (&self.data, to) {
            // Exact integer paths first, so large i64 values survive.
            (TensorData::I64(v), DType::I32) => TensorData::I32(v.iter().map(|&x| x as i32).collect()),
            (TensorData::I64(v), DType::I8) => TensorData::I8(v.iter().map(|&x| x as i8).collect()),
            (TensorData::I64(v), DType::U8) => TensorData::U8(v.iter().map(|&x| x as u8).collect()),
            (TensorData::I64(v), DType::Bool) => TensorData::Bool(v.iter().map(|&x| x != 0).collect()),
            (TensorData::I32(v), DType::I64) => TensorData::I64(v.iter().map(|&x| x as i64).collect()),
            (TensorData::I8(v), DType::I64) => TensorData::I64(v.iter().map(|&x| x as i64).collect()),
            (TensorData::U8(v), DType::I64) => TensorData::I64(v.iter().map(|&x| x as i64).collect()),
            (TensorData::Bool(v), DType::I64) => TensorData::I64(v.iter().map(|&x| x as i64).collect()),
            (TensorData::I64(v), DType::F32) => TensorData::F32(v.iter().map(|&x| x as f32).collect()),
            (TensorData::I64(v), DType::F16) => {
                TensorData::F16(v.iter().map(|&x| f16::from_f32(x as f32)).collect())
            }
            (d, to) => {
                let f: Vec<f64> = match d {
                    TensorData::F32(v) => v.iter().map(|&x| x as f64).collect(),
                    TensorData::F16(v) => v.iter().map(|x| x.to_f64()).collect(),
                    TensorData::I8(v) => v.iter().map(|&x| x as f64).collect(),
                    TensorData::U8(v) => v.iter().map(|&x| x as f64).collect(),
                    TensorData::I32(v) => v.iter().map(|&x| x as f64).collect(),
                    TensorData::I64(v) => v.iter().map(|&x| x as f64).collect(),
                    TensorData::Bool(v) => v.iter().map(|&x| x as u8 as f64).collect(),
                };
                match to {
                    DType::F32 => TensorData::F32(f.iter().map(|&x| x as f32).collect()),
                    DType::F16 => TensorData::F16(f.iter().map(|&x| f16::from_f64(x)).collect()),
                    DType::I8 => TensorData::I8(f.iter().map(|&x| x as i8).collect()),
                    DType::U8 => TensorData::U8(f.iter().map(|&x| x as u8).collect()),
                    DType::I32 => TensorData::I32(f.iter().map(|&x| x as i32).collect()),
                    DType::I64 => TensorData::I64(f.iter().map(|&x| x as i64).collect()),
                    DType::Bool => TensorData::Bool(f.iter().map(|&x| x != 0.0).collect()),
                }
            }
        };
        Tensor {
            shape: self.shape.clone(),
            data,
        }
    }
}

/// Row-major strides (in elements) of `shape`.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_checks_element_count() {
        assert!(Tensor::from_vec(vec![2, 3], vec![0f32; 5]).is_err());
        let t = Tensor::from_vec(vec![2, 3], vec![0f32; 6]).unwrap();
        assert_eq!(t.byte_len(), 24);
    }

    #[test]
    fn cast_float_to_int_truncates() {
        let t = Tensor::from_vec(vec![3], vec![1.7f32, -1.7, 0.0]).unwrap();
        assert_eq!(t.cast(DType::I64).into_vec::<i64>().unwrap(), vec![1, -1, 0]);
        assert_eq!(
            t.cast(DType::Bool).into_vec::<bool>().unwrap(),
            vec![true, true, false]
        );
    }

    #[test]
    fn strides_row_major() {
        assert_eq!(strides(&[2, 3, 4]), vec![12, 4, 1]);
        assert_eq!(strides(&[]), Vec::<usize>::new());
    }
}
