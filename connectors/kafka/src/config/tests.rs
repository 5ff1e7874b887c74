//! Unit tests of the connection settings: cluster identity, secrets kept
//! out of `Debug`, and librdkafka's check of properties.

use super::properties::check_property;
use super::*;

#[test]
fn cluster_identity_ignores_order_case_and_spaces() {
    assert_eq!(
        cluster_identity("B:9092, a:9092,a:9092"),
        cluster_identity("a:9092,b:9092")
    );
    assert_ne!(cluster_identity("a:9092"), cluster_identity("a:9093"));
}

#[test]
fn debug_output_hides_secrets() {
    let settings = ConnectionSettings {
        bootstrap_servers: "k:9092".into(),
        connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        tls: None,
        sasl: Some(Sasl {
            mechanism: SaslMechanism::ScramSha512,
            username: "alice".into(),
            password: "s3cret".into(),
        }),
        properties: vec![
            ("ssl.key.password".into(), "hunter2".into()),
            ("fetch.wait.max.ms".into(), "50".into()),
        ],
    };
    let shown = format!("{settings:?}");
    assert!(!shown.contains("s3cret"), "{shown}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("alice") && shown.contains("fetch.wait.max.ms"));
}

#[test]
fn librdkafka_checks_property_names_and_values() {
    assert!(check_property("fetch.wait.max.ms", "50").is_ok());
    let unknown = check_property("fetch.wait.max.msec", "50").unwrap_err();
    assert!(unknown.contains("fetch.wait.max.msec"), "{unknown}");
    assert!(check_property("fetch.wait.max.ms", "soon").is_err());
}
