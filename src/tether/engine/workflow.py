"""Workflows: their registration, their stored input, and one execution of their code.

A run's input is stored as `{"args": [...], "kwargs": {...}}`, encoded by each value's
runtime type and decoded by the workflow's parameter annotations, so the code receives the
same typed values on the first execution and on every resumption. The input hash (of the
JSON, before any codec) is what makes starting an existing id with other input an error.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import inspect
import json
import typing
from collections.abc import Callable
from typing import Any

from tether.codec import Codec, adapter, run_place
from tether.engine import failures
from tether.engine.context import Execution, current
from tether.errors import (
    ConfigError,
    LeaseLostError,
    NonDeterminismError,
    SerializationError,
    StoreUnavailableError,
    WorkflowArgumentError,
)
from tether.status import Status

Outcome = tuple[Status, bytes | None, bytes | None]
"""How a run ended: (status, encoded output, encoded error)."""

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


@dataclasses.dataclass(slots=True)
class WorkflowSpec:
    """A registered workflow function."""

    name: str
    fn: Callable[..., Any]
    is_async: bool
    version: str | None = None
    timeout: float | None = None
    _hints: dict[str, Any] | None = dataclasses.field(default=None, repr=False)
    _signature: inspect.Signature | None = dataclasses.field(default=None, repr=False)

    @property
    def signature(self) -> inspect.Signature:
        """The function's signature, with string annotations evaluated where possible."""
        if self._signature is None:
            try:
                self._signature = inspect.signature(self.fn, eval_str=True)
            except Exception:
                self._signature = inspect.signature(self.fn)
        return self._signature

    @property
    def hints(self) -> dict[str, Any]:
        """The function's resolved annotations (on first use, so forward references work)."""
        if self._hints is None:
            try:
                self._hints = typing.get_type_hints(self.fn)
            except Exception as exc:
                raise ConfigError(
                    f"cannot resolve the type hints of workflow {self.name!r}: {exc}; make the "
                    "names in its annotations importable from its module"
                ) from exc
        return self._hints

    @property
    def returns(self) -> Any:
        """The declared type of the workflow's result."""
        return self.hints.get("return", Any)

    def encode_input(
        self, codec: Codec, args: tuple[Any, ...], kwargs: dict[str, Any], run_id: str
    ) -> tuple[bytes, str]:
        """Check the arguments against the signature and encode them: (payload, input hash).

        Raises:
            WorkflowArgumentError: the arguments do not fit the signature.
            SerializationError: an argument cannot be stored.
        """
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise WorkflowArgumentError(
                f"workflow {self.name!r} cannot be called with these arguments: {exc}; its "
                f"signature is {self.name}{_display(self.signature)}"
            ) from None
        try:
            data = codec.to_json(
                {"args": list(bound.args), "kwargs": bound.kwargs}, f"the input of {self.name!r}"
            )
        except SerializationError:
            for name, value in bound.arguments.items():  # name the argument at fault
                codec.to_json(value, f"argument {name!r} of workflow {self.name!r}")
            raise
        digest = hashlib.sha256(data).hexdigest()
        where = run_place(run_id, "input")
        return codec.seal(data, f"the input of workflow {self.name!r}", where), digest

    def decode_input(
        self, codec: Codec, payload: bytes, run_id: str
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Decode run `run_id`'s stored input into the arguments to call the function with."""
        what = f"the input of workflow {self.name!r}"
        raw = json.loads(codec.open(payload, what, run_place(run_id, "input")))
        params = list(self.signature.parameters.values())
        positional = [p for p in params if p.kind in _POSITIONAL]
        var_args = next((p for p in params if p.kind == inspect.Parameter.VAR_POSITIONAL), None)
        var_kw = next((p for p in params if p.kind == inspect.Parameter.VAR_KEYWORD), None)
        by_name = {p.name: p for p in params}
        args = []
        for i, value in enumerate(raw["args"]):
            param = positional[i] if i < len(positional) else var_args
            args.append(self._validate(param, value, what))
        kwargs = {
            key: self._validate(by_name.get(key, var_kw), value, what)
            for key, value in raw["kwargs"].items()
        }
        return tuple(args), kwargs

    def _validate(self, param: inspect.Parameter | None, value: Any, what: str) -> Any:
        annotation = Any if param is None else self.hints.get(param.name, Any)
        try:
            return adapter(annotation).validate_python(value)
        except Exception as exc:
            name = param.name if param else "?"
            raise SerializationError(
                f"argument {name!r} in {what} does not fit its annotation {annotation!r}: {exc}"
            ) from None


def _display(signature: inspect.Signature) -> str:
    return str(signature).replace("<class '", "").replace("'>", "")


async def execute(ex: Execution, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Outcome:
    """Run the workflow's code to its end and return how it ended.

    `LeaseLostError` and `Abandoned` propagate: the run is no longer this worker's to end.
    """
    spec = ex.spec
    value: Any = None
    error: BaseException | None = None
    try:
        if spec.is_async:
            token = current.set(ex)
            try:
                value = await spec.fn(*args, **kwargs)
            finally:
                current.reset(token)
        else:
            loop = asyncio.get_running_loop()
            value = await loop.run_in_executor(
                ex.worker.workflow_threads, _run_sync, ex, args, kwargs
            )
    except Exception as exc:
        error = exc
    if ex.fatal is not None:
        error = ex.fatal
    elif error is None and ex.journal:
        first = min(ex.journal)
        error = NonDeterminismError(
            ex.run_id, first, ex.journal[first].name, "no step (the workflow returned first)"
        )
    if isinstance(error, LeaseLostError | StoreUnavailableError):
        raise error  # the run is not this execution's to end: lost, or its writes refused
    codec = ex.worker.codec
    if error is not None:
        return failed(codec, ex.run_id, error)
    try:
        where = run_place(ex.run_id, "output")
        output = codec.encode(value, f"the result of workflow {spec.name!r}", where)
    except SerializationError as exc:
        return failed(codec, ex.run_id, exc)
    return Status.SUCCEEDED, output, None


def failed(codec: Codec, run_id: str, error: BaseException) -> Outcome:
    """The outcome of run `run_id` failed with `error`, its record sealed for the run's row."""
    return Status.FAILED, None, failures.seal_error(codec, error, run_place(run_id, "error"))


def _run_sync(ex: Execution, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    token = current.set(ex)
    try:
        return ex.spec.fn(*args, **kwargs)
    finally:
        current.reset(token)
