//! Kafka source and sink (rdkafka on a bundled librdkafka).
//!
//! The consumer joins a group with auto-commit off and commits a partition's
//! offset only when the pipeline acks it. A revoked partition is reported to
//! the pipeline, which drops its open windows; acks for partitions no longer
//! owned are not committed. librdkafka reconnects by itself with backoff;
//! its errors are logged as they happen, and a partition it stops fetching
//! while records wait is sought again ([`StallWatch`]). Messages are taken
//! a batch at a time from a queue the partitions are forwarded to
//! ([`batch_queue`]), not one `poll` each.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use crossbeam_channel::Receiver;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{Client, ClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, RebalanceProtocol};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Headers, Message as _};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{Offset, TopicPartitionList};

use super::config::{BrokerOptions, BrokerUrl, StartAt, COMMON_PARAMS};
use super::{
    Ack, CheckpointHome, Message, ResumePosition, Sink, Source, SourceContext, SourceError, SourceEvent, StateTable, LAG_EVERY, STATE_TABLE_KEPT,
    STATE_VALUE_MAX,
};

mod batch_queue;

use batch_queue::BatchQueue;

/// How long to wait for the broker at start before giving up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(100);
/// How long the source waits for messages when none are there; then it
/// looks at the consumer's own queue again (a rebalance waits at most this).
const IDLE_WAIT: Duration = Duration::from_millis(10);
/// How long a consumer-lag measurement may wait for the broker.
const LAG_TIMEOUT: Duration = Duration::from_millis(500);
/// Messages handed to the pipeline at once, at most.
const MAX_BATCH: usize = 2000;
/// Bytes of payloads and keys copied out of librdkafka into one allocation,
/// which the messages then share (freed with the last of them); past it,
/// the `bytes` crate allocates further buffers of its own size.
const BATCH_BYTES: usize = 256 << 10;
/// librdkafka consumer settings unless the pipeline's own say otherwise.
/// Its default waits a whole second (`fetch.queue.backoff.ms`) whenever its
/// queue of prefetched messages is full, and a queue the pipeline drains in a
/// fraction of that leaves both cores idle half the time (1M messages:
/// 184k records/s with it, 270k-470k without, as busy as the machine was);
/// 20k prefetched messages, not 100k, are plenty and cost 40 MiB less.
pub const CONSUMER_DEFAULTS: [(&str, &str); 2] = [("fetch.queue.backoff.ms", "10"), ("queued.min.messages", "20000")];
/// librdkafka settings of every client (consumer, producers, the checkpoint
/// table's) unless the pipeline's own say otherwise. Since librdkafka 2.10 a
/// client drops its bootstrap broker once metadata names the cluster's
/// brokers, and the requests still waiting on it are sent again after a
/// retry backoff: with connections made only when needed (its default),
/// each client's first requests waited ~50 ms, the source's consumer and
/// the checkpoint table's one after the other (a run's first record came
/// ~270 ms after the process started, now ~170 ms). The cost: each client
/// keeps a connection to every broker of the cluster. (librdkafka leaves the
/// property out of its documented list: a version without it would refuse
/// every client, and every Kafka test would say so.)
pub const CLIENT_DEFAULTS: [(&str, &str); 1] = [("enable.sparse.connections", "false")];
/// How long a partition may give nothing while records wait before it is
/// sought to where reading resumes (see [`StallWatch`]).
const STALL_AFTER: Duration = Duration::from_secs(20);

/// Partitions with records waiting that give none. librdkafka can leave an
/// assigned partition unfetched after a broker restart (its issue 5153, open
/// in 2.12): the consumer stays in the group, polls, and reads nothing until
/// restarted. A partition stalled for [`STALL_AFTER`] is sought to where its
/// reading resumes, which starts its fetcher again; once per offset, as the
/// last offsets of a transactional topic are markers no message comes from.
#[derive(Default)]
struct StallWatch {
    /// Partition -> since when it has had records waiting and given none.
    since: HashMap<u32, Instant>,
    /// Partition -> the offset it was last sought to.
    sought: HashMap<u32, i64>,
    /// Partition -> its committed offset when assigned (`None`: nothing
    /// committed), for partitions not read since: asked once per assignment.
    committed: HashMap<u32, Option<i64>>,
}

impl StallWatch {
    /// Note whether `partition`, resuming at `from`, is `stuck` (records
    /// wait, none came since the last look) at `now`: true when it has been
    /// for `after` and was not sought to `from` already.
    fn look(&mut self, partition: u32, from: i64, stuck: bool, now: Instant, after: Duration) -> bool {
        if !stuck {
            self.since.remove(&partition);
            return false;
        }
        let since = *self.since.entry(partition).or_insert(now);
        now.duration_since(since) >= after && self.sought.get(&partition) != Some(&from)
    }

    /// `partition` was sought to `from`: its clock starts again.
    fn sought(&mut self, partition: u32, from: i64, now: Instant) {
        self.since.insert(partition, now);
        self.sought.insert(partition, from);
    }

    /// Forget partitions no longer assigned.
    fn keep(&mut self, assigned: &HashSet<u32>) {
        self.since.retain(|p, _| assigned.contains(p));
        self.sought.retain(|p, _| assigned.contains(p));
        self.committed.retain(|p, _| assigned.contains(p));
    }

    /// Forget a revoked partition, even if it is assigned again at once.
    fn forget(&mut self, partition: u32) {
        self.since.remove(&partition);
        self.sought.remove(&partition);
        self.committed.remove(&partition);
    }
}

/// Rebalances and errors seen by librdkafka's callbacks, and the acks not
/// yet committed, which a revocation commits before it lets partitions go.
struct GroupEvents {
    hosts: String,
    topic: String,
    revoked: Mutex<Vec<u32>>,
    /// The current assignment, once the group gave one.
    assigned: Mutex<Option<HashSet<u32>>>,
    errors: AtomicU64,
    /// The last authentication or TLS failure librdkafka reported: why a
    /// start that gets no metadata failed (its own error says only "transport").
    refused: Mutex<Option<String>>,
    /// Partition -> offset acked by the pipeline, not yet committed.
    uncommitted: Mutex<HashMap<u32, u64>>,
    /// The pipeline's acks, once the source runs.
    acks: Mutex<Option<Receiver<Ack>>>,
    /// Where the assigned partitions' messages go (taken out before the
    /// consumer is dropped: it must go first).
    batch: Mutex<Option<Arc<BatchQueue>>>,
}

