"""execution:=pause on the sim graph (sim bridge + policy node + commander, subprocesses): every chunk runs
from its first action to its last, and the robot holds (commands keep streaming) while the next is computed,
as in the released deploy. Streaming is the default and is covered by test_sim_graph / test_splice_timing."""
import numpy as np
import pytest

from cosmos_policy_ros.ros.commander_logic import HOLD_IDLE, HOLD_RUNNING, TRACE_FIELDS
from cosmos_policy_ros.ros.harness import launch, wait_for_publishers

F = {name: i for i, name in enumerate(TRACE_FIELDS)}
NF = len(TRACE_FIELDS)
pytestmark = [pytest.mark.ros, pytest.mark.timing]  # hold lengths follow real inference time


def test_pause_runs_whole_chunks_and_holds_while_thinking(ros_session, node_log_dir, trace_watcher_cls):
    from cosmos_policy_ros.ros.graph import graph_nodes

    h, w = 96, 128
    latency = 0.4
    nodes = graph_nodes("sim", {"checkpoint": f"test-double:latency={latency}", "task": "transfer the cube",
                                "record": False, "execution": "pause"},
                        node_parameters={"sim_bridge": {"image_height": h, "image_width": w, "max_steps": 100000},
                                         "policy": {"image_height": h, "image_width": w}})
    watcher = trace_watcher_cls(ros_session)
    with launch([n.spec for n in nodes], node_log_dir) as procs:
        wait_for_publishers(watcher.node, "/commander/trace", timeout=60)
        try:
            i_run = watcher.wait_rows(lambda r: r[F["hold_code"]] == HOLD_RUNNING, 60.0, 0, "the commander running")
            first = watcher.rows()[i_run][F["chunk_id"]]
            # three more chunks after the first: each needs 2 s of execution plus the latency
            watcher.wait_rows(lambda r: r[F["hold_code"]] == HOLD_RUNNING and r[F["chunk_id"]] >= first + 3,
                              30.0, i_run, "three more chunks")
        except TimeoutError:
            raise AssertionError("\n".join(p.output()[-2000:] for p in procs))
        rows = watcher.rows()[i_run:]
        assert all(p.alive() for p in procs), "\n".join(p.output()[-2000:] for p in procs)
    ids = [int(r[F["chunk_id"]]) for r in rows if r[F["hold_code"]] == HOLD_RUNNING]
    for cid in sorted(set(ids))[1:-1]:  # whole chunks seen from start to end
        idx = [int(r[F["index"]]) for r in rows if r[F["hold_code"]] == HOLD_RUNNING and r[F["chunk_id"]] == cid]
        # starts at (or within a tick of) its first action, since it was observed while the robot held
        assert min(idx) <= 1, (cid, idx[:5])
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
