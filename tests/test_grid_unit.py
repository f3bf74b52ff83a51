"""Grid Engine support without Grid Engine: job variables, ``recseg job`` and ``recseg sweep``
errors, ``qstat`` parsing, the job scripts and soft/hard stop requests (sweeps:
tests/test_grid_sweep.py)."""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import click
import pytest

from recseg.cli.evaluate import evaluate_cmd
from recseg.cli.lr_find import lr_find_cmd
from recseg.cli.train import train_cmd
from recseg.config import build, fields
from recseg.errors import InputError
from recseg.grid.envvars import (
    args_from_env,
    decode,
    encode,
    env_from_values,
    in_variables,
    options,
    variable,
)
from recseg.grid.job import TASKS, command_for, max_restarts, parse, run_job
from recseg.grid.sge import RESTARTS, SgeJob, job_numbers, job_variables, variables_arg
from recseg.tracking.evaluate_config import EvaluateConfig
from recseg.training.config import TrainConfig
from recseg.training.lr_find import LrFindConfig
from recseg.training.setup import build_setup
from recseg.training.stopping import StopRequest, TimeBudget
from recseg.training.trainer import Trainer
from tests.gridhelp import ONE_THREAD, ROOT, blank_train_variables, non_default_config, train_config
from tests.media import one_error_line, run_recseg
from tests.stores import make_store

pytestmark = pytest.mark.usefixtures("one_thread")

SCRIPTS = [ROOT / "grid" / f"{name}.sge" for name in ("train", "lr_find", "evaluate")]
MARKER = "# ---- the same in every recseg job script"
COMMANDS = [(train_cmd, TrainConfig), (lr_find_cmd, LrFindConfig), (evaluate_cmd, EvaluateConfig)]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_store(tmp_path_factory.mktemp("grid-store"))


# ---- 1. variables derive from the typed configs -------------------------------------------
@pytest.mark.parametrize(("command", "cls"), COMMANDS, ids=lambda c: getattr(c, "name", ""))
def test_every_option_has_its_upper_case_variable(command: click.Command, cls: type) -> None:
    opts = options(command)
    assert [o.name for o in opts] == [f.name for f, _ in fields(cls)]
    for opt in opts:
        assert variable(opt) == str(opt.name).upper()
        assert opt.opts[0] == "--" + str(opt.name).replace("_", "-")
    names = [variable(o) for o in opts]
    assert len(set(names)) == len(names)
    # none is a variable the job scripts or Grid Engine set themselves
    reserved = {"JOB_ID", "JOB_NAME", "SGE_ROOT", "NSLOTS", "QUEUE", "REQUEST", "RESTARTED",
                "ENVIRONMENT", "HOSTNAME", "TMPDIR", "HOME", "USER", "PATH", "TASK", RESTARTS,
                "MAX_RESTARTS", "RECSEG_ENV", "MLFLOW_TRACKING_URI", "OMP_NUM_THREADS"}  # fmt: skip
    assert not reserved & set(names)


def test_a_train_config_survives_variables_and_back() -> None:
    cfg = non_default_config()
    env = env_from_values(train_cmd, dataclasses.asdict(cfg))
    assert env["MODEL"] == "Deep_mobile_gruV3" and env["AUGMENT"] == "false"
    assert env["EXPERIMENT"] == "grid%2Ctest"
    assert "WEIGHT_DECAY" not in env and "SEQ" not in env  # defaults are left out
    args = args_from_env(train_cmd, env)
    assert "--no-augment" in args and "--faithful" in args
    assert build(TrainConfig, parse(train_cmd, env)) == cfg
    assert build(TrainConfig, parse(train_cmd, blank_train_variables(**env))) == cfg


# ---- 2. encoding and the values of variables ----------------------------------------------
@pytest.mark.parametrize("text", ["0,1e-4", "a,,b,", "no comma", "", "%2C,"])
def test_encode_decode_round_trip(text: str) -> None:
    encoded = encode(text)
    assert "," not in encoded
    assert decode(encoded) == text.replace("%2C", ",")
    assert decode("0%2c1e-4") == "0,1e-4"


def test_an_empty_variable_is_the_default() -> None:
    env = {"DATA": "/x", "MODEL": "Deep+_mobile", "LOSS": "CrossDice", "EPOCHS": "",
           "AUGMENT": "", "SIZE": ""}  # fmt: skip
    assert args_from_env(train_cmd, env) == ["--data", "/x", "--model", "Deep+_mobile",
                                             "--loss", "CrossDice"]  # fmt: skip
    values = parse(train_cmd, env)
    assert values["epochs"] == 10 and values["augment"] is True and values["size"] == ""


