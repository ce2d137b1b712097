"""Fast in-process tests of the agent's host identity, process-tree and exit-record modules.

Real processes and real files, no sshd: each test runs in well under a second.
"""

from __future__ import annotations

import pytest

from remote_agent.store import fstype

MOUNTINFO = r"""22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw
40 27 0:50 / /home rw,relatime - nfs4 filer:/export/home rw,vers=4.2
41 40 0:51 / /home/alice/local\040dir rw - ext4 /dev/sdb1 rw
42 27 0:52 / /mnt/sshfs rw,nosuid - fuse.sshfs user@h:/x rw
"""


def test_mountinfo_longest_prefix_wins():
    mounts = fstype.parse_mountinfo(MOUNTINFO)
    assert ("/home/alice/local dir", "ext4") in mounts  # \040 unescaped
    assert fstype.fs_type_of("/home/alice/.local/state/orchesjob", mounts) == "nfs4"
    assert fstype.fs_type_of("/home/alice/local dir/state", mounts) == "ext4"
    assert fstype.fs_type_of("/homeless/x", mounts) == "ext4"  # /home is not a prefix of /homeless
    assert fstype.fs_type_of("/mnt/sshfs/state", mounts) == "fuse.sshfs"
    assert fstype.fs_type_of("/", mounts) == "ext4"


@pytest.mark.parametrize(
    "kind, network",
    [("nfs", True), ("nfs4", True), ("cifs", True), ("fuse.sshfs", True), ("ext4", False),
     ("xfs", False), ("tmpfs", False), ("overlay", False), (None, False)],
)
def test_network_filesystems(kind, network):
    assert fstype.is_network_fs(kind) is network


def test_state_fs_type_of_a_missing_dir_is_its_parents(tmp_path):
    expected = fstype.state_fs_type(str(tmp_path))
    assert expected  # this machine has /proc/self/mountinfo
    assert fstype.state_fs_type(str(tmp_path / "not" / "yet")) == expected
