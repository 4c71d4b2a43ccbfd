"""A corpus of real-world-shaped stack files (tests/data/compose/, see its README.md).

Written after the patterns of public samples (awesome-compose and the like):
secrets, volumes, depends_on, health checks, multi-port and tcp+udp services,
builds, profiles, anchors. Every file loads; each refusal is the one listed
here, for the reason README.md gives, and reports every problem at once.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from swarmlet.builder import resolve_builds
from swarmlet.shipped.exceptions import StackFileError
from swarmlet.stack import load_stack

pytestmark = pytest.mark.unit

CORPUS = Path(__file__).resolve().parents[2] / "data" / "compose"
ENV = {"POSTGRES_PASSWORD": "secret", "HOME": "/home/user"}
REFUSED = {
    "refused-port-clash": ["7:12: expected each published port once in the stack, but 8080/tcp is "
                           "already published by service 'blue'"],
    "refused-undeclared-volume": ["5:9: expected a volume declared under the top-level 'volumes:' "
                                  "(add 'pgdata' there)"],
    "refused-no-image": ["3:5: expected an 'image' or a 'build' section for service 'web'"],
    "refused-remote-build": ["3:12: expected a local build context folder (remote contexts are not "
                             "built by swarmlet)"],
    "refused-many-mistakes": ["4:22: expected a port like", "6:17: expected an integer >= 0",
                              "8:13: expected a test like", "12:15: expected a ulimit with 'soft' and 'hard'"],
    "refused-uppercase-name": ["2:3: expected a service name of lower-case letters"],
    "refused-tilde-user": ["4:15: expected an absolute, ./relative or ~/ host path (~user is not expanded)"],
}
FILES = sorted(p.parent.name for p in CORPUS.glob("*/compose.yaml"))


def test_the_corpus_is_there_and_mostly_accepted():
    assert len(FILES) >= 30
    accepted = [f for f in FILES if f not in REFUSED]
    assert len(accepted) == len(FILES) - len(REFUSED) == 25
    assert set(REFUSED) <= set(FILES)


@pytest.mark.parametrize("name", FILES)
def test_each_file_loads_or_is_refused_for_its_reason(name):
    path = CORPUS / name / "compose.yaml"
    if name not in REFUSED:
        stack = resolve_builds(load_stack(str(path), ENV))
        assert stack.services and all(s.name.startswith(f"{name}_") for s in stack.services)
        assert all(s.image and not s.image.endswith(":build") for s in stack.services)
        return
    with pytest.raises(StackFileError) as info:
        resolve_builds(load_stack(str(path), ENV))
    lines = str(info.value).splitlines()
    assert len(lines) == len(REFUSED[name]), lines
    for line, want in zip(lines, REFUSED[name]):
        assert line.startswith(f"{path}:{want}"), line


def test_what_the_corpus_exercises():
    stacks = {n: load_stack(str(CORPUS / n / "compose.yaml"), ENV) for n in FILES if n not in REFUSED}
    specs = {s.name: s for st in stacks.values() for s in st.services}
    # tcp and udp on one port number
    assert {(p.published, p.protocol) for p in specs["pihole_pihole"].ports} >= {(53, "tcp"), (53, "udp")}
    # builds (7 services in 5 files), profiles, legacy external volumes, ~/ binds
    assert sum(len(st.builds) for st in stacks.values()) == 7
    assert stacks["voting-app"].skipped == (("seed", ("seed",)),)
    assert stacks["nextcloud-redis-mariadb"].volumes["db_data"].name == "nextcloud_db_data"
    assert specs["minecraft_minecraft"].volumes[0].source == "/home/user/minecraft_data"
    # health checks keep what the file says and take Docker's defaults for the rest
    db = specs["nginx-flask-mysql_db"].health
    assert (db.kind, db.interval, db.timeout, db.retries, db.start_period) == ("cmd", 3.0, 30.0, 5, 30.0)
    # the keys stack deploy honours reach the spec
    es = specs["elasticsearch-logstash-kibana_elasticsearch"]
    assert [(u.name, u.soft, u.hard) for u in es.container.ulimits] == [("memlock", -1, -1),
                                                                         ("nofile", 65536, 65536)]
    assert es.limits.memory == 1 << 30
    assert specs["label-file_app"].container.labels == {
        "com.example.owner": "platform", "com.example.cost-center": "42", "com.example.tier": "web"}
    assert specs["traefik-whoami_whoami"].labels["traefik.enable"] == "true"
    assert "traefik.enable" not in specs["traefik-whoami_whoami"].container.labels
    assert specs["compose-resources_worker"].replicas == 3
    # secrets and configs (issue 17): read from their files, namespaced, mounted by reference
    assert [r.target for r in specs["nginx-flask-mysql_db"].secrets] == ["db-password"]
    assert {v.name for v in stacks["nginx-flask-mysql"].values} == {"nginx-flask-mysql_db-password"}
    assert [r.target for r in specs["caddy_caddy"].configs] == ["/etc/caddy/Caddyfile"]
