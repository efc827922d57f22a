"""Runbook links: every alert's ``runbook_url`` is ``<base>/<alertname>.md``, the page
``docs/runbooks/<alertname>.md`` of this repository.

The base is ONE value, but it is spelled out in the rule file and in the promtool tests: Prometheus
cannot read an annotation's text from anywhere else, and promtool compares annotations literally.
Point it at wherever an operator can open this repository's ``docs/runbooks/`` (the Git host of
your deployment, an internal mirror, a wiki that publishes the folder) with one command, which
rewrites every occurrence and re-checks::

    python alerts/runbooks.py set-base https://git.example.com/ops/riskmon/-/blob/main/docs/runbooks
    python alerts/runbooks.py check     # also run by tests/unit/test_alert_rules.py

``check`` fails unless every alert has a ``runbook_url`` with the one base whose path below the
base names an existing file in ``docs/runbooks/``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import yaml

ALERTS_DIR = Path(__file__).resolve().parent
RULES_DIR = ALERTS_DIR / "prometheus" / "rules"
PROMTOOL_TESTS_DIR = ALERTS_DIR / "prometheus" / "tests"
RUNBOOKS_DIR = ALERTS_DIR.parent / "docs" / "runbooks"


def rule_files() -> list[Path]:
    return sorted(RULES_DIR.glob("*.yml"))


def files_with_links() -> list[Path]:
    """Every file that spells out runbook URLs: the rules and their promtool tests."""
    return [*rule_files(), *sorted(PROMTOOL_TESTS_DIR.glob("*.test.yml"))]


def runbook_urls(paths: list[Path] | None = None) -> dict[str, str | None]:
    """Alert name -> its ``runbook_url`` annotation (None when missing), over the rule files
    among ``paths`` (default: this repository's rule files; other YAML files are skipped)."""
    out: dict[str, str | None] = {}
    for path in rule_files() if paths is None else paths:
        doc = yaml.safe_load(path.read_text())
        groups = doc.get("groups") if isinstance(doc, dict) else None
        for group in groups or []:
            for rule in group.get("rules") or []:
                if "alert" in rule:
                    out[rule["alert"]] = (rule.get("annotations") or {}).get("runbook_url")
    return out


def split_url(url: str) -> tuple[str, str]:
    """``(base, page)``: ``https://h/x/docs/runbooks/A.md`` -> ``("https://h/x/docs/runbooks",
    "A.md")``; the page is the last path segment (a ``?query`` or ``#anchor`` is not part of
    it, nor of the base)."""
    parts = urlsplit(url)
    path, _, page = parts.path.rpartition("/")
    return urlunsplit((parts.scheme, parts.netloc, path, "", "")), page


def current_base(urls: Mapping[str, str | None] | None = None) -> str:
    """The one base of every alert's ``runbook_url`` (ValueError if there is not exactly one)."""
    urls = runbook_urls() if urls is None else urls
    bases = {split_url(url)[0] for url in urls.values() if url}
    if len(bases) != 1:
        raise ValueError(f"runbook_url bases: expected exactly one, found {sorted(bases)}")
    return bases.pop()


def problems(urls: Mapping[str, str | None] | None = None) -> list[str]:
    """What is wrong with the runbook links (empty = every link resolves); ``urls`` defaults to
    :func:`runbook_urls`."""
    urls = runbook_urls() if urls is None else urls
    if not urls:
        return [f"no alerts in {RULES_DIR}"]
    out: list[str] = []
    try:
        base = current_base(urls)
    except ValueError as exc:
        out.append(str(exc))
        base = None
    parts = urlsplit(base or "")
    if base is not None and (parts.scheme not in ("http", "https") or not parts.netloc):
        out.append(f"runbook base {base!r} is not an absolute http(s) URL")
    for alert, url in sorted(urls.items()):
        if not url:
            out.append(f"{alert}: no runbook_url annotation")
            continue
        url_base, page = split_url(url)
        if page != f"{alert}.md":
            out.append(f"{alert}: runbook_url {url} does not end with /{alert}.md")
        elif not (RUNBOOKS_DIR / page).is_file():
            out.append(f"{alert}: runbook_url {url} -> missing {RUNBOOKS_DIR / page}")
        if base is not None and url_base != base:
            out.append(f"{alert}: runbook_url {url} does not start with the base {base}/")
    return out


def set_base(new_base: str, files: list[Path] | None = None) -> list[Path]:
    """Replace the current base by ``new_base`` in ``files`` (default: every file with runbook
    links; text replacement, so comments and layout stay). The current base is read from the
    rule files among ``files``. Returns the files changed."""
    new_base = new_base.rstrip("/")
    parts = urlsplit(new_base)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{new_base!r} is not an absolute http(s) URL")
    files = files_with_links() if files is None else files
    old = current_base(runbook_urls(files)) + "/"
    changed = []
    for path in files:
        text = path.read_text()
        updated = text.replace(old, new_base + "/")
        if updated != text:
            path.write_text(updated)
            changed.append(path)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check", help="every runbook_url has the one base and names a runbook")
    sub.add_parser("base", help="print the current base")
    set_cmd = sub.add_parser("set-base", help="rewrite every runbook_url to a new base")
    set_cmd.add_argument("base", help="URL under which docs/runbooks/<alert>.md is served")
    args = parser.parse_args(argv)
    try:
        if args.command == "base":
            print(current_base())
            return 0
        if args.command == "set-base":
            for path in set_base(args.base):
                print(f"rewrote {path.relative_to(ALERTS_DIR.parent)}")
    except ValueError as exc:
        print(f"runbooks: {exc}", file=sys.stderr)
        return 2
    found = problems()
    for problem in found:
        print(problem, file=sys.stderr)
    if not found:
        print(f"{len(runbook_urls())} runbook links under {current_base()}/ resolve")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
