"""Benchmarks of the gateway and the key service, and the servers they start (a fast S3 sink, a plain
proxy). Run each from the repository root as a module, e.g. ``.venv/bin/python -m bench.kms_bench``;
bench/README.md says what each measures. ``tests/bench`` runs every one at tiny sizes."""
