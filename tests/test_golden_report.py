"""``bench report`` re-renders a committed smoke-suite cache byte for byte as the code before the typed
result row did (issue #24): every text file of the results folder is compared with ``tests/golden/smoke/out/``.

The cache (``tests/golden/smoke/cache/``) is a real ``bench run suites/smoke.yaml --device cpu`` cache with
the weight files left out (their names removed from each entry's ``ENTRY``): reporting never reads weights.
Normalised before the comparison, and only there: the page's ``Page rendered by bench … (git …)`` line (it names the
checkout's commit), the suite digest (it depends on where the checkout lies) and the page's embedded images, replaced by the sha256 of their base64 text
(so the images are still compared, byte for byte, without committing 700 kB of page). PNG and PDF files are
compared by sha256 (``SHA256SUMS``). ``BENCH_REGEN_GOLDEN=1`` rewrites the golden files (only with the code
they are meant to pin).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path

import pytest

from bench.commands.cli import main

ROOT = Path(__file__).resolve().parent
GOLDEN = ROOT / "golden" / "smoke"
SUITE = ROOT.parent / "suites" / "smoke.yaml"
TEXT = (".md", ".csv", ".json", ".html")


def normalise(name: str, data: bytes) -> bytes:
    if not name.endswith(".html"):
        return data
    text = data.decode()
    text = re.sub(r"base64,([A-Za-z0-9+/=]+)", lambda m: "base64:sha256:" + hashlib.sha256(m.group(1).encode()).hexdigest(), text)
    text = re.sub(r"Page rendered by bench [^<]* from the cache", "Page rendered by bench <version> from the cache", text)
    text = re.sub(r"(suite digest \(sha256 of the file and its includes\)</th><td><code>)[0-9a-f]+", r"\1<digest>", text)
    return text.encode()


def rendered(tmp_path: Path) -> dict[str, bytes]:
    """``bench report`` of the smoke suite from a copy of the golden cache: relative path -> normalised bytes."""
    cache, results = tmp_path / "cache", tmp_path / "results"
    shutil.copytree(GOLDEN / "cache", cache)
    assert main(["report", str(SUITE), "--cache-dir", str(cache), "--results-dir", str(results)]) == 0
    out = results / "smoke"
    return {str(p.relative_to(out)): normalise(p.name, p.read_bytes()) for p in sorted(out.rglob("*")) if p.is_file()}


def sums(files: dict[str, bytes]) -> str:
    return "".join(f"{hashlib.sha256(data).hexdigest()}  {name}\n" for name, data in files.items() if not name.endswith(TEXT))


def test_report_re_renders_the_golden_results_folder(tmp_path: Path) -> None:
    files = rendered(tmp_path)
    expected = GOLDEN / "out"
    if os.environ.get("BENCH_REGEN_GOLDEN") == "1":
        shutil.rmtree(expected, ignore_errors=True)
        for name, data in files.items():
            if name.endswith(TEXT):
                (expected / name).parent.mkdir(parents=True, exist_ok=True)
                (expected / name).write_bytes(data)
        (expected / "SHA256SUMS").write_text(sums(files))
        pytest.skip("golden files rewritten")
    golden = sorted(str(p.relative_to(expected)) for p in expected.rglob("*") if p.is_file() and p.name != "SHA256SUMS")
    assert sorted(n for n in files if n.endswith(TEXT)) == golden  # the same text files, no more, no fewer
    for name in golden:
        assert files[name] == (expected / name).read_bytes(), f"{name} differs from tests/golden/smoke/out/{name}"
    assert sums(files) == (expected / "SHA256SUMS").read_text()
    assert {"leaderboard.md", "results.csv", "results.json", "index.html", "training_curves.csv"} <= set(files)
