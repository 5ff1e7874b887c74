//! The expression built-ins (`filter` with `expr:`, `map`, `route`) as a
//! pipeline file declares them: each case loads pipeline text with the
//! loader and the built-in registry, then runs the configured handler
//! directly on events (no engine, no connectors), or checks the rendered
//! validation errors, whose places point inside the expression.

use std::sync::Arc;

use bytes::Bytes;
use spate::pipeline::PipelineSpec;
use spate::{Context, ErrorKind, Event, Handler, Headers, Output};
use spate_testsupport::engine::{handler_pipeline, load_pipeline, order_event};

const FILE: &str = "pipelines/test.yaml";

/// A one-function pipeline whose handler is `handler` (YAML lines indented
/// under `handler:`), reading `generate` and writing files `big`, `de`,
/// `small`.
fn pipeline(handler: &str) -> String {
    handler_pipeline(handler, &["big", "de", "small"])
}

fn load(text: &str) -> Result<PipelineSpec, String> {
    load_pipeline(text, FILE, &|_: &str| None)
}

fn handler(handler_yaml: &str) -> Arc<dyn Handler> {
    match load(&pipeline(handler_yaml)) {
        Ok(mut spec) => spec.functions.remove(0).handler,
        Err(errors) => panic!("{handler_yaml}\ndid not load:\n{errors}"),
    }
}

/// What loading `handler_yaml` prints.
fn errors(handler_yaml: &str) -> String {
    match load(&pipeline(handler_yaml)) {
        Ok(_) => panic!("{handler_yaml}\nloaded without an error"),
        Err(errors) => errors,
    }
}

fn event(payload: &str) -> Event {
    let mut headers = Headers::new();
    headers.push("trace", "t-1");
    order_event("order-1", payload.to_owned(), headers, 0, 42)
}

fn ctx() -> Context {
    Context::new(Arc::from("orders"), 1)
}

async fn run(
    handler: &Arc<dyn Handler>,
    payload: &str,
) -> Result<Vec<Output>, spate::HandlerError> {
    handler.handle(event(payload), &ctx()).await
}

fn payloads(outputs: &[Output]) -> Vec<String> {
    outputs
        .iter()
        .map(|o| String::from_utf8_lossy(&o.record.payload).into_owned())
        .collect()
}

