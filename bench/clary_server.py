"""A `clary server` that a benchmark starts for itself (a given binary, a fresh data dir, a
loopback port chosen by the kernel) and ends by its PID. Shared by the benchmarks' `--before`
options, which run the same measurement against two binaries in one run."""
import os
import re
import signal
import subprocess
import tempfile
import time
import urllib.request

CACHE = os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache"))
RUNTIMES = os.environ.get("CLARY_RUNTIMES_DIR", os.path.join(CACHE, "clary", "runtimes"))


class ClaryServer:
    """`BIN server --listen 127.0.0.1:0 --data-dir <tmp>`; `url`, `keys` (the `clary env`
    exports) and `client(service)` once started. `env`: the server's environment (default:
    this process's). Only this process is signalled, by PID."""

    def __init__(self, binary, label, extra_args=(), runtimes_dir=RUNTIMES, timeout=60, env=None):
        self.binary, self.label = binary, label
        self.work = tempfile.mkdtemp(prefix="clary-bench-%s-" % label)
        self.data_dir = os.path.join(self.work, "data")
        self.log_path = os.path.join(self.work, "server.log")
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [binary, "server", "--listen", "127.0.0.1:0", "--data-dir", self.data_dir,
             "--runtimes-dir", runtimes_dir, "--stop-grace-secs", "3", *extra_args],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        log.close()
        deadline = time.time() + timeout
        self.url = None
        while self.url is None:
            m = re.search(r"listening on (http://\S+)", open(self.log_path, errors="replace").read())
            if m:
                self.url = m.group(1)
            elif self.proc.poll() is not None or time.time() > deadline:
                self.stop()
                raise RuntimeError("%s server did not start; its log:\n%s" % (label, open(self.log_path).read()))
            else:
                time.sleep(0.05)
        out = subprocess.run([binary, "env", "--data-dir", self.data_dir], capture_output=True, text=True,
                             check=True, timeout=30).stdout
        self.keys = dict(re.findall(r"export (\w+)='([^']*)'", out))
        self.port = int(self.url.rsplit(":", 1)[1])
        while True:
            try:
                with urllib.request.urlopen(self.url + "/_clary/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except Exception:
                if time.time() > deadline:
                    self.stop()
                    raise RuntimeError("%s server at %s never answered /_clary/health" % (label, self.url))
                time.sleep(0.05)

    def client(self, service, **kw):
        import boto3
        return boto3.client(service, endpoint_url=self.url, region_name=self.keys["AWS_DEFAULT_REGION"],
                            aws_access_key_id=self.keys["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=self.keys["AWS_SECRET_ACCESS_KEY"], **kw)

    def stop(self):
        """SIGINT (the server's clean stop), then SIGKILL after 15 s; this PID only."""
        if self.proc.poll() is not None:
            return
        try:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=15)