@pytest.mark.parametrize(
    ("text", "value"),
    [("true", True), ("false", False), ("1", True), ("0", False), ("yes", True), ("no", False),
     ("TRUE", True), ("No", False)],
)  # fmt: skip
def test_bool_variables(text: str, value: bool) -> None:
    env = {"DATA": "/x", "MODEL": "Deep+_mobile", "LOSS": "CrossDice", "AUGMENT": text}
    assert parse(train_cmd, env)["augment"] is value


@pytest.mark.parametrize("text", ["maybe", "2", "t", "--no-augment"])
def test_a_bad_bool_variable_is_refused_by_name(text: str) -> None:
    with pytest.raises(InputError, match=r"^AUGMENT: expected true or false"):
        args_from_env(train_cmd, {"AUGMENT": text})


def test_a_comma_in_a_variable_is_written_as_2c() -> None:
    env = {"DATA": "/x", "MODEL": "Deep+_mobile", "LOSS": "CrossDice",
           "WEIGHT_DECAYS": "0%2C1e-4"}  # fmt: skip
    assert parse(lr_find_cmd, env)["weight_decays"] == "0,1e-4"
    assert args_from_env(lr_find_cmd, env)[-2:] == ["--weight-decays", "0,1e-4"]


# ---- 3. errors name variables, not flags ----------------------------------------------------
def test_errors_name_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # should a check fail to stop it, nothing lands in the checkout
    monkeypatch.setenv("MLFLOW_TRACKING_URI", str(tmp_path / "mlruns"))
    with pytest.raises(InputError, match="DATA") as missing:
        parse(train_cmd, {"MODEL": "Deep+_mobile", "LOSS": "CrossDice"})
    assert "--data" not in str(missing.value)
    with pytest.raises(InputError, match="EPOCHS") as bad:
        parse(train_cmd, {"DATA": "/x", "MODEL": "Deep+_mobile", "LOSS": "X", "EPOCHS": "x"})
    assert "--epochs" not in str(bad.value)
    env = {"DATA": str(tmp_path / "none"), "MODEL": "Deep_nope", "LOSS": "CrossDice"}
    with pytest.raises(InputError, match=r"^MODEL:"):
        run_job("train", env, echo=print)
    env = {**env, "MODEL": "Deep+_mobile", "MAX_RESTARTS": "abc"}
    with pytest.raises(InputError, match="MAX_RESTARTS") as restarts:
        run_job("train", env, echo=print)
    assert "abc" in str(restarts.value)
    assert not list(tmp_path.iterdir())


def test_max_restarts() -> None:
    assert max_restarts({}) == 20 and max_restarts({"MAX_RESTARTS": ""}) == 20
    assert max_restarts({"MAX_RESTARTS": "0"}) == 0
    for bad in ("-1", "2.5", "x"):
        with pytest.raises(InputError, match="MAX_RESTARTS"):
            max_restarts({"MAX_RESTARTS": bad})


def test_in_variables_rewrites_whole_flags_only() -> None:
    message = "--lr-min: bad; --lr: bad; --no-augment and --batch-size; --lr-maximum"
    assert in_variables(train_cmd, message) == (
        "LR_MIN: bad; LR: bad; AUGMENT and BATCH_SIZE; --lr-maximum"
    )


def test_every_task_has_a_command() -> None:
    assert {command_for(task).name for task in TASKS} == {"train", "lr-find", "evaluate"}


# ---- 4. `recseg job` as a process, outside Grid Engine -------------------------------------
@pytest.mark.parametrize(
    ("args", "given", "needles"),
    [
        (["job", "train"], {"MODEL": "Deep+_mobile", "LOSS": "CrossDice"}, ["DATA"]),
        (["job", "train"], {"DATA": "/x/store", "MODEL": "Deep_nope", "LOSS": "CrossDice"},
         ["MODEL:", "Deep_nope"]),
        (["job", "nonsense"], {}, ["nonsense"]),
    ],
    ids=["missing-data", "unknown-model", "unknown-task"],
)  # fmt: skip
def test_job_errors_are_one_line(
    args: list[str], given: dict[str, str], needles: list[str], tmp_path: Path
) -> None:
    env = {**blank_train_variables(**given), "MLFLOW_TRACKING_URI": str(tmp_path / "mlruns")}
    result = run_recseg(*args, cwd=tmp_path, env=env)
    line = one_error_line(result, *needles)
    assert "--data" not in line and "--model" not in line
    assert result.stdout == ""
    assert not list(tmp_path.iterdir())


