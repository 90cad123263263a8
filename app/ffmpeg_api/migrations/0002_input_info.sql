-- What ffprobe said about the input at submission, with the file's size and mtime, so that a
-- worker can skip probing it again when the file has not changed since.
ALTER TABLE jobs ADD COLUMN input_info jsonb;
