"""Photos -> cache -> splits -> crops -> normalization, on real photos at tiny crop sizes."""

from __future__ import annotations

import hashlib
import io
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from smoothrecon.data import prepare_data
from smoothrecon.data.crops import CropSpec, TrainCrops
from smoothrecon.data.normalization import channel_stats
from smoothrecon.data.photos import decode_image
from smoothrecon.data.splits import SPLITS, assign_splits, split_counts
from smoothrecon.errors import UserError
from smoothrecon.models.normalization import Normalization


def fake_hashes(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [hashlib.sha256(str(rng.random()).encode()).hexdigest() for _ in range(n)]


def crop_of(pixels: np.ndarray, spec: CropSpec, size: int) -> np.ndarray:
    """The crop `spec` as (3, size, size), by plain slicing (H first, then W)."""
    patch = np.asarray(pixels)[spec.top : spec.top + size, spec.left : spec.left + size]
    if spec.flip:
        patch = patch[:, ::-1]
    return np.ascontiguousarray(patch.transpose(2, 0, 1))


# --- splits ------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 7, 8, 26, 100, 1001])
@pytest.mark.parametrize("proportions", [(0.7, 0.15, 0.15), (8, 1, 1), (1, 0, 1), (1, 1, 0)])
def test_split_counts_add_up(n: int, proportions: tuple[float, float, float]) -> None:
    counts = split_counts(n, proportions)
    assert sum(counts) == n
    assert all(c >= 0 for c in counts)
    if n >= 3:
        for c, p in zip(counts[1:], proportions[1:], strict=True):
            assert (c >= 1) if p > 0 else (c == 0)


def test_split_counts_follow_the_proportions() -> None:
    assert split_counts(100, (0.7, 0.15, 0.15)) == (70, 15, 15)
    assert split_counts(20, (2, 1, 1)) == (10, 5, 5)
    assert split_counts(3, (0.7, 0.15, 0.15)) == (1, 1, 1)


def test_assign_splits_disjoint_covering_and_sized() -> None:
    hashes = fake_hashes(57)
    where = assign_splits(hashes, (0.7, 0.15, 0.15))
    assert set(where) == set(hashes)
    groups = {s: {h for h, w in where.items() if w == s} for s in SPLITS}
    assert set(where.values()) <= set(SPLITS)
    assert sum(len(g) for g in groups.values()) == len(hashes)  # each photo in exactly one
    assert tuple(len(groups[s]) for s in SPLITS) == split_counts(57, (0.7, 0.15, 0.15))


def test_assign_splits_deterministic_and_order_independent() -> None:
    hashes = fake_hashes(40)
    first = assign_splits(hashes, (0.7, 0.15, 0.15))
    shuffled = hashes[:]
    random.Random(1).shuffle(shuffled)
    assert assign_splits(hashes, (0.7, 0.15, 0.15)) == first
    assert assign_splits(shuffled, (0.7, 0.15, 0.15)) == first
    assert assign_splits(list(reversed(hashes)), (0.7, 0.15, 0.15)) == first


def test_assign_splits_is_not_the_input_order() -> None:
    # A split that followed the input order would put the first 70% in train.
    hashes = fake_hashes(40)
    where = assign_splits(hashes, (0.7, 0.15, 0.15))
    assert [where[h] for h in hashes] != sorted((where[h] for h in hashes), key=SPLITS.index)


def test_adding_a_photo_moves_few_others() -> None:
    hashes = fake_hashes(100)
    before = assign_splits(hashes, (0.7, 0.15, 0.15))
    after = assign_splits([*hashes, *fake_hashes(1, seed=99)], (0.7, 0.15, 0.15))
    moved = [h for h in hashes if before[h] != after[h]]
    assert len(moved) <= 2


def test_split_depends_on_content_only(tmp_path: Path, photo_dir: Path, make_config) -> None:
    """Renamed files in another folder layout land in the same splits as the originals."""
    renamed = tmp_path / "renamed"
    for i, p in enumerate(sorted(photo_dir.iterdir())):
        target = renamed / f"sub{i % 2}" / f"zz_{7 - i}_{p.stem}{p.suffix.upper()}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(p, target)
    a = prepare_data(make_config().data)
    b = prepare_data(make_config(f"data.source={renamed}").data)
    split_a = {p.sha256: s for s in SPLITS for p in a.photos[s]}
    split_b = {p.sha256: s for s in SPLITS for p in b.photos[s]}
    assert len(split_a) == len(list(photo_dir.iterdir()))
    assert split_a == split_b
    for s in SPLITS:
        assert a.photos[s], f"split {s} is empty"


# --- decoding ----------------------------------------------------------------------------------


def save(im: Image.Image, path: Path, **kw) -> Path:
    im.save(path, **kw)
    return path


def test_decode_greyscale(tmp_path: Path) -> None:
    a = np.arange(30 * 41, dtype=np.uint8).reshape(30, 41)
    rgb = decode_image(save(Image.fromarray(a, "L"), tmp_path / "g.png"))
    assert rgb is not None and rgb.shape == (30, 41, 3) and rgb.dtype == np.uint8
    for c in range(3):
        np.testing.assert_array_equal(rgb[:, :, c], a)


def test_decode_rgba_composites_on_white(tmp_path: Path) -> None:
    a = np.zeros((20, 33, 4), np.uint8)
    a[:, :, 0] = 200  # red
    a[:, :10, 3] = 255  # opaque left
    a[:, 10:, 3] = 0  # transparent right
    rgb = decode_image(save(Image.fromarray(a, "RGBA"), tmp_path / "a.png"))
    assert rgb is not None and rgb.shape == (20, 33, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[:, :10], np.broadcast_to([200, 0, 0], (20, 10, 3)))
    np.testing.assert_array_equal(rgb[:, 10:], 255)


def test_decode_palette(tmp_path: Path) -> None:
    palette = [255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (768 - 9)
    idx = (np.arange(25 * 17).reshape(25, 17) % 3).astype(np.uint8)
    im = Image.fromarray(idx, "P")
    im.putpalette(palette)
    rgb = decode_image(save(im, tmp_path / "p.png"))
    assert rgb is not None and rgb.shape == (25, 17, 3) and rgb.dtype == np.uint8
    expected = np.array(palette[:9], np.uint8).reshape(3, 3)[idx]
    np.testing.assert_array_equal(rgb, expected)


def test_decode_16_bit_png(tmp_path: Path) -> None:
    a = np.tile(np.array([0, 257, 32768, 65535], np.uint16), (23, 5))  # (23, 20)
    im = Image.fromarray(a)
    assert im.mode.startswith("I;16")
    path = save(im, tmp_path / "deep.png")
    rgb = decode_image(path)
    assert rgb is not None and rgb.shape == (23, 20, 3) and rgb.dtype == np.uint8
    expected = np.round(a / 65535 * 255).astype(np.uint8)
    for c in range(3):
        np.testing.assert_array_equal(rgb[:, :, c], expected)


def test_decode_cmyk_jpeg(tmp_path: Path) -> None:
    im = Image.new("CMYK", (40, 24), (0, 255, 255, 0))  # red in CMYK
    path = save(im, tmp_path / "cmyk.jpg", quality=95)
    assert Image.open(path).mode == "CMYK"
    rgb = decode_image(path)
    assert rgb is not None and rgb.shape == (24, 40, 3) and rgb.dtype == np.uint8
    assert np.abs(rgb.astype(int) - [255, 0, 0]).max() <= 8


def test_decode_respects_exif_orientation(tmp_path: Path) -> None:
    a = np.zeros((30, 50, 3), np.uint8)
    a[:, :25] = 255  # white left half
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    path = save(Image.fromarray(a), tmp_path / "rot.jpg", exif=exif, quality=95)
    rgb = decode_image(path)
    assert rgb is not None and rgb.shape == (50, 30, 3)
    assert rgb[:20].mean() > 200 and rgb[-20:].mean() < 50  # left became top


def test_decode_prescale(tmp_path: Path) -> None:
    a = np.random.default_rng(0).integers(0, 256, (60, 90, 3), dtype=np.uint8)
    rgb = decode_image(save(Image.fromarray(a), tmp_path / "big.png"), prescale=0.5)
    assert rgb is not None and rgb.shape == (30, 45, 3) and rgb.dtype == np.uint8


@pytest.mark.parametrize(
    ("shape", "short_side", "expected"),
    [((60, 90), 30, (30, 45)), ((91, 47), 20, (39, 20)), ((40, 50), 64, (40, 50))],
)
def test_decode_to_a_short_side(tmp_path: Path, shape, short_side: int, expected) -> None:
    """The short side becomes `short_side` (aspect kept, rounded); smaller photos keep theirs."""
    a = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
    rgb = decode_image(save(Image.fromarray(a), tmp_path / "p.png"), short_side=short_side)
    assert rgb is not None and rgb.shape == (*expected, 3)


def test_short_side_resizing_is_cached_under_its_own_key(tmp_path: Path, make_config) -> None:
    cache = tmp_path / "cache"
    bundle = prepare_data(make_config(f"data.cache_dir={cache}", "data.short_side=128").data)
    assert all(name.endswith("-ss128.npy") for name in npy_files(cache))
    for s in SPLITS:
        assert all(min(p.height, p.width) == 128 for p in bundle.photos[s])


def bad_files(folder: Path, photo: Path) -> list[str]:
    """Write corrupt, truncated and empty images into `folder`; returns their names."""
    jpeg = io.BytesIO()
    Image.open(photo).convert("RGB").save(jpeg, "JPEG", quality=90)
    png = io.BytesIO()
    Image.open(photo).convert("RGB").save(png, "PNG")
    noise = np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes()
    files = {
        "corrupt.jpg": noise,
        "truncated.jpg": jpeg.getvalue()[: len(jpeg.getvalue()) // 2],
        "truncated.png": png.getvalue()[: len(png.getvalue()) // 2],
        "empty.png": b"",
        "text-as.png": b"this is not a picture\n",
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return sorted(files)


def test_decode_returns_none_for_broken_files(tmp_path: Path, photo_dir: Path) -> None:
    for name in bad_files(tmp_path, sorted(photo_dir.glob("*.jpg"))[0]):
        assert decode_image(tmp_path / name) is None, name


def test_broken_and_small_photos_are_skipped_and_counted(tmp_path: Path, photo_copy, make_config):
    broken = bad_files(photo_copy, sorted(photo_copy.glob("*.jpg"))[0])
    Image.new("RGB", (20, 50), (1, 2, 3)).save(photo_copy / "tiny.png")
    Image.new("RGB", (300, 31), (4, 5, 6)).save(photo_copy / "thin.png")  # 31 < 32 px crop
    (photo_copy / "README.txt").write_text("not an image suffix: ignored")
    cfg = make_config(f"data.source={photo_copy}", f"data.cache_dir={tmp_path / 'cache'}")
    bundle = prepare_data(cfg.data)
    assert sorted(bundle.unreadable) == broken
    assert sorted(bundle.skipped_small) == ["thin.png", "tiny.png"]
    used = {p.name for s in SPLITS for p in bundle.photos[s]}
    assert used == {p.name for p in Path(make_config().data.source).iterdir()}
    summary = bundle.summary()
    assert sorted(summary["unreadable"]) == broken
    assert sorted(summary["skipped_too_small"]) == ["thin.png", "tiny.png"]
    # Nothing half-cached for the broken files: one cache entry per usable or small photo.
    assert len(list((tmp_path / "cache" / "decoded").glob("*.npy"))) == len(used) + 2


def test_empty_folder_is_a_user_error(tmp_path: Path, make_config) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no images"):
        prepare_data(make_config(f"data.source={tmp_path / 'empty'}").data)


def test_folder_without_images_is_a_user_error(tmp_path: Path, make_config) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.txt").write_text("hello")
    with pytest.raises(UserError, match="holds no images"):
        prepare_data(make_config(f"data.source={tmp_path / 'docs'}").data)


def test_missing_folder_is_a_user_error(tmp_path: Path, make_config) -> None:
    with pytest.raises(UserError, match="does not exist"):
        prepare_data(make_config(f"data.source={tmp_path / 'nope'}").data)


def test_file_instead_of_folder_is_a_user_error(photo_dir: Path, make_config) -> None:
    one = sorted(photo_dir.iterdir())[0]
    with pytest.raises(UserError, match="not a folder"):
        prepare_data(make_config(f"data.source={one}").data)


def test_too_few_usable_photos_is_a_user_error(tmp_path: Path, photo_dir: Path, make_config):
    few = tmp_path / "few"
    few.mkdir()
    for p in sorted(photo_dir.iterdir())[:2]:
        shutil.copy(p, few / p.name)
    Image.new("RGB", (10, 10)).save(few / "small.png")
    with pytest.raises(UserError, match="2 usable photos") as info:
        prepare_data(make_config(f"data.source={few}").data)
    assert "\n" not in str(info.value)


# --- the decoded cache -------------------------------------------------------------------------


def npy_files(cache: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted((cache / "decoded").glob("*.npy"))}


def test_cache_is_reused_and_keyed_by_prescale(tmp_path: Path, photo_dir: Path, make_config):
    cache = tmp_path / "cache"
    cfg = make_config(f"data.cache_dir={cache}")
    first = prepare_data(cfg.data)
    files = npy_files(cache)
    n_photos = len(list(photo_dir.iterdir()))
    assert len(files) == n_photos
    assert all(name.endswith("-s1.npy") for name in files)

    again = prepare_data(cfg.data)
    assert npy_files(cache) == files  # same files, not rewritten
    for s in SPLITS:
        for p, q in zip(first.photos[s], again.photos[s], strict=True):
            assert p.sha256 == q.sha256
            np.testing.assert_array_equal(p.pixels, q.pixels)

    half = prepare_data(make_config(f"data.cache_dir={cache}", "data.prescale=0.5").data)
    now = npy_files(cache)
    assert len(now) == 2 * n_photos
    assert {k: v for k, v in now.items() if k in files} == files  # old entries untouched
    full = {p.sha256: p for s in SPLITS for p in first.photos[s]}
    for s in SPLITS:
        for p in half.photos[s]:
            big = full[p.sha256]
            assert abs(p.height - big.height / 2) <= 1 and abs(p.width - big.width / 2) <= 1


@pytest.mark.parametrize("damage", ["garbage", "truncated", "wrong-shape"])
def test_corrupted_cache_file_is_rebuilt(tmp_path: Path, photo_dir: Path, make_config, damage):
    cache = tmp_path / "cache"
    cfg = make_config(f"data.cache_dir={cache}")
    prepare_data(cfg.data)
    victim = sorted((cache / "decoded").glob("*.npy"))[0]
    good = np.load(victim)
    if damage == "garbage":
        victim.write_bytes(b"\x00not a numpy file" * 10)
    elif damage == "truncated":
        victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    else:
        np.save(victim, np.zeros((4, 4), np.uint8))
    bundle = prepare_data(cfg.data)
    rebuilt = np.load(victim, allow_pickle=False)
    np.testing.assert_array_equal(rebuilt, good)
    sha = victim.name.split("-")[1]
    photo = next(p for s in SPLITS for p in bundle.photos[s] if p.sha256 == sha)
    np.testing.assert_array_equal(photo.pixels, good)


# --- crops -------------------------------------------------------------------------------------


def test_eval_crops_are_fixed_and_reproducible(make_config) -> None:
    a = prepare_data(make_config().data)
    b = prepare_data(make_config().data)
    for s in ("val", "test"):
        ea, eb = a.eval_set(s), b.eval_set(s)
        assert len(ea) > 0
        assert ea.specs == eb.specs
        assert torch.equal(ea.x, eb.x)
        assert ea.x.dtype == torch.uint8 and ea.x.shape[1:] == (3, 32, 32)


def test_eval_crops_come_only_from_their_split(make_config) -> None:
    bundle = prepare_data(make_config("data.eval_crops_per_photo=3", "data.max_eval_crops=0").data)
    shas = {s: {p.sha256 for p in bundle.photos[s]} for s in SPLITS}
    assert not (
        shas["train"] & shas["val"] or shas["train"] & shas["test"] or shas["val"] & shas["test"]
    )
    for s in ("val", "test"):
        ev = bundle.eval_set(s)
        photos = bundle.photos[s]
        names = {p.name for p in photos}
        assert set(ev.photo_names) <= names
        assert len(ev) == 3 * len(photos)
        for i, spec in enumerate(ev.specs):
            expected = crop_of(photos[spec.photo].pixels, spec, 32)
            np.testing.assert_array_equal(ev.x[i].numpy(), expected)
            assert ev.photo_names[i] == photos[spec.photo].name


def test_split_all_holds_crops_of_every_photo(make_config) -> None:
    bundle = prepare_data(make_config("data.eval_crops_per_photo=2", "data.max_eval_crops=0").data)
    every = bundle.eval_set("all")
    names = sorted(p.name for s in SPLITS for p in bundle.photos[s])
    assert every.split == "all" and len(every) == 2 * len(names)
    assert sorted(set(every.photo_names)) == names
    photos = bundle.all_photos()
    for i, spec in enumerate(every.specs):
        np.testing.assert_array_equal(
            every.x[i].numpy(), crop_of(photos[spec.photo].pixels, spec, 32)
        )
    # The test crops of a photo are the same crops in "all" (same seeded positions).
    test_names = set(bundle.test.photo_names)
    in_all = [i for i, n in enumerate(every.photo_names) if n in test_names]
    assert torch.equal(every.x[in_all].sort(0).values, bundle.test.x.sort(0).values)
    with pytest.raises(UserError, match="not one of val, test, all"):
        bundle.eval_set("train")


def test_validation_has_its_own_crop_count(make_config) -> None:
    cfg = make_config(
        "data.eval_crops_per_photo=3", "data.val_crops_per_photo=1", "data.max_eval_crops=0"
    ).data
    bundle = prepare_data(cfg)
    assert len(bundle.val) == len(bundle.photos["val"])
    assert len(bundle.test) == 3 * len(bundle.photos["test"])


def test_one_photo_is_enough_to_evaluate(tmp_path: Path, photo_dir: Path, make_config) -> None:
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(sorted(photo_dir.iterdir())[0], one)
    cfg = make_config(f"data.source={one}", "data.eval_crops_per_photo=3").data
    bundle = prepare_data(cfg, purpose="evaluate")
    assert len(bundle.eval_set("all")) == 3 and bundle.train is None
    with pytest.raises(UserError, match="no photo for training"):
        bundle.training_crops()
    with pytest.raises(UserError, match=r"1 usable photos \(need at least 3"):
        prepare_data(cfg)


def test_max_eval_crops_caps_each_split(make_config) -> None:
    bundle = prepare_data(make_config("data.eval_crops_per_photo=5", "data.max_eval_crops=3").data)
    assert len(bundle.val) == 3 and len(bundle.test) == 3


def test_train_crops_reproducible_per_epoch_and_different_between_epochs(make_config) -> None:
    a = prepare_data(make_config().data).train
    b = prepare_data(make_config().data).train
    assert a.epoch_specs(1) == b.epoch_specs(1)
    assert a.epoch_specs(1) != a.epoch_specs(2)
    x1a = torch.cat(list(a.batches(1, 16)))
    x1b = torch.cat(list(b.batches(1, 16)))
    x2 = torch.cat(list(a.batches(2, 16)))
    assert torch.equal(x1a, x1b)
    assert not torch.equal(x1a, x2)
    assert x1a.shape == (64, 3, 32, 32) and x1a.dtype == torch.uint8


def test_train_batches_are_the_crops_their_specs_name(make_config) -> None:
    bundle = prepare_data(make_config().data)
    train = bundle.train
    specs = train.epoch_specs(3)
    assert any(s.flip for s in specs) and not all(s.flip for s in specs)
    batches = list(train.batches(3, 24))
    assert [len(b) for b in batches] == [24, 24, 16]
    x = torch.cat(batches)
    for i, spec in enumerate(specs):
        p = bundle.photos["train"][spec.photo]
        assert 0 <= spec.top <= p.height - 32 and 0 <= spec.left <= p.width - 32
        np.testing.assert_array_equal(x[i].numpy(), crop_of(p.pixels, spec, 32))


def test_train_crops_use_only_training_photos(make_config) -> None:
    bundle = prepare_data(make_config().data)
    assert bundle.train.photos == bundle.photos["train"]
    used = {bundle.photos["train"][s.photo].sha256 for s in bundle.train.epoch_specs(1)}
    assert used <= {p.sha256 for p in bundle.photos["train"]}


def test_center_mode_cycles_through_every_photo(make_config) -> None:
    bundle = prepare_data(make_config("data.train_crops=center").data)
    n = len(bundle.photos["train"])
    specs = TrainCrops(bundle.photos["train"], 32, 2 * n, "center", False, 0).epoch_specs(1)
    assert sorted(s.photo for s in specs[:n]) == list(range(n))
    for s in specs:
        p = bundle.photos["train"][s.photo]
        assert (s.top, s.left) == ((p.height - 32) // 2, (p.width - 32) // 2)


# --- normalization -----------------------------------------------------------------------------


def test_normalization_round_trip() -> None:
    norm = Normalization((0.3, 0.45, 0.5), (0.2, 0.25, 0.31))
    x = torch.rand(2, 3, 5, 7, generator=torch.Generator().manual_seed(0))
    z = norm.normalize(x)
    torch.testing.assert_close(norm.denormalize(z), x, rtol=0, atol=1e-6)
    # channel c is (x_c - mean_c) / std_c, computed independently:
    for c in range(3):
        torch.testing.assert_close(z[:, c], (x[:, c] - norm.mean[c]) / norm.std[c])
    assert Normalization.from_dict(norm.to_dict()) == norm


def test_channel_stats_equals_numpy() -> None:
    rng = np.random.default_rng(3)
    arrays = [
        rng.integers(0, 256, (600, 7, 3), dtype=np.uint8),  # more than one 256-row block
        rng.integers(40, 90, (5, 11, 3), dtype=np.uint8),
    ]
    arrays[0][:, :, 2] //= 4  # channels with different statistics
    norm = channel_stats(arrays)
    pixels = np.concatenate([a.reshape(-1, 3) for a in arrays]).astype(np.float64) / 255.0
    np.testing.assert_allclose(norm.mean, pixels.mean(0), atol=1e-6)
    np.testing.assert_allclose(norm.std, pixels.std(0), atol=1e-6)


def test_dataset_normalization_is_computed_on_training_photos(make_config) -> None:
    bundle = prepare_data(make_config().data)
    expected = channel_stats([np.asarray(p.pixels) for p in bundle.photos["train"]])
    assert bundle.normalization == expected
    other = prepare_data(make_config("data.normalization=mini-imagenet").data)
    assert other.normalization.mean == (0.4882, 0.4431, 0.3946)
