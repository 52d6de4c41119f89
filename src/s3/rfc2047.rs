//! Decoding of RFC 2047 encoded-words in metadata values.
//!
//! S3 returns a non-ASCII metadata value as one or more encoded-words
//! (`=?UTF-8?B?w6l0w6k=?=`, or Q encoding). Receives: a header value as S3 sent it. Sends on:
//! the value as the user stored it. Invariant: anything that is not a well-formed encoded-word
//! in a known charset is kept byte for byte; whitespace between two adjacent encoded-words is
//! dropped, as the RFC says, and kept everywhere else.

use std::borrow::Cow;

use base64::Engine;

/// Decodes every encoded-word in `value`; returns it unchanged (borrowed) when there is none.
pub fn decode(value: &str) -> Cow<'_, str> {
    if !value.contains("=?") {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    // Whitespace seen after an encoded-word, held back until we know what follows it.
    let mut pending_space: Option<&str> = None;
    let mut after_word = false;
    while !rest.is_empty() {
        if let Some((decoded, len)) = rest.starts_with("=?").then(|| word(rest)).flatten() {
            // Whitespace between two encoded-words is not part of the text.
            pending_space = None;
            out.push_str(&decoded);
            rest = &rest[len..];
            after_word = true;
            continue;
        }
        let ws_len = rest.len() - rest.trim_start_matches([' ', '\t', '\r', '\n']).len();
        if after_word && ws_len > 0 {
            pending_space = Some(&rest[..ws_len]);
            rest = &rest[ws_len..];
            after_word = false;
            continue;
        }
        if let Some(space) = pending_space.take() {
            out.push_str(space);
        }
        let ch = rest.chars().next().expect("rest is not empty");
        out.push(ch);
        rest = &rest[ch.len_utf8()..];
        after_word = false;
    }
    if let Some(space) = pending_space {
        out.push_str(space);
    }
    Cow::Owned(out)
}

/// Parses one encoded-word at the start of `s`: returns the decoded text and its length.
fn word(s: &str) -> Option<(String, usize)> {
    let body = &s[2..];
    let (charset, body) = body.split_once('?')?;
    let (encoding, body) = body.split_once('?')?;
    let end = body.find("?=")?;
    let text = &body[..end];
    if text.contains(|c: char| c.is_whitespace() || c == '?') {
        return None;
    }
    let len = 2 + charset.len() + 1 + encoding.len() + 1 + end + 2;
    // RFC 2231 allows a language suffix: `UTF-8*en`.
    let charset = charset.split('*').next().unwrap_or(charset);
    let bytes = match encoding {
        "B" | "b" => base64::engine::general_purpose::STANDARD
            .decode(text)
            .ok()?,
        "Q" | "q" => q_decode(text)?,
        _ => return None,
    };
    let decoded = match charset.to_ascii_lowercase().as_str() {
        "utf-8" | "utf8" | "us-ascii" => String::from_utf8(bytes).ok()?,
        "iso-8859-1" | "latin1" | "latin-1" => bytes.iter().map(|&b| char::from(b)).collect(),
        _ => return None,
    };
    Some((decoded, len))
}

fn q_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'_' => out.push(b' '),
            b'=' => {
                let hi = (bytes.next()? as char).to_digit(16)?;
                let lo = (bytes.next()? as char).to_digit(16)?;
                out.push((hi * 16 + lo) as u8);
            }
            _ => out.push(b),
        }
    }
    Some(out)
}

