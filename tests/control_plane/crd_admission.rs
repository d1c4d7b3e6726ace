//! The CRDs in a real API server: the README's examples apply unchanged and come back with
//! their defaults; one table of documents, each accepted or refused at admission with a
//! message that names the field, and one of updates.

use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};
use testbed::operator::OperatorBed;

fn resource(kind: &str) -> ApiResource {
    let plural = if kind == "EdgeNode" {
        "edgenodes"
    } else {
        "portbindings"
    };
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("tunnel.achetronic.com", "v1alpha1", kind),
        plural,
    )
}

fn docs(path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| serde_json::to_value(serde_yaml::Value::deserialize(doc).unwrap()).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

use serde::Deserialize;

async fn create(client: &kube::Client, doc: &Value) -> Result<DynamicObject, kube::Error> {
    let kind = doc["kind"].as_str().unwrap();
    let ns = doc["metadata"]["namespace"].as_str().unwrap_or("default");
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &resource(kind));
    let obj: DynamicObject = serde_json::from_value(doc.clone()).unwrap();
    api.create(&PostParams::default(), &obj).await
}

/// The operator's bed: the API server with the CRDs, no operator.
async fn started() -> (OperatorBed, kube::Client) {
    let bed = OperatorBed::builder()
        .start()
        .await
        .expect("API server with the CRDs");
    let client = bed.client.clone();
    (bed, client)
}

/// What admission does with a document.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Admission {
    Accepted,
    /// Refused, the message naming the field (its path) and saying these words.
    Refused(&'static str, &'static str),
}

use Admission::{Accepted, Refused};

/// Creates every document of README Examples 1 to 5 (Example 4 in namespace `example4`, as
/// it names its EdgeNode like Example 1's) and returns what the server stored, in order.
pub(crate) async fn apply_readme_examples(client: &kube::Client) -> Vec<DynamicObject> {
    // Examples 1 and 4 both name their EdgeNode `edge-node`: apply 4 in a second namespace.
    let ns_api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    ns_api
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "example4"}})).unwrap(),
        )
        .await
        .unwrap();

    let mut stored = Vec::new();
    for file in ["example1", "example2", "example3", "example5"] {
        for doc in docs(&format!("tests/fixtures/readme/{file}.yaml")) {
            stored.push(
                create(client, &doc)
                    .await
                    .unwrap_or_else(|e| panic!("{file}: {e}")),
            );
        }
    }
    for mut doc in docs("tests/fixtures/readme/example4.yaml") {
        doc["metadata"]["namespace"] = "example4".into();
        stored.push(
            create(client, &doc)
                .await
                .unwrap_or_else(|e| panic!("example4: {e}")),
        );
    }

    stored
}

