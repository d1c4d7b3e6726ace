//! Golden files: every configuration shape renders to exactly the bytes under
//! `tests/golden/<shape>/`, twice in a row, whatever the order of the PortBindings.
//! Regenerate with `UPDATE_GOLDEN=1 cargo test -p tunnel --test pure plan_golden`.

use std::path::PathBuf;

use crate::fixtures::{fake_secret, outcomes_text};
use crate::plan_inputs::{Shape, shapes};
use tunnel::plan::{Layout, plan};

fn golden_dir(shape: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(shape)
}

fn files(shape: &Shape) -> Vec<(String, String)> {
    let p = plan(&shape.input, &shape.resolver).unwrap();
    let mut out: Vec<(String, String)> = p
        .vps_files
        .iter()
        .map(|f| {
            (
                f.path.trim_start_matches('/').to_owned(),
                f.contents.clone(),
            )
        })
        .collect();
    out.push(("uplink.json".into(), p.uplink_file.contents.clone()));
    out.push(("outcomes.txt".into(), outcomes_text(&p)));
    out.push((
        "hashes.txt".into(),
        format!(
            "plan {}\nbootstrap {}\nenvoy {}\ntls {}\nrelay {}\nuplink {}\n",
            p.hashes.plan,
            p.hashes.bootstrap,
            p.hashes.envoy,
            p.hashes.tls,
            p.hashes.relay,
            p.hashes.uplink
        ),
    ));
    out
}

#[test]
fn every_shape_matches_its_golden_files() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    for shape in shapes(&Layout::default(), &fake_secret) {
        let dir = golden_dir(shape.name);
        let got = files(&shape);
        if update {
            let _ = std::fs::remove_dir_all(&dir);
        }
        for (rel, contents) in &got {
            let path = dir.join(rel);
            if update {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, contents).unwrap();
                continue;
            }
            match std::fs::read_to_string(&path) {
                Ok(want) if &want == contents => {}
                Ok(want) => failures.push(format!(
                    "{}/{rel} differs:\n--- want\n{want}\n--- got\n{contents}",
                    shape.name
                )),
                Err(e) => failures.push(format!("{}/{rel}: {e}", shape.name)),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn rendering_is_deterministic_and_order_independent() {
    for shape in shapes(&Layout::default(), &fake_secret) {
        let a = files(&shape);
        let mut reversed = shape.input.clone();
        reversed.sources.reverse();
        for pb in &mut reversed.sources {
            pb.spec.bindings.reverse();
        }
        let b = files(&Shape {
            name: shape.name,
            input: reversed,
            resolver: shape.resolver.clone(),
        });
        assert_eq!(a, b, "{}", shape.name);
    }
}
