//! Key order and key ranges, and the SQL that selects them with key comparisons (never LIKE or
//! GLOB: keys hold `%`, `_`, `*`).
//!
//! Receives: a store's listing order, a prefix and/or range bounds (start_after, end].
//! Sends on: a `KeyRange` that can test a key and render the matching `WHERE` fragment, and
//! the order's key arithmetic (successor, character ranks, the StartAfter to send).
//! Invariants: `contains` and the SQL agree for every key, in both orders — SQLite compares
//! TEXT `key` in byte order (UTF-8 code point order), and the BLOB `path_key` of objects of
//! path-order buckets (`path_key(key)`, schema/0002_key_order.sql) in path-component order,
//! with the plain BINARY comparison any SQLite program has; a key range always carries the
//! order it was cut in, so two orders are never mixed in one comparison.

use std::cmp::Ordering;

use rusqlite::ToSql;
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSqlOutput, Value, ValueRef};

/// How a store orders the keys it lists, and so how every key comparison of a scan of that
/// store is made (range bounds, split points, per-page deletion windows, prefix ends).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyOrder {
    /// UTF-8 byte order (= code point order), as S3 defines it: AWS, MinIO, Ceph, Garage,
    /// moto. StartAfter is a byte comparison.
    Byte,
    /// Path-component order, of stores whose namespace is a directory tree (SeaweedFS): keys
    /// compare component by component, which is byte order with `/` below every other
    /// character (`a, a/b, a/c/d, a!x, a-b, a.c, a0`). Their StartAfter=S also skips the keys
    /// under `S/` (see `start_after`).
    Path,
}

/// The largest character: what `start_after` appends to reach just below a key.
const MAX_CHAR: char = '\u{10FFFF}';

impl KeyOrder {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyOrder::Byte => "byte",
            KeyOrder::Path => "path",
        }
    }

    pub fn parse(s: &str) -> Option<KeyOrder> {
        match s {
            "byte" => Some(KeyOrder::Byte),
            "path" => Some(KeyOrder::Path),
            _ => None,
        }
    }

    /// What a person reads in a message.
    pub fn describe(self) -> &'static str {
        match self {
            KeyOrder::Byte => "S3's UTF-8 byte order",
            KeyOrder::Path => "path-component order (`/` before every other character)",
        }
    }

    pub fn cmp(self, a: &str, b: &str) -> Ordering {
        match self {
            KeyOrder::Byte => a.cmp(b),
            KeyOrder::Path => path_cmp(a, b),
        }
    }

    pub fn lt(self, a: &str, b: &str) -> bool {
        self.cmp(a, b) == Ordering::Less
    }

    /// The column that compares key column `col` (`key`, `o.key`) in this order: itself, or
    /// its `path_key`.
    pub fn column(self, col: &str) -> String {
        match (self, col.rsplit_once('.')) {
            (KeyOrder::Byte, _) => col.to_string(),
            (KeyOrder::Path, Some((table, _))) => format!("{table}.path_key"),
            (KeyOrder::Path, None) => "path_key".to_string(),
        }
    }

    /// A key as the column `column` holds it: the text, or its `path_key`.
    pub fn sql_value(self, key: &str) -> Value {
        match self {
            KeyOrder::Byte => Value::Text(key.to_string()),
            KeyOrder::Path => Value::Blob(path_key(key)),
        }
    }

    /// The position of a character in this order (its code point in byte order).
    pub fn rank(self, c: char) -> u32 {
        let c = u32::from(c);
        match self {
            KeyOrder::Path if c == u32::from('/') => 0,
            KeyOrder::Path if c < u32::from('/') => c + 1,
            _ => c,
        }
    }

    /// The character at `rank`, or the first one after it (ranks of surrogates have none);
    /// `None` past the last character.
    pub fn char_at_or_after(self, rank: u32) -> Option<char> {
        let code = match self {
            KeyOrder::Path if rank == 0 => u32::from('/'),
            KeyOrder::Path if rank <= u32::from('/') => rank - 1,
            _ => rank,
        };
        match char::from_u32(code) {
            Some(c) => Some(c),
            None if code <= 0xDFFF => Some('\u{E000}'),
            None => None,
        }
    }

    /// The smallest string greater than every string that starts with `prefix`, or `None`
    /// when there is none (empty prefix, or one made only of the last character). Keys `k`
    /// with `prefix <= k < successor` are exactly the keys starting with `prefix`.
    pub fn successor(self, prefix: &str) -> Option<String> {
        let mut chars: Vec<char> = prefix.chars().collect();
        while let Some(last) = chars.pop() {
            if let Some(next) = self.char_at_or_after(self.rank(last) + 1) {
                chars.push(next);
                return Some(chars.into_iter().collect());
            }
        }
        None
    }

    /// The StartAfter to send for "the keys after `key`", given what is known of the store's
    /// order (`None`: not known yet). The store may also return a few keys up to `key`, which
    /// the caller drops (`KeyRange::skip_below`).
    ///
    /// A path-order store's StartAfter=S skips everything under `S/` (SeaweedFS: `StartAfter=d06`
    /// skips the whole `d06/` directory, while `d06/` lists inside it), so `key` itself cannot
    /// be sent unless it ends with `/`. What is sent instead is the largest string below `key`
    /// at its own path level — `key` with its last character lowered and `U+10FFFF` appended:
    /// only strings that start with it lie between it and `key`, in either order, and it has
    /// no subtree. Not knowing the order, the lowering is by code point, which is exact on
    /// byte-order stores and correct (possibly listing a few keys more) on path-order ones.
    pub fn start_after(order: Option<KeyOrder>, key: &str) -> String {
        if order == Some(KeyOrder::Byte) || key.ends_with('/') {
            return key.to_string();
        }
        let Some(last) = key.chars().next_back() else {
            return String::new();
        };
        let head = &key[..key.len() - last.len_utf8()];
        let by = order.unwrap_or(KeyOrder::Byte);
        let rank = by.rank(last);
        match (rank > 0).then(|| char_before(by, rank)).flatten() {
            Some(lower) => format!("{head}{lower}{MAX_CHAR}"),
            // No character below it (U+0000): the head alone is below the key in both orders.
            None => head.to_string(),
        }
    }

    /// The order both orders agree with on every comparison against `key`: a key made of
    /// characters above `/` partitions every keyspace the same way in both.
    pub fn is_neutral(key: &str) -> bool {
        key.chars().all(|c| c > '/')
    }
}

