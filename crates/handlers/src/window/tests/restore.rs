//! The state contract: a handler restored from the changes another one
//! recorded carries on exactly like one that never stopped; `forget` and
//! `restore` act on one partition of one input; entries that cannot be
//! read are skipped.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;

use super::super::state::KeyState;
use super::super::{codec, WindowHandler};
use super::{event, feed, handler, lcg, reading, settings, snapshot};
use crate::{Context, Handler, HandlerState};

/// A run of readings over three keys and two partitions, out of order,
/// with floats whose sums depend on every bit, JSON `last` values, late
/// and invalid events.
fn script() -> Vec<(u32, String)> {
    let mut seed = 42;
    let mut events = Vec::new();
    for n in 0..90i64 {
        let device = ["a", "b", "c"][(n % 3) as usize];
        let partition = u32::from(device == "c");
        let t = n * 900 + (lcg(&mut seed) % 8_000) as i64 - 4_000;
        // Every 17th event from 11 on is a minute late.
        let t = if n % 17 == 11 { t - 60_000 } else { t };
        let payload = match n % 17 {
            5 => "garbage".to_owned(),
            _ => format!(
                r#"{{"device":"{device}","ts":{t},"v":{},"extra":{{"seq":{n},"f":{}}}}}"#,
                0.1 * n as f64,
                1.0 / (n + 3) as f64
            ),
        };
        events.push((partition, payload));
    }
    events
}

fn restore_handler(emit: &str) -> WindowHandler {
    WindowHandler::new(settings(&format!(
        "key: /device\ntime: /ts\nsize: 5s\nslide: 1s\nallowed_lateness: 2s\nemit: {emit}\naggregates:\n  n: count\n  sum: {{sum: /v}}\n  min: {{min: /v}}\n  avg: {{avg: /v}}\n  extra: {{last: /extra}}\n"
    )))
}

type Outcome = Result<Vec<String>, (Option<&'static str>, String)>;

async fn run(
    h: &WindowHandler,
    events: &[(u32, String)],
) -> (Vec<Outcome>, BTreeMap<(u32, Bytes), Bytes>) {
    let mut outcomes = Vec::new();
    let mut recorded = BTreeMap::new();
    for (partition, payload) in events {
        let (result, changes) = feed(h, *partition, payload).await;
        for change in changes {
            let value = change
                .value
                .expect("the window handler never removes a key");
            recorded.insert((*partition, change.key), value);
        }
        outcomes.push(result.map_err(|e| (e.reason, e.message)));
    }
    (outcomes, recorded)
}

#[tokio::test]
async fn a_handler_restored_from_the_recorded_changes_carries_on_exactly_like_one_that_never_stopped(
) {
    let events = script();
    for emit in ["on_close", "on_update"] {
        let (whole, whole_state) = run(&restore_handler(emit), &events).await;
        let reasons: Vec<_> = whole
            .iter()
            .filter_map(|o| o.as_ref().err())
            .map(|e| e.0)
            .collect();
        assert!(reasons.contains(&Some("late")) && reasons.contains(&Some("invalid")));
        assert!(
            whole
                .iter()
                .filter(|o| o.as_ref().is_ok_and(|v| !v.is_empty()))
                .count()
                > 20
        );
        for k in 0..=events.len() {
            let (head, recorded) = run(&restore_handler(emit), &events[..k]).await;
            assert_eq!(head[..], whole[..k]);
            let fresh = restore_handler(emit);
            for partition in [0, 1] {
                let entries = recorded
                    .iter()
                    .filter(|((p, _), _)| *p == partition)
                    .map(|((_, key), value)| (key.clone(), value.clone()))
                    .collect();
                fresh.restore(0, partition, entries);
            }
            let (tail, mut state) = run(&fresh, &events[k..]).await;
            assert_eq!(tail[..], whole[k..], "{emit}: restored after {k} events");
            for (key, value) in recorded {
                state.entry(key).or_insert(value);
            }
            assert_eq!(
                state, whole_state,
                "{emit}: final state after a restore at {k}"
            );
        }
    }
}

#[tokio::test]
async fn forget_drops_one_partition_of_one_input_and_restore_replaces_it() {
    let h = handler("10s", "10s", "0s", "on_close");
    let at = |partition, input: usize, payload: String| {
        let ctx = Context::new(Arc::from("f"), 1).with_input(input);
        let handler = &h;
        async move { handler.handle(event(partition, &payload), &ctx).await }
    };
    for (partition, input) in [(0, 0), (1, 0), (0, 1)] {
        at(partition, input, reading("d", 100_000, 1))
            .await
            .expect("accepted");
    }
    h.forget(0, 0);
    assert!(
        at(0, 0, reading("d", 1_000, 1)).await.is_ok(),
        "partition 0 of input 0 starts afresh"
    );
    for (partition, input) in [(1, 0), (0, 1)] {
        let error = at(partition, input, reading("d", 1_000, 1))
            .await
            .expect_err("still late");
        assert_eq!(error.reason, Some("late"));
    }
    // Restore replaces the partition's keys: `d` goes, `e` comes back.
    let settings = h.settings().clone();
    let e = KeyState::new(50_000);
    h.restore(
        0,
        1,
        vec![(
            Bytes::from_static(b"e"),
            Bytes::from(codec::encode(&settings, &e)),
        )],
    );
    assert!(at(1, 0, reading("d", 1_000, 1)).await.is_ok());
    assert!(at(1, 0, reading("e", 1_000, 1)).await.is_err());
}

#[tokio::test]
async fn restore_skips_entries_it_cannot_read_and_keeps_the_rest() {
    let h = handler("10s", "10s", "0s", "on_close");
    let other = handler("20s", "10s", "0s", "on_close");
    let state = KeyState::new(0);
    let good = codec::encode(h.settings(), &KeyState::new(100_000));
    h.restore(
        0,
        0,
        vec![
            (Bytes::from_static(b"good"), Bytes::from(good)),
            (
                Bytes::from_static(b"garbage"),
                Bytes::from_static(b"\x01\x02"),
            ),
            (
                Bytes::from_static(b"other"),
                Bytes::from(codec::encode(other.settings(), &state)),
            ),
        ],
    );
    let keys: Vec<Bytes> = snapshot(&h)[&(0, 0)].keys().cloned().collect();
    assert_eq!(keys, [Bytes::from_static(b"good")]);
}
