"""``recseg sweep`` without Grid Engine: options, configurations, the runs a sweep finds, dry runs
and errors (tests/test_grid_sge.py submits sweeps to a real Grid Engine)."""

from __future__ import annotations

import dataclasses
import re
import uuid
from pathlib import Path

import pytest
from mlflow.entities import Param
from mlflow.tracking import MlflowClient

from recseg.cli.train import train_cmd
from recseg.config import as_params, build
from recseg.errors import InputError
from recseg.grid import sweep as S
from recseg.grid.job import max_restarts, parse
from recseg.grid.sge import variables_arg
from recseg.training.config import TrainConfig
from tests.gridhelp import ONE_THREAD, ROOT, non_default_config, train_config
from tests.media import one_error_line, recseg_in_process, run_recseg
from tests.stores import make_store

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_store(tmp_path_factory.mktemp("grid-store"))


def sweep_options(**given: object) -> dict[str, object]:
    """``recseg sweep``'s parsed options (every one of them, as click passes them)."""
    args: list[str] = []
    for name, value in given.items():
        opt = f"--{name.replace('_', '-')}"
        args += [opt] if value is True else [opt, str(value)]
    from recseg.cli.sweep import sweep_cmd

    with sweep_cmd.make_context("sweep", args) as ctx:
        return dict(ctx.params)


def make_grid(**values: str) -> S.Grid:
    return S.Grid(S.values_from_options(values), Path("train.sge"), "/env")


def test_values_from_options() -> None:
    opts = sweep_options(data="/x", epochs="2,3", loss="X, Y", model="A", experiment="e,f",
                         no_augment=True, seed="1,1,2")  # fmt: skip
    values = S.values_from_options({k: v for k, v in opts.items() if k not in S.OWN_OPTIONS})
    assert list(values)[:2] == ["model", "loss"]
    assert values == {"model": ["A"], "loss": ["X", "Y"], "data": ["/x"], "epochs": ["2", "3"],
                      "seed": ["1", "2"], "experiment": ["e,f"], "augment": ["false"]}  # fmt: skip
    with pytest.raises(InputError, match="--no-augment and --augment"):
        S.values_from_options({"augment": "true", "no_augment": True})
    with pytest.raises(InputError, match="--loss"):
        S.split_values("loss", "X,,Y")


def test_configurations_are_the_product(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    grid = make_grid(model="Deep+_mobile,Deep_mobile_gruV1", loss="SoftDice,CrossDice",
                     data="store", epochs="2", augment="no")  # fmt: skip
    configs = S.configurations(grid, train_cmd)
    assert len(set(configs)) == 4 and all(isinstance(c, TrainConfig) for c in configs)
    assert {(c.model, c.loss) for c in configs} == {
        (m, x) for m in ("Deep+_mobile", "Deep_mobile_gruV1") for x in ("SoftDice", "CrossDice")
    }
    assert {c.data for c in configs} == {str(tmp_path / "store")}
    assert all(c.epochs == 2 and c.augment is False for c in configs)
    assert grid.swept == ["model", "loss"]
    assert S.label(grid, configs[0]) == "model=Deep+_mobile loss=SoftDice"
    one = make_grid(model="Deep+_mobile", loss="SoftDice", data="store", seed="1,2")
    assert [S.label(one, c) for c in S.configurations(one, train_cmd)] == ["seed=1", "seed=2"]
    single = make_grid(model="Deep+_mobile", loss="SoftDice", data="store")
    assert S.label(single, S.configurations(single, train_cmd)[0]) == (
        "model=Deep+_mobile loss=SoftDice"
    )


@pytest.mark.parametrize(
    ("over", "needle"),
    [({"loss": "CrossDice,Nope"}, "--loss"), ({"epochs": "2,zero"}, "--epochs"),
     ({"augment": "maybe"}, "--augment"), ({"size": "12"}, "--size")],
)  # fmt: skip
def test_a_bad_sweep_value_names_its_option(over: dict[str, str], needle: str) -> None:
    values = {"model": "Deep+_mobile", "loss": "SoftDice", "data": "/x", **over}
    with pytest.raises(InputError, match=re.escape(needle)):
        S.configurations(make_grid(**values), train_cmd)


def test_job_variables_give_the_config_back() -> None:
    grid = dataclasses.replace(make_grid(model="A", loss="B", data="/x"), max_restarts=3)
    cfg = non_default_config()
    env = S.variables(grid, cfg, "run123", train_cmd)
    variables_arg(env)  # qsub -v takes them (no bare comma)
    assert env["RUN_ID"] == "run123" and env["RECSEG_ENV"] == "/env"
    assert env["MAX_RESTARTS"] == "3" and max_restarts(env) == 3
    assert build(TrainConfig, parse(train_cmd, env)) == dataclasses.replace(cfg, run_id="run123")


def test_job_tracking_uri_is_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///sub/mlflow.db")
    assert S.job_tracking_uri() == f"sqlite:///{tmp_path}/sub/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://host:5000")
    assert S.job_tracking_uri() == "http://host:5000"


