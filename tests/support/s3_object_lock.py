#!/usr/bin/env python3
"""S3 Object Lock from an independent client (boto3), for the WORM tests.

Usage (server and credentials from FHIRLAKE_S3_ENDPOINT/_KEY/_SECRET):
  s3_object_lock.py create-bucket BUCKET         a bucket with Object Lock enabled
  s3_object_lock.py attack BUCKET KEY [KEY ...]  for each key: its retention, then try to
                                                 delete its version, delete it plainly, and
                                                 overwrite it; print what held (JSON)
"""
import json
import os
import sys

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

s3 = boto3.client(
    "s3",
    endpoint_url=os.environ["FHIRLAKE_S3_ENDPOINT"],
    aws_access_key_id=os.environ["FHIRLAKE_S3_KEY"],
    aws_secret_access_key=os.environ["FHIRLAKE_S3_SECRET"],
    region_name="us-east-1",
    config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
)


def code(e):
    return e.response.get("Error", {}).get("Code", "?")


def attack(bucket, key):
    out = {"key": key}
    head = s3.head_object(Bucket=bucket, Key=key)
    version = head.get("VersionId")
    original = s3.get_object(Bucket=bucket, Key=key, VersionId=version)["Body"].read()
    try:
        r = s3.get_object_retention(Bucket=bucket, Key=key, VersionId=version)["Retention"]
        out["retention"] = {"mode": r["Mode"], "until": r["RetainUntilDate"].isoformat()}
    except ClientError as e:
        out["retention"] = None
        out["retention_error"] = code(e)
    try:
        s3.delete_object(Bucket=bucket, Key=key, VersionId=version)
        out["delete_version"] = "deleted"
    except ClientError as e:
        out["delete_version"] = code(e)
    if out["retention"] is None:
        return out  # an unlocked object: it is gone now, nothing more to try
    try:
        s3.put_object(Bucket=bucket, Key=key, Body=b"forged")
        out["overwrite"] = "new version written"
    except ClientError as e:
        out["overwrite"] = code(e)
    try:
        s3.delete_object(Bucket=bucket, Key=key)
        out["delete_plain"] = "delete marker written"
    except ClientError as e:
        out["delete_plain"] = code(e)
    kept = s3.get_object(Bucket=bucket, Key=key, VersionId=version)["Body"].read()
    out["original_kept"] = kept == original
    return out


if sys.argv[1] == "create-bucket":
    s3.create_bucket(Bucket=sys.argv[2], ObjectLockEnabledForBucket=True)
    print(json.dumps(s3.get_object_lock_configuration(Bucket=sys.argv[2])["ObjectLockConfiguration"]))
elif sys.argv[1] == "attack":
    print(json.dumps([attack(sys.argv[2], key) for key in sys.argv[3:]]))
else:
    sys.exit(f"unknown command {sys.argv[1]}")
