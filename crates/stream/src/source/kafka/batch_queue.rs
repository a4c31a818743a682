//! The assigned partitions' messages, a batch per call.
//!
//! rust-rdkafka hands a consumer's messages over one `poll` at a time: per
//! message a queue lock, clock reads, an event to wrap and free (17% of a
//! Kafka run's CPU was the source thread, a quarter of it reading the
//! clock). librdkafka's batch call cannot serve the consumer's own queue
//! here: it would answer the rebalances waiting there by unassigning, as
//! the event API leaves rebalances to rust-rdkafka. So each partition's
//! fetch queue is forwarded to a queue of our own, which the batch call
//! drains; the consumer's queue keeps the rebalances, commits and errors,
//! polled as before.
//!
//! A partition is forwarded when it is about to be assigned ([`BatchQueue::take_in`],
//! from the rebalance callback, before the assignment starts its fetcher).
//! librdkafka never replaces a forwarding the application set, so a
//! partition's messages come through one queue, in order. Stopping its fetch
//! (a revocation) clears the forwarding; the next assignment sets it again,
//! and what was fetched in between moves over in order. A message of a
//! partition revoked meanwhile is dropped by librdkafka (its version is
//! outdated), as on the consumer's queue. Were a partition's fetch ever
//! stopped after its next assignment forwarded it, its messages would wait
//! in its own queue: the stall watch forwards a partition again before it
//! seeks it.

use std::ffi::{c_void, CStr, CString};
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::types::{RDKafka, RDKafkaMessage, RDKafkaQueue};

/// A queue of one consumer's, destroyed before the consumer is.
pub(super) struct BatchQueue {
    queue: NonNull<RDKafkaQueue>,
    client: NonNull<RDKafka>,
}

// SAFETY: every operation on a librdkafka queue takes the queue's own lock,
// and the client pointer is only handed to librdkafka calls that lock too.
unsafe impl Send for BatchQueue {}
unsafe impl Sync for BatchQueue {}

impl BatchQueue {
    /// A new queue of `client`.
    ///
    /// # Safety
    /// `client` is a live consumer that outlives the queue and the messages
    /// taken from it.
    pub(super) unsafe fn new(client: *mut RDKafka) -> Option<Self> {
        let client = NonNull::new(client)?;
        // SAFETY: the caller's contract.
        let queue = NonNull::new(unsafe { rd::rd_kafka_queue_new(client.as_ptr()) })?;
        Some(BatchQueue { queue, client })
    }

    /// Forward `partitions` of `topic` here (again: a partition already
    /// forwarded stays so). Returns those that could not be: their messages
    /// come through the consumer's own queue.
    pub(super) fn take_in(&self, topic: &str, partitions: &[u32]) -> Vec<u32> {
        let Ok(topic) = CString::new(topic) else {
            return partitions.to_vec();
        };
        let mut refused = Vec::new();
        for &partition in partitions {
            // SAFETY: live client and queue; the partition's queue handle is
            // released at once (the forwarding stays with the partition).
            unsafe {
                let fetched = rd::rd_kafka_queue_get_partition(self.client.as_ptr(), topic.as_ptr(), partition as i32);
                if fetched.is_null() {
                    refused.push(partition);
                    continue;
                }
                rd::rd_kafka_queue_forward(fetched, self.queue.as_ptr());
                rd::rd_kafka_queue_destroy(fetched);
            }
        }
        refused
    }

    /// Up to `max` messages, waiting at most `wait` for the first.
    pub(super) fn take(&self, wait: Duration, max: usize) -> Vec<Fetched<'_>> {
        let mut messages: Vec<*mut RDKafkaMessage> = Vec::with_capacity(max);
        let wait_ms = wait.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: the buffer has room for `max` pointers; librdkafka writes
        // `n` of them, each a message we own until it is destroyed.
        let n = unsafe { rd::rd_kafka_consume_batch_queue(self.queue.as_ptr(), wait_ms, messages.as_mut_ptr(), max) };
        // SAFETY: the first `n` (at most `max`) were written; a negative `n` is an error: none.
        unsafe { messages.set_len((n.max(0) as usize).min(max)) };
        messages.into_iter().filter_map(NonNull::new).map(|message| Fetched { message, queue: PhantomData }).collect()
    }
}

