"""Worker selection and shared load accounting (frontend/router/select.py) over the reference index."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import msgspec
import pytest

from frontend.config.options import OPTIONS_BY_NAME
from frontend.kv.index_reference import ReferenceKvIndex
from frontend.protocol.errors import InvalidRequest, ServiceUnavailable, WorkersBusy
from frontend.router.select import DECODE, MODES, PREFILL, Router, RouterSettings
from frontend.router.thresholds import BusyThresholds, ThresholdTable

BS = 16


@dataclass
class Model:
    name: str = "m"
    instance_ids: list[str] = field(default_factory=lambda: ["a", "b", "c"])
    block_size: int = BS
    total_kv_blocks: dict[str, int] = field(default_factory=dict)
    max_batched_tokens: dict[str, int] = field(default_factory=dict)


THRESHOLD_NAMES = {field.name for field in msgspec.structs.fields(BusyThresholds)}


def make(mode="round_robin", thresholds: ThresholdTable | None = None, **settings):
    """A router over a fresh reference index with workers a, b, c; threshold keyword arguments set the defaults."""
    index = ReferenceKvIndex(capacity_blocks=10_000, max_workers=8)
    for worker in ("a", "b", "c"):
        index.assign_slot(worker)
    routed = []
    busy = BusyThresholds(**{k: settings.pop(k) for k in list(settings) if k in THRESHOLD_NAMES})
    router = Router(RouterSettings(mode=mode, busy=busy, **settings), index,
                    lambda iid, hashes: routed.append((iid, hashes)), thresholds)
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


@pytest.mark.parametrize("mode", MODES)
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


def test_a_decode_leg_weighs_decode_load_only_and_adds_no_prefill_tokens():
    router, index, _ = make("kv")
    hashes = list(range(200, 210))
    index.store(router.slot("a"), hashes[:2])  # a holds 2 blocks of the prompt, b none
    index.add_load(router.slot("a"), 1, 4, 50_000)  # a is prefilling a lot, b decodes more blocks
    index.add_load(router.slot("b"), 1, 5, 0)
    model = Model(instance_ids=["a", "b"])
    assert router.pick(model, hashes, 10 * BS).instance_id == "b"  # a whole request avoids a's prefill queue
    route = router.pick(model, hashes, 10 * BS, leg=DECODE)
    # decode cost: a = 4 + (10 - 2) = 12 blocks, b = 5 + 10 = 15: a, whose prefill queue does not matter
    assert (route.instance_id, route.overlap_blocks, route.blocks, route.prefill_tokens) == ("a", 2, 8, 0)
    assert index.load(router.slot("a")) == (2, 12, 50_000)


def test_each_leg_has_its_own_round_robin():
    router, _, _ = make()
    model = Model(instance_ids=["a", "b"])
    picks = [(router.pick(model, [], 10, leg=PREFILL).instance_id, router.pick(model, [], 10, leg=DECODE).instance_id)
             for _ in range(4)]
    assert picks == [("a", "a"), ("b", "b"), ("a", "a"), ("b", "b")]  # one shared counter would give (a, b) each time


def test_released_load_does_not_touch_a_reassigned_slot():
    router, index, _ = make()
    route = router.pick(Model(instance_ids=["a"]), [], 4 * BS)
    index.free_slot(route.slot)
    new_slot = index.assign_slot("newcomer")
    router.finish(route)
    assert index.load(new_slot) == (0, 0, 0)


def test_busy_thresholds_exclude_workers_and_all_busy_is_the_overload_status():
    router, index, _ = make("kv", active_prefill_tokens_threshold=100)
    for worker in ("a", "b"):
        index.add_load(router.slot(worker), 1, 0, 500)
    assert router.pick(Model(), [], 16).instance_id == "c"
    index.add_load(router.slot("c"), 1, 0, 500)
    with pytest.raises(WorkersBusy, match="busy") as info:
        router.pick(Model(), [], 16)
    assert info.value.status == 529  # Dynamo's default; --overload-status-code changes it
    router.settings = RouterSettings(mode="kv", busy=router.settings.busy, overload_status_code=503)
    with pytest.raises(WorkersBusy) as info:
        router.pick(Model(), [], 16)
    assert info.value.status == 503


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


@pytest.mark.parametrize("mode", [m for m in MODES if m != "direct"])
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


def test_least_loaded_takes_the_fewest_active_requests():
    router, index, _ = make("least_loaded")
    index.add_load(router.slot("a"), 3, 0, 0)
    index.add_load(router.slot("b"), 1, 0, 0)
    index.add_load(router.slot("c"), 2, 0, 0)
    assert router.pick(Model(), [], 16).instance_id == "b"  # b now has 2 as well
    index.report_load(router.slot("c"), 5, 1, 0)  # c's engine counts more than this daemon routed: 6
    picks = Counter(router.pick(Model(), [], 16).instance_id for _ in range(3))
    assert "c" not in picks  # a and b reach 4 and 3 or 3 and 4, still below 6


def test_least_loaded_spreads_ties():
    router, _, _ = make("least_loaded")
    routes = [router.pick(Model(), [], 16) for _ in range(30)]  # each pick raises its worker's count
    assert Counter(route.instance_id for route in routes) == {"a": 10, "b": 10, "c": 10}


def test_power_of_two_never_takes_the_busiest_of_three():
    router, index, _ = make("power_of_two")
    index.add_load(router.slot("a"), 50, 0, 0)
    picks = Counter(router.pick(Model(), [], 16).instance_id for _ in range(60))
    assert picks["a"] == 0 and picks["b"] > 0 and picks["c"] > 0  # any two drawn include b or c, less loaded


def test_power_of_two_with_two_workers_is_least_loaded():
    router, index, _ = make("power_of_two")
    index.add_load(router.slot("a"), 5, 0, 0)
    assert router.pick(Model(instance_ids=["a", "b"]), [], 16).instance_id == "b"


def test_direct_takes_only_the_named_worker():
    router, _, _ = make("direct")
    assert router.pick(Model(), [], 16, pinned="c").instance_id == "c"
    with pytest.raises(InvalidRequest, match="x-worker-instance-id"):
        router.pick(Model(), [], 16)
    with pytest.raises(ServiceUnavailable, match="does not serve"):
        router.pick(Model(), [], 16, pinned="zz")


def test_prefill_fraction_threshold_uses_the_worker_batch_budget():
    router, index, _ = make("round_robin", active_prefill_tokens_threshold_frac=0.5)
    model = Model(max_batched_tokens={"a": 1000, "b": 4000, "c": 1000})
    index.add_load(router.slot("a"), 1, 0, 600)  # over half of 1000
    index.add_load(router.slot("b"), 1, 0, 600)  # under half of 4000
    index.add_load(router.slot("c"), 1, 0, 600)
    assert {router.pick(model, [], 0).instance_id for _ in range(10)} == {"b"}


def test_thresholds_changed_at_run_time_apply_to_one_model_in_every_process(tmp_path):
    path = str(tmp_path / "busy.json")
    first, index, _ = make("round_robin", thresholds=ThresholdTable(BusyThresholds(), path))
    second = Router(RouterSettings(), index, thresholds=ThresholdTable(BusyThresholds(), path))  # another process
    model, other = Model(total_kv_blocks={"a": 100, "b": 100, "c": 100}), Model(name="other")
    index.add_load(first.slot("a"), 1, 80, 0)
    assert "a" in {second.pick(model, [], 0).instance_id for _ in range(6)}  # no threshold yet
    first.thresholds.set("m", BusyThresholds(active_decode_blocks_threshold=0.5))
    second.thresholds._checked_at = -1.0  # past its reload interval
    assert "a" not in {second.pick(model, [], 0).instance_id for _ in range(6)}
    assert second.thresholds.of("other") == BusyThresholds()  # other models keep the defaults
    assert "a" in {second.pick(other, [], 0).instance_id for _ in range(6)}
    assert second.thresholds.overrides() == {"m": BusyThresholds(active_decode_blocks_threshold=0.5)}
