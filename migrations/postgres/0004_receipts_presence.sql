-- Read receipts and presence. Keep in step with the other backend's 0004_receipts_presence.sql.

-- The latest receipt of each kind per user, room and thread ('' for unthreaded receipts).
CREATE TABLE receipts (
    room_id      TEXT NOT NULL,
    user_id      TEXT NOT NULL,
    receipt_type TEXT NOT NULL,
    thread_id    TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    event_pos    BIGINT NOT NULL,   -- stream position of the event read
    ts           BIGINT NOT NULL,
    stream_pos   BIGINT NOT NULL,   -- when the receipt was set, for /sync
    PRIMARY KEY (room_id, user_id, receipt_type, thread_id)
);
CREATE INDEX receipts_stream ON receipts (room_id, stream_pos);

-- Presence as last published: written on a change of state, not on every heartbeat.
CREATE TABLE presence (
    user_id          TEXT PRIMARY KEY,
    state            TEXT NOT NULL,
    status_msg       TEXT,
    last_active_ts   BIGINT NOT NULL,
    currently_active BOOLEAN NOT NULL DEFAULT FALSE,
    stream_pos       BIGINT NOT NULL
);
CREATE INDEX presence_stream ON presence (stream_pos);
