"""Tests for jaxseg.data.readers.davis (DAVIS 2017 sequences) and jaxseg.data.readers.videos (clips of frame folders).

Every dataset is a tiny fake tree written to tmp_path: frames are flat colours (JPEG keeps them within a
few levels) so a frame can be identified by its colour, and masks are palette PNGs.
"""

import os
import pickle
import warnings

import numpy as np
import pytest
from PIL import Image

from jaxseg.data import transforms
from jaxseg.data.errors import DataError
from jaxseg.data.palette import palette as voc_palette
from jaxseg.data.readers import davis as D
from jaxseg.data.readers import videos as V

H, W = 6, 10  # H != W, so a transposed array cannot pass.


def _colour(seed):
  return np.array([(37 * seed) % 200 + 20, (91 * seed) % 200 + 20, (53 * seed) % 200 + 20])


def _save_frame(path, seed, size=(H, W)):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(np.broadcast_to(_colour(seed), (*size, 3)).astype(np.uint8)).save(
      path, quality=100
  )


def _frame_seed(frame):
  """The seed whose colour the decoded frame [H, W, 3] shows (JPEG moves flat colours a little)."""
  mean = frame.reshape(-1, 3).mean(0)
  seeds = [s for s in range(200) if np.abs(_colour(s) - mean).max() < 4]
  assert len(seeds) == 1, (mean, seeds)
  return seeds[0]


def _ids(t, objects=2):
  ids = np.zeros((H, W), np.uint8)
  for k in range(1, objects + 1):
    ids[k, (t + 2 * k) % W] = k
  ids[-1, -1] = 255  # void
  return ids


def _save_annotation(path, ids, mode="P"):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  image = Image.fromarray(ids, mode="L")
  if mode == "P":
    image = image.convert("P")
    image.putpalette(voc_palette().reshape(-1).tolist())
  image.save(path)


SEQUENCES = {"bear": 3, "dogs-jump": 4, "tennis": 2}


@pytest.fixture()
def davis_root(tmp_path):
  root = tmp_path / "DAVIS"
  for s, (seq, length) in enumerate(SEQUENCES.items()):
    for res in ("480p", "Full-Resolution"):
      size = (H, W) if res == "480p" else (2 * H, 2 * W)
      for t in range(length):
        _save_frame(str(root / "JPEGImages" / res / seq / f"{t:05d}.jpg"), 10 * s + t, size)
        ids = _ids(t, objects=s + 1)
        if res != "480p":
          ids = np.kron(ids, np.ones((2, 2), np.uint8))
        if seq != "tennis" or t == 0:  # tennis: first frame annotated only (as test-dev)
          _save_annotation(str(root / "Annotations" / res / seq / f"{t:05d}.png"), ids)
  (root / "ImageSets" / "2017").mkdir(parents=True)
  (root / "ImageSets" / "2017" / "val.txt").write_text("dogs-jump\nbear\n")
  (root / "ImageSets" / "2017" / "train.txt").write_text("tennis\n")
  return root


# ----------------------------------------------------------------------------
# DAVIS.
# ----------------------------------------------------------------------------
def test_davis_val_sequences(davis_root):
  assert D.davis_sequences(davis_root, "val") == ("dogs-jump", "bear")
  source = D.DavisSequenceSource(davis_root, "val")
  assert len(source) == 2 and source.ids == ("dogs-jump", "bear")
  assert "DavisSequenceSource(" in repr(source) and "len=2" in repr(source)
  for index, (seq, s) in enumerate((("dogs-jump", 1), ("bear", 0))):
    ex = source[index]
    length = SEQUENCES[seq]
    assert ex["sequence"] == ex["id"] == seq and ex["index"] == index
    assert ex["frames"].dtype == np.uint8 and ex["frames"].shape == (length, H, W, 3)
    assert [_frame_seed(f) for f in ex["frames"]] == [10 * s + t for t in range(length)]
    assert ex["masks"].dtype == np.uint8 and ex["masks"].shape == (length, H, W)
    for t in range(length):
      np.testing.assert_array_equal(ex["masks"][t], _ids(t, objects=s + 1))
    np.testing.assert_array_equal(ex["first_mask"], _ids(0, objects=s + 1))
    assert ex["first_mask"].dtype == np.uint8
    assert ex["num_objects"] == s + 1  # 255 (void) is not an object
    assert ex["annotated"].dtype == bool and ex["annotated"].all()
    assert ex["frame_names"] == [f"{t:05d}" for t in range(length)]
    assert ex["palette"].dtype == np.uint8 and ex["palette"].shape == (256, 3)
    np.testing.assert_array_equal(ex["palette"], voc_palette())
  # The keys' kinds: frames/masks/first_mask move together under a geometric transform.
  ex = source[1]
  kinds = transforms.resolve_kinds(ex, D.KINDS)
  assert kinds["frames"] == "clip" and kinds["masks"] == "clip_mask"
  assert kinds["first_mask"] == "mask" and kinds["palette"] == "other"
  flipped = transforms.random_flip(dict(ex), np.random.default_rng(0), 1.0, kinds=D.KINDS)
  np.testing.assert_array_equal(flipped["masks"], ex["masks"][:, :, ::-1])
  np.testing.assert_array_equal(flipped["first_mask"], ex["first_mask"][:, ::-1])
  np.testing.assert_array_equal(flipped["frames"], ex["frames"][:, :, ::-1])
  np.testing.assert_array_equal(flipped["palette"], ex["palette"])
  # Pickle round trip and determinism.
  again = pickle.loads(pickle.dumps(source))
  for key in ("frames", "masks", "palette", "annotated"):
    np.testing.assert_array_equal(again[1][key], ex[key])


