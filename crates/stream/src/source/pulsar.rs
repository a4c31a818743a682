//! Apache Pulsar source and sink (the `pulsar` crate on a small tokio runtime
//! owned by the source).
//!
//! A message is acked only when the pipeline acks it; unacked messages are
//! redelivered by the broker to this or another consumer of the
//! subscription. The client reconnects by itself with backoff; errors are
//! logged as they happen. Partitioned topics map their partition index to
//! the pipeline's partitions.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use pulsar::consumer::InitialPosition;
use pulsar::proto::MessageIdData;
use pulsar::{ConnectionRetryOptions, Consumer, ConsumerOptions, Producer, Pulsar, SubType, TokioExecutor};

use super::config::{BrokerOptions, BrokerUrl, StartAt, COMMON_PARAMS};
use super::{Ack, Message, Sink, Source, SourceContext, SourceError, SourceEvent, LAG_EVERY};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(100);
const MAX_BATCH: usize = 2000;
/// `--until-end` with nothing left: stop after this long without a message.
const IDLE_END: Duration = Duration::from_secs(3);

fn runtime() -> Result<tokio::runtime::Runtime, SourceError> {
    tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().map_err(SourceError::Io)
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

pub struct PulsarSource {
    url: BrokerUrl,
    options: BrokerOptions,
    rt: tokio::runtime::Runtime,
    /// Always `Some` until dropped (inside the runtime, as the client needs).
    consumer: Option<Consumer<Vec<u8>, TokioExecutor>>,
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
        let mut consumer: Consumer<Vec<u8>, TokioExecutor> = rt
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
            rt.block_on(consumer.seek(None, None, Some(ms as u64), client.clone()))
                .map_err(|e| SourceError::Broker(format!("seeking {topic} to {ms}: {e}")))?;
        }
        Ok(PulsarSource { url, options, rt, consumer: Some(consumer) })
    }
}

impl Source for PulsarSource {
    fn name(&self) -> String {
        format!("pulsar://{}/{}", self.url.hosts, self.url.path)
    }

    fn acknowledges(&self) -> bool {
        true
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
        // Per partition: offset -> (topic, id), until acked.
        let mut unacked: HashMap<u32, BTreeMap<u64, (String, MessageIdData)>> = HashMap::new();
        let mut acked_below: HashMap<u32, u64> = HashMap::new();
        let mut consumer = self.consumer.take().expect("set in new");
        if self.options.until_end {
            if let Ok(stats) = self.rt.block_on(consumer.get_stats()) {
                let backlog: u64 = stats.iter().filter_map(|s| s.msg_backlog).sum();
                ctx.progress.total.store(backlog, Ordering::Relaxed);
            }
        }
        let last_ids =
            if self.options.until_end { self.rt.block_on(consumer.get_last_message_id()).map_err(|e| SourceError::Broker(e.to_string()))? } else { Vec::new() };
        // Partition -> (ledger, entry) of the last message at start.
        let ends: HashMap<u32, (u64, u64)> = last_ids
            .iter()
            .filter(|id| id.ledger_id != u64::MAX && id.entry_id != u64::MAX)
            .map(|id| (id.partition.unwrap_or(0).max(0) as u32, (id.ledger_id, id.entry_id)))
            .collect();
        let result = self.consume(&ctx, &mut consumer, &ends, &mut unacked, &mut acked_below);
        ctx.finish(|ack| record_ack(&mut acked_below, ack));
        ack_below(&self.rt, &mut consumer, &mut unacked, &acked_below);
        let _ = self.rt.block_on(consumer.close());
        let _inside = self.rt.enter();
        drop(consumer);
        result
    }
}

