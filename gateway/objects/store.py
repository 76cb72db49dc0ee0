"""ObjectStore: the object layer as one object, built once per process from its parts."""
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

    @classmethod
    def over(cls, config: GatewayConfig, upstream: Upstream, provider: KeyProvider, secret: bytes) -> "ObjectStore":
        """The object layer over a started upstream pool and key provider, keyed by the gateway secret."""
        client = S3Client(upstream, max_attempts=config.upstream.max_attempts)
        keys = ObjectKeys(provider, secret, config.kms.cache_limits)
        return cls(config, client, keys, UploadTokens(secret), BucketStates(upstream, secret),
                   BucketEncryption(upstream, secret, config),
                   S3Client(upstream.unsigned(), max_attempts=config.upstream.max_attempts))
