# Installs the agent bundle on the target, sent as
#   `python3 -I -S -c <this> SHA256 ~/.orchesjob/agent KEEP [LAUNCH]` with the bundle (a zip) on stdin.
#
# Standard library only, valid on CPython 3.6. What it guarantees:
# * ~/.orchesjob and ~/.orchesjob/agent are real directories owned by this user; one that is
#   group/other-writable gets mode 0700 back (everything under it is then re-verified). A foreign
#   ~/.orchesjob is refused with a message saying what to do; a foreign (or non-directory)
#   ~/.orchesjob/agent inside our own ~/.orchesjob is moved aside and made again.
# * agent-<sha16>/ is trusted only if every file of its MANIFEST is there, a regular file owned by
#   this user, not writable by others, with the right sha256, and no other file sits beside them
#   (only bytecode under __pycache__/, and this interpreter's must load: right magic, a header
#   that matches its source, a body that unmarshals). A damaged or foreign directory is moved aside (its name
#   gets .broken.<pid>) and installed again.
# * A new install is unpacked into a temporary sibling, precompiled by this interpreter, every file
#   and directory fsynced, then renamed into place (atomic; a concurrent deploy of the same bundle
#   simply finds the result verified).
# * Leftovers of failed deploys (*.tmp.*, *.broken.*) older than 10 minutes are removed, and of
#   the other agent versions only the KEEP - 1 most recently deployed are kept, plus any deployed
#   within a week (a long job's supervisor may still import from its version's directory).
# * With LAUNCH (launch.py's text, what every call runs first): ~/.orchesjob/bin/orchesjob, a
#   launcher a person can type, is (re)written to run this agent through LAUNCH's checks, unless it
#   already runs a newer agent version that is still there. Written to a temporary name (0700) and
#   renamed over the old one (atomic); ~/.orchesjob/bin is a 0700 directory of this user.
# Exit 0 and one line "orchesjob-deploy: <installed|repaired|verified> <dir>" on stdout; else
# exit 1 and "orchesjob-deploy: <why>" on stderr.
import compileall
import hashlib
import io
import os
import re
import shutil
import sys
import tempfile
import time
import zipfile

MYPY = False
if MYPY:
    from typing import Dict, List, NoReturn, Optional, Tuple  # noqa: F401

STALE_SECONDS = 600
KEEP_YOUNGER_THAN = 7 * 24 * 3600


def _fail(message):
    # type: (str) -> NoReturn
    sys.stderr.write("orchesjob-deploy: %s\n" % message)
    sys.exit(1)


def _private_dir(path, uid, replaceable=False):
    # type: (str, int, bool) -> bool
    """Make sure ``path`` is our own directory, mode 0700; True if its mode had to be fixed.

    A foreign or non-directory ``path`` is refused, or if ``replaceable`` (its parent is ours and
    private) moved aside and made again."""
    try:
        os.mkdir(path, 0o700)
        return False
    except FileExistsError:
        pass
    except OSError as exc:
        _fail("cannot create %s: %s" % (path, exc.strerror or exc))
    st = os.lstat(path)
    if replaceable and ((st.st_mode & 0o170000) != 0o040000 or st.st_uid != uid):
        sys.stderr.write("orchesjob-deploy: replacing %s (not our own directory)\n" % path)
        try:
            os.rename(path, "%s.broken.%d" % (path, os.getpid()))
        except FileNotFoundError:
            pass  # a concurrent deploy moved it first
        return _private_dir(path, uid)
    if (st.st_mode & 0o170000) != 0o040000:
        _fail("%s is not a directory (a symlink or a file); remove it" % path)
    if st.st_uid != uid:
        _fail("%s is owned by uid %d, not by this user (uid %d): refusing to run code from it; "
              "remove it or let its owner do so" % (path, st.st_uid, uid))
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)
        return True
    return False


def _manifest(data):
    # type: (bytes) -> Dict[str, Tuple[str, int]]
    """{path: (sha256, size)} from a MANIFEST's bytes."""
    out = {}
    for line in data.decode("utf-8").splitlines():
        digest, size, name = line.split(" ", 2)
        out[name] = (digest, int(size))
    return out