def test_davis_first_frame_only_and_resolution(davis_root):
  ex = D.DavisSequenceSource(davis_root, "train")[0]
  assert ex["sequence"] == "tennis" and ex["frames"].shape == (2, H, W, 3)
  assert "masks" not in ex
  np.testing.assert_array_equal(ex["annotated"], [True, False])
  np.testing.assert_array_equal(ex["first_mask"], _ids(0, objects=3))
  assert ex["num_objects"] == 3
  full = D.DavisSequenceSource(davis_root, "val", "Full-Resolution")[1]
  assert full["frames"].shape == (3, 2 * H, 2 * W, 3) and full["masks"].shape == (3, 2 * H, 2 * W)
  picked = D.DavisSequenceSource(davis_root, sequences=["bear"])
  assert picked.ids == ("bear",) and picked[0]["frames"].shape[0] == 3
  with pytest.raises(ValueError, match="resolution"):
    D.DavisSequenceSource(davis_root, "val", "1080p")


def test_davis_missing_folders(tmp_path, davis_root):
  with pytest.raises(DataError, match=r"DAVIS root folder not found: .*nothere(.|\n)*hint"):
    D.DavisSequenceSource(tmp_path / "nothere")
  with pytest.raises(DataError, match=r"split file not found: .*ImageSets/2017/test\.txt"):
    D.DavisSequenceSource(davis_root, "test")
  os.rename(davis_root / "JPEGImages/480p/bear", davis_root / "JPEGImages/480p/bear_old")
  with pytest.raises(DataError, match=r"480p/bear: sequence folder not found .*val\.txt"):
    D.DavisSequenceSource(davis_root, "val")
  os.rename(davis_root / "Annotations/480p", davis_root / "Annotations/old")
  with pytest.raises(DataError, match=r"DAVIS annotation folder not found: .*Annotations/480p"):
    D.DavisSequenceSource(davis_root, "val")


def test_davis_empty_sequence_and_name_mismatch(davis_root):
  frames = davis_root / "JPEGImages/480p/bear"
  annotations = davis_root / "Annotations/480p/bear"
  _save_annotation(str(annotations / "00007.png"), _ids(0))
  with pytest.raises(DataError, match=r"bear/00007\.png: annotation has no frame 00007\.jpg"):
    D.DavisSequenceSource(davis_root, "val")[1]
  os.remove(annotations / "00007.png")
  os.remove(annotations / "00000.png")
  with pytest.raises(DataError, match=r"bear/00000\.png: annotation of the first frame not found"):
    D.DavisSequenceSource(davis_root, "val")[1]
  for name in os.listdir(frames):
    os.remove(frames / name)
  source = D.DavisSequenceSource(davis_root, "val")  # folders exist: fine until read
  with pytest.raises(DataError, match=r"480p/bear: sequence 'bear' has no \.jpg frames"):
    source[1]


