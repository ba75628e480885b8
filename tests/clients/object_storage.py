"""Puts and deletes objects in the local object-storage servers of tests/object_storage.rs
with the clouds' own Python SDKs (boto3 for S3, azure-storage-blob for Azure), so that
what Warden fetches was written by an independent client.

    object_storage.py s3 ENDPOINT OPS_JSON
    object_storage.py az CONNECTION_STRING OPS_JSON
    object_storage.py gs BASE_URL OPS_JSON   (fake-gcs-server's JSON API, no auth)

OPS_JSON is a list of ["bucket", NAME] | ["put", BUCKET, KEY, FILE] |
["put_bytes", BUCKET, KEY, TEXT] | ["delete", BUCKET, KEY]. Credentials for S3 come
from the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION).
"""

import json
import sys


def s3(endpoint, ops):
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint)
    for op in ops:
        if op[0] == "bucket":
            client.create_bucket(Bucket=op[1])
        elif op[0] == "put":
            with open(op[3], "rb") as f:
                client.put_object(Bucket=op[1], Key=op[2], Body=f.read())
        elif op[0] == "put_bytes":
            client.put_object(Bucket=op[1], Key=op[2], Body=op[3].encode())
        elif op[0] == "delete":
            client.delete_object(Bucket=op[1], Key=op[2])
        else:
            raise SystemExit(f"unknown op {op[0]}")


def az(connection_string, ops):
    from azure.storage.blob import BlobServiceClient

    service = BlobServiceClient.from_connection_string(connection_string)
    for op in ops:
        if op[0] == "bucket":
            service.create_container(op[1])
        elif op[0] == "put":
            with open(op[3], "rb") as f:
                service.get_blob_client(op[1], op[2]).upload_blob(f.read(), overwrite=True)
        elif op[0] == "put_bytes":
            service.get_blob_client(op[1], op[2]).upload_blob(op[3].encode(), overwrite=True)
        elif op[0] == "delete":
            service.get_blob_client(op[1], op[2]).delete_blob()
        else:
            raise SystemExit(f"unknown op {op[0]}")


def gs(base_url, ops):
    import urllib.parse
    import urllib.request

    def call(method, path, body=b"", ctype="application/json"):
        req = urllib.request.Request(base_url + path, data=body or None, method=method)
        req.add_header("content-type", ctype)
        urllib.request.urlopen(req).read()

    for op in ops:
        if op[0] == "bucket":
            call("POST", "/storage/v1/b", json.dumps({"name": op[1]}).encode())
        elif op[0] in ("put", "put_bytes"):
            data = open(op[3], "rb").read() if op[0] == "put" else op[3].encode()
            name = urllib.parse.quote(op[2], safe="")
            call("POST", f"/upload/storage/v1/b/{op[1]}/o?uploadType=media&name={name}", data,
                 "application/octet-stream")
        elif op[0] == "delete":
            call("DELETE", f"/storage/v1/b/{op[1]}/o/{urllib.parse.quote(op[2], safe='')}")
        else:
            raise SystemExit(f"unknown op {op[0]}")


if __name__ == "__main__":
    kind, where, ops = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    {"s3": s3, "az": az, "gs": gs}[kind](where, ops)
