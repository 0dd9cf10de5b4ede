#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Run ktlshd the way systemd runs ktlshd.service, and check what it says.

    sdenv.py BUILD_DIR WORK_DIR

Like systemd with ktlshd.socket and Type=notify, this harness
  - creates the listening AF_UNIX SOCK_SEQPACKET socket itself and passes it
    as fd 3 with LISTEN_FDS=1, LISTEN_PID=<the daemon's pid> (set in the
    child between fork and exec), LISTEN_FDNAMES=ktlshd.socket: nonblocking
    as ktlshd.service asks (NonBlocking=yes), then once more blocking, as
    systemd passes it to a service that does not ask;
  - listens on a SOCK_DGRAM socket named by NOTIFY_SOCKET, with SO_PASSCRED,
    so it sees every sd_notify() message and the pid that sent it.

It then checks READY=1 (and that the daemon serves on the inherited socket
right after it), RELOADING=1/READY=1 on SIGHUP and on `ktlshctl reload`
(ExecReload=), a refused reload, and STOPPING=1 on SIGTERM with handshakes in
flight finishing and being answered before the daemon exits.

The daemon runs with --handshake-only, so nothing needs kernel TLS: a
finished handshake is answered "not offloaded" instead of installing keys.
Prints "ok N - ...", "not ok N - ..." and "SKIP ..." lines, and exits 1 if
any check failed.
"""
import os
import re
import select
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time

BUILD, WORK = sys.argv[1], sys.argv[2]
KTLSHD = os.path.join(BUILD, "ktlshd")
KTLSHCTL = os.path.join(BUILD, "ktlshctl")
MKCERTS = os.path.join(BUILD, "tests", "tools", "ktlsh-mkcerts")

num = int(os.environ.get("KTLSH_TEST_NUM", "0"))	# numbering goes on from the caller's
failures = 0


def ok(cond, name, why=""):
    global num, failures
    num += 1
    if cond:
        print(f"ok {num} - {name}", flush=True)
    else:
        failures += 1
        print(f"not ok {num} - {name}{': ' + why if why else ''}", flush=True)
    return cond


def skip(name, why):
    print(f"SKIP {name}: {why}", flush=True)


class Notify:
    """The NOTIFY_SOCKET end: every datagram with the sender's pid."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.msgs = []		# (monotonic time, pid, {key: value}, raw)

    def _read(self, timeout):
        r, _, _ = select.select([self.sock], [], [], max(timeout, 0))
        if not r:
            return False
        data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
        pid = -1
        for level, typ, cdata in anc:
            if level == socket.SOL_SOCKET and typ == socket.SCM_CREDENTIALS:
                pid = struct.unpack("3i", cdata[:12])[0]
        text = data.decode("utf-8", "replace")
        fields = {}
        for line in text.split("\n"):
            if "=" in line:
                k, v = line.split("=", 1)
                fields[k] = v
        self.msgs.append((time.monotonic(), pid, fields, text))
        return True

    def wait(self, key, value=None, timeout=10.0, start=0):
        """The first message at index >= start with key (=value); its index."""
        deadline = time.monotonic() + timeout
        i = start
        while True:
            while i < len(self.msgs):
                f = self.msgs[i][2]
                if key in f and (value is None or f[key] == value):
                    return i
                i += 1
            if not self._read(deadline - time.monotonic()):
                return None

    def drain(self, seconds=0.2):
        deadline = time.monotonic() + seconds
        while self._read(deadline - time.monotonic()):
            pass


def spawn_daemon(lsock, notify_path, args, log_path):
    """fork; in the child: fd 3 = lsock, LISTEN_PID = own pid, exec ktlshd."""
    env = dict(os.environ)
    for k in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "NOTIFY_SOCKET", "JOURNAL_STREAM"):
        env.pop(k, None)
    pid = os.fork()
    if pid == 0:
        try:
            null = os.open("/dev/null", os.O_RDONLY)
            log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(null, 0)
            os.dup2(log, 1)
            os.dup2(log, 2)
            if lsock.fileno() == 3:
                os.set_inheritable(3, True)
            else:
                os.dup2(lsock.fileno(), 3)	# dup2 clears close-on-exec
            os.closerange(4, 4096)
            env.update(LISTEN_FDS="1", LISTEN_PID=str(os.getpid()),
                       LISTEN_FDNAMES="ktlshd.socket", NOTIFY_SOCKET=notify_path)
            os.execve(KTLSHD, [KTLSHD] + args, env)
        finally:
            os._exit(127)
    return pid


