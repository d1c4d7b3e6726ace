//! A TLS Secret's name of any length Kubernetes allows costs nothing (issue 24, L5): the SDS
//! file of `<namespace>_<secret>` would exceed the 200 characters the VPS's file names accept,
//! and the whole EdgeNode's desired state used to be refused, every tenant's bindings on it
//! with it. Now such a name is cut and hashed: every binding is planned and the desired
//! state is assembled, with distinct file names for Secrets that differ only at the end.

use std::collections::BTreeMap;

use crate::fixtures::fake_secret;
use crate::plan_inputs::{input, node, pb, services};
use tunnel::enroll::{Arch, Blob, Carried, DesiredState, EnvoyInstall, HostTuning};
use tunnel::plan::{Layout, plan};

const NODE: &str = "address: 203.0.113.10\nssh: {secretRef: {name: s}}\n";

/// A Secret name of 253 characters (the most Kubernetes allows), ending in `end`.
fn long_name(end: char) -> String {
    let label = "l".repeat(63);
    format!("{label}.{label}.{label}.{}{end}", "l".repeat(60))
}

#[test]
fn a_tls_secret_name_of_any_allowed_length_is_served_beside_the_others() {
    let (a, b) = (long_name('a'), long_name('b'));
    assert_eq!(a.len(), 253);
    let resolver = services()
        .with_secret("default", &a, fake_secret(false))
        .with_secret("default", &b, fake_secret(true))
        .with_secret("default", "web-tls", fake_secret(false));
    let bindings = format!(
        "- {{name: long-a, protocol: TCP, listenPort: 443, tls: {{mode: offload, secretRef: {{name: {a}}}}}, target: {{address: 10.1.1.1, port: 80}}}}\n\
         - {{name: long-b, protocol: TCP, listenPort: 8443, tls: {{mode: mutual, secretRef: {{name: {b}}}}}, target: {{address: 10.1.1.1, port: 80}}}}\n\
         - {{name: short, protocol: TCP, listenPort: 9443, tls: {{mode: offload, secretRef: {{name: web-tls}}}}, target: {{address: 10.1.1.1, port: 80}}}}\n"
    );
    let p = plan(
        &input(
            node(NODE),
            vec![pb("default", "web", Some(1), &bindings)],
            Layout::default(),
        ),
        &resolver,
    )
    .unwrap();
    assert!(
        p.outcomes.iter().all(|o| o.refusal.is_none()),
        "{:?}",
        p.outcomes
    );
    assert_eq!(p.planned.len(), 3);

    let carried = Carried {
        tunnelctl: BTreeMap::from([(Arch::X86_64, Blob::new(b"x".to_vec()))]),
        envoy: EnvoyInstall::Push {
            version: "1.40.0".into(),
            binaries: BTreeMap::from([(Arch::X86_64, Blob::new(b"x".to_vec()))]),
        },
        host: HostTuning::default(),
    };
    let desired = DesiredState::from_rendered(
        p.vps_files
            .iter()
            .map(|f| (f.path.as_str(), f.contents.as_bytes())),
        carried,
    )
    .unwrap();
    let names: Vec<&String> = desired.sds.keys().collect();
    // long-a, long-b and its ca.crt, web-tls: four distinct files, all within 200 characters.
    assert_eq!(names.len(), 4, "{names:?}");
    assert!(names.iter().all(|n| n.len() <= 200), "{names:?}");
    assert!(desired.sds.contains_key("default_web-tls.sds.yaml"));
    // The listeners name the same files the desired state carries.
    let lds = &p
        .vps_files
        .iter()
        .find(|f| f.path == "/etc/envoy/lds.yaml")
        .unwrap()
        .contents;
    for name in names {
        assert!(lds.contains(name.as_str()), "{name} in lds.yaml");
    }
}
