//! Pure graph bookkeeping: how a state is stored as a group (a delta on a base group, or a
//! snapshot), how the current state changes, and how forward extremities move.

use std::{collections::HashSet, sync::Arc};

use ruma::OwnedEventId;

use super::head::StateMap;
use crate::storage::{GroupRef, NewGroup};

/// Deltas a state group may stack on its snapshot before the next group is a full snapshot.
/// Bounds the cost of reading the state at any event.
pub const MAX_STATE_CHAIN: i32 = 100;

/// A stored state group and its state, to store another state relative to.
#[derive(Clone, Debug)]
pub struct GroupBase {
    pub id: i64,
    pub chain_len: i32,
    pub map: Arc<StateMap>,
}

/// How to store a state.
#[derive(Debug)]
pub enum GroupPlan {
    /// It is exactly the state of this stored group.
    Existing { id: i64, chain_len: i32 },
    /// It needs a new group.
    New(NewGroup),
}

impl GroupPlan {
    /// The new group's delta chain length, or the existing one's.
    pub fn chain_len(&self) -> i32 {
        match self {
            Self::Existing { chain_len, .. } => *chain_len,
            Self::New(group) => group.chain_len,
        }
    }
}

/// Plans how to store `target`: as `base` when equal, as a delta on `base` when `target`
/// only adds or replaces entries and the chain is not too long, else as a snapshot. (A state
/// resolution can drop an entry; deltas cannot express that, so such a state is a snapshot.)
pub fn plan(base: Option<&GroupBase>, target: &StateMap) -> GroupPlan {
    if let Some(base) = base {
        // Most events leave the state as they found it, and share its map: no need to look.
        if std::ptr::eq(&*base.map, target) || *base.map == *target {
            return GroupPlan::Existing { id: base.id, chain_len: base.chain_len };
        }
        let removes = base.map.keys().any(|key| !target.contains_key(key));
        if !removes && base.chain_len + 1 < MAX_STATE_CHAIN {
            let entries: Vec<_> = target
                .iter()
                .filter(|(key, id)| base.map.get(*key) != Some(*id))
                .map(|((t, k), id)| (t.clone(), k.clone(), id.clone()))
                .collect();
            return GroupPlan::New(NewGroup {
                prev: Some(GroupRef::Stored(base.id)),
                chain_len: base.chain_len + 1,
                entries,
            });
        }
    }
    let entries = target.iter().map(|((t, k), id)| (t.clone(), k.clone(), id.clone())).collect();
    GroupPlan::New(NewGroup { prev: None, chain_len: 0, entries })
}

/// The entries of the current state that change from `old` to `new`: set, or removed.
pub fn diff(old: &StateMap, new: &StateMap) -> Vec<(String, String, Option<OwnedEventId>)> {
    if std::ptr::eq(old, new) {
        return Vec::new();
    }
    let mut changes: Vec<_> = new
        .iter()
        .filter(|(key, id)| old.get(*key) != Some(*id))
        .map(|((t, k), id)| (t.clone(), k.clone(), Some(id.clone())))
        .collect();
    changes.extend(old.keys().filter(|key| !new.contains_key(*key)).map(|(t, k)| (t.clone(), k.clone(), None)));
    changes.sort();
    changes
}

/// The forward extremities once `new` joins the graph after `prev_events`: the old ones,
/// minus those it follows, plus itself unless something already follows it.
pub fn extremities(
    old: &[(OwnedEventId, i64)],
    prev_events: &[OwnedEventId],
    new: Option<(OwnedEventId, i64)>,
) -> Vec<(OwnedEventId, i64)> {
    let followed: HashSet<&OwnedEventId> = prev_events.iter().collect();
    let mut next: Vec<_> = old.iter().filter(|(id, _)| !followed.contains(id)).cloned().collect();
    if let Some(new) = new
        && !next.iter().any(|(id, _)| *id == new.0)
    {
        next.push(new);
    }
    next
}

#[cfg(test)]
mod tests {
    use ruma::event_id;

    use super::*;

