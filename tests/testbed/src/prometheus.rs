//! A real Prometheus (Debian's package, `/usr/bin/prometheus`) on a loopback port: started
//! with a scrape configuration and rule files, asked through its HTTP API.

use std::path::PathBuf;
use std::process::Command;

use crate::error::TestbedError;
use crate::process::Process;

/// A running Prometheus; stopped when dropped.
#[derive(Debug)]
pub struct Prometheus {
    dir: tempfile::TempDir,
    port: u16,
    _process: Process,
}

impl Prometheus {
    /// Starts Prometheus with `scrape_configs` (the YAML list, indented as a top-level key's
    /// value) scraped every 2 s, evaluating the rule files `rules` every 2 s.
    pub fn start(scrape_configs: &str, rules: &[PathBuf]) -> Result<Self, TestbedError> {
        let dir = tempfile::tempdir().map_err(TestbedError::io("a directory for Prometheus"))?;
        let port = crate::free_port()?;
        let rule_files: Vec<String> = rules
            .iter()
            .map(|r| format!("  - {:?}\n", r.display().to_string()))
            .collect();
        let config = format!(
            "global: {{scrape_interval: 2s, scrape_timeout: 1s, evaluation_interval: 2s}}\nrule_files:\n{}scrape_configs:\n{scrape_configs}",
            if rule_files.is_empty() {
                "  []\n".to_owned()
            } else {
                rule_files.concat()
            }
        );
        let file = dir.path().join("prometheus.yml");
        std::fs::write(&file, config).map_err(TestbedError::io("writing prometheus.yml"))?;
        let process = Process::spawn(
            "prometheus",
            Command::new("/usr/bin/prometheus")
                .arg(format!("--config.file={}", file.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}")),
            Some(&dir.path().join("prometheus.log")),
        )?;
        Ok(Self {
            dir,
            port,
            _process: process,
        })
    }

    fn get(&self, path: &str, query: Option<&str>) -> Option<serde_json::Value> {
        let mut cmd = Command::new("curl");
        cmd.args(["-sfG", "--max-time", "3"])
            .arg(format!("http://127.0.0.1:{}{path}", self.port));
        if let Some(q) = query {
            cmd.args(["--data-urlencode", &format!("query={q}")]);
        }
        let out = cmd.output().ok()?;
        serde_json::from_slice(&out.stdout).ok()
    }

    /// The series an instant query returns, if Prometheus answered.
    pub fn query(&self, q: &str) -> Option<Vec<serde_json::Value>> {
        self.get("/api/v1/query", Some(q))?["data"]["result"]
            .as_array()
            .cloned()
    }

    /// The loaded rules (`/api/v1/rules`): every rule of every group, with its `health`.
    pub fn rules(&self) -> Vec<serde_json::Value> {
        let Some(v) = self.get("/api/v1/rules", None) else {
            return Vec::new();
        };
        v["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    /// The scrape targets and Prometheus's log, for a failure's message.
    pub fn describe(&self) -> String {
        format!(
            "targets: {}\nlog: {}",
            self.get("/api/v1/targets", None)
                .map(|v| v.to_string())
                .unwrap_or_default(),
            std::fs::read_to_string(self.log()).unwrap_or_default()
        )
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("prometheus.log")
    }
}
