//! Bad app specs: each problem is reported at the right line, column and field, and all of them
//! at once.

use std::path::Path;

use berth_config::Diagnostic;
use berth_config::app::parse;

/// Lines 1-3: a valid spec whose `web` table is open, so keys appended start on line 4.
const WEB: &str = "name = \"app\"\n[processes.web]\ncommand = \"./server\"\n";

fn web_with(extra: &str) -> String {
    format!("{WEB}{extra}")
}

fn diagnostics(src: &str) -> Vec<Diagnostic> {
    match parse(src, Path::new("berth.toml")) {
        Ok(spec) => panic!("expected an error, got {spec:#?}"),
        Err(err) => err.diagnostics,
    }
}

/// The one diagnostic `src` produces.
#[track_caller]
fn only(src: &str) -> Diagnostic {
    let mut all = diagnostics(src);
    assert_eq!(all.len(), 1, "expected one diagnostic, got {all:#?}");
    all.remove(0)
}

#[track_caller]
fn assert_diag(d: &Diagnostic, line: usize, column: usize, field: &str, message: &str) {
    assert_eq!(
        (d.line, d.column, d.field.as_str(), d.message.as_str()),
        (line, column, field, message),
        "{d}"
    );
    assert_eq!(d.file, Path::new("berth.toml"));
}

#[track_caller]
fn assert_hint(d: &Diagnostic, text: &str) {
    assert!(
        d.hint.as_deref().is_some_and(|hint| hint.contains(text)),
        "{text:?} not in the hint of {d}"
    );
}

#[test]
fn base_is_valid() {
    parse(WEB, Path::new("berth.toml")).unwrap_or_else(|err| panic!("{err}"));
}

// Unknown keys.

#[test]
fn misspelt_key_gets_did_you_mean_and_no_missing_key_error() {
    let src =
        "name = \"app\"\nhosts = [\"app.example.com\"]\n[processes.web]\ncomand = \"./server\"\n";
    let d = only(src);
    assert_diag(&d, 4, 1, "processes.web.comand", "unknown key `comand`");
    assert_eq!(d.hint.as_deref(), Some("did you mean `command`?"));
}

#[test]
fn unknown_keys_in_every_table_are_all_reported() {
    let src = "name = \"app\"\ncolour = \"red\"\n[build]\ncommand = \"make\"\ntimeuot = \"1m\"\n\
               [processes.web]\ncommand = \"w\"\nhealth = { paht = \"/h\" }\n\
               limits = { memroy = \"1GiB\" }\nrestart = { backoff = \"1s\" }\n\
               [release]\nkeeep = 2\n[deploy]\ndrain = \"1s\"\n";
    let all = diagnostics(src);
    let got: Vec<(usize, &str, Option<&str>)> = all
        .iter()
        .map(|d| (d.line, d.field.as_str(), d.hint.as_deref()))
        .collect();
    assert_eq!(
        got,
        [
            (
                2,
                "colour",
                Some(
                    "known keys here: name, hosts, build, release, deploy, edge, env, processes, environments"
                )
            ),
            (5, "build.timeuot", Some("did you mean `timeout`?")),
            (8, "processes.web.health.paht", Some("did you mean `path`?")),
            (
                9,
                "processes.web.limits.memroy",
                Some("did you mean `memory`?")
            ),
            (
                10,
                "processes.web.restart.backoff",
                Some(
                    "known keys here: backoff_base, backoff_cap, crash_loop_exits, crash_loop_window"
                )
            ),
            (12, "release.keeep", Some("did you mean `keep`?")),
            (
                14,
                "deploy.drain",
                Some(
                    "known keys here: timeout, drain_timeout, strategy, requires_approval, approval_timeout, steps, promote_after, preview_hosts, keep_warm, pre_deploy, analysis, probe, smoke, notify"
                )
            ),
        ]
    );
    assert!(all.iter().all(|d| d.message.starts_with("unknown key `")));
}

#[test]
fn process_keys_at_the_top_level_point_to_a_process_table() {
    let d = only(&format!("command = \"./server\"\n{WEB}"));
    assert_diag(&d, 1, 1, "command", "unknown key `command`");
    assert_hint(&d, "[processes.<name>]");
}

