//! NumPy `.npy` files (format versions 1.0, 2.0 and 3.0), little-endian, C order.
//!
//! Format: <https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html>.
//! Supported dtypes: `<f4`, `<f2`, `|i1`, `|u1`, `<i4`, `<i8`, `|b1`.

use crate::{Error, ErrorKind};
use kiln_ir::{f16, numel, DType, Tensor, TensorData};
use std::path::Path;

/// Largest array this reader accepts (bytes), so a forged header cannot
/// request an absurd allocation.
pub const MAX_NPY_BYTES: usize = 4 << 30;

fn bad(path: &Path, msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::Decode, msg).with_file(path)
}

/// Reads a `.npy` file into a tensor.
///
/// Errors (`Decode`): not a .npy file, Fortran order, big-endian or
/// unsupported dtype, data shorter than the header says.
pub fn read_npy(path: &Path) -> Result<Tensor, Error> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse_npy(&bytes).map_err(|m| bad(path, m))
}

/// Parses the bytes of a `.npy` file.
pub fn parse_npy(bytes: &[u8]) -> Result<Tensor, String> {
    let h = parse_npy_header(bytes)?;
    let nbytes = h.data_bytes()?;
    let data = &bytes[h.data_offset..];
    if data.len() < nbytes {
        return Err(format!("data is {} bytes, the header needs {nbytes}", data.len()));
    }
    Tensor::new(h.shape, decode_le(h.dtype, &data[..nbytes])).map_err(|e| e.to_string())
}

/// The header of a `.npy` file: what [`parse_npy_header`] and
/// [`read_npy_header`] return.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyHeader {
    /// Element type.
    pub dtype: DType,
    /// Array shape (C order).
    pub shape: Vec<usize>,
    /// Offset of the array data from the start of the file (magic included).
    pub data_offset: usize,
}

impl NpyHeader {
    /// Size of the array data in bytes; errors if it overflows or exceeds
    /// [`MAX_NPY_BYTES`].
    pub fn data_bytes(&self) -> Result<usize, String> {
        numel(&self.shape)
            .ok()
            .and_then(|n| n.checked_mul(self.dtype.size_of()))
            .filter(|&b| b <= MAX_NPY_BYTES)
            .ok_or_else(|| "array too large".to_string())
    }
}

/// Largest `.npy` header [`read_npy_header`] accepts (bytes).
const MAX_HEADER_BYTES: usize = 1 << 20;

/// Reads just the header of a `.npy` stream, leaving `r` at the first data byte.
///
/// Errors: as [`parse_npy_header`]; a header longer than 1 MiB; a stream
/// that ends inside the header.
pub fn read_npy_header(r: &mut dyn std::io::Read) -> Result<NpyHeader, String> {
    let io = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => "truncated .npy header".to_string(),
        _ => e.to_string(),
    };
    let mut pre = [0u8; 12];
    r.read_exact(&mut pre[..10]).map_err(io)?;
    if &pre[..6] != b"\x93NUMPY" {
        return Err("not a .npy file (bad magic)".into());
    }
    let (hlen, start) = match pre[6] {
        1 => (u16::from_le_bytes([pre[8], pre[9]]) as usize, 10),
        2 | 3 => {
            r.read_exact(&mut pre[10..12]).map_err(io)?;
            (
                u32::from_le_bytes([pre[8], pre[9], pre[10], pre[11]]) as usize,
                12,
            )
        }
        v => return Err(format!("unsupported .npy format version {v}")),
    };
    if hlen > MAX_HEADER_BYTES {
        return Err(format!(
            "the .npy header claims {hlen} bytes (at most {MAX_HEADER_BYTES})"
        ));
    }
    let mut buf = pre[..start].to_vec();
    buf.resize(start + hlen, 0);
    r.read_exact(&mut buf[start..]).map_err(io)?;
    parse_npy_header(&buf)
}

/// Parses the header at the start of `bytes` (the data may follow or not).
///
/// Errors: not a .npy file, Fortran order, big-endian or unsupported dtype,
/// malformed shape, header longer than `bytes`.
pub fn parse_npy_header(bytes: &[u8]) -> Result<NpyHeader, String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("not a .npy file (bad magic)".into());
    }
    let major = bytes[6];
    let (hlen, start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10usize),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err("truncated .npy header".into());
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => return Err(format!("unsupported .npy format version {v}")),
    };
    let end = start
        .checked_add(hlen)
        .filter(|&e| e <= bytes.len())
        .ok_or("truncated .npy header")?;
    let header = std::str::from_utf8(&bytes[start..end]).map_err(|_| "header is not text")?;
    let descr = dict_value(header, "descr").ok_or("header has no 'descr'")?;
    let q = descr
        .chars()
        .next()
        .filter(|c| *c == '\'' || *c == '"')
        .ok_or("malformed 'descr'")?;
    let descr = &descr[1..];
    let descr = &descr[..descr.find(q).ok_or("malformed 'descr'")?];
    let fortran = dict_value(header, "fortran_order").ok_or("header has no 'fortran_order'")?;
    if fortran.starts_with("True") {
        return Err("Fortran-ordered arrays are not supported; save with np.ascontiguousarray".into());
    }
    let shape_s = dict_value(header, "shape").ok_or("header has no 'shape'")?;
    let inner = shape_s.trim_start_matches('(');
    let inner = &inner[..inner.find(')').ok_or("malformed shape")?];
    let shape: Vec<usize> = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().map_err(|_| format!("bad dimension '{s}'")))
        .collect::<Result<_, _>>()?;
    let dtype = match descr {
        "<f4" => DType::F32,
        "<f2" => DType::F16,
        "|i1" | "<i1" => DType::I8,
        "|u1" | "<u1" => DType::U8,
        "<i4" => DType::I32,
        "<i8" => DType::I64,
        "|b1" => DType::Bool,
        d => {
            return Err(format!(
                "unsupported dtype '{d}' (kiln reads <f4, <f2, i1, u1, <i4, <i8, b1)"
            ))
        }
    };
    let h = NpyHeader {
        dtype,
        shape,
        data_offset: end,
    };
    h.data_bytes()?;
    Ok(h)
}

