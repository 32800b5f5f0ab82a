//! `berth secrets …`, `berth restart`: an app's secrets per environment.
//!
//! Values are never taken from the command line (where `ps` shows them to every user): `set`
//! reads standard input when it is not a terminal, else prompts without echo; `import` reads
//! a `.env` file. Only `reveal` prints a value.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use hyper::Method;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use super::app_path;
use super::apps::{AppArgs, DEFAULT_ENV};
use super::{encode, field, list, print, time_text};
use crate::client::{Client, exit, fail};

/// One secret of an app in an environment.
#[derive(clap::Args)]
pub struct SecretArgs {
    app: String,
    key: String,
    #[arg(long, default_value = DEFAULT_ENV)]
    env: String,
}

impl SecretArgs {
    /// The secret's path in the API.
    fn path(&self) -> String {
        format!(
            "{}/{}",
            secrets_path(&self.env, &self.app),
            encode(&self.key)
        )
    }
}

#[derive(clap::Subcommand)]
pub enum SecretsCommand {
    /// Set a secret; the value is read from stdin, or prompted for without echo
    #[command(after_help = "Examples:
  berth secrets set shop DATABASE_URL --env staging          # prompts, no echo
  printf %s \"$TOKEN\" | berth secrets set shop API_TOKEN --restart
  berth secrets set shop TLS_KEY < key.pem

The value never goes on the command line. One trailing newline is dropped. The new value
reaches the instances at the next deploy, or now with --restart (a rolling restart).")]
    Set {
        #[command(flatten)]
        secret: SecretArgs,
        /// Restart the app's instances (rolling) so they get the new value now
        #[arg(long)]
        restart: bool,
        /// Refused: caught here so that the error does not repeat it
        #[arg(hide = true, num_args = 0.., trailing_var_arg = true, allow_hyphen_values = true)]
        value_on_command_line: Vec<String>,
    },
    /// Remove a secret (its history stays)
    #[command(
        after_help = "Examples:\n  berth secrets unset shop OLD_TOKEN --env staging --restart"
    )]
    Unset {
        #[command(flatten)]
        secret: SecretArgs,
        #[arg(long)]
        restart: bool,
    },
    /// List an app's secrets: names, versions, who set them and when (never values)
    #[command(after_help = "Examples:\n  berth secrets list shop --env production")]
    List(AppArgs),
    /// Set every variable of a .env file (NAME=value lines) as a secret, at once
    #[command(after_help = "Examples:
  berth secrets import shop .env.production --env production --restart

Lines are NAME=value, `export NAME=value`, blank or # comments; values may be quoted
(\"…\" with \\n, \\\" and \\\\ escapes, or '…' taken as written).")]
    Import {
        app: String,
        file: PathBuf,
        #[arg(long, default_value = DEFAULT_ENV)]
        env: String,
        #[arg(long)]
        restart: bool,
    },
    /// Print a secret's value (admin only; audited)
    #[command(after_help = "Examples:\n  berth secrets reveal shop DATABASE_URL --env staging")]
    Reveal(SecretArgs),
    /// Re-seal every secret under a new master key (admin on every environment)
    #[command(after_help = "Examples:\n  berth secrets rotate-key

Running instances are not touched. With a key file (the default: master.key in the data
directory, or BERTH_MASTER_KEY_FILE), berth replaces it. With BERTH_MASTER_KEY or a systemd
credential, the new key is printed once: install it before berth next starts.")]
    RotateKey,
}

fn secrets_path(env: &str, app: &str) -> String {
    app_path(env, app, "secrets")
}

/// Reads a value from stdin (piped) or a no-echo prompt (terminal).
fn read_value(key: &str) -> anyhow::Result<Zeroizing<String>> {
    let stdin = std::io::stdin();
    let mut value = Zeroizing::new(String::new());
    if stdin.is_terminal() {
        eprint!("value for {key} (not shown): ");
        let _ = std::io::stderr().flush();
        let echo = EchoOff::new();
        let read = stdin.lock().read_line(&mut value);
        // The terminal echoed the newline itself (ECHONL).
        drop(echo);
        read.map_err(|e| fail(exit::FAILED, format!("reading the value: {e}")))?;
    } else {
        stdin.lock().read_to_string(&mut value).map_err(|e| {
            fail(
                exit::BAD_INPUT,
                format!("reading the value from stdin: {e}"),
            )
        })?;
    }
    if value.ends_with('\n') {
        value.pop();
        if value.ends_with('\r') {
            value.pop();
        }
    }
    if value.is_empty() {
        // Most likely a script whose stdin was not what it meant: an empty password set
        // by accident is worse than an error.
        return Err(fail(
            exit::BAD_INPUT,
            format!(
                "the value for {key} is empty; pipe the value in or type it at the prompt \
                 (berth secrets unset removes a secret). Nothing was set"
            ),
        ));
    }
    Ok(value)
}