def _bytecode_ok(pyc):
    # type: (str) -> bool
    """False if ``pyc`` is this interpreter's bytecode and would not load as its source's: a
    wrong magic, a header that no longer matches the source (mtime and size), or a body that
    does not unmarshal. Another interpreter's bytecode is only checked for its owner and mode."""
    tag = getattr(sys.implementation, "cache_tag", None)
    name = os.path.basename(pyc)
    if not tag or not name.endswith("." + tag + ".pyc"):
        return True
    import importlib.util
    import marshal

    source = os.path.join(os.path.dirname(os.path.dirname(pyc)), name[:-len(tag) - 5] + ".py")
    try:
        with open(pyc, "rb") as f:
            data = f.read()
        st = os.stat(source)
    except OSError:
        return False
    if data[:4] != importlib.util.MAGIC_NUMBER:
        return False
    if sys.version_info < (3, 7):  # no flags word before PEP 552
        data = data[:4] + b"\0\0\0\0" + data[4:]
    if len(data) < 16:
        return False
    flags = int.from_bytes(data[4:8], "little")
    if flags == 0:  # timestamp-based: the source's mtime and size
        if (int.from_bytes(data[8:12], "little") != int(st.st_mtime) & 0xFFFFFFFF
                or int.from_bytes(data[12:16], "little") != st.st_size & 0xFFFFFFFF):
            return False
    elif flags == 3:  # checked hash (compileall under SOURCE_DATE_EPOCH; 3.7+)
        source_hash = getattr(importlib.util, "source_hash", None)
        with open(source, "rb") as f:
            if source_hash is None or source_hash(f.read()) != data[8:16]:
                return False
    else:  # an unchecked hash would load whatever the source says: never written by a deploy
        return False
    try:
        marshal.loads(data[16:])
    except (EOFError, ValueError, TypeError):
        return False
    return True


def _problem(agent_dir, uid):
    # type: (str, int) -> Optional[str]
    """Why ``agent_dir`` cannot be trusted, or None if it can."""
    try:
        st = os.lstat(agent_dir)
        if (st.st_mode & 0o170000) != 0o040000 or st.st_uid != uid or st.st_mode & 0o022:
            return "directory not owned by this user, or writable by others"
        with open(os.path.join(agent_dir, "MANIFEST"), "rb") as f:
            files = _manifest(f.read())
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        return "no readable MANIFEST (%s)" % exc
    compiled = []  # type: List[Tuple[str, str]]
    try:
        for root, dirs, names in os.walk(agent_dir):
            rel_root = os.path.relpath(root, agent_dir)
            for name in dirs + names:
                path = os.path.join(root, name)
                rel = os.path.normpath(os.path.join(rel_root, name)).replace(os.sep, "/")
                st = os.lstat(path)
                if st.st_uid != uid or st.st_mode & 0o022 or (st.st_mode & 0o170000) == 0o120000:
                    return "%s is not owned by this user, is writable by others, or is a symlink" % rel
                bytecode = os.path.basename(root) == "__pycache__" and name.endswith(".pyc")
                if bytecode:
                    compiled.append((rel, path))
                if name in dirs or rel in files or rel == "MANIFEST" or bytecode:
                    continue
                return "unexpected file %s" % rel
    except OSError as exc:
        return "unreadable (%s)" % exc
    for rel, (digest, size) in files.items():
        try:
            with open(os.path.join(agent_dir, rel), "rb") as f:
                content = f.read()
        except OSError:
            return "missing %s" % rel
        if len(content) != size or hashlib.sha256(content).hexdigest() != digest:
            return "damaged %s" % rel
    for rel, path in compiled:  # the sources are right: is their bytecode?
        if not _bytecode_ok(path):
            return "damaged bytecode %s" % rel
    return None


