//! One Parquet file of an export, written row group by row group with the `parquet` crate's
//! column writers (no Arrow: its build is several times the size, and a row of s3meta is a
//! handful of scalars and two string maps).
//!
//! Receives: the columns' names and kinds once, then rows of SQLite values in that order.
//! Sends on: a ZSTD-compressed file whose metadata and tags columns are Parquet
//! `MAP<STRING, STRING>`. Invariant: at most one row group is held in memory, and a row group
//! is closed as soon as it holds `max_rows` rows or `max_bytes` bytes of values, whichever
//! comes first, so memory is bounded by the row group, never by the database.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parquet::basic::{Compression, ZstdLevel};
use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
use parquet::errors::ParquetError;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use rusqlite::types::ValueRef;

use crate::error::{Error, Result};

/// How a column is stored in Parquet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// UTF-8 text (`BYTE_ARRAY (STRING)`); times are RFC 3339 UTC text as in the database.
    Text,
    /// `INT64`: sizes, counts, HTTP statuses, and SQLite's 0/1 flags (as `query` prints them).
    Int,
    /// A JSON object of strings in the database, a `MAP<STRING, STRING>` here.
    Map,
}

/// What a buffered text value costs besides its bytes: the `ByteArray` (a `Bytes`, 32 bytes),
/// its allocation's rounding and its level (measured: without it, a 64 MiB bound held 120 MB).
const VALUE_OVERHEAD: usize = 48;

/// Where a row group ends.
#[derive(Debug, Clone, Copy)]
pub struct RowGroupLimits {
    pub max_rows: usize,
    pub max_bytes: usize,
}

/// One column's values of the row group being filled, with their definition (and for maps
/// repetition) levels.
enum Buffer {
    Text {
        values: Vec<ByteArray>,
        defs: Vec<i16>,
    },
    Int {
        values: Vec<i64>,
        defs: Vec<i16>,
    },
    /// `optional group (MAP) { repeated group key_value { required key; optional value } }`:
    /// key levels: 0 null map, 1 empty map, 2 an entry; value levels one more for a value.
    Map {
        keys: Vec<ByteArray>,
        values: Vec<ByteArray>,
        key_defs: Vec<i16>,
        value_defs: Vec<i16>,
        reps: Vec<i16>,
    },
}

impl Buffer {
    fn new(kind: Kind) -> Buffer {
        match kind {
            Kind::Text => Buffer::Text {
                values: Vec::new(),
                defs: Vec::new(),
            },
            Kind::Int => Buffer::Int {
                values: Vec::new(),
                defs: Vec::new(),
            },
            Kind::Map => Buffer::Map {
                keys: Vec::new(),
                values: Vec::new(),
                key_defs: Vec::new(),
                value_defs: Vec::new(),
                reps: Vec::new(),
            },
        }
    }

    /// Appends one row's value; returns the bytes it added.
    fn push(&mut self, v: ValueRef<'_>) -> usize {
        match self {
            Buffer::Text { values, defs } => match text_of(v) {
                None => {
                    defs.push(0);
                    2
                }
                Some(t) => {
                    defs.push(1);
                    let n = t.len();
                    values.push(ByteArray::from(t));
                    n + VALUE_OVERHEAD
                }
            },
            Buffer::Int { values, defs } => match int_of(v) {
                None => {
                    defs.push(0);
                    2
                }
                Some(i) => {
                    defs.push(1);
                    values.push(i);
                    10
                }
            },
            Buffer::Map {
                keys,
                values,
                key_defs,
                value_defs,
                reps,
            } => {
                let map = match v {
                    ValueRef::Text(t) => serde_json::from_slice::<serde_json::Value>(t).ok(),
                    _ => None,
                };
                let Some(serde_json::Value::Object(map)) = map else {
                    key_defs.push(0);
                    value_defs.push(0);
                    reps.push(0);
                    return 6;
                };
                if map.is_empty() {
                    key_defs.push(1);
                    value_defs.push(1);
                    reps.push(0);
                    return 6;
                }
                let mut bytes = 0;
                for (i, (k, v)) in map.into_iter().enumerate() {
                    reps.push(if i == 0 { 0 } else { 1 });
                    key_defs.push(2);
                    let v = match v {
                        serde_json::Value::String(s) => s,
                        other => other.to_string(),
                    };
                    bytes += k.len() + v.len() + 2 * VALUE_OVERHEAD;
                    keys.push(ByteArray::from(k.into_bytes()));
                    values.push(ByteArray::from(v.into_bytes()));
                    value_defs.push(3);
                }
                bytes
            }
        }
    }
}

