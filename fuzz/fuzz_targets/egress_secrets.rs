//! Alert-handler bodies with `{{secret:NAME}}` placeholders, filled in.
//! No panic; a filled body is never over the limit, and an error never
//! carries a secret's value.
#![no_main]

use std::collections::BTreeMap;

use arbitrary::{Arbitrary, Unstructured};
use clean_host_runtime::egress::fill_secrets;
use libfuzzer_sys::fuzz_target;

const LIMIT: usize = 4096;
const VALUE: &str = "S3CRET-VALUE-THAT-NEVER-LEAKS";

#[derive(Debug, Arbitrary)]
struct Input {
    body: Vec<u8>,
    names: Vec<String>,
    repeat: u8,
}

fuzz_target!(|data: &[u8]| {
    let Ok(input) = Input::arbitrary(&mut Unstructured::new(data)) else { return };
    let secrets: BTreeMap<String, String> = input.names.into_iter().map(|n| (n, VALUE.repeat(usize::from(input.repeat % 8) + 1))).collect();
    match fill_secrets(&input.body, &secrets, LIMIT) {
        Ok(filled) => assert!(filled.len() <= LIMIT.max(input.body.len())),
        // Only a name the body itself spelled out may come back in an error.
        Err(e) => assert!(!e.contains(VALUE) || String::from_utf8_lossy(&input.body).contains(VALUE), "{e}"),
    }
});
