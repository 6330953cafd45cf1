"""The README's "What lands in storage" is what the app stores: the demo's sample mails (local/sample.py), delivered
through the dev host on the local stack with the demo's routes, give the blob tree and the manifest it shows."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from local.demo import ROUTES
from local.sample import MAILBOX, manifest_text, store_sample
from local.stack import ROOT, Stack, StackConfig

SECTION = "## What lands in storage"


def readme_sample() -> tuple[str, dict[str, Any]]:
    """The section's tree (its ```text block) and manifest (its ```json block)."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index(SECTION) :].split("\n## ", 1)[0]
    tree = re.search(r"```text\n(.*?)\n```", section, re.S)
    manifest = re.search(r"```json\n(.*?)\n```", section, re.S)
    assert tree and manifest, f"README.md's {SECTION!r} has lost its ```text or ```json block"
    return tree.group(1), json.loads(manifest.group(1))


def test_the_readme_shows_what_the_app_stores(tmp_path: Path):
    config = StackConfig(
        mailboxes=(MAILBOX,),
        data_dir=tmp_path / "stack",
        app_settings={"ROUTES": json.dumps(ROUTES), "MALWARE_SCANNING": "defender"},
    )
    with Stack(config) as stack:
        assert stack.run_function("maintain").status_code == 200
        sample = store_sample(stack)
    assert sample is not None, "the sample mails were not stored"
    tree, manifest = readme_sample()
    assert sample.tree == tree, f"README.md's blob tree is not what the app stores; today it is:\n{sample.tree}"
    assert sample.manifest == manifest, (
        f"README.md's manifest is not what the app stores; today it is:\n{manifest_text(sample.manifest)}"
    )
