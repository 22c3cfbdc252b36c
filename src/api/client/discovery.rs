//! Server discovery: `/versions`, `/.well-known/matrix/client`, `/capabilities`.
// m.set_displayname and m.set_avatar_url were superseded in v1.16, but clients still read them.
#![allow(deprecated)]

use std::sync::Arc;

use axum::{Router, extract::State};
use ruma::api::client::discovery::{
    discover_homeserver::{self, HomeserverInfo},
    get_capabilities::{
        self,
        v3::{
            Capabilities, ChangePasswordCapability, ProfileFieldsCapability, RoomVersionStability,
            RoomVersionsCapability, SetAvatarUrlCapability, SetDisplayNameCapability, ThirdPartyIdChangesCapability,
        },
    },
    get_supported_versions,
};

use crate::{
    api::{
        extract::{Ruma, RumaResult},
        router::RumaRouter as _,
    },
    config::SUPPORTED_ROOM_VERSIONS,
    service::Services,
};

/// The spec versions Parley serves in full for what clients select by version. A version is
/// listed only once every endpoint a client may switch on because of it is implemented;
/// v1.11 moved media to authenticated endpoints, which Parley does not serve yet.
const SUPPORTED_VERSIONS: &[&str] = &["v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10"];

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(versions).ruma(well_known).ruma(capabilities)
}

/// `GET /_matrix/client/versions`
/// <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientversions>
async fn versions(
    _: State<Arc<Services>>,
    _: Ruma<get_supported_versions::Request>,
) -> RumaResult<get_supported_versions::Response> {
    let versions = SUPPORTED_VERSIONS.iter().map(|v| (*v).to_owned()).collect();
    Ok(get_supported_versions::Response::new(versions).into())
}

/// `GET /.well-known/matrix/client`
/// <https://spec.matrix.org/v1.19/client-server-api/#getwell-knownmatrixclient>
async fn well_known(
    State(services): State<Arc<Services>>,
    _: Ruma<discover_homeserver::Request>,
) -> RumaResult<discover_homeserver::Response> {
    let homeserver = HomeserverInfo::new(services.config.public_baseurl());
    Ok(discover_homeserver::Response::new(homeserver).into())
}

/// `GET /_matrix/client/v3/capabilities`
/// <https://spec.matrix.org/v1.19/client-server-api/#get_matrixclientv3capabilities>
async fn capabilities(
    State(services): State<Arc<Services>>,
    _: Ruma<get_capabilities::v3::Request>,
) -> RumaResult<get_capabilities::v3::Response> {
    let available = SUPPORTED_ROOM_VERSIONS.iter().map(|v| (v.clone(), RoomVersionStability::Stable)).collect();
    let mut capabilities = Capabilities::new();
    capabilities.change_password = ChangePasswordCapability::new(true);
    capabilities.room_versions = RoomVersionsCapability::new(services.config.rooms.default_version.clone(), available);
    capabilities.set_displayname = SetDisplayNameCapability::new(true);
    capabilities.set_avatar_url = SetAvatarUrlCapability::new(true);
    capabilities.profile_fields = Some(ProfileFieldsCapability::new(true));
    capabilities.thirdparty_id_changes = ThirdPartyIdChangesCapability::new(false);
    Ok(get_capabilities::v3::Response::new(capabilities).into())
}
