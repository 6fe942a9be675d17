"""The ``perflab`` command: ``gen-data``, ``report``, ``sweep``, ``compare``, ``history``,
``dashboard`` and ``observe``."""

from __future__ import annotations

import argparse
import functools
import math
import os
import signal
import sys
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from perflab._validate import parse_int, parse_literal, parse_number

__all__ = ["main"]


def _whole_number(minimum: int) -> Any:
    """An argparse type: a whole number >= ``minimum``."""
    return _argparse_type(functools.partial(parse_int, minimum=minimum))


def _finite_number(minimum: float) -> Any:
    """An argparse type: a finite number >= ``minimum`` (nan and inf are refused)."""
    return _argparse_type(functools.partial(parse_number, minimum=minimum))


def _argparse_type(parse: Any) -> Any:
    """``parse`` for argparse: its ValueError becomes the option's one-line error."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return convert


def _duration(text: str) -> float:
    """An argparse type: seconds, or a number with s, m, h or d (``15m``, ``1h``)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = (text[:-1], text[-1]) if text and text[-1] in units else (text, "s")
    try:
        value = float(number) * units[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a duration such as 90s, 15m or 1h, got {text!r}") from None
    if not math.isfinite(value) or value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 s, got {text!r}")
    return value


_positive_int = _whole_number(1)
_non_negative_int = _whole_number(0)
_non_negative_number = _finite_number(0)


def _fail(command: str, message: str) -> int:
    print(f"perflab {command}: {message}", file=sys.stderr)
    return 2


def _gen_data(args: argparse.Namespace) -> int:
    from perflab.workbench.dataset import write_dataset

    out = Path(args.out)
    if out.is_dir():
        return _fail("gen-data", f"--out {str(out)!r} is a directory: give a file name such as quotes.jsonl")
    if not out.parent.is_dir():
        return _fail("gen-data", f"directory {str(out.parent)!r} does not exist")
    from perflab.jsonl.codecs import PATH_FORMATS, format_of_path

    if format_of_path(out) is None:
        known = ", ".join(PATH_FORMATS)
        return _fail("gen-data", f"--out {str(out)!r}: unknown suffix {out.suffix!r}; use one of {known}")
    if out.exists() and not args.force:
        return _fail("gen-data", f"{str(out)!r} exists: pass --force to overwrite it")
    # Written beside, then renamed: a full disk or a Ctrl-C leaves no truncated data set
    # (and an existing one as it was).
    partial = out.with_name(f".partial-{out.name}")  # the suffix still names the format
    try:
        written = write_dataset(partial, args.records, seed=args.seed, progress=not args.quiet)
        os.replace(partial, out)
    except OSError as error:
        partial.unlink(missing_ok=True)
        return _fail("gen-data", f"cannot write {str(out)!r}: {error.strerror or error}")
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    print(f"wrote {args.records:,} records, {written:,} bytes to {out}")
    return 0


def _cluster_of(args: argparse.Namespace) -> Any:
    """The Cluster that --cluster/--scheduler name, or None (raises ValueError)."""
    address = args.cluster or args.scheduler
    if address is None:
        if getattr(args, "spread", False):
            raise ValueError("--spread needs a cluster: give --cluster or --scheduler")
        return None
    from perflab.measure.cluster import Cluster

    if args.cluster is not None and not args.cluster.startswith("local:"):
        raise ValueError(f"--cluster takes local:N (N worker processes here), got {args.cluster!r}")
    if args.scheduler is not None and args.scheduler.startswith("local:"):
        raise ValueError("--scheduler takes a scheduler address like tcp://host:8786; use --cluster local:N")
    return Cluster(address, spread=getattr(args, "spread", False))


def _add_cluster_options(parser: argparse.ArgumentParser, *, spread: bool) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--cluster", metavar="local:N", help="run on N Dask worker processes on this machine")
    where.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="run on a Dask cluster, e.g. tcp://host:8786 (workers: BENCH=1)",
    )
    if spread:
        parser.add_argument(
            "--spread", action="store_true", help="spread each point's repeats across the cluster's hosts"
        )