def listener(path, blocking):
    if os.path.exists(path):
        os.unlink(path)
    lsock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    lsock.bind(path)
    os.chmod(path, 0o666)
    lsock.listen(4096)
    lsock.setblocking(blocking)
    return lsock


def ctl(sockpath, *args, timeout=10):
    """Run ktlshctl; (exit status, stdout + stderr). 124: it hung."""
    try:
        p = subprocess.run([KTLSHCTL, "-s", sockpath, *args], capture_output=True,
                           text=True, timeout=timeout)
        return p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        return 124, out + f"\n(ktlshctl still waiting after {timeout} s)"


def status_items(sockpath):
    rc, out = ctl(sockpath, "status", timeout=5)
    items = {}
    for line in out.splitlines():
        parts = line.split(None, 1)
        if len(parts) == 2:
            items[parts[0]] = parts[1].strip()
    return rc, items, out


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Reaper(threading.Thread):
    """waitpid() in a thread, so the exit time is known exactly."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid = pid
        self.code = None
        self.when = None
        self.start()

    def run(self):
        _, st = os.waitpid(self.pid, 0)
        self.when = time.monotonic()
        self.code = os.waitstatus_to_exitcode(st)


def log_text(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def main():
    os.makedirs(WORK, exist_ok=True)
    certs = os.path.join(WORK, "certs")
    subprocess.run([MKCERTS, certs], check=True, stdout=subprocess.DEVNULL)
    conf = os.path.join(WORK, "ktlshd.conf")
    abstract = f"ktlsh-deploy-{os.getpid()}"
    good_conf = f"""[global]
socket = @{abstract}
workers = 2
handshake_timeout = 3s
log_level = info

