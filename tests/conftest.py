"""Shared test helpers."""

from __future__ import annotations

import os
import sys

import pytest
import torch

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def randomize_norms(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every BatchNorm non-trivial statistics so eval-mode outputs are O(1), not ~0, and
    every norm (BatchNorm, GroupNorm) non-trivial affine weights."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
        if isinstance(m, torch.nn.BatchNorm2d | torch.nn.GroupNorm):
            n = m.weight.numel()
            with torch.no_grad():
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.1)
    return model


def pytest_configure(config: pytest.Config) -> None:
    """Split the cores between the xdist workers: each test process, and every recseg process
    it starts, gets cores / workers intra-op threads unless OMP_NUM_THREADS says otherwise.
    Two workers each running two OpenMP threads on two cores spin-wait on each other: the
    model tests took 483 s so and 128 s with one thread each."""
    if hasattr(config, "workerinput"):  # an xdist worker
        workers = int(config.workerinput["workercount"])
    elif config.pluginmanager.hasplugin("xdist") and config.getoption("numprocesses"):
        return  # xdist's controller runs no tests; its workers inherit its environment
    else:
        workers = 1
    threads = os.environ.get("OMP_NUM_THREADS") or str(
        max(1, len(os.sched_getaffinity(0)) // workers)
    )
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, threads)
    torch.set_num_threads(int(threads))


# The longest files (measured on 2 cores with `make test PYTEST_ARGS+=--durations=0`), run
# first so that the two workers finish together instead of one waiting on a long last file.
LONGEST_FIRST = (
    "test_grid_sge.py", "test_demo.py", "test_kill_storm.py", "test_benchmarks.py",
    "test_models.py", "test_train_run.py", "test_cluster.py", "test_outage.py",
    "test_distributed.py", "test_evaluate.py",
)  # fmt: skip


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Longest files first (a stable sort: the order inside each file is kept); ``make test``
    passes ``--no-loadscope-reorder`` so that xdist hands files out in this order."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of tiny inputs: they gain nothing from more threads on
    a shared machine (``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _no_experiment_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """``mlflow.set_experiment`` exports MLFLOW_EXPERIMENT_ID; an in-process run in one test
    must not pick the experiment of a later test's subprocess (``mlflow run`` refuses both)."""
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)


@pytest.fixture(autouse=True)
def _tracking_uri_restored(monkeypatch: pytest.MonkeyPatch):
    """A test that calls ``mlflow.set_tracking_uri`` must not point later tests (in the same
    worker, in whatever order) at its server: MLflow's global URI outranks the environment.
    After each test, the global URI and MLFLOW_TRACKING_URI (which ``set_tracking_uri`` sets
    and clears) are put back as they were before it, so a module fixture's URI stays. Runs
    before monkeypatch undoes the test's own changes."""
    before = _global_tracking_uri(), os.environ.get("MLFLOW_TRACKING_URI")
    yield
    utils = sys.modules.get(TRACKING_UTILS)
    if utils is not None:
        utils._tracking_uri = before[0]
    if before[1] is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before[1]


TRACKING_UTILS = "mlflow.tracking._tracking_service.utils"


def _global_tracking_uri() -> str | None:
    utils = sys.modules.get(TRACKING_UTILS)
    return None if utils is None else utils._tracking_uri


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    """A real ``mlflow server`` on 127.0.0.1 (sqlite backend, local artifacts); yields its URI."""
    from tests.servers import Server

    server = Server(tmp_path_factory.mktemp("mlflow-server")).start()
    try:
        yield server.uri
    finally:
        server.stop()


@pytest.fixture(scope="session")
def train_store(tmp_path_factory: pytest.TempPathFactory):
    """The tiny clip store of the tests that run ``recseg train`` in subprocesses."""
    from tests.stores import make_store

    return make_store(tmp_path_factory.mktemp("run-store"))


@pytest.fixture(scope="session")
def train_reference(train_store, mlflow_server: str, tmp_path_factory: pytest.TempPathFactory):
    """An uninterrupted ``recseg train`` run on ``train_store``: (its folder, its metric
    history, its final weights); interrupted runs must end the same."""
    from tests.trainruns import reference_run

    return reference_run(train_store, mlflow_server, tmp_path_factory.mktemp("reference"))


_COUNTS: dict[str, int] = {}


@pytest.fixture
def tally():
    """``tally(name, n)`` adds ``n`` to a count that the end of the run prints (kills survived,
    cases tried, metrics verified...), so CI logs show how hard the reliability tests tried."""

    def add(name: str, n: int = 1) -> None:
        _COUNTS[name] = _COUNTS.get(name, 0) + n

    return add


def pytest_sessionfinish(session: pytest.Session) -> None:
    """An xdist worker hands its counts to the controller (``pytest_testnodedown``)."""
    output = getattr(session.config, "workeroutput", None)
    if output is not None:
        output["recseg_counts"] = dict(_COUNTS)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:
    for name, n in getattr(node, "workeroutput", {}).get("recseg_counts", {}).items():
        _COUNTS[name] = _COUNTS.get(name, 0) + n


def pytest_terminal_summary(terminalreporter) -> None:
    if _COUNTS:
        terminalreporter.section("reliability counts")
        for name, n in sorted(_COUNTS.items()):
            terminalreporter.write_line(f"{name}: {n}")
