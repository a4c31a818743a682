//! The `clean-host` command: parses the flags and hands them to the command
//! they name (no command: run the pipelines).

mod cli;
mod commands;

use cli::{Cli, Command, PluginCommand};

fn main() {
    let cli = Cli::parse_checked();
    let events = match clean_host::logging::init(cli.global.log_format, cli.global.log_level.as_deref()) {
        Ok(events) => events,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let g = &cli.global;
    let done = match cli.command {
        None => commands::run::run(g, &cli.run, &events),
        Some(Command::Check { show_config }) => commands::check::check(g, show_config),
        Some(Command::Generate { ref sink, partitions, ref generator }) => commands::generate::generate(g, generator, sink.as_deref(), partitions),
        Some(Command::Plugin { ref command }) => commands::plugin::plugin(g, command),
        Some(Command::Plugins { json, ref command }) => commands::plugin::plugin(g, command.as_ref().unwrap_or(&PluginCommand::List { json })),
    };
    if let Err(e) = done {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
