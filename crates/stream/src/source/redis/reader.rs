//! XREADGROUP on a connection of its own, its reply read straight from the
//! bytes into entries.
//!
//! The `redis` crate parses every reply with parser combinators built to
//! resume across reads; for a reply of a thousand entries that costs more
//! than everything else the source does (the crate's own maintainers
//! measured 60% of a client's time in it), and it made the source the
//! slowest stage of a Redis pipeline. Only this one reply, the hot one, is
//! read here; every other command still goes through the crate.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use redis::{ErrorKind, RedisError, RedisResult, ServerErrorKind};

use crate::source::config::Login;

/// Bytes asked of the socket at a time at least (a reply of 1000 typical entries is ~300 KB).
const READ_CHUNK: usize = 256 * 1024;
/// Room made for a reply before its first read at most, however large the last one was.
const MAX_FIRST_READ: usize = 16 << 20;
/// The longest string Redis stores (its `proto-max-bulk-len`).
const MAX_STRING: usize = 512 << 20;

/// An XREADGROUP reply: its entries, whose fields stay in the reply's bytes
/// (one buffer, not an allocation a field).
#[derive(Default)]
pub struct Reply {
    bytes: Bytes,
    /// In the order the server sent them (id order).
    pub entries: Vec<Entry>,
    /// Each entry's field/value pairs in turn, as ranges of `bytes`.
    fields: Vec<(Range<usize>, Range<usize>)>,
}

/// An entry of an XREADGROUP reply.
pub struct Entry {
    pub id: Arc<str>,
    /// The id as (milliseconds, sequence number): ids compare as these.
    pub at: (u64, u64),
    /// Its pairs in the reply's `fields`.
    fields: Range<usize>,
}

impl Entry {
    /// Deleted from the stream since it was delivered: Redis keeps no entry without fields.
    pub fn deleted(&self) -> bool {
        self.fields.is_empty()
    }
}

/// An entry's fields are read through the reply it came in (another
/// reply's entry reads the wrong bytes).
impl Reply {
    /// `entry`'s field/value pairs.
    pub fn fields(&self, entry: &Entry) -> impl DoubleEndedIterator<Item = (&[u8], &[u8])> {
        self.fields[entry.fields.clone()].iter().map(|(name, value)| (&self.bytes[name.clone()], &self.bytes[value.clone()]))
    }

    /// The value of `entry`'s last field named `name` (Redis shows an
    /// entry as a map), a slice of the reply.
    pub fn value(&self, entry: &Entry, name: &[u8]) -> Option<Bytes> {
        let (_, value) = self.fields(entry).rev().find(|&(n, _)| n == name)?;
        Some(self.bytes.slice_ref(value))
    }
}

