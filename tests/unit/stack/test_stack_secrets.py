"""Compose ``secrets:`` and ``configs:`` in stack files: definitions, references, errors at
``file:line:col`` (nothing returned), values carried apart from the specs and never shown."""

from __future__ import annotations

import pytest

from swarmlet.shipped.exceptions import StackFileError
from swarmlet.shipped.models import SecretRef
from swarmlet.shipped.secretrefs import MAX_SIZE
from swarmlet.stack import load_stack

pytestmark = pytest.mark.unit

GOOD = """\
name: shop
services:
  web:
    image: img:1
    secrets:
      - db-password
      - source: api-key
        target: api.key
        uid: "1000"
        gid: "1001"
        mode: 0440
    configs:
      - app-conf
      - source: inline
        target: /etc/inline.txt
        mode: "0o600"
secrets:
  db-password:
    file: ./db-password.txt
  api-key:
    environment: API_KEY
  shared:
    external: true
configs:
  app-conf:
    file: conf/app.conf
  inline:
    content: "hello ${WHO}"
"""


def _write(tmp_path, text, files=None):
    for rel, data in (files or {}).items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    path = tmp_path / "stack.yml"
    path.write_text(text)
    return str(path)


def test_definitions_and_references_as_compose_reads_them(tmp_path):
    path = _write(tmp_path, GOOD, {"db-password.txt": b"s3cret\n", "conf/app.conf": b"k=v\n"})
    stack = load_stack(path, {"API_KEY": "key-123", "WHO": "you"})
    (web,) = stack.services
    assert web.secrets == (SecretRef("shop_db-password", "db-password"),
                           SecretRef("shop_api-key", "api.key", 0, "1000", "1001", 0o440))
    assert web.configs == (SecretRef("shop_app-conf", "/app-conf"),
                           SecretRef("shop_inline", "/etc/inline.txt", mode=0o600))
    assert {(v.kind, v.name): v.data for v in stack.values} == {
        ("secret", "shop_db-password"): b"s3cret\n", ("secret", "shop_api-key"): b"key-123",
        ("config", "shop_app-conf"): b"k=v\n", ("config", "shop_inline"): b"hello you"}
    assert "s3cret" not in repr(stack) and "key-123" not in repr(stack)
    assert not stack.warnings


def test_an_external_secret_keeps_its_name(tmp_path):
    text = ("services:\n  web:\n    image: img:1\n    secrets: [shared]\n"
            "secrets:\n  shared:\n    external: true\n")
    stack = load_stack(_write(tmp_path, text), {}, name="shop")
    assert stack.services[0].secrets == (SecretRef("shared", "shared"),) and stack.values == ()


@pytest.mark.parametrize("text, files, where, words", [
    ("services:\n  web:\n    image: img:1\n    secrets:\n      - nope\n", {}, "5:9",
     "expected a secret defined under the top-level 'secrets:' (add 'nope' there)"),
    ("services:\n  web:\n    image: img:1\n    configs:\n      - source: nope\n", {}, "5:17",
     "expected a config defined under the top-level 'configs:'"),
    ("services:\n  web:\n    image: img:1\nsecrets:\n  pw:\n    file: ./missing.txt\n", {}, "6:11",
     "expected a readable file at"),
    ("services:\n  web:\n    image: img:1\nsecrets:\n  pw:\n    environment: NOT_SET\n", {}, "6:18",
     "the environment variable 'NOT_SET' to be set"),
    ("services:\n  web:\n    image: img:1\nsecrets:\n  pw:\n    file: big\n",
     {"big": b"x" * (MAX_SIZE + 1)}, "6:11", "of at most 500 KiB"),
    ("services:\n  web:\n    image: img:1\nsecrets:\n  pw: {}\n", {}, "5:3", "to have one of"),
    ("services:\n  web:\n    image: img:1\nsecrets:\n  a:\n    external: true\n    name: x\n"
     "  b:\n    external: true\n    name: x\n", {}, "8:3", "'b' and 'a' are both 'x'"),
    ("services:\n  web:\n    image: img:1\n    secrets:\n      - source: pw\n        mode: 999\n"
     "secrets:\n  pw:\n    external: true\n", {}, "6:15", "a file mode from 0000 to 0777"),
])
def test_bad_input_is_refused_at_its_place(tmp_path, text, files, where, words):
    with pytest.raises(StackFileError) as exc:
        load_stack(_write(tmp_path, text, files), {}, name="shop")
    assert str(exc.value).startswith(f"{tmp_path}/stack.yml:{where}: "), str(exc.value)
    assert words in str(exc.value)
