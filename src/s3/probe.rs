//! Cutting a keyspace into key ranges without listing it: probes of one key each.
//!
//! Receives: a lister (bucket and prefix) and a range (after, upper]. Sends on: a split key
//! S with keys on both sides (used by parallel listing to split a large range while it is
//! listed), or a plan of N ranges (start_after, end] that cover the keyspace exactly once
//! (`s3meta plan`, for sharded scans). Invariants: ranges are contiguous and disjoint by
//! construction (each split replaces (a, b] by increasing cuts inside it); a split needs only
//! `max-keys=1` LIST probes, found by walking down the key's characters to the first position
//! where keys differ, then searching the characters present at that position (and at the next
//! one, when the first has too few characters for even pieces), so hierarchical (`data/00/…`)
//! and flat (`obj-00001`) keyspaces split into fair shares. Characters are searched and cut
//! by their rank in the store's key order (`KeyOrder::rank`: in path-component order `/`
//! comes first); while that order is not known, only characters above `/` are cut at, where
//! both orders agree (a probe that meets a key with `/` establishes the order, and the caller
//! cuts afresh).

use crate::error::Error;
use crate::keys::Bounds;
use crate::s3::list::Lister;

/// Probes at most this many characters deep for the first position where keys differ.
const MAX_DEPTH: usize = 256;
/// Probes sent at once: a split costs a few round trips, not one per probe.
const FAN_OUT: usize = 16;

/// A key S in (after, upper) such that (after, S] and (S, upper] both hold keys, or `None`
/// when the range holds too few distinct keys to split.
pub async fn find_split(
    lister: &Lister,
    after: Option<&str>,
    upper: Option<&str>,
) -> Result<Option<String>, Error> {
    Ok(find_splits(lister, after, upper, 2).await?.pop())
}

/// Up to `pieces - 1` increasing keys cutting (after, upper], evenly spaced over the
/// characters present at the first position where the range's keys differ — and over those
/// of the next position too when the first has too few characters for even pieces, assuming every
/// character's subtree holds what one sampled subtree holds there (where it does not, a piece
/// may be empty: listed in one request, no harm). Empty when the range cannot be split.
pub async fn find_splits(
    lister: &Lister,
    after: Option<&str>,
    upper: Option<&str>,
    pieces: usize,
) -> Result<Vec<String>, Error> {
    let order = lister.order.current();
    let within = |k: &String| upper.is_none_or(|u| !order.lt(u, k));
    let Some(first) = lister.first_after(after).await?.filter(within) else {
        return Ok(Vec::new());
    };
    splits_from(lister, &first, after, upper, pieces).await
}

/// `find_splits` for a range being listed, `listed` its last listed key: the key stands in
/// for the first key of what is left, which saves a round trip — unless the keys left differ
/// only beyond its end (it is a prefix of them, like a folder marker `dir/` before `dir/…`),
/// then the next key is asked for after all.
pub async fn find_splits_after_key(
    lister: &Lister,
    listed: &str,
    upper: Option<&str>,
    pieces: usize,
) -> Result<Vec<String>, Error> {
    let cuts = splits_from(lister, listed, Some(listed), upper, pieces).await?;
    if !cuts.is_empty() {
        return Ok(cuts);
    }
    find_splits(lister, Some(listed), upper, pieces).await
}

