//! The registry over HTTP(S): one agent, basic auth when configured, every
//! answer bounded in time and size. Errors name neither the URL's secrets
//! nor the password.

use std::time::Duration;

use clean_host_core::http_error::described;

use super::{RegistryApi, Unanswered};
use crate::source::config::RegistryOptions;

/// Longest answer read from the registry (a schema with its metadata).
const MAX_ANSWER_BYTES: u64 = 8 << 20;
const DEFAULT_TIMEOUT_MS: u64 = 5000;

pub struct HttpRegistry {
    agent: ureq::Agent,
    /// The base URL, without a trailing `/`.
    base: String,
    /// `Basic ...`, when a user is configured.
    authorization: Option<String>,
}

impl HttpRegistry {
    pub fn new(options: &RegistryOptions) -> Result<Self, String> {
        let base = options.url.trim_end_matches('/').to_string();
        let Some((scheme, rest)) = base.split_once("://") else {
            return Err("registry url: expected http://host:port or https://host:port".into());
        };
        if !matches!(scheme, "http" | "https") || rest.is_empty() {
            return Err("registry url: expected http://host:port or https://host:port".into());
        }
        if rest.split('/').next().is_some_and(|authority| authority.contains('@')) {
            return Err("registry url: a login in the URL is not used (it would be logged): set username and password under [pipelines.broker.registry]".into());
        }
        let username = options.username.as_deref().map(|u| clean_host_core::secret::resolve(u, "registry username")).transpose()?;
        let password = options.password.as_deref().map(|p| clean_host_core::secret::resolve(p, "registry password")).transpose()?;
        let authorization = match (username, password) {
            (Some(user), password) => Some(format!("Basic {}", crate::dead_letter::base64(format!("{user}:{}", password.unwrap_or_default()).as_bytes()))),
            (None, Some(_)) => return Err("registry password without a username".into()),
            (None, None) => None,
        };
        let timeout = Duration::from_millis(options.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS).max(1));
        let agent = ureq::Agent::config_builder().timeout_global(Some(timeout)).http_status_as_error(false).max_redirects(0).build().into();
        Ok(HttpRegistry { agent, base, authorization })
    }
}

impl RegistryApi for HttpRegistry {
    fn get(&self, path: &str) -> Result<String, Unanswered> {
        let mut request = self.agent.get(format!("{}{path}", self.base)).header("Accept", "application/vnd.schemaregistry.v1+json, application/json");
        if let Some(authorization) = &self.authorization {
            request = request.header("Authorization", authorization);
        }
        let what = path.split('?').next().unwrap_or(path);
        let mut response = request.call().map_err(|e| Unanswered::Unreachable(format!("the registry could not be asked for {what}: {}", described(&e))))?;
        let status = response.status().as_u16();
        let body = response.body_mut().with_config().limit(MAX_ANSWER_BYTES).read_to_string();
        match (status, body) {
            (200, Ok(body)) => Ok(body),
            // Too long is this schema's trouble, not the registry's: others are still asked for.
            (200, Err(e @ ureq::Error::BodyExceedsLimit(_))) => Err(Unanswered::Refused(format!("the registry's answer to {what} is {}", described(&e)))),
            (200, Err(e)) => Err(Unanswered::Unreachable(format!("the registry's answer to {what} could not be read: {}", described(&e)))),
            (404, _) => Err(Unanswered::Refused(format!("the registry has no {what} (404)"))),
            (401 | 403, _) => Err(Unanswered::Refused(format!("the registry refused {what} ({status}): check username and password"))),
            (status, body) => {
                let mut message = body
                    .ok()
                    .and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok())
                    .and_then(|v| v["message"].as_str().map(str::to_string))
                    .unwrap_or_default();
                message.truncate(message.floor_char_boundary(200));
                let reason = format!("the registry answered {status} to {what}{}{message}", if message.is_empty() { "" } else { ": " });
                // A registry that is up but failing is treated as one that is down: not asked per message.
                Err(if status >= 500 { Unanswered::Unreachable(reason) } else { Unanswered::Refused(reason) })
            }
        }
    }
}
