import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image
from wsi_synth_cli.main import cli

from tests.conftest import shared, tiny_bundle
from wsi_synth import training
from wsi_synth.data import open_dataset
from wsi_synth.diffusion.schedule import alphas_cumprod
from wsi_synth.errors import BadModelError
from wsi_synth.models.bundle import open_bundle
from wsi_synth.models.config import load_config
from wsi_synth.training import stages as training_stages


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    data, model, (codec,) = tiny_bundle(tmp_path_factory.mktemp("train"), steps=60, batch_size=8, stages=("codec",))
    return data, model, codec


@pytest.mark.slow
def test_image_model_overfits_eight_real_tiles(trained, tmp_path):
    data, model, _ = trained
    bundle_dir = tmp_path / "m"
    shutil.copytree(model, bundle_dir)
    config = load_config(
        "tiny", max_steps=300, batch_size=8, warmup_steps=10, checkpoint_every=300, sample_every=300, p_unc=0.2
    )
    result = training.train("image", data, bundle_dir, config, progress=False)
    assert result["final_loss"] < 0.6 * result["initial_loss"]
    assert (bundle_dir / "previews" / "image_step0000300.png").exists()


def test_codec_scale_makes_latents_unit_variance(trained):
    data, model, codec_result = trained
    bundle = open_bundle(model)
    codec = bundle.load_codec()
    ds = open_dataset(data)
    tiles = ds.source_group(ds.sources[0]["id"])["labelled/images"][:]
    with torch.no_grad():
        z = codec.encode(torch.from_numpy(tiles).permute(0, 3, 1, 2).float() / 127.5 - 1).latent_dist.mode()
    assert (z * bundle.meta["latent"]["scale"]).std().item() == pytest.approx(1.0, abs=0.05)
    assert bundle.meta["latent"]["factor"] == 4 and "psnr_train_db" in codec_result


def test_codec_can_train_on_the_posterior_mean(trained):
    """sample_posterior=False decodes the posterior mean: no sampling noise, so a lower loss on the same batch."""
    from dataclasses import replace

    data, model, _ = trained
    bundle, ds = open_bundle(model), open_dataset(data)
    base = load_config("tiny")
    losses = {}
    for flag in (True, False):
        spec = training_stages.build_stage(
            "codec", ds, bundle, replace(base, codec=replace(base.codec, sample_posterior=flag)), "cpu"
        )
        with torch.no_grad():
            losses[flag] = spec.loss(bundle.load_codec(), 7).item()
    assert losses[False] < losses[True]
    assert load_config("tiny").codec.sample_posterior  # the VAE objective stays the default


def test_external_codec_folder_is_recorded_absolute(trained, tmp_path, monkeypatch):
    """`--codec sd2-vae/` given relative: the bundle still loads it from any other working directory."""
    data, model, _ = trained
    shutil.copytree(model / "codec", tmp_path / "vae")
    monkeypatch.chdir(tmp_path)
    config = load_config("tiny", max_steps=2, batch_size=2, checkpoint_every=2, sample_every=2)
    training.train("image", data, tmp_path / "m", config, codec="vae", progress=False)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    bundle = open_bundle(tmp_path / "m")
    assert bundle.meta["stages"]["codec"]["external"] == str(tmp_path / "vae")
    assert bundle.load_codec().config.latent_channels == open_bundle(model).load_codec().config.latent_channels


def test_save_then_load_gives_identical_outputs(trained, tmp_path):
    from wsi_synth.models.networks import build_unet

    data, model, _ = trained
    config = load_config("tiny")
    net = build_unet(config.image, in_channels=5, out_channels=4, num_class_embeds=4, sample_size=16).eval()
    bundle = open_bundle(tmp_path / "b", create=True)
    bundle.root.mkdir()
    bundle.save_network("image", net)
    bundle.meta["stages"]["image"] = {"steps": 0}
    loaded = bundle.load_unet("image")
    x, t, c = torch.randn(2, 5, 16, 16), torch.tensor([10, 900]), torch.tensor([0, 3])
    with torch.no_grad():
        assert torch.equal(net(x, t, class_labels=c).sample, loaded(x, t, class_labels=c).sample)
    codec = open_bundle(model).load_codec()
    again = open_bundle(model).load_codec()
    img = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.equal(codec.encode(img).latent_dist.mode(), again.encode(img).latent_dist.mode())