/// Turns the terminal's echo off until dropped.
struct EchoOff(Option<libc::termios>);

impl EchoOff {
    fn new() -> EchoOff {
        // SAFETY: tcgetattr/tcsetattr on fd 0 with a zeroed termios that tcgetattr fills.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return EchoOff(None);
            }
            let saved = t;
            t.c_lflag &= !libc::ECHO;
            t.c_lflag |= libc::ECHONL;
            if libc::tcsetattr(0, libc::TCSANOW, &t) != 0 {
                return EchoOff(None);
            }
            EchoOff(Some(saved))
        }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            // SAFETY: restores the settings read in `new`.
            unsafe {
                libc::tcsetattr(0, libc::TCSANOW, t);
            }
        }
    }
}

/// Parses a `.env` file: `(name, value)` pairs. Errors name the line, never its value.
pub fn parse_dotenv(text: &str, shown: &Path) -> anyhow::Result<Vec<(String, Zeroizing<String>)>> {
    let mut out: Vec<(String, Zeroizing<String>)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let at = || format!("{}:{}", shown.display(), i + 1);
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((name, raw)) = line.split_once('=') else {
            return Err(fail(
                exit::BAD_INPUT,
                format!("{}: expected NAME=value", at()),
            ));
        };
        let name = name.trim().to_owned();
        let raw = raw.trim();
        let value = if let Some(rest) = raw.strip_prefix('"') {
            let Some(inner) = rest.strip_suffix('"') else {
                return Err(fail(
                    exit::BAD_INPUT,
                    format!("{}: {name}: the double quote is not closed", at()),
                ));
            };
            let mut v = Zeroizing::new(String::with_capacity(inner.len()));
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                if c != '\\' {
                    v.push(c);
                    continue;
                }
                match chars.next() {
                    Some('n') => v.push('\n'),
                    Some('t') => v.push('\t'),
                    Some('r') => v.push('\r'),
                    Some(other) => v.push(other),
                    None => v.push('\\'),
                }
            }
            v
        } else if let Some(rest) = raw.strip_prefix('\'') {
            let Some(inner) = rest.strip_suffix('\'') else {
                return Err(fail(
                    exit::BAD_INPUT,
                    format!("{}: {name}: the single quote is not closed", at()),
                ));
            };
            Zeroizing::new(inner.to_owned())
        } else {
            // Unquoted: a ` #` starts a comment.
            let v = match raw.find(" #") {
                Some(p) => raw[..p].trim_end(),
                None => raw,
            };
            Zeroizing::new(v.to_owned())
        };
        if out.iter().any(|(n, _)| *n == name) {
            return Err(fail(
                exit::BAD_INPUT,
                format!("{}: {name} is set twice in the file", at()),
            ));
        }
        out.push((name, value));
    }
    Ok(out)
}

