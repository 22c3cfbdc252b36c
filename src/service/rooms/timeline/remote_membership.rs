//! Membership across servers, as the room pipeline sees it (server-server API, "Joining
//! Rooms"):
//!
//! - as the resident server: the event template a joining (or leaving, or knocking) server
//!   asks for with make_join, and the signed event it sends back with send_join, received
//!   like any other PDU;
//! - as the joining server: the signed join event, with the room's state that the resident
//!   server returned, which starts this server's view of the room's graph.

use std::sync::Arc;

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedRoomId, RoomId, RoomVersionId, ServerName, UserId,
    events::TimelineEventType,
};
use serde_json::json;

use super::{
    EventDraft, Received, RoomGuard, Timeline,
    auth::{check_with_auth_events, check_with_state},
    build::build,
    persist::{Flow, Persist, StateBefore},
};
use crate::{
    error::{Error, Result},
    service::{
        now_ms,
        rooms::{Pdu, state::StateMap},
    },
    storage::Placement,
};

impl Timeline {
    /// make_join, make_leave, make_knock: an unsigned member event for `user_id` on the room's
    /// current head, once the auth rules say the current state would let it in. Only a server
    /// with a user in the room answers: the others do not know its current state.
    pub async fn membership_template(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        membership: &str,
    ) -> Result<(RoomVersionId, CanonicalJsonObject)> {
        let guard = self.lock(room_id).await;
        let head = self.state.head(guard.room_id()).await?.ok_or_else(|| Error::not_found("Unknown room"))?;
        if !self.members.servers_of(room_id).await?.contains(&self.config.server_name) {
            return Err(Error::not_found("This server has no user in the room"));
        }
        let draft =
            EventDraft::state(TimelineEventType::RoomMember, user_id.as_str(), json!({ "membership": membership }));
        let object = build(&head, Some(room_id), user_id, &draft, now_ms())?;
        // The rules see the event as it will be, but for its hashes and signatures, which
        // they do not read; the event ID is a stand-in for the check.
        let event_id =
            parley_federation::pdu::event_id(&object, &head.rules).map_err(|e| Error::internal(e.to_string()))?;
        let pdu = Pdu::from_object(event_id, room_id.to_owned(), &object)?;
        let forbidden = |reason: String| Error::forbidden(format!("You may not {membership} this room: {reason}"));
        let auth = self.auth_events_of(&head, &pdu).await?;
        check_with_auth_events(&head.rules, &pdu, &auth).map_err(forbidden)?;
        let state = self.auth_state(&head.rules, &pdu, &head.state).await?.map_err(forbidden)?;
        check_with_state(&head.rules, &pdu, &state).map_err(forbidden)?;
        Ok((head.version.clone(), object))
    }

    /// send_join, send_leave, send_knock: the member event `origin` signed from a template,
    /// received live. It must be `origin`'s own user's, with that membership, and accepted:
    /// anything else is refused, and a refused event is not kept in the timeline.
    pub async fn receive_membership(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        object: CanonicalJsonObject,
        membership: &str,
    ) -> Result<crate::service::rooms::PduRef> {
        let field = |name: &str| match object.get(name) {
            Some(CanonicalJsonValue::String(value)) => Some(value.clone()),
            _ => None,
        };
        let sender = field("sender").unwrap_or_default();
        let member_type = field("type").as_deref() == Some("m.room.member");
        let own_user = field("state_key").as_deref() == Some(sender.as_str())
            && UserId::parse(&sender).is_ok_and(|user| user.server_name() == origin);
        let said = match object.get("content") {
            Some(CanonicalJsonValue::Object(content)) => match content.get("membership") {
                Some(CanonicalJsonValue::String(m)) => m == membership,
                _ => false,
            },
            _ => false,
        };
        if !(member_type && own_user && said) {
            return Err(Error::bad_json(format!("Not a {membership} event of a user of {origin}")));
        }
        match self.receive_pdu(origin, room_id, object).await? {
            Received::Accepted(pdu) => Ok(pdu),
            Received::MissingPrevEvents(_) => Err(Error::bad_json("The event does not follow this room's events")),
            _ => Err(Error::forbidden(format!("The {membership} is not allowed"))),
        }
    }