def test_resume_after_interruption_gives_the_same_weights(trained, tmp_path, monkeypatch):
    data, model, _ = trained
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(model, a)
    shutil.copytree(model, b)
    config = load_config("tiny", max_steps=6, batch_size=4, warmup_steps=2, checkpoint_every=100, sample_every=100)
    training.train("image", data, a, config, progress=False)
    real = training_stages._eps_loss

    def interrupted(net, x0, step, *args, **kwargs):
        if step == 3:
            raise KeyboardInterrupt
        return real(net, x0, step, *args, **kwargs)

    monkeypatch.setattr(training_stages, "_eps_loss", interrupted)
    with pytest.raises(KeyboardInterrupt):
        training.train("image", data, b, config, progress=False)
    assert torch.load(b / "checkpoints" / "image.pt", weights_only=False)["step"] == 3
    monkeypatch.setattr(training_stages, "_eps_loss", real)
    training.train("image", data, b, config, resume=True, progress=False)
    sa = torch.load(a / "checkpoints" / "image.pt", weights_only=False)
    sb = torch.load(b / "checkpoints" / "image.pt", weights_only=False)
    assert sa["step"] == sb["step"] == 6 and sa["losses"] == sb["losses"]
    assert all(torch.equal(sa["net"][k], sb["net"][k]) for k in sa["net"])
    ua, ub = open_bundle(a).load_unet("image"), open_bundle(b).load_unet("image")
    assert all(torch.equal(p, q) for p, q in zip(ua.state_dict().values(), ub.state_dict().values(), strict=True))


@pytest.mark.parametrize("conditioning", ["per-class", "spatial", "spatial-global"])
def test_labelled_unlabelled_draw_follows_p_unc(trained, conditioning):
    data, model, _ = trained
    p_unc, batch, steps = 0.3, 8, 150
    config = load_config("tiny", batch_size=batch, p_unc=p_unc, image_conditioning=conditioning)
    spec = training_stages.build_stage("image", open_dataset(data), open_bundle(model), config, "cpu")
    draws = [spec.draw(step) for step in range(steps)]
    labels = torch.cat([d[2] for d in draws])
    n, k = len(labels), int((labels == 0).sum())
    assert abs(k - p_unc * n) < 4 * np.sqrt(n * p_unc * (1 - p_unc))  # binomial, 4σ
    if conditioning == "per-class":
        assert set(labels.tolist()) - {0} <= {1, 2, 3} and len(set(labels.tolist())) > 2  # several classes get turns
    else:  # "map or null", and the map as K − 1 one-hot channels that never overlap
        masks = torch.cat([d[1] for d in draws])
        n_classes = len(open_dataset(data).classes)
        assert (
            set(labels.tolist()) == {0, 1} and masks.shape[1] == n_classes - 1 and float(masks.sum(1).max()) <= 1 + 1e-6
        )
        assert float(masks[labels == 0].abs().sum()) == 0.0


def test_spatial_labelled_tiles_take_the_map_embedding_even_with_no_class_annotated(trained, tmp_path):
    """An all-unknown map is a labelled source's unannotated tissue (embedding 1), not the null condition, which is
    the unlabelled tiles' look: otherwise such areas of a slide switch look along the crop grid."""
    data, model, _ = trained
    blank = tmp_path / "data"
    shutil.copytree(data, blank)
    import zarr

    for source in open_dataset(blank).sources:
        zarr.open_group(str(blank / "sources" / f"{source['id']}.zarr"), mode="r+")["labelled/masks"][:] = 0
    config = load_config("tiny", batch_size=8, p_unc=0.3, image_conditioning="spatial")
    spec = training_stages.build_stage("image", open_dataset(blank), open_bundle(model), config, "cpu")
    draws = [spec.draw(step) for step in range(40)]
    labels, masks = torch.cat([d[2] for d in draws]), torch.cat([d[1] for d in draws])
    # labelled draws: 1, with an empty map
    assert float(masks.abs().sum()) == 0.0 and 0 < int((labels == 1).sum()) < len(labels)


