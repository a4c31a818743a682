//! Redis Streams source and sink (the `redis` crate, blocking API; the
//! entries themselves are read by [`reader`], which parses the one hot reply
//! several times faster than the crate).
//!
//! The source reads with XREADGROUP as one consumer of a group: first it
//! takes over the entries another consumer left pending longer than
//! `claim_idle_ms` (XAUTOCLAIM), then reads its own pending entries
//! (delivered before a crash, never acked; the taken ones among them), then
//! new ones: one run reads in id order. An entry is XACKed only when the
//! pipeline acks it. A lost connection is retried with backoff, and reading
//! goes on after the last entry read (what was delivered and lost on the way
//! is pending after it).
//!
//! A named consumer (`consumer=`) is checkpointed: as a run reads in id
//! order, its pending entries up to the checkpoint's entry id were analysed
//! before the stop (not acked yet) and are acked on resuming; records are
//! numbered on from the checkpoint's offset.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use redis::streams::StreamAutoClaimOptions;
use redis::{Commands, Connection, Value};

pub mod reader;
#[cfg(test)]
mod tests;

use super::config::{BrokerOptions, BrokerUrl, EntryLayout, COMMON_PARAMS};
use super::{CheckpointHome, Message, ResumePosition, Sink, Source, SourceContext, SourceError, SourceEvent, StateTable, LAG_EVERY, STATE_TABLE_KEPT};
use reader::{id_pair, Entry, Reply, StreamReader};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Entries acked between two reads at most (about 15 ms of the server's time).
const ACK_STEP: usize = 50_000;
/// Ids an XACK names at most, and XACKs sent in one round trip.
const ACK_COUNT: usize = 1000;
const ACKS_PER_TRIP: usize = 20;

/// XREADGROUP BLOCK time; the connection's read timeout is above it.
const BLOCK: Duration = Duration::from_millis(200);
const READ_COUNT: usize = 1000;

/// A Redis server as the host reaches it: its URL (`redis://`, or
/// `rediss://` over TLS) and, over TLS, the roots its certificate is checked
/// against (`tls_ca`, else the system's). Both the `redis` crate's
/// connections and the XREADGROUP reader's go through it.
#[derive(Clone)]
pub struct Server {
    url: BrokerUrl,
    tls: Option<Tls>,
}

#[derive(Clone)]
struct Tls {
    config: Arc<rustls::ClientConfig>,
    /// The CA certificate file's PEM, if one was given.
    ca: Option<Vec<u8>>,
}

impl Server {
    pub fn new(url: &BrokerUrl, options: &BrokerOptions) -> Result<Self, SourceError> {
        let tls = match (url.scheme.as_str(), &options.tls_ca) {
            ("rediss", ca) => {
                let ca = match ca {
                    Some(path) => Some(std::fs::read(path).map_err(|e| url.error(format!("tls_ca {}: {e}", path.display())))?),
                    None => None,
                };
                let config = reader::tls_config(ca.as_deref()).map_err(|e| url.error(format!("TLS: {e}")))?;
                Some(Tls { config, ca })
            }
            (_, Some(_)) => return Err(url.error("tls_ca is for a rediss:// URL (Redis over TLS)")),
            (_, None) => None,
        };
        Ok(Server { url: url.clone(), tls })
    }

    /// A connection of the `redis` crate, logged in with the URL's login if it has one.
    fn connect(&self) -> Result<Connection, SourceError> {
        let url = &self.url;
        let unreachable = |e: redis::RedisError| SourceError::Unreachable { address: url.hosts.clone(), message: e.to_string() };
        let client = match &self.tls {
            None => redis::Client::open(format!("redis://{}/", url.address())),
            Some(tls) => {
                redis::Client::build_with_tls(format!("rediss://{}/", url.address()), redis::TlsCertificates { client_tls: None, root_cert: tls.ca.clone() })
            }
        }
        .map_err(unreachable)?;
        let con = client.get_connection_with_timeout(CONNECT_TIMEOUT).map_err(unreachable)?;
        con.set_read_timeout(Some(BLOCK + Duration::from_secs(5))).map_err(unreachable)?;
        con.set_write_timeout(Some(CONNECT_TIMEOUT)).map_err(unreachable)?;
        Ok(con)
    }

    /// A connection of the XREADGROUP reader.
    fn reader(&self) -> redis::RedisResult<StreamReader> {
        StreamReader::connect(&self.url.hosts, self.url.login.as_ref(), self.tls.as_ref().map(|t| &t.config), CONNECT_TIMEOUT, BLOCK + Duration::from_secs(5))
    }

    /// How the server is named in logs and errors (no login).
    fn name(&self, key: &str) -> String {
        format!("{}://{}/{key}", self.url.scheme, self.url.hosts)
    }
}

/// Whether an error passes with time: the connection went away, or the
/// server is back but still loading its data set (it refuses commands
/// until it is done).
fn passing(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_timeout()
        || e.is_connection_refusal()
        || e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::BusyLoading)
}

