//! The `--where` language: one expression per flag, on custom metadata (`name=value`,
//! `name!=value`, `name~glob`, `name`, `!name`) or on listing fields marked with `@`
//! (`@key~glob`, `@size>N`, `@modified>2026-01-01`, `@etag=…`, `@storage_class=…`, `@state=…`,
//! `@error`, and HEAD's further headers: `@sse=aws:kms`, `@parts_count>1`, `@lock_mode=…`), or on
//! object tags (`tag:NAME=value`, `tag:NAME`, `!tag:NAME`, `tag:NAME~glob`).
//!
//! Receives: the text of one `--where`. Sends on: a typed [`Filter`], whose `Display` is the
//! canonical text (it parses back to the same `Filter`), and which the query module renders as
//! SQL. Invariant: parsing never panics, and any text is either a `Filter` or one line saying
//! what is wrong and listing the accepted forms. Metadata names are lower-cased here, as S3
//! stores them, so the (name, value) index serves every metadata test.

use crate::model::ObjectState;
use std::fmt;

/// The accepted forms, shown with every parse error.
use crate::error::FilterError;

/// One parsed `--where` expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    /// A test on the custom metadata `name` (lower-case).
    Meta { name: String, test: MetaTest },
    /// A comparison on a listing or HEAD field.
    Field {
        field: Field,
        op: Op,
        value: Operand,
    },
    /// A test on the object tag `key` (`tag:KEY…`; tag keys keep their case). Objects whose
    /// tags were never read match no tag test, `!tag:KEY` included.
    Tag { key: String, test: MetaTest },
    /// `@error`: objects whose HEAD failed for good.
    Error,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaTest {
    Eq(String),
    /// Has the name, with another value (objects lacking the name do not match).
    Ne(String),
    Glob(String),
    Has,
    Lacks,
}

impl MetaTest {
    /// The value or glob tested, if any.
    pub fn value(&self) -> Option<&str> {
        match self {
            MetaTest::Eq(v) | MetaTest::Ne(v) | MetaTest::Glob(v) => Some(v),
            MetaTest::Has | MetaTest::Lacks => None,
        }
    }
}

/// The fields `@` filters reach, as `v_objects` shows them (HEAD's value, else the listing's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Key,
    Size,
    Modified,
    Etag,
    StorageClass,
    ContentType,
    ContentEncoding,
    CacheControl,
    State,
    VersionId,
    Sse,
    SseKmsKeyId,
    ChecksumAlgorithm,
    ChecksumType,
    LockMode,
    LockRetainUntil,
    LegalHold,
    ReplicationStatus,
    ArchiveStatus,
    WebsiteRedirect,
    PartsCount,
    TaggingCount,
    /// `--all-versions` only: the key's current version (or delete marker).
    IsLatest,
    /// `--all-versions` only: a delete marker.
    DeleteMarker,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    Int,
    Time,
}

impl Field {
    const ALL: [(Field, &'static str); 24] = [
        (Field::Key, "key"),
        (Field::Size, "size"),
        (Field::Modified, "modified"),
        (Field::Etag, "etag"),
        (Field::StorageClass, "storage_class"),
        (Field::ContentType, "content_type"),
        (Field::ContentEncoding, "content_encoding"),
        (Field::CacheControl, "cache_control"),
        (Field::State, "state"),
        (Field::VersionId, "version_id"),
        (Field::Sse, "sse"),
        (Field::SseKmsKeyId, "sse_kms_key_id"),
        (Field::ChecksumAlgorithm, "checksum_algorithm"),
        (Field::ChecksumType, "checksum_type"),
        (Field::LockMode, "lock_mode"),
        (Field::LockRetainUntil, "lock_retain_until"),
        (Field::LegalHold, "legal_hold"),
        (Field::ReplicationStatus, "replication_status"),
        (Field::ArchiveStatus, "archive_status"),
        (Field::WebsiteRedirect, "website_redirect"),
        (Field::PartsCount, "parts_count"),
        (Field::TaggingCount, "tagging_count"),
        (Field::IsLatest, "is_latest"),
        (Field::DeleteMarker, "delete_marker"),
    ];

    pub fn name(self) -> &'static str {
        Field::ALL
            .iter()
            .find(|(f, _)| *f == self)
            .map_or("", |(_, n)| n)
    }

