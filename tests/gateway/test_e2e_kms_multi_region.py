"""A gateway in another region reads objects written through a gateway of the key's home region, when
their CMK is a multi-region key replicated there: same upstream bucket (as a replicated bucket would be),
same gateway secret, each gateway on its own region's ``keyservice serve``."""
from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from tests.gateway.conftest import start_gateway_with_remote_kms
from tests.keyservice.regions import AWAY, HOME, regions  # noqa: F401  (regions: the fixture)
from tests.support.clients import s3_client
from tests.support.secrets import GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY

BODY = b"written at home, read away " * 4000


def test_an_object_written_through_the_home_gateway_reads_through_the_away_gateway(moto, regions,
                                                                                   tmp_path: Path) -> None:
    home, away = regions
    key_id = home.kms().create_key(MultiRegion=True)["KeyMetadata"]["KeyId"]
    home_arn = home.kms().describe_key(KeyId=key_id)["KeyMetadata"]["Arn"]
    away_arn = home.kms().replicate_key(KeyId=key_id, ReplicaRegion=AWAY)["ReplicaKeyMetadata"]["Arn"]
    single = home.kms().create_key()["KeyMetadata"]["Arn"]  # a single-region key: not readable away
    shared = {"GATEWAY_SECRET_FILE": str(tmp_path / "gateway-secret")}
    for gateway_dir in ("home-gateway", "away-gateway"):
        (tmp_path / gateway_dir).mkdir()
    home_gw = start_gateway_with_remote_kms(moto, tmp_path / "home-gateway", home.url, home_arn,
                                            {**shared, "GATEWAY_KMS_REGION": HOME})
    away_gw = start_gateway_with_remote_kms(moto, tmp_path / "away-gateway", away.url, away_arn,
                                            {**shared, "GATEWAY_KMS_REGION": AWAY})
    try:
        writer = s3_client(home_gw.url, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY)
        reader = s3_client(away_gw.url, GATEWAY_ACCESS_KEY, GATEWAY_SECRET_KEY)
        bucket = f"mrk-{uuid.uuid4().hex[:12]}"
        writer.create_bucket(Bucket=bucket)
        put = writer.put_object(Bucket=bucket, Key="obj", Body=BODY, ServerSideEncryption="aws:kms",
                                SSEKMSEncryptionContext="eyJ0ZWFtIjoiYmx1ZSJ9")  # {"team":"blue"}
        assert put["SSEKMSKeyId"] == home_arn
        bucket_keyed = writer.put_object(Bucket=bucket, Key="bucket-key", Body=b"under a Bucket Key",
                                         ServerSideEncryption="aws:kms", BucketKeyEnabled=True)
        assert bucket_keyed["BucketKeyEnabled"] is True
        parts = [b"p" * (5 << 20), b"the last part"]
        upload = writer.create_multipart_upload(Bucket=bucket, Key="multipart", ServerSideEncryption="aws:kms")
        etags = [writer.upload_part(Bucket=bucket, Key="multipart", UploadId=upload["UploadId"], PartNumber=n,
                                    Body=part)["ETag"] for n, part in enumerate(parts, 1)]
        writer.complete_multipart_upload(Bucket=bucket, Key="multipart", UploadId=upload["UploadId"],
                                         MultipartUpload={"Parts": [{"ETag": e, "PartNumber": n}
                                                                    for n, e in enumerate(etags, 1)]})
        writer.put_object(Bucket=bucket, Key="single", Body=b"home only", ServerSideEncryption="aws:kms",
                          SSEKMSKeyId=single)

        got = reader.get_object(Bucket=bucket, Key="obj")
        assert (got["Body"].read(), got["SSEKMSKeyId"]) == (BODY, home_arn)  # the ARN the object records
        assert reader.get_object(Bucket=bucket, Key="obj", Range="bytes=5-9")["Body"].read() == BODY[5:10]
        assert reader.get_object(Bucket=bucket, Key="bucket-key")["Body"].read() == b"under a Bucket Key"
        assert reader.get_object(Bucket=bucket, Key="multipart")["Body"].read() == b"".join(parts)
        with pytest.raises(ClientError) as elsewhere:
            reader.get_object(Bucket=bucket, Key="single")
        # its blob names a key the away key service does not have: KMS InvalidCiphertextException, which the
        # gateway answers as for any blob that does not decrypt
        assert (elsewhere.value.response["ResponseMetadata"]["HTTPStatusCode"],
                elsewhere.value.response["Error"]["Code"]) == (500, "InternalError")

    finally:
        assert home_gw.stop() == 0, home_gw.log()
        assert away_gw.stop() == 0, away_gw.log()
