//! Command-line arguments.

use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use clean_host::dispatch::OutputFormat;
use clean_host::logging::LogFormat;
use clean_host::scaffold::Lang;

/// Watch the quality of streaming data with WebAssembly detectors.
///
/// With no command, runs the pipelines: those of --config, or one built from
/// --source, or (with neither) the built-in event generator, each feeding
/// every detector in --plugins.
#[derive(Debug, Parser)]
#[command(name = "clean-host", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(flatten)]
    pub run: RunArgs,
}

impl Cli {
    /// The command line, parsed; a run flag given with a command is an error
    /// (it would be ignored), whereas the global flags go on either side of it.
    pub fn parse_checked() -> Cli {
        let matches = Cli::command().get_matches();
        if let Some(command) = matches.subcommand_name() {
            let run = RunArgs::augment_args(clap::Command::new("run"));
            let given = run.get_arguments().find(|a| matches.value_source(a.get_id().as_str()) == Some(ValueSource::CommandLine));
            if let Some(flag) = given.map(|a| a.get_long().unwrap_or_default().to_string()) {
                let message = format!("--{flag} before `{command}` is a flag of the run; `{command}`'s own flags go after it");
                Cli::command().error(clap::error::ErrorKind::ArgumentConflict, message).exit();
            }
        }
        Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }
}

/// What every command reads: where the plugins, the config and the data are, and how to log.
/// Each flag of a run (these, and the run's own) may come from `CLEAN_HOST_FLAG` instead
/// (`--data-dir`: `CLEAN_HOST_DATA_DIR`); the command line wins. `--help` names the
/// variables, never their values (a source URL may hold a password).
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Folder of detector plugins (`NAME.wasm`, optional `NAME.toml` beside each).
    #[arg(long, global = true, default_value = "plugins", env = "CLEAN_HOST_PLUGINS", hide_env_values = true)]
    pub plugins: PathBuf,
    /// TOML config with pipelines, alert rules and limits.
    #[arg(long, global = true, env = "CLEAN_HOST_CONFIG", hide_env_values = true)]
    pub config: Option<PathBuf>,
    /// Folder for the history, dead letters, checkpoints and (unless --plugin-cache) compiled plugins (default: clean-data).
    #[arg(long, global = true, env = "CLEAN_HOST_DATA_DIR", hide_env_values = true)]
    pub data_dir: Option<PathBuf>,
    /// Folder for compiled plugins instead of the data dir, with a key of its own: hosts of one user
    /// that share it (a volume, a baked image) compile each plugin once between them.
    #[arg(long, global = true, env = "CLEAN_HOST_PLUGIN_CACHE", hide_env_values = true)]
    pub plugin_cache: Option<PathBuf>,
    /// Log lines on stderr as human text or JSON objects.
    #[arg(long, global = true, value_enum, default_value = "human", env = "CLEAN_HOST_LOG_FORMAT", hide_env_values = true)]
    pub log_format: LogFormat,
    /// Log filter, e.g. `warn` or `clean_host=debug` (default: RUST_LOG, else `info`).
    #[arg(long, global = true, env = "CLEAN_HOST_LOG_LEVEL", hide_env_values = true)]
    pub log_level: Option<String>,
}

