#!/usr/bin/env bash
# ARM cost, measured here: instructions per token of owlet (and, when given, llama.cpp) on the
# same GGUF files under qemu-aarch64, counted by the TCG plugin scripts/icount.c (the team's
# ../shared/tools/icount.c).
#
# What it does:
#   1. builds owlet for aarch64-unknown-linux-gnu (release) and owlet-convert for the host;
#   2. builds the instruction-counting plugin (scripts/icount.c) into $WORK;
#   3. writes random-weight models with the LLaMA-2 7B widths and $LAYERS decoder layers
#      (`owlet-convert synth --preset 7b --layers N --text-only`, Q4_0 and Q4_K_M; plain
#      `llama` files that both runtimes read) and, for the image path, two mPLUG-Owl2 files with
#      1 and 2 ViT-L/14-448 layers (Q8_0 vision, as the released conversions);
#   4. counts, single-threaded, whole processes under `-cpu cortex-a76` and `-cpu max`, and
#      reports per-token figures as differences of two lengths, so loading cancels out:
#        prefill/token = (I(prompt P_LONG) - I(prompt P_SHORT)) / (P_LONG - P_SHORT)
#        decode/token  = (I(D_LONG tokens) - I(D_SHORT tokens)) / (D_LONG - D_SHORT)
#        ViT layer     = I(2 ViT layers) - I(1 ViT layer)            (image encoded once)
#        image         = I(1 layer, image) - I(1 layer, --no-vision) + 23 × ViT layer
#   5. prints a markdown table and a Pi 5 estimate (see the constants below).
#
# llama.cpp is not built here (it may not be committed, nor a recipe for it): pass the
# directories of its aarch64 `llama-bench` builds, one per CPU model, e.g.
#   LLAMA_A76=/tmp/llama-a76/bin LLAMA_MAX=/tmp/llama-max/bin scripts/arm_cost.sh
# Without them the table has owlet alone and says so.
# Prefill lengths: both multiples of 16 and at least 16. Per-token prefill cost depends on the
# batch (llama.cpp's dotprod GEMM takes 16 rows at a time, 4 below that; owlet's tiles group
# rows too), so a difference like 16 - 8 mixes two regimes and under-counts (measured: 27 M
# per token for llama.cpp at 16 - 8). Decode is linear: 3 - 1 and 8 - 1 agree to 0.1 %. llama-bench runs a warm-up of the whole
# prompt before its one repetition (-r 1), so its prefill difference covers 2 × (P_LONG -
# P_SHORT) tokens; its decode warm-up is one token at position 0, equal in both lengths.
#
# A benchmark, not a test: it takes tens of minutes to hours (qemu runs a few hundred million
# guest instructions per second, and the scalar tiles need billions per token).
# Environment (defaults): WORK (target/arm-cost), CPUS ("cortex-a76 max"), TYPES ("q4_0
# q4_k_m"), LAYERS (2), P_SHORT/P_LONG (32/64), D_SHORT/D_LONG (8/16), VISION (1; 0 skips the
# image path), JOBS (nproc: processes counted at once, each single-threaded), NICE (19),
# PRESET (7b; `tiny` only checks this script quickly, with its own WORK and VISION=0),
# RESUME (0; 1 keeps the counts already in $WORK/counts, e.g. after an interrupted run or to
# add llama.cpp later: delete them after rebuilding owlet), REPORT_ONLY (0; 1 runs nothing
# and reports the counts there, a cell with no count as –), PI5_GBS (12: Pi 5 DRAM GB/s),
# A76_IPC (2), PI5_GHZ (2.4), PI5_CORES (4).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
T="$CARGO_TARGET_DIR"
WORK="${WORK:-$T/arm-cost}"
CPUS="${CPUS:-cortex-a76 max}"
TYPES="${TYPES:-q4_0 q4_k_m}"
LAYERS="${LAYERS:-2}"
P_SHORT="${P_SHORT:-32}" P_LONG="${P_LONG:-64}"
D_SHORT="${D_SHORT:-8}" D_LONG="${D_LONG:-16}"
VISION="${VISION:-1}"
PRESET="${PRESET:-7b}"
JOBS="${JOBS:-$(nproc)}"
# Pi 5 estimate constants (sources in BENCHMARKS.md, section ARM):
#   PI5_GBS: DRAM bandwidth one decode can stream, GB/s. tinymembench on a Pi 5 copies
#            5.7-6.3 GB/s, i.e. ~12 GB/s of read + write traffic (geerlingguy/sbc-reviews#21);
#            the LPDDR4X-4267 x32 bus peaks at 17 GB/s.
#   A76_IPC: retired instructions per cycle of a dense NEON kernel on Cortex-A76 (two 128-bit
#            ASIMD pipes, 4-wide decode: Arm Cortex-A76 Software Optimization Guide).
PI5_GBS="${PI5_GBS:-12}" A76_IPC="${A76_IPC:-2}" PI5_GHZ="${PI5_GHZ:-2.4}" PI5_CORES="${PI5_CORES:-4}"
SYSROOT=/usr/aarch64-linux-gnu
TARGET=aarch64-unknown-linux-gnu
mkdir -p "$WORK"