/// How long a sink waits for a restarted server to load its data set.
const LOADING_PATIENCE: Duration = Duration::from_secs(60);

pub struct RedisSource {
    server: Server,
    options: BrokerOptions,
    stream: String,
    consumer: String,
    con: Connection,
    /// Reads the entries (connected at the first read, and again after an error).
    reader: Option<StreamReader>,
    /// The last entry id at start (`--until-end`).
    end: Option<(u64, u64)>,
    /// Asked to start at an id or a time: no checkpoint applies.
    replay: bool,
    /// The checkpoint resumed from: the next offset, and the last entry analysed.
    resumed: Option<(u64, String)>,
}

impl RedisSource {
    pub fn new(url: BrokerUrl, table: &BrokerOptions) -> Result<Self, SourceError> {
        let mut known = vec!["group", "consumer", "field"];
        known.extend_from_slice(COMMON_PARAMS);
        url.check_query(&known)?;
        let options = table.merged(&url)?;
        let start = options.start_at(&url)?;
        let stream = url.path.clone();
        let consumer = options.consumer.clone().unwrap_or_else(|| format!("clean-host-{}", std::process::id()));
        let server = Server::new(&url, &options)?;
        let mut con = server.connect()?;
        let from = match start {
            super::config::StartAt::Earliest => "0".to_string(),
            super::config::StartAt::Latest => "$".to_string(),
            super::config::StartAt::Offset(n) => format!("{n}"),
            super::config::StartAt::Time(ms) => format!("{}-0", ms.max(1) - 1),
        };
        let created: redis::RedisResult<()> = con.xgroup_create_mkstream(&stream, options.group(), &from);
        match created {
            Ok(()) => {}
            Err(e) if e.code() == Some("BUSYGROUP") => {
                // An explicit replay start moves an existing group back.
                if matches!(start, super::config::StartAt::Offset(_) | super::config::StartAt::Time(_)) {
                    let _: () = con.xgroup_setid(&stream, options.group(), &from).map_err(|e| SourceError::Broker(e.to_string()))?;
                }
            }
            Err(e) => return Err(SourceError::Broker(format!("creating group '{}' on {stream}: {e}", options.group()))),
        }
        let last: FirstId = con.xrevrange_count(&stream, "+", "-", 1).map_err(|e| SourceError::Broker(e.to_string()))?;
        let end = last.0.map(|id| id_pair(&id));
        let replay = matches!(start, super::config::StartAt::Offset(_) | super::config::StartAt::Time(_));
        Ok(RedisSource { server, options, stream, consumer, con, reader: None, end, replay, resumed: None })
    }

