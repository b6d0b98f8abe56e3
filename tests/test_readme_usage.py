"""The README's usage block, run.json keys and output files against what the code defines and writes."""

from __future__ import annotations

import argparse
import re

from bench.api.run import RunSummary
from bench.commands.cli import build_parser
from bench.commands.usage import readme_block, usage_block
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()


def commands(parser: argparse.ArgumentParser, prefix: str = "bench") -> dict[str, argparse.ArgumentParser]:
    """``{"bench run": parser, "bench data status": parser, ...}``: every leaf command."""
    sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
    if sub is None:
        return {prefix: parser}
    return {k: v for name, p in sub.choices.items() for k, v in commands(p, f"{prefix} {name}").items()}


def documented() -> dict[str, str]:
    """Each command's synopsis in the README block (continuation lines joined, comments dropped)."""
    block = readme_block(README)
    assert block is not None, "README.md has no generated usage block (run scripts/readme-usage --write README.md)"
    out: dict[str, str] = {}
    current = ""
    for line in block.strip("`\n").splitlines():
        text = line.split("   # ")[0].strip()
        if line.startswith("bench "):
            words = text.split()
            n = next((i for i, w in enumerate(words) if not re.fullmatch(r"[a-z]+", w)), len(words))
            current = " ".join(words[:n])
            out[current] = text
        elif not text.startswith("#"):
            out[current] += " " + text
    return out


def test_readme_usage_block_is_the_generated_one() -> None:
    assert readme_block(README) == usage_block(), (
        "README usage block is stale: run scripts/readme-usage --write README.md"
    )


def test_every_command_and_option_is_in_the_readme_and_nothing_else() -> None:
    docs = documented()
    parsers = commands(build_parser())
    assert set(docs) == set(parsers)
    for name, parser in parsers.items():
        options = {
            max(a.option_strings, key=len)
            for a in parser._actions
            if a.option_strings and not isinstance(a, argparse._HelpAction)
        }
        written = set(re.findall(r"(?:\[|\s)(--[a-z][a-z-]*)", docs[name]))
        assert written == options, name
        positionals = [
            a for a in parser._actions if not a.option_strings and not isinstance(a, argparse._SubParsersAction)
        ]
        assert len(docs[name].split()) >= len(name.split()) + len(positionals)


def test_readme_lists_the_run_json_keys_written() -> None:
    section = README[README.index("- `run.json`") :].split("\n- ")[0]
    listed = set(re.findall(r'"([a-z_]+)"', section))
    assert listed == set(RunSummary().as_json())


def test_readme_lists_the_output_files_written() -> None:
    section = README[README.index("## Results format") : README.index("## Statistics")]
    listed = set(re.findall(r"`([a-z_]+\.(?:md|csv|json|png|tex|html))`", section))
    if "a PDF of the same name beside it" in section:  # one line covers every figure's PDF
        listed |= {name[: -len(".png")] + ".pdf" for name in listed if name.endswith(".png") and name != "index.png"}
    listed |= {f"{stem}.csv" for stem in re.findall(r"`([a-z_]+)\.png` / `\.csv`", section)}
    committed = {p.name for p in (ROOT / "results" / "quickstart").iterdir() if p.is_file() and p.suffix != ".txt"}
    assert committed <= listed, committed - listed  # every file the quickstart wrote is documented
    source = "\n".join(p.read_text() for p in (ROOT / "bench").rglob("*.py"))
    for name in listed - {"index.png"}:  # and everything documented is written somewhere (the screenshot: by the test)
        if name.endswith(".pdf"):  # bench/core/plotting.py:save writes the PDF beside every PNG
            name = name[: -len(".pdf")] + ".png"
        stem = name.rsplit(".", 1)[0]
        assert name in source or f'"{stem}"' in source or f"{stem}.{{" in source, name
