#!/usr/bin/env bash
# Cloud TPU VM: create, set up, copy data, run LEAML, fetch results, delete.
#
#   export PROJECT=my-project ZONE=us-central2-b TPU_NAME=leaml ACCEL=v4-8        # or:
#   export PROJECT=my-project ZONE=us-west4-a    TPU_NAME=leaml ACCEL=v5litepod-8
#   export BUCKET=gs://my-bucket                 # holds data/ (inputs) and runs/ (results)
#   launch/tpu_vm.sh create      # the VM (add SPOT=1 for a spot VM)
#   launch/tpu_vm.sh setup       # copy this repo to every worker, install Python 3.11 + deps + jax[tpu]
#   launch/tpu_vm.sh data        # copy $BUCKET/data/$DATASET to ~/data/$DATASET on every worker
#   launch/tpu_vm.sh run         # python -m leaml_jax.main --config=$CONFIG on every worker
#   launch/tpu_vm.sh fetch       # results: $BUCKET/runs/$RUN -> ./runs/$RUN
#   launch/tpu_vm.sh ssh         # a shell on worker 0
#   launch/tpu_vm.sh delete
#
# Extra arguments to `run` go to leaml_jax.main, e.g.
#   launch/tpu_vm.sh run --config.data.label_fraction=0.05 --config.force=vqa
#
# Storage. The workdir is a local folder on the VM ($HOME/runs/$RUN), synced to $BUCKET/runs/$RUN
# after every run and back before it (so a new or pre-empted VM resumes from the last stage and
# the last orbax checkpoint). It is not gs:// directly because leaml_jax.main and the stages
# write their json/jsonl artifacts with plain `open`/`os.makedirs`, which do not understand
# gs:// (only the orbax checkpoints would).
#
# Hosts. v4-8 (4 chips) and v5litepod-8 (8 chips) are ONE host: `--worker=all` is worker 0, and
# jax sees every chip as a local device. Slices with several hosts (v4-16+, v5litepod-16+) run
# the same command on every worker (`--worker=all`, below) and need
#   * jax.distributed.initialize() before any jax call. leaml_jax.main does NOT call it (as of
#     this script); `run` therefore starts main through a one-line wrapper that calls it first;
#   * a workdir every host can read (orbax writes each host's shards to the same directory):
#     gs:// support in the stages' file I/O, see above. Until then `run` refuses multi-host
#     slices (FORCE_MULTIHOST=1 overrides, with --workdir=$BUCKET/runs/$RUN).
set -euo pipefail

: "${PROJECT:?set PROJECT}" "${ZONE:?set ZONE}" "${TPU_NAME:=leaml}" "${ACCEL:=v4-8}"
CONFIG="${CONFIG:-configs/sports.py}"
DATASET="${DATASET:-sportu}"
RUN="${RUN:-sports}"
JAX_VERSION="${JAX_VERSION:-0.10.2}"   # = requirements.txt
case "$ACCEL" in
  v4-*) RUNTIME="${RUNTIME:-tpu-ubuntu2204-base}" ;;
  v5litepod-*|v5e-*) RUNTIME="${RUNTIME:-v2-alpha-tpuv5-lite}" ;;
  v5p-*) RUNTIME="${RUNTIME:-v2-alpha-tpuv5}" ;;
  *) RUNTIME="${RUNTIME:?set RUNTIME (the TPU software version) for $ACCEL}" ;;
esac
REPO_DIR="$(cd "$(dirname "$0")/.." && pwd)"
TPU=(gcloud compute tpus tpu-vm --project="$PROJECT" --zone="$ZONE")

on_all() {  # run a shell command on every worker of the slice
  "${TPU[@]}" ssh "$TPU_NAME" --worker=all --command="$1"
}

num_workers() {
  "${TPU[@]}" describe "$TPU_NAME" --format='value(networkEndpoints[].ipAddress)' | tr ';' '\n' | grep -c .
}

