"""moto_server, checking signatures over the bytes the client signed.

moto 5 (server mode) evaluates IAM on signed requests once
INITIAL_NO_AUTH_ACTION_COUNT calls have passed, and checks each signature
first. For a form-encoded body (the Query protocol: EC2, IAM, STS) werkzeug
has parsed the form before moto sees the request, so moto re-encodes the
parsed fields with Python's urlencode and signs that: spaces become `+`
where the Rust SDK sent `%20`, and every call with a space in a field (a
security group's description, a policy document) fails with AuthFailure
although AWS would take it. This wrapper keeps each request's raw body and
hands it to moto's signature check; nothing else changes.

It also refuses what S3 refuses and moto does not: a request whose
`x-amz-expected-bucket-owner` names another account than the bucket's gets
403 AccessDenied ("Verifying bucket ownership with bucket owner condition",
https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucket-owner-condition.html:
"If the bucket owner does not match the account ID that you provide, the
request fails with an HTTP 403 (Forbidden) error"). Every bucket here is
the moto account's.

And what EC2 refuses and moto does not: AssociateAddress naming an
instance that has more than one network interface gets 400
InvalidInstanceID ("The instance must have exactly one attached network
interface. ... If the instance has more than one network interface, you
must specify a network interface ID",
https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_AssociateAddress.html).

Usage: python moto_server.py [moto_server's arguments]
"""

import io
import os
import threading
import urllib.parse

import werkzeug.serving
from moto import server
from moto.iam import access_control

raw = threading.local()
# The account every bucket here belongs to.
ACCOUNT = os.environ.get("MOTO_ACCOUNT_ID", "123456789012")


class KeepBody:
    """WSGI middleware: reads the body once, keeps it for this thread, and
    hands moto a fresh stream of the same bytes."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        owner = environ.get("HTTP_X_AMZ_EXPECTED_BUCKET_OWNER")
        if owner is not None and owner != ACCOUNT:
            body = (
                b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
                b"<Message>Access Denied</Message></Error>"
            )
            start_response(
                "403 Forbidden",
                [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))],
            )
            return [body]
        n = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(n) if n else b""
        environ["wsgi.input"] = io.BytesIO(body)
        raw.body = body
        refused = ec2_refuses(environ, body)
        if refused is not None:
            start_response(
                "400 Bad Request",
                [("Content-Type", "text/xml"), ("Content-Length", str(len(refused)))],
            )
            return [refused]
        return self.app(environ, start_response)


def ec2_refuses(environ, body):
    """EC2's answer to a Query call moto would take and EC2 refuses, or None."""
    auth = environ.get("HTTP_AUTHORIZATION", "")
    if "/ec2/aws4_request" not in auth or not body:
        return None
    form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
    if form.get("Action") != ["AssociateAddress"] or "NetworkInterfaceId" in form:
        return None
    instance_id = (form.get("InstanceId") or [""])[0]
    region = auth.split("Credential=", 1)[-1].split("/")[2]
    from moto.ec2.models import ec2_backends

    try:
        instance = ec2_backends[ACCOUNT][region].get_instance(instance_id)
    except Exception:
        return None
    if len(instance.nics) <= 1:
        return None
    message = (
        f"There are multiple interfaces attached to instance '{instance_id}'. "
        "Please specify an interface ID for the operation instead."
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
        f"<Code>InvalidInstanceID</Code><Message>{message}</Message></Error></Errors>"
        "<RequestID>fossa-moto-rule</RequestID></Response>"
    ).encode()


original_init = access_control.IAMRequest.__init__


def init_with_raw_body(self, *a, **kw):
    if not kw.get("body") and getattr(raw, "body", b""):
        kw["body"] = raw.body
    original_init(self, *a, **kw)


access_control.IAMRequest.__init__ = init_with_raw_body
original_run_simple = werkzeug.serving.run_simple


def run_simple(host, port, app, **kw):
    original_run_simple(host, port, KeepBody(app), **kw)


server.run_simple = run_simple

if __name__ == "__main__":
    server.main()
