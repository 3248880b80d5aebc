"""Event rules on a stream's keyframes: per rule an action and a score threshold; a person's
action starts when at least ``start_n`` of its last ``start_m`` keyframes score at or above the
threshold, and ends when at least ``end_n`` of its last ``end_m`` keyframes do not (a keyframe
without the person counts as below). Hysteresis: one noisy keyframe neither starts nor ends.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class RuleSpec:
    """A rule resolved against the label map: ``index`` is the action's column in scores."""

    name: str
    index: int
    action_id: int
    action_name: str
    threshold: float
    start_n: int
    start_m: int
    end_n: int
    end_m: int


@dataclass
class _Track:
    above: deque[bool]
    active: bool = False
    last_score: float = 0.0
    seen: bool = field(default=True)


class RuleEngine:
    """Follows every rule for every track id; :meth:`update` gives the events of a keyframe."""

    def __init__(self, rules: Sequence[RuleSpec]) -> None:
        self.rules = list(rules)
        self._tracks: list[dict[int, _Track]] = [{} for _ in self.rules]

    def update(
        self, track_ids: Sequence[int | None], scores: np.ndarray | None, time: float
    ) -> list[dict[str, Any]]:
        """``scores`` ``(n, C)`` of the keyframe's actors with ``track_ids``: the rule events
        (``action_started`` / ``action_ended``) they cause, in rule order."""
        events: list[dict[str, Any]] = []
        for rule, tracks in zip(self.rules, self._tracks, strict=True):
            present: dict[int, float] = {}
            for j, track_id in enumerate(track_ids):
                if track_id is not None and scores is not None:
                    present[track_id] = float(scores[j, rule.index])
            for track_id in present.keys() - tracks.keys():
                tracks[track_id] = _Track(deque(maxlen=max(rule.start_m, rule.end_m)))
            for track_id, track in list(tracks.items()):
                score = present.get(track_id)
                track.above.append(score is not None and score >= rule.threshold)
                if score is not None:
                    track.last_score = score
                recent = list(track.above)
                if not track.active:
                    if sum(recent[-rule.start_m :]) >= rule.start_n:
                        track.active = True
                        events.append(_event("action_started", rule, track_id, time, track))
                elif sum(not a for a in recent[-rule.end_m :]) >= rule.end_n:
                    track.active = False
                    events.append(_event("action_ended", rule, track_id, time, track))
                if not track.active and score is None and not any(recent):
                    del tracks[track_id]  # gone and quiet: forgotten (memory stays bounded)
        return events


def _event(kind: str, rule: RuleSpec, track_id: int, time: float, track: _Track) -> dict[str, Any]:
    return {
        "type": kind,
        "rule": rule.name,
        "action": {"id": rule.action_id, "name": rule.action_name},
        "track_id": track_id,
        "stream_time": round(time, 3),
        "score": round(track.last_score, 4),
    }