for tool in qemu-aarch64 aarch64-linux-gnu-gcc gcc; do
    command -v $tool >/dev/null || { echo "arm_cost.sh: $tool is missing (see scripts/ci/aarch64.sh)" >&2; exit 1; }
done

# 1. Builds.
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
if [[ ${REPORT_ONLY:-0} != 1 ]]; then
    cargo build -q --release --target $TARGET --bin owlet
    cargo build -q -p owlet-convert
fi
OWLET="$T/$TARGET/release/owlet"
CONVERT="$T/debug/owlet-convert"

# 2. The counter. The plugin API has been stable since qemu 4.2 (Debian bookworm has 7.2).
ICOUNT_C="${ICOUNT_C:-$root/scripts/icount.c}"
[[ -f $ICOUNT_C ]] || { echo "arm_cost.sh: no $ICOUNT_C (set ICOUNT_C to the plugin's source)" >&2; exit 1; }
PLUGIN="$WORK/libicount.so"
gcc -O2 -shared -fPIC "$ICOUNT_C" -o "$PLUGIN"

# run_count KEY CPU CMD... -> counts the guest instructions the whole process executes (one
# thread) into $WORK/counts/KEY; the process's output goes to $WORK/counts/KEY.log. Runs in
# the background, at most $JOBS at a time; a count already there is kept when RESUME=1.
mkdir -p "$WORK/counts"
run_count() {
    local key=$1 cpu=$2 c="$WORK/counts/$1"
    shift 2
    if [[ ${REPORT_ONLY:-0} == 1 || (${RESUME:-0} == 1 && -s $c) ]]; then return; fi
    rm -f "$c"
    while (($(jobs -rp | wc -l) >= JOBS)); do wait -n || true; done
    (
        RAYON_NUM_THREADS=1 OMP_NUM_THREADS=1 \
            nice -n "${NICE:-19}" qemu-aarch64 -L $SYSROOT -cpu "$cpu" -plugin "$PLUGIN,out=$c.tmp" "$@" \
            >"$c.log" 2>&1 && awk '/^insns/ {print $2}' "$c.tmp" >"$c" \
            || echo "arm_cost.sh: failed under -cpu $cpu: $* (see $c.log)" >&2
        rm -f "$c.tmp"
    ) &
}
got() { # got KEY -> the count, or 0 when that run failed
    local c="$WORK/counts/$1"
    if [[ -s $c ]]; then cat "$c"; else echo 0; fi
}

# 3. Models (kept between runs; delete $WORK to rebuild them).
model() { # model NAME ARGS... -> $WORK/NAME.gguf, made once
    local f="$WORK/$1.gguf"
    shift
    [[ -s $f ]] || "$CONVERT" synth --preset "$PRESET" "$@" -q -o "$f"
}
for t in $TYPES; do model "llama-L$LAYERS-$t" --layers "$LAYERS" --type "$t" --text-only; done
if [[ $VISION == 1 ]]; then
    for vl in 1 2; do model "owl-L1-V$vl-q4_0" --layers 1 --vision-layers $vl --type q4_0 --vision-type q8_0; done
