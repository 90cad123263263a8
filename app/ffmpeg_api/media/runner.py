"""Run planned ffmpeg steps: progress, cancellation, timeouts, bounded stderr.

`run_step` never blocks on a pipe: stdout (`-progress pipe:1` key=value blocks) and stderr
are multiplexed with `selectors`, so `should_cancel()` and the timeout are checked every
`poll_interval` even while ffmpeg is silent. Cancel/timeout: SIGTERM, then SIGKILL after
1 s. Every ffmpeg child gets PR_SET_PDEATHSIG=SIGKILL (`lifeline`), so it dies with the
worker even if the worker is SIGKILLed. Linux sends that signal when the *thread* that
spawned the child exits, so call `run_step` from a thread that outlives the step (e.g. the
main thread of the job process).
"""

from __future__ import annotations

import collections
import os
import re
import selectors
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ffmpeg_api import lifeline
from ffmpeg_api.media.plan import Step


class MediaError(Exception):
    """Base class of media processing failures."""


class Cancelled(MediaError):
    """The step was cancelled through `should_cancel`."""


class StepTimeout(MediaError):
    def __init__(self, stderr_tail: str = "", message: str = "ffmpeg step timed out"):
        super().__init__(message)
        self.message = message
        self.stderr_tail = stderr_tail


class FFmpegFailed(MediaError):
    def __init__(self, message: str, stderr_tail: str = "", returncode: int | None = None):
        super().__init__(message)
        self.message = message
        self.stderr_tail = stderr_tail
        self.returncode = returncode


class PictureTooLarge(FFmpegFailed):
    """A decoder met a picture over `-max_pixels` (MAX_INPUT_PIXELS), typically after the
    probed ones. ffmpeg itself only drops such pictures and may still exit 0, so the runner
    stops the step at the first one and fails it."""


# libavutil's av_image_check_size2 message when a picture is over the decoder's -max_pixels
_OVER_MAX_PIXELS = re.compile(r"Picture size (\d+)x(\d+) exceeds specified max pixel count (\d+)")


@dataclass
class StepResult:
    returncode: int
    stderr_tail: str
    elapsed: float


@dataclass
class PlanResult:
    results: list[StepResult] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    primary_output: str | None = None
    analysis: dict | None = None
    elapsed: float = 0.0
    step_names: list[str] = field(default_factory=list)
    max_log_lines: int = 200

    @property
    def result(self) -> dict | None:
        """What the worker stores as the job's `result`: the analysis, if any."""
        return self.analysis

    @property
    def stderr_tail(self) -> str:
        """ffmpeg's stderr of every step (headed by the step name), last lines only."""
        lines: list[str] = []
        for name, res in zip(self.step_names, self.results, strict=False):
            if res.stderr_tail:
                lines.append(f"== {name} ==")
                lines.extend(res.stderr_tail.splitlines())
        return "\n".join(lines[-self.max_log_lines :])


# --------------------------------------------------------------------------- progress


def parse_progress_line(line: str) -> tuple[str, str] | None:
    """'out_time_us=1234' -> ('out_time_us', '1234'); None for anything else."""
    key, sep, value = line.strip().partition("=")
    if not sep or not key:
        return None
    return key.strip(), value.strip()


class ProgressParser:
    """Accumulates `-progress` key=value lines; `feed` returns True at the end of a block."""

    def __init__(self) -> None:
        self.out_time: float | None = None  # seconds
        self.speed: float | None = None
        self.ended = False

    def feed(self, line: str) -> bool:
        kv = parse_progress_line(line)
        if kv is None:
            return False
        key, value = kv
        if key in ("out_time_us", "out_time_ms"):
            # ffmpeg reports microseconds in both (out_time_ms is misnamed)
            try:
                us = int(value)
            except ValueError:
                return False
            if us >= 0:
                t = us / 1_000_000
                self.out_time = t if self.out_time is None else max(self.out_time, t)
        elif key == "out_time" and self.out_time is None:
            seconds = _parse_clock(value)
            if seconds is not None:
                self.out_time = seconds
        elif key == "speed":
            try:
                self.speed = float(value.rstrip("x").strip())
            except ValueError:
                self.speed = None
        elif key == "progress":
            if value == "end":
                self.ended = True
            return True
        return False

    def fraction(self, duration: float | None) -> float:
        if self.ended:
            return 1.0
        if not duration or duration <= 0 or self.out_time is None:
            return 0.0
        return min(1.0, max(0.0, self.out_time / duration))


