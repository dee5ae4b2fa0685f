#!/usr/bin/python3
"""Writes the TorchScript fixtures of tests/test_torch.cpp to tests/data/torch/.

Run with the system Python and python3-torch (Debian bookworm):

    /usr/bin/python3 tests/torch/make_fixtures.py [fields] [denoisers] [digits]

(all groups without arguments). The digits group needs python3-sklearn too.

The outputs are committed, so that the tests need neither Python nor PyTorch. Every module
follows the convention of flowmatch/interop/torch.hpp: forward(x, t) or forward(x, t, c), with
x of shape [N, *sample_shape], t of shape [N] and c int64 labels [N] or float conditions [N, k];
the output has the shape of x. Time runs from noise (t = 0) to data (t = 1). The denoisers of
discrete flow matching follow flowmatch/interop/torch_denoiser.hpp: forward(x, t) with int64
tokens x [N, L] and t [N], returning logits [N, L, K].

References (.npy, one sample per row, C order) come from PyTorch on the same modules:
velocities, exact divergences (traces of autograd Jacobians), and fixed-step Euler and midpoint
loops, so that the C++ side is checked against an independent implementation.
"""

import argparse
import os
import sys

import numpy as np
import torch
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "data", "torch")
sys.path.insert(0, os.path.join(HERE, "..", "..", "examples", "digits"))


class MlpField(nn.Module):
    """u(x, t) = MLP([x, t]) on flat samples of dimension `dim`."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim + 1, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.Tanh(),
            nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x, t.unsqueeze(1)], dim=1))


class LabelField(nn.Module):
    """u(x, t | c) with integer labels c in [0, classes]; label `classes` is the null label."""

    def __init__(self, dim: int, classes: int, hidden: int):
        super().__init__()
        self.embedding = nn.Embedding(classes + 1, 8)
        self.net = nn.Sequential(
            nn.Linear(dim + 1 + 8, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
            nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x, t.unsqueeze(1), self.embedding(c)], dim=1))


class VectorConditionField(nn.Module):
    """u(x, t | c) with a float condition vector c of k entries."""

    def __init__(self, dim: int, condition_dim: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim + 1 + condition_dim, hidden), nn.SiLU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x, t.unsqueeze(1), c], dim=1))


class ImageField(nn.Module):
    """u(x, t) on images [N, 1, 4, 4]: t as a second input channel, two 3×3 convolutions."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 1, 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        time = t.view(-1, 1, 1, 1).expand(-1, 1, x.shape[2], x.shape[3])
        hidden = nn.functional.silu(self.conv1(torch.cat([x, time], dim=1)))
        return self.conv2(hidden)


class WrongSignature(nn.Module):
    """forward(x): no time argument."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * x


class WrongOutputShape(nn.Module):
    """forward(x, t) returning [N, 2d] instead of the shape of x."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.scale * torch.cat([x, x], dim=1)


