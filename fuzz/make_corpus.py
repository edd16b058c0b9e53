#!/usr/bin/env python3
"""Write the seed corpus of the `decoder` fuzz target.

    python3 fuzz/make_corpus.py [OUT_DIR]      (default: fuzz/corpus/decoder)

Each seed is in the layout that fuzz/fuzz_targets/decoder.rs reads:

    byte 0      bit 0 vnet_hdr; bits 1-2 max mode (0 default 69632,
                1 param % 301, 2 param, 3 u32::MAX - param); bit 3 offer
                each chunk to FrameDecoder::absorb before feed (the C ABI's
                path)
    bytes 1-2   param, u16 big-endian
    byte 3      P, length of the chunk plan
    P bytes     chunk plan, used cyclically: bit 7 = reset before the chunk;
                code (bits 0-6): 0 empty chunk, 1..64 bytes, 65..95
                (code-63)*64, 96..126 (code-95)*1024, 127 rest of the stream
    rest        the stream

The output directory is emptied of *.seed files first, so the corpus is
exactly what this script writes; names say what each seed exercises.
"""

import os
import struct
import sys

DEFAULT, SMALL, U16, HUGE = 0, 1, 2, 3
RESET = 0x80
REST = 127


def frame(payload, vnet=None, length=None):
    """One frame on the wire; `length` overrides the length field."""
    out = struct.pack(">I", len(payload) if length is None else length)
    if vnet is not None:
        out += struct.pack(">I", vnet)
    return out + bytes(payload)


def seed(stream, vnet_hdr=False, mode=DEFAULT, param=0, plan=(), absorb=False):
    plan = bytes(plan)
    assert len(plan) < 256
    flags = (1 if vnet_hdr else 0) | (mode << 1) | (8 if absorb else 0)
    return bytes([flags]) + struct.pack(">H", param) + bytes([len(plan)]) + plan + bytes(stream)


def pattern(n, start=0):
    return bytes((start + i) % 251 for i in range(n))


