#!/usr/bin/python3
"""Trains a class-conditional velocity field on scikit-learn's 8×8 handwritten digits and saves
it as TorchScript for examples/digits_torch.cpp.

    /usr/bin/python3 examples/digits/train_digits.py --out digits_out

writes to the output folder:

    digits_model.pt      the field, float32, forward(x [N, 1, 8, 8], t [N], c int64 [N])
    test_pixels.npy      the held-out images, float32 [297, 64], pixel values 0..16
    test_labels.npy      their classes, int64 [297]

Data: sklearn.datasets.load_digits (1797 images with 17 grey levels, 10 classes), shuffled
with a fixed seed; the last 297 images of the permutation are the test split, the first 1500
the training split.

Model space. A pixel p in {0, ..., 16} is dequantised uniformly, y = p + u with u ~ U[0, 1),
so that y lies in [0, 17), and mapped affinely to z = 2·y/17 − 1 in [−1, 1). The flow runs in
z: noise z0 ~ N(0, I) at t = 0, data at t = 1, on the conditional optimal-transport path
z_t = t·z1 + (1 − t)·z0 with the regression target z1 − z0. A fresh u is drawn for every
training example at every step.

Labels 0..9 are the classes; label 10 is the null label ("no class"), which replaces the true
label of a random fraction of every batch (label dropout), so that the same network gives the
unconditional field for classifier-free guidance.
"""

import argparse
import math
import os
import time

import numpy as np
import torch
from torch import nn

CLASSES = 10
NULL_LABEL = CLASSES
LEVELS = 17  # grey levels of the digits: 0..16
TEST_SIZE = 297


