//! The grants the operator honours, from two watch caches: Gateway API's `ReferenceGrant`
//! (`gateway.networking.k8s.io/v1`), watched only when the API server serves it, and our own
//! deprecated `tunnel.achetronic.com/v1alpha1` one. Both become [`GrantInput`]s for the one
//! decision, [`crate::crd::reference_allowed`].
//!
//! Whether Gateway API is there is asked once, by discovery, when the Manager starts
//! ([`gateway_grants_served`]): a cluster without its CRDs has no watch that would fail (and
//! hold `/readyz` down), and a CRD installed later is watched from the next start of the
//! operator (or of its actor tree, e.g. on a new leadership).

use std::time::Duration;

use kube::Client;
use kube::runtime::reflector::Store;
use tracing::{info, warn};

use crate::crd::gateway_reference_grant::{GATEWAY_GRANT_PLURAL, GATEWAY_GROUP, GATEWAY_VERSION};
use crate::crd::{GatewayReferenceGrant, GrantInput, ReferenceGrant};

/// The watch caches of both kinds of grant.
#[derive(Clone)]
pub struct GrantStores {
    /// Ours (deprecated).
    pub tunnel: Store<ReferenceGrant>,
    /// Gateway API's, when the API server serves them.
    pub gateway: Option<Store<GatewayReferenceGrant>>,
}

impl std::fmt::Debug for GrantStores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrantStores")
            .field("tunnel", &self.tunnel.state().len())
            .field("gateway", &self.gateway.as_ref().map(|s| s.state().len()))
            .finish()
    }
}

impl GrantStores {
    /// Every grant in force now, both kinds.
    pub fn inputs(&self) -> Vec<GrantInput> {
        let ours = self.tunnel.state();
        let theirs = self.gateway.as_ref().map(Store::state).unwrap_or_default();
        ours.iter()
            .filter_map(|g| GrantInput::from_object(g))
            .chain(theirs.iter().filter_map(|g| GrantInput::from_gateway(g)))
            .collect()
    }

    /// Waits until each cache has had its first list.
    pub async fn wait_until_ready(
        &self,
    ) -> Result<(), kube::runtime::reflector::store::WriterDropped> {
        self.tunnel.wait_until_ready().await?;
        if let Some(gateway) = &self.gateway {
            gateway.wait_until_ready().await?;
        }
        Ok(())
    }
}

/// Whether the API server serves `referencegrants` in `gateway.networking.k8s.io/v1`: its
/// discovery document lists them. A group or version it does not know (404) means no; any
/// other failure is retried (1 s, doubling to 30 s), as the watches would be.
pub async fn gateway_grants_served(client: &Client) -> bool {
    let group_version = format!("{GATEWAY_GROUP}/{GATEWAY_VERSION}");
    let mut delay = Duration::from_secs(1);
    loop {
        match client.list_api_group_resources(&group_version).await {
            Ok(list) => {
                let served = list
                    .resources
                    .iter()
                    .any(|r| r.name == GATEWAY_GRANT_PLURAL);
                info!(
                    served,
                    "Gateway API ReferenceGrants ({group_version}) {}",
                    if served {
                        "watched"
                    } else {
                        "not served: not watched"
                    }
                );
                return served;
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {
                info!(
                    "Gateway API ({group_version}) not served: its ReferenceGrants are not watched until a restart"
                );
                return false;
            }
            Err(e) => {
                warn!(error = %e, "discovery of {group_version} failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
}
