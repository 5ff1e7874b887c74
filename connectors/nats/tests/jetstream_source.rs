//! The `jetstream` source against a real nats-server, through the contract.

use std::time::Duration;

use spate_connector::{CommitPosition, Event, Source, SourceBuilder, SourceMessage};
use spate_testsupport::nats::*;

struct Names {
    stream: String,
    subject: String,
    durable: String,
}

fn names(prefix: &str) -> Names {
    let base = unique(prefix);
    Names {
        stream: base.to_uppercase(),
        subject: format!("{base}.events"),
        durable: format!("{base}_fn"),
    }
}

/// What most tests start from: a server, a client, fresh names and a
/// builder whose source creates the stream from `subjects` (`setup` opens
/// the first source).
struct Setup {
    server: Server,
    client: async_nats::Client,
    n: Names,
    builder: Box<dyn SourceBuilder>,
}

async fn setup(prefix: &str, extra: &[(&str, &str)]) -> (Setup, Box<dyn Source>) {
    setup_on(server(), prefix, extra).await
}

async fn setup_on(
    server: Server,
    prefix: &str,
    extra: &[(&str, &str)],
) -> (Setup, Box<dyn Source>) {
    let n = names(prefix);
    let mut entries = vec![
        ("url", server.url.as_str()),
        ("stream", n.stream.as_str()),
        ("subjects", n.subject.as_str()),
        ("durable", n.durable.as_str()),
    ];
    entries.extend_from_slice(extra);
    let builder = source_builder("jetstream", &entries);
    let setup = Setup {
        client: server.client().await,
        server,
        n,
        builder,
    };
    let source = setup.open().await;
    (setup, source)
}

/// Commits every offset of partition 0 below `next_offset`.
async fn commit_below(source: &mut dyn Source, next_offset: u64) {
    source
        .commit(&[CommitPosition {
            partition: 0,
            next_offset,
        }])
        .await
        .unwrap();
}

impl Setup {
    async fn open(&self) -> Box<dyn Source> {
        open(&*self.builder).await
    }

    /// Publishes `count` messages and reads exactly them, `max` at a time.
    async fn publish_and_read(
        &self,
        source: &mut dyn Source,
        count: usize,
        max: usize,
    ) -> Vec<Event> {
        publish_n(&self.client, &self.n.subject, count).await;
        let events = read_n(source, count, max).await;
        assert_eq!(events.len(), count);
        events
    }

    /// Closes the source and deletes the stream.
    async fn finish(&self, mut source: Box<dyn Source>) {
        source.close().await.unwrap();
        delete_stream(&self.client, &self.n.stream).await;
    }
}

fn offsets(events: &[Event]) -> Vec<u64> {
    events.iter().map(|e| e.position.offset).collect()
}

#[tokio::test]
async fn reads_in_sequence_order_with_headers_and_key() {
    let (s, mut source) = setup("order", &[]).await;
    // The source creates the stream from `subjects`.
    let events = s.publish_and_read(&mut *source, 25, 7).await;
    for (i, event) in events.iter().enumerate() {
        assert_eq!(
            event.position.offset,
            i as u64 + 1,
            "offset = stream sequence"
        );
        assert_eq!(event.position.partition, 0);
        assert_eq!(&*event.position.stream, s.n.stream.as_str());
        assert_eq!(event.payload, format!("msg-{i}").as_bytes());
        assert_eq!(
            event.key.as_deref(),
            Some(format!("key-{}", i % 3).as_bytes())
        );
        assert_eq!(event.headers.get_str("n"), Some(i.to_string().as_str()));
        assert_eq!(
            event.headers.get_str("spate-nats-subject"),
            Some(s.n.subject.as_str())
        );
        assert!(event.timestamp_ms.unwrap() > 1_600_000_000_000);
    }
    assert_eq!(source.lag(0), Some(0));
    commit_below(&mut *source, 26).await;
    s.finish(source).await;
}

