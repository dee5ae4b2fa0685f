#!/usr/bin/env bash
# End-to-end test of the flowmatch command-line tool: every subcommand on small files, the
# results checked against closed forms (cli_check.cpp) or against each other, and every error
# path (non-zero exit, exactly one line on stderr, no output file left behind).
#
# Usage: cli_test.sh <flowmatch> <cli_check> <work-directory>
set -u
export LC_ALL=C
here=$(dirname "$(realpath "$0")")
tool=$(realpath "$1")
check=$(realpath "$2")
data=$(realpath "$(dirname "$0")/../data")
work=$3
rm -rf "$work"
mkdir -p "$work"
cd "$work" || exit 1

# shellcheck source=cli_support.sh
source "$here/cli_support.sh"

tight=(--rtol 1e-10 --atol 1e-10)

# --- Inputs: closed-form linear models (see cli_check.cpp), noise, labels, weights ----------
"$check" linear-model linear.safetensors
"$check" linear-model conditional.safetensors 3
"$check" normal noise.npy 64 2 1
"$check" normal data.npy 256 2 2 1.5
"$check" labels labels.npy 64 3
"$check" labels train_labels.npy 256 3
"$check" normal many.npy 1000 2 4
"$check" vector weights.npy "$(awk 'BEGIN { for (n = 0; n < 64; ++n) printf "%s%g", (n ? "," : ""), 0.5 + 0.05 * n }')"
"$check" shape weights.npy 64 || fail "weights.npy should hold 64 weights"

# --- sample / encode ------------------------------------------------------------------------
ok "sample (dopri5) with --stats" "$tool" sample --model linear.safetensors --noise noise.npy \
  --out x1.npy "${tight[@]}" --stats &&
  for key in nfe accepted rejected; do
    grep -q "\"$key\":[0-9]" last.out || fail "--stats lacks \"$key\": $(cat last.out)"
  done
"$check" sample linear.safetensors noise.npy x1.npy 1e-7 || fail "sample vs closed form"
ok "encode" "$tool" encode --model linear.safetensors --data x1.npy --out x0.npy "${tight[@]}"
"$check" encode linear.safetensors x1.npy x0.npy 1e-7 || fail "encode vs closed form"
"$check" close x0.npy noise.npy 1e-7 || fail "encode(sample(noise)) recovers the noise"
for method in euler midpoint heun2 heun3 rk4 rk38; do
  ok "sample --method $method" "$tool" sample --model linear.safetensors --noise noise.npy \
    --out fixed.npy --method "$method" --step-size 0.001
  "$check" sample linear.safetensors noise.npy fixed.npy 1e-2 || fail "$method vs closed form"
done
ok "sample --method rk4 --step-size 0.01" "$tool" sample --model linear.safetensors \
  --noise noise.npy --out rk4.npy --method rk4 --step-size 0.01 --stats
grep -q '"accepted":100,' last.out || fail "rk4 with step 0.01 should take 100 steps: $(cat last.out)"
"$check" sample linear.safetensors noise.npy rk4.npy 1e-8 || fail "rk4 vs closed form"
# Step bounds and stops: the closed form is kept, and --stats shows what the bounds did.
ok "sample --max-step 0.01 --first-step 1e-4" "$tool" sample --model linear.safetensors \
  --noise noise.npy --out bounded.npy "${tight[@]}" --max-step 0.01 --first-step 1e-4 --stats
grep -Eq '"accepted":[1-9][0-9]{2,},' last.out ||
  fail "--max-step 0.01 takes at least 100 steps over [0, 1]: $(cat last.out)"
"$check" sample linear.safetensors noise.npy bounded.npy 1e-7 || fail "bounded vs closed form"
ok "sample --min-step 0.2 --force-min-step" "$tool" sample --model linear.safetensors \
  --noise noise.npy --out forced.npy "${tight[@]}" --min-step 0.2 --force-min-step --stats
grep -Eq '"forced":[1-9]' last.out || fail "--force-min-step: no forced step: $(cat last.out)"
rejects "sample --min-step 0.2 without --force-min-step" below.npy "$tool" sample \
  --model linear.safetensors --noise noise.npy --out below.npy "${tight[@]}" --min-step 0.2
grep -q 'min_step = 0.2' last.err || fail "the underflow names min_step: $(cat last.err)"
for method in midpoint dopri5; do
  ok "sample --tstops 0.25,0.5 --method $method" "$tool" sample --model linear.safetensors \
    --noise noise.npy --out stopped.npy --method "$method" --tstops 0.25,0.5 --stats
done
grep -q '"accepted":' last.out || fail "--tstops --stats: $(cat last.out)"
for controller in integral pid; do
  ok "sample --controller $controller" "$tool" sample --model linear.safetensors \
    --noise noise.npy --out controlled.npy "${tight[@]}" --controller "$controller" --stats
  "$check" sample linear.safetensors noise.npy controlled.npy 1e-7 ||
    fail "--controller $controller vs closed form"
done
ok "sample --pid-coefficients h312pid" "$tool" sample --model linear.safetensors \
  --noise noise.npy --out controlled.npy "${tight[@]}" --controller pid --pid-coefficients h312pid
"$check" sample linear.safetensors noise.npy controlled.npy 1e-7 || fail "h312pid vs closed form"
rejects "--controller with a fixed-step method" none.npy "$tool" sample \
  --model linear.safetensors --noise noise.npy --out none.npy --method euler --controller pid
rejects "--pid-coefficients with --controller integral" none.npy "$tool" sample \
  --model linear.safetensors --noise noise.npy --out none.npy --controller integral \
  --pid-coefficients h211pi
rejects "--force-min-step without --min-step" none.npy "$tool" sample \
  --model linear.safetensors --noise noise.npy --out none.npy --force-min-step
rejects "--max-step with a fixed-step method" none.npy "$tool" sample \
  --model linear.safetensors --noise noise.npy --out none.npy --method rk4 --max-step 0.1
rejects "--tstops outside [0, 1]" none.npy "$tool" sample \
  --model linear.safetensors --noise noise.npy --out none.npy --tstops 0.5,2
for method in rkf78 tsit5; do
  ok "sample --method $method" "$tool" sample --model linear.safetensors --noise noise.npy \
    --out adaptive.npy --method "$method" "${tight[@]}"
  "$check" sample linear.safetensors noise.npy adaptive.npy 1e-7 || fail "$method vs closed form"
done
ok "sample --precision float" "$tool" sample --model linear.safetensors --noise noise.npy \
  --out x1_float.npy --precision float --rtol 1e-6 --atol 1e-6
"$check" sample linear.safetensors noise.npy x1_float.npy 1e-4 || fail "float sample"

# --- trajectories ---------------------------------------------------------------------------
ok "sample --times --trajectory" "$tool" sample --model linear.safetensors --noise noise.npy \
  --out x1_grid.npy --times 0,0.5,1 --trajectory trajectory.npy "${tight[@]}"
"$check" shape trajectory.npy 3,64,2 || fail "trajectory shape [3, 64, 2]"
"$check" trajectory-ends trajectory.npy noise.npy x1.npy 1e-7 || fail "trajectory endpoints"
ok "sample --times at interior times" "$tool" sample --model linear.safetensors \
  --noise noise.npy --out x1_interior.npy --times 0.25,0.5,0.75 --trajectory interior.npy
