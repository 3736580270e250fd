//! GGUF files in pure Rust: a bounded header reader and a writer.
//!
//! The reader parses the header (metadata and tensor infos) without trusting it: every
//! length is bounded and checked against the file size, so a hostile file gives an error,
//! never a huge allocation or a panic. The writer produces GGUF v3 files that llama.cpp
//! loads; the test-model generator and the Hugging Face converter build on it.
//!
//! We write this ourselves rather than take a crate: the GGUF crates on crates.io either
//! pull in a whole ML framework (candle) or do not bound what they read.
//!
//! Beside it: `validate` (the checks every model file passes before llama.cpp sees it),
//! `shape` (model shapes) and `scratch` (files written beside their destination).

pub mod scratch;
pub mod shape;
pub mod validate;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};

pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
pub const GGUF_VERSION: u32 = 3;
pub const DEFAULT_ALIGNMENT: u64 = 32;

const MAX_STRING_BYTES: u64 = 64 << 20;
const MAX_ARRAY_ITEMS: u64 = 64 << 20;
/// Memory the decoded metadata may take in all (a 150k-token BPE vocabulary with its merges
/// takes ~40 MiB): a hostile header of many one-byte items cannot make the reader allocate
/// ~32 bytes per byte of file.
const MAX_METADATA_BYTES: u64 = 256 << 20;
/// Items reserved up front for an array; it grows as items are actually read.
const ARRAY_RESERVE: u64 = 4096;
const MAX_KV: u64 = 1 << 16;
const MAX_TENSORS: u64 = 1 << 20;
const MAX_DIMS: u32 = 4;

#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not a GGUF file (magic {magic:02x?})")]
    NotGguf { path: PathBuf, magic: [u8; 4] },
    #[error("{path}: GGUF version {version} is not supported (2 and 3 are)")]
    Version { path: PathBuf, version: u32 },
    #[error("{path}: malformed GGUF header: {what}")]
    Malformed { path: PathBuf, what: String },
}

/// The type tag of a metadata value, as numbered in the GGUF specification.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueType {
    U8 = 0,
    I8 = 1,
    U16 = 2,
    I16 = 3,
    U32 = 4,
    I32 = 5,
    F32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    U64 = 10,
    I64 = 11,
    F64 = 12,
}

impl ValueType {
    fn from_u32(raw: u32) -> Option<ValueType> {
        use ValueType::*;
        Some(match raw {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => String,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }
}

/// One metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    /// Homogeneous array; `elem` is the element type (kept for empty arrays).
    Array {
        elem: ValueType,
        items: Vec<Value>,
    },
    U64(u64),
    I64(i64),
    F64(f64),
}

impl Value {
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::U8(_) => ValueType::U8,
            Value::I8(_) => ValueType::I8,
            Value::U16(_) => ValueType::U16,
            Value::I16(_) => ValueType::I16,
            Value::U32(_) => ValueType::U32,
            Value::I32(_) => ValueType::I32,
            Value::F32(_) => ValueType::F32,
            Value::Bool(_) => ValueType::Bool,
            Value::String(_) => ValueType::String,
            Value::Array { .. } => ValueType::Array,
            Value::U64(_) => ValueType::U64,
            Value::I64(_) => ValueType::I64,
            Value::F64(_) => ValueType::F64,
        }
    }

    /// The value as an unsigned integer, whatever integer type the file used.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array { items, .. } => Some(items),
            _ => None,
        }
    }

    pub fn string_array(items: impl IntoIterator<Item = String>) -> Value {
        Value::Array {
            elem: ValueType::String,
            items: items.into_iter().map(Value::String).collect(),
        }
    }

    pub fn f32_array(items: impl IntoIterator<Item = f32>) -> Value {
        Value::Array {
            elem: ValueType::F32,
            items: items.into_iter().map(Value::F32).collect(),
        }
    }

    pub fn i32_array(items: impl IntoIterator<Item = i32>) -> Value {
        Value::Array {
            elem: ValueType::I32,
            items: items.into_iter().map(Value::I32).collect(),
        }
    }
}

/// ggml tensor element types that this project reads or writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GgmlType {
    F32,
    F16,
    Q8_0,
    BF16,
    /// Any other type id (k-quants and friends); sizes come from [`GgmlType::block`].
    Other(u32),
}

