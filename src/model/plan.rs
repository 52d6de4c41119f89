//! A line of `s3meta plan`: one key range of a bucket's prefix, as JSON, for
//! `scan --range-json` on another machine.
//!
//! Receives: a target with its bounds and the order they were cut in (written by `plan`), or
//! a line of text (read by `scan --range-json`). Sends on: the JSON line, or the target.
//! Invariant: a line names the order of its cuts, and a line without one (an older release's)
//! is refused on a store whose order it could not have been cut in.

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::keys::{Bounds, KeyOrder};
use crate::model::Target;

/// One line of `s3meta plan`: a key range (start_after, end] of a bucket's prefix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeLine {
    pub bucket: String,
    pub prefix: String,
    pub start_after: Option<String>,
    pub end: Option<String>,
    /// Position of the range in its plan, and the plan's size (informational).
    #[serde(default)]
    pub index: usize,
    #[serde(default)]
    pub of: usize,
    /// The store's listing order the cuts were made in; `null` when the plan could not tell
    /// (its cuts then mean the same in both orders). Lines of older releases have none and
    /// were cut in byte order.
    #[serde(default)]
    pub order: Option<KeyOrder>,
}

impl RangeLine {
    pub fn lines(
        bucket: &str,
        prefix: &str,
        ranges: &[Bounds],
        order: Option<KeyOrder>,
    ) -> Vec<RangeLine> {
        ranges
            .iter()
            .enumerate()
            .map(|(i, b)| RangeLine {
                bucket: bucket.to_string(),
                prefix: prefix.to_string(),
                start_after: b.start_after.clone(),
                end: b.end.clone(),
                index: i,
                of: ranges.len(),
                order,
            })
            .collect()
    }

    /// Parses and checks a line: the bucket is a bucket name as `s3://` URLs require (never
    /// `s3://x` or `a/../b` sent to the store), and the range is not empty.
    pub fn parse(text: &str) -> Result<RangeLine, Error> {
        let bad = |reason: String| {
            Error::BadInput(format!(
                "--range-json: {reason}; expected one line printed by `s3meta plan`, e.g. {{\"bucket\":\"b\",\"prefix\":\"\",\"start_after\":null,\"end\":\"k\"}}"
            ))
        };
        let line: RangeLine = serde_json::from_str(text.trim()).map_err(|e| bad(e.to_string()))?;
        crate::model::s3url::check_bucket_name(&line.bucket).map_err(bad)?;
        // In the order the line was cut in (`/` sorts first in path order).
        let order = line.order.unwrap_or(KeyOrder::Byte);
        if let (Some(a), Some(e)) = (&line.start_after, &line.end)
            && !order.lt(a, e)
        {
            return Err(bad(format!(
                "the range is empty (start_after {a:?} is not before end {e:?})"
            )));
        }
        Ok(line)
    }

    pub fn target(&self, store: &str) -> Target {
        Target {
            store: store.to_string(),
            bucket: self.bucket.clone(),
            prefix: self.prefix.clone(),
            start_after: self.start_after.clone(),
            end_key: self.end.clone(),
            versions: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 13: a range is empty or not in the order its plan was cut in.
    #[test]
    fn range_lines_are_checked_in_their_own_order() {
        let line = |order: &str| {
            format!(
                r#"{{"bucket":"bkt","prefix":"","start_after":"a/b","end":"a!x","order":{order}}}"#
            )
        };
        assert!(RangeLine::parse(&line("\"path\"")).is_ok());
        let err = RangeLine::parse(&line("\"byte\"")).unwrap_err().to_string();
        assert!(err.contains("the range is empty"), "{err}");
        assert!(RangeLine::parse(&line("null")).is_err());
        let err =
            RangeLine::parse(r#"{"bucket":"s3://x","prefix":"","start_after":null,"end":null}"#)
                .unwrap_err()
                .to_string();
        assert!(err.contains("bucket name `s3://x` contains `:`"), "{err}");
    }
}