#[test]
fn a_port_key_explains_port() {
    let d = only(&web_with("port = 8080\n"));
    assert_diag(&d, 4, 1, "processes.web.port", "unknown key `port`");
    assert_hint(&d, "PORT environment variable");
}

#[test]
fn misspelt_table_name_is_not_also_missing() {
    let d = only("name = \"app\"\n[process.web]\ncommand = \"w\"\n");
    assert_diag(&d, 2, 2, "process", "unknown key `process`");
    assert_eq!(d.hint.as_deref(), Some("did you mean `processes`?"));
}

// Syntax and types.

#[test]
fn syntax_error_has_a_position_but_no_field() {
    let d = only("name = \"app\"\n[processes.web\ncommand = \"w\"\n");
    assert_eq!((d.line, d.field.as_str()), (2, ""), "{d}");
}

#[test]
fn duplicate_key_is_a_syntax_error() {
    let d = only("name = \"a\"\nname = \"b\"\n[processes.web]\ncommand = \"w\"\n");
    assert_eq!((d.line, d.column), (2, 1), "{d}");
    assert_eq!(d.message, "duplicate key");
}

#[test]
fn wrong_types_are_all_reported_with_hints() {
    let src = "name = 5\n[processes.web]\ncommand = \"w\"\ninstances = \"2\"\nhttp = \"true\"\n\
               stop_signal = 15\nhealth = \"on\"\nlimits = 5\n";
    let all = diagnostics(src);
    assert_eq!(all.len(), 6, "{all:#?}");
    assert_diag(&all[0], 1, 8, "name", "expected a string, found an integer");
    assert_eq!(all[0].hint.as_deref(), Some("quote it: \"5\""));
    assert_diag(
        &all[1],
        4,
        13,
        "processes.web.instances",
        "expected an integer, found a string",
    );
    assert_eq!(all[1].hint.as_deref(), Some("remove the quotes: 2"));
    assert_diag(
        &all[2],
        5,
        8,
        "processes.web.http",
        "expected true or false, found a string",
    );
    assert_eq!(all[2].hint.as_deref(), Some("remove the quotes: true"));
    assert_diag(
        &all[3],
        6,
        15,
        "processes.web.stop_signal",
        "expected a string, found an integer",
    );
    assert_diag(
        &all[4],
        7,
        10,
        "processes.web.health",
        "expected true, false or a table, found a string",
    );
    assert_diag(
        &all[5],
        8,
        10,
        "processes.web.limits",
        "expected a table, found an integer",
    );
}

#[test]
fn integer_too_large_for_any_field() {
    let d = only(&web_with("instances = 99999999999999999999\n"));
    assert_diag(
        &d,
        4,
        13,
        "processes.web.instances",
        "99999999999999999999 is too large",
    );
}

// name

#[test]
fn missing_name() {
    let d = only("[processes.web]\ncommand = \"w\"\n");
    assert_diag(&d, 1, 1, "name", "missing required key `name`");
}

#[test]
fn bad_names() {
    let too_long = format!("a{}", "b".repeat(63));
    for (name, message) in [
        ("", "app name `` must not be empty".to_owned()),
        (
            too_long.as_str(),
            format!("app name `{too_long}` is longer than 63 characters"),
        ),
        (
            "my_app",
            "app name `my_app` contains `_`, which is not allowed".to_owned(),
        ),
        (
            "my.app_x.y",
            "app name `my.app_x.y` contains `.` and `_`, which are not allowed".to_owned(),
        ),
        (
            "1app",
            "app name `1app` must start with a letter".to_owned(),
        ),
        (
            "-app",
            "app name `-app` must start with a letter".to_owned(),
        ),
        ("app-", "app name `app-` must not end with `-`".to_owned()),
    ] {
        let d = only(&format!(
            "name = \"{name}\"\n[processes.web]\ncommand = \"w\"\n"
        ));
        assert_diag(&d, 1, 8, "name", &message);
        assert_hint(&d, "lower-case letters, digits and `-`");
    }
}

#[test]
fn upper_case_name_gets_the_lower_case_one() {
    let d = only("name = \"MyApp\"\n[processes.web]\ncommand = \"w\"\n");
    assert_diag(
        &d,
        1,
        8,
        "name",
        "app name `MyApp` contains `M` and `A`, which are not allowed",
    );
    assert_eq!(
        d.hint.as_deref(),
        Some("names are lower-case: write `myapp`")
    );
}

