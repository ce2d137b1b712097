"""testkit.airflow_stack's user actions (clear, mark) against a stub of the REST API, in process.

What the e2e cases rely on: the request shapes of Airflow 3's clearTaskInstances (dry_run false:
the API's default is a dry run that changes nothing) and the task-instance PATCH, the retry
while the API server answers HTTP 500 "Database error" (SQLite busy, rolled back), and no retry
of any other error.
"""
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from testkit.airflow_stack import AirflowStack, StackError


class _Stub:
    def __init__(self, answers):
        self.answers = list(answers)  # (status, body) per request; the last one repeats
        self.requests = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"null")
                stub.requests.append((self.command, self.path, body))
                status, out = stub.answers.pop(0) if len(stub.answers) > 1 else stub.answers[0]
                raw = json.dumps(out).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            do_POST = do_PATCH = _answer

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


DB_ERROR = (500, {"detail": {"reason": "Database error", "message": "Serious error"}})


def _stack(tmp_path, port):
    return AirflowStack(str(tmp_path / "home"), api_port=port)


def test_clear_task_sends_a_real_clear_of_one_task(tmp_path):
    with _Stub([(200, {"task_instances": [], "total_entries": 1})]) as stub:
        _stack(tmp_path, stub.server.server_port).clear_task("d", "r1", "t")
    [(method, path, body)] = stub.requests
    assert (method, path) == ("POST", "/api/v2/dags/d/clearTaskInstances")
    assert body["dry_run"] is False and body["only_failed"] is False and body["only_running"] is False
    assert body["task_ids"] == ["t"] and body["dag_run_id"] == "r1" and body["reset_dag_runs"] is True
    includes = ("include_upstream", "include_downstream", "include_future", "include_past")
    assert not any(body[k] for k in includes)


def test_mark_task_patches_the_new_state(tmp_path):
    with _Stub([(200, {})]) as stub:
        _stack(tmp_path, stub.server.server_port).mark_task("d", "r1", "t", "failed")
    assert stub.requests == [("PATCH", "/api/v2/dags/d/dagRuns/r1/taskInstances/t", {"new_state": "failed"})]


def test_database_errors_are_retried(tmp_path):
    with _Stub([DB_ERROR, DB_ERROR, (200, {"ok": True})]) as stub:
        out = _stack(tmp_path, stub.server.server_port).mark_task("d", "r1", "t", "failed")
    assert out == {"ok": True} and len(stub.requests) == 3


def test_other_errors_are_not_retried_and_say_what_the_api_answered(tmp_path):
    with _Stub([(404, {"detail": "Task instance not found"})]) as stub:
        with pytest.raises(StackError, match=r"HTTP 404: .*Task instance not found"):
            _stack(tmp_path, stub.server.server_port).clear_task("d", "r1", "t")
    assert len(stub.requests) == 1


def test_database_errors_give_up_after_the_attempts(tmp_path):
    with _Stub([DB_ERROR]) as stub:
        with pytest.raises(StackError, match="Database error"):
            _stack(tmp_path, stub.server.server_port).api_write("POST", "/api/v2/x", {}, attempts=2)
    assert len(stub.requests) == 2