# ---- 5. the Grid Engine job ------------------------------------------------------------------
QSTAT_XML = """<?xml version='1.0'?>
<detailed_job_info  xmlns:xsd="http://arc.liv.ac.uk/repos/darcs/sge/source/dist/util/resources/schemas/qstat/detailed_job_info.xsd">
  <djob_info>
    <element>
      <JB_job_number>7</JB_job_number>
      <JB_env_list>
        <job_sublist>
          <VA_variable>__SGE_PREFIX__O_HOME</VA_variable>
          <VA_value>/root</VA_value>
        </job_sublist>
        <job_sublist>
          <VA_variable>TERM</VA_variable>
        </job_sublist>
        <job_sublist>
          <VA_variable>DATA</VA_variable>
          <VA_value>/x/store</VA_value>
        </job_sublist>
      </JB_env_list>
      <JB_jid_successor_list>
        <ulong_sublist>
          <JRE_job_number>9</JRE_job_number>
        </ulong_sublist>
      </JB_jid_successor_list>
    </element>
  </djob_info>
</detailed_job_info>
"""


def test_sge_job_current() -> None:
    assert SgeJob.current({}) is None
    assert SgeJob.current({"JOB_ID": "12"}) is None
    assert SgeJob.current({"SGE_ROOT": "/opt/sge"}) is None
    assert SgeJob.current({"JOB_ID": "", "SGE_ROOT": "/opt/sge"}) is None
    grid = {"JOB_ID": "12", "SGE_ROOT": "/opt/sge"}
    assert SgeJob.current(grid) == SgeJob("12", 0)
    assert SgeJob.current({**grid, RESTARTS: ""}) == SgeJob("12", 0)
    assert SgeJob.current({**grid, RESTARTS: "3"}) == SgeJob("12", 3)
    for bad in ("x", "1.5"):
        with pytest.raises(InputError, match=RESTARTS):
            SgeJob.current({**grid, RESTARTS: bad})


def test_qstat_xml() -> None:
    info = ET.fromstring(QSTAT_XML)
    assert job_variables(info) == {"DATA": "/x/store"}
    assert job_numbers(info, "JB_jid_successor_list") == ["9"]
    assert job_numbers(info, "JB_jid_predecessor_list") == []


def test_variables_arg() -> None:
    assert variables_arg({"DATA": "/x", "WEIGHT_DECAYS": "0%2C1e-4"}) == (
        "DATA=/x,WEIGHT_DECAYS=0%2C1e-4"
    )
    with pytest.raises(InputError, match="WEIGHT_DECAYS"):
        variables_arg({"DATA": "/x", "WEIGHT_DECAYS": "0,1e-4"})


# ---- 7. the job scripts ----------------------------------------------------------------------
def seconds(text: str) -> int:
    h, m, s = (int(p) for p in text.split(":"))
    return 3600 * h + 60 * m + s


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_job_script(script: Path) -> None:
    check = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    text = script.read_text()
    lines = text.splitlines()
    for directive in ("#$ -cwd", "#$ -j y", "#$ -notify"):
        assert directive in lines, directive
    assert any(re.match(r"#\$ -o \S+", line) for line in lines)
    assert any(line.startswith(MARKER) for line in lines)
    task = next(line for line in lines if line.startswith("TASK="))
    assert task.split("=", 1)[1] in TASKS
    assert "/net/" not in text and "cippy" not in text.lower()


def body(script: Path) -> list[str]:
    lines = script.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(MARKER))
    return lines[start:]


def test_job_script_bodies_are_identical() -> None:
    first = body(SCRIPTS[0])
    assert len(first) > 10
    for script in SCRIPTS[1:]:
        assert body(script) == first, script.name


def test_train_script_leaves_time_to_checkpoint() -> None:
    line = next(x for x in SCRIPTS[0].read_text().splitlines() if x.startswith("#$ -l "))
    limits = dict(item.split("=") for item in line.split()[2].split(","))
    assert seconds(limits["h_rt"]) >= seconds(limits["s_rt"]) + 91, limits


# ---- 8. soft and hard stop requests ----------------------------------------------------------
def test_a_soft_stop_waits_for_one_step() -> None:
    with StopRequest() as stop:
        assert not stop.due(0) and not stop.due(5)
        os.kill(os.getpid(), signal.SIGUSR1)
        assert stop.requested and stop.signal == signal.SIGUSR1
        assert not stop.due(0) and stop.due(1)
    for hard in (signal.SIGUSR2, signal.SIGTERM):
        with StopRequest() as stop:
            os.kill(os.getpid(), hard)
            assert stop.signal == hard and stop.due(0)
    code = StopRequest()
    code.request("tests")
    assert code.due(0)