#[tokio::test]
async fn readme_examples_apply_unchanged_and_show_defaults() {
    let (_server, client) = started().await;
    let stored = apply_readme_examples(&client).await;

    // Example 1 omits every optional parent object: the nested defaults still hold.
    let en1 = serde_json::to_value(&stored[0]).unwrap();
    let spec = &en1["spec"];
    assert_eq!(
        spec["uplink"]["namespace"], "tunnel",
        "uplink.namespace defaults with spec.uplink omitted"
    );
    assert_eq!(spec["uplink"]["replicas"], 1);
    assert_eq!(spec["ssh"]["port"], 22);
    assert_eq!(spec["ssh"]["user"], "root");
    assert_eq!(spec["ssh"]["connectTimeout"], "30s");
    assert_eq!(spec["ssh"]["insecureSkipHostKeyVerification"], false);
    assert_eq!(spec["tunnel"]["listenPort"], 51821);
    assert_eq!(spec["tunnel"]["network"], "10.200.0.0/24");
    assert_eq!(spec["tunnel"]["mtu"], 1420);
    assert_eq!(spec["tunnel"]["persistentKeepalive"], 25);
    assert_eq!(spec["edge"]["healthCheck"]["interval"], "5s");
    assert_eq!(spec["edge"]["healthCheck"]["timeout"], "2s");
    assert_eq!(spec["edge"]["healthCheck"]["healthyThreshold"], 2);
    assert_eq!(spec["edge"]["healthCheck"]["unhealthyThreshold"], 2);
    assert!(
        spec["edge"].get("outlierDetection").is_none(),
        "outlier detection is off by default"
    );
    assert_eq!(spec["host"]["kernelMaxSocketBufferBytes"], 26_214_400);
    assert_eq!(spec["host"]["disableNicOffloads"], false);

    // The stored object reads back into the Rust type with the same values.
    let typed: tunnel::crd::EdgeNode = serde_json::from_value(en1.clone()).unwrap();
    assert_eq!(typed.spec.uplink.namespace, "tunnel");

    // Example 2: TCP and UDP defaults fill in around what the user set.
    let pb2 = serde_json::to_value(&stored[2]).unwrap();
    let https = &pb2["spec"]["bindings"][0];
    assert_eq!(https["tcp"]["proxyProtocol"], true);
    assert_eq!(https["tcp"]["proxyProtocolVersion"], "v1");
    assert_eq!(https["tcp"]["connectTimeout"], "5s");
    assert_eq!(https["tcp"]["idleTimeout"], "1h");
    assert_eq!(pb2["spec"]["bindings"][1]["udp"]["sessionTimeout"], "60s");
    assert_eq!(
        pb2["spec"]["bindings"][1]["target"]["address"],
        "10.96.0.10"
    );

    // Example 5's policies come back as written and read into the Rust type.
    let pb5 = stored
        .iter()
        .find(|o| o.metadata.name.as_deref() == Some("guarded"))
        .unwrap();
    let typed5: tunnel::crd::PortBinding =
        serde_json::from_value(serde_json::to_value(pb5).unwrap()).unwrap();
    let ssh = typed5.spec.bindings[0].policy.as_ref().unwrap();
    assert_eq!(ssh.source_ranges, ["203.0.113.0/24", "198.51.100.7/32"]);
    assert_eq!(ssh.max_connections, Some(20));
    assert_eq!(
        ssh.connection_rate,
        Some(tunnel::crd::ConnectionRate {
            per_second: 2,
            burst: Some(10)
        })
    );
    let game = typed5.spec.bindings[1].policy.as_ref().unwrap();
    assert_eq!(game.max_connections, Some(500));
    assert_eq!(game.connection_rate, None);

    // Example 4 keeps every knob it spelled out.
    let en4 = serde_json::to_value(stored.last().unwrap()).unwrap();
    assert_eq!(en4["spec"]["uplink"]["replicas"], 3);
    assert_eq!(
        en4["spec"]["uplink"]["tolerations"][0]["effect"],
        "NoSchedule"
    );
    assert_eq!(
        en4["spec"]["uplink"]["resources"]["limits"]["memory"],
        "512Mi"
    );
    let typed4: tunnel::crd::EdgeNode = serde_json::from_value(en4).unwrap();
    assert_eq!(
        typed4
            .spec
            .uplink
            .node_selector
            .get("node-role.kubernetes.io/edge")
            .map(String::as_str),
        Some("true")
    );
}

fn edge_node() -> Value {
    json!({
        "apiVersion": "tunnel.achetronic.com/v1alpha1",
        "kind": "EdgeNode",
        "metadata": {"name": "bad", "namespace": "default"},
        "spec": {"address": "203.0.113.10", "ssh": {"secretRef": {"name": "vps-ssh-secret"}}}
    })
}

fn port_binding() -> Value {
    json!({
        "apiVersion": "tunnel.achetronic.com/v1alpha1",
        "kind": "PortBinding",
        "metadata": {"name": "bad", "namespace": "default"},
        "spec": {
            "edgeNodeRef": {"name": "edge-node"},
            "bindings": [{
                "name": "http", "protocol": "TCP", "listenPort": 80,
                "target": {"service": {"name": "web", "namespace": "default", "port": 8080}}
            }]
        }
    })
}

/// Sets `value` at a JSON pointer, creating objects on the way (`null` removes the key).
fn set(mut doc: Value, pointer: &str, value: Value) -> Value {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let mut cur = &mut doc;
    for part in parent.split('/').skip(1) {
        cur = if let Ok(i) = part.parse::<usize>() {
            &mut cur[i]
        } else {
            let obj = cur.as_object_mut().unwrap();
            obj.entry(part).or_insert_with(|| json!({}))
        };
    }
    if value.is_null() {
        cur.as_object_mut().unwrap().remove(key);
    } else if let Ok(i) = key.parse::<usize>() {
        let arr = cur.as_array_mut().unwrap();
        if i == arr.len() {
            arr.push(value);
        } else {
            arr[i] = value;
        }
    } else {
        cur[key] = value;
    }
    doc
}

