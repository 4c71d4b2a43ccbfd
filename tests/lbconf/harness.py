"""The LB conformance harness: the same crafted bytes to swarmlet, nginx and
HAProxy, each in front of its own recording backend; what the client got and
what the backend saw, per case and proxy; verdicts; a table.

For each case and proxy:

- the client sends ``case.send`` (and ``case.then`` on the same connection
  after the first answer), reads until the proxy closes or goes quiet, and
  splits what it got into answers with a strict parser;
- then a *victim* request (``GET /victim-<case>``) on a new connection: it
  must get its own answer, whatever the case left behind in the proxy's
  pooled upstream connection;
- the backend's record since the case began: the requests its strict parser
  read (``describe()``), parse errors, connections cut mid-request.

**desync** is any of: the backend parsed a ``/SMUGGLED`` request whose answer
did not reach the case's client (so the proxy did not know it was a request:
it was smuggled inside another); an answer's body holds another answer (a
response split or merged); the victim got an answer that is not its own.
``/SMUGGLED`` after a message that is valid for a proxy is just the next
pipelined request, and is answered as such. **forwarded** counts the complete
requests the backend saw for the case (the victim's not included).

The targets (``violations``): swarmlet never desyncs, and never forwards
more of a case than the more permissive of nginx and HAProxy.

    python -m tests.lbconf.harness            # or bench/lb/conformance
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

from .cases import Case, cases
from .client import exchange, parse_responses
from .peers import PROXIES, Proxy, check_peers
from .recorder import Recorder


_STATUS_IN_BODY = re.compile(rb"HTTP/1\.[01] \d{3} ")


@dataclass
class Outcome:
    statuses: List[int]
    closed: bool
    leftover: bytes
    seen: List[str]                 # the backend's requests for this case
    errors: List[str]               # its parse errors
    partial: int                    # connections cut mid-request
    forwarded: int
    desync: List[str] = field(default_factory=list)

    def client(self) -> str:
        s = " ".join(str(x) for x in self.statuses) or "-"
        if self.leftover:
            s += " +junk"
        return s + (" close" if self.closed else "")

    def backend(self) -> str:
        parts = list(self.seen) + [f"err({e[:24]})" for e in self.errors]
        if self.partial:
            parts.append(f"cut x{self.partial}")
        return "; ".join(parts) or "nothing"


async def run_case(case: Case, proxy: Proxy, rec: Recorder) -> Outcome:
    if case.response is not None:
        rec.responses[case.name] = case.response
    mark = rec.mark()
    raw, closed = await exchange(proxy.port, case.send, then=case.then, timeout=2.0, idle=0.25)
    victim_target = f"/victim-{case.name}"
    vraw, _ = await exchange(proxy.port, f"GET {victim_target} HTTP/1.1\r\nHost: a\r\n\r\n"
                             .encode(), timeout=2.0, idle=0.2, answers=1)
    await asyncio.sleep(0.05)
    methods = list(case.methods)
    answers, left = parse_responses(raw, methods)
    events = rec.since(mark)
    seen = [v for k, v in events if k == "request"]
    mine = [s for s in seen if s.target != victim_target]  # type: ignore[union-attr]
    out = Outcome(
        statuses=[a.status for a in answers], closed=closed, leftover=left,
        seen=[s.describe() for s in mine],  # type: ignore[union-attr]
        errors=[str(v) for k, v in events if k == "error"],
        partial=sum(1 for k, _ in events if k == "partial"),
        forwarded=len(mine))
    answered = [a.body.split(b" ")[3].decode("latin-1") for a in answers
                if a.body.startswith(b"seen ") and len(a.body.split(b" ")) > 4]
    smuggled = [s.target for s in mine if "SMUGGLED" in s.target]  # type: ignore[union-attr]
    if smuggled and not any("SMUGGLED" in t for t in answered):
        out.desync.append("backend parsed /SMUGGLED, its answer went elsewhere")
    if any(_STATUS_IN_BODY.search(a.body) for a in answers):
        out.desync.append("an answer's body holds another answer")
    vanswers, _ = parse_responses(vraw)
    if not vanswers or vanswers[0].status != 200 or victim_target.encode() not in vanswers[0].body:
        out.desync.append("victim did not get its own answer")
    return out


async def run_all(names: Sequence[str] = PROXIES, only: Optional[Sequence[str]] = None,
                  extra: Optional[List[str]] = None) -> Dict[str, Dict[str, Outcome]]:
    """{case name: {proxy: Outcome}} for every case (or those named in ``only``)."""
    check_peers(names)
    recs = {n: await Recorder().start() for n in names}
    proxies: Dict[str, Proxy] = {}
    try:
        for n in names:
            proxies[n] = await asyncio.to_thread(Proxy, n, recs[n].port,
                                                 extra if n == "swarmlet" else None)
        results: Dict[str, Dict[str, Outcome]] = {}
        for case in cases():
            if only and case.name not in only:
                continue
            got = await asyncio.gather(*(run_case(case, proxies[n], recs[n]) for n in names))
            results[case.name] = dict(zip(names, got))
        return results
    finally:
        for p in proxies.values():
            await asyncio.to_thread(p.stop)
        for r in recs.values():
            await r.stop()


def violations(results: Dict[str, Dict[str, Outcome]]) -> List[str]:
    """Where swarmlet misses the targets: a desync, or forwarding more than both peers."""
    out = []
    for name, by in results.items():
        sw = by.get("swarmlet")
        if sw is None:
            continue
        if sw.desync:
            out.append(f"{name}: swarmlet desync: {', '.join(sw.desync)}")
        peers = [o for n, o in by.items() if n != "swarmlet"]
        if peers and sw.forwarded > max(o.forwarded for o in peers):
            out.append(f"{name}: swarmlet forwarded {sw.forwarded} request(s), nginx and "
                       f"HAProxy at most {max(o.forwarded for o in peers)}")
    return out


def table(results: Dict[str, Dict[str, Outcome]]) -> str:
    names = list(next(iter(results.values())).keys()) if results else []
    groups: Dict[str, str] = {c.name: c.group for c in cases()}
    w = 30
    lines = [f"{'case':<28} " + " ".join(f"{n + ': client | backend saw':<{w * 2}}" for n in names)]
    group = None
    for name, by in results.items():
        if groups.get(name) != group:
            group = groups.get(name)
            lines.append(f"-- {group}")
        cells = []
        for n in names:
            o = by[n]
            mark = " DESYNC" if o.desync else ""
            cells.append(f"{(o.client() + mark)[:w - 1]:<{w}}{o.backend()[:w * 2 - w - 1]:<{w}}")
        lines.append(f"{name:<28} " + " ".join(cells))
    return "\n".join(lines)


def summary(results: Dict[str, Dict[str, Outcome]]) -> str:
    names = list(next(iter(results.values())).keys()) if results else []
    lines = [f"{len(results)} cases"]
    for n in names:
        desync = sum(1 for by in results.values() if by[n].desync)
        refused = sum(1 for by in results.values()
                      if by[n].forwarded == 0 and (not by[n].statuses or by[n].statuses[0] >= 400))
        lines.append(f"  {n:<9} desync in {desync:>2} cases, refused outright {refused:>2}")
    return "\n".join(lines)


def main(argv: Sequence[str] = sys.argv[1:]) -> int:
    only = [a for a in argv if not a.startswith("-")]
    results = asyncio.run(run_all(only=only or None))
    print(table(results))
    print()
    print(summary(results))
    bad = violations(results)
    print(f"load average {os.getloadavg()[0]:.1f}")
    if bad:
        print("\nswarmlet misses the target in:\n  " + "\n  ".join(bad))
        return 1
    print("swarmlet: no desync, never forwards what both nginx and HAProxy refuse")
    return 0


if __name__ == "__main__":
    sys.exit(main())
