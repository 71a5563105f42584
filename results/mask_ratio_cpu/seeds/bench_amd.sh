# Training-step speed of every sweep ratio and of an encoder that sees every patch (0.0), on the AMD EPYC host of
# seeds 3-4, timed interleaved round by round (run right after the sweep, nothing else running).
. .venv/bin/activate
echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), family $(grep -m1 'cpu family' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //') model $(grep -m1 '^model\s' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), flags: $(grep -m1 flags /proc/cpuinfo | tr ' ' '\n' | grep -E '^avx|^amx' | tr '\n' ' ')"
echo "# maelab bench --batch-size 64 --mask-ratio 0.25 0.5 0.9 0.75 0.0 --rounds 10 --steps 5 --warmup 2 --speedup"
maelab bench --batch-size 64 --mask-ratio 0.25 0.5 0.9 0.75 0.0 --rounds 10 --steps 5 --warmup 2 --speedup 2>&1
