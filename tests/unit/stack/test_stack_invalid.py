"""Invalid stack files: each is rejected whole, with its exact ``file:line:col: expected …``."""

from __future__ import annotations

import pytest

from swarmlet.shipped.exceptions import StackFileError, SwarmletError
from swarmlet.stack import load_stack

pytestmark = pytest.mark.unit

CASES = [
    pytest.param('services:\n  w:\n    image: a\n    environment: {"A=B": 1}\n',
                 "stack.yml:4:19: expected an environment variable name without '=', got 'A=B'",
                 id='env_key'),
    pytest.param('',
                 "stack.yml:1:1: expected a mapping with 'services', got an empty file",
                 id='empty'),
    pytest.param('- a\n- b\n',
                 "stack.yml:1:1: expected a mapping with 'services' at the top of the file, got a list",
                 id='list_top'),
    pytest.param('volumes: {}\n',
                 "stack.yml:1:1: expected a top-level 'services' mapping",
                 id='no_services'),
    pytest.param('services:\n',
                 'stack.yml:1:10: expected a mapping for services, got nothing (null)',
                 id='services_null'),
    pytest.param('services: {}\n',
                 'stack.yml:1:11: expected at least one service for services, got an empty mapping',
                 id='services_empty'),
    pytest.param('services:\n  web:\n    command: x\n',
                 "stack.yml:3:5: expected an 'image' or a 'build' section for service 'web'",
                 id='no_image'),
    pytest.param('services:\n  web:\n    image: 5\n',
                 'stack.yml:3:12: expected an image like "swarmlet-hello:1" for services.web.image, got 5',
                 id='image_int'),
    pytest.param('services:\n  web:\n    image: UPPER/Case\n',
                 'stack.yml:3:12: expected an image reference like "swarmlet-hello:1" or "repo/app:tag" for services.web.image, got \'UPPER/Case\'',
                 id='image_bad'),
    pytest.param("services:\n  'web app':\n    image: a\n",
                 "stack.yml:2:3: expected a service name of lower-case letters, digits, '_', '.' or '-' (at most 63, starting with a letter or digit), got 'web app'",
                 id='bad_name'),
    pytest.param('services:\n  web:\n    image: a\n    deploy:\n      replicas: three\n',
                 "stack.yml:5:17: expected an integer >= 0 for services.web.deploy.replicas, got 'three'",
                 id='replicas_word'),
    pytest.param('services:\n  web:\n    image: a\n    deploy:\n      replicas: -1\n',
                 'stack.yml:5:17: expected an integer >= 0 for services.web.deploy.replicas, got -1',
                 id='replicas_neg'),
    pytest.param('services:\n  web:\n    image: a\n    deploy:\n      mode: global\n      replicas: 2\n',
                 "stack.yml:6:17: expected no 'replicas' with mode global (one replica per node) for services.web.deploy.replicas, got 2",
                 id='global_replicas'),
    pytest.param('services:\n  web:\n    image: a\n    deploy:\n      mode: everywhere\n',
                 "stack.yml:5:13: expected one of replicated, global for services.web.deploy.mode, got 'everywhere'",
                 id='mode_bad'),
    pytest.param('services:\n  web:\n    image: a\n    image: b\n',
                 "stack.yml:4:5: expected each key once, but 'image' repeats (first at line 3)",
                 id='dup_key'),
    pytest.param('services:\n  web:\n    image: a\n   ports: [\n',
                 "stack.yml:4:4: expected <block end>, but found '<block mapping start>' (invalid YAML)",
                 id='yaml_syntax'),
    pytest.param('services:\n\tweb: {}\n',
                 "stack.yml:2:1: expected valid YAML, but found character '\\t' that cannot start any token",
                 id='tab'),
    pytest.param('services:\n  web:\n    image: a\n    ports: ["80:80:80:80"]\n',
                 'stack.yml:4:13: expected a port like "80", "8080:80" or "127.0.0.1:8080:80/tcp" for services.web.ports[0], got \'80:80:80:80\'',
                 id='port_bad'),
    pytest.param('services:\n  web:\n    image: a\n    ports: ["70000:80"]\n',
                 "stack.yml:4:13: expected port numbers from 1 to 65535 (ranges low-high) for services.web.ports[0], got '70000:80'",
                 id='port_range'),
    pytest.param('services:\n  web:\n    image: a\n    ports: ["80/sctp"]\n',
                 "stack.yml:4:13: expected protocol tcp or udp for services.web.ports[0], got '80/sctp'",
                 id='port_proto'),
    pytest.param('services:\n  web:\n    image: a\n    ports: ["80:80", "80:81"]\n',
                 "stack.yml:4:22: expected a published port not used twice (port 80/tcp) for services.web.ports[1], got '80:81'",
                 id='port_dup'),
    pytest.param('services:\n  web:\n    image: a\n    ports:\n      - published: 80\n',
                 "stack.yml:5:9: expected a port mapping with 'target' for services.web.ports[0], got a mapping",
                 id='port_long_no_target'),
    pytest.param('services:\n  web:\n    image: a\n    ports: ["80:80"]\n  api:\n    image: b\n    ports: ["80:8080"]\n',
                 "stack.yml:7:12: expected each published port once in the stack, but 80/tcp is already published by service 'web'",
                 id='port_cross'),
    pytest.param('services:\n  web:\n    image: a\n    volumes: ["data:/data"]\n',
                 "stack.yml:4:15: expected a volume declared under the top-level 'volumes:' (add 'data' there) for services.web.volumes[0], got 'data:/data'",
                 id='volume_undeclared'),
    pytest.param('services:\n  web:\n    image: a\n    volumes: ["./x:data"]\n',
                 "stack.yml:4:15: expected an absolute container path for the mount target for services.web.volumes[0], got './x:data'",
                 id='volume_relative_target'),
    pytest.param('services:\n  web:\n    image: a\n    volumes: ["./x:/data:rx"]\n',
                 "stack.yml:4:15: expected volume options ro or rw (not 'rx') for services.web.volumes[0], got './x:/data:rx'",
                 id='volume_mode'),
    pytest.param('services:\n  web:\n    image: a\n    volumes: ["~/x:/data"]\n',
                 "stack.yml:4:15: expected an absolute or ./relative host path (~ needs HOME set on this host) for services.web.volumes[0], got '~/x:/data'",
                 id='volume_tilde'),
    pytest.param('services:\n  web:\n    image: a\n    healthcheck:\n      interval: 10 seconds\n',
                 'stack.yml:5:17: expected a duration like "10s", "1m30s" or "500ms" for services.web.healthcheck.interval, got \'10 seconds\'',
                 id='duration'),
    pytest.param('services:\n  web:\n    image: a\n    healthcheck:\n      test: ["RUN", "x"]\n',
                 'stack.yml:5:13: expected a test like ["CMD", "prog", "arg"], ["CMD-SHELL", "cmd"], ["NONE"] or a string for services.web.healthcheck.test, got a list',
                 id='test_bad'),
    pytest.param('services:\n  web:\n    image: a\n    deploy:\n      resources:\n        limits: {memory: lots}\n',
                 'stack.yml:6:26: expected a size like "512M", "1G" or a number of bytes for services.web.deploy.resources.limits.memory, got \'lots\'',
                 id='memory'),
    pytest.param('services:\n  web:\n    image: a\n    deploy:\n      resources:\n        limits: {cpus: "-1"}\n',
                 'stack.yml:6:24: expected a CPU count above zero, like "0.5" for services.web.deploy.resources.limits.cpus, got \'-1\'',
                 id='cpus'),
    pytest.param('services:\n  web:\n    image: a\n    deploy:\n      placement:\n        constraints: ["zone=a"]\n',
                 'stack.yml:6:23: expected a constraint like "node.labels.zone==a" or "node.hostname!=node-1" for services.web.deploy.placement.constraints[0], got \'zone=a\'',
                 id='constraint'),
    pytest.param('services:\n  web:\n    image: a\n    deploy:\n      update_config: {failure_action: explode}\n',
                 "stack.yml:5:39: expected one of rollback, pause, continue for services.web.deploy.update_config.failure_action, got 'explode'",
                 id='failure_action'),
    pytest.param('services:\n  web:\n    image: a\n    deploy:\n      rollback_config: {failure_action: rollback}\n',
                 "stack.yml:5:41: expected one of pause, continue for services.web.deploy.rollback_config.failure_action, got 'rollback'",
                 id='rollback_action'),
    pytest.param('services:\n  web:\n    image: a\n    deploy:\n      update_config: {max_failure_ratio: 2}\n',
                 'stack.yml:5:42: expected a number from 0 to 1 for services.web.deploy.update_config.max_failure_ratio, got 2',
                 id='ratio'),
    pytest.param('services:\n  web:\n    image: a\n    deploy:\n      update_config: {order: random}\n',
                 "stack.yml:5:30: expected one of start-first, stop-first for services.web.deploy.update_config.order, got 'random'",
                 id='order'),
    pytest.param('services:\n  web:\n    image: a\n    restart: sometimes\n',
                 "stack.yml:4:14: expected one of no, always, on-failure[:N], unless-stopped for services.web.restart, got 'sometimes'",
                 id='restart'),
    pytest.param('services:\n  web:\n    image: a\n    environment: [{A: 1}]\n',
                 'stack.yml:4:19: expected an environment entry like "KEY=value" for services.web.environment[0], got a mapping',
                 id='env_list_item'),
    pytest.param('services:\n  web:\n    image: a\n    environment: {A: {b: 1}}\n',
                 'stack.yml:4:22: expected a string, number or boolean for services.web.environment.A, got a mapping',
                 id='env_value_map'),
    pytest.param('services:\n  web:\n    image: a\n    env_file: nope.env\n',
                 'stack.yml:4:15: expected a readable env file at /srv/app/nope.env (No such file or directory)',
                 id='env_file_missing'),
    pytest.param("services:\n  web:\n    image: a\n    command: echo 'unclosed\n",
                 'stack.yml:4:14: expected a command with balanced quotes for services.web.command: No closing quotation',
                 id='command_quote'),
    pytest.param('services:\n  web:\n    image: ${IMAGE:?set IMAGE to the image to run}\n',
                 'stack.yml:3:12: expected variable IMAGE to be set: set IMAGE to the image to run',
                 id='interp_required'),
    pytest.param('services:\n  web:\n    image: app:${TAG\n',
                 "stack.yml:3:12: expected '}' to close '${' in 'app:${TAG'",
                 id='interp_unclosed'),
    pytest.param('services:\n  web:\n    image: a\n    command: echo $1\n',
                 "stack.yml:4:14: expected a variable name after '$' in 'echo $1' (write '$$' for a literal '$')",
                 id='interp_dollar'),
    pytest.param('a: &a [*a]\nservices: {web: {image: a}}\n',
                 'stack.yml:1:4: expected an alias that does not contain itself',
                 id='alias_loop'),
    pytest.param('services:\n  1: {image: a}\n',
                 "stack.yml:2:3: expected a string key, got '1' (quote it if you mean the text)",
                 id='key_int'),
    pytest.param('services:\n  web:\n    image: a\n    ports: [80]\n    x-swarmlet: {health: health}\n',
                 "stack.yml:5:26: expected an HTTP path starting with / for services.web.x-swarmlet.health, got 'health'",
                 id='health_path'),
    pytest.param('services:\n  web:\n    image: a\n    x-swarmlet: {health: /health}\n',
                 "stack.yml:4:26: expected a 'port' for the HTTP health check (the service publishes no port) for services.web.x-swarmlet.health, got '/health'",
                 id='health_noport'),
    pytest.param('services:\n  web:\n    image: a\n    x-swarmlet: {autoscale: {min: 3, max: 2}}\n',
                 'stack.yml:4:43: expected max >= min (3) for services.web.x-swarmlet.autoscale.max, got 2',
                 id='autoscale'),
    pytest.param('services:\n  web:\n    image: a\n    x-swarmlet: {autoscale: {min: 1, max: 2, down_window: 2h}}\n',
                 "stack.yml:4:59: expected a duration from 1s to 1h for services.web.x-swarmlet.autoscale.down_window, got '2h'",
                 id='autoscale_window'),
    pytest.param('services:\n  web:\n    image: a\n    x-swarmlet: {lb: {algorithm: random}}\n',
                 "stack.yml:4:34: expected one of round_robin, least_conn for services.web.x-swarmlet.lb.algorithm, got 'random'",
                 id='lb_algo'),
    pytest.param('services:\n  web:\n    image: a\n    labels: ["=x"]\n',
                 'stack.yml:4:14: expected a label like "key=value" for services.web.labels[0], got \'=x\'',
                 id='labels'),
    pytest.param('services:\n  web:\n    image: a\n    ports: "80:80"\n',
                 "stack.yml:4:12: expected a list of ports for services.web.ports, got '80:80'",
                 id='ports_not_list'),
    pytest.param('services:\n  web:\n    image: a\n---\nservices:\n  web:\n    image: a\n',
                 'stack.yml:4:1: expected a single document in the stream, but found another document',
                 id='multi_doc'),
    pytest.param("services:\n  web:\n    image: a\nvolumes:\n  'bad name': {}\n",
                 "stack.yml:5:3: expected a volume name of letters, digits, '_', '.' or '-', got 'bad name'",
                 id='volume_def_bad'),
    pytest.param('services:\n  web:\n    image: a\n    healthcheck: {interval: 0s}\n',
                 "stack.yml:4:29: expected a duration above zero for services.web.healthcheck.interval, got '0s'",
                 id='healthcheck_interval_zero'),
    pytest.param('services:\n  web:\n    image: a\n    labels: !!int abc\n',
                 "stack.yml:4:13: expected a valid !!int value for services.web.labels, got 'abc'",
                 id='bad_tag'),
]


