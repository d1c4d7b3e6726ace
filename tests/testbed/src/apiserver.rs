//! A real Kubernetes API: etcd and kube-apiserver (built from their Go modules by the set-up
//! script) on free loopback ports, with generated certificates, RBAC authorization and a
//! service cluster IP range. Stopped, and its data removed, when the handle drops.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};

use crate::process::Process;
use crate::{TestbedError, free_port, tools};

/// Audit policy of the test bed: every write (who, what, answer), no bodies; reads are not
/// logged. Tests use it to tell which process wrote what ([`ApiServer::audited_writes`]).
const AUDIT_POLICY: &str = r#"apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: Metadata
    verbs: ["create", "update", "patch", "delete", "deletecollection"]
  - level: None
"#;

/// One write the API server answered, from its audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditedWrite {
    /// Who wrote: the impersonated user when there was one, else the authenticated one.
    pub user: String,
    /// `create`, `update`, `patch`, `delete`, ...
    pub verb: String,
    /// Resource (plural), e.g. `edgenodes`, `leases`.
    pub resource: String,
    /// Subresource, e.g. `status`; empty when none.
    pub subresource: String,
    /// Namespace; empty for cluster-scoped objects.
    pub namespace: String,
    /// Object name; empty for a create without one.
    pub name: String,
    /// The HTTP status code of the answer.
    pub code: u16,
    /// When the API server received the request (RFC 3339, microseconds).
    pub received: String,
}

impl AuditedWrite {
    /// Whether the write was accepted (2xx).
    pub fn succeeded(&self) -> bool {
        (200..300).contains(&self.code)
    }
}

/// Pod Security `restricted` for every namespace by default, as Talos or a CIS-hardened k3s
/// configure the API server.
pub const RESTRICTED_BY_DEFAULT: &str = "apiVersion: apiserver.config.k8s.io/v1
kind: AdmissionConfiguration
plugins:
  - name: PodSecurity
    configuration:
      apiVersion: pod-security.admission.config.k8s.io/v1
      kind: PodSecurityConfiguration
      defaults:
        enforce: restricted
        enforce-version: latest
        audit: restricted
        audit-version: latest
        warn: restricted
        warn-version: latest
      exemptions: {usernames: [], runtimeClasses: [], namespaces: []}
";

/// The service cluster IP range the API server allocates ClusterIPs from.
pub const SERVICE_CIDR: &str = "10.96.0.0/16";

/// A running etcd + kube-apiserver pair.
#[derive(Debug)]
pub struct ApiServer {
    // Field order is drop order: the API server stops before etcd, then the files go.
    apiserver: Process,
    etcd: Process,
    dir: tempfile::TempDir,
    url: String,
}

impl ApiServer {
    /// Starts etcd and kube-apiserver and waits until the API answers.
    pub async fn start() -> Result<Self, TestbedError> {
        Self::start_with_admission(None).await
    }

    /// Like [`ApiServer::start`], with an `AdmissionConfiguration` (YAML) passed as
    /// `--admission-control-config-file`, e.g. Pod Security enforcing `restricted` by
    /// default, as hardened clusters (Talos, CIS-hardened k3s) do.
    pub async fn start_with_admission(admission: Option<&str>) -> Result<Self, TestbedError> {
        Self::start_binary("kube-apiserver", admission).await
    }

    /// Like [`ApiServer::start`], with the oldest kube-apiserver the chart supports (the floor
    /// of its `kubeVersion`, built version-stamped by the set-up script as
    /// `kube-apiserver-oldest`; [`ApiServer::version`] tells which).
    pub async fn start_oldest() -> Result<Self, TestbedError> {
        Self::start_binary("kube-apiserver-oldest", None).await
    }

    /// What the API server reports as its version (`/version`'s `gitVersion`, e.g. `v1.32.13`).
    pub async fn version(&self) -> Result<String, TestbedError> {
        let info = self
            .client()
            .await?
            .apiserver_version()
            .await
            .map_err(|e| TestbedError::Kube(format!("reading /version: {e}")))?;
        Ok(info.git_version)
    }

