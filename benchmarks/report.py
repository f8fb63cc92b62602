"""Plain-text tables of the benchmark rows, printed as each section finishes.

Rates are printed as "median (min-max)" over the timed runs; the JSON file keeps every number.
"""

from collections.abc import Sequence


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-align the first column and right-align the others, with two spaces between columns."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]
    lines = []
    for cells in (headers, *rows):
        first = str(cells[0]).ljust(widths[0])
        rest = [str(cell).rjust(width) for cell, width in zip(cells[1:], widths[1:])]
        lines.append("  ".join([first, *rest]).rstrip())
    return "\n".join(lines)


def spread(figure: dict[str, float], digits: int = 1) -> str:
    """'median (min-max)' of a figure with those keys."""
    return f"{figure['median']:.{digits}f} ({figure['min']:.{digits}f}-{figure['max']:.{digits}f})"


def optional(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def machine_table(machine: dict) -> str:
    lines = [
        f"CPU {machine['cpu']}, {machine['logical_cpus']} logical CPUs, torch {machine['torch']} on "
        f"{machine['torch_threads']} threads, load average {machine['load_average']}",
    ]
    for dtype, figures in machine["cpu_matmul"].items():
        sizes = ", ".join(f"{size}: {value:.0f}" for size, value in figures["gflops_by_size"].items())
        lines.append(f"{dtype} matmul GFLOP/s by size {sizes}; peak {figures['peak_gflops']:.0f}")
    if "gpu" in machine:
        gpu = machine["gpu"]
        lines.append(f"GPU {gpu['name']}: bf16 matmul peak {gpu['bf16_peak_tflops']:.0f} TFLOP/s")
    return "\n".join(lines)


def datasets_table(datasets: dict) -> str:
    builds = format_table(
        ["build", "seconds", "peak RSS MiB", "source", "load"],
        [
            [row["name"], spread(row["seconds"], 2), f"{row['peak_rss_mib']['median']:.0f}", row["source"],
             _load(row)]
            for row in datasets["builds"]
        ],
    )
    generators = format_table(
        ["generator", "puzzles/s", "puzzles per run", "load"],
        [[row["name"], spread(row["puzzles_per_second"]), row["puzzles_per_run"], _load(row)]
         for row in datasets["generators"]],
    )
    return builds + "\n\n" + generators


def checkers_table(rows: list[dict]) -> str:
    return format_table(
        ["checker", "predictions/s", "per run", "load"],
        [[row["name"], spread(row["predictions_per_second"], 0), row["predictions_per_run"], _load(row)] for row in rows],
    )


def training_table(rows: list[dict]) -> str:
    return format_table(
        ["model", "size", "dtype", "batch", "examples/s", "GFLOP/ex", "GFLOP/s", "of peak", "peak MiB", "load"],
        [
            [row["model"], row["size"], row["dtype"], row["batch_size"], spread(row["examples_per_second"], 2),
             f"{row['gflop_per_example']:.2f}", spread(row["gflops"], 0), f"{row['fraction_of_peak']:.2f}",
             optional(row["peak_memory_mib"]), _load(row)]
            for row in rows
        ],
    )


def evaluation_table(rows: list[dict]) -> str:
    return format_table(
        ["model", "size", "dtype", "budget", "batch", "examples/s", "GFLOP/ex", "GFLOP/s", "of peak", "peak MiB",
         "load"],
        [
            [" ".join([row["model"], row.get("sampler", "")]).strip(), row["size"], row["dtype"],
             f"{row['budget']} {row['budget_name']}", row["batch_size"], spread(row["examples_per_second"], 3),
             f"{row['gflop_per_example']:.1f}", spread(row["gflops"], 0), f"{row['fraction_of_peak']:.2f}",
             optional(row["peak_memory_mib"]), _load(row)]
            for row in rows
        ],
    )


def _load(row: dict) -> str:
    """Format the 1-minute load average at the time the row was measured."""
    load = row.get("load_average")
    return "n/a" if not load else f"{load[0]:.1f}"
