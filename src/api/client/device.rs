//! Device management.

use std::sync::Arc;

use axum::{Router, extract::State};
use ruma::{
    MilliSecondsSinceUnixEpoch, OwnedDeviceId, UInt,
    api::client::{
        device::{self as ruma_device, delete_device, delete_devices, get_device, get_devices, update_device},
        uiaa::{AuthData, AuthFlow, AuthType},
    },
};

use crate::{
    api::{
        extract::{Ruma, RumaResult},
        router::RumaRouter as _,
    },
    error::Result,
    service::{Services, auth::AuthedUser, uiaa::UiaaRequest},
    storage::Device,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(list).ruma(get).ruma(update).ruma(delete).ruma(delete_many)
}

fn to_ruma(device: Device) -> ruma_device::Device {
    let mut out = ruma_device::Device::new(device.device_id);
    out.display_name = device.display_name;
    out.last_seen_ip = device.last_seen_ip;
    out.last_seen_ts = device.last_seen_ts.and_then(|ts| UInt::try_from(ts).ok()).map(MilliSecondsSinceUnixEpoch);
    out
}

/// `GET /_matrix/client/v3/devices`
/// <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3devices>
async fn list(
    State(services): State<Arc<Services>>,
    req: Ruma<get_devices::v3::Request>,
) -> RumaResult<get_devices::v3::Response> {
    let devices = services.devices.list(&req.auth.user_id).await?;
    Ok(get_devices::v3::Response::new(devices.into_iter().map(to_ruma).collect()).into())
}

/// `GET /_matrix/client/v3/devices/{deviceId}`
/// <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3devicesdeviceid>
async fn get(
    State(services): State<Arc<Services>>,
    req: Ruma<get_device::v3::Request>,
) -> RumaResult<get_device::v3::Response> {
    let device = services.devices.get(&req.auth.user_id, &req.body.device_id).await?;
    Ok(get_device::v3::Response::new(to_ruma(device)).into())
}

/// `PUT /_matrix/client/v3/devices/{deviceId}`
/// <https://spec.matrix.org/v1.19/client-server-api/#put_matrixclientv3devicesdeviceid>
async fn update(
    State(services): State<Arc<Services>>,
    req: Ruma<update_device::v3::Request>,
) -> RumaResult<update_device::v3::Response> {
    services.devices.rename(&req.auth.user_id, &req.body.device_id, req.body.display_name.as_deref()).await?;
    Ok(update_device::v3::Response::new().into())
}

/// `DELETE /_matrix/client/v3/devices/{deviceId}`
/// <https://spec.matrix.org/v1.19/client-server-api/#delete_matrixclientv3devicesdeviceid>
async fn delete(
    State(services): State<Arc<Services>>,
    req: Ruma<delete_device::v3::Request>,
) -> RumaResult<delete_device::v3::Response> {
    services.devices.get(&req.auth.user_id, &req.body.device_id).await?;
    let devices = vec![req.body.device_id.clone()];
    delete_with_uiaa(&services, &req.auth, &devices, req.body.auth.as_ref()).await?;
    Ok(delete_device::v3::Response::new().into())
}

/// `POST /_matrix/client/v3/delete_devices`
/// <https://spec.matrix.org/v1.19/client-server-api/#post_matrixclientv3delete_devices>
async fn delete_many(
    State(services): State<Arc<Services>>,
    req: Ruma<delete_devices::v3::Request>,
) -> RumaResult<delete_devices::v3::Response> {
    delete_with_uiaa(&services, &req.auth, &req.body.devices, req.body.auth.as_ref()).await?;
    Ok(delete_devices::v3::Response::new().into())
}

/// Deleting devices logs them out, so it needs the account password.
async fn delete_with_uiaa(
    services: &Services,
    user: &AuthedUser,
    devices: &[OwnedDeviceId],
    auth: Option<&AuthData>,
) -> Result<()> {
    services
        .uiaa
        .authenticate(UiaaRequest {
            scope: "delete_devices",
            user_id: Some(&user.user_id),
            flows: vec![AuthFlow::new(vec![AuthType::Password])],
            auth,
        })
        .await?;
    services.devices.delete(&user.user_id, devices).await
}