/// The character just below `rank` in `order` (skipping surrogates downwards).
fn char_before(order: KeyOrder, rank: u32) -> Option<char> {
    let mut r = rank.checked_sub(1)?;
    loop {
        let code = match order {
            KeyOrder::Path if r == 0 => u32::from('/'),
            KeyOrder::Path if r <= u32::from('/') => r - 1,
            _ => r,
        };
        if let Some(c) = char::from_u32(code) {
            return Some(c);
        }
        r = 0xD7FF;
    }
}

/// Path-component order: byte order with `/` below every other byte. UTF-8 keeps every
/// byte of a multi-byte character above 0x7F, so this is also the order of the characters'
/// ranks (`KeyOrder::rank`).
pub fn path_cmp(a: &str, b: &str) -> Ordering {
    let rank = |b: u8| -> u16 {
        match b {
            b'/' => 0,
            b if b < b'/' => u16::from(b) + 1,
            b => u16::from(b),
        }
    };
    let (a, b) = (a.as_bytes(), b.as_bytes());
    for (x, y) in a.iter().zip(b) {
        if x != y {
            return rank(*x).cmp(&rank(*y));
        }
    }
    a.len().cmp(&b.len())
}

/// The bytes of `key` that compare, as a BLOB (by `memcmp`, as every SQLite compares), in
/// path-component order: `/` becomes 0x00 and the bytes below it move up by one, so `/` sorts
/// before everything else and nothing else moves. Stored in `objects.path_key` for buckets
/// whose store lists in that order, so their key ranges are index ranges.
pub fn path_key(key: &str) -> Vec<u8> {
    key.bytes()
        .map(|b| match b {
            b'/' => 0,
            b if b < b'/' => b + 1,
            b => b,
        })
        .collect()
}

impl ToSql for KeyOrder {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for KeyOrder {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let s = value.as_str()?;
        KeyOrder::parse(s).ok_or_else(|| FromSqlError::Other(format!("key order {s:?}").into()))
    }
}

/// The bounds (start_after, end] of a key range as a plan cuts them; `None` is unbounded.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Bounds {
    pub start_after: Option<String>,
    pub end: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bound {
    Unbounded,
    Included(String),
    Excluded(String),
}

/// The keys between a lower and an upper bound, in one key order.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRange {
    pub order: KeyOrder,
    pub lower: Bound,
    pub upper: Bound,
    /// The bounds as the order's SQL column holds them (`sql`'s parameters).
    values: [Option<Value>; 2],
}

impl KeyRange {
    fn new(order: KeyOrder, lower: Bound, upper: Bound) -> KeyRange {
        let value = |b: &Bound| match b {
            Bound::Unbounded => None,
            Bound::Included(k) | Bound::Excluded(k) => Some(order.sql_value(k)),
        };
        let values = [value(&lower), value(&upper)];
        KeyRange {
            order,
            lower,
            upper,
            values,
        }
    }

