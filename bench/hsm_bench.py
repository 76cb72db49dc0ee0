"""Custom key store throughput: GenerateDataKey and Decrypt per second for a key whose material is in a
PKCS#11 token (SoftHSM2, AES-GCM computed by the token) against a key kept in the key store.

Both keys live in one key service, called in process through ``KmsApi.call`` (quota, service, audit)
as bench/kms_bench.py does, one call at a time by default. A key in the store is answered on the
caller's loop from memory; a key in a token goes to the service's thread, which calls the token.

    .venv/bin/python -m bench.hsm_bench [--seconds 3] [--workers 1]
"""
from __future__ import annotations

import argparse
import os
import tempfile
from dataclasses import replace
from pathlib import Path

from bench.kms_bench import ACCOUNT, CREDS, Result, bench_config, run_for
from bench.softhsm import SoftHsm, missing_reason
from common.eventloop import run
from keyservice.config import build_api
from keyservice.pkcs11backend import TokenConfig
from keyservice.service import CallContext

CLUSTER_ID = "cluster-benchsofthsm"
LABEL = "bench"
PIN = "bench-user-pin"


async def measure(data_dir: Path, hsm: SoftHsm, seconds: float, workers: int) -> list[Result]:
    config = replace(bench_config(data_dir), pkcs11={CLUSTER_ID: TokenConfig(CLUSTER_ID, hsm.module, LABEL)})
    api = build_api(config)
    ctx = CallContext(principal_arn=f"arn:aws:iam::{ACCOUNT}:root", account_id=ACCOUNT,
                      request_id="bench", access_key=CREDS[0], source="bench")
    try:
        store_id = (await api.call("CreateCustomKeyStore", {
            "CustomKeyStoreName": "bench", "CloudHsmClusterId": CLUSTER_ID, "TrustAnchorCertificate": "bench",
            "KeyStorePassword": PIN}, ctx))["CustomKeyStoreId"]
        await api.call("ConnectCustomKeyStore", {"CustomKeyStoreId": store_id}, ctx)
        keys = {"store": (await api.call("CreateKey", {}, ctx))["KeyMetadata"]["KeyId"],
                "token": (await api.call("CreateKey", {"Origin": "AWS_CLOUDHSM", "CustomKeyStoreId": store_id},
                                         ctx))["KeyMetadata"]["KeyId"]}
        results = []
        for kind, key_id in keys.items():
            gdk = {"KeyId": key_id, "KeySpec": "AES_256", "EncryptionContext": {"bucket": "b", "key": "k"}}
            blob = (await api.call("GenerateDataKey", gdk, ctx))["CiphertextBlob"]
            decrypt_params = {"CiphertextBlob": blob, "EncryptionContext": gdk["EncryptionContext"]}

            async def generate() -> None:
                await api.call("GenerateDataKey", gdk, ctx)

            async def decrypt() -> None:
                await api.call("Decrypt", decrypt_params, ctx)

            results.append(await run_for(seconds, workers, generate, kind, "GenerateDataKey"))
            results.append(await run_for(seconds, workers, decrypt, kind, "Decrypt"))
        return results
    finally:
        await api.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--workers", type=int, default=1, help="concurrent in-process callers")
    args = parser.parse_args()
    reason = missing_reason()
    if reason is not None:
        raise SystemExit(f"hsm_bench: {reason}")
    with tempfile.TemporaryDirectory(prefix="hsm-bench-") as tmp:
        hsm = SoftHsm(Path(tmp) / "softhsm")
        hsm.init_token(LABEL, PIN)
        os.environ["SOFTHSM2_CONF"] = str(hsm.conf)  # before the library is first loaded
        results = run(measure(Path(tmp) / "ks", hsm, args.seconds, args.workers))
    print("| key in     | operation       |      ops/s |  p50 ms  |  p99 ms  | server CPU us/op | client CPU us/op |")
    print("|------------|-----------------|-----------:|---------:|---------:|---------:|---------:|")
    for result in results:
        print(result.row())


if __name__ == "__main__":
    main()
