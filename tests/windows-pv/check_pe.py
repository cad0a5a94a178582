#!/usr/bin/env python3
"""Checks a Windows kernel driver image the way the loader would see it, from objdump's view:
PE32+ (x86-64), native subsystem, an entry point, a valid PE checksum, and imports only from
the allowed kernel modules (ntoskrnl.exe, HAL.dll, storport.sys, ndis.sys) — no CRT, no user
mode DLL, no TLS callbacks.

usage: check_pe.py OBJDUMP IMAGE.sys ALLOWED_DLL[,ALLOWED_DLL...]
"""
import re
import struct
import subprocess
import sys


def fail(msg: str) -> None:
    print(f"FAIL: {msg}")
    sys.exit(1)


def pe_checksum(data: bytes, off: int) -> int:
    total = 0
    padded = data + (b"\0" if len(data) % 2 else b"")
    for i in range(0, len(padded), 2):
        if off <= i < off + 4:
            continue
        total += padded[i] | (padded[i + 1] << 8)
        total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    return (total + len(data)) & 0xFFFFFFFF


def main() -> None:
    objdump, image, allowed = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
    out = subprocess.run([objdump, "-p", image], capture_output=True, text=True)
    if out.returncode != 0:
        fail(f"objdump -p: {out.stderr.strip()}")
    text = out.stdout
    if not re.search(r"^Magic\s+020b\s+\(PE32\+\)", text, re.M):
        fail("not PE32+")
    if not re.search(r"file format pei-x86-64", text):
        fail("not an x86-64 image")
    if not re.search(r"^Subsystem\s+00000001\s+\(NT native\)", text, re.M):
        fail("subsystem is not native")
    entry = re.search(r"^AddressOfEntryPoint\s+([0-9a-fA-F]+)", text, re.M)
    if not entry or int(entry.group(1), 16) == 0:
        fail("no entry point")
    dlls = re.findall(r"^\s*DLL Name:\s*(\S+)", text, re.M)
    if not dlls:
        fail("no import table")
    lower_allowed = {a.lower() for a in allowed}
    for d in dlls:
        if d.lower() not in lower_allowed:
            fail(f"imports from {d} (allowed: {', '.join(allowed)})")
    if re.search(r"^Entry 9 [0-9a-f]+ [0-9a-f]*[1-9a-f][0-9a-f]* Thread Storage Directory", text, re.M):
        fail("has a TLS directory")
    with open(image, "rb") as f:
        data = f.read()
    pe = struct.unpack_from("<I", data, 0x3C)[0]
    off = pe + 4 + 20 + 64
    stored = struct.unpack_from("<I", data, off)[0]
    if stored == 0 or stored != pe_checksum(data, off):
        fail(f"PE checksum {stored:#x} is not the image's checksum")
    names = re.findall(r"^\s+[0-9a-f]+\s+\d+\s+(\S+)$", text, re.M)
    print(f"OK: {image}: PE32+ native, imports {', '.join(dlls)}: {', '.join(names)}")


if __name__ == "__main__":
    main()
