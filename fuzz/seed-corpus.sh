#!/usr/bin/env bash
# Fills fuzz/corpus/<target>/ with seeds decoded from the shared uwsgi-packet vectors.
#
#   fuzz/seed-corpus.sh                 # vectors from ../../shared/vectors/uwsgi-packet
#   UWSGI_PACKET_VECTORS=/path/to/dir fuzz/seed-corpus.sh
#
# The corpus is gitignored (/fuzz/corpus): the seeds are always rebuilt from the vectors.
# Re-running is harmless: seed files are overwritten, and the files libFuzzer added (named
# by their SHA-1) are kept.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
vectors="${UWSGI_PACKET_VECTORS:-$here/../../shared/vectors/uwsgi-packet}"
corpus="${FUZZ_CORPUS_DIR:-$here/corpus}"

shopt -s nullglob
hex_files=("$vectors"/*.hex)
if [ "${#hex_files[@]}" -eq 0 ]; then
    echo "seed-corpus.sh: no *.hex vectors in $vectors (set UWSGI_PACKET_VECTORS)" >&2
    exit 1
fi

# One line of lowercase hex on stdin -> raw bytes on stdout.
unhex() {
    if command -v xxd >/dev/null 2>&1; then
        xxd -r -p
    else
        python3 -c 'import sys; sys.stdout.buffer.write(bytes.fromhex(sys.stdin.read().strip()))'
    fi
}

mkdir -p "$corpus"/uwsgi_packet_{parse,stream,roundtrip,content_length}

n=0
for hex in "${hex_files[@]}"; do
    name="$(basename "$hex" .hex)"
    unhex <"$hex" >"$corpus/uwsgi_packet_parse/$name"
    # The whole vector as raw material for pairs: it exercises long inputs and the
    # key/value length arithmetic even though the bytes mean nothing to the target.
    cp "$corpus/uwsgi_packet_parse/$name" "$corpus/uwsgi_packet_roundtrip/$name"
    # uwsgi_packet_stream: the first byte is the chunk size (byte % 16 + 1), so each
    # vector is seeded three times: 1-byte, 7-byte and 16-byte chunks.
    for prefix in 00 06 0f; do
        { printf '%s' "$prefix" | unhex; cat "$corpus/uwsgi_packet_parse/$name"; } \
            >"$corpus/uwsgi_packet_stream/$name-chunk$prefix"
    done
    n=$((n + 1))
done

# uwsgi_packet_content_length takes a bare CONTENT_LENGTH value: the values the vectors'
# JSON carries (nginx sends "" on GET), m17's "5abc", and the u64 edges.
cl="$corpus/uwsgi_packet_content_length"
i=0
for json in "$vectors"/*.json; do
    while IFS= read -r value; do
        printf '%s' "$value" >"$cl/$(basename "$json" .json)-$i"
        i=$((i + 1))
    done < <(grep -o '"CONTENT_LENGTH", *"[0-9A-Za-z]*"' "$json" | sed 's/.*, *"\(.*\)"$/\1/')
done
for value in "" 0 0017 5abc -1 " 1" 18446744073709551615 18446744073709551616 99999999999999999999999; do
    printf '%s' "$value" >"$cl/literal-$i"
    i=$((i + 1))
done

echo "seed-corpus.sh: $n vectors from $vectors -> $corpus ($i content_length seeds)"

# Legion: the captured announces (the aes-128-cbc ones decrypt with the targets' key and
# pass their skew check, so they reach the membership code).
legion_vectors="${LEGION_VECTORS:-$here/../../shared/vectors/legion}"
mkdir -p "$corpus"/legion_proto_{wire_open,datagram,scenario}
m=0
for hex in "$legion_vectors"/*.hex; do
    name="$(basename "$hex" .hex)"
    unhex <"$hex" >"$corpus/legion_proto_wire_open/$name"
    cp "$corpus/legion_proto_wire_open/$name" "$corpus/legion_proto_datagram/$name"
    m=$((m + 1))
done
# The scenario target reads 8-byte records; a few hand-made runs to start from.
printf '\000\001\002\000\024\000\000\000\005\062\000\000\000\000\000\000' >"$corpus/legion_proto_scenario/seed-join-tick"
printf '\000\001\004\000\036\000\001\000\000\002\004\000\036\000\000\000\007\002\000\000\000\000\000\000' >"$corpus/legion_proto_scenario/seed-lord-leave"
echo "seeded $m legion vectors into $corpus/legion_proto_*"

# Subscriptions: the captured datagrams (01-08, 10; 09 is the notify ack text, a useful
# negative seed). `fuzzing::server` already holds the nodes of 01-04, 08 and 10, and
# `fuzzing::signed_server` verifies 05-07 with the vectors' public key, so the seeds reach
# the refresh, unsubscribe and signature paths.
subscription_vectors="${SUBSCRIPTION_VECTORS:-$here/../../shared/vectors/subscription}"
mkdir -p "$corpus"/subscription_proto_{decode,datagram,scenario}
s=0
for hex in "$subscription_vectors"/*.hex; do
    name="$(basename "$hex" .hex)"
    unhex <"$hex" >"$corpus/subscription_proto_decode/$name"
    cp "$corpus/subscription_proto_decode/$name" "$corpus/subscription_proto_datagram/$name"
    s=$((s + 1))
done
# The scenario target reads a configuration byte (algorithm = (byte & 7) % 6, 0x08 dot-split,
# 0x10 fallback key, 0x20 strict decoding), then 4-byte records (op % 8: 0-1 subscribe,
# 2 unsubscribe, 3-4 pick, 5 release, 6 tick, 7 damaged datagram). Hand-made runs:
# wrr: two nodes, held picks, unsubscribe of a referenced node, release, expiry;
# lrc with dot-split: a wildcard pool, picks of a subdomain, a failed connect;
# ketama with a fallback key: weights, picks from two clients, a damaged datagram.
printf '\000\000\000\000\002\001\000\001\003\003\000\000\003\002\000\000\000\005\000\000\000\006\310\000\000\003\000\000\000' \
    >"$corpus/subscription_proto_scenario/seed-wrr-unsubscribe-expire"
printf '\011\000\001\000\001\000\001\001\001\003\005\001\007\004\006\002\007\005\000\000\000\003\005\000\002' \
    >"$corpus/subscription_proto_scenario/seed-lrc-dotsplit-fail"
printf '\025\000\003\000\005\001\003\001\001\003\000\012\001\004\000\200\002\007\000\000\000\004\007\003\000' \
    >"$corpus/subscription_proto_scenario/seed-ketama-fallback"
echo "seeded $s subscription vectors into $corpus/subscription_proto_{decode,datagram} and 3 scenario runs"

# Zerg hand-offs: the 14 data bytes of every captured hand-off (`*.data.hex`; 0, 1, 2, 3
# and 10 fds) and the Broodlord SOS byte as a negative seed. `zerg_fdpass_frame` takes the
# bytes as they are. `zerg_fdpass_client` reads 3-byte records `[len % 16, fds % 8, flags]`
# each followed by `len` data bytes (flags: bit 0 = MSG_CTRUNC, bits 2.. = 50 ms steps), so
# each vector is seeded three ways, its fds (count % 8) on the first read: in one read, as
# magic + count (10 + 4 bytes, as uWSGI's iovec), and byte by byte.
zerg_vectors="${ZERG_VECTORS:-$here/../../shared/vectors/zerg}"
mkdir -p "$corpus"/zerg_fdpass_{frame,client}
z=0
for hex in "$zerg_vectors"/*.data.hex "$zerg_vectors"/vassal-sos.hex; do
    name="$(basename "$hex" .hex)"
    name="${name%.data}"
    unhex <"$hex" >"$corpus/zerg_fdpass_frame/$name"
    data="$(tr -d ' \n' <"$hex")"
    if [ "${#data}" -eq 28 ]; then
        fds="$(printf '%02x' $((0x${data:20:2} % 8)))"
        printf '%s' "0e${fds}00${data}" | unhex >"$corpus/zerg_fdpass_client/$name-one-read"
        printf '%s' "0a${fds}00${data:0:20}040000${data:20:8}" | unhex >"$corpus/zerg_fdpass_client/$name-magic-then-count"
        bytes="01${fds}00${data:0:2}"
        for ((i = 2; i < 28; i += 2)); do
            bytes="${bytes}010000${data:i:2}"
        done
        printf '%s' "$bytes" | unhex >"$corpus/zerg_fdpass_client/$name-byte-by-byte"
    fi
    z=$((z + 1))
done
echo "seeded $z zerg vectors into $corpus/zerg_fdpass_frame and 3 reads each into $corpus/zerg_fdpass_client"

# Emperor: `emperor_core_channel` reads a configuration byte, then 3-byte records
# `[op, a, b]` (op & 15: 0-4 channel byte, 5 EOF, 6-7 time in ms, 8-9 exit, 10 scan, 11
# event-monitor report/removal, 12 on-demand connection, 13 reload-all, 14-15 failing
# spawn / shutdown; op >> 4: flags). `session-basic` replays the captured session of
# `session-basic.tsv` (vassal bytes as raw channel bytes of the first open channel, the
# emperor's reload as a scan bumping a.ini's mtime, its stop as a scan without a.ini, with
# the time between lines); `crates/emperor-core/tests/fuzz_regressions.rs` builds the same
# input. `emperor_core_config_pipe` reads a chunk-profile byte then a config-pipe stream:
# the captured header `73 c1 00 00` with a 193-byte body, once and twice, under three
# chunk profiles.
emperor_vectors="${EMPEROR_VECTORS:-$here/../../shared/vectors/emperor}"
mkdir -p "$corpus"/emperor_core_{channel,config_pipe}
awk -F'\t' '
  /^#/ || NF < 3 { next }
  {
    ms = int($1 * 1000 + 0.5); dt = ms - last; last = ms
    printf "06%02x%02x", dt % 256, int(dt / 256)
    if ($2 == "V->E") printf "2000%02x", $3
    else if ($3 == 1) printf "0a0301"
    else if ($3 == 0) printf "0a0200"
  }
  BEGIN { printf "00" }
  END { printf "\n" }' "$emperor_vectors/session-basic.tsv" | unhex >"$corpus/emperor_core_channel/session-basic"
# Hand-made runs: a crash loop under short timers (exits, throttle, a late loyal byte);
# on-demand od.ini (scan, connection, byte 22, exit); broodlord 3 with SOS bytes and zerg
# exits; pipe.ini (byte 2, a reload); the shutdown with stubborn vassals (kills after the
# mercy).
printf '%s' "40080001060a00080001061400080001301001060004" | unhex >"$corpus/emperor_core_channel/seed-crash-loop"
printf '%s' "000a0b000c0200300204080000060010" | unhex >"$corpus/emperor_core_channel/seed-on-demand"
printf '%s' "18300006300006310006080200080300060010" | unhex >"$corpus/emperor_core_channel/seed-broodlord"
printf '%s' "000a0700300201300201" | unhex >"$corpus/emperor_core_channel/seed-pipe"
printf '%s' "011e0000060030060030080000" | unhex >"$corpus/emperor_core_channel/seed-shutdown"
header="$(grep -v '^#' "$emperor_vectors/config-pipe-header.hex" | tr -d ' \n')"
body="$(for _ in 1 2 3 4 5 6 7 8 9; do printf '[uwsgi]\nsocket = :3031\n'; done | head -c 193 | od -An -v -tx1 | tr -d ' \n')"
for profile in 00 03 06; do
    printf '%s' "$profile$header$body" | unhex >"$corpus/emperor_core_config_pipe/capture-header-$profile"
    printf '%s' "$profile$header$body$header$body" | unhex >"$corpus/emperor_core_config_pipe/capture-header-twice-$profile"
done
echo "seeded the emperor session and 5 runs into $corpus/emperor_core_channel, 6 streams into $corpus/emperor_core_config_pipe"