/// Encodes `value` as one B encoded-word, as S3 does for non-ASCII values (for the tests:
/// s3meta itself only decodes).
#[cfg(test)]
pub fn encode(value: &str) -> String {
    format!(
        "=?UTF-8?B?{}?=",
        base64::engine::general_purpose::STANDARD.encode(value)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_b_and_q_words() {
        assert_eq!(decode("=?UTF-8?B?w6l0w6k=?="), "été");
        assert_eq!(decode("=?utf-8?q?caf=C3=A9_cr=C3=A8me?="), "café crème");
        assert_eq!(decode("=?ISO-8859-1?Q?caf=E9?="), "café");
        assert_eq!(decode("=?UTF-8?B?w6k=?= =?UTF-8?B?w6k=?="), "éé");
        assert_eq!(decode("a =?UTF-8?B?w6k=?= b"), "a é b");
        assert_eq!(decode(&encode("日本語 🎉")), "日本語 🎉");
    }

    #[test]
    fn keeps_what_is_not_an_encoded_word() {
        for raw in [
            "plain",
            "",
            "=?",
            "=?UTF-8?B?not base64?=",
            "=?UTF-8?X?abc?=",
            "=?KOI8-R?B?w6k=?=",
            "=?UTF-8?B?/w==?=",
            "a=?b",
            "=?UTF-8?Q?=ZZ?=",
            "  spaced  ",
        ] {
            assert_eq!(decode(raw), raw, "{raw:?}");
        }
    }

    mod props {
        //! Property tests (issue 6): the decoder never panics, undoes the encoding S3 uses,
        //! and leaves values without `=?` alone.
        use super::super::*;
        use proptest::prelude::*;

        /// Pieces that make a decoder take every branch: word delimiters, encodings,
        /// charsets, base64 and Q escapes, whitespace, multi-byte characters.
        fn piece() -> impl Strategy<Value = String> {
            prop_oneof![
                prop::sample::select(vec![
                    "=?",
                    "?=",
                    "?",
                    "=",
                    "UTF-8",
                    "utf-8*en",
                    "ISO-8859-1",
                    "KOI8-R",
                    "?B?",
                    "?b?",
                    "?Q?",
                    "?q?",
                    "?X?",
                    "w6k=",
                    "/w==",
                    "=C3=A9",
                    "=ZZ",
                    "=E",
                    "_",
                    " ",
                    "\t",
                    "\r\n",
                    "é",
                    "🎉",
                    "\u{0}",
                ])
                .prop_map(str::to_string),
                any::<char>().prop_map(String::from),
                "[A-Za-z0-9+/=]{0,8}",
            ]
        }

        fn soup() -> impl Strategy<Value = String> {
            prop::collection::vec(piece(), 0..24).prop_map(|v| v.concat())
        }

        /// Q encoding of `s` (RFC 2047 §4.2), as other S3 clients and servers write it.
        fn q_encode(s: &str) -> String {
            let mut out = String::from("=?UTF-8?Q?");
            for b in s.bytes() {
                match b {
                    b' ' => out.push('_'),
                    b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'!' | b'*' | b'+' | b'-' | b'/' => {
                        out.push(char::from(b))
                    }
                    _ => out.push_str(&format!("={b:02X}")),
                }
            }
            out.push_str("?=");
            out
        }

        proptest! {
            #[test]
            fn decode_never_panics(value in soup(), raw in any::<String>()) {
                let _ = decode(&value);
                let _ = decode(&raw);
                let _ = decode(&format!("=?{raw}?="));
            }

            #[test]
            fn decode_undoes_encode(s in any::<String>()) {
                prop_assert_eq!(decode(&encode(&s)).into_owned(), s.clone());
                prop_assert_eq!(decode(&q_encode(&s)).into_owned(), s);
            }

            #[test]
            fn whitespace_between_words_is_dropped_and_kept_around_them(
                a in any::<String>(),
                b in any::<String>(),
                gap in "[ \t]{1,3}",
                before in "[a-z ]{0,5}",
                after in "[a-z ]{0,5}",
            ) {
                let joined = format!("{before}{}{gap}{}{after}", encode(&a), q_encode(&b));
                prop_assert_eq!(decode(&joined), format!("{before}{a}{b}{after}"));
            }

            #[test]
            fn values_without_encoded_words_are_returned_unchanged(value in soup()) {
                let mut value = value;
                while value.contains("=?") {
                    value = value.replace("=?", "=");
                }
                let decoded = decode(&value);
                prop_assert!(matches!(decoded, Cow::Borrowed(_)));
                prop_assert_eq!(decoded, value.as_str());
            }
        }
    }
}
