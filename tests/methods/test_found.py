"""FOUND: its background step against a plain transcription of its definition, hand-made cases,
the saliency head (FOUND's .pt and objdisc's .safetensors, refusals), and runs through the CLI."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import invoke, make_saliency, refused

from objdisc.errors import OptionError
from objdisc.methods import Found, make_method
from objdisc.methods.found import background, found_batch, largest_component, pixel_object, split
from objdisc.models.saliency_head import load_head, save_head


def reference_background(attention: torch.Tensor, keys: torch.Tensor, th: float) -> torch.Tensor:
    """bkg_seg.py's definition in its own layout: attention (B, heads, N), keys (B, N, C)."""
    nb, nh, n = attention.shape
    threshold = attention.reshape(nb, -1).mean(dim=1)
    q = (attention > threshold[:, None, None]).sum(dim=2) / n
    beta = torch.log((q + 1e-10).sum(dim=1)[:, None] / (q + 1e-10))
    descs = F.normalize((keys.reshape(nb, n, nh, -1) * beta[:, None, :, None]).reshape(nb, n, -1), dim=-1)
    cos = descs @ descs.transpose(1, 2)
    seed = (attention * beta[:, :, None]).sum(dim=1).argmin(dim=-1)
    return cos[torch.arange(nb), seed] > th


@pytest.mark.parametrize("seed", range(4))
def test_the_background_equals_the_definition(seed: int):
    g = torch.Generator().manual_seed(seed)
    keys = torch.randn(3, 48, 4 * 16, generator=g) + 0.6 * torch.randn(3, 1, 64, generator=g)
    attention = torch.rand(3, 4, 48, generator=g).softmax(dim=-1)
    got = background(keys, attention.transpose(1, 2), 0.3)
    expected = reference_background(attention, keys, 0.3)
    assert torch.equal(got, expected)
    assert 0 < int(got.sum()) < got.numel()  # not a trivial case


def test_the_least_attended_patch_seeds_the_background():
    """Two kinds of patch (orthogonal keys); the CLS token looks at the second kind: the first is
    the background, whatever the head weights."""
    keys = torch.zeros(1, 6, 2 * 4)
    keys[0, :4, 0] = keys[0, :4, 4] = 1.0  # background patches
    keys[0, 4:, 1] = keys[0, 4:, 5] = 1.0  # object patches
    attention = torch.tensor([[0.05, 0.05, 0.06, 0.04, 0.4, 0.4]] * 2).T[None]  # (1, N, heads)
    assert background(keys, attention, 0.3).tolist() == [[True, True, True, True, False, False]]


def test_kattn_features_split_by_heads_of_64_channels_or_as_told():
    feats = torch.zeros(1, 5, 6 * 64 + 6)
    keys, attention = split(feats, 0)
    assert keys.shape[-1] == 384 and attention.shape[-1] == 6
    assert split(torch.zeros(1, 5, 40 + 4), 4)[1].shape[-1] == 4
    with pytest.raises(OptionError, match="give --heads"):
        split(torch.zeros(1, 5, 100), 0)
    with pytest.raises(OptionError, match="--heads 7 does not divide"):
        split(torch.zeros(1, 5, 44), 7)


def head_files(tmp_path: Path, width: int = 32) -> tuple[Path, Path, torch.nn.Conv2d]:
    """FOUND's .pt and objdisc's .safetensors of one random Conv2d(width, 1, 1)."""
    torch.manual_seed(1)
    conv = torch.nn.Conv2d(width, 1, (1, 1))
    pt = tmp_path / "decoder_weights.pt"
    torch.save({"decoder": conv.state_dict()}, pt)
    st = tmp_path / "head.safetensors"
    weight, bias = conv.weight.detach().reshape(-1).numpy(), float(conv.bias.detach()[0])
    save_head(st, weight, bias, {"backbone": "x", "patch_size": 8})
    return pt, st, conv


def test_the_head_is_founds_1x1_convolution_from_either_file(tmp_path: Path):
    pt, st, conv = head_files(tmp_path)
    h, w = 3, 5
    keys = torch.randn(2, h * w, 32)
    expected = conv(keys.transpose(1, 2).reshape(2, 32, h, w))[:, 0]  # FOUND: decoder on (B, C, h, w)
    for path in (pt, st):
        method = Found(found_head=str(path))
        feats = torch.cat([keys, torch.rand(2, h * w, 1)], dim=-1)
        found = found_batch(feats, (h, w), 8, torch.tensor([[24, 40]] * 2), Found(found_head=str(path), heads=1))
        np.testing.assert_allclose(found.score_map.numpy(), expected.detach().numpy(), rtol=0, atol=1e-5)
        assert method.options()["found_head_sha256"] == load_head(path).sha256
    assert load_head(st).trained_on["patch_size"] == 8 and load_head(pt).trained_on == {}


