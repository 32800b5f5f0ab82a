//! The `berth` binary: parses the command line and wires the crates together.

mod admin;
mod apps_edge;
mod cli;
mod client;
mod commands;
mod data_plane;
mod guard;
mod reload;
mod serve;
mod state;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use cli::{AuditCommand, Cli, Command, TokensCommand, UsersCommand};
use client::{Client, block_on};
use commands::{access, apps, audit, config, locks, login, rollouts, secrets};

// The proxy allocates a little per request; glibc malloc spent about a fifth of the request
// path's instructions in a profile (bench/RESULTS.md), mimalloc much less. Built without
// transparent huge pages (the workspace's `no_thp`): mimalloc advised its first arena into a
// 2 MiB page, and zeroing it was a fifth of the start-up of every short-lived berth process
// such as the CLI (measured on the exec shim berth then started instances with: 2.65 -> 2.2
// ms of CPU, bench/RESULTS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json;
    let remote = cli.remote.as_deref();
    let api = || Client::new(remote);
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Guard { marker } => Ok(guard::run(&marker)),
        Command::Check(args) => check(&args.config),
        Command::Reload(args) => reload::run(args, remote),
        Command::Completions { shell } => completions(shell),
        Command::Login { token_file } => {
            let remote = api().remote().to_owned();
            block_on(login::login(&remote, token_file, json))
        }
        Command::Logout => login::logout().map(|_| ExitCode::SUCCESS),
        Command::Whoami => block_on(async { login::whoami(&api(), json).await }),
        Command::Users(cmd) => block_on(async {
            let c = api();
            match cmd {
                UsersCommand::Add { name, grants } => {
                    access::users_add(&c, &name, &grants, json).await
                }
                UsersCommand::Remove { name } => access::users_remove(&c, &name, json).await,
                UsersCommand::List => access::users_list(&c, json).await,
            }
        }),
        Command::Tokens(cmd) => block_on(async {
            let c = api();
            match cmd {
                TokensCommand::Create { user, label } => {
                    access::tokens_create(&c, user.as_deref(), &label, json).await
                }
                TokensCommand::Revoke { id } => access::tokens_revoke(&c, id, json).await,
                TokensCommand::List { user } => {
                    access::tokens_list(&c, user.as_deref(), json).await
                }
            }
        }),
        Command::Deploy(args) => block_on(async { apps::deploy(&api(), &args, json).await }),
        Command::Lock(args) => block_on(async { locks::lock(&api(), &args, json).await }),
        Command::Unlock(args) => block_on(async { locks::unlock(&api(), &args, json).await }),
        Command::Approve(args) => block_on(async { locks::approve(&api(), &args, json).await }),
        Command::Ps(args) => block_on(async { apps::ps(&api(), &args, json).await }),
        Command::Rollback(args) => {
            block_on(async { rollouts::rollback(&api(), &args, json).await })
        }
        Command::Promote(a) => {
            block_on(async { rollouts::control(&api(), &a, "promote", json).await })
        }
        Command::Abort(a) => block_on(async { rollouts::control(&api(), &a, "abort", json).await }),
        Command::Pause(a) => block_on(async { rollouts::control(&api(), &a, "pause", json).await }),
        Command::Resume(a) => {
            block_on(async { rollouts::control(&api(), &a, "resume", json).await })
        }
        Command::Logs(args) => block_on(async { apps::logs(&api(), &args).await }),
        Command::Releases(args) => block_on(async { apps::releases(&api(), &args, json).await }),
        Command::Deploys(args) => block_on(async { apps::deploys(&api(), &args, json).await }),
        Command::Secrets(cmd) => block_on(async { secrets::run(&api(), cmd, json).await }),
        Command::Restart(a) => {
            block_on(async { secrets::restart_app(&api(), &a.app, &a.env, json).await })
        }
        Command::Config(cmd) => block_on(async { config::run(&api(), cmd, json).await }),
        Command::PromoteRelease(p) => block_on(async { config::promote(&api(), &p, json).await }),
        Command::Audit(cmd) => block_on(async {
            let c = api();
            match cmd {
                AuditCommand::List(f) => audit::list_entries(&c, &f, json).await,
                AuditCommand::Export(f) => audit::export(&c, &f).await,
                AuditCommand::Verify => audit::verify(&c, json).await,
                AuditCommand::Prune { older_than_days } => {
                    audit::prune(&c, older_than_days, json).await
                }
            }
        }),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("berth: {e:#}");
            client::exit_code(&e)
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
            Ok(ExitCode::from(client::exit::BAD_INPUT))
        }
    }
}
