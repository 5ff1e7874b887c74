//! Per-event cost of the no-code built-in handlers on a small JSON event
//! (about 120 bytes: an order with a nested customer and two lines).
//!
//! - `filter/field`: the field form, `{field: amount, gte: 100}`
//!   (serde_json parse + one pointer lookup): the baseline.
//! - `filter/expr`: `.amount >= 100 and .customer.country != null`.
//! - `map/reshape`: `{id: .order, total: (.amount * 1.2), country: .customer.country}`.
//! - `map/explode`: `.lines[] | {sku, qty}` (two outputs per event).
//! - `route/first` / `route/default`: three routes; the event matches the
//!   first one, or none and goes to `default`.
//! - `map/sandboxed`: `reduce .lines[] as $l (0; . + $l.qty)`, which the
//!   static check cannot prove bounded (`reduce`), so it runs in the
//!   expression sandbox (a forked child process): the round trip's cost.
//!
//! Each handler is configured from YAML through the loader, as `spate run`
//! does, and called directly with a fresh event per iteration (cloning an
//! event is a few reference-count increments). The async call is driven by
//! `futures::executor::block_on`: these handlers never wait, so that adds
//! only a poll. Results are per event (`Throughput::Elements`).
//!
//! Run: `cargo bench --bench handlers` (about a minute).

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use spate::{Context, Event, Handler, Headers};
use spate_testsupport::engine::{load_handler, order_event};

const PAYLOAD: &str = r#"{"order":"o-1042","amount":250.5,"customer":{"id":"c-7","country":"DE"},"lines":[{"sku":"a-1","qty":2},{"sku":"b-9","qty":1}]}"#;

fn handler(yaml: &str) -> Arc<dyn Handler> {
    let text = format!(
        "functions:\n  - name: bench\n    input: {{type: generate, count: 1}}\n    handler: {yaml}\n    outputs:\n      - {{type: file, name: big, path: out/big.jsonl}}\n      - {{type: file, name: de, path: out/de.jsonl}}\n      - {{type: file, name: small, path: out/small.jsonl}}\n    dead_letter: {{type: file, path: out/dead.jsonl}}\n"
    );
    load_handler(&text, "bench.yaml", &|_: &str| None).unwrap_or_else(|errors| panic!("{errors}"))
}

fn event(payload: &'static str) -> Event {
    order_event("c-7", payload, Headers::new(), 0, 0)
}

fn handlers(c: &mut Criterion) {
    let ctx = Context::new(Arc::from("bench"), 1);
    let small = PAYLOAD.replace("250.5", "20").replace("\"DE\"", "\"FR\"");
    let small: &'static str = Box::leak(small.into_boxed_str());
    let routes = "{name: route, routes: [{when: '.amount > 100', to: big}, {when: '.customer.country == \"DE\"', to: de}, {when: '.lines | length > 5', to: big}], default: small}";
    let cases: [(&str, &str, &'static str, usize); 7] = [
        (
            "filter/field",
            "{name: filter, field: amount, gte: 100}",
            PAYLOAD,
            1,
        ),
        (
            "filter/expr",
            "{name: filter, expr: '.amount >= 100 and .customer.country != null'}",
            PAYLOAD,
            1,
        ),
        (
            "map/reshape",
            "{name: map, expr: '{id: .order, total: (.amount * 1.2), country: .customer.country}'}",
            PAYLOAD,
            1,
        ),
        (
            "map/explode",
            "{name: map, expr: '.lines[] | {sku, qty}'}",
            PAYLOAD,
            2,
        ),
        (
            "map/sandboxed",
            "{name: map, expr: 'reduce .lines[] as $l (0; . + $l.qty)'}",
            PAYLOAD,
            1,
        ),
        ("route/first", routes, PAYLOAD, 1),
        ("route/default", routes, small, 1),
    ];
    let mut group = c.benchmark_group("handlers");
    group.throughput(Throughput::Elements(1));
    for (name, yaml, payload, outputs) in cases {
        let handler = handler(yaml);
        let template = event(payload);
        let produced = futures::executor::block_on(handler.handle(template.clone(), &ctx));
        assert_eq!(produced.map(|o| o.len()), Ok(outputs), "{name}");
        group.bench_function(name, |b| {
            b.iter(|| {
                let outputs =
                    futures::executor::block_on(handler.handle(black_box(template.clone()), &ctx));
                black_box(outputs)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, handlers);
criterion_main!(benches);