impl PulsarSource {
    fn consume(
        &self,
        ctx: &SourceContext,
        consumer: &mut Consumer<Vec<u8>, TokioExecutor>,
        ends: &HashMap<u32, (u64, u64)>,
        unacked: &mut HashMap<u32, BTreeMap<u64, (String, MessageIdData)>>,
        acked_below: &mut HashMap<u32, u64>,
    ) -> Result<(), SourceError> {
        let mut next_offset: HashMap<u32, u64> = HashMap::new();
        let mut reached: HashMap<u32, bool> = ends.keys().map(|&p| (p, false)).collect();
        let mut last_message = Instant::now();
        let mut last_lag: Option<Instant> = None;
        loop {
            for ack in ctx.acks.try_iter() {
                record_ack(acked_below, ack);
            }
            if last_lag.is_none_or(|t| t.elapsed() >= LAG_EVERY) {
                if let Ok(stats) = self.rt.block_on(consumer.get_stats()) {
                    ctx.progress.lag.store(stats.iter().filter_map(|s| s.msg_backlog).sum(), Ordering::Relaxed);
                }
                last_lag = Some(Instant::now());
            }
            ack_below(&self.rt, consumer, unacked, acked_below);
            if ctx.stopped() {
                return Ok(());
            }
            let mut batch: BTreeMap<u32, Vec<Message>> = BTreeMap::new();
            let mut count = 0;
            let deadline = Instant::now() + POLL;
            while count < MAX_BATCH {
                let wait = if count == 0 { deadline.saturating_duration_since(Instant::now()) } else { Duration::ZERO };
                let next = self.rt.block_on(async { tokio::time::timeout(wait, consumer.next()).await });
                let msg = match next {
                    Err(_) => break,
                    Ok(None) => return Err(SourceError::Broker(format!("{} closed the consumer", self.url.hosts))),
                    Ok(Some(Err(e))) => {
                        tracing::warn!("pulsar {}: {e}; the client reconnects with backoff", self.url.hosts);
                        ctx.progress.broker_errors.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    Ok(Some(Ok(m))) => m,
                };
                let id = msg.message_id().clone();
                let partition = id.partition.unwrap_or(0).max(0) as u32;
                if let Some(end) = ends.get(&partition) {
                    if (id.ledger_id, id.entry_id) >= *end {
                        reached.insert(partition, true);
                    }
                }
                let offset = next_offset.entry(partition).or_default();
                let this = *offset;
                *offset += 1;
                unacked.entry(partition).or_default().insert(this, (msg.topic.clone(), id.clone()));
                let meta = &msg.payload.metadata;
                batch.entry(partition).or_default().push(Message {
                    offset: this,
                    id: Some(Arc::from(id_text(&id))),
                    key: meta.partition_key.as_ref().map(|k| k.as_bytes().to_vec()),
                    timestamp_ms: Some(meta.event_time.unwrap_or(meta.publish_time) as i64),
                    headers: meta.properties.iter().map(|kv| (kv.key.clone(), kv.value.as_bytes().to_vec())).collect(),
                    payload: msg.payload.data,
                    fault: None,
                });
                count += 1;
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
}

/// Raise the partition's acked bound to `ack`'s.
fn record_ack(acked_below: &mut HashMap<u32, u64>, ack: Ack) {
    let below = acked_below.entry(ack.partition).or_default();
    *below = (*below).max(ack.below);
}

fn ack_below(
    rt: &tokio::runtime::Runtime,
    consumer: &mut Consumer<Vec<u8>, TokioExecutor>,
    unacked: &mut HashMap<u32, BTreeMap<u64, (String, MessageIdData)>>,
    acked_below: &HashMap<u32, u64>,
) {
    for (partition, pending) in unacked.iter_mut() {
        let Some(&below) = acked_below.get(partition) else { continue };
        let rest = pending.split_off(&below);
        let done = std::mem::replace(pending, rest);
        rt.block_on(async {
            for (topic, id) in done.into_values() {
                if let Err(e) = consumer.ack_with_id(&topic, id).await {
                    tracing::warn!("pulsar: ack failed, the message will be redelivered: {e}");
                }
            }
        });
    }
}

/// Produces to a topic.
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
        let producer = rt.block_on(client.producer().with_topic(&topic).build()).map_err(|e| SourceError::Broker(format!("producer for {topic}: {e}")))?;
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
        if self.receipts.len() >= 500 {
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
