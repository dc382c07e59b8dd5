"""Nothing lost, nobody in (issue 7): kills at any moment, files from elsewhere, bad values.

- `smoothrecon train` SIGKILLed at several moments and rerun ends with the weights of an
  uninterrupted run; an interrupted checkpoint write leaves the previous checkpoint intact.
- Random and truncated bytes as images, and a decompression bomb, are skipped, never fatal.
- A checkpoint of another operator or architecture is refused with a line naming both.
- More bad values on the command line: one `error:` line, exit code 2, no traceback.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from smoothrecon.data.photos import decode_image
from smoothrecon.errors import UserError
from smoothrecon.util.io import load_checkpoint

TRAIN = [
    "train",
    "--preset",
    "smoke",
    "--set",
    "data.short_side=0",
    "--set",
    "train.epochs=4",
    "--quiet",
]


def _cli(args: list, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "smoothrecon", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def _model_tensors(folder: Path) -> dict[str, torch.Tensor]:
    return {
        k: v
        for k, v in load_file(str(folder / "last.safetensors")).items()
        if k.startswith("model.")
    }


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory, photo_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    p = _cli([*TRAIN, "--data", photo_dir, "--out", out])
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    return out


@pytest.mark.parametrize("delays", [(0.3,), (1.5,), (0.8, 1.2)])
def test_sigkill_train_then_rerun_gives_the_uninterrupted_weights(
    uninterrupted: Path, photo_dir: Path, tmp_path: Path, delays: tuple[float, ...]
) -> None:
    out = tmp_path / "run"
    for delay in delays:
        p = _cli([*TRAIN, "--data", photo_dir, "--out", out])
        time.sleep(delay)
        p.send_signal(signal.SIGKILL)
        p.communicate(timeout=60)
    p = _cli([*TRAIN, "--data", photo_dir, "--out", out])
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    assert not list(out.glob(".*.tmp")), "a temporary file was left behind"
    a, b = _model_tensors(uninterrupted), _model_tensors(out)
    assert set(a) == set(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_interrupted_checkpoint_write_keeps_the_previous_checkpoint(
    tmp_path: Path, make_config, monkeypatch: pytest.MonkeyPatch
) -> None:
    import smoothrecon.util.io as sio
    from smoothrecon.experiments.training import train

    cfg = make_config("train.epochs=2")
    train(cfg, tmp_path, progress=False, stop_after=1)
    before = load_file(str(tmp_path / "last.safetensors"))

    def dying_save(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a checkpoint")
        raise KeyboardInterrupt  # the process is stopped in the middle of the write

    monkeypatch.setattr(sio, "save_file", dying_save)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path, progress=False)
    monkeypatch.undo()
    after = load_file(str(tmp_path / "last.safetensors"))
    assert set(before) == set(after)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not list(tmp_path.glob(".*.tmp"))
    result = train(cfg, tmp_path, progress=False)  # and the run still resumes and finishes
    assert result.epochs[-1]["epoch"] == 2


# --- images from elsewhere --------------------------------------------------------------------


def _real_image_bytes(fmt: str) -> bytes:
    import skimage.data

    buf = io.BytesIO()
    Image.fromarray(skimage.data.chelsea()).save(buf, format=fmt)
    return buf.getvalue()


def test_random_and_truncated_bytes_never_crash_the_decoder(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    blobs = [rng.integers(0, 256, size=n, dtype=np.uint8).tobytes() for n in (0, 1, 17, 4096)]
    for fmt in ("JPEG", "PNG", "WEBP", "BMP", "TIFF"):
        data = _real_image_bytes(fmt)
        cuts = sorted({int(len(data) * f) for f in (0.0, 0.01, 0.1, 0.5, 0.9, 0.99)})
        blobs += [data[:c] for c in cuts]
        flipped = bytearray(data)
        for i in rng.integers(20, len(data), size=50):
            flipped[i] ^= 0xFF
        blobs.append(bytes(flipped))
    for i, blob in enumerate(blobs):
        path = tmp_path / f"fuzz{i}.jpg"
        path.write_bytes(blob)
        out = decode_image(path)  # must not raise
        assert out is None or (out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3)


def test_decompression_bomb_is_refused_not_decoded(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    Image.new("1", (20000, 10000)).save(path)  # 200 megapixels in a few kilobytes
    assert path.stat().st_size < 1_000_000
    assert decode_image(path) is None


# --- checkpoints from elsewhere ---------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(uninterrupted: Path) -> Path:
    return uninterrupted / "best.safetensors"


def test_checkpoint_of_another_operator_is_refused(
    checkpoint: Path, photo_dir: Path, tmp_path: Path
) -> None:
    p = _cli(
        [
            "evaluate",
            "--model",
            checkpoint,
            "--data",
            photo_dir,
            "--set",
            "data.short_side=0",
            "--set",
            "operator.factor=4",
            "--out",
            tmp_path / "e",
        ]
    )
    _, err = p.communicate(timeout=120)
    assert p.returncode == 2 and "Traceback" not in err
    assert "x2" in err and "x4" in err and err.startswith("error:")


def test_checkpoint_of_another_architecture_is_refused(checkpoint: Path, tmp_path: Path) -> None:
    from smoothrecon import load_model

    tensors, meta = load_checkpoint(checkpoint)
    meta["config"]["model"]["channels"] = [8, 16, 32]  # the weights are of (4, 8, 16)
    import json

    forged = tmp_path / "forged.safetensors"
    save_file(tensors, str(forged), metadata={"smoothrecon": json.dumps(meta)})
    with pytest.raises(UserError, match=r"channels \(8, 16, 32\)"):
        load_model(forged)


# --- more bad values on the command line -------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--set", "smoothing.k=-1"], "smoothing.k"),
        (["--set", "train.eps_rel=1.5"], "train.eps_rel"),
        (["--set", "evaluation.eps_rels=[0.1,2]"], "evaluation.eps_rels"),
        (["--factor", "3"], "not divisible by operator.factor"),
        (["--factor", "0"], "argument --factor: expected an integer >= 1, got '0'"),
        (["--out-override", "/proc/smoothrecon-read-only"], "cannot create folder"),
    ],
)
def test_more_bad_values_are_one_line(
    photo_dir: Path, tmp_path: Path, args: list[str], expected: str
) -> None:
    out = tmp_path / "o"
    if args[0] == "--out-override":
        out, args = Path(args[1]), []
    p = _cli(
        [
            "train",
            "--preset",
            "smoke",
            "--data",
            photo_dir,
            "--set",
            "data.short_side=0",
            *args,
            "--quiet",
            "--out",
            out,
        ],
        env={**os.environ},
    )
    _, err = p.communicate(timeout=120)
    lines = [x for x in err.splitlines() if x.strip()]
    assert p.returncode == 2, err
    if expected.startswith("argument "):  # argparse's convention: usage, then one error line
        lines = [x for x in lines if not x.startswith(("usage:", " "))]
        assert len(lines) == 1 and "error:" in lines[0] and expected in lines[0], err
        return
    assert len(lines) == 1 and lines[0].startswith("error:") and expected in lines[0], err
