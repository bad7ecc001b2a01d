"""The plain-text report of `npnorm bench`: the run's conditions, the norm rows grouped by norm and op, the
engine rows, the start-up rows and the verdicts on the targets."""

from __future__ import annotations

from .engine_rows import ENGINE
from .norm_rows import NORMS
from .startup import COLD_RUNS
from .targets import format_verdicts, printed_value
from .timing import UNSTEADY_SPREAD


def format_table(result: dict) -> str:
    """The plain-text report: the run's conditions, the norm rows grouped by norm, op and shape, then the
    engine rows."""
    meta, records = result["meta"], result["records"]
    threads = f"numba {meta['numba']} ({meta['numba_threads']} threads, layer {meta['numba_threading_layer']})"
    if meta["torch"]:
        threads += f", torch {meta['torch']} ({meta['torch_threads']} threads)"
    if meta["blas_threads"] is not None:
        threads += f", BLAS {meta['blas_threads']} threads"
    lines = [f"npnorm bench: {meta['dtype']}, numpy {meta['numpy']}, {threads}, {meta['cpu_count']} CPUs"]
    if meta.get("machine"):  # a result saved before the machine was recorded has none
        lines.append(f"machine: {meta['machine']}")
    if meta["numba_threading_layer"] == "omp":
        lines.append(f"OpenMP idle spinning: {meta['openmp_spin']}")
    if "copy_gbps" in meta:
        low, high = meta["copy_rows_gbps"]
        lines += [
            f"copy bandwidth, {meta['copy_probe_bytes'] // 2**20} MiB float32, read + write, at the start:",
            f"  {meta['copy_1thread_gbps']:6.1f} GB/s  np.copyto into an existing array, 1 thread",
            f"  {meta['copy_threaded_gbps']:6.1f} GB/s  the same, {meta['copy_threads']} threads",
            f"  {meta['copy_new_gbps']:6.1f} GB/s  x.copy() into a new array, 1 thread (page faults included)",
            f"  {low:.1f}-{high:.1f} GB/s  the {meta['copy_threads']}-thread copy timed beside each row's cells, "
            "each row's 100% in '% copy'",
        ]
    for when in ("before", "during"):
        busy = meta[f"other_busy_cpus_{when}"]
        if busy is not None and busy > 0.2:
            lines.append(
                f"WARNING: other processes kept {busy:.1f} of {meta['cpu_count']} CPUs busy {when} the run; "
                "timings are noisy"
            )
    spread = meta.get("timing_spread")
    unsteady = spread is not None and spread > UNSTEADY_SPREAD
    if spread is not None:
        lines.append(f"timing spread: medians {spread:.2f}x their minima (geometric mean over the timed rows)")
        if unsteady:
            lines.append(
                f"WARNING: timings were unsteady (spread above {UNSTEADY_SPREAD}): something this machine cannot "
                "see as load slowed it (a busy host?); compare minima, and expect the start-up rows to read high"
            )
    if not meta["numba_kernels"]:
        lines.append("WARNING: numba cannot be imported; impl 'numba' ran the NumPy reference")
    norm_records = [r for r in records if r["kind"] == "norm"]
    engine_records = [r for r in records if r["kind"] == "engine"]
    if norm_records:
        lines += _norm_table(norm_records)
    if engine_records:
        lines += _engine_table(meta, engine_records)
    startup_records = [r for r in records if r["kind"] == "startup"]
    if startup_records:
        lines += _startup_table(startup_records)
    lines += format_verdicts(result["targets"], unsteady=unsteady)  # as run() judged them, the JSON's too
    return "\n".join(lines)


def _norm_table(records: list[dict]) -> list[str]:
    header = [
        f"{'':<26} {'':>11}  {'':<6} {'':>10} {'':>10} {'':>7} {'':>7}   {'numba speed-up':^17}",
        f"{'op':<26} {'shape':>11}  {'impl':<6} {'median ms':>10} {'min ms':>10} "
        f"{'GB/s':>7} {'% copy':>7}   {'median':>8} {'min':>8}",
    ]
    lines = []
    previous = None
    for r in records:
        group = (r["norm"], r["op"])
        if group != previous:
            lines += ["", *header, "-" * len(header[1])]
            previous = group
        name = f"{NORMS[r['norm']].label} {r['op']}"
        shape = "x".join(str(n) for n in r["shape"])
        speedups = [
            "-" if r["impl"] == "numba" or r[key] is None else f"{r[key]:.2f}x"
            for key in ("numba_speedup", "numba_speedup_min")
        ]
        lines.append(
            f"{name:<26} {shape:>11}  {r['impl']:<6} {r['median_ms']:>10.3f} {r['min_ms']:>10.3f} "
            f"{r['gbps']:>7.1f} {100 * r['share_of_copy']:>6.0f}%   {speedups[0]:>8} {speedups[1]:>8}"
        )
    return lines + [
        "",
        "GB/s: bytes that must move (forward 2, backward 3, forward+backward 5 arrays of N x H) / min time;",
        "% copy: that as a share of the copy's bandwidth timed beside the row (cache-resident shapes can exceed 100%);",
        "numba speed-up: time(impl) / time(numba), of the medians and of the minima; above 1 numba is faster.",
    ]


