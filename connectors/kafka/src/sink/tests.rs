//! Unit tests of the sink's record conversion and its librdkafka build.

use super::*;
use bytes::Bytes;
use rdkafka::message::Headers as _;
use spate_connector::Headers;

#[test]
fn the_topic_header_overrides_and_is_not_written() {
    let mut headers = Headers::new();
    headers.push("a", Bytes::from_static(b"1"));
    headers.push(TOPIC_HEADER, Bytes::from_static(b"other"));
    headers.push("a", Bytes::from_static(b"2"));
    let record = Record {
        headers,
        ..Record::default()
    };
    let prepared = prepare(&record, "main").unwrap();
    assert_eq!(prepared.topic, "other");
    let written: Vec<(String, Vec<u8>)> = prepared
        .headers
        .expect("the other headers are written")
        .iter()
        .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
        .collect();
    assert_eq!(
        written,
        vec![("a".into(), b"1".to_vec()), ("a".into(), b"2".to_vec())]
    );
    let record = Record::default();
    let plain = prepare(&record, "main").unwrap();
    assert_eq!(plain.topic, "main");
    assert!(plain.headers.is_none(), "no header list without headers");
}

#[test]
fn a_record_with_only_the_topic_header_gets_no_header_list() {
    let mut headers = Headers::new();
    headers.push(TOPIC_HEADER, Bytes::from_static(b"other"));
    let record = Record {
        headers,
        ..Record::default()
    };
    let prepared = prepare(&record, "main").unwrap();
    assert_eq!(prepared.topic, "other");
    assert!(prepared.headers.is_none());
}

#[test]
fn every_compression_codec_is_built_in() {
    let config = rdkafka::ClientConfig::new().create_native_config().unwrap();
    let features = config.get("builtin.features").unwrap();
    for codec in ["zstd", "lz4", "snappy", "gzip"] {
        assert!(
            features.split(',').any(|f| f == codec),
            "{codec} missing from {features}"
        );
    }
}

#[test]
fn an_invalid_override_topic_is_rejected() {
    let mut headers = Headers::new();
    headers.push(TOPIC_HEADER, Bytes::from_static(b"no spaces"));
    let record = Record {
        headers,
        ..Record::default()
    };
    let failure = prepare(&record, "main").err().unwrap();
    assert_eq!(failure.kind, crate::error::FailureKind::Rejected);
}
