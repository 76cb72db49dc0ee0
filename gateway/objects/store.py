"""ObjectStore: the object layer as one object, built once per process from its parts, and once more over
each upstream user a client credential maps to (``signed_as``)."""
from __future__ import annotations

from gateway.bucketencryption import BucketEncryption
from gateway.bucketstate import BucketStates
from gateway.config import GatewayConfig
from gateway.crypto.sse import KeyProvider, ObjectKeys
from gateway.objects.listing import ListingTerms
from gateway.objects.manifests import Manifests
from gateway.objects.multipart import MultipartWriter
from gateway.objects.reading import ObjectReader, UnencryptedReads
from gateway.objects.upload_records import UploadRecords
from gateway.objects.writing import ObjectWriter
from gateway.s3client import S3Client
from gateway.upstream import Upstream
from gateway.uploads import UploadTokens


class ObjectStore:
    """Reading, writing and multipart uploads of objects over one upstream client and one set of keys."""

    def __init__(self, config: GatewayConfig, client: S3Client, keys: ObjectKeys, tokens: UploadTokens,
                 bucket_states: BucketStates, bucket_encryption: BucketEncryption,
                 unsigned_client: S3Client | None = None) -> None:
        self.config = config
        self.bucket_states = bucket_states
        self.bucket_encryption = bucket_encryption  # what a write without SSE headers gets (S3 API or TOML)
        self.client = client
        self.keys = keys
        self.tokens = tokens
        self.manifests = Manifests(client)
        self.unencrypted = UnencryptedReads(config, bucket_states)
        self.reader = ObjectReader(client, keys, self.manifests, self.unencrypted)
        # Reads for anonymous clients: sent upstream unsigned, so the upstream's public-access rules decide.
        self.anonymous_reader = ObjectReader(unsigned_client or client, keys, self.manifests, self.unencrypted)
        self.writer = ObjectWriter(client, keys)
        self.uploads = MultipartWriter(client, keys, tokens, self.manifests)
        self.upload_records = UploadRecords(client)
        self.listing = ListingTerms(client, bucket_states,
                                    lambda bucket: config.bucket_policy(bucket).encryption == "passthrough")

    def signed_as(self, upstream: Upstream) -> "ObjectStore":
        """The object layer for clients whose requests the upstream must see as its own user (``upstream``:
        the pool signed with that user's credential, `Upstream.signed_as`). Everything it does is that
        user's: object reads and writes, the listing HEADs, multipart uploads with their manifests and
        upload records under ``.s3gw/`` (so the object's owner and the bucket's policy apply to them as to
        the object), and the bucket records (state, default encryption), so an upstream refusal is the
        client's answer and a bucket the user may not read tells it nothing through the gateway.

        Shared with the gateway's own store: the object keys (whose data-key cache is per principal,
        gateway/datakeys.py) and the upload-id MAC. Every cache is its own (manifests, listing terms, upload
        records, bucket state and encryption): nothing one upstream user could read answers another's
        request. Two client credentials mapped to the same upstream user may share one such store."""
        client = S3Client(upstream, max_attempts=self.config.upstream.max_attempts)
        return ObjectStore(self.config, client, self.keys, self.tokens, self.bucket_states.signed_as(upstream),
                           self.bucket_encryption.signed_as(upstream), self.anonymous_reader.client)

    @classmethod
    def over(cls, config: GatewayConfig, upstream: Upstream, provider: KeyProvider, secret: bytes) -> "ObjectStore":
        """The object layer over a started upstream pool and key provider, keyed by the gateway secret."""
        client = S3Client(upstream, max_attempts=config.upstream.max_attempts)
        keys = ObjectKeys(provider, secret, config.kms.cache_limits)
        return cls(config, client, keys, UploadTokens(secret), BucketStates(upstream, secret),
                   BucketEncryption(upstream, secret, config),
                   S3Client(upstream.unsigned(), max_attempts=config.upstream.max_attempts))
