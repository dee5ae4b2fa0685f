#!/usr/bin/env bash
# End-to-end test of TorchScript models in the flowmatch tool (--model model.pt --shape ...),
# on the fixtures of tests/torch/make_fixtures.py: samples against PyTorch's own loops, the
# density commands on a float64 module, and one-line errors for modules that do not fit.
#
# Usage: cli_torch_test.sh <flowmatch> <cli_check> <work-directory> <tests/data/torch>
set -u
export LC_ALL=C
here=$(dirname "$(realpath "$0")")
tool=$(realpath "$1")
check=$(realpath "$2")
work=$3
data=$(realpath "$4")
rm -rf "$work"
mkdir -p "$work"
cd "$work" || exit 1

# shellcheck source=cli_support.sh
source "$here/cli_support.sh"

euler=(--method euler --step-size 0.1)

# Fixed-step samples equal PyTorch's loops on the same module (float32 rounding).
ok "sample, float32 module, euler" "$tool" sample --model "$data/mlp_float32.pt" --shape 3 \
  --precision float --noise "$data/mlp_x0.npy" "${euler[@]}" --out euler.npy &&
  { "$check" close euler.npy "$data/mlp_euler_10.npy" 1e-5 || fail "euler samples"; }
ok "sample, float32 module, midpoint" "$tool" sample --model "$data/mlp_float32.pt" --shape 3 \
  --precision float --noise "$data/mlp_x0.npy" --method midpoint --step-size 0.1 \
  --out midpoint.npy &&
  { "$check" close midpoint.npy "$data/mlp_midpoint_10.npy" 1e-5 || fail "midpoint samples"; }
ok "sample, images 1x4x4" "$tool" sample --model "$data/image_float32.pt" --shape 1,4,4 \
  --precision float --noise "$data/image_x0.npy" --method euler --step-size 0.125 \
  --out images.npy &&
  { "$check" close images.npy "$data/image_euler_8.npy" 1e-5 || fail "image samples"; }
ok "sample, int64 labels guided with --null-label" "$tool" sample \
  --model "$data/labels_float64.pt" --shape 2 --noise "$data/labels_x0.npy" \
  --labels "$data/labels_labels.npy" --guidance 2 --null-label 3 "${euler[@]}" --out guided.npy &&
  { "$check" close guided.npy "$data/labels_guided_w2_euler_10.npy" 1e-12 || fail "guided samples"; }

# The density commands on a float64 module: encode inverts sample, loglik exact and Hutchinson.
tight=(--rtol 1e-9 --atol 1e-9)
ok "sample (dopri5)" "$tool" sample --model "$data/mlp_float64.pt" --shape 3 \
  --noise "$data/mlp64_x.npy" "${tight[@]}" --out x1.npy
ok "encode" "$tool" encode --model "$data/mlp_float64.pt" --shape 3 --data x1.npy "${tight[@]}" \
  --out x0.npy && { "$check" close x0.npy "$data/mlp64_x.npy" 1e-6 || fail "encode of samples"; }
ok "sample --loglik" "$tool" sample --model "$data/mlp_float64.pt" --shape 3 \
  --noise "$data/mlp64_x.npy" "${tight[@]}" --out x1.npy --loglik forward.npy
ok "loglik (exact)" "$tool" loglik --model "$data/mlp_float64.pt" --shape 3 --data x1.npy \
  "${tight[@]}" --out exact.npy &&
  { "$check" close exact.npy forward.npy 1e-6 || fail "loglik against sample --loglik"; }
ok "loglik (hutchinson)" "$tool" loglik --model "$data/mlp_float64.pt" --shape 3 --data x1.npy \
  "${tight[@]}" --divergence hutchinson --probes 256 --out hutchinson.npy &&
  { "$check" close hutchinson.npy exact.npy 0.2 || fail "Hutchinson against exact"; }
ok "score (exact)" "$tool" score --model "$data/mlp_float64.pt" --shape 3 --data x1.npy --t 1 \
  --mode exact --out score.npy && { "$check" shape score.npy 6,3 || fail "score shape"; }

# Errors: one line each.
rejects "a TorchScript model without --shape" out.npy "$tool" sample --model "$data/mlp_float32.pt" \
  --noise "$data/mlp_x0.npy" --out out.npy
rejects "a module without t" out.npy "$tool" sample --model "$data/wrong_signature.pt" --shape 3 \
  --precision float --noise "$data/mlp_x0.npy" --out out.npy
rejects "a module with the wrong output shape" out.npy "$tool" sample \
  --model "$data/wrong_output_shape.pt" --shape 3 --precision float --noise "$data/mlp_x0.npy" \
  --out out.npy
rejects "a float64 module at --precision float" out.npy "$tool" sample --model "$data/mlp_float64.pt" \
  --shape 3 --precision float --noise "$data/mlp_x0.npy" --out out.npy
rejects "a --shape that disagrees with the points" out.npy "$tool" sample \
  --model "$data/mlp_float32.pt" --shape 4 --precision float --noise "$data/mlp_x0.npy" \
  --out out.npy
rejects "guided labels without --null-label" out.npy "$tool" sample --model "$data/labels_float64.pt" \
  --shape 2 --noise "$data/labels_x0.npy" --labels "$data/labels_labels.npy" --guidance 2 \
  --out out.npy

finish "TorchScript command-line checks"
