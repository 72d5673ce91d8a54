#!/usr/bin/env bash
# A separate environment for the peer tool the detection benchmark compares against
# (Ultralytics): never a dependency of torchinfer. It reuses torch and torchvision from the
# project's .venv (through a .pth file) so nothing large is downloaded twice.
#
#   bash benchmarks/peer_env.sh        -> .venv-peer/bin/python can import ultralytics
set -euo pipefail
cd "$(dirname "$0")/.."
PEER=.venv-peer
ULTRALYTICS=ultralytics==8.4.190
if [ ! -x "$PEER/bin/python" ]; then
    .venv/bin/python -c "import torch" || { echo "run 'make install' first" >&2; exit 1; }
    python3 -m venv "$PEER"
    site=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    peer_site=$("$PEER/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    echo "$site" > "$peer_site/torchinfer-venv.pth"
fi
"$PEER/bin/python" -m pip install --quiet "$ULTRALYTICS"
"$PEER/bin/python" -c "import ultralytics, torch; print('ultralytics', ultralytics.__version__, 'torch', torch.__version__)"