pub async fn run(c: &Client, cmd: SecretsCommand, json: bool) -> anyhow::Result<()> {
    match cmd {
        SecretsCommand::Set {
            secret,
            restart: again,
            value_on_command_line,
        } => {
            let SecretArgs { app, key, env } = &secret;
            if !value_on_command_line.is_empty() {
                // Never echoed: it is most likely the value.
                return Err(fail(
                    exit::BAD_INPUT,
                    format!(
                        "values are not taken from the command line (other users can read it in \
                         the process list, and it stays in your shell history); pipe it in: \
                         printf %s \"$VALUE\" | berth secrets set {app} {key} --env {env}; or run \
                         the command without it to be prompted. Nothing was set"
                    ),
                ));
            }
            let value = read_value(key)?;
            let v = c
                .call(
                    Method::PUT,
                    &secret.path(),
                    Some(json!({ "value": value.as_str() })),
                )
                .await?;
            print(json && !again, &v, |v| {
                println!(
                    "set {key} for {app} in {env} (version {})",
                    field(v, "version")
                );
            });
            if again {
                restart_app(c, app, env, json).await?;
            } else if !json {
                println!(
                    "it reaches the instances at the next deploy, or now with: berth restart {app} --env {env}"
                );
            }
        }
        SecretsCommand::Unset {
            secret,
            restart: again,
        } => {
            let SecretArgs { app, key, env } = &secret;
            let v = c.call(Method::DELETE, &secret.path(), None).await?;
            print(json && !again, &v, |_| {
                println!("removed {key} from {app} in {env}");
            });
            if again {
                restart_app(c, app, env, json).await?;
            }
        }
        SecretsCommand::List(a) => {
            let v = c
                .call(Method::GET, &secrets_path(&a.env, &a.app), None)
                .await?;
            print(json, &v, |v| {
                let items = list(v, "secrets");
                if items.is_empty() {
                    println!("{} has no secrets in {}", a.app, a.env);
                    return;
                }
                println!(
                    "{:<32} {:>7} {:>7}  {:<12} UPDATED",
                    "NAME", "VERSION", "RUNNING", "BY"
                );
                let mut pending = false;
                for s in items {
                    pending |= s["running_version"] != s["version"];
                    println!(
                        "{:<32} {:>7} {:>7}  {:<12} {}",
                        field(s, "name"),
                        field(s, "version"),
                        field(s, "running_version"),
                        field(s, "updated_by"),
                        time_text(&s["updated"])
                    );
                }
                if pending {
                    println!(
                        "the running instances have other versions: berth restart {} --env {} applies these",
                        a.app, a.env
                    );
                }
            });
        }
        SecretsCommand::Import {
            app,
            file,
            env,
            restart: again,
        } => {
            let text = Zeroizing::new(
                std::fs::read_to_string(&file)
                    .map_err(|e| fail(exit::BAD_INPUT, format!("{}: {e}", file.display())))?,
            );
            let pairs = parse_dotenv(&text, &file)?;
            if pairs.is_empty() {
                return Err(fail(
                    exit::BAD_INPUT,
                    format!("{}: no NAME=value lines", file.display()),
                ));
            }
            let mut values = serde_json::Map::new();
            for (name, value) in &pairs {
                values.insert(name.clone(), Value::String(value.to_string()));
            }
            let v = c
                .call(
                    Method::POST,
                    &secrets_path(&env, &app),
                    Some(json!({ "values": values })),
                )
                .await?;
            print(json && !again, &v, |v| {
                for s in list(v, "set") {
                    println!("set {} (version {})", field(s, "name"), field(s, "version"));
                }
                println!("{} secret(s) imported for {app} in {env}", pairs.len());
            });
            if again {
                restart_app(c, &app, &env, json).await?;
            }
        }
        SecretsCommand::Reveal(secret) => {
            let v = c
                .call(Method::POST, &format!("{}/reveal", secret.path()), None)
                .await?;
            print(json, &v, |v| {
                println!("{}", v["value"].as_str().unwrap_or_default());
            });
        }
        SecretsCommand::RotateKey => {
            let v = c
                .call(Method::POST, "/api/v1/secrets/rotate-key", None)
                .await?;
            print(json, &v, |v| {
                println!(
                    "master key rotated: {} → {} ({} value(s) re-sealed)",
                    field(v, "previous_key_id"),
                    field(v, "key_id"),
                    field(v, "resealed")
                );
                if let Some(k) = v["new_key"].as_str() {
                    println!("new master key (shown once): {k}");
                }
                println!("{}", field(v, "note"));
            });
        }
    }
    Ok(())
}

/// `berth restart`: a rolling restart of the running release with the current secrets.
pub async fn restart_app(c: &Client, app: &str, env: &str, json: bool) -> anyhow::Result<()> {
    if !json {
        eprintln!("restarting {app} in {env}…");
    }
    let report = c
        .call(Method::POST, &app_path(env, app, "restart"), None)
        .await?;
    print(json, &report, |r| {
        for s in list(r, "steps") {
            println!("  {}", s.as_str().unwrap_or_default());
        }
        println!("restarted {app} release {} in {env}", field(r, "release"));
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotenv_files() {
        let text = "# comment\n\nA=1\nexport B = two words \nC=\"x\\ny \\\"q\\\"\"\nD='raw $x \\n'\nE=v # note\nF=\nG=\"a\\tb\\\\n\"\n";
        let got = parse_dotenv(text, Path::new(".env")).unwrap();
        let got: Vec<(&str, &str)> = got.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        assert_eq!(
            got,
            [
                ("A", "1"),
                ("B", "two words"),
                ("C", "x\ny \"q\""),
                ("D", "raw $x \\n"),
                ("E", "v"),
                ("F", ""),
                ("G", "a\tb\\n"),
            ]
        );
        for (bad, want) in [
            ("A=1\nnope\n", ".env:2: expected NAME=value"),
            (
                "A=\"open-secret-value\n",
                ".env:1: A: the double quote is not closed",
            ),
            ("A=1\nA=2\n", ".env:2: A is set twice"),
        ] {
            let e = parse_dotenv(bad, Path::new(".env"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{e}");
            assert!(!e.contains("open-secret-value"), "{e}");
        }
    }
}
