//! Credentials for the requests s3meta signs itself (HEAD), cached and refreshed as the SDK does.
//!
//! Receives: the provider aws-config's default chain built (environment, profiles, SSO, web
//! identity, container and instance metadata, `credential_process`) or the one a test gives.
//! Sends on: credentials fresh enough to sign with. Invariants: the provider is asked at most
//! once at a time, however many HEADs wait (one refresh, every waiter then signs with its
//! answer); credentials are used until `EXPIRY_BUFFER` before they expire, so a request is
//! never signed with credentials that expire while it is in flight; a failed refresh is a
//! `Failure` marked `credentials`, which the retry loop does not retry.

use std::sync::RwLock;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};

use crate::model::Failure;
use crate::s3::retry;

/// How long before their expiry credentials are replaced: the SDK's own identity cache
/// refreshes 10 seconds ahead; a request signed then still has its per-attempt timeout to
/// reach the store, so s3meta takes its timeout's worth more.
const EXPIRY_BUFFER: Duration = Duration::from_secs(10);

/// One provider's credentials, cached.
#[derive(Debug)]
pub(crate) struct CachedCredentials {
    provider: SharedCredentialsProvider,
    buffer: Duration,
    current: RwLock<Option<Credentials>>,
    /// Held while the provider is asked, so that only one request refreshes.
    refreshing: tokio::sync::Mutex<()>,
}

impl CachedCredentials {
    /// Credentials are replaced `EXPIRY_BUFFER` plus `timeout` before they expire.
    pub(crate) fn new(provider: SharedCredentialsProvider, timeout: Duration) -> CachedCredentials {
        CachedCredentials {
            provider,
            buffer: EXPIRY_BUFFER + timeout,
            current: RwLock::new(None),
            refreshing: tokio::sync::Mutex::new(()),
        }
    }

    /// Credentials valid for at least the buffer from now.
    pub(crate) async fn get(&self) -> Result<Credentials, Failure> {
        if let Some(c) = self.fresh() {
            return Ok(c);
        }
        let _one_at_a_time = self.refreshing.lock().await;
        if let Some(c) = self.fresh() {
            return Ok(c);
        }
        let got = self
            .provider
            .provide_credentials()
            .await
            .map_err(|e| Failure::no_credentials(retry::credentials_message(&e)))?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some(got.clone());
        Ok(got)
    }

    fn fresh(&self) -> Option<Credentials> {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        let c = current.as_ref()?;
        match c.expiry() {
            Some(expiry) if expiry <= SystemTime::now() + self.buffer => None,
            _ => Some(c.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use aws_credential_types::provider::future;

    use super::*;

    /// Hands out credentials that expire `ttl` after they are made, counting every call.
    #[derive(Debug)]
    struct Counting {
        calls: Arc<AtomicU32>,
        ttl: Option<Duration>,
    }

    impl ProvideCredentials for Counting {
        fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            let expiry = self.ttl.map(|ttl| SystemTime::now() + ttl);
            future::ProvideCredentials::ready(Ok(Credentials::new(
                "AK",
                "SK",
                Some(format!("token-{n}")),
                expiry,
                "counting",
            )))
        }
    }

    fn cached(ttl: Option<Duration>) -> (CachedCredentials, Arc<AtomicU32>) {
        let calls = Arc::new(AtomicU32::new(0));
        let provider = SharedCredentialsProvider::new(Counting {
            calls: calls.clone(),
            ttl,
        });
        (CachedCredentials::new(provider, Duration::ZERO), calls)
    }

    #[tokio::test]
    async fn credentials_without_expiry_are_asked_for_once() {
        let (cache, calls) = cached(None);
        let waiting: Vec<_> = (0..50).map(|_| cache.get()).collect();
        for got in futures::future::join_all(waiting).await {
            assert_eq!(got.unwrap().session_token(), Some("token-0"));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn credentials_about_to_expire_are_replaced_before_use() {
        // Expiring inside the buffer: every use needs new ones.
        let (cache, calls) = cached(Some(EXPIRY_BUFFER / 2));
        assert_eq!(cache.get().await.unwrap().session_token(), Some("token-0"));
        assert_eq!(cache.get().await.unwrap().session_token(), Some("token-1"));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        // Expiring well after it: kept.
        let (cache, calls) = cached(Some(EXPIRY_BUFFER * 100));
        cache.get().await.unwrap();
        cache.get().await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