def _embedding_seen(net, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    seen: list[torch.Tensor] = []
    handle = net.class_embedding.register_forward_hook(lambda module, args, out: seen.append(out.detach()))
    with torch.no_grad():
        net(inputs, torch.full((len(inputs),), 500), class_labels=labels)
    handle.remove()
    return seen[0]


def test_spatial_global_embedding_is_the_crops_class_fractions(trained):
    """Every block sees which tissue a crop holds: its class fractions (unknown included) mix the class embeddings;
    the null condition keeps its own whatever the map."""
    data, model, _ = trained
    config = load_config("tiny", image_conditioning="spatial-global")
    spec = training_stages.build_stage("image", open_dataset(data), open_bundle(model), config, "cpu")
    net, k = spec.network.eval(), len(open_dataset(data).classes)
    table = net.class_embedding.weight.detach()
    assert table.shape[0] == k + 1
    maps = torch.zeros(4, k - 1, 16, 16)
    maps[1, 1] = 1  # all class 2
    maps[2, 0, :, :4] = 1  # a quarter class 1, the rest unknown
    maps[3, 2] = 1  # a map, asked for with the null label
    inputs = torch.cat([torch.randn(4, 4, 16, 16), maps], 1)
    seen = _embedding_seen(net, inputs, torch.tensor([1, 1, 1, 0]))
    expected = torch.stack([table[1], table[3], 0.75 * table[1] + 0.25 * table[2], table[0]])
    assert torch.allclose(seen, expected, atol=1e-6)
    # the class reaches the output through the embedding alone: same input channels, another mix, another ε
    net.class_embedding.weight.data[3] += 1.0
    with torch.no_grad():
        a = net(inputs[1:2], torch.tensor([500]), class_labels=torch.tensor([1])).sample
        net.class_embedding.weight.data[3] -= 1.0
        b = net(inputs[1:2], torch.tensor([500]), class_labels=torch.tensor([1])).sample
    assert not torch.allclose(a, b)


def test_spatial_global_bundle_loads_mixing_and_refuses_a_plain_embedding(trained, tmp_path):
    data, model, _ = trained
    shutil.copytree(model, tmp_path / "m")
    config = load_config(
        "tiny", max_steps=3, batch_size=4, checkpoint_every=3, sample_every=100, image_conditioning="spatial-global"
    )
    training.train("image", data, tmp_path / "m", config, progress=False)
    bundle = open_bundle(tmp_path / "m")
    k = len(bundle.classes)
    assert bundle.image_conditioning == "spatial-global" and "fractions" in bundle.meta["conditioning"]["image"]
    net = bundle.load_unet("image")
    maps = torch.zeros(1, k - 1, 16, 16)
    maps[0, 0] = 1
    seen = _embedding_seen(net, torch.cat([torch.randn(1, 4, 16, 16), maps], 1), torch.tensor([1]))
    assert torch.allclose(seen[0], net.class_embedding.weight[2].detach())
    config_file = tmp_path / "m" / "image_unet" / "config.json"
    plain = json.loads(config_file.read_text())
    config_file.write_text(json.dumps({**plain, "num_class_embeds": 2}))  # a spatial network under a global record
    with pytest.raises(BadModelError, match="num_class_embeds"):
        open_bundle(tmp_path / "m").load_unet("image")


def test_min_snr_weighting_caps_the_easy_timesteps_and_is_the_plain_loss_when_it_never_binds(trained):
    data, model, _ = trained
    abar = alphas_cumprod(1000, "scaled_linear")
    weights = training_stages.min_snr_weights(abar, 5.0)
    snr = abar / (1 - abar)
    assert torch.allclose(weights[snr <= 5], torch.ones(int((snr <= 5).sum()))) and bool((weights[snr > 5] < 1).all())
    assert float(weights[0]) == pytest.approx(5.0 / float(snr[0]))  # the least noisy step, down-weighted the most

    def loss(gamma):
        tiny = load_config("tiny")
        config = replace(tiny, batch_size=8, image=replace(tiny.image, min_snr_gamma=gamma))
        torch.manual_seed(0)  # the same initial network for every γ
        spec = training_stages.build_stage("image", open_dataset(data), open_bundle(model), config, "cpu")
        return float(spec.loss(spec.network, 3))

    plain, never_binds, binds = loss(None), loss(float(snr.max()) * 2), loss(1.0)
    assert never_binds == pytest.approx(plain, rel=1e-5) and binds < plain


def test_null_condition_learns_from_every_tile_or_only_the_unlabelled_ones(tmp_path):
    from types import SimpleNamespace

    index = SimpleNamespace(unlabelled=[("lc", 0), ("lc", 1)], labelled=[("wsss", 0)])
    assert training_stages.null_pool(index, "unlabelled") == [("unlabelled", "lc", 0), ("unlabelled", "lc", 1)]
    assert training_stages.null_pool(index, "all") == [
        ("unlabelled", "lc", 0),
        ("unlabelled", "lc", 1),
        ("labelled", "wsss", 0),
    ]
    assert training_stages.null_pool(SimpleNamespace(unlabelled=[], labelled=[("wsss", 0)]), "unlabelled") == [
        ("labelled", "wsss", 0)
    ]
    with pytest.raises(Exception, match="null_tiles"):
        load_config("tiny", null_tiles="labelled")
    config = tmp_path / "c.yaml"
    config.write_text("image: {min_snr_gamma: 5}\nnull_tiles: all\n")
    loaded = load_config(config)
    assert (loaded.image.min_snr_gamma, loaded.mask.min_snr_gamma, loaded.null_tiles) == (5.0, None, "all")
    config.write_text("image: {min_snr_gamma: five}\n")
    with pytest.raises(Exception, match="image.min_snr_gamma must be null or a finite number"):
        load_config(config)
    config.write_text("mask: {min_snr_gamma: -1}\n")
    with pytest.raises(Exception, match="mask.min_snr_gamma must be a positive number"):
        load_config(config)


def test_mask_stage_trains_on_region_maps(trained, tmp_path):
    data, model, _ = trained
    shutil.copytree(model, tmp_path / "m")
    config = load_config("tiny", max_steps=20, batch_size=4, checkpoint_every=20, sample_every=20)
    result = training.train("mask", data, tmp_path / "m", config, progress=False)
    assert result["steps"] == 20 and open_bundle(tmp_path / "m").has("mask")


def test_training_errors_through_the_cli(trained, tmp_path, runner):
    data, model, _ = trained
    lc_only = tmp_path / "lc"
    assert (
        runner.invoke(
            cli,
            [
                "import",
                str(shared("tiles", "lc25000_224", "lung_n")),
                "--tile",
                "64",
                "--region",
                "64",
                "--region-mask",
                "16",
                "--out",
                str(lc_only),
                "-q",
            ],
        ).exit_code
        == 0
    )
    shutil.copytree(model, tmp_path / "m")
    result = runner.invoke(cli, ["train", "image", str(lc_only), "--out", str(tmp_path / "m"), "-q"])
    assert result.exit_code == 2 and "classes" in result.output  # other classes than the bundle's
    result = runner.invoke(
        cli, ["train", "image", str(data), "--out", str(tmp_path / "nocodec"), "--max-steps", "1", "-q"]
    )
    assert result.exit_code == 2 and "no codec stage" in result.output
    result = runner.invoke(
        cli, ["train", "codec", str(lc_only), "--out", str(tmp_path / "fresh"), "--max-steps", "2", "-q"]
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        cli, ["train", "image", str(lc_only), "--out", str(tmp_path / "fresh"), "--max-steps", "1", "-q"]
    )
    assert result.exit_code == 2 and "no labelled tiles" in result.output
    cfg = tmp_path / "deep.yaml"
    # needs multiples of 32
    cfg.write_text("image: {block_out_channels: [16, 32, 32, 32, 32, 32], norm_num_groups: 8}\n")
    shutil.copytree(model, tmp_path / "m2")
    result = runner.invoke(
        cli,
        ["train", "image", str(data), "--out", str(tmp_path / "m2"), "--config", str(cfg), "--max-steps", "1", "-q"],
    )
    assert result.exit_code == 2 and "does not fit" in result.output
    cfg.write_text("imgae: {}\n")
    result = runner.invoke(
        cli, ["train", "image", str(data), "--out", str(tmp_path / "m2"), "--config", str(cfg), "-q"]
    )
    assert result.exit_code == 2 and "unknown key 'imgae'" in result.output
    info = json.loads(runner.invoke(cli, ["info", str(model), "--json"]).output)
    assert info["kind"] == "model" and info["classes"] == ["unknown", "normal", "stroma", "tumour epithelium"]


@pytest.mark.slow
def test_torchrun_trains_data_parallel_on_two_cpu_processes(trained, tmp_path):
    """DDP through torchrun (gloo on CPU): both ranks train, rank 0 writes a bundle that records the world size."""
    import socket
    import subprocess
    import sys

    data, model, _ = trained
    shutil.copytree(model, tmp_path / "m")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(port),
        "-m",
        "wsi_synth_cli.main",
        "train",
        "image",
        str(data),
        "--out",
        str(tmp_path / "m"),
        "--max-steps",
        "4",
        "--batch-size",
        "2",
        "-q",
    ]
    done = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=str(__import__("pathlib").Path(__file__).resolve().parents[1]),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    stage = json.loads((tmp_path / "m" / "model.json").read_text())["stages"]["image"]
    assert stage["world_size"] == 2 and stage["steps"] == 4
    assert open_bundle(tmp_path / "m").load_unet("image") is not None


