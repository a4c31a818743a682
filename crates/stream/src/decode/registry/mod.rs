//! Messages in a schema registry's wire format: a zero byte, the writer's
//! schema id (4 bytes, big-endian), then the body, an Avro datum, a Protobuf
//! message (after its message indexes) or a JSON object. Most Kafka topics
//! in companies are written this way by the Confluent serializers, so the
//! schema is not in the config: it is fetched by id from the registry's REST
//! API (`GET /schemas/ids/{id}`, its references by subject and version) the
//! first time an id is seen, and kept. A message whose schema cannot be
//! fetched or whose body does not decode is a dead letter with the reason;
//! a failed fetch is not asked again for a while, so a registry outage does
//! not turn every message into a request.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::avro::AvroSchema;
use super::DecodeError;
use crate::source::config::RegistryOptions;

mod http;
mod protobuf;
#[cfg(test)]
mod tests;

pub use protobuf::ProtobufSchema;

/// Schema ids kept at most; past this the cache starts over.
const MAX_SCHEMAS: usize = 10_000;
/// Schemas one id may reference, all levels together.
const MAX_REFERENCES: usize = 100;
/// How long a failed fetch stands before the registry is asked again.
const RETRY_AFTER: Duration = Duration::from_secs(10);

/// What a subject's name escapes in a URL path: all but the unreserved characters.
const SUBJECT_ESCAPED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// A parsed schema, ready to decode bodies.
pub enum Schema {
    Avro(Box<AvroSchema>),
    Protobuf(ProtobufSchema),
    /// JSON Schema: the body is a JSON object; the schema detector judges its fields.
    Json,
}

/// The registry's REST API as this module uses it: a GET's body, or why not.
pub trait RegistryApi: Send {
    fn get(&self, path: &str) -> Result<String, Unanswered>;
}

/// Why a GET has no body.
#[derive(Debug)]
pub enum Unanswered {
    /// The registry could not be reached, or did not answer in time.
    Unreachable(String),
    /// It answered with an error (not found, refused, ...).
    Refused(String),
}

impl Unanswered {
    fn reason(self) -> String {
        match self {
            Unanswered::Unreachable(reason) | Unanswered::Refused(reason) => reason,
        }
    }
}

/// What the registry answers for a schema (by id, or a subject's version).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Answer {
    schema: String,
    /// `AVRO` when absent, `PROTOBUF` or `JSON`.
    schema_type: Option<String>,
    #[serde(default)]
    references: Vec<Reference>,
}

#[derive(Deserialize, Clone)]
struct Reference {
    /// The name the schema imports it by (a Protobuf file name, an Avro type name).
    name: String,
    subject: String,
    version: i64,
}

enum Cached {
    Ready(Arc<Schema>),
    Failed { reason: String, at: Instant },
}

/// Schemas by id, fetched from one registry.
pub struct SchemaRegistry {
    api: Box<dyn RegistryApi>,
    schemas: HashMap<u32, Cached>,
    /// When the registry last could not be reached, and why: until
    /// [`RETRY_AFTER`] has passed, a new id is not asked for.
    unreachable: Option<(Instant, String)>,
}

impl SchemaRegistry {
    /// A client of the registry in `options` (secrets may be `env:VAR`).
    pub fn connect(options: &RegistryOptions) -> Result<Self, String> {
        Ok(SchemaRegistry::with_api(Box::new(http::HttpRegistry::new(options)?)))
    }

    pub fn with_api(api: Box<dyn RegistryApi>) -> Self {
        SchemaRegistry { api, schemas: HashMap::new(), unreachable: None }
    }