def _parse_clock(value: str) -> float | None:
    try:
        h, m, s = value.split(":")
        return max(0.0, int(h) * 3600 + int(m) * 60 + float(s))
    except ValueError:
        return None


_GENERIC_ERRORS = ("Conversion failed!", "Exiting normally")


def summarize_stderr(text: str, *, prefer: str = "last") -> str:
    """The most meaningful line(s) of an ffmpeg stderr tail (for messages)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [
        ln
        for ln in lines
        if ("[error]" in ln or "[fatal]" in ln or "[panic]" in ln)
        and not any(g in ln for g in _GENERIC_ERRORS)
    ]
    pool = errors or [ln for ln in lines if not any(g in ln for g in _GENERIC_ERRORS)] or lines
    if not pool:
        return ""
    line = pool[0] if prefer == "first" else pool[-1]
    return _strip_level_tags(line)[:500]


def _strip_level_tags(line: str) -> str:
    for tag in ("[error] ", "[fatal] ", "[panic] ", "[warning] ", "[info] "):
        line = line.replace(tag, "")
    return line.strip()


# --------------------------------------------------------------------------- run_step


def _stop(proc: subprocess.Popen, grace: float = 1.0) -> None:
    if proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGTERM)
    except ProcessLookupError:  # pragma: no cover
        return
    try:
        proc.wait(grace)
        return
    except subprocess.TimeoutExpired:
        pass
    try:
        proc.kill()
    except ProcessLookupError:  # pragma: no cover
        return
    proc.wait()


def run_step(
    step: Step,
    *,
    on_progress: Callable[[float, float | None], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    timeout: float,
    poll_interval: float = 0.5,
    stderr_lines: int = 200,
) -> StepResult:
    """Run one step's argv; `on_progress(fraction, speed)`; raise on cancel/timeout/failure."""
    if not step.argv:
        raise ValueError(f"step {step.name!r} has no command")
    if step.work_dir:
        os.makedirs(step.work_dir, exist_ok=True)
    tail: collections.deque[str] = collections.deque(maxlen=max(1, stderr_lines))
    parser = ProgressParser()
    started = time.monotonic()
    deadline = started + timeout
    proc = subprocess.Popen(  # argv built by plan.py from validated values
        step.argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=step.work_dir or None,
        preexec_fn=lifeline.preexec(),
        close_fds=True,
    )
    sel = selectors.DefaultSelector()
    buffers = {"out": b"", "err": b""}
    assert proc.stdout is not None and proc.stderr is not None
    sel.register(proc.stdout, selectors.EVENT_READ, "out")
    sel.register(proc.stderr, selectors.EVENT_READ, "err")
    open_streams = 2
    last_report = 0.0
    last_cancel_check = started
    last_fraction = -1.0
    max_line = 8192
    too_large: list[re.Match] = []

    def handle_line(kind: str, raw: bytes) -> None:
        text = raw[:max_line].decode("utf-8", "replace").rstrip("\r\n")
        if kind == "out":
            parser.feed(text)
        elif text.strip():
            tail.append(text)
            if not too_large:
                found = _OVER_MAX_PIXELS.search(text)
                if found:
                    too_large.append(found)

    def stderr_tail() -> str:
        return "\n".join(tail)

    try:
        while open_streams:
            now = time.monotonic()
            wait = max(0.0, min(poll_interval, deadline - now))
            for key, _ in sel.select(timeout=wait):
                kind = key.data
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(key.fileobj)
                    open_streams -= 1
                    if buffers[kind]:
                        handle_line(kind, buffers[kind])
                        buffers[kind] = b""
                    continue
                data = buffers[kind] + chunk
                *lines, rest = data.split(b"\n")
                for raw in lines:
                    handle_line(kind, raw)
                if len(rest) > max_line:  # a runaway line without newline: keep it bounded
                    handle_line(kind, rest)
                    rest = b""
                buffers[kind] = rest
            if too_large:
                _stop(proc)
                w, h, limit = too_large[0].groups()
                raise PictureTooLarge(
                    f"the input has a picture of {w}x{h} (width padded by the decoder), over "
                    f"the input limit of {limit} pixels: pictures after the probed ones may not "
                    "exceed MAX_INPUT_PIXELS, so the step was stopped",
                    stderr_tail(),
                )
            now = time.monotonic()
            if should_cancel is not None and now - last_cancel_check >= poll_interval:
                last_cancel_check = now
                if should_cancel():
                    _stop(proc)
                    raise Cancelled(f"{step.name} cancelled")
            if now >= deadline:
                _stop(proc)
                raise StepTimeout(
                    stderr_tail(), f"{step.name} exceeded its time limit of {timeout:g} s"
                )
            if on_progress is not None and now - last_report >= poll_interval:
                fraction = parser.fraction(step.duration)
                if fraction != last_fraction and not parser.ended:
                    last_report = now
                    last_fraction = fraction
                    on_progress(fraction, parser.speed)
        remaining = max(0.1, deadline - time.monotonic())
        try:
            returncode = proc.wait(remaining)
        except subprocess.TimeoutExpired:
            _stop(proc)
            raise StepTimeout(
                stderr_tail(), f"{step.name} exceeded its time limit of {timeout:g} s"
            ) from None
    finally:
        sel.close()
        if proc.poll() is None:  # an exception (e.g. from a callback) escaped the loop
            _stop(proc, grace=0.5)
        proc.stdout.close()
        proc.stderr.close()
    elapsed = time.monotonic() - started
    if returncode != 0:
        message = summarize_stderr(stderr_tail())
        if returncode < 0:
            message = message or f"ffmpeg was killed by signal {-returncode}"
        raise FFmpegFailed(
            message or f"ffmpeg exited with status {returncode}", stderr_tail(), returncode
        )
    if on_progress is not None:
        on_progress(1.0, parser.speed)
    return StepResult(returncode, stderr_tail(), elapsed)


