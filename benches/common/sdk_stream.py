#!/usr/bin/env python3
"""Stream a 16 kHz mono 16-bit WAV file with the official AssemblyAI Python SDK (v3
StreamingClient), paced in real time in 50 ms chunks, for benches/session.rs.

    python benches/common/sdk_stream.py --host ws://127.0.0.1:PORT --api-key KEY FILE.wav

Prints one JSON line (flushed) when the session begins and one when it terminates, so the bench
can read this process's CPU time over exactly the streaming window; the interpreter's start-up
and the SDK's import happen before `Begin` and do not count.
"""

import argparse
import json
import time
import wave

from assemblyai.streaming.v3 import (
    StreamingClient,
    StreamingClientOptions,
    StreamingEvents,
    StreamingParameters,
)

CHUNK_MS = 50


def emit(obj):
    print(json.dumps(obj), flush=True)


def paced_chunks(path):
    """Yield CHUNK_MS pieces of the file no faster than real time, like a microphone."""
    with wave.open(path, "rb") as wav:
        rate = wav.getframerate()
        frames = rate * CHUNK_MS // 1000
        start = time.monotonic()
        index = 0
        while True:
            data = wav.readframes(frames)
            if not data:
                return
            index += 1
            delay = start + index * CHUNK_MS / 1000 - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            yield data


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("file")
    args = parser.parse_args()

    client = StreamingClient(StreamingClientOptions(api_host=args.host, api_key=args.api_key))
    client.on(StreamingEvents.Begin, lambda _c, e: emit({"type": "Begin", "id": e.id}))
    client.on(StreamingEvents.Termination, lambda _c, e: emit({"type": "Termination"}))
    client.on(
        StreamingEvents.Error,
        lambda _c, e: emit({"type": "Error", "message": str(e)}),
    )
    with wave.open(args.file, "rb") as wav:
        rate = wav.getframerate()
    client.connect(StreamingParameters(sample_rate=rate, format_turns=True))
    try:
        client.stream(paced_chunks(args.file))
    finally:
        client.disconnect(terminate=True)
    emit({"type": "done"})


if __name__ == "__main__":
    main()
