//! Helpers for the end-to-end tests: run the real `clean-host` binary
//! (built by `cargo build --release`) against real plugins and fixtures.
//!
//! `scripts/test` builds everything these need first: the host, the bundled
//! detectors into `plugins/`, and the deliberately broken plugins of
//! `tests/fault-plugins`.

pub mod brokers;
pub mod http;
pub mod registry;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

fn existing(path: PathBuf, hint: &str) -> PathBuf {
    assert!(path.exists(), "{} is missing: {hint}", path.display());
    path
}

pub fn binary() -> PathBuf {
    existing(root().join("target/release/clean-host"), "run scripts/test (or cargo build --release)")
}

/// A command running `clean-host` with the compiled-plugin cache every
/// host the tests start shares (`--plugin-cache`): a plugin is compiled
/// once, not at each start (the bundled eight take 7 s of both cores).
/// scripts/test empties it first.
pub fn host_command() -> Command {
    let mut command = Command::new(binary());
    command.env("CLEAN_HOST_PLUGIN_CACHE", root().join("target/test-plugin-cache"));
    command
}

/// A bundled detector, as `scripts/build` leaves it in `plugins/`.
pub fn bundled(name: &str) -> PathBuf {
    existing(root().join("plugins").join(format!("{name}.wasm")), "run scripts/build")
}

/// A Python or JavaScript detector, as `scripts/build-polyglot` leaves it in `plugins/extra/`.
pub fn extra(name: &str) -> PathBuf {
    existing(root().join("plugins/extra").join(format!("{name}.wasm")), "run scripts/build")
}

pub const BUNDLED: [&str; 8] = ["completeness", "drift", "duplicates", "freshness", "outliers", "schema", "validity", "volume"];

/// A plugin of `tests/fault-plugins` (`spin`, `memory_bomb`, `panic`, `bad_row`, `panic_once`).
pub fn fault_plugin(name: &str) -> PathBuf {
    existing(root().join("tests/fault-plugins/target/wasm32-wasip2/release").join(format!("{name}.wasm")), "run scripts/test, which builds tests/fault-plugins")
}

/// A plugin of `tests/fault-plugins/c` (`wild-pointer`), as `scripts/test` builds it.
pub fn c_fault_plugin(name: &str) -> PathBuf {
    existing(root().join("tests/fault-plugins/target/c").join(format!("{name}.wasm")), "run scripts/test, which builds tests/fault-plugins/c")
}