def to_model_space(pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Pixels in {0..16} → y = p + u, u ~ U[0, 1) → z = 2y/17 − 1."""
    noise = torch.rand(pixels.shape, generator=generator, dtype=pixels.dtype)
    return 2.0 * (pixels + noise) / LEVELS - 1.0


class ConditionedBlock(nn.Module):
    """A residual pair of 3×3 convolutions whose hidden channels are scaled and shifted by an
    embedding of (t, c)."""

    def __init__(self, width: int, embedding: int):
        super().__init__()
        self.first = nn.Conv2d(width, width, 3, padding=1)
        self.second = nn.Conv2d(width, width, 3, padding=1)
        self.modulation = nn.Linear(embedding, 2 * width)

    def forward(self, h: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        scale, shift = self.modulation(e).unsqueeze(2).unsqueeze(3).chunk(2, dim=1)
        inner = self.first(nn.functional.silu(h))
        inner = nn.functional.silu(inner * (1.0 + scale) + shift)
        return h + self.second(inner)


class DigitsVelocity(nn.Module):
    """u(x, t | c) on images [N, 1, 8, 8]; c in 0..classes, label `classes` being the null label.

    t enters through sinusoidal features and a small MLP, c through an embedding; their sum
    modulates every residual block. Every sample is processed on its own (no batch statistics),
    as the flowmatch field convention requires."""

    def __init__(self, width: int = 32, blocks: int = 2, embedding: int = 32,
                 classes: int = CLASSES, frequencies: int = 8):
        super().__init__()
        self.register_buffer(
            "frequencies", torch.exp(torch.linspace(0.0, math.log(200.0), frequencies)))
        self.time = nn.Sequential(nn.Linear(2 * frequencies, embedding), nn.SiLU(),
                                  nn.Linear(embedding, embedding))
        self.label = nn.Embedding(classes + 1, embedding)
        self.lift = nn.Conv2d(1, width, 3, padding=1)
        self.blocks = nn.ModuleList([ConditionedBlock(width, embedding) for _ in range(blocks)])
        self.project = nn.Conv2d(width, 1, 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        phase = t.unsqueeze(1) * self.frequencies
        e = self.time(torch.cat([torch.sin(phase), torch.cos(phase)], dim=1)) + self.label(c)
        h = self.lift(x)
        for block in self.blocks:
            h = block(h, e)
        return self.project(nn.functional.silu(h))


def split_digits(seed: int = 0):
    """(train pixels, train labels, test pixels, test labels): float32 [N, 64] in 0..16 and
    int64 [N], the test split being the last TEST_SIZE images of a seeded permutation."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(seed).permutation(len(digits.target))
    pixels = digits.data[order].astype(np.float32)
    labels = digits.target[order].astype(np.int64)
    return (pixels[:-TEST_SIZE], labels[:-TEST_SIZE], pixels[-TEST_SIZE:], labels[-TEST_SIZE:])


def flow_matching_loss(model, pixels, labels, generator, label_dropout):
    """The conditional flow-matching loss on one batch (CondOT path, dequantised data)."""
    z1 = to_model_space(pixels, generator).view(-1, 1, 8, 8)
    z0 = torch.randn(z1.shape, generator=generator)
    t = torch.rand(z1.shape[0], generator=generator)
    dropped = torch.rand(labels.shape, generator=generator) < label_dropout
    c = torch.where(dropped, torch.full_like(labels, NULL_LABEL), labels)
    zt = t.view(-1, 1, 1, 1) * z1 + (1.0 - t.view(-1, 1, 1, 1)) * z0
    return ((model(zt, t, c) - (z1 - z0)) ** 2).mean()


def train(model, pixels, labels, steps, batch, learning_rate, label_dropout, seed, log_every=0):
    """Adam with a cosine learning rate; returns the mean loss of the last 100 steps."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps,
                                                          eta_min=learning_rate / 20)
    pixels = torch.from_numpy(pixels)
    labels = torch.from_numpy(labels)
    recent = []
    model.train()
    for step in range(steps):
        chosen = torch.randint(0, pixels.shape[0], (batch,), generator=generator)
        loss = flow_matching_loss(model, pixels[chosen], labels[chosen], generator, label_dropout)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        recent = (recent + [loss.item()])[-100:]
        if log_every and (step + 1) % log_every == 0:
            print(f"step {step + 1:5d}  loss {sum(recent) / len(recent):.4f}", flush=True)
    model.eval()
    return sum(recent) / len(recent)


def export(model, path):
    """Scripts the model (float32, eval mode) and saves it."""
    scripted = torch.jit.script(model.float().eval())
    scripted.save(path)
    return scripted


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="digits_out", help="output folder")
    parser.add_argument("--steps", type=int, default=5000, help="Adam steps")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--label-dropout", type=float, default=0.15)
    parser.add_argument("--width", type=int, default=32, help="channels of the convolutions")
    parser.add_argument("--blocks", type=int, default=2, help="residual blocks")
    parser.add_argument("--threads", type=int, default=1,
                        help="PyTorch threads (one is fastest for this small network on a busy machine)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    os.makedirs(args.out, exist_ok=True)
    train_pixels, train_labels, test_pixels, test_labels = split_digits()
    np.save(os.path.join(args.out, "test_pixels.npy"), test_pixels)
    np.save(os.path.join(args.out, "test_labels.npy"), test_labels)

    model = DigitsVelocity(width=args.width, blocks=args.blocks)
    parameters = sum(p.numel() for p in model.parameters())
    print(f"{parameters} parameters, {len(train_labels)} training and {len(test_labels)} test "
          f"images, {args.steps} steps of batch {args.batch} on {args.threads} threads",
          flush=True)
    start = time.perf_counter()
    loss = train(model, train_pixels, train_labels, args.steps, args.batch, args.learning_rate,
                 args.label_dropout, args.seed + 1, log_every=500)
    elapsed = time.perf_counter() - start
    path = os.path.join(args.out, "digits_model.pt")
    export(model, path)
    print(f"trained in {elapsed:.0f} s (final loss {loss:.4f}); wrote {path}, test_pixels.npy "
          f"and test_labels.npy")


if __name__ == "__main__":
    main()
