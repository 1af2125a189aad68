# monitor-smp-entry.gdb: the CPUs of smp.elf on 8 vCPUs at the boot entry, before the
# guest has run: the boot processor at its entry point, every other CPU waiting for the
# INIT-SIPI-SIPI its kernel has not sent yet.

echo ==cpus==\n
monitor info cpus
echo ==end==\n
kill
