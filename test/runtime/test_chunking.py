"""Splicing logic: exact indices per tick, cold start, hold at the end, blending, rejections (no ROS)."""
import numpy as np
import pytest

from cosmos_policy_ros.core.chunking import Chunk, ChunkSplicer, SpliceConfig, TickClock

P = 0.04


def ramp_chunk(chunk_id, stamp, horizon=50, dim=14):
    """Actions whose first value is the index (so tests read which action was sent)."""
    a = np.zeros((horizon, dim))
    a[:, 0] = np.arange(horizon)
    a[:, 1] = chunk_id
    return Chunk(chunk_id, stamp, P, a)


def started_clock(t0=100.0):
    clock = TickClock(P)
    clock.advance(t0)
    return clock


def test_tick_clock_counts_missed_ticks_and_tolerates_jitter():
    clock = TickClock(P)
    assert clock.advance(10.0) == (0, 0)
    assert clock.advance(10.0 + P + 0.015) == (1, 0)  # late but within the period
    assert clock.advance(10.0 + 2 * P + 0.001) == (2, 0)
    assert clock.advance(10.0 + 3 * P - 0.002) == (3, 0)  # slightly early
    assert clock.advance(10.0 + 5 * P + 0.005) == (5, 1)  # tick 4 never ran
    assert clock.missed_total == 1
    assert clock.tick_of(10.0 + 7 * P + 0.01) == 7


def test_cold_start_begins_at_first_action_then_consecutive_indices():
    clock = started_clock()
    sp = ChunkSplicer(SpliceConfig(period=P))
    assert sp.action_at(1).action is None and sp.holding
    # Observed at tick 0, arrives for tick 20 (0.8 s latency): cold start still runs action 0 first.
    acc = sp.add_chunk(ramp_chunk(1, clock.time_of(0)), next_tick=20, clock=clock)
    assert acc.accepted and acc.reason == "cold_start" and acc.start_index == 0
    got = [sp.action_at(k) for k in range(20, 70)]
    assert [int(p.action[0]) for p in got] == list(range(50))
    end = sp.action_at(70)
    assert end.action is None and end.reason == "chunk_ended" and sp.holding


def test_splice_by_observation_time_no_replay_no_skip():
    clock = started_clock()
    sp = ChunkSplicer(SpliceConfig(period=P))
    sp.add_chunk(ramp_chunk(1, clock.time_of(0)), next_tick=0, clock=clock)
    sent = [sp.action_at(k) for k in range(0, 30)]
    # Chunk 2 observed at tick 25 (+ sub-tick stamp noise), arrives for tick 30: index 5 runs at tick 30.
    acc = sp.add_chunk(ramp_chunk(2, clock.time_of(25) + 0.003), next_tick=30, clock=clock)
    assert acc.accepted and acc.start_index == 5 and acc.margin_ticks == 20
    sent += [sp.action_at(k) for k in range(30, 75)]
    ids = [(int(p.action[1]), int(p.action[0])) for p in sent]
    assert ids[:30] == [(1, i) for i in range(30)]
    assert ids[30:] == [(2, i) for i in range(5, 50)]
    # the tick each planned action was meant for equals the tick it was sent at
    for k, p in zip(range(75), sent):
        stamp_tick = 0 if p.chunk_id == 1 else 25
        assert stamp_tick + p.index == k


def test_late_chunk_is_rejected_and_running_off_the_end_holds():
    clock = started_clock()
    sp = ChunkSplicer(SpliceConfig(period=P))
    sp.add_chunk(ramp_chunk(1, clock.time_of(0)), next_tick=0, clock=clock)
    for k in range(50):
        assert sp.action_at(k).action is not None
    held = sp.action_at(50)
    assert held.action is None and held.reason == "chunk_ended"
    # A chunk observed at tick 0 arriving at tick 60 planned nothing for tick 60 or later: rejected.
    acc = sp.add_chunk(ramp_chunk(2, clock.time_of(0) + 0.001), next_tick=60, clock=clock)
    assert not acc.accepted and acc.reason == "expired"
    assert sp.action_at(60).action is None


