"""`cosmos-policy episode start` over DDS against the real commander (and then the episode manager): a start while
the e-stop is latched or while an episode runs is refused with what to run instead, and publishes no EpisodeEvent
(so the recorder opens no bag); `--restart` replaces a running episode; after `episode reset` a start works."""
import subprocess
import sys
import time

import pytest

from cosmos_policy_ros.ros.harness import Collector, NodeSpec, launch, wait_for

pytestmark = pytest.mark.ros


def _cli(*args):
    out = subprocess.run([sys.executable, "-m", "cosmos_policy_ros.cli", "episode", *args], capture_output=True,
                         text=True, timeout=90)
    return out.returncode, out.stdout + out.stderr


def _new_events(events, n, settle=0.5):
    time.sleep(settle)  # an event published by the command would have arrived by now
    return [(e.event, e.reason) for e in events.snapshot()[n:]]


def test_episode_start_refuses_while_estopped_or_running(ros_session, node_log_dir):
    from std_srvs.srv import Trigger

    from cosmos_policy_ros.msg import EpisodeEvent
    from cosmos_policy_ros.ros.graph import graph_nodes

    START, STOP = EpisodeEvent.START, EpisodeEvent.STOP
    node = ros_session.make_node("episode_cli_test")
    events = Collector(node, EpisodeEvent, "/episode", 50)
    spec = [n.spec for n in graph_nodes("aloha", {"record": False, "task": "fold"}) if n.name == "commander"]
    with launch(spec, node_log_dir) as procs:
        start_srv = node.create_client(Trigger, "/commander/start_episode")
        assert start_srv.wait_for_service(timeout_sec=30.0)
        # the commander alone (no episode manager): the CLI finds none and talks to the commander
        rc, out = _cli("start")
        assert rc == 0 and "start: ok:" in out, out
        wait_for(lambda: len(events) >= 1, 10.0, what="the START event")
        first_id = events.snapshot()[0].episode_id
        assert events.snapshot()[0].event == START

        # a second start while it runs: refused, the episode goes on (no STOP, no new START)
        n = len(events)
        rc, out = _cli("start", "--no-manager")
        assert rc == 1, out
        assert f"start: refused: episode {first_id} is running" in out and "--restart" in out, out
        assert "ok" not in out.split("refused")[0], out
        assert _new_events(events, n) == []

        # --restart: explicitly replaces it
        rc, out = _cli("start", "--no-manager", "--restart")
        assert rc == 0 and "start: ok:" in out, out
        wait_for(lambda: len(events) >= n + 2, 10.0, what="STOP + START of the restart")
        assert _new_events(events, n, 0.0) == [(STOP, "restarted"), (START, "")]

        # e-stop: the episode stops; a start while latched is refused and publishes nothing
        rc, out = _cli("estop", "--no-manager")
        assert rc == 0 and "estop: ok" in out, out
        wait_for(lambda: len(events) >= n + 3, 10.0, what="the e-stop's STOP")
        assert events.snapshot()[-1].reason == "estop"
        n = len(events)
        rc, out = _cli("start", "--no-manager")
        assert rc == 1 and "start: refused: the e-stop is latched" in out, out
        assert "cosmos-policy episode reset" in out, out
        # the commander's own service refuses too (any client: a script, an older CLI)
        fut = start_srv.call_async(Trigger.Request())
        wait_for(fut.done, 10.0, what="~/start_episode")
        assert not fut.result().success and "cosmos-policy episode reset" in fut.result().message
        assert _new_events(events, n) == []

        # released: a start works again
        rc, out = _cli("reset", "--no-manager")
        assert rc == 0 and "reset: ok" in out, out
        rc, out = _cli("start", "--no-manager")
        assert rc == 0 and "start: ok:" in out, out
        wait_for(lambda: len(events) >= n + 1, 10.0, what="the START after the reset")
        assert events.snapshot()[-1].event == START
        rc, out = _cli("stop", "--no-manager")
        assert rc == 0, out

        assert all(p.alive() for p in procs)


