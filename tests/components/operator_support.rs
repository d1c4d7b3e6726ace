//! What the components group's operator tests share beyond the bed
//! ([`testbed::operator::OperatorBed`]): the user guide's examples as the tests apply them,
//! and the logs to show when a wait fails.

use kube::Client;
use testbed::objects::apply_yaml;
use testbed::operator::Operator;
use testbed::uplinks::Uplinks;
use testbed::vps::Vps;
use tunnel::crd::{EdgeNode, PortBinding};

/// The documents of README example `name` (`tests/fixtures/readme/<name>.yaml`).
pub fn readme_example(name: &str) -> Vec<String> {
    let text = std::fs::read_to_string(format!("tests/fixtures/readme/{name}.yaml")).unwrap();
    text.split("\n---\n").map(str::to_owned).collect()
}

/// README Example 1 applied unchanged but for the EdgeNode's address, pointed at `vps`.
pub async fn apply_example1(client: &Client, vps: &Vps) {
    let docs = readme_example("example1");
    let node = docs[0].replace("203.0.113.10", &vps.address().to_string());
    apply_yaml::<EdgeNode>(client, &node).await.unwrap();
    apply_yaml::<PortBinding>(client, &docs[1]).await.unwrap();
}

/// The operator's log and the uplinks' logs, for a failure message.
pub fn logs_of(operator: &Operator, uplinks: &Uplinks) -> String {
    format!(
        "operator log:\n{}\nuplinks:\n{}",
        operator.log_text(),
        uplinks.logs()
    )
}
