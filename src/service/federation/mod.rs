//! Federation: this server as one of many.
//!
//! - [`auth`]: X-Matrix on inbound requests.
//! - [`transaction`]: inbound `/send` transactions (PDUs through the room pipeline, EDUs to
//!   their handlers in `edu`). Inbound work takes the server's `Services` explicitly.
//! - [`sender`]: the durable outbound queue, one worker per destination.
//! - [`EduOut`]: what the local services call to tell other servers about typing, receipts,
//!   presence, device lists and to-device messages.
//! - [`query`]: other servers' users and aliases, for local clients (profiles, keys,
//!   devices, room aliases), and the answers to theirs.
//! - [`acl`]: server ACLs.
//!
//! Everything here exists only when `[federation]` has a listener: a server that does not
//! federate sends nothing and answers nothing.

pub mod acl;
pub mod auth;
mod edu;
pub mod history;
pub mod invite;
pub mod membership;
pub mod query;
pub mod sender;
mod source;
pub mod transaction;

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use parley_federation::{
    IpFilter,
    client::{ClientConfig, FederationClient},
    discovery::{HickoryDns, Resolver, ResolverConfig},
    keys::{KeyFetcher, KeyFetcherConfig, TrustedNotary},
    tls::TlsOptions,
};
use ruma::{OwnedServerName, OwnedUserId, RoomId, ServerName, UserId};
use serde_json::Value as JsonValue;

pub use self::{sender::Sender, source::Remote};
use super::{
    rooms::Rooms,
    server_keys::{DbKeyCache, ServerKeys},
};
use crate::{config::Config, error::Result, storage::Storage};

/// The outbound side, built before the services that send EDUs.
pub struct Outbound {
    pub client: FederationClient,
    pub sender: Arc<Sender>,
    /// Inbound transactions in progress, one per origin.
    pub inbound: transaction::InboundLocks,
}

impl Outbound {
    /// Builds the signed client (with discovery, certificate checks and the IP filter from the
    /// config), the key fetcher (connected to `keys`) and the outbound queue. `None` when
    /// federation is off.
    pub fn build(
        config: &Config,
        keys: &ServerKeys,
        storage: &Storage,
        rooms: &Arc<Rooms>,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> anyhow::Result<Option<Self>> {
        let federation = &config.federation;
        if !federation.enabled() {
            return Ok(None);
        }
        let mut pems = Vec::new();
        for path in &federation.trusted_ca_certificates {
            pems.push(std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?);
        }
        let resolver = Resolver::new(
            ResolverConfig {
                overrides: federation.destinations.clone(),
                ip_filter: IpFilter::new(federation.ip_range_blocklist.clone(), federation.ip_range_allowlist.clone()),
                tls: TlsOptions {
                    verify_certificates: federation.verify_certificates,
                    extra_root_certificates_pem: pems,
                },
                ..ResolverConfig::default()
            },
            Arc::new(HickoryDns::from_system_conf()?),
        )?;
        let mut client_config = ClientConfig::new(config.server_name.clone(), keys.signing_key_arc());
        client_config.timeout = Duration::from_secs(federation.request_timeout_secs);
        client_config.max_body_size = federation.max_response_bytes;
        let client = FederationClient::new(client_config, Arc::new(resolver));
        let notaries = federation
            .trusted_key_servers
            .iter()
            .map(|server_name| TrustedNotary { server_name: server_name.clone(), verify_keys: Default::default() })
            .collect();
        let fetcher = KeyFetcher::new(
            client.clone(),
            Arc::new(DbKeyCache(storage.clone())),
            KeyFetcherConfig { notaries, ..KeyFetcherConfig::default() },
        );
        keys.set_fetcher(fetcher);
        let remote = Arc::new(Remote(client.clone()));
        rooms.timeline.set_event_source(Arc::clone(&remote) as _);
        let sender =
            Sender::new(config.server_name.clone(), storage.clone(), Arc::clone(&rooms.events), remote, shutdown);
        rooms.timeline.set_outbox(Arc::new(sender::Waker(Arc::clone(&sender))));
        Ok(Some(Self { client, sender, inbound: transaction::InboundLocks::default() }))
    }
}

/// What local services use to tell other servers about ephemeral changes: EDUs, queued for
/// the servers concerned. Does nothing when federation is off.
#[derive(Clone)]
pub struct EduOut {
    origin: OwnedServerName,
    sender: Option<Arc<Sender>>,
    rooms: Arc<Rooms>,
}

impl EduOut {
    pub fn new(origin: OwnedServerName, sender: Option<Arc<Sender>>, rooms: Arc<Rooms>) -> Self {
        Self { origin, sender, rooms }
    }

    pub fn enabled(&self) -> bool {
        self.sender.is_some()
    }

    /// Sends an EDU to every other server with a user joined to the room (and allowed by its
    /// ACL).
    pub async fn to_room(&self, room_id: &RoomId, edu_type: &str, content: JsonValue) -> Result<()> {
        let Some(sender) = &self.sender else { return Ok(()) };
        let mut servers = Vec::new();
        for server in self.rooms.members.servers_of(room_id).await? {
            if server != self.origin && acl::allows(&self.rooms, room_id, &server).await? {
                servers.push(server);
            }
        }
        sender.send_edu(&servers, &edu(edu_type, content)).await
    }

    /// Sends an EDU to every other server sharing a room with `user_id` (through a room whose
    /// ACL lets it in).
    pub async fn to_users_rooms(&self, user_id: &UserId, edu_type: &str, content: JsonValue) -> Result<()> {
        let Some(sender) = &self.sender else { return Ok(()) };
        let mut servers = BTreeSet::new();
        for room in self.rooms.members.user_rooms(user_id, &["join"]).await? {
            for server in self.rooms.members.servers_of(&room.room_id).await? {
                // A server a room's ACL shuts out learns nothing through that room.
                if !servers.contains(&server) && acl::allows(&self.rooms, &room.room_id, &server).await? {
                    servers.insert(server);
                }
            }
        }
        servers.remove(&self.origin);
        sender.send_edu(&servers.into_iter().collect::<Vec<_>>(), &edu(edu_type, content)).await
    }

    /// Sends an EDU to one server.
    pub async fn to_server(&self, server: &ServerName, edu_type: &str, content: JsonValue) -> Result<()> {
        let Some(sender) = &self.sender else { return Ok(()) };
        sender.send_edu(&[server.to_owned()], &edu(edu_type, content)).await
    }

    /// Whether the user is another server's.
    pub fn is_remote(&self, user_id: &UserId) -> bool {
        user_id.server_name() != self.origin
    }
}

fn edu(edu_type: &str, content: JsonValue) -> JsonValue {
    serde_json::json!({ "edu_type": edu_type, "content": content })
}

/// How long the answer to a received transaction is kept for retries of it.
const INBOUND_TXN_KEPT: Duration = Duration::from_secs(24 * 3600);

/// Forgets old received transactions, hourly, until shutdown.
pub async fn prune_inbound_txns(storage: Storage, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.changed() => return,
        }
        let before = crate::service::now_ms() - i64::try_from(INBOUND_TXN_KEPT.as_millis()).unwrap_or(i64::MAX);
        if let Err(e) = storage.federation.prune_inbound_txns(before).await {
            tracing::warn!(error = %e, "could not prune received transactions");
        }
    }
}

/// Users of `origin` among `users` (an EDU may only speak for its sender's users).
fn own_users<'a>(origin: &'a ServerName, users: impl IntoIterator<Item = &'a OwnedUserId>) -> Vec<&'a OwnedUserId> {
    users.into_iter().filter(|u| u.server_name() == origin).collect()
}
