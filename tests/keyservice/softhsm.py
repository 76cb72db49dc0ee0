"""SoftHSM2 (Debian's ``softhsm2``), a real PKCS#11 token, initialised in a temporary directory for tests.

``SoftHsm(dir)`` (bench/softhsm.py) writes a softhsm2.conf whose tokendir is inside ``dir``; ``init_token``
runs ``softhsm2-util --init-token --free``. A key service process is pointed at it with ``env()``
(SOFTHSM2_CONF, and the KEYSERVICE_PKCS11_* variables naming the token as ``CLUSTER_ID``).

In this process the PKCS#11 library is loaded once and reads its configuration once (C_Initialize):
the in-process fixture ``softhsm`` is one directory for the whole session (SOFTHSM2_CONF set before
the first load), and ``token`` initialises a fresh token in it per test, then re-initialises the
library so it sees the new token (no session survives a test: every service is closed).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.softhsm import SO_PIN, missing_reason
from bench.softhsm import SoftHsm as BenchSoftHsm
from tests.support.secrets import register

CLUSTER_ID = "cluster-softhsmtoken"  # AWS's CloudHsmClusterId form: cluster-[2-7a-zA-Z]{11,16}
USER_PIN = "hsm-user-pin-for-tests"
TRUST_ANCHOR = "-----BEGIN CERTIFICATE-----\nMIIBtest\n-----END CERTIFICATE-----\n"
register("SoftHSM user PIN (KeyStorePassword)", USER_PIN)
register("SoftHSM SO PIN", SO_PIN)

requires_softhsm = pytest.mark.skipif(missing_reason() is not None, reason=missing_reason() or "")


class SoftHsm(BenchSoftHsm):
    """bench/softhsm.py's SoftHSM2, with the suite's PIN and the variables a key service process needs."""

    def init_token(self, label: str, pin: str = USER_PIN) -> str:
        return super().init_token(label, pin)

    def env(self, label: str, cluster_id: str = CLUSTER_ID) -> dict[str, str]:
        """Variables for a key service process: this SoftHSM2, the token ``label`` as ``cluster_id``."""
        name = cluster_id.upper().replace("-", "_")
        return {"SOFTHSM2_CONF": str(self.conf), f"KEYSERVICE_PKCS11_{name}_MODULE": self.module,
                f"KEYSERVICE_PKCS11_{name}_TOKEN_LABEL": label}


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftHsm]:
    """This process's SoftHSM2 (see the module docstring); skips where SoftHSM2 is missing."""
    reason = missing_reason()
    if reason is not None:
        pytest.skip(reason)
    hsm = SoftHsm(tmp_path_factory.mktemp("softhsm"))
    previous = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(hsm.conf)
    yield hsm
    if previous is None:
        os.environ.pop("SOFTHSM2_CONF", None)
    else:
        os.environ["SOFTHSM2_CONF"] = previous


@pytest.fixture
def token(softhsm: SoftHsm) -> str:
    """A fresh token (its label) in this process's SoftHSM2, visible to the loaded library."""
    import pkcs11
    label = softhsm.init_token(f"t-{uuid.uuid4().hex[:12]}")
    lib = pkcs11._loaded.get(softhsm.module)  # the library reads the token directory at C_Initialize
    if lib is not None:
        lib.reinitialize()
    return label


def token_key_attributes(hsm: SoftHsm, label: str, key_label: str) -> dict[str, object]:
    """Ask the token, in a process of its own, what it says about the key labelled ``key_label``:
    its protection attributes, and what reading its value answers."""
    script = (
        "import json, sys, pkcs11\n"
        "from pkcs11 import Attribute, ObjectClass\n"
        f"lib = pkcs11.lib({hsm.module!r})\n"
        f"with lib.get_token(token_label={label!r}).open(user_pin={USER_PIN!r}) as s:\n"
        f"    keys = list(s.get_objects({{Attribute.LABEL: {key_label!r}, Attribute.CLASS: ObjectClass.SECRET_KEY}}))\n"
        "    out = {'count': len(keys)}\n"
        "    for k in keys:\n"
        "        out.update({n: bool(k[a]) for n, a in (('sensitive', Attribute.SENSITIVE),\n"
        "                   ('extractable', Attribute.EXTRACTABLE),\n"
        "                   ('never_extractable', Attribute.NEVER_EXTRACTABLE),\n"
        "                   ('token', Attribute.TOKEN))})\n"
        "        out['value_len'] = k[Attribute.VALUE_LEN]\n"
        "        try:\n"
        "            k[Attribute.VALUE]\n"
        "            out['value'] = 'readable'\n"
        "        except pkcs11.PKCS11Error as e:\n"
        "            out['value'] = type(e).__name__\n"
        "    print(json.dumps(out))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "SOFTHSM2_CONF": str(hsm.conf)})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)
