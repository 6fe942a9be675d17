"""Decisions under noise: which setting to run with, and how sure that is.

A sweep measures settings; a recommendation picks one, and a user acts on it. :func:`decide`
picks it the way ranking-and-selection procedures of simulation optimisation do (Kim &
Nelson 2001; Andradottir & Kim 2010 for constrained systems): among the settings that meet
every constraint, the *cheapest* one (by a stated cost order: fewer workers, a smaller
buffer, a lower rate) whose objective is within an indifference zone (default 5%) of the
best feasible one's, with the probability of correct selection (PCS) it reached.

How each setting is judged, from its repeats (a bootstrap of the medians; settings measured
on the same repeats of an interleaved sweep are resampled together, so common random
numbers cancel):

- **Constraints** carry their own uncertainty. ``rejected == 0`` holds only if *every*
  repeat had none (one 429 anywhere breaks it). ``p99_ms <= 50`` holds when the median
  meets it in >= ``confidence`` of the resamples, fails when it does in <= 1 - confidence,
  and is *unclear* in between.
- **The objective**: ``within`` is the probability that the setting is within the zone of
  the best feasible setting. A setting is *significantly worse* when that probability is
  below 1 - confidence.

The choice: the cheapest feasible setting that is not significantly worse than the best
beyond the zone (so a tie goes to the cheaper setting); every cheaper setting is ruled out
(infeasible or significantly worse, with the figure) or, when its feasibility is unclear,
still open. The PCS is the probability that the chosen setting is feasible and truly
within the zone; the decision is *settled* when it reaches ``confidence`` and nothing
cheaper is open (a settled decision is right at least that often; an unsettled one says
so, with its PCS); otherwise it says
what is open, and :class:`UntilDecided` (a sweep's ``adaptive=``) repeats exactly those
settings and the ones that could be the best. Nothing feasible: no recommendation, and the decision says
what each setting broke.
"""

from __future__ import annotations

import dataclasses
import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from perflab._validate import check_int, check_number

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "Constraint",
    "CostOrder",
    "Decision",
    "Objective",
    "SettingVerdict",
    "UntilDecided",
    "decide",
]

_RESAMPLES = 2000
_SEED = 20011  # fixed: the same data always gives the same decision

Direction = Literal["min", "max"]


@dataclasses.dataclass(frozen=True, slots=True)
class Objective:
    """The metric to optimise and which way (``"seconds"`` down, ``"throughput"`` up)."""

    metric: str
    direction: Direction = "min"

    def __post_init__(self) -> None:
        if not isinstance(self.metric, str) or not self.metric:
            raise TypeError(f"objective metric must be a metric name, got {self.metric!r}")
        if self.direction not in ("min", "max"):
            raise ValueError(f"objective direction must be 'min' or 'max', got {self.direction!r}")

    @classmethod
    def parse(cls, text: str) -> Objective:
        """``"seconds"``, ``"seconds:min"`` or ``"throughput:max"``."""
        metric, _, direction = str(text).partition(":")
        return cls(metric.strip(), (direction.strip() or "min"))  # type: ignore[arg-type]

    def __str__(self) -> str:
        return f"{self.metric}:{self.direction}"


_OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "==": operator.eq,
    "<": operator.lt,
    ">": operator.gt,
}
_CONSTRAINT = re.compile(r"^\s*(?:(max|min)\(\s*)?([A-Za-z_][\w.]*)(?(1)\s*\))\s*(<=|>=|==|<|>)\s*(\S+)\s*$")


