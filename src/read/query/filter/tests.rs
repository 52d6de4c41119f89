//! Unit and property tests of the `--where` parser.

use super::*;
use proptest::prelude::*;

fn meta(name: &str, test: MetaTest) -> Filter {
    Filter::Meta {
        name: name.into(),
        test,
    }
}

#[test]
fn parses_metadata_forms() {
    let cases = [
        (
            "project=apollo",
            meta("project", MetaTest::Eq("apollo".into())),
        ),
        (
            "Project=Apollo",
            meta("project", MetaTest::Eq("Apollo".into())),
        ),
        ("owner!=bob", meta("owner", MetaTest::Ne("bob".into()))),
        (
            "path~a*b?[c]",
            meta("path", MetaTest::Glob("a*b?[c]".into())),
        ),
        ("a=b=c~d", meta("a", MetaTest::Eq("b=c~d".into()))),
        ("empty=", meta("empty", MetaTest::Eq(String::new()))),
        ("owner", meta("owner", MetaTest::Has)),
        ("!Owner", meta("owner", MetaTest::Lacks)),
        ("x-y.z", meta("x-y.z", MetaTest::Has)),
    ];
    for (text, want) in cases {
        assert_eq!(Filter::parse(text), Ok(want), "{text}");
    }
}

#[test]
fn parses_field_forms() {
    let f = |field, op, value| Filter::Field { field, op, value };
    let text = |s: &str| Operand::Text(s.into());
    let cases = [
        ("@key~logs/*", f(Field::Key, Op::Glob, text("logs/*"))),
        ("@size>10", f(Field::Size, Op::Gt, Operand::Int(10))),
        ("@size<=2KiB", f(Field::Size, Op::Le, Operand::Int(2048))),
        (
            "@size!=1MB",
            f(Field::Size, Op::Ne, Operand::Int(1_000_000)),
        ),
        ("@ETag=abc", f(Field::Etag, Op::Eq, text("abc"))),
        (
            "@storage_class=GLACIER",
            f(Field::StorageClass, Op::Eq, text("GLACIER")),
        ),
        ("@state=gone", f(Field::State, Op::Eq, text("gone"))),
        ("@error", Filter::Error),
    ];
    for (t, want) in cases {
        assert_eq!(Filter::parse(t), Ok(want), "{t}");
    }
    let time = |t: &str| match Filter::parse(t).unwrap() {
        Filter::Field {
            field: Field::Modified,
            value: Operand::Time { at, precision },
            ..
        } => (at, precision),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        time("@modified>2026-01-01"),
        ("2026-01-01T00:00:00.000Z".into(), Precision::Day)
    );
    assert_eq!(
        time("@last_modified<=2026-01-01T10:30").1,
        Precision::Minute
    );
    assert_eq!(time("@modified=2026-01-01T10:30:05Z").1, Precision::Second);
    assert_eq!(time("@modified>=2026-01-01T10:30:05.5").1, Precision::Milli);
}

#[test]
fn rejects_with_the_reason_and_the_forms() {
    for (text, reason) in [
        ("", "the metadata name is empty"),
        ("=x", "the metadata name is empty"),
        ("!", "the metadata name is empty"),
        ("size>5", "for a listing field write `@size>5`"),
        ("has space=1", "' ' cannot appear in a metadata name"),
        ("@", "`@` must be followed by a field name"),
        ("@colour=red", "unknown field `@colour`"),
        ("@size", "`@size` needs an operator and a value"),
        ("@size>big", "`big` is not a size"),
        ("@size>99999999999TB", "is not a size"),
        ("@size~1*", "`@size` cannot be compared with `~`"),
        ("@etag>a", "`@etag` cannot be compared with `>`"),
        ("@modified>yesterday", "is not a UTC time"),
        ("@modified~2026*", "cannot be compared with `~`"),
        ("@state=lost", "is not a state"),
        ("@error=403", "`@error` takes no operator"),
    ] {
        let err = Filter::parse(text).unwrap_err().to_string();
        assert!(err.contains(reason), "{text:?}: {err}");
        assert!(err.contains(crate::error::FILTER_FORMS), "{err}");
        assert!(!err.contains('\n'), "one line: {err}");
    }
}

