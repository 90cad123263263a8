-- What a job's plan costs, decided at submission: encoded output-seconds (counted against
-- OUTPUT_SECONDS_PER_DAY) and the job's timeout (the sum of its steps' work-scaled timeouts),
-- which every later enqueue (requeue, reconcile) reuses. NULL on rows planned before.
ALTER TABLE jobs ADD COLUMN output_seconds double precision;
ALTER TABLE jobs ADD COLUMN timeout_seconds double precision;
-- the quotas count a user's (and a key's) active jobs at every submission
CREATE INDEX jobs_active_user_idx ON jobs (user_id, api_key_id)
    WHERE status IN ('queued', 'processing');
