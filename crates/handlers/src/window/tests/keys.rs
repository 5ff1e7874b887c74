//! The bound on keys: a partition keeps at most `max_keys` keys; at the
//! bound the keys silent longest are evicted with their windows written,
//! and `max_keys` is checked when the file loads.

use super::*;

fn bounded(max_keys: u64) -> WindowHandler {
    WindowHandler::new(settings(&format!(
        "key: /device\ntime: /ts\nsize: 1s\nmax_keys: {max_keys}\n{AGGREGATES}"
    )))
}

#[tokio::test]
async fn a_new_key_at_the_bound_evicts_the_silent_keys_and_writes_their_windows() {
    let h = bounded(16);
    for device in 0..16 {
        assert!(ok(&h, &reading(&format!("d{device}"), 1_000 + device, 1))
            .await
            .is_empty());
    }
    // d0 and d1 speak again, later: they are the freshest now.
    for device in 0..2 {
        ok(&h, &reading(&format!("d{device}"), 5_500, 2)).await;
    }
    // A 17th key: the 2 (= 16 / 8) silent longest, d2 and d3, go, and
    // their open windows are written with this event's outputs.
    let (result, changes) = feed(&h, 0, &reading("new", 6_000, 3)).await;
    let outputs: Vec<Value> = result
        .expect("accepted")
        .iter()
        .map(|o| serde_json::from_str(o).expect("JSON"))
        .collect();
    let evicted: Vec<(&str, i64, u64)> = outputs
        .iter()
        .map(|o| {
            (
                o["key"].as_str().expect("key"),
                o["window_start"].as_i64().expect("start"),
                o["n"].as_u64().expect("count"),
            )
        })
        .collect();
    let mut evicted = evicted;
    evicted.sort_unstable();
    assert_eq!(evicted, [("d2", 1_000, 1), ("d3", 1_000, 1)]);
    let keys = &snapshot(&h)[&(0, 0)];
    assert_eq!(keys.len(), 15, "16 - 2 evicted + 1 new");
    assert!(!keys.contains_key(&Bytes::from_static(b"d2")));
    assert!(!keys.contains_key(&Bytes::from_static(b"d3")));
    assert!(keys.contains_key(&Bytes::from_static(b"new")));
    // The evicted keys' stored state is removed with the new key's put.
    let removed: Vec<&[u8]> = changes
        .iter()
        .filter(|change| change.value.is_none())
        .map(|change| change.key.as_ref())
        .collect();
    let mut removed = removed;
    removed.sort_unstable();
    assert_eq!(removed, [b"d2".as_slice(), b"d3".as_slice()], "{changes:?}");
}

#[tokio::test]
async fn a_stream_of_ever_new_keys_never_holds_more_than_max_keys() {
    let h = bounded(64);
    for n in 0..2_000 {
        ok_or_outputs(&h, &reading(&format!("k{n}"), 1_000 + n, 1)).await;
        assert!(snapshot(&h)[&(0, 0)].len() <= 64, "after key {n}");
    }
}

/// Handles an accepted event, whatever it writes.
async fn ok_or_outputs(h: &WindowHandler, payload: &str) {
    let (result, _) = feed(h, 0, payload).await;
    result.unwrap_or_else(|e| panic!("{payload}: {e}"));
}

#[test]
fn max_keys_out_of_range_is_a_located_error() {
    for value in ["0", "10000001", "-1", "many"] {
        let (settings, errors) = read(&format!(
            "key: /device\nsize: 1s\nmax_keys: {value}\naggregates: {{n: count}}\n"
        ));
        assert!(settings.is_none(), "max_keys: {value}");
        assert_eq!(errors.len(), 1, "{value}: {errors:#?}");
        assert_eq!(errors[0].path, "handler.max_keys", "{value}");
    }
}
