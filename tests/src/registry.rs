//! A schema registry for the tests: the Confluent REST API as documented
//! (`GET /schemas/ids/{id}`, `GET /subjects/{subject}/versions/{version}`,
//! HTTP basic auth, JSON errors), serving schemas the test gives it. No
//! registry runs here (Confluent's is not on Maven Central; Apicurio's app
//! ships no runnable jar there; Karapace is not on PyPI), so the host is
//! tested against the protocol.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use crate::http::read_request;

pub struct Registry {
    pub url: String,
    asked: Arc<Mutex<Vec<String>>>,
}

impl Registry {
    /// Serves `answers` (path to JSON) on a free loopback port to requests
    /// whose `Authorization` header is `authorization`; others get 401.
    pub fn start(answers: BTreeMap<String, serde_json::Value>, authorization: &str) -> Registry {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let asked = Arc::new(Mutex::new(Vec::new()));
        let log = asked.clone();
        let authorization = authorization.to_string();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let Some(request) = read_request(&stream) else { continue };
                // What a path asks for, whatever its query (`?deleted=true` on references).
                let path = request.path.split('?').next().unwrap_or_default().to_string();
                let (status, body) = if request.header("authorization") != Some(authorization.as_str()) {
                    ("401 Unauthorized", serde_json::json!({"error_code": 401, "message": "Unauthorized"}))
                } else {
                    match answers.get(&path) {
                        Some(answer) => ("200 OK", answer.clone()),
                        None => ("404 Not Found", serde_json::json!({"error_code": 40403, "message": "Schema not found"})),
                    }
                };
                log.lock().unwrap().push(path);
                let body = body.to_string();
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\ncontent-type: application/vnd.schemaregistry.v1+json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Registry { url, asked }
    }

    /// How many times `path` (without its query) was asked for.
    pub fn asked(&self, path: &str) -> usize {
        self.asked.lock().unwrap().iter().filter(|p| *p == path).count()
    }
}
