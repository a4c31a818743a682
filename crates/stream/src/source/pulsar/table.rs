//! Checkpoints kept in Pulsar: a [`StateTable`] in one topic of the source's
//! namespace, a message per field value keyed `TABLE NUL FIELD`, the latest
//! one wins.
//!
//! Pulsar deletes what every subscription of a topic acked (and, with none,
//! whatever retention lets go), and compacting a topic takes its admin API,
//! which a pipeline's credentials need not reach. So the table holds its
//! values with a durable subscription of its own that never acks what it
//! is sent: every message stays until acked, and whichever host reads the
//! table acks the messages a newer value of the same field replaced. Pulsar
//! frees a ledger only once everything in it is acked, so a value older than
//! [`REFRESH_AFTER`] is written again by the host that reads it, and one not
//! written for [`STATE_TABLE_KEPT`] is acked and gone. A value goes in parts
//! of at most [`PART_MAX`] bytes (a broker takes 5 MB a message by default).
//! Each message says where the live values began when it was written
//! ([`LIVE_FROM`]), so a host that starts reads from there, not from the
//! start of all the topic keeps.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use clean_host_core::timestamp::now_ms;
use futures::channel::mpsc::{TryRecvError, UnboundedReceiver, UnboundedSender};
use futures::StreamExt;
use pulsar::consumer::InitialPosition;
use pulsar::producer::Message;
use pulsar::proto::MessageIdData;
use pulsar::{ConsumerOptions, Producer, ProducerOptions, Pulsar, SubType, TokioExecutor};

use super::{
    ask, connect, entry_id, last_entries, last_places, probe, produce, receive, runtime, stored, PulsarConsumer, PulsarMessage, FIRST_WAIT, IDLE_END, POLL,
    REQUEST_TIMEOUT,
};
use crate::source::{SourceError, StateTable, STATE_TABLE_KEPT, STATE_VALUE_MAX};

/// The largest part of a value a message carries.
const PART_MAX: usize = 1 << 20;
/// How long storing in the table may take.
const TABLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long reading the table to its end may take (from where its live
/// values begin, or from its start when that is not known).
const READ_TIMEOUT: Duration = Duration::from_secs(120);
/// A value read whose message is older than this is written again, so the
/// ledger it is in can be freed.
const REFRESH_AFTER: Duration = Duration::from_secs(10 * 60);
/// At most this many bytes of old values are written again a read.
const REFRESH_BUDGET: usize = 64 << 20;
/// Values this small (a sent alert's mark) are kept whichever table they
/// are of, so asking for a table of them never reads the topic again.
const SMALL_VALUE: usize = 1 << 10;
/// The subscription that holds the values.
const KEEPER: &str = "clean-host-state-keeper";

/// A message's properties: which put it is part of, its part (`I/N`), when
/// the value was first written, and whether this is it written again (it
/// keeps its put and first time, and never replaces another put's value).
const PUT: &str = "clean-host-put";
const PART: &str = "clean-host-part";
const WRITTEN: &str = "clean-host-written-ms";
const AGAIN: &str = "clean-host-again";
/// Where the live values began when the message was written, in its
/// writer's view (`LEDGER:ENTRY`): every message before it was replaced or
/// is gone, so a host that starts reads from the last message's, not from
/// the topic's start.
const LIVE_FROM: &str = "clean-host-live-from";

pub struct PulsarTable {
    name: String,
    topic: String,
    rt: tokio::runtime::Runtime,
    client: Pulsar<TokioExecutor>,
    /// Both always `Some` until dropped (inside the runtime, as the client needs).
    producer: Option<Producer<TokioExecutor>>,
    reader: Option<PulsarConsumer>,
    /// Messages for the keeping subscription to ack ([`keep`]).
    acks: UnboundedSender<Keep>,
    /// The last entry read.
    read_to: Option<(u64, u64)>,
    /// The reader got nothing for a whole read that stopped short of the
    /// end: the next read starts a new one (a client's consumer can stay
    /// stuck after a reconnect). One that read some and ran out of time
    /// goes on from where it is.
    reader_stuck: bool,
    /// An end known only to be in an earlier ledger that this reader read
    /// up to and then got nothing more for a while.
    quiet_at: Option<(u64, u64)>,
    values: Values,
    /// Tells this table's puts from other hosts': the process and when it started.
    writer: String,
    puts: u64,
    readers: u64,
}

/// A field's latest whole value, and the puts of it read in part so far
/// (two may interleave: a copy written again between a new put's parts).
#[derive(Default)]
struct Field {
    latest: Option<Value>,
    coming: Vec<Value>,
}

struct Value {
    put: String,
    written_ms: i64,
    /// Written again (see [`AGAIN`]).
    again: bool,
    published: Instant,
    /// Each part once read; empty when its bytes are not kept.
    parts: Vec<Option<Vec<u8>>>,
    /// Whether the parts' bytes are kept (the table is wanted, or the value is
    /// old enough to be written again).
    kept: bool,
    /// Its messages, acked once a newer value replaces it.
    ids: Vec<MessageIdData>,
}

/// A value to send.
struct Put<'a> {
    key: String,
    /// The put it is written again for; `None`: a new put.
    again: Option<String>,
    written_ms: i64,
    value: Cow<'a, [u8]>,
}

