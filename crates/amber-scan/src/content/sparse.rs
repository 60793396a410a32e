//! SciPy sparse matrices and arrays: CSR, CSC, BSR and COO.
//!
//! Pickled as `NEWOBJ(cls)` then `BUILD` with the instance `__dict__`:
//! `_shape`, `data` and `indices`/`indptr` (compressed formats) or `coords`
//! (`row`/`col` in older files) for COO. SciPy checks this layout only in
//! `check_format`, which unpickling never calls; its C++ kernels index
//! with `indptr` and `indices` unchecked. So, for the compressed formats:
//! `indptr` has `major + 1` entries, starts at 0, never decreases and ends
//! at `nnz == len(indices) == len(data)`; every index lies in `[0, minor)`.
//! BSR counts in blocks of `data`'s `(R, C)`, which must divide the shape.
//! COO: one coordinate array per dimension, each `nnz` long with values in
//! `[0, shape[k])`.

use amber_pickle::NodeId;

use super::{Found, Issue, Outcome, StateDict, View, at};
use crate::ndarray::NdArray;

/// The storage layout a class uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Compressed rows.
    Csr,
    /// Compressed columns.
    Csc,
    /// Compressed rows of dense blocks.
    Bsr,
    /// Coordinates.
    Coo,
}

/// The format of a validated sparse class, by canonical dotted name.
#[must_use]
pub fn format_of(class: &str) -> Option<Format> {
    let name = class
        .strip_prefix("scipy.sparse._")
        .or_else(|| class.strip_prefix("scipy.sparse."))?;
    let (module, cls) = name.split_once('.')?;
    let format = match module {
        "csr" => Format::Csr,
        "csc" => Format::Csc,
        "bsr" => Format::Bsr,
        "coo" => Format::Coo,
        _ => return None,
    };
    let kind = cls.strip_prefix(module)?;
    matches!(kind, "_matrix" | "_array").then_some(format)
}

fn sizes(ctx: &View<'_, '_>, d: &StateDict<'_>) -> Result<Vec<i64>, Issue> {
    let id = d.require("_shape")?;
    let dims = ctx
        .tuple(id)
        .filter(|t| (1..=64).contains(&t.len()))
        .ok_or_else(|| Issue::undecodable(ctx.offset(id), "`_shape` is not a tuple"))?;
    dims.iter()
        .map(|&n| match ctx.int(n) {
            Some(v) if v >= 0 => Ok(v),
            _ => Err(Issue::new(
                "sparse.shape",
                ctx.offset(id),
                "`_shape` holds a negative or non-int size",
            )),
        })
        .collect()
}

/// Every value of a 1-D int array in `[0, bound)`.
fn in_range(
    ctx: &View<'_, '_>,
    found: &mut Found,
    array: &NdArray<'_>,
    bound: i64,
    code: &'static str,
    what: &str,
) -> Result<(), Issue> {
    let col = ctx.int_column(array, None, what)?;
    for k in 0..col.len() {
        let v = at(&col, k, what, array.offset)?;
        if !(0..bound).contains(&v) {
            found.push(code, array.offset, || {
                format!("`{what}[{k}]` is {v}, outside [0, {bound})")
            });
        }
    }
    Ok(())
}

