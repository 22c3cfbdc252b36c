//! The `parley` binary itself: admin commands, config errors and graceful shutdown.

use std::{
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use reqwest::StatusCode;
use serde_json::json;

use crate::harness::{Backend, TestServer, both_backends};

both_backends!(admin_commands_then_serve, sigterm_shuts_down_cleanly);

fn parley(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_parley"))
        .args(["--config", dir.join("config.toml").to_str().expect("utf-8 path")])
        .args(args)
        .env_remove("PARLEY_DATABASE__URL")
        .output()
        .expect("run parley")
}

fn write_config(dir: &Path, db_url: &str, extra: &str) {
    std::fs::write(
        dir.join("config.toml"),
        format!(
            "server_name = \"localhost\"\n[listen]\nclient = \"127.0.0.1:0\"\n[database]\nurl = \"{db_url}\"\n{extra}\n"
        ),
    )
    .expect("write config");
}

async fn admin_commands_then_serve(backend: Backend) {
    let Some(db) = crate::harness::TestDb::create(backend).await else { return };
    let dir = db.dir();
    write_config(&dir, &db.url, "[registration]\nmode = \"token\"");

    let out = parley(&dir, &["migrate"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = parley(&dir, &["user", "create", "admin", "--password", "s3cret", "--admin"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("@admin:localhost"));
    let out = parley(&dir, &["user", "create", "admin", "--password", "again"]);
    assert!(!out.status.success(), "a second account with the same name is refused");
    let out = parley(&dir, &["user", "create", "victim", "--password", "pw"]);
    assert!(out.status.success());
    let out = parley(&dir, &["user", "reset-password", "victim", "--random"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let new_password = stdout.trim().rsplit(' ').next().expect("password").to_owned();
    let out = parley(&dir, &["registration-token", "create", "--uses", "1"]);
    assert!(out.status.success());
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(token.len() >= 20, "{token}");
    let out = parley(&dir, &["registration-token", "list"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("used 0/1"));

    // A server on the same database sees all of it.
    let s = TestServer::start_on(db, |c| c.registration.mode = parley::config::RegistrationMode::Token).await;
    let login = |user: &str, password: &str| {
        s.post(
            "/_matrix/client/v3/login",
            None,
            json!({"type": "m.login.password", "user": user, "password": password}),
        )
    };
    assert_eq!(login("admin", "s3cret").await.0, StatusCode::OK);
    assert_eq!(login("victim", "pw").await.0, StatusCode::FORBIDDEN);
    assert_eq!(login("victim", &new_password).await.0, StatusCode::OK);
    let (status, body) = s
        .post(
            "/_matrix/client/v3/register",
            None,
            json!({"username": "newbie", "password": "pw", "auth": {"type": "m.login.registration_token", "token": token}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let db = s.stop().await;

    let out = parley(&dir, &["user", "deactivate", "victim"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let s = TestServer::start_on(db, |_| {}).await;
    let (status, body) = s
        .post(
            "/_matrix/client/v3/login",
            None,
            json!({"type": "m.login.password", "user": "victim", "password": new_password}),
        )
        .await;
    assert_eq!((status, body["errcode"].clone()), (StatusCode::FORBIDDEN, json!("M_USER_DEACTIVATED")));
    s.finish().await;
}

async fn sigterm_shuts_down_cleanly(backend: Backend) {
    let Some(db) = crate::harness::TestDb::create(backend).await else { return };
    let dir = db.dir();
    write_config(&dir, &db.url, "[registration]\nmode = \"open\"");
    let mut child = Command::new(env!("CARGO_BIN_EXE_parley"))
        .args(["--config", dir.join("config.toml").to_str().expect("utf-8"), "serve"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let addr = loop {
        let line = lines.next().expect("server logs before exiting").expect("line");
        if let Some(rest) = line.split("addr=").nth(1) {
            break rest.split_whitespace().next().expect("addr").to_owned();
        }
    };
    let http = reqwest::Client::new();
    let versions = http.get(format!("http://{addr}/_matrix/client/versions")).send().await.expect("up");
    assert_eq!(versions.status(), StatusCode::OK);

    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(exit) = child.try_wait().expect("wait") {
            break exit;
        }
        assert!(Instant::now() < deadline, "server did not stop after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "clean exit: {exit:?}");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(rest.iter().any(|l| l.contains("stopped")), "{rest:?}");
    db.drop_db().await;
}

#[test]
fn invalid_config_names_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (config, key) in [
        ("server_name = \"localhost\"\n[database]\nurl = \"mysql://x\"\n", "database.url"),
        ("server_name = \"localhost\"\n[listen]\nclient = \"not an address\"\n", "listen.client"),
        ("server_name = \"localhost\"\n[registration]\nmode = \"sometimes\"\n", "registration.mode"),
        ("server_name = \"bad name!\"\n", "server_name"),
        ("server_name = \"localhost\"\nunknown_key = 1\n", "unknown_key"),
        ("server_name = \"localhost\"\n[rooms]\ndefault_version = \"1\"\n", "rooms.default_version"),
    ] {
        std::fs::write(dir.path().join("config.toml"), config).expect("write");
        let out = parley(dir.path(), &["migrate"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{config} -> {stderr}");
        assert!(stderr.contains(key), "`{key}` named in: {stderr}");
    }
    // A missing explicit config file is an error too.
    let out = Command::new(env!("CARGO_BIN_EXE_parley"))
        .args(["--config", "/nonexistent/parley.toml", "migrate"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn environment_overrides_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("env.db");
    write_config(dir.path(), "postgres://unreachable.invalid/x", "");
    let out = Command::new(env!("CARGO_BIN_EXE_parley"))
        .args(["--config", dir.path().join("config.toml").to_str().expect("utf-8"), "migrate"])
        .env("PARLEY_DATABASE__URL", format!("sqlite://{}", db.display()))
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(db.exists(), "the SQLite file named by the environment was created");
}
