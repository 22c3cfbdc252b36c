//! Starts real Parley servers on 127.0.0.1:0, each with a fresh database of its own.
//!
//! SQLite always runs. PostgreSQL runs when `TEST_POSTGRES_URL` is set (e.g.
//! `postgres://postgres@127.0.0.1:5432`); with `TEST_REQUIRE_POSTGRES=1` a missing URL
//! fails the test instead of skipping it, which is how CI runs.

#![allow(dead_code)]

use std::{path::PathBuf, time::Duration};

use parley::{Config, Handle, Server};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::{Connection as _, Executor as _};
use tokio::{net::TcpListener, sync::OnceCell};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Declares one `#[tokio::test]` per backend for each listed `async fn(Backend)`.
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() { super::$name($crate::harness::Backend::Sqlite).await }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() { super::$name($crate::harness::Backend::Postgres).await }
            )*
        }
    };
}
pub(crate) use both_backends;

/// A database for one test: a SQLite file in a temporary directory, or a fresh PostgreSQL
/// database. `None` when PostgreSQL is not configured (and not required).
pub struct TestDb {
    pub url: String,
    pub backend: Backend,
    dir: tempfile::TempDir,
    pg_name: Option<String>,
}

impl TestDb {
    pub async fn create(backend: Backend) -> Option<Self> {
        let dir = tempfile::tempdir().expect("tempdir");
        match backend {
            Backend::Sqlite => {
                let url = format!("sqlite://{}", dir.path().join("parley.db").display());
                Some(Self { url, backend, dir, pg_name: None })
            }
            Backend::Postgres => {
                let base = postgres_base_url()?;
                sweep_stale_databases(&base).await;
                let name = format!("parley_test_{}", rand_suffix());
                let mut admin =
                    sqlx::PgConnection::connect(&format!("{base}/postgres")).await.expect("connect to postgres");
                admin.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).await.expect("create database");
                Some(Self { url: format!("{base}/{name}"), backend, dir, pg_name: Some(name) })
            }
        }
    }

    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// Runs one statement directly on the database, behind the server's back (to corrupt
    /// stored data, for example).
    pub async fn execute(&self, sql: &str) {
        match self.backend {
            Backend::Sqlite => {
                let mut conn = sqlx::SqliteConnection::connect(&self.url).await.expect("connect to sqlite");
                conn.execute(sqlx::AssertSqlSafe(sql.to_owned())).await.expect("statement");
            }
            Backend::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&self.url).await.expect("connect to postgres");
                conn.execute(sqlx::AssertSqlSafe(sql.to_owned())).await.expect("statement");
            }
        }
    }

    /// Drops the PostgreSQL database; SQLite files go with the temporary directory.
    pub async fn drop_db(self) {
        if let Some(name) = &self.pg_name
            && let Some(base) = postgres_base_url()
            && let Ok(mut admin) = sqlx::PgConnection::connect(&format!("{base}/postgres")).await
        {
            let _ = admin.execute(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))).await;
        }
    }
}

fn postgres_base_url() -> Option<String> {
    match std::env::var("TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url.trim_end_matches('/').to_owned()),
        _ => {
            let required = std::env::var("TEST_REQUIRE_POSTGRES").is_ok_and(|v| v == "1");
            assert!(!required, "TEST_REQUIRE_POSTGRES=1 but TEST_POSTGRES_URL is not set");
            skipped("PostgreSQL is not configured (set TEST_POSTGRES_URL to run it)");
            None
        }
    }
}

/// Says that the running test is skipped, where it is seen: straight to standard error,
/// past the test harness's output capture (which would show it only for a failing test), so a
/// skipped test never passes for an "ok" unnoticed.
pub fn skipped(why: &str) {
    use std::io::Write as _;
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    let _ = writeln!(std::io::stderr(), "skipped: {test}: {why}");
}

/// Drops databases left behind by earlier runs whose tests panicked before cleaning up.
async fn sweep_stale_databases(base: &str) {
    static SWEPT: OnceCell<()> = OnceCell::const_new();
    SWEPT
        .get_or_init(|| async {
            let Ok(mut admin) = sqlx::PgConnection::connect(&format!("{base}/postgres")).await else { return };
            let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            let names: Vec<String> =
                sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'parley_test_%'")
                    .fetch_all(&mut admin)
                    .await
                    .unwrap_or_default();
            for name in names {
                // Names carry their creation time; leave databases of runs still going.
                let created =
                    name.trim_start_matches("parley_test_").split('_').next().and_then(|t| t.parse::<u64>().ok());
                if created.is_some_and(|t| started.saturating_sub(t) > 3600) {
                    let _ = admin
                        .execute(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
                        .await;
                }
            }
        })
        .await;
}

fn rand_suffix() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    format!("{secs}_{:016x}", rand::random::<u64>())
}

/// A running Parley and an HTTP client for it.
pub struct TestServer {
    pub base: String,
    pub server_name: String,
    pub http: reqwest::Client,
    pub db: Option<TestDb>,
    handle: Option<Handle>,
}

/// A logged-in user.
#[derive(Clone, Debug)]
pub struct TestUser {
    pub user_id: String,
    pub device_id: String,
    pub token: String,
    pub password: String,
}

pub const PASSWORD: &str = "correct horse battery staple";