def tiny_trainer(store: Path, stop: StopRequest) -> Trainer:
    cfg = train_config(store, model="Deep+_mobile", epochs=1, batch_size=2, seq_len=3,
                       num_workers=0, system_metrics=False, device="cpu")  # fmt: skip
    setup = build_setup(cfg, warn=lambda m: None)
    return Trainer(
        setup.model, setup.loss_fn, setup.optimizer, setup.scheduler,
        setup.train_loader, setup.val_loader, epochs=cfg.epochs, eval_every=cfg.eval_every,
        best_metric=cfg.best_metric, device=setup.device, amp=False,
        stop=stop, budget=TimeBudget(0),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("signum", "steps"), [(signal.SIGUSR1, 1), (signal.SIGUSR2, 0)], ids=["soft", "hard"]
)
def test_a_trainer_stops_after_the_steps_a_signal_allows(
    store: Path, signum: int, steps: int
) -> None:
    with StopRequest() as stop:
        trainer = tiny_trainer(store, stop)
        assert len(trainer.train_loader) > 1
        os.kill(os.getpid(), signum)
        stops: list[str] = []
        done = trainer.fit(lambda record: None, stops.append)
    assert done is False
    assert trainer.progress.step == steps
    assert stops == [f"signal {signal.Signals(signum).name}"]


def test_a_stopped_lr_find_job_ends_its_runs_failed(
    store: Path, tmp_path: Path, mlflow_server: str
) -> None:
    """lr-find cannot checkpoint: the warning before SIGKILL ends its runs FAILED, not RUNNING."""
    import sys
    import time

    from mlflow.tracking import MlflowClient

    env = {**os.environ, **ONE_THREAD, "MLFLOW_TRACKING_URI": mlflow_server, "DATA": str(store),
           "MODEL": "Deep+_mobile", "LOSS": "CrossDice", "NUM_ITER": "100000", "BATCH_SIZE": "2",
           "SEQ_LEN": "2", "NUM_WORKERS": "0", "EXPERIMENT": "lr-stopped"}  # fmt: skip
    cmd = [sys.executable, "-m", "recseg", "job", "lr-find"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    client = MlflowClient(mlflow_server)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        exp = client.get_experiment_by_name("lr-stopped")
        if exp and client.search_runs([exp.experiment_id]):
            break
        time.sleep(0.5)
    time.sleep(2)  # into the range test
    os.kill(proc.pid, signal.SIGUSR1)  # a suspension warning: ignored
    time.sleep(0.5)
    assert proc.poll() is None
    os.kill(proc.pid, signal.SIGUSR2)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err[-2000:]
    assert "lr-find stopped by signal SIGUSR2" in out
    runs = client.search_runs([client.get_experiment_by_name("lr-stopped").experiment_id])
    assert runs and all(r.info.status == "FAILED" for r in runs), [r.info.status for r in runs]


def test_local_sge_never_touches_a_cluster_cell(tmp_path: Path) -> None:
    """grid/local-sge.sh refuses a cell whose qmaster is another machine (a real cluster)."""
    common = tmp_path / "default" / "common"
    common.mkdir(parents=True)
    (common / "act_qmaster").write_text("clusterhead.example.org\n")
    env = {**os.environ, "SGE_ROOT": str(tmp_path), "SGE_CELL": "default"}
    script = str(ROOT / "grid" / "local-sge.sh")
    done = subprocess.run(["bash", script, "stop"], env=env, capture_output=True, text=True)
    assert done.returncode == 2 and "clusterhead.example.org" in done.stderr, done.stderr
    assert (common / "act_qmaster").read_text() == "clusterhead.example.org\n"
    usage = subprocess.run(["bash", script, "restart"], capture_output=True, text=True)
    assert usage.returncode == 2 and "start|stop|status" in usage.stderr


def test_warning_signals_never_kill_a_train_job(store: Path, tmp_path: Path, mlflow_server: str):
    """SIGUSR1 sent again and again to the job's process group (as Grid Engine signals the whole
    group) from start-up to exit: the job stops after one step with exit 99 (outside Grid
    Engine nothing requeues) and never dies of the signal's default action."""
    import sys
    import threading

    env = {**blank_train_variables(DATA=str(store), MODEL="Deep+_mobile", LOSS="CrossDice",
                                   EPOCHS="1", BATCH_SIZE="2", SEQ_LEN="3", NUM_WORKERS="0",
                                   SYSTEM_METRICS="false", EXPERIMENT="usr1-storm"),
           "RECSEG_ENV": sys.prefix, "MLFLOW_TRACKING_URI": mlflow_server}  # fmt: skip
    proc = subprocess.Popen(["bash", str(ROOT / "grid" / "train.sge")], cwd=tmp_path,
                            env={**os.environ, **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    done = threading.Event()

    def storm() -> None:
        while not done.wait(0.05):
            try:
                os.killpg(proc.pid, signal.SIGUSR1)
            except ProcessLookupError:
                return

    thread = threading.Thread(target=storm)
    thread.start()
    try:
        out, err = proc.communicate(timeout=300)
    finally:
        done.set()
        thread.join()
    assert proc.returncode == 99, (proc.returncode, err[-2000:])
    assert "stopped: signal SIGUSR1 in epoch 1, step 1" in out, out
