"""``perflab report``: run every notebook through papermill into one dated folder, render
them as HTML and write an index with each notebook's status, duration, key figure and
recommended settings.

Notebooks run in this process through papermill's Python API (each in its own kernel).
A notebook joins the report by being added to ``notebooks/``. Its ``parameters`` cell
may declare ``output_dir``: the report injects the folder where the notebook should
``publish`` its results (``results.json``, ``results.csv``, ``summary.json``, figures).
A failing notebook does not stop the others; the failure is named (notebook and cell) and
the exit status is non-zero.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import html
import logging
import os
import re
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from perflab._files import write_new
from perflab._validate import parse_literal
from perflab.measure.cluster import RESOURCE
from perflab.measure.metadata import collect_metadata, this_host
from perflab.workbench._html import page as html_page
from perflab.workbench.runs import RESULTS, RESULTS_CSV, SUMMARY_CSV, load_finding

if TYPE_CHECKING:
    from perflab.measure.cluster import Cluster

__all__ = [
    "PROFILES",
    "NotebookRun",
    "ReportRun",
    "declared_parameters",
    "find_notebooks",
    "run_report",
    "write_index",
    "write_run_json",
]

#: The profiles, in one place. "quick" runs the notebooks' own defaults. "full" sets these
#: parameters in every notebook that declares them: more repeats, longer runs, finer grids.
#: So a parameter name means one thing in every notebook (``pool_sizes`` is the task-pool
#: sweep's grid; the capstone's coarse grid is ``coarse_pools``).
PROFILES: dict[str, dict[str, Any]] = {
    "quick": {},
    "full": {
        "repeat": 7,
        "duration_s": 0.5,
        "pool_sizes": [1, 2, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128],
        "rates": [25.0, 50.0, 100.0, 200.0, 300.0, 400.0],
        "bursts": [1, 5, 20, 50],
        "batch_sizes": [1, 10, 25, 50, 100, 200, 500],
        "flush_intervals": [0.005, 0.01, 0.02, 0.05, 0.1],
        "records": 200_000,
        "sample_records": 100_000,
        "file_records": [10_000, 100_000, 200_000, 1_000_000],
        "confirm_repeat": 5,
    },
}


@dataclasses.dataclass
class NotebookRun:
    name: str
    status: str  # "ok" or "failed"
    seconds: float
    parameters: dict[str, Any]
    failure: str | None = None
    summary: dict[str, Any] | None = None
    host: str = ""  # the fingerprint of the host it ran on (perflab.measure.metadata.this_host)
    host_label: str = ""


@dataclasses.dataclass
class ReportRun:
    directory: Path
    profile: str
    notebooks: list[NotebookRun]
    interrupted: bool = False  # Ctrl-C: the notebooks not run are "cancelled"

    @property
    def ok(self) -> bool:
        return not self.interrupted and all(n.status == "ok" for n in self.notebooks)

    def hosts(self) -> dict[str, str]:
        """Every host that measured something in this run: the notebooks' and, for a sweep
        on a cluster, its samples' (fingerprint -> label)."""
        found = {run.host: run.host_label for run in self.notebooks if run.host}
        for run in self.notebooks:
            results = self.directory / run.name / RESULTS
            if results.exists():
                found.update(orjson.loads(results.read_bytes()).get("hosts") or {})
        return found

    @property
    def index(self) -> Path:
        return self.directory / "index.html"


def find_notebooks(directory: str | os.PathLike[str]) -> dict[str, Path]:
    """The notebooks of ``directory`` by name (file stem), in name order."""
    folder = Path(directory)
    if not folder.is_dir():
        raise ValueError(f"notebooks directory {str(folder)!r} does not exist")
    return {path.stem: path for path in sorted(folder.glob("*.ipynb"))}


def declared_parameters(path: str | os.PathLike[str]) -> dict[str, dict[str, str]]:
    """The names a notebook's ``parameters`` cell assigns, each with its default's source
    text. Read with Python's own parser: papermill's line reader loses a default that
    spans lines or holds an ``=`` (a string like ``"seconds=5 cap=24"``) and warns."""
    import ast

    import nbformat

    notebook = nbformat.read(str(path), as_version=4)
    cell = next((c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])), None)
    if cell is None:
        return {}
    try:
        tree = ast.parse(cell.source)
    except SyntaxError as error:
        raise ValueError(f"{path}: the parameters cell is not valid Python: {error}") from None
    declared = {}
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        for target in targets:
            if isinstance(target, ast.Name):
                declared[target.id] = {"default": ast.get_source_segment(cell.source, value) or ""}
    return declared


