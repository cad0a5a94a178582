#!/usr/bin/env python3
"""Builds one Windows kernel driver (.sys) with the mingw-w64 cross compiler.

Each source is compiled on its own with the freestanding flags of the frontend cores (no
exceptions, RTTI, CRT or red zone); the objects are linked into a PE32+ native-subsystem image
whose entry point is DriverEntry and whose only imports come from the import libraries given;
then the PE checksum, which Windows checks for boot-start drivers, is written into the header.
A make-style depfile lists every header the sources included, so ninja rebuilds on changes.
"""
import argparse
import os
import struct
import subprocess
import sys
import tempfile

CXXFLAGS = [
    "-std=c++20", "-Wall", "-Wextra", "-Werror", "-O2",
    "-ffreestanding", "-fno-exceptions", "-fno-rtti", "-nostdlib",
    "-mgeneral-regs-only", "-mno-red-zone", "-fno-threadsafe-statics", "-fno-stack-protector",
    "-ffunction-sections", "-fdata-sections",
]
LDFLAGS = [
    "-shared", "-nostdlib",
    "-Wl,--subsystem,native", "-Wl,--entry,DriverEntry",
    "-Wl,--image-base,0x140000000", "-Wl,--dynamicbase", "-Wl,--nxcompat",
    "-Wl,--file-alignment,0x200", "-Wl,--section-alignment,0x1000",
    "-Wl,--stack,0x40000", "-Wl,--gc-sections",
    "-Wl,--major-os-version,6", "-Wl,--minor-os-version,1",
    "-Wl,--major-subsystem-version,6", "-Wl,--minor-subsystem-version,1",
]


def pe_checksum(data: bytes, checksum_offset: int) -> int:
    """The PE image checksum (as imagehlp's CheckSumMappedFile): 16-bit one's-complement-style
    sum of the file's 16-bit words with the checksum field taken as zero, plus the length."""
    total = 0
    n = len(data)
    padded = data + (b"\0" if n % 2 else b"")
    for i in range(0, len(padded), 2):
        if checksum_offset <= i < checksum_offset + 4:
            continue
        total += padded[i] | (padded[i + 1] << 8)
        total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    return (total + n) & 0xFFFFFFFF


def write_checksum(path: str) -> None:
    with open(path, "rb") as f:
        data = bytearray(f.read())
    pe = struct.unpack_from("<I", data, 0x3C)[0]
    if data[pe:pe + 4] != b"PE\0\0":
        sys.exit(f"{path}: not a PE image")
    off = pe + 4 + 20 + 64  # optional header's CheckSum field
    struct.pack_into("<I", data, off, 0)
    struct.pack_into("<I", data, off, pe_checksum(bytes(data), off))
    with open(path, "wb") as f:
        f.write(data)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cxx", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--depfile", required=True)
    ap.add_argument("-I", dest="includes", action="append", default=[])
    ap.add_argument("-L", dest="libdirs", action="append", default=[])
    ap.add_argument("-l", dest="libs", action="append", default=[])
    ap.add_argument("sources", nargs="+")
    a = ap.parse_args()

    deps = []
    with tempfile.TemporaryDirectory() as tmp:
        objs = []
        for i, src in enumerate(a.sources):
            obj = os.path.join(tmp, f"{i}_{os.path.basename(src)}.o")
            dep = obj + ".d"
            cmd = [a.cxx, *CXXFLAGS, *[f"-I{d}" for d in a.includes], "-MMD", "-MF", dep,
                   "-c", src, "-o", obj]
            if subprocess.call(cmd) != 0:
                sys.exit(1)
            objs.append(obj)
            with open(dep) as f:
                text = f.read().replace("\\\n", " ")
            deps += text.split(":", 1)[1].split()
        link = [a.cxx, *LDFLAGS, "-o", a.out, *objs, *[f"-L{d}" for d in a.libdirs],
                *[f"-l{l}" for l in a.libs], "-lgcc"]
        if subprocess.call(link) != 0:
            sys.exit(1)
    write_checksum(a.out)
    with open(a.depfile, "w") as f:
        f.write(a.out.replace(" ", "\\ ") + ": " +
                " ".join(sorted(set(d.replace(" ", "\\ ") for d in deps))) + "\n")


if __name__ == "__main__":
    main()
