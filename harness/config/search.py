"""Search spaces: what an Optuna trial may vary, conditional dimensions, and the grid they span."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    model_validator,
)

from harness.config.base import Strict


class SearchSpace(Strict):
    """A search dimension: float/int ranges (optionally log scale), categorical choices, or a
    grid (every value is tried; use with `sampler: grid` for ablations).

    A dimension may depend on dimensions declared before it: `when: {peft.enabled: true}`
    samples it only in trials where `peft.enabled` took that value (elsewhere the file's own
    value holds), and `cases:` gives one space per condition, e.g. a learning-rate range for
    LoRA and another for full fine-tuning:

        train.learning_rate:
          cases:
            - {when: {peft.enabled: true},  type: float, low: 1.0e-3, high: 1.0e-2, log: true}
            - {when: {peft.enabled: false}, type: float, low: 1.0e-5, high: 1.0e-3, log: true}
    """

    type: Literal["float", "int", "categorical", "grid"] | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Any] | None = None
    when: dict[str, Any] | None = None
    cases: list[SearchSpace] | None = None

    @model_validator(mode="after")
    def _check(self) -> SearchSpace:
        if self.cases is not None:
            if self.type is not None or self.when is not None:
                raise ValueError("a dimension with 'cases' takes its type and 'when' per case")
            if not self.cases:
                raise ValueError("'cases' needs at least one case")
            for case in self.cases:
                if case.cases is not None or case.when is None:
                    raise ValueError("each case needs a 'when' and no nested 'cases'")
            return self
        if self.type is None:
            raise ValueError("a search dimension needs a 'type' (or 'cases')")
        if self.type in ("float", "int"):
            if self.low is None or self.high is None or not self.low < self.high:
                raise ValueError(f"{self.type} search needs low < high")
            if self.log and self.low <= 0:
                raise ValueError("log-scale search needs low > 0")
            if self.log and self.step is not None:
                raise ValueError(
                    "log-scale search cannot have a step (Optuna takes one or the other)"
                )
        elif not self.choices:
            raise ValueError(f"{self.type} search needs a non-empty 'choices' list")
        return self

    @property
    def variants(self) -> list[SearchSpace]:
        """The spaces this dimension can take: its cases, or itself."""
        return self.cases or [self]

    def applying(self, sampled: dict[str, Any]) -> SearchSpace | None:
        """The space to sample given the values sampled so far, or None where no `when` holds."""
        for space in self.variants:
            if all(k in sampled and sampled[k] == v for k, v in (space.when or {}).items()):
                return space
        return None

    def values(self) -> list[Any]:
        """Every value a grid or categorical dimension can take (over all its cases)."""
        return list(dict.fromkeys(v for space in self.variants for v in space.choices or []))


def check_conditions(search: dict[str, SearchSpace]) -> None:
    """A `when` names a grid or categorical dimension declared before it, with one of its
    values; the cases of a dimension cover each combination of the values they test once."""
    import itertools

    seen: list[str] = []
    for path, space in search.items():
        parents = list(dict.fromkeys(k for v in space.variants for k in (v.when or {})))
        for parent in parents:
            if parent not in seen:
                raise ValueError(
                    f"search.{path}: 'when' names {parent!r}, which is not a search dimension "
                    f"declared before it"
                )
            if any(v.type in ("float", "int") for v in search[parent].variants):
                raise ValueError(f"search.{path}: 'when' needs {parent!r} to have choices")
        for variant in space.variants:
            for parent, value in (variant.when or {}).items():
                if value not in search[parent].values():
                    raise ValueError(
                        f"search.{path}: when {parent} = {value!r}, but {parent} takes "
                        f"{search[parent].values()}"
                    )
        if space.cases:
            for combo in itertools.product(*(search[p].values() for p in parents)):
                point = dict(zip(parents, combo, strict=True))
                hits = [v for v in space.cases if all(point[k] == x for k, x in v.when.items())]
                if len(hits) != 1:
                    where = ", ".join(f"{k} = {v!r}" for k, v in point.items())
                    problem = "no case covers" if not hits else f"{len(hits)} cases match"
                    raise ValueError(f"search.{path}: {problem} {where}")
        seen.append(path)


def grid_points(search: dict[str, SearchSpace]) -> list[dict[str, Any]]:
    """Every configuration of a grid, in file order; a conditional dimension contributes
    its values only where its condition holds (so no configuration is run twice)."""
    points: list[dict[str, Any]] = [{}]
    for path, space in search.items():
        grown = []
        for point in points:
            applying = space.applying(point)
            choices = applying.choices if applying is not None else None
            grown += [{**point, path: c} for c in choices] if choices else [point]
        points = grown
    return points


# Fields that define the study itself (where it lives, how it searches, what it judges by): a
# trial cannot vary them. `model` is here because the base model is evaluated once per study.
NOT_SEARCHABLE = (
    "name",
    "model",
    "search",
    "objectives",
    "constraints",
    "sampler",
    "pruner",
    "n_trials",
    "timeout",
    "storage",
    "tracking_uri",
    "output_dir",
    "thresholds",
    "replicates",
    "report",
)
