//! The `file` connectors count their own happenings through the contract's
//! internal events: a write that fails (to `/dev/full`) is a produce error,
//! and a commit to the `commit_file` records its latency.

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use spate_connector::internal_events::names;
use spate_connector::{CommitPosition, Record};
use spate_testsupport::builtin::{open, read_to_end, sink, source_builder};

/// The `connector="file"` value of `metric` in a fresh snapshot: a counter's
/// count or a histogram's number of samples.
fn file_metric(snapshotter: &Snapshotter, metric: &str) -> Option<u64> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .find_map(|(key, _, _, value)| {
            let file = key
                .key()
                .labels()
                .any(|l| l.key() == "connector" && l.value() == "file");
            (file && key.key().name() == metric).then_some(match value {
                DebugValue::Counter(n) => n,
                DebugValue::Histogram(samples) => samples.len() as u64,
                DebugValue::Gauge(_) => 0,
            })
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_and_a_commit_are_reported() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("first recorder of this test binary");

    let full = sink("file", &[("path", "/dev/full")]).await;
    full.write(Record::from_payload("no room"))
        .await
        .expect_err("/dev/full takes nothing");
    assert_eq!(file_metric(&snapshotter, names::PRODUCE_ERRORS), Some(1));

    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("in.jsonl");
    std::fs::write(&data, "a\nb\n").expect("input written");
    let commit_file = dir.path().join("in.offset");
    let builder = source_builder(
        "file",
        &[
            ("path", data.to_str().expect("UTF-8 path")),
            ("layout", "raw"),
            ("commit_file", commit_file.to_str().expect("UTF-8 path")),
        ],
    );
    let (mut source, _) = open(&*builder).await;
    let events = read_to_end(&mut *source, 10).await;
    assert_eq!(events.len(), 2);
    source
        .commit(&[CommitPosition {
            partition: 0,
            next_offset: 2,
        }])
        .await
        .expect("commit");
    assert_eq!(file_metric(&snapshotter, names::COMMIT_DURATION), Some(1));
}
