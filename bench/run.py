"""amber's benchmark: dump/load time, file size and peak memory against pickle,
joblib, skops, blosc2 and the machine's own limits, on a fixed, seeded suite.

    python bench/run.py [--cases a,b,c,d,e] [--only pickle,amber,...] [--repeat 5]
                        [--quick] [--compressed] [--write-docs] [--strict]

Each case runs in a fresh process of its own (so imports and one case's memory
do not colour another's); inside it every method is timed in turn. Results go
to bench/out/results.{json,md,png}; --write-docs copies the Markdown and the
plot to docs/bench/. Target checks are printed and never fail the run unless
--strict is given. See bench/README.md for what is measured and how.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
OUT = BENCH / "out"
TMP_ROOT = OUT / "tmp"  # on the repo's filesystem, as the issue asks; one folder per run
DOCS = REPO / "docs" / "bench"

sys.path.insert(0, str(BENCH))
import measure  # noqa: E402  (bench/ modules, importable once BENCH is on the path)
import methods  # noqa: E402
import pairbench  # noqa: E402
import report  # noqa: E402
import suite  # noqa: E402

# --------------------------------------------------------------------------- one method on one case


#: A method whose runs are fast gets more of them than ``--repeat``, while they
#: fit in this many seconds in all (dump, flush, load): a median of five calls
#: of a few milliseconds moves by 20-50% from run to run on this VM, enough to
#: turn a ratio near its target either way.
FAST_BUDGET_S = 3.0
#: Most runs a fast method gets.
FAST_MAX_RUNS = 41


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _error(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"[:400]


def run_method(case: str, method: methods.Method | methods.Unavailable, obj: Any, original: measure.Skeleton,
               args: argparse.Namespace) -> dict[str, Any]:
    """Dump and load ``obj`` ``args.repeat`` times (fewer past the time budget,
    more while they fit in ``FAST_BUDGET_S``)."""
    if isinstance(method, methods.Unavailable):
        return {"status": "n/a", "reason": method.reason}
    skip = method.skip(case, args.quick)
    if skip:
        return {"status": "n/a", "reason": skip, "note": method.note}
    row: dict[str, Any] = {"status": "ok", "note": method.note, "dump_s": [], "dump_peak_bytes": [], "load_s": [],
                           "load_peak_raw_bytes": [], "load_array_bytes": [], "load_peak_extra_bytes": [],
                           "load_retained_bytes": []}
    started = time.perf_counter()
    method.prepare(obj)
    try:
        i = 0
        while True:
            path = args.run_dir / f"{case}-{method.name}-{i}{method.suffix}"
            measure.remove(path)
            try:
                sample = measure.timed(functools.partial(method.dump, obj, path))
            except method.na_errors as e:
                return {"status": "n/a", "reason": _error(e), "note": method.note}
            except Exception as e:
                return {"status": "error", "reason": _error(e), "note": method.note}
            row["dump_s"].append(sample.seconds)
            row["dump_peak_bytes"].append(sample.peak)
            row["size_bytes"] = measure.path_size(path)
            measure.fsync_tree(path)  # the load must not compete with this file's writeback
            if method.load is not None:
                _time_load(method, path, original, row, first=i == 0)
            measure.remove(path)
            if row.get("load_error"):
                break  # a load that failed once fails again: the dump times so far are enough
            spent = time.perf_counter() - started
            if not method.full_repeats and spent > args.budget:
                break
            i += 1
            # A quick run is a smoke test: its runs are all fast, and it gets no more of them.
            if i >= args.repeat and (args.quick or spent >= FAST_BUDGET_S or i >= FAST_MAX_RUNS):
                break
    finally:
        method.cleanup()
    row["runs"] = len(row["dump_s"])
    for key in ("dump_s", "load_s"):
        row[key.replace("_s", "_median_s")] = _median(row[key])
    for key in ("dump_peak", "load_peak_raw", "load_peak_extra", "load_retained", "load_array"):
        row[f"{key}_median_bytes"] = _median(row[f"{key}_bytes"])
    return row


def _time_load(method: methods.Method, path: Path, original: measure.Skeleton, row: dict[str, Any], first: bool) -> None:
    """One timed load; the loaded object's own arrays are taken out of its peak."""
    assert method.load is not None
    load = method.load
    try:
        sample = measure.timed(functools.partial(load, path))
    except Exception as e:  # e.g. joblib's "Too many open files" with mmap
        row["load_error"] = _error(e)
        return
    arrays = measure.skeleton(sample.result).arrays
    resident = measure.anonymous_array_bytes(arrays)
    retained = sample.rss_after - sample.rss_before
    row["load_s"].append(sample.seconds)
    row["load_peak_raw_bytes"].append(sample.peak)
    row["load_array_bytes"].append(resident)
    row["load_retained_bytes"].append(retained)
    # The loaded object's own arrays are not overhead; but never subtract more
    # than the load kept (small arrays may reuse memory the process already had).
    row["load_peak_extra_bytes"].append(sample.peak - min(resident, max(retained, 0)))
    del arrays
    if first:
        row["roundtrip"] = measure.same_content(original, sample.result)
    del sample


