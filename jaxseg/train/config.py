"""Trainer keys shared by every method's `default_config()`."""
import ml_collections


def trainer_config() -> ml_collections.ConfigDict:
  """Returns the keys the shared trainer reads, with defaults.

  Methods add `data`, `model` and their own sections on top of this and
  lock the result, so config files can only set keys that exist.
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

  c.train = ml_collections.ConfigDict(dict(
      batch_size=16,           # global batch, split over processes and the 'data' axis
      total_steps=1000,
      log_every=50,            # host sync for metrics (and the NaN check) happens only here
      checkpoint_every=200,
      keep_checkpoints=2,
      async_checkpoint=True,
      progress_bar=True,
      compute_dtype="float32",  # 'bfloat16' for mixed precision; params stay float32
      num_workers=0,           # grain worker processes (0 = in-process)
      prefetch_batches=2,      # batches placed on device ahead of the step
      check_recompile=True,    # raise if the step compiles again after its first call
  ))

  c.optimizer = ml_collections.ConfigDict(dict(
      name="momentum",         # sgd | momentum | adamw
      learning_rate=0.01,
      momentum=0.9,
      nesterov=False,
      b1=0.9, b2=0.999, eps=1e-8,
      weight_decay=1e-4,       # coupled L2 for sgd/momentum (as PyTorch), decoupled for adamw
      weight_decay_exclude="",  # regex on param paths exempt from weight decay ('' = none)
      schedule="poly",         # constant | poly | cosine
      poly_power=0.9,
      warmup_steps=0,
      end_learning_rate=0.0,
      lr_multipliers=(),       # ((regex, multiplier), ...), first match wins; e.g. new layers at 10x
      frozen="",               # regex on param paths that are not trained ('' = none)
      grad_clip_norm=0.0,      # 0 = off
  ))
  return c