impl Value {
    fn whole(&self) -> bool {
        self.parts.iter().all(Option::is_some)
    }

    fn bytes(&self) -> Vec<u8> {
        self.parts.iter().flatten().flatten().copied().collect()
    }

    /// Old enough to be written again.
    fn old(&self) -> bool {
        self.published.elapsed() >= REFRESH_AFTER
    }
}

/// Which table wrote a put (`WRITER-N`).
fn writer_of(put: &str) -> &str {
    put.rsplit_once('-').map_or(put, |(writer, _)| writer)
}

/// A field's key: `TABLE NUL FIELD`.
fn key(table: &str, field: &str) -> String {
    format!("{table}\0{field}")
}

/// One message of the table, as read.
struct Part {
    key: String,
    put: String,
    index: usize,
    count: usize,
    written_ms: i64,
    again: bool,
    /// How long ago it was published.
    age: Duration,
    id: MessageIdData,
    bytes: Vec<u8>,
}

impl Part {
    /// The part `m` is; its id if it is none (not written by a host).
    fn of(m: PulsarMessage) -> Result<Part, MessageIdData> {
        let meta = &m.payload.metadata;
        let property = |name: &str| meta.properties.iter().find(|kv| kv.key == name).map(|kv| kv.value.as_str());
        let parsed = (|| {
            let (index, count) = property(PART)?.split_once('/')?;
            let (index, count) = (index.parse::<usize>().ok()?, count.parse::<usize>().ok()?);
            (index < count && count <= STATE_VALUE_MAX.div_ceil(PART_MAX)).then_some(())?;
            Some(Part {
                key: meta.partition_key.clone()?,
                put: property(PUT)?.to_string(),
                index,
                count,
                written_ms: property(WRITTEN)?.parse().ok()?,
                again: property(AGAIN).is_some(),
                age: Duration::from_millis(now_ms().saturating_sub(meta.publish_time as i64).max(0) as u64),
                id: m.message_id().clone(),
                bytes: Vec::new(),
            })
        })();
        match parsed {
            Some(part) => Ok(Part { bytes: m.payload.data, ..part }),
            None => Err(m.message_id().clone()),
        }
    }
}

/// What was read of the table.
#[derive(Default)]
struct Values {
    /// Per key, its latest whole value, and the parts of a newer one.
    fields: HashMap<String, Field>,
    /// Tables whose values' bytes are kept (the topic holds every stream's).
    wanted: HashSet<String>,
    /// Tables some value of which was read without its bytes.
    passed: HashSet<String>,
}

impl Values {
    /// Read `part`; returns the messages no value needs any more: of the
    /// value a newer one replaced, of puts its writer began before a newer
    /// one and left unfinished (it stopped midway), of a copy written again
    /// after another put replaced its value. Another writer's unfinished
    /// put is left to finish (or to go after [`REFRESH_AFTER`]).
    fn read(&mut self, part: Part) -> Vec<MessageIdData> {
        let table = part.key.split_once('\0').map_or("", |(table, _)| table);
        let field = self.fields.entry(part.key.clone()).or_default();
        // A copy of a value whose bytes are kept keeps them: it is written again when old.
        let copy_of_kept = field.latest.as_ref().is_some_and(|v| v.kept && v.put == part.put);
        let small = part.count == 1 && part.bytes.len() <= SMALL_VALUE;
        let kept = self.wanted.contains(table) || small || part.age >= REFRESH_AFTER || copy_of_kept;
        if !kept {
            self.passed.insert(table.to_string());
        }
        // A copy keeps apart from its put's own parts: a reader that starts where the
        // live values begin may have read only the tail of a replaced put.
        let at = match field.coming.iter().position(|c| c.put == part.put && c.again == part.again) {
            Some(at) => at,
            None => {
                field.coming.push(Value {
                    put: part.put,
                    written_ms: part.written_ms,
                    again: part.again,
                    published: Instant::now().checked_sub(part.age).unwrap_or_else(Instant::now),
                    parts: vec![None; part.count],
                    kept,
                    ids: Vec::new(),
                });
                field.coming.len() - 1
            }
        };
        let coming = &mut field.coming[at];
        coming.ids.push(part.id);
        if let Some(slot @ None) = coming.parts.get_mut(part.index) {
            *slot = Some(if coming.kept { part.bytes } else { Vec::new() });
        }
        let mut unneeded = Vec::new();
        if coming.whole() {
            let done = field.coming.remove(at);
            if !done.again {
                // Its writer's puts begun before it (in the log's order) were left unfinished.
                let mut index = 0;
                field.coming.retain(|c| {
                    let passed_over = index < at && writer_of(&c.put) == writer_of(&done.put);
                    index += 1;
                    if passed_over {
                        unneeded.extend(c.ids.iter().cloned());
                    }
                    !passed_over
                });
            }
            if done.again && field.latest.as_ref().is_some_and(|latest| latest.put != done.put) {
                unneeded.extend(done.ids);
            } else {
                unneeded.extend(field.latest.take().into_iter().flat_map(|v| v.ids));
                field.latest = Some(done);
            }
        }
        unneeded
    }

