//! A limit on how deeply JSON may nest, for everything Parley stores or relays.
//!
//! Clients parse responses with serde_json (and similar parsers in other languages), which
//! refuse JSON nested more than 127 levels deep (serde_json's default recursion limit is 128).
//! Values that Parley keeps as raw JSON (to-device messages, account data, event content,
//! pusher data) are never parsed deeply on the way in, so without a limit one user could
//! store a value nested thousands of levels deep and break every `/sync` of the user who
//! receives it: no response could be parsed, so their client would never get past it.
//!
//! [`MAX_DEPTH`] leaves room for the wrapping a response adds around a stored value. The
//! deepest known is a room event's content in `/sync`, bundled as an edit in another event's
//! `unsigned` (`rooms.join.<room>.timeline.events[].unsigned.m.relations.m.replace.content`):
//! 10 levels. 64 + 10 stays far below 127, with margin for wrappings yet to come.
//!
//! The check scans bytes without parsing or allocating, so it can run on every request body
//! before anything else looks at it.

use crate::error::{Error, Result};

/// The deepest nesting of objects and arrays accepted in a request body or stored value.
pub const MAX_DEPTH: usize = 64;

/// Whether `json` nests objects and arrays more than `max` levels deep. It does not validate
/// the JSON: brackets inside strings are skipped, everything else is left to the parser.
pub fn exceeds(json: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &byte in json {
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Refuses JSON nested deeper than [`MAX_DEPTH`] with `400 M_BAD_JSON`. Run it on every
/// JSON value that will be stored or relayed; the request extractor runs it on every body.
pub fn check(json: &[u8]) -> Result<()> {
    if exceeds(json, MAX_DEPTH) {
        return Err(Error::bad_json(format!("JSON may nest at most {MAX_DEPTH} levels deep")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(levels: usize) -> String {
        format!("{}1{}", "[".repeat(levels), "]".repeat(levels))
    }

    #[test]
    fn counts_objects_and_arrays_but_not_strings() {
        assert!(!exceeds(b"1", 0));
        assert!(!exceeds(b"{}", 1));
        assert!(exceeds(b"{}", 0));
        assert!(!exceeds(br#"{"a": [1, {"b": 2}], "c": {}}"#, 3));
        assert!(exceeds(br#"{"a": [1, {"b": [2]}]}"#, 3));
        assert!(!exceeds(br#"{"a": "[[[[{{{{"}"#, 1), "brackets in strings do not count");
        assert!(!exceeds(br#"{"a": "\"[[[[\\"}"#, 1), "escaped quotes do not end a string");
        assert!(!exceeds(nested(MAX_DEPTH).as_bytes(), MAX_DEPTH));
        assert!(exceeds(nested(MAX_DEPTH + 1).as_bytes(), MAX_DEPTH));
        assert!(check(nested(10_000).as_bytes()).is_err());
    }

    /// The margin the limit is chosen for: a value at the limit, inside the deepest wrapping a
    /// response gives it, still parses with serde_json's default recursion limit.
    #[test]
    fn a_value_at_the_limit_parses_inside_a_sync_response() {
        let value = nested(MAX_DEPTH);
        // rooms.join.<room>.timeline.events[].unsigned.m.relations.m.replace.content
        let mut response = value.clone();
        for key in
            ["content", "m.replace", "m.relations", "unsigned", "", "events", "timeline", "!r:x", "join", "rooms"]
        {
            response = if key.is_empty() { format!("[{response}]") } else { format!(r#"{{"{key}":{response}}}"#) };
        }
        assert!(!exceeds(response.as_bytes(), MAX_DEPTH + 10) && exceeds(response.as_bytes(), MAX_DEPTH + 9));
        assert!(serde_json::from_str::<serde_json::Value>(&response).is_ok());
        let too_deep = format!("{}{value}{}", "[".repeat(128 - MAX_DEPTH), "]".repeat(128 - MAX_DEPTH));
        assert!(serde_json::from_str::<serde_json::Value>(&too_deep).is_err(), "the parser's own limit");
    }
}
