"""Weights for Kamailio's weight-based dispatching (algorithm 9).

Kamailio wants per-set percentages that sum to at most 100. Operators give
relative weights (1:2:1). The largest-remainder method turns them into
integers that sum to exactly 100, closest to the true shares. With at most
100 positive weights, none is rounded away to 0; with more, 100 slots cannot
give each one a percent, and some get 0 (see ``dispatcher_list.weight_overflow``).
"""

from __future__ import annotations

from collections.abc import Mapping


def normalise(weights: Mapping[str, int], total: int = 100) -> dict[str, int]:
    """Percentages summing to ``total`` (or 0 when all weights are 0).

    Ties on the remainder are broken by key so the result is deterministic.
    """
    if any(w < 0 for w in weights.values()):
        raise ValueError("weights must not be negative")
    positive = {k: w for k, w in weights.items() if w > 0}
    out = dict.fromkeys(weights, 0)
    if not positive:
        return out
    if len(positive) > total:
        # Kamailio's weight algorithm has 100 slots per set: beyond 100
        # nodes some get 0 percent. They are still routable through failover;
        # the caller reports it (see fleet.dispatcher_list.plan).
        return _shares(positive, out, total)
    shares = _shares(positive, out, total)
    # A positive weight must never vanish: lift zeros to 1, taking the
    # percent from whoever is furthest above their exact share.
    wsum = sum(positive.values())
    exact = {k: total * w / wsum for k, w in positive.items()}
    for k in sorted(k for k in positive if shares[k] == 0):
        donor = max((d for d in positive if shares[d] > 1), key=lambda d: (shares[d] - exact[d], d))
        shares[donor] -= 1
        shares[k] = 1
    return shares


def _shares(positive: Mapping[str, int], out: dict[str, int], total: int) -> dict[str, int]:
    """Largest remainder: integer shares summing to ``total``, ties by key."""
    wsum = sum(positive.values())
    exact = {k: total * w / wsum for k, w in positive.items()}
    shares = {k: int(v) for k, v in exact.items()}
    left = total - sum(shares.values())
    for k in sorted(positive, key=lambda k: (-(exact[k] - shares[k]), k))[:left]:
        shares[k] += 1
    out.update(shares)
    return out
