//! The Matrix Server-Server protocol pieces Parley needs, kept apart from HTTP serving and
//! storage:
//!
//! - [`keys`]: this server's signing key; other servers' keys fetched directly or through
//!   notaries, verified, cached through the [`keys::KeyCache`] trait, and relayed as a notary;
//! - [`pdu`]: hashing, signing and identifying events;
//! - [`discovery`]: the spec's server name resolution (`.well-known`, SRV, port 8448) with an
//!   override map, giving a [`discovery::Destination`] (where to connect, `Host` header, TLS
//!   name);
//! - [`client`]: ruma requests signed with X-Matrix, sent to that destination, behind an IP
//!   filter ([`IpFilter`]), with certificate checks ([`tls::TlsOptions`]), a body size limit
//!   and a timeout.
//!
//! Everything is built on ruma's canonical JSON, `ruma::signatures` and its endpoint types; this
//! crate adds the glue Parley wants without reimplementing the algorithms. There is no axum and
//! no sqlx here: where storage is needed the crate defines a trait the server implements.
//! Nothing is global either. A [`discovery::Resolver`], a [`client::FederationClient`] and a
//! [`keys::KeyFetcher`] belong to one homeserver, so several can run in one process, and TLS
//! uses the aws-lc-rs provider passed explicitly, not a process-wide default.
//!
//! # Wiring it up
//!
//! ```no_run
//! use std::{collections::BTreeMap, sync::Arc};
//!
//! use async_trait::async_trait;
//! use parley_federation::{
//!     IpFilter, SigningKey,
//!     client::{ClientConfig, FederationClient},
//!     discovery::{HickoryDns, Resolver, ResolverConfig},
//!     keys::{CachedKey, KeyCache, KeyCacheError, KeyFetcher, KeyFetcherConfig, StoredResponse, VerifiedKeys},
//!     tls::TlsOptions,
//! };
//! use ruma::{
//!     MilliSecondsSinceUnixEpoch, OwnedServerName, ServerName,
//!     api::federation::discovery::get_server_version,
//!     server_name,
//! };
//!
//! /// The server's key store (a database in Parley).
//! struct Store;
//!
//! #[async_trait]
//! impl KeyCache for Store {
//!     async fn get(&self, server: &ServerName) -> Result<Vec<CachedKey>, KeyCacheError> {
//!         // SELECT key_id, public_key, valid_until_ts, expired FROM remote_keys WHERE server = ..
//!         Ok(Vec::new())
//!     }
//!     async fn put(&self, server: &ServerName, keys: &VerifiedKeys) -> Result<(), KeyCacheError> {
//!         // Upsert each of keys.keys; keep keys.response (JSON) and keys.valid_until_ts for
//!         // notary answers.
//!         Ok(())
//!     }
//!     async fn get_response(&self, server: &ServerName) -> Result<Option<StoredResponse>, KeyCacheError> {
//!         Ok(None)
//!     }
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let me: OwnedServerName = server_name!("example.org").to_owned();
//! let key = Arc::new(SigningKey::generate("a_1")?);
//!
//! let resolver_config = ResolverConfig {
//!     // Tests and private deployments: server name -> "host:port" or "ip:port".
//!     overrides: BTreeMap::from([(server_name!("hs2.test").to_owned(), "127.0.0.1:8449".to_owned())]),
//!     // The default blocklist, with loopback allowed (tests only!).
//!     ip_filter: IpFilter::with_allowed(vec!["127.0.0.0/8".parse()?]),
//!     // `verify_certificates: false` for self-signed test deployments.
//!     tls: TlsOptions { verify_certificates: true, extra_root_certificates_pem: Vec::new() },
//!     ..ResolverConfig::default()
//! };
//! let resolver = Arc::new(Resolver::new(resolver_config, Arc::new(HickoryDns::from_system_conf()?))?);
//! let client = FederationClient::new(ClientConfig::new(me.clone(), key.clone()), resolver);
//! let fetcher = KeyFetcher::new(client.clone(), Arc::new(Store), KeyFetcherConfig::default());
//!
//! // A signed request (X-Matrix is added when the endpoint needs it).
//! let version = client.send(server_name!("matrix.org"), get_server_version::v1::Request::new()).await?;
//!
//! // Keys to check an event sent at `ts` by matrix.org with key ed25519:auto.
//! let ts = MilliSecondsSinceUnixEpoch::now();
//! let keys = fetcher.get_keys(server_name!("matrix.org"), &["ed25519:auto".try_into()?], Some(ts)).await?;
//! # Ok(())
//! # }
//! ```

mod cache;
pub mod client;
mod connect;
pub mod discovery;
pub mod ip_filter;
pub mod keys;
pub mod pdu;
pub mod tls;

pub use self::{ip_filter::IpFilter, keys::SigningKey};