def test_restart_after_hold_uses_hold_tick_not_arrival_tick():
    clock = started_clock()
    sp = ChunkSplicer(SpliceConfig(period=P))
    sp.add_chunk(ramp_chunk(1, clock.time_of(0)), next_tick=0, clock=clock)
    for k in range(10):
        sp.action_at(k)
    sp.hold(10)  # fault at tick 10: robot stops where tick 9 left it
    # Observed at tick 5 (robot still moving), arrives at tick 40: resume at the action planned for tick 10.
    acc = sp.add_chunk(ramp_chunk(2, clock.time_of(5)), next_tick=40, clock=clock)
    assert acc.accepted and acc.reason == "cold_start" and acc.start_index == 5
    assert int(sp.action_at(40).action[0]) == 5
    assert int(sp.action_at(41).action[0]) == 6
    # Observed after the hold began: starts from its first action.
    sp.hold(42)
    acc = sp.add_chunk(ramp_chunk(3, clock.time_of(50)), next_tick=70, clock=clock)
    assert acc.start_index == 0 and int(sp.action_at(70).action[0]) == 0


def test_out_of_order_wrong_period_and_dim_are_rejected():
    clock = started_clock()
    sp = ChunkSplicer(SpliceConfig(period=P))
    assert sp.add_chunk(ramp_chunk(1, clock.time_of(10)), 10, clock).accepted
    assert sp.add_chunk(ramp_chunk(2, clock.time_of(5)), 11, clock).reason == "out_of_order"
    assert sp.add_chunk(Chunk(3, clock.time_of(12), 0.02, np.zeros((50, 14))), 12, clock).reason == "period"
    assert sp.add_chunk(Chunk(4, clock.time_of(12), P, np.zeros((50, 7))), 12, clock).reason == "action_dim"
    sp.reject_before(clock.time_of(20))
    assert sp.add_chunk(ramp_chunk(5, clock.time_of(15)), 21, clock).reason == "out_of_order"


def test_blending_crossfades_then_follows_new_chunk():
    clock = started_clock()
    sp = ChunkSplicer(SpliceConfig(period=P, blend_ticks=3))
    a1 = np.zeros((50, 14))
    a2 = np.ones((50, 14))
    sp.add_chunk(Chunk(1, clock.time_of(0), P, a1), 0, clock)
    for k in range(10):
        sp.action_at(k)
    sp.add_chunk(Chunk(2, clock.time_of(8), P, a2), 10, clock)
    vals = [sp.action_at(k) for k in range(10, 15)]
    assert [round(float(v.action[0]), 3) for v in vals] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert [v.blended for v in vals] == [True, True, True, False, False]


def test_chunk_is_never_padded_or_extrapolated():
    clock = started_clock()
    sp = ChunkSplicer(SpliceConfig(period=P))
    sp.add_chunk(Chunk(1, clock.time_of(0), P, np.ones((3, 14))), 0, clock)
    assert [sp.action_at(k).action is not None for k in range(5)] == [True, True, True, False, False]


def test_config_validation_messages():
    with pytest.raises(ValueError, match="expected a positive"):
        SpliceConfig(period=0)
    with pytest.raises(ValueError, match="blend_ticks"):
        SpliceConfig(blend_ticks=-1)
    with pytest.raises(ValueError, match="expected actions of shape"):
        Chunk(1, 0.0, P, np.zeros(14))


def test_replan_schedule_auto_trigger_excludes_warmup():
    from cosmos_policy_ros.core.chunking import ReplanSchedule

    s = ReplanSchedule(horizon=50, period=P, margin=0.2, latency_guess=0.5)
    assert s.trigger_offset() == pytest.approx(2.0 - 0.5 - 0.2)
    s.record_latency(1.5)  # warm-up: stands in until a real measurement exists
    assert s.latency_estimate == 1.5
    s.record_latency(0.8)
    s.record_latency(0.7)
    assert s.latency_estimate == 0.8 and s.trigger_offset() == pytest.approx(1.0)
    assert s.next_start(10.0) == pytest.approx(11.0) and s.expected_margin() == pytest.approx(0.2)
    assert not s.slower_than_chunk
    s.record_latency(2.5)
    # slower than a chunk: observe again once the just-published chunk (started cold) has been executed
    assert s.slower_than_chunk and s.trigger_offset() == pytest.approx(2.5 + 2.0)
    for _ in range(3):  # back to normal three calls after a slow spell
        s.record_latency(0.6)
    assert not s.slower_than_chunk and s.latency_estimate == 0.6
    assert ReplanSchedule(50, P, replan_period=0.5).trigger_offset() == 0.5


