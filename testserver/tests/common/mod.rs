//! Helpers shared by the integration tests: an aws-sdk-s3 client configured the way s3meta
//! configures its own (path-style, static credentials, no retries so every fault is seen),
//! and a raw HTTP/1.1 exchange for what the SDK hides (wire bytes, unsigned admin calls).

#![allow(dead_code)] // Each test binary uses a different subset.

use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{Credentials, Region};
use aws_sdk_s3::error::SdkError;
use s3meta_testserver::{ACCESS_KEY, REGION, SECRET_KEY};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

pub fn client(endpoint: &str) -> Client {
    Client::from_conf(config(endpoint).build())
}

/// A client that gives up on an attempt after `timeout`.
pub fn client_with_timeout(endpoint: &str, timeout: Duration) -> Client {
    let timeouts = TimeoutConfig::builder()
        .operation_attempt_timeout(timeout)
        .build();
    Client::from_conf(config(endpoint).timeout_config(timeouts).build())
}

fn config(endpoint: &str) -> aws_sdk_s3::config::Builder {
    aws_sdk_s3::Config::builder()
        .endpoint_url(endpoint)
        .region(Region::new(REGION))
        .credentials_provider(Credentials::new(
            ACCESS_KEY, SECRET_KEY, None, None, "static",
        ))
        .force_path_style(true)
        .retry_config(RetryConfig::disabled())
}

/// The HTTP status of a failed call, if a response arrived.
pub fn status<E, R>(err: &SdkError<E, R>) -> Option<u16>
where
    R: HasStatus,
{
    err.raw_response().map(HasStatus::status_code)
}

pub trait HasStatus {
    fn status_code(&self) -> u16;
}

impl HasStatus for aws_sdk_s3::config::http::HttpResponse {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}

/// Sends `request` (a complete HTTP/1.1 request) and returns every byte until the server
/// closes the connection.
pub async fn raw_exchange(addr: std::net::SocketAddr, request: &str) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    // A reset after the server's close is fine: what arrived before it is kept.
    let _ = stream.read_to_end(&mut out).await;
    out
}

/// `GET path` with `Connection: close`, unsigned.
pub async fn raw_get(addr: std::net::SocketAddr, path: &str) -> String {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    String::from_utf8_lossy(&raw_exchange(addr, &req).await).into_owned()
}
