#!/usr/bin/env bash
# Cloud TPU VM (one host or a multi-host slice): create, set up, copy inputs, run LEAML, watch, delete.
#
#   export PROJECT=my-project ZONE=us-central2-b TPU_NAME=leaml ACCEL=v4-16     # or v4-8, v5litepod-16, ...
#   export BUCKET=gs://my-bucket                 # data/<dataset>/ inputs, runs/<run>/ the workdir
#   launch/tpu_vm.sh create      # the TPU VM; SPOT=1 for spot capacity, QUEUED=1 for a queued resource
#   launch/tpu_vm.sh setup       # this repo (git archive HEAD) + Python 3.11 venv + deps + jax[tpu], every worker
#   launch/tpu_vm.sh data        # $BUCKET/data/$DATASET -> ~/data/$DATASET on every worker (inputs only)
#   launch/tpu_vm.sh run         # python -m leaml_jax.main on every worker, in the background
#   launch/tpu_vm.sh status      # the VM (or queued resource) state, and whether main runs on each worker
#   launch/tpu_vm.sh logs        # the last lines of the run's log on every worker (LINES=50)
#   launch/tpu_vm.sh fetch       # $BUCKET/runs/$RUN -> ./runs/$RUN (report.md, plots/)
#   launch/tpu_vm.sh ssh         # a shell on worker 0
#   launch/tpu_vm.sh delete
#   DRY_RUN=1 launch/tpu_vm.sh <command>   # print every gcloud command instead of running it
#
# Extra arguments to `run` go to leaml_jax.main, e.g.
#   launch/tpu_vm.sh run --config.data.label_fraction=0.05 --config.force=vqa
#
# Every worker runs the same command (`--worker=all`). On a multi-host slice leaml_jax.main starts
# jax.distributed by itself (Cloud TPU VM detected; no flag), `batch_size` stays the global batch,
# and the workdir is the bucket itself ($BUCKET/runs/$RUN): artifacts, metrics, reports, plots and
# orbax checkpoints are written there as they are made, so nothing needs syncing and a new or
# pre-empted VM resumes from what the bucket holds: rerun `run` with the same RUN.
#
# Pre-emption: a spot or queued-resource VM gets SIGTERM; the training stage in progress saves a
# checkpoint at its next step and main exits with status 75 (logged as "pre-empted"). Recreate the
# VM (create, setup, data) and `run` again: it resumes at that step.
set -euo pipefail

: "${PROJECT:?set PROJECT}" "${ZONE:?set ZONE}" "${TPU_NAME:=leaml}" "${ACCEL:=v4-8}"
CONFIG="${CONFIG:-configs/sports.py}"
DATASET="${DATASET:-sportu}"
RUN="${RUN:-sports}"
LINES="${LINES:-50}"
JAX_VERSION="${JAX_VERSION:-0.10.2}"   # = requirements.txt
case "$ACCEL" in
  v4-*) RUNTIME="${RUNTIME:-tpu-ubuntu2204-base}" ;;
  v5litepod-*|v5e-*) RUNTIME="${RUNTIME:-v2-alpha-tpuv5-lite}" ;;
  v5p-*) RUNTIME="${RUNTIME:-v2-alpha-tpuv5}" ;;
  *) RUNTIME="${RUNTIME:?set RUNTIME (the TPU software version) for $ACCEL}" ;;
esac
REPO_DIR="$(cd "$(dirname "$0")/.." && pwd)"
LOG="\$HOME/leaml_$RUN.log"

gc() {  # every gcloud call goes through here: DRY_RUN=1 prints it instead
  if [ -n "${DRY_RUN:-}" ]; then  # one line per call; arguments with spaces in '...'
    local out="gcloud" a
    for a in "$@"; do
      a="$(printf '%s' "$a" | tr '\n' ' ' | tr -s ' ')"  # a multi-line script on one line
      case "$a" in *[[:space:]]*) out+=" '$a'" ;; *) out+=" $a" ;; esac
    done
    printf '%s\n' "$out"
  else
    gcloud "$@"
  fi
}
TPU=(compute tpus tpu-vm --project="$PROJECT" --zone="$ZONE")
QR=(compute tpus queued-resources --project="$PROJECT" --zone="$ZONE")

on_all() {  # the same shell command on every worker of the slice
  gc "${TPU[@]}" ssh "$TPU_NAME" --worker=all --command="$1"
}

need_bucket() {
  : "${BUCKET:?set BUCKET=gs://...}"
  case "$BUCKET" in gs://*) ;; *) echo "BUCKET=$BUCKET must be a gs:// URL" >&2; exit 2 ;; esac
}

cmd="${1:-}"; shift || true
case "$cmd" in
  create)
    if [ -n "${QUEUED:-}" ]; then  # waits in the queue for capacity; the node appears when granted
      gc "${QR[@]}" create "$TPU_NAME" --node-id="$TPU_NAME" --accelerator-type="$ACCEL" \
        --runtime-version="$RUNTIME" ${SPOT:+--spot}
    else
      gc "${TPU[@]}" create "$TPU_NAME" --accelerator-type="$ACCEL" --version="$RUNTIME" ${SPOT:+--spot}
    fi
    ;;

  setup)
    # The repo as a tarball of tracked files (no runs/, no caches), unpacked on every worker.
    tarball="$(mktemp -d)/leaml_jax.tar.gz"
    [ -n "${DRY_RUN:-}" ] || git -C "$REPO_DIR" archive --format=tar.gz -o "$tarball" HEAD
    gc "${TPU[@]}" scp "$tarball" "$TPU_NAME":leaml_jax.tar.gz --worker=all
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
    need_bucket
    on_all "mkdir -p ~/data && gcloud storage cp -r '$BUCKET/data/$DATASET' ~/data/"
    ;;

  run)
    need_bucket
    args="--config=$CONFIG --config.data.path=\$HOME/data/$DATASET --config.progress=false"
    for a in "$@"; do args+=" $(printf '%q' "$a")"; done
    # Detached (nohup), so a dropped ssh session does not stop the run; `logs` shows it.
    on_all "cd ~/leaml_jax && . ~/venv/bin/activate && nohup python -m leaml_jax.main $args --workdir=$BUCKET/runs/$RUN > $LOG 2>&1 < /dev/null &"
    ;;

  status)
    if [ -n "${QUEUED:-}" ]; then
      gc "${QR[@]}" describe "$TPU_NAME" --format='value(state.state)'
    fi
    gc "${TPU[@]}" describe "$TPU_NAME" --format='value(state,health,acceleratorType)'
    on_all "pgrep -f 'python -m leaml_jax[.]main' > /dev/null && echo \"\$(hostname): running\" || echo \"\$(hostname): not running, last line: \$(tail -n 1 $LOG 2>/dev/null)\""
    ;;

  logs)
    on_all "echo \"== \$(hostname)\"; tail -n $LINES $LOG"
    ;;

  fetch)
    need_bucket
    mkdir -p "runs/$RUN"
    gc storage rsync -r "$BUCKET/runs/$RUN" "runs/$RUN"
    echo "report: runs/$RUN/report.md"
    ;;

  ssh)
    gc "${TPU[@]}" ssh "$TPU_NAME" --worker=0
    ;;

  delete)
    if [ -n "${QUEUED:-}" ]; then
      gc "${QR[@]}" delete "$TPU_NAME" --force --quiet
    else
      gc "${TPU[@]}" delete "$TPU_NAME" --quiet
    fi
    ;;

  *)
    sed -n '2,31p' "$0"
    exit 2
    ;;
esac
