"""SoftHSM2 (Debian's ``softhsm2``), a real PKCS#11 token, in a directory of its own: for the custom key
store bench (bench/hsm_bench.py) and tests (tests/keyservice/softhsm.py).

``SoftHsm(dir)`` writes a softhsm2.conf whose token directory is inside ``dir``; ``init_token`` runs
``softhsm2-util --init-token --free``. A process uses it with SOFTHSM2_CONF set to ``conf`` (the
library reads it once, when it is first initialised).
"""
from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

MODULE_CANDIDATES = ("/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
                     "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so", "/usr/local/lib/softhsm/libsofthsm2.so")
SO_PIN = "hsm-so-pin-for-tests"


def softhsm_module() -> str | None:
    """The SoftHSM2 PKCS#11 library, if installed (SOFTHSM2_MODULE names another place)."""
    for path in (os.environ.get("SOFTHSM2_MODULE", ""), *MODULE_CANDIDATES):
        if path and Path(path).is_file():
            return path
    return None


def missing_reason() -> str | None:
    """Why SoftHSM2 cannot be used here, or None."""
    if softhsm_module() is None or shutil.which("softhsm2-util") is None:
        return "SoftHSM2 is not installed (Debian: apt-get install softhsm2; scripts/test installs it)"
    try:
        import pkcs11  # noqa: F401
    except ImportError:
        return "python-pkcs11 is not installed (pip install -e '.[test]' or '.[hsm]')"
    return None


@dataclass
class SoftHsm:
    """A SoftHSM2 configuration with its own token directory."""

    directory: Path

    def __post_init__(self) -> None:
        (self.directory / "tokens").mkdir(parents=True, exist_ok=True)
        self.conf.write_text(f"directories.tokendir = {self.directory / 'tokens'}\nobjectstore.backend = file\n"
                             "log.level = ERROR\nslots.removable = false\n")

    @property
    def conf(self) -> Path:
        return self.directory / "softhsm2.conf"

    @property
    def module(self) -> str:
        module = softhsm_module()
        if module is None:
            raise RuntimeError(missing_reason())
        return module

    def init_token(self, label: str, pin: str) -> str:
        """A new token labelled ``label`` whose user PIN is ``pin``; returns the label."""
        subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", label, "--pin", pin,
                        "--so-pin", SO_PIN], check=True, capture_output=True,
                       env={**os.environ, "SOFTHSM2_CONF": str(self.conf)})
        return label
