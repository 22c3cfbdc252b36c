//! The persist step, shared by local and remote events.
//!
//! Given a checked PDU, the state before it and the verdict of the checks, it plans:
//! - the state group after the event (before it, when rejected), stored as a delta from the
//!   state *before the event*, not from the room's current head;
//! - for an event entering the timeline live: the forward extremities (`old - prev_events +
//!   new`), the current state (the resolution of the states after every extremity), and
//!   the changes to current state and memberships that follow;
//! - what else the event brings: a redaction's effect, push actions, the client's
//!   transaction ID.
//!
//! Then one transaction writes it all, and one post-commit routine ([`Publisher::commit`])
//! brings every cache to what was committed: the event cache, the head, the audiences, the
//! latest positions and the recent rings. That routine runs in a task of its own, holding the
//! room's lock, so that nothing the caller does (or fails to do, if it is dropped) can leave
//! a cache behind the database.

use std::{
    collections::HashSet,
    sync::{Arc, atomic::Ordering},
};

use ruma::{
    CanonicalJsonObject, EventId, OwnedEventId, OwnedUserId, UserId,
    events::{TimelineEventType, room::server_acl::RoomServerAclEventContent},
};
use serde_json::{Value as JsonValue, json};

use super::{Publisher, PushOutcome, Timeline, Txn};
use crate::{
    error::{Error, Result},
    service::{
        latest::Key,
        rooms::{
            Pdu, PduRef, RoomGuard, RoomHead,
            state::{self, GroupBase, GroupPlan, StateMap},
        },
    },
    storage::{GroupRef, HeadUpdate, NewGroup, NewRoom, PersistEvent, Placement, TxnRef},
};

/// Where an event the checks let through goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Flow {
    /// Into the timeline now: it moves the head and is delivered by /sync.
    Live,
    /// Into the past (backfill): it takes its place in history, below every stream
    /// position, and is never delivered by /sync as new.
    Backfill,
}

/// The state before an event, and a stored group to store the state after it relative to.
#[derive(Clone)]
pub(super) struct StateBefore {
    pub map: Arc<StateMap>,
    pub base: Option<GroupBase>,
}

impl StateBefore {
    /// The room's current state: what a local event builds on.
    pub fn current(head: &RoomHead) -> Self {
        let base = (head.current_group != 0).then(|| GroupBase {
            id: head.current_group,
            chain_len: head.chain_len,
            map: Arc::clone(&head.state),
        });
        Self { map: Arc::clone(&head.state), base }
    }
}

/// What the persist step is asked to do with an event.
pub(super) struct Persist<'a> {
    pub pdu: Pdu,
    /// `None` for an outlier.
    pub before: Option<StateBefore>,
    pub placement: Placement,
    pub flow: Flow,
    /// The local client transaction that sent it.
    pub txn: Option<(&'a UserId, Txn<'a>)>,
    /// Set for a room's create event: the room row to write with it.
    pub new_room: Option<NewRoom<'a>>,
    /// Whether an event already in the graph follows this one (then it is no extremity).
    pub has_successor: bool,
    /// The event's prev_events are not here, and will never be: it starts this server's view
    /// of the graph (a join to a room through another server), so it becomes the only forward
    /// extremity, with the state given for it.
    pub restart_head: bool,
}

/// How the head moves with a live event.
struct HeadNext {
    extremities: Vec<(OwnedEventId, i64)>,
    removed: Vec<OwnedEventId>,
    add_extremity: bool,
    current: GroupRef,
    chain_len: i32,
    state: Arc<StateMap>,
    changes: Vec<(String, String, Option<OwnedEventId>)>,
    memberships: Vec<(OwnedUserId, String, OwnedEventId)>,
}

/// Everything the commit writes and publishes, owned, so that it can run in its own task.
struct Plan {
    guard: RoomGuard,
    head: Arc<RoomHead>,
    pdu: Pdu,
    placement: Placement,
    stream: Option<Flow>,
    groups: Vec<NewGroup>,
    state_group: Option<GroupRef>,
    next: Option<HeadNext>,
    unsigned: Option<String>,
    txn: Option<(OwnedUserId, ruma::OwnedDeviceId, String, String)>,
    redaction: Option<(OwnedEventId, String)>,
    new_room: Option<(String, OwnedUserId, i64)>,
    push: PushOutcome,
    wake: Vec<OwnedUserId>,
    /// Servers the event goes to.
    outbox: Vec<ruma::OwnedServerName>,
}

