"""The remote scripts (orchesjob_provider/remote/) run locally under a temporary HOME, exactly
as the hooks send them: deploy.py with the bundle on stdin, launch.py (+ the bundle's
orchesjob_boot.py) in front of every call. No sshd needed."""

from __future__ import annotations

import importlib.machinery
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchesjob_provider.bundle import BOOTSTRAP_SCRIPT, DEPLOY_KEEP, DEPLOY_SCRIPT, get_bundle
from orchesjob_provider.client.wire import REDEPLOY_EXIT, is_missing_agent

PYTHON = os.environ.get("AGENT_PYTHON") or sys.executable
#: the bytecode tag of the interpreter that runs the agent (AGENT_PYTHON may differ from ours)
TAG = subprocess.run([PYTHON, "-c", "import sys; print(sys.implementation.cache_tag)"],
                     capture_output=True, text=True, check=True).stdout.strip()
NOBODY = 65534
BUNDLE = get_bundle()


DEPLOY_ARGV = [PYTHON, "-I", "-S", "-c", DEPLOY_SCRIPT, BUNDLE.sha256, "~/.orchesjob/agent", str(DEPLOY_KEEP)]


def deploy(home: Path, data: bytes | None = None) -> subprocess.CompletedProcess:
    """As deploy_command runs it (the hook quotes the ~/ path; the script expands it)."""
    return subprocess.run(DEPLOY_ARGV, input=BUNDLE.data if data is None else data, capture_output=True,
                          env=dict(os.environ, HOME=str(home)), timeout=120)


def call(home: Path) -> subprocess.CompletedProcess:
    """A ping through the bootstrap, as rpc_command runs it (the shell expands the ~)."""
    return subprocess.run(
        [PYTHON, "-I", "-S", "-c", BOOTSTRAP_SCRIPT, str(agent_dir(home)), "rpc"],
        input=b'{"op": "ping", "home": "%s"}' % str(home / "state").encode(), capture_output=True,
        env=dict(os.environ, HOME=str(home)), timeout=60)


def agent_dir(home: Path) -> Path:
    return home / ".orchesjob" / "agent" / BUNDLE.file_name


