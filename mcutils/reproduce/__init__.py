"""The batch runner: every chapter of the book under one profile, with papermill.

**It needs a checkout of the book**, not only this package: it reads the
book's ``_toc.yml``, its pages in ``book/`` and its ``profiles/``, and writes
beside them.  ``pip install "mcutils @ git+..."`` (what a chapter's install
cell does on Colab) ships this subpackage, since it is small and pure Python,
but the chapters never import it; run outside a checkout (and without
``--root``), it stops with one line saying what is missing.  Use it from a
clone, after ``make setup`` or ``pip install -e '.[book,test]'``.

``python -m mcutils.reproduce --profile quick|paper|path.yaml`` (also the
``mcutils-reproduce`` entry point and ``make reproduce PROFILE=...``) runs the
chapters listed in ``_toc.yml``, in order, each in its own papermill process
with the profile's parameters (``common`` merged with the chapter's section of
``profiles/<profile>.yaml``), under a wall-clock limit per chapter.  A chapter
that fails or runs out of time is reported and the runner carries on with the
next.  At the end it prints a table (chapter, status, time, and the chapter's
key result beside the paper's, read from the claims the chapter recorded with
:mod:`mcutils.results`) and exits non-zero if any chapter failed.

Where things go (``<out>`` is ``reproductions/<profile>/`` unless
``--output-dir`` says otherwise; the folder never lies inside ``book/``):

``<out>/book/*.ipynb``
    the executed notebooks of this profile, beside a copy of the book's pages,
    from which ``<out>/_build/html`` is built at the end;
``<out>/logs/<chapter>.log``
    papermill's log of the chapter: every cell's output as it ran;
``<out>/failed/<chapter>.ipynb``
    the partly executed notebook of a chapter that failed (a failure never
    replaces a good notebook of an earlier run);
``<out>/summary.md``, ``<out>/summary.json``
    the closing table.

``--in-place`` (quick profile only) is how ``make book`` refreshes the
committed outputs: each chapter that succeeds replaces ``book/<chapter>.ipynb``;
one that fails leaves the committed notebook as it was.

``--record-timings`` records the measured times in ``book/_timings.json``, the
table ``book/_timings.md`` that the introduction includes, and the README's
copy of it.  It runs every chapter from scratch, in an empty runs folder and
model cache under ``<out>/fresh/`` (a chapter that reads its chains back from
an earlier run takes seconds, which says nothing about a first run), so a
recorded time is what a reader's first run costs.  Without it nothing is
recorded, so that ``make book`` never edits the timings or the README.

Ctrl-C, SIGTERM (a cancelled CI job) and SIGHUP (a closed terminal) all stop
the run the same way: the running chapter's papermill and kernel are ended,
the summary is written, and the exit code is 128 + the signal (130 for Ctrl-C).

The scorecard page (``book/scorecard.ipynb``) is not a chapter: it is run
last, in the same folder as the executed chapters, so that it gathers their
claims.

One module a concept:

- :mod:`.toc`: the checkout (:func:`find_root`) and ``_toc.yml``'s pages and chapters
- :mod:`.profiles`: profiles, the chapters' parameters cells, the checks of names and values
- :mod:`.execute`: papermill in a child process, progress, stop signals, ending the process tree
- :mod:`.timings`: ``book/_timings.json``, the timings table and the README's copy of it
- :mod:`.site`: the per-profile book under ``reproductions/<profile>/``
- :mod:`.runner`: :func:`run`, one profile from the checks to the closing table
- :mod:`.cli`: the command line (:func:`main`); ``__main__`` makes ``python -m`` work
- :mod:`.common`: the error and the formatting the others share

The public names of these modules are re-exported here, so ``from mcutils import reproduce``
and ``reproduce.X`` keep working; to monkeypatch what :func:`run` calls,
patch :mod:`mcutils.reproduce.runner` (where it looks names up), not this
package.
"""
from __future__ import annotations

from .cli import _main, main, parser
from .common import ReproduceError, fmt_seconds, relative
from .execute import (_CELL_LINE, _LAST_STOP_SIGNAL, KERNEL, STOP_SIGNALS, Interrupted, Outcome, Progress,
                      _first_error, _kill_tree, _last_line, _raise_interrupted, _set_papermill_paths,
                      _stop_signals_ignored, _stop_signals_raise, execute_notebook, threading_is_main)
from .profiles import (_MISSING, _TYPE_CHECKS, DEFAULT_TIMEOUT_S, PROFILE_KEYS, Parameter, Profile, _check_type,
                       _code_of, check_chapter_names, check_runs_dirs, load_profile, notebook_parameters,
                       parse_param, plan_parameters, positive_seconds)
from .runner import _shorten, closing_table, run
from .site import (build_book, fill_missing_notebooks, jupyter_book_executable, output_dir_for,
                   prepare_profile_book, write_profile_config)
from .timings import (README_MARKERS, STANDARD_TIMING_COLUMNS, TIMINGS_JSON, TIMINGS_MD, detect_machine,
                      readme_with_timings, record_timings, render_timings, write_timings_tables)
from .toc import CHECKOUT_MARKERS, SCORECARD, Page, find_root, select_pages, toc_chapters, toc_docs, toc_notebooks

# The names these had when the runner was one module.
_fmt_seconds = fmt_seconds
_relative = relative
_check_runs_dirs = check_runs_dirs

__all__ = [
    "CHECKOUT_MARKERS", "DEFAULT_TIMEOUT_S", "KERNEL", "PROFILE_KEYS", "README_MARKERS", "SCORECARD",
    "STANDARD_TIMING_COLUMNS", "STOP_SIGNALS", "TIMINGS_JSON", "TIMINGS_MD",
    "Interrupted", "Outcome", "Page", "Parameter", "Profile", "Progress", "ReproduceError",
    "build_book", "check_chapter_names", "check_runs_dirs", "closing_table", "detect_machine",
    "execute_notebook", "fill_missing_notebooks", "find_root", "fmt_seconds", "jupyter_book_executable",
    "load_profile", "main", "notebook_parameters", "output_dir_for", "parse_param", "parser",
    "plan_parameters", "positive_seconds", "prepare_profile_book", "readme_with_timings", "record_timings",
    "relative", "render_timings", "run", "select_pages", "threading_is_main", "toc_chapters", "toc_docs",
    "toc_notebooks", "write_profile_config", "write_timings_tables",
]