    /// `entry` of `reply` as the message at `offset`.
    fn message(&self, offset: u64, entry: Entry, reply: &Reply) -> Message {
        let mut fault = None;
        let timestamp_ms = Some(entry.at.0 as i64);
        let payload = match self.options.entry_layout {
            EntryLayout::Field => {
                let field = self.options.entry_field.as_deref().unwrap_or("data").as_bytes();
                match reply.value(&entry, field) {
                    Some(value) => value,
                    None => {
                        let names: Vec<String> = reply.fields(&entry).map(|(name, _)| String::from_utf8_lossy(name).into_owned()).collect();
                        fault = Some(format!("entry has no field '{}' (fields: {names:?})", String::from_utf8_lossy(field)));
                        pairs_json(reply.fields(&entry))
                    }
                }
            }
            EntryLayout::Pairs => pairs_json(reply.fields(&entry)),
        };
        Message { offset, id: Some(entry.id), payload, key: None, timestamp_ms, headers: Vec::new(), fault }
    }

    /// One read: taking over others' idle entries first, then own pending entries, then new ones.
    fn read(&mut self, phase: &mut ReadPhase) -> redis::RedisResult<Reply> {
        let group = self.options.group().to_string();
        loop {
            match phase {
                ReadPhase::Claim(start) => {
                    let idle = self.options.claim_idle_ms.unwrap_or(30_000);
                    let opts = StreamAutoClaimOptions::default().count(READ_COUNT).with_justid();
                    let reply: redis::streams::StreamAutoClaimReply =
                        self.con.xautoclaim_options(&self.stream, &group, &self.consumer, idle, start.as_str(), opts)?;
                    if !reply.claimed.is_empty() {
                        tracing::info!("redis {}: took over {} entries another consumer left pending", self.server.url.hosts, reply.claimed.len());
                    }
                    if reply.next_stream_id == "0-0" {
                        *phase = ReadPhase::OwnPending("0".into());
                    } else {
                        *start = reply.next_stream_id;
                    }
                }
                ReadPhase::OwnPending(after) => {
                    let mut reply = self.xreadgroup(&group, after, None)?;
                    match reply.entries.last() {
                        Some(last) => {
                            *after = last.id.to_string();
                            // Deleted from the stream since: done with.
                            self.ack_leaving_out(&mut reply, Entry::deleted)?;
                            return Ok(reply);
                        }
                        None => *phase = ReadPhase::New,
                    }
                }
                ReadPhase::New => {
                    return self.read_new(&group);
                }
            }
        }
    }

    /// At most [`READ_COUNT`] entries after `after` (XREADGROUP).
    fn xreadgroup(&mut self, group: &str, after: &str, block: Option<Duration>) -> redis::RedisResult<Reply> {
        self.with_reader(|reader, consumer, stream| reader.read(group, consumer, READ_COUNT, block, stream, after))
    }

    /// New entries (`>`). The next XREADGROUP goes out as soon as these are
    /// in, so the server makes its reply while these are decoded and
    /// analysed; none goes out past the end of an `--until-end` run. What
    /// one in flight delivers stays pending on the consumer until it is read,
    /// as any entry delivered and not analysed does (a stop, a crash).
    fn read_new(&mut self, group: &str) -> redis::RedisResult<Reply> {
        let (until_end, end) = (self.options.until_end, self.end);
        self.with_reader(|reader, consumer, stream| {
            let send = |reader: &mut StreamReader| reader.send_read(group, consumer, READ_COUNT, Some(BLOCK), stream, ">");
            if !reader.awaiting() {
                send(reader)?;
            }
            let reply = reader.receive()?;
            let last = reply.entries.last().map(|e| e.at);
            let at_end = until_end && (last.is_none() || last >= end);
            if !at_end {
                send(reader)?;
            }
            Ok(reply)
        })
    }

    /// `read` on the entries' reader (with this consumer and stream),
    /// connected at the first read; a failed read drops its connection,
    /// with any read in flight, and the next read connects anew.
    fn with_reader<T>(&mut self, read: impl FnOnce(&mut StreamReader, &str, &str) -> redis::RedisResult<T>) -> redis::RedisResult<T> {
        let reader = match &mut self.reader {
            Some(reader) => reader,
            None => self.reader.insert(self.server.reader()?),
        };
        let result = read(reader, &self.consumer, &self.stream);
        if result.is_err() {
            self.reader = None;
        }
        result
    }

