//! Which order the store lists keys in: learnt from the listing itself, probed when it must be
//! known and the pages have not shown it.
//!
//! Receives: every page a range lists (with the key before it) and, when asked, an anchor key
//! to probe with. Sends on: the order every key comparison of the scan uses (`current`), and
//! whether it is established yet (`known`). Invariants: two consecutive listed keys that S3's
//! byte order and path-component order put in different ways show the order at no cost; a
//! pair that neither order allows, or one that contradicts the order already established,
//! stops the scan (never a partial scan); while the order is not known, comparisons use byte
//! order, which agrees with path order on every key seen so far — and the scan asks for the
//! order (`resolve`) before committing anything whose meaning would differ (see `Lister::settle`, called by `scan::lister::run`).

use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;

use crate::error::Error;
use crate::keys::{KeyOrder, path_cmp};

use super::Lister;

/// The scan's knowledge of the store's order, shared by every range.
#[derive(Debug, Default)]
pub struct Order {
    known: Mutex<Option<KeyOrder>>,
    /// Serializes probes: ranges needing the order wait for one resolution.
    probing: tokio::sync::Mutex<()>,
    /// The target has bounds (its own, or ranges cut at its start): no page but a whole range
    /// is committed under a guessed order, since where a bound clips would differ.
    pub bounded: bool,
    /// The target held objects before: a page's deletion window is then read in the order,
    /// and must not be read under a guessed one where that would change what it holds.
    pub stored: Option<StoredAcross>,
    /// A stored key with `/` after the prefix, to probe with when nothing listed has one.
    pub anchor: Mutex<Option<String>>,
    /// The bounds of the scan's key ranges (its own, from a plan line, and its splits) with
    /// the order each was cut in: a cut made in another order than the store's is refused,
    /// unless it means the same in both (`KeyOrder::is_neutral`).
    pub cuts: Vec<(KeyOrder, String)>,
    /// A listed key with `/` after the prefix, kept while the order is not known: a page that
    /// needs the order and lists no such key (`Lister::settle`) or the probe at the end of a
    /// large scan (`resolve_after_listing`) takes it.
    seen: Mutex<Option<String>>,
}

/// Asks the index whether a stored key of the target lies on one side of a bound in byte
/// order and on the other in path order (`store::scans::stored_across`): only then does a
/// page's deletion window depend on the order. Given the bounds, answers `true` if one does.
#[derive(Clone)]
pub struct StoredAcross(
    #[allow(clippy::type_complexity)]
    pub  Arc<dyn Fn(Vec<String>) -> BoxFuture<'static, Result<bool, Error>> + Send + Sync>,
);

impl std::fmt::Debug for StoredAcross {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoredAcross")
    }
}

/// What a probe found out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Known(KeyOrder),
    /// The anchor's directory has no keys now: nothing to tell the orders apart by.
    Inconclusive,
}

impl Order {
    pub fn new(known: Option<KeyOrder>) -> Order {
        Order {
            known: Mutex::new(known),
            ..Order::default()
        }
    }

    /// What a scan starts with: see the fields.
    pub fn for_scan(
        known: Option<KeyOrder>,
        stored: Option<StoredAcross>,
        anchor: Option<String>,
        cuts: Vec<(KeyOrder, String)>,
    ) -> Order {
        Order {
            bounded: !cuts.is_empty(),
            stored,
            anchor: Mutex::new(anchor),
            cuts,
            ..Order::new(known)
        }
    }