impl TestServer {
    pub async fn spawn(backend: Backend) -> Option<Self> {
        Self::spawn_with(backend, |_| {}).await
    }

    /// Starts a server with its config adjusted by `adjust` (open registration and generous
    /// rate limits are the test defaults).
    pub async fn spawn_with(backend: Backend, adjust: impl FnOnce(&mut Config)) -> Option<Self> {
        let db = TestDb::create(backend).await?;
        Some(Self::start_on(db, adjust).await)
    }

    /// Starts a server on an existing database (e.g. to check what survives a restart).
    pub async fn start_on(db: TestDb, adjust: impl FnOnce(&mut Config)) -> Self {
        Self::start_federated_on(db, None, adjust).await
    }

    /// As [`TestServer::start_on`], with a federation listener already bound (so that its
    /// address can go into the other servers' configs first).
    pub async fn start_federated_on(
        db: TestDb,
        federation: Option<TcpListener>,
        adjust: impl FnOnce(&mut Config),
    ) -> Self {
        // Server logs go to the test's captured output, shown when a test fails.
        // TEST_LOG overrides the filter, e.g. TEST_LOG=debug for every request.
        let filter = std::env::var("TEST_LOG").unwrap_or_else(|_| "warn,parley=info".to_owned());
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut config = Config::with_defaults("localhost").expect("default config");
        config.database.url.clone_from(&db.url);
        config.database.max_connections = 8;
        config.registration.mode = parley::config::RegistrationMode::Open;
        config.rate_limits.per_second = 1000.0;
        config.rate_limits.burst = 1000;
        config.listen.client = addr;
        if let Some(federation) = &federation {
            config.federation.listen = Some(federation.local_addr().expect("federation addr"));
        }
        adjust(&mut config);
        let server_name = config.server_name.to_string();
        let handle = Server::start_with(config, listener, federation).await.expect("server starts");
        Self {
            base: format!("http://{addr}"),
            server_name,
            http: reqwest::Client::builder().timeout(Duration::from_secs(60)).build().expect("client"),
            db: Some(db),
            handle: Some(handle),
        }
    }

    /// Stops the server gracefully and hands back its database.
    pub async fn stop(mut self) -> TestDb {
        if let Some(handle) = self.handle.take() {
            handle.shutdown().await.expect("clean shutdown");
        }
        self.db.take().expect("db")
    }

    /// Stops the server and drops its database.
    pub async fn finish(self) {
        self.stop().await.drop_db().await;
    }

    /// The server's services, for setting up state the API cannot (admin actions).
    pub fn services(&self) -> &parley::service::Services {
        &self.handle.as_ref().expect("running").services
    }

    /// Waits until the server holds a sync of `user_id` registered for wake-ups, so that
    /// whatever the test writes next must wake it (or be in the response it is building).
    pub async fn wait_for_long_poll(&self, user_id: &str) {
        let user_id = <&ruma::UserId>::try_from(user_id).expect("user ID");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !self.services().notifier.is_waiting(user_id) {
            assert!(std::time::Instant::now() < deadline, "no sync of {user_id} waiting");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a request and returns the status and the JSON body (`Null` when empty).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.http.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status();
        let text = response.text().await.expect("body");
        let json =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        (status, json)
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        self.call(Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, token, Some(body)).await
    }

    pub async fn put(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.call(Method::PUT, path, token, Some(body)).await
    }

    /// Registers `localpart` through the full UIA dance and returns the logged-in user.
    pub async fn register(&self, localpart: &str) -> TestUser {
        let (status, body) = self
            .post(
                "/_matrix/client/v3/register",
                None,
                json!({"username": localpart, "password": PASSWORD, "auth": {"type": "m.login.dummy"}}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "register {localpart}: {body}");
        TestUser {
            user_id: body["user_id"].as_str().expect("user_id").to_owned(),
            device_id: body["device_id"].as_str().expect("device_id").to_owned(),
            token: body["access_token"].as_str().expect("access_token").to_owned(),
            password: PASSWORD.to_owned(),
        }
    }

    /// Logs in again as `user`, making a new device.
    pub async fn login(&self, localpart: &str) -> TestUser {
        let (status, body) = self
            .post(
                "/_matrix/client/v3/login",
                None,
                json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": localpart}, "password": PASSWORD}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "login {localpart}: {body}");
        TestUser {
            user_id: body["user_id"].as_str().expect("user_id").to_owned(),
            device_id: body["device_id"].as_str().expect("device_id").to_owned(),
            token: body["access_token"].as_str().expect("access_token").to_owned(),
            password: PASSWORD.to_owned(),
        }
    }
}

/// Asserts a Matrix error: status, errcode, and an `error` message.
#[track_caller]
pub fn assert_error(result: &(StatusCode, Value), status: StatusCode, errcode: &str) {
    let (got_status, body) = result;
    assert_eq!(*got_status, status, "status for {body}");
    assert_eq!(body["errcode"], errcode, "errcode in {body}");
    assert!(body["error"].is_string(), "error message in {body}");
}

/// Percent-encodes a path segment (user IDs contain '@' and ':').
pub fn enc(segment: &str) -> String {
    url::form_urlencoded::byte_serialize(segment.as_bytes()).collect::<String>().replace('+', "%20")
}