    /// The group's fields in XINFO GROUPS, as name/value pairs.
    fn group_info(&mut self) -> Option<Vec<Value>> {
        let groups: Vec<Vec<Value>> = redis::cmd("XINFO").arg("GROUPS").arg(&self.stream).query(&mut self.con).ok()?;
        let group = self.options.group().as_bytes();
        groups.into_iter().find(|g| g.chunks(2).any(|kv| matches!(kv, [Value::BulkString(k), Value::BulkString(v)] if k == b"name" && v == group)))
    }

    /// The group's pending entries plus its lag (XINFO GROUPS), for the progress bar.
    fn backlog(&mut self) -> Option<u64> {
        let fields = self.group_info()?;
        let number = |name: &[u8]| {
            fields.chunks(2).find_map(|kv| match kv {
                [Value::BulkString(k), Value::Int(n)] if k == name => Some(*n as u64),
                _ => None,
            })
        };
        Some(number(b"pending").unwrap_or(0) + number(b"lag")?)
    }

    /// Whether the group, read by this consumer alone, went on past a
    /// checkpoint at `after`: the entry after it was delivered and acked
    /// (by a run that kept no checkpoint). Where other consumers read too,
    /// entries past it are theirs as a matter of course.
    fn read_past(&mut self, after: &str) -> redis::RedisResult<bool> {
        let next: FirstId = self.con.xrange_count(&self.stream, format!("({after}"), "+", 1)?;
        let (Some(next), Some(fields)) = (next.0, self.group_info()) else {
            return Ok(false);
        };
        let field = |name: &[u8]| fields.chunks(2).find(|kv| matches!(&kv[0], Value::BulkString(k) if k == name)).map(|kv| kv[1].clone());
        let alone = matches!(field(b"consumers"), Some(Value::Int(n)) if n <= 1);
        let delivered = match field(b"last-delivered-id") {
            Some(Value::BulkString(id)) => id_pair(&String::from_utf8_lossy(&id)) >= id_pair(&next),
            _ => false,
        };
        if !alone || !delivered {
            return Ok(false);
        }
        let pending: redis::streams::StreamPendingCountReply = self.con.xpending_count(&self.stream, self.options.group(), &next, &next, 1)?;
        Ok(pending.ids.is_empty())
    }

    /// Ack this consumer's pending entries up to `through`: a run reads in
    /// id order, so they were analysed before the checkpoint there.
    fn ack_analysed(&mut self, through: &str) -> redis::RedisResult<()> {
        loop {
            let pending: redis::streams::StreamPendingCountReply =
                self.con.xpending_consumer_count(&self.stream, self.options.group(), "-", through, READ_COUNT, &self.consumer)?;
            if pending.ids.is_empty() {
                return Ok(());
            }
            self.ack_ids(pending.ids.iter().map(|p| p.id.as_str()))?;
        }
    }

    /// Entries up to the checkpoint resumed from come again only if the
    /// group was moved back: they were analysed, so they are acked, not read.
    fn skip_analysed(&mut self, mut reply: Reply, through: (u64, u64)) -> redis::RedisResult<Reply> {
        self.ack_leaving_out(&mut reply, |e| e.at <= through)?;
        Ok(reply)
    }

    /// Ack the entries of `reply` that need no reading (`done`), and leave them out of it.
    fn ack_leaving_out(&mut self, reply: &mut Reply, done: impl Fn(&Entry) -> bool) -> redis::RedisResult<()> {
        let (gone, kept): (Vec<Entry>, Vec<Entry>) = std::mem::take(&mut reply.entries).into_iter().partition(|e| done(e));
        reply.entries = kept;
        self.ack_ids(gone.iter().map(|e| &*e.id))
    }

