// PVH entry of the test guest (Xen's docs/misc/pvh.pandoc), linked only into
// pvio-guest-pvh.elf: its XEN_ELFNOTE_PHYS32_ENTRY makes pvio-hv start it in 32-bit protected
// mode with paging off and EBX = hvm_start_info, so the guest exercises the PVH boot path the
// way Mini-OS does. It builds the 4 GiB identity map pvio-hv builds for the long-mode entry
// (2 MiB pages, U/S set for the CPL3 runner), enters long mode and turns hvm_start_info into
// the BootInfo kernel_main takes.
#include <stdint.h>

#include "pvio/hv_abi/boot_info.h"
#include "pvio/xen/hvm/start_info.h"

extern "C" [[noreturn]] void kernel_main(const pvio::hv::BootInfo* info);
extern "C" char __kernel_end[];

asm(R"(
  .pushsection .note.Xen, "a", @note
  .balign 4
  .long 4, 4, 18          /* namesz "Xen\0", descsz, XEN_ELFNOTE_PHYS32_ENTRY */
  .asciz "Xen"
  .long pvh_start
  .popsection

  .text
  .code32
  .global pvh_start
pvh_start:
  cli
  cld
  mov %ebx, pvh_start_info
  /* PML4[0] -> PDPT; PDPT[0..3] -> PD 0..3; each PD entry a 2 MiB page: P|W|U|PS. */
  mov $pvh_pdpt, %eax
  or $7, %eax
  mov %eax, pvh_pml4
  xor %ecx, %ecx
1:
  mov %ecx, %eax
  shl $12, %eax
  add $pvh_pd, %eax
  or $7, %eax
  mov %eax, pvh_pdpt(,%ecx,8)
  inc %ecx
  cmp $4, %ecx
  jb 1b
  xor %ecx, %ecx
2:
  mov %ecx, %eax
  shl $21, %eax
  or $0x87, %eax
  mov %eax, pvh_pd(,%ecx,8)
  mov %ecx, %edx
  shr $11, %edx
  mov %edx, pvh_pd+4(,%ecx,8)
  inc %ecx
  cmp $2048, %ecx
  jb 2b
  /* CR4.PAE, CR3, EFER.LME, then CR0.PG|WP|NE|MP: long mode. */
  mov %cr4, %eax
  or $0x20, %eax
  mov %eax, %cr4
  mov $pvh_pml4, %eax
  mov %eax, %cr3
  mov $0xc0000080, %ecx
  rdmsr
  or $0x100, %eax
  wrmsr
  mov %cr0, %eax
  or $0x80010022, %eax
  mov %eax, %cr0
  lgdt pvh_gdt_desc
  ljmp $0x08, $pvh_long
  .code64
pvh_long:
  mov $0x10, %eax
  mov %eax, %ds
  mov %eax, %es
  mov %eax, %ss
  mov %eax, %fs
  mov %eax, %gs
  lea pvh_stack_top(%rip), %rsp
  xor %ebp, %ebp
  mov pvh_start_info(%rip), %edi
  call pvh_main
3:
  cli
  hlt
  jmp 3b

  .section .rodata
  .balign 8
pvh_gdt:
  .quad 0, 0x00af9a000000ffff, 0x00cf92000000ffff
pvh_gdt_desc:
  .word 23
  .long pvh_gdt

  .section .data
  .balign 4
pvh_start_info:
  .long 0

  .section .bss
  .balign 4096
pvh_pml4:
  .skip 4096
pvh_pdpt:
  .skip 4096
pvh_pd:
  .skip 16384
pvh_stack:
  .skip 65536
pvh_stack_top:
  .text
)");

namespace {
pvio::hv::BootInfo pvh_boot_info;
}

// hvm_start_info (as pvio-hv wrote it) -> BootInfo: RAM size from the memory map, the
// command line, the kernel's end. The TSC rate is not in hvm_start_info: 0 (unknown).
extern "C" [[noreturn]] void pvh_main(uint64_t start_info_pa) {
  using pvio::xen::hvm_memmap_table_entry;
  using pvio::xen::hvm_start_info;
  const auto* si = reinterpret_cast<const hvm_start_info*>(start_info_pa);
  pvio::hv::BootInfo& info = pvh_boot_info;
  info.magic = pvio::hv::kBootInfoMagic;
  info.version = pvio::hv::kBootInfoVersion;
  info.vcpus = 1;
  info.identity_map_bytes = pvio::hv::kBootIdentityMapBytes;
  info.tsc_khz = 0;
  info.kernel_end = (reinterpret_cast<uint64_t>(__kernel_end) + 0xfff) & ~uint64_t{0xfff};
  if (si->version >= 1 && si->memmap_paddr != 0) {
    const auto* map = reinterpret_cast<const hvm_memmap_table_entry*>(si->memmap_paddr);
    for (uint32_t i = 0; i < si->memmap_entries && i < 64; ++i)
      if (map[i].type == pvio::xen::XEN_HVM_MEMMAP_TYPE_RAM && map[i].addr + map[i].size > info.mem_bytes)
        info.mem_bytes = map[i].addr + map[i].size;
  }
  const char* cmdline = reinterpret_cast<const char*>(si->cmdline_paddr);
  uint32_t n = 0;
  while (si->cmdline_paddr != 0 && n + 1 < pvio::hv::kBootCmdlineMax && cmdline[n] != 0) {
    info.cmdline[n] = cmdline[n];
    ++n;
  }
  info.cmdline[n] = 0;
  info.cmdline_len = n;
  kernel_main(&info);
}
