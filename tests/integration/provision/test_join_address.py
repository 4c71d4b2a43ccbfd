"""Finding 7: a node's address is the admin's (the target or --address), never the server's claim.

Real SSH to an in-process asyncssh server whose probe answers claim another
address in ``$SSH_CONNECTION``; the join stops at the upload step, after the
address is decided.
"""

from __future__ import annotations

import pytest

from swarmlet import cluster as clusterlib
from swarmlet.provision import plan
from swarmlet.provision.join import JoinOptions, join_all

from .conftest import GOOD_PROBE, canned

pytestmark = pytest.mark.integration
LIAR = GOOD_PROBE.replace("ssh_connection=127.0.0.1 50000 127.0.0.1 22",
                          "ssh_connection=127.0.0.1 50000 10.66.66.66 22")


def opts(cluster, key_path, **kw) -> JoinOptions:
    return JoinOptions(known_hosts=cluster.known_hosts, identity=key_path, healthy_timeout=2,
                       accept_new=True, **kw)


async def _host(ssh_server_factory, client_key):
    assert "10.66.66.66" in LIAR
    return await ssh_server_factory(client_key[0], canned(probe=LIAR, upload=(1, "stop here")))


async def test_address_is_the_target_not_what_the_server_says(cluster, ssh_server_factory, client_key,
                                                              prebuilt_deps):
    host = await _host(ssh_server_factory, client_key)
    (res,) = await join_all(cluster, [plan.Target("root", "127.0.0.1", host.port)],
                            opts(cluster, client_key[1]))
    assert res.step == "upload", res
    assert res.address == "127.0.0.1"


async def test_address_flag_wins(cluster, ssh_server_factory, client_key, prebuilt_deps):
    host = await _host(ssh_server_factory, client_key)
    (res,) = await join_all(cluster, [plan.Target("root", "127.0.0.1", host.port)],
                            opts(cluster, client_key[1], address="10.1.2.3"))
    assert res.step == "upload" and res.address == "10.1.2.3"


async def test_rejoin_that_moves_a_node_needs_the_flag(cluster, ssh_server_factory, client_key,
                                                       prebuilt_deps):
    host = await _host(ssh_server_factory, client_key)
    clusterlib.save_node(cluster, clusterlib.NodeRecord(name="web-1", address="10.9.9.9",
                                                        ssh_host="127.0.0.1", ssh_port=host.port))
    t = plan.Target("root", "127.0.0.1", host.port)
    (res,) = await join_all(cluster, [t], opts(cluster, client_key[1]))
    assert not res.ok and res.step == "probe"
    assert res.error == "web-1 is joined at 10.9.9.9; this join would move it to 127.0.0.1"
    assert "--change-address" in res.hint
    (res,) = await join_all(cluster, [t], opts(cluster, client_key[1], change_address=True))
    assert res.step == "upload" and (res.name, res.address) == ("web-1", "127.0.0.1")
