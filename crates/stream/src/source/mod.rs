//! Sources: where records come from.
//!
//! A source runs on its own thread and sends blocks of whole lines with the
//! offset of the first, so the decoder never waits on I/O and an idle source
//! still lets processing-time windows close. A line longer than the limit is
//! not buffered: it is reported as [`SourceEvent::Oversized`] and becomes a
//! dead letter like any other bad line.
//!
//! Broker sources send [`Message`]s instead, and receive [`Ack`]s back from
//! the pipeline once every record below an offset has been analysed and its
//! alerts written: only then do they commit (at-least-once).

pub mod config;
pub mod file;
pub mod generator;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "pulsar")]
pub mod pulsar;
#[cfg(feature = "redis")]
pub mod redis;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};
use serde::{Deserialize, Serialize};

pub use config::BrokerOptions;

/// Longest line accepted, in bytes.
pub const MAX_LINE_BYTES: usize = 16 << 20;

#[derive(Debug)]
pub enum SourceEvent {
    /// Whole lines, each ending in `\n`; the first is at `first_offset`.
    Lines { partition: u32, first_offset: u64, data: Vec<u8> },
    /// A line over [`MAX_LINE_BYTES`], skipped.
    Oversized { partition: u32, offset: u64, bytes: u64 },
    /// Broker messages of one partition, in log order.
    Messages { partition: u32, messages: Vec<Message> },
    /// A partition was assigned (where [`Source::partitions_move`]) and is
    /// read from `from` on (Kafka: its committed offset; Pulsar: its
    /// checkpoint's): its messages follow. `None`: no checkpoint applies
    /// ([`SourceContext::checkpoint_of`] found none, or none it can use).
    Arrived { partition: u32, from: Option<u64> },
    /// Partitions taken away by a rebalance: their open windows are dropped
    /// uncommitted, to be replayed by their new owner.
    Revoked { partitions: Vec<u32> },
}

/// The lines of a [`SourceEvent::Lines`] block, without their newlines.
pub fn lines(block: &[u8]) -> impl Iterator<Item = &[u8]> {
    let body = block.strip_suffix(b"\n").unwrap_or(block);
    let mut start = 0;
    memchr::memchr_iter(b'\n', body).chain([body.len()]).map(move |end| {
        let line = &body[start..end];
        start = end + 1;
        line
    })
}

/// Where a record sits in its broker: a Kafka offset, or a Pulsar message id
/// or Redis entry id. Serialized as a JSON number or string.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Position {
    Offset(u64),
    Id(Arc<str>),
}

impl Serialize for Position {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Position::Offset(o) => s.serialize_u64(*o),
            Position::Id(id) => s.serialize_str(id),
        }
    }
}

impl Position {
    /// The position its [`Display`](std::fmt::Display) text names: a number
    /// is an offset, anything else an id.
    pub fn from_text(text: &str) -> Position {
        text.parse().map_or_else(|_| Position::Id(text.into()), Position::Offset)
    }
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Position::Offset(o) => write!(f, "{o}"),
            Position::Id(id) => f.write_str(id),
        }
    }
}

/// One message from a broker.
#[derive(Debug)]
pub struct Message {
    /// Increases by one per message of the partition: the Kafka offset, or a
    /// count kept by the source for brokers whose ids are not numbers.
    pub offset: u64,
    /// The broker's own position, when it is not `offset`.
    pub id: Option<Arc<str>>,
    /// Often a slice of one buffer the source read many messages into.
    pub payload: Bytes,
    pub key: Option<Bytes>,
    /// The broker's timestamp, epoch ms.
    pub timestamp_ms: Option<i64>,
    pub headers: Vec<(String, Vec<u8>)>,
    /// Why the message cannot become a record, found by the source itself.
    pub fault: Option<String>,
}

impl Message {
    pub fn position(&self) -> Position {
        match &self.id {
            Some(id) => Position::Id(id.clone()),
            None => Position::Offset(self.offset),
        }
    }
}