/// A scratch folder with a plugins folder of its own.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    /// A sandbox whose plugins folder holds every bundled detector.
    pub fn with_bundled() -> Self {
        let s = Sandbox::empty();
        for name in BUNDLED {
            s.add_plugin(&bundled(name));
        }
        s
    }

    pub fn empty() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("plugins")).expect("plugins dir");
        Sandbox { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn plugins(&self) -> PathBuf {
        self.path("plugins")
    }

    pub fn add_plugin(&self, wasm: &Path) {
        std::fs::copy(wasm, self.plugins().join(wasm.file_name().expect("file name"))).expect("copy plugin");
    }

    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, contents).expect("write file");
        path
    }

    /// `records` generated records with `faults` (`KIND@START+LEN`), as a file.
    pub fn generate(&self, name: &str, records: u64, faults: &[&str]) -> PathBuf {
        let mut args = vec!["generate".to_string(), "--records".into(), records.to_string()];
        if !faults.is_empty() {
            args.push("--inject".into());
            args.push(faults.join(","));
        }
        let out = host_command().args(&args).current_dir(self.dir.path()).output().expect("run generate");
        assert!(out.status.success(), "generate failed: {}", String::from_utf8_lossy(&out.stderr));
        self.write(name, out.stdout)
    }

    /// Run `clean-host ARGS` in the sandbox, with `--plugins` and `--data-dir` pointing into it.
    pub fn run(&self, args: &[&str]) -> Run {
        self.run_with_stdin(args, None)
    }

    /// Like [`Sandbox::run`], but a run still going after `limit` is killed
    /// and the test fails: for runs that hostile plugins or input try to hang.
    pub fn run_within(&self, args: &[&str], limit: std::time::Duration) -> Run {
        let mut command = host_command();
        command.args(args).arg("--plugins").arg(self.plugins()).arg("--data-dir").arg(self.path("data"));
        self.run_command_within(command, limit)
    }

    /// `command` run in the sandbox, killed and the test failed once it ran for `limit`.
    pub fn run_command_within(&self, mut command: Command, limit: std::time::Duration) -> Run {
        let (out, err) = (self.path("run.stdout"), self.path("run.stderr"));
        let mut child = command
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).expect("stdout file"))
            .stderr(std::fs::File::create(&err).expect("stderr file"))
            .spawn()
            .expect("start clean-host");
        let started = std::time::Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for clean-host") {
                break status;
            }
            if started.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                panic!("clean-host still running after {limit:?}:\n{}", std::fs::read_to_string(&err).unwrap_or_default());
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        Run { code: status.code(), stdout: std::fs::read_to_string(&out).unwrap_or_default(), stderr: std::fs::read_to_string(&err).unwrap_or_default() }
    }

    pub fn run_with_stdin(&self, args: &[&str], stdin: Option<&[u8]>) -> Run {
        self.run_command(args, stdin, &[])
    }

    /// Like [`Sandbox::run`], with `env` set in the host's environment.
    pub fn run_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        self.run_command(args, None, env)
    }

    fn run_command(&self, args: &[&str], stdin: Option<&[u8]>, env: &[(&str, &str)]) -> Run {
        let mut cmd = host_command();
        cmd.args(args)
            .envs(env.iter().copied())
            .arg("--plugins")
            .arg(self.plugins())
            .arg("--data-dir")
            .arg(self.path("data"))
            .current_dir(self.dir.path())
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start clean-host");
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().expect("stdin");
            pipe.write_all(input).expect("write stdin");
        }
        let out = child.wait_with_output().expect("wait for clean-host");
        Run { code: out.status.code(), stdout: String::from_utf8_lossy(&out.stdout).into_owned(), stderr: String::from_utf8_lossy(&out.stderr).into_owned() }
    }
}

/// What a run of the binary printed.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn assert_ok(&self) -> &Self {
        assert_eq!(self.code, Some(0), "clean-host failed:\n{}", self.stderr);
        self
    }

    /// The alerts of a `--format json` run.
    pub fn alerts(&self) -> Vec<Value> {
        self.stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("alert line is not JSON ({e}): {l}"))).collect()
    }

    /// The summary object: the last line on stderr.
    pub fn summary(&self) -> Value {
        let last = self.stderr.lines().last().unwrap_or_default();
        serde_json::from_str(last).unwrap_or_else(|e| panic!("last stderr line is not the summary ({e}):\n{}", self.stderr))
    }

    /// `(window seq, detector, metric)` of every alert.
    pub fn alert_keys(&self) -> Vec<(u64, String, String)> {
        self.alerts()
            .iter()
            .map(|a| {
                (a["window"]["seq"].as_u64().expect("seq"), a["detector"].as_str().expect("detector").into(), a["metric"].as_str().expect("metric").into())
            })
            .collect()
    }
}

/// The summary's entry for plugin `name`.
pub fn plugin<'a>(summary: &'a Value, name: &str) -> &'a Value {
    summary["plugins"].as_array().and_then(|ps| ps.iter().find(|p| p["name"] == name)).unwrap_or_else(|| panic!("no plugin {name} in {summary}"))
}

/// Waits until `done` (asked every 200 ms), or fails the test after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, done: impl FnMut() -> bool) {
    assert!(waited(timeout, done), "timed out waiting for {what}");
}

/// Whether `done` came true within `timeout` (asked every 200 ms).
pub fn waited(timeout: Duration, done: impl FnMut() -> bool) -> bool {
    waited_every(Duration::from_millis(200), timeout, done)
}

/// Whether `done` came true within `timeout`, asked every `every`.
pub fn waited_every(every: Duration, timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while !done() {
        if start.elapsed() >= timeout {
            return false;
        }
        std::thread::sleep(every);
    }
    true
}