def test_davis_bad_annotations_and_frames(davis_root):
  source = D.DavisSequenceSource(davis_root, "val")
  annotation = davis_root / "Annotations/480p/dogs-jump/00002.png"
  _save_annotation(str(annotation), _ids(2), mode="L")
  with pytest.raises(DataError, match=r"dogs-jump/00002\.png: annotation has mode 'L'.*palette"):
    source[0]
  _save_annotation(str(annotation), np.zeros((H, W + 1), np.uint8))
  with pytest.raises(DataError, match=r"00002\.png: annotation is 6x11 .*/00002\.jpg is 6x10"):
    source[0]
  _save_annotation(str(annotation), _ids(2))
  frame = davis_root / "JPEGImages/480p/dogs-jump/00003.jpg"
  _save_frame(str(frame), 1, size=(H + 2, W))
  with pytest.raises(DataError, match=r"00003\.jpg: frame is 8x10 .*00000\.jpg is 6x10"):
    source[0]
  frame.write_bytes(b"\xff\xd8\xff truncated")
  with pytest.raises(DataError, match=r"dogs-jump/00003\.jpg: cannot read image"):
    source[0]
  _save_frame(str(frame), 1)
  annotation.write_bytes(b"\x89PNG\r\n\x1a\n junk")
  with pytest.raises(DataError, match=r"dogs-jump/00002\.png: cannot read annotation"):
    D.DavisSequenceSource(davis_root, sequences=["dogs-jump"])[0]


# ----------------------------------------------------------------------------
# Video folders.
# ----------------------------------------------------------------------------
VIDEOS = {"vid10": 12, "vid2": 20, "short": 5, "vid1": 9}


@pytest.fixture()
def video_root(tmp_path):
  root = tmp_path / "JPEGImages"
  for v, (video, length) in enumerate(VIDEOS.items()):
    for t in range(length):
      name = f"{t:05d}.jpg" if video != "vid1" else f"img{t}.jpg"  # vid1: unpadded names
      _save_frame(str(root / video / name), 100 + 20 * v + t)
  (root / "notes.txt").write_text("not a video")
  return root


def _seed(video, t):
  return 100 + 20 * list(VIDEOS).index(video) + t


def test_natural_order():
  names = ["img10.jpg", "img9.jpg", "img1.jpg", "Img2.jpg", "img1a.jpg"]
  assert sorted(names, key=V.natural_key) == [
      "img1.jpg",
      "img1a.jpg",
      "Img2.jpg",
      "img9.jpg",
      "img10.jpg",
  ]


def test_video_clips_are_deterministic_and_follow_the_gaps(video_root):
  with pytest.warns(UserWarning, match=r"skipped 1 of 4 videos with fewer than 9 frames"):
    source = V.VideoFolderSource(video_root, num_samples=60)
  assert source.videos == ("vid1", "vid2", "vid10") and source.num_skipped == 1
  assert len(source) == 60 and "VideoFolderSource(" in repr(source)
  gaps = []
  for i in range(len(source)):
    ex = source[i]
    video, gap, indices = source.sample(i)
    assert ex["video"] == source.videos[i % 3] == source.videos[video]
    assert ex["clip"].dtype == np.uint8 and ex["clip"].shape == (2, H, W, 3)
    assert ex["gap"] == gap and gap in (2, 5, 8)
    np.testing.assert_array_equal(ex["frame_indices"], indices)
    assert indices[1] - indices[0] == gap and 0 <= indices[0] and indices[1] < VIDEOS[ex["video"]]
    assert [_frame_seed(f) for f in ex["clip"]] == [_seed(ex["video"], t) for t in indices]
    stems = [f"img{t}" if ex["video"] == "vid1" else f"{t:05d}" for t in indices]
    assert ex["frame_names"] == stems and ex["id"] == f"{ex['video']}/{stems[0]}"
    gaps.append(gap)
  assert set(gaps) == {2, 5, 8}
  # Same (seed, i) -> same clip, also after pickling; another seed -> other clips.
  again = pickle.loads(pickle.dumps(source))
  for i in (0, 7, 59):
    np.testing.assert_array_equal(again[i]["clip"], source[i]["clip"])
    np.testing.assert_array_equal(again[i]["frame_indices"], source[i]["frame_indices"])
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    other = V.VideoFolderSource(video_root, num_samples=60, seed=1)
  assert any(
      not np.array_equal(other.sample(i)[2], source.sample(i)[2]) for i in range(len(source))
  )
  # A clip-only example: its kinds resolve without declarations.
  kinds = transforms.resolve_kinds(source[0])
  assert kinds["clip"] == "clip" and kinds["frame_indices"] == kinds["video"] == "other"


