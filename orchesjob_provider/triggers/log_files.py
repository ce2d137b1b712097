"""Where a try's trigger log files are on this machine, and what a trigger learns from them.

Airflow 3's triggerer writes the lines of a try's trigger to ``<task log>.trigger.<triggerer job
id>.log`` under ``[logging] base_log_folder`` (one file per triggerer that ran it, JSON lines).
A trigger reads them to go on where the task's logs really are (triggers/log_lines.py says why):
where it starts (:func:`resume_from_files`) and, before its event, whether its own lines reached
its file (:func:`settled_offsets`). Anything that does not fit (Airflow 2's text files, a log
folder this triggerer cannot see, a custom file name template) says nothing: the trigger then
starts from the offsets the task deferred with and trusts its own writes, as before.
"""

from __future__ import annotations

import asyncio
import glob
import os
import time
from typing import Any

from orchesjob_provider.triggers.log_lines import LineFeed, Run, resume_point, run_of, runs_in
from orchesjob_provider.version_compat import AIRFLOW_V_3_0_PLUS

#: the most of a file read (a trigger log larger than this is read from its start only)
READ_MAX = 64 * 1024 * 1024
#: how long a trigger waits, before its event, for its own lines to reach its file
SETTLE_SECONDS = 5.0


def trigger_log_files(ti: Any) -> list[str] | None:
    """The trigger log files of ``ti``'s try on this machine; None where that cannot be known."""
    if ti is None or not AIRFLOW_V_3_0_PLUS:  # Airflow 2 writes text: nothing to count in it
        return None
    try:
        from airflow.configuration import conf
        from airflow.utils.helpers import log_filename_template_renderer

        base = conf.get("logging", "base_log_folder")
        task_log = os.path.join(os.path.expanduser(base), log_filename_template_renderer()(ti=ti))
    except Exception:  # not in a triggerer, another Airflow, a template this ti cannot render
        return None
    return sorted(glob.glob(glob.escape(task_log) + ".trigger.*.log"))


def read_runs(paths: list[str], job_id: str) -> tuple[list[Run], bool]:
    """Every run of ``job_id`` in ``paths`` (unreadable files are skipped), and whether any of
    them held JSON records at all."""
    runs: list[Run] = []
    records = False
    for path in paths:
        try:
            with open(path, "rb") as f:
                records = runs_in(f.read(READ_MAX).splitlines(), job_id, runs) or records
        except OSError:
            continue
    return runs, records


async def _read(ti: Any, job_id: str) -> tuple[list[Run], bool] | None:
    """Off the triggerer's event loop: a glob and a few file reads (None: no files to know of)."""

    def read() -> tuple[list[Run], bool] | None:
        paths = trigger_log_files(ti)
        return None if paths is None else read_runs(paths, job_id)

    return await asyncio.get_running_loop().run_in_executor(None, read)


async def resume_from_files(
    ti: Any, job_id: str, deferred: dict[str, int]
) -> tuple[dict[str, int], dict[str, int]]:
    """Where a trigger starts writing the job's log: ``(offsets, pieces to skip)``."""
    found = await _read(ti, job_id)
    return resume_point(found[0] if found else [], deferred)


async def settled_offsets(ti: Any, job_id: str, feed: LineFeed, token: str) -> dict[str, int]:
    """The offsets for the event: where the task's logs hold the job's log. The triggerer closes a
    trigger's file when the trigger ends and drops lines not read yet; so wait (up to
    :data:`SETTLE_SECONDS`) until the file holds every piece this trigger wrote, else go back to
    the last piece it holds: the task prints the rest."""
    if feed.first is None:
        return feed.offsets
    deadline = time.monotonic() + SETTLE_SECONDS
    countable = False  # any read met a record: the files are Airflow 3's and here
    count: dict[str, int] = {}
    while True:
        found = await _read(ti, job_id)
        if found is None:  # another Airflow, no task instance: trust the writes
            return feed.offsets
        runs, records = found
        countable = countable or records
        run = run_of(runs, token)
        count = run.count if run is not None else count  # the file only grows
        if all(count.get(s, 0) >= n for s, n in feed.written.items()):
            return feed.offsets
        if time.monotonic() >= deadline:
            # no file here to count in (a log folder elsewhere, another format): trust the writes
            return feed.step_back(count) if countable else feed.offsets
        await asyncio.sleep(0.1)
