"""The quick tour's params: the quick profile at 256 px, shared paths still valid from the copy."""

from pathlib import Path

import yaml

from tools import quick_tour

REPO = Path(__file__).resolve().parents[1]


def test_tour_params_pick_the_quick_profile_and_keep_shared_paths_valid(tmp_path):
    params = quick_tour.tour_params(yaml.safe_load((REPO / "params.yaml").read_text()))
    assert params["train"]["profile"] == "quick" and params["prepare"]["size"] == 256
    assert params["patchify"]["patch_size"] % 4 == 0  # x4 super-resolution inputs stay whole
    for section, key in (("download", "mirror"), ("evaluate", "assets")):
        path = Path(params[section][key])
        assert (
            path.is_absolute()
            and path == (REPO / yaml.safe_load((REPO / "params.yaml").read_text())[section][key]).resolve()
        )
    quick = params["train"]["profiles"]["quick"]["models"]
    standard = params["train"]["profiles"]["standard"]["models"]
    assert set(quick) == set(standard) and all(quick[m]["max_steps"] < standard[m]["max_steps"] for m in quick)


def test_tour_refuses_to_overwrite_an_earlier_tour(tmp_path, capsys):
    (tmp_path / "tour").mkdir()
    assert quick_tour.main(["--dest", str(tmp_path / "tour")]) == 2
    assert "remove it first" in capsys.readouterr().err
