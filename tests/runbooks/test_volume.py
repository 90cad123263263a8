"""Vertical resize: a loop-file ext4 filesystem grows, and the EBS volume is enlarged.

The disk is a file attached to a loop device with an ext4 filesystem on it; "the disk grew" is
the file truncated to a larger size and the loop device re-read (`losetup -c`). The filesystem
stays unmounted: containers may not resize a mounted ext4 (online resize needs privileges this
machine may lack), so the module checks and grows it offline. The cloud volume lives in a moto
EC2 server this test starts.
"""

from __future__ import annotations

import re
import subprocess

import pytest
from runbook_helpers import (
    admin,
    assert_second_run_changes_nothing,
    http,
    playbook,
)

MIB = 1024 * 1024
CREDS = {"aws_access_key_id": "AKIAINFRATEST", "aws_secret_access_key": "infra-secret-value-42"}


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def fs_bytes(device: str) -> int:
    out = sh("dumpe2fs", "-h", device)
    count = int(re.search(r"^Block count:\s+(\d+)", out, re.M).group(1))
    size = int(re.search(r"^Block size:\s+(\d+)", out, re.M).group(1))
    return count * size


@pytest.fixture
def loop_disk(tmp_path):
    image = tmp_path / "disk.img"
    subprocess.run(["truncate", "-s", f"{64 * MIB}", str(image)], check=True)
    device = sh("losetup", "-f", "--show", str(image)).strip()
    try:
        sh("mkfs.ext4", "-q", "-F", device)
        yield str(image), device
    finally:
        subprocess.run(["losetup", "-d", device], check=False)


@pytest.fixture
def ec2(moto_endpoint):
    import boto3

    client = boto3.client("ec2", endpoint_url=moto_endpoint, region_name="us-east-1", **CREDS)
    return moto_endpoint, client


def test_vertical_resize_grows_volume_and_filesystem(stack, loop_disk, ec2):
    image, device = loop_disk
    endpoint, client = ec2
    # From a snapshot: moto leaves SnapshotId out of volumes made without one (AWS sends ""),
    # which amazon.aws.ec2_vol_info cannot read.
    seed = client.create_volume(Size=1, AvailabilityZone="us-east-1a")["VolumeId"]
    snapshot = client.create_snapshot(VolumeId=seed)["SnapshotId"]
    volume_id = client.create_volume(Size=10, AvailabilityZone="us-east-1a", SnapshotId=snapshot)[
        "VolumeId"
    ]

    def volume_size() -> int:
        return client.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]["Size"]

    # Fault: the disk grew underneath the filesystem.
    subprocess.run(["truncate", "-s", f"{160 * MIB}", image], check=True)
    sh("losetup", "-c", device)
    before = fs_bytes(device)
    assert before == 64 * MIB

    extra = {
        "resize_volume_id": volume_id,
        "resize_volume_size": 20,
        "resize_ec2_endpoint_url": endpoint,
        "resize_access_key": CREDS["aws_access_key_id"],
        "resize_secret_key": CREDS["aws_secret_access_key"],
        "resize_grow_path": device,
        "resize_maintenance_ttl": "10m",
    }

    def snapshot():
        return fs_bytes(device), volume_size(), admin("maintenance", "status")["enabled"]

    try:
        state = snapshot()
        preview = playbook("vertical_scaling.yml", extra_vars=extra, check=True)
        assert preview.changed >= 1, preview.out[-3000:]
        assert snapshot() == state, "check mode resized something or left maintenance on"

        run = playbook("vertical_scaling.yml", extra_vars=extra)
        assert CREDS["aws_secret_access_key"] not in run.out
        assert "Put the API in maintenance" in run.out and "Lift maintenance mode" in run.out
        after = fs_bytes(device)
        assert 150 * MIB < after <= 160 * MIB, f"filesystem is {after} bytes"
        assert volume_size() == 20
        assert admin("maintenance", "status")["enabled"] is False
        status, body = http("GET", "/health")
        assert status == 200, body
        sh("e2fsck", "-f", "-n", device)  # the grown filesystem is clean

        second = assert_second_run_changes_nothing("vertical_scaling.yml", extra_vars=extra)
        assert "nothing to do" in second.out
    finally:
        admin("maintenance", "off")


def test_nothing_to_resize_is_refused_without_a_target(stack):
    run = playbook("vertical_scaling.yml", expect_rc=2)
    assert "say what to resize" in run.out
