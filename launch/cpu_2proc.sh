#!/usr/bin/env bash
# Two CPU processes (gloo), for testing the distributed path without GPUs. Note: on CPU,
# `accelerate launch --cpu --num_processes 2` starts ONE process (multi-CPU wants MPI there);
# --multi_gpu with no GPU starts two gloo processes and accelerate reports MULTI_CPU.
set -euo pipefail
exec accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no \
  --dynamo_backend no -m speechdistill distill "$@"