/// The table of documents: (what, document, what admission does with it). Accepted documents
/// are stored, so each has a name of its own.
#[allow(clippy::too_many_lines)]
pub(crate) fn document_cases() -> Vec<(&'static str, Value, Admission)> {
    let en = edge_node;
    let pb = port_binding;
    let b = "/spec/bindings/0";
    let tls_pt = json!({"mode": "passthrough"});
    let second = |name: &str, port: u16, protocol: &str| {
        json!({"name": name, "protocol": protocol, "listenPort": port,
               "target": {"address": "10.0.0.1", "port": 80}})
    };
    vec![
        (
            "no address",
            set(en(), "/spec/address", Value::Null),
            Refused("spec.address", "Required value"),
        ),
        (
            "address not a host",
            set(en(), "/spec/address", "not an address!".into()),
            Refused("spec.address", "IPv4 or IPv6 address or a DNS hostname"),
        ),
        (
            "publicAddresses: a hostname",
            set(
                en(),
                "/spec/publicAddresses",
                json!(["203.0.113.10", "vps.example.com"]),
            ),
            Refused("spec.publicAddresses[1]", "must be IPv4 or IPv6 addresses"),
        ),
        (
            "publicAddresses: a CIDR",
            set(en(), "/spec/publicAddresses", json!(["2001:db8::/64"])),
            Refused("spec.publicAddresses[0]", "must be IPv4 or IPv6 addresses"),
        ),
        (
            "publicAddresses: not canonical",
            set(en(), "/spec/publicAddresses", json!(["2001:DB8:0::10"])),
            Refused("spec.publicAddresses[0]", "canonical form"),
        ),
        (
            "publicAddresses: one twice",
            set(
                en(),
                "/spec/publicAddresses",
                json!(["2001:db8::10", "2001:db8::10"]),
            ),
            Refused("spec.publicAddresses[1]", "Duplicate value"),
        ),
        (
            "publicAddresses: five",
            set(
                en(),
                "/spec/publicAddresses",
                json!(
                    (1..=5)
                        .map(|i| format!("203.0.113.{i}"))
                        .collect::<Vec<_>>()
                ),
            ),
            Refused("spec.publicAddresses", "must have at most 4 items"),
        ),
        (
            "publicAddresses: IPv4 and IPv6",
            set(
                set(en(), "/metadata/name", "dual-stack".into()),
                "/spec/publicAddresses",
                json!(["203.0.113.10", "2001:db8::10"]),
            ),
            Accepted,
        ),
        (
            "no ssh",
            set(en(), "/spec/ssh", Value::Null),
            Refused("spec.ssh", "Required value"),
        ),
        (
            "ssh port 0",
            set(en(), "/spec/ssh/port", 0.into()),
            Refused("spec.ssh.port", "greater than or equal to 1"),
        ),
        (
            "ssh port too big",
            set(en(), "/spec/ssh/port", 70000.into()),
            Refused("spec.ssh.port", "less than or equal to 65535"),
        ),
        (
            "empty secret name",
            set(en(), "/spec/ssh/secretRef/name", "".into()),
            Refused("spec.ssh.secretRef.name", "at least 1 chars"),
        ),
        (
            "connectTimeout without unit",
            set(en(), "/spec/ssh/connectTimeout", "5".into()),
            Refused("spec.ssh.connectTimeout", "positive duration"),
        ),
        (
            "connectTimeout over a minute",
            set(en(), "/spec/ssh/connectTimeout", "61s".into()),
            Refused(
                "spec.ssh.connectTimeout",
                "ssh.connectTimeout must be a positive duration of at most 60s",
            ),
        ),
        (
            "connectTimeout of hours",
            set(en(), "/spec/ssh/connectTimeout", "10000h".into()),
            Refused("spec.ssh.connectTimeout", "at most 60s"),
        ),
        (
            "negative duration",
            set(en(), "/spec/edge/healthCheck/interval", "-1s".into()),
            Refused("spec.edge.healthCheck.interval", "positive duration"),
        ),
        (
            "duration garbage",
            set(en(), "/spec/edge/healthCheck/timeout", "abc".into()),
            Refused("spec.edge.healthCheck.timeout", "positive duration"),
        ),
        (
            "timeout longer than interval",
            set(
                set(en(), "/spec/edge/healthCheck/interval", "1s".into()),
                "/spec/edge/healthCheck/timeout",
                "2s".into(),
            ),
            Refused(
                "spec.edge.healthCheck.timeout",
                "must not be longer than interval",
            ),
        ),
        (
            "healthyThreshold 0",
            set(en(), "/spec/edge/healthCheck/healthyThreshold", 0.into()),
            Refused(
                "spec.edge.healthCheck.healthyThreshold",
                "greater than or equal to 1",
            ),
        ),
        (
            "mtu too small",
            set(en(), "/spec/tunnel/mtu", 1000.into()),
            Refused("spec.tunnel.mtu", "greater than or equal to 1280"),
        ),
        (
            "mtu too big",
            set(en(), "/spec/tunnel/mtu", 9001.into()),
            Refused("spec.tunnel.mtu", "less than or equal to 9000"),
        ),
        (
            "tunnel port 0",
            set(en(), "/spec/tunnel/listenPort", 0.into()),
            Refused("spec.tunnel.listenPort", "greater than or equal to 1"),
        ),
        (
            "network not CIDR",
            set(en(), "/spec/tunnel/network", "10.200.0.0".into()),
            Refused("spec.tunnel.network", "IPv4 network in CIDR form"),
        ),
        (
            "network too small",
            set(en(), "/spec/tunnel/network", "10.200.0.0/30".into()),
            Refused("spec.tunnel.network", "/29 or larger"),
        ),
        (
            "network IPv6",
            set(en(), "/spec/tunnel/network", "fd00::/64".into()),
            Refused("spec.tunnel.network", "IPv4 network"),
        ),
        (
            "network not aligned",
            set(en(), "/spec/tunnel/network", "10.200.0.1/24".into()),
            Refused("spec.tunnel.network", "network address"),
        ),
        (
            "replicas 0",
            set(en(), "/spec/uplink/replicas", 0.into()),
            Refused("spec.uplink.replicas", "greater than or equal to 1"),
        ),
        (
            "replicas 254",
            set(en(), "/spec/uplink/replicas", 254.into()),
            Refused("spec.uplink.replicas", "less than or equal to 253"),
        ),
        (
            "replicas beyond the network",
            set(
                set(en(), "/spec/tunnel/network", "10.200.0.0/29".into()),
                "/spec/uplink/replicas",
                6.into(),
            ),
            Refused("spec.uplink.replicas", "does not fit in tunnel.network"),
        ),
        (
            "uplink namespace not a DNS label",
            set(en(), "/spec/uplink/namespace", "Tunnel_NS".into()),
            Refused("spec.uplink.namespace", "should match"),
        ),
        (
            "user label clobbers the selector",
            set(
                en(),
                "/spec/uplink/labels",
                json!({"app.kubernetes.io/name": "mine"}),
            ),
            Refused("spec.uplink.labels", "must not set app.kubernetes.io/name"),
        ),
        (
            "socket buffer too small",
            set(en(), "/spec/host/kernelMaxSocketBufferBytes", 1000.into()),
            Refused(
                "spec.host.kernelMaxSocketBufferBytes",
                "greater than or equal to 212992",
            ),
        ),
        (
            "no bindings",
            set(pb(), "/spec/bindings", json!([])),
            Refused("spec.bindings", "at least 1 items"),
        ),
        (
            "no edgeNodeRef",
            set(pb(), "/spec/edgeNodeRef", Value::Null),
            Refused("spec", "set exactly one of spec.edgeNodeRef"),
        ),
        (
            "edgeNodeRef and edgeNodeRefs",
            set(pb(), "/spec/edgeNodeRefs", json!([{"name": "b"}])),
            Refused("spec", "set exactly one of spec.edgeNodeRef"),
        ),
        (
            "several edges",
            set(
                set(
                    set(pb(), "/metadata/name", "several-edges".into()),
                    "/spec/edgeNodeRef",
                    Value::Null,
                ),
                "/spec/edgeNodeRefs",
                json!([{"name": "a"}, {"name": "a", "namespace": "other"}, {"name": "b"}]),
            ),
            Accepted,
        ),
        (
            "the same edge twice",
            set(
                set(pb(), "/spec/edgeNodeRef", Value::Null),
                "/spec/edgeNodeRefs",
                json!([{"name": "a", "namespace": "x"}, {"name": "a", "namespace": "x"}]),
            ),
            Refused("spec.edgeNodeRefs", "names the same EdgeNode twice"),
        ),
        (
            "no edges in the list",
            set(
                set(pb(), "/spec/edgeNodeRef", Value::Null),
                "/spec/edgeNodeRefs",
                json!([]),
            ),
            Refused("spec.edgeNodeRefs", "at least 1 items"),
        ),
        (
            "bad protocol",
            set(pb(), &format!("{b}/protocol"), "SCTP".into()),
            Refused(
                "spec.bindings[0].protocol",
                "supported values: \"TCP\", \"UDP\"",
            ),
        ),
        (
            "listenPort 0",
            set(pb(), &format!("{b}/listenPort"), 0.into()),
            Refused("spec.bindings[0].listenPort", "greater than or equal to 1"),
        ),
        (
            "listenPort 65536",
            set(pb(), &format!("{b}/listenPort"), 65536.into()),
            Refused("spec.bindings[0].listenPort", "less than or equal to 65535"),
        ),
        (
            "reserved port",
            set(pb(), &format!("{b}/listenPort"), 40500.into()),
            Refused("spec.bindings[0].listenPort", "reserved"),
        ),
        (
            "binding name not a DNS label",
            set(pb(), &format!("{b}/name"), "HTTP_1".into()),
            Refused("spec.bindings[0].name", "should match"),
        ),
        (
            "duplicate binding name",
            set(pb(), "/spec/bindings/1", second("http", 81, "TCP")),
            Refused("spec.bindings[1]", "Duplicate value"),
        ),
        (
            "same port twice",
            set(pb(), "/spec/bindings/1", second("other", 80, "TCP")),
            Refused("spec.bindings", "same protocol and listenPort"),
        ),
        (
            "tcp params on UDP",
            set(
                set(pb(), &format!("{b}/protocol"), "UDP".into()),
                &format!("{b}/tcp"),
                json!({"proxyProtocol": true}),
            ),
            Refused("spec.bindings[0]", "Protocol TCP cannot have UDP params"),
        ),
        (
            "udp params on TCP",
            set(pb(), &format!("{b}/udp"), json!({"sessionTimeout": "30s"})),
            Refused("spec.bindings[0]", "Protocol TCP cannot have UDP params"),
        ),
        (
            "tls on UDP",
            set(
                set(pb(), &format!("{b}/protocol"), "UDP".into()),
                &format!("{b}/tls"),
                tls_pt.clone(),
            ),
            Refused("spec.bindings[0].tls", "only valid for TCP"),
        ),
        (
            "offload without secret",
            set(pb(), &format!("{b}/tls"), json!({"mode": "offload"})),
            Refused("spec.bindings[0].tls", "tls.secretRef is required"),
        ),
        (
            "bad tls mode",
            set(pb(), &format!("{b}/tls"), json!({"mode": "terminate"})),
            Refused("spec.bindings[0].tls.mode", "supported values"),
        ),
        (
            "bad server name",
            set(
                pb(),
                &format!("{b}/tls"),
                json!({"mode": "passthrough", "serverNames": ["*bad*.com"]}),
            ),
            Refused("spec.bindings[0].tls.serverNames[0]", "should match"),
        ),
        (
            "service and address",
            set(pb(), &format!("{b}/target/address"), "10.0.0.1".into()),
            Refused("spec.bindings[0].target", "either Service or Address"),
        ),
        (
            "no target",
            set(pb(), &format!("{b}/target"), json!({})),
            Refused("spec.bindings[0].target", "either Service or Address"),
        ),
        (
            "address without port",
            set(pb(), &format!("{b}/target"), json!({"address": "10.0.0.1"})),
            Refused(
                "spec.bindings[0].target.port",
                "required with target.address",
            ),
        ),
        (
            "address is a hostname",
            set(
                pb(),
                &format!("{b}/target"),
                json!({"address": "db.internal", "port": 5432}),
            ),
            Refused("spec.bindings[0].target.address", "IPv4 or IPv6 address"),
        ),
        (
            "port with a service",
            set(pb(), &format!("{b}/target/port"), 80.into()),
            Refused(
                "spec.bindings[0].target.port",
                "only valid with target.address",
            ),
        ),
        (
            "service port 0",
            set(pb(), &format!("{b}/target/service/port"), 0.into()),
            Refused(
                "spec.bindings[0].target.service.port",
                "greater than or equal to 1",
            ),
        ),
        (
            "service port 65536",
            set(pb(), &format!("{b}/target/service/port"), 65536.into()),
            Refused(
                "spec.bindings[0].target.service.port",
                "less than or equal to 65535",
            ),
        ),
        (
            "service port name not an IANA name",
            set(pb(), &format!("{b}/target/service/port"), "HTTP_1".into()),
            Refused("spec.bindings[0].target.service.port", "should match"),
        ),
        (
            "service port name without a letter",
            set(pb(), &format!("{b}/target/service/port"), "8080".into()),
            Refused("spec.bindings[0].target.service.port", "should match"),
        ),
        (
            "service port name starting with '-'",
            set(pb(), &format!("{b}/target/service/port"), "-web".into()),
            Refused("spec.bindings[0].target.service.port", "should match"),
        ),
        (
            "service port name ending with '-'",
            set(pb(), &format!("{b}/target/service/port"), "web-".into()),
            Refused("spec.bindings[0].target.service.port", "should match"),
        ),
        (
            "a one-letter Service port name",
            set(
                set(pb(), "/metadata/name", "one-letter".into()),
                &format!("{b}/target/service/port"),
                "a".into(),
            ),
            Accepted,
        ),
        (
            "a Service port name with its letter in the middle",
            set(
                set(pb(), "/metadata/name", "letter-inside".into()),
                &format!("{b}/target/service/port"),
                "8-x-9".into(),
            ),
            Accepted,
        ),
        (
            "service port name too long",
            set(
                pb(),
                &format!("{b}/target/service/port"),
                "a-very-long-port-name".into(),
            ),
            Refused(
                "spec.bindings[0].target.service.port",
                "may not be more than 15 bytes",
            ),
        ),
        (
            "service without namespace",
            set(pb(), &format!("{b}/target/service/namespace"), Value::Null),
            Refused(
                "spec.bindings[0].target.service.namespace",
                "Required value",
            ),
        ),
        (
            "session timeout without unit",
            set(
                set(pb(), &format!("{b}/protocol"), "UDP".into()),
                &format!("{b}/udp"),
                json!({"sessionTimeout": "60"}),
            ),
            Refused("spec.bindings[0].udp.sessionTimeout", "positive duration"),
        ),
        (
            "idle timeout negative",
            set(pb(), &format!("{b}/tcp"), json!({"idleTimeout": "-5m"})),
            Refused("spec.bindings[0].tcp.idleTimeout", "positive duration"),
        ),
        (
            "proxy protocol v3",
            set(
                pb(),
                &format!("{b}/tcp"),
                json!({"proxyProtocol": true, "proxyProtocolVersion": "v3"}),
            ),
            Refused(
                "spec.bindings[0].tcp.proxyProtocolVersion",
                "supported values",
            ),
        ),
        // Accepted: the passthrough exception, two passthrough bindings sharing a port (SNI
        // routing).
        (
            "passthrough bindings share a port",
            set(
                set(
                    pb(),
                    &format!("{b}/tls"),
                    json!({"mode": "passthrough", "serverNames": ["a.example.com"]}),
                ),
                "/spec/bindings/1",
                json!({"name": "b", "protocol": "TCP", "listenPort": 80, "tls": {"mode": "passthrough", "serverNames": ["*.b.example.com"]},
                       "target": {"address": "10.0.0.2", "port": 443}}),
            ),
            Accepted,
        ),
        (
            "a named Service port",
            set(
                set(pb(), "/metadata/name", "named".into()),
                &format!("{b}/target/service/port"),
                "https".into(),
            ),
            Accepted,
        ),
        (
            "TCP and UDP on the same number, an IPv6 target",
            set(
                set(pb(), "/metadata/name", "dns".into()),
                "/spec/bindings/1",
                json!({"name": "dns-udp", "protocol": "UDP", "listenPort": 80, "target": {"address": "fd00::53", "port": 53}}),
            ),
            Accepted,
        ),
        (
            "connectTimeout 60s",
            set(
                set(en(), "/metadata/name", "sixty".into()),
                "/spec/ssh/connectTimeout",
                "60s".into(),
            ),
            Accepted,
        ),
        (
            "connectTimeout 1m",
            set(
                set(en(), "/metadata/name", "one-minute".into()),
                "/spec/ssh/connectTimeout",
                "1m".into(),
            ),
            Accepted,
        ),
        (
            "a valid EdgeNode",
            set(en(), "/metadata/name", "immutable".into()),
            Accepted,
        ),
        (
            "policy: a source range that is not a CIDR",
            set(
                pb(),
                &format!("{b}/policy/sourceRanges"),
                json!(["10.0.0.0/8", "10.0.0.300/24"]),
            ),
            Refused(
                "spec.bindings[0].policy.sourceRanges[1]",
                "must be IPv4 or IPv6 CIDRs",
            ),
        ),
        (
            "policy: a bare address as a source range",
            set(
                pb(),
                &format!("{b}/policy/sourceRanges"),
                json!(["203.0.113.7"]),
            ),
            Refused(
                "spec.bindings[0].policy.sourceRanges[0]",
                "must be IPv4 or IPv6 CIDRs",
            ),
        ),
        (
            "policy: a source range with host bits",
            set(
                pb(),
                &format!("{b}/policy/sourceRanges"),
                json!(["203.0.113.7/24"]),
            ),
            Refused("spec.bindings[0].policy.sourceRanges[0]", "network address"),
        ),
        (
            "policy: an IPv6 source range with host bits",
            set(
                pb(),
                &format!("{b}/policy/sourceRanges"),
                json!(["2001:db8::1/32"]),
            ),
            Refused("spec.bindings[0].policy.sourceRanges[0]", "network address"),
        ),
        (
            "policy: 65 source ranges",
            set(
                pb(),
                &format!("{b}/policy/sourceRanges"),
                json!(
                    (0..65)
                        .map(|i| format!("10.{i}.0.0/16"))
                        .collect::<Vec<_>>()
                ),
            ),
            Refused(
                "spec.bindings[0].policy.sourceRanges",
                "must have at most 64 items",
            ),
        ),
        (
            "policy: a source range twice",
            set(
                pb(),
                &format!("{b}/policy/sourceRanges"),
                json!(["10.0.0.0/8", "10.0.0.0/8"]),
            ),
            Refused("spec.bindings[0].policy.sourceRanges[1]", "Duplicate value"),
        ),
        (
            "policy: maxConnections 0",
            set(pb(), &format!("{b}/policy/maxConnections"), 0.into()),
            Refused(
                "spec.bindings[0].policy.maxConnections",
                "greater than or equal to 1",
            ),
        ),
        (
            "policy: maxConnections over the edge's limit",
            set(pb(), &format!("{b}/policy/maxConnections"), 100_001.into()),
            Refused(
                "spec.bindings[0].policy.maxConnections",
                "less than or equal to 100000",
            ),
        ),
        (
            "policy: perSecond 0",
            set(
                pb(),
                &format!("{b}/policy/connectionRate"),
                json!({"perSecond": 0}),
            ),
            Refused(
                "spec.bindings[0].policy.connectionRate.perSecond",
                "greater than or equal to 1",
            ),
        ),
        (
            "policy: no perSecond",
            set(
                pb(),
                &format!("{b}/policy/connectionRate"),
                json!({"burst": 5}),
            ),
            Refused(
                "spec.bindings[0].policy.connectionRate.perSecond",
                "Required value",
            ),
        ),
        (
            "policy: burst under perSecond",
            set(
                pb(),
                &format!("{b}/policy/connectionRate"),
                json!({"perSecond": 10, "burst": 5}),
            ),
            Refused(
                "spec.bindings[0].policy.connectionRate.burst",
                "must be at least perSecond",
            ),
        ),
        (
            "policy: connectionRate on UDP",
            set(
                set(
                    set(pb(), &format!("{b}/protocol"), "UDP".into()),
                    &format!("{b}/target"),
                    json!({"address": "10.0.0.1", "port": 53}),
                ),
                &format!("{b}/policy"),
                json!({"maxConnections": 10, "connectionRate": {"perSecond": 10}}),
            ),
            Refused(
                "spec.bindings[0].policy.connectionRate",
                "applies to TCP bindings only",
            ),
        ),
        (
            "policy: every field on TCP",
            set(
                set(pb(), "/metadata/name", "policy-tcp".into()),
                &format!("{b}/policy"),
                json!({"sourceRanges": (0..64).map(|i| format!("10.{i}.0.0/16")).chain(["2001:db8::/32".to_owned()]).skip(1).collect::<Vec<_>>(),
                       "maxConnections": 100_000, "connectionRate": {"perSecond": 10, "burst": 10}}),
            ),
            Accepted,
        ),
        (
            "policy: ranges and a session cap on UDP",
            set(
                set(
                    set(
                        set(pb(), "/metadata/name", "policy-udp".into()),
                        &format!("{b}/protocol"),
                        "UDP".into(),
                    ),
                    &format!("{b}/target"),
                    json!({"address": "10.0.0.1", "port": 53}),
                ),
                &format!("{b}/policy"),
                json!({"sourceRanges": ["198.51.100.0/24", "203.0.113.9/32"], "maxConnections": 1}),
            ),
            Accepted,
        ),
        (
            "policy: empty",
            set(
                set(pb(), "/metadata/name", "policy-empty".into()),
                &format!("{b}/policy"),
                json!({}),
            ),
            Accepted,
        ),
    ]
}

