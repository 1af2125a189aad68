/*
 * /init of the test initramfs: a static x86-64 Linux user program with no libc.
 * It prints one line on the console and powers the machine off, so a test on hardware
 * KVM sees user space run and kvmgdb end with status 0.
 *
 * Raw system calls (x86-64 ABI: number in RAX, arguments in RDI, RSI, RDX, R10; the
 * numbers are from arch/x86/entry/syscalls/syscall_64.tbl).
 */
#define SYS_write   1
#define SYS_open    2
#define SYS_exit    60
#define SYS_reboot  169
#define O_WRONLY    1
/* include/uapi/linux/reboot.h */
#define LINUX_REBOOT_MAGIC1        0xfee1dead
#define LINUX_REBOOT_MAGIC2        672274793
#define LINUX_REBOOT_CMD_POWER_OFF 0x4321fedc

    .text
    .globl _start
_start:
    /* The kernel gives init /dev/console as fds 0-2 when the archive has the node; open
     * it again so the line gets out even when it did not. */
    mov $SYS_open, %eax
    lea console(%rip), %rdi
    mov $O_WRONLY, %esi
    xor %edx, %edx
    syscall
    mov %eax, %edi
    test %eax, %eax
    jns 1f
    mov $1, %edi                /* no /dev/console: fd 1 */
1:
    mov $SYS_write, %eax
    lea message(%rip), %rsi
    mov $message_len, %edx
    syscall

    mov $SYS_reboot, %eax
    mov $LINUX_REBOOT_MAGIC1, %edi
    mov $LINUX_REBOOT_MAGIC2, %esi
    mov $LINUX_REBOOT_CMD_POWER_OFF, %edx
    xor %r10d, %r10d
    syscall

    /* reboot failed: say so; init exiting makes the kernel panic, which a test sees. */
    mov $SYS_write, %eax
    mov $1, %edi
    lea failed(%rip), %rsi
    mov $failed_len, %edx
    syscall
    mov $SYS_exit, %eax
    mov $1, %edi
    syscall

    .section .rodata
console:
    .asciz "/dev/console"
message:
    .ascii "kvmgdb initramfs: /init runs in user space; powering off\n"
    .set message_len, . - message
failed:
    .ascii "kvmgdb initramfs: reboot(POWER_OFF) failed\n"
    .set failed_len, . - failed
    .section .note.GNU-stack,"",@progbits
