//! What a supervised instance is doing, and the words used to explain why it stopped.

use std::time::{Duration, SystemTime};

use crate::output::{Stream, Tail};
use crate::process::Ending;

/// A supervised instance at one moment.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Status {
    pub instance: String,
    pub phase: Phase,
    pub pid: Option<i32>,
    pub port: Option<u16>,
    /// How many times it was started again after an exit or a failed start.
    pub restarts: u32,
    /// When the current process started; `None` while none runs.
    pub started: Option<SystemTime>,
    /// How the previous process ended, e.g. "exited with status 3".
    pub last_exit: Option<String>,
    /// The previous process's exit status, when it exited rather than being killed.
    pub exit_code: Option<i32>,
    /// Why the last start or run failed, with the instance's last output lines when there
    /// were any. Kept through backoff and restart until the instance is healthy again, or,
    /// without a probe, has run for the restart policy's `stable_after`.
    pub error: Option<String>,
    /// Limits that are not enforced, or enforced more weakly than asked.
    pub limits_note: Option<String>,
}

impl Status {
    pub(crate) fn new(instance: &str, port: Option<u16>) -> Self {
        Status {
            instance: instance.to_owned(),
            phase: Phase::Starting,
            pid: None,
            port,
            restarts: 0,
            started: None,
            last_exit: None,
            exit_code: None,
            error: None,
            limits_note: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Spawned, probing, not yet healthy.
    Starting,
    Healthy,
    /// Was healthy, now failing its probe; left running (the edge stops routing to it).
    Unhealthy,
    /// Alive, and no probe is configured.
    Running,
    /// Ended or failed to start; waiting before the next start.
    Backoff,
    /// A crash loop, or a spec that cannot work (a probe without a port): no more restarts,
    /// and it stays so until stopped.
    Failing,
    Stopping,
    Stopped,
}

impl Phase {
    /// The phase's name, as serialised (`"backoff"`): for metric labels and store rows.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Healthy => "healthy",
            Phase::Unhealthy => "unhealthy",
            Phase::Running => "running",
            Phase::Backoff => "backoff",
            Phase::Failing => "failing",
            Phase::Stopping => "stopping",
            Phase::Stopped => "stopped",
        }
    }
}

/// How `/bin/sh -c` reports a command it cannot find.
const EXIT_NOT_FOUND: i32 = 127;

/// "exited with status 3", "killed by signal 9 (SIGKILL)".
pub(crate) fn describe_ending(ending: Ending) -> String {
    match ending {
        Ending::Exited { code } => format!("exited with status {code}"),
        Ending::Signaled { signal } => format!("killed by signal {}", signal_name(signal)),
        Ending::ForceKilled => format!(
            "killed by signal {} after not stopping in time",
            signal_name(libc::SIGKILL)
        ),
    }
}

fn signal_name(signal: i32) -> String {
    let name = match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        _ => return signal.to_string(),
    };
    format!("{signal} ({name})")
}

/// The `error` for an instance that ended on its own: what happened, in the most useful
/// words available, then its last output.
pub(crate) fn describe_exit(ending: Ending, tail: &Tail) -> String {
    let lines = tail.lines();
    let headline = match ending {
        Ending::Exited {
            code: EXIT_NOT_FOUND,
        } => match lines.iter().rev().find_map(|(_, l)| not_found_name(l)) {
            Some(name) => format!("command not found: {name} (exit status {EXIT_NOT_FOUND})"),
            None => format!("command not found (exit status {EXIT_NOT_FOUND})"),
        },
        other => describe_ending(other),
    };
    with_output(headline, &lines)
}

/// Appends the last output lines, if any, one per line.
pub(crate) fn with_output(headline: String, lines: &[(Stream, String)]) -> String {
    if lines.is_empty() {
        return headline;
    }
    let mut text = headline;
    text.push_str("\nlast output:");
    for (stream, line) in lines {
        text.push_str(&format!("\n  {}: {line}", stream.name()));
    }
    text
}

/// The command name in a shell's "not found" message: dash says `sh: 1: NAME: not found`,
/// bash says `bash: line 1: NAME: command not found`.
fn not_found_name(line: &str) -> Option<&str> {
    let rest = line
        .strip_suffix(": command not found")
        .or_else(|| line.strip_suffix(": not found"))?;
    let name = rest.rsplit(": ").next()?.trim();
    (!name.is_empty()).then_some(name)
}

/// "crash loop: 5 exits within 1m; last: exited with status 1 …"
pub(crate) fn describe_crash_loop(exits: u32, window: Duration, last: &str) -> String {
    format!(
        "crash loop: {exits} exits within {}; last: {last}",
        humantime::format_duration(window)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_missing_command_from_either_shell() {
        assert_eq!(
            not_found_name("sh: 1: gunicornx: not found"),
            Some("gunicornx")
        );
        assert_eq!(
            not_found_name("bash: line 1: gunicornx: command not found"),
            Some("gunicornx")
        );
        assert_eq!(not_found_name("all good"), None);
    }

    #[test]
    fn endings_in_words() {
        assert_eq!(
            describe_ending(Ending::Exited { code: 3 }),
            "exited with status 3"
        );
        assert_eq!(
            describe_ending(Ending::Signaled { signal: 9 }),
            "killed by signal 9 (SIGKILL)"
        );
        assert_eq!(
            describe_ending(Ending::Signaled { signal: 64 }),
            "killed by signal 64"
        );
    }

    #[test]
    fn output_lines_follow_the_headline() {
        let lines = vec![
            (Stream::Stdout, "booting".to_owned()),
            (Stream::Stderr, "boom".to_owned()),
        ];
        assert_eq!(
            with_output("exited with status 1".into(), &lines),
            "exited with status 1\nlast output:\n  stdout: booting\n  stderr: boom"
        );
        assert_eq!(with_output("x".into(), &[]), "x");
    }

    #[test]
    fn serializes_phase_in_snake_case() {
        let mut status = Status::new("web-1", Some(8000));
        status.phase = Phase::Backoff;
        let json = serde_json::to_value(&status).expect("json");
        assert_eq!(json["phase"], "backoff");
        // as_str and serde agree on every phase.
        for phase in [
            Phase::Starting,
            Phase::Healthy,
            Phase::Unhealthy,
            Phase::Running,
            Phase::Backoff,
            Phase::Failing,
            Phase::Stopping,
            Phase::Stopped,
        ] {
            assert_eq!(serde_json::to_value(phase).expect("json"), phase.as_str());
        }
        assert_eq!(json["instance"], "web-1");
    }
}