@dataclasses.dataclass(frozen=True, slots=True)
class Constraint:
    """A limit a setting must respect: ``metric op bound``, e.g. ``rejected == 0``.

    ``==`` must hold in every repeat, and so must any limit written on the worst repeat,
    ``max(cycle_s) <= 0.95`` (``every=True``); the others are judged on the median, with
    its uncertainty (see the module docstring)."""

    metric: str
    op: Literal["<=", ">=", "==", "<", ">"]
    bound: float
    every: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.metric, str) or not self.metric:
            raise TypeError(f"constraint metric must be a metric name, got {self.metric!r}")
        if self.op not in _OPERATORS:
            raise ValueError(f"constraint op must be one of {sorted(_OPERATORS)}, got {self.op!r}")
        check_number("constraint bound", self.bound)

    @classmethod
    def parse(cls, text: str) -> Constraint:
        """``"rejected==0"``, ``"p99_ms <= 50"``, ``"max(cycle_s) <= 0.95"``."""
        match = _CONSTRAINT.match(str(text))
        if match is None:
            raise ValueError(
                f"constraint {text!r} must be METRIC OP NUMBER with OP one of <=, >=, ==, <, > "
                "(e.g. 'rejected==0', 'p99_ms<=50', 'max(cycle_s)<=0.95')"
            )
        worst, metric, op, bound = match.groups()
        try:
            number = float(bound)
        except ValueError:
            raise ValueError(f"constraint {text!r}: the bound {bound!r} is not a number") from None
        if worst and (worst == "max") != (op in ("<=", "<")):
            raise ValueError(f"constraint {text!r}: bound max() from above, min() from below")
        return cls(metric, op, number, every=bool(worst))  # type: ignore[arg-type]

    @property
    def every_repeat(self) -> bool:
        """Whether every repeat must meet it (``==``, or a limit on the worst repeat)."""
        return self.every or self.op == "=="

    def holds(self, value: float) -> bool:
        return bool(_OPERATORS[self.op](value, self.bound))

    def __str__(self) -> str:
        if self.every and self.op != "==":
            return f"{'max' if self.op in ('<=', '<') else 'min'}({self.metric}) {self.op} {self.bound:g}"
        return f"{self.metric} {self.op} {self.bound:g}"


@dataclasses.dataclass(frozen=True, slots=True)
class CostOrder:
    """Which settings are cheaper: by ``parameter``, ascending (fewer workers, a smaller
    buffer, a lower rate) or descending. Several are compared in turn. A metric may stand
    for the cost where no parameter says it (``compress_mb_s:desc``: the faster codec is
    the cheaper), ranked by each setting's median."""

    parameter: str
    ascending: bool = True

    @classmethod
    def parse(cls, text: str) -> CostOrder:
        """``"pool_size"``, ``"pool_size:asc"`` or ``"level:desc"``."""
        name, _, way = str(text).partition(":")
        if way.strip() not in ("", "asc", "desc"):
            raise ValueError(f"cost order {text!r}: the direction must be 'asc' or 'desc', got {way!r}")
        if not name.strip():
            raise ValueError(f"cost order {text!r} names no parameter")
        return cls(name.strip(), way.strip() != "desc")

    def __str__(self) -> str:
        return f"{self.parameter}:{'asc' if self.ascending else 'desc'}"


Status = Literal["chosen", "infeasible", "unclear", "worse", "within", "pricier"]