fi

# Bytes of a file's text path (blk.* + output*), from the converter's tensor table.
layer_bytes() { "$CONVERT" inspect "$1" | awk -v L="$LAYERS" '$1 ~ /^blk\./ {s += $NF} END {printf "%.0f", s / L}'; }
out_bytes() { "$CONVERT" inspect "$1" | awk '$1 ~ /^output/ {s += $NF} END {printf "%.0f", s}'; }
llama_dir() {
    case $1 in
        cortex-a76) echo "${LLAMA_A76:-}" ;;
        max) echo "${LLAMA_MAX:-}" ;;
    esac
}

# 4. Counts: every process at once (JOBS at a time), then the differences.
for cpu in $CPUS; do
    ldir=$(llama_dir "$cpu")
    for t in $TYPES; do
        n="llama-L$LAYERS-$t" f="$WORK/llama-L$LAYERS-$t.gguf"
        ob=("$OWLET" bench -m "$f" -t 1 --bandwidth-mib 0 --json)
        run_count "owlet-$cpu-$n-p$P_LONG" "$cpu" "${ob[@]}" --prefill "$P_LONG" --decode 0
        run_count "owlet-$cpu-$n-p$P_SHORT" "$cpu" "${ob[@]}" --prefill "$P_SHORT" --decode 0
        run_count "owlet-$cpu-$n-d$D_LONG" "$cpu" "${ob[@]}" --prefill 1 --decode "$D_LONG"
        run_count "owlet-$cpu-$n-d$D_SHORT" "$cpu" "${ob[@]}" --prefill 1 --decode "$D_SHORT"
        if [[ -n $ldir && -x $ldir/llama-bench ]]; then
            lb=("$ldir/llama-bench" -m "$f" -t 1 -r 1 -o jsonl)
            run_count "llama-$cpu-$n-p$P_LONG" "$cpu" "${lb[@]}" -p "$P_LONG" -n 0
            run_count "llama-$cpu-$n-p$P_SHORT" "$cpu" "${lb[@]}" -p "$P_SHORT" -n 0
            run_count "llama-$cpu-$n-d$D_LONG" "$cpu" "${lb[@]}" -p 0 -n "$D_LONG"
            run_count "llama-$cpu-$n-d$D_SHORT" "$cpu" "${lb[@]}" -p 0 -n "$D_SHORT"
        fi
    done
    if [[ $VISION == 1 ]]; then
        for vl in 1 2; do
            run_count "owlet-$cpu-V$vl-img" "$cpu" "$OWLET" bench -m "$WORK/owl-L1-V$vl-q4_0.gguf" -t 1 \
                --bandwidth-mib 0 --json --prefill 1 --decode 0
        done
        run_count "owlet-$cpu-V1-novis" "$cpu" "$OWLET" bench -m "$WORK/owl-L1-V1-q4_0.gguf" -t 1 \
            --bandwidth-mib 0 --json --prefill 1 --decode 0 --no-vision
    fi
done
wait