"$check" shape interior.npy 3,64,2 || fail "interior trajectory shape [3, 64, 2]"
ok "encode --times --trajectory" "$tool" encode --model linear.safetensors --data x1.npy \
  --out x0_grid.npy --times 1,0.5,0 --trajectory encode_trajectory.npy "${tight[@]}"
"$check" trajectory-ends encode_trajectory.npy x1.npy x0.npy 1e-7 ||
  fail "encode trajectory endpoints"
"$check" trajectory-row trajectory.npy 1 forward_half.npy
"$check" trajectory-row encode_trajectory.npy 1 backward_half.npy
"$check" close forward_half.npy backward_half.npy 1e-7 ||
  fail "the states at t = 0.5 forward and backward differ"
# Dense output: 101 reported times cost dopri5 and tsit5 no evaluation beyond the plain solve,
# and rkf78 the 3 stages of its dense output in each step (every step here holds output times).
hundredths=$(awk 'BEGIN { for (k = 0; k <= 100; ++k) printf "%s%g", (k ? "," : ""), k / 100 }')
for method in dopri5 tsit5 rkf78; do
  ok "sample --method $method --stats" "$tool" sample --model linear.safetensors \
    --noise noise.npy --out plain.npy --method "$method" --stats
  plain_nfe=$(grep -o '"nfe":[0-9]*' last.out | cut -d: -f2)
  ok "sample --method $method with 101 --times" "$tool" sample --model linear.safetensors \
    --noise noise.npy --out dense.npy --method "$method" --times "$hundredths" \
    --trajectory dense_trajectory.npy --stats
  dense_nfe=$(grep -o '"nfe":[0-9]*' last.out | cut -d: -f2)
  dense_steps=$(grep -o '"accepted":[0-9]*' last.out | cut -d: -f2)
  extra_stages=$([ "$method" = rkf78 ] && echo 3 || echo 0)
  [ -n "$plain_nfe" ] && [ -n "$dense_steps" ] &&
    [ "$dense_nfe" = $((plain_nfe + extra_stages * dense_steps)) ] ||
    fail "$method: 101 output times cost $dense_nfe evaluations, $plain_nfe without them" \
      "and $dense_steps steps"
  "$check" shape dense_trajectory.npy 101,64,2 || fail "$method dense trajectory shape"
done

# --- loglik ---------------------------------------------------------------------------------
ok "loglik (exact divergence)" "$tool" loglik --model linear.safetensors --data x1.npy \
  --out ll.npy "${tight[@]}" --stats
"$check" loglik linear.safetensors x1.npy ll.npy 1e-7 || fail "loglik vs closed form"
"$check" shape ll.npy 64 || fail "loglik writes [N]"
ok "loglik --times --trajectory" "$tool" loglik --model linear.safetensors --data x1.npy \
  --out ll_grid.npy --times 1,0.5,0 --trajectory loglik_trajectory.npy "${tight[@]}"
"$check" trajectory-ends loglik_trajectory.npy x1.npy noise.npy 1e-7 ||
  fail "loglik trajectory from the data to the noise"
# log p_t(x_t) at t = 1 is the log-likelihood; the --times cost no second integration.
ok "loglik --loglik-trajectory" "$tool" loglik --model linear.safetensors --data x1.npy \
  --out ll_grid2.npy --times 1,0.5,0 --loglik-trajectory ll_path.npy "${tight[@]}" --stats
"$check" shape ll_path.npy 3,64 || fail "--loglik-trajectory writes [len(times), N]"
"$check" loglik linear.safetensors x1.npy ll_grid2.npy 1e-7 || fail "loglik through --times"
"$check" row ll_path.npy 0 ll_grid2.npy 0 || fail "--loglik-trajectory row 0 is the loglik"
rejects "sample --loglik-trajectory without --loglik" never.npy "$tool" sample \
  --model linear.safetensors --noise noise.npy --out never.npy --loglik-trajectory never_ll.npy
ok "loglik --precision float" "$tool" loglik --model linear.safetensors --data x1.npy \
  --out ll_float.npy --precision float --rtol 1e-6 --atol 1e-6
"$check" loglik linear.safetensors x1.npy ll_float.npy 1e-4 || fail "float loglik"
# Rademacher probes give the exact trace of a diagonal Jacobian.
ok "loglik --divergence hutchinson" "$tool" loglik --model linear.safetensors --data x1.npy \
  --out ll_hutchinson.npy --divergence hutchinson --probes 3 --seed 7 "${tight[@]}"
"$check" loglik linear.safetensors x1.npy ll_hutchinson.npy 1e-7 || fail "Hutchinson loglik"
ok "sample --loglik" "$tool" sample --model linear.safetensors --noise noise.npy \
  --out x1_ll.npy --loglik ll_sample.npy "${tight[@]}"
"$check" close ll_sample.npy ll.npy 1e-7 || fail "sample --loglik vs loglik"
"$check" close x1_ll.npy x1.npy 1e-7 || fail "sample --loglik samples"
ok "sample --loglik --trajectory" "$tool" sample --model linear.safetensors --noise noise.npy \
  --out x1_ll_grid.npy --loglik ll_grid_sample.npy --times 0,0.5,1 \
  --trajectory ll_trajectory.npy "${tight[@]}"
"$check" trajectory-ends ll_trajectory.npy noise.npy x1.npy 1e-7 ||
  fail "sample --loglik trajectory endpoints"

# --- score ----------------------------------------------------------------------------------
ok "score --mode approx" "$tool" score --model linear.safetensors --data x1.npy --t 0.3 \
  --out score_approx.npy
"$check" approx-score linear.safetensors x1.npy score_approx.npy 1e-10 0.3 ||
  fail "approx score vs its formula on the CondOT path"
ok "score --mode exact" "$tool" score --model linear.safetensors --data x1.npy --t 0.6 \
  --mode exact --out score_exact.npy "${tight[@]}" --stats
"$check" exact-score linear.safetensors x1.npy score_exact.npy 1e-7 0.6 ||
  fail "exact score vs closed form"
grep -q '"encode":' last.out || fail "exact score --stats reports the encoding"
ok "score --mode exact --times --trajectory" "$tool" score --model linear.safetensors \
  --data x1.npy --t 0.6 --mode exact --out score_grid.npy --times 0.6,0.3,0 \
  --trajectory score_trajectory.npy "${tight[@]}"
"$check" shape score_trajectory.npy 3,64,2 || fail "score trajectory shape [3, 64, 2]"
"$check" close score_grid.npy score_exact.npy 1e-12 || fail "score --trajectory changed the score"
row=0
for time in 0.6 0.3 0; do
  "$check" trajectory-row score_trajectory.npy "$row" score_state.npy
  "$check" flow linear.safetensors x1.npy score_state.npy 1e-7 0.6 "$time" ||
    fail "score trajectory at t = $time vs the closed-form flow from t = 0.6"
  row=$((row + 1))
done

# --- schedule transform: same endpoints, so the same samples --------------------------------
for scheduler in cosine poly:2; do
  ok "sample --transform-to $scheduler" "$tool" sample --model linear.safetensors \
    --noise noise.npy --out transformed.npy --transform-to "$scheduler" "${tight[@]}"
  "$check" close transformed.npy x1.npy 1e-6 || fail "--transform-to $scheduler samples"
