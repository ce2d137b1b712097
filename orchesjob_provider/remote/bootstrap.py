# The agent bundle's orchesjob_boot.py: loaded by launch.py (the -c text of every call) from the
# agent directory once that directory is known to be ours, and run as main(agent_dir).
#
# Standard library only, valid on CPython 3.6, and cheap: it runs on every call. It installs an
# import finder for the agent's package that loads only what the bundle's MANIFEST lists, and
# only once it is this user's and nobody else could have written it:
#
# * a module is looked up in the MANIFEST, never in the directories (so no listdir, and a
#   planted file - an extension module, a bytecode file without its source, a module the
#   MANIFEST does not list - is never loaded);
# * its source must be a regular file of this user that group and others cannot write, with
#   the MANIFEST's size (by the lstat Python makes anyway; a crash or a full disk during a
#   deploy leaves empty, cut or missing files), and so must its package directory;
# * the bytecode Python loads instead is checked by fstat of the very file it reads (and its
#   __pycache__ directory once); a source being compiled likewise.
#
# So a call pays for the modules it loads (a status about 16 of the bundle's 48), not for all of
# them (docs/development/benchmarks.md). Anything wrong ends the call before that code runs, with
# exit code 86 and one line on stderr; the hook then deploys again, which verifies every sha256
# and the bytecode, and repairs or refuses (deploy.py).
import os
import sys

MYPY = False
if MYPY:
    from typing import Any, Dict, NoReturn, Optional  # noqa: F401

REDEPLOY = 86
_DIR, _FILE = 0o040000, 0o100000


def _stop(message):
    # type: (str) -> NoReturn
    sys.stderr.write("orchesjob-agent-redeploy: %s\n" % message)
    sys.stderr.flush()  # block-buffered when not a tty before 3.9, and os._exit does not flush
    os._exit(REDEPLOY)


def _check(path, kind, uid, st=None):
    # type: (str, int, int, Optional[os.stat_result]) -> os.stat_result
    """``path`` (or its stat ``st``) is a ``kind`` (_DIR/_FILE) of ``uid`` that group and others
    cannot write; lstat: a symlink is refused, never followed."""
    if st is None:
        try:
            st = os.lstat(path)
        except OSError:
            _stop("missing %s" % path)
    if (st.st_mode & 0o170000) != kind:
        _stop("not a %s: %s" % ("directory" if kind == _DIR else "regular file", path))
    if st.st_uid != uid:
        _stop("unsafe: %s is owned by uid %d, not %d" % (path, st.st_uid, uid))
    if st.st_mode & 0o022:
        _stop("unsafe: %s is writable by group or others (mode %o)" % (path, st.st_mode & 0o7777))
    return st


def _listed_size(manifest, rel):
    # type: (str, str) -> Optional[int]
    """The size the MANIFEST ("<sha256> <size> <path>" lines) gives ``rel``, None if unlisted.
    A substring search, not a parse: a call looks up a few of its lines."""
    end = manifest.find(" " + rel + "\n")
    if end < 0:
        return None
    return int(manifest[manifest.rfind(" ", 0, end) + 1:end])


def _install_finder(agent_dir, manifest, uid):
    # type: (str, str, int) -> None
    """Put the bundle's finder first on sys.meta_path (see the top of this file)."""
    external = sys.modules.get("_frozen_importlib_external")  # loaded at start-up: no import
    if external is not None:
        base, spec_from_file_location = external.SourceFileLoader, external.spec_from_file_location
    else:  # not CPython's layout: the public names
        from importlib.machinery import SourceFileLoader as base
        from importlib.util import spec_from_file_location
    checked_dirs = set()  # type: set

    def check_dir(path):
        # type: (str) -> None
        if path not in checked_dirs:
            _check(path, _DIR, uid)
            checked_dirs.add(path)

    class CheckedLoader(base):  # type: ignore[misc,valid-type]
        size = -1  # the source's size in the MANIFEST, set by the finder

        def check(self, path, st):
            # type: (str, os.stat_result) -> None
            _check(path, _FILE, uid, st)
            if path == self.path and st.st_size != self.size:
                _stop("damaged: %s has the wrong size" % path)

        def exec_module(self, module):
            # type: (Any) -> None
            if self.size:
                super().exec_module(module)
            else:  # an empty __init__.py (most packages): checked, with nothing to read or run
                self.path_stats(self.path)

        def path_stats(self, path):
            # type: (str) -> Dict[str, Any]
            try:
                st = os.lstat(path)  # Python's own stat of the source, as lstat
            except OSError:
                _stop("missing %s" % path)
            self.check(path, st)
            return {"mtime": st.st_mtime, "size": st.st_size}

        def get_data(self, path):
            # type: (str) -> bytes
            with open(path, "rb") as f:  # no bytecode (OSError): Python compiles the source
                if path != self.path:
                    check_dir(os.path.dirname(path))  # its __pycache__
                self.check(path, os.fstat(f.fileno()))
                return f.read()

    class BundleFinder(object):
        @staticmethod
        def find_spec(fullname, path=None, target=None):
            # type: (str, Any, Any) -> Any
            if fullname != "remote_agent" and not fullname.startswith("remote_agent."):
                return None
            rel = fullname.replace(".", "/")
            size = _listed_size(manifest, rel + "/__init__.py")
            if size is not None:
                check_dir(agent_dir + "/" + rel)
                origin, where = agent_dir + "/" + rel + "/__init__.py", [agent_dir + "/" + rel]
            else:
                size = _listed_size(manifest, rel + ".py")
                if size is None:
                    _stop("damaged: %s is not in the agent bundle" % fullname)
                origin, where = agent_dir + "/" + rel + ".py", None
            loader = CheckedLoader(fullname, origin)
            loader.size = size
            return spec_from_file_location(fullname, origin, loader=loader,
                                           submodule_search_locations=where)

    sys.meta_path.insert(0, BundleFinder)


def main(agent_dir):
    # type: (str) -> None
    uid = os.getuid()
    path = os.path.join(agent_dir, "MANIFEST")
    try:
        with open(path, "rb") as f:
            _check(path, _FILE, uid, os.fstat(f.fileno()))
            manifest = f.read().decode("utf-8")
    except (OSError, UnicodeDecodeError):
        _stop("unreadable %s" % path)
    _install_finder(agent_dir, manifest if manifest.endswith("\n") else manifest + "\n", uid)
    argv = sys.argv[2:]
    try:
        if argv == ["rpc"]:  # the hooks' every call: the protocol without the command line's modules
            from remote_agent.frontends.rpc import serve
        else:  # a person or cron through ~/.orchesjob/bin/orchesjob
            from remote_agent.frontends.cli import main as agent_main
    except (ImportError, SyntaxError, ValueError, EOFError) as exc:  # EOFError: a cut .pyc
        _stop("damaged: cannot import the agent (%s: %s)" % (type(exc).__name__, exc))
    if argv == ["rpc"]:
        sys.exit(serve())  # as cli.main does for "rpc"
    agent_main(argv)