/// Where a checkpoint cut one partition: a restart reads on from here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumePosition {
    /// The offset to read next, as the source numbers its records.
    pub next_offset: u64,
    /// The broker's id of the last record before the cut, where ids are
    /// not offsets (Redis entry ids): those sources find the cut by it.
    pub after_id: Option<String>,
}

/// Every record of `partition` with an offset below `below` was analysed and
/// its alerts written: the source may commit up to there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    pub partition: u32,
    pub below: u64,
}

/// How far a run has got and how its broker is doing, for the status line.
#[derive(Debug, Default)]
pub struct Progress {
    /// Records to read in all (0: unknown).
    pub total: AtomicU64,
    pub done: AtomicU64,
    /// Connection errors and reconnects seen (each is also logged).
    pub broker_errors: AtomicU64,
    /// Records on the broker not read yet, as the source last measured it
    /// (every [`LAG_EVERY`]; 0 for files and the generator).
    pub lag: AtomicU64,
}

/// How often broker sources measure their consumer lag.
pub const LAG_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// What a running source talks to.
pub struct SourceContext {
    pub events: Sender<SourceEvent>,
    /// Closed by the pipeline once its last window is analysed.
    pub acks: Receiver<Ack>,
    /// Set on Ctrl-C.
    pub stop: Arc<AtomicBool>,
    pub progress: Arc<Progress>,
    /// Where a partition's checkpoint stands now, where checkpoints are
    /// adopted as partitions come: sources that number their records
    /// themselves (Pulsar) number a partition that comes on from it.
    pub checkpoint_of: Option<CheckpointLookup>,
}

/// [`SourceContext::checkpoint_of`]: the position, if the partition has a
/// checkpoint (one that cannot be read is none: the next is written over
/// it); an error when the place it is kept cannot be asked (the source
/// stops rather than number the partition otherwise than its checkpoint).
pub type CheckpointLookup = Box<dyn Fn(u32) -> Result<Option<ResumePosition>, String> + Send>;

impl SourceContext {
    /// Stop sending, then hand every ack still to come to `commit` until the
    /// pipeline is done: the windows already read are analysed and committed.
    pub fn finish(self, mut commit: impl FnMut(Ack)) {
        drop(self.events);
        for ack in self.acks.iter() {
            commit(ack);
        }
    }

    /// A context for a source whose events go to `events` and that gets no acks.
    pub fn detached(events: Sender<SourceEvent>) -> Self {
        SourceContext { events, acks: crossbeam_channel::never(), stop: Default::default(), progress: Default::default(), checkpoint_of: None }
    }

    pub fn stopped(&self) -> bool {
        self.stop.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Why a source stopped early.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("cannot reach {address}: {message}")]
    Unreachable { address: String, message: String },
    #[error("{0}")]
    Broker(String),
    #[error("source {spec}: {message}")]
    Config { spec: String, message: String },
}

/// A stream of records. `run` returns at the end of a bounded source, or
/// when the receiver hangs up.
pub trait Source: Send {
    /// Describes the source in alerts and dead letters.
    fn name(&self) -> String;
    /// Whether the source commits what [`Ack`]s tell it (brokers do; files need not).
    fn acknowledges(&self) -> bool {
        false
    }
    /// Who reads: the source and its consumer group (Kafka, Redis) or
    /// subscription (Pulsar). The alert ledger remembers alerts per reader,
    /// so another group reading the same topic alerts on its own.
    fn reader(&self) -> String {
        self.name()
    }
    /// What its checkpoints are kept under, if [`Source::resume_at`] can
    /// start it at given positions: the source and the consumer whose
    /// positions they are (a Kafka group), as another group reading the
    /// same topic is another reader.
    fn checkpoint_id(&self) -> Option<String> {
        None
    }
    /// Whether partitions move between the consumers of a group while it
    /// runs (Kafka): then each partition carries on from its own checkpoint
    /// when it arrives, at the start or after a rebalance, skipping what the
    /// checkpoint covers, rather than all partitions at the start.
    fn partitions_move(&self) -> bool {
        false
    }
    /// Start each partition at a checkpoint's position, where it would
    /// otherwise start from its committed position. False, and nothing
    /// moved, when the positions do not fit: some partition was committed
    /// past them (by another consumer), the run was asked to start
    /// elsewhere, or the source cannot move there now (it says why).
    fn resume_at(&mut self, _positions: &BTreeMap<u32, ResumePosition>) -> Result<bool, SourceError> {
        Ok(false)
    }
    /// A sink on the same broker for dead letters, if the source has one.
    fn dead_letter_sink(&self) -> Result<Option<Box<dyn Sink>>, SourceError> {
        Ok(None)
    }
    /// A table on the same broker for the pipeline's checkpoints, if the
    /// broker keeps one (Kafka, Redis, Pulsar): any consumer of the group finds them.
    fn state_table(&self) -> Result<Option<Box<dyn StateTable>>, SourceError> {
        Ok(None)
    }
    fn run(self: Box<Self>, ctx: SourceContext) -> Result<(), SourceError>;
}

