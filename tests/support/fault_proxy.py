"""An HTTP proxy in front of moto_server that injects AWS faults.

Every Nth request (--every N; 1 = all of them) is answered with a fault in the
protocol of the service it was for: a ThrottlingException (JSON services), a
RequestLimitExceeded (EC2), Throttling (IAM, STS and EC2 Auto Scaling: the Query protocol), SlowDown (S3), a bare 500,
a slow (but then forwarded) reply, or no reply at all (hang: the request is
read and the connection held open, as a call that never answers); the kinds
(--kinds) take turns. Other requests are forwarded.
Counts are printed to stdout on exit. Loopback only.
"""

import argparse
import http.client
import http.server
import itertools
import re
import threading
import time

parser = argparse.ArgumentParser()
parser.add_argument("--listen", type=int, required=True)
parser.add_argument("--upstream", type=int, required=True)
parser.add_argument("--every", type=int, required=True)
parser.add_argument("--slow", type=float, default=1.5)
parser.add_argument("--kinds", default="throttle,500,slow")
parser.add_argument("--only-path", default=None, help="a regular expression: only requests whose path matches get faults")
args = parser.parse_args()

counter = itertools.count(1)
kinds = itertools.cycle(args.kinds.split(","))
lock = threading.Lock()


def service_of(headers):
    m = re.search(r"Credential=[^/]+/[^/]+/[^/]+/([^/]+)/", headers.get("Authorization", ""))
    return m.group(1) if m else ""


def throttle(service):
    if service == "ec2":
        body = "<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message></Error></Errors><RequestID>fault</RequestID></Response>"
        return 503, "text/xml", body, {}
    if service in ("iam", "sts", "autoscaling"):
        body = "<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error><RequestId>fault</RequestId></ErrorResponse>"
        return 400, "text/xml", body, {}
    if service == "s3":
        return 503, "application/xml", "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>", {}
    return 400, "application/x-amz-json-1.1", '{"__type":"ThrottlingException","message":"Rate exceeded"}', {"x-amzn-ErrorType": "ThrottlingException"}


class Proxy(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def handle_any(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        with lock:
            if args.only_path and not re.search(args.only_path, self.path):
                kind = None
            else:
                n = next(counter)
                kind = next(kinds) if n % args.every == 0 else None
        if kind == "hang":
            time.sleep(3600)
            return
        if kind == "slow":
            time.sleep(args.slow)
        elif kind is not None:
            status, ctype, text, extra = throttle(service_of(self.headers)) if kind == "throttle" else (500, "text/plain", "injected 500", {})
            data = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            for k, v in extra.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
            return
        conn = http.client.HTTPConnection("127.0.0.1", args.upstream, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        headers["Host"] = self.headers.get("Host", "")
        conn.request(self.command, self.path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        conn.close()

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = handle_any


http.server.ThreadingHTTPServer(("127.0.0.1", args.listen), Proxy).serve_forever()