    fn state(entries: &[(&str, &str, &str)]) -> StateMap {
        entries
            .iter()
            .map(|(t, k, id)| {
                (((*t).to_owned(), (*k).to_owned()), OwnedEventId::try_from(*id).unwrap_or_else(|_| unreachable!()))
            })
            .collect()
    }

    fn base(id: i64, chain_len: i32, map: StateMap) -> GroupBase {
        GroupBase { id, chain_len, map: Arc::new(map) }
    }

    #[test]
    fn equal_state_reuses_the_group() {
        let s = state(&[("m.room.create", "", "$a")]);
        assert!(matches!(plan(Some(&base(7, 3, s.clone())), &s), GroupPlan::Existing { id: 7, chain_len: 3 }));
    }

    #[test]
    fn an_added_or_replaced_entry_is_a_delta_on_the_base() {
        let b = base(7, 3, state(&[("m.room.create", "", "$a"), ("m.room.name", "", "$n1")]));
        let target = state(&[("m.room.create", "", "$a"), ("m.room.name", "", "$n2"), ("m.room.topic", "", "$t")]);
        let GroupPlan::New(group) = plan(Some(&b), &target) else { panic!("expected a new group") };
        assert_eq!(group.prev, Some(GroupRef::Stored(7)));
        assert_eq!(group.chain_len, 4);
        let mut entries = group.entries;
        entries.sort();
        assert_eq!(
            entries,
            vec![
                ("m.room.name".to_owned(), String::new(), event_id!("$n2").to_owned()),
                ("m.room.topic".to_owned(), String::new(), event_id!("$t").to_owned()),
            ]
        );
    }

    #[test]
    fn a_removed_entry_or_a_long_chain_makes_a_snapshot() {
        let target = state(&[("m.room.create", "", "$a")]);
        let b = base(7, 3, state(&[("m.room.create", "", "$a"), ("m.room.name", "", "$n")]));
        let GroupPlan::New(group) = plan(Some(&b), &target) else { panic!("expected a new group") };
        assert_eq!((group.prev, group.chain_len, group.entries.len()), (None, 0, 1));

        let long = base(7, MAX_STATE_CHAIN - 1, state(&[]));
        let GroupPlan::New(group) = plan(Some(&long), &target) else { panic!("expected a new group") };
        assert_eq!((group.prev, group.chain_len), (None, 0));

        let GroupPlan::New(group) = plan(None, &target) else { panic!("expected a new group") };
        assert_eq!((group.prev, group.chain_len), (None, 0));
    }

    #[test]
    fn diff_lists_sets_and_removals() {
        let old = state(&[("a", "", "$1"), ("b", "", "$2"), ("c", "", "$3")]);
        let new = state(&[("a", "", "$1"), ("b", "", "$9"), ("d", "", "$4")]);
        assert_eq!(
            diff(&old, &new),
            vec![
                ("b".to_owned(), String::new(), Some(event_id!("$9").to_owned())),
                ("c".to_owned(), String::new(), None),
                ("d".to_owned(), String::new(), Some(event_id!("$4").to_owned())),
            ]
        );
        assert!(diff(&old, &old).is_empty());
    }

    #[test]
    fn extremities_are_old_minus_prev_plus_new() {
        let (a, b, c, d) = (event_id!("$a"), event_id!("$b"), event_id!("$c"), event_id!("$d"));
        let old = vec![(a.to_owned(), 5), (b.to_owned(), 6)];
        // A linear append replaces what it follows.
        assert_eq!(extremities(&old, &[a.to_owned(), b.to_owned()], Some((c.to_owned(), 7))), vec![(c.to_owned(), 7)]);
        // A fork from further back adds an extremity beside the others.
        assert_eq!(
            extremities(&old, &[event_id!("$old").to_owned()], Some((d.to_owned(), 3))),
            vec![(a.to_owned(), 5), (b.to_owned(), 6), (d.to_owned(), 3)]
        );
        // An event that something already follows only removes what it follows.
        assert_eq!(extremities(&old, &[a.to_owned()], None), vec![(b.to_owned(), 6)]);
    }
}