impl GroupEvents {
    /// Keep `ack` for the next commit if its partition is still owned.
    fn record_ack(&self, ack: Ack) {
        let owned = self.assigned.lock().unwrap_or_else(|p| p.into_inner()).as_ref().is_some_and(|s| s.contains(&ack.partition));
        if owned {
            self.uncommitted.lock().unwrap_or_else(|p| p.into_inner()).insert(ack.partition, ack.below);
        }
    }

    /// Move the acks that have arrived into `uncommitted`.
    fn take_acks(&self) {
        let acks = self.acks.lock().unwrap_or_else(|p| p.into_inner());
        for ack in acks.iter().flat_map(|a| a.try_iter()) {
            self.record_ack(ack);
        }
    }

    /// The uncommitted offsets of `partitions` (all if `None`), taken out.
    fn take_uncommitted(&self, partitions: Option<&[u32]>) -> TopicPartitionList {
        let mut uncommitted = self.uncommitted.lock().unwrap_or_else(|p| p.into_inner());
        let mut list = TopicPartitionList::new();
        let chosen: Vec<u32> = match partitions {
            Some(ps) => ps.iter().copied().filter(|p| uncommitted.contains_key(p)).collect(),
            None => uncommitted.keys().copied().collect(),
        };
        for p in chosen {
            let offset = uncommitted.remove(&p).expect("chosen from the map");
            let _ = list.add_partition_offset(&self.topic, p as i32, Offset::Offset(offset as i64));
        }
        list
    }
}

impl ClientContext for GroupEvents {
    fn error(&self, error: KafkaError, reason: &str) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if matches!(error.rdkafka_error_code(), Some(RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed | RDKafkaErrorCode::SSL)) {
            *self.refused.lock().unwrap_or_else(|p| p.into_inner()) = Some(format!("{error} ({reason})"));
        }
        tracing::warn!("kafka {}: {error} ({reason}); librdkafka retries with backoff", self.hosts);
    }
}

impl ConsumerContext for GroupEvents {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let parts = match rebalance {
            Rebalance::Revoke(list) => partitions(list),
            Rebalance::Assign(list) => {
                // Before the assignment starts their fetchers (see batch_queue).
                if let Some(batch) = self.batch.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                    let refused = batch.take_in(&self.topic, &partitions(list));
                    if !refused.is_empty() {
                        tracing::warn!("kafka {}: partitions {refused:?} are read one message at a time (librdkafka has no queue of theirs)", self.hosts);
                    }
                }
                return;
            }
            // After a failed rebalance rdkafka unassigns everything under the
            // eager protocol (librdkafka 2.12 reports none, but the API allows
            // it); under the cooperative one only partitions it does not name.
            Rebalance::Error(e) if matches!(consumer.rebalance_protocol(), RebalanceProtocol::Eager) => {
                tracing::warn!("kafka {}: rebalance failed ({e}); every partition is given up and assigned again", self.hosts);
                self.assigned.lock().unwrap_or_else(|p| p.into_inner()).iter().flatten().copied().collect()
            }
            Rebalance::Error(e) => {
                tracing::warn!("kafka {}: rebalance failed ({e})", self.hosts);
                return;
            }
        };
        self.take_acks();
        let done = self.take_uncommitted(Some(&parts));
        // What was analysed is committed before the partitions go, unless the
        // group already moved on without us (a lost assignment cannot commit).
        if matches!(rebalance, Rebalance::Revoke(_)) && done.count() > 0 && !consumer.assignment_lost() {
            if let Err(e) = consumer.commit(&done, CommitMode::Sync) {
                tracing::warn!("kafka {}: commit before revocation failed, the new owner reads those records again: {e}", self.hosts);
            }
        }
        tracing::info!("kafka {}: partitions {parts:?} revoked", self.hosts);
        let mut assigned = self.assigned.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(set) = assigned.as_mut() {
            parts.iter().for_each(|p| {
                set.remove(p);
            });
        }
        self.revoked.lock().unwrap_or_else(|p| p.into_inner()).extend(parts);
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            let parts = partitions(list);
            tracing::info!("kafka {}: partitions {parts:?} assigned", self.hosts);
            let mut assigned = self.assigned.lock().unwrap_or_else(|p| p.into_inner());
            assigned.get_or_insert_with(HashSet::new).extend(parts);
        }
    }
}

fn partitions(list: &TopicPartitionList) -> Vec<u32> {
    list.elements().iter().map(|e| e.partition() as u32).collect()
}

/// The client settings for `hosts`: the pipeline's librdkafka properties,
/// each value possibly `env:VAR` (a SASL password from a Kubernetes Secret).
fn client_config(hosts: &str, options: &BrokerOptions) -> Result<ClientConfig, SourceError> {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", hosts).set("client.id", "clean-host");
    for (key, value) in CLIENT_DEFAULTS.iter().filter(|(k, _)| !options.kafka.contains_key(*k)) {
        config.set(*key, *value);
    }
    for (k, v) in &options.kafka {
        let value = clean_host_core::secret::resolve(v, &format!("kafka property {k}"))
            .map_err(|message| SourceError::Config { spec: format!("kafka://{hosts}"), message })?;
        config.set(k, value);
    }
    Ok(config)
}

fn unreachable(hosts: &str, why: impl std::fmt::Display) -> SourceError {
    SourceError::Unreachable { address: hosts.to_string(), message: why.to_string() }
}

pub struct KafkaSource {
    url: BrokerUrl,
    options: BrokerOptions,
    topic: String,
    consumer: BaseConsumer<GroupEvents>,
    /// Partition -> (low, high) watermarks seen at start.
    watermarks: BTreeMap<u32, (i64, i64)>,
    /// Where the run was asked to start.
    start: StartAt,
}

/// A group's reading of the topic `url` names.
fn reader(url: &BrokerUrl, options: &BrokerOptions) -> String {
    format!("kafka://{}/{}?group={}", url.hosts, url.path, options.group())
}

