"""Profiles and the parameters they give each chapter, checked against the chapters' parameters cells.

A profile (``profiles/<name>.yaml`` or any YAML file) has ``common``
parameters for every chapter, a section per chapter under ``chapters`` and an
optional ``timeout_s``; ``{checkout}`` in a value stands for the checkout's
folder, and ``assert_claims: false`` lets a chapter record a claim that does
not hold and carry on (see :mod:`mcutils.results`).  :func:`plan_parameters`
merges them with ``--param`` and checks every name and value against the
notebook's ``parameters`` cell, so a misspelt name or a value of the wrong
type is refused before any work.
"""
from __future__ import annotations

import ast
import difflib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..book import PROFILES as BOOK_PROFILES
from ..runs import RunsDirError, check_writable_dir
from .common import ReproduceError
from .toc import Page

DEFAULT_TIMEOUT_S = 6 * 3600
PROFILE_KEYS = {"profile", "common", "chapters", "timeout_s", "assert_claims"}
_MISSING = object()  # a parameter whose default is not a literal


# --------------------------------------------------------------------------- a notebook's parameters cell

@dataclass(frozen=True)
class Parameter:
    name: str
    annotation: str  # "" when the cell gives none
    default: Any  # _MISSING when the default is not a literal


def _code_of(source: str) -> str:
    # IPython magics and shell escapes are not Python; a parameters cell should have none.
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())


def notebook_parameters(path: Path) -> dict[str, Parameter]:
    """The names, annotations and literal defaults of a notebook's ``parameters`` cell."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    cells = [c for c in nb.get("cells", []) if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ReproduceError(f"{path.name} must have exactly one cell tagged 'parameters', found {len(cells)}")
    tree = ast.parse(_code_of("".join(cells[0]["source"])))
    params: dict[str, Parameter] = {}
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            targets, annotation, value = [node.target], ast.unparse(node.annotation), node.value
        elif isinstance(node, ast.Assign):
            targets, annotation, value = [t for t in node.targets if isinstance(t, ast.Name)], "", node.value
        else:
            continue
        try:
            default = ast.literal_eval(value) if value is not None else _MISSING
        except ValueError:
            default = _MISSING
        for target in targets:
            params[target.id] = Parameter(target.id, annotation, default)
    return params


_TYPE_CHECKS = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
    "bool": lambda v: isinstance(v, bool),
    "list": lambda v: isinstance(v, list),
    "dict": lambda v: isinstance(v, dict),
}


def _check_type(where: str, param: Parameter, value) -> None:
    base = re.sub(r"\[.*", "", param.annotation).strip()
    check = _TYPE_CHECKS.get(base)
    if check is not None and not check(value):
        raise ReproduceError(f"{where}: {param.name} must be {param.annotation} (the notebook's parameters "
                             f"cell says so), got {value!r} ({type(value).__name__})")


# --------------------------------------------------------------------------- profiles

@dataclass
class Profile:
    name: str
    path: Path
    common: dict = field(default_factory=dict)
    chapters: dict = field(default_factory=dict)
    timeout_s: float | None = None
    assert_claims: bool = True  # false: a failing claims.check is recorded, not raised (numbers that mean nothing)

    @property
    def chapter_profile_value(self) -> str:
        """What the chapters' ``profile`` parameter is set to (they know quick, paper and custom)."""
        return self.name if self.name in BOOK_PROFILES else "custom"


def positive_seconds(value) -> bool:
    """A time limit: a positive, finite number (not a bool)."""
    return (not isinstance(value, bool) and isinstance(value, (int, float))
            and math.isfinite(value) and value > 0)


