//! A user's push rules: the spec's server-default rules, with the user's changes, kept as the
//! `m.push_rules` account data event (so clients also receive them through `/sync`).

use ruma::{UserId, push::Ruleset};
use serde_json::value::to_raw_value;

use crate::{error::Result, service::account_data::AccountDataService};

pub const PUSH_RULES: &str = "m.push_rules";

/// The user's rule set: what they stored, or the server defaults for them.
pub async fn ruleset(account_data: &AccountDataService, user_id: &UserId) -> Result<Ruleset> {
    #[derive(serde::Deserialize)]
    struct Content {
        global: Ruleset,
    }
    match account_data.get(user_id, None, PUSH_RULES).await {
        Ok(raw) => match serde_json::from_str::<Content>(raw.get()) {
            Ok(content) => Ok(content.global),
            Err(_) => Ok(Ruleset::server_default(user_id)),
        },
        Err(_) => Ok(Ruleset::server_default(user_id)),
    }
}

/// Stores the user's rule set.
pub async fn store(account_data: &AccountDataService, user_id: &UserId, ruleset: &Ruleset) -> Result<()> {
    let content = to_raw_value(&serde_json::json!({ "global": ruleset }))?;
    account_data.store(user_id, None, PUSH_RULES, &content).await
}