// hosts

#[test]
fn hosts_must_be_an_array() {
    let d = only(&format!("hosts = \"app.example.com\"\n{WEB}"));
    assert_diag(
        &d,
        1,
        9,
        "hosts",
        "expected an array of strings, found a string",
    );
    assert_eq!(
        d.hint.as_deref(),
        Some("write hosts = [\"app.example.com\"]")
    );
}

#[test]
fn bad_hosts_are_each_reported() {
    let src = format!(
        "hosts = [\"*\", \"exa mple.com\", \"a.com\", \"A.com\", 5, \"a.com:80\", \"a*.com\"]\n{WEB}"
    );
    let all = diagnostics(&src);
    let got: Vec<(usize, &str, &str)> = all
        .iter()
        .map(|d| (d.column, d.field.as_str(), d.message.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (10, "hosts[0]", "`*` would claim every host"),
            (15, "hosts[1]", "`exa mple.com` is not a valid host name"),
            (40, "hosts[3]", "host `a.com` is listed twice"),
            (49, "hosts[4]", "expected a string, found an integer"),
            (52, "hosts[5]", "host pattern `a.com:80` has a port"),
            (64, "hosts[6]", "`*` in `a*.com` is not allowed there"),
        ]
    );
    assert!(all.iter().all(|d| d.line == 1));
    assert_hint(&all[0], "*.example.com");
    assert_eq!(
        all[4].hint.as_deref(),
        Some("hosts are matched by name alone; berth's edge decides the ports")
    );
}

#[test]
fn hosts_need_an_http_process() {
    let src =
        "name = \"app\"\nhosts = [\"app.example.com\"]\n[processes.worker]\ncommand = \"w\"\n";
    let d = only(src);
    assert_diag(
        &d,
        2,
        9,
        "hosts",
        "hosts are given but no process serves HTTP",
    );
    assert_hint(&d, "http = true");
}

#[test]
fn hosts_need_an_http_process_even_when_web_opts_out() {
    let src = "name = \"app\"\nhosts = [\"app.example.com\"]\n[processes.web]\ncommand = \"w\"\n\
               http = false\n";
    let d = only(src);
    assert_diag(
        &d,
        2,
        9,
        "hosts",
        "hosts are given but no process serves HTTP",
    );
}

// [build], [release], [deploy]

#[test]
fn build_needs_a_command() {
    let d = only(&format!("{WEB}[build]\ntimeout = \"5m\"\n"));
    assert_diag(&d, 4, 1, "build.command", "missing required key `command`");
    assert_hint(&d, "/bin/sh -c");
}

#[test]
fn build_command_must_not_be_empty() {
    let d = only(&format!("{WEB}[build]\ncommand = \" \"\n"));
    assert_diag(&d, 5, 11, "build.command", "the command is empty");
}

#[test]
fn build_timeout_must_be_a_duration() {
    let d = only(&format!(
        "{WEB}[build]\ncommand = \"make\"\ntimeout = \"10 minutes\"\n"
    ));
    assert_diag(
        &d,
        6,
        11,
        "build.timeout",
        "`10` in duration `10 minutes` has no unit",
    );
    assert_hint(&d, "\"1m30s\"");
}

#[test]
fn keep_must_be_at_least_one() {
    let d = only(&format!("{WEB}[release]\nkeep = 0\n"));
    assert_diag(
        &d,
        5,
        8,
        "release.keep",
        "0 is too small: must be at least 1",
    );
}

#[test]
fn deploy_timeout_must_be_above_zero_but_drain_may_be_zero() {
    let d = only(&format!(
        "{WEB}[deploy]\ntimeout = \"0s\"\ndrain_timeout = \"0s\"\n"
    ));
    assert_diag(&d, 5, 11, "deploy.timeout", "must be longer than zero");
}

#[test]
fn duration_without_unit() {
    let d = only(&format!("{WEB}[deploy]\ndrain_timeout = 30\n"));
    assert_diag(&d, 5, 17, "deploy.drain_timeout", "`30` has no unit");
}

// [env]

