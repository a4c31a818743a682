use super::*;

/// Hands out at most 8 bytes per read, so lines span reads.
struct Trickle(io::Cursor<Vec<u8>>);

impl Read for Trickle {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(8);
        self.0.read(&mut buf[..n])
    }
}

fn events(bytes: &[u8], max_line: usize) -> Vec<(u64, String)> {
    let (tx, rx) = crossbeam_channel::unbounded();
    Box::new(LineReader::from_reader(Trickle(io::Cursor::new(bytes.to_vec())), max_line)).run(crate::source::SourceContext::detached(tx)).unwrap();
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
    let long = "x".repeat(50);
    let input = format!("short\n{long}\nafter\n{long}");
    let got = events(input.as_bytes(), 10);
    assert_eq!(got, [(0, "short".into()), (1, "<50 bytes>".into()), (2, "after".into()), (3, "<50 bytes>".into())]);
}

#[test]
fn a_missing_file_names_its_path() {
    let err = LineReader::open("/no/such/file.jsonl").err().unwrap();
    assert!(err.to_string().contains("/no/such/file.jsonl"));
}
