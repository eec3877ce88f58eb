"""Joining a Ray cluster: importing Ray (an optional extra), the cluster's token, and a check
that ``--address`` reaches a Ray head within seconds (``ray.init`` would wait for minutes, or for
ever).

Must not import at module level: ray.
"""

from __future__ import annotations

import socket

from octbench.errors import OctbenchError

RAY_INSTALL = 'pip install "octbench[ray]"  (or, in a checkout: pip install -e ".[ray]")'


def import_ray():
    """The ``ray`` module, or an OctbenchError that gives the install command."""
    try:
        import ray
    except ImportError:
        raise OctbenchError(
            f"--executor ray needs Ray, which is not installed; install it with {RAY_INSTALL}, "
            "or leave out --executor to train here, one run at a time."
        ) from None
    return ray


def use_cluster_token() -> None:
    """Send the cluster's token, when ``ray start`` left one in ``~/.ray/auth_token``."""
    # `ray start` clusters require the token in ~/.ray/auth_token, but ray.init(address=...)
    # only sends it when RAY_AUTH_MODE says so; Ray's own helper turns it on if a token exists.
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # a Ray without token authentication
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


#: Seconds each step of the address check may take (TCP connect, then the gRPC greeting).
CONNECT_TIMEOUT = 5.0

#: What an HTTP/2 (gRPC) client sends first: the preface and an empty SETTINGS frame.
_HTTP2_HELLO = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


def resolve_address(address: str) -> str:
    """HOST:PORT of ``--address`` (``auto``: the cluster `ray start` last started here)."""
    if address != "auto":
        return address
    from ray._private.services import canonicalize_bootstrap_address

    try:
        resolved = canonicalize_bootstrap_address("auto")
    except (ConnectionError, ValueError):
        resolved = None
    if not resolved:
        raise OctbenchError(
            "--address auto: no Ray cluster is running on this machine (Ray records none); "
            "start one here with `ray start --head`, give the head's HOST:PORT as --address, "
            "or leave out --address to start Ray just for this run.")
    return resolved


def check_reachable(address: str, resolved: str) -> None:
    """Refuse within 2 x CONNECT_TIMEOUT an address where no Ray head answers: nothing listens,
    packets are dropped, or a server that is not Ray's (it does not speak gRPC) listens."""
    shown = address if address == resolved else f"{address} (= {resolved})"
    host, _, port = resolved.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)),
                                      timeout=CONNECT_TIMEOUT) as connection:
            connection.sendall(_HTTP2_HELLO)
            reply = b""
            while len(reply) < 9:  # a gRPC server answers with its SETTINGS frame
                chunk = connection.recv(9 - len(reply))
                if not chunk:
                    break
                reply += chunk
    except TimeoutError:
        reply = None
    except (OSError, ValueError) as error:
        reason = getattr(error, "strerror", None) or error
        raise OctbenchError(
            f"cannot reach a Ray cluster at --address {shown} ({reason}); start its head with "
            "`ray start --head --port PORT`, check HOST:PORT and the firewall, or leave out "
            "--address to start Ray here.") from None
    if reply is None and not _connected_before_timeout(host, port):
        raise OctbenchError(
            f"no answer from --address {shown} within {CONNECT_TIMEOUT:g} s (packets dropped?); "
            "check HOST:PORT, that the head is up (`ray status` there) and that the firewall "
            "lets this machine in, or leave out --address to start Ray here.")
    if reply is None or len(reply) < 9 or reply[3] != 4:
        raise OctbenchError(
            f"something listens at --address {shown}, but it is not a Ray cluster (it does not "
            "answer as Ray's GCS server does); check the port: `ray start --head` prints the "
            "address to use (port 6379 unless --port was given).")


def _connected_before_timeout(host: str, port: str) -> bool:
    # Only to word the message: a connect that timed out vs a server that stayed silent.
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT):
            return True
    except OSError:
        return False
