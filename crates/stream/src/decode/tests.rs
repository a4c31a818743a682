use super::*;

/// A record as (name, value) pairs, values as text, for the decoders' tests.
pub(crate) fn shown(names: &FieldNames, r: &Record) -> Vec<(String, String)> {
    r.values
        .iter()
        .map(|v| {
            let value = match v.kind {
                Kind::Text => String::from_utf8_lossy(r.text_of(v)).into_owned(),
                Kind::Int => (v.bits as i64).to_string(),
                Kind::Float => f64::from_bits(v.bits).to_string(),
                Kind::Bool => (v.bits == 1).to_string(),
                k => format!("{k:?}"),
            };
            (names.shared_name(v.field).to_string(), value)
        })
        .collect()
}

/// A line's fields as (name, kind, bits, text), or why it was refused.
fn decoded(d: &mut JsonDecoder, line: &str) -> Result<Vec<(String, Kind, u64, String)>, DecodeError> {
    let record = d.decode(line.as_bytes())?;
    let out: Vec<_> = record.values.iter().map(|v| (v.field, v.kind, v.bits, String::from_utf8_lossy(record.text_of(v)).into_owned())).collect();
    Ok(out.into_iter().map(|(f, k, b, t)| (d.fields.shared_name(f).to_string(), k, b, t)).collect())
}

fn decode(d: &mut JsonDecoder, line: &str) -> Vec<(String, Kind, u64, String)> {
    decoded(d, line).unwrap()
}

