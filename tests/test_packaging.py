"""The pins live in constraints.txt; environment.yml and pyproject.toml must follow them."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")


def _pins_from_lines(lines) -> dict[str, str]:
    pins = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
        assert match, f"not an exact pin: {line!r}"
        name = canonicalize_name(match.group(1))
        assert name not in pins, f"{name} pinned twice"
        pins[name] = match.group(2)
    return pins


def constraints() -> dict[str, str]:
    return _pins_from_lines((ROOT / "constraints.txt").read_text().splitlines())


def environment_pins() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    return _pins_from_lines(pip_section)


def pyproject_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        reqs += extra
    return [Requirement(r) for r in reqs]


def test_environment_yml_pins_equal_constraints():
    assert environment_pins() == constraints()


def test_every_pyproject_dependency_is_pinned_and_the_pin_satisfies_its_range():
    pins = constraints()
    for req in pyproject_requirements():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is a dependency but has no pin in constraints.txt"
        assert req.specifier.contains(Version(pins[name]), prereleases=True), (
            f"constraints.txt pins {req.name}=={pins[name]}, outside pyproject's {req.specifier}")


def test_torch_and_jupyter_book_pins_are_the_required_ones():
    pins = constraints()
    assert pins["torch"] == "2.13.0"  # the CPU build on local disk; anything else pulls CUDA
    assert Version(pins["jupyter-book"]) < Version("2")  # JB 2 fetches its theme at build time


def test_installed_versions_match_the_pins():
    from importlib.metadata import PackageNotFoundError, version
    for name, pinned in constraints().items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            pytest.fail(f"{name} is pinned but not installed; run `make setup`")
        assert Version(installed).public == Version(pinned).public, f"{name}: {installed} != {pinned}"
