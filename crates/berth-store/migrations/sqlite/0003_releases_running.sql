-- What the supervisor needs to bring an app back after a restart, and what `berth ps` and
-- `berth releases` show: which release is active, where a release came from, and which
-- process and instance a row is.

-- The release berth keeps running for the app (NULL until the first successful deploy).
ALTER TABLE apps ADD COLUMN active_release_id BIGINT REFERENCES releases (id);
-- Source, git commit, digest, size, build time and log of the release, as JSON.
ALTER TABLE releases ADD COLUMN meta TEXT NOT NULL DEFAULT '{}';
-- The process type (`web`, `worker`) and the instance's name (`web-1`).
ALTER TABLE instances ADD COLUMN process TEXT NOT NULL DEFAULT '';
ALTER TABLE instances ADD COLUMN name TEXT NOT NULL DEFAULT '';
