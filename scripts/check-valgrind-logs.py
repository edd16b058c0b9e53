#!/usr/bin/env python3
"""Read the valgrind logs of QEMU runs (one file per process) and fail when
valgrind saw an invalid access or use of uninitialised memory anywhere, or a
leak whose allocation stack passes through this project's code (the Rust
library or the glue). QEMU's own leaks at exit (elsewhere) are counted, not failed.

    check-valgrind-logs.py LOG_DIR
"""

import os
import re
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def glue_c_files():
    """The basenames of the QEMU C files the glue patches change (not its
    qtests): valgrind names a frame's file without its directory,
    "(filter.c:123)"."""
    glue = os.path.join(REPO, "qemu-glue")
    names = set()
    for patch in os.listdir(glue):
        if patch.endswith(".patch"):
            with open(os.path.join(glue, patch), errors="replace") as f:
                for m in re.finditer(r"^\+\+\+ b/(\S+\.c)$", f.read(), re.M):
                    if not m.group(1).startswith("tests/"):
                        names.add(os.path.basename(m.group(1)))
    assert names, f"no C files in {glue}"
    return sorted(names)


# Frames that belong to this project: the library's exports and internals,
# every C file the glue touches, and the generated QAPI code of its commands.
GLUE_FILES = glue_c_files()
OURS = re.compile(
    r"qns_|qemu_netfilter_stats|[ (/](" + "|".join(re.escape(f) for f in GLUE_FILES) + r"):|"
    r"netfilter_stats|netfilter_query_stats|colo_compare_query_stats"
)
LEAK = re.compile(r"are (definitely|indirectly|possibly) lost in loss record")


def records(text):
    """Split a valgrind log into its error/leak records (blank-line separated)."""
    block = []
    for line in text.splitlines():
        body = re.sub(r"^==\d+== ?", "", line)
        if body.strip():
            block.append(body)
        elif block:
            yield block
            block = []
    if block:
        yield block


def main(log_dir):
    logs = sorted(os.path.join(log_dir, f) for f in os.listdir(log_dir))
    if not logs:
        print(f"no valgrind logs in {log_dir}: QEMU did not run under valgrind")
        return 1
    bad = 0
    foreign_leaks = 0
    for path in logs:
        with open(path, errors="replace") as f:
            text = f.read()
        if "HEAP SUMMARY" not in text:
            print(f"{path}: QEMU did not exit normally (no heap summary)")
            bad += 1
        for rec in records(text):
            head = rec[0]
            stack = "\n".join(rec)
            if head.startswith(("Invalid ", "Conditional jump", "Use of uninitialised",
                                "Syscall param", "Mismatched free", "Source and destination overlap")):
                print(f"{path}: memory error:\n  " + "\n  ".join(rec))
                bad += 1
            elif LEAK.search(head):
                if "_dl_allocate_tls" in stack:
                    # a thread's TLS block: the thread (a QIOTask's, say)
                    # is still running at exit; nobody leaked it
                    continue
                if OURS.search(stack):
                    print(f"{path}: leak from this project's code:\n  " + "\n  ".join(rec))
                    bad += 1
                elif "definitely" in head or "indirectly" in head:
                    foreign_leaks += 1
    print(f"valgrind: {len(logs)} QEMU runs, {bad} problems in this project's code "
          f"(the library, and {len(GLUE_FILES)} C files the glue changes: {' '.join(GLUE_FILES)}), "
          f"{foreign_leaks} leak records elsewhere in QEMU (not failed)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
