"""`make demo`: one simulated-ALOHA episode through the real ROS 2 graph, with a clear summary.

Starts the sim graph (config/graph.yaml: sim bridge, policy node, commander, recorder) as subprocesses,
resets the scene, runs one recorded episode until the task succeeds or the time limit passes, labels the
outcome in the bag, and writes a PNG of predicted versus real future frames. Exit code 0 means the
pipeline ran end to end (the task itself may fail: the summary says so).

    python -m cosmos_policy_ros.demo [--checkpoint DIR|tiny-random] [--task TEXT] [--seed N] [--duration S]
"""
from __future__ import annotations

import argparse
import bisect
import datetime as dt
import json
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

EMBEDDED_CHECKPOINT = "checkpoints/sim_transfer_cube_predict2.5"
# the launch files' streaming defaults (method, weights, execution horizon); the core module imports no ROS
from cosmos_policy_ros.core.chunking import STREAM_RTC_DEFAULTS  # noqa: E402
TINY_TASK = "transfer the cube"


def _source_root() -> Optional[Path]:
    src = os.environ.get("COSMOS_POLICY_ROS_SOURCE")
    return Path(src) if src else None


def training_seeds(checkpoint: str) -> Optional[range]:
    """The scene seeds of the checkpoint's training demos (its recipe.json ``demos.seeds``, "a..b"), if known."""
    try:
        text = json.loads((Path(checkpoint) / "recipe.json").read_text())["demos"]["seeds"]
        a, b = (int(v) for v in str(text).split(".."))
        return range(a, b + 1)
    except Exception:  # noqa: BLE001 - no recipe (e.g. a released checkpoint): unknown
        return None


def trained_vae(checkpoint: str) -> Optional[dict]:
    """The trained VAE a checkpoint's recipe.json records (``vae``, also through the ``init_recipe`` chain of a
    continued checkpoint), or None: no recipe, or the preset's randomly initialised VAE."""
    try:
        recipe = json.loads((Path(checkpoint) / "recipe.json").read_text())
    except Exception:  # noqa: BLE001 - no or unreadable recipe: nothing recorded
        return None
    while isinstance(recipe, dict):
        vae = recipe.get("vae")
        if isinstance(vae, dict) and vae.get("trained"):
            return vae
        recipe = recipe.get("init_recipe")
    return None


def vae_note(checkpoint: str) -> str:
    """What the demo says about the predicted frames of the embedded sim checkpoint."""
    vae = trained_vae(checkpoint)
    if vae is None:
        return ("(this small CPU-trained checkpoint uses a random, frozen VAE: its predicted frames are not "
                "pictures; docs/training.md)")
    psnr = vae.get("heldout_psnr_db")
    psnr = f", held-out reconstruction PSNR {psnr:.1f} dB" if isinstance(psnr, (int, float)) else ""
    return f"(predicted frames decoded by the checkpoint's trained VAE{psnr}; docs/training.md)"


def scene_note(seed: int, seeds: Optional[range]) -> str:
    """Whether a scene seed is one the policy was trained on (said next to the outcome)."""
    if seeds is None:
        return ""
    return (f" (a TRAINING scene: demos used seeds {seeds.start}..{seeds.stop - 1})" if seed in seeds
            else f" (held-out scene: demos used seeds {seeds.start}..{seeds.stop - 1})")


def default_checkpoint() -> Tuple[str, str]:
    """(checkpoint, description): the embedded small sim policy, else a random tiny network (said loudly)."""
    candidates = []
    if _source_root():
        candidates.append(_source_root() / EMBEDDED_CHECKPOINT)
    try:
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory("cosmos_policy_ros")) / EMBEDDED_CHECKPOINT)
    except Exception:  # noqa: BLE001 - not an ament install
        pass
    for c in candidates:
        if (c / "config.json").is_file():
            return str(c), f"embedded small sim policy ({c})"
    return "tiny-random", ("NO TRAINED CHECKPOINT FOUND: running a tiny RANDOMLY INITIALISED network; "
                           "the arms will move but the task cannot succeed")