@dataclasses.dataclass(frozen=True, slots=True)
class SettingVerdict:
    """One setting as the decision saw it, in cost order.

    ``change`` is how its objective median differs from the chosen setting's (+0.31: 31%
    higher; -0.2: 20% lower), with a 95% ``change_ci``; ``within`` the probability that it
    is within the zone of the best feasible setting; ``feasible`` the probability that it
    meets every constraint. ``status``: chosen; infeasible; unclear (feasibility not yet
    known); worse (significantly, beyond the zone); within (surely within the zone, but
    dearer than the chosen one); pricier (dearer, and not surely within)."""

    point: Mapping[str, Any]
    n: int
    median: float
    #: the 95% CI of ``median`` (a bootstrap of the repeats)
    median_ci: tuple[float, float]
    change: float
    change_ci: tuple[float, float]
    within: float
    feasible: float
    status: Status
    reason: str
    #: whether more repeats of it could change the decision
    contender: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            **dataclasses.asdict(self),
            "point": dict(self.point),
            "median_ci": list(self.median_ci),
            "change_ci": list(self.change_ci),
        }


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    """What :func:`decide` chose, and why.

    ``chosen`` is the recommended point (None when nothing is feasible, or nothing could be
    shown to be); ``pcs`` the probability that it is feasible and within the zone of the
    best; ``settled`` whether that reached ``confidence`` with nothing cheaper left open;
    ``indistinguishable`` the other feasible settings that are not significantly worse;
    ``settings`` every setting's verdict, cheapest first; ``why`` says, in words, what
    decided it or what is still open."""

    objective: Objective
    constraints: tuple[Constraint, ...]
    cost_order: tuple[CostOrder, ...]
    zone: float
    confidence: float
    parameters: tuple[str, ...]
    chosen: Mapping[str, Any] | None
    best: Mapping[str, Any] | None
    pcs: float
    settled: bool
    indistinguishable: tuple[Mapping[str, Any], ...]
    settings: tuple[SettingVerdict, ...]
    why: str
    #: the values of the scenario parameters this decision was made for (``UntilDecided.by``)
    scenario: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def verdict(self, point: Mapping[str, Any]) -> SettingVerdict:
        """The verdict on ``point``."""
        for setting in self.settings:
            if _same(setting.point, point):
                return setting
        raise KeyError(f"no setting {dict(point)} in this decision")

    def open_points(self) -> list[Mapping[str, Any]]:
        """The settings whose next repeats could change the decision (empty once settled):
        the cheaper ones still open, the chosen one, and those that could be the best."""
        if self.settled:
            return []
        return [s.point for s in self.settings if s.contender]

    def as_dict(self) -> dict[str, Any]:
        return {
            "objective": str(self.objective),
            "constraints": [str(c) for c in self.constraints],
            "cost_order": [str(c) for c in self.cost_order],
            "zone": self.zone,
            "confidence": self.confidence,
            "parameters": list(self.parameters),
            "chosen": None if self.chosen is None else dict(self.chosen),
            "best": None if self.best is None else dict(self.best),
            "pcs": self.pcs,
            "settled": self.settled,
            "indistinguishable": [dict(p) for p in self.indistinguishable],
            "settings": [s.as_dict() for s in self.settings],
            "why": self.why,
            "scenario": dict(self.scenario),
        }

    def to_frame(self) -> pd.DataFrame:
        """One row per setting, cheapest first: the point, n, median, change and CI, the
        probabilities, status and reason."""
        import pandas as pd

        rows = []
        for s in self.settings:
            rows.append(
                {
                    **dict(s.point),
                    "n": s.n,
                    "median": s.median,
                    "change": s.change,
                    "change_low": s.change_ci[0],
                    "change_high": s.change_ci[1],
                    "within": s.within,
                    "feasible": s.feasible,
                    "status": s.status,
                    "reason": s.reason,
                }
            )
        return pd.DataFrame(rows)

    def text(self, describe: Callable[[Mapping[str, Any]], str] | None = None) -> str:
        """The decision in words, e.g. "**buffer_size=65536**: ... It could not be told apart
        from buffer_size=262144 (+1%); the nearest cheaper, buffer_size=16384, is 31% lower on
        mb_per_s (CI 28-34%)". ``describe`` names a setting (default ``name=value, ...``)."""
        name = describe or _describe
        limits = f" while {', '.join(map(str, self.constraints))}" if self.constraints else ""
        if self.chosen is None:
            return f"No recommendation: {self.why}"
        chosen = self.verdict(self.chosen)
        zone = f"{self.zone:.0%}"
        how = f"within {zone} of" if self.settled else f"not shown to be over {zone} off"
        head = (
            f"**{name(self.chosen)}**: the cheapest setting {how} the best on "
            f"{self.objective.metric} ({self.objective.direction}){limits}; PCS {self.pcs:.0%} "
            f"after {chosen.n} repeats"
        )
        head += "." if self.settled else f", not settled: {self.why}."
        parts = []
        twins = [self.verdict(p) for p in self.indistinguishable]
        if twins:
            parts.append(
                "It could not be told apart from "
                + ", ".join(f"{name(t.point)} ({_signed_pct(t.change)})" for t in twins)
                + "."
            )
        rank = next(i for i, s in enumerate(self.settings) if s.status == "chosen")
        cheaper = [s for s in self.settings[:rank] if s.status == "worse"]
        if cheaper:
            nearest = cheaper[-1]
            further = f" ({len(cheaper) - 1} cheaper ones further off)" if len(cheaper) > 1 else ""
            parts.append(f"The nearest cheaper setting, {name(nearest.point)}, {nearest.reason}{further}.")
        broken = [s for s in self.settings if s.status == "infeasible"]
        if broken:
            shown = "; ".join(f"{name(s.point)}: {s.reason}" for s in broken[:3])
            more = f"; and {len(broken) - 3} more" if len(broken) > 3 else ""
            parts.append(f"Ruled out by the limits: {shown}{more}.")
        return " ".join([head, *parts])


