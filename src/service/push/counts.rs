//! Unread counts and the notification list.

use ruma::{RoomId, UserId};

use super::PushService;
use crate::{
    error::Result,
    storage::push::{NotificationRow, UnreadCounts},
};

impl PushService {
    /// A room's unread counts for the user since their read receipt: the main timeline, and
    /// per thread.
    pub async fn unread(
        &self,
        user_id: &UserId,
        room_id: &RoomId,
    ) -> Result<(UnreadCounts, Vec<(String, UnreadCounts)>)> {
        let mut main = UnreadCounts::default();
        let mut threads = Vec::new();
        for (thread, counts) in self.storage.push.unread(user_id, room_id).await? {
            if thread.is_empty() {
                main = counts;
            } else {
                threads.push((thread, counts));
            }
        }
        Ok((main, threads))
    }

    /// Where the user's unread events start: after their read receipt, and after their own
    /// latest membership change (joining a room reads what came before, such as the invite).
    async fn read_up_to(&self, user_id: &UserId, room_id: &RoomId) -> Result<i64> {
        let receipt = self.storage.receipts.read_up_to(room_id, user_id).await?;
        let membership = self.storage.state.membership(room_id, user_id).await?.map_or(0, |m| m.stream_pos);
        Ok(receipt.max(membership))
    }

    /// The user's notifications, newest first, before stream position `before`, with whether
    /// each is read.
    pub async fn notifications(
        &self,
        user_id: &UserId,
        before: i64,
        limit: i64,
        only_highlight: bool,
    ) -> Result<Vec<(NotificationRow, bool)>> {
        let rows = self.storage.push.notifications(user_id, before, limit, only_highlight).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let read = row.stream_pos <= self.read_up_to(user_id, &row.room_id).await?;
            out.push((row, read));
        }
        Ok(out)
    }
}
