//! Building `/sync` responses, without the HTTP layer: a Parley on a temporary SQLite database
//! is set up through the Client-Server API (one user in 20 rooms of 10 members, with some
//! history), then `SyncService::sync` is timed directly for an initial sync (lazy-loaded
//! members, and full member state) and for an incremental sync that picks up one new message.
//!
//! `cargo bench --bench sync`

#![allow(clippy::unwrap_used, reason = "benchmark setup: a failure should stop it loudly")]

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use parley::{
    Config, Server,
    service::{
        auth::AuthedUser,
        sync::{SyncRequest, SyncToken},
    },
};
use ruma::api::client::filter::FilterDefinition;
use serde_json::{Value, json};

const ROOMS: usize = 20;
const MEMBERS: usize = 10;
const MESSAGES_PER_ROOM: usize = 20;

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> Value {
        let mut request = self.http.post(format!("{}{path}", self.base)).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        assert!(response.status().is_success(), "{path}: {}", response.status());
        response.json().await.unwrap()
    }

    async fn put(&self, path: &str, token: &str, body: &Value) {
        let response =
            self.http.put(format!("{}{path}", self.base)).bearer_auth(token).json(body).send().await.unwrap();
        assert!(response.status().is_success(), "{path}: {}", response.status());
    }

    async fn register(&self, name: &str) -> (String, String, String) {
        let body = json!({"username": name, "password": "bench password 123", "auth": {"type": "m.login.dummy"}});
        let resp = self.post("/_matrix/client/v3/register", None, &body).await;
        let field = |k: &str| resp[k].as_str().unwrap().to_owned();
        (field("user_id"), field("device_id"), field("access_token"))
    }
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn filter(lazy: bool) -> FilterDefinition {
    let mut value = json!({"room": {"timeline": {"limit": 10}}});
    if lazy {
        value["room"]["state"] = json!({"lazy_load_members": true});
    }
    serde_json::from_value(value).unwrap()
}

fn bench_sync(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (handle, user, client, token) = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut config = Config::with_defaults("localhost").unwrap();
        config.database.url = format!("sqlite://{}", dir.path().join("parley.db").display());
        config.registration.mode = parley::config::RegistrationMode::Open;
        config.rate_limits.enabled = false;
        config.presence.enabled = false;
        config.listen.client = addr;
        config.logging.level = "error".to_owned();
        let handle = Server::start(config, listener).await.unwrap();
        let client = Client { http: reqwest::Client::new(), base: format!("http://{addr}") };
        let (user_id, device_id, token) = client.register("target").await;
        let mut others = Vec::new();
        for i in 0..MEMBERS {
            others.push(client.register(&format!("member{i}")).await.2);
        }
        for r in 0..ROOMS {
            let room =
                client.post("/_matrix/client/v3/createRoom", Some(&token), &json!({"preset": "public_chat"})).await;
            let room_id = room["room_id"].as_str().unwrap().to_owned();
            for other in &others {
                client.post(&format!("/_matrix/client/v3/rooms/{}/join", enc(&room_id)), Some(other), &json!({})).await;
            }
            for m in 0..MESSAGES_PER_ROOM {
                let sender = &others[m % others.len()];
                let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/h{r}-{m}", enc(&room_id));
                client.put(&path, sender, &json!({"msgtype": "m.text", "body": format!("message {m}")})).await;
            }
        }
        let user = AuthedUser { user_id: user_id.try_into().unwrap(), device_id: device_id.into() };
        (handle, user, client, token)
    });
    let request = |since: Option<SyncToken>, lazy: bool| SyncRequest {
        user: user.clone(),
        since,
        full_state: false,
        filter: filter(lazy),
        timeout: Duration::ZERO,
        use_state_after: false,
        set_presence: ruma::presence::PresenceState::Offline,
    };
    let services = &handle.services;

    let mut group = c.benchmark_group("sync");
    group.sample_size(20);
    for (name, lazy) in [("initial_20_rooms_lazy_members", true), ("initial_20_rooms_full_members", false)] {
        let req = request(None, lazy);
        group.bench_function(name, |b| b.iter(|| runtime.block_on(services.sync.sync(&req)).unwrap()));
    }
    // An incremental sync that finds one new message in one room.
    let since = runtime.block_on(services.sync.sync(&request(None, true))).unwrap().next_batch;
    runtime.block_on(async {
        let rooms = client.http.get(format!("{}/_matrix/client/v3/joined_rooms", client.base)).bearer_auth(&token);
        let rooms: Value = rooms.send().await.unwrap().json().await.unwrap();
        let room_id = rooms["joined_rooms"][0].as_str().unwrap();
        let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/news", enc(room_id));
        client.put(&path, &token, &json!({"msgtype": "m.text", "body": "news"})).await;
    });
    let req = request(Some(since.parse().unwrap()), true);
    group.bench_function("incremental_one_new_message", |b| {
        b.iter(|| runtime.block_on(services.sync.sync(&req)).unwrap());
    });
    group.finish();
    runtime.block_on(handle.shutdown()).unwrap();
}

criterion_group!(benches, bench_sync);
criterion_main!(benches);
