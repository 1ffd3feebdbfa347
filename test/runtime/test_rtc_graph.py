"""Real-time chunking end to end over real DDS: policy node (latency test double that changes its plan every
chunk) + commander subprocesses, ``rtc:=replace``.

The double's chunks alternate between two "modes" (shoulders 0.06 rad apart), as a policy that samples a new
mode per chunk. The policy node knows the chunk the commander runs (its own chunks + the commander's trace) and
its inference delay; each new chunk keeps the running chunk's actions for the ticks spent in inference. Checked
by tick number on the commander's trace (the commands it sent): across every chunk switch the commands equal the
running chunk's actions for the delay ticks, the new chunk's first actions are those same actions, and the
switch tick changes the command by no more than an ordinary tick does (without RTC it would jump by the mode
shift). The pace of observations counts from the first chunk's real start (it began from a hold).
"""
import numpy as np
import pytest

from cosmos_policy_ros.ros.commander_logic import TRACE_FIELDS
from cosmos_policy_ros.ros.harness import Collector, launch, wait_for, wait_for_publishers

F = {name: i for i, name in enumerate(TRACE_FIELDS)}
NF = len(TRACE_FIELDS)
LATENCY = 0.5  # s: 12.5 ticks of the 50-tick chunk
SHIFT = 0.06  # rad between the double's two modes
PERIOD = 0.04


@pytest.mark.slow
@pytest.mark.ros
def test_rtc_keeps_the_running_chunks_actions_for_the_delay_ticks(ros_session, node_log_dir, synthetic_robot_cls,
                                                                 trace_watcher_cls, runtime_graph_fn):
    from cosmos_policy_ros.msg import ActionChunk
    from cosmos_policy_ros.ros.conversions import msg_to_chunk

    synthetic_robot_cls(ros_session)
    watcher = trace_watcher_cls(ros_session)
    chunks_col = Collector(watcher.node, ActionChunk, "/policy/action_chunk", 50)
    specs = runtime_graph_fn(f"test-double:latency={LATENCY},mode_shift={SHIFT}",
                             policy_overrides={"rtc": "replace", "rtc_execution_horizon": 25})
    with launch(specs, node_log_dir) as procs:
        wait_for_publishers(watcher.node, "/commander/trace", timeout=30)
        first = watcher.wait_rows(lambda r: r[F["held"]] == 0, timeout=30, what="first executed action")
        # five switches after the warm-up chunk: 25 ticks (1 s) apart
        wait_for(lambda: len({int(r[F["chunk_id"]]) for r in watcher.rows()[first:]}) >= 7, 40,
                 what="7 chunks executed")
        assert all(p.alive() for p in procs), "a node died:\n" + "\n".join(p.output()[-2000:] for p in procs)
        rows = watcher.rows()[first:]
    logs = "\n".join(p.log_path.read_text(errors="replace")[-3000:] for p in procs)
    chunks = {c.chunk_id: c for c in (msg_to_chunk(m) for m in chunks_col.snapshot())}
    ticks = np.array([r[F["tick"]] for r in rows], dtype=np.int64)
    tick_time = np.array([r[F["tick_time"]] for r in rows])
    held = np.array([r[F["held"]] for r in rows]) > 0
    cid = np.array([r[F["chunk_id"]] for r in rows], dtype=np.int64)
    index = np.array([r[F["index"]] for r in rows], dtype=np.int64)
    cmd = np.array([r[NF:] for r in rows])
    assert not held.any(), f"held at ticks {ticks[held][:10]}\n{logs}"

    row_of = {int(t): i for i, t in enumerate(ticks)}
    ordinary = np.abs(np.diff(cmd, axis=0)[np.diff(cid) == 0]).max()  # per-tick change within a chunk
    switches = np.flatnonzero(np.diff(cid) != 0) + 1
    # the first chunk started from a hold when it arrived (a cold start): the pace (an observation every 25 ticks)
    # counts from there, as between chunks that follow each other, not from its observation stamp 12.5 ticks earlier
    k = switches[0]
    second_obs_tick = int(ticks[k] - index[k])
    assert index[0] == 0 and abs(second_obs_tick - int(ticks[0]) - 25) <= 2, \
        (f"second observation {second_obs_tick - int(ticks[0])} ticks into the first chunk, expected 25\n{logs}")
    checked = 0
    for k in switches[1:]:  # the first switch follows the cold start (no running chunk when it was observed)
        old, new = chunks[int(cid[k - 1])], chunks[int(cid[k])]
        start = int(index[k])  # the new chunk takes over at its action `start`: the ticks spent in inference
        assert 0 < start < new.horizon
        obs_tick = int(ticks[k]) - start  # the new chunk's observation tick (the commander splices by its stamp)
        assert obs_tick in row_of, f"observation tick {obs_tick} not traced"
        assert abs(tick_time[row_of[obs_tick]] - new.stamp) <= PERIOD / 2 + 1e-6, (tick_time[row_of[obs_tick]], new.stamp)
        old_base = int(ticks[k - 1] - index[k - 1])  # tick of the running chunk's action 0
        # during the delay ticks the wire carried the running chunk, and the new chunk's first actions are exactly
        # those commands: the frozen prefix
        for j in range(start):
            r = row_of.get(obs_tick + j)
            if r is None:  # a tick the OS delayed by a whole period (counted as missed): nothing was sent
                continue
            assert cid[r] == old.chunk_id
            np.testing.assert_allclose(cmd[r], old.actions[obs_tick + j - old_base], atol=1e-6)
            np.testing.assert_allclose(new.actions[j], cmd[r], atol=1e-6,
                                       err_msg=f"chunk {new.chunk_id} action {j} is not the executed command")
        # the switch command is the running chunk's own action for that tick: no jump
        np.testing.assert_allclose(cmd[k], old.actions[int(ticks[k]) - old_base], atol=1e-6)
        assert np.abs(cmd[k] - cmd[k - 1]).max() <= ordinary + 1e-6
        # and the new chunk did pick the other mode: its last actions sit about SHIFT away from the old chunk's plan
        assert abs(abs(new.actions[-1][1] - old.actions[-1][1]) - SHIFT) < SHIFT / 3
        checked += 1
    assert checked >= 4, f"only {checked} switches checked\n{logs}"