def _report(args: argparse.Namespace) -> int:
    from perflab.workbench.report import run_report

    try:
        overrides = {name: parse_literal(value, name=f"-p {name} value") for name, value in args.param or []}
    except ValueError as error:
        return _fail("report", str(error))
    if isinstance(overrides.get("server_profile"), str) and overrides["server_profile"]:
        # The notebooks run in notebooks/: a profile named from here is passed by its full path.
        overrides["server_profile"] = str(Path(overrides["server_profile"]).resolve())
    try:
        report = run_report(
            profile=args.profile,
            out=args.out,
            only=args.only,
            notebooks_dir=args.notebooks,
            parameters=overrides,
            force=args.force,
            cluster=_cluster_of(args),
        )
    except (ValueError, FileExistsError, OSError, ImportError) as error:
        return _fail("report", str(error))
    for run in report.notebooks:
        if run.failure:
            print(f"{run.status.upper()} {run.name}: {run.failure}", file=sys.stderr)
    print(f"report: {report.index.resolve()}")
    if report.interrupted:
        return 130
    return 0 if report.ok else 1


def _ignore_further_ctrl_c() -> None:
    """The sweep was interrupted and what finished is saved: the command only says so and
    exits 130. run_sweep holds a second Ctrl-C back until its save is done; one that comes
    after (a user pressing twice) could only cut this last line short with a traceback."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _sweep(args: argparse.Namespace) -> int:
    from perflab.measure.sweep import SweepInterrupted
    from perflab.workbench.user_sweep import Plan, TargetFailed, parse_grid, run_sweep

    try:
        grid = parse_grid(args.grid)
        plan = Plan(
            repeat=args.repeat,
            adaptive=not args.fixed,
            order=args.order,
            cooldown=args.cooldown,
            objective=args.objective,
            constraints=tuple(args.constraint),
            cheaper=tuple(args.cheaper),
        )
        run = run_sweep(
            args.target,
            grid,
            plan=plan,
            out=args.out,
            loop=args.loop,
            force=args.force,
            cluster=_cluster_of(args),
        )
    except SweepInterrupted as stop:
        _ignore_further_ctrl_c()
        saved = f"saved to {stop.saved_to}" if len(stop.frame) else "nothing had finished"
        print(f"perflab sweep: interrupted; {len(stop.frame)} finished runs {saved}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        _ignore_further_ctrl_c()
        print("perflab sweep: interrupted before the first run", file=sys.stderr)
        return 130
    except TargetFailed as error:  # the user's function, not the arguments
        print(f"perflab sweep: {error}", file=sys.stderr)
        return 1
    except (ValueError, TypeError, FileExistsError, OSError, ImportError) as error:
        return _fail("sweep", str(error))
    print(run.finding.conclusion.replace("**", "").replace("`", ""))
    print(f"report: {run.index.resolve()}")
    for line in run.failures:
        print(f"perflab sweep: {args.target} failed at {line}", file=sys.stderr)
    return 1 if run.failures else 0


def _history(args: argparse.Namespace) -> int:
    import pandas as pd

    from perflab.workbench.history import analyze_history, change_text, load_history, write_history

    skipped: list[tuple[Path, str]] = []
    try:
        runs = load_history(args.reports, skipped=skipped)
    except (ValueError, OSError) as error:
        return _fail("history", str(error))
    for folder, problem in skipped:
        print(f"perflab history: skipped {folder.name}: {problem}", file=sys.stderr)
    if not runs:
        return _fail("history", f"{args.reports} holds no report runs (folders with */results.json)")
    history = analyze_history(runs)
    page = write_history(history, args.out or Path(args.reports) / "history.html")
    hosts = len(history.hosts)
    print(f"{len(runs)} runs on {hosts} host(s); {len(history.changes)} change(s) found")
    regressions = history.regressions()
    if not regressions.empty:
        shown = regressions[["host", "notebook", "point", "metric", "kind", "at_run", "change"]].assign(
            change=[
                change_text(c, d)
                for c, d in zip(regressions["change"], regressions["difference"], strict=True)
            ]
        )
        with pd.option_context("display.width", 200, "display.max_columns", None):
            print(shown.to_string(index=False))
    print(f"history: {Path(page).resolve()}")
    if args.fail_on_regression is not None:
        beyond = regressions[regressions["change"].abs() * 100 >= args.fail_on_regression]
        if not beyond.empty:
            print(
                f"{len(beyond)} regression(s) of {args.fail_on_regression:g}% or more in the latest run",
                file=sys.stderr,
            )
            return 1
    return 0


def _dashboard(args: argparse.Namespace) -> int:
    import json

    from perflab.workbench.monitoring import dashboard

    try:
        model = dashboard(
            title=args.title,
            job=args.job,
            pool=args.pool,
            limiter=args.limiter,
            api=args.api,
            loop=args.loop,
            collector=args.collector,
        )
    except ValueError as error:
        return _fail("dashboard", str(error))
    text = json.dumps(model, indent=2)
    if args.out is None:
        print(text)
        return 0
    out = Path(args.out)
    if out.is_dir():
        return _fail("dashboard", f"--out {str(out)!r} is a folder: give a file name such as dashboard.json")
    if out.exists() and not args.force:
        return _fail("dashboard", f"{str(out)!r} exists: pass --force to overwrite it")
    try:
        out.write_text(text + "\n", encoding="utf-8")
    except OSError as error:
        return _fail("dashboard", f"cannot write {str(out)!r}: {error.strerror or error}")
    print(f"wrote the Grafana dashboard to {out} (Dashboards > Import, then pick the Prometheus data source)")
    return 0


def _status(text: str) -> int:
    """An HTTP status on the command line."""
    value = parse_int(text)
    if not 100 <= value <= 599:
        raise argparse.ArgumentTypeError(f"an HTTP status is 100-599, got {text}")
    return value


def _observed(args: argparse.Namespace) -> Any:
    """The server profile the command's options ask for; observe's warnings (a clamped
    window) go to stderr. Raises what observe raises."""
    from perflab.workbench.observe import observe

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        profile = observe(
            args.prometheus,
            args.job,
            range_s=args.range,
            api=getattr(args, "api", None),
            rate_statuses=getattr(args, "rate_status", None) or (429,),
            cap_statuses=getattr(args, "cap_status", None) or (503,),
        )
    for warning in caught:
        print(f"perflab {args.command}: warning: {warning.message}", file=sys.stderr)
    return profile


def _observe(args: argparse.Namespace) -> int:
    try:
        profile = _observed(args)
    except (ValueError, ConnectionError) as error:
        return _fail("observe", str(error))
    print(profile.describe())
    for key, value in profile.as_dict().items():
        print(f"  {key:18s} {value:,.4g}" if isinstance(value, float) else f"  {key:18s} {value}")
    if args.out:
        try:
            profile.save(args.out, replace=args.force)
        except FileExistsError as error:
            return _fail("observe", f"{error}: pass --force to overwrite it")
        print(f"wrote {args.out}: pass it to a notebook as -p server_profile {args.out}")
    return 0


def _lab_against_observed(args: argparse.Namespace) -> int:
    import pandas as pd

    from perflab.workbench.observe import lab_against_observed

    try:
        table = lab_against_observed(args.run_a, _observed(args))
    except (ValueError, ConnectionError, OSError) as error:
        return _fail("compare", str(error))
    print(f"lab ({args.run_a}) against {args.job} over the last {args.range:g} s:")
    with pd.option_context("display.width", 200, "display.max_columns", None):
        print(table.to_string(index=False, float_format=lambda v: f"{v:,.4g}"))
    worse = table[table["verdict"].str.startswith("worse")]
    return 1 if args.fail_on_regression is not None and not worse.empty else 0


def _print_decisions(run_a: str, run_b: str, names: Sequence[str]) -> None:
    """Each notebook's recommendation in both runs: same, or moved (within the noise or not)."""
    from perflab.workbench.findings import decision_move, move_text
    from perflab.workbench.runs import load_finding

    folders = [Path(run) for run in (run_a, run_b)]
    if not all(folder.is_dir() for folder in folders):
        return  # results files alone carry no recommendation
    lines = []
    for name in names:
        before, after = (load_finding(folder / name) for folder in folders)
        if before is None and after is None:
            continue
        lines.append(f"  {name}: {move_text(decision_move(before, after))}")
    if lines:
        print("\nrecommended settings, run A -> run B:")
        print("\n".join(lines))


