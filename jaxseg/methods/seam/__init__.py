"""SEAM: weakly supervised segmentation from image-level labels.

Modules, each importing only the ones before it (no cycles):
  method.py          config, model, the 'train' stage, the trained CAM model
  stages.py          'infer' (multi-scale CAMs, pseudo masks, threshold sweep) and 'evaluate'
  affinity_stage.py  'affinity' (CRF labels, AffinityNet with its own trainer section, random walk)
  segment_stage.py   'segment' (random-walk pseudo masks -> DeepLab-v2, its own trainer section; CRF)
"""

from jaxseg.methods.seam import affinity_stage, method, segment_stage, stages
from jaxseg.methods.seam.method import (
    RESUME_SAFE_KEYS,
    STAGES,
    default_config,
    load_inference_model,
)
from jaxseg.train.stages import run_stages

STAGE_FNS = {
    "train": method.train,
    "infer": stages.infer,
    "affinity": affinity_stage.run,
    "segment": segment_stage.run,
    "evaluate": stages.evaluate,
}
assert tuple(STAGE_FNS) == STAGES


def run(config, workdir: str) -> dict:
  """Runs `config.stages`; finished stages of an earlier launch in `workdir` are skipped."""
  return run_stages(config, workdir, STAGE_FNS, method="seam")


__all__ = ["RESUME_SAFE_KEYS", "default_config", "load_inference_model", "run"]
