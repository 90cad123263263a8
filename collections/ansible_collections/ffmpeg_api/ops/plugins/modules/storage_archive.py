#!/usr/bin/python
# Copyright: FFmpeg API Ops team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: storage_archive
short_description: Archive finished job outputs to S3, verified by checksum
description:
  - Copies the files under the storage root's C(output/) to an S3 bucket, except those modified
    in the current month (the Storage Full runbook's C(aws s3 sync ... --exclude "$(date +%Y%m)*")),
    keeping their path below C(output/) as the object key after O(prefix).
  - Each object carries the file's SHA-256 in its metadata (C(x-amz-meta-sha256)). A copy counts
    as verified when the object's size and SHA-256 equal the file's, and its ETag equals the
    file's MD5 when the upload was a single part.
  - Objects already in the bucket with the same size and SHA-256 are not uploaded again, so a
    second run changes nothing.
  - With O(remove_archived=true), a local file is deleted only after its copy was verified.
  - With the service's s3 storage backend (C(STORAGE_BACKEND=s3) in O(env_file)), the outputs
    are the objects under C(S3_PREFIX/output/) of C(S3_BUCKET) with a last-modified time before
    the cutoff. Each is copied server-side (C(CopyObject), multipart copy above 8 MiB) when the
    service's endpoint is the archive's, else streamed from one endpoint to the other; the
    archived object carries the source's ETag in its metadata (C(x-amz-meta-source-etag)). A
    copy counts as verified when its size equals the source object's, its source ETag is the
    source's, and its ETag equals the source's when both are single-part. A server-side copy
    refused with C(AccessDenied) (the archive credentials cannot read the service's bucket)
    is retried as a streamed copy.
  - With the s3 backend and O(remove_archived=true), the source objects are deleted in batches
    of 1,000, each only after its copy was verified; a job's C(.manifest.json) is handled after
    its other files and deleted when nothing else of the job is left, so the job's outputs stop
    counting against its user's storage quota. The service's own credentials
    (C(AWS_ACCESS_KEY_ID) and C(AWS_SECRET_ACCESS_KEY) in O(env_file), else boto3's chain)
    read and delete the source objects.
version_added: "1.0.0"
author:
  - FFmpeg API Ops team (@ffmpeg-api-ops)
options:
  bucket:
    description: The destination bucket (it must exist).
    type: str
    required: true
  prefix:
    description: Key prefix of the archived objects.
    type: str
    default: output/
  storage_root:
    description:
      - The service's storage root. Default is C(STORAGE_ROOT) from O(env_file).
    type: path
  env_file:
    description:
      - The service's environment file, read when O(storage_root) is not given, and for the
        storage backend (C(STORAGE_BACKEND)) and, with s3, C(S3_*) and the service's credentials.
    type: path
    default: /etc/ffmpeg-api/ffmpeg-api.env
  storage_backend:
    description:
      - The service's storage backend. Default is C(STORAGE_BACKEND) from O(env_file), else
        C(local).
    type: str
    choices: [local, s3]
  extensions:
    description: Only archive files with these extensions (C(mp4), C(webm)); empty means all.
    type: list
    elements: str
    default: []
  modified_before:
    description:
      - Archive files modified before this date (C(YYYY-MM-DD), UTC).
      - Default is the first day of the current month, so the current month stays local.
    type: str
  remove_archived:
    description: Delete each local file once its copy is verified (empty job directories go too).
    type: bool
    default: false
  endpoint_url:
    description: S3 endpoint (a local S3-compatible server); default is AWS's.
    type: str
  region:
    description: Region of the bucket.
    type: str
    default: us-east-1
  access_key:
    description: Access key id; default is boto3's credential chain.
    type: str
  secret_key:
    description: Secret access key.
    type: str
  session_token:
    description: Session token of temporary credentials.
    type: str
attributes:
  check_mode:
    support: full
    description: >-
      Hashes the files (with the s3 backend, lists the source objects) and reads the bucket;
      copies and deletes nothing.
  diff_mode:
    support: full
    description: Lists the objects added to the bucket and the local files removed.
  idempotent:
    support: full
    description: >-
      Objects already archived with the same checksum are skipped; removed files are gone.
requirements:
  - boto3 (Debian package C(python3-boto3)) on the managed host.
"""

EXAMPLES = r"""
- name: Archive outputs older than this month and free their space
  ffmpeg_api.ops.storage_archive:
    bucket: ffmpeg-api-archive
    extensions: [mp4, webm]
    remove_archived: true
  register: archive

- name: Archive to a local S3-compatible server
  ffmpeg_api.ops.storage_archive:
    bucket: archive
    endpoint_url: http://127.0.0.1:5000
    access_key: testing
    secret_key: "{{ s3_secret }}"
"""

RETURN = r"""
uploaded:
  description: Keys uploaded and verified (or that would be uploaded in check mode).
  returned: always
  type: list
  elements: str
already_archived:
  description: Keys already in the bucket with the same checksum (not uploaded again).
  returned: always
  type: list
  elements: str
removed:
  description:
    - Local files deleted after verification, relative to the storage root; with the s3
      backend, source objects deleted, relative to C(S3_PREFIX) (C(output/<job>/<file>)).
  returned: always
  type: list
  elements: str
bytes_uploaded:
  description: Bytes uploaded (or that would be).
  returned: always
  type: int
bytes_removed:
  description: Local bytes freed (or that would be).
  returned: always
  type: int
kept_recent:
  description: Files left alone because they were modified on or after RV(cutoff).
  returned: always
  type: int
cutoff:
  description: Files modified before this instant (UTC) were candidates.
  returned: always
  type: str
backend:
  description: The storage backend archived from, C(local) or C(s3).
  returned: always
  type: str
server_side_copies:
  description: With the s3 backend, how many of RV(uploaded) were copied server-side.
  returned: always
  type: int
"""

import datetime
import hashlib
import os
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    import boto3
    import botocore.config
    from botocore.exceptions import BotoCoreError, ClientError
except ImportError:
    BOTO3_IMPORT_ERROR = traceback.format_exc()
    boto3 = None
else:
    BOTO3_IMPORT_ERROR = None

CHUNK = 1024 * 1024


def read_env_value(path, name):
    with open(path) as fh:
        for line in fh:
            line = line.strip()
            if line.startswith(name + "="):
                return line.split("=", 1)[1].strip().strip("'\"")
    return None


def month_start(now):
    return datetime.datetime(now.year, now.month, 1, tzinfo=datetime.timezone.utc)


def parse_cutoff(text, now):
    if not text:
        return month_start(now)
    day = datetime.datetime.strptime(text, "%Y-%m-%d")
    return day.replace(tzinfo=datetime.timezone.utc)


def candidates(output_dir, cutoff, extensions):
    """(files to archive as (path, relpath, size), count kept because recent), sorted by path."""
    wanted_ext = set(e.lower().lstrip(".") for e in extensions)
    cutoff_ts = (
        cutoff - datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
    ).total_seconds()
    found, recent = [], 0
    for dirpath, dirs, names in os.walk(output_dir):
        dirs.sort()
        for name in sorted(names):
            path = os.path.join(dirpath, name)
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            if wanted_ext and name.rsplit(".", 1)[-1].lower() not in wanted_ext:
                continue
            st = os.stat(path)
            if st.st_mtime >= cutoff_ts:
                recent += 1
                continue
            found.append((path, os.path.relpath(path, output_dir).replace(os.sep, "/"), st.st_size))
    return found, recent


def digests(path):
    sha, md5 = hashlib.sha256(), hashlib.md5()
    with open(path, "rb") as fh:
        while True:
            chunk = fh.read(CHUNK)
            if not chunk:
                break
            sha.update(chunk)
            md5.update(chunk)
    return sha.hexdigest(), md5.hexdigest()


def matches(head, size, sha256, md5):
    """Whether an object's HEAD proves it is a copy of the file."""
    if head is None or head.get("ContentLength") != size:
        return False
    if head.get("Metadata", {}).get("sha256") != sha256:
        return False
    etag = head.get("ETag", "").strip('"')
    return "-" in etag or etag == md5


MANIFEST = ".manifest.json"
DELETE_BATCH = 1000


def same_endpoint(a, b):
    """Whether two endpoint URLs name the same service (empty: AWS's own)."""
    return (a or "").rstrip("/").lower() == (b or "").rstrip("/").lower()


def s3_candidates(source, bucket, output_prefix, cutoff, extensions):
    """(objects to archive as (key, relpath below output/, size, etag), count kept because
    recent): each job's manifest after its other files, so a job stays published until its
    files are archived (and, with removal, gone)."""
    wanted_ext = set(e.lower().lstrip(".") for e in extensions)
    found, recent = [], 0
    paginator = source.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=output_prefix):
        for obj in page.get("Contents", []):
            rel = obj["Key"][len(output_prefix) :]
            name = rel.rsplit("/", 1)[-1]
            if not rel or rel.endswith("/"):
                continue
            if wanted_ext and name.rsplit(".", 1)[-1].lower() not in wanted_ext:
                continue
            if obj["LastModified"] >= cutoff:
                recent += 1
                continue
            found.append((obj["Key"], rel, obj["Size"], obj.get("ETag", "").strip('"')))
    found.sort(key=lambda o: (o[1].rsplit("/", 1)[0], o[1].endswith("/" + MANIFEST), o[1]))
    return found, recent


def copy_matches(head, size, etag):
    """Whether an archived object's HEAD proves it is a copy of the source object."""
    if head is None or head.get("ContentLength") != size:
        return False
    if head.get("Metadata", {}).get("source-etag") != etag:
        return False
    got = head.get("ETag", "").strip('"')
    return "-" in got or "-" in etag or got == etag


def archive_s3(module, p, archive, head, cutoff, env):
    """The s3 backend's archive: objects of the service's bucket to the archive bucket."""
    from boto3.s3.transfer import TransferConfig

    src_bucket = p["_s3"]["bucket"]
    src_prefix = p["_s3"]["prefix"]
    output_prefix = (src_prefix + "/" if src_prefix else "") + "output/"
    source = boto3.client(
        "s3",
        endpoint_url=p["_s3"]["endpoint_url"] or None,
        region_name=p["_s3"]["region"] or p["region"],
        aws_access_key_id=env.get("AWS_ACCESS_KEY_ID") or None,
        aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
        config=botocore.config.Config(
            s3={"addressing_style": p["_s3"]["addressing_style"] or "auto"}
        ),
    )
    server_side = same_endpoint(p["_s3"]["endpoint_url"], p["endpoint_url"])
    transfer = TransferConfig(multipart_threshold=8 * 1024 * 1024)
    objects, recent = s3_candidates(source, src_bucket, output_prefix, cutoff, p["extensions"])
    uploaded, already, removed, pending = [], [], [], []
    state = dict(bytes_uploaded=0, bytes_removed=0, server_side=0)

    def flush():
        for i in range(0, len(pending), DELETE_BATCH):
            batch = pending[i : i + DELETE_BATCH]
            out = source.delete_objects(
                Bucket=src_bucket,
                Delete={"Objects": [{"Key": k} for k, _r, _s in batch], "Quiet": True},
            )
            if out.get("Errors"):
                first = out["Errors"][0]
                raise RuntimeError("could not delete %s: %s" % (first["Key"], first["Message"]))
            for _key, rel, size in batch:
                removed.append(rel)
                state["bytes_removed"] += size
        del pending[:]

    def copy(src_key, key, etag):
        extra = {"Metadata": {"source-etag": etag}, "MetadataDirective": "REPLACE"}
        if server_side:
            try:
                archive.copy(
                    {"Bucket": src_bucket, "Key": src_key},
                    p["bucket"],
                    key,
                    ExtraArgs=extra,
                    SourceClient=source,
                    Config=transfer,
                )
                state["server_side"] += 1
                return
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") not in ("AccessDenied", "403"):
                    raise
        body = source.get_object(Bucket=src_bucket, Key=src_key)["Body"]
        archive.upload_fileobj(
            body, p["bucket"], key, ExtraArgs={"Metadata": extra["Metadata"]}, Config=transfer
        )

    for src_key, rel, size, etag in objects:
        key = p["prefix"] + rel
        if copy_matches(head(key), size, etag):
            already.append(key)
        else:
            uploaded.append(key)
            state["bytes_uploaded"] += size
            if not module.check_mode:
                copy(src_key, key, etag)
                if not copy_matches(head(key), size, etag):
                    flush()
                    module.fail_json(
                        msg="the copy of s3://%s/%s in s3://%s/%s does not match the source;"
                        " it was not deleted" % (src_bucket, src_key, p["bucket"], key),
                        uploaded=uploaded[:-1],
                        removed=removed,
                    )
        if p["remove_archived"]:
            pending.append((src_key, "output/" + rel, size))
            if module.check_mode:
                removed.append("output/" + rel)
                state["bytes_removed"] += size
                del pending[:]
            elif len(pending) >= DELETE_BATCH:
                flush()
    if not module.check_mode:
        flush()
    if p["remove_archived"]:
        removed += prune_manifests(module, source, src_bucket, output_prefix, objects)
    return dict(
        uploaded=uploaded,
        already_archived=already,
        removed=removed,
        bytes_uploaded=state["bytes_uploaded"],
        bytes_removed=state["bytes_removed"],
        kept_recent=recent,
        server_side_copies=state["server_side"],
    )


def prune_manifests(module, source, bucket, output_prefix, objects):
    """Delete the manifest of each job whose other archived files are gone and that has
    nothing else left (an extension filter kept the manifest itself back)."""
    archived = set(rel for _k, rel, _s, _e in objects)
    jobs = sorted(set(rel.split("/", 1)[0] for rel in archived if "/" in rel))
    pruned = []
    for job in jobs:
        manifest = "%s/%s" % (job, MANIFEST)
        if manifest in archived:
            continue  # archived and removed like any other file
        listing = source.list_objects_v2(Bucket=bucket, Prefix=output_prefix + job + "/")
        keys = [o["Key"][len(output_prefix) :] for o in listing.get("Contents", [])]
        if module.check_mode:
            keys = [k for k in keys if k not in archived]
        if keys == [manifest]:
            if not module.check_mode:
                source.delete_object(Bucket=bucket, Key=output_prefix + manifest)
            pruned.append("output/" + manifest)
    return pruned


def read_env(path):
    env = {}
    if path and os.path.exists(path):
        with open(path) as fh:
            for line in fh:
                line = line.strip()
                if line and not line.startswith("#") and "=" in line:
                    name, value = line.split("=", 1)
                    env[name.strip()] = value.strip().strip("'\"")
    return env


def main():
    module = AnsibleModule(
        argument_spec=dict(
            bucket=dict(type="str", required=True),
            prefix=dict(type="str", default="output/"),
            storage_root=dict(type="path"),
            env_file=dict(type="path", default="/etc/ffmpeg-api/ffmpeg-api.env"),
            storage_backend=dict(type="str", choices=["local", "s3"]),
            extensions=dict(type="list", elements="str", default=[]),
            modified_before=dict(type="str"),
            remove_archived=dict(type="bool", default=False),
            endpoint_url=dict(type="str"),
            region=dict(type="str", default="us-east-1"),
            access_key=dict(type="str", no_log=True),
            secret_key=dict(type="str", no_log=True),
            session_token=dict(type="str", no_log=True),
        ),
        required_together=[("access_key", "secret_key")],
        supports_check_mode=True,
    )
    if boto3 is None:
        module.fail_json(msg=missing_required_lib("boto3"), exception=BOTO3_IMPORT_ERROR)
    p = module.params
    env = read_env(p["env_file"])
    backend = p["storage_backend"] or env.get("STORAGE_BACKEND") or "local"
    root = p["storage_root"]
    if backend == "s3":
        if not env.get("S3_BUCKET"):
            module.fail_json(msg="STORAGE_BACKEND=s3 needs S3_BUCKET in %s" % p["env_file"])
        p["_s3"] = dict(
            bucket=env["S3_BUCKET"],
            prefix=env.get("S3_PREFIX", "").strip("/"),
            endpoint_url=env.get("S3_ENDPOINT_URL", ""),
            region=env.get("S3_REGION", ""),
            addressing_style=env.get("S3_ADDRESSING_STYLE", ""),
        )
        root = root or env.get("STORAGE_ROOT") or "/"
    elif not root:
        if not os.path.exists(p["env_file"]):
            module.fail_json(msg="storage_root not given and %s does not exist" % p["env_file"])
        root = read_env_value(p["env_file"], "STORAGE_ROOT")
        if not root:
            module.fail_json(msg="STORAGE_ROOT is not set in %s" % p["env_file"])
    output_dir = os.path.join(root, "output")
    if backend == "local" and not os.path.isdir(output_dir):
        module.fail_json(msg="%s is not a directory: is %s the storage root?" % (output_dir, root))
    try:
        cutoff = parse_cutoff(p["modified_before"], datetime.datetime.now(datetime.timezone.utc))
    except ValueError:
        module.fail_json(
            msg="modified_before must be a date YYYY-MM-DD, not %r" % p["modified_before"]
        )

    s3 = boto3.client(
        "s3",
        endpoint_url=p["endpoint_url"],
        region_name=p["region"],
        aws_access_key_id=p["access_key"],
        aws_secret_access_key=p["secret_key"],
        aws_session_token=p["session_token"],
    )

    def head(key):
        try:
            return s3.head_object(Bucket=p["bucket"], Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    if backend == "s3":
        try:
            result = archive_s3(module, p, s3, head, cutoff, env)
        except (BotoCoreError, ClientError, RuntimeError) as exc:
            module.fail_json(
                msg="S3 error archiving s3://%s to s3://%s: %s"
                % (p["_s3"]["bucket"], p["bucket"], exc),
                exception=traceback.format_exc(),
            )
        exit_with(module, p, result, cutoff, "s3", "s3://%s/%s" % (p["_s3"]["bucket"], "output/"))

    files, recent = candidates(output_dir, cutoff, p["extensions"])
    uploaded, already, removed = [], [], []
    bytes_uploaded = bytes_removed = 0
    try:
        for path, rel, size in files:
            key = p["prefix"] + rel
            sha256, md5 = digests(path)
            if matches(head(key), size, sha256, md5):
                already.append(key)
            else:
                uploaded.append(key)
                bytes_uploaded += size
                if not module.check_mode:
                    s3.upload_file(
                        path, p["bucket"], key, ExtraArgs={"Metadata": {"sha256": sha256}}
                    )
                    if not matches(head(key), size, sha256, md5):
                        module.fail_json(
                            msg="the copy of %s in s3://%s/%s does not match the file; "
                            "nothing was deleted" % (path, p["bucket"], key),
                            uploaded=uploaded[:-1],
                            removed=removed,
                        )
            if p["remove_archived"]:
                removed.append(os.path.relpath(path, root))
                bytes_removed += size
                if not module.check_mode:
                    os.unlink(path)
                    _prune_empty_dirs(os.path.dirname(path), output_dir)
    except (BotoCoreError, ClientError) as exc:
        module.fail_json(
            msg="S3 error on bucket %s: %s" % (p["bucket"], exc),
            uploaded=uploaded,
            removed=removed,
            exception=traceback.format_exc(),
        )

    result = dict(
        uploaded=uploaded,
        already_archived=already,
        removed=removed,
        bytes_uploaded=bytes_uploaded,
        bytes_removed=bytes_removed,
        kept_recent=recent,
        server_side_copies=0,
    )
    exit_with(module, p, result, cutoff, "local", root)


def exit_with(module, p, result, cutoff, backend, source):
    result.update(
        changed=bool(result["uploaded"] or result["removed"]),
        cutoff=cutoff.isoformat(),
        backend=backend,
    )
    if module._diff:
        result["diff"] = [
            dict(
                before_header="s3://%s/%s (objects added)" % (p["bucket"], p["prefix"]),
                before="",
                after="".join(k + "\n" for k in result["uploaded"]),
            ),
            dict(
                before_header="%s (%s removed)"
                % (source, "files" if backend == "local" else "objects"),
                before="".join(r + "\n" for r in result["removed"]),
                after="",
            ),
        ]
    module.exit_json(**result)


def _prune_empty_dirs(path, stop):
    while os.path.abspath(path) != os.path.abspath(stop):
        try:
            os.rmdir(path)
        except OSError:
            return
        path = os.path.dirname(path)


if __name__ == "__main__":
    main()