#[test]
fn env_names_must_be_valid_and_not_reserved() {
    let src = format!(
        "{WEB}[env]\n1X = \"a\"\n\"MY-VAR\" = \"b\"\nPORT = \"80\"\nBERTH_RELEASE_ID = \"x\"\n\
         Port = \"ok\"\nberth_ok = \"ok\"\n"
    );
    let all = diagnostics(&src);
    let got: Vec<(usize, usize, &str, &str)> = all
        .iter()
        .map(|d| (d.line, d.column, d.field.as_str(), d.message.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (
                5,
                1,
                "env.1X",
                "`1X` is not a valid environment variable name"
            ),
            (
                6,
                1,
                "env.MY-VAR",
                "`MY-VAR` is not a valid environment variable name"
            ),
            (7, 1, "env.PORT", "PORT is set by berth"),
            (
                8,
                1,
                "env.BERTH_RELEASE_ID",
                "`BERTH_RELEASE_ID` is reserved"
            ),
        ]
    );
    assert_hint(&all[2], "$PORT");
    assert_hint(&all[3], "BERTH_");
}

#[test]
fn env_values_must_be_strings() {
    let src =
        format!("{WEB}[env]\nN = 8080\nF = 1.5\nB = true\nL = [\"a\", \"b\"]\nZ = \"a\\u0000b\"\n");
    let all = diagnostics(&src);
    assert_eq!(all.len(), 5, "{all:#?}");
    assert_diag(
        &all[0],
        5,
        5,
        "env.N",
        "expected a string, found an integer",
    );
    assert_eq!(all[0].hint.as_deref(), Some("quote it: \"8080\""));
    assert_diag(&all[1], 6, 5, "env.F", "expected a string, found a float");
    assert_eq!(all[1].hint.as_deref(), Some("quote it: \"1.5\""));
    assert_diag(&all[2], 7, 5, "env.B", "expected a string, found a boolean");
    assert_eq!(all[2].hint.as_deref(), Some("quote it: \"true\""));
    assert_diag(&all[3], 8, 5, "env.L", "expected a string, found an array");
    assert_diag(&all[4], 9, 5, "env.Z", "the value contains a NUL character");
}

#[test]
fn env_tables_inside_env_are_refused_with_a_pointer_to_environments() {
    let d = only(&format!(
        "{WEB}[env]\nA = \"b\"\n[env.production]\nA = \"c\"\n"
    ));
    assert_diag(
        &d,
        6,
        1,
        "env.production",
        "expected a string, found a table",
    );
    assert_hint(&d, "[environments.<name>.env]");
}

#[test]
fn process_env_follows_the_same_rules() {
    let d = only(&web_with("env = { PORT = \"1\" }\n"));
    assert_diag(&d, 4, 9, "processes.web.env.PORT", "PORT is set by berth");
    let d = only(&web_with("[processes.web.env.staging]\nA = \"b\"\n"));
    assert_diag(
        &d,
        4,
        1,
        "processes.web.env.staging",
        "expected a string, found a table",
    );
    assert_hint(&d, "[environments.<name>.env]");
}

// [processes]

#[test]
fn processes_are_required() {
    let d = only("name = \"app\"\n");
    assert_diag(&d, 1, 1, "processes", "missing required key `processes`");
    assert_hint(&d, "[processes.web]");
}

#[test]
fn an_empty_processes_table() {
    let d = only("name = \"app\"\n[processes]\n");
    assert_diag(&d, 2, 1, "processes", "at least one process is required");
}

#[test]
fn processes_as_an_array_of_tables() {
    let d = only("name = \"app\"\n[[processes]]\ncommand = \"w\"\n");
    assert_diag(&d, 2, 1, "processes", "expected a table, found an array");
    assert_eq!(
        d.hint.as_deref(),
        Some("processes are named: write [processes.web], not [[processes]]")
    );
}

#[test]
fn a_process_written_as_a_string() {
    let d = only("name = \"app\"\nprocesses.web = \"./server\"\n");
    assert_diag(
        &d,
        2,
        17,
        "processes.web",
        "expected a table, found a string",
    );
    assert_hint(&d, "[processes.web]");
}

