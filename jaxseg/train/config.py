"""Trainer keys shared by every method's `default_config()`."""

import jax.numpy as jnp
import ml_collections

from jaxseg.config import check_keys
from jaxseg.train import optimizer as optim

# Keys of a complete trainer section (see `trainer_section`); the rest of a trainer config
# (seed, mesh, sharding rules) is shared by every training stage of a run.
SECTION_KEYS = ("train", "optimizer")
# Sections whose entries the config names itself (optimiser groups): `check_keys` leaves their keys
# to the optimiser factory (`optim.check_group_keys`), which knows each registered optimiser's keys.
OPEN_SECTIONS = ("optimizer.groups",)
# Keys that may change between launches of one workdir without changing what is trained (see
# `jaxseg.methods.check_resume_config`): which stages run, and in every trainer section's `train`
# the logging, checkpoint cadence, loader and in-training evaluation keys.
RESUME_SAFE_KEYS = ("stages",)
RESUME_SAFE_TRAIN_KEYS = (
    "log_every",
    "checkpoint_every",
    "keep_checkpoints",
    "async_checkpoint",
    "progress_bar",
    "num_workers",
    "prefetch_batches",
    "check_recompile",
    "eval_every",
)


def train_fields() -> dict:
  return dict(
      batch_size=16,  # global batch, split over processes and the 'data' axis
      total_steps=1000,
      log_every=50,  # metrics are averaged on device and read back only here
      checkpoint_every=200,
      keep_checkpoints=2,
      async_checkpoint=True,
      progress_bar=True,
      compute_dtype="float32",  # 'bfloat16' for mixed precision; params stay float32
      # 'winograd': the step's 3x3 stride-1 convolutions by Winograd F(2x2, 3x3), faster on CPU, rounding
      # differs ~1e-6 (jaxseg/models/winograd.py); 'direct' = the convolution op (GPU / TPU: keep it).
      conv_algorithm="direct",
      num_workers=0,  # grain worker processes (0 = in-process)
      prefetch_batches=2,  # batches placed on device ahead of the step
      check_recompile=True,  # raise if the step compiles again after its first call
      eval_every=0,  # run the method's evaluator every N steps inside training (0 = off)
      best_metric="",  # keep checkpoints_best/ by this evaluator metric ('' = off), e.g. 'miou'
      best_mode="max",  # max | min
  )


def trainer_section(**train_overrides) -> ml_collections.ConfigDict:
  """One training stage's complete section: `train` and `optimizer` (with `optimizer.groups`)."""
  s = ml_collections.ConfigDict()
  s.train = ml_collections.ConfigDict(train_fields())
  s.train.update(train_overrides)
  s.optimizer = ml_collections.ConfigDict(optim.optimizer_fields())
  s.optimizer.grad_clip_norm = 0.0  # 0 = off; clips the global norm over every group
  # Named groups, each a complete optimiser config from `optimizer_group(params=regex, ...)`.
  s.optimizer.groups = ml_collections.ConfigDict()
  return s


def trainer_config() -> ml_collections.ConfigDict:
  """Returns the keys the shared trainer reads, with defaults.

  Methods add `data`, `model` and their own sections on top of this and
  lock the result, so config files can only set keys that exist. A method with
  several training stages gives each further stage its own `trainer_section()`.
  """
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.stages = ("train", "evaluate")

  # Mesh: axes ('data', 'model'); -1 = all remaining devices.
  c.mesh = ml_collections.ConfigDict(dict(data=-1, model=1))
  # Parameter sharding rules, first match wins, matched (re.search) against the
  # '/'-joined path of each leaf of the train state (params and optimiser state
  # alike). A spec is 'replicate', 'fsdp' (largest dim divisible by the 'data'
  # axis, for leaves of at least `fsdp_min_size` elements) or a tuple of mesh
  # axis names / None per dimension. Unmatched leaves are replicated.
  c.sharding_rules = ()
  c.fsdp_min_size = 2**14
  c.update(trainer_section())
  return c


