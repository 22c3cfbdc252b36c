//! A user's push rules: the spec's server-default rules, with the user's changes, kept as the
//! `m.push_rules` account data event (so clients also receive them through `/sync`).

use ruma::{UserId, push::Ruleset};
use serde_json::value::to_raw_value;

use crate::{error::Result, service::account_data::AccountDataService};

pub const PUSH_RULES: &str = "m.push_rules";

/// The user's rule set: what they stored (once they changed anything), or the server
/// defaults for them.
pub async fn load(account_data: &AccountDataService, user_id: &UserId) -> Result<Ruleset> {
    #[derive(serde::Deserialize)]
    struct Content {
        global: Ruleset,
    }
    match account_data.find(user_id, None, PUSH_RULES).await? {
        // Only the server writes m.push_rules, from a parsed rule set: if it does not parse
        // back, that is an internal error (logged), not a user without rules.
        Some(raw) => Ok(serde_json::from_str::<Content>(raw.get())
            .map_err(|e| anyhow::Error::new(e).context(format!("stored push rules of {user_id}")))?
            .global),
        None => Ok(Ruleset::server_default(user_id)),
    }
}

/// Stores the user's rule set.
pub async fn store(account_data: &AccountDataService, user_id: &UserId, ruleset: &Ruleset) -> Result<()> {
    let content = to_raw_value(&serde_json::json!({ "global": ruleset }))?;
    account_data.store(user_id, None, PUSH_RULES, &content).await
}

use ruma::{
    api::client::push::PushRule,
    push::{Action, InsertPushRuleError, NewPushRule, RemovePushRuleError, RuleKind},
};

use super::PushService;
use crate::error::Error;

fn not_found() -> Error {
    Error::not_found("Push rule not found")
}

impl PushService {
    /// One rule of the user's set.
    pub async fn rule(
        &self,
        account_data: &AccountDataService,
        user_id: &UserId,
        kind: RuleKind,
        rule_id: &str,
    ) -> Result<PushRule> {
        let ruleset = self.ruleset(account_data, user_id).await?;
        let rule = ruleset.get(kind, rule_id).ok_or_else(not_found)?;
        Ok(rule.to_owned().into())
    }

    /// Adds or replaces a user-defined rule, placed relative to `before` / `after` if given.
    pub async fn put_rule(
        &self,
        account_data: &AccountDataService,
        user_id: &UserId,
        rule: NewPushRule,
        before: Option<&str>,
        after: Option<&str>,
    ) -> Result<()> {
        let mut ruleset = (*self.ruleset(account_data, user_id).await?).clone();
        ruleset.insert(rule, after, before).map_err(|e| match e {
            InsertPushRuleError::UnknownRuleId => Error::not_found("The rule named in before/after does not exist"),
            other => Error::invalid_param(other.to_string()),
        })?;
        self.store_ruleset(account_data, user_id, ruleset).await
    }

    /// Removes a user-defined rule; server-default rules can only be disabled.
    pub async fn delete_rule(
        &self,
        account_data: &AccountDataService,
        user_id: &UserId,
        kind: RuleKind,
        rule_id: &str,
    ) -> Result<()> {
        let mut ruleset = (*self.ruleset(account_data, user_id).await?).clone();
        ruleset.remove(kind, rule_id).map_err(|e| match e {
            RemovePushRuleError::NotFound => not_found(),
            other => Error::invalid_param(other.to_string()),
        })?;
        self.store_ruleset(account_data, user_id, ruleset).await
    }

    pub async fn set_rule_enabled(
        &self,
        account_data: &AccountDataService,
        user_id: &UserId,
        kind: RuleKind,
        rule_id: &str,
        enabled: bool,
    ) -> Result<()> {
        let mut ruleset = (*self.ruleset(account_data, user_id).await?).clone();
        ruleset.set_enabled(kind, rule_id, enabled).map_err(|_| not_found())?;
        self.store_ruleset(account_data, user_id, ruleset).await
    }

    pub async fn set_rule_actions(
        &self,
        account_data: &AccountDataService,
        user_id: &UserId,
        kind: RuleKind,
        rule_id: &str,
        actions: Vec<Action>,
    ) -> Result<()> {
        let mut ruleset = (*self.ruleset(account_data, user_id).await?).clone();
        ruleset.set_actions(kind, rule_id, actions).map_err(|_| not_found())?;
        self.store_ruleset(account_data, user_id, ruleset).await
    }
}