    fn ack_ids<'i>(&mut self, ids: impl Iterator<Item = &'i str>) -> redis::RedisResult<()> {
        let ids: Vec<&str> = ids.collect();
        if !ids.is_empty() {
            let _: i64 = self.con.xack(&self.stream, self.options.group(), &ids)?;
        }
        Ok(())
    }

    /// XACK the entries read whose offsets are below `below`, at most
    /// `most` of them: a checkpoint may let a million go, and the reads go
    /// on between. The XACKs go out [`ACKS_PER_TRIP`] at a time, so the
    /// server acks one while the next comes. Each entry is kept until the
    /// server took it (acking one twice is harmless).
    fn ack(&mut self, unacked: &mut Unacked, below: u64, most: usize) -> redis::RedisResult<()> {
        let mut left = most;
        while left > 0 {
            let listed = unacked.first(below, left.min(ACK_COUNT * ACKS_PER_TRIP));
            let ids = listed.ids();
            if ids.is_empty() {
                break;
            }
            let mut trip = redis::pipe();
            for some in ids.chunks(ACK_COUNT) {
                trip.xack(&self.stream, self.options.group(), some).ignore();
            }
            trip.query::<()>(&mut self.con)?;
            unacked.forget(ids.len());
            left -= ids.len();
        }
        Ok(())
    }
}

/// The entries read and not acked yet, in offset order, as runs of
/// consecutive ids (one millisecond's, each seq one on): a producer's burst
/// is one run, not 24 bytes an entry for up to a checkpoint's interval.
#[derive(Default)]
struct Unacked(VecDeque<IdRun>);

struct IdRun {
    /// The offset and id of its first entry.
    offset: u64,
    ms: u64,
    seq: u64,
    len: u64,
}

impl Unacked {
    fn push(&mut self, offset: u64, (ms, seq): (u64, u64)) {
        if let Some(run) = self.0.back_mut().filter(|r| r.offset + r.len == offset && r.ms == ms && r.seq.checked_add(r.len) == Some(seq)) {
            run.len += 1;
            return;
        }
        self.0.push_back(IdRun { offset, ms, seq, len: 1 });
    }

    /// The ids of the first `most` entries whose offsets are below `below`.
    fn first(&self, below: u64, most: usize) -> IdList {
        let mut list = IdList::default();
        for run in self.0.iter().take_while(|r| r.offset < below) {
            let n = (below - run.offset).min(run.len).min((most - list.ends.len()) as u64);
            (0..n).for_each(|i| list.push(run.ms, run.seq + i));
            if list.ends.len() == most {
                break;
            }
        }
        list
    }

    /// Drop the first `n` entries.
    fn forget(&mut self, mut n: usize) {
        while n > 0 {
            let Some(run) = self.0.front_mut() else { return };
            let k = (n as u64).min(run.len);
            if k == run.len {
                self.0.pop_front(); // its last seq may be u64::MAX
            } else {
                (run.offset, run.seq, run.len) = (run.offset + k, run.seq + k, run.len - k);
            }
            n -= k as usize;
        }
    }
}

/// Entry ids written out, in one buffer rather than a String each.
#[derive(Default)]
struct IdList {
    text: String,
    /// Where each id ends in `text`.
    ends: Vec<usize>,
}

impl IdList {
    fn push(&mut self, ms: u64, seq: u64) {
        let mut number = itoa::Buffer::new();
        self.text.push_str(number.format(ms));
        self.text.push('-');
        self.text.push_str(number.format(seq));
        self.ends.push(self.text.len());
    }

    fn ids(&self) -> Vec<&str> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts.zip(&self.ends).map(|(start, &end)| &self.text[start..end]).collect()
    }
}

/// The first entry id of a range reply, if any.
struct FirstId(Option<String>);

impl redis::FromRedisValue for FirstId {
    fn from_redis_value(v: Value) -> Result<Self, redis::ParsingError> {
        let reply: redis::streams::StreamRangeReply = redis::FromRedisValue::from_redis_value(v)?;
        Ok(FirstId(reply.ids.into_iter().next().map(|e| e.id)))
    }
}

enum ReadPhase {
    /// Take over entries idle in other consumers' pending lists, from this id.
    Claim(String),
    /// Entries delivered to this consumer before and not acked, after this id.
    OwnPending(String),
    New,
}

