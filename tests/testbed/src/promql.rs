//! The PromQL the chart ships, read as Prometheus reads it (with `promql-parser`): the alerts
//! of `charts/tunnel/files/prometheus-rules.yaml`, the queries of the Grafana dashboard's
//! panels, and the series selectors each expression reads.

use std::path::Path;

use promql_parser::parser::{self, Expr};
use promql_parser::util::{ExprVisitor, walk_expr};

/// The chart's alert rules, relative to the repository.
pub const RULES: &str = "charts/tunnel/files/prometheus-rules.yaml";
/// The chart's Grafana dashboard, relative to the repository.
pub const DASHBOARD: &str = "charts/tunnel/files/dashboard.json";

/// One expression the chart ships: an alert's, or a panel's query.
#[derive(Debug, Clone)]
pub struct Query {
    /// The alert's name, or the panel's title.
    pub name: String,
    pub expr: String,
}

fn read(repo: &Path, file: &str) -> Result<String, String> {
    std::fs::read_to_string(repo.join(file)).map_err(|e| format!("{file}: {e}"))
}

/// Every alert of the rule file, in order.
pub fn alerts(repo: &Path) -> Result<Vec<Query>, String> {
    let file: serde_yaml::Value =
        serde_yaml::from_str(&read(repo, RULES)?).map_err(|e| format!("{RULES}: {e}"))?;
    Ok(file["groups"]
        .as_sequence()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_sequence().cloned().unwrap_or_default())
        .filter_map(|r| {
            Some(Query {
                name: r["alert"].as_str()?.to_owned(),
                expr: r["expr"].as_str()?.to_owned(),
            })
        })
        .collect())
}

/// Every query of the dashboard's panels, in order.
pub fn panels(repo: &Path) -> Result<Vec<Query>, String> {
    let json: serde_json::Value =
        serde_json::from_str(&read(repo, DASHBOARD)?).map_err(|e| format!("{DASHBOARD}: {e}"))?;
    let mut out = Vec::new();
    for panel in json["panels"].as_array().into_iter().flatten() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let (Some(title), Some(expr)) = (panel["title"].as_str(), target["expr"].as_str()) {
                out.push(Query {
                    name: title.to_owned(),
                    expr: expr.to_owned(),
                });
            }
        }
    }
    Ok(out)
}

/// Collects the vector selectors of an expression (a range selector's included).
struct Selectors(Vec<parser::VectorSelector>);

impl ExprVisitor for Selectors {
    type Error = std::convert::Infallible;

    fn pre_visit(&mut self, expr: &Expr) -> Result<bool, Self::Error> {
        match expr {
            Expr::VectorSelector(vs) => self.0.push(vs.clone()),
            Expr::MatrixSelector(ms) => self.0.push(ms.vs.clone()),
            _ => {}
        }
        Ok(true)
    }
}

/// Each series selector `expr` reads, as an instant query of its own (`name{matchers}`, no
/// range or offset): what must return series for the expression to have data.
pub fn selectors(expr: &str) -> Result<Vec<String>, String> {
    let ast = parser::parse(expr).map_err(|e| format!("{expr:?}: {e}"))?;
    let mut found = Selectors(Vec::new());
    let _ = walk_expr(&mut found, &ast);
    let mut out: Vec<String> = found
        .0
        .into_iter()
        .map(|mut vs| {
            vs.offset = None;
            vs.at = None;
            vs.to_string()
        })
        .collect();
    out.dedup();
    Ok(out)
}

/// The metric names `expr` reads.
pub fn metric_names(expr: &str) -> Result<Vec<String>, String> {
    let ast = parser::parse(expr).map_err(|e| format!("{expr:?}: {e}"))?;
    let mut found = Selectors(Vec::new());
    let _ = walk_expr(&mut found, &ast);
    let mut names: Vec<String> = found.0.into_iter().filter_map(|vs| vs.name).collect();
    names.dedup();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_come_out_of_functions_aggregations_and_comparisons() {
        let expr = "max by (namespace, envoy_cluster_name) (rate(envoy_x_total{a=\"b\"}[5m])) or tunnel_y > 0";
        assert_eq!(
            selectors(expr).unwrap(),
            vec!["envoy_x_total{a=\"b\"}".to_owned(), "tunnel_y".to_owned()]
        );
        assert_eq!(
            metric_names(expr).unwrap(),
            vec!["envoy_x_total".to_owned(), "tunnel_y".to_owned()]
        );
        assert!(selectors("sum(").is_err());
    }
}
