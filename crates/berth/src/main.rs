//! The `berth` binary: parses the command line and wires the crates together.

mod admin;
mod cli;
mod reload;
mod serve;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use cli::{Cli, Command};

// The proxy allocates a little per request; glibc malloc spent about a fifth of the request
// path's instructions in a profile (bench/RESULTS.md), mimalloc much less.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Check(args) => check(&args.config),
        Command::Reload(args) => reload::run(args),
        Command::Completions { shell } => completions(shell),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("berth: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn completions(shell: clap_complete::Shell) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "berth", &mut script);
    // `berth completions bash | head` closes the pipe early; that is not an error.
    match std::io::stdout().write_all(&script) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(ExitCode::SUCCESS),
    }
}

/// Exit status for input the user must fix (as opposed to a runtime failure).
pub const EXIT_BAD_INPUT: u8 = 2;

fn check(path: &std::path::Path) -> anyhow::Result<ExitCode> {
    match berth_config::load(path) {
        Ok(cfg) => {
            println!(
                "{}: ok ({} routes, {} groups, listening on {})",
                path.display(),
                cfg.edge.routes.len(),
                cfg.edge.groups.len(),
                cfg.edge
                    .listeners
                    .iter()
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{e}");
            Ok(ExitCode::from(EXIT_BAD_INPUT))
        }
    }
}
