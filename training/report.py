"""`cosmos-policy report BAG_OR_EPISODE`: one PNG per recorded episode, what a researcher looks at after a rollout.

Panels (time in seconds from the episode's first message):

- 14 small multiples, one per joint (left arm + gripper, right arm + gripper; the model's layout): the command
  sent on the motor topics versus the measured joint state, in radians (grippers normalised 0 closed .. 1
  open, both sides of the gripper convention the bag records), chunk switches as dotted lines, held ticks shaded;
- holds: held ticks by code from the commander's trace, with the reasons its diagnostics gave;
- the predicted value (``/policy/value``);
- safety interventions: ticks where the final safety gate changed the command, and the commander's count.

A converted training episode (.hdf5, `cosmos-policy convert`) plots its executed actions versus its proprio;
it carries no trace, value or diagnostics.

Reads only the bag (ROS-free); the commander's per-tick trace (``/commander/trace``, recorded by default) gives
holds, chunk switches and safety ticks; a bag without it still plots commands, joints and value.

    cosmos-policy report out/demo-*/bags/<episode>            # writes <episode>.png beside the bag folder
    cosmos-policy report BAGS_FOLDER --out reports/            # one PNG per episode bag in the folder
    cosmos-policy report EPISODE_ID --bags out/                # the bag whose folder name ends with the id
"""
from __future__ import annotations

import argparse
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

TRACE_TOPIC = "/commander/trace"
VALUE_TOPIC = "/policy/value"
DIAGNOSTICS_TOPIC = "/diagnostics"
SIDES = ("left", "right")
#: hold codes of the commander's trace (cosmos_policy_ros.ros.commander_logic HOLD_*), as words
HOLD_NAMES = {1: "idle (no valid chunk)", 2: "policy fault", 3: "e-stop", 4: "safety fault"}
HOLD_COLOURS = {1: "#f2c14e", 2: "#e4572e", 3: "#7b2cbf", 4: "#c1121f"}


