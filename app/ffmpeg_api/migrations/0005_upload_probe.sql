-- What ffprobe said about an upload when it was received ({"ffprobe": ...} or {"error": ...}),
-- so a submission needs no local file to probe: with the s3 backend the API host has none, and
-- on either backend a submission saves one ffprobe run. `version` identifies the bytes probed
-- (size:mtime locally, the ETag in a bucket).
ALTER TABLE uploads ADD COLUMN probe jsonb;
ALTER TABLE uploads ADD COLUMN version text;
