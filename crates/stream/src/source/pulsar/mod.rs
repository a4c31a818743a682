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
//! checkpointed, in the broker ([`PulsarTable`]): when a partition first
//! comes to this consumer (at the start, or from a consumer that stopped),
//! its records are numbered on from its checkpoint's offset, and messages
//! sent again up to its message id (analysed before the stop, not acked
//! yet) are acked, not read again. There a partition's messages are handed
//! on in the broker's order, none left out and none twice, however it sends
//! them when a partition moves or a consumer reconnects ([`order`]).

mod order;
mod table;
#[cfg(test)]
mod tests;

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use pulsar::consumer::InitialPosition;
use pulsar::producer::{self, SendFuture};
use pulsar::proto::MessageIdData;
use pulsar::{ConnectionRetryOptions, Consumer, ConsumerOptions, OperationRetryOptions, Producer, ProducerOptions, Pulsar, SubType, TokioExecutor};

use super::config::{BrokerOptions, BrokerUrl, StartAt, COMMON_PARAMS};
use super::{Ack, CheckpointHome, Message, ResumePosition, Sink, Source, SourceContext, SourceError, SourceEvent, StateTable, LAG_EVERY};
use order::{PartitionOrder, Verdict};
pub use table::PulsarTable;

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
/// `--until-end` with nothing left, or a state table read to an end known
/// only to be in an earlier ledger: stop after this long without a message.
const IDLE_END: Duration = Duration::from_secs(3);
/// `--until-end` waiting for the broker to go back past a gap ([`order`]):
/// stop after this long without a message handed on.
const GAP_IDLE_END: Duration = Duration::from_secs(30);
/// How long the broker may take to store what a sink sent.
const SINK_TIMEOUT: Duration = Duration::from_secs(60);

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
    // Not retried for ever (the default): a broker that keeps refusing is an error.
    let operations = OperationRetryOptions { max_retries: Some(20), ..Default::default() };
    let address = format!("pulsar://{hosts}");
    let build = async move {
        let builder = Pulsar::builder(address, TokioExecutor).with_connection_retry_options(retry).with_operation_retry_options(operations);
        tokio::time::timeout(CONNECT_TIMEOUT, builder.build()).await
    };
    match rt.block_on(build) {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => Err(unreachable(e.to_string())),
        Err(_) => Err(unreachable(format!("no answer within {CONNECT_TIMEOUT:?}"))),
    }
}

/// Per partition of `topic`, where its last message is now ([`last_places`]).
/// Asked through a consumer of its own that starts at the end and takes one
/// message at a time, so no backlog holds the answer up (see [`ask`]).
fn last_entries(rt: &tokio::runtime::Runtime, client: &Pulsar<TokioExecutor>, topic: &str) -> Result<HashMap<u32, (u64, u64)>, SourceError> {
    let what = |e: String| SourceError::Broker(format!("the last message id of {topic}: {e}"));
    let ids = rt.block_on(async {
        let subscription = format!("clean-host-end-{}-{}", std::process::id(), fastrand::u64(..));
        let options = ConsumerOptions::default().with_initial_position(InitialPosition::Latest);
        let mut probe = probe(client, topic, subscription, options).await.map_err(what)?;
        let ids = tokio::time::timeout(REQUEST_TIMEOUT, probe.get_last_message_id()).await;
        let _ = tokio::time::timeout(REQUEST_TIMEOUT, probe.close()).await;
        match ids {
            Ok(ids) => ids.map_err(|e| what(e.to_string())),
            Err(_) => Err(what(format!("no answer within {REQUEST_TIMEOUT:?}"))),
        }
    })?;
    Ok(last_places(&ids))
}

/// A consumer of `topic` to ask the broker something: its own subscription,
/// gone with it, one message at a time.
async fn probe(client: &Pulsar<TokioExecutor>, topic: &str, subscription: String, options: ConsumerOptions) -> Result<PulsarConsumer, String> {
    let options = ConsumerOptions { receiver_queue_size: Some(1), ..options.durable(false) };
    let build = client
        .consumer()
        .with_topic(topic)
        .with_subscription(subscription)
        .with_subscription_type(SubType::Exclusive)
        .with_batch_size(1)
        .with_options(options)
        .build();
    match tokio::time::timeout(REQUEST_TIMEOUT, build).await {
        Ok(built) => built.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {REQUEST_TIMEOUT:?}")),
    }
}

