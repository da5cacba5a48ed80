"""rcnn_lab.viz.frames: explorers pre-drawn for the static book, switched by CSS alone."""

from __future__ import annotations

import re
import shutil

import matplotlib
import pytest
import torch.nn.functional as F

from rcnn_lab.viz.frames import explorer_frames, frames_html
from rcnn_lab.viz.roi_align import roi_align_explorer
from rcnn_lab.viz.scene import toy_scene

matplotlib.use("Agg")


def explorer():
    image, _, _ = toy_scene(120, 160, 2, seed=3)
    return roi_align_explorer(F.avg_pool2d(image[None], 8)[0], spatial_scale=1 / 8)


def test_one_button_and_one_figure_per_setting():
    settings = [{"sampling_ratio": 2}, {"sampling_ratio": -1}, {"aligned": False, "w": 4.5}]
    page = explorer_frames(explorer(), settings).data
    assert len(re.findall(r'<input type="radio"', page)) == 3
    assert len(re.findall(r'<img class="rl-frame"', page)) == 3
    assert page.count(" checked>") == 1  # the first setting is shown first
    assert "sampling_ratio=-1" in page and "aligned=False, w=4.5" in page
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(set(images)) == 3  # each setting drew a different figure


def test_bad_settings_name_the_problem():
    with pytest.raises(ValueError, match=r"\['colour'\] are not arguments"):
        explorer_frames(explorer(), [{"colour": 1}])
    with pytest.raises(ValueError, match="at least one setting"):
        explorer_frames(explorer(), [])
    with pytest.raises(ValueError, match="one label per frame"):
        frames_html([("AAAA", 10)], ["a", "b"])


@pytest.mark.browser
def test_clicking_a_setting_switches_the_figure_without_a_kernel(tmp_path):
    """The static page: no Python, no JavaScript; clicking a label shows another image."""
    from playwright.sync_api import sync_playwright

    pngs = [(__import__("base64").b64encode(bytes([k]) * 8).decode(), 40 + k) for k in range(3)]
    page_file = tmp_path / "frames.html"
    page_file.write_text(f"<html><body>{frames_html(pngs, ['a', 'b', 'c'])}</body></html>")
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is needed (make chromium)"
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=args)
        page = browser.new_page(java_script_enabled=False)
        page.goto(page_file.as_uri())

        def visible():
            return [img.is_visible() for img in page.query_selector_all("img.rl-frame")]

        assert visible() == [True, False, False]
        page.click("label[for$='-2']")
        assert visible() == [False, False, True]
        page.click("label[for$='-1']")
        assert visible() == [False, True, False]
        browser.close()


def test_figure_frames_draw_pyplot_free_figures_and_reject_other_things():
    from matplotlib.figure import Figure

    from rcnn_lab.viz.frames import figure_frames

    def make(n):
        fig = Figure(figsize=(2, 2))
        fig.subplots().plot(range(n))
        return fig

    page = figure_frames(make, [{"n": 2}, {"n": 5}]).data
    assert page.count('class="rl-frame"') == 2 and "n=5" in page
    with pytest.raises(TypeError, match="Figure"):
        figure_frames(lambda n: None, [{"n": 1}])
    with pytest.raises(ValueError, match="at least one"):
        figure_frames(make, [])
