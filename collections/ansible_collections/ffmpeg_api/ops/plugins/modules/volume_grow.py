#!/usr/bin/python
# Copyright: FFmpeg API Ops team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: volume_grow
short_description: Grow a partition and its ext4 or XFS filesystem to fill a disk that grew
description:
  - The host-side half of the runbook's C(aws ec2 modify-volume). Once the disk is bigger, grows
    the partition holding the filesystem (C(growpart)) when the filesystem is on a partition,
    then the filesystem itself (C(resize2fs) for ext2/3/4, C(xfs_growfs) for XFS).
  - Mounted ext4 grows online; an unmounted ext4 is checked (C(e2fsck -f -p)) and grown offline.
    XFS must be mounted.
  - Nothing to grow (the filesystem already fills its device) reports no change.
version_added: "1.0.0"
author:
  - FFmpeg API Ops team (@ffmpeg-api-ops)
options:
  path:
    description:
      - The filesystem to grow, by mount point (C(/var/lib/ffmpeg-api)) or block device
        (C(/dev/nvme1n1p1), C(/dev/loop3)).
    type: path
    required: true
  slack:
    description:
      - Bytes of the device the filesystem may leave unused and still count as full (filesystems
        do not use a last partial block group).
    type: int
    default: 4194304
attributes:
  check_mode:
    support: full
    description: Measures and asks C(growpart --dry-run); grows nothing.
  diff_mode:
    support: full
    description: Shows the filesystem size before and after.
  idempotent:
    support: full
    description: A filesystem that already fills its device is left alone.
requirements:
  - e2fsprogs for ext filesystems, xfsprogs for XFS, and cloud-guest-utils (C(growpart)) when the
    filesystem is on a partition.
"""

EXAMPLES = r"""
- name: Grow the storage filesystem after the EBS volume was enlarged
  ffmpeg_api.ops.volume_grow:
    path: /var/lib/ffmpeg-api
  register: grown

- name: Report the new size
  ansible.builtin.debug:
    msg: "{{ grown.size_before }} -> {{ grown.size_after }} bytes"
"""

RETURN = r"""
device:
  description: The block device holding the filesystem.
  returned: always
  type: str
  sample: /dev/nvme1n1p1
fstype:
  description: The filesystem type.
  returned: always
  type: str
  sample: ext4
mount_point:
  description: Where the filesystem is mounted, or null.
  returned: always
  type: str
partition_grown:
  description: Whether the partition was (or would be) grown.
  returned: always
  type: bool
filesystem_grown:
  description: Whether the filesystem was (or would be) grown.
  returned: always
  type: bool
size_before:
  description: Filesystem size in bytes before the run.
  returned: always
  type: int
size_after:
  description: Filesystem size in bytes after the run (in check mode, the size it would reach).
  returned: always
  type: int
device_size:
  description: Size of the device in bytes (after growing the partition).
  returned: always
  type: int
