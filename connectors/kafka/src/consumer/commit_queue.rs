//! Group commits that block no thread: each commit is handed to librdkafka
//! with a reply queue of the source's own (`rd_kafka_commit_queue`), and its
//! outcome is read from that queue once librdkafka signals (from its own
//! thread) that the queue is no longer empty. Neither the poll thread (which
//! may be blocked in a rebalance hand-over while the engine commits) nor a
//! thread of tokio's blocking pool waits for the group coordinator.
//!
//! Guarantees: [`CommitQueue::outcome`] reports `Ok` only once librdkafka
//! reported the coordinator's confirmation of every partition of the
//! commit; a commit whose wait ran out stays outstanding, and its outcome is
//! still read (in the order the commits were sent) before a later one's.

use std::os::raw::c_void;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::consumer::Consumer;
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::TopicPartitionList;
use tokio::sync::Notify;

use super::KafkaConsumer;

const NO_ERROR: rd::rd_kafka_resp_err_t = rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR;

/// A consumer's reply queue for its group commits.
pub struct CommitQueue {
    queue: *mut rd::rd_kafka_queue_t,
    /// Woken by librdkafka when a reply arrives; registered with the queue
    /// until `drop`, which unregisters it before the `Arc` goes.
    notify: Arc<Notify>,
    /// Commits sent whose outcome was not read yet.
    outstanding: usize,
    /// Kept so the queue is destroyed before the consumer (declared last:
    /// dropped after `drop` destroyed the queue).
    consumer: Arc<KafkaConsumer>,
}

// SAFETY: librdkafka's queues are thread safe; the raw pointer is only used
// through librdkafka's API, and the queue lives until `drop`.
unsafe impl Send for CommitQueue {}

/// librdkafka's signal that the queue is no longer empty, on one of its
/// threads: wakes the waiting commit (or leaves a permit for the next wait).
unsafe extern "C" fn replied(_rk: *mut rd::rd_kafka_t, opaque: *mut c_void) {
    // SAFETY: `opaque` is the `Notify` of the `CommitQueue` that registered
    // this callback; it stays alive until the callback is unregistered.
    let notify = unsafe { &*opaque.cast::<Notify>() };
    notify.notify_one();
}

impl CommitQueue {
    /// A reply queue for `consumer`'s commits.
    pub fn new(consumer: Arc<KafkaConsumer>) -> Self {
        let notify = Arc::new(Notify::new());
        // SAFETY: the consumer's handle is valid while `consumer` lives,
        // which is longer than the queue (see `drop`).
        let queue = unsafe { rd::rd_kafka_queue_new(consumer.client().native_ptr()) };
        // SAFETY: `queue` was just created; the opaque pointer stays valid
        // until `drop` unregisters the callback.
        unsafe {
            rd::rd_kafka_queue_cb_event_enable(
                queue,
                Some(replied),
                Arc::as_ptr(&notify).cast_mut().cast(),
            );
        }
        Self {
            queue,
            notify,
            outstanding: 0,
            consumer,
        }
    }

    /// Whether a commit's outcome was not read yet.
    pub fn is_waiting(&self) -> bool {
        self.outstanding > 0
    }

    /// Sends a commit of `offsets` to the group; its outcome comes through
    /// [`CommitQueue::outcome`]. An error here means nothing was sent.
    pub fn start(&mut self, offsets: &TopicPartitionList) -> KafkaResult<()> {
        // SAFETY: the consumer's handle, the list and the queue are valid;
        // librdkafka copies the list.
        let err = unsafe {
            rd::rd_kafka_commit_queue(
                self.consumer.client().native_ptr(),
                offsets.ptr(),
                self.queue,
                None,
                std::ptr::null_mut(),
            )
        };
        if err != NO_ERROR {
            return Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::from(err)));
        }
        self.outstanding += 1;
        Ok(())
    }

    /// The outcome of the oldest outstanding commit, waiting at most
    /// `timeout`; `None` if it did not come in time (it stays outstanding).
    /// Cancel safe: an outcome is taken only when it is returned.
    pub async fn outcome(&mut self, timeout: Duration) -> Option<KafkaResult<()>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(outcome) = self.take() {
                return Some(outcome);
            }
            let notified = self.notify.notified();
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.take();
            }
        }
    }

    /// Reads the next commit reply from the queue, without waiting.
    fn take(&mut self) -> Option<KafkaResult<()>> {
        loop {
            // SAFETY: the queue is valid; a zero timeout does not block.
            let event = unsafe { rd::rd_kafka_queue_poll(self.queue, 0) };
            if event.is_null() {
                return None;
            }
            // SAFETY: `event` is a valid event owned here until destroyed.
            let outcome = unsafe { commit_outcome(event) };
            // SAFETY: as above; not used after this.
            unsafe { rd::rd_kafka_event_destroy(event) };
            if let Some(outcome) = outcome {
                self.outstanding = self.outstanding.saturating_sub(1);
                return Some(outcome);
            }
        }
    }
}

/// A commit reply's outcome: the request's error, else the first
/// partition's; `None` for an event that is not a commit reply.
///
/// # Safety
///
/// `event` must be a valid librdkafka event.
unsafe fn commit_outcome(event: *mut rd::rd_kafka_event_t) -> Option<KafkaResult<()>> {
    // SAFETY: the caller's promise.
    let kind = unsafe { rd::rd_kafka_event_type(event) };
    if kind != rd::RD_KAFKA_EVENT_OFFSET_COMMIT {
        return None;
    }
    let fail = |err| Some(Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::from(err))));
    // SAFETY: a commit reply event.
    let err = unsafe { rd::rd_kafka_event_error(event) };
    if err != NO_ERROR {
        return fail(err);
    }
    // SAFETY: the list (if any) belongs to the event; its `cnt` elements
    // are initialised.
    let partitions = unsafe {
        let list = rd::rd_kafka_event_topic_partition_list(event);
        match list.as_ref() {
            Some(list) if !list.elems.is_null() => {
                std::slice::from_raw_parts(list.elems, usize::try_from(list.cnt).unwrap_or(0))
            }
            _ => &[],
        }
    };
    match partitions.iter().find(|p| p.err != NO_ERROR) {
        Some(p) => fail(p.err),
        None => Some(Ok(())),
    }
}

impl Drop for CommitQueue {
    fn drop(&mut self) {
        // SAFETY: unregistering takes the queue's lock, so no callback runs
        // once it returns; then the queue is released (a reply still on its
        // way holds its own reference) before the consumer.
        unsafe {
            rd::rd_kafka_queue_cb_event_enable(self.queue, None, std::ptr::null_mut());
            rd::rd_kafka_queue_destroy(self.queue);
        }
    }
}
