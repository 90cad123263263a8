-- Jobs and API keys. A job is a row first and a queue entry second: every state the
-- service needs to rebuild its queues after losing Redis lives here.

CREATE TABLE api_keys (
    id            text PRIMARY KEY,               -- public key id, appears in logs
    key_hash      text NOT NULL,                  -- sha256 hex of the whole raw key
    name          text NOT NULL,
    user_id       text NOT NULL,
    is_admin      boolean NOT NULL DEFAULT false,
    rate_limit    integer,                        -- requests/minute; NULL = service default
    monitored     boolean NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz,
    revoked_reason text,
    last_used_at  timestamptz,
    request_count bigint NOT NULL DEFAULT 0
);
CREATE INDEX api_keys_user_idx ON api_keys (user_id);

CREATE TABLE jobs (
    id              uuid PRIMARY KEY,
    status          text NOT NULL CHECK (status IN
                        ('queued', 'processing', 'completed', 'failed', 'cancelled')),
    priority        text NOT NULL CHECK (priority IN ('high', 'normal', 'low')),
    hardware        text NOT NULL CHECK (hardware IN ('auto', 'cpu', 'gpu')),
    queue           text NOT NULL,
    input_path      text NOT NULL,
    input_duration  double precision,
    output_format   text NOT NULL,
    operations      jsonb NOT NULL,
    output_path     text,
    outputs         jsonb NOT NULL DEFAULT '[]'::jsonb,
    output_size     bigint,
    result          jsonb,
    progress        double precision NOT NULL DEFAULT 0,
    stage           text,
    eta_seconds     double precision,
    error           text,
    logs            text,
    webhook_url     text,
    api_key_id      text REFERENCES api_keys (id),
    user_id         text,
    api_key_hash    text,
    worker_id       text,
    encoder         text,
    rq_job_id       text,
    retry_count     integer NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    heartbeat_at    timestamptz,
    completed_at    timestamptz
);
CREATE INDEX jobs_status_idx ON jobs (status, updated_at);
CREATE INDEX jobs_created_idx ON jobs (created_at DESC);
CREATE INDEX jobs_api_key_idx ON jobs (api_key_id, created_at);
CREATE INDEX jobs_user_idx ON jobs (user_id, created_at DESC);
