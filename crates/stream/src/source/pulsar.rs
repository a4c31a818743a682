//! Apache Pulsar source and sink (the `pulsar` crate on a small tokio runtime
//! owned by the source).
//!
//! A message is acked only when the pipeline acks it; unacked messages are
//! redelivered by the broker to this or another consumer of the
//! subscription. A producer's batch (one broker entry holding many
//! messages, what Java producers send by default) is acked only once all of
//! its messages are: an ack names an entry, and a 4.0 broker takes any ack
//! of one message of a batch for the whole batch, so acking the first would
//! lose the rest on a crash. The client reconnects by itself with backoff; errors are
//! logged as they happen. Partitioned topics map their partition index to
//! the pipeline's partitions.
//!
//! Exclusive and failover subscriptions (one reader a partition) are
//! checkpointed: on a restart each partition's records are numbered on from
//! the checkpoint's offset, and messages sent again up to its message id
//! (analysed before the stop, not acked yet) are acked, not read again.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use pulsar::consumer::InitialPosition;
use pulsar::proto::MessageIdData;
use pulsar::{ConnectionRetryOptions, Consumer, ConsumerOptions, Producer, ProducerOptions, Pulsar, SubType, TokioExecutor};

use super::config::{BrokerOptions, BrokerUrl, StartAt, COMMON_PARAMS};
use super::{Ack, Message, ResumePosition, Sink, Source, SourceContext, SourceError, SourceEvent, LAG_EVERY};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(100);
const MAX_BATCH: usize = 2000;
/// A request to the broker (statistics, the last message id, a seek,
/// closing) that has no answer by then is given up, so a lost answer never
/// stalls reading.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`ask`] first waits for an answer before it reads the queue and
/// asks again, waiting twice as long each time.
const FIRST_WAIT: Duration = Duration::from_millis(100);
/// A seek is several requests (seek, lookup, subscribe): asked again midway,
/// the broker may refuse it, so it is given longer before it is.
const SEEK_WAIT: Duration = Duration::from_secs(5);
/// The lag is asked for only with the queue just read empty, and given up
/// (until the next time) if the answer takes longer than this.
const LAG_WAIT: Duration = Duration::from_millis(100);
/// `--until-end` with nothing left: stop after this long without a message.
const IDLE_END: Duration = Duration::from_secs(3);

fn runtime() -> Result<tokio::runtime::Runtime, SourceError> {
    tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().map_err(SourceError::Io)
}

type PulsarConsumer = Consumer<Vec<u8>, TokioExecutor>;
type PulsarMessage = pulsar::consumer::Message<Vec<u8>>;

