//! NumPy `.npy` files (format versions 1-3): reading any numeric dtype into an `f64`
//! matrix, writing `f32`/`f64` matrices, and `.npz` archives of such arrays.

use std::io::{Read, Write};
use std::path::Path;

use crate::error::{EvalError, Result};

/// A row-major matrix read from or written to `.npy` (a 1-D array is one column).
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// `rows × cols` values, row-major.
    pub data: Vec<f64>,
    /// The element type the file stored (`"f4"`, `"f8"`, `"i8"`, `"u1"`, `"b1"`, …).
    pub dtype: String,
    /// The shape the file stored.
    pub shape: Vec<usize>,
}

impl Matrix {
    /// A matrix from row-major values.
    pub fn new(rows: usize, cols: usize, data: Vec<f64>) -> Result<Matrix> {
        if rows.checked_mul(cols) != Some(data.len()) {
            return Err(EvalError::input(format!(
                "a {rows}×{cols} matrix needs {} values, got {}",
                rows.saturating_mul(cols),
                data.len()
            )));
        }
        Ok(Matrix {
            rows,
            cols,
            data,
            dtype: "f8".into(),
            shape: vec![rows, cols],
        })
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f64] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }

    /// Errors (naming the first offender) if a value is NaN or infinite.
    pub fn check_finite(&self, what: &str) -> Result<()> {
        if let Some(k) = self.data.iter().position(|v| !v.is_finite()) {
            return Err(EvalError::input(format!(
                "{what}: non-finite value {} at row {}, column {}",
                self.data[k],
                k / self.cols.max(1),
                k % self.cols.max(1)
            )));
        }
        Ok(())
    }
}

/// Reads a 1-D or 2-D `.npy` file into a matrix (1-D: one column).
pub fn read(path: &Path) -> Result<Matrix> {
    let bytes = std::fs::read(path).map_err(|e| EvalError::io(path, e))?;
    parse(&bytes).map_err(|e| e.in_file(path))
}

/// Parses `.npy` bytes.
pub fn parse(bytes: &[u8]) -> Result<Matrix> {
    if bytes.is_empty() {
        return Err(EvalError::input("empty file (expected a NumPy .npy array)"));
    }
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(EvalError::input("not a NumPy .npy file (bad magic)"));
    }
    let major = bytes[6];
    let (header_len, start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err(EvalError::input("truncated .npy header"));
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => {
            return Err(EvalError::input(format!(
                "unsupported .npy format version {v}"
            )))
        }
    };
    let end = start + header_len;
    if bytes.len() < end {
        return Err(EvalError::input("truncated .npy header"));
    }
    let header = std::str::from_utf8(&bytes[start..end])
        .map_err(|_| EvalError::input("the .npy header is not text"))?;
    let descr = dict_value(header, "descr")
        .ok_or_else(|| EvalError::input("the .npy header has no 'descr'"))?;
    let descr = descr.trim_matches(|c| c == '\'' || c == '"').to_string();
    let fortran = dict_value(header, "fortran_order")
        .ok_or_else(|| EvalError::input("the .npy header has no 'fortran_order'"))?
        .starts_with("True");
    let shape_text = dict_value(header, "shape")
        .ok_or_else(|| EvalError::input("the .npy header has no 'shape'"))?;
    let shape: Vec<usize> = shape_text
        .trim_matches(|c| c == '(' || c == ')')
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| EvalError::input(format!("bad .npy shape {shape_text}")))
        })
        .collect::<Result<_>>()?;
    let (rows, cols) = match shape.as_slice() {
        [n] => (*n, 1),
        [r, c] => (*r, *c),
        s => {
            return Err(EvalError::input(format!(
                "expected a 1-D or 2-D array, got shape {s:?}"
            )))
        }
    };
    let (endian, kind, size) = parse_descr(&descr)?;
    let count = rows * cols;
    let body = &bytes[end..];
    if body.len() < count * size {
        return Err(EvalError::input(format!(
            "truncated data: shape {shape:?} of {descr} needs {} bytes, the file has {}",
            count * size,
            body.len()
        )));
    }
    let big = endian == '>';
    let mut data = Vec::with_capacity(count);
    for k in 0..count {
        let mut b = [0u8; 8];
        b[..size].copy_from_slice(&body[k * size..(k + 1) * size]);
        if big {
            b[..size].reverse();
        }
        let v = match (kind, size) {
            ('f', 4) => f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
            ('f', 8) => f64::from_le_bytes(b),
            ('i', 1) => b[0] as i8 as f64,
            ('i', 2) => i16::from_le_bytes([b[0], b[1]]) as f64,
            ('i', 4) => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
            ('i', 8) => i64::from_le_bytes(b) as f64,
            ('u', 1) | ('b', 1) => b[0] as f64,
            ('u', 2) => u16::from_le_bytes([b[0], b[1]]) as f64,
            ('u', 4) => u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
            ('u', 8) => u64::from_le_bytes(b) as f64,
            _ => unreachable!("checked by parse_descr"),
        };
        data.push(v);
    }
    if fortran && rows > 1 && cols > 1 {
        let mut t = vec![0.0; count];
        for c in 0..cols {
            for r in 0..rows {
                t[r * cols + c] = data[c * rows + r];
            }
        }
        data = t;
    }
    Ok(Matrix {
        rows,
        cols,
        data,
        dtype: format!("{kind}{size}"),
        shape,
    })
}

