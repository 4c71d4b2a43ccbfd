"""The edge of a service: what the validator refuses, clashes between services, stack keys, run flags."""

from __future__ import annotations

import dataclasses

import pytest

from swarmlet.cli.services import edge_from_flags
from swarmlet.shipped.exceptions import APIError, StackFileError, UsageError
from swarmlet.shipped.models import EdgeSpec, PortSpec, ServiceSpec
from swarmlet.shipped.routes import ReplicaView, build_routes
from swarmlet.shipped.models import Health, TaskState
from swarmlet.shipped.validate import check_routes, problems, route_clashes
from swarmlet.master.state import same_template
from swarmlet.stack import parse_stack
from swarmlet.stack.locate import edge_location
from swarmlet.webcerts import self_signed

pytestmark = pytest.mark.unit


@pytest.fixture
def parse():
    def _parse(text, files=None):
        files = files or {}

        def read_text(path):
            if path not in files:
                raise FileNotFoundError(2, "No such file or directory", path)
            return files[path]
        return parse_stack(text, "stack.yml", {}, name="demo", base_dir="/srv/app",
                           read_text=read_text)
    return _parse


def svc(name, hosts=(), path="/", ports=(PortSpec(8080),), **edge):
    return ServiceSpec(name, "img:1", ports=tuple(ports),
                       edge=EdgeSpec(hosts=tuple(hosts), path=path, **edge))


def fields(spec):
    return [(p.field, p.message) for p in problems(spec)]


def test_a_plain_edge_service_is_valid():
    assert fields(svc("shop", ["shop.example.com"], "/api", tls="acme", hsts=3600)) == []


@pytest.mark.parametrize("spec,field,words", [
    (svc("a", [], "/api"), "edge", "expected 'hosts'"),
    (svc("a", ["Shop.example.com"]), "edge.hosts", "lower-case"),
    (svc("a", ["*.example.com"], tls="acme"), "edge.hosts", "http-01"),
    (svc("a", ["a.test", "a.test"]), "edge.hosts", "twice"),
    (svc("a", ["a.test"], "/api/"), "edge.path", "trailing"),
    (svc("a", ["a.test"], tls="tls"), "edge.tls", "one of off, acme, manual"),
    (svc("a", ["a.test"], tls="manual"), "edge.cert", "stored certificate"),
    (svc("a", ["a.test"], hsts=60), "edge.hsts", "needs TLS"),
    (svc("a", ["a.test"], ports=()), "edge.port", "need a container port"),
    (svc("a", ["a.test"], port=9090), "edge.port", "TCP container ports"),
])
def test_bad_edges_name_their_field(spec, field, words):
    found = fields(spec)
    assert any(f == field and words in m for f, m in found), found


def test_two_services_on_one_host_and_path_clash_in_one_line():
    shop = svc("shop", ["shop.example.com"])
    (c,) = route_clashes([svc("other", ["shop.example.com"])], {"shop": shop})
    assert c.message == "host shop.example.com path / is routed to service 'shop'"
    with pytest.raises(APIError, match=r"^host shop.example.com path / is routed") as e:
        check_routes([svc("other", ["shop.example.com"])], {"shop": shop})
    assert e.value.status == 409


def test_another_path_on_the_same_host_is_fine_and_a_service_keeps_its_own():
    shop = svc("shop", ["shop.example.com"])
    assert route_clashes([svc("api", ["shop.example.com"], "/api")], {"shop": shop}) == []
    assert route_clashes([svc("shop", ["shop.example.com"])], {"shop": shop}) == []
    assert route_clashes([svc("other", ["shop.example.com"])], {"shop": shop}, ["shop"]) == []


def test_two_new_services_of_one_stack_clash_with_each_other():
    (c,) = route_clashes([svc("a", ["x.test"]), svc("b", ["x.test"])], {})
    assert (c.service, c.holder) == ("b", "a")


def test_the_route_carries_the_edge_on_the_port_it_routes_to():
    spec = svc("shop", ["shop.example.com"], "/api", ports=(PortSpec(9000), PortSpec(8080)),
               port=8080, tls="acme", hsts=10)
    rep = ReplicaView("t1", "shop", "n1", TaskState.RUNNING, Health.NONE,
                      {"9000/tcp": 30001, "8080/tcp": 30002})
    r9000, r8080 = build_routes([spec], [rep], {"n1": "10.0.0.1"})
    assert r9000.hosts == () and r8080.hosts == ("shop.example.com",)
    assert (r8080.path, r8080.tls, r8080.hsts, r8080.redirect) == ("/api", "acme", 10, True)
    assert r8080.backends[0].port == 30002


