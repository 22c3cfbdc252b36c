//! Account data, global and per room.

use std::sync::Arc;

use ruma::{RoomId, UserId};
use serde_json::value::RawValue;

use super::{latest::Key, notifier::Notifier};
use crate::{
    error::{Error, Result},
    storage::{Storage, StreamAllocator},
};

/// Types the server manages itself; clients change them through their own endpoints.
const SERVER_MANAGED: &[&str] = &["m.fully_read", "m.push_rules"];

pub struct AccountDataService {
    storage: Storage,
    stream: Arc<StreamAllocator>,
    notifier: Arc<Notifier>,
}

impl AccountDataService {
    pub fn new(storage: Storage, stream: Arc<StreamAllocator>, notifier: Arc<Notifier>) -> Self {
        Self { storage, stream, notifier }
    }

    /// Stores `content` (which must be a JSON object) as the user's `data_type` account data.
    pub async fn set(
        &self,
        user_id: &UserId,
        room_id: Option<&RoomId>,
        data_type: &str,
        content: &RawValue,
    ) -> Result<()> {
        if SERVER_MANAGED.contains(&data_type) {
            return Err(Error::server_managed(format!("{data_type} cannot be set through the account data API")));
        }
        if !content.get().trim_start().starts_with('{') {
            return Err(Error::bad_json("Account data content must be a JSON object"));
        }
        self.store(user_id, room_id, data_type, content).await
    }

    /// Stores account data without the client-facing checks; for server-managed types.
    pub async fn store(
        &self,
        user_id: &UserId,
        room_id: Option<&RoomId>,
        data_type: &str,
        content: &RawValue,
    ) -> Result<()> {
        let mut pos = self.stream.allocate();
        self.notifier.latest().note(Key::AccountData(user_id.to_owned()), pos.get());
        self.storage.account_data.set(user_id, room_id, data_type, content, &pos).await?;
        let (notifier, user_id) = (Arc::clone(&self.notifier), user_id.to_owned());
        pos.on_visible(move || notifier.notify_users([&*user_id]));
        drop(pos);
        Ok(())
    }

    pub async fn get(&self, user_id: &UserId, room_id: Option<&RoomId>, data_type: &str) -> Result<Box<RawValue>> {
        self.find(user_id, room_id, data_type).await?.ok_or_else(|| Error::not_found("Account data not found"))
    }

    /// The content, if there is any.
    pub async fn find(
        &self,
        user_id: &UserId,
        room_id: Option<&RoomId>,
        data_type: &str,
    ) -> Result<Option<Box<RawValue>>> {
        Ok(self.storage.account_data.get(user_id, room_id, data_type).await?)
    }
}
