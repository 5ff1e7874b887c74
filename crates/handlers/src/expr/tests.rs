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
    for (source, offset, message) in [
        (".a > > 1", 5, "expected term, found `>`"),
        (".amount >", 9, "the expression ends early: expected term"),
        ("{id: .order", 0, "`{` is never closed"),
        (".a | selct(. > 1)", 5, "unknown function `selct/1`"),
        ("$x + 1", 0, "unknown variable `$x`"),
        ("env", 0, "unknown function `env/0`"),
        (".a and and .b", 7, "unexpected keyword `and`"),
    ] {
        assert_eq!(
            errors(source),
            vec![(offset, message.to_owned())],
            "{source}"
        );
    }
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

#[test]
fn bounded_expressions_run_inline_and_others_in_the_sandbox() {
    assert!(compile(".amount >= 100 and .customer.country != null").is_inline());
    assert!(compile(".lines[] | {sku, qty}").is_inline());
    assert!(!compile("reduce .[] as $x (0; . + $x)").is_inline());
    assert!(!compile("def f: f; f").is_inline());
}

#[test]
fn brackets_inside_strings_and_comments_do_not_count_as_nesting() {
    let many = "(".repeat(MAX_NESTING * 2);
    assert!(Expr::compile(&format!("\"{many}\" | length")).is_ok());
    assert!(Expr::compile(&format!(".a # {many}\n| length")).is_ok());
    let errors = Expr::compile(&format!("\"\\({many}"))
        .err()
        .unwrap_or_default();
    assert_eq!(errors.len(), 1);
    assert_eq!(
        errors[0].message,
        format!("the expression nests deeper than {MAX_NESTING} levels here")
    );
    // The string and its interpolation are two levels; the brackets after
    // them reach the limit at the one that makes it one too many.
    assert_eq!(errors[0].offset, 3 + MAX_NESTING - 2);
}

#[test]
fn the_deepest_inline_shapes_are_inline() {
    let n = MAX_INLINE_DEPTH - 1;
    for source in [
        format!("{}1{}", "[".repeat(n), "]".repeat(n)),
        format!("{}1", "- ".repeat(n)),
        format!(".a{}", " | .a".repeat(n)),
    ] {
        assert!(compile(&source).is_inline(), "{source}");
    }
}
