use proptest::prelude::*;

use super::*;

/// Path-component order as its definition says: components compared one by one.
fn by_components(a: &str, b: &str) -> Ordering {
    a.split('/').cmp(b.split('/'))
}

/// Keys from a small alphabet that has every character where the two orders disagree.
fn key() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just('/'),
            Just('!'),
            Just('-'),
            Just('.'),
            Just(' '),
            Just('0'),
            Just('a'),
            Just('b'),
            Just('é'),
            Just('\u{10FFFF}'),
        ],
        0..7,
    )
    .prop_map(|cs| cs.into_iter().collect())
}

proptest! {
    #[test]
    fn path_order_is_component_order(a in key(), b in key()) {
        prop_assert_eq!(path_cmp(&a, &b), by_components(&a, &b));
        prop_assert_eq!(path_key(&a).cmp(&path_key(&b)), by_components(&a, &b));
    }

    #[test]
    fn successor_bounds_exactly_the_prefix(p in key(), k in key(), path in any::<bool>()) {
        let order = if path { KeyOrder::Path } else { KeyOrder::Byte };
        let r = KeyRange::prefix(order, &p);
        prop_assert_eq!(r.contains(&k), k.starts_with(&p), "{:?} {:?}", r, k);
    }

    /// Whatever the store's order and StartAfter semantics, `start_after` lists every key
    /// after the given one (and only keys up to it besides, which the caller drops).
    #[test]
    fn start_after_never_skips_a_key(
        keys in proptest::collection::btree_set(key(), 0..12),
        s in key(),
        known in any::<bool>(),
    ) {
        for store in [KeyOrder::Byte, KeyOrder::Path] {
            let order = known.then_some(store);
            let sent = KeyOrder::start_after(order, &s);
            let listed: Vec<&String> = keys.iter().filter(|k| store_lists_after(store, k, &sent)).collect();
            for k in &keys {
                if store.lt(&s, k) {
                    prop_assert!(listed.contains(&k), "{store:?} {order:?} after {s:?} sent {sent:?} lost {k:?}");
                }
            }
        }
    }

    #[test]
    fn ranks_round_trip(c in any::<char>()) {
        for order in [KeyOrder::Byte, KeyOrder::Path] {
            prop_assert_eq!(order.char_at_or_after(order.rank(c)), Some(c));
        }
    }
}

/// What a store answers to StartAfter=`sent`: S3 compares bytes; SeaweedFS compares paths
/// and skips the subtree of `sent` (unless it ends with `/`).
fn store_lists_after(store: KeyOrder, key: &str, sent: &str) -> bool {
    match store {
        KeyOrder::Byte => key > sent,
        KeyOrder::Path => {
            path_cmp(key, sent) == Ordering::Greater
                && (sent.ends_with('/') || sent.is_empty() || !key.starts_with(&format!("{sent}/")))
        }
    }
}

#[test]
fn path_order_puts_slash_first() {
    let mut keys = vec!["ab", "a0", "a.c", "a-b", "a!x", "a/z", "a/c/d", "a/b", "a"];
    keys.sort_by(|a, b| path_cmp(a, b));
    assert_eq!(
        keys,
        ["a", "a/b", "a/c/d", "a/z", "a!x", "a-b", "a.c", "a0", "ab"]
    );
}

#[test]
fn start_after_of_a_path_store_stays_at_the_keys_level() {
    let p = Some(KeyOrder::Path);
    assert_eq!(KeyOrder::start_after(p, "d06/"), "d06/");
    assert_eq!(KeyOrder::start_after(p, "d07"), "d06\u{10FFFF}");
    assert_eq!(KeyOrder::start_after(p, "a0"), "a.\u{10FFFF}");
    assert_eq!(KeyOrder::start_after(p, "a!"), "a \u{10FFFF}");
    assert_eq!(KeyOrder::start_after(Some(KeyOrder::Byte), "d06"), "d06");
    assert_eq!(KeyOrder::start_after(None, "a0"), "a/\u{10FFFF}");
    assert_eq!(KeyOrder::start_after(None, ""), "");
}

#[test]
fn neutral_keys_have_nothing_at_or_below_slash() {
    assert!(KeyOrder::is_neutral("d06"));
    assert!(KeyOrder::is_neutral("obj_0005"));
    assert!(!KeyOrder::is_neutral("d06/"));
    assert!(!KeyOrder::is_neutral("obj-5"));
}

#[test]
fn prefix_and_range_intersect() {
    let o = KeyOrder::Byte;
    let r = KeyRange::prefix(o, "a/").intersect(&KeyRange::between(o, Some("a/m"), Some("a/x")));
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
    let r = KeyRange::prefix(o, "a/").intersect(&KeyRange::between(o, Some("0"), None));
    assert_eq!(r.lower, Bound::Included("a/".into()));
    assert_eq!(r.upper, Bound::Excluded("a0".into()));
    // In path order, `a/` ends where `/` is followed by the next character, U+0000.
    let r = KeyRange::prefix(KeyOrder::Path, "a/");
    assert_eq!(r.upper, Bound::Excluded("a\0".into()));
    assert!(r.contains("a/") && r.contains("a//x") && !r.contains("a!") && !r.contains("a"));
}

#[test]
fn sql_agrees_with_contains_in_both_orders() {
    let conn = rusqlite::Connection::open_in_memory().unwrap();
    conn.execute_batch("CREATE TABLE t (key TEXT PRIMARY KEY, path_key BLOB)")
        .unwrap();
    let keys = [
        "", "a", "a/", "a/%", "a/_x", "a/é", "a0", "a\n", "a!x", "a-b", "a/b/c", "b", "🎉",
    ];
    for k in keys {
        conn.execute(
            "INSERT INTO t VALUES (?1, ?2)",
            rusqlite::params![k, path_key(k)],
        )
        .unwrap();
    }
    for order in [KeyOrder::Byte, KeyOrder::Path] {
        for r in [
            KeyRange::prefix(order, "a/"),
            KeyRange::prefix(order, ""),
            KeyRange::between(order, Some("a"), Some("a0")),
            KeyRange::between(order, Some("a/b"), Some("a-b")),
            KeyRange::prefix(order, "a").intersect(&KeyRange::between(order, Some("a/%"), None)),
        ] {
            let (frag, params) = r.sql("key");
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT key FROM t WHERE 1{frag} ORDER BY {}",
                    order.column("key")
                ))
                .unwrap();
            let got: Vec<String> = stmt
                .query_map(params.as_slice(), |row| row.get(0))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            let mut want: Vec<&str> = keys.iter().copied().filter(|k| r.contains(k)).collect();
            want.sort_by(|a, b| order.cmp(a, b));
            assert_eq!(got, want, "{r:?}");
        }
    }
}
