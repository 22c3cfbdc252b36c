-- End-to-end encryption: device keys, one-time and fallback keys, cross-signing keys and the
-- signatures uploaded on them, device-list changes, to-device messages and key backups.
-- The server stores and relays all of this and never decrypts anything; key objects are kept
-- as the client sent them. Keep in step with migrations/sqlite/0005_e2ee.sql.

-- One identity-key object per device, as uploaded (signatures from /keys/signatures/upload
-- live in key_signatures and are merged in when the keys are queried).
CREATE TABLE device_keys (
    user_id   TEXT NOT NULL,
    device_id TEXT NOT NULL,
    key_json  TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);

-- Unclaimed one-time keys. Claiming deletes the row, so each key is handed out once.
CREATE TABLE one_time_keys (
    user_id   TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id    TEXT NOT NULL, -- "<algorithm>:<name>"
    key_json  TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, key_id)
);
CREATE INDEX one_time_keys_algorithm ON one_time_keys (user_id, device_id, algorithm);

-- At most one fallback key per device and algorithm; claiming marks it used, never deletes it.
CREATE TABLE fallback_keys (
    user_id   TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id    TEXT NOT NULL,
    key_json  TEXT NOT NULL,
    used      BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (user_id, device_id, algorithm)
);

CREATE TABLE cross_signing_keys (
    user_id  TEXT NOT NULL,
    key_type TEXT NOT NULL, -- master, self_signing, user_signing
    key_id   TEXT NOT NULL, -- "ed25519:<public key>"
    key_json TEXT NOT NULL,
    PRIMARY KEY (user_id, key_type)
);

-- Signatures uploaded on a device's keys or on a master key after the key itself.
CREATE TABLE key_signatures (
    target_user_id TEXT NOT NULL,
    target_key_id  TEXT NOT NULL, -- a device ID, or a master key's public key
    signer_user_id TEXT NOT NULL,
    signer_key_id  TEXT NOT NULL, -- "ed25519:<device ID or public key>"
    signature      TEXT NOT NULL,
    PRIMARY KEY (target_user_id, target_key_id, signer_user_id, signer_key_id)
);

-- A user's device list (device keys, cross-signing keys, signatures, devices) changed at a
-- stream position; /sync and /keys/changes tell the users who share a room with them.
CREATE TABLE device_list_changes (
    user_id    TEXT NOT NULL,
    stream_pos BIGINT NOT NULL,
    PRIMARY KEY (user_id, stream_pos)
);
CREATE INDEX device_list_changes_pos ON device_list_changes (stream_pos);

-- Pending to-device messages, deleted once the recipient device acknowledges them by syncing
-- with a token at or past their position.
CREATE TABLE to_device_messages (
    id         BIGSERIAL PRIMARY KEY,
    user_id    TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    stream_pos BIGINT NOT NULL,
    sender     TEXT NOT NULL,
    event_type TEXT NOT NULL,
    content    TEXT NOT NULL -- JSON
);
CREATE INDEX to_device_inbox ON to_device_messages (user_id, device_id, stream_pos);

-- Transaction IDs of /sendToDevice, per sending device, so a retried send is not delivered
-- twice. They also keep the position of each send: delivered messages are deleted, and the
-- stream allocator must still start after the highest position ever handed out.
CREATE TABLE to_device_txns (
    user_id    TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    txn_id     TEXT NOT NULL,
    stream_pos BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id, txn_id)
);
CREATE INDEX to_device_txns_pos ON to_device_txns (stream_pos);

-- Server-side key backups. Versions count up per user and are never reused; a deleted
-- version keeps its row (deleted = TRUE) so that its number is not handed out again.
CREATE TABLE backup_versions (
    user_id   TEXT NOT NULL,
    version   BIGINT NOT NULL,
    algorithm TEXT NOT NULL, -- {"algorithm": ..., "auth_data": ...}
    etag      BIGINT NOT NULL DEFAULT 0, -- bumped whenever the version's keys change
    deleted   BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (user_id, version)
);

CREATE TABLE backup_keys (
    user_id             TEXT NOT NULL,
    version             BIGINT NOT NULL,
    room_id             TEXT NOT NULL,
    session_id          TEXT NOT NULL,
    first_message_index BIGINT NOT NULL,
    forwarded_count     BIGINT NOT NULL,
    is_verified         BOOLEAN NOT NULL,
    key_json            TEXT NOT NULL, -- the KeyBackupData object
    PRIMARY KEY (user_id, version, room_id, session_id)
);