done
# VP and linear VP have an infinite sigma-dot at r = 1; the sampler finishes on the model's own
# path there. Their noise x0 stands for s0 x(t0) of the model's flow (cli_check.cpp).
for scheduler in vp linear-vp; do
  ok "sample --transform-to $scheduler" "$tool" sample --model linear.safetensors \
    --noise noise.npy --out transformed.npy --transform-to "$scheduler" "${tight[@]}" --stats
  grep -q '"nfe":[1-9]' last.out || fail "--transform-to $scheduler --stats: $(cat last.out)"
  "$check" transformed-sample linear.safetensors noise.npy transformed.npy 1e-6 "$scheduler" ||
    fail "--transform-to $scheduler samples vs closed form"
  ok "sample --transform-to $scheduler --times --trajectory" "$tool" sample \
    --model linear.safetensors --noise noise.npy --out transformed_grid.npy \
    --transform-to "$scheduler" --times 0,0.5,1 --trajectory transformed_trajectory.npy \
    "${tight[@]}"
  "$check" shape transformed_trajectory.npy 3,64,2 || fail "$scheduler trajectory shape"
  "$check" trajectory-ends transformed_trajectory.npy noise.npy transformed.npy 1e-6 ||
    fail "--transform-to $scheduler trajectory from the noise to the samples"
done

# --- conditional models: labels, guidance ---------------------------------------------------
conditions=(--labels labels.npy --num-classes 3)
ok "sample --labels" "$tool" sample --model conditional.safetensors --noise noise.npy \
  --out labelled.npy "${conditions[@]}" "${tight[@]}"
"$check" sample conditional.safetensors noise.npy labelled.npy 1e-7 labels.npy ||
  fail "conditional sample vs closed form"
ok "sample --guidance 2.5" "$tool" sample --model conditional.safetensors --noise noise.npy \
  --out guided.npy "${conditions[@]}" --guidance 2.5 "${tight[@]}"
"$check" sample conditional.safetensors noise.npy guided.npy 1e-7 labels.npy 2.5 ||
  fail "guided sample vs closed form"
ok "sample --guidance --loglik" "$tool" sample --model conditional.safetensors --noise noise.npy \
  --out guided_ll.npy --loglik ll_guided.npy "${conditions[@]}" --guidance 2.5 "${tight[@]}"
"$check" loglik conditional.safetensors guided_ll.npy ll_guided.npy 1e-7 labels.npy 2.5 ||
  fail "log-densities of guided samples vs closed form"
# Rademacher probes give the exact trace of the guided field's diagonal Jacobian as well.
ok "sample --guidance --loglik --divergence hutchinson" "$tool" sample \
  --model conditional.safetensors --noise noise.npy --out guided_hutchinson.npy \
  --loglik ll_guided_hutchinson.npy "${conditions[@]}" --guidance 2.5 --divergence hutchinson \
  --probes 3 --seed 5 "${tight[@]}"
"$check" loglik conditional.safetensors guided_hutchinson.npy ll_guided_hutchinson.npy 1e-7 \
  labels.npy 2.5 || fail "Hutchinson log-densities of guided samples vs closed form"
ok "sample --guidance-file --loglik --divergence hutchinson" "$tool" sample \
  --model conditional.safetensors --noise noise.npy --out guided_file_hutchinson.npy \
  --loglik ll_guided_file_hutchinson.npy "${conditions[@]}" --guidance-file weights.npy \
  --divergence hutchinson "${tight[@]}"
"$check" loglik conditional.safetensors guided_file_hutchinson.npy \
  ll_guided_file_hutchinson.npy 1e-7 labels.npy weights.npy ||
  fail "Hutchinson log-densities of per-sample guided samples vs closed form"
ok "sample --guidance-file" "$tool" sample --model conditional.safetensors --noise noise.npy \
  --out guided_file.npy "${conditions[@]}" --guidance-file weights.npy "${tight[@]}"
"$check" sample conditional.safetensors noise.npy guided_file.npy 1e-7 labels.npy weights.npy ||
  fail "per-sample guidance vs closed form"
ok "encode --guidance-file" "$tool" encode --model conditional.safetensors --data guided_file.npy \
  --out guided_noise.npy "${conditions[@]}" --guidance-file weights.npy "${tight[@]}"
"$check" close guided_noise.npy noise.npy 1e-7 || fail "guided round trip"
ok "loglik --labels" "$tool" loglik --model conditional.safetensors --data labelled.npy \
  --out ll_labelled.npy "${conditions[@]}" "${tight[@]}"
"$check" loglik conditional.safetensors labelled.npy ll_labelled.npy 1e-7 labels.npy ||
  fail "conditional loglik vs closed form"
"$check" one-hot labels.npy 3 one_hot.npy
ok "sample --cond" "$tool" sample --model conditional.safetensors --noise noise.npy \
  --out conditioned.npy --cond one_hot.npy "${tight[@]}"
cmp -s conditioned.npy labelled.npy || fail "--cond with one-hot rows differs from --labels"
ok "score --labels" "$tool" score --model conditional.safetensors \
  --data labelled.npy --t 0.3 --out score_labelled.npy "${conditions[@]}"
"$check" approx-score conditional.safetensors labelled.npy score_labelled.npy 1e-10 0.3 \
  labels.npy || fail "conditional approx score vs its formula"
ok "score --labels --mode exact" "$tool" score --model conditional.safetensors \
  --data labelled.npy --t 0.6 --mode exact --out score_labelled_exact.npy "${conditions[@]}" \
  "${tight[@]}"
"$check" exact-score conditional.safetensors labelled.npy score_labelled_exact.npy 1e-7 0.6 \
  labels.npy || fail "conditional exact score vs closed form"
ok "loglik --labels --divergence hutchinson" "$tool" loglik --model conditional.safetensors \
  --data labelled.npy --out ll_labelled_hutchinson.npy "${conditions[@]}" \
  --divergence hutchinson --probes 2 "${tight[@]}"
"$check" loglik conditional.safetensors labelled.npy ll_labelled_hutchinson.npy 1e-7 labels.npy ||
  fail "conditional Hutchinson loglik vs closed form"

ok "loglik --guidance" "$tool" loglik --model conditional.safetensors --data guided.npy \
  --out ll_guided_direct.npy "${conditions[@]}" --guidance 2.5 "${tight[@]}"
"$check" loglik conditional.safetensors guided.npy ll_guided_direct.npy 1e-7 labels.npy 2.5 ||
  fail "loglik of a guided field vs closed form"
ok "loglik --guidance-file --divergence hutchinson" "$tool" loglik \
  --model conditional.safetensors --data guided_file.npy --out ll_guided_file_direct.npy \
  "${conditions[@]}" --guidance-file weights.npy --divergence hutchinson "${tight[@]}"
"$check" loglik conditional.safetensors guided_file.npy ll_guided_file_direct.npy 1e-7 \
  labels.npy weights.npy || fail "Hutchinson loglik of a per-sample guided field vs closed form"
ok "score --guidance --mode exact" "$tool" score --model conditional.safetensors \
  --data guided.npy --t 0.6 --mode exact --out score_guided_exact.npy "${conditions[@]}" \
  --guidance 2.5 "${tight[@]}"
"$check" exact-score conditional.safetensors guided.npy score_guided_exact.npy 1e-7 0.6 \
  labels.npy 2.5 || fail "exact score of a guided field vs closed form"
