"""The hostile-input corpus (tests/io/hostile, issue 19) through the real CLI: every case as
`python -m medgen.cli info PATH` and `... convert PATH OUT/o.nii.gz`, each a subprocess with a
time limit and an address-space limit, judged by ``hostile.judge`` (the test suite's verdicts),
then a table of outcomes per input class.

    python benchmarks/hostile_corpus.py [--jobs 2] [--timeout 60] [--memory-gib 4] [--show 20]
    python benchmarks/hostile_corpus.py --in-process   # quick: medgen.cli.main in this process

Why subprocesses: a hang, a crash by signal (ITK's abort), a huge allocation or output printed
by C++ code straight to file descriptor 2 only show there. ``--in-process`` skips all that (no
time or memory limit) and is for a fast look while fixing.
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _source_arg() -> Path:
    """--source, read before the imports below: in-process, that tree's medgen is the one tested."""
    for i, a in enumerate(sys.argv):
        if a == "--source" and i + 1 < len(sys.argv):
            return Path(sys.argv[i + 1]).resolve()
        if a.startswith("--source="):
            return Path(a.split("=", 1)[1]).resolve()
    return REPO


sys.path[:0] = [str(REPO / "tests" / "io"), str(_source_arg())]

from hostile import CLEAN, corpus, judge  # noqa: E402

VERBS = ("info", "convert")


def _limit(memory_bytes: int):
    def apply():
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    return apply


def run_subprocess(argv, timeout: float, memory_bytes: int, source: Path = REPO) -> tuple[int | None, str]:
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONPATH": str(source)}
    try:
        p = subprocess.run([sys.executable, "-m", "medgen.cli", *argv], capture_output=True, text=True,
                           errors="replace", timeout=timeout, preexec_fn=_limit(memory_bytes), env=env, cwd=source)
    except subprocess.TimeoutExpired:
        return None, ""
    return p.returncode, p.stderr


def run_in_process(argv) -> tuple[int | None, str]:
    from medgen.cli import main

    err = io.StringIO()
    with redirect_stderr(err), redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse
            code = int(e.code or 0)
        except BaseException as e:  # noqa: BLE001 - an escaped exception is a traceback
            import traceback

            traceback.print_exc(file=err)
            code = 1
            if isinstance(e, KeyboardInterrupt):
                raise
    return code, err.getvalue()


def one_case(case, work: Path, runner) -> list[tuple[str, str, str, float]]:
    """``[(verb, verdict, detail, seconds)]`` for one case built under its own folder."""
    folder = work / case.id.replace("/", "_")
    src = folder / "in"
    src.mkdir(parents=True)
    with warnings.catch_warnings():  # pydicom's notes on the lies the builders write
        warnings.simplefilter("ignore")
        path = case.build(src)
    out = []
    for verb in VERBS:
        out_dir = folder / f"out_{verb}"
        out_dir.mkdir()
        argv = [verb, str(path)] + ([str(out_dir / "o.nii.gz")] if verb == "convert" else [])
        t0 = time.perf_counter()
        code, err = runner(argv)
        verdict = judge(case, path, verb, code, err, out_dir if verb == "convert" else None)
        seconds = time.perf_counter() - t0
        out.append((verb, verdict, f"exit {code}, {seconds:.1f} s: {err.strip()[-300:]!r}", seconds))
    return out


def table(cases, results) -> str:
    """Rows: input classes (and the total); columns: outcomes, counted per (case, verb), and the
    slowest run (a huge allocation or a near-hang shows there before it is a failure)."""
    counts: dict[str, Counter] = defaultdict(Counter)
    slowest: dict[str, float] = defaultdict(float)
    for case, res in zip(cases, results):
        for _verb, verdict, _, seconds in res:
            for key in (case.klass, "total"):
                counts[key][verdict] += 1
                slowest[key] = max(slowest[key], seconds)
    columns = [CLEAN] + sorted({v for c in counts.values() for v in c} - {CLEAN})
    n_cases = Counter(c.klass for c in cases)
    n_cases["total"] = len(cases)
    rows = [["class", "cases", "runs"] + columns + ["slowest s"]]
    for klass in sorted(counts, key=lambda k: (k == "total", k)):
        rows.append([klass, str(n_cases[klass]), str(sum(counts[klass].values()))]
                    + [str(counts[klass][c]) for c in columns] + [f"{slowest[klass]:.1f}"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 2) // 2))
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per command (default 60)")
    ap.add_argument("--memory-gib", type=float, default=4.0, help="address-space limit per command (default 4 GiB)")
    ap.add_argument("--in-process", action="store_true", help="medgen.cli.main here: fast, no limits")
    ap.add_argument("--only", default="", help="only cases whose id contains this")
    ap.add_argument("--skip", default="", help="comma-separated: leave out cases whose id contains one (e.g. "
                                               "fifo,dev-zero, which block an old tree in-process)")
    ap.add_argument("--show", type=int, default=30, help="list up to this many unclean runs")
    ap.add_argument("--source", type=Path, default=REPO,
                    help="the tree whose medgen runs (e.g. an older commit: git archive REV medgen | tar -x -C DIR)")
    args = ap.parse_args()

    skip = [t for t in args.skip.split(",") if t]
    cases = [c for c in corpus() if args.only in c.id and not any(t in c.id for t in skip)]
    if args.in_process:
        runner = run_in_process
        jobs = 1  # main() redirects the process's stderr: one at a time
    else:
        memory = int(args.memory_gib * (1 << 30))
        runner = lambda argv: run_subprocess(argv, args.timeout, memory, args.source.resolve())  # noqa: E731
        jobs = args.jobs
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hostile-") as tmp:
        with ThreadPoolExecutor(jobs) as pool:  # case building stays in threads; the CLI runs apart
            results = list(pool.map(lambda c: one_case(c, Path(tmp), runner), cases))
    took = time.perf_counter() - t0
    bad = [(c.id, verb, verdict, detail) for c, res in zip(cases, results) for verb, verdict, detail, _ in res if verdict != CLEAN]
    for cid, verb, verdict, detail in bad[: args.show]:
        print(f"{verdict:<32} {verb:<8} {cid:<40} {detail}")
    mode = f"{args.source}, in-process" if args.in_process else f"{args.source}, subprocesses, {args.timeout:g} s and {args.memory_gib:g} GiB each, {jobs} at a time"
    print(f"\n{len(cases)} cases x {len(VERBS)} commands ({mode}), {took:.0f} s; {len(bad)} runs not clean\n")
    print(table(cases, results))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
