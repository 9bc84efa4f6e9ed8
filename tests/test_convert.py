"""Converters: mismatch errors, MXNet NDArray-list parsing, the MXNet ResNet-38 file, msgpack files, the CLI."""

import os
import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.models import convert
from jaxseg.models.resnet import ResNet
from jaxseg.models.resnet38 import OUT_CHANNELS, ResNet38
from jaxseg.models.seeded import seeded_state_dict
from jaxseg.tools import convert_weights

DATA = os.path.join(os.path.dirname(__file__), "data", "backbones")


def template(model, shape=(1, 32, 32, 3)):
  return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape), train=False))


def resnet_state_dict(depth, width=0.125, seed=0):
  shapes = convert.torch_shapes(template(ResNet(depth, width_multiplier=width)))
  state = seeded_state_dict(shapes, seed)
  state["fc.weight"] = np.zeros((10, 4), np.float32)  # the ImageNet classifier is dropped
  state["bn1.num_batches_tracked"] = np.array(7)
  return state


# ---------------------------------------------------------------------------------------------------------
# Mismatches: every offending key listed, nothing loaded.


def test_roundtrip_and_layouts():
  state = resnet_state_dict(18)
  model = ResNet(18, width_multiplier=0.125)
  variables = convert.convert_torchvision_resnet(state, model)
  assert variables["params"]["conv1"]["kernel"].shape == (7, 7, 3, 8)  # HWIO
  np.testing.assert_array_equal(
      variables["params"]["conv1"]["kernel"], state["conv1.weight"].transpose(2, 3, 1, 0)
  )
  np.testing.assert_array_equal(
      variables["batch_stats"]["layer2"]["0"]["downsample"]["1"]["var"],
      state["layer2.0.downsample.1.running_var"],
  )
  back = convert.variables_to_state_dict(variables)
  assert set(back) == set(state) - {"fc.weight", "bn1.num_batches_tracked"}
  for k, v in back.items():
    np.testing.assert_array_equal(v, state[k])


def test_missing_unexpected_and_wrong_shape_are_all_listed():
  model = ResNet(18, width_multiplier=0.125)
  state = resnet_state_dict(18)
  del state["layer3.1.conv2.weight"]
  del state["layer1.0.bn1.running_var"]
  state["layer9.0.conv1.weight"] = np.zeros((1,), np.float32)
  state["layer2.0.conv1.weight"] = state["layer2.0.conv1.weight"][:, :, :1, :1]
  with pytest.raises(convert.CheckpointMismatchError) as info:
    convert.convert_torchvision_resnet(state, model, source="r18.pth")
  message = str(info.value)
  assert "r18.pth" in message and "nothing was loaded" in message
  assert "missing keys (in the model, not in the checkpoint) (2)" in message
  assert "layer3.1.conv2.weight" in message and "layer1.0.bn1.running_var" in message
  assert (
      "unexpected keys (in the checkpoint, not in the model) (1)" in message
      and "layer9.0.conv1.weight" in message
  )
  assert "layer2.0.conv1.weight: checkpoint (16, 8, 1, 1), model expects (16, 8, 3, 3)" in message


def test_wrong_architecture_and_width():
  state50 = resnet_state_dict(50)
  with pytest.raises(convert.CheckpointMismatchError, match="different architecture") as info:
    convert.convert_torchvision_resnet(state50, ResNet(101, width_multiplier=0.125))
  assert "layer3.6.*: 15 tensors" in str(info.value) and "layer3.22.*" in str(info.value)
  assert len(info.value.missing) == 17 * 15 and "layer3.22.conv3.weight" in info.value.missing
  with pytest.raises(convert.CheckpointMismatchError, match="unexpected keys"):
    convert.convert_torchvision_resnet(state50, ResNet(18, width_multiplier=0.125))
  with pytest.raises(convert.CheckpointMismatchError, match="wrong shapes"):
    convert.convert_torchvision_resnet(
        resnet_state_dict(18, width=0.25), ResNet(18, width_multiplier=0.125)
    )
  with pytest.raises(convert.CheckpointMismatchError, match="different architecture"):
    convert.convert_resnet38(resnet_state_dict(18), ResNet38(width_multiplier=0.03125))


