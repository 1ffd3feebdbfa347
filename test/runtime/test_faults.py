"""Faults injected mid-run over real DDS: each makes the robot hold promptly with a diagnostic; recovery resumes.

One graph (policy node with the latency test double at 0.3 s + commander, both subprocesses from the shared
graph definition) serves every test in this module; the synthetic robot in the test process injects input
faults, and the policy node's ``test_double_fault`` parameter injects inference faults.
Assertions count commander ticks (trace rows), not wall-clock time.
"""
import time

import numpy as np
import pytest

from cosmos_policy_ros.ros.commander_logic import HOLD_ESTOP, HOLD_FAULT, HOLD_IDLE, HOLD_RUNNING, TRACE_FIELDS
from cosmos_policy_ros.ros.harness import RosSession, launch, wait_for, wait_for_publishers

F = {name: i for i, name in enumerate(TRACE_FIELDS)}
NF = len(TRACE_FIELDS)
pytestmark = [pytest.mark.ros, pytest.mark.timing]


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    """Synthetic robot + trace watcher in this process; policy node + commander as subprocesses."""
    import importlib.util
    import pathlib

    # conftest helpers (module-scoped use): load the classes from this directory's conftest
    spec = importlib.util.spec_from_file_location("runtime_conftest", pathlib.Path(__file__).with_name("conftest.py"))
    conf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conf)
    session = RosSession()
    robot = conf.SyntheticRobot(session)
    watcher = conf.TraceWatcher(session)
    specs = conf.runtime_graph("test-double:latency=0.3")
    log_dir = str(tmp_path_factory.mktemp("fault_logs"))
    try:
        with launch(specs, log_dir) as procs:
            wait_for_publishers(watcher.node, "/commander/trace", timeout=30)
            yield session, robot, watcher, procs
    finally:
        session.close()


def set_policy_fault(node, value):
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    client = node.create_client(SetParameters, "/policy/set_parameters")
    assert client.wait_for_service(timeout_sec=10.0)
    req = SetParameters.Request()
    req.parameters = [Parameter(name="test_double_fault",
                                value=ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value))]
    fut = client.call_async(req)
    wait_for(fut.done, 10.0, what="set_parameters")
    assert fut.result().results[0].successful, fut.result().results[0].reason
    node.destroy_client(client)


def wait_running(watcher, start, timeout=20.0):
    return watcher.wait_rows(lambda r: r[F["held"]] == 0, timeout, start, "the commander running a chunk")


def logs(procs):
    return "\n".join(p.log_path.read_text(errors="replace")[-2500:] for p in procs)


def wait_diag(watcher, name, key, text, timeout=4.0):
    """Wait for a /diagnostics status of ``name`` whose ``key`` contains ``text``."""
    def found():
        return any(text in d.get(key, "") for d in watcher.diag_values(name))
    wait_for(found, timeout, what=f"diagnostic {name}.{key} containing {text!r}")


