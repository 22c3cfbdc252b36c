//! Fetching other servers' keys from real HTTPS servers on 127.0.0.1: directly, through a
//! notary, with verification, validity and caching.
#![allow(clippy::unwrap_used)]

mod support;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use axum::{Json, Router, extract::Path, routing::get};
use parley_federation::{
    SigningKey,
    client::{ClientConfig, FederationClient},
    discovery::{Resolver, StaticDns},
    keys::{
        CachedKey, KeyCache, KeyCacheError, KeyFetchError, KeyFetcher, KeyFetcherConfig, StoredResponse, TrustedNotary,
        VerifiedKeys, sign_as_notary, signers_of, verify_notary_keys,
    },
};
use ruma::{
    CanonicalJsonObject, MilliSecondsSinceUnixEpoch, OwnedServerName, OwnedServerSigningKeyId, ServerName, UInt,
    api::federation::discovery::{OldVerifyKey, ServerSigningKeys},
    serde::{Base64, Raw},
    server_name,
};
use serde_json::{Value, json};
use support::{TestCa, TestServer, resolver_config, spawn_tls};

const SERVER_KEYS: &str = "/_matrix/key/v2/server";
const QUERY: &str = "/_matrix/key/v2/query";

fn now() -> MilliSecondsSinceUnixEpoch {
    MilliSecondsSinceUnixEpoch::now()
}

fn ts(ms: u64) -> MilliSecondsSinceUnixEpoch {
    MilliSecondsSinceUnixEpoch(UInt::try_from(ms).unwrap())
}

fn hours_from_now(hours: i64) -> MilliSecondsSinceUnixEpoch {
    let now = i64::from(now().get());
    ts(u64::try_from(now + hours * 3600 * 1000).unwrap())
}

/// An in-memory [`KeyCache`], keeping responses too.
#[derive(Default)]
struct MemoryCache {
    keys: Mutex<HashMap<OwnedServerName, Vec<CachedKey>>>,
    responses: Mutex<HashMap<OwnedServerName, StoredResponse>>,
}

#[async_trait]
impl KeyCache for MemoryCache {
    async fn get(&self, server: &ServerName) -> Result<Vec<CachedKey>, KeyCacheError> {
        Ok(self.keys.lock().unwrap().get(server).cloned().unwrap_or_default())
    }

    async fn put(&self, server: &ServerName, keys: &VerifiedKeys) -> Result<(), KeyCacheError> {
        let mut all = self.keys.lock().unwrap();
        let stored = all.entry(server.to_owned()).or_default();
        for key in &keys.keys {
            match stored.iter_mut().find(|k| k.key_id == key.key_id) {
                Some(old) if old.valid_until_ts < key.valid_until_ts || key.expired => *old = key.clone(),
                Some(_) => {}
                None => stored.push(key.clone()),
            }
        }
        self.responses.lock().unwrap().insert(
            server.to_owned(),
            StoredResponse { response: keys.response.clone(), valid_until_ts: keys.valid_until_ts },
        );
        Ok(())
    }

    async fn get_response(&self, server: &ServerName) -> Result<Option<StoredResponse>, KeyCacheError> {
        Ok(self.responses.lock().unwrap().get(server).cloned())
    }
}

/// A key response of `server` listing `key` (plus `old` keys), valid until `valid_until`,
/// signed by `key`.
fn key_response(
    server: &ServerName,
    key: &SigningKey,
    old: &[(&SigningKey, MilliSecondsSinceUnixEpoch)],
    valid_until: MilliSecondsSinceUnixEpoch,
) -> CanonicalJsonObject {
    let raw = key.server_keys(server, now(), Duration::ZERO).unwrap();
    let mut keys: ServerSigningKeys = raw.deserialize().unwrap();
    keys.valid_until_ts = valid_until;
    for (old_key, expired) in old {
        keys.old_verify_keys.insert(
            old_key.key_id().to_owned(),
            OldVerifyKey::new(*expired, Base64::new(old_key.public_key().to_vec())),
        );
    }
    keys.signatures = Default::default();
    let mut object: CanonicalJsonObject = serde_json::from_value(serde_json::to_value(&keys).unwrap()).unwrap();
    object.remove("signatures");
    key.sign_json(server, &mut object).unwrap();
    object
}

