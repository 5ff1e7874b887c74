//! The poll thread: does the seeks the source asked for (a seek refused
//! only because the partition is not fetching yet is tried again after the
//! next poll), polls librdkafka every [`POLL_INTERVAL`] and converts each
//! message into an owned [`Event`] (headers read without panicking on names
//! that are not UTF-8). Everything librdkafka has ready goes to the source
//! as one batch (at most [`BATCH_EVENTS`] events; it ends once it holds
//! [`BATCH_BYTES`] bytes), in librdkafka's order, without waiting once a
//! first message is there; events polled before anything else the thread
//! sends (an error, a rebalance callback's item) are sent before it, so the
//! source sees items in the order they happened. It ends on shutdown or
//! when the source is gone, and closes the consumer off the async runtime.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::Offset;
use spate_connector::{Event, Headers, PartitionId, Position};

use super::{lock, Item, KafkaConsumer, Shared};

/// How long one `poll` call waits; also how quickly the thread notices
/// shutdown.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Most events one batch holds.
pub const BATCH_EVENTS: usize = 1024;
/// A batch ends once its events hold this many bytes (so it holds at most
/// this plus one message).
pub const BATCH_BYTES: usize = 1 << 20;

/// Polls until shutdown or until the source is gone, forwarding everything.
/// The thread's `Arc` of the consumer is usually the last one, so closing
/// the consumer (leaving the group) happens here, off the async runtime.
pub fn poll_loop(consumer: Arc<KafkaConsumer>, shared: Arc<Shared>) {
    let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        poll_until_shutdown(&consumer, &shared)
    }));
    if let Err(panic) = polled {
        let why = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_owned());
        // The source is still reading: tell it, without blocking forever.
        let _ = shared.tx.try_send(Item::Stopped(why));
    }
    tracing::debug!(source = %shared.name, "poll thread ends; closing the consumer");
    drop(consumer);
}

/// How long one seek may take before it counts as failed.
const SEEK_TIMEOUT: Duration = Duration::from_secs(10);

fn poll_until_shutdown(consumer: &KafkaConsumer, shared: &Shared) {
    // Seeks librdkafka refused because their partition was not fetching
    // yet, with when each was first asked for.
    let mut not_ready: Vec<(PartitionId, u64, Instant)> = Vec::new();
    while !shared.is_shut_down() {
        let asked = std::mem::take(&mut *lock(&shared.seeks));
        let seeks = std::mem::take(&mut not_ready).into_iter().chain(
            asked
                .into_iter()
                .map(|(id, offset)| (id, offset, Instant::now())),
        );
        for (id, offset, since) in seeks {
            let failed = match shared.interner().lookup(id) {
                None => Some(format!("partition id {id} is unknown")),
                Some((topic, partition)) => match consumer.seek(
                    &topic,
                    partition,
                    Offset::Offset(i64::try_from(offset).unwrap_or(i64::MAX)),
                    SEEK_TIMEOUT,
                ) {
                    Ok(()) => None,
                    Err(error) if not_fetching_yet(&error) && since.elapsed() < SEEK_TIMEOUT => {
                        // Right after an assignment: again after the next
                        // poll. The partition's events are dropped until
                        // the seek is done, so none is handed out early.
                        not_ready.push((id, offset, since));
                        continue;
                    }
                    Err(error) => Some(error.to_string()),
                },
            };
            if !shared.send(Item::Seeked { id, offset, failed }) {
                return;
            }
        }
        if !poll_batch(consumer, shared) {
            break;
        }
    }
}

/// Waits up to [`POLL_INTERVAL`] for the first message, then takes what
/// else librdkafka has ready without waiting, and sends it as one batch.
/// Events wait in [`Shared`] meanwhile, so that anything else sent (a
/// rebalance callback's item during a poll, an error) goes after the events
/// polled before it. False when the source is gone.
fn poll_batch(consumer: &KafkaConsumer, shared: &Shared) -> bool {
    let mut count = 0;
    let mut bytes = 0;
    let mut timeout = POLL_INTERVAL;
    while count < BATCH_EVENTS && bytes < BATCH_BYTES {
        match consumer.poll(timeout) {
            None => break,
            Some(Ok(message)) => {
                let (id, topic) = shared.interner().id(message.topic(), message.partition());
                let event = to_event(&message, id, topic);
                count += 1;
                bytes += event.byte_len();
                shared.stage(event);
            }
            Some(Err(error)) => return shared.send(Item::Error(error)),
        }
        timeout = Duration::ZERO;
    }
    shared.flush()
}

/// What a seek's error says (`BaseConsumer::seek` gives librdkafka's
/// `rd_kafka_err2str`) when the partition is not fetching yet
/// (`RD_KAFKA_RESP_ERR__STATE`); not `RDKafkaErrorCode::State.to_string()`,
/// which reads `State (Local: Erroneous state)` and so never matched.
pub(super) const NOT_FETCHING: &str = "Local: Erroneous state";

/// Whether librdkafka refused a seek only because the partition is not
/// fetching yet (`Local: Erroneous state`, seen right after an assignment).
pub(super) fn not_fetching_yet(error: &KafkaError) -> bool {
    matches!(error, KafkaError::Seek(why) if why == NOT_FETCHING)
}

fn to_event(message: &BorrowedMessage<'_>, id: PartitionId, topic: Arc<str>) -> Event {
    Event {
        key: message.key().map(Bytes::copy_from_slice),
        payload: message
            .payload()
            .map(Bytes::copy_from_slice)
            .unwrap_or_default(),
        headers: headers_of(message),
        timestamp_ms: message.timestamp().to_millis(),
        position: Position {
            stream: topic,
            partition: id,
            offset: u64::try_from(message.offset()).unwrap_or(0),
        },
    }
}

/// The headers of a message, in order. Read through librdkafka's C API
/// because rdkafka's safe API panics on a header name that is not UTF-8
/// (any producer can send one); such names are converted lossily here.
fn headers_of(message: &BorrowedMessage<'_>) -> Headers {
    use rdkafka::bindings as rd;
    use std::ffi::CStr;
    let mut out = Headers::new();
    let mut native: *mut rd::rd_kafka_headers_t = std::ptr::null_mut();
    // SAFETY: `message.ptr()` is a valid message owned by the consumer for
    // the lifetime of `message`; librdkafka writes a pointer to the
    // message's own header list (or returns an error and leaves it null).
    let err = unsafe { rd::rd_kafka_message_headers(message.ptr(), &mut native) };
    if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || native.is_null() {
        return out;
    }
    let mut index = 0;
    loop {
        let mut name: *const std::os::raw::c_char = std::ptr::null();
        let mut value: *const std::os::raw::c_void = std::ptr::null();
        let mut size: usize = 0;
        // SAFETY: `native` stays valid while `message` lives; the out
        // pointers are valid locals; an index past the end returns an error.
        let err =
            unsafe { rd::rd_kafka_header_get_all(native, index, &mut name, &mut value, &mut size) };
        if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || name.is_null() {
            break;
        }
        // SAFETY: librdkafka returns a NUL-terminated name and, unless null,
        // a value of `size` bytes, both owned by the header list.
        let (name, value) = unsafe {
            let name = CStr::from_ptr(name).to_string_lossy().into_owned();
            let value = if value.is_null() {
                Bytes::new()
            } else {
                Bytes::copy_from_slice(std::slice::from_raw_parts(value.cast::<u8>(), size))
            };
            (name, value)
        };
        out.push(name, value);
        index += 1;
    }
    out
}
