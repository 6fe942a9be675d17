"""A profile rendered for people and files: ProfileReport holds a profile's figures and the
recommendations of :mod:`perflab.profiling.rules`, as markdown, JSON, a DataFrame or (in
JupyterLab) an HTML table."""

from __future__ import annotations

import dataclasses
import datetime as dt
import html
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from perflab._files import write_new
from perflab.profiling.result import ProfileResult
from perflab.profiling.rules import Recommendation, recommend

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["ProfileReport"]


@dataclasses.dataclass(frozen=True)
class ProfileReport:
    """A profile's figures and recommendations, rendered as markdown, JSON, a DataFrame or
    (in JupyterLab) an HTML table."""

    name: str
    created: str
    result: dict[str, Any]
    recommendations: tuple[Recommendation, ...]

    @classmethod
    def from_result(cls, result: ProfileResult) -> ProfileReport:
        created = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        return cls(result.name, created, result.as_dict(), recommend(result))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "created": self.created,
            "result": self.result,
            "recommendations": [r.as_dict() for r in self.recommendations],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProfileReport:
        result = dict(data["result"])
        result["hot_spots"] = tuple(result.get("hot_spots") or ())
        recommendations = tuple(Recommendation(**r) for r in data["recommendations"])
        return cls(data["name"], data["created"], result, recommendations)

    def to_json(self, path: str | os.PathLike[str] | None = None, *, replace: bool = False) -> str:
        """The report as JSON text; also written to ``path`` if given (no overwrite unless
        ``replace``)."""
        data = orjson.dumps(self.to_dict(), option=orjson.OPT_INDENT_2)
        if path is not None:
            write_new(path, data, replace=replace)
        return data.decode()

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> ProfileReport:
        return cls.from_dict(orjson.loads(Path(path).read_bytes()))

    def to_frame(self) -> pd.DataFrame:
        """One row per recommendation."""
        import pandas as pd

        columns = [f.name for f in dataclasses.fields(Recommendation)]
        return pd.DataFrame([r.as_dict() for r in self.recommendations], columns=columns)

    def to_markdown(self) -> str:
        lines = [f"## Profile: {self.name}", "", "| metric | value |", "| --- | --- |"]
        for key, value in self.result.items():
            if key not in ("name", "hot_spots") and value is not None:
                lines.append(f"| {key} | {_cell(value)} |")
        lines += ["", "### Recommendations", ""]
        if not self.recommendations:
            lines.append("No check fired: nothing measured crossed a threshold.")
        for r in self.recommendations:
            lines.append(f"- **[{r.severity}] {r.title}** ({r.area}): {r.evidence}. {r.advice}.")
        if self.result.get("hot_spots"):
            lines += [
                "",
                "### Hot spots (self time)",
                "",
                "| function | location | share |",
                "| --- | --- | --- |",
            ]
            for spot in self.result["hot_spots"]:
                lines.append(f"| {spot['function']} | {spot['location']} | {spot['self_fraction']:.1%} |")
        return "\n".join(lines) + "\n"

    def _repr_html_(self) -> str:
        rows = (
            "".join(
                f"<tr><td>{html.escape(r.severity)}</td><td>{html.escape(r.area)}</td>"
                f"<td><b>{html.escape(r.title)}</b></td><td>{html.escape(r.evidence)}</td>"
                f"<td>{html.escape(r.advice)}</td></tr>"
                for r in self.recommendations
            )
            or "<tr><td colspan=5>No check fired: nothing measured crossed a threshold.</td></tr>"
        )
        keys = (
            "wall_seconds",
            "cpu_utilization",
            "rss_peak_mb",
            "io_write_count",
            "loop_lag_max_ms",
            "tasks_peak",
        )
        figures = " · ".join(
            f"{key} {_cell(self.result[key])}" for key in keys if self.result.get(key) is not None
        )
        return (
            f"<div><b>Profile {html.escape(self.name)}</b>: {html.escape(figures)}"
            "<table><thead><tr><th>severity</th><th>area</th><th>finding</th><th>evidence</th>"
            f"<th>advice</th></tr></thead><tbody>{rows}</tbody></table></div>"
        )


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
