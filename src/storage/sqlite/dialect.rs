//! What SQLite needs said differently from PostgreSQL, for the SQL in `storage/sql/`, which
//! is compiled once per backend and names only `super::{Db, Pools, dialect}`. PostgreSQL's
//! module offers the same names.

use ruma::{OwnedDeviceId, UserId};
use sqlx::Transaction;

use super::Db;

/// Membership in a list bound with [`list`] as parameter `$n`: the elements of a JSON array.
macro_rules! in_list {
    ($n:literal) => {
        concat!("IN (SELECT value FROM json_each($", $n, "))")
    };
}
pub(super) use in_list;

/// The larger of two values: SQLite's scalar `MAX`.
macro_rules! greatest {
    () => {
        "MAX"
    };
}
pub(super) use greatest;

/// Nothing: the single writer already keeps rows from changing under a transaction.
macro_rules! for_share {
    () => {
        ""
    };
}
pub(super) use for_share;

/// A list of strings, bound for [`in_list!`]: a JSON array.
pub(super) fn list<T: AsRef<str>>(items: &[T]) -> String {
    serde_json::Value::Array(items.iter().map(|item| serde_json::Value::from(item.as_ref())).collect()).to_string()
}

/// All writes queue for one connection: a write that may find nothing to do looks on a
/// reader first, so that it does not wait in that queue for nothing.
pub(super) const SINGLE_WRITER: bool = true;

/// Takes one one-time key of a device and algorithm, returning `(key_id, key_json)`. One
/// statement on the single writer: no two claims can pick the same row.
pub(super) const CLAIM_ONE_TIME_KEY: &str = "DELETE FROM one_time_keys WHERE rowid = ( \
       SELECT rowid FROM one_time_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 \
       ORDER BY key_id LIMIT 1) \
     RETURNING key_id, key_json";

/// Nothing to do: the single writer serialises every transaction.
pub(super) async fn lock_user(_: &mut Transaction<'_, Db>, _: &UserId) -> sqlx::Result<()> {
    Ok(())
}

/// Nothing to do: the single writer serialises every transaction.
pub(super) async fn lock_devices(_: &mut Transaction<'_, Db>, _: &UserId, _: &[OwnedDeviceId]) -> sqlx::Result<()> {
    Ok(())
}

/// Nothing to do: the single writer serialises every transaction.
pub(super) async fn lock_other_devices(_: &mut Transaction<'_, Db>, _: &UserId, _: &str) -> sqlx::Result<()> {
    Ok(())
}

/// Nothing to do: the single writer serialises every transaction.
pub(super) async fn lock_signing_keys(_: &mut Transaction<'_, Db>) -> sqlx::Result<()> {
    Ok(())
}

/// The transaction IDs a device used for some events (`$1` user, `$2` device, `$3` event IDs
/// bound with [`list`]). Materialising the look-up by event ID first keeps SQLite from
/// choosing the primary key's `(user_id, device_id)` prefix, which scans every transaction
/// the device ever sent (it has no statistics to know better).
pub(super) const TXN_IDS: &str = "WITH sent AS MATERIALIZED (SELECT event_id, txn_id, user_id, device_id FROM event_txns \
                               WHERE event_id IN (SELECT value FROM json_each($3))) \
     SELECT event_id, txn_id FROM sent WHERE user_id = $1 AND device_id = $2";
