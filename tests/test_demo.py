"""The first hour of a user, reduced to fit CI: ``recseg demo --quick`` end to end against a
real MLflow server (the same steps as ``make demo``, smaller), its runs seen in a real browser
(Debian's headless Chromium, Playwright) at the address the demo printed, ``recseg report`` on
them, and ``recseg thesis --quick`` with two seeds per variant."""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow import MlflowClient
from PIL import Image

from recseg.cli.demo import user_videos
from recseg.data.video import decode, probe
from tests.browser import artifacts_dir, unavailable
from tests.media import run_recseg
from tests.mlflow_ui import ShownRun, check_mlflow_ui
from tests.servers import Server

pytestmark = pytest.mark.slow
MODELS = ("Deep+_mobile", "Deep_mobile_gruV1")
COMPARE = re.compile(r"^  (http://\S+/#/compare-runs\?\S+)$", re.M)


def frame_count(path: Path) -> int:
    """Frames the real decoder reads from a video."""
    return sum(1 for _ in decode(path))


@dataclass(frozen=True)
class Demo:
    """What one ``recseg demo --quick`` left: where, its output, its server."""

    root: Path
    out: Path
    stdout: str
    uri: str
    env: dict[str, str]

    def compare_url(self) -> str:
        found = COMPARE.findall(self.stdout)
        assert len(found) == 1, self.stdout[-3000:]
        return found[0]

    def url_lists(self) -> tuple[list[str], list[str]]:
        """The run ids and experiment ids in the printed compare address."""
        query = urllib.parse.parse_qs(self.compare_url().split("?", 1)[1])
        return json.loads(query["runs"][0]), json.loads(query["experiments"][0])


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    root = tmp_path_factory.mktemp("first-hour")
    server = Server(root / "server").start()
    env = {"MLFLOW_TRACKING_URI": server.uri}
    try:
        done = run_recseg("demo", "--quick", "--out", "demo", cwd=root, env=env)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        yield Demo(root, root / "demo", done.stdout, server.uri, env)
    finally:
        server.stop()


def test_demo_runs_every_step_and_prints_where_to_look(demo: Demo) -> None:
    """Ten numbered steps, each shown as a recseg command; the outputs exist and play; the
    two runs are trained (the recurrent one warm-started from the plain one), evaluated and
    one is the champion, scored on the held-out set too; the UI address names both runs."""
    total = 10 + len(user_videos(""))  # + a segment step per real video found on the machine
    steps = re.findall(rf"^demo \[(\d+)/{total}\] (.+)$", demo.stdout, re.M)
    assert [int(i) for i, _ in steps] == list(range(1, total + 1)), demo.stdout
    assert len(re.findall(r"^  \$ recseg ", demo.stdout, re.M)) == total
    client = MlflowClient(demo.uri)
    run_ids, experiments = demo.url_lists()
    exp = client.get_experiment_by_name("demo")
    assert experiments == [exp.experiment_id] and len(run_ids) == 2
    runs = [client.get_run(rid) for rid in run_ids]
    assert sorted(r.data.params["model"] for r in runs) == sorted(MODELS)
    assert all(r.info.status == "FINISHED" and "test_miou" in r.data.metrics for r in runs)
    champion = client.get_model_version_by_alias("recseg-demo", "champion")
    assert champion.run_id in run_ids
    base = next(r for r in runs if r.data.params["model"] == MODELS[0])
    recurrent = next(r for r in runs if r.data.params["model"] == MODELS[1])
    assert recurrent.data.params["init_from"] == f"runs:/{base.info.run_id}/model"
    assert int(recurrent.data.params["init_tensors"].split("/")[0]) > 100
    held = re.search(r"^  held-out fg IoU  (\d\.\d{3}) ", demo.stdout, re.M)
    assert held is not None, demo.stdout
    evaluation = client.search_runs(
        [client.get_experiment_by_name("evaluate").experiment_id],
        "params.model_uri = 'models:/recseg-demo@champion'",
    )
    assert len(evaluation) == 1 and evaluation[0].data.params["data"].endswith("heldout/store")
    assert f"{evaluation[0].data.metrics['test_fg_iou']:.3f}" == held.group(1)
    assert f"#/experiments/{exp.experiment_id}?workflowType=machine_learning" in demo.stdout
    assert "mlflow ui" not in demo.stdout  # a server: its UI is already there
    video = next(Path(p) for p in re.findall(r"^  \$ recseg segment (\S+)", demo.stdout, re.M))
    source, out = probe(demo.root / video), probe(demo.out / "segmented.mp4")
    assert (out.width, out.height) == (source.width, source.height)
    frames = frame_count(demo.root / video)
    assert frame_count(demo.out / "segmented.mp4") == frames > 0
    assert frame_count(demo.out / "segmented-masks.mp4") == frames
    assert (demo.out / "store" / "samples.png").is_file()


