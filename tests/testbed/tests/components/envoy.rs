//! The real Envoy from the test bed validates a config, and rejects a broken one.

#[test]
fn envoy_validates_a_small_config_and_rejects_a_broken_one() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.yaml");
    std::fs::write(
        &good,
        r"
admin:
  address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
static_resources:
  listeners:
    - name: tcp_80
      address: { socket_address: { address: 0.0.0.0, port_value: 8080 } }
      filter_chains:
        - filters:
            - name: envoy.filters.network.tcp_proxy
              typed_config:
                '@type': type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
                stat_prefix: tcp_80
                cluster: uplinks
  clusters:
    - name: uplinks
      type: STATIC
      connect_timeout: 5s
      load_assignment:
        cluster_name: uplinks
        endpoints:
          - lb_endpoints:
              - endpoint: { address: { socket_address: { address: 10.200.0.2, port_value: 8080 } } }
",
    )
    .unwrap();
    testbed::envoy::validate(&good).expect("a valid config passes");

    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        std::fs::read_to_string(&good)
            .unwrap()
            .replace("connect_timeout: 5s", "connect_timeout: 5 seconds"),
    )
    .unwrap();
    let err = testbed::envoy::validate(&bad).expect_err("a broken duration is refused");
    assert!(
        err.to_string().contains("connect_timeout")
            || err.to_string().to_lowercase().contains("duration"),
        "{err}"
    );
}
