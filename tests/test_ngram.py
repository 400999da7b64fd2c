"""Prompt-lookup drafting: lookup() and NgramDrafter."""

from __future__ import annotations

import pytest

from specwise.drafters.ngram import NgramDrafter, lookup
from specwise.errors import SpecwiseError
from specwise.sampling import SamplingParams
from specwise.sequence import Sequence


def test_finds_earlier_match_of_suffix_and_returns_following_tokens():
    tokens = [1, 2, 3, 9, 8, 7, 6, 1, 2, 3]
    assert lookup(tokens, 3, 1, 3) == [9, 8, 7]


def test_returns_up_to_k_tokens():
    tokens = [1, 2, 3, 9, 8, 7, 6, 1, 2, 3]
    assert lookup(tokens, 1, 1, 3) == [9]
    assert lookup(tokens, 5, 1, 3) == [9, 8, 7, 6, 1]
    assert lookup(tokens, 0, 1, 3) == []


def test_continuation_is_cut_at_the_end_of_the_context():
    # The only earlier match of [4, 5] is near the end: fewer than k tokens follow it.
    tokens = [4, 5, 6, 4, 5]
    assert lookup(tokens, 10, 2, 2) == [6, 4, 5]


def test_most_recent_earlier_match_wins():
    tokens = [5, 10, 5, 20, 21, 5]
    # [5] occurs at 0 and 2 before the suffix; the later one (followed by 20) is used.
    assert lookup(tokens, 2, 1, 1) == [20, 21]


def test_suffix_itself_is_not_a_match():
    # The last token occurs nowhere else: the trailing occurrence must not match itself.
    assert lookup([1, 2, 3, 4], 3, 1, 3) == []


def test_no_match_returns_empty():
    assert lookup([1, 2, 3, 4, 5], 4, 1, 3) == []
    assert lookup([], 4, 1, 3) == []
    assert lookup([7], 4, 1, 3) == []


def test_prefers_longer_ngram():
    # 2-gram [4, 5] matches at 0 (followed by 10, 11); 1-gram [5] most recently at 5 (followed by 20, 21).
    tokens = [4, 5, 10, 11, 6, 5, 20, 21, 4, 5]
    assert lookup(tokens, 2, 1, 2) == [10, 11]
    assert lookup(tokens, 2, 1, 1) == [20, 21]
    # A 3-gram [21, 4, 5] has no earlier match, so max_n=3 falls back to n=2.
    assert lookup(tokens, 2, 1, 3) == [10, 11]


def test_min_n_forbids_short_matches():
    tokens = [9, 5, 1, 2, 7, 5]  # only the 1-gram [5] matches
    assert lookup(tokens, 2, 1, 3) == [1, 2]
    assert lookup(tokens, 2, 2, 3) == []


@pytest.mark.parametrize(("min_n", "max_n"), [(3, 2), (0, 3), (0, 0), (-1, 2)])
def test_drafter_rejects_bad_range(min_n, max_n):
    with pytest.raises(SpecwiseError):
        NgramDrafter(min_n, max_n)


def test_drafter_proposes_per_sequence():
    drafter = NgramDrafter(1, 3)
    params = SamplingParams()
    a = Sequence("a", [1, 2, 3, 9, 8, 1, 2, 3], 2, params)
    b = Sequence("b", [1, 2, 3, 4], 2, params)
    c = Sequence("c", [1, 2, 3, 9, 8, 1, 2, 3], 2, params)
    drafts = drafter.propose([a, b, c], [2, 3, 0])
    assert [d.tokens for d in drafts] == [[9, 8], [], []]
    assert all(d.probs is None for d in drafts)  # deterministic drafter
