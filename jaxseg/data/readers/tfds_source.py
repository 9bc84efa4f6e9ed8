"""TFDS datasets as random-access segmentation sources (ArrayRecord via `tfds.data_source`).

`tensorflow_datasets` is imported only inside `tfds_segmentation_source`, so
importing jaxseg.data stays light. TensorFlow itself is not needed: reading
ArrayRecord files and decoding PNG/JPEG features goes through numpy and PIL.
The dataset must be prepared in the array_record format, e.g.
`tfds build oxford_iiit_pet --file_format=array_record --data_dir=...`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jaxseg.data.errors import DataError
from jaxseg.data.transforms import validate_example


def map_tfds_record(
    record: Mapping[str, Any],
    index: int,
    *,
    image_key: str = "image",
    mask_key: str | None = "segmentation_mask",
    label_offset: int = 0,
    label_map: Mapping[int, int] | None = None,
    num_classes: int | None = None,
    ignore_index: int = 255,
    extra_keys: Mapping[str, str] | None = None,
    source: str = "tfds",
) -> dict[str, Any]:
  """One decoded TFDS record -> jaxseg example.

  Args:
    record: feature dict as returned by a TFDS data source (numpy arrays).
    index: record index, stored as `index`.
    image_key: record key of the uint8 [H, W, 3] (or [H, W, 1] grey) image.
    mask_key: record key of the integer [H, W] or [H, W, 1] mask; None = image only.
    label_map: {stored value: class id} applied first; unlisted values are an error.
    label_offset: added to every stored value except `ignore_index`
      (e.g. -1 for oxford_iiit_pet's 1..3 trimap).
    num_classes: when given, the example is checked with `validate_example`.
    extra_keys: {record key: example key} copied as is (bytes become str), e.g.
      {'file_name': 'id'}.
  Returns:
    {'image': uint8 [H, W, 3], 'mask': uint8 [H, W], 'index': int, ...extra keys}.
  """
  where = f"{source}[{index}]"
  if image_key not in record:
    raise DataError(f"{where}: record has no image key {image_key!r} (keys: {sorted(record)})")
  image = np.asarray(record[image_key])
  if image.ndim == 3 and image.shape[-1] == 1:
    image = np.repeat(image, 3, axis=-1)
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
    raise DataError(
        f"{where}: {image_key!r} must be uint8 [H, W, 3] or [H, W, 1], "
        f"got {image.dtype} {image.shape}"
    )
  example: dict[str, Any] = {"image": image, "index": int(index)}
  if mask_key is not None:
    if mask_key not in record:
      raise DataError(f"{where}: record has no mask key {mask_key!r} (keys: {sorted(record)})")
    example["mask"] = _map_mask(
        np.asarray(record[mask_key]), label_map, label_offset, ignore_index, f"{where} {mask_key!r}"
    )
  for record_key, example_key in (extra_keys or {}).items():
    if record_key not in record:
      raise DataError(f"{where}: record has no key {record_key!r} (keys: {sorted(record)})")
    value = record[record_key]
    example[example_key] = value.decode("utf-8") if isinstance(value, bytes) else value
  if num_classes is not None:
    validate_example(example, num_classes, ignore_index, source=where)
  return example


def _map_mask(
    mask: np.ndarray,
    label_map: Mapping[int, int] | None,
    label_offset: int,
    ignore_index: int,
    where: str,
) -> np.ndarray:
  if mask.ndim == 3 and mask.shape[-1] == 1:
    mask = mask[..., 0]
  if mask.ndim != 2 or not np.issubdtype(mask.dtype, np.integer):
    raise DataError(
        f"{where}: mask must be integer [H, W] or [H, W, 1], got {mask.dtype} {mask.shape}"
    )
  mask = mask.astype(np.int64)
  if label_map is not None:
    values = np.unique(mask)
    unknown = [int(v) for v in values if int(v) not in label_map]
    if unknown:
      raise DataError(f"{where}: mask values {unknown} are not in label_map {dict(label_map)}")
    lut_keys = np.array(sorted(label_map), np.int64)
    lut_values = np.array([label_map[k] for k in sorted(label_map)], np.int64)
    mask = lut_values[np.searchsorted(lut_keys, mask)]
  if label_offset:
    mask = np.where(mask == ignore_index, mask, mask + label_offset)
  if mask.size and (mask.min() < 0 or mask.max() > 255):
    bad = np.unique(mask[(mask < 0) | (mask > 255)])[:20].tolist()
    raise DataError(
        f"{where}: mapped mask values {bad} do not fit uint8 class ids "
        f"(label_offset={label_offset})"
    )
  return mask.astype(np.uint8)


class TfdsSegmentationSource:
  """Random-access source: wraps a TFDS data source and maps each record with `map_tfds_record`."""

  def __init__(self, data_source: Any, *, name: str, **mapping: Any):
    self.data_source = data_source
    self.name = name
    self.mapping = mapping

  def __len__(self) -> int:
    return len(self.data_source)

  def __repr__(self) -> str:
    return f"TfdsSegmentationSource(name={self.name!r}, len={len(self)})"

  def __getitem__(self, index: int) -> dict[str, Any]:
    index = int(index)
    if not -len(self) <= index < len(self):
      raise IndexError(f"{self.name}: index {index} out of range for {len(self)} records")
    index %= len(self)
    return map_tfds_record(self.data_source[index], index, source=self.name, **self.mapping)

  def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
    indices = [int(i) % len(self) for i in indices]
    if hasattr(self.data_source, "__getitems__"):
      records = self.data_source.__getitems__(indices)
    else:
      records = [self.data_source[i] for i in indices]
    return [
        map_tfds_record(r, i, source=self.name, **self.mapping) for r, i in zip(records, indices)
    ]


def tfds_segmentation_source(
    name: str,
    split: str,
    *,
    data_dir: str | None = None,
    image_key: str = "image",
    mask_key: str | None = "segmentation_mask",
    label_offset: int = 0,
    label_map: Mapping[int, int] | None = None,
    num_classes: int | None = None,
    ignore_index: int = 255,
    extra_keys: Mapping[str, str] | None = None,
    per_process: bool = False,
    download: bool = False,
    hint: str | None = None,
) -> TfdsSegmentationSource:
  """A prepared TFDS dataset (array_record format) as a jaxseg source.

  Args:
    name: TFDS name, e.g. 'oxford_iiit_pet:4.*.*'.
    split: split string, e.g. 'train' or 'train[:90%]'.
    per_process: take this JAX process's even share via `tfds.split_for_jax_process`
      (leave False when the grain pipeline shards by itself).
    download: let TFDS download and prepare the dataset if missing (off by
      default: grain workers must never start a download).
    Other args: see `map_tfds_record`.
  Raises:
    DataError: the dataset is not found / not prepared as array_record, or the
      split is unknown; the message names the dataset, the data_dir and `hint`.
  """
  import tensorflow_datasets as tfds  # Lazy: heavy import.

  if per_process:
    split = tfds.split_for_jax_process(split)
  try:
    data_source = tfds.data_source(name, split=split, data_dir=data_dir, download=download)
  except (ValueError, NotImplementedError, FileNotFoundError, AssertionError) as e:
    message = str(e).split("\nAvailable datasets:")[0]  # Drop TFDS's list of every dataset.
    text = (
        f"TFDS dataset {name!r} split {split!r} (data_dir={data_dir!r}) cannot be opened "
        f"for random access: {message}\nPrepare it with `tfds build {name.split(':')[0]} "
        f"--file_format=array_record" + (f" --data_dir={data_dir}" if data_dir else "") + "`."
    )
    if hint:
      text += f"\nhint: {hint}"
    raise DataError(text) from e
  return TfdsSegmentationSource(
      data_source,
      name=f"tfds:{name}/{split}",
      image_key=image_key,
      mask_key=mask_key,
      label_offset=label_offset,
      label_map=label_map,
      num_classes=num_classes,
      ignore_index=ignore_index,
      extra_keys=extra_keys,
  )