def _plan(
    notebooks: Mapping[str, Path], profile: str, overrides: Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
    """Each notebook's injected parameters (its ``output_dir`` is added at run time);
    refuse names no selected notebook declares."""
    declared = {name: declared_parameters(path) for name, path in notebooks.items()}
    unknown = sorted(set(overrides) - {p for params in declared.values() for p in params})
    if unknown:
        raise ValueError(f"no selected notebook has the parameter(s) {unknown}")
    for notebook, params in declared.items():
        for key, value in overrides.items():
            if key in params:
                _check_override(notebook, key, value, params[key].get("default"))
    plan = {}
    for name, params in declared.items():
        chosen = {k: v for k, v in {**PROFILES[profile], **overrides}.items() if k in params}
        if "output_dir" in params:
            chosen["output_dir"] = None  # filled in by _run_notebook
        plan[name] = chosen
    return plan


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, list | tuple):
        return "list"
    return type(value).__name__


def _check_override(notebook: str, name: str, value: Any, default_source: str | None) -> None:
    """Refuse a -p value of another kind than the notebook's default, before any run."""
    try:
        default = parse_literal(default_source, strict=True) if default_source else None
    except ValueError:
        return  # not a literal default: the notebook checks it
    if default is None:
        return
    wanted, got = _kind(default), _kind(value)
    if wanted == "number" and got == "number" and isinstance(default, int) and isinstance(value, float):
        got = "float"
    if wanted != got:
        example = default_source if len(default_source or "") < 40 else wanted
        raise ValueError(
            f"parameter {name} of {notebook} must be a {wanted} like its default {example}, "
            f"got {type(value).__name__} {value!r} (write lists and strings as Python literals: "
            f"-p {name} {default_source!r})"
        )


def run_report(
    *,
    profile: str = "quick",
    out: str | os.PathLike[str] | None = None,
    only: Sequence[str] | None = None,
    notebooks_dir: str | os.PathLike[str] = "notebooks",
    reports_dir: str | os.PathLike[str] = "reports",
    parameters: Mapping[str, Any] | None = None,
    log: Any = print,
    force: bool = False,
    cluster: Cluster | None = None,
) -> ReportRun:
    """Run the notebooks and write the report; see the module docstring. An ``out``
    folder that exists and is not empty is refused unless ``force``. With ``cluster``
    each notebook is one task on that Dask cluster (one per host at a time, see
    :mod:`perflab.measure.cluster`): the worker runs it in a scratch folder and sends its files
    back, so hosts need perflab installed but no shared disk. Ctrl-C cancels the
    notebooks not run yet and still writes the report of those that finished."""
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {sorted(PROFILES)}, got {profile!r}")
    notebooks = find_notebooks(notebooks_dir)
    if not notebooks:
        raise ValueError(f"no notebooks in {str(notebooks_dir)!r}")
    if only:
        unknown = sorted(set(only) - set(notebooks))
        if unknown:
            raise ValueError(f"unknown notebook(s) {unknown}; there are {sorted(notebooks)}")
        notebooks = {name: notebooks[name] for name in notebooks if name in set(only)}
    plan = _plan(notebooks, profile, dict(parameters or {}))
    if out is not None and not force and Path(out).exists():
        if not Path(out).is_dir() or any(Path(out).iterdir()):
            raise FileExistsError(f"{out} exists and is not empty: pass --force to write the run into it")
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    directory = Path(out) if out is not None else Path(reports_dir) / f"{stamp}-{profile}"
    directory.mkdir(parents=True, exist_ok=out is not None)
    started = time.perf_counter()
    if cluster is not None:
        runs, interrupted = _run_on_cluster(notebooks, plan, directory, cluster, log)
    else:
        runs, interrupted = [], False
        try:
            for name, path in notebooks.items():
                log(f"running {name} ({profile}) ...")
                run = _run_notebook(name, path, directory, plan[name])
                log(f"  {run.status} in {run.seconds:.1f} s" + (f": {run.failure}" if run.failure else ""))
                runs.append(run)
        except KeyboardInterrupt:
            interrupted = True
            done = {run.name for run in runs}
            runs += [_cancelled(name, plan[name]) for name in notebooks if name not in done]
    report = ReportRun(directory, profile, runs, interrupted)
    metadata = collect_metadata()
    write_run_json(report, metadata, time.perf_counter() - started)
    write_index(report, metadata)
    return report


