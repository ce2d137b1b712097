"""e2e plumbing: the shared real stack of every e2e case (fixture ``events``), and a record of
whether a test's call phase failed."""
import pytest


def case_of(item) -> "str | None":
    """The events_runner case a collected test checks: its ``name`` parameter, or its module's
    CASE_OF_TEST entry."""
    callspec = getattr(item, "callspec", None)
    if callspec is not None and "name" in callspec.params:
        return callspec.params["name"]
    return getattr(item.module, "CASE_OF_TEST", {}).get(getattr(item, "originalname", item.name))


@pytest.fixture(scope="session")
def events(request):
    """One Airflow 3 stack running, at once (one thread each), the cases of the collected tests
    (so `-k` or one module starts only what it checks). It uses sshds of its own (see
    events_runner.running_cases), not the suite's ``sshd``.

    Yields (stack, {name: Case}); a test calls events_runner.check_case(events, name)."""
    from events_runner import running_cases  # tests/e2e is on sys.path (pytest's rootdir-relative import)

    names = sorted({n for n in (case_of(i) for i in request.session.items) if n})
    with running_cases(names) as ev:
        yield ev


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call":
        item.rep_call_failed = rep.failed
