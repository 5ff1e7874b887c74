//! The NATS connectors count their own happenings through the contract's
//! internal events: against a nats-server of the test's own, a message over
//! `max_payload` is a produce error of `nats` and of `jetstream`, and a
//! server restart is a lost connection and a reconnect of the sink.

use std::time::Duration;

use bytes::Bytes;
use spate_connector::internal_events::names;
use spate_connector::Record;
use spate_testsupport::metrics::Totals;
use spate_testsupport::nats::*;

const NATS: &[(&str, &str)] = &[("connector", "nats")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_publishes_and_a_reconnect_are_counted() {
    let mut totals = Totals::install();

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
    assert_eq!(totals.get(names::PRODUCE_ERRORS, NATS), Some(1));

    let stream = base.to_uppercase();
    let subject = format!("{base}.js");
    create_stream(&client, &stream, std::slice::from_ref(&subject)).await;
    let js = sink("jetstream", &[("url", &server.url), ("subject", &subject)]).await;
    js.write(big()).await.expect_err("over max_payload");
    let jetstream = [("connector", "jetstream")];
    assert_eq!(totals.get(names::PRODUCE_ERRORS, &jetstream), Some(1));

    assert!(server.restart(Duration::from_millis(300)), "our own server");
    totals.wait_for(names::DISCONNECTS, NATS).await;
    totals.wait_for(names::RECONNECTS, NATS).await;
    core.write(Record::from_payload("after"))
        .await
        .expect("written after the reconnect");
}
