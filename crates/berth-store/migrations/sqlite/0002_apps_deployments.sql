-- What runs: environments, apps, releases, deployments with their decision log, instances.
-- Only the tables for now; the API over them comes with the supervisor and deploy work.
-- State columns are free TEXT (no CHECK) so later work can add states without rebuilding
-- SQLite tables; the values in use are listed in docs/store.md.

CREATE TABLE environments (
    id         INTEGER PRIMARY KEY,
    name       TEXT    NOT NULL UNIQUE,
    created_ms INTEGER NOT NULL
);

CREATE TABLE apps (
    id             INTEGER PRIMARY KEY,
    environment_id INTEGER NOT NULL REFERENCES environments (id),
    name           TEXT    NOT NULL,
    -- The desired configuration (process command, health check, routes, scale) as JSON.
    spec           TEXT    NOT NULL DEFAULT '{}',
    created_ms     INTEGER NOT NULL,
    updated_ms     INTEGER NOT NULL,
    removed_ms     INTEGER
);
CREATE UNIQUE INDEX apps_current_name ON apps (environment_id, name) WHERE removed_ms IS NULL;

CREATE TABLE releases (
    id         INTEGER PRIMARY KEY,
    app_id     INTEGER NOT NULL REFERENCES apps (id),
    -- Operator-facing version label (git sha, tag, build number).
    version    TEXT    NOT NULL,
    -- Where the build lives (directory, archive path, image reference).
    artifact   TEXT    NOT NULL,
    -- The app spec frozen at release time, as JSON, so a rollback restores it exactly.
    spec       TEXT    NOT NULL DEFAULT '{}',
    created_ms INTEGER NOT NULL,
    created_by TEXT    NOT NULL,
    UNIQUE (app_id, version)
);

CREATE TABLE deployments (
    id                  INTEGER PRIMARY KEY,
    app_id              INTEGER NOT NULL REFERENCES apps (id),
    release_id          INTEGER NOT NULL REFERENCES releases (id),
    -- What was serving before, the rollback target.
    previous_release_id INTEGER REFERENCES releases (id),
    -- rolling | blue_green | canary
    strategy            TEXT    NOT NULL,
    -- pending | running | paused | succeeded | failed | rolled_back | aborted
    state               TEXT    NOT NULL,
    requested_by        TEXT    NOT NULL,
    started_ms          INTEGER NOT NULL,
    updated_ms          INTEGER NOT NULL,
    finished_ms         INTEGER,
    detail              TEXT
);
-- At start berth looks for deployments that were in flight when it stopped.
CREATE INDEX deployments_unfinished ON deployments (state) WHERE finished_ms IS NULL;
CREATE INDEX deployments_app ON deployments (app_id, id);

-- Every step and decision of a deployment with the numbers behind it, in order.
CREATE TABLE deployment_decisions (
    id            INTEGER PRIMARY KEY,
    deployment_id INTEGER NOT NULL REFERENCES deployments (id),
    seq           INTEGER NOT NULL,
    time_ms       INTEGER NOT NULL,
    -- e.g. start_instances, health_gate, shift_traffic, analysis, promote, rollback
    step          TEXT    NOT NULL,
    -- proceed | pause | abort | rollback | inconclusive
    decision      TEXT    NOT NULL,
    reason        TEXT    NOT NULL,
    -- Measured values (success rate, latency quantiles, sample counts) as JSON.
    measurements  TEXT    NOT NULL DEFAULT '{}',
    UNIQUE (deployment_id, seq)
);

CREATE TABLE instances (
    id            INTEGER PRIMARY KEY,
    app_id        INTEGER NOT NULL REFERENCES apps (id),
    release_id    INTEGER NOT NULL REFERENCES releases (id),
    deployment_id INTEGER REFERENCES deployments (id),
    -- host:port the edge sends traffic to
    address       TEXT    NOT NULL,
    pid           INTEGER,
    -- starting | healthy | unhealthy | draining | stopped | failed
    state         TEXT    NOT NULL,
    started_ms    INTEGER NOT NULL,
    updated_ms    INTEGER NOT NULL,
    stopped_ms    INTEGER,
    exit_status   INTEGER
);
CREATE INDEX instances_live ON instances (app_id, state) WHERE stopped_ms IS NULL;