def decide(
    frame: pd.DataFrame,
    parameters: Sequence[str],
    *,
    objective: str | Objective,
    constraints: Sequence[str | Constraint] = (),
    cheaper: Sequence[str | CostOrder] | None = None,
    zone: float = 0.05,
    confidence: float = 0.95,
) -> Decision:
    """Choose a setting from a tidy sweep (one row per point and repeat): the cheapest one
    that meets every constraint and is within ``zone`` of the best feasible one on
    ``objective``. ``cheaper`` is the cost order (default: the first parameter,
    ascending). See the module docstring for how each setting is judged."""
    rule = _Rule.of(parameters, objective, constraints, cheaper, zone, confidence)
    return rule.decide(frame)


@dataclasses.dataclass(frozen=True, slots=True)
class UntilDecided:
    """A sweep's ``adaptive=``: after ``min_repeat`` repeats of every setting, repeat only
    the settings that could still change the decision (see :meth:`Decision.open_points`),
    until it is settled or the sweep's ``repeat`` is reached.

    ``by`` names grid parameters that are scenarios, not settings (the latency a pool
    faces, the size of a file): one decision is made for each of their values, over the
    other parameters. ``focus`` (values of ``by``) names the scenarios whose decisions are
    followed past ``min_repeat``; the others are measured ``min_repeat`` times and decided
    on those (a scenario shown for comparison need not pay for a settled decision)."""

    objective: str | Objective
    constraints: Sequence[str | Constraint] = ()
    cheaper: Sequence[str | CostOrder] | None = None
    zone: float = 0.05
    confidence: float = 0.95
    min_repeat: int = 3
    by: Sequence[str] = ()
    focus: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        check_int("min_repeat", self.min_repeat, minimum=2)
        if isinstance(self.by, str):
            raise TypeError(f"by must be a list of parameter names, got {self.by!r}")
        if self.focus is not None:
            if not isinstance(self.focus, Mapping):
                raise TypeError(f"focus must be a mapping of by-parameters to values, got {self.focus!r}")
            unknown = [name for name in self.focus if name not in self.by]
            if unknown:
                raise ValueError(f"focus names {unknown[0]!r}, which is not in by={list(self.by)}")
        self._rule(["_"])  # a bad objective, constraint or cost order names itself now

    def followed(self, decision: Decision) -> bool:
        """Whether ``decision`` (one scenario's) gets repeats past ``min_repeat``."""
        focus = self.focus
        return focus is None or all(decision.scenario.get(k) == v for k, v in focus.items())

    def metrics(self) -> tuple[str, ...]:
        """The columns the decision reads: the objective's, then the constraints'."""
        rule = self._rule(["_"])
        return tuple(dict.fromkeys([rule.objective.metric, *(c.metric for c in rule.constraints)]))

    def decide(self, frame: pd.DataFrame, parameters: Sequence[str]) -> Decision:
        """The decision over ``parameters`` (without ``by``: use :meth:`decisions`)."""
        if self.by:
            raise ValueError(f"this rule decides by {list(self.by)}: use decisions()")
        return self._rule(parameters).decide(frame)

    def decisions(self, frame: pd.DataFrame, parameters: Sequence[str]) -> dict[str, Decision]:
        """One decision per value of ``by`` (keyed ``"latency=lognormal"``; ``""`` without
        ``by``), each over the parameters that are not in ``by``."""
        if not self.by:
            return {"": self.decide(frame, parameters)}
        lacking = [name for name in self.by if name not in parameters]
        if lacking:
            raise ValueError(f"by names {lacking[0]!r}, which is not a parameter: {list(parameters)}")
        settings = [p for p in parameters if p not in self.by]
        rule = self._rule(settings)
        out = {}
        for key, part in frame.groupby(list(self.by), sort=False):
            values = key if isinstance(key, tuple) else (key,)
            scenario = dict(zip(self.by, map(_scalar, values), strict=True))
            out[_describe(scenario)] = dataclasses.replace(rule.decide(part), scenario=scenario)
        return out

    def _rule(self, parameters: Sequence[str]) -> _Rule:
        return _Rule.of(
            parameters, self.objective, self.constraints, self.cheaper, self.zone, self.confidence
        )