[identity deploy]
cert = {certs}/server-ecdsa.pem
key = {certs}/server-ecdsa.key
allow_uids = *
"""
    with open(conf, "w") as f:
        f.write(good_conf)
    ctl_path = os.path.join(WORK, "ctl.sock")
    notify_path = os.path.join(WORK, "notify.sock")
    log_path = os.path.join(WORK, "ktlshd.log")
    for p in (ctl_path, notify_path):
        if os.path.exists(p):
            os.unlink(p)

    # As ktlshd.socket and ktlshd.service make it: ListenSequentialPacket=,
    # SocketMode=0666, Backlog=4096, and the service's NonBlocking=yes.
    lsock = listener(ctl_path, blocking=False)
    notify = Notify(notify_path)

    pid = spawn_daemon(lsock, notify_path, ["--config", conf, "--handshake-only"], log_path)
    reaper = Reaper(pid)
    helpers = []
    try:
        run_checks(pid, reaper, notify, ctl_path, conf, good_conf, abstract, certs, log_path, helpers)
    finally:
        for h in helpers:
            if h.poll() is None:
                h.kill()
                h.wait()
        if reaper.code is None:
            os.kill(pid, signal.SIGKILL)
            reaper.join(5)
        lsock.close()
        if failures:
            print("---- ktlshd log ----")
            print(log_text(log_path), end="")
            print("---- notifications ----")
            for t, p, _, raw in notify.msgs:
                print(f"pid {p}: {raw!r}")
    if reaper.code is not None:
        blocking_listener(conf, os.path.join(WORK, "ctl-blocking.sock"),
                          os.path.join(WORK, "notify-blocking.sock"),
                          os.path.join(WORK, "ktlshd-blocking.log"))
    return 1 if failures else 0


def blocking_listener(conf, ctl_path, notify_path, log_path):
    """Without NonBlocking=yes in the service, systemd passes a blocking
    listener: the daemon must not hang in accept() on it."""
    lsock = listener(ctl_path, blocking=True)
    notify = Notify(notify_path)
    pid = spawn_daemon(lsock, notify_path, ["--config", conf, "--handshake-only"], log_path)
    reaper = Reaper(pid)
    try:
        i = notify.wait("READY", "1", timeout=15)
        rc, items, out = status_items(ctl_path) if i is not None else (1, {}, "no READY=1")
        good = ok(rc == 0 and items.get("pid") == str(pid),
                  "blocking listener (a service without NonBlocking=yes): status is answered",
                  f"exit {rc}: {out.strip()[-200:]}")
        if good:
            os.kill(pid, signal.SIGTERM)
            reaper.join(10)
            ok(reaper.code == 0, "blocking listener: SIGTERM stops it", f"exit {reaper.code}")
    finally:
        if reaper.code is None:
            os.kill(pid, signal.SIGKILL)
            reaper.join(5)
        lsock.close()


def run_checks(pid, reaper, notify, ctl_path, conf, good_conf, abstract, certs, log_path, helpers):
    # ---- start --------------------------------------------------------------
    i = notify.wait("READY", "1", timeout=15)
    if not ok(i is not None, "start: READY=1 arrives"):
        return
    ready = notify.msgs[i]
    ok(ready[1] == pid, "start: READY=1 comes from the main pid (NotifyAccess=main)",
       f"sender pid {ready[1]}, daemon pid {pid}")
    ok("STATUS" in ready[2], "start: READY=1 carries a STATUS= line", repr(ready[3]))
    # Right after READY=1, on the socket systemd passed: the daemon must be
    # serving already, and must not block in accept() on a blocking listener.
    rc, items, out = status_items(ctl_path)
    ok(rc == 0 and items.get("pid") == str(pid),
       "start: ktlshctl status answers right after READY=1, on the inherited socket",
       f"exit {rc}: {out.strip()[-300:]}")
    rc2, _, out2 = status_items(ctl_path)
    ok(rc2 == 0, "start: a second status request is answered too", f"exit {rc2}: {out2.strip()[-200:]}")
    ok("control socket from systemd" in log_text(log_path),
       "socket activation: the daemon says it took systemd's socket")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        s.connect("\0" + abstract)
        bound = True
    except OSError:
        bound = False
    finally:
        s.close()
    ok(not bound, "socket activation: the configured socket is not bound as well",
       f"@{abstract} accepts connections")

    # ---- reload by SIGHUP --------------------------------------------------------
    rc, items, _ = status_items(ctl_path)
    gen0 = int(items.get("config.generation", "0") or 0)
    start = len(notify.msgs)
    t_hup = time.monotonic()
    os.kill(pid, signal.SIGHUP)
    i = notify.wait("RELOADING", "1", timeout=10, start=start)
    j = notify.wait("READY", "1", timeout=10, start=i + 1) if i is not None else None
    ok(i is not None and j is not None, "SIGHUP: RELOADING=1, then READY=1")
    if i is not None:
        mono = notify.msgs[i][2].get("MONOTONIC_USEC")
        if mono is None:
            skip("SIGHUP: RELOADING=1 carries MONOTONIC_USEC=",
                 "not sent (Type=notify-reload, systemd >= 253, needs it; "
                 "Type=notify with ExecReload= does not)")
        else:
            now_us = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
            ok(mono.isdigit() and t_hup * 1e6 - 1e6 <= int(mono) <= now_us,
               "SIGHUP: RELOADING=1 carries a current MONOTONIC_USEC=", mono)
    rc, items, _ = status_items(ctl_path)
    gen1 = int(items.get("config.generation", "0") or 0)
    ok(rc == 0 and gen1 > gen0, "SIGHUP: the configuration generation went up",
       f"{gen0} -> {gen1}")

    # ---- reload by ktlshctl (ExecReload=) -------------------------------------
    start = len(notify.msgs)
    rc, out = ctl(ctl_path, "reload")
    ok(rc == 0 and "reloaded" in out, "ExecReload: ktlshctl reload succeeds",
       f"exit {rc}: {out.strip()}")
    i = notify.wait("RELOADING", "1", timeout=2, start=start)
    j = notify.wait("READY", "1", timeout=2, start=i + 1) if i is not None else None
    ok(i is not None and j is not None,
       "ExecReload: a reload asked over the control socket sends RELOADING=1 and READY=1 too")

    with open(conf, "w") as f:
        f.write(good_conf + "[identity broken]\ncert = /nonexistent.pem\nkey = /nonexistent.key\n")
    rc, out = ctl(ctl_path, "reload")
    ok(rc != 0 and re.search(r"ktlshd\.conf:\d+", out) is not None,
       "ExecReload: a broken configuration is refused with file:line (systemctl reload fails)",
       f"exit {rc}: {out.strip()}")
    rc2, items, _ = status_items(ctl_path)
    gen2 = int(items.get("config.generation", "0") or 0)
    ok(rc2 == 0 and gen2 == gen1 + 1, "ExecReload: after a refused reload it serves the previous configuration",
       f"exit {rc2}, generation {gen2}")
    with open(conf, "w") as f:
        f.write(good_conf)

    # ---- stop with handshakes in flight -----------------------------------------
    # A: a client that connects and never speaks: the handshake times out
    #    (handshake_timeout = 3s) and is answered during the stop.
    # B: a client that connects, waits until the daemon said STOPPING=1, then
    #    does a whole TLS handshake: it completes and is answered.
    port_a, port_b = free_port(), free_port()
    # The request's limit (ktlshctl --timeout) and handshake_timeout agree.
    hs_a = subprocess.Popen([KTLSHCTL, "-s", ctl_path, "handshake", "--listen",
                             f"127.0.0.1:{port_a}", "--identity", "deploy", "--timeout", "3000"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    hs_b = subprocess.Popen([KTLSHCTL, "-s", ctl_path, "handshake", "--listen",
                             f"127.0.0.1:{port_b}", "--identity", "deploy", "--timeout", "20000"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    helpers += [hs_a, hs_b]
    cli_a = cli_b = None
    t_before_a = 0.0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (cli_a is None or cli_b is None):
        for which, port in (("a", port_a), ("b", port_b)):
            if (which == "a" and cli_a) or (which == "b" and cli_b):
                continue
            c = socket.socket()
            if which == "a":
                t_before_a = time.monotonic()	# A's deadline: after this + 3 s
            try:
                c.connect(("127.0.0.1", port))
            except OSError:
                c.close()
                continue
            if which == "a":
                cli_a = c
            else:
                cli_b = c
        time.sleep(0.05)
    if not ok(cli_a is not None and cli_b is not None, "stop: two clients connected through ktlshctl"):
        return
    inflight = None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rc, items, _ = status_items(ctl_path)
        inflight = items.get("handshakes.inflight")
        if inflight == "2":
            break
        time.sleep(0.05)
    ok(inflight == "2", "stop: two handshakes in flight before SIGTERM", f"inflight {inflight}")

    start = len(notify.msgs)
    t_term = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    i = notify.wait("STOPPING", "1", timeout=5, start=start)
    ok(i is not None and notify.msgs[i][0] - t_term < 2.0, "SIGTERM: STOPPING=1 at once")
    ok(i is not None and "STATUS" in notify.msgs[i][2], "SIGTERM: STOPPING=1 carries a STATUS= line")

    ctx = ssl.create_default_context(cafile=os.path.join(certs, "ca.pem"))
    tls_ok, tls_why = False, ""
    try:
        cli_b.settimeout(10)
        tb = ctx.wrap_socket(cli_b, server_hostname="localhost")
        tls_ok = True
        tls_why = tb.version()
        tb.close()
    except (OSError, ssl.SSLError) as e:
        tls_why = str(e)
    ok(tls_ok, "stop: a handshake started before SIGTERM completes after STOPPING=1", tls_why)

    try:
        out_b, _ = hs_b.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        out_b = "(no answer)"
    ok("handshake completed" in out_b and "not offloaded" in out_b,
       "stop: its application gets the daemon's answer", out_b.strip()[-300:])
    try:
        out_a, _ = hs_a.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        out_a = "(no answer)"
    t_a = time.monotonic()
    ok(re.search(r"^status\s+-110\b", out_a, re.M) is not None and "timed out" in out_a,
       "stop: the silent client's handshake times out and is answered", out_a.strip()[-300:])
    cli_a.close()

    reaper.join(15)
    ok(reaper.code == 0, "stop: ktlshd exits 0", f"exit {reaper.code}")
    when = reaper.when - t_term if reaper.when else -1
    ok(reaper.when is not None and reaper.when >= t_before_a + 3.0 and reaper.when < t_a + 3,
       "stop: ktlshd exits once the handshakes in flight are answered, not before",
       f"exit {when:.2f} s after SIGTERM, the silent handshake's deadline "
       f">= {t_before_a + 3.0 - t_term:.2f} s, its answer by {t_a - t_term:.2f} s")
    senders = {p for _, p, _, _ in notify.msgs}
    ok(senders == {pid}, "notify: every message came from the main pid", f"senders {senders}")


if __name__ == "__main__":
    sys.exit(main())