per() { # per LONG_KEY SHORT_KEY N -> (I(long) - I(short)) / N, 0 when either is missing
    awk -v a="$(got "$1")" -v b="$(got "$2")" -v n="$3" 'BEGIN {printf "%.0f", (a > 0 && b > 0) ? (a - b) / n : 0}'
}
M() { awk -v x="$1" 'BEGIN {printf (x < 1e8 ? "%.1f" : "%.0f"), x / 1e6}' | sed -E ':a; s/([0-9])([0-9]{3})($|,)/\1,\2\3/; ta; s/$/ M/'; }
Ms() { if [[ $1 == 0 ]]; then echo "–"; else M "$1"; fi; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (a > 0 && b > 0) printf "%.2f×", a / b; else printf "–"}'; }
declare -A R
for cpu in $CPUS; do
    for t in $TYPES; do
        k="$cpu-llama-L$LAYERS-$t"
        R[$cpu,$t,kernel]=$(cat "$WORK/counts/owlet-$k-"*.log 2>/dev/null | sed -nE 's/.*"kernel":"([^"]+)".*/\1/p' | head -1 || true) 
        R[$cpu,$t,op]=$(per "owlet-$k-p$P_LONG" "owlet-$k-p$P_SHORT" $((P_LONG - P_SHORT)))
        R[$cpu,$t,od]=$(per "owlet-$k-d$D_LONG" "owlet-$k-d$D_SHORT" $((D_LONG - D_SHORT)))
        R[$cpu,$t,lp]=$(per "llama-$k-p$P_LONG" "llama-$k-p$P_SHORT" $((2 * (P_LONG - P_SHORT))))
        R[$cpu,$t,ld]=$(per "llama-$k-d$D_LONG" "llama-$k-d$D_SHORT" $((D_LONG - D_SHORT)))
    done
    if [[ $VISION == 1 ]]; then
        i0=$(got "owlet-$cpu-V1-novis") i1=$(got "owlet-$cpu-V1-img") i2=$(got "owlet-$cpu-V2-img")
        R[$cpu,vit]=0 R[$cpu,img]=0
        if ((i0 > 0 && i1 > 0 && i2 > 0)); then
            R[$cpu,vit]=$((i2 - i1))
            R[$cpu,img]=$((i1 - i0 + 23 * (i2 - i1)))
        fi
    fi
done

# The integer/f32 work of the image path, in multiply instructions at full 128-bit width:
# int8 products 16 MACs per sdot (32 per smmla on i8mm), f32 attention 4 MACs per fmla.
# ViT-L/14-448: 1025 tokens, width 1024, MLP 4096, 16 heads; abstractor: 64 queries attending
# to 64 + 1025 keys, 6 layers, MLP 2816 (SwiGLU), then visual_fc 1024 -> 4096 on 65 rows; the
# patch embedding (1024 patches × 588 × 1024) counts as f32 work of the abstractor's share.
work=$(awk 'BEGIN {
    n = 1025; d = 1024; ff = 4096; q = 64; kv = q + n; aff = 2816; dl = 4096
    vit_i8 = n * (4 * d * d + 2 * d * ff); vit_f32 = 2 * n * n * d
    ab_i8 = 6 * (q * d * d + 2 * kv * d * d + q * d * d + 3 * q * d * aff) + (q + 1) * d * dl
    ab_f32 = 6 * 2 * q * kv * d + 1024 * 588 * d
    printf "%.0f %.0f %.0f %.0f", vit_i8, vit_f32, ab_i8, ab_f32 }')
read -r vit_i8 vit_f32 ab_i8 ab_f32 <<<"$work"

