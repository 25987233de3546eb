"""The moto fixture: a real STS and S3 over HTTP, reset for each test."""

from __future__ import annotations

import aioboto3

from .conftest import SECRET_KEY
from .moto_server import MotoServer


def _session() -> aioboto3.Session:
    return aioboto3.Session(
        aws_access_key_id="AKIATESTKEY", aws_secret_access_key=SECRET_KEY, region_name="us-east-1"
    )


async def test_assumed_roles_are_listed_with_their_access_key_and_account(moto: MotoServer) -> None:
    async with _session().client("sts") as sts:
        answer = await sts.assume_role(
            RoleArn="arn:aws:iam::111122223333:role/Migration",
            RoleSessionName="batch-updater-test",
            ExternalId="ext-1",
        )
    roles = moto.assumed_roles()
    assert [(r["access_key_id"], r["account_id"]) for r in roles] == [
        (answer["Credentials"]["AccessKeyId"], "111122223333")
    ]


async def test_each_test_starts_with_no_buckets(moto: MotoServer) -> None:
    async with _session().client("s3") as s3:
        assert (await s3.list_buckets())["Buckets"] == []
        await s3.create_bucket(Bucket="left-behind")
