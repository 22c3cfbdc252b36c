//! Sync tokens: `s<position>_<typing>`: the stream position a response covers up to, and the
//! serial of the in-memory typing notifications it has seen.
//!
//! They start like pagination tokens, so that a `next_batch` can be handed to `/messages` as
//! the spec allows (pagination reads only the position).

use std::{fmt, str::FromStr};

use crate::error::Error;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncToken {
    pub pos: i64,
    pub typing: u64,
}

impl fmt::Display for SyncToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s{}_{}", self.pos, self.typing)
    }
}

impl FromStr for SyncToken {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let invalid = || Error::invalid_param(format!("Invalid sync token `{s}`"));
        let rest = s.strip_prefix('s').ok_or_else(invalid)?;
        let mut parts = rest.split('_');
        let pos: i64 = parts.next().and_then(|p| p.parse().ok()).ok_or_else(invalid)?;
        let typing: u64 = match parts.next() {
            Some(part) => part.parse().map_err(|_| invalid())?,
            None => 0,
        };
        if pos < 0 || parts.next().is_some() {
            return Err(invalid());
        }
        Ok(Self { pos, typing })
    }
}

#[cfg(test)]
mod tests {
    use super::SyncToken;

    #[test]
    fn parses_its_own_tokens_and_rejects_others() {
        assert_eq!("s12".parse::<SyncToken>().ok(), Some(SyncToken { pos: 12, typing: 0 }));
        assert_eq!("s12_4".parse::<SyncToken>().ok(), Some(SyncToken { pos: 12, typing: 4 }));
        let token = SyncToken { pos: 3, typing: 9 };
        assert_eq!(token.to_string().parse::<SyncToken>().ok(), Some(token));
        for bad in ["", "12", "s", "sabc", "s-4", "s1_x", "s1_2_3", "t_4", "MDAwMDA"] {
            assert!(bad.parse::<SyncToken>().is_err(), "{bad}");
        }
    }
}
