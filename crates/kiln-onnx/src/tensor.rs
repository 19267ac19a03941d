//! `TensorProto` <-> [`Tensor`]: element types, raw (little-endian) and typed
//! data fields, external data, and the size limits.

use crate::error::OnnxError;
use crate::external;
use crate::import::Loader;
use crate::proto::tensor_proto::{DataLocation, DataType};
use crate::proto::TensorProto;
use kiln_ir::{ir_err, DType, Tensor, TensorData};

/// ONNX `TensorProto.DataType` codes of the element types kiln supports.
const DTYPE_CODES: [(DType, DataType); 7] = [
    (DType::F32, DataType::Float),
    (DType::F16, DataType::Float16),
    (DType::I8, DataType::Int8),
    (DType::U8, DataType::Uint8),
    (DType::I32, DataType::Int32),
    (DType::I64, DataType::Int64),
    (DType::Bool, DataType::Bool),
];

/// The kiln element type of ONNX data type `code`, if kiln supports it.
pub(crate) fn dtype_from_onnx(code: i32) -> Option<DType> {
    DTYPE_CODES
        .iter()
        .find(|(_, c)| *c as i32 == code)
        .map(|(d, _)| *d)
}

/// The ONNX data type code of `dtype`.
pub(crate) fn dtype_to_onnx(dtype: DType) -> i32 {
    let code = match dtype {
        DType::F32 => DataType::Float,
        DType::F16 => DataType::Float16,
        DType::I8 => DataType::Int8,
        DType::U8 => DataType::Uint8,
        DType::I32 => DataType::Int32,
        DType::I64 => DataType::Int64,
        DType::Bool => DataType::Bool,
    };
    code as i32
}

/// ONNX name of data type `code` (`DOUBLE`, `STRING`...), for messages.
pub(crate) fn onnx_type_name(code: i32) -> String {
    match DataType::try_from(code) {
        Ok(t) => t.as_str_name().to_string(),
        Err(_) => format!("unknown data type {code}"),
    }
}

/// Decodes one tensor. `what` names it in messages (`initializer 'w'`).
///
/// The data fields of `tp` are taken (left empty), so that a large model's
/// protobuf bytes are freed tensor by tensor as they are converted.
///
/// Limits (element count, bytes per tensor, bytes in all) are checked from
/// the dims before any data is read or allocated; data whose length does not
/// match the dims is an `InvalidModel` error.
pub(crate) fn tensor_from_proto(
    tp: &mut TensorProto,
    what: &str,
    ld: &mut Loader,
) -> Result<Tensor, OnnxError> {
    let code = tp.data_type.unwrap_or(0);
    let dtype = dtype_from_onnx(code).ok_or_else(|| {
        ir_err!(
            UnsupportedOp,
            "{what} has element type {}, which kiln does not support",
            onnx_type_name(code)
        )
    })?;
    if tp.dims.len() > ld.opts.max_rank {
        return Err(ir_err!(
            LimitExceeded,
            "{what} has {} dims, over the limit of {} (max_rank)",
            tp.dims.len(),
            ld.opts.max_rank
        )
        .into());
    }
    let mut shape = Vec::with_capacity(tp.dims.len());
    let mut n: u64 = 1;
    for &d in &tp.dims {
        if d < 0 {
            return Err(ir_err!(InvalidModel, "{what} has a negative dim in {:?}", tp.dims).into());
        }
        let du = d as u64;
        n = n.checked_mul(du).ok_or_else(|| {
            ir_err!(
                LimitExceeded,
                "{what} has dims {:?}, whose element count overflows",
                tp.dims
            )
        })?;
        shape.push(
            usize::try_from(du)
                .map_err(|_| ir_err!(LimitExceeded, "{what} has dim {d}, which does not fit in memory"))?,
        );
    }
    let opts = ld.opts;
    if n > opts.max_tensor_elements {
        return Err(ir_err!(
            LimitExceeded,
            "{what} has dims {:?} = {n} elements, over the limit of {}",
            tp.dims,
            opts.max_tensor_elements
        )
        .into());
    }
    let bytes = n.checked_mul(dtype.size_of() as u64).ok_or_else(|| {
        ir_err!(
            LimitExceeded,
            "{what} has dims {:?}, whose size overflows",
            tp.dims
        )
    })?;
    if bytes > opts.max_tensor_bytes {
        return Err(ir_err!(
            LimitExceeded,
            "{what} is {bytes} bytes, over the per-tensor limit of {}",
            opts.max_tensor_bytes
        )
        .into());
    }
    ld.account(bytes, what)?;
    let n = usize::try_from(n).map_err(|_| {
        ir_err!(
            LimitExceeded,
            "{what} has {n} elements, which do not fit in memory"
        )
    })?;
    if tp.segment.is_some() {
        return Err(ir_err!(UnsupportedOp, "{what} is segmented, which kiln does not support").into());
    }

    let external = tp.data_location == Some(DataLocation::External as i32);
    let data = if external {
        let raw = external::read_external(tp, what, ld.base_dir, bytes)?;
        decode_raw(dtype, &raw, n, what)?
    } else if let Some(raw) = tp.raw_data.take() {
        decode_raw(dtype, &raw, n, what)?
    } else {
        decode_typed(tp, dtype, n, what)?
    };
    Ok(Tensor::new(shape, data)?)
}