impl GgmlType {
    pub fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q8_0 => 8,
            GgmlType::BF16 => 30,
            GgmlType::Other(id) => id,
        }
    }

    pub fn from_id(id: u32) -> GgmlType {
        match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            8 => GgmlType::Q8_0,
            30 => GgmlType::BF16,
            other => GgmlType::Other(other),
        }
    }

    /// (elements per block, bytes per block), for the types llama.cpp's llama models use.
    pub fn block(self) -> Option<(u64, u64)> {
        Some(match self.id() {
            0 => (1, 4),
            1 | 30 => (1, 2),
            2 => (32, 18),    // Q4_0
            3 => (32, 20),    // Q4_1
            6 => (32, 22),    // Q5_0
            7 => (32, 24),    // Q5_1
            8 => (32, 34),    // Q8_0
            10 => (256, 84),  // Q2_K
            11 => (256, 110), // Q3_K
            12 => (256, 144), // Q4_K
            13 => (256, 176), // Q5_K
            14 => (256, 210), // Q6_K
            _ => return None,
        })
    }
}

/// A tensor as described in the header; `offset` is relative to the data section.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` is the contiguous (row) dimension.
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    pub offset: u64,
}

impl TensorInfo {
    pub fn n_elements(&self) -> Option<u64> {
        self.dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
    }

    /// Bytes of data, or `None` for unknown types or sizes that overflow.
    pub fn n_bytes(&self) -> Option<u64> {
        let (block_elems, block_bytes) = self.ggml_type.block()?;
        let row = *self.dims.first()?;
        if row % block_elems != 0 {
            return None;
        }
        let n = self.n_elements()?;
        (n / block_elems).checked_mul(block_bytes)
    }
}

/// The parsed header of a GGUF file.
#[derive(Clone, Debug)]
pub struct GgufHeader {
    pub version: u32,
    pub metadata: BTreeMap<String, Value>,
    pub tensors: Vec<TensorInfo>,
    /// Absolute file offset where tensor data begins.
    pub data_offset: u64,
    pub file_len: u64,
}

impl GgufHeader {
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }

    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(Value::as_u64)
    }

    pub fn alignment(&self) -> u64 {
        self.get_u64("general.alignment")
            .unwrap_or(DEFAULT_ALIGNMENT)
    }
}

/// Reads and checks the header of the GGUF file at `path`. Tensor data is not read, but every
/// tensor's extent is checked to lie inside the file.
pub fn read_header(path: &Path) -> Result<GgufHeader, GgufError> {
    let io_err = |source| GgufError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io_err)?;
    let file_len = file.metadata().map_err(io_err)?.len();
    let mut r = HeaderReader {
        inner: BufReader::new(file),
        path,
        file_len,
        decoded_bytes: 0,
    };
    let header = r.header()?;
    Ok(header)
}

/// [`read_header`] on bytes in memory (errors name the file `<memory>`).
pub fn parse_header(bytes: &[u8]) -> Result<GgufHeader, GgufError> {
    let path = Path::new("<memory>");
    let mut r = HeaderReader {
        inner: io::Cursor::new(bytes),
        path,
        file_len: bytes.len() as u64,
        decoded_bytes: 0,
    };
    r.header()
}

struct HeaderReader<'p, R> {
    inner: R,
    path: &'p Path,
    file_len: u64,
    /// Memory the metadata decoded so far takes (see [`MAX_METADATA_BYTES`]).
    decoded_bytes: u64,
}