def stage_section(
    config: ml_collections.ConfigDict, section: str | None
) -> ml_collections.ConfigDict:
  """The trainer section of one training stage: `config[section]`, or `config` for None (the main
  stage). Methods read a stage's keys (`train.compute_dtype`, `train.batch_size`) from here, so a
  stage's section never silently falls back to the top level's."""
  return config if section is None else config[section]


def compute_dtype(config: ml_collections.ConfigDict, section: str | None = None) -> jnp.dtype:
  """The activation dtype of one training stage's model (`<section>.train.compute_dtype`)."""
  return jnp.dtype(stage_section(config, section).train.compute_dtype)


def stage_trainer_config(
    config: ml_collections.ConfigDict, section: str | None
) -> ml_collections.ConfigDict:
  """The complete trainer config of one training stage.

  Args:
    config: the method's config.
    section: the key of the stage's `trainer_section()` (e.g. 'affinity'), or None for the
      main stage (the top-level `train` / `optimizer`).
  Returns:
    A new locked ConfigDict with seed, mesh, sharding_rules, fsdp_min_size and the stage's
    train / optimizer: all the trainer reads, nothing inherited silently from another stage.
  """
  src = stage_section(config, section)
  c = ml_collections.ConfigDict()
  for key in ("seed", "mesh", "sharding_rules", "fsdp_min_size"):
    c[key] = config[key]
  for key in SECTION_KEYS:
    c[key] = ml_collections.ConfigDict(src[key].to_dict())
  c.lock()
  return c


def trainer_sections(
    config: ml_collections.ConfigDict,
) -> dict[str | None, ml_collections.ConfigDict]:
  """{section key (None = top level): section} of every training stage's `trainer_section()` in
  `config`: the top level and each first-level ConfigDict holding `train` and `optimizer`."""
  out = {None: config}
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict) and all(k in value for k in SECTION_KEYS):
      out[key] = value
  return out


def check_config_keys(
    config: ml_collections.ConfigDict, reference: ml_collections.ConfigDict
) -> None:
  """`check_keys` against the method's default config, then each optimiser group's own keys.

  Raises:
    ConfigError: naming the first unknown keys (e.g. `affinity.optimizer.groups.head.betas`).
  """
  check_keys(config, reference, open_sections=OPEN_SECTIONS)
  for name, section in trainer_sections(config).items():
    optim.check_group_keys(section.optimizer, "optimizer" if name is None else f"{name}.optimizer")


def resume_safe_keys(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The trainer's resume-safe keys of `config`, in every trainer section (e.g. `affinity.train.log_every`)."""
  out = list(RESUME_SAFE_KEYS)
  for name in trainer_sections(config):
    prefix = "" if name is None else f"{name}."
    out += [f"{prefix}train.{k}" for k in RESUME_SAFE_TRAIN_KEYS]
  return tuple(out)


# Trainer keys added after configs were first saved, with the value that reproduces what a config.json
# written without them computed; `fill_added_train_keys` puts them in before two configs are compared.
ADDED_TRAIN_KEYS = {"conv_algorithm": "direct"}


def fill_added_train_keys(values: dict) -> dict:
  """A saved config dict with every `ADDED_TRAIN_KEYS` entry its `train` sections lack (in place)."""
  for key, value in values.items():
    if isinstance(value, dict):
      if key == "train" and "total_steps" in value:
        for added, default in ADDED_TRAIN_KEYS.items():
          value.setdefault(added, default)
      fill_added_train_keys(value)
  return values


def config_diff(old: dict, new: dict, prefix: str = "") -> list[tuple[str, object, object]]:
  """[(key, old value, new value)] of the leaves that differ between two config dicts."""
  out = []
  for key in sorted(set(old) | set(new)):
    a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
    if isinstance(a, dict) and isinstance(b, dict):
      out.extend(config_diff(a, b, f"{prefix}{key}."))
    elif a != b:
      out.append((f"{prefix}{key}", a, b))
  return out


def describe_config_diff(changed: list[tuple[str, object, object]], limit: int = 4) -> str:
  """'key: old -> new; ...' of the first `limit` entries of `config_diff`, '(+N more)' for the rest."""
  shown = "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in changed[:limit])
  return shown + (f" (+{len(changed) - limit} more)" if len(changed) > limit else "")