def run_case(case: str, args: argparse.Namespace) -> dict[str, Any]:
    """Every selected method on one case, in this process."""
    info = suite.CASES[case]
    print(f"({case}) {info.name}: {info.title}{' [quick]' if args.quick else ''}", flush=True)
    started = time.perf_counter()
    obj = suite.build(case, args.quick)
    build_s = time.perf_counter() - started
    original = measure.reference_skeleton(obj)  # what every load must give back
    model = measure.model_size(obj)
    print(f"    built in {build_s:.1f} s; model {model['model_bytes'] / 1e6:.1f} MB in {model['n_arrays']} arrays",
          flush=True)
    args.run_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    for method in methods.select(case, args.compressed, args.only):
        row = run_method(case, method, obj, original, args)
        results[method.name] = row
        print("    " + _progress_line(method.name, row), flush=True)
    scan: dict[str, Any] | None = None
    if case in suite.PUBLIC_CASES and (args.only is None or "scan" in args.only):
        scan = _scan_case(obj, case, args)
    safety: dict[str, Any] | None = None
    if case in suite.PUBLIC_CASES and (args.only is None or "amber" in args.only):
        safety = _pair_case("safety", pairbench.safety_case, ("safe", "trusted"), obj, case, args)
    compression: dict[str, Any] | None = None
    if case == "a_float64" and args.compressed and (args.only is None or "amber_zstd" in args.only):
        compression = _pair_case("dump pairs", pairbench.compression_case, ("zstd", "none"), obj, case, args)
    return {"name": info.name, "title": info.title, "model": model, "build_s": build_s, "methods": results,
            "scan": scan, "safety": safety, "compression_pairs": compression,
            "seconds": time.perf_counter() - started}


def _pairs(args: argparse.Namespace) -> tuple[int, float, int]:
    """At least, seconds for more, and at most: the pairs of an interleaved measurement."""
    return max(2 * args.repeat + 1, 11), 0.0 if args.quick else pairbench.BUDGET_S, pairbench.MAX_PAIRS


def _pair_case(what: str, measure_case: Any, keys: tuple[str, str], obj: Any, case: str,
               args: argparse.Namespace) -> dict[str, Any] | None:
    """One interleaved measurement of pairbench.py (``measure_case``), printed
    with its two sides' medians (``keys``); an error is reported, never fatal."""
    try:
        row = measure_case(obj, args.run_dir, case, *_pairs(args))
    except Exception as e:
        print(f"    {what}: error: {_error(e)}", flush=True)
        return {"error": _error(e)}
    first, second = keys
    print(f"    {what}: {first} {row[first + '_s']:.4f} s, {second} {row[second + '_s']:.4f} s over {row['pairs']} "
          f"interleaved pairs: ratio {row['ratio']:.3f}", flush=True)
    return row


def _scan_case(obj: Any, case: str, args: argparse.Namespace) -> dict[str, Any] | None:
    """amber.scan against picklescan on this case's amber and joblib files (see scanbench.py)."""
    import scanbench

    try:
        scan = scanbench.measure_case(obj, args.run_dir, case, args.repeat)
    except Exception as e:  # reported, never fatal
        print(f"    scan: error: {_error(e)}", flush=True)
        return {"error": _error(e)}
    for kind, row in scan.items():
        ps = f"picklescan {row['picklescan_s']:.4f} s ({row['picklescan_verdict']}), {row['speedup']:.0f}x" \
            if "picklescan_s" in row else f"picklescan: {row.get('picklescan', '?')[:80]}"
        print(f"    scan {kind:6s} amber {row['amber_s']:.4f} s ({row['amber_verdict']}, "
              f"{row['amber_mb_s']:.0f} MB/s); {ps}", flush=True)
    return scan


def _progress_line(name: str, row: dict[str, Any]) -> str:
    if row["status"] != "ok":
        return f"{name:20s} {row['status']}: {row['reason'][:150]}"
    load = row.get("load_median_s")
    load_text = f"{load:8.4f} s" if load is not None else ("   n/a   " if row.get("load_error") else "    -     ")
    peaks = f"peak +{row['dump_peak_median_bytes'] / 1e6:.0f}"
    if row.get("load_peak_extra_median_bytes") is not None:
        peaks += f"/+{row['load_peak_extra_median_bytes'] / 1e6:.0f}"
    extra = f"  load: {row['load_error'][:100]}" if row.get("load_error") else ""
    same = "" if row.get("roundtrip") in (None, "ok") else f"  ROUND TRIP: {row['roundtrip']}"
    return (f"{name:20s} dump {row['dump_median_s']:8.4f} s  load {load_text}  {row['size_bytes'] / 1e6:9.2f} MB  "
            f"{peaks} MB  x{row['runs']}{extra}{same}")


