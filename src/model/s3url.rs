//! Parsing of `s3://BUCKET[/PREFIX]` arguments.
//!
//! Receives: the text a user typed. Sends on: an `S3Url` whose bucket is a valid bucket name
//! and whose prefix is kept byte for byte (a trailing `/`, `..`, `*`, `%` are all part of it:
//! S3 prefixes are plain strings). Invariant: `S3Url::parse(&url.to_string()) == Ok(url)`.

use std::fmt;

use crate::error::Error;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Url {
    pub bucket: String,
    pub prefix: String,
}

impl S3Url {
    pub fn parse(text: &str) -> Result<S3Url, Error> {
        let bad = |reason: &str| Error::BadUrl {
            url: text.chars().map(shown).collect(),
            reason: reason.to_string(),
        };
        let Some(rest) = strip_scheme(text) else {
            return Err(bad(
                "expected s3://BUCKET[/PREFIX], e.g. s3://my-bucket/logs/2026/",
            ));
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(bad("no bucket name after s3://"));
        }
        check_bucket_name(bucket).map_err(|r| bad(&r))?;
        Ok(S3Url {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        })
    }
}

fn strip_scheme(text: &str) -> Option<&str> {
    let (scheme, rest) = text.split_once("://")?;
    scheme.eq_ignore_ascii_case("s3").then_some(rest)
}

