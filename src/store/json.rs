//! SQLite values as JSON: the one conversion behind `query`, `changes` and the canonical dump.
//!
//! Receives: one column value. Sends on: its JSON form — integers and text as themselves, a
//! real as a number (null when not finite), a blob as base64 text, and text holding a JSON
//! document (metadata columns) parsed when the caller asks. Invariant: the conversion is
//! lossless for every value s3meta stores, so the canonical dump compares blobs too.

use base64::Engine;
use rusqlite::types::ValueRef;
use serde_json::Value;

/// `v` as JSON; `parse_text`: text that holds a JSON document becomes that document.
pub fn value(v: ValueRef<'_>, parse_text: bool) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::from(i),
        ValueRef::Real(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
        ValueRef::Text(t) => {
            if parse_text && let Ok(parsed) = serde_json::from_slice(t) {
                return parsed;
            }
            Value::String(String::from_utf8_lossy(t).into_owned())
        }
        ValueRef::Blob(b) => Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_value() {
        assert_eq!(value(ValueRef::Null, true), Value::Null);
        assert_eq!(value(ValueRef::Integer(-3), false), Value::from(-3));
        assert_eq!(value(ValueRef::Real(f64::NAN), false), Value::Null);
        assert_eq!(value(ValueRef::Real(1.5), false), Value::from(1.5));
        assert_eq!(value(ValueRef::Blob(b"\0a"), false), Value::from("AGE="));
        let doc = ValueRef::Text(br#"{"owner":"ann"}"#);
        assert_eq!(value(doc, false), Value::from(r#"{"owner":"ann"}"#));
        assert_eq!(value(doc, true), serde_json::json!({"owner": "ann"}));
        assert_eq!(
            value(ValueRef::Text(b"not json"), true),
            Value::from("not json")
        );
    }
}