fn push_plan(groups: &mut Vec<NewGroup>, plan: GroupPlan) -> GroupRef {
    match plan {
        GroupPlan::Existing { id, .. } => GroupRef::Stored(id),
        GroupPlan::New(group) => {
            groups.push(group);
            GroupRef::New(groups.len() - 1)
        }
    }
}

impl Timeline {
    /// Persists a checked event with everything it changes; see the module comment.
    pub(super) async fn persist(&self, guard: &RoomGuard, head: &Arc<RoomHead>, req: Persist<'_>) -> Result<PduRef> {
        let Persist { pdu, before, placement, flow, txn, new_room, has_successor, restart_head } = req;
        let accepted = placement == Placement::Timeline;
        let mut groups = Vec::new();
        let mut after = None;
        let state_group = match &before {
            None => None,
            Some(before) => {
                let map = match &pdu.state_key {
                    Some(key) if !matches!(placement, Placement::Rejected(_)) => {
                        let mut map = (*before.map).clone();
                        map.insert((pdu.event_type.to_string(), key.clone()), pdu.event_id.clone());
                        Arc::new(map)
                    }
                    _ => Arc::clone(&before.map),
                };
                let plan = state::plan(before.base.as_ref(), &map);
                let chain_len = plan.chain_len();
                let group = push_plan(&mut groups, plan);
                after = Some((group, chain_len, map));
                Some(group)
            }
        };
        let next = match (&after, accepted && flow == Flow::Live) {
            (Some(after), true) => {
                Some(self.plan_head(head, &pdu, after, (has_successor, restart_head), &mut groups).await?)
            }
            _ => None,
        };

        let unsigned = match (&before, &pdu.state_key, accepted) {
            (Some(before), Some(key), true) => self.replaced_state(&before.map, &pdu, key).await?,
            _ => None,
        };
        let redaction = match (&pdu.redacts, &before) {
            (Some(target), Some(before)) if accepted && pdu.event_type == TimelineEventType::RoomRedaction => {
                self.redacted_form(head, &pdu, target, &before.map).await?
            }
            _ => None,
        };
        let live = accepted && flow == Flow::Live;
        // Push rules read the room as it was before the event; a failure there must not stop
        // the event, only its notifications.
        let push = match (self.publisher.push.get(), live && new_room.is_none()) {
            (Some(push), true) => push.evaluate(head, &pdu).await.unwrap_or_else(|e| {
                tracing::warn!(event_id = %pdu.event_id, error = %e, "push rule evaluation failed");
                PushOutcome::default()
            }),
            _ => PushOutcome::default(),
        };
        // Everyone the event concerns, as the room was before it, plus those whose
        // membership it changes.
        let mut wake = Vec::new();
        if live {
            if new_room.is_none() {
                wake.extend(self.members.audience_of(&pdu.room_id).await?.iter().cloned());
            }
            if let Some(next) = &next {
                wake.extend(next.memberships.iter().map(|(user, _, _)| user.clone()));
            }
        }
        // A live event of this server goes to every other server in the room, as it is after
        // the event (so a server whose user just joined gets the join).
        let outbox = if live && pdu.sender.server_name() == self.config.server_name {
            let mut servers = self.members.servers_of(&pdu.room_id).await?;
            if let Some(next) = &next {
                for (user, membership, _) in &next.memberships {
                    if crate::service::rooms::members::is_member_server(membership) {
                        servers.insert(user.server_name().to_owned());
                    }
                }
            }
            servers.remove(&self.config.server_name);
            // Not to servers the room's ACL (as it is after the event) shuts out.
            let state = next.as_ref().map_or(&head.state, |next| &next.state);
            let acl = match state.get(&("m.room.server_acl".to_owned(), String::new())) {
                Some(id) if *id == pdu.event_id => pdu.content_as::<RoomServerAclEventContent>(),
                Some(id) => self.events.pdu(id).await?.and_then(|acl| acl.content_as::<RoomServerAclEventContent>()),
                None => None,
            };
            servers.into_iter().filter(|server| acl.as_ref().is_none_or(|acl| acl.is_allowed(server))).collect()
        } else {
            Vec::new()
        };
        let plan = Plan {
            guard: guard.share(),
            head: Arc::clone(head),
            stream: match &placement {
                Placement::Timeline => Some(flow),
                _ => None,
            },
            placement,
            groups,
            state_group,
            next,
            unsigned,
            txn: txn.map(|(user, t)| (user.to_owned(), t.device_id.to_owned(), t.key.to_owned(), t.txn_id.to_owned())),
            redaction,
            new_room: new_room.map(|r| (r.room_version.to_owned(), r.creator.to_owned(), r.created_at)),
            push,
            wake,
            outbox,
            pdu,
        };
        let publisher = self.publisher.clone();
        tokio::spawn(publisher.commit(plan)).await.map_err(|e| Error::internal(format!("persisting an event: {e}")))?
    }