# --------------------------------------------------------------------------- the rule


@dataclasses.dataclass(frozen=True, slots=True)
class _Rule:
    parameters: tuple[str, ...]
    objective: Objective
    constraints: tuple[Constraint, ...]
    cost_order: tuple[CostOrder, ...]
    zone: float
    confidence: float

    @classmethod
    def of(
        cls,
        parameters: Sequence[str],
        objective: str | Objective,
        constraints: Sequence[str | Constraint],
        cheaper: Sequence[str | CostOrder] | None,
        zone: float,
        confidence: float,
    ) -> _Rule:
        if isinstance(parameters, str) or not parameters:
            raise ValueError(f"parameters must be a non-empty list of column names, got {parameters!r}")
        if isinstance(constraints, str | Constraint):
            raise TypeError("constraints must be a list, e.g. ['rejected==0']")
        if isinstance(cheaper, str | CostOrder):
            raise TypeError("cheaper must be a list, e.g. ['pool_size:asc']")
        check_number("zone", zone, minimum=0, maximum=1)
        check_number("confidence", confidence, minimum=0.5)
        if confidence >= 1:
            raise ValueError(f"confidence must be in [0.5, 1), got {confidence}")
        goal = objective if isinstance(objective, Objective) else Objective.parse(objective)
        limits = tuple(c if isinstance(c, Constraint) else Constraint.parse(c) for c in constraints)
        order = tuple(c if isinstance(c, CostOrder) else CostOrder.parse(c) for c in cheaper or ())
        order = order or (CostOrder(parameters[0]),)
        return cls(tuple(parameters), goal, limits, order, float(zone), float(confidence))

    def decide(self, frame: pd.DataFrame) -> Decision:
        groups = _Groups.of(frame, self)
        rng = np.random.default_rng(_SEED)
        index = groups.resample_index(rng)
        feasible = [self._feasibility(groups, i, index[i], rng) for i in range(len(groups))]
        met = [i for i, (p, _) in enumerate(feasible) if p >= self.confidence]
        broken = {i for i, (p, _) in enumerate(feasible) if p <= 1 - self.confidence}
        if not met:
            return self._nothing_feasible(groups, feasible, broken)
        worse = groups.objective_medians(index, rng)  # (settings, resamples): larger is worse
        reference = worse[met].min(axis=0)
        within = (worse <= reference * (1 + self.zone)).mean(axis=1)
        # How often each feasible setting is the best one: those that could be, matter.
        best_of = np.zeros(len(groups))
        winners = np.asarray(met)[worse[met].argmin(axis=0)]
        np.add.at(best_of, winners, 1.0 / worse.shape[1])
        best = min(met, key=lambda i: (groups.worse_median(i), i))
        alpha = 1 - self.confidence
        # The cheapest setting not significantly worse than the best beyond the zone (a
        # tie goes to the cheaper one); settled once it is surely within the zone.
        chosen = next((i for i in met if within[i] >= alpha), None)
        if chosen is None:  # many near-ties: the likeliest, the cheapest of equals
            chosen = max(met, key=lambda i: (within[i], -i))
        pcs = float(within[chosen] * feasible[chosen][0])
        verdicts, open_cheaper = [], []
        for i, point in enumerate(groups.points):
            change, ci = groups.change_against(worse, i, chosen)
            probability, reason = feasible[i]
            contender = False
            if i == chosen:
                status: Status = "chosen"
                reason = f"{self.objective.metric} {_figure(groups.medians[i])}"
                contender = True
            elif i in broken:
                status = "infeasible"
            elif i not in met:
                status = "unclear" if i < chosen else "infeasible"
                contender = i < chosen
            elif within[i] < alpha:
                status = "worse"
                metric = self.objective.metric
                reason = f"is {_pct(change)} {_word(change)} on {metric} (CI {_pct_range(ci)})"
            else:  # dearer than the chosen one (every cheaper one is ruled out, or unclear)
                status = "within" if within[i] >= self.confidence else "pricier"
                reason = f"{_signed_pct(change)} (CI {_signed_pct(ci[0])} to {_signed_pct(ci[1])})"
            if contender and i != chosen:
                open_cheaper.append(i)
            contender = contender or (i in met and best_of[i] >= alpha)
            verdicts.append(
                SettingVerdict(
                    point,
                    groups.counts[i],
                    groups.medians[i],
                    groups.median_ci(worse, i),
                    change,
                    ci,
                    float(within[i]),
                    probability,
                    status,
                    reason,
                    contender,
                )
            )
        twins = tuple(groups.points[i] for i in met if i != chosen and within[i] >= alpha)
        settled = pcs >= self.confidence and not open_cheaper
        if settled:
            why = f"PCS {pcs:.0%} >= {self.confidence:.0%}"
        elif open_cheaper:
            why = "cheaper settings still open: " + "; ".join(
                f"{_describe(groups.points[i])} {verdicts[i].reason}" for i in open_cheaper
            )
        else:
            why = f"PCS {pcs:.0%} < {self.confidence:.0%}: more repeats would tell"
        return self._decision(groups.points[chosen], groups.points[best], pcs, settled, twins, verdicts, why)

    def _feasibility(
        self, groups: _Groups, i: int, index: np.ndarray, rng: np.random.Generator
    ) -> tuple[float, str]:
        """(probability that every constraint holds, the figures of those that may not)."""
        probability, reasons = 1.0, []
        for constraint in self.constraints:
            samples = groups.samples[i][constraint.metric]
            finite = samples[np.isfinite(samples)]
            if finite.size == 0:
                probability = 0.0
                reasons.append(f"{constraint.metric} was not measured")
                continue
            if constraint.every_repeat:
                held = float(all(constraint.holds(v) for v in finite))
                worst = finite[np.argmax(np.abs(finite - constraint.bound))]
                if constraint.op != "==":
                    worst = finite.max() if constraint.op in ("<=", "<") else finite.min()
                figure = f"{constraint.metric} {_figure(worst)} in a repeat (needs {constraint})"
            else:
                medians = _resampled_medians(samples, index, rng)
                held = float(np.mean(_OPERATORS[constraint.op](medians, constraint.bound)))
                low, high = np.percentile(medians, [2.5, 97.5])
                spread = f" [{_figure(low)}-{_figure(high)}]" if low != high else ""
                middle = _figure(float(np.median(finite)))
                figure = f"{constraint.metric} {middle}{spread} (needs {constraint})"
            probability *= held
            if held < self.confidence:
                reasons.append(figure)
        return probability, " and ".join(reasons)

    def _nothing_feasible(
        self, groups: _Groups, feasible: list[tuple[float, str]], broken: set[int]
    ) -> Decision:
        verdicts = []
        for i, point in enumerate(groups.points):
            probability, reason = feasible[i]
            status: Status = "infeasible" if i in broken else "unclear"
            verdicts.append(
                SettingVerdict(
                    point,
                    groups.counts[i],
                    groups.medians[i],
                    (math.nan, math.nan),
                    math.nan,
                    (math.nan, math.nan),
                    0.0,
                    probability,
                    status,
                    reason,
                    status == "unclear",
                )
            )
        unclear = [v for v in verdicts if v.status == "unclear"]
        limits = ", ".join(map(str, self.constraints))
        shown = unclear or verdicts
        why = (
            f"no setting was shown to meet {limits}; unclear: " if unclear else f"no setting meets {limits}: "
        ) + "; ".join(f"{_describe(v.point)} {v.reason}" for v in shown)
        return self._decision(None, None, 0.0, not unclear, (), verdicts, why)

    def _decision(
        self,
        chosen: Mapping[str, Any] | None,
        best: Mapping[str, Any] | None,
        pcs: float,
        settled: bool,
        twins: tuple[Mapping[str, Any], ...],
        verdicts: list[SettingVerdict],
        why: str,
    ) -> Decision:
        return Decision(
            self.objective, self.constraints, self.cost_order, self.zone, self.confidence,
            self.parameters, chosen, best, pcs, settled, twins, tuple(verdicts), why,
        )  # fmt: skip


