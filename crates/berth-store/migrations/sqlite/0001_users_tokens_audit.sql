-- Users, API tokens and the hash-chained audit log. See docs/store.md.
-- Times are integer milliseconds since the Unix epoch. IDs are 64-bit integers.

CREATE TABLE users (
    id          INTEGER PRIMARY KEY,
    name        TEXT    NOT NULL,
    created_ms  INTEGER NOT NULL,
    -- Users are removed softly so that tokens and audit entries keep pointing at a row.
    removed_ms  INTEGER
);
-- A name is unique among current users; a removed user's name can be given out again.
CREATE UNIQUE INDEX users_current_name ON users (name) WHERE removed_ms IS NULL;

CREATE TABLE grants (
    user_id     INTEGER NOT NULL REFERENCES users (id),
    role        TEXT    NOT NULL CHECK (role IN ('admin', 'deployer', 'viewer')),
    -- An environment name, or '*' for all environments.
    environment TEXT    NOT NULL,
    PRIMARY KEY (user_id, role, environment)
);

CREATE TABLE tokens (
    id           INTEGER PRIMARY KEY,
    user_id      INTEGER NOT NULL REFERENCES users (id),
    label        TEXT    NOT NULL,
    -- The non-secret middle part of the token (berth_<public_id>_<secret>), used to find the
    -- row; the secret itself is never stored.
    public_id    TEXT    NOT NULL UNIQUE,
    -- Lower-case hex SHA-256 of the whole token string.
    hash         TEXT    NOT NULL,
    created_ms   INTEGER NOT NULL,
    last_used_ms INTEGER,
    revoked_ms   INTEGER
);
CREATE INDEX tokens_user ON tokens (user_id);

CREATE TABLE audit_log (
    -- Assigned by berth inside the appending transaction: 1, 2, 3, … without gaps.
    seq       INTEGER PRIMARY KEY,
    time_ms   INTEGER NOT NULL,
    actor     TEXT    NOT NULL,
    role      TEXT    NOT NULL,
    source    TEXT    NOT NULL,
    action    TEXT    NOT NULL,
    target    TEXT    NOT NULL,
    -- JSON text, exactly as hashed; secret values are redacted before they get here.
    params    TEXT    NOT NULL,
    outcome   TEXT    NOT NULL,
    prev_hash TEXT    NOT NULL,
    hash      TEXT    NOT NULL
);
CREATE INDEX audit_log_time ON audit_log (time_ms);
CREATE INDEX audit_log_actor ON audit_log (actor, seq);
CREATE INDEX audit_log_target ON audit_log (target, seq);

-- The single row naming the last entry of the chain. Appends lock it (PostgreSQL) and move
-- it forward; verification checks the log ends exactly there, which catches a cut-off tail.
CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL,
    hash TEXT    NOT NULL
);
INSERT INTO audit_head (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

-- Written by retention: the last removed entry's seq and hash, HMAC-signed with a key kept
-- outside the database. Verification starts from the newest one.
CREATE TABLE audit_checkpoints (
    id         INTEGER PRIMARY KEY,
    seq        INTEGER NOT NULL UNIQUE,
    hash       TEXT    NOT NULL,
    created_ms INTEGER NOT NULL,
    mac        TEXT    NOT NULL
);
