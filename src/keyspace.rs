//! Key ranges, and the SQL that selects them with key comparisons (never LIKE or GLOB: keys
//! hold `%`, `_`, `*`).
//!
//! Receives: a prefix and/or range bounds (start_after, end]. Sends on: a `KeyRange` that can
//! test a key and render the matching `WHERE` fragment. Invariant: `contains` and the SQL agree
//! for every key, since SQLite compares TEXT in byte order, which is UTF-8 code point order.

use rusqlite::ToSql;

use crate::s3url::prefix_successor;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bound {
    Unbounded,
    Included(String),
    Excluded(String),
}

/// The keys between a lower and an upper bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRange {
    pub lower: Bound,
    pub upper: Bound,
}

impl KeyRange {
    pub const ALL: KeyRange = KeyRange {
        lower: Bound::Unbounded,
        upper: Bound::Unbounded,
    };

    /// The keys starting with `prefix`.
    pub fn prefix(prefix: &str) -> KeyRange {
        if prefix.is_empty() {
            return KeyRange::ALL;
        }
        KeyRange {
            lower: Bound::Included(prefix.to_string()),
            upper: prefix_successor(prefix).map_or(Bound::Unbounded, Bound::Excluded),
        }
    }

    /// The keys in (start_after, end]; `None` is unbounded.
    pub fn between(start_after: Option<&str>, end: Option<&str>) -> KeyRange {
        KeyRange {
            lower: start_after.map_or(Bound::Unbounded, |s| Bound::Excluded(s.to_string())),
            upper: end.map_or(Bound::Unbounded, |s| Bound::Included(s.to_string())),
        }
    }

    /// The keys in both ranges.
    pub fn intersect(&self, other: &KeyRange) -> KeyRange {
        KeyRange {
            lower: tighter(&self.lower, &other.lower, true),
            upper: tighter(&self.upper, &other.upper, false),
        }
    }

    pub fn contains(&self, key: &str) -> bool {
        let above = match &self.lower {
            Bound::Unbounded => true,
            Bound::Included(l) => key >= l.as_str(),
            Bound::Excluded(l) => key > l.as_str(),
        };
        let below = match &self.upper {
            Bound::Unbounded => true,
            Bound::Included(u) => key <= u.as_str(),
            Bound::Excluded(u) => key < u.as_str(),
        };
        above && below
    }

    /// ` AND key >= :lo AND key < :hi` (as needed) for column `col`, with its parameters.
    pub fn sql(&self, col: &str) -> (String, Vec<(&'static str, &dyn ToSql)>) {
        let mut sql = String::new();
        let mut params: Vec<(&'static str, &dyn ToSql)> = Vec::new();
        match &self.lower {
            Bound::Unbounded => {}
            Bound::Included(l) => {
                sql.push_str(&format!(" AND {col} >= :lo"));
                params.push((":lo", l));
            }
            Bound::Excluded(l) => {
                sql.push_str(&format!(" AND {col} > :lo"));
                params.push((":lo", l));
            }
        }
        match &self.upper {
            Bound::Unbounded => {}
            Bound::Included(u) => {
                sql.push_str(&format!(" AND {col} <= :hi"));
                params.push((":hi", u));
            }
            Bound::Excluded(u) => {
                sql.push_str(&format!(" AND {col} < :hi"));
                params.push((":hi", u));
            }
        }
        (sql, params)
    }
}

/// The more restrictive of two lower (`lower = true`) or upper bounds.
fn tighter(a: &Bound, b: &Bound, lower: bool) -> Bound {
    use Bound::*;
    let (ka, kb) = match (a, b) {
        (Unbounded, x) | (x, Unbounded) => return x.clone(),
        (Included(x) | Excluded(x), Included(y) | Excluded(y)) => (x, y),
    };
    if ka != kb {
        let a_wins = if lower { ka > kb } else { ka < kb };
        return if a_wins { a.clone() } else { b.clone() };
    }
    // Same key: the excluded bound is the tighter one.
    if matches!(a, Excluded(_)) {
        a.clone()
    } else {
        b.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_and_range_intersect() {
        let r = KeyRange::prefix("a/").intersect(&KeyRange::between(Some("a/m"), Some("a/x")));
        for (k, inside) in [
            ("a/", false),
            ("a/m", false),
            ("a/ma", true),
            ("a/x", true),
            ("a/xa", false),
            ("b", false),
        ] {
            assert_eq!(r.contains(k), inside, "{k}");
        }
        let r = KeyRange::prefix("a/").intersect(&KeyRange::between(Some("0"), None));
        assert_eq!(r.lower, Bound::Included("a/".into()));
        assert_eq!(r.upper, Bound::Excluded("a0".into()));
    }

    #[test]
    fn sql_agrees_with_contains() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (key TEXT PRIMARY KEY)")
            .unwrap();
        let keys = ["", "a", "a/", "a/%", "a/_x", "a/é", "a0", "a\n", "b", "🎉"];
        for k in keys {
            conn.execute("INSERT INTO t VALUES (?1)", [k]).unwrap();
        }
        for r in [
            KeyRange::prefix("a/"),
            KeyRange::prefix(""),
            KeyRange::between(Some("a"), Some("a0")),
            KeyRange::prefix("a").intersect(&KeyRange::between(Some("a/%"), None)),
        ] {
            let (frag, params) = r.sql("key");
            let mut stmt = conn
                .prepare(&format!("SELECT key FROM t WHERE 1{frag} ORDER BY key"))
                .unwrap();
            let got: Vec<String> = stmt
                .query_map(params.as_slice(), |row| row.get(0))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            let mut want: Vec<&str> = keys.iter().copied().filter(|k| r.contains(k)).collect();
            want.sort_unstable();
            assert_eq!(got, want, "{r:?}");
        }
    }
}
