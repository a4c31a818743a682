//! The config as a host will run it (the file after `${VAR}`, with every
//! default filled in), for `clean-host check --show-config`: what a
//! platform engineer checks before a deploy. Secrets are masked: values
//! under a key that names one (password, secret, token, credential, a
//! private key, request headers, an egress destination's URL) and a login
//! in a broker URL; `env:VAR` is shown as it is, as it names no secret.

use toml::Value;

use super::ConfigFile;
use clean_host_stream::source::config::masked;

/// How a masked secret reads.
const MASK: &str = "***";

impl ConfigFile {
    /// The config as TOML, every default filled in, secrets masked.
    pub fn shown(&self) -> Result<String, String> {
        let mut value = Value::try_from(self).map_err(|e| format!("showing the config: {e}"))?;
        mask(&mut value, &[]);
        toml::to_string_pretty(&value).map_err(|e| format!("showing the config: {e}"))
    }
}

/// Whether a value under `path` (its keys from the top) is a secret.
fn secret_at(path: &[&str]) -> bool {
    let Some(key) = path.last().map(|k| k.to_ascii_lowercase()) else {
        return false;
    };
    let named = ["password", "secret", "token", "credential", "private", "jaas", "ssl.key"].iter().any(|s| key.contains(s));
    let parent = path.len().checked_sub(2).map(|i| path[i]);
    let whole_table = matches!(parent, Some("headers" | "secrets"));
    let destination_url = key == "url" && path.contains(&"destinations");
    named || whole_table || destination_url
}

fn mask(value: &mut Value, path: &[&str]) {
    match value {
        Value::String(s) if s.starts_with("env:") => {}
        Value::String(s) if secret_at(path) => *s = MASK.into(),
        Value::String(s) => *s = masked(s),
        Value::Table(table) => {
            for (key, v) in table.iter_mut() {
                mask(v, &[path, &[key.as_str()]].concat());
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| mask(v, path)),
        _ => {}
    }
}
