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


__all__ = ["RESUME_SAFE_KEYS", "default_config", "run"]
