-- Accounts, devices, access tokens, account data, registration tokens and UIA sessions.
-- Keep in step with migrations/sqlite/0001_accounts.sql.

CREATE TABLE users (
    user_id       TEXT PRIMARY KEY,
    password_hash TEXT,
    is_admin      BOOLEAN NOT NULL DEFAULT FALSE,
    deactivated   BOOLEAN NOT NULL DEFAULT FALSE,
    created_at    BIGINT NOT NULL
);

CREATE TABLE profiles (
    user_id TEXT NOT NULL REFERENCES users (user_id),
    field   TEXT NOT NULL,
    value   TEXT NOT NULL, -- JSON
    PRIMARY KEY (user_id, field)
);

CREATE TABLE devices (
    user_id      TEXT NOT NULL REFERENCES users (user_id),
    device_id    TEXT NOT NULL,
    display_name TEXT,
    last_seen_ts BIGINT,
    last_seen_ip TEXT,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);

CREATE TABLE access_tokens (
    token_hash BYTEA PRIMARY KEY, -- SHA-256 of the token
    user_id    TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id)
);
CREATE UNIQUE INDEX access_tokens_device ON access_tokens (user_id, device_id);

CREATE TABLE account_data (
    user_id    TEXT NOT NULL,
    room_id    TEXT NOT NULL, -- '' for global account data
    data_type  TEXT NOT NULL,
    content    TEXT NOT NULL, -- JSON
    stream_pos BIGINT NOT NULL,
    PRIMARY KEY (user_id, room_id, data_type)
);
CREATE INDEX account_data_stream ON account_data (user_id, stream_pos);

CREATE TABLE registration_tokens (
    token_hash   BYTEA PRIMARY KEY,
    prefix       TEXT NOT NULL,
    uses_allowed BIGINT,
    completed    BIGINT NOT NULL DEFAULT 0,
    expiry_ts    BIGINT,
    created_at   BIGINT NOT NULL
);

CREATE TABLE uiaa_sessions (
    session_id              TEXT PRIMARY KEY,
    scope                   TEXT NOT NULL,
    completed               TEXT NOT NULL, -- JSON array of stage types
    registration_token_hash BYTEA,
    created_at              BIGINT NOT NULL
);
