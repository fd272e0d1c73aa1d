"""Best points of a study: one rule for the study's console table and its report."""

from __future__ import annotations

from collections.abc import Sequence


def pareto_front(points: Sequence[Sequence[float]], maximize: Sequence[bool]) -> list[int]:
    """Indices of points no other point dominates (at least as good everywhere, better once)."""
    signed = [[v if up else -v for v, up in zip(p, maximize, strict=True)] for p in points]
    front = []
    for i, p in enumerate(signed):
        dominated = any(
            all(qv >= pv for qv, pv in zip(q, p, strict=True)) and q != p
            for j, q in enumerate(signed)
            if j != i
        )
        if not dominated:
            front.append(i)
    return front


def best_of(
    points: Sequence[Sequence[float]], feasible: Sequence[bool], maximize: Sequence[bool]
) -> list[int]:
    """The one rule for best trials (the study's table and the report): among the feasible
    points, or all of them when none is, the best point for one objective or the Pareto front
    for several. Returns indices into `points`."""
    pool = [i for i, ok in enumerate(feasible) if ok] or list(range(len(points)))
    if not pool:
        return []
    if len(maximize) == 1:
        return [(max if maximize[0] else min)(pool, key=lambda i: points[i][0])]
    return [pool[i] for i in pareto_front([points[i] for i in pool], maximize)]