/// An entry's field/value pairs as a JSON object; values that are JSON
/// numbers or booleans stay numbers or booleans.
fn pairs_json<'a>(fields: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> Bytes {
    let mut object = serde_json::Map::new();
    for (k, v) in fields {
        let text = String::from_utf8_lossy(v).into_owned();
        let value = match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => v,
            _ => serde_json::Value::String(text),
        };
        object.insert(String::from_utf8_lossy(k).into_owned(), value);
    }
    serde_json::to_vec(&object).unwrap_or_default().into()
}

/// A group's reading of `stream`.
fn reader(server: &Server, stream: &str, options: &BrokerOptions) -> String {
    format!("{}?group={}", server.name(stream), options.group())
}

fn checkpoint_id(server: &Server, stream: &str, options: &BrokerOptions) -> Option<String> {
    let consumer = options.consumer.as_deref()?;
    Some(format!("{}&consumer={consumer}", reader(server, stream, options)))
}

/// See [`super::checkpoint_home`].
pub(super) fn checkpoint_home(url: &BrokerUrl, options: &BrokerOptions) -> Result<Option<CheckpointHome>, SourceError> {
    let server = Server::new(url, options)?;
    let Some(id) = checkpoint_id(&server, &url.path, options) else { return Ok(None) };
    Ok(Some(CheckpointHome { id, table: Box::new(RedisTable::new(&server, options.state_table())?) }))
}

impl Source for RedisSource {
    fn name(&self) -> String {
        self.server.name(&self.stream)
    }

    fn acknowledges(&self) -> bool {
        true
    }

    fn reader(&self) -> String {
        reader(&self.server, &self.stream, &self.options)
    }

    /// A named consumer's: with a name made per process, nothing it left
    /// pending would be its own again.
    fn checkpoint_id(&self) -> Option<String> {
        checkpoint_id(&self.server, &self.stream, &self.options)
    }

    /// Takes the checkpoint unless the group went on past it, and acks what
    /// it analysed. The run then takes over others' entries only after it,
    /// as the run before did not take them (a later restart from the same
    /// checkpoint would ack them unanalysed), and acks any entry up to it
    /// that comes again (a group moved back).
    fn resume_at(&mut self, positions: &BTreeMap<u32, ResumePosition>) -> Result<bool, SourceError> {
        let Some(ResumePosition { next_offset, after_id: Some(after) }) = positions.get(&0).filter(|_| !self.replay) else {
            return Ok(false);
        };
        let name = self.name();
        let broker = |e: redis::RedisError| SourceError::Broker(format!("reading {name} at its checkpoint: {e}"));
        if self.read_past(after).map_err(broker)? {
            return Ok(false);
        }
        self.ack_analysed(after).map_err(broker)?;
        self.resumed = Some((*next_offset, after.clone()));
        Ok(true)
    }

    fn dead_letter_sink(&self) -> Result<Option<Box<dyn Sink>>, SourceError> {
        let stream = self.options.dead_letter_topic.clone().unwrap_or_else(|| format!("{}-dead-letters", self.stream));
        Ok(Some(Box::new(RedisSink::new(&self.server, &stream)?)))
    }

    fn state_table(&self) -> Result<Option<Box<dyn StateTable>>, SourceError> {
        Ok(Some(Box::new(RedisTable::new(&self.server, self.options.state_table())?)))
    }