    pub fn all(order: KeyOrder) -> KeyRange {
        KeyRange::new(order, Bound::Unbounded, Bound::Unbounded)
    }

    /// The keys starting with `prefix` (the same keys in every order; the bounds differ).
    pub fn prefix(order: KeyOrder, prefix: &str) -> KeyRange {
        if prefix.is_empty() {
            return KeyRange::all(order);
        }
        let upper = order
            .successor(prefix)
            .map_or(Bound::Unbounded, Bound::Excluded);
        KeyRange::new(order, Bound::Included(prefix.to_string()), upper)
    }

    /// The keys starting with `prefix` in (start_after, end]: a scan's target, one of its
    /// ranges, a plan line, a merged keyspace — every span of keys s3meta works with.
    pub fn span(
        order: KeyOrder,
        prefix: &str,
        start_after: Option<&str>,
        end: Option<&str>,
    ) -> KeyRange {
        KeyRange::prefix(order, prefix).intersect(&KeyRange::between(order, start_after, end))
    }

    /// The keys in (start_after, end]; `None` is unbounded.
    pub fn between(order: KeyOrder, start_after: Option<&str>, end: Option<&str>) -> KeyRange {
        KeyRange::new(
            order,
            start_after.map_or(Bound::Unbounded, |s| Bound::Excluded(s.to_string())),
            end.map_or(Bound::Unbounded, |s| Bound::Included(s.to_string())),
        )
    }

    /// The keys in both ranges (of one order).
    pub fn intersect(&self, other: &KeyRange) -> KeyRange {
        debug_assert_eq!(self.order, other.order, "key ranges of two orders");
        KeyRange::new(
            self.order,
            tighter(self.order, &self.lower, &other.lower, true),
            tighter(self.order, &self.upper, &other.upper, false),
        )
    }

    /// The keys of this range after `key`.
    pub fn after(&self, key: &str) -> KeyRange {
        self.intersect(&KeyRange::between(self.order, Some(key), None))
    }

    /// The keys of this range up to `key`.
    pub fn up_to(&self, key: &str) -> KeyRange {
        self.intersect(&KeyRange::between(self.order, None, Some(key)))
    }

    pub fn contains(&self, key: &str) -> bool {
        !self.below(key) && !self.beyond(key)
    }

    /// `key` lies before the range's lower bound.
    pub fn below(&self, key: &str) -> bool {
        let o = self.order;
        match &self.lower {
            Bound::Unbounded => false,
            Bound::Included(l) => o.lt(key, l),
            Bound::Excluded(l) => !o.lt(l, key),
        }
    }

    /// `key` lies after the range's upper bound.
    pub fn beyond(&self, key: &str) -> bool {
        let o = self.order;
        match &self.upper {
            Bound::Unbounded => false,
            Bound::Included(u) => o.lt(u, key),
            Bound::Excluded(u) => !o.lt(key, u),
        }
    }

    /// ` AND key >= :lo AND key < :hi` (as needed) for key column `col`, compared in the
    /// range's order (on `path_key` in path order, which then must not be NULL), with its
    /// parameters.
    pub fn sql(&self, col: &str) -> (String, Vec<(&'static str, &dyn ToSql)>) {
        let column = self.order.column(col);
        let mut sql = String::new();
        if self.order == KeyOrder::Path {
            sql.push_str(&format!(" AND {column} IS NOT NULL"));
        }
        let mut params: Vec<(&'static str, &dyn ToSql)> = Vec::new();
        let ops = [
            (&self.lower, ">=", ">", ":lo"),
            (&self.upper, "<=", "<", ":hi"),
        ];
        for ((bound, included, excluded, name), value) in ops.into_iter().zip(&self.values) {
            let op = match bound {
                Bound::Unbounded => continue,
                Bound::Included(_) => included,
                Bound::Excluded(_) => excluded,
            };
            sql.push_str(&format!(" AND {column} {op} {name}"));
            params.push((name, value.as_ref().expect("a bound has a value")));
        }
        (sql, params)
    }
}

/// The more restrictive of two lower (`lower = true`) or upper bounds.
fn tighter(order: KeyOrder, a: &Bound, b: &Bound, lower: bool) -> Bound {
    use Bound::*;
    let (ka, kb) = match (a, b) {
        (Unbounded, x) | (x, Unbounded) => return x.clone(),
        (Included(x) | Excluded(x), Included(y) | Excluded(y)) => (x, y),
    };
    if ka != kb {
        let a_wins = if lower {
            order.lt(kb, ka)
        } else {
            order.lt(ka, kb)
        };
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
mod tests;
