"""Unsupervised domain adaptation with entropy: ADVENT MinEnt / AdvEnt, ESL pseudo labels, self-training.

Modules: `method` (config, networks, objectives), `pseudo_labels` (ESL / max-prob thresholds and labels,
bounded-memory dataset pass), `stages` (the stage functions).
"""

from jaxseg.methods.uda import stages
from jaxseg.methods.uda.method import RESUME_SAFE_KEYS, default_config
from jaxseg.train.stages import run_stages


def run(config, workdir: str) -> dict:
  """Runs `config.stages`; finished stages of an earlier launch in `workdir` are skipped."""
  return run_stages(config, workdir, stages.STAGE_FNS, method="uda")


def load_inference_model(config, workdir: str, stage: str | None = None, which: str = "latest"):
  """A trained stage's segmenter (default: the last one trained of self_train, adapt, source_only):
  `predict(images) -> main logits [B, h, w, 19]` at the network's output stride."""
  import os

  if stage is None:
    trained = [
        s for s in stages.TRAINING_STAGES if os.path.isdir(os.path.join(workdir, s, "checkpoints"))
    ]
    if not trained:
      raise FileNotFoundError(f"{workdir}: no trained stage ({', '.join(stages.TRAINING_STAGES)})")
    stage = trained[-1]
  if stage not in stages.TRAINING_STAGES:
    raise ValueError(f"stage={stage!r}: expected one of {tuple(stages.TRAINING_STAGES)}")
  return stages.load_stage(config, workdir, stage, which)


__all__ = ["RESUME_SAFE_KEYS", "default_config", "load_inference_model", "run"]
