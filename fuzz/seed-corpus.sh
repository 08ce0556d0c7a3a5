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
