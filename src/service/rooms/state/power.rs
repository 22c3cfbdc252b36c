//! Power levels as ruma models them, including v12's privileged room creators.

use ruma::{
    OwnedUserId, RoomId,
    events::room::power_levels::{RoomPowerLevels, RoomPowerLevelsEventContent, RoomPowerLevelsSource},
};

use super::RoomState;
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
        let content: Option<RoomPowerLevelsEventContent> =
            self.state_content(room_id, "m.room.power_levels", "").await?;
        let create = self.current_state_event(room_id, "m.room.create", "").await?;
        let mut creators = Vec::new();
        if let Some(create) = create {
            creators.push(create.sender.clone());
            if let Some(content) = create.content_as::<CreateContent>() {
                creators.extend(content.additional_creators);
            }
        }
        Ok(RoomPowerLevels::new(RoomPowerLevelsSource::from(content), &head.rules.authorization, creators))
    }
}
