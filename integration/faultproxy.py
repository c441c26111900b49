# SPDX-License-Identifier: Apache-2.0
"""A TCP fault proxy for the faults `tc netem` cannot make on these machines (no root
netns needed, loopback only): put it between pgcdc and a server, then change its mode while
traffic flows.

    proxy = FaultProxy(("127.0.0.1", redis.port)).start()
    ... point the sink at proxy.port ...
    proxy.delay(0.5)           # every chunk waits 500 ms before it is forwarded
    proxy.throttle(10_000)     # at most 10 kB/s in each direction
    proxy.blackhole()          # open connections go silent (data is swallowed, nothing
                               # answers: a half-open connection); new ones still pass
    proxy.reset()              # every open connection is closed with a TCP RST
    proxy.normal()             # back to plain forwarding
    proxy.stop()

Modes apply to both directions and to connections already open. Every socket has a
timeout, and stop() closes everything, so a test that forgets the proxy still ends.
"""

import socket
import struct
import threading
import time

CHUNK = 16384


class _Conn:
    def __init__(self, proxy, client, upstream):
        self.proxy, self.client, self.upstream = proxy, client, upstream
        self.silenced = False  # blackholed: swallow everything from now on
        self.closed = False

    def start(self):
        for src, dst in ((self.client, self.upstream), (self.upstream, self.client)):
            threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src, dst):
        p = self.proxy
        try:
            while not self.closed:
                try:
                    data = src.recv(CHUNK)
                except socket.timeout:
                    continue
                if not data:
                    if self.silenced:
                        # half-open: the peer behind a blackhole must not see this close
                        return
                    break
                with p.lock:
                    p.bytes += len(data)
                if self.silenced:
                    continue
                delay, rate = p._delay, p._rate  # read once: a test may change them meanwhile
                if delay > 0:
                    time.sleep(delay)
                if rate > 0:
                    # send in slices of 1/20 s worth: the rate holds within a chunk too
                    step = max(1, int(rate / 20))
                    for i in range(0, len(data), step):
                        if self.silenced or self.closed:
                            break
                        dst.sendall(data[i:i + step])
                        time.sleep(len(data[i:i + step]) / rate)
                    continue
                dst.sendall(data)
        except OSError:
            if self.silenced:
                return
        self.close()

    def close(self, rst=False):
        if self.closed:
            return
        self.closed = True
        for s in (self.client, self.upstream):
            try:
                if rst:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.close()
            except OSError:
                pass
        with self.proxy.lock:
            if self in self.proxy.conns:
                self.proxy.conns.remove(self)


class FaultProxy:
    def __init__(self, target, host="127.0.0.1"):
        assert host.startswith("127."), "loopback only"
        self.target = target
        self.lock = threading.Lock()
        self.conns = []
        self.accepted = 0
        self.bytes = 0
        self._delay = 0.0
        self._rate = 0.0
        self._silence_new = False
        self._stop = threading.Event()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.host, self.port = self.sock.getsockname()

    @property
    def addr(self):
        return f"{self.host}:{self.port}"

    def start(self):
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def _accept(self):
        while not self._stop.is_set():
            try:
                client, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()  # the server is down: so is the proxy's side
                continue
            for s in (client, upstream):
                s.settimeout(0.5)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            c = _Conn(self, client, upstream)
            c.silenced = self._silence_new
            with self.lock:
                self.conns.append(c)
                self.accepted += 1
            c.start()

    # ---- modes ----

    def normal(self):
        """Plain forwarding (blackholed connections stay silent: their data is gone)."""
        self._delay, self._rate, self._silence_new = 0.0, 0.0, False
        return self

    def delay(self, seconds):
        self._delay = float(seconds)
        return self

    def throttle(self, bytes_per_second):
        self._rate = float(bytes_per_second)
        return self

    def blackhole(self, new_too=False):
        """Open connections go silent; with new_too, so do the ones accepted from now on."""
        with self.lock:
            for c in self.conns:
                c.silenced = True
        self._silence_new = bool(new_too)
        return self

    def reset(self):
        """Close every open connection with a RST."""
        with self.lock:
            conns = list(self.conns)
        for c in conns:
            c.close(rst=True)
        return self

    def open_connections(self):
        with self.lock:
            return len(self.conns)

    def stop(self):
        self._stop.set()
        try:
            self.sock.close()
        except OSError:
            pass
        with self.lock:
            conns = list(self.conns)
        for c in conns:
            c.close()