ok "score --guidance-file" "$tool" score --model conditional.safetensors \
  --data guided_file.npy --t 0.3 --out score_guided_approx.npy "${conditions[@]}" \
  --guidance-file weights.npy
"$check" approx-score conditional.safetensors guided_file.npy score_guided_approx.npy 1e-10 0.3 \
  labels.npy weights.npy || fail "approx score of a per-sample guided field vs its formula"

# --- sample --sde: stochastic sampling with the flow's marginals -----------------------------
sde_run=("$tool" sample --model linear.safetensors --noise noise.npy --step-size 0.01)
# G = 0 is the deterministic flow: Euler-Maruyama is euler, Heun is heun2, bit for bit.
for pair in euler-maruyama:euler heun:heun2; do
  ok "sample --sde sigma:0 --sde-method ${pair%%:*}" "${sde_run[@]}" --out sde_zero.npy \
    --sde sigma:0 --sde-method "${pair%%:*}"
  ok "sample --method ${pair##*:}" "${sde_run[@]}" --out ode_fixed.npy --method "${pair##*:}"
  cmp -s sde_zero.npy ode_fixed.npy || fail "--sde sigma:0 --sde-method ${pair%%:*} differs from ${pair##*:}"
done
for diffusion in constant:0.5 sigma:1 vanishing:2; do
  ok "sample --sde $diffusion --stats" "${sde_run[@]}" --out sde.npy --sde "$diffusion" \
    --sde-method heun --seed 3 --stats
  grep -q '"nfe":200,' last.out || fail "--sde heun with 100 steps: 200 evaluations: $(cat last.out)"
  "$check" shape sde.npy 64,2 || fail "--sde $diffusion writes [N, d]"
  cmp -s sde.npy ode_fixed.npy && fail "--sde $diffusion: samples equal to heun2's, no noise"
done
# The noise depends on --seed alone: not on the threads, and another seed gives other samples.
ok "sample --sde --seed 3 --threads 2" "${sde_run[@]}" --out sde_threads.npy \
  --sde vanishing:2 --sde-method heun --seed 3 --threads 2
cmp -s sde.npy sde_threads.npy || fail "--sde: 2 threads changed the samples"
ok "sample --sde --seed 4" "${sde_run[@]}" --out sde_seed.npy --sde vanishing:2 \
  --sde-method heun --seed 4
cmp -s sde.npy sde_seed.npy && fail "--sde: --seed 4 gave the samples of --seed 3"
ok "sample --sde --times --trajectory" "${sde_run[@]}" --out sde_grid.npy --sde sigma:1 \
  --times 0,0.5,1 --trajectory sde_trajectory.npy
"$check" shape sde_trajectory.npy 3,64,2 || fail "--sde trajectory shape [3, 64, 2]"
"$check" trajectory-ends sde_trajectory.npy noise.npy sde_grid.npy 0 ||
  fail "--sde trajectory endpoints"
ok "sample --sde --precision float" "${sde_run[@]}" --out sde_float.npy --sde vanishing:1 \
  --sde-method heun --precision float --stats
grep -q '"nfe":200,' last.out || fail "--sde --precision float: 200 evaluations: $(cat last.out)"
"$check" shape sde_float.npy 64,2 || fail "--sde --precision float writes [N, d]"
# Guidance weight 1 is the conditional model.
ok "sample --sde --guidance 1" "$tool" sample --model conditional.safetensors --noise noise.npy \
  --out sde_guided.npy "${conditions[@]}" --guidance 1 --sde sigma:1 --step-size 0.01
ok "sample --sde --labels" "$tool" sample --model conditional.safetensors --noise noise.npy \
  --out sde_labelled.npy "${conditions[@]}" --sde sigma:1 --step-size 0.01
cmp -s sde_guided.npy sde_labelled.npy || fail "--sde --guidance 1 differs from the conditional"
for bad in sigma:-1 sigma:x sigma constant:inf linear:1; do
  rejects "--sde $bad" none.npy "${sde_run[@]}" --out none.npy --sde "$bad"
done
grep -q 'expected one of: constant, sigma, vanishing' last.err ||
  fail "an unknown --sde profile lists the valid ones: $(cat last.err)"
rejects "--sde without --step-size" none.npy "$tool" sample --model linear.safetensors \
  --noise noise.npy --out none.npy --sde sigma:1
rejects "--sde-method milstein" none.npy "${sde_run[@]}" --out none.npy --sde sigma:1 \
  --sde-method milstein
rejects "--sde-method without --sde" none.npy "${sde_run[@]}" --out none.npy --sde-method heun
for option in "--method rk4" "--rtol 1e-3" "--tstops 0.5" "--loglik none_ll.npy" \
  "--transform-to cosine"; do
  # shellcheck disable=SC2086
  rejects "--sde with $option" none.npy "${sde_run[@]}" --out none.npy --sde sigma:1 $option
done

# --- train, info, resume --------------------------------------------------------------------
small=(--hidden 16,16 --batch 32 --seed 3)
ok "train" "$tool" train --data data.npy --out model.safetensors "${small[@]}" --steps 40
ok "info" "$tool" info --model model.safetensors
grep -qx 'dim: 2' last.out && grep -qx 'hidden: 16,16' last.out &&
  grep -qx 'cond_dim: 0' last.out || fail "info of the trained model: $(cat last.out)"
ok "train 20 steps with --checkpoint" "$tool" train --data data.npy --out half.safetensors \
  "${small[@]}" --steps 20 --checkpoint checkpoint.safetensors
ok "info on a checkpoint" "$tool" info --model checkpoint.safetensors
grep -qx 'step: 20' last.out || fail "info of the checkpoint: $(cat last.out)"
ok "train --resume to 40 steps" "$tool" train --data data.npy --out resumed.safetensors \
  "${small[@]}" --steps 40 --resume checkpoint.safetensors
cmp -s resumed.safetensors model.safetensors || fail "a resumed run differs from a direct one"
# A batch of 600 is three gradient chunks (256, 256, 88); the model must not depend on --threads.
chunked=(--data data.npy --hidden 16,16 --batch 600 --steps 10 --seed 3)
ok "train --batch 600 --threads 1" "$tool" train "${chunked[@]}" --out one_thread.safetensors \
  --threads 1
for threads in 2 3; do
  ok "train --batch 600 --threads $threads" "$tool" train "${chunked[@]}" \
    --out threaded.safetensors --threads "$threads"
  cmp -s threaded.safetensors one_thread.safetensors ||
    fail "train --threads $threads differs from --threads 1"
done
labelled=(--data data.npy --labels train_labels.npy --num-classes 3 --hidden 8 --batch 300
  --steps 5 --precision float)
ok "train --labels --precision float --threads 1" "$tool" train "${labelled[@]}" \
  --out labelled_one_thread.safetensors --threads 1
ok "train --labels --precision float --threads 2" "$tool" train "${labelled[@]}" \
  --out labelled_threaded.safetensors --threads 2
cmp -s labelled_threaded.safetensors labelled_one_thread.safetensors ||
  fail "conditional float train --threads 2 differs from --threads 1"
ok "sample from the trained model" "$tool" sample --model model.safetensors --noise many.npy \
  --out trained_samples.npy --threads 1 "${tight[@]}"
ok "sample with --threads 2" "$tool" sample --model model.safetensors --noise many.npy \
  --out trained_samples_2.npy --threads 2 "${tight[@]}"
