"""`pip install .` must give a CLI whose content ships inside the wheel, not read from the source tree."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_wheel_carries_the_content_and_finds_it(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path), str(REPO)], check=True, capture_output=True)
    wheel = next(tmp_path.glob("pacsguard-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    pipelines = [f"pacsguard/content/pipelines/{p.parent.name}/pipeline.yaml"
                 for p in sorted((REPO / "pipelines").glob("*/pipeline.yaml"))]
    assert len(pipelines) >= 7  # router, enrich and the five sources
    for required in ("pacsguard/cli.py", "pacsguard/content/pack/settings.yaml", "pacsguard/content/pack/schema.yaml",
                     "pacsguard/content/pack/local-node.yaml", "pacsguard/content/pack/index/template-events.yaml",
                     *pipelines):
        assert required in names, required
    assert not any(n.startswith("tests/") for n in names)
    # golden-test inputs and expected files stay in the repository: the CLI does not need them
    assert not [n for n in names if "/_dev/" in n]

    unpacked = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(unpacked)
    probe = "import pacsguard.core.content as c; print(c.content_root())"
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(unpacked), "PATH": "/usr/bin:/bin"}).stdout.strip()
    assert out == str(unpacked / "pacsguard" / "content")
