#!/usr/bin/env python3
"""A Bedrock runtime client for the tests, run inside a network namespace (`ip netns exec NS ...`).

Reads one JSON request per line on stdin and writes one JSON answer per line: the addresses the
system resolver gave for the host, then what boto3's bedrock-runtime client got (text, or the error
code and message). Each request builds a new client, so nothing is cached between requests.

  {"op": "converse"|"converse_stream"|"invoke_model"|"invoke_model_with_response_stream",
   "model": "...", "key": "testing", "secret": "testing", "endpoint_url": null, "ca": "/path/ca.pem",
   "connect_timeout": 3}
"""

from __future__ import annotations

import json
import socket
import sys
import urllib.parse

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectTimeoutError, EndpointConnectionError, ReadTimeoutError

REGION = "us-east-1"


def call(req: dict) -> dict:
    url = req.get("endpoint_url") or f"https://bedrock-runtime.{REGION}.amazonaws.com"
    host = urllib.parse.urlparse(url).hostname
    out: dict = {"host": host}
    try:
        out["resolved"] = sorted({ai[4][0] for ai in socket.getaddrinfo(host, 443, socket.AF_INET)})
    except socket.gaierror as e:
        out.update(ok=False, error="resolve", message=str(e))
        return out
    client = boto3.client(
        "bedrock-runtime", region_name=REGION, endpoint_url=req.get("endpoint_url"),
        aws_access_key_id=req.get("key", "testing"), aws_secret_access_key=req.get("secret", "testing"),
        verify=req["ca"],
        config=Config(retries={"total_max_attempts": 1}, connect_timeout=req.get("connect_timeout", 3),
                      read_timeout=10),
    )
    model = req["model"]
    op = req["op"]
    try:
        if op == "converse":
            r = client.converse(modelId=model, messages=[{"role": "user", "content": [{"text": "hi"}]}])
            text = r["output"]["message"]["content"][0]["text"]
        elif op == "converse_stream":
            r = client.converse_stream(modelId=model, messages=[{"role": "user", "content": [{"text": "hi"}]}])
            text = "".join(e["contentBlockDelta"]["delta"]["text"] for e in r["stream"] if "contentBlockDelta" in e)
        elif op == "invoke_model":
            r = client.invoke_model(modelId=model, body=json.dumps({"anthropic_version": "bedrock-2023-05-31",
                                                                     "max_tokens": 50, "messages": []}))
            answer = json.loads(r["body"].read())
            text = answer["content"][0]["text"] if "content" in answer else answer["results"][0]["outputText"]
        elif op == "invoke_model_with_response_stream":
            r = client.invoke_model_with_response_stream(modelId=model, body=json.dumps({"inputText": "hi"}))
            parts = [json.loads(e["chunk"]["bytes"]) for e in r["body"] if "chunk" in e]
            text = "".join(p.get("delta", {}).get("text", "") or p.get("outputText", "") for p in parts)
        else:
            raise SystemExit(f"unknown op {op}")
        out.update(ok=True, text=text)
    except ClientError as e:
        err = e.response.get("Error", {})
        out.update(ok=False, error=err.get("Code"), message=err.get("Message"),
                   status=e.response.get("ResponseMetadata", {}).get("HTTPStatusCode"))
    except (ConnectTimeoutError, ReadTimeoutError) as e:
        out.update(ok=False, error="timeout", message=str(e))
    except EndpointConnectionError as e:
        out.update(ok=False, error="connect", message=str(e))
    return out


def main() -> int:
    for line in sys.stdin:
        if line.strip():
            print(json.dumps(call(json.loads(line))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
