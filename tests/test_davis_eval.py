"""DAVIS-2017 J / F / J&F (jaxseg.evaluation.davis) against the official davis2017-evaluation outputs.

tests/data/vos/davis_metrics.npz is shared/golden/vos/davis_metrics.npz (see its README there): pairwise
`db_eval_iou` / `db_eval_boundary` at 480x854 and 37x53, and a two-sequence semi-supervised evaluation (void
band, an object absent from some frames, an object never predicted) run through the official
`evaluation_method.py`. The sequence test writes that data as a DAVIS folder of palette PNGs and reads it back
with the real loading code.
"""

import os

import numpy as np
import pytest
from PIL import Image

from jaxseg.data.errors import DataError
from jaxseg.data.palette import palette
from jaxseg.evaluation import davis

GOLDEN = np.load(os.path.join(os.path.dirname(__file__), "data", "vos", "davis_metrics.npz"))
SEQUENCES = ("seq00", "seq01")


@pytest.mark.parametrize("tag", ["big", "small"])
def test_pairwise_j_and_f_match_official(tag):
  gt, pred = GOLDEN[f"davis_pair_{tag}_gt"], GOLDEN[f"davis_pair_{tag}_pred"]
  np.testing.assert_array_equal(davis.region_similarity(gt, pred), GOLDEN[f"davis_pair_{tag}_J"])
  np.testing.assert_allclose(
      davis.boundary_measure(gt, pred), GOLDEN[f"davis_pair_{tag}_F"], rtol=0, atol=1e-12
  )
  # The edge cases are in the set: empty prediction, empty GT, both empty, identical.
  np.testing.assert_array_equal(GOLDEN[f"davis_pair_{tag}_F"][4:], [0.0, 0.0, 1.0, 1.0])


def test_boundary_map_rules():
  seg = np.zeros((4, 5), bool)
  seg[1:3, 1:4] = True
  b = davis.boundary_map(seg)
  # Boundary pixels sit half a pixel towards the origin: a pixel differs from its E, S or SE neighbour.
  expected = np.array([[1, 1, 1, 1, 0], [1, 0, 0, 1, 0], [1, 1, 1, 1, 0], [0, 0, 0, 0, 0]], bool)
  np.testing.assert_array_equal(b, expected)
  full = np.ones((3, 3), bool)
  assert not davis.boundary_map(full).any()  # no boundary at the image border, last pixel never


def _write_palette_png(path, ids):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  image = Image.fromarray(ids.astype(np.uint8), mode="P")
  image.putpalette(palette().reshape(-1).tolist())
  image.save(path)


def _write_davis(tmp_path, drop_result=None, result_ids=None):
  root, results = tmp_path / "DAVIS", tmp_path / "results"
  (root / "ImageSets" / "2017").mkdir(parents=True)
  (root / "ImageSets" / "2017" / "val.txt").write_text("\n".join(SEQUENCES) + "\n")
  for s, seq in enumerate(SEQUENCES):
    gt, pred = GOLDEN[f"davis_seq{s}_gt"], GOLDEN[f"davis_seq{s}_pred"]
    for t in range(gt.shape[0]):
      _write_palette_png(str(root / "Annotations" / "480p" / seq / f"{t:05d}.png"), gt[t])
      if (seq, t) != drop_result:
        ids = pred[t] if result_ids is None else result_ids(seq, t, pred[t])
        _write_palette_png(str(results / seq / f"{t:05d}.png"), ids)
  return str(root), str(results)


def test_sequence_evaluation_matches_official(tmp_path):
  root, results = _write_davis(tmp_path)
  out = davis.evaluate_davis(root, results)
  for s, seq in enumerate(SEQUENCES):
    j, f = out["per_frame"][seq]
    np.testing.assert_array_equal(j, GOLDEN[f"davis_seq{s}_J_per_frame"])
    np.testing.assert_allclose(f, GOLDEN[f"davis_seq{s}_F_per_frame"], rtol=0, atol=1e-12)
  assert [r["sequence"] for r in out["per_object"]] == GOLDEN["davis_per_object_names"].tolist()
  for r, jf, jmrd, fmrd in zip(
      out["per_object"],
      GOLDEN["davis_per_object_JF"],
      GOLDEN["davis_per_object_J_MRD"],
      GOLDEN["davis_per_object_F_MRD"],
  ):
    np.testing.assert_allclose([r["J-Mean"], r["F-Mean"]], jf, rtol=0, atol=1e-12)
    np.testing.assert_allclose([r["J-Mean"], r["J-Recall"], r["J-Decay"]], jmrd, rtol=0, atol=1e-12)
    np.testing.assert_allclose([r["F-Mean"], r["F-Recall"], r["F-Decay"]], fmrd, rtol=0, atol=1e-12)
  assert tuple(GOLDEN["davis_global_names"].tolist()) == davis.GLOBAL_NAMES
  np.testing.assert_allclose(
      [out["global"][n] for n in davis.GLOBAL_NAMES], GOLDEN["davis_global"], rtol=0, atol=1e-12
  )


def test_cli_writes_official_csvs(tmp_path, capsys):
  root, results = _write_davis(tmp_path)
  davis.main([f"--davis={root}", f"--results={results}"])
  with open(os.path.join(results, "global_results-val.csv")) as f:
    header, values = [line.strip().split(",") for line in f]
  assert tuple(header) == davis.GLOBAL_NAMES
  np.testing.assert_allclose([float(v) for v in values], GOLDEN["davis_global"], atol=5e-4)
  with open(os.path.join(results, "per-sequence_results-val.csv")) as f:
    assert len(f.readlines()) == 1 + 5
  assert "J&F-Mean=" in capsys.readouterr().out


def test_first_and_last_result_frames_are_optional(tmp_path):
  last = GOLDEN["davis_seq0_gt"].shape[0] - 1
  root, results = _write_davis(tmp_path / "a", drop_result=("seq00", last))
  assert davis.evaluate_davis(root, results)["global"]["J&F-Mean"] == pytest.approx(
      GOLDEN["davis_global"][0], abs=1e-12
  )


def test_missing_result_names_the_file(tmp_path):
  root, results = _write_davis(tmp_path, drop_result=("seq01", 3))
  with pytest.raises(DataError, match=r"seq01/00003\.png: mask file not found"):
    davis.evaluate_davis(root, results)


def test_result_with_an_unknown_object_id_is_refused(tmp_path):
  root, results = _write_davis(
      tmp_path,
      result_ids=lambda seq, t, ids: np.where(ids > 0, 7, 0) if (seq, t) == ("seq00", 2) else ids,
  )
  with pytest.raises(DataError, match="object id 7, the first annotation has only 2 objects"):
    davis.evaluate_davis(root, results)


def test_missing_split_file_names_it(tmp_path):
  with pytest.raises(DataError, match="split file not found"):
    davis.evaluate_davis(str(tmp_path), str(tmp_path))
