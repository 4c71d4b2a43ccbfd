"""Entry point: ``python3 -m swarmlet_agent --config /etc/swarmlet/agent.json``.

Owns process concerns only: arguments, logging, signals, exit codes. SIGTERM
and SIGINT stop the agent but never its tasks (they keep running and the
next agent adopts them). A config error exits 2 with one line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from typing import List, Optional

from swarmlet.shipped.exceptions import SwarmletError

from .config import load
from .daemon import Agent


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="swarmlet_agent", description="The swarmlet node agent.")
    ap.add_argument("--config", default="/etc/swarmlet/agent.json", help="agent config file")
    ap.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    args = ap.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load(args.config)
    except SwarmletError as exc:
        print(f"swarmlet-agent: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_run(config))
    except SwarmletError as exc:
        print(f"swarmlet-agent: {exc}", file=sys.stderr)
        return 1
    return 0


async def _run(config) -> None:  # type: ignore[no-untyped-def]
    agent = Agent(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, agent.request_stop)
    await agent.run()


if __name__ == "__main__":
    sys.exit(main())