def _cancelled(name: str, injected: Mapping[str, Any]) -> NotebookRun:
    params = {k: v for k, v in injected.items() if k != "output_dir"}
    return NotebookRun(name, "cancelled", 0.0, params, "cancelled (Ctrl-C) before it finished")


def _run_on_cluster(
    notebooks: Mapping[str, Path],
    plan: Mapping[str, dict[str, Any]],
    directory: Path,
    cluster: Cluster,
    log: Any,
) -> tuple[list[NotebookRun], bool]:
    """Each notebook as one task; the files each sends back are written into
    ``directory`` as a local run would have written them."""
    from distributed import as_completed
    from distributed.scheduler import KilledWorker

    started = cluster.started
    if not started:
        cluster.start()
    client = cluster.client
    futures = {
        client.submit(
            notebook_task,
            name,
            path.read_bytes(),
            plan[name],
            _input_files(plan[name]),
            key=f"perflab-report-{name}-{uuid.uuid4().hex}",
            pure=False,
            resources={RESOURCE: 1},
        ): name
        for name, path in notebooks.items()
    }
    log(f"running {len(futures)} notebooks on {cluster.address} ...")
    finished: dict[str, NotebookRun] = {}
    interrupted = False
    try:
        for future in as_completed(futures):
            name = futures[future]
            try:
                run, files = future.result()
            except KilledWorker as error:
                params = {k: v for k, v in plan[name].items() if k != "output_dir"}
                run, files = NotebookRun(name, "failed", 0.0, params, f"its worker died: {error}"), {}
            for relative, data in files.items():
                target = directory / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            finished[name] = run
            where = f" on {run.host_label}" if run.host_label else ""
            log(
                f"  {name}: {run.status} in {run.seconds:.1f} s{where}"
                + (f": {run.failure}" if run.failure else "")
            )
    except KeyboardInterrupt:
        interrupted = True
        client.cancel(list(futures))
    finally:
        if not started:
            cluster.close()
    runs = [finished.get(name) or _cancelled(name, plan[name]) for name in notebooks]
    return runs, interrupted


def _input_files(injected: Mapping[str, Any]) -> dict[str, tuple[str, bytes]]:
    """The files a notebook's parameters name (e.g. ``server_profile``), to send along:
    a worker on another host has no copy."""
    return {
        key: (Path(value).name, Path(value).read_bytes())
        for key, value in injected.items()
        if isinstance(value, str) and value and os.path.isabs(value) and os.path.isfile(value)
    }


def notebook_task(
    name: str, source: bytes, injected: dict[str, Any], inputs: Mapping[str, tuple[str, bytes]] | None = None
) -> tuple[NotebookRun, dict[str, bytes]]:
    """On a cluster worker: run one notebook (its bytes) in a scratch folder and return
    its run and every file it wrote, by path relative to the report folder. ``inputs``
    are the files its parameters name, written beside it and the parameters pointed there."""
    import shutil
    import tempfile

    scratch = Path(tempfile.mkdtemp(prefix=f"perflab-report-{name}-"))
    try:
        path = scratch / "notebooks" / f"{name}.ipynb"
        path.parent.mkdir()
        path.write_bytes(source)
        params = dict(injected)
        for key, (filename, data) in (inputs or {}).items():
            (scratch / "inputs" / key).mkdir(parents=True)
            (scratch / "inputs" / key / filename).write_bytes(data)
            params[key] = str(scratch / "inputs" / key / filename)
        out = scratch / "run"
        run = _run_notebook(name, path, out, params)
        # The parameters as given (a named file by its path on the host that asked).
        run.parameters = {key: value for key, value in injected.items() if key != "output_dir"}
        files = {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return run, files


def _kernel_manager_class() -> type:
    """Kernels talk over IPC sockets in a private temporary folder: no open TCP ports on
    a shared machine (and no warning about unencrypted TCP from ipykernel)."""
    import tempfile
    import uuid

    from jupyter_client.manager import AsyncKernelManager

    class IPCKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.transport = "ipc"
            self.ip = os.path.join(
                tempfile.mkdtemp(prefix="perflab-kernel-"), f"kernel-{uuid.uuid4().hex[:8]}"
            )

    return IPCKernelManager


def _inline_markdown(text: str) -> str:
    """Escape, then render the **bold** and `code` a conclusion uses."""
    escaped = html.escape(text)
    escaped = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", escaped)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", escaped)


