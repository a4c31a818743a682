//! Redis Streams source and sink (the `redis` crate, blocking API).
//!
//! The source reads with XREADGROUP as one consumer of a group: first its own
//! pending entries (delivered before a crash, never acked), then entries that
//! another consumer left pending longer than `claim_idle_ms` (XAUTOCLAIM),
//! then new ones. An entry is XACKed only when the pipeline acks it. A lost
//! connection is retried with backoff; the entries read but not acked then
//! come back as pending.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use redis::streams::{StreamAutoClaimOptions, StreamId, StreamReadOptions, StreamReadReply};
use redis::{Commands, Connection, Value};

use super::config::{BrokerOptions, BrokerUrl, EntryLayout, COMMON_PARAMS};
use super::{Message, Sink, Source, SourceContext, SourceError, SourceEvent, LAG_EVERY};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// XREADGROUP BLOCK time; the connection's read timeout is above it.
const BLOCK: Duration = Duration::from_millis(200);
const READ_COUNT: usize = 1000;

fn connect(hosts: &str) -> Result<Connection, SourceError> {
    let unreachable = |e: redis::RedisError| SourceError::Unreachable { address: hosts.to_string(), message: e.to_string() };
    let client = redis::Client::open(format!("redis://{hosts}/")).map_err(unreachable)?;
    let con = client.get_connection_with_timeout(CONNECT_TIMEOUT).map_err(unreachable)?;
    con.set_read_timeout(Some(BLOCK + Duration::from_secs(5))).map_err(unreachable)?;
    con.set_write_timeout(Some(CONNECT_TIMEOUT)).map_err(unreachable)?;
    Ok(con)
}