"""

import os
import re

from ansible.module_utils.basic import AnsibleModule

EXT = ("ext2", "ext3", "ext4")


def parse_dumpe2fs(text):
    """Filesystem bytes from `dumpe2fs -h` output."""
    count = re.search(r"^Block count:\s+(\d+)", text, re.M)
    size = re.search(r"^Block size:\s+(\d+)", text, re.M)
    if not (count and size):
        raise ValueError("no block count/size in dumpe2fs output")
    return int(count.group(1)) * int(size.group(1))


def parse_xfs_info(text):
    """Data section bytes from `xfs_info` output (data = bsize=4096 blocks=N)."""
    match = re.search(r"^data\s+=\s+bsize=(\d+)\s+blocks=(\d+)", text, re.M)
    if not match:
        raise ValueError("no data section in xfs_info output")
    return int(match.group(1)) * int(match.group(2))


def partition_of(device):
    """(parent disk device, partition number) when device is a partition, else None."""
    name = os.path.basename(os.path.realpath(device))
    sys_dir = "/sys/class/block/%s" % name
    part_file = os.path.join(sys_dir, "partition")
    if not os.path.exists(part_file):
        return None
    with open(part_file) as fh:
        number = int(fh.read().strip())
    parent = os.path.basename(os.path.dirname(os.path.realpath(sys_dir)))
    return "/dev/%s" % parent, number


class Volume(object):
    def __init__(self, module):
        self.module = module

    def run(self, argv, check_rc=True, **kwargs):
        rc, out, err = self.module.run_command(argv, **kwargs)
        if check_rc and rc != 0:
            self.module.fail_json(
                msg="%s failed: %s" % (" ".join(argv), (err or out).strip()), rc=rc
            )
        return rc, out, err

    def locate(self, path):
        """(device, fstype, mount point or None)."""
        findmnt = self.module.get_bin_path("findmnt", required=True)
        if os.path.isdir(path):
            _, out, _ = self.run([findmnt, "-n", "-o", "SOURCE,FSTYPE", "--target", path])
            device, fstype = out.split()[:2]
            rc, mnt, _ = self.run(
                [findmnt, "-n", "-o", "TARGET", "--source", device], check_rc=False
            )
            return (
                device,
                fstype,
                (mnt.splitlines()[0].strip() if rc == 0 and mnt.strip() else path),
            )
        blkid = self.module.get_bin_path("blkid", required=True)
        rc, out, _ = self.run([blkid, "-o", "value", "-s", "TYPE", path], check_rc=False)
        if rc != 0 or not out.strip():
            self.module.fail_json(msg="%s holds no filesystem blkid recognises" % path)
        rc, mnt, _ = self.run([findmnt, "-n", "-o", "TARGET", "--source", path], check_rc=False)
        return path, out.strip(), (mnt.splitlines()[0].strip() if rc == 0 and mnt.strip() else None)

    def device_size(self, device):
        blockdev = self.module.get_bin_path("blockdev", required=True)
        return int(self.run([blockdev, "--getsize64", device])[1].strip())

    def fs_size(self, device, fstype, mount_point):
        if fstype in EXT:
            dumpe2fs = self.module.get_bin_path("dumpe2fs", required=True)
            return parse_dumpe2fs(self.run([dumpe2fs, "-h", device])[1])
        xfs_info = self.module.get_bin_path("xfs_info", required=True)
        return parse_xfs_info(self.run([xfs_info, mount_point])[1])

    def partition_needs_growing(self, disk, number):
        growpart = self.module.get_bin_path("growpart", required=True)
        rc, out, err = self.run([growpart, "--dry-run", disk, str(number)], check_rc=False)
        if rc == 0:
            return True
        if "NOCHANGE" in out + err:
            return False
        self.module.fail_json(
            msg="growpart --dry-run %s %s failed: %s" % (disk, number, (err or out).strip())
        )

    def grow_partition(self, disk, number):
        growpart = self.module.get_bin_path("growpart", required=True)
        self.run([growpart, disk, str(number)])

    def grow_fs(self, device, fstype, mount_point):
        if fstype in EXT:
            if mount_point is None:
                e2fsck = self.module.get_bin_path("e2fsck", required=True)
                # resize2fs refuses an unmounted filesystem not checked since its last mount.
                rc, out, err = self.run([e2fsck, "-f", "-p", device], check_rc=False)
                if rc not in (0, 1):
                    self.module.fail_json(
                        msg="e2fsck -f -p %s found problems: %s" % (device, (err or out).strip()),
                        rc=rc,
                    )
            self.run([self.module.get_bin_path("resize2fs", required=True), device])
        else:
            self.run([self.module.get_bin_path("xfs_growfs", required=True), "-d", mount_point])


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            slack=dict(type="int", default=4 * 1024 * 1024),
        ),
        supports_check_mode=True,
    )
    p = module.params
    if not os.path.exists(p["path"]):
        module.fail_json(msg="%s does not exist" % p["path"])
    vol = Volume(module)
    device, fstype, mount_point = vol.locate(p["path"])
    if fstype not in EXT + ("xfs",):
        module.fail_json(msg="%s holds %s; only ext2/3/4 and xfs can be grown" % (device, fstype))
    if fstype == "xfs" and mount_point is None:
        module.fail_json(msg="XFS grows only while mounted; mount %s first" % device)

    part = partition_of(device)
    partition_grown = bool(part) and vol.partition_needs_growing(*part)
    if partition_grown and not module.check_mode:
        vol.grow_partition(*part)
    size_before = vol.fs_size(device, fstype, mount_point)
    device_size = vol.device_size(device)
    # In check mode the partition has not grown yet: a partition that would grow means the
    # filesystem would too.
    filesystem_grown = partition_grown or device_size - size_before > p["slack"]
    size_after = size_before
    if filesystem_grown:
        if module.check_mode:
            size_after = device_size if not partition_grown else vol.device_size(part[0])
        else:
            vol.grow_fs(device, fstype, mount_point)
            size_after = vol.fs_size(device, fstype, mount_point)
    result = dict(
        changed=bool(partition_grown or filesystem_grown),
        device=device,
        fstype=fstype,
        mount_point=mount_point,
        partition_grown=partition_grown,
        filesystem_grown=filesystem_grown,
        size_before=size_before,
        size_after=size_after,
        device_size=device_size,
    )
    if module._diff:
        result["diff"] = dict(
            before="%s: %d bytes\n" % (device, size_before),
            after="%s: %d bytes\n" % (device, size_after),
        )
    module.exit_json(**result)


if __name__ == "__main__":
    main()
