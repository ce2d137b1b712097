"""orchesjob-compatible remote job agent (standard library only, CPython 3.6+)."""

__version__ = "0.5.0"

#: Version of the JSON protocol spoken by ``rpc``; bumped on incompatible changes.
PROTOCOL = 1
