//! A source's poll thread ends with the source, whether it is closed or
//! just dropped. (That shutdown also ends a revocation waiting for its
//! release is a unit test in `consumer.rs`.)

use std::time::{Duration, Instant};

use rdkafka::mocking::MockCluster;
use spate_testsupport::kafka::*;

/// Threads of this process whose name starts like the poll thread's
/// (Linux keeps 15 characters of a thread name).
fn poll_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|tasks| {
            tasks
                .filter_map(Result::ok)
                .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
                .filter(|name| name.trim_end().starts_with("spate-kafka-pol"))
                .count()
        })
        .unwrap_or(0)
}

async fn until_no_poll_thread(within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if poll_threads() == 0 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn the_poll_thread_ends_on_close_and_on_drop() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    let bootstrap = cluster.bootstrap_servers();
    let topic = unique("life");
    cluster.create_topic(&topic, 2, 1).expect("topic");
    let builder = source_builder(&[
        ("bootstrap_servers", bootstrap.as_str()),
        ("topics", topic.as_str()),
        ("group_id", "life"),
    ]);
    assert_eq!(poll_threads(), 0);

    let mut source = open(&*builder, 2).await;
    assert_eq!(poll_threads(), 1);
    source.close().await.expect("close");
    assert_eq!(poll_threads(), 0, "close returns after the thread ended");

    // Dropped while nobody reads it: the thread still ends.
    let source = builder.build().await.expect("builds");
    // (The thread names itself once it runs.)
    let deadline = Instant::now() + Duration::from_secs(2);
    while poll_threads() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(poll_threads(), 1);
    drop(source);
    assert!(
        until_no_poll_thread(Duration::from_secs(5)).await,
        "thread left behind after drop"
    );
}
