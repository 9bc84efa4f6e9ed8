"""Results as data (jaxseg/tools/results.py): tables from seed studies, the README rendered from JSON."""

import json
import os

import pytest

from jaxseg.tools import results

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_study_table_rows_gains_and_spread():
  study = results.STUDIES["seam_demo"]
  metrics = {
      0: dict(
          cam=dict(plain_cam_miou=0.40),
          seam=dict(
              raw_cam_miou=0.50,
              seam_cam_miou=0.55,
              random_walk_miou=0.6,
              segmenter_miou=0.65,
              segmenter_crf_miou=0.67,
          ),
          supervised=dict(miou=0.8),
      ),
      1: dict(cam=dict(plain_cam_miou=0.30), seam=dict(raw_cam_miou=0.45, seam_cam_miou=0.48)),
  }
  table = results.table(study, metrics)
  assert list(table) == [
      "plain CAM",
      "SEAM raw CAM (fc8)",
      "SEAM CAM (PCM)",
      "SEAM random walk",
      "segmenter on random-walk masks",
      "segmenter + CRF",
      "supervised bound (pixel labels)",
      "gain: SEAM CAM - plain CAM",
      "gain: PCM - SEAM raw CAM",
      "gain: random walk - SEAM CAM",
      "gain: segmenter - random walk",
  ]
  assert table["gain: segmenter - random walk"]["seeds"][0] == pytest.approx(5.0)
  gain = table["gain: SEAM CAM - plain CAM"]
  assert gain["seeds"] == pytest.approx({0: 15.0, 1: 18.0})
  assert gain["mean"] == pytest.approx(16.5) and gain["min"] == pytest.approx(15.0)
  assert gain["std"] == pytest.approx(2.1213203)  # sample std (ddof=1) of 15 and 18
  walk = table["SEAM random walk"]
  assert walk["seeds"][1] is None and walk["std"] == 0.0 and walk["mean"] == pytest.approx(60.0)


def _record(rows, seeds=(0, 1)):
  return dict(
      study="toy",
      description="",
      unit="mIoU %",
      seeds=list(seeds),
      rows=results._jsonable(rows),
      runs={"a_s0": dict(command="python launch.py --config=x", seconds=120.0)},
      command="python -m jaxseg.tools.results measure toy",
      commit="abc1234",
      machine=dict(cpu="CPU X", cores=2, devices=1, platform="cpu", jax="0.10.2"),
      date="2026-12-07",
  )


def test_markdown_has_seed_columns_spread_and_provenance():
  rows = {
      "plain CAM": dict(seeds={0: 40.0, 1: 30.0}, **results.summarise({0: 40.0, 1: 30.0})),
      "gain: x - y": dict(seeds={0: 2.0, 1: None}, **results.summarise({0: 2.0, 1: None})),
  }
  text = results.markdown(_record(rows))
  assert "| plain CAM | 40.0 | 30.0 | 35.0 ± 7.1 | 30.0 … 40.0 |" in text
  assert "| gain: x - y | +2.0 | – | +2.0 ± 0.0 | +2.0 … +2.0 |" in text
  assert "commit abc1234" in text and "CPU X, 2 cores" in text and "docs/results/toy.json" in text
  one = results.markdown(_record({"a": dict(seeds={0: 1.0}, **results.summarise({0: 1.0}))}, (0,)))
  assert "mean" not in one.splitlines()[0]  # one seed: no spread columns


def test_commands_put_config_first_and_share_seed():
  for study in results.STUDIES.values():
    for arm in study.arms:
      command = study.command(arm, 2, "/w")
      assert command[2].startswith("--config=configs/"), command  # before any --config.* override
      assert "--config.seed=2" in command and "--workdir=/w" in command


def test_measure_resumes_from_finished_runs(tmp_path, monkeypatch):
  """A run whose metrics.json exists is read, not launched (an interrupted study resumes)."""
  study = results.STUDIES["supervised_demo"]
  for seed, miou in ((0, 0.7), (1, 0.75)):
    run = tmp_path / f"demo_s{seed}"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps(dict(miou=miou, pixel_accuracy=0.9)))
  monkeypatch.setattr(results.subprocess, "run", _refuse_launch(results.subprocess.run))
  record = results.measure(study, str(tmp_path), seeds=(0, 1))
  assert record["rows"]["mIoU"]["seeds"] == {"0": pytest.approx(70.0), "1": pytest.approx(75.0)}
  assert record["machine"]["devices"] == 1 and record["commit"]