#[tokio::test]
async fn commit_acks_exactly_the_messages_below_the_position() {
    let server = server();
    let client = server.client().await;
    let n = names("commit");
    create_stream(&client, &n.stream, std::slice::from_ref(&n.subject)).await;
    publish_n(&client, &n.subject, 10).await;
    // Bind the existing stream (no `subjects`).
    let config = vec![
        ("url", server.url.as_str()),
        ("stream", n.stream.as_str()),
        ("durable", n.durable.as_str()),
        ("ack_wait", "1s"),
    ];
    let builder = source_builder("jetstream", &config);

    let mut source = open(&*builder).await;
    let events = read_n(&mut *source, 10, 100).await;
    assert_eq!(offsets(&events), (1..=10).collect::<Vec<_>>());
    // The engine finished 1..=5: every offset below 6.
    commit_below(&mut *source, 6).await;
    // Wait until the server processed the acks.
    let mut pending = 0;
    for _ in 0..50 {
        pending = ack_pending(&client, &n.stream, &n.durable).await;
        if pending == 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(pending, 5, "6..=10 still unacked");
    // A crash: no close, no more acks.
    drop(source);

    // A new session on the same durable gets exactly the unacked ones back
    // (after ack_wait).
    let mut source = open(&*builder).await;
    let events = read_n(&mut *source, 5, 100).await;
    assert_eq!(offsets(&events), vec![6, 7, 8, 9, 10]);
    assert!(
        next_within(&mut *source, 100, Duration::from_millis(1500))
            .await
            .is_none(),
        "nothing else is redelivered"
    );
    commit_below(&mut *source, 11).await;
    source.close().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(ack_pending(&client, &n.stream, &n.durable).await, 0);
    delete_stream(&client, &n.stream).await;
}

#[tokio::test]
async fn close_hands_unfinished_messages_back_at_once() {
    let (s, mut source) = setup("close", &[("ack_wait", "30s"), ("fetch_wait", "1s")]).await;
    s.publish_and_read(&mut *source, 4, 100).await;
    commit_below(&mut *source, 3).await;
    source.close().await.unwrap();
    drop(source);
    // No waiting for the 30s ack_wait: 3 and 4 come back after fetch_wait.
    let started = std::time::Instant::now();
    let mut source = s.open().await;
    let events = read_n(&mut *source, 2, 100).await;
    assert_eq!(offsets(&events), vec![3, 4]);
    assert!(started.elapsed() < Duration::from_secs(10));
    s.finish(source).await;
}

#[tokio::test]
async fn batches_respect_max_events() {
    let (s, mut source) = setup("batch", &[]).await;
    publish_n(&s.client, &s.n.subject, 20).await;
    let mut total = 0;
    while total < 20 {
        match next(&mut *source, 3).await {
            SourceMessage::Events(batch) => {
                assert!(!batch.is_empty() && batch.len() <= 3);
                total += batch.len();
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // Never more than one batch (3) delivered beyond what was handed out.
    s.finish(source).await;
}

#[tokio::test]
async fn pause_stops_fetching() {
    let (s, mut source) = setup("pause", &[]).await;
    source.pause(&[0]).unwrap();
    publish_n(&s.client, &s.n.subject, 5).await;
    assert!(
        next_within(&mut *source, 100, Duration::from_millis(1500))
            .await
            .is_none(),
        "a paused source returns no events"
    );
    // Nothing was even fetched: the server has delivered nothing.
    assert_eq!(ack_pending(&s.client, &s.n.stream, &s.n.durable).await, 0);

    source.resume(&[0]).unwrap();
    let events = read_n(&mut *source, 5, 100).await;
    assert_eq!(events.len(), 5);

    // Paused again with events in hand: still nothing more.
    source.pause(&[0]).unwrap();
    publish_n(&s.client, &s.n.subject, 3).await;
    assert!(next_within(&mut *source, 100, Duration::from_millis(800))
        .await
        .is_none());
    source.resume(&[0]).unwrap();
    let events = read_n(&mut *source, 3, 100).await;
    assert_eq!(events[0].position.offset, 6);
    s.finish(source).await;
}

#[tokio::test]
async fn in_progress_acks_keep_long_running_events_from_redelivery() {
    let (s, mut source) = setup("progress", &[("ack_wait", "1s")]).await;
    s.publish_and_read(&mut *source, 3, 100).await;
    // A "slow handler": 3.5 × ack_wait without commit while the engine
    // keeps polling `next`.
    assert!(next_within(&mut *source, 100, Duration::from_millis(3500))
        .await
        .is_none());
    let context = async_nats::jetstream::new(s.client.clone());
    let mut consumer: async_nats::jetstream::consumer::PullConsumer = context
        .get_consumer_from_stream(&s.n.durable, &s.n.stream)
        .await
        .unwrap();
    let info = consumer.info().await.unwrap();
    assert_eq!(info.num_redelivered, 0, "no redelivery while in progress");
    assert_eq!(info.num_ack_pending, 3);
    s.finish(source).await;
}

#[tokio::test]
async fn a_redelivery_below_the_handed_out_sequence_restarts_the_partition() {
    let (s, mut a) = setup("handover", &[("ack_wait", "1s")]).await;
    // Process A takes 1..=3 and dies without acking.
    s.publish_and_read(&mut *a, 3, 3).await;
    // Process B on the same durable takes 4..=6.
    let mut b = s.open().await;
    drop(a);
    publish_n(&s.client, &s.n.subject, 3).await;
    let second = read_n(&mut *b, 3, 100).await;
    assert_eq!(offsets(&second), vec![4, 5, 6]);
    // 1..=3 come back to B after ack_wait; B cannot hand them out in order,
    // so it hands the partition over and back.
    match next(&mut *b, 100).await {
        SourceMessage::Revoked(p) => assert_eq!(p, vec![0]),
        other => panic!("expected Revoked, got {other:?}"),
    }
    commit_below(&mut *b, 7).await;
    b.release(&[0]).await.unwrap();
    match next(&mut *b, 100).await {
        SourceMessage::Assigned(p) => assert_eq!(p, vec![0]),
        other => panic!("expected Assigned, got {other:?}"),
    }
    let again = read_n(&mut *b, 3, 100).await;
    assert_eq!(offsets(&again), vec![1, 2, 3]);
    commit_below(&mut *b, 4).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(ack_pending(&s.client, &s.n.stream, &s.n.durable).await, 0);
    s.finish(b).await;
}

#[tokio::test]
async fn a_server_restart_is_survived() {
    let (mut s, mut source) = setup_on(start_own(), "restart", &[]).await;
    s.publish_and_read(&mut *source, 3, 100).await;
    commit_below(&mut *source, 4).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    assert!(s.server.restart(Duration::from_millis(300)));
    // Publish after the restart (the test client reconnects too).
    let mut published = false;
    for _ in 0..100 {
        let context = async_nats::jetstream::new(s.client.clone());
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(1), async {
            context
                .publish(s.n.subject.clone(), "after".into())
                .await?
                .await
        })
        .await
        {
            published = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(published, "publish after restart");
    // The source may report retryable errors while the server is away, but
    // gets the new message.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let event = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no event after restart"
        );
        match tokio::time::timeout(Duration::from_secs(10), source.next(100)).await {
            Ok(Ok(SourceMessage::Events(batch))) => {
                // Acks are not confirmed (no AckSync), so a restart may lose
                // them and redeliver 1..=3: at-least-once allows exactly that,
                // and nothing else may appear.
                let mut fresh = None;
                for event in batch {
                    match event.position.offset {
                        1..=3 => {}
                        4 => fresh = Some(event),
                        other => panic!("unexpected offset {other} after restart"),
                    }
                }
                if let Some(event) = fresh {
                    break event;
                }
            }
            // Redelivered messages out of order are handed over the way the
            // engine does it: release on revoke, then read on.
            Ok(Ok(SourceMessage::Revoked(partitions))) => {
                source.release(&partitions).await.unwrap();
            }
            Ok(Ok(SourceMessage::Assigned(_))) => {}
            Ok(Ok(other)) => panic!("unexpected {other:?}"),
            Ok(Err(e)) => {
                assert!(e.is_retryable(), "fatal after restart: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(_) => {}
        }
    };
    assert_eq!(event.position.offset, 4);
    assert_eq!(event.payload, "after".as_bytes());
    s.finish(source).await;
}