cmp -s trained_samples.npy trained_samples_2.npy || fail "results depend on --threads"
ok "encode from the trained model" "$tool" encode --model model.safetensors \
  --data trained_samples.npy --out trained_noise.npy "${tight[@]}" --threads 2
"$check" close trained_noise.npy many.npy 1e-6 || fail "round trip through the trained model"
ok "sample --loglik vs loglik on the trained model" "$tool" sample --model model.safetensors \
  --noise noise.npy --out trained_x1.npy --loglik trained_ll_sample.npy "${tight[@]}"
ok "loglik on the trained model" "$tool" loglik --model model.safetensors \
  --data trained_x1.npy --out trained_ll.npy "${tight[@]}"
"$check" close trained_ll.npy trained_ll_sample.npy 1e-6 || fail "trained model log-densities"
# The exact score at t = 1 is the gradient of the log-likelihood.
ok "score --mode exact on the trained model" "$tool" score --model model.safetensors \
  --data trained_x1.npy --t 1 --mode exact --out trained_score.npy "${tight[@]}"
for i in 0 1; do
  "$check" shift trained_x1.npy plus.npy "$i" 1e-3
  "$check" shift trained_x1.npy minus.npy "$i" -1e-3
  ok "loglik at x + h e_$i" "$tool" loglik --model model.safetensors --data plus.npy \
    --out ll_plus.npy "${tight[@]}"
  ok "loglik at x - h e_$i" "$tool" loglik --model model.safetensors --data minus.npy \
    --out ll_minus.npy "${tight[@]}"
  "$check" central-difference trained_score.npy "$i" ll_plus.npy ll_minus.npy 1e-3 1e-4 ||
    fail "exact score component $i vs central differences of loglik"
done
for coupling in ot "sinkhorn --sigma 0.1"; do
  # shellcheck disable=SC2086
  ok "train --coupling $coupling" "$tool" train --data data.npy --out coupled.safetensors \
    --hidden 8 --batch 16 --steps 5 --coupling $coupling
done
# A Sinkhorn coupling cut short says so once, with the marginal error it reached, and the
# progress line counts such couplings.
ok "train --coupling sinkhorn --sinkhorn-iterations 2" "$tool" train --data data.npy \
  --out coupled.safetensors --hidden 8 --batch 16 --steps 3 --coupling sinkhorn --sigma 0.1 \
  --sinkhorn-iterations 2
[ "$(grep -c 'warning: step 1: the Sinkhorn coupling stopped after 2 iterations with marginal error' last.err)" -eq 1 ] &&
  grep -q '(3 unconverged couplings)' last.err ||
  fail "an unconverged Sinkhorn coupling is not reported: $(cat last.err)"
rejects "negative --sinkhorn-tolerance" out.safetensors "$tool" train --data data.npy \
  --out out.safetensors --coupling sinkhorn --sigma 0.1 --sinkhorn-tolerance -1
ok "train --labels --precision float" "$tool" train --data data.npy \
  --out labelled_model.safetensors --labels train_labels.npy --num-classes 3 --hidden 8 \
  --batch 16 --steps 5 --precision float --activation tanh
ok "info on the conditional model" "$tool" info --model labelled_model.safetensors
grep -qx 'cond_dim: 3' last.out && grep -qx 'activation: tanh' last.out ||
  fail "info of the conditional model: $(cat last.out)"

# --- discrete train, sample, elbo on token files -----------------------------------------------
"$check" tokens tokens.npy 300 4 0
"$check" tokens test_tokens.npy 20 4 1
"$check" tokens large_tokens.npy 20 4 4 5
"$check" tokens short_tokens.npy 20 3 0
"$check" shape tokens.npy 300,4 || fail "the token file's shape"
tiny=(--hidden 16 --batch 32 --steps 30 --seed 5)
ok "discrete train (masked source)" "$tool" discrete train --data tokens.npy --vocab 3 \
  --out discrete.safetensors "${tiny[@]}"
ok "discrete train (uniform source, cosine, cross-entropy)" "$tool" discrete train \
  --data tokens.npy --vocab 3 --source uniform --scheduler cosine --loss cross-entropy \
  --out uniform.safetensors "${tiny[@]}"
grep -q '^step 30/30' last.err || fail "discrete train's progress line: $(cat last.err)"
ok "discrete sample with --stats" "$tool" discrete sample --model discrete.safetensors \
  --num-samples 50 --steps 20 --seed 1 --out tokens_sampled.npy --stats &&
  for key in steps evaluations jumps; do
    grep -q "\"$key\":[0-9]" last.out || fail "--stats lacks \"$key\": $(cat last.out)"
  done
grep -q '"steps":20' last.out || fail "discrete sample --steps 20: $(cat last.out)"
"$check" shape tokens_sampled.npy 50,4 && "$check" tokens-in tokens_sampled.npy 3 ||
  fail "discrete samples: [50, 4] int64 tokens in [0, 3)"
ok "discrete sample again with the same seed" "$tool" discrete sample \
  --model discrete.safetensors --num-samples 50 --steps 20 --seed 1 --out tokens_again.npy
cmp -s tokens_sampled.npy tokens_again.npy || fail "discrete sample is not reproducible"
ok "discrete sample with another seed" "$tool" discrete sample --model discrete.safetensors \
  --num-samples 50 --step-size 0.05 --seed 2 --out tokens_other.npy
cmp -s tokens_sampled.npy tokens_other.npy && fail "another --seed gave the same samples"
ok "discrete sample with the corrector" "$tool" discrete sample --model uniform.safetensors \
  --num-samples 10 --eta 0.5 --seed 3 --out corrected_sampled.npy
"$check" shape corrected_sampled.npy 10,4 && "$check" tokens-in corrected_sampled.npy 3 ||
  fail "corrected samples: [10, 4] tokens in [0, 3)"
ok "discrete sample (uniform source)" "$tool" discrete sample --model uniform.safetensors \
  --num-samples 10 --out uniform_sampled.npy
"$check" tokens-in uniform_sampled.npy 3 || fail "uniform-source samples in [0, 3)"
ok "discrete elbo with --stats" "$tool" discrete elbo --model discrete.safetensors \
  --data test_tokens.npy --strata 8 --seed 4 --out elbo.npy --stats &&
  grep -q '"bits_per_token":' last.out || fail "discrete elbo --stats: $(cat last.out)"
"$check" shape elbo.npy 20 && "$check" float64 elbo.npy || fail "elbo: [20] float64"
ok "discrete elbo again with the same seed" "$tool" discrete elbo \
  --model discrete.safetensors --data test_tokens.npy --strata 8 --seed 4 --out elbo_again.npy
cmp -s elbo.npy elbo_again.npy || fail "discrete elbo is not reproducible"
ok "discrete train again with the same seed" "$tool" discrete train --data tokens.npy \
  --vocab 3 --out discrete_again.safetensors "${tiny[@]}"
cmp -s discrete.safetensors discrete_again.safetensors || fail "discrete train is not reproducible"
# Labelled sequences (n mod 3 − 1: classes 0 and 1, and −1 for none): a conditional model,
# sampled with predictor-free guidance.
"$check" labels token_labels.npy 300 2
ok "discrete train --labels --label-dropout" "$tool" discrete train --data tokens.npy --vocab 3 \
  --labels token_labels.npy --label-dropout 0.2 --out labelled_discrete.safetensors "${tiny[@]}"