/// Text as stored; a number in a text column (SQLite's loose typing) as its decimal text.
fn text_of(v: ValueRef<'_>) -> Option<Vec<u8>> {
    match v {
        ValueRef::Null => None,
        ValueRef::Text(t) => Some(t.to_vec()),
        ValueRef::Blob(b) => Some(b.to_vec()),
        ValueRef::Integer(i) => Some(i.to_string().into_bytes()),
        ValueRef::Real(f) => Some(f.to_string().into_bytes()),
    }
}

fn int_of(v: ValueRef<'_>) -> Option<i64> {
    match v {
        ValueRef::Integer(i) => Some(i),
        ValueRef::Real(f) => Some(f as i64),
        ValueRef::Text(t) => std::str::from_utf8(t).ok()?.parse().ok(),
        _ => None,
    }
}

/// The Parquet schema of `columns`, as the message type the crate parses.
pub fn schema_text(name: &str, columns: &[(String, Kind)]) -> String {
    let mut s = format!("message {name} {{\n");
    for (col, kind) in columns {
        match kind {
            Kind::Text => s.push_str(&format!("  OPTIONAL BYTE_ARRAY {col} (STRING);\n")),
            Kind::Int => s.push_str(&format!("  OPTIONAL INT64 {col};\n")),
            Kind::Map => s.push_str(&format!(
                "  OPTIONAL group {col} (MAP) {{\n    REPEATED group key_value {{\n      REQUIRED BYTE_ARRAY key (STRING);\n      OPTIONAL BYTE_ARRAY value (STRING);\n    }}\n  }}\n"
            )),
        }
    }
    s.push_str("}\n");
    s
}

/// A Parquet file being written.
pub struct PartWriter {
    path: PathBuf,
    writer: SerializedFileWriter<BufWriter<File>>,
    buffers: Vec<Buffer>,
    limits: RowGroupLimits,
    rows: usize,
    bytes: usize,
    /// Rows written to the file so far, the open row group's included.
    pub total_rows: u64,
}

impl PartWriter {
    pub fn create(path: &Path, columns: &[(String, Kind)], limits: RowGroupLimits) -> Result<Self> {
        let pq = |e| parquet_error(path, e);
        let schema = Arc::new(parse_message_type(&schema_text("s3meta", columns)).map_err(pq)?);
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .set_created_by(format!("s3meta {}", env!("CARGO_PKG_VERSION")))
            .build();
        let file = File::create(path).map_err(|source| Error::Write {
            path: path.to_path_buf(),
            source,
        })?;
        let writer = SerializedFileWriter::new(
            BufWriter::with_capacity(1 << 20, file),
            schema,
            Arc::new(props),
        )
        .map_err(pq)?;
        Ok(PartWriter {
            path: path.to_path_buf(),
            writer,
            buffers: columns.iter().map(|(_, k)| Buffer::new(*k)).collect(),
            limits,
            rows: 0,
            bytes: 0,
            total_rows: 0,
        })
    }