def _refuse_launch(run):
  def guarded(argv, *args, **kwargs):
    assert "launch.py" not in argv, "a finished run was launched again"
    return run(argv, *args, **kwargs)

  return guarded


def test_render_replaces_only_the_blocks():
  text = (
      "a\n<!-- results:x -->\nold\n<!-- /results:x -->\nb <!-- results:y -->\n\n<!-- /results:y -->"
  )
  rendered = results.render_readme(text, lambda name: f"| {name} |")
  assert rendered == (
      "a\n<!-- results:x -->\n| x |\n<!-- /results:x -->\nb <!-- results:y -->\n| y |\n<!-- /results:y -->"
  )
  assert results.readme_blocks(rendered) == {"x": "| x |", "y": "| y |"}


def test_check_reports_empty_unclosed_unknown_and_stale_blocks():
  table = results.render_block("supervised_ci")
  good = f"<!-- results:supervised_ci -->\n{table}\n<!-- /results:supervised_ci -->\n"
  assert results.readme_problems(good) == []
  cases = {
      "<!-- results:supervised_ci -->\n<!-- /results:supervised_ci -->": "differs from",  # empty
      "<!-- results:supervised_ci -->\nold\n<!-- /results:supervised_ci -->": "differs from",
      "<!-- results:supervised_ci -->\nold\n": "no closing",
      "<!-- results:nope -->\nold\n<!-- /results:nope -->": "names no study",
  }
  for text, message in cases.items():
    (problem,) = results.readme_problems(good + text)
    assert message in problem and problem.startswith("README.md:"), (text, problem)
  # An empty block is rendered in place like any other.
  empty = "a\n<!-- results:x -->\n<!-- /results:x -->\nb"
  rendered = results.render_readme(empty, lambda name: f"| {name} |")
  assert rendered == "a\n<!-- results:x -->\n| x |\n<!-- /results:x -->\nb"


def test_readme_tables_are_their_json():
  """Every README results block is what `python -m jaxseg.tools.results readme` renders."""
  with open(results.README) as f:
    blocks = results.readme_blocks(f.read())
  assert "ci_claims" in blocks and len(blocks) >= 5
  for name, body in blocks.items():
    assert body == results.render_block(name), f"README block {name!r}: run the `readme` command"


def test_each_claim_held_on_every_seed_of_its_study():
  """The bound a CI test asserts is below every seed's value at that budget (so it can hold), and the
  study ran at the test's budget (the same `:reduced` variant the test launches)."""
  for claim in results.CLAIMS.values():
    record = results.load(claim.study)
    values = [v for v in record["rows"][claim.row]["seeds"].values()]
    assert len(values) == 3 and all(v is not None and v > claim.bound for v in values), claim
    test_file = os.path.join(ROOT, claim.test.split("::")[0])
    with open(test_file) as f:
      source = f.read()
    assert claim.test.split("::")[1] in source
    (config,) = {c for c in results.STUDIES[claim.study].arms.values() for c in c[:1]}
    assert config.removeprefix("--config=") in source, (claim.name, config)


def test_rerun_of_finished_stages_prints_the_results_table(tmp_path, capsys):
  import ml_collections

  from jaxseg.train.stages import run_stages

  calls = []

  def evaluate(config, workdir):
    calls.append("evaluate")
    (tmp_path / "results.md").write_text("| stage | mIoU (%) |\n|---|---|\n| toy | 42.0 |\n")
    return {"miou": 0.42}

  config = ml_collections.ConfigDict({"stages": ("evaluate",)})
  run_stages(config, str(tmp_path), {"evaluate": evaluate}, method="toy")
  first = capsys.readouterr().out
  assert calls == ["evaluate"] and "| toy | 42.0 |" not in first  # the stage printed its own table
  assert run_stages(config, str(tmp_path), {"evaluate": evaluate}, method="toy") == {}
  again = capsys.readouterr().out
  assert calls == ["evaluate"] and "finished earlier" in again
  assert f"results ({tmp_path / 'results.md'}):\n| stage | mIoU (%) |" in again
  assert "| toy | 42.0 |" in again
