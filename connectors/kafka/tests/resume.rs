//! Resuming a Kafka source from positions a database stored (the input of
//! `exactly_once` into a database), against a real Kafka-protocol broker:
//! each newly assigned partition moves to its stored offset whether the
//! group's committed offset trails it, is ahead of it, or is missing with
//! `start: latest`; partitions without one start from the group's offset.

use std::collections::BTreeMap;
use std::time::Duration;

use spate_connector::StoredPosition;
use spate_testsupport::kafka::*;
use spate_testsupport::positions;

fn stored(topic: &str, partition: i32, next_offset: u64) -> StoredPosition {
    StoredPosition {
        partition: format!("{topic}/{partition}"),
        next_offset,
    }
}

/// Offsets read per partition after a resume, until quiet.
async fn offsets_after(
    source: &mut dyn spate_connector::Source,
    expected: usize,
) -> BTreeMap<u32, Vec<u64>> {
    let events = read_n(source, expected, 100).await;
    assert!(
        next_within(source, 100, Duration::from_millis(700))
            .await
            .is_none(),
        "more events than expected"
    );
    by_partition(&events)
}

#[tokio::test]
async fn each_partition_resumes_at_its_stored_offset_wherever_the_group_is() {
    let broker = tansu();
    let topic = broker.topic("resume", 3).await;
    let group = unique("resume-fn");
    // 10 messages per partition, offsets 0..10 each.
    produce_n(&broker.bootstrap, &topic, 3, 30, "msg").await;

    // The group committed 3 on partition 0 and 8 on partition 1 (the
    // database will say 6 and 5: one trails, one is ahead), nothing on 2.
    let builder = source_builder(&source_entries(&broker, &topic, &group, &[]));
    let mut source = open(&*builder, 3).await;
    assert_eq!(source.partition_name(1), format!("{topic}/1"));
    read_n(&mut *source, 30, 100).await;
    source
        .commit(&positions::at(&[(0, 3), (1, 8)]))
        .await
        .expect("commit");
    source.close().await.expect("close");
    drop(source);

    // A restart, with the stored positions (partition 2 has none).
    let mut source = open(&*builder, 3).await;
    source
        .resume_from(&[stored(&topic, 0, 6), stored(&topic, 1, 5)])
        .expect("resumes");
    let offsets = offsets_after(&mut *source, 4 + 5 + 10).await;
    assert_eq!(offsets[&0], (6..10).collect::<Vec<u64>>(), "group trails");
    assert_eq!(offsets[&1], (5..10).collect::<Vec<u64>>(), "group ahead");
    assert_eq!(offsets[&2], (0..10).collect::<Vec<u64>>(), "nothing stored");
    // A later resume (after another assignment elsewhere) leaves running
    // partitions alone.
    source
        .resume_from(&[stored(&topic, 0, 1)])
        .expect("resumes");
    assert!(next_within(&mut *source, 100, Duration::from_millis(700))
        .await
        .is_none());
    source.close().await.expect("close");
}

#[tokio::test]
async fn a_new_group_starting_at_the_end_still_resumes_from_the_database() {
    let broker = tansu();
    let topic = broker.topic("resume-latest", 1).await;
    produce_n(&broker.bootstrap, &topic, 1, 12, "msg").await;
    let group = unique("fresh-group");
    let builder = source_builder(&source_entries(
        &broker,
        &topic,
        &group,
        &[("start", "latest")],
    ));
    let mut source = open(&*builder, 1).await;
    source
        .resume_from(&[stored(&topic, 0, 9)])
        .expect("resumes");
    let offsets = offsets_after(&mut *source, 3).await;
    assert_eq!(offsets[&0], vec![9, 10, 11]);
    source.close().await.expect("close");
}
