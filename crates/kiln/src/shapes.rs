//! Binding concrete shapes to a model's (possibly symbolic) graph inputs.

use crate::{Error, ErrorKind};
use kiln_ir::{Dim, ValueInfo};
use std::collections::HashMap;

/// Checks `binds` against the declared inputs: every name is a graph input,
/// each bound shape has the declared rank and agrees with its fixed dims.
///
/// Errors (`InvalidInput`) name the input and both shapes.
pub fn check_binds(inputs: &[ValueInfo], binds: &HashMap<String, Vec<usize>>) -> Result<(), Error> {
    let bad = |m: String| Error::new(ErrorKind::Model(kiln_ir::ErrorKind::InvalidInput), m);
    for (name, d) in binds {
        let Some(vi) = inputs.iter().find(|i| &i.name == name) else {
            let names: Vec<&str> = inputs.iter().map(|i| i.name.as_str()).collect();
            return Err(bad(format!(
                "--shape {name}=...: the model has no input '{name}' (inputs: {})",
                names.join(", ")
            )));
        };
        if let Some(decl) = &vi.ty.shape {
            let fits =
                decl.len() == d.len() && decl.iter().zip(d).all(|(a, &b)| a.known().is_none_or(|k| k == b));
            if !fits {
                return Err(bad(format!(
                    "--shape {}={}: the model declares {}",
                    vi.name,
                    d.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(","),
                    kiln_ir::shape::shape_to_string(&vi.ty.shape)
                )));
            }
        }
    }
    Ok(())
}

/// Concrete dims for every graph input: `binds` (by input name) where given,
/// else the declared dims with a symbolic leading (batch) dim set to 1.
///
/// Errors (`InvalidInput`): a bound name that is not a graph input; a bound
/// shape whose rank or fixed dims differ from the declaration; an unbound
/// input with unknown rank or with symbolic dims other than the leading one
/// (all of them are listed).
pub fn bind_input_shapes(
    inputs: &[ValueInfo],
    binds: &HashMap<String, Vec<usize>>,
) -> Result<Vec<Vec<usize>>, Error> {
    let bad = |m: String| Error::new(ErrorKind::Model(kiln_ir::ErrorKind::InvalidInput), m);
    check_binds(inputs, binds)?;
    inputs
        .iter()
        .map(|vi| {
            let decl = vi.ty.shape.as_ref();
            if let Some(d) = binds.get(&vi.name) {
                return Ok(d.clone());
            }
            let decl = decl.ok_or_else(|| {
                bad(format!(
                    "input '{}' has unknown rank; give --shape {}=...",
                    vi.name, vi.name
                ))
            })?;
            let sym: Vec<String> = decl
                .iter()
                .enumerate()
                .skip(1)
                .filter(|(_, d)| matches!(d, Dim::Sym(_)))
                .map(|(ax, d)| format!("dim {ax} ({d})"))
                .collect();
            if !sym.is_empty() {
                return Err(bad(format!(
                    "input '{}' {} has symbolic {}; give --shape {}=D,D,...",
                    vi.name,
                    kiln_ir::shape::shape_to_string(&vi.ty.shape),
                    sym.join(", "),
                    vi.name
                )));
            }
            Ok(decl.iter().map(|d| d.known().unwrap_or(1)).collect())
        })
        .collect()
}