impl<R: Read + Seek> HeaderReader<'_, R> {
    fn malformed(&self, what: impl Into<String>) -> GgufError {
        GgufError::Malformed {
            path: self.path.to_path_buf(),
            what: what.into(),
        }
    }

    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], GgufError> {
        let mut buf = [0u8; N];
        self.inner.read_exact(&mut buf).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                self.malformed("file ends inside the header")
            } else {
                GgufError::Io {
                    path: self.path.to_path_buf(),
                    source: e,
                }
            }
        })?;
        Ok(buf)
    }

    fn u32(&mut self) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }

    fn u64(&mut self) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }

    fn string(&mut self) -> Result<String, GgufError> {
        let len = self.u64()?;
        if len > MAX_STRING_BYTES || len > self.file_len {
            return Err(self.malformed(format!("string of {len} bytes")));
        }
        self.account(len)?;
        let mut buf = vec![0u8; len as usize];
        self.inner
            .read_exact(&mut buf)
            .map_err(|_| self.malformed("file ends inside a string"))?;
        String::from_utf8(buf).map_err(|_| self.malformed("string is not UTF-8"))
    }

    /// Counts `n` bytes of decoded metadata against [`MAX_METADATA_BYTES`].
    fn account(&mut self, n: u64) -> Result<(), GgufError> {
        self.decoded_bytes = self.decoded_bytes.saturating_add(n);
        if self.decoded_bytes > MAX_METADATA_BYTES {
            return Err(self.malformed(format!(
                "metadata would take more than {} MiB of memory",
                MAX_METADATA_BYTES >> 20
            )));
        }
        Ok(())
    }

    fn value(&mut self, ty: ValueType, depth: u8) -> Result<Value, GgufError> {
        self.account(std::mem::size_of::<Value>() as u64)?;
        Ok(match ty {
            ValueType::U8 => Value::U8(u8::from_le_bytes(self.bytes()?)),
            ValueType::I8 => Value::I8(i8::from_le_bytes(self.bytes()?)),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.bytes()?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.bytes()?)),
            ValueType::U32 => Value::U32(self.u32()?),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.bytes()?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.bytes()?)),
            ValueType::Bool => match self.bytes::<1>()?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(self.malformed(format!("bool value {b}"))),
            },
            ValueType::String => Value::String(self.string()?),
            ValueType::U64 => Value::U64(self.u64()?),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.bytes()?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.bytes()?)),
            ValueType::Array => {
                if depth > 0 {
                    return Err(self.malformed("nested arrays"));
                }
                let raw = self.u32()?;
                let elem = ValueType::from_u32(raw)
                    .ok_or_else(|| self.malformed(format!("array element type {raw}")))?;
                let n = self.u64()?;
                if n > MAX_ARRAY_ITEMS || n > self.file_len {
                    return Err(self.malformed(format!("array of {n} items")));
                }
                let mut items = Vec::with_capacity(n.min(ARRAY_RESERVE) as usize);
                for _ in 0..n {
                    items.push(self.value(elem, depth + 1)?);
                }
                Value::Array { elem, items }
            }
        })
    }

    fn header(&mut self) -> Result<GgufHeader, GgufError> {
        let magic = self.bytes::<4>()?;
        if magic != GGUF_MAGIC {
            return Err(GgufError::NotGguf {
                path: self.path.to_path_buf(),
                magic,
            });
        }
        let version = self.u32()?;
        if !(2..=3).contains(&version) {
            return Err(GgufError::Version {
                path: self.path.to_path_buf(),
                version,
            });
        }
        let n_tensors = self.u64()?;
        let n_kv = self.u64()?;
        if n_tensors > MAX_TENSORS || n_kv > MAX_KV {
            return Err(self.malformed(format!("{n_tensors} tensors, {n_kv} metadata keys")));
        }
        let mut metadata = BTreeMap::new();
        for _ in 0..n_kv {
            let key = self.string()?;
            let raw = self.u32()?;
            let ty = ValueType::from_u32(raw)
                .ok_or_else(|| self.malformed(format!("value type {raw} for key {key}")))?;
            let value = self.value(ty, 0)?;
            if metadata.insert(key.clone(), value).is_some() {
                return Err(self.malformed(format!("duplicate key {key}")));
            }
        }
        let mut tensors = Vec::with_capacity(n_tensors as usize);
        for _ in 0..n_tensors {
            let name = self.string()?;
            let n_dims = self.u32()?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(self.malformed(format!("tensor {name} has {n_dims} dimensions")));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(self.u64()?);
            }
            let ggml_type = GgmlType::from_id(self.u32()?);
            let offset = self.u64()?;
            tensors.push(TensorInfo {
                name,
                dims,
                ggml_type,
                offset,
            });
        }
        let pos = self.inner.stream_position().map_err(|e| GgufError::Io {
            path: self.path.to_path_buf(),
            source: e,
        })?;
        let mut header = GgufHeader {
            version,
            metadata,
            tensors,
            data_offset: 0,
            file_len: self.file_len,
        };
        let align = header.alignment();
        if align == 0 || !align.is_power_of_two() {
            return Err(self.malformed(format!("alignment {align}")));
        }
        header.data_offset = pos.next_multiple_of(align);
        for t in &header.tensors {
            let n_bytes = t.n_bytes().ok_or_else(|| {
                self.malformed(format!(
                    "tensor {} has type or shape we cannot size",
                    t.name
                ))
            })?;
            let end = header
                .data_offset
                .checked_add(t.offset)
                .and_then(|s| s.checked_add(n_bytes));
            match end {
                Some(end) if end <= self.file_len && t.offset % align == 0 => {}
                _ => {
                    return Err(self.malformed(format!(
                        "tensor {} lies outside the file (offset {}, {} bytes, file {} bytes)",
                        t.name, t.offset, n_bytes, self.file_len
                    )))
                }
            }
        }
        Ok(header)
    }
}