/// See [`super::checkpoint_home`].
pub(super) fn checkpoint_home(url: &BrokerUrl, options: &BrokerOptions) -> Result<Option<CheckpointHome>, SourceError> {
    let table = KafkaTable::new(&url.hosts, options.state_table(), options)?;
    Ok(Some(CheckpointHome { id: reader(url, options), table: Box::new(table) }))
}

impl KafkaSource {
    pub fn new(url: BrokerUrl, table: &BrokerOptions) -> Result<Self, SourceError> {
        let mut known = vec!["group"];
        known.extend_from_slice(COMMON_PARAMS);
        url.check_query(&known)?;
        let options = table.merged(&url)?;
        let start = options.start_at(&url)?;
        let topic = url.path.clone();
        let events = GroupEvents {
            hosts: url.hosts.clone(),
            topic: topic.clone(),
            revoked: Mutex::default(),
            assigned: Mutex::default(),
            errors: AtomicU64::new(0),
            refused: Mutex::default(),
            uncommitted: Mutex::default(),
            acks: Mutex::default(),
            batch: Mutex::default(),
        };
        let mut config = client_config(&url.hosts, &options)?;
        for (key, value) in CONSUMER_DEFAULTS.iter().filter(|(k, _)| !options.kafka.contains_key(*k)) {
            config.set(*key, *value);
        }
        let consumer: BaseConsumer<GroupEvents> = config
            .set("group.id", options.group())
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", if start == StartAt::Latest { "latest" } else { "earliest" })
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000")
            .create_with_context(events)
            .map_err(|e| url.error(format!("bad Kafka settings: {e}")))?;
        let metadata = consumer.fetch_metadata(Some(&topic), CONNECT_TIMEOUT).map_err(|e| {
            // The error events waiting say why: serving them calls `GroupEvents::error`
            // (nothing is subscribed yet, so no message is taken).
            for _ in 0..64 {
                let _ = consumer.poll(Duration::ZERO);
            }
            let refused = consumer.context().refused.lock().unwrap_or_else(|p| p.into_inner()).take();
            unreachable(&url.hosts, refused.unwrap_or_else(|| e.to_string()))
        })?;
        let found = metadata.topics().iter().find(|t| t.name() == topic);
        let parts: Vec<i32> = match found {
            Some(t) if t.error().is_none() && !t.partitions().is_empty() => t.partitions().iter().map(|p| p.id()).collect(),
            _ => return Err(SourceError::Broker(format!("topic '{topic}' does not exist on {}", url.hosts))),
        };
        let mut watermarks = BTreeMap::new();
        for p in &parts {
            let marks = consumer.fetch_watermarks(&topic, *p, CONNECT_TIMEOUT).map_err(|e| unreachable(&url.hosts, e))?;
            watermarks.insert(*p as u32, marks);
        }
        // Last: from here on the source's drop destroys the queue before the consumer.
        // SAFETY: the consumer outlives the queue: KafkaSource's drop takes it first.
        let batch = unsafe { BatchQueue::new(consumer.client().native_ptr()) }.ok_or_else(|| SourceError::Broker("librdkafka gave no queue".into()))?;
        *consumer.context().batch.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(batch));
        let source = KafkaSource { url, options, topic, consumer, watermarks, start };
        source.replay_from(start, &parts)?;
        Ok(source)
    }

    /// A start at an offset or a time moves the group's committed offsets there.
    fn replay_from(&self, start: StartAt, parts: &[i32]) -> Result<(), SourceError> {
        let mut list = TopicPartitionList::new();
        match start {
            StartAt::Earliest | StartAt::Latest => return Ok(()),
            StartAt::Offset(o) => {
                for p in parts {
                    list.add_partition_offset(&self.topic, *p, Offset::Offset(o as i64)).map_err(|e| SourceError::Broker(e.to_string()))?;
                }
            }
            StartAt::Time(ms) => {
                for p in parts {
                    list.add_partition_offset(&self.topic, *p, Offset::Offset(ms)).map_err(|e| SourceError::Broker(e.to_string()))?;
                }
                list = self.consumer.offsets_for_times(list, CONNECT_TIMEOUT).map_err(|e| unreachable(&self.url.hosts, e))?;
                // A time past a partition's last message resolves to its end.
                for e in list.clone().elements() {
                    if e.offset() == Offset::End {
                        let high = self.watermarks.get(&(e.partition() as u32)).map_or(0, |w| w.1);
                        list.set_partition_offset(&self.topic, e.partition(), Offset::Offset(high)).map_err(|e| SourceError::Broker(e.to_string()))?;
                    }
                }
            }
        }
        self.consumer
            .commit(&list, CommitMode::Sync)
            .map_err(|e| SourceError::Broker(format!("cannot move group '{}' to the replay start: {e} (is another member running?)", self.options.group())))
    }

    /// Commit every acked offset of the partitions still owned.
    /// Where reading `partition` started once it was assigned: its committed
    /// offset, or `first` (the first message read) without one. A gap
    /// between the two (transaction markers, compaction) is not a record.
    fn start_of(&self, partition: u32, first: u64) -> u64 {
        let mut list = TopicPartitionList::new();
        list.add_partition(&self.topic, partition as i32);
        let committed = self.consumer.committed_offsets(list, CONNECT_TIMEOUT).ok().and_then(|list| {
            let element = list.elements_for_topic(&self.topic).into_iter().next()?;
            element.offset().to_raw().filter(|&o| o >= 0)
        });
        committed.map_or(first, |c| (c as u64).min(first))
    }

    fn commit(&self, mode: CommitMode) {
        let events = self.consumer.context();
        events.take_acks();
        let list = events.take_uncommitted(None);
        if list.count() == 0 {
            return;
        }
        if let Err(e) = self.consumer.commit(&list, mode) {
            tracing::warn!("kafka {}: commit failed, those records will be read again: {e}", self.url.hosts);
        }
    }

    /// Measure the lag of the assigned partitions (the records after where
    /// each resumes: the next offset read, else the committed one) and seek
    /// the ones that stalled. `fed`: partitions that gave messages since the
    /// last call.
    fn measure_lag_and_unstick(&self, next: &HashMap<u32, i64>, fed: &HashSet<u32>, stalls: &mut StallWatch) -> u64 {
        let assigned = self.consumer.context().assigned.lock().unwrap_or_else(|p| p.into_inner()).clone().unwrap_or_default();
        stalls.keep(&assigned);
        if assigned.iter().any(|p| !next.contains_key(p) && !stalls.committed.contains_key(p)) {
            if let Ok(list) = self.consumer.committed(LAG_TIMEOUT) {
                for e in list.elements_for_topic(&self.topic) {
                    stalls.committed.insert(e.partition() as u32, e.offset().to_raw().filter(|o| *o >= 0));
                }
            }
        }
        let now = Instant::now();
        let mut lag = 0;
        for &p in &assigned {
            let resume = next.get(&p).copied().or_else(|| stalls.committed.get(&p).copied().flatten());
            // A partition that does not answer is left out.
            let (Some(from), Ok((_, high))) = (resume, self.consumer.fetch_watermarks(&self.topic, p as i32, LAG_TIMEOUT)) else {
                continue;
            };
            let waiting = (high - from).max(0);
            lag += waiting as u64;
            if stalls.look(p, from, waiting > 0 && !fed.contains(&p), now, STALL_AFTER) {
                tracing::warn!(
                    "kafka {}: partition {p} gave nothing for {}s with {waiting} records waiting; reading it again from offset {from}",
                    self.url.hosts,
                    STALL_AFTER.as_secs()
                );
                // Forwarded again first (see batch_queue); a failed seek is tried again at the next look.
                if let Some(batch) = self.consumer.context().batch.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                    batch.take_in(&self.topic, &[p]);
                }
                match self.consumer.seek(&self.topic, p as i32, Offset::Offset(from), LAG_TIMEOUT) {
                    Ok(()) => stalls.sought(p, from, now),
                    Err(e) => tracing::warn!("kafka {}: seeking partition {p} to {from} failed: {e}", self.url.hosts),
                }
            }
        }
        lag
    }

    /// `--until-end`, from what was read alone: every assigned partition's
    /// next offset has reached its end offset seen at start. Never while a
    /// revocation waits to be handed on (the partitions of the next
    /// assignment are not known yet, and `next` may hold revoked ones).
    fn read_to_end(&self, next: &HashMap<u32, i64>) -> bool {
        let context = self.consumer.context();
        if !context.revoked.lock().unwrap_or_else(|p| p.into_inner()).is_empty() {
            return false;
        }
        let assigned = context.assigned.lock().unwrap_or_else(|p| p.into_inner());
        assigned.as_ref().is_some_and(|assigned| !assigned.is_empty() && assigned.iter().all(|&p| self.ended(p, [next.get(&p).copied()])))
    }

    /// `--until-end`, once nothing more came: as [`Self::read_to_end`], or
    /// the consumer's positions or the group's commits say so (asks the broker).
    fn at_end(&self, next: &HashMap<u32, i64>) -> bool {
        let assigned = self.consumer.context().assigned.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let Some(assigned) = assigned else { return false };
        let positions = self.consumer.position().ok();
        let committed = self.consumer.committed(CONNECT_TIMEOUT).ok();
        let offset_in =
            |list: &Option<TopicPartitionList>, p: u32| list.as_ref().and_then(|l| l.find_partition(&self.topic, p as i32)).and_then(|e| e.offset().to_raw());
        assigned.iter().all(|&p| self.ended(p, [next.get(&p).copied(), offset_in(&positions, p), offset_in(&committed, p)]))
    }

    /// Whether `partition` was empty at start, or any of `offsets` (where
    /// reading goes on) has reached its end offset seen at start.
    fn ended(&self, partition: u32, offsets: impl IntoIterator<Item = Option<i64>>) -> bool {
        let (low, high) = self.watermarks.get(&partition).copied().unwrap_or((0, 0));
        low >= high || offsets.into_iter().flatten().any(|o| o >= high)
    }
}