#[test]
fn bad_process_name() {
    let d = only(&format!("{WEB}[processes.Worker_1]\ncommand = \"q\"\n"));
    assert_diag(
        &d,
        4,
        12,
        "processes.Worker_1",
        "process name `Worker_1` contains `W` and `_`, which are not allowed",
    );
}

#[test]
fn process_needs_a_command() {
    let d = only(&format!("{WEB}[processes.worker]\ninstances = 2\n"));
    assert_diag(
        &d,
        4,
        1,
        "processes.worker.command",
        "missing required key `command`",
    );
}

#[test]
fn process_command_must_not_be_empty() {
    let d = only("name = \"app\"\n[processes.web]\ncommand = \"\"\n");
    assert_diag(&d, 3, 11, "processes.web.command", "the command is empty");
}

#[test]
fn instances_range() {
    let d = only(&web_with("instances = 65\n"));
    assert_diag(
        &d,
        4,
        13,
        "processes.web.instances",
        "65 is out of range: must be between 0 and 64",
    );
    let d = only(&web_with("instances = -1\n"));
    assert_diag(
        &d,
        4,
        13,
        "processes.web.instances",
        "-1 is out of range: must be between 0 and 64",
    );
}

#[test]
fn workdir_stays_inside_the_release() {
    for (workdir, message) in [
        (
            "/srv/app",
            "the working directory must be relative to the release",
        ),
        ("../other", "the working directory must not contain `..`"),
        ("a/../../b", "the working directory must not contain `..`"),
        ("", "the working directory is empty"),
    ] {
        let d = only(&web_with(&format!("workdir = \"{workdir}\"\n")));
        assert_diag(&d, 4, 11, "processes.web.workdir", message);
        assert_hint(&d, "inside the release");
    }
}

// http

#[test]
fn two_explicit_http_processes() {
    let src = "name = \"app\"\n[processes.a]\ncommand = \"a\"\nhttp = true\n\
               [processes.b]\ncommand = \"b\"\nhttp = true\n";
    let d = only(src);
    assert_diag(
        &d,
        7,
        8,
        "processes.b.http",
        "`a` and `b` both serve HTTP; at most one process may",
    );
    assert_eq!(
        d.hint.as_deref(),
        Some("set http = false on all but the process the edge should route to")
    );
}

#[test]
fn web_by_default_and_another_http_process() {
    let d = only(&format!(
        "{WEB}[processes.api]\ncommand = \"a\"\nhttp = true\n"
    ));
    assert_diag(
        &d,
        6,
        8,
        "processes.api.http",
        "`web` and `api` both serve HTTP; at most one process may",
    );
    assert_hint(
        &d,
        "a process named `web` serves HTTP unless it says http = false",
    );
}

// health

#[test]
fn health_table_on_a_process_without_http() {
    let src = format!(
        "{WEB}[processes.worker]\ncommand = \"q\"\n[processes.worker.health]\npath = \"/h\"\n"
    );
    let d = only(&src);
    assert_diag(
        &d,
        6,
        1,
        "processes.worker.health",
        "`worker` does not serve HTTP, so it has no health check",
    );
    assert_hint(&d, "http = true");
}

#[test]
fn health_true_on_a_process_without_http() {
    let d = only(&format!(
        "{WEB}[processes.worker]\ncommand = \"q\"\nhealth = true\n"
    ));
    assert_diag(
        &d,
        6,
        10,
        "processes.worker.health",
        "`worker` does not serve HTTP, so it has no health check",
    );
}

#[test]
fn health_values_are_checked() {
    let src = web_with(
        "[processes.web.health]\npath = \"health\"\ninterval = \"1s\"\ntimeout = \"3s\"\n\
         start_timeout = \"0s\"\nhealthy_threshold = 0\nunhealthy_threshold = -2\n",
    );
    let all = diagnostics(&src);
    let got: Vec<(usize, &str, &str)> = all
        .iter()
        .map(|d| (d.line, d.field.as_str(), d.message.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (5, "processes.web.health.path", "`health` is not a URL path"),
            (
                7,
                "processes.web.health.timeout",
                "the timeout (3s) is longer than the interval (1s)"
            ),
            (
                8,
                "processes.web.health.start_timeout",
                "must be longer than zero"
            ),
            (
                9,
                "processes.web.health.healthy_threshold",
                "0 is too small: must be at least 1"
            ),
            (
                10,
                "processes.web.health.unhealthy_threshold",
                "-2 is too small: must be at least 1"
            ),
        ]
    );
    assert_hint(&all[0], "\"/health\"");
}

