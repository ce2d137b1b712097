"""Every change to the agent changes the version it reports (``remote_agent.__version__``).

The table holds, for each released agent version, the sha256 of its sources. When the
sources change, this test fails until the version is bumped and the new hash is recorded,
so two different agents never report one version (the schema's ``agent_schema`` table, the
provider's logs and ``orchesjob --version`` all name agents by it). The agent itself never
hashes anything: the rule is enforced here, at development time.
"""

import hashlib
from pathlib import Path

import remote_agent

AGENT_DIR = Path(remote_agent.__file__).resolve().parent

#: version -> sha256 of the agent's sources (see ``sources_sha256``); append, never edit an entry
#: once that version has been released (landed on main).
RELEASED = {
    "0.2.0": "8df61c6d17fa74a40be2620e63c5d90819a2d4982ef4f92f0436e89dee9c5c0d",
    "0.3.0": "2b3f0dc39e35d280eb15339f75f373cbc65ecd9323210e494c2ac8b3731d1f84",
    "0.4.0": "582679db655cf4ac602ade6cc49ca94a1c99ece3e8ea1fa92eceab48b625c652",
    "0.5.0": "21263386cd514dcb90110f44e263661f1da9d3b9adbda67c7db8a7140048e267",
}


def sources_sha256() -> str:
    """sha256 over every .py file of remote_agent/, by sorted relative path: name and bytes."""
    h = hashlib.sha256()
    for path in sorted(AGENT_DIR.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        rel = path.relative_to(AGENT_DIR).as_posix()
        data = path.read_bytes()
        h.update(b"%s\0%d\0" % (rel.encode(), len(data)))
        h.update(data)
    return h.hexdigest()


def test_the_agent_version_changes_with_its_sources() -> None:
    version, digest = remote_agent.__version__, sources_sha256()
    recorded = RELEASED.get(version)
    assert recorded == digest, (
        f"remote_agent changed (sources sha256 {digest}) but still calls itself {version}"
        f" (recorded for {recorded}). Bump __version__ in remote_agent/__init__.py and add"
        f" '<new version>': '{digest}' to RELEASED in {__file__}.")


def test_each_recorded_version_names_one_source_tree() -> None:
    assert len(set(RELEASED.values())) == len(RELEASED)
