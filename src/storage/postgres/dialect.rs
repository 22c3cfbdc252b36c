//! What PostgreSQL needs said differently from SQLite, for the SQL in `storage/sql/`, which
//! is compiled once per backend and names only `super::{Db, Pools, dialect}`. SQLite's
//! module offers the same names.

use ruma::{OwnedDeviceId, UserId};
use sqlx::Transaction;

use super::Db;

/// Membership in a list bound with [`list`] as parameter `$n`: `= ANY($n)` over a text array.
macro_rules! in_list {
    ($n:literal) => {
        concat!("= ANY($", $n, ")")
    };
}
pub(super) use in_list;

/// The larger of two values (a scalar function): `GREATEST`.
macro_rules! greatest {
    () => {
        "GREATEST"
    };
}
pub(super) use greatest;

/// Appended to a `SELECT` that checks a row a concurrent transaction might delete: ` FOR
/// SHARE` keeps it until commit.
macro_rules! for_share {
    () => {
        " FOR SHARE"
    };
}
pub(super) use for_share;

/// A list of strings, bound for [`in_list!`]: a text array.
pub(super) fn list<T: AsRef<str>>(items: &[T]) -> Vec<String> {
    items.iter().map(|item| item.as_ref().to_owned()).collect()
}

/// Writers run concurrently; nothing is gained by reading on a reader before writing.
pub(super) const SINGLE_WRITER: bool = false;

/// Takes one one-time key of a device and algorithm, returning `(key_id, key_json)`. SKIP
/// LOCKED makes a concurrent claim take the next key instead of waiting for this one and then
/// finding it gone (and falling back too early).
pub(super) const CLAIM_ONE_TIME_KEY: &str = "DELETE FROM one_time_keys WHERE (user_id, device_id, key_id) IN ( \
       SELECT user_id, device_id, key_id FROM one_time_keys \
       WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 \
       ORDER BY key_id LIMIT 1 FOR UPDATE SKIP LOCKED) \
     RETURNING key_id, key_json";

/// Serialises the transactions that change a user's versioned data (key backup versions,
/// cross-signing keys), so what one checked holds until it commits.
pub(super) async fn lock_user(tx: &mut Transaction<'_, Db>, user_id: &UserId) -> sqlx::Result<()> {
    sqlx::query("SELECT user_id FROM users WHERE user_id = $1 FOR UPDATE")
        .bind(user_id.as_str())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Locks the devices about to be deleted: a concurrent key upload (which checks its device
/// [`for_share!`]) then either commits before their keys are purged or finds them gone.
pub(super) async fn lock_devices(
    tx: &mut Transaction<'_, Db>,
    user_id: &UserId,
    device_ids: &[OwnedDeviceId],
) -> sqlx::Result<()> {
    sqlx::query("SELECT device_id FROM devices WHERE user_id = $1 AND device_id = ANY($2) FOR UPDATE")
        .bind(user_id.as_str())
        .bind(list(device_ids))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// As [`lock_devices`], for every device of the user but `keep` (`""`: all of them).
pub(super) async fn lock_other_devices(tx: &mut Transaction<'_, Db>, user_id: &UserId, keep: &str) -> sqlx::Result<()> {
    sqlx::query("SELECT device_id FROM devices WHERE user_id = $1 AND device_id <> $2 FOR UPDATE")
        .bind(user_id.as_str())
        .bind(keep)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Several processes may start at once against one database: only one signing key may win.
pub(super) async fn lock_signing_keys(tx: &mut Transaction<'_, Db>) -> sqlx::Result<()> {
    sqlx::query("LOCK TABLE server_signing_keys IN EXCLUSIVE MODE").execute(&mut **tx).await?;
    Ok(())
}

/// The transaction IDs a device used for some events (`$1` user, `$2` device, `$3` event IDs
/// bound with [`list`]). It starts from the event IDs and uses the index on `event_id` once
/// per ID, so its cost does not grow with how much the device ever sent: the planner, left
/// to itself, can prefer the primary key's `(user_id, device_id)` prefix and filter every
/// transaction of the device (measured: 99,950 rows removed for 50 IDs).
pub(super) const TXN_IDS: &str = "SELECT t.event_id, t.txn_id FROM unnest($3::text[]) AS wanted(event_id) \
     CROSS JOIN LATERAL (SELECT event_id, txn_id, user_id, device_id FROM event_txns \
                         WHERE event_id = wanted.event_id OFFSET 0) AS t \
     WHERE t.user_id = $1 AND t.device_id = $2";