def seeds():

    # Valid streams.
    yield "valid-one-frame", seed(frame(b"hello"))
    yield "valid-one-frame-vnet", seed(frame(b"hello world", vnet=4), vnet_hdr=True)
    many = b"".join(frame(pattern(n, n)) for n in range(1, 20))
    many_vnet = b"".join(frame(pattern(n, n), vnet=n // 2) for n in range(1, 20))
    yield "valid-many-one-chunk", seed(many)
    yield "valid-many-one-chunk-vnet", seed(many_vnet, vnet_hdr=True)
    yield "valid-many-1byte-chunks", seed(many, plan=[1])
    yield "valid-many-1byte-chunks-vnet", seed(many_vnet, vnet_hdr=True, plan=[1])
    yield "valid-many-mixed-chunks", seed(many, plan=[3, 5, 7, 11, 64])
    yield "valid-many-mixed-chunks-vnet", seed(many_vnet, vnet_hdr=True, plan=[2, 13, 1, 40])
    yield "valid-vnet-equals-len", seed(frame(b"abcd", vnet=4) + frame(b"x", vnet=1), vnet_hdr=True)
    yield "valid-large-frame-chunked", seed(frame(pattern(3000)), plan=[65, 70, 96])
    yield "valid-large-frame-vnet-2k", seed(
        frame(pattern(2500), vnet=12) + frame(b"tail", vnet=0), vnet_hdr=True, plan=[95, 10]
    )
    yield "valid-straddle-then-whole", seed(
        frame(b"first-frame") + frame(b"second") + frame(b"third"), plan=[9, 40]
    )
    yield "valid-exact-max-small", seed(frame(pattern(100)) + frame(b"y"), mode=SMALL, param=100)
    yield "valid-max-1", seed(frame(b"a") * 5, mode=SMALL, param=1, plan=[2, 3])
    yield "valid-default-max-boundary-header", seed(
        struct.pack(">I", 69632) + pattern(200), plan=[3, 1, 64]
    )
    yield "valid-empty-chunks", seed(many, plan=[0, 4, 0, 0, 9])

    # Split headers.
    vnet_frames = frame(b"payload-one", vnet=3) + frame(b"payload-two", vnet=0)
    for k in (1, 2, 3, 5, 6, 7):
        yield f"split-header-vnet-at-{k}", seed(vnet_frames, vnet_hdr=True, plan=[k, REST])
    yield "split-header-novnet-at-2", seed(frame(b"abc") + frame(b"defg"), plan=[2, REST])
    yield "split-len-then-vnet", seed(frame(b"zz", vnet=2), vnet_hdr=True, plan=[4, 4, 2])

    # Empty frames.
    yield "empty-frame-then-valid", seed(frame(b"") + frame(b"x"))
    yield "empty-frame-vnet-nonzero", seed(frame(b"", vnet=7) + frame(b"ok", vnet=1), vnet_hdr=True)
    yield "empty-frames-1byte", seed(frame(b"") * 4 + frame(b"after"), plan=[1])
    yield "all-zero-stream", seed(bytes(64), plan=[3, 7])

    # vnet header too large.
    yield "vnet-too-large-then-valid", seed(
        frame(b"abc", vnet=4) + frame(b"next", vnet=0), vnet_hdr=True
    )
    yield "vnet-too-large-split-in-skip", seed(
        frame(b"abcdefgh", vnet=9) + frame(b"next", vnet=0), vnet_hdr=True, plan=[9, 2, REST]
    )
    yield "vnet-too-large-huge", seed(
        frame(b"q", vnet=0xFFFFFFFF) + frame(b"r", vnet=1), vnet_hdr=True, plan=[1]
    )

    # Frame too large: desynchronized until reset.
    too_big = frame(b"ok") + struct.pack(">I", 69633) + pattern(30) + frame(b"lost")
    yield "too-large-default", seed(too_big)
    yield "too-large-default-chunked", seed(too_big, plan=[5, 3, 9])
    yield "too-large-small-max", seed(frame(pattern(101)) + frame(b"z"), mode=SMALL, param=100)
    yield "too-large-max-zero", seed(frame(b"a") + frame(b"b"), mode=SMALL, param=0, plan=[3])
    yield "too-large-then-reset-valid", seed(
        struct.pack(">I", 0xFFFFFFFF) + b"junk" + frame(b"again"), plan=[8, RESET | REST]
    )
    yield "too-large-vnet", seed(
        frame(b"", vnet=0, length=0x7FFFFFFF) + frame(b"after", vnet=0), vnet_hdr=True, plan=[3]
    )
    yield "all-ff-stream", seed(b"\xff" * 48, plan=[1, 2])

    # Resets: mid-header, mid-payload, while skipping, while desynchronized.
    f = frame(b"abcdef")
    yield "reset-mid-header", seed(f[:2] + f, plan=[2, RESET | REST])
    yield "reset-mid-payload", seed(f[:7] + f, plan=[7, RESET | REST])
    yield "reset-after-header", seed(f[:4] + f, plan=[4, RESET | REST])
    yield "reset-mid-header-vnet", seed(
        frame(b"v", vnet=1)[:6] + frame(b"v", vnet=1), vnet_hdr=True, plan=[6, RESET | REST]
    )
    yield "reset-while-skipping", seed(
        frame(b"abcdef", vnet=7)[:10] + frame(b"w", vnet=0), vnet_hdr=True, plan=[10, RESET | REST]
    )
    yield "reset-while-desync", seed(
        struct.pack(">I", 500) + b"xx" + frame(b"back"), mode=SMALL, param=50, plan=[6, RESET | REST]
    )
    yield "reset-every-byte", seed(many[:40], plan=[RESET | 1])
    yield "reset-between-frames", seed(f + f + f, plan=[10, RESET | 10, RESET | 10])

    # Truncated at the end of the stream (the final reset reports it).
    yield "truncated-header-at-end", seed(f + f[:3])
    yield "truncated-payload-at-end", seed(f + f[:8], plan=[5])
    yield "truncated-vnet-header-at-end", seed(frame(b"x", vnet=1)[:7], vnet_hdr=True)

    # Huge maximum: large announced frames are accepted and never completed.
    yield "huge-max-big-announce", seed(
        struct.pack(">I", 0xFFFFFF00) + pattern(300), mode=HUGE, param=0, plan=[1, 64, 96]
    )
    yield "huge-max-u32max", seed(struct.pack(">I", 0xFFFFFFFF) + b"abc", mode=HUGE, param=0)
    yield "u16-max-valid", seed(frame(pattern(1000)) + frame(b"k"), mode=U16, param=1000, plan=[50])

    # The C ABI's path: absorb() first, feed() when it declines.
    yield "absorb-1byte-chunks", seed(many, plan=[1], absorb=True)
    yield "absorb-1byte-chunks-vnet", seed(many_vnet, vnet_hdr=True, plan=[1], absorb=True)
    yield "absorb-large-frame-chunked", seed(frame(pattern(3000)), plan=[65, 70, 96], absorb=True)
    yield "absorb-exact-rest", seed(frame(pattern(20)) + frame(b"n"), plan=[4, 10, 10, REST], absorb=True)
    yield "absorb-empty-chunks", seed(frame(pattern(30)), plan=[6, 0, 5, 0], absorb=True)
    yield "absorb-reset-mid-payload", seed(f[:7] + f[:9] + f, plan=[7, RESET | 9, RESET | REST], absorb=True)
    yield "absorb-huge-max", seed(
        struct.pack(">I", 0xFFFFFF00) + pattern(300), mode=HUGE, plan=[5, 64, 96], absorb=True
    )
    yield "absorb-skip-and-desync", seed(
        frame(b"abcdefgh", vnet=9) + frame(b"x" * 40, vnet=0) + struct.pack(">I", 90000) + b"zz",
        vnet_hdr=True, plan=[9, 1, 2, 3], absorb=True
    )

    # A vnet_hdr stream read without vnet_hdr, and the other way round.
    yield "vnet-stream-as-novnet", seed(many_vnet[:120], plan=[7])
    yield "novnet-stream-as-vnet", seed(many[:120], vnet_hdr=True, plan=[7])


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "corpus", "decoder")
    os.makedirs(out, exist_ok=True)
    for name in os.listdir(out):
        if name.endswith(".seed"):
            os.remove(os.path.join(out, name))
    names = set()
    for name, data in seeds():
        assert name not in names, name
        names.add(name)
        with open(os.path.join(out, name + ".seed"), "wb") as fh:
            fh.write(data)
    print(f"wrote {len(names)} seeds to {out}")


if __name__ == "__main__":
    main()
