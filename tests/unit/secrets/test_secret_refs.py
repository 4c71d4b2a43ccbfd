"""Secret and config references: what the validator refuses, where they land in a container,
and the container spec (binds of tmpfs files, read-only; no value in env or labels)."""

from __future__ import annotations

import pytest

from swarmlet.shipped import secretrefs
from swarmlet.shipped.models import SecretRef, ServiceSpec, TaskSpec, VolumeMount
from swarmlet.shipped.validate import problems
from swarmlet_agent import containerspec

pytestmark = pytest.mark.unit


def _spec(**kw):
    return ServiceSpec("web", "img:1", **kw)


def test_valid_refs_have_no_problems_and_land_where_compose_says():
    spec = _spec(secrets=(SecretRef("shop_db-password", "db-password", 2, "999", "999", 0o440),),
                 configs=(SecretRef("shop_nginx", "/etc/nginx/nginx.conf"),))
    assert problems(spec) == []
    assert secretrefs.container_path("secret", spec.secrets[0]) == "/run/secrets/db-password"
    assert secretrefs.container_path("config", spec.configs[0]) == "/etc/nginx/nginx.conf"
    assert secretrefs.container_path("secret", SecretRef("a", "/opt/a")) == "/opt/a"


@pytest.mark.parametrize("kw, field, words", [
    ({"secrets": (SecretRef("bad name", "x"),)}, "secrets", "expected secret source"),
    ({"secrets": (SecretRef("a", "../etc/passwd"),)}, "secrets", "plain file name"),
    ({"secrets": (SecretRef("a", ""),)}, "secrets", "expected a target"),
    ({"configs": (SecretRef("a", "relative.conf"),)}, "configs", "absolute container path"),
    ({"secrets": (SecretRef("a", "x", uid="root"),)}, "secrets", "numeric uid"),
    ({"secrets": (SecretRef("a", "x", mode=0o1777),)}, "secrets", "file mode"),
    ({"secrets": (SecretRef("a", "x"), SecretRef("b", "x"))}, "secrets", "mounted once"),
    ({"volumes": (VolumeMount("v", "/etc/app.conf"),),
      "configs": (SecretRef("a", "/etc/app.conf"),)}, "configs", "mounted once"),
])
def test_bad_refs_are_refused_naming_the_field(kw, field, words):
    found = problems(_spec(**kw))
    assert any(p.field == field and words in p.message for p in found), found


def test_container_spec_binds_tmpfs_files_read_only_and_carries_no_value():
    task = TaskSpec("web.1.abc", "web", 3, 1, "img:1", env={"A": "b"},
                    secrets=(SecretRef("db-password", "db-password", 2),),
                    configs=(SecretRef("app", "/etc/app.conf", 1),))
    spec = containerspec.build("n1", task, secrets_dir="/run/swarmlet/secrets")
    mounts = spec.host["mounts"]
    assert mounts == [
        {"Target": "/run/secrets/db-password", "Source": "/run/swarmlet/secrets/tasks/web.1.abc/secret-0",
         "Type": "bind", "ReadOnly": True},
        {"Target": "/etc/app.conf", "Source": "/run/swarmlet/secrets/tasks/web.1.abc/config-1",
         "Type": "bind", "ReadOnly": True}]
    assert spec.create["environment"].keys() == {"A", "SWARMLET_SERVICE", "SWARMLET_TASK",
                                                 "SWARMLET_NODE"}
    assert not any("secret" in k for k in spec.create["labels"])


def test_run_and_update_flags():
    from swarmlet.cli.secretflags import parse_ref, refs_after
    from swarmlet.shipped.exceptions import UsageError
    assert parse_ref("secret", "db") == SecretRef("db", "db")
    assert parse_ref("secret", "db:pw.txt") == SecretRef("db", "pw.txt")
    assert parse_ref("config", "nginx") == SecretRef("nginx", "/nginx")
    assert parse_ref("secret", "source=db,target=x,uid=1000,gid=1001,mode=0440") == \
        SecretRef("db", "x", 0, "1000", "1001", 0o440)
    for bad in ("source=db,owner=root", "db:../x", "source=db,mode=9"):
        with pytest.raises(UsageError, match="bad --secret"):
            parse_ref("secret", bad)
    cur = [{"source": "a", "target": "a", "version": 3}, {"source": "b", "target": "b", "version": 1}]
    out = refs_after("secret", cur, ("c", "b:bee"), ("a",))
    assert [(r["source"], r["target"], r["version"]) for r in out] == [("c", "c", 0), ("b", "bee", 0)]
