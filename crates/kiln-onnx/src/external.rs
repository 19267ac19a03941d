//! External tensor data (`data_location = EXTERNAL`): `location`, `offset`
//! and `length` keys, relative to the model's folder.
//!
//! Hostile files are expected: the location must be a relative path with no
//! `..` component that stays inside the model's folder after symlinks are
//! resolved, must name a regular file, and the byte range must lie inside it
//! and match the size the tensor's dims call for.

use crate::error::OnnxError;
use crate::proto::TensorProto;
use kiln_ir::ir_err;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path};

fn parse_u64(key: &str, v: &str, what: &str) -> Result<u64, OnnxError> {
    v.trim().parse::<u64>().map_err(|_| {
        ir_err!(
            InvalidModel,
            "{what} has external data {key} '{v}', which is not a non-negative integer"
        )
        .into()
    })
}

/// Reads the `expected` bytes of `tp`'s external data from under `base_dir`.
pub(crate) fn read_external(
    tp: &TensorProto,
    what: &str,
    base_dir: Option<&Path>,
    expected: u64,
) -> Result<Vec<u8>, OnnxError> {
    let mut location: Option<&str> = None;
    let mut offset = 0u64;
    let mut length: Option<u64> = None;
    for e in &tp.external_data {
        let v = e.value.as_deref().unwrap_or("");
        match e.key.as_deref().unwrap_or("") {
            "location" => location = Some(v),
            "offset" => offset = parse_u64("offset", v, what)?,
            "length" => length = Some(parse_u64("length", v, what)?),
            _ => {} // "checksum" and future keys are advisory.
        }
    }
    let location = location
        .filter(|l| !l.is_empty())
        .ok_or_else(|| ir_err!(InvalidModel, "{what} has external data but no 'location'"))?;
    let rel = Path::new(location);
    for c in rel.components() {
        match c {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => {
                return Err(ir_err!(
                    InvalidModel,
                    "{what}: external data location '{location}' contains '..'; it must stay in the model's folder"
                )
                .into())
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(ir_err!(
                    InvalidModel,
                    "{what}: external data location '{location}' is an absolute path; it must be relative to the model's folder"
                )
                .into())
            }
        }
    }
    if location.contains('\0') {
        return Err(ir_err!(InvalidModel, "{what}: external data location contains a NUL byte").into());
    }
    let base = base_dir.ok_or_else(|| {
        ir_err!(
            InvalidInput,
            "{what} has external data '{location}', but the model was given as bytes with no folder to read it from"
        )
    })?;
    if let Some(len) = length {
        if len != expected {
            return Err(ir_err!(
                InvalidModel,
                "{what}: external data length {len} does not match the {expected} bytes its dims need"
            )
            .into());
        }
    }
    let io_ctx = || format!("{what}: cannot open external data '{location}'");
    let base_c = base.canonicalize().map_err(|e| OnnxError::io(io_ctx(), e))?;
    let full_c = base
        .join(rel)
        .canonicalize()
        .map_err(|e| OnnxError::io(io_ctx(), e))?;
    if !full_c.starts_with(&base_c) {
        return Err(ir_err!(
            InvalidModel,
            "{what}: external data location '{location}' resolves outside the model's folder"
        )
        .into());
    }
    // Check the file type before opening: opening a FIFO blocks until a
    // writer appears, so a model pointing at one would hang the loader.
    let pre = std::fs::metadata(&full_c).map_err(|e| OnnxError::io(io_ctx(), e))?;
    if !pre.is_file() {
        return Err(ir_err!(
            InvalidModel,
            "{what}: external data location '{location}' is not a regular file"
        )
        .into());
    }
    let mut f = File::open(&full_c).map_err(|e| OnnxError::io(io_ctx(), e))?;
    let meta = f.metadata().map_err(|e| OnnxError::io(io_ctx(), e))?;
    if !meta.is_file() {
        return Err(ir_err!(
            InvalidModel,
            "{what}: external data location '{location}' is not a regular file"
        )
        .into());
    }
    let end = offset.checked_add(expected);
    if end.is_none_or(|end| end > meta.len()) {
        return Err(ir_err!(
            InvalidModel,
            "{what}: external data range offset {offset} + length {expected} is past the end of '{location}' ({} bytes)",
            meta.len()
        )
        .into());
    }
    let n = usize::try_from(expected)
        .map_err(|_| ir_err!(LimitExceeded, "{what}: {expected} bytes do not fit in memory"))?;
    let mut buf = vec![0u8; n];
    f.seek(SeekFrom::Start(offset))
        .and_then(|_| f.read_exact(&mut buf))
        .map_err(|e| OnnxError::io(format!("{what}: cannot read external data '{location}'"), e))?;
    Ok(buf)
}