    /// Appends one row (one value per column, in column order).
    pub fn push<'a>(&mut self, row: impl IntoIterator<Item = ValueRef<'a>>) -> Result<()> {
        for (buf, v) in self.buffers.iter_mut().zip(row) {
            self.bytes += buf.push(v);
        }
        self.rows += 1;
        self.total_rows += 1;
        if self.rows >= self.limits.max_rows || self.bytes >= self.limits.max_bytes {
            self.flush_row_group()?;
        }
        Ok(())
    }

    /// Writes the buffered rows as one row group.
    fn flush_row_group(&mut self) -> Result<()> {
        if self.rows == 0 {
            return Ok(());
        }
        let path = self.path.clone();
        let pq = |e| parquet_error(&path, e);
        let mut rg = self.writer.next_row_group().map_err(pq)?;
        for buf in &mut self.buffers {
            match buf {
                Buffer::Text { values, defs } => {
                    write_column::<ByteArrayType>(&mut rg, values, defs, None).map_err(pq)?;
                    values.clear();
                    defs.clear();
                }
                Buffer::Int { values, defs } => {
                    write_column::<Int64Type>(&mut rg, values, defs, None).map_err(pq)?;
                    values.clear();
                    defs.clear();
                }
                Buffer::Map {
                    keys,
                    values,
                    key_defs,
                    value_defs,
                    reps,
                } => {
                    write_column::<ByteArrayType>(&mut rg, keys, key_defs, Some(reps))
                        .map_err(pq)?;
                    write_column::<ByteArrayType>(&mut rg, values, value_defs, Some(reps))
                        .map_err(pq)?;
                    keys.clear();
                    values.clear();
                    key_defs.clear();
                    value_defs.clear();
                    reps.clear();
                }
            }
        }
        rg.close().map_err(pq)?;
        // Give a row group of 2,000-name objects back rather than keep its capacity.
        if self.bytes > self.limits.max_bytes / 2 {
            for buf in &mut self.buffers {
                shrink(buf);
            }
        }
        self.rows = 0;
        self.bytes = 0;
        Ok(())
    }

    /// Writes the last row group and the footer; returns the file's size in bytes.
    pub fn finish(mut self) -> Result<u64> {
        self.flush_row_group()?;
        let path = self.path.clone();
        self.writer.close().map_err(|e| parquet_error(&path, e))?;
        std::fs::metadata(&path)
            .map(|m| m.len())
            .map_err(|source| Error::Write { path, source })
    }
}

fn shrink(buf: &mut Buffer) {
    match buf {
        Buffer::Text { values, defs } => {
            values.shrink_to_fit();
            defs.shrink_to_fit();
        }
        Buffer::Int { values, defs } => {
            values.shrink_to_fit();
            defs.shrink_to_fit();
        }
        Buffer::Map {
            keys,
            values,
            key_defs,
            value_defs,
            reps,
        } => {
            keys.shrink_to_fit();
            values.shrink_to_fit();
            key_defs.shrink_to_fit();
            value_defs.shrink_to_fit();
            reps.shrink_to_fit();
        }
    }
}

/// Writes the row group's next column from its buffered values and levels.
fn write_column<T: parquet::data_type::DataType>(
    rg: &mut parquet::file::writer::SerializedRowGroupWriter<'_, BufWriter<File>>,
    values: &[T::T],
    defs: &[i16],
    reps: Option<&[i16]>,
) -> std::result::Result<(), ParquetError> {
    let mut col = rg
        .next_column()?
        .ok_or_else(|| ParquetError::General("fewer column writers than columns".into()))?;
    col.typed::<T>().write_batch(values, Some(defs), reps)?;
    col.close()
}

fn parquet_error(path: &Path, source: ParquetError) -> Error {
    Error::Parquet {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_maps_as_parquet_maps() {
        let cols = vec![
            ("key".to_string(), Kind::Text),
            ("size".to_string(), Kind::Int),
            ("metadata".to_string(), Kind::Map),
        ];
        let text = schema_text("s3meta", &cols);
        let schema = parse_message_type(&text).unwrap();
        let descr = parquet::schema::types::SchemaDescriptor::new(Arc::new(schema));
        assert_eq!(descr.num_columns(), 4);
        assert_eq!(descr.column(2).path().string(), "metadata.key_value.key");
        assert_eq!(descr.column(3).max_def_level(), 3);
        assert_eq!(descr.column(3).max_rep_level(), 1);
    }

    #[test]
    fn a_row_group_closes_at_its_byte_bound() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.parquet");
        let cols = vec![("metadata".to_string(), Kind::Map)];
        let limits = RowGroupLimits {
            max_rows: 1_000_000,
            max_bytes: 20_000,
        };
        let mut w = PartWriter::create(&path, &cols, limits).unwrap();
        let big: serde_json::Map<String, serde_json::Value> = (0..100)
            .map(|i| {
                (
                    format!("name-{i:04}"),
                    serde_json::Value::from("v".repeat(50)),
                )
            })
            .collect();
        let text = serde_json::Value::Object(big).to_string();
        for _ in 0..10 {
            w.push([ValueRef::Text(text.as_bytes())]).unwrap();
        }
        w.finish().unwrap();
        let reader =
            parquet::file::reader::SerializedFileReader::new(File::open(&path).unwrap()).unwrap();
        use parquet::file::reader::FileReader;
        // Each row counts ~15,500 bytes (values and their overhead): two per 20,000-byte group.
        assert_eq!(reader.metadata().num_row_groups(), 5);
        assert_eq!(reader.metadata().file_metadata().num_rows(), 10);
    }
}
