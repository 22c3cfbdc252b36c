//! Sync tokens: `s<position>_<typing serial>_<typing epoch>`: the stream position a response
//! covers up to, and how far it has seen the in-memory typing notifications of the server
//! process that issued it (see `ephemeral::typing`). Tokens without an epoch (issued before
//! epochs existed) parse with epoch 0, which no process uses.
//!
//! They start like pagination tokens, so that a `next_batch` can be handed to `/messages` as
//! the spec allows (pagination reads only the position).

use std::{fmt, str::FromStr};

use crate::{error::Error, service::ephemeral::typing::TypingMark};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncToken {
    pub pos: i64,
    pub typing: TypingMark,
}

impl fmt::Display for SyncToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s{}_{}_{}", self.pos, self.typing.serial, self.typing.epoch)
    }
}

impl FromStr for SyncToken {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let invalid = || Error::invalid_param(format!("Invalid sync token `{s}`"));
        let rest = s.strip_prefix('s').ok_or_else(invalid)?;
        let mut parts = rest.split('_');
        let pos: i64 = parts.next().and_then(|p| p.parse().ok()).ok_or_else(invalid)?;
        let number = |part: Option<&str>| part.map_or(Ok(0), |p| p.parse().map_err(|_| invalid()));
        let serial: u64 = number(parts.next())?;
        let epoch = u32::try_from(number(parts.next())?).map_err(|_| invalid())?;
        if pos < 0 || parts.next().is_some() {
            return Err(invalid());
        }
        Ok(Self { pos, typing: TypingMark { epoch, serial } })
    }
}

#[cfg(test)]
mod tests {
    use super::{SyncToken, TypingMark};

    fn token(pos: i64, serial: u64, epoch: u32) -> SyncToken {
        SyncToken { pos, typing: TypingMark { epoch, serial } }
    }

    #[test]
    fn parses_its_own_tokens_and_rejects_others() {
        assert_eq!("s12".parse::<SyncToken>().ok(), Some(token(12, 0, 0)));
        assert_eq!("s12_4".parse::<SyncToken>().ok(), Some(token(12, 4, 0)), "from before epochs");
        assert_eq!("s12_4_77".parse::<SyncToken>().ok(), Some(token(12, 4, 77)));
        let own = token(3, 9, 123_456);
        assert_eq!(own.to_string().parse::<SyncToken>().ok(), Some(own));
        for bad in ["", "12", "s", "sabc", "s-4", "s1_x", "s1_2_3_4", "s1_2_x", "s1_2_4294967296", "t_4", "MDAwMDA"] {
            assert!(bad.parse::<SyncToken>().is_err(), "{bad}");
        }
    }
}
