"""Methods own their options: declared once, checked once, refused with the flag's name."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import folder_run, refused

from objdisc.errors import OptionError
from objdisc.methods import METHODS, all_options, make_method
from objdisc.methods.options import options_of


def test_every_option_is_declared_with_help_and_a_default_that_passes_its_checks():
    for name, cls in METHODS.items():
        infos = options_of(cls)
        assert infos, name
        for info in infos:
            assert info.help and info.type in (int, float, str, bool)
            assert info.check(info.default) == info.default
        assert cls().options() == {"method": name, **{i.name: i.default for i in infos}}
        deciding = cls().options(deciding_only=True)
        assert deciding == {"method": name, **{i.name: i.default for i in infos if i.decides}}
    assert set(all_options()) == {
        *("k_patches", "gram_bias", "tau", "eps", "head", "keep_mass", "component", "clip"),
        *("masks", "fixed_size", "crf", "eigen"),
        *("stride", "cc_area", "iou_filter", "fg_include", "intersection_merge", "merge_ioa", "dino_merge"),
        *("bkg_th", "found_head", "heads", "found_mode"),
    }
    # how the eigenvectors are computed is recorded in run.json, not in the journal's settings
    assert "eigen" not in METHODS["maskcut"]().options(deciding_only=True)
    assert METHODS["tokencut"](eigen="device").options()["eigen"] == "device"


@pytest.mark.parametrize(
    ("method", "options", "message"),
    [
        ("lost", {"k_patches": 2.5}, "--k-patches takes int values, got 2.5"),
        ("lost", {"k_patches": True}, "--k-patches takes int values"),
        ("dinoseg", {"component": "biggest"}, "--component takes one of lost, largest, got 'biggest'"),
        ("dinoseg", {"keep_mass": 1.0}, "--keep-mass must lie strictly between 0 and 1"),
        ("dinoseg", {"head": -1}, "--head must be at least 0"),
    ],
)
def test_values_an_option_refuses(method: str, options: dict, message: str):
    with pytest.raises(OptionError, match=message):
        make_method(method, **options)


def test_an_integer_valued_float_is_an_int_option():
    assert make_method("lost", k_patches=50.0).k_patches == 50


@pytest.mark.parametrize(
    ("option", "value"), [("--tau", "nan"), ("--tau", "inf"), ("--gram-bias", "inf"), ("--gram-bias", "-inf")]
)
def test_non_finite_method_options(tmp_path: Path, weights_file, two_images, option: str, value: str):
    extra = [option, value] + (["--method", "tokencut"] if option == "--tau" else [])
    refused(folder_run(weights_file("dinov2_reg"), two_images, tmp_path / "o", *extra), option, "finite")
    assert not (tmp_path / "o" / "journal").exists()
