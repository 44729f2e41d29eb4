# The guest that proves KVM runs guests at speed (see kvm-probe-guest.ts, which holds these bytes).
# A 512-byte BIOS boot sector: real mode -> protected mode -> long mode with identity paging, then it
# touches 32 MiB (one write per page) and adds up 1..2^24 in a loop, and reports through QEMU's
# isa-debug-exit device (port 0xf4): 0x2a if the sum is right (QEMU exits 0x2a*2+1 = 85), 0x15 if not (43).
#
# Why a loop: on this lab's nested (PVM) KVM, real-mode code and page faults run, but a CPU-bound loop
# crawls (2^20 iterations took 22 s), which is exactly how Linux guests "hang" in their decompressor.
#
# Rebuild: as --32 -o p.o kvm-probe-guest.S && ld -m elf_i386 -Ttext 0x7c00 --oformat binary -o p.img p.o
# (test/qemu/kvm-probe-guest.test.ts does so when binutils is installed, and compares with the bytes.)
    .code16
    .globl _start
_start:
    cli
    xor %ax, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov $0x7c00, %sp
    # Page tables at 0x1000 (PML4), 0x2000 (PDPT), 0x3000 (PD): zero them, then map 1 GiB with 2 MiB pages.
    mov $0x1000, %di
    mov $0x1800, %cx
    rep stosw
    movw $0x2003, (0x1000)
    movw $0x3003, (0x2000)
    mov $0x3000, %di
    mov $0x0083, %eax
    mov $512, %cx
1:  mov %eax, (%di)
    add $0x200000, %eax
    add $8, %di
    loop 1b
    lgdt gdtr
    mov %cr0, %eax
    or $1, %eax
    mov %eax, %cr0
    ljmp $0x08, $pm32
    .code32
pm32:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov %cr4, %eax
    or $0x20, %eax              # PAE
    mov %eax, %cr4
    mov $0x1000, %eax
    mov %eax, %cr3
    mov $0xC0000080, %ecx       # EFER
    rdmsr
    or $0x100, %eax             # LME
    wrmsr
    mov %cr0, %eax
    or $0x80000000, %eax        # PG
    mov %eax, %cr0
    ljmp $0x18, $lm64
    .code64
lm64:
    # Touch 32 MiB from 1 MiB, one write per 4 KiB page: memory faults must work.
    mov $0x100000, %rdi
2:  mov %rdi, (%rdi)
    add $4096, %rdi
    cmp $0x2100000, %rdi
    jb 2b
    # Sum 1..2^24 = 0x800000800000: the CPU must run, and right.
    xor %eax, %eax
    mov $0x1000000, %ecx
3:  add %rcx, %rax
    dec %rcx
    jnz 3b
    movabs $0x800000800000, %rdx
    mov $0x15, %bl
    cmp %rdx, %rax
    jne 4f
    mov $0x2a, %bl
4:  mov %bl, %al
    out %al, $0xf4
5:  hlt
    jmp 5b
    .p2align 3
gdt:
    .quad 0
    .quad 0x00cf9a000000ffff    # 0x08: 32-bit code
    .quad 0x00cf92000000ffff    # 0x10: data
    .quad 0x00af9a000000ffff    # 0x18: 64-bit code
gdtr:
    .word gdtr - gdt - 1
    .long gdt
    .org 510
    .byte 0x55, 0xaa