    fn run(mut self: Box<Self>, ctx: SourceContext) -> Result<(), SourceError> {
        if self.options.until_end {
            if let Some(backlog) = self.backlog() {
                ctx.progress.total.store(backlog, Ordering::Relaxed);
            }
        }
        let (mut phase, mut next_offset, through) = match self.resumed.take() {
            Some((next_offset, after)) => {
                let (ms, seq) = id_pair(&after);
                let next = match seq.checked_add(1) {
                    Some(seq) => format!("{ms}-{seq}"),
                    None => format!("{}-0", ms.saturating_add(1)),
                };
                (ReadPhase::Claim(next), next_offset, Some((ms, seq)))
            }
            None => (ReadPhase::Claim("0-0".into()), 0, None),
        };
        let mut unacked = Unacked::default();
        let mut acked_below = 0u64;
        let mut backoff = Duration::from_millis(200);
        let mut last_id: Option<String> = None;
        let mut last_lag: Option<std::time::Instant> = None;
        loop {
            for ack in ctx.acks.try_iter() {
                acked_below = acked_below.max(ack.below);
            }
            if last_lag.is_none_or(|t| t.elapsed() >= LAG_EVERY) {
                if let Some(backlog) = self.backlog() {
                    ctx.progress.lag.store(backlog, Ordering::Relaxed);
                }
                last_lag = Some(std::time::Instant::now());
            }
            if ctx.stopped() {
                break;
            }
            // Whether anything was read, and what of it is new.
            let result = self.ack(&mut unacked, acked_below, ACK_STEP).and_then(|_| self.read(&mut phase)).and_then(|reply| {
                let read = !reply.entries.is_empty();
                match through {
                    Some(through) => Ok((read, self.skip_analysed(reply, through)?)),
                    None => Ok((read, reply)),
                }
            });
            let (read, mut reply) = match result {
                Ok(read) => {
                    backoff = Duration::from_millis(200);
                    read
                }
                Err(e) if passing(&e) => {
                    // A read in flight goes with its connection: its entries are this consumer's pending.
                    self.reader = None;
                    tracing::warn!("redis {}: {e}; reconnecting in {backoff:?}", self.server.url.hosts);
                    ctx.progress.broker_errors.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    // Delivered and lost on the way: pending, after the last entry read
                    // (whichever connection failed: the entries' reader connects anew by itself).
                    if matches!(phase, ReadPhase::New) {
                        phase = ReadPhase::OwnPending(last_id.clone().unwrap_or_else(|| "0".into()));
                    }
                    if let Ok(con) = self.server.connect() {
                        tracing::info!("redis {}: reconnected", self.server.url.hosts);
                        self.con = con;
                    }
                    continue;
                }
                Err(e) => return Err(SourceError::Broker(format!("reading {}: {e}", self.name()))),
            };
            let new_phase = matches!(phase, ReadPhase::New);
            if !read && new_phase && self.options.until_end {
                break;
            }
            if let Some(last) = reply.entries.last() {
                last_id = Some(last.id.to_string());
            }
            let messages: Vec<Message> = std::mem::take(&mut reply.entries)
                .into_iter()
                .map(|e| {
                    let offset = next_offset;
                    next_offset += 1;
                    unacked.push(offset, e.at);
                    self.message(offset, e, &reply)
                })
                .collect();
            ctx.progress.done.fetch_add(messages.len() as u64, Ordering::Relaxed);
            if !messages.is_empty() && ctx.events.send(SourceEvent::Messages { partition: 0, messages }).is_err() {
                break;
            }
            let last_read = last_id.as_deref().map(id_pair);
            if self.options.until_end && new_phase && last_read.is_some() && last_read >= self.end {
                break;
            }
        }
        ctx.finish(|ack| acked_below = acked_below.max(ack.below));
        self.ack(&mut unacked, acked_below, usize::MAX).map_err(|e| SourceError::Broker(format!("acking on {}: {e}", self.name())))
    }
}

/// Appends entries (`data` = payload, `key` = key) to a stream, in
/// pipelined batches; `flush` returns once all are stored.
pub struct RedisSink {
    /// `redis://HOST/STREAM`, for errors.
    name: String,
    stream: String,
    con: Connection,
    batch: redis::Pipeline,
    queued: usize,
}

/// Entries per pipelined round trip.
const SINK_BATCH: usize = 500;