    fn from_name(name: &str) -> Option<Field> {
        let name = name.to_ascii_lowercase();
        let name = if name == "last_modified" {
            "modified"
        } else {
            &name
        };
        Field::ALL.iter().find(|(_, n)| *n == name).map(|(f, _)| *f)
    }

    pub fn kind(self) -> Kind {
        match self {
            Field::Size
            | Field::PartsCount
            | Field::TaggingCount
            | Field::IsLatest
            | Field::DeleteMarker => Kind::Int,
            Field::Modified | Field::LockRetainUntil => Kind::Time,
            _ => Kind::Text,
        }
    }

    fn allows(self, op: Op) -> bool {
        match self.kind() {
            Kind::Int => op != Op::Glob,
            Kind::Time => !matches!(op, Op::Glob | Op::Ne),
            Kind::Text if self == Field::Key => true,
            Kind::Text => matches!(op, Op::Eq | Op::Ne | Op::Glob),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Glob,
}

impl Op {
    /// Longest first, so `>=` is not read as `>` followed by `=`.
    const TOKENS: [(Op, &'static str); 7] = [
        (Op::Ne, "!="),
        (Op::Ge, ">="),
        (Op::Le, "<="),
        (Op::Eq, "="),
        (Op::Gt, ">"),
        (Op::Lt, "<"),
        (Op::Glob, "~"),
    ];

    pub fn token(self) -> &'static str {
        Op::TOKENS
            .iter()
            .find(|(o, _)| *o == self)
            .map_or("", |(_, t)| t)
    }
}

/// How much of a time the user wrote; comparisons are made at that precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    Day,
    Minute,
    Second,
    Milli,
}

impl Precision {
    /// The SQLite date modifier giving the end of the span, or None for an instant.
    pub fn span_modifier(self) -> Option<&'static str> {
        match self {
            Precision::Day => Some("+1 day"),
            Precision::Minute => Some("+1 minute"),
            Precision::Second => Some("+1 second"),
            Precision::Milli => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operand {
    Text(String),
    Int(i64),
    /// The start of the span, in the database's time format.
    Time {
        at: String,
        precision: Precision,
    },
}

impl Filter {
    /// A reason to doubt that the filter says what its writer meant, for a warning: a value
    /// starting with `=` (`owner==alice` tests for the value `=alice`), or with blanks at either
    /// end (HTTP trims them from header values, so a stored value never has them).
    pub fn doubt(&self) -> Option<String> {
        let (value, kind) = match self {
            Filter::Meta { test, .. } => (test.value()?, "metadata"),
            Filter::Tag { test, .. } => (test.value()?, "tag"),
            Filter::Field {
                value: Operand::Text(v),
                field,
                ..
            } if *field != Field::Key => (v.as_str(), "field"),
            _ => return None,
        };
        if let Some(rest) = value.strip_prefix('=') {
            let accepted = self
                .to_string()
                .replacen(&format!("={value}"), &format!("={rest}"), 1);
            return Some(format!(
                "`{self}` compares with the value {value:?} (the operator is the first `=`); for {rest:?} write `{accepted}`"
            ));
        }
        if value.trim() != value && kind != "tag" {
            return Some(format!(
                "the value {value:?} in `{self}` has blanks at its start or end; stored {kind} values never do (HTTP trims header values), so it likely matches nothing"
            ));
        }
        None
    }

    pub fn parse(expr: &str) -> Result<Filter, FilterError> {
        let fail = |reason: String| FilterError {
            expr: expr.to_string(),
            reason,
        };
        if let Some(rest) = expr.strip_prefix('@') {
            parse_field(rest).map_err(fail)
        } else if let Some(rest) = expr.strip_prefix(TAG).or(expr.strip_prefix("!tag:")) {
            parse_tag(rest, expr.starts_with('!')).map_err(fail)
        } else {
            parse_meta(expr).map_err(fail)
        }
    }
}

fn parse_meta(expr: &str) -> Result<Filter, String> {
    if let Some(name) = expr.strip_prefix('!') {
        return Ok(Filter::Meta {
            name: meta_name(name)?,
            test: MetaTest::Lacks,
        });
    }
    let (name, test) = split_test(expr);
    Ok(Filter::Meta {
        name: meta_name(name)?,
        test,
    })
}

/// What starts a tag test. A metadata name cannot hold `:` (it is an HTTP header name), so
/// `tag:…` never means metadata.
pub const TAG: &str = "tag:";

/// `tag:KEY`, `tag:KEY=V`, `tag:KEY!=V`, `tag:KEY~GLOB`, or (`lacks`) `!tag:KEY`. S3 tag keys
/// hold letters, digits, spaces and `+ - = . _ : / @`, so the operator is the first `=`, `!=`
/// or `~` (a key with `=` in it cannot be tested; say so rather than guess).
fn parse_tag(rest: &str, lacks: bool) -> Result<Filter, String> {
    if lacks && rest.contains(['=', '~']) {
        return Err("`!tag:KEY` takes no value; for another value write `tag:KEY!=VALUE`".into());
    }
    let (key, test) = match lacks {
        true => (rest, MetaTest::Lacks),
        false => split_test(rest),
    };
    if key.is_empty() {
        return Err("the tag key is empty (write `tag:NAME`)".into());
    }
    Ok(Filter::Tag {
        key: key.to_string(),
        test,
    })
}

/// `NAME`, `NAME=V`, `NAME!=V`, `NAME~GLOB`: the name and its test (the operator is the first
/// `=`, `!=` or `~`).
fn split_test(expr: &str) -> (&str, MetaTest) {
    let Some(at) = expr.find(['=', '~']) else {
        return (expr, MetaTest::Has);
    };
    let (lhs, value) = (&expr[..at], expr[at + 1..].to_string());
    match (expr.as_bytes()[at], lhs.strip_suffix('!')) {
        (b'=', Some(name)) => (name, MetaTest::Ne(value)),
        (b'=', None) => (lhs, MetaTest::Eq(value)),
        _ => (lhs, MetaTest::Glob(value)),
    }
}

/// A metadata name: an HTTP header token (what `x-amz-meta-NAME` allows), lower-cased.
fn meta_name(name: &str) -> Result<String, String> {
    if name.is_empty() {
        return Err("the metadata name is empty".into());
    }
    if name.contains(['<', '>']) {
        return Err(format!(
            "metadata values are tested with =, != and ~ only; for a listing field write `@{name}`"
        ));
    }
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|".contains(c);
    if let Some(bad) = name.chars().find(|c| !token(*c)) {
        return Err(format!(
            "{bad:?} cannot appear in a metadata name (an HTTP header name)"
        ));
    }
    Ok(name.to_ascii_lowercase())
}

fn parse_field(rest: &str) -> Result<Filter, String> {
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    let (name, tail) = rest.split_at(end);
    if name.eq_ignore_ascii_case("error") {
        return match tail {
            "" => Ok(Filter::Error),
            _ => Err("`@error` takes no operator or value".into()),
        };
    }
    let field = Field::from_name(name).ok_or_else(|| match name {
        "" => "`@` must be followed by a field name".to_string(),
        _ => format!("unknown field `@{name}`"),
    })?;
    let (op, value) = Op::TOKENS
        .iter()
        .find_map(|(op, tok)| tail.strip_prefix(tok).map(|v| (*op, v)))
        .ok_or_else(|| format!("`@{}` needs an operator and a value", field.name()))?;
    if !field.allows(op) {
        return Err(format!(
            "`@{}` cannot be compared with `{}`",
            field.name(),
            op.token()
        ));
    }
    let value = operand(field, value)?;
    Ok(Filter::Field { field, op, value })
}

fn operand(field: Field, text: &str) -> Result<Operand, String> {
    match field.kind() {
        Kind::Int if matches!(field, Field::IsLatest | Field::DeleteMarker) => match text {
            "1" | "true" => Ok(Operand::Int(1)),
            "0" | "false" => Ok(Operand::Int(0)),
            _ => Err(format!("`{text}` is not true or false (1 or 0)")),
        },
        Kind::Int if field != Field::Size => text
            .parse()
            .map(Operand::Int)
            .map_err(|_| format!("`{text}` is not a whole number")),
        Kind::Int => parse_size(text)
            .map(Operand::Int)
            .ok_or_else(|| format!("`{text}` is not a size in bytes (e.g. 1048576, 10MB, 2GiB)")),
        Kind::Time => parse_time(text).ok_or_else(|| {
            format!(
                "`{text}` is not a UTC time (YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS[.fff]][Z]) or a time ago (-7d, -24h, -30m)"
            )
        }),
        Kind::Text if field == Field::State => match ObjectState::parse(text) {
            Some(state) => Ok(Operand::Text(state.as_str().into())),
            None => Err(format!(
                "`{text}` is not a state (pending, ok, error, gone)"
            )),
        },
        Kind::Text => Ok(Operand::Text(text.into())),
    }
}

/// `123`, `10MB` (10⁷), `2GiB` (2·2³⁰): a whole number of bytes.
fn parse_size(text: &str) -> Option<i64> {
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    if digits == 0 {
        return None;
    }
    let n: i64 = text[..digits].parse().ok()?;
    let unit: i64 = match text[digits..].to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(unit)
}

fn parse_time(text: &str) -> Option<Operand> {
    let at = crate::model::timefmt::parse_user_time(text)?;
    if crate::model::timefmt::parse_ago(text).is_some() {
        // `-7d` is an instant (now minus 7 days), compared as such.
        return Some(Operand::Time {
            at,
            precision: Precision::Milli,
        });
    }
    let time = text.trim().split_once(['T', 't', ' ']).map(|(_, t)| t);
    let precision = match time {
        None => Precision::Day,
        Some(t) if t.contains('.') => Precision::Milli,
        Some(t) if t.matches(':').count() == 1 => Precision::Minute,
        Some(_) => Precision::Second,
    };
    Some(Operand::Time { at, precision })
}

impl fmt::Display for Operand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operand::Text(t) => f.write_str(t),
            Operand::Int(n) => write!(f, "{n}"),
            Operand::Time { at, precision } => {
                // `at` is `YYYY-MM-DDTHH:MM:SS.fffZ`: cut it to the precision written.
                let len = match precision {
                    Precision::Day => 10,
                    Precision::Minute => 16,
                    Precision::Second => 19,
                    Precision::Milli => at.len(),
                };
                f.write_str(at.get(..len).unwrap_or(at))
            }
        }
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Filter::Meta { name, test } => match test {
                MetaTest::Eq(v) => write!(f, "{name}={v}"),
                MetaTest::Ne(v) => write!(f, "{name}!={v}"),
                MetaTest::Glob(g) => write!(f, "{name}~{g}"),
                MetaTest::Has => f.write_str(name),
                MetaTest::Lacks => write!(f, "!{name}"),
            },
            Filter::Tag { key, test } => match test {
                MetaTest::Eq(v) => write!(f, "{TAG}{key}={v}"),
                MetaTest::Ne(v) => write!(f, "{TAG}{key}!={v}"),
                MetaTest::Glob(g) => write!(f, "{TAG}{key}~{g}"),
                MetaTest::Has => write!(f, "{TAG}{key}"),
                MetaTest::Lacks => write!(f, "!{TAG}{key}"),
            },
            Filter::Field { field, op, value } => {
                write!(f, "@{}{}{value}", field.name(), op.token())
            }
            Filter::Error => f.write_str("@error"),
        }
    }
}

/// Translates a user glob (`*`, `?`, `\` escaping the next character) into an SQLite GLOB
/// pattern, in which `[` opens a character class and must itself be written `[[]`.
pub fn to_sqlite_glob(user: &str) -> String {
    let mut out = String::with_capacity(user.len() + 4);
    let mut chars = user.chars();
    while let Some(c) = chars.next() {
        match c {
            '*' | '?' => out.push(c),
            '\\' => match chars.next() {
                Some(lit) => push_literal(&mut out, lit),
                None => out.push('\\'),
            },
            _ => push_literal(&mut out, c),
        }
    }
    out
}

fn push_literal(out: &mut String, c: char) {
    match c {
        '*' | '?' | '[' => {
            out.push('[');
            out.push(c);
            out.push(']');
        }
        _ => out.push(c),
    }
}

#[cfg(test)]
mod tests;
