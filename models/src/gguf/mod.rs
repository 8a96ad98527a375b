//! GGUF files (llama.cpp's model format), version 2 and 3: reader, model, tokenizer, chat
//! template.
//!
//! # The format
//! All integers are little-endian. A file is
//! 1. a header: the magic `GGUF`, a `u32` version (2 or 3), a `u64` tensor count and a `u64`
//!    metadata count;
//! 2. that many metadata entries: a key (a *string*: `u64` byte length, then UTF-8 bytes), a
//!    `u32` value type and the value. Types: 0 `u8`, 1 `i8`, 2 `u16`, 3 `i16`, 4 `u32`,
//!    5 `i32`, 6 `f32`, 7 bool (one byte, 0 or 1), 8 string, 9 array (`u32` element type,
//!    `u64` length, the elements), 10 `u64`, 11 `i64`, 12 `f64`;
//! 3. that many tensor infos: a name (string), a `u32` dimension count, the dimensions as
//!    `u64` listed innermost first, a `u32` ggml type ([`GgmlType`]) and a `u64` offset;
//! 4. padding to the alignment (`general.alignment`, a `u32` power of two, default 32), then
//!    the tensor data: each tensor at the data start plus its offset, itself a multiple of
//!    the alignment.
//!
//! # What is checked
//! Nothing read from the file is trusted: every count, length, dimension and offset is
//! bounded by the named limits below ([`MAX_TENSORS`], [`MAX_KV`], [`MAX_STRING_BYTES`],
//! [`MAX_ARRAY_LEN`], [`MAX_DIMS`], [`MAX_DIM`], [`MAX_ALIGNMENT`]) and by the bytes that
//! remain in the file before anything is allocated or looped over; element counts and byte
//! sizes are overflow-checked products; every tensor's data must lie inside the file and its
//! innermost dimension must be a whole number of blocks; keys and tensor names are unique and
//! strings are UTF-8. Tensors of types Duet cannot dequantize are refused at open. A malformed
//! or truncated file gives [`ModelError::Gguf`] naming the file and the fault.

pub mod chat;
pub mod model;
pub mod quant;
pub mod tokenizer;

pub use chat::ChatTemplate;
pub use model::{gguf_tensor_name, GgufModel};
pub use quant::GgmlType;

use crate::{ModelError, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The four bytes a GGUF file starts with.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// Most tensors a file may declare.
pub const MAX_TENSORS: u64 = 1 << 16;
/// Most metadata entries a file may declare.
pub const MAX_KV: u64 = 1 << 16;
/// Longest string (key, value, tensor name, array element), in bytes.
pub const MAX_STRING_BYTES: u64 = 1 << 24;
/// Longest metadata array.
pub const MAX_ARRAY_LEN: u64 = 1 << 24;
/// Most dimensions of a tensor (ggml's limit).
pub const MAX_DIMS: u32 = 4;
/// Largest single dimension.
pub const MAX_DIM: u64 = 1 << 32;
/// Largest `general.alignment`.
pub const MAX_ALIGNMENT: u64 = 1 << 16;
/// Alignment of tensor data when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// One metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum MetaValue {
    /// Type 0.
    U8(u8),
    /// Type 1.
    I8(i8),
    /// Type 2.
    U16(u16),
    /// Type 3.
    I16(i16),
    /// Type 4.
    U32(u32),
    /// Type 5.
    I32(i32),
    /// Type 6.
    F32(f32),
    /// Type 7.
    Bool(bool),
    /// Type 8.
    Str(String),
    /// Type 9.
    Array(MetaArray),
    /// Type 10.
    U64(u64),
    /// Type 11.
    I64(i64),
    /// Type 12.
    F64(f64),
}

/// A metadata array, stored by element type (nested arrays are refused).
#[derive(Clone, Debug, PartialEq)]
pub enum MetaArray {
    /// Unsigned or signed integers of any width (the type id is kept).
    Int {
        /// The GGUF element type (0-5, 10, 11).
        type_id: u32,
        /// The values, widened.
        values: Vec<i64>,
    },
    /// `u64` values (type 10) beyond `i64::MAX` are kept here.
    U64(Vec<u64>),
    /// `f32` or `f64` values, widened.
    Float(Vec<f64>),
    /// Booleans.
    Bool(Vec<bool>),
    /// Strings.
    Str(Vec<String>),
}

