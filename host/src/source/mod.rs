//! Sources: where records come from.
//!
//! A source runs on its own thread and sends blocks of whole lines with the
//! offset of the first, so the decoder never waits on I/O and an idle source
//! still lets processing-time windows close. A line longer than the limit is
//! not buffered: it is reported as [`SourceEvent::Oversized`] and becomes a
//! dead letter like any other bad line.

pub mod file;
pub mod generator;

use crossbeam_channel::Sender;

/// Longest line accepted, in bytes.
pub const MAX_LINE_BYTES: usize = 16 << 20;

#[derive(Debug)]
pub enum SourceEvent {
    /// Whole lines, each ending in `\n`; the first is at `first_offset`.
    Lines { partition: u32, first_offset: u64, data: Vec<u8> },
    /// A line over [`MAX_LINE_BYTES`], skipped.
    Oversized { partition: u32, offset: u64, bytes: u64 },
}

/// A stream of JSON lines. `run` returns at the end of a bounded source, or
/// when the receiver hangs up.
pub trait Source: Send {
    /// Describes the source in alerts and dead letters.
    fn name(&self) -> String;
    fn run(self: Box<Self>, tx: &Sender<SourceEvent>) -> std::io::Result<()>;
}

/// The source a pipeline names: `generator`, `-` (stdin) or a file path.
pub fn open(spec: &str, generator: &generator::GeneratorConfig) -> std::io::Result<Box<dyn Source>> {
    match spec {
        "generator" => Ok(Box::new(generator::Generator::new(generator.clone()))),
        "-" => Ok(Box::new(file::LineReader::stdin())),
        path => Ok(Box::new(file::LineReader::open(path)?)),
    }
}
