//! A thin Client-Server API client: one shared `reqwest::Client` (connection reuse, as many
//! connections as there are concurrent requests), errors counted by kind, and 429 handling.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context as _, anyhow};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Errors by kind (`"send: 429 M_LIMIT_EXCEEDED"`, `"sync: timeout"`, ...).
#[derive(Default)]
pub struct Errors(Mutex<BTreeMap<String, u64>>);

impl Errors {
    pub fn add(&self, kind: String) {
        let mut map = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *map.entry(kind).or_default() += 1;
    }

    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

/// Why one request failed.
#[derive(Debug)]
pub enum CallError {
    /// The server answered with a non-2xx status.
    Status { status: StatusCode, body: Value },
    /// No usable answer: connect error, timeout, reset, unparseable body.
    Transport(String),
}

impl CallError {
    /// A short kind for the error table.
    pub fn kind(&self) -> String {
        match self {
            Self::Status { status, body } => {
                format!("{} {}", status.as_u16(), body["errcode"].as_str().unwrap_or("-"))
            }
            Self::Transport(kind) => kind.clone(),
        }
    }

    /// `retry_after_ms` of a 429, if this is one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Status { status, body } if *status == StatusCode::TOO_MANY_REQUESTS => {
                let ms = body["retry_after_ms"].as_u64().unwrap_or(1000);
                Some(Duration::from_millis(ms.clamp(10, 60_000)))
            }
            _ => None,
        }
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Status { status, body } => write!(f, "HTTP {status}: {body}"),
            Self::Transport(kind) => write!(f, "{kind}"),
        }
    }
}

impl std::error::Error for CallError {}

fn transport_kind(err: &reqwest::Error) -> String {
    if err.is_connect() {
        if err.is_timeout() { "connect timeout".to_owned() } else { "connect error".to_owned() }
    } else if err.is_timeout() {
        "timeout".to_owned()
    } else if err.is_body() || err.is_decode() {
        "body error".to_owned()
    } else if err.is_request() {
        "request error".to_owned()
    } else {
        "transport error".to_owned()
    }
}

/// A logged-in device.
#[derive(Clone, Debug)]
pub struct Session {
    pub user_id: String,
    pub localpart: String,
    pub token: String,
}

/// The homeserver, as seen through the Client-Server API.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    pub errors: Arc<Errors>,
}

/// Percent-encodes a path segment (room IDs contain `!` and `:`).
pub fn enc(segment: &str) -> String {
    url::form_urlencoded::byte_serialize(segment.as_bytes()).collect::<String>().replace('+', "%20")
}

pub const PASSWORD: &str = "bench-password-0123456789";
const SETUP_TIMEOUT: Duration = Duration::from_secs(300);