fn serves_keys(response: CanonicalJsonObject) -> Router {
    Router::new().route(SERVER_KEYS, get(move || async move { Json(serde_json::to_value(&response).unwrap()) }))
}

/// A notary relaying `responses` (by server name), signed with `key`, over POST and GET.
fn notary_router(notary: OwnedServerName, key: Arc<SigningKey>, responses: Vec<CanonicalJsonObject>) -> Router {
    let answer = move |asked: Vec<String>| {
        let relayed: Vec<CanonicalJsonObject> = responses
            .iter()
            .filter(|r| r.get("server_name").and_then(|v| v.as_str()).is_some_and(|s| asked.iter().any(|a| a == s)))
            .cloned()
            .collect();
        let signed = sign_as_notary(relayed, &notary, &key).unwrap();
        Json(json!({ "server_keys": signed }))
    };
    let post_answer = answer.clone();
    Router::new()
        .route(
            QUERY,
            axum::routing::post(move |Json(body): Json<Value>| async move {
                let asked = body["server_keys"].as_object().unwrap().keys().cloned().collect();
                post_answer(asked)
            }),
        )
        .route(
            "/_matrix/key/v2/query/{server}",
            get(move |Path(server): Path<String>| async move { answer(vec![server]) }),
        )
}

struct Net {
    ca: TestCa,
    overrides: Vec<(OwnedServerName, u16)>,
}

impl Net {
    fn new() -> Self {
        Self { ca: TestCa::new(), overrides: Vec::new() }
    }

    async fn spawn(&mut self, name: &ServerName, router: Router) -> TestServer {
        let server = spawn_tls(router, &self.ca.leaf(&[name.as_str()])).await;
        self.overrides.push((name.to_owned(), server.port()));
        server
    }

    /// A server name that maps to a port where nothing listens.
    fn down(&mut self, name: &ServerName) {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        self.overrides.push((name.to_owned(), port));
    }

    fn fetcher(&self, cache: Arc<MemoryCache>, config: KeyFetcherConfig) -> KeyFetcher {
        let mut resolver_config = resolver_config(&self.ca, 1);
        for (name, port) in &self.overrides {
            resolver_config.overrides.insert(name.clone(), format!("127.0.0.1:{port}"));
        }
        let resolver = Arc::new(Resolver::new(resolver_config, Arc::new(StaticDns::new())).unwrap());
        let key = Arc::new(SigningKey::generate("me").unwrap());
        let client = FederationClient::new(ClientConfig::new(server_name!("me.test").to_owned(), key), resolver);
        KeyFetcher::new(client, cache, config)
    }
}

fn ids(key: &SigningKey) -> Vec<OwnedServerSigningKeyId> {
    vec![key.key_id().to_owned()]
}

fn trusted(name: &ServerName, key: &SigningKey) -> TrustedNotary {
    TrustedNotary {
        server_name: name.to_owned(),
        verify_keys: [(key.key_id().to_string(), Base64::new(key.public_key().to_vec()))].into(),
    }
}

#[tokio::test]
async fn direct_fetch_is_verified_stored_and_reused() {
    let origin = server_name!("origin.test");
    let key = SigningKey::generate("o1").unwrap();
    let mut net = Net::new();
    let server = net.spawn(origin, serves_keys(key_response(origin, &key, &[], hours_from_now(24)))).await;
    let cache = Arc::new(MemoryCache::default());
    let fetcher = net.fetcher(cache.clone(), KeyFetcherConfig::default());

    let keys = fetcher.get_keys(origin, &ids(&key), Some(now())).await.unwrap();
    assert_eq!(keys.get(key.key_id().as_str()).unwrap().as_bytes(), key.public_key());
    assert_eq!(cache.get(origin).await.unwrap().len(), 1);

    // From the cache now, concurrently too.
    let lookups = (0..8).map(|_| fetcher.get_keys(origin, &[], Some(now())));
    for result in futures::future::join_all(lookups).await {
        assert_eq!(result.unwrap().len(), 1);
    }
    assert_eq!(server.seen.hits(SERVER_KEYS), 1);
}

