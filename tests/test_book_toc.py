"""The table of contents and the pages on disk agree, and the config is what the tests assume."""

from __future__ import annotations

import yaml

from tests.conftest import BOOK, ROOT


def _toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        for chapter in part.get("chapters", []):
            files.append(chapter["file"])
            files.extend(section["file"] for section in chapter.get("sections", []))
    return files


def test_every_book_page_is_in_the_toc():
    pages = {f"book/{p.stem}" for p in BOOK.iterdir() if p.suffix in {".md", ".ipynb"}}
    listed = {f.rsplit(".", 1)[0] if f.endswith((".md", ".ipynb")) else f for f in _toc_files()}
    assert pages - listed == set(), f"pages missing from _toc.yml: {sorted(pages - listed)}"


def test_every_toc_entry_exists():
    for entry in _toc_files():
        candidates = [ROOT / f"{entry}.md", ROOT / f"{entry}.ipynb", ROOT / entry]
        assert any(c.is_file() for c in candidates), f"_toc.yml lists {entry}, which is not on disk"


def test_config_renders_stored_outputs_offline():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["execute"]["execute_notebooks"] == "off"
    assert config["only_build_toc_files"] is True
    sphinx = config["sphinx"]["config"]
    assert not sphinx["mathjax_path"].startswith("http")
    assert all(not url.startswith("http") for url in sphinx["nb_ipywidgets_js"])
    assert config["repository"]["url"].startswith("https://")
    assert config["launch_buttons"]["colab_url"] and config["launch_buttons"]["binderhub_url"]


def test_readme_lists_every_chapter_and_its_pictures_exist():
    import re

    readme = (ROOT / "README.md").read_text()
    numbers = {int(m) for m in re.findall(r"^\| (\d+) \|", readme, flags=re.MULTILINE)}
    chapters = {int(p.name.split("_", 1)[0]) for p in BOOK.glob("[0-9][0-9]_*.ipynb")}
    assert numbers == chapters, f"README table {sorted(numbers)} vs chapters {sorted(chapters)}"
    for picture in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", readme):
        assert (ROOT / picture).is_file(), f"README shows {picture}, which is not in the repository"


def test_intro_map_links_every_chapter_in_order():
    import re

    intro = (BOOK / "intro.md").read_text()
    linked = re.findall(r"^\| \d+ \| \[[^\]]+\]\(([^)]+)\.ipynb\)", intro, flags=re.MULTILINE)
    chapters = sorted(p.stem for p in BOOK.glob("[0-9][0-9]_*.ipynb"))
    assert linked == chapters, f"the intro's map links {linked}"
