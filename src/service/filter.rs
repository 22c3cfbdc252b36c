//! Filters: the ones clients upload (`POST /user/{userId}/filter`) and name in `/sync`, and
//! event filters (the spec's `RoomEventFilter`) applied to events in memory.

use ruma::{
    UserId,
    api::client::{
        filter::{FilterDefinition, RoomEventFilter, UrlFilter},
        sync::sync_events::v3::Filter,
    },
};

use super::{rooms::Pdu, secrets};
use crate::{
    error::{Error, Result},
    storage::Storage,
};

/// Uploaded filters, and the filter a `/sync` names.
pub struct FilterService {
    storage: Storage,
}

impl FilterService {
    pub fn new(storage: Storage) -> Self {
        Self { storage }
    }

    /// Stores a filter and returns its new ID.
    pub async fn create(&self, user_id: &UserId, filter: &FilterDefinition) -> Result<String> {
        let id = secrets::random_string(12, b"abcdefghijklmnopqrstuvwxyz0123456789");
        self.storage.filters.put(user_id, &id, &serde_json::to_string(filter)?).await?;
        Ok(id)
    }

    /// One of the user's filters; `404 M_NOT_FOUND` when there is none by that ID.
    pub async fn get(&self, user_id: &UserId, filter_id: &str) -> Result<FilterDefinition> {
        let json = self
            .storage
            .filters
            .get(user_id, filter_id)
            .await?
            .ok_or_else(|| Error::not_found(format!("Unknown filter {filter_id}")))?;
        // Stored by `create` from a parsed filter: failing to parse it back is a bug, and an
        // internal error says so (it is logged), rather than syncing without the filter.
        Ok(serde_json::from_str(&json)?)
    }

    /// The filter `/sync`'s `filter` parameter names: inline JSON or a stored filter's ID.
    pub async fn for_sync(&self, user_id: &UserId, filter: Option<&Filter>) -> Result<FilterDefinition> {
        match filter {
            None => Ok(FilterDefinition::default()),
            Some(Filter::FilterDefinition(filter)) => Ok(filter.clone()),
            // ruma falls back to an ID when inline JSON does not parse; the spec tells them
            // apart by a leading `{`, so such an "ID" is a bad filter, not an unknown one.
            Some(Filter::FilterId(id)) if id.trim_start().starts_with('{') => Err(inline_filter_error(id)),
            Some(Filter::FilterId(id)) => self.get(user_id, id).await,
            Some(_) => Err(Error::invalid_param("Unsupported filter")),
        }
    }
}

/// Why inline filter JSON did not parse: `M_NOT_JSON` for broken JSON, `M_BAD_JSON` for JSON
/// that is not a filter, as for request bodies.
fn inline_filter_error(json: &str) -> Error {
    match serde_json::from_str::<FilterDefinition>(json) {
        Err(e) if matches!(e.classify(), serde_json::error::Category::Syntax | serde_json::error::Category::Eof) => {
            Error::not_json(format!("The filter is not valid JSON: {e}"))
        }
        Err(e) => Error::bad_json(format!("The filter is not a valid filter: {e}")),
        Ok(_) => Error::bad_json("The filter is not a valid filter"),
    }
}

/// Whether `value` matches a filter pattern, where `*` matches any run of characters.
pub fn glob_matches(pattern: &str, value: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == value,
        Some((prefix, rest)) => {
            let Some(mut remaining) = value.strip_prefix(prefix) else { return false };
            let parts: Vec<&str> = rest.split('*').collect();
            for (i, part) in parts.iter().enumerate() {
                let last = i == parts.len() - 1;
                if last {
                    return remaining.ends_with(part);
                }
                match remaining.find(part) {
                    Some(at) => remaining = &remaining[at + part.len()..],
                    None => return false,
                }
            }
            true
        }
    }
}

/// Whether `value` (an event or account data type) passes `types` and `not_types`.
pub fn types_match(types: Option<&[String]>, not_types: &[String], value: &str) -> bool {
    !not_types.iter().any(|p| glob_matches(p, value))
        && types.is_none_or(|types| types.iter().any(|p| glob_matches(p, value)))
}

/// Whether the event passes the filter's type, sender and URL conditions.
pub fn matches(filter: &RoomEventFilter, pdu: &Pdu) -> bool {
    if !types_match(filter.types.as_deref(), &filter.not_types, &pdu.event_type.to_string()) {
        return false;
    }
    if filter.not_senders.contains(&pdu.sender) {
        return false;
    }
    if let Some(senders) = &filter.senders
        && !senders.contains(&pdu.sender)
    {
        return false;
    }
    match &filter.url_filter {
        None => true,
        Some(wanted) => {
            let has_url =
                pdu.content_as::<serde_json::Map<String, serde_json::Value>>().is_some_and(|c| c.contains_key("url"));
            matches!((wanted, has_url), (UrlFilter::EventsWithUrl, true) | (UrlFilter::EventsWithoutUrl, false))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::glob_matches;

    #[test]
    fn globs() {
        assert!(glob_matches("m.room.message", "m.room.message"));
        assert!(!glob_matches("m.room.message", "m.room.member"));
        assert!(glob_matches("m.room.*", "m.room.member"));
        assert!(glob_matches("*", "anything"));
        assert!(glob_matches("m.*.member", "m.room.member"));
        assert!(!glob_matches("m.*.member", "m.room.message"));
        assert!(glob_matches("*.member", "m.room.member"));
        assert!(!glob_matches("m.room.*", "org.room.x"));
    }
}
