//! Minimal NumPy `.npy` (format 1.0/2.0) reading and writing for little-endian C-order arrays:
//! the goldens the tests compare against and the arrays `owlet logits`/`owlet pixels` write.

use std::io::Write;
use std::path::Path;

use crate::error::{bail_kind, Result};

/// Element types owlet reads or writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NpyDtype {
    F32,
    F64,
    I64,
    U8,
}

impl NpyDtype {
    fn descr(self) -> &'static str {
        match self {
            NpyDtype::F32 => "<f4",
            NpyDtype::F64 => "<f8",
            NpyDtype::I64 => "<i8",
            NpyDtype::U8 => "|u1",
        }
    }
    fn size(self) -> usize {
        match self {
            NpyDtype::F32 => 4,
            NpyDtype::F64 | NpyDtype::I64 => 8,
            NpyDtype::U8 => 1,
        }
    }
}

/// An array read from a `.npy` file: its shape, element type and raw little-endian bytes.
#[derive(Clone, Debug)]
pub struct NpyArray {
    pub shape: Vec<usize>,
    pub dtype: NpyDtype,
    pub data: Vec<u8>,
}

impl NpyArray {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The elements as f64, whatever the stored type.
    pub fn to_f64(&self) -> Vec<f64> {
        let d = &self.data;
        match self.dtype {
            NpyDtype::F32 => d
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
                .collect(),
            NpyDtype::F64 => d
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect(),
            NpyDtype::I64 => d
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")) as f64)
                .collect(),
            NpyDtype::U8 => d.iter().map(|&b| b as f64).collect(),
        }
    }
    /// The elements as f32 (rounded from f64 when stored as f64).
    pub fn to_f32(&self) -> Vec<f32> {
        self.to_f64().into_iter().map(|v| v as f32).collect()
    }
    /// The elements as i64 (integer arrays only).
    pub fn to_i64(&self) -> Vec<i64> {
        match self.dtype {
            NpyDtype::I64 => self
                .data
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect(),
            NpyDtype::U8 => self.data.iter().map(|&b| b as i64).collect(),
            _ => self.to_f64().into_iter().map(|v| v as i64).collect(),
        }
    }
}

/// Parses a `.npy` file's bytes.
pub fn parse(bytes: &[u8]) -> Result<NpyArray> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        bail_kind!(Io, "not a .npy file (bad magic)");
    }
    let major = bytes[6];
    let (hlen, hstart): (usize, usize) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            if bytes.len() < 12 {
                bail_kind!(Io, "truncated .npy header");
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => bail_kind!(Io, "unsupported .npy version {v}"),
    };
    let Some(header) = bytes.get(hstart..hstart.saturating_add(hlen)) else {
        bail_kind!(Io, "truncated .npy header");
    };
    let header = String::from_utf8_lossy(header);
    let field = |key: &str| -> Option<String> {
        let at = header.find(&format!("'{key}'"))?;
        let rest = &header[at + key.len() + 2..];
        let rest = rest.trim_start().strip_prefix(':')?.trim_start();
        Some(rest.to_string())
    };
    let descr = field("descr").unwrap_or_default();
    let dtype = if descr.starts_with("'<f4'") {
        NpyDtype::F32
    } else if descr.starts_with("'<f8'") {
        NpyDtype::F64
    } else if descr.starts_with("'<i8'") {
        NpyDtype::I64
    } else if descr.starts_with("'|u1'") {
        NpyDtype::U8
    } else {
        bail_kind!(Io, "unsupported .npy dtype {descr}");
    };
    if field("fortran_order").is_some_and(|f| f.starts_with("True")) {
        bail_kind!(Io, "Fortran-order .npy arrays are not supported");
    }
    let shape_txt = field("shape").unwrap_or_default();
    let inner = shape_txt
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .unwrap_or("");
    let mut shape = Vec::new();
    for part in inner.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match part.parse::<usize>() {
            Ok(v) => shape.push(v),
            Err(_) => bail_kind!(Io, "bad .npy shape {shape_txt}"),
        }
    }
    let n: usize = shape.iter().product();
    let start = hstart + hlen;
    let need = n * dtype.size();
    let Some(data) = bytes.get(start..start + need) else {
        bail_kind!(Io, "truncated .npy data: need {need} bytes");
    };
    Ok(NpyArray {
        shape,
        dtype,
        data: data.to_vec(),
    })
}

/// Reads a `.npy` file.
pub fn read(path: &Path) -> Result<NpyArray> {
    let bytes = std::fs::read(path).map_err(|e| {
        crate::error::err(
            crate::error::ErrorKind::Io,
            format!("{}: {e}", path.display()),
        )
    })?;
    parse(&bytes).map_err(|e| {
        crate::error::err(
            crate::error::ErrorKind::Io,
            format!("{}: {e}", path.display()),
        )
    })
}

/// Serialises an f32 array of the given shape as `.npy` (format 1.0).
pub fn to_bytes_f32(shape: &[usize], data: &[f32]) -> Vec<u8> {
    let mut out = header(NpyDtype::F32, shape);
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

fn header(dtype: NpyDtype, shape: &[usize]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_txt = if shape.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut h = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': {}, }}",
        dtype.descr(),
        shape_txt
    );
    // Pad so that the data starts on a 64-byte boundary, ending the header with '\n'.
    let total = 10 + h.len() + 1;
    h.push_str(&" ".repeat((64 - total % 64) % 64));
    h.push('\n');
    let mut out = Vec::with_capacity(10 + h.len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(h.len() as u16).to_le_bytes());
    out.extend_from_slice(h.as_bytes());
    out
}

/// Writes an f32 array as a `.npy` file.
pub fn write_f32(path: &Path, shape: &[usize], data: &[f32]) -> std::io::Result<()> {
    let mut f = std::fs::File::create(path)?;
    f.write_all(&to_bytes_f32(shape, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_f32() {
        let bytes = to_bytes_f32(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, -6.5]);
        assert_eq!((bytes.len() - 24) % 64, 0);
        let a = parse(&bytes).unwrap();
        assert_eq!(a.shape, vec![2, 3]);
        assert_eq!(a.to_f32(), vec![1.0, 2.0, 3.0, 4.0, 5.0, -6.5]);
    }

    #[test]
    fn reads_fixture_goldens() {
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/owl2-tiny-a/golden/"
        );
        let ids = read(Path::new(&format!("{dir}mm_input_ids.npy"))).unwrap();
        assert_eq!(ids.shape, vec![1, 16]);
        assert_eq!(ids.to_i64()[5], -200);
        let px = read(Path::new(&format!("{dir}mm_resized_u8.npy"))).unwrap();
        assert_eq!(px.shape, vec![112, 112, 3]);
        let l = read(Path::new(&format!("{dir}mm_logits_last4_f64.npy"))).unwrap();
        assert_eq!(l.shape, vec![4, 32000]);
    }
}