def load_profile(spec: str, root: Path) -> Profile:
    """``quick``/``paper`` (``profiles/<name>.yaml``) or a path to a profile YAML file."""
    named = root / "profiles" / f"{spec}.yaml"
    path = named if re.fullmatch(r"[A-Za-z0-9_-]+", spec) and named.is_file() else Path(spec)
    if not path.is_file():
        if not (root / "profiles").is_dir():
            raise ReproduceError(f"profile {spec!r}: no file {path}, and {root} has no profiles/ folder; "
                                 "pass a path to a YAML file")
        shipped = sorted(p.stem for p in (root / "profiles").glob("*.yaml"))
        raise ReproduceError(f"profile {spec!r}: no file {path}; use one of {shipped} or a path to a YAML file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ReproduceError(f"profile {path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ReproduceError(f"profile {path}: expected a mapping with keys {sorted(PROFILE_KEYS)}")
    unknown = sorted(set(data) - PROFILE_KEYS)
    if unknown:
        raise ReproduceError(f"profile {path}: unknown key(s) {unknown}; allowed: {sorted(PROFILE_KEYS)}")
    name = str(data.get("profile") or path.stem)
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        raise ReproduceError(f"profile {path}: name {name!r} must be letters, digits, '-' or '_' (it names a folder)")
    common = data.get("common") or {}
    chapters = data.get("chapters") or {}
    if not isinstance(common, dict):
        raise ReproduceError(f"profile {path}: 'common' must be a mapping of parameter: value")
    if not isinstance(chapters, dict):
        raise ReproduceError(f"profile {path}: 'chapters' must map chapter names to parameters")
    for chapter, params in chapters.items():
        if params is not None and not isinstance(params, dict):
            raise ReproduceError(f"profile {path}: chapters.{chapter} must be a mapping of parameter: value")
    timeout = data.get("timeout_s")
    if timeout is not None and not positive_seconds(timeout):
        raise ReproduceError(f"profile {path}: timeout_s must be a positive number of seconds, got {timeout!r}")
    assert_claims = data.get("assert_claims", True)
    if not isinstance(assert_claims, bool):
        raise ReproduceError(f"profile {path}: assert_claims must be true or false, got {assert_claims!r}")
    common = {k: expand_checkout(v, root) for k, v in common.items()}
    chapters = {chapter: {k: expand_checkout(v, root) for k, v in (params or {}).items()}
                for chapter, params in chapters.items()}
    return Profile(name, path, common, chapters, timeout, assert_claims)


CHECKOUT = "{checkout}"


def expand_checkout(value, root: Path):
    """A profile's value with ``{checkout}`` replaced by the book's folder (in strings and lists of them).

    Papermill runs each chapter in its output folder, so a relative path in
    a profile would mean another folder per chapter; ``{checkout}/...`` names
    one inside the checkout wherever it is cloned (the paper-smoke profile's
    stand-ins under ``{checkout}/.mcutils_cache/paper-smoke``).
    """
    if isinstance(value, str):
        return value.replace(CHECKOUT, str(Path(root).resolve()))
    if isinstance(value, list):
        return [expand_checkout(v, root) for v in value]
    return value


def check_chapter_names(profile: Profile, chapters: list[Page]) -> None:
    """Every chapter the profile has settings for is one of ``_toc.yml`` (a typo is named, with a hint)."""
    names = [p.name for p in chapters]
    unknown = sorted(set(profile.chapters) - set(names))
    if unknown:
        hints = [f"{name!r} (did you mean {close[0]!r}?)" if close else repr(name)
                 for name in unknown
                 for close in [difflib.get_close_matches(name, names, n=1)]]
        raise ReproduceError(f"profile {profile.name} ({profile.path}) has settings for {', '.join(hints)}, which "
                             f"_toc.yml does not list; chapters: {names}")


def plan_parameters(profile: Profile, pages: list[Page], root: Path,
                    overrides: dict | None = None) -> dict[str, dict]:
    """The parameters papermill injects into each chapter, checked against its parameters cell.

    ``common`` and ``overrides`` (``--param``) apply to every chapter that has
    the parameter; a name no selected chapter has is an error, and so is a
    chapter-specific name the chapter lacks or a value of the wrong type.
    Values equal to the notebook's own defaults are left out, so a quick run
    injects nothing.
    """
    overrides = overrides or {}
    plan: dict[str, dict] = {}
    used: set[str] = set()
    for page in pages:
        if not page.source(root).is_file():
            continue
        where = f"profile {profile.name}, chapter {page.name}"
        known = notebook_parameters(page.source(root))
        own = profile.chapters.get(page.name, {})
        for name in own:
            if name not in known:
                raise ReproduceError(f"{where}: {name!r} is not a parameter of {page.name} "
                                     f"(its parameters cell defines {sorted(known)})")
        wanted = {**profile.common, **own, **overrides}
        wanted.setdefault("profile", profile.chapter_profile_value)
        injected = {}
        for name, value in wanted.items():
            if name not in known:
                continue
            used.add(name)
            _check_type(where, known[name], value)
            if known[name].default is _MISSING or known[name].default != value \
                    or type(known[name].default) is not type(value):
                injected[name] = value
        plan[page.name] = injected
    chapters_run = [p for p in pages if p.source(root).is_file()]
    if chapters_run:
        for name in [*profile.common, *overrides]:
            if name not in used:
                raise ReproduceError(f"profile {profile.name}: no selected chapter has a parameter {name!r}")
    return plan


def check_runs_dirs(plan: dict[str, dict], profile: Profile) -> None:
    """Every ``runs_dir`` a chapter gets must be a writable folder with room, before any chapter runs."""
    for chapter, injected in plan.items():
        value = injected.get("runs_dir")
        if isinstance(value, str) and value:
            try:
                check_writable_dir(value, f"runs_dir (chapter {chapter}, profile {profile.name})")
            except RunsDirError as exc:
                raise ReproduceError(str(exc)) from None


def parse_param(text: str) -> tuple[str, Any]:
    """``NAME=VALUE`` with VALUE read as YAML (``seed=3``, ``device=cuda``, ``sizes=[1, 2]``)."""
    if "=" not in text:
        raise ReproduceError(f"--param {text!r}: expected NAME=VALUE")
    name, raw = text.split("=", 1)
    if not name.isidentifier():
        raise ReproduceError(f"--param {text!r}: {name!r} is not a parameter name")
    try:
        return name, yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        problem = " ".join(str(getattr(exc, "problem", "") or exc).split())
        raise ReproduceError(f"--param {text!r}: the value is not valid YAML ({problem}); quote strings, "
                             "close brackets, e.g. -p 'seeds=[1, 2]'") from None
