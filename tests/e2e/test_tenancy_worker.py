"""The worker's own ownership check (issue 14, item 1): a job whose input was changed after
submission — in its row, or by a link swapped in on disk — to another user's file fails with
the reason, instead of reading that file. A real RQ worker process runs the jobs."""

import os

from helpers import job_row, wait_for

from ffmpeg_api import db as dbmod


def upload(client, key, path):
    with open(path, "rb") as fh:
        r = client.post(
            "/api/v1/files?name=in.mp4",
            headers=key["headers"],
            data=fh.read(),
            content_type="application/octet-stream",
        )
    assert r.status_code == 201, r.json
    return r.json["path"]


def submit(client, key, path):
    r = client.post(
        "/api/v1/convert",
        headers=key["headers"],
        json={"input": path, "operations": [{"type": "transcode", "height": 120}]},
    )
    assert r.status_code == 202, r.json
    return r.json["id"]


def test_worker_refuses_an_input_swapped_to_another_users_file(
    client, settings, clip_files, make_key, start_worker
):
    alice, bob = make_key(user="alice", name="a"), make_key(user="bob", name="b")
    clip = os.path.join(settings.storage_root, clip_files["short.mp4"])
    bobs = upload(client, bob, clip)
    alices_for_row, alices_for_link, alices_kept = (upload(client, alice, clip) for _ in range(3))

    # Accepted at submission (alice's own files); no worker runs yet, so all three stay queued.
    row_swapped = submit(client, alice, alices_for_row)
    link_swapped = submit(client, alice, alices_for_link)
    untouched = submit(client, alice, alices_kept)
    with dbmod.connect(settings.database_url) as conn:
        conn.execute("UPDATE jobs SET input_path = %s WHERE id = %s", (bobs, row_swapped))
        conn.commit()
    link = os.path.join(settings.storage_root, alices_for_link)
    os.unlink(link)
    os.symlink(os.path.join(settings.storage_root, bobs), link)

    start_worker(settings)
    done = {}
    for job_id in (row_swapped, link_swapped, untouched):
        done[job_id] = wait_for(
            lambda j=job_id: (
                row if (row := job_row(settings, j))["status"] in ("completed", "failed") else None
            ),
            timeout=90,
            interval=0.2,
            what=f"job {job_id} finished",
        )
    assert done[untouched]["status"] == "completed"
    for job_id in (row_swapped, link_swapped):
        assert done[job_id]["status"] == "failed"
        assert done[job_id]["error"] == (
            f"PathNotUsable: input {bobs} is not usable by the user who submitted the job"
        )
        assert not os.path.exists(os.path.join(settings.output_dir, job_id))