def layout_dataset(
    tmp,
    *,
    region: int = 256,
    region_mask: int = 16,
    legend: str = "0: tumour epithelium\n1: stroma\n2: normal\n3: unknown\n",
):
    """Three 700 px layouts without images (tumour left, stroma right) imported as `region` px regions."""
    from wsi_synth.data.importer import ImportConfig, import_layouts

    folder = tmp / "layouts"
    folder.mkdir(exist_ok=True)
    for i in range(3):
        m = np.ones((700, 700), np.uint8)
        m[:, : 300 + 50 * i] = 0
        Image.fromarray(m).save(folder / f"layout_{i}.png")
    (tmp / "layout_legend.yaml").write_text(legend)
    config = ImportConfig(
        tile_size=64, subtype="adenocarcinoma", region_size=region, region_mask_size=region_mask, test_fraction=0
    )
    data = tmp / f"layouts-{region}"
    import_layouts(folder, data, config, legend=tmp / "layout_legend.yaml", progress=False)
    return data


def test_the_layout_stage_adds_to_a_bundle_with_its_own_geometry(trained, tmp_path, runner):
    data, model, _ = trained
    bundle_dir = tmp_path / "m"
    shutil.copytree(model, bundle_dir)
    layouts = layout_dataset(tmp_path)
    result = runner.invoke(
        cli, ["train", "layout", str(layouts), "--out", str(bundle_dir), "--max-steps", "3", "--batch-size", "2", "-q"]
    )
    assert result.exit_code == 0, result.output
    bundle = open_bundle(bundle_dir)
    assert bundle.layout_geometry == (256, 16) and bundle.region_size == 64  # the mask stage's geometry is kept
    assert bundle.layout_condition("adenocarcinoma") == 1 and (bundle_dir / "layout_unet" / "config.json").is_file()
    assert bundle.has("codec") and bundle.load_unet("layout").config.in_channels == len(bundle.classes)
    # refused: a bundle with no stage yet, regions no larger than the mask stage's, another class scheme
    (tmp_path / "other").mkdir()
    for out, layout_data, message in [
        (tmp_path / "fresh", layouts, "train the codec, image and mask stages first"),
        (bundle_dir, layout_dataset(tmp_path, region=64), "not larger than the mask stage's"),
        (bundle_dir, layout_dataset(tmp_path / "other", legend="0: tumour\n1: stroma\n"), "same --classes"),
    ]:
        result = runner.invoke(
            cli, ["train", "layout", str(layout_data), "--out", str(out), "--max-steps", "1", "-q", "--overwrite"]
        )
        assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output, result.output
    assert open_bundle(bundle_dir).layout_geometry == (256, 16)


