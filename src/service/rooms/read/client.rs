//! Events as clients see them.

use std::collections::HashMap;

use ruma::{DeviceId, MilliSecondsSinceUnixEpoch, OwnedEventId, UserId};
use serde_json::value::RawValue;

use super::Reader;
use crate::error::{Error, Result};
use crate::service::rooms::{ClientExtras, PduRef};

/// Who is looking: the user, and the device (whose own transaction IDs it is shown).
#[derive(Clone, Copy)]
pub struct Viewer<'a> {
    pub user_id: &'a UserId,
    pub device_id: Option<&'a DeviceId>,
}

impl Reader {
    /// The client-format JSON of `pdus`, in order: with `unsigned.age`, the viewer's own
    /// `transaction_id`, and `unsigned.redacted_because` for redacted events.
    pub async fn client_events(&self, viewer: Viewer<'_>, pdus: &[PduRef]) -> Result<Vec<Box<RawValue>>> {
        let redaction_ids: Vec<OwnedEventId> = pdus.iter().filter_map(|p| p.redacted_by.clone()).collect();
        let redactions: HashMap<OwnedEventId, PduRef> =
            self.events.pdus(&redaction_ids).await?.into_iter().map(|p| (p.event_id.clone(), p)).collect();
        let own: Vec<OwnedEventId> =
            pdus.iter().filter(|p| p.sender == viewer.user_id).map(|p| p.event_id.clone()).collect();
        let txn_ids: HashMap<OwnedEventId, String> = match viewer.device_id {
            Some(device_id) if !own.is_empty() => {
                self.storage.events.txn_ids(viewer.user_id, device_id, &own).await?.into_iter().collect()
            }
            _ => HashMap::new(),
        };
        let now = MilliSecondsSinceUnixEpoch::now();
        pdus.iter()
            .map(|pdu| {
                let redacted_because = pdu
                    .redacted_by
                    .as_ref()
                    .and_then(|id| redactions.get(id))
                    .map(|r| r.to_client(ClientExtras { now, transaction_id: None, redacted_because: None }));
                let extras = ClientExtras {
                    now,
                    transaction_id: txn_ids.get(&pdu.event_id).map(String::as_str),
                    redacted_because,
                };
                Ok(serde_json::value::to_raw_value(&pdu.to_client(extras))?)
            })
            .collect()
    }

    pub async fn client_event(&self, viewer: Viewer<'_>, pdu: &PduRef) -> Result<Box<RawValue>> {
        self.client_events(viewer, std::slice::from_ref(pdu))
            .await?
            .pop()
            .ok_or_else(|| Error::internal("event vanished"))
    }
}