def test_prefix_and_ignore_options():
  model = ResNet(18, width_multiplier=0.125)
  wrapped = {f"module.{k}": v for k, v in resnet_state_dict(18).items()}
  with pytest.raises(convert.CheckpointMismatchError, match="prefix"):
    convert.convert_torchvision_resnet(wrapped, model)
  convert.convert_torchvision_resnet(wrapped, model, prefix="module.")

  r38 = ResNet38(width_multiplier=0.03125)
  seam = seeded_state_dict(convert.torch_shapes(template(r38)), 0)
  seam["fc8.weight"] = np.zeros((21, 128, 1, 1), np.float32)
  seam["f9.weight"] = np.zeros((192, 195, 1, 1), np.float32)
  with pytest.raises(convert.CheckpointMismatchError, match="fc8.weight"):
    convert.convert_resnet38(seam, r38)
  convert.convert_resnet38(seam, r38, ignore=[r"^(fc8|f8_3|f8_4|f9)\."])


# ---------------------------------------------------------------------------------------------------------
# MXNet NDArray lists. The expected bytes are spelled out here with struct, independently of the writer.


def mx_file(entries, header=0x112):
  out = struct.pack("<QQQ", header, 0, len(entries))
  for array_bytes, _ in entries:
    out += array_bytes
  out += struct.pack("<Q", len(entries))
  for _, name in entries:
    out += struct.pack("<Q", len(name)) + name.encode()
  return out


def mx_v2(a, flag=0):
  return (
      struct.pack("<Iii", 0xF993FAC9, 0, a.ndim)
      + struct.pack(f"<{a.ndim}q", *a.shape)
      + struct.pack("<iii", 2, 0, flag)
      + a.tobytes()
  )  # context gpu(0): still readable


def mx_v1(a, flag=0):
  return (
      struct.pack("<II", 0xF993FAC8, a.ndim)
      + struct.pack(f"<{a.ndim}q", *a.shape)
      + struct.pack("<iii", 1, 0, flag)
      + a.tobytes()
  )


def mx_legacy(a, flag=0):
  return (
      struct.pack(f"<I{a.ndim}I", a.ndim, *a.shape) + struct.pack("<iii", 1, 0, flag) + a.tobytes()
  )


def test_read_mxnet_all_header_versions(tmp_path):
  a = np.arange(24, dtype=np.float32).reshape(2, 3, 4) - 5.5
  b = np.linspace(-1, 1, 5).astype(np.float64)
  c = np.array([[1, 2], [3, 4]], np.float16)
  path = tmp_path / "x.params"
  path.write_bytes(
      mx_file([(mx_v2(a), "arg:a"), (mx_v1(b, flag=1), "aux:b"), (mx_legacy(c, flag=2), "c")])
  )
  arrays = convert.read_mxnet_params(path)
  assert list(arrays) == ["arg:a", "aux:b", "c"]
  np.testing.assert_array_equal(arrays["arg:a"], a)
  np.testing.assert_array_equal(arrays["aux:b"], b)
  assert arrays["c"].dtype == np.float16 and arrays["c"].shape == (2, 2)
  np.testing.assert_array_equal(arrays["c"], c)