ok "info on the labelled discrete model" "$tool" info --model labelled_discrete.safetensors
grep -qx 'cond_dim: 3' last.out || fail "the labelled discrete model's cond_dim: $(cat last.out)"
ok "discrete sample --label --guidance --stats" "$tool" discrete sample \
  --model labelled_discrete.safetensors --num-samples 40 --steps 10 --label 1 --guidance 2 \
  --seed 6 --out guided_tokens.npy --stats
grep -q '"evaluations":10' last.out || fail "one stacked evaluation per step: $(cat last.out)"
"$check" shape guided_tokens.npy 40,4 && "$check" tokens-in guided_tokens.npy 3 ||
  fail "guided samples: [40, 4] tokens in [0, 3)"
ok "discrete sample --label --guidance again" "$tool" discrete sample \
  --model labelled_discrete.safetensors --num-samples 40 --steps 10 --label 1 --guidance 2 \
  --seed 6 --out guided_again.npy
cmp -s guided_tokens.npy guided_again.npy || fail "guided discrete sampling is not reproducible"
ok "discrete sample --label 0 --guidance 2" "$tool" discrete sample \
  --model labelled_discrete.safetensors --num-samples 40 --steps 10 --label 0 --guidance 2 \
  --seed 6 --out guided_other.npy
cmp -s guided_tokens.npy guided_other.npy && fail "another --label gave the same samples"
ok "discrete sample of the labelled model without --label" "$tool" discrete sample \
  --model labelled_discrete.safetensors --num-samples 40 --steps 10 --out unguided_tokens.npy

# --- manifolds: --manifold, --num-samples, --project ----------------------------------------
"$check" model flow3.safetensors 3 1
# On a torus a field of the angles is continuous only if it agrees at -pi and pi: these two
# do not depend on x.
"$check" model flow2.safetensors 2 1 0
"$check" model flow4.safetensors 4 1 0
"$check" model still3.safetensors 3 0
ok "sample --manifold sphere --num-samples" "$tool" sample --model flow3.safetensors \
  --manifold sphere --num-samples 50 --seed 7 --out sphere_x1.npy --stats
grep -q '"accepted":100,' last.out || fail "sphere: rk4 at the default step 0.01: $(cat last.out)"
"$check" shape sphere_x1.npy 50,3 || fail "sphere samples have shape [50, 3]"
"$check" unit-rows sphere_x1.npy 1e-12 || fail "sphere samples are unit vectors"
ok "sample --manifold sphere again with the same --seed" "$tool" sample \
  --model flow3.safetensors --manifold sphere --num-samples 50 --seed 7 --out sphere_again.npy
cmp -s sphere_x1.npy sphere_again.npy || fail "the same --seed draws the same samples"
ok "encode --manifold sphere" "$tool" encode --model flow3.safetensors --manifold sphere \
  --data sphere_x1.npy --out sphere_x0.npy
ok "sample the encoded points" "$tool" sample --model flow3.safetensors --manifold sphere \
  --noise sphere_x0.npy --out sphere_round.npy
"$check" close sphere_round.npy sphere_x1.npy 1e-7 || fail "sphere: sample(encode(x)) = x"
ok "sample --manifold torus" "$tool" sample --model flow2.safetensors --manifold torus \
  --num-samples 200 --seed 3 --out torus_x1.npy
"$check" in-range torus_x1.npy -3.141592653589793 3.141592653589793 ||
  fail "torus samples are angles in [-pi, pi)"
ok "encode --manifold torus" "$tool" encode --model flow2.safetensors --manifold torus \
  --data torus_x1.npy --out torus_x0.npy
"$check" in-range torus_x0.npy -3.141592653589793 3.141592653589793 ||
  fail "encoded torus points are angles in [-pi, pi)"
ok "sample the encoded torus points" "$tool" sample --model flow2.safetensors \
  --manifold torus --noise torus_x0.npy --out torus_round.npy --method midpoint \
  --step-size 0.001 --stepping exponential
"$check" close torus_round.npy torus_x1.npy 1e-7 || fail "torus: sample(encode(x)) = x"
product=product:sphere,torus
ok "sample --manifold $product" "$tool" sample --model flow4.safetensors --manifold "$product" \
  --num-samples 50 --seed 5 --out product_x1.npy
"$check" unit-rows product_x1.npy 1e-12 0 3 || fail "the sphere factor holds unit vectors"
"$check" in-range product_x1.npy -3.141592653589793 3.141592653589793 3 1 ||
  fail "the torus factor holds angles in [-pi, pi)"
ok "encode --manifold $product" "$tool" encode --model flow4.safetensors --manifold "$product" \
  --data product_x1.npy --out product_x0.npy
ok "sample the encoded product points" "$tool" sample --model flow4.safetensors \
  --manifold "$product" --noise product_x0.npy --out product_round.npy
"$check" close product_round.npy product_x1.npy 1e-7 || fail "product: sample(encode(x)) = x"
# A zero velocity keeps the uniform base: log p = -log 4 pi on S^2.
ok "loglik --manifold sphere of a zero-velocity model" "$tool" loglik \
  --model still3.safetensors --manifold sphere --data sphere_x1.npy --out sphere_ll.npy --stats
"$check" constant sphere_ll.npy -2.5310242469692907 1e-14 || fail "loglik on S^2 is -log(4 pi)"
ok "loglik --manifold sphere" "$tool" loglik --model flow3.safetensors --manifold sphere \
  --data sphere_x1.npy --out sphere_ll.npy --stats
grep -q '"nfe":400,' last.out || fail "sphere loglik: 100 rk4 steps, 4 evaluations each: $(cat last.out)"
# Hutchinson's estimate is unbiased: its log-likelihoods differ from the exact ones by a mean
# within five standard errors of zero (the field's Jacobian is not diagonal in the tangent
# basis, so the probes do vary the estimate).
ok "loglik --manifold sphere --divergence hutchinson" "$tool" loglik \
  --model flow3.safetensors --manifold sphere --data sphere_x1.npy --out sphere_ll_hutch.npy \
  --divergence hutchinson --probes 2 --seed 11 --stats
grep -q '"nfe":400,' last.out || fail "Hutchinson loglik: 400 evaluations: $(cat last.out)"
"$check" unbiased sphere_ll_hutch.npy sphere_ll.npy 5 || fail "Hutchinson on S^2 against exact"
ok "loglik --manifold sphere --divergence hutchinson again" "$tool" loglik \
  --model flow3.safetensors --manifold sphere --data sphere_x1.npy --out sphere_ll_again.npy \
  --divergence hutchinson --probes 2 --seed 11
cmp -s sphere_ll_hutch.npy sphere_ll_again.npy || fail "the same --seed gives the same probes"
rejects "--probes 0 on a manifold" none.npy "$tool" loglik --model flow3.safetensors \
  --manifold sphere --data sphere_x1.npy --out none.npy --divergence hutchinson --probes 0
grep -q -- '--probes' last.err || fail "the message names --probes: $(cat last.err)"
rejects "an unknown --divergence on a manifold" none.npy "$tool" loglik \
  --model flow3.safetensors --manifold sphere --data sphere_x1.npy --out none.npy \
  --divergence trace
grep -q -- '--divergence' last.err || fail "the message names --divergence: $(cat last.err)"
# A field that does not depend on x has a zero ambient Jacobian: Hutchinson's tangential trace
# is zero as the exact one, so the two agree to rounding on a product too.
ok "loglik --manifold $product" "$tool" loglik --model flow4.safetensors --manifold "$product" \
  --data product_x1.npy --out product_ll.npy
