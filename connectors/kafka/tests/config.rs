//! Configuration errors as a user sees them: each at its key's path, with
//! a hint. No broker is needed: reading settings does no I/O.

use spate_connector::testkit::{read_sink_config, read_source_config};
use spate_connector::{ConfigError, ConfigNode};
use spate_testsupport::kafka::*;

fn summary(errors: &[ConfigError]) -> Vec<(String, String)> {
    errors
        .iter()
        .map(|e| (e.path.clone(), e.message.clone()))
        .collect()
}

/// A source node reading `orders` as group `fn` (lines 2 and 3), then
/// `more` (from line 4).
fn orders_source(more: Vec<(&str, ConfigNode)>) -> ConfigNode {
    let mut entries = vec![
        ("topics", scalar("orders", 2)),
        ("group_id", scalar("fn", 3)),
    ];
    entries.extend(more);
    map(entries)
}

fn source_errors(entries: &[(&str, &str)]) -> Vec<ConfigError> {
    let (builder, errors) = read_source_config(&*factory(), entries);
    assert_eq!(builder.is_some(), errors.is_empty(), "{errors:?}");
    errors
}

#[test]
fn a_valid_source_and_sink_read_without_errors() {
    assert!(source_errors(&[
        ("topics", "orders"),
        ("group_id", "fn"),
        ("assignment", "eager"),
        ("start", "latest")
    ])
    .is_empty());
    let (builder, errors) = read_sink_config(
        &*factory(),
        &[
            ("topic", "out"),
            ("compression", "zstd"),
            ("linger", "20ms"),
        ],
    );
    assert!(errors.is_empty() && builder.is_some(), "{errors:?}");
    let factory = factory();
    assert_eq!(factory.kind(), "kafka");
    let source = factory.source_capabilities().unwrap();
    assert!(source.exactly_once && source.durable_positions);
    let sink = factory.sink_capabilities().unwrap();
    assert!(sink.exactly_once && !sink.durable_positions);
}

#[test]
fn topics_and_topic_pattern_are_exclusive_and_one_is_required() {
    let errors = source_errors(&[
        ("topics", "orders"),
        ("topic_pattern", "orders-.*"),
        ("group_id", "fn"),
    ]);
    assert_eq!(
        summary(&errors),
        vec![(
            "inputs[0].topic_pattern".to_owned(),
            "both `topics` and `topic_pattern` are set".to_owned()
        )]
    );
    assert!(errors[0].hint.as_deref().unwrap().contains("keep one"));
    assert_eq!(errors[0].span.line, 3, "points at `topic_pattern`");

    let errors = source_errors(&[("group_id", "fn")]);
    assert_eq!(
        summary(&errors),
        vec![(
            "inputs[0].topics".to_owned(),
            "missing required field `topics` in `inputs[0]`".to_owned()
        )]
    );
    assert!(errors[0].hint.as_deref().unwrap().contains("topic_pattern"));

    let errors = source_errors(&[("topics", "orders")]);
    assert_eq!(summary(&errors)[0].0, "inputs[0].group_id");
}

#[test]
fn an_unknown_assignment_gets_a_suggestion() {
    let errors = source_errors(&[
        ("topics", "orders"),
        ("group_id", "fn"),
        ("assignment", "eagre"),
    ]);
    assert_eq!(
        summary(&errors),
        vec![(
            "inputs[0].assignment".to_owned(),
            "unknown assignment `eagre`".to_owned()
        )]
    );
    assert_eq!(
        errors[0].hint.as_deref(),
        Some("did you mean `eager`? (one of `cooperative` or `eager`)")
    );
}