/// `ms-seq` as a pair, to compare entry ids.
fn id_pair(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

pub struct RedisSource {
    url: BrokerUrl,
    options: BrokerOptions,
    stream: String,
    consumer: String,
    con: Connection,
    /// The last entry id at start (`--until-end`).
    end: Option<(u64, u64)>,
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
        let mut con = connect(&url.hosts)?;
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
        let last: StreamRangeLast = con.xrevrange_count(&stream, "+", "-", 1).map_err(|e| SourceError::Broker(e.to_string()))?;
        let end = last.0.map(|id| id_pair(&id));
        Ok(RedisSource { url, options, stream, consumer, con, end })
    }

    fn message(&self, offset: u64, entry: StreamId) -> Message {
        let mut fault = None;
        let payload = match self.options.entry_layout {
            EntryLayout::Field => {
                let field = self.options.entry_field.as_deref().unwrap_or("data");
                match entry.map.get(field) {
                    Some(Value::BulkString(b)) => b.clone(),
                    Some(Value::SimpleString(s)) => s.clone().into_bytes(),
                    _ => {
                        let fields: Vec<&String> = entry.map.keys().collect();
                        fault = Some(format!("entry has no field '{field}' (fields: {fields:?})"));
                        pairs_json(&entry.map)
                    }
                }
            }
            EntryLayout::Pairs => pairs_json(&entry.map),
        };
        Message {
            offset,
            id: Some(Arc::from(entry.id.as_str())),
            payload,
            key: None,
            timestamp_ms: Some(id_pair(&entry.id).0 as i64),
            headers: Vec::new(),
            fault,
        }
    }

    /// One read: own pending entries first, then claimed ones, then new ones.
    fn read(&mut self, phase: &mut ReadPhase) -> redis::RedisResult<Vec<StreamId>> {
        let group = self.options.group().to_string();
        loop {
            match phase {
                ReadPhase::OwnPending(after) => {
                    let opts = StreamReadOptions::default().group(&group, &self.consumer).count(READ_COUNT);
                    let reply: StreamReadReply = self.con.xread_options(&[&self.stream], &[after.as_str()], &opts)?;
                    let ids: Vec<StreamId> = reply.keys.into_iter().flat_map(|k| k.ids).collect();
                    match ids.last() {
                        Some(last) => {
                            *after = last.id.clone();
                            return Ok(ids);
                        }
                        None => *phase = ReadPhase::Claim("0-0".into()),
                    }
                }
                ReadPhase::Claim(start) => {
                    let idle = self.options.claim_idle_ms.unwrap_or(30_000);
                    let opts = StreamAutoClaimOptions::default().count(READ_COUNT);
                    let reply: redis::streams::StreamAutoClaimReply =
                        self.con.xautoclaim_options(&self.stream, &group, &self.consumer, idle, start.as_str(), opts)?;
                    let claimed: Vec<StreamId> = reply.claimed.into_iter().filter(|e| !e.map.is_empty()).collect();
                    if reply.next_stream_id == "0-0" {
                        *phase = ReadPhase::New;
                    } else {
                        *start = reply.next_stream_id;
                    }
                    if !claimed.is_empty() {
                        tracing::info!("redis {}: claimed {} entries another consumer left pending", self.url.hosts, claimed.len());
                        return Ok(claimed);
                    }
                }
                ReadPhase::New => {
                    let opts = StreamReadOptions::default().group(&group, &self.consumer).count(READ_COUNT).block(BLOCK.as_millis() as usize);
                    let reply: StreamReadReply = self.con.xread_options(&[&self.stream], &[">"], &opts)?;
                    return Ok(reply.keys.into_iter().flat_map(|k| k.ids).collect());
                }
            }
        }
    }

    /// The group's pending entries plus its lag (XINFO GROUPS), for the progress bar.
    fn backlog(&mut self) -> Option<u64> {
        let groups: Vec<Vec<Value>> = redis::cmd("XINFO").arg("GROUPS").arg(&self.stream).query(&mut self.con).ok()?;
        let group = self.options.group().as_bytes();
        let fields =
            groups.into_iter().find(|g| g.chunks(2).any(|kv| matches!(kv, [Value::BulkString(k), Value::BulkString(v)] if k == b"name" && v == group)))?;
        let number = |name: &[u8]| {
            fields.chunks(2).find_map(|kv| match kv {
                [Value::BulkString(k), Value::Int(n)] if k == name => Some(*n as u64),
                _ => None,
            })
        };
        Some(number(b"pending").unwrap_or(0) + number(b"lag")?)
    }

    fn ack(&mut self, unacked: &mut BTreeMap<u64, String>, below: u64) -> redis::RedisResult<()> {
        let rest = unacked.split_off(&below);
        let done: Vec<String> = std::mem::replace(unacked, rest).into_values().collect();
        for chunk in done.chunks(1000) {
            let _: i64 = self.con.xack(&self.stream, self.options.group(), chunk)?;
        }
        Ok(())
    }
}

/// The newest entry's id, if any.
struct StreamRangeLast(Option<String>);

impl redis::FromRedisValue for StreamRangeLast {
    fn from_redis_value(v: &Value) -> redis::RedisResult<Self> {
        let reply: redis::streams::StreamRangeReply = redis::FromRedisValue::from_redis_value(v)?;
        Ok(StreamRangeLast(reply.ids.into_iter().next().map(|e| e.id)))
    }
}

enum ReadPhase {
    /// Entries delivered to this consumer before and not acked, after this id.
    OwnPending(String),
    /// Entries idle in other consumers' pending lists, from this id.
    Claim(String),
    New,
}

/// An entry's field/value pairs as a JSON object; values that are JSON
/// numbers or booleans stay numbers or booleans.
fn pairs_json(map: &std::collections::HashMap<String, Value>) -> Vec<u8> {
    let mut object = serde_json::Map::new();
    for (k, v) in map {
        let text = match v {
            Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
            Value::SimpleString(s) => s.clone(),
            Value::Int(i) => i.to_string(),
            other => format!("{other:?}"),
        };
        let value = match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => v,
            _ => serde_json::Value::String(text),
        };
        object.insert(k.clone(), value);
    }
    serde_json::to_vec(&object).unwrap_or_default()
}

