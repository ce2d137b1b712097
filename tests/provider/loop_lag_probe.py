"""Run in a fresh interpreter by test_loop_lag.py and benchmarks/loop_lag_bench.py: first connect
of an async hook while a ticker measures how late the event loop wakes it (the benchmark's
number), and an audit hook records every module imported on the loop's own thread (what the
test asserts: a count load cannot change). Prints one JSON line."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time

#: modules first imported on the event loop's thread during the first connect
ON_LOOP: list[str] = []
_WATCH = {"thread": None}


def _audit(event: str, args: tuple) -> None:
    if event == "import" and _WATCH["thread"] == threading.get_ident():
        ON_LOOP.append(str(args[0]))


sys.addaudithook(_audit)


async def main(conn_id: str, state_dir: str) -> dict:
    from orchesjob_provider.hooks.async_orchesjob import AsyncOrchesjobHook

    before = "asyncssh" in sys.modules
    lags: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            t = time.perf_counter()
            await asyncio.sleep(0.002)
            lags.append(time.perf_counter() - t - 0.002)

    task = asyncio.ensure_future(ticker())
    await asyncio.sleep(0.05)
    t0 = time.perf_counter()
    _WATCH["thread"] = threading.get_ident()
    async with AsyncOrchesjobHook(conn_id, state_dir=state_dir) as hook:
        await hook.call("ping")
    _WATCH["thread"] = None
    took = time.perf_counter() - t0
    done.set()
    await task
    lags.sort()
    return {
        "asyncssh_before": before,
        "first_call_s": took,
        "lag_max_s": lags[-1],
        "lag_p99_s": lags[int(len(lags) * 0.99)],
        "ticks": len(lags),
        "imported_on_loop": ON_LOOP,
        "asyncssh_after": "asyncssh" in sys.modules,
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], sys.argv[2]))))