ok "loglik --manifold $product --divergence hutchinson" "$tool" loglik \
  --model flow4.safetensors --manifold "$product" --data product_x1.npy \
  --out product_ll_hutch.npy --divergence hutchinson --probes 3 --seed 4
"$check" close product_ll_hutch.npy product_ll.npy 1e-12 || fail "Hutchinson on a product"
"$check" normal off_sphere.npy 10 3 1
rejects "points off the sphere" off_ll.npy "$tool" loglik --model still3.safetensors \
  --manifold sphere --data off_sphere.npy --out off_ll.npy
grep -q 'from the manifold sphere, beyond the tolerance' last.err ||
  fail "the message names the manifold and the tolerance: $(cat last.err)"
ok "loglik --project" "$tool" loglik --model still3.safetensors --manifold sphere \
  --data off_sphere.npy --out off_ll.npy --project
"$check" constant off_ll.npy -2.5310242469692907 1e-14 || fail "projected points on S^2"
"$check" normal off_torus.npy 4 2 1 5
rejects "angles outside [-pi, pi)" off_x0.npy "$tool" encode --model flow2.safetensors \
  --manifold torus --data off_torus.npy --out off_x0.npy
ok "encode --project of angles outside [-pi, pi)" "$tool" encode --model flow2.safetensors \
  --manifold torus --data off_torus.npy --out off_x0.npy --project
rejects "an adaptive method on a manifold" none.npy "$tool" sample --model flow3.safetensors \
  --manifold sphere --num-samples 5 --method dopri5 --out none.npy
rejects "--rtol on a manifold" none.npy "$tool" sample --model flow3.safetensors \
  --manifold sphere --num-samples 5 --rtol 1e-6 --out none.npy
rejects "a sphere of the wrong dimension" none.npy "$tool" sample --model flow3.safetensors \
  --manifold product:sphere,torus --num-samples 5 --out none.npy
rejects "an unknown manifold" none.npy "$tool" sample --model flow3.safetensors \
  --manifold klein --num-samples 5 --out none.npy
rejects "sample without --noise or --num-samples" none.npy "$tool" sample \
  --model flow3.safetensors --out none.npy
"$check" normal sphere_raw.npy 200 3 4 2
rejects "train on points off the sphere" sphere_model.safetensors "$tool" train \
  --manifold sphere --data sphere_raw.npy --out sphere_model.safetensors --steps 5
ok "train --manifold sphere --project" "$tool" train --manifold sphere --project \
  --data sphere_raw.npy --out sphere_model.safetensors --hidden 16,16 --steps 30 --batch 64
ok "info of the sphere model" "$tool" info --model sphere_model.safetensors &&
  grep -qx 'manifold: sphere' last.out || fail "info shows the manifold: $(cat last.out)"
ok "sample the trained model (its manifold from the file)" "$tool" sample \
  --model sphere_model.safetensors --num-samples 20 --seed 2 --out sphere_trained.npy
"$check" unit-rows sphere_trained.npy 1e-12 || fail "samples of the trained model on S^2"
ok "loglik of the trained model" "$tool" loglik --model sphere_model.safetensors \
  --data sphere_trained.npy --out sphere_trained_ll.npy
rejects "score of a model trained on a manifold" none.npy "$tool" score \
  --model sphere_model.safetensors --data sphere_trained.npy --t 0.5 --out none.npy
ok "sample --precision float on the sphere" "$tool" sample --model sphere_model.safetensors \
  --num-samples 20 --seed 2 --out sphere_float.npy --precision float
"$check" unit-rows sphere_float.npy 1e-6 || fail "float samples on S^2"
rejects "--manifold other than the model file's" none.npy "$tool" sample \
  --model sphere_model.safetensors --manifold torus --num-samples 5 --out none.npy
grep -q 'disagrees with the model' last.err || fail "the message names the disagreement"
rejects "train --manifold with --coupling ot" none.safetensors "$tool" train --manifold sphere \
  --project --data sphere_raw.npy --out none.safetensors --coupling ot --steps 5
# A model trained on S^2 by PyTorch (tests/interop/make_manifold_fixture.py): the file's
# metadata names the sphere, and the projected solves reproduce PyTorch's float64 ones (the
# tolerance is that of test_manifold_interop.cpp, from the number of evaluations).
sphere_torch=$data/sphere_torch
ok "info of a PyTorch model trained on S^2" "$tool" info \
  --model "$sphere_torch/model.safetensors" &&
  grep -qx 'manifold: sphere' last.out || fail "info shows its manifold: $(cat last.out)"
for solve in euler:0.05:20 rk4:0.1:10; do
  IFS=: read -r method step steps <<< "$solve"
  ok "sample a PyTorch model on S^2 ($method, its manifold from the file)" "$tool" sample \
    --model "$sphere_torch/model.safetensors" --noise "$sphere_torch/x0.npy" --method "$method" \
    --step-size "$step" --out "torch_$method.npy" --stats
  grep -q "\"accepted\":$steps," last.out || fail "$method: $steps steps of $step: $(cat last.out)"
  "$check" close "torch_$method.npy" "$sphere_torch/${method}_h$step.npy" 1e-10 ||
    fail "$method on S^2 against PyTorch"
  "$check" unit-rows "torch_$method.npy" 1e-15 || fail "$method: PyTorch model samples on S^2"
done
rejects "--manifold torus for the PyTorch model trained on S^2" none.npy "$tool" sample \
  --model "$sphere_torch/model.safetensors" --noise "$sphere_torch/x0.npy" --out none.npy \
  --manifold torus
ok "sample --num-samples in R^d" "$tool" sample --model linear.safetensors --num-samples 20 \
  --seed 1 --out euclidean.npy
"$check" shape euclidean.npy 20,2 || fail "euclidean samples have shape [20, 2]"

# --- error paths ----------------------------------------------------------------------------
printf 'not an npy file' > corrupt.npy
head -c 40 linear.safetensors > corrupt.safetensors
"$check" normal points3.npy 10 3 1
"$check" vector short_weights.npy 1,2,3
sample=("$tool" sample --model linear.safetensors --noise noise.npy --out out.npy)
rejects "no subcommand" out.npy "$tool"
rejects "unknown option" out.npy "${sample[@]}" --bogus
rejects "missing model file" out.npy "$tool" sample --model missing.safetensors \
  --noise noise.npy --out out.npy
rejects "missing noise file" out.npy "$tool" sample --model linear.safetensors \
  --noise missing.npy --out out.npy
rejects "corrupt npy" out.npy "$tool" sample --model linear.safetensors --noise corrupt.npy \
  --out out.npy
rejects "corrupt safetensors" out.npy "$tool" encode --model corrupt.safetensors \
  --data x1.npy --out out.npy
rejects "points of the wrong dimension" out.npy "$tool" loglik --model linear.safetensors \
  --data points3.npy --out out.npy
rejects "unknown method" out.npy "${sample[@]}" --method leapfrog
rejects "negative tolerance" out.npy "${sample[@]}" --rtol -1
rejects "--step-size with an adaptive method" out.npy "${sample[@]}" --step-size 0.1
rejects "--rtol with a fixed-step method" out.npy "${sample[@]}" --method rk4 --rtol 1e-3
rejects "too many fixed steps" out.npy "${sample[@]}" --method euler --step-size 1e-9
rejects "decreasing --times when sampling" out.npy "${sample[@]}" --times 1,0 \
  --trajectory traj_out.npy