# --------------------------------------------------------------------------- the whole run


def machine_info() -> dict[str, Any]:
    """CPU, cores, RAM, filesystem and library versions, for the report."""
    from importlib import metadata

    info: dict[str, Any] = {"cores": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version()}
    try:
        info["cores_usable"] = len(os.sched_getaffinity(0))
    except AttributeError:
        pass
    info["cpu"] = _first_field("/proc/cpuinfo", "model name")
    mem_kb = _first_field("/proc/meminfo", "MemTotal")
    info["ram_gib"] = round(int(mem_kb.split()[0]) / 2**20, 1) if mem_kb else None
    info["filesystem"] = _filesystem(OUT)
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    info["transparent_hugepages"] = thp.read_text().strip() if thp.exists() else None
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for dist in ("numpy", "scipy", "scikit-learn", "joblib", "skops", "blosc2", "lz4", "matplotlib", "amber"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    info["versions"] = versions
    try:
        import amber

        info["amber_path"] = str(Path(amber.__file__).parent)
        versions["amber"] = versions["amber"] or getattr(amber, "__version__", "?")
    except Exception as e:
        info["amber_path"] = f"not importable: {_error(e)}"
    info["commit"] = _git_commit()
    return info


def _first_field(path: str, name: str) -> str | None:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(name):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _filesystem(path: Path) -> str | None:
    """The type of the filesystem holding ``path`` (longest mount point that contains it)."""
    best, fstype = "", None
    try:
        with open("/proc/mounts") as f:
            for line in f:
                _, mount, kind = line.split()[:3]
                if str(path).startswith(mount) and len(mount) > len(best):
                    best, fstype = mount, kind
    except OSError:
        pass
    return fstype


def _git_commit() -> str | None:
    """HEAD of the repo (read-only), with '+dirty' when the work tree has changes."""
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], check=False,
                              capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               check=False, capture_output=True, text=True, timeout=10).stdout.strip()
        return (head + ("+dirty" if dirty else "")) or None
    except (OSError, subprocess.SubprocessError):
        return None


def run_worker(case: str, args: argparse.Namespace) -> dict[str, Any] | str:
    """Run one case in a fresh Python process; its results, or why it failed."""
    out = args.run_dir / f"case-{case}.json"
    out.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", case, "--run-dir", str(args.run_dir),
           "--repeat", str(args.repeat), "--budget", str(args.budget)]
    cmd += ["--quick"] if args.quick else []
    cmd += ["--compressed"] if args.compressed else []
    cmd += ["--only", ",".join(sorted(args.only))] if args.only else []
    code = subprocess.run(cmd, check=False).returncode  # the worker prints its progress straight to our output
    if code != 0 or not out.exists():
        return f"worker exited with status {code}"
    result = json.loads(out.read_text())
    out.unlink()
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default=",".join(suite.PUBLIC_CASES),
                        help="comma-separated letters or names: a/arrays, b/random_forest, c/tfidf_logreg, "
                             "d/hist_gb, e/many_small_arrays (default: all)")
    parser.add_argument("--only", help="comma-separated method names (default: all that apply); "
                                       "known: " + ", ".join(methods.CATALOGUE) + ", and scan (amber.scan "
                                       "against picklescan)")
    parser.add_argument("--repeat", type=int, default=5,
                        help="runs per method, at least; a method whose runs are fast gets as many as fit in "
                             f"{FAST_BUDGET_S:g} s (up to {FAST_MAX_RUNS}); the median is reported (default 5)")
    parser.add_argument("--budget", type=float, default=30.0,
                        help="stop repeating a competitor once its runs took this many seconds (default 30; "
                             "amber methods always run --repeat times)")
    parser.add_argument("--quick", action="store_true", help="every case ~10x smaller (smoke test)")
    parser.add_argument("--report-only", action="store_true",
                        help="measure nothing: rebuild the report, checks and plot from bench/out/results.json")
    parser.add_argument("--compressed", action="store_true",
                        help="also the compressed methods (joblib zlib/lz4, amber zstd/lz4/1 thread, blosc2)")
    parser.add_argument("--write-docs", action="store_true", help="copy results.md and results.png to docs/bench/")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target check fails")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    try:
        args.cases = [suite.resolve_case(c) for c in args.cases.split(",") if c.strip()]
    except ValueError as e:
        parser.error(str(e))
    if args.only:
        args.only = {m.strip() for m in args.only.split(",") if m.strip()}
        unknown = args.only - set(methods.CATALOGUE) - {"scan"}
        if unknown:
            parser.error(f"unknown methods {sorted(unknown)}; known: {', '.join(methods.CATALOGUE)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report_only:
        data = json.loads((OUT / "results.json").read_text())
        data["checks"] = report.all_checks(data["cases"])
        write_outputs(data, args.write_docs)
        print_checks(data)
        return 0
    if args.worker:
        args.run_dir = args.run_dir or TMP_ROOT / f"worker-{os.getpid()}"
        result = run_case(args.worker, args)
        (args.run_dir / f"case-{args.worker}.json").write_text(json.dumps(result))
        return 0

    # Scratch space of this run only: two runs at once must not delete each other's files.
    remove_stale_run_dirs()
    args.run_dir = TMP_ROOT / f"run-{os.getpid()}"
    args.run_dir.mkdir(parents=True, exist_ok=True)
    try:
        return run_all(args)
    finally:
        shutil.rmtree(args.run_dir, ignore_errors=True)


def remove_stale_run_dirs() -> None:
    """Delete the scratch folders of runs whose process is gone (interrupted runs)."""
    if not TMP_ROOT.is_dir():
        return
    for folder in TMP_ROOT.iterdir():
        pid = folder.name.rsplit("-", 1)[-1]
        if pid.isdigit() and Path(f"/proc/{pid}").exists():
            continue  # a run in progress
        if folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)
        else:
            folder.unlink(missing_ok=True)