/// The cuts of (after, upper] as seen from `first`, a key at its start.
async fn splits_from(
    lister: &Lister,
    first: &str,
    after: Option<&str>,
    upper: Option<&str>,
    pieces: usize,
) -> Result<Vec<String>, Error> {
    let order = lister.order.current();
    let within = |k: &String| upper.is_none_or(|u| !order.lt(u, k));
    let chars: Vec<char> = first.chars().collect();
    // Every key in (after, upper] shares the characters `first` shares with `upper`.
    let shared = upper.map_or(0, |u| {
        first
            .chars()
            .zip(u.chars())
            .take_while(|(a, b)| a == b)
            .count()
    });
    let start = lister.prefix.chars().count().max(shared);
    let Some(d) = first_difference(lister, &chars, start, &within).await? else {
        return Ok(Vec::new());
    };
    let common: String = chars[..d].iter().collect();
    let low = order.rank(chars[d]);
    // Both searches at once; the second one's answer is used only when the first position
    // has too few characters.
    let (high, next) = futures::future::try_join(
        last_char_at(lister, &common, low, upper),
        next_position(lister, &common, low, upper),
    )
    .await?;
    // Buckets: the characters low..high at position d. With fewer than four per piece the
    // pieces would differ by up to a whole bucket (ten digits in eight pieces: one or two
    // each), so the cuts go one position deeper.
    let buckets = u64::from(high - low);
    let pieces = pieces.max(2) as u64;
    let cuts: Vec<String> = match next {
        Some((low2, high2)) if buckets < 4 * pieces => {
            let sub = u64::from(high2 - low2);
            even_cuts(buckets * sub, pieces)
                .filter_map(|j| {
                    let b = order.char_at_or_after(low + (j / sub) as u32)?;
                    match j % sub {
                        0 => Some(format!("{common}{b}")),
                        c => Some(format!(
                            "{common}{b}{}",
                            order.char_at_or_after(low2 + c as u32)?
                        )),
                    }
                })
                .collect()
        }
        _ => even_cuts(buckets, pieces)
            .filter_map(|j| order.char_at_or_after(low + j as u32))
            .map(|c| format!("{common}{c}"))
            .collect(),
    };
    // While the order is unknown, only cut where both orders agree (see the module doc).
    let neutral = lister.order.known().is_none();
    // Strictly increasing and inside the range, whatever the character mapping did.
    let mut kept: Vec<String> = Vec::with_capacity(cuts.len());
    for k in cuts {
        let inside = after.is_none_or(|a| order.lt(a, &k)) && upper.is_none_or(|u| order.lt(&k, u));
        let agreed = !neutral || k[common.len()..].chars().all(|c| c > '/');
        if inside && agreed && kept.last().is_none_or(|last| order.lt(last, &k)) {
            kept.push(k);
        }
    }
    Ok(kept)
}

/// Indices cutting `n` equal buckets into up to `pieces` runs: each in 1..n, increasing.
fn even_cuts(n: u64, pieces: u64) -> impl Iterator<Item = u64> {
    let mut prev = 0;
    (1..pieces)
        .map(move |i| (n * i).div_ceil(pieces))
        .filter(move |&j| {
            let keep = j > prev && j < n;
            prev = prev.max(j);
            keep
        })
}

/// The characters at position d + 1 in the first full bucket after `low`'s (a sample of what
/// every bucket holds there): `(low2, high2)` with keys from low2 up to before high2, or
/// `None` when that bucket has fewer than two.
async fn next_position(
    lister: &Lister,
    common: &str,
    low: u32,
    upper: Option<&str>,
) -> Result<Option<(u32, u32)>, Error> {
    let order = lister.order.current();
    let Some(next) = order.char_at_or_after(low + 1) else {
        return Ok(None);
    };
    let Some(key) = lister.first_after(Some(&format!("{common}{next}"))).await? else {
        return Ok(None);
    };
    let mut rest = match key.strip_prefix(common) {
        Some(rest) if upper.is_none_or(|u| !order.lt(u, &key)) => rest.chars(),
        _ => return Ok(None),
    };
    let (Some(b), Some(low2)) = (rest.next(), rest.next()) else {
        return Ok(None);
    };
    let bucket = format!("{common}{b}");
    let low2 = order.rank(low2);
    let high2 = last_char_at(lister, &bucket, low2, upper).await?;
    Ok((high2 - low2 >= 2).then_some((low2, high2)))
}

