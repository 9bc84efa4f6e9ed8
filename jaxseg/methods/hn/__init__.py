"""Depth as free supervision: HN labels from RGB-D, pre-training, few-label fine-tuning (method `hn`).

Modules: `method` (config, network, tasks, weight transfer), `data` (RGB-D and semantic sources,
labelled subsets), `stages` (hn_labels, pretrain, finetune, evaluate). The geometry (normals, gravity,
height, HN labels) is `jaxseg.depth`.
"""

from jaxseg.methods.hn import stages
from jaxseg.methods.hn.method import RESUME_SAFE_KEYS, default_config
from jaxseg.train.stages import run_stages


def run(config, workdir: str) -> dict:
  """Runs `config.stages`; finished stages of an earlier launch in `workdir` are skipped."""
  return run_stages(config, workdir, stages.STAGE_FNS, method="hn")


def load_inference_model(config, workdir: str, stage: str | None = None, which: str = "latest"):
  """A trained network: a fine-tuning run '<arm>_<percent>pct' (default: the last trained of
  `finetune.arms` x `finetune.label_fractions`) or 'pretrain' (the HN-label network);
  `predict(images) -> logits [B, h, w, C]`."""
  import os

  if stage is None:
    runs = [stages.run_name(a, f) for a, f in stages.finetune_runs(config)]
    trained = [
        r for r in runs if os.path.isdir(os.path.join(workdir, "finetune", r, "checkpoints"))
    ]
    stage = trained[-1] if trained else "pretrain"
  return stages.load_run(config, workdir, stage, which)


__all__ = ["RESUME_SAFE_KEYS", "default_config", "load_inference_model", "run"]