#[test]
fn scalars_keep_their_kinds() {
    let mut d = JsonDecoder::default();
    let v = decode(&mut d, r#"{"a": 1, "b": 2.5, "c": "x", "d": true, "e": null, "f": -7}"#);
    assert_eq!(v[0], ("a".into(), Kind::Int, 1, String::new()));
    assert_eq!(v[1].1, Kind::Float);
    assert_eq!(f64::from_bits(v[1].2), 2.5);
    assert_eq!(v[2], ("c".into(), Kind::Text, 0, "x".into()));
    assert_eq!(v[3], ("d".into(), Kind::Bool, 1, String::new()));
    assert_eq!(v[4].1, Kind::Null);
    assert_eq!(v[5].2 as i64, -7);
}

#[test]
fn nested_objects_flatten_and_arrays_stay_text() {
    let mut d = JsonDecoder::default();
    let v = decode(&mut d, r#"{"geo": {"lat": 1.5, "p": {"q": 2}}, "tags": [1, "a"]}"#);
    let names: Vec<&str> = v.iter().map(|x| x.0.as_str()).collect();
    assert_eq!(names, ["geo.lat", "geo.p.q", "tags"]);
    assert_eq!(v[2].3, r#"[1, "a"]"#);
}

#[test]
fn top_level_keys_read_where_they_are_name_the_same_fields_as_escaped_and_nested_ones() {
    let mut d = JsonDecoder::default();
    for line in [
        r#"{"a": 1, "k\u0041": {"b": 2}, "geo": {"lat": 3, "x": {"y": "z"}}, "e": "s", "": 4, "gé": {"ü": 5}}"#,
        r#"{"geo": {"x": {"y": "z"}, "lat": 3}, "": 4, "gé": {"ü": 5}, "e": "s", "kA": {"b": 2}, "a": 1}"#,
    ] {
        let mut named: Vec<(String, String)> =
            decode(&mut d, line).into_iter().map(|(name, kind, bits, text)| (name, if kind == Kind::Int { bits.to_string() } else { text })).collect();
        named.sort();
        let want = [("", "4"), ("a", "1"), ("e", "s"), ("geo.lat", "3"), ("geo.x.y", "z"), ("gé.ü", "5"), ("kA.b", "2")];
        assert_eq!(named, want.map(|(n, v)| (n.to_string(), v.to_string())), "{line}");
    }
    assert_eq!(d.fields.intern("zz").unwrap(), 7, "seven names so far");
}

#[test]
fn a_key_where_the_record_before_had_it_decodes_as_it_would_anew() {
    // (the record before, the record): the second decodes to the same
    // names, values and errors after the first as in a decoder of its own.
    let pairs = [
        (r#"{"ab": 1, "c": "x"}"#, r#"{"abc": 1, "c": "y"}"#),
        (r#"{"abc": 1}"#, r#"{"ab": 1}"#),
        (r#"{"ab": 1}"#, r#"{"ab" : 2, "ab"  :3}"#),
        (r#"{"ab": 1}"#, r#"{"a\u0062": 2}"#),
        (r#"{"ab": 1}"#, r#"{"ab": {"c": 1}, "d": [1]}"#),
        (r#"{"a": {"b": 0}}"#, r#"{"a.b": 1}"#),
        (r#"{"a.b": 0}"#, r#"{"a": {"b": 1}}"#),
        (r#"{"ab": 1}"#, r#"{"ab"x: 1}"#),
        (r#"{"ab": 1}"#, r#"{"ab""#),
        (r#"{"ab": 1}"#, r#"{"ab":"#),
        (r#"{"ab": 1}"#, r#"{"ab":1.0,"ab":"1"}"#),
        (r#"{"a\"b": 1}"#, r#"{"a"b": 1}"#),
        (r#"{"a\\b": 1}"#, r#"{"a\b": 1}"#),
        (r#"{"a\u0001": 1}"#, "{\"a\u{1}\": 1}"),
        (r#"{"gé": 1, "": 2}"#, r#"{"gé":3,"":4}"#),
    ];
    for (before, line) in pairs {
        let mut primed = JsonDecoder::default();
        decode(&mut primed, before);
        assert_eq!(decoded(&mut primed, line), decoded(&mut JsonDecoder::default(), line), "{line} after {before}");
    }
}

#[test]
fn repeated_keys_keep_at_most_the_field_limit_of_places() {
    let mut fields = FieldNames::with_limit(3);
    let mut record = Record::default();
    let mut name = Vec::new();
    let line = format!("{{{}}}", (0..1000).map(|i| format!(r#""a": {i}"#)).collect::<Vec<_>>().join(", "));
    json::Parser::new(line.as_bytes(), &mut fields, &mut record, &mut name).parse_line().unwrap();
    assert_eq!(record.values.len(), 1000);
    assert!(record.values.iter().all(|v| v.field == 0));
    assert_eq!(fields.last_order.len(), 3);
}

#[test]
fn field_ids_are_stable_when_order_changes() {
    let mut d = JsonDecoder::default();
    decode(&mut d, r#"{"a": 1, "b": 2}"#);
    let a = d.fields.intern("a").unwrap();
    let b = d.fields.intern("b").unwrap();
    let record = d.decode(br#"{"b": 3, "a": 4}"#).unwrap();
    assert_eq!(record.values[0].field, b);
    assert_eq!(record.values[1].field, a);
    assert_eq!(d.fields.intern("c").unwrap(), 2, "a and b are the only names so far");
}

#[test]
fn bad_lines_say_why() {
    let mut d = JsonDecoder::default();
    assert_eq!(d.decode(b"  ").unwrap_err(), DecodeError::Empty);
    assert_eq!(d.decode(br#"{"a": 1"#).unwrap_err(), DecodeError::Truncated { bytes: 7 });
    assert_eq!(d.decode(b"[1, 2]").unwrap_err(), DecodeError::NotAnObject("an array"));
    assert!(matches!(d.decode(b"\xff\xfe{}").unwrap_err(), DecodeError::Syntax(_)));
    assert!(matches!(d.decode(b"{\"a\": \"\xff\"}").unwrap_err(), DecodeError::Syntax(_)));
    assert_eq!(d.decode(b"\x00\xff\x01binary").unwrap_err(), DecodeError::Binary { at: 0, byte: 0 });
    // Found by fuzzing: a key that names no field (its value is `{}`) is still checked.
    assert!(matches!(d.decode(b"{\"a\": 1, \"ge\x83\": {}}").unwrap_err(), DecodeError::Syntax(m) if m.contains("key is not valid UTF-8")));
    assert_eq!(d.decode(b"{\"a\": \"x\x07\"}").unwrap_err(), DecodeError::Binary { at: 8, byte: 7 });
    assert_eq!(d.decode(br#"{"a": "b"#).unwrap_err(), DecodeError::Truncated { bytes: 8 });
    assert_eq!(d.decode(br#"{"a": 1, "b": [1, 2"#).unwrap_err(), DecodeError::Truncated { bytes: 19 });
    for bad in [&br#"{"a": 1} x"#[..], br#"{"a": 1}}"#, br#"{"a": tru}"#, br#"{"a": [1,}"#, br#"{"a": {"b": }}"#, br#"{"a" 1}"#, b"\"str\""] {
        assert!(d.decode(bad).is_err(), "{}", String::from_utf8_lossy(bad));
    }
}

#[test]
fn whitespace_around_any_token_decodes_as_compact_json() {
    let compact = r#"{"a":1,"b":{"c":"x","d":[1,2]},"e":true,"f":null}"#;
    let mut d = JsonDecoder::default();
    let expected = decode(&mut d, compact);
    for space in [" ", "\t", "\n", " \r\t "] {
        // Not inside the array, which is kept as its text.
        let mut spaced = String::new();
        let mut in_array = false;
        for c in compact.chars() {
            in_array = (in_array || c == '[') && c != ']';
            match c {
                '{' | '}' | ':' | ',' if !in_array => spaced.extend([space, c.encode_utf8(&mut [0; 4]), space]),
                _ => spaced.push(c),
            }
        }
        // Once as the first record, once after the compact one.
        assert_eq!(decode(&mut JsonDecoder::default(), &spaced), expected, "{spaced:?}");
        assert_eq!(decode(&mut d, &spaced), expected, "{spaced:?}");
    }
    // Errors name the byte past the whitespace.
    for (bad, error) in
        [(r#"{"a"  1}"#, "expected ':' at byte 6"), (r#"{"a": 1  "b": 2}"#, "expected ',' or '}' at byte 9"), (r#"{"a": 1,  2}"#, "expected a key at byte 10")]
    {
        assert_eq!(d.decode(bad.as_bytes()).unwrap_err(), DecodeError::Syntax(error.into()), "{bad}");
    }
}

#[test]
fn event_times_from_numbers_and_strings() {
    let mut d = JsonDecoder::default();
    let r = d.decode(br#"{"ms": 1764250000123, "s": 1764250000, "t": "2025-11-27T13:26:40.123Z", "x": "no"}"#).unwrap();
    let mut parser = TimeParser::default();
    let times: Vec<Option<i64>> = r.values.iter().map(|v| event_time(r, v, &mut parser)).collect();
    assert_eq!(times, [Some(1_764_250_000_123), Some(1_764_250_000_000), Some(1_764_250_000_123), None]);
}

#[test]
fn strings_unescape() {
    let mut d = JsonDecoder::default();
    let v = decode(&mut d, r#"{"s": "a\"b\\c\/\n\u00e9\ud83d\ude00", "k\u0041": 1}"#);
    assert_eq!(v[0].3, "a\"b\\c/\né😀");
    assert_eq!(v[1].0, "kA");
    for bad in [r#"{"s": "\ud83d"}"#, r#"{"s": "\x"}"#, "{\"s\": \"a\tb\"}".replace("\\t", "\t").as_str()] {
        assert!(d.decode(bad.as_bytes()).is_err(), "{bad}");
    }
}

#[test]
fn numbers_parse_exactly() {
    let mut d = JsonDecoder::default();
    let cases = [
        "0",
        "-0",
        "12",
        "-7",
        "9223372036854775807",
        "-9223372036854775808",
        "18446744073709551615",
        "0.1",
        "23.45",
        "-1.5",
        "1e3",
        "2.5E-3",
        "123456789012345678901234567890",
        "0.30000000000000004",
        "1234567.891011121314",
    ];
    for text in cases {
        let r = d.decode(format!(r#"{{"n": {text}}}"#).as_bytes()).unwrap();
        let v = r.values[0];
        match v.kind {
            Kind::Int => assert_eq!(v.bits as i64, text.parse::<i64>().unwrap(), "{text}"),
            Kind::Float => assert_eq!(f64::from_bits(v.bits), text.parse::<f64>().unwrap(), "{text}"),
            other => panic!("{text}: {other:?}"),
        }
    }
    for bad in ["01", "1.", ".5", "-", "1e", "+1", "0x10", "NaN", "1.5e+"] {
        assert!(d.decode(format!(r#"{{"n": {bad}}}"#).as_bytes()).is_err(), "{bad}");
    }
}

#[test]
fn numbers_of_every_length_at_every_position_parse_as_rust_parses_them() {
    // The digits are read eight at a time: runs of every length up to 24
    // before and after the point, at every offset in the line, followed
    // by each byte that can end a number.
    let mut d = JsonDecoder::default();
    let mut state = 11u64;
    let mut digits = |n: usize| -> String {
        (0..n)
            .map(|_| {
                state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                char::from(b'0' + (state >> 33) as u8 % 10)
            })
            .collect()
    };
    for int_len in 1..=24 {
        for frac_len in [0, 1, 2, 7, 8, 9, 15, 16, 17, 24] {
            for pad in 0..8 {
                for (sign, end) in [("", "}"), ("-", ","), ("", "e2}"), ("-", " }")] {
                    // No leading zero: JSON has none.
                    let int = format!("{}{}", 1 + (int_len + pad) % 9, digits(int_len - 1));
                    let text = if frac_len == 0 { format!("{sign}{int}") } else { format!("{sign}{int}.{}", digits(frac_len)) };
                    let key = "k".repeat(pad + 1);
                    let line = if end == "," { format!(r#"{{"{key}": {text}, "z": 1}}"#) } else { format!(r#"{{"{key}": {text}{end}"#) };
                    let text = if end.starts_with('e') { format!("{text}e2") } else { text };
                    let r = d.decode(line.as_bytes()).unwrap_or_else(|e| panic!("{line}: {e}"));
                    let v = r.values[0];
                    match text.parse::<i64>() {
                        Ok(n) if !text.contains(['.', 'e']) => assert_eq!((v.kind, v.bits as i64), (Kind::Int, n), "{line}"),
                        _ => assert_eq!((v.kind, f64::from_bits(v.bits)), (Kind::Float, text.parse::<f64>().unwrap()), "{line}"),
                    }
                }
            }
        }
    }
}

#[test]
fn deep_nesting_is_refused_and_deep_objects_stay_text() {
    let mut d = JsonDecoder::default();
    let deep = format!(r#"{{"a": {}1{}}}"#, "[".repeat(200), "]".repeat(200));
    assert!(d.decode(deep.as_bytes()).unwrap_err().to_string().contains("nested too deeply"));
    let mut nested = String::from("1");
    for _ in 0..20 {
        nested = format!(r#"{{"x": {nested}}}"#);
    }
    let r = d.decode(format!(r#"{{"a": {nested}}}"#).as_bytes()).unwrap();
    assert_eq!(r.values.len(), 1);
    assert_eq!(r.values[0].kind, Kind::Text);
}

#[test]
fn strings_and_keys_end_where_serde_json_says_at_every_length_and_position() {
    // The scan reads eight bytes at a time: put each kind of byte that ends
    // or interrupts a plain run at every position of keys and values of
    // every length around a word, and compare with serde_json.
    let specials: [(&str, bool); 7] = [(r#"\""#, true), (r"\\", true), (r"\n", true), (r"\u00e9", true), ("é", true), ("\u{7f}", true), ("\u{1}", false)];
    for len in 1..=20 {
        for at in 0..len {
            for (special, valid) in specials {
                let text: String = (0..len).map(|i| if i == at { special.to_string() } else { ((b'a' + (i % 26) as u8) as char).to_string() }).collect();
                let line = format!(r#"{{"{text}": "{text}", "k{text}": 1}}"#);
                let mut d = JsonDecoder::default();
                let ours = d.decode(line.as_bytes()).map(|_| ()).map(|()| {
                    let values = decode(&mut d, &line);
                    values
                        .into_iter()
                        .map(|(name, kind, bits, text)| (name, if kind == Kind::Int { (bits as i64).to_string() } else { text }))
                        .collect::<Vec<_>>()
                });
                match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&line) {
                    Ok(map) => {
                        assert!(valid, "{line:?}");
                        let expected: Vec<(String, String)> =
                            map.iter().map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_string))).collect();
                        let mut ours = ours.unwrap_or_else(|e| panic!("{line:?}: {e}"));
                        ours.sort();
                        let mut expected = expected;
                        expected.sort();
                        assert_eq!(ours, expected, "{line:?}");
                    }
                    Err(_) => assert!(ours.is_err() && !valid, "{line:?}"),
                }
            }
        }
    }
}

#[test]
fn raw_bytes_in_keys_and_strings_pass_or_fail_as_serde_json_says() {
    // Two bytes that end or interrupt a plain run in one word (a match
    // followed by a borrow's false flag), invalid UTF-8 alone, and the
    // bytes next to the control range, at every pair of positions.
    let specials: [&[u8]; 11] = [b"\\\"", b"\\\\", b"\\n", "\u{e9}".as_bytes(), &[0x7f], &[0x1f], &[0x20], &[0x21], &[0x80], &[0xa0], &[0xdc]];
    for len in 1..=17 {
        for i in 0..len {
            for j in i..len {
                for a in specials {
                    for b in specials {
                        let mut text = Vec::new();
                        for at in 0..len {
                            match at {
                                _ if at == i => text.extend_from_slice(a),
                                _ if at == j => text.extend_from_slice(b),
                                _ => text.push(b'a' + (at % 26) as u8),
                            }
                        }
                        let line = [&b"{\""[..], &text[..], &b"\": \""[..], &text[..], &b"\"}"[..]].concat();
                        let mut d = JsonDecoder::default();
                        let ours = d.decode(&line).is_ok().then(|| decode(&mut d, std::str::from_utf8(&line).expect("decoded, so UTF-8")));
                        match serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&line) {
                            Ok(map) => {
                                let (key, value) = map.iter().next().expect("one member");
                                let ours = ours.unwrap_or_else(|| panic!("{line:?} refused"));
                                assert_eq!((ours[0].0.as_str(), ours[0].3.as_str()), (key.as_str(), value.as_str().expect("a string")), "{line:?}");
                            }
                            Err(_) => assert!(ours.is_none(), "{line:?} accepted"),
                        }
                    }
                }
            }
        }
    }
}
