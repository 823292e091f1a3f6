"""Turns a running moto server into one that checks credentials, for the mount-failure tests.

Creates a bucket, a user allowed everything on S3 and a user allowed nothing, then switches
authentication on. Prints: ALLOWED_KEY ALLOWED_SECRET DENIED_KEY DENIED_SECRET
"""
import json
import sys
import urllib.request

import boto3

endpoint, bucket = sys.argv[1], sys.argv[2]
kw = dict(endpoint_url=endpoint, region_name="us-east-1",
          aws_access_key_id="setup", aws_secret_access_key="setup")
iam = boto3.client("iam", **kw)
boto3.client("s3", **kw).create_bucket(Bucket=bucket)
out = []
for user, allow in (("allowed", True), ("denied", False)):
    iam.create_user(UserName=user)
    if allow:
        iam.put_user_policy(UserName=user, PolicyName="all", PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    out += [key["AccessKeyId"], key["SecretAccessKey"]]
req = urllib.request.Request(endpoint + "/moto-api/reset-auth", data=b"0", method="POST",
                             headers={"Content-Type": "text/plain"})
urllib.request.urlopen(req).read()
print(" ".join(out))