def test_rtc_execution_horizon_paces_streaming_but_never_lets_the_chunk_run_out():
    """Real-time chunking's execution horizon (max_period) sets the pace while inference is fast; when the
    inference is too slow for that pace the just-in-time point comes first, so the new chunk still arrives
    ``margin`` before the running one ends (the robot never holds because of the pace)."""
    from cosmos_policy_ros.core.chunking import ReplanSchedule

    s = ReplanSchedule(horizon=50, period=P, margin=0.3, max_period=35 * P)
    for latency in (1.0, 0.2, 0.2):
        s.record_latency(latency)
    assert s.trigger_offset() == pytest.approx(35 * P)  # 1.4 s: before the just-in-time 1.5 s
    assert s.expected_margin() == pytest.approx(2.0 - 1.4 - 0.2)
    for _ in range(3):
        s.record_latency(0.6)  # a slower model: the pace would leave the robot without a chunk
    assert s.trigger_offset() == pytest.approx(2.0 - 0.6 - 0.3) and s.expected_margin() == pytest.approx(0.3)
    for bad in (dict(execution="pause"), dict(replan_period=0.5)):
        with pytest.raises(ValueError, match="max_period"):
            ReplanSchedule(50, P, max_period=1.4, **bad)
    with pytest.raises(ValueError, match="max_period"):
        ReplanSchedule(50, P, max_period=-1.0)


def test_streaming_pace_counts_from_a_cold_started_chunks_real_start():
    """A chunk that starts from a hold (the episode's first) runs action 0 when it arrives, not at its
    observation stamp: the next observation must come ``max_period`` into the chunk's motion, as it does for a
    chunk that follows another, not that much earlier. Tick rounding and pause mode change nothing."""
    from cosmos_policy_ros.core.chunking import ReplanSchedule
    from cosmos_policy_ros.core.rtc import RunningChunk

    s = ReplanSchedule(horizon=50, period=P, margin=0.3, max_period=35 * P)
    for latency in (0.5, 0.3):
        s.record_latency(latency)
    nxt = s.next_start(10.0)
    assert nxt == pytest.approx(10.0 + 35 * P)
    rc = RunningChunk(P)
    rc.published(1, 10.0, np.zeros((50, 14)), now=10.5)
    assert s.rebased(nxt, 10.0, rc.started(1)) == nxt  # not seen running yet: the stamp's schedule
    rc.on_trace(1, 0, 10.52, held=False)  # cold start: action 0 at the first tick after arrival
    rc.on_trace(1, 1, 10.56, held=False)
    assert rc.started(1) == pytest.approx(10.52)
    assert s.rebased(nxt, 10.0, rc.started(1)) == pytest.approx(10.52 + 35 * P)
    assert s.rebased(nxt, 10.0, 10.015) == nxt  # the splice's rounding to the tick grid: no shift
    pause = ReplanSchedule(horizon=50, period=P, execution="pause")
    assert pause.rebased(12.3, 10.0, 10.52) == 12.3


def test_policy_node_schedule_with_rtc_uses_its_own_margin_and_pace():
    """The policy node's parameters -> its schedule: with real-time chunking the execution horizon paces the
    observations and rtc_replan_margin (0.1 s) replaces replan_margin (0.3 s); at 0.5 s of latency the larger
    margin would observe every 30 ticks instead of keeping the 35-tick pace. Without RTC, replan_margin and no
    pace; a fixed replan_period is never paced."""
    from cosmos_policy_ros.core.chunking import node_schedule

    args = dict(horizon=50, period=P, replan_period=0.0, replan_margin=0.3, rtc_replan_margin=0.1,
                latency_guess=0.0, execution="stream")
    on = node_schedule(**args, rtc=True, rtc_execution_horizon=35)
    off = node_schedule(**args, rtc=False, rtc_execution_horizon=35)
    jit = node_schedule(**args, rtc=True, rtc_execution_horizon=0)  # rtc, just in time
    assert (on.margin, on.max_period) == (pytest.approx(0.1), pytest.approx(35 * P))
    assert (off.margin, off.max_period) == (pytest.approx(0.3), 0.0)
    assert (jit.margin, jit.max_period) == (pytest.approx(0.1), 0.0)
    for s in (on, off):
        for latency in (0.5, 0.5, 0.5, 0.5):
            s.record_latency(latency)
    assert on.trigger_offset() == pytest.approx(35 * P)  # 2.0 - 0.5 - 0.1 = 1.4 s: the pace holds
    assert off.trigger_offset() == pytest.approx(30 * P)  # just in time at replan_margin: 2.0 - 0.5 - 0.3 = 1.2 s
    fixed = node_schedule(**dict(args, replan_period=1.0), rtc=True, rtc_execution_horizon=35)
    assert fixed.max_period == 0.0 and fixed.next_start(10.0) == pytest.approx(11.0)


