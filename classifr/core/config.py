"""Settings: every knob of Classifr, read once from the environment and validated.

`Settings.from_env()` is called at start-up (app.py, the CLI); library code receives a Settings
object and never reads the environment itself.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from classifr.core.errors import ConfigError

logger = logging.getLogger(__name__)

DEFAULT_PORT = 7860
SPACE_PERSISTENT_ROOT = Path("/data")  # Hugging Face Spaces mount persistent storage here


def default_home(env: Mapping[str, str]) -> Path:
    """`/data/classifr` on a Space with persistent storage, else `./classifr-home`."""
    if env.get("SPACE_ID") and SPACE_PERSISTENT_ROOT.is_dir() and os.access(SPACE_PERSISTENT_ROOT, os.W_OK):
        return SPACE_PERSISTENT_ROOT / "classifr"
    return Path.cwd() / "classifr-home"


def _int(env: Mapping[str, str], name: str, default: int, *, minimum: int, maximum: int) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if not minimum <= value <= maximum:
        raise ConfigError(f"{name} must be between {minimum} and {maximum}, got {value}")
    return value


def _repo_id(env: Mapping[str, str], name: str) -> str | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    if raw.count("/") != 1 or raw.startswith("/") or raw.endswith("/"):
        raise ConfigError(f"{name} must be a Hub repo id like 'owner/name', got {raw!r}")
    return raw


def _folder(env: Mapping[str, str], name: str) -> Path | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    path = Path(raw).expanduser().resolve()
    if not path.is_dir():
        raise ConfigError(f"{name} must be an existing folder, got {raw!r}")
    return path


def _org(env: Mapping[str, str], name: str) -> str | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}", raw):
        raise ConfigError(f"{name} must be a Hugging Face organisation name, got {raw!r}")
    return raw


def _switch(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name} must be 1/0, true/false, yes/no or on/off, got {raw!r}")


def _share(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number between 0 and 1, got {raw!r}") from None
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name} must be between 0 and 1, got {raw!r}")
    return value


BACKENDS = ("auto", "torch", "onnx")


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...], default: str) -> str:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {env[name]!r}")
    return raw


def _license(env: Mapping[str, str], name: str, default: str) -> str:
    raw = env.get(name, "").strip() or default
    # A Hub licence identifier ("cc-by-4.0", "cc0-1.0", "other"): it lands in YAML and in the UI.
    if not all(ch.isalnum() or ch in "-." for ch in raw) or len(raw) > 64:
        raise ConfigError(f"{name} must be a licence identifier like 'cc-by-4.0', got {raw!r}")
    return raw.lower()


@dataclass(frozen=True)
class Settings:
    home: Path
    model: str | None = None  # CLASSIFR_MODEL: a local path or Hub id served instead of the registry
    model_revision: str | None = None
    registry_repo: str | None = None  # CLASSIFR_REGISTRY_REPO: a Hub model repo holding the versions
    hf_token: str | None = field(default=None, repr=False)  # HF_TOKEN, for the Hub registry
    server_name: str = "127.0.0.1"
    server_port: int = DEFAULT_PORT
    top_k: int = 5
    guess_below: float = 0.5  # CLASSIFR_GUESS_BELOW: a top score under this is shown as a guess, not an answer
    max_image_bytes: int = 50 * 1024 * 1024
    max_image_pixels: int = 120_000_000
    max_decoded_bytes: int = 100 * 1024 * 1024  # CLASSIFR_MAX_DECODED_MB: memory one image may take once decoded
    max_concurrent_explanations: int = 2  # CLASSIFR_MAX_CONCURRENT_EXPLANATIONS: more wait their turn
    max_batch_size: int = 8
    num_threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    examples_dir: Path | None = None  # CLASSIFR_EXAMPLES_DIR: example images shown in the app
    dataset_repo: str | None = None  # CLASSIFR_DATASET_REPO: a Hub dataset repo the project dataset syncs to
    dataset_sync_minutes: int = 10  # at most 6 commits an hour, well under the Hub's 128
    dataset_license: str = "cc-by-4.0"  # the licence contributions are shared under (shown in the app and card)
    admin_password: str | None = field(default=None, repr=False)  # CLASSIFR_ADMIN_PASSWORD: maintainer actions
    hf_oauth: bool = False  # a Space with `hf_oauth: true` (it sets OAUTH_CLIENT_ID): offer "Sign in with HF"
    maintainer_org: str | None = None  # CLASSIFR_MAINTAINER_ORG: members of this Hub org are maintainers (with HF sign-in)
    prediction_log: bool = True  # CLASSIFR_PREDICTION_LOG=0 turns the SQLite prediction log off
    store_images: bool = True  # CLASSIFR_STORE_IMAGES=0: log predictions without keeping a copy of the image
    max_stored_images: int = 2000  # the newest N logged images are kept (about 30 KB each), older ones deleted
    thumbnail_retention_days: int = 30  # a logged image nobody confirmed or corrected is deleted after N days
    canary_share: float = 0.0  # CLASSIFR_CANARY_SHARE: share of predictions served by the `candidate` version
    # CLASSIFR_BACKEND: what runs predictions. auto: ONNX Runtime when the version has a verified
    # ONNX export, else PyTorch; torch / onnx force one (onnx refuses a version without an export).
    backend: str = "auto"
    # CLASSIFR_ONNX_VERIFY_IMAGES: how many sample photos check the default version's ONNX export
    # against PyTorch when v1 is built (docs/settings.md); tests keep it small.
    onnx_verify_images: int = 64
    # The HTTP API under /v1 (docs/api.md): requests per minute per client address (0: no limit),
    # whether prediction is open to anyone, its inference threads, and the memory that versions
    # loaded only for pinned calls may take.
    api_rate_limit: int = 600
    api_public: bool = True
    api_workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    pinned_versions_bytes: int = 512 * 1024 * 1024

    @property
    def registry_dir(self) -> Path:
        return self.home / "registry"

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"

    @property
    def dataset_dir(self) -> Path:
        return self.home / "dataset"

    @property
    def prediction_log_path(self) -> Path:
        return self.home / "monitoring" / "predictions.sqlite"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        home_raw = env.get("CLASSIFR_HOME", "").strip()
        home = Path(home_raw).expanduser() if home_raw else default_home(env)
        if home.exists() and not home.is_dir():
            raise ConfigError(f"CLASSIFR_HOME must be a folder, but {str(home)!r} is a file")
        return cls(
            home=home.resolve(),
            model=env.get("CLASSIFR_MODEL", "").strip() or None,
            model_revision=env.get("CLASSIFR_MODEL_REVISION", "").strip() or None,
            registry_repo=_repo_id(env, "CLASSIFR_REGISTRY_REPO"),
            hf_token=env.get("HF_TOKEN", "").strip() or None,
            server_name=env.get("GRADIO_SERVER_NAME", "").strip() or "127.0.0.1",
            server_port=_int(env, "GRADIO_SERVER_PORT", DEFAULT_PORT, minimum=1, maximum=65535),
            top_k=_int(env, "CLASSIFR_TOP_K", 5, minimum=1, maximum=100),
            guess_below=_share(env, "CLASSIFR_GUESS_BELOW", 0.5),
            max_image_bytes=_int(env, "CLASSIFR_MAX_IMAGE_MB", 50, minimum=1, maximum=1024) * 1024 * 1024,
            max_image_pixels=_int(env, "CLASSIFR_MAX_IMAGE_PIXELS", 120_000_000, minimum=1, maximum=1_000_000_000),
            max_decoded_bytes=_int(env, "CLASSIFR_MAX_DECODED_MB", 100, minimum=1, maximum=64 * 1024) * 1024 * 1024,
            max_concurrent_explanations=_int(env, "CLASSIFR_MAX_CONCURRENT_EXPLANATIONS", 2, minimum=1, maximum=64),
            max_batch_size=_int(env, "CLASSIFR_MAX_BATCH", 8, minimum=1, maximum=256),
            num_threads=_int(env, "CLASSIFR_NUM_THREADS", os.cpu_count() or 1, minimum=1, maximum=256),
            examples_dir=_folder(env, "CLASSIFR_EXAMPLES_DIR"),
            dataset_repo=_repo_id(env, "CLASSIFR_DATASET_REPO"),
            dataset_sync_minutes=_int(env, "CLASSIFR_DATASET_SYNC_MINUTES", 10, minimum=1, maximum=24 * 60),
            dataset_license=_license(env, "CLASSIFR_DATASET_LICENSE", "cc-by-4.0"),
            admin_password=env.get("CLASSIFR_ADMIN_PASSWORD", "") or None,
            hf_oauth=bool(env.get("OAUTH_CLIENT_ID", "").strip()),
            maintainer_org=_org(env, "CLASSIFR_MAINTAINER_ORG"),
            prediction_log=_switch(env, "CLASSIFR_PREDICTION_LOG", True),
            store_images=_switch(env, "CLASSIFR_STORE_IMAGES", True),
            max_stored_images=_int(env, "CLASSIFR_MAX_STORED_IMAGES", 2000, minimum=0, maximum=10_000_000),
            thumbnail_retention_days=_int(env, "CLASSIFR_THUMBNAIL_RETENTION_DAYS", 30, minimum=1, maximum=3650),
            canary_share=_share(env, "CLASSIFR_CANARY_SHARE", 0.0),
            backend=_choice(env, "CLASSIFR_BACKEND", BACKENDS, "auto"),
            onnx_verify_images=_int(env, "CLASSIFR_ONNX_VERIFY_IMAGES", 64, minimum=1, maximum=10_000),
            api_rate_limit=_int(env, "CLASSIFR_API_RATE_LIMIT", 600, minimum=0, maximum=1_000_000),
            api_public=_switch(env, "CLASSIFR_API_PUBLIC", True),
            api_workers=_int(env, "CLASSIFR_API_WORKERS", os.cpu_count() or 1, minimum=1, maximum=64),
            pinned_versions_bytes=_int(env, "CLASSIFR_PINNED_VERSIONS_MB", 512, minimum=0, maximum=1024 * 1024) * 1024 * 1024,
        )