impl Source for KafkaSource {
    fn name(&self) -> String {
        format!("kafka://{}/{}", self.url.hosts, self.topic)
    }

    fn acknowledges(&self) -> bool {
        true
    }

    fn reader(&self) -> String {
        reader(&self.url, &self.options)
    }

    fn checkpoint_id(&self) -> Option<String> {
        Some(self.reader())
    }

    /// Partitions move between the members of a group: each carries on from
    /// its own checkpoint when it arrives ([`Source::partitions_move`]).
    fn partitions_move(&self) -> bool {
        true
    }

    /// Nothing is moved: the group reads on from its commits, which follow
    /// the checkpoints, and each partition skips what its checkpoint covers
    /// as it arrives. False when the positions cannot be this topic's: the
    /// run starts at an offset or a time, or a partition no longer exists or
    /// never held that many records (the topic was made again).
    fn resume_at(&mut self, positions: &BTreeMap<u32, ResumePosition>) -> Result<bool, SourceError> {
        if matches!(self.start, StartAt::Offset(_) | StartAt::Time(_)) {
            return Ok(false);
        }
        // As the topic stands now: hosts of the group may have read on since the start.
        Ok(positions
            .iter()
            .all(|(&p, at)| self.consumer.fetch_watermarks(&self.topic, p as i32, CONNECT_TIMEOUT).is_ok_and(|(_, high)| at.next_offset as i64 <= high)))
    }

    fn dead_letter_sink(&self) -> Result<Option<Box<dyn Sink>>, SourceError> {
        let topic = self.options.dead_letter_topic.clone().unwrap_or_else(|| format!("{}-dead-letters", self.topic));
        Ok(Some(Box::new(KafkaSink::new(&self.url.hosts, &topic, &self.options)?)))
    }

    fn state_table(&self) -> Result<Option<Box<dyn StateTable>>, SourceError> {
        Ok(Some(Box::new(KafkaTable::new(&self.url.hosts, self.options.state_table(), &self.options)?)))
    }

    fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), SourceError> {
        self.consumer.subscribe(&[&self.topic]).map_err(|e| SourceError::Broker(format!("subscribing to {}: {e}", self.topic)))?;
        if self.options.until_end {
            let total: i64 = self.watermarks.values().map(|(l, h)| h - l).sum();
            ctx.progress.total.store(total.max(0) as u64, Ordering::Relaxed);
        }
        let headers = self.options.metadata.contains(&super::config::MetadataColumn::Headers);
        let mut next: HashMap<u32, i64> = HashMap::new();
        *self.consumer.context().acks.lock().unwrap_or_else(|p| p.into_inner()) = Some(ctx.acks.clone());
        let mut last_commit = Instant::now();
        let mut last_lag: Option<Instant> = None;
        let (mut fed, mut stalls) = (HashSet::new(), StallWatch::default());
        let queue = self.consumer.context().batch.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut last_end_check: Option<Instant> = None;
        loop {
            if last_commit.elapsed() >= Duration::from_millis(200) {
                self.commit(CommitMode::Async);
                last_commit = Instant::now();
            }
            let errors = self.consumer.context().errors.swap(0, Ordering::Relaxed);
            ctx.progress.broker_errors.fetch_add(errors, Ordering::Relaxed);
            if ctx.stopped() {
                break;
            }
            // Before the lag: a partition revoked and assigned again resumes
            // from its committed offset, not from where it was read to.
            let revoked = std::mem::take(&mut *self.consumer.context().revoked.lock().unwrap_or_else(|p| p.into_inner()));
            if !revoked.is_empty() {
                revoked.iter().for_each(|p| {
                    next.remove(p);
                    fed.remove(p);
                    stalls.forget(*p);
                });
                if ctx.events.send(SourceEvent::Revoked { partitions: revoked }).is_err() {
                    break;
                }
            }
            if last_lag.is_none_or(|t| t.elapsed() >= LAG_EVERY) {
                let lag = self.measure_lag_and_unstick(&next, &fed, &mut stalls);
                ctx.progress.lag.store(lag, Ordering::Relaxed);
                fed.clear();
                last_lag = Some(Instant::now());
            }
            let mut batch: BTreeMap<u32, Vec<Message>> = BTreeMap::new();
            // Partitions read for the first time since they were assigned.
            let mut arrived = Vec::new();
            let mut count = 0;
            // Allocated when the first message comes: an idle loop turns 100 times a second.
            let mut copied = BytesMut::new();
            let mut copy = |bytes: &[u8]| {
                if copied.capacity() == 0 {
                    copied.reserve(BATCH_BYTES);
                }
                copied.extend_from_slice(bytes);
                copied.split().freeze()
            };
            // The consumer's own queue first: rebalances, commits, errors, and
            // the messages of a partition not forwarded to the batch queue.
            while count < MAX_BATCH {
                match self.consumer.poll(Duration::ZERO) {
                    None => break,
                    Some(Err(e)) => {
                        tracing::warn!("kafka {}: {e}", self.url.hosts);
                        break;
                    }
                    Some(Ok(m)) => {
                        batch.entry(m.partition() as u32).or_default().push(Message {
                            offset: m.offset() as u64,
                            id: None,
                            payload: copy(m.payload().unwrap_or_default()),
                            key: m.key().map(&mut copy),
                            timestamp_ms: m.timestamp().to_millis(),
                            headers: match headers.then(|| m.headers()).flatten() {
                                Some(h) => h.iter().map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec())).collect(),
                                None => Vec::new(),
                            },
                            fault: None,
                        });
                        count += 1;
                    }
                }
            }
            if let Some(queue) = &queue {
                let wait = if count == 0 { IDLE_WAIT } else { Duration::ZERO };
                for m in queue.take(wait, MAX_BATCH - count) {
                    if let Some(e) = m.error() {
                        tracing::warn!("kafka {}: partition {}: {e}", self.url.hosts, m.partition());
                        continue;
                    }
                    batch.entry(m.partition()).or_default().push(Message {
                        offset: m.offset(),
                        id: None,
                        payload: copy(m.payload()),
                        key: m.key().map(&mut copy),
                        timestamp_ms: m.timestamp_ms(),
                        // Asked of librdkafka only when they are read: that costs a call a message.
                        headers: if headers { m.headers() } else { Vec::new() },
                        fault: None,
                    });
                    count += 1;
                }
            }
            // Per partition of the batch, not per message: its first and next offsets.
            for (&partition, messages) in &batch {
                let (first, last) = (messages[0].offset, messages[messages.len() - 1].offset);
                if next.insert(partition, last as i64 + 1).is_none() {
                    arrived.push((partition, first));
                }
                fed.insert(partition);
            }
            ctx.progress.done.fetch_add(count as u64, Ordering::Relaxed);
            let arrivals = arrived.into_iter().map(|(partition, first)| SourceEvent::Arrived { partition, from: Some(self.start_of(partition, first)) });
            let messages = batch.into_iter().map(|(partition, messages)| SourceEvent::Messages { partition, messages });
            if arrivals.chain(messages).any(|event| ctx.events.send(event).is_err()) {
                break;
            }
            // Read to the end already, or nothing came and the broker says so:
            // no empty poll's wait at the end of every run.
            // The broker is asked at most every POLL while idle.
            if self.options.until_end && count == 0 && last_end_check.is_none_or(|t| t.elapsed() >= POLL) {
                last_end_check = Some(Instant::now());
                if self.at_end(&next) {
                    break;
                }
            }
            if self.options.until_end && self.read_to_end(&next) {
                break;
            }
        }
        // Commit what the pipeline finishes after reading stopped.
        ctx.finish(|ack| self.consumer.context().record_ack(ack));
        self.commit(CommitMode::Sync);
        self.consumer.unsubscribe();
        self.close();
        Ok(())
    }
}

impl KafkaSource {
    /// Leave the group and close the consumer, polling every few ms: its
    /// drop would do the same polling 100 ms at a time, and the close posts
    /// nothing that ends such a poll early (every run's exit waited ~0.1 s).
    /// The drop's own close then fails as already done, which rust-rdkafka
    /// logs through the `log` crate, a logger this host does not install.
    fn close(&self) {
        if self.consumer.close_queue().is_err() {
            return; // the drop tries again
        }
        let started = Instant::now();
        while !self.consumer.closed() && started.elapsed() < CONNECT_TIMEOUT {
            let _ = self.consumer.poll(Duration::from_millis(5));
        }
    }
}

/// Delivery failures reported by librdkafka.
#[derive(Default)]
struct Deliveries {
    failed: Mutex<Option<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.failed.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert_with(|| e.to_string());
        }
    }
}