def _compare(args: argparse.Namespace) -> int:
    import pandas as pd

    if args.prometheus is not None:
        if args.run_b is not None or args.job is None:
            return _fail(
                "compare", "with --prometheus give one run and --job NAME (the lab against production)"
            )
        return _lab_against_observed(args)
    if args.run_b is None:
        return _fail("compare", "give two runs, or one run with --prometheus URL --job NAME")

    from perflab.measure.analysis import compare_runs, comparison_table
    from perflab.workbench.runs import load_run

    try:
        baseline, candidate = load_run(args.run_a), load_run(args.run_b)
    except (ValueError, OSError) as error:
        print(f"perflab compare: {error}", file=sys.stderr)
        return 2
    from perflab.measure.metadata import host_fingerprint

    hosts = {host_fingerprint(r.metadata) for run in (baseline, candidate) for r in run.values()}
    # A run measured on a cluster carries each sample's host: it is compared host by host.
    by_host = any(r.hosts for run in (baseline, candidate) for r in run.values())
    if by_host:
        print("the runs hold samples of several hosts: compared host by host (never across)")
    elif len(hosts) > 1 and not args.cross_host:
        labels = "; ".join(label for _, label in sorted(hosts))
        return _fail(
            "compare",
            f"the runs come from different hosts ({labels}): their difference is the hardware as much "
            "as the code; pass --cross-host to compare them anyway",
        )
    shared = [name for name in baseline if name in candidate]
    if not shared:
        print("perflab compare: the runs share no notebook", file=sys.stderr)
        return 2
    tables = []
    for name in shared:
        table = compare_runs(baseline[name], candidate[name], min_effect=args.min_effect)
        if table.empty:
            continue
        shown = comparison_table(table)
        print(f"\n== {name}: {_verdicts(table)}")
        with pd.option_context("display.max_rows", None, "display.width", 200, "display.max_columns", None):
            print(shown.to_string(index=False, float_format=lambda v: f"{v:,.4g}"))
        tables.append(table.assign(notebook=name))
    if not tables:
        print("perflab compare: no parameter point and metric in common", file=sys.stderr)
        return 2
    table = pd.concat(tables, ignore_index=True)
    print(f"\nall notebooks: {_verdicts(table)}")
    _print_decisions(args.run_a, args.run_b, shared)
    if args.fail_on_regression is not None:
        worse = table[
            (table["verdict"] == "slower") & ((table["ratio"] - 1).abs() * 100 >= args.fail_on_regression)
        ]
        if not worse.empty:
            print(f"{len(worse)} regression(s) beyond {args.fail_on_regression:g}%", file=sys.stderr)
            return 1
    return 0