/// Creates each document of `cases` and returns how each answer differed from the expected
/// one (empty when all matched): a refusal must name the field and say the words.
pub(crate) async fn admission_failures(
    client: &kube::Client,
    cases: &[(&'static str, Value, Admission)],
) -> Vec<String> {
    let mut failures = Vec::new();
    for (what, doc, expected) in cases {
        match (create(client, doc).await, expected) {
            (Ok(_), Accepted) => {}
            (Ok(_), Refused(field, _)) => {
                failures.push(format!("{what}: accepted, expected refusal naming {field}"));
            }
            (Err(kube::Error::Api(status)), Refused(field, words)) => {
                let message = status.message.clone();
                if std::env::var_os("SHOW_MESSAGES").is_some() {
                    eprintln!("{what}: {message}");
                }
                if !(message.contains(field) && message.contains(words)) {
                    failures.push(format!(
                        "{what}: expected `{field}` and `{words}` in: {message}"
                    ));
                }
            }
            (Err(e), Accepted) => failures.push(format!("{what}: refused, expected accepted: {e}")),
            (Err(e), Refused(..)) => failures.push(format!("{what}: unexpected error {e}")),
        }
    }
    failures
}

#[tokio::test]
async fn admission_accepts_or_refuses_each_document_naming_the_field() {
    let (_server, client) = started().await;
    let cases = document_cases();
    assert!(cases.len() >= 20);
    let failures = admission_failures(&client, &cases).await;
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    // A named Service port is kept as a name.
    let named =
        Api::<DynamicObject>::namespaced_with(client.clone(), "default", &resource("PortBinding"))
            .get("named")
            .await
            .unwrap();
    assert_eq!(
        named.data["spec"]["bindings"][0]["target"]["service"]["port"], "https",
        "kept as a name"
    );

    assert_updates_of_the_valid_edge_node(&client).await;
}

/// Updates of the table's valid EdgeNode (`immutable`): uplink.namespace is immutable (a
/// transition rule), other fields change.
pub(crate) async fn assert_updates_of_the_valid_edge_node(client: &kube::Client) {
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "default", &resource("EdgeNode"));
    let updates = [
        (
            "uplink.namespace changed",
            json!({"spec": {"uplink": {"namespace": "elsewhere"}}}),
            Refused("uplink.namespace", "uplink.namespace is immutable"),
        ),
        (
            "replicas changed",
            json!({"spec": {"uplink": {"replicas": 2}}}),
            Accepted,
        ),
    ];
    for (what, patch, expected) in updates {
        let result = api
            .patch("immutable", &PatchParams::default(), &Patch::Merge(patch))
            .await;
        match (result, expected) {
            (Ok(_), Accepted) => {}
            (Err(e), Refused(field, words)) => {
                let message = e.to_string();
                assert!(
                    message.contains(field) && message.contains(words),
                    "{what}: {message}"
                );
            }
            (result, expected) => panic!("{what}: expected {expected:?}, got {result:?}"),
        }
    }
}
