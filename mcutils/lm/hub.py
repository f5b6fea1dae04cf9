"""The Hugging Face hub: fail in seconds, not after a minute of retries.

Whether a chain's model or dataset comes from the hub, whether the hub can be
used now (switched off by ``HF_HUB_OFFLINE``, or not answering), and whether
what is wanted looks cached.  Nothing here imports torch, transformers,
``huggingface_hub`` or ``datasets``, so the command line and the notebooks can
refuse an unreachable hub in about a second, before any long import or work.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from .. import validate


class HubUnavailable(validate.ParameterError):
    """A model or dataset needs the Hugging Face hub, which cannot be used now."""


QUICK_WORKS_OFFLINE = ("The quick profile (model='tiny', dataset='synthetic', the defaults) runs offline; "
                       "so do local folders in Hugging Face format.")


def _truthy(value: str | None) -> bool:
    return (value or "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def hub_offline() -> bool:
    """Whether the user switched the hub off (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``)."""
    return _truthy(os.environ.get("HF_HUB_OFFLINE")) or _truthy(os.environ.get("TRANSFORMERS_OFFLINE"))


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def hub_reachable(timeout: float = 1.5) -> bool:
    """One HTTPS request to the hub's address: does a real hub answer within about ``timeout`` s?

    A bare TCP connection is not enough: a proxy or sandbox may accept it and
    then fail every request, which ``huggingface_hub`` retries for a minute.
    Any HTTP status counts as an answer; a connection, TLS or timeout error does not.
    """
    import urllib.error
    import urllib.request

    request = urllib.request.Request(hub_endpoint() + "/api/whoami-v2", method="HEAD")
    try:
        urllib.request.urlopen(request, timeout=timeout).close()
        return True
    except urllib.error.HTTPError:
        return True  # the hub answered (e.g. 401 without a token)
    except (OSError, ValueError):
        return False


def needs_hub(settings) -> list[tuple[str, str]]:
    """The (kind, name) pairs of a :class:`~mcutils.lm.settings.ChainSettings` that come from the hub
    rather than mcutils or a local folder."""
    from .settings import SYNTHETIC, TINY  # not at the top: settings re-exports this module's names

    out = []
    if settings.model != TINY and not os.path.isdir(settings.model):
        out.append(("model", settings.model))
    if settings.dataset != SYNTHETIC and not os.path.isdir(settings.dataset):
        out.append(("dataset", settings.dataset))
    return out


def check_hub(settings, timeout: float = 1.5) -> str:
    """Fail at once when a hub model or dataset cannot be had; return the mode to load in.

    ``"local"``: nothing comes from the hub.  ``"online"``: the hub answers.
    ``"offline"``: offline mode is on (or the hub did not answer within
    ``timeout`` seconds and offline mode has been switched on, so that cached
    files load without a minute of retries) and everything wanted looks cached.
    """
    return check_wanted(needs_hub(settings), timeout)


def check_wanted(wanted, timeout: float = 1.5, label=lambda kind: kind) -> str:
    """:func:`check_hub` for a list of ``(kind, name)`` pairs (``kind``: "model" or "dataset"); ``label``
    names a kind in the messages (a tokenizer is cached as a model repository, say)."""
    if not wanted:
        return "local"
    unreachable = False
    if not hub_offline():
        if hub_reachable(timeout):
            return "online"
        unreachable = True
        go_offline()
    missing = [(kind, name) for kind, name in wanted if not _maybe_cached(kind, name)]
    if missing:
        what = " and ".join(f"{label(kind)} {name!r}" for kind, name in missing)
        if unreachable:
            raise HubUnavailable(
                f"{what} must be downloaded from {hub_endpoint()}, which did not answer within {timeout:g} s. "
                f"{QUICK_WORKS_OFFLINE} To use the hub, connect to the internet.")
        raise HubUnavailable(offline_advice(what, plural=len(missing) > 1))
    return "offline"


def offline_advice(what: str, plural: bool = False) -> str:
    return (f"{what} {'are' if plural else 'is'} not in the local Hugging Face cache and the hub is switched off "
            f"(HF_HUB_OFFLINE / HF_DATASETS_OFFLINE). {QUICK_WORKS_OFFLINE} To download it, go online "
            f"and unset HF_HUB_OFFLINE and HF_DATASETS_OFFLINE.")


def go_offline() -> None:
    """Switch the hub libraries to offline mode, also when they are imported already."""
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ[name] = "1"
    if "huggingface_hub" in sys.modules:
        sys.modules["huggingface_hub"].constants.HF_HUB_OFFLINE = True
    if "datasets" in sys.modules:
        sys.modules["datasets"].config.HF_HUB_OFFLINE = True
        sys.modules["datasets"].config.HF_DATASETS_OFFLINE = True


def _hf_home() -> Path:
    return Path(os.environ.get("HF_HOME", Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                               / "huggingface")).expanduser()


def _maybe_cached(kind: str, name: str) -> bool:
    """A cheap look into the caches: False means surely absent (True may still fail to load)."""
    from .settings import WIKITEXT

    hub_cache = Path(os.environ.get("HF_HUB_CACHE", _hf_home() / "hub")).expanduser()
    variants = [name] + ([f"Salesforce/{name}"] if name == WIKITEXT else [])
    if kind == "model":
        return any((hub_cache / f"models--{v.replace('/', '--')}").is_dir() for v in variants)
    datasets_cache = Path(os.environ.get("HF_DATASETS_CACHE", _hf_home() / "datasets")).expanduser()
    return any((hub_cache / f"datasets--{v.replace('/', '--')}").is_dir()
               or (datasets_cache / v.replace("/", "___")).is_dir() for v in variants)
