. .venv/bin/activate
echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), flags: $(grep -m1 flags /proc/cpuinfo | tr ' ' '\n' | grep -E '^avx|^amx' | tr '\n' ' ')"
echo "# maelab bench --batch-size 64 --mask-ratio 0.75 0.0 --rounds 10 --steps 5 --warmup 2 --speedup"
maelab bench --batch-size 64 --mask-ratio 0.75 0.0 --rounds 10 --steps 5 --warmup 2 --speedup 2>&1