    /// Forget the values first written over [`STATE_TABLE_KEPT`] before
    /// `now_ms`, and puts left unfinished for [`REFRESH_AFTER`]; returns
    /// their messages.
    fn expire(&mut self, now_ms: i64) -> Vec<MessageIdData> {
        let kept_ms = STATE_TABLE_KEPT.as_millis() as i64;
        let mut gone = Vec::new();
        for field in self.fields.values_mut() {
            if field.latest.as_ref().is_some_and(|v| now_ms - v.written_ms > kept_ms) {
                gone.extend(field.latest.take().into_iter().flat_map(|v| v.ids));
            }
            let (stale, coming) = std::mem::take(&mut field.coming).into_iter().partition::<Vec<_>, _>(Value::old);
            gone.extend(stale.into_iter().flat_map(|v| v.ids));
            field.coming = coming;
        }
        self.fields.retain(|_, f| f.latest.is_some() || !f.coming.is_empty());
        gone
    }

    /// The first message a value read so far still needs.
    fn earliest_live(&self) -> Option<(u64, u64)> {
        let values = self.fields.values().flat_map(|f| f.latest.iter().chain(&f.coming));
        values.flat_map(|v| &v.ids).map(|id| (id.ledger_id, id.entry_id)).min()
    }

    /// Some value old enough to be written again had its bytes passed over.
    fn old_passed_over(&self) -> bool {
        self.fields.values().filter_map(|f| f.latest.as_ref()).any(|v| v.old() && !v.kept)
    }

    /// The values due to be written again, as they are, up to about `budget` bytes.
    fn due_again(&self, budget: usize) -> Vec<Put<'static>> {
        let mut old = self.fields.iter().filter_map(|(key, f)| Some((key, f.latest.as_ref().filter(|v| v.old() && v.kept)?)));
        let mut again = Vec::new();
        let mut bytes = 0;
        while let Some((key, v)) = old.next().filter(|_| bytes < budget) {
            let value = v.bytes();
            bytes += value.len();
            again.push(Put { key: key.clone(), again: Some(v.put.clone()), written_ms: v.written_ms, value: Cow::Owned(value) });
        }
        again
    }

    fn value(&self, key: &str) -> Option<Vec<u8>> {
        self.fields.get(key).and_then(|f| f.latest.as_ref()).map(Value::bytes)
    }

    /// Each field of `table` and its value.
    fn table(&self, table: &str) -> Vec<(String, Vec<u8>)> {
        let prefix = key(table, "");
        let fields = self.fields.iter().filter_map(|(k, f)| Some((k.strip_prefix(&prefix)?.to_string(), f.latest.as_ref()?.bytes())));
        fields.collect()
    }
}

impl Drop for PulsarTable {
    fn drop(&mut self) {
        let _inside = self.rt.enter();
        self.producer.take();
        self.reader.take();
    }
}

impl PulsarTable {
    /// The tables in `persistent://PATH` (`tenant/namespace/topic`) on `hosts`.
    pub fn new(hosts: &str, path: &str) -> Result<Self, SourceError> {
        let topic = format!("persistent://{path}");
        let rt = runtime()?;
        let client = connect(&rt, hosts)?;
        let producer = rt
            .block_on(client.producer().with_topic(&topic).with_options(ProducerOptions::default()).build())
            .map_err(|e| SourceError::Broker(format!("producer for {topic}: {e}")))?;
        let acks = keeper(&rt, &client, &topic)?;
        let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let mut table = PulsarTable {
            name: format!("pulsar://{hosts}/{path}"),
            topic,
            rt,
            client,
            producer: Some(producer),
            reader: None,
            acks,
            read_to: None,
            reader_stuck: false,
            quiet_at: None,
            values: Values::default(),
            writer: format!("{}-{started}", std::process::id()),
            puts: 0,
            readers: 0,
        };
        table.rewind()?;
        Ok(table)
    }