fn le<const N: usize>(c: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(c);
    a
}

/// Decodes little-endian `raw` bytes of `n` elements of `dtype`.
fn decode_raw(dtype: DType, raw: &[u8], n: usize, what: &str) -> Result<TensorData, OnnxError> {
    let need = n.checked_mul(dtype.size_of());
    if need != Some(raw.len()) {
        return Err(ir_err!(
            InvalidModel,
            "{what} has {} bytes of data, but {n} {} elements need {}",
            raw.len(),
            dtype,
            need.map(|b| b.to_string()).unwrap_or_else(|| "more".into())
        )
        .into());
    }
    Ok(match dtype {
        DType::F32 => TensorData::F32(raw.chunks_exact(4).map(|c| f32::from_le_bytes(le(c))).collect()),
        DType::F16 => TensorData::F16(
            raw.chunks_exact(2)
                .map(|c| half::f16::from_bits(u16::from_le_bytes(le(c))))
                .collect(),
        ),
        DType::I8 => TensorData::I8(raw.iter().map(|&b| b as i8).collect()),
        DType::U8 => TensorData::U8(raw.to_vec()),
        DType::I32 => TensorData::I32(raw.chunks_exact(4).map(|c| i32::from_le_bytes(le(c))).collect()),
        DType::I64 => TensorData::I64(raw.chunks_exact(8).map(|c| i64::from_le_bytes(le(c))).collect()),
        DType::Bool => TensorData::Bool(raw.iter().map(|&b| b != 0).collect()),
    })
}