/// Create `topic` unless `client`'s metadata shows it (as it is, whatever
/// its settings). Made only if missing: a host allowed to read and write a
/// topic, not to create topics, uses one made for it; and an admin client
/// waits 100 ms for its polling thread when dropped.
fn ensure_topic<C: ClientContext>(client: &Client<C>, config: &ClientConfig, hosts: &str, topic: &NewTopic<'_>) -> Result<(), SourceError> {
    let metadata = client.fetch_metadata(Some(topic.name), CONNECT_TIMEOUT).map_err(|e| unreachable(hosts, e))?;
    if metadata.topics().iter().any(|t| t.name() == topic.name && t.error().is_none() && !t.partitions().is_empty()) {
        return Ok(());
    }
    let admin: AdminClient<_> = config.create().map_err(|e| unreachable(hosts, e))?;
    let opts = AdminOptions::new().operation_timeout(Some(CONNECT_TIMEOUT)).request_timeout(Some(CONNECT_TIMEOUT));
    let created = futures::executor::block_on(admin.create_topics([topic], &opts)).map_err(|e| unreachable(hosts, e))?;
    for result in created {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, code)) => return Err(SourceError::Broker(format!("cannot create topic '{t}' on {hosts}: {code}"))),
        }
    }
    Ok(())
}

/// Produces to a topic, creating it if it does not exist.
pub struct KafkaSink {
    hosts: String,
    topic: String,
    producer: BaseProducer<Deliveries>,
}

impl KafkaSink {
    pub fn new(hosts: &str, topic: &str, options: &BrokerOptions) -> Result<Self, SourceError> {
        Self::with_partitions(hosts, topic, options, 1)
    }

    /// A sink whose topic, if it must be created, gets `partitions` partitions.
    pub fn with_partitions(hosts: &str, topic: &str, options: &BrokerOptions, partitions: i32) -> Result<Self, SourceError> {
        let config = client_config(hosts, options)?;
        let producer: BaseProducer<Deliveries> = config
            .clone()
            .set("linger.ms", "5")
            // Records without a key spread over the partitions one by one: librdkafka's default
            // sticks to one partition for 10 ms, and `generate` fills a 4-partition topic in less.
            .set("sticky.partitioning.linger.ms", "0")
            .set("enable.idempotence", "true")
            // Its metadata request below must not make the topic with the broker's
            // defaults (whatever the config says); a topic deleted mid-run is not made again.
            .set("allow.auto.create.topics", "false")
            .create_with_context(Deliveries::default())
            .map_err(|e| SourceError::Broker(format!("bad Kafka producer settings: {e}")))?;
        ensure_topic(producer.client(), &config, hosts, &NewTopic::new(topic, partitions, TopicReplication::Fixed(-1)))?;
        Ok(KafkaSink { hosts: hosts.into(), topic: topic.into(), producer })
    }
}

impl Sink for KafkaSink {
    fn name(&self) -> String {
        format!("kafka://{}/{}", self.hosts, self.topic)
    }

    fn send(&mut self, key: &str, payload: &[u8]) -> Result<(), SourceError> {
        let mut record = BaseRecord::to(&self.topic).payload(payload);
        if !key.is_empty() {
            record = record.key(key);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    self.producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => return Err(SourceError::Broker(format!("producing to {}: {e}", self.name()))),
            }
        }
    }

    fn flush(&mut self) -> Result<(), SourceError> {
        self.producer.flush(Duration::from_secs(30)).map_err(|e| SourceError::Broker(format!("flushing {}: {e}", self.name())))?;
        match self.producer.context().failed.lock().unwrap_or_else(|p| p.into_inner()).take() {
            Some(e) => Err(SourceError::Broker(format!("delivery to {} failed: {e}", self.name()))),
            None => Ok(()),
        }
    }
}

/// How long reading a [`KafkaTable`] to its end may take.
const TABLE_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// A [`StateTable`] kept in one Kafka topic of one partition, compacted
/// (and records older than [`STATE_TABLE_KEPT`] deleted): a record per
/// field, keyed `TABLE NUL FIELD`, the latest one wins. Read from its start
/// once, then caught up to its end before each read, so it sees every
/// write that any host made before.
///
/// Each read assigns the partition at the next offset and unassigns it
/// after, so nothing is fetched between reads and no read depends on
/// fetcher state left by the last: pausing it between reads instead, a
/// re-assign while paused could leave librdkafka's fetcher stopped for
/// good (its fetch start dropped as older than the resume; librdkafka
/// issue 5591), and every read after ran out of time.
pub struct KafkaTable {
    hosts: String,
    topic: String,
    producer: BaseProducer<Deliveries>,
    /// Its settings, for a new one when a read made no progress.
    consumer_config: ClientConfig,
    /// Taken only when the table is dropped.
    consumer: Option<BaseConsumer>,
    /// The next offset to read.
    next: i64,
    /// The last read failed without reading anything, or its consumer
    /// kept the partition: the next one starts with a new consumer.
    stuck: bool,
    /// The latest value of each field read, of each table asked for (only
    /// those: the topic holds every stream's).
    tables: HashMap<String, HashMap<String, Vec<u8>>>,
}

