//! S3 semantics through real HTTP with aws-sdk-s3: listing pages, tricky keys, metadata,
//! HEAD fields, missing keys and buckets, delete and copy.

mod common;

use std::collections::HashMap;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{MetadataDirective, ObjectStorageClass, StorageClass};
use base64::Engine as _;
use common::{client, status};
use s3meta_testserver::{ObjectSpec, TestServer};

#[tokio::test]
async fn listing_pages_with_prefix_start_after_and_token() {
    let server = TestServer::start().await;
    let state = server.state();
    for i in 0..25 {
        state.put_object("bkt", &format!("p/k{i:02}"), b"x", &[]);
    }
    state.put_object("bkt", "o/before", b"x", &[]);
    state.put_object("bkt", "q/after", b"x", &[]);
    let s3 = client(&server.endpoint());

    let mut keys = Vec::new();
    let mut token = None;
    let mut pages = 0;
    loop {
        let out = s3
            .list_objects_v2()
            .bucket("bkt")
            .prefix("p/")
            .max_keys(10)
            .set_continuation_token(token.clone())
            .send()
            .await
            .unwrap();
        pages += 1;
        let n = out.contents().len();
        assert_eq!(out.key_count(), Some(n as i32));
        keys.extend(out.contents().iter().map(|o| o.key().unwrap().to_owned()));
        assert_eq!(
            out.is_truncated(),
            Some(out.next_continuation_token().is_some())
        );
        token = out.next_continuation_token().map(str::to_owned);
        if token.is_none() {
            break;
        }
        assert!(
            !token.as_deref().unwrap().contains("p/k"),
            "token must be opaque"
        );
    }
    let expected: Vec<String> = (0..25).map(|i| format!("p/k{i:02}")).collect();
    assert_eq!((pages, keys), (3, expected));

    let after = s3
        .list_objects_v2()
        .bucket("bkt")
        .prefix("p/")
        .start_after("p/k20")
        .send()
        .await
        .unwrap();
    let after: Vec<&str> = after.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(after, ["p/k21", "p/k22", "p/k23", "p/k24"]);
}

#[tokio::test]
async fn start_after_is_ignored_when_a_token_is_given() {
    let server = TestServer::start().await;
    for i in 0..6 {
        server.state().put_object("bkt", &format!("k{i}"), b"", &[]);
    }
    let s3 = client(&server.endpoint());
    let first = s3
        .list_objects_v2()
        .bucket("bkt")
        .max_keys(2)
        .send()
        .await
        .unwrap();
    let second = s3
        .list_objects_v2()
        .bucket("bkt")
        .max_keys(2)
        .start_after("k4")
        .continuation_token(first.next_continuation_token().unwrap())
        .send()
        .await
        .unwrap();
    let keys: Vec<&str> = second.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, ["k2", "k3"]);
}

