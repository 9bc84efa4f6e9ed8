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


__all__ = ["RESUME_SAFE_KEYS", "default_config", "run"]