#[test]
fn globs_escape_brackets_and_backslashed_wildcards() {
    assert_eq!(to_sqlite_glob("a*b?c"), "a*b?c");
    assert_eq!(to_sqlite_glob("[x]"), "[[]x]");
    assert_eq!(to_sqlite_glob(r"100\*\?\\"), r"100[*][?]\");
    assert_eq!(to_sqlite_glob(r"end\"), r"end\");
    let conn = rusqlite::Connection::open_in_memory().unwrap();
    let glob = |v: &str, g: &str| -> bool {
        conn.query_row("SELECT ?1 GLOB ?2", [v, &to_sqlite_glob(g)], |r| r.get(0))
            .unwrap()
    };
    assert!(glob("[draft] v1", "[draft]*"));
    assert!(!glob("d v1", "[draft]*"));
    assert!(glob("a*b", r"a\*b"));
    assert!(!glob("axb", r"a\*b"));
    assert!(glob("x?", r"?\?"));
    assert!(glob("50%_off", "50%_*"));
}

fn arb_filter() -> impl Strategy<Value = Filter> {
    let name = "[a-z0-9][a-z0-9._-]{0,12}";
    let value = "\\PC{0,16}";
    let meta_test = prop_oneof![
        value.prop_map(MetaTest::Eq),
        value.prop_map(MetaTest::Ne),
        value.prop_map(MetaTest::Glob),
        Just(MetaTest::Has),
        Just(MetaTest::Lacks),
    ];
    let text_field = prop_oneof![
        Just(Field::Key),
        Just(Field::Etag),
        Just(Field::StorageClass),
        Just(Field::ContentType)
    ];
    let text_op = prop_oneof![Just(Op::Eq), Just(Op::Ne), Just(Op::Glob)];
    let cmp = prop_oneof![
        Just(Op::Lt),
        Just(Op::Gt),
        Just(Op::Eq),
        Just(Op::Le),
        Just(Op::Ge)
    ];
    let precision = prop_oneof![
        Just(Precision::Day),
        Just(Precision::Minute),
        Just(Precision::Second),
        Just(Precision::Milli)
    ];
    prop_oneof![
        (name, meta_test).prop_map(|(name, test)| Filter::Meta { name, test }),
        (text_field, text_op, value).prop_map(|(field, op, v)| Filter::Field {
            field,
            op,
            value: Operand::Text(v)
        }),
        (cmp.clone(), 0..i64::MAX).prop_map(|(op, n)| Filter::Field {
            field: Field::Size,
            op,
            value: Operand::Int(n)
        }),
        (cmp, 0i64..4_102_444_800_000, precision).prop_map(|(op, ms, precision)| {
            let mut at = crate::model::timefmt::format_epoch(ms / 1000, (ms % 1000) as u32);
            let keep = Operand::Time {
                at: at.clone(),
                precision,
            }
            .to_string();
            at = crate::model::timefmt::parse_user_time(&keep).unwrap();
            Filter::Field {
                field: Field::Modified,
                op,
                value: Operand::Time { at, precision },
            }
        }),
        Just(Filter::Error),
    ]
}

proptest! {
    #[test]
    fn never_panics_and_reparses_its_own_display(text in "\\PC{0,40}") {
        if let Ok(f) = Filter::parse(&text) {
            prop_assert_eq!(Filter::parse(&f.to_string()), Ok(f));
        }
    }

    #[test]
    fn near_misses_never_panic(text in "[@!]?[a-zA-Z_]{0,8}(!=|>=|<=|=|<|>|~)?[0-9a-zA-Z:.T* -]{0,24}") {
        let _ = Filter::parse(&text);
    }

    #[test]
    fn display_round_trips(f in arb_filter()) {
        prop_assert_eq!(Filter::parse(&f.to_string()), Ok(f));
    }
}

fn tag(key: &str, test: MetaTest) -> Filter {
    Filter::Tag {
        key: key.into(),
        test,
    }
}

#[test]
fn parses_tag_forms_which_never_mean_metadata() {
    let cases = [
        ("tag:Team=Core", tag("Team", MetaTest::Eq("Core".into()))),
        ("tag:team!=core", tag("team", MetaTest::Ne("core".into()))),
        ("tag:path~a/*", tag("path", MetaTest::Glob("a/*".into()))),
        ("tag:a b:c@d", tag("a b:c@d", MetaTest::Has)),
        ("!tag:team", tag("team", MetaTest::Lacks)),
        ("tag:empty=", tag("empty", MetaTest::Eq(String::new()))),
    ];
    for (text, want) in cases {
        assert_eq!(Filter::parse(text).as_ref(), Ok(&want), "{text}");
        // The canonical text parses back to the same filter.
        assert_eq!(Filter::parse(&want.to_string()), Ok(want), "{text}");
    }
    for bad in ["tag:", "tag:=x", "!tag:", "!tag:a=b"] {
        let e = Filter::parse(bad).unwrap_err();
        assert!(e.to_string().contains("tag:NAME"), "{bad}: {e}");
    }
    // `:` cannot be in a metadata name, so `tag` alone is still metadata.
    assert_eq!(Filter::parse("tag"), Ok(meta("tag", MetaTest::Has)));
}

#[test]
fn parses_the_new_header_fields() {
    for (text, field) in [
        ("@sse=aws:kms", Field::Sse),
        ("@parts_count>1", Field::PartsCount),
        ("@tagging_count>=1", Field::TaggingCount),
        ("@lock_retain_until>2030-01-01", Field::LockRetainUntil),
        ("@legal_hold=ON", Field::LegalHold),
        ("@version_id=abc", Field::VersionId),
    ] {
        let f = Filter::parse(text).unwrap();
        assert!(
            matches!(f, Filter::Field { field: got, .. } if got == field),
            "{text}"
        );
        assert_eq!(f.to_string(), text);
    }
    assert!(Filter::parse("@parts_count>1MB").is_err());
}

/// Issue 18: `owner==alice` and `owner=alice ` are legal but almost surely mistakes.
#[test]
fn doubtful_values_are_named() {
    let doubt = |e: &str| Filter::parse(e).unwrap().doubt();
    let eq = doubt("owner==alice").unwrap();
    assert!(
        eq.contains("\"=alice\"") && eq.contains("`owner=alice`"),
        "{eq}"
    );
    let ne = doubt("owner!==alice").unwrap();
    assert!(ne.contains("`owner!=alice`"), "{ne}");
    assert!(doubt("owner=alice ").unwrap().contains("blanks"));
    assert!(
        doubt("@content_type= text/plain")
            .unwrap()
            .contains("blanks")
    );
    assert_eq!(doubt("owner=alice"), None);
    assert_eq!(doubt("owner"), None);
    assert_eq!(doubt("@key~ a*"), None, "keys may start with a blank");
    assert_eq!(
        doubt("tag:note=a b "),
        None,
        "tag values are XML, not headers"
    );
}

/// Issue 18: `@modified>-7d` is an instant seven days ago.
#[test]
fn relative_times_are_instants() {
    let Filter::Field {
        value: Operand::Time { at, precision },
        ..
    } = Filter::parse("@modified>-7d").unwrap()
    else {
        panic!("a time");
    };
    assert_eq!(precision, Precision::Milli);
    let week_ago = crate::model::timefmt::parse_user_time("7d").unwrap();
    assert!(at <= week_ago && at.len() == 24, "{at} {week_ago}");
    assert!(Filter::parse("@modified>-7x").is_err());
    assert_eq!(
        crate::model::timefmt::parse_ago("24h"),
        Some(std::time::Duration::from_secs(86_400))
    );
    assert_eq!(crate::model::timefmt::parse_ago("2026-01-01"), None);
    assert_eq!(crate::model::timefmt::parse_ago("h"), None);
}
