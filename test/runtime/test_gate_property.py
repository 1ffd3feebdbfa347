"""Property-based search (hypothesis, derandomised: the same examples every run) over input sequences to the
commander's logic: joint states in any name order, with extra, missing, unnamed or NaN joints, stale or
future-stamped; measured poses far from the command or beyond joint limits; chunks that jump, cross limits,
contain NaN or carry bad stamps; policy faults and silence; e-stop and reset; episode starts; missed ticks.

Whatever the sequence, every command the logic hands to the publisher is finite, within the joint limits and
within one step of the previous command sent. The only other reference is the measured pose: for the first
command, and once after an episode start that holds where the robot is (the gate's anchor).
"""
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cosmos_policy_ros.core.chunking import Chunk, SpliceConfig
from cosmos_policy_ros.core.robot import JS_NAMES, gripper_convention
from cosmos_policy_ros.core.safety import SafetyConfig
from cosmos_policy_ros.ros.commander_logic import CommanderConfig, CommanderLogic

P = 0.04
CONV = gripper_convention("aloha2")
TOL = 1e-9

pose7 = st.tuples(*[st.floats(-4.0, 4.0, allow_nan=False)] * 6, st.floats(-0.6, 1.6, allow_nan=False))
joint_state = st.fixed_dictionaries({
    "kind": st.just("js"), "side": st.sampled_from(["left", "right"]), "pose": pose7,
    "order": st.permutations(range(9)), "extra": st.booleans(),
    "defect": st.sampled_from(["none", "none", "none", "nan", "missing", "unnamed", "duplicate"]),
    "dt": st.sampled_from([0.0, 0.0, -1.0, 1.0]),  # fresh, stale, future
})
chunk = st.fixed_dictionaries({
    "kind": st.just("chunk"), "seed": st.integers(0, 2 ** 31 - 1), "horizon": st.integers(1, 30),
    "scale": st.sampled_from([0.01, 0.2, 2.0]),  # per-action change: smooth, jumpy, wild
    "offset": st.sampled_from([0.0, 0.5, 3.0]),  # distance of the first action from the last command
    "nan_at": st.one_of(st.none(), st.integers(0, 29)),
    "dt": st.sampled_from([0.0, -0.03, 0.1, 3600.0, -10.0]),  # observation stamp relative to now
})
tick = st.fixed_dictionaries({
    "kind": st.just("tick"), "ticks": st.sampled_from([1, 1, 1, 1, 3]),  # 3: two missed ticks
    "robot": st.sampled_from(["echo", "echo", "echo", "pushed", "names_shuffled", "silent"]),
    "status": st.sampled_from(["ok", "ok", "ok", "fault", "none"]),
})
other = st.fixed_dictionaries({
    "kind": st.sampled_from(["estop", "reset_estop", "episode_measured", "episode_last"]),
})
event = st.one_of(tick, tick, tick, joint_state, chunk, other)


def js_message(pose, order=range(9), extra=False, defect="none"):
    arm7 = np.asarray(pose, dtype=np.float64)
    finger = float(CONV.unnormalize_finger(arm7[6]))
    pos = [*arm7[:6], float(CONV.command_to_joint(arm7[6])), finger, -finger]
    names = list(JS_NAMES)
    if defect == "nan":
        pos[2] = float("nan")
    names, pos = [names[i] for i in order], [pos[i] for i in order]
    if extra:
        names, pos = names + ["camera_pan"], pos + [5.0]
    if defect == "missing":
        i = names.index("elbow")
        del names[i], pos[i]
    elif defect == "unnamed":
        names = []
    elif defect == "duplicate":
        names[-1] = names[0]
    return names, pos


