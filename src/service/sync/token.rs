//! Sync tokens: `s<position>`, the stream position a response covers up to.
//!
//! The same syntax as pagination tokens, so that a `next_batch` or `prev_batch` can be handed
//! to `/messages` as the spec allows. Later parts (ephemeral streams) append `_<n>` fields.

use std::{fmt, str::FromStr};

use crate::error::Error;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncToken {
    pub pos: i64,
}

impl fmt::Display for SyncToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s{}", self.pos)
    }
}

impl FromStr for SyncToken {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let invalid = || Error::invalid_param(format!("Invalid sync token `{s}`"));
        let rest = s.strip_prefix('s').ok_or_else(invalid)?;
        let mut parts = rest.split('_');
        let pos: i64 = parts.next().and_then(|p| p.parse().ok()).ok_or_else(invalid)?;
        if pos < 0 || parts.any(|p| p.parse::<u64>().is_err()) {
            return Err(invalid());
        }
        Ok(Self { pos })
    }
}

#[cfg(test)]
mod tests {
    use super::SyncToken;

    #[test]
    fn parses_its_own_tokens_and_rejects_others() {
        assert_eq!("s12".parse::<SyncToken>().ok(), Some(SyncToken { pos: 12 }));
        assert_eq!(SyncToken { pos: 3 }.to_string().parse::<SyncToken>().ok(), Some(SyncToken { pos: 3 }));
        for bad in ["", "12", "s", "sabc", "s-4", "s1_x", "t_4", "MDAwMDA"] {
            assert!(bad.parse::<SyncToken>().is_err(), "{bad}");
        }
    }
}
