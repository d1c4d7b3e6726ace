//! The tests that need nothing but the code (no root, no test bed): the planner's conflict
//! rules, the golden files, properties over arbitrary specs, and `tunnel render` run as the
//! real binary. `cargo test -p tunnel --test pure`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod fixtures;
#[path = "../shared/plan_inputs.rs"]
mod plan_inputs;

mod docs_examples;
mod plan_conflicts;
mod plan_golden;
mod plan_proptest;
mod plan_render;
mod plan_sources;
mod plan_targets;
mod plan_tls_names;
mod trust_generated;
mod trust_workload;
