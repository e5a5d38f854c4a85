#!/usr/bin/env bash
# A fresh venv that imports torch from the PyTorch peer without being able to
# change it: its site-packages holds an overlay of the torch package (every
# entry a symlink to the peer's, except bin/, whose files are copied, so
# `shmctl torch install` swaps files in this venv only), a link to torch's
# dist-info (its RECORD), and a .pth that puts the peer's site-packages after
# its own for torch's dependencies.
#   torch-overlay-venv.sh PEER_PYTHON DEST [venv options, e.g. --without-pip]
# Prints DEST's torch package directory. Run python there with
# PYTHONDONTWRITEBYTECODE=1 so nothing is written through the symlinks.
set -euo pipefail
peer_python=$1
dest=$2
shift 2
purelib='import sysconfig; print(sysconfig.get_paths()["purelib"])'
peer_site=$("$peer_python" -c "$purelib")
peer_torch=$peer_site/torch
[ -f "$peer_torch/__init__.py" ] || { echo "no torch package in $peer_site" >&2; exit 1; }
"$peer_python" -m venv "$@" "$dest"
site=$("$dest/bin/python" -c "$purelib")
mkdir -p "$site/torch/bin"
for entry in "$peer_torch"/* "$peer_torch"/.[!.]*; do
  [ -e "$entry" ] || continue
  [ "$(basename "$entry")" = bin ] || ln -s "$entry" "$site/torch/"
done
cp -p "$peer_torch"/bin/* "$site/torch/bin/"
for info in "$peer_site"/torch-[0-9]*.dist-info; do
  ln -s "$info" "$site/"
done
echo "$peer_site" > "$site/libshm-torch-peer.pth"
echo "$site/torch"
