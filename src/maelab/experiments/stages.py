"""Resumable stages of an experiment: ``OUT/<state>.json`` holds the settings and every finished stage.

The file is ``{"settings": {...}, "stages": {name: result}, "computed": {name: {call, finished, git_commit, machine}}}``
(when, at which git commit and on which machine each stage was computed; ``stages_computed`` where the state file is
also the report's metrics.json, as the compare's), rewritten atomically after each stage, so an
experiment stopped at any point (Ctrl-C, a crash, a lost machine) is continued by running it again with
the same settings: finished stages are read back, not redone. Running it with other settings is refused
with the keys that differ, since mixing the two would report numbers that no single setting produced.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from maelab.config import ConfigError, config_dict_with_defaults, config_differences
from maelab.eval.results import write_json

T = TypeVar("T")


def _as_json(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists), so stored and new settings compare equal."""
    return json.loads(json.dumps(value))


def _drop(settings: dict[str, Any], dotted: str) -> None:
    """Remove the key at ``a.b.c`` from nested dicts (absent: nothing to do)."""
    *parents, last = dotted.split(".")
    for key in parents:
        settings = settings.get(key) if isinstance(settings.get(key), dict) else {}
    settings.pop(last, None)


class Stages:
    """The state file of one experiment: its settings and the results of its finished stages.

    ``config_keys``: settings entries that hold a ``Config.to_dict()``; ``option_defaults``: settings
    entries that hold an options dataclass, with its defaults. In a file written by an older maelab,
    options added since take their defaults, so an upgrade does not block a resume. ``ignore``:
    dotted settings keys that may change between runs (e.g. ``pretrain.train.quiet``); they are not
    stored. ``what`` names the experiment in the error (e.g. "a sweep"). ``computed_key``: the key of the ``computed``
    records (``stages_computed`` where the state file is the report's metrics.json; a record kept under
    ``computed`` by an older maelab is moved there). ``device``: the experiment's ``--device`` (auto, cpu, cuda...),
    for the machine its stages record (:func:`~maelab.runtime.machine_text`: the GPU's name where CUDA).
    """

    def __init__(
        self, path: Path, settings: dict[str, Any], what: str, config_keys: Sequence[str] = (),
        option_defaults: dict[str, dict[str, Any]] | None = None, ignore: Sequence[str] = (),
        computed_key: str = "computed", device: str = "cpu",
    ) -> None:  # fmt: skip
        self.path = Path(path)
        # When this call of the experiment began: results (e.g. speeds) measured in different calls saw the
        # machine in different states, so stages can say which call produced them.
        self.call = time.strftime("%Y-%m-%dT%H:%M:%S")
        self.commit: str | None = None  # the git commit of this call, read when it first records a stage
        self.config_keys, self.option_defaults, self.ignore = tuple(config_keys), option_defaults or {}, tuple(ignore)
        self.computed_key, self.device = computed_key, device
        now = self._normalized(settings)
        if not self.path.is_file():
            self.data: dict[str, Any] = {"settings": now, "stages": {}}
            self.save()
            return
        try:
            old = json.loads(self.path.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"{self.path}: not valid JSON ({e}); delete it to start {what} afresh") from e
        if "settings" not in old:  # sweep.json before stages were recorded: the settings alone
            old = {"settings": old, "stages": {}}
        stored = self._normalized(old["settings"])
        if stored != now:
            diff = config_differences(stored, now)
            raise ConfigError(
                f"{self.path.parent} holds {what} with other settings ({'; '.join(diff[:6])}; in {self.path}); "
                "re-run it with its own settings to continue it, or pass another --out"
            )
        self.data = {**old, "settings": now}
        if computed_key != "computed" and "computed" in self.data:  # kept under the default key by an older maelab
            self.data.setdefault(computed_key, self.data.pop("computed"))

    def _normalized(self, settings: dict[str, Any]) -> dict[str, Any]:
        """JSON-equal settings with the options they predate filled in and the ignored keys dropped."""
        out = _as_json(settings)
        for key in self.config_keys:
            if isinstance(out.get(key), dict):
                out[key] = config_dict_with_defaults(out[key], str(self.path))
        for key, defaults in self.option_defaults.items():
            if isinstance(out.get(key), dict):
                out[key] = {**_as_json(defaults), **out[key]}
        for dotted in self.ignore:
            _drop(out, dotted)
        return out

    def get(self, name: str) -> Any:
        """The stored result of stage ``name``, or None when it has not finished."""
        return self.data["stages"].get(name)

    def put(self, name: str, value: T) -> T:
        """Record stage ``name`` as finished with ``value`` (JSON-able), and when, at which git commit and on which
        machine this call computed it (``computed``), and rewrite the file; returns ``value``."""
        from maelab.runtime import git_commit, machine_text

        if self.commit is None:
            self.commit = git_commit()
        self.data["stages"][name] = value
        record = {"call": self.call, "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "git_commit": self.commit,
                  "machine": machine_text(self.device)}  # fmt: skip
        self.data.setdefault(self.computed_key, {})[name] = record
        self.save()
        return value

    def computed(self) -> dict[str, dict[str, str] | None]:
        """{stage name: its ``computed`` record (call, finished, git_commit, machine: the last absent where an older
        maelab recorded it)}, None for a stage recorded by an older maelab (which kept no such record)."""
        record = self.data.get(self.computed_key) or {}
        return {name: record.get(name) for name in self.data["stages"]}

    def once(self, name: str, compute: Callable[[], T]) -> T:
        """The stored result of stage ``name``, or ``compute()`` recorded as it (the stage runs once)."""
        done = self.get(name)
        return done if done is not None else self.put(name, compute())

    def save(self) -> None:
        """Rewrite the file atomically (a crash leaves the previous version, never half a file)."""
        write_json(self.path, self.data)


