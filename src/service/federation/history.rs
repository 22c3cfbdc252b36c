//! What another server may read of a room: the events its users could see (history
//! visibility, applied to servers as the spec says), the state before an event, and the
//! events other servers miss.

use std::collections::{BTreeSet, HashSet, VecDeque};

use ruma::{EventId, OwnedEventId, RoomId, ServerName};

use super::acl;
use crate::{
    error::{Error, Result},
    service::{
        Services,
        rooms::{PduRef, state::StateMap},
    },
};

#[derive(serde::Deserialize)]
struct Visibility {
    history_visibility: String,
}

#[derive(serde::Deserialize)]
struct Membership {
    membership: String,
}

/// Whether `server` may see `pdu`: the room's ACL lets it in, and history visibility at the
/// event lets one of its users see it (`world_readable`; `shared` with a user of it in the
/// room now or then; `invited` or `joined` with one invited or joined at the event).
pub async fn server_can_see(services: &Services, server: &ServerName, pdu: &PduRef) -> Result<bool> {
    if !acl::allows(&services.rooms, &pdu.room_id, server).await? {
        return Ok(false);
    }
    // An outlier (a state or auth event of a room joined through another server) has no
    // place in history here: servers in the room have it too, and may ask for it.
    if pdu.placement == crate::storage::Placement::Outlier {
        return Ok(services.rooms.members.servers_of(&pdu.room_id).await?.contains(server));
    }
    if !pdu.in_timeline() {
        return Ok(false);
    }
    let Some(group) = pdu.group() else { return Ok(false) };
    let state = &services.rooms.state;
    let visibility = state
        .group_lookup(group, "m.room.history_visibility", "")
        .await?
        .and_then(|p| p.content_as::<Visibility>())
        .map_or_else(|| "shared".to_owned(), |v| v.history_visibility);
    if visibility == "world_readable" {
        return Ok(true);
    }
    // The memberships of the server's users at the event.
    let entries = state.group_entries(group).await?;
    let ids: Vec<OwnedEventId> = entries
        .iter()
        .filter(|(t, k, _)| {
            t == "m.room.member" && ruma::UserId::parse(k.as_str()).is_ok_and(|u| u.server_name() == server)
        })
        .map(|(_, _, id)| id.clone())
        .collect();
    let memberships: HashSet<String> = services
        .rooms
        .events
        .pdus(&ids)
        .await?
        .iter()
        .filter_map(|p| p.content_as::<Membership>().map(|m| m.membership))
        .collect();
    Ok(match visibility.as_str() {
        "invited" => memberships.contains("join") || memberships.contains("invite"),
        "joined" => memberships.contains("join"),
        // `shared` and anything unknown: any user of the server there then, or now.
        _ => {
            memberships.contains("join")
                || services.rooms.members.servers_of(&pdu.room_id).await?.iter().any(|s| s == server)
        }
    })
}

/// An event of the room, if `server` may see it; `404` otherwise (whether it does not exist
/// or is hidden, the answer is the same).
pub async fn visible_event(
    services: &Services,
    server: &ServerName,
    room_id: Option<&RoomId>,
    event_id: &EventId,
) -> Result<PduRef> {
    let pdu = services.rooms.events.pdu(event_id).await?;
    let pdu =
        pdu.filter(|p| room_id.is_none_or(|r| p.room_id == r)).ok_or_else(|| Error::not_found("Event not found"))?;
    if !server_can_see(services, server, &pdu).await? {
        return Err(Error::not_found("Event not found"));
    }
    Ok(pdu)
}

/// The state before an event: the state after it, with its own entry put back as it was.
pub async fn state_before(services: &Services, pdu: &PduRef) -> Result<StateMap> {
    let group = pdu.state_group.ok_or_else(|| Error::not_found("The event's state is not known here"))?;
    let mut state = services.rooms.state.group_map(group).await?;
    if let (Some(key), true) = (&pdu.state_key, pdu.in_timeline()) {
        #[derive(serde::Deserialize)]
        struct Replaces {
            replaces_state: Option<OwnedEventId>,
        }
        let replaced = pdu.unsigned.as_ref().and_then(|u| serde_json::from_str::<Replaces>(u.get()).ok());
        let entry = (pdu.event_type.to_string(), key.clone());
        match replaced.and_then(|r| r.replaces_state) {
            Some(previous) => {
                state.insert(entry, previous);
            }
            None => {
                state.remove(&entry);
            }
        }
    }
    Ok(state)
}

/// The events between `earliest` (exclusive) and `latest` (exclusive) that `server` may see,
/// walking back from `latest` through prev_events, oldest first, at most `limit`, none
/// shallower than `min_depth`.
pub async fn missing_events(
    services: &Services,
    server: &ServerName,
    room_id: &RoomId,
    earliest: &[OwnedEventId],
    latest: &[OwnedEventId],
    limit: usize,
    min_depth: u64,
) -> Result<Vec<PduRef>> {
    let mut seen: BTreeSet<OwnedEventId> = earliest.iter().chain(latest).cloned().collect();
    let mut queue: VecDeque<OwnedEventId> = VecDeque::new();
    for id in latest {
        if let Some(pdu) = services.rooms.events.pdu(id).await?.filter(|p| p.room_id == room_id) {
            queue.extend(pdu.prev_events.iter().cloned());
        }
    }
    let mut found = Vec::new();
    while let Some(id) = queue.pop_front() {
        if found.len() >= limit || !seen.insert(id.clone()) {
            continue;
        }
        let Some(pdu) = services.rooms.events.pdu(&id).await?.filter(|p| p.room_id == room_id) else { continue };
        if u64::from(pdu.depth) < min_depth || !server_can_see(services, server, &pdu).await? {
            continue;
        }
        queue.extend(pdu.prev_events.iter().cloned());
        found.push(pdu);
    }
    found.sort_by_key(|p| (p.depth, p.stream_pos));
    Ok(found)
}
