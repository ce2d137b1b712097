"""render.to_json is json.dumps(indent=2), byte for byte: the command line's JSON is orchesjob's."""

from __future__ import annotations

import json
import math
import random

import pytest

from remote_agent.frontends.render import to_json

CASES = [
    None, True, False, 0, -1, 2**70, "", "plain", "é\u2028\x00\x1f\"\\/\ud800 \U0001f600", 1.5, -0.0,
    math.nan, math.inf, {}, [], (), {"a": {}}, {"a": []}, [[]], [{}], {"a": [1, {"b": None}]},
    {1: "int key", "x": 2}, {True: 1}, {None: 0}, {2.5: "float key"}, (1, (2, 3)),
    {"job_id": "x", "exit_code": None, "ok": True, "nested": {"deeper": [1, "two", {"three": 3.0}]}},
]


@pytest.mark.parametrize("value", CASES, ids=[repr(c)[:40] for c in CASES])
def test_same_bytes_as_json_dumps_indent_2(value) -> None:
    assert to_json(value) == json.dumps(value, indent=2)


def test_random_nested_documents() -> None:
    rng = random.Random(7)

    def make(depth: int):
        kind = rng.randrange(8 if depth < 4 else 5)
        if kind == 0:
            return rng.choice([None, True, False])
        if kind == 1:
            return rng.randint(-10**20, 10**20)
        if kind == 2:
            return "".join(chr(rng.choice([rng.randrange(32, 127), rng.randrange(0, 0x3000)]))
                           for _ in range(rng.randrange(6)))
        if kind == 3:
            return rng.random() * 1e6
        if kind == 4:
            return ""
        if kind in (5, 6):
            return {str(make(depth + 1)) if rng.random() < .9 else rng.randrange(9): make(depth + 1)
                    for _ in range(rng.randrange(5))}
        return [make(depth + 1) for _ in range(rng.randrange(5))]

    for _ in range(2000):
        doc = make(0)
        assert to_json(doc) == json.dumps(doc, indent=2)


def test_what_json_refuses_is_refused_alike() -> None:
    for bad in ({"a": object()}, [set()], {(1, 2): "tuple key"}):
        with pytest.raises(TypeError):
            json.dumps(bad, indent=2)
        with pytest.raises(TypeError):
            to_json(bad)