NAMES_SHOWN = 3  # stage names listed per machine in the warning of :func:`machines_text`; the rest are counted


def _stage_names(names: list[str]) -> str:
    """``stage a`` or ``stages a, b, c and 2 more``: the stages of one machine, the first few by name."""
    more = f" and {len(names) - NAMES_SHOWN} more" if len(names) > NAMES_SHOWN else ""
    return f"stage{'s' * (len(names) > 1)} {', '.join(names[:NAMES_SHOWN])}{more}"


def machines_text(computed: dict[str, dict[str, str] | None] | None) -> str:
    """What the records of :meth:`Stages.computed` say of the machines their stages ran on, for :func:`computed_span`:
    ``; **stages ran on N machines: A (stages x, y), B (stage z)**: timings across them are not comparable`` where
    they name several, and ``; machine recorded for K of M stages only[: A]`` where other dated records name none (an
    older maelab; undated ones are counted by the span); "" where they name one machine (a report's Hardware line
    names its machine) or none."""
    records = computed or {}
    stages: dict[str, list[str]] = {}  # {machine: its stages}, the machines in the order of their first stage
    for name, record in records.items():
        if record and record.get("machine"):
            stages.setdefault(record["machine"], []).append(name)
    text = ""
    if len(stages) > 1:
        listed = ", ".join(f"{machine} ({_stage_names(names)})" for machine, names in stages.items())
        text = f"; **stages ran on {len(stages)} machines: {listed}**: timings across them are not comparable"
    if stages and any(record and not record.get("machine") for record in records.values()):
        named = sum(len(names) for names in stages.values())
        text += f"; machine recorded for {named} of {len(records)} stages only"
        text += f": {next(iter(stages))}" if len(stages) == 1 else ""
    return text


def computed_span(computed: dict[str, dict[str, str] | None] | None) -> str | None:
    """The words ``stages computed <first> - <last> (git commit C)`` of :meth:`Stages.computed` (the
    ``stages_computed`` of a metrics.json), with how many stages predate that record and a warning where they ran on
    several machines (:func:`machines_text`); None where none has it."""
    known = [c for c in (computed or {}).values() if c]
    if not known:
        return None
    times = sorted(c["finished"] for c in known)
    commits = sorted({c["git_commit"] for c in known})
    text = f"stages computed {times[0]} - {times[-1]} (git commit{'s' * (len(commits) > 1)} {', '.join(commits)})"
    missing = len(computed or {}) - len(known)
    text += f"; {missing} of {len(computed or {})} stages older, undated" if missing else ""
    return text + machines_text(computed)