def test_episode_start_through_the_manager_refuses_a_running_episode_unless_restart(ros_session, node_log_dir,
                                                                                   manager_client_cls):
    from cosmos_policy_ros.core.episode import DEFAULT_START_POSE
    from cosmos_policy_ros.core.robot import gripper_convention
    from cosmos_policy_ros.msg import EpisodeEvent
    from cosmos_policy_ros.ros.graph import graph_nodes

    from .conftest import MANAGER_CHUNKS, FakeFollower

    START, STOP = EpisodeEvent.START, EpisodeEvent.STOP
    client = manager_client_cls(ros_session)
    events = Collector(client.node, EpisodeEvent, "/episode", 50)
    # a follower standing at the start pose: the manager's start move is reached at once
    arm, grip = list(DEFAULT_START_POSE[:6]), float(gripper_convention("aloha2").command_to_joint(DEFAULT_START_POSE[6]))
    follower = FakeFollower(client.node, arm + [grip, 0.03, -0.03])
    # the commander as `episode_manager:=true` launches it: fed by the manager, and naming it
    commander = [n.spec for n in graph_nodes("aloha", {"record": False, "task": "fold", "episode_manager": True})
                 if n.name == "commander"]
    assert commander[0].parameters["chunk_topic"] == MANAGER_CHUNKS
    manager = NodeSpec(module="cosmos_policy_ros.ros.episode_manager", name="episode_manager",
                       parameters={"camera_topics": [""], "require_policy_ok": False, "prep_enabled": False})
    try:
        with launch(commander + [manager], node_log_dir) as procs:
            client.wait_state("IDLE", 60, procs)
            deadline = time.monotonic() + 60
            while True:  # start = start pose, then go; retried until discovery has matched everything
                rc, out = _cli("start")
                if rc == 0 or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            assert rc == 0 and "go: ok" in out, out + procs[-1].output()[-3000:]
            client.wait_state("RUNNING", 10, procs)
            wait_for(lambda: any(e.event == START for e in events.snapshot()), 10.0, what="the START event")
            first_id = [e for e in events.snapshot() if e.event == START][-1].episode_id

            n = len(events)
            rc, out = _cli("start")
            assert rc == 1 and "start: refused: start refused in state RUNNING" in out, out
            assert "cosmos-policy episode start --restart" in out, out
            assert _new_events(events, n) == [] and client.state()["state"] == "RUNNING"

            rc, out = _cli("start", "--restart")
            assert rc == 0 and "stop: ok" in out and "go: ok" in out, out
            wait_for(lambda: len(events) >= n + 2, 10.0, what="STOP + START of the restart")
            evs = events.snapshot()[n:]
            assert [(e.event, e.reason) for e in evs] == [(STOP, "operator"), (START, "")]
            assert evs[0].episode_id == first_id and evs[1].episode_id != first_id
            rc, out = _cli("stop")
            assert rc == 0, out

            # e-stop through the manager: a start is refused, saying what to run, and publishes nothing
            rc, out = _cli("estop")
            assert rc == 0 and "estop: ok" in out, out
            client.wait_state("ESTOPPED", 10, procs)
            n = len(events)
            rc, out = _cli("start")
            assert rc == 1, out
            assert "start: refused: start refused in state ESTOPPED" in out, out
            assert "release the e-stop first: cosmos-policy episode reset" in out, out
            assert _new_events(events, n) == []
            rc, out = _cli("reset")
            assert rc == 0 and "reset: ok" in out, out
    finally:
        follower.close()


def test_episode_start_never_bypasses_the_manager_the_commander_names(ros_session, node_log_dir):
    """The graph's ``episode_manager:=true`` commander names its manager: when that manager does not answer
    (late discovery on a loaded computer, or not running), `episode start` fails clearly and starts nothing,
    instead of starting an episode on the commander without the manager's input checks and start-pose move."""
    from std_srvs.srv import Trigger

    from cosmos_policy_ros.msg import EpisodeEvent
    from cosmos_policy_ros.ros.graph import graph_nodes

    node = ros_session.make_node("episode_cli_managed_test")
    events = Collector(node, EpisodeEvent, "/episode", 50)
    spec = [n.spec for n in graph_nodes("aloha", {"record": False, "task": "fold", "episode_manager": True})
            if n.name == "commander"]
    assert spec[0].parameters["episode_manager"] == "/episode_manager"
    with launch(spec, node_log_dir) as procs:
        assert node.create_client(Trigger, "/commander/start_episode").wait_for_service(timeout_sec=30.0)
        # --timeout also bounds the CLI's read of the commander's episode_manager parameter: a fresh participant can
        # take seconds to discover the parameter service on a loaded computer (the next test covers no answer)
        rc, out = _cli("start", "--timeout", "10")
        assert rc == 2, out
        assert "/commander is run by the episode manager /episode_manager" in out and "--no-manager" in out, out
        assert _new_events(events, 0) == []
        assert all(p.alive() for p in procs)


def test_episode_start_refuses_when_the_commander_does_not_say_who_manages_it(ros_session):
    """A commander whose parameters cannot be read in time (discovery on a loaded computer) may name a manager:
    `episode start` must not guess "none" and start an episode behind that manager's back."""
    from std_srvs.srv import Trigger

    calls = []
    # a commander stand-in without parameter services: its start_episode answers, its parameters never do
    node = ros_session.make_node("commander", start_parameter_services=False)
    node.create_service(Trigger, "/commander/start_episode",
                        lambda req, res: (calls.append(1), setattr(res, "success", True), res)[-1])
    rc, out = _cli("start", "--timeout", "2")
    assert rc == 2, out
    assert "/commander did not answer which episode manager runs it" in out and "--no-manager" in out, out
    assert calls == []
