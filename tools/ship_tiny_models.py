"""Pre-train the profiles' tiny models here and ship them with mcutils (``mcutils/lm/pretrained/``).

The quick profile's stand-in for OPT-125m (06) and the ``small`` profile's
model (07) are pre-trained on the related synthetic language by
:func:`mcutils.lm.model.ensure_tiny`, exactly as a chapter would with
``MCUTILS_BUILD_TINY=1``. Shipping the result does for them what the hub does
for OPT-125m: every machine fine-tunes the same weights, and no chapter spends
its first minute pre-training. Each shipped folder records how it was made
(the machine, its arithmetic, the seconds it took) and the SHA-256 of its
weights, which mcutils checks before loading them.

Run it after a change to a profile's tiny model or language, or to
``CACHE_FORMAT``; ``tests/test_lm_shipped.py`` fails until then. Folders of
recipes no profile uses any more are removed.

    python tools/ship_tiny_models.py [--profiles quick,small]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mcutils import runs  # noqa: E402
from mcutils.lm import model as lm_model  # noqa: E402
from mcutils.lm import settings as lm_settings  # noqa: E402
from mcutils.lm.chain import model_fingerprint  # noqa: E402
from mcutils.reproduce import detect_machine  # noqa: E402

SHIPPED_PROFILES = lm_model.SHIPPED_PROFILES


def ship(profile: str) -> Path:
    """Pre-train ``profile``'s tiny model in a fresh cache and copy it, with its record, into the package."""
    settings = lm_settings.for_profile(profile)
    with tempfile.TemporaryDirectory() as cache:
        os.environ["MCUTILS_CACHE_DIR"] = cache
        start = time.perf_counter()
        built = lm_model.ensure_tiny(settings, progress=False)
        seconds = time.perf_counter() - start
        model, _ = lm_model.load_base_model(settings, progress=False)
        info = json.loads((built / lm_model.PRETRAINING_INFO).read_text())
        info.update(profile=profile, recipe=lm_model.recipe_key(settings), build_seconds=round(seconds, 1),
                    built_on=detect_machine()[1], fingerprint=model_fingerprint(model),
                    weights_sha256=runs.file_sha256(built / lm_model.WEIGHTS))
        runs.atomic_write_json(built / lm_model.PRETRAINING_INFO, info)
        target = lm_model.SHIPPED_DIR / runs.run_name("tiny-opt", lm_model.recipe_key(settings))
        target.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        for path in built.iterdir():
            shutil.copy2(path, scratch / path.name)
            (scratch / path.name).chmod(0o644)
        scratch.chmod(0o755)
        if target.exists():
            shutil.rmtree(target)
        os.replace(scratch, target)
    print(f"{profile}: {info['n_parameters']:,} parameters pre-trained in {seconds:.0f} s on {info['built_on']} "
          f"(fingerprint {info['fingerprint']}) -> {target.relative_to(ROOT)}", flush=True)
    return target


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", default=",".join(SHIPPED_PROFILES),
                        help=f"comma-separated profiles to pre-train (default: {','.join(SHIPPED_PROFILES)})")
    args = parser.parse_args(argv)
    profiles = [p.strip() for p in args.profiles.split(",") if p.strip()]
    for profile in profiles:
        if profile not in SHIPPED_PROFILES:
            parser.error(f"--profiles: {profile!r} is not one of {list(SHIPPED_PROFILES)}")
    os.environ[lm_model.BUILD_ENV] = "1"
    shipped = [ship(profile) for profile in profiles]
    wanted = {runs.run_name("tiny-opt", lm_model.recipe_key(lm_settings.for_profile(p))) for p in SHIPPED_PROFILES}
    for folder in lm_model.SHIPPED_DIR.iterdir():
        if folder.is_dir() and folder.name not in wanted and folder not in shipped:
            print(f"removing {folder.relative_to(ROOT)}: no profile pre-trains it any more")
            shutil.rmtree(folder)


if __name__ == "__main__":
    main()