def test_bad_heads_are_refused_naming_the_file(tmp_path: Path):
    _, st, _ = head_files(tmp_path)
    wrong = tmp_path / "wrong.pt"
    torch.save({"decoder": {"weight": torch.zeros(2, 32, 1, 1), "bias": torch.zeros(2)}}, wrong)
    with pytest.raises(OptionError, match=r"wrong\.pt: not a 1x1 convolution to one channel"):
        load_head(wrong)
    code = tmp_path / "code.pt"
    code.write_bytes(pickle.dumps({"decoder": Path("/etc/passwd")}, protocol=2))  # a pickled object
    with pytest.raises(OptionError, match=r"code\.pt: holds pickled Python objects"):
        load_head(code)
    with pytest.raises(OptionError, match="file not found"):
        Found(found_head=str(tmp_path / "gone.pt"))
    with pytest.raises(OptionError, match=r"trained on x with 8-pixel patches; this backbone has 16"):
        Found(found_head=str(st)).input_side(16)
    feats = torch.zeros(1, 4, 48 + 1)
    with pytest.raises(OptionError, match=r"reads 32-channel keys .*48 channels"):
        found_batch(feats, (2, 2), 8, torch.tensor([[16, 16]]), Found(found_head=str(st), heads=1))


def test_the_pixel_mask_is_the_upsampled_maps_largest_component():
    feats = torch.zeros(1, 12, 64 + 1)
    method = make_method("found", heads=1)
    (objects,) = method(feats, (3, 4), 8, torch.tensor([[20, 30]])).to_host(8, [(20, 30)])
    logits = np.array([[-1.0, 2.0, 2.0, -1.0], [-1.0, 2.0, -1.0, -1.0], [3.0, -1.0, -1.0, -1.0]], np.float32)
    objects = type(objects)(
        np.array([[8, 0, 24, 16]]), np.ones(1), np.array([1]), (logits > 0)[None], None, logits, objects.geometry
    )
    final = pixel_object(objects, (20, 30), 0.0)
    up = F.interpolate(torch.from_numpy(logits)[None, None], scale_factor=8, mode="bilinear", align_corners=False)
    expected = largest_component(up[0, 0, :20, :30].numpy() > 0)
    assert np.array_equal(final.pixel_masks()[0], expected)


def two_blob_logits() -> np.ndarray:
    return np.array([[2.0, 2.0, -1.0, -1.0], [2.0, -1.0, -1.0, 3.0], [-1.0, -1.0, -1.0, 3.0]], np.float32)


def head_objects(logits: np.ndarray, mode: str, tmp_path: Path):
    """FOUND's objects of one 20 x 30 image whose head gives ``logits`` on its 3 x 4 grid."""
    h, w = logits.shape
    width = 4
    save_head(tmp_path / "h.safetensors", np.array([1, 0, 0, 0], np.float32), 0.0, {"patch_size": 8})
    keys = torch.zeros(1, h * w, width)
    keys[0, :, 0] = torch.from_numpy(logits.ravel())  # the head reads channel 0: logit = key 0
    feats = torch.cat([keys, torch.rand(1, h * w, 1)], dim=-1)
    method = Found(found_head=str(tmp_path / "h.safetensors"), heads=1, found_mode=mode)
    (objects,) = method(feats, (h, w), 8, torch.tensor([[20, 30]])).to_host(8, [(20, 30)])
    return method, objects


