//! Accounts, sessions, devices, profiles and account data, over HTTP, on both backends.

use reqwest::StatusCode;
use serde_json::json;

use crate::harness::{Backend, PASSWORD, TestServer, assert_error, both_backends, enc};

both_backends!(
    discovery_endpoints,
    register_with_uiaa,
    register_rejects_bad_requests,
    registration_disabled_and_token_gated,
    login_variants_and_device_reuse,
    logout_and_logout_all,
    whoami_and_token_errors,
    change_password,
    deactivate_account,
    devices_crud,
    profiles,
    global_account_data,
    r0_prefix_is_served,
    accounts_survive_restart,
);

async fn discovery_endpoints(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let (status, body) = s.get("/_matrix/client/versions", None).await;
    assert_eq!(status, StatusCode::OK);
    let versions: Vec<&str> =
        body["versions"].as_array().expect("versions").iter().filter_map(|v| v.as_str()).collect();
    assert!(versions.contains(&"v1.1"), "{body}");

    let (status, body) = s.get("/.well-known/matrix/client", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["m.homeserver"]["base_url"], format!("{}/", s.base));

    let alice = s.register("alice").await;
    assert_error(&s.get("/_matrix/client/v3/capabilities", None).await, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
    let (status, body) = s.get("/_matrix/client/v3/capabilities", Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let caps = &body["capabilities"];
    // Capabilities at their default (enabled) may be omitted, as the spec allows.
    assert_ne!(caps["m.change_password"]["enabled"], false, "{caps}");
    assert_eq!(caps["m.3pid_changes"]["enabled"], false, "{caps}");
    assert_eq!(caps["m.room_versions"]["default"], "12");
    for version in ["10", "11", "12"] {
        assert_eq!(caps["m.room_versions"]["available"][version], "stable", "{caps}");
    }
    s.finish().await;
}

async fn register_with_uiaa(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    // No auth: the server answers with the flows and a session.
    let (status, body) =
        s.post("/_matrix/client/v3/register", None, json!({"username": "bob", "password": PASSWORD})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["flows"], json!([{"stages": ["m.login.dummy"]}]));
    let session = body["session"].as_str().expect("session").to_owned();
    // Completing the dummy stage in that session registers and logs in.
    let (status, body) = s
        .post(
            "/_matrix/client/v3/register",
            None,
            json!({"username": "bob", "password": PASSWORD, "initial_device_display_name": "Phone",
                   "auth": {"type": "m.login.dummy", "session": session}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user_id"], format!("@bob:{}", s.server_name));
    let token = body["access_token"].as_str().expect("token");
    assert!(token.len() >= 43, "at least 32 random bytes: {token}");
    let device = body["device_id"].as_str().expect("device").to_owned();
    let (status, whoami) = s.get("/_matrix/client/v3/account/whoami", Some(token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(whoami["device_id"], device.as_str());
    let (_, dev) = s.get(&format!("/_matrix/client/v3/devices/{device}"), Some(token)).await;
    assert_eq!(dev["display_name"], "Phone");
    // The session is spent.
    let reuse = s
        .post(
            "/_matrix/client/v3/register",
            None,
            json!({"username": "bob2", "password": PASSWORD, "auth": {"type": "m.login.dummy", "session": session}}),
        )
        .await;
    assert_eq!(reuse.0, StatusCode::BAD_REQUEST, "{}", reuse.1);
    // inhibit_login registers without a token.
    let (status, body) = s
        .post(
            "/_matrix/client/v3/register",
            None,
            json!({"username": "carol", "password": PASSWORD, "inhibit_login": true, "auth": {"type": "m.login.dummy"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.get("access_token").is_none(), "{body}");
    s.login("carol").await;
    // No username: a random one is picked.
    let (status, body) = s
        .post("/_matrix/client/v3/register", None, json!({"password": PASSWORD, "auth": {"type": "m.login.dummy"}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["user_id"].as_str().is_some_and(|u| u.starts_with('@')));
    s.finish().await;
}

async fn register_rejects_bad_requests(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    s.register("dave").await;
    let taken = s
        .post(
            "/_matrix/client/v3/register",
            None,
            json!({"username": "dave", "password": "x", "auth": {"type": "m.login.dummy"}}),
        )
        .await;
    assert_error(&taken, StatusCode::BAD_REQUEST, "M_USER_IN_USE");
    for bad in ["Dave", "da ve", "", "dave:other", "@dave"] {
        let result = s
            .post(
                "/_matrix/client/v3/register",
                None,
                json!({"username": bad, "password": "x", "auth": {"type": "m.login.dummy"}}),
            )
            .await;
        assert_error(&result, StatusCode::BAD_REQUEST, "M_INVALID_USERNAME");
    }
    let guest = s.post("/_matrix/client/v3/register?kind=guest", None, json!({})).await;
    assert_error(&guest, StatusCode::FORBIDDEN, "M_GUEST_ACCESS_FORBIDDEN");
    let no_password = s
        .post("/_matrix/client/v3/register", None, json!({"username": "erin", "auth": {"type": "m.login.dummy"}}))
        .await;
    assert_error(&no_password, StatusCode::BAD_REQUEST, "M_MISSING_PARAM");
    let wrong_stage = s
        .post(
            "/_matrix/client/v3/register",
            None,
            json!({"username": "erin", "password": "x", "auth": {"type": "m.login.registration_token", "token": "x"}}),
        )
        .await;
    assert_eq!(wrong_stage.0, StatusCode::UNAUTHORIZED, "a stage not offered fails: {}", wrong_stage.1);
    assert!(wrong_stage.1["errcode"].is_string() && wrong_stage.1["flows"].is_array(), "{}", wrong_stage.1);

    let (status, body) = s.get("/_matrix/client/v3/register/available?username=frank", None).await;
    assert_eq!((status, body["available"].clone()), (StatusCode::OK, json!(true)));
    assert_error(
        &s.get("/_matrix/client/v3/register/available?username=dave", None).await,
        StatusCode::BAD_REQUEST,
        "M_USER_IN_USE",
    );
    assert_error(
        &s.get("/_matrix/client/v3/register/available?username=Bad%20Name", None).await,
        StatusCode::BAD_REQUEST,
        "M_INVALID_USERNAME",
    );
    // Nothing was created along the way.
    let (status, _) =
        s.get(&format!("/_matrix/client/v3/profile/{}", enc(&format!("@erin:{}", s.server_name))), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    s.finish().await;
}

async fn registration_disabled_and_token_gated(backend: Backend) {
    use parley::config::RegistrationMode;
    let Some(s) = TestServer::spawn_with(backend, |c| c.registration.mode = RegistrationMode::Disabled).await else {
        return;
    };
    let result = s
        .post(
            "/_matrix/client/v3/register",
            None,
            json!({"username": "a", "password": "x", "auth": {"type": "m.login.dummy"}}),
        )
        .await;
    assert_error(&result, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let db = s.stop().await;

    // The same database, now token-gated; a token is made the way `parley registration-token create` makes one.
    let s = TestServer::start_on(db, |c| c.registration.mode = RegistrationMode::Token).await;
    let token = "tok_only_once";
    s_create_token(&s, token, Some(1)).await;
    let (status, body) =
        s.get(&format!("/_matrix/client/v1/register/m.login.registration_token/validity?token={token}"), None).await;
    assert_eq!((status, body["valid"].clone()), (StatusCode::OK, json!(true)));
    let (_, body) = s.get("/_matrix/client/v1/register/m.login.registration_token/validity?token=nope", None).await;
    assert_eq!(body["valid"], false);

    let (status, body) =
        s.post("/_matrix/client/v3/register", None, json!({"username": "tina", "password": PASSWORD})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["flows"], json!([{"stages": ["m.login.registration_token"]}]));
    let session = body["session"].as_str().expect("session");
    // A wrong token fails the stage and says why, keeping the session.
    let (status, body) = s
        .post(
            "/_matrix/client/v3/register",
            None,
            json!({"username": "tina", "password": PASSWORD, "auth": {"type": "m.login.registration_token", "token": "wrong", "session": session}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["errcode"], "M_FORBIDDEN", "{body}");
    let (status, body) = s
        .post(
            "/_matrix/client/v3/register",
            None,
            json!({"username": "tina", "password": PASSWORD, "auth": {"type": "m.login.registration_token", "token": token, "session": session}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The token allowed one use: it is now spent.
    let (_, body) =
        s.get(&format!("/_matrix/client/v1/register/m.login.registration_token/validity?token={token}"), None).await;
    assert_eq!(body["valid"], false);
    let (status, _) = s
        .post(
            "/_matrix/client/v3/register",
            None,
            json!({"username": "tom", "password": PASSWORD, "auth": {"type": "m.login.registration_token", "token": token}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // The dummy stage is not offered when tokens are required.
    let (status, _) = s
        .post(
            "/_matrix/client/v3/register",
            None,
            json!({"username": "tom", "password": PASSWORD, "auth": {"type": "m.login.dummy"}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    s.finish().await;
}

/// Makes a registration token the way `parley registration-token create` does.
async fn s_create_token(s: &TestServer, token: &str, uses: Option<i64>) {
    s.services()
        .storage
        .registration
        .create_token(
            &parley::service::secrets::sha256(token),
            parley::storage::RegistrationToken {
                prefix: token[..4].to_owned(),
                uses_allowed: uses,
                completed: 0,
                expiry_ts: None,
                created_at: 0,
            },
        )
        .await
        .expect("create token");
}

async fn login_variants_and_device_reuse(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let alice = s.register("alice").await;
    let (status, body) = s.get("/_matrix/client/v3/login", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["flows"][0]["type"], "m.login.password");

    // Identifier by localpart, by full user ID, by the deprecated `user` field, case-insensitively.
    for login in [
        json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": PASSWORD}),
        json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": alice.user_id}, "password": PASSWORD}),
        json!({"type": "m.login.password", "user": "alice", "password": PASSWORD}),
        json!({"type": "m.login.password", "user": "Alice", "password": PASSWORD}),
    ] {
        let (status, body) = s.post("/_matrix/client/v3/login", None, login.clone()).await;
        assert_eq!(status, StatusCode::OK, "{login} -> {body}");
        assert_eq!(body["user_id"], alice.user_id.as_str());
        assert_ne!(body["device_id"], alice.device_id.as_str(), "each login makes a new device");
    }
    let (_, devices) = s.get("/_matrix/client/v3/devices", Some(&alice.token)).await;
    assert_eq!(devices["devices"].as_array().map(Vec::len), Some(5));

    // Logging in with an existing device_id keeps the device and replaces its token.
    let (status, body) = s
        .post(
            "/_matrix/client/v3/login",
            None,
            json!({"type": "m.login.password", "user": "alice", "password": PASSWORD, "device_id": alice.device_id}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["device_id"], alice.device_id.as_str());
    assert_error(
        &s.get("/_matrix/client/v3/account/whoami", Some(&alice.token)).await,
        StatusCode::UNAUTHORIZED,
        "M_UNKNOWN_TOKEN",
    );
    let new_token = body["access_token"].as_str().expect("token");
    assert_eq!(s.get("/_matrix/client/v3/account/whoami", Some(new_token)).await.0, StatusCode::OK);
    let (_, devices) = s.get("/_matrix/client/v3/devices", Some(new_token)).await;
    assert_eq!(devices["devices"].as_array().map(Vec::len), Some(5));

    // Failures.
    let wrong = s
        .post(
            "/_matrix/client/v3/login",
            None,
            json!({"type": "m.login.password", "user": "alice", "password": "nope"}),
        )
        .await;
    assert_error(&wrong, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let unknown = s
        .post("/_matrix/client/v3/login", None, json!({"type": "m.login.password", "user": "nobody", "password": "x"}))
        .await;
    assert_error(&unknown, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let foreign = s
        .post(
            "/_matrix/client/v3/login",
            None,
            json!({"type": "m.login.password", "user": "@alice:elsewhere.org", "password": PASSWORD}),
        )
        .await;
    assert_error(&foreign, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let bad_type = s.post("/_matrix/client/v3/login", None, json!({"type": "m.login.token", "token": "x"})).await;
    assert_error(&bad_type, StatusCode::BAD_REQUEST, "M_UNKNOWN");
    let no_type = s.post("/_matrix/client/v3/login", None, json!({"user": "alice", "password": PASSWORD})).await;
    assert_error(&no_type, StatusCode::BAD_REQUEST, "M_BAD_JSON");
    s.finish().await;
}

async fn logout_and_logout_all(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let a1 = s.register("alice").await;
    let a2 = s.login("alice").await;
    let a3 = s.login("alice").await;
    let (status, _) = s.post("/_matrix/client/v3/logout", Some(&a1.token), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_error(
        &s.get("/_matrix/client/v3/account/whoami", Some(&a1.token)).await,
        StatusCode::UNAUTHORIZED,
        "M_UNKNOWN_TOKEN",
    );
    let (_, devices) = s.get("/_matrix/client/v3/devices", Some(&a2.token)).await;
    let ids: Vec<&str> =
        devices["devices"].as_array().expect("devices").iter().filter_map(|d| d["device_id"].as_str()).collect();
    assert!(!ids.contains(&a1.device_id.as_str()) && ids.len() == 2, "logout deletes the device: {ids:?}");
    let (status, _) = s.post("/_matrix/client/v3/logout/all", Some(&a2.token), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    for user in [&a2, &a3] {
        assert_error(
            &s.get("/_matrix/client/v3/account/whoami", Some(&user.token)).await,
            StatusCode::UNAUTHORIZED,
            "M_UNKNOWN_TOKEN",
        );
    }
    let a4 = s.login("alice").await;
    let (_, devices) = s.get("/_matrix/client/v3/devices", Some(&a4.token)).await;
    assert_eq!(devices["devices"].as_array().map(Vec::len), Some(1));
    s.finish().await;
}

async fn whoami_and_token_errors(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let alice = s.register("alice").await;
    let (status, body) = s.get("/_matrix/client/v3/account/whoami", Some(&alice.token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["user_id"], alice.user_id.as_str());
    assert_eq!(body["device_id"], alice.device_id.as_str());
    assert_ne!(body["is_guest"], true);
    // The deprecated query parameter still works.
    let (status, _) = s.get(&format!("/_matrix/client/v3/account/whoami?access_token={}", alice.token), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_error(&s.get("/_matrix/client/v3/account/whoami", None).await, StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN");
    let bad = s.get("/_matrix/client/v3/account/whoami", Some("plt_not_a_real_token")).await;
    assert_error(&bad, StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN");
    assert_eq!(bad.1["soft_logout"], false);
    s.finish().await;
}

async fn change_password(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let main = s.register("alice").await;
    let other = s.login("alice").await;
    let path = "/_matrix/client/v3/account/password";
    let (status, body) = s.post(path, Some(&main.token), json!({"new_password": "new pass"})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["flows"], json!([{"stages": ["m.login.password"]}]));
    let session = body["session"].as_str().expect("session");
    let wrong = json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": "bad", "session": session});
    let (status, body) = s.post(path, Some(&main.token), json!({"new_password": "new pass", "auth": wrong})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["errcode"], "M_FORBIDDEN", "{body}");
    // Someone else's password does not authorise this account's change.
    s.register("mallory").await;
    let (status, body) = s
        .post(
            path,
            Some(&main.token),
            json!({"new_password": "new pass", "auth": {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "mallory"}, "password": PASSWORD, "session": session}}),
        )
        .await;
    assert_eq!((status, body["errcode"].clone()), (StatusCode::UNAUTHORIZED, json!("M_FORBIDDEN")), "{body}");
    let right = json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": PASSWORD, "session": session});
    let (status, body) = s.post(path, Some(&main.token), json!({"new_password": "new pass", "auth": right})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // This device stays logged in, the other is logged out; only the new password works.
    assert_eq!(s.get("/_matrix/client/v3/account/whoami", Some(&main.token)).await.0, StatusCode::OK);
    assert_error(
        &s.get("/_matrix/client/v3/account/whoami", Some(&other.token)).await,
        StatusCode::UNAUTHORIZED,
        "M_UNKNOWN_TOKEN",
    );
    let old = s
        .post(
            "/_matrix/client/v3/login",
            None,
            json!({"type": "m.login.password", "user": "alice", "password": PASSWORD}),
        )
        .await;
    assert_error(&old, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    let new = s
        .post(
            "/_matrix/client/v3/login",
            None,
            json!({"type": "m.login.password", "user": "alice", "password": "new pass"}),
        )
        .await;
    assert_eq!(new.0, StatusCode::OK);
    s.finish().await;
}

async fn deactivate_account(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let alice = s.register("alice").await;
    let path = "/_matrix/client/v3/account/deactivate";
    let (status, body) = s.post(path, Some(&alice.token), json!({})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let auth = json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": PASSWORD, "session": body["session"]});
    let (status, body) = s.post(path, Some(&alice.token), json!({"auth": auth})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["id_server_unbind_result"], "no-support");
    assert_error(
        &s.get("/_matrix/client/v3/account/whoami", Some(&alice.token)).await,
        StatusCode::UNAUTHORIZED,
        "M_UNKNOWN_TOKEN",
    );
    let login = s
        .post(
            "/_matrix/client/v3/login",
            None,
            json!({"type": "m.login.password", "user": "alice", "password": PASSWORD}),
        )
        .await;
    assert_eq!(login.0, StatusCode::FORBIDDEN);
    let (status, _) = s.get(&format!("/_matrix/client/v3/profile/{}", enc(&alice.user_id)), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "the profile is erased");
    let again = s
        .post(
            "/_matrix/client/v3/register",
            None,
            json!({"username": "alice", "password": "x", "auth": {"type": "m.login.dummy"}}),
        )
        .await;
    assert_error(&again, StatusCode::BAD_REQUEST, "M_USER_IN_USE");
    s.finish().await;
}

async fn devices_crud(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let a1 = s.register("alice").await;
    let a2 = s.login("alice").await;
    let bob = s.register("bob").await;
    let dev = |id: &str| format!("/_matrix/client/v3/devices/{id}");

    let (status, body) = s.put(&dev(&a2.device_id), Some(&a1.token), json!({"display_name": "Laptop"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, body) = s.get(&dev(&a2.device_id), Some(&a1.token)).await;
    assert_eq!(body["display_name"], "Laptop");
    assert!(body["last_seen_ts"].is_u64(), "{body}");
    // Another user's device is invisible.
    assert_error(&s.get(&dev(&a1.device_id), Some(&bob.token)).await, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    assert_error(
        &s.put(&dev("NOPE"), Some(&a1.token), json!({"display_name": "x"})).await,
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
    );

    // Deleting needs the password.
    let (status, body) = s.call(reqwest::Method::DELETE, &dev(&a2.device_id), Some(&a1.token), Some(json!({}))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let auth = json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": PASSWORD, "session": body["session"]});
    let (status, body) =
        s.call(reqwest::Method::DELETE, &dev(&a2.device_id), Some(&a1.token), Some(json!({"auth": auth}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_error(
        &s.get("/_matrix/client/v3/account/whoami", Some(&a2.token)).await,
        StatusCode::UNAUTHORIZED,
        "M_UNKNOWN_TOKEN",
    );
    assert_error(&s.get(&dev(&a2.device_id), Some(&a1.token)).await, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let missing = s.call(reqwest::Method::DELETE, &dev("NOPE"), Some(&a1.token), Some(json!({}))).await;
    assert_error(&missing, StatusCode::NOT_FOUND, "M_NOT_FOUND");

    // delete_devices, including an unknown ID, which is ignored.
    let a3 = s.login("alice").await;
    let a4 = s.login("alice").await;
    let ids = json!([a3.device_id, a4.device_id, "UNKNOWN"]);
    let (status, body) = s.post("/_matrix/client/v3/delete_devices", Some(&a1.token), json!({"devices": ids})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let auth = json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": PASSWORD, "session": body["session"]});
    let (status, body) =
        s.post("/_matrix/client/v3/delete_devices", Some(&a1.token), json!({"devices": ids, "auth": auth})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, body) = s.get("/_matrix/client/v3/devices", Some(&a1.token)).await;
    let ids: Vec<&str> =
        body["devices"].as_array().expect("devices").iter().filter_map(|d| d["device_id"].as_str()).collect();
    assert_eq!(ids, vec![a1.device_id.as_str()]);
    // Bob's devices were never touched.
    assert_eq!(s.get("/_matrix/client/v3/account/whoami", Some(&bob.token)).await.0, StatusCode::OK);
    s.finish().await;
}

async fn profiles(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let profile = format!("/_matrix/client/v3/profile/{}", enc(&alice.user_id));
    let (status, body) = s.get(&profile, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["displayname"], "alice", "the display name starts as the localpart");

    let (status, body) =
        s.put(&format!("{profile}/displayname"), Some(&alice.token), json!({"displayname": "Alice A."})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = s
        .put(&format!("{profile}/avatar_url"), Some(&alice.token), json!({"avatar_url": "mxc://example.org/abc"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = s.put(&format!("{profile}/m.tz"), Some(&alice.token), json!({"m.tz": "Europe/Paris"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, body) = s.get(&profile, Some(&bob.token)).await;
    assert_eq!(body, json!({"displayname": "Alice A.", "avatar_url": "mxc://example.org/abc", "m.tz": "Europe/Paris"}));
    let (_, body) = s.get(&format!("{profile}/displayname"), None).await;
    assert_eq!(body, json!({"displayname": "Alice A."}));

    // Only the owner may change a profile.
    let forbidden = s.put(&format!("{profile}/displayname"), Some(&bob.token), json!({"displayname": "pwned"})).await;
    assert_error(&forbidden, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    assert_error(
        &s.put(&format!("{profile}/displayname"), None, json!({"displayname": "x"})).await,
        StatusCode::UNAUTHORIZED,
        "M_MISSING_TOKEN",
    );
    let (_, body) = s.get(&format!("{profile}/displayname"), None).await;
    assert_eq!(body["displayname"], "Alice A.");

    // Removing a field.
    let (status, _) = s.call(reqwest::Method::DELETE, &format!("{profile}/m.tz"), Some(&alice.token), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_error(&s.get(&format!("{profile}/m.tz"), None).await, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let nobody = format!("/_matrix/client/v3/profile/{}", enc(&format!("@nobody:{}", s.server_name)));
    assert_error(&s.get(&nobody, None).await, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    // A body that does not match the field in the path is rejected.
    let mismatch =
        s.put(&format!("{profile}/displayname"), Some(&alice.token), json!({"avatar_url": "mxc://x/y"})).await;
    assert_eq!(mismatch.0, StatusCode::BAD_REQUEST, "{}", mismatch.1);
    s.finish().await;
}

async fn global_account_data(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let alice = s.register("alice").await;
    let bob = s.register("bob").await;
    let path = format!("/_matrix/client/v3/user/{}/account_data/org.example.prefs", enc(&alice.user_id));
    assert_error(&s.get(&path, Some(&alice.token)).await, StatusCode::NOT_FOUND, "M_NOT_FOUND");
    let (status, _) = s.put(&path, Some(&alice.token), json!({"theme": "dark"})).await;
    assert_eq!(status, StatusCode::OK);
    let (_, body) = s.get(&path, Some(&alice.token)).await;
    assert_eq!(body, json!({"theme": "dark"}));
    let (status, _) = s.put(&path, Some(&alice.token), json!({"theme": "light", "n": 2})).await;
    assert_eq!(status, StatusCode::OK);
    let (_, body) = s.get(&path, Some(&alice.token)).await;
    assert_eq!(body, json!({"theme": "light", "n": 2}));
    // Private to its owner.
    assert_error(&s.get(&path, Some(&bob.token)).await, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    assert_error(&s.put(&path, Some(&bob.token), json!({})).await, StatusCode::FORBIDDEN, "M_FORBIDDEN");
    // Server-managed types and non-objects are refused.
    let push_rules = format!("/_matrix/client/v3/user/{}/account_data/m.push_rules", enc(&alice.user_id));
    assert_error(
        &s.put(&push_rules, Some(&alice.token), json!({})).await,
        StatusCode::METHOD_NOT_ALLOWED,
        "M_BAD_JSON",
    );
    assert_error(&s.put(&path, Some(&alice.token), json!([1, 2])).await, StatusCode::BAD_REQUEST, "M_BAD_JSON");
    let (_, body) = s.get(&path, Some(&alice.token)).await;
    assert_eq!(body, json!({"theme": "light", "n": 2}), "a refused write changes nothing");
    s.finish().await;
}

async fn r0_prefix_is_served(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let (status, body) = s
        .post(
            "/_matrix/client/r0/register",
            None,
            json!({"username": "rita", "password": PASSWORD, "auth": {"type": "m.login.dummy"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = s
        .post(
            "/_matrix/client/r0/login",
            None,
            json!({"type": "m.login.password", "user": "rita", "password": PASSWORD}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let token = body["access_token"].as_str().expect("token");
    let (status, body) = s.get("/_matrix/client/r0/account/whoami", Some(token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    s.finish().await;
}

async fn accounts_survive_restart(backend: Backend) {
    let Some(s) = TestServer::spawn(backend).await else { return };
    let alice = s.register("alice").await;
    let path = format!("/_matrix/client/v3/user/{}/account_data/org.example.k", enc(&alice.user_id));
    assert_eq!(s.put(&path, Some(&alice.token), json!({"v": 1})).await.0, StatusCode::OK);
    let db = s.stop().await;
    let s = TestServer::start_on(db, |_| {}).await;
    // The acknowledged writes are all there: account, token, account data.
    assert_eq!(s.get("/_matrix/client/v3/account/whoami", Some(&alice.token)).await.0, StatusCode::OK);
    assert_eq!(s.get(&path, Some(&alice.token)).await.1, json!({"v": 1}));
    s.login("alice").await;
    s.finish().await;
}
