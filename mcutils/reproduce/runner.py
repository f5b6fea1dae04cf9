"""The run of a profile: check everything first, then each chapter in order, the scorecard, the summary.

:func:`run` is what ``python -m mcutils.reproduce`` does once the options are
parsed (see :mod:`.cli`); every check that can fail (the profile, the chapter
list, the parameters, the folders) runs before the first chapter does.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from contextlib import nullcontext
from dataclasses import asdict
from datetime import datetime, timezone

from .. import results
from ..runs import RunsDirError, atomic_write_bytes, atomic_write_json, check_writable_dir
from .common import ReproduceError, fmt_seconds, relative
from .execute import KERNEL, Outcome, Progress, _first_error, _last_line, _set_papermill_paths, execute_notebook
from .profiles import (DEFAULT_TIMEOUT_S, check_chapter_names, check_runs_dirs, load_profile, plan_parameters,
                       positive_seconds)
from .site import build_book, fill_missing_notebooks, output_dir_for, prepare_profile_book, write_profile_config
from .timings import TIMINGS_MD, record_timings
from .toc import SCORECARD, find_root, select_pages, toc_notebooks


def closing_table(outcomes: list[Outcome], markdown: bool = False, width: int = 90) -> str:
    """Chapter, status, time and key result: plain columns for the terminal, or Markdown for ``summary.md``."""
    head = ["chapter", "status", "time", "key result (ours vs paper)"]
    rows = [[o.chapter, o.status, fmt_seconds(o.seconds) if o.status != "missing" else "-",
             o.key_result() if markdown else _shorten(o.key_result(), width)] for o in outcomes]
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
        return "\n".join(out)
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(3)]
    fmt = "  ".join(f"{{:{w}}}" for w in widths) + "  {}"
    lines = [fmt.format(*head), fmt.format(*["-" * w for w in widths], "-" * len(head[3]))]
    lines += [fmt.format(*row) for row in rows]
    return "\n".join(lines)


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def run(profile_spec: str, *, chapters: str | None = None, in_place: bool = False,
        timeout_s: float | None = None, output_dir: str | None = None, root: str | None = None,
        params: dict | None = None, build: bool = True, record: bool | None = None,
        dry_run: bool = False, kernel: str = KERNEL, stream=None) -> tuple[list[Outcome], bool]:
    """Run the profile; returns the outcomes and whether the profile's book was built (or not asked for).

    Raises :class:`ReproduceError` for bad options before anything runs.
    """
    stream = stream or sys.stdout
    book_root = find_root(root)
    profile = load_profile(profile_spec, book_root)
    if in_place and profile.name != "quick":
        raise ReproduceError("--in-place runs only the quick profile: book/ carries the quick profile's outputs; "
                             f"the {profile.name} profile goes to reproductions/{profile.name}/")
    if timeout_s is not None and not positive_seconds(timeout_s):
        raise ReproduceError(f"--timeout must be a positive, finite number of seconds, got {timeout_s}")
    timeout = float(timeout_s or profile.timeout_s or DEFAULT_TIMEOUT_S)
    all_pages = toc_notebooks(book_root)
    all_chapters = [p for p in all_pages if p.name != SCORECARD]
    selected = select_pages(all_chapters, chapters)
    check_chapter_names(profile, all_chapters)
    plan = plan_parameters(profile, selected, book_root, params)
    check_runs_dirs(plan, profile)
    if record:
        given = sorted(name for name, injected in plan.items() if (injected or {}).get("runs_dir"))
        if given:
            raise ReproduceError(
                f"--record-timings runs every chapter from scratch in a fresh runs folder and model cache, so "
                f"that a recorded time is what a first run costs; do not pass runs_dir (given to {', '.join(given)})")
    scorecard = next((p for p in all_pages if p.name == SCORECARD and p.source(book_root).is_file()), None)
    out = output_dir_for(book_root, profile, output_dir)
    final_root = book_root if in_place else out
    if not dry_run:
        try:
            check_writable_dir(out, "--output-dir")
        except RunsDirError as exc:
            raise ReproduceError(str(exc)) from None
    if dry_run:
        for page in selected:
            injected = plan.get(page.name)
            print(f"{page.name}: " + (json.dumps(injected, sort_keys=True) if injected is not None
                                      else "notebook missing"), file=stream)
        return [], True

    print(f"Profile {profile.name} ({relative(profile.path, book_root)}): {len(selected)} chapter(s), "
          f"timeout {fmt_seconds(timeout)} each; "
          + ("executing into book/ (only successes replace the committed notebooks)" if in_place
             else f"results in {relative(out, book_root)}/")
          + ("" if profile.assert_claims else "; claims are recorded, not asserted (assert_claims: false)"),
          file=stream, flush=True)
    if not in_place:
        prepare_profile_book(book_root, out)
    progress = Progress(stream)
    outcomes: list[Outcome] = []
    fresh = _FreshState(out / "fresh") if record else nullcontext()
    if record:
        print(f"--record-timings: every chapter runs from scratch (runs folder and model cache in "
              f"{relative(fresh.root, book_root)}/, emptied first)", file=stream, flush=True)
    with fresh:
        pages = selected + ([scorecard] if scorecard else [])
        for index, page in enumerate(pages, 1):
            label = f"[{index}/{len(pages)}] {page.name}"
            log = out / "logs" / f"{page.name}.log"
            outcome = Outcome(page.name, "missing", parameters=plan.get(page.name, {}), log=relative(log, book_root))
            if not page.source(book_root).is_file():
                outcome.error = f"{page.doc}.ipynb does not exist"
                progress.finish(label, outcome)
                outcomes.append(outcome)
                continue
            if page.name == SCORECARD and not in_place:
                fill_missing_notebooks(book_root, out)  # the scorecard gathers every chapter of this book
            final = final_root / f"{page.doc}.ipynb"
            attempt = out / "attempts" / f"{page.name}.ipynb"
            status, seconds = execute_notebook(page.source(book_root), attempt, final.parent, outcome.parameters,
                                               log, timeout, label, progress, kernel,
                                               env=None if profile.assert_claims else {results.ASSERT_CLAIMS_ENV: "0"})
            outcome.status, outcome.seconds = status, seconds
            outcome.load = round(os.getloadavg()[0], 1) if hasattr(os, "getloadavg") else None
            if status == "ok":
                final.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(attempt, final)
                if in_place:
                    _set_papermill_paths(final, f"{page.doc}.ipynb")
                outcome.notebook = relative(final, book_root)
                outcome.claims = results.gather([final])
            else:
                failed = out / "failed" / f"{page.name}.ipynb"
                if attempt.exists():
                    failed.parent.mkdir(parents=True, exist_ok=True)
                    shutil.move(attempt, failed)
                    outcome.claims = results.gather([failed])
                outcome.notebook = relative(failed, book_root)
                outcome.error = {"timeout": f"stopped after the {fmt_seconds(timeout)} limit",
                                 "interrupted": "interrupted"}.get(status) or _first_error(failed) or _last_line(log)
            progress.finish(label, outcome)
            outcomes.append(outcome)
            if status == "interrupted":
                break

    command = ("python -m mcutils.reproduce --profile " + profile.name + (" --in-place" if in_place else "")
               + " --record-timings")
    if record and any(o.ok for o in outcomes):
        written = record_timings(book_root, profile.name, outcomes, command, readme=True)
        print(f"Times recorded in {relative(written, book_root)}, {TIMINGS_MD} and the README", file=stream)

    built = True
    if not in_place and build and all(o.status != "interrupted" for o in outcomes):
        prepare_profile_book(book_root, out)  # again: the pages may have changed (the timings table)
        state_path = out / "state.json"
        state = json.loads(state_path.read_text()) if state_path.is_file() else {"produced": []}
        produced = sorted(set(state["produced"]) | {o.chapter for o in outcomes if o.ok and o.chapter != SCORECARD})
        atomic_write_json(state_path, {"profile": profile.name, "produced": produced})
        borrowed = fill_missing_notebooks(book_root, out, produced)
        write_profile_config(out, profile, produced, borrowed)
        print("Building the book of this profile ...", file=stream, flush=True)
        built = build_book(out, out / "logs" / "build.log")
        where = out / "_build" / "html" / "index.html"
        print(f"Book: {relative(where, book_root)}" if built else
              f"The book's build failed or warned: see {relative(out / 'logs' / 'build.log', book_root)}",
              file=stream, flush=True)

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "summary.json", {
        "profile": profile.name, "in_place": in_place, "timeout_s": timeout,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "chapters": [{**asdict(o), "claims": [asdict(c) for c in o.claims]} for o in outcomes]})
    atomic_write_bytes(out / "summary.md", (f"# {profile.name} profile\n\n" + closing_table(outcomes, markdown=True)
                                            + "\n").encode())
    print("\n" + closing_table(outcomes), file=stream)
    failed = [o.chapter for o in outcomes if not o.ok]
    print(f"\n{len(outcomes) - len(failed)}/{len(outcomes)} notebooks ran; "
          + (f"failed: {', '.join(failed)}" if failed else "none failed")
          + f". Summary: {relative(out / 'summary.md', book_root)}", file=stream, flush=True)
    return outcomes, built


class _FreshState:
    """An empty runs folder and model cache for the chapters' kernels (``--record-timings``).

    A chapter that finds its chains or its pre-trained stand-in from an earlier run reads
    them back in seconds; a time recorded that way would say nothing about what a reader's
    first run costs.  The kernels inherit ``MCUTILS_RUNS_DIR`` and ``MCUTILS_CACHE_DIR``
    (see :func:`mcutils.runs.default_runs_dir` and :func:`mcutils.lm.model.cache_dir`).
    """

    KEYS = ("MCUTILS_RUNS_DIR", "MCUTILS_CACHE_DIR")

    def __init__(self, root):
        self.root = root
        self.saved: dict[str, str | None] = {}

    def __enter__(self) -> "_FreshState":
        if self.root.exists():
            shutil.rmtree(self.root)
        for key, sub in zip(self.KEYS, ("runs", "cache")):
            (self.root / sub).mkdir(parents=True)
            self.saved[key] = os.environ.get(key)
            os.environ[key] = str(self.root / sub)
        return self

    def __exit__(self, *exc) -> None:
        for key, value in self.saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
