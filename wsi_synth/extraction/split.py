"""Train/test split by source unit (a slide, or an imported image): one unit never lands in both."""

from __future__ import annotations

import random
from collections.abc import Mapping


def assign_splits(unit_classes: Mapping[str, set[int]], test_fraction: float, seed: int) -> dict[str, str]:
    """Map each unit to 'train' or 'test', with about `test_fraction` of units in test.

    Stratified where possible: rarest classes first, each class present in two or more units gets at least
    one test unit while the test budget lasts, so the test split does not silently miss a class.
    Deterministic for a given seed and set of units.
    """
    units = sorted(unit_classes)
    rng = random.Random(seed)
    rng.shuffle(units)
    n_test = round(test_fraction * len(units)) if len(units) > 1 else 0
    if test_fraction > 0 and len(units) > 1:
        n_test = max(1, min(n_test, len(units) - 1))
    test: list[str] = []
    holders: dict[int, list[str]] = {}
    for u in units:
        for c in unit_classes[u]:
            holders.setdefault(c, []).append(u)
    for c in sorted(holders, key=lambda c: (len(holders[c]), c)):
        if len(test) >= n_test:
            break
        if len(holders[c]) >= 2 and not any(u in test for u in holders[c]):
            test.append(holders[c][0])
    test.extend([u for u in units if u not in test][: n_test - len(test)])
    return {u: "test" if u in test else "train" for u in unit_classes}
