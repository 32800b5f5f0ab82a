//! Command line and environment: everything the demo reads once at start.

use std::net::SocketAddr;

pub const USAGE: &str = "\
usage: berth-demo [--listen ADDR] [--threads N]

  --listen ADDR   address to bind (default 127.0.0.1:$PORT, PORT defaulting to 8000)
  --threads N     runtime worker threads (default 1: a single-threaded runtime)

environment:
  PORT              port when --listen is not given
  BERTH_RELEASE     release label shown in responses (default \"dev\")
  DEMO_VERSION      version shown in responses (default the crate version)
  DEMO_FAIL=1       start with the fail switch on
  DEMO_FAIL_EVERY=N answer every Nth request with a 500 (not /health: a canary that passes
                    its health checks and fails its users)
  DEMO_DELAY_MS=N   start with N ms of added latency
  DEMO_CRASH_AFTER=N  exit after serving N requests
  DEMO_CRASH_CODE=N   exit code for DEMO_CRASH_AFTER (default 3)
";

#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub threads: usize,
    pub release: String,
    pub version: String,
    pub fail: bool,
    /// Every Nth request (outside `/health*`) fails with a 500.
    pub fail_every: Option<u64>,
    pub delay_ms: u64,
    pub crash_after: Option<u64>,
    pub crash_code: i32,
}

/// What the command line asked for, when it is not a server to run.
#[derive(Debug)]
pub enum Invocation {
    Run(Settings),
    Help,
}

impl Settings {
    /// Reads the process arguments (without argv[0]) and the given environment lookup.
    pub fn parse(
        args: impl IntoIterator<Item = String>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Invocation, String> {
        let mut listen: Option<SocketAddr> = None;
        let mut threads: usize = 1;
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
                _ => (arg.clone(), None),
            };
            let mut value = |name: &str| {
                inline
                    .clone()
                    .or_else(|| args.next())
                    .ok_or_else(|| format!("{name} needs a value"))
            };
            match flag.as_str() {
                "--listen" => {
                    let v = value("--listen")?;
                    listen = Some(
                        v.parse()
                            .map_err(|e| format!("--listen {v:?} is not an address: {e}"))?,
                    );
                }
                "--threads" => {
                    let v = value("--threads")?;
                    threads = match v.parse::<usize>() {
                        Ok(n) if n >= 1 => n,
                        _ => return Err(format!("--threads {v:?} must be a number >= 1")),
                    };
                }
                "-h" | "--help" => return Ok(Invocation::Help),
                other => return Err(format!("unknown argument {other:?}")),
            }
        }

        let listen = match listen {
            Some(addr) => addr,
            None => {
                let port = match env("PORT") {
                    Some(p) => p
                        .trim()
                        .parse::<u16>()
                        .map_err(|_| format!("PORT {p:?} is not a port number"))?,
                    None => 8000,
                };
                SocketAddr::from(([127, 0, 0, 1], port))
            }
        };
        let number = |name: &str| -> Result<Option<u64>, String> {
            match env(name) {
                Some(v) if !v.trim().is_empty() => v
                    .trim()
                    .parse::<u64>()
                    .map(Some)
                    .map_err(|_| format!("{name} {v:?} is not a number")),
                _ => Ok(None),
            }
        };
        let fail = matches!(
            env("DEMO_FAIL").as_deref().map(str::trim),
            Some("1" | "true" | "yes" | "on")
        );
        let crash_code = match env("DEMO_CRASH_CODE") {
            Some(v) => v
                .trim()
                .parse::<i32>()
                .map_err(|_| format!("DEMO_CRASH_CODE {v:?} is not a number"))?,
            None => 3,
        };
        Ok(Invocation::Run(Settings {
            listen,
            threads,
            release: env("BERTH_RELEASE").unwrap_or_else(|| "dev".to_string()),
            version: env("DEMO_VERSION").unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_string()),
            fail,
            fail_every: number("DEMO_FAIL_EVERY")?.filter(|&n| n > 0),
            delay_ms: number("DEMO_DELAY_MS")?.unwrap_or(0),
            crash_after: number("DEMO_CRASH_AFTER")?,
            crash_code,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(args: &[&str], env: &[(&str, &str)]) -> Result<Invocation, String> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::parse(args.iter().map(|s| s.to_string()), |k| env.get(k).cloned())
    }

    fn run(args: &[&str], env: &[(&str, &str)]) -> Settings {
        match parse(args, env) {
            Ok(Invocation::Run(s)) => s,
            other => panic!("expected settings, got {other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let s = run(&[], &[]);
        assert_eq!(s.listen.to_string(), "127.0.0.1:8000");
        assert_eq!(s.threads, 1);
        assert_eq!(s.release, "dev");
        assert_eq!(s.version, env!("CARGO_PKG_VERSION"));
        assert!(!s.fail);
        assert_eq!(s.delay_ms, 0);
        assert_eq!(s.crash_after, None);
        assert_eq!(s.crash_code, 3);
    }

    #[test]
    fn port_env_and_flags() {
        let s = run(
            &["--threads", "4"],
            &[("PORT", "9123"), ("BERTH_RELEASE", "r7")],
        );
        assert_eq!(s.listen.to_string(), "127.0.0.1:9123");
        assert_eq!(s.threads, 4);
        assert_eq!(s.release, "r7");
        let s = run(&["--listen=0.0.0.0:81"], &[("PORT", "9123")]);
        assert_eq!(s.listen.to_string(), "0.0.0.0:81");
    }

    #[test]
    fn switch_env() {
        let s = run(
            &[],
            &[
                ("DEMO_FAIL", "1"),
                ("DEMO_DELAY_MS", "25"),
                ("DEMO_CRASH_AFTER", "2"),
                ("DEMO_VERSION", "9.9"),
            ],
        );
        assert!(s.fail);
        assert_eq!(s.delay_ms, 25);
        assert_eq!(s.crash_after, Some(2));
        assert_eq!(s.version, "9.9");
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(parse(&["--threads", "0"], &[]).is_err());
        assert!(parse(&["--listen"], &[]).is_err());
        assert!(parse(&["--bogus"], &[]).is_err());
        assert!(parse(&[], &[("PORT", "http")]).is_err());
        assert!(matches!(parse(&["--help"], &[]), Ok(Invocation::Help)));
    }
}
