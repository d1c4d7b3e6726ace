//! The echo workload run on the node by the end-to-end test and the demo: Deployments of
//! `tb-echo` (`src/bin/tb-echo.rs`, image [`crate::images::ECHO`]) in `default` (2 replicas)
//! and `networking` (1), and the Services README Examples 1 and 2 point at: `my-web`
//! (8080/TCP), `internal-ingress` in `networking` (443/TCP) and one at `10.96.0.10` (53/UDP,
//! the address Example 2 names).

/// The echo workload: a Deployment of `tb-echo` and ClusterIP Services in front of it.
pub fn manifests() -> String {
    let deployment = |ns: &str, replicas: u8| {
        format!(
            r"apiVersion: apps/v1
kind: Deployment
metadata: {{name: echo, namespace: {ns}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: echo}}}}
  template:
    metadata: {{labels: {{app: echo}}}}
    spec:
      terminationGracePeriodSeconds: 2
      securityContext: {{runAsNonRoot: true, seccompProfile: {{type: RuntimeDefault}}}}
      containers:
        - name: echo
          image: {image}
          imagePullPolicy: Never
          securityContext: {{allowPrivilegeEscalation: false, capabilities: {{drop: [ALL]}}}}
          ports: [{{containerPort: 8080}}, {{containerPort: 5353, protocol: UDP}}]
          readinessProbe: {{tcpSocket: {{port: 8080}}, periodSeconds: 1}}
",
            image = crate::images::ECHO
        )
    };
    format!(
        r"apiVersion: v1
kind: Namespace
metadata: {{name: networking}}
---
{}---
{}---
apiVersion: v1
kind: Service
metadata: {{name: my-web, namespace: default}}
spec:
  selector: {{app: echo}}
  ports: [{{name: http, port: 8080, targetPort: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: dns-echo, namespace: default}}
spec:
  clusterIP: 10.96.0.10
  selector: {{app: echo}}
  ports: [{{name: dns, port: 53, targetPort: 5353, protocol: UDP}}]
---
apiVersion: v1
kind: Service
metadata: {{name: internal-ingress, namespace: networking}}
spec:
  selector: {{app: echo}}
  ports: [{{name: https, port: 443, targetPort: 8080}}]
",
        deployment("default", 2),
        deployment("networking", 1),
    )
}