    /// Read again from where the live values begin (the topic's start if
    /// that is not known), with a reader of its own (a subscription that
    /// lasts as long as it).
    fn rewind(&mut self) -> Result<(), SourceError> {
        let from = self.live_from();
        self.readers += 1;
        let subscription = format!("clean-host-state-reader-{}-{}", self.writer, self.readers);
        // Parts of a MiB at most, 32 at a time.
        let mut options =
            ConsumerOptions { receiver_queue_size: Some(32), ..ConsumerOptions::default().durable(false).with_initial_position(InitialPosition::Earliest) };
        if let Some(from) = from {
            tracing::debug!("pulsar {}: reading from {from:?}, where its live values begin", self.name);
            options = options.starting_on_message(just_before(from));
        }
        let reader = self
            .rt
            .block_on(
                self.client
                    .consumer()
                    .with_topic(&self.topic)
                    .with_subscription(&subscription)
                    .with_subscription_type(SubType::Exclusive)
                    .with_batch_size(32)
                    .with_options(options)
                    .build(),
            )
            .map_err(|e| SourceError::Broker(format!("reading {}: {e}", self.name)))?;
        if let Some(old) = self.reader.replace(reader) {
            let _inside = self.rt.enter();
            drop(old);
        }
        self.values.fields.clear();
        self.values.passed.clear();
        self.read_to = None;
        self.quiet_at = None;
        Ok(())
    }