# 5. Report.
{
    echo "ARM cost (qemu-aarch64 $(qemu-aarch64 --version | head -1 | awk '{print $3}'), 1 thread," \
        "instructions per token; model: synth preset $PRESET, $LAYERS decoder layers, random weights;" \
        "prefill $P_LONG−$P_SHORT tokens, decode $D_LONG−$D_SHORT tokens)"
    echo
    if [[ -z ${LLAMA_A76:-}${LLAMA_MAX:-} ]]; then
        echo "llama.cpp: not measured (LLAMA_A76/LLAMA_MAX not given): owlet alone."
        echo
    fi
    echo "| CPU model | type | owlet kernel | owlet prefill | llama.cpp prefill | ratio | owlet decode | llama.cpp decode | ratio |"
    echo "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
    for cpu in $CPUS; do
        for t in $TYPES; do
            op=${R[$cpu,$t,op]} od=${R[$cpu,$t,od]} lp=${R[$cpu,$t,lp]} ld=${R[$cpu,$t,ld]}
            echo "| \`$cpu\` | $t | \`${R[$cpu,$t,kernel]:-–}\` | $(Ms "$op") | $(Ms "$lp") | $(ratio "$op" "$lp") | $(Ms "$od") | $(Ms "$ld") | $(ratio "$od" "$ld") |"
        done
    done
    if [[ $VISION == 1 ]]; then
        echo
        echo "| CPU model | ViT-L/14-448 layer | its int8+f32 work at full width | ratio | image (24 layers + abstractor) | its work at full width | ratio |"
        echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
        for cpu in $CPUS; do
            per_i8=16
            [[ $cpu == max ]] && per_i8=32
            wv=$(awk -v a="$vit_i8" -v b="$vit_f32" -v p=$per_i8 'BEGIN {printf "%.0f", a / p + b / 4}')
            wi=$(awk -v a="$vit_i8" -v b="$vit_f32" -v c="$ab_i8" -v e="$ab_f32" -v p=$per_i8 \
                'BEGIN {printf "%.0f", 24 * (a / p + b / 4) + c / p + e / 4}')
            echo "| \`$cpu\` | $(Ms "${R[$cpu,vit]}") | $(M "$wv") | $(ratio "${R[$cpu,vit]}" "$wv") | $(Ms "${R[$cpu,img]}") | $(M "$wi") | $(ratio "${R[$cpu,img]}" "$wi") |"
        done
    fi

    # Pi 5 estimate: -cpu cortex-a76 counts, 7B = 32 layers. Decode counts scale by the
    # multiply-accumulates of 32 layers + output over those of $LAYERS layers + output; prefill
    # ones by 32 / $LAYERS (a prompt's output layer runs for its last position only).
    if [[ " $CPUS " == *" cortex-a76 "* && $PRESET == 7b ]]; then
        echo
        echo "**Pi 5 estimate** (not a measurement): 4 × Cortex-A76 at $PI5_GHZ GHz, IPC $A76_IPC," \
            "DRAM $PI5_GBS GB/s; 7B = 32 layers; decode = max(weight bytes ÷ bandwidth," \
            "instructions ÷ (cores × GHz × IPC)), prefill and image = instructions ÷ (cores × GHz × IPC)."
        echo
        echo "| runtime | type | prefill, tokens/s | decode: bandwidth floor, tokens/s | decode: instruction bound, tokens/s | decode estimate, tokens/s |"
        echo "| --- | --- | ---: | ---: | ---: | ---: |"
        macs_l=$((4 * 4096 * 4096 + 3 * 4096 * 11008)) macs_o=$((32000 * 4096))
        scale=$(awk -v l="$macs_l" -v o="$macs_o" -v L="$LAYERS" 'BEGIN {print (32 * l + o) / (L * l + o)}')
        pscale=$(awk -v L="$LAYERS" 'BEGIN {print 32 / L}')
        ips=$(awk -v c="$PI5_CORES" -v g="$PI5_GHZ" -v i="$A76_IPC" 'BEGIN {print c * g * 1e9 * i}')
        for t in $TYPES; do
            f="$WORK/llama-L$LAYERS-$t.gguf"
            bytes=$(awk -v l="$(layer_bytes "$f")" -v o="$(out_bytes "$f")" 'BEGIN {print 32 * l + o}')
            for who in owlet llama.cpp; do
                if [[ $who == owlet ]]; then p=${R[cortex-a76,$t,op]} d=${R[cortex-a76,$t,od]}; else p=${R[cortex-a76,$t,lp]} d=${R[cortex-a76,$t,ld]}; fi
                [[ $p == 0 && $d == 0 ]] && continue
                awk -v who="$who" -v t="$t" -v p="$p" -v d="$d" -v s="$scale" -v ps="$pscale" -v ips="$ips" \
                    -v by="$bytes" -v bw="$PI5_GBS" 'BEGIN {
                    fl = bw * 1e9 / by; pre = (p > 0) ? sprintf("%.1f", ips / (p * ps)) : "–"
                    ib = (d > 0) ? ips / (d * s) : 0; est = (d > 0 && ib < fl) ? ib : fl
                    printf "| %s | %s | %s | %.2f | %s | %s |\n", who, t, pre, fl,
                        (d > 0) ? sprintf("%.2f", ib) : "–", (d > 0) ? sprintf("%.2f", est) : "–" }'
            done
        done
        if [[ $VISION == 1 && ${R[cortex-a76,img]} != 0 ]]; then
            awk -v i="${R[cortex-a76,img]}" -v ips="$ips" 'BEGIN {
                printf "\nImage (448×448: ViT-L/14-448 + abstractor), owlet: %.1f s on 4 cores (target: under 10 s).\n", i / ips }'
        fi
    fi
} | tee "$WORK/arm_cost.md"