# name: (inject(robot, node), clear(robot, node), who detects it, diagnostic text, budget in ticks from injection)
FAULTS = {
    "stale_camera": (lambda r, n: r.stopped_cameras.add("cam_left_wrist"), "policy", "cam_left_wrist", 12),
    "one_arm_only": (lambda r, n: r.stopped_arms.add("right"), "commander", "right arm joint states stale", 12),
    "wrong_encoding": (lambda r, n: r.encoding.__setitem__("cam_high", "yuv422"), "policy", "unsupported encoding", 6),
    "wrong_size": (lambda r, n: r.size.__setitem__("cam_high", (32, 32)), "policy", "expected 48x64", 6),
    "nan_joint_state": (lambda r, n: r.nan_arms.add("left"), "commander", "left follower joint state: joint(s) ['elbow'] not finite", 4),
    "inference_exception": (lambda r, n: set_policy_fault(n, "exception"), "policy", "inference failed", 60),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_fault_holds_with_diagnostic_and_recovers(rig, fault):
    session, robot, watcher, procs = rig
    inject, detector, text, budget = FAULTS[fault]
    start = wait_running(watcher, len(watcher.trace))
    # let it run a little, then inject
    i0 = wait_running(watcher, start + 10)
    n_status = len(watcher.status)
    inject(robot, watcher.node)
    try:
        i_hold = watcher.wait_rows(lambda r: r[F["hold_code"]] == HOLD_FAULT, 10.0, i0, f"hold after {fault}")
        rows = watcher.rows()
        # promptly: within the detection budget (input ages / next inference attempt), counted in ticks
        assert rows[i_hold][F["tick"]] - rows[i0][F["tick"]] <= budget, logs(procs)
        if detector == "policy":
            # the policy node reported it on ~/status, and the commander held within one tick of that report
            def errors():
                statuses = watcher.status.snapshot()[n_status:]
                times = watcher.status.times[n_status:len(statuses) + n_status]
                return [(t, s) for t, s in zip(times, statuses) if s.level == b"\x02" and text in s.message]
            wait_for(lambda: bool(errors()), 5.0, what=f"policy ERROR status with {text!r}")
            t_err = errors()[0][0]
            rows = watcher.rows()
            trace_times = watcher.trace.times
            after = [i for i in range(i0, len(trace_times)) if trace_times[i] >= t_err]
            running_after = [i for i in after if rows[i][F["held"]] == 0] if after else []
            assert len(running_after) <= 2, f"{len(running_after)} ticks ran after the fault report"
        # held commands do not change while the fault lasts
        time.sleep(0.6)
        rows = watcher.rows()
        held = rows[i_hold:]
        assert all(r[F["held"]] == 1 for r in held), "resumed while the fault was still present"
        assert all(np.array_equal(r[NF:], held[0][NF:]) for r in held), "held command changed"
        wait_diag(watcher, ": commander", "hold_reason", text if detector == "commander" else "policy fault")
        if detector == "policy":
            wait_for(lambda: any(text in d["_message"] for d in watcher.diag_values(": policy")), 4.0,
                     what=f"policy diagnostic with {text!r}")
    finally:
        robot.clear_faults()
        if fault == "inference_exception":
            set_policy_fault(watcher.node, "")
    # recovery: a new chunk, observed after the hold began, starts from its first action
    i_run = wait_running(watcher, i_hold, timeout=20.0)
    row = watcher.rows()[i_run]
    assert row[F["index"]] == 0 and row[F["chunk_id"]] > 0
    assert all(p.alive() for p in procs), logs(procs)


def _ran_out_holds(watcher) -> int:
    """Ticks the commander held because its chunk ran out, from its latest diagnostics (``hold_reasons``)."""
    import ast

    for d in reversed(watcher.diag_values(": commander")):
        text = d.get("hold_reasons", "none")
        counts = ast.literal_eval(text) if text.startswith("{") else {}
        return sum(n for reason, n in counts.items() if reason.startswith("chunk ran out"))
    return 0


def test_inference_slower_than_chunk_holds_at_chunk_end_then_resumes_in_plan_time(rig):
    from cosmos_policy_ros.core.test_doubles import decode_plan_step

    session, robot, watcher, procs = rig
    i0 = wait_running(watcher, len(watcher.trace) + 5)
    ran_out_before = _ran_out_holds(watcher)
    set_policy_fault(watcher.node, "latency=2.5")  # a 2 s chunk
    try:
        # the running chunk is executed to its last planned action, then the very next tick holds (no padding,
        # no extrapolation). (Holds for other reasons, e.g. inputs going stale while this loaded machine
        # stalls, are not this one: look for the run-out pattern itself.)
        def ran_out():
            rows = watcher.rows()
            for i in range(max(i0, 1), len(rows)):
                prev, cur = rows[i - 1], rows[i]
                if (cur[F["hold_code"]] == HOLD_IDLE and prev[F["hold_code"]] == HOLD_RUNNING
                        and prev[F["index"]] == 49 and cur[F["tick"]] == prev[F["tick"]] + 1):
                    return i
            return None
        wait_for(lambda: ran_out() is not None, 15.0, what="the chunk running out after slow inference")
        i_hold = ran_out()
        rows = watcher.rows()
        last = rows[i_hold - 1]
        # diagnostics say why it held: the commander's hold counter (the current hold_reason is only a 1 Hz sample
        # of a hold that may already be over by the next diagnostics message)
        wait_for(lambda: _ran_out_holds(watcher) > ran_out_before, 4.0,
                 what="commander diagnostics counting a 'chunk ran out' hold")
        wait_for(lambda: any("slower than the chunk" in d["_message"] for d in watcher.diag_values(": policy")), 8.0,
                 what="policy diagnostic about slow inference")
        # the late chunk (observed while the robot still moved) resumes where its plan meets the stopped robot
        try:
            # 2.5 s inference + a 4.5 s re-plan offset, plus room for one load-induced fault hold on a shared CPU
            i_res = wait_running(watcher, i_hold, timeout=20.0)
        except TimeoutError:
            diag = (watcher.diag_values(": commander") or [{}])[-1]
            raise AssertionError(f"no chunk ran after the hold; commander diagnostics {diag}\n{logs(procs)}")
        res = watcher.rows()[i_res]
        assert res[F["chunk_id"]] != last[F["chunk_id"]]
        # (unless another, load-induced fault hold intervened: then the restart was a cold start)
        if all(r[F["hold_code"]] == HOLD_IDLE for r in watcher.rows()[i_hold:i_res]):
            # The first action sent is the one planned for max(hold tick, observation time): a chunk observed
            # while the robot still moved resumes mid-plan at the tick the robot stopped (index > 0); one observed
            # after the stop starts from its first action. (In steady slow mode the policy times the next
            # observation for the end of the running chunk, so index 0 or 1 is what the schedule plans; if a
            # fault hold discarded the first late chunk, the run-out found here is such a steady-state one.)
            # The test double encodes each action's planned time; stamps and ticks are both on the 25 Hz grid,
            # so they agree to within half a period.
            hold_time = rows[i_hold][F["tick_time"]]
            planned_time = decode_plan_step(res[NF:]) * 0.04
            cycle_s = 1000 * 0.04
            delta = (planned_time - hold_time + cycle_s / 2) % cycle_s - cycle_s / 2
            where = f"resumed at index {res[F['index']]:.0f}, {delta:+.3f} s from the hold tick's plan\n{logs(procs)}"
            if res[F["index"]] > 0:
                assert abs(delta) <= 0.02 + 1e-3, where
            else:
                assert delta >= -0.02 - 1e-3, where  # never replays actions planned for before the stop
    finally:
        set_policy_fault(watcher.node, "latency=0.3")
    wait_for(lambda: watcher.diag_values(": policy") and "slower" not in watcher.diag_values(": policy")[-1]["_message"],
             30.0, what="policy back to normal speed")
    i_run = wait_running(watcher, len(watcher.trace), timeout=20.0)
    assert all(p.alive() for p in procs), logs(procs)


def test_estop_latches_until_reset(rig):
    from std_srvs.srv import Trigger

    session, robot, watcher, procs = rig
    node = watcher.node
    i0 = wait_running(watcher, len(watcher.trace) + 5)

    def call(name):
        client = node.create_client(Trigger, f"/commander/{name}")
        assert client.wait_for_service(timeout_sec=10.0)
        fut = client.call_async(Trigger.Request())
        wait_for(fut.done, 10.0, what=name)
        node.destroy_client(client)
        return fut.result()

    assert call("estop").success
    i_hold = watcher.wait_rows(lambda r: r[F["hold_code"]] == HOLD_ESTOP, 5.0, i0, "hold after e-stop")
    assert i_hold - i0 <= 30
    time.sleep(2.5)  # chunks keep arriving from a healthy policy: still latched
    rows = watcher.rows()[i_hold:]
    assert all(r[F["hold_code"]] == HOLD_ESTOP for r in rows) and len(rows) > 40
    wait_diag(watcher, ": commander", "_message", "e-stop")
    res = call("reset_estop")
    assert res.success
    i_run = wait_running(watcher, len(watcher.trace), timeout=10.0)
    assert watcher.rows()[i_run][F["index"]] == 0
