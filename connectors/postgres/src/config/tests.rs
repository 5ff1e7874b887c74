//! Unit tests of the sink settings: table names, field sources and the
//! connection's display without its password.

use super::*;

#[test]
fn table_names_fold_like_sql() {
    assert_eq!(
        TableName::parse("Metrics.Telemetry").unwrap(),
        TableName {
            schema: Some("metrics".into()),
            name: "telemetry".into()
        }
    );
    assert_eq!(
        TableName::parse("\"My \"\"T\"\"\"").unwrap().name,
        "My \"T\""
    );
    assert!(TableName::parse("a.b.c").is_err());
    assert!(TableName::parse("a..b").is_err());
    assert_eq!(TableName::parse("s.t").unwrap().quoted(), "\"s\".\"t\"");
}

#[test]
fn sources_parse() {
    assert_eq!(
        FieldSource::parse("/a/b"),
        Ok(FieldSource::Pointer("/a/b".into()))
    );
    assert_eq!(
        FieldSource::parse("temperature"),
        Ok(FieldSource::Pointer("/temperature".into()))
    );
    assert_eq!(FieldSource::parse("$timestamp"), Ok(FieldSource::Timestamp));
    assert_eq!(
        FieldSource::parse("$header.trace"),
        Ok(FieldSource::Header("trace".into()))
    );
    let (message, hint) = FieldSource::parse("$timestmp").unwrap_err();
    assert!(message.contains("$timestmp"));
    assert_eq!(hint.as_deref(), Some("did you mean `$timestamp`?"));
}

#[test]
fn connection_display_hides_the_password() {
    let c = Connection::parse(
        "postgres://alice:s3cret@db.example:5433/metrics",
        None,
        Duration::from_secs(1),
    )
    .unwrap();
    assert_eq!(c.display(), "alice@db.example:5433/metrics");
    assert_eq!(c.cluster(), "db.example:5433/metrics");
    assert!(!format!("{c:?}").contains("s3cret"));
    let c = Connection::parse("postgres://bob@h/db", Some("pw"), Duration::from_secs(1)).unwrap();
    assert_eq!(c.config.get_password(), Some(&b"pw"[..]));
}