def test_multi_mode_keeps_every_component_and_scores_the_heads_soft_map(tmp_path: Path):
    from objdisc.datasets.base import ImageRecord
    from objdisc.engine.discover import ImageResult
    from objdisc.engine.saliency_maps import SOFT, saliency_result
    from objdisc.evaluation.saliency import counts, read_prediction

    logits = two_blob_logits()
    single, one = head_objects(logits, "single", tmp_path)
    multi, every = head_objects(logits, "multi", tmp_path)
    assert one.masks[0].sum() == 3 and every.masks[0].tolist() == (logits > 0).tolist()  # both blobs
    assert one.boxes[0].tolist() == [0, 0, 16, 16] and every.boxes[0].tolist() == [0, 0, 30, 20]
    up = F.interpolate(torch.from_numpy(logits)[None, None], scale_factor=8, mode="bilinear", align_corners=False)
    up = up[0, 0, :20, :30].numpy()
    final = multi.finalize(every, lambda: np.zeros((20, 30, 3), np.uint8), (20, 30))
    assert np.array_equal(final.pixel_masks()[0], up > 0)  # every component, at the pixels
    assert np.array_equal(single.finalize(one, lambda: None, (20, 30)).pixel_masks()[0], largest_component(up > 0))
    soft = multi.saliency_map(final, (20, 30))
    np.testing.assert_allclose(soft, 1 / (1 + np.exp(-up.astype(np.float64))), rtol=0, atol=1e-12)
    assert single.saliency_map(final, (20, 30)) is None and make_method("found", found_mode="multi").saliency_map(
        final, (20, 30)
    ) is None  # the background step has no soft map
    truth = np.zeros((20, 30), bool)
    truth[2:12, 3:14] = True
    from PIL import Image

    Image.fromarray(truth.astype(np.uint8) * 255).save(tmp_path / "t.png")
    record = ImageRecord(0, tmp_path / "i.jpg", "i.jpg", None, 30, 20, mask_path=tmp_path / "t.png")
    done = saliency_result(ImageResult(record, (20, 30), final, finalized=True), tmp_path / "o", "none", multi)
    assert done.objects.saliency == counts(soft, truth)  # F-max, S-measure on the soft map, the rest above 0.5
    assert np.abs(read_prediction(tmp_path / "o" / SOFT / "i.png") - soft).max() <= 0.5 / 255 + 1e-9
    plain = saliency_result(ImageResult(record, (20, 30), final, finalized=True), tmp_path / "p", "none", single)
    assert plain.objects.saliency == counts((up > 0).astype(np.float64), truth)
    assert not (tmp_path / "p" / SOFT).exists()


def test_found_multi_mode_through_run_and_visualize(tmp_path: Path, weights_file, monkeypatch):
    import objdisc.reports.pictures as pictures

    make_saliency(tmp_path / "img", tmp_path / "gt", n=2)
    rng = np.random.default_rng(0)
    save_head(tmp_path / "head.safetensors", rng.standard_normal(384).astype(np.float32), 0.0, {"patch_size": 16})
    args = ["run", "-b", "dino", "--weights", weights_file("dino"), "-d", "saliency", "--images", tmp_path / "img",
            "--annotations", tmp_path / "gt", "--method", "found", "--found-head", tmp_path / "head.safetensors",
            "--workers", "0"]  # fmt: skip
    assert invoke(*args, "--found-mode", "multi", "--out", tmp_path / "m").exit_code == 0
    assert invoke(*args, "--out", tmp_path / "s").exit_code == 0
    soft = sorted(p.name for p in (tmp_path / "m" / "soft").glob("*.png"))
    assert soft == ["im00.png", "im01.png"] and not (tmp_path / "s" / "soft").exists()
    run = json.loads((tmp_path / "m" / "run.json").read_text())
    assert run["options"]["method_options"]["found_mode"] == "multi"
    drawn = []
    real = pictures.figure
    monkeypatch.setattr(pictures, "figure", lambda *a: drawn.append(a) or real(*a))
    assert invoke("visualize", str(tmp_path / "m"), "--limit", "1").exit_code == 0
    assert [label for _, label in drawn[0][11]] == ["mask", "soft map (scored)", "ground truth"]


def test_found_runs_on_a_saliency_set_with_mae_and_s_measure(tmp_path: Path, weights_file):
    make_saliency(tmp_path / "img", tmp_path / "gt", n=2)
    args = ["run", "-b", "dino", "--weights", weights_file("dino"), "-d", "saliency", "--images", tmp_path / "img"]
    result = invoke(
        *args, "--annotations", tmp_path / "gt", "--method", "found", "--workers", "0", "--out", tmp_path / "o"
    )
    assert result.exit_code == 0, result.output
    values = json.loads((tmp_path / "o/metrics.json").read_text())["metrics"]["saliency"]["values"]
    assert values["mae"] is not None and 0 <= values["s_measure"] <= 100
    assert "MAE" in result.output and "S-measure" in result.output


# objdisc train-head


def train(weights: Path, images: Path, out: Path, *extra: str):
    return invoke(
        "train-head", "-b", "dino", "--weights", weights, "-d", "folder", "--images", images, "--out", out,
        "--iterations", "5", "--batch-size", "3", "--crop", "64", "--stop-bkg-loss", "3", "--no-progress", *extra,
    )  # fmt: skip


@pytest.fixture(scope="module")
def training_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from conftest import write_image

    folder = tmp_path_factory.mktemp("train-images")
    for i in range(5):
        write_image(folder / f"{i}.jpg", (60, 80), (10 + 2 * i, 12, 40, 50), seed=i)
    return folder