impl Drop for BatchQueue {
    fn drop(&mut self) {
        // SAFETY: the client is still alive (the owner drops this first); a
        // partition still forwarding here keeps the queue's memory alive
        // until its forwarding goes.
        unsafe { rd::rd_kafka_queue_destroy(self.queue.as_ptr()) };
    }
}

/// A message taken from the queue, freed when dropped (before the queue
/// and its consumer are).
pub(super) struct Fetched<'q> {
    message: NonNull<RDKafkaMessage>,
    queue: PhantomData<&'q BatchQueue>,
}

impl Fetched<'_> {
    fn raw(&self) -> &RDKafkaMessage {
        // SAFETY: owned, alive until dropped.
        unsafe { self.message.as_ref() }
    }

    /// Why this is not a message but an error of its partition (librdkafka
    /// passes consumer errors along with the messages).
    pub(super) fn error(&self) -> Option<String> {
        let err = self.raw().err;
        if err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            return None;
        }
        // SAFETY: a live message; the text is its own (or librdkafka's static one).
        let detail = unsafe { rd::rd_kafka_message_errstr(self.message.as_ptr()) };
        let detail = if detail.is_null() { String::new() } else { unsafe { CStr::from_ptr(detail) }.to_string_lossy().into_owned() };
        Some(format!("{} ({detail})", RDKafkaErrorCode::from(err)))
    }

    pub(super) fn partition(&self) -> u32 {
        self.raw().partition as u32
    }

    pub(super) fn offset(&self) -> u64 {
        self.raw().offset as u64
    }

    pub(super) fn payload(&self) -> &[u8] {
        // SAFETY: the message's own buffer.
        unsafe { bytes_at(self.raw().payload, self.raw().len) }
    }

    pub(super) fn key(&self) -> Option<&[u8]> {
        let raw = self.raw();
        // SAFETY: the message's own buffer.
        (!raw.key.is_null()).then(|| unsafe { bytes_at(raw.key, raw.key_len) })
    }

    /// The producer's or the log's time, when the message has one.
    pub(super) fn timestamp_ms(&self) -> Option<i64> {
        let mut kind = rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
        // SAFETY: a live message.
        let ms = unsafe { rd::rd_kafka_message_timestamp(self.message.as_ptr(), &mut kind) };
        (ms != -1 && kind != rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE).then_some(ms)
    }

    /// Its headers, names read as UTF-8 (lossily: names are the producer's).
    pub(super) fn headers(&self) -> Vec<(String, Vec<u8>)> {
        let mut headers = std::ptr::null_mut();
        // SAFETY: a live message; the headers belong to it.
        unsafe {
            if rd::rd_kafka_message_headers(self.message.as_ptr(), &mut headers) != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                return Vec::new();
            }
            (0..rd::rd_kafka_header_cnt(headers))
                .filter_map(|i| {
                    let (mut name, mut value, mut size) = (std::ptr::null(), std::ptr::null(), 0);
                    let err = rd::rd_kafka_header_get_all(headers, i, &mut name, &mut value, &mut size);
                    (err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && !name.is_null())
                        .then(|| (CStr::from_ptr(name).to_string_lossy().into_owned(), bytes_at(value, size).to_vec()))
                })
                .collect()
        }
    }
}

impl Drop for Fetched<'_> {
    fn drop(&mut self) {
        // SAFETY: owned, destroyed once.
        unsafe { rd::rd_kafka_message_destroy(self.message.as_ptr()) };
    }
}

/// `len` bytes at `at` (none when null).
///
/// # Safety
/// `at` is null or points to `len` bytes that stay alive and unchanged for `'a`.
unsafe fn bytes_at<'a>(at: *const c_void, len: usize) -> &'a [u8] {
    if at.is_null() || len == 0 {
        &[]
    } else {
        // SAFETY: the caller's contract.
        unsafe { std::slice::from_raw_parts(at as *const u8, len) }
    }
}