    /// Where the live values begin, as the topic's last message says
    /// ([`LIVE_FROM`]); `None` when it says nothing (or cannot be read).
    fn live_from(&self) -> Option<(u64, u64)> {
        let last = match last_entries(&self.rt, &self.client, &self.topic) {
            // The last ledger is new and empty: the last message is in an earlier one.
            Ok(mut last) => last.remove(&0).filter(|&(_, entry)| entry != u64::MAX)?,
            Err(e) => {
                tracing::debug!("{e}; the table is read from its start");
                return None;
            }
        };
        let subscription = format!("clean-host-state-start-{}-{}", self.writer, self.readers);
        let options = ConsumerOptions::default().starting_on_message(just_before(last));
        let said = self.rt.block_on(async {
            let mut probe = probe(&self.client, &self.topic, subscription, options).await.ok()?;
            let m = tokio::time::timeout(REQUEST_TIMEOUT, probe.next()).await.ok()??.ok();
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, probe.close()).await;
            let m = m?;
            let said = m.payload.metadata.properties.iter().find(|kv| kv.key == LIVE_FROM)?;
            let (ledger, entry) = said.value.split_once(':')?;
            Some((ledger.parse().ok()?, entry.parse().ok()?))
        });
        said.filter(|&from| from <= last)
    }

    /// Where the values this table knows of begin: its first live message,
    /// or the next after all it read; `None` before it read any.
    fn live_from_here(&self) -> Option<(u64, u64)> {
        let next = self.read_to.map(|(ledger, entry)| (ledger, entry + 1))?;
        Some(self.values.earliest_live().map_or(next, |live| live.min(next)))
    }

    /// Keep `table`'s values from now on: read again (from where the live
    /// values begin) if some were passed over.
    fn want(&mut self, table: &str) -> Result<(), SourceError> {
        if !self.values.wanted.contains(table) {
            if self.values.passed.contains(table) {
                self.rewind()?;
            }
            self.values.wanted.insert(table.to_string());
        }
        Ok(())
    }

    /// Read every message written so far (an error if that takes over
    /// `within`), ack what newer values replaced, and write again the values
    /// that hold old ledgers.
    fn catch_up(&mut self, rewound: bool, within: Duration) -> Result<(), SourceError> {
        if std::mem::take(&mut self.reader_stuck) {
            tracing::info!("pulsar {}: the last read stopped short of the end; reading again with a new reader", self.name);
            self.rewind()?;
        }
        let mut read = Vec::new();
        let end = match self.end(&mut read) {
            Ok(end) => end,
            // The reader may be one the client gave up reconnecting: a new one
            // reads again (what the old one read goes with it).
            Err(_) => {
                read.clear();
                self.rewind()?;
                self.end(&mut read)?
            }
        };
        let (started, read_from) = (Instant::now(), self.read_to);
        // An end just before a new ledger's first entry is somewhere after the
        // last message: read until nothing has come for IDLE_END (half the
        // time given, if less). One empty poll is no end: a new reader's first
        // messages, or entries read back from storage, can take longer. A
        // reader that was quiet at this very end before has nothing more to
        // read but what is queued (a message written since would have moved it).
        let exact = end.is_some_and(|(_, entry)| entry != u64::MAX);
        let quiet_end = if end.is_some() && end == self.quiet_at { POLL } else { IDLE_END.min(within / 2) };
        let mut quiet_since = Instant::now();
        while (exact || quiet_since.elapsed() < quiet_end) && end.is_some_and(|end| self.read_to.is_none_or(|at| at < end)) {
            if started.elapsed() > within {
                self.reader_stuck = self.read_to == read_from;
                return Err(SourceError::Broker(format!("reading {}: not at its end after {within:?}", self.name)));
            }
            let reader = self.reader.as_mut().expect("set until dropped");
            let more = if read.is_empty() { receive(&self.rt, reader, usize::MAX) } else { Some((Vec::new(), None)) };
            match more {
                Some((more, failed)) => {
                    if !more.is_empty() || !read.is_empty() || failed.is_some() {
                        quiet_since = Instant::now();
                    }
                    read.extend(more);
                    if let Some(e) = failed {
                        tracing::warn!("pulsar {}: {e}; the client reconnects with backoff", self.name);
                    }
                }
                // The client gave up reconnecting: a new reader reads again.
                None => {
                    self.rewind()?;
                    quiet_since = Instant::now();
                }
            }
            for m in read.drain(..) {
                self.take(m);
            }
        }
        for m in read {
            self.take(m);
        }
        if !exact {
            self.quiet_at = end;
        }
        self.tidy(rewound, within)
    }

    /// Where the topic's last message is ([`last_places`]; `None`: it has
    /// none); what is read while asking goes in `read`.
    fn end(&mut self, read: &mut Vec<PulsarMessage>) -> Result<Option<(u64, u64)>, SourceError> {
        let reader = self.reader.as_mut().expect("set until dropped");
        let ids = match ask(&self.rt, reader, read, FIRST_WAIT, async |c: &mut PulsarConsumer| c.get_last_message_id().await) {
            Some(ids) => ids.map_err(|e| SourceError::Broker(format!("the end of {}: {e}", self.name)))?,
            None => return Err(SourceError::Broker(format!("the end of {}: no answer within {REQUEST_TIMEOUT:?}", self.name))),
        };
        Ok(last_places(&ids).remove(&0))
    }

    /// One message read.
    fn take(&mut self, m: PulsarMessage) {
        let id = m.message_id();
        let at = (id.ledger_id, id.entry_id);
        if self.read_to.is_some_and(|read_to| at <= read_to) {
            return; // sent again: a reconnect subscribes from where it began again
        }
        self.read_to = Some(at);
        let unneeded = match Part::of(m) {
            Ok(part) => self.values.read(part),
            // Not a value a host wrote: it holds no ledger either.
            Err(id) => vec![id],
        };
        self.ack(unneeded);
    }

    /// Ack messages whose values are replaced or gone, so Pulsar may free them.
    fn ack(&mut self, ids: Vec<MessageIdData>) {
        self.tell(ids.into_iter().map(|id| Keep::Ack(entry_id(id))).collect());
    }

    /// Tell the keeping subscription's consumer `what`.
    fn tell(&mut self, what: Vec<Keep>) {
        for it in what {
            if let Err(unsent) = self.acks.unbounded_send(it) {
                // Its consumer gave up reconnecting: a new one acks the rest.
                match keeper(&self.rt, &self.client, &self.topic) {
                    Ok(acks) => self.acks = acks,
                    Err(e) => tracing::warn!("pulsar {}: {e}; what it was told is done once a keeping consumer gets those messages again", self.name),
                }
                let _ = self.acks.unbounded_send(unsent.into_inner());
            }
        }
    }

    /// Forget values not written for [`STATE_TABLE_KEPT`]; tell the keeping
    /// consumer where the dead messages end; write again the values older
    /// than [`REFRESH_AFTER`] (read again first if their bytes were passed
    /// over), at most [`REFRESH_BUDGET`] bytes a read.
    /// Writing again is housekeeping: a failure is said, and the read stands.
    fn tidy(&mut self, rewound: bool, within: Duration) -> Result<(), SourceError> {
        let expired = self.values.expire(now_ms());
        self.ack(expired);
        if let Some(place) = self.live_from_here() {
            self.tell(vec![Keep::DeadBefore(place)]);
        }
        if !rewound && self.values.old_passed_over() {
            self.rewind()?;
            return self.catch_up(true, within);
        }
        let again = self.values.due_again(REFRESH_BUDGET);
        if !again.is_empty() {
            tracing::debug!("pulsar {}: writing {} value(s) again, so their old ledgers can go", self.name, again.len());
            if let Err(e) = self.send(&again) {
                tracing::warn!("{e}; they are written again after a later read");
            }
        }
        Ok(())
    }

    /// Send each value in parts; returns once the broker stored them all.
    fn send(&mut self, values: &[Put]) -> Result<(), SourceError> {
        let (mut receipts, deadline) = (Vec::new(), Instant::now() + TABLE_TIMEOUT);
        let live_from = self.live_from_here();
        for v in values {
            let put = match &v.again {
                Some(put) => put.clone(),
                None => {
                    self.puts += 1;
                    format!("{}-{}", self.writer, self.puts)
                }
            };
            let parts: Vec<&[u8]> = if v.value.is_empty() { vec![&[]] } else { v.value.chunks(PART_MAX).collect() };
            for (index, part) in parts.iter().enumerate() {
                let mut properties = HashMap::from([
                    (PUT.to_string(), put.clone()),
                    (PART.to_string(), format!("{index}/{}", parts.len())),
                    (WRITTEN.to_string(), v.written_ms.to_string()),
                ]);
                if v.again.is_some() {
                    properties.insert(AGAIN.to_string(), "1".to_string());
                }
                if let Some((ledger, entry)) = live_from {
                    properties.insert(LIVE_FROM.to_string(), format!("{ledger}:{entry}"));
                }
                let message = Message { payload: part.to_vec(), partition_key: Some(v.key.clone()), properties, ..Message::default() };
                let producer = self.producer.as_mut().expect("set until dropped");
                produce(&self.rt, &self.name, producer, message, &mut receipts, deadline)?;
            }
        }
        stored(&self.rt, &self.name, receipts, deadline)
    }
}