cmd="${1:-}"; shift || true
case "$cmd" in
  create)
    "${TPU[@]}" create "$TPU_NAME" --accelerator-type="$ACCEL" --version="$RUNTIME" \
      ${SPOT:+--spot}
    ;;

  setup)
    # The repo as a tarball of tracked files (no runs/, no caches), unpacked on every worker.
    tarball="$(mktemp -d)/leaml_jax.tar.gz"
    git -C "$REPO_DIR" archive --format=tar.gz -o "$tarball" HEAD
    "${TPU[@]}" scp "$tarball" "$TPU_NAME":leaml_jax.tar.gz --worker=all
    # The pinned requirements need Python >= 3.11; Ubuntu 22.04 images ship 3.10.
    on_all "set -e
      sudo apt-get update -q && sudo apt-get install -y -q python3.11 python3.11-venv
      rm -rf ~/leaml_jax && mkdir ~/leaml_jax && tar -xzf ~/leaml_jax.tar.gz -C ~/leaml_jax
      python3.11 -m venv ~/venv && . ~/venv/bin/activate
      pip install -q --upgrade pip
      pip install -q -r ~/leaml_jax/requirements.txt
      pip install -q 'jax[tpu]==$JAX_VERSION'
      python -c 'import jax; print(jax.process_index(), jax.local_device_count(), jax.devices()[0].device_kind)'"
    ;;

  data)
    : "${BUCKET:?set BUCKET=gs://...}"
    on_all "mkdir -p ~/data && gcloud storage cp -r '$BUCKET/data/$DATASET' ~/data/"
    ;;

  run)
    : "${BUCKET:?set BUCKET=gs://...}"
    args="--config=$CONFIG --config.data.path=\$HOME/data/$DATASET"
    for a in "$@"; do args+=" $(printf '%q' "$a")"; done
    n="$(num_workers)"
    if [ "$n" -gt 1 ]; then
      # Several hosts: the wrapper calls jax.distributed.initialize() (main does not), and the
      # workdir must be shared storage. Refused unless you know the stages write gs:// now.
      if [ -z "${FORCE_MULTIHOST:-}" ]; then
        echo "$ACCEL has $n hosts: needs gs:// file I/O in the stages (see the header);" \
             "set FORCE_MULTIHOST=1 once they have it, or use a one-host slice (v4-8, v5litepod-8)" >&2
        exit 2
      fi
      on_all ". ~/venv/bin/activate; cd ~/leaml_jax
        python -c 'import sys, jax; jax.distributed.initialize(); from leaml_jax.main import cli; sys.exit(cli(sys.argv[1:]))' \\
          $args --workdir='$BUCKET/runs/$RUN'"
      exit
    fi
    # One host: pull the previous state first (resume), push the results after, also after a failure.
    on_all "set -uo pipefail; . ~/venv/bin/activate; cd ~/leaml_jax; mkdir -p ~/runs/$RUN
      gcloud storage rsync -r '$BUCKET/runs/$RUN' ~/runs/$RUN 2>/dev/null || true
      python -m leaml_jax.main $args --workdir=\$HOME/runs/$RUN 2>&1 | tee -a ~/runs/$RUN.log; rc=\$?
      gcloud storage rsync -r ~/runs/$RUN '$BUCKET/runs/$RUN'
      gcloud storage cp ~/runs/$RUN.log '$BUCKET/runs/$RUN/log.txt'
      exit \$rc"
    ;;

  fetch)
    : "${BUCKET:?set BUCKET=gs://...}"
    mkdir -p "runs/$RUN"
    gcloud storage rsync -r "$BUCKET/runs/$RUN" "runs/$RUN"
    echo "report: runs/$RUN/report.md"
    ;;

  ssh)
    "${TPU[@]}" ssh "$TPU_NAME" --worker=0
    ;;

  delete)
    "${TPU[@]}" delete "$TPU_NAME" --quiet
    ;;

  *)
    sed -n '2,30p' "$0"
    exit 2
    ;;
esac
