//! `[deploy]`'s rollout keys: strategy, canary steps, analysis, hooks, probes, smoke checks,
//! notifications; their defaults and their errors.

use std::path::Path;
use std::time::Duration;

use berth_config::Diagnostic;
use berth_config::app::{
    AppSpec, CanaryStep, DEFAULT_MAX_ERROR_RATE, NotifyFormat, RolloutSpec, Strategy, parse,
};

const BASE: &str = "name = \"app\"\n[processes.web]\ncommand = \"./server\"\n";

fn parse_ok(deploy: &str) -> AppSpec {
    parse(&format!("{BASE}{deploy}"), Path::new("berth.toml")).unwrap_or_else(|e| panic!("{e}"))
}

fn errors(deploy: &str) -> Vec<Diagnostic> {
    match parse(&format!("{BASE}{deploy}"), Path::new("berth.toml")) {
        Ok(spec) => panic!("expected an error, got {:#?}", spec.rollout),
        Err(e) => e.diagnostics,
    }
}

#[test]
fn without_deploy_keys_a_deploy_is_rolling_with_default_canary_settings() {
    let spec = parse_ok("");
    assert_eq!(spec.rollout, RolloutSpec::default());
    assert_eq!(spec.rollout.strategy, Strategy::Rolling);
    assert_eq!(spec.rollout.steps.len(), 2);
    assert_eq!(spec.rollout.steps[0].weight, 10);
    assert_eq!(spec.rollout.analysis.max_error_rate, DEFAULT_MAX_ERROR_RATE);
}

#[test]
fn a_full_canary_spec_reads_as_written() {
    let spec = parse_ok(
        "[deploy]\nstrategy = \"canary\"\n\
         steps = [{ weight = 5, pause = \"2m\" }, { weight = 50, pause = \"manual\" }]\n\
         [deploy.analysis]\ninterval = \"15s\"\nmax_error_rate = 0.02\nmax_p99 = \"400ms\"\n\
         max_p99_vs_stable = 0\nmin_requests = 100\nfailure_limit = 2\ninconclusive_limit = 4\n\
         [deploy.pre_deploy]\ncommand = \"python manage.py migrate\"\nmaintenance = true\n\
         [[deploy.probe]]\npath = \"/health\"\n\
         [[deploy.smoke]]\npath = \"/\"\nstatus = 302\n\
         [[deploy.notify]]\nurl = \"https://hooks.example.com/x\"\nformat = \"json\"\n",
    );
    let r = &spec.rollout;
    assert_eq!(r.strategy, Strategy::Canary);
    assert_eq!(
        r.steps,
        vec![
            CanaryStep {
                weight: 5,
                pause: Some(Duration::from_secs(120))
            },
            CanaryStep {
                weight: 50,
                pause: None
            },
        ]
    );
    assert_eq!(r.analysis.interval, Duration::from_secs(15));
    assert_eq!(r.analysis.max_p99, Some(Duration::from_millis(400)));
    assert_eq!(r.analysis.max_p99_vs_stable, None, "0 turns it off");
    assert_eq!(
        (r.analysis.failure_limit, r.analysis.inconclusive_limit),
        (2, 4)
    );
    let hook = r.pre_deploy.as_ref().expect("hook");
    assert!(hook.maintenance);
    assert_eq!(r.probes[0].count, 20);
    assert_eq!(r.smoke[0].status, 302);
    assert_eq!(r.notify[0].format, NotifyFormat::Json);
}

#[test]
fn blue_green_is_spelt_either_way() {
    assert_eq!(
        parse_ok("[deploy]\nstrategy = \"blue_green\"\n")
            .rollout
            .strategy,
        Strategy::BlueGreen
    );
}