def test_stages_trained_at_once_into_one_bundle_keep_both_records(trained, tmp_path):
    """Two trainings (two processes, each holding the bundle as it was when it started) write their records one after
    the other: the second merges into what the first wrote instead of replacing it."""
    from wsi_synth.models.bundle import ScheduleSpec

    _, model, _ = trained
    shutil.copytree(model, tmp_path / "m")
    first, second = open_bundle(tmp_path / "m"), open_bundle(tmp_path / "m")
    for bundle, stage in ((first, "mask"), (second, "image")):
        bundle.record_stage(
            stage,
            {"steps": 1},
            schedule=ScheduleSpec(1000, "scaled_linear"),
            image_conditioning="spatial" if stage == "image" else None,
        )
        bundle.write_stage(stage)
    merged = open_bundle(tmp_path / "m")
    assert set(merged.meta["stages"]) == {"codec", "mask", "image"} and merged.image_conditioning == "spatial"
    assert merged.meta["latent"] == open_bundle(model).meta["latent"]


def test_a_version_1_model_json_is_migrated_to_what_its_readers_assumed(tmp_path):
    old = {"format": "wsi-synth-model", "version": 1, "classes": [{"id": 0, "name": "unknown"}]}
    old["stages"] = {"image": {}}
    (tmp_path / "model.json").write_text(json.dumps(old))
    bundle = open_bundle(tmp_path)
    assert bundle.meta["image_conditioning"] == "per-class" and "empty_map" not in bundle.meta
    bundle.write_meta()
    written = json.loads((tmp_path / "model.json").read_text())
    assert written["version"] == 2 and written["image_conditioning"] == "per-class"  # explicit from now on
    spatial = {**old, "image_conditioning": "spatial"}
    (tmp_path / "model.json").write_text(json.dumps(spatial))
    assert open_bundle(tmp_path).meta["empty_map"] == "null"  # spatial bundles before the key learnt null
    (tmp_path / "model.json").write_text(json.dumps({**spatial, "version": 3}))
    with pytest.raises(BadModelError, match="newer than this wsi-synth reads"):
        open_bundle(tmp_path)