#[test]
fn health_interval_below_the_default_timeout_points_at_the_interval() {
    let d = only(&web_with("health.interval = \"1s\"\n"));
    assert_diag(
        &d,
        4,
        19,
        "processes.web.health.interval",
        "the timeout (2s) is longer than the interval (1s)",
    );
}

// stop

#[test]
fn unknown_stop_signal() {
    let d = only(&web_with("stop_signal = \"TERMINATE\"\n"));
    assert_diag(
        &d,
        4,
        15,
        "processes.web.stop_signal",
        "`TERMINATE` is not a signal berth can stop a process with",
    );
    assert_eq!(
        d.hint.as_deref(),
        Some(
            "use one of TERM, INT, QUIT, HUP, USR1, USR2, WINCH (with or without SIG, in any case)"
        )
    );
}

#[test]
fn kill_is_not_a_stop_signal() {
    let d = only(&web_with("stop_signal = \"SIGKILL\"\n"));
    assert_diag(
        &d,
        4,
        15,
        "processes.web.stop_signal",
        "`SIGKILL` is not a signal berth can stop a process with",
    );
    assert_hint(&d, "berth sends KILL itself when stop_timeout runs out");
}

#[test]
fn stop_timeout_must_be_above_zero() {
    let d = only(&web_with("stop_timeout = \"0ms\"\n"));
    assert_diag(
        &d,
        4,
        16,
        "processes.web.stop_timeout",
        "must be longer than zero",
    );
}

// limits

#[test]
fn ambiguous_memory_unit() {
    let d = only(&web_with("limits.memory = \"1G\"\n"));
    assert_diag(
        &d,
        4,
        17,
        "processes.web.limits.memory",
        "unknown size unit `G` in `1G` (use B, KB, KiB, MB, MiB, GB or GiB)",
    );
    assert_eq!(
        d.hint.as_deref(),
        Some("`G` alone is ambiguous: write GiB (powers of 1024) or GB (powers of 1000)")
    );
}

#[test]
fn memory_without_a_unit_is_bytes() {
    let d = only(&web_with("limits.memory = 512\n"));
    assert_diag(
        &d,
        4,
        17,
        "processes.web.limits.memory",
        "512 bytes is below the minimum of 1048576 (1MiB)",
    );
    assert_hint(&d, "\"512MiB\"");
}

#[test]
fn memory_of_zero_or_below_zero() {
    let d = only(&web_with("limits.memory = \"0MiB\"\n"));
    assert_diag(
        &d,
        4,
        17,
        "processes.web.limits.memory",
        "0 bytes is below the minimum of 1048576 (1MiB)",
    );
    let d = only(&web_with("limits.memory = -1\n"));
    assert_diag(&d, 4, 17, "processes.web.limits.memory", "`-1` is negative");
}

#[test]
fn memory_must_be_a_size() {
    let d = only(&web_with("limits.memory = \"lots\"\n"));
    assert_diag(
        &d,
        4,
        17,
        "processes.web.limits.memory",
        "`lots` is not a size",
    );
    let d = only(&web_with("limits.memory = true\n"));
    assert_diag(
        &d,
        4,
        17,
        "processes.web.limits.memory",
        "expected a size: a number of bytes or a string such as \"16KiB\", found a boolean",
    );
}

#[test]
fn cpu_must_be_above_zero() {
    for (cpu, shown) in [("0", "0"), ("-1.5", "-1.5"), ("nan", "NaN"), ("inf", "inf")] {
        let d = only(&web_with(&format!("limits.cpu = {cpu}\n")));
        assert_diag(
            &d,
            4,
            14,
            "processes.web.limits.cpu",
            &format!("{shown} is not a number of CPU cores above zero"),
        );
    }
    let d = only(&web_with("limits.cpu = \"0.5\"\n"));
    assert_diag(
        &d,
        4,
        14,
        "processes.web.limits.cpu",
        "expected a number, found a string",
    );
    assert_eq!(d.hint.as_deref(), Some("remove the quotes: 0.5"));
}