/// A tensor to write: shape in ggml order and its raw bytes in `ggml_type`'s layout.
#[derive(Clone, Debug)]
pub struct TensorData {
    pub name: String,
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    pub data: Vec<u8>,
}

/// Collects metadata and tensors, then writes a GGUF v3 file atomically.
#[derive(Debug, Default)]
pub struct GgufWriter {
    metadata: Vec<(String, Value)>,
    tensors: Vec<TensorData>,
}

impl GgufWriter {
    pub fn new() -> GgufWriter {
        GgufWriter::default()
    }

    /// Sets a key, replacing an earlier value for it.
    pub fn set(&mut self, key: &str, value: Value) {
        match self.metadata.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.metadata.push((key.to_owned(), value)),
        }
    }

    pub fn add_tensor(&mut self, tensor: TensorData) {
        self.tensors.push(tensor);
    }

    /// Writes to `path` through a temporary file in the same directory and a rename, so a
    /// reader never sees a half-written model.
    pub fn write(&self, path: &Path) -> io::Result<()> {
        let tmp = crate::gguf::scratch::ScratchPath::beside(path, "write");
        self.write_to(tmp.path())?;
        tmp.persist(path)
    }

    /// Writes to `path` in place (callers that need atomicity use [`GgufWriter::write`]).
    pub(crate) fn write_to(&self, path: &Path) -> io::Result<()> {
        let mut w = BufWriter::new(File::create(path)?);
        let align = self
            .metadata
            .iter()
            .find(|(k, _)| k == "general.alignment")
            .and_then(|(_, v)| v.as_u64())
            .unwrap_or(DEFAULT_ALIGNMENT);
        let mut w = Counting {
            inner: &mut w,
            pos: 0,
        };
        w.put(&GGUF_MAGIC)?;
        w.put(&GGUF_VERSION.to_le_bytes())?;
        w.put(&(self.tensors.len() as u64).to_le_bytes())?;
        w.put(&(self.metadata.len() as u64).to_le_bytes())?;
        let mut buf = Vec::new();
        for (key, value) in &self.metadata {
            buf.clear();
            encode_string(&mut buf, key);
            buf.extend_from_slice(&(value.value_type() as u32).to_le_bytes());
            encode_value(&mut buf, value);
            w.put(&buf)?;
        }
        let mut offset = 0u64;
        for t in &self.tensors {
            buf.clear();
            encode_string(&mut buf, &t.name);
            buf.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                buf.extend_from_slice(&d.to_le_bytes());
            }
            buf.extend_from_slice(&t.ggml_type.id().to_le_bytes());
            buf.extend_from_slice(&offset.to_le_bytes());
            w.put(&buf)?;
            offset = (offset + t.data.len() as u64).next_multiple_of(align);
        }
        w.pad(align)?;
        for t in &self.tensors {
            w.put(&t.data)?;
            w.pad(align)?;
        }
        let w = w.inner;
        w.flush()?;
        w.get_ref().sync_all()
    }
}

/// A writer that knows how many bytes it has written, for alignment padding.
struct Counting<'a, W> {
    inner: &'a mut W,
    pos: u64,
}

impl<W: Write> Counting<'_, W> {
    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.pos += bytes.len() as u64;
        self.inner.write_all(bytes)
    }

    fn pad(&mut self, align: u64) -> io::Result<()> {
        let n = (self.pos.next_multiple_of(align) - self.pos) as usize;
        self.put(&vec![0u8; n])
    }
}

fn encode_string(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(&(s.len() as u64).to_le_bytes());
    buf.extend_from_slice(s.as_bytes());
}

