"""The poll plan and scheduler on the real MicroPython interpreter: a virtual-clock bus that is
fast or slow, power states, misses, SET_PLAN; then the emulator, plain and through hil's link
model with faults."""

from __future__ import annotations

import pytest
from test_elm327 import dongle_mpy, elm_pty, lines_by_key, run_module  # noqa: F401  (fixtures)


@pytest.fixture(scope="module")
def sched(dongle_mpy, micropython):  # noqa: F811
    return lines_by_key(run_module(dongle_mpy, "sched_cases", heapsize="256K"))


def test_every_channel_gets_its_rate_on_a_fast_bus(sched):
    assert sched["fast"] == "True"


def test_slow_bus_degrades_fast_channels_evenly_and_starves_none(sched):
    assert sched["slow_fair"] == "True True slow_not_starved True degraded True"
    assert sched["kline_fair"] == "True True 5"  # one PID a request off CAN: `01` + 2 hex digits + count digit
    assert sched["status_rates"].startswith("5 [(12, ")


def test_power_states_select_the_plan_column(sched):
    assert sched["parked"] == "['RV'] 60"  # ten minutes parked: ATRV every 10 s, no PID
    assert sched["idle_speed"] == "60 idle_rv 12"
    assert sched["driving_speed"] == "300 fuel_level 7"
    assert sched["sleeping"] == "{}"


def test_unsupported_pids_are_never_polled(sched):
    # in the default plan, not in the fake ECU's bitmap
    assert sched["unsupported_in_plan"] == "['0x5e', '0x8', '0x9', '0x41']"
    assert sched["never_unsupported"] == "[]"


def test_a_pid_without_answers_backs_off_and_is_dropped_until_revived(sched):
    # 6 misses alone, after the 2 batches it was missing from (the first, and the retry a
    # minute on) moved it to requests of its own
    assert sched["dropped"] == "True tries 8 others True"
    assert sched["revived"] == "True True"


def test_a_silent_ecu_backs_off_the_bus_without_dropping_pids(sched):
    assert sched["silent"] == "[] True True"


def test_a_clone_without_multi_pid_falls_back_to_single(sched):
    assert sched["no_multi"] == "1 True"


def test_set_plan_validates_and_bounds(sched):
    # 0x5E unsupported and 0x20 (a bitmap) skipped, 0xFFFE clamped to an hour
    assert sched["set_plan"] == "2 [12, 255] 36000 10 0"
    assert sched["set_plan_keep"] == "2 7 0"  # driving and parked kept, idle set
    assert sched["set_plan_off"] == "1 1"
    assert sched["set_plan_bad"] == "SET_PLAN: want 1 + 7*n bytes 1"  # and the plan unchanged
    assert sched["set_plan_entries"] == "1 2"  # rows parsed by protocol.control.parse_plan


def test_poll_cycle_allocation_against_the_emulator(dongle_mpy, elm_pty, micropython):  # noqa: F811
    got = lines_by_key(run_module(dongle_mpy, "sched_emu", elm_pty, timeout=90))
    print("heap per request in steady state:", got["alloc_per_request"])
    assert got["init"] == "OK"
    assert got["channels"] == "['0x1', '0x4', '0x5', '0xc', '0xd', '0xf', '0x10', '0x11', '0x2f', '0x31', '0x42', '0xff']"
    assert got["errors"] == "0 0 0 given_up 0"
    assert got["alloc_per_request"].startswith("0 bytes over ")


def test_scheduler_through_the_link_model_with_faults(dongle_mpy, micropython):  # noqa: F811
    from hil.emulator import Emulator
    from hil.linkmodel import FaultPlan, LinkModel

    faults = FaultPlan(rate=0.08, seed=3, kinds=("garbage", "drop", "can_error", "stopped", "truncate", "reset"))
    with Emulator("demo") as emu, LinkModel(emu.pty, baud=38400, latency_s=0.01, plan=faults) as link:
        got = lines_by_key(run_module(dongle_mpy, "sched_link", link.pty, "150", timeout=120))
        stats = link.stats()
    assert got["init"] == "OK True"
    assert got["speed_samples"] == "True volt_samples True"
    assert stats.get("fault_reset", 0) > 0 and stats.get("fault_drop", 0) > 0, stats
    print("requests resets timeouts errors garbage truncated given_up:", got["counts"])
    assert got["reinit"] == "True True timeouts True ready True", got["counts"]


def test_ignition_off_at_boot_still_polls_the_battery_when_parked(sched):
    assert sched["no_ecu"] == "UNABLE True False"
    assert sched["no_ecu_parked"] == "[255, 255, 255] 1"  # one ATZ: the init before


def test_batches_answered_no_data_fall_back_to_single_pids_and_are_retried(sched):
    # every PID of the plan arrives although no batch is ever answered, none is dropped
    assert sched["batch_refused"] == "[] [] 0"
    assert sched["batch_retried"] == "True"
    assert sched["batch_partial"] == "[] []"  # a PID missing from a batch is asked alone, not dropped