    /// The new head for a live event: extremities, and the current state they resolve to.
    async fn plan_head(
        &self,
        head: &RoomHead,
        pdu: &Pdu,
        (group, chain_len, after): &(GroupRef, i32, Arc<StateMap>),
        (has_successor, restart_head): (bool, bool),
        groups: &mut Vec<NewGroup>,
    ) -> Result<HeadNext> {
        let own = (!has_successor).then(|| (pdu.event_id.clone(), pdu.depth_i64()));
        let extremities = if restart_head {
            own.into_iter().collect()
        } else {
            state::extremities(&head.extremities, &pdu.prev_events, own)
        };
        let (state, current, current_len) = if extremities.len() == 1 && extremities[0].0 == pdu.event_id {
            (Arc::clone(after), *group, *chain_len)
        } else {
            // The graph forks: the current state is the resolution of the states after
            // every forward extremity.
            let mut maps = Vec::with_capacity(extremities.len());
            for (id, _) in &extremities {
                if *id == pdu.event_id {
                    maps.push(Arc::clone(after));
                    continue;
                }
                let event =
                    self.events.pdu(id).await?.ok_or_else(|| Error::internal(format!("extremity {id} lost")))?;
                let group = event.state_group.ok_or_else(|| Error::internal(format!("extremity {id} has no state")))?;
                maps.push(Arc::new(self.state.group_map(group).await?));
            }
            let resolved = self.state.resolve(&head.rules, &maps).await?;
            if resolved == *head.state {
                (Arc::clone(&head.state), GroupRef::Stored(head.current_group), head.chain_len)
            } else {
                let base = StateBefore::current(head).base;
                let plan = state::plan(base.as_ref(), &resolved);
                let len = plan.chain_len();
                (Arc::new(resolved), push_plan(groups, plan), len)
            }
        };
        let changes = state::diff(&head.state, &state);
        let memberships = self.membership_changes(head, pdu, &changes).await?;
        let kept: HashSet<&OwnedEventId> = extremities.iter().map(|(id, _)| id).collect();
        let removed = head.extremities.iter().map(|(id, _)| id).filter(|id| !kept.contains(id)).cloned().collect();
        Ok(HeadNext {
            add_extremity: kept.contains(&pdu.event_id),
            extremities,
            removed,
            current,
            chain_len: current_len,
            state,
            changes,
            memberships,
        })
    }