@pytest.mark.parametrize("version", ["v2", "v1", "legacy"])
def test_mxnet_writer_matches_format(tmp_path, version):
  arrays = {
      "arg:w": np.random.default_rng(0).standard_normal((3, 2, 1, 1)).astype(np.float32),
      "aux:m": np.arange(3, dtype=np.float32),
  }
  convert.write_mxnet_params(tmp_path / "w.params", arrays, version=version)
  encode = {"v2": mx_v2, "v1": mx_v1, "legacy": mx_legacy}[version]
  expected = mx_file([(encode(v), k) for k, v in arrays.items()])
  if version == "v2":  # the writer records cpu(0), the hand-made v2 above gpu(0)
    expected = expected.replace(struct.pack("<iii", 2, 0, 0), struct.pack("<iii", 1, 0, 0))
  assert (tmp_path / "w.params").read_bytes() == expected
  back = convert.read_mxnet_params(tmp_path / "w.params")
  for k in arrays:
    np.testing.assert_array_equal(back[k], arrays[k])


def test_read_mxnet_errors(tmp_path):
  a = np.ones((2,), np.float32)
  bad = tmp_path / "bad.params"
  bad.write_bytes(mx_file([(mx_v2(a), "a")], header=0x113))
  with pytest.raises(ValueError, match="bad.params.*not an MXNet NDArray file"):
    convert.read_mxnet_params(bad)
  bad.write_bytes(mx_file([(mx_v2(a), "a")])[:-10])
  with pytest.raises(ValueError, match="truncated"):
    convert.read_mxnet_params(bad)
  sparse = struct.pack("<Ii", 0xF993FAC9, 1) + b"\0" * 40
  bad.write_bytes(mx_file([(sparse, "a")]))
  with pytest.raises(ValueError, match="sparse"):
    convert.read_mxnet_params(bad)
  bad.write_bytes(mx_file([(mx_v2(a, flag=99), "a")]))
  with pytest.raises(ValueError, match="dtype flag 99"):
    convert.read_mxnet_params(bad)


def test_mxnet_names_to_seam_names():
  value = np.zeros((1,), np.float32)
  names = [
      "arg:conv1a_weight",
      "arg:res2a_branch1_weight",
      "aux:bn4b5_branch2b1_moving_var",
      "arg:bn6a_branch2b2_gamma",
      "arg:res7a_branch2b2_weight",
      "aux:bn7_moving_mean",
      "arg:bn7_beta",
      "arg:linear1000_weight",
      "arg:linear1000_bias",
  ]
  state = convert.mxnet_resnet38_to_state_dict({n: value for n in names})
  assert sorted(state) == sorted(
      [
          "conv1a.weight",
          "b2.conv_branch1.weight",
          "b4_5.bn_branch2b1.running_var",
          "b6.bn_branch2b2.weight",
          "b7.conv_branch2b2.weight",
          "bn7.running_mean",
          "bn7.bias",
      ]
  )
  with pytest.raises(
      convert.CheckpointMismatchError, match=r"arg:fc8_weight[\s\S]*aux:res2a_branch1_gamma"
  ):
    convert.mxnet_resnet38_to_state_dict(
        {"arg:fc8_weight": value, "aux:res2a_branch1_gamma": value, "arg:conv1a_weight": value}
    )


def test_mxnet_resnet38_file_parity():
  """A real-format .params file (written by tools/make_backbone_fixtures.py with its own writer) against the
  reference outputs of SEAM's network loaded with the same weights."""
  fx = np.load(os.path.join(DATA, "resnet38_w003125_mxnet.npz"))
  params = convert.read_mxnet_params(os.path.join(DATA, "resnet38_w003125.params"))
  assert "arg:linear1000_weight" in params and "aux:bn7_moving_var" in params
  model = ResNet38(width_multiplier=0.03125)
  variables = convert.convert_resnet38(convert.mxnet_resnet38_to_state_dict(params), model)
  out = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, jnp.asarray(fx["x"]))
  for tap in OUT_CHANNELS:
    ref = fx[f"eval__{tap}"]
    assert np.abs(np.asarray(out[tap], np.float64) - ref).max() <= 1e-5 * np.abs(ref).max(), tap


# ---------------------------------------------------------------------------------------------------------
# Saved files and the CLI.


