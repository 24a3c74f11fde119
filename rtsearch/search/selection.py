"""How a sweep names its best trial: the validation ranking, then a second look at the top few
trials on held-out training images that no trial saw (rtsearch.data.hold_out). `SELECTION` says it in
words in every summary (rtsearch.search.summary)."""
from __future__ import annotations

import math

from rtsearch.config import SweepConfig

TOP_FEW = 3            # trials re-evaluated on the held-out images before the best is named
HOLDOUT_SHARE = SweepConfig.holdout_share   # the share of the training split no trial sees (rtsearch.data.hold_out)
SELECTION = (f"Trials are ranked by their best validation score (the score the search maximised); a tie on that "
             f"score is broken by the higher correct-class confidence at the same iteration (validation split: mean "
             f"softmax probability of the predicted class where it is right, 0 where it is wrong), then by the earlier "
             f"start. The top {TOP_FEW} completed trials in that order are then re-evaluated on held-out training "
             f"images that no trial trained, rewarded, calibrated or was ranked on, and the best is the one with the "
             f"highest score there (ties: the validation order); without held-out images, the first in the ranking. "
             f"The test split plays no part in the choice.")


def _g(value, fmt=".4f", none="-") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return none
    if isinstance(value, bool):
        return "yes" if value else "no"
    return format(value, fmt)


def format_config(config: dict) -> str:
    return " ".join(f"{k}={_g(v, '.3g')}" for k, v in sorted(config.items()))


def _rank_key(t: dict):
    """The one ranking of trials (SELECTION): best validation score, then the tie-breaker, then start time."""
    return (t["score"] is None, -(t["score"] if t["score"] is not None else 0.0),
            t.get("tiebreak") is None, -(t.get("tiebreak") or 0.0), t["started"] or 0.0)


def pick(ranked: list[dict]) -> dict | None:
    """The best of trials in ranking order (SELECTION): of the first TOP_FEW, the highest held-out score
    (ties: the earlier in the ranking); without held-out scores, the first."""
    top = ranked[:TOP_FEW]
    scored = [t for t in top if t.get("holdout_score") is not None]
    if not scored:
        return ranked[0] if ranked else None
    return max(scored, key=lambda t: (t["holdout_score"], -top.index(t)))


def chosen_by(best: dict | None, pool: list[dict]) -> str:
    """One sentence: how `best` won in `pool` (the trials it was chosen from, in ranking order), naming
    the figures that decided: the held-out re-evaluation, or a tie-breaker on validation."""
    if best is None:
        return "no trial produced a result"
    among = "completed trial(s)" if best["status"] == "completed" else "trial(s) with a score (none completed)"
    top = pool[:TOP_FEW]
    if best.get("holdout_score") is not None and len(top) > 1:
        others = ", ".join(f"{_g(t.get('holdout_score'))} (`{t['trial_id']}`)" for t in top if t is not best)
        return (f"highest score on {best.get('holdout_size')} held-out images ({_g(best['holdout_score'])}, against "
                f"{others}) among the top {len(top)} by validation score of the {len(pool)} {among}; "
                f"it ranked {pool.index(best) + 1} on validation ({_g(best['score'])})")
    tied = [t for t in pool if t is not best and t["score"] == best["score"]]
    head = f"highest best validation score ({_g(best['score'])}) among the {len(pool)} {among}"
    if not tied:
        return head + ", no tie"
    others = ", ".join(f"{_g(t.get('tiebreak'))} (`{t['trial_id']}`)" for t in tied)
    return (f"{head}, tied with {len(tied)} other trial(s); the validation correct-class confidence decided: "
            f"{_g(best.get('tiebreak'))} against {others}")