def test_replan_schedule_pause_waits_for_the_chunk_to_be_executed():
    """execution='pause' (the released deploy): observe again only once the chunk has run to its end and the
    robot holds, whatever the latency; streaming observes early enough to avoid any hold."""
    from cosmos_policy_ros.core.chunking import ReplanSchedule

    s = ReplanSchedule(horizon=50, period=P, margin=0.2, execution="pause")
    for latency in (1.0, 0.3, 0.3, 0.3):
        s.record_latency(latency)
    # the chunk lands ~0.3 s after its observation, runs 2.0 s, then one tick of hold before observing
    assert s.trigger_offset() == pytest.approx(0.3 + 2.0 + P)
    assert s.next_start(10.0) > 10.0 + s.latency_estimate + s.chunk_duration
    assert s.expected_margin() < 0  # holds by design
    stream = ReplanSchedule(horizon=50, period=P, margin=0.2)
    for latency in (1.0, 0.3, 0.3, 0.3):
        stream.record_latency(latency)
    assert stream.next_start(10.0) + stream.latency_estimate < 10.0 + stream.chunk_duration
    with pytest.raises(ValueError, match="execution"):
        ReplanSchedule(50, P, execution="blocking")
    with pytest.raises(ValueError, match="replan_period"):
        ReplanSchedule(50, P, replan_period=0.5, execution="pause")


def test_replan_schedule_pause_times_the_next_observation_from_the_chunks_arrival():
    """One slow call must not idle the robot after the next chunks: in pause mode the next observation follows
    the published chunk's end (arrival + duration + the fallback's margin), not the worst of the recent
    latencies. The commander's chunk-end request normally comes first; the margin must outlast delivery and tick
    jitter, else the next observation is taken while the robot still moves."""
    from cosmos_policy_ros.core.chunking import ReplanSchedule

    s = ReplanSchedule(horizon=50, period=P, execution="pause")
    for latency in (1.0, 2.5, 1.0):  # one slow call: the estimate stays at 2.5 s for three calls
        s.record_latency(latency)
    assert s.latency_estimate == pytest.approx(2.5)
    # observed at 10.0, published at 11.0 (a 1.0 s call): the chunk runs 11.0..13.0
    assert s.pause_fallback >= 5 * P
    assert s.next_start(10.0, published=11.0) == pytest.approx(11.0 + 2.0 + s.pause_fallback)
    assert s.next_start(10.0, published=11.0) < s.next_start(10.0) - 1.0
    # streaming keeps its latency-based trigger whatever the publication time
    stream = ReplanSchedule(horizon=50, period=P, margin=0.2)
    stream.record_latency(1.0)
    stream.record_latency(0.5)
    assert stream.next_start(10.0, published=10.5) == pytest.approx(stream.next_start(10.0))


def test_replan_requests_keep_the_newest_time_until_served_or_expired():
    from cosmos_policy_ros.core.chunking import ReplanRequests

    r = ReplanRequests(timeout=2.0)
    assert r.pending(0.0) is None and r.usable(-5.0, 0.0)  # no request: any observation will do
    r.add(10.0, now=10.0)
    r.add(9.0, now=10.1)  # an older time does not lower the bar
    assert r.pending(10.2) == 10.0
    assert not r.usable(10.0, 10.2) and r.usable(10.01, 10.2)  # strictly newer, as the commander checks
    r.served(9.5)  # a chunk from an older observation does not satisfy it
    assert r.pending(10.3) == 10.0
    r.served(10.05)
    assert r.pending(10.3) is None and r.received == 2
    r.add(20.0, now=20.0)
    assert r.pending(21.9) == 20.0
    assert r.pending(22.1) is None and r.expired == 1  # nothing newer came (clock skew): the schedule takes over
    with pytest.raises(ValueError, match="timeout"):
        ReplanRequests(timeout=0)