fn parse_descr(descr: &str) -> Result<(char, char, usize)> {
    let mut chars = descr.chars();
    let endian = chars.next().unwrap_or('?');
    let kind = chars.next().unwrap_or('?');
    let size: usize = chars.as_str().parse().unwrap_or(0);
    let ok = matches!(endian, '<' | '>' | '|' | '=')
        && matches!(
            (kind, size),
            ('f', 4) | ('f', 8) | ('i', 1 | 2 | 4 | 8) | ('u', 1 | 2 | 4 | 8) | ('b', 1)
        );
    if !ok {
        return Err(EvalError::input(format!(
            "unsupported .npy dtype {descr:?} (expected float, integer or bool)"
        )));
    }
    Ok((endian, kind, size))
}

/// The text after `'key':` in a Python dict literal, up to the next top-level comma.
fn dict_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let pat1 = format!("'{key}':");
    let pos = header.find(&pat1)? + pat1.len();
    let rest = header[pos..].trim_start();
    let mut depth = 0i32;
    for (i, c) in rest.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return Some(&rest[..=i]);
                }
            }
            ',' | '}' if depth == 0 => return Some(rest[..i].trim()),
            _ => {}
        }
    }
    None
}

/// Element type written by [`to_bytes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    /// `<f4`.
    F32,
    /// `<f8`.
    F64,
}

/// `.npy` bytes (format 1.0, little endian, C order) of `values` with `shape`.
pub fn to_bytes(shape: &[usize], values: &[f64], dtype: Dtype) -> Vec<u8> {
    let descr = match dtype {
        Dtype::F32 => "<f4",
        Dtype::F64 => "<f8",
    };
    let shape_text = match shape {
        [n] => format!("({n},)"),
        s => format!(
            "({})",
            s.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_text}, }}");
    // Pad so that the data starts on a multiple of 64 bytes, ending with a newline.
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + values.len() * 8);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for &v in values {
        match dtype {
            Dtype::F32 => out.extend_from_slice(&(v as f32).to_le_bytes()),
            Dtype::F64 => out.extend_from_slice(&v.to_le_bytes()),
        }
    }
    out
}

/// Writes a `.npz` archive (uncompressed, like `numpy.savez`) of named arrays.
pub fn write_npz(path: &Path, arrays: &[(&str, Vec<usize>, &[f64])]) -> Result<()> {
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut zip = zip::ZipWriter::new(&mut buf);
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored)
            .large_file(true);
        for (name, shape, values) in arrays {
            zip.start_file(format!("{name}.npy"), options)
                .map_err(|e| EvalError::file(path, format!("cannot write the archive: {e}")))?;
            zip.write_all(&to_bytes(shape, values, Dtype::F64))
                .map_err(|e| EvalError::io(path, e))?;
        }
        zip.finish()
            .map_err(|e| EvalError::file(path, format!("cannot write the archive: {e}")))?;
    }
    write_atomic(path, &buf.into_inner())
}

/// Reads the named arrays of a `.npz` archive (compressed or not).
pub fn read_npz(path: &Path, names: &[&str]) -> Result<Vec<Matrix>> {
    let file = std::fs::File::open(path).map_err(|e| EvalError::io(path, e))?;
    let mut zip = zip::ZipArchive::new(file)
        .map_err(|e| EvalError::file(path, format!("not a .npz (zip) archive: {e}")))?;
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let mut entry = zip
            .by_name(&format!("{name}.npy"))
            .map_err(|_| EvalError::file(path, format!("no array '{name}' in the archive")))?;
        let mut bytes = Vec::new();
        entry
            .read_to_end(&mut bytes)
            .map_err(|e| EvalError::io(path, e))?;
        out.push(parse(&bytes).map_err(|e| match e {
            EvalError::Input(m) => EvalError::file(path, format!("array '{name}': {m}")),
            other => other,
        })?);
    }
    Ok(out)
}

/// Writes `bytes` to `path` atomically (a temporary file in the same folder, then rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(EvalError::io(path, e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let values: Vec<f64> = (0..6).map(|v| v as f64 * 0.5 - 1.0).collect();
        for dtype in [Dtype::F32, Dtype::F64] {
            let bytes = to_bytes(&[2, 3], &values, dtype);
            assert_eq!(
                bytes.len() % 64,
                (6 * if dtype == Dtype::F32 { 4 } else { 8 }) % 64
            );
            let m = parse(&bytes).unwrap();
            assert_eq!((m.rows, m.cols), (2, 3));
            assert_eq!(m.data, values);
        }
        let one = parse(&to_bytes(&[4], &values[..4], Dtype::F64)).unwrap();
        assert_eq!((one.rows, one.cols), (4, 1));
        assert!(parse(b"").unwrap_err().to_string().contains("empty"));
        assert!(parse(b"PK\x03\x04 not npy")
            .unwrap_err()
            .to_string()
            .contains("magic"));
        let mut truncated = to_bytes(&[2, 3], &values, Dtype::F64);
        truncated.truncate(truncated.len() - 3);
        assert!(parse(&truncated)
            .unwrap_err()
            .to_string()
            .contains("truncated"));
        let three = to_bytes(&[1, 2, 3], &values, Dtype::F64);
        assert!(parse(&three)
            .unwrap_err()
            .to_string()
            .contains("1-D or 2-D"));
    }

    #[test]
    fn npz_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stats.npz");
        let mu = [1.0, 2.0];
        let sigma = [1.0, 0.5, 0.5, 2.0];
        write_npz(
            &path,
            &[("mu", vec![2], &mu), ("sigma", vec![2, 2], &sigma)],
        )
        .unwrap();
        let got = read_npz(&path, &["mu", "sigma"]).unwrap();
        assert_eq!(got[0].data, mu);
        assert_eq!((got[1].rows, got[1].cols), (2, 2));
        assert_eq!(got[1].data, sigma);
        let err = read_npz(&path, &["nope"]).unwrap_err().to_string();
        assert!(err.contains("stats.npz") && err.contains("nope"), "{err}");
    }
}
