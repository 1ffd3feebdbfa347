"""The backbones Cosmos Policy is published on, as data: everything that differs between them lives here.

A checkpoint's network config names its backbone (``"backbone"`` in ``config.json``'s ``network``; a config
without the field is Predict2, the first published one). Building the network, sampling, training and
converting NVIDIA checkpoints look the backbone up in :data:`BACKBONES` instead of branching on its name:

============================  ===================================  =========================================
                              ``predict2`` (Cosmos-Predict2-2B)    ``predict2.5`` (Cosmos-Predict2.5-2B)
============================  ===================================  =========================================
network                       2B DiT, T5 context 1024              same DiT + Linear(100,352 -> 1024) + GELU
text embedding / instruction  T5-11B, (1, 512, 1024)               Cosmos-Reason1-7B, (1, 512, 100,352)
noise level                   sigma in [0, inf), RF scaling        sigma in [0, 1], ``x = s eps + (1 - s) x0``
network output                F (x0 via c_skip / c_out)            velocity ``eps - x0``
sampler                       Karras rho 7, 80 -> 4, 2nd-order     UniPC order 2, shift-5 schedule -> 0,
                              exponential multistep, 10 calls      5 calls
training noise                70% log-normal / 30% uniform,        ``sigmoid(N(0, 1))`` on a 1000 grid,
                              x sqrt(frames)                       shift 5
training loss                 10 mean((x0 - x0_hat)^2 w(sigma))    mean((v - v_hat)^2), action frame x16
released policies             ALOHA, LIBERO, RoboCasa              LIBERO, RoboCasa (no ALOHA)
============================  ===================================  =========================================
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

from .rf_sampler import RFSamplerConfig, run_rf_stages
from .sampler import SamplerConfig, run_stages

FORMULATIONS = ("edm", "rf")


@dataclass(frozen=True)
class Backbone:
    """One backbone's choices. ``objective`` holds training-objective defaults (keys of
    ``cosmos_policy_training.objectives.ObjectiveConfig``), ``optim`` optimiser defaults (keys of
    ``cosmos_policy_training.trainer.OptimConfig``), ``hf_subfolders`` the released policies inside
    ``hf_repo`` per layout (every spelling NVIDIA's pages use)."""

    name: str
    title: str
    formulation: str
    text_encoder: str
    text_dim: int  # width of one shipped instruction embedding (what the network takes)
    crossattn_dim: int = 1024  # width the cross-attention sees
    crossattn_projection: bool = False  # Linear(text_dim -> crossattn_dim) + GELU before cross-attention
    sampler_config: type = SamplerConfig
    embeddings_file: str = "t5_embeddings.safetensors"  # in our checkpoint format
    nvidia_embeddings: Tuple[str, ...] = ("*t5_embeddings.safetensors", "*t5_embeddings.pkl")
    objective: Mapping[str, Any] = field(default_factory=dict)
    optim: Mapping[str, Any] = field(default_factory=dict)  # optimiser defaults (OptimConfig keys) of its recipe
    hf_repo: Optional[str] = None
    hf_subfolders: Mapping[str, Tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self):
        if self.formulation not in FORMULATIONS:
            raise ValueError(f"backbone {self.name!r}: formulation expected one of {FORMULATIONS}, got {self.formulation!r}")

    def default_sampler(self):
        """The released deploy's sampler settings."""
        return self.sampler_config()

    def sampler_from_dict(self, d: Mapping[str, Any]):
        """The sampler settings stored in a checkpoint's config."""
        return self.sampler_config(**dict(d))

    def check_sampler(self, cfg) -> None:
        """Raise ValueError unless ``cfg`` is this backbone's sampler configuration."""
        if not isinstance(cfg, self.sampler_config):
            raise ValueError(f"backbone {self.name!r} samples with {self.sampler_config.__name__}, "
                             f"got {type(cfg).__name__}")

    def transformer_kwargs(self, text_embed_dim: int, text_input_dim: Optional[int]) -> Dict[str, Any]:
        """Extra ``CosmosTransformer3DModel`` arguments for the text path."""
        if not self.crossattn_projection:
            return {}
        return {"use_crossattn_projection": True, "crossattn_proj_in_channels": int(text_input_dim),
                "encoder_hidden_states_channels": int(text_embed_dim)}


PREDICT2 = Backbone(
    name="predict2", title="Cosmos-Predict2-2B", formulation="edm", text_encoder="T5-11B", text_dim=1024,
    sampler_config=SamplerConfig, objective={"formulation": "edm"})

PREDICT2_5 = Backbone(
    name="predict2.5", title="Cosmos-Predict2.5-2B", formulation="rf", text_encoder="Cosmos-Reason1-7B",
    text_dim=100352, crossattn_projection=True, sampler_config=RFSamplerConfig,
    embeddings_file="reason1_embeddings.safetensors",
    nvidia_embeddings=("*reason1_embeddings.safetensors", "*reason1_embeddings.pkl"),
    objective={"formulation": "rf", "shift": 5.0, "action_weight": 16.0, "loss_scale": 1.0},
    optim={"lr": 2e-4, "betas": (0.9, 0.999), "warmup_steps": 1000, "decay_steps": 42800, "decay_factor": 0.06,
           "final_factor": 0.06},
    hf_repo="nvidia/Cosmos-Predict2.5-2B",
    hf_subfolders={"libero": ("robot/policy/libero", "robot/cosmos-policy/libero"),
                   "robocasa": ("robot/policy/robocasa", "robot/cosmos-policy/robocasa")})

BACKBONES: Dict[str, Backbone] = {b.name: b for b in (PREDICT2, PREDICT2_5)}
DEFAULT_BACKBONE = "predict2"  # what a config without the field means


def get_backbone(name: Optional[str]) -> Backbone:
    """Backbone by name (None = the default, Predict2) with a clear error."""
    key = DEFAULT_BACKBONE if name is None else str(name)
    try:
        return BACKBONES[key]
    except KeyError:
        raise ValueError(f"backbone: expected one of {sorted(BACKBONES)}, got {name!r}") from None


#: sampler configuration type -> its stage runner ``(net_fn, clean, stages, seeds, cfg, timer) -> SampleResult``
STAGE_RUNNERS: Dict[type, Callable] = {SamplerConfig: run_stages, RFSamplerConfig: run_rf_stages}


def run_sampler(net_fn, clean, stages: Sequence, seeds: Sequence[int], cfg, timer=None, inpaint=None):
    """Run ``stages`` with the sampler ``cfg`` describes (EDM-style or rectified flow); ``inpaint``
    (:class:`~cosmos_policy_ros.core.sampler.Inpainting`, real-time chunking) works with both."""
    try:
        runner = STAGE_RUNNERS[type(cfg)]
    except KeyError:
        raise ValueError(f"sampler config: expected one of {[t.__name__ for t in STAGE_RUNNERS]}, "
                         f"got {type(cfg).__name__}") from None
    return runner(net_fn, clean, stages, seeds, cfg, timer=timer, inpaint=inpaint)
