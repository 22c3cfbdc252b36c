//! Federation's signed client, as the room pipeline's `EventSource` (missing events) and the
//! outbound queue's `Transport` (transactions).

use ruma::{
    CanonicalJsonObject, EventId, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedTransactionId, RoomId, RoomVersionId,
    ServerName, UInt,
    api::federation::{
        event::{get_event, get_missing_events, get_room_state_ids},
        membership::create_invite,
        transactions::send_transaction_message,
    },
    serde::Raw,
};
use serde_json::value::RawValue;

use super::sender::{Delivery, Transport};
use crate::{
    error::{Error, Result},
    service::rooms::timeline::EventSource,
};

/// The signed client, as what the pipeline and the queue send through.
pub struct Remote(pub parley_federation::client::FederationClient);

fn parse_pdu(raw: &RawValue) -> Option<CanonicalJsonObject> {
    serde_json::from_str(raw.get()).ok()
}

#[async_trait::async_trait]
impl EventSource for Remote {
    async fn fetch_events(
        &self,
        origin: &ServerName,
        _room_id: &RoomId,
        ids: &[OwnedEventId],
    ) -> Result<Vec<CanonicalJsonObject>> {
        let mut found = Vec::new();
        for id in ids {
            match self.0.send(origin, get_event::v1::Request::new(id.clone())).await {
                Ok(response) => found.extend(parse_pdu(&response.pdu)),
                Err(e) => tracing::info!(%origin, event_id = %id, error = %e, "could not fetch an event"),
            }
        }
        Ok(found)
    }

    async fn missing_events(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        earliest: &[OwnedEventId],
        latest: &[OwnedEventId],
        limit: u32,
    ) -> Result<Vec<CanonicalJsonObject>> {
        let mut request = get_missing_events::v1::Request::new(room_id.to_owned(), earliest.to_vec(), latest.to_vec());
        request.limit = UInt::from(limit);
        let response = self
            .0
            .send(origin, request)
            .await
            .map_err(|e| Error::internal(format!("get_missing_events from {origin}: {e}")))?;
        Ok(response.events.iter().filter_map(|raw| parse_pdu(raw)).collect())
    }

    async fn state_ids(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
    ) -> Result<(Vec<OwnedEventId>, Vec<OwnedEventId>)> {
        let request = get_room_state_ids::v1::Request::new(event_id.to_owned(), room_id.to_owned());
        let response =
            self.0.send(origin, request).await.map_err(|e| Error::internal(format!("state_ids from {origin}: {e}")))?;
        Ok((response.pdu_ids, response.auth_chain_ids))
    }

    async fn send_invite(
        &self,
        destination: &ServerName,
        version: &RoomVersionId,
        event_id: &EventId,
        event: CanonicalJsonObject,
        invite_room_state: Vec<Box<RawValue>>,
    ) -> Result<CanonicalJsonObject> {
        let room_id = match event.get("room_id") {
            Some(ruma::CanonicalJsonValue::String(room_id)) => {
                ruma::OwnedRoomId::try_from(room_id.as_str()).map_err(|e| Error::bad_json(e.to_string()))?
            }
            _ => return Err(Error::bad_json("The invite has no room ID")),
        };
        let raw = RawValue::from_string(serde_json::to_string(&event)?)?;
        let state =
            invite_room_state.into_iter().map(ruma::api::federation::membership::RawStrippedState::Pdu).collect();
        let request = create_invite::v2::Request::new(room_id, event_id.to_owned(), version.clone(), raw, state);
        let response = self.0.send(destination, request).await.map_err(|e| match e.status() {
            Some(http::StatusCode::FORBIDDEN) => Error::forbidden(format!("{destination} refused the invite: {e}")),
            _ => Error::matrix(
                ruma::api::error::ErrorKind::Unknown,
                format!("Could not reach {destination} to invite: {e}"),
            ),
        })?;
        serde_json::from_str(response.event.get())
            .map_err(|e| Error::bad_json(format!("{destination} answered the invite with an invalid event: {e}")))
    }
}

#[async_trait::async_trait]
impl Transport for Remote {
    async fn send_transaction(
        &self,
        destination: &ServerName,
        txn_id: &str,
        pdus: Vec<Box<RawValue>>,
        edus: Vec<Box<RawValue>>,
    ) -> Delivery {
        let mut request = send_transaction_message::v1::Request::new(
            OwnedTransactionId::from(txn_id),
            self.0.origin().to_owned(),
            MilliSecondsSinceUnixEpoch::now(),
        );
        request.pdus = pdus;
        request.edus = edus.into_iter().map(Raw::from_json).collect();
        match self.0.send(destination, request).await {
            // Whatever it said of each PDU, the destination has the transaction: a PDU it
            // refused will not be accepted by sending it again.
            Ok(_) => Delivery::Accepted,
            // A transaction the destination will never take (malformed in its eyes, or
            // refused outright) is given up; a 401 is retried: it may not have our key yet.
            // A 404 is not final: a proxy or a delegation being set up says it too.
            Err(e) if matches!(e.status().map(|s| s.as_u16()), Some(400 | 403)) => Delivery::Refused(e.to_string()),
            Err(e) => Delivery::Retry(e.to_string()),
        }
    }
}