def run_all(args: argparse.Namespace) -> int:
    """Every selected case, each in a worker process; then the report."""
    cases = list(dict.fromkeys(args.cases))
    # Case (a)'s arrays one at a time, for their compression targets, whenever compression is benchmarked on (a).
    if "a" in cases:
        at = cases.index("a") + 1
        cases[at:at] = [sub for sub in suite.SUB_CASES
                        if any(methods.CATALOGUE[n][0] == methods.COMPRESSED
                               for n in methods.names_for(sub, args.compressed, args.only))]
    data: dict[str, Any] = {
        "started": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_info(), "quick": args.quick, "repeat": args.repeat, "budget_s": args.budget,
        "fast_budget_s": FAST_BUDGET_S, "fast_max_runs": FAST_MAX_RUNS,
        "compressed": args.compressed, "only": sorted(args.only) if args.only else None,
        "cases": {}, "failures": [],
    }
    started = time.perf_counter()
    for case in cases:
        result = run_worker(case, args)
        if isinstance(result, str):
            print(f"({case}) FAILED: {result}", flush=True)
            data["failures"].append({"case": case, "reason": result})
        elif result["methods"]:
            data["cases"][case] = result
    data["seconds"] = round(time.perf_counter() - started, 1)
    data["checks"] = report.all_checks(data["cases"])
    write_outputs(data, args.write_docs)
    print_checks(data)
    print(f"total {data['seconds']:.0f} s; results in {OUT.relative_to(REPO)}/results.{{json,md,png}}")
    failed = any(c["status"] == "FAIL" for c in data["checks"]) or bool(data["failures"])
    return 1 if args.strict and failed else 0


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(text)
    partial.replace(path)


def write_outputs(data: dict[str, Any], write_docs: bool) -> None:
    _write_atomically(OUT / "results.json", json.dumps(data, indent=1) + "\n")
    _write_atomically(OUT / "results.md", report.markdown(data))
    has_plot = report.plot(data, OUT / "results.png")
    if not has_plot:
        print("matplotlib missing or nothing to plot: no results.png")
    if write_docs:
        DOCS.mkdir(parents=True, exist_ok=True)
        shutil.copy(OUT / "results.md", DOCS / "results.md")
        if has_plot:
            shutil.copy(OUT / "results.png", DOCS / "results.png")
        print(f"copied results.md{' and results.png' if has_plot else ''} to {DOCS.relative_to(REPO)}/")


def print_checks(data: dict[str, Any]) -> None:
    print("\ntargets:")
    for c in data["checks"]:
        value = "-" if c["value"] is None else f"{c['value']:g}"
        detail = f"  ({c['detail']})" if c["detail"] else ""
        print(f"  {c['status']:4s} ({c['case']}) {c['target']}: {value} {c['limit']}{detail}")
    n_pass = sum(c["status"] == "PASS" for c in data["checks"])
    n_fail = sum(c["status"] == "FAIL" for c in data["checks"])
    print(f"targets met: {n_pass} of {n_pass + n_fail} judged")


if __name__ == "__main__":
    sys.exit(main())