/// Decodes little-endian array data of `dtype`; `data.len()` must be a
/// multiple of the element size (a trailing partial element is dropped).
pub fn decode_le(dtype: DType, data: &[u8]) -> TensorData {
    match dtype {
        DType::F32 => TensorData::F32(
            data.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        DType::F16 => TensorData::F16(
            data.chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]))
                .collect(),
        ),
        DType::I8 => TensorData::I8(data.iter().map(|&b| b as i8).collect()),
        DType::U8 => TensorData::U8(data.to_vec()),
        DType::I32 => TensorData::I32(
            data.chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        DType::I64 => TensorData::I64(
            data.chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().expect("chunk of 8")))
                .collect(),
        ),
        DType::Bool => TensorData::Bool(data.iter().map(|&b| b != 0).collect()),
    }
}

fn dict_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let k1 = format!("'{key}'");
    let i = header.find(&k1)? + k1.len();
    let rest = header[i..].trim_start().strip_prefix(':')?.trim_start();
    Some(rest)
}

/// Serializes a tensor as `.npy` (version 1.0) bytes.
pub fn to_npy_bytes(t: &Tensor) -> Vec<u8> {
    let descr = match t.dtype() {
        DType::F32 => "<f4",
        DType::F16 => "<f2",
        DType::I8 => "|i1",
        DType::U8 => "|u1",
        DType::I32 => "<i4",
        DType::I64 => "<i8",
        DType::Bool => "|b1",
    };
    let shape = match t.shape() {
        [] => "()".to_string(),
        [d] => format!("({d},)"),
        s => format!(
            "({})",
            s.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
        ),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    // Pad so that magic + len + header + '\n' is a multiple of 64.
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + t.byte_len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    match t.data() {
        TensorData::F32(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        TensorData::F16(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        TensorData::I8(v) => v.iter().for_each(|x| out.push(*x as u8)),
        TensorData::U8(v) => out.extend_from_slice(v),
        TensorData::I32(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        TensorData::I64(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        TensorData::Bool(v) => v.iter().for_each(|x| out.push(*x as u8)),
    }
    out
}

/// Writes a tensor as a `.npy` file, atomically (temp file, then rename).
pub fn write_npy(path: &Path, t: &Tensor) -> Result<(), Error> {
    crate::write_atomic(path, &to_npy_bytes(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_round_trip_every_dtype() {
        let ts = vec![
            Tensor::from_vec(vec![2, 3], vec![1.5f32, -2.0, 0.0, 3.25, 4.0, 5.0]).unwrap(),
            Tensor::from_vec(vec![2], vec![f16::from_f32(1.5), f16::from_f32(-0.25)]).unwrap(),
            Tensor::from_vec(vec![3], vec![-1i8, 0, 127]).unwrap(),
            Tensor::from_vec(vec![1, 1, 2], vec![0u8, 255]).unwrap(),
            Tensor::from_vec(vec![2], vec![i32::MIN, 7]).unwrap(),
            Tensor::from_vec(vec![2], vec![i64::MAX, -7]).unwrap(),
            Tensor::from_vec(vec![2], vec![true, false]).unwrap(),
            Tensor::scalar(3.0f32),
        ];
        for t in ts {
            let b = to_npy_bytes(&t);
            assert_eq!((b.len() - t.byte_len()) % 64, 0);
            assert_eq!(parse_npy(&b).unwrap(), t);
        }
    }

    #[test]
    fn npy_rejects_garbage_and_truncation() {
        assert!(parse_npy(b"hello world, not npy").is_err());
        let t = Tensor::from_vec(vec![4], vec![1f32; 4]).unwrap();
        let b = to_npy_bytes(&t);
        assert!(parse_npy(&b[..b.len() - 1]).unwrap_err().contains("header needs"));
        let forged = String::from_utf8_lossy(&b).replace("(4,)", "(99999999999,)");
        assert!(parse_npy(forged.as_bytes()).is_err());
    }
}