impl MetaArray {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            MetaArray::Int { values, .. } => values.len(),
            MetaArray::U64(v) => v.len(),
            MetaArray::Float(v) => v.len(),
            MetaArray::Bool(v) => v.len(),
            MetaArray::Str(v) => v.len(),
        }
    }

    /// Whether the array is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl MetaValue {
    /// A short name of the value's type, for errors.
    pub fn type_name(&self) -> &'static str {
        match self {
            MetaValue::U8(_) => "u8",
            MetaValue::I8(_) => "i8",
            MetaValue::U16(_) => "u16",
            MetaValue::I16(_) => "i16",
            MetaValue::U32(_) => "u32",
            MetaValue::I32(_) => "i32",
            MetaValue::F32(_) => "f32",
            MetaValue::Bool(_) => "bool",
            MetaValue::Str(_) => "string",
            MetaValue::Array(_) => "array",
            MetaValue::U64(_) => "u64",
            MetaValue::I64(_) => "i64",
            MetaValue::F64(_) => "f64",
        }
    }

    /// An integer value of any width, as `i128` (so every GGUF integer fits).
    pub fn as_int(&self) -> Option<i128> {
        Some(match *self {
            MetaValue::U8(v) => v.into(),
            MetaValue::I8(v) => v.into(),
            MetaValue::U16(v) => v.into(),
            MetaValue::I16(v) => v.into(),
            MetaValue::U32(v) => v.into(),
            MetaValue::I32(v) => v.into(),
            MetaValue::U64(v) => v.into(),
            MetaValue::I64(v) => v.into(),
            _ => return None,
        })
    }

    /// A float (or integer) value as f64.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetaValue::F32(v) => Some(v.into()),
            MetaValue::F64(v) => Some(v),
            _ => self.as_int().map(|v| v as f64),
        }
    }
}

/// One tensor's description.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// Its name (`blk.0.attn_q.weight`).
    pub name: String,
    /// Dimensions as stored: innermost (contiguous) first.
    pub dims: Vec<u64>,
    /// Storage type.
    pub ggml_type: GgmlType,
    /// Offset of its data from the data section's start.
    pub offset: u64,
    /// Number of values.
    pub n_values: u64,
    /// Bytes of data.
    pub n_bytes: u64,
}

impl TensorInfo {
    /// The row-major shape, outermost first (`dims` reversed): a matrix stored with rows of
    /// `dims[0]` values has shape `[rows, dims[0]]`, as HuggingFace's `[out, in]` weights.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }
}

enum Bytes {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

/// A parsed GGUF file: metadata in memory, tensor data mapped and dequantized on request,
/// one tensor at a time.
pub struct GgufFile {
    path: PathBuf,
    bytes: Bytes,
    version: u32,
    metadata: Vec<(String, MetaValue)>,
    meta_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    alignment: u64,
    data_start: u64,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("tensors", &self.tensors.len())
            .field("metadata", &self.metadata.len())
            .finish_non_exhaustive()
    }
}

/// Reads little-endian fields from the file, refusing to run past its end.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

type Parse<T> = std::result::Result<T, String>;

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        self.bytes.len().saturating_sub(self.pos) as u64
    }

    fn take(&mut self, n: u64, what: &str) -> Parse<&'a [u8]> {
        if n > self.remaining() {
            return Err(format!(
                "truncated: {what} needs {n} bytes at offset {}, the file has {} left",
                self.pos,
                self.remaining()
            ));
        }
        let end = self.pos + n as usize;
        let out = self
            .bytes
            .get(self.pos..end)
            .ok_or_else(|| format!("truncated at offset {}", self.pos))?;
        self.pos = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Parse<[u8; N]> {
        let b = self.take(N as u64, what)?;
        b.first_chunk::<N>()
            .copied()
            .ok_or_else(|| format!("truncated: {what}"))
    }

    fn u8(&mut self, what: &str) -> Parse<u8> {
        Ok(u8::from_le_bytes(self.array(what)?))
    }
    fn u16(&mut self, what: &str) -> Parse<u16> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }
    fn u32(&mut self, what: &str) -> Parse<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &str) -> Parse<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A GGUF string: `u64` length (at most [`MAX_STRING_BYTES`] and what is left), UTF-8.
    fn string(&mut self, what: &str) -> Parse<String> {
        let n = self.u64(what)?;
        if n > MAX_STRING_BYTES {
            return Err(format!(
                "{what}: string of {n} bytes exceeds the limit of {MAX_STRING_BYTES}"
            ));
        }
        let b = self.take(n, what)?;
        String::from_utf8(b.to_vec()).map_err(|_| format!("{what}: string is not UTF-8"))
    }
}