/// Per partition, from the broker's last message ids, a (ledger, entry)
/// that every message written so far is at or before and every later one
/// after: the last message's, or, where the last ledger is new and empty
/// (entry -1: what came before is in earlier ledgers), just before its
/// first entry. None for a partition with no ledger.
fn last_places(ids: &[MessageIdData]) -> HashMap<u32, (u64, u64)> {
    let place = |id: &MessageIdData| match id.entry_id {
        u64::MAX => Some((id.ledger_id.checked_sub(1)?, u64::MAX)),
        entry => Some((id.ledger_id, entry)),
    };
    let ends = ids.iter().filter(|id| id.ledger_id != u64::MAX).filter_map(|id| Some((id.partition.unwrap_or(0).max(0) as u32, place(id)?)));
    ends.collect()
}

/// The messages ready now, at most `max`, after waiting up to [`POLL`] for
/// the first; and the error that ended the batch, if any; `None` when the
/// client gave the consumer up. One `block_on` a batch, not one a message:
/// each costs a wake-up of the client's runtime thread.
fn receive(rt: &tokio::runtime::Runtime, consumer: &mut PulsarConsumer, max: usize) -> Option<(Vec<PulsarMessage>, Option<pulsar::Error>)> {
    rt.block_on(async {
        let mut read = Vec::new();
        match tokio::time::timeout(POLL, consumer.next()).await {
            Err(_) => return Some((read, None)),
            Ok(None) => return None,
            Ok(Some(Err(e))) => return Some((read, Some(e))),
            Ok(Some(Ok(m))) => read.push(m),
        }
        while read.len() < max {
            match consumer.next().now_or_never() {
                None => break,
                Some(None) => return None,
                Some(Some(Err(e))) => return Some((read, Some(e))),
                Some(Some(Ok(m))) => read.push(m),
            }
        }
        Some((read, None))
    })
}

/// Send `message` to the broker, its receipt into `receipts`. While the
/// producer's queue is full (SlowDown), what is in flight is waited for
/// first (with nothing of ours in flight, a moment), until `deadline` at most.
fn produce(
    rt: &tokio::runtime::Runtime,
    name: &str,
    producer: &mut Producer<TokioExecutor>,
    message: producer::Message,
    receipts: &mut Vec<SendFuture>,
    deadline: Instant,
) -> Result<(), SourceError> {
    loop {
        match rt.block_on(producer.send_non_blocking(message.clone())) {
            Ok(receipt) => {
                receipts.push(receipt);
                return Ok(());
            }
            Err(e) if e.to_string().contains("SlowDown") && Instant::now() < deadline => match receipts.is_empty() {
                true => std::thread::sleep(Duration::from_millis(10)),
                false => stored(rt, name, std::mem::take(receipts), deadline)?,
            },
            Err(e) => return Err(SourceError::Broker(format!("storing in {name}: {e}"))),
        }
    }
}

