"""The HA control plane (issue 15): etcd members and masters on the servers.

- ``etcdconf``: an etcd member's command line (pure), shared by tests and provisioning;
- ``etcdpki``: the etcd CA and its certificates (members, master clients);
- ``etcd``: the client the master uses (endpoints, TLS, errors mapped to ours);
- ``election``: one leader through an etcd lease, its term the fencing token.

The store on top of it is ``swarmlet.master.store.etcd``.
"""
