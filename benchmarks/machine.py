"""The machine a benchmark ran on: CPU model, threads, load, and the matmul peak measured in the same run.

The peak of a dtype is the best GFLOP/s over square matmuls of a few sizes, each the fastest of many
runs. Ratios of achieved to peak throughput elsewhere in the report divide by these figures, so both come
from the same process, threads and load.
"""

import os
import platform
import time
from pathlib import Path

import torch

MATMUL_SIZES = (512, 1024, 2048)
QUICK_MATMUL_SIZES = (512, 1024)
MATMUL_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
MIN_MATMUL_RUNS = 3
MAX_MATMUL_RUNS = 50


def cpu_model() -> str:
    """Return the CPU's model name from /proc/cpuinfo, else what `platform` reports."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> list[float] | None:
    """Return the 1, 5 and 15 minute load averages, or None where the OS does not report them."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None


def matmul_gflops(size: int, dtype: torch.dtype, device: torch.device, min_seconds: float) -> float:
    """Measure the GFLOP/s (2 n^3 FLOPs per product) of the fastest n x n matmul.

    After one warm-up product, products are timed until `min_seconds` have passed, at least
    MIN_MATMUL_RUNS and at most MAX_MATMUL_RUNS of them, so small sizes get many tries on a busy machine.
    """
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, generator=generator, device=device).to(dtype)
    b = torch.randn(size, size, generator=generator, device=device).to(dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.mm(a, b)
    sync()
    seconds = []
    while len(seconds) < MAX_MATMUL_RUNS and (len(seconds) < MIN_MATMUL_RUNS or sum(seconds) < min_seconds):
        start = time.perf_counter()
        torch.mm(a, b)
        sync()
        seconds.append(time.perf_counter() - start)
    return 2 * size**3 / min(seconds) / 1e9


def matmul_peaks(device: torch.device, sizes: tuple[int, ...], min_seconds: float) -> dict[str, dict]:
    """Measure, for each dtype, the GFLOP/s per matmul size and the best of them ("peak_gflops")."""
    peaks = {}
    for name, dtype in MATMUL_DTYPES.items():
        by_size = {size: matmul_gflops(size, dtype, device, min_seconds) for size in sizes}
        peaks[name] = {"gflops_by_size": by_size, "peak_gflops": max(by_size.values())}
    return peaks


def describe_machine(quick: bool) -> dict:
    """Describe the CPU, threads, versions and load, and measure the fp32/bf16 matmul peaks (CUDA bf16 too)."""
    sizes = QUICK_MATMUL_SIZES if quick else MATMUL_SIZES
    min_seconds = 0.5 if quick else 2.0
    machine = {
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_average": load_average(),
        "cpu_matmul": matmul_peaks(torch.device("cpu"), sizes, min_seconds),
    }
    if torch.cuda.is_available():
        # NOTE: written without a GPU at hand; this branch has not been run yet.
        device = torch.device("cuda")
        gpu_sizes = (4096, 8192)
        by_size = {size: matmul_gflops(size, torch.bfloat16, device, min_seconds) for size in gpu_sizes}
        machine["gpu"] = {
            "name": torch.cuda.get_device_name(device),
            "bf16_tflops_by_size": {size: value / 1000 for size, value in by_size.items()},
            "bf16_peak_tflops": max(by_size.values()) / 1000,
        }
    return machine
