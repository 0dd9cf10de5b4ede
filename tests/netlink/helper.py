#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""helper.py family | reset PORT | silent PORT: helpers of tests/netlink/run.

  family  exit 0 if the kernel has the "handshake" generic netlink family
          with a "tlshd" group, 1 if not (asks the controller; joins nothing)

The other modes are an NFS server that never completes a TLS handshake. It
answers the client's RPC-with-TLS probe (RFC 9289: a NULL call with
AUTH_TLS, answered with the "STARTTLS" verifier), so the kernel goes on to
ask for a handshake, and then fails it:

  reset   read the ClientHello, then reset the connection (RST)
  silent  read the ClientHello and say nothing, holding the connection

Prints "ready" once listening; serves until killed.
"""
import socket
import struct
import sys
import threading


def recv_exact(conn, n):
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


def starttls(conn, first):
    """Answer one RPC record (the AUTH_TLS probe) with STARTTLS."""
    marker, = struct.unpack(">I", first + recv_exact(conn, 3))
    call = recv_exact(conn, marker & 0x7FFFFFFF)
    xid = call[:4]
    # xid, REPLY, MSG_ACCEPTED, verifier AUTH_NONE "STARTTLS", SUCCESS
    body = xid + struct.pack(">III", 1, 0, 0) + struct.pack(">I", 8) + b"STARTTLS" + \
        struct.pack(">I", 0)
    conn.sendall(struct.pack(">I", 0x80000000 | len(body)) + body)


def serve(conn, mode, held):
    """One connection: RPC records (the AUTH_TLS probe) are answered until a
    TLS handshake record (first byte 0x16, the ClientHello) arrives."""
    conn.settimeout(60)
    try:
        while True:
            first = recv_exact(conn, 1)
            if first == b"\x16":
                break
            starttls(conn, first)
        hello = first + conn.recv(4096)
        print("clienthello %d bytes" % len(hello), flush=True)
    except (OSError, EOFError):
        conn.close()
        return
    if mode == "reset":
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()
    else:
        held.append(conn)


def family():
    """CTRL_CMD_GETFAMILY "handshake": is there a "tlshd" multicast group?"""
    NETLINK_GENERIC, GENL_ID_CTRL, NLMSG_ERROR = 16, 0x10, 2
    CTRL_CMD_GETFAMILY, CTRL_ATTR_FAMILY_NAME, CTRL_ATTR_MCAST_GROUPS = 3, 2, 7
    try:
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC)
    except OSError:
        return 1
    name = b"handshake\0"
    attr = struct.pack("=HH", 4 + len(name), CTRL_ATTR_FAMILY_NAME) + name
    attr += b"\0" * (-len(attr) % 4)
    body = struct.pack("=BBH", CTRL_CMD_GETFAMILY, 1, 0) + attr
    s.send(struct.pack("=IHHII", 16 + len(body), GENL_ID_CTRL, 1, 1, 0) + body)
    data = s.recv(65536)
    if struct.unpack("=IHHII", data[:16])[1] == NLMSG_ERROR:
        return 1
    off = 20
    while off + 4 <= len(data):
        alen, atype = struct.unpack("=HH", data[off:off + 4])
        if alen < 4:
            break
        if atype & 0x3FFF == CTRL_ATTR_MCAST_GROUPS and b"tlshd\0" in data[off:off + alen]:
            return 0
        off += (alen + 3) & ~3
    return 1


def main():
    if sys.argv[1] == "family":
        sys.exit(family())
    mode, port = sys.argv[1], int(sys.argv[2])
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(16)
    print("ready", flush=True)
    held = []
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=serve, args=(conn, mode, held), daemon=True).start()


if __name__ == "__main__":
    main()
