//! Pagination tokens, as clients see them in `start`, `end` and `prev_batch`.
//!
//! A token names a point *between* events:
//! - `s{N}` (a stream token) lies after stream position N: /sync's tokens and `prev_batch`
//!   are stream tokens, and /messages accepts them (with or without the `_…` suffix of a
//!   full sync token), as the spec asks;
//! - `t{depth}_{stream}` (a topological token) lies just after the event at that point of
//!   the room's topological order, which /messages and /context follow. An event fetched
//!   late (backfilled, or a fork from long ago) lands at its place in history there.
//!
//! Paginating backwards from a token returns the events before it; forwards, those after.

use std::{fmt, str::FromStr};

use crate::{
    error::{Error, Result},
    storage::TopoPoint,
};

/// A point in the stream (see the module comment).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct StreamToken(pub i64);

impl fmt::Display for StreamToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s{}", self.0)
    }
}

impl FromStr for StreamToken {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let invalid = || Error::invalid_param(format!("Invalid pagination token `{s}`"));
        let digits = s.strip_prefix('s').ok_or_else(invalid)?;
        let digits = digits.split('_').next().unwrap_or_default();
        let pos: i64 = digits.parse().map_err(|_| invalid())?;
        if pos < 0 {
            return Err(invalid());
        }
        Ok(Self(pos))
    }
}

/// Any pagination token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageToken {
    Stream(StreamToken),
    Topo(TopoPoint),
}

impl PageToken {
    /// The point just before an event, for a page that ends with it going backwards.
    pub fn before(point: TopoPoint) -> Self {
        Self::Topo(TopoPoint { depth: point.depth, stream: point.stream - 1 })
    }

    /// The point just after an event.
    pub fn after(point: TopoPoint) -> Self {
        Self::Topo(point)
    }
}

impl From<StreamToken> for PageToken {
    fn from(token: StreamToken) -> Self {
        Self::Stream(token)
    }
}

impl fmt::Display for PageToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Stream(token) => token.fmt(f),
            Self::Topo(p) => write!(f, "t{}_{}", p.depth, p.stream),
        }
    }
}

impl FromStr for PageToken {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let Some(rest) = s.strip_prefix('t') else { return s.parse().map(Self::Stream) };
        let invalid = || Error::invalid_param(format!("Invalid pagination token `{s}`"));
        let (depth, stream) = rest.split_once('_').ok_or_else(invalid)?;
        let depth: i64 = depth.parse().map_err(|_| invalid())?;
        // Backfilled events sit at negative stream positions.
        let stream: i64 = stream.parse().map_err(|_| invalid())?;
        if depth < 0 {
            return Err(invalid());
        }
        Ok(Self::Topo(TopoPoint { depth, stream }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_tokens_round_trip_and_accept_sync_tokens() {
        assert_eq!("s42".parse::<StreamToken>().ok(), Some(StreamToken(42)));
        assert_eq!("s42_7_3".parse::<StreamToken>().ok(), Some(StreamToken(42)));
        assert_eq!(StreamToken(9).to_string(), "s9");
        for bad in ["", "42", "sx", "s-1", "t5"] {
            assert!(bad.parse::<StreamToken>().is_err(), "{bad}");
        }
    }

    #[test]
    fn page_tokens_are_stream_or_topological() {
        assert_eq!("s7_1".parse::<PageToken>().ok(), Some(PageToken::Stream(StreamToken(7))));
        let topo = PageToken::Topo(TopoPoint { depth: 12, stream: -3 });
        assert_eq!(topo.to_string(), "t12_-3");
        assert_eq!("t12_-3".parse::<PageToken>().ok(), Some(topo));
        for bad in ["t", "t5", "t-1_2", "tx_1", "t1_y", "u1"] {
            assert!(bad.parse::<PageToken>().is_err(), "{bad}");
        }
        let e = TopoPoint { depth: 4, stream: 10 };
        assert_eq!(PageToken::before(e).to_string(), "t4_9");
        assert_eq!(PageToken::after(e).to_string(), "t4_10");
    }
}