/// Asks the broker something through `consumer` (statistics, the last
/// message id, a seek, closing), reading the consumer's queue while waiting.
/// The client's consumer engine answers requests and fills that queue on one
/// task: once the queue is full it waits for a read before it answers
/// anything, so a request made without reading never returns (a producer's
/// batch of 1000 messages fills it at once). It waits `wait`, then reads the
/// queue and asks again, waiting twice as long each time, so a slow answer
/// is waited for in full. What is read on the way is put in `read`; `None`
/// when there is no answer within [`REQUEST_TIMEOUT`].
fn ask<R>(
    rt: &tokio::runtime::Runtime,
    consumer: &mut PulsarConsumer,
    read: &mut Vec<PulsarMessage>,
    mut wait: Duration,
    mut question: impl AsyncFnMut(&mut PulsarConsumer) -> R,
) -> Option<R> {
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    loop {
        if let Ok(answer) = rt.block_on(async { tokio::time::timeout(wait, question(consumer)).await }) {
            return Some(answer);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        wait = (wait * 2).min(left);
        rt.block_on(async {
            while let Some(Some(next)) = consumer.next().now_or_never() {
                match next {
                    Ok(m) => read.push(m),
                    Err(e) => tracing::warn!("pulsar: {e}; the client reconnects with backoff"),
                }
            }
        });
    }
}

fn connect(rt: &tokio::runtime::Runtime, hosts: &str) -> Result<Pulsar<TokioExecutor>, SourceError> {
    let unreachable = |message: String| SourceError::Unreachable { address: hosts.to_string(), message };
    let retry = ConnectionRetryOptions {
        min_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(5),
        max_retries: 30,
        connection_timeout: Duration::from_secs(5),
        ..Default::default()
    };
    let address = format!("pulsar://{hosts}");
    let build = async move {
        let builder = Pulsar::builder(address, TokioExecutor).with_connection_retry_options(retry);
        tokio::time::timeout(CONNECT_TIMEOUT, builder.build()).await
    };
    match rt.block_on(build) {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => Err(unreachable(e.to_string())),
        Err(_) => Err(unreachable(format!("no answer within {CONNECT_TIMEOUT:?}"))),
    }
}

/// `persistent://tenant/namespace/topic` from `tenant/namespace/topic`.
fn full_topic(url: &BrokerUrl, path: &str) -> Result<String, SourceError> {
    if path.split('/').count() != 3 || path.split('/').any(str::is_empty) {
        return Err(url.error("a Pulsar topic is tenant/namespace/topic"));
    }
    Ok(format!("persistent://{path}"))
}

fn id_text(id: &MessageIdData) -> String {
    let partition = id.partition.unwrap_or(-1);
    match id.batch_index {
        Some(b) if b >= 0 => format!("{}:{}:{partition}:{b}", id.ledger_id, id.entry_id),
        _ => format!("{}:{}:{partition}", id.ledger_id, id.entry_id),
    }
}

/// A message's place in its partition: ledger, entry, index in the batch (-1: none).
type Place = (u64, u64, i32);

fn place(id: &MessageIdData) -> Place {
    (id.ledger_id, id.entry_id, id.batch_index.unwrap_or(-1))
}

/// The place of an [`id_text`].
fn place_of_text(text: &str) -> Option<Place> {
    let mut parts = text.split(':');
    let (ledger, entry, _partition) = (parts.next()?.parse().ok()?, parts.next()?.parse().ok()?, parts.next()?);
    let batch = parts.next().map_or(Some(-1), |b| b.parse().ok())?;
    Some((ledger, entry, batch))
}

pub struct PulsarSource {
    url: BrokerUrl,
    options: BrokerOptions,
    rt: tokio::runtime::Runtime,
    /// Always `Some` until dropped (inside the runtime, as the client needs).
    consumer: Option<PulsarConsumer>,
    /// Asked to start at a time: no checkpoint applies.
    replay: bool,
    /// Per partition, the checkpoint resumed from: the next offset, and the
    /// last message analysed.
    resumed: HashMap<u32, (u64, Place)>,
}

impl Drop for PulsarSource {
    fn drop(&mut self) {
        let _inside = self.rt.enter();
        self.consumer.take();
    }
}

impl PulsarSource {
    pub fn new(url: BrokerUrl, table: &BrokerOptions) -> Result<Self, SourceError> {
        let mut known = vec!["subscription", "type"];
        known.extend_from_slice(COMMON_PARAMS);
        url.check_query(&known)?;
        let options = table.merged(&url)?;
        let start = options.start_at(&url)?;
        let topic = full_topic(&url, &url.path)?;
        let sub_type = match options.subscription_type.as_deref().unwrap_or("failover") {
            "exclusive" => SubType::Exclusive,
            "shared" => SubType::Shared,
            "failover" => SubType::Failover,
            "key_shared" => SubType::KeyShared,
            other => return Err(url.error(format!("subscription type '{other}': expected exclusive, shared, failover or key_shared"))),
        };
        let initial = match start {
            StartAt::Latest => InitialPosition::Latest,
            StartAt::Earliest | StartAt::Time(_) => InitialPosition::Earliest,
            StartAt::Offset(_) => return Err(url.error("Pulsar starts at earliest, latest or @<unix-ms>, not at a numeric offset")),
        };
        let rt = runtime()?;
        let client = connect(&rt, &url.hosts)?;
        let subscription = options.subscription.clone().unwrap_or_else(|| "clean-host".into());
        let mut consumer: PulsarConsumer = rt
            .block_on(
                client
                    .consumer()
                    .with_topic(&topic)
                    .with_subscription(&subscription)
                    .with_subscription_type(sub_type)
                    .with_consumer_name(format!("clean-host-{}", std::process::id()))
                    .with_options(ConsumerOptions::default().durable(true).with_initial_position(initial))
                    .build(),
            )
            .map_err(|e| SourceError::Broker(format!("subscribing '{subscription}' to {topic}: {e}")))?;
        if let StartAt::Time(ms) = start {
            // What was read before the seek is from before its point: the broker sends it again if it is after.
            let seek = async |c: &mut PulsarConsumer| c.seek(None, None, Some(ms as u64), client.clone()).await;
            match ask(&rt, &mut consumer, &mut Vec::new(), SEEK_WAIT, seek) {
                Some(sought) => sought.map_err(|e| SourceError::Broker(format!("seeking {topic} to {ms}: {e}")))?,
                None => return Err(SourceError::Broker(format!("seeking {topic} to {ms}: no answer within {REQUEST_TIMEOUT:?}"))),
            }
        }
        let replay = matches!(start, StartAt::Time(_));
        Ok(PulsarSource { url, options, rt, consumer: Some(consumer), replay, resumed: HashMap::new() })
    }
}

impl Source for PulsarSource {
    fn name(&self) -> String {
        format!("pulsar://{}/{}", self.url.hosts, self.url.path)
    }

    fn acknowledges(&self) -> bool {
        true
    }

    fn reader(&self) -> String {
        format!("{}?subscription={}", self.name(), self.options.subscription.as_deref().unwrap_or("clean-host"))
    }

    /// An exclusive or failover subscription's: shared ones split a
    /// partition's messages between readers, so no one reader's state is
    /// the partition's.
    fn checkpoint_id(&self) -> Option<String> {
        let one_reader = matches!(self.options.subscription_type.as_deref().unwrap_or("failover"), "exclusive" | "failover");
        one_reader.then(|| self.reader())
    }

    fn resume_at(&mut self, positions: &BTreeMap<u32, ResumePosition>) -> Result<bool, SourceError> {
        if self.replay {
            return Ok(false);
        }
        let mut resumed = HashMap::new();
        for (&partition, at) in positions {
            let Some(after) = at.after_id.as_deref().and_then(place_of_text) else { return Ok(false) };
            resumed.insert(partition, (at.next_offset, after));
        }
        self.resumed = resumed;
        Ok(true)
    }

    fn dead_letter_sink(&self) -> Result<Option<Box<dyn Sink>>, SourceError> {
        let path = match &self.options.dead_letter_topic {
            Some(t) if t.contains('/') => t.clone(),
            Some(t) => format!("{}/{t}", self.url.path.rsplit_once('/').map_or("", |(ns, _)| ns)),
            None => format!("{}-dead-letters", self.url.path),
        };
        Ok(Some(Box::new(PulsarSink::new(&self.url.hosts, &path)?)))
    }

    fn run(mut self: Box<Self>, ctx: SourceContext) -> Result<(), SourceError> {
        // Per partition: offset -> the message, until acked.
        let mut unacked: HashMap<u32, BTreeMap<u64, Unacked>> = HashMap::new();
        let mut acked_below: HashMap<u32, u64> = HashMap::new();
        let mut consumer = self.consumer.take().expect("set in new");
        // Messages read while waiting for an answer, handed on first.
        let mut read = Vec::new();
        let mut last_ids = Vec::new();
        if self.options.until_end {
            if let Some(Ok(stats)) = ask(&self.rt, &mut consumer, &mut read, FIRST_WAIT, async |c: &mut PulsarConsumer| c.get_stats().await) {
                let backlog: u64 = stats.iter().filter_map(|s| s.msg_backlog).sum();
                ctx.progress.total.store(backlog, Ordering::Relaxed);
            }
            let what = |e: String| SourceError::Broker(format!("the last message id of {}: {e}", self.url.path));
            last_ids = match ask(&self.rt, &mut consumer, &mut read, FIRST_WAIT, async |c: &mut PulsarConsumer| c.get_last_message_id().await) {
                Some(ids) => ids.map_err(|e| what(e.to_string()))?,
                None => return Err(what(format!("no answer within {REQUEST_TIMEOUT:?}"))),
            };
        }
        // Partition -> (ledger, entry) of the last message at start.
        let ends: HashMap<u32, (u64, u64)> = last_ids
            .iter()
            .filter(|id| id.ledger_id != u64::MAX && id.entry_id != u64::MAX)
            .map(|id| (id.partition.unwrap_or(0).max(0) as u32, (id.ledger_id, id.entry_id)))
            .collect();
        let result = self.consume(&ctx, &mut consumer, read, &ends, &mut unacked, &mut acked_below);
        ctx.finish(|ack| record_ack(&mut acked_below, ack));
        ack_below(&self.rt, &mut consumer, &mut unacked, &acked_below);
        // Anything read now is not handed on: unacked, the broker sends it again.
        let _ = ask(&self.rt, &mut consumer, &mut Vec::new(), FIRST_WAIT, async |c: &mut PulsarConsumer| c.close().await);
        let _inside = self.rt.enter();
        drop(consumer);
        result
    }
}

impl PulsarSource {
    fn consume(
        &self,
        ctx: &SourceContext,
        consumer: &mut PulsarConsumer,
        mut read: Vec<PulsarMessage>,
        ends: &HashMap<u32, (u64, u64)>,
        unacked: &mut HashMap<u32, BTreeMap<u64, Unacked>>,
        acked_below: &mut HashMap<u32, u64>,
    ) -> Result<(), SourceError> {
        let mut next_offset: HashMap<u32, u64> = self.resumed.iter().map(|(&p, &(offset, _))| (p, offset)).collect();
        let mut reached: HashMap<u32, bool> = ends.keys().map(|&p| (p, false)).collect();
        let mut last_message = Instant::now();
        let mut last_lag: Option<Instant> = None;
        // The last read emptied the client's queue (see [`ask`]).
        let mut drained = read.is_empty();
        loop {
            for ack in ctx.acks.try_iter() {
                record_ack(acked_below, ack);
            }
            if drained && last_lag.is_none_or(|t| t.elapsed() >= LAG_EVERY) {
                let stats = self.rt.block_on(async { tokio::time::timeout(LAG_WAIT, consumer.get_stats()).await });
                if let Ok(Ok(stats)) = stats {
                    ctx.progress.lag.store(stats.iter().filter_map(|s| s.msg_backlog).sum(), Ordering::Relaxed);
                }
                last_lag = Some(Instant::now());
            }
            ack_below(&self.rt, consumer, unacked, acked_below);
            if ctx.stopped() {
                return Ok(());
            }
            let (received, failed) = self.receive(consumer, std::mem::take(&mut read))?;
            drained = received.len() < MAX_BATCH && failed.is_none();
            if let Some(e) = failed {
                tracing::warn!("pulsar {}: {e}; the client reconnects with backoff", self.url.hosts);
                ctx.progress.broker_errors.fetch_add(1, Ordering::Relaxed);
            }
            let count = received.len();
            let mut batch: BTreeMap<u32, Vec<Message>> = BTreeMap::new();
            for msg in received {
                let id = msg.message_id().clone();
                let partition = id.partition.unwrap_or(0).max(0) as u32;
                if let Some(end) = ends.get(&partition) {
                    if (id.ledger_id, id.entry_id) >= *end {
                        reached.insert(partition, true);
                    }
                }
                let meta = &msg.payload.metadata;
                let ends_entry = match (id.batch_index, meta.num_messages_in_batch) {
                    (Some(index), Some(size)) if index >= 0 => index + 1 >= size,
                    _ => true,
                };
                if self.resumed.get(&partition).is_some_and(|&(_, after)| place(&id) <= after) {
                    // Analysed before the checkpoint: the other messages of
                    // an entry the cut ran through are acked with its last one.
                    if ends_entry {
                        if let Err(e) = self.rt.block_on(consumer.ack_with_id(&msg.topic, entry_id(id))) {
                            tracing::warn!("pulsar: ack failed, the message will be redelivered: {e}");
                        }
                    }
                    continue;
                }
                let offset = next_offset.entry(partition).or_default();
                let this = *offset;
                *offset += 1;
                batch.entry(partition).or_default().push(Message {
                    offset: this,
                    id: Some(Arc::from(id_text(&id))),
                    key: meta.partition_key.as_ref().map(|k| k.as_bytes().to_vec()),
                    timestamp_ms: Some(meta.event_time.unwrap_or(meta.publish_time) as i64),
                    headers: meta.properties.iter().map(|kv| (kv.key.clone(), kv.value.as_bytes().to_vec())).collect(),
                    payload: msg.payload.data,
                    fault: None,
                });
                unacked.entry(partition).or_default().insert(this, Unacked { topic: msg.topic, id, ends_entry });
            }
            if count > 0 {
                last_message = Instant::now();
            }
            ctx.progress.done.fetch_add(count as u64, Ordering::Relaxed);
            if batch.into_iter().any(|(partition, messages)| ctx.events.send(SourceEvent::Messages { partition, messages }).is_err()) {
                return Ok(());
            }
            if self.options.until_end && count == 0 && (reached.values().all(|&r| r) || last_message.elapsed() >= IDLE_END) {
                return Ok(());
            }
        }
    }

    /// `read` and the messages ready now, at most [`MAX_BATCH`] unless
    /// `read` holds more, after waiting up to [`POLL`] for the first; and the
    /// error that ended the batch, if any. One `block_on` a batch, not one a
    /// message: each costs a wake-up of the client's runtime thread.
    fn receive(&self, consumer: &mut PulsarConsumer, mut read: Vec<PulsarMessage>) -> Result<(Vec<PulsarMessage>, Option<pulsar::Error>), SourceError> {
        let closed = || SourceError::Broker(format!("{} closed the consumer", self.url.hosts));
        self.rt.block_on(async {
            if read.is_empty() {
                match tokio::time::timeout(POLL, consumer.next()).await {
                    Err(_) => return Ok((read, None)),
                    Ok(None) => return Err(closed()),
                    Ok(Some(Err(e))) => return Ok((read, Some(e))),
                    Ok(Some(Ok(m))) => read.push(m),
                }
            }
            while read.len() < MAX_BATCH {
                match consumer.next().now_or_never() {
                    None => break,
                    Some(None) => return Err(closed()),
                    Some(Some(Err(e))) => return Ok((read, Some(e))),
                    Some(Some(Ok(m))) => read.push(m),
                }
            }
            Ok((read, None))
        })
    }
}

/// A message handed on and not acked yet.
struct Unacked {
    topic: String,
    id: MessageIdData,
    /// It is the last message of its broker entry (or the entry's only one):
    /// acking it acks the entry.
    ends_entry: bool,
}

/// Raise the partition's acked bound to `ack`'s.
fn record_ack(acked_below: &mut HashMap<u32, u64>, ack: Ack) {
    let below = acked_below.entry(ack.partition).or_default();
    *below = (*below).max(ack.below);
}

fn ack_below(rt: &tokio::runtime::Runtime, consumer: &mut PulsarConsumer, unacked: &mut HashMap<u32, BTreeMap<u64, Unacked>>, acked_below: &HashMap<u32, u64>) {
    for (partition, pending) in unacked.iter_mut() {
        let Some(&below) = acked_below.get(partition) else { continue };
        let rest = pending.split_off(&below);
        let done = std::mem::replace(pending, rest);
        rt.block_on(async {
            // The other messages of an entry are acked with its last one.
            for m in done.into_values().filter(|m| m.ends_entry) {
                if let Err(e) = consumer.ack_with_id(&m.topic, entry_id(m.id)).await {
                    tracing::warn!("pulsar: ack failed, the message will be redelivered: {e}");
                }
            }
        });
    }
}

/// The id of a message's whole entry, as the Java client acks a finished batch.
fn entry_id(id: MessageIdData) -> MessageIdData {
    MessageIdData { batch_index: None, batch_size: None, ack_set: Vec::new(), ..id }
}

/// Produces to a topic, in batches as the Java client does by default (at
/// most 1000 messages or 128 KiB an entry, sent after 1 ms at the latest):
/// a broker stores and dispatches an entry at a time, so unbatched messages
/// cost it about ten times the work.
pub struct PulsarSink {
    name: String,
    rt: tokio::runtime::Runtime,
    producer: Option<Producer<TokioExecutor>>,
    receipts: Vec<pulsar::producer::SendFuture>,
}

impl PulsarSink {
    pub fn new(hosts: &str, path: &str) -> Result<Self, SourceError> {
        let url = BrokerUrl::parse(&format!("pulsar://{hosts}/{path}"))?;
        let topic = full_topic(&url, path)?;
        let rt = runtime()?;
        let client = connect(&rt, hosts)?;
        let options =
            ProducerOptions { batch_size: Some(1000), batch_byte_size: Some(128 * 1024), batch_timeout: Some(Duration::from_millis(1)), ..Default::default() };
        let producer = rt
            .block_on(client.producer().with_topic(&topic).with_options(options).build())
            .map_err(|e| SourceError::Broker(format!("producer for {topic}: {e}")))?;
        Ok(PulsarSink { name: format!("pulsar://{hosts}/{path}"), rt, producer: Some(producer), receipts: Vec::new() })
    }
}

impl Drop for PulsarSink {
    fn drop(&mut self) {
        let _inside = self.rt.enter();
        self.producer.take();
    }
}

impl Sink for PulsarSink {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn send(&mut self, key: &str, payload: &[u8]) -> Result<(), SourceError> {
        for attempt in 0.. {
            let producer = self.producer.as_mut().expect("set until dropped");
            let mut builder = producer.create_message().with_content(payload.to_vec());
            if !key.is_empty() {
                builder = builder.with_key(key);
            }
            match self.rt.block_on(builder.send_non_blocking()) {
                Ok(receipt) => {
                    self.receipts.push(receipt);
                    break;
                }
                // The producer's queue is full: wait for what is in flight, then retry.
                Err(e) if attempt < 50 && e.to_string().contains("SlowDown") => self.flush()?,
                Err(e) => return Err(SourceError::Broker(format!("producing to {}: {e}", self.name))),
            }
        }
        if self.receipts.len() >= 5000 {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SourceError> {
        let receipts = std::mem::take(&mut self.receipts);
        self.rt.block_on(async {
            for r in receipts {
                r.await.map_err(|e| SourceError::Broker(format!("producing to {}: {e}", self.name)))?;
            }
            Ok(())
        })
    }
}