    /// The join of a local user to a room another server hosts, with the state before it
    /// that the resident server answered (its events already stored as outliers). The room's
    /// create event must be here ([`Timeline::receive_create`]). The join starts this
    /// server's graph of the room: it becomes the one forward extremity, and the state after
    /// it the current state.
    pub async fn receive_joined(
        &self,
        origin: &ServerName,
        room_id: &OwnedRoomId,
        object: CanonicalJsonObject,
        state: StateMap,
    ) -> Result<Received> {
        let guard = self.lock(room_id).await;
        let head = self.state.head(room_id).await?.ok_or_else(|| Error::not_found("Unknown room"))?;
        let rules = &head.rules;
        let event_id = parley_federation::pdu::event_id(&object, rules).map_err(|e| Error::bad_json(e.to_string()))?;
        let object = self.verify_signatures(&head, object).await?;
        let pdu = Pdu::from_object(event_id, room_id.clone(), &object)?;
        let auth = self.auth_events_fetched(&guard, &head, &pdu, origin, 0).await?;
        let create_key = ("m.room.create".to_owned(), String::new());
        if state.get(&create_key) != head.state.get(&create_key) {
            return Err(Error::forbidden("The room's state names another create event"));
        }
        let before = StateBefore { map: Arc::new(state), base: None };
        // Checks 4 and 5; the current state here is only the create event, so check 6 would
        // say nothing.
        if let Err(reason) = check_with_auth_events(rules, &pdu, &auth) {
            return Err(Error::forbidden(format!("The join is not allowed by its auth events: {reason}")));
        }
        let auth_state = self.auth_state(rules, &pdu, &before.map).await?.map_err(Error::forbidden)?;
        if let Err(reason) = check_with_state(rules, &pdu, &auth_state) {
            return Err(Error::forbidden(format!("The join is not allowed by the room's state: {reason}")));
        }
        let persist = Persist {
            pdu,
            before: Some(before),
            placement: Placement::Timeline,
            flow: Flow::Live,
            txn: None,
            new_room: None,
            has_successor: false,
            restart_head: true,
        };
        Ok(Received::of(self.persist(&guard, &head, persist).await?))
    }

    /// Invites a user of another server: the invite is built and checked here, signed by
    /// the invitee's server too (invite v2, which also tells it about the room), then
    /// persisted like any local event. The room's lock is held throughout, so the invite
    /// still follows the room's head when it is stored.
    pub(super) async fn invite_remote(
        &self,
        guard: &RoomGuard,
        sender: &UserId,
        draft: EventDraft,
    ) -> Result<crate::service::rooms::PduRef> {
        let source = self.source.get().ok_or_else(|| {
            Error::forbidden("This server does not federate: it cannot invite users of other servers")
        })?;
        let target = draft.state_key.as_deref().and_then(|k| UserId::parse(k).ok());
        let target = target.ok_or_else(|| Error::bad_json("An invite needs a user ID as its state key"))?;
        let room_id = guard.room_id();
        let head = self.state.head(room_id).await?.ok_or_else(|| Error::not_found("Room not found"))?;
        let mut object = build(&head, Some(room_id), sender, &draft, now_ms())?;
        let event_id = self.keys.hash_and_sign_event(&mut object, &head.rules)?;
        let pdu = Pdu::from_object(event_id.clone(), room_id.to_owned(), &object)?;
        self.authorize_local(&head, &pdu).await?;

        let stripped = self.invite_room_state(&head, sender).await?;
        let server = target.server_name();
        let signed = source.send_invite(server, &head.version, &event_id, object, stripped).await?;
        // The same event, now signed by the invitee's server as well.
        let signed_id =
            parley_federation::pdu::event_id(&signed, &head.rules).map_err(|e| Error::bad_json(e.to_string()))?;
        if signed_id != event_id {
            return Err(Error::bad_json(format!("{server} changed the invite it was asked to sign")));
        }
        let redacted = ruma::canonical_json::redact(signed.clone(), &head.rules.redaction, None)
            .map_err(|e| Error::bad_json(e.to_string()))?;
        let ts = i64::from(pdu.origin_server_ts.get());
        let signers = std::collections::BTreeSet::from([server.to_owned(), self.config.server_name.clone()]);
        let keys = self.keys.public_keys(&signed, &signers, ts).await?;
        if !keys.contains_key(server.as_str()) {
            return Err(Error::forbidden(format!("No signing key of {server} is known")));
        }
        ruma::signatures::verify_json(&keys, &redacted)
            .map_err(|e| Error::forbidden(format!("{server} did not sign the invite: {e}")))?;
        let pdu = Pdu::from_object(event_id, room_id.to_owned(), &signed)?;
        let persist = Persist {
            pdu,
            before: Some(StateBefore::current(&head)),
            placement: Placement::Timeline,
            flow: Flow::Live,
            txn: None,
            new_room: None,
            has_successor: false,
            restart_head: false,
        };
        self.persist(guard, &head, persist).await
    }

    /// The room as an invitee's server is told of it with the invite: the state events
    /// clients show invitees, plus the inviter's membership, as full PDUs (which servers
    /// require since spec v1.16; the invitee's server strips them for its clients).
    async fn invite_room_state(
        &self,
        head: &crate::service::rooms::RoomHead,
        sender: &UserId,
    ) -> Result<Vec<Box<serde_json::value::RawValue>>> {
        let mut ids: Vec<ruma::OwnedEventId> =
            STRIPPED_TYPES.iter().filter_map(|event_type| head.state_event(event_type, "")).cloned().collect();
        ids.extend(head.state_event("m.room.member", sender.as_str()).cloned());
        Ok(self.events.pdus(&ids).await?.into_iter().map(|pdu| pdu.json.clone()).collect())
    }
}

/// The state events an invitee is shown (client-server API, "Stripped state").
pub const STRIPPED_TYPES: &[&str] = &[
    "m.room.create",
    "m.room.join_rules",
    "m.room.name",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.encryption",
    "m.room.topic",
];
