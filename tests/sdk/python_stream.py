#!/usr/bin/env python3
"""Stream generated audio to an AssemblyAI v3 endpoint with the official Python SDK.

Used by tests/sdk_interop.rs against the local emulator, and handy by hand:

    python tests/sdk/python_stream.py --host ws://127.0.0.1:PORT --api-key KEY
    python tests/sdk/python_stream.py --host ws://127.0.0.1:PORT --token TEMPORARY_TOKEN

The SDK is used exactly as an application would use it: StreamingClient with
StreamingClientOptions(api_host=..., api_key=... or token=...), handlers registered with
on(...), connect(StreamingParameters(...)), stream(<iterable of chunks>), then
disconnect(terminate=True).

Output: one JSON object per line on stdout. The first line describes the SDK
({"type": "sdk", ...}); then one line per event received (Begin, Turn, Termination, Error,
Warning), and a last {"type": "done", ...} line. Exit status 0 when the script ran to the
end (whatever the server answered: the caller judges the events), 2 on bad arguments.

The audio is 16 kHz mono s16le: three 300 ms 440 Hz bursts with 100 ms gaps, then 1 s of
silence (2.2 s), repeated --repeat times, sent in 50 ms chunks paced in real time like a
microphone.
"""

import argparse
import json
import math
import struct
import sys
import time

import assemblyai
from assemblyai.streaming.v3 import (
    StreamingClient,
    StreamingClientOptions,
    StreamingEvents,
    StreamingParameters,
)

SAMPLE_RATE = 16_000
CHUNK_MS = 50


def emit(obj):
    print(json.dumps(obj), flush=True)


def tone(ms):
    n = SAMPLE_RATE * ms // 1000
    return b"".join(
        struct.pack("<h", int(math.sin(2 * math.pi * 440 * i / SAMPLE_RATE) * 8000))
        for i in range(n)
    )


def silence(ms):
    return bytes(2 * SAMPLE_RATE * ms // 1000)


def pattern():
    audio = b""
    for _ in range(3):
        audio += tone(300) + silence(100)
    return audio + silence(1000)


def paced_chunks(audio):
    """Yield CHUNK_MS pieces no faster than real time (a microphone's pace)."""
    size = 2 * SAMPLE_RATE * CHUNK_MS // 1000
    start = time.monotonic()
    for index, offset in enumerate(range(0, len(audio), size)):
        due = start + index * CHUNK_MS / 1000
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        yield audio[offset : offset + size]


def on_begin(_client, event):
    emit(
        {
            "type": "Begin",
            "id": event.id,
            "expires_at": event.expires_at.isoformat(),
            "expires_at_unix": int(event.expires_at.timestamp()),
        }
    )


def on_turn(_client, event):
    emit(
        {
            "type": "Turn",
            "turn_order": event.turn_order,
            "end_of_turn": event.end_of_turn,
            "turn_is_formatted": event.turn_is_formatted,
            "transcript": event.transcript,
            "words": len(event.words),
        }
    )


def on_termination(_client, event):
    emit(
        {
            "type": "Termination",
            "audio_duration_seconds": event.audio_duration_seconds,
            "session_duration_seconds": event.session_duration_seconds,
        }
    )


def on_error(_client, error):
    emit({"type": "Error", "code": getattr(error, "code", None), "message": str(error)})


def on_warning(_client, warning):
    emit({"type": "Warning", "code": warning.warning_code, "message": warning.warning})


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--host",
        required=True,
        help="api_host for the SDK: ws://127.0.0.1:PORT (used as is), or HOST:PORT for wss://",
    )
    auth = parser.add_mutually_exclusive_group(required=True)
    auth.add_argument("--api-key", help="API key (sent in the Authorization header)")
    auth.add_argument("--token", help="temporary token (StreamingClientOptions(token=...))")
    parser.add_argument("--repeat", type=int, default=2, help="pattern repetitions (2.2 s each)")
    args = parser.parse_args()

    emit(
        {
            "type": "sdk",
            "name": "assemblyai",
            "version": assemblyai.__version__,
            "python": sys.version.split()[0],
            "auth": "token" if args.token else "api_key",
        }
    )

    if args.token:
        options = StreamingClientOptions(api_host=args.host, token=args.token)
    else:
        options = StreamingClientOptions(api_host=args.host, api_key=args.api_key)
    client = StreamingClient(options)
    client.on(StreamingEvents.Begin, on_begin)
    client.on(StreamingEvents.Turn, on_turn)
    client.on(StreamingEvents.Termination, on_termination)
    client.on(StreamingEvents.Error, on_error)
    client.on(StreamingEvents.Warning, on_warning)

    client.connect(StreamingParameters(sample_rate=SAMPLE_RATE, format_turns=True))
    try:
        client.stream(paced_chunks(pattern() * args.repeat))
    finally:
        client.disconnect(terminate=True)
    emit({"type": "done"})


if __name__ == "__main__":
    main()