/// Waits until the broker stored what `receipts` are for, until `deadline` at most.
fn stored(rt: &tokio::runtime::Runtime, name: &str, receipts: Vec<SendFuture>, deadline: Instant) -> Result<(), SourceError> {
    let stored = rt.block_on(async {
        tokio::time::timeout_at(deadline.into(), async {
            for r in receipts {
                r.await?;
            }
            Ok::<_, pulsar::Error>(())
        })
        .await
    });
    match stored {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(SourceError::Broker(format!("storing in {name}: {e}"))),
        Err(_) => Err(SourceError::Broker(format!("storing in {name}: not stored in time"))),
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
    /// `--until-end`: partition -> (ledger, entry) of its last message at start.
    ends: HashMap<u32, (u64, u64)>,
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
        let ends = if options.until_end { last_entries(&rt, &client, &topic)? } else { HashMap::new() };
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
        Ok(PulsarSource { url, options, rt, consumer: Some(consumer), replay, ends })
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
        reader(&self.url, &self.options)
    }

    fn checkpoint_id(&self) -> Option<String> {
        checkpoint_id(&self.url, &self.options)
    }

    /// Where the subscription is checkpointed: a partition comes to a
    /// consumer when another stops, and carries on from its checkpoint then.
    fn partitions_move(&self) -> bool {
        self.checkpoint_id().is_some()
    }

    /// Each partition's checkpoint is looked up when it comes
    /// ([`SourceContext::checkpoint_of`]): the latest then, not at the start.
    fn resume_at(&mut self, _positions: &BTreeMap<u32, ResumePosition>) -> Result<bool, SourceError> {
        Ok(!self.replay)
    }

    fn dead_letter_sink(&self) -> Result<Option<Box<dyn Sink>>, SourceError> {
        let path = match &self.options.dead_letter_topic {
            Some(t) => in_namespace(&self.url, t),
            None => format!("{}-dead-letters", self.url.path),
        };
        Ok(Some(Box::new(PulsarSink::new(&self.url.hosts, &path)?)))
    }

    /// A topic in the source's namespace (or `tenant/namespace/topic`).
    fn state_table(&self) -> Result<Option<Box<dyn StateTable>>, SourceError> {
        Ok(Some(Box::new(state_table(&self.url, &self.options)?)))
    }

    fn run(mut self: Box<Self>, ctx: SourceContext) -> Result<(), SourceError> {
        // Per partition: offset -> the last message of an entry handed on, until acked.
        let mut unacked: HashMap<u32, BTreeMap<u64, Unacked>> = HashMap::new();
        let mut acked_below: HashMap<u32, u64> = HashMap::new();
        let mut consumer = self.consumer.take().expect("set in new");
        if self.options.until_end {
            // Asked once, not waited for: a full queue holds the answer up (see [`ask`]).
            let stats = self.rt.block_on(async { tokio::time::timeout(LAG_WAIT, consumer.get_stats()).await });
            if let Ok(Ok(stats)) = stats {
                ctx.progress.total.store(stats.iter().filter_map(|s| s.msg_backlog).sum(), Ordering::Relaxed);
            }
        }
        let ends = std::mem::take(&mut self.ends);
        let result = self.consume(&ctx, &mut consumer, &ends, &mut unacked, &mut acked_below);
        ctx.finish(|ack| record_ack(&mut acked_below, ack));
        ack_below(&self.rt, &mut consumer, &mut unacked, &acked_below);
        // Anything read now is not handed on: unacked, the broker sends it again.
        let _ = ask(&self.rt, &mut consumer, &mut Vec::new(), FIRST_WAIT, async |c: &mut PulsarConsumer| c.close().await);
        let _inside = self.rt.enter();
        drop(consumer);
        result
    }
}

/// `topic` as `tenant/namespace/topic`: in the namespace of the source
/// `url` names unless it names one.
fn in_namespace(url: &BrokerUrl, topic: &str) -> String {
    match topic.contains('/') {
        true => topic.to_string(),
        false => format!("{}/{topic}", url.path.rsplit_once('/').map_or("", |(ns, _)| ns)),
    }
}

/// A subscription's reading of the topic `url` names.
fn reader(url: &BrokerUrl, options: &BrokerOptions) -> String {
    format!("pulsar://{}/{}?subscription={}", url.hosts, url.path, options.subscription.as_deref().unwrap_or("clean-host"))
}

/// Whether one reader has each partition (exclusive and failover
/// subscriptions); shared ones split a partition's messages between readers.
fn one_reader(options: &BrokerOptions) -> bool {
    matches!(options.subscription_type.as_deref().unwrap_or("failover"), "exclusive" | "failover")
}

/// One reader's subscription's ([`one_reader`]): in a shared one no
/// reader's state is the partition's.
fn checkpoint_id(url: &BrokerUrl, options: &BrokerOptions) -> Option<String> {
    one_reader(options).then(|| reader(url, options))
}

fn state_table(url: &BrokerUrl, options: &BrokerOptions) -> Result<PulsarTable, SourceError> {
    let path = in_namespace(url, options.state_table());
    full_topic(url, &path)?;
    PulsarTable::new(&url.hosts, &path)
}

/// See [`super::checkpoint_home`].
pub(super) fn checkpoint_home(url: &BrokerUrl, options: &BrokerOptions) -> Result<Option<CheckpointHome>, SourceError> {
    let Some(id) = checkpoint_id(url, options) else { return Ok(None) };
    Ok(Some(CheckpointHome { id, table: Box::new(state_table(url, options)?) }))
}

