"""Applies a trained workdir's network to your own images or videos.

  python -m jaxseg.predict --workdir=W --input=<image | folder | 'glob/**/*.jpg'> --out=DIR
      [--stage=S] [--which=latest|best] [--scales=0.75,1,1.25] [--flip] [--crf] [--batch_size=8]
      [--skip_bad]
  python -m jaxseg.predict --workdir=W_vos --input=<frames folder | folder of frame folders>
      --first_mask=<first frame's PNG | DAVIS Annotations folder> --out=DIR

Images (supervised, uda, hn, seam): `DIR/masks/<name>.png` (palette PNG, pixel value = class id) and
`DIR/overlays/<name>.png` (the image with the mask blended in and a legend of the classes present).
Video (vos): `DIR/<sequence>/<frame>.png` (DAVIS results layout), `DIR/overlays/<sequence>/<frame>.png`
and `DIR/<sequence>.gif` (frame | propagated mask outlines, titled and enlarged as the evaluate stage's
GIFs). `<name>` is the file's path under the input folder, without its extension.

Images go in at their own size, padded bottom / right (with the mean colour: 0 after normalisation)
to a multiple of `--pad_to`, and the masks are cropped back: nothing is resized, except where the
method's own evaluation resizes to its network input (uda: ADVENT's 1024x512; printed). Images are
batched by padded size on this host's devices; started as several processes (as launch.py), each takes
every n-th image or sequence. Resumable: an output that exists is skipped (files are written
atomically, so a killed run leaves none half-written); SIGTERM / Ctrl-C stop after the current batch.
A file that is not a readable image is an error naming it; with `--skip_bad` it is listed in
`DIR/skipped.txt` and the rest go on.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import glob
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence

import numpy as np
from PIL import Image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm")


class BadImageError(ValueError):
  """A file that is not a readable RGB image (the message names the file)."""


# ---------------------------------------------------------------------------------------------------
# Inputs


def _is_image(path: str) -> bool:
  return os.path.isfile(path) and path.lower().endswith(IMAGE_EXTENSIONS)


def list_images(spec: str) -> tuple[str, list[str]]:
  """(root, sorted image paths) of an image file, a folder (its images, not sub-folders) or a glob
  (`**` recurses). Output names are the paths relative to `root`."""
  if any(c in spec for c in "*?["):
    paths = sorted(p for p in glob.glob(spec, recursive=True) if _is_image(p))
    prefix = spec[: min(spec.index(c) for c in "*?[" if c in spec)]
    root = prefix.rstrip("/") if prefix.endswith("/") else os.path.dirname(prefix)
  elif os.path.isdir(spec):
    paths = sorted(os.path.join(spec, n) for n in os.listdir(spec))
    paths = [p for p in paths if _is_image(p)]
    root = spec
  elif os.path.isfile(spec):
    paths, root = [spec], os.path.dirname(spec)
  else:
    raise FileNotFoundError(f"--input {spec}: no such file or folder")
  if not paths:
    raise FileNotFoundError(f"--input {spec}: no images ({', '.join(IMAGE_EXTENSIONS)})")
  return root, paths


def output_names(root: str, paths: Sequence[str]) -> list[str]:
  """Each path relative to `root` without its extension; two files with one name are an error."""
  names, seen = [], {}
  for path in paths:
    name = os.path.splitext(os.path.relpath(path, root or "."))[0]
    if name in seen:
      raise ValueError(f"{seen[name]} and {path} would both write {name}.png: rename one")
    seen[name] = path
    names.append(name)
  return names


def read_image(path: str) -> np.ndarray:
  """uint8 RGB [H, W, 3] (grey, palette and RGBA images converted); BadImageError naming the file."""
  try:
    with Image.open(path) as image:
      array = np.asarray(image.convert("RGB"))
  except (OSError, ValueError, Image.DecompressionBombError) as e:
    raise BadImageError(f"{path}: not a readable image ({' '.join(str(e).split())})") from None
  if array.shape[0] == 0 or array.shape[1] == 0:
    raise BadImageError(f"{path}: empty image {array.shape[1]}x{array.shape[0]}")
  return array


def image_size(path: str) -> tuple[int, int]:
  """(H, W) from the file's header (no decoding); BadImageError naming the file."""
  try:
    with Image.open(path) as image:
      w, h = image.size
  except (OSError, ValueError, Image.DecompressionBombError) as e:
    raise BadImageError(f"{path}: not a readable image ({' '.join(str(e).split())})") from None
  return h, w


