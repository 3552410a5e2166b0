"""Entry points and package data: every command is a console script and a thin scripts/*.py shim around the same
stylegan_rlo.cli main, and the demo's source model ships as package data. The slow test installs the project
non-editable into a fresh venv and runs each command's --help and the demo's data step from there."""

from __future__ import annotations

import ast
import configparser
import fnmatch
import glob
import importlib
import os
import shutil
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = configparser.ConfigParser()
CONFIG.read(os.path.join(REPO, "setup.cfg"))
CONSOLE_SCRIPTS = dict(
    (name.strip(), target.strip()) for name, target in
    (line.split("=") for line in CONFIG["options.entry_points"]["console_scripts"].strip().splitlines()))
SCRIPTS = sorted(glob.glob(os.path.join(REPO, "scripts", "*.py")))


def load_main(target: str) -> click.Command:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def shim_target(path: str) -> str:
    """'module:main' that a scripts/*.py shim imports (it must import exactly one main and nothing else)."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    imports = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    assert len(imports) == 1 and isinstance(imports[0], ast.ImportFrom), path
    assert [alias.name for alias in imports[0].names] == ["main"], path
    return f"{imports[0].module}:main"


def test_every_script_is_a_guarded_shim_of_a_console_script():
    assert len(SCRIPTS) == len(CONSOLE_SCRIPTS) == 13
    targets = {shim_target(path) for path in SCRIPTS}
    assert targets == set(CONSOLE_SCRIPTS.values())
    for path in SCRIPTS:
        tree = ast.parse(open(path, encoding="utf-8").read())
        guards = [node for node in tree.body if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test)]
        assert len(guards) == 1 and len(tree.body) == 3, f"{path}: docstring, one import, one main guard"
    assert all(name.startswith("stylegan-rlo-") for name in CONSOLE_SCRIPTS)


@pytest.mark.parametrize("name", sorted(CONSOLE_SCRIPTS))
def test_console_script_help(name):
    command = load_main(CONSOLE_SCRIPTS[name])
    assert isinstance(command, click.Command)
    result = CliRunner().invoke(command, ["--help"])
    assert result.exit_code == 0 and "Usage:" in result.output and "-h, --help" in result.output, result.output


def test_demo_source_model_is_package_data():
    from stylegan_rlo.experiments import demo
    patterns = CONFIG["options.package_data"]["stylegan_rlo.assets"].split(",")
    package_dir = os.path.join(REPO, "stylegan_rlo", "assets")
    shipped = {os.path.abspath(path) for pattern in patterns
               for path in glob.glob(os.path.join(package_dir, pattern.strip()))}
    assert os.path.abspath(demo.DEMO_NETWORK) in shipped
    assert os.path.dirname(os.path.abspath(demo.DEMO_NETWORK)).startswith(os.path.join(REPO, "stylegan_rlo") + os.sep)


@pytest.mark.slow
def test_fresh_venv_install_runs_every_command(tmp_path):
    """`pip install .` (not editable) into a fresh venv; from outside the checkout, every console script answers
    --help and the demo builds its data (the cached Animal-MNIST wheel is reused when present, else pip fetches it)."""
    src = tmp_path / "src"
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    for rel in files:  # a copy: pip's build must not leave build/ or *.egg-info in the checkout
        os.makedirs(src / os.path.dirname(rel), exist_ok=True)
        shutil.copy2(os.path.join(REPO, rel), src / rel)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["DNNLIB_CACHE_DIR"] = str(tmp_path / "cache")
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(src)], check=True, env=env,
                   cwd=tmp_path)
    for name in sorted(CONSOLE_SCRIPTS):
        result = subprocess.run([str(venv / "bin" / name), "--help"], capture_output=True, text=True, env=env,
                                cwd=tmp_path)
        assert result.returncode == 0 and "Usage:" in result.stdout, (name, result.stderr[-2000:])
    cached_wheel = glob.glob(os.path.join(REPO, ".cache", "demo-wheel", "*.whl"))
    if cached_wheel:
        wheel_dir = tmp_path / "cache" / "stylegan_rlo" / "demo-wheel"
        wheel_dir.mkdir(parents=True)
        shutil.copy2(cached_wheel[0], wheel_dir)
    result = subprocess.run([str(venv / "bin" / "stylegan-rlo-demo"), "--data-only"], capture_output=True, text=True,
                            env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    for name in ("dogs.zip", "dogs-heldout.zip"):
        assert os.path.isfile(tmp_path / "cache" / "stylegan_rlo" / "demo-data" / name)
    probe = ("from stylegan_rlo.experiments import demo; from stylegan_rlo.checkpoints import pickles; "
             "print(demo.DEMO_NETWORK); "
             "pickles.load_network_pkl(demo.DEMO_NETWORK)")
    result = subprocess.run([str(venv / "bin" / "python"), "-c", probe], capture_output=True, text=True, env=env,
                            cwd=tmp_path)
    assert result.returncode == 0 and "site-packages" in result.stdout, result.stderr[-2000:]


def test_every_package_folder_and_data_file_is_listed():
    """setup.cfg's package search finds every folder of the tree (so setuptools warns of no importable but unlisted
    package), and every non-Python file in a stylegan_rlo folder is package data."""
    from setuptools import find_namespace_packages
    find = CONFIG["options.packages.find"]
    found = set(find_namespace_packages(REPO, include=find["include"].split(), exclude=find["exclude"].split()))
    folders = {os.path.relpath(root, REPO).replace(os.sep, ".") for top in ("stylegan_rlo", "torch_utils", "dnnlib")
               for root, dirs, _ in os.walk(os.path.join(REPO, top)) if "__pycache__" not in root}
    assert folders == found
    data = {package: [p.strip() for p in patterns.split(",")]
            for package, patterns in CONFIG["options.package_data"].items()}
    for root, _, files in os.walk(os.path.join(REPO, "stylegan_rlo")):
        package = os.path.relpath(root, REPO).replace(os.sep, ".")
        for name in files:
            if not name.endswith((".py", ".pyc", ".md")):
                assert any(fnmatch.fnmatch(name, p) for p in data.get(package, [])), \
                    f"{package}/{name} is not package data in setup.cfg"