/// Bytes one element of GGUF type `t` occupies at least (strings: their length field).
fn min_size(t: u32) -> Option<u64> {
    Some(match t {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        8 | 10..=12 => 8,
        _ => return None,
    })
}

fn scalar(c: &mut Cursor<'_>, t: u32, what: &str) -> Parse<MetaValue> {
    Ok(match t {
        0 => MetaValue::U8(c.u8(what)?),
        1 => MetaValue::I8(c.u8(what)? as i8),
        2 => MetaValue::U16(c.u16(what)?),
        3 => MetaValue::I16(c.u16(what)? as i16),
        4 => MetaValue::U32(c.u32(what)?),
        5 => MetaValue::I32(c.u32(what)? as i32),
        6 => MetaValue::F32(f32::from_bits(c.u32(what)?)),
        7 => match c.u8(what)? {
            0 => MetaValue::Bool(false),
            1 => MetaValue::Bool(true),
            b => return Err(format!("{what}: boolean byte {b} is neither 0 nor 1")),
        },
        8 => MetaValue::Str(c.string(what)?),
        10 => MetaValue::U64(c.u64(what)?),
        11 => MetaValue::I64(c.u64(what)? as i64),
        12 => MetaValue::F64(f64::from_bits(c.u64(what)?)),
        9 => return Err(format!("{what}: nested arrays are not supported")),
        other => return Err(format!("{what}: unknown value type {other}")),
    })
}

fn value(c: &mut Cursor<'_>, t: u32, what: &str) -> Parse<MetaValue> {
    if t != 9 {
        return scalar(c, t, what);
    }
    let et = c.u32(what)?;
    let n = c.u64(what)?;
    let min = min_size(et).ok_or_else(|| match et {
        9 => format!("{what}: nested arrays are not supported"),
        _ => format!("{what}: unknown array element type {et}"),
    })?;
    if n > MAX_ARRAY_LEN {
        return Err(format!(
            "{what}: array of {n} elements exceeds the limit of {MAX_ARRAY_LEN}"
        ));
    }
    // every element takes at least `min` bytes: a count the file cannot hold is refused
    // before anything is allocated
    if n.saturating_mul(min) > c.remaining() {
        return Err(format!(
            "truncated: {what} declares {n} elements, the file has {} bytes left",
            c.remaining()
        ));
    }
    let n = n as usize;
    let arr = match et {
        8 => MetaArray::Str((0..n).map(|_| c.string(what)).collect::<Parse<Vec<_>>>()?),
        7 => MetaArray::Bool(
            (0..n)
                .map(|_| match scalar(c, 7, what)? {
                    MetaValue::Bool(b) => Ok(b),
                    _ => Err(format!("{what}: bad boolean")),
                })
                .collect::<Parse<Vec<_>>>()?,
        ),
        6 | 12 => MetaArray::Float(
            (0..n)
                .map(|_| scalar(c, et, what).map(|v| v.as_f64().unwrap_or(f64::NAN)))
                .collect::<Parse<Vec<_>>>()?,
        ),
        10 => MetaArray::U64((0..n).map(|_| c.u64(what)).collect::<Parse<Vec<_>>>()?),
        _ => MetaArray::Int {
            type_id: et,
            values: (0..n)
                .map(|_| {
                    scalar(c, et, what).map(|v| v.as_int().and_then(|i| i64::try_from(i).ok()))
                })
                .map(|r| r.map(|v| v.unwrap_or(0)))
                .collect::<Parse<Vec<_>>>()?,
        },
    };
    Ok(MetaValue::Array(arr))
}

