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
    after_help = "Start with:\n  berth serve --config examples/edge.toml\n\nThen, from the same machine:\n  berth login --token-file examples/berth-data/admin.token\n  berth users add alice --grant deployer@staging --grant viewer@production\n\nExit status: 0 ok, 1 failed or unreachable, 2 invalid input, 3 not logged in or not allowed,\n4 not found or already exists. See docs/config.md and docs/api.md."
)]
pub struct Cli {
    /// Admin API to talk to: http://HOST:PORT or unix:PATH (default: the saved login, else
    /// http://127.0.0.1:9180). The token comes from BERTH_TOKEN or `berth login`.
    #[arg(long, global = true, env = "BERTH_REMOTE")]
    pub remote: Option<String>,
    /// Print answers as JSON
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the edge proxy and the admin listener until stopped
    #[command(after_help = "Examples:
  berth serve --config /etc/berth/berth.toml
  berth serve --config examples/edge.toml --log-format json
  BERTH_DATABASE_URL=postgres://berth@127.0.0.1/berth berth serve --config berth.toml

Signals: SIGHUP re-reads the file (as `berth reload` does); SIGTERM or SIGINT stop accepting,
let in-flight requests finish (server.shutdown_timeout) and exit 0.

Secrets: the master key comes from BERTH_MASTER_KEY (64 hex digits), else the systemd credential
$CREDENTIALS_DIRECTORY/berth-master-key, else the file BERTH_MASTER_KEY_FILE names, else
master.key in the data directory (created, mode 0600, at the first start). See docs/secrets.md.")]
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
    /// Save a token for the CLI (read from a file or stdin, checked against the server)
    #[command(after_help = "Examples:
  berth login --token-file /var/lib/berth/admin.token
  berth tokens create --label laptop | berth login --remote http://10.0.0.5:9180

The token and remote are saved with mode 0600 in $XDG_CONFIG_HOME/berth/credentials.json
(or $BERTH_CREDENTIALS). Tokens are never taken from the command line.")]
    Login {
        /// File holding the token (default: read it from stdin)
        #[arg(long)]
        token_file: Option<PathBuf>,
    },
    /// Forget the saved token
    #[command(after_help = "Examples:\n  berth logout")]
    Logout,
    /// Show who the saved token belongs to
    #[command(
        after_help = "Examples:\n  berth whoami\n  BERTH_TOKEN=$(cat ci.token) berth whoami --json"
    )]
    Whoami,
    /// Manage users and their roles (admin only)
    #[command(subcommand)]
    Users(UsersCommand),
    /// Manage API tokens
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// Read and check the tamper-evident audit log
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Deploy an app: upload its source, build it, start it, switch traffic when healthy
    #[command(after_help = "Examples:
  berth deploy                          # the app in the current directory, to production
  berth deploy ./shop --env staging
  berth deploy shop-1.4.2.tar.gz

The directory needs a berth.toml at its root (docs/app-spec.md); it is checked here first.
Files matched by .gitignore or .berthignore are not uploaded; .git never is. The server
imports the upload as an immutable release, runs [build] command inside it, starts every
process, waits until each is healthy (deploy timeout), switches the app's hosts to it, lets
requests to the old release finish, then stops the old release. If anything fails before
the switch, the old release keeps serving and the error says why.

With [deploy] strategy = \"canary\" (or --strategy canary) the new release takes a share of
traffic in steps (10% then 50% by default) while the edge's numbers for both releases are
judged every analysis interval; a breach rolls it back at once. With \"blue-green\" it runs
beside the old release, reachable only with the header `x-berth-release: RELEASE`, until
`berth promote`. Every decision and its numbers: berth deploys APP (docs/deploy.md).

With [deploy] requires_approval = true the deploy waits, with nothing started, until
`berth approve APP` (another user once users exist) or `berth abort APP`.

