//! Ordering: per-key order holds while keys run in parallel; a slow key
//! holds back only itself; partition ordering runs one event at a time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use spate::handler::{Context, Handler, HandlerError, Output};
use spate::pipeline::Ordering;
use spate::Event;
use spate_connector::testkit::MemoryLog;
use spate_testsupport::engine::{
    numbered_log, options, payload_number, plan, run_to_end, sinks, wait_for, Gate, Running,
};

/// Records the order events of each key were handled in, and how many
/// events of one key / of any key ran at the same time.
#[derive(Default)]
struct Recorder {
    seen: Mutex<HashMap<String, Vec<u64>>>,
    running_per_key: Mutex<HashMap<String, usize>>,
    overlap_within_key: AtomicUsize,
    running: AtomicUsize,
    max_running: AtomicUsize,
    /// Events of this key wait for a permit before finishing.
    gated_key: Option<String>,
    gate: Gate,
}

#[async_trait]
impl Handler for Recorder {
    async fn handle(&self, event: Event, _ctx: &Context) -> Result<Vec<Output>, HandlerError> {
        let key = String::from_utf8_lossy(event.key.as_deref().unwrap_or_default()).into_owned();
        {
            let mut running = self.running_per_key.lock().unwrap();
            let n = running.entry(key.clone()).or_default();
            *n += 1;
            if *n > 1 {
                self.overlap_within_key.fetch_add(1, AtomicOrdering::SeqCst);
            }
        }
        let now = self.running.fetch_add(1, AtomicOrdering::SeqCst) + 1;
        self.max_running.fetch_max(now, AtomicOrdering::SeqCst);
        if self.gated_key.as_deref() == Some(key.as_str()) {
            self.gate.pass().await;
        } else {
            // Vary handling time so completion order differs from arrival order.
            let jitter = payload_number(&event.payload) % 3;
            tokio::time::sleep(Duration::from_millis(jitter)).await;
        }
        self.seen
            .lock()
            .unwrap()
            .entry(key.clone())
            .or_default()
            .push(payload_number(&event.payload));
        self.running.fetch_sub(1, AtomicOrdering::SeqCst);
        *self.running_per_key.lock().unwrap().get_mut(&key).unwrap() -= 1;
        Ok(vec![Output::from_event(&event, event.payload.clone())])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_key_order_holds_while_keys_run_in_parallel() {
    let log = MemoryLog::new("orders", 1);
    let keys = 20;
    let per_key = 30;
    for seq in 0..per_key {
        for k in 0..keys {
            log.append(0, Some(&format!("k{k}")), format!("{seq}"));
        }
    }
    log.end();
    let recorder = Arc::new(Recorder::default());
    let (out, dlq) = sinks();
    let report = run_to_end(plan(&log, recorder.clone(), Ordering::Key, &out, &dlq)).await;

    let seen = recorder.seen.lock().unwrap();
    assert_eq!(seen.len(), keys);
    for (key, order) in seen.iter() {
        let expected: Vec<u64> = (0..per_key).collect();
        assert_eq!(order, &expected, "key {key} handled out of order");
    }
    assert_eq!(
        recorder.overlap_within_key.load(AtomicOrdering::SeqCst),
        0,
        "two events of one key ran at once"
    );
    assert!(
        recorder.max_running.load(AtomicOrdering::SeqCst) > 1,
        "keys of one partition never ran in parallel"
    );
    assert_eq!(report.handled, (keys * per_key as usize) as u64);
    assert_eq!(out.len(), keys * per_key as usize);
    assert_eq!(log.committed(0), Some((keys * per_key as usize) as u64));
    // Outputs of one key are written in the key's order too.
    let mut per_key_out: HashMap<Vec<u8>, Vec<u64>> = HashMap::new();
    for record in out.records() {
        per_key_out
            .entry(record.key.unwrap().to_vec())
            .or_default()
            .push(payload_number(&record.payload));
    }
    assert!(per_key_out
        .values()
        .all(|v| v.windows(2).all(|w| w[0] < w[1])));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_key_holds_back_only_itself() {
    let log = numbered_log("orders", 5, |_| Some("slow".to_owned()));
    for seq in 0..100 {
        log.append(0, Some(&format!("fast{}", seq % 10)), format!("{seq}"));
    }
    let recorder = Arc::new(Recorder {
        gated_key: Some("slow".to_owned()),
        ..Recorder::default()
    });
    let (out, dlq) = sinks();
    let run = Running::start(
        plan(&log, recorder.clone(), Ordering::Key, &out, &dlq),
        options(),
    );
    // Every fast event finishes while the slow key's first event is held.
    wait_for("fast keys to finish", || {
        recorder
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.starts_with("fast"))
            .map(|(_, v)| v.len())
            .sum::<usize>()
            == 100
    })
    .await;
    assert!(!recorder.seen.lock().unwrap().contains_key("slow"));
    // Its offset (0) is unfinished, so nothing may be committed yet.
    assert!(
        log.committed(0).unwrap_or(0) == 0,
        "commit passed the held event"
    );
    recorder.gate.open(5);
    wait_for("slow key to finish", || {
        recorder
            .seen
            .lock()
            .unwrap()
            .get("slow")
            .map_or(0, Vec::len)
            == 5
    })
    .await;
    assert_eq!(recorder.seen.lock().unwrap()["slow"], vec![0, 1, 2, 3, 4]);
    wait_for("everything committed", || log.committed(0) == Some(105)).await;
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_ordering_runs_one_event_per_partition_in_offset_order() {
    let log = MemoryLog::new("readings", 3);
    for seq in 0..40 {
        for p in 0..3 {
            // Many keys, but partition ordering ignores them.
            log.append(
                p,
                Some(&format!("k{}", seq % 7)),
                format!("{}", p as u64 * 1000 + seq),
            );
        }
    }
    log.end();
    #[derive(Default)]
    struct PerPartition {
        order: Mutex<HashMap<u32, Vec<u64>>>,
        running: Mutex<HashMap<u32, usize>>,
        overlap: AtomicUsize,
    }
    #[async_trait]
    impl Handler for PerPartition {
        async fn handle(&self, event: Event, _ctx: &Context) -> Result<Vec<Output>, HandlerError> {
            let p = event.position.partition;
            {
                let mut running = self.running.lock().unwrap();
                let n = running.entry(p).or_default();
                *n += 1;
                if *n > 1 {
                    self.overlap.fetch_add(1, AtomicOrdering::SeqCst);
                }
            }
            tokio::time::sleep(Duration::from_millis(payload_number(&event.payload) % 2)).await;
            self.order
                .lock()
                .unwrap()
                .entry(p)
                .or_default()
                .push(event.position.offset);
            *self.running.lock().unwrap().get_mut(&p).unwrap() -= 1;
            Ok(vec![])
        }
    }
    let handler = Arc::new(PerPartition::default());
    let (out, dlq) = sinks();
    run_to_end(plan(&log, handler.clone(), Ordering::Partition, &out, &dlq)).await;
    assert_eq!(handler.overlap.load(AtomicOrdering::SeqCst), 0);
    let order = handler.order.lock().unwrap();
    for p in 0..3 {
        assert_eq!(order[&p], (0..40).collect::<Vec<u64>>(), "partition {p}");
        assert_eq!(log.committed(p), Some(40));
    }
}