#[tokio::test]
async fn public_key_map_for_a_signed_object() {
    let origin = server_name!("origin.test");
    let key = SigningKey::generate("o1").unwrap();
    let mut net = Net::new();
    net.spawn(origin, serves_keys(key_response(origin, &key, &[], hours_from_now(24)))).await;
    net.down(server_name!("gone.test"));
    let fetcher = net.fetcher(Arc::new(MemoryCache::default()), KeyFetcherConfig::default());

    let mut object: CanonicalJsonObject = serde_json::from_value(json!({"type": "m.test"})).unwrap();
    key.sign_json(origin, &mut object).unwrap();
    let gone = SigningKey::generate("g1").unwrap();
    gone.sign_json(server_name!("gone.test"), &mut object).unwrap();

    let map = fetcher.public_key_map(&signers_of(&object), Some(now())).await;
    assert_eq!(map.keys().collect::<Vec<_>>(), vec!["origin.test"], "the unreachable signer is left out");
    let only_origin = ruma::signatures::PublicKeyMap::from([("origin.test".to_owned(), map["origin.test"].clone())]);
    object.get_mut("signatures").and_then(|s| s.as_object_mut()).unwrap().remove("gone.test");
    ruma::signatures::verify_json(&only_origin, &object).unwrap();
}

#[tokio::test]
async fn concurrent_misses_fetch_once() {
    let origin = server_name!("origin.test");
    let key = SigningKey::generate("o1").unwrap();
    let mut net = Net::new();
    let server = net.spawn(origin, serves_keys(key_response(origin, &key, &[], hours_from_now(24)))).await;
    let fetcher = net.fetcher(Arc::new(MemoryCache::default()), KeyFetcherConfig::default());
    let wanted = ids(&key);
    let lookups = (0..8).map(|_| fetcher.get_keys(origin, &wanted, Some(now())));
    for result in futures::future::join_all(lookups).await {
        assert_eq!(result.unwrap().len(), 1);
    }
    assert_eq!(server.seen.hits(SERVER_KEYS), 1);
}

#[tokio::test]
async fn validity_decides_what_the_cache_can_answer() {
    let origin = server_name!("origin.test");
    let (key, old) = (SigningKey::generate("new").unwrap(), SigningKey::generate("old").unwrap());
    let expired = hours_from_now(-48);
    let mut net = Net::new();
    let response = key_response(origin, &key, &[(&old, expired)], hours_from_now(24 * 365));
    let server = net.spawn(origin, serves_keys(response)).await;
    let cache = Arc::new(MemoryCache::default());
    // A stale copy of the key, valid only until yesterday.
    cache.keys.lock().unwrap().insert(
        origin.to_owned(),
        vec![CachedKey {
            key_id: key.key_id().to_owned(),
            key: Base64::new(key.public_key().to_vec()),
            valid_until_ts: hours_from_now(-24),
            expired: false,
        }],
    );
    let fetcher = net.fetcher(cache.clone(), KeyFetcherConfig::default());

    // Yesterday's copy verifies last week's events without asking anyone...
    fetcher.get_keys(origin, &ids(&key), Some(hours_from_now(-24 * 7))).await.unwrap();
    assert_eq!(server.seen.hits(SERVER_KEYS), 0);
    // ...but not today's: refetched, and the claimed year is capped at seven days.
    fetcher.get_keys(origin, &ids(&key), Some(now())).await.unwrap();
    assert_eq!(server.seen.hits(SERVER_KEYS), 1);
    let stored = cache.get(origin).await.unwrap();
    let current = stored.iter().find(|k| k.key_id == *key.key_id()).unwrap();
    assert!(current.valid_until_ts <= hours_from_now(7 * 24) && current.valid_until_ts > hours_from_now(7 * 24 - 1));
    let err = fetcher.get_keys(origin, &ids(&key), Some(hours_from_now(8 * 24))).await.unwrap_err();
    assert!(matches!(err, KeyFetchError::NotFound { .. }), "{err:?}");

    // The old key verifies what was sent before it expired, and nothing after.
    fetcher.get_keys(origin, &ids(&old), Some(hours_from_now(-72))).await.unwrap();
    let err = fetcher.get_keys(origin, &ids(&old), Some(now())).await.unwrap_err();
    assert!(matches!(err, KeyFetchError::NotFound { .. }), "{err:?}");
    // Room versions 1 to 4 ignore validity.
    fetcher.get_keys(origin, &ids(&old), None).await.unwrap();
    // None of that asked the origin again so soon.
    assert_eq!(server.seen.hits(SERVER_KEYS), 1);
}

