//! `s3meta names`: the metadata names (or with `--tags` the tag keys) in use, how many objects carry each, how many distinct
//! values each has, and its most common values.
//!
//! Receives: `NamesOptions` (the database path among them) and an output. Sends on: one row per name, in name
//! order, to an output writer. Invariant: one pass over the (name, value) index grouped by
//! (name, value), keeping only the current name's totals and top values, so memory does not
//! grow with the number of objects or of distinct values.

use std::io::Write;

use rusqlite::Connection;
use serde_json::Value;

use super::output::{Format, RowWriter, TableStyle};
use super::query::{Plan, Scope, Selection};
use crate::error::{Error, Result};
use crate::store::db;

/// How many of the most common values are shown per name.
const SAMPLES: usize = 3;
/// In a table, longer sample values are cut (JSON, JSON lines and CSV keep them whole).
const TABLE_SAMPLE_CHARS: usize = 32;

pub const COLUMNS: [&str; 4] = ["name", "objects", "values", "samples"];

/// One name's totals, accumulated over its (value, count) groups.
#[derive(Debug, Default, PartialEq)]
pub struct NameStats {
    pub name: String,
    pub objects: i64,
    pub values: i64,
    /// The most common values, most common first (ties: smaller value first).
    pub top: Vec<(String, i64)>,
}

impl NameStats {
    fn add(&mut self, value: String, n: i64) {
        self.objects += n;
        self.values += 1;
        // Groups arrive in value order, so a tie never displaces an earlier value.
        let at = self
            .top
            .iter()
            .position(|(_, c)| n > *c)
            .unwrap_or(self.top.len());
        if at < SAMPLES {
            self.top.insert(at, (value, n));
            self.top.truncate(SAMPLES);
        }
    }

    fn row(&self, cut: Option<usize>) -> Vec<Value> {
        let samples = self
            .top
            .iter()
            .map(|(v, _)| Value::from(cut.map_or(v.clone(), |n| shorten(v, n))))
            .collect::<Vec<_>>();
        vec![
            Value::from(self.name.as_str()),
            Value::from(self.objects),
            Value::from(self.values),
            Value::Array(samples),
        ]
    }
}

fn shorten(v: &str, max: usize) -> String {
    match v.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &v[..at]),
        None => v.to_string(),
    }
}

/// Runs `s3meta names`, writing to `out` (a terminal gets a table unless `--format` says).
/// What `s3meta names` is asked.
#[derive(Debug, Clone)]
pub struct NamesOptions {
    pub db: std::path::PathBuf,
    pub bucket: Option<String>,
    pub prefix: Option<String>,
    pub format: Option<Format>,
    pub table: TableStyle,
    /// The tag keys (`--tags`) instead of the metadata names.
    pub tags: bool,
    /// At most this many names (the first in name order).
    pub limit: Option<u64>,
}

pub fn run(args: &NamesOptions, out: &mut dyn Write, terminal: bool) -> Result<()> {
    let format = args.format.unwrap_or(Format::default_for(terminal));
    let path = args.db.as_path();
    let conn = db::open_ro(path)?;
    let cut = (format == Format::Table).then_some(TABLE_SAMPLE_CHARS);
    let mut w = RowWriter::new(format, COLUMNS.map(String::from).to_vec(), out).styled(args.table);
    let scope = Scope {
        bucket: args.bucket.clone(),
        prefix: args.prefix.clone(),
        include_gone: false,
        versions: false,
    };
    let sel = Selection::new(&scope, &[], Plan::Index);
    let mut left = args.limit.unwrap_or(u64::MAX);
    let mut emit = |s: &NameStats| {
        if left == 0 {
            return Ok(false);
        }
        left -= 1;
        w.write_row(&s.row(cut)).map_err(Error::Output)?;
        Ok(left > 0)
    };
    let source = if args.tags {
        Source::Tags
    } else {
        Source::Metadata
    };
    each_name(&conn, &sel, source, &mut emit, &|e| Error::db(path, e))?;
    w.finish().map_err(Error::Output)?;
    Ok(())
}

/// Which (name, value) pairs `names` counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Metadata,
    Tags,
}

/// Calls `emit` with each name's totals, in name order, until it answers `false`.
fn each_name(
    conn: &Connection,
    sel: &Selection,
    source: Source,
    emit: &mut dyn FnMut(&NameStats) -> Result<bool>,
    db: &dyn Fn(rusqlite::Error) -> Error,
) -> Result<()> {
    let (conds, params) = sel.render();
    let pairs = match source {
        Source::Metadata => "SELECT object_id, name, value FROM metadata",
        Source::Tags => "SELECT object_id, key AS name, value FROM tags",
    };
    let sql = format!(
        "SELECT m.name, m.value, count(*) FROM ({pairs}) m \
         JOIN objects o USING (object_id) JOIN buckets b USING (bucket_id) \
         WHERE 1{conds} GROUP BY m.name, m.value ORDER BY m.name, m.value"
    );
    let mut stmt = conn.prepare(&sql).map_err(db)?;
    let mut rows = stmt.query(params.as_slice()).map_err(db)?;
    let mut current: Option<NameStats> = None;
    while let Some(row) = rows.next().map_err(db)? {
        let name: String = row.get(0).map_err(db)?;
        if let Some(done) = current.take_if(|c| c.name != name)
            && !emit(&done)?
        {
            return Ok(());
        }
        current
            .get_or_insert_with(|| NameStats {
                name,
                ..NameStats::default()
            })
            .add(row.get(1).map_err(db)?, row.get(2).map_err(db)?);
    }
    if let Some(last) = current {
        emit(&last)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_most_common_values_first() {
        let mut s = NameStats::default();
        for (v, n) in [("a", 1), ("b", 5), ("c", 5), ("d", 2), ("e", 9), ("f", 1)] {
            s.add(v.into(), n);
        }
        assert_eq!(s.objects, 23);
        assert_eq!(s.values, 6);
        assert_eq!(s.top, [("e".into(), 9), ("b".into(), 5), ("c".into(), 5)]);
    }

    #[test]
    fn shortens_by_characters() {
        assert_eq!(shorten("ééééé", 3), "ééé…");
        assert_eq!(shorten("abc", 3), "abc");
    }
}
