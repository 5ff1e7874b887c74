//! The NATS connectors count their own happenings through the contract's
//! internal events: against a nats-server of the test's own, a message over
//! `max_payload` is a produce error of `nats` and of `jetstream`, and a
//! server restart is a lost connection and a reconnect of the sink.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use spate_connector::internal_events::names;
use spate_connector::Record;
use spate_testsupport::nats::*;

/// Counter totals per `(metric, connector)`, summed over snapshots (a
/// snapshot resets what it read).
#[derive(Default)]
struct Totals(BTreeMap<(String, String), u64>);

impl Totals {
    fn count(&mut self, snapshotter: &Snapshotter, metric: &str, connector: &str) -> u64 {
        for (key, _, _, value) in snapshotter.snapshot().into_vec() {
            let kind = key.key().labels().find(|l| l.key() == "connector");
            if let (Some(kind), DebugValue::Counter(n)) = (kind, value) {
                let entry = (key.key().name().to_owned(), kind.value().to_owned());
                *self.0.entry(entry).or_default() += n;
            }
        }
        let key = (metric.to_owned(), connector.to_owned());
        self.0.get(&key).copied().unwrap_or(0)
    }

    /// Waits (up to 20 s) until `metric` of `connector` was counted.
    async fn wait_for(&mut self, snapshotter: &Snapshotter, metric: &str, connector: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while self.count(snapshotter, metric, connector) == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{metric} of {connector} never counted: {:?}",
                self.0
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_publishes_and_a_reconnect_are_counted() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("first recorder of this test binary");
    let mut totals = Totals::default();

    let mut server = start_own();
    let client = server.client().await;
    let max = client.server_info().max_payload;
    let big = || Record::from_payload(Bytes::from(vec![b'x'; max + 1]));
    let base = unique("events");
    let core = sink(
        "nats",
        &[("url", &server.url), ("subject", &format!("{base}.out"))],
    )
    .await;
    core.write(big()).await.expect_err("over max_payload");
    assert_eq!(totals.count(&snapshotter, names::PRODUCE_ERRORS, "nats"), 1);

    let stream = base.to_uppercase();
    let subject = format!("{base}.js");
    create_stream(&client, &stream, std::slice::from_ref(&subject)).await;
    let js = sink("jetstream", &[("url", &server.url), ("subject", &subject)]).await;
    js.write(big()).await.expect_err("over max_payload");
    assert_eq!(
        totals.count(&snapshotter, names::PRODUCE_ERRORS, "jetstream"),
        1
    );

    assert!(server.restart(Duration::from_millis(300)), "our own server");
    totals
        .wait_for(&snapshotter, names::DISCONNECTS, "nats")
        .await;
    totals
        .wait_for(&snapshotter, names::RECONNECTS, "nats")
        .await;
    core.write(Record::from_payload("after"))
        .await
        .expect("written after the reconnect");
}