/// The id a reader is given to start at `(ledger, entry)`: a cursor starts
/// after the id it is given (entry -1 is before a ledger's first). Brokers
/// since 2.5 step such a start back one entry, which the Java client drops
/// and this one does not: a reader may start one message early, which only
/// reads a message more (and a probe of the last message may read the one
/// before it: an older hint, as safe).
fn just_before((ledger_id, entry): (u64, u64)) -> MessageIdData {
    MessageIdData { ledger_id, entry_id: entry.wrapping_sub(1), ..Default::default() }
}

/// What the keeping subscription's consumer is told ([`keep`]).
enum Keep {
    /// A message a newer value replaced (or one not a host's).
    Ack(MessageIdData),
    /// Every message before this place is dead (see [`PulsarTable::live_from_here`]).
    DeadBefore((u64, u64)),
}

/// A consumer of the keeping subscription, on a task that acks what is
/// sent to the returned channel ([`keep`]).
fn keeper(rt: &tokio::runtime::Runtime, client: &Pulsar<TokioExecutor>, topic: &str) -> Result<UnboundedSender<Keep>, SourceError> {
    let keeping =
        ConsumerOptions { receiver_queue_size: Some(16), ..ConsumerOptions::default().durable(true).with_initial_position(InitialPosition::Earliest) };
    let build =
        client.consumer().with_topic(topic).with_subscription(KEEPER).with_subscription_type(SubType::Shared).with_batch_size(16).with_options(keeping).build();
    let consumer = match rt.block_on(async { tokio::time::timeout(TABLE_TIMEOUT, build).await }) {
        Ok(built) => built.map_err(|e| SourceError::Broker(format!("subscribing '{KEEPER}' to {topic}: {e}")))?,
        Err(_) => return Err(SourceError::Broker(format!("subscribing '{KEEPER}' to {topic}: no answer within {TABLE_TIMEOUT:?}"))),
    };
    let (acks, to_ack) = futures::channel::mpsc::unbounded();
    rt.spawn(keep(consumer, to_ack));
    Ok(acks)
}

/// The keeping subscription's consumer, until the table's runtime stops or
/// the client gives the consumer up. It acks what it is told to, and holds
/// what the broker sends it (unacked, so kept) until it is dead. The client
/// says nothing of an ack lost in a reconnect, and the host that sent it
/// may be gone (a `kill -9`): the broker sends such a message again to a
/// keeping consumer (this one after a reconnect, or another host's), which
/// acks it once it is before where the live values begin. Otherwise it
/// would hold its ledger and every later one, as no reader goes back there.
async fn keep(mut keeper: PulsarConsumer, mut told: UnboundedReceiver<Keep>) {
    let mut held: BTreeMap<(u64, u64), MessageIdData> = BTreeMap::new();
    let mut dead_before = (0, 0);
    loop {
        let mut due = Vec::new();
        loop {
            match told.try_recv() {
                Ok(Keep::Ack(id)) => {
                    held.remove(&(id.ledger_id, id.entry_id));
                    due.push(id);
                }
                Ok(Keep::DeadBefore(place)) => dead_before = dead_before.max(place),
                Err(TryRecvError::Closed) => return,
                Err(TryRecvError::Empty) => break,
            }
        }
        let alive = held.split_off(&dead_before);
        due.extend(std::mem::replace(&mut held, alive).into_values());
        for id in due {
            if let Err(e) = keeper.ack_with_id("", id).await {
                tracing::warn!("pulsar: acking a replaced checkpoint failed ({e}); acked again once it comes back");
            }
        }
        match tokio::time::timeout(POLL, keeper.next()).await {
            Ok(None) => return,
            Ok(Some(Ok(m))) => {
                let id = entry_id(m.message_id().clone());
                held.insert((id.ledger_id, id.entry_id), id);
            }
            Ok(Some(Err(_))) | Err(_) => {}
        }
    }
}

impl StateTable for PulsarTable {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn put(&mut self, table: &str, fields: &[(String, Vec<u8>)]) -> Result<(), SourceError> {
        if let Some((_, value)) = fields.iter().find(|(_, v)| v.len() > STATE_VALUE_MAX) {
            return Err(SourceError::Broker(format!("{}: a value of {} bytes is over the {} MiB limit", self.name, value.len(), STATE_VALUE_MAX >> 20)));
        }
        let written_ms = now_ms();
        let values: Vec<Put> =
            fields.iter().map(|(field, value)| Put { key: key(table, field), again: None, written_ms, value: Cow::Borrowed(value) }).collect();
        self.send(&values)
    }

    fn get_all(&mut self, table: &str) -> Result<Vec<(String, Vec<u8>)>, SourceError> {
        self.want(table)?;
        self.catch_up(false, READ_TIMEOUT)?;
        Ok(self.values.table(table))
    }