Exit status: 0 deployed, 2 invalid app or upload, 3 not allowed, 4 another deploy of the app
is in progress, the app is locked (berth lock) or a host is taken, 1 build failed, instances
never became healthy, the pre-deploy hook failed, the release was rolled back, or the deploy
was cancelled while it waited for approval.")]
    Deploy(crate::commands::apps::DeployArgs),
    /// Serve a retained release again: the previous one, or the one named
    #[command(after_help = "Examples:
  berth rollback shop                    # back to the release before the current one
  berth rollback shop r-3f2a9c0b1d4e --env staging

The release starts beside the current one, is health-gated, takes the traffic, and the
current one is drained and stopped: the steps of a rolling deploy, without a build or the
pre-deploy hook.")]
    Rollback(crate::commands::rollouts::RollbackArgs),
    /// Move the canary or blue-green deploy in progress to its next step now
    #[command(
        after_help = "Examples:\n  berth promote shop\n\nA step with pause = \"manual\" and a blue-green deploy wait for this."
    )]
    Promote(crate::commands::apps::AppArgs),
    /// Roll back the canary or blue-green deploy in progress now, or cancel one waiting for approval
    #[command(after_help = "Examples:\n  berth abort shop --env staging")]
    Abort(crate::commands::apps::AppArgs),
    /// Hold the canary deploy in progress at its current step (analysis keeps watching)
    #[command(after_help = "Examples:\n  berth pause shop\n  berth resume shop")]
    Pause(crate::commands::apps::AppArgs),
    /// Let a paused canary deploy continue
    #[command(after_help = "Examples:\n  berth resume shop")]
    Resume(crate::commands::apps::AppArgs),
    /// Lock an app's deploys in an environment (deploy, rollback, promote-release, restart)
    #[command(after_help = "Examples:
  berth lock shop --reason \"migrating the orders table\"
  berth lock shop --env staging --show

While locked, a deploy, rollback, promote-release or restart of the app in that
environment is refused with the lock's owner, reason and time. The lock is kept in the
store (it survives restarts) and audited. Needs deployer on the environment.")]
    Lock(crate::commands::locks::LockArgs),
    /// Remove an app's deploy lock (someone else's only with --force, which is audited)
    #[command(after_help = "Examples:
  berth unlock shop
  berth unlock shop --env staging --force")]
    Unlock(crate::commands::locks::UnlockArgs),
    /// Let a deploy waiting for approval ([deploy] requires_approval) start
    #[command(after_help = "Examples:
  berth approve shop
  berth approve shop --env production 42

Once users exist, the approver must be another user than the one who deployed.
berth abort cancels a deploy that waits for approval instead.")]
    Approve(crate::commands::locks::ApproveArgs),
    /// Show an app's instances: release, state, pid, port, restarts, uptime
    #[command(after_help = "Examples:
  berth ps shop
  berth ps shop --env staging --json")]
    Ps(crate::commands::apps::AppArgs),
    /// Print an app's output (stdout and stderr of every instance, with timestamps)
    #[command(after_help = "Examples:
  berth logs shop --since 10m
  berth logs shop --follow --process web
  berth logs shop --release r-3f2a9c0b1d4e --tail 50

Lines read: TIME RELEASE INSTANCE STREAM TEXT.")]
    Logs(crate::commands::apps::LogsArgs),
    /// List an app's releases (* marks the one serving)
    #[command(after_help = "Examples:\n  berth releases shop --env staging")]
    Releases(crate::commands::apps::AppArgs),
    /// List an app's deployments with every step and the reason for it, or follow one
    #[command(after_help = "Examples:
  berth deploys shop
  berth deploys shop --follow            # the deploy in progress, else the next one
  berth deploys shop 42 --follow --env staging

With --follow each step is printed as the server records it, until the deployment ends.
Exit status with --follow: 0 succeeded, 1 failed, rolled back, cancelled or interrupted,
4 no such deployment.")]
    Deploys(crate::commands::apps::DeploysArgs),
    /// Manage an app's secrets per environment (encrypted at rest, injected at start)
    #[command(subcommand)]
    Secrets(crate::commands::secrets::SecretsCommand),
    /// Restart an app's running release with its current secrets (rolling, health-gated)
    #[command(after_help = "Examples:
  berth restart shop --env staging

