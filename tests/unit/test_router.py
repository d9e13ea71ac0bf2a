"""Worker selection and shared load accounting (frontend/router/select.py) over the reference index."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pytest

from frontend.config.options import OPTIONS_BY_NAME
from frontend.kv.index_reference import ReferenceKvIndex
from frontend.protocol.errors import ServiceUnavailable
from frontend.router.select import Router, RouterSettings

BS = 16


@dataclass
class Model:
    name: str = "m"
    instance_ids: list[str] = field(default_factory=lambda: ["a", "b", "c"])
    block_size: int = BS
    total_kv_blocks: dict[str, int] = field(default_factory=dict)


def make(mode="round_robin", **settings):
    index = ReferenceKvIndex(capacity_blocks=10_000, max_workers=8)
    for worker in ("a", "b", "c"):
        index.assign_slot(worker)
    routed = []
    router = Router(RouterSettings(mode=mode, **settings), index, lambda iid, hashes: routed.append((iid, hashes)))
    return router, index, routed


def test_round_robin_cycles_evenly_through_the_shared_counter():
    router, index, _ = make()
    picks = [router.pick(Model(), [], 10).instance_id for _ in range(150)]
    assert Counter(picks) == {"a": 50, "b": 50, "c": 50}
    other_process = Router(RouterSettings(), index)  # shares the counter: continues the cycle
    assert other_process.pick(Model(), [], 10).instance_id == ["a", "b", "c"][(["a", "b", "c"].index(picks[-1]) + 1) % 3]


def test_random_covers_all():
    router, _, _ = make("random")
    assert {router.pick(Model(), [], 10).instance_id for _ in range(200)} == {"a", "b", "c"}


@pytest.mark.parametrize("mode", ["round_robin", "random", "kv"])
def test_no_instances_is_503(mode):
    router, _, _ = make(mode)
    with pytest.raises(ServiceUnavailable) as info:
        router.pick(Model(instance_ids=[]), [], 10)
    assert info.value.status == 503


def test_unknown_mode_rejected():
    with pytest.raises(ValueError):
        Router(RouterSettings(mode="nope"))


@pytest.mark.parametrize("mode", OPTIONS_BY_NAME["router_mode"].choices)
def test_every_configurable_mode_builds_a_router(mode):
    make(mode)


def test_pinned_instance_wins_and_unknown_pin_is_503():
    router, _, _ = make("kv")
    assert all(router.pick(Model(), [1, 2], 40, pinned="b").instance_id == "b" for _ in range(10))
    with pytest.raises(ServiceUnavailable):
        router.pick(Model(), [], 10, pinned="zzz")


def test_kv_mode_follows_the_prefix_and_reports_its_decision():
    router, index, routed = make("kv")
    hashes = list(range(100, 110))
    index.store(index.slots()[1][0], hashes)  # worker b holds the prefix
    route = router.pick(Model(), hashes, 10 * BS)
    assert (route.instance_id, route.overlap_blocks) == ("b", 10)
    assert routed == [("b", hashes)]


def test_load_is_added_at_routing_and_released_in_two_steps():
    router, index, _ = make("kv")
    route = router.pick(Model(instance_ids=["a"]), [], 5 * BS)
    slot = router.slot("a")
    assert index.load(slot) == (1, 5, 5 * BS)
    router.first_token(route)
    assert index.load(slot) == (1, 5, 0)
    router.finish(route)
    assert index.load(slot) == (0, 0, 0)


def test_load_steers_kv_routing_away_from_a_busy_worker():
    router, index, _ = make("kv")
    index.add_load(router.slot("a"), 3, 300, 4000)
    index.add_load(router.slot("b"), 3, 300, 4000)
    assert router.pick(Model(), [], 10 * BS).instance_id == "c"


def test_released_load_does_not_touch_a_reassigned_slot():
    router, index, _ = make()
    route = router.pick(Model(instance_ids=["a"]), [], 4 * BS)
    index.free_slot(route.slot)
    new_slot = index.assign_slot("newcomer")
    router.finish(route)
    assert index.load(new_slot) == (0, 0, 0)


def test_busy_thresholds_exclude_workers_and_all_busy_is_503():
    router, index, _ = make("kv", active_prefill_tokens_threshold=100)
    for worker in ("a", "b"):
        index.add_load(router.slot(worker), 1, 0, 500)
    assert router.pick(Model(), [], 16).instance_id == "c"
    index.add_load(router.slot("c"), 1, 0, 500)
    with pytest.raises(ServiceUnavailable, match="busy"):
        router.pick(Model(), [], 16)


def test_decode_block_threshold_uses_the_worker_capacity():
    router, index, _ = make("kv", active_decode_blocks_threshold=0.5)
    model = Model(total_kv_blocks={"a": 100, "b": 100, "c": 100})
    index.add_load(router.slot("a"), 1, 60, 0)
    index.add_load(router.slot("b"), 1, 60, 0)
    assert router.pick(model, [], 16).instance_id == "c"


def test_round_robin_is_fair_per_model_when_models_alternate():
    router, _, _ = make()
    two = Model(name="two", instance_ids=["a", "b"])
    other = Model(name="other", instance_ids=["c"])
    picks = []
    for _ in range(40):
        picks.append(router.pick(two, [], 10).instance_id)
        router.pick(other, [], 10)
    assert Counter(picks) == {"a": 20, "b": 20}


@pytest.mark.parametrize("mode", ["round_robin", "random", "kv"])
def test_worker_reported_kv_blocks_make_it_busy_in_every_mode(mode):
    """The engine's own report counts when it is above what the routers added (e.g. a vLLM worker's real cache)."""
    router, index, _ = make(mode, active_decode_blocks_threshold=0.5)
    model = Model(total_kv_blocks={"a": 100, "b": 100, "c": 100})
    index.report_load(router.slot("a"), 4, 0, 70)
    index.report_load(router.slot("b"), 4, 2, 90)
    assert {router.pick(model, [], 16).instance_id for _ in range(30)} == {"c"}
    index.report_load(router.slot("c"), 1, 0, 51)
    with pytest.raises(ServiceUnavailable, match="busy"):
        router.pick(model, [], 16)
    index.report_load(router.slot("b"), 0, 0, 10)  # the engine freed its blocks
    assert router.pick(model, [], 16).instance_id == "b"


def test_a_pinned_worker_is_taken_even_when_busy():
    router, index, _ = make("round_robin", active_decode_blocks_threshold=0.5)
    model = Model(total_kv_blocks={"a": 100, "b": 100, "c": 100})
    index.report_load(router.slot("a"), 4, 0, 99)
    assert router.pick(model, [], 16, pinned="a").instance_id == "a"


def test_reported_load_is_forgotten_with_the_slot():
    router, index, _ = make()
    index.report_load(router.slot("a"), 4, 1, 70)
    index.free_slot(router.slot("a"))
    assert index.reported_load(index.assign_slot("a2")) == (0, 0, 0)
