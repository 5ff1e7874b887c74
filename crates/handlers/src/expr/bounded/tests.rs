//! Tests of the inline classifier: both ways.
use super::*;

fn bounded(source: &str) -> bool {
    let term = jaq_core::load::parse(source, |p| p.term())
        .unwrap_or_else(|| panic!("{source:?} does not parse"));
    is_bounded(&term)
}

#[test]
fn everyday_expressions_run_inline() {
    for source in [
        ".amount > 100",
        ".temperature >= -40 and .device != null",
        ".country == \"DE\"",
        "{id: .order, total: (.amount * 1.2)}",
        ".items[] | {sku}",
        ".items[] | select(.qty > 0) | {sku, qty}",
        "if .ok then {id} else null end",
        ".a // \"none\"",
        "\"\\(.device)-\\(.id)\"",
        "[.items[] | .price] | length",
        "map(.price) | sort",
        ".tags | length > 0",
        ".name | ascii_downcase | startswith(\"x\")",
        ".name | test(\"^a.*z$\")",
        ".device == $dev",
        ".total = .amount * 2",
        ".items[] |= {sku}",
        ".a as $a | {a: $a, b: .b}",
        "try .a catch null",
        "has(\"a\") and (.a | type) == \"string\"",
        "{(.k): .v}",
        ".ts / 1000 | floor",
        "to_entries | map(select(.value != null)) | length",
    ] {
        assert!(bounded(source), "{source} should run inline");
    }
}

#[test]
fn unbounded_or_unproven_expressions_go_to_the_sandbox() {
    for source in [
        "def f: if . <= 0 then 0 else (. - 1 | f) + 1 end; .n | f",
        "\"x\" * .n",
        ".s * 1000000",
        "[range(.n)]",
        "last(range(1e18))",
        "repeat(.) | empty",
        "def f: f; f",
        "..",
        "[.. | numbers]",
        "recurse",
        "limit(3; .[])",
        "until(. > 100; . * 2)",
        "reduce .[] as $x (0; . + $x)",
        "foreach .[] as $x (0; . + 1)",
        ".a - .b",
        ".[.k]",
        "getpath([\"a\"])",
        "walk(.)",
        "tostream",
        "fromjson",
        "implode",
        "@base32d",
        "add",
        ". as $all | .[] | $all",
        ".[] as $x | .[]",
        "{a: .[], b: .[]}",
        ".[] + .",
        "test(.pattern)",
        "combinations",
        "label $out | 1",
        ".[] = .",
    ] {
        assert!(!bounded(source), "{source} should go to the sandbox");
    }
}

#[test]
fn depth_beyond_the_limit_finds_a_term_there() {
    let source = format!("{}1", "- ".repeat(20));
    let term = jaq_core::load::parse(&source, |p| p.term()).unwrap_or_default();
    assert!(too_deep(&term, 30).is_none());
    let deep = too_deep(&term, 10).unwrap_or_else(|| panic!("not found"));
    assert_eq!(text_in(deep), Some("1"));
    assert!(!is_bounded(
        &jaq_core::load::parse(".a|".repeat(60).trim_end_matches('|'), |p| p.term())
            .unwrap_or_default()
    ));
}

#[test]
fn a_path_longer_than_the_term_limit_goes_to_the_sandbox() {
    // jaq evaluates a path one frame per part: a path of thousands of
    // parts overflowed the handler task's stack when it ran inline.
    let short = format!("{}.amount >= 0", ".a".repeat(8));
    assert!(bounded(&short), "{short} should run inline");
    let long = format!("{}.amount >= 0", ".a".repeat(MAX_INLINE_NODES));
    assert!(
        !bounded(&long),
        "a path of {MAX_INLINE_NODES} parts should go to the sandbox"
    );
}