#[test]
fn properties_spate_manages_are_refused_with_the_key_to_use() {
    let node = orders_source(vec![(
        "properties",
        properties(
            &[
                ("fetch.wait.max.ms", "50"),
                ("enable.auto.commit", "true"),
                ("group.id", "other"),
                ("isolation.level", "read_uncommitted"),
            ],
            5,
        ),
    )]);
    let (builder, errors) = read_source_node(&node);
    assert!(builder.is_none());
    assert_eq!(
        summary(&errors),
        vec![
            (
                "inputs[0].properties.enable.auto.commit".to_owned(),
                "`enable.auto.commit` is managed by spate and cannot be set in `properties`"
                    .to_owned()
            ),
            (
                "inputs[0].properties.group.id".to_owned(),
                "`group.id` is managed by spate and cannot be set in `properties`".to_owned()
            ),
            (
                "inputs[0].properties.isolation.level".to_owned(),
                "`isolation.level` is managed by spate and cannot be set in `properties`"
                    .to_owned()
            ),
        ]
    );
    assert!(errors[0]
        .hint
        .as_deref()
        .unwrap()
        .contains("spate commits offsets itself"));
    assert_eq!(errors[1].hint.as_deref(), Some("use `group_id`"));
    assert_eq!(errors[2].hint.as_deref(), Some("use `isolation`"));
    assert_eq!(errors[1].span.line, 7);

    // librdkafka checks names and values when the file is loaded.
    let node = map(vec![
        ("topic", scalar("out", 2)),
        (
            "properties",
            properties(&[("linger.msec", "5"), ("batch.size", "lots")], 4),
        ),
    ]);
    let (builder, errors) = read_sink_node(&node);
    assert!(builder.is_none());
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "outputs[0].properties.linger.msec",
            "outputs[0].properties.batch.size"
        ]
    );
    assert!(
        errors[0]
            .message
            .contains("librdkafka refuses property `linger.msec`"),
        "{}",
        errors[0].message
    );
}

#[test]
fn sink_settings_are_checked() {
    let (_, errors) = read_sink_config(&*factory(), &[("compression", "zstandard")]);
    assert_eq!(
        summary(&errors),
        vec![
            (
                "outputs[0].topic".to_owned(),
                "missing required field `topic` in `outputs[0]`".to_owned()
            ),
            (
                "outputs[0].compression".to_owned(),
                "unknown compression `zstandard`".to_owned()
            ),
        ]
    );
    let (_, errors) = read_sink_config(&*factory(), &[("topic", "bad topic")]);
    assert_eq!(errors[0].path, "outputs[0].topic");
    assert!(
        errors[0].message.contains("not a valid Kafka topic name"),
        "{}",
        errors[0].message
    );
    let (_, errors) = read_sink_config(&*factory(), &[("topic", "out"), ("acks", "1")]);
    assert_eq!(
        summary(&errors),
        vec![(
            "outputs[0].acks".to_owned(),
            "unknown key `acks` in `outputs[0]`".to_owned()
        )]
    );
    for (delivery_timeout, linger, problem) in [
        ("500ms", "5ms", "`delivery_timeout` must be at least 1s"),
        (
            "2s",
            "2s",
            "`delivery_timeout` must be longer than `linger`",
        ),
    ] {
        let entries = [
            ("topic", "out"),
            ("delivery_timeout", delivery_timeout),
            ("linger", linger),
        ];
        let (_, errors) = read_sink_config(&*factory(), &entries);
        let expected = ("outputs[0].delivery_timeout".to_owned(), problem.to_owned());
        assert_eq!(summary(&errors), vec![expected]);
    }
}

#[test]
fn half_configured_sasl_names_what_is_missing_and_never_the_password() {
    let node = orders_source(vec![(
        "security",
        properties(
            &[("sasl_username", "alice"), ("sasl_password", "s3cret-pw")],
            5,
        ),
    )]);
    let (builder, errors) = read_source_node(&node);
    assert!(builder.is_none());
    assert_eq!(
        summary(&errors),
        vec![(
            "inputs[0].sasl_mechanism".to_owned(),
            "missing required field `sasl_mechanism` in `inputs[0]`".to_owned()
        )]
    );
    assert!(!format!("{errors:?}").contains("s3cret-pw"));

    // The same key in both places is a conflict; an unknown key inside
    // `security` is reported there.
    let node = orders_source(vec![
        ("tls_ca_file", scalar("/etc/ca.pem", 4)),
        (
            "security",
            properties(&[("tls_ca_file", "/etc/other.pem"), ("tls_ca", "x")], 6),
        ),
    ]);
    let (_, errors) = read_source_node(&node);
    assert_eq!(
        summary(&errors),
        vec![
            (
                "inputs[0].security.tls_ca".to_owned(),
                "unknown key `tls_ca` in `inputs[0].security`".to_owned()
            ),
            (
                "inputs[0].tls_ca_file".to_owned(),
                "`tls_ca_file` is set both here and in `security`".to_owned()
            ),
        ]
    );
}
