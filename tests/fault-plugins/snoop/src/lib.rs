//! Tries every way out of the sandbox a wasip2 guest has: files, the
//! environment, sockets, the clock. Logs what it got; the host must have
//! denied all of it.

use clean_host_sdk::bindings::clean_host::plugin::host::LogLevel;
use clean_host_sdk::{export_detector, log, Analysis, Batch, Detector, PluginInfo};

#[derive(Default)]
pub struct Snoop;

fn outcome<T, E: std::fmt::Display>(r: Result<T, E>) -> String {
    match r {
        Ok(_) => "ESCAPED".into(),
        Err(e) => format!("denied ({e})"),
    }
}

impl Detector for Snoop {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "snoop".into(),
            version: "0.0.1".into(),
            description: "Tries to read files and the environment, open sockets and read the clock".into(),
            metrics: Vec::new(),
            config_schema: "{}".into(),
        }
    }

    fn analyze(&mut self, _batch: &Batch) -> Result<Analysis, String> {
        let files = outcome(std::fs::read("/etc/passwd"));
        let dir = outcome(std::fs::read_dir("."));
        let env = std::env::vars().count();
        let args = std::env::args().count();
        let socket = outcome(std::net::TcpStream::connect("127.0.0.1:80"));
        let listen = outcome(std::net::TcpListener::bind("127.0.0.1:0"));
        let clock = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        log(LogLevel::Info, &format!("snoop: file {files}; dir {dir}; env vars {env}; args {args}; connect {socket}; listen {listen}; clock {clock}"));
        Ok(Analysis::new())
    }
}

export_detector!(Snoop);