@dataclass
class EpisodeSeries:
    """Everything a report plots, as arrays over time (seconds from the episode's first message)."""

    name: str
    custom: Dict[str, str]
    duration_s: float
    measured: Dict[str, Tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # side -> (t, (n, 7))
    commanded: Dict[str, Tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # side -> (t, (n, 7))
    trace_t: np.ndarray = field(default_factory=lambda: np.zeros(0))
    trace: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    value: Tuple[np.ndarray, np.ndarray] = field(default_factory=lambda: (np.zeros(0), np.zeros(0)))
    hold_reasons: List[Tuple[float, str]] = field(default_factory=list)  # (t, reason) when it changes
    safety_counts: List[Tuple[float, int]] = field(default_factory=list)  # commander's cumulative count


def read_episode(bag_path: Path, generation: Optional[str] = None) -> EpisodeSeries:
    """Read one episode bag into plot-ready series."""
    from cosmos_policy_ros.core.robot import JS_ARM, JS_LEFT_FINGER, gripper_convention
    from cosmos_policy_ros.ros.commander_logic import TRACE_FIELDS

    from cosmos_policy_ros.core.episode_bag import open_bag, read_custom_data

    with open_bag(bag_path) as bag:
        info = bag.info
        try:
            custom = dict(read_custom_data(bag_path))
        except Exception:  # noqa: BLE001 - a cut bag may lack metadata.yaml: plot it anyway
            custom = {}
        conv = gripper_convention(generation or custom.get("gripper_generation") or "aloha2")
        topics = set(info.topics)
        wanted = {f"/follower_{s}/{k}" for s in SIDES for k in ("joint_states", "commands/joint_group",
                                                                 "commands/joint_single")}
        wanted |= {TRACE_TOPIC, VALUE_TOPIC, DIAGNOSTICS_TOPIC}
        js: Dict[str, List[Tuple[int, np.ndarray]]] = {s: [] for s in SIDES}
        group: Dict[str, List[Tuple[int, np.ndarray]]] = {s: [] for s in SIDES}
        single: Dict[str, List[Tuple[int, float]]] = {s: [] for s in SIDES}
        trace, value, reasons, safety = [], [], [], []
        t_first = None
        for topic, t_ns, raw in bag.messages(sorted(wanted & topics)):
            t_first = t_ns if t_first is None else min(t_first, t_ns)
            msg = bag.decode(topic, raw)
            if topic == TRACE_TOPIC:
                trace.append((t_ns, np.asarray(msg.data, dtype=np.float64)))
            elif topic == VALUE_TOPIC:
                value.append((t_ns, float(msg.data)))
            elif topic == DIAGNOSTICS_TOPIC:
                for st in msg.status:
                    if "commander" not in st.name:
                        continue
                    kv = {v.key: v.value for v in st.values}
                    if "hold_reason" in kv:
                        reasons.append((t_ns, kv["hold_reason"]))
                    if str(kv.get("safety_interventions", "")).isdigit():
                        safety.append((t_ns, int(kv["safety_interventions"])))
            else:
                side = "left" if topic.startswith("/follower_left") else "right"
                if topic.endswith("joint_states"):
                    pos = np.asarray(msg.position, dtype=np.float64)
                    if pos.shape[0] > JS_LEFT_FINGER:
                        row = np.empty(7)
                        row[:6] = pos[JS_ARM]
                        row[6] = conv.normalize_finger(pos[JS_LEFT_FINGER])
                        js[side].append((t_ns, row))
                elif topic.endswith("joint_group"):
                    group[side].append((t_ns, np.asarray(msg.cmd, dtype=np.float64)[:6]))
                else:
                    single[side].append((t_ns, float(conv.joint_to_command(msg.cmd))))
    t0 = t_first or 0
    sec = lambda ns: (np.asarray(ns, dtype=np.float64) - t0) / 1e9  # noqa: E731
    ep = EpisodeSeries(name=custom.get("episode_id") or Path(bag_path).name, custom=custom,
                       duration_s=float(info.duration_s))
    for s in SIDES:
        if js[s]:
            ep.measured[s] = (sec([t for t, _ in js[s]]), np.stack([r for _, r in js[s]]))
        if group[s] or single[s]:
            ep.commanded[s] = _commands(group[s], single[s], sec)
    if trace:
        n = len(TRACE_FIELDS)
        width = min(len(r) for _, r in trace)
        ep.trace_t = sec([t for t, _ in trace])
        ep.trace = np.stack([r[:width] for _, r in trace]) if width >= n else np.zeros((0, n))
    if value:
        ep.value = (sec([t for t, _ in value]), np.array([v for _, v in value]))
    last = None
    for t, r in reasons:
        if r != last:
            ep.hold_reasons.append((float(sec(t)), r))
            last = r
    ep.safety_counts = [(float(sec(t)), c) for t, c in safety]
    return ep


def read_training_episode(path: Path) -> EpisodeSeries:
    """A converted training episode (HDF5, training/episodes.py): executed actions versus proprio. It has no
    commander trace, value or diagnostics, so those panels stay empty."""
    from .episodes import read_episode as read_h5

    e = read_h5(path, load_images=False)
    if e.qpos.shape[1] != 14 or e.action.shape[1] != 14:
        raise ValueError(f"{path}: expected the ALOHA layout (14 joints), got qpos {e.qpos.shape} and action {e.action.shape}")
    t = e.timestamps if e.timestamps is not None else np.arange(e.num_steps) / float(e.fps or 50.0)
    t = np.asarray(t, dtype=np.float64)
    score = "" if e.success_score != e.success_score else f"{e.success_score:g}"  # NaN: unlabelled
    custom = {"episode_id": str(e.attrs.get("episode_id", Path(path).stem)), "task": e.task,
              "outcome": "success" if e.success else ("unlabelled" if not score else "failure"),
              "success_score": score, "policy_id": str(e.attrs.get("policy_name", e.attrs.get("policy_id", "?"))),
              "stop_reason": "?"}
    ep = EpisodeSeries(name=custom["episode_id"], custom=custom, duration_s=float(t[-1] - t[0]) if t.size else 0.0)
    for k, side in enumerate(SIDES):
        ep.measured[side] = (t, e.qpos[:, 7 * k:7 * k + 7])
        ep.commanded[side] = (t, e.action[:, 7 * k:7 * k + 7])
    return ep


def _commands(group, single, sec) -> Tuple[np.ndarray, np.ndarray]:
    """Arm commands (6 rad) and gripper commands (normalised) sent at the same tick -> (t, (n, 7)); each
    column carries its own latest value forward."""
    events = sorted([(t, "g", v) for t, v in group] + [(t, "s", v) for t, v in single], key=lambda e: e[0])
    cur = np.full(7, np.nan)
    ts, rows = [], []
    for t, kind, v in events:
        if kind == "g":
            cur[:6] = v
        else:
            cur[6] = v
        ts.append(t)
        rows.append(cur.copy())
    return sec(ts), np.stack(rows)


def _column(ep: EpisodeSeries, name: str) -> Optional[np.ndarray]:
    from cosmos_policy_ros.ros.commander_logic import TRACE_FIELDS

    if ep.trace.size == 0:
        return None
    return ep.trace[:, TRACE_FIELDS.index(name)]


def chunk_switches(ep: EpisodeSeries) -> np.ndarray:
    """Times at which a new chunk took over (the trace's chunk id changed on a running tick)."""
    cid, held = _column(ep, "chunk_id"), _column(ep, "held")
    if cid is None:
        return np.zeros(0)
    running = (held == 0) & (cid >= 0)
    idx = np.flatnonzero(running)
    if idx.size == 0:
        return np.zeros(0)
    changes = idx[1:][cid[idx[1:]] != cid[idx[:-1]]]
    return ep.trace_t[np.concatenate([idx[:1], changes])]


def _spans(t: np.ndarray, mask: np.ndarray) -> List[Tuple[float, float]]:
    """Contiguous [start, end) time spans where mask is true (a tick lasts until the next)."""
    out = []
    if t.size == 0:
        return out
    step = float(np.median(np.diff(t))) if t.size > 1 else 0.04
    start = None
    for i, m in enumerate(mask):
        if m and start is None:
            start = t[i]
        if not m and start is not None:
            out.append((start, t[i]))
            start = None
    if start is not None:
        out.append((start, t[-1] + step))
    return out


def plot_episode(ep: EpisodeSeries, out: Path, dpi: int = 80) -> Dict[str, object]:
    """Write the PNG; returns a summary (panel titles, counts) of what it shows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cosmos_policy_ros.core.robot import JOINT_NAMES

    fig = plt.figure(figsize=(18, 11), dpi=dpi)
    grid = fig.add_gridspec(5, 7, height_ratios=[1, 1, 0.55, 0.55, 0.55], hspace=0.55, wspace=0.3)
    switches = chunk_switches(ep)
    code, held, safety = _column(ep, "hold_code"), _column(ep, "held"), _column(ep, "safety_changed")
    held_spans = _spans(ep.trace_t, held > 0) if held is not None else []
    joint_axes = []
    for k, name in enumerate(JOINT_NAMES):
        side, j = SIDES[k // 7], k % 7
        ax = fig.add_subplot(grid[k // 7, j], sharex=joint_axes[0] if joint_axes else None)
        joint_axes.append(ax)
        for a, b in held_spans:
            ax.axvspan(a, b, color="#dddddd", lw=0)
        for t in switches:
            ax.axvline(t, color="#888888", ls=":", lw=0.8)
        if side in ep.commanded:
            t, v = ep.commanded[side]
            ax.plot(t, v[:, j], color="#1f77b4", lw=1.2, label="commanded", drawstyle="steps-post")
        if side in ep.measured:
            t, v = ep.measured[side]
            ax.plot(t, v[:, j], color="#ff7f0e", lw=1.0, label="measured")
        ax.set_title(name + (" (0..1)" if j == 6 else " (rad)"), fontsize=9)
        ax.tick_params(labelsize=7)
    joint_axes[0].legend(fontsize=7, loc="best")

    ax_hold = fig.add_subplot(grid[2, :], sharex=joint_axes[0])
    hold_counts: Dict[str, int] = {}
    if code is not None:
        for c, label in HOLD_NAMES.items():
            mask = (held > 0) & (code == c)
            if mask.any():
                hold_counts[label] = int(mask.sum())
                for a, b in _spans(ep.trace_t, mask):
                    ax_hold.axvspan(a, b, color=HOLD_COLOURS[c], lw=0)
                ax_hold.plot([], [], color=HOLD_COLOURS[c], lw=6, label=f"{label}: {int(mask.sum())} ticks")
        for t in switches:
            ax_hold.axvline(t, color="#888888", ls=":", lw=0.8)
    reasons = list(dict.fromkeys(r for _, r in ep.hold_reasons if r and r != "none"))
    if reasons:  # the commander's diagnostics (1 Hz) name why it held
        text = "reasons: " + " | ".join(textwrap.shorten(r, 90) for r in reasons[:4])
        ax_hold.text(0.005, 0.5, text, transform=ax_hold.transAxes, fontsize=7, va="center",
                     bbox={"facecolor": "white", "alpha": 0.8, "lw": 0})
    n_ticks = int(held.size) if held is not None else 0
    ax_hold.set_title(f"holds: {int((held > 0).sum())} of {n_ticks} ticks held; {len(switches)} chunk switches "
                      "(dotted)" if held is not None else "holds: not recorded (no commander trace)", fontsize=9)
    ax_hold.set_yticks([])
    if hold_counts:
        ax_hold.legend(fontsize=7, loc="upper right", ncol=4)

    ax_val = fig.add_subplot(grid[3, :], sharex=joint_axes[0])
    vt, vv = ep.value
    if vt.size:
        ax_val.plot(vt, vv, color="#2a9d8f", marker="o", ms=3, lw=1)
    for t in switches:
        ax_val.axvline(t, color="#888888", ls=":", lw=0.8)
    ax_val.set_title(f"predicted value ({vt.size} predictions)", fontsize=9)
    ax_val.tick_params(labelsize=7)

    ax_safe = fig.add_subplot(grid[4, :], sharex=joint_axes[0])
    n_safety = int((safety > 0).sum()) if safety is not None else 0
    if safety is not None and n_safety:
        ax_safe.vlines(ep.trace_t[safety > 0], 0, 1, color="#c1121f", lw=1, label="command changed by the gate")
    if ep.safety_counts:
        t, c = zip(*ep.safety_counts)
        c = np.asarray(c, dtype=np.float64)
        ax_safe.step(t, (c - c[0]) / max(c.max() - c[0], 1), where="post", color="#555555", lw=1,
                     label=f"commander's count (+{int(c[-1] - c[0])})")
    ax_safe.set_title(f"safety interventions: {n_safety} ticks changed by the final gate" if safety is not None
                      else "safety interventions: not recorded (no commander trace)", fontsize=9)
    ax_safe.set_yticks([])
    ax_safe.set_xlabel("time (s) from the episode's first message", fontsize=8)
    if n_safety or ep.safety_counts:
        ax_safe.legend(fontsize=7, loc="upper right")

    cu = ep.custom
    outcome = cu.get("outcome", "unlabelled")
    title = (f"episode {ep.name}: {outcome}" + (f" (score {cu['success_score']})" if cu.get("success_score") else "")
             + f", {ep.duration_s:.1f} s, policy {cu.get('policy_id', '?')}, stop: {cu.get('stop_reason', '?')}")
    if cu.get("task"):
        title += f"\ntask: {cu['task']}"
    fig.suptitle(title, fontsize=11)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi, bbox_inches="tight")
    titles = [ax.get_title() for ax in fig.axes]
    plt.close(fig)
    return {"png": str(out), "axes": titles, "ticks": n_ticks,
            "held_ticks": int((held > 0).sum()) if held is not None else None, "holds_by_code": hold_counts,
            "chunk_switches": int(len(switches)), "safety_ticks": n_safety, "value_points": int(vt.size)}


def report(bag_path: Path, out: Path, generation: Optional[str] = None, dpi: int = 80) -> Dict[str, object]:
    """Read one episode bag (or converted .hdf5 episode) and write its PNG; returns the plot's summary."""
    path = Path(bag_path)
    ep = read_training_episode(path) if _is_h5(path) else read_episode(path, generation)
    return plot_episode(ep, Path(out), dpi)


def _is_h5(p: Path) -> bool:
    return p.is_file() and p.suffix in (".hdf5", ".h5")


def _is_bag(p: Path) -> bool:
    """A bag folder or storage file, or a converted training episode (.hdf5)."""
    return p.is_file() and p.suffix in (".mcap", ".db3", ".hdf5", ".h5") or p.is_dir() and (
        (p / "metadata.yaml").is_file() or any(p.glob("*.mcap")) or any(p.glob("*.db3")))


def find_bags(target: str, search: Sequence[str] = (".",)) -> List[Path]:
    """A bag (folder or storage file) or converted episode (.hdf5), a folder of them, or an episode id looked up
    under ``search``."""
    p = Path(target)
    if p.exists():
        if _is_bag(p):
            return [p]
        if p.is_dir():
            return sorted(c for c in p.iterdir() if _is_bag(c))
        raise FileNotFoundError(f"{target}: not a bag (expected a bag folder, an .mcap / .db3 file, a converted "
                                "episode .hdf5, or a folder of them)")
    found = sorted({c for root in search for pattern in (f"*{target}", f"*{target}.hdf5")
                    for c in Path(root).rglob(pattern) if _is_bag(c)})
    if not found:
        raise FileNotFoundError(f"{target}: no such bag, and no bag folder ending with that episode id under "
                                f"{', '.join(search)} (pass --bags DIR)")
    return found


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", metavar="BAG_OR_EPISODE",
                        help="an episode bag (folder or .mcap), a converted episode (.hdf5), a folder of them, or an "
                             "episode id (see --bags)")
    parser.add_argument("--out", default=None,
                        help="PNG path (one bag) or folder (several); default: <bag>.png beside each bag")
    parser.add_argument("--bags", nargs="+", default=["."], help="where to look up an episode id (default: .)")
    parser.add_argument("--generation", default=None,
                        help="gripper convention (aloha1 / aloha2); default: the bag's gripper_generation")
    parser.add_argument("--dpi", type=int, default=80, help="PNG resolution (default 80)")


def run(args: argparse.Namespace) -> int:
    try:
        bags = find_bags(args.target, args.bags)
    except FileNotFoundError as exc:
        print(f"cosmos-policy report: {exc}", file=sys.stderr)
        return 2
    failed = 0
    for bag in bags:
        if args.out is None:
            out = bag.with_name(bag.stem + ".png") if bag.is_file() else bag.parent / f"{bag.name}.png"
        elif len(bags) == 1 and Path(args.out).suffix.lower() == ".png":
            out = Path(args.out)
        else:
            out = Path(args.out) / f"{bag.stem if bag.is_file() else bag.name}.png"
        try:
            s = report(bag, out, args.generation, args.dpi)
        except Exception as exc:  # noqa: BLE001 - one bad bag must not stop the others
            print(f"{bag}: FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
            failed += 1
            continue
        holds = ", ".join(f"{k} {v}" for k, v in s["holds_by_code"].items()) or "none"
        print(f"{out}: {s['ticks']} ticks, held {s['held_ticks']} ({holds}), {s['chunk_switches']} chunk switches, "
              f"{s['safety_ticks']} safety ticks, {s['value_points']} value predictions")
    return 1 if failed else 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="cosmos-policy report", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
