//! Every configuration shape passes the real Envoy's `--mode validate`: the bootstrap as it is
//! written on the VPS, and every listener, cluster and SDS secret (with real certificates).

use crate::edge_support::{pki, tls_secret, validate_with_envoy};
use crate::plan_inputs::shapes;
use tunnel::plan::{Layout, plan};

#[test]
fn every_shape_passes_envoy_validate() {
    let pki = pki(&["web.example.com"]);
    let secret = |with_ca: bool| tls_secret(&pki, with_ca);
    let dir = tempfile::tempdir().unwrap();
    let names: Vec<&str> = shapes(&Layout::default(), &secret)
        .iter()
        .map(|s| s.name)
        .collect();
    for name in names {
        let shape_dir = dir.path().join(name);
        let layout = Layout {
            dir: shape_dir.join("etc/envoy").to_string_lossy().into_owned(),
        };
        let shape = shapes(&layout, &secret)
            .into_iter()
            .find(|s| s.name == name)
            .unwrap();
        let p = plan(&shape.input, &shape.resolver).unwrap();
        std::fs::create_dir_all(&shape_dir).unwrap();
        validate_with_envoy(&p, &layout, &shape_dir);
    }
}
