"""Timing and peak-memory measurement shared by every benchmark section.

A figure is the median of `repeats` timed runs after `warmup` untimed ones, reported with its min and max.
Peak memory on CPU is the rise of the process's peak resident set size (VmHWM) over its resident size
when measurement starts. Linux resets VmHWM when "5" is written to /proc/self/clear_refs, so one process
can measure several workloads in turn.
"""

import ctypes
import ctypes.util
import statistics
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

PROC_STATUS = Path("/proc/self/status")
PROC_CLEAR_REFS = Path("/proc/self/clear_refs")
RESET_PEAK_RSS = "5"


@dataclass
class Timing:
    """Wall seconds of the timed runs of one workload."""

    seconds: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    def rate(self, units_per_run: float) -> dict[str, float]:
        """Units per second: the median run's rate, and the rates of the slowest (min) and fastest (max) run."""
        return {
            "median": units_per_run / self.median,
            "min": units_per_run / max(self.seconds),
            "max": units_per_run / min(self.seconds),
        }

    def summary(self) -> dict[str, float]:
        """Median, min and max seconds."""
        return {"median": self.median, "min": min(self.seconds), "max": max(self.seconds)}


def time_runs(run: Callable[[], object], warmup: int, repeats: int) -> Timing:
    """Call `run` `warmup` times untimed, then `repeats` times timed."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    for _ in range(warmup):
        run()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
    return Timing(seconds)


def _status_mib(key: str) -> float | None:
    """Read one memory line of /proc/self/status in MiB; None where the file or the line is missing."""
    try:
        text = PROC_STATUS.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return None


def _release_free_heap() -> None:
    """Return freed heap pages to the OS (glibc `malloc_trim`), so that earlier workloads do not lower the next peak."""
    name = ctypes.util.find_library("c")
    if name is None:
        return
    libc = ctypes.CDLL(name)
    if hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


@dataclass
class PeakMemory:
    """Peak memory of the code run inside `track_peak_memory`, in MiB; None where /proc cannot tell it."""

    peak_mib: float | None = None
    """Rise of the peak RSS over the RSS at the start of the block."""
    rss_peak_mib: float | None = None
    """The process's peak RSS during the block."""


@contextmanager
def track_peak_memory() -> Iterator[PeakMemory]:
    """Measure how far the block raises the process's resident set size (RSS) at its peak."""
    result = PeakMemory()
    _release_free_heap()
    try:
        PROC_CLEAR_REFS.write_text(RESET_PEAK_RSS)
    except OSError:
        # Without a reset the peak could be an earlier workload's, so the figure stays None.
        yield result
        return
    start = _status_mib("VmRSS")
    yield result
    peak = _status_mib("VmHWM")
    if start is not None and peak is not None:
        result.peak_mib = peak - start
        result.rss_peak_mib = peak