impl Api {
    pub fn new(base: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            // Every concurrent request gets a connection; idle ones are kept for reuse.
            .pool_max_idle_per_host(usize::MAX)
            .pool_idle_timeout(Duration::from_secs(300))
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(30))
            .build()
            .context("building the HTTP client")?;
        Ok(Self { http, base: base.trim_end_matches('/').to_owned(), errors: Arc::default() })
    }

    /// Another homeserver, through the same HTTP client and with the same error counts (for
    /// scenarios that span two servers).
    pub fn at(&self, base: &str) -> Self {
        Self { http: self.http.clone(), base: base.trim_end_matches('/').to_owned(), errors: Arc::clone(&self.errors) }
    }

    /// One request; the body is parsed as JSON (`Null` when empty).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<Value, CallError> {
        let mut request = self.http.request(method, format!("{}{path}", self.base)).timeout(timeout);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| CallError::Transport(transport_kind(&e)))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| CallError::Transport(transport_kind(&e)))?;
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).map_err(|_| CallError::Transport("unparseable body".to_owned()))?
        };
        if status.is_success() { Ok(value) } else { Err(CallError::Status { status, body: value }) }
    }

    /// A setup request: 429s wait `retry_after_ms` and retry, transport errors retry a few
    /// times; everything is counted under `what`.
    pub async fn setup_call(
        &self,
        what: &str,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let mut transport_failures = 0;
        loop {
            match self.call(method.clone(), path, token, body, SETUP_TIMEOUT).await {
                Ok(value) => return Ok(value),
                Err(err) => {
                    self.errors.add(format!("setup {what}: {}", err.kind()));
                    if let Some(wait) = err.retry_after() {
                        tokio::time::sleep(wait).await;
                    } else if matches!(err, CallError::Transport(_)) && transport_failures < 5 {
                        transport_failures += 1;
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    } else {
                        return Err(anyhow!("{what} {path}: {err}"));
                    }
                }
            }
        }
    }

    /// Registers through user-interactive auth: the first request learns the session and
    /// flows, the second completes `m.login.dummy`.
    pub async fn register(&self, localpart: &str) -> anyhow::Result<Session> {
        let mut body = json!({
            "username": localpart,
            "password": PASSWORD,
            "initial_device_display_name": "parley-bench",
        });
        let path = "/_matrix/client/v3/register";
        let session = loop {
            match self.call(Method::POST, path, None, Some(&body), SETUP_TIMEOUT).await {
                Err(CallError::Status { status: StatusCode::UNAUTHORIZED, body }) => {
                    break body["session"].as_str().map(str::to_owned);
                }
                Err(err) => {
                    self.errors.add(format!("setup register: {}", err.kind()));
                    match err.retry_after() {
                        Some(wait) => tokio::time::sleep(wait).await,
                        None => return Err(anyhow!("register {localpart}: {err}")),
                    }
                }
                Ok(resp) => return Self::session(localpart, &resp),
            }
        };
        body["auth"] = json!({"type": "m.login.dummy"});
        if let Some(session) = session {
            body["auth"]["session"] = json!(session);
        }
        let resp = self.setup_call("register", Method::POST, path, None, Some(&body)).await?;
        Self::session(localpart, &resp)
    }

    /// Logs in again: a new device with its own token.
    pub async fn login(&self, localpart: &str) -> anyhow::Result<Session> {
        let body = json!({
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": localpart},
            "password": PASSWORD,
            "initial_device_display_name": "parley-bench",
        });
        let resp = self.setup_call("login", Method::POST, "/_matrix/client/v3/login", None, Some(&body)).await?;
        Self::session(localpart, &resp)
    }

    fn session(localpart: &str, resp: &Value) -> anyhow::Result<Session> {
        let field = |name: &str| {
            resp[name]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| anyhow!("no {name} in the answer for {localpart}: {resp}"))
        };
        Ok(Session { user_id: field("user_id")?, localpart: localpart.to_owned(), token: field("access_token")? })
    }

    pub async fn create_room(&self, token: &str, body: &Value) -> anyhow::Result<String> {
        let resp = self
            .setup_call("createRoom", Method::POST, "/_matrix/client/v3/createRoom", Some(token), Some(body))
            .await?;
        resp["room_id"].as_str().map(str::to_owned).ok_or_else(|| anyhow!("no room_id in {resp}"))
    }

    pub async fn join(&self, token: &str, room_id: &str) -> anyhow::Result<()> {
        let path = format!("/_matrix/client/v3/rooms/{}/join", enc(room_id));
        self.setup_call("join", Method::POST, &path, Some(token), Some(&json!({}))).await.map(drop)
    }

    /// `POST /join/{roomIdOrAlias}`: joins by alias too, over federation when the room or the
    /// alias is on another server.
    pub async fn join_by(&self, token: &str, room_id_or_alias: &str) -> anyhow::Result<String> {
        let path = format!("/_matrix/client/v3/join/{}", enc(room_id_or_alias));
        let resp = self.setup_call("join", Method::POST, &path, Some(token), Some(&json!({}))).await?;
        resp["room_id"].as_str().map(str::to_owned).ok_or_else(|| anyhow!("no room_id in {resp}"))
    }

    /// Sends one message event; the caller counts and retries.
    pub async fn send(&self, token: &str, room_id: &str, txn: &str, content: &Value) -> Result<Value, CallError> {
        let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{}", enc(room_id), enc(txn));
        self.call(Method::PUT, &path, Some(token), Some(content), Duration::from_secs(120)).await
    }

    /// `POST /rooms/{roomId}/receipt/m.read.private/{eventId}`.
    pub async fn read_private(&self, token: &str, room_id: &str, event_id: &str) -> Result<Value, CallError> {
        let path = format!("/_matrix/client/v3/rooms/{}/receipt/m.read.private/{}", enc(room_id), enc(event_id));
        self.call(Method::POST, &path, Some(token), Some(&json!({})), Duration::from_secs(60)).await
    }

    /// `GET /sync?{query}`, waiting at most `timeout` plus a margin for the answer.
    pub async fn sync(&self, token: &str, query: &str, timeout: Duration) -> Result<Value, CallError> {
        let path = format!("/_matrix/client/v3/sync?{query}");
        self.call(Method::GET, &path, Some(token), None, timeout + Duration::from_secs(60)).await
    }

    /// `GET /sync?{query}` returning the raw body size too (for the initial-sync scenario).
    pub async fn sync_sized(&self, token: &str, query: &str) -> Result<(Value, usize), CallError> {
        let url = format!("{}/_matrix/client/v3/sync?{query}", self.base);
        let response = self
            .http
            .get(url)
            .bearer_auth(token)
            .timeout(SETUP_TIMEOUT)
            .send()
            .await
            .map_err(|e| CallError::Transport(transport_kind(&e)))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| CallError::Transport(transport_kind(&e)))?;
        let value: Value =
            serde_json::from_slice(&bytes).map_err(|_| CallError::Transport("unparseable body".to_owned()))?;
        if status.is_success() { Ok((value, bytes.len())) } else { Err(CallError::Status { status, body: value }) }
    }

    /// Waits until the server answers `/versions`.
    pub async fn wait_ready(&self, within: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let probe = self.call(Method::GET, "/_matrix/client/versions", None, None, Duration::from_secs(5)).await;
            match probe {
                Ok(_) => return Ok(()),
                Err(err) if tokio::time::Instant::now() >= deadline => {
                    return Err(anyhow!("{} did not answer /versions: {err}", self.base));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }
}
