//! Cutting a keyspace into key ranges without listing it: probes of one key each.
//!
//! Receives: a lister (bucket and prefix) and a range (after, upper]. Sends on: a split key
//! S with keys on both sides (used by parallel listing to split a large range while it is
//! listed), or a plan of N ranges (start_after, end] that cover the keyspace exactly once
//! (`s3meta plan`, for sharded scans). Invariants: ranges are contiguous and disjoint by construction (each split
//! replaces (a, b] by (a, S] and (S, b]); a split needs only `max-keys=1` LIST probes, found
//! by walking down the key's characters to the first position where keys differ, then
//! bisecting the characters present at that position, so hierarchical (`data/00/…`) and flat
//! (`obj-00001`) keyspaces split near their middle.

use crate::error::Error;
use crate::lister::Lister;
use crate::s3url::prefix_successor;

/// A key range: keys in (start_after, end]; `None` is unbounded.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Bounds {
    pub start_after: Option<String>,
    pub end: Option<String>,
}

/// Probes at most this many characters deep for the first position where keys differ.
const MAX_DEPTH_PROBES: usize = 64;

/// A key S in (after, upper) such that (after, S] and (S, upper] both hold keys, or `None`
/// when the range holds too few distinct keys to split.
pub async fn find_split(
    lister: &Lister,
    after: Option<&str>,
    upper: Option<&str>,
) -> Result<Option<String>, Error> {
    let within = |k: &String| upper.is_none_or(|u| k.as_str() <= u);
    let Some(first) = lister.first_after(after).await?.filter(within) else {
        return Ok(None);
    };
    let chars: Vec<char> = first.chars().collect();
    let start = lister.prefix.chars().count();
    // The first position d where some key of the range differs from `first`'s character.
    let mut depth = None;
    for d in (start..chars.len()).take(MAX_DEPTH_PROBES) {
        let head: String = chars[..=d].iter().collect();
        let Some(next) = prefix_successor(&head) else {
            continue;
        };
        if lister
            .first_after(Some(&next))
            .await?
            .filter(within)
            .is_some()
        {
            depth = Some(d);
            break;
        }
    }
    let Some(d) = depth else { return Ok(None) };
    let common: String = chars[..d].iter().collect();
    let low = chars[d] as u32;
    let high = last_char_at(lister, &common, low, upper).await?;
    // high > low: a key beyond `first`'s subtree exists at this position.
    let mid = low + (high - low).div_ceil(2);
    Ok(char_at_or_after(mid).map(|c| format!("{common}{c}")))
}

/// The largest character c at the position after `common` such that a key greater than
/// `common + c` (and starting with `common`) exists within `upper`; at least `low + 1`.
async fn last_char_at(
    lister: &Lister,
    common: &str,
    low: u32,
    upper: Option<&str>,
) -> Result<u32, Error> {
    let has_keys_from = |c: u32| {
        let probe = char_at_or_after(c).map(|ch| format!("{common}{ch}"));
        async move {
            let Some(probe) = probe else { return Ok(false) };
            let k = lister.first_after(Some(&probe)).await?;
            Ok::<bool, Error>(
                k.is_some_and(|k| k.starts_with(common) && upper.is_none_or(|u| k.as_str() <= u)),
            )
        }
    };
    // Most keys are ASCII: search below 0x80 first, then the rest of Unicode.
    let (mut lo, mut hi) = if low < 0x7F && !has_keys_from(0x7F).await? {
        (low, 0x7F)
    } else {
        (low.max(0x7F), 0x10FFFF)
    };
    // Invariant: has_keys_from(lo) (or lo == low, known true), !has_keys_from(hi) unless hi is the top.
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if has_keys_from(mid).await? {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok((lo + 1).max(low + 1))
}

/// The character `c`, or the first valid one after it (skipping surrogates).
fn char_at_or_after(c: u32) -> Option<char> {
    char::from_u32(c)
        .or_else(|| char::from_u32(0xE000))
        .filter(|_| c <= 0x10FFFF)
}

/// Cuts (start_after, end] into up to `n` ranges: repeatedly splits the range believed
/// largest (each split halves its estimated share). Fewer come back when the keyspace holds
/// too few distinct keys.
pub async fn plan(lister: &Lister, whole: Bounds, n: usize) -> Result<Vec<Bounds>, Error> {
    let mut ranges = vec![(whole, 1.0f64, false)];
    while ranges.len() < n {
        let Some(i) = ranges
            .iter()
            .enumerate()
            .filter(|(_, r)| !r.2)
            .max_by(|a, b| a.1.1.total_cmp(&b.1.1).then(b.0.cmp(&a.0)))
            .map(|(i, _)| i)
        else {
            break;
        };
        let (b, weight, _) = ranges[i].clone();
        match find_split(lister, b.start_after.as_deref(), b.end.as_deref()).await? {
            Some(s) => {
                let left = Bounds {
                    start_after: b.start_after.clone(),
                    end: Some(s.clone()),
                };
                let right = Bounds {
                    start_after: Some(s),
                    end: b.end,
                };
                ranges[i] = (left, weight / 2.0, false);
                ranges.insert(i + 1, (right, weight / 2.0, false));
            }
            None => ranges[i].2 = true,
        }
    }
    Ok(ranges.into_iter().map(|r| r.0).collect())
}