class _Groups:
    """A sweep's settings, cheapest first, each with its samples as arrays (one entry per
    row, in repeat order)."""

    def __init__(
        self,
        rule: _Rule,
        points: list[dict[str, Any]],
        samples: list[dict[str, np.ndarray]],
        paired: bool,
    ) -> None:
        self.rule = rule
        self.points = points
        self.samples = samples
        self.paired = paired
        metric = rule.objective.metric
        self.counts = [int(np.isfinite(s[metric]).sum()) for s in samples]
        self.medians = [
            float(np.median(s[metric][np.isfinite(s[metric])])) if n else math.nan
            for s, n in zip(samples, self.counts, strict=True)
        ]

    @classmethod
    def of(cls, frame: pd.DataFrame, rule: _Rule) -> _Groups:
        metric = rule.objective.metric
        by_metric = [c.parameter for c in rule.cost_order if c.parameter not in rule.parameters]
        columns = list(dict.fromkeys([metric, *(c.metric for c in rule.constraints), *by_metric]))
        for cost in rule.cost_order:
            if cost.parameter not in frame.columns:
                raise ValueError(
                    f"cheaper names {cost.parameter!r}, which is neither a parameter {list(rule.parameters)} "
                    "nor a metric of the sweep"
                )
        missing = [c for c in [*rule.parameters, *columns] if c not in frame.columns]
        if missing:
            raise ValueError(f"the sweep has no column {missing[0]!r}; its columns: {list(frame.columns)}")
        if "host" in frame.columns and frame["host"].nunique() > 1:
            raise ValueError("the sweep mixes hosts: decide on each host's rows (frame[frame.host == h])")
        if frame.empty:
            raise ValueError("the sweep has no rows: nothing to decide")
        rows = frame.sort_values("repeat", kind="stable") if "repeat" in frame.columns else frame
        points: list[dict[str, Any]] = []
        samples: list[dict[str, np.ndarray]] = []
        repeats: set[tuple[Any, ...]] = set()
        for key, part in rows.groupby(list(rule.parameters), sort=False, dropna=False):
            values = key if isinstance(key, tuple) else (key,)
            points.append({p: _scalar(v) for p, v in zip(rule.parameters, values, strict=True)})
            samples.append({c: part[c].to_numpy(dtype=float, na_value=np.nan) for c in columns})
            repeats.add(tuple(part["repeat"]) if "repeat" in part.columns else ())
        # Settings measured on the same repeats (0, 1, ... n-1 each; an adaptive sweep gives
        # some more than others) are resampled together: common random numbers cancel.
        paired = all(r and r == tuple(range(len(r))) for r in repeats)
        seen = {p: list(dict.fromkeys(frame[p].map(_scalar))) for p in rule.parameters}
        costs = [
            {**point, **{m: float(np.nanmedian(s[m])) for m in by_metric}}
            for point, s in zip(points, samples, strict=True)
        ]
        order = sorted(range(len(points)), key=lambda i: _cost_key(rule.cost_order, costs[i], seen))
        return cls(rule, [points[i] for i in order], [samples[i] for i in order], paired)

    def __len__(self) -> int:
        return len(self.points)

    def resample_index(self, rng: np.random.Generator) -> list[np.ndarray]:
        """Per setting, (resamples, rows) indices into its samples; one array when paired."""
        sizes = [len(s[self.rule.objective.metric]) for s in self.samples]
        if not self.paired:
            return [rng.integers(0, n, (_RESAMPLES, n)) for n in sizes]
        # Row j is repeat j everywhere: one draw of repeats for all; a setting with fewer
        # repeats redraws the ones it lacks among its own (each stays a uniform resample).
        most = max(sizes)
        shared = rng.integers(0, most, (_RESAMPLES, most))
        out = []
        for n in sizes:
            idx = shared[:, :n].copy()
            lacking = idx >= n
            idx[lacking] = rng.integers(0, n, int(lacking.sum()))
            out.append(idx)
        return out

    def objective_medians(self, index: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
        """(settings, resamples): each setting's resampled median, as "larger is worse"."""
        metric = self.rule.objective.metric
        medians = np.vstack(
            [_resampled_medians(s[metric], idx, rng) for s, idx in zip(self.samples, index, strict=True)]
        )
        if self.rule.objective.direction == "max":
            with np.errstate(divide="ignore"):
                return np.where(medians > 0, 1 / np.where(medians > 0, medians, 1), np.inf)
        return np.where(np.isnan(medians), np.inf, medians)

    def worse_median(self, i: int) -> float:
        median = self.medians[i]
        if not math.isfinite(median):
            return math.inf
        if self.rule.objective.direction == "max":
            return 1 / median if median > 0 else math.inf
        return median

    def median_ci(self, worse: np.ndarray, i: int) -> tuple[float, float]:
        """The 95% CI of setting ``i``'s objective median, from its resamples."""
        medians = worse[i]
        if self.rule.objective.direction == "max":  # "worse" holds 1 / median
            with np.errstate(divide="ignore"):
                medians = 1 / medians
        medians = medians[np.isfinite(medians)]
        if medians.size == 0:
            return (math.nan, math.nan)
        low, high = np.percentile(medians, [2.5, 97.5])
        return float(low), float(high)

    def change_against(self, worse: np.ndarray, i: int, chosen: int) -> tuple[float, tuple[float, float]]:
        """Setting ``i``'s objective median relative to ``chosen``'s (+0.31: 31% higher),
        with a 95% CI from the resamples."""
        a, b = self.medians[i], self.medians[chosen]
        change = a / b - 1 if b != 0 and math.isfinite(b) and math.isfinite(a) else math.nan
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios = worse[i] / worse[chosen]
            if self.rule.objective.direction == "max":  # "worse" holds 1 / median
                ratios = 1 / ratios
        ratios = ratios[np.isfinite(ratios)] - 1
        if ratios.size == 0:
            return float(change), (math.nan, math.nan)
        low, high = np.percentile(ratios, [2.5, 97.5])
        return float(change), (float(low), float(high))


def _resampled_medians(values: np.ndarray, index: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The median of each resample of ``values``; with values missing (NaN), the measured
    ones are resampled on their own (and pairing is lost for this setting)."""
    finite = np.isfinite(values)
    if finite.all():
        return np.median(values[index], axis=1)
    if not finite.any():
        return np.full(index.shape[0], np.nan)
    kept = values[finite]
    return np.median(kept[rng.integers(0, kept.size, (index.shape[0], kept.size))], axis=1)


def _cost_key(
    order: Sequence[CostOrder], point: Mapping[str, Any], seen: Mapping[str, list[Any]]
) -> tuple[Any, ...]:
    """Cheapest first: numbers (a parameter's, or a metric's median) by value, other values
    in the order the sweep listed them."""
    key: list[Any] = []
    for cost in order:
        value = point[cost.parameter]
        if isinstance(value, int | float) and not isinstance(value, bool):
            rank: float = value
        else:
            rank = seen[cost.parameter].index(value)
        key.append(rank if cost.ascending else -rank)
    return tuple(key)


def _same(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return a.keys() == b.keys() and all(a[k] == b[k] for k in a)


def _scalar(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def _describe(point: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in point.items())


def _figure(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"


def _pct(value: float) -> str:
    return f"{abs(value) * 100:.0f}%" if abs(value) >= 0.01 else f"{abs(value) * 100:.1f}%"


def _pct_range(ci: tuple[float, float]) -> str:
    low, high = ci
    if low >= 0 or high <= 0:
        a, b = sorted((abs(low), abs(high)))
        return f"{_pct(a)}-{_pct(b)}"
    return f"{_signed_pct(low)} to {_signed_pct(high)}"


def _word(change: float) -> str:
    return "higher" if change >= 0 else "lower"


def _signed_pct(change: float) -> str:
    return f"{'+' if change >= 0 else '-'}{_pct(change)}"
