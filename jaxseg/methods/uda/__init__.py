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


def load_inference_model(config, workdir: str):
  """(apply_fn, variables, config): the last trained stage's segmenter; apply_fn -> main logits."""
  import os

  stage = next(
      s
      for s in ("self_train", "adapt", "source_only")
      if os.path.isdir(os.path.join(workdir, s, "checkpoints"))
  )
  state, _ = stages.load_stage(config, workdir, stage)
  segmenter, _ = stages.method.build_networks(config, stages.TRAINING_STAGES[stage])

  def apply_fn(variables, images):
    return segmenter.apply(variables, images, train=False)["main"]

  return apply_fn, stages.segmenter_variables(state), config


__all__ = ["RESUME_SAFE_KEYS", "default_config", "load_inference_model", "run"]
