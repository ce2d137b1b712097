"""``@task.orchesjob``: a TaskFlow function that returns the command an OrchesjobOperator runs.

Like standard's ``@task.bash``: the decorated function runs in the worker at the start of every
try and returns the command (an argv list, or a string run by ``/bin/sh -c``); every other
operator parameter (``ssh_conn_id``, ``env``, ``strict``, ``deferrable``, ``wait`` ...) is a
decorator argument. The run key is the operator's (``af/<dag>/<task>/<map_index>/<run_id>``
unless given), so a retry resumes the same remote job even though the function runs again:
what the function returns on a retry matters only when a new attempt is really started.

Registered with Airflow through ``get_provider_info()["task-decorators"]`` (name ``orchesjob``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, ClassVar

from orchesjob_provider.decorators.compat import (
    SET_DURING_EXECUTION,
    DecoratedOperator,
    TaskDecorator,
    context_merge,
    determine_kwargs,
    task_decorator_factory,
)
from orchesjob_provider.operators.orchesjob import OrchesjobOperator
from orchesjob_provider.operators.validation import bad, validate_command
from orchesjob_provider.version_compat import Context

# A valid command (with or without shell=) for the operator's parse-time check; the sentinel
# replaces it right after.
_PLACEHOLDER = "orchesjob-command-set-during-execution"


class _OrchesjobDecoratedOperator(DecoratedOperator, OrchesjobOperator):
    """Runs the TaskFlow callable in ``execute`` and the command it returns through the agent.

    :param python_callable: returns the command: a list of str (argv) or a non-empty str.
    :param op_args: positional arguments for the callable (templated).
    :param op_kwargs: keyword arguments for the callable (templated).
    """

    template_fields: Sequence[str] = (*DecoratedOperator.template_fields, *OrchesjobOperator.template_fields)
    template_fields_renderers: ClassVar[dict[str, str]] = {
        **DecoratedOperator.template_fields_renderers,
        **OrchesjobOperator.template_fields_renderers,
    }
    custom_operator_name: str = "@task.orchesjob"
    # Airflow 3: store the rendered fields again after execute, so the UI shows the real command.
    overwrite_rtif_after_execution: bool = True

    def __init__(
        self,
        *,
        python_callable: Callable,
        op_args: Collection[Any] | None = None,
        op_kwargs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        # The callable returns the command, not the XCom: the XCom is the operator's job record.
        if kwargs.pop("multiple_outputs", None):
            warnings.warn(
                f"`multiple_outputs=True` is not supported in {self.custom_operator_name} tasks. Ignoring.",
                UserWarning,
                stacklevel=3,
            )
        if "command" in kwargs:
            raise bad("@task.orchesjob: the decorated function returns the command; do not pass command=")
        super().__init__(
            python_callable=python_callable,
            op_args=op_args,
            op_kwargs=op_kwargs,
            command=_PLACEHOLDER,
            multiple_outputs=False,
            **kwargs,
        )
        self.command = SET_DURING_EXECUTION  # type: ignore[assignment]  # shown as such until execute sets the real one

    def execute(self, context: Context) -> Any:
        context_merge(context, self.op_kwargs)
        kwargs = determine_kwargs(self.python_callable, self.op_args, context)
        command = self.python_callable(*self.op_args, **kwargs)
        if isinstance(command, tuple):
            command = list(command)
        # Not rendered as a Jinja template (unlike @task.bash on Airflow 3): the function already
        # builds the command in Python with the context at hand, and rendering would mangle
        # shell text such as ``${#files[@]}`` (``{#`` opens a Jinja comment).
        try:
            validate_command(command, self.shell)
        except Exception as e:
            raise TypeError(
                "The @task.orchesjob function must return a non-empty str or a list of str "
                f"(the command): {e}"
            ) from None
        self.command = command
        return super().execute(context)


def orchesjob_task(python_callable: Callable | None = None, **kwargs: Any) -> TaskDecorator:
    """Wrap a function returning a command into an :class:`OrchesjobOperator` (``@task.orchesjob``).

    :param python_callable: the function to decorate.
    :param kwargs: the operator's parameters other than ``command``.
    """
    return task_decorator_factory(
        python_callable=python_callable,
        decorated_operator_class=_OrchesjobDecoratedOperator,
        **kwargs,
    )