    /// The memberships a change of the current state changes.
    async fn membership_changes(
        &self,
        head: &RoomHead,
        pdu: &Pdu,
        changes: &[(String, String, Option<OwnedEventId>)],
    ) -> Result<Vec<(OwnedUserId, String, OwnedEventId)>> {
        let member_changes: Vec<_> = changes.iter().filter(|(t, _, _)| t == "m.room.member").collect();
        if member_changes.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<OwnedEventId> =
            member_changes.iter().filter_map(|(_, _, id)| id.clone()).filter(|id| *id != pdu.event_id).collect();
        let loaded = self.events.pdu_map(&ids).await?;
        let mut memberships = Vec::with_capacity(member_changes.len());
        for (_, key, id) in member_changes {
            let Ok(user) = OwnedUserId::try_from(key.as_str()) else {
                tracing::warn!(room_id = %pdu.room_id, state_key = %key, "member state key is not a user ID");
                continue;
            };
            let entry = match id {
                Some(id) if *id == pdu.event_id => pdu.membership().map(|m| (m, id.clone())),
                Some(id) => loaded.get(id).and_then(|p| p.membership()).map(|m| (m, id.clone())),
                // Resolution dropped the member event: no membership is left.
                None => head.state_event("m.room.member", key).map(|old| ("leave".to_owned(), old.clone())),
            };
            if let Some((membership, event_id)) = entry {
                memberships.push((user, membership, event_id));
            }
        }
        Ok(memberships)
    }

    /// `unsigned` for a state event: what it replaces, as clients expect.
    async fn replaced_state(&self, before: &StateMap, pdu: &Pdu, key: &str) -> Result<Option<String>> {
        let Some(replaced) = before.get(&(pdu.event_type.to_string(), key.to_owned())) else { return Ok(None) };
        let Some(prev) = self.events.pdu(replaced).await? else { return Ok(None) };
        let prev_content: JsonValue = serde_json::from_str(prev.content.get())?;
        Ok(Some(
            json!({"prev_content": prev_content, "replaces_state": prev.event_id, "prev_sender": prev.sender})
                .to_string(),
        ))
    }

    /// The redacted JSON of `target`, to store in its place, when it is in this room.
    async fn redacted_form(
        &self,
        head: &RoomHead,
        redaction: &Pdu,
        target: &EventId,
        state_before: &StateMap,
    ) -> Result<Option<(OwnedEventId, String)>> {
        let Some(original) = self.events.pdu(target).await? else { return Ok(None) };
        if original.room_id != redaction.room_id || original.redacted_by.is_some() {
            return Ok(None);
        }
        // The auth rules let any member send a redaction; applying it needs more (spec, room
        // versions 3+, "Redactions"): the same server as the original's sender, or the power
        // to redact others' events. Local redactions were checked before they were built;
        // another server's that fails is kept, but redacts nothing.
        if redaction.sender.server_name() != original.sender.server_name() {
            let power = self.state.power_levels_in(&head.rules, state_before).await?;
            if !power.user_can_redact_event_of_other(&redaction.sender) {
                tracing::info!(event_id = %redaction.event_id, %target, "a redaction without the power to redact");
                return Ok(None);
            }
        }
        let object: CanonicalJsonObject = serde_json::from_str(original.json.get())?;
        let redacted = ruma::canonical_json::redact(object, &head.rules.redaction, None)
            .map_err(|e| Error::internal(format!("redacting {target}: {e}")))?;
        Ok(Some((original.event_id.clone(), serde_json::to_string(&redacted)?)))
    }
}

