#!/usr/bin/env bash
# Fetch the real test videos and photos (Debian's opencv-doc examples) into tests/data/videos/.
# Needs no root: apt works on private list/cache folders and dpkg -x only unpacks.
set -euo pipefail
dest="$(cd "$(dirname "$0")/.." && pwd)/tests/data/videos"
names=(vtest.avi Megamind.avi Megamind_bugy.avi tree.avi messi5.jpg basketball1.png basketball2.png)
have=1
for n in "${names[@]}"; do [ -s "$dest/$n" ] || have=0; done
if [ "$have" = 1 ]; then echo "test videos present in $dest"; exit 0; fi
src=/usr/share/doc/opencv-doc/examples/data
mkdir -p "$dest"
if [ ! -s "$src/vtest.avi" ]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  mkdir -p "$work/lists/partial" "$work/archives/partial"
  opts=(-o "Dir::State::Lists=$work/lists" -o "Dir::Cache::Archives=$work/archives" -o "Debug::NoLocking=1")
  apt-get "${opts[@]}" -qq update
  (cd "$work" && apt-get "${opts[@]}" -qq download opencv-doc)
  dpkg -x "$work"/opencv-doc_*.deb "$work/root"
  src="$work/root/usr/share/doc/opencv-doc/examples/data"
fi
for n in "${names[@]}"; do
  if [ -s "$src/$n" ]; then cp "$src/$n" "$dest/$n"
  elif [ -s "$src/$n.gz" ]; then gunzip -c "$src/$n.gz" >"$dest/$n"
  else echo "missing $n in opencv-doc" >&2; exit 1; fi
done
ls -l "$dest"
