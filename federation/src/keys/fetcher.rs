//! Getting other servers' keys: from the server's cache, else from the server itself, else
//! through the configured notaries; whatever is fetched is verified and stored.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use ruma::{
    CanonicalJsonObject, MilliSecondsSinceUnixEpoch, OwnedServerName, OwnedServerSigningKeyId, ServerName,
    api::federation::discovery::{
        ServerSigningKeys, get_remote_server_keys, get_remote_server_keys_batch, get_server_keys,
    },
    serde::{Base64, Raw},
    signatures::{PublicKeyMap, PublicKeySet},
};

use super::remote::{
    CachedKey, DEFAULT_MAX_VALIDITY, KeyVerifyError, VerifiedKeys, verify_notary_keys, verify_server_keys,
};
use crate::{
    cache::TtlCache,
    client::{ClientError, FederationClient},
};

/// Where the server keeps other servers' keys (its database). The fetcher reads it first and
/// writes everything it verified.
#[async_trait]
pub trait KeyCache: Send + Sync {
    /// Every key stored for `server`, current and old.
    async fn get(&self, server: &ServerName) -> Result<Vec<CachedKey>, KeyCacheError>;

    /// Stores a verified response: its keys, replacing stored ones with the same key ID (a
    /// fresher `valid_until_ts` wins), and the response itself if the cache keeps responses.
    async fn put(&self, server: &ServerName, keys: &VerifiedKeys) -> Result<(), KeyCacheError>;

    /// The latest stored response for `server`, to relay as a notary. A cache that keeps no
    /// responses returns `None`, and notary answers are then always fetched afresh.
    async fn get_response(&self, server: &ServerName) -> Result<Option<StoredResponse>, KeyCacheError> {
        let _ = server;
        Ok(None)
    }
}

/// A key response as stored for notary answers.
#[derive(Clone, Debug)]
pub struct StoredResponse {
    /// The response as received, signatures included.
    pub response: CanonicalJsonObject,
    /// Its `valid_until_ts` as capped when it was verified.
    pub valid_until_ts: MilliSecondsSinceUnixEpoch,
}

/// The [`KeyCache`] implementation failed.
#[derive(Debug, thiserror::Error)]
#[error("key cache failed")]
pub struct KeyCacheError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

impl KeyCacheError {
    pub fn new(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self(error.into())
    }
}

/// A notary server whose answers are believed.
#[derive(Clone, Debug)]
pub struct TrustedNotary {
    pub server_name: OwnedServerName,
    /// Its keys (key ID → public key), from the config. When empty, its keys are fetched from
    /// it directly the first time, like any server's (trust on first use).
    pub verify_keys: BTreeMap<String, Base64>,
}

#[derive(Clone, Debug)]
pub struct KeyFetcherConfig {
    /// Asked in order when a server cannot give its own keys.
    pub notaries: Vec<TrustedNotary>,
    /// Cap on how far ahead a `valid_until_ts` is believed.
    pub max_validity: Duration,
    /// A server's keys are fetched at most once in this period, however many unknown key IDs
    /// are asked for: events naming made-up keys must not turn into a stream of requests.
    pub min_refetch_interval: Duration,
    /// Servers remembered for the refetch limit and for coalescing concurrent fetches.
    pub tracked_servers: usize,
}