# --------------------------------------------------------------------------- run_plan


def run_plan(
    steps: Sequence[Step],
    *,
    on_progress: Callable[[float, float | None, str], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    timeout: float | Callable[[Step], float] = 3600.0,
    ffprobe_bin: str = "ffprobe",
    poll_interval: float = 0.5,
    stderr_lines: int = 200,
) -> PlanResult:
    """Run all steps in order; `on_progress(overall_fraction, eta_seconds, stage_name)`.

    Steps are weighted by the media duration they process. `timeout` is per step (a
    number, or a function of the step). Analyze steps run `analyze.run_analysis`, which
    writes `analysis.json`; its dict is returned as `PlanResult.analysis`.
    Raises Cancelled / StepTimeout / FFmpegFailed (and InputRejected from analyze).
    """
    from ffmpeg_api.media import analyze as analyze_mod

    result = PlanResult(max_log_lines=stderr_lines)
    total = sum(s.progress_weight for s in steps) or 1.0
    done = 0.0
    started = time.monotonic()

    def report(fraction: float, stage: str) -> None:
        if on_progress is None:
            return
        fraction = min(1.0, max(0.0, fraction))
        elapsed = time.monotonic() - started
        eta = None
        if fraction >= 1.0:
            eta = 0.0
        elif fraction > 0.01 and elapsed > 0.5:
            eta = round(elapsed * (1.0 - fraction) / fraction, 1)
        on_progress(fraction, eta, stage)

    for step in steps:
        if should_cancel is not None and should_cancel():
            raise Cancelled("job cancelled")
        weight = step.progress_weight
        step_timeout = timeout(step) if callable(timeout) else float(timeout)

        def step_progress(
            fraction: float, _speed: float | None, _d=done, _w=weight, _s=step
        ) -> None:
            report((_d + _w * fraction) / total, _s.name)

        report(done / total, step.name)
        if step.analyze is not None:
            res, analysis = analyze_mod.run_analysis(
                step,
                ffprobe_bin=ffprobe_bin,
                on_progress=step_progress,
                should_cancel=should_cancel,
                timeout=step_timeout,
                poll_interval=poll_interval,
                stderr_lines=stderr_lines,
            )
            result.analysis = analysis
        else:
            res = run_step(
                step,
                on_progress=step_progress,
                should_cancel=should_cancel,
                timeout=step_timeout,
                poll_interval=poll_interval,
                stderr_lines=stderr_lines,
            )
        for name in step.outputs:
            path = os.path.join(step.work_dir, name)
            if not os.path.isfile(path) or os.path.getsize(path) == 0:
                raise FFmpegFailed(
                    f"{step.name} produced no output {name!r}"
                    + (f": {summarize_stderr(res.stderr_tail)}" if res.stderr_tail else ""),
                    res.stderr_tail,
                    res.returncode,
                )
            result.outputs.append(name)
        result.results.append(res)
        result.step_names.append(step.name)
        done += weight
        if step.primary and result.primary_output is None and step.outputs:
            result.primary_output = step.outputs[0]
    result.elapsed = time.monotonic() - started
    report(1.0, "done")
    return result
