//! Ephemeral room data and presence: typing notifications, read receipts, presence.

pub mod presence;
pub mod receipts;
pub mod typing;
