"""A three-node JetStream cluster of real nats-server processes on loopback."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from backfill_doubles.natsserver import NatsServerProcess, free_port


class NatsCluster:
    def __init__(self, size: int = 3) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="nats-cluster-"))
        ports = [(free_port(), free_port()) for _ in range(size)]
        self.nodes: dict[str, NatsServerProcess] = {}
        for index, (client, route) in enumerate(ports):
            name = f"n{index + 1}"
            routes = ", ".join(f"nats-route://127.0.0.1:{r}" for i, (_, r) in enumerate(ports) if i != index)
            config = self.root / f"{name}.conf"
            config.write_text(
                f"server_name: {name}\n"  # the store dir comes from -sd on the command line
                f"cluster {{ name: backfill, listen: 127.0.0.1:{route}, routes: [{routes}] }}\n"
            )
            self.nodes[name] = NatsServerProcess(
                port=client, store=self.root / name, extra=["-c", str(config)]
            )

    @property
    def urls(self) -> str:
        return ",".join(node.url for node in self.nodes.values())

    def start(self) -> None:
        for node in self.nodes.values():
            node.start()

    def close(self) -> None:
        for node in self.nodes.values():
            node.stop()
        shutil.rmtree(self.root, ignore_errors=True)