impl KafkaTable {
    /// The tables in `topic` (created if it does not exist; records go to
    /// and come from its first partition, whatever else it has) on `hosts`.
    pub fn new(hosts: &str, topic: &str, options: &BrokerOptions) -> Result<Self, SourceError> {
        let config = client_config(hosts, options)?;
        // Its fetches wait briefly: a read waits for the end (the defaults cost ~400 ms).
        let consumer_config = config
            .clone()
            .set("group.id", "clean-host-state-reader")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set("fetch.wait.max.ms", "10")
            .set("fetch.error.backoff.ms", "10")
            .set("fetch.queue.backoff.ms", "10")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("fetch.max.bytes", (STATE_VALUE_MAX * 2).to_string())
            .set("receive.message.max.bytes", (STATE_VALUE_MAX * 2 + (1 << 20)).to_string())
            .to_owned();
        let consumer = table_consumer(&consumer_config)?;
        let kept = STATE_TABLE_KEPT.as_millis().to_string();
        let (max, segment) = ((STATE_VALUE_MAX + (1 << 20)).to_string(), (STATE_VALUE_MAX * 2).to_string());
        let new = NewTopic::new(topic, 1, TopicReplication::Fixed(-1))
            .set("cleanup.policy", "compact,delete")
            .set("retention.ms", &kept)
            .set("max.message.bytes", &max)
            // Compacted soon, so a host starting reads little more than the latest values.
            .set("segment.bytes", &segment)
            .set("segment.ms", "3600000")
            .set("min.cleanable.dirty.ratio", "0.2");
        ensure_topic(consumer.client(), &config, hosts, &new)?;
        let producer = config
            .clone()
            .set("linger.ms", "0")
            .set("socket.nagle.disable", "true")
            .set("enable.idempotence", "true")
            .set("message.max.bytes", (STATE_VALUE_MAX + (1 << 20)).to_string())
            .create_with_context(Deliveries::default())
            .map_err(|e| SourceError::Broker(format!("bad Kafka producer settings: {e}")))?;
        Ok(KafkaTable {
            hosts: hosts.into(),
            topic: topic.into(),
            producer,
            consumer_config,
            consumer: Some(consumer),
            next: 0,
            stuck: false,
            tables: HashMap::new(),
        })
    }

    fn consumer(&self) -> &BaseConsumer {
        self.consumer.as_ref().expect("taken only when dropped")
    }

    /// Read again from the topic's start.
    fn rewind(&mut self) {
        self.next = 0;
        self.tables.values_mut().for_each(HashMap::clear);
    }

    /// Keep `table`'s values from now on: read from the start again if it
    /// was not kept (records of it read before were passed over).
    fn want(&mut self, table: &str) {
        if !self.tables.contains_key(table) {
            self.rewind();
            self.tables.insert(table.to_string(), HashMap::new());
        }
    }

    /// Read every record written so far, its partition assigned for the read only.
    fn catch_up(&mut self) -> Result<(), SourceError> {
        let name = self.name();
        if std::mem::take(&mut self.stuck) {
            tracing::info!("{name}: the last read got nothing; reading with a new consumer");
            close_in_background(self.consumer.replace(table_consumer(&self.consumer_config)?));
        }
        let (low, end) = self.consumer().fetch_watermarks(&self.topic, 0, CONNECT_TIMEOUT).map_err(|e| unreachable(&self.hosts, e))?;
        if end < self.next {
            // The topic was made again: what was read is gone.
            self.rewind();
        }
        // What retention deleted is passed over.
        self.next = self.next.max(low);
        if self.next >= end {
            return Ok(());
        }
        let mut partition = TopicPartitionList::new();
        let assigned = partition.add_partition_offset(&self.topic, 0, Offset::Offset(self.next)).and_then(|_| self.consumer().assign(&partition));
        if let Err(e) = assigned {
            self.stuck = true;
            return Err(SourceError::Broker(format!("reading {name}: {e}")));
        }
        let from = self.next;
        let read = self.read_to(end);
        self.stuck = read.is_err() && self.next == from;
        // What was read stands; a consumer that keeps the partition is replaced before the next read.
        if let Err(e) = self.consumer().unassign() {
            tracing::warn!("{name}: {e}; the next read starts with a new consumer");
            self.stuck = true;
        }
        read
    }

    /// Read up to `end` (the offset after the last record written).
    fn read_to(&mut self, end: i64) -> Result<(), SourceError> {
        let name = self.name();
        let (started, from) = (Instant::now(), self.next);
        let mut last_error = None;
        // The consumer's position says where this read is only once it got a record:
        // before, it may still be the last read's (stopping that fetch takes a while).
        let mut got_one = false;
        while self.next < end {
            if started.elapsed() > TABLE_READ_TIMEOUT {
                let why = last_error.map_or(String::new(), |e| format!("; last: {e}"));
                let at = format!("from offset {from} to {end}, at {}", self.next);
                return Err(SourceError::Broker(format!("reading {name}: not at its end after {TABLE_READ_TIMEOUT:?} ({at}{why})")));
            }
            // The field, not `consumer()`: `self.next` is set while the message borrows it.
            match self.consumer.as_ref().expect("taken only when dropped").poll(POLL) {
                Some(Ok(m)) => {
                    (self.next, got_one) = (m.offset() + 1, true);
                    let Some((table, field)) = m.key().and_then(|k| std::str::from_utf8(k).ok()).and_then(|k| k.split_once('\0')) else {
                        continue; // not written by a host
                    };
                    let Some(fields) = self.tables.get_mut(table) else {
                        continue; // another stream's
                    };
                    match m.payload() {
                        Some(value) => fields.insert(field.to_string(), value.to_vec()),
                        None => fields.remove(field),
                    };
                }
                // librdkafka retries by itself; given up on only at the deadline.
                Some(Err(e)) => last_error = Some(e),
                // Offsets that hold no record (markers) are passed over.
                None if got_one => {
                    let position = self.consumer().position().map_err(|e| SourceError::Broker(format!("reading {name}: {e}")))?;
                    if let Some(Offset::Offset(at)) = position.find_partition(&self.topic, 0).map(|e| e.offset()) {
                        self.next = self.next.max(at.min(end));
                    }
                }
                None => {}
            }
        }
        Ok(())
    }
}

