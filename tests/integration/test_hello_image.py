"""The demo images answer the contract the tests and examples rely on: GET /
with version/task/node from the environment, /health 200, or 500 when broken."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest

pytestmark = pytest.mark.integration


def _get(url: str):
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _wait(url: str, deadline: float = 10.0):
    end = time.monotonic() + deadline
    while True:
        try:
            return _get(url)
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.05)


@pytest.fixture
def run_hello(docker_client):
    started = []

    def _run(tag: str):
        ct = docker_client.containers.run(
            tag, detach=True, labels={"io.swarmlet.test": "hello"},
            environment={"SWARMLET_TASK": "web.1.abc", "SWARMLET_NODE": "node-9",
                         "SWARMLET_SERVICE": "web"},
            ports={"8080/tcp": ("127.0.0.1", None)})
        started.append(ct)
        ct.reload()
        port = ct.attrs["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"]
        return f"http://127.0.0.1:{port}"

    yield _run
    for ct in started:
        ct.remove(force=True)


@pytest.mark.parametrize("tag, version", [("swarmlet-hello:1", "1"), ("swarmlet-hello:2", "2")])
def test_hello_answers_identity_and_health(run_hello, tag, version):
    base = run_hello(tag)
    status, body = _wait(base + "/")
    assert status == 200
    doc = json.loads(body)
    assert doc["version"] == version
    assert doc["task"] == "web.1.abc" and doc["node"] == "node-9"
    assert _get(base + "/health")[0] == 200


def test_broken_variant_fails_only_its_health_check(run_hello):
    base = run_hello("swarmlet-hello:broken")
    assert _wait(base + "/")[0] == 200
    assert _get(base + "/health")[0] == 500


def test_images_are_small(docker_client):
    for tag in ("swarmlet-hello:1", "swarmlet-hello:2", "swarmlet-hello:broken"):
        assert docker_client.images.get(tag).attrs["Size"] < 10_000_000


def test_file_hash_and_a_health_file(docker_client, tmp_path):
    """GET /file?path=P answers P's sha256 (so a test proves a container sees a secret without
    the value leaving it); /health fails while $HELLO_HEALTH_FILE begins with "fail"."""
    import hashlib
    value = tmp_path / "value"
    value.write_bytes(b"s3cret-" + bytes(range(256)) * 40)
    ct = docker_client.containers.run(
        "swarmlet-hello:1", detach=True, labels={"io.swarmlet.test": "hello"},
        environment={"HELLO_HEALTH_FILE": "/run/secrets/value"},
        volumes={str(value): {"bind": "/run/secrets/value", "mode": "ro"}},
        ports={"8080/tcp": ("127.0.0.1", None)})
    try:
        ct.reload()
        base = f"http://127.0.0.1:{ct.attrs['NetworkSettings']['Ports']['8080/tcp'][0]['HostPort']}"
        status, body = _wait(base + "/file?path=/run/secrets/value")
        assert status == 200 and json.loads(body) == {
            "path": "/run/secrets/value", "size": value.stat().st_size,
            "sha256": hashlib.sha256(value.read_bytes()).hexdigest()}
        assert _get(base + "/file?path=/no/such/file")[0] == 404
        assert _get(base + "/health")[0] == 200
        value.write_bytes(b"fail: the app cannot use this value")    # same inode: seen at once
        assert _get(base + "/health")[0] == 500
    finally:
        ct.remove(force=True)
