//! Golden tests for the warnings of `spate validate`: a file that asks for
//! an ordering its source cannot keep under failures loads (exit 0, `ok`)
//! and every such `ordering:` is reported on stderr, at its place, as
//! `file:line:column: warning: ...` with a hint. Each `tests/warnings/NAME.yaml`
//! must print exactly `tests/warnings/NAME.expected`;
//! `SPATE_BLESS=1 cargo test --test validate_warnings` rewrites them (read
//! the diff before committing).

use std::path::Path;
use std::process::Command;

fn check(name: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let file = format!("tests/warnings/{name}.yaml");
    let output = Command::new(env!("CARGO_BIN_EXE_spate"))
        .current_dir(dir)
        .args(["validate", &file])
        .output()
        .expect("spate validate runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "a warning is not an error: {file} must validate\n{stderr}"
    );
    assert!(stdout.starts_with(&format!("{file}: ok")), "{stdout}");
    let expected_path = dir.join(format!("tests/warnings/{name}.expected"));
    if std::env::var_os("SPATE_BLESS").is_some() {
        std::fs::write(&expected_path, &stderr).expect("expected file written");
        return;
    }
    let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
    assert_eq!(stderr, expected, "warnings of {file}");
}

#[test]
fn orderings_a_source_cannot_keep_are_warned_about_at_their_place() {
    check("ordering_promises");
}
