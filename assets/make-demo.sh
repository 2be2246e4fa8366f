#!/usr/bin/env bash
# Regenerates the demo recording and its word script:
#   assets/demo.wav          16 kHz mono s16 speech, looped by `aai-live demo`
#   assets/demo-script.json  the emulator's word script for it (docs/emulator.md, "Scripts")
#
# Each word is synthesised on its own (espeak-ng), trimmed of silence and resampled (sox), then
# the words are joined with fixed gaps, so every word's start and end are known exactly and the
# emulator "recognises" the real words at the right times. Both outputs are committed: CI and
# users do not need espeak-ng or sox. Needs: espeak-ng, sox (soxi), awk.
set -euo pipefail
cd "$(dirname "$0")"

RATE=16000
WORD_GAP_MS=80       # between the words of a sentence (well under a turn's end silence)
SENTENCE_GAP_MS=900  # between sentences: each sentence becomes one turn
LEAD_MS=300          # silence before the first word
TAIL_MS=1500         # silence after the last word, before the loop starts again
VOICE=en-us
SPEED=155            # words per minute; a little slower than espeak's default, for clarity

SENTENCES=(
  "tokens are minted once and used once"
  "sessions rotate before they expire"
  "when a connection drops the audio is replayed"
  "no words are lost along the way"
  "this is the offline emulator on your machine"
)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

ms_to_samples() { echo $(( $1 * RATE / 1000 )); }

# silence FILE MS
silence() {
  sox -r "$RATE" -c 1 -n -b 16 -e signed-integer "$1" trim 0 "$(ms_to_samples "$2")s"
}

parts=()
n=0
cursor=0   # in samples
add_part() { parts+=("$1"); cursor=$(( cursor + $(soxi -s "$1") )); }

silence "$work/lead.wav" "$LEAD_MS"; add_part "$work/lead.wav"
silence "$work/wgap.wav" "$WORD_GAP_MS"
silence "$work/sgap.wav" "$SENTENCE_GAP_MS"
silence "$work/tail.wav" "$TAIL_MS"

turns_json=""
for s in "${!SENTENCES[@]}"; do
  words_json=""
  read -r -a words <<< "${SENTENCES[$s]}"
  for w in "${!words[@]}"; do
    word=${words[$w]}
    n=$(( n + 1 ))
    raw="$work/raw$n.wav"
    clip="$work/word$n.wav"
    espeak-ng -v "$VOICE" -s "$SPEED" -w "$raw" "$word"
    # Trim leading and trailing silence, then convert to the target format.
    sox "$raw" -r "$RATE" -c 1 -b 16 -e signed-integer "$clip" \
      silence 1 0.005 0.3% reverse silence 1 0.005 0.3% reverse
    start_ms=$(( cursor * 1000 / RATE ))
    add_part "$clip"
    end_ms=$(( cursor * 1000 / RATE ))
    [ -n "$words_json" ] && words_json+=", "
    words_json+="{ \"text\": \"$word\", \"start\": $start_ms, \"end\": $end_ms }"
    if [ "$w" -lt $(( ${#words[@]} - 1 )) ]; then add_part "$work/wgap.wav"; fi
  done
  [ -n "$turns_json" ] && turns_json+=$',\n    '
  turns_json+="{ \"words\": [ $words_json ] }"
  if [ "$s" -lt $(( ${#SENTENCES[@]} - 1 )) ]; then add_part "$work/sgap.wav"; fi
done
add_part "$work/tail.wav"

sox "${parts[@]}" -r "$RATE" -c 1 -b 16 -e signed-integer demo.wav
total=$(soxi -s demo.wav)
[ "$total" -eq "$cursor" ] || { echo "length mismatch: $total != $cursor" >&2; exit 1; }
loop_ms=$(( total * 1000 / RATE ))

cat > demo-script.json <<JSON
{ "loop_ms": $loop_ms,
  "turns": [
    $turns_json
  ] }
JSON
echo "demo.wav: $(soxi -d demo.wav), $(stat -c %s demo.wav) bytes; demo-script.json: $n words, loop_ms $loop_ms"