class Model:
    """Feeds the logic and checks every published command against the invariant."""

    def __init__(self, max_deviation):
        self.safety = SafetyConfig(max_step_arm=0.1, max_step_gripper=0.2, max_deviation=max_deviation)
        self.logic = CommanderLogic(SpliceConfig(period=P), self.safety, CONV,
                                    CommanderConfig(joint_state_max_age=0.25, policy_timeout=0.5))
        self.now = 0.0
        self.ids = 0
        self.valid = {}  # side -> latest valid measured pose (7,), what the logic may step from
        self.prev = None  # last published command
        self.anchor_allowed = False
        self.published = 0
        self.rng = np.random.default_rng(0)

    def feed_js(self, side, pose, t, **kw):
        names, pos = js_message(pose, **kw)
        if self.logic.on_joint_state(side, t, names, pos) is None:
            self.valid[side] = np.asarray(pose, dtype=np.float64)

    def measured(self):
        if set(self.valid) != {"left", "right"}:
            return None
        return np.concatenate([self.valid["left"], self.valid["right"]])

    def check(self, res):
        if res is None:
            return
        c = res.command
        s = self.safety
        assert c.shape == (14,) and np.all(np.isfinite(c)), c
        assert np.all(c >= s.lower) and np.all(c <= s.upper), (c, s.lower, s.upper)
        m = self.measured()
        ok_prev = self.prev is not None and np.all(np.abs(c - self.prev) <= s.step + TOL)
        ok_measured = m is not None and np.all(np.abs(c - m) <= s.step + TOL)
        if self.prev is None:
            assert ok_measured, ("first command not within one step of the measured pose", c, m)
        elif not ok_prev:
            assert self.anchor_allowed and ok_measured, ("step limit exceeded", c, self.prev, m)
            self.anchor_allowed = False  # one anchor per episode start
        if not res.held:
            self.anchor_allowed = False  # a running chunk drops a pending anchor
        self.prev = c.copy()
        self.published += 1

    def run(self, ev):
        lg = self.logic
        kind = ev["kind"]
        if kind == "tick":
            for _ in range(ev["ticks"]):
                self.now += P
            if ev["robot"] != "silent":
                for side, sl in (("left", slice(0, 7)), ("right", slice(7, 14))):
                    if self.prev is not None:
                        pose = self.prev[sl].copy()
                    elif side in self.valid:
                        pose = self.valid[side].copy()
                    else:
                        pose = np.array([0.1, -0.3, 0.4, 0.0, 0.2, 0.0, 0.5])
                    if ev["robot"] == "pushed":
                        pose[:6] += self.rng.uniform(-1.0, 1.0, 6)
                    order = self.rng.permutation(9) if ev["robot"] == "names_shuffled" else range(9)
                    self.feed_js(side, pose, self.now - 0.005, order=order)
            if ev["status"] == "ok":
                lg.on_policy_status(True, "ready", self.now)
            elif ev["status"] == "fault":
                lg.on_policy_status(False, "inference failed", self.now)
            self.check(lg.tick(self.now))
        elif kind == "js":
            self.feed_js(ev["side"], ev["pose"], self.now + ev["dt"], order=ev["order"], extra=ev["extra"],
                         defect=ev["defect"])
        elif kind == "chunk":
            r = np.random.default_rng(ev["seed"])
            start = self.prev if self.prev is not None else np.zeros(14)
            first = start + r.uniform(-1, 1, 14) * ev["offset"]
            acts = first + np.cumsum(r.uniform(-1, 1, (ev["horizon"], 14)) * ev["scale"], axis=0)
            if ev["nan_at"] is not None and ev["nan_at"] < ev["horizon"]:
                acts[ev["nan_at"], r.integers(14)] = np.nan
            self.ids += 1
            lg.on_chunk(Chunk(self.ids, self.now + ev["dt"], P, acts), self.now + 0.001)
        elif kind == "estop":
            lg.estop("test")
        elif kind == "reset_estop":
            lg.reset_estop(self.now)
        elif kind in ("episode_measured", "episode_last"):
            lg.begin_episode(self.now, hold_at_measured=kind == "episode_measured")
            if kind == "episode_measured":
                self.anchor_allowed = True


@settings(max_examples=1000, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(events=st.lists(event, min_size=1, max_size=80), max_deviation=st.sampled_from([0.0, 0.3]))
def test_published_stream_never_exceeds_the_step_or_joint_limits(events, max_deviation):
    model = Model(max_deviation)
    for ev in events:
        model.run(ev)


def test_the_search_reaches_running_chunks_holds_and_refusals():
    """The strategies are not vacuous: a fixed sequence built from the same events publishes, runs a chunk,
    holds on a fault and refuses a measured pose far beyond a limit."""
    m = Model(0.3)
    far = (0.0, -3.5, 0.0, 0.0, 0.0, 0.0, 0.5)  # shoulder 1.65 rad below its lower limit
    m.feed_js("left", far, 0.0)
    m.feed_js("right", far, 0.0)
    m.logic.on_policy_status(True, "ready", 0.0)
    assert m.logic.tick(0.0) is None and "left_shoulder" in m.logic.refusal
    m.valid.clear()
    m.run({"kind": "tick", "ticks": 1, "robot": "echo", "status": "ok"})  # default pose, within limits
    assert m.published == 1
    m.run({"kind": "chunk", "seed": 1, "horizon": 30, "scale": 0.2, "offset": 3.0, "nan_at": None, "dt": 0.0})
    running = 0
    for _ in range(10):
        m.run({"kind": "tick", "ticks": 1, "robot": "echo", "status": "ok"})
        running += not m.logic.hold_reason
    assert running >= 9
    m.run({"kind": "tick", "ticks": 1, "robot": "echo", "status": "fault"})
    assert m.logic.hold_reason.startswith("policy fault") and m.published == 12