impl Source for RedisSource {
    fn name(&self) -> String {
        format!("redis://{}/{}", self.url.hosts, self.stream)
    }

    fn acknowledges(&self) -> bool {
        true
    }

    fn dead_letter_sink(&self) -> Result<Option<Box<dyn Sink>>, SourceError> {
        let stream = self.options.dead_letter_topic.clone().unwrap_or_else(|| format!("{}-dead-letters", self.stream));
        Ok(Some(Box::new(RedisSink::new(&self.url.hosts, &stream)?)))
    }

    fn run(mut self: Box<Self>, ctx: SourceContext) -> Result<(), SourceError> {
        if self.options.until_end {
            if let Some(backlog) = self.backlog() {
                ctx.progress.total.store(backlog, Ordering::Relaxed);
            }
        }
        let mut phase = ReadPhase::OwnPending("0".into());
        let mut next_offset = 0u64;
        let mut unacked: BTreeMap<u64, String> = BTreeMap::new();
        let mut acked_below = 0u64;
        let mut backoff = Duration::from_millis(200);
        let mut last_read: Option<(u64, u64)> = None;
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
            let result = self.ack(&mut unacked, acked_below).and_then(|_| self.read(&mut phase));
            let entries = match result {
                Ok(entries) => {
                    backoff = Duration::from_millis(200);
                    entries
                }
                Err(e) if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() || e.is_connection_refusal() => {
                    tracing::warn!("redis {}: {e}; reconnecting in {backoff:?}", self.url.hosts);
                    ctx.progress.broker_errors.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    if let Ok(con) = connect(&self.url.hosts) {
                        tracing::info!("redis {}: reconnected", self.url.hosts);
                        self.con = con;
                        // What was read and not acked is pending again: read it again.
                        phase = ReadPhase::OwnPending("0".into());
                    }
                    continue;
                }
                Err(e) => return Err(SourceError::Broker(format!("reading {}: {e}", self.name()))),
            };
            let new_phase = matches!(phase, ReadPhase::New);
            if entries.is_empty() && new_phase && self.options.until_end {
                break;
            }
            let messages: Vec<Message> = entries
                .into_iter()
                .map(|e| {
                    let offset = next_offset;
                    next_offset += 1;
                    last_read = last_read.max(Some(id_pair(&e.id)));
                    unacked.insert(offset, e.id.clone());
                    self.message(offset, e)
                })
                .collect();
            ctx.progress.done.fetch_add(messages.len() as u64, Ordering::Relaxed);
            if !messages.is_empty() && ctx.events.send(SourceEvent::Messages { partition: 0, messages }).is_err() {
                break;
            }
            if self.options.until_end && new_phase && last_read.is_some() && last_read >= self.end {
                break;
            }
        }
        ctx.finish(|ack| acked_below = acked_below.max(ack.below));
        self.ack(&mut unacked, acked_below).map_err(|e| SourceError::Broker(format!("acking on {}: {e}", self.name())))
    }
}

/// Appends entries (`data` = payload, `key` = key) to a stream, in
/// pipelined batches; `flush` returns once all are stored.
pub struct RedisSink {
    hosts: String,
    stream: String,
    con: Connection,
    batch: redis::Pipeline,
    queued: usize,
}

/// Entries per pipelined round trip.
const SINK_BATCH: usize = 500;

impl RedisSink {
    pub fn new(hosts: &str, stream: &str) -> Result<Self, SourceError> {
        Ok(RedisSink { hosts: hosts.into(), stream: stream.into(), con: connect(hosts)?, batch: redis::pipe(), queued: 0 })
    }
}

impl Sink for RedisSink {
    fn name(&self) -> String {
        format!("redis://{}/{}", self.hosts, self.stream)
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
            let () = self.batch.query(&mut self.con).map_err(|e| SourceError::Broker(format!("XADD to {}: {e}", self.name())))?;
            self.batch.clear();
            self.queued = 0;
        }
        Ok(())
    }
}