impl PulsarSource {
    fn consume(
        &self,
        ctx: &SourceContext,
        consumer: &mut PulsarConsumer,
        ends: &HashMap<u32, (u64, u64)>,
        unacked: &mut HashMap<u32, BTreeMap<u64, Unacked>>,
        acked_below: &mut HashMap<u32, u64>,
    ) -> Result<(), SourceError> {
        // Per partition that came: the next offset, the order of its messages
        // (one reader a partition; shared subscriptions split it), and the
        // checkpoint it carries on from (its last message).
        let mut next_offset: HashMap<u32, u64> = HashMap::new();
        let mut order: HashMap<u32, PartitionOrder> = HashMap::new();
        let mut resumed: HashMap<u32, Place> = HashMap::new();
        let one_reader = one_reader(&self.options);
        // Each partition's own topic, to ask the broker to go back to its first unacked message.
        let mut topics: HashMap<u32, String> = HashMap::new();
        let mut reached: HashMap<u32, bool> = ends.keys().map(|&p| (p, false)).collect();
        let started = Instant::now();
        // When a message last came that was not dropped past a gap.
        let mut last_message = started;
        // Per partition, when its last message came: one whose end is only known to be in
        // an earlier ledger (see [`last_places`]) is at it once it has been quiet for IDLE_END.
        let mut quiet_since: HashMap<u32, Instant> = HashMap::new();
        let mut last_lag: Option<Instant> = None;
        // The last read emptied the client's queue (see [`ask`]).
        let mut drained = true;
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
            let now = Instant::now();
            for (partition, waiting) in &mut order {
                if let Some(from) = waiting.waiting_from().filter(|_| waiting.ask_due(now)) {
                    tracing::debug!("pulsar {}: partition {partition} not sent again from {from:?} yet; asking again", self.url.path);
                    go_back(&self.rt, consumer, &topics[partition], *partition, from);
                }
            }
            let closed = || SourceError::Broker(format!("{} closed the consumer", self.url.hosts));
            let (received, failed) = receive(&self.rt, consumer, MAX_BATCH).ok_or_else(closed)?;
            drained = received.len() < MAX_BATCH && failed.is_none();
            if let Some(e) = failed {
                tracing::warn!("pulsar {}: {e}; the client reconnects with backoff", self.url.hosts);
                ctx.progress.broker_errors.fetch_add(1, Ordering::Relaxed);
            }
            let count = received.len();
            let mut batch: BTreeMap<u32, Vec<Message>> = BTreeMap::new();
            // Messages not handed on that are acked now (their entries' last).
            let mut skipped = Vec::new();
            let now = Instant::now();
            for msg in received {
                let id = msg.message_id().clone();
                let partition = id.partition.unwrap_or(0).max(0) as u32;
                quiet_since.insert(partition, now);
                let meta = &msg.payload.metadata;
                let ends_entry = match (id.batch_index, meta.num_messages_in_batch) {
                    (Some(index), Some(size)) if index >= 0 => index + 1 >= size,
                    _ => true,
                };
                if let Entry::Vacant(first) = next_offset.entry(partition) {
                    let (next, from) = self.arrive(ctx, partition, &mut resumed)?;
                    first.insert(next);
                    topics.insert(partition, msg.topic.clone());
                    if let Some(&after) = resumed.get(&partition) {
                        order.entry(partition).or_default().resume_after(after);
                    }
                    if ctx.checkpoint_of.is_some() && ctx.events.send(SourceEvent::Arrived { partition, from }).is_err() {
                        return Ok(());
                    }
                }
                let verdict = one_reader.then(|| order.entry(partition).or_default().judge(place(&id), ends_entry, now));
                if let Some(Verdict::Early { ask }) = verdict {
                    if ask {
                        tracing::debug!(
                            "pulsar {}: partition {partition} at {}, not known to follow; asking the broker to go back",
                            self.url.path,
                            id_text(&id)
                        );
                        go_back(&self.rt, consumer, &msg.topic, partition, place(&id));
                    }
                    continue;
                }
                last_message = now;
                if ends.get(&partition).is_some_and(|&end| (id.ledger_id, id.entry_id) >= end) {
                    reached.insert(partition, true);
                }
                match verdict {
                    Some(Verdict::Again) if resumed.get(&partition).is_some_and(|&after| place(&id) <= after) => {
                        // Analysed before the checkpoint: the other messages of
                        // an entry the cut ran through are acked with its last one.
                        if ends_entry {
                            skipped.push((msg.topic, id));
                        }
                        continue;
                    }
                    Some(Verdict::Again) => {
                        // Handed on already. Acked once analysed, or, if its ack
                        // was sent and lost on the way, acked again now.
                        let pending = unacked.get(&partition).and_then(|p| p.values().next()).is_some_and(|first| place(&first.id) <= place(&id));
                        if !pending && ends_entry {
                            skipped.push((msg.topic, id));
                        }
                        continue;
                    }
                    _ => {}
                }
                let offset = next_offset.entry(partition).or_default();
                let this = *offset;
                *offset += 1;
                batch.entry(partition).or_default().push(Message {
                    offset: this,
                    id: Some(Arc::from(id_text(&id))),
                    key: meta.partition_key.as_ref().map(|k| Bytes::copy_from_slice(k.as_bytes())),
                    timestamp_ms: Some(meta.event_time.unwrap_or(meta.publish_time) as i64),
                    headers: meta.properties.iter().map(|kv| (kv.key.clone(), kv.value.as_bytes().to_vec())).collect(),
                    payload: msg.payload.data.into(),
                    fault: None,
                });
                // An entry is acked with its last message: only those are kept (one of a
                // producer's batch of 1000, not one a message, for up to a checkpoint's interval).
                if ends_entry {
                    unacked.entry(partition).or_default().insert(this, Unacked { topic: msg.topic, id });
                }
            }
            if !skipped.is_empty() {
                ack(&self.rt, consumer, skipped);
            }
            ctx.progress.done.fetch_add(count as u64, Ordering::Relaxed);
            if batch.into_iter().any(|(partition, messages)| ctx.events.send(SourceEvent::Messages { partition, messages }).is_err()) {
                return Ok(());
            }
            let at_end = |(p, &r): (&u32, &bool)| r || (ends[p].1 == u64::MAX && quiet_since.get(p).unwrap_or(&started).elapsed() >= IDLE_END);
            // A gap the broker was asked to fill is waited on, up to GAP_IDLE_END (its messages stay unacked).
            let waiting = order.values().any(|o| o.waiting_from().is_some()) && last_message.elapsed() < GAP_IDLE_END;
            if self.options.until_end && count == 0 && !waiting && (reached.iter().all(at_end) || last_message.elapsed() >= IDLE_END) {
                return Ok(());
            }
        }
    }

    /// `partition` came to this consumer: the offset to number its records
    /// on from, and the checkpoint's (`None`: it starts cold), noting the
    /// last message its checkpoint covers in `resumed`. A checkpoint that
    /// cannot be asked for stops the source: numbered otherwise than it, the
    /// partition's acks would pass what its checkpoints say.
    fn arrive(&self, ctx: &SourceContext, partition: u32, resumed: &mut HashMap<u32, Place>) -> Result<(u64, Option<u64>), SourceError> {
        let Some(lookup) = &ctx.checkpoint_of else { return Ok((0, None)) };
        let Some(at) = lookup(partition).map_err(SourceError::Broker)? else { return Ok((0, None)) };
        let Some(after) = at.after_id.as_deref().and_then(place_of_text) else {
            tracing::warn!("pulsar {}: partition {partition}'s checkpoint names no message id; it starts cold", self.url.path);
            return Ok((at.next_offset, None));
        };
        resumed.insert(partition, after);
        Ok((at.next_offset, Some(at.next_offset)))
    }
}

