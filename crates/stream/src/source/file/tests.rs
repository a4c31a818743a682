use super::*;

/// Hands out at most `chunk` bytes per read, so lines span reads.
struct Trickle {
    data: io::Cursor<Vec<u8>>,
    chunk: usize,
}

impl Read for Trickle {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.chunk);
        self.data.read(&mut buf[..n])
    }
}

/// What a reader of `bytes` sends, read as a file is (whole blocks) and as
/// a pipe is (as the data comes): the same both ways, or this panics.
fn events(bytes: &[u8], max_line: usize) -> Vec<(u64, String)> {
    let [file, pipe] = [true, false].map(|whole_blocks| events_read(bytes, whole_blocks, max_line));
    assert_eq!(file, pipe);
    file
}

fn events_read(bytes: &[u8], whole_blocks: bool, max_line: usize) -> Vec<(u64, String)> {
    let (tx, rx) = crossbeam_channel::unbounded();
    // 8 bytes a read, or 4 KiB over more than a block (a pipe's reads zero a block each).
    let chunk = if bytes.len() > READ_BLOCK { 4096 } else { 8 };
    let reader = LineReader::from_reader(Trickle { data: io::Cursor::new(bytes.to_vec()), chunk }, whole_blocks, max_line);
    Box::new(reader).run(crate::source::SourceContext::detached(tx)).unwrap();
    rx.iter()
        .flat_map(|e| match e {
            SourceEvent::Lines { first_offset, data, .. } => {
                // Split as the pipeline splits a block.
                crate::source::lines(&data).enumerate().map(|(i, l)| (first_offset + i as u64, String::from_utf8(l.to_vec()).unwrap())).collect::<Vec<_>>()
            }
            SourceEvent::Oversized { offset, bytes, .. } => vec![(offset, format!("<{bytes} bytes>"))],
            other => panic!("a file sends lines, not {other:?}"),
        })
        .collect()
}

#[test]
fn lines_keep_their_numbers_and_a_last_line_without_newline_counts() {
    let got = events(b"a\nb\n\nc", 100);
    assert_eq!(got, [(0, "a".into()), (1, "b".into()), (2, "".into()), (3, "c".into())]);
}

#[test]
fn oversized_lines_are_reported_not_buffered() {
    // Read as the data comes, a line is over the limit once its bytes so far are.
    let long = "x".repeat(50);
    let input = format!("short\n{long}\nafter\n{long}");
    let got = events_read(input.as_bytes(), false, 10);
    assert_eq!(got, [(0, "short".into()), (1, "<50 bytes>".into()), (2, "after".into()), (3, "<50 bytes>".into())]);
    // Read in whole blocks, over more blocks than the limit holds.
    let long = "x".repeat(3 * READ_BLOCK);
    let input = format!("short\n{long}\nafter\n{long}");
    let over = format!("<{} bytes>", long.len());
    let got = events(input.as_bytes(), READ_BLOCK);
    assert_eq!(got, [(0, "short".into()), (1, over.clone()), (2, "after".into()), (3, over)]);
}

#[test]
fn lines_across_blocks_arrive_whole_and_in_order() {
    // Over three blocks, lines of every length up to a few hundred bytes.
    let lines: Vec<String> = (0..6000).map(|i| format!("{i}:{}", "y".repeat(i % 300))).collect();
    let input = lines.join("\n") + "\n";
    assert!(input.len() > 2 * READ_BLOCK);
    let got = events(input.as_bytes(), 1000);
    assert_eq!(got.len(), lines.len());
    assert!(got.iter().zip(&lines).enumerate().all(|(i, ((offset, line), want))| *offset == i as u64 && line == want));
}

#[test]
fn a_missing_file_names_its_path() {
    let err = LineReader::open("/no/such/file.jsonl").err().unwrap();
    assert!(err.to_string().contains("/no/such/file.jsonl"));
}

#[test]
fn a_named_pipe_is_read_as_its_data_comes() {
    let fifo = std::env::temp_dir().join(format!("clean-host-fifo-{}-{:?}", std::process::id(), std::thread::current().id()));
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let path = fifo.to_str().unwrap().to_string();
    // The writer keeps the pipe open after its first line: that line must
    // arrive before a block fills or the pipe closes.
    let (done, closing) = crossbeam_channel::bounded::<()>(0);
    let writer = std::thread::spawn({
        let fifo = fifo.clone();
        move || {
            let mut w = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
            std::io::Write::write_all(&mut w, b"{\"a\":1}\n").unwrap();
            let _ = closing.recv();
        }
    });
    let reader = LineReader::open(&path);
    if reader.is_err() {
        // Lets the writer's open return, so that it can stop.
        drop(std::fs::File::open(&fifo));
    }
    let reader = reader.expect("the pipe opens");
    let (tx, rx) = crossbeam_channel::unbounded();
    let reader = std::thread::spawn(move || Box::new(reader).run(crate::source::SourceContext::detached(tx)));
    let first = rx.recv_timeout(std::time::Duration::from_secs(10));
    drop(done);
    writer.join().unwrap();
    reader.join().unwrap().unwrap();
    std::fs::remove_file(&fifo).unwrap();
    let first = first.expect("the first line, while the pipe stays open");
    assert!(matches!(first, SourceEvent::Lines { first_offset: 0, ref data, .. } if data == b"{\"a\":1}\n"), "{first:?}");
}
