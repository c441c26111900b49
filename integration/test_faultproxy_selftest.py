# SPDX-License-Identifier: Apache-2.0
"""The TCP fault proxy (integration/faultproxy.py) against a local echo server: each mode
does what the fault tests rely on."""

import socket
import threading
import time

from faultproxy import FaultProxy

TIMEOUT = 30


class Echo:
    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stop_ev = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while not self.stop_ev.is_set():
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        c.settimeout(5)
        try:
            while True:
                d = c.recv(65536)
                if not d:
                    break
                c.sendall(d)
        except OSError:
            pass
        c.close()

    def stop(self):
        self.stop_ev.set()
        self.sock.close()


def roundtrip(s, data, timeout=5):
    s.sendall(data)
    got = b""
    s.settimeout(timeout)
    while len(got) < len(data):
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def silent(s, data):
    """Send data; True if nothing comes back within 0.5 s."""
    s.sendall(data)
    s.settimeout(0.5)
    try:
        return s.recv(10) is None
    except socket.timeout:
        return True


def with_proxy(fn):
    echo = Echo()
    proxy = FaultProxy(("127.0.0.1", echo.port)).start()
    try:
        fn(proxy)
    finally:
        proxy.stop()
        echo.stop()


def test_forwards_and_delays():
    def body(proxy):
        s = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        assert roundtrip(s, b"hello") == b"hello"
        proxy.delay(0.3)
        t = time.monotonic()
        assert roundtrip(s, b"again") == b"again"
        assert time.monotonic() - t >= 0.6  # 300 ms each way
        proxy.normal()
        s.close()
    with_proxy(body)


def test_throttle_holds_the_rate():
    def body(proxy):
        proxy.throttle(100_000)
        s = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        t = time.monotonic()
        assert roundtrip(s, b"x" * 50_000, timeout=10) == b"x" * 50_000
        assert time.monotonic() - t >= 0.45  # 50 kB at 100 kB/s (the directions overlap)
        s.close()
    with_proxy(body)


def test_blackhole_silences_open_connections_and_lets_new_ones_pass():
    def body(proxy):
        old = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        assert roundtrip(old, b"a") == b"a"
        proxy.blackhole()
        assert silent(old, b"b")
        new = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        assert roundtrip(new, b"c") == b"c"
        proxy.blackhole(new_too=True)
        newer = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        assert silent(newer, b"d")
        for s in (old, new, newer):
            s.close()
    with_proxy(body)


def test_reset_sends_rst():
    def body(proxy):
        s = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        assert roundtrip(s, b"a") == b"a"
        proxy.reset()
        time.sleep(0.1)
        try:
            s.sendall(b"b")
            got = s.recv(10)
            assert got == b"", got  # at least no data: some kernels report EOF
        except ConnectionResetError:
            pass
        assert proxy.open_connections() == 0
        s.close()
    with_proxy(body)