/// The first position d ≥ `start` where some key of the range has another character than
/// `first` (`chars`): probes after `first[..=d]`'s successor, `FAN_OUT` depths at a time.
async fn first_difference(
    lister: &Lister,
    chars: &[char],
    start: usize,
    within: &(dyn Fn(&String) -> bool + Sync),
) -> Result<Option<usize>, Error> {
    let order = lister.order.current();
    let depths: Vec<usize> = (start..chars.len()).take(MAX_DEPTH).collect();
    for batch in depths.chunks(FAN_OUT) {
        let probes = batch.iter().map(|&d| {
            let next = order.successor(&chars[..=d].iter().collect::<String>());
            async move {
                match next {
                    Some(next) => lister.first_after(Some(&next)).await,
                    None => Ok(None),
                }
            }
        });
        let found = futures::future::try_join_all(probes).await?;
        if let Some(i) = found.iter().position(|k| k.as_ref().is_some_and(within)) {
            return Ok(Some(batch[i]));
        }
    }
    Ok(None)
}

/// The largest character c at the position after `common` such that a key greater than
/// `common + c` (and starting with `common`) exists within `upper`; at least `low + 1`.
/// A `FAN_OUT`-ary search: each round probes several characters at once.
async fn last_char_at(
    lister: &Lister,
    common: &str,
    low: u32,
    upper: Option<&str>,
) -> Result<u32, Error> {
    let order = lister.order.current();
    let has_keys_from = |c: u32| {
        let probe = order.char_at_or_after(c).map(|ch| format!("{common}{ch}"));
        async move {
            let Some(probe) = probe else { return Ok(false) };
            let k = lister.first_after(Some(&probe)).await?;
            Ok::<bool, Error>(
                k.is_some_and(|k| k.starts_with(common) && upper.is_none_or(|u| !order.lt(u, &k))),
            )
        }
    };
    // Most keys are ASCII: search below 0x80, and in the same round ask whether any key goes
    // beyond it; if one does, search the rest of Unicode instead.
    let (mut lo, mut hi) = if low < 0x7F {
        (low, 0x80)
    } else {
        (low, 0x10FFFF)
    };
    let mut beyond_ascii_unknown = low < 0x7F;
    // Invariant: keys exist from `lo` (or lo == low, known), none from `hi` (unless the top,
    // or `hi` is 0x80 and `beyond_ascii_unknown`).
    while hi - lo > 1 || beyond_ascii_unknown {
        let step = (hi - lo).div_ceil(FAN_OUT as u32).max(1);
        let mut points: Vec<u32> = (1..FAN_OUT as u32)
            .map(|i| lo + i * step)
            .filter(|&c| c < hi)
            .collect();
        if beyond_ascii_unknown {
            points.push(0x80);
        }
        let mut answers =
            futures::future::try_join_all(points.iter().map(|&c| has_keys_from(c))).await?;
        if std::mem::take(&mut beyond_ascii_unknown) {
            points.pop();
            if answers.pop() == Some(true) {
                (lo, hi) = (0x80, 0x10FFFF);
                continue;
            }
        }
        // Answers are monotone (true, …, true, false, …): the last true bounds `lo`.
        let trues = answers.iter().take_while(|&&t| t).count();
        if trues > 0 {
            lo = points[trues - 1];
        }
        if trues < points.len() {
            hi = points[trues];
        } else if points.is_empty() || step == 1 {
            break;
        }
    }
    Ok((lo + 1).max(low + 1))
}

/// Cuts (start_after, end] into up to `n` ranges: repeatedly splits the range believed
/// largest (each split halves its estimated share). Fewer come back when the keyspace holds
/// too few distinct keys.
pub async fn plan(lister: &Lister, whole: Bounds, n: usize) -> Result<Vec<Bounds>, Error> {
    // Cuts are made in the store's order (or, when it cannot be told, where both agree).
    lister.establish_order().await?;
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
