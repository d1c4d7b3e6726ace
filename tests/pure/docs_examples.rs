//! The user guide's examples are the ones the tests apply: each YAML block of
//! `docs/user-guide.md` headed "Example N" is byte for byte `tests/fixtures/readme/exampleN.yaml`,
//! so what a user copies is what `crd_admission`, `plan_render` and the end-to-end tests prove.

const GUIDE: &str = "docs/user-guide.md";

/// The first fenced `yaml` block after the heading that starts with `heading`.
fn yaml_after(text: &str, heading: &str) -> Option<String> {
    let at = text.find(heading)?;
    let rest = &text[at..];
    let start = rest.find("```yaml\n")? + "```yaml\n".len();
    let len = rest[start..].find("```")?;
    Some(rest[start..start + len].to_owned())
}

#[test]
fn the_user_guide_shows_the_fixtures_unchanged() {
    let guide = std::fs::read_to_string(GUIDE).unwrap();
    for n in 1..=5 {
        let fixture =
            std::fs::read_to_string(format!("tests/fixtures/readme/example{n}.yaml")).unwrap();
        let shown = yaml_after(&guide, &format!("### Example {n}:"))
            .unwrap_or_else(|| panic!("{GUIDE} has no YAML block under \"### Example {n}:\""));
        assert!(
            shown == fixture,
            "{GUIDE} Example {n} differs from tests/fixtures/readme/example{n}.yaml:\n{shown}"
        );
    }
}

#[test]
fn the_guide_and_the_readme_name_only_files_that_exist() {
    // Paths a user is told to run or read.
    for doc in [GUIDE, "README.md"] {
        let text = std::fs::read_to_string(doc).unwrap();
        for path in [
            "deploy/images.sh",
            "charts/tunnel",
            "docs/operations.md",
            "docs/troubleshooting.md",
            "docs/security.md",
        ] {
            if text.contains(path) {
                assert!(
                    std::path::Path::new(path).exists(),
                    "{doc} names {path}, which does not exist"
                );
            }
        }
    }
}