#[tokio::test]
async fn unknown_key_ids_do_not_cause_a_request_each() {
    let origin = server_name!("origin.test");
    let key = SigningKey::generate("o1").unwrap();
    let mut net = Net::new();
    let server = net.spawn(origin, serves_keys(key_response(origin, &key, &[], hours_from_now(24)))).await;
    let fetcher = net.fetcher(Arc::new(MemoryCache::default()), KeyFetcherConfig::default());
    for i in 0..5 {
        let made_up: OwnedServerSigningKeyId = format!("ed25519:madeup{i}").try_into().unwrap();
        let err = fetcher.get_keys(origin, &[made_up], Some(now())).await.unwrap_err();
        assert!(matches!(err, KeyFetchError::NotFound { .. }), "{err:?}");
    }
    assert_eq!(server.seen.hits(SERVER_KEYS), 1);
}

#[tokio::test]
async fn forged_responses_are_not_stored() {
    let origin = server_name!("origin.test");
    let (key, forger) = (SigningKey::generate("o1").unwrap(), SigningKey::generate("o1").unwrap());
    let mut response = key_response(origin, &key, &[], hours_from_now(24));
    // Signed by a different key claiming the same ID.
    response.remove("signatures");
    forger.sign_json(origin, &mut response).unwrap();
    let mut net = Net::new();
    net.spawn(origin, serves_keys(response)).await;
    let cache = Arc::new(MemoryCache::default());
    let fetcher = net.fetcher(cache.clone(), KeyFetcherConfig::default());
    let err = fetcher.get_keys(origin, &ids(&key), Some(now())).await.unwrap_err();
    let KeyFetchError::NotFound { last_error: Some(last), .. } = &err else { panic!("{err:?}") };
    assert!(matches!(**last, KeyFetchError::Verify { .. }), "{last:?}");
    assert!(cache.get(origin).await.unwrap().is_empty());
}

#[tokio::test]
async fn notaries_are_asked_when_the_origin_is_down() {
    let (origin, notary) = (server_name!("origin.test"), server_name!("notary.test"));
    let (origin_key, notary_key) = (SigningKey::generate("o1").unwrap(), Arc::new(SigningKey::generate("n1").unwrap()));
    let mut net = Net::new();
    net.down(origin);
    let relayed = key_response(origin, &origin_key, &[], hours_from_now(24));
    let notary_server =
        net.spawn(notary, notary_router(notary.to_owned(), notary_key.clone(), vec![relayed.clone()])).await;
    let cache = Arc::new(MemoryCache::default());
    let config = KeyFetcherConfig { notaries: vec![trusted(notary, &notary_key)], ..KeyFetcherConfig::default() };
    let fetcher = net.fetcher(cache.clone(), config);

    let keys = fetcher.get_keys(origin, &ids(&origin_key), Some(now())).await.unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(notary_server.seen.hits(QUERY), 1);
    assert_eq!(cache.get(origin).await.unwrap().len(), 1);

    // The GET form too.
    let answers = fetcher.fetch_via_notary_get(&trusted(notary, &notary_key), origin, now()).await.unwrap();
    assert_eq!(answers[0].server_name, origin);
}

