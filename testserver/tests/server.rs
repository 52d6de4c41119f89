//! Server lifecycle and the standalone binary: shutdown closes idle keep-alive connections
//! and frees the port, a restart on the same port serves the same data, and
//! `s3meta-test-server` prints its endpoint line and serves a filled bucket.

mod common;

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};

use common::{client, raw_get};
use s3meta_testserver::{Op, TestServer};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

#[tokio::test]
async fn shutdown_closes_keep_alive_connections_and_restart_keeps_data() {
    let server = TestServer::start().await;
    let (addr, state) = (server.addr(), server.state().clone());
    let s3 = client(&server.endpoint());
    s3.create_bucket().bucket("bkt").send().await.unwrap();
    state.put_object("bkt", "k", b"v", &[("m", "1")]);

    // An idle keep-alive connection: one answered request, then nothing.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET /__admin/stats HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    idle.write_all(req.as_bytes()).await.unwrap();
    let mut buf = [0u8; 4096];
    assert!(idle.read(&mut buf).await.unwrap() > 0);

    server.shutdown().await;
    // Closed by the server: EOF (or a reset), never a hang.
    assert!(matches!(idle.read(&mut buf).await, Ok(0) | Err(_)));

    let again = TestServer::start_with(state.clone(), Some(addr))
        .await
        .unwrap();
    assert_eq!(again.addr(), addr);
    let s3 = client(&again.endpoint());
    let head = s3
        .head_object()
        .bucket("bkt")
        .key("k")
        .send()
        .await
        .unwrap();
    assert_eq!(head.metadata().unwrap()["m"], "1");
    assert_eq!(state.requests(Op::Head), 1);
    again.shutdown().await;
}

#[tokio::test]
async fn dropping_the_server_stops_it() {
    let server = TestServer::start().await;
    let addr = server.addr();
    drop(server);
    // The accept loop ends on its own; once it has, binding the port succeeds.
    let mut rebound = None;
    for _ in 0..100_000 {
        if let Ok(s) = TestServer::start_with(s3meta_testserver::State::new(), Some(addr)).await {
            rebound = Some(s);
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(rebound.expect("port freed").addr(), addr);
}

/// Kills the child process even when an assertion fails.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn binary_prints_endpoint_and_serves_filled_bucket() {
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_s3meta-test-server"))
            .args(["--objects", "1500", "--bucket", "demo", "--latency-ms", "1"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let endpoint = line.trim().strip_prefix("endpoint=").unwrap().to_owned();
    assert!(endpoint.starts_with("http://127.0.0.1:"), "{line}");

    let s3 = client(&endpoint);
    let mut pages = s3.list_objects_v2().bucket("demo").into_paginator().send();
    let mut n = 0;
    while let Some(page) = pages.next().await {
        n += page.unwrap().contents().len();
    }
    assert_eq!(n, 1500);
    let addr = endpoint.strip_prefix("http://").unwrap().parse().unwrap();
    let stats = raw_get(addr, "/__admin/stats").await;
    assert!(stats.contains("\"list\":2,"), "{stats}");
}
