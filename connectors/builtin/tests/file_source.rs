//! The `file` source: envelope and raw lines, decode errors, commit files,
//! follow mode, pause, cancel safety, configuration errors.

use std::future::Future as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use spate_connector::dead_letter::DECODE_ERROR;
use spate_connector::{Event, Source, SourceError, SourceMessage};
use spate_testsupport::builtin::{
    assert_suggests, messages, open, read_n, read_source, read_to_end, source_builder,
};
use spate_testsupport::positions;

fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 temp path")
}

/// A temporary directory (removed when dropped) holding `name` with
/// `text`, and the file's path.
fn input_file(name: &str, text: impl AsRef<[u8]>) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write");
    (dir, path)
}

/// Builds a `file` source from `config` and consumes its assignment.
async fn open_file(config: &[(&str, &str)]) -> Box<dyn Source> {
    open(&*source_builder("file", config)).await.0
}

fn offsets(events: &[Event]) -> Vec<u64> {
    events.iter().map(|e| e.position.offset).collect()
}

fn append(path: &Path, text: &str) {
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .expect("open");
    file.write_all(text.as_bytes()).expect("append");
}

#[tokio::test]
async fn envelope_lines_become_events_with_line_offsets() {
    let (_dir, path) = input_file(
        "in.jsonl",
        concat!(
            r#"{"key":"device-1","payload":{"t":21.5},"headers":{"trace":"abc"},"timestamp_ms":1700000000000}"#,
            "\n",
            r#"{"payload":"plain text"}"#,
            "\r\n\n",
            r#"{"payload_base64":"AP8="}"#,
        ),
    );
    let (mut source, partitions) =
        open(&*source_builder("file", &[("path", path_str(&path))])).await;
    assert_eq!(partitions, vec![0]);
    let events = read_to_end(&mut *source, 10).await;
    assert_eq!(
        offsets(&events),
        vec![0, 1, 3],
        "the blank line 2 is skipped, numbers kept"
    );
    assert_eq!(events[0].key, Some(Bytes::from_static(b"device-1")));
    assert_eq!(events[0].payload, Bytes::from_static(br#"{"t":21.5}"#));
    assert_eq!(events[0].headers.get_str("trace"), Some("abc"));
    assert_eq!(events[0].timestamp_ms, Some(1_700_000_000_000));
    assert_eq!(events[1].payload, Bytes::from_static(b"plain text"));
    assert_eq!(
        events[2].payload,
        Bytes::from_static(&[0x00, 0xff]),
        "last line needs no newline"
    );
    assert!(events
        .iter()
        .all(|e| &*e.position.stream == path_str(&path) && e.position.partition == 0));
    assert_eq!(source.name(), format!("file:{}", path.display()));
}

#[tokio::test]
async fn raw_lines_are_payloads_as_is() {
    let (_dir, path) = input_file("in.txt", "first\r\n{\"not\":\"an envelope\"}\n\nlast\n");
    let mut source = open_file(&[("path", path_str(&path)), ("layout", "raw")]).await;
    let events = read_to_end(&mut *source, 2).await;
    let payloads: Vec<&[u8]> = events.iter().map(|e| &e.payload[..]).collect();
    assert_eq!(
        payloads,
        vec![&b"first"[..], b"{\"not\":\"an envelope\"}", b"", b"last"]
    );
    assert_eq!(offsets(&events), vec![0, 1, 2, 3]);
    assert!(events.iter().all(|e| e.headers.is_empty()));
}

#[tokio::test]
async fn a_malformed_line_is_flagged_and_the_rest_flows() {
    let (_dir, path) = input_file(
        "in.jsonl",
        "{\"payload\":1}\n{broken json\n{\"device\":\"d1\",\"t\":2}\n{\"payload\":4}\n",
    );
    let mut source = open_file(&[("path", path_str(&path))]).await;
    let events = read_to_end(&mut *source, 10).await;
    assert_eq!(offsets(&events), vec![0, 1, 2, 3], "nothing dropped");
    assert!(events[0].headers.get(DECODE_ERROR).is_none());
    let broken = events[1]
        .headers
        .get_str(DECODE_ERROR)
        .expect("decode error header");
    assert!(broken.starts_with("line 2 (offset 1) of "), "{broken}");
    assert_eq!(
        events[1].payload,
        Bytes::from_static(b"{broken json"),
        "payload is the raw line"
    );
    let plain = events[2]
        .headers
        .get_str(DECODE_ERROR)
        .expect("decode error header");
    assert!(
        plain.contains("unknown field `device`") && plain.contains("layout: raw"),
        "{plain}"
    );
    assert_eq!(events[3].payload, Bytes::from_static(b"4"));
    assert!(events[3].headers.get(DECODE_ERROR).is_none());
}

#[tokio::test]
async fn an_over_long_line_is_flagged_truncated() {
    let (_dir, path) = input_file("in.txt", format!("short\n{}\nafter\n", "y".repeat(5000)));
    let config = [
        ("path", path_str(&path)),
        ("layout", "raw"),
        ("max_line_bytes", "1KiB"),
    ];
    let mut source = open_file(&config).await;
    let events = read_to_end(&mut *source, 10).await;
    assert_eq!(offsets(&events), vec![0, 1, 2]);
    assert_eq!(events[1].payload.len(), 1024);
    assert!(events[1]
        .headers
        .get_str(DECODE_ERROR)
        .is_some_and(|e| e.contains("max_line_bytes")));
    assert_eq!(events[2].payload, Bytes::from_static(b"after"));
}

#[tokio::test]
async fn a_commit_file_resumes_after_the_last_committed_line() {
    let lines: String = (0..10).map(|i| format!("line-{i}\n")).collect();
    let (dir, path) = input_file("in.txt", lines);
    let commit = dir.path().join("offsets/in.commit");
    let config = [
        ("path", path_str(&path)),
        ("layout", "raw"),
        ("commit_file", path_str(&commit)),
    ];

    let mut source = open_file(&config).await;
    let events = read_n(&mut *source, 6, 6).await;
    assert_eq!(offsets(&events), vec![0, 1, 2, 3, 4, 5]);
    source
        .commit(&positions::at(&[(0, 4)]))
        .await
        .expect("commit");
    drop(source);
    let stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&commit).expect("commit file")).expect("JSON");
    assert_eq!(stored["next_offset"], 4);
    assert_eq!(stored["byte_offset"], 28, "4 lines of 7 bytes");

    // A fresh builder (a process restart) seeks to the committed line.
    let mut restarted = open_file(&config).await;
    let events = read_to_end(&mut *restarted, 100).await;
    assert_eq!(offsets(&events), (4..10).collect::<Vec<_>>());
    assert_eq!(events[0].payload, Bytes::from_static(b"line-4"));

    // Without a byte offset the source counts lines instead.
    std::fs::write(
        &commit,
        format!("{{\"path\":{:?},\"next_offset\":7}}", path_str(&path)),
    )
    .expect("write");
    let mut counted = open_file(&config).await;
    let events = read_to_end(&mut *counted, 100).await;
    assert_eq!(offsets(&events), vec![7, 8, 9]);
    assert_eq!(events[0].payload, Bytes::from_static(b"line-7"));
}

