"""Project files agree with the code: MLproject, conda.yaml, constraints, entry points."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

from recseg import config, mlproject

ROOT = Path(__file__).resolve().parents[1]


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^\s*-?\s*([A-Za-z0-9_.\-]+)==([^\s#]+)", line)
        if match:
            pins[match[1].lower().replace("_", "-")] = match[2]
    return pins


def test_mlproject_is_rendered_from_the_configs() -> None:
    assert (ROOT / "MLproject").read_text() == mlproject.render(), "run `make mlproject`"


def test_mlproject_parameters_match_cli_options() -> None:
    doc = yaml.safe_load((ROOT / "MLproject").read_text())
    for name, (_module, cls) in mlproject.ENTRY_POINTS.items():
        entry = doc["entry_points"][name]
        fields = [f.name for f, _ in config.fields(cls)]
        assert list(entry["parameters"]) == fields
        for field in fields:
            assert f"{config.flag(field)} {{{field}}}" in entry["command"]


def test_entry_point_scripts_exist_and_answer_help() -> None:
    for module, cls in mlproject.ENTRY_POINTS.values():
        result = subprocess.run(
            [sys.executable, "-m", module, "--help"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        for f, _ in config.fields(cls):
            assert config.flag(f.name) in result.stdout, (module, f.name)


def test_conda_env_pins_the_same_versions_as_constraints() -> None:
    constraints = _pins(ROOT / "constraints.txt")
    conda = _pins(ROOT / "conda.yaml")
    assert conda, "conda.yaml pins nothing"
    for name, version in conda.items():
        assert constraints.get(name) == version, name
    env = yaml.safe_load((ROOT / "conda.yaml").read_text())
    assert "python=3.11" in env["dependencies"]


def test_every_dependency_is_pinned() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    optional = [dep for deps in extras.values() for dep in deps if not dep.startswith("recseg[")]
    constraints = _pins(ROOT / "constraints.txt")
    conda = _pins(ROOT / "conda.yaml")
    for dep in project["dependencies"] + optional:
        name = re.split(r"[<>=!~\[ ]", dep)[0].lower()
        assert name in constraints, f"{name} missing from constraints.txt"
        if dep not in optional:
            assert name in conda, f"{name} missing from conda.yaml"
    # an extra that names recseg's own extras (dev = ... + recseg[cluster]) names real ones
    for dep in (d for deps in extras.values() for d in deps if d.startswith("recseg[")):
        assert set(dep[len("recseg[") : -1].split(",")) <= set(extras), dep
    assert constraints["torch"] == "2.14.1" and constraints["torchvision"] == "0.29.1"


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    ci = [
        line
        for line in (ROOT / ".ci/run").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert ci[-1] == "make test"


def test_mlflow_run_describe_entry_point(tmp_path: Path) -> None:
    """A real `mlflow run` of the MLproject in this installed environment."""
    bin_dir = str(Path(sys.executable).parent)  # as with an activated environment
    env = {
        **os.environ,
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "run",
        str(ROOT),
        "-e",
        "describe",
        "--env-manager",
        "local",
        "-P",
        "model=Deep_mobile_gruV1",
        "-P",
        "size=48x64",
        "-P",
        "seq_len=2",
        "--experiment-name",
        "describe-test",
    ]
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "5,221,062 total" in result.stdout
    import mlflow

    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    runs = mlflow.search_runs(experiment_names=["describe-test"], output_format="list")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.params["model"] == "Deep_mobile_gruV1"


def test_readme_python_examples_run() -> None:
    """The README's Python blocks are executed, so they stay in step with the code."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})


def test_readme_lists_every_command() -> None:
    import click

    from recseg.cli import cli

    readme = (ROOT / "README.md").read_text()
    names = cli.list_commands(click.Context(cli))
    assert {"train", "runs", "preprocess"} <= set(names)
    for name in names:
        assert f"recseg {name}" in readme, name