    pub fn known(&self) -> Option<KeyOrder> {
        *self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The order comparisons use now: the known one, else byte order (which agrees with path
    /// order on every key listed so far).
    pub fn current(&self) -> KeyOrder {
        self.known().unwrap_or(KeyOrder::Byte)
    }

    /// Takes the order a listing or probe showed; refuses one that contradicts what is known.
    fn learn(&self, order: KeyOrder, lister: &Lister, why: &str) -> Result<(), Error> {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        match *known {
            Some(k) if k != order => {
                return Err(lister.order_error(format!(
                    "{why}, but its earlier listings showed {}",
                    k.describe()
                )));
            }
            Some(_) => return Ok(()),
            None => *known = Some(order),
        }
        drop(known);
        self.check_cuts(lister)?;
        tracing::info!(
            "s3://{} at {} lists keys in {} ({why})",
            lister.bucket,
            lister.store,
            order.describe()
        );
        Ok(())
    }

    /// Refuses cuts made in another order than the store's known one, unless they mean the
    /// same in both.
    pub fn check_cuts(&self, lister: &Lister) -> Result<(), Error> {
        let Some(order) = self.known() else {
            return Ok(());
        };
        match self
            .cuts
            .iter()
            .find(|(cut_in, b)| *cut_in != order && !KeyOrder::is_neutral(b))
        {
            Some((cut_in, _)) => Err(Error::OrderChanged {
                bucket: lister.bucket.clone(),
                store: lister.store.clone(),
                cut_in: cut_in.describe(),
                lists_in: order.describe(),
            }),
            None => Ok(()),
        }
    }

    /// Checks that `keys`, listed after `prev`, are in an order the scan can work with, and
    /// learns the store's order from the first pair that tells the two apart.
    pub fn observe<'k>(
        &self,
        lister: &Lister,
        prev: Option<&'k str>,
        keys: impl Iterator<Item = &'k str>,
    ) -> Result<(), Error> {
        let mut prev = prev;
        for key in keys {
            if let Some(p) = prev {
                let byte = p < key;
                let path = path_cmp(p, key).is_lt();
                let shows = match (byte, path) {
                    (true, true) => None,
                    (true, false) => Some(KeyOrder::Byte),
                    (false, true) => Some(KeyOrder::Path),
                    (false, false) => {
                        return Err(lister.order_error(format!(
                            "it listed {key:?} after {p:?}, which is neither S3's byte order nor path-component order"
                        )));
                    }
                };
                if let Some(order) = shows {
                    let why = format!("it listed {key:?} after {p:?}");
                    self.learn(order, lister, &why)?;
                }
            }
            prev = Some(key);
        }
        Ok(())
    }

    /// Whether a page between `bounds` (the key before it, and its last keys unless it ends
    /// the listing) must wait for the order before it commits, which is unknown yet: when the
    /// target is bounded, or when a stored key lies between the bounds in one order and not
    /// in the other. A page whose window holds the same stored keys in both orders
    /// commits the same rows in both (its listed keys are in both orders, `observe`), so a
    /// rescan of a small target never probes for the order unless its stored keys need it.
    pub async fn page_needs_order(
        &self,
        prefix: &str,
        bounds: [Option<&str>; 3],
    ) -> Result<bool, Error> {
        if self.known().is_some() {
            return Ok(false);
        }
        if self.bounded {
            return Ok(true);
        }
        self.stored_across(prefix, bounds.into_iter().flatten())
            .await
    }

    /// Whether a stored key lies on one side of one of `bounds` in byte order and on the
    /// other in path order (`StoredAcross`); `false` when the target held nothing before.
    pub async fn stored_across<'b>(
        &self,
        prefix: &str,
        bounds: impl IntoIterator<Item = &'b str>,
    ) -> Result<bool, Error> {
        let Some(stored) = &self.stored else {
            return Ok(false);
        };
        let mut bounds: Vec<String> = bounds
            .into_iter()
            .filter(|b| !KeyOrder::is_neutral(b.get(prefix.len()..).unwrap_or(b)))
            .map(str::to_string)
            .collect();
        // A page's last key is usually its last complete one too: seek once.
        bounds.dedup();
        if bounds.is_empty() {
            return Ok(false);
        }
        (stored.0)(bounds).await
    }

