-- Encrypted secrets per app and environment (issue 7), and the secret versions each release
-- runs with, so that a restart (or a rollback) brings back exactly those.
--
-- A secret is a list of versions; the newest is current unless it is a removal
-- (`deleted = 1`, empty ciphertext). Values are sealed with XChaCha20-Poly1305 under the
-- master key named by `key_id`, with the row's environment, app, name and version as
-- associated data (berth-secrets): the database alone reveals nothing, and a ciphertext moved
-- to another row does not decrypt. Keyed by names, not by the app row, so secrets can be set
-- before the app's first deploy.

CREATE TABLE secret_versions (
    id          INTEGER PRIMARY KEY,
    environment TEXT    NOT NULL,
    app         TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    version     INTEGER NOT NULL,
    -- Lower-case hex of the ciphertext (tag included) and of the 24-byte nonce; '' for a removal.
    ciphertext  TEXT    NOT NULL,
    nonce       TEXT    NOT NULL,
    key_id      TEXT    NOT NULL,
    deleted     INTEGER NOT NULL DEFAULT 0,
    created_by  TEXT    NOT NULL,
    created_ms  INTEGER NOT NULL,
    UNIQUE (environment, app, name, version)
);
CREATE INDEX secret_versions_key ON secret_versions (key_id);

CREATE TABLE release_secrets (
    release_id INTEGER NOT NULL REFERENCES releases (id),
    name       TEXT    NOT NULL,
    version    INTEGER NOT NULL,
    PRIMARY KEY (release_id, name)
);