def test_an_edge_change_needs_no_new_containers():
    a = svc("shop", ["shop.example.com"])
    assert same_template(a, dataclasses.replace(a, edge=EdgeSpec(("x.test",), tls="acme")))


STACK = """services:
  shop:
    image: img:1
    ports: ["8080"]
    x-swarmlet:
      hosts: [shop.example.com]
  api:
    image: img:1
    x-swarmlet:
      hosts:
        - api.example.com
        - shop.example.com
      port: 8080
"""


def test_stack_keys_make_the_edge(parse):
    s = parse(STACK)
    shop, api = s.services
    assert shop.edge == EdgeSpec(hosts=("shop.example.com",))
    assert api.edge.port == 8080 and api.ports == (PortSpec(8080),)   # added, unpublished


def test_a_clash_points_at_the_host_in_the_file(parse):
    s = parse(STACK)
    (c,) = route_clashes(list(s.services), {})
    assert edge_location(STACK, "stack.yml", {}, c.service, c.host) == "stack.yml:12:11"


def test_tls_files_are_read_checked_and_kept_out_of_the_spec(parse):
    cert, key = self_signed(["shop.example.com"])
    _, other = self_signed(["shop.example.com"])
    text = STACK.replace("hosts: [shop.example.com]",
                         "hosts: [shop.example.com]\n      tls: {cert: certs/shop.crt, key: shop.key}"
                         "\n      hsts: true")
    files = {"/srv/app/certs/shop.crt": cert.decode(), "/srv/app/shop.key": key.decode()}
    s = parse(text, files=files)
    shop = s.services[0]
    assert (shop.edge.tls, shop.edge.cert, shop.edge.hsts) == ("manual", "shop", 365 * 86400)
    assert "PRIVATE" not in repr(shop) and "PRIVATE" not in repr(s.certificates)
    (pair,) = s.certificates
    assert pair.name == "shop" and pair.key == key.decode() and pair.where == "stack.yml:7:12"
    with pytest.raises(StackFileError, match=r"^stack.yml:7:12: .*private key does not match"):
        parse(text, files={**files, "/srv/app/shop.key": other.decode()})
    with pytest.raises(StackFileError, match=r"stack.yml:7:12: .*not for shop.example.com"):
        c2, k2 = self_signed(["other.test"])
        parse(text, files={"/srv/app/certs/shop.crt": c2.decode(), "/srv/app/shop.key": k2.decode()})
    with pytest.raises(StackFileError, match=r"stack.yml:7:\d+: expected a readable PEM file"):
        parse(text, files={})


def test_run_flags_make_the_same_edge(tmp_path):
    edge, pair = edge_from_flags("shop", ("Shop.Example.com",), "/api", None, "acme", None, None,
                                 60, True)
    assert edge == EdgeSpec(("shop.example.com",), "/api", tls="acme", hsts=60)
    assert pair is None
    cert, key = self_signed(["shop.example.com"])
    _, other = self_signed(["shop.example.com"])
    (tmp_path / "c.pem").write_bytes(cert)
    (tmp_path / "k.pem").write_bytes(key)
    (tmp_path / "o.pem").write_bytes(other)
    edge, pair = edge_from_flags("shop", ("shop.example.com",), "/", None, None,
                                 str(tmp_path / "c.pem"), str(tmp_path / "k.pem"), 0, False)
    assert (edge.tls, edge.cert, edge.redirect) == ("manual", "shop", False)
    assert pair == (cert.decode(), key.decode())
    with pytest.raises(UsageError, match="does not match"):
        edge_from_flags("shop", ("shop.example.com",), "/", None, None, str(tmp_path / "c.pem"),
                        str(tmp_path / "o.pem"), 0, True)
    with pytest.raises(UsageError, match="go together"):
        edge_from_flags("shop", ("a.test",), "/", None, None, str(tmp_path / "c.pem"), None, 0, True)