def _verdicts(table: Any) -> str:
    counts = table["verdict"].value_counts()
    total = len(table)
    unchanged = int(counts.get("no significant change", 0))
    text = (
        f"{total} comparisons, {unchanged} ({unchanged / total:.0%}) no significant change, "
        f"{int(counts.get('faster', 0))} faster, {int(counts.get('slower', 0))} slower"
    )
    few = int(counts.get("too few samples", 0))
    return text + (f", {few} with too few samples to tell" if few else "")


class _Parser(argparse.ArgumentParser):
    """Bad arguments give one line on stderr and exit status 2 (no usage dump)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="perflab", description="A performance workbench for asyncio collectors.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    gen = commands.add_parser("gen-data", help="write the realistic market-data JSONL data set")
    gen.add_argument("--records", type=_positive_int, required=True, help="how many records (>= 1)")
    gen.add_argument("--out", required=True, help="output file: .jsonl, .gz (gzip) or .zst (zstd)")
    gen.add_argument("--seed", type=_non_negative_int, default=0, help="random seed (default 0)")
    gen.add_argument("--force", action="store_true", help="overwrite an existing file")
    gen.add_argument("--quiet", action="store_true", help="no progress bar")
    gen.set_defaults(run=_gen_data)

    report = commands.add_parser("report", help="run the notebooks into a dated HTML report")
    report.add_argument("--profile", default="quick", help="quick (the notebooks' defaults) or full")
    report.add_argument("--out", help="write the run here instead of reports/<timestamp>-<profile>/")
    report.add_argument("--only", nargs="+", metavar="NAME", help="run only these notebooks")
    report.add_argument(
        "-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"), help="set a notebook parameter"
    )
    report.add_argument("--notebooks", default="notebooks", help="the notebooks folder (default notebooks/)")
    report.add_argument("--force", action="store_true", help="write into an --out folder that is not empty")
    _add_cluster_options(report, spread=False)
    report.set_defaults(run=_report)

    swp = commands.add_parser("sweep", help="sweep your own sync or async function over a grid")
    swp.add_argument(
        "target", help="MODULE:FUNCTION, e.g. mypkg.mod:fetch (the current folder is importable)"
    )
    swp.add_argument(
        "--grid", action="append", required=True, metavar="NAME=V1,V2", help="a parameter and its values"
    )
    swp.add_argument("--repeat", type=_positive_int, default=12, help="most repeats per point (default 12)")
    swp.add_argument("--fixed", action="store_true", help="always take --repeat repeats (no adaptive stop)")
    swp.add_argument(
        "--objective",
        default="seconds:min",
        metavar="METRIC[:min|max]",
        help="what to optimise (default seconds:min)",
    )
    swp.add_argument(
        "--constraint",
        action="append",
        default=[],
        metavar="EXPR",
        help="a limit every recommended setting meets, e.g. 'rejected==0' or 'p99_ms<=50' (repeatable)",
    )
    swp.add_argument(
        "--cheaper",
        action="append",
        default=[],
        metavar="NAME[:asc|desc]",
        help="the cost order: which settings are cheaper (default: the first parameter, ascending)",
    )
    swp.add_argument(
        "--order",
        choices=["interleaved", "grouped"],
        default="interleaved",
        help="interleave the points' repeats (default), or run a point's repeats back to back",
    )
    swp.add_argument(
        "--cooldown", type=_non_negative_number, default=0.0, metavar="SECONDS", help="pause after each run"
    )
    swp.add_argument("--out", help="write the report here instead of reports/<timestamp>-sweep-<name>/")
    swp.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio", help="event loop for async")
    swp.add_argument("--force", action="store_true", help="write into an --out folder that is not empty")
    _add_cluster_options(swp, spread=True)
    swp.set_defaults(run=_sweep)

    compare = commands.add_parser("compare", help="compare two report runs metric by metric")
    compare.add_argument("run_a", help="baseline: a report folder or a results.json")
    compare.add_argument("run_b", nargs="?", help="candidate: a report folder or a results.json")
    compare.add_argument(
        "--prometheus", metavar="URL", help="hold run_a's collector prediction against production"
    )
    compare.add_argument("--job", help="the Prometheus job of the running collector (with --prometheus)")
    compare.add_argument(
        "--range", type=_duration, default=3600.0, help="the observed window, e.g. 15m, 1h (default 1h)"
    )
    compare.add_argument(
        "--fail-on-regression",
        type=_non_negative_number,
        metavar="PCT",
        help="exit 1 if worse by PCT%% or more",
    )
    compare.add_argument(
        "--min-effect",
        type=_non_negative_number,
        default=None,
        help="smallest change that counts (0.03 = 3%%)",
    )
    compare.add_argument("--cross-host", action="store_true", help="compare runs from different hosts")
    compare.set_defaults(run=_compare)

    hist = commands.add_parser("history", help="trends, changes and regressions across dated runs")
    hist.add_argument("reports", nargs="?", default="reports", help="the reports folder (default reports/)")
    hist.add_argument("--out", help="the page to write (default REPORTS/history.html)")
    hist.add_argument(
        "--fail-on-regression",
        type=_non_negative_number,
        metavar="PCT",
        help="exit 1 if the latest run has a detected regression of PCT%% or more",
    )
    hist.set_defaults(run=_history)

    dash = commands.add_parser(
        "dashboard", help="write a Grafana dashboard (JSON) over your pool, limiter, API and loop"
    )
    dash.add_argument("--out", help="write here instead of printing")
    dash.add_argument("--job", default="perflab-collector", help="the Prometheus job to show (a variable)")
    dash.add_argument("--title", default="perflab service", help="the dashboard's title")
    dash.add_argument("--pool", default="collector", help="the name given to exporter.add_pool")
    dash.add_argument("--limiter", default="api", help="the name given to exporter.add_limiter")
    dash.add_argument("--api", default="api", help="the name given to exporter.add_api")
    dash.add_argument("--loop", default="main", help="the name given to exporter.watch_loop")
    dash.add_argument(
        "--collector",
        action="store_true",
        help="add the simulated collector's panels (symbols, gaps, cycles)",
    )
    dash.add_argument("--force", action="store_true", help="overwrite an existing file")
    dash.set_defaults(run=_dashboard)

    obs = commands.add_parser("observe", help="a server profile of the API a service calls, from Prometheus")
    obs.add_argument("--prometheus", required=True, metavar="URL", help="e.g. http://localhost:9090")
    obs.add_argument("--job", required=True, help="the service's Prometheus job")
    obs.add_argument("--api", help="the name given to exporter.add_api (default: the job's only one)")
    obs.add_argument(
        "--rate-status",
        type=_status,
        action="append",
        help="a status the rate limit refuses with (repeatable; default 429)",
    )
    obs.add_argument(
        "--cap-status",
        type=_status,
        action="append",
        help="a status the concurrency cap refuses with (repeatable; default 503)",
    )
    obs.add_argument("--range", type=_duration, default=3600.0, help="the window, e.g. 15m, 1h (default 1h)")
    obs.add_argument("--out", help="write the profile (JSON) here, for a notebook's server_profile")
    obs.add_argument("--force", action="store_true", help="overwrite an existing file")
    obs.set_defaults(run=_observe)
    return parser


#: What ``pip install 'perflab[workbench]'`` adds: a command that needs one of them, run on
#: the core alone, says which extra to install instead of a traceback.
WORKBENCH_PACKAGES = frozenset(
    {"pandas", "matplotlib", "scipy", "papermill", "nbconvert", "ipykernel", "ruptures", "tqdm", "nbformat"}
)
#: The same for the other extras.
OTHER_EXTRAS = {"prometheus_client": "metrics", "distributed": "cluster", "dask": "cluster"}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except ModuleNotFoundError as error:
        top = (error.name or "").partition(".")[0]
        extra = "workbench" if top in WORKBENCH_PACKAGES else OTHER_EXTRAS.get(top)
        if extra is None:
            raise
        return _fail(args.command, f"needs {top}, from the {extra} extra: pip install 'perflab[{extra}]'")


if __name__ == "__main__":
    sys.exit(main())
