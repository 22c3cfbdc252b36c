-- Federation: transactions received (processed once), and the durable outbound queue.
-- Keep in step with migrations/postgres/0008_federation.sql.

-- Each transaction another server sent, with the answer given, so that a retry of the same
-- transaction is answered the same and processed once.
CREATE TABLE federation_inbound_txns (
    origin      TEXT NOT NULL,
    txn_id      TEXT NOT NULL,
    response    TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (origin, txn_id)
);
CREATE INDEX federation_inbound_txns_age ON federation_inbound_txns (received_at);

-- Per destination: its backoff, and the transaction in flight (retried as it is, with the
-- same ID, until the destination answers).
CREATE TABLE federation_destinations (
    destination     TEXT PRIMARY KEY,
    failures        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL DEFAULT 0,
    last_success_at BIGINT,
    txn_counter     BIGINT NOT NULL DEFAULT 0,
    pending_txn     TEXT,      -- the transaction ID in flight, if any
    pending_upto    BIGINT     -- the last outbox entry it carries
);

-- What is to be sent to each destination, in order: PDUs by event ID, EDUs as JSON.
CREATE TABLE federation_outbox (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    destination TEXT NOT NULL,
    room_id     TEXT,          -- for PDUs: their room, so a long backlog can be cut to the latest
    event_id    TEXT,          -- a PDU
    edu         TEXT,          -- or an EDU: {"edu_type": ..., "content": ...}
    created_at  BIGINT NOT NULL
);
CREATE INDEX federation_outbox_destination ON federation_outbox (destination, id);

-- Each server's latest verified key response, as received (signatures included): what this
-- server relays when it answers as a notary.
CREATE TABLE server_key_responses (
    server_name    TEXT PRIMARY KEY,
    response       TEXT NOT NULL,
    valid_until_ts BIGINT NOT NULL
);