#[tokio::test]
async fn a_commit_file_of_another_file_or_a_shorter_file_is_refused() {
    let (dir, path) = input_file("in.txt", "a\nb\n");
    let commit = dir.path().join("in.commit");
    let config = [
        ("path", path_str(&path)),
        ("commit_file", path_str(&commit)),
    ];
    std::fs::write(&commit, r#"{"path":"/elsewhere.jsonl","next_offset":1}"#).expect("write");
    let err = source_builder("file", &config)
        .build()
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(&err, SourceError::Fatal { message, .. } if message.contains("/elsewhere.jsonl")),
        "{err}"
    );
    std::fs::write(
        &commit,
        format!("{{\"path\":{:?},\"next_offset\":5}}", path_str(&path)),
    )
    .expect("write");
    let err = source_builder("file", &config)
        .build()
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("has only 2"), "{err}");
}

#[tokio::test]
async fn follow_mode_sees_appended_lines_and_waits_for_whole_lines() {
    let (_dir, path) = input_file("in.txt", "one\n");
    let config = [
        ("path", path_str(&path)),
        ("layout", "raw"),
        ("follow", "true"),
        ("poll_interval", "10ms"),
    ];
    let mut source = open_file(&config).await;
    assert_eq!(offsets(&read_n(&mut *source, 1, 10).await), vec![0]);
    append(&path, "tw");
    let waiting = tokio::time::timeout(Duration::from_millis(100), source.next(10)).await;
    assert!(waiting.is_err(), "half a line is not an event yet");
    append(&path, "o\nthree\n");
    let events = read_n(&mut *source, 2, 10).await;
    assert_eq!(offsets(&events), vec![1, 2]);
    assert_eq!(events[0].payload, Bytes::from_static(b"two"));
}

#[tokio::test]
async fn pause_stops_the_file_and_resume_continues_it() {
    let (_dir, path) = input_file("in.txt", "a\nb\nc\n");
    let mut source = open_file(&[("path", path_str(&path)), ("layout", "raw")]).await;
    assert_eq!(offsets(&read_n(&mut *source, 1, 1).await), vec![0]);
    source.pause(&[0]).expect("pause");
    assert!(
        tokio::time::timeout(Duration::from_millis(50), source.next(10))
            .await
            .is_err()
    );
    source.resume(&[0]).expect("resume");
    assert_eq!(offsets(&read_to_end(&mut *source, 10).await), vec![1, 2]);
}

