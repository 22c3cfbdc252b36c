//! Power levels as ruma models them, including v12's privileged room creators.

use ruma::{
    OwnedUserId, RoomId,
    events::room::power_levels::{RoomPowerLevels, RoomPowerLevelsEventContent, RoomPowerLevelsSource},
    room_version_rules::RoomVersionRules,
};

use super::{RoomState, StateMap};
use crate::error::{Error, Result};

#[derive(serde::Deserialize)]
struct CreateContent {
    #[serde(default)]
    additional_creators: Vec<OwnedUserId>,
}

impl RoomState {
    /// The room's current power levels.
    pub async fn power_levels(&self, room_id: &RoomId) -> Result<RoomPowerLevels> {
        let head = self.head(room_id).await?.ok_or_else(|| Error::not_found("Room not found"))?;
        self.power_levels_in(&head.rules, &head.state).await
    }

    /// The power levels of a state of the room (the state before an event, say).
    pub async fn power_levels_in(&self, rules: &RoomVersionRules, state: &StateMap) -> Result<RoomPowerLevels> {
        let ids: Vec<_> = [("m.room.power_levels", ""), ("m.room.create", "")]
            .iter()
            .filter_map(|(t, k)| state.get(&((*t).to_owned(), (*k).to_owned())).cloned())
            .collect();
        let events = self.events.pdu_map(&ids).await?;
        let event_of =
            |event_type: &str| state.get(&(event_type.to_owned(), String::new())).and_then(|id| events.get(id));
        let content: Option<RoomPowerLevelsEventContent> =
            event_of("m.room.power_levels").and_then(|pdu| pdu.content_as());
        let mut creators = Vec::new();
        if let Some(create) = event_of("m.room.create") {
            creators.push(create.sender.clone());
            if let Some(content) = create.content_as::<CreateContent>() {
                creators.extend(content.additional_creators);
            }
        }
        Ok(RoomPowerLevels::new(RoomPowerLevelsSource::from(content), &rules.authorization, creators))
    }
}
