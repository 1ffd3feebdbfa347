"""execution:=pause on the sim graph (sim bridge + policy node + commander, subprocesses): every chunk runs
from its first action to its last, and the robot holds (commands keep streaming) while the next is computed,
as in the released deploy. Streaming is the default and is covered by test_sim_graph / test_splice_timing."""
import contextlib
import types

import numpy as np
import pytest

from cosmos_policy_ros.ros.commander_logic import HOLD_IDLE, HOLD_RUNNING, TRACE_FIELDS
from cosmos_policy_ros.ros.harness import launch, wait_for_publishers

F = {name: i for i, name in enumerate(TRACE_FIELDS)}
NF = len(TRACE_FIELDS)
pytestmark = [pytest.mark.ros, pytest.mark.timing]  # hold lengths follow real inference time


def pause_graph(latency, h=96, w=128, execute_horizon=0):
    """The sim graph (small camera images) with the latency test double and execution:=pause."""
    from cosmos_policy_ros.ros.graph import graph_nodes

    return graph_nodes("sim", {"checkpoint": f"test-double:latency={latency}", "task": "transfer the cube",
                               "record": False, "execution": "pause", "execute_horizon": execute_horizon},
                       node_parameters={"sim_bridge": {"image_height": h, "image_width": w, "max_steps": 100000},
                                        "policy": {"image_height": h, "image_width": w}})


def run_chunks(ros_session, node_log_dir, trace_watcher_cls, latency, more_chunks, execute_horizon=0):
    """Run the pause graph until the commander has started ``more_chunks`` chunks after its first one; returns
    the trace rows from the first running tick on (node output in the message when it does not get there)."""
    nodes = pause_graph(latency, execute_horizon=execute_horizon)
    watcher = trace_watcher_cls(ros_session)
    with launch([n.spec for n in nodes], node_log_dir) as procs:
        wait_for_publishers(watcher.node, "/commander/trace", timeout=60)
        try:
            i_run = watcher.wait_rows(lambda r: r[F["hold_code"]] == HOLD_RUNNING, 60.0, 0, "the commander running")
            first = watcher.rows()[i_run][F["chunk_id"]]
            watcher.wait_rows(lambda r: r[F["hold_code"]] == HOLD_RUNNING and r[F["chunk_id"]] >= first + more_chunks,
                              30.0, i_run, f"{more_chunks} more chunks")
        except TimeoutError:
            raise AssertionError("\n".join(p.output()[-2000:] for p in procs))
        rows = watcher.rows()[i_run:]
        assert all(p.alive() for p in procs), "\n".join(p.output()[-2000:] for p in procs)
        # the commander (execution:=pause from the same launch argument) timed every observation
        policy_log = procs[[n.name for n in nodes].index("policy")].output()
        assert "no chunk-end request" not in policy_log, policy_log[-2000:]
    return rows


@contextlib.contextmanager
def episode_graph(ros_session, node_log_dir, trace_watcher_cls, latency):
    """The pause graph, launched, with what the episode-start tests watch: its chunks, episode events and the
    commander's start service (a namespace; ``procs``/``policy_log()`` for diagnostics)."""
    from std_srvs.srv import Trigger

    from cosmos_policy_ros.msg import ActionChunk, EpisodeEvent
    from cosmos_policy_ros.ros.harness import Collector

    nodes = pause_graph(latency)
    watcher = trace_watcher_cls(ros_session)
    g = types.SimpleNamespace(watcher=watcher, nodes=nodes,
                              chunks=Collector(watcher.node, ActionChunk, "/policy/action_chunk", 50),
                              events=Collector(watcher.node, EpisodeEvent, "/episode", 10),
                              start=watcher.node.create_client(Trigger, "/commander/start_episode"))
    with launch([n.spec for n in nodes], node_log_dir) as procs:
        g.procs = procs
        g.policy_log = lambda: procs[[n.name for n in nodes].index("policy")].output()
        g.outputs = lambda: "\n".join(p.output()[-2000:] for p in procs)
        wait_for_publishers(watcher.node, "/commander/trace", timeout=60)
        wait_for_publishers(watcher.node, "/episode", timeout=30)
        yield g


