//! Helpers of the edge tests: certificates made with rcgen, and a static bootstrap that lets
//! `envoy --mode validate` check the LDS, CDS and SDS documents (validate mode does not read
//! file-based xDS); [`bed`] runs the real Envoy in network namespaces.

pub mod bed;

use std::path::Path;

use tunnel::plan::{Layout, Plan, TlsSecret};

/// A CA and a server certificate it signed, PEM.
pub struct Pki {
    pub ca_pem: String,
    pub ca_key: rcgen::KeyPair,
    pub ca_params: rcgen::CertificateParams,
    pub server_pem: String,
    pub server_key_pem: String,
}

pub fn pki(server_names: &[&str]) -> Pki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "tunnel test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let mut pki = Pki {
        ca_pem: ca_cert.pem(),
        ca_key,
        ca_params,
        server_pem: String::new(),
        server_key_pem: String::new(),
    };
    let (cert, key) = leaf(&pki, server_names);
    pki.server_pem = cert;
    pki.server_key_pem = key;
    pki
}

/// A certificate for `names` signed by the PKI's CA: (cert PEM, key PEM).
pub fn leaf(pki: &Pki, names: &[&str]) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let owned: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
    let mut params = rcgen::CertificateParams::new(owned).unwrap();
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        names.first().copied().unwrap_or("leaf"),
    );
    let issuer = rcgen::Issuer::from_params(&pki.ca_params, &pki.ca_key);
    let cert = params.signed_by(&key, &issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

pub fn tls_secret(pki: &Pki, with_ca: bool) -> TlsSecret {
    TlsSecret {
        certificate_chain: Some(pki.server_pem.clone()),
        private_key: Some(pki.server_key_pem.clone()),
        ca: with_ca.then(|| pki.ca_pem.clone()),
    }
}

/// Writes every VPS file of the plan: files already under `root` where they say, the others
/// (e.g. `/etc/tunnel/relay.json`) re-rooted under it.
pub fn write_files(plan: &Plan, root: &Path) {
    for f in &plan.vps_files {
        let path = if Path::new(&f.path).starts_with(root) {
            Path::new(&f.path).to_path_buf()
        } else {
            root.join(f.path.trim_start_matches('/'))
        };
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &f.contents).unwrap();
    }
}

/// A bootstrap with the plan's listeners, clusters and SDS secrets as static resources (each
/// SDS reference made static), so `envoy --mode validate` checks all of them.
pub fn static_bootstrap(plan: &Plan, layout: &Layout) -> serde_json::Value {
    let doc = |path: &str| -> serde_json::Value {
        serde_yaml::from_str(&plan.vps_file(path).unwrap().contents).unwrap()
    };
    let mut listeners = doc(&layout.lds())["resources"].clone();
    strip_sds_config(&mut listeners);
    let clusters = doc(&layout.cds())["resources"].clone();
    let mut secrets = Vec::new();
    for f in &plan.vps_files {
        if f.path.ends_with(".sds.yaml") {
            let v: serde_json::Value = serde_yaml::from_str(&f.contents).unwrap();
            // Envoy's file-based SDS takes exactly one secret per file.
            assert_eq!(v["resources"].as_array().unwrap().len(), 1, "{}", f.path);
            for mut s in v["resources"].as_array().unwrap().clone() {
                s.as_object_mut().unwrap().remove("@type");
                secrets.push(s);
            }
        }
    }
    let mut listeners = listeners.as_array().unwrap().clone();
    let mut clusters = clusters.as_array().unwrap().clone();
    for r in listeners.iter_mut().chain(clusters.iter_mut()) {
        r.as_object_mut().unwrap().remove("@type");
    }
    let boot: serde_json::Value =
        serde_yaml::from_str(&plan.vps_file(&layout.bootstrap()).unwrap().contents).unwrap();
    serde_json::json!({
        "node": boot["node"],
        "admin": boot["admin"],
        "overload_manager": boot["overload_manager"],
        "static_resources": { "listeners": listeners, "clusters": clusters, "secrets": secrets },
    })
}

fn strip_sds_config(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            if map.contains_key("sds_config") && map.contains_key("name") {
                map.remove("sds_config");
            }
            for (_, child) in map.iter_mut() {
                strip_sds_config(child);
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_sds_config),
        _ => {}
    }
}

/// Validates the plan with the real Envoy: the bootstrap as written, and every listener,
/// cluster and secret through a static bootstrap.
pub fn validate_with_envoy(plan: &Plan, layout: &Layout, dir: &Path) {
    write_files(plan, dir);
    let boot = Path::new(&layout.bootstrap()).to_path_buf();
    testbed::envoy::validate(&boot).unwrap_or_else(|e| panic!("bootstrap: {e}"));
    let stat = dir.join("static.yaml");
    std::fs::write(
        &stat,
        serde_yaml::to_string(&static_bootstrap(plan, layout)).unwrap(),
    )
    .unwrap();
    testbed::envoy::validate(&stat).unwrap_or_else(|e| {
        panic!(
            "static bootstrap: {e}\n{}",
            std::fs::read_to_string(&stat).unwrap()
        )
    });
}

/// A client certificate signed by the PKI's CA: (cert PEM, key PEM).
pub fn client_cert(pki: &Pki, name: &str) -> (String, String) {
    leaf(pki, &[name])
}