    /// Starts etcd and the cached kube-apiserver `binary`, with an optional admission
    /// configuration. The ports are free when chosen but not held: another test may take one
    /// before the server binds it, so a start that failed on a taken port is tried again
    /// with new ones (twice at most).
    async fn start_binary(binary: &str, admission: Option<&str>) -> Result<Self, TestbedError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Self::start_once(binary, admission).await {
                Err(e) if attempt < 3 && e.to_string().contains("address already in use") => {}
                result => return result,
            }
        }
    }

    async fn start_once(binary: &str, admission: Option<&str>) -> Result<Self, TestbedError> {
        let runs = tools::cache_dir().join("run");
        std::fs::create_dir_all(&runs).map_err(TestbedError::io("creating the run dir"))?;
        let dir = tempfile::Builder::new()
            .prefix("kube-")
            .tempdir_in(&runs)
            .map_err(TestbedError::io("creating the API dir"))?;
        let d = dir.path().to_path_buf();
        write_pki(&d)?;

        let (etcd_client, etcd_peer, secure) = (free_port()?, free_port()?, free_port()?);
        let mut etcd_cmd = Command::new(tools::bin("etcd")?);
        etcd_cmd
            .arg(format!("--data-dir={}", d.join("etcd").display()))
            .arg(format!(
                "--listen-client-urls=http://127.0.0.1:{etcd_client}"
            ))
            .arg(format!(
                "--advertise-client-urls=http://127.0.0.1:{etcd_client}"
            ))
            .arg(format!("--listen-peer-urls=http://127.0.0.1:{etcd_peer}"))
            .arg(format!(
                "--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}"
            ))
            .arg(format!(
                "--initial-cluster=default=http://127.0.0.1:{etcd_peer}"
            ))
            .args(["--unsafe-no-fsync", "--log-level=warn"]);
        let etcd = Process::spawn("etcd", &mut etcd_cmd, Some(&d.join("etcd.log")))?;

        let p = |name: &str| d.join(name).display().to_string();
        std::fs::write(d.join("audit-policy.yaml"), AUDIT_POLICY)
            .map_err(TestbedError::io("writing the audit policy"))?;
        let mut api_cmd = Command::new(tools::bin(binary)?);
        api_cmd
            .arg(format!("--etcd-servers=http://127.0.0.1:{etcd_client}"))
            .arg(format!("--secure-port={secure}"))
            .args(["--bind-address=127.0.0.1", "--advertise-address=127.0.0.1"])
            .arg(format!("--cert-dir={}", p("certs")))
            .arg(format!("--tls-cert-file={}", p("apiserver.crt")))
            .arg(format!("--tls-private-key-file={}", p("apiserver.key")))
            .arg(format!("--client-ca-file={}", p("ca.crt")))
            .arg(format!("--service-account-key-file={}", p("sa.pub")))
            .arg(format!(
                "--service-account-signing-key-file={}",
                p("sa.key")
            ))
            .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
            .arg(format!("--service-cluster-ip-range={SERVICE_CIDR}"))
            .args([
                "--authorization-mode=RBAC",
                "--allow-privileged=true",
                "--v=0",
            ])
            .arg("--disable-admission-plugins=ServiceAccount")
            .arg(format!("--audit-policy-file={}", p("audit-policy.yaml")))
            .args(match admission {
                Some(config) => {
                    std::fs::write(d.join("admission.yaml"), config)
                        .map_err(TestbedError::io("writing the admission configuration"))?;
                    vec![format!(
                        "--admission-control-config-file={}",
                        p("admission.yaml")
                    )]
                }
                None => vec![],
            })
            .arg(format!("--audit-log-path={}", p("audit.log")))
            .arg("--audit-log-format=json");
        let apiserver = Process::spawn(
            "kube-apiserver",
            &mut api_cmd,
            Some(&d.join("apiserver.log")),
        )?;

        let url = format!("https://127.0.0.1:{secure}");
        let server = Self {
            apiserver,
            etcd,
            dir,
            url,
        };
        server.write_kubeconfig(&server.kubeconfig_path(), &User::Admin)?;
        server.wait_ready().await?;
        Ok(server)
    }

    /// Whether both processes are still running.
    pub fn is_running(&mut self) -> bool {
        self.apiserver.is_running() && self.etcd.is_running()
    }

    /// The API server's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A kubeconfig file with cluster-admin rights (for `helm` and debugging).
    pub fn kubeconfig_path(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// The API server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("apiserver.log")
    }

    /// The audit log (JSON lines, writes only).
    pub fn audit_log_path(&self) -> PathBuf {
        self.dir.path().join("audit.log")
    }

    /// Every write the API server answered so far (`ResponseComplete` audit events).
    pub fn audited_writes(&self) -> Vec<AuditedWrite> {
        let text = std::fs::read_to_string(self.audit_log_path()).unwrap_or_default();
        text.lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|e| e["stage"] == "ResponseComplete")
            .map(|e| {
                let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
                let user = if e["impersonatedUser"]["username"].is_string() {
                    s(&e["impersonatedUser"]["username"])
                } else {
                    s(&e["user"]["username"])
                };
                AuditedWrite {
                    user,
                    verb: s(&e["verb"]),
                    resource: s(&e["objectRef"]["resource"]),
                    subresource: s(&e["objectRef"]["subresource"]),
                    namespace: s(&e["objectRef"]["namespace"]),
                    name: s(&e["objectRef"]["name"]),
                    code: e["responseStatus"]["code"]
                        .as_u64()
                        .and_then(|c| u16::try_from(c).ok())
                        .unwrap_or(0),
                    received: s(&e["requestReceivedTimestamp"]),
                }
            })
            .collect()
    }

    /// A kubeconfig file that impersonates `user` in `groups` (written once per user).
    pub fn kubeconfig_as(&self, user: &str, groups: &[&str]) -> Result<PathBuf, TestbedError> {
        let path = self
            .dir
            .path()
            .join(format!("kubeconfig-{}", user.replace(':', "_")));
        self.write_kubeconfig(&path, &User::Impersonating(user, groups))?;
        Ok(path)
    }

    /// A token of ServiceAccount `namespace/name` (a TokenRequest, valid for an hour).
    pub async fn service_account_token(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<String, TestbedError> {
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: vec![],
                expiration_seconds: Some(3600),
                ..TokenRequestSpec::default()
            },
            ..TokenRequest::default()
        };
        let status = Api::<ServiceAccount>::namespaced(self.client().await?, namespace)
            .create_token_request(name, &PostParams::default(), &request)
            .await
            .map_err(|e| TestbedError::Kube(format!("a token for {namespace}/{name}: {e}")))?
            .status;
        status
            .map(|s| s.token)
            .ok_or_else(|| TestbedError::Kube(format!("no token for {namespace}/{name}")))
    }

    /// A kubeconfig that authenticates as ServiceAccount `namespace/name` with its token
    /// only (no client certificate), so RBAC decides as for a pod of that account.
    pub async fn service_account_kubeconfig(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<PathBuf, TestbedError> {
        let token = self.service_account_token(namespace, name).await?;
        let path = self
            .dir
            .path()
            .join(format!("kubeconfig-sa-{namespace}-{name}"));
        self.write_kubeconfig(&path, &User::Token(&token))?;
        Ok(path)
    }

    /// A client with cluster-admin rights (group system:masters).
    pub async fn client(&self) -> Result<kube::Client, TestbedError> {
        client_from(&self.kubeconfig_path()).await
    }

    /// A client that impersonates `user` (e.g. `system:serviceaccount:tunnel:tunnel`), so RBAC
    /// decides exactly as it would for that identity.
    pub async fn client_as(
        &self,
        user: &str,
        groups: &[&str],
    ) -> Result<kube::Client, TestbedError> {
        let path = self.kubeconfig_as(user, groups)?;
        client_from(&path).await
    }

    /// Installs (server-side applies) CRDs and waits until each is Established.
    pub async fn install_crds(
        &self,
        crds: &[CustomResourceDefinition],
    ) -> Result<(), TestbedError> {
        install_crds(&self.kubeconfig_path(), crds).await
    }

    /// Waits until each CRD of `names` is Established and its API is served (a CRD a
    /// `helm install` created, say).
    pub async fn wait_crds_established(&self, names: &[String]) -> Result<(), TestbedError> {
        wait_crds_established(&self.client().await?, names).await
    }

    async fn wait_ready(&self) -> Result<(), TestbedError> {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Ok(client) = self.client().await {
                let req = http::Request::get("/readyz")
                    .body(Vec::new())
                    .map_err(|e| TestbedError::Kube(e.to_string()))?;
                if let Ok(body) = client.request_text(req).await
                    && body.trim() == "ok"
                {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
                let tail: String = log
                    .lines()
                    .rev()
                    .take(20)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n");
                return Err(TestbedError::Timeout {
                    what: format!("kube-apiserver /readyz; log tail:\n{tail}"),
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    fn write_kubeconfig(&self, path: &Path, who: &User<'_>) -> Result<(), TestbedError> {
        let b64 = |name: &str| -> Result<String, TestbedError> {
            let bytes = std::fs::read(self.dir.path().join(name))
                .map_err(TestbedError::io(format!("reading {name}")))?;
            Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
        };
        let mut user = serde_json::json!({
            "client-certificate-data": b64("admin.crt")?,
            "client-key-data": b64("admin.key")?,
        });
        match who {
            User::Admin => {}
            User::Impersonating(name, groups) => {
                user["as"] = (*name).into();
                user["as-groups"] = groups.iter().map(|g| serde_json::Value::from(*g)).collect();
            }
            User::Token(token) => user = serde_json::json!({ "token": token }),
        }
        let config = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "testbed", "cluster": {"server": self.url, "certificate-authority-data": b64("ca.crt")?}}],
            "users": [{"name": "testbed", "user": user}],
            "contexts": [{"name": "testbed", "context": {"cluster": "testbed", "user": "testbed", "namespace": "default"}}],
            "current-context": "testbed",
        });
        let text = serde_yaml::to_string(&config).map_err(|e| TestbedError::Kube(e.to_string()))?;
        std::fs::write(path, text).map_err(TestbedError::io("writing kubeconfig"))?;
        set_private(path)
    }
}

/// Who a kubeconfig authenticates as.
enum User<'a> {
    /// The admin certificate (system:masters).
    Admin,
    /// The admin certificate impersonating a user in groups.
    Impersonating(&'a str, &'a [&'a str]),
    /// A bearer token only.
    Token(&'a str),
}

/// Installs (server-side applies) CRDs on the API server of the admin kubeconfig at `path`
/// (this bed's or a node's) and waits until each is Established.
pub(crate) async fn install_crds(
    path: &Path,
    crds: &[CustomResourceDefinition],
) -> Result<(), TestbedError> {
    let client = client_from(path).await?;
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply("testbed").force();
    for crd in crds {
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(&name, &params, &Patch::Apply(crd))
            .await
            .map_err(|e| TestbedError::Kube(format!("installing CRD {name}: {e}")))?;
    }
    let names: Vec<String> = crds
        .iter()
        .map(|crd| crd.metadata.name.clone().unwrap_or_default())
        .collect();
    wait_crds_established(&client, &names).await
}

/// Waits until each CRD of `names` is Established and its API is served.
async fn wait_crds_established(
    client: &kube::Client,
    names: &[String],
) -> Result<(), TestbedError> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    for name in names {
        loop {
            let current = api
                .get(name)
                .await
                .map_err(|e| TestbedError::Kube(e.to_string()))?;
            let established = current
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            if established {
                break;
            }
            if Instant::now() > deadline {
                return Err(TestbedError::Timeout {
                    what: format!("CRD {name} to be Established"),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Discovery for the new group can lag the Established condition by a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(())
}

pub(crate) async fn client_from(path: &Path) -> Result<kube::Client, TestbedError> {
    let kubeconfig = Kubeconfig::read_from(path).map_err(|e| TestbedError::Kube(e.to_string()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| TestbedError::Kube(e.to_string()))?;
    kube::Client::try_from(config).map_err(|e| TestbedError::Kube(e.to_string()))
}

fn set_private(path: &Path) -> Result<(), TestbedError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(TestbedError::io("chmod 600"))
}

/// Writes the CA, the serving certificate, the admin client certificate and the
/// service-account signing key into `dir`.
fn write_pki(dir: &Path) -> Result<(), TestbedError> {
    let err = |e: rcgen::Error| TestbedError::Kube(format!("generating certificates: {e}"));
    let write = |name: &str, text: &str| {
        std::fs::write(dir.join(name), text).map_err(TestbedError::io(format!("writing {name}")))
    };

    let ca_key = KeyPair::generate().map_err(err)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca_params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name = dn("testbed-ca", None);
    let ca_cert = ca_params.self_signed(&ca_key).map_err(err)?;
    write("ca.crt", &ca_cert.pem())?;
    let issuer = Issuer::new(ca_params, ca_key);

    let serving_key = KeyPair::generate().map_err(err)?;
    let mut serving = CertificateParams::new(vec![
        "127.0.0.1".to_string(),
        "localhost".into(),
        "kubernetes".into(),
        "kubernetes.default.svc".into(),
    ])
    .map_err(err)?;
    serving.distinguished_name = dn("kube-apiserver", None);
    serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    write(
        "apiserver.crt",
        &serving.signed_by(&serving_key, &issuer).map_err(err)?.pem(),
    )?;
    write("apiserver.key", &serving_key.serialize_pem())?;

    let admin_key = KeyPair::generate().map_err(err)?;
    let mut admin = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    admin.distinguished_name = dn("testbed-admin", Some("system:masters"));
    admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    write(
        "admin.crt",
        &admin.signed_by(&admin_key, &issuer).map_err(err)?.pem(),
    )?;
    write("admin.key", &admin_key.serialize_pem())?;

    let sa_key = KeyPair::generate().map_err(err)?;
    write("sa.key", &sa_key.serialize_pem())?;
    write("sa.pub", &sa_key.public_key_pem())?;
    for name in ["apiserver.key", "admin.key", "sa.key"] {
        set_private(&dir.join(name))?;
    }
    Ok(())
}

fn dn(common_name: &str, organization: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    if let Some(org) = organization {
        dn.push(DnType::OrganizationName, org);
    }
    dn
}
