//! The `file` connectors count their own happenings through the contract's
//! internal events: a write that fails (to `/dev/full`) is a produce error,
//! and a commit to the `commit_file` records its latency.

use spate_connector::internal_events::names;
use spate_connector::Record;
use spate_testsupport::builtin::{open, read_to_end, sink, source_builder};
use spate_testsupport::metrics::Totals;
use spate_testsupport::positions;

const FILE: &[(&str, &str)] = &[("connector", "file")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_and_a_commit_are_reported() {
    let mut totals = Totals::install();

    let full = sink("file", &[("path", "/dev/full")]).await;
    full.write(Record::from_payload("no room"))
        .await
        .expect_err("/dev/full takes nothing");
    assert_eq!(totals.get(names::PRODUCE_ERRORS, FILE), Some(1));

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
        .commit(&positions::at(&[(0, 2)]))
        .await
        .expect("commit");
    assert_eq!(totals.get(names::COMMIT_DURATION, FILE), Some(1));
}
