//! Config files: any text is either a valid config or a clear error, never a
//! panic; a config that parses has a window spec for every pipeline.
#![no_main]

use clean_host::config::ConfigFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match ConfigFile::parse(text) {
        Ok(config) => {
            for p in &config.pipelines {
                p.window_spec().expect("validated config has a window spec");
            }
            assert!(!config.all_tenants().is_empty());
        }
        Err(message) => assert!(!message.is_empty()),
    }
});