#[tokio::test]
async fn delimiter_yields_common_prefixes_across_pages() {
    let server = TestServer::start().await;
    for key in ["a/1", "a/2", "b", "c/x/1", "c/y", "d"] {
        server.state().put_object("bkt", key, b"", &[]);
    }
    let s3 = client(&server.endpoint());
    let mut seen = Vec::new();
    let mut token = None;
    loop {
        let out = s3
            .list_objects_v2()
            .bucket("bkt")
            .delimiter("/")
            .max_keys(2)
            .set_continuation_token(token)
            .send()
            .await
            .unwrap();
        seen.extend(
            out.common_prefixes()
                .iter()
                .map(|p| format!("P:{}", p.prefix().unwrap())),
        );
        seen.extend(
            out.contents()
                .iter()
                .map(|o| format!("K:{}", o.key().unwrap())),
        );
        token = out.next_continuation_token().map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    seen.sort();
    assert_eq!(seen, ["K:b", "K:d", "P:a/", "P:c/"]);
}

#[tokio::test]
async fn listing_entries_carry_etag_class_size_and_millisecond_times() {
    let server = TestServer::start().await;
    let etag = server.state().put_object("bkt", "k", b"hello", &[]);
    let s3 = client(&server.endpoint());
    let out = s3.list_objects_v2().bucket("bkt").send().await.unwrap();
    let o = &out.contents()[0];
    assert_eq!(o.e_tag(), Some(format!("\"{etag}\"").as_str()));
    assert_eq!(o.size(), Some(5));
    assert_eq!(o.storage_class(), Some(&ObjectStorageClass::Standard));
    let head = s3
        .head_object()
        .bucket("bkt")
        .key("k")
        .send()
        .await
        .unwrap();
    let (listed, headed) = (o.last_modified().unwrap(), head.last_modified().unwrap());
    // HEAD has whole seconds; the listing keeps the milliseconds.
    assert_eq!(listed.secs(), headed.secs());
    assert_eq!(headed.subsec_nanos(), 0);
    assert_eq!(listed.subsec_nanos() % 1_000_000, 0);

    server.state().set_listing_etags(false);
    let out = s3.list_objects_v2().bucket("bkt").send().await.unwrap();
    assert_eq!(out.contents()[0].e_tag(), None);
}

const TRICKY_KEYS: [&str; 15] = [
    "cr\rkey",
    "a b",
    "a+b",
    "100%",
    "%2F",
    "new\nline",
    "tab\tkey",
    "emoji 😀",
    "<xml>&'\"",
    "/leading",
    "a//double",
    "ünïcödé/ключ",
    "trailing/",
    "?query#frag",
    "semi;colon,comma=eq",
];

#[tokio::test]
async fn tricky_keys_round_trip_through_put_list_and_head() {
    let server = TestServer::start().await;
    let s3 = client(&server.endpoint());
    s3.create_bucket().bucket("bkt").send().await.unwrap();
    let long = "k".repeat(1024);
    let mut keys: Vec<String> = TRICKY_KEYS.iter().map(|k| (*k).to_owned()).collect();
    keys.push(long);
    for key in &keys {
        s3.put_object()
            .bucket("bkt")
            .key(key)
            .body(ByteStream::from(key.clone().into_bytes()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("put {key:?}: {e:?}"));
    }
    let out = s3.list_objects_v2().bucket("bkt").send().await.unwrap();
    let listed: Vec<&str> = out.contents().iter().filter_map(|o| o.key()).collect();
    let mut expected: Vec<&str> = keys.iter().map(String::as_str).collect();
    expected.sort(); // String order is UTF-8 byte order.
    assert_eq!(listed, expected);
    for key in &keys {
        let head = s3.head_object().bucket("bkt").key(key).send().await;
        let head = head.unwrap_or_else(|e| panic!("head {key:?}: {e:?}"));
        assert_eq!(head.content_length(), Some(key.len() as i64), "{key:?}");
    }
}

#[tokio::test]
async fn control_characters_list_with_url_encoding() {
    let server = TestServer::start().await;
    let keys = ["cr\rkey", "nul-ish\u{1}key", "plain key+%"];
    for key in keys {
        server.state().put_object("bkt", key, b"", &[]);
    }
    let s3 = client(&server.endpoint());
    let out = s3
        .list_objects_v2()
        .bucket("bkt")
        .encoding_type(aws_sdk_s3::types::EncodingType::Url)
        .send()
        .await
        .unwrap();
    let listed: Vec<&str> = out.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(listed, ["cr%0Dkey", "nul-ish%01key", "plain%20key%2B%25"]);
}

#[tokio::test]
async fn metadata_round_trips_lower_cased_with_rfc2047_for_non_ascii() {
    let server = TestServer::start().await;
    let s3 = client(&server.endpoint());
    s3.create_bucket().bucket("bkt").send().await.unwrap();
    s3.put_object()
        .bucket("bkt")
        .key("k")
        .metadata("Owner", "Alice")
        .metadata("city", "Zürich")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap();
    let long = "é".repeat(60);
    server
        .state()
        .put_object("bkt", "long", b"", &[("note", &long)]);

    let head = s3
        .head_object()
        .bucket("bkt")
        .key("k")
        .send()
        .await
        .unwrap();
    let meta = head.metadata().unwrap();
    assert_eq!(meta.get("owner").map(String::as_str), Some("Alice"));
    // The SDK hands over the wire form; AWS encodes non-ASCII values this way.
    assert_eq!(
        meta.get("city").map(String::as_str),
        Some("=?UTF-8?B?WsO8cmljaA==?=")
    );
    let head = s3
        .head_object()
        .bucket("bkt")
        .key("long")
        .send()
        .await
        .unwrap();
    let wire = &head.metadata().unwrap()["note"];
    let b64 = wire
        .strip_prefix("=?UTF-8?B?")
        .unwrap()
        .strip_suffix("?=")
        .unwrap();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    assert_eq!(String::from_utf8(decoded).unwrap(), long);
}

#[tokio::test]
async fn head_returns_every_stored_field() {
    let server = TestServer::start().await;
    let spec = ObjectSpec {
        body_len: Some(5_000_000_000),
        etag: Some("0123456789abcdef0123456789abcdef-3".into()),
        meta: vec![("a".into(), "1".into())],
        content_type: Some("text/csv".into()),
        cache_control: Some("max-age=60".into()),
        content_encoding: Some("gzip".into()),
        content_language: Some("de-CH".into()),
        content_disposition: Some("attachment; filename=\"x.csv\"".into()),
        expires: Some("not a date".into()),
        storage_class: Some("GLACIER".into()),
        missing_meta: Some(2),
        ..ObjectSpec::default()
    };
    server.state().put_object_with("bkt", "k", spec);
    server.state().put_object("bkt", "plain", b"", &[]);
    let s3 = client(&server.endpoint());
    let h = s3
        .head_object()
        .bucket("bkt")
        .key("k")
        .send()
        .await
        .unwrap();
    assert_eq!(h.content_length(), Some(5_000_000_000));
    assert_eq!(h.e_tag(), Some("\"0123456789abcdef0123456789abcdef-3\""));
    assert_eq!(h.content_type(), Some("text/csv"));
    assert_eq!(h.cache_control(), Some("max-age=60"));
    assert_eq!(h.content_encoding(), Some("gzip"));
    assert_eq!(h.content_language(), Some("de-CH"));
    assert_eq!(
        h.content_disposition(),
        Some("attachment; filename=\"x.csv\"")
    );
    assert_eq!(h.expires_string(), Some("not a date"));
    assert_eq!(h.storage_class(), Some(&StorageClass::Glacier));
    assert_eq!(h.missing_meta(), Some(2));
    assert_eq!(
        h.metadata(),
        Some(&HashMap::from([("a".into(), "1".into())]))
    );
    let listed = s3.list_objects_v2().bucket("bkt").send().await.unwrap();
    assert_eq!(
        listed.contents()[0].storage_class(),
        Some(&ObjectStorageClass::Glacier)
    );

    let plain = s3
        .head_object()
        .bucket("bkt")
        .key("plain")
        .send()
        .await
        .unwrap();
    assert_eq!(
        plain.storage_class(),
        None,
        "STANDARD is not sent, as on AWS"
    );
    assert_eq!(plain.content_type(), Some("binary/octet-stream"));
    assert_eq!(plain.missing_meta(), None);
}

#[tokio::test]
async fn missing_keys_and_buckets_are_404() {
    let server = TestServer::start().await;
    server.state().create_bucket("bkt");
    let s3 = client(&server.endpoint());
    let err = s3
        .head_object()
        .bucket("bkt")
        .key("nope")
        .send()
        .await
        .unwrap_err();
    assert_eq!(status(&err), Some(404));
    assert!(err.into_service_error().is_not_found());
    let err = s3
        .head_object()
        .bucket("nobucket")
        .key("k")
        .send()
        .await
        .unwrap_err();
    assert_eq!(status(&err), Some(404));
    let err = s3
        .list_objects_v2()
        .bucket("nobucket")
        .send()
        .await
        .unwrap_err();
    assert_eq!(status(&err), Some(404));
    assert!(err.into_service_error().is_no_such_bucket());
    let err = s3
        .head_bucket()
        .bucket("nobucket")
        .send()
        .await
        .unwrap_err();
    assert_eq!(status(&err), Some(404));
    s3.head_bucket().bucket("bkt").send().await.unwrap();
    let location = s3.get_bucket_location().bucket("bkt").send().await.unwrap();
    // An empty constraint means us-east-1, as on AWS.
    let constraint = location.location_constraint().map_or("", |c| c.as_str());
    assert_eq!(constraint, "");
    let err = s3
        .get_bucket_location()
        .bucket("nobucket")
        .send()
        .await
        .unwrap_err();
    assert_eq!(status(&err), Some(404));
}

#[tokio::test]
async fn delete_and_copy() {
    let server = TestServer::start().await;
    let state = server.state();
    state.put_object("bkt", "src", b"body", &[("m", "1")]);
    let s3 = client(&server.endpoint());
    s3.copy_object()
        .bucket("bkt")
        .key("same")
        .copy_source("bkt/src")
        .send()
        .await
        .unwrap();
    s3.copy_object()
        .bucket("bkt")
        .key("new")
        .copy_source("bkt/src")
        .metadata_directive(MetadataDirective::Replace)
        .metadata("m", "2")
        .content_type("text/plain")
        .send()
        .await
        .unwrap();
    let same = s3
        .head_object()
        .bucket("bkt")
        .key("same")
        .send()
        .await
        .unwrap();
    assert_eq!(same.metadata().unwrap()["m"], "1");
    let new = s3
        .head_object()
        .bucket("bkt")
        .key("new")
        .send()
        .await
        .unwrap();
    assert_eq!(
        (new.metadata().unwrap()["m"].as_str(), new.content_type()),
        ("2", Some("text/plain"))
    );
    assert_eq!(new.e_tag(), same.e_tag());
    let body = s3
        .get_object()
        .bucket("bkt")
        .key("new")
        .send()
        .await
        .unwrap()
        .body;
    assert_eq!(body.collect().await.unwrap().into_bytes().as_ref(), b"body");

    s3.delete_object()
        .bucket("bkt")
        .key("src")
        .send()
        .await
        .unwrap();
    assert_eq!(state.object_count("bkt"), 2);
    assert!(!state.delete_object("bkt", "src"));
    assert!(state.delete_object("bkt", "same"));
}

#[tokio::test]
async fn filled_bucket_lists_fully() {
    let server = TestServer::start().await;
    server.state().fill("demo", 2_345, 1);
    let s3 = client(&server.endpoint());
    let mut pages = s3.list_objects_v2().bucket("demo").into_paginator().send();
    let (mut n, mut with_meta, mut last) = (0, 0, String::new());
    while let Some(page) = pages.next().await {
        for o in page.unwrap().contents() {
            let key = o.key().unwrap().to_owned();
            assert!(key > last);
            if n % 97 == 0 {
                let h = s3
                    .head_object()
                    .bucket("demo")
                    .key(&key)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(h.e_tag(), o.e_tag());
                with_meta += usize::from(h.metadata().is_some_and(|m| m.len() == 3));
            }
            last = key;
            n += 1;
        }
    }
    assert_eq!((n, server.state().object_count("demo")), (2_345, 2_345));
    assert!(with_meta > 0);
}
