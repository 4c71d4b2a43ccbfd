"""A candidate in its own process, for tests that kill or pause it (SIGKILL, SIGSTOP).

``python -m tests.tools.elector_proc NAME PREFIX CA CERT KEY ENDPOINT...`` prints one JSON
line per leadership change: ``{"t": monotonic, "leader": bool, "term": N}``.
"""

from __future__ import annotations

import json
import sys
import time

from swarmlet.ha import etcd as E
from swarmlet.ha.election import Elector
from swarmlet.ha.etcdconf import TLSFiles


def main() -> None:
    name, prefix, ca, cert, key, *endpoints = sys.argv[1:]
    el = Elector(E.Etcd(endpoints, TLSFiles(ca, cert, key)), prefix, {"name": name})
    el.subscribe(lambda st: print(json.dumps({"t": time.monotonic(), "leader": st.leader,
                                              "term": st.term}), flush=True))
    el.run()


if __name__ == "__main__":
    main()