def test_class_balance_draws_rare_classes_more_often(trained):
    from wsi_synth.data.samplers import class_balanced_weights

    # one tile of each rare class among 10 tumour tiles; a half-unannotated tile weighs as the commonest class
    fractions = [{"tumour": 1.0}] * 10 + [{"stroma": 1.0}, {"normal": 1.0}, {"tumour": 0.5, "unknown": 0.5}]
    assert np.allclose(class_balanced_weights(fractions, 0.0), 1 / 13)
    full = class_balanced_weights(fractions, 1.0)
    # each class drawn equally: the stroma tile as often as the tumour pixels of the other tiles put together
    assert full[10] == pytest.approx(full[11]) and full[10] == pytest.approx(full[:10].sum() + full[12] / 2)
    half = class_balanced_weights(fractions, 0.5)
    assert full[0] < half[0] < 1 / 13 and full[10] > half[10] > 1 / 13

    data, model, _ = trained

    def class_shares(balance):
        config = load_config("tiny", batch_size=8, p_unc=0.0, class_balance=balance)
        spec = training_stages.build_stage("image", open_dataset(data), open_bundle(model), config, "cpu")
        maps = torch.cat([spec.draw(step)[1] for step in range(60)])  # (n, classes − 1, h, w): one-hot class maps
        return maps.sum((0, 2, 3)) / maps.sum()

    plain, balanced = class_shares(0.0), class_shares(1.0)
    rare = int(plain[plain > 0].argmin())
    assert balanced[rare] > 1.5 * plain[rare] and balanced.max() < plain.max()
    with pytest.raises(Exception, match=r"class_balance must be in \[0, 1\], got 2"):
        load_config("tiny", class_balance=2)