/// Decodes the typed repeated fields: `float_data` (float), `int64_data`
/// (int64), and `int32_data`, which carries int32 and, one element per entry,
/// float16 (the bit pattern), int8, uint8 and bool (per onnx.proto).
fn decode_typed(tp: &mut TensorProto, dtype: DType, n: usize, what: &str) -> Result<TensorData, OnnxError> {
    let (len, field) = match dtype {
        DType::F32 => (tp.float_data.len(), "float_data"),
        DType::I64 => (tp.int64_data.len(), "int64_data"),
        _ => (tp.int32_data.len(), "int32_data"),
    };
    if len != n {
        return Err(ir_err!(
            InvalidModel,
            "{what} has {len} values in {field}, but its dims need {n} {dtype} elements"
        )
        .into());
    }
    let range = |lo: i32, hi: i32| -> Result<(), OnnxError> {
        match tp.int32_data.iter().find(|&&v| v < lo || v > hi) {
            Some(v) => Err(ir_err!(
                InvalidModel,
                "{what} holds {v} in int32_data, out of range for {dtype}"
            )
            .into()),
            None => Ok(()),
        }
    };
    let i32s = &tp.int32_data;
    Ok(match dtype {
        DType::F32 => TensorData::F32(std::mem::take(&mut tp.float_data)),
        DType::I64 => TensorData::I64(std::mem::take(&mut tp.int64_data)),
        DType::I32 => TensorData::I32(std::mem::take(&mut tp.int32_data)),
        DType::F16 => {
            range(0, u16::MAX as i32)?;
            TensorData::F16(i32s.iter().map(|&v| half::f16::from_bits(v as u16)).collect())
        }
        DType::I8 => {
            range(i8::MIN as i32, i8::MAX as i32)?;
            TensorData::I8(i32s.iter().map(|&v| v as i8).collect())
        }
        DType::U8 => {
            range(0, u8::MAX as i32)?;
            TensorData::U8(i32s.iter().map(|&v| v as u8).collect())
        }
        DType::Bool => {
            range(0, 1)?;
            TensorData::Bool(i32s.iter().map(|&v| v != 0).collect())
        }
    })
}