#[tokio::test]
async fn filter_expression_keeps_events_for_which_it_holds() {
    let filter = handler("name: filter\nexpr: '.temperature >= -40 and .device != null'");
    let kept = run(&filter, r#"{"device": "d-1", "temperature": 21.5}"#).await;
    let kept = kept.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        payloads(&kept),
        vec![r#"{"device": "d-1", "temperature": 21.5}"#]
    );
    assert_eq!(kept[0].record.key, Some(Bytes::from_static(b"order-1")));
    assert_eq!(kept[0].record.headers.get_str("trace"), Some("t-1"));
    assert_eq!(kept[0].record.timestamp_ms, Some(1_700_000_000_000));
    for dropped in [
        r#"{"device": "d-1", "temperature": -90}"#,
        r#"{"temperature": 20}"#,
        r#"{"device": "d-1"}"#,
    ] {
        assert_eq!(
            run(&filter, dropped).await.map(|o| o.len()),
            Ok(0),
            "{dropped}"
        );
    }
}

#[tokio::test]
async fn the_field_form_of_filter_still_works() {
    let filter = handler("{name: filter, field: reading.temperature, gte: -40}");
    let kept = run(&filter, r#"{"reading": {"temperature": 3}}"#).await;
    assert_eq!(kept.map(|o| o.len()), Ok(1));
    let dropped = run(&filter, r#"{"reading": {"temperature": -41}}"#).await;
    assert_eq!(dropped.map(|o| o.len()), Ok(0));
}

#[tokio::test]
async fn a_payload_that_is_not_json_is_a_permanent_error() {
    for (handler_yaml, what) in [
        ("{name: filter, expr: '.ok'}", "filter"),
        ("{name: map, expr: '.'}", "map"),
        ("{name: route, routes: [{when: '.ok', to: big}]}", "route"),
    ] {
        let handler = handler(handler_yaml);
        let error = run(&handler, "temperature=21.5")
            .await
            .err()
            .unwrap_or_else(|| panic!("{handler_yaml} accepted garbage"));
        assert_eq!(error.kind, ErrorKind::Permanent, "{handler_yaml}");
        assert_eq!(
            error.message,
            format!("{what}: payload is not JSON: expected ident at line 1 column 2")
        );
    }
    let deep = handler("{name: map, expr: '.'}");
    let error = run(&deep, &"[".repeat(100_000)).await.err();
    assert_eq!(
        error.map(|e| e.message),
        Some("map: payload is not JSON: recursion limit exceeded at line 1 column 128".to_owned()),
        "a deeply nested payload is refused, not a stack overflow"
    );
}

#[tokio::test]
async fn a_runtime_error_is_a_permanent_error_with_jq_s_message() {
    let map = handler("{name: map, expr: '{total: (.amount + 1)}'}");
    let error = run(&map, r#"{"amount": "12"}"#).await.err();
    let error = error.unwrap_or_else(|| panic!("adding a string to a number worked"));
    assert_eq!(error.kind, ErrorKind::Permanent);
    assert_eq!(
        error.message,
        r#"map `{total: (.amount + 1)}`: cannot calculate "12" + 1"#
    );
    let filter = handler(
        r#"{name: filter, expr: 'if .amount < 0 then error("negative amount") else true end'}"#,
    );
    let error = run(&filter, r#"{"amount": -1}"#).await.err();
    assert_eq!(
        error.map(|e| e.message),
        Some(
            "filter `if .amount < 0 then error(\"negative amount\") else true end`: negative amount"
                .to_owned()
        )
    );
}

#[tokio::test]
async fn map_reshapes_and_yields_one_output_per_result() {
    let map = handler("name: map\nexpr: '{id: .order, total: (.amount * 1.5)}'");
    let outputs = run(&map, r#"{"order": "o-1", "amount": 10, "noise": true}"#)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(payloads(&outputs), vec![r#"{"id":"o-1","total":15.0}"#]);
    assert_eq!(outputs[0].record.key, Some(Bytes::from_static(b"order-1")));
    assert_eq!(outputs[0].record.headers.get_str("trace"), Some("t-1"));
    assert_eq!(outputs[0].to, None, "map writes to every output");

    let split = handler("{name: map, expr: '.lines[] | select(.qty > 0) | {sku, qty}'}");
    let outputs = run(
        &split,
        r#"{"lines": [{"sku": "a", "qty": 2}, {"sku": "b", "qty": 0}, {"sku": "c", "qty": 1}]}"#,
    )
    .await;
    assert_eq!(
        outputs.map(|o| payloads(&o)),
        Ok(vec![
            r#"{"sku":"a","qty":2}"#.to_owned(),
            r#"{"sku":"c","qty":1}"#.to_owned()
        ])
    );

    let nothing = handler("{name: map, expr: 'if .ok then {id} else null end, empty'}");
    assert_eq!(
        run(&nothing, r#"{"ok": false, "id": 1}"#)
            .await
            .map(|o| o.len()),
        Ok(0)
    );
    assert_eq!(
        run(&nothing, r#"{"ok": true, "id": 1}"#)
            .await
            .map(|o| payloads(&o)),
        Ok(vec![r#"{"id":1}"#.to_owned()])
    );
}

#[tokio::test]
async fn route_sends_the_event_unchanged_to_the_first_matching_output() {
    let route = handler(
        "name: route\nroutes:\n  - {when: '.amount > 100', to: big}\n  - when: .country == \"DE\"\n    to: de\ndefault: small",
    );
    for (payload, to) in [
        (r#"{"amount": 500, "country": "DE"}"#, "big"),
        (r#"{"amount": 5, "country": "DE"}"#, "de"),
        (r#"{"amount": 5, "country": "FR"}"#, "small"),
    ] {
        let outputs = run(&route, payload).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(outputs.len(), 1, "{payload}");
        assert_eq!(outputs[0].to.as_deref(), Some(to), "{payload}");
        assert_eq!(payloads(&outputs), vec![payload], "unchanged");
        assert_eq!(outputs[0].record.key, Some(Bytes::from_static(b"order-1")));
    }
    let no_default = handler("{name: route, routes: [{when: '.amount > 100', to: big}]}");
    assert_eq!(
        run(&no_default, r#"{"amount": 1}"#).await.map(|o| o.len()),
        Ok(0),
        "no match and no default: dropped"
    );
    let failing = handler("{name: route, routes: [{when: '.amount > 100', to: big}, {when: '.country | ascii_downcase == \"de\"', to: de}]}");
    let error = run(&failing, r#"{"amount": 1, "country": 49}"#).await.err();
    let error = error.unwrap_or_else(|| panic!("ascii_downcase of a number worked"));
    assert_eq!(error.kind, ErrorKind::Permanent);
    assert!(
        error
            .message
            .starts_with("route to `de` when `.country | ascii_downcase == \"de\"`: "),
        "{}",
        error.message
    );
}

#[test]
fn a_syntax_error_in_a_plain_or_quoted_scalar_points_at_its_column() {
    // `handler:` is line 4; its keys start in column 7.
    assert_eq!(
        errors("name: filter\nexpr: .amount > > 100"),
        "pipelines/test.yaml:6:23: invalid jq expression in `expr`: expected term, found `>`\n"
    );
    assert_eq!(
        errors("name: filter\nexpr: '.amount > > 100'"),
        "pipelines/test.yaml:6:24: invalid jq expression in `expr`: expected term, found `>`\n"
    );
    assert_eq!(
        errors("{name: map, expr: '{id: .order, total: (.amount * 1.2}'}"),
        "pipelines/test.yaml:5:46: invalid jq expression in `expr`: `(` is never closed\n  hint: close it with `)`\n"
    );
    // `''` in single quotes is one `'`: the column counts both.
    assert_eq!(
        errors("name: route\nroutes:\n  - {when: '.note == \"it''s\" and .amount >', to: de}"),
        "pipelines/test.yaml:7:49: invalid jq expression in `when`: the expression ends early: expected term\n"
    );
}

#[test]
fn a_syntax_error_in_a_block_scalar_points_at_its_line_and_column() {
    let text =
        errors("name: map\nexpr: |\n  {\n    id: .order,\n    total: (.amount * * 1.2)\n  }");
    assert_eq!(
        text,
        "pipelines/test.yaml:9:29: invalid jq expression in `expr`: expected term, found `*`\n"
    );
    let line =
        pipeline("name: map\nexpr: |\n  {\n    id: .order,\n    total: (.amount * * 1.2)\n  }")
            .lines()
            .nth(8)
            .map(str::to_owned)
            .unwrap_or_default();
    assert_eq!(line.chars().nth(28), Some('*'), "column 29 of {line:?}");
    assert_eq!(line.chars().nth(26), Some('*'), "the first `*` is fine");
    // A leading empty line and a deeper indentation than usual.
    assert_eq!(
        errors("name: filter\nexpr: |\n\n        .amount >\n          > 100"),
        "pipelines/test.yaml:9:17: invalid jq expression in `expr`: expected term, found `>`\n"
    );
}

#[test]
fn unknown_functions_and_variables_are_named_with_a_suggestion() {
    assert_eq!(
        errors("{name: filter, expr: '.tags | contans([\"vip\"])'}"),
        "pipelines/test.yaml:5:37: invalid jq expression in `expr`: unknown function `contans/1`\n  hint: did you mean `contains`?\n"
    );
    assert_eq!(
        errors("{name: map, expr: '{secret: env.DB_PASSWORD}'}"),
        "pipelines/test.yaml:5:35: invalid jq expression in `expr`: unknown function `env/0`\n  hint: expressions cannot read the environment; bind a value with `vars: {name: '${VAR}'}` and write `$name`\n"
    );
    assert_eq!(
        errors("{name: filter, expr: '.amount > $limit'}"),
        "pipelines/test.yaml:5:39: invalid jq expression in `expr`: unknown variable `$limit`\n  hint: bind it first: `<value> as $limit | ...`\n"
    );
}

#[test]
fn settings_mistakes_are_validation_errors() {
    assert_eq!(
        errors("{name: filter, expr: '.ok', field: amount, gte: 0}"),
        "pipelines/test.yaml:5:42: `field` does not go with `expr`\n  hint: a filter takes either `expr: <jq condition>` or `field:` with one condition\n\
         pipelines/test.yaml:5:55: `gte` does not go with `expr`\n  hint: a filter takes either `expr: <jq condition>` or `field:` with one condition\n"
    );
    assert_eq!(
        errors("{name: map}"),
        "pipelines/test.yaml:5:7: missing required field `expr` in `functions[0].handler`\n  hint: write the new payload as a jq expression, e.g. `expr: '{id: .order, total: .amount}'`\n"
    );
    assert_eq!(
        errors("{name: map, expr: {id: 1}}"),
        "pipelines/test.yaml:5:25: `expr` must be a jq expression, found a mapping\n  hint: quote the expression: `expr: '.amount > 100'`, or write it as a block after `expr: |`\n"
    );
    assert_eq!(
        errors("{name: route, routes: [{when: '.ok'}, {to: big}], defualt: small}"),
        "pipelines/test.yaml:5:30: missing required field `to` in `functions[0].handler.routes[0]`\n  hint: name the output to send matching events to (its `name:`)\n\
         pipelines/test.yaml:5:45: missing required field `when` in `functions[0].handler.routes[1]`\n  hint: write the condition as a jq expression, e.g. `when: '.amount > 100'`\n\
         pipelines/test.yaml:5:57: unknown key `defualt` in `functions[0].handler`\n  hint: did you mean `default`?\n"
    );
    assert_eq!(
        errors("{name: route, routes: []}"),
        "pipelines/test.yaml:5:29: `routes` is empty\n  hint: give at least one route, e.g. `routes: [{when: '.amount > 100', to: big}]`, where `big` is the `name:` of an output\n"
    );
}
