"""MkDocs hooks: the generated reference pages and the committed example report.

- Placeholders such as ``<!-- octbench:cli -->`` in a page are replaced by text generated from
  the code (:mod:`octbench.docgen`), so the YAML schema and the CLI reference cannot drift.
- The example report ``reports/quickstart/`` (made by ``octbench report
  experiments/quickstart.yaml``) is published under the same path, so pages show its figures
  without keeping copies of them in ``docs/``.
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File

from octbench.docgen import render

ROOT = Path(__file__).resolve().parent.parent
#: Files outside docs/ that the site publishes at the same relative path.
PUBLISHED = ("reports/quickstart/report.md", "reports/quickstart/figures")


def on_files(files, config):
    for name in PUBLISHED:
        source = ROOT / name
        paths = sorted(source.rglob("*")) if source.is_dir() else [source]
        for path in paths:
            if path.is_file():
                files.append(File(str(path.relative_to(ROOT)), src_dir=str(ROOT),
                                  dest_dir=config["site_dir"],
                                  use_directory_urls=config["use_directory_urls"]))
    return files


def on_page_markdown(markdown, page, config, files):
    return render(markdown)
