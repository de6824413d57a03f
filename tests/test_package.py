"""What a newcomer and a first deploy meet: the package as it is built (sdist and
wheel, from a copy of this checkout), its version written once, the install lines
in the docs naming our distribution, and a gateway started without API keys saying so."""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from click.testing import CliRunner

import taskq
from taskq.cli import main
from taskq.gateway import create_app
from tests.conftest import ROOT

pytestmark = pytest.mark.slow  # builds a wheel and an sdist

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
# What is never part of a checkout's source: caches, builds, the virtualenv, run data.
NOT_SOURCE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "var",
    "build",
    "dist",
    "__pycache__",
    "*.pyc",
    "*.egg-info",
    ".mypy_cache",
    ".pytest_cache",
    "appendonlydir",
)


def package_files() -> set[str]:
    """Every file of the taskq package in this checkout, as a path inside the wheel."""
    return {
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "taskq").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(wheel, sdist), built as a release is: the sdist from a copy of the checkout,
    then the wheel from the sdist."""
    tmp = tmp_path_factory.mktemp("build")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=NOT_SOURCE)
    done = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(tmp / "dist"), str(src)],
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (wheel,) = (tmp / "dist").glob("*.whl")
    (sdist,) = (tmp / "dist").glob("*.tar.gz")
    return wheel, sdist


def test_the_wheel_holds_every_file_of_the_package_and_no_other_top_level_package(built):
    wheel, _ = built
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        dist_info = f"taskq_server-{PROJECT['version']}.dist-info"
        fields = dict(
            line.split(": ", 1) for line in zf.read(f"{dist_info}/METADATA").decode().splitlines() if ": " in line
        )
        entry_points = zf.read(f"{dist_info}/entry_points.txt").decode()
    # Every module, Lua script, template, static file and py.typed: nothing left behind
    missing = package_files() - names
    assert not missing, f"files of taskq/ not in the wheel: {sorted(missing)}"
    assert "taskq/py.typed" in names and any(n.startswith("taskq/scripts/") and n.endswith(".lua") for n in names)
    # Nothing but taskq and its metadata: no `workers` (the example app), tests or bench
    assert {n.split("/", 1)[0] for n in names} == {"taskq", dist_info}
    assert fields["Name"] == "taskq-server" and fields["Version"] == PROJECT["version"]
    assert re.search(r"^taskq = taskq\.cli:main$", entry_points, re.M)


def test_the_sdist_builds_the_package_and_carries_the_changelog(built):
    _, sdist = built
    with tarfile.open(sdist) as tf:
        names = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
    assert {"pyproject.toml", "README.md", "CHANGELOG.md", "taskq/py.typed"} <= names
    assert package_files() <= names
    assert not {n for n in names if n.split("/", 1)[0] in {"workers", "tests", "bench"}}


def test_the_version_is_written_once_and_taskq_version_prints_it():
    version = PROJECT["version"]
    assert re.fullmatch(r"0\.\d+\.\d+", version)  # 0.x until the API is declared stable
    assert metadata.version("taskq-server") == taskq.__version__ == version
    for flag in ("--version", "-V"):
        r = CliRunner().invoke(main, [flag])
        assert r.exit_code == 0 and r.stdout.strip() == f"taskq {version}"
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert f"## {version}" in changelog  # the released version has its entry


def test_every_install_line_in_the_docs_names_our_distribution():
    """`taskq` on PyPI is another project: `pip install taskq` installs someone else's code."""
    pages = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
    wrong = []
    for page in pages:
        for number, line in enumerate(page.read_text().splitlines(), 1):
            for spec in re.findall(r"pip install((?:\s+-\S+)*\s+['\"]?[\w.\[\],-]+)", line):
                name = re.split(r"[\[=<>~!;@ ]", spec.split()[-1].strip("'\""), maxsplit=1)[0]
                if name.lower().replace("_", "-") == "taskq":
                    wrong.append(f"{page.name}:{number}: {line.strip()}")
    assert not wrong, wrong


def test_a_gateway_with_no_api_keys_says_so_once(settings, caplog):
    caplog.set_level(logging.WARNING, logger="taskq.gateway")
    app = create_app(settings.replace(api_keys=()))
    keyless = [r for r in caplog.records if r.name == "taskq.gateway"]
    assert len(keyless) == 1 and keyless[0].levelno == logging.WARNING
    assert "TASKQ_API_KEYS" in keyless[0].getMessage() and "401" in keyless[0].getMessage()
    assert app.test_client().get("/v1/tasks/runs", headers={"x-api-key": "anything"}).status_code == 401
    app.extensions["taskq"].close()
    caplog.clear()
    create_app(settings).extensions["taskq"].close()
    assert not [r for r in caplog.records if r.name == "taskq.gateway"]