def test_gap_probabilities_are_used(video_root):
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    source = V.VideoFolderSource(video_root, num_samples=2000)
  gaps = np.array([source.sample(i)[1] for i in range(len(source))])
  for gap, p in zip((2, 5, 8), (0.4, 0.4, 0.2)):
    assert abs((gaps == gap).mean() - p) < 0.04


def test_crw_style_clips_and_resize(video_root):
  with pytest.warns(UserWarning, match="skipped 2 of 4 videos with fewer than 10 frames"):
    source = V.VideoFolderSource(
        video_root, clip_length=4, frame_gaps=(3,), gap_probs=None, image_size=(4, 7)
    )
  assert source.min_frames == 10 and source.videos == ("vid2", "vid10")
  ex = source[1]
  assert ex["clip"].shape == (4, 4, 7, 3) and ex["gap"] == 3
  np.testing.assert_array_equal(np.diff(ex["frame_indices"]), [3, 3, 3])
  assert [_frame_seed(f) for f in ex["clip"]] == [_seed("vid10", t) for t in ex["frame_indices"]]
  square = V.VideoFolderSource(
      video_root, clip_length=1, frame_gaps=(1,), gap_probs=(1,), image_size=5
  )
  assert square[0]["clip"].shape == (1, 5, 5, 3) and len(square) == 4


def test_video_list_file(video_root):
  (video_root / "ytvos.csv").write_text("vid2,5,15\nshort,0,5\n\nvid10,2,10\n")
  with pytest.warns(UserWarning, match=r"ytvos\.csv: skipped 1 of 3 videos"):
    source = V.VideoFolderSource(video_root, list_file="ytvos.csv")
  assert source.videos == ("vid2", "vid10") and len(source) == 2
  for i, (video, start) in enumerate((("vid2", 5), ("vid10", 2))):
    ex = source[i]
    numbers = start + ex["frame_indices"]
    assert ex["frame_names"] == [f"{k:05d}" for k in numbers]
    assert [_frame_seed(f) for f in ex["clip"]] == [_seed(video, k) for k in numbers]
  (video_root / "bad.csv").write_text("vid2,5,15\nvid10;2;10\n")
  with pytest.raises(DataError, match=r"bad\.csv:2: expected 'video_id,start_frame,n_frames'"):
    V.VideoFolderSource(video_root, list_file="bad.csv")
  (video_root / "gone.csv").write_text("vid2,15,10\n")  # frames 15..24 of a 20-frame video
  source = V.VideoFolderSource(video_root, list_file="gone.csv", num_samples=50)
  with pytest.raises(DataError, match=r"vid2/000(2[0-4])\.jpg: frame file not found \(row 1 of"):
    for i in range(len(source)):
      source[i]
  with pytest.raises(DataError, match=r"video list file not found: .*nolist\.csv"):
    V.VideoFolderSource(video_root, list_file="nolist.csv")


def test_video_errors(tmp_path, video_root):
  with pytest.raises(DataError, match=r"video root folder not found: .*nothere"):
    V.VideoFolderSource(tmp_path / "nothere")
  (tmp_path / "flat").mkdir()
  _save_frame(str(tmp_path / "flat" / "00000.jpg"), 0)
  with pytest.raises(DataError, match=r"flat: no video folders"):
    V.VideoFolderSource(tmp_path / "flat")
  with pytest.raises(DataError, match=r"none of its 4 videos has the 41 frames"):
    V.VideoFolderSource(video_root, clip_length=6)
  with pytest.raises(ValueError, match="gap_probs"):
    V.VideoFolderSource(video_root, frame_gaps=(2, 4))
  with pytest.raises(ValueError, match="min_frames"):
    V.VideoFolderSource(video_root, min_frames=3)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    source = V.VideoFolderSource(video_root, clip_length=3, frame_gaps=(5,), gap_probs=(1,))
  assert source.videos == ("vid2", "vid10")
  i = 1  # vid10
  _, _, indices = source.sample(i)
  frame = video_root / "vid10" / f"{indices[1]:05d}.jpg"
  _save_frame(str(frame), 0, size=(H + 1, W))
  with pytest.raises(DataError, match=rf"vid10/{indices[1]:05d}\.jpg: frame is 7x10 .*image_size"):
    source[i]
  frame.write_bytes(b"junk")
  with pytest.raises(DataError, match=rf"vid10/{indices[1]:05d}\.jpg: cannot read image"):
    source[i]
  os.remove(frame)
  with pytest.raises(DataError, match=r"vid10: video has 11 frames, 12 when the source was built"):
    source[i]
