"""An upload is probed once per content: at its first submission on the local backend, the
result kept with the upload for the next ones while the file is unchanged (same size and
mtime), probed again when it changed."""

from __future__ import annotations

import os

from helpers import lavfi_clip

TRANSCODE = [{"type": "transcode", "video_codec": "h264", "preset": "ultrafast"}]


def test_probe_recorded_at_first_use_and_redone_when_the_file_changes(
    client, user_key, settings, db_conn, tmp_path
):
    data = open(lavfi_clip(tmp_path / "in.mp4"), "rb").read()
    up = client.post(
        "/api/v1/files?name=in.mp4",
        headers={**user_key["headers"], "Content-Type": "application/octet-stream"},
        data=data,
    )
    assert up.status_code == 201
    path = up.json["path"]

    def record():
        return db_conn.execute(
            "SELECT probe, version FROM uploads WHERE path = %s", (path,)
        ).fetchone()

    assert record()["probe"] is None  # nothing probed for an upload never converted
    body = {"input": path, "operations": TRANSCODE}
    first = client.post("/api/v1/convert", headers=user_key["headers"], json=body)
    assert first.status_code == 202, first.json
    kept = record()
    assert kept["probe"]["ffprobe"]["format"]["format_name"].startswith("mov")
    assert kept["version"] is not None

    # The same file again: the recorded probe answers (a probe that lied would show).
    db_conn.execute(
        "UPDATE uploads SET probe = jsonb_set(probe, '{ffprobe,format,duration}', '\"9999\"')"
        " WHERE path = %s",
        (path,),
    )
    db_conn.commit()
    long = client.post("/api/v1/convert", headers=user_key["headers"], json=body)
    assert long.status_code == 202
    job = client.get(f"/api/v1/jobs/{long.json['id']}", headers=user_key["headers"]).json
    assert job["input_duration"] == 9999

    # The file changed behind the service's back: probed again, and the new answer kept.
    full = os.path.join(settings.storage_root, path)
    with open(full, "wb") as fh:
        fh.write(b"not media at all")
    changed = client.post("/api/v1/convert", headers=user_key["headers"], json=body)
    assert changed.status_code == 422
    assert "cannot read input media" in changed.json["error"]["message"]
    assert "error" in record()["probe"] and record()["version"] != kept["version"]
