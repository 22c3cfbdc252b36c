-- Rooms as an event DAG: events that are not (yet) in the timeline, the graph's edges, an
-- explicit room head, a topological order, and other servers' signing keys.
-- Keep in step with migrations/sqlite/0007_event_dag.sql.

-- `events` now holds every PDU the server has, keyed by event ID. Only events in the room's
-- timeline have a stream position (positive when received live, negative when backfilled
-- into the past); outliers, rejected and soft-failed events have none.
ALTER TABLE events DROP CONSTRAINT events_pkey;
ALTER TABLE events DROP CONSTRAINT events_event_id_key;
ALTER TABLE events ADD PRIMARY KEY (event_id);
ALTER TABLE events ALTER COLUMN stream_pos DROP NOT NULL;
ALTER TABLE events ALTER COLUMN state_group DROP NOT NULL; -- NULL for outliers
CREATE UNIQUE INDEX events_stream_pos ON events (stream_pos);
-- Its place in the graph is not known: no state, not in any timeline.
ALTER TABLE events ADD COLUMN outlier BOOLEAN NOT NULL DEFAULT FALSE;
-- Valid against its own history but not against the current state.
ALTER TABLE events ADD COLUMN soft_failed BOOLEAN NOT NULL DEFAULT FALSE;
-- Why the event failed the authorization rules; NULL when it did not.
ALTER TABLE events ADD COLUMN rejected TEXT;
-- The room's current state group just after the event entered the timeline. It differs
-- from state_group (the state after the event itself) when the graph has forks.
ALTER TABLE events ADD COLUMN head_group BIGINT REFERENCES state_groups (id);
UPDATE events SET head_group = state_group;
-- /messages and /context read in topological order: depth, then stream position.
CREATE INDEX events_room_topo ON events (room_id, depth, stream_pos) WHERE stream_pos IS NOT NULL;

-- The graph: each event's prev_events and auth_events.
CREATE TABLE event_edges (
    event_id      TEXT NOT NULL,
    prev_event_id TEXT NOT NULL,
    room_id       TEXT NOT NULL,
    PRIMARY KEY (event_id, prev_event_id)
);
CREATE INDEX event_edges_prev ON event_edges (prev_event_id);

CREATE TABLE event_auth_edges (
    event_id      TEXT NOT NULL,
    auth_event_id TEXT NOT NULL,
    PRIMARY KEY (event_id, auth_event_id)
);

INSERT INTO event_edges (event_id, prev_event_id, room_id)
    SELECT e.event_id, p.value, e.room_id FROM events e,
        jsonb_array_elements_text(CAST(e.json AS jsonb) -> 'prev_events') AS p(value)
    ON CONFLICT DO NOTHING;
INSERT INTO event_auth_edges (event_id, auth_event_id)
    SELECT e.event_id, a.value FROM events e,
        jsonb_array_elements_text(CAST(e.json AS jsonb) -> 'auth_events') AS a(value)
    ON CONFLICT DO NOTHING;

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
    expired        BOOLEAN NOT NULL DEFAULT FALSE, -- listed under old_verify_keys
    fetched_at     BIGINT NOT NULL,
    PRIMARY KEY (server_name, key_id)
);