/// Bucket names as S3-compatible stores accept them: the strict AWS rules are a subset, and
/// legacy or on-premises buckets may hold upper case and underscores, so those are allowed.
pub fn check_bucket_name(name: &str) -> Result<(), String> {
    let shown_name: String = name.chars().map(shown).collect();
    if name.len() < 3 || name.len() > 255 {
        return Err(format!(
            "bucket name `{shown_name}` must be 3 to 255 characters long"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
    {
        return Err(format!(
            "bucket name `{shown_name}` contains `{}`: only letters, digits, `.`, `-` and `_` are allowed",
            shown(c)
        ));
    }
    let first = name.as_bytes()[0];
    if !first.is_ascii_alphanumeric() {
        return Err(format!(
            "bucket name `{shown_name}` must start with a letter or a digit"
        ));
    }
    Ok(())
}

/// A character as an error message shows it: control characters escaped (`\n`), so the
/// message stays one line; everything else as typed (`ü`, `\`, ` `).
fn shown(c: char) -> String {
    if c.is_control() {
        c.escape_default().to_string()
    } else {
        c.to_string()
    }
}

impl fmt::Display for S3Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix.is_empty() {
            write!(f, "s3://{}", self.bucket)
        } else {
            write!(f, "s3://{}/{}", self.bucket, self.prefix)
        }
    }
}

/// The smallest string greater than every string that starts with `prefix`, or `None` when
/// there is none (empty prefix, or one made only of U+10FFFF). Keys `k` with
/// `prefix <= k < successor` are exactly the keys starting with `prefix`, in UTF-8 byte
/// order, which is also SQLite's BINARY order for text.
pub fn prefix_successor(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = match last as u32 {
            0xD7FF => Some('\u{E000}'),
            c => char::from_u32(c + 1),
        };
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bucket_and_prefix_exactly() {
        let u = S3Url::parse("s3://my-bucket/logs/2026/").unwrap();
        assert_eq!(u.bucket, "my-bucket");
        assert_eq!(u.prefix, "logs/2026/");
        let u = S3Url::parse("S3://b_b/a/../*?[x%20").unwrap();
        assert_eq!(u.prefix, "a/../*?[x%20");
        assert_eq!(S3Url::parse("s3://bucket/").unwrap().prefix, "");
        assert_eq!(S3Url::parse("s3://bucket").unwrap().prefix, "");
        assert_eq!(S3Url::parse("s3://bucket//x").unwrap().prefix, "/x");
    }

    #[test]
    fn refuses_bad_urls_with_a_reason() {
        for (url, needle) in [
            ("my-bucket/logs", "expected s3://"),
            ("s3://", "no bucket"),
            ("s3:///x", "no bucket"),
            ("http://bucket/x", "expected s3://"),
            ("s3://ab", "3 to 255"),
            ("s3://bad bucket/x", "contains ` `"),
            ("s3://-bucket", "must start"),
        ] {
            let e = S3Url::parse(url).unwrap_err().to_string();
            assert!(e.contains(needle), "{url}: {e}");
        }
    }

    #[test]
    fn successor_bounds_the_prefix() {
        assert_eq!(prefix_successor(""), None);
        assert_eq!(prefix_successor("a/"), Some("a0".to_string()));
        assert_eq!(prefix_successor("a\u{10FFFF}"), Some("b".to_string()));
        assert_eq!(prefix_successor("\u{D7FF}"), Some("\u{E000}".to_string()));
        let p = "logs/é";
        let s = prefix_successor(p).unwrap();
        for k in ["logs/é", "logs/éa", "logs/é\u{10FFFF}"] {
            assert!(k >= p && k < s.as_str(), "{k}");
        }
        for k in ["logs/f", "logs/ê", "logs0"] {
            assert!(!(k >= p && k < s.as_str()), "{k}");
        }
    }

    mod props {
        //! Property tests (issue 6): the parser never panics, valid URLs round-trip, and
        //! the successor bounds exactly the keys of a prefix.
        use super::super::*;
        use proptest::prelude::*;

        /// Characters that stress a URL parser: separators, glob and escape characters,
        /// whitespace, multi-byte and astral code points.
        fn nasty_char() -> impl Strategy<Value = char> {
            prop_oneof![
                prop::sample::select(vec![
                    '/',
                    ':',
                    's',
                    '3',
                    'S',
                    '.',
                    '-',
                    '_',
                    '%',
                    '*',
                    '?',
                    '[',
                    ']',
                    '\\',
                    ' ',
                    '\n',
                    '\t',
                    '#',
                    '@',
                    'a',
                    'Z',
                    'é',
                    '\u{10FFFF}',
                    '\u{D7FF}',
                    '\u{E000}',
                ]),
                any::<char>(),
            ]
        }

        fn nasty_string(max: usize) -> impl Strategy<Value = String> {
            prop::collection::vec(nasty_char(), 0..max).prop_map(|v| v.into_iter().collect())
        }

        /// Bucket names every S3-compatible store accepts, and the legacy forms we allow.
        fn bucket() -> impl Strategy<Value = String> {
            "[a-zA-Z0-9][a-zA-Z0-9._-]{2,62}"
        }

        proptest! {
            #[test]
            fn parse_never_panics(text in nasty_string(40), tail in nasty_string(20)) {
                let _ = S3Url::parse(&text);
                let _ = S3Url::parse(&format!("s3://{text}"));
                let _ = S3Url::parse(&format!("S3://{text}/{tail}"));
            }

            #[test]
            fn refusals_are_one_line(text in nasty_string(40)) {
                for url in [text.clone(), format!("s3://{text}")] {
                    if let Err(e) = S3Url::parse(&url) {
                        prop_assert!(!e.to_string().contains(['\n', '\r']), "{}", e);
                    }
                }
            }

            #[test]
            fn valid_urls_round_trip(bucket in bucket(), prefix in nasty_string(30)) {
                let url = S3Url { bucket, prefix };
                let text = url.to_string();
                prop_assert_eq!(S3Url::parse(&text).ok(), Some(url));
            }

            #[test]
            fn parsed_urls_print_back_to_an_equal_url(text in nasty_string(40)) {
                if let Ok(url) = S3Url::parse(&format!("s3://{text}")) {
                    prop_assert_eq!(S3Url::parse(&url.to_string()).ok(), Some(url));
                }
            }

            #[test]
            fn successor_bounds_exactly_the_keys_of_the_prefix(
                prefix in nasty_string(6),
                key in nasty_string(8),
            ) {
                // Keys near the prefix matter most: try it, it extended, and the raw key.
                for k in [key.clone(), format!("{prefix}{key}"), prefix.clone()] {
                    let inside = match prefix_successor(&prefix) {
                        Some(s) => k.as_str() >= prefix.as_str() && k < s,
                        None => k.as_str() >= prefix.as_str(),
                    };
                    prop_assert_eq!(inside, k.starts_with(&prefix), "key {:?}", k);
                }
            }
        }
    }
}
