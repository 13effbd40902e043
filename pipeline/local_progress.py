"""A local run's console: one line per task, its progress bar, and its full log in a file.

kfp.local streams every task's output (its executor input as JSON, library tips, warnings) to
the console. Here each task's output goes to `<run>/logs/<task>.log` instead; the console shows
the task starting, the live last line of its output (its progress bar) on a terminal, and the
task ending with its duration and key figure, read from the JSON report each subcommand prints
last. `verbose` streams everything as kfp.local does.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

# A progress bar redraws its line with carriage returns; both end a visible line.
_LINE_END = re.compile(rb"[\r\n]")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def task_of(full_command: list[str]) -> tuple[str, Path]:
    """The task's name and its output folder, from the executor input in its command.

    Raises:
        ValueError: The command carries no executor input.
    """
    try:
        executor_input = json.loads(full_command[full_command.index("--executor_input") + 1])
    except (ValueError, IndexError) as exc:
        raise ValueError("a kfp.local task command without --executor_input") from exc
    task_dir = Path(executor_input["outputs"]["outputFile"]).parent
    return task_dir.name, task_dir


def last_json_report(text: str) -> Any:
    """The last JSON document printed at the start of a line (a subcommand's report), or None."""
    lines = text.splitlines()
    for start in range(len(lines) - 1, -1, -1):
        if lines[start] not in ("{", "[") and not lines[start].startswith(("{", "[")):
            continue
        for end in range(start, len(lines)):
            with contextlib.suppress(json.JSONDecodeError):
                return json.loads("\n".join(lines[start : end + 1]))
    return None


def _count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:.4g}"


def key_figure(task: str, report: Any) -> str:
    """The one figure a user looks at for this task, from its report."""
    if isinstance(report, list):
        return f"{len(report)} archive(s)"
    if not isinstance(report, dict):
        return ""
    if task == "tune" and isinstance(report.get("objective"), dict):
        objective = report["objective"]
        return f"best {objective.get('name')} {objective.get('value'):.4g} over {report.get('trials')} trials"
    if task == "train" and "best_epoch" in report:
        objective = next(iter(report))
        return f"{objective} {report[objective]:.4g} (best epoch {report['best_epoch'] + 1} of {report.get('epochs')})"
    if task == "evaluate" and "fc1" in report.get("metrics", {}):
        figure = f"Fc1 {report['metrics']['fc1']:.3f} at the label-free threshold"
        served = report.get("deploy", {})
        if served.get("detector", "model") != "model":
            figure += f"; serves {served['detector']} (Fc1 {served['fc1']:.3f})"
        if rule := (served.get("follow") or {}).get("rule"):
            figure += f"; the threshold follows each run ({rule} rule)"
        return figure
    if task == "deploy" and "smoke" in report:
        return f"smoke-tested (V1, V2); published to {Path(str(report.get('model_dir'))).name}/"
    # Some reports are keyed by output path: name the file, not the path.
    picked = [f"{_count(v)} {Path(k).name.replace('_', ' ')}" for k, v in report.items() if isinstance(v, int | float)]
    return ", ".join(picked[:3])


@dataclass
class TaskRecord:
    """What the console showed of one finished task."""

    name: str
    seconds: float
    ok: bool
    figure: str
    log: Path


@dataclass
class LocalRunConsole:
    """Runs kfp.local's task subprocesses with their output in log files.

    Attributes:
        pipeline_root: kfp.local's pipeline root (run folders are its children).
        verbose: Stream every line of every task, as kfp.local does.
        out: Where the console lines go.
        tasks: The tasks run so far, in order.
    """

    pipeline_root: Path
    verbose: bool = False
    out: IO[str] = field(default_factory=lambda: sys.stdout)
    tasks: list[TaskRecord] = field(default_factory=list)

    @property
    def _live(self) -> bool:
        return not self.verbose and self.out.isatty()

    def _print(self, line: str) -> None:
        if self._live:
            self.out.write("\r\x1b[2K")
        self.out.write(line + "\n")
        self.out.flush()

    def _show_progress(self, raw: bytes, width: int) -> None:
        text = _ANSI.sub("", raw.decode(errors="replace")).strip()
        if text:
            self.out.write("\r\x1b[2K    " + text[: width - 5])
            self.out.flush()

    def run_task(self, full_command: list[str], env_vars: dict[str, str] | None = None) -> int:
        """Run one task's command (kfp.local's subprocess runner signature) and return its exit code."""
        name, task_dir = task_of(full_command)
        run_dir, *groups = task_dir.relative_to(self.pipeline_root).parts[:-1]
        # Iterations of a ParallelFor run at once, each in its own folder: name them apart.
        label = name + "".join(f" [{g.rsplit('-', 1)[-1]}]" for g in groups if "-iteration-" in g)
        log_dir = self.pipeline_root / run_dir / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / f"{'.'.join([*groups, name])}.log"
        env = {**os.environ, **(env_vars or {})}
        self._print(f"  {label} ...")
        start = time.perf_counter()
        width = os.get_terminal_size(self.out.fileno()).columns if self._live else 80
        with (
            open(log_path, "wb") as log,
            subprocess.Popen(full_command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env) as process,
        ):
            assert process.stdout is not None
            pending = b""
            while chunk := process.stdout.read1(65536):
                log.write(chunk)
                if self.verbose:
                    self.out.write(chunk.decode(errors="replace"))
                    self.out.flush()
                    continue
                if self._live:
                    *done, pending = _LINE_END.split(pending + chunk)
                    shown = pending or next((d for d in reversed(done) if d.strip()), b"")
                    self._show_progress(shown, width)
            code = process.wait()
        seconds = time.perf_counter() - start
        text = log_path.read_text(errors="replace")
        ok = code == 0
        figure = key_figure(name, last_json_report(text)) if ok else ""
        self.tasks.append(TaskRecord(label, seconds, ok, figure, log_path))
        if ok:
            self._print(f"✓ {label:<18} {seconds:6.1f} s  {figure}".rstrip())
        else:
            self._print(f"✗ {label:<18} {seconds:6.1f} s  failed (exit {code}); its log: {log_path}")
            for line in text.splitlines()[-12:]:
                self._print(f"    {line}")
        return code


@contextlib.contextmanager
def quiet_kfp_local(console: LocalRunConsole) -> Iterator[None]:
    """Route kfp.local's task subprocesses through `console` and, unless it is verbose, mute
    kfp.local's per-task INFO logging (executor inputs and outputs) and separator lines."""
    from kfp.local import logging_utils, subprocess_task_handler

    patched = [(subprocess_task_handler, "run_local_subprocess", console.run_task)]
    if not console.verbose:
        patched.append((logging_utils, "print_horizontal_line", lambda: None))
        logging.disable(logging.INFO)
    originals = [(module, name, getattr(module, name)) for module, name, _ in patched]
    for module, name, replacement in patched:
        setattr(module, name, replacement)
    try:
        yield
    finally:
        for module, name, original in originals:
            setattr(module, name, original)
        logging.disable(logging.NOTSET)
