"""Output files in S3-compatible object storage (TASKQ_OUTPUT_URL=s3://bucket/prefix),
fetched straight from the store at presigned URLs.

Right for workers on many machines. The endpoint and credentials come from the
usual variables boto3 reads (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, ...). Needs the `s3` extra
(`pip install 'taskq[s3]'`). Give the bucket a host name of its own, not the
gateway's: docs/security.md says why.
"""

from __future__ import annotations

from typing import Any, BinaryIO
from urllib.parse import urlsplit

from .serving import serving


class S3Storage:
    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise ValueError(f"TASKQ_OUTPUT_URL must look like s3://bucket/prefix, not {url!r}")
        try:
            import boto3
            from botocore.config import Config
        except ImportError as exc:
            raise RuntimeError("TASKQ_OUTPUT_URL=s3://… needs boto3: pip install 'taskq[s3]'") from exc
        self.bucket = parts.netloc
        self.prefix = parts.path.strip("/")
        self.client: Any = boto3.client("s3", config=Config(signature_version="s3v4", retries={"max_attempts": 5}))

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, source: BinaryIO, content_type: str) -> None:
        # An S3 object appears whole or not at all (a multipart upload only on completion).
        self.client.upload_fileobj(source, self.bucket, self._key(key), ExtraArgs={"ContentType": content_type})

    def url(self, key: str, content_type: str, expires_s: int) -> str:
        # The store answers with the type and disposition signed into the URL, so a
        # file is served as serving.py decides (an attachment unless its type is inert),
        # whatever was stored with the object.
        how = serving(key.rsplit("/", 1)[-1], content_type)
        params = {
            "Bucket": self.bucket,
            "Key": self._key(key),
            "ResponseContentType": how.content_type,
            "ResponseContentDisposition": how.disposition,
        }
        return str(self.client.generate_presigned_url("get_object", Params=params, ExpiresIn=expires_s))

    def get(self, key: str) -> bytes:
        return bytes(self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read())

    def delete_run(self, run_id: str) -> None:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self._key(run_id) + "/"
        )
        for page in pages:
            objects = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if objects:
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": objects, "Quiet": True})

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
