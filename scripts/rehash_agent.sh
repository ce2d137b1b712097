#!/usr/bin/env bash
# Re-record the unreleased agent version's sources hash in tests/unit/agent/test_version.py
# after a change to remote_agent/ (the test fails until then, so that a released version's
# sources never change unnoticed). Run from the repo root.
set -euo pipefail
py=${PYTHON:-.venvs/af3/bin/python}
version=$($py -c 'import remote_agent; print(remote_agent.__version__)')
digest=$($py -c 'import sys; sys.path.insert(0, "tests/unit/agent"); from test_version import sources_sha256; print(sources_sha256())')
sed -i -E "s/^(    \"${version//./\\.}\": \")[0-9a-f]{64}(\",)/\1${digest}\2/" tests/unit/agent/test_version.py
grep -n "\"$version\"" tests/unit/agent/test_version.py
