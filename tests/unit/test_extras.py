"""The optional extras: declared in pyproject.toml as voxfleet/extras.py says, off the default path,
and named in the error when one is missing."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from voxfleet.exceptions import ConfigError, ExtraNotInstalled
from voxfleet.extras import EXTRAS, require_extra

ROOT = Path(__file__).resolve().parents[2]


def test_every_extra_is_declared_and_the_tests_install_them():
    optional = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for extra, module in EXTRAS.items():
        assert any(req.startswith(module) for req in optional[extra]), (extra, optional[extra])
    (own,) = [req for req in optional["test"] if req.startswith("voxfleet[")]
    assert set(own.removeprefix("voxfleet[").removesuffix("]").split(",")) == set(EXTRAS)


def test_an_installed_extra_passes_and_a_missing_one_names_the_extra_to_install():
    require_extra("ray", 'backend = "ray"')  # the tests run with every extra installed
    require_extra("plots", "--plot")
    error = ExtraNotInstalled('backend = "ray"', "ray", "ray")
    assert isinstance(error, ConfigError)
    assert str(error) == ("backend = \"ray\" needs ray, which is not installed: install the 'ray' extra "
                          "(pip install 'voxfleet[ray]'; from a clone: pip install -e '.[ray]')")


def test_the_default_path_imports_neither_ray_nor_matplotlib():
    code = ("import sys, voxfleet.cli, voxfleet.control.server, voxfleet.sim.cli, voxfleet.bench.harness;"
            "print(sorted(m for m in ('ray', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"