impl Drop for KafkaSource {
    fn drop(&mut self) {
        // The batch queue goes before the consumer it belongs to.
        self.consumer.context().batch.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

impl Drop for KafkaTable {
    fn drop(&mut self) {
        close_in_background(self.consumer.take());
    }
}

/// A consumer of a table's topic, assigned it (never subscribed) for each
/// read: its group is only a name librdkafka wants, never joined or committed to.
fn table_consumer(config: &ClientConfig) -> Result<BaseConsumer, SourceError> {
    config.create().map_err(|e| SourceError::Broker(format!("bad Kafka consumer settings: {e}")))
}

/// Close `consumer` on a thread of its own that a process's exit does not
/// wait for: closing polls every 100 ms until librdkafka says it is closed,
/// and a table's consumer has nothing to commit or leave.
fn close_in_background(consumer: Option<BaseConsumer>) {
    if let Some(consumer) = consumer {
        let _ = std::thread::Builder::new().name("state-table-close".into()).spawn(move || drop(consumer));
    }
}

impl StateTable for KafkaTable {
    fn name(&self) -> String {
        format!("kafka://{}/{}", self.hosts, self.topic)
    }

    fn put(&mut self, table: &str, fields: &[(String, Vec<u8>)]) -> Result<(), SourceError> {
        if let Some((_, value)) = fields.iter().find(|(_, v)| v.len() > STATE_VALUE_MAX) {
            return Err(SourceError::Broker(format!("{}: a value of {} bytes is over the {} MiB limit", self.name(), value.len(), STATE_VALUE_MAX >> 20)));
        }
        // A failure left by a put that gave up waiting is not this one's.
        self.producer.context().failed.lock().unwrap_or_else(|p| p.into_inner()).take();
        for (field, value) in fields {
            let key = format!("{table}\0{field}");
            let mut record = BaseRecord::to(&self.topic).partition(0).key(&key).payload(value);
            loop {
                match self.producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        record = r;
                        self.producer.poll(Duration::from_millis(10));
                    }
                    Err((e, _)) => return Err(SourceError::Broker(format!("producing to {}: {e}", self.name()))),
                }
            }
        }
        // Delivered once nothing is in flight (flush() looks only every 100 ms).
        let started = Instant::now();
        while self.producer.in_flight_count() > 0 {
            if started.elapsed() > TABLE_READ_TIMEOUT {
                return Err(SourceError::Broker(format!("storing in {}: not delivered after {TABLE_READ_TIMEOUT:?}", self.name())));
            }
            self.producer.poll(Duration::from_millis(1));
        }
        match self.producer.context().failed.lock().unwrap_or_else(|p| p.into_inner()).take() {
            Some(e) => Err(SourceError::Broker(format!("storing in {}: {e}", self.name()))),
            None => Ok(()),
        }
    }

    fn get_all(&mut self, table: &str) -> Result<Vec<(String, Vec<u8>)>, SourceError> {
        self.want(table);
        self.catch_up()?;
        Ok(self.tables.get(table).map(|t| t.iter().map(|(f, v)| (f.clone(), v.clone())).collect()).unwrap_or_default())
    }

    fn get(&mut self, table: &str, field: &str) -> Result<Option<Vec<u8>>, SourceError> {
        self.want(table);
        self.catch_up()?;
        Ok(self.tables.get(table).and_then(|t| t.get(field)).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A property may name the environment variable holding it; one not set
    /// is an error naming the property, never showing a value.
    #[test]
    fn a_property_may_come_from_the_environment() {
        std::env::set_var("CLEAN_HOST_TEST_KAFKA_PASSWORD", "from-env");
        let mut options = BrokerOptions::default();
        options.kafka.insert("sasl.password".into(), "env:CLEAN_HOST_TEST_KAFKA_PASSWORD".into());
        assert_eq!(client_config("h:1", &options).unwrap().get("sasl.password"), Some("from-env"));
        options.kafka.insert("sasl.password".into(), "env:CLEAN_HOST_TEST_UNSET".into());
        let e = client_config("h:1", &options).unwrap_err().to_string();
        assert!(e.contains("kafka property sasl.password: environment variable CLEAN_HOST_TEST_UNSET is not set"), "{e}");
    }

    #[test]
    fn client_defaults_give_way_to_the_pipelines_own_settings() {
        let mut options = BrokerOptions::default();
        assert_eq!(client_config("h:1", &options).unwrap().get("enable.sparse.connections"), Some("false"));
        options.kafka.insert("enable.sparse.connections".into(), "true".into());
        assert_eq!(client_config("h:1", &options).unwrap().get("enable.sparse.connections"), Some("true"));
    }

    #[test]
    fn a_partition_is_sought_once_it_stalled_long_enough_and_once_per_offset() {
        let (mut watch, t0, after) = (StallWatch::default(), Instant::now(), Duration::from_secs(20));
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert!(!watch.look(0, 100, true, at(0), after));
        assert!(!watch.look(0, 100, true, at(19), after));
        assert!(watch.look(0, 100, true, at(20), after), "stalled for 20 s");
        watch.sought(0, 100, at(20));
        // Still nothing from offset 100 (a transaction marker, say): not sought again.
        assert!(!watch.look(0, 100, true, at(60), after));
        // It moved on, then stalled again at another offset.
        assert!(!watch.look(0, 150, false, at(61), after));
        assert!(!watch.look(0, 150, true, at(62), after));
        assert!(watch.look(0, 150, true, at(82), after));
    }

    #[test]
    fn a_seek_that_failed_is_tried_again() {
        let (mut watch, t0, after) = (StallWatch::default(), Instant::now(), Duration::from_secs(20));
        assert!(!watch.look(0, 7, true, t0, after));
        assert!(watch.look(0, 7, true, t0 + after, after));
        // Not marked as sought: the next look tries again.
        assert!(watch.look(0, 7, true, t0 + after + Duration::from_secs(2), after));
    }

    #[test]
    fn progress_or_an_empty_backlog_restarts_the_clock() {
        let (mut watch, t0, after) = (StallWatch::default(), Instant::now(), Duration::from_secs(20));
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert!(!watch.look(1, 5, true, at(0), after));
        assert!(!watch.look(1, 5, false, at(15), after));
        assert!(!watch.look(1, 5, true, at(16), after));
        assert!(!watch.look(1, 5, true, at(35), after));
        assert!(watch.look(1, 5, true, at(36), after));
    }

    #[test]
    fn a_revoked_partition_is_forgotten() {
        let (mut watch, t0, after) = (StallWatch::default(), Instant::now(), Duration::from_secs(20));
        assert!(!watch.look(2, 7, true, t0, after));
        assert!(watch.look(2, 7, true, t0 + after, after));
        watch.sought(2, 7, t0 + after);
        watch.committed.insert(2, Some(7));
        watch.forget(2);
        assert!(watch.committed.is_empty(), "its committed offset is asked again");
        // Assigned again: judged afresh, and may be sought to the same offset.
        assert!(!watch.look(2, 7, true, t0 + after * 2, after));
        assert!(watch.look(2, 7, true, t0 + after * 3, after));
        watch.sought(2, 7, t0 + after * 3);
        watch.keep(&HashSet::from([3]));
        assert!(watch.sought.is_empty() && watch.since.is_empty());
    }
}
