"""Unit tests for frontend.router.select."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from frontend.config.options import OPTIONS_BY_NAME
from frontend.errors import RequestError, ServiceUnavailable
from frontend.router.select import Router

INSTANCES = ["a", "b", "c"]


def test_round_robin_cycles_evenly():
    router = Router("round_robin")
    picks = [router.pick("m", INSTANCES) for _ in range(3 * 50)]
    assert Counter(picks) == {"a": 50, "b": 50, "c": 50}
    # Consecutive picks follow the list order (cyclically), whatever the starting offset.
    for first, second in zip(picks, picks[1:]):
        assert INSTANCES.index(second) == (INSTANCES.index(first) + 1) % len(INSTANCES)


def test_round_robin_every_window_covers_all():
    router = Router("round_robin")
    picks = [router.pick("m", INSTANCES) for _ in range(30)]
    for start in range(0, 30, 3):
        assert sorted(picks[start:start + 3]) == INSTANCES


def test_round_robin_counters_are_per_model():
    router = Router("round_robin")
    a = [router.pick("model-a", INSTANCES) for _ in range(3)]
    b = [router.pick("model-b", ["x", "y"]) for _ in range(4)]
    a += [router.pick("model-a", INSTANCES) for _ in range(3)]
    assert Counter(a) == {"a": 2, "b": 2, "c": 2}
    assert Counter(b) == {"x": 2, "y": 2}


def test_round_robin_survives_instance_list_changes():
    router = Router("round_robin")
    for _ in range(5):
        router.pick("m", INSTANCES)
    picks = [router.pick("m", ["only"]) for _ in range(3)]
    assert picks == ["only"] * 3
    grown = INSTANCES + ["d"]
    assert Counter(router.pick("m", grown) for _ in range(8)) == {"a": 2, "b": 2, "c": 2, "d": 2}


def test_round_robin_single_instance():
    router = Router("round_robin")
    assert {router.pick("m", ["solo"]) for _ in range(5)} == {"solo"}


def test_random_covers_all():
    random.seed(1234)
    router = Router("random")
    picks = Counter(router.pick("m", INSTANCES) for _ in range(300))
    assert set(picks) == set(INSTANCES)
    assert all(count > 50 for count in picks.values())


def test_random_only_picks_given_instances():
    router = Router("random")
    assert {router.pick("m", ["x"]) for _ in range(10)} == {"x"}


@pytest.mark.parametrize("mode", ["round_robin", "random"])
def test_no_instances_is_service_unavailable(mode):
    with pytest.raises(ServiceUnavailable) as info:
        Router(mode).pick("tiny", [])
    error = info.value
    assert isinstance(error, RequestError)
    assert error.status == 503
    assert error.error_type == "service_unavailable"
    assert "tiny" in error.message


def test_unknown_mode_rejected():
    with pytest.raises(ValueError, match="fastest"):
        Router("fastest")


@pytest.mark.parametrize("mode", OPTIONS_BY_NAME["router_mode"].choices)
def test_every_configurable_mode_builds_a_router(mode):
    # The gateway builds Router(config.router_mode): every value the config accepts must work.
    router = Router(mode)
    assert router.pick("m", INSTANCES) in INSTANCES
