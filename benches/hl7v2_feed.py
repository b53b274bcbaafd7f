#!/usr/bin/env python3
"""HL7 v2 bench feed: makes a feed of distinct messages, and drives an MLLP
listener with many synchronous senders, timing every ACK.

  hl7v2_feed.py make OUT.hl7 N          N messages from tests/fixtures/hl7v2/messages,
                                        each with its own MSH-10, MSH-7 and patient (PID-3)
  hl7v2_feed.py send HOST PORT FEED.hl7 CONNECTIONS
                                        every message of FEED over CONNECTIONS connections,
                                        each sending one message and waiting for its ACK
                                        (as interface engines do); prints msgs/s and ACK
                                        latency percentiles as one JSON line

Stdlib only, raw MLLP framing (0x0b message 0x1c 0x0d), so the sender's own
cost stays small next to the listener's.
"""
import asyncio
import json
import pathlib
import sys
import time

START, END = b"\x0b", b"\x1c\x0d"
FIXTURES = pathlib.Path(__file__).resolve().parent.parent / "tests/fixtures/hl7v2/messages"


def fixture_messages():
    """Every message of the bundled fixtures, as lists of segments."""
    messages = []
    for path in sorted(FIXTURES.glob("*.hl7")):
        text = path.read_bytes().replace(b"\xef\xbb\xbf", b"").decode("latin-1").replace("\r\n", "\r").replace("\n", "\r")
        current = []
        for segment in text.split("\r"):
            if not segment.strip():
                continue
            if segment.startswith("MSH") and current:
                messages.append(current)
                current = []
            current.append(segment)
        if current:
            messages.append(current)
    return messages


def distinct(segments, n):
    """`segments` as message number `n`: its own control id, time and patient."""
    out = []
    sep = segments[0][3]
    for segment in segments:
        fields = segment.split(sep)
        if fields[0] == "MSH":
            fields[9] = f"BENCH{n:08d}"
            fields[6] = f"2026{(n // 86400) % 12 + 1:02d}01{(n // 3600) % 24:02d}{(n // 60) % 60:02d}{n % 60:02d}"
        elif fields[0] == "PID" and len(fields) > 3:
            component = segments[0][4]
            repetition = segments[0][5]
            repetitions = fields[3].split(repetition)
            first = repetitions[0].split(component)
            first[0] = f"B{n:08d}"
            fields[3] = repetition.join([component.join(first)] + repetitions[1:])
        out.append(sep.join(fields))
    return "\r".join(out) + "\r"


def make(out, count):
    base = fixture_messages()
    with open(out, "w", encoding="latin-1", newline="") as f:
        for n in range(count):
            f.write(distinct(base[n % len(base)], n))
            f.write("\n")


def feed_messages(path):
    text = pathlib.Path(path).read_bytes().replace(b"\r\n", b"\r").replace(b"\n", b"\r")
    messages, current = [], []
    for segment in text.split(b"\r"):
        if not segment.strip():
            continue
        if segment.startswith(b"MSH") and current:
            messages.append(b"\r".join(current) + b"\r")
            current = []
        current.append(segment)
    if current:
        messages.append(b"\r".join(current) + b"\r")
    return messages


async def sender(host, port, queue, latencies, codes):
    reader, writer = await asyncio.open_connection(host, port)
    buffer = b""
    while True:
        try:
            message = queue.get_nowait()
        except asyncio.QueueEmpty:
            break
        sent = time.perf_counter()
        writer.write(START + message + END)
        await writer.drain()
        while END not in buffer:
            chunk = await reader.read(65536)
            if not chunk:
                raise SystemExit("the listener closed the connection")
            buffer += chunk
        ack, buffer = buffer.split(END, 1)
        latencies.append(time.perf_counter() - sent)
        msa = [s for s in ack.lstrip(START).split(b"\r") if s.startswith(b"MSA")]
        code = msa[0].split(b"|")[1].decode() if msa else "?"
        codes[code] = codes.get(code, 0) + 1
    writer.close()
    await writer.wait_closed()


async def send(host, port, path, connections):
    messages = feed_messages(path)
    queue = asyncio.Queue()
    for m in messages:
        queue.put_nowait(m)
    latencies, codes = [], {}
    started = time.perf_counter()
    await asyncio.gather(*(sender(host, port, queue, latencies, codes) for _ in range(connections)))
    wall = time.perf_counter() - started
    latencies.sort()

    def pct(p):
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000, 1)

    print(json.dumps({
        "messages": len(messages),
        "connections": connections,
        "wall_s": round(wall, 2),
        "messages_per_s": round(len(messages) / wall),
        "ack_ms_p50": pct(0.50),
        "ack_ms_p99": pct(0.99),
        "ack_ms_max": round(latencies[-1] * 1000, 1),
        "acks": codes,
    }))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "make":
        make(sys.argv[2], int(sys.argv[3]))
    elif len(sys.argv) == 6 and sys.argv[1] == "send":
        asyncio.run(send(sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])))
    else:
        sys.exit(__doc__)