@pytest.mark.parametrize("text, message", CASES)
def test_invalid_file_error(parse, text, message):
    with pytest.raises(StackFileError) as info:
        parse(text)
    assert str(info.value) == message
    assert info.value.location == message.split(": ", 1)[0]
    assert isinstance(info.value, SwarmletError)


def test_error_in_an_env_file_points_into_that_file(parse):
    files = {"/srv/app/app.env": "A=1\n\n  9BAD=2\n"}
    with pytest.raises(StackFileError) as info:
        parse("services:\n  w:\n    image: a\n    env_file: app.env\n", files=files)
    assert str(info.value) == "app.env:3:3: expected KEY=VALUE with a variable name, got '9BAD=2'"


def test_an_error_after_valid_services_returns_nothing(parse):
    text = "services:\n  ok:\n    image: a\n  bad:\n    image: b\n    deploy: {replicas: x}\n"
    with pytest.raises(StackFileError, match=r"^stack.yml:6:24: expected an integer"):
        parse(text)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.yml"
    with pytest.raises(StackFileError) as info:
        load_stack(str(path), {})
    assert str(info.value) == f"{path}: expected a readable stack file (No such file or directory)"


def test_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "stack.yml"
    path.write_bytes(b"services:\n  web:\n    image: caf\xe9\n")
    with pytest.raises(StackFileError) as info:
        load_stack(str(path), {})
    assert str(info.value) == f"{path}:3:15: expected UTF-8 text"
