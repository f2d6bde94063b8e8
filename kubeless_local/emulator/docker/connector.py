"""The relay container's program (relay mode, docker/network.py): run by python3 inside our Python
runtime image, in the network namespace the function's container joins; never imported by the package.

It listens on a unix socket in a folder the engine bound from the session's private state. For each
connection there it connects to 127.0.0.1:PORT in this namespace (the function's server, FUNC_PORT=8080)
and hands that TCP connection back as a file descriptor (SCM_RIGHTS) after one byte "+"; when it cannot
connect it answers "-" and the reason. It relays no bytes itself: the front door (frontdoor.py) does.
Further SOCKET PORT pairs do the same for other ports of the namespace (a debugged function's debugger,
`dev --debug`), each socket for its port only; the first socket appears last, once all listen (and only
once `dev` holds the lifeline, below).

It never outlives `dev`: `dev` holds a connection to SOCKET.life (the lifeline, taken before any other socket
listens) while the function runs;
when that connection ends (dev stopped it, or dev died, kill -9 included: the kernel closes it) or none
comes within LIFELINE_WAIT seconds, the connector exits and the container with it (it is auto-removed).
That covers a relay started while `dev` was stopping, after the guardian had removed the project's containers.

Usage: python3 connector.py SOCKET PORT [SOCKET PORT]…
"""

import os
import signal
import socket
import sys
import threading

HANDED, REFUSED = b"+", b"-"
CONNECT_TIMEOUT = 60.0  # as long as a client's own connect would retry: a full accept queue drains
LIFELINE_WAIT = 60.0


def held_lifeline(listener: socket.socket) -> socket.socket:
    """dev's connection to the lifeline socket; exit when none comes in time."""
    listener.settimeout(LIFELINE_WAIT)
    try:
        held, _ = listener.accept()
    except OSError:
        os._exit(0)
    held.settimeout(None)
    return held


def lifeline(held: socket.socket) -> None:
    """Exit when dev's connection to the lifeline socket ends."""
    try:
        while held.recv(64):
            pass
    except OSError:
        pass
    os._exit(0)


def hand_over(client: socket.socket, port: int) -> None:
    with client:
        try:
            upstream = socket.create_connection(("127.0.0.1", port), timeout=CONNECT_TIMEOUT)
        except OSError as exc:
            reason = "nothing listens on port %d in the container" % port
            if not isinstance(exc, ConnectionRefusedError):
                reason = "cannot connect to port %d in the container: %s" % (port, exc)
            try:
                client.sendall(REFUSED + reason.encode())
            except OSError:
                pass  # the front door gave up waiting
            return
        with upstream:
            try:
                socket.send_fds(client, [HANDED], [upstream.fileno()])
            except OSError:
                pass  # the front door gave up waiting; the connection closes here


def serve(listener: socket.socket, port: int) -> None:
    while True:
        client, _ = listener.accept()
        threading.Thread(target=hand_over, args=(client, port), daemon=True).start()


def listening(path: str) -> socket.socket:
    """A listening socket that appears at `path` only once it listens (the engine waits for the name)."""
    for stale in (path, path + ".new"):  # sockets of an earlier run of this container
        try:
            os.unlink(stale)
        except FileNotFoundError:
            pass
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path + ".new")
    os.chmod(path + ".new", 0o600)
    listener.listen(1024)
    os.rename(path + ".new", path)
    return listener


def main(pairs: list[tuple[str, int]]) -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    path, port = pairs[0]
    try:
        os.unlink(path + ".life")
    except FileNotFoundError:
        pass
    life = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    life.bind(path + ".life")
    life.listen(1)
    # first the lifeline, then the sockets: a connector that listens is one whose lifeline dev holds
    threading.Thread(target=lifeline, args=(held_lifeline(life),), daemon=True).start()
    for extra_path, extra_port in pairs[1:]:
        threading.Thread(target=serve, args=(listening(extra_path), extra_port), daemon=True).start()
    serve(listening(path), port)


if __name__ == "__main__":
    args = sys.argv[1:]
    main([(args[i], int(args[i + 1])) for i in range(0, len(args), 2)])
