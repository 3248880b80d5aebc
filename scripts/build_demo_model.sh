#!/usr/bin/env bash
# Rebuild the bundled demo model (model/data/demo/model.onnx + model.json) from nothing:
# a seeded synthetic AVA world, a tiny FBIL trained on it on the CPU, exported to ONNX.
# On 2 CPU cores: about 4 minutes of data, 25 of training. Needs the project installed
# (pip install -e .).
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .cache/demo
fbil-train synth --out .cache/demo/synth --seed 2 --videos 1200 --seconds 6 --val-fraction 0.1 \
  --codec mpeg4
fbil-train --config configs/demo_synth.yaml
last=$(ls .cache/demo/run/checkpoints/epoch_*.safetensors | sort | tail -n 1)
fbil-export --checkpoint "$last" --format onnx --out model/data/demo