fn encode_value(buf: &mut Vec<u8>, value: &Value) {
    match value {
        Value::U8(v) => buf.extend_from_slice(&v.to_le_bytes()),
        Value::I8(v) => buf.extend_from_slice(&v.to_le_bytes()),
        Value::U16(v) => buf.extend_from_slice(&v.to_le_bytes()),
        Value::I16(v) => buf.extend_from_slice(&v.to_le_bytes()),
        Value::U32(v) => buf.extend_from_slice(&v.to_le_bytes()),
        Value::I32(v) => buf.extend_from_slice(&v.to_le_bytes()),
        Value::F32(v) => buf.extend_from_slice(&v.to_le_bytes()),
        Value::Bool(v) => buf.push(u8::from(*v)),
        Value::String(s) => encode_string(buf, s),
        Value::Array { elem, items } => {
            buf.extend_from_slice(&(*elem as u32).to_le_bytes());
            buf.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                encode_value(buf, item);
            }
        }
        Value::U64(v) => buf.extend_from_slice(&v.to_le_bytes()),
        Value::I64(v) => buf.extend_from_slice(&v.to_le_bytes()),
        Value::F64(v) => buf.extend_from_slice(&v.to_le_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header with one metadata array of `n` one-byte bools.
    fn bool_array_header(n: u64) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(0u64.to_le_bytes()); // tensors
        b.extend(1u64.to_le_bytes()); // metadata entries
        b.extend(4u64.to_le_bytes());
        b.extend(b"many");
        b.extend(9u32.to_le_bytes()); // array
        b.extend(7u32.to_le_bytes()); // of bools
        b.extend(n.to_le_bytes());
        b.resize(b.len() + n as usize, 0);
        b
    }

    #[test]
    fn a_header_cannot_make_the_reader_allocate_many_times_its_size() {
        // 16 M one-byte items would decode to ~512 MiB of values: refused part-way, and the
        // array never reserved room for all of them up front.
        let err = parse_header(&bool_array_header(16 << 20)).expect_err("over the budget");
        assert!(err.to_string().contains("MiB of memory"), "{err}");
        // A lying count in a small file ends at the file's end, not in an allocation.
        let mut short = bool_array_header(8);
        let n_at = short.len() - 8 - 8;
        short[n_at..n_at + 8].copy_from_slice(&(1u64 << 24).to_le_bytes());
        let err = parse_header(&short).expect_err("count beyond the file");
        assert!(err.to_string().contains("array of"), "{err}");
        assert!(parse_header(&bool_array_header(1000)).is_ok());
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("amd-gguf-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir.join(name)
    }

    #[test]
    fn writes_what_it_reads_back() {
        let mut w = GgufWriter::new();
        w.set("general.architecture", Value::String("llama".into()));
        w.set("llama.block_count", Value::U32(2));
        w.set(
            "tokenizer.ggml.tokens",
            Value::string_array(["a".into(), "b".into()]),
        );
        w.set("empty", Value::f32_array([]));
        w.add_tensor(TensorData {
            name: "t".into(),
            dims: vec![3, 2],
            ggml_type: GgmlType::F32,
            data: vec![0u8; 24],
        });
        w.add_tensor(TensorData {
            name: "u".into(),
            dims: vec![4],
            ggml_type: GgmlType::F16,
            data: vec![1u8; 8],
        });
        let path = scratch("roundtrip.gguf");
        w.write(&path).expect("write");
        let h = read_header(&path).expect("read");
        assert_eq!(h.get_str("general.architecture"), Some("llama"));
        assert_eq!(h.get_u64("llama.block_count"), Some(2));
        assert_eq!(
            h.get("tokenizer.ggml.tokens")
                .and_then(Value::as_array)
                .map(<[_]>::len),
            Some(2)
        );
        assert_eq!(h.tensors.len(), 2);
        assert_eq!(h.tensors[1].offset, 32);
        assert_eq!(h.data_offset % 32, 0);
        assert_eq!(h.file_len, h.data_offset + 32 + 32);
    }

    #[test]
    fn rejects_truncated_and_foreign_files() {
        let path = scratch("garbage.gguf");
        std::fs::write(&path, b"not a model at all").expect("write");
        assert!(matches!(read_header(&path), Err(GgufError::NotGguf { .. })));

        let mut w = GgufWriter::new();
        w.add_tensor(TensorData {
            name: "t".into(),
            dims: vec![8],
            ggml_type: GgmlType::F32,
            data: vec![0u8; 32],
        });
        let path = scratch("truncated.gguf");
        w.write(&path).expect("write");
        let bytes = std::fs::read(&path).expect("read");
        std::fs::write(&path, &bytes[..bytes.len() - 4]).expect("truncate");
        let err = read_header(&path).expect_err("truncated data must be refused");
        assert!(err.to_string().contains("outside the file"), "{err}");
        std::fs::write(&path, &bytes[..20]).expect("truncate");
        assert!(matches!(
            read_header(&path),
            Err(GgufError::Malformed { .. })
        ));
    }

    #[test]
    fn refuses_absurd_lengths() {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(b"GGUF");
        bytes.extend_from_slice(&3u32.to_le_bytes());
        bytes.extend_from_slice(&0u64.to_le_bytes());
        bytes.extend_from_slice(&1u64.to_le_bytes());
        bytes.extend_from_slice(&u64::MAX.to_le_bytes()); // key length
        let path = scratch("absurd.gguf");
        std::fs::write(&path, &bytes).expect("write");
        let err = read_header(&path).expect_err("must refuse");
        assert!(err.to_string().contains("string of"), "{err}");
    }
}