@pytest.mark.skipif(bool(unavailable()), reason=str(unavailable()))
def test_mlflow_ui_shows_the_demo_runs_in_chromium(demo: Demo) -> None:
    """The compare address the demo printed, opened in Chromium: both runs, their params
    (model, loss), every test_* metric and the per-epoch curves; screenshots are kept."""
    run_ids, (experiment,) = demo.url_lists()
    client = MlflowClient(demo.uri)
    runs = []
    for rid in run_ids:
        run = client.get_run(rid)
        params = {k: run.data.params[k] for k in ("model", "loss")}
        runs.append(ShownRun(rid, run.info.run_name, params))
    shots = check_mlflow_ui(demo.uri, experiment, demo.compare_url(), runs, artifacts_dir())
    for shot in shots:
        with Image.open(shot) as img:
            assert img.format == "PNG" and img.width >= 1000, (shot, img.size)
            assert img.convert("RGB").getcolors(64) is None, shot  # not blank: many colours


def test_report_of_the_demo(demo: Demo, tmp_path: Path) -> None:
    """``recseg report``: the markdown table of both variants (one seed: no spread, no
    verdict), the files in --out, and a summary run whose description is the table."""
    done = run_recseg("report", "--experiment", "demo", "--out", str(tmp_path / "r"),
                      cwd=demo.root, env=demo.env)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    table = [ln for ln in done.stdout.splitlines() if ln.startswith("| ")]
    assert table[0].startswith("| Variant | Model | Loss | Seeds | test mIoU %")
    assert {"base", "+ GRUV1"} <= {ln.split(" | ")[0][2:] for ln in table[1:]}
    assert "Fewer than two seeds" in done.stdout
    files = {p.name for p in (tmp_path / "r").iterdir()}
    assert {"report.md", "summary.csv", "runs.csv", "latency_vs_fg_iou.png"} <= files
    client = MlflowClient(demo.uri)
    exp = client.get_experiment_by_name("demo")
    (report,) = client.search_runs([exp.experiment_id], "tags.`recseg.kind` = 'report'")
    assert report.data.tags["mlflow.note.content"] == (tmp_path / "r" / "report.md").read_text()
    logged = {a.path for a in client.list_artifacts(report.info.run_id, "report")}
    assert {"report/report.md", "report/metrics_mobilenet_v2.png"} <= logged


def test_thesis_quick_with_two_seeds(demo: Demo) -> None:
    """``recseg thesis --quick``: base and one recurrent variant x 2 seeds, evaluated and
    reported; mean ± std over the seeds and a flicker verdict in the printed table."""
    done = run_recseg("thesis", "--quick", "--out", "thesis", "--experiment", "thesis-ci",
                      "--variants", "Deep+_mobile,Deep_mobile_gruV1", "--seeds", "2", cwd=demo.root,
                      env=demo.env)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = [ln for ln in done.stdout.splitlines() if ln.startswith(("| base |", "| + GRUV1 |"))]
    assert len(rows) == 2 and all(" | 2 | " in r and " ± " in r for r in rows), rows
    assert re.search(r"^- \*\*\+ GRUV1\*\* .*flicker", done.stdout, re.M), done.stdout
    runs = MlflowClient(demo.uri).search_runs(
        [MlflowClient(demo.uri).get_experiment_by_name("thesis-ci").experiment_id],
        "tags.`recseg.kind` = 'train'",
    )
    assert sorted(int(r.data.params["seed"]) for r in runs) == [0, 0, 1, 1]
    assert all("test_fg_iou_clean" in r.data.metrics for r in runs)
    report = demo.root / "thesis" / "report"
    assert (report / "report.md").is_file()
    # recurrent − base per metric with a 95 % interval, in the report and its files
    assert "## Recurrent − base, with 95 % intervals" in done.stdout
    row = r"^\| Deep_mobile_gruV1 \(CrossDice\) \| foreground IoU \| [+-]\d"
    assert re.search(row, done.stdout, re.M), done.stdout
    assert {"intervals.csv", "fg_iou_by_event.png", "iou_around_events.png"} <= {
        f.name for f in report.iterdir()
    }


def test_demo_stops_at_a_failing_step(tmp_path: Path) -> None:
    """A step that fails stops the demo with its exit code and a line naming the step."""
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "footage").write_text("not a folder")
    done = run_recseg("demo", "--quick", "--out", "demo", cwd=tmp_path,
                      env={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"})  # fmt: skip
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    total = 10 + len(user_videos(""))
    assert (
        last.startswith(f"recseg: error: demo step 1/{total} (footage") and "recseg footage" in last
    )
    assert f"demo [2/{total}]" not in done.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["demo", "--models", "Deep_mobile_gruV9"], "--models"),
        (["demo", "--epochs", "-1"], "--epochs"),
        (["thesis", "--seeds", "0"], "--seeds"),
        (["thesis", "--loss", "Hinge"], "--loss"),
        (["report", "--experiment", "no-such-experiment"], "no-such-experiment"),
    ],
)
def test_bad_options_get_one_line(args: list[str], needle: str, tmp_path: Path) -> None:
    done = run_recseg(*args, cwd=tmp_path,
                      env={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"})  # fmt: skip
    assert done.returncode == 2, (done.stdout, done.stderr)
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("recseg: error: ") and needle in line, line
    assert not (tmp_path / "demo").exists() and not (tmp_path / "thesis").exists()