/// The last message of a broker entry handed on (or the entry's only one):
/// acking it acks the entry.
struct Unacked {
    topic: String,
    id: MessageIdData,
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
        ack(rt, consumer, done.into_values().map(|m| (m.topic, m.id)));
    }
}

/// Ack the entries of `messages` (topic, id), in one `block_on`.
fn ack(rt: &tokio::runtime::Runtime, consumer: &mut PulsarConsumer, messages: impl IntoIterator<Item = (String, MessageIdData)>) {
    rt.block_on(async {
        for (topic, id) in messages {
            if let Err(e) = consumer.ack_with_id(&topic, entry_id(id)).await {
                tracing::warn!("pulsar: ack failed, the message will be redelivered: {e}");
            }
        }
    });
}

/// Ask the broker to send `topic` (`partition` of an exclusive or failover
/// subscription) again from its first unacked message: a single message
/// cannot be sent again there, so the whole partition is ([`order`]); the
/// message named, at `place`, is only for the form.
fn go_back(rt: &tokio::runtime::Runtime, consumer: &mut PulsarConsumer, topic: &str, partition: u32, (ledger_id, entry_id, batch_index): Place) {
    let id =
        MessageIdData { ledger_id, entry_id, partition: Some(partition as i32), batch_index: (batch_index >= 0).then_some(batch_index), ..Default::default() };
    rt.block_on(async {
        if let Err(e) = consumer.nack_with_id(topic, id).await {
            tracing::warn!("pulsar: asking for {topic} again failed ({e}); asked again if it does not come");
        }
    });
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
        let message = producer::Message { payload: payload.to_vec(), partition_key: (!key.is_empty()).then(|| key.to_string()), ..Default::default() };
        let producer = self.producer.as_mut().expect("set until dropped");
        produce(&self.rt, &self.name, producer, message, &mut self.receipts, Instant::now() + SINK_TIMEOUT)?;
        if self.receipts.len() >= 5000 {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SourceError> {
        stored(&self.rt, &self.name, std::mem::take(&mut self.receipts), Instant::now() + SINK_TIMEOUT)
    }
}