/// Little-endian bytes of elements, for `raw_data`.
trait ToLe: Copy {
    fn put(self, out: &mut Vec<u8>);
}
macro_rules! to_le {
    ($($t:ty),*) => {$(
        impl ToLe for $t {
            fn put(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    )*};
}
to_le!(f32, half::f16, i8, u8, i32, i64);
impl ToLe for bool {
    fn put(self, out: &mut Vec<u8>) {
        out.push(self as u8);
    }
}

fn raw_bytes<T: ToLe>(v: &[T], size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len() * size);
    for &x in v {
        x.put(&mut out);
    }
    out
}

/// Encodes a tensor as a `TensorProto` with `raw_data` (little-endian).
pub(crate) fn tensor_to_proto(name: &str, t: &Tensor) -> TensorProto {
    let size = t.dtype().size_of();
    let raw = kiln_ir::with_data!(t.data(), v => raw_bytes(v, size));
    TensorProto {
        // A dim over i64::MAX cannot exist in memory; saturate rather than panic.
        dims: t
            .shape()
            .iter()
            .map(|&d| i64::try_from(d).unwrap_or(i64::MAX))
            .collect(),
        data_type: Some(dtype_to_onnx(t.dtype())),
        name: if name.is_empty() {
            None
        } else {
            Some(name.to_string())
        },
        raw_data: Some(raw.into()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LoadOptions;
    use half::f16;
    use kiln_ir::ErrorKind;

    fn decode(tp: &TensorProto) -> Result<Tensor, OnnxError> {
        let opts = LoadOptions::default();
        let mut ld = Loader::new(&opts, None);
        tensor_from_proto(&mut tp.clone(), "initializer 'w'", &mut ld)
    }

    fn typed(dtype: DType, dims: Vec<i64>) -> TensorProto {
        TensorProto {
            dims,
            data_type: Some(dtype_to_onnx(dtype)),
            name: Some("w".into()),
            ..Default::default()
        }
    }

    /// One tensor of every dtype, with awkward values (negative, extremes).
    fn samples() -> Vec<Tensor> {
        vec![
            Tensor::from_vec(vec![2, 2], vec![1.5f32, -0.0, f32::MAX, f32::MIN_POSITIVE]).unwrap(),
            Tensor::from_vec(vec![3], vec![f16::from_f32(1.5), f16::MAX, f16::from_f32(-2.0)]).unwrap(),
            Tensor::from_vec(vec![4], vec![-128i8, -1, 0, 127]).unwrap(),
            Tensor::from_vec(vec![3], vec![0u8, 128, 255]).unwrap(),
            Tensor::from_vec(vec![3], vec![i32::MIN, -7, i32::MAX]).unwrap(),
            Tensor::from_vec(vec![1, 3], vec![i64::MIN, 0, i64::MAX]).unwrap(),
            Tensor::from_vec(vec![3], vec![true, false, true]).unwrap(),
        ]
    }

    /// The same tensor in the typed fields, as onnx.proto lays them out.
    fn to_typed(t: &Tensor) -> TensorProto {
        let mut tp = typed(t.dtype(), t.shape().iter().map(|&d| d as i64).collect());
        match t.data() {
            TensorData::F32(v) => tp.float_data = v.clone(),
            TensorData::F16(v) => tp.int32_data = v.iter().map(|x| x.to_bits() as i32).collect(),
            TensorData::I8(v) => tp.int32_data = v.iter().map(|&x| x as i32).collect(),
            TensorData::U8(v) => tp.int32_data = v.iter().map(|&x| x as i32).collect(),
            TensorData::I32(v) => tp.int32_data = v.clone(),
            TensorData::I64(v) => tp.int64_data = v.clone(),
            TensorData::Bool(v) => tp.int32_data = v.iter().map(|&x| x as i32).collect(),
        }
        tp
    }

    #[test]
    fn raw_and_typed_decode_alike_for_every_dtype() {
        let samples = samples();
        assert_eq!(samples.len(), DType::ALL.len());
        for t in &samples {
            let raw = tensor_to_proto("w", t);
            assert!(raw.raw_data.is_some());
            assert_eq!(&decode(&raw).unwrap(), t, "raw {}", t.dtype());
            assert_eq!(&decode(&to_typed(t)).unwrap(), t, "typed {}", t.dtype());
        }
    }

    #[test]
    fn raw_data_is_little_endian() {
        let mut tp = typed(DType::I32, vec![2]);
        tp.raw_data = Some(vec![1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff].into());
        assert_eq!(decode(&tp).unwrap().as_slice::<i32>().unwrap(), &[1, -1]);
        let mut tp = typed(DType::F16, vec![1]);
        tp.raw_data = Some(vec![0x00, 0x3c].into());
        assert_eq!(decode(&tp).unwrap().as_slice::<f16>().unwrap(), &[f16::ONE]);
    }

    #[test]
    fn dtype_codes_round_trip() {
        for d in DType::ALL {
            assert_eq!(dtype_from_onnx(dtype_to_onnx(d)), Some(d));
        }
        assert_eq!(dtype_from_onnx(DataType::Double as i32), None);
        assert_eq!(onnx_type_name(DataType::Bfloat16 as i32), "BFLOAT16");
        assert_eq!(onnx_type_name(999), "unknown data type 999");
    }

    #[test]
    fn scalar_and_empty_tensors() {
        let s = Tensor::scalar(3.25f32);
        assert_eq!(decode(&tensor_to_proto("s", &s)).unwrap(), s);
        let e = Tensor::from_vec(vec![0, 4], Vec::<i64>::new()).unwrap();
        assert_eq!(decode(&tensor_to_proto("e", &e)).unwrap(), e);
        // An empty tensor needs no data field at all.
        assert_eq!(decode(&typed(DType::I64, vec![0, 4])).unwrap(), e);
    }

    #[test]
    fn data_length_must_match_dims() {
        let mut tp = typed(DType::F32, vec![2, 3]);
        tp.raw_data = Some(vec![0; 20].into());
        let e = decode(&tp).unwrap_err();
        assert_eq!(e.kind(), crate::OnnxErrorKind::Ir(ErrorKind::InvalidModel));
        assert!(e.to_string().contains("initializer 'w' has 20 bytes"), "{e}");

        let mut tp = typed(DType::F32, vec![2, 3]);
        tp.float_data = vec![1.0; 5];
        assert!(decode(&tp)
            .unwrap_err()
            .to_string()
            .contains("5 values in float_data"));

        // Data in the wrong typed field is missing data.
        let mut tp = typed(DType::I64, vec![2]);
        tp.int32_data = vec![1, 2];
        assert_eq!(decode(&tp).unwrap_err().ir_kind(), ErrorKind::InvalidModel);

        // No data at all for a non-empty tensor.
        assert_eq!(
            decode(&typed(DType::U8, vec![3])).unwrap_err().ir_kind(),
            ErrorKind::InvalidModel
        );
    }

    #[test]
    fn int32_data_values_are_range_checked() {
        for (dtype, bad) in [
            (DType::I8, 128),
            (DType::I8, -129),
            (DType::U8, 256),
            (DType::U8, -1),
            (DType::Bool, 2),
            (DType::F16, 65536),
            (DType::F16, -1),
        ] {
            let mut tp = typed(dtype, vec![1]);
            tp.int32_data = vec![bad];
            let e = decode(&tp).unwrap_err();
            assert!(e.to_string().contains("out of range"), "{dtype} {bad}: {e}");
        }
    }

    #[test]
    fn unsupported_dtypes_name_the_tensor() {
        for (dt, name) in [
            (DataType::Double, "DOUBLE"),
            (DataType::String, "STRING"),
            (DataType::Undefined, "UNDEFINED"),
        ] {
            let tp = TensorProto {
                dims: vec![1],
                data_type: Some(dt as i32),
                double_data: vec![1.0],
                string_data: vec![b"a".to_vec()],
                ..Default::default()
            };
            let e = decode(&tp).unwrap_err();
            assert_eq!(e.ir_kind(), ErrorKind::UnsupportedOp);
            assert_eq!(
                e.to_string(),
                format!("initializer 'w' has element type {name}, which kiln does not support")
            );
        }
    }

    #[test]
    fn hostile_dims_are_rejected_before_allocation() {
        let e = decode(&typed(DType::F32, vec![1 << 40, 1 << 40])).unwrap_err();
        assert_eq!(e.ir_kind(), ErrorKind::LimitExceeded, "{e}");
        let e = decode(&typed(DType::F32, vec![1 << 20, 1 << 20])).unwrap_err();
        assert_eq!(e.ir_kind(), ErrorKind::LimitExceeded, "{e}");
        let e = decode(&typed(DType::F32, vec![i64::MAX, i64::MAX, 0])).unwrap_err();
        assert_eq!(e.ir_kind(), ErrorKind::LimitExceeded, "{e}");
        let e = decode(&typed(DType::F32, vec![2, -1])).unwrap_err();
        assert_eq!(e.ir_kind(), ErrorKind::InvalidModel, "{e}");
        // 2^29 f32 = 2 GiB is allowed by the element limit but not with a 1 KiB byte limit.
        let opts = LoadOptions {
            max_tensor_bytes: 1024,
            ..Default::default()
        };
        let mut ld = Loader::new(&opts, None);
        let e = tensor_from_proto(&mut typed(DType::F32, vec![1 << 29]), "t", &mut ld).unwrap_err();
        assert!(e.to_string().contains("per-tensor limit"), "{e}");
    }

    #[test]
    fn total_tensor_bytes_are_limited() {
        let opts = LoadOptions {
            max_total_tensor_bytes: 100,
            ..Default::default()
        };
        let mut ld = Loader::new(&opts, None);
        let t = Tensor::from_vec(vec![10], vec![0f32; 10]).unwrap();
        let tp = tensor_to_proto("a", &t);
        assert!(tensor_from_proto(&mut tp.clone(), "a", &mut ld).is_ok());
        assert!(tensor_from_proto(&mut tp.clone(), "a", &mut ld).is_ok());
        let e = tensor_from_proto(&mut tp.clone(), "a", &mut ld).unwrap_err();
        assert_eq!(e.ir_kind(), ErrorKind::LimitExceeded);
    }

    #[test]
    fn segments_are_unsupported() {
        let mut tp = tensor_to_proto("w", &Tensor::scalar(1i64));
        tp.segment = Some(crate::proto::tensor_proto::Segment {
            begin: Some(0),
            end: Some(1),
        });
        assert_eq!(decode(&tp).unwrap_err().ir_kind(), ErrorKind::UnsupportedOp);
    }
}
