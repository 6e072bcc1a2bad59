#!/usr/bin/env bash
# The acceptance commands of issues 2 to 6 (foundation, cut search, ONNX, default base, parameter transfer) on
# ../shared (hymenoptera), each with a fresh activation cache where the point is about cold runs.
# Run from the repository root: bash scripts/acceptance.sh
set -u
H=../shared/data/hymenoptera
V1=../shared/models/mobilenet_v1_1.0_224_imagenet_trunc/model.json
last() { tail -1 | cut -c1-400; }
t() { local s=$(date +%s%N); "$@"; local e=$(date +%s%N); echo "wall $(( (e - s) / 1000000 )) ms" >&2; }
export GRAFT_CACHE_DIR=$(mktemp -d)
rm -rf out/hym out/hym2 out/auto out/auto-v1
echo "== issue 2: v1 trunc, cold then warm"
t npm run -s graft -- train $H/train --val $H/val --base $V1 --input-range=-1,1 --out out/hym --json | last
t npm run -s graft -- train $H/train --val $H/val --base $V1 --input-range=-1,1 --out out/hym --json | last
echo "== issue 2: evaluate the exported model on val"
npm run -s graft -- evaluate out/hym $H/val --json | last
echo "== issue 2: bundled base, --cut block_13_expand_relu"
npm run -s graft -- train $H/train --val $H/val --base nsfw-mobilenet-v2 --cut block_13_expand_relu --out out/hym2 --json | last
echo "== issue 4: single cut vs auto, bundled base, each with a cold cache"
export GRAFT_CACHE_DIR=$(mktemp -d)
t npm run -s graft -- train $H/train --val $H/val --base nsfw-mobilenet-v2 --json | last
export GRAFT_CACHE_DIR=$(mktemp -d)
t npm run -s graft -- train $H/train --val $H/val --base nsfw-mobilenet-v2 --mode auto --out out/auto
echo "== issue 4: auto on the ImageNet MobileNet v1"
t npm run -s graft -- train $H/train --val $H/val --base $V1 --input-range=-1,1 --mode auto --out out/auto-v1
echo "== issue 5: cold and warm train with the bundled (default engine auto = onnx)"
export GRAFT_CACHE_DIR=$(mktemp -d)
t npm run -s graft -- train $H/train --val $H/val --base nsfw-mobilenet-v2 --json | last
t npm run -s graft -- train $H/train --val $H/val --base nsfw-mobilenet-v2 --json | last
echo "== issue 5: ONNX export vs graft predict on the 153 val images"
npm run -s graft -- export out/hym2 --format onnx --out out/hym2.onnx
node --import tsx scripts/check-onnx-export.ts out/hym2 out/hym2.onnx $H/val; echo "exit $?"
node --import tsx scripts/check-onnx-export.ts out/hym2 out/hym2.onnx $H/val wasm; echo "exit $?"
echo "== issue 6: default ImageNet base through a local mirror, empty caches"
export GRAFT_CACHE_DIR=$(mktemp -d)
python3 -m http.server 8799 --bind 127.0.0.1 -d ../shared/models/mirror > "$GRAFT_CACHE_DIR/server.log" 2>&1 &
SERVER=$!
sleep 1
export GRAFT_MODEL_MIRROR=http://127.0.0.1:8799/
t npm run -s graft -- train $H/train --val $H/val --base mobilenet_v2_0.35 --json | last
t npm run -s graft -- train $H/train --val $H/val --base mobilenet_v2_0.35 --json | last
t npm run -s graft -- train $H/train --val $H/val --json | last
echo "server requests:"; grep -c '"GET ' "$GRAFT_CACHE_DIR/server.log"; grep '"GET ' "$GRAFT_CACHE_DIR/server.log" | sed 's/.*"GET \([^ ]*\).*/  \1/'
kill $SERVER
unset GRAFT_MODEL_MIRROR
echo "== issue 6: no server, empty cache: the main command falls back to the bundled base and says so"
export GRAFT_CACHE_DIR=$(mktemp -d)
npm run -s graft -- train $H/train --val $H/val --model-mirror http://127.0.0.1:9/ --json | last
echo "== issue 3: MobileNet v1 with the ImageNet central crop: cut search and the cut it picks"
t npm run -s graft -- train $H/train --val $H/val --base $V1 --input-range=-1,1 --crop 0.875 --mode auto --json | last
t npm run -s graft -- train $H/train --val $H/val --base $V1 --input-range=-1,1 --crop 0.875 --cut conv_pw_12_relu --json | last
echo "== issue 3: bundled MobileNetV2: best table row, and fine-tuning from a mid-network layer against the same run without it"
t npm run -s graft -- train $H/train --val $H/val --base nsfw-mobilenet-v2 --cut block_13_expand_relu --augment none --json | last
t npm run -s graft -- train $H/train --val $H/val --base nsfw-mobilenet-v2 --cut block_13_expand_relu --json | last
t npm run -s graft -- train $H/train --val $H/val --base nsfw-mobilenet-v2 --cut block_13_expand_relu --fine-tune --unfreeze-from block_11_add --json | last