impl Publisher {
    /// Commits a plan and publishes it: the one post-commit routine of every event.
    async fn commit(self, plan: Plan) -> Result<PduRef> {
        let room_id = plan.pdu.room_id.clone();
        // Loads racing this commit must not cache what they read.
        let _head = self.state.head_write(&room_id);
        let _members = self.members.write(&room_id);
        let _event = self.events.write(&plan.pdu.event_id);
        let target = plan.redaction.as_ref().map(|(target, _)| target.clone());
        let _target = target.as_ref().map(|target| self.events.write(target));
        let _latest = self.latest_generations.write(&room_id);

        let mut live = (plan.stream == Some(Flow::Live)).then(|| self.stream.allocate());
        let stream_pos = match plan.stream {
            Some(Flow::Live) => live.as_ref().map(|pos| pos.get()),
            Some(Flow::Backfill) => Some(self.backfill.fetch_sub(1, Ordering::SeqCst)),
            None => None,
        };
        if let (Some(pos), Some(next)) = (&live, &plan.next)
            && !next.memberships.is_empty()
        {
            // Who shares a room with whom changes: device lists may change for room-mates.
            self.notifier.latest().note(Key::DeviceLists, pos.get());
        }
        let pdu = &plan.pdu;
        let event_type = pdu.event_type.to_string();
        let head_update = plan.next.as_ref().map(|next| HeadUpdate {
            removed_extremities: &next.removed,
            add_extremity: next.add_extremity,
            current_group: next.current,
            group_changed: next.current != GroupRef::Stored(plan.head.current_group),
            state_changes: &next.changes,
            memberships: &next.memberships,
        });
        let txn = plan.txn.as_ref().map(|(user_id, device_id, key, txn_id)| TxnRef { user_id, device_id, key, txn_id });
        let new_room = plan.new_room.as_ref().map(|(room_version, creator, created_at)| NewRoom {
            room_version,
            creator,
            created_at: *created_at,
        });
        let result = self
            .storage
            .events
            .persist(PersistEvent {
                event_id: &pdu.event_id,
                room_id: &room_id,
                event_type: &event_type,
                state_key: pdu.state_key.as_deref(),
                sender: &pdu.sender,
                origin_server_ts: i64::from(pdu.origin_server_ts.get()),
                depth: pdu.depth_i64(),
                json: pdu.json.get(),
                unsigned: plan.unsigned.as_deref(),
                prev_events: &pdu.prev_events,
                auth_events: &pdu.auth_events,
                placement: &plan.placement,
                stream_pos,
                groups: &plan.groups,
                state_group: plan.state_group,
                head: head_update,
                txn,
                redaction: plan.redaction.as_ref().map(|(target, json)| (&**target, json.as_str())),
                new_room,
                push_actions: &plan.push.actions,
                push_queue: &plan.push.queue,
                outbox: &plan.outbox,
            })
            .await;
        let written = match result {
            Ok(written) => written,
            Err(e) => {
                // A failed commit may still have committed (a connection lost at COMMIT):
                // forget what this room's caches say, so that the next reader reloads it.
                self.state.forget_head(&room_id);
                self.members.forget_room(&room_id);
                self.events.forget(&pdu.event_id);
                self.latest.remove(&room_id);
                self.recent.forget(&room_id);
                return Err(e.into());
            }
        };
        let group_id = |group: GroupRef| match group {
            GroupRef::Stored(id) => Ok(id),
            GroupRef::New(i) => written.get(i).copied().ok_or_else(|| Error::internal("state group not written")),
        };
        let Plan {
            head,
            pdu,
            placement,
            state_group,
            next,
            unsigned,
            redaction,
            new_room,
            push,
            wake,
            guard,
            outbox,
            ..
        } = plan;
        // The queue rows are committed: the destinations' workers may send them now.
        if !outbox.is_empty()
            && let Some(queue) = self.outbox.get()
        {
            queue.queued(&outbox);
        }
        let pdu = Arc::new(Pdu {
            stream_pos: stream_pos.unwrap_or(0),
            state_group: state_group.map(group_id).transpose()?,
            placement,
            unsigned: unsigned.map(serde_json::value::RawValue::from_string).transpose()?,
            ..pdu
        });
        self.events.insert(&pdu);
        if let Some((target, _)) = &redaction {
            self.events.forget(target);
            self.recent.forget(&room_id);
        }
        if let Some(next) = next {
            self.state.set_head(Arc::new(RoomHead {
                extremities: next.extremities,
                current_group: group_id(next.current)?,
                chain_len: next.chain_len,
                state: next.state,
                ..(*head).clone()
            }));
            self.members.apply(&room_id, &next.memberships);
        }
        if let Some(pos) = &mut live {
            let previous = self.latest.get(&room_id);
            self.latest.put(room_id.clone(), pos.get(), 1);
            self.recent.remember(&pdu, if new_room.is_some() { Some(0) } else { previous });
            let notifier = Arc::clone(&self.notifier);
            pos.on_visible(move || notifier.notify_users(wake.iter().map(|u| &**u)));
            if !push.queue.is_empty()
                && let Some(evaluator) = self.push.get()
            {
                let evaluator = Arc::clone(evaluator);
                pos.on_visible(move || evaluator.queued());
            }
        }
        // Only now, with every cache up to date, may readers see the event.
        drop(live);
        drop(guard);
        Ok(pdu)
    }
}
