"""Clary: makes the job's host names (`algo-1`, ...) resolve in Python where the agent could
not give the job its own /etc/hosts (no namespaces without root). Python imports this module
at start-up because the agent puts this directory on PYTHONPATH; it does nothing unless
CLARY_HOSTS_FILE names the job's hosts file.
"""
import os


def _install(path):
    import socket

    names = {}
    try:
        with open(path) as f:
            for line in f:
                fields = line.split("#", 1)[0].split()
                for name in fields[1:]:
                    names.setdefault(name, fields[0])
    except OSError:
        return
    real_getaddrinfo = socket.getaddrinfo
    real_gethostbyname = socket.gethostbyname
    real_gethostbyname_ex = socket.gethostbyname_ex

    def getaddrinfo(host, *args, **kwargs):
        if isinstance(host, bytes):
            host = host.decode()
        return real_getaddrinfo(names.get(host, host), *args, **kwargs)

    def gethostbyname(host):
        return names.get(host) or real_gethostbyname(host)

    def gethostbyname_ex(host):
        if host in names:
            return host, [], [names[host]]
        return real_gethostbyname_ex(host)

    socket.getaddrinfo = getaddrinfo
    socket.gethostbyname = gethostbyname
    socket.gethostbyname_ex = gethostbyname_ex


if os.environ.get("CLARY_HOSTS_FILE"):
    _install(os.environ["CLARY_HOSTS_FILE"])
