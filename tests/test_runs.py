"""The runs folder (mcutils.runs): atomic writes, the gen_<NN>/metrics.json contract, run names."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from mcutils import runs


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_atomic_write_json_round_trips_and_makes_parent_folders(tmp_path):
    target = tmp_path / "a" / "b" / "metrics.json"
    runs.atomic_write_json(target, {"ppl": 12.5, "gen": 3})
    assert runs.read_json(target) == {"gen": 3, "ppl": 12.5}
    assert files_in(target.parent) == ["metrics.json"]  # no temporary file left behind


@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_a_writer_that_raises_leaves_no_partial_file_and_keeps_the_old_one(tmp_path, monkeypatch, failing):
    target = tmp_path / "gen_00" / "metrics.json"
    runs.atomic_write_json(target, {"version": 1})

    def boom(*args, **kwargs):
        raise OSError("disk gone")

    monkeypatch.setattr(os, failing, boom)  # dies after the bytes are written, before the rename lands
    with pytest.raises(OSError, match="disk gone"):
        runs.atomic_write_json(target, {"version": 2})
    monkeypatch.undo()
    assert runs.read_json(target) == {"version": 1}
    assert files_in(target.parent) == ["metrics.json"]


def test_a_failed_first_write_leaves_nothing(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        runs.atomic_write_json(runs.generation_dir(run_dir, 0) / runs.METRICS, {"x": 1})
    monkeypatch.undo()
    assert not runs.is_complete(run_dir, 0)
    assert files_in(runs.generation_dir(run_dir, 0)) == []


def test_unserialisable_metrics_never_reach_the_disk(tmp_path):
    target = tmp_path / "metrics.json"
    with pytest.raises(TypeError):
        runs.atomic_write_json(target, {"bad": object()})
    assert not target.exists() and files_in(tmp_path) == []


def test_generation_folders_follow_the_contract(tmp_path):
    assert runs.generation_dir(tmp_path, 3) == tmp_path / "gen_03"
    assert runs.generation_dir(tmp_path, 12).name == "gen_12"
    assert not runs.is_complete(tmp_path, 0)
    runs.generation_dir(tmp_path, 0).mkdir()  # a folder without metrics.json is not complete
    assert not runs.is_complete(tmp_path, 0)
    runs.atomic_write_json(runs.generation_dir(tmp_path, 0) / "metrics.json", {"gen": 0})
    assert runs.is_complete(tmp_path, 0)


def test_load_metrics_stops_at_the_first_gap(tmp_path):
    for gen in (0, 1, 3, 4):  # generation 2 never finished
        runs.atomic_write_json(runs.generation_dir(tmp_path, gen) / runs.METRICS, {"gen": gen})
    runs.generation_dir(tmp_path, 2).mkdir()
    assert [m["gen"] for m in runs.load_metrics(tmp_path)] == [0, 1]
    runs.atomic_write_json(runs.generation_dir(tmp_path, 2) / runs.METRICS, {"gen": 2})
    assert [m["gen"] for m in runs.load_metrics(tmp_path)] == [0, 1, 2, 3, 4]
    assert [m["gen"] for m in runs.load_metrics(tmp_path, n_generations=2)] == [0, 1, 2]
    assert runs.load_metrics(tmp_path / "never-run") == []


def test_run_name_changes_with_every_setting_and_not_with_key_order():
    base = {"model": "opt-125m", "seed": 0, "policy": "replace", "lr": 2e-5}
    name = runs.run_name("opt", base)
    assert name.startswith("opt-") and name == runs.run_name("opt", dict(reversed(base.items())))
    changed = [runs.run_name("opt", {**base, key: value})
               for key, value in [("seed", 1), ("policy", "accumulate"), ("lr", 3e-5), ("model", "tiny")]]
    assert len({name, *changed}) == 5
    assert runs.run_name("opt", {**base, "extra": None}) != name


def test_default_runs_dir_honours_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MCUTILS_RUNS_DIR", str(tmp_path / "elsewhere"))
    assert runs.default_runs_dir("paper") == tmp_path / "elsewhere" / "paper"
    assert runs.resolve_runs_dir("", "quick") == tmp_path / "elsewhere" / "quick"
    assert runs.resolve_runs_dir(None, "quick") == tmp_path / "elsewhere" / "quick"
    assert runs.resolve_runs_dir(str(tmp_path / "mine"), "quick") == tmp_path / "mine"


def test_default_runs_dir_without_the_environment_is_independent_of_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("MCUTILS_RUNS_DIR", raising=False)
    first = runs.default_runs_dir("quick")
    monkeypatch.chdir(tmp_path)
    root = runs.repo_root()
    if root is None:  # an installed (not editable) mcutils falls back to the working directory
        assert runs.default_runs_dir("quick") == tmp_path / "runs" / "quick"
    else:
        assert first == runs.default_runs_dir("quick") == root / "runs" / "quick"


# -- a damaged file, an unusable folder, scratch left behind, a second writer (issue 12) -----

def test_a_damaged_json_file_is_named_with_what_to_do(tmp_path):
    path = tmp_path / "gen_00" / "metrics.json"
    runs.atomic_write_json(path, {"generation": 0, "x": 1})
    path.write_text(path.read_text()[:15])
    with pytest.raises(runs.CorruptRunError, match=f"{path} is damaged .*delete it"):
        runs.read_json(path)
    with pytest.raises(runs.CorruptRunError):
        runs.load_metrics(tmp_path)


def test_check_writable_dir(tmp_path, monkeypatch):
    assert runs.check_writable_dir(tmp_path / "new" / "runs") == tmp_path / "new" / "runs"
    assert files_in(tmp_path / "new" / "runs") == []  # the write test leaves nothing
    (tmp_path / "file").write_text("x")
    with pytest.raises(runs.RunsDirError, match="runs_dir .*file is a file, not a folder"):
        runs.check_writable_dir(tmp_path / "file")
    with pytest.raises(runs.RunsDirError, match="cannot be created"):
        runs.check_writable_dir(tmp_path / "file" / "below")
    with pytest.raises(runs.RunsDirError, match="has 10 bytes free, less than the 1.0 GiB needed"):
        _with_free(monkeypatch, tmp_path, 10)

    def refuse(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(runs.tempfile, "mkstemp", refuse)
    with pytest.raises(runs.RunsDirError, match=r"is not writable \(Read-only file system\)"):
        runs.check_writable_dir(tmp_path, "my_dir")


def _with_free(monkeypatch, folder, free):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(1 << 40, (1 << 40) - free, free))
    try:
        runs.check_writable_dir(folder, min_free_bytes=1 << 30)
    finally:
        monkeypatch.undo()


def test_write_errors_become_one_line_for_the_folder(tmp_path):
    import errno

    error = runs.write_error(OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x")), tmp_path)
    assert isinstance(error, runs.RunsDirError) and "No space left on device" in str(error)
    assert str(tmp_path / "x") in str(error) and "rerun" in str(error)
    assert runs.write_error(OSError(errno.EIO, "I/O error"), tmp_path) is None  # not the user's to fix


def test_remove_scratch_removes_only_scratch(tmp_path):
    gen = runs.generation_dir(tmp_path, 1)
    (gen / ".model.abc123").mkdir(parents=True)
    (gen / ".model.abc123" / "model.safetensors").write_bytes(b"partial")
    (gen / ".metrics.json.x.tmp").write_text("{")
    (tmp_path / ".data.copy").mkdir()
    (gen / "model").mkdir()
    (gen / "samples.arrow").write_bytes(b"keep")
    (tmp_path / runs.LOCK).write_text("pid 1")
    removed = runs.remove_scratch(tmp_path)
    assert len(removed) == 3
    assert files_in(gen) == ["model", "samples.arrow"] and files_in(tmp_path) == [runs.LOCK, "gen_01"]


def test_a_locked_folder_refuses_a_second_writer(tmp_path):
    with runs.locked(tmp_path / "chain"):
        assert f"pid {os.getpid()}" in (tmp_path / "chain" / runs.LOCK).read_text()
        with pytest.raises(runs.RunLockedError, match=f"another process \\(pid {os.getpid()}"):
            with runs.locked(tmp_path / "chain"):
                pass
    with runs.locked(tmp_path / "chain"):  # released when the holder is done
        pass


def _complete(run_dir, g, label=None):
    runs.atomic_write_json(runs.generation_dir(run_dir, g) / runs.METRICS, {"generation": g if label is None else label})


def test_complete_generations_is_the_shared_resume_point(tmp_path):
    """The VAE and the language-model chain resume at the first generation without metrics.json."""
    assert runs.complete_generations(tmp_path, 3) == 0
    _complete(tmp_path, 0)
    _complete(tmp_path, 1)
    checked = []
    assert runs.complete_generations(tmp_path, 3, checked.append) == 2 and checked == [0, 1]
    assert runs.complete_generations(tmp_path, 2) == 2 and runs.complete_generations(tmp_path, 1) == 1
    # a complete generation after a missing one was made from data that is gone
    _complete(tmp_path, 3)
    with pytest.raises(runs.CorruptRunError, match="gen_03 is complete but gen_02 before it is not.*delete"):
        runs.complete_generations(tmp_path, 4)
    # the check callback refuses a generation that is not itself (a copied metrics.json)
    _complete(tmp_path, 1, label=0)
    with pytest.raises(runs.CorruptRunError, match="gen_01/metrics.json says it is generation 0, not 1.*delete"):
        runs.complete_generations(tmp_path, 2, lambda g: runs.check_generation_label(tmp_path, g))
    assert "gen_01 and the later generation folders (gen_01 to gen_03)" in runs.delete_advice(tmp_path, 1)


def test_writing_holds_the_lock_and_clears_scratch_on_both_ends(tmp_path):
    run_dir = tmp_path / "chain"
    (run_dir / "gen_00").mkdir(parents=True)
    (run_dir / "gen_00" / ".metrics.json.old.tmp").write_text("{")  # a killed writer's
    with runs.writing(run_dir, "chain"):
        assert not (run_dir / "gen_00" / ".metrics.json.old.tmp").exists()
        with pytest.raises(runs.RunLockedError):
            with runs.locked(run_dir):
                pass
        (run_dir / "gen_00" / ".samples.arrow.new.tmp").write_bytes(b"half")
    assert files_in(run_dir / "gen_00") == []
    with runs.locked(run_dir):  # released
        pass
