//! Real Matrix client libraries against a real Parley.
//!
//! The clients live in `tests/clients/`; the first test to need one installs it with
//! `npm ci` (from the committed lockfile), so a fresh checkout needs nothing by hand.

use std::{path::PathBuf, process::Command};

use serde_json::Value;
use tokio::sync::OnceCell;

use crate::harness::{Backend, TestServer, both_backends};

both_backends!(js_sdk_registers_and_logs_in, js_sdk_chats_live_through_sync);

fn js_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/js")
}

/// Installs the JavaScript clients once per test run.
pub async fn ensure_js_clients() {
    static INSTALLED: OnceCell<()> = OnceCell::const_new();
    INSTALLED
        .get_or_init(|| async {
            let dir = js_dir();
            if dir.join("node_modules/matrix-js-sdk").exists() {
                return;
            }
            let status = tokio::process::Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(&dir)
                .status()
                .await
                .expect("npm is needed for the real-client tests");
            assert!(status.success(), "npm ci in {}", dir.display());
        })
        .await;
}

/// Runs `script` with node against `base_url` and parses the JSON line it prints last.
pub async fn run_js(script: &str, args: &[&str]) -> Value {
    ensure_js_clients().await;
    let dir = js_dir();
    let script = dir.join(script);
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let output =
        tokio::task::spawn_blocking(move || Command::new("node").arg(script).args(args).current_dir(dir).output())
            .await
            .expect("join")
            .expect("node is needed for the real-client tests");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "client failed:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let last = stdout.lines().rev().find(|l| l.starts_with('{')).expect("a JSON result line");
    serde_json::from_str(last).expect("JSON result")
}

async fn js_sdk_registers_and_logs_in(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let result = run_js("register_login.mjs", &[&s.base]).await;
    let user_id = result["registered_user_id"].as_str().expect("registered");
    assert!(user_id.ends_with(&format!(":{}", s.server_name)), "{result}");
    assert_eq!(result["login_user_id"], user_id);
    assert_eq!(result["whoami_user_id"], user_id);
    assert_eq!(result["displayname"], "JS Client");
    s.finish().await;
}

async fn js_sdk_chats_live_through_sync(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let result = run_js("live_chat.mjs", &[&s.base]).await;
    let (dm, group) = (result["dm"].as_str().expect("dm"), result["group"].as_str().expect("group"));
    let received = |who: &str, room: &str| -> Vec<String> {
        result[who]
            .as_array()
            .expect("received")
            .iter()
            .filter(|m| m["room"] == room)
            .filter_map(|m| m["body"].as_str().map(str::to_owned))
            .collect()
    };
    assert!(received("bob", dm).contains(&"hello bob, privately".to_owned()), "{result}");
    assert!(received("bob", group).contains(&"hello everyone".to_owned()), "{result}");
    assert!(received("carol", group).contains(&"hello everyone".to_owned()), "{result}");
    assert!(received("carol", dm).is_empty(), "carol is not in the DM: {result}");
    assert!(received("alice", dm).contains(&"hi alice".to_owned()), "{result}");
    assert!(received("alice", group).contains(&"hi all".to_owned()), "{result}");
    s.finish().await;
}