#[test]
fn open_files_and_processes_minimums() {
    let src = web_with("[processes.web.limits]\nopen_files = 15\nprocesses = 0\n");
    let all = diagnostics(&src);
    assert_eq!(all.len(), 2, "{all:#?}");
    assert_diag(
        &all[0],
        5,
        14,
        "processes.web.limits.open_files",
        "15 is too small: must be at least 16",
    );
    assert_diag(
        &all[1],
        6,
        13,
        "processes.web.limits.processes",
        "0 is too small: must be at least 1",
    );
}

// restart

#[test]
fn restart_values_are_checked() {
    let src = web_with(
        "[processes.web.restart]\nbackoff_base = \"10s\"\nbackoff_cap = \"5s\"\n\
         crash_loop_exits = 0\ncrash_loop_window = \"0s\"\n",
    );
    let all = diagnostics(&src);
    let got: Vec<(usize, usize, &str, &str)> = all
        .iter()
        .map(|d| (d.line, d.column, d.field.as_str(), d.message.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (
                6,
                15,
                "processes.web.restart.backoff_cap",
                "backoff_cap (5s) is shorter than backoff_base (10s)"
            ),
            (
                7,
                20,
                "processes.web.restart.crash_loop_exits",
                "0 is too small: must be at least 1"
            ),
            (
                8,
                21,
                "processes.web.restart.crash_loop_window",
                "must be longer than zero"
            ),
        ]
    );
}

#[test]
fn backoff_base_above_the_default_cap_points_at_the_base() {
    let d = only(&web_with("restart.backoff_base = \"2m\"\n"));
    assert_diag(
        &d,
        4,
        24,
        "processes.web.restart.backoff_base",
        "backoff_cap (60s) is shorter than backoff_base (120s)",
    );
}

// All at once.