impl RedisSink {
    /// A sink to `stream` on `server`.
    pub fn new(server: &Server, stream: &str) -> Result<Self, SourceError> {
        // In MULTI/EXEC: a batch sent while a restarted server loads its data set is
        // refused whole (EXECABORT), never stored in part, so sending it again stores none twice.
        let mut batch = redis::pipe();
        batch.atomic();
        Ok(RedisSink { name: server.name(stream), stream: stream.into(), con: server.connect()?, batch, queued: 0 })
    }
}

impl Sink for RedisSink {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn send(&mut self, key: &str, payload: &[u8]) -> Result<(), SourceError> {
        let fields: [(&str, &[u8]); 2] = [("data", payload), ("key", key.as_bytes())];
        self.batch.xadd(&self.stream, "*", &fields).ignore();
        self.queued += 1;
        if self.queued >= SINK_BATCH {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SourceError> {
        if self.queued > 0 {
            let started = std::time::Instant::now();
            loop {
                match self.batch.query::<()>(&mut self.con) {
                    Ok(()) => break,
                    // A command refused while loading aborts the transaction (EXECABORT).
                    Err(e)
                        if matches!(
                            e.kind(),
                            redis::ErrorKind::Server(redis::ServerErrorKind::BusyLoading) | redis::ErrorKind::Server(redis::ServerErrorKind::ExecAbort)
                        ) && started.elapsed() < LOADING_PATIENCE =>
                    {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    Err(e) => return Err(SourceError::Broker(format!("XADD to {}: {e}", self.name()))),
                }
            }
            self.batch.clear();
            self.queued = 0;
        }
        Ok(())
    }
}

/// A [`StateTable`] kept as one Redis hash per table (`PREFIX:TABLE`),
/// written in MULTI/EXEC and kept for [`STATE_TABLE_KEPT`] after the last write.
pub struct RedisTable {
    server: Server,
    prefix: String,
    con: Option<Connection>,
}

impl RedisTable {
    /// The tables under `prefix` on `server`.
    pub fn new(server: &Server, prefix: &str) -> Result<Self, SourceError> {
        Ok(RedisTable { server: server.clone(), prefix: prefix.into(), con: Some(server.connect()?) })
    }

    fn key(&self, table: &str) -> String {
        format!("{}:{table}", self.prefix)
    }

    /// Run `query`, once more on a new connection if the one it had went
    /// away, and again while a restarted server loads its data set.
    fn run<T>(&mut self, what: &str, query: impl Fn(&mut Connection) -> redis::RedisResult<T>) -> Result<T, SourceError> {
        let (started, mut reconnected) = (std::time::Instant::now(), false);
        loop {
            let con = match &mut self.con {
                Some(con) => con,
                None => self.con.insert(self.server.connect()?),
            };
            match query(con) {
                Ok(value) => return Ok(value),
                Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::BusyLoading) && started.elapsed() < LOADING_PATIENCE => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) if !reconnected && passing(&e) => (self.con, reconnected) = (None, true),
                Err(e) => return Err(SourceError::Broker(format!("{what} on {}: {e}", self.name()))),
            }
        }
    }
}

impl StateTable for RedisTable {
    fn name(&self) -> String {
        self.server.name(&format!("{}:*", self.prefix))
    }

    fn put(&mut self, table: &str, fields: &[(String, Vec<u8>)]) -> Result<(), SourceError> {
        if fields.is_empty() {
            return Ok(());
        }
        let key = self.key(table);
        let kept = STATE_TABLE_KEPT.as_millis() as i64;
        self.run("HSET", |con| redis::pipe().atomic().hset_multiple(&key, fields).ignore().pexpire(&key, kept).ignore().query::<()>(con))
    }

    fn get_all(&mut self, table: &str) -> Result<Vec<(String, Vec<u8>)>, SourceError> {
        let key = self.key(table);
        let all: std::collections::HashMap<String, Vec<u8>> = self.run("HGETALL", |con| con.hgetall(&key))?;
        Ok(all.into_iter().collect())
    }

    fn get(&mut self, table: &str, field: &str) -> Result<Option<Vec<u8>>, SourceError> {
        let key = self.key(table);
        self.run("HGET", |con| con.hget(&key, field))
    }
}
