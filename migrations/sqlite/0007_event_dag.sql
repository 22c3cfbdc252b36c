-- Rooms as an event DAG: events that are not (yet) in the timeline, the graph's edges, an
-- explicit room head, a topological order, and other servers' signing keys.
-- Keep in step with migrations/postgres/0007_event_dag.sql.

-- `events` now holds every PDU the server has, keyed by event ID. Only events in the room's
-- timeline have a stream position (positive when received live, negative when backfilled
-- into the past); outliers, rejected and soft-failed events have none. SQLite cannot change
-- a primary key in place, so the table is rebuilt.
CREATE TABLE events_dag (
    event_id         TEXT PRIMARY KEY,
    stream_pos       BIGINT UNIQUE,
    room_id          TEXT NOT NULL REFERENCES rooms (room_id),
    event_type       TEXT NOT NULL,
    state_key        TEXT,
    sender           TEXT NOT NULL,
    origin_server_ts BIGINT NOT NULL,
    depth            BIGINT NOT NULL,
    state_group      BIGINT REFERENCES state_groups (id), -- NULL for outliers
    json             TEXT NOT NULL,
    unsigned         TEXT,
    redacted_by      TEXT,
    -- Its place in the graph is not known: no state, not in any timeline.
    outlier          INTEGER NOT NULL DEFAULT 0,
    -- Valid against its own history but not against the current state.
    soft_failed      INTEGER NOT NULL DEFAULT 0,
    -- Why the event failed the authorization rules; NULL when it did not.
    rejected         TEXT,
    -- The room's current state group just after the event entered the timeline. It differs
    -- from state_group (the state after the event itself) when the graph has forks.
    head_group       BIGINT REFERENCES state_groups (id)
);
INSERT INTO events_dag (event_id, stream_pos, room_id, event_type, state_key, sender, origin_server_ts, depth,
                        state_group, json, unsigned, redacted_by, head_group)
    SELECT event_id, stream_pos, room_id, event_type, state_key, sender, origin_server_ts, depth,
           state_group, json, unsigned, redacted_by, state_group
    FROM events;
DROP TABLE events;
ALTER TABLE events_dag RENAME TO events;
CREATE INDEX events_room_pos ON events (room_id, stream_pos);
CREATE INDEX events_room_ts ON events (room_id, origin_server_ts);
CREATE INDEX events_members ON events (state_key, stream_pos) WHERE event_type = 'm.room.member';
-- /messages and /context read in topological order: depth, then stream position.
CREATE INDEX events_room_topo ON events (room_id, depth, stream_pos) WHERE stream_pos IS NOT NULL;

-- The graph: each event's prev_events and auth_events. WITHOUT ROWID: the key is the
-- table, one b-tree instead of two, and every event writes several of these rows.
CREATE TABLE event_edges (
    event_id      TEXT NOT NULL,
    prev_event_id TEXT NOT NULL,
    room_id       TEXT NOT NULL,
    PRIMARY KEY (event_id, prev_event_id)
) WITHOUT ROWID;
CREATE INDEX event_edges_prev ON event_edges (prev_event_id);

CREATE TABLE event_auth_edges (
    event_id      TEXT NOT NULL,
    auth_event_id TEXT NOT NULL,
    PRIMARY KEY (event_id, auth_event_id)
) WITHOUT ROWID;

INSERT OR IGNORE INTO event_edges (event_id, prev_event_id, room_id)
    SELECT e.event_id, p.value, e.room_id FROM events e, json_each(e.json, '$.prev_events') AS p;
INSERT OR IGNORE INTO event_auth_edges (event_id, auth_event_id)
    SELECT e.event_id, a.value FROM events e, json_each(e.json, '$.auth_events') AS a;

-- The room head, stored: the state group of the current state (the resolution of the states
-- after the forward extremities, which are in room_extremities).
ALTER TABLE rooms ADD COLUMN current_group BIGINT REFERENCES state_groups (id);
UPDATE rooms SET current_group = (
    SELECT e.state_group FROM events e WHERE e.room_id = rooms.room_id ORDER BY e.stream_pos DESC LIMIT 1
);

-- Other servers' signing keys, as fetched (directly or through a notary) and verified.
CREATE TABLE server_keys (
    server_name    TEXT NOT NULL,
    key_id         TEXT NOT NULL,
    public_key     TEXT NOT NULL,   -- unpadded standard base64
    valid_until_ts BIGINT NOT NULL, -- for an old key: when it expired
    expired        INTEGER NOT NULL DEFAULT 0, -- listed under old_verify_keys
    fetched_at     BIGINT NOT NULL,
    PRIMARY KEY (server_name, key_id)
);