def process_share(items: Sequence, index: int, count: int) -> list:
  """This process's share of `items`: every `count`-th one from `index` (similar loads)."""
  return list(items[index::count])


def padded_size(size: tuple[int, int], multiple: int) -> tuple[int, int]:
  return tuple(-(-int(s) // multiple) * multiple for s in size)


def pad_image(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """[H, W, C] -> [size, C], zeros bottom / right (the mean colour of a normalised image)."""
  h, w = x.shape[:2]
  return np.pad(x, ((0, size[0] - h), (0, size[1] - w), (0, 0)))


# ---------------------------------------------------------------------------------------------------
# Networks


def segmentation_probs_fn(model, scales: Sequence[float] = (1.0,), flip: bool = False) -> Callable:
  """jitted (variables, x float32 [B, H, W, 3], out_size) -> class probabilities [B, *out_size, C],
  the softmax averaged over `scales` (the input resized bilinearly) and, with `flip`, mirror images.
  """
  import jax
  import jax.numpy as jnp

  scales = tuple(float(s) for s in scales)

  def probs(variables, x, out_size):
    h, w = x.shape[1:3]
    total, count = 0.0, 0
    for s in scales:
      size = (max(1, round(h * s)), max(1, round(w * s)))
      xs = x if size == (h, w) else jax.image.resize(x, (x.shape[0], *size, 3), "bilinear")
      for mirrored in (False, True) if flip else (False,):
        xi = xs[:, :, ::-1] if mirrored else xs
        # Every input shows the same view as out_size (the padded image, or the whole image the
        # method resized): the method's own upsampling takes the logits straight there.
        logits = model.resize_logits(model.apply_fn(variables, xi), tuple(out_size))
        p = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
        total, count = total + (p[:, :, ::-1] if mirrored else p), count + 1
    return total / count

  return jax.jit(probs, static_argnums=2)


def local_model(model):
  """The model with its variables on this process's devices (a 1-D 'data' mesh): inference needs no
  other host. Batches of images split over the devices; the one-image-at-a-time passes (SEAM CAMs,
  video propagation) use one device."""
  import jax
  from jax.sharding import Mesh, NamedSharding, PartitionSpec

  devices = jax.local_devices() if model.kind == "segmentation" else jax.local_devices()[:1]
  mesh = Mesh(np.array(devices), ("data",))
  replicated = NamedSharding(mesh, PartitionSpec())
  variables = jax.tree.map(
      lambda x: jax.device_put(np.asarray(x.addressable_data(0)), replicated), model.variables
  )
  return dataclasses.replace(model, variables=variables, mesh=mesh)


# ---------------------------------------------------------------------------------------------------
# Outputs


def overlay(
    image: np.ndarray,
    mask: np.ndarray,
    class_names: Sequence[str] | None,
    background: int | None = None,
) -> np.ndarray:
  """uint8 [H + legend, W, 3]: the mask's palette colours blended at 50 % over the image, with a
  legend of the classes present below. `background` (default: the class named 'background', if any)
  and the ignore label 255 are left clear and out of the legend."""
  from jaxseg.data.palette import colorize
  from jaxseg.evaluation.pictures import class_legend, legend_entries

  if background is None and class_names and "background" in class_names:
    background = list(class_names).index("background")
  clear = (mask == 255) | (mask == background)
  alpha = np.where(clear, 0.0, 0.5)[..., None]
  blended = (image * (1 - alpha) + colorize(mask) * alpha).astype(np.uint8)
  entries = [e for e in legend_entries([mask], class_names) if e[0] not in (255, background)]
  legend = class_legend(entries, image.shape[1])[:, : image.shape[1]]
  return np.concatenate([blended, legend], axis=0)


def _write_png(path: str, array: np.ndarray) -> None:
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}.png"
  Image.fromarray(array).save(tmp)
  os.replace(tmp, path)


class _Stop:
  """SIGTERM / SIGINT -> stop after the current batch (outputs so far are complete)."""

  def __init__(self):
    self.requested = False
    self._previous = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    self.requested = True
    print(
        f"\n{signal.Signals(signum).name}: stopping after this batch", file=sys.stderr, flush=True
    )

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


@dataclasses.dataclass
class Options:
  """What to compute (the CLI flags)."""

  scales: tuple[float, ...] | None = (
      None  # None = the method's default (1.0; SEAM CAM: config.infer)
  )
  flip: bool | None = None
  crf: bool = False
  batch_size: int = 8
  pad_to: int = 32
  skip_bad: bool = False
  progress: bool = True


# ---------------------------------------------------------------------------------------------------
# Images


def predict_images(model, inputs: str, out_dir: str, options: Options, workdir: str = "") -> dict:
  """Masks and overlays of every image of `inputs` (see the module docstring); returns counts."""
  import jax

  from jaxseg.train.metrics import Progress

  root, paths = list_images(inputs)
  names = output_names(root, paths)
  items = process_share(list(zip(paths, names)), jax.process_index(), jax.process_count())
  mask_path = lambda n: os.path.join(out_dir, "masks", n + ".png")  # noqa: E731
  overlay_path = lambda n: os.path.join(out_dir, "overlays", n + ".png")  # noqa: E731
  todo = [
      (p, n)
      for p, n in items
      if not (os.path.exists(mask_path(n)) and os.path.exists(overlay_path(n)))
  ]
  skipped_bad: list[str] = []
  done = len(items) - len(todo)
  if done:
    print(f"{done} of {len(items)} images already have outputs in {out_dir}: skipped", flush=True)
  if model.input_size is not None:
    h, w = model.input_size
    print(
        f"{model.config.method}: every image is resized to {h}x{w} for the network, as its "
        "evaluation does; masks come back at the image's own size",
        flush=True,
    )

  def write(image, mask, name):
    _write_png(overlay_path(name), overlay(image, mask, model.class_names))
    from jaxseg.evaluation.outputs import write_palette_png

    write_palette_png(mask_path(name), mask.astype(np.uint8))

  def bad(error: BadImageError):
    if not options.skip_bad:
      raise error
    print(f"skipped: {error}", file=sys.stderr, flush=True)
    skipped_bad.append(str(error))

  progress = Progress(len(todo), 0, enabled=options.progress, unit="img")
  count = 0
  with _Stop() as stop, concurrent.futures.ThreadPoolExecutor(4) as pool:
    batches = (
        _cam_batches(model, todo, options, workdir, bad)
        if model.kind == "cam"
        else _segmentation_batches(model, todo, options, pool, bad)
    )
    for results in batches:
      for image, mask, name in results:
        write(image, mask, name)
      count += len(results)
      progress.update(count, {})
      if stop.requested:
        print(f"stopped after {count} images; the same command goes on from there", flush=True)
        break
  if skipped_bad:
    with open(os.path.join(out_dir, "skipped.txt"), "a") as f:
      f.writelines(line + "\n" for line in skipped_bad)
  return dict(written=count, existing=done, bad=len(skipped_bad), total=len(items))


def _segmentation_batches(model, todo, options: Options, pool, bad) -> Iterator[list]:
  """Batches of (image, mask, name): grouped by padded network input size, loaded one batch ahead."""
  import jax
  from jax.sharding import NamedSharding, PartitionSpec

  scales = options.scales or (1.0,)
  probs_fn = segmentation_probs_fn(model, scales, bool(options.flip))
  data_size = model.mesh.shape["data"]
  batch_size = -(-max(1, options.batch_size) // data_size) * data_size
  sharding = NamedSharding(model.mesh, PartitionSpec("data"))

  groups: dict[tuple, list] = {}
  for path, name in todo:
    try:
      size = image_size(path)
    except BadImageError as e:
      bad(e)
      continue
    key = model.input_size or padded_size(size, options.pad_to)
    out = size if model.input_size else key
    groups.setdefault((tuple(key), tuple(out)), []).append((path, name))
  chunks = [
      (key, members[i : i + batch_size])
      for key, members in groups.items()
      for i in range(0, len(members), batch_size)
  ]

  def load(chunk):
    (in_size, _), members = chunk
    loaded = []
    for path, name in members:
      try:
        image = read_image(path)
      except BadImageError as e:
        loaded.append((None, e, name))
        continue
      x = np.asarray(model.prepare(image), np.float32)
      loaded.append((image, pad_image(x, in_size), name))
    return loaded

  future = pool.submit(load, chunks[0]) if chunks else None
  for i, ((in_size, out_size), _) in enumerate(chunks):
    loaded = future.result()
    future = pool.submit(load, chunks[i + 1]) if i + 1 < len(chunks) else None
    good = []
    for image, x, name in loaded:
      if image is None:
        bad(x)
      else:
        good.append((image, x, name))
    if not good:
      continue
    x = np.zeros((batch_size, *in_size, 3), np.float32)
    for j, (_, xi, _) in enumerate(good):
      x[j] = xi
    probs = probs_fn(model.variables, jax.device_put(x, sharding), tuple(out_size))
    if not options.crf:
      masks = np.asarray(jax.device_get(jax.numpy.argmax(probs, axis=-1)))
    else:
      probs = np.asarray(jax.device_get(probs))
    results = []
    for j, (image, _, name) in enumerate(good):
      h, w = image.shape[:2]
      if options.crf:
        mask = _crf_mask(image, probs[j, :h, :w])
      else:
        mask = masks[j, :h, :w]
      results.append((image, mask, name))
    yield results


def _crf_mask(image: np.ndarray, probs: np.ndarray) -> np.ndarray:
  """argmax of the dense CRF (official SEAM / DeepLab defaults) on [H, W, C] probabilities."""
  from jaxseg.methods.seam.crf import dense_crf

  return np.argmax(dense_crf(image, np.transpose(probs, (2, 0, 1))), axis=0)


def _cam_batches(model, todo, options: Options, workdir: str, bad) -> Iterator[list]:
  """SEAM's CAM network: per image, the classes its classifier finds, multi-scale CAMs of them and
  the background threshold its 'infer' stage found best (else `infer.bg_threshold`)."""
  from jaxseg.evaluation.outputs import read_json
  from jaxseg.methods.seam import cam_inference
  from jaxseg.methods.seam.method import build_model

  if options.crf:
    raise ValueError(
        "--crf: the SEAM CAM network's masks take no CRF here (train its 'segment' stage)"
    )
  import jax

  config = model.config
  network = build_model(config)
  apply = jax.jit(lambda variables, images: network.apply(variables, images, train=False))
  output = "cam_rv" if config.model.use_pcm else "cam"
  threshold = float(config.infer.bg_threshold)
  metrics = os.path.join(workdir, "infer", "metrics.json")
  if os.path.exists(metrics):
    threshold = float(read_json(metrics)[output]["best_threshold"])
  scales = tuple(options.scales or config.infer.scales)
  flip = bool(config.infer.flip if options.flip is None else options.flip)
  print(f"SEAM CAM masks: {output}, scales {scales}, flip {flip}, background {threshold:.2f}")
  for path, name in todo:
    try:
      image = read_image(path)
    except BadImageError as e:
      bad(e)
      continue
    mask, _ = cam_inference.predict_cam_mask(
        apply,
        model.variables,
        image,
        scales=scales,
        flip=flip,
        bg_threshold=threshold,
        output=output,
    )
    yield [(image, mask, name)]


# ---------------------------------------------------------------------------------------------------
# Videos


def read_first_mask(path: str, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
  """(ids uint8 [H, W] renumbered 0..K, the original id of each 0..K) of a DAVIS-style indexed PNG."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"--first_mask {path}: no such file")
  try:
    with Image.open(path) as image:
      if image.mode not in ("P", "L"):
        raise BadImageError(
            f"{path}: a {image.mode} image; the first mask must be an indexed (palette) or grey PNG "
            "whose pixel values are object ids (0 = background), as DAVIS annotations"
        )
      ids = np.asarray(image)
  except (OSError, ValueError) as e:
    if isinstance(e, BadImageError):
      raise
    raise BadImageError(f"{path}: not a readable mask ({' '.join(str(e).split())})") from None
  if ids.shape != tuple(size):
    raise ValueError(
        f"{path}: mask is {ids.shape[1]}x{ids.shape[0]}, frames are {size[1]}x{size[0]}"
    )
  ids = np.where(ids == 255, 0, ids)  # DAVIS void: not an object
  original = np.unique(ids)
  original = original[original > 0]
  renumbered = np.zeros(ids.shape, np.uint8)
  for new, old in enumerate(original, start=1):
    renumbered[ids == old] = new
  return renumbered, np.concatenate([[0], original]).astype(np.uint8)


def video_sequences(inputs: str, first_mask: str) -> list[tuple[str, list[str], str]]:
  """[(sequence name, frame paths, first mask path)]: one frames folder with a mask file, or a folder
  of sequence folders with a DAVIS Annotations folder (`<first_mask>/<sequence>/<first frame>.png`).
  """
  if not os.path.isdir(inputs):
    raise FileNotFoundError(f"--input {inputs}: expected a folder of frames (or of frame folders)")
  frames = sorted(os.path.join(inputs, n) for n in os.listdir(inputs))
  frames = [p for p in frames if _is_image(p)]
  if frames:
    if not os.path.isfile(first_mask):
      raise FileNotFoundError(f"--first_mask {first_mask}: expected the first frame's mask PNG")
    name = os.path.basename(os.path.normpath(inputs))
    return [(name, frames, first_mask)]
  sequences = []
  for seq in sorted(n for n in os.listdir(inputs) if os.path.isdir(os.path.join(inputs, n))):
    seq_frames = [p for p in sorted(glob.glob(os.path.join(inputs, seq, "*"))) if _is_image(p)]
    if not seq_frames:
      continue
    stem = os.path.splitext(os.path.basename(seq_frames[0]))[0]
    if not os.path.isdir(first_mask):
      raise FileNotFoundError(
          f"--first_mask {first_mask}: with a folder of sequences, expected an annotations folder "
          f"holding <sequence>/{stem}.png"
      )
    sequences.append((seq, seq_frames, os.path.join(first_mask, seq, stem + ".png")))
  if not sequences:
    raise FileNotFoundError(f"--input {inputs}: no frames ({', '.join(IMAGE_EXTENSIONS)})")
  return sequences


def predict_videos(model, inputs: str, first_mask: str, out_dir: str, options: Options) -> dict:
  """Propagates each sequence's first mask with the trained encoder (see the module docstring)."""
  import jax

  from jaxseg.evaluation.outputs import write_palette_png
  from jaxseg.evaluation.pictures import write_video_gif
  from jaxseg.methods.vos.stages import propagate_sequence
  from jaxseg.train.metrics import Progress

  sequences = process_share(
      video_sequences(inputs, first_mask), jax.process_index(), jax.process_count()
  )
  progress = Progress(len(sequences), 0, enabled=options.progress, unit="video")
  written = existing = 0
  with _Stop() as stop:
    for i, (seq, frame_paths, mask_path) in enumerate(sequences):
      names = [os.path.splitext(os.path.basename(p))[0] for p in frame_paths]
      outputs = [os.path.join(out_dir, seq, n + ".png") for n in names]
      gif = os.path.join(out_dir, seq + ".gif")
      if all(os.path.exists(p) for p in [*outputs, gif]):
        existing += 1
        continue
      frames = [read_image(p) for p in frame_paths]
      size = frames[0].shape[:2]
      for p, f in zip(frame_paths, frames):
        if f.shape[:2] != size:
          raise ValueError(
              f"{p}: frame is {f.shape[1]}x{f.shape[0]}, the first is {size[1]}x{size[0]}"
          )
      first, original_ids = read_first_mask(mask_path, size)
      padded = padded_size(size, options.pad_to)
      video = np.stack([pad_image(f, padded) for f in frames])
      first_padded = pad_image(first[..., None], padded)[..., 0]
      num_objects = len(original_ids) - 1
      if num_objects == 0:
        ids = np.zeros((len(frames), *padded), np.uint8)
      else:
        ids = propagate_sequence(model.config, model, video, first_padded, num_objects)
      ids = original_ids[np.asarray(ids)[:, : size[0], : size[1]]]
      ids[0] = original_ids[first]  # the given first mask, as DAVIS results hold it
      for frame, frame_ids, out, name in zip(frames, ids, outputs, names):
        picture = overlay(frame, frame_ids, None, background=0)[: size[0]]
        _write_png(os.path.join(out_dir, "overlays", seq, name + ".png"), picture)
        write_palette_png(out, frame_ids)
      # The evaluate stage's GIF layout (titled columns, enlarged, outlines): one reading of both.
      columns = [("frame", None), (f"{model.config.recipe} propagated", ids)]
      write_video_gif(gif, np.stack(frames), columns, header=seq)
      written += 1
      progress.update(i + 1, {})
      if stop.requested:
        print(f"stopped after {seq}; the same command goes on from there", flush=True)
        break
  return dict(written=written, existing=existing, total=len(sequences))


# ---------------------------------------------------------------------------------------------------
# CLI


def main(argv=None) -> dict:
  from jaxseg import cli

  parser = cli.ArgumentParser(prog="python -m jaxseg.predict", description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", required=True, help="a trained jaxseg workdir")
  parser.add_argument("--input", required=True, help="image, folder, glob; vos: frames folder(s)")
  parser.add_argument("--out", required=True, help="output folder")
  parser.add_argument("--first_mask", default=None, help="vos: first frame's mask / annotations")
  parser.add_argument("--stage", default=None, help="training stage / run (default: the method's)")
  parser.add_argument("--which", default="latest", choices=("latest", "best"))
  parser.add_argument("--scales", default=None, help="comma-separated input scales (default 1)")
  parser.add_argument("--flip", action=argparse_bool(), default=None, help="add mirrored images")
  parser.add_argument("--crf", action="store_true", help="dense CRF on the probabilities")
  parser.add_argument("--batch_size", type=int, default=8)
  parser.add_argument("--pad_to", type=int, default=32, help="pad images to a multiple of this")
  parser.add_argument("--skip_bad", action="store_true", help="list unreadable files and go on")
  parser.add_argument("--no_progress", action="store_true")
  parser.add_argument("--coordinator_address", default=None, help="multi-process, as launch.py")
  parser.add_argument("--num_processes", type=int, default=None)
  parser.add_argument("--process_id", type=int, default=None)
  parser.add_argument("--verbose", action="store_true", help="full tracebacks")
  args = parser.parse_args(argv)

  with cli.user_errors(args.verbose):
    from jaxseg.methods import load_inference_model
    from jaxseg.train import multihost

    multihost.initialize_distributed(args.coordinator_address, args.num_processes, args.process_id)
    if args.batch_size < 1 or args.pad_to < 1:
      raise ValueError("--batch_size and --pad_to must be >= 1")
    scales = None
    if args.scales:
      try:
        scales = tuple(float(s) for s in args.scales.split(","))
      except ValueError:
        raise ValueError(f"--scales={args.scales}: expected numbers such as 0.75,1,1.25") from None
      if any(s <= 0 for s in scales):
        raise ValueError(f"--scales={args.scales}: scales must be > 0")
    options = Options(
        scales=scales,
        flip=args.flip,
        crf=args.crf,
        batch_size=args.batch_size,
        pad_to=args.pad_to,
        skip_bad=args.skip_bad,
        progress=not args.no_progress,
    )
    model = local_model(load_inference_model(args.workdir, args.stage, args.which))
    print(
        f"{model.config.method} {model.stage} (step {model.step}) on {len(model.mesh.devices)} "
        "device(s)",
        flush=True,
    )
    if model.kind == "features":
      if not args.first_mask:
        raise ValueError("--first_mask: a vos workdir propagates a first-frame mask; pass its PNG")
      if scales or args.flip or args.crf:
        raise ValueError("--scales / --flip / --crf: not used by video propagation")
      result = predict_videos(model, args.input, args.first_mask, args.out, options)
      print(
          f"{result['written']} sequences written, {result['existing']} already done -> {args.out}",
          flush=True,
      )
    else:
      if args.first_mask:
        raise ValueError(f"--first_mask: only for vos workdirs; this one is {model.config.method}")
      result = predict_images(model, args.input, args.out, options, args.workdir)
      print(
          f"{result['written']} images written, {result['existing']} already done, "
          f"{result['bad']} unreadable -> {args.out}",
          flush=True,
      )
    return result


def argparse_bool():
  import argparse

  return argparse.BooleanOptionalAction


if __name__ == "__main__":
  main(sys.argv[1:])