class NonFinite(nn.Module):
    """forward(x, t) = x / (t − 0.5): infinite at t = 0.5."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.scale * x / (t - 0.5).unsqueeze(1)


class TokenDenoiser(nn.Module):
    """Logits [N, L, K] of p(x1 | x_t) at every position (flowmatch/interop/torch_denoiser.hpp):
    an embedding of the K + 1 tokens (the mask token K included), the time, a linear head and a
    bias per position."""

    def __init__(self, vocabulary: int, length: int, width: int):
        super().__init__()
        self.embedding = nn.Embedding(vocabulary + 1, width)
        self.head = nn.Linear(width + 1, vocabulary)
        self.position = nn.Parameter(torch.randn(length, vocabulary))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        time = t.view(-1, 1, 1).expand(-1, x.shape[1], 1)
        return self.head(torch.cat([self.embedding(x), time], dim=2)) + self.position


class LabelDenoiser(TokenDenoiser):
    """TokenDenoiser with a bias per class label added to the logits: forward(x, t, c) with
    int64 labels c [N] in [0, classes], label `classes` being the null label."""

    def __init__(self, vocabulary: int, length: int, width: int, classes: int):
        super().__init__(vocabulary, length, width)
        self.label = nn.Embedding(classes + 1, vocabulary)

    def forward(self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        time = t.view(-1, 1, 1).expand(-1, x.shape[1], 1)
        logits = self.head(torch.cat([self.embedding(x), time], dim=2)) + self.position
        return logits + self.label(c).unsqueeze(1)


class DenoiserWrongShape(nn.Module):
    """forward(x, t) returning logits [N, L, K + 1]: one token too many."""

    def __init__(self, vocabulary: int):
        super().__init__()
        self.embedding = nn.Embedding(vocabulary + 1, vocabulary + 1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.embedding(x) * t.view(-1, 1, 1)


def save_module(module, name, example=None):
    """Scripts the module (or traces it on `example`) and saves it to OUT/name."""
    module.eval()
    if example is None:
        compiled = torch.jit.script(module)
    else:
        compiled = torch.jit.trace(module, example)
    compiled.save(os.path.join(OUT, name))
    return compiled


def save_array(name, array):
    np.save(os.path.join(OUT, name), np.ascontiguousarray(array))


def flat(tensor):
    """[N, *shape] → [N, d] as NumPy: one flowmatch column per row."""
    return tensor.detach().reshape(tensor.shape[0], -1).numpy()


def euler(field, x, steps, *extra):
    h = 1.0 / steps
    for k in range(steps):
        t = torch.full((x.shape[0],), k * h, dtype=x.dtype)
        x = x + h * field(x, t, *extra)
    return x


def midpoint(field, x, steps, *extra):
    h = 1.0 / steps
    for k in range(steps):
        t = torch.full((x.shape[0],), k * h, dtype=x.dtype)
        half = x + 0.5 * h * field(x, t, *extra)
        x = x + h * field(half, t + 0.5 * h, *extra)
    return x


def divergence(field, x, t, *extra):
    """tr(∂u/∂x) per sample from the autograd Jacobian of each sample alone."""
    values = []
    for n in range(x.shape[0]):
        def single(point, n=n):
            args = [a[n:n + 1] for a in extra]
            return field(point.unsqueeze(0), t[n:n + 1], *args).reshape(-1)
        jacobian = torch.autograd.functional.jacobian(single, x[n])
        values.append(torch.trace(jacobian.reshape(jacobian.shape[0], -1)))
    return torch.stack(values)


def field_fixtures():
    torch.manual_seed(7)
    generator = torch.Generator().manual_seed(11)
    samples = 6

    with torch.no_grad():
        # Unconditional MLP on R^3, float32 (scripted) and float64 (traced).
        mlp32 = save_module(MlpField(3, 32), "mlp_float32.pt")
        x0 = torch.randn(samples, 3, generator=generator)
        save_array("mlp_x0.npy", x0.numpy())
        t = torch.full((samples,), 0.3)
        save_array("mlp_velocity_t0.3.npy", mlp32(x0, t).numpy())
        save_array("mlp_euler_10.npy", euler(mlp32, x0, 10).numpy())
        save_array("mlp_midpoint_10.npy", midpoint(mlp32, x0, 10).numpy())

        mlp64_module = MlpField(3, 32).double()
        example = (torch.randn(4, 3, dtype=torch.float64), torch.rand(4, dtype=torch.float64))
        mlp64 = save_module(mlp64_module, "mlp_float64.pt", example)

        # Integer labels, float64: 3 classes and the null label 3.
        labels64 = save_module(LabelField(2, 3, 32).double(), "labels_float64.pt")
        x_labels = torch.randn(samples, 2, generator=generator, dtype=torch.float64)
        labels = torch.tensor([0, 1, 2, 0, 1, 2], dtype=torch.int64)
        null = torch.full((samples,), 3, dtype=torch.int64)
        weight = 2.0
        save_array("labels_x0.npy", x_labels.numpy())
        save_array("labels_labels.npy", labels.numpy())

        def guided(x, t):
            return (1 - weight) * labels64(x, t, null) + weight * labels64(x, t, labels)

        save_array("labels_guided_w2_euler_10.npy", euler(guided, x_labels, 10).numpy())

        # Float conditions [N, 2], float32.
        vector32 = save_module(VectorConditionField(2, 2, 16), "vector_condition_float32.pt")
        x_vector = torch.randn(samples, 2, generator=generator)
        conditions = torch.randn(samples, 2, generator=generator)
        save_array("vector_x.npy", x_vector.numpy())
        save_array("vector_conditions.npy", conditions.numpy())
        save_array("vector_velocity_t0.7.npy",
                   vector32(x_vector, torch.full((samples,), 0.7), conditions).numpy())

        # Images [N, 1, 4, 4]: float32 with an Euler reference, float64 for the derivatives.
        image32 = save_module(ImageField(), "image_float32.pt")
        x_image = torch.randn(5, 1, 4, 4, generator=generator)
        save_array("image_x0.npy", flat(x_image))
        save_array("image_euler_8.npy", flat(euler(image32, x_image, 8)))
        image64 = save_module(ImageField().double(), "image_float64.pt")

        # Modules that break the convention.
        save_module(WrongSignature(), "wrong_signature.pt")
        save_module(WrongOutputShape(), "wrong_output_shape.pt")
        save_module(NonFinite(), "non_finite.pt")

    # Exact divergences (float64) from autograd Jacobians, one sample at a time.
    x_div = torch.randn(samples, 3, generator=generator, dtype=torch.float64)
    t_div = torch.full((samples,), 0.6, dtype=torch.float64)
    save_array("mlp64_x.npy", x_div.numpy())
    save_array("mlp64_divergence_t0.6.npy", divergence(mlp64, x_div, t_div).detach().numpy())
    x_img = torch.randn(3, 1, 4, 4, generator=generator, dtype=torch.float64)
    t_img = torch.full((3,), 0.6, dtype=torch.float64)
    save_array("image64_x.npy", flat(x_img))
    save_array("image64_divergence_t0.6.npy", divergence(image64, x_img, t_img).detach().numpy())


def denoiser_fixtures():
    """The TorchScript denoisers over K = 4 tokens and L = 3 positions, their parameters (for an
    Eigen-side reference of the same function) and PyTorch's posteriors (the softmax of the
    logits) at a batch of masked and unmasked tokens."""
    torch.manual_seed(13)
    vocabulary, length = 4, 3
    tokens = torch.tensor([[0, 1, 2], [3, 4, 4], [4, 4, 4], [2, 0, 3], [1, 4, 0]],
                          dtype=torch.int64)
    with torch.no_grad():
        for dtype, suffix in ((torch.float32, "float32"), (torch.float64, "float64")):
            module = TokenDenoiser(vocabulary, length, 5).to(dtype)
            scripted = save_module(module, "denoiser_" + suffix + ".pt")
            t = torch.tensor([0.0, 0.2, 0.5, 0.7, 0.95], dtype=dtype)
            posterior = torch.softmax(scripted(tokens, t), dim=2)
            save_array("denoiser_" + suffix + "_posterior.npy", flat(posterior))
            if dtype == torch.float64:
                save_array("denoiser_t.npy", t.unsqueeze(1).numpy())
                save_array("denoiser_embedding.npy", module.embedding.weight.numpy())
                save_array("denoiser_head_weight.npy", module.head.weight.numpy())
                save_array("denoiser_head_bias.npy", module.head.bias.unsqueeze(1).numpy())
                save_array("denoiser_position.npy", module.position.numpy())
        save_array("denoiser_tokens.npy", tokens.numpy())
        save_module(DenoiserWrongShape(vocabulary), "denoiser_wrong_shape.pt")
        # Two class labels and the null label 2, float64.
        labelled = save_module(LabelDenoiser(vocabulary, length, 5, 2).double(),
                               "denoiser_labels_float64.pt")
        labels = torch.tensor([0, 1, 2, 0, 1], dtype=torch.int64)
        t = torch.tensor([0.0, 0.2, 0.5, 0.7, 0.95], dtype=torch.float64)
        save_array("denoiser_labels.npy", labels.numpy())
        save_array("denoiser_labels_posterior.npy",
                   flat(torch.softmax(labelled(tokens, t, labels), dim=2)))


def digits_fixtures():
    """A small class-conditional digits model for the test of examples/digits_torch.cpp, in the
    format of examples/digits/train_digits.py (model.pt, test_pixels.npy, test_labels.npy in
    digits/): the network of that script at width 4 with one block, trained for 150 steps (a
    few seconds; enough that its samples are not pure noise, small enough to stay a few KB),
    and 24 test images of its test split."""
    from train_digits import DigitsVelocity, export, split_digits, train

    torch.manual_seed(17)
    folder = os.path.join(OUT, "digits")
    os.makedirs(folder, exist_ok=True)
    train_pixels, train_labels, test_pixels, test_labels = split_digits()
    model = DigitsVelocity(width=4, blocks=1, embedding=8, frequencies=4)
    train(model, train_pixels, train_labels, steps=150, batch=64, learning_rate=1e-2,
          label_dropout=0.15, seed=18)
    export(model, os.path.join(folder, "model.pt"))
    np.save(os.path.join(folder, "test_pixels.npy"), test_pixels[:24])
    np.save(os.path.join(folder, "test_labels.npy"), test_labels[:24])


GROUPS = {"fields": field_fixtures, "denoisers": denoiser_fixtures, "digits": digits_fixtures}


def main():
    parser = argparse.ArgumentParser(description="Writes the TorchScript test fixtures.")
    parser.add_argument("groups", nargs="*", choices=sorted(GROUPS),
                        help="the groups to write (default: all)")
    args = parser.parse_args()
    os.makedirs(OUT, exist_ok=True)
    for name in args.groups or list(GROUPS):
        GROUPS[name]()


if __name__ == "__main__":
    main()
