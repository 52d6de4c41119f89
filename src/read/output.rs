//! The result writers shared by `query`, `names` and `changes` (`status` has its own
//! document, in one of the `DocFormat`s): an aligned table, JSON lines, one JSON array, or CSV.
//!
//! Receives: a fixed, ordered list of column names, then rows of JSON values in that order.
//! Sends on: bytes to any `Write`. Invariants: every record has every column, in the given
//! order; rows are written as they come (the table holds back at most `TABLE_SAMPLE` rows to
//! size its columns), so memory does not grow with the result.

use std::io::{self, Write};

use serde_json::Value;
use unicode_width::UnicodeWidthStr;

/// How records are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Aligned columns, for a person (the default when stdout is a terminal).
    Table,
    /// One JSON object per line (the default otherwise).
    Jsonl,
    /// One JSON array.
    Json,
    /// RFC 4180 CSV with a header; metadata as one JSON column.
    Csv,
}

/// How a one-document report (`status`) is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocFormat {
    Table,
    Json,
}

pub use crate::model::words::thousands;

/// Rows a table reads before it fixes its column widths; later rows that are wider overflow.
const TABLE_SAMPLE: usize = 1000;

impl Format {
    /// A table for a person at a terminal, JSON lines for a pipe or a file.
    pub fn default_for(terminal: bool) -> Format {
        if terminal {
            Format::Table
        } else {
            Format::Jsonl
        }
    }
}

/// How a table is drawn for a person (the other formats ignore it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableStyle {
    /// The terminal's width: columns are narrowed, and long cells cut with `…`, to fit it.
    /// `None`: as wide as the cells (a pipe or a file).
    pub width: Option<usize>,
    /// Sizes (columns named `size` or ending in `_size`) in binary units: `1.2 MiB`.
    pub human: bool,
}

/// No column is narrowed below this many cells (or its header's width) to fit a terminal.
const MIN_COLUMN: usize = 8;

/// Writes rows in one format; call `finish` at the end.
pub struct RowWriter<W: Write> {
    format: Format,
    columns: Vec<String>,
    out: W,
    rows: u64,
    /// Table rows held back until the widths are known; `None` once the header is out.
    pending: Option<Vec<Vec<String>>>,
    widths: Vec<usize>,
    style: TableStyle,
    /// The columns `style.human` writes as sizes.
    sizes: Vec<bool>,
}

