-- Rooms as a signed event graph: signing keys, events, state groups, current state,
-- memberships, transaction IDs, aliases. Keep in step with migrations/postgres/0002_rooms.sql.

CREATE TABLE server_signing_keys (
    key_version TEXT PRIMARY KEY,
    secret_der  BLOB NOT NULL,     -- PKCS#8
    created_at  BIGINT NOT NULL,
    expired_at  BIGINT              -- NULL while the key is in use
);

CREATE TABLE rooms (
    room_id      TEXT PRIMARY KEY,
    room_version TEXT NOT NULL,
    creator      TEXT NOT NULL,
    is_public    INTEGER NOT NULL DEFAULT 0, -- listed in the public room directory
    created_at   BIGINT NOT NULL
);

-- Immutable snapshots and deltas of room state. A group with prev_id NULL holds the whole
-- state; otherwise it holds only the entries that differ from prev_id (a removed key is not
-- possible in Matrix state, so deltas only add or replace).
CREATE TABLE state_groups (
    id          INTEGER PRIMARY KEY,
    room_id     TEXT NOT NULL,
    prev_id     BIGINT REFERENCES state_groups (id),
    chain_len   INTEGER NOT NULL       -- deltas between this group and its snapshot
);

CREATE TABLE state_group_entries (
    group_id   BIGINT NOT NULL REFERENCES state_groups (id),
    event_type TEXT NOT NULL,
    state_key  TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    PRIMARY KEY (group_id, event_type, state_key)
);

CREATE TABLE events (
    stream_pos       BIGINT PRIMARY KEY,   -- the global order /sync and /messages read in
    event_id         TEXT NOT NULL UNIQUE,
    room_id          TEXT NOT NULL REFERENCES rooms (room_id),
    event_type       TEXT NOT NULL,
    state_key        TEXT,
    sender           TEXT NOT NULL,
    origin_server_ts BIGINT NOT NULL,
    depth            BIGINT NOT NULL,
    state_group      BIGINT NOT NULL REFERENCES state_groups (id), -- state after this event
    json             TEXT NOT NULL,        -- the PDU; its redacted form once redacted
    unsigned         TEXT,                 -- server-added unsigned data (prev_content, ...)
    redacted_by      TEXT
);
CREATE INDEX events_room_pos ON events (room_id, stream_pos);
CREATE INDEX events_room_ts ON events (room_id, origin_server_ts);
CREATE INDEX events_members ON events (state_key, stream_pos) WHERE event_type = 'm.room.member';

CREATE TABLE room_extremities (
    room_id  TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (room_id, event_id)
);

CREATE TABLE current_state (
    room_id    TEXT NOT NULL,
    event_type TEXT NOT NULL,
    state_key  TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    PRIMARY KEY (room_id, event_type, state_key)
);

-- Each user's current membership of each room, derived from current_state for fast lookups.
CREATE TABLE memberships (
    room_id    TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    membership TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    stream_pos BIGINT NOT NULL,
    forgotten  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (room_id, user_id)
);
CREATE INDEX memberships_user ON memberships (user_id, membership);

-- Client transaction IDs, per device and endpoint, so a retried send returns the same event.
-- txn_key scopes the client's transaction ID to the request path (room, event type).
CREATE TABLE event_txns (
    user_id    TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    txn_key    TEXT NOT NULL,
    txn_id     TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id, txn_key)
);
CREATE INDEX event_txns_event ON event_txns (event_id);

CREATE TABLE room_aliases (
    alias      TEXT PRIMARY KEY,
    room_id    TEXT NOT NULL,
    creator    TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX room_aliases_room ON room_aliases (room_id);
