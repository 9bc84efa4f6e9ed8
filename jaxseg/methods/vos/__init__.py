"""Self-supervised video object segmentation: MAST / CRW correspondence, mask propagation, DAVIS J&F.

Modules: `method` (config, encoders' objectives, clip inputs), `data` (clip sources, the DAVIS-layout
evaluation sequences), `propagation` (MAST / CRW memories, baselines), `stages` (train, propagate,
evaluate).
"""

from jaxseg.methods.vos import stages
from jaxseg.methods.vos.method import RESUME_SAFE_KEYS, default_config
from jaxseg.train.stages import run_stages


def run(config, workdir: str) -> dict:
  """Runs `config.stages`; finished stages of an earlier launch in `workdir` are skipped."""
  return run_stages(config, workdir, stages.STAGE_FNS, method="vos")


def load_inference_model(config, workdir: str, stage: str | None = None, which: str = "latest"):
  """The trained encoder of the 'train' stage: `predict(frames [B, H, W, 3]) -> features [B, h, w, D]`
  (inputs as `method.frames_to_input` makes them)."""
  if stage not in (None, "train"):
    raise ValueError(f"stage={stage!r}: the encoder comes from the 'train' stage")
  return stages.load_encoder(config, workdir, which)


__all__ = ["RESUME_SAFE_KEYS", "default_config", "load_inference_model", "run"]
