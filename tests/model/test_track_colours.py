"""Every track in a frame gets a colour of its own (there were 6, so tracks 1 and 7 matched)."""

from __future__ import annotations

import itertools
import math

from fbil.model.annotate import PALETTE, Overlay, track_colour


def test_the_first_tracks_keep_the_palette_and_later_ones_get_new_colours() -> None:
    assert [track_colour(i) for i in range(len(PALETTE))] == list(PALETTE)
    colours = [track_colour(i) for i in range(24)]
    assert len(set(colours)) == 24
    closest = min(math.dist(a, b) for a, b in itertools.combinations(colours, 2))
    assert closest > 50  # told apart by eye, not only by value
    assert all(0 <= v <= 255 for c in colours for v in c)


def test_an_overlay_draws_track_7_unlike_track_1() -> None:
    overlay = Overlay(0.0, ((0, 0, 1, 1), (2, 2, 3, 3)), (("a",), ("b",)), (0, 6))
    assert overlay.colour(0) != overlay.colour(1)
