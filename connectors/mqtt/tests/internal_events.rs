//! The `mqtt` connectors count their own happenings through the contract's
//! internal events: against a Mosquitto of the test's own, a source's commit
//! (its acks) records its latency, and a broker restart is a lost
//! connection and a reconnect of the sink and of the source.

use rumqttc::QoS;
use spate_connector::internal_events::names;
use spate_connector::Record;
use spate_testsupport::metrics::Totals;
use spate_testsupport::mqtt::*;
use spate_testsupport::positions;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_and_a_broker_restart_are_counted() {
    let mut totals = Totals::install();

    let mut broker = start_own();
    let topic = unique("events");
    let mut source = open(&*broker.source(&topic, &[]), 1).await;
    broker.publish(&topic, &payloads(3), QoS::AtLeastOnce).await;
    read_n(&mut *source, 3, 100).await;
    source
        .commit(&positions::at(&[(0, 3)]))
        .await
        .expect("commit");
    // Histograms carry no `target`.
    let untargeted = [("connector", "mqtt"), ("target", "")];
    assert_eq!(totals.get(names::COMMIT_DURATION, &untargeted), Some(1));

    let sink = sink("mqtt", &[("url", &broker.url), ("topic", &topic)]).await;
    sink.write(Record::from_payload("before"))
        .await
        .expect("write while up");
    broker.restart();
    for name in [sink.name().to_owned(), source.name().to_owned()] {
        let labels = [("connector", "mqtt"), ("target", name.as_str())];
        totals.wait_for(names::DISCONNECTS, &labels).await;
        totals.wait_for(names::RECONNECTS, &labels).await;
    }
}
