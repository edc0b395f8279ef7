"""ONNX Runtime against PyTorch eager on the same model and images: images per second, and the ratio.

The model is a torchvision architecture with random (seeded) weights and a two-class head, saved
once as a state_dict and once exported to ONNX; both files are opened by the probe's own runners
(``audit.probe.runner``), so this measures what ``medaudit probe`` runs. The images are phantom
radiographs at the input size, preprocessed once, so only the model is timed. With ``--probe`` the
whole ``medaudit probe`` (tag, denoise, noise, sex) also runs on the ONNX file and its wall time is
printed: the target is a ResNet50 on 200 images in under 2 minutes on the CPU.

    python bench/probe.py                          # resnet50, 200 images, 224 px
    python bench/probe.py --arch resnet18 --images 64 --repeats 1    # quick
    python bench/probe.py --probe                  # also the end-to-end probe, timed
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from audit.data.synthetic import PhantomSettings, make_phantom_cohort
from audit.probe.preprocess import Preprocessor, resolve_input, resolve_normalization
from audit.probe.runner import ModelOptions, OnnxRunner, Runner, TorchRunner


def build_files(arch: str, size: int, folder: Path) -> tuple[Path, Path]:
    """A seeded model saved as a state_dict (head included) and exported to ONNX."""
    from torchvision import models

    torch.manual_seed(0)
    model = models.get_model(arch, weights=None, num_classes=2).eval()
    state_path, onnx_path = folder / f"{arch}.pt", folder / f"{arch}.onnx"
    torch.save(model.state_dict(), state_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, torch.zeros(1, 3, size, size), onnx_path, input_names=["image"],
            output_names=["logits"], dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
            dynamo=False,
        )  # fmt: skip
    return state_path, onnx_path


def time_runner(
    runner: Runner, batches: list[np.ndarray], repeats: int
) -> tuple[float, np.ndarray]:
    """Best of ``repeats`` passes over all batches (after one warm-up batch): images per second."""
    runner.run(batches[0])
    best, outputs = float("inf"), []
    for _ in range(repeats):
        began = time.perf_counter()
        outputs = [runner.run(b)[0] for b in batches]
        best = min(best, time.perf_counter() - began)
    return sum(len(b) for b in batches) / best, np.concatenate(outputs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--probe", action="store_true", help="also time the whole probe (ONNX)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        state_path, onnx_path = build_files(args.arch, args.input_size, folder)
        ort_runner = OnnxRunner(ModelOptions(onnx_path, args.device))
        torch_runner = TorchRunner(ModelOptions(state_path, args.device))
        spec = resolve_input(ort_runner.declared, onnx_path.name)
        prep = Preprocessor(spec, resolve_normalization("imagenet", None, None, spec.channels))
        cohort = make_phantom_cohort(
            PhantomSettings(n_patients=args.images, image_size=args.input_size, seed=0)
        )
        images = cohort.images[: args.images]
        batches = [prep(images[i : i + args.batch_size]) for i in range(0, len(images), args.batch_size)]  # fmt: skip
        ort_rate, ort_out = time_runner(ort_runner, batches, args.repeats)
        torch_rate, torch_out = time_runner(torch_runner, batches, args.repeats)
        info = ort_runner.info
        print(
            f"{args.arch}, {len(images)} images at {args.input_size} px, batch {args.batch_size}, "
            f"{info.threads} CPU threads, torch {torch.__version__}, onnxruntime {info.version}"
        )
        print(f"onnxruntime ({', '.join(info.providers_used)}): {ort_rate:8.1f} images/s")
        print(f"pytorch eager ({torch_runner.info.device}):{' ' * 12}{torch_rate:8.1f} images/s")
        print(f"ratio onnxruntime / pytorch: {ort_rate / torch_rate:.2f}x")
        print(f"largest output difference: {np.abs(ort_out - torch_out).max():.2e}")
        if args.probe:
            time_probe(onnx_path, folder, args)


def time_probe(onnx_path: Path, folder: Path, args: argparse.Namespace) -> None:
    from audit import cli

    began = time.perf_counter()
    code = cli.main(
        ["--quiet", "probe", str(onnx_path), "--modality", "cxr", "--synthetic",
         "--synthetic-patients", str(args.images // 2 + 10), "--max-images", str(args.images),
         "--batch-size", str(args.batch_size), "--device", args.device,
         "--out", str(folder / "out"), "--cache-dir", str(folder / "cache")]
    )  # fmt: skip
    elapsed = time.perf_counter() - began
    print(f"medaudit probe, whole: {elapsed:.1f} s (exit {code}; random weights: timing only)")


if __name__ == "__main__":
    main()
