"""How long a read of an S3 store that accepts connections but never answers takes to fail, and with what error.

    python benchmarks/hung_store.py

A server on 127.0.0.1 accepts every connection and answers nothing; the connector reads one object of it through
:class:`StoreLocation` (pyarrow's S3 client, its default timeouts and retries). Prints the seconds until the
error, the connections the client opened (its attempts) and the error's text.
"""

from __future__ import annotations

import os
import socket
import threading
import time

from shillelagh_amplitude.store.location import StoreError, StoreLocation


def main() -> None:
    os.environ.update({"AWS_ACCESS_KEY_ID": "bench-key", "AWS_SECRET_ACCESS_KEY": "bench-secret",
                       "AWS_EC2_METADATA_DISABLED": "true"})
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(128)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            held.append(server.accept()[0])  # accepted, never answered

    threading.Thread(target=accept, daemon=True).start()
    port = server.getsockname()[1]
    location = StoreLocation.open(f"s3://bucket/store?endpoint_override=127.0.0.1:{port}&scheme=http"
                                  "&region=us-east-1")
    started = time.monotonic()
    try:
        location.read_bytes(location.path("secret.verifier"))
        print("answered (unexpected)")
    except StoreError as exc:
        print(f"failed after {time.monotonic() - started:.1f} s, {len(held)} connections opened: {exc}")


if __name__ == "__main__":
    main()