/// The run's own flags (no command given).
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Read JSON lines from this file, `-` for stdin, `generator`, or a broker:
    /// kafka://HOST:PORT/TOPIC?group=G&offset=earliest|latest|N|@UNIX_MS,
    /// pulsar://HOST:PORT/TENANT/NAMESPACE/TOPIC?subscription=S&type=T,
    /// redis://HOST:PORT/STREAM?group=G&consumer=C.
    #[arg(long, env = "CLEAN_HOST_SOURCE", hide_env_values = true)]
    pub source: Option<String>,
    /// Broker sources: read to the end positions seen at start, then stop and report.
    #[arg(long, env = "CLEAN_HOST_UNTIL_END", value_parser = clap::builder::FalseyValueParser::new(), hide_env_values = true)]
    pub until_end: bool,
    /// Records per count window (overrides the config's window size).
    #[arg(long, env = "CLEAN_HOST_WINDOW", hide_env_values = true)]
    pub window: Option<usize>,
    /// Field holding each record's event time.
    #[arg(long, env = "CLEAN_HOST_EVENT_TIME", hide_env_values = true)]
    pub event_time: Option<String>,
    /// How alerts are written to stdout.
    #[arg(long, value_enum, env = "CLEAN_HOST_FORMAT", hide_env_values = true)]
    pub format: Option<OutputFormat>,
    /// Also append alerts as JSON lines to this file.
    #[arg(long, env = "CLEAN_HOST_ALERTS_FILE", hide_env_values = true)]
    pub alerts_file: Option<PathBuf>,
    /// Append one JSON line per analysed window to this file.
    #[arg(long, env = "CLEAN_HOST_WINDOWS_FILE", hide_env_values = true)]
    pub windows_file: Option<PathBuf>,
    /// Where undecodable lines go (default: DATA_DIR/dead-letters.jsonl; broker
    /// sources use a dead-letter topic on their broker).
    #[arg(long, env = "CLEAN_HOST_DEAD_LETTERS", hide_env_values = true)]
    pub dead_letters: Option<PathBuf>,
    #[command(flatten)]
    pub generator: GeneratorArgs,
    /// Serve the dashboard, the JSON API and /metrics on this address
    /// (`--listen` alone: 127.0.0.1:8080; port 0 picks a free one).
    #[arg(long, num_args = 0..=1, default_missing_value = "127.0.0.1:8080", env = "CLEAN_HOST_LISTEN", hide_env_values = true)]
    pub listen: Option<String>,
    /// No live status line on the terminal.
    #[arg(long, env = "CLEAN_HOST_QUIET", value_parser = clap::builder::FalseyValueParser::new(), hide_env_values = true)]
    pub quiet: bool,
    /// Run the bundled detectors as native code instead of the plugins (benchmark builds only).
    #[arg(long, hide = true)]
    pub native: bool,
}

/// The built-in generator's settings (the run with `--source generator`, and `generate`).
#[derive(Debug, Args)]
pub struct GeneratorArgs {
    /// Generator: stop after this many records.
    #[arg(long, env = "CLEAN_HOST_RECORDS", hide_env_values = true)]
    pub records: Option<u64>,
    /// Generator: records per second of wall time.
    #[arg(long, env = "CLEAN_HOST_RATE", hide_env_values = true)]
    pub rate: Option<u64>,
    /// Generator: random seed.
    #[arg(long, env = "CLEAN_HOST_SEED", hide_env_values = true)]
    pub seed: Option<u64>,
    /// Generator: mean delay in ms between a live record's event time and
    /// its being produced (default 100; 0 stamps the wall clock).
    #[arg(long, env = "CLEAN_HOST_DELIVERY_LAG_MS", hide_env_values = true)]
    pub delivery_lag_ms: Option<f64>,
    /// Generator: faults to inject, `KIND@START+LEN` (comma-separated).
    #[arg(long, value_delimiter = ',', env = "CLEAN_HOST_INJECT", hide_env_values = true)]
    pub inject: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// List every tenant's plugins: version, status and, while a host runs
    /// with the same data dir, its calls, errors, reloads and call times.
    List {
        /// One JSON object per plugin instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Make the shadow version of a detector (`shadow/NAME.wasm`) the active one.
    Promote {
        /// The detector's file name, without `.wasm`.
        name: String,
        /// Whose plugin folder (default: the plugins folder itself).
        #[arg(long, default_value = "default")]
        tenant: String,
    },
    /// Create a plugin project that builds as it is (a detector flagging mostly-absent columns, to change).
    New {
        /// Plugin name: lowercase letters, digits, '-' and '_'.
        name: String,
        #[arg(long, value_enum, default_value = "rust")]
        lang: Lang,
        /// Where to create it (default: ./NAME).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Build the project at PATH into the plugins folder (a running host picks it up).
    Build {
        #[arg(default_value = ".")]
        path: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the config and load every plugin, then exit.
    Check {
        /// Also print the config as it will run (after `${VAR}`, every default filled in), secrets masked.
        #[arg(long)]
        show_config: bool,
    },
    /// Plugins: list them, promote a shadow version, scaffold and build new ones.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// The old spelling of `plugin list` (`plugins [--json]`) and
    /// `plugin promote` (`plugins promote NAME`), kept for one release.
    #[command(hide = true)]
    Plugins {
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        command: Option<PluginCommand>,
    },
    /// Write the generator's records to stdout (a fixture for --source), or produce them to a broker.
    Generate {
        /// Produce to this topic or stream instead (kafka://, pulsar://, redis:// URL).
        #[arg(long)]
        sink: Option<String>,
        /// Kafka: partitions of the topic if it must be created.
        #[arg(long, default_value_t = 1)]
        partitions: i32,
        #[command(flatten)]
        generator: GeneratorArgs,
    },
}
