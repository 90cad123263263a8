-- Every upload with the user who made it. A path under the storage root is usable only by its
-- owner or an admin key (ffmpeg_api/ownership.py), and a user's uploads count against the
-- storage quota. Files with no row here (put there by hand, or uploaded before this migration)
-- have no owner: only admin keys may use them.
CREATE TABLE uploads (
    path        text PRIMARY KEY,                 -- relative to the storage root: uploads/<id>/<name>
    user_id     text NOT NULL,
    api_key_id  text REFERENCES api_keys (id) ON DELETE SET NULL,
    size        bigint NOT NULL,
    sha256      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX uploads_user_idx ON uploads (user_id);
