"""A stand-in for the EC2 instance metadata service (IMDSv2), on loopback.

It hands out one role's credentials the way IMDSv2 does
(https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/instancedata-data-retrieval.html):
a session token from `PUT /latest/api/token` (which must carry
`X-aws-ec2-metadata-token-ttl-seconds`), required on every `GET`
(401 without it); the role's name under
`/latest/meta-data/iam/security-credentials/`, and its credentials as JSON
below that, the instance's id at `/latest/meta-data/instance-id`, and its
primary interface (`mac`, then `network/interfaces/macs/<mac>/interface-id`).
The keys come from the environment (FOSSA_IMDS_ROLE, FOSSA_IMDS_KEY_ID,
FOSSA_IMDS_SECRET, FOSSA_IMDS_TOKEN, FOSSA_IMDS_INSTANCE_ID and
FOSSA_IMDS_INTERFACE_ID), never argv.

It prints its port once it listens, and logs each request's method and path
to stderr.

Usage: imds.py
"""

import http.server
import json
import os
import secrets
import sys

ROLE = os.environ["FOSSA_IMDS_ROLE"]
CREDS = {
    "Code": "Success",
    "LastUpdated": "2026-12-05T00:00:00Z",
    "Type": "AWS-HMAC",
    "AccessKeyId": os.environ["FOSSA_IMDS_KEY_ID"],
    "SecretAccessKey": os.environ["FOSSA_IMDS_SECRET"],
    "Token": os.environ["FOSSA_IMDS_TOKEN"],
    "Expiration": "2099-01-01T00:00:00Z",
}
# The instance's id, when the test names one (user-data's take-over asks).
INSTANCE_ID = os.environ.get("FOSSA_IMDS_INSTANCE_ID")
# Its primary network interface, under a made-up MAC.
INTERFACE_ID = os.environ.get("FOSSA_IMDS_INTERFACE_ID")
MAC = "0a:00:00:00:00:01"
TOKENS = set()
PREFIX = "/latest/meta-data/iam/security-credentials/"


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, fmt, *args):
        sys.stderr.write(f"{self.command} {self.path}\n")

    def answer(self, code, body=b"", kind="text/plain"):
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_PUT(self):
        if self.path != "/latest/api/token":
            return self.answer(404)
        if not self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
            return self.answer(400)
        token = secrets.token_urlsafe(32)
        TOKENS.add(token)
        self.answer(200, token.encode())

    def do_GET(self):
        if self.headers.get("X-aws-ec2-metadata-token") not in TOKENS:
            return self.answer(401)
        if self.path == PREFIX:
            return self.answer(200, ROLE.encode())
        if self.path == "/latest/meta-data/instance-id" and INSTANCE_ID:
            return self.answer(200, INSTANCE_ID.encode())
        if self.path == "/latest/meta-data/mac" and INTERFACE_ID:
            return self.answer(200, MAC.encode())
        if self.path == f"/latest/meta-data/network/interfaces/macs/{MAC}/interface-id" and INTERFACE_ID:
            return self.answer(200, INTERFACE_ID.encode())
        if self.path == PREFIX + ROLE:
            return self.answer(200, json.dumps(CREDS, indent=2).encode(), "application/json")
        self.answer(404)


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
