//! The stream side of clean-host: records in, windows out.
//!
//! Sources read files, stdin, the generator and the brokers with positions
//! and acks; the decoders turn lines and messages into records; the windower
//! cuts them into columnar batches per partition behind a watermark; what
//! cannot become a record is a dead letter with its reason. Nothing here
//! knows about plugins or alerts: the layers above take batches and hand
//! back acks.

pub mod dead_letter;
pub mod decode;
pub mod source;
pub mod window;
