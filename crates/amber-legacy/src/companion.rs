//! Companion files of pre-0.10 joblib dumps, opened safely.
//!
//! joblib < 0.10 wrote each array to `<name>_NN.npy` (or a `ZF`-compressed
//! `<name>_NN.npy.z`) beside the pickle and stored the file name in the
//! wrapper's state. joblib joins that name to the directory unchecked; here
//! it must be a bare file name (no separator, no `..`, no NUL), and a
//! symbolic link is followed only if it stays in the same directory.

use std::fs;
use std::path::Path;

use amber_format::npy;

use crate::error::{LegacyError, Result};
use crate::{ArraySource, Backing, Companion, Found, Limits, read_zfile};

/// Longest file name accepted (the usual file-system limit).
const MAX_NAME: usize = 255;

/// Checks that `name` is a bare file name.
///
/// # Errors
/// [`LegacyError::CompanionName`].
pub(crate) fn check_name(name: &str) -> Result<()> {
    let refuse = |reason| {
        Err(LegacyError::CompanionName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return refuse("empty");
    }
    if name.len() > MAX_NAME {
        return refuse("longer than 255 bytes");
    }
    if name.contains('\0') {
        return refuse("contains a NUL byte");
    }
    if name.contains('/') || name.contains('\\') {
        return refuse("not a bare file name (contains a path separator)");
    }
    if name == "." || name == ".." {
        return refuse("not a file name");
    }
    if name.len() >= 2 && name.as_bytes().get(1) == Some(&b':') {
        return refuse("looks like a drive-qualified path");
    }
    Ok(())
}

/// Opens every companion named, in order.
pub(crate) fn open_all(dir: &Path, names: &[String], limits: &Limits) -> Result<Vec<Companion>> {
    let mut out = Vec::with_capacity(names.len());
    let mut real_dir = None;
    for name in names {
        check_name(name)?;
        let path = dir.join(name);
        let missing = |source| LegacyError::CompanionMissing {
            name: name.clone(),
            source,
        };
        let meta = fs::symlink_metadata(&path).map_err(missing)?;
        if meta.file_type().is_symlink() {
            let target = fs::canonicalize(&path).map_err(missing)?;
            if real_dir.is_none() {
                real_dir = Some(fs::canonicalize(dir).map_err(missing)?);
            }
            if target.parent() != real_dir.as_deref() {
                return Err(LegacyError::CompanionName {
                    name: name.clone(),
                    reason: "a symbolic link that leads out of the pickle's directory",
                });
            }
        }
        let file = fs::File::open(&path).map_err(missing)?;
        if !file.metadata().map_err(missing)?.is_file() {
            return Err(LegacyError::CompanionName {
                name: name.clone(),
                reason: "not a regular file",
            });
        }
        let map = amber_format::file::map_open_file(&file, &path).map_err(|e| {
            LegacyError::CompanionMissing {
                name: name.clone(),
                source: std::io::Error::other(e.to_string()),
            }
        })?;
        let bytes = if map.as_ref().starts_with(b"ZF") {
            Backing::Owned(
                read_zfile(map.as_ref(), limits.max_decompressed).map_err(|e| e.in_entry(name))?,
            )
        } else {
            Backing::Map(map, file)
        };
        out.push(Companion {
            name: name.clone(),
            bytes,
        });
    }
    Ok(out)
}

/// Turns a parse-time array into its final source, reading `.npy` headers.
pub(crate) fn resolve(found: Found, companions: &[Companion]) -> Result<ArraySource> {
    let companion = |i: usize| {
        companions.get(i).ok_or(LegacyError::Companion {
            name: String::new(),
            detail: format!("companion {i} was not opened"),
        })
    };
    Ok(match found {
        Found::Inline { offset, len } => ArraySource::Inline { offset, len },
        Found::Nested { offset, len } => ArraySource::NestedPickle { offset, len },
        Found::Zfile(file) => {
            let c = companion(file)?;
            if c.is_mapped() {
                return Err(LegacyError::Companion {
                    name: c.name.clone(),
                    detail: "a `ZNDArrayWrapper` companion must be a `ZF` file".to_owned(),
                });
            }
            ArraySource::Zfile { file }
        }
        Found::Npy(file) => {
            let c = companion(file)?;
            let bad = |detail: String| LegacyError::Companion {
                name: c.name.clone(),
                detail,
            };
            let bytes = c.bytes();
            let header = npy::parse_header(bytes, &c.name).map_err(|e| bad(e.to_string()))?;
            let len = crate::to_u64(bytes.len())
                .checked_sub(header.data_offset)
                .ok_or_else(|| bad("header runs past the end".to_owned()))?;
            let descr = header.descr.ok_or_else(|| {
                bad("structured dtypes are not supported in companion files".to_owned())
            })?;
            if descr
                .trim_start_matches(['|', '<', '>', '='])
                .starts_with('O')
            {
                ArraySource::NpyPickle {
                    file,
                    offset: header.data_offset,
                    len,
                }
            } else {
                ArraySource::Npy {
                    file,
                    offset: header.data_offset,
                    len,
                    descr,
                    shape: header.shape,
                    fortran_order: header.fortran_order,
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in [
            "a.npy",
            "joblib_0.9.2_pickle_py27_np16.pkl_01.npy",
            "..a",
            "a b",
        ] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../a",
            "a/b",
            "/etc/passwd",
            "a\\b",
            "a\0",
            "C:x",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
