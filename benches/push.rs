//! Push rule evaluation, the per-recipient cost of every event: ruma's evaluator with the
//! spec's server-default rules, as `PushService::evaluate_event` calls it.
//!
//! - `push/message`: a plain `m.room.message` in a room of 100, which passes every override,
//!   content and room rule before `.m.rule.message` matches;
//! - `push/mention`: the same with an `m.mentions` of the recipient (`.m.rule.is_user_mention`,
//!   an early override that highlights);
//! - `push/encrypted_one_to_one`: an `m.room.encrypted` event in a room of two;
//! - `push/message_fan_out_99`: one message evaluated for each of the other 99 members, with
//!   each member's own ruleset and display name (what one group message costs).
//!
//! The room's power levels are left out of the context (`power_levels: None`): they decide
//! only whether `@room` may notify, which these events do not use.
//!
//! `cargo bench --bench push`

#![allow(clippy::unwrap_used, reason = "benchmark setup: a failure should stop it loudly")]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use futures::executor::block_on;
use ruma::{
    OwnedUserId, UInt,
    events::AnySyncTimelineEvent,
    owned_room_id,
    push::{Action, PushConditionRoomCtx, Ruleset},
    serde::Raw,
};
use serde_json::{Value, json};

fn event(kind: &str, content: Value) -> Raw<AnySyncTimelineEvent> {
    let event = json!({
        "type": kind,
        "event_id": "$Rqnc-F-dvnEYJTyHq_iKxU2bZ1CI92-kuZq3a5lr5Zg",
        "sender": "@alice:example.org",
        "origin_server_ts": 1_700_000_000_000_u64,
        "content": content,
    });
    Raw::from_json(serde_json::value::to_raw_value(&event).unwrap())
}

fn context(user: &OwnedUserId, members: u32) -> PushConditionRoomCtx {
    let name = user.localpart().to_owned();
    PushConditionRoomCtx::new(owned_room_id!("!room:example.org"), UInt::from(members), user.clone(), name)
}

fn bench_push(c: &mut Criterion) {
    let bob: OwnedUserId = "@bob:example.org".try_into().unwrap();
    let rules = Ruleset::server_default(&bob);
    let message = event(
        "m.room.message",
        json!({"msgtype": "m.text", "body": "The quarterly numbers are in, see the attached sheet"}),
    );
    let mention = event(
        "m.room.message",
        json!({"msgtype": "m.text", "body": "bob: have a look", "m.mentions": {"user_ids": ["@bob:example.org"]}}),
    );
    let encrypted = event(
        "m.room.encrypted",
        json!({"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AwgAEnAC...", "device_id": "ABCDEF",
               "sender_key": "IlRMeOPX2e0MurIyfWEucYBRVOEEUMrOHqn/8mLqMjA", "session_id": "X3lUlvLELLYxeTx4yOVu6UDpasGEVO0Jbu+QFnm0cKQ"}),
    );
    let group = context(&bob, 100);
    let pair = context(&bob, 2);

    // The rules the benchmarks are meant to reach, checked once so that a change of rules
    // cannot silently turn them into something cheaper.
    let actions = |event, ctx| block_on(rules.get_actions(event, ctx)).to_vec();
    assert!(actions(&message, &group).iter().any(Action::should_notify), ".m.rule.message notifies");
    assert!(!actions(&message, &group).iter().any(Action::is_highlight), "a plain message does not highlight");
    assert!(actions(&mention, &group).iter().any(Action::is_highlight), ".m.rule.is_user_mention highlights");
    assert!(actions(&encrypted, &pair).iter().any(Action::should_notify), "encrypted 1:1 notifies");

    c.bench_function("push/message", |b| {
        b.iter(|| block_on(rules.get_actions(black_box(&message), black_box(&group))).len());
    });
    c.bench_function("push/mention", |b| {
        b.iter(|| block_on(rules.get_actions(black_box(&mention), black_box(&group))).len());
    });
    c.bench_function("push/encrypted_one_to_one", |b| {
        b.iter(|| block_on(rules.get_actions(black_box(&encrypted), black_box(&pair))).len());
    });

    let members: Vec<(Ruleset, PushConditionRoomCtx)> = (0..99)
        .map(|i| {
            let user: OwnedUserId = format!("@member{i}:example.org").try_into().unwrap();
            (Ruleset::server_default(&user), context(&user, 100))
        })
        .collect();
    c.bench_function("push/message_fan_out_99", |b| {
        b.iter(|| {
            members
                .iter()
                .map(|(rules, ctx)| block_on(rules.get_actions(black_box(&message), ctx)).len())
                .sum::<usize>()
        });
    });
}

criterion_group!(benches, bench_push);
criterion_main!(benches);