def checkpoint_instructions(checkpoint: str) -> List[str]:
    """Instructions a checkpoint knows, read from its embeddings file without loading the model."""
    if checkpoint in ("tiny-random", "tiny"):
        from cosmos_policy_ros.core.policy import DEFAULT_TINY_INSTRUCTIONS

        return list(DEFAULT_TINY_INSTRUCTIONS)
    from safetensors import safe_open

    from cosmos_policy_ros.core.backbone import BACKBONES

    for backbone in BACKBONES.values():  # T5 (Predict2) or Reason1 (Predict2.5) embeddings
        path = Path(checkpoint) / backbone.embeddings_file
        if path.is_file():
            with safe_open(str(path), framework="pt") as f:
                return list(f.keys())
    return []


@dataclass
class FramePairs:
    """Real camera frames (downsampled) by stamp, and predicted future frames by the stamp they predict."""

    real_stamps: List[float] = field(default_factory=list)
    real_frames: List[np.ndarray] = field(default_factory=list)
    predicted: List[Tuple[float, np.ndarray]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    keep_seconds: float = 30.0

    def add_real(self, stamp: float, frame: np.ndarray) -> None:
        with self.lock:
            self.real_stamps.append(stamp)
            self.real_frames.append(frame)
            while self.real_stamps and self.real_stamps[0] < stamp - self.keep_seconds:
                self.real_stamps.pop(0)
                self.real_frames.pop(0)

    def add_predicted(self, stamp: float, frame: np.ndarray) -> None:
        with self.lock:
            self.predicted.append((stamp, frame))

    def pairs(self, max_pairs: int = 4, tolerance: float = 0.1) -> List[Tuple[float, np.ndarray, np.ndarray]]:
        """(stamp, predicted, real) for predictions whose moment was observed, spread over the episode."""
        with self.lock:
            out = []
            for stamp, pred in self.predicted:
                i = bisect.bisect_left(self.real_stamps, stamp)
                best = min((j for j in (i - 1, i) if 0 <= j < len(self.real_stamps)),
                           key=lambda j: abs(self.real_stamps[j] - stamp), default=None)
                if best is not None and abs(self.real_stamps[best] - stamp) <= tolerance:
                    out.append((stamp, pred, self.real_frames[best]))
        if len(out) > max_pairs:
            idx = np.linspace(0, len(out) - 1, max_pairs).round().astype(int)
            out = [out[i] for i in idx]
        return out


def model_view(checkpoint: str, camera: str = "cam_high"):
    """frame -> the frame as the checkpoint's network sees it (its ROI, squash, resize and crop), or None when the
    checkpoint has no readable config: the predicted frames are in that view, so the real one is shown in it too."""
    import torch

    from cosmos_policy_ros.core.checkpoint import image_config_of
    from cosmos_policy_ros.core.images import preprocess_batch

    try:
        cfg = image_config_of(json.loads((Path(checkpoint) / "config.json").read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError):
        return None

    def view(frame: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1).unsqueeze(0)
        return preprocess_batch(x, cfg, camera)[0].permute(1, 2, 0).numpy()

    return view


def write_comparison_png(pairs, path: Path, t0: float, view=None) -> Optional[Path]:
    """Rows of [predicted | real in the model's view | real] cam_high frames at the predicted moment (the middle
    column when ``view`` maps a real frame to the network's input); None when nothing to show."""
    if not pairs:
        return None
    from PIL import Image, ImageDraw

    h, w = 180, 240
    cols = 3 if view is not None else 2
    canvas = Image.new("RGB", (cols * (w + 10) + 10, len(pairs) * (h + 24) + 24), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    title = ("cam_high at the predicted moment: predicted | real, as the network sees it | real frame" if view
             else "predicted (left) vs real (right) cam_high, at the predicted moment")
    draw.text((10, 4), title, fill=(0, 0, 0))
    for row, (stamp, pred, real) in enumerate(pairs):
        y = 24 + row * (h + 24)
        draw.text((10, y), f"t = {stamp - t0:+.2f} s", fill=(0, 0, 0))
        shown = [pred] + ([view(real)] if view is not None else []) + [real]
        for col, im in enumerate(shown):
            canvas.paste(Image.fromarray(im).resize((w, h), Image.BILINEAR), (10 + col * (w + 10), y + 14))
    canvas.save(path)
    return path


def _recent_errors(procs, lines: int = 3) -> str:
    """The last ERROR / WARN lines of each node's output: why a graph did not come up (e.g. rejected images)."""
    out = []
    for p in procs:
        bad = [ln for ln in p.output().splitlines() if "[ERROR]" in ln or "[WARN]" in ln]
        if bad:
            out.append(f"--- {p.spec.name or p.spec.module} (last {min(lines, len(bad))} of {len(bad)} errors/warnings) ---")
            out.extend(bad[-lines:])
    return "\n".join(out) if out else "(no node reported an error or warning; see the node logs)"


def chunks_run(rows) -> int:
    """Chunks the commander ran (distinct chunk ids on ticks that were not held) in one episode's trace rows."""
    from cosmos_policy_ros.ros.commander_logic import TRACE_FIELDS

    held, cid = TRACE_FIELDS.index("held"), TRACE_FIELDS.index("chunk_id")
    return len({r[cid] for r in rows if r[held] == 0 and r[cid] >= 0})


def trace_figures(rows) -> Tuple[int, float]:
    """(ticks held, largest arm-joint command change in rad at a tick where a new chunk took over) of the
    commander's trace rows (TRACE_FIELDS, then the 14 commands sent) of one episode."""
    from cosmos_policy_ros.core.robot import JOINT_NAMES
    from cosmos_policy_ros.ros.commander_logic import TRACE_FIELDS

    f = {n: i for i, n in enumerate(TRACE_FIELDS)}
    arm = [len(TRACE_FIELDS) + j for j, n in enumerate(JOINT_NAMES) if not n.endswith("gripper")]
    held = sum(1 for r in rows if r[f["held"]] > 0)
    jump = 0.0
    for a, b in zip(rows, rows[1:]):
        if (a[f["held"]] == 0 and b[f["held"]] == 0 and a[f["chunk_id"]] >= 0
                and b[f["chunk_id"]] != a[f["chunk_id"]]):
            jump = max(jump, max(abs(b[i] - a[i]) for i in arm))
    return held, jump


def plan_record(msg) -> Dict[str, object]:
    """One PlanDecision as plain values: the observation it decided for, the kept candidate, the planner's time."""
    return {"stamp": _stamp(msg), "ok": bool(msg.ok), "chosen": int(msg.chosen), "candidates": int(msg.num_candidates),
            "planning_s": round(float(msg.planning_time), 4), "queue_s": round(float(msg.queue_time), 4),
            "error": msg.error}


def _stamp(msg) -> float:
    return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9


def _call(node, srv_type, name: str, request, timeout: float):
    """Call a service and wait for the answer (the session's executor spins the node)."""
    from cosmos_policy_ros.ros.harness import wait_for

    client = node.create_client(srv_type, name)
    if not client.wait_for_service(timeout_sec=timeout):
        raise RuntimeError(f"service {name} not available after {timeout:.0f} s")
    future = client.call_async(request)
    wait_for(future.done, timeout, what=f"answer from {name}")
    return future.result()


def run_demo(args) -> int:
    """Run one episode; print the summary; return the exit code."""
    from sensor_msgs.msg import Image
    from std_srvs.srv import Trigger

    from std_msgs.msg import Float64MultiArray

    from cosmos_policy_ros.msg import ActionChunk, PlanDecision, SimStatus
    from cosmos_policy_ros.ros.planning_client import DEFAULT_DECISION_TOPIC
    from cosmos_policy_ros.ros import graph
    from cosmos_policy_ros.ros.conversions import image_msg_to_rgb
    from cosmos_policy_ros.ros.harness import Collector, RosSession, wait_for
    from cosmos_policy_ros.srv import LabelEpisode, SimReset

    out_dir = Path(args.out or Path.cwd() / "out" / ("demo-" + dt.datetime.now().strftime("%Y%m%d-%H%M%S"))).resolve()
    bag_dir, log_dir = out_dir / "bags", out_dir / "logs"
    for d in (bag_dir, log_dir):
        d.mkdir(parents=True, exist_ok=True)

    if args.checkpoint:
        checkpoint, about = args.checkpoint, f"checkpoint {args.checkpoint}"
        if checkpoint in ("tiny-random", "tiny"):
            about = "tiny RANDOMLY INITIALISED network (no training): the task cannot succeed"
    else:
        checkpoint, about = default_checkpoint()
    known = checkpoint_instructions(checkpoint)
    task = args.task or (TINY_TASK if TINY_TASK in known or not known else known[0])
    if known and task not in known:
        print(f"demo: unknown task {task!r} for this checkpoint; known: {known}", file=sys.stderr)
        return 2
    print(f"[demo] policy: {about}")
    print(f"[demo] task: {task!r}, {args.episodes} episode(s) from seed {args.seed}, up to {args.duration:.0f} s each; "
          f"logs in {log_dir}")

    arguments = {"checkpoint": checkpoint, "task": task, "bag_dir": str(bag_dir), "record": True,
                 "execution": args.execution, "execute_horizon": int(args.execute_horizon), "rtc": args.rtc,
                 "rtc_schedule": args.rtc_schedule, "rtc_execution_horizon": int(args.rtc_execution_horizon)}
    if args.planning_model:
        if args.planning_candidates < 2:
            print(f"demo: --planning-candidates: expected at least 2 with --planning-model, got "
                  f"{args.planning_candidates}", file=sys.stderr)
            return 2
        arguments.update(planning=True, planning_candidates=int(args.planning_candidates),
                         planner_checkpoint=str(args.planning_model))
        print(f"[demo] planning: best of {args.planning_candidates} candidates, planning model {args.planning_model}")
    # The policy needs one frame set per chunk; rendering 3 x 480x640 at 30 Hz costs most of a core that
    # inference needs on a 2-core machine, so the demo renders fewer frames (full size, real topics).
    node_params = {"sim_bridge": {"seed": int(args.seed), "camera_rate_hz": float(args.camera_rate)}, "policy": {}}
    if args.sim_steps:
        node_params["sim_bridge"]["max_steps"] = int(args.sim_steps)
    if args.planning_window:
        arguments["planning_window"] = [float(v) for v in args.planning_window]
        print(f"[demo] planning only for observations {args.planning_window[0]:g}..{args.planning_window[1]:g} s "
              f"into the episode (the base chunk elsewhere)")
    if args.planning_deadline is not None:
        node_params["policy"]["planning_deadline"] = float(args.planning_deadline)
    node_params = {k: v for k, v in node_params.items() if v}
    pairs = FramePairs()
    with graph.run("sim", arguments, log_dir=str(log_dir), node_parameters=node_params) as procs, RosSession() as ros:
        node = ros.make_node("demo")
        chunks = Collector(node, ActionChunk, "/policy/action_chunk", 10)
        # the planner's answers (best-of-N): which candidate each decision kept and how long it took
        decisions = Collector(node, PlanDecision, DEFAULT_DECISION_TOPIC, 10) if args.planning_model else None
        trace = Collector(node, Float64MultiArray, "/commander/trace", 100)  # held ticks and chunk switches
        status = Collector(node, SimStatus, "/sim_bridge/status", 50)

        def on_real(msg):
            rgb = image_msg_to_rgb(msg)
            pairs.add_real(_stamp(msg), np.ascontiguousarray(rgb[::2, ::2]))

        def on_pred(msg):
            pairs.add_predicted(_stamp(msg), np.array(image_msg_to_rgb(msg)))

        node.create_subscription(Image, "/cam_high/camera/color/image_rect_raw", on_real, 5)
        node.create_subscription(Image, "/policy/future/cam_high", on_pred, 5)

        def check_alive():
            dead = [p for p in procs if not p.alive()]
            if dead:
                names = ", ".join(p.spec.name or p.spec.module for p in dead)
                tail = "\n".join(f"--- {p.spec.name} ---\n{p.output()[-2000:]}" for p in dead)
                raise RuntimeError(f"node(s) exited early: {names}\n{tail}")

        t_start = time.monotonic()
        print("[demo] waiting for the simulator, policy warm-up and the first action chunk ...", flush=True)
        try:
            wait_for(lambda: (check_alive() or True) and len(chunks) > 0, args.startup_timeout, interval=0.2,
                     what="the first action chunk from the policy node")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n{_recent_errors(procs)}") from None
        print(f"[demo] graph ready after {time.monotonic() - t_start:.1f} s")

        def run_episode(seed: int) -> Dict[str, object]:
            """Reset to ``seed``, run one recorded episode, label it; the episode's result."""
            before = status.snapshot()
            prev_episode = before[-1].episode if before else -1
            reset = _call(node, SimReset, "/sim_bridge/reset_seed", SimReset.Request(seed=int(seed)), 30)
            if not reset.success:
                raise RuntimeError(f"sim reset refused: {reset.message}")
            # Statuses received before the reset belong to the previous scene: wait for the new episode's.
            wait_for(lambda: any(m.episode > prev_episode for m in status.snapshot()[-10:]), 20,
                     what="the simulator's status after the reset")
            episode_no = max(m.episode for m in status.snapshot()[-10:])
            started = _call(node, Trigger, "/commander/start_episode", Trigger.Request(), 30)
            if not started.success:
                raise RuntimeError(f"commander refused to start the episode: {started.message}")
            episode_id = started.message
            n_chunks0, t_ep, n_trace0 = len(chunks), time.monotonic(), len(trace)
            n_dec0 = len(decisions) if decisions is not None else 0
            print(f"[demo] episode {episode_id} (seed {seed}) running", flush=True)

            def current():
                mine = [m for m in status.snapshot()[-20:] if m.episode == episode_no]
                return mine[-1] if mine else None

            last_report = 0.0
            while True:
                check_alive()
                s = current()
                if s is not None and (s.ever_success or s.episode_end):
                    break
                elapsed = time.monotonic() - t_ep
                if elapsed > args.duration:
                    ran = chunks_run([m.data for m in trace.snapshot()[n_trace0:]])
                    if ran >= args.min_chunks:
                        break
                    if elapsed > args.duration + args.min_chunks_wait:
                        print(f"[demo]   warning: only {ran} of --min-chunks {args.min_chunks} chunks ran in "
                              f"{elapsed:.0f} s; ending the episode", flush=True)
                        break
                if s is not None and time.monotonic() - last_report > 2.0:
                    print(f"[demo]   sim t={s.sim_time:5.1f} s  reward {s.max_reward}/4  "
                          f"chunks {len(chunks) - n_chunks0}", flush=True)
                    last_report = time.monotonic()
                time.sleep(0.1)
            final = current()
            held_ticks, switch_jump = trace_figures([m.data for m in trace.snapshot()[n_trace0:]])
            # the episode's chunks are those received until it ended (not those arriving while it is stopped and
            # labelled); each one's latency: its arrival here on the wall clock (the graph's ROS time) minus its
            # observation stamp
            mine, wall_minus_mono = chunks.timed(n_chunks0), time.time() - time.monotonic()
            latencies = [t_arr + wall_minus_mono - _stamp(m) for m, t_arr in mine]
            planned = [] if decisions is None else [plan_record(m) for m in decisions.snapshot()[n_dec0:]]
            _call(node, Trigger, "/commander/stop_episode", Trigger.Request(), 30)
            success = bool(final.ever_success)
            outcome = "success" if success else ("partial" if final.max_reward >= 2 else "failure")
            score = 1.0 if success else final.max_reward / 4.0
            label = _call(node, LabelEpisode, "/recorder/label_episode",
                          LabelEpisode.Request(episode_id=episode_id, outcome=outcome, success_score=float(score),
                                               note=f"make demo, seed {seed}, sim max reward {final.max_reward}/4"), 30)
            # The recorder closes the bag on STOP; wait until its metadata is on disk.
            bag_path = Path(label.bag_path) if label.bag_path else None
            if bag_path is not None:
                try:
                    wait_for(lambda: (bag_path / "metadata.yaml").is_file(), 30, what=f"{bag_path}/metadata.yaml")
                except TimeoutError as exc:
                    print(f"[demo] warning: {exc}", file=sys.stderr)
                    bag_path = None
            return dict(seed=seed, success=success, outcome=outcome, score=score, sim_time=final.sim_time,
                        max_reward=final.max_reward, chunks=len(mine), label=label,
                        episode_id=episode_id, bag=bag_path, stamp0=_stamp(final) - final.sim_time,
                        held_ticks=held_ticks, max_switch_jump_rad=switch_jump,
                        chunk_stamps=[_stamp(m) for m, _ in mine], chunk_latency_s=[round(v, 4) for v in latencies],
                        plan_decisions=planned)

        results = [run_episode(args.seed + i) for i in range(args.episodes)]
        result = results[0]
        ep_stamp0 = result["stamp0"]

    png = write_comparison_png(pairs.pairs(), out_dir / "predicted_vs_real.png", ep_stamp0 or 0.0,
                               view=model_view(checkpoint))
    print("\n=== cosmos_policy_ros demo summary ===")
    print(f"policy      : {about}")
    print(f"task        : {task!r} (simulated ALOHA transfer cube)")
    seeds = training_seeds(checkpoint)
    for r in results:
        verdict = "SUCCESS" if r["success"] else f"FAILURE ({r['outcome']}, max reward {r['max_reward']}/4)"
        print(f"seed {r['seed']:<6}: {verdict} after {r['sim_time']:.1f} s of simulated time; "
              f"{r['chunks']} chunks executed by the 25 Hz commander{scene_note(r['seed'], seeds)}")
        print(f"  bag       : {r['bag'] or 'NOT WRITTEN'}  (label: {r['label'].message})")
    if len(results) > 1:
        n_ok = sum(bool(r["success"]) for r in results)
        print(f"success     : {n_ok}/{len(results)} ({100.0 * n_ok / len(results):.0f}%) through the real ROS 2 graph")
    print(f"future PNG  : {png or 'none (no predicted frame matched a real frame)'}")
    if png and "embedded small sim policy" in about:
        print(f"              {vae_note(checkpoint)}")
    print(f"node logs   : {log_dir}")
    if args.json:
        Path(args.json).write_text(json.dumps([{k: (str(v) if isinstance(v, Path) else v) for k, v in r.items()
                                                if k != "label"} for r in results], indent=1))
    return 0 if all(r["bag"] for r in results) else 1


def build_parser() -> argparse.ArgumentParser:
    """The demo's command line."""
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None, help="policy checkpoint (default: the embedded small sim policy)")
    parser.add_argument("--task", default=None, help="task instruction (default: the checkpoint's first)")
    parser.add_argument("--seed", type=int, default=1000,
                        help="scene seed (cube pose); the default is the first held-out benchmark scene (the embedded "
                             "policy's demos used seeds 0..39)")
    parser.add_argument("--episodes", type=int, default=1, help="episodes to run (seeds seed, seed+1, ...)")
    parser.add_argument("--json", default=None, help="also write the per-episode results as JSON here")
    parser.add_argument("--duration", type=float, default=12.0, help="episode time limit in seconds")
    parser.add_argument("--min-chunks", type=int, default=0,
                        help="keep the episode going past --duration until the commander has run this many chunks "
                             "(a loaded machine computes the first ones slowly), at most --min-chunks-wait s longer")
    parser.add_argument("--min-chunks-wait", type=float, default=120.0,
                        help="with --min-chunks: extra seconds allowed past --duration")
    parser.add_argument("--camera-rate", type=float, default=15.0, help="simulated camera frame rate (Hz)")
    parser.add_argument("--execution", choices=("stream", "pause"), default="stream",
                        help="policy node execution: stream (the default, as in the launch files: re-plan while "
                             "moving, with real-time chunking; the robot never waits for the model) or pause (whole "
                             "chunks, hold while the next is computed, as the released deploy); BENCHMARKS.md "
                             "compares them")
    parser.add_argument("--execute-horizon", type=int, default=0,
                        help="actions of each chunk executed before the next one (0 = the whole chunk)")
    parser.add_argument("--rtc", choices=("off", "replace", "guided"), default=STREAM_RTC_DEFAULTS[0],
                        help="real-time chunking with --execution stream (docs/runtime.md; off: stream without it)")
    parser.add_argument("--rtc-schedule", choices=("exp", "linear", "ones", "zeros"), default=STREAM_RTC_DEFAULTS[1],
                        help="with --rtc: weights of the running chunk past the frozen actions (ones: the whole overlap)")
    parser.add_argument("--rtc-execution-horizon", type=int, default=STREAM_RTC_DEFAULTS[2],
                        help="with --rtc: ticks from one observation to the next, at most (0: just in time)")
    parser.add_argument("--planning-model", default=None,
                        help="best-of-N planning through the planner node with this planning model (world model + "
                             "value; e.g. checkpoints/sim_transfer_cube_predict2.5_planning, built by "
                             "scripts/planning_model.sh; docs/planning.md)")
    parser.add_argument("--planning-candidates", type=int, default=8,
                        help="with --planning-model: candidate chunks per query")
    parser.add_argument("--planning-window", type=float, nargs=2, metavar=("START", "END"), default=None,
                        help="with --planning-model: plan only for observations taken START..END s after the episode "
                             "start (e.g. 1 3: the grasp, where planning pays on this task; docs/planning.md)")
    parser.add_argument("--planning-deadline", type=float, default=None,
                        help="with --planning-model: seconds the policy node waits for the planner's decision before "
                             "it falls back to candidate 0 (default: the node's 15 s; a CPU-only planner needs more)")
    parser.add_argument("--sim-steps", type=int, default=None,
                        help="50 Hz physics steps per simulated episode (default: the sim bridge's 600, 12 s); the "
                             "simulator keeps running while the robot holds for an inference")
    parser.add_argument("--startup-timeout", type=float, default=180.0, help="seconds to wait for the graph")
    parser.add_argument("--out", default=None, help="output directory (default ./out/demo-<time>)")
    return parser


def main(argv=None) -> int:
    """Parse arguments and run the demo."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.planning_window is not None:
        if not args.planning_model:
            parser.error("--planning-window: only with --planning-model")
        from cosmos_policy_ros.core.plan_window import PlanWindow

        try:
            PlanWindow.parse(args.planning_window)
        except ValueError as exc:
            parser.error(str(exc))
    if args.planning_deadline is not None and not args.planning_model:
        parser.error("--planning-deadline: only with --planning-model")
    if args.planning_deadline is not None and not (0 < args.planning_deadline < float("inf")):
        parser.error(f"--planning-deadline: expected a finite number of seconds > 0, got {args.planning_deadline}")
    if args.sim_steps is not None and args.sim_steps < 1:
        parser.error(f"--sim-steps: expected a positive number of physics steps, got {args.sim_steps}")
    if args.min_chunks < 0 or args.min_chunks_wait < 0:
        parser.error(f"--min-chunks and --min-chunks-wait must be >= 0, got {args.min_chunks} and {args.min_chunks_wait}")
    try:
        return run_demo(args)
    except (RuntimeError, TimeoutError) as exc:
        print(f"\n[demo] FAILED: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
