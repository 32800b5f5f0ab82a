//! Command-line interface. Every command's `--help` carries examples.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "berth",
    version,
    about = "Put web applications into production on a server and keep them there",
    long_about = "berth runs the edge proxy in front of your apps: routing by host and path, \
                  load balancing across releases, health checks, retries, limits, metrics and \
                  access logs, reconfigured live without dropping a request.",
    after_help = "Start with:\n  berth serve --config examples/edge.toml\n\nSee docs/config.md for the configuration file."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the edge proxy and the admin listener until stopped
    #[command(after_help = "Examples:
  berth serve --config /etc/berth/berth.toml
  berth serve --config examples/edge.toml --log-format json

Signals: SIGHUP re-reads the file (as `berth reload` does); SIGTERM or SIGINT stop accepting,
let in-flight requests finish (server.shutdown_timeout) and exit 0.")]
    Serve(ServeArgs),
    /// Validate a configuration file without running anything
    #[command(after_help = "Examples:
  berth check --config berth.toml

Exit status: 0 valid, 2 invalid (each problem is printed as file:line:column: field: message).")]
    Check(ConfigArg),
    /// Make a running `berth serve` re-read its configuration file
    #[command(after_help = "Examples:
  berth reload --config berth.toml          # finds the admin listener in the file
  berth reload --admin 127.0.0.1:9180

An invalid file is refused with its errors and the running configuration keeps serving.
Exit status: 0 reloaded, 2 refused, 1 could not reach the server.")]
    Reload(ReloadArgs),
    /// Print shell completions (bash, zsh, fish, elvish, powershell)
    #[command(after_help = "Examples:
  berth completions bash > /etc/bash_completion.d/berth
  berth completions zsh > \"${fpath[1]}/_berth\"
  berth completions fish > ~/.config/fish/completions/berth.fish")]
    Completions { shell: clap_complete::Shell },
}

#[derive(Args)]
pub struct ConfigArg {
    /// Configuration file (TOML)
    #[arg(long, short, env = "BERTH_CONFIG", default_value = "berth.toml")]
    pub config: PathBuf,
}

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Log format for berth's own logs on stderr (access logs go to server.access_log)
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Args)]
pub struct ReloadArgs {
    /// Configuration file whose server.admin_listen names the server to reload
    #[arg(
        long,
        short,
        env = "BERTH_CONFIG",
        default_value = "berth.toml",
        conflicts_with = "admin"
    )]
    pub config: PathBuf,
    /// Admin listener address of the running server
    #[arg(long)]
    pub admin: Option<SocketAddr>,
}
