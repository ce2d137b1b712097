"""Scripts the hook runs on the target with ``python3 -I -S -c`` (stdlib only, CPython 3.6+)."""
