-- Invites from other servers to rooms this server does not have: the invite (signed by both
-- servers) and the stripped state the inviting server sent, shown to the invitee by /sync.
-- The invitee's memberships row says "invite" with the same stream position.
-- Keep in step with migrations/sqlite/0009_remote_invites.sql.
CREATE TABLE remote_invites (
    room_id      TEXT NOT NULL,
    user_id      TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    event_json   TEXT NOT NULL,
    invite_state TEXT NOT NULL,
    membership   TEXT NOT NULL, -- "invite", or "leave" once rejected here
    stream_pos   BIGINT NOT NULL,
    PRIMARY KEY (room_id, user_id)
);
