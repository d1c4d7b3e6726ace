//! The cert watcher: a supervised child of each EdgeNode actor (DESIGN.md §3) that owns the set
//! of Secrets its VPS depends on (the SSH Secret and the TLS Secrets of its PortBindings) and
//! the content each pass read of them. The Manager's Secret reflector (metadata only) feeds it
//! (no watch of its own): on a new resourceVersion it fetches the Secret
//! ([`super::secrets`]) and tells its parent `Changed` only when its content differs from what
//! the last pass read, so a new resourceVersion with the same data (a label, an annotation, cert-manager
//! re-applying the same certificate) costs no pass. The decision is the sans-IO [`CertWatch`].

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::hash::{combine, sha256_hex};
use crate::object_key::ObjectKey;

use super::Context;
use super::protocol::{CertMsg, NodeMsg};

/// A digest of a Secret's content: its type and every key with a digest of its value.
pub fn secret_digest(secret: &Secret) -> String {
    let values: Vec<(String, String)> = secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (format!("data/{k}"), sha256_hex(&v.0)))
        .chain(
            secret
                .string_data
                .iter()
                .flatten()
                .map(|(k, v)| (format!("data/{k}"), sha256_hex(v.as_bytes()))),
        )
        .chain(
            secret
                .type_
                .iter()
                .map(|t| ("type".to_owned(), sha256_hex(t.as_bytes()))),
        )
        .collect();
    combine(values.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

/// What the last pass read of each Secret it depends on (`None`: it did not exist).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertWatch {
    read: Option<BTreeMap<ObjectKey, Option<String>>>,
}

impl CertWatch {
    /// A pass read these Secrets, with this content.
    pub fn pass_read(&mut self, read: BTreeMap<ObjectKey, Option<String>>) {
        self.read = Some(read);
    }

    /// Secret `key` (one the node uses) is now `now`: whether that is a change for the node.
    /// Before any pass read anything, and for a Secret the last pass did not read (a new
    /// dependency), it is. The content reported is remembered, so the same change seen twice
    /// is reported once.
    pub fn changed(&mut self, key: &ObjectKey, now: Option<String>) -> bool {
        let Some(read) = self.read.as_mut() else {
            return true;
        };
        if read.get(key) == Some(&now) {
            return false;
        }
        read.insert(key.clone(), now);
        true
    }
}

/// The actor.
#[derive(Debug, Default)]
pub struct CertWatcherActor;

/// Its state.
#[derive(Debug)]
pub struct CertWatcherState {
    ctx: Arc<Context>,
    parent: ActorRef<NodeMsg>,
    watch: CertWatch,
}

/// The content of Secret `key` now (fetched when its resourceVersion is not the one fetched
/// last), or why it could not be read.
pub async fn digest_now(
    ctx: &Context,
    key: &ObjectKey,
) -> Result<Option<String>, super::secrets::SecretReadError> {
    Ok(ctx
        .secret_data
        .get(&ctx.client, &ctx.stores.secrets, key)
        .await?
        .map(|s| secret_digest(&s)))
}

impl Actor for CertWatcherActor {
    type Msg = CertMsg;
    type State = CertWatcherState;
    type Arguments = (Arc<Context>, ActorRef<NodeMsg>);

    async fn pre_start(
        &self,
        _myself: ActorRef<CertMsg>,
        (ctx, parent): Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(CertWatcherState {
            ctx,
            parent,
            watch: CertWatch::default(),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<CertMsg>,
        message: CertMsg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let _timer = state.ctx.metrics.handling("CertWatcher");
        match message {
            CertMsg::PassRead(read) => state.watch.pass_read(read),
            CertMsg::SecretChanged(key) => {
                // Unreadable: a pass says why.
                let changed = match digest_now(&state.ctx, &key).await {
                    Ok(now) => state.watch.changed(&key, now),
                    Err(_) => true,
                };
                if changed {
                    state.parent.send_message(NodeMsg::Changed)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use k8s_openapi::ByteString;

    fn secret(value: &str, label: &str) -> Secret {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-tls", "namespace": "apps", "labels": {"l": label},
                         "resourceVersion": label},
            "type": "kubernetes.io/tls",
            "data": {"tls.crt": ByteString(value.as_bytes().to_vec()), "tls.key": ByteString(b"k".to_vec())}
        }))
        .unwrap()
    }

    #[test]
    fn the_digest_follows_the_content_not_the_metadata() {
        assert_eq!(
            secret_digest(&secret("a", "1")),
            secret_digest(&secret("a", "2"))
        );
        assert_ne!(
            secret_digest(&secret("a", "1")),
            secret_digest(&secret("b", "1"))
        );
    }

    #[test]
    fn only_a_real_change_of_what_the_pass_read_is_reported_and_only_once() {
        let key = ObjectKey::new("apps", "web-tls");
        let other = ObjectKey::new("apps", "new-tls");
        let mut w = CertWatch::default();
        assert!(w.changed(&key, Some("v1".into())), "nothing read yet");
        w.pass_read(BTreeMap::from([(key.clone(), Some("v1".into()))]));
        assert!(!w.changed(&key, Some("v1".into())), "same content");
        assert!(w.changed(&key, Some("v2".into())));
        assert!(!w.changed(&key, Some("v2".into())), "reported once");
        assert!(w.changed(&key, None), "deleted");
        assert!(
            w.changed(&other, Some("x".into())),
            "a dependency the pass did not read"
        );
        w.pass_read(BTreeMap::from([(other.clone(), None)]));
        assert!(!w.changed(&other, None), "read as missing, still missing");
    }
}
