"""The versions page shows production's edit budget (what `govern history` prints)."""

from __future__ import annotations

from tests.ui.uikit import sign_in

pytest_plugins = ["tests.ui.uikit"]  # its fixtures (ui_gov), found by name


def test_versions_page_shows_the_edit_budget(ui_gov):
    at = sign_in("alice")
    at.switch_page("views/versions.py").run()
    captions = [c.value for c in at.caption]
    assert ("Edit budget of v1 (production): 0 changes, 0 edited facts, cumulative update norm 0 "
            "(largest relative to its tensor 0.00%)") in captions, captions