rejects "--times outside [0, 1]" out.npy "${sample[@]}" --times 0,2
rejects "unknown scheduler" out.npy "${sample[@]}" --transform-to zigzag
rejects "--loglik with --transform-to vp" out.npy "${sample[@]}" --transform-to vp \
  --loglik ll_out.npy
rejects "bad polynomial exponent" out.npy "${sample[@]}" --transform-to poly:x
rejects "invalid precision" out.npy "${sample[@]}" --precision half
rejects "zero threads" out.npy "${sample[@]}" --threads 0
rejects "zero training threads" out.npy "$tool" train --data data.npy --out out.npy --threads 0
rejects "unknown activation" out.npy "${sample[@]}" --activation swish2
rejects "guidance on an unconditional model" out.npy "${sample[@]}" --guidance 2
rejects "conditions on an unconditional model" out.npy "${sample[@]}" "${conditions[@]}"
rejects "conditional model without conditions" out.npy "$tool" sample \
  --model conditional.safetensors --noise noise.npy --out out.npy
rejects "labels outside the classes" out.npy "$tool" sample --model conditional.safetensors \
  --noise noise.npy --out out.npy --labels labels.npy --num-classes 2
rejects "--labels without --num-classes" out.npy "$tool" sample \
  --model conditional.safetensors --noise noise.npy --out out.npy --labels labels.npy
rejects "float labels" out.npy "$tool" sample --model conditional.safetensors \
  --noise noise.npy --out out.npy --labels noise.npy --num-classes 3
rejects "guidance file of the wrong length" out.npy "$tool" sample \
  --model conditional.safetensors --noise noise.npy --out out.npy "${conditions[@]}" \
  --guidance-file short_weights.npy
rejects "unknown divergence" out.npy "$tool" loglik --model linear.safetensors --data x1.npy \
  --out out.npy --divergence guess
rejects "zero probes" out.npy "$tool" loglik --model linear.safetensors --data x1.npy \
  --out out.npy --divergence hutchinson --probes 0
rejects "score time outside [0, 1]" out.npy "$tool" score --model linear.safetensors \
  --data x1.npy --t 1.5 --out out.npy
rejects "approx score at t = 1" out.npy "$tool" score --model linear.safetensors \
  --data x1.npy --t 1 --out out.npy
rejects "--trajectory with the approximate score" out.npy "$tool" score \
  --model linear.safetensors --data x1.npy --t 0.5 --out out.npy --times 0.5,0 \
  --trajectory traj_out.npy
rejects "unknown score mode" out.npy "$tool" score --model linear.safetensors --data x1.npy \
  --t 0.5 --out out.npy --mode guess
rejects "unknown coupling" out.npy "$tool" train --data data.npy --out out.npy --coupling x
rejects "sinkhorn without sigma" out.npy "$tool" train --data data.npy --out out.npy \
  --coupling sinkhorn --steps 2
rejects "train on a corrupt file" out.npy "$tool" train --data corrupt.npy --out out.npy
rejects "resume from a missing checkpoint" out.npy "$tool" train --data data.npy \
  --out out.npy --resume missing.safetensors --hidden 16,16
rejects "resume with another network shape" out.npy "$tool" train --data data.npy \
  --out out.npy --resume checkpoint.safetensors --hidden 8 --steps 30
rejects "resume past --steps" out.npy "$tool" train --data data.npy --out out.npy \
  --resume checkpoint.safetensors "${small[@]}" --steps 10
rejects "info on a missing file" out.npy "$tool" info --model missing.safetensors
rejects "info on a corrupt file" out.npy "$tool" info --model corrupt.safetensors
rejects "discrete tokens outside the vocabulary" out.safetensors "$tool" discrete train \
  --data large_tokens.npy --vocab 3 --out out.safetensors --steps 2
grep -q 'token 4 in column 0' last.err || fail "the bad token is named: $(cat last.err)"
rejects "discrete mask token with a uniform source" out.safetensors "$tool" discrete train \
  --data tokens.npy --vocab 2 --source uniform --out out.safetensors --steps 2
grep -q 'mask token' last.err || fail "the mask token is named: $(cat last.err)"
rejects "discrete float tokens" out.safetensors "$tool" discrete train --data data.npy \
  --vocab 3 --out out.safetensors --steps 2
rejects "discrete tokens of one dimension" out.safetensors "$tool" discrete train \
  --data labels.npy --vocab 3 --out out.safetensors --steps 2
rejects "discrete elbo on tokens outside the vocabulary" out.npy "$tool" discrete elbo \
  --model discrete.safetensors --data large_tokens.npy --out out.npy
rejects "discrete elbo on sequences of another length" out.npy "$tool" discrete elbo \
  --model discrete.safetensors --data short_tokens.npy --out out.npy
rejects "discrete sample from a model without discrete metadata" out.npy "$tool" discrete \
  sample --model linear.safetensors --num-samples 4 --out out.npy
rejects "discrete elbo of a model without discrete metadata" out.npy "$tool" discrete elbo \
  --model linear.safetensors --data test_tokens.npy --out out.npy
rejects "discrete unknown scheduler" out.safetensors "$tool" discrete train --data tokens.npy \
  --vocab 3 --scheduler zigzag --out out.safetensors --steps 2
rejects "discrete negative --eta" out.npy "$tool" discrete sample \
  --model discrete.safetensors --num-samples 4 --eta -1 --out out.npy
rejects "discrete --steps with --step-size" out.npy "$tool" discrete sample \
  --model discrete.safetensors --num-samples 4 --steps 4 --step-size 0.1 --out out.npy
rejects "discrete --labels of another count" out.safetensors "$tool" discrete train \
  --data tokens.npy --vocab 3 --labels labels.npy --out out.safetensors "${tiny[@]}"
rejects "discrete --label-dropout without --labels" out.safetensors "$tool" discrete train \
  --data tokens.npy --vocab 3 --label-dropout 0.2 --out out.safetensors "${tiny[@]}"
rejects "discrete --label-dropout above 1" out.safetensors "$tool" discrete train \
  --data tokens.npy --vocab 3 --labels token_labels.npy --label-dropout 1.5 \
  --out out.safetensors "${tiny[@]}"
rejects "discrete --label beyond the classes" out.npy "$tool" discrete sample \
  --model labelled_discrete.safetensors --num-samples 4 --label 2 --out out.npy
rejects "discrete --label with an unconditional model" out.npy "$tool" discrete sample \
  --model discrete.safetensors --num-samples 4 --label 0 --out out.npy
rejects "discrete --guidance without --label" out.npy "$tool" discrete sample \
  --model labelled_discrete.safetensors --num-samples 4 --guidance 2 --out out.npy
rejects "discrete negative --guidance" out.npy "$tool" discrete sample \
  --model labelled_discrete.safetensors --num-samples 4 --label 0 --guidance -1 --out out.npy
# A failed run leaves an existing output file as it was.
cp x1.npy kept.npy
"$tool" sample --model linear.safetensors --noise corrupt.npy --out kept.npy 2> /dev/null &&
  fail "a corrupt input must fail"
cmp -s kept.npy x1.npy || fail "a failed run changed the existing output file"

finish checks