fn align_up(x: u64, a: u64) -> Option<u64> {
    x.checked_add(a - 1).map(|v| v / a * a)
}

impl GgufFile {
    /// Maps `path` read-only and parses and checks its header, metadata and tensor infos.
    pub fn open(path: &Path) -> Result<Self> {
        let io = |e| ModelError::Io {
            path: path.to_path_buf(),
            source: e,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        if len < 24 {
            return Err(gguf_err(
                path,
                format!("truncated: {len} bytes cannot hold the 24-byte GGUF header"),
            ));
        }
        // SAFETY: the mapping is read-only and private to this process. Undefined behaviour
        // would need another process to truncate or rewrite the model file while Duet runs;
        // model files are inputs that must not change during a run (as for safetensors in
        // `weights.rs`). Every access goes through bounds-checked slices of the mapping;
        // `tests/gguf_mutation.rs` exercises truncated and corrupted files through this path.
        #[allow(unsafe_code)]
        let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        Self::parse(path, Bytes::Mapped(mmap))
    }

    /// Parses a GGUF image held in memory (`path` names it in errors).
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<Self> {
        Self::parse(path, Bytes::Owned(bytes))
    }

    fn parse(path: &Path, bytes: Bytes) -> Result<Self> {
        let parsed = Self::parse_header(&bytes).map_err(|r| gguf_err(path, r))?;
        let (version, metadata, tensors, alignment, data_start) = parsed;
        let meta_index = metadata
            .iter()
            .enumerate()
            .map(|(i, (k, _))| (k.clone(), i))
            .collect();
        let tensor_index = tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Ok(Self {
            path: path.to_path_buf(),
            bytes,
            version,
            metadata,
            meta_index,
            tensors,
            tensor_index,
            alignment,
            data_start,
        })
    }

    #[allow(clippy::type_complexity)]
    fn parse_header(
        bytes: &[u8],
    ) -> Parse<(u32, Vec<(String, MetaValue)>, Vec<TensorInfo>, u64, u64)> {
        let mut c = Cursor { bytes, pos: 0 };
        let magic: [u8; 4] = c.array("magic")?;
        if magic != GGUF_MAGIC {
            return Err(format!(
                "not a GGUF file (starts with {magic:02x?}, expected \"GGUF\")"
            ));
        }
        let version = c.u32("version")?;
        match version {
            2 | 3 => {}
            1 => return Err("GGUF version 1 is not supported (versions 2 and 3 are)".into()),
            v if v.swap_bytes() == 2 || v.swap_bytes() == 3 => {
                return Err("big-endian GGUF files are not supported".into())
            }
            v => return Err(format!("unsupported GGUF version {v} (2 and 3 are read)")),
        }
        let n_tensors = c.u64("tensor count")?;
        let n_kv = c.u64("metadata count")?;
        if n_tensors > MAX_TENSORS {
            return Err(format!(
                "{n_tensors} tensors exceeds the limit of {MAX_TENSORS}"
            ));
        }
        if n_kv > MAX_KV {
            return Err(format!(
                "{n_kv} metadata entries exceeds the limit of {MAX_KV}"
            ));
        }
        // a key takes at least 12 bytes (length, type); a tensor info at least 24
        if n_kv
            .saturating_mul(12)
            .saturating_add(n_tensors.saturating_mul(24))
            > c.remaining()
        {
            return Err(format!(
                "truncated: {n_kv} metadata entries and {n_tensors} tensors cannot fit in the \
                 {} bytes left",
                c.remaining()
            ));
        }
        let mut metadata = Vec::with_capacity(n_kv as usize);
        let mut seen = std::collections::HashSet::new();
        for i in 0..n_kv {
            let key = c.string(&format!("metadata key {i}"))?;
            let t = c.u32(&format!("type of {key:?}"))?;
            let v = value(&mut c, t, &format!("metadata {key:?}"))?;
            if !seen.insert(key.clone()) {
                return Err(format!("duplicate metadata key {key:?}"));
            }
            metadata.push((key, v));
        }
        let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some((_, MetaValue::U32(a))) => {
                let a = u64::from(*a);
                if a == 0 || !a.is_power_of_two() || a > MAX_ALIGNMENT {
                    return Err(format!(
                        "general.alignment {a} is not a power of two up to {MAX_ALIGNMENT}"
                    ));
                }
                a
            }
            Some((_, v)) => {
                return Err(format!(
                    "general.alignment has type {}, expected u32",
                    v.type_name()
                ))
            }
        };
        let mut tensors = Vec::with_capacity(n_tensors as usize);
        let mut names = std::collections::HashSet::new();
        for i in 0..n_tensors {
            let name = c.string(&format!("name of tensor {i}"))?;
            let what = format!("tensor {name:?}");
            let n_dims = c.u32(&what)?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(format!(
                    "{what} has {n_dims} dimensions (1 to {MAX_DIMS} allowed)"
                ));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                let d = c.u64(&what)?;
                if d == 0 || d > MAX_DIM {
                    return Err(format!("{what} has dimension {d} (1 to {MAX_DIM} allowed)"));
                }
                dims.push(d);
            }
            let type_id = c.u32(&what)?;
            let ggml_type = GgmlType::from_id(type_id).ok_or_else(|| {
                format!(
                    "{what} has ggml type {type_id}, which Duet does not read (supported: {})",
                    GgmlType::ALL.map(GgmlType::name).join(", ")
                )
            })?;
            let offset = c.u64(&what)?;
            if offset % alignment != 0 {
                return Err(format!(
                    "{what} has offset {offset}, not a multiple of the alignment {alignment}"
                ));
            }
            let n_values = dims
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d))
                .ok_or_else(|| format!("{what}: dimensions {dims:?} overflow"))?;
            let inner = dims.first().copied().unwrap_or(0);
            if inner % ggml_type.block_values() as u64 != 0 {
                return Err(format!(
                    "{what}: innermost dimension {inner} is not a multiple of the {} block of \
                     {} values",
                    ggml_type.name(),
                    ggml_type.block_values()
                ));
            }
            let n_bytes = ggml_type
                .bytes_for(n_values)
                .ok_or_else(|| format!("{what}: size overflows"))?;
            if !names.insert(name.clone()) {
                return Err(format!("duplicate tensor name {name:?}"));
            }
            tensors.push(TensorInfo {
                name,
                dims,
                ggml_type,
                offset,
                n_values,
                n_bytes,
            });
        }
        let data_start = align_up(c.pos as u64, alignment)
            .ok_or_else(|| "data section offset overflows".to_string())?;
        let file_len = bytes.len() as u64;
        for t in &tensors {
            let end = data_start
                .checked_add(t.offset)
                .and_then(|s| s.checked_add(t.n_bytes));
            match end {
                Some(e) if e <= file_len => {}
                _ => {
                    return Err(format!(
                        "truncated: tensor {:?} ({} bytes at data offset {}) lies outside the \
                         file of {file_len} bytes",
                        t.name, t.n_bytes, t.offset
                    ))
                }
            }
        }
        Ok((version, metadata, tensors, alignment, data_start))
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The data alignment.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Every metadata entry, in file order.
    pub fn metadata(&self) -> impl Iterator<Item = (&str, &MetaValue)> {
        self.metadata.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The value of key `key`.
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.meta_index
            .get(key)
            .and_then(|&i| self.metadata.get(i))
            .map(|(_, v)| v)
    }

    /// An error about this file.
    pub(crate) fn err(&self, reason: impl Into<String>) -> ModelError {
        gguf_err(&self.path, reason.into())
    }

    fn wrong_type(&self, key: &str, v: &MetaValue, want: &str) -> ModelError {
        self.err(format!(
            "metadata {key:?} has type {}, expected {want}",
            v.type_name()
        ))
    }

    /// A string value; absent is `None`, another type is an error.
    pub fn get_str(&self, key: &str) -> Result<Option<&str>> {
        match self.get(key) {
            None => Ok(None),
            Some(MetaValue::Str(s)) => Ok(Some(s)),
            Some(v) => Err(self.wrong_type(key, v, "string")),
        }
    }

    /// A non-negative integer value of any integer type.
    pub fn get_u64(&self, key: &str) -> Result<Option<u64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match v.as_int() {
                Some(i) => u64::try_from(i)
                    .map(Some)
                    .map_err(|_| self.err(format!("metadata {key:?} is negative ({i})"))),
                None => Err(self.wrong_type(key, v, "an integer")),
            },
        }
    }

    /// A number (float or integer) as f64.
    pub fn get_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.wrong_type(key, v, "a number")),
        }
    }

    /// A boolean value.
    pub fn get_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(MetaValue::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.wrong_type(key, v, "bool")),
        }
    }

    /// An array of strings.
    pub fn get_str_array(&self, key: &str) -> Result<Option<&[String]>> {
        match self.get(key) {
            None => Ok(None),
            Some(MetaValue::Array(MetaArray::Str(v))) => Ok(Some(v)),
            Some(MetaValue::Array(a)) if a.is_empty() => Ok(Some(&[])),
            Some(v) => Err(self.wrong_type(key, v, "an array of strings")),
        }
    }

    /// An array of integers (any width up to 32 bits, or 64 bits within `i64`).
    pub fn get_int_array(&self, key: &str) -> Result<Option<&[i64]>> {
        match self.get(key) {
            None => Ok(None),
            Some(MetaValue::Array(MetaArray::Int { values, .. })) => Ok(Some(values)),
            Some(MetaValue::Array(a)) if a.is_empty() => Ok(Some(&[])),
            Some(v) => Err(self.wrong_type(key, v, "an array of integers")),
        }
    }

    /// An array of floats.
    pub fn get_float_array(&self, key: &str) -> Result<Option<&[f64]>> {
        match self.get(key) {
            None => Ok(None),
            Some(MetaValue::Array(MetaArray::Float(v))) => Ok(Some(v)),
            Some(MetaValue::Array(a)) if a.is_empty() => Ok(Some(&[])),
            Some(v) => Err(self.wrong_type(key, v, "an array of floats")),
        }
    }

    /// Every tensor, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The tensor named `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index
            .get(name)
            .and_then(|&i| self.tensors.get(i))
    }

    /// The stored bytes of a tensor (ranges were checked at open).
    pub fn tensor_bytes(&self, info: &TensorInfo) -> Result<&[u8]> {
        let start = self.data_start.checked_add(info.offset);
        let end = start.and_then(|s| s.checked_add(info.n_bytes));
        match (start, end) {
            (Some(s), Some(e)) => usize::try_from(s)
                .ok()
                .zip(usize::try_from(e).ok())
                .and_then(|(s, e)| self.bytes.get(s..e)),
            _ => None,
        }
        .ok_or_else(|| self.err(format!("tensor {:?} lies outside the file", info.name)))
    }

    fn info_and_bytes(&self, name: &str) -> Result<(&TensorInfo, &[u8], usize)> {
        let info = self.tensor(name).ok_or_else(|| ModelError::MissingTensor {
            path: self.path.clone(),
            name: name.to_string(),
        })?;
        let bytes = self.tensor_bytes(info)?;
        let n = usize::try_from(info.n_values)
            .map_err(|_| self.err(format!("tensor {name:?} is too large")))?;
        Ok((info, bytes, n))
    }

    /// Tensor `name` dequantized to f32, in storage order (row-major over
    /// [`TensorInfo::shape`]).
    pub fn read_f32(&self, name: &str) -> Result<Vec<f32>> {
        let (info, bytes, n) = self.info_and_bytes(name)?;
        let mut out = vec![0f32; n];
        quant::dequantize(info.ggml_type, bytes, &mut out)
            .map_err(|r| self.err(format!("tensor {name:?}: {r}")))?;
        Ok(out)
    }

    /// Tensor `name` dequantized to f32 and widened to f64 (no f32 copy of the whole tensor
    /// is made).
    pub fn read_f64(&self, name: &str) -> Result<Vec<f64>> {
        let (info, bytes, n) = self.info_and_bytes(name)?;
        let mut out = vec![0f64; n];
        quant::dequantize_f64(info.ggml_type, bytes, &mut out)
            .map_err(|r| self.err(format!("tensor {name:?}: {r}")))?;
        Ok(out)
    }
}

fn gguf_err(path: &Path, reason: String) -> ModelError {
    ModelError::Gguf {
        path: path.to_path_buf(),
        reason,
    }
}
