//! The `mqtt` connectors count their own happenings through the contract's
//! internal events: against a Mosquitto of the test's own, a source's commit
//! (its acks) records its latency, and a broker restart is a lost
//! connection and a reconnect of the sink and of the source.

use std::collections::BTreeMap;
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use rumqttc::QoS;
use spate_connector::internal_events::names;
use spate_connector::{CommitPosition, Record};
use spate_testsupport::mqtt::*;

/// Totals of `connector="mqtt"` metrics (counts, histogram samples) per
/// `(metric, target)`, summed over snapshots (a snapshot resets what it read).
#[derive(Default)]
struct Totals(BTreeMap<(String, String), u64>);

impl Totals {
    fn count(&mut self, snapshotter: &Snapshotter, metric: &str, target: &str) -> u64 {
        for (key, _, _, value) in snapshotter.snapshot().into_vec() {
            let label = |name: &str| {
                key.key()
                    .labels()
                    .find(|l| l.key() == name)
                    .map(|l| l.value().to_owned())
            };
            if label("connector").as_deref() != Some("mqtt") {
                continue;
            }
            let n = match value {
                DebugValue::Counter(n) => n,
                DebugValue::Histogram(samples) => samples.len() as u64,
                DebugValue::Gauge(_) => 0,
            };
            let entry = (
                key.key().name().to_owned(),
                label("target").unwrap_or_default(),
            );
            *self.0.entry(entry).or_default() += n;
        }
        self.0
            .get(&(metric.to_owned(), target.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    /// Waits (up to 20 s) until `metric` of `target` was counted.
    async fn wait_for(&mut self, snapshotter: &Snapshotter, metric: &str, target: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while self.count(snapshotter, metric, target) == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{metric} of {target} never counted: {:?}",
                self.0
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_and_a_broker_restart_are_counted() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("first recorder of this test binary");
    let mut totals = Totals::default();

    let mut broker = start_own();
    let topic = unique("events");
    let client_id = unique("events-src");
    let entries = [
        ("url", broker.url.as_str()),
        ("topics", topic.as_str()),
        ("client_id", client_id.as_str()),
    ];
    let mut source = open(&*source_builder("mqtt", &entries), 1).await;
    broker.publish(&topic, &payloads(3), QoS::AtLeastOnce).await;
    read_n(&mut *source, 3, 100).await;
    source
        .commit(&[CommitPosition {
            partition: 0,
            next_offset: 3,
        }])
        .await
        .expect("commit");
    // Histograms carry no `target`.
    assert_eq!(totals.count(&snapshotter, names::COMMIT_DURATION, ""), 1);

    let sink = sink("mqtt", &[("url", &broker.url), ("topic", &topic)]).await;
    sink.write(Record::from_payload("before"))
        .await
        .expect("write while up");
    broker.restart();
    for name in [sink.name().to_owned(), source.name().to_owned()] {
        totals
            .wait_for(&snapshotter, names::DISCONNECTS, &name)
            .await;
        totals
            .wait_for(&snapshotter, names::RECONNECTS, &name)
            .await;
    }
}