    fn get(&mut self, table: &str, field: &str) -> Result<Option<Vec<u8>>, SourceError> {
        self.want(table)?;
        self.catch_up(false, READ_TIMEOUT)?;
        Ok(self.values.value(&key(table, field)))
    }

    /// One read to the table's end for every field, not one a field.
    fn get_within(&mut self, table: &str, fields: &[String], within: Duration) -> Result<Vec<Option<Vec<u8>>>, SourceError> {
        self.want(table)?;
        self.catch_up(false, within)?;
        Ok(fields.iter().map(|field| self.values.value(&key(table, field))).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(entry: u64) -> MessageIdData {
        MessageIdData { ledger_id: 7, entry_id: entry, ..Default::default() }
    }

    /// Part `index` of `count` of put `put` of `key`, just published, at entry `entry`.
    fn part(key: &str, put: &str, (index, count): (usize, usize), entry: u64, bytes: &[u8]) -> Part {
        let written_ms = 1_000;
        Part { key: key.into(), put: put.into(), index, count, written_ms, again: false, age: Duration::ZERO, id: id(entry), bytes: bytes.to_vec() }
    }

    fn wanting(table: &str) -> Values {
        Values { wanted: HashSet::from([table.to_string()]), ..Values::default() }
    }

    fn entries(ids: &[MessageIdData]) -> Vec<u64> {
        ids.iter().map(|id| id.entry_id).collect()
    }

    #[test]
    fn a_value_in_parts_is_whole_once_every_part_is_read_and_replaces_the_last() {
        let mut values = wanting("t");
        let k = key("t", "0");
        assert!(values.read(part(&k, "p1", (0, 1), 1, b"old")).is_empty());
        assert!(values.read(part(&k, "p2", (0, 2), 2, b"new ")).is_empty());
        assert_eq!(values.value(&k).as_deref(), Some(&b"old"[..]), "p2 is not whole yet");
        assert_eq!(entries(&values.read(part(&k, "p2", (1, 2), 3, b"value"))), [1], "p1's message is no longer needed");
        assert_eq!(values.value(&k).as_deref(), Some(&b"new value"[..]));
        assert_eq!(values.table("t"), vec![("0".to_string(), b"new value".to_vec())]);
        assert!(values.table("other").is_empty());
    }

    #[test]
    fn a_put_left_unfinished_by_its_writer_is_passed_over() {
        let mut values = wanting("t");
        let k = key("t", "0");
        values.read(part(&k, "a-1", (0, 1), 1, b"a"));
        // Writer a stopped after the first of three parts; b is midway through its own.
        values.read(part(&k, "a-2", (0, 3), 2, b"b"));
        values.read(part(&k, "b-1", (0, 2), 3, b"other "));
        assert_eq!(entries(&values.read(part(&k, "a-3", (0, 1), 4, b"c"))), [2, 1]);
        assert_eq!(values.value(&k).as_deref(), Some(&b"c"[..]));
        // b's put was left to finish.
        assert_eq!(entries(&values.read(part(&k, "b-1", (1, 2), 5, b"writer"))), [4]);
        assert_eq!(values.value(&k).as_deref(), Some(&b"other writer"[..]));
    }

    #[test]
    fn a_copy_written_again_between_the_parts_of_a_new_put_loses_neither() {
        let mut values = wanting("t");
        let k = key("t", "0");
        values.read(part(&k, "p1", (0, 1), 1, b"old"));
        values.read(part(&k, "p2", (0, 2), 2, b"new "));
        // Another host writes p1 again, as it is, between p2's parts.
        assert_eq!(entries(&values.read(Part { again: true, ..part(&k, "p1", (0, 1), 3, b"old") })), [1]);
        assert_eq!(entries(&values.read(part(&k, "p2", (1, 2), 4, b"value"))), [3]);
        assert_eq!(values.value(&k).as_deref(), Some(&b"new value"[..]));
    }

    #[test]
    fn a_value_written_again_never_replaces_a_newer_put() {
        let mut values = wanting("t");
        let k = key("t", "0");
        values.read(part(&k, "p1", (0, 1), 1, b"first"));
        // p1 written again: it stays p1, its older message goes.
        let again = |entry| Part { again: true, ..part(&k, "p1", (0, 1), entry, b"first") };
        assert_eq!(entries(&values.read(again(2))), [1]);
        assert_eq!(values.value(&k).as_deref(), Some(&b"first"[..]));
        // A newer put, then p1 written again by a host that had not read it yet.
        assert_eq!(entries(&values.read(part(&k, "p2", (0, 1), 3, b"second"))), [2]);
        assert_eq!(entries(&values.read(again(4))), [4], "the late copy of p1 is itself unneeded");
        assert_eq!(values.value(&k).as_deref(), Some(&b"second"[..]));
    }

    #[test]
    fn values_of_tables_not_asked_for_keep_no_bytes_unless_old_or_small() {
        let mut values = wanting("t");
        let big = vec![1; SMALL_VALUE + 1];
        values.read(part(&key("u", "0"), "p1", (0, 1), 1, &big));
        assert_eq!(values.value(&key("u", "0")).as_deref(), Some(&b""[..]));
        assert!(!values.old_passed_over() && values.due_again(usize::MAX).is_empty());
        assert!(values.passed.contains("u") && !values.passed.contains("t"));
        // A table of small values (sent alerts' marks) is whole without being asked for.
        values.read(part(&key("v", "0"), "p5", (0, 1), 6, b"small"));
        assert_eq!(values.table("v"), vec![("0".to_string(), b"small".to_vec())]);
        assert!(!values.passed.contains("v"));
        let old = Part { age: REFRESH_AFTER, ..part(&key("u", "1"), "p2", (0, 1), 2, &big) };
        values.read(old);
        let again = values.due_again(usize::MAX);
        assert_eq!(again.len(), 1);
        assert_eq!((again[0].key.as_str(), again[0].again.as_deref(), &*again[0].value), (key("u", "1").as_str(), Some("p2"), &big[..]));
        // Its copy, read back new, keeps its bytes: it is written again when old.
        values.read(Part { again: true, ..part(&key("u", "1"), "p2", (0, 1), 3, &big) });
        assert_eq!(values.value(&key("u", "1")), Some(big.clone()));
        // A budget of one byte writes one value again.
        values.read(Part { age: REFRESH_AFTER, ..part(&key("u", "2"), "p3", (0, 1), 4, &big) });
        values.read(Part { age: REFRESH_AFTER, ..part(&key("u", "3"), "p4", (0, 1), 5, &big) });
        assert_eq!((values.due_again(usize::MAX).len(), values.due_again(1).len()), (2, 1));
    }

    #[test]
    fn values_not_written_for_the_kept_time_and_stale_unfinished_puts_go() {
        let mut values = wanting("t");
        values.read(part(&key("t", "0"), "p1", (0, 1), 1, b"a"));
        values.read(Part { age: REFRESH_AFTER, ..part(&key("t", "1"), "p2", (0, 2), 2, b"half") });
        values.read(Part { written_ms: 5_000, ..part(&key("t", "2"), "p3", (0, 1), 3, b"c") });
        let now = 1_000 + STATE_TABLE_KEPT.as_millis() as i64 + 1;
        let mut gone = entries(&values.expire(now));
        gone.sort();
        assert_eq!(gone, [1, 2]);
        assert_eq!(values.table("t"), vec![("2".to_string(), b"c".to_vec())]);
    }

    /// A host that starts reads from the first message a live value needs:
    /// a replaced value's messages are not, a new put's parts read so far are.
    #[test]
    fn live_values_begin_at_the_first_message_one_still_needs() {
        let mut values = wanting("t");
        assert_eq!(values.earliest_live(), None);
        values.read(part(&key("t", "0"), "p1", (0, 1), 1, b"old"));
        values.read(part(&key("u", "0"), "p2", (0, 1), 2, &[1; SMALL_VALUE + 1]));
        values.read(part(&key("t", "0"), "p3", (0, 2), 3, b"new "));
        assert_eq!(values.earliest_live(), Some((7, 1)));
        values.read(part(&key("t", "0"), "p3", (1, 2), 4, b"value"));
        assert_eq!(values.earliest_live(), Some((7, 2)), "another table's value, its bytes passed over, is live too");
        values.read(part(&key("u", "0"), "p4", (0, 1), 5, b"u"));
        assert_eq!(values.earliest_live(), Some((7, 3)));
    }

    /// A reader that starts where the live values begin may read only the
    /// tail of a replaced put: a copy of that put written again later never
    /// completes it into a value that replaces the newer one.
    #[test]
    fn a_copy_never_completes_the_tail_of_its_put() {
        let mut values = wanting("t");
        let k = key("t", "0");
        values.read(part(&k, "p1", (1, 2), 1, b"tail"));
        values.read(part(&k, "p2", (0, 1), 2, b"newer"));
        let again = |index, entry| Part { again: true, ..part(&k, "p1", (index, 2), entry, b"copy") };
        values.read(again(0, 3));
        assert_eq!(entries(&values.read(again(1, 4))), [3, 4], "the late copy is itself unneeded");
        assert_eq!(values.value(&k).as_deref(), Some(&b"newer"[..]));
    }

    #[test]
    fn parts_that_lie_about_their_place_are_passed_over() {
        let mut values = wanting("t");
        let k = key("t", "0");
        // An index out of its count never fills the value.
        values.read(part(&k, "p1", (5, 2), 1, b"x"));
        values.read(part(&k, "p1", (0, 2), 2, b"y"));
        assert_eq!(values.value(&k), None);
        // The same part twice counts once.
        values.read(part(&k, "p1", (0, 2), 3, b"z"));
        values.read(part(&k, "p1", (1, 2), 4, b"!"));
        assert_eq!(values.value(&k).as_deref(), Some(&b"y!"[..]));
    }
}