#[tokio::test]
async fn notary_answers_need_a_trusted_notary_signature() {
    let (origin, notary) = (server_name!("origin.test"), server_name!("notary.test"));
    let origin_key = SigningKey::generate("o1").unwrap();
    let (notary_key, impostor_key) =
        (Arc::new(SigningKey::generate("n1").unwrap()), Arc::new(SigningKey::generate("n1").unwrap()));
    let mut net = Net::new();
    net.down(origin);
    let relayed = key_response(origin, &origin_key, &[], hours_from_now(24));
    // The notary server signs with a key other than the one configured for it.
    net.spawn(notary, notary_router(notary.to_owned(), impostor_key, vec![relayed])).await;
    let cache = Arc::new(MemoryCache::default());
    let config = KeyFetcherConfig { notaries: vec![trusted(notary, &notary_key)], ..KeyFetcherConfig::default() };
    let fetcher = net.fetcher(cache.clone(), config);
    let err = fetcher.get_keys(origin, &ids(&origin_key), Some(now())).await.unwrap_err();
    let KeyFetchError::NotFound { last_error: Some(last), .. } = &err else { panic!("{err:?}") };
    assert!(matches!(**last, KeyFetchError::NotaryEmpty { .. }), "{last:?}");
    assert!(cache.get(origin).await.unwrap().is_empty());
}

#[tokio::test]
async fn notary_keys_can_be_learnt_from_the_notary() {
    let (origin, notary) = (server_name!("origin.test"), server_name!("notary.test"));
    let (origin_key, notary_key) = (SigningKey::generate("o1").unwrap(), Arc::new(SigningKey::generate("n1").unwrap()));
    let mut net = Net::new();
    net.down(origin);
    let relayed = key_response(origin, &origin_key, &[], hours_from_now(24));
    let router = notary_router(notary.to_owned(), notary_key.clone(), vec![relayed]).merge(serves_keys(key_response(
        notary,
        &notary_key,
        &[],
        hours_from_now(24),
    )));
    let notary_server = net.spawn(notary, router).await;
    let untrusted_yet = TrustedNotary { server_name: notary.to_owned(), verify_keys: Default::default() };
    let cache = Arc::new(MemoryCache::default());
    let config = KeyFetcherConfig { notaries: vec![untrusted_yet], ..KeyFetcherConfig::default() };
    let fetcher = net.fetcher(cache.clone(), config);
    fetcher.get_keys(origin, &ids(&origin_key), Some(now())).await.unwrap();
    assert_eq!(notary_server.seen.hits(SERVER_KEYS), 1);
    assert_eq!(cache.get(notary).await.unwrap().len(), 1);
}

#[tokio::test]
async fn answering_as_a_notary() {
    let origin = server_name!("origin.test");
    let key = SigningKey::generate("o1").unwrap();
    let me = server_name!("me.test");
    let my_key = SigningKey::generate("me1").unwrap();
    let mut net = Net::new();
    let server = net.spawn(origin, serves_keys(key_response(origin, &key, &[], hours_from_now(24)))).await;
    let cache = Arc::new(MemoryCache::default());
    let fetcher = net.fetcher(cache.clone(), KeyFetcherConfig::default());

    // Nothing stored: fetched from the origin.
    let responses = fetcher.notary_responses(origin, None).await.unwrap();
    assert_eq!(responses.len(), 1);
    assert_eq!(server.seen.hits(SERVER_KEYS), 1);
    // Stored and fresh enough: relayed from the cache.
    let responses = fetcher.notary_responses(origin, Some(hours_from_now(1))).await.unwrap();
    assert_eq!(server.seen.hits(SERVER_KEYS), 1);

    // What a requester gets verifies with the origin's key and ours.
    let signed: Vec<Raw<ServerSigningKeys>> = sign_as_notary(responses, me, &my_key).unwrap();
    let mine = [(my_key.key_id().to_string(), Base64::new(my_key.public_key().to_vec()))].into();
    let verified =
        verify_notary_keys(&signed[0], origin, me, &mine, now(), parley_federation::keys::DEFAULT_MAX_VALIDITY)
            .unwrap();
    assert_eq!(verified.keys[0].key_id, *key.key_id());

    // Origin down and nothing stored: an empty answer, not an error.
    let mut net = Net::new();
    net.down(origin);
    let fetcher = net.fetcher(Arc::new(MemoryCache::default()), KeyFetcherConfig::default());
    assert!(fetcher.notary_responses(origin, None).await.unwrap().is_empty());
}
