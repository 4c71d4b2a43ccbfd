"""Commands of the CLI contract that are not built yet.

Each exists, with help and an example, and says plainly "not implemented
yet" with exit code 2. No fake output. A module that builds a command
registers the real one, and its stub is then not used.
"""

from __future__ import annotations

import click

from ..shipped.exceptions import NotImplementedYet

# name -> (help, example). Sub-groups use "group sub" names.
CONTRACT = {
    "init": ("Create a cluster (CA, keys, config) and start the master.", "swarmlet init --name prod"),
    "join": ("Install the agent on servers over SSH and join them.", "swarmlet join --accept-new-host-key root@10.0.0.5"),
    "leave": ("Remove a node's agent; the others see it as left.", "swarmlet leave node-1 --purge"),
    "nodes": ("List the cluster's nodes.", "swarmlet nodes -o json"),
    "node drain": ("Move a node's tasks elsewhere and stop placing new ones.", "swarmlet node drain node-1"),
    "node activate": ("Let the scheduler use a drained node again.", "swarmlet node activate node-1"),
    "node rm": ("Remove a node (same as leave).", "swarmlet node rm node-1"),
    "run": ("Create a service from flags.", "swarmlet run web --image swarmlet-hello:1 --replicas 3 -p 8080:8080"),
    "deploy": ("Create or update services from a Compose stack file.", "swarmlet deploy -f examples/hello/stack.yml"),
    "services": ("List services.", "swarmlet services -o json"),
    "ps": ("List tasks (replicas), and why any is pending.", "swarmlet ps web"),
    "scale": ("Set the replica count of services.", "swarmlet scale web=5"),
    "update": ("Rolling-update a service.", "swarmlet update web --image swarmlet-hello:2"),
    "rollback": ("Return a service to an earlier revision.", "swarmlet rollback web"),
    "history": ("List a service's revisions.", "swarmlet history web"),
    "logs": ("Merged logs of a service's replicas.", "swarmlet logs -f web"),
    "rm": ("Remove services.", "swarmlet rm web"),
    "status": ("Cluster summary.", "swarmlet status"),
    "rebalance": ("Even out the spread of replicas over nodes.", "swarmlet rebalance"),
    "events": ("List the cluster's events.", "swarmlet events -f"),
    "top": ("Live view of nodes and services.", "swarmlet top"),
    "dashboard": ("Print the web dashboard's address and token.", "swarmlet dashboard"),
    "autoscale": ("Scale a service by CPU utilization.", "swarmlet autoscale web --min 2 --max 6 --cpu 70"),
    "stack config": ("Validate a stack file and print it normalized (no cluster needed).", "swarmlet stack config -f stack.yml"),
    "stack ls": ("List stacks.", "swarmlet stack ls"),
    "stack rm": ("Remove a stack's services, and only those.", "swarmlet stack rm shop"),
    "image push": ("Stream a local image to the nodes that lack it.", "swarmlet image push swarmlet-hello:1"),
    "master start": ("Start the master process.", "swarmlet master start"),
    "master stop": ("Stop the master process.", "swarmlet master stop"),
    "master status": ("Show whether the master runs.", "swarmlet master status"),
    "master logs": ("Show the master's log.", "swarmlet master logs"),
    "master ha": ("Move the master onto 3 or 5 nodes (etcd).", "swarmlet master ha node-1 node-2 node-3"),
    "master single": ("Move the master back to this host.", "swarmlet master single"),
    "key rotate": ("Rotate the gossip key with no downtime.", "swarmlet key rotate"),
    "secret create": ("Store a new secret from a file or stdin.", "swarmlet secret create db-password ./pw.txt"),
    "secret ls": ("List secrets (no values).", "swarmlet secret ls -o json"),
    "secret inspect": ("Show a secret's metadata (never its value).", "swarmlet secret inspect db-password"),
    "secret rm": ("Remove secrets no service uses.", "swarmlet secret rm db-password"),
    "secret rotate": ("New version of a secret; rolls every service using it.", "swarmlet secret rotate db-password ./new.txt"),
    "config create": ("Store a new config from a file or stdin.", "swarmlet config create nginx.conf ./nginx.conf"),
    "config ls": ("List configs (no values).", "swarmlet config ls"),
    "config inspect": ("Show a config's metadata.", "swarmlet config inspect nginx.conf"),
    "config rm": ("Remove configs no service uses.", "swarmlet config rm nginx.conf"),
    "config rotate": ("New version of a config; rolls every service using it.", "swarmlet config rotate nginx.conf ./nginx.conf"),
    "cert ls": ("List the edge's certificates: expiry, status (never a key).", "swarmlet cert ls -o json"),
    "cert add": ("Store your certificate for tls: manual services.", "swarmlet cert add shop --cert shop.crt --key shop.key"),
    "cert rm": ("Remove a certificate no service uses.", "swarmlet cert rm shop"),
    "cert renew": ("Order a new ACME certificate for a host now.", "swarmlet cert renew shop.example.com"),
    "edge show": ("The edge's settings: ports, default service, ACME directory.", "swarmlet edge show"),
    "edge config": ("Change the edge's settings.", "swarmlet edge config --acme-directory letsencrypt"),
}

GROUP_HELP = {
    "node": "Manage nodes: drain, activate, rm.",
    "image": "Move images to nodes without a registry.",
    "stack": "Stacks as a whole: config (offline check), ls, rm.",
    "master": "Manage the master process.",
    "key": "Manage cluster keys.",
    "secret": "Manage secrets: encrypted at rest, in memory on the nodes that need them.",
    "config": "Manage configs: mounted read-only into containers.",
    "cert": "Certificates of the edge: issued by ACME, or your own.",
    "edge": "The edge: ports 80/443 on every node, routing by host name.",
    "lab": "A local lab: 'bare servers' as containers, each with sshd and dockerd.",
}


def stub(name: str) -> click.Command:
    help_text, example = CONTRACT[name]
    leaf = name.split()[-1]

    @click.command(
        leaf,
        help=f"{help_text}\n\n(Not implemented yet.)",
        epilog=f"Example: {example}",
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def _cmd(args: tuple) -> None:
        raise NotImplementedYet(f"swarmlet {name}")

    return _cmd