/// A topic or stream that JSON payloads are written to: dead letters, findings.
pub trait Sink: Send {
    /// Describes the destination in errors.
    fn name(&self) -> String;
    fn send(&mut self, key: &str, payload: &[u8]) -> Result<(), SourceError>;
    /// Returns once everything sent is stored by the broker.
    fn flush(&mut self) -> Result<(), SourceError>;
}

/// Byte values a broker keeps for the host under `(table, field)` keys,
/// readable by whichever host connects to it: checkpoints stored with one
/// host's positions are found by the next (a Redis hash per table, or one
/// compacted Kafka topic). A table not written for 30 days may be dropped:
/// by then the group's committed positions are gone too.
pub trait StateTable: Send {
    /// Describes where it is kept, in errors.
    fn name(&self) -> String;
    /// Store the fields of `table`, all of them or none; stored when it returns.
    fn put(&mut self, table: &str, fields: &[(String, Vec<u8>)]) -> Result<(), SourceError>;
    /// The latest value of each field of `table`.
    fn get_all(&mut self, table: &str) -> Result<Vec<(String, Vec<u8>)>, SourceError>;
    /// The latest value of one field of `table`.
    fn get(&mut self, table: &str, field: &str) -> Result<Option<Vec<u8>>, SourceError>;
    /// The latest values of `fields` of `table`, read within `within` at
    /// most (an error if the table cannot be read that soon): for questions
    /// asked on the analysis path, where a wait holds every window up. By
    /// default one `get` a field: those tables answer within their requests'
    /// own timeouts.
    fn get_within(&mut self, table: &str, fields: &[String], within: Duration) -> Result<Vec<Option<Vec<u8>>>, SourceError> {
        let _ = within;
        fields.iter().map(|field| self.get(table, field)).collect()
    }
}

/// The largest value a broker's state table stores (a partition's checkpoint).
pub const STATE_VALUE_MAX: usize = 32 << 20;

/// How long a broker keeps a table after it was last written.
pub const STATE_TABLE_KEPT: Duration = Duration::from_secs(30 * 24 * 3600);

/// The source a pipeline names: `generator`, `-` (stdin), a file path, or a
/// `kafka://`, `pulsar://`, `redis://` or `rediss://` (TLS) URL.
#[cfg_attr(not(all(feature = "kafka", feature = "redis")), allow(unused_variables))]
pub fn open(spec: &str, generator: &generator::GeneratorConfig, broker: &BrokerOptions) -> Result<Box<dyn Source>, SourceError> {
    if let Some((scheme, _)) = spec.split_once("://") {
        let url = config::BrokerUrl::parse(spec)?;
        login_taken(&url)?;
        return match scheme {
            #[cfg(feature = "kafka")]
            "kafka" => Ok(Box::new(kafka::KafkaSource::new(url, broker)?)),
            #[cfg(feature = "pulsar")]
            "pulsar" => Ok(Box::new(pulsar::PulsarSource::new(url, broker)?)),
            #[cfg(feature = "redis")]
            "redis" | "rediss" => Ok(Box::new(redis::RedisSource::new(url, broker)?)),
            other => Err(url.error(format!("no '{other}' source in this build (kafka, pulsar and redis are cargo features)"))),
        };
    }
    match spec {
        "generator" => Ok(Box::new(generator::Generator::new(generator.clone()))),
        "-" => Ok(Box::new(file::LineReader::stdin())),
        path => {
            if let Some(scheme) = mistyped_url(path) {
                // Not echoed: what follows the scheme may be a login.
                let message = format!("starts like a {scheme}:// URL but is not one (write {scheme}://HOST:PORT/...), and no such file exists");
                return Err(SourceError::Config { spec: format!("{scheme}:..."), message });
            }
            Ok(Box::new(file::LineReader::open(path)?))
        }
    }
}