def outcome(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 0, r.stderr
    line = r.stdout.decode().strip().splitlines()[-1]
    assert line.startswith("orchesjob-deploy: ") and line.endswith(str(BUNDLE.file_name)), line
    return line.split()[1]


def assert_works(home: Path) -> None:
    r = call(home)
    assert r.returncode == 0 and b'"ok": true' in r.stdout, r.stderr


def assert_redeploy(home: Path, why: bytes) -> None:
    r = call(home)
    assert r.returncode == REDEPLOY_EXIT and is_missing_agent(r.returncode, r.stdout, r.stderr), r
    assert why in r.stderr, r.stderr


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    return h


@pytest.fixture
def installed(home: Path) -> Path:
    assert outcome(deploy(home)) == "installed"
    return home


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_fresh_install_is_private_and_runs(home: Path) -> None:
    assert_redeploy(home, b"No such file")  # nothing deployed yet
    assert outcome(deploy(home)) == "installed"
    assert mode(home / ".orchesjob") == mode(home / ".orchesjob" / "agent") == mode(agent_dir(home)) == 0o700
    assert_works(home)
    assert not [p for p in agent_dir(home).parent.iterdir() if p.name != BUNDLE.file_name]


def test_a_verified_directory_is_reused_not_reinstalled(installed: Path) -> None:
    inode = agent_dir(installed).stat().st_ino
    assert outcome(deploy(installed)) == "verified"
    assert agent_dir(installed).stat().st_ino == inode
    assert_works(installed)


def test_a_corrupted_upload_is_refused(home: Path) -> None:
    r = deploy(home, data=BUNDLE.data[:-10])
    assert r.returncode == 1 and b"orchesjob-deploy: agent upload corrupted" in r.stderr
    assert not agent_dir(home).exists()


@pytest.mark.parametrize("damage", ["empty", "missing"])
def test_an_empty_or_missing_file_makes_calls_redeploy_and_deploy_repairs(installed: Path, damage: str):
    victim = agent_dir(installed) / "remote_agent" / "frontends" / "rpc.py"
    if damage == "empty":
        victim.write_bytes(b"")  # a crash or a full disk during a deploy
        assert_redeploy(installed, b"wrong size")
    else:
        victim.unlink()
        assert_redeploy(installed, b"missing")
    r = deploy(installed)
    assert outcome(r) == "repaired" and b"remote_agent/frontends/rpc.py" in r.stderr
    assert_works(installed)


def test_an_extra_planted_module_is_repaired(installed: Path) -> None:
    planted = agent_dir(installed) / "remote_agent" / "sitecustom.py"
    planted.write_text("raise SystemExit('planted')\n")
    assert outcome(deploy(installed)) == "repaired"
    assert not planted.exists()
    assert_works(installed)


def test_a_group_writable_agent_dir_is_refused_by_calls_and_repaired(installed: Path) -> None:
    os.chmod(agent_dir(installed), 0o775)
    os.chmod(installed / ".orchesjob", 0o777)
    assert_redeploy(installed, b"not a directory of this user that only it can write")
    r = deploy(installed)
    assert outcome(r) == "repaired" and b"writable by others" in r.stderr
    assert mode(installed / ".orchesjob") == mode(agent_dir(installed)) == 0o700
    assert_works(installed)


def as_root() -> None:
    if os.geteuid() != 0:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("chown to nobody needs root; CI runs this suite as root")
        pytest.skip("chown to nobody needs root")


def chown_tree(path: Path, uid: int) -> None:
    for root, dirs, files in os.walk(path):
        for name in [root] + [os.path.join(root, n) for n in dirs + files]:
            os.lchown(name, uid, uid)


def test_an_agent_dir_owned_by_another_user_is_never_run_and_is_replaced(installed: Path) -> None:
    as_root()
    chown_tree(agent_dir(installed), NOBODY)
    assert_redeploy(installed, b"not a directory of this user")
    assert outcome(deploy(installed)) == "repaired"
    assert agent_dir(installed).stat().st_uid == os.getuid()
    assert_works(installed)
    # and likewise ~/.orchesjob/agent itself, inside our own ~/.orchesjob
    chown_tree(installed / ".orchesjob" / "agent", NOBODY)
    assert outcome(deploy(installed)) == "installed"
    assert (installed / ".orchesjob" / "agent").stat().st_uid == os.getuid()
    assert_works(installed)


def test_a_foreign_dot_orchesjob_is_refused_with_a_clear_message(installed: Path) -> None:
    as_root()
    chown_tree(installed / ".orchesjob", NOBODY)
    assert_redeploy(installed, b"not a directory of this user")
    r = deploy(installed)
    assert r.returncode == 1
    assert b"orchesjob-deploy: " in r.stderr and b"is owned by uid 65534, not by this user" in r.stderr
    assert (installed / ".orchesjob").stat().st_uid == NOBODY  # left alone


def test_stale_leftovers_are_pruned_fresh_ones_kept(installed: Path) -> None:
    base = agent_dir(installed).parent
    old = time.time() - 3600
    stale = [base / "agent-0123456789abcdef.tmp.11", base / "agent-0123456789abcdef.broken.12"]
    fresh = base / "agent-0123456789abcdef.tmp.13"
    for d in [*stale, fresh]:
        (d / "remote_agent").mkdir(parents=True)
    for d in stale:
        os.utime(d, (old, old))
    assert outcome(deploy(installed)) == "verified"
    assert not any(d.exists() for d in stale) and fresh.exists()


def test_leftovers_beside_the_agent_dir_are_pruned_too(installed: Path) -> None:
    """Issue 18: ~/.orchesjob/*.broken.* and bin/orchesjob.tmp.* were never pruned."""
    top = installed / ".orchesjob"
    (top / "bin").mkdir(exist_ok=True)
    old = time.time() - 3600
    stale = [top / "agent.broken.11", top / "bin.broken.12", top / "bin" / "orchesjob.tmp.13"]
    (stale[0] / "x").mkdir(parents=True)
    stale[1].mkdir()
    stale[2].write_text("#!/bin/sh\n")
    victim = installed / "victim"
    victim.write_text("keep me")
    planted = top / "bin" / "orchesjob.tmp.14"
    planted.symlink_to(victim)  # a stale symlink is unlinked, never followed
    stale.append(planted)
    fresh = top / "bin" / "orchesjob.tmp.15"
    fresh.write_text("a deploy in progress")
    mine = top / "notes.broken.1"  # not a name a deploy leaves: kept
    mine.write_text("x")
    for p in [*stale, mine]:
        os.utime(p, (old, old), follow_symlinks=False)
    assert outcome(deploy(installed)) == "verified"
    assert not any(os.path.lexists(p) for p in stale), [p for p in stale if os.path.lexists(p)]
    assert fresh.exists() and mine.exists() and victim.read_text() == "keep me"


def make_versions(base: Path, names: list[str], ages: list[float]) -> None:
    for name, age in zip(names, ages):
        (base / name).mkdir()
        t = time.time() - age
        os.utime(base / name, (t, t))


def test_only_keep_versions_are_kept_and_recent_ones_survive(installed: Path) -> None:
    base = agent_dir(installed).parent
    day = 24 * 3600
    old = [f"agent-{n:016x}" for n in range(DEPLOY_KEEP + 2)]  # newest first
    make_versions(base, old, [8 * day + 60 * n for n in range(len(old))])
    assert outcome(deploy(installed)) == "verified"
    assert sorted(p.name for p in base.iterdir()) == sorted([BUNDLE.file_name, *old[:DEPLOY_KEEP - 1]])
    # versions deployed within the week stay, however many (a long job's supervisor may use one)
    young = [f"agent-f{n:015x}" for n in range(DEPLOY_KEEP + 1)]
    make_versions(base, young, [day * (n + 1) for n in range(len(young))])
    assert outcome(deploy(installed)) == "verified"
    assert sorted(p.name for p in base.iterdir()) == sorted([BUNDLE.file_name, *young])


def test_two_concurrent_deploys_of_one_bundle_end_verified(home: Path) -> None:
    env = dict(os.environ, HOME=str(home))
    for _round in range(3):
        pipe = subprocess.PIPE
        procs = [subprocess.Popen(DEPLOY_ARGV, stdin=pipe, stdout=pipe, stderr=pipe, env=env) for _ in "ab"]
        results = [(*p.communicate(BUNDLE.data, timeout=120), p.returncode) for p in procs]
        for out, err, rc in results:
            assert rc == 0, err
            assert out.split()[1] in (b"installed", b"verified", b"repaired"), out
        assert outcome(deploy(home)) == "verified"
        assert_works(home)
        assert [p.name for p in agent_dir(home).parent.iterdir()] == [BUNDLE.file_name]
        shutil.rmtree(home / ".orchesjob")


def test_the_manifest_lists_every_other_file_of_the_bundle_with_its_sha256_and_size() -> None:
    import hashlib
    import io
    import zipfile

    from orchesjob_provider.bundle import build_bundle

    assert build_bundle().data == BUNDLE.data  # deterministic
    with zipfile.ZipFile(io.BytesIO(BUNDLE.data)) as zf:
        files = {n: zf.read(n) for n in zf.namelist()}
    lines = files.pop("MANIFEST").decode().splitlines()
    assert [ln.split(" ", 2)[2] for ln in lines] == sorted(files) and "orchesjob_boot.py" in files
    for ln in lines:
        digest, size, name = ln.split(" ", 2)
        assert (digest, int(size)) == (hashlib.sha256(files[name]).hexdigest(), len(files[name]))


# -- issue 18 item 4: the boot file and every bytecode file are checked before they are loaded --

def planted_pyc(source_of: Path, pyc: Path, marker: Path) -> None:
    """Bytecode that Python loads for ``source_of`` whatever the source says (an unchecked-hash
    .pyc, PEP 552), and that creates ``marker`` when it runs: what a group member could plant."""
    import py_compile

    evil = pyc.parent / "evil_src.py"
    evil.write_text(f"open({str(marker)!r}, 'w').close()\n")
    pyc.parent.mkdir(exist_ok=True)
    py_compile.compile(str(evil), cfile=str(pyc), doraise=True,
                       invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
    evil.unlink()
    os.chmod(pyc, 0o666)


@pytest.mark.skipif(sys.version_info < (3, 7), reason="unchecked-hash .pyc files are 3.7+")
@pytest.mark.parametrize("where", ["boot", "agent"])
def test_a_group_writable_pyc_is_never_loaded_and_deploy_repairs_it(
        installed: Path, tmp_path: Path, where: str) -> None:
    tag = TAG
    base = agent_dir(installed)
    src = base / "orchesjob_boot.py" if where == "boot" else base / "remote_agent" / "frontends" / "rpc.py"
    pyc = src.parent / "__pycache__" / f"{src.stem}.{tag}.pyc"
    marker = tmp_path / "ran"
    planted_pyc(src, pyc, marker)
    assert_redeploy(installed, f"{pyc}".encode())  # a module every call loads: refused
    assert not marker.exists()  # the planted bytecode never ran
    r = deploy(installed)
    assert outcome(r) == "repaired", r.stderr
    assert_works(installed)
    assert not marker.exists()


def test_a_group_writable_boot_file_is_never_imported(installed: Path, tmp_path: Path) -> None:
    boot = agent_dir(installed) / "orchesjob_boot.py"
    marker = tmp_path / "ran"
    shutil.rmtree(agent_dir(installed) / "__pycache__", ignore_errors=True)
    boot.write_text(f"open({str(marker)!r}, 'w').close()\n" + boot.read_text())
    os.chmod(boot, 0o664)
    assert_redeploy(installed, f"not a file of this user that only it can write: {boot}".encode())
    assert not marker.exists()
    assert outcome(deploy(installed)) == "repaired"
    assert_works(installed)
    assert not marker.exists()


def test_a_damaged_pyc_of_our_own_is_repaired_by_deploy(installed: Path) -> None:
    tag = TAG
    pyc = agent_dir(installed) / "remote_agent" / "frontends" / "__pycache__" / f"rpc.{tag}.pyc"
    data = pyc.read_bytes()
    pyc.write_bytes(data[: len(data) // 2])  # cut: a crash or a full disk
    r = deploy(installed)
    assert outcome(r) == "repaired", r.stderr
    assert b"damaged bytecode remote_agent/frontends/__pycache__/rpc." in r.stderr
    # whole again by deploy's own verification (not by comparing bytes: the header holds the
    # source's mtime, and co_filename the temporary directory's name, whose length varies)
    assert pyc.read_bytes()[:4] == data[:4] and outcome(deploy(installed)) == "verified"
    assert_works(installed)


# -- the boot file's finder: a call loads only what the MANIFEST lists, each file checked as
# -- it is loaded (bootstrap.py), so a call pays for the modules it uses, not for all of them

@pytest.mark.skipif(sys.version_info < (3, 7), reason="unchecked-hash .pyc files are 3.7+")
def test_a_planted_pyc_of_a_module_the_call_does_not_load_never_runs_and_is_repaired(
        installed: Path, tmp_path: Path) -> None:
    src = agent_dir(installed) / "remote_agent" / "ops" / "clean.py"  # a ping never loads it
    pyc = src.parent / "__pycache__" / f"{src.stem}.{TAG}.pyc"
    marker = tmp_path / "ran"
    planted_pyc(src, pyc, marker)
    assert_works(installed)
    assert not marker.exists()
    r = deploy(installed)
    assert outcome(r) == "repaired", r.stderr
    assert_works(installed)
    assert not marker.exists()


@pytest.mark.parametrize("plant", ["package", "extension"])
def test_a_module_the_manifest_does_not_list_is_never_loaded(installed: Path, tmp_path: Path,
                                                            plant: str) -> None:
    """Python's own finder would prefer a package directory ``rpc/`` (and an extension module)
    to ``rpc.py``; the boot file's finder looks modules up in the MANIFEST only."""
    marker = tmp_path / "ran"
    frontends = agent_dir(installed) / "remote_agent" / "frontends"
    if plant == "package":
        (frontends / "rpc").mkdir(mode=0o700)
        planted = frontends / "rpc" / "__init__.py"
    else:
        planted = frontends / ("rpc" + importlib.machinery.EXTENSION_SUFFIXES[0])
    planted.write_text(f"open({str(marker)!r}, 'w').close()\n")
    os.chmod(planted, 0o600)
    assert_works(installed)
    assert not marker.exists()
    assert outcome(deploy(installed)) == "repaired"
    assert not planted.exists()


def test_a_cut_source_of_a_loaded_module_is_refused(installed: Path) -> None:
    """Bytecode is trusted only beside a source of the MANIFEST's size: a cut source (a full disk)
    is caught even though its bytecode is intact."""
    victim = agent_dir(installed) / "remote_agent" / "frontends" / "rpc.py"
    stat_before = victim.stat()
    victim.write_bytes(victim.read_bytes()[:-1])
    os.utime(victim, ns=(stat_before.st_atime_ns, stat_before.st_mtime_ns))
    assert_redeploy(installed, b"wrong size")
    assert outcome(deploy(installed)) == "repaired"
    assert_works(installed)


def test_the_boot_file_finds_the_public_importlib_names_too(installed: Path, tmp_path: Path) -> None:
    """Without CPython's private _frozen_importlib_external it uses importlib's public names,
    with the same checks (a planted package is still never loaded)."""
    marker = tmp_path / "ran"
    planted = agent_dir(installed) / "remote_agent" / "frontends" / "rpc"
    planted.mkdir(mode=0o700)
    (planted / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    code = ("import sys, importlib.machinery, importlib.util\n"  # loaded while the private one is there
            "sys.modules.pop('_frozen_importlib_external')\n" + BOOTSTRAP_SCRIPT)
    r = subprocess.run([PYTHON, "-I", "-S", "-c", code, str(agent_dir(installed)), "rpc"],
                       input=b'{"op": "ping", "home": "%s"}' % str(installed / "state").encode(),
                       capture_output=True, env=dict(os.environ, HOME=str(installed)), timeout=60)
    assert r.returncode == 0 and b'"ok": true' in r.stdout, r.stderr
    assert not marker.exists()