    /// Keeps the first listed key with `/` after the prefix while the order is not known.
    pub fn remember(&self, key: &str) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.is_none() {
            *seen = Some(key.to_string());
        }
    }

    /// Takes the listed key `remember` kept, if any (to probe around it once; the next key
    /// with `/` listed is kept in its place).
    pub fn take_seen(&self) -> Option<String> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// After a scan listed `pages` pages without the order showing: establishes it with a
    /// probe around a listed key when that costs at most a tenth of the pages (two one-key
    /// LISTs, so from `ORDER_PROBE_MIN_PAGES`), so the target's next rescan — which needs the
    /// order to be cut (`scan::planned_cuts`) — sends none. Returns the order if it was learnt
    /// now.
    pub async fn resolve_after_listing(
        &self,
        lister: &Lister,
        pages: u64,
    ) -> Result<Option<KeyOrder>, Error> {
        if self.known().is_some() || pages < ORDER_PROBE_MIN_PAGES {
            return Ok(None);
        }
        let Some(key) = self.take_seen() else {
            return Ok(None);
        };
        self.resolve(lister, &key, false).await?;
        Ok(self.known())
    }

    /// Establishes the order with a probe around the stored key the scan was given, if any
    /// (once: the anchor is taken).
    pub async fn resolve_anchor(&self, lister: &Lister) -> Result<(), Error> {
        let stored = self.anchor.lock().unwrap_or_else(|e| e.into_inner()).take();
        match stored {
            Some(anchor) => self.resolve(lister, &anchor, false).await,
            None => Ok(()),
        }
    }

    /// Establishes the order with a probe around `anchor` (a key with `/` after the prefix),
    /// unless it is known already. `fresh`: the anchor was just listed, so its directory
    /// surely has keys. At most two one-key LIST requests, sent at once.
    pub async fn resolve(&self, lister: &Lister, anchor: &str, fresh: bool) -> Result<(), Error> {
        let _one = self.probing.lock().await;
        if self.known().is_some() {
            return Ok(());
        }
        let Some(dir) = directory_of(anchor, lister.prefix.len()) else {
            return Ok(());
        };
        match probe(lister, dir, fresh).await? {
            Verdict::Known(order) => {
                let why = format!("a probe around {anchor:?}");
                self.learn(order, lister, &why)
            }
            Verdict::Inconclusive => Ok(()),
        }
    }
}

/// Pages a scan must have listed for the two probes of `Order::resolve_after_listing` to cost
/// at most a tenth of its LIST requests.
pub const ORDER_PROBE_MIN_PAGES: u64 = 20;

/// The part of `key` before its first `/` at or after byte `from` (the prefix's end).
pub fn directory_of(key: &str, from: usize) -> Option<&str> {
    let at = key.get(from..)?.find('/')? + from;
    Some(&key[..at])
}

/// Tells the orders apart with the keys under `dir/`: a byte-order store answers StartAfter =
/// `dir.` + U+10FFFF (the largest string below `dir/` that a key is likely to start with) with
/// a key under `dir/`; a path-order store, where `dir/…` sorts before `dir.`, never does.
async fn probe(lister: &Lister, dir: &str, fresh: bool) -> Result<Verdict, Error> {
    let below = format!("{dir}.\u{10FFFF}");
    let under = format!("{dir}/");
    let after = lister.first_after_raw(Some(&below), None);
    let exists = async {
        if fresh {
            return Ok(true);
        }
        Ok(lister.first_after_raw(None, Some(&under)).await?.is_some())
    };
    let (answer, exists) = futures::future::try_join(after, exists).await?;
    if !exists {
        return Ok(Verdict::Inconclusive);
    }
    Ok(match answer {
        Some(k) if k.starts_with(&under) => Verdict::Known(KeyOrder::Byte),
        // A key that itself starts with the probe: only the hostile can say.
        Some(k) if k.starts_with(&below) => Verdict::Inconclusive,
        _ => Verdict::Known(KeyOrder::Path),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_is_cut_after_the_prefix() {
        assert_eq!(directory_of("logs/2026/x", 0), Some("logs"));
        assert_eq!(directory_of("logs/2026/x", 5), Some("logs/2026"));
        assert_eq!(directory_of("logs/x", 5), None);
        assert_eq!(directory_of("flat-key", 0), None);
    }
}