#[test]
fn every_problem_is_reported_together_in_file_order() {
    let src = "\
name = \"My App\"
hosts = [\"app.example.com:443\"]

[env]
PORT = \"8000\"

[processes.web]
comand = \"gunicorn app:app\"
instances = 100
stop_signal = \"STOP\"

[processes.worker]
command = \"python3 worker.py\"
health.path = \"/health\"
limits.memory = \"1G\"
";
    let all = diagnostics(src);
    let got: Vec<(usize, usize, &str)> = all
        .iter()
        .map(|d| (d.line, d.column, d.field.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (1, 8, "name"),
            (2, 10, "hosts[0]"),
            (5, 1, "env.PORT"),
            (8, 1, "processes.web.comand"),
            (9, 13, "processes.web.instances"),
            (10, 15, "processes.web.stop_signal"),
            (14, 1, "processes.worker.health"),
            (15, 17, "processes.worker.limits.memory"),
        ]
    );
    let err = parse(src, Path::new("apps/shop/berth.toml")).expect_err("bad spec");
    let text = err.to_string();
    assert!(
        text.starts_with(
            "apps/shop/berth.toml:1:8: name: app name `My App` contains `M`, ` ` and `A`, which are not allowed\n"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "apps/shop/berth.toml:8:1: processes.web.comand: unknown key `comand`\n  hint: did you mean `command`?"
        ),
        "{text}"
    );
    assert_eq!(text.lines().filter(|l| l.starts_with("apps/")).count(), 8);
}

// Robustness.

/// Every prefix of a valid spec, and the spec with each line replaced by junk, is either
/// accepted or refused with diagnostics; nothing panics.
#[test]
fn mangled_input_never_panics() {
    let spec = include_str!("../../../examples/python-app/berth.toml");
    let mut cuts: Vec<usize> = spec.char_indices().map(|(i, _)| i).collect();
    cuts.push(spec.len());
    for cut in cuts {
        let _ = parse(&spec[..cut], Path::new("berth.toml"));
    }
    let lines: Vec<&str> = spec.lines().collect();
    for i in 0..lines.len() {
        for junk in [
            "[",
            "x = ",
            "= 1",
            "[processes.web.health.x]",
            "é = 1",
            "health = 1e999",
        ] {
            let mut mangled = lines.clone();
            mangled[i] = junk;
            if let Err(err) = parse(&mangled.join("\n"), Path::new("berth.toml")) {
                assert!(!err.diagnostics.is_empty());
            }
        }
    }
}

#[test]
fn environment_overrides_are_checked() {
    let src = format!(
        "{WEB}[processes.worker]\ncommand = \"w\"\n\
         [environments.Staging]\nhosts = [\"a.test\"]\n\
         [environments.prod]\nhots = []\n\
         [environments.prod.processes.wbe]\ninstances = 2\n\
         [environments.prod.processes.worker]\ninstances = 99\ncommand = \"x\"\n\
         [environments.prod.env]\nPORT = \"1\"\n"
    );
    let all = diagnostics(&src);
    let got: Vec<(&str, &str)> = all
        .iter()
        .map(|d| (d.field.as_str(), d.message.as_str()))
        .collect();
    assert!(
        got.contains(&(
            "environments.Staging",
            "environment name `Staging` must start with a lower-case letter or a digit"
        )),
        "{got:?}"
    );
    assert!(
        got.contains(&("environments.prod.hots", "unknown key `hots`")),
        "{got:?}"
    );
    let wbe = all
        .iter()
        .find(|d| d.field == "environments.prod.processes.wbe")
        .expect("unknown process reported");
    assert_eq!(wbe.message, "no process `wbe` in [processes]");
    assert_hint(wbe, "did you mean `web`?");
    assert!(
        got.iter()
            .any(|(f, _)| *f == "environments.prod.processes.worker.instances"),
        "{got:?}"
    );
    assert!(
        got.contains(&(
            "environments.prod.processes.worker.command",
            "unknown key `command`"
        )),
        "{got:?}"
    );
    assert!(
        got.contains(&("environments.prod.env.PORT", "PORT is set by berth")),
        "{got:?}"
    );
    // Hosts in an environment are checked like the base ones, with their own field.
    let d = only(&format!("{WEB}[environments.dev]\nhosts = [\"*\"]\n"));
    assert_diag(
        &d,
        5,
        10,
        "environments.dev.hosts[0]",
        "`*` would claim every host",
    );
}

#[test]
fn preview_hosts_are_host_names_of_their_own() {
    let ok = "name = \"app\"\nhosts = [\"app.example.com\"]\n[deploy]\n\
              preview_hosts = [\"Preview.App.example.com\"]\n[processes.web]\ncommand = \"w\"\n";
    let spec = parse(ok, Path::new("berth.toml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(spec.rollout.preview_hosts, ["preview.app.example.com"]);

    let shared = ok.replace("Preview.App.example.com", "app.example.com");
    let d = only(&shared);
    assert_diag(
        &d,
        4,
        17,
        "deploy.preview_hosts",
        "`app.example.com` is in hosts too",
    );
    assert_hint(&d, "a name of its own");

    let bad = ok.replace("Preview.App.example.com", "preview.app:8080");
    let d = only(&bad);
    assert_eq!(d.field, "deploy.preview_hosts[0]", "{d}");
}

#[test]
fn keep_warm_defaults_to_five_minutes_for_blue_green_only() {
    use berth_config::app::{DEFAULT_BLUE_GREEN_KEEP_WARM, Strategy};
    use std::time::Duration;
    let spec = parse(WEB, Path::new("berth.toml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        spec.rollout.keep_warm_for(Strategy::Rolling),
        Duration::ZERO
    );
    assert_eq!(
        spec.rollout.keep_warm_for(Strategy::BlueGreen),
        DEFAULT_BLUE_GREEN_KEEP_WARM
    );
    let set = "name = \"app\"\n[deploy]\nkeep_warm = \"90s\"\n[processes.web]\ncommand = \"w\"\n";
    let spec = parse(set, Path::new("berth.toml")).unwrap_or_else(|e| panic!("{e}"));
    for s in [Strategy::Rolling, Strategy::Canary, Strategy::BlueGreen] {
        assert_eq!(spec.rollout.keep_warm_for(s), Duration::from_secs(90));
    }
    let off = set.replace("90s", "0s");
    let spec = parse(&off, Path::new("berth.toml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        spec.rollout.keep_warm_for(Strategy::BlueGreen),
        Duration::ZERO
    );
    let d = only(&set.replace("\"90s\"", "\"soon\""));
    assert_eq!(d.field, "deploy.keep_warm", "{d}");
}