New instances start beside the old ones and take the traffic once healthy; the old ones
drain and stop. If the new ones never get healthy, the old ones keep serving.")]
    Restart(crate::commands::apps::AppArgs),
    /// Show an app's effective config per environment, or the drift between two
    #[command(subcommand)]
    Config(crate::commands::config::ConfigCommand),
    /// Deploy to one environment exactly the release verified in another
    #[command(after_help = "Examples:
  berth promote-release shop --from staging --to production
  berth promote-release shop --from staging --to production --release r-3f2a9c0b1d4e

The same release id and build directory run in both; no rebuild. The spec's
[environments.<to>] overrides and <to>'s secrets apply. Needs deployer on --to and
viewer on --from.")]
    PromoteRelease(crate::commands::config::PromoteArgs),
    /// Print shell completions (bash, zsh, fish, elvish, powershell)
    #[command(after_help = "Examples:
  berth completions bash > /etc/bash_completion.d/berth
  berth completions zsh > \"${fpath[1]}/_berth\"
  berth completions fish > ~/.config/fish/completions/berth.fish")]
    Completions { shell: clap_complete::Shell },
    /// Internal: the process `berth serve` starts to kill what its instances leave behind
    /// when it dies (see docs/deploy.md)
    #[command(name = "__guard", hide = true)]
    Guard {
        #[arg(long)]
        marker: String,
    },
}

#[derive(Subcommand)]
pub enum UsersCommand {
    /// Add a user with roles per environment
    #[command(after_help = "Examples:
  berth users add alice --grant deployer@staging --grant viewer@production
  berth users add ops --grant admin            # admin on every environment")]
    Add {
        name: String,
        /// ROLE@ENVIRONMENT (roles: admin, deployer, viewer; no @ means every environment)
        #[arg(long = "grant", required = true)]
        grants: Vec<String>,
    },
    /// Remove a user and revoke all its tokens at once (offboarding)
    #[command(after_help = "Examples:\n  berth users remove alice")]
    Remove { name: String },
    /// List users and their grants
    #[command(
        after_help = "Examples:\n  berth users list\n  berth users list --json | jq '.[].name'"
    )]
    List,
}

#[derive(Subcommand)]
pub enum TokensCommand {
    /// Create a token (printed once on stdout; only its hash is stored)
    #[command(after_help = "Examples:
  berth tokens create --label ci
  berth tokens create --user alice --label laptop   # admin only")]
    Create {
        /// Whose token (default: yours)
        #[arg(long)]
        user: Option<String>,
        #[arg(long, default_value = "cli")]
        label: String,
    },
    /// Revoke a token by id
    #[command(after_help = "Examples:\n  berth tokens revoke 7")]
    Revoke { id: i64 },
    /// List tokens (yours, or a user's / everyone's for admins)
    #[command(after_help = "Examples:\n  berth tokens list\n  berth tokens list --user alice")]
    List {
        #[arg(long)]
        user: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Show audit entries, newest first
    #[command(after_help = "Examples:
  berth audit list --since 24h
  berth audit list --actor alice --action users.")]
    List(#[command(flatten)] crate::commands::audit::Filter),
    /// Export entries as JSON lines, oldest first
    #[command(after_help = "Examples:\n  berth audit export --since 7d > audit.jsonl")]
    Export(#[command(flatten)] crate::commands::audit::Filter),
    /// Check the hash chain; names the first edited, deleted, inserted or reordered entry
    #[command(after_help = "Exit status: 0 intact, 1 broken or unreachable.")]
    Verify,
    /// Remove entries older than N days now, behind a signed checkpoint (admin only)
    #[command(after_help = "Examples:
  berth audit prune --older-than-days 90

berth also prunes daily by itself, after server.audit_retention (default 365 days).")]
    Prune {
        #[arg(long)]
        older_than_days: u32,
    },
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
    /// State store: postgres://USER[:PASSWORD]@HOST/DB or sqlite:PATH (overrides
    /// server.database_url; default SQLite in server.data_dir)
    #[arg(long, env = "BERTH_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
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