def test_save_and_load_variables(tmp_path):
  variables = convert.convert_torchvision_resnet(
      resnet_state_dict(18), ResNet(18, width_multiplier=0.125)
  )
  convert.save_variables(tmp_path / "v.msgpack", variables)
  loaded = convert.load_variables(tmp_path / "v.msgpack")
  assert jax.tree_util.tree_structure(loaded) == jax.tree_util.tree_structure(variables)
  jax.tree_util.tree_map(np.testing.assert_array_equal, loaded, variables)


def test_cli_mxnet(tmp_path, capsys):
  params = os.path.join(DATA, "resnet38_w003125.params")
  out = tmp_path / "r38.msgpack"
  assert (
      convert_weights.main(
          [
              "--arch",
              "resnet38",
              "--width-multiplier",
              "0.03125",
              "--input",
              params,
              "--output",
              str(out),
          ]
      )
      == 0
  )
  assert "wrote" in capsys.readouterr().out
  loaded = convert.load_variables(out)
  direct = convert.convert_resnet38(
      convert.mxnet_resnet38_to_state_dict(convert.read_mxnet_params(params)),
      ResNet38(width_multiplier=0.03125),
  )
  jax.tree_util.tree_map(np.testing.assert_array_equal, loaded, direct)

  with pytest.raises(SystemExit) as exit_info:
    convert_weights.main(
        [
            "--arch",
            "resnet38",
            "--width-multiplier",
            "0.0625",
            "--input",
            params,
            "--output",
            str(tmp_path / "bad.msgpack"),
        ]
    )
  assert exit_info.value.code == 1 and "191 wrong shape" in capsys.readouterr().err
  assert not (tmp_path / "bad.msgpack").exists()
  with pytest.raises(SystemExit) as exit_info:
    convert_weights.main(["--arch", "resnet50", "--input", params, "--output", str(tmp_path / "x")])
  assert exit_info.value.code == 1 and "resnet38 only" in capsys.readouterr().err


def test_cli_torch_checkpoints(tmp_path):
  torch = pytest.importorskip("torch")
  state = resnet_state_dict(18)
  torch.save(
      {"state_dict": {f"module.{k}": torch.from_numpy(np.asarray(v)) for k, v in state.items()}},
      tmp_path / "r18.pth",
  )
  out = tmp_path / "r18.msgpack"
  assert (
      convert_weights.main(
          [
              "--arch",
              "resnet18",
              "--width-multiplier",
              "0.125",
              "--prefix",
              "module.",
              "--input",
              str(tmp_path / "r18.pth"),
              "--output",
              str(out),
          ]
      )
      == 0
  )
  loaded = convert.variables_to_state_dict(convert.load_variables(out))
  for k, v in loaded.items():
    np.testing.assert_array_equal(v, state[k])

  from jaxseg.models.deeplab_v2 import DeepLabV2

  deeplab = DeepLabV2(num_classes=4, width_multiplier=0.0625)
  backbone = {
      k: v
      for k, v in seeded_state_dict(convert.torch_shapes(template(deeplab)), 0).items()
      if not k.startswith(("layer5", "layer6"))
  }
  torch.save(
      {f"Scale.{k}": torch.from_numpy(v) for k, v in backbone.items()}, tmp_path / "init.pth"
  )
  assert (
      convert_weights.main(
          [
              "--arch",
              "deeplab_v2",
              "--num-classes",
              "4",
              "--width-multiplier",
              "0.0625",
              "--input",
              str(tmp_path / "init.pth"),
              "--output",
              str(tmp_path / "d.msgpack"),
          ]
      )
      == 0
  )
  loaded = convert.variables_to_state_dict(convert.load_variables(tmp_path / "d.msgpack"))
  assert loaded["layer6.conv2d_list.3.weight"].shape == (4, 128, 3, 3)
  np.testing.assert_array_equal(loaded["layer4.2.conv3.weight"], backbone["layer4.2.conv3.weight"])
