//! Push rules (and, later, notifications and pushers).

pub mod rules;
