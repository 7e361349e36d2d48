"""The prebuilt JupyterLab extension (``%%bpf`` cells edited as C) ships inside the
package: its built files are package data and data files installed where JupyterLab
looks (share/jupyter/labextensions/bpfmagic-cells), its package.json names the
plugin and the file JupyterLab loads, and the built code is the current source's.
No browser and no Node: ``make browser`` checks it in JupyterLab."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile

import pytest

import bpfmagic

from ..paths import REPO

BUILT = os.path.join(os.path.dirname(bpfmagic.__file__), "labextension")
SOURCE = os.path.join(REPO, "labextension")
NAME = "bpfmagic-cells"
INSTALLED_AT = f"share/jupyter/labextensions/{NAME}"


def built_files() -> list[str]:
    """Every file of the built extension, relative to bpfmagic/labextension."""
    out = []
    for folder, _dirs, files in os.walk(BUILT):
        out += [os.path.relpath(os.path.join(folder, f), BUILT) for f in files]
    return sorted(out)


def pyproject() -> dict:
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)


def test_built_package_json_names_the_extension_and_the_file_jupyterlab_loads():
    with open(os.path.join(BUILT, "package.json")) as f:
        meta = json.load(f)
    assert meta["name"] == NAME
    assert meta["jupyterlab"]["extension"] is True
    entry = meta["jupyterlab"]["_build"]["load"]
    assert re.fullmatch(r"static/remoteEntry\.[0-9a-f]+\.js", entry), entry
    assert os.path.isfile(os.path.join(BUILT, entry))
    with open(os.path.join(SOURCE, "package.json")) as f:
        source = json.load(f)
    assert (source["name"], source["version"]) == (meta["name"], meta["version"]), "rebuild: see labextension/README.md"
    assert os.path.normpath(os.path.join(SOURCE, source["jupyterlab"]["outputDir"])) == BUILT


def test_built_code_is_the_current_sources():
    """The plugin id and the C mimetype of src/index.ts are in the built bundle (a stale build
    after a change of either fails here); the plugin id is JupyterLab's NAME:plugin."""
    with open(os.path.join(SOURCE, "src", "index.ts")) as f:
        source = f.read()
    plugin_id = re.search(r"PLUGIN_ID = '([^']+)'", source).group(1)
    mimetype = re.search(r"C_MIMETYPE = '([^']+)'", source).group(1)
    assert plugin_id == f"{NAME}:plugin"
    bundle = ""
    for rel in built_files():
        if rel.endswith(".js"):
            with open(os.path.join(BUILT, rel)) as f:
                bundle += f.read()
    assert plugin_id in bundle and mimetype in bundle, "the built extension is older than labextension/src: rebuild it"


def test_built_output_is_small_and_has_no_node_modules():
    files = built_files()
    assert not any("node_modules" in f for f in files)
    assert sum(os.path.getsize(os.path.join(BUILT, f)) for f in files) < 100_000


def test_pyproject_ships_every_built_file_as_package_data_and_as_jupyter_data():
    tool = pyproject()["tool"]["setuptools"]
    package_globs = tool["package-data"]["bpfmagic"]
    data_files = tool["data-files"]
    for rel in built_files():
        assert any(fnmatch.fnmatch(f"labextension/{rel}", g) for g in package_globs), f"{rel} is not package data"
        destination = os.path.dirname(f"{INSTALLED_AT}/{rel}")
        globs = data_files.get(destination, [])
        assert any(fnmatch.fnmatch(f"bpfmagic/labextension/{rel}", g) for g in globs), f"{rel} is not installed to {destination}"


def _can_build_wheels_offline() -> bool:
    try:
        import setuptools
    except ImportError:
        return False
    major, minor = (int(x) for x in setuptools.__version__.split(".")[:2])
    if (major, minor) >= (70, 1):  # bdist_wheel moved into setuptools
        return True
    try:
        import wheel  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not _can_build_wheels_offline(), reason="no setuptools able to build a wheel without downloading one")
def test_wheel_installs_the_extension_where_jupyterlab_finds_it(tmp_path):
    """A wheel built from the checkout holds the built files twice: in the package and as
    data installed under {prefix}/share/jupyter/labextensions/bpfmagic-cells."""
    project = tmp_path / "project"  # a copy: setuptools writes build/ and *.egg-info beside pyproject.toml
    project.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(os.path.join(REPO, name), project / name)
    shutil.copytree(os.path.dirname(bpfmagic.__file__), project / "bpfmagic", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(project)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    (wheel,) = (tmp_path / "dist").glob("bpfmagic-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
    data = next(n.split("/data/")[0] for n in names if ".data/data/" in n)
    for rel in built_files():
        assert f"bpfmagic/labextension/{rel}" in names
        assert f"{data}/data/{INSTALLED_AT}/{rel}" in names
