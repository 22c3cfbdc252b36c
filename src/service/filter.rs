//! Event filters (the spec's `RoomEventFilter`), applied to events in memory.

use ruma::api::client::filter::{RoomEventFilter, UrlFilter};

use super::rooms::Pdu;

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
