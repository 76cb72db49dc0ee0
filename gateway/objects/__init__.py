"""The object layer: reading and writing objects as the gateway stores them, under the handlers.

    reading.py    stat an object (HEAD, or GET when the whole body is wanted), open its key, plan and
                  decrypt a byte range or a part; every read after the metadata read is pinned
                  (If-Match) to the version whose metadata was read
    writing.py    store an object or a part from a plaintext stream, with its metadata
    multipart.py  encrypting multipart uploads: create, parts, a checked and sealed manifest, complete
    manifests.py  the sealed manifests of multipart objects: conditional create, cached reads
    plaintext.py  spans, and the plaintext sizes listings show
    store.py      ObjectStore, the one object handlers and command-line tools hold

It speaks plaintext terms only (sizes, spans, ETags as clients see them), raises S3Error for what a
client must be told, and needs no aiohttp request: command-line tools (the legacy-data migration and
re-wrap of issue 9) can use it as the handlers do. Below it: the typed upstream client
(gateway/s3client.py) and the crypto format (gateway/crypto/).
"""