impl<W: Write> RowWriter<W> {
    pub fn new(format: Format, columns: Vec<String>, out: W) -> RowWriter<W> {
        let widths = columns.iter().map(|c| c.width()).collect();
        let sizes = columns
            .iter()
            .map(|c| c == "size" || c.ends_with("_size"))
            .collect();
        RowWriter {
            format,
            columns,
            out,
            rows: 0,
            pending: Some(Vec::new()),
            widths,
            style: TableStyle::default(),
            sizes,
        }
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// Draws tables in `style`.
    pub fn styled(mut self, style: TableStyle) -> RowWriter<W> {
        self.style = style;
        self
    }

    /// Writes one row; `row` has one value per column, in column order.
    pub fn write_row(&mut self, row: &[Value]) -> io::Result<()> {
        debug_assert_eq!(row.len(), self.columns.len());
        let first = self.rows == 0;
        self.rows += 1;
        match self.format {
            Format::Jsonl => {
                self.write_object(row)?;
                self.out.write_all(b"\n")
            }
            Format::Json => {
                self.out.write_all(if first { b"[\n" } else { b",\n" })?;
                self.write_object(row)
            }
            Format::Csv => {
                if first {
                    self.write_csv_header()?;
                }
                let cells: Vec<String> = row.iter().map(csv_cell).collect();
                write_csv_record(&mut self.out, &cells)
            }
            Format::Table => self.table_row(row),
        }
    }

    /// Ends the output (closing the JSON array, flushing a short table) and returns the sink.
    pub fn finish(mut self) -> io::Result<W> {
        match self.format {
            Format::Json if self.rows == 0 => self.out.write_all(b"[]\n")?,
            Format::Json => self.out.write_all(b"\n]\n")?,
            Format::Csv if self.rows == 0 => self.write_csv_header()?,
            Format::Table => self.flush_table()?,
            _ => {}
        }
        Ok(self.out)
    }

    /// `{"col":value,...}` with the keys in column order (serde_json's maps would sort them).
    fn write_object(&mut self, row: &[Value]) -> io::Result<()> {
        self.out.write_all(b"{")?;
        for (i, (col, value)) in self.columns.iter().zip(row).enumerate() {
            if i > 0 {
                self.out.write_all(b",")?;
            }
            serde_json::to_writer(&mut self.out, col)?;
            self.out.write_all(b":")?;
            serde_json::to_writer(&mut self.out, value)?;
        }
        self.out.write_all(b"}")
    }

    fn write_csv_header(&mut self) -> io::Result<()> {
        write_csv_record(&mut self.out, &self.columns)
    }

    fn table_row(&mut self, row: &[Value]) -> io::Result<()> {
        let human = self.style.human;
        let cells: Vec<String> = row
            .iter()
            .zip(&self.sizes)
            .map(|(v, size)| match (v.as_u64(), human && *size) {
                (Some(n), true) => crate::model::words::bytes(n),
                _ => table_cell(v),
            })
            .collect();
        match &mut self.pending {
            Some(pending) => {
                for (w, c) in self.widths.iter_mut().zip(&cells) {
                    *w = (*w).max(c.width());
                }
                pending.push(cells);
                if pending.len() >= TABLE_SAMPLE {
                    self.flush_table()?;
                }
                Ok(())
            }
            None => write_table_line(
                &mut self.out,
                &self.widths,
                &cells,
                self.style.width.is_some(),
            ),
        }
    }

    /// Writes the header and the held-back rows (once).
    fn flush_table(&mut self) -> io::Result<()> {
        let Some(pending) = self.pending.take() else {
            return Ok(());
        };
        if let Some(width) = self.style.width {
            let floors: Vec<usize> = self
                .columns
                .iter()
                .map(|c| c.width().max(MIN_COLUMN))
                .collect();
            fit(&mut self.widths, &floors, width);
        }
        let fitted = self.style.width.is_some();
        write_table_line(&mut self.out, &self.widths, &self.columns, fitted)?;
        for cells in &pending {
            write_table_line(&mut self.out, &self.widths, cells, fitted)?;
        }
        Ok(())
    }
}

/// Narrows the widest columns, one cell at a time, until the line (columns and their two-blank
/// gaps) fits `total`, or every column is at its floor (then the line overflows).
fn fit(widths: &mut [usize], floors: &[usize], total: usize) {
    let gaps = 2 * widths.len().saturating_sub(1);
    while widths.iter().sum::<usize>() + gaps > total {
        let widest = widths
            .iter()
            .zip(floors)
            .enumerate()
            .filter(|(_, (w, f))| w > f)
            .max_by_key(|(_, (w, _))| **w)
            .map(|(i, _)| i);
        match widest {
            Some(i) => widths[i] -= 1,
            None => break,
        }
    }
}

/// `s` cut to `width` display cells, its end replaced by `…` when cut.
fn cut(s: &str, width: usize) -> std::borrow::Cow<'_, str> {
    if s.width() <= width {
        return s.into();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in s.chars() {
        let w = unicode_width::UnicodeWidthChar::width(c).unwrap_or(0);
        if used + w + 1 > width {
            break;
        }
        out.push(c);
        used += w;
    }
    out.push('…');
    out.into()
}

/// One table line; with `fitted`, cells wider than their column are cut (without, a cell wider
/// than the sample's widest overflows its column).
fn write_table_line(
    out: &mut impl Write,
    widths: &[usize],
    cells: &[String],
    fitted: bool,
) -> io::Result<()> {
    let mut line = String::new();
    for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
        let cell = if fitted {
            cut(cell, *width)
        } else {
            cell.into()
        };
        if i + 1 == cells.len() {
            line.push_str(&cell);
        } else {
            line.push_str(&cell);
            line.extend(std::iter::repeat_n(
                ' ',
                width.saturating_sub(cell.width()) + 2,
            ));
        }
    }
    // Empty trailing cells would leave trailing blanks.
    line.truncate(line.trim_end_matches(' ').len());
    line.push('\n');
    out.write_all(line.as_bytes())
}

/// A value as a table shows it: text raw but with control characters escaped (a key with a
/// newline must not break the line), numbers plain, `null` empty, objects as `name=value, …`.
fn table_cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => escape_controls(s),
        Value::Array(items) => items.iter().map(table_cell).collect::<Vec<_>>().join(", "),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| format!("{}={}", escape_controls(k), table_cell(v)))
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    }
}