def _engine_table(meta: dict, records: list[dict]) -> list[str]:
    threads = meta["engine_threads"]  # None when every engine row ran with the default threads
    with_torch = any(r["impl"] == "torch" for r in records)
    if threads is None:
        budget = "each library's default threads, in a fresh process of its own"
    else:
        blas = "BLAS 1" if threads["blas"] else "BLAS not limited (no threadpoolctl)"
        torch = f", torch {threads['torch']}" if threads["torch"] else ""
        budget = f"one thread each ({blas}, numba {threads['numba']}{torch})"
        if any(r.get("threads") == "default" for r in records):
            budget += "; the default-threads rows as labelled"
    header = [
        f"{'':<26} {'':<6} {'':>10} {'':>10} {'':>9} {'':>12}   {'npnorm speed-up':^17}",
        f"{'engine':<26} {'impl':<6} {'median ms':>10} {'min ms':>10} {'us/op':>9} {'npnorm/torch':>12}   "
        f"{'median':>8} {'min':>8}",
    ]
    lines = [
        "",
        f"engine rows: npnorm (impl {meta['engine_npnorm_impl']}){' vs torch' if with_torch else ''}, {budget}",
        *header,
        "-" * len(header[1]),
    ]
    for r in records:
        us_per_op = "-" if r["us_per_op"] is None else f"{r['us_per_op']:.2f}"
        ratios = [
            "-" if r["impl"] == "npnorm" else f"{r[key]:.2f}x"
            for key in ("npnorm_time_ratio", "npnorm_speedup", "npnorm_speedup_min")
        ]
        lines.append(
            f"{ENGINE[r['op']].label:<26} {r['impl']:<6} {r['median_ms']:>10.3f} {r['min_ms']:>10.3f} "
            f"{us_per_op:>9} {ratios[0]:>12}   {ratios[1]:>8} {ratios[2]:>8}"
        )
    lines.append("")
    for name in dict.fromkeys(r["op"] for r in records):
        lines.append(f"{ENGINE[name].label}: {ENGINE[name].what}")
        for r in records:
            if r["op"] == name and r["process_threads"]:
                t = r["process_threads"]
                blas = "?" if t["blas"] is None else t["blas"]
                own = (
                    f"torch {t['torch']}"
                    if "torch" in t
                    else f"numba {t['numba']} (OpenMP idle spinning: {t['openmp_spin']})"
                )
                lines.append(f"  {r['impl']} in a fresh process of its own: BLAS {blas} threads, {own}")
    return lines + [
        "us/op: median time per call / ops per call, in microseconds;",
        "npnorm/torch: time(npnorm) / time(torch), of the medians; above 1 npnorm takes longer;",
        "npnorm speed-up: time(torch) / time(npnorm), of the medians and of the minima; above 1 npnorm is faster.",
    ]


def _startup_table(records: list[dict]) -> list[str]:
    header = f"{'startup (fresh processes)':<38} {'median s':>9} {'min s':>8} {'runs':>5} {'target s':>9}  met"
    lines = ["", header, "-" * len(header)]
    for r in records:
        met = "yes" if r["median_s"] <= r["target_s"] else "no"
        median = printed_value(r["median_s"], "s", r["target_s"], False, suffix=False)  # never "0.300 ... no"
        lines.append(f"{r['label']:<38} {median:>9} {r['min_s']:>8.3f} {r['runs']:>5} {r['target_s']:>9.1f}  {met}")
    return lines + [
        "",
        "import: `import npnorm` timed inside the process (interpreter start-up excluded);",
        "first call: numba import plus loading the kernels from the on-disk cache, after an untimed run filled it;",
        f"empty cache: every kernel compiled with NUMBA_CACHE_DIR set to a new temporary folder, {COLD_RUNS} runs.",
    ]
