//! The SQS queue `follow` reads S3 event notifications from (aws-sdk-sqs).
//!
//! Receives: the queue URL and the connection flags (credentials, region, profile). Sends on:
//! received messages (id, receipt handle, body), deletions of applied ones, the queue's depth.
//! Invariants: a long poll's attempt timeout outlasts its wait; a message is deleted only when
//! its caller says so (after its commit), and a deletion that fails leaves the message to be
//! delivered again, which applying it twice cannot change (`follow`'s rules).

use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, QueueAttributeName};
use aws_smithy_types::error::display::DisplayErrorContext;

use crate::error::Error;
use crate::s3::client::{ClientOptions, load};

/// Messages per ReceiveMessage at most (SQS's limit).
pub const RECEIVE_MAX: i32 = 10;

/// One received message.
#[derive(Debug, Clone)]
pub struct Received {
    pub id: String,
    pub receipt: String,
    pub body: String,
}

#[derive(Debug, Clone)]
pub struct Queue {
    client: aws_sdk_sqs::Client,
    pub url: String,
}

impl Queue {
    /// A client for `url`, with the command's credentials. The endpoint: `endpoint` (or
    /// AWS_ENDPOINT_URL_SQS, which aws-config reads), else the origin of a queue URL that is not
    /// AWS's (moto, ElasticMQ, a test server), else AWS's for the URL's region.
    pub async fn connect(
        opts: &ClientOptions,
        url: &str,
        endpoint: Option<&str>,
    ) -> Result<Queue, Error> {
        let (origin, region) = parse_url(url)?;
        let mut opts = opts.clone();
        if opts.region.is_none() {
            opts.region = region;
        }
        let shared = load(&opts, opts.no_sign_request).await;
        let mut config = aws_sdk_sqs::config::Builder::from(&shared).timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(10))
                // A long poll waits up to 20 s for a message.
                .operation_attempt_timeout(Duration::from_secs(40))
                .build(),
        );
        // aws-config applies AWS_ENDPOINT_URL_SQS (and the profile's) itself.
        let from_env = std::env::var_os("AWS_ENDPOINT_URL_SQS").is_some();
        match endpoint {
            Some(e) => config = config.endpoint_url(e),
            None if !from_env && !is_aws(&origin) => config = config.endpoint_url(origin),
            None => {}
        }
        if shared.region().is_none() {
            config = config.region(aws_sdk_sqs::config::Region::new("us-east-1"));
        }
        Ok(Queue {
            client: aws_sdk_sqs::Client::from_conf(config.build()),
            url: url.to_string(),
        })
    }

    fn failed(&self, e: impl std::error::Error) -> Error {
        Error::Queue {
            url: self.url.clone(),
            detail: DisplayErrorContext(e).to_string(),
        }
    }

    /// Up to `max` messages, waiting up to `wait` seconds (0..=20) for the first.
    pub async fn receive(&self, max: i32, wait: i32) -> Result<Vec<Received>, Error> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max.clamp(1, RECEIVE_MAX))
            .wait_time_seconds(wait.clamp(0, 20))
            .send()
            .await
            .map_err(|e| self.failed(e))?;
        Ok(out
            .messages()
            .iter()
            .filter_map(|m| {
                Some(Received {
                    id: m.message_id()?.to_string(),
                    receipt: m.receipt_handle()?.to_string(),
                    body: m.body().unwrap_or_default().to_string(),
                })
            })
            .collect())
    }

    /// Deletes messages by receipt handle, ten per request; returns how many the queue
    /// refused (they will be delivered again).
    pub async fn delete(&self, receipts: &[String]) -> Result<usize, Error> {
        let mut refused = 0;
        for chunk in receipts.chunks(RECEIVE_MAX as usize) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(r)
                        .build()
                        .map_err(|e| self.failed(e))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let out = self
                .client
                .delete_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| self.failed(e))?;
            refused += out.failed().len();
        }
        Ok(refused)
    }

    /// ApproximateNumberOfMessages: the messages waiting (not in flight).
    pub async fn depth(&self) -> Result<Option<u64>, Error> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await
            .map_err(|e| self.failed(e))?;
        Ok(out
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::ApproximateNumberOfMessages))
            .and_then(|v| v.parse().ok()))
    }
}

/// The queue URL's origin (`scheme://host[:port]`) and, for AWS's, its region.
fn parse_url(url: &str) -> Result<(String, Option<String>), Error> {
    let bad = |why: &str| {
        Error::BadInput(format!(
            "--sqs-queue-url {url:?} {why}: expected e.g. https://sqs.us-east-1.amazonaws.com/123456789012/my-queue"
        ))
    };
    let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("has no scheme"))?;
    if scheme != "http" && scheme != "https" {
        return Err(bad("is not http(s)"));
    }
    let (host, path) = rest
        .split_once('/')
        .ok_or_else(|| bad("has no queue path"))?;
    if host.is_empty() || path.is_empty() {
        return Err(bad("has no host or queue path"));
    }
    let origin = format!("{scheme}://{host}");
    let region = host
        .strip_prefix("sqs.")
        .and_then(|h| h.split_once('.'))
        .filter(|(_, rest)| rest.starts_with("amazonaws."))
        .map(|(r, _)| r.to_string());
    Ok((origin, region))
}

fn is_aws(origin: &str) -> bool {
    let host = origin.split_once("://").map_or(origin, |(_, h)| h);
    let host = host.split(':').next().unwrap_or(host);
    host.ends_with(".amazonaws.com") || host.ends_with(".amazonaws.com.cn")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_urls_give_origin_and_region() {
        assert_eq!(
            parse_url("https://sqs.eu-west-1.amazonaws.com/123456789012/q").unwrap(),
            (
                "https://sqs.eu-west-1.amazonaws.com".to_string(),
                Some("eu-west-1".to_string())
            )
        );
        assert_eq!(
            parse_url("http://127.0.0.1:5000/123456789012/q").unwrap(),
            ("http://127.0.0.1:5000".to_string(), None)
        );
        assert!(is_aws("https://sqs.eu-west-1.amazonaws.com"));
        assert!(!is_aws("http://127.0.0.1:5000"));
        for bad in [
            "sqs.amazonaws.com/1/q",
            "ftp://h/q",
            "http://host",
            "http:///q",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }
}
