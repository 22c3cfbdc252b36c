-- Push: evaluated actions per event and recipient, pushers, and the durable delivery queue.
-- Keep in step with the other backend's 0006_push.sql.

-- What the push rules said about an event for one recipient, when they said notify.
CREATE TABLE event_push_actions (
    user_id    TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    room_id    TEXT NOT NULL,
    stream_pos BIGINT NOT NULL,
    thread_id  TEXT NOT NULL,      -- '' for the main timeline
    highlight  BOOLEAN NOT NULL,
    actions    TEXT NOT NULL,      -- JSON array, as the rules gave it
    ts         BIGINT NOT NULL,
    PRIMARY KEY (user_id, event_id)
);
CREATE INDEX event_push_actions_room ON event_push_actions (user_id, room_id, stream_pos);
CREATE INDEX event_push_actions_user ON event_push_actions (user_id, stream_pos);

CREATE TABLE pushers (
    user_id             TEXT NOT NULL,
    app_id              TEXT NOT NULL,
    pushkey             TEXT NOT NULL,
    kind                TEXT NOT NULL,
    app_display_name    TEXT NOT NULL,
    device_display_name TEXT NOT NULL,
    profile_tag         TEXT,
    lang                TEXT NOT NULL,
    data                TEXT NOT NULL, -- JSON: url, format, ...
    created_at          BIGINT NOT NULL,
    PRIMARY KEY (user_id, app_id, pushkey)
);
CREATE INDEX pushers_key ON pushers (app_id, pushkey);

-- Notifications waiting for a gateway. Written in the same transaction as the event, so a
-- crash loses none; removed once the gateway accepted them, so none is sent twice.
CREATE TABLE push_queue (
    id              BIGSERIAL PRIMARY KEY,
    user_id         TEXT NOT NULL,
    app_id          TEXT NOT NULL,
    pushkey         TEXT NOT NULL,
    event_id        TEXT NOT NULL,
    room_id         TEXT NOT NULL,
    highlight       BOOLEAN NOT NULL,
    actions         TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL
);
CREATE INDEX push_queue_due ON push_queue (next_attempt_at);