class _PapermillParameterNoise(logging.Filter):
    """Drops papermill's warnings about parameters cells its line reader cannot parse
    (a default that spans lines or holds an ``=``): perflab checked the parameters with
    Python's own parser (:func:`declared_parameters`), so those warnings are only noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not message.startswith(("Unable to parse line", "Passed unknown parameter"))


@contextlib.contextmanager
def _without_papermill_parameter_noise() -> Iterator[None]:
    noise = _PapermillParameterNoise()
    loggers = [logging.getLogger(name) for name in ("papermill", "papermill.translators")]
    for logger in loggers:
        logger.addFilter(noise)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(noise)


def _run_notebook(name: str, path: Path, directory: Path, injected: dict[str, Any]) -> NotebookRun:
    import papermill
    from papermill.exceptions import PapermillExecutionError

    output_dir = directory / name
    output_dir.mkdir(parents=True, exist_ok=True)
    executed = directory / f"{name}.ipynb"
    params = dict(injected)
    if "output_dir" in params:
        params["output_dir"] = str(output_dir.resolve())
    started = time.perf_counter()
    failure = None
    try:
        with _without_papermill_parameter_noise():
            papermill.execute_notebook(
                str(path),
                str(executed),
                parameters=params,
                cwd=str(path.parent),
                progress_bar=False,
                log_output=False,
                kernel_manager_class=_kernel_manager_class(),
            )
    except PapermillExecutionError as error:
        failure = f"cell {error.exec_count} raised {error.ename}: {error.evalue}"
    except Exception as error:  # kernel died, notebook unreadable, ...: still report it
        failure = f"{type(error).__name__}: {error}"
    seconds = time.perf_counter() - started
    if executed.exists():
        _render_html(executed, directory / f"{name}.html")
    summary = load_finding(output_dir)
    status = "failed" if failure else "ok"
    host, host_label = this_host()
    params = {k: v for k, v in params.items() if k != "output_dir"}
    return NotebookRun(name, status, seconds, params, failure, summary, host, host_label)


def _render_html(notebook: Path, target: Path) -> None:
    import nbformat
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nbformat.read(str(notebook), as_version=4))
    target.write_text(body, encoding="utf-8")


def write_run_json(report: ReportRun, metadata: dict[str, Any], seconds: float) -> None:
    payload = {
        "profile": report.profile,
        "profile_parameters": PROFILES.get(report.profile, {}),
        "seconds": seconds,
        "ok": report.ok,
        "notebooks": [dataclasses.asdict(run) for run in report.notebooks],
        "metadata": metadata,
    }
    write_new(report.directory / "run.json", orjson.dumps(payload, option=orjson.OPT_INDENT_2), replace=True)


_REPORT_STYLE = """
.card { display: flex; gap: 1.2em; border: 1px solid #ddd; border-radius: 6px; padding: 1em;
        margin: 1em 0; background: #fff; }
.card.failed, .card.cancelled { background: #fde8e8; border-color: #e0a0a0; }
.figure { flex: 0 0 340px; }
.figure img { width: 340px; height: auto; border: 1px solid #eee; }
.nofig { width: 340px; height: 120px; display: flex; align-items: center; justify-content: center;
         color: #999; border: 1px dashed #ccc; }
.text { flex: 1; min-width: 0; }
.text h2 { font-size: 1.15em; margin: 0 0 0.2em; }
.failed .status, .cancelled .status { color: #a00; font-weight: bold; }
.key { font-size: 1.1em; font-weight: 600; margin: 0.5em 0 0.3em; }
.settings { margin: 0.2em 0 0.5em; padding-left: 1.2em; font-size: 0.92em; }
.conclusion { font-size: 0.92em; }
.decision { font-size: 0.85em; color: #2a6b2a; margin: 0.2em 0; }
.decision.open { color: #9a5b00; }
.files { font-size: 0.82em; color: #666; }
@media (max-width: 800px) { .card { flex-direction: column; } .figure, .figure img { width: 100%; } }
"""


def _decision_line(card: Mapping[str, Any] | None) -> str:
    """How sure the card's recommendation is: PCS, settled or not, runs, ties."""
    if not card:
        return ""
    esc = html.escape
    state = "settled" if card.get("settled") else "not settled"
    ties = card.get("indistinguishable") or []
    tied = ", ".join(", ".join(f"{k}={v}" for k, v in point.items()) for point in ties)
    line = f"PCS {float(card.get('pcs', 0)):.0%} · {state} · {card.get('runs', '?')} runs"
    if tied:
        line += f" · could not be told apart from: {tied}"
    css = "decision" if card.get("settled") else "decision open"
    return f'<p class="{css}">{esc(line)}</p>\n'


def write_index(report: ReportRun, metadata: dict[str, Any]) -> None:
    """One card per notebook: its main figure as a thumbnail (linked to the full size),
    the key figure, the recommended settings and the conclusion, then its files."""
    esc = html.escape
    hosts = report.hosts()
    mixed = len(hosts) > 1
    cards = []
    for run in report.notebooks:
        summary = run.summary or {}
        folder = report.directory / run.name
        recommended = summary.get("recommended") or {}
        settings = "".join(f"<li><b>{esc(str(k))}</b> = {esc(str(v))}</li>" for k, v in recommended.items())
        figures = [f for f in summary.get("figures", []) if (folder / f).exists()]
        figures += [
            f"figures/{p.name}"
            for p in sorted((folder / "figures").glob("*.png"))
            if f"figures/{p.name}" not in figures
        ]
        thumb = '<div class="nofig">no figure</div>'
        if figures:
            main = f"{run.name}/{figures[0]}"
            thumb = f'<a href="{main}"><img src="{main}" alt="{esc(run.name)}: main figure"></a>'

        has_page = (report.directory / f"{run.name}.html").exists()
        links = [f'<a href="{run.name}.html">notebook</a>'] if has_page else []
        title = esc(summary.get("title", run.name))
        if has_page:
            title = f'<a href="{run.name}.html">{title}</a>'
        links += [
            f'<a href="{run.name}/{f}">{f}</a>'
            for f in (RESULTS, RESULTS_CSV, SUMMARY_CSV)
            if (folder / f).exists()
        ]
        links += [f'<a href="{run.name}/{f}">{esc(Path(f).stem)}</a>' for f in figures[1:]]
        status = {"ok": "ok", "cancelled": "CANCELLED"}.get(run.status, f"FAILED: {run.failure}")
        where = f" · on {esc(run.host_label)}" if mixed and run.host_label else ""
        cards.append(
            f"""<section class="card {run.status}">
<div class="figure">{thumb}</div>
<div class="text">
<h2>{title}</h2>
<p class="meta">{esc(run.name)} · <span class="status">{esc(status)}</span> · {run.seconds:.1f} s{where}</p>
<p class="key">{esc(str(summary.get("key_figure", "")))}</p>
{_decision_line(summary.get("decision"))}<ul class="settings">{settings}</ul>
<p class="conclusion">{_inline_markdown(str(summary.get("conclusion", "")))}</p>
<p class="files">{" · ".join(links)}</p>
</div>
</section>"""
        )
    machine = (
        f"{metadata['cpu_model']}, {metadata['cpu_count']} CPUs, {metadata['memory_total_gb']} GiB, "
        f"{metadata['os']}, Python {metadata['python']}, load {metadata['load_average']}"
    )
    commit = (metadata.get("git") or {}).get("commit", "no git")
    ok = sum(r.status == "ok" for r in report.notebooks)
    warning = ""
    if mixed:
        labels = "; ".join(f"{esc(label)} ({esc(key)})" for key, label in sorted(hosts.items()))
        warning = (
            f'<p class="warning">This run mixes {len(hosts)} hosts: {labels}. Their samples are never '
            "pooled (every summary is per host); to combine hosts, compare ratios against a baseline "
            "measured on the same host.</p>"
        )
    if report.interrupted:
        warning += '<p class="warning">Interrupted (Ctrl-C): the cancelled notebooks did not run.</p>'
    body = f"""<h1>perflab report: {esc(report.directory.name)}</h1>
<p>Profile <b>{esc(report.profile)}</b> · {ok} of {len(report.notebooks)} notebooks ok ·
{esc(metadata["time"])} · commit {esc(str(commit))}</p>
<p class="meta">{esc(machine)} · <a href="run.json">run.json</a></p>
{warning}
{"".join(cards)}
<p class="meta">Every figure is a median of repeated runs with its spread in the notebook's plots;
compare two runs with <code>perflab compare RUN_A RUN_B</code>.</p>"""
    page = html_page(f"perflab report {report.directory.name}", body, style=_REPORT_STYLE)
    report.index.write_text(page, encoding="utf-8")