def test_pause_runs_whole_chunks_and_holds_while_thinking(ros_session, node_log_dir, trace_watcher_cls):
    latency = 0.4
    # three more chunks after the first: each needs 2 s of execution plus the latency
    rows = run_chunks(ros_session, node_log_dir, trace_watcher_cls, latency, 3)
    ids = [int(r[F["chunk_id"]]) for r in rows if r[F["hold_code"]] == HOLD_RUNNING]
    for cid in sorted(set(ids))[1:-1]:  # whole chunks seen from start to end
        idx = [int(r[F["index"]]) for r in rows if r[F["hold_code"]] == HOLD_RUNNING and r[F["chunk_id"]] == cid]
        # starts at its first action: observed after the commander asked (chunk ended), while the robot held
        assert min(idx) == 0, (cid, idx[:5])
        assert max(idx) == 49, (cid, idx[-5:])  # runs to the end: nothing re-planned on top of it
    # between two chunks: idle holds whose length is about the inference latency, with commands streaming
    codes = np.array([r[F["hold_code"]] for r in rows])
    run = codes == HOLD_RUNNING
    starts = np.flatnonzero(run[1:] & ~run[:-1]) + 1  # first running tick after a hold
    assert len(starts) >= 2
    for s in starts:
        j = s - 1
        while j > 0 and not run[j]:
            j -= 1
        gap = codes[j + 1:s]
        assert np.all(gap == HOLD_IDLE), gap
        assert len(gap) >= int(0.5 * latency / 0.04), f"hold of {len(gap)} ticks for a {latency} s inference"
        held = np.array([r[NF:] for r in rows[j + 1:s]])
        assert np.all(np.isfinite(held)) and np.ptp(held, axis=0).max() < 1e-9  # the last command, held


def test_episode_start_re_plans_at_once_instead_of_at_the_next_scheduled_observation(ros_session, node_log_dir,
                                                                                    trace_watcher_cls):
    """The commander drops chunks observed before an episode start; its re-plan request makes the policy plan
    from the first newer observation. Without it, the pause schedule (next observation 2.4 s after the last)
    would leave the arms holding for up to a whole chunk at every episode start."""
    from std_srvs.srv import Trigger

    from cosmos_policy_ros.msg import EpisodeEvent
    from cosmos_policy_ros.ros.conversions import stamp_to_sec
    from cosmos_policy_ros.ros.harness import wait_for

    with episode_graph(ros_session, node_log_dir, trace_watcher_cls, 0.3) as g:
        watcher, chunks, events, start, procs = g.watcher, g.chunks, g.events, g.start, g.procs
        try:
            watcher.wait_rows(lambda r: r[F["hold_code"]] == HOLD_RUNNING, 60.0, 0, "the commander running")
            chunks.wait(1, 30)
        except TimeoutError:
            raise AssertionError(g.outputs())
        assert start.wait_for_service(timeout_sec=10.0)
        waits = []
        for _ in range(3):  # without the request each would fall anywhere in the 2.4 s schedule: 3 in a row is no luck
            n_ev = len(events)
            fut = start.call_async(Trigger.Request())
            wait_for(fut.done, 10.0, what="~/start_episode")
            assert fut.result().success, fut.result().message
            # (a start while an episode runs first stops it: STOP "restarted", then START)
            wait_for(lambda: any(e.event == EpisodeEvent.START for e in events.snapshot()[n_ev:]), 10.0,
                     what="the START event")
            ev = [e for e in events.snapshot()[n_ev:] if e.event == EpisodeEvent.START][0]
            t_start = stamp_to_sec(ev.header.stamp)

            def fresh():
                return [stamp_to_sec(c.header.stamp) - t_start for c in chunks.snapshot()
                        if stamp_to_sec(c.header.stamp) > t_start]
            try:
                wait_for(lambda: fresh(), 5.0, what="a chunk observed after the episode start")
            except TimeoutError:
                raise AssertionError(g.outputs())
            waits.append(min(fresh()))
            watcher.wait_rows(lambda r: r[F["hold_code"]] == HOLD_RUNNING, 10.0, len(watcher.trace),
                              "the commander running the new chunk")
        assert all(p.alive() for p in procs)
        log = g.policy_log()
    # the first observation after the start: at most a couple of 30 Hz frames later (0.5 s leaves room for load)
    assert max(waits) < 0.5, f"first fresh observations {waits} s after the episode starts"
    assert "re-plan requested by the commander (episode start)" in log


