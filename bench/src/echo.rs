//! A trivial in-memory stand-in for a homeserver: just enough of register, login, createRoom,
//! join, send and sync for the scenarios to run, with no persistence, no auth rules and no
//! signing. Run the scenarios against it to see what the generator itself can push; a real
//! server that takes far less is the bottleneck, not the generator.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Json, Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
};
use serde_json::{Map, Value, json};
use tokio::sync::watch;

#[derive(Default)]
struct Inner {
    tokens: HashMap<String, String>,
    /// user → rooms joined.
    joined: HashMap<String, HashSet<String>>,
    /// (room, event); the stream position of an event is its index + 1.
    log: Vec<(String, Value)>,
    txns: HashMap<(String, String), String>,
    counter: u64,
}

struct Echo {
    inner: Mutex<Inner>,
    position: watch::Sender<u64>,
}

type Shared = Arc<Echo>;

pub async fn serve(listen: &str) -> anyhow::Result<()> {
    let state = Arc::new(Echo { inner: Mutex::default(), position: watch::channel(0).0 });
    let app = Router::new().fallback(handle).with_state(state);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    eprintln!("echo server listening on {}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}

fn error(status: StatusCode, errcode: &str) -> Response {
    (status, Json(json!({"errcode": errcode, "error": errcode}))).into_response()
}

fn lock(echo: &Echo) -> std::sync::MutexGuard<'_, Inner> {
    echo.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn decode(segment: &str) -> String {
    url::form_urlencoded::parse(format!("x={segment}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

async fn handle(State(echo): State<Shared>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path().strip_prefix("/_matrix/client/").unwrap_or("");
    let path = ["v3/", "r0/"].iter().find_map(|v| path.strip_prefix(v)).unwrap_or(path);
    let segments: Vec<String> = path.split('/').map(decode).collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let query: HashMap<String, String> =
        url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()).into_owned().collect();
    if segments.as_slice() == ["versions"] {
        return Json(json!({"versions": ["v1.11"]})).into_response();
    }
    match (&method, segments.as_slice()) {
        (&Method::POST, ["register"]) => {
            if body.get("auth").is_none() {
                return (
                    StatusCode::UNAUTHORIZED,
                    Json(json!({"session": "s", "flows": [{"stages": ["m.login.dummy"]}], "params": {}})),
                )
                    .into_response();
            }
            let local = body["username"].as_str().unwrap_or("anon");
            return Json(new_session(&echo, &format!("@{local}:echo"))).into_response();
        }
        (&Method::POST, ["login"]) => {
            let local = body["identifier"]["user"].as_str().unwrap_or("anon");
            return Json(new_session(&echo, &format!("@{local}:echo"))).into_response();
        }
        _ => {}
    }
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let Some(user) = lock(&echo).tokens.get(token).cloned() else {
        return error(StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN");
    };
    match (&method, segments.as_slice()) {
        (&Method::POST, ["createRoom"]) => {
            let mut inner = lock(&echo);
            inner.counter += 1;
            let room = format!("!r{}:echo", inner.counter);
            inner.joined.entry(user).or_default().insert(room.clone());
            Json(json!({"room_id": room})).into_response()
        }
        (&Method::POST, ["rooms", room, "join"] | ["join", room]) => {
            lock(&echo).joined.entry(user).or_default().insert((*room).to_owned());
            Json(json!({"room_id": room})).into_response()
        }
        (&Method::PUT, ["rooms", room, "send", kind, txn]) => {
            let mut inner = lock(&echo);
            let key = (token.to_owned(), (*txn).to_owned());
            if let Some(id) = inner.txns.get(&key) {
                return Json(json!({"event_id": id})).into_response();
            }
            inner.counter += 1;
            let id = format!("$e{}", inner.counter);
            let event = json!({"type": kind, "sender": user, "content": body, "event_id": id, "origin_server_ts": 0});
            inner.log.push(((*room).to_owned(), event));
            inner.txns.insert(key, id.clone());
            let position = inner.log.len() as u64;
            drop(inner);
            echo.position.send_replace(position);
            Json(json!({"event_id": id})).into_response()
        }
        (&Method::GET, ["sync"]) => sync(&echo, &user, &query).await,
        _ => error(StatusCode::NOT_FOUND, "M_UNRECOGNIZED"),
    }
}

fn new_session(echo: &Echo, user: &str) -> Value {
    let mut inner = lock(echo);
    inner.counter += 1;
    let token = format!("tok{}_{}", inner.counter, user);
    inner.tokens.insert(token.clone(), user.to_owned());
    json!({"user_id": user, "access_token": token, "device_id": format!("D{}", inner.counter)})
}

async fn sync(echo: &Echo, user: &str, query: &HashMap<String, String>) -> Response {
    let timeout = Duration::from_millis(query.get("timeout").and_then(|t| t.parse().ok()).unwrap_or(0));
    let Some(since) = query.get("since").map(|s| s.parse::<u64>().unwrap_or(0)) else {
        let position = *echo.position.borrow();
        return Json(json!({"next_batch": position.to_string()})).into_response();
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let mut changes = echo.position.subscribe();
    loop {
        changes.borrow_and_update();
        let (rooms, upto) = {
            let inner = lock(echo);
            let mut rooms: Map<String, Value> = Map::new();
            if let Some(joined) = inner.joined.get(user) {
                for (room, event) in inner.log.iter().skip(since as usize) {
                    if joined.contains(room) {
                        let entry = rooms.entry(room.clone()).or_insert_with(|| json!({"timeline": {"events": []}}));
                        if let Some(events) = entry["timeline"]["events"].as_array_mut() {
                            events.push(event.clone());
                        }
                    }
                }
            }
            (rooms, inner.log.len() as u64)
        };
        if !rooms.is_empty() || tokio::time::Instant::now() >= deadline {
            return Json(json!({"next_batch": upto.to_string(), "rooms": {"join": rooms}})).into_response();
        }
        if tokio::time::timeout_at(deadline, changes.changed()).await.is_err() {
            return Json(json!({"next_batch": upto.to_string(), "rooms": {"join": {}}})).into_response();
        }
    }
}