/// The broker scheme a source names without its `//` (`redis:/:pw@h`), if
/// no file is there by that name.
fn mistyped_url(path: &str) -> Option<&'static str> {
    let (scheme, _) = path.split_once(':')?;
    let known = ["kafka", "pulsar", "redis", "rediss"].into_iter().find(|k| k.eq_ignore_ascii_case(scheme))?;
    (!std::path::Path::new(path).exists()).then_some(known)
}

/// Only Redis takes a login in its URL; elsewhere it would be dropped unseen.
fn login_taken(url: &config::BrokerUrl) -> Result<(), SourceError> {
    match (&url.login, url.scheme.as_str()) {
        (Some(_), "kafka") => Err(url.error("a login in a kafka:// URL is not used: set sasl.username and sasl.password under [pipelines.broker.kafka]")),
        (Some(_), scheme) if scheme != "redis" && scheme != "rediss" => Err(url.error(format!("a login in a {scheme}:// URL is not used"))),
        _ => Ok(()),
    }
}

/// Where a broker reader keeps its checkpoints.
pub struct CheckpointHome {
    /// What they are kept under ([`Source::checkpoint_id`]).
    pub id: String,
    /// The table they are in ([`Source::state_table`]).
    pub table: Box<dyn StateTable>,
}

/// Where the reader a broker source URL names keeps its checkpoints, found
/// without reading the stream: its group or subscription is never joined or
/// made, so the readers at work keep their partitions (the state table is
/// opened as a host opens it). `None` when it keeps none in its
/// broker (a file, a Redis reader without a consumer name, a shared
/// Pulsar subscription).
#[cfg_attr(not(all(feature = "kafka", feature = "pulsar", feature = "redis")), allow(unused_variables))]
pub fn checkpoint_home(spec: &str, broker: &BrokerOptions) -> Result<Option<CheckpointHome>, SourceError> {
    let Some((scheme, _)) = spec.split_once("://") else { return Ok(None) };
    let url = config::BrokerUrl::parse(spec)?;
    let options = broker.merged(&url)?;
    match scheme {
        #[cfg(feature = "kafka")]
        "kafka" => kafka::checkpoint_home(&url, &options),
        #[cfg(feature = "pulsar")]
        "pulsar" => pulsar::checkpoint_home(&url, &options),
        #[cfg(feature = "redis")]
        "redis" | "rediss" => redis::checkpoint_home(&url, &options),
        _ => Ok(None),
    }
}

/// A sink named by a URL like the sources'; a Kafka topic that must be
/// created gets `partitions` partitions.
#[cfg_attr(not(feature = "kafka"), allow(unused_variables))]
pub fn open_sink(url: &str, broker: &BrokerOptions, partitions: i32) -> Result<Box<dyn Sink>, SourceError> {
    let parsed = config::BrokerUrl::parse(url)?;
    login_taken(&parsed)?;
    match parsed.scheme.as_str() {
        #[cfg(feature = "kafka")]
        "kafka" => Ok(Box::new(kafka::KafkaSink::with_partitions(&parsed.hosts, &parsed.path, broker, partitions)?)),
        #[cfg(feature = "pulsar")]
        "pulsar" => Ok(Box::new(pulsar::PulsarSink::new(&parsed.hosts, &parsed.path)?)),
        #[cfg(feature = "redis")]
        "redis" | "rediss" => Ok(Box::new(redis::RedisSink::new(&redis::Server::new(&parsed, broker)?, &parsed.path)?)),
        other => Err(parsed.error(format!("no '{other}' sink in this build"))),
    }
}
