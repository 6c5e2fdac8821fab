"""Time of the Alerting model harness (tests/alerting_models): download, compile, run (a script, not a test).

Three runs, each on a cache of its own under a temporary folder (PACSGUARD_CACHE), so the
real cache is neither used for the cold run nor changed:

  cold        nothing cached: the OpenSearch distribution zip (for its lib/), the jars of
              tests/alerting_models/classpath.yaml, compiling, one run over the pack
  downloads   the download cache is the real one (as in CI after the dev node was built):
              unpacking lib/, compiling, one run
  warm        the same cache again: everything reused, one run

The run checks every monitor and channel the pack renders (with one channel of each type).

    python benchmarks/alerting_models.py
    python benchmarks/alerting_models.py --skip-cold     # no 56 MB download
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path.insert(0, str(TESTS))

from alerting_harness import prepare
from pacsguard import __version__
from pacsguard.core.settings import load_settings
from pacsguard.devnode import local
from pacsguard.packobjects import KINDS, Stamp
from pacsguard.rules.compiler import channel_objects, monitor_objects

CHANNELS = [
    {"name": "webhook", "type": "webhook", "url": "https://soc.example.org/hooks/pacsguard"},
    {"name": "slack", "type": "slack", "url": "https://hooks.slack.com/services/T000/B000/XXXX"},
    {"name": "chime", "type": "chime", "url": "https://hooks.chime.aws/incomingwebhooks/abc?token=xyz"},
    {"name": "mail", "type": "smtp", "smtp_account": "hospital-smtp", "recipients": ["pacs-admin@hospital.org"]},
]


def one_run(name: str) -> None:
    settings = load_settings(overrides={"pseudonymization": {"salt": "benchmark-salt-0123456789"},
                                        "notifications": {"channels": CHANNELS}}, environ={})
    objects = monitor_objects(settings) + channel_objects(settings)
    started = time.monotonic()
    harness = prepare()
    verdicts = harness.check([(o.kind, o.id, KINDS[o.kind].stamped(o.body, Stamp(settings.owner, __version__, o.hash)))
                              for o in objects])
    total = time.monotonic() - started
    t = harness.timings
    refused = sum(not v.ok for v in verdicts)
    print(f"{name:<10} java {t['java']:5.1f} s  download {t['download']:5.1f} s  compile {t['compile']:5.1f} s  "
          f"run {t['run']:5.1f} s  total {total:5.1f} s   ({len(verdicts)} objects, {refused} refused)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-cold", action="store_true", help="leave out the run that downloads everything")
    args = parser.parse_args()
    real_downloads = local.cache_root() / "downloads"
    with tempfile.TemporaryDirectory(prefix="pacsguard-bench-") as tmp:
        if not args.skip_cold:
            os.environ["PACSGUARD_CACHE"] = str(Path(tmp) / "cold")
            one_run("cold")
        shared = Path(tmp) / "shared"
        shared.mkdir()
        (shared / "downloads").symlink_to(real_downloads, target_is_directory=True)
        os.environ["PACSGUARD_CACHE"] = str(shared)
        one_run("downloads")
        one_run("warm")


if __name__ == "__main__":
    main()