#[test]
fn rollout_mistakes_are_all_reported_with_their_field_and_hint() {
    let all = errors(
        "[deploy]\nstrategy = \"canery\"\n\
         steps = [{ weight = 50 }, { weight = 20 }, { wieght = 70 }]\n\
         [deploy.analysis]\nmax_error_rate = 5\n\
         [[deploy.smoke]]\npath = \"health\"\n",
    );
    let fields: Vec<&str> = all.iter().map(|d| d.field.as_str()).collect();
    assert_eq!(
        fields,
        vec![
            "deploy.strategy",
            "deploy.steps[1].weight",
            "deploy.steps[2].wieght",
            "deploy.analysis.max_error_rate",
            "deploy.smoke[0].path",
        ],
        "{all:#?}"
    );
    assert!(all[0].hint.as_deref().unwrap_or("").contains("canary"));
    assert!(
        all[1].message.contains("not above the previous step's 50"),
        "{}",
        all[1]
    );
    assert!(all[3].hint.as_deref().unwrap_or("").contains("0.01 for 1%"));
    assert_eq!(all[0].line, 5);
}

#[test]
fn an_environment_may_choose_its_own_strategy_and_nothing_else_of_the_rollout() {
    let spec = parse_ok(
        "[deploy]\nstrategy = \"rolling\"\n\
         [environments.production.deploy]\nstrategy = \"canary\"\n",
    );
    assert_eq!(
        spec.for_environment("production").rollout.strategy,
        Strategy::Canary
    );
    assert_eq!(
        spec.for_environment("staging").rollout.strategy,
        Strategy::Rolling
    );

    let all = errors(
        "[environments.production.deploy]\nstrategy = \"canery\"\n\
         steps = [{ weight = 5 }]\n",
    );
    let fields: Vec<&str> = all.iter().map(|d| d.field.as_str()).collect();
    assert_eq!(
        fields,
        vec![
            "environments.production.deploy.strategy",
            "environments.production.deploy.steps",
        ],
        "{all:#?}"
    );
}

#[test]
fn an_approval_waits_an_hour_unless_approval_timeout_says_otherwise() {
    use std::time::Duration;
    assert_eq!(
        parse_ok("").rollout.approval_timeout,
        berth_config::app::DEFAULT_APPROVAL_TIMEOUT
    );
    assert_eq!(
        berth_config::app::DEFAULT_APPROVAL_TIMEOUT,
        Duration::from_secs(3600)
    );
    let spec = parse_ok("[deploy]\nrequires_approval = true\napproval_timeout = \"30m\"\n");
    assert_eq!(spec.rollout.approval_timeout, Duration::from_secs(1800));
    let all = errors("[deploy]\napproval_timeout = \"0s\"\n");
    assert!(
        all.iter().any(|e| e.field == "deploy.approval_timeout"),
        "{all:#?}"
    );
}

#[test]
fn approval_is_off_by_default_and_an_environment_may_require_it() {
    assert!(!parse_ok("").rollout.requires_approval);
    let spec = parse_ok(
        "[deploy]\nrequires_approval = false\n\
         [environments.production.deploy]\nrequires_approval = true\n\
         [environments.dev.deploy]\nstrategy = \"canary\"\n",
    );
    assert!(spec.for_environment("production").rollout.requires_approval);
    assert!(!spec.for_environment("staging").rollout.requires_approval);
    assert!(!spec.for_environment("dev").rollout.requires_approval);

    let base = parse_ok(
        "[deploy]\nrequires_approval = true\n\
                         [environments.dev.deploy]\nrequires_approval = false\n",
    );
    assert!(base.for_environment("production").rollout.requires_approval);
    assert!(!base.for_environment("dev").rollout.requires_approval);

    let all = errors(
        "[deploy]\nrequires_approval = \"yes\"\n\
         [environments.production.deploy]\nrequires_approval = 1\n",
    );
    let fields: Vec<&str> = all.iter().map(|d| d.field.as_str()).collect();
    assert_eq!(
        fields,
        vec![
            "deploy.requires_approval",
            "environments.production.deploy.requires_approval",
        ],
        "{all:#?}"
    );
}
