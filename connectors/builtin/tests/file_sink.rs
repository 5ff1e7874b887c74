//! The `file` sink: round trip through the file source, concurrent writes,
//! acknowledgement only after the data is in the file, errors, config.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use spate_connector::{Headers, Record, SinkError};
use spate_testsupport::builtin::{
    assert_mentioned, assert_suggests, messages, open, read_sink, read_to_end, sink, source_builder,
};

fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 temp path")
}

fn record(key: Option<&[u8]>, payload: &[u8], ts: Option<i64>) -> Record {
    let mut headers = Headers::new();
    headers.push("trace", "t-1");
    headers.push("binary", Bytes::from_static(&[0xde, 0xad, 0x00]));
    Record {
        key: key.map(Bytes::copy_from_slice),
        payload: Bytes::copy_from_slice(payload),
        headers,
        timestamp_ms: ts,
    }
}

#[tokio::test]
async fn what_the_sink_writes_the_source_reads_back() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("deep/er/out.jsonl");
    let records = vec![
        record(
            Some(b"device-1"),
            br#"{"temperature":21.5,"ok":true}"#,
            Some(1_700_000_000_000),
        ),
        record(None, b"plain text, with \"quotes\"\nand a newline", None),
        record(
            Some(&[0xff, 0x01]),
            &[0x00, 0x9f, 0x92, 0x96, 0xff],
            Some(-1),
        ),
        record(None, b"\"a JSON string\"", None),
        record(None, b"", None),
    ];
    let sink = sink("file", &[("path", path_str(&path))]).await;
    for r in &records {
        sink.write(r.clone()).await.expect("write");
    }
    sink.flush().await.expect("flush");

    let (mut source, _) = open(&*source_builder("file", &[("path", path_str(&path))])).await;
    let events = read_to_end(&mut *source, 100).await;
    let read_back: Vec<Record> = events
        .into_iter()
        .map(|e| Record {
            key: e.key,
            payload: e.payload,
            headers: e.headers,
            timestamp_ms: e.timestamp_ms,
        })
        .collect();
    assert_eq!(read_back, records);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_all_land_exactly_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("out.jsonl");
    let sink: Arc<dyn spate_connector::Sink> =
        Arc::from(sink("file", &[("path", path_str(&path))]).await);
    let tasks: Vec<_> = (0..32)
        .map(|t| {
            let sink = sink.clone();
            tokio::spawn(async move {
                for i in 0..200 {
                    let payload = format!("{{\"task\":{t},\"i\":{i}}}");
                    sink.write(Record::from_payload(payload))
                        .await
                        .expect("write");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    let text = std::fs::read_to_string(&path).expect("read");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 32 * 200);
    let unique: BTreeSet<&str> = lines.iter().copied().collect();
    assert_eq!(unique.len(), lines.len(), "no line twice");
    for t in 0..32 {
        for i in 0..200 {
            assert!(unique.contains(format!("{{\"payload\":{{\"task\":{t},\"i\":{i}}}}}").as_str()));
        }
    }
}

#[tokio::test]
async fn a_write_resolves_only_once_its_line_is_in_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("out.jsonl");
    let sink = sink("file", &[("path", path_str(&path)), ("fsync", "true")]).await;
    for i in 0..20 {
        sink.write(Record::from_payload(format!("record {i}")))
            .await
            .expect("write");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(
            text.ends_with(&format!("{{\"payload\":\"record {i}\"}}\n")),
            "acknowledged record {i} must be in the file: {text:?}"
        );
    }
}

#[tokio::test]
async fn sends_queue_in_order_and_each_resolves_once_its_line_is_in_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("out.jsonl");
    let sink = sink("file", &[("path", path_str(&path))]).await;
    // Sent one after another without waiting: the sink groups them.
    let mut pending = Vec::new();
    for i in 0..500 {
        let write = sink
            .send(Record::from_payload(format!("record {i}")))
            .await
            .expect("accepted");
        pending.push((i, write));
    }
    for (i, write) in pending {
        write.await.expect("acknowledged");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(
            text.contains(&format!("{{\"payload\":\"record {i}\"}}\n")),
            "acknowledged record {i} must be in the file"
        );
    }
    let text = std::fs::read_to_string(&path).expect("read");
    let expected: String = (0..500)
        .map(|i| format!("{{\"payload\":\"record {i}\"}}\n"))
        .collect();
    assert_eq!(text, expected, "every line once, in the order sent");
}

/// Writes one record of `payload` through a file sink of `entries`.
async fn write_one(entries: &[(&str, &str)], payload: &'static str) {
    sink("file", entries)
        .await
        .write(Record::from_payload(payload))
        .await
        .expect("write");
}

#[tokio::test]
async fn append_keeps_and_truncate_replaces() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("out.jsonl");
    std::fs::write(&path, "{\"payload\":\"old\"}\n").expect("write");
    // Appending by default.
    write_one(&[("path", path_str(&path))], "new").await;
    assert_eq!(
        std::fs::read_to_string(&path).expect("read"),
        "{\"payload\":\"old\"}\n{\"payload\":\"new\"}\n"
    );
    write_one(&[("path", path_str(&path)), ("append", "false")], "only").await;
    assert_eq!(
        std::fs::read_to_string(&path).expect("read"),
        "{\"payload\":\"only\"}\n"
    );
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn writer_errors_reach_the_waiting_writes_with_the_path() {
    if !Path::new("/dev/full").exists() {
        return;
    }
    let sink = sink("file", &[("path", "/dev/full")]).await;
    let err = sink
        .write(Record::from_payload("x"))
        .await
        .expect_err("no space");
    assert!(
        matches!(&err, SinkError::Unavailable { message, .. } if message.contains("/dev/full")),
        "{err}"
    );
    assert!(sink.flush().await.is_err(), "flush reports the failure too");
}

#[tokio::test]
async fn an_unopenable_path_fails_to_build() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (builder, errors) = read_sink("file", &[("path", path_str(dir.path()))]);
    assert!(errors.is_empty());
    let err = builder
        .expect("builder")
        .build()
        .await
        .err()
        .expect("a directory is not a file");
    assert!(
        err.is_retryable() && err.to_string().contains(path_str(dir.path())),
        "{err}"
    );
}

#[test]
fn configuration_problems_are_reported() {
    let (builder, errors) = read_sink("file", &[("apend", "false"), ("fsync", "sometimes")]);
    assert!(builder.is_none());
    let messages = messages(&errors);
    assert!(
        messages.contains(&"missing required field `path` in `outputs[0]`".to_owned()),
        "{messages:?}"
    );
    assert_mentioned(&messages, "`fsync` must be `true` or `false`");
    assert_suggests(&errors, "apend", "append");
}

#[test]
fn the_crate_offers_three_connector_kinds() {
    let kinds: Vec<_> = spate_builtin::connectors()
        .iter()
        .map(|f| (f.kind(), f.source_capabilities(), f.sink_capabilities()))
        .collect();
    let durable = spate_connector::Capabilities {
        exactly_once: false,
        durable_positions: true,
        resumable: false,
    };
    assert_eq!(
        kinds,
        vec![
            ("generate", Some(durable), None),
            (
                "file",
                Some(durable),
                Some(spate_connector::Capabilities::default())
            ),
            (
                "stdout",
                None,
                Some(spate_connector::Capabilities::default())
            ),
        ]
    );
}