pub(crate) fn check(ctx: &View<'_, '_>, format: Format, state: NodeId) -> Outcome {
    let d = StateDict::read(ctx.graph, state)?;
    let shape = sizes(ctx, &d)?;
    let data = ctx.array(d.require("data")?, "data")?;
    let mut found = Found::default();
    if format == Format::Coo {
        coo(ctx, &d, &shape, &data, &mut found)?;
        return Ok(found.finish());
    }
    let (rows, cols) = match shape.as_slice() {
        [n] => (1, *n),
        [r, c] => (*r, *c),
        _ => {
            return Err(Issue::new(
                "sparse.shape",
                data.offset,
                format!("a compressed sparse array has shape {shape:?}"),
            ));
        }
    };
    let (mut major, mut minor) = match format {
        Format::Csc => (cols, rows),
        _ => (rows, cols),
    };
    let nnz_data = if format == Format::Bsr {
        let [blocks, r, c] = <[u64; 3]>::try_from(data.shape.as_slice()).map_err(|_| {
            Issue::new(
                "sparse.blocksize",
                data.offset,
                format!(
                    "BSR `data` has shape {:?}, not three dimensions",
                    data.shape
                ),
            )
        })?;
        let (r, c) = (i64::try_from(r).unwrap_or(0), i64::try_from(c).unwrap_or(0));
        if r < 1 || c < 1 || rows % r != 0 || cols % c != 0 {
            return Err(Issue::new(
                "sparse.blocksize",
                data.offset,
                format!("blocks of {r}x{c} do not tile shape {shape:?}"),
            ));
        }
        major = rows / r;
        minor = cols / c;
        blocks
    } else {
        if data.shape.len() != 1 {
            found.push("sparse.data", data.offset, || {
                format!("`data` has shape {:?}, not one dimension", data.shape)
            });
        }
        data.len() as u64
    };

    let indices = ctx.array(d.require("indices")?, "indices")?;
    let indptr = ctx.array(d.require("indptr")?, "indptr")?;
    let nnz = indices.len() as u64;
    if indices.shape.len() != 1 || nnz_data != nnz {
        found.push("sparse.data", data.offset, || {
            format!(
                "`data` holds {nnz_data} entries but `indices` has shape {:?}",
                indices.shape
            )
        });
    }
    let ptr = ctx.int_column(&indptr, None, "indptr")?;
    if indptr.shape.len() != 1 || i64::try_from(ptr.len()).ok() != major.checked_add(1) {
        found.push("sparse.indptr", indptr.offset, || {
            format!(
                "`indptr` has shape {:?}, expected ({},)",
                indptr.shape,
                major.saturating_add(1)
            )
        });
    }
    let mut previous = 0i64;
    for k in 0..ptr.len() {
        let v = at(&ptr, k, "indptr", indptr.offset)?;
        if (k == 0 && v != 0) || v < previous {
            found.push("sparse.indptr", indptr.offset, || {
                format!("`indptr[{k}]` is {v} after {previous}: not a non-decreasing run from 0")
            });
        }
        previous = v;
    }
    if u64::try_from(previous).ok() != Some(nnz) {
        found.push("sparse.indptr", indptr.offset, || {
            format!("`indptr` ends at {previous} but there are {nnz} entries")
        });
    }
    in_range(
        ctx,
        &mut found,
        &indices,
        minor,
        "sparse.indices",
        "indices",
    )?;
    Ok(found.finish())
}

fn coo(
    ctx: &View<'_, '_>,
    d: &StateDict<'_>,
    shape: &[i64],
    data: &NdArray<'_>,
    found: &mut Found,
) -> Result<(), Issue> {
    let coords: Vec<NodeId> = match d.get("coords") {
        Some(id) => ctx
            .tuple(id)
            .ok_or_else(|| Issue::undecodable(ctx.offset(id), "`coords` is not a tuple"))?
            .to_vec(),
        None => vec![d.require("row")?, d.require("col")?],
    };
    if coords.len() != shape.len() {
        return Err(Issue::new(
            "sparse.coords",
            data.offset,
            format!("{} coordinate arrays for shape {shape:?}", coords.len()),
        ));
    }
    let nnz = data.len();
    if data.shape.len() != 1 {
        found.push("sparse.data", data.offset, || {
            format!("`data` has shape {:?}, not one dimension", data.shape)
        });
    }
    for (axis, (&id, &bound)) in coords.iter().zip(shape).enumerate() {
        let what = format!("coords[{axis}]");
        let array = ctx.array(id, &what)?;
        if array.shape != [nnz as u64] {
            found.push("sparse.coords", array.offset, || {
                format!(
                    "`{what}` has shape {:?}; there are {nnz} entries",
                    array.shape
                )
            });
        }
        in_range(ctx, found, &array, bound, "sparse.coords", &what)?;
    }
    Ok(())
}
