"""DDP through torchrun: 2 CPU processes (gloo) × batch 1 train to the weights of 1 process × batch 2.

Why the two runs can agree, and what the comparison checks:

* BatchNorm: in training it normalises with the statistics of the batch it sees, and one image's
  statistics are not two images'; PyTorch's SyncBatchNorm, which would pool them, needs CUDA.
  So every image of the test dataset has the *same pixels* (one COCO image listed 8 times) and the
  augmentation is deterministic (no flip, HSV or scale jitter): the mean and the (biased) variance
  BN normalises with are then the same for 1 image as for 2, and the forward passes agree.
* Each of the 8 entries has *different boxes* (2 of the image's 8 objects), so the two ranks compute
  different losses and gradients: the result matches only if the shards are the two halves of the
  single process's batches (:class:`~odcli.data.loader.ShardedBatchSampler`), RTMDet's loss
  normaliser is averaged over ranks, and DDP averages the gradients.
* The loss normaliser is the sum of matched IoUs clamped at >= 1 (upstream): averaged over ranks
  first, so 2 × (S/2) = S as in one process, unless S/2 < 1, where the clamps differ by design.
  A fresh RTMDet predicts boxes of ~zero size (IoUs ~0), so the initial weights set the regression
  biases to predict boxes 4 strides wide, which keeps S well above 2.
* What remains is float32 rounding (DDP adds the two per-image gradients after the backward, one
  process inside it; other conv kernels for batch 1 and 2), and BatchNorm magnifies it: a channel
  of near-constant input divides by a tiny standard deviation. On 2x2 feature maps (64 px input)
  that makes gradients differ by tens of percent, on 4x4 (128 px) by ~1e-4 relative (measured
  in-process), and each SGD step on a fresh network magnifies the difference ~3x again (AdamW's
  g/sqrt(v) would turn rounding in near-zero gradients into full-size steps; SGD stays linear).
  So: 128 px, SGD, 4 iterations (the first at warm-up lr ~0). The largest parameter difference
  must stay below 1% of the largest change any parameter made (measured: 0.07%); a factor-2 error
  in the gradient (shards overlapping, normaliser or averaging wrong) gives ~50%.
  BN running statistics are buffers, not trained: running variances differ by design (unbiased,
  n/(n-1) with n = H·W per rank against 2·H·W) and are not compared.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from odcli.recipe import build_detector
from odcli.weights.checkpoint import load_checkpoint, save_checkpoint

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "recipes" / "demo.yaml"
COCO8 = REPO / "recipes" / "data" / "coco8"
COMMON = [
    "--set", "model.test_scale=[128, 128]",
    "--set", "data.img_scale=[128, 128]",
    "--set", "data.crop_size=[128, 128]",
    "--set", "data.resize_ratio_range=[1.0, 1.0]",
    "--set", "data.flip_prob=0.0",
    "--set", "data.hsv=false",
    "--set", "data.num_workers=0",
    "--set", "model.nms_pre=100",
    "--set", "train.device=cpu",
    "--set", "train.epochs=1",
    "--set", "train.optimizer=sgd",
    "--set", "train.lr=0.001",
    "--set", "train.base_batch_size=2",
    "--set", "train.warmup_iters=2",
    "--set", "train.cosine_start_epoch=1",
    "--set", "train.ema=false",
    "--set", "train.eval_interval=100",
    "--set", "train.log_interval=1",
]  # fmt: skip


def _same_pixels_dataset(root: Path) -> Path:
    """8 entries of COCO image 9, each with 2 of its 8 boxes; returns the annotation file."""
    coco = json.loads((COCO8 / "annotations" / "instances.json").read_text())
    image = next(i for i in coco["images"] if i["id"] == 9)
    boxes = [a for a in coco["annotations"] if a["image_id"] == 9]
    images, anns = [], []
    for k in range(8):
        images.append({**image, "id": k + 1})
        for j in (k, (k + 3) % 8):
            anns.append({**boxes[j], "id": len(anns) + 1, "image_id": k + 1})
    ann = root / "same_pixels.json"
    ann.write_text(json.dumps({"images": images, "annotations": anns, "categories": coco["categories"]}))
    return ann


def _run(cmd: list[str], cwd: Path) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "COLUMNS": "300"}
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_two_processes_match_one_process_with_the_doubled_batch(tmp_path: Path) -> None:
    ann = _same_pixels_dataset(tmp_path)
    init = tmp_path / "init.safetensors"
    torch.manual_seed(0)
    model = build_detector("rtmdet_tiny", num_classes=80)
    with torch.no_grad():
        for conv in model.head.reg_preds:  # boxes 4 strides wide: see the module docstring
            conv.bias.fill_(2.0)
    save_checkpoint(init, model_state=model.state_dict(), meta={"arch": model.arch})
    data = [
        "--set", f"data.root={tmp_path}",
        "--set", f"data.train_ann={ann}", "--set", f"data.val_ann={ann}",
        "--set", f"data.train_images={COCO8 / 'images'}", "--set", f"data.val_images={COCO8 / 'images'}",
    ]  # fmt: skip
    args = [str(DEMO), *COMMON, *data, "--set", f"train.init_weights={init}"]
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    # `torchrun --standalone --nproc_per_node 2 -m odcli train …`, through the launcher `--gpus` uses.
    argv = ["train", *args, "--set", "data.batch_size=1", "--run-dir", str(ddp)]
    launcher = f"from odcli.runtime.distributed import launch; launch(2, {argv!r})"
    out = _run([sys.executable, "-c", launcher], tmp_path)
    assert "× 2 processes (DDP, gloo)" in out and "lr 0.001 = 0.001 × 2 images per step / 2" in out
    assert out.count("done: best checkpoint") == 1  # only rank 0 reports (and writes)
    one = [sys.executable, "-m", "odcli", "train", *args, "--set", "data.batch_size=2"]
    _run([*one, "--run-dir", str(single)], tmp_path)

    a = load_checkpoint(single / "last.safetensors")
    b = load_checkpoint(ddp / "last.safetensors")
    assert a.meta["iter"] == b.meta["iter"] == 4 and b.meta["world_size"] == 2 and a.meta["world_size"] == 1
    start = load_checkpoint(init).model_state
    params = [name for name, _ in model.named_parameters()]
    change = max((a.model_state[k] - start[k]).abs().max().item() for k in params)
    diff = max((a.model_state[k] - b.model_state[k]).abs().max().item() for k in params)
    print(f"largest parameter change {change:.3e}; largest DDP vs single difference {diff:.3e}")
    assert change > 1e-3  # it trained: the weights moved
    assert diff <= 1e-2 * change, (diff, change)


def test_a_failing_process_stops_the_launch_with_one_line(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from odcli.runtime.distributed import launch\n"
        "from odcli.errors import OdetError\n"
        "try:\n"
        "    launch(2, ['train', 'nowhere.yaml'])\n"
        "except OdetError as exc:\n"
        "    print(f'caught {exc.exit_code}: {exc}')\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "300"}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    expected = "caught 2: training stopped: process(es) of rank 0, 1 exited with code 2"
    assert expected in done.stdout, done.stdout + done.stderr
    assert "error: recipe not found" in done.stderr and "[rank 1] recipe not found" in done.stderr