/// How a pending `next` is given up on.
#[derive(Clone, Copy)]
enum Cancel {
    /// Poll it exactly once, drop it if it is not ready.
    AfterOnePoll,
    /// `tokio::time::timeout` of 1 ms.
    Timeout,
}

/// Reads until `n` events or `End`, dropping every `next` that does not
/// complete at once; returns the events and how many reads were dropped.
async fn read_with_cancellations(
    source: &mut dyn Source,
    n: usize,
    max: usize,
    cancel: Cancel,
) -> (Vec<Event>, usize) {
    let mut events = Vec::new();
    let mut cancelled = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while events.len() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "stuck after {} events",
            events.len()
        );
        let outcome = match cancel {
            Cancel::AfterOnePoll => {
                let mut read = std::pin::pin!(source.next(max));
                std::future::poll_fn(|cx| {
                    Poll::Ready(match read.as_mut().poll(cx) {
                        Poll::Ready(result) => Some(result),
                        Poll::Pending => None,
                    })
                })
                .await
            }
            Cancel::Timeout => tokio::time::timeout(Duration::from_millis(1), source.next(max))
                .await
                .ok(),
        };
        match outcome {
            None => {
                cancelled += 1;
                tokio::task::yield_now().await;
            }
            Some(Ok(SourceMessage::Events(batch))) => events.extend(batch),
            Some(Ok(SourceMessage::End)) => break,
            Some(other) => panic!("unexpected {other:?}"),
        }
    }
    (events, cancelled)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_reads_lose_and_repeat_no_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("in.jsonl");
    let lines = 100_000u64;
    let text: String = (0..lines)
        .map(|i| format!("{{\"payload\":{{\"n\":{i}}}}}\n"))
        .collect();
    std::fs::write(&path, text).expect("write");
    let mut source = open_file(&[("path", path_str(&path))]).await;
    let (events, cancelled) =
        read_with_cancellations(&mut *source, usize::MAX, 97, Cancel::AfterOnePoll).await;
    assert!(cancelled > 0, "the test should actually cancel reads");
    assert_eq!(offsets(&events), (0..lines).collect::<Vec<_>>());
    for event in &events {
        assert_eq!(
            event.payload,
            Bytes::from(format!("{{\"n\":{}}}", event.position.offset))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_reads_of_a_growing_file_lose_and_repeat_no_line() {
    let (_dir, path) = input_file("in.txt", "");
    let writer_path = path.clone();
    let writer = tokio::task::spawn_blocking(move || {
        for chunk in 0..50 {
            // Lines are split across writes so readers see partial lines.
            let text: String = (0..20)
                .map(|i| format!("line-{}\n", chunk * 20 + i))
                .collect();
            let (a, b) = text.split_at(text.len() / 2 + 3);
            append(&writer_path, a);
            std::thread::sleep(Duration::from_millis(1));
            append(&writer_path, b);
        }
    });
    let config = [
        ("path", path_str(&path)),
        ("layout", "raw"),
        ("follow", "true"),
        ("poll_interval", "5ms"),
    ];
    let mut source = open_file(&config).await;
    let (events, cancelled) = read_with_cancellations(&mut *source, 1000, 7, Cancel::Timeout).await;
    writer.await.expect("writer");
    assert!(cancelled > 0, "the test should actually cancel reads");
    assert_eq!(offsets(&events), (0..1000).collect::<Vec<_>>());
    assert!(events
        .iter()
        .all(|e| e.payload == format!("line-{}", e.position.offset)));
}

#[tokio::test]
async fn a_missing_file_fails_to_build_retryably() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("absent.jsonl");
    let err = source_builder("file", &[("path", path_str(&path))])
        .build()
        .await
        .err()
        .expect("error");
    assert!(
        err.is_retryable() && err.to_string().contains("absent.jsonl"),
        "{err}"
    );
}

#[test]
fn configuration_problems_are_reported_with_hints() {
    let (builder, errors) = read_source(
        "file",
        &[
            ("layout", "jsonl"),
            ("folow", "true"),
            ("poll_interval", "0s"),
        ],
    );
    assert!(builder.is_none());
    let messages = messages(&errors);
    assert!(
        messages.contains(&"missing required field `path` in `inputs[0]`".to_owned()),
        "{messages:?}"
    );
    let format = errors
        .iter()
        .find(|e| e.message == "unknown layout `jsonl`")
        .expect("bad format");
    assert_eq!(
        format.hint.as_deref(),
        Some("use one of `envelope` or `raw`")
    );
    assert_eq!(format.span.line, 2);
    assert_suggests(&errors, "folow", "follow");
    assert!(messages
        .iter()
        .any(|m| m.contains("`poll_interval` must be longer than zero")));

    let (builder, errors) = read_source("file", &[("path", "a.jsonl"), ("commit_file", "a.jsonl")]);
    assert!(builder.is_none());
    assert_eq!(
        spate_testsupport::builtin::messages(&errors),
        vec!["`commit_file` must not be the file being read".to_owned()]
    );
}