def test_grid_from_options(tmp_path: Path) -> None:
    opts = sweep_options(data="/x", model="A,B", loss="X", qsub_args="-l 'h_rt=1:00:00' -q g.q")
    grid = S.grid_from_options(opts)
    assert grid.script == ROOT / "grid" / "train.sge"
    assert grid.qsub_args == ("-l", "h_rt=1:00:00", "-q", "g.q")
    assert grid.values == {"model": ["A", "B"], "loss": ["X"], "data": ["/x"]}
    with pytest.raises(InputError, match="--script"):
        S.grid_from_options({**opts, "script": tmp_path / "none.sge"})
    with pytest.raises(InputError, match="--qsub-args"):
        S.grid_from_options({**opts, "qsub_args": "-N 'open"})


def sweep_args(store: Path | str, experiment: str) -> list[str]:
    return ["sweep", "--data", str(store), "--model", "Deep+_mobile,Deep_mobile_gruV1",
            "--loss", "SoftDice,CrossDice", "--experiment", experiment, "--dry-run"]  # fmt: skip


def test_sweep_dry_run(store: Path, mlflow_server: str, tmp_path: Path) -> None:
    experiment = f"dry-{uuid.uuid4().hex[:8]}"
    env = {"MLFLOW_TRACKING_URI": mlflow_server, **ONE_THREAD}
    result = run_recseg(*sweep_args(store, experiment), cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "4 to submit" in lines[0] and experiment in lines[0]
    new = [line for line in lines if line.strip().startswith("new:")]
    assert len(new) == 4 and len(set(new)) == 4
    assert MlflowClient(mlflow_server).get_experiment_by_name(experiment) is None
    assert not list(tmp_path.iterdir())  # no log folder either


def test_sweep_of_a_missing_store(
    mlflow_server: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    """In this process (``recseg.cli.main``, as the console script runs it): no start-up."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    experiment = f"dry-{uuid.uuid4().hex[:8]}"
    result = recseg_in_process(sweep_args(tmp_path / "none", experiment), capsys)
    one_error_line(result, "none")
    assert result.stdout == ""
    assert MlflowClient(mlflow_server).get_experiment_by_name(experiment) is None


def logged_run(client: MlflowClient, experiment: str, cfg: TrainConfig, status: str) -> str:
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(experiment)
    run = client.create_run(exp_id)
    params = [Param(k, v) for k, v in as_params(cfg).items()]
    client.log_batch(run.info.run_id, params=params)
    client.set_terminated(run.info.run_id, status)
    return run.info.run_id


def test_matches(mlflow_server: str) -> None:
    client = MlflowClient(mlflow_server)
    experiment = f"match-{uuid.uuid4().hex[:8]}"
    cfg = train_config(experiment=experiment, epochs=3, augment=False)
    run = client.get_run(logged_run(client, experiment, cfg, "FINISHED"))
    assert S.matches(cfg, run)
    # the job's options may differ: the same configuration
    assert S.matches(dataclasses.replace(cfg, num_workers=0, time_limit=60.0, run_id="r"), run)
    assert not S.matches(dataclasses.replace(cfg, loss="SoftDice"), run)
    assert not S.matches(dataclasses.replace(cfg, augment=True), run)


def test_plan_finds_the_runs_a_sweep_has(
    store: Path, mlflow_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    client = MlflowClient(mlflow_server)
    experiment = f"plan-{uuid.uuid4().hex[:8]}"
    grid = make_grid(model="Deep+_mobile,Deep_mobile_gruV1", loss="SoftDice,CrossDice",
                     data=str(store), experiment=experiment)  # fmt: skip
    configs = S.configurations(grid, train_cmd)
    logged_run(client, experiment, configs[0], "FINISHED")
    logged_run(client, experiment, configs[1], "FAILED")
    plans = S.plan(grid, train_cmd, client)
    assert [p.cfg for p in plans] == configs
    assert [p.action for p in plans] == ["exists", "retry", "new", "new"]
