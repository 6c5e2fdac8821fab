"""The installer's content loading and plan bookkeeping, without a cluster: what load_objects
renders from the content folders (one ingest pipeline per pipelines/<name>/pipeline.yaml, ids
with the prefix, settings and capabilities in the bodies), the errors a broken content file
gives (naming the file), and the plan's counts. (Against a node: tests/cluster/test_install.py.)"""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

import pytest
from pacsguard.core.content import content_root
from pacsguard.core.render import ContentError
from pacsguard.core.settings import load_settings
from pacsguard.packobjects import KINDS, PackObject
from pacsguard.services.install import Change, Plan, load_objects

SALT = "unit-salt-0123456789abcdef"
DEFAULT = load_settings(environ={})
PIPELINE_FOLDERS = sorted(p.parent.name for p in (content_root() / "pipelines").glob("*/pipeline.yaml"))


@functools.cache
def default_objects(salt: str = SALT, capabilities: frozenset[str] = frozenset()) -> list[PackObject]:
    """load_objects with the default settings, rendered once per arguments (rendering takes ~1 s)."""
    return load_objects(DEFAULT, salt, capabilities)


@pytest.fixture
def content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the pack's content that a test may break; the loader reads it (PACSGUARD_CONTENT)."""
    copy = tmp_path / "content"
    for folder in ("pack", "pipelines", "detections", "dashboards"):
        shutil.copytree(content_root() / folder, copy / folder, ignore=shutil.ignore_patterns("_dev", "__pycache__"))
    monkeypatch.setenv("PACSGUARD_CONTENT", str(copy))
    return copy


def test_one_ingest_pipeline_per_pipeline_folder_with_the_prefix() -> None:
    settings = load_settings(overrides={"id_prefix": "acme"}, environ={})
    objects = load_objects(settings, SALT)
    pipelines = sorted(o.id for o in objects if o.kind == "ingest_pipeline")
    assert pipelines == [f"{settings.scope}-{name}" for name in PIPELINE_FOLDERS]
    assert {"router", "enrich", "atna", "fhir", "keycloak", "orthanc", "generic"} <= set(PIPELINE_FOLDERS)
    assert all(o.id.startswith("acme-") for o in objects)
    assert all(o.source.name == "pipeline.yaml" for o in objects if o.kind == "ingest_pipeline")


def test_golden_test_files_beside_the_pipelines_are_not_content() -> None:
    objects = default_objects()
    assert not [o for o in objects if "_dev" in o.source.parts]


def test_objects_come_in_install_order() -> None:
    orders = [KINDS[o.kind].order for o in default_objects()]
    assert orders == sorted(orders)


def test_settings_namespace_and_salt_reach_the_bodies() -> None:
    settings = load_settings(overrides={"id_prefix": "acme", "namespace": "radiology"}, environ={})
    objects = {o.id: o for o in load_objects(settings, SALT)}
    router = json.dumps(objects[f"{settings.scope}-router"].body)
    assert settings.index("failures") in router and f"{settings.scope}-enrich" in router
    # the salt lives in the stored pseudonymization script only, never in a pipeline body
    assert SALT in json.dumps(objects[f"{settings.scope}-pseudonymize"].body)
    assert not [o.id for o in objects.values() if o.kind == "ingest_pipeline" and SALT in json.dumps(o.body)]
    assert "logs-pacs.audit-radiology" in json.dumps([o.body for o in objects.values() if o.kind == "index_template"])


def test_geoip_runs_only_where_the_cluster_has_it() -> None:
    def enrich(capabilities: frozenset[str]) -> str:
        return json.dumps(next(o.body for o in default_objects(SALT, capabilities) if o.id.endswith("-enrich")))

    assert '"geoip"' in enrich(frozenset({"ingest-geoip"}))
    assert '"geoip"' not in enrich(frozenset())


def test_hash_follows_the_content_and_the_salt_only_where_it_is_used() -> None:
    settings = DEFAULT
    first = {o.key: o.hash for o in default_objects()}
    assert first == {o.key: o.hash for o in load_objects(settings, SALT)}  # rendered again: same hashes
    other_salt = {o.key: o.hash for o in default_objects("another-salt-0123456789abcdef")}
    script = f"stored_script:{settings.scope}-pseudonymize"
    assert first[script] != other_salt[script]  # a new salt is a change to install
    assert {k: v for k, v in first.items() if k != script} == {k: v for k, v in other_salt.items() if k != script}


def test_undefined_template_variable_names_file_and_line(content: Path) -> None:
    path = content / "pipelines" / "generic" / "pipeline.yaml"
    lines = path.read_text().splitlines()
    lines[5] += " {{ no_such_variable }}"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ContentError, match=rf"^{path}:6: template error: 'no_such_variable' is undefined"):
        load_objects(load_settings(environ={}), SALT)


@pytest.mark.parametrize(("text", "message"), [
    ("kind: ingest_pipeline\nid: '{{ prefix }}-extra'\n", "a content file needs the keys kind, id and body"),
    ("kind: ingest_pipelines\nid: '{{ prefix }}-extra'\nbody: {}\n", "unknown kind 'ingest_pipelines'"),
    ("kind: ingest_pipeline\nid: extra\nbody: {}\n", "id 'extra' must start with 'pacsguard-'"),
    ("kind: ingest_pipeline\nid: '{{ prefix }}-router'\nbody: {}\n", "ingest_pipeline:pacsguard-default-router is also defined in"),
    ("kind: ingest_pipeline\nid: x\nbody: [unclosed\n", ":4: invalid YAML"),
])
def test_broken_pipeline_file_is_named(content: Path, text: str, message: str) -> None:
    extra = content / "pipelines" / "zz-extra" / "pipeline.yaml"
    extra.parent.mkdir()
    extra.write_text(text)
    with pytest.raises(ContentError) as err:
        load_objects(load_settings(environ={}), SALT)
    assert str(err.value).startswith(str(extra)), err.value
    assert message in str(err.value)


def test_a_new_pipeline_folder_is_picked_up(content: Path) -> None:
    extra = content / "pipelines" / "hl7v2" / "pipeline.yaml"
    extra.parent.mkdir()
    extra.write_text("kind: ingest_pipeline\nid: '{{ prefix }}-hl7v2'\nbody:\n  description: x\n  processors: []\n")
    ids = {o.id for o in load_objects(load_settings(environ={}), SALT)}
    assert "pacsguard-default-hl7v2" in ids


def test_plan_counts_and_pending() -> None:
    obj = PackObject("ingest_pipeline", "p-a", {"processors": []}, Path("a"))
    plan = Plan([Change("create", "ingest_pipeline", "p-a", obj=obj), Change("unchanged", "index", "p-b"),
                 Change("blocked", "monitor", "p-c", "cluster lacks opensearch-alerting"),
                 Change("skipped", "security_role", "p-d"), Change("delete", "index_template", "p-e")])
    assert plan.summary() == {"create": 1, "update": 0, "delete": 1, "unchanged": 1, "blocked": 1, "skipped": 1}
    assert [c.id for c in plan.pending] == ["p-a", "p-e"]
    assert [c.id for c in plan.blocked] == ["p-c"]