impl Default for KeyFetcherConfig {
    fn default() -> Self {
        Self {
            notaries: Vec::new(),
            max_validity: DEFAULT_MAX_VALIDITY,
            min_refetch_interval: Duration::from_secs(30),
            tracked_servers: 10_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyFetchError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("key response about {server} from {from} rejected")]
    Verify {
        server: OwnedServerName,
        from: OwnedServerName,
        #[source]
        source: KeyVerifyError,
    },
    #[error(transparent)]
    Cache(#[from] KeyCacheError),
    #[error("notary {notary} gave no valid response about {server}")]
    NotaryEmpty { notary: OwnedServerName, server: OwnedServerName },
    #[error("no usable key of {server} (wanted {key_ids:?})")]
    NotFound {
        server: OwnedServerName,
        key_ids: Vec<OwnedServerSigningKeyId>,
        /// Why the last attempt to fetch failed, if one was made.
        #[source]
        last_error: Option<Box<KeyFetchError>>,
    },
}

/// Gets, verifies and caches other servers' keys. One per homeserver.
pub struct KeyFetcher {
    client: FederationClient,
    cache: Arc<dyn KeyCache>,
    config: KeyFetcherConfig,
    /// Per server: a lock so concurrent lookups fetch once, and when it was last fetched.
    servers: Mutex<TtlCache<OwnedServerName, ServerState>>,
}

#[derive(Clone)]
struct ServerState {
    fetching: Arc<tokio::sync::Mutex<()>>,
    last_fetch: Option<Instant>,
}

impl KeyFetcher {
    pub fn new(client: FederationClient, cache: Arc<dyn KeyCache>, config: KeyFetcherConfig) -> Self {
        let servers = Mutex::new(TtlCache::new(config.tracked_servers));
        Self { client, cache, config, servers }
    }

    /// The keys of `server` among `key_ids` (all its keys if empty) that may verify something
    /// sent at `valid_at` (`None`: whatever their validity, as room versions 1 to 4 want).
    /// From the cache if it has them all, else fetched directly, else through the notaries.
    /// Returns what was found, possibly fewer keys than asked; an error if none.
    pub async fn get_keys(
        &self,
        server: &ServerName,
        key_ids: &[OwnedServerSigningKeyId],
        valid_at: Option<MilliSecondsSinceUnixEpoch>,
    ) -> Result<PublicKeySet, KeyFetchError> {
        let wanted: BTreeSet<&OwnedServerSigningKeyId> = key_ids.iter().collect();
        let (found, complete) = usable(&self.cache.get(server).await?, &wanted, valid_at);
        if complete {
            return Ok(found);
        }

        let state = self.state(server);
        let _fetching = state.fetching.lock().await;
        // Whoever held the lock may have fetched what we need.
        let (found, complete) = usable(&self.cache.get(server).await?, &wanted, valid_at);
        let recently = self.state(server).last_fetch.is_some_and(|at| at.elapsed() < self.config.min_refetch_interval);
        if complete || recently {
            return done(server, key_ids, found, None);
        }
        self.mark_fetched(server);

        let mut last_error = None;
        match self.fetch_direct(server).await {
            Ok(keys) => {
                let (found, complete) = usable(&keys.keys, &wanted, valid_at);
                if complete {
                    return Ok(found);
                }
            }
            Err(e) => {
                tracing::debug!(%server, error = %e, "direct key fetch failed");
                last_error = Some(e);
            }
        }

        let minimum_valid_until_ts = valid_at.unwrap_or_else(MilliSecondsSinceUnixEpoch::now);
        for notary in self.config.notaries.iter().filter(|n| n.server_name != server) {
            match self.fetch_via_notary(notary, server, key_ids, minimum_valid_until_ts).await {
                Ok(responses) => {
                    let keys: Vec<CachedKey> = responses.into_iter().flat_map(|r| r.keys).collect();
                    let (found, complete) = usable(&keys, &wanted, valid_at);
                    if complete {
                        return Ok(found);
                    }
                }
                Err(e) => {
                    tracing::debug!(%server, notary = %notary.server_name, error = %e, "key fetch through notary failed");
                    last_error = Some(e);
                }
            }
        }
        let (found, _) = usable(&self.cache.get(server).await?, &wanted, valid_at);
        done(server, key_ids, found, last_error)
    }

    /// Keys for the signatures of `signers` (server → key IDs, see
    /// [`super::signers_of`]) valid at `valid_at`, as ruma's `verify_event`, `verify_json` and
    /// `XMatrix::verify_http_request` take them. A server none of whose keys can be found is
    /// left out, so verification then fails naming it.
    pub async fn public_key_map(
        &self,
        signers: &BTreeMap<OwnedServerName, Vec<OwnedServerSigningKeyId>>,
        valid_at: Option<MilliSecondsSinceUnixEpoch>,
    ) -> PublicKeyMap {
        let mut map = PublicKeyMap::new();
        for (server, key_ids) in signers {
            match self.get_keys(server, key_ids, valid_at).await {
                Ok(keys) => {
                    map.insert(server.to_string(), keys);
                }
                Err(e) => tracing::info!(%server, error = %e, "no key to verify a signature with"),
            }
        }
        map
    }

    /// `GET /_matrix/key/v2/server` on `server`; the verified response is stored.
    pub async fn fetch_direct(&self, server: &ServerName) -> Result<VerifiedKeys, KeyFetchError> {
        let response = self.client.send(server, get_server_keys::v2::Request::new()).await?;
        let keys = verify_server_keys(
            &response.server_key,
            server,
            MilliSecondsSinceUnixEpoch::now(),
            self.config.max_validity,
        )
        .map_err(|source| KeyFetchError::Verify {
            server: server.to_owned(),
            from: server.to_owned(),
            source,
        })?;
        self.cache.put(server, &keys).await?;
        Ok(keys)
    }

    /// `POST /_matrix/key/v2/query` to `notary` about `server`; every response that is signed
    /// by both is stored and returned.
    pub async fn fetch_via_notary(
        &self,
        notary: &TrustedNotary,
        server: &ServerName,
        key_ids: &[OwnedServerSigningKeyId],
        minimum_valid_until_ts: MilliSecondsSinceUnixEpoch,
    ) -> Result<Vec<VerifiedKeys>, KeyFetchError> {
        let mut criteria = get_remote_server_keys_batch::v2::QueryCriteria::new();
        criteria.minimum_valid_until_ts = Some(minimum_valid_until_ts);
        let wanted = key_ids.iter().map(|id| (id.clone(), criteria.clone())).collect();
        let request = get_remote_server_keys_batch::v2::Request::new([(server.to_owned(), wanted)].into());
        let response = self.client.send(&notary.server_name, request).await?;
        self.accept_notary_answer(notary, server, &response.server_keys).await
    }

    /// `GET /_matrix/key/v2/query/{server}` on `notary`: the same as
    /// [`KeyFetcher::fetch_via_notary`] for one server and all its keys.
    pub async fn fetch_via_notary_get(
        &self,
        notary: &TrustedNotary,
        server: &ServerName,
        minimum_valid_until_ts: MilliSecondsSinceUnixEpoch,
    ) -> Result<Vec<VerifiedKeys>, KeyFetchError> {
        let request = get_remote_server_keys::v2::Request::new(server.to_owned(), minimum_valid_until_ts);
        let response = self.client.send(&notary.server_name, request).await?;
        self.accept_notary_answer(notary, server, &response.server_keys).await
    }

    /// Responses to relay as a notary about `server`, not yet signed by us (see
    /// [`super::notary::sign_as_notary`]): the stored one if it is valid until
    /// `minimum_valid_until_ts`, else a fresh one from `server`, else the stored one anyway.
    /// Empty when there is nothing, as the spec has it for servers that are offline and not
    /// cached. This server's own name is for the caller to answer with its own keys.
    pub async fn notary_responses(
        &self,
        server: &ServerName,
        minimum_valid_until_ts: Option<MilliSecondsSinceUnixEpoch>,
    ) -> Result<Vec<CanonicalJsonObject>, KeyFetchError> {
        let minimum = minimum_valid_until_ts.unwrap_or_else(MilliSecondsSinceUnixEpoch::now);
        let stored = self.cache.get_response(server).await?;
        if let Some(stored) = &stored
            && stored.valid_until_ts >= minimum
        {
            return Ok(vec![stored.response.clone()]);
        }
        let state = self.state(server);
        let _fetching = state.fetching.lock().await;
        let recently = self.state(server).last_fetch.is_some_and(|at| at.elapsed() < self.config.min_refetch_interval);
        if !recently {
            self.mark_fetched(server);
            match self.fetch_direct(server).await {
                Ok(keys) => return Ok(vec![keys.response]),
                Err(e) => tracing::debug!(%server, error = %e, "key fetch for a notary answer failed"),
            }
        }
        Ok(stored.map(|s| s.response).into_iter().collect())
    }

    async fn accept_notary_answer(
        &self,
        notary: &TrustedNotary,
        server: &ServerName,
        answers: &[Raw<ServerSigningKeys>],
    ) -> Result<Vec<VerifiedKeys>, KeyFetchError> {
        let notary_keys = self.notary_keys(notary).await?;
        let now = MilliSecondsSinceUnixEpoch::now();
        let mut accepted = Vec::new();
        for answer in answers {
            // A notary may add other servers' keys; only the ones asked about are taken.
            let about = answer.get_field::<OwnedServerName>("server_name").ok().flatten();
            if about.as_deref() != Some(server) {
                continue;
            }
            match verify_notary_keys(answer, server, &notary.server_name, &notary_keys, now, self.config.max_validity) {
                Ok(keys) => {
                    self.cache.put(server, &keys).await?;
                    accepted.push(keys);
                }
                Err(e) => tracing::warn!(%server, notary = %notary.server_name, error = %e, "notary response rejected"),
            }
        }
        if accepted.is_empty() {
            return Err(KeyFetchError::NotaryEmpty { notary: notary.server_name.clone(), server: server.to_owned() });
        }
        Ok(accepted)
    }

    /// The notary's keys: from the config, else currently valid ones from the cache or the
    /// notary itself (never through another notary).
    async fn notary_keys(&self, notary: &TrustedNotary) -> Result<BTreeMap<String, Base64>, KeyFetchError> {
        if !notary.verify_keys.is_empty() {
            return Ok(notary.verify_keys.clone());
        }
        let now = MilliSecondsSinceUnixEpoch::now();
        let current = |keys: &[CachedKey]| -> BTreeMap<String, Base64> {
            keys.iter()
                .filter(|k| !k.expired && k.is_valid_at(now))
                .map(|k| (k.key_id.to_string(), k.key.clone()))
                .collect()
        };
        let cached = current(&self.cache.get(&notary.server_name).await?);
        if !cached.is_empty() {
            return Ok(cached);
        }
        let fetched = self.fetch_direct(&notary.server_name).await?;
        Ok(current(&fetched.keys))
    }

    fn state(&self, server: &ServerName) -> ServerState {
        let mut servers = self.servers.lock().unwrap_or_else(PoisonError::into_inner);
        let key = server.to_owned();
        let now = Instant::now();
        if let Some(state) = servers.get(&key, now) {
            return state.clone();
        }
        let state = ServerState { fetching: Arc::default(), last_fetch: None };
        servers.insert(key, state.clone(), now + self.config.min_refetch_interval.max(Duration::from_secs(60)));
        state
    }

    fn mark_fetched(&self, server: &ServerName) {
        let mut state = self.state(server);
        state.last_fetch = Some(Instant::now());
        let expires = Instant::now() + self.config.min_refetch_interval.max(Duration::from_secs(60));
        self.servers.lock().unwrap_or_else(PoisonError::into_inner).insert(server.to_owned(), state, expires);
    }
}

/// The keys among `keys` that are wanted (all if `wanted` is empty) and valid at `valid_at`,
/// and whether every wanted key is there (for "all", whether there is any).
fn usable(
    keys: &[CachedKey],
    wanted: &BTreeSet<&OwnedServerSigningKeyId>,
    valid_at: Option<MilliSecondsSinceUnixEpoch>,
) -> (PublicKeySet, bool) {
    let found: PublicKeySet = keys
        .iter()
        .filter(|k| wanted.is_empty() || wanted.contains(&k.key_id))
        .filter(|k| valid_at.is_none_or(|ts| k.is_valid_at(ts)))
        .map(|k| (k.key_id.to_string(), k.key.clone()))
        .collect();
    let complete =
        if wanted.is_empty() { !found.is_empty() } else { wanted.iter().all(|id| found.contains_key(id.as_str())) };
    (found, complete)
}

fn done(
    server: &ServerName,
    key_ids: &[OwnedServerSigningKeyId],
    found: PublicKeySet,
    last_error: Option<KeyFetchError>,
) -> Result<PublicKeySet, KeyFetchError> {
    if found.is_empty() {
        return Err(KeyFetchError::NotFound {
            server: server.to_owned(),
            key_ids: key_ids.to_vec(),
            last_error: last_error.map(Box::new),
        });
    }
    Ok(found)
}
