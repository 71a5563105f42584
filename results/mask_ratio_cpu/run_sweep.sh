set -x
. .venv/bin/activate
date -u
git rev-parse --short HEAD
lscpu | grep -E "Model name|^Flags" | sed 's/^Flags:.*/flags: &/' | cut -c1-60
grep -o -w -E "avx2|avx512f|avx512_bf16|amx_bf16|amx_tile" /proc/cpuinfo | sort -u | tr '\n' ' '; echo
maelab sweep --preset cpu --data-dir ../shared/data/cifar10 --out runs/sweep-cpu --quiet
date -u