def test_execute_horizon_sends_the_first_n_actions_and_re_plans_after_them(ros_session, node_log_dir,
                                                                           trace_watcher_cls):
    """execute_horizon:=20 with pause: every chunk the commander runs is 20 actions long (indices 0..19, the
    first 20 of the planned 50), and the next observation is taken once they are done."""
    n = 20
    rows = run_chunks(ros_session, node_log_dir, trace_watcher_cls, 0.3, 4, execute_horizon=n)
    ids = [int(r[F["chunk_id"]]) for r in rows if r[F["hold_code"]] == HOLD_RUNNING]
    assert len(set(ids)) >= 4
    for cid in sorted(set(ids))[1:-1]:
        idx = [int(r[F["index"]]) for r in rows if r[F["hold_code"]] == HOLD_RUNNING and r[F["chunk_id"]] == cid]
        assert min(idx) == 0 and max(idx) == n - 1, (cid, idx)


def test_episode_start_cancels_an_inference_from_before_it(ros_session, node_log_dir, trace_watcher_cls):
    """An episode start while the policy computes a chunk from an older observation (one the commander will
    refuse): the policy stops that inference and plans from a fresh observation at once, so the first usable
    chunk comes about one latency after the start instead of the rest of the stale call plus one latency."""
    import time

    from std_srvs.srv import Trigger

    from cosmos_policy_ros.msg import EpisodeEvent
    from cosmos_policy_ros.ros.conversions import stamp_to_sec
    from cosmos_policy_ros.ros.harness import wait_for

    latency = 2.0
    with episode_graph(ros_session, node_log_dir, trace_watcher_cls, latency) as g:
        chunks, events, start, procs = g.chunks, g.events, g.start, g.procs
        try:
            chunks.wait(2, 60)  # past the warm-up call: the worker now follows the pause schedule
        except TimeoutError:
            raise AssertionError(g.outputs())
        assert start.wait_for_service(timeout_sec=10.0)
        n0 = len(chunks)
        chunks.wait(n0 + 1, 10)
        # the next observation is taken ~2.1 s after this chunk's publication: start 0.6 s into that inference
        time.sleep(max(0.0, chunks.times[n0] + 2.1 + 0.6 - time.monotonic()))
        fut = start.call_async(Trigger.Request())
        t_start = time.monotonic()
        wait_for(fut.done, 10.0, what="~/start_episode")
        assert fut.result().success, fut.result().message
        wait_for(lambda: any(e.event == EpisodeEvent.START for e in events.snapshot()), 10.0, what="the START event")
        s_start = stamp_to_sec([e for e in events.snapshot() if e.event == EpisodeEvent.START][0].header.stamp)

        def fresh():  # indices of the chunks observed after the episode start
            return [i for i, c in enumerate(chunks.snapshot()) if stamp_to_sec(c.header.stamp) > s_start]
        try:
            wait_for(fresh, 3 * latency + 2.0, what="a chunk observed after the episode start")
        except TimeoutError:
            raise AssertionError(g.outputs())
        delay = chunks.times[fresh()[0]] - t_start
        assert all(p.alive() for p in procs)
        log = g.policy_log()
    # without cancelling: ~1.4 s left of the stale call, then 2.0 s for a fresh one (3.4 s)
    assert delay < latency + 0.8, f"first usable chunk {delay:.2f} s after the episode start"
    assert "inference cancelled after" in log, log[-2000:]