/// Text with its control characters escaped (`\n`, `\t`, `\u{1b}`), safe on one line.
pub fn escape_controls(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// A value as a CSV field: text raw, `null` empty, arrays and objects as compact JSON.
fn csv_cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// One RFC 4180 record: fields quoted when they hold a comma, quote, CR or LF.
fn write_csv_record(out: &mut impl Write, fields: &[String]) -> io::Result<()> {
    let mut line = String::new();
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            line.push(',');
        }
        if f.contains([',', '"', '\r', '\n']) {
            line.push('"');
            line.push_str(&f.replace('"', "\"\""));
            line.push('"');
        } else {
            line.push_str(f);
        }
    }
    line.push_str("\r\n");
    out.write_all(line.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(format: Format, rows: &[Value]) -> String {
        let cols = vec!["key".to_string(), "size".into(), "metadata".into()];
        let mut w = RowWriter::new(format, cols, Vec::new());
        for r in rows {
            w.write_row(r.as_array().unwrap()).unwrap();
        }
        String::from_utf8(w.finish().unwrap()).unwrap()
    }

    fn sample() -> Vec<Value> {
        vec![
            json!(["a,b \"q\"\nz", 12, {"project": "apollo", "z": "1"}]),
            json!(["é🎉", null, {}]),
        ]
    }

    #[test]
    fn jsonl_keeps_column_order_and_parses_back() {
        let text = render(Format::Jsonl, &sample());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with(r#"{"key":"a,b \"q\"\nz","size":12,"metadata":"#));
        let back: Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(back, json!({"key": "é🎉", "size": null, "metadata": {}}));
    }

    #[test]
    fn json_is_one_array_even_when_empty() {
        let back: Value = serde_json::from_str(&render(Format::Json, &sample())).unwrap();
        assert_eq!(back[0]["metadata"]["project"], "apollo");
        assert_eq!(back.as_array().unwrap().len(), 2);
        assert_eq!(render(Format::Json, &[]), "[]\n");
    }

    #[test]
    fn csv_quotes_what_needs_quoting() {
        assert_eq!(
            render(Format::Csv, &sample()),
            "key,size,metadata\r\n\"a,b \"\"q\"\"\nz\",12,\"{\"\"project\"\":\"\"apollo\"\",\"\"z\"\":\"\"1\"\"}\"\r\né🎉,,{}\r\n"
        );
        assert_eq!(render(Format::Csv, &[]), "key,size,metadata\r\n");
    }

    #[test]
    fn table_aligns_by_display_width_and_escapes_newlines() {
        let text = render(Format::Table, &sample());
        assert_eq!(
            text,
            "key         size  metadata\n\
             a,b \"q\"\\nz  12    project=apollo, z=1\n\
             é🎉\n"
        );
        assert_eq!(render(Format::Table, &[]), "key  size  metadata\n");
    }

    /// Issue 18: a table fits the terminal: the widest columns narrow, long cells end in `…`.
    #[test]
    fn table_fits_the_width() {
        let cols = vec!["key".to_string(), "size".into(), "metadata".into()];
        let style = TableStyle {
            width: Some(40),
            human: true,
        };
        let mut w = RowWriter::new(Format::Table, cols, Vec::new()).styled(style);
        let long_key = "photos/2026/01/a-very-long-file-name-indeed.jpg";
        w.write_row(&[
            json!(long_key),
            json!(1_258_291),
            json!({"owner": "alice", "project": "apollo-with-a-long-name"}),
        ])
        .unwrap();
        w.write_row(&[json!("k"), json!(12), json!(null)]).unwrap();
        let text = String::from_utf8(w.finish().unwrap()).unwrap();
        for line in text.lines() {
            assert!(line.width() <= 40, "{line:?} is {} wide", line.width());
        }
        assert!(text.contains("1.2 MiB") && text.contains("12 B"), "{text}");
        assert!(
            text.lines().nth(1).unwrap().starts_with("photos/2026/"),
            "{text}"
        );
        assert!(text.contains('…'), "{text}");
        // Without a width nothing is cut.
        let mut w = RowWriter::new(Format::Table, vec!["key".into()], Vec::new());
        w.write_row(&[json!(long_key)]).unwrap();
        let text = String::from_utf8(w.finish().unwrap()).unwrap();
        assert!(text.contains(long_key));
    }

    #[test]
    fn table_streams_after_its_sample() {
        let cols = vec!["n".to_string()];
        let mut w = RowWriter::new(Format::Table, cols, Vec::new());
        for i in 0..TABLE_SAMPLE {
            w.write_row(&[json!(i)]).unwrap();
        }
        // The header and the sample are out before the end, later rows as they come.
        assert_eq!(
            w.out.iter().filter(|b| **b == b'\n').count(),
            TABLE_SAMPLE + 1
        );
        for i in TABLE_SAMPLE..TABLE_SAMPLE + 5 {
            w.write_row(&[json!(i)]).unwrap();
        }
        assert_eq!(
            w.out.iter().filter(|b| **b == b'\n').count(),
            TABLE_SAMPLE + 6
        );
        let text = String::from_utf8(w.finish().unwrap()).unwrap();
        assert_eq!(text.lines().count(), TABLE_SAMPLE + 6);
        assert_eq!(text.lines().last(), Some("1004"));
    }
}
