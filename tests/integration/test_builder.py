"""``build:`` services on the real local dockerd (swarmlet/builder.py).

Content tags (what changes them and what does not), resolving a stack's
tags, building offline ``FROM`` a locally built base image, not rebuilding an
unchanged context, and a failed build's error carrying its log's tail. The
event loop is watched while the SDK builds: it must never stall.
"""

from __future__ import annotations

import asyncio
import io
import time
import uuid

import pytest

from swarmlet.builder import BuildFailed, build_all, content_tag, context_files, resolve_builds
from swarmlet.shipped.exceptions import StackFileError
from swarmlet.stack import load_stack

pytestmark = pytest.mark.integration

BASE = "swarmlet-build-test-base:1"


@pytest.fixture(scope="module")
def base_image(docker_client) -> str:
    """A tiny local image (busybox), built here: the builds below never pull anything."""
    from tests.integration.agent.conftest import _context
    docker_client.images.build(fileobj=io.BytesIO(_context()), custom_context=True, tag=BASE,
                               rm=True, pull=False)
    return BASE


@pytest.fixture
def project(tmp_path, base_image):
    name = f"bt{uuid.uuid4().hex[:8]}"
    app = tmp_path / "app"
    app.mkdir()
    (app / "Dockerfile").write_text(f"FROM {base_image}\nCOPY version /www/version\n")
    (app / "version").write_text("one\n")
    (app / ".dockerignore").write_text("*.log\nnode_modules\n!node_modules/keep.txt\n")
    (app / "debug.log").write_text("noise\n")
    (app / "node_modules").mkdir()
    (app / "node_modules" / "big.js").write_text("x")
    (app / "node_modules" / "keep.txt").write_text("kept")
    stack = tmp_path / "stack.yml"
    stack.write_text(f"name: {name}\nservices:\n  web:\n    build: ./app\n    ports: ['8080']\n"
                     "  plain:\n    image: swarmlet-hello:1\n")
    return name, stack, app


def _images(docker_client, repo):
    return [t for img in docker_client.images.list(name=repo) for t in img.tags]


def test_the_content_tag_follows_what_docker_would_send(project):
    name, stack_file, app = project
    stack = load_stack(str(stack_file), {})
    b = stack.builds[f"{name}_web"]
    assert [rel for rel, _ in context_files(b.context)] == [
        ".dockerignore", "Dockerfile", "node_modules/keep.txt", "version"]
    first = content_tag(b)
    assert first.startswith(f"{name}_web:") and len(first.split(":")[1]) == 16
    (app / "debug.log").write_text("more noise\n")            # ignored: same tag
    (app / "node_modules" / "big.js").write_text("y")
    assert content_tag(b) == first
    (app / "version").write_text("two\n")                     # in the context: a new tag
    second = content_tag(b)
    assert second != first
    (app / "Dockerfile").write_text(f"FROM {BASE}\nCOPY version /www/v\n")
    assert content_tag(b) not in (first, second)


def test_resolve_sets_each_built_image_and_reports_a_missing_context(project, tmp_path):
    name, stack_file, app = project
    stack = resolve_builds(load_stack(str(stack_file), {}))
    assert stack.service("web").image == content_tag(stack.builds[f"{name}_web"])
    assert stack.service("plain").image == "swarmlet-hello:1"
    (app / "Dockerfile").unlink()
    with pytest.raises(StackFileError) as info:
        resolve_builds(load_stack(str(stack_file), {}))
    assert str(info.value).startswith(f"{stack_file}:4:5: expected a readable build context and "
                                      f"Dockerfile, but {app}/Dockerfile: No such file")


async def test_build_offline_from_a_local_base_then_cached_and_the_loop_never_stalls(project, docker_client):
    name, stack_file, app = project
    stack = resolve_builds(load_stack(str(stack_file), {}))
    tag = stack.service("web").image
    lines = []
    worst = 0.0

    async def ticker():
        nonlocal worst
        while True:
            t = time.monotonic()
            await asyncio.sleep(0.01)
            worst = max(worst, time.monotonic() - t - 0.01)

    tick = asyncio.create_task(ticker())
    try:
        got = await build_all(stack, lambda svc, line: lines.append((svc, line)))
        again = await build_all(stack, lambda svc, line: lines.append((svc, line)))
    finally:
        tick.cancel()
        for t in _images(docker_client, f"{name}_web"):
            docker_client.images.remove(t, force=True)
    assert got == {f"{name}_web": "built"} and again == {f"{name}_web": "cached"}
    assert any("COPY version" in line for _, line in lines), lines
    assert (f"{name}_web", f"{tag} is up to date (context unchanged)") in lines
    assert worst < 0.2, f"the event loop stalled {worst * 1000:.0f} ms during a build"


async def test_a_failed_build_says_where_and_shows_its_log_tail(project, docker_client):
    name, stack_file, app = project
    (app / "Dockerfile").write_text(f"FROM {BASE}\nRUN echo about to fail && false\n")
    stack = resolve_builds(load_stack(str(stack_file), {}))
    with pytest.raises(BuildFailed) as info:
        await build_all(stack)
    text = str(info.value)
    assert text.startswith(f"{stack_file}:4:5: the build of {name}_web (context {app}) failed; "
                           "nothing was deployed. Last lines of its log:")
    assert "  | about to fail" in text and "returned a non-zero code: 1" in text
    assert _images(docker_client, f"{name}_web") == []