/// An entry id `ms-seq` as a pair, to compare ids (a missing or malformed part is 0).
pub fn id_pair(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

/// A plain connection that only reads a group's entries.
pub struct StreamReader {
    socket: Box<dyn Wire>,
    /// The reply coming in: its first `filled` bytes; the rest is room
    /// made for it (zeroed once, as safe code must before a read into it).
    buf: Vec<u8>,
    filled: usize,
    /// The length of the last reply: room for the next is made at once.
    last_reply: usize,
    /// An XREADGROUP went out and its reply is not read yet.
    awaiting: bool,
}

/// A connection's bytes: a TCP stream, or TLS over one.
trait Wire: Read + Write + Send {}
impl<T: Read + Write + Send> Wire for T {}

/// A TLS client config trusting `ca` (PEM certificates), or the system's roots without one.
pub fn tls_config(ca: Option<&[u8]>) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| format!("tls_ca is not a PEM certificate file: {e}"))?;
                roots.add(cert).map_err(|e| format!("tls_ca: {e}"))?;
            }
            if roots.is_empty() {
                return Err("tls_ca holds no certificate".into());
            }
        }
        None => {
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            if roots.is_empty() {
                return Err("no system root certificates found: set tls_ca".into());
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

impl StreamReader {
    /// Connect to `hosts` (`host[:port]`), over TLS with `tls`, and log in
    /// with `login` when it has a password; reads time out after `read_timeout`.
    pub fn connect(
        hosts: &str,
        login: Option<&Login>,
        tls: Option<&Arc<rustls::ClientConfig>>,
        connect_timeout: Duration,
        read_timeout: Duration,
    ) -> RedisResult<Self> {
        let address = if hosts.rsplit_once(':').is_some_and(|(_, port)| port.parse::<u16>().is_ok()) { hosts.to_string() } else { format!("{hosts}:6379") };
        let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{hosts} resolves to no address"));
        for addr in address.to_socket_addrs()? {
            match TcpStream::connect_timeout(&addr, connect_timeout) {
                Ok(socket) => {
                    socket.set_read_timeout(Some(read_timeout))?;
                    socket.set_write_timeout(Some(connect_timeout))?;
                    socket.set_nodelay(true)?;
                    let socket: Box<dyn Wire> = match tls {
                        None => Box::new(socket),
                        Some(config) => {
                            let host = address.rsplit_once(':').map_or(address.as_str(), |(host, _)| host).trim_start_matches('[').trim_end_matches(']');
                            let name =
                                ServerName::try_from(host.to_string()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{host}: {e}")))?;
                            let session = rustls::ClientConnection::new(config.clone(), name).map_err(io::Error::other)?;
                            Box::new(rustls::StreamOwned::new(session, socket))
                        }
                    };
                    let mut reader = StreamReader { socket, buf: Vec::new(), filled: 0, last_reply: 0, awaiting: false };
                    if let Some((user, password)) = login.map(Login::user_and_password).filter(|(_, p)| !p.is_empty()) {
                        reader.log_in(&user, &password)?;
                    }
                    return Ok(reader);
                }
                Err(e) => last = e,
            }
        }
        Err(last.into())
    }

    /// AUTH [user] password; a refusal is no error that passes.
    fn log_in(&mut self, user: &str, password: &str) -> RedisResult<()> {
        let args: Vec<&[u8]> = match user {
            "" => vec![b"AUTH", password.as_bytes()],
            user => vec![b"AUTH", user.as_bytes(), password.as_bytes()],
        };
        self.socket.write_all(&command(&args))?;
        (self.buf, self.filled) = (Vec::new(), 0);
        loop {
            let mut c = Cursor { buf: &self.buf[..self.filled], at: 0 };
            match c.line() {
                Ok(b"+OK") if c.at == self.filled => return Ok(()),
                Ok(reply) => {
                    let said = String::from_utf8_lossy(reply.strip_prefix(b"-").unwrap_or(reply)).into_owned();
                    return Err(RedisError::from((ErrorKind::AuthenticationFailed, "AUTH refused", said)));
                }
                Err(Short::More) => self.fill()?,
                Err(_) => return Err(invalid("an AUTH reply that is no line")),
            }
        }
    }

    /// `XREADGROUP GROUP group consumer COUNT count [BLOCK ms] STREAMS stream after`.
    pub fn read(&mut self, group: &str, consumer: &str, count: usize, block: Option<Duration>, stream: &str, after: &str) -> RedisResult<Reply> {
        self.send_read(group, consumer, count, block, stream, after)?;
        self.receive()
    }

    /// Sends an XREADGROUP as [`StreamReader::read`] does, without waiting
    /// for its reply: [`StreamReader::receive`] reads it.
    pub fn send_read(&mut self, group: &str, consumer: &str, count: usize, block: Option<Duration>, stream: &str, after: &str) -> io::Result<()> {
        assert!(!self.awaiting, "one XREADGROUP at a time");
        let (count, block) = (count.to_string(), block.map(|b| b.as_millis().to_string()));
        let mut args: Vec<&[u8]> = vec![b"XREADGROUP", b"GROUP", group.as_bytes(), consumer.as_bytes(), b"COUNT", count.as_bytes()];
        if let Some(block) = &block {
            args.extend([&b"BLOCK"[..], block.as_bytes()]);
        }
        args.extend([&b"STREAMS"[..], stream.as_bytes(), after.as_bytes()]);
        self.socket.write_all(&command(&args))?;
        self.awaiting = true;
        Ok(())
    }

    /// Whether an XREADGROUP went out and its reply is not read yet.
    pub fn awaiting(&self) -> bool {
        self.awaiting
    }

    /// The entries of the XREADGROUP sent last.
    pub fn receive(&mut self) -> RedisResult<Reply> {
        assert!(self.awaiting, "no XREADGROUP to receive");
        self.awaiting = false;
        // The last reply's buffer went with its entries. Room an eighth larger
        // than the last reply: one as large is likely next (growing a buffer
        // on the way copies what came so far).
        let room = self.last_reply + self.last_reply / 8;
        (self.buf, self.filled) = (Vec::with_capacity(room.clamp(READ_CHUNK, MAX_FIRST_READ)), 0);
        loop {
            // A large reply comes in several reads. Whole, it ends in a line
            // end: only then is it parsed (a read that stops at one mid-reply
            // costs one parse that comes up short; one without its CR is refused).
            if !self.buf[..self.filled].ends_with(b"\n") {
                self.fill()?;
                continue;
            }
            match parse_reply(&self.buf[..self.filled]) {
                Ok((mut parsed, used)) if used == self.filled => {
                    // The entries' fields are ranges of the reply: it goes with them.
                    self.buf.truncate(used);
                    (parsed.bytes, self.filled) = (Bytes::from(std::mem::take(&mut self.buf)), 0);
                    // An empty one (a BLOCK that timed out) says nothing of the next burst.
                    if !parsed.entries.is_empty() {
                        self.last_reply = used;
                    }
                    return Ok(parsed);
                }
                Ok(_) => return Err(invalid("bytes after the reply")),
                Err(Short::More) => self.fill()?,
                Err(Short::Invalid(what)) => return Err(invalid(what)),
                Err(Short::Server(message)) => {
                    // LOADING passes once the server has its data set back.
                    let kind = if message.starts_with("LOADING") { ServerErrorKind::BusyLoading } else { ServerErrorKind::ResponseError };
                    return Err(RedisError::from((ErrorKind::Server(kind), "XREADGROUP failed", message)));
                }
            }
        }
    }

    /// Read what the socket has after the bytes so far.
    fn fill(&mut self) -> io::Result<()> {
        if self.filled == self.buf.len() {
            // The room made for the reply, or READ_CHUNK more.
            let more = (self.buf.capacity() - self.filled).max(READ_CHUNK);
            self.buf.resize(self.filled + more, 0);
        }
        let read = loop {
            // A signal (Ctrl-C) landing in the read is no broker error.
            match self.socket.read(&mut self.buf[self.filled..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                read => break read?,
            }
        };
        if read == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the server closed the connection"));
        }
        self.filled += read;
        Ok(())
    }
}

fn invalid(what: &'static str) -> RedisError {
    RedisError::from((ErrorKind::Parse, "unexpected XREADGROUP reply", what.to_string()))
}

/// A command as a RESP array of bulk strings.
fn command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Why no reply could be read from the bytes so far.
#[derive(Debug, PartialEq)]
enum Short {
    /// The reply goes on past them.
    More,
    Invalid(&'static str),
    /// The server answered with an error.
    Server(String),
}

/// The entries of an XREADGROUP reply at the start of `buf` (RESP2: nil,
/// or an array of [stream, entries] pairs) and the bytes it took; the
/// reply's `bytes` are for the caller to set (`buf`'s, as far as it took).
fn parse_reply(buf: &[u8]) -> Result<(Reply, usize), Short> {
    let mut c = Cursor { buf, at: 0 };
    let mut out = Reply::default();
    let Some(streams) = c.array()? else {
        return Ok((out, c.at));
    };
    for _ in 0..streams {
        if c.array()? != Some(2) {
            return Err(Short::Invalid("a stream that is not a pair"));
        }
        c.bulk()?;
        let Some(entries) = c.array()? else {
            continue;
        };
        // A length is only a claim until its bytes came.
        out.entries.reserve(entries.min(100_000));
        for _ in 0..entries {
            if c.array()? != Some(2) {
                return Err(Short::Invalid("an entry that is not a pair"));
            }
            let id = std::str::from_utf8(c.bulk()?).map_err(|_| Short::Invalid("an entry id that is not UTF-8"))?;
            let first = out.fields.len();
            if let Some(n) = c.array()? {
                if n % 2 == 1 {
                    return Err(Short::Invalid("a field without its value"));
                }
                for _ in 0..n / 2 {
                    let (name, value) = (c.bulk_at()?, c.bulk_at()?);
                    out.fields.push((name, value));
                }
            }
            out.entries.push(Entry { id: id.into(), at: id_pair(id), fields: first..out.fields.len() });
        }
    }
    Ok((out, c.at))
}

struct Cursor<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    /// The next line, without its CR LF.
    fn line(&mut self) -> Result<&'a [u8], Short> {
        let rest = &self.buf[self.at..];
        let end = memchr::memchr(b'\n', rest).ok_or(Short::More)?;
        if end == 0 || rest[end - 1] != b'\r' {
            return Err(Short::Invalid("a line that does not end in CR LF"));
        }
        self.at += end + 1;
        Ok(&rest[..end - 1])
    }

    /// The length a `kind` header (`*` array, `$` bulk string) gives; -1 is nil.
    fn header(&mut self, kind: u8) -> Result<i64, Short> {
        match self.line()?.split_first() {
            Some((&b'-', message)) => Err(Short::Server(String::from_utf8_lossy(message).into_owned())),
            Some((&k, n)) if k == kind => length(n).ok_or(Short::Invalid("a length that is no number")),
            _ => Err(Short::Invalid("another type than XREADGROUP replies with")),
        }
    }

    /// An array's length, or none for nil.
    fn array(&mut self) -> Result<Option<usize>, Short> {
        Ok(usize::try_from(self.header(b'*')?).ok())
    }

    fn bulk(&mut self) -> Result<&'a [u8], Short> {
        let at = self.bulk_at()?;
        Ok(&self.buf[at])
    }

    /// Where the next bulk string's bytes are in the buffer.
    fn bulk_at(&mut self) -> Result<Range<usize>, Short> {
        let n = usize::try_from(self.header(b'$')?).map_err(|_| Short::Invalid("a nil string"))?;
        if n > MAX_STRING {
            return Err(Short::Invalid("a string longer than Redis stores"));
        }
        let rest = &self.buf[self.at..];
        if rest.len() < n.saturating_add(2) {
            return Err(Short::More);
        }
        if &rest[n..n + 2] != b"\r\n" {
            return Err(Short::Invalid("a string longer than its length"));
        }
        let start = self.at;
        self.at += n + 2;
        Ok(start..start + n)
    }
}

/// A RESP length: `-1` (nil) or decimal digits, at most 18 of them.
fn length(digits: &[u8]) -> Option<i64> {
    match digits {
        b"-1" => Some(-1),
        [] => None,
        digits if digits.len() <= 18 => digits.iter().try_fold(0i64, |n, &d| d.is_ascii_digit().then(|| n * 10 + i64::from(d - b'0'))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reply's entries, with its bytes, as the reader hands them out.
    fn parse(bytes: &[u8]) -> Result<(Reply, usize), Short> {
        let (mut reply, used) = parse_reply(bytes)?;
        reply.bytes = Bytes::copy_from_slice(&bytes[..used]);
        Ok((reply, used))
    }

    fn bulk(s: &str) -> String {
        format!("${}\r\n{s}\r\n", s.len())
    }

    /// An entry as a test writes it: its id and its fields (none: deleted).
    type TestEntry<'a> = (&'a str, Option<&'a [(&'a str, &'a str)]>);

    fn reply(entries: &[TestEntry]) -> String {
        let mut out = format!("*1\r\n*2\r\n{}*{}\r\n", bulk("orders"), entries.len());
        for (id, fields) in entries {
            out += &format!("*2\r\n{}", bulk(id));
            match fields {
                Some(fields) => {
                    out += &format!("*{}\r\n", fields.len() * 2);
                    for (k, v) in *fields {
                        out += &(bulk(k) + &bulk(v));
                    }
                }
                None => out += "*-1\r\n",
            }
        }
        out
    }

    #[test]
    fn a_reply_reads_as_its_entries_and_a_timeout_as_none() {
        let text = reply(&[("1-0", Some(&[("data", "{\"a\":1}"), ("key", "k\r\nx")])), ("2-5", None), ("3-0", Some(&[("data", "")]))]);
        let (reply, used) = parse(text.as_bytes()).unwrap();
        assert_eq!(used, text.len());
        type Seen<'a> = Vec<(&'a str, (u64, u64), bool, Vec<(&'a [u8], &'a [u8])>)>;
        let seen: Seen = reply.entries.iter().map(|e| (&*e.id, e.at, e.deleted(), reply.fields(e).collect())).collect();
        let expected: Seen = vec![
            ("1-0", (1, 0), false, vec![(b"data", b"{\"a\":1}"), (b"key", b"k\r\nx")]),
            ("2-5", (2, 5), true, vec![]),
            ("3-0", (3, 0), false, vec![(b"data", b"")]),
        ];
        assert_eq!(seen, expected);
        assert_eq!(parse(b"*-1\r\n").unwrap().1, 5);
        assert!(parse(b"*-1\r\n").unwrap().0.entries.is_empty());
    }

    #[test]
    fn a_field_named_twice_reads_as_its_last_value_and_ids_order_as_numbers() {
        let text = reply(&[("7-1", Some(&[("data", "old"), ("key", "k"), ("data", "new")]))]);
        let (reply, _) = parse(text.as_bytes()).unwrap();
        let entry = &reply.entries[0];
        assert_eq!(reply.value(entry, b"data").as_deref(), Some(&b"new"[..]));
        assert_eq!(reply.value(entry, b"key").as_deref(), Some(&b"k"[..]));
        assert_eq!(reply.value(entry, b"missing"), None);
        assert!(id_pair("9-5") < id_pair("10-0") && id_pair("10-2") < id_pair("10-10"));
        assert_eq!(id_pair("1796519472940-424"), (1_796_519_472_940, 424));
        assert_eq!(id_pair("12"), (12, 0));
    }

    #[test]
    fn a_reply_cut_anywhere_asks_for_more() {
        let text = reply(&[("1-0", Some(&[("data", "hello")])), ("2-0", Some(&[("data", "world")]))]);
        for cut in 0..text.len() {
            assert_eq!(parse(&text.as_bytes()[..cut]).err(), Some(Short::More), "cut at {cut}");
        }
    }

    #[test]
    fn errors_and_garbage_are_told_apart() {
        assert_eq!(parse(b"-NOGROUP No such key\r\n").err(), Some(Short::Server("NOGROUP No such key".into())));
        for garbage in [&b"+OK\r\n"[..], b"*1\n", b"*x\r\n", b"*1\r\n*3\r\n", b"*1\r\n*2\r\n$2\r\nabc\r\n", b"*1\r\n*2\r\n$-1\r\n", b"*-7\r\n"] {
            assert!(matches!(parse(garbage), Err(Short::Invalid(_))), "{:?}", String::from_utf8_lossy(garbage));
        }
        for (text, n) in [(&b"-1"[..], Some(-1)), (b"0", Some(0)), (b"1000", Some(1000)), (b"999999999999999999", Some(999_999_999_999_999_999))] {
            assert_eq!(length(text), n);
        }
        for text in [&b""[..], b"-2", b"-", b"+5", b"1a", b" 1", b"9999999999999999999"] {
            assert_eq!(length(text), None, "{:?}", String::from_utf8_lossy(text));
        }
        // A length claiming more than ever comes only waits for it (room for at most 100,000 entries is kept).
        assert_eq!(parse(b"*1\r\n*2\r\n$6\r\norders\r\n*999999999999\r\n").err(), Some(Short::More));
        assert_eq!(parse(b"*1\r\n*2\r\n$99999999999999\r\n").err(), Some(Short::Invalid("a string longer than Redis stores")));
    }

    /// A server on loopback that answers the first command with `reply`,
    /// a few bytes at a time, then closes the connection; the command it got comes back.
    fn serve_and_hear(reply: String) -> (String, std::sync::mpsc::Receiver<Vec<u8>>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let (heard, hear) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let (mut socket, _) = listener.accept().unwrap();
            let mut command = [0u8; 4096];
            let n = socket.read(&mut command).unwrap_or(0);
            let _ = heard.send(command[..n].to_vec());
            for piece in reply.as_bytes().chunks(7) {
                socket.write_all(piece).unwrap();
                std::thread::sleep(Duration::from_micros(200));
            }
        });
        (address, hear)
    }

    fn serve(reply: String) -> String {
        serve_and_hear(reply).0
    }

    #[test]
    fn a_password_in_the_address_logs_in_and_a_refusal_does_not_pass() {
        let (address, hear) = serve_and_hear("-WRONGPASS invalid username-password pair or user is disabled.\r\n".into());
        let login = |userinfo: &str| crate::source::config::BrokerUrl::parse(&format!("redis://{userinfo}@h:1/s")).unwrap().login;
        let refused =
            StreamReader::connect(&address, login("monitor:s%40cret%2F1").as_ref(), None, Duration::from_secs(1), Duration::from_secs(5)).err().unwrap();
        assert_eq!(hear.recv().unwrap(), command(&[b"AUTH", b"monitor", b"s@cret/1"]));
        assert_eq!(refused.kind(), ErrorKind::AuthenticationFailed);
        assert!(!refused.is_io_error() && refused.to_string().contains("WRONGPASS") && !refused.to_string().contains("cret"), "{refused}");
        let (address, hear) = serve_and_hear("+OK\r\n".into());
        assert!(StreamReader::connect(&address, login(":pw").as_ref(), None, Duration::from_secs(1), Duration::from_secs(5)).is_ok());
        assert_eq!(hear.recv().unwrap(), command(&[b"AUTH", b"pw"]), "no user: the password alone");
    }

    #[test]
    fn a_reply_in_many_pieces_is_read_whole_and_one_cut_off_is_an_io_error() {
        let text = reply(&[("1-0", Some(&[("data", "hello")])), ("2-0", Some(&[("data", &"x".repeat(3000))]))]);
        let read = |text: String| {
            let mut reader = StreamReader::connect(&serve(text), None, None, Duration::from_secs(1), Duration::from_secs(5)).unwrap();
            reader.read("g", "c", 10, None, "orders", ">")
        };
        let reply = read(text.clone()).unwrap();
        let data = |e: &Entry| reply.value(e, b"data").map(|v| v.len());
        assert_eq!(reply.entries.iter().map(|e| (&*e.id, data(e))).collect::<Vec<_>>(), [("1-0", Some(5)), ("2-0", Some(3000))]);
        let cut = read(text[..text.len() - 10].to_string()).err().unwrap();
        assert!(cut.is_io_error(), "{cut}");
        // A line without its CR is refused as it comes, not waited on until the read times out.
        let garbage = read("*1\n".into()).err().unwrap();
        assert!(!garbage.is_io_error() && garbage.to_string().contains("CR LF"), "{garbage}");
        let refused = read("-LOADING Redis is loading the dataset in memory\r\n".into()).err().unwrap();
        assert_eq!(refused.kind(), ErrorKind::Server(ServerErrorKind::BusyLoading));
    }

    /// A server on loopback that answers each XREADGROUP with the next of
    /// `replies`, written by `write`; its address.
    fn answer_each_read<const N: usize>(replies: [String; N], write: impl Fn(&mut std::net::TcpStream, &str) + Send + 'static) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            let (mut socket, _) = listener.accept().unwrap();
            for reply in replies {
                let mut command = Vec::new();
                while !command.ends_with(b">\r\n") {
                    let mut chunk = [0u8; 512];
                    let n = socket.read(&mut chunk).unwrap();
                    assert!(n > 0, "the reader hung up");
                    command.extend_from_slice(&chunk[..n]);
                }
                write(&mut socket, &reply);
            }
        });
        address
    }

    /// A read sent ahead (as the source sends the next while the last is
    /// analysed) is received in its turn, each reply with its own entries.
    #[test]
    fn a_read_sent_ahead_is_received_in_its_turn() {
        let replies = [reply(&[("1-0", Some(&[("data", "a")]))]), reply(&[("2-0", Some(&[("data", "b")]))])];
        let address = answer_each_read(replies, |socket, reply| socket.write_all(reply.as_bytes()).unwrap());
        let mut reader = StreamReader::connect(&address, None, None, Duration::from_secs(1), Duration::from_secs(5)).unwrap();
        let mut ids = Vec::new();
        reader.send_read("g", "c", 10, None, "orders", ">").unwrap();
        for _ in 0..2 {
            assert!(reader.awaiting());
            ids.extend(reader.receive().unwrap().entries.into_iter().map(|e| e.id.to_string()));
            assert!(!reader.awaiting());
            if ids.len() == 1 {
                reader.send_read("g", "c", 10, None, "orders", ">").unwrap();
            }
        }
        assert_eq!(ids, ["1-0", "2-0"]);
    }

    /// A small reply, then one larger than the room made after it (a read's
    /// worth), both in pieces that end at line ends (each parse of a piece
    /// comes up short): each is read whole, its values intact.
    #[test]
    fn a_reply_larger_than_the_last_is_read_whole_in_pieces() {
        let ids: Vec<String> = (1..=4000).map(|i| format!("{i}-0")).collect();
        let values: Vec<String> = (0..4000).map(|i| format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(i % 97))).collect();
        let pairs: Vec<[(&str, &str); 1]> = values.iter().map(|v| [("data", v.as_str())]).collect();
        let entries = |range: Range<usize>| -> Vec<TestEntry> { range.map(|i| (ids[i].as_str(), Some(&pairs[i][..]))).collect() };
        let replies = [reply(&entries(0..10)), reply(&entries(10..4000))];
        assert!(replies[1].len() > READ_CHUNK, "{}", replies[1].len());
        let address = answer_each_read(replies, |socket, reply| {
            let mut rest = reply.as_bytes();
            while !rest.is_empty() {
                // About 4 KB, up to a line end.
                let end = rest.iter().skip(4093).position(|&b| b == b'\n').map_or(rest.len(), |at| 4093 + at + 1);
                socket.write_all(&rest[..end]).unwrap();
                rest = &rest[end..];
                std::thread::sleep(Duration::from_micros(200));
            }
        });
        let mut reader = StreamReader::connect(&address, None, None, Duration::from_secs(1), Duration::from_secs(5)).unwrap();
        let mut seen = Vec::new();
        for _ in 0..2 {
            let reply = reader.read("g", "c", 5000, None, "orders", ">").unwrap();
            seen.extend(reply.entries.iter().map(|e| (e.id.to_string(), reply.value(e, b"data").unwrap())));
        }
        assert_eq!(seen.len(), 4000);
        for (i, (id, data)) in seen.iter().enumerate() {
            assert!(id == &ids[i] && data == values[i].as_bytes(), "entry {i}");
        }
    }

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        assert_eq!(command(&[b"XREADGROUP", b"GROUP", b"g h"]), b"*3\r\n$10\r\nXREADGROUP\r\n$5\r\nGROUP\r\n$3\r\ng h\r\n");
    }

    #[test]
    fn a_ca_file_without_a_certificate_is_a_clear_error() {
        assert_eq!(tls_config(Some(b"not a certificate")).unwrap_err(), "tls_ca holds no certificate");
        let cut = b"-----BEGIN CERTIFICATE-----\nMIIB\n";
        assert!(tls_config(Some(cut)).unwrap_err().starts_with("tls_ca is not a PEM certificate file"));
    }
}
