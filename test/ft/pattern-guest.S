# The FT tests' pattern guest (see pattern-guest.ts, which holds these bytes), after QEMU's own migration test
# bootblock (tests/migration/i386/a-b-bootblock.S). A 512-byte BIOS boot sector: enables A20, enters 32-bit
# protected mode with flat segments, prints 'A' on the first serial port, then loops for ever: one pass adds
# one to the first byte of every 4 KiB page from `start` (inclusive) to `end` (exclusive), in address order,
# and prints 'B'. Any instant's RAM therefore holds k+1 in the pages before the one being incremented and k
# after it (mod 256): a checkpoint taken at a paused instant must show that shape, with one edge at most.
#
# `start` and `end` are data words at the end of the code (pattern-guest.ts patches them for each RAM size).
#
# Rebuild: as --32 -o g.o pattern-guest.S && ld -m elf_i386 -Ttext 0x7c00 --oformat binary -o g.img g.o
# (test/ft/pattern-guest.test.ts does so when binutils is installed, and compares with the bytes.)
    .code16
    .globl _start
_start:
    cli
    xor %ax, %ax
    mov %ax, %ds
    # Fast A20 gate (port 0x92): without it every odd MiB aliases the even one below.
    in $0x92, %al
    or $2, %al
    out %al, $0x92
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
    mov $0x3f8, %dx
    mov $'A', %al
    out %al, %dx
pass:
    mov (start), %eax
1:  incb (%eax)
    add $4096, %eax
    cmp (end), %eax
    jb 1b
    mov $'B', %al
    out %al, %dx
    jmp pass
    .p2align 3
gdt:
    .quad 0
    .quad 0x00cf9a000000ffff    # 0x08: code, base 0, limit 4 GiB, 32-bit
    .quad 0x00cf92000000ffff    # 0x10: data, base 0, limit 4 GiB
gdtr:
    .word gdtr - gdt - 1
    .long gdt
start:
    .long 0x100000
end:
    .long 0x900000
