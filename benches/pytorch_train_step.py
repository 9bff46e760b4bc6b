#!/usr/bin/env python3
"""PyTorch twin of `insar-mm bench train`: the same step on the same model, timed the same way.

The step: encoder forward (training mode) -> global average pool -> linear head -> cross
entropy -> backward -> AdamW (lr 1e-3, betas 0.9/0.999, eps 1e-8, weight decay 0.01 on
matrices and kernels only, as the suite's `no_weight_decay` rule) or SGD (lr 0.01, momentum
0.9, weight decay 1e-4). Input: uniform [-1, 1) noise, random labels.

The encoders are built here from the suite's presets (`models/src/encoder/mod.rs`):
ResNet-18/34 (torchvision layout: 7x7 stride-2 stem, 3x3 max pool, basic blocks) and `tiny`
(the ResNet-18 layout at a quarter of the width with one block per stage). The parameter
count is printed so that it can be checked against `insar-mm bench train`.

Run both on the same machine, interleaved, with the same thread count:

    python3 benches/pytorch_train_step.py --arch resnet18 --image-size 64 --batch-size 32 --threads 2
    RAYON_NUM_THREADS=2 CANDLE_NUM_THREADS=2 insar-mm bench train --image-size 64 --batch-size 32

Needs torch (CPU, or CUDA with `--device cuda`). `--json` prints the same keys as the suite.
"""

import argparse
import json
import statistics
import time

import torch
from torch import nn

PRESETS = {
    # name: (blocks per stage, stage widths, stem width)
    "tiny": ([1, 1, 1, 1], [16, 32, 64, 128], 16),
    "resnet18": ([2, 2, 2, 2], [64, 128, 256, 512], 64),
    "resnet34": ([3, 4, 6, 3], [64, 128, 256, 512], 64),
}


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        h = self.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        return self.relu(h + identity)


class Net(nn.Module):
    def __init__(self, arch, in_channels, classes):
        super().__init__()
        layers, widths, stem = PRESETS[arch]
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, stem, 7, 2, 3, bias=False),
            nn.BatchNorm2d(stem),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        )
        blocks, cin = [], stem
        for stage, (n, w) in enumerate(zip(layers, widths)):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(BasicBlock(cin, w, stride))
                cin = w
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(cin, classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        h = self.blocks(self.stem(x))
        return self.head(h.mean(dim=(2, 3)))


def optimizer(model, kind):
    decay = [p for n, p in model.named_parameters() if p.ndim > 1 and not n.endswith("bias")]
    other = [p for n, p in model.named_parameters() if p.ndim <= 1 or n.endswith("bias")]
    if kind == "adamw":
        groups = [{"params": decay, "weight_decay": 0.01}, {"params": other, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.999), eps=1e-8)
    groups = [{"params": decay, "weight_decay": 1e-4}, {"params": other, "weight_decay": 0.0}]
    return torch.optim.SGD(groups, lr=0.01, momentum=0.9)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", default="resnet18", choices=sorted(PRESETS))
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--in-channels", type=int, default=3)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--optimizer", default="adamw", choices=["adamw", "sgd"])
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: default)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    dev = torch.device(args.device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    model = Net(args.arch, args.in_channels, args.classes).to(dev).train()
    opt = optimizer(model, args.optimizer)
    x = torch.rand(args.batch_size, args.in_channels, args.image_size, args.image_size) * 2 - 1
    x = x.to(dev)
    y = torch.randint(0, args.classes, (args.batch_size,), device=dev)
    loss_fn = nn.CrossEntropyLoss()

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    fwd, bwd, upd, total = [], [], [], 0.0
    for i in range(args.warmup + args.steps):
        sync()
        t0 = time.perf_counter()
        loss = loss_fn(model(x), y)
        sync()
        t1 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        sync()
        t2 = time.perf_counter()
        opt.step()
        sync()
        t3 = time.perf_counter()
        if not torch.isfinite(loss):
            raise SystemExit(f"step {i}: non-finite loss {loss.item()}")
        if i >= args.warmup:
            fwd.append(t1 - t0)
            bwd.append(t2 - t1)
            upd.append(t3 - t2)
            total += t3 - t0

    report = {
        "arch": args.arch,
        "device": args.device,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "parameters": sum(p.numel() for p in model.parameters()),
        "images_per_s": args.batch_size * args.steps / total,
        "step_ms": 1e3 * total / args.steps,
        "forward_ms": 1e3 * statistics.median(fwd),
        "backward_ms": 1e3 * statistics.median(bwd),
        "optimizer_ms": 1e3 * statistics.median(upd),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    if args.json:
        print(json.dumps(report))
    else:
        print(
            f"pytorch {torch.__version__} {args.arch} {args.image_size}² batch {args.batch_size} "
            f"on {args.device} ({report['threads']} threads, {report['parameters'] / 1e6:.2f} M "
            f"params, {args.steps} timed steps):\n  {report['images_per_s']:.1f} images/s, "
            f"{report['step_ms']:.1f} ms/step (median forward {report['forward_ms']:.1f} ms, "
            f"backward {report['backward_ms']:.1f} ms, optimizer {report['optimizer_ms']:.1f} ms)"
        )


if __name__ == "__main__":
    main()