    /// The schema id of a framed payload, and its body.
    pub fn unframe(payload: &[u8]) -> Result<(u32, &[u8]), DecodeError> {
        match payload {
            [0, a, b, c, d, body @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), body)),
            [first, ..] if *first != 0 => Err(DecodeError::Registry(format!("no schema id: the first byte is 0x{first:02x}, not the framing's 0"))),
            _ => Err(DecodeError::Registry(format!("no schema id: {} bytes, fewer than the framing's 5", payload.len()))),
        }
    }

    /// The schema with `id`, from the cache or the registry.
    pub fn schema(&mut self, id: u32) -> Result<Arc<Schema>, DecodeError> {
        match self.schemas.get(&id) {
            Some(Cached::Ready(schema)) => return Ok(schema.clone()),
            Some(Cached::Failed { reason, at }) if at.elapsed() < RETRY_AFTER => return Err(DecodeError::Registry(reason.clone())),
            _ => {}
        }
        if let Some((at, reason)) = self.unreachable.as_ref().filter(|(at, _)| at.elapsed() < RETRY_AFTER) {
            return Err(DecodeError::Registry(format!(
                "schema {id}: not asked for, the registry was unreachable {} ms ago: {reason}",
                at.elapsed().as_millis()
            )));
        }
        if self.schemas.len() >= MAX_SCHEMAS {
            // Ids that failed go first; the schemas in use stay unless the cache is all of them.
            self.schemas.retain(|_, cached| matches!(cached, Cached::Ready(_)));
            if self.schemas.len() >= MAX_SCHEMAS {
                self.schemas.clear();
            }
        }
        match self.fetch(id) {
            Ok(schema) => {
                let schema = Arc::new(schema);
                self.schemas.insert(id, Cached::Ready(schema.clone()));
                Ok(schema)
            }
            Err(unanswered) => {
                if let Unanswered::Unreachable(reason) = &unanswered {
                    self.unreachable = Some((Instant::now(), reason.clone()));
                }
                let reason = format!("schema {id}: {}", unanswered.reason());
                self.schemas.insert(id, Cached::Failed { reason: reason.clone(), at: Instant::now() });
                Err(DecodeError::Registry(reason))
            }
        }
    }

    fn fetch(&self, id: u32) -> Result<Schema, Unanswered> {
        let answer = self.answer(&format!("/schemas/ids/{id}"))?;
        let schema_type = answer.schema_type.as_deref().unwrap_or("AVRO");
        if schema_type == "JSON" {
            // The body is read as JSON; the schema (and what it references) is not needed.
            return Ok(Schema::Json);
        }
        // Every schema it references, depth first, each once: (name, answer).
        let mut referenced: Vec<(String, Answer)> = Vec::new();
        let mut pending: Vec<Reference> = answer.references.iter().rev().cloned().collect();
        while let Some(reference) = pending.pop() {
            if referenced.iter().any(|(name, _)| *name == reference.name) {
                continue;
            }
            if referenced.len() >= MAX_REFERENCES {
                return Err(Unanswered::Refused(format!("references more than {MAX_REFERENCES} schemas")));
            }
            let subject = percent_encoding::utf8_percent_encode(&reference.subject, SUBJECT_ESCAPED);
            let version = if reference.version < 0 { "latest".to_string() } else { reference.version.to_string() };
            // A version deleted since (soft) still decodes the messages written with it.
            let found = self.answer(&format!("/subjects/{subject}/versions/{version}?deleted=true"))?;
            pending.extend(found.references.iter().rev().cloned());
            referenced.push((reference.name, found));
        }
        let invalid = Unanswered::Refused;
        match schema_type {
            "AVRO" => {
                // Reversed: each schema after those it references, as resolving names needs.
                let texts: Vec<&str> = referenced.iter().rev().map(|(_, a)| a.schema.as_str()).collect();
                Ok(Schema::Avro(Box::new(AvroSchema::parse(&answer.schema, &texts).map_err(invalid)?)))
            }
            "PROTOBUF" => {
                let files = referenced.iter().map(|(name, a)| (name.as_str(), a.schema.as_str())).collect();
                Ok(Schema::Protobuf(ProtobufSchema::compile(&answer.schema, files).map_err(invalid)?))
            }
            other => Err(invalid(format!("schema type {other} is not one this host reads (AVRO, PROTOBUF, JSON)"))),
        }
    }

    fn answer(&self, path: &str) -> Result<Answer, Unanswered> {
        let body = self.api.get(path)?;
        serde_json::from_str(&body).map_err(|e| Unanswered::Refused(format!("the registry's answer to {path} is not a schema: {e}")))
    }
}