def test_train_head_lowers_the_loss_and_its_file_gives_the_masks_it_gave(tmp_path: Path, weights_file, training_images):
    from objdisc.commands.train_head import TrainHeadConfig, run
    from objdisc.datasets import DatasetArgs
    from objdisc.engine.head_training import HeadSettings
    from objdisc.models.args import ModelArgs

    out = tmp_path / "head.safetensors"
    settings = HeadSettings(iterations=5, batch_size=3, crop=64, stop_bkg_loss=3)
    config = TrainHeadConfig(ModelArgs("dino", weights_file("dino")), DatasetArgs("folder", images=training_images),
                             out, settings)  # fmt: skip
    result = run(config, progress=False)
    assert len(result.losses) == 6 and result.losses[-1] < result.losses[0]
    head = load_head(out)
    provenance = head.trained_on
    assert provenance["backbone"] == "dino_vits16" and provenance["patch_size"] == 16 and provenance["width"] == 384
    assert provenance["identity"]["iterations"] == 5 and provenance["run"]["weights"]["sha256"]
    assert not (tmp_path / "head.safetensors.training.pt").exists()
    # the saved head's masks: a run with it equals the head applied to the run's own features
    run_out = tmp_path / "run"
    ran = invoke("run", "-b", "dino", "--weights", weights_file("dino"), "-d", "folder", "--images", training_images,
                 "--method", "found", "--found-head", out, "--workers", "0", "--out", run_out)  # fmt: skip
    assert ran.exit_code == 0, ran.output
    from objdisc.images import load_image, make_batch
    from objdisc.models.backbones import create_backbone
    from objdisc.models.feature_spec import FeatureSpec
    from objdisc.models.features import FeatureExtractor

    backbone = create_backbone("dino", weights_file("dino"))
    per_image = json.loads((run_out / "per_image.json").read_text())["images"]
    for entry in per_image:
        image, _ = load_image(training_images / entry["file_name"])
        x = make_batch([torch.from_numpy(image)], 16, backbone.spec.mean, backbone.spec.std)
        with FeatureExtractor(backbone.model, [FeatureSpec("kattn", -1)]) as fx, torch.inference_mode():
            keys, _ = split(fx(x), 0)
        logits = keys[0].numpy() @ head.weight + head.bias
        grid = (x.shape[2] // 16, x.shape[3] // 16)
        expected = largest_component((logits > 0).reshape(grid))
        boxes = [o["box"] for o in entry["objects"]]
        if expected is None:
            assert boxes == []
        else:
            rows, cols = np.flatnonzero(expected.any(1)), np.flatnonzero(expected.any(0))
            box = [cols[0] * 16, rows[0] * 16, min((cols[-1] + 1) * 16, 80), min((rows[-1] + 1) * 16, 60)]
            assert boxes == [box]
    # trained already, with these settings: nothing to do; other settings: refused
    again = train(weights_file("dino"), training_images, out)
    assert again.exit_code == 0
    other = train(weights_file("dino"), training_images, out, "--lr", "0.01")
    refused(other, "a head trained with other settings", "lr: 0.05 there, 0.01 now")


@pytest.mark.slow
def test_an_interrupted_training_resumes_to_the_uninterrupted_head(tmp_path: Path, weights_file, training_images):
    import objdisc.engine.head_training as training

    whole = train(weights_file("dino"), training_images, tmp_path / "whole.safetensors")
    assert whole.exit_code == 0, whole.output
    real = training.train_step
    calls = {"n": 0}

    def dies_at_the_fifth(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    out = tmp_path / "part.safetensors"
    pytest.MonkeyPatch().setattr(training, "train_step", dies_at_the_fifth)
    with pytest.raises(KeyboardInterrupt):
        from objdisc.commands.train_head import TrainHeadConfig, run
        from objdisc.datasets import DatasetArgs
        from objdisc.engine.head_training import HeadSettings
        from objdisc.models.args import ModelArgs

        settings = HeadSettings(iterations=5, batch_size=3, crop=64, stop_bkg_loss=3)
        run(TrainHeadConfig(ModelArgs("dino", weights_file("dino")), DatasetArgs("folder", images=training_images),
                            out, settings, checkpoint_every=2), progress=False)  # fmt: skip
    training.train_step = real
    assert (tmp_path / "part.safetensors.training.pt").exists()
    other = train(weights_file("dino"), training_images, out, "--seed", "3")
    refused(other, "a training checkpoint made with other settings", "seed: 0 there, 3 now")
    resumed = train(weights_file("dino"), training_images, out)
    assert resumed.exit_code == 0, resumed.output
    a, b = load_head(tmp_path / "whole.safetensors"), load_head(out)
    assert np.array_equal(a.weight, b.weight) and a.bias == b.bias
    assert a.trained_on["losses"] == b.trained_on["losses"]


def test_train_head_reads_features_from_a_cache_without_augmentation(tmp_path: Path, weights_file, training_images):
    import objdisc.engine.head_training as training

    plain = train(weights_file("dino"), training_images, tmp_path / "plain.safetensors", "--no-augment")
    assert plain.exit_code == 0, plain.output
    cache = tmp_path / "cache"
    first = train(weights_file("dino"), training_images, tmp_path / "a.safetensors", "--no-augment", "--cache", cache)
    assert first.exit_code == 0, first.output
    assert "(10 read, 5 computed)" in first.output  # 6 batches of 3, 2, 3, ... of 5 images: each computed once
    assert len(list(cache.glob("*/kattn_l-1/*/*.safetensors"))) == 5
    forwards = []
    real = training.batch_features
    pytest.MonkeyPatch().setattr(training, "batch_features", lambda *a: forwards.append(1) or real(*a))
    try:
        again = train(weights_file("dino"), training_images, tmp_path / "b.safetensors", "--no-augment",
                      "--cache", cache, "--lr", "0.01")  # fmt: skip
    finally:
        training.batch_features = real
    assert again.exit_code == 0, again.output
    assert forwards == [] and "(15 read, 0 computed)" in again.output  # another training: no forward pass at all
    a, b, p = (load_head(tmp_path / f"{n}.safetensors") for n in ("a", "b", "plain"))
    # the cached training's head: the uncached one's up to the float rounding of other batch compositions
    assert np.allclose(a.weight, p.weight, atol=1e-5) and abs(a.bias - p.bias) < 1e-5
    assert not np.array_equal(a.weight, b.weight)  # --lr 0.01 trained another head from the same features
    replay = train(weights_file("dino"), training_images, tmp_path / "c.safetensors", "--no-augment", "--cache", cache)
    assert replay.exit_code == 0
    c = load_head(tmp_path / "c.safetensors")
    assert np.array_equal(a.weight, c.weight) and a.bias == c.bias  # a warm cache repeats the head bit for bit
    refused(train(weights_file("dino"), training_images, tmp_path / "d.safetensors", "--cache", cache),
            "--cache needs --no-augment")  # fmt: skip


def test_train_head_refusals(tmp_path: Path, weights_file):
    (tmp_path / "empty").mkdir()
    refused(train(weights_file("dino"), tmp_path / "empty", tmp_path / "h.safetensors"), "empty")
    (tmp_path / "theirs.safetensors").write_bytes(b"not ours")
    refused(train(weights_file("dino"), tmp_path, tmp_path / "theirs.safetensors"), "objdisc train-head did not write")
    refused(train(weights_file("dino"), tmp_path, tmp_path / "head.pt"), "give a .safetensors file name")


def test_found_sweeps_tables_draws_and_writes_pseudo_labels(tmp_path: Path, weights_file, coco, caplog):
    images, annotations, _ = coco
    data = ["-d", "coco", "--images", str(images), "--annotations", str(annotations), "--workers", "0"]
    swept = invoke("sweep", "-b", "dino", "--weights", str(weights_file("dino")), *data, "--method", "found",
                   "--bkg-th", "0.2,0.4", "--out", str(tmp_path / "s"))  # fmt: skip
    assert swept.exit_code == 0, swept.output
    runs = sorted(p.parent for p in (tmp_path / "s").glob("*/run.json"))
    assert [json.loads((r / "run.json").read_text())["producer"]["discovery"]["bkg_th"] for r in runs] == [0.2, 0.4]
    table = invoke("table", *map(str, runs))
    assert table.exit_code == 0 and "bkg_th=0.2" in table.output, table.output
    out = tmp_path / "o"
    ran = invoke("run", "-b", "dino", "--weights", str(weights_file("dino")), *data, "--method", "found",
                 "--pseudo-labels", str(tmp_path / "labels.json"), "--out", str(out))  # fmt: skip
    assert ran.exit_code == 0, ran.output
    labels = json.loads((tmp_path / "labels.json").read_text())
    assert labels["categories"][0]["name"] == "fg" and all("segmentation" in a for a in labels["annotations"])
    assert invoke("visualize", str(out)).exit_code == 0
    assert "differ from the run" not in (out / "vis/index.html").read_text() and "differ" not in caplog.text
