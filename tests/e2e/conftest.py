"""e2e plumbing: the shared real stack of every e2e case (fixture ``events``), and a record of
whether a test's call phase failed."""
import pytest


@pytest.fixture(scope="session")
def events(sshd):
    """One Airflow 3 stack running every case of events_runner.CASES at once (one thread each).

    Yields (stack, {name: Case}); a test calls events_runner.check_case(events, name)."""
    from events_runner import running_cases  # tests/e2e is on sys.path (pytest's rootdir-relative import)

    with running_cases(sshd) as ev:
        yield ev


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call":
        item.rep_call_failed = rep.failed
