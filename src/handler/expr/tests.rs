//! Tests of compiling and evaluating expressions inline.
use super::*;

fn compile(source: &str) -> Expr {
    Expr::compile(source).unwrap_or_else(|e| panic!("{source:?}: {e:?}"))
}

fn json(text: &str) -> Val {
    parse_json(text.as_bytes()).unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

#[test]
fn conditions_read_the_first_result_as_jq_truthiness() {
    let event = json(r#"{"amount": 150, "country": "DE", "tags": []}"#);
    for (source, expected) in [
        (".amount > 100", true),
        (".amount > 200", false),
        (".country", true),
        (".missing", false),
        (".tags", true),
        ("empty", false),
        ("false, true", false),
    ] {
        assert_eq!(
            compile(source).holds(event.clone()),
            Ok(expected),
            "{source}"
        );
    }
}

#[test]
fn results_are_compact_json_and_nulls_are_skipped() {
    let results = compile("{id: .order, total: (.amount * 2)}, null, empty, \"x\"")
        .json_results(json(r#"{"order": "o-1", "amount": 21}"#));
    let results: Vec<String> = results
        .unwrap_or_default()
        .into_iter()
        .map(|r| String::from_utf8_lossy(&r).into_owned())
        .collect();
    assert_eq!(results, vec![r#"{"id":"o-1","total":42}"#, r#""x""#]);
}

#[test]
fn runtime_errors_halts_and_floods_are_errors() {
    let event = json(r#"{"name": "a"}"#);
    assert_eq!(
        compile(".name + 1").holds(event.clone()),
        Err(EvalError::Failed("cannot calculate \"a\" + 1".to_owned()))
    );
    assert_eq!(
        compile("halt_error(3)").holds(event.clone()),
        Err(EvalError::Halted(3))
    );
    assert_eq!(
        compile("range(20000)").json_results(event),
        Err(EvalError::TooManyResults)
    );
}

#[test]
fn compile_errors_point_at_the_offending_text() {
    let errors = |source: &str| match Expr::compile(source) {
        Ok(_) => panic!("{source:?} compiled"),
        Err(errors) => errors
            .into_iter()
            .map(|e| (e.offset, e.message))
            .collect::<Vec<_>>(),
    };
    assert_eq!(
        errors(".a > > 1"),
        vec![(5, "expected term, found `>`".to_owned())]
    );
    assert_eq!(
        errors(".amount >"),
        vec![(9, "the expression ends early: expected term".to_owned())]
    );
    assert_eq!(
        errors("{id: .order"),
        vec![(0, "`{` is never closed".to_owned())]
    );
    assert_eq!(
        errors(".a | selct(. > 1)"),
        vec![(5, "unknown function `selct/1`".to_owned())]
    );
    assert_eq!(
        errors("$x + 1"),
        vec![(0, "unknown variable `$x`".to_owned())]
    );
    assert_eq!(
        errors("env"),
        vec![(0, "unknown function `env/0`".to_owned())]
    );
    assert_eq!(
        errors(".a and and .b"),
        vec![(7, "unexpected keyword `and`".to_owned())]
    );
}

#[test]
fn not_json_is_reported_with_the_parser_message() {
    assert!(matches!(
        parse_json(b"temperature=21"),
        Err(EvalError::NotJson(_))
    ));
    assert!(matches!(
        parse_json(b"{\"a\": 1} {}"),
        Err(EvalError::NotJson(_))
    ));
    assert!(matches!(parse_json(b"{1: 2}"), Err(EvalError::NotJson(_))));
    assert!(matches!(parse_json(b"NaN"), Err(EvalError::NotJson(_))));
    let deep = "[".repeat(1_000_000);
    assert_eq!(
        parse_json(deep.as_bytes()),
        Err(EvalError::NotJson(
            "recursion limit exceeded at line 1 column 128".to_owned()
        ))
    );
}