def _fsync_tree(top):
    # type: (str) -> None
    for root, _dirs, names in os.walk(top, topdown=False):
        for name in names:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fd = os.open(root, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _remove(path):
    # type: (str) -> None
    shutil.rmtree(path, ignore_errors=True)


#: what a deploy leaves beside the agent versions after a crash: directories it moved aside in
#: ~/.orchesjob, and the launcher's temporary files in ~/.orchesjob/bin
LEFTOVERS = {"": re.compile(r"^(agent|bin)\.broken\.\d+$"), "bin": re.compile(r"^orchesjob\.tmp\.")}


def _prune_leftovers(top, now):
    # type: (str, float) -> None
    """Remove stale leftovers (older than STALE_SECONDS) in ~/.orchesjob and its bin/; a symlink
    or file is unlinked, never followed."""
    for sub, pattern in LEFTOVERS.items():
        folder = os.path.join(top, sub) if sub else top
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            path = os.path.join(folder, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if not pattern.match(name) or now - st.st_mtime <= STALE_SECONDS:
                continue
            if (st.st_mode & 0o170000) == 0o040000:
                _remove(path)
            else:
                try:
                    os.unlink(path)
                except OSError:
                    pass


def _prune(base, current, keep):
    # type: (str, str, int) -> None
    now = time.time()
    _prune_leftovers(os.path.dirname(base), now)
    versions = []  # type: List[Tuple[float, str]]
    for name in os.listdir(base):
        path = os.path.join(base, name)
        try:
            mtime = os.lstat(path).st_mtime
        except OSError:
            continue
        if ".tmp." in name or ".broken." in name:
            if now - mtime > STALE_SECONDS:
                _remove(path)
        elif name.startswith("agent-") and path != current:
            versions.append((mtime, path))
    versions.sort(reverse=True)
    for mtime, path in versions[max(0, keep - 1):]:
        if now - mtime > KEEP_YOUNGER_THAN:
            _remove(path)


def _version(agent_dir):
    # type: (str) -> Tuple[int, ...]
    """The agent version in ``agent_dir`` as numbers ((): unreadable or absent)."""
    try:
        with open(os.path.join(agent_dir, "remote_agent", "__init__.py")) as f:
            found = re.search(r"__version__ = ['\"]([0-9.]+)", f.read())
    except (OSError, UnicodeDecodeError):
        return ()
    return tuple(int(x) for x in found.group(1).split(".") if x) if found else ()


def _quote(text):
    # type: (str) -> str
    return "'" + text.replace("'", "'\"'\"'") + "'"


def _launcher(base, final, uid, launch):
    # type: (str, str, int, str) -> None
    """Point ~/.orchesjob/bin/orchesjob at ``final`` unless it runs a newer agent still there."""
    bin_dir = os.path.join(os.path.dirname(base), "bin")
    _private_dir(bin_dir, uid, replaceable=True)
    path = os.path.join(bin_dir, "orchesjob")
    mine = _version(final)
    try:
        with open(path) as f:
            current = re.search(r"^# agent-dir: (.*)$", f.read(), re.M)
        other = current.group(1) if current else ""
    except (OSError, UnicodeDecodeError):
        other = ""
    if other and other != final and os.path.isdir(other) and _version(other) > mine:
        return  # a newer agent deployed by another provider keeps the launcher
    text = (
        "#!/bin/sh\n"
        "# orchesjob launcher, written by the orchesjob provider's deploy: runs the newest agent\n"
        "# deployed here, after the same ownership and integrity checks as every Airflow call.\n"
        "# agent-version: %s\n"
        "# agent-dir: %s\n"
        "exec %s -I -S -c %s %s \"$@\"\n"
    ) % (".".join(str(x) for x in mine), final, _quote(sys.executable), _quote(launch), _quote(final))
    # a new file of an unpredictable name (O_EXCL, never through a symlink planted at a name)
    fd, tmp = tempfile.mkstemp(prefix="orchesjob.tmp.", dir=bin_dir)
    try:
        os.fchmod(fd, 0o700)
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)


def _main():
    # type: () -> None
    os.umask(0o077)
    sha, base, keep = sys.argv[1], os.path.expanduser(sys.argv[2]), int(sys.argv[3])
    launch = sys.argv[4] if len(sys.argv) > 4 else None
    data = sys.stdin.buffer.read()
    if hashlib.sha256(data).hexdigest() != sha:
        _fail("agent upload corrupted (%d bytes, sha256 mismatch)" % len(data))
    uid = os.getuid()
    loosened = _private_dir(os.path.dirname(base), uid)
    loosened = _private_dir(base, uid, replaceable=True) or loosened
    final = os.path.join(base, "agent-" + sha[:16])
    outcome = "installed"
    if os.path.lexists(final):
        why = _problem(final, uid)
        if why is None:
            os.utime(final)
            _prune(base, final, keep)
            if launch:
                _launcher(base, final, uid, launch)
            print("orchesjob-deploy: verified %s" % final)
            return
        sys.stderr.write("orchesjob-deploy: repairing %s: %s%s\n" % (
            final, why, " (its parent was writable by others)" if loosened else ""))
        aside = "%s.broken.%d" % (final, os.getpid())
        try:
            os.rename(final, aside)
        except FileNotFoundError:
            pass  # a concurrent deploy moved it first
        _remove(aside)
        outcome = "repaired"
    tmp = "%s.tmp.%d" % (final, os.getpid())
    try:
        zipfile.ZipFile(io.BytesIO(data)).extractall(tmp)
        compileall.compile_dir(tmp, quiet=2)
        _fsync_tree(tmp)
        os.rename(tmp, final)
    except OSError as exc:
        _remove(tmp)
        if os.path.isdir(final) and _problem(final, uid) is None:
            outcome = "verified"  # a concurrent deploy of the same bundle won the rename
        else:
            _fail("cannot install %s: %s" % (final, exc.strerror or exc))
    fd = os.open(base, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    _prune(base, final, keep)
    if launch:
        _launcher(base, final, uid, launch)
    print("orchesjob-deploy: %s %s" % (outcome, final))


if __name__ == "__main__":  # `python3 -c` runs this text as __main__
    _main()
