-- Deploy locks and approvals (issue 5).
--
-- While an app is locked in an environment no deploy, rollback, promotion or restart of it
-- starts there. Keyed by names, like secrets, so an app can be locked before its first
-- deploy; at most one lock per app and environment.
CREATE TABLE deploy_locks (
    environment TEXT    NOT NULL,
    app         TEXT    NOT NULL,
    owner       TEXT    NOT NULL,
    reason      TEXT    NOT NULL,
    created_ms  INTEGER NOT NULL,
    PRIMARY KEY (environment, app)
);

-- Who let a deployment that waited for approval (`requires_approval`) go on. Its state is
-- `awaiting_approval` until then; `cancelled` when aborted or when berth restarted meanwhile.
ALTER TABLE deployments ADD COLUMN approved_by TEXT;
