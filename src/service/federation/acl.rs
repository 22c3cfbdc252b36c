//! Server ACLs (`m.room.server_acl`): which servers may take part in a room. Enforced on
//! inbound PDUs and EDUs, and on the servers this server sends a room's events to.

use ruma::{RoomId, ServerName, events::room::server_acl::RoomServerAclEventContent};

use crate::{error::Result, service::rooms::Rooms};

/// Whether the room's current server ACL lets `server` take part. A room without an ACL
/// allows everyone; an ACL whose content cannot be read allows nobody, as the spec's
/// defaults (empty `allow`) would.
pub async fn allows(rooms: &Rooms, room_id: &RoomId, server: &ServerName) -> Result<bool> {
    let Some(event) = rooms.state.current_state_event(room_id, "m.room.server_acl", "").await? else {
        return Ok(true);
    };
    Ok(event.content_as::<RoomServerAclEventContent>().is_some_and(|acl| acl.is_allowed(server)))
}
